//! Metadata: users, tokens, spaces, sessions, uploads, files.
//!
//! [`MetaStore`] is the contract, with two backends:
//!
//! - [`Sqlite`], embedded (one file, WAL, `synchronous=FULL`), for one
//!   server process;
//! - [`Postgres`], a PostgreSQL database that several server processes
//!   share: each read-then-write is one transaction that locks the rows it
//!   checks, and its schema comes from versioned migrations
//!   (`migrations/postgres/`) applied once, under an advisory lock.
//!
//! Every method that returns `Ok` after a write has made that write
//! durable (committed). The engine relies on three more rules, which
//! [`conformance`] checks for every backend:
//!
//! - `record_write` is insert-only (a received range or a part is added,
//!   never rewritten from a snapshot), so concurrent writers to one upload
//!   can record in any order without losing each other's ranges.
//! - `finish_commit` is one transaction: every file of a session appears
//!   together with its upload's new state, or nothing changes.
//! - A file path is unique within a space; `finish_commit` replaces the
//!   record at a path (the engine has already applied the conflict policy).
//! - A file id names one record: `finish_commit` of a file whose id is
//!   recorded at another path moves it (the old path's record goes in the
//!   same transaction: a new version under a new name).

pub mod postgres;
pub mod sqlite;

#[cfg(feature = "conformance")]
pub mod conformance;

use ferry_core::{
    Access, ByteRange, Digest, FileRecord, Length, Millis, Part, Session, SessionState, SpaceName,
    SpacePath, Upload, UploadState, User,
};

pub use postgres::Postgres;
pub use sqlite::Sqlite;

/// The metadata layer's one error type. A backend's own errors stay
/// inside [`MetaError::Backend`], opaque (no backend type in the API).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    #[error("{0} already exists")]
    AlreadyExists(Record),
    #[error("{0} does not exist")]
    NotFound(Record),
    /// The disk holding the metadata is full: the write changed nothing
    /// and may be retried once space returns.
    #[error("the metadata database's disk is full")]
    NoSpace,
    /// The backend failed (I/O, a row that does not read, …).
    #[error("the metadata database failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the metadata writer has stopped")]
    Closed,
    /// A lock or a connection stayed taken past its time limit (another
    /// process held it that long): nothing changed; retry later.
    #[error("the metadata database is busy")]
    Busy,
    /// The connection to the metadata database was lost or refused (it
    /// restarted, or is away): retry in a moment.
    #[error("the metadata database cannot be reached")]
    Unreachable,
    /// A session would hold this many uploads, over the limit.
    #[error("{0} uploads would be over the session's limit")]
    Full(usize),
    /// The lease a write was to end with its record is no longer the
    /// writer's: another node took the upload over (this node was
    /// presumed gone). Nothing was recorded.
    #[error("the write's lease was taken over by another node; nothing was recorded")]
    LeaseLost,
    /// The lifecycle does not allow this state change; nothing changed.
    #[error(transparent)]
    IllegalTransition(#[from] ferry_core::TransitionError),
}

impl MetaError {
    pub(crate) fn backend(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> MetaError {
        MetaError::Backend(e.into())
    }
}

/// What a [`MetaError`] is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A user, or the space named after them.
    UserOrSpace(String),
    Space(SpaceName),
    Session(String),
    Upload(String),
    /// A session's upload at a path.
    UploadAt(SpacePath),
    /// A committed file at a path.
    File(SpacePath),
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Record::UserOrSpace(n) => write!(f, "user or space {n:?}"),
            Record::Space(n) => write!(f, "space {:?}", n.as_str()),
            Record::Session(id) => write!(f, "session {id}"),
            Record::Upload(id) => write!(f, "upload {id}"),
            Record::UploadAt(p) | Record::File(p) => write!(f, "{p}"),
        }
    }
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// A stored API token. Only a hash of its secret is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub user: String,
    pub secret_hash: Vec<u8>,
    pub created_at: Millis,
    pub revoked: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaceRecord {
    pub name: SpaceName,
    /// The user whose home this is, if any.
    pub owner: Option<String>,
    pub members: Vec<(String, Access)>,
    pub created_at: Millis,
}

/// One entry of a folder listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File(Box<FileRecord>),
    Folder(String),
}

/// The bounds of the paths strictly below `prefix` (a folder), for a
/// range scan in byte order: `[prefix/, prefix0)`.
/// Ends the leases `tokens` one by one, after a step that could not end
/// them itself; a failure is logged (the lease ends with the process).
pub(crate) async fn release_each<M: MetaStore + ?Sized>(store: &M, tokens: &[String]) {
    for token in tokens {
        if let Err(e) = store.release(token).await {
            tracing::warn!(error = %e, "cannot release a lease; it ends with this process");
        }
    }
}

/// An upload's `sealed` column: its [`Upload::sealed`] digests
/// ([`ferry_core::join_tagged`]) and, when its write named the object
/// ([`Upload::object`]), `object:<name>` among them: the name is recorded
/// and cleared with the digests, in the same field. `None` for none.
pub(crate) fn join_sealed(sealed: &[Digest], object: Option<&str>) -> Option<String> {
    let digests = ferry_core::join_tagged(sealed);
    match (digests, object) {
        (d, None) => d,
        (None, Some(o)) => Some(format!("object:{o}")),
        (Some(d), Some(o)) => Some(format!("{d} object:{o}")),
    }
}

/// What [`join_sealed`] wrote; `None` when a part does not parse.
pub(crate) fn split_sealed(text: &str) -> Option<(Vec<Digest>, Option<String>)> {
    let mut object = None;
    let mut digests = Vec::new();
    for token in text.split_whitespace() {
        match token.strip_prefix("object:") {
            Some(name) if !name.is_empty() && object.is_none() => object = Some(name.to_owned()),
            Some(_) => return None,
            None => digests.extend(ferry_core::split_tagged(token)?),
        }
    }
    Some((digests, object))
}

/// The name of a space's path turn ([`MetaStore::turn`]): what a process
/// holds from choosing final paths in the space until their intent is
/// recorded ([`MetaStore::begin_commit_if_free`] takes it too).
pub fn namespace_turn(space: &SpaceName) -> String {
    format!("namespace:{space}")
}

/// What commits heading for `heading` (final paths at or around `path`)
/// make of it: the shortest ancestor first, as `occupant` answers.
pub(crate) fn heading_of(heading: &[String], path: &SpacePath) -> Result<Option<Occupant>> {
    let ancestor = heading
        .iter()
        .filter(|p| p.len() < path.as_str().len() && path.ancestors().any(|a| a == p.as_str()))
        .min_by_key(|p| p.len());
    Ok(match ancestor {
        Some(a) => Some(Occupant::FileAncestor(
            SpacePath::parse(a).map_err(|e| MetaError::backend(format!("bad path: {e}")))?,
        )),
        None => (!heading.is_empty()).then_some(Occupant::Folder),
    })
}

pub(crate) fn below(prefix: &str) -> (String, String) {
    (format!("{prefix}/"), format!("{prefix}0")) // '0' follows '/' in byte order
}

/// A folder's listing from the files below it (`skip`: the bytes of its
/// path and the `/` after it): its immediate subfolders first, then its
/// own files, each group sorted by name.
pub(crate) fn entries(
    files_below: impl IntoIterator<Item = FileRecord>,
    skip: usize,
) -> Vec<Entry> {
    let mut folders = std::collections::BTreeSet::new();
    let mut files = Vec::new();
    for f in files_below {
        match f.path.as_str()[skip..].split_once('/') {
            Some((folder, _)) => {
                folders.insert(folder.to_owned());
            }
            None => files.push(f),
        }
    }
    files.sort_by(|a, b| a.path.name().cmp(b.path.name()));
    folders
        .into_iter()
        .map(Entry::Folder)
        .chain(files.into_iter().map(|f| Entry::File(Box::new(f))))
        .collect()
}

/// What a commit finds at a path it chooses ([`MetaStore::path_taken`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathTaken {
    /// A commit in progress heads for it, or around it.
    Committing(Occupant),
    /// A file or a folder is there (or a file is at an ancestor).
    Occupied(Occupant),
    Free,
}

/// What already occupies a path, as far as metadata knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Occupant {
    File(Box<FileRecord>),
    /// Some file lives below this path.
    Folder,
    /// A parent folder of the path is a file (given).
    FileAncestor(SpacePath),
}

/// The owner's limits a session creation must keep
/// ([`MetaStore::create_session_within`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateLimits {
    pub max_open_sessions: u64,
    /// Bytes the owner may use, committed plus reserved by open uploads.
    pub quota_bytes: Option<u64>,
}

/// Why a creation was refused, with what was counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitRefusal {
    TooManySessions { open: u64 },
    OverQuota { used: u64, more: u64 },
}

/// Bytes charged to a user: committed files plus declared sizes of uploads
/// still open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub committed: u64,
    pub reserved: u64,
}

/// A hook notification for the outbox, written in the transaction of the
/// change it reports (so a change is never recorded without its event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The event's unique id (receivers drop duplicates by it).
    pub id: String,
    /// Events of one key are delivered in the order they were written
    /// (an upload's id, or a file's).
    pub key: String,
    /// The JSON body as it will be sent.
    pub body: String,
    /// When it happened (and is first due).
    pub created_at: Millis,
}

/// An outbox event claimed for delivery ([`MetaStore::outbox_claim`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    pub seq: i64,
    pub id: String,
    pub key: String,
    pub body: String,
    /// Failed deliveries so far.
    pub attempts: u32,
    pub created_at: Millis,
}

/// What a state change does to the upload's session, in the same
/// transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd<'a> {
    /// The session's state stays as it is.
    Keep,
    /// The session moves to this state.
    To(&'a str, SessionState),
    /// The session ends if it is open and [`SessionState::settled`] says
    /// so once the change is applied.
    IfSettled(&'a str),
}

/// A change another process made that a cache of the metadata must
/// forget ([`MetaStore::changes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// This token was revoked.
    TokenRevoked(String),
    /// Changes may have been missed (the feed reconnected): forget all.
    Unknown,
    /// Another process asks the holder of this lease to let it go
    /// ([`MetaStore::ask_release`]).
    ReleaseAsked(String),
    /// A lease on this key that a claim found in its way was released
    /// ([`MetaStore::release`]; a lease no claim waited for ends quietly).
    Released(String),
    /// This process's leases may have been taken from it (its presence
    /// in the database lapsed): what it does under them must stop.
    LeasesLost,
    /// A user's limits or a space's members changed: cached users and
    /// spaces are stale.
    Accounts,
}

/// What a lease is for: it tells a process that finds it held whether to
/// ask for it, wait for it, or give up ([`MetaStore::claim`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseKind {
    /// Bytes appended in order (tus, the IETF draft): a newer append asks
    /// the holder to let go.
    Append,
    /// A part or a byte range.
    Write,
    /// A commit verifying and promoting the upload.
    Commit,
    /// A turn at something short (a session's commit, a namespace's path
    /// choice): others wait.
    Turn,
}

impl LeaseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseKind::Append => "append",
            LeaseKind::Write => "write",
            LeaseKind::Commit => "commit",
            LeaseKind::Turn => "turn",
        }
    }

    pub fn parse(s: &str) -> Option<LeaseKind> {
        [
            LeaseKind::Append,
            LeaseKind::Write,
            LeaseKind::Commit,
            LeaseKind::Turn,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A lease another process holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub token: String,
    pub kind: LeaseKind,
}

/// The answer to [`MetaStore::claim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The lease is this process's, under this token, until released.
    Granted(String),
    /// Live processes hold leases that overlap it.
    Busy(Vec<Held>),
}

/// `read`, or once the leases `claim` granted (and `others`, granted
/// with it) are released, its error: a claim whose read failed leaves
/// nothing held.
pub async fn release_unless<M: MetaStore + ?Sized, T>(
    meta: &M,
    read: Result<T>,
    claim: &Claim,
    others: &[&str],
) -> Result<T> {
    if read.is_err() {
        let granted = match claim {
            Claim::Granted(t) => Some(t.as_str()),
            Claim::Busy(_) => None,
        };
        for token in granted.into_iter().chain(others.iter().copied()) {
            if let Err(e) = meta.release(token).await {
                tracing::warn!(error = %e, "cannot release a lease; it ends with this process");
            }
        }
    }
    read
}

/// Whose an upload must be for [`MetaStore::claim_unread`] to
/// claim it: no request disturbs another's upload, even before it is
/// authorized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimBy {
    /// A caller allowed every upload (an administrator).
    Anyone,
    /// The owner of the upload's session.
    Owner(String),
    /// A caller allowed the uploads of this session.
    Session(String),
}

impl ClaimBy {
    /// Whether an upload of session `session`, owned by `owner`, is one
    /// this names.
    pub fn admits(&self, owner: &str, session: &str) -> bool {
        match self {
            ClaimBy::Anyone => true,
            ClaimBy::Owner(o) => o == owner,
            ClaimBy::Session(s) => s == session,
        }
    }
}

/// What [`MetaStore::claim_unread`] claims of an upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnreadClaim<'a> {
    /// An append: all of the upload's bytes ([`LeaseKind::Append`]), and
    /// with a [`TurnIfEnding`], the session's turn when it says so.
    Append(Option<TurnIfEnding<'a>>),
    /// Part `n`'s bytes, where the upload's part size places them
    /// ([`LeaseKind::Write`]; as [`ferry_core::PartPlan::part_range`],
    /// to the end of a file of deferred length), 1 ≤ `n` ≤
    /// [`UNREAD_PARTS_MAX`].
    Part(u64),
}

/// The highest part number [`MetaStore::claim_unread`] claims (a higher
/// one is read first, then claimed).
pub const UNREAD_PARTS_MAX: u64 = 100_000;

/// The session's turn for [`MetaStore::claim_unread`]: taken when
/// the append ends at `end` and that is the upload's length (`total`,
/// when the request sets the length; else the recorded one), in a session
/// committed on its last byte. The turn's key is `prefix` and the
/// session's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TurnIfEnding<'a> {
    pub prefix: &'a str,
    pub end: u64,
    pub total: Option<u64>,
}

/// What a commit that claimed nothing worked from
/// ([`MetaStore::commit_if_free_unclaimed`]): the records must still say
/// this.
#[derive(Clone, Debug)]
pub struct CommitGate {
    /// The lease key of the session's turn (no lease may hold it).
    pub turn: String,
    pub session_id: String,
    pub upload_id: String,
    /// The commit of the whole session: the upload is its only one.
    pub whole: bool,
    /// The file's digests, as the write that stored it whole sealed them.
    pub sealed: Vec<Digest>,
    /// The object that write stored the file under ([`Upload::object`]).
    pub object: Option<String>,
    /// That write is recorded with the result, not before it: the records
    /// must show the upload as it was made (never claimed, no lease of it
    /// at all, nothing received, sealed or numbered as a part: what
    /// [`MetaStore::record_write_if_free`] checks), and the result sets
    /// `sealed` with the upload's final state (a committed upload keeps
    /// no received ranges). For an append of the whole file (no part).
    pub with_write: bool,
    pub metadata: Option<String>,
    pub content_type: Option<String>,
    pub dialect_state: Option<String>,
    pub expires_at: Millis,
}

/// What [`MetaStore::claim_commit_turn`] answers.
#[derive(Debug)]
pub struct CommitTurn {
    /// The session's turn.
    pub claim: Claim,
    /// The commit leases granted with the turn: the upload, the token.
    pub commits: Vec<(String, String)>,
    /// The session and its uploads, read once the turn was granted.
    pub read: Option<(Session, Vec<Upload>)>,
}

/// `read`, run once `claim` is granted (`None` when it was refused); a
/// read that fails releases what was granted (the claim and `turn`).
async fn read_if_granted<M: MetaStore + ?Sized, T>(
    meta: &M,
    claim: &Claim,
    turn: Option<&str>,
    read: impl std::future::Future<Output = Result<Option<T>>>,
) -> Result<Option<T>> {
    let read = match claim {
        Claim::Granted(_) => read.await,
        Claim::Busy(_) => Ok(None),
    };
    release_unless(meta, read, claim, turn.as_slice()).await
}

/// Held by the one process that does something for every process sharing
/// the metadata ([`MetaStore::try_exclusive`]); released when dropped, or
/// when the process dies.
pub struct Exclusive {
    _holder: Box<dyn std::any::Any + Send>,
    /// Set when the hold ended without being dropped ([`Exclusive::is_lost`]).
    lost: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Exclusive {
    /// A hold on whatever keeps it, which cannot end before it is dropped.
    pub fn new(holder: Box<dyn std::any::Any + Send>) -> Exclusive {
        Exclusive {
            _holder: holder,
            lost: None,
        }
    }

    /// A hold that may end behind its holder's back (a lock on a
    /// connection the database closed): whatever watches it sets `lost`.
    pub fn watched(
        holder: Box<dyn std::any::Any + Send>,
        lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Exclusive {
        Exclusive {
            _holder: holder,
            lost: Some(lost),
        }
    }

    /// What keeps the hold, when it is a `T`: the hold is then the
    /// caller's to end.
    pub fn into_holder<T: 'static>(self) -> std::result::Result<Box<T>, Exclusive> {
        let Exclusive { _holder, lost } = self;
        _holder
            .downcast::<T>()
            .map_err(|_holder| Exclusive { _holder, lost })
    }

    /// Whether the hold ended though it was not dropped (the database
    /// restarted, or ended its connection): another process may hold it
    /// now, so what it was held for must stop.
    pub fn is_lost(&self) -> bool {
        self.lost
            .as_ref()
            .is_some_and(|l| l.load(std::sync::atomic::Ordering::SeqCst))
    }
}

impl std::fmt::Debug for Exclusive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exclusive")
    }
}

/// The outcome of committing one upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub upload_id: String,
    /// `Committed` with a new file, or `Skipped` pointing at the existing one.
    pub state: UploadState,
    pub final_path: SpacePath,
    pub file: FileRecord,
}

#[async_trait::async_trait]
pub trait MetaStore: Send + Sync + 'static {
    // ---- users, tokens, spaces
    async fn user_count(&self) -> Result<u64>;
    /// Creates the user and their home space (named after them).
    async fn create_user(&self, user: &User) -> Result<()>;
    async fn get_user(&self, name: &str) -> Result<Option<User>>;
    async fn insert_token(&self, token: &TokenRecord) -> Result<()>;
    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>>;
    /// `false` when no such token exists.
    async fn revoke_token(&self, id: &str) -> Result<bool>;
    async fn create_space(&self, space: &SpaceRecord) -> Result<()>;
    async fn get_space(&self, name: &SpaceName) -> Result<Option<SpaceRecord>>;
    /// Every user, by name.
    async fn list_users(&self) -> Result<Vec<User>>;
    /// Sets a user's quota and open-sessions limit (`None`: the server's
    /// default), announced to every process ([`Change::Accounts`]);
    /// `false` when no such user exists.
    async fn set_user_limits(
        &self,
        name: &str,
        quota_bytes: Option<u64>,
        max_open_sessions: Option<u32>,
    ) -> Result<bool>;
    /// A user's tokens, oldest first.
    async fn list_tokens(&self, user: &str) -> Result<Vec<TokenRecord>>;
    /// Every space with its members, by name.
    async fn list_spaces(&self) -> Result<Vec<SpaceRecord>>;
    /// Gives `user` `access` to `space`, or takes it away (`None`),
    /// announced like [`MetaStore::set_user_limits`]; `false` when no such
    /// space exists.
    async fn set_member(
        &self,
        space: &SpaceName,
        user: &str,
        access: Option<Access>,
    ) -> Result<bool>;

    // ---- sessions and uploads
    async fn create_session(&self, session: &Session, uploads: &[Upload]) -> Result<()>;
    /// Creates sessions of one owner, all or none, if the owner stays
    /// within `limits`: counting the owner's open sessions and bytes in
    /// use or reserved, and inserting, are one atomic step (concurrent
    /// creations cannot pass a limit together). Answers what was refused,
    /// or `None` once created.
    async fn create_sessions_within(
        &self,
        sessions: &[(Session, Vec<Upload>)],
        limits: CreateLimits,
    ) -> Result<Option<LimitRefusal>> {
        self.create_sessions_reporting(sessions, limits, &[]).await
    }
    /// [`MetaStore::create_sessions_within`] that also writes `events` to
    /// the outbox when the sessions are created.
    async fn create_sessions_reporting(
        &self,
        sessions: &[(Session, Vec<Upload>)],
        limits: CreateLimits,
        events: &[OutboxEvent],
    ) -> Result<Option<LimitRefusal>>;
    /// [`MetaStore::create_sessions_reporting`] that also leases to this
    /// process, as [`LeaseKind::Turn`] over the whole key, each of `turns`
    /// (keys of the new sessions: nobody else can hold them yet), in the
    /// same step. Answers the leases' tokens in the order of `turns`, or
    /// what was refused (then nothing is created or leased).
    async fn create_sessions_holding(
        &self,
        sessions: &[(Session, Vec<Upload>)],
        limits: CreateLimits,
        events: &[OutboxEvent],
        turns: &[String],
    ) -> Result<std::result::Result<Vec<String>, LimitRefusal>> {
        if let Some(refused) = self
            .create_sessions_reporting(sessions, limits, events)
            .await?
        {
            return Ok(Err(refused));
        }
        let mut tokens = Vec::with_capacity(turns.len());
        for key in turns {
            match self.claim(key, 0, u64::MAX, LeaseKind::Turn).await? {
                Claim::Granted(token) => tokens.push(token),
                Claim::Busy(_) => {
                    return Err(MetaError::backend(format!(
                        "the new key {key:?} is leased already"
                    )));
                }
            }
        }
        Ok(Ok(tokens))
    }
    /// A one-request upload recorded whole in one step: `session` and its
    /// one `upload`, both made in their final state (committed, the upload
    /// naming `done`'s file), `done.file` and `events`, if `done`'s path is
    /// free (no file or commit in progress at it, above or below it,
    /// checked as [`MetaStore::commit_if_free`] checks it) and then the
    /// owner stays within `limits` (as at any creation, the new bytes
    /// counted once). `None` when the path is not free: nothing changed,
    /// and the caller goes the usual way, which decides under the
    /// session's policy. `Some(Err(_))`: refused, nothing changed. Nothing
    /// is recorded either (`None`) when the step's locks were had only
    /// after `deadline`: the upload's object, which no record named until
    /// then, may be gone with the orphan sweep.
    ///
    /// The default records nothing (`None`): a database only this process
    /// uses is written the usual way.
    async fn create_committed(
        &self,
        session: &Session,
        upload: &Upload,
        done: &Committed,
        limits: CreateLimits,
        events: &[OutboxEvent],
        deadline: std::time::Instant,
    ) -> Result<Option<std::result::Result<(), LimitRefusal>>> {
        let _ = (session, upload, done, limits, events, deadline);
        Ok(None)
    }
    async fn get_session(&self, id: &str) -> Result<Option<Session>>;
    /// Sessions of `owner` (all owners when `None`), newest first.
    async fn list_sessions(
        &self,
        owner: Option<&str>,
        state: Option<SessionState>,
    ) -> Result<Vec<Session>>;
    async fn session_uploads(&self, session_id: &str) -> Result<Vec<Upload>>;
    /// The session's uploads at `path`, in any state, in order: by
    /// default read from all of its uploads.
    async fn uploads_at(&self, session_id: &str, path: &SpacePath) -> Result<Vec<Upload>> {
        let mut all = self.session_uploads(session_id).await?;
        all.retain(|u| u.path == *path);
        Ok(all)
    }
    /// Adds uploads to a session in one transaction: `AlreadyExists` if a
    /// path is already one of its uploads, `Full` past `limit` uploads.
    /// Aborted uploads neither hold their path nor count.
    async fn add_uploads(&self, session_id: &str, uploads: &[Upload], limit: usize) -> Result<()>;
    /// Adds `upload` to the session while the uploads `beside` keep its
    /// path (a complete body that this one, sent again, replaces only once
    /// it is complete itself), and aborts `abort`, in one transaction:
    /// `AlreadyExists` if any other upload holds the path, `Full` past
    /// `limit` uploads (counting the path once).
    async fn add_upload_beside(
        &self,
        session_id: &str,
        upload: &Upload,
        beside: &[String],
        abort: &[String],
        limit: usize,
    ) -> Result<()>;
    async fn get_upload(&self, id: &str) -> Result<Option<Upload>>;
    /// An upload with its session, in one step where the backend can.
    async fn upload_and_session(&self, upload_id: &str) -> Result<Option<(Upload, Session)>> {
        let Some(up) = self.get_upload(upload_id).await? else {
            return Ok(None);
        };
        Ok(self.get_session(&up.session_id).await?.map(|s| (up, s)))
    }
    /// The session's upload at `path` that is not aborted, if any.
    async fn upload_at(&self, session_id: &str, path: &SpacePath) -> Result<Option<Upload>>;
    async fn set_upload_metadata(&self, upload_id: &str, metadata: Option<&str>) -> Result<()>;
    /// Records that parts of the upload may go straight to the store
    /// ([`Upload::direct`]); never undone.
    async fn mark_direct(&self, upload_id: &str) -> Result<()>;
    /// Records that `range` of the upload is durable, with the part it
    /// belongs to when the write was a part (replacing an earlier one),
    /// and, when the write stored the whole file as its final object, the
    /// file's digests (`sealed`, [`Upload::sealed`]; empty: unchanged).
    async fn record_write(
        &self,
        upload_id: &str,
        range: ByteRange,
        part: Option<&Part>,
        sealed: &[Digest],
    ) -> Result<()>;
    /// [`MetaStore::record_write`] that also ends the lease `lease` (as
    /// [`MetaStore::release`]) in the same step, and only while the lease
    /// is still held: [`MetaError::LeaseLost`] when another node took it
    /// over (nothing recorded). Backends without leases record and
    /// release.
    async fn record_write_releasing(
        &self,
        upload_id: &str,
        range: ByteRange,
        part: Option<&Part>,
        sealed: &[Digest],
        lease: &str,
    ) -> Result<()> {
        self.record_write(upload_id, range, part, sealed).await?;
        self.release(lease).await
    }
    /// Records a write that claimed nothing ([`MetaStore::record_write`] of
    /// `range`, the whole upload, its one `part` if any and its `sealed`
    /// digests, with `object`, the name it stored the file under:
    /// [`Upload::object`]), only if nothing holds or changed the upload since it was
    /// made: never claimed by any process (a claim leaves a mark that
    /// stays: its request may have written over the object or removed
    /// it), no lease of it, still open in an open session, not written
    /// directly, nothing received or sealed; checked under the lock a
    /// claim of it takes and only tried (a claim under way answers `false`
    /// at once), and against an abort, expiry or commit of it as one step.
    /// `false`: nothing changed, and the write claims the usual way. By
    /// default `false` (one process: it always claims).
    async fn record_write_if_free(
        &self,
        upload_id: &str,
        range: ByteRange,
        part: Option<&Part>,
        sealed: &[Digest],
        object: &str,
    ) -> Result<bool> {
        let _ = (upload_id, range, part, sealed, object);
        Ok(false)
    }
    /// Replaces the upload's received ranges with `received` and drops part
    /// `drop_part`, after a failed write clobbered bytes that had arrived,
    /// and forgets its [`Upload::sealed`] digests.
    /// The caller serializes this with other writes to the upload.
    async fn forget(
        &self,
        upload_id: &str,
        received: &[ByteRange],
        drop_part: Option<u32>,
    ) -> Result<()>;
    /// Fixes a deferred length.
    async fn set_length(&self, upload_id: &str, length: Length) -> Result<()>;
    async fn set_session_state(
        &self,
        id: &str,
        state: SessionState,
        expires_at: Option<Millis>,
    ) -> Result<()>;
    async fn set_upload_state(&self, upload_id: &str, state: UploadState) -> Result<()>;
    /// Moves an open session's expiry later (never earlier).
    async fn extend_session(&self, id: &str, expires_at: Millis) -> Result<()>;
    /// Marks uploads `committing` towards their final paths (and the session
    /// `committing` when given), and aborts the open uploads `abort` (those
    /// closing a session drops: they cannot become files), in one
    /// transaction: the intent that start-up recovery rolls forward.
    async fn begin_commit(
        &self,
        session: Option<&str>,
        plan: &[(String, SpacePath)],
        abort: &[String],
    ) -> Result<()>;
    /// [`MetaStore::begin_commit`] by the holder of `turn` (from
    /// [`MetaStore::turn`]), which it ends. A store whose turns are
    /// transactions records the intent in the turn's own, committed with
    /// it: a holder that dies before then leaves neither (no statement of
    /// it lands after the next holder took the turn and read the paths).
    async fn begin_commit_ending(
        &self,
        turn: Exclusive,
        session: Option<&str>,
        plan: &[(String, SpacePath)],
        abort: &[String],
    ) -> Result<()> {
        self.begin_commit(session, plan, abort).await?;
        drop(turn);
        Ok(())
    }
    /// [`MetaStore::begin_commit`] of the one upload `upload_id` (with
    /// `session`, the commit of that whole session, which holds no other
    /// open upload) towards `path` in `space`, on condition
    /// that the path is free ([`PathTaken::Free`]: no file at, above or
    /// below it and no other upload being committed there), which is
    /// checked and the intent recorded as one atomic step among the
    /// processes sharing the database. `received`, when given, is recorded
    /// with it ([`MetaStore::record_write`]): a write that completed the
    /// upload and left its record to the intent. `false` when the path
    /// was not free or the upload (or the session) not open: nothing
    /// changed, and the
    /// caller takes the path's turn and [`MetaStore::begin_commit`], which
    /// say why. (The default serves a database only this process uses,
    /// whose caller keeps its own commits' paths apart.)
    async fn begin_commit_if_free(
        &self,
        session: Option<&str>,
        upload_id: &str,
        space: &SpaceName,
        path: &SpacePath,
        received: Option<ByteRange>,
    ) -> Result<bool> {
        if self.path_taken(space, path).await? != PathTaken::Free {
            return Ok(false);
        }
        match self.get_upload(upload_id).await? {
            Some(u) if u.state == UploadState::Open => {}
            _ => return Ok(false),
        }
        if let Some(id) = session {
            match self.get_session(id).await? {
                Some(s) if s.state == SessionState::Open => {}
                _ => return Ok(false),
            }
        }
        if let Some(range) = received {
            self.record_write(upload_id, range, None, &[]).await?;
        }
        let plan = [(upload_id.to_owned(), path.clone())];
        self.begin_commit(session, &plan, &[]).await?;
        Ok(true)
    }
    /// [`MetaStore::commit_if_free`] for a commit that claimed nothing:
    /// it worked from what this process last knew, which `gate` says, and
    /// records its result only if the records still say the same and no
    /// lease is held on the upload or the session's turn (checked in the
    /// result's step, under the locks a claim takes). `None` when they do
    /// not, or the path is not free: nothing changed, and the caller
    /// commits the usual way. (The default never records: a database only
    /// this process uses has its own locks for this.)
    async fn commit_if_free_unclaimed(
        &self,
        gate: &CommitGate,
        end: SessionEnd<'_>,
        done: &Committed,
        events: &[OutboxEvent],
    ) -> Result<Option<Option<SessionState>>> {
        let _ = (gate, end, done, events);
        Ok(None)
    }
    /// The commit of the one upload of `done` (a new file at a path, with
    /// [`SessionEnd::To`] the commit of its whole session) as one atomic
    /// step when its path is free: [`MetaStore::begin_commit_if_free`] and
    /// [`MetaStore::finish_commit_releasing`] at once, for a store whose
    /// promotion needs no intent before it (the file's object is sealed
    /// first and no path names it until this records it). The upload goes
    /// from `open` to `done.state`. `None` when the path was not free or
    /// the upload (or the session) not open: nothing changed, and the
    /// caller takes the usual way, which says why. (The default records
    /// the two steps one after the other: it serves a database only this
    /// process uses.)
    async fn commit_if_free(
        &self,
        end: SessionEnd<'_>,
        done: &Committed,
        events: &[OutboxEvent],
        release: &[String],
    ) -> Result<Option<Option<SessionState>>> {
        let session = match end {
            SessionEnd::To(id, _) => Some(id),
            SessionEnd::Keep | SessionEnd::IfSettled(_) => None,
        };
        let (upload, space, path) = (&done.upload_id, &done.file.space, &done.final_path);
        if !self
            .begin_commit_if_free(session, upload, space, path, None)
            .await?
        {
            return Ok(None);
        }
        let done = std::slice::from_ref(done);
        Ok(Some(
            self.finish_commit_releasing(end, done, events, release)
                .await?,
        ))
    }
    /// Records every outcome and the session's end (see [`SessionEnd`]) in
    /// one transaction; returns the session's new state if it changed.
    async fn finish_commit(
        &self,
        end: SessionEnd<'_>,
        done: &[Committed],
    ) -> Result<Option<SessionState>> {
        self.finish_commit_reporting(end, done, &[]).await
    }
    /// [`MetaStore::finish_commit`] that also writes `events` to the
    /// outbox, in the same transaction.
    async fn finish_commit_reporting(
        &self,
        end: SessionEnd<'_>,
        done: &[Committed],
        events: &[OutboxEvent],
    ) -> Result<Option<SessionState>>;
    /// [`MetaStore::finish_commit_reporting`] that also ends the leases
    /// `release` (as [`MetaStore::release`]) when the result is recorded.
    async fn finish_commit_releasing(
        &self,
        end: SessionEnd<'_>,
        done: &[Committed],
        events: &[OutboxEvent],
        release: &[String],
    ) -> Result<Option<SessionState>> {
        let ended = self.finish_commit_reporting(end, done, events).await?;
        release_each(self, release).await;
        Ok(ended)
    }
    /// Aborts those of `ids` that are open (or committing) and applies
    /// `end`, in one transaction; returns the session's new state if it
    /// changed.
    async fn abort_uploads(
        &self,
        ids: &[String],
        end: SessionEnd<'_>,
    ) -> Result<Option<SessionState>> {
        self.abort_uploads_reporting(ids, end, &[]).await
    }
    /// [`MetaStore::abort_uploads`] that also writes to the outbox, in the
    /// same transaction, each of `events` whose key is an upload this call
    /// aborted.
    async fn abort_uploads_reporting(
        &self,
        ids: &[String],
        end: SessionEnd<'_>,
        events: &[OutboxEvent],
    ) -> Result<Option<SessionState>>;
    /// Marks the upload aborted and its session `failed` with `reason`, in
    /// one transaction, reading nothing but ids (the rows may not parse).
    async fn fail_upload(&self, upload_id: &str, reason: &str) -> Result<()>;
    async fn open_session_count(&self, owner: &str) -> Result<u64>;
    /// How many sessions are in each state (states with none are left out).
    async fn session_counts(&self) -> Result<Vec<(SessionState, u64)>>;
    async fn usage(&self, owner: &str) -> Result<Usage>;
    /// Open sessions whose expiry is at or before `now`.
    async fn expired_sessions(&self, now: Millis) -> Result<Vec<Session>>;
    /// Files whose expiry is at or before `now` (files of sessions whose
    /// files expire with them).
    async fn expired_files(&self, now: Millis) -> Result<Vec<FileRecord>>;
    /// Ids of the uploads in `state` (for recovery: ids always read, even
    /// where a row would not parse).
    async fn upload_ids(&self, state: UploadState) -> Result<Vec<String>>;
    /// Ids of the sessions in `state`.
    async fn session_ids(&self, state: SessionState) -> Result<Vec<String>>;

    // ---- files
    async fn get_file(&self, space: &SpaceName, path: &SpacePath) -> Result<Option<FileRecord>>;
    async fn get_file_by_id(&self, id: &str) -> Result<Option<FileRecord>>;
    /// The file whose bytes are `object` (a store without paths).
    async fn get_file_by_object(&self, object: &str) -> Result<Option<FileRecord>>;
    async fn occupant(&self, space: &SpaceName, path: &SpacePath) -> Result<Option<Occupant>>;
    /// What uploads being committed (intent recorded, not yet finished:
    /// `committing`) are heading for at or around `path` in `space`: one
    /// at the path or below it is a `Folder` (taken), one at an ancestor a
    /// `FileAncestor`. For processes sharing the database, whose commits
    /// in progress are not in each other's memory.
    /// What a commit choosing `path` needs to know, in one read where the
    /// backend can: what commits in progress head for at or around it
    /// ([`MetaStore::committing_around`]) and, when none does, what occupies
    /// it ([`MetaStore::occupant`]).
    async fn path_taken(&self, space: &SpaceName, path: &SpacePath) -> Result<PathTaken> {
        if let Some(o) = self.committing_around(space, path).await? {
            return Ok(PathTaken::Committing(o));
        }
        Ok(match self.occupant(space, path).await? {
            Some(o) => PathTaken::Occupied(o),
            None => PathTaken::Free,
        })
    }
    async fn committing_around(
        &self,
        space: &SpaceName,
        path: &SpacePath,
    ) -> Result<Option<Occupant>> {
        let _ = (space, path);
        Ok(None)
    }
    /// Immediate children of `prefix` (the root when `None`), folders first,
    /// each group sorted by name.
    async fn list(&self, space: &SpaceName, prefix: Option<&SpacePath>) -> Result<Vec<Entry>>;
    /// Removes the record; returns it if there was one.
    async fn delete_file(&self, space: &SpaceName, path: &SpacePath) -> Result<Option<FileRecord>> {
        self.delete_file_reporting(space, path, &[]).await
    }
    /// [`MetaStore::delete_file`] that also writes `events` to the outbox
    /// when a record was removed, in the same transaction.
    async fn delete_file_reporting(
        &self,
        space: &SpaceName,
        path: &SpacePath,
        events: &[OutboxEvent],
    ) -> Result<Option<FileRecord>>;
    /// Renames committed files of one space, all or none: each `(from, to)`
    /// in turn. Fails with `NotFound(File(from))` when a source is not a
    /// file, and `AlreadyExists(File(to))` when a destination is a file,
    /// a folder, or below a file. Returns the records as they were.
    async fn move_files(
        &self,
        space: &SpaceName,
        moves: &[(SpacePath, SpacePath)],
    ) -> Result<Vec<FileRecord>>;

    // ---- the hooks' outbox
    /// Writes events to the outbox (outside any other change).
    async fn outbox_add(&self, events: &[OutboxEvent]) -> Result<()>;
    /// Claims up to `limit` events due at `now` — of each key only the
    /// oldest, so that a key's events go out in order — and holds them
    /// until `hold_until` (another node or loop skips them meanwhile).
    async fn outbox_claim(
        &self,
        now: Millis,
        hold_until: Millis,
        limit: usize,
    ) -> Result<Vec<OutboxRow>>;
    /// Removes a delivered event.
    async fn outbox_done(&self, seq: i64) -> Result<()>;
    /// Counts a failed delivery; the event is due again at `next_at`.
    async fn outbox_retry(&self, seq: i64, next_at: Millis) -> Result<()>;
    /// Events waiting in the outbox.
    async fn outbox_depth(&self) -> Result<u64>;
    /// Checks the database answers.
    async fn ping(&self) -> Result<()>;

    // ---- what processes sharing the database share
    /// The secret stored under `name`; `candidate` becomes it when there
    /// is none yet (the first process to ask wins; every other one gets
    /// the winner's).
    async fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>>;
    /// Changes other processes sharing the database make, as they commit
    /// (this process's own included); `None` for a database only this
    /// process uses.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }
    /// Makes this process the only one doing `what` among the processes
    /// sharing the database, until the returned hold is dropped or the
    /// process dies; `None` while another process holds it. A database
    /// only this process uses always grants it. A hold the database ended
    /// (a restart) says so ([`Exclusive::is_lost`]) within seconds.
    async fn try_exclusive(&self, what: &str) -> Result<Option<Exclusive>> {
        let _ = what;
        Ok(Some(Exclusive::new(Box::new(()))))
    }
    /// Holds `what` shared with the other processes that hold it shared,
    /// so that [`MetaStore::try_exclusive`] of it fails while any does
    /// (a node's presence: "am I alone?"). A hold the database ended (a
    /// restart) is taken again within seconds.
    async fn shared(&self, what: &str) -> Result<Exclusive> {
        let _ = what;
        Ok(Exclusive::new(Box::new(())))
    }
    /// Asked by a process that holds `node` exclusive ("am I alone?"):
    /// whether others sharing the database are at work all the same. A
    /// restart of the database ended every process's holds, which they
    /// take again within seconds; when sessions are open (work may be
    /// under way) and other processes are connected, this looks again
    /// after those seconds. A database only this process uses has no
    /// others.
    async fn others_at_work(&self) -> Result<bool> {
        Ok(false)
    }
    /// Waits for this process's turn at `what` among the processes
    /// sharing the database (first come, first served; at most a while),
    /// held until the returned hold is dropped or the process dies. A
    /// database only this process uses grants it at once.
    async fn turn(&self, what: &str) -> Result<Exclusive> {
        let _ = what;
        Ok(Exclusive::new(Box::new(())))
    }
    /// Leases `[lo, hi)` of `key` to this process unless a live process
    /// holds an overlapping one (a process that died holds none: its
    /// leases are taken over). A claim refused marks the leases in its
    /// way as waited for: their release is announced. A database only
    /// this process uses grants every claim; the caller keeps its own
    /// process's claims apart.
    async fn claim(&self, key: &str, lo: u64, hi: u64, kind: LeaseKind) -> Result<Claim> {
        let _ = (key, lo, hi, kind);
        Ok(Claim::Granted(String::new()))
    }
    /// [`MetaStore::claim`], and once granted, the whole of `turn` as a
    /// [`LeaseKind::Turn`] if no live process holds it: its token then
    /// (a turn held elsewhere is marked waited for, as by a refused
    /// claim, and is not waited for here).
    async fn claim_with_turn(
        &self,
        key: &str,
        lo: u64,
        hi: u64,
        kind: LeaseKind,
        turn: &str,
    ) -> Result<(Claim, Option<String>)> {
        let claim = self.claim(key, lo, hi, kind).await?;
        if !matches!(claim, Claim::Granted(_)) {
            return Ok((claim, None));
        }
        let turn = match self.claim(turn, 0, u64::MAX, LeaseKind::Turn).await? {
            Claim::Granted(token) => Some(token),
            Claim::Busy(_) => None,
        };
        Ok((claim, turn))
    }
    /// [`MetaStore::claim`] of `upload_id`'s bytes (with `turn`, as
    /// [`MetaStore::claim_with_turn`]), and once granted, the upload and its
    /// session as [`MetaStore::upload_and_session`] reads them after the
    /// claim: what the lease's previous holder recorded before letting go
    /// is in them. `None` for the read when the claim is refused or the
    /// upload does not exist. A read that fails releases what was granted.
    async fn claim_and_read(
        &self,
        upload_id: &str,
        lo: u64,
        hi: u64,
        kind: LeaseKind,
        turn: Option<&str>,
    ) -> Result<(Claim, Option<String>, Option<(Upload, Session)>)> {
        let (claim, turn) = match turn {
            Some(t) => self.claim_with_turn(upload_id, lo, hi, kind, t).await?,
            None => (self.claim(upload_id, lo, hi, kind).await?, None),
        };
        let read = self.upload_and_session(upload_id);
        let read = read_if_granted(self, &claim, turn.as_deref(), read).await?;
        Ok((claim, turn, read))
    }
    /// The claim of a write to `upload_id` by a process that has not read
    /// the upload, whose request is therefore not authorized yet (`what`:
    /// an append's or a part's bytes, see [`UnreadClaim`]), made only when
    /// the upload is open and for `by`, granted only when no live process
    /// holds any of those bytes, and disturbing nobody (a refused claim
    /// marks no lease waited for). `Busy` with no lease named when no
    /// claim was made (another's upload, an unknown or ended one, a part
    /// it cannot have). Once granted, the upload and its session read
    /// after the claim, as [`MetaStore::claim_and_read`], and for an
    /// append, the session's turn as its [`TurnIfEnding`] says. `None`
    /// from a backend that cannot: the caller reads, then claims.
    async fn claim_unread(
        &self,
        upload_id: &str,
        by: &ClaimBy,
        what: UnreadClaim<'_>,
    ) -> Result<Option<(Claim, Option<String>, Option<(Upload, Session)>)>> {
        let _ = (upload_id, by, what);
        Ok(None)
    }
    /// [`MetaStore::claim`] of `upload_id`'s bytes, and once granted, the
    /// states of the upload and its session read after the claim (as
    /// [`MetaStore::claim_and_read`], without the ranges and parts).
    async fn claim_and_states(
        &self,
        upload_id: &str,
        lo: u64,
        hi: u64,
        kind: LeaseKind,
    ) -> Result<(Claim, Option<(UploadState, SessionState)>)> {
        let claim = self.claim(upload_id, lo, hi, kind).await?;
        let read = async {
            let read = self.upload_and_session(upload_id).await?;
            Ok(read.map(|(u, s)| (u.state, s.state)))
        };
        let read = read_if_granted(self, &claim, None, read).await?;
        Ok((claim, read))
    }
    /// The claim of session `session_id`'s commit: the whole of the turn
    /// `key` (the session's, as [`LeaseKind::Turn`]), with a
    /// [`LeaseKind::Commit`] lease of each of its open uploads taken
    /// before it, all or none (one that another lease overlaps, a write
    /// in flight, leaves none: the commit claims them one by one, and is
    /// told why); and once the turn is granted, the session and its
    /// uploads (as [`MetaStore::session_uploads`] orders them) read after
    /// the claim. A refused turn holds no commit lease. No read when the
    /// turn is refused or the session does not exist; a read that fails
    /// releases all that was granted.
    async fn claim_commit_turn(&self, key: &str, session_id: &str) -> Result<CommitTurn> {
        let mut commits = Vec::new();
        for u in self.session_uploads(session_id).await? {
            if u.state != UploadState::Open {
                continue;
            }
            match self.claim(&u.id, 0, u64::MAX, LeaseKind::Commit).await? {
                Claim::Granted(token) => commits.push((u.id, token)),
                Claim::Busy(_) => {
                    for (_, token) in commits.drain(..) {
                        self.release(&token).await?;
                    }
                    break;
                }
            }
        }
        let claim = self.claim(key, 0, u64::MAX, LeaseKind::Turn).await?;
        if !matches!(claim, Claim::Granted(_)) {
            for (_, token) in commits.drain(..) {
                self.release(&token).await?;
            }
        }
        let read = async {
            match self.get_session(session_id).await? {
                Some(s) => Ok(Some((s, self.session_uploads(session_id).await?))),
                None => Ok(None),
            }
        };
        let tokens: Vec<&str> = commits.iter().map(|(_, t)| t.as_str()).collect();
        let read = match claim {
            Claim::Granted(_) => read.await,
            Claim::Busy(_) => Ok(None),
        };
        let read = release_unless(self, read, &claim, &tokens).await?;
        Ok(CommitTurn {
            claim,
            commits,
            read,
        })
    }
    /// Ends the lease `token` names, and announces [`Change::Released`]
    /// of its key if a claim found the lease in its way meanwhile.
    async fn release(&self, token: &str) -> Result<()> {
        let _ = token;
        Ok(())
    }
    /// [`MetaStore::release`] of every lease of `tokens`, at once: none
    /// outlives another (a waiter woken by one finds the others gone).
    async fn release_all(&self, tokens: &[String]) -> Result<()> {
        for token in tokens {
            self.release(token).await?;
        }
        Ok(())
    }
    /// Removes the leases of processes that died (a claim of their key
    /// would take them over anyway; this keeps keys nobody claims again
    /// from piling up). Returns how many went.
    async fn forget_dead_leases(&self) -> Result<u64> {
        Ok(0)
    }
    /// Ends what is left of processes that died: a statement one sent
    /// just before it was killed may still be running in the database,
    /// and land later. Once this answers `true`, none can. (Claims do
    /// this for the process whose leases they take over; start-up
    /// recovery, for all.) `false` when some could not be ended.
    async fn fence_dead(&self) -> Result<bool> {
        Ok(true)
    }
    /// Asks the holders of these leases to let go ([`Change::ReleaseAsked`]).
    async fn ask_release(&self, tokens: &[String]) -> Result<()> {
        let _ = tokens;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{join_sealed, split_sealed};
    use ferry_core::{Digest, DigestAlgo};

    #[test]
    fn the_sealed_column_keeps_the_digests_and_the_object_a_write_named() {
        let sha = Digest::new(DigestAlgo::Sha256, vec![7; 32]).unwrap();
        let md5 = Digest::new(DigestAlgo::Md5, vec![1; 16]).unwrap();
        let digests = vec![sha, md5];
        for object in [None, Some("9cd7.91ab")] {
            for d in [&digests[..], &[]] {
                let text = join_sealed(d, object);
                assert_eq!(text.is_none(), d.is_empty() && object.is_none());
                let back = text.as_deref().map(split_sealed);
                let want = (!d.is_empty() || object.is_some())
                    .then(|| Some((d.to_vec(), object.map(str::to_owned))));
                assert_eq!(back, want, "{text:?}");
            }
        }
        // What older records hold: digests alone.
        let old = ferry_core::join_tagged(&digests).unwrap();
        assert_eq!(split_sealed(&old), Some((digests, None)));
        // Not what `join_sealed` writes: refused, never half read.
        for bad in ["object:", "object:a object:b", "sha256:zz", "nonsense"] {
            assert_eq!(split_sealed(bad), None, "{bad}");
        }
    }
}
