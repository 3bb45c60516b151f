//! Files POSTed one by one into an open-ended session, S3-style (deepset's
//! presigned POST form): each name is an upload of the session, a name sent
//! again replaces what was sent before it (the last body wins, as an S3
//! PUT), metadata may arrive before or after the bytes it belongs to, and
//! closing commits whatever is complete.

use crate::auth::Caller;
use crate::{Engine, EngineError, NewUpload, Result, SessionView, now_ms};
use ferry_core::{Length, SessionState, SpacePath, StateError, Upload, UploadState};
use ferry_meta::SessionEnd;
use std::collections::HashMap;

impl Engine {
    /// The session's upload at `new.path`, ready for a body from offset 0:
    /// added when the session has none there; reused when the newest one
    /// is open and has received no bytes (it was made by
    /// [`Engine::set_upload_metadata`]); otherwise a new upload is added
    /// *beside* the newest complete one, which it replaces only once its
    /// own bytes are complete (closing commits the newest complete upload
    /// of each path): a body sent again that breaks off leaves the earlier
    /// one intact. Earlier attempts that never completed are aborted in the
    /// same transaction. `Conflict` while bytes are still streaming to the
    /// path.
    pub async fn put_upload(
        &self,
        caller: &Caller,
        session_id: &str,
        new: NewUpload,
    ) -> Result<Upload> {
        self.put_upload_in(caller, session_id, new, None).await
    }

    /// [`Engine::put_upload`], in the session's turn `turn` when the
    /// caller holds it already (else it takes it).
    pub(crate) async fn put_upload_in(
        &self,
        caller: &Caller,
        session_id: &str,
        new: NewUpload,
        turn: Option<&crate::lease::SessionTurn<'_>>,
    ) -> Result<Upload> {
        let path = parse_path(&new.path)?;
        let s = self.load_session(caller, session_id).await?;
        s.state.check_writable().map_err(EngineError::Gone)?;
        let (mut built, declared) = self.build_uploads(&s, vec![new])?;
        let mut up = built.remove(0);
        self.stage([&up]).await?;
        let added = async {
            // Under the lock: no commit, close, abort or expiry in between.
            let _guard = match turn {
                Some(_) => None,
                None => Some(self.session_turn(session_id).await?),
            };
            let s = self.load_session(caller, session_id).await?;
            s.state.check_writable().map_err(EngineError::Gone)?;
            if s.is_expired_at(now_ms()) {
                return Err(EngineError::Gone(StateError::Expired));
            }
            let mut at = Vec::new(); // (upload, complete, slot), oldest first
            for u in self.inner.meta.session_uploads(&s.id).await? {
                if u.path != path || u.state == UploadState::Aborted {
                    continue;
                }
                if u.state != UploadState::Open {
                    return Err(EngineError::Conflict(format!(
                        "{path} is being committed; retry in a moment"
                    )));
                }
                let slot = self.slot(caller, &u.id).await?;
                // A write whose request went away settles first.
                let live = slot.lock_settled().await;
                if !live.inflight.is_empty() {
                    return Err(EngineError::Conflict(format!(
                        "{path} is being written by another request"
                    )));
                }
                let complete = live.upload.is_complete();
                at.push((live.upload.clone(), complete, slot.clone()));
            }
            // The newest is a placeholder `set_upload_metadata` made and no
            // body was given yet: this body is its. (One another request
            // took, even before its first byte, is never shared: two
            // bodies would race for it. Across nodes the mark is not
            // seen; there the later body may take the earlier one over.)
            if let Some((last, _, slot)) = at.last()
                && last.received.is_empty()
                && last.length == Length::Deferred
            {
                let mut live = slot.state.lock().await;
                if !live.taken {
                    live.taken = true;
                    return Ok(Err(last.clone()));
                }
            }
            up.metadata = up
                .metadata
                .take()
                .or_else(|| at.last().and_then(|(u, _, _)| u.metadata.clone()));
            let beside: Vec<String> = at
                .iter()
                .rev()
                .find(|(_, complete, _)| *complete)
                .map(|(u, _, _)| u.id.clone())
                .into_iter()
                .collect();
            let abort: Vec<String> = at
                .iter()
                .map(|(u, _, _)| u.id.clone())
                .filter(|id| !beside.contains(id))
                .collect();
            if declared > 0 {
                let user = self.user(&s.owner).await?;
                self.check_quota(&s.owner, user.and_then(|u| u.quota_bytes), declared)
                    .await?;
            }
            let limit = self.inner.limits.max_uploads_per_session;
            match self
                .inner
                .meta
                .add_upload_beside(&s.id, &up, &beside, &abort, limit)
                .await
            {
                Ok(()) => {}
                Err(ferry_meta::MetaError::Full(n)) => {
                    return Err(EngineError::TooLarge {
                        message: format!(
                            "the session would have {n} uploads; the limit is {limit}"
                        ),
                        limit: limit as u64,
                    });
                }
                Err(e) => return Err(e.into()),
            }
            let states: Vec<_> = abort
                .iter()
                .map(|id| (id.clone(), UploadState::Aborted))
                .collect();
            self.refresh_session(&s, &states).await;
            let seeded = self.seed_slots(&s, std::slice::from_ref(&up), false);
            seeded[0].state.lock().await.taken = true;
            Ok(Ok(abort))
        }
        .await;
        match added {
            Ok(Ok(abort)) => {
                for id in &abort {
                    // Start-up recovery removes what no open upload owns.
                    let _ = self.inner.store.discard_staged(id).await;
                }
                Ok(up)
            }
            Ok(Err(reused)) => {
                let _ = self.inner.store.discard_staged(&up.id).await;
                Ok(reused)
            }
            Err(e) => {
                let _ = self.inner.store.discard_staged(&up.id).await;
                Err(e)
            }
        }
    }

    /// Sets the metadata of the session's upload at `path`; when there is
    /// none yet, adds one of deferred length that takes its bytes later
    /// ([`Engine::put_upload`] finds it).
    pub async fn set_upload_metadata(
        &self,
        caller: &Caller,
        session_id: &str,
        path: &str,
        metadata: String,
    ) -> Result<Upload> {
        let sp = parse_path(path)?;
        let _guard = self.session_turn(session_id).await?;
        let s = self.load_session(caller, session_id).await?;
        s.state.check_writable().map_err(EngineError::Gone)?;
        if s.is_expired_at(now_ms()) {
            return Err(EngineError::Gone(StateError::Expired));
        }
        let Some(mut up) = self.inner.meta.upload_at(&s.id, &sp).await? else {
            drop(_guard);
            let new = NewUpload {
                path: path.to_owned(),
                metadata: Some(metadata),
                ..Default::default()
            };
            return Ok(self
                .add_uploads(caller, session_id, vec![new])
                .await?
                .remove(0));
        };
        up.state.check_writable().map_err(EngineError::Gone)?;
        // Every open upload at the path: a body sent again and the
        // complete one it may replace alike.
        // (Those at the path only: a session of many files sets each
        // one's metadata.)
        for u in self.inner.meta.uploads_at(&s.id, &sp).await? {
            if u.state != UploadState::Open {
                continue;
            }
            self.inner
                .meta
                .set_upload_metadata(&u.id, Some(&metadata))
                .await?;
            // The live copy is what a commit records.
            let slot = self.slot(caller, &u.id).await?;
            slot.state.lock().await.upload.metadata = Some(metadata.clone());
        }
        up.metadata = Some(metadata);
        Ok(up)
    }

    /// Closes an open-ended session: the newest complete upload of each
    /// path is committed, all together, atomically, with the session's
    /// conflict policy; the other open uploads (a body that broke off,
    /// metadata whose file never came, a body sent again since) are
    /// aborted in the transaction that records the commit's intent — or,
    /// with nothing to commit, in the one that closes the session. A close
    /// that fails changes nothing. Closing happens once: a session that is
    /// no longer open is `Gone`. `Conflict` while bytes are still streaming
    /// into the session.
    pub async fn close_session(&self, caller: &Caller, session_id: &str) -> Result<SessionView> {
        let view = self.close_locked(caller, session_id).await?;
        // What a form posted into the store and no upload took.
        self.discard_posted(&view.session.id).await;
        Ok(view)
    }

    async fn close_locked(&self, caller: &Caller, session_id: &str) -> Result<SessionView> {
        let mut guard = self.session_turn(session_id).await?;
        let s = self.load_session(caller, session_id).await?;
        s.state.check_writable().map_err(EngineError::Gone)?;
        if s.is_expired_at(now_ms()) {
            return Err(EngineError::Gone(StateError::Expired));
        }
        let uploads = self.inner.meta.session_uploads(&s.id).await?;
        // The newest complete upload of each path wins (uploads come
        // oldest first).
        let mut winners: HashMap<SpacePath, String> = HashMap::new();
        let mut open = Vec::new();
        for up in uploads.iter().filter(|u| u.state == UploadState::Open) {
            let slot = self.slot(caller, &up.id).await?;
            let live = slot.lock_settled().await;
            if !live.inflight.is_empty() {
                return Err(EngineError::Conflict(format!(
                    "{}: bytes are still being written; close the session once every file is sent",
                    up.path
                )));
            }
            if live.upload.is_complete() {
                winners.insert(up.path.clone(), up.id.clone());
            }
            open.push(up.id.clone());
        }
        let drop: Vec<String> = open
            .into_iter()
            .filter(|id| !winners.values().any(|w| w == id))
            .collect();
        if !winners.is_empty() {
            return self
                .commit_loaded(
                    s,
                    HashMap::new(),
                    &drop,
                    guard.take_lease(),
                    Some(uploads),
                    Vec::new(),
                )
                .await;
        }
        // Nothing to commit: the session is closed with no files.
        self.inner
            .meta
            .abort_uploads(&drop, SessionEnd::To(&s.id, SessionState::Committed))
            .await?;
        for id in &drop {
            // Start-up recovery removes what no open upload owns.
            let _ = self.inner.store.discard_staged(id).await;
        }
        let s = ferry_core::Session {
            state: SessionState::Committed,
            ..s
        };
        let states: Vec<_> = drop
            .iter()
            .map(|id| (id.clone(), UploadState::Aborted))
            .collect();
        self.refresh_session(&s, &states).await;
        self.view(s).await
    }

    /// The folder path new files go into, chosen by `policy` under the
    /// namespace lock as a commit chooses file paths: `Fail` refuses an
    /// occupied path, `Rename` picks the first free `name (n)`, the other
    /// policies take the path as is.
    pub async fn choose_folder(
        &self,
        caller: &Caller,
        space: &str,
        path: &str,
        policy: ferry_core::ConflictPolicy,
    ) -> Result<String> {
        use ferry_core::ConflictPolicy as P;
        let p = crate::admin::principal(caller)?;
        let space = ferry_core::SpaceName::parse(space)
            .map_err(|e| EngineError::invalid("invalid_path", e.to_string()))?;
        self.require_write(p, &space).await?;
        if path.is_empty() {
            return Ok(String::new()); // the space's root always exists
        }
        let base = ferry_core::SpacePath::parse(path)
            .map_err(|e| EngineError::invalid("invalid_path", format!("{path:?}: {e}")))?;
        let _ns = self.inner.namespace.lock().await;
        match policy {
            P::Fail | P::Rename if self.occupied(&space, &base).await? => {}
            _ => return Ok(base.to_string()),
        }
        if policy == P::Rename {
            for n in 1..=10_000 {
                // `None`: no suffixed name fits the path limit.
                let Some(candidate) = ferry_core::conflict::renamed(&base, n) else {
                    break;
                };
                if !self.occupied(&space, &candidate).await? {
                    return Ok(candidate.to_string());
                }
            }
        }
        Err(EngineError::AlreadyExists {
            path: format!("{space}/{base}"),
        })
    }
}

fn parse_path(path: &str) -> Result<SpacePath> {
    SpacePath::parse(path)
        .map_err(|e| EngineError::invalid("invalid_path", format!("{path:?}: {e}")))
}
