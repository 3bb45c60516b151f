//! Creating, reading, aborting and expiring sessions.

use crate::admin::principal;
use crate::auth::{Caller, random_hex};
use crate::hooks::{HookData, HookKind, Verdict};
use crate::{Engine, EngineError, Result, SessionView, UploadView, now_ms};
use ferry_core::limits::LimitError;
use ferry_core::{
    CommitMode, ConflictPolicy, Digest, DigestAlgo, Length, RangeSet, Session, SessionState,
    SpaceName, SpacePath, StateError, Upload, UploadState,
};
use std::collections::{BTreeMap, HashSet};

#[derive(Clone, Debug, Default)]
pub struct NewUpload {
    pub path: String,
    /// `None`: the length is deferred until a write announces it.
    pub size: Option<u64>,
    pub sha256: Option<Digest>,
    pub part_size: Option<u64>,
    pub content_type: Option<String>,
    pub metadata: Option<String>,
    /// Whole-file digests to keep besides SHA-256 (recorded with the file).
    pub whole_digests: Vec<DigestAlgo>,
    /// The id of a file this upload is a new version of (`Upload::replaces`):
    /// its commit moves that file to the upload's path, atomically.
    pub replaces: Option<String>,
    /// The dialect's own state for the upload (`Upload::dialect_state`).
    pub dialect_state: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct NewSession {
    /// `None`: the caller's home space.
    pub space: Option<String>,
    pub conflict: ConflictPolicy,
    pub expires_in_secs: Option<u64>,
    /// When its uploads are committed (the engine does it on the last
    /// byte with `CommitMode::OnLastByte`).
    pub commit: CommitMode,
    pub uploads: Vec<NewUpload>,
    pub dialect: String,
    /// Sliding expiry: each write keeps the session alive at least this
    /// many seconds longer (up to the maximum lifetime from creation).
    pub extend_secs: Option<u64>,
    /// The session may start empty: its uploads come with `add_uploads`.
    pub open_ended: bool,
    /// The files it commits are deleted when the session's time is up
    /// (deepset's `TEMPORARY`).
    pub files_expire: bool,
    /// What must hold at creation (checked by the engine under its
    /// namespace lock; the conflict policy decides again at commit).
    pub precondition: Precondition,
    /// Its uploads arrive whole in the request that creates the session,
    /// or the session is given up (a one-request upload): no other
    /// request writes to them, so the store may leave out what resuming
    /// would need ([`ferry_store::Store::create_staged_whole`]).
    pub whole_in_request: bool,
}

/// A condition on the session's paths at creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precondition {
    #[default]
    None,
    /// Nothing may be at any upload's path yet (no file, folder, or path
    /// another commit claimed): "fail if exists" refused at creation.
    Absent,
}

/// The largest one-request upload made holding its session's turn, and
/// the largest completing append that leases the turn with its bytes: an
/// abort from another node waits for the turn at most as long as such a
/// body takes.
pub(crate) const BORN_TURN_MAX: u64 = 1 << 20;

fn limit_error(e: LimitError, path: &SpacePath) -> EngineError {
    let message = format!("{path}: {e}");
    match e {
        LimitError::FileTooLarge { limit, .. } => EngineError::TooLarge { message, limit },
        LimitError::TooManyParts { limit, .. } => EngineError::TooLarge { message, limit },
        LimitError::PartSize { .. } => EngineError::invalid("invalid_body", message),
    }
}

/// The answer to a creation of `user`'s that `within` refused.
pub(crate) fn refusal(
    refused: ferry_meta::LimitRefusal,
    user: &ferry_core::User,
    within: ferry_meta::CreateLimits,
) -> EngineError {
    match refused {
        ferry_meta::LimitRefusal::TooManySessions { open } => EngineError::TooManySessions {
            owner: user.name.clone(),
            open,
            limit: within.max_open_sessions,
        },
        ferry_meta::LimitRefusal::OverQuota { used, more } => {
            EngineError::InsufficientStorage(format!(
                "{more} more bytes would take {} over the quota of {} bytes ({used} in use or reserved)",
                user.name,
                within.quota_bytes.unwrap_or(0)
            ))
        }
    }
}

/// Whether `caller` may ask for session `id` at all, before anything is
/// read: a session token for its own session only, no signed upload URL.
pub(crate) fn may_ask_for_session(caller: &Caller, id: &str) -> Result<()> {
    match caller {
        Caller::Session(own) if own != id => {
            Err(EngineError::NotFound(format!("no session {id:?}")))
        }
        Caller::Session(_) => Ok(()),
        _ => principal(caller).map(|_| ()),
    }
}

/// Whether `caller` may see session `s` (others get `NotFound`: ids of
/// other users' sessions leak nothing).
pub(crate) fn may_see_session(caller: &Caller, s: &Session) -> Result<()> {
    let allowed = match caller {
        Caller::Session(own) => *own == s.id,
        _ => {
            let p = principal(caller)?;
            p.admin || s.owner == p.user
        }
    };
    match allowed {
        true => Ok(()),
        false => Err(EngineError::NotFound(format!("no session {:?}", s.id))),
    }
}

impl Engine {
    pub async fn create_session(&self, caller: &Caller, new: NewSession) -> Result<SessionView> {
        let mut views = self.create_sessions(caller, vec![new]).await?;
        Ok(views.pop().expect("one session"))
    }

    /// Creates several sessions of the caller, all or none (UCloud's bulk
    /// create): every one is checked first, then all are recorded in one
    /// metadata transaction, within the caller's limits.
    pub async fn create_sessions(
        &self,
        caller: &Caller,
        news: Vec<NewSession>,
    ) -> Result<Vec<SessionView>> {
        let p = principal(caller)?;
        let meta = &self.inner.meta;
        let user = self
            .user(&p.user)
            .await?
            .ok_or_else(|| EngineError::Unauthenticated("the user no longer exists".into()))?;
        let mut made = Vec::with_capacity(news.len());
        let mut whole = Vec::new(); // per session: whole_in_request
        for new in news {
            whole.push(new.whole_in_request);
            made.push(self.prepare_session(caller, &user, new).await?);
        }

        // Staged files and records are made durable at the same time; a
        // staged file without a record is removed at the next start.
        let ids: Vec<String> = made
            .iter()
            .flat_map(|(_, ups)| ups.iter().map(|u| u.id.clone()))
            .collect();
        let (mut whole_ids, mut rest) = (Vec::new(), Vec::new());
        for ((_, ups), whole) in made.iter().zip(&whole) {
            if *whole {
                whole_ids.extend(ups.iter().map(|u| u.id.clone()));
            } else {
                rest.extend(ups.iter());
            }
        }
        let store = &self.inner.store;
        let stage = async {
            self.stage(rest).await?;
            store.create_staged_whole(&whole_ids).await
        };
        // The open-session and quota limits are checked in the same
        // metadata transaction that records the sessions: concurrent
        // creations cannot pass them together.
        let within = self.limits_of(&user);
        let events = self.hook_events(
            HookKind::PostCreate,
            made.iter().flat_map(|(s, ups)| {
                ups.iter()
                    .map(move |u| (u.id.as_str(), HookData::upload(s, u)))
            }),
        );
        // In a cluster, a small one-request upload's session is made
        // holding its turn: its commit needs no turn of its own (see
        // `Live::private`). Other nodes wait for the turn while the body
        // streams, so a larger one claims it when it commits.
        let born: Vec<&str> = made
            .iter()
            .zip(&whole)
            .filter(|((_, ups), whole)| {
                let size: Option<u64> = ups.iter().map(|u| u.length.known()).sum();
                **whole && self.in_cluster() && size.is_some_and(|n| n <= BORN_TURN_MAX)
            })
            .map(|((s, _), _)| s.id.as_str())
            .collect();
        let record = async {
            if born.is_empty() {
                return Ok(
                    match meta
                        .create_sessions_reporting(&made, within, &events)
                        .await?
                    {
                        Some(refused) => Err(refused),
                        None => Ok(Vec::new()),
                    },
                );
            }
            let keys: Vec<String> = born
                .iter()
                .map(|id| crate::lease::session_key(id))
                .collect();
            self.create_holding(&made, within, &events, keys).await
        };
        let (staged, recorded) = tokio::join!(stage, record);
        let refused = match recorded {
            Ok(Ok(turns)) => {
                let ids = born.iter().map(|id| id.to_string());
                self.keep_born_turns(ids.zip(turns));
                None
            }
            Ok(Err(r)) => Some(Ok(r)),
            Err(e) => Some(Err(e)),
        };
        if let Some(refused) = refused {
            if staged.is_ok() {
                for id in &ids {
                    let _ = self.inner.store.discard_staged(id).await;
                }
            }
            return Err(refusal(refused?, &user, within));
        }
        if let Err(e) = staged {
            // Do not leave sessions behind that cannot take bytes.
            for (session, _) in &made {
                self.forget_born_turn(&session.id);
                let _ = meta
                    .set_session_state(&session.id, SessionState::Aborted, None)
                    .await;
            }
            return Err(e.into());
        }
        if !events.is_empty() {
            self.hooks_written();
        }
        let mut views = Vec::with_capacity(made.len());
        for ((session, uploads), whole) in made.into_iter().zip(whole) {
            metrics::counter!("ferry_sessions_created_total").increment(1);
            self.seed_slots(&session, &uploads, whole);
            let empty: Vec<String> = uploads
                .iter()
                .filter(|u| u.is_complete())
                .map(|u| u.id.clone())
                .collect();
            if session.commit_mode().is_auto() && !empty.is_empty() {
                // Empty files hold every byte already: they commit at once.
                for id in &empty {
                    self.commit_if_auto(caller, id).await?;
                }
                views.push(self.get_session(caller, &session.id).await?);
                continue;
            }
            views.push(SessionView {
                session,
                uploads: uploads
                    .into_iter()
                    .map(|upload| UploadView { upload, file: None })
                    .collect(),
            });
        }
        Ok(views)
    }

    /// The limits a creation of `user`'s is checked against.
    pub(crate) fn limits_of(&self, user: &ferry_core::User) -> ferry_meta::CreateLimits {
        let limits = &self.inner.limits;
        ferry_meta::CreateLimits {
            max_open_sessions: u64::from(
                user.max_open_sessions.unwrap_or(limits.max_open_sessions),
            ),
            quota_bytes: user.quota_bytes.or(limits.default_quota),
        }
    }

    /// A new session and its uploads, checked (permission first, then
    /// limits and paths, then the precondition), not yet recorded.
    pub(crate) async fn prepare_session(
        &self,
        caller: &Caller,
        user: &ferry_core::User,
        new: NewSession,
    ) -> Result<(Session, Vec<Upload>)> {
        let p = principal(caller)?;
        let limits = &self.inner.limits;
        let space = match &new.space {
            Some(s) => SpaceName::parse(s)
                .map_err(|e| EngineError::invalid("invalid_path", e.to_string()))?,
            None => user.home_space.clone(),
        };
        self.require_write(p, &space).await?;

        if new.uploads.is_empty() && !new.open_ended {
            return Err(EngineError::invalid(
                "invalid_body",
                "a session needs at least one upload",
            ));
        }
        if new.uploads.len() > limits.max_uploads_per_session {
            return Err(EngineError::TooLarge {
                message: format!(
                    "{} uploads in one session; the limit is {}",
                    new.uploads.len(),
                    limits.max_uploads_per_session
                ),
                limit: limits.max_uploads_per_session as u64,
            });
        }
        let expires_in = new.expires_in_secs.unwrap_or(limits.default_expiry_secs);
        if expires_in == 0 || expires_in > limits.max_expiry_secs {
            return Err(EngineError::invalid(
                "invalid_body",
                format!(
                    "expires_in must be 1..={} seconds, got {expires_in}",
                    limits.max_expiry_secs
                ),
            ));
        }

        let now = now_ms();
        let session = Session {
            id: random_hex(16),
            owner: p.user.clone(),
            space,
            conflict: new.conflict,
            auto_commit: new.commit.is_auto(),
            state: SessionState::Open,
            created_at: now,
            expires_at: now + (expires_in as i64) * 1000,
            dialect: new.dialect,
            extend_secs: new.extend_secs.map(|s| s.min(limits.max_expiry_secs)),
            open_ended: new.open_ended,
            files_expire: new.files_expire,
            failure: None,
        };
        let (mut uploads, _) = self.build_uploads(&session, new.uploads)?;
        self.vet_new_uploads(&session, &mut uploads).await?;

        if new.precondition == Precondition::Absent {
            let _ns = self.inner.namespace.lock().await;
            for u in &uploads {
                if self.occupied(&session.space, &u.path).await? {
                    return Err(EngineError::AlreadyExists {
                        path: format!("{}/{}", session.space, u.path),
                    });
                }
            }
        }
        Ok((session, uploads))
    }

    /// Asks the pre-create hook about each new upload, and applies what it
    /// changes (the destination, the metadata) before anything is stored.
    async fn vet_new_uploads(&self, session: &Session, uploads: &mut [Upload]) -> Result<()> {
        for u in uploads.iter_mut() {
            let data = HookData::upload(session, u);
            match self.ask_hook(HookKind::PreCreate, &data).await? {
                Verdict::Allow => {}
                Verdict::Reject { status, message } => {
                    return Err(EngineError::Rejected { status, message });
                }
                Verdict::Change { path, metadata } => {
                    if let Some(p) = path {
                        u.path = SpacePath::parse(&p).map_err(|e| {
                            EngineError::Unavailable(format!(
                                "the pre-create hook answered an invalid path {p:?}: {e}"
                            ))
                        })?;
                    }
                    if metadata.is_some() {
                        u.metadata = metadata;
                    }
                }
            }
        }
        let mut seen = HashSet::new();
        if let Some(u) = uploads.iter().find(|u| !seen.insert(u.path.clone())) {
            return Err(EngineError::Conflict(format!(
                "the pre-create hook sent two uploads of this session to {}",
                u.path
            )));
        }
        Ok(())
    }

    /// The records of new uploads of `session`, checked (paths, limits,
    /// no path twice in the batch), and the bytes they declare.
    pub(crate) fn build_uploads(
        &self,
        session: &Session,
        new: Vec<NewUpload>,
    ) -> Result<(Vec<Upload>, u64)> {
        let limits = &self.inner.limits;
        let mut seen = HashSet::new();
        let mut uploads = Vec::with_capacity(new.len());
        let mut declared = 0u64;
        for nu in new {
            let path = SpacePath::parse(&nu.path)
                .map_err(|e| EngineError::invalid("invalid_path", format!("{:?}: {e}", nu.path)))?;
            if !seen.insert(path.clone()) {
                return Err(EngineError::invalid(
                    "invalid_path",
                    format!("{path} appears twice in one session"),
                ));
            }
            let length = nu.size.map_or(Length::Deferred, Length::Known);
            let plan = limits
                .plan(length, nu.part_size)
                .map_err(|e| limit_error(e, &path))?;
            declared = declared.saturating_add(nu.size.unwrap_or(0));
            uploads.push(Upload {
                id: random_hex(16),
                session_id: session.id.clone(),
                path,
                length,
                part_size: plan.part_size,
                state: UploadState::Open,
                expected_sha256: nu.sha256.map(|d| d.hex()),
                whole_digests: nu.whole_digests,
                content_type: nu.content_type,
                metadata: nu.metadata,
                received: RangeSet::new(),
                parts: BTreeMap::new(),
                final_path: None,
                file_id: None,
                replaces: nu.replaces,
                direct: false,
                sealed: Vec::new(),
                object: None,
                dialect_state: nu.dialect_state,
            });
        }

        Ok((uploads, declared))
    }

    /// Adds uploads to an open session (sessions whose files are known only
    /// as they arrive: a folder streamed over a WebSocket, files POSTed to a
    /// form). A path already in the session is refused.
    pub async fn add_uploads(
        &self,
        caller: &Caller,
        session_id: &str,
        new: Vec<NewUpload>,
    ) -> Result<Vec<Upload>> {
        let s = self.load_session(caller, session_id).await?;
        let (mut uploads, declared) = self.build_uploads(&s, new)?;
        self.vet_new_uploads(&s, &mut uploads).await?;
        let limit = self.inner.limits.max_uploads_per_session;
        // Staged files first, outside the session lock, so that concurrent
        // additions share directory fsyncs: one without a record is removed
        // at the next start; a record without its staged file could take
        // no bytes.
        let ids: Vec<String> = uploads.iter().map(|u| u.id.clone()).collect();
        self.stage(&uploads).await?;
        let recorded = async {
            // Under the lock: no commit, abort or expiry of the session in
            // between the check and the record.
            let _guard = self.session_turn(session_id).await?;
            let s = self.load_session(caller, session_id).await?;
            s.state.check_writable().map_err(EngineError::Gone)?;
            if s.is_expired_at(now_ms()) {
                return Err(EngineError::Gone(StateError::Expired));
            }
            // Deferred lengths declare nothing: they are charged when known.
            if declared > 0 {
                let user = self.user(&s.owner).await?;
                self.check_quota(&s.owner, user.and_then(|u| u.quota_bytes), declared)
                    .await?;
            }
            Ok(self.inner.meta.add_uploads(&s.id, &uploads, limit).await)
        }
        .await;
        let recorded = match recorded {
            Ok(r) => r,
            Err(e) => {
                for id in &ids {
                    let _ = self.inner.store.discard_staged(id).await;
                }
                return Err(e);
            }
        };
        if recorded.is_err() {
            for id in &ids {
                let _ = self.inner.store.discard_staged(id).await;
            }
        }
        match recorded {
            Ok(()) => {}
            Err(ferry_meta::MetaError::AlreadyExists(what)) => {
                return Err(EngineError::invalid(
                    "invalid_path",
                    format!("{what} is already an upload of this session"),
                ));
            }
            Err(ferry_meta::MetaError::Full(n)) => {
                return Err(EngineError::TooLarge {
                    message: format!("the session would have {n} uploads; the limit is {limit}"),
                    limit: limit as u64,
                });
            }
            Err(e) => return Err(e.into()),
        }
        // Reported after the record, not with it: a crash in between may
        // lose these post-create events (never an upload).
        let events = self.hook_events(
            HookKind::PostCreate,
            uploads
                .iter()
                .map(|u| (u.id.as_str(), HookData::upload(&s, u))),
        );
        if !events.is_empty() {
            match self.inner.meta.outbox_add(&events).await {
                Ok(()) => self.hooks_written(),
                Err(e) => tracing::warn!(session = %s.id, error = %e, "post-create not recorded"),
            }
        }
        self.seed_slots(&s, &uploads, false);
        Ok(uploads)
    }

    /// Refuses `more` bytes if they would take `user` over quota.
    pub(crate) async fn check_quota(&self, user: &str, own: Option<u64>, more: u64) -> Result<()> {
        let Some(quota) = own.or(self.inner.limits.default_quota) else {
            return Ok(());
        };
        let usage = self.inner.meta.usage(user).await?;
        let used = usage.committed + usage.reserved;
        if used.saturating_add(more) > quota {
            return Err(EngineError::InsufficientStorage(format!(
                "{more} more bytes would take {user} over the quota of {quota} bytes ({used} in use or reserved)"
            )));
        }
        Ok(())
    }

    /// Loads a session the caller may see (`NotFound` otherwise).
    pub(crate) async fn load_session(&self, caller: &Caller, id: &str) -> Result<Session> {
        let not_found = || EngineError::NotFound(format!("no session {id:?}"));
        may_ask_for_session(caller, id)?;
        let s = self
            .inner
            .meta
            .get_session(id)
            .await?
            .ok_or_else(not_found)?;
        may_see_session(caller, &s)?;
        Ok(s)
    }

    pub(crate) async fn view(&self, session: Session) -> Result<SessionView> {
        let uploads = self.inner.meta.session_uploads(&session.id).await?;
        let mut views = Vec::with_capacity(uploads.len());
        for upload in uploads {
            let file = self.file_of(&session, &upload).await?;
            views.push(UploadView { upload, file });
        }
        Ok(SessionView {
            session,
            uploads: views,
        })
    }

    pub(crate) async fn file_of(
        &self,
        session: &Session,
        upload: &Upload,
    ) -> Result<Option<ferry_core::FileRecord>> {
        if !upload.state.is_done() {
            return Ok(None);
        }
        let Some(path) = &upload.final_path else {
            return Ok(None);
        };
        let f = self.inner.meta.get_file(&session.space, path).await?;
        // A later commit may have replaced it; only report our own file.
        Ok(f.filter(|f| Some(&f.id) == upload.file_id.as_ref()))
    }

    /// The committed file at `path` in a session's space, if any: what a
    /// session token may see of its space (a folder upload deciding
    /// whether a file is already there).
    pub async fn session_file(
        &self,
        caller: &Caller,
        session_id: &str,
        path: &str,
    ) -> Result<Option<ferry_core::FileRecord>> {
        let s = self.load_session(caller, session_id).await?;
        let path = SpacePath::parse(path)
            .map_err(|e| EngineError::invalid("invalid_path", format!("{path:?}: {e}")))?;
        Ok(self.inner.meta.get_file(&s.space, &path).await?)
    }

    pub async fn get_session(&self, caller: &Caller, id: &str) -> Result<SessionView> {
        let s = self
            .lazily_expired(self.load_session(caller, id).await?)
            .await?;
        if s.state == SessionState::Open && self.can_presign() {
            let uploads = self.inner.meta.session_uploads(&s.id).await?;
            self.learn_direct_in_session(&uploads).await?;
        }
        self.view(s).await
    }

    /// Marks a session expired if its time has passed and the reaper has
    /// not come by yet, so reads never show a stale `open`.
    async fn lazily_expired(&self, s: Session) -> Result<Session> {
        if s.state == SessionState::Open && s.is_expired_at(now_ms()) {
            self.expire(&s).await?;
            return Ok(Session {
                state: SessionState::Expired,
                ..s
            });
        }
        Ok(s)
    }

    /// The caller's sessions (every user's with `all`, admins only).
    /// The caller's sessions in one space, for a caller who may write it
    /// (permission is checked first: a space the caller may not write is
    /// `Forbidden`, not an empty list).
    pub async fn list_space_sessions(&self, caller: &Caller, space: &str) -> Result<Vec<Session>> {
        let p = principal(caller)?;
        let space = SpaceName::parse(space)
            .map_err(|e| EngineError::invalid("invalid_path", e.to_string()))?;
        self.require_write(p, &space).await?;
        let mut all = self.inner.meta.list_sessions(Some(&p.user), None).await?;
        all.retain(|s| s.space == space);
        Ok(all)
    }

    pub async fn list_sessions(
        &self,
        caller: &Caller,
        state: Option<SessionState>,
        all: bool,
    ) -> Result<Vec<Session>> {
        let p = principal(caller)?;
        if all && !p.admin {
            return Err(EngineError::Forbidden(
                "listing every user's sessions needs an admin token".into(),
            ));
        }
        let owner = (!all).then_some(p.user.as_str());
        Ok(self.inner.meta.list_sessions(owner, state).await?)
    }

    pub async fn abort_session(&self, caller: &Caller, id: &str) -> Result<()> {
        let s = self.load_session(caller, id).await?;
        let _guard = self.session_turn(&s.id).await?;
        let s = self.inner.meta.get_session(&s.id).await?.unwrap_or(s);
        match s.state {
            SessionState::Aborted => return Ok(()),
            SessionState::Open => {}
            other => return Err(EngineError::Gone(other.check_writable().unwrap_err())),
        }
        self.end_session(&s, SessionState::Aborted).await
    }

    /// The record of an upload this node just asked to abort, when it is
    /// aborted, so its bytes may go. In a cluster another node may have committed
    /// it first (the abort then left it alone, and its bytes are a file's
    /// now); alone, this node's session lock rules that out.
    async fn aborted_here(&self, upload: &Upload) -> Result<Option<Upload>> {
        if !self.in_cluster() {
            return Ok(Some(upload.clone()));
        }
        // Read afresh: a write recorded on another node meanwhile may
        // have named the object that holds its bytes.
        let now = self.inner.meta.get_upload(&upload.id).await?;
        Ok(now.filter(|u| u.state == UploadState::Aborted))
    }

    /// Moves an open session to `state` (aborted or expired): its open
    /// uploads are aborted and their staged bytes deleted.
    async fn end_session(&self, s: &Session, state: SessionState) -> Result<()> {
        let meta = &self.inner.meta;
        let uploads = meta.session_uploads(&s.id).await?;
        let open: Vec<String> = uploads
            .iter()
            .filter(|u| u.state == UploadState::Open)
            .map(|u| u.id.clone())
            .collect();
        // One transaction: the session and its open uploads end together,
        // with their events.
        let kind = if state == SessionState::Expired {
            HookKind::PostExpire
        } else {
            HookKind::PostTerminate
        };
        let events = self.hook_events(
            kind,
            uploads
                .iter()
                .filter(|u| u.state == UploadState::Open)
                .map(|u| (u.id.as_str(), HookData::upload(s, u))),
        );
        meta.abort_uploads_reporting(&open, ferry_meta::SessionEnd::To(&s.id, state), &events)
            .await?;
        if !events.is_empty() {
            self.hooks_written();
        }
        let mut changed = Vec::new();
        for up in uploads.iter().filter(|u| u.state == UploadState::Open) {
            if let Some(up) = self.aborted_here(up).await? {
                self.discard_bytes(&up).await?;
            }
            changed.push((up.id.clone(), UploadState::Aborted));
        }
        if s.open_ended {
            // Files a form posted straight into the store, never adopted.
            self.discard_posted(&s.id).await;
        }
        let s = Session { state, ..s.clone() };
        self.refresh_session(&s, &changed).await;
        Ok(())
    }

    async fn expire(&self, s: &Session) -> Result<()> {
        let _guard = self.session_turn(&s.id).await?;
        let fresh = self.inner.meta.get_session(&s.id).await?;
        if fresh.is_some_and(|f| f.state == SessionState::Open) {
            self.end_session(s, SessionState::Expired).await?;
            metrics::counter!("ferry_sessions_expired_total").increment(1);
        }
        Ok(())
    }

    /// Expires every open session past its time, and deletes the files
    /// that expired with their session; returns how many sessions.
    pub async fn reap_expired(&self) -> Result<usize> {
        let now = now_ms();
        let due = self.inner.meta.expired_sessions(now).await?;
        for s in &due {
            // One that cannot end now (its turn kept busy on another node)
            // does not hold up the rest: the next round tries it again.
            if let Err(e) = self.expire(s).await {
                tracing::warn!(session = %s.id, error = %e, "cannot expire a session now");
            }
        }
        for f in self.inner.meta.expired_files(now).await? {
            let _ns = self.inner.namespace.lock().await;
            // Only the record that expired: a commit may have replaced it
            // since it was listed. The record goes first, as in `delete_file`.
            let current = self.inner.meta.get_file(&f.space, &f.path).await?;
            if current.is_some_and(|c| c.id == f.id && c.is_expired_at(now)) {
                let key = format!("file:{}", f.id);
                let events =
                    self.hook_events(HookKind::PostExpire, [(key.as_str(), file_data(&f))]);
                self.inner
                    .meta
                    .delete_file_reporting(&f.space, &f.path, &events)
                    .await?;
                if !events.is_empty() {
                    self.hooks_written();
                }
                self.remove_bytes(&f).await?;
                metrics::counter!("ferry_files_expired_total").increment(1);
            }
        }
        Ok(due.len())
    }

    pub async fn abort_upload(&self, caller: &Caller, upload_id: &str) -> Result<()> {
        let slot = self.slot(caller, upload_id).await?;
        let session_id = slot.state.lock().await.session.id.clone();
        let _guard = self.session_turn(&session_id).await?;
        let (session, upload) = {
            let live = slot.state.lock().await;
            (live.session.clone(), live.upload.clone())
        };
        match upload.state {
            UploadState::Aborted => return Ok(()),
            UploadState::Open => {}
            UploadState::Committed | UploadState::Skipped => {
                return Err(EngineError::Gone(StateError::Committed));
            }
            UploadState::Committing => return Err(EngineError::Gone(StateError::Committing)),
        }
        // The session ends when nothing in it is left open, in the same
        // transaction as the upload.
        let events = self.hook_events(
            HookKind::PostTerminate,
            [(upload_id, HookData::upload(&session, &upload))],
        );
        let ended = self
            .inner
            .meta
            .abort_uploads_reporting(
                &[upload_id.to_owned()],
                ferry_meta::SessionEnd::IfSettled(&session.id),
                &events,
            )
            .await?;
        if !events.is_empty() {
            self.hooks_written();
        }
        if let Some(up) = self.aborted_here(&upload).await? {
            self.discard_bytes(&up).await?;
        }
        let mut session = session;
        if let Some(state) = ended {
            session.state = state;
        }
        self.refresh_session(&session, &[(upload_id.to_owned(), UploadState::Aborted)])
            .await;
        Ok(())
    }

    pub async fn upload_status(&self, caller: &Caller, upload_id: &str) -> Result<UploadView> {
        Ok(self.upload_and_session(caller, upload_id).await?.0)
    }

    /// An upload's status with its session (expiry, state), for dialects
    /// whose answers carry both.
    pub async fn upload_and_session(
        &self,
        caller: &Caller,
        upload_id: &str,
    ) -> Result<(UploadView, Session)> {
        let slot = self.slot(caller, upload_id).await?;
        self.learn_direct_parts(&slot, false).await?;
        let (session, upload) = {
            let live = slot.state.lock().await;
            (live.session.clone(), live.upload.clone())
        };
        let session = self.lazily_expired(session).await?;
        let file = self.file_of(&session, &upload).await?;
        Ok((UploadView { upload, file }, session))
    }
}

impl Engine {
    /// Sessions per state, for metrics.
    pub async fn session_counts(&self) -> Result<Vec<(SessionState, u64)>> {
        Ok(self.inner.meta.session_counts().await?)
    }
}

/// What a hook says of a file (no upload or session: it may outlive them).
pub(crate) fn file_data(f: &ferry_core::FileRecord) -> HookData {
    HookData {
        space: Some(f.space.to_string()),
        path: Some(f.path.to_string()),
        size: Some(f.size),
        offset: Some(f.size),
        sha256: Some(f.sha256.clone()),
        user: Some(f.owner.clone()),
        metadata: f.metadata.clone(),
        ..HookData::default()
    }
}

impl Engine {
    /// Stages new uploads in the store: the small ones as such
    /// ([`ferry_store::Store::create_staged_small`]), the others with
    /// what their bytes will go into.
    pub(crate) async fn stage<'a>(
        &self,
        uploads: impl IntoIterator<Item = &'a Upload>,
    ) -> std::result::Result<(), ferry_store::StoreError> {
        let (small, other): (Vec<&Upload>, Vec<&Upload>) =
            uploads.into_iter().partition(|u| self.is_small(u));
        let ids = |ups: Vec<&Upload>| ups.into_iter().map(|u| u.id.clone()).collect::<Vec<_>>();
        let store = &self.inner.store;
        store.create_staged_many(&ids(other)).await?;
        store.create_staged_small(&ids(small)).await
    }
}
