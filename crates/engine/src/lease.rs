//! Leases across nodes: what one node is doing to an upload or a session
//! while it does it, so that the nodes sharing the metadata take turns
//! where one node's locks would (PRODUCT.md, "several nodes").
//!
//! The metadata keeps the leases ([`MetaStore::claim`]); this module is
//! the policy, one rule per kind of lease:
//!
//! - an **append** (tus, the IETF draft) held by another request asks it
//!   to let go, as one node's take-over does: the holder's node stops that
//!   write, which keeps its durable bytes, and releases; the newcomer gets
//!   the upload within a second, never a 423 until a timeout;
//! - a **write** (a part, a range) overlapping another one in flight is
//!   refused as on one node ([`EngineError::Conflict`]);
//! - a **commit** freezes the upload: writes are refused while it runs;
//! - a **turn** (a session's commit, abort or expiry; a namespace's path
//!   choice) is waited for; a session's turn held ahead of its commit by a
//!   completing append is asked for after a second, and its holder lets
//!   it go (the commit claims it again when it comes). A small one-request upload's, held
//!   from its session's creation, is waited for: that upload is all or
//!   nothing, and short.
//!
//! A dead node holds no lease (the metadata drops them with its
//! connection), so a node killed mid-request is taken over at once.

use crate::{Engine, EngineError, Result};
use ferry_meta::{Change, Claim, LeaseKind, UnreadClaim};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long an append waits for the holder it asked to let go (which
/// settles its write first: records its durable bytes).
const ASKED_WAIT: Duration = Duration::from_secs(10);
/// How long a turn is waited for.
const TURN_WAIT: Duration = Duration::from_secs(30);
/// How often a waiter claims again when it hears nothing (a missed
/// announcement costs this much, not a hang).
const RECLAIM: Duration = Duration::from_millis(250);
/// How often an append asks again (an asked holder may have been
/// between claiming and registering).
const REASK: Duration = Duration::from_secs(1);

/// A lease this node holds; released when dropped.
pub(crate) struct Lease {
    engine: Engine,
    token: String,
    /// A session's turn held ahead of its commit by a completing append:
    /// let go when another node asks for it ([`heard`]).
    yields: bool,
}

impl Lease {
    /// Lets the holder's node stop this work when another node asks
    /// ([`Change::ReleaseAsked`]) or when the node's leases lapse.
    pub fn stops(&self, stop: &CancellationToken) {
        self.engine
            .inner
            .leased
            .lock()
            .unwrap()
            .insert(self.token.clone(), stop.clone());
    }

    /// Releases now, and waits until it is recorded (a drop releases in
    /// the background).
    pub async fn release(mut self) {
        let token = self.forget();
        if !token.is_empty() {
            release_tokens(&self.engine.inner.meta, vec![token]).await;
        }
    }

    /// Its token, for a metadata step that ends the lease itself
    /// ([`ferry_meta::MetaStore::record_write_releasing`]).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Forgets a lease such a step ended.
    pub fn ended(mut self) {
        self.forget();
    }

    /// A lease the metadata granted in a step of its own (a new session's
    /// turn, [`ferry_meta::MetaStore::create_sessions_holding`]).
    pub fn granted(engine: &Engine, token: String) -> Lease {
        Lease {
            engine: engine.clone(),
            token,
            yields: false,
        }
    }

    /// Takes the token out (once: then empty) and stops listening for it.
    fn forget(&mut self) -> String {
        let token = std::mem::take(&mut self.token);
        self.engine.inner.leased.lock().unwrap().remove(&token);
        token
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let token = self.forget();
        if token.is_empty() {
            return; // released already
        }
        // (Outside a runtime, at the end of a process, the lease ends
        // with the node.)
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let meta = self.engine.inner.meta.clone();
            rt.spawn(async move { release_now(&meta, &[token], None).await });
        }
    }
}

/// Ends the leases of `tokens` in one step, in a task of its own, and
/// waits for its first attempt: a request that goes away meanwhile (its
/// future dropped) does not leave them behind, the caller's next step
/// comes after the release is recorded, and one that failed is tried
/// again in the background.
async fn release_tokens(meta: &std::sync::Arc<dyn ferry_meta::MetaStore>, tokens: Vec<String>) {
    let meta = meta.clone();
    // The caller waits for the first attempt only: retries of a metadata
    // that does not answer go on in the background.
    let (first, tried) = tokio::sync::oneshot::channel();
    tokio::spawn(async move { release_now(&meta, &tokens, Some(first)).await });
    let _ = tried.await;
}

/// [`ferry_meta::MetaStore::release_all`], tried again a few times over
/// ~6 s when the metadata does not answer (a pool that is busy, a
/// connection that broke): a lease this node holds has no expiry while
/// the node lives, so one whose release failed would keep its upload or
/// session from every other request.
async fn release_now(
    meta: &std::sync::Arc<dyn ferry_meta::MetaStore>,
    tokens: &[String],
    mut first: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let mut pause = Duration::from_millis(200);
    for attempt in 1.. {
        let done = meta.release_all(tokens).await;
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
        match done {
            Ok(()) => return,
            Err(e) if attempt >= 6 => {
                tracing::warn!(error = %e, "cannot release leases; they end with this node");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, attempt, "a release failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
}

/// What a granted claim brings ([`Engine::lease_upload`]): its lease, the
/// session's turn taken with it, and the upload and its session as
/// recorded once it was granted. All `None` on one node.
#[derive(Default)]
pub(crate) struct Leased {
    pub lease: Option<Lease>,
    pub turn: Option<Lease>,
    pub read: Option<(ferry_core::Upload, ferry_core::Session)>,
    /// The upload's and its session's states (a claim that reads only them).
    pub states: Option<(ferry_core::UploadState, ferry_core::SessionState)>,
    /// A session and its uploads (the claim of its commit's turn).
    pub session: Option<(ferry_core::Session, Vec<ferry_core::Upload>)>,
    /// The commit leases of the session's open uploads granted with its
    /// turn, by upload.
    pub commits: Vec<(String, Lease)>,
}

/// What [`Engine::claim_unread`] took: the upload's slot as its claim
/// read it, its lease, and the session's turn kept for the commit.
pub(crate) struct ClaimedUnread {
    pub slot: std::sync::Arc<crate::live::Slot>,
    pub lease: Lease,
    pub turn_ahead: Option<TurnAhead>,
}

/// What a claim reads once granted.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Reading {
    Nothing,
    /// The upload (the key) and its session, whole.
    Whole,
    /// Their states.
    States,
    /// This session and its uploads, under the commit leases of its open
    /// uploads when they are free (the claim of its commit's turn).
    Commit(String),
}

/// One claim's answer ([`Engine::claim_once`]).
enum Claimed {
    /// What it leased and read.
    Granted(Box<Leased>),
    /// Live leases of other requests in its way.
    Busy(Vec<ferry_meta::Held>),
}

impl Engine {
    /// Ends `leases` in one step, and waits until it is recorded: none
    /// outlives another (a waiter woken by one finds the others gone too),
    /// and a request answered after this is not refused by them.
    pub(crate) async fn release_leases(&self, leases: impl IntoIterator<Item = Lease>) {
        let tokens: Vec<String> = leases
            .into_iter()
            .map(|mut l| l.forget())
            .filter(|t| !t.is_empty())
            .collect();
        if !tokens.is_empty() {
            release_tokens(&self.inner.meta, tokens).await;
        }
    }

    /// Leases `[lo, hi)` of `key` as `kind`, following the kind's rule
    /// when another node holds an overlapping lease (see the module);
    /// `None` on one node, where the in-process locks are enough.
    pub(crate) async fn lease(
        &self,
        key: &str,
        lo: u64,
        hi: u64,
        kind: LeaseKind,
    ) -> Result<Option<Lease>> {
        Ok(self
            .lease_claiming(key, lo, hi, kind, None, Reading::Nothing)
            .await?
            .lease)
    }

    /// [`Engine::lease`] of an upload's bytes, and in the same claim the
    /// turn of session `turn` when no other node holds it (it is not
    /// waited for: `None` then, and the session's turn is claimed when it
    /// is needed), and what `reading` asks of the upload and its session
    /// as recorded once the lease is granted.
    pub(crate) async fn lease_upload(
        &self,
        upload_id: &str,
        (lo, hi): (u64, u64),
        kind: LeaseKind,
        turn: Option<&str>,
        reading: Reading,
    ) -> Result<Leased> {
        self.lease_claiming(upload_id, lo, hi, kind, turn, reading)
            .await
    }

    /// In a cluster, a write to an upload this node keeps no slot of
    /// claims before it reads (`write`): its lease, with the upload and
    /// its session read in the same statement. An append's covers every
    /// byte, and when its `len` bytes at `offset` (at most
    /// [`BORN_TURN_MAX`]) would complete an upload committed on its last
    /// byte, the session's turn is taken for that commit; a part's covers
    /// its bytes. The claim is made only for whom the upload is (as
    /// `authorize` says after the read) and disturbs nobody: `None` when
    /// it was not made (another's upload, unknown or ended, a part it
    /// cannot have) or another process holds any of those bytes, and
    /// then the caller reads, then claims the usual way (which waits, or
    /// asks the holder to let go, and says what is wrong).
    pub(crate) async fn claim_unread(
        &self,
        caller: &crate::auth::Caller,
        upload_id: &str,
        at: crate::write::WriteAt,
    ) -> Result<Option<ClaimedUnread>> {
        use crate::write::WriteAt;
        let what = match at {
            // As `write_lease` asks for the turn.
            WriteAt::Append { offset, len, total } => {
                let end = len
                    .filter(|n| *n <= crate::session::BORN_TURN_MAX)
                    .and_then(|n| offset.checked_add(n));
                UnreadClaim::Append(end.map(|end| ferry_meta::TurnIfEnding {
                    prefix: SESSION_KEY,
                    end,
                    total,
                }))
            }
            WriteAt::Part(n) => UnreadClaim::Part(n.into()),
            _ => return Ok(None),
        };
        // Claimed only for whom the upload is: a request that may not
        // write it changes nothing (then the read below refuses it).
        let Some(by) = caller.upload_scope(upload_id) else {
            return Ok(None);
        };
        let engine = self.clone();
        let id = upload_id.to_owned();
        let task = tokio::spawn(async move {
            let claimed = engine.inner.meta.claim_unread(&id, &by, what).await?;
            let lease = |token| Lease::granted(&engine, token);
            Ok(match claimed {
                Some((Claim::Granted(token), t, read)) => Some((lease(token), t.map(lease), read)),
                _ => None,
            })
        });
        // (Granted with no upload to read: the leases end here.)
        let Some((lease, turn, Some(read))) = holding_task(task).await? else {
            return Ok(None);
        };
        let session_id = read.1.id.clone();
        // A part's lease leaves the upload's other bytes to this node's
        // other writes: a slot one of them made since is read afresh
        // unless it holds what this read says.
        let since = matches!(what, UnreadClaim::Part(_)).then(|| read.0.clone());
        let slot = self
            .slot_as_read_since(caller, upload_id, Some(read), since)
            .await?;
        let turn_ahead = turn.map(|t| self.keep_turn_ahead(&session_id, t));
        Ok(Some(ClaimedUnread {
            slot,
            lease,
            turn_ahead,
        }))
    }

    async fn lease_claiming(
        &self,
        key: &str,
        lo: u64,
        hi: u64,
        kind: LeaseKind,
        turn: Option<&str>,
        reading: Reading,
    ) -> Result<Leased> {
        if !self.in_cluster() {
            return Ok(Leased::default());
        }
        let started = Instant::now();
        let mut found_held = false;
        let leased = self
            .lease_in_turn(key, (lo, hi), kind, turn, reading, &mut found_held)
            .await;
        // Claims that found another request holding what they asked for,
        // by what they were for and how that ended (an operator's view
        // of contention across nodes).
        if found_held {
            let outcome = match &leased {
                Ok(_) => "granted",
                Err(EngineError::Conflict(_)) => "refused",
                Err(_) => "failed",
            };
            metrics::counter!("ferry_lease_busy_total", "kind" => kind.as_str(), "outcome" => outcome)
                .increment(1);
            if leased.is_ok() {
                metrics::histogram!("ferry_lease_wait_seconds", "kind" => kind.as_str())
                    .record(started.elapsed().as_secs_f64());
            }
        }
        leased
    }

    /// [`Engine::lease_claiming`]'s claims, waits and refusals, one rule
    /// per kind; `found_held` is set once a claim finds the lease held.
    async fn lease_in_turn(
        &self,
        key: &str,
        (lo, hi): (u64, u64),
        kind: LeaseKind,
        turn: Option<&str>,
        reading: Reading,
        found_held: &mut bool,
    ) -> Result<Leased> {
        let meta = &self.inner.meta;
        // Listening before the first claim: a release after it is heard.
        let mut heard = meta.changes();
        let started = Instant::now();
        let mut asked: Option<Instant> = None;
        let turn = turn.map(session_key);
        loop {
            let claimed = self
                .claim_once(key, lo, hi, kind, turn.as_deref(), &reading)
                .await?;
            let held = match claimed {
                Claimed::Granted(leased) => return Ok(*leased),
                Claimed::Busy(held) => held,
            };
            *found_held = true;
            let committing = held.iter().any(|h| h.kind == LeaseKind::Commit);
            let wait = match kind {
                LeaseKind::Append if committing => {
                    return Err(EngineError::Conflict(
                        "the upload is being committed; no more bytes are accepted".into(),
                    ));
                }
                LeaseKind::Append => ASKED_WAIT,
                LeaseKind::Turn => TURN_WAIT,
                LeaseKind::Write if committing => {
                    return Err(EngineError::Conflict(
                        "the upload is being committed; no more bytes are accepted".into(),
                    ));
                }
                LeaseKind::Write => {
                    return Err(EngineError::Conflict(format!(
                        "bytes {lo}-{} overlap bytes that another request is writing now",
                        hi.saturating_sub(1)
                    )));
                }
                LeaseKind::Commit => {
                    return Err(EngineError::Conflict(
                        "bytes of the upload are still being written".into(),
                    ));
                }
            };
            if started.elapsed() >= wait {
                return Err(EngineError::Conflict(format!(
                    "another node kept this {} for {} s; retry",
                    if kind == LeaseKind::Turn {
                        "session or folder busy"
                    } else {
                        "upload"
                    },
                    wait.as_secs()
                )));
            }
            // A session's turn held ahead of its commit by a completing
            // append is let go when asked. Turns are short: asked only
            // after a wait of `REASK` (a NOTIFY costs the server a lock).
            let asks = kind == LeaseKind::Append
                || (kind == LeaseKind::Turn
                    && key.starts_with(SESSION_KEY)
                    && started.elapsed() >= REASK);
            if asks && asked.is_none_or(|t| t.elapsed() >= REASK) {
                let tokens: Vec<String> = held.into_iter().map(|h| h.token).collect();
                meta.ask_release(&tokens).await?;
                asked = Some(Instant::now());
            }
            // Until a release of this key is heard, or a while.
            let released = async {
                match &mut heard {
                    Some(rx) => loop {
                        match rx.recv().await {
                            Ok(Change::Released(k)) if k == key => return,
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                            Err(_) => std::future::pending::<()>().await,
                        }
                    },
                    None => std::future::pending::<()>().await,
                }
            };
            let _ = tokio::time::timeout(RECLAIM, released).await;
        }
    }

    /// One claim statement, in a task of its own which makes the guards of
    /// what it leased: a request that goes away while its claim is under
    /// way (its future dropped; the statement still runs to its end in the
    /// metadata) leaves no lease behind, as the guards then drop with the
    /// task's answer and release.
    async fn claim_once(
        &self,
        key: &str,
        lo: u64,
        hi: u64,
        kind: LeaseKind,
        turn: Option<&str>,
        reading: &Reading,
    ) -> Result<Claimed> {
        let engine = self.clone();
        let (key, turn) = (key.to_owned(), turn.map(str::to_owned));
        let reading = reading.clone();
        let task = tokio::spawn(async move {
            let meta = &engine.inner.meta;
            let lease = |token| Lease::granted(&engine, token);
            let (claim, leased) = match reading {
                Reading::Whole => {
                    let (c, t, read) = meta
                        .claim_and_read(&key, lo, hi, kind, turn.as_deref())
                        .await?;
                    let leased = Leased {
                        turn: t.map(lease),
                        read,
                        ..Leased::default()
                    };
                    (c, leased)
                }
                Reading::States => {
                    let (c, states) = meta.claim_and_states(&key, lo, hi, kind).await?;
                    let leased = Leased {
                        states,
                        ..Leased::default()
                    };
                    (c, leased)
                }
                Reading::Commit(id) => {
                    let t = meta.claim_commit_turn(&key, &id).await?;
                    let commits = t.commits.into_iter().map(|(id, tk)| (id, lease(tk)));
                    let leased = Leased {
                        session: t.read,
                        commits: commits.collect(),
                        ..Leased::default()
                    };
                    (t.claim, leased)
                }
                Reading::Nothing => (meta.claim(&key, lo, hi, kind).await?, Leased::default()),
            };
            Ok(match claim {
                Claim::Granted(token) => Claimed::Granted(Box::new(Leased {
                    lease: Some(lease(token)),
                    ..leased
                })),
                // (Anything granted with a busy claim is released here.)
                Claim::Busy(held) => Claimed::Busy(held),
            })
        });
        holding_task(task).await
    }

    /// A session's turn: its commit, abort and expiry exclude each other,
    /// on this node (a lock) and across nodes (a lease). A session this
    /// node made holding its turn (a one-request upload's) uses that lease
    /// for its first turn here instead of claiming one.
    pub(crate) async fn session_turn(&self, session_id: &str) -> Result<SessionTurn<'_>> {
        Ok(self.session_turn_claiming(session_id, false).await?.0)
    }

    /// [`Engine::session_turn`] for the session's commit: with the turn's
    /// claim, when there is one, the commit leases of the session's open
    /// uploads if none is held elsewhere, and the session and its uploads
    /// as recorded once they are held (`None`: the caller reads them).
    pub(crate) async fn session_commit_turn(
        &self,
        session_id: &str,
    ) -> Result<(SessionTurn<'_>, Option<CommitRead>)> {
        self.session_turn_claiming(session_id, true).await
    }

    async fn session_turn_claiming(
        &self,
        session_id: &str,
        commit: bool,
    ) -> Result<(SessionTurn<'_>, Option<CommitRead>)> {
        let local = self.session_lock(session_id).lock().await;
        let born = self.inner.born_turns.lock().unwrap().remove(session_id);
        let (lease, read) = match born {
            Some(lease) => (Some(lease), None),
            None => {
                let reading = match commit {
                    true => Reading::Commit(session_id.to_owned()),
                    false => Reading::Nothing,
                };
                let key = session_key(session_id);
                let leased = self
                    .lease_claiming(&key, 0, u64::MAX, LeaseKind::Turn, None, reading)
                    .await?;
                let commits = leased.commits;
                let read = leased.session.map(|(session, uploads)| CommitRead {
                    session,
                    uploads,
                    commits,
                });
                (leased.lease, read)
            }
        };
        let turn = SessionTurn {
            _local: local,
            lease,
        };
        Ok((turn, read))
    }

    /// Keeps the turns of new sessions the metadata leased to this node
    /// as it created them, until their first turn ([`Engine::session_turn`])
    /// or [`Engine::forget_born_turn`].
    pub(crate) fn keep_born_turns(&self, turns: impl IntoIterator<Item = (String, Lease)>) {
        let mut born = self.inner.born_turns.lock().unwrap();
        for (session_id, lease) in turns {
            born.insert(session_id, lease);
        }
    }

    /// [`ferry_meta::MetaStore::create_sessions_holding`] in a task of its
    /// own which makes the turns' guards, as [`Engine::claim_once`] does:
    /// a creation whose request goes away leaves no turn behind.
    pub(crate) async fn create_holding(
        &self,
        sessions: &[(ferry_core::Session, Vec<ferry_core::Upload>)],
        limits: ferry_meta::CreateLimits,
        events: &[ferry_meta::OutboxEvent],
        turns: Vec<String>,
    ) -> Result<std::result::Result<Vec<Lease>, ferry_meta::LimitRefusal>> {
        let engine = self.clone();
        let (sessions, events) = (sessions.to_vec(), events.to_vec());
        let task = tokio::spawn(async move {
            let made = engine
                .inner
                .meta
                .create_sessions_holding(&sessions, limits, &events, &turns)
                .await?;
            Ok(made.map(|tokens| {
                tokens
                    .into_iter()
                    .map(|t| Lease::granted(&engine, t))
                    .collect()
            }))
        });
        holding_task(task).await
    }

    /// Keeps a session's turn this node leased ahead of its commit (with
    /// a completing append's lease) for the session's next turn here;
    /// released when the guard drops if no turn took it.
    pub(crate) fn keep_turn_ahead(&self, session_id: &str, mut lease: Lease) -> TurnAhead {
        lease.yields = true;
        let token = lease.token.clone();
        self.inner
            .born_turns
            .lock()
            .unwrap()
            .insert(session_id.to_owned(), lease);
        TurnAhead {
            engine: self.clone(),
            session_id: session_id.to_owned(),
            token,
        }
    }

    /// Releases a new session's turn no turn has taken (its request is
    /// over).
    pub(crate) fn forget_born_turn(&self, session_id: &str) {
        let lease = self.inner.born_turns.lock().unwrap().remove(session_id);
        drop(lease);
    }
}

/// What the claim of a session's commit turn read and took
/// ([`Engine::session_commit_turn`]).
pub(crate) struct CommitRead {
    pub session: ferry_core::Session,
    pub uploads: Vec<ferry_core::Upload>,
    /// The commit leases of its open uploads, by upload: all of them, or
    /// none when one was held elsewhere.
    pub commits: Vec<(String, Lease)>,
}

/// A session's turn kept ahead of its commit ([`Engine::keep_turn_ahead`]).
pub(crate) struct TurnAhead {
    engine: Engine,
    session_id: String,
    token: String,
}

impl Drop for TurnAhead {
    /// Releases the turn if no turn took it (and no other write's turn
    /// replaced it since).
    fn drop(&mut self) {
        let mut born = self.engine.inner.born_turns.lock().unwrap();
        let lease = born
            .get(&self.session_id)
            .filter(|l| l.token == self.token)
            .is_some()
            .then(|| born.remove(&self.session_id))
            .flatten();
        drop(born);
        drop(lease);
    }
}

/// The answer of a task that makes lease guards ([`Engine::claim_once`],
/// [`Engine::create_holding`]); a task the runtime stopped as it shuts
/// down answers unavailable.
async fn holding_task<T>(task: tokio::task::JoinHandle<Result<T>>) -> Result<T> {
    match task.await {
        Ok(answer) => answer,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(EngineError::Unavailable("the server is stopping".into())),
    }
}

/// The lease key of a session's turn: [`SESSION_KEY`] and its id.
pub(crate) fn session_key(session_id: &str) -> String {
    format!("{SESSION_KEY}{session_id}")
}

const SESSION_KEY: &str = "session:";

/// Held while a session's commit, abort or expiry runs.
pub(crate) struct SessionTurn<'a> {
    _local: tokio::sync::MutexGuard<'a, ()>,
    lease: Option<Lease>,
}

impl SessionTurn<'_> {
    /// The turn's lease, for a step that ends it itself (a commit's
    /// result); the turn goes on until this guard drops, and the lease
    /// with whoever took it.
    pub fn take_lease(&mut self) -> Option<Lease> {
        self.lease.take()
    }

    /// Gives back a lease [`SessionTurn::take_lease`] took.
    pub fn put_back(&mut self, lease: Option<Lease>) {
        if lease.is_some() {
            self.lease = lease;
        }
    }
}

/// What a node does with an announcement about its leases: a holder asked
/// to let go stops the work it leased, or releases a session's turn a
/// completing append holds ahead of its commit (the commit claims it
/// again); leases that lapsed stop it all.
pub(crate) fn heard(engine: &crate::Inner, change: &Change) {
    if let Change::ReleaseAsked(token) = change {
        let ahead = {
            let mut born = engine.born_turns.lock().unwrap();
            let session = born
                .iter()
                .find(|(_, l)| l.yields && &l.token == token)
                .map(|(s, _)| s.clone());
            session.and_then(|s| born.remove(&s))
        };
        // Dropped outside the map's lock: it releases in the background.
        drop(ahead);
    }
    let leased = engine.leased.lock().unwrap();
    match change {
        Change::ReleaseAsked(token) => {
            if let Some(stop) = leased.get(token) {
                stop.cancel();
            }
        }
        Change::LeasesLost => {
            for stop in leased.values() {
                stop.cancel();
            }
        }
        _ => {}
    }
}
