//! Embedded SQLite metadata with group commit.
//!
//! All writes go to one writer thread. It takes every write that is waiting,
//! runs each inside its own savepoint of one transaction, and commits once:
//! with `synchronous=FULL` that is one WAL fsync for the whole batch, which
//! is what lets thousands of small uploads per second each get a durable
//! acknowledgement. A write that fails rolls back only its own savepoint.
//! Reads use a small pool of separate connections; WAL lets them run while
//! the writer works.

use crate::{
    Committed, CreateLimits, Entry, LimitRefusal, MetaError, MetaStore, Occupant, OutboxEvent,
    OutboxRow, Record, Result, SessionEnd, SpaceRecord, TokenRecord, Usage, below, entries,
};
use ferry_core::{
    Access, ByteRange, ConflictPolicy, Digest, DigestAlgo, FileRecord, Length, Millis, Part,
    RangeSet, Session, SessionState, SpaceName, SpacePath, Upload, UploadState, User, join_tagged,
};
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS users (
  name TEXT PRIMARY KEY, admin INTEGER NOT NULL, quota_bytes INTEGER,
  max_open_sessions INTEGER, home_space TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
  id TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name), hash BLOB NOT NULL,
  created_at INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS spaces (
  name TEXT PRIMARY KEY, owner TEXT, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS grants (
  space TEXT NOT NULL REFERENCES spaces(name), user TEXT NOT NULL, access TEXT NOT NULL,
  PRIMARY KEY (space, user)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY, owner TEXT NOT NULL, space TEXT NOT NULL, conflict TEXT NOT NULL,
  auto_commit INTEGER NOT NULL, state TEXT NOT NULL, created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL, dialect TEXT NOT NULL, extend_secs INTEGER,
  open_ended INTEGER NOT NULL DEFAULT 0, files_expire INTEGER, failure TEXT);
CREATE INDEX IF NOT EXISTS sessions_owner ON sessions(owner, state);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions(state, expires_at);
CREATE TABLE IF NOT EXISTS uploads (
  id TEXT PRIMARY KEY, session_id TEXT NOT NULL REFERENCES sessions(id), idx INTEGER NOT NULL,
  path TEXT NOT NULL, length INTEGER, part_size INTEGER NOT NULL, state TEXT NOT NULL,
  expected_sha256 TEXT, content_type TEXT, metadata TEXT, final_path TEXT, file_id TEXT,
  whole_digests TEXT, replaces TEXT, dialect_state TEXT);
CREATE INDEX IF NOT EXISTS uploads_session ON uploads(session_id, idx);
CREATE INDEX IF NOT EXISTS uploads_session_path ON uploads(session_id, path);
CREATE INDEX IF NOT EXISTS uploads_state ON uploads(state);
CREATE TABLE IF NOT EXISTS ranges (upload_id TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ranges_upload ON ranges(upload_id);
CREATE TABLE IF NOT EXISTS parts (
  upload_id TEXT NOT NULL, number INTEGER NOT NULL, offset INTEGER NOT NULL, size INTEGER NOT NULL,
  sha256 TEXT, sha1 TEXT, md5 TEXT, PRIMARY KEY (upload_id, number)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
  id TEXT PRIMARY KEY, space TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
  sha256 TEXT NOT NULL, sha1 TEXT, md5 TEXT, content_type TEXT, owner TEXT NOT NULL,
  created_at INTEGER NOT NULL, metadata TEXT, expires_at INTEGER, dialect_state TEXT,
  object TEXT, UNIQUE (space, path));
CREATE INDEX IF NOT EXISTS files_owner ON files(owner);
CREATE TABLE IF NOT EXISTS hook_outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, due_at INTEGER NOT NULL, created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS hook_outbox_key ON hook_outbox(key, seq);
CREATE INDEX IF NOT EXISTS hook_outbox_due ON hook_outbox(due_at);
"#;

/// Writes hook events to the outbox, due now.
fn insert_events<'a>(
    c: &Connection,
    events: impl IntoIterator<Item = &'a OutboxEvent>,
) -> rusqlite::Result<()> {
    let mut st = c.prepare_cached(
        "INSERT INTO hook_outbox (id, key, body, due_at, created_at) VALUES (?1, ?2, ?3, ?4, ?4)",
    )?;
    for e in events {
        st.execute(params![e.id, e.key, e.body, e.created_at])?;
    }
    Ok(())
}

/// Columns added after the first release: (table, column, type). A
/// database created before them gets them on open.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("sessions", "extend_secs", "INTEGER"),
    ("uploads", "whole_digests", "TEXT"),
    ("sessions", "open_ended", "INTEGER NOT NULL DEFAULT 0"),
    ("sessions", "files_expire", "INTEGER"),
    ("files", "expires_at", "INTEGER"),
    ("sessions", "failure", "TEXT"),
    ("uploads", "replaces", "TEXT"),
    ("uploads", "dialect_state", "TEXT"),
    ("files", "dialect_state", "TEXT"),
    ("files", "object", "TEXT"),
    ("uploads", "direct", "INTEGER NOT NULL DEFAULT 0"),
    ("uploads", "sealed", "TEXT"),
];

/// Indexes on added columns, created once the columns exist.
const ADDED_INDEXES: &str =
    "CREATE INDEX IF NOT EXISTS files_expiry ON files(expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS files_object ON files(object) WHERE object IS NOT NULL;";

fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, kind) in ADDED_COLUMNS {
        let present: bool = conn
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
            ))?
            .exists([column])?;
        if !present {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
    }
    Ok(())
}

/// Data migrations, run once each in order: `PRAGMA user_version` counts
/// those applied (a database created now starts at the last).
const MIGRATIONS: &[&str] = &[
    // 1. The commit mode moved from the dialects into `auto_commit`: open
    // tus sessions (partial uploads aside) and Graph sessions without
    // deferCommit, which their dialect used to commit itself, now commit
    // on their last byte.
    "UPDATE sessions SET auto_commit = 1 WHERE state = 'open' AND auto_commit = 0 AND (\
       (dialect = 'tus' AND id NOT IN \
          (SELECT session_id FROM uploads WHERE path LIKE '.tus-partial/%')) \
       OR (dialect = 'graph' AND id IN (SELECT session_id FROM uploads \
          WHERE json_valid(metadata) AND json_extract(metadata, '$.defer_commit') = 0)));",
    // 2. Box's new version under a new name moved from the dialect (which
    // kept the old path in the upload's metadata and deleted it after the
    // commit) into `replaces` (the file id the commit moves): unfinished
    // Box uploads get it from their old path, and Box's bookkeeping leaves
    // the user's metadata of Box uploads and of the files they made.
    "UPDATE uploads SET replaces = (SELECT f.id FROM files f JOIN sessions s ON f.space = s.space         WHERE s.id = uploads.session_id AND f.path = json_extract(uploads.metadata, '$.renames'))        WHERE state IN ('open', 'committing') AND json_valid(metadata)        AND json_extract(metadata, '$.renames') IS NOT NULL        AND session_id IN (SELECT id FROM sessions WHERE dialect = 'box');      UPDATE files SET metadata = NULL WHERE json_valid(metadata)        AND (metadata = '{}' OR json_extract(metadata, '$.renames') IS NOT NULL)        AND id IN (SELECT u.file_id FROM uploads u JOIN sessions s ON s.id = u.session_id          WHERE s.dialect = 'box');      UPDATE uploads SET metadata = NULL        WHERE session_id IN (SELECT id FROM sessions WHERE dialect = 'box');",
    // 3. Dialect state left the user's metadata for `dialect_state`: tus's
    // stored header and concatenation, the draft's empty object, Vault's
    // path as sent and Graph's old deferCommit move out of the uploads'
    // metadata; the files they made lose the copy of it (tus files keep
    // theirs: it held the client's Upload-Metadata).
    "UPDATE files SET metadata = NULL WHERE id IN (SELECT u.file_id FROM uploads u \
        JOIN sessions s ON s.id = u.session_id WHERE s.dialect IN ('ietf-draft', 'veeva', 'graph') \
        AND u.file_id IS NOT NULL AND u.metadata IS files.metadata); \
     UPDATE uploads SET dialect_state = metadata, metadata = NULL \
       WHERE session_id IN (SELECT id FROM sessions WHERE dialect IN ('tus', 'ietf-draft', 'veeva')); \
     UPDATE uploads SET metadata = NULL \
       WHERE session_id IN (SELECT id FROM sessions WHERE dialect = 'graph');",
    // 4. UCloud's identity of a file (its modifiedAt and the path asked
    // for, which decide SKIP) leaves the user's metadata of its uploads and
    // files for their `dialect_state`.
    "UPDATE files SET dialect_state = metadata, metadata = NULL \
       WHERE json_valid(metadata) AND json_extract(metadata, '$.ucloud') IS NOT NULL \
       AND id IN (SELECT u.file_id FROM uploads u JOIN sessions s ON s.id = u.session_id \
         WHERE s.dialect = 'ucloud'); \
     UPDATE uploads SET dialect_state = metadata, metadata = NULL \
       WHERE json_valid(metadata) AND json_extract(metadata, '$.ucloud') IS NOT NULL \
       AND session_id IN (SELECT id FROM sessions WHERE dialect = 'ucloud');",
];

fn migrate(conn: &Connection, fresh: bool) -> rusqlite::Result<()> {
    let done: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if done >= MIGRATIONS.len() {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    // A new database has nothing to migrate: it only records the version.
    let todo = if fresh { &[][..] } else { &MIGRATIONS[done..] };
    for m in todo {
        conn.execute_batch(m)?;
    }
    conn.execute_batch(&format!(
        "PRAGMA user_version = {}; COMMIT",
        MIGRATIONS.len()
    ))
}

type Job = Box<dyn FnOnce(&Connection) -> Box<dyn FnOnce(Result<()>) + Send> + Send>;

/// SQLite-backed [`MetaStore`]; cheap to clone.
#[derive(Clone)]
pub struct Sqlite {
    writer: mpsc::UnboundedSender<Job>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
    /// Dropped with the last clone, which stops the checkpoint thread.
    _checkpointer: Arc<std::sync::mpsc::Sender<()>>,
}

fn open_conn(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
    )?;
    Ok(conn)
}

impl Sqlite {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Sqlite> {
        let path = path.as_ref().to_path_buf();
        let conn = open_conn(&path)?;
        let fresh: bool = conn.query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sessions')",
            [],
            |r| r.get(0),
        )?;
        conn.execute_batch(SCHEMA)?;
        add_missing_columns(&conn)?;
        conn.execute_batch(ADDED_INDEXES)?;
        migrate(&conn, fresh)?;
        // Checkpoints run beside the writer, not inside a write batch: an
        // automatic checkpoint would stall every request waiting on that batch.
        conn.execute_batch("PRAGMA wal_autocheckpoint=0;")?;
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        let spawn_err = MetaError::backend;
        std::thread::Builder::new()
            .name("ferry-meta-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(spawn_err)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let checkpoint_conn = open_conn(&path)?;
        std::thread::Builder::new()
            .name("ferry-meta-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, stopped))
            .map_err(spawn_err)?;
        Ok(Sqlite {
            writer: tx,
            readers: Arc::new(Mutex::new(Vec::new())),
            path,
            _checkpointer: Arc::new(stop),
        })
    }

    /// Runs `f` in the next write batch, inside its own savepoint.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |conn: &Connection| {
            let outcome = (|| {
                // The batch's transaction is gone (an earlier job's failure
                // made SQLite roll it back): run nothing outside it.
                if conn.is_autocommit() {
                    return Err(batch_lost());
                }
                conn.execute_batch("SAVEPOINT job")?;
                match f(conn) {
                    Ok(v) => {
                        conn.execute_batch("RELEASE job")?;
                        Ok(v)
                    }
                    Err(e) if conn.is_autocommit() => {
                        // SQLite rolled the whole batch back (it may, on
                        // SQLITE_FULL): every job of it fails alike.
                        BATCH_FULL.with(|f| f.set(matches!(e, MetaError::NoSpace)));
                        Err(e)
                    }
                    Err(e) => {
                        conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
                        Err(e)
                    }
                }
            })();
            Box::new(move |commit: Result<()>| {
                let _ = tx.send(match (outcome, commit) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                });
            })
        });
        self.writer.send(job).map_err(|_| MetaError::Closed)?;
        rx.await.map_err(|_| MetaError::Closed)?
    }

    /// Runs a read on a blocking thread with a pooled connection; at most
    /// `READS` at a time, so that a burst of requests neither grows the
    /// blocking pool nor opens a connection each.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pool = self.readers.clone();
        let path = self.path.clone();
        let permit = READS.acquire().await.expect("never closed");
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = pool.lock().unwrap().pop();
            let conn = match conn {
                Some(c) => c,
                None => open_conn(&path)?,
            };
            let out = f(&conn);
            let mut pool = pool.lock().unwrap();
            if pool.len() < 8 {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(MetaError::backend)?
    }
}

/// Reads running at a time (each on a blocking thread).
static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(16);

/// Copies the WAL back into the database every half second (PASSIVE: never
/// blocks the writer or readers), until the store is dropped.
fn checkpoint_loop(conn: Connection, stopped: std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    while let Err(RecvTimeoutError::Timeout) =
        stopped.recv_timeout(std::time::Duration::from_millis(500))
    {
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

thread_local! {
    /// Set on the writer thread when a full disk rolled its batch back.
    static BATCH_FULL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The error of a job whose batch was rolled back before it committed.
fn batch_lost() -> MetaError {
    if BATCH_FULL.with(|f| f.get()) {
        MetaError::NoSpace
    } else {
        MetaError::backend("the write batch was rolled back")
    }
}

fn writer_loop(conn: Connection, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        BATCH_FULL.with(|f| f.set(false));
        let begin = conn.execute_batch("BEGIN IMMEDIATE");
        let finishers: Vec<_> = batch.into_iter().map(|job| job(&conn)).collect();
        let commit = if conn.is_autocommit() {
            Err(batch_lost())
        } else {
            begin
                .and_then(|()| conn.execute_batch("COMMIT"))
                .map_err(MetaError::from)
        };
        if commit.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for finish in finishers {
            finish(match &commit {
                Ok(()) => Ok(()),
                Err(MetaError::NoSpace) => Err(MetaError::NoSpace),
                Err(e) => Err(MetaError::backend(format!("batch commit failed: {e}"))),
            });
        }
    }
}

/// SQLite's errors, kept opaque; a full disk is told apart (`SQLITE_FULL`,
/// which SQLite also reports for `ENOSPC` on its files).
impl From<rusqlite::Error> for MetaError {
    fn from(e: rusqlite::Error) -> MetaError {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            return MetaError::NoSpace;
        }
        MetaError::backend(e)
    }
}

impl Sqlite {
    /// Caps the database at its current size plus `extra_pages` pages
    /// (`None` lifts the cap): writes that need more fail with
    /// [`MetaError::NoSpace`], exactly as on a full disk. For tests of the
    /// full-disk path that cannot mount a small filesystem.
    #[doc(hidden)]
    pub async fn cap_pages_for_tests(&self, extra_pages: Option<u64>) -> Result<()> {
        self.write(move |c| {
            let now: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let cap = extra_pages.map_or(4_294_967_294, |n| now + n as i64);
            c.query_row(&format!("PRAGMA max_page_count = {cap}"), [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}

// ---- the lifecycle

fn session_state(c: &Connection, id: &str) -> Result<Option<SessionState>> {
    let s: Option<String> = c
        .prepare_cached("SELECT state FROM sessions WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(s.map(parse).transpose()?)
}

fn upload_state(c: &Connection, id: &str) -> Result<Option<UploadState>> {
    let s: Option<String> = c
        .prepare_cached("SELECT state FROM uploads WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(s.map(parse).transpose()?)
}

/// Checks a session's state change against the core's lifecycle
/// ([`SessionState::transition`]); `false` when there is no such session.
fn check_session(c: &Connection, id: &str, to: SessionState) -> Result<bool> {
    match session_state(c, id)? {
        Some(from) => {
            from.transition(to)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Checks an upload's state change against the core's lifecycle
/// ([`UploadState::transition`]); `false` when there is no such upload.
fn check_upload(c: &Connection, id: &str, to: UploadState) -> Result<bool> {
    match upload_state(c, id)? {
        Some(from) => {
            from.transition(to)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

// ---- session ends

/// [`SessionEnd`] moved into a write job.
enum OwnedEnd {
    Keep,
    To(String, SessionState),
    IfSettled(String),
}

impl From<SessionEnd<'_>> for OwnedEnd {
    fn from(e: SessionEnd<'_>) -> OwnedEnd {
        match e {
            SessionEnd::Keep => OwnedEnd::Keep,
            SessionEnd::To(id, st) => OwnedEnd::To(id.to_owned(), st),
            SessionEnd::IfSettled(id) => OwnedEnd::IfSettled(id.to_owned()),
        }
    }
}

/// Applies a session's end inside the caller's transaction; the rule of
/// when a session has settled is the core's ([`SessionState::settled`]).
fn apply_end(c: &Connection, end: &OwnedEnd) -> Result<Option<SessionState>> {
    let (id, to) = match end {
        OwnedEnd::Keep => return Ok(None),
        OwnedEnd::To(id, st) => {
            check_session(c, id, *st)?;
            (id, *st)
        }
        OwnedEnd::IfSettled(id) => {
            let Some((state, open_ended)) = c
                .prepare_cached("SELECT state, open_ended FROM sessions WHERE id = ?1")?
                .query_row([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))
                .optional()?
            else {
                return Ok(None);
            };
            if state != SessionState::Open.as_str() {
                return Ok(None);
            }
            let states = c
                .prepare_cached("SELECT state FROM uploads WHERE session_id = ?1")?
                .query_map([id], |r| r.get::<_, String>(0).and_then(parse))?
                .collect::<rusqlite::Result<Vec<UploadState>>>()?;
            match SessionState::settled(open_ended, states) {
                Some(st) => (id, st),
                None => return Ok(None),
            }
        }
    };
    c.execute(
        "UPDATE sessions SET state = ?2 WHERE id = ?1",
        params![id, to.as_str()],
    )?;
    Ok(Some(to))
}

// ---- row mapping

fn corrupt(what: &str, e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("bad {what}: {e}").into(),
    )
}

fn space_name(s: String) -> rusqlite::Result<SpaceName> {
    SpaceName::parse(&s).map_err(|e| corrupt("space name", e))
}

fn space_path(s: String) -> rusqlite::Result<SpacePath> {
    SpacePath::parse_stored(&s).map_err(|e| corrupt("path", e))
}

fn parse<T: std::str::FromStr<Err = String>>(s: String) -> rusqlite::Result<T> {
    s.parse().map_err(|e: String| corrupt("enum", e))
}

fn u(v: i64) -> u64 {
    v as u64
}

fn i(v: u64) -> i64 {
    v as i64
}

const USER_COLS: &str = "name, admin, quota_bytes, max_open_sessions, home_space, created_at";
/// Inserts uploads with indexes from `first`.
fn insert_uploads(c: &Connection, first: i64, ups: &[Upload]) -> rusqlite::Result<()> {
    let mut stmt = c.prepare_cached(&format!(
        "INSERT INTO uploads (idx, {UPLOAD_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)"
    ))?;
    for (k, up) in ups.iter().enumerate() {
        stmt.execute(params![
            first + k as i64,
            up.id,
            up.session_id,
            up.path.as_str(),
            up.length.known().map(i),
            i(up.part_size),
            up.state.as_str(),
            up.expected_sha256,
            up.content_type,
            up.metadata,
            up.final_path.as_ref().map(SpacePath::as_str),
            up.file_id,
            (!up.whole_digests.is_empty()).then(|| up
                .whole_digests
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(",")),
            up.replaces,
            up.dialect_state,
            up.direct,
            crate::join_sealed(&up.sealed, up.object.as_deref()),
        ])?;
    }
    Ok(())
}

fn token_row(r: &Row) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        user: r.get(1)?,
        secret_hash: r.get(2)?,
        created_at: r.get(3)?,
        revoked: r.get(4)?,
    })
}

fn user_row(r: &Row) -> rusqlite::Result<User> {
    Ok(User {
        name: r.get(0)?,
        admin: r.get(1)?,
        quota_bytes: r.get::<_, Option<i64>>(2)?.map(u),
        max_open_sessions: r.get(3)?,
        home_space: space_name(r.get(4)?)?,
        created_at: r.get(5)?,
    })
}

const SESSION_COLS: &str = "id, owner, space, conflict, auto_commit, state, created_at, expires_at, dialect, extend_secs, \
     open_ended, files_expire, failure";
fn session_row(r: &Row) -> rusqlite::Result<Session> {
    Ok(Session {
        id: r.get(0)?,
        owner: r.get(1)?,
        space: space_name(r.get(2)?)?,
        conflict: r
            .get::<_, String>(3)?
            .parse::<ConflictPolicy>()
            .map_err(|e| corrupt("conflict", e))?,
        auto_commit: r.get(4)?,
        state: parse(r.get(5)?)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        dialect: r.get(8)?,
        extend_secs: r.get::<_, Option<i64>>(9)?.map(u),
        open_ended: r.get(10)?,
        files_expire: r.get::<_, Option<bool>>(11)?.unwrap_or(false),
        failure: r.get(12)?,
    })
}

fn insert_session(c: &Connection, s: &Session) -> rusqlite::Result<()> {
    c.prepare_cached(&format!(
        "INSERT INTO sessions ({SESSION_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)"
    ))?
    .execute(params![
        s.id,
        s.owner,
        s.space.as_str(),
        s.conflict.as_str(),
        s.auto_commit,
        s.state.as_str(),
        s.created_at,
        s.expires_at,
        s.dialect,
        s.extend_secs.map(i),
        s.open_ended,
        s.files_expire,
        s.failure
    ])?;
    Ok(())
}

/// Bytes an owner has committed, and reserved by open uploads.
fn usage_of(c: &Connection, owner: &str) -> rusqlite::Result<Usage> {
    let committed: i64 = c
        .prepare_cached("SELECT COALESCE(SUM(size), 0) FROM files WHERE owner = ?1")?
        .query_row([owner], |r| r.get(0))?;
    let reserved: i64 = c
        .prepare_cached(
            "SELECT COALESCE(SUM(u.length), 0) FROM uploads u JOIN sessions s ON s.id = u.session_id \
             WHERE s.owner = ?1 AND s.state IN ('open', 'committing') \
             AND u.state IN ('open', 'committing')",
        )?
        .query_row([owner], |r| r.get(0))?;
    Ok(Usage {
        committed: u(committed),
        reserved: u(reserved),
    })
}

const UPLOAD_COLS: &str = "id, session_id, path, length, part_size, state, expected_sha256, \
    content_type, metadata, final_path, file_id, whole_digests, replaces, dialect_state, direct, \
    sealed";
fn upload_row(r: &Row) -> rusqlite::Result<Upload> {
    let (sealed, object) = match r.get::<_, Option<String>>(15)? {
        Some(t) => crate::split_sealed(&t).ok_or_else(|| corrupt("sealed", t))?,
        None => (Vec::new(), None),
    };
    Ok(Upload {
        id: r.get(0)?,
        session_id: r.get(1)?,
        path: space_path(r.get(2)?)?,
        length: match r.get::<_, Option<i64>>(3)? {
            Some(n) => Length::Known(u(n)),
            None => Length::Deferred,
        },
        part_size: u(r.get(4)?),
        state: parse(r.get(5)?)?,
        expected_sha256: r.get(6)?,
        content_type: r.get(7)?,
        metadata: r.get(8)?,
        received: RangeSet::new(),
        parts: BTreeMap::new(),
        final_path: r.get::<_, Option<String>>(9)?.map(space_path).transpose()?,
        file_id: r.get(10)?,
        whole_digests: r
            .get::<_, Option<String>>(11)?
            .unwrap_or_default()
            .split(',')
            .filter(|n| !n.is_empty())
            .map(|n| DigestAlgo::from_name(n).ok_or_else(|| corrupt("whole_digests", n)))
            .collect::<rusqlite::Result<_>>()?,
        replaces: r.get(12)?,
        dialect_state: r.get(13)?,
        direct: r.get(14)?,
        sealed,
        object,
    })
}

const FILE_COLS: &str = "id, space, path, size, sha256, sha1, md5, content_type, owner, created_at, metadata, expires_at, dialect_state, object";
fn file_row(r: &Row) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        id: r.get(0)?,
        space: space_name(r.get(1)?)?,
        path: space_path(r.get(2)?)?,
        size: u(r.get(3)?),
        sha256: r.get(4)?,
        sha1: r.get(5)?,
        md5: r.get(6)?,
        content_type: r.get(7)?,
        owner: r.get(8)?,
        created_at: r.get(9)?,
        metadata: r.get(10)?,
        expires_at: r.get(11)?,
        dialect_state: r.get(12)?,
        object: r.get(13)?,
    })
}

/// Fills in the ranges and parts of uploads read from their table.
fn complete_uploads(conn: &Connection, uploads: &mut [Upload]) -> Result<()> {
    let mut ranges = conn.prepare_cached("SELECT start, end FROM ranges WHERE upload_id = ?1")?;
    let mut parts = conn.prepare_cached(
        "SELECT number, offset, size, sha256, sha1, md5 FROM parts WHERE upload_id = ?1",
    )?;
    for up in uploads {
        for r in ranges.query_map([&up.id], |r| Ok((u(r.get(0)?), u(r.get(1)?))))? {
            let (a, b) = r?;
            if let Some(range) = ByteRange::new(a, b) {
                up.received.insert(range);
            }
        }
        for p in parts.query_map([&up.id], |r| {
            Ok(Part {
                number: r.get(0)?,
                offset: u(r.get(1)?),
                size: u(r.get(2)?),
                sha256: r.get(3)?,
                sha1: r.get(4)?,
                md5: r.get(5)?,
            })
        })? {
            let p = p?;
            up.parts.insert(p.number, p);
        }
    }
    Ok(())
}

/// The session `id`, if recorded.
fn query_session(c: &Connection, id: &str) -> Result<Option<Session>> {
    Ok(c.prepare_cached(&format!(
        "SELECT {SESSION_COLS} FROM sessions WHERE id = ?1"
    ))?
    .query_row([id], session_row)
    .optional()?)
}

fn query_uploads(conn: &Connection, filter: &str, arg: &str) -> Result<Vec<Upload>> {
    let sql = format!("SELECT {UPLOAD_COLS} FROM uploads WHERE {filter}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut ups = stmt
        .query_map([arg], upload_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    complete_uploads(conn, &mut ups)?;
    Ok(ups)
}

fn insert_file(conn: &Connection, f: &FileRecord) -> Result<()> {
    conn.prepare_cached("DELETE FROM files WHERE space = ?1 AND path = ?2")?
        .execute(params![f.space.as_str(), f.path.as_str()])?;
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO files ({FILE_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)"
    ))?
    .execute(params![
        f.id,
        f.space.as_str(),
        f.path.as_str(),
        i(f.size),
        f.sha256,
        f.sha1,
        f.md5,
        f.content_type,
        f.owner,
        f.created_at,
        f.metadata,
        f.expires_at,
        f.dialect_state,
        f.object,
    ])?;
    Ok(())
}

#[async_trait::async_trait]
impl MetaStore for Sqlite {
    async fn user_count(&self) -> Result<u64> {
        self.read(|c| {
            Ok(u(c.query_row("SELECT COUNT(*) FROM users", [], |r| {
                r.get(0)
            })?))
        })
        .await
    }

    async fn create_user(&self, user: &User) -> Result<()> {
        let user = user.clone();
        self.write(move |c| {
            let exists: bool = c.query_row(
                "SELECT EXISTS(SELECT 1 FROM users WHERE name = ?1) OR EXISTS(SELECT 1 FROM spaces WHERE name = ?2)",
                params![user.name, user.home_space.as_str()],
                |r| r.get(0),
            )?;
            if exists {
                return Err(MetaError::AlreadyExists(Record::UserOrSpace(
                    user.name.clone(),
                )));
            }
            c.execute(
                &format!("INSERT INTO users ({USER_COLS}) VALUES (?1,?2,?3,?4,?5,?6)"),
                params![
                    user.name,
                    user.admin,
                    user.quota_bytes.map(i),
                    user.max_open_sessions,
                    user.home_space.as_str(),
                    user.created_at
                ],
            )?;
            c.execute(
                "INSERT INTO spaces (name, owner, created_at) VALUES (?1, ?2, ?3)",
                params![user.home_space.as_str(), user.name, user.created_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_user(&self, name: &str) -> Result<Option<User>> {
        let name = name.to_owned();
        self.read(move |c| {
            Ok(
                c.prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE name = ?1"))?
                    .query_row([name], user_row)
                    .optional()?,
            )
        })
        .await
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<()> {
        let t = token.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO tokens (id, user, hash, created_at, revoked) VALUES (?1,?2,?3,?4,?5)",
                params![t.id, t.user, t.secret_hash, t.created_at, t.revoked],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let id = id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT id, user, hash, created_at, revoked FROM tokens WHERE id = ?1",
            )?
            .query_row([id], token_row)
            .optional()?)
        })
        .await
    }

    async fn revoke_token(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |c| Ok(c.execute("UPDATE tokens SET revoked = 1 WHERE id = ?1", [id])? > 0))
            .await
    }

    async fn create_space(&self, space: &SpaceRecord) -> Result<()> {
        let s = space.clone();
        self.write(move |c| {
            let exists: bool = c.query_row(
                "SELECT EXISTS(SELECT 1 FROM spaces WHERE name = ?1)",
                [s.name.as_str()],
                |r| r.get(0),
            )?;
            if exists {
                return Err(MetaError::AlreadyExists(Record::Space(s.name.clone())));
            }
            c.execute(
                "INSERT INTO spaces (name, owner, created_at) VALUES (?1, ?2, ?3)",
                params![s.name.as_str(), s.owner, s.created_at],
            )?;
            for (user, access) in &s.members {
                c.execute(
                    "INSERT OR REPLACE INTO grants (space, user, access) VALUES (?1, ?2, ?3)",
                    params![s.name.as_str(), user, access.as_str()],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn get_space(&self, name: &SpaceName) -> Result<Option<SpaceRecord>> {
        let name = name.clone();
        self.read(move |c| {
            let Some((owner, created_at)) = c
                .prepare_cached("SELECT owner, created_at FROM spaces WHERE name = ?1")?
                .query_row([name.as_str()], |r| {
                    Ok((r.get::<_, Option<String>>(0)?, r.get(1)?))
                })
                .optional()?
            else {
                return Ok(None);
            };
            let members = c
                .prepare_cached("SELECT user, access FROM grants WHERE space = ?1 ORDER BY user")?
                .query_map([name.as_str()], |r| {
                    Ok((r.get::<_, String>(0)?, parse::<Access>(r.get(1)?)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(SpaceRecord {
                name,
                owner,
                members,
                created_at,
            }))
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        self.read(|c| {
            Ok(
                c.prepare_cached(&format!("SELECT {USER_COLS} FROM users ORDER BY name"))?
                    .query_map([], user_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            )
        })
        .await
    }

    async fn set_user_limits(
        &self,
        name: &str,
        quota_bytes: Option<u64>,
        max_open_sessions: Option<u32>,
    ) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |c| {
            Ok(c.execute(
                "UPDATE users SET quota_bytes = ?2, max_open_sessions = ?3 WHERE name = ?1",
                params![name, quota_bytes.map(i), max_open_sessions],
            )? > 0)
        })
        .await
    }

    async fn list_tokens(&self, user: &str) -> Result<Vec<TokenRecord>> {
        let user = user.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT id, user, hash, created_at, revoked FROM tokens WHERE user = ?1 ORDER BY created_at, id",
            )?
            .query_map([user], token_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn list_spaces(&self) -> Result<Vec<SpaceRecord>> {
        self.read(|c| {
            let mut spaces = c
                .prepare_cached("SELECT name, owner, created_at FROM spaces ORDER BY name")?
                .query_map([], |r| {
                    Ok(SpaceRecord {
                        name: space_name(r.get(0)?)?,
                        owner: r.get(1)?,
                        members: Vec::new(),
                        created_at: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut grants =
                c.prepare_cached("SELECT space, user, access FROM grants ORDER BY space, user")?;
            let grants = grants
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        parse::<Access>(r.get(2)?)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for (space, user, access) in grants {
                if let Ok(k) = spaces.binary_search_by(|s| s.name.as_str().cmp(&space)) {
                    spaces[k].members.push((user, access));
                }
            }
            Ok(spaces)
        })
        .await
    }

    async fn set_member(
        &self,
        space: &SpaceName,
        user: &str,
        access: Option<Access>,
    ) -> Result<bool> {
        let (space, user) = (space.clone(), user.to_owned());
        self.write(move |c| {
            let exists: bool = c.query_row(
                "SELECT EXISTS(SELECT 1 FROM spaces WHERE name = ?1)",
                [space.as_str()],
                |r| r.get(0),
            )?;
            if exists {
                match access {
                    Some(a) => c.execute(
                        "INSERT OR REPLACE INTO grants (space, user, access) VALUES (?1, ?2, ?3)",
                        params![space.as_str(), user, a.as_str()],
                    )?,
                    None => c.execute(
                        "DELETE FROM grants WHERE space = ?1 AND user = ?2",
                        params![space.as_str(), user],
                    )?,
                };
            }
            Ok(exists)
        })
        .await
    }

    async fn create_session(&self, session: &Session, uploads: &[Upload]) -> Result<()> {
        let s = session.clone();
        let ups = uploads.to_vec();
        self.write(move |c| {
            insert_session(c, &s)?;
            insert_uploads(c, 0, &ups)?;
            Ok(())
        })
        .await
    }

    async fn create_sessions_reporting(
        &self,
        sessions: &[(Session, Vec<Upload>)],
        limits: CreateLimits,
        events: &[OutboxEvent],
    ) -> Result<Option<LimitRefusal>> {
        let all = sessions.to_vec();
        let events = events.to_vec();
        let Some(owner) = all.first().map(|(s, _)| s.owner.clone()) else {
            return Ok(None);
        };
        // The single writer thread runs this whole closure in one
        // transaction: no other write comes between the counts and the
        // inserts.
        self.write(move |c| {
            let open: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM sessions WHERE owner = ?1 AND state IN ('open', 'committing')",
                )?
                .query_row([&owner], |r| r.get(0))?;
            if u(open).saturating_add(all.len() as u64) > limits.max_open_sessions {
                return Ok(Some(LimitRefusal::TooManySessions { open: u(open) }));
            }
            if let Some(quota) = limits.quota_bytes {
                let more: u64 = all
                    .iter()
                    .flat_map(|(_, ups)| ups.iter().filter_map(|u| u.length.known()))
                    .sum();
                let usage = usage_of(c, &owner)?;
                let used = usage.committed + usage.reserved;
                if used.saturating_add(more) > quota {
                    return Ok(Some(LimitRefusal::OverQuota { used, more }));
                }
            }
            for (s, ups) in &all {
                insert_session(c, s)?;
                insert_uploads(c, 0, ups)?;
            }
            insert_events(c, &events)?;
            Ok(None)
        })
        .await
    }

    async fn add_uploads(&self, session_id: &str, uploads: &[Upload], limit: usize) -> Result<()> {
        let (sid, ups) = (session_id.to_owned(), uploads.to_vec());
        self.write(move |c| {
            // Aborted uploads (replaced ones) neither hold their path nor
            // count towards the limit.
            let (count, next): (i64, i64) = c
                .prepare_cached(
                    "SELECT COUNT(*) FILTER (WHERE state != 'aborted'), COALESCE(MAX(idx) + 1, 0) \
                     FROM uploads WHERE session_id = ?1",
                )?
                .query_row(params![sid], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let total = count as usize + ups.len();
            if total > limit {
                return Err(MetaError::Full(total));
            }
            let mut taken = c.prepare_cached(
                "SELECT 1 FROM uploads WHERE session_id = ?1 AND path = ?2 AND state != 'aborted'",
            )?;
            for up in &ups {
                if taken.exists(params![sid, up.path.as_str()])? {
                    return Err(MetaError::AlreadyExists(Record::UploadAt(up.path.clone())));
                }
            }
            insert_uploads(c, next, &ups)?;
            Ok(())
        })
        .await
    }

    async fn add_upload_beside(
        &self,
        session_id: &str,
        upload: &Upload,
        beside: &[String],
        abort: &[String],
        limit: usize,
    ) -> Result<()> {
        let (sid, up) = (session_id.to_owned(), upload.clone());
        let (beside, abort) = (beside.to_vec(), abort.to_vec());
        self.write(move |c| {
            for id in &abort {
                check_upload(c, id, UploadState::Aborted)?;
                c.prepare_cached("UPDATE uploads SET state = 'aborted' WHERE id = ?1")?
                    .execute([id])?;
            }
            let holders: Vec<String> = c
                .prepare_cached(
                    "SELECT id FROM uploads WHERE session_id = ?1 AND path = ?2 AND state != 'aborted'",
                )?
                .query_map(params![sid, up.path.as_str()], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if holders.iter().any(|h| !beside.contains(h)) {
                return Err(MetaError::AlreadyExists(Record::UploadAt(up.path.clone())));
            }
            let (count, next): (i64, i64) = c
                .prepare_cached(
                    "SELECT COUNT(*) FILTER (WHERE state != 'aborted'), COALESCE(MAX(idx) + 1, 0) \
                     FROM uploads WHERE session_id = ?1",
                )?
                .query_row(params![sid], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let total = count as usize - holders.len() + 1;
            if total > limit {
                return Err(MetaError::Full(total));
            }
            insert_uploads(c, next, std::slice::from_ref(&up))?;
            Ok(())
        })
        .await
    }

    async fn get_session(&self, id: &str) -> Result<Option<Session>> {
        let id = id.to_owned();
        self.read(move |c| query_session(c, &id)).await
    }

    async fn list_sessions(
        &self,
        owner: Option<&str>,
        state: Option<SessionState>,
    ) -> Result<Vec<Session>> {
        let owner = owner.map(str::to_owned);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SESSION_COLS} FROM sessions WHERE (?1 IS NULL OR owner = ?1) \
                 AND (?2 IS NULL OR state = ?2) ORDER BY created_at DESC, id"
            ))?;
            Ok(stmt
                .query_map(params![owner, state.map(|s| s.as_str())], session_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn session_uploads(&self, session_id: &str) -> Result<Vec<Upload>> {
        let id = session_id.to_owned();
        self.read(move |c| query_uploads(c, "session_id = ?1 ORDER BY idx", &id))
            .await
    }

    async fn upload_at(&self, session_id: &str, path: &SpacePath) -> Result<Option<Upload>> {
        let (sid, path) = (session_id.to_owned(), path.clone());
        self.read(move |c| {
            let id: Option<String> = c
                .prepare_cached(
                    "SELECT id FROM uploads WHERE session_id = ?1 AND path = ?2 \
                     AND state != 'aborted' ORDER BY idx DESC LIMIT 1",
                )?
                .query_row(params![sid, path.as_str()], |r| r.get(0))
                .optional()?;
            match id {
                Some(id) => Ok(query_uploads(c, "id = ?1", &id)?.pop()),
                None => Ok(None),
            }
        })
        .await
    }

    async fn set_upload_metadata(&self, upload_id: &str, metadata: Option<&str>) -> Result<()> {
        let (id, metadata) = (upload_id.to_owned(), metadata.map(str::to_owned));
        self.write(move |c| {
            c.execute(
                "UPDATE uploads SET metadata = ?2 WHERE id = ?1",
                params![id, metadata],
            )?;
            Ok(())
        })
        .await
    }

    async fn mark_direct(&self, upload_id: &str) -> Result<()> {
        let id = upload_id.to_owned();
        self.write(move |c| {
            c.prepare_cached("UPDATE uploads SET direct = 1 WHERE id = ?1 AND direct = 0")?
                .execute([id])?;
            Ok(())
        })
        .await
    }

    async fn get_upload(&self, id: &str) -> Result<Option<Upload>> {
        let id = id.to_owned();
        self.read(move |c| Ok(query_uploads(c, "id = ?1", &id)?.pop()))
            .await
    }

    /// Both in one read (one trip to a reader thread, one snapshot).
    async fn upload_and_session(&self, upload_id: &str) -> Result<Option<(Upload, Session)>> {
        let id = upload_id.to_owned();
        self.read(move |c| {
            let Some(up) = query_uploads(c, "id = ?1", &id)?.pop() else {
                return Ok(None);
            };
            Ok(query_session(c, &up.session_id)?.map(|s| (up, s)))
        })
        .await
    }

    async fn record_write(
        &self,
        upload_id: &str,
        range: ByteRange,
        part: Option<&Part>,
        sealed: &[Digest],
    ) -> Result<()> {
        let id = upload_id.to_owned();
        let part = part.cloned();
        let sealed = join_tagged(sealed);
        self.write(move |c| {
            c.prepare_cached("INSERT INTO ranges (upload_id, start, end) VALUES (?1, ?2, ?3)")?
                .execute(params![id, i(range.start), i(range.end)])?;
            if sealed.is_some() {
                c.prepare_cached("UPDATE uploads SET sealed = ?2 WHERE id = ?1")?
                    .execute(params![id, sealed])?;
            }
            if let Some(p) = part {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO parts (upload_id, number, offset, size, sha256, sha1, md5) \
                     VALUES (?1,?2,?3,?4,?5,?6,?7)",
                )?
                .execute(params![id, p.number, i(p.offset), i(p.size), p.sha256, p.sha1, p.md5])?;
            }
            Ok(())
        })
        .await
    }

    async fn forget(
        &self,
        upload_id: &str,
        received: &[ByteRange],
        drop_part: Option<u32>,
    ) -> Result<()> {
        let id = upload_id.to_owned();
        let received = received.to_vec();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM ranges WHERE upload_id = ?1")?
                .execute([&id])?;
            c.prepare_cached("UPDATE uploads SET sealed = NULL WHERE id = ?1")?
                .execute([&id])?;
            let mut ins =
                c.prepare_cached("INSERT INTO ranges (upload_id, start, end) VALUES (?1, ?2, ?3)")?;
            for r in &received {
                ins.execute(params![id, i(r.start), i(r.end)])?;
            }
            if let Some(n) = drop_part {
                c.prepare_cached("DELETE FROM parts WHERE upload_id = ?1 AND number = ?2")?
                    .execute(params![id, n])?;
            }
            Ok(())
        })
        .await
    }

    async fn set_length(&self, upload_id: &str, length: Length) -> Result<()> {
        let id = upload_id.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE uploads SET length = ?2 WHERE id = ?1",
                params![id, length.known().map(i)],
            )?;
            Ok(())
        })
        .await
    }

    async fn extend_session(&self, id: &str, expires_at: Millis) -> Result<()> {
        let id = id.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE sessions SET expires_at = MAX(expires_at, ?2) WHERE id = ?1 AND state = 'open'",
                params![id, expires_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_session_state(
        &self,
        id: &str,
        state: SessionState,
        expires_at: Option<Millis>,
    ) -> Result<()> {
        let id = id.to_owned();
        self.write(move |c| {
            if !check_session(c, &id, state)? {
                return Err(MetaError::NotFound(Record::Session(id)));
            }
            let n = c.execute(
                "UPDATE sessions SET state = ?2, expires_at = COALESCE(?3, expires_at) WHERE id = ?1",
                params![id, state.as_str(), expires_at],
            )?;
            if n == 0 {
                return Err(MetaError::NotFound(Record::Session(id)));
            }
            Ok(())
        })
        .await
    }

    async fn set_upload_state(&self, upload_id: &str, state: UploadState) -> Result<()> {
        let id = upload_id.to_owned();
        self.write(move |c| {
            if !check_upload(c, &id, state)? {
                return Err(MetaError::NotFound(Record::Upload(id)));
            }
            let n = c.execute(
                "UPDATE uploads SET state = ?2 WHERE id = ?1",
                params![id, state.as_str()],
            )?;
            if n == 0 {
                return Err(MetaError::NotFound(Record::Upload(id)));
            }
            Ok(())
        })
        .await
    }

    async fn begin_commit(
        &self,
        session: Option<&str>,
        plan: &[(String, SpacePath)],
        abort: &[String],
    ) -> Result<()> {
        let session = session.map(str::to_owned);
        let (plan, abort) = (plan.to_vec(), abort.to_vec());
        self.write(move |c| {
            for id in &abort {
                check_upload(c, id, UploadState::Aborted)?;
                c.prepare_cached("UPDATE uploads SET state = 'aborted' WHERE id = ?1")?
                    .execute([id])?;
            }
            if let Some(sid) = session {
                check_session(c, &sid, SessionState::Committing)?;
                c.execute(
                    "UPDATE sessions SET state = 'committing' WHERE id = ?1",
                    [sid],
                )?;
            }
            for (id, path) in &plan {
                check_upload(c, id, UploadState::Committing)?;
                c.prepare_cached(
                    "UPDATE uploads SET state = 'committing', final_path = ?2 WHERE id = ?1",
                )?
                .execute(params![id, path.as_str()])?;
            }
            Ok(())
        })
        .await
    }

    async fn finish_commit_reporting(
        &self,
        end: SessionEnd<'_>,
        done: &[Committed],
        events: &[OutboxEvent],
    ) -> Result<Option<SessionState>> {
        let end = OwnedEnd::from(end);
        let done = done.to_vec();
        let events = events.to_vec();
        self.write(move |c| {
            for d in &done {
                check_upload(c, &d.upload_id, d.state)?;
                if d.state == UploadState::Committed {
                    insert_file(c, &d.file)?;
                }
                c.prepare_cached(
                    "UPDATE uploads SET state = ?2, final_path = ?3, file_id = ?4 WHERE id = ?1",
                )?
                .execute(params![
                    d.upload_id,
                    d.state.as_str(),
                    d.final_path.as_str(),
                    d.file.id
                ])?;
                c.prepare_cached("DELETE FROM ranges WHERE upload_id = ?1")?
                    .execute([&d.upload_id])?;
            }
            insert_events(c, &events)?;
            apply_end(c, &end)
        })
        .await
    }

    async fn abort_uploads_reporting(
        &self,
        ids: &[String],
        end: SessionEnd<'_>,
        events: &[OutboxEvent],
    ) -> Result<Option<SessionState>> {
        let end = OwnedEnd::from(end);
        let ids = ids.to_vec();
        let events = events.to_vec();
        self.write(move |c| {
            let mut aborted = std::collections::HashSet::new();
            for id in &ids {
                // Only what may still be aborted: a finished upload stays.
                if upload_state(c, id)?.is_some_and(|s| {
                    s != UploadState::Aborted && s.can_become(UploadState::Aborted)
                }) {
                    c.prepare_cached("UPDATE uploads SET state = 'aborted' WHERE id = ?1")?
                        .execute([id])?;
                    aborted.insert(id.as_str());
                }
            }
            insert_events(
                c,
                events.iter().filter(|e| aborted.contains(e.key.as_str())),
            )?;
            apply_end(c, &end)
        })
        .await
    }

    async fn fail_upload(&self, upload_id: &str, reason: &str) -> Result<()> {
        let (id, reason) = (upload_id.to_owned(), reason.to_owned());
        self.write(move |c| {
            let session: Option<(String, String)> = c
                .query_row(
                    "SELECT s.id, s.state FROM sessions s JOIN uploads u ON u.session_id = s.id \
                     WHERE u.id = ?1",
                    [&id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            // An upload committed meanwhile stays so, and its session is
            // not failed for it.
            let aborted = c.execute(
                "UPDATE uploads SET state = 'aborted', final_path = NULL \
                 WHERE id = ?1 AND state NOT IN ('committed', 'skipped')",
                [&id],
            )?;
            if let Some((sid, state)) = session
                && aborted > 0
                && parse::<SessionState>(state)?.can_become(SessionState::Failed)
            {
                c.execute(
                    "UPDATE sessions SET state = 'failed', failure = ?2 WHERE id = ?1",
                    params![sid, reason],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn open_session_count(&self, owner: &str) -> Result<u64> {
        let owner = owner.to_owned();
        self.read(move |c| {
            Ok(u(c
                .prepare_cached(
                    "SELECT COUNT(*) FROM sessions WHERE owner = ?1 AND state IN ('open', 'committing')",
                )?
                .query_row([owner], |r| r.get(0))?))
        })
        .await
    }

    async fn session_counts(&self) -> Result<Vec<(SessionState, u64)>> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT state, COUNT(*) FROM sessions GROUP BY state")?;
            Ok(stmt
                .query_map([], |r| {
                    Ok((parse::<SessionState>(r.get(0)?)?, u(r.get(1)?)))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn usage(&self, owner: &str) -> Result<Usage> {
        let owner = owner.to_owned();
        self.read(move |c| Ok(usage_of(c, &owner)?)).await
    }

    async fn expired_sessions(&self, now: Millis) -> Result<Vec<Session>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {SESSION_COLS} FROM sessions WHERE state = 'open' AND expires_at <= ?1"
            ))?
            .query_map([now], session_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn expired_files(&self, now: Millis) -> Result<Vec<FileRecord>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {FILE_COLS} FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?1"
            ))?
            .query_map([now], file_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn upload_ids(&self, state: UploadState) -> Result<Vec<String>> {
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT id FROM uploads WHERE state = ?1")?
                .query_map([state.as_str()], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    async fn session_ids(&self, state: SessionState) -> Result<Vec<String>> {
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT id FROM sessions WHERE state = ?1")?
                    .query_map([state.as_str()], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?,
            )
        })
        .await
    }

    async fn get_file(&self, space: &SpaceName, path: &SpacePath) -> Result<Option<FileRecord>> {
        let (space, path) = (space.clone(), path.clone());
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {FILE_COLS} FROM files WHERE space = ?1 AND path = ?2"
            ))?
            .query_row(params![space.as_str(), path.as_str()], file_row)
            .optional()?)
        })
        .await
    }

    async fn get_file_by_id(&self, id: &str) -> Result<Option<FileRecord>> {
        let id = id.to_owned();
        self.read(move |c| {
            Ok(
                c.prepare_cached(&format!("SELECT {FILE_COLS} FROM files WHERE id = ?1"))?
                    .query_row(params![id], file_row)
                    .optional()?,
            )
        })
        .await
    }

    async fn get_file_by_object(&self, object: &str) -> Result<Option<FileRecord>> {
        let object = object.to_owned();
        self.read(move |c| {
            Ok(
                c.prepare_cached(&format!("SELECT {FILE_COLS} FROM files WHERE object = ?1"))?
                    .query_row(params![object], file_row)
                    .optional()?,
            )
        })
        .await
    }

    async fn occupant(&self, space: &SpaceName, path: &SpacePath) -> Result<Option<Occupant>> {
        let (space, path) = (space.clone(), path.clone());
        self.read(move |c| {
            let mut get = c.prepare_cached(&format!(
                "SELECT {FILE_COLS} FROM files WHERE space = ?1 AND path = ?2"
            ))?;
            if let Some(f) = get
                .query_row(params![space.as_str(), path.as_str()], file_row)
                .optional()?
            {
                return Ok(Some(Occupant::File(Box::new(f))));
            }
            for anc in path.ancestors() {
                let found = get
                    .query_row(params![space.as_str(), anc], file_row)
                    .optional()?;
                if let Some(f) = found {
                    return Ok(Some(Occupant::FileAncestor(f.path)));
                }
            }
            let (lo, hi) = below(path.as_str());
            let folder: bool = c
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM files WHERE space = ?1 AND path >= ?2 AND path < ?3)",
                )?
                .query_row(params![space.as_str(), lo, hi], |r| r.get(0))?;
            Ok(folder.then_some(Occupant::Folder))
        })
        .await
    }

    async fn committing_around(
        &self,
        space: &SpaceName,
        path: &SpacePath,
    ) -> Result<Option<Occupant>> {
        let (space, at) = (space.clone(), path.clone());
        let heading = self
            .read(move |c| {
                let (lo, hi) = below(at.as_str());
                const HEADING: &str = "SELECT u.final_path FROM uploads u \
                    JOIN sessions s ON s.id = u.session_id \
                    WHERE u.state = 'committing' AND s.space = ?1";
                let mut heading = Vec::new();
                // At the path or one of its ancestors, then below it.
                let mut exact = c.prepare_cached(&format!("{HEADING} AND u.final_path = ?2"))?;
                for a in at.ancestors().chain([at.as_str()]) {
                    for p in exact.query_map(params![space.as_str(), a], |r| r.get(0))? {
                        heading.push(p?);
                    }
                }
                let mut under = c.prepare_cached(&format!(
                    "{HEADING} AND u.final_path >= ?2 AND u.final_path < ?3"
                ))?;
                for p in under.query_map(params![space.as_str(), lo, hi], |r| r.get(0))? {
                    heading.push(p?);
                }
                Ok(heading)
            })
            .await?;
        crate::heading_of(&heading, path)
    }

    async fn list(&self, space: &SpaceName, prefix: Option<&SpacePath>) -> Result<Vec<Entry>> {
        let space = space.clone();
        let prefix = prefix.map(|p| p.as_str().to_owned());
        self.read(move |c| {
            let (lo, hi, skip) = match &prefix {
                Some(p) => {
                    let (lo, hi) = below(p);
                    (lo, hi, p.len() + 1)
                }
                None => (String::new(), "\u{10FFFF}".to_owned(), 0),
            };
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {FILE_COLS} FROM files WHERE space = ?1 AND path >= ?2 AND path < ?3 ORDER BY path"
            ))?;
            let files = stmt
                .query_map(params![space.as_str(), lo, hi], file_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(entries(files, skip))
        })
        .await
    }

    async fn move_files(
        &self,
        space: &SpaceName,
        moves: &[(SpacePath, SpacePath)],
    ) -> Result<Vec<FileRecord>> {
        let space = space.clone();
        let moves = moves.to_vec();
        self.write(move |c| {
            let mut get = c.prepare_cached(&format!(
                "SELECT {FILE_COLS} FROM files WHERE space = ?1 AND path = ?2"
            ))?;
            let mut below_any = c.prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM files WHERE space = ?1 AND path >= ?2 AND path < ?3)",
            )?;
            let mut moved = Vec::with_capacity(moves.len());
            for (from, to) in &moves {
                let Some(f) = get
                    .query_row(params![space.as_str(), from.as_str()], file_row)
                    .optional()?
                else {
                    return Err(MetaError::NotFound(Record::File(from.clone())));
                };
                let (lo, hi) = below(to.as_str());
                let mut taken =
                    below_any.query_row(params![space.as_str(), lo, hi], |r| r.get(0))?;
                for at in to.ancestors().chain([to.as_str()]) {
                    taken = taken
                        || get
                            .query_row(params![space.as_str(), at], |_| Ok(()))
                            .optional()?
                            .is_some();
                }
                if taken {
                    return Err(MetaError::AlreadyExists(Record::File(to.clone())));
                }
                c.execute(
                    "UPDATE files SET path = ?3 WHERE space = ?1 AND path = ?2",
                    params![space.as_str(), from.as_str(), to.as_str()],
                )?;
                moved.push(f);
            }
            Ok(moved)
        })
        .await
    }

    async fn delete_file_reporting(
        &self,
        space: &SpaceName,
        path: &SpacePath,
        events: &[OutboxEvent],
    ) -> Result<Option<FileRecord>> {
        let (space, path) = (space.clone(), path.clone());
        let events = events.to_vec();
        self.write(move |c| {
            let found = c
                .prepare_cached(&format!(
                    "SELECT {FILE_COLS} FROM files WHERE space = ?1 AND path = ?2"
                ))?
                .query_row(params![space.as_str(), path.as_str()], file_row)
                .optional()?;
            if found.is_some() {
                c.execute(
                    "DELETE FROM files WHERE space = ?1 AND path = ?2",
                    params![space.as_str(), path.as_str()],
                )?;
                insert_events(c, &events)?;
            }
            Ok(found)
        })
        .await
    }

    async fn outbox_add(&self, events: &[OutboxEvent]) -> Result<()> {
        let events = events.to_vec();
        self.write(move |c| Ok(insert_events(c, &events)?)).await
    }

    async fn outbox_claim(
        &self,
        now: Millis,
        hold_until: Millis,
        limit: usize,
    ) -> Result<Vec<OutboxRow>> {
        self.write(move |c| {
            let rows = c
                .prepare_cached(
                    "UPDATE hook_outbox SET due_at = ?2 WHERE seq IN \
                       (SELECT o.seq FROM hook_outbox o WHERE o.due_at <= ?1 \
                        AND o.seq = (SELECT MIN(seq) FROM hook_outbox WHERE key = o.key) \
                        ORDER BY o.seq LIMIT ?3) \
                     RETURNING seq, id, key, body, attempts, created_at",
                )?
                .query_map(params![now, hold_until, limit as i64], |r| {
                    Ok(OutboxRow {
                        seq: r.get(0)?,
                        id: r.get(1)?,
                        key: r.get(2)?,
                        body: r.get(3)?,
                        attempts: r.get::<_, i64>(4)? as u32,
                        created_at: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn outbox_done(&self, seq: i64) -> Result<()> {
        self.write(move |c| {
            c.prepare_cached("DELETE FROM hook_outbox WHERE seq = ?1")?
                .execute([seq])?;
            Ok(())
        })
        .await
    }

    async fn outbox_retry(&self, seq: i64, next_at: Millis) -> Result<()> {
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE hook_outbox SET attempts = attempts + 1, due_at = ?2 WHERE seq = ?1",
            )?
            .execute(params![seq, next_at])?;
            Ok(())
        })
        .await
    }

    async fn outbox_depth(&self) -> Result<u64> {
        self.read(|c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM hook_outbox", [], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await?;
        self.write(|_| Ok(())).await
    }

    async fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        let (name, candidate) = (name.to_owned(), candidate.to_vec());
        self.write(move |c| {
            c.execute(
                "INSERT INTO secrets (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                params![name, candidate],
            )?;
            Ok(
                c.query_row("SELECT value FROM secrets WHERE name = ?1", [name], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_run_without_error_and_empty_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let conn = open_conn(&path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch("PRAGMA wal_autocheckpoint=0;").unwrap();
        for i in 0..200 {
            conn.execute(
                "INSERT INTO spaces (name, owner, created_at) VALUES (?1, NULL, 0)",
                [format!("s{i}")],
            )
            .unwrap();
        }
        let other = open_conn(&path).unwrap();
        other
            .execute_batch("PRAGMA wal_checkpoint(PASSIVE);")
            .unwrap();
        let (busy, log, done): (i64, i64, i64) = other
            .query_row("PRAGMA wal_checkpoint(PASSIVE);", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((busy, log), (0, done), "every WAL frame was copied back");
        assert!(log > 0);
    }

    #[tokio::test]
    async fn a_database_from_before_the_added_columns_gains_them_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        {
            let conn = open_conn(&path).unwrap();
            // The first release's schema: every added column taken out.
            let mut old = SCHEMA.to_owned();
            for (_, column, kind) in ADDED_COLUMNS {
                for sep in [", ", ",\n  "] {
                    for end in [",", ")"] {
                        old = old.replace(&format!("{sep}{column} {kind}{end}"), end);
                    }
                }
                for end in [",", ")"] {
                    let def = format!(" {column} {kind}{end}");
                    assert!(!old.contains(&def), "{def} is still in {old}");
                }
            }
            conn.execute_batch(&old).unwrap();
            conn.execute(
                "INSERT INTO sessions (id, owner, space, conflict, auto_commit, state, created_at, expires_at, dialect) \
                 VALUES ('s', 'u', 'u', 'rename', 0, 'open', 1, 2, 'native')",
                [],
            )
            .unwrap();
        }
        let m = Sqlite::open(&path).unwrap();
        let s = m
            .get_session("s")
            .await
            .unwrap()
            .expect("the old row reads");
        assert_eq!(
            (s.expires_at, s.extend_secs, s.open_ended),
            (2, None, false)
        );
        assert!(m.session_uploads("s").await.unwrap().is_empty());
        let conn = open_conn(&path).unwrap();
        for (table, column, _) in ADDED_COLUMNS {
            let present: bool = conn
                .prepare(&format!(
                    "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
                ))
                .unwrap()
                .exists([column])
                .unwrap();
            assert!(present, "{table}.{column} was added");
        }
    }
}
