//! PostgreSQL metadata, shared by several server processes.
//!
//! Every method is one statement (committed on its own) or one transaction
//! (READ COMMITTED). Where SQLite's single writer made a read-then-write
//! atomic, a transaction here first locks what it checks:
//!
//! - state changes lock the session row (`SELECT ... FOR UPDATE`), then
//!   the upload rows in id order, always in that order (so two
//!   transactions never wait on each other in a cycle), and check the
//!   core's lifecycle on the states those locks read;
//! - adding uploads locks the session row; creating sessions within the
//!   owner's limits takes a per-owner advisory lock.
//!
//! Whatever else is read under a lock (counts, a session's other uploads)
//! is read by a later statement, whose fresh snapshot holds what the
//! lock's previous holder committed. Such a statement may also write
//! (reading the tables as they were before its writes); a check that then
//! fails rolls the transaction back. Paths stay unique by the table's
//! `UNIQUE (space, path)`.
//!
//! The schema comes from the versioned files in `migrations/postgres/`,
//! applied once each, in one transaction under an advisory lock, so nodes
//! starting together do not race.

use crate::{
    Change, Claim, ClaimBy, CommitGate, CommitTurn, Committed, CreateLimits, Entry, Exclusive,
    Held, LeaseKind, LimitRefusal, MetaError, MetaStore, Occupant, OutboxEvent, OutboxRow,
    PathTaken, Record, Result, SessionEnd, SpaceRecord, TokenRecord, UNREAD_PARTS_MAX, UnreadClaim,
    Usage, below, entries,
};
use ferry_core::{
    Access, ByteRange, ConflictPolicy, Digest, DigestAlgo, FileRecord, Length, Millis, Part,
    RangeSet, Session, SessionState, SpaceName, SpacePath, Upload, UploadState, User, join_tagged,
};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, Executor, Postgres as Pg, Row};
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;
use warm::Warm;

mod warm;

/// The schema's versions, in order: each applied once, recorded in
/// `ferry_migrations`.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_secrets.sql")),
    (3, include_str!("../migrations/postgres/0003_leases.sql")),
    (
        4,
        include_str!("../migrations/postgres/0004_hook_outbox.sql"),
    ),
    (
        5,
        include_str!("../migrations/postgres/0005_one_statement.sql"),
    ),
    (6, include_str!("../migrations/postgres/0006_path_free.sql")),
    (
        7,
        include_str!("../migrations/postgres/0007_path_locks.sql"),
    ),
    (
        8,
        include_str!("../migrations/postgres/0008_lease_waiters.sql"),
    ),
    (
        9,
        include_str!("../migrations/postgres/0009_byte_order_keys.sql"),
    ),
    (
        10,
        include_str!("../migrations/postgres/0010_open_sessions.sql"),
    ),
    (
        11,
        include_str!("../migrations/postgres/0011_path_free_plans.sql"),
    ),
    (
        12,
        include_str!("../migrations/postgres/0012_claim_and_read.sql"),
    ),
    (13, include_str!("../migrations/postgres/0013_sealed.sql")),
    (
        14,
        include_str!("../migrations/postgres/0014_commit_turn.sql"),
    ),
    (
        15,
        include_str!("../migrations/postgres/0015_commit_ready.sql"),
    ),
    (
        16,
        include_str!("../migrations/postgres/0016_record_if_free.sql"),
    ),
    (
        17,
        include_str!("../migrations/postgres/0017_claim_unread.sql"),
    ),
    (
        18,
        include_str!("../migrations/postgres/0018_live_indexes.sql"),
    ),
    (
        19,
        include_str!("../migrations/postgres/0019_owner_stripes.sql"),
    ),
    (
        20,
        include_str!("../migrations/postgres/0020_write_commit_ready.sql"),
    ),
    (21, include_str!("../migrations/postgres/0021_fence.sql")),
    (
        22,
        include_str!("../migrations/postgres/0022_session_indexes_by_id.sql"),
    ),
];

/// The channel changes are announced on (`NOTIFY`, in the transaction that
/// makes them, so they are heard once committed).
const CHANGES_CHANNEL: &str = "ferry_changes";

/// The advisory lock (one 64-bit key) migrations run under.
const MIGRATION_LOCK: i64 = 0x4665_7272_794d_6967; // "FerryMig"

// The per-owner advisory locks (two 32-bit keys: "Ownr" and the owner's
// `hashtext`, and its 16 stripes "Ostr", a key space apart from the
// migrations' 64-bit one) are taken in SQL: `ferry_owner_limits`
// (migrations 5 and 19).

/// The first key of [`MetaStore::try_exclusive`]'s locks; the second is
/// the `hashtext` of what is held.
const EXCLUSIVE_LOCK: i32 = 0x4f6e_6c79; // "Only"

/// The first key of [`MetaStore::turn`]'s locks; the second is the
/// `hashtext` of what is waited for.
const TURN_LOCK: i32 = 0x5475_726e; // "Turn"

/// How long [`MetaStore::turn`] waits for a turn (`lock_timeout` of its
/// pool's connections); then it fails as busy.
const TURN_WAIT: &str = "30s";

/// Connections of the pool [`MetaStore::turn`] waits on, per process.
const TURN_CONNECTIONS: u32 = 8;

/// A turn held: its transaction, rolled back (the lock released) when the
/// hold is dropped.
struct TurnHold(Option<sqlx::Transaction<'static, Pg>>);

impl Drop for TurnHold {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            tokio::spawn(async move {
                let _ = tx.rollback().await;
            });
        }
    }
}

/// The session's turn `$6` (to `$7`) claimed for node `$5` once the claim
/// `c` is granted (its token when granted), as a lateral subquery's
/// columns `turn` and `done` (always true, for the read to name).
const TURN_IF_GRANTED: &str = "SELECT CASE WHEN c.granted AND $6::text IS NOT NULL THEN
       (SELECT t.token FROM ferry_claim($6, 0, $7, 'turn', $5) t WHERE t.granted)
     END AS turn, true AS done";

/// The first key of a node's presence lock; the second is the node's id
/// (its leases are alive while it holds it: `ferry_node_alive`).
const NODE_LOCK: i32 = 0x4e6f_6465; // "Node"

/// The first key of the lock each statement connection of a node holds
/// shared from its start; the second is the node's id. A dead node's
/// leases are taken over only once no connection holds it any more
/// (`ferry_fence` ends them): none of its statements can land after.
const FENCE_LOCK: i32 = 0x4665_6e63; // "Fenc"

/// How often a node checks that its presence lock's connection lives.
const PRESENCE_CHECK: Duration = Duration::from_secs(1);

/// Connections a process keeps for its statements, unless told otherwise
/// ([`Postgres::connect_pooled`]). More than the database server's cores
/// cost CPU: on 2 cores, 16 connections took 10–30% more of PostgreSQL's
/// CPU per small upload than 8 did (docs/SCALE.md).
pub const DEFAULT_POOL: u32 = 8;
/// How long `connect` waits for the server to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a turn waits for a connection of its own: as long as for
/// the turn itself ([`TURN_WAIT`]); a busy cluster's commits queue here.
const TURN_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a call waits for a free connection once running: longer
/// than a restart of the database usually takes (a few seconds), short
/// enough that a client learns of an outage (503) before it gives up.
/// Waits in a healthy pool are milliseconds.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// PostgreSQL-backed [`MetaStore`]; cheap to clone (a connection pool).
#[derive(Clone)]
pub struct Postgres {
    /// The connections for statements.
    pool: Warm,
    /// What the listener hears on [`CHANGES_CHANNEL`].
    changes: tokio::sync::broadcast::Sender<Change>,
    /// This process's node id: its leases are alive while it holds the
    /// presence lock [`NODE_LOCK`] of it (a new id after it lapsed).
    node: std::sync::Arc<std::sync::atomic::AtomicI32>,
    /// Connections that wait for turns ([`MetaStore::turn`]).
    turns: PgPool,
    /// The connection that listens for changes.
    listening: PgPool,
    /// The `application_name` of this process's connections.
    name: String,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").finish_non_exhaustive()
    }
}

impl Postgres {
    /// The ids of `table`'s rows in `state`, in order. The state is written
    /// into the statement: a plan for any state could not read the indexes
    /// of the live rows (`uploads_live`, `sessions_open`).
    async fn ids_in_state(&self, table: &str, state: &str) -> Result<Vec<String>> {
        sqlx::query_scalar(&format!(
            "SELECT id FROM {table} WHERE state = '{state}' ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    /// Connects to the database at `url` (`postgres://user:pass@host:port/db`),
    /// and brings its schema up to date. Fails within a few seconds when
    /// the server does not answer; no error tells the URL's password.
    pub async fn connect(url: &str) -> Result<Postgres> {
        Postgres::connect_pooled(url, DEFAULT_POOL).await
    }

    /// [`Postgres::connect`] with `connections` for statements (at least
    /// one; besides them, one listens for changes, one holds the node's
    /// presence, and up to 8 wait for turns).
    pub async fn connect_pooled(url: &str, connections: u32) -> Result<Postgres> {
        let target = Target::parse(url);
        // No JIT compilation: Ferry's statements are short, and a plan
        // whose estimate passes `jit_above_cost` (functions the planner
        // cannot see into are guessed at 1,000 rows each) spent ~1 s
        // compiling itself at every execution.
        // Each process's connections carry a name of their own
        // (`others_at_work` tells them from other processes').
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("ferry/{:x}-{nanos:x}", std::process::id());
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| target.error("the database URL does not parse", &e))?
            .options([("jit", "off")])
            .application_name(&name);
        // The first connection, direct (a pool would retry a refused one
        // until its timeout, hiding why), migrates the schema.
        let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(target.error("cannot connect", &e)),
            Err(_) => {
                return Err(target.error(
                    "cannot connect",
                    &format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                ));
            }
        };
        migrate(&mut conn)
            .await
            .map_err(|e| target.error("cannot migrate the schema", &e))?;
        conn.close().await.ok();
        let (conn, id) = present(&options)
            .await
            .map_err(|e| target.error("cannot register the node", &e))?;
        let node = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(id));
        let renamed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let pool = fenced(PgPoolOptions::new(), &node, &renamed)
            .max_connections(connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone());
        // Listening before `connect` returns: every change committed after
        // it is heard. On a connection of its own, outside the pool.
        let listening = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        let mut listener = sqlx::postgres::PgListener::connect_with(&listening)
            .await
            .map_err(|e| target.error("cannot listen for changes", &e))?;
        listener
            .listen(CHANGES_CHANNEL)
            .await
            .map_err(|e| target.error("cannot listen for changes", &e))?;
        let (changes, _) = tokio::sync::broadcast::channel(4096);
        tokio::spawn(listen(
            pool.clone(),
            listening.clone(),
            listener,
            changes.clone(),
        ));
        tokio::spawn(stay_present(
            pool.clone(),
            conn,
            (node.clone(), renamed.clone()),
            changes.clone(),
        ));
        // (A turn's transaction records a commit's intent too:
        // `begin_commit_ending`.)
        let turns = fenced(PgPoolOptions::new(), &node, &renamed)
            .max_connections(TURN_CONNECTIONS)
            .acquire_timeout(TURN_ACQUIRE_TIMEOUT)
            .connect_lazy_with(
                pool.connect_options()
                    .as_ref()
                    .clone()
                    .options([("lock_timeout", TURN_WAIT)]),
            );
        Ok(Postgres {
            pool: Warm::new(pool, renamed),
            changes,
            node,
            turns,
            listening,
            name,
        })
    }
}

/// `options` for connections that make statements: each holds the node's
/// fence lock ([`FENCE_LOCK`] + `node`'s id) shared from its start, made
/// only while the node is present under that id (else the pool tries
/// again). A ping before each use would cost a round trip: one opened
/// before a lost connection was seen (`trusted`) or before the node took
/// a new id (`renamed`) is dropped as it comes out instead.
fn fenced(
    options: PgPoolOptions,
    node: &std::sync::Arc<std::sync::atomic::AtomicI32>,
    renamed: &std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> PgPoolOptions {
    let (node, renamed) = (node.clone(), renamed.clone());
    options
        .test_before_acquire(false)
        .before_acquire(move |_, meta| {
            let since = renamed.load(std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move { Ok(trusted(meta.age) && opened_since(meta.age, since)) })
        })
        .after_connect(move |conn, _| {
            let id = node.load(std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                // A connection fenced under a lapsed id could come after
                // another node's fence looked.
                let present: bool = sqlx::query_scalar(
                    "SELECT ferry_node_alive($2) FROM (SELECT pg_advisory_lock_shared($1, $2)) l",
                )
                .bind(FENCE_LOCK)
                .bind(id)
                .fetch_one(&mut *conn)
                .await?;
                if present {
                    Ok(())
                } else {
                    Err(sqlx::Error::Protocol(
                        "this node's presence in the database lapsed".into(),
                    ))
                }
            })
        })
}

/// A connection of its own holding the presence lock of a fresh node id.
async fn present(options: &PgConnectOptions) -> Result<(PgConnection, i32), sqlx::Error> {
    let mut conn = options.connect().await?;
    loop {
        let id: i32 = sqlx::query_scalar("SELECT (random() * 2147483646)::int + 1")
            .fetch_one(&mut conn)
            .await?;
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(NODE_LOCK)
            .bind(id)
            .fetch_one(&mut conn)
            .await?;
        if held {
            return Ok((conn, id));
        }
    }
}

/// A connection of its own holding `what` shared ([`EXCLUSIVE_LOCK`]).
async fn hold_shared(options: &PgConnectOptions, what: &str) -> sqlx::Result<PgConnection> {
    let mut conn = options.connect().await?;
    conn.execute("SET lock_timeout = '30s'").await?;
    sqlx::query("SELECT pg_advisory_lock_shared($1, hashtext($2))")
        .bind(EXCLUSIVE_LOCK)
        .bind(what)
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// The hold of a lock on `conn`, a connection of its own, watched: a task
/// checks the connection every [`PRESENCE_CHECK`]. When the database
/// ended it (a restart, or an administrator), the lock went with it: a
/// shared hold (`again`: how to connect, what) is taken again; any other
/// is marked lost ([`Exclusive::is_lost`]), as another process may hold
/// it now. Dropping the hold closes the connection, which releases it.
fn keep_hold(mut conn: PgConnection, again: Option<(PgConnectOptions, String)>) -> Exclusive {
    let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (dropped, mut stop) = tokio::sync::oneshot::channel::<()>();
    let marked = lost.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stop => {
                    conn.close().await.ok();
                    return;
                }
                _ = tokio::time::sleep(PRESENCE_CHECK) => {}
            }
            let alive = tokio::select! {
                _ = &mut stop => return,
                ping = tokio::time::timeout(PRESENCE_CHECK, conn.ping()) => ping.is_ok_and(|r| r.is_ok()),
            };
            if alive {
                continue;
            }
            let Some((options, what)) = &again else {
                marked.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::warn!(
                    "a cluster-wide hold of this node ended with its database connection"
                );
                return;
            };
            tracing::warn!(what = %what, "a shared hold of this node ended with its database connection; taking it again");
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    held = hold_shared(options, what) => match held {
                        Ok(c) => {
                            conn = c;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, what = %what, "cannot take a shared hold again; retrying");
                            tokio::select! {
                                _ = &mut stop => return,
                                _ = tokio::time::sleep(PRESENCE_CHECK) => {}
                            }
                        }
                    },
                }
            }
        }
    });
    Exclusive::watched(Box::new(dropped), lost)
}

/// Keeps the node present until the pool closes: checks its presence
/// connection every [`PRESENCE_CHECK`]; once it is lost, the node's
/// leases may be another's, so [`Change::LeasesLost`] is announced and
/// the node comes back under a new id.
async fn stay_present(
    pool: PgPool,
    mut conn: PgConnection,
    (node, renamed): (
        std::sync::Arc<std::sync::atomic::AtomicI32>,
        std::sync::Arc<std::sync::atomic::AtomicU64>,
    ),
    changes: tokio::sync::broadcast::Sender<Change>,
) {
    while !pool.is_closed() {
        tokio::time::sleep(PRESENCE_CHECK).await;
        let ping = tokio::time::timeout(PRESENCE_CHECK, conn.ping()).await;
        match &ping {
            Ok(Ok(())) => continue,
            // The connection was lost (a restart): so were the others.
            // (A ping that is only slow says nothing of them.)
            Ok(Err(e)) if connection_lost(e) => distrust_connections(),
            _ => {}
        }
        let _ = changes.send(Change::LeasesLost);
        tracing::warn!("this node's presence in the database lapsed; its leases are given up");
        loop {
            if pool.is_closed() {
                return;
            }
            match present(&pool.connect_options()).await {
                Ok((c, id)) => {
                    conn = c;
                    // Connections fenced under the old id are not used
                    // again (another node's claim may end them).
                    let old = node.swap(id, std::sync::atomic::Ordering::SeqCst);
                    renamed.store(clock() + 1, std::sync::atomic::Ordering::SeqCst);
                    // Its connections under the old id end now (a
                    // statement of theirs under way cannot land after
                    // another node took over what the old id held).
                    let fenced = sqlx::query_scalar::<_, bool>("SELECT ferry_fence($1)")
                        .bind(old)
                        .fetch_one(&mut conn)
                        .await;
                    if !matches!(fenced, Ok(true)) {
                        tracing::warn!(
                            ?fenced,
                            "cannot end this node's connections under its lapsed id"
                        );
                    }
                    break;
                }
                Err(_) => tokio::time::sleep(PRESENCE_CHECK).await,
            }
        }
    }
}

/// Relays what is announced on [`CHANGES_CHANNEL`] until the pool closes.
/// After the connection was lost (changes may have been missed) it relays
/// [`Change::Unknown`]; while the database is away it retries each second,
/// connecting through `listening`.
async fn listen(
    pool: PgPool,
    listening: PgPool,
    listener: sqlx::postgres::PgListener,
    changes: tokio::sync::broadcast::Sender<Change>,
) {
    let mut listener = Some(listener);
    while !pool.is_closed() {
        let l = match &mut listener {
            Some(l) => l,
            None => {
                let l = match sqlx::postgres::PgListener::connect_with(&listening).await {
                    Ok(mut l) => match l.listen(CHANGES_CHANNEL).await {
                        // What was announced before is unknown.
                        Ok(()) => {
                            let _ = changes.send(Change::Unknown);
                            l
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot listen for metadata changes");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    },
                    Err(_) => {
                        // Still away.
                        distrust_connections();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                listener.insert(l)
            }
        };
        match l.try_recv().await {
            Ok(Some(n)) => {
                let change = match n.payload().split_once(':') {
                    Some(("token", id)) => Change::TokenRevoked(id.to_owned()),
                    Some(("release", token)) => Change::ReleaseAsked(token.to_owned()),
                    Some(("released", key)) => Change::Released(key.to_owned()),
                    Some(("accounts", _)) => Change::Accounts,
                    _ => Change::Unknown,
                };
                let _ = changes.send(change);
            }
            // The connection was lost; the listener reconnects on the next
            // call, and whatever was announced meanwhile is unknown.
            Ok(None) => {
                distrust_connections();
                let _ = changes.send(Change::Unknown);
            }
            Err(_) => {
                distrust_connections();
                listener = None;
                let _ = changes.send(Change::Unknown);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

impl Postgres {
    /// Closes the pool, once the calls under way have given their
    /// connections back; later calls fail with [`MetaError::Closed`].
    pub async fn close(&self) {
        self.turns.close().await;
        self.pool.close().await;
        // Its close ends the listener's wait (then the relay stops).
        self.listening.close().await;
    }
}

/// Applies the missing migrations in one transaction, under an advisory
/// lock: nodes starting together wait for each other, and each version
/// is applied once.
async fn migrate(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    apply_missing(&mut tx).await?;
    tx.commit().await
}

async fn apply_missing(c: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *c)
        .await?;
    // Without arguments, a string goes by the simple query protocol,
    // which runs several statements at once.
    c.execute(
        "CREATE TABLE IF NOT EXISTS ferry_migrations (
           version INT PRIMARY KEY, applied_at TIMESTAMPTZ DEFAULT now())",
    )
    .await?;
    let done: Vec<i32> = sqlx::query_scalar("SELECT version FROM ferry_migrations")
        .fetch_all(&mut *c)
        .await?;
    for &(version, sql) in MIGRATIONS {
        if done.contains(&version) {
            continue;
        }
        tracing::info!(version, "applying a PostgreSQL migration");
        c.execute(sql).await?;
        sqlx::query("INSERT INTO ferry_migrations (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

// ---- errors

/// A database URL as it may be shown, and the secrets it holds.
struct Target {
    /// The URL with its password replaced, or `None` when it does not
    /// look like a URL (then it is not shown at all).
    shown: Option<String>,
    secrets: Vec<String>,
}

impl Target {
    fn parse(url: &str) -> Target {
        let mut secrets = Vec::new();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Target {
                shown: None,
                secrets,
            };
        };
        // The user part ends at the last `@`, wherever it is: a password
        // holding an unescaped `/`, `?` or `#` is still a password.
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (host, tail) = rest.split_at(auth_end);
        let authority = match userinfo {
            Some(userinfo) => match userinfo.split_once(':') {
                Some((user, pass)) => {
                    secrets.push(pass.to_owned());
                    format!("{user}:***@{host}")
                }
                None => format!("{userinfo}@{host}"),
            },
            None => host.to_owned(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let pairs: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((k, v)) if percent_decode(k).eq_ignore_ascii_case("password") => {
                            secrets.push(v.to_owned());
                            format!("{k}=***")
                        }
                        _ => pair.to_owned(),
                    })
                    .collect();
                format!("{path}?{}", pairs.join("&"))
            }
            None => tail.to_owned(),
        };
        let decoded: Vec<String> = secrets.iter().map(|s| percent_decode(s)).collect();
        secrets.extend(decoded);
        secrets.retain(|s| !s.is_empty());
        // Longest first, so that no part of a longer one is left behind.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Target {
            shown: Some(format!("{scheme}://{authority}{tail}")),
            secrets,
        }
    }

    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for s in &self.secrets {
            text = text.replace(s.as_str(), "***");
        }
        text
    }

    /// `what` went wrong with this database, because of `cause`.
    fn error(&self, what: &str, cause: &dyn std::fmt::Display) -> MetaError {
        let at = match &self.shown {
            Some(url) => format!(" at {url}"),
            None => String::new(),
        };
        MetaError::backend(ConnectError(
            self.scrub(&format!("PostgreSQL{at}: {what}: {cause}")),
        ))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut k = 0;
    while k < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[k] == b'%'
            && let (Some(hi), Some(lo)) = (
                b.get(k + 1).copied().and_then(hex),
                b.get(k + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            k += 3;
        } else {
            out.push(b[k]);
            k += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why `connect` failed, already free of the URL's secrets.
#[derive(Debug)]
struct ConnectError(String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

/// A claim's answer from `ferry_claim`'s rows (granted, token, kind[,
/// the turn's token]): granted, or the leases in its way.
fn claim_of(rows: &[PgRow]) -> Result<(Claim, Option<String>)> {
    let mut held = Vec::new();
    for r in rows {
        let token: String = get(r, 1)?;
        if get::<bool>(r, 0)? {
            let turn = if r.len() > 3 { get(r, 3)? } else { None };
            return Ok((Claim::Granted(token), turn));
        }
        let kind: String = get(r, 2)?;
        let kind = LeaseKind::parse(&kind).ok_or_else(|| corrupt("lease kind", &kind))?;
        held.push(Held { token, kind });
    }
    Ok((Claim::Busy(held), None))
}

/// What a granted claim's statement read (`decode`d from its first row,
/// whose column 4 on is the read; NULL there when there was nothing).
fn read_granted<T>(
    claim: &Claim,
    rows: &[PgRow],
    decode: impl Fn(&PgRow) -> Result<T>,
) -> Result<Option<T>> {
    match (claim, rows.first()) {
        (Claim::Granted(_), Some(r)) if get::<Option<&str>>(r, 4)?.is_some() => {
            Some(decode(r)).transpose()
        }
        _ => Ok(None),
    }
}

/// An upload and its session from the columns of `r` from `o` on, as
/// `ferry_upload_read` answers them.
fn upload_and_session_at(r: &PgRow, o: usize) -> Result<(Upload, Session)> {
    Ok((upload_row_at(r, o)?, session_row_at(r, o + UPLOAD_COLUMNS)?))
}

/// The session's state after a commit's result: the state it was set to
/// (`set`), or the one `ferry_settle` ended it in (column `col`, if any).
fn session_after(
    row: &PgRow,
    col: usize,
    set: Option<(&str, SessionState)>,
) -> Result<Option<SessionState>> {
    if let Some((_, to)) = set {
        return Ok(Some(to));
    }
    let ended: Option<String> = get(row, col)?;
    ended.map(|s| parse(&s)).transpose()
}

/// PostgreSQL's errors, kept opaque; a full disk (SQLSTATE 53100) and a
/// closed pool are told apart.
fn db(e: sqlx::Error) -> MetaError {
    if connection_lost(&e) {
        // Every connection made before now may be as dead as this one.
        distrust_connections();
        tracing::debug!(error = %e, "the connection to the metadata database was lost");
        return MetaError::Unreachable;
    }
    match &e {
        sqlx::Error::PoolClosed => MetaError::Closed,
        sqlx::Error::Database(d) if d.code().as_deref() == Some("53100") => MetaError::NoSpace,
        // lock_not_available (a `lock_timeout` ran out), or no free
        // connection within the pool's wait.
        sqlx::Error::Database(d) if d.code().as_deref() == Some("55P03") => MetaError::Busy,
        // No connection within the pool's wait, while connections were
        // being lost: the database is away, not busy.
        // (The listener, reconnecting, says so at least every wait.)
        sqlx::Error::PoolTimedOut if lost_within(2 * ACQUIRE_TIMEOUT) => MetaError::Unreachable,
        sqlx::Error::PoolTimedOut => MetaError::Busy,
        _ => MetaError::backend(e),
    }
}

/// Whether `e` says the connection to the database is gone or refused (as
/// when the server restarts) rather than anything about the statement:
/// a socket error, an error that ended the session (severity `FATAL` or
/// `PANIC`: the server shut down, crashed, is starting up, or ended an
/// idle session), or a connection exception (SQLSTATE 08000–08006; not
/// 08P01, a protocol violation, which is a request's own fault).
fn connection_lost(e: &sqlx::Error) -> bool {
    use sqlx::postgres::{PgDatabaseError, PgSeverity};
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(d) => {
            let ended = d
                .try_downcast_ref::<PgDatabaseError>()
                .is_some_and(|p| matches!(p.severity(), PgSeverity::Fatal | PgSeverity::Panic));
            ended
                || d.code()
                    .is_some_and(|c| matches!(&*c, "08000" | "08001" | "08003" | "08004" | "08006"))
        }
        _ => false,
    }
}

/// The moment (ms since [`clock`]'s start) before which pooled
/// connections are not trusted: a lost connection (a restart of the
/// database) is seen by one statement, or by the listener or the
/// presence check, and every connection opened before it is dropped as
/// it comes out of its pool ([`trusted`]) instead of failing a statement
/// of its own. Without it each of a pool's connections failed one
/// request after a restart (they are not tested before use: that costs
/// a round trip each time).
static DISTRUSTED_BEFORE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn clock() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1
}

/// Whether a lost connection was seen within `d`.
fn lost_within(d: Duration) -> bool {
    let last = DISTRUSTED_BEFORE.load(std::sync::atomic::Ordering::SeqCst);
    last > 0 && clock().saturating_sub(last) <= d.as_millis() as u64
}

fn distrust_connections() {
    DISTRUSTED_BEFORE.fetch_max(clock(), std::sync::atomic::Ordering::SeqCst);
}

/// Whether a pooled connection of this age was opened after the last
/// lost connection was seen.
fn trusted(age: Duration) -> bool {
    opened_since(
        age,
        DISTRUSTED_BEFORE.load(std::sync::atomic::Ordering::SeqCst),
    )
}

/// [`MetaStore::begin_commit`]'s intent, in the transaction on `c`: the
/// session and uploads locked, then checked in SQLite's order, each seeing
/// the ones before.
async fn intent_locking(
    c: &mut PgConnection,
    session: Option<&str>,
    plan: &[(String, SpacePath)],
    abort: &[String],
) -> Result<()> {
    let ids: Vec<String> = abort
        .iter()
        .chain(plan.iter().map(|(id, _)| id))
        .cloned()
        .collect();
    let (locked, mut states) = lock(c, session, &ids).await?;
    // The checks in SQLite's order, each seeing the ones before.
    let mut aborted = Vec::new();
    for id in abort {
        if check_upload(&mut states, id, UploadState::Aborted)? {
            aborted.push(id.as_str());
        }
    }
    if let Some(s) = &locked {
        s.state.transition(SessionState::Committing)?;
    }
    let mut planned: HashMap<&str, &str> = HashMap::new();
    for (id, path) in plan {
        if check_upload(&mut states, id, UploadState::Committing)? {
            planned.insert(id, path.as_str());
        }
    }
    let (plan_ids, plan_paths): (Vec<&str>, Vec<&str>) = planned.into_iter().unzip();
    sqlx::query(
        "WITH a AS (UPDATE uploads SET state = 'aborted' WHERE id = ANY($1)), \
              s AS (UPDATE sessions SET state = 'committing' WHERE id = $2) \
         UPDATE uploads SET state = 'committing', final_path = p.path \
         FROM UNNEST($3::text[], $4::text[]) AS p(id, path) WHERE uploads.id = p.id",
    )
    .bind(&aborted)
    .bind(locked.as_ref().map(|s| s.id.as_str()))
    .bind(&plan_ids)
    .bind(&plan_paths)
    .execute(&mut *c)
    .await
    .map_err(db)?;
    Ok(())
}

/// The intent of one upload's commit (with `session`, the whole session's)
/// or one abort as one compare-and-set statement; `None` for other shapes,
/// or when the core's lifecycle forbids it.
fn intent_at_once<'q>(
    session: Option<&'q str>,
    plan: &'q [(String, SpacePath)],
    abort: &'q [String],
) -> Option<sqlx::query::Query<'q, Pg, sqlx::postgres::PgArguments>> {
    let (id, path, to) = match (plan, abort) {
        ([(id, path)], []) => (id, Some(path.as_str()), UploadState::Committing),
        ([], [id]) => (id, None, UploadState::Aborted),
        _ => return None,
    };
    let allowed = UploadState::Open.transition(to).is_ok()
        && SessionState::Open
            .transition(SessionState::Committing)
            .is_ok();
    if !allowed {
        return None;
    }
    Some(
        sqlx::query(
            "WITH s AS (UPDATE sessions SET state = 'committing' \
                WHERE id = $1 AND state = 'open' RETURNING 1), \
             u AS (UPDATE uploads SET state = $3, final_path = COALESCE($4, final_path) \
                WHERE id = $2 AND state = 'open' AND (SELECT COUNT(*) FROM s) >= 0 RETURNING 1) \
             SELECT ferry_expect((SELECT COUNT(*) FROM s) = $5 AND (SELECT COUNT(*) FROM u) = 1)",
        )
        .bind(session)
        .bind(id)
        .bind(to.as_str())
        .bind(path)
        .bind(i64::from(session.is_some())),
    )
}

/// Runs [`intent_at_once`]'s statement on `c`: `false` when the states
/// were not those expected (nothing changed; in a transaction, it ended).
async fn intent_in(
    q: sqlx::query::Query<'_, Pg, sqlx::postgres::PgArguments>,
    c: &mut PgConnection,
) -> Result<bool> {
    match q.execute(c).await {
        Ok(_) => Ok(true),
        Err(e) if changed_meanwhile(&e) => Ok(false),
        Err(e) => Err(db(e)),
    }
}

/// Whether a pooled connection of this age was opened at or after
/// `since` (ms since [`clock`]'s start).
fn opened_since(age: Duration, since: u64) -> bool {
    clock().saturating_sub(age.as_millis() as u64) >= since
}

/// A one-statement state change found other states than it expected
/// (`ferry_expect`), or was chosen to break a deadlock: nothing changed.
fn changed_meanwhile(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d)
        if matches!(d.code().as_deref(), Some("FY001" | "40P01")))
}

/// The ids of the file records a batch's commit result replaces, as a
/// subquery: the ids in `$first` and the records at the spaces and paths
/// in `$first + 1` and `$first + 2`. Two index lookups (an `OR` of the two
/// would scan every file).
fn old_files(first: usize) -> String {
    format!(
        "SELECT unnest(${first}::text[]) UNION ALL SELECT f.id \
         FROM UNNEST(${}::text[], ${}::text[]) AS g(space, path) \
         JOIN files f ON f.space = g.space AND f.path = g.path",
        first + 1,
        first + 2
    )
}

/// What is at or around `path` for a query: the path with its ancestors
/// (exact matches), and the bounds of the paths below it.
fn around(path: &SpacePath) -> (Vec<&str>, String, String) {
    let mut exact: Vec<&str> = path.ancestors().collect();
    exact.push(path.as_str());
    let (lo, hi) = below(path.as_str());
    (exact, lo, hi)
}

/// Binds the 7 arguments of `ferry_path_free` that check `path` in `space`
/// for `upload` (the space's turn, the space, the path's locks and the
/// range below it, the upload the check leaves out).
fn bind_path_free<'q>(
    q: Query<'q>,
    space: &'q SpaceName,
    path: &'q SpacePath,
    upload: &'q str,
) -> Query<'q> {
    let (exact, lo, hi) = around(path);
    q.bind(TURN_LOCK)
        .bind(crate::namespace_turn(space))
        .bind(space.as_str())
        .bind(exact)
        .bind(lo)
        .bind(hi)
        .bind(upload)
}

/// The uploads being committed at or around a path (`$1` space, `$2`
/// the path and its ancestors, `$3`..`$4` the paths below it), after
/// `FROM uploads u JOIN sessions s ON s.id = u.session_id`.
const HEADING: &str = "WHERE u.state = 'committing' AND s.space = $1 \
    AND (u.final_path = ANY($2) OR (u.final_path >= $3 AND u.final_path < $4))";

/// What occupies `path`, from [`Postgres::around_rows`]'s `f` and `b` rows.
fn occupant_of(rows: &[PgRow], path: &SpacePath) -> Result<Option<Occupant>> {
    let mut found = Vec::new();
    let mut folder = false;
    for r in rows {
        match get::<&str>(r, 14)? {
            "b" => folder = true,
            "f" => found.push(file_row(r)?),
            _ => {}
        }
    }
    if let Some(k) = found.iter().position(|f| f.path == *path) {
        return Ok(Some(Occupant::File(Box::new(found.swap_remove(k)))));
    }
    // The shortest ancestor that is a file.
    if let Some(f) = found.into_iter().min_by_key(|f| f.path.as_str().len()) {
        return Ok(Some(Occupant::FileAncestor(f.path)));
    }
    Ok(folder.then_some(Occupant::Folder))
}

/// Maps a unique violation to `exists`, anything else as [`db`] does.
fn unique(exists: impl FnOnce() -> MetaError) -> impl FnOnce(sqlx::Error) -> MetaError {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => exists(),
        _ => db(e),
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> MetaError {
    MetaError::backend(format!("bad {what}: {e}"))
}

// ---- row mapping

/// Hook events as columns, for a statement that writes them to the
/// outbox (due when they happened) next to the change they report.
struct EventCols<'a> {
    ids: Vec<&'a str>,
    keys: Vec<&'a str>,
    bodies: Vec<&'a str>,
    at: Vec<i64>,
}

impl<'a> EventCols<'a> {
    fn new(events: &'a [OutboxEvent]) -> EventCols<'a> {
        EventCols {
            ids: events.iter().map(|e| e.id.as_str()).collect(),
            keys: events.iter().map(|e| e.key.as_str()).collect(),
            bodies: events.iter().map(|e| e.body.as_str()).collect(),
            at: events.iter().map(|e| e.created_at).collect(),
        }
    }

    /// The insert, its arguments numbered from `first` (four of them).
    fn insert_sql(first: usize) -> String {
        Self::insert_sql_when(first, "TRUE")
    }

    /// [`EventCols::insert_sql`] of the events, if `cond` holds.
    fn insert_sql_when(first: usize, cond: &str) -> String {
        format!(
            "INSERT INTO hook_outbox (id, key, body, due_at, created_at) \
             SELECT i, k, b, t, t FROM UNNEST(${first}::text[], ${}::text[], ${}::text[], \
             ${}::bigint[]) WITH ORDINALITY AS e(i, k, b, t, n) WHERE {cond} ORDER BY n",
            first + 1,
            first + 2,
            first + 3
        )
    }

    /// `, ev AS (…)`: the insert as one more of a statement's queries,
    /// if `cond` holds; nothing when there are no events (a query that
    /// inserts no row still has its start-up cost at every call: the
    /// outbox and its index opened and locked). Its arguments are bound
    /// either way.
    fn cte_when(&self, first: usize, cond: &str) -> String {
        match self.ids.is_empty() {
            true => String::new(),
            false => format!(", ev AS ({})", Self::insert_sql_when(first, cond)),
        }
    }

    fn bind<'q>(&'q self, q: Query<'q>) -> Query<'q> {
        q.bind(&self.ids)
            .bind(&self.keys)
            .bind(&self.bodies)
            .bind(&self.at)
    }
}

/// The settling query of a commit's statement (`l`) that has no session
/// to settle: a constant, not a call.
const SETTLES_NONE: &str = "SELECT NULL::text AS ended";

/// The query of a commit's statement that ends its leases (`rl`, rows of
/// `key, waited`): `delete`, or a constant when it ends none (a delete
/// that finds nothing still opens and locks the table and its indexes at
/// every call).
fn releases<'a>(tokens: &[String], delete: &'a str) -> &'a str {
    match tokens.is_empty() {
        true => "SELECT NULL::text AS key, false AS waited WHERE false",
        false => delete,
    }
}

/// Writes hook events to the outbox in `tx`.
async fn insert_events(
    tx: &mut sqlx::Transaction<'static, Pg>,
    events: &[OutboxEvent],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let cols = EventCols::new(events);
    cols.bind(sqlx::query(&EventCols::insert_sql(1)))
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

fn get<'r, T>(row: &'r PgRow, k: usize) -> Result<T>
where
    T: sqlx::Decode<'r, Pg> + sqlx::Type<Pg>,
{
    row.try_get(k).map_err(db)
}

fn parse<T: FromStr<Err = String>>(s: &str) -> Result<T> {
    s.parse().map_err(|e: String| corrupt("enum", e))
}

fn space_name(s: &str) -> Result<SpaceName> {
    SpaceName::parse(s).map_err(|e| corrupt("space name", e))
}

fn space_path(s: &str) -> Result<SpacePath> {
    SpacePath::parse_stored(s).map_err(|e| corrupt("path", e))
}

fn u(v: i64) -> u64 {
    v as u64
}

fn i(v: u64) -> i64 {
    v as i64
}

/// A limit or a sum for SQL arithmetic: past `i64::MAX` it is unlimited.
fn saturated(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const USER_COLS: &str = "name, admin, quota_bytes, max_open_sessions, home_space, created_at";
fn user_row(r: &PgRow) -> Result<User> {
    Ok(User {
        name: get(r, 0)?,
        admin: get(r, 1)?,
        quota_bytes: get::<Option<i64>>(r, 2)?.map(u),
        max_open_sessions: get::<Option<i64>>(r, 3)?
            .map(|n| u32::try_from(n).map_err(|e| corrupt("max_open_sessions", e)))
            .transpose()?,
        home_space: space_name(get(r, 4)?)?,
        created_at: get(r, 5)?,
    })
}

/// A space from `owner, created_at, users[], accesses[]` at `at`.
fn space_row(name: SpaceName, r: &PgRow, at: usize) -> Result<SpaceRecord> {
    let users = get::<Option<Vec<String>>>(r, at + 2)?.unwrap_or_default();
    let access = get::<Option<Vec<String>>>(r, at + 3)?.unwrap_or_default();
    let members = users
        .into_iter()
        .zip(access)
        .map(|(user, a)| Ok((user, parse::<Access>(&a)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(SpaceRecord {
        name,
        owner: get(r, at)?,
        members,
        created_at: get(r, at + 1)?,
    })
}

fn token_row(r: &PgRow) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: get(r, 0)?,
        user: get(r, 1)?,
        secret_hash: get(r, 2)?,
        created_at: get(r, 3)?,
        revoked: get(r, 4)?,
    })
}

const SESSION_COLS: &str = "id, owner, space, conflict, auto_commit, state, created_at, \
     expires_at, dialect, extend_secs, open_ended, files_expire, failure";
const SESSION_TYPES: &[&str] = &[
    "text", "text", "text", "text", "boolean", "text", "bigint", "bigint", "text", "bigint",
    "boolean", "boolean", "text",
];
fn session_row(r: &PgRow) -> Result<Session> {
    session_row_at(r, 0)
}

/// The columns [`session_row_at`] reads ([`SESSION_COLS`]).
const SESSION_COLUMNS: usize = 13;

/// A session from the columns of `r` from `o` on ([`SESSION_COLS`]).
fn session_row_at(r: &PgRow, o: usize) -> Result<Session> {
    Ok(Session {
        id: get(r, o)?,
        owner: get(r, o + 1)?,
        space: space_name(get(r, o + 2)?)?,
        conflict: get::<&str>(r, o + 3)?
            .parse::<ConflictPolicy>()
            .map_err(|e| corrupt("conflict", e))?,
        auto_commit: get(r, o + 4)?,
        state: parse(get(r, o + 5)?)?,
        created_at: get(r, o + 6)?,
        expires_at: get(r, o + 7)?,
        dialect: get(r, o + 8)?,
        extend_secs: get::<Option<i64>>(r, o + 9)?.map(u),
        open_ended: get(r, o + 10)?,
        files_expire: get(r, o + 11)?,
        failure: get(r, o + 12)?,
    })
}

const UPLOAD_COLS: &str = "id, session_id, path, length, part_size, state, expected_sha256, \
    content_type, metadata, final_path, file_id, whole_digests, replaces, dialect_state, direct";
const UPLOAD_TYPES: &[&str] = &[
    "bigint", "text", "text", "text", "bigint", "bigint", "text", "text", "text", "text", "text",
    "text", "text", "text", "text", "boolean",
];
/// The columns [`UPLOAD_SELECT`] answers: the view `upload_rows`
/// (migration 13), an upload with its ranges, parts and `sealed` (then
/// `idx`, not read).
const UPLOAD_COLUMNS: usize = 25;
/// Uploads with their ranges and parts, in one query (`WHERE` follows).
const UPLOAD_SELECT: &str = "SELECT * FROM upload_rows u";
fn upload_row(r: &PgRow) -> Result<Upload> {
    upload_row_at(r, 0)
}

/// An upload from the columns of `r` from `o` on ([`UPLOAD_SELECT`]'s).
fn upload_row_at(r: &PgRow, o: usize) -> Result<Upload> {
    let (sealed, object) = match get::<Option<&str>>(r, o + 23)? {
        Some(t) => crate::split_sealed(t).ok_or_else(|| corrupt("sealed", t))?,
        None => (Vec::new(), None),
    };
    let mut up = Upload {
        id: get(r, o)?,
        session_id: get(r, o + 1)?,
        path: space_path(get(r, o + 2)?)?,
        length: match get::<Option<i64>>(r, o + 3)? {
            Some(n) => Length::Known(u(n)),
            None => Length::Deferred,
        },
        part_size: u(get(r, o + 4)?),
        state: parse(get(r, o + 5)?)?,
        expected_sha256: get(r, o + 6)?,
        content_type: get(r, o + 7)?,
        metadata: get(r, o + 8)?,
        received: RangeSet::new(),
        parts: BTreeMap::new(),
        final_path: get::<Option<&str>>(r, o + 9)?.map(space_path).transpose()?,
        file_id: get(r, o + 10)?,
        whole_digests: get::<Option<&str>>(r, o + 11)?
            .unwrap_or_default()
            .split(',')
            .filter(|n| !n.is_empty())
            .map(|n| DigestAlgo::from_name(n).ok_or_else(|| corrupt("whole_digests", n)))
            .collect::<Result<_>>()?,
        replaces: get(r, o + 12)?,
        dialect_state: get(r, o + 13)?,
        direct: get(r, o + 14)?,
        sealed,
        object,
    };
    let starts = get::<Option<Vec<i64>>>(r, o + 15)?.unwrap_or_default();
    let ends = get::<Option<Vec<i64>>>(r, o + 16)?.unwrap_or_default();
    for (a, b) in starts.into_iter().zip(ends) {
        if let Some(range) = ByteRange::new(u(a), u(b)) {
            up.received.insert(range);
        }
    }
    let numbers = get::<Option<Vec<i64>>>(r, o + 17)?.unwrap_or_default();
    let offsets = get::<Option<Vec<i64>>>(r, o + 18)?.unwrap_or_default();
    let sizes = get::<Option<Vec<i64>>>(r, o + 19)?.unwrap_or_default();
    let sha256s = get::<Option<Vec<Option<String>>>>(r, o + 20)?.unwrap_or_default();
    let sha1s = get::<Option<Vec<Option<String>>>>(r, o + 21)?.unwrap_or_default();
    let md5s = get::<Option<Vec<Option<String>>>>(r, o + 22)?.unwrap_or_default();
    if [
        offsets.len(),
        sizes.len(),
        sha256s.len(),
        sha1s.len(),
        md5s.len(),
    ]
    .iter()
    .any(|&n| n != numbers.len())
    {
        return Err(corrupt("parts", "columns of unequal length"));
    }
    for (k, number) in numbers.into_iter().enumerate() {
        let number = u32::try_from(number).map_err(|e| corrupt("part number", e))?;
        up.parts.insert(
            number,
            Part {
                number,
                offset: u(offsets[k]),
                size: u(sizes[k]),
                sha256: sha256s[k].clone(),
                sha1: sha1s[k].clone(),
                md5: md5s[k].clone(),
            },
        );
    }
    Ok(up)
}

const FILE_COLS: &str = "id, space, path, size, sha256, sha1, md5, content_type, owner, \
    created_at, metadata, expires_at, dialect_state, object";
/// How a file record takes the path of one another node put there meanwhile.
const FILE_UPSERT: &str = "ON CONFLICT (space, path) DO UPDATE SET id = EXCLUDED.id, \
    size = EXCLUDED.size, sha256 = EXCLUDED.sha256, sha1 = EXCLUDED.sha1, md5 = EXCLUDED.md5, \
    content_type = EXCLUDED.content_type, owner = EXCLUDED.owner, \
    created_at = EXCLUDED.created_at, metadata = EXCLUDED.metadata, \
    expires_at = EXCLUDED.expires_at, dialect_state = EXCLUDED.dialect_state, \
    object = EXCLUDED.object";
const FILE_TYPES: &[&str] = &[
    "text", "text", "text", "bigint", "text", "text", "text", "text", "text", "bigint", "text",
    "bigint", "text", "text",
];
fn file_row(r: &PgRow) -> Result<FileRecord> {
    Ok(FileRecord {
        id: get(r, 0)?,
        space: space_name(get(r, 1)?)?,
        path: space_path(get(r, 2)?)?,
        size: u(get(r, 3)?),
        sha256: get(r, 4)?,
        sha1: get(r, 5)?,
        md5: get(r, 6)?,
        content_type: get(r, 7)?,
        owner: get(r, 8)?,
        created_at: get(r, 9)?,
        metadata: get(r, 10)?,
        expires_at: get(r, 11)?,
        dialect_state: get(r, 12)?,
        object: get(r, 13)?,
    })
}

// ---- batches of rows, bound as arrays

type Query<'q> = sqlx::query::Query<'q, Pg, PgArguments>;

/// `UNNEST($first::t0[], $first+1::t1[], ...)`.
fn unnest(first: usize, types: &[&str]) -> String {
    let args: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(k, t)| format!("${}::{t}[]", first + k))
        .collect();
    format!("UNNEST({})", args.join(", "))
}

#[derive(Default)]
struct SessionCols {
    id: Vec<String>,
    owner: Vec<String>,
    space: Vec<String>,
    conflict: Vec<String>,
    auto_commit: Vec<bool>,
    state: Vec<String>,
    created_at: Vec<i64>,
    expires_at: Vec<i64>,
    dialect: Vec<String>,
    extend_secs: Vec<Option<i64>>,
    open_ended: Vec<bool>,
    files_expire: Vec<bool>,
    failure: Vec<Option<String>>,
}

impl SessionCols {
    fn push(&mut self, s: &Session) {
        self.id.push(s.id.clone());
        self.owner.push(s.owner.clone());
        self.space.push(s.space.as_str().to_owned());
        self.conflict.push(s.conflict.as_str().to_owned());
        self.auto_commit.push(s.auto_commit);
        self.state.push(s.state.as_str().to_owned());
        self.created_at.push(s.created_at);
        self.expires_at.push(s.expires_at);
        self.dialect.push(s.dialect.clone());
        self.extend_secs.push(s.extend_secs.map(i));
        self.open_ended.push(s.open_ended);
        self.files_expire.push(s.files_expire);
        self.failure.push(s.failure.clone());
    }

    fn bind(self, q: Query<'_>) -> Query<'_> {
        q.bind(self.id)
            .bind(self.owner)
            .bind(self.space)
            .bind(self.conflict)
            .bind(self.auto_commit)
            .bind(self.state)
            .bind(self.created_at)
            .bind(self.expires_at)
            .bind(self.dialect)
            .bind(self.extend_secs)
            .bind(self.open_ended)
            .bind(self.files_expire)
            .bind(self.failure)
    }
}

#[derive(Default)]
struct UploadCols {
    idx: Vec<i64>,
    id: Vec<String>,
    session_id: Vec<String>,
    path: Vec<String>,
    length: Vec<Option<i64>>,
    part_size: Vec<i64>,
    state: Vec<String>,
    expected_sha256: Vec<Option<String>>,
    content_type: Vec<Option<String>>,
    metadata: Vec<Option<String>>,
    final_path: Vec<Option<String>>,
    file_id: Vec<Option<String>>,
    whole_digests: Vec<Option<String>>,
    replaces: Vec<Option<String>>,
    dialect_state: Vec<Option<String>>,
    direct: Vec<bool>,
}

impl UploadCols {
    /// The uploads with indexes from `first`.
    fn of(first: i64, ups: &[Upload]) -> UploadCols {
        let mut c = UploadCols::default();
        for (k, up) in ups.iter().enumerate() {
            c.push(first + k as i64, up);
        }
        c
    }

    fn push(&mut self, idx: i64, up: &Upload) {
        self.idx.push(idx);
        self.id.push(up.id.clone());
        self.session_id.push(up.session_id.clone());
        self.path.push(up.path.as_str().to_owned());
        self.length.push(up.length.known().map(i));
        self.part_size.push(i(up.part_size));
        self.state.push(up.state.as_str().to_owned());
        self.expected_sha256.push(up.expected_sha256.clone());
        self.content_type.push(up.content_type.clone());
        self.metadata.push(up.metadata.clone());
        self.final_path
            .push(up.final_path.as_ref().map(|p| p.as_str().to_owned()));
        self.file_id.push(up.file_id.clone());
        self.whole_digests
            .push((!up.whole_digests.is_empty()).then(|| {
                up.whole_digests
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>()
                    .join(",")
            }));
        self.replaces.push(up.replaces.clone());
        self.dialect_state.push(up.dialect_state.clone());
        self.direct.push(up.direct);
    }

    fn bind(self, q: Query<'_>) -> Query<'_> {
        q.bind(self.idx)
            .bind(self.id)
            .bind(self.session_id)
            .bind(self.path)
            .bind(self.length)
            .bind(self.part_size)
            .bind(self.state)
            .bind(self.expected_sha256)
            .bind(self.content_type)
            .bind(self.metadata)
            .bind(self.final_path)
            .bind(self.file_id)
            .bind(self.whole_digests)
            .bind(self.replaces)
            .bind(self.dialect_state)
            .bind(self.direct)
    }
}

/// `INSERT INTO uploads` from the [`UploadCols`] bound from `$first`,
/// their indexes counted from `base` (an SQL expression).
fn insert_uploads_sql(first: usize, base: &str) -> String {
    let cols: Vec<String> = (0..UPLOAD_TYPES.len()).map(|k| format!("c{k}")).collect();
    format!(
        "INSERT INTO uploads (idx, {UPLOAD_COLS}) SELECT {base} + x.{} FROM {} AS x({})",
        cols.join(", x."),
        unnest(first, UPLOAD_TYPES),
        cols.join(", ")
    )
}

/// The next index of the session `$1`'s uploads.
const NEXT_IDX: &str = "(SELECT COALESCE(MAX(idx) + 1, 0) FROM uploads WHERE session_id = $1)";

#[derive(Default)]
struct FileCols {
    id: Vec<String>,
    space: Vec<String>,
    path: Vec<String>,
    size: Vec<i64>,
    sha256: Vec<String>,
    sha1: Vec<Option<String>>,
    md5: Vec<Option<String>>,
    content_type: Vec<Option<String>>,
    owner: Vec<String>,
    created_at: Vec<i64>,
    metadata: Vec<Option<String>>,
    expires_at: Vec<Option<i64>>,
    dialect_state: Vec<Option<String>>,
    object: Vec<Option<String>>,
}

impl FileCols {
    fn push(&mut self, f: &FileRecord) {
        self.id.push(f.id.clone());
        self.space.push(f.space.as_str().to_owned());
        self.path.push(f.path.as_str().to_owned());
        self.size.push(i(f.size));
        self.sha256.push(f.sha256.clone());
        self.sha1.push(f.sha1.clone());
        self.md5.push(f.md5.clone());
        self.content_type.push(f.content_type.clone());
        self.owner.push(f.owner.clone());
        self.created_at.push(f.created_at);
        self.metadata.push(f.metadata.clone());
        self.expires_at.push(f.expires_at);
        self.dialect_state.push(f.dialect_state.clone());
        self.object.push(f.object.clone());
    }

    fn bind(self, q: Query<'_>) -> Query<'_> {
        q.bind(self.id)
            .bind(self.space)
            .bind(self.path)
            .bind(self.size)
            .bind(self.sha256)
            .bind(self.sha1)
            .bind(self.md5)
            .bind(self.content_type)
            .bind(self.owner)
            .bind(self.created_at)
            .bind(self.metadata)
            .bind(self.expires_at)
            .bind(self.dialect_state)
            .bind(self.object)
    }
}

/// Inserts sessions, their uploads (indexes from 0) and `events` in one
/// statement; with `limits`, the same statement takes the owner's turn and
/// checks them (`ferry_owner_limits`), and a refusal undoes it all.
async fn insert_sessions(
    c: &mut PgConnection,
    all: &[(Session, Vec<Upload>)],
    events: &[OutboxEvent],
    limits: Option<CreateLimits>,
    turns: Option<(&[String], i32)>,
) -> Result<std::result::Result<Vec<String>, LimitRefusal>> {
    let mut sessions = SessionCols::default();
    let mut uploads = UploadCols::default();
    for (s, ups) in all {
        sessions.push(s);
        for (k, up) in ups.iter().enumerate() {
            uploads.push(k as i64, up);
        }
    }
    let first_upload = 1 + SESSION_TYPES.len();
    debug_assert_eq!(first_upload + UPLOAD_TYPES.len(), 30);
    let events = EventCols::new(events);
    let then = match limits {
        None => "SELECT TRUE",
        Some(_) => "SELECT ferry_owner_limits($34, $35, $36, $37, $38, $39)",
    };
    // The turns leased with the sessions (keys, this node: the parameters
    // after the limits'), answered as "key token" (a key has no space).
    let k = if limits.is_some() { 40 } else { 34 };
    let (leases, leased) = match turns {
        Some(_) => (
            format!(
                ", l AS (INSERT INTO leases (token, key, lo, hi, kind, node) \
                 SELECT gen_random_uuid()::text, k, 0, {}, 'turn', ${} \
                 FROM unnest(${k}::text[]) k RETURNING key || ' ' || token AS held)",
                i64::MAX,
                k + 1
            ),
            ", ARRAY(SELECT held FROM l)",
        ),
        None => (String::new(), ""),
    };
    let sql = format!(
        "WITH s AS (INSERT INTO sessions ({SESSION_COLS}) SELECT * FROM {}), ins AS ({}){}\
         {leases} {then}{leased}",
        unnest(1, SESSION_TYPES),
        insert_uploads_sql(first_upload, "0"),
        events.cte_when(30, "TRUE"),
    );
    let owner = all.first().map(|(s, _)| s.owner.as_str());
    let ids: Vec<&str> = all.iter().map(|(s, _)| s.id.as_str()).collect();
    let more: u64 = all
        .iter()
        .flat_map(|(_, ups)| ups.iter().filter_map(|u| u.length.known()))
        .sum();
    let mut q = events.bind(uploads.bind(sessions.bind(sqlx::query(&sql))));
    if let Some(l) = limits {
        q = q
            .bind(owner)
            .bind(&ids)
            .bind(all.len() as i64)
            .bind(saturated(l.max_open_sessions))
            .bind(saturated(more))
            .bind(l.quota_bytes.map(saturated));
    }
    if let Some((keys, node)) = turns {
        q = q.bind(keys).bind(node);
    }
    match q.fetch_one(c).await {
        Ok(row) if turns.is_some() => {
            let held: Vec<String> = get(&row, 1)?;
            let mut by_key: HashMap<&str, &str> =
                held.iter().filter_map(|h| h.rsplit_once(' ')).collect();
            let keys = turns.map(|(k, _)| k).unwrap_or_default();
            let tokens = keys
                .iter()
                .map(|k| by_key.remove(k.as_str()).map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| corrupt("leases of new sessions", "a key missing"))?;
            Ok(Ok(tokens))
        }
        Ok(_) => Ok(Ok(Vec::new())),
        Err(e) => match limit_refused(&e, more) {
            Some(refused) => Ok(Err(refused)),
            None => Err(db(e)),
        },
    }
}

/// The refusal `ferry_owner_limits` raised (FY002: "sessions <open>" or
/// "quota <used>"), if `e` is one; `more`: the bytes the creation asked for.
fn limit_refused(e: &sqlx::Error, more: u64) -> Option<LimitRefusal> {
    let sqlx::Error::Database(d) = e else {
        return None;
    };
    if d.code().as_deref() != Some("FY002") {
        return None;
    }
    let (what, n) = d.message().split_once(' ').unwrap_or_default();
    let n: u64 = n.parse().unwrap_or_default();
    Some(match what {
        "sessions" => LimitRefusal::TooManySessions { open: n },
        _ => LimitRefusal::OverQuota { used: n, more },
    })
}

/// [`MetaStore::create_committed`] in one statement: the path checked
/// under its locks (`ferry_path_free`, as a commit checks it), then, when
/// it is free, the owner's limits under the owner's turn
/// (`ferry_owner_limits`, as a creation checks them), then the session,
/// the upload, the file and the events inserted, each in its final
/// state. Each insert waits for the limits' answer: a row inserted before
/// the count could be counted. `false` when the path is not free, or the
/// locks were had only after `budget` (nothing inserted).
async fn insert_committed(
    c: &mut PgConnection,
    session: &Session,
    upload: &Upload,
    done: &Committed,
    limits: CreateLimits,
    events: &[OutboxEvent],
    budget: Duration,
) -> Result<std::result::Result<bool, LimitRefusal>> {
    let mut sessions = SessionCols::default();
    sessions.push(session);
    let mut uploads = UploadCols::default();
    uploads.push(0, upload);
    let mut files = FileCols::default();
    files.push(&done.file);
    let events = EventCols::new(events);
    let first_upload = 1 + SESSION_TYPES.len();
    debug_assert_eq!(first_upload + UPLOAD_TYPES.len(), 30);
    let first_file = 34;
    debug_assert_eq!(first_file + FILE_TYPES.len(), 48);
    let ok = "(SELECT ok FROM lim)";
    // The budget is checked once both functions had their locks.
    let sql = format!(
        "WITH f AS (SELECT ferry_path_free($54, $55, $56, $57, $58, $59, $60) AS free), \
         lim AS (SELECT CASE WHEN ferry_owner_limits($48, $49, $50, $51, $52, $53) \
            THEN clock_timestamp() < statement_timestamp() + $61 * interval '1 microsecond' \
            ELSE false END AS ok FROM f WHERE free), \
         s AS (INSERT INTO sessions ({SESSION_COLS}) SELECT * FROM {} WHERE {ok}), \
         ins AS ({} WHERE {ok}), \
         fi AS (INSERT INTO files ({FILE_COLS}) SELECT * FROM {} WHERE {ok}){} \
         SELECT COALESCE({ok}, false)",
        unnest(1, SESSION_TYPES),
        insert_uploads_sql(first_upload, "0"),
        unnest(first_file, FILE_TYPES),
        events.cte_when(30, ok),
    );
    let more = upload.length.known().unwrap_or(0);
    let q = events.bind(uploads.bind(sessions.bind(sqlx::query(&sql))));
    let q = files
        .bind(q)
        .bind(session.owner.as_str())
        .bind([session.id.as_str()])
        .bind(1i64)
        .bind(saturated(limits.max_open_sessions))
        .bind(saturated(more))
        .bind(limits.quota_bytes.map(saturated));
    let row = bind_path_free(q, &session.space, &done.final_path, &upload.id)
        .bind(i64::try_from(budget.as_micros()).unwrap_or(i64::MAX))
        .fetch_one(c)
        .await;
    match row {
        Ok(row) => Ok(Ok(get::<bool>(&row, 0)?)),
        Err(e) => match limit_refused(&e, more) {
            Some(refused) => Ok(Err(refused)),
            None => Err(db(e)),
        },
    }
}

// ---- locks and the lifecycle

/// The locked session of a transaction.
struct LockedSession {
    id: String,
    state: SessionState,
    open_ended: bool,
}

/// Locks the session (if given) and then the uploads, in id order, for
/// the rest of the transaction, and reads their states. Uploads that do
/// not exist are left out (as are sessions).
async fn lock(
    c: &mut PgConnection,
    session: Option<&str>,
    uploads: &[String],
) -> Result<(Option<LockedSession>, HashMap<String, UploadState>)> {
    let rows = sqlx::query(
        "WITH s AS MATERIALIZED (SELECT id, state, open_ended FROM sessions WHERE id = $1 FOR UPDATE), \
         u AS MATERIALIZED (SELECT id, state FROM uploads WHERE id = ANY($2) ORDER BY id FOR UPDATE) \
         SELECT TRUE, id, state, open_ended FROM s \
         UNION ALL SELECT FALSE, id, state, FALSE FROM u",
    )
    .bind(session)
    .bind(uploads)
    .fetch_all(c)
    .await
    .map_err(db)?;
    let mut locked = None;
    let mut states = HashMap::new();
    for r in &rows {
        let id: String = get(r, 1)?;
        if get::<bool>(r, 0)? {
            locked = Some(LockedSession {
                id,
                state: parse(get(r, 2)?)?,
                open_ended: get(r, 3)?,
            });
        } else {
            states.insert(id, parse::<UploadState>(get(r, 2)?)?);
        }
    }
    Ok((locked, states))
}

/// Locks one session row for the rest of the transaction.
async fn lock_session(c: &mut PgConnection, id: &str) -> Result<()> {
    sqlx::query("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(c)
        .await
        .map_err(db)?;
    Ok(())
}

/// Checks an upload's state change against the core's lifecycle and
/// records it in `states`; an upload not there (none such) is let be.
fn check_upload(
    states: &mut HashMap<String, UploadState>,
    id: &str,
    to: UploadState,
) -> Result<bool> {
    match states.get_mut(id) {
        Some(from) => {
            *from = from.transition(to)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// How a transaction ends a session, decided once its rows are locked.
enum EndPlan {
    Keep,
    /// Set this state (whether or not the session exists, as SQLite).
    To(String, SessionState),
    /// Decide from the session's uploads after the change.
    IfSettled {
        id: String,
        open_ended: bool,
    },
}

/// Checks `end` against the locked session ([`SessionState::transition`]).
fn plan_end(end: SessionEnd<'_>, locked: Option<&LockedSession>) -> Result<EndPlan> {
    Ok(match end {
        SessionEnd::Keep => EndPlan::Keep,
        SessionEnd::To(id, to) => {
            if let Some(s) = locked {
                s.state.transition(to)?;
            }
            EndPlan::To(id.to_owned(), to)
        }
        SessionEnd::IfSettled(_) => match locked {
            Some(s) if s.state == SessionState::Open => EndPlan::IfSettled {
                id: s.id.clone(),
                open_ended: s.open_ended,
            },
            _ => EndPlan::Keep,
        },
    })
}

impl EndPlan {
    /// The session a statement sets (`$a`) and the state (`$b`).
    fn set(&self) -> (Option<&str>, Option<&str>) {
        match self {
            EndPlan::To(id, st) => (Some(id), Some(st.as_str())),
            _ => (None, None),
        }
    }

    /// The session whose uploads' states a statement reads back.
    fn settle(&self) -> Option<&str> {
        match self {
            EndPlan::IfSettled { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Finishes the end: `rows` are the (id, state) of the session's
    /// uploads read before this transaction's changes, `changed` the new
    /// states this transaction gave. Ends a settled session.
    async fn finish(
        self,
        c: &mut PgConnection,
        rows: &[PgRow],
        changed: &HashMap<String, UploadState>,
    ) -> Result<Option<SessionState>> {
        match self {
            EndPlan::Keep => Ok(None),
            EndPlan::To(_, st) => Ok(Some(st)),
            EndPlan::IfSettled { id, open_ended } => {
                let mut states = Vec::with_capacity(rows.len());
                for r in rows {
                    let up: &str = get(r, 0)?;
                    states.push(match changed.get(up) {
                        Some(st) => *st,
                        None => parse(get(r, 1)?)?,
                    });
                }
                let Some(to) = SessionState::settled(open_ended, states) else {
                    return Ok(None);
                };
                sqlx::query("UPDATE sessions SET state = $2 WHERE id = $1")
                    .bind(&id)
                    .bind(to.as_str())
                    .execute(c)
                    .await
                    .map_err(db)?;
                Ok(Some(to))
            }
        }
    }
}

impl Postgres {
    /// The rows of a claim of `key`, by `ferry_claim` under the key's lock
    /// and with a snapshot of its own, whose statement, once it is
    /// granted, claims `turn` (a subquery that runs only then, a claim
    /// of its own) and reads `of` through the function `read`
    /// (`ferry_upload_read`, `ferry_upload_state` or `ferry_session_read`:
    /// VOLATILE, so with a snapshot taken after the claim's): the claim's
    /// three columns, the turn's token, then the read's (in the order
    /// `read` answers them) and its row's number.
    #[allow(clippy::too_many_arguments)]
    async fn claim_reading(
        &self,
        read: Option<(&'static str, &str)>,
        key: &str,
        lo: u64,
        hi: u64,
        kind: LeaseKind,
        turn: Option<&str>,
    ) -> Result<Vec<PgRow>> {
        // The turn is claimed before the read (`tt`, which the read's
        // argument names: kept apart by `OFFSET 0`, it is not folded into
        // the answer's columns, which are made after the read): a dead
        // holder of the turn is fenced before the records are read.
        let reading = match read {
            Some((read, _)) => format!(
                ", r.* FROM ferry_claim($1, $2, $3, $4, $5) c
                 CROSS JOIN LATERAL ({TURN_IF_GRANTED} OFFSET 0) tt
                 LEFT JOIN LATERAL {read}(CASE WHEN c.granted AND tt.done THEN $8 END)
                   WITH ORDINALITY r ON TRUE
                 ORDER BY r.ordinality"
            ),
            None => format!(
                " FROM ferry_claim($1, $2, $3, $4, $5) c
                 CROSS JOIN LATERAL ({TURN_IF_GRANTED} OFFSET 0) tt"
            ),
        };
        let sql = format!("SELECT c.granted, c.token, c.kind, tt.turn{reading}");
        let mut q = sqlx::query(&sql)
            .bind(key)
            .bind(lo.min(i64::MAX as u64) as i64)
            .bind(hi.min(i64::MAX as u64) as i64)
            .bind(kind.as_str())
            .bind(self.node.load(std::sync::atomic::Ordering::Relaxed))
            .bind(turn)
            .bind(i64::MAX);
        if let Some((_, of)) = read {
            q = q.bind(of);
        }
        q.fetch_all(&self.pool).await.map_err(db)
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, Pg>> {
        self.pool.begin().await.map_err(db)
    }

    /// In one query: the files at `path` and its ancestors (kind `f`) and
    /// one below it (`b`); with `heading`, also the final paths of uploads
    /// being committed at or around it (`c`, in the `path` column). The
    /// kind is column 14, after [`FILE_COLS`].
    async fn around_rows(
        &self,
        space: &SpaceName,
        path: &SpacePath,
        heading: bool,
    ) -> Result<Vec<PgRow>> {
        let (exact, lo, hi) = around(path);
        let mut sql = format!(
            "SELECT {FILE_COLS}, 'f' FROM files WHERE space = $1 AND path = ANY($2) \
             UNION ALL (SELECT {FILE_COLS}, 'b' FROM files \
               WHERE space = $1 AND path >= $3 AND path < $4 LIMIT 1)"
        );
        if heading {
            sql.push_str(&format!(
                " UNION ALL SELECT NULL, NULL, u.final_path, NULL, NULL, NULL, NULL, NULL, \
                 NULL, NULL, NULL, NULL, NULL, NULL, 'c' \
                 FROM uploads u JOIN sessions s ON s.id = u.session_id {HEADING}"
            ));
        }
        sqlx::query(&sql)
            .bind(space.as_str())
            .bind(&exact)
            .bind(lo)
            .bind(hi)
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }

    /// `finish_commit` of one upload in one statement, a compare-and-set:
    /// the upload is expected `committing`, and a session given its end
    /// (a whole session's commit) `committing` too. The session's end,
    /// when the change may settle it, is `ferry_settle`'s (which locks the
    /// session first, as the locking path does). `None` when the upload was not
    /// `committing` (nothing changed): the caller takes the locking path,
    /// which says why.
    async fn finish_commit_at_once(
        &self,
        end: SessionEnd<'_>,
        done: &[Committed],
        events: &[OutboxEvent],
        release: &[String],
    ) -> Result<Option<Option<SessionState>>> {
        // The session settled by `ferry_settle`, or set from `committing`.
        let (settle, set) = match end {
            SessionEnd::Keep => (None, None),
            SessionEnd::IfSettled(id) => (Some(id), None),
            SessionEnd::To(id, to) => {
                if SessionState::Committing.transition(to).is_err() {
                    return Ok(None);
                }
                (None, Some((id, to)))
            }
        };
        let [d] = done else { return Ok(None) };
        if UploadState::Committing.transition(d.state).is_err() {
            return Ok(None);
        }
        let mut cols = FileCols::default();
        // The records the file replaces: the one with its id, the one at
        // its path.
        let mut gone: (Option<&str>, Option<&str>, Option<&str>) = Default::default();
        if d.state == UploadState::Committed {
            let f = &d.file;
            cols.push(f);
            gone = (
                Some(f.id.as_str()),
                Some(f.space.as_str()),
                Some(f.path.as_str()),
            );
        }
        let events = EventCols::new(events);
        let settles = match settle {
            Some(_) => "SELECT ferry_settle($1, ARRAY[$2::text], ARRAY[$3::text]) AS ended",
            None => SETTLES_NONE,
        };
        let sql = format!(
            "WITH l AS ({settles}), \
             st AS (UPDATE sessions SET state = $28 WHERE id = $27 AND state = 'committing' \
                RETURNING 1), \
             up AS (UPDATE uploads SET state = $3, final_path = $4, file_id = $5 \
                WHERE id = $2 AND state = 'committing' AND (SELECT COUNT(*) FROM l) >= 0 \
                AND (SELECT COUNT(*) FROM st) >= 0 RETURNING 1), \
             di AS (DELETE FROM files WHERE (SELECT COUNT(*) FROM up) >= 0 \
                AND id = $24 RETURNING 1), \
             dp AS (DELETE FROM files WHERE (SELECT COUNT(*) FROM up) >= 0 \
                AND space = $25 AND path = $26 RETURNING 1), \
             ins AS (INSERT INTO files ({FILE_COLS}) SELECT * FROM {} \
                WHERE (SELECT COUNT(*) FROM di) + (SELECT COUNT(*) FROM dp) >= 0 \
                {FILE_UPSERT}), \
             r AS (DELETE FROM ranges WHERE upload_id = $2){}, \
             rl AS ({}) \
             SELECT ferry_expect((SELECT COUNT(*) FROM up) = 1 \
                AND (SELECT COUNT(*) FROM st) = $29), (SELECT ended FROM l), \
                (SELECT COUNT(pg_notify($31, 'released:' || key)) FROM rl WHERE waited)",
            unnest(6, FILE_TYPES),
            events.cte_when(20, "TRUE"),
            releases(
                release,
                "DELETE FROM leases WHERE token = ANY($30) RETURNING key, waited"
            ),
        );
        // Every read in it is by key (the records it replaces by their
        // id and by their path, not by a join PostgreSQL could plan as a
        // scan of `files`): its plan is made once per connection.
        let q = sqlx::query(&sql)
            .bind(settle)
            .bind(&d.upload_id)
            .bind(d.state.as_str())
            .bind(d.final_path.as_str())
            .bind(d.file.id.as_str());
        let row = events
            .bind(cols.bind(q))
            .bind(gone.0)
            .bind(gone.1)
            .bind(gone.2)
            .bind(set.map(|(id, _)| id))
            .bind(set.map(|(_, to)| to.as_str()))
            .bind(i64::from(set.is_some()))
            .bind(release)
            .bind(CHANGES_CHANNEL)
            .fetch_one(&self.pool)
            .await;
        match row {
            Ok(row) => Ok(Some(session_after(&row, 1, set)?)),
            Err(e) if changed_meanwhile(&e) => Ok(None),
            Err(e) => Err(db(e)),
        }
    }

    /// `finish_commit` as a locking transaction: the rows' states read
    /// and checked under their locks, so that what is wrong is said.
    async fn finish_commit_locking(
        &self,
        end: SessionEnd<'_>,
        done: &[Committed],
        events: &[OutboxEvent],
    ) -> Result<Option<SessionState>> {
        let mut tx = self.begin().await?;
        let session = match end {
            SessionEnd::Keep => None,
            SessionEnd::To(id, _) | SessionEnd::IfSettled(id) => Some(id),
        };
        let ids: Vec<String> = done.iter().map(|d| d.upload_id.clone()).collect();
        let (locked, mut states) = lock(&mut tx, session, &ids).await?;
        // Replays the outcomes in order, as SQLite applies them one by one:
        // a file replaces the record at its path and the record of its id.
        let mut files: Vec<&FileRecord> = Vec::new();
        // What the batch removes: the records at every path it writes and
        // of every id, even one a later outcome of the batch supersedes.
        let (mut gone_ids, mut gone_spaces, mut gone_paths) = (Vec::new(), Vec::new(), Vec::new());
        let mut updates: HashMap<&str, (&str, &str, &str)> = HashMap::new();
        let mut changed = HashMap::new();
        for d in done {
            if check_upload(&mut states, &d.upload_id, d.state)? {
                updates.insert(
                    &d.upload_id,
                    (d.state.as_str(), d.final_path.as_str(), d.file.id.as_str()),
                );
                changed.insert(d.upload_id.clone(), d.state);
            }
            if d.state == UploadState::Committed {
                let f = &d.file;
                gone_ids.push(f.id.as_str());
                gone_spaces.push(f.space.as_str());
                gone_paths.push(f.path.as_str());
                files.retain(|g| g.id != f.id && (g.space != f.space || g.path != f.path));
                files.push(f);
            }
        }
        let end = plan_end(end, locked.as_ref())?;
        let mut cols = FileCols::default();
        for f in files {
            cols.push(f);
        }
        let mut up_ids = Vec::new();
        let mut up_states = Vec::new();
        let mut up_paths = Vec::new();
        let mut up_files = Vec::new();
        for (id, (st, path, file)) in updates {
            up_ids.push(id);
            up_states.push(st);
            up_paths.push(path);
            up_files.push(file);
        }
        let (set_id, set_state) = end.set();
        // The old records go first (the insert reads `d`), so that a file
        // id moving to another path never meets itself. ON CONFLICT takes
        // a record another node put at the path meanwhile.
        let sql = format!(
            "WITH d AS (DELETE FROM files WHERE id IN ({}) RETURNING 1), \
             ins AS (INSERT INTO files ({FILE_COLS}) SELECT * FROM {} \
                WHERE (SELECT COUNT(*) FROM d) >= 0 {FILE_UPSERT}), \
             up AS (UPDATE uploads SET state = x.state, final_path = x.final_path, \
                file_id = x.file_id FROM UNNEST($18::text[], $19::text[], $20::text[], \
                $21::text[]) AS x(id, state, final_path, file_id) WHERE uploads.id = x.id), \
             r AS (DELETE FROM ranges WHERE upload_id = ANY($22)), \
             s AS (UPDATE sessions SET state = $2 WHERE id = $1) \
             SELECT id, state FROM uploads WHERE session_id = $3",
            old_files(23),
            unnest(4, FILE_TYPES)
        );
        let q = sqlx::query(&sql)
            .bind(set_id)
            .bind(set_state)
            .bind(end.settle());
        let rows = cols
            .bind(q)
            .bind(&up_ids)
            .bind(&up_states)
            .bind(&up_paths)
            .bind(&up_files)
            .bind(&ids)
            .bind(&gone_ids)
            .bind(&gone_spaces)
            .bind(&gone_paths)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        let ended = end.finish(&mut tx, &rows, &changed).await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(db)?;
        Ok(ended)
    }

    /// `begin_commit` of one upload in one statement, a compare-and-set:
    /// the session and the upload are expected `open` (the changes the
    /// core allows from there), and the session's row is changed before
    /// the upload's, in the locking path's order. `false` when they were
    /// not (nothing changed): the caller takes the locking path, which
    /// says why. Most commits are of one upload, in an open session.
    async fn begin_commit_at_once(
        &self,
        session: Option<&str>,
        plan: &[(String, SpacePath)],
        abort: &[String],
    ) -> Result<bool> {
        match intent_at_once(session, plan, abort) {
            Some(q) => {
                let mut c = self.pool.lend().await.map_err(db)?;
                let done = intent_in(q, &mut c).await?;
                c.ended();
                Ok(done)
            }
            None => Ok(false),
        }
    }

    /// `begin_commit_if_free` in one statement: the path checked under
    /// the space's turn (`ferry_path_free`), the upload (and `session`,
    /// when given) set `committing` from `open` (compare-and-sets) and
    /// `received` recorded. `false` when the path was taken or the upload
    /// or session not open (nothing changed).
    async fn intent_if_free(
        &self,
        session: Option<&str>,
        upload_id: &str,
        space: &SpaceName,
        path: &SpacePath,
        received: Option<ByteRange>,
    ) -> Result<bool> {
        if UploadState::Open
            .transition(UploadState::Committing)
            .is_err()
        {
            return Ok(false);
        }
        let q = sqlx::query(
            r#"WITH f AS (SELECT ferry_path_free($1, $2, $3, $4, $5, $6, $7) AS free),
             u AS (UPDATE uploads SET state = 'committing', final_path = $8
                WHERE id = $7 AND state = 'open' AND (SELECT free FROM f) RETURNING 1),
             r AS (INSERT INTO ranges (upload_id, start, "end")
                SELECT $7, $9, $10 WHERE $9 IS NOT NULL AND (SELECT COUNT(*) FROM u) = 1),
             s AS (UPDATE sessions SET state = 'committing'
                WHERE id = $11 AND state = 'open' AND (SELECT COUNT(*) FROM u) = 1 RETURNING 1)
             SELECT ferry_expect((SELECT COUNT(*) FROM u) = 1
                AND ($11::text IS NULL OR (SELECT COUNT(*) FROM s) = 1))"#,
        );
        let done = bind_path_free(q, space, path, upload_id)
            .bind(path.as_str())
            .bind(received.map(|r| i(r.start)))
            .bind(received.map(|r| i(r.end)))
            .bind(session)
            .execute(&self.pool)
            .await;
        match done {
            Ok(_) => Ok(true),
            Err(e) if changed_meanwhile(&e) => Ok(false),
            Err(e) => Err(db(e)),
        }
    }

    /// `commit_if_free` in one statement: the path checked under its
    /// locks (`ferry_path_free`, as `intent_if_free`), and when it is
    /// free, the upload set from `open` to its outcome, the session ended
    /// (from `open`: set, or settled by `ferry_settle`), the file
    /// inserted, the upload's ranges gone, the events written and the
    /// leases ended, each a compare-and-set. `None` when the path is taken
    /// (nothing changes) or the upload or session changed meanwhile (the
    /// statement fails and changes nothing).
    async fn commit_at_once(
        &self,
        end: SessionEnd<'_>,
        done: &Committed,
        events: &[OutboxEvent],
        release: &[String],
        gate: Option<&CommitGate>,
    ) -> Result<Option<Option<SessionState>>> {
        let (settle, set) = match end {
            SessionEnd::Keep => (None, None),
            SessionEnd::IfSettled(id) => (Some(id), None),
            SessionEnd::To(id, to) => {
                let through = SessionState::Open.transition(SessionState::Committing);
                if through.and_then(|s| s.transition(to)).is_err() {
                    return Ok(None);
                }
                (None, Some((id, to)))
            }
        };
        // The intent's transition and the result's, in one step.
        let through = UploadState::Open.transition(UploadState::Committing);
        if done.state != UploadState::Committed
            || through.and_then(|s| s.transition(done.state)).is_err()
        {
            return Ok(None);
        }
        let (space, path) = (&done.file.space, &done.final_path);
        let mut cols = FileCols::default();
        cols.push(&done.file);
        let events = EventCols::new(events);
        // The path is free (no record at it, above or below it, checked
        // under its locks) and the file's id new: a plain insert. A commit
        // that claimed nothing then checks that the records still say what
        // it worked from (`ferry_commit_ready`); else nothing changes. In
        // that order: the path's locks may be waited for (another commit
        // choosing its paths), the upload's and session's only tried, so
        // no claim of theirs waits behind this one's wait.
        // A gate whose write is recorded with the result checks the
        // upload as it was made instead (`ferry_write_commit_ready`), and
        // the result sets the write's sealed digests with its state.
        let open = " WHERE id = $7 AND state = 'open'";
        let (free, seal) = match gate {
            None => ("ferry_path_free($1, $2, $3, $4, $5, $6, $7)", open),
            Some(g) if g.with_write => (
                "CASE WHEN ferry_path_free($1, $2, $3, $4, $5, $6, $7) \
                 THEN ferry_write_commit_ready($35, $36, $7, $37, $39, $40, $41, $42) ELSE false END",
                ", sealed = $38 WHERE id = $7 AND state = 'open' AND NOT claimed AND sealed IS NULL",
            ),
            Some(_) => (
                "CASE WHEN ferry_path_free($1, $2, $3, $4, $5, $6, $7) \
                 THEN ferry_commit_ready($35, $36, $7, $37, $38, $39, $40, $41, $42) ELSE false END",
                open,
            ),
        };
        // (Its ranges, read afresh after those locks: a resend recorded
        // since the statement began is gone too.)
        // (A query that changes nothing runs when read: the answer reads
        // it.)
        let (forget, forgot) = match gate {
            None => (
                "DELETE FROM ranges WHERE upload_id = $7 AND (SELECT COUNT(*) FROM up) = 1",
                "0",
            ),
            // The write recorded with the result is the upload's only
            // one: its gate found no range under locks no claim gets
            // past until this statement ends.
            Some(g) if g.with_write => ("SELECT 1 WHERE false", "0"),
            Some(_) => (
                "SELECT ferry_delete_ranges($7) WHERE (SELECT COUNT(*) FROM up) = 1",
                "(SELECT COUNT(*) FROM r)",
            ),
        };
        let settles = match settle {
            Some(_) => {
                "SELECT ferry_settle(CASE WHEN (SELECT free FROM f) THEN $8 END, \
                 ARRAY[$7::text], ARRAY[$9::text]) AS ended"
            }
            None => SETTLES_NONE,
        };
        let sql = format!(
            "WITH f AS (SELECT {free} AS free), \
             l AS ({settles}), \
             st AS (UPDATE sessions SET state = $11 WHERE id = $10 AND state = 'open' \
                AND (SELECT free FROM f) RETURNING 1), \
             up AS (UPDATE uploads SET state = $9, final_path = $12, file_id = $13{seal} \
                AND (SELECT free FROM f) \
                AND (SELECT COUNT(*) FROM l) >= 0 AND (SELECT COUNT(*) FROM st) >= 0 \
                RETURNING 1), \
             ins AS (INSERT INTO files ({FILE_COLS}) SELECT * FROM {} \
                WHERE (SELECT COUNT(*) FROM up) = 1), \
             r AS ({forget}){}, \
             rl AS ({}) \
             SELECT (SELECT free FROM f), ferry_expect(NOT (SELECT free FROM f) \
                OR ((SELECT COUNT(*) FROM up) = 1 AND (SELECT COUNT(*) FROM st) = $14)), \
                (SELECT ended FROM l), \
                (SELECT COUNT(pg_notify($34, 'released:' || key)) FROM rl WHERE waited), \
                {forgot}",
            unnest(15, FILE_TYPES),
            events.cte_when(29, "(SELECT COUNT(*) FROM up) = 1"),
            releases(
                release,
                "DELETE FROM leases WHERE token = ANY($33) AND (SELECT COUNT(*) FROM up) = 1 \
                 RETURNING key, waited"
            ),
        );
        let q = bind_path_free(sqlx::query(&sql), space, path, &done.upload_id)
            .bind(settle)
            .bind(done.state.as_str())
            .bind(set.map(|(id, _)| id))
            .bind(set.map(|(_, to)| to.as_str()))
            .bind(path.as_str())
            .bind(done.file.id.as_str())
            .bind(i64::from(set.is_some()));
        let mut q = events
            .bind(cols.bind(q))
            .bind(release)
            .bind(CHANGES_CHANNEL);
        if let Some(g) = gate {
            q = q
                .bind(&g.turn)
                .bind(&g.session_id)
                .bind(g.whole)
                .bind(crate::join_sealed(&g.sealed, g.object.as_deref()))
                .bind(&g.metadata)
                .bind(&g.content_type)
                .bind(&g.dialect_state)
                .bind(g.expires_at);
        }
        let row = q.fetch_one(&self.pool).await;
        match row {
            Ok(row) => {
                if !get::<bool>(&row, 0)? {
                    return Ok(None);
                }
                Ok(Some(session_after(&row, 2, set)?))
            }
            Err(e) if changed_meanwhile(&e) => Ok(None),
            Err(e) => Err(db(e)),
        }
    }

    /// `record_write`, insert-only, in one statement; with `release`, the
    /// statement also ends that lease and announces it.
    async fn record(
        &self,
        upload_id: &str,
        range: ByteRange,
        part: Option<&Part>,
        sealed: &[Digest],
        release: Option<&str>,
    ) -> Result<()> {
        let mut sql = String::from(
            r#"WITH r AS (INSERT INTO ranges (upload_id, start, "end") VALUES ($1, $2, $3))"#,
        );
        let mut next = 4;
        if part.is_some() {
            sql.push_str(
                r#", p AS (INSERT INTO parts (upload_id, number, "offset", size, sha256, sha1, md5)
                   VALUES ($1, $4, $5, $6, $7, $8, $9)
                   ON CONFLICT (upload_id, number) DO UPDATE SET "offset" = EXCLUDED."offset",
                     size = EXCLUDED.size, sha256 = EXCLUDED.sha256, sha1 = EXCLUDED.sha1,
                     md5 = EXCLUDED.md5)"#,
            );
            next = 10;
        }
        let sealed = join_tagged(sealed);
        if sealed.is_some() {
            sql.push_str(&format!(
                ", z AS (UPDATE uploads SET sealed = ${next} WHERE id = $1)"
            ));
            next += 1;
        }
        match release {
            // Only while the lease is still this node's: one another node
            // took over (this node was presumed gone: its presence lapsed)
            // fails the statement, and nothing is recorded.
            Some(_) => sql.push_str(&format!(
                ", d AS (DELETE FROM leases WHERE token = ${next} RETURNING key, waited)
                 SELECT ferry_expect(EXISTS (SELECT 1 FROM d)),
                   (SELECT COUNT(pg_notify(${}, 'released:' || key)) FROM d WHERE waited)",
                next + 1
            )),
            None => sql.push_str(" SELECT 1"),
        }
        let mut q = sqlx::query(&sql)
            .bind(upload_id)
            .bind(i(range.start))
            .bind(i(range.end));
        if let Some(p) = part {
            q = q
                .bind(i64::from(p.number))
                .bind(i(p.offset))
                .bind(i(p.size))
                .bind(p.sha256.as_deref())
                .bind(p.sha1.as_deref())
                .bind(p.md5.as_deref());
        }
        if let Some(z) = &sealed {
            q = q.bind(z);
        }
        if let Some(token) = release {
            q = q.bind(token).bind(CHANGES_CHANNEL);
        }
        match q.execute(&self.pool).await {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("FY001") => {
                Err(MetaError::LeaseLost)
            }
            Err(e) => Err(db(e)),
        }
    }

    async fn uploads(&self, filter: &str, args: &[&str]) -> Result<Vec<Upload>> {
        let sql = format!("{UPLOAD_SELECT} WHERE {filter}");
        let mut q = sqlx::query(&sql);
        for a in args {
            q = q.bind(*a);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(upload_row).collect()
    }

    async fn one_file(&self, filter: &str, args: &[&str]) -> Result<Option<FileRecord>> {
        let sql = format!("SELECT {FILE_COLS} FROM files WHERE {filter} LIMIT 1");
        let mut q = sqlx::query(&sql);
        for a in args {
            q = q.bind(*a);
        }
        let row = q.fetch_optional(&self.pool).await.map_err(db)?;
        row.as_ref().map(file_row).transpose()
    }
}

#[async_trait::async_trait]
impl MetaStore for Postgres {
    async fn user_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(u(n))
    }

    async fn create_user(&self, user: &User) -> Result<()> {
        sqlx::query(&format!(
            "WITH u AS (INSERT INTO users ({USER_COLS}) VALUES ($1, $2, $3, $4, $5, $6)) \
             INSERT INTO spaces (name, owner, created_at) VALUES ($5, $1, $6)"
        ))
        .bind(&user.name)
        .bind(user.admin)
        .bind(user.quota_bytes.map(i))
        .bind(user.max_open_sessions.map(i64::from))
        .bind(user.home_space.as_str())
        .bind(user.created_at)
        .execute(&self.pool)
        .await
        .map_err(unique(|| {
            MetaError::AlreadyExists(Record::UserOrSpace(user.name.clone()))
        }))?;
        Ok(())
    }

    async fn get_user(&self, name: &str) -> Result<Option<User>> {
        let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(user_row).transpose()
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<()> {
        sqlx::query(
            r#"INSERT INTO tokens (id, "user", hash, created_at, revoked) VALUES ($1, $2, $3, $4, $5)"#,
        )
        .bind(&token.id)
        .bind(&token.user)
        .bind(&token.secret_hash)
        .bind(token.created_at)
        .bind(token.revoked)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(
            r#"SELECT id, "user", hash, created_at, revoked FROM tokens WHERE id = $1"#,
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(token_row).transpose()
    }

    async fn revoke_token(&self, id: &str) -> Result<bool> {
        // Announced with the change: every node's cache forgets the token.
        let done = sqlx::query(
            "WITH t AS (UPDATE tokens SET revoked = TRUE WHERE id = $1 RETURNING id)
             SELECT pg_notify($2, 'token:' || id) FROM t",
        )
        .bind(id)
        .bind(CHANGES_CHANNEL)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(!done.is_empty())
    }

    async fn create_space(&self, space: &SpaceRecord) -> Result<()> {
        // A member named twice keeps the last access (as SQLite's INSERT OR
        // REPLACE): one row each, or ON CONFLICT would meet a row twice.
        let mut members: Vec<(&str, &str)> = Vec::new();
        for (user, access) in &space.members {
            members.retain(|(u, _)| u != user);
            members.push((user, access.as_str()));
        }
        let (users, access): (Vec<&str>, Vec<&str>) = members.into_iter().unzip();
        sqlx::query(
            r#"WITH s AS (INSERT INTO spaces (name, owner, created_at) VALUES ($1, $2, $3) RETURNING name)
               INSERT INTO grants (space, "user", access)
               SELECT s.name, g.u, g.a FROM s, UNNEST($4::text[], $5::text[]) AS g(u, a)
               ON CONFLICT (space, "user") DO UPDATE SET access = EXCLUDED.access"#,
        )
        .bind(space.name.as_str())
        .bind(&space.owner)
        .bind(space.created_at)
        .bind(users)
        .bind(access)
        .execute(&self.pool)
        .await
        .map_err(unique(|| {
            MetaError::AlreadyExists(Record::Space(space.name.clone()))
        }))?;
        Ok(())
    }

    async fn get_space(&self, name: &SpaceName) -> Result<Option<SpaceRecord>> {
        let row = sqlx::query(
            r#"SELECT s.owner, s.created_at,
                 array_agg(g."user" ORDER BY g."user") FILTER (WHERE g."user" IS NOT NULL),
                 array_agg(g.access ORDER BY g."user") FILTER (WHERE g."user" IS NOT NULL)
               FROM spaces s LEFT JOIN grants g ON g.space = s.name
               WHERE s.name = $1 GROUP BY s.name, s.owner, s.created_at"#,
        )
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| space_row(name.clone(), &r, 0)).transpose()
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        sqlx::query(&format!("SELECT {USER_COLS} FROM users ORDER BY name"))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(user_row)
            .collect()
    }

    async fn set_user_limits(
        &self,
        name: &str,
        quota_bytes: Option<u64>,
        max_open_sessions: Option<u32>,
    ) -> Result<bool> {
        // Announced with the change: every node's cache forgets its users.
        let done = sqlx::query(
            "WITH u AS (UPDATE users SET quota_bytes = $2, max_open_sessions = $3 \
               WHERE name = $1 RETURNING name) \
             SELECT pg_notify($4, 'accounts:' || name) FROM u",
        )
        .bind(name)
        .bind(quota_bytes.map(i))
        .bind(max_open_sessions.map(i64::from))
        .bind(CHANGES_CHANNEL)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(!done.is_empty())
    }

    async fn list_tokens(&self, user: &str) -> Result<Vec<TokenRecord>> {
        sqlx::query(
            r#"SELECT id, "user", hash, created_at, revoked FROM tokens WHERE "user" = $1
               ORDER BY created_at, id"#,
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(token_row)
        .collect()
    }

    async fn list_spaces(&self) -> Result<Vec<SpaceRecord>> {
        let rows = sqlx::query(
            r#"SELECT s.name, s.owner, s.created_at,
                 array_agg(g."user" ORDER BY g."user") FILTER (WHERE g."user" IS NOT NULL),
                 array_agg(g.access ORDER BY g."user") FILTER (WHERE g."user" IS NOT NULL)
               FROM spaces s LEFT JOIN grants g ON g.space = s.name
               GROUP BY s.name, s.owner, s.created_at ORDER BY s.name"#,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| space_row(space_name(get(r, 0)?)?, r, 1))
            .collect()
    }

    async fn set_member(
        &self,
        space: &SpaceName,
        user: &str,
        access: Option<Access>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let found: Option<String> =
            sqlx::query_scalar("SELECT name FROM spaces WHERE name = $1 FOR UPDATE")
                .bind(space.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        if found.is_none() {
            return Ok(false);
        }
        match access {
            Some(a) => sqlx::query(
                r#"INSERT INTO grants (space, "user", access) VALUES ($1, $2, $3)
                   ON CONFLICT (space, "user") DO UPDATE SET access = EXCLUDED.access"#,
            )
            .bind(space.as_str())
            .bind(user)
            .bind(a.as_str()),
            None => sqlx::query(r#"DELETE FROM grants WHERE space = $1 AND "user" = $2"#)
                .bind(space.as_str())
                .bind(user),
        }
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("SELECT pg_notify($1, 'accounts:' || $2)")
            .bind(CHANGES_CHANNEL)
            .bind(space.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn create_session(&self, session: &Session, uploads: &[Upload]) -> Result<()> {
        // One statement: committed on its own.
        let mut c = self.pool.lend().await.map_err(db)?;
        let all = [(session.clone(), uploads.to_vec())];
        let inserted = insert_sessions(&mut c, &all, &[], None, None).await?;
        c.ended();
        inserted.map_err(|_| MetaError::backend("no limits were checked"))?;
        Ok(())
    }

    async fn create_sessions_reporting(
        &self,
        sessions: &[(Session, Vec<Upload>)],
        limits: CreateLimits,
        events: &[OutboxEvent],
    ) -> Result<Option<LimitRefusal>> {
        if sessions.is_empty() {
            return Ok(None);
        }
        // One statement, committed on its own: creations for one owner
        // take turns in it, and it counts after its turn comes.
        let mut c = self.pool.lend().await.map_err(db)?;
        let inserted = insert_sessions(&mut c, sessions, events, Some(limits), None).await?;
        c.ended();
        Ok(inserted.err())
    }

    async fn create_sessions_holding(
        &self,
        sessions: &[(Session, Vec<Upload>)],
        limits: CreateLimits,
        events: &[OutboxEvent],
        turns: &[String],
    ) -> Result<std::result::Result<Vec<String>, LimitRefusal>> {
        if sessions.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let node = self.node.load(std::sync::atomic::Ordering::Relaxed);
        let mut c = self.pool.lend().await.map_err(db)?;
        let inserted =
            insert_sessions(&mut c, sessions, events, Some(limits), Some((turns, node))).await?;
        c.ended();
        Ok(inserted)
    }

    async fn create_committed(
        &self,
        session: &Session,
        upload: &Upload,
        done: &Committed,
        limits: CreateLimits,
        events: &[OutboxEvent],
        deadline: std::time::Instant,
    ) -> Result<Option<std::result::Result<(), LimitRefusal>>> {
        let mut c = self.pool.lend().await.map_err(db)?;
        let budget = deadline.saturating_duration_since(std::time::Instant::now());
        if budget.is_zero() {
            c.ended();
            return Ok(None);
        }
        let inserted =
            insert_committed(&mut c, session, upload, done, limits, events, budget).await?;
        c.ended();
        Ok(match inserted {
            Ok(true) => Some(Ok(())),
            Ok(false) => None,
            Err(refused) => Some(Err(refused)),
        })
    }

    async fn get_session(&self, id: &str) -> Result<Option<Session>> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(session_row).transpose()
    }

    async fn list_sessions(
        &self,
        owner: Option<&str>,
        state: Option<SessionState>,
    ) -> Result<Vec<Session>> {
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE ($1::text IS NULL OR owner = $1) \
             AND ($2::text IS NULL OR state = $2) ORDER BY created_at DESC, id"
        ))
        .bind(owner)
        .bind(state.map(|s| s.as_str()))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(session_row).collect()
    }

    async fn session_uploads(&self, session_id: &str) -> Result<Vec<Upload>> {
        self.uploads("u.session_id = $1 ORDER BY u.idx", &[session_id])
            .await
    }

    async fn uploads_at(&self, session_id: &str, path: &SpacePath) -> Result<Vec<Upload>> {
        let filter = "u.session_id = $1 AND u.path = $2 ORDER BY u.idx";
        self.uploads(filter, &[session_id, path.as_str()]).await
    }

    async fn add_uploads(&self, session_id: &str, uploads: &[Upload], limit: usize) -> Result<()> {
        let mut tx = self.begin().await?;
        // Adds to one session take turns; the next statement reads what
        // the previous one committed.
        lock_session(&mut tx, session_id).await?;
        // Inserts, and counts what was there before (the statement's
        // snapshot leaves out its own rows); a refusal rolls back. Aborted
        // uploads (replaced ones) neither hold their path nor count.
        let paths: Vec<&str> = uploads.iter().map(|u| u.path.as_str()).collect();
        let sql = format!(
            "WITH ins AS ({}) \
             SELECT COUNT(*) FILTER (WHERE state <> 'aborted'), \
               COALESCE(array_agg(DISTINCT path) FILTER (WHERE state <> 'aborted' \
                 AND path = ANY($2)), '{{}}') \
             FROM uploads WHERE session_id = $1",
            insert_uploads_sql(3, NEXT_IDX)
        );
        let row = UploadCols::of(0, uploads)
            .bind(sqlx::query(&sql).bind(session_id).bind(&paths))
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        let count: i64 = get(&row, 0)?;
        let taken: Vec<String> = get(&row, 1)?;
        let total = count as usize + uploads.len();
        if total > limit {
            return Err(MetaError::Full(total));
        }
        if let Some(up) = uploads
            .iter()
            .find(|up| taken.iter().any(|t| t == up.path.as_str()))
        {
            return Err(MetaError::AlreadyExists(Record::UploadAt(up.path.clone())));
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn add_upload_beside(
        &self,
        session_id: &str,
        upload: &Upload,
        beside: &[String],
        abort: &[String],
        limit: usize,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let (_, mut states) = lock(&mut tx, Some(session_id), abort).await?;
        let mut aborted = Vec::new();
        for id in abort {
            if check_upload(&mut states, id, UploadState::Aborted)? {
                aborted.push(id.as_str());
            }
        }
        // Aborts and inserts, and reads the session as it was before
        // (leaving the aborted ones out by hand); a refusal rolls back.
        let sql = format!(
            "WITH a AS (UPDATE uploads SET state = 'aborted' WHERE id = ANY($3)), ins AS ({}) \
             SELECT COUNT(*) FILTER (WHERE state <> 'aborted' AND id <> ALL($3)), \
               COALESCE(array_agg(id) FILTER (WHERE state <> 'aborted' AND path = $2 \
                 AND id <> ALL($3)), '{{}}') \
             FROM uploads WHERE session_id = $1",
            insert_uploads_sql(4, NEXT_IDX)
        );
        let row = UploadCols::of(0, std::slice::from_ref(upload))
            .bind(
                sqlx::query(&sql)
                    .bind(session_id)
                    .bind(upload.path.as_str())
                    .bind(&aborted),
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        let count: i64 = get(&row, 0)?;
        let holders: Vec<String> = get(&row, 1)?;
        if holders.iter().any(|h| !beside.contains(h)) {
            return Err(MetaError::AlreadyExists(Record::UploadAt(
                upload.path.clone(),
            )));
        }
        let total = count as usize - holders.len() + 1;
        if total > limit {
            return Err(MetaError::Full(total));
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn upload_and_session(&self, upload_id: &str) -> Result<Option<(Upload, Session)>> {
        let row = sqlx::query("SELECT * FROM ferry_upload_read($1)")
            .bind(upload_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| upload_and_session_at(&r, 0)).transpose()
    }

    async fn get_upload(&self, id: &str) -> Result<Option<Upload>> {
        Ok(self.uploads("u.id = $1", &[id]).await?.pop())
    }

    async fn upload_at(&self, session_id: &str, path: &SpacePath) -> Result<Option<Upload>> {
        Ok(self
            .uploads(
                "u.session_id = $1 AND u.path = $2 AND u.state <> 'aborted' \
                 ORDER BY u.idx DESC LIMIT 1",
                &[session_id, path.as_str()],
            )
            .await?
            .pop())
    }

    async fn set_upload_metadata(&self, upload_id: &str, metadata: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE uploads SET metadata = $2 WHERE id = $1")
            .bind(upload_id)
            .bind(metadata)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn mark_direct(&self, upload_id: &str) -> Result<()> {
        sqlx::query("UPDATE uploads SET direct = TRUE WHERE id = $1 AND NOT direct")
            .bind(upload_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn record_write(
        &self,
        upload_id: &str,
        range: ByteRange,
        part: Option<&Part>,
        sealed: &[Digest],
    ) -> Result<()> {
        self.record(upload_id, range, part, sealed, None).await
    }

    async fn record_write_releasing(
        &self,
        upload_id: &str,
        range: ByteRange,
        part: Option<&Part>,
        sealed: &[Digest],
        lease: &str,
    ) -> Result<()> {
        self.record(upload_id, range, part, sealed, Some(lease))
            .await
    }

    /// One statement (`ferry_record_if_free`, migration 16).
    async fn record_write_if_free(
        &self,
        upload_id: &str,
        range: ByteRange,
        part: Option<&Part>,
        sealed: &[Digest],
        object: &str,
    ) -> Result<bool> {
        sqlx::query_scalar("SELECT ferry_record_if_free($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(upload_id)
            .bind(i(range.start))
            .bind(i(range.end))
            .bind(part.map(|p| i64::from(p.number)))
            .bind(part.map(|p| i(p.offset)))
            .bind(part.map(|p| i(p.size)))
            .bind(part.and_then(|p| p.sha256.as_deref()))
            .bind(part.and_then(|p| p.sha1.as_deref()))
            .bind(part.and_then(|p| p.md5.as_deref()))
            .bind(crate::join_sealed(sealed, Some(object)))
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    async fn forget(
        &self,
        upload_id: &str,
        received: &[ByteRange],
        drop_part: Option<u32>,
    ) -> Result<()> {
        let starts: Vec<i64> = received.iter().map(|r| i(r.start)).collect();
        let ends: Vec<i64> = received.iter().map(|r| i(r.end)).collect();
        // One statement: its deletes do not see the rows it inserts.
        sqlx::query(
            r#"WITH d AS (DELETE FROM ranges WHERE upload_id = $1),
                    p AS (DELETE FROM parts WHERE upload_id = $1 AND number = $4),
                    z AS (UPDATE uploads SET sealed = NULL WHERE id = $1 AND sealed IS NOT NULL)
               INSERT INTO ranges (upload_id, start, "end")
               SELECT $1, s, e FROM UNNEST($2::bigint[], $3::bigint[]) AS r(s, e)"#,
        )
        .bind(upload_id)
        .bind(starts)
        .bind(ends)
        .bind(drop_part.map(i64::from))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn set_length(&self, upload_id: &str, length: Length) -> Result<()> {
        sqlx::query("UPDATE uploads SET length = $2 WHERE id = $1")
            .bind(upload_id)
            .bind(length.known().map(i))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn set_session_state(
        &self,
        id: &str,
        state: SessionState,
        expires_at: Option<Millis>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        // Locks the row, changes it and answers its state before; an
        // illegal change rolls back.
        let from: Option<String> = sqlx::query_scalar(
            "UPDATE sessions s SET state = $2, expires_at = COALESCE($3, s.expires_at) \
             FROM (SELECT id, state FROM sessions WHERE id = $1 FOR UPDATE) old \
             WHERE s.id = old.id RETURNING old.state",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(expires_at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(from) = from else {
            return Err(MetaError::NotFound(Record::Session(id.to_owned())));
        };
        parse::<SessionState>(&from)?.transition(state)?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn set_upload_state(&self, upload_id: &str, state: UploadState) -> Result<()> {
        let mut tx = self.begin().await?;
        let from: Option<String> = sqlx::query_scalar(
            "UPDATE uploads u SET state = $2 \
             FROM (SELECT id, state FROM uploads WHERE id = $1 FOR UPDATE) old \
             WHERE u.id = old.id RETURNING old.state",
        )
        .bind(upload_id)
        .bind(state.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(from) = from else {
            return Err(MetaError::NotFound(Record::Upload(upload_id.to_owned())));
        };
        parse::<UploadState>(&from)?.transition(state)?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn extend_session(&self, id: &str, expires_at: Millis) -> Result<()> {
        sqlx::query(
            "UPDATE sessions SET expires_at = GREATEST(expires_at, $2) \
             WHERE id = $1 AND state = 'open'",
        )
        .bind(id)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn begin_commit(
        &self,
        session: Option<&str>,
        plan: &[(String, SpacePath)],
        abort: &[String],
    ) -> Result<()> {
        if self.begin_commit_at_once(session, plan, abort).await? {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        intent_locking(&mut tx, session, plan, abort).await?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    /// In the turn's transaction (`turn`'s [`TurnHold`]), committed with
    /// it. A one-upload intent whose states changed meanwhile (its
    /// compare-and-set failed, which ends the transaction) is tried again
    /// the usual way, which says why.
    async fn begin_commit_ending(
        &self,
        turn: Exclusive,
        session: Option<&str>,
        plan: &[(String, SpacePath)],
        abort: &[String],
    ) -> Result<()> {
        let Some(mut tx) = turn
            .into_holder::<TurnHold>()
            .ok()
            .and_then(|mut h| h.0.take())
        else {
            return self.begin_commit(session, plan, abort).await;
        };
        match intent_at_once(session, plan, abort) {
            Some(q) => {
                if !intent_in(q, &mut tx).await? {
                    drop(tx);
                    return self.begin_commit(session, plan, abort).await;
                }
            }
            None => intent_locking(&mut tx, session, plan, abort).await?,
        }
        tx.commit().await.map_err(db)
    }

    async fn begin_commit_if_free(
        &self,
        session: Option<&str>,
        upload_id: &str,
        space: &SpaceName,
        path: &SpacePath,
        received: Option<ByteRange>,
    ) -> Result<bool> {
        self.intent_if_free(session, upload_id, space, path, received)
            .await
    }

    async fn commit_if_free(
        &self,
        end: SessionEnd<'_>,
        done: &Committed,
        events: &[OutboxEvent],
        release: &[String],
    ) -> Result<Option<Option<SessionState>>> {
        self.commit_at_once(end, done, events, release, None).await
    }

    async fn commit_if_free_unclaimed(
        &self,
        gate: &CommitGate,
        end: SessionEnd<'_>,
        done: &Committed,
        events: &[OutboxEvent],
    ) -> Result<Option<Option<SessionState>>> {
        if done.upload_id != gate.upload_id {
            return Ok(None);
        }
        self.commit_at_once(end, done, events, &[], Some(gate))
            .await
    }

    async fn finish_commit_releasing(
        &self,
        end: SessionEnd<'_>,
        done: &[Committed],
        events: &[OutboxEvent],
        release: &[String],
    ) -> Result<Option<SessionState>> {
        if let Some(ended) = self
            .finish_commit_at_once(end, done, events, release)
            .await?
        {
            return Ok(ended);
        }
        let ended = self.finish_commit_locking(end, done, events).await?;
        // All at once (none outlives another), tried again a little: the
        // engine has handed these over.
        for pause in [200, 400, 0] {
            match self.release_all(release).await {
                Ok(()) => break,
                Err(e) if pause == 0 => {
                    tracing::warn!(error = %e, "cannot release leases; they end with this process");
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(pause)).await,
            }
        }
        Ok(ended)
    }

    async fn finish_commit_reporting(
        &self,
        end: SessionEnd<'_>,
        done: &[Committed],
        events: &[OutboxEvent],
    ) -> Result<Option<SessionState>> {
        self.finish_commit_releasing(end, done, events, &[]).await
    }

    async fn abort_uploads_reporting(
        &self,
        ids: &[String],
        end: SessionEnd<'_>,
        events: &[OutboxEvent],
    ) -> Result<Option<SessionState>> {
        let mut tx = self.begin().await?;
        let session = match end {
            SessionEnd::Keep => None,
            SessionEnd::To(id, _) | SessionEnd::IfSettled(id) => Some(id),
        };
        let (locked, states) = lock(&mut tx, session, ids).await?;
        // Only what may still be aborted: a finished upload stays.
        let mut changed = HashMap::new();
        for (id, s) in &states {
            if *s != UploadState::Aborted && s.can_become(UploadState::Aborted) {
                changed.insert(id.clone(), UploadState::Aborted);
            }
        }
        let end = plan_end(end, locked.as_ref())?;
        let aborted: Vec<&str> = changed.keys().map(String::as_str).collect();
        let (set_id, set_state) = end.set();
        let rows = sqlx::query(
            "WITH a AS (UPDATE uploads SET state = 'aborted' WHERE id = ANY($4)), \
                  s AS (UPDATE sessions SET state = $2 WHERE id = $1) \
             SELECT id, state FROM uploads WHERE session_id = $3",
        )
        .bind(set_id)
        .bind(set_state)
        .bind(end.settle())
        .bind(&aborted)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let ended = end.finish(&mut tx, &rows, &changed).await?;
        let reported: Vec<OutboxEvent> = events
            .iter()
            .filter(|e| changed.contains_key(&e.key))
            .cloned()
            .collect();
        insert_events(&mut tx, &reported).await?;
        tx.commit().await.map_err(db)?;
        Ok(ended)
    }

    async fn fail_upload(&self, upload_id: &str, reason: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let session: Option<(String, String)> = sqlx::query_as(
            "SELECT s.id, s.state FROM sessions s JOIN uploads u ON u.session_id = s.id \
             WHERE u.id = $1 FOR UPDATE OF s",
        )
        .bind(upload_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let mut fail = None;
        if let Some((sid, state)) = session
            && parse::<SessionState>(&state)?.can_become(SessionState::Failed)
        {
            fail = Some(sid);
        }
        // An upload committed meanwhile stays so, and its session is not
        // failed for it.
        sqlx::query(
            "WITH u AS (UPDATE uploads SET state = 'aborted', final_path = NULL \
               WHERE id = $1 AND state NOT IN ('committed', 'skipped') RETURNING 1) \
             UPDATE sessions SET state = 'failed', failure = $3 \
             WHERE id = $2 AND EXISTS (SELECT 1 FROM u)",
        )
        .bind(upload_id)
        .bind(fail)
        .bind(reason)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn open_session_count(&self, owner: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions WHERE owner = $1 AND state IN ('open', 'committing')",
        )
        .bind(owner)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(u(n))
    }

    async fn session_counts(&self) -> Result<Vec<(SessionState, u64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM sessions GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.into_iter()
            .map(|(s, n)| Ok((parse(&s)?, u(n))))
            .collect()
    }

    async fn usage(&self, owner: &str) -> Result<Usage> {
        let (committed, reserved): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COALESCE(SUM(size), 0)::bigint FROM files WHERE owner = $1), \
               (SELECT COALESCE(SUM(u.length), 0)::bigint FROM uploads u \
                 JOIN sessions s ON s.id = u.session_id WHERE s.owner = $1 \
                 AND s.state IN ('open', 'committing') AND u.state IN ('open', 'committing'))",
        )
        .bind(owner)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(Usage {
            committed: u(committed),
            reserved: u(reserved),
        })
    }

    async fn expired_sessions(&self, now: Millis) -> Result<Vec<Session>> {
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE state = 'open' AND expires_at <= $1 \
             ORDER BY expires_at, id"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(session_row).collect()
    }

    async fn expired_files(&self, now: Millis) -> Result<Vec<FileRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {FILE_COLS} FROM files WHERE expires_at IS NOT NULL AND expires_at <= $1 \
             ORDER BY expires_at, id"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(file_row).collect()
    }

    async fn upload_ids(&self, state: UploadState) -> Result<Vec<String>> {
        self.ids_in_state("uploads", state.as_str()).await
    }

    async fn session_ids(&self, state: SessionState) -> Result<Vec<String>> {
        self.ids_in_state("sessions", state.as_str()).await
    }

    async fn get_file(&self, space: &SpaceName, path: &SpacePath) -> Result<Option<FileRecord>> {
        self.one_file("space = $1 AND path = $2", &[space.as_str(), path.as_str()])
            .await
    }

    async fn get_file_by_id(&self, id: &str) -> Result<Option<FileRecord>> {
        self.one_file("id = $1", &[id]).await
    }

    async fn get_file_by_object(&self, object: &str) -> Result<Option<FileRecord>> {
        self.one_file("object = $1", &[object]).await
    }

    async fn occupant(&self, space: &SpaceName, path: &SpacePath) -> Result<Option<Occupant>> {
        let rows = self.around_rows(space, path, false).await?;
        occupant_of(&rows, path)
    }

    async fn committing_around(
        &self,
        space: &SpaceName,
        path: &SpacePath,
    ) -> Result<Option<Occupant>> {
        let (exact, lo, hi) = around(path);
        let heading: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT u.final_path FROM uploads u JOIN sessions s ON s.id = u.session_id {HEADING}"
        ))
        .bind(space.as_str())
        .bind(&exact)
        .bind(lo)
        .bind(hi)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        crate::heading_of(&heading, path)
    }

    async fn path_taken(&self, space: &SpaceName, path: &SpacePath) -> Result<PathTaken> {
        let rows = self.around_rows(space, path, true).await?;
        let mut heading = Vec::new();
        for r in &rows {
            if get::<&str>(r, 14)? == "c" {
                heading.push(get::<String>(r, 2)?);
            }
        }
        if let Some(o) = crate::heading_of(&heading, path)? {
            return Ok(PathTaken::Committing(o));
        }
        Ok(match occupant_of(&rows, path)? {
            Some(o) => PathTaken::Occupied(o),
            None => PathTaken::Free,
        })
    }

    async fn list(&self, space: &SpaceName, prefix: Option<&SpacePath>) -> Result<Vec<Entry>> {
        let (rows, skip) = match prefix {
            Some(p) => {
                let (lo, hi) = below(p.as_str());
                let rows = sqlx::query(&format!(
                    "SELECT {FILE_COLS} FROM files WHERE space = $1 AND path >= $2 \
                     AND path < $3 ORDER BY path"
                ))
                .bind(space.as_str())
                .bind(lo)
                .bind(hi)
                .fetch_all(&self.pool)
                .await;
                (rows, p.as_str().len() + 1)
            }
            None => {
                let rows = sqlx::query(&format!(
                    "SELECT {FILE_COLS} FROM files WHERE space = $1 ORDER BY path"
                ))
                .bind(space.as_str())
                .fetch_all(&self.pool)
                .await;
                (rows, 0)
            }
        };
        let files = rows
            .map_err(db)?
            .iter()
            .map(file_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(entries(files, skip))
    }

    async fn move_files(
        &self,
        space: &SpaceName,
        moves: &[(SpacePath, SpacePath)],
    ) -> Result<Vec<FileRecord>> {
        let mut tx = self.begin().await?;
        let mut moved = Vec::with_capacity(moves.len());
        for (from, to) in moves {
            let (exact, lo, hi) = around(to);
            let taken: bool = sqlx::query_scalar(
                "SELECT EXISTS(SELECT 1 FROM files WHERE space = $1 AND path = ANY($2)) \
                   OR EXISTS(SELECT 1 FROM files WHERE space = $1 AND path >= $3 AND path < $4)",
            )
            .bind(space.as_str())
            .bind(&exact)
            .bind(lo)
            .bind(hi)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            if taken {
                return Err(MetaError::AlreadyExists(Record::File(to.clone())));
            }
            // The record as it was: the old path is set again in the row
            // returned (UPDATE … RETURNING gives the new one).
            let row = sqlx::query(&format!(
                "UPDATE files SET path = $3 WHERE space = $1 AND path = $2 RETURNING {FILE_COLS}"
            ))
            .bind(space.as_str())
            .bind(from.as_str())
            .bind(to.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unique(|| {
                MetaError::AlreadyExists(Record::File(to.clone()))
            }))?;
            let Some(row) = row else {
                return Err(MetaError::NotFound(Record::File(from.clone())));
            };
            let mut f = file_row(&row)?;
            f.path = from.clone();
            moved.push(f);
        }
        tx.commit().await.map_err(db)?;
        Ok(moved)
    }

    async fn delete_file_reporting(
        &self,
        space: &SpaceName,
        path: &SpacePath,
        events: &[OutboxEvent],
    ) -> Result<Option<FileRecord>> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "DELETE FROM files WHERE space = $1 AND path = $2 RETURNING {FILE_COLS}"
        ))
        .bind(space.as_str())
        .bind(path.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let found = row.as_ref().map(file_row).transpose()?;
        if found.is_some() {
            insert_events(&mut tx, events).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(found)
    }

    async fn outbox_add(&self, events: &[OutboxEvent]) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await.map_err(db)
    }

    async fn outbox_claim(
        &self,
        now: Millis,
        hold_until: Millis,
        limit: usize,
    ) -> Result<Vec<OutboxRow>> {
        // Rows another node is claiming are skipped, not waited for.
        let rows = sqlx::query(
            "WITH c AS (SELECT o.seq FROM hook_outbox o WHERE o.due_at <= $1 \
               AND o.seq = (SELECT MIN(seq) FROM hook_outbox WHERE key = o.key) \
               ORDER BY o.seq LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE hook_outbox h SET due_at = $2 FROM c WHERE h.seq = c.seq \
             RETURNING h.seq, h.id, h.key, h.body, h.attempts, h.created_at",
        )
        .bind(now)
        .bind(hold_until)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out: Vec<OutboxRow> = rows
            .iter()
            .map(|r| {
                Ok(OutboxRow {
                    seq: get(r, 0)?,
                    id: get(r, 1)?,
                    key: get(r, 2)?,
                    body: get(r, 3)?,
                    attempts: get::<i32>(r, 4)? as u32,
                    created_at: get(r, 5)?,
                })
            })
            .collect::<Result<_>>()?;
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }

    async fn outbox_done(&self, seq: i64) -> Result<()> {
        sqlx::query("DELETE FROM hook_outbox WHERE seq = $1")
            .bind(seq)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn outbox_retry(&self, seq: i64, next_at: Millis) -> Result<()> {
        sqlx::query("UPDATE hook_outbox SET attempts = attempts + 1, due_at = $2 WHERE seq = $1")
            .bind(seq)
            .bind(next_at)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn outbox_depth(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hook_outbox")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(n as u64)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        // The insert's snapshot cannot see a row another node inserted
        // concurrently (it then inserts nothing): that one is read after.
        let inserted: Option<Vec<u8>> = sqlx::query_scalar(
            "INSERT INTO secrets (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING RETURNING value",
        )
        .bind(name)
        .bind(candidate)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some(v) = inserted {
            return Ok(v);
        }
        sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }

    async fn try_exclusive(&self, what: &str) -> Result<Option<Exclusive>> {
        // A session-level advisory lock on a connection of its own (not
        // the pool's): PostgreSQL releases it when that connection closes,
        // be it by the hold's drop or by the process's death.
        let options = self.pool.pool().connect_options();
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| MetaError::Unreachable)?
            .map_err(db)?;
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(EXCLUSIVE_LOCK)
            .bind(what)
            .fetch_one(&mut conn)
            .await
            .map_err(db)?;
        if held {
            return Ok(Some(keep_hold(conn, None)));
        }
        conn.close().await.ok();
        Ok(None)
    }

    async fn others_at_work(&self) -> Result<bool> {
        // A serving node's `node`, taken again after the database ended
        // it (`keep_hold`), waiting behind this process's hold of it.
        // (Not the others' presence locks: a node takes its presence as
        // it connects, before it serves, so nodes starting together would
        // each think the others at work, and none would recover.)
        let seen = || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_locks k
                 WHERE k.locktype = 'advisory'
                   AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND k.classid = $1::oid AND k.objid = hashtext('node')::oid AND NOT k.granted)",
            )
            .bind(EXCLUSIVE_LOCK)
            .fetch_one(&self.pool)
            .await
            .map_err(db)
        };
        if seen().await? {
            return Ok(true);
        }
        // Worth a wait only when work may be under way (sessions open)
        // and other processes are connected: a node restarted alone (its
        // former process's connections ended with it) is not kept waiting.
        let maybe: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sessions WHERE state IN ('open', 'committing'))
               AND EXISTS (SELECT 1 FROM pg_stat_activity
                 WHERE datname = current_database()
                   AND application_name LIKE 'ferry/%' AND application_name <> $1)",
        )
        .bind(&self.name)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        if !maybe {
            return Ok(false);
        }
        // Long enough for a node to notice its holds ended and take them
        // again (a check, a ping, a connection).
        tokio::time::sleep(3 * PRESENCE_CHECK).await;
        seen().await
    }

    async fn shared(&self, what: &str) -> Result<Exclusive> {
        let options = (*self.pool.pool().connect_options()).clone();
        let conn = hold_shared(&options, what).await.map_err(db)?;
        Ok(keep_hold(conn, Some((options, what.to_owned()))))
    }

    async fn turn(&self, what: &str) -> Result<Exclusive> {
        // A transaction-level advisory lock on a connection of the turns'
        // own pool: waiters queue in PostgreSQL (first come, first served),
        // a holder needs nothing more from this pool (no waiter can starve
        // it), and the lock goes with the transaction's end — the hold's
        // drop, or the connection's close when the process dies.
        // The pool's connections wait at most `lock_timeout` (its connect
        // options). A plain name (a space's: letters, digits, `.:_-`) is
        // written into the statement that begins the transaction: one
        // round trip; anything else is bound, in a second one.
        let plain = what
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b));
        if plain {
            let tx = self
                .turns
                .begin_with(format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({TURN_LOCK}, hashtext('{what}'))"
                ))
                .await
                .map_err(db)?;
            return Ok(Exclusive::new(Box::new(TurnHold(Some(tx)))));
        }
        let mut tx = self.turns.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(TURN_LOCK)
            .bind(what)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        Ok(Exclusive::new(Box::new(TurnHold(Some(tx)))))
    }

    async fn claim(&self, key: &str, lo: u64, hi: u64, kind: LeaseKind) -> Result<Claim> {
        let rows = sqlx::query("SELECT granted, token, kind FROM ferry_claim($1, $2, $3, $4, $5)")
            .bind(key)
            .bind(lo.min(i64::MAX as u64) as i64)
            .bind(hi.min(i64::MAX as u64) as i64)
            .bind(kind.as_str())
            .bind(self.node.load(std::sync::atomic::Ordering::Relaxed))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(claim_of(&rows)?.0)
    }

    /// One statement ([`Postgres::claim_reading`] reading nothing).
    async fn claim_with_turn(
        &self,
        key: &str,
        lo: u64,
        hi: u64,
        kind: LeaseKind,
        turn: &str,
    ) -> Result<(Claim, Option<String>)> {
        let rows = self
            .claim_reading(None, key, lo, hi, kind, Some(turn))
            .await?;
        claim_of(&rows)
    }

    /// One statement: the claim, then (once granted) the turn and the
    /// upload read by `ferry_upload_read`, whose snapshot is taken after
    /// the claim's.
    async fn claim_and_read(
        &self,
        upload_id: &str,
        lo: u64,
        hi: u64,
        kind: LeaseKind,
        turn: Option<&str>,
    ) -> Result<(Claim, Option<String>, Option<(Upload, Session)>)> {
        let rows = self
            .claim_reading(
                Some(("ferry_upload_read", upload_id)),
                upload_id,
                lo,
                hi,
                kind,
                turn,
            )
            .await?;
        let (claim, turn) = claim_of(&rows)?;
        let read = read_granted(&claim, &rows, |r| upload_and_session_at(r, 4));
        let read = crate::release_unless(self, read, &claim, turn.as_deref().as_slice()).await?;
        Ok((claim, turn, read))
    }

    /// One statement: the claim that disturbs nobody
    /// (`ferry_claim_free`, migration 17) of an open upload for whom it
    /// is, over the bytes `what` names, then (once granted) the session's
    /// turn when an append's [`crate::TurnIfEnding`] says so, and the upload read
    /// as by [`Postgres::claim_and_read`].
    async fn claim_unread(
        &self,
        upload_id: &str,
        by: &ClaimBy,
        what: UnreadClaim<'_>,
    ) -> Result<Option<(Claim, Option<String>, Option<(Upload, Session)>)>> {
        let (owner, session) = match by {
            ClaimBy::Anyone => (None, None),
            ClaimBy::Owner(o) => (Some(o.as_str()), None),
            ClaimBy::Session(s) => (None, Some(s.as_str())),
        };
        let (turn, part, kind) = match what {
            UnreadClaim::Append(turn) => (turn, None, LeaseKind::Append),
            UnreadClaim::Part(n) if (1..=UNREAD_PARTS_MAX).contains(&n) => {
                (None, Some(i(n)), LeaseKind::Write)
            }
            UnreadClaim::Part(_) => return Ok(None),
        };
        // The claim is made only for whom the upload is, while it is open,
        // for a part it can have (`g`: a row when so, with the bytes to
        // claim, reckoned in `numeric`: no part size overflows them; the
        // claim takes its key from it, so it runs only for that row).
        // The turn is claimed before the read, as in `claim_reading`.
        let rows = sqlx::query(
            "SELECT c.granted, c.token, c.kind, tt.turn, r.*
             FROM (SELECT u.id AS key,
                     CASE WHEN $9::bigint IS NULL THEN 0
                       ELSE (($9 - 1)::numeric * u.part_size)::bigint END AS lo,
                     CASE WHEN $9::bigint IS NULL THEN $5
                       ELSE LEAST($9::numeric * u.part_size, COALESCE(u.length, $5))::bigint
                     END AS hi
                   FROM uploads u JOIN sessions s ON s.id = u.session_id
                   WHERE u.id = $1 AND u.state = 'open'
                     AND ($6::text IS NULL OR s.owner = $6)
                     AND ($7::text IS NULL OR s.id = $7)
                     AND ($9::bigint IS NULL
                       OR ($9 - 1)::numeric * u.part_size < COALESCE(u.length, $5))) g
             CROSS JOIN LATERAL ferry_claim_free(g.key, g.lo, g.hi, $10, $2) c
             CROSS JOIN LATERAL (SELECT CASE WHEN c.granted AND $3::text IS NOT NULL THEN
                 (SELECT t.token FROM uploads u JOIN sessions s ON s.id = u.session_id
                    CROSS JOIN LATERAL ferry_claim($3 || s.id, 0, $5, 'turn', $2) t
                  WHERE u.id = $1 AND COALESCE($8::bigint, u.length) = $4
                    AND s.auto_commit AND t.granted)
               END AS turn, true AS done OFFSET 0) tt
             LEFT JOIN LATERAL ferry_upload_read(CASE WHEN c.granted AND tt.done THEN $1 END)
               WITH ORDINALITY r ON TRUE
             ORDER BY r.ordinality",
        )
        .bind(upload_id)
        .bind(self.node.load(std::sync::atomic::Ordering::Relaxed))
        .bind(turn.map(|t| t.prefix))
        .bind(turn.map(|t| i(t.end)))
        .bind(i64::MAX)
        .bind(owner)
        .bind(session)
        .bind(turn.and_then(|t| t.total).map(i))
        .bind(part)
        .bind(kind.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let (claim, turn) = claim_of(&rows)?;
        let read = read_granted(&claim, &rows, |r| upload_and_session_at(r, 4));
        let read = crate::release_unless(self, read, &claim, turn.as_deref().as_slice()).await?;
        Ok(Some((claim, turn, read)))
    }

    /// One statement, as [`Postgres::claim_and_read`], reading only the
    /// states (`ferry_upload_state`).
    async fn claim_and_states(
        &self,
        upload_id: &str,
        lo: u64,
        hi: u64,
        kind: LeaseKind,
    ) -> Result<(Claim, Option<(UploadState, SessionState)>)> {
        let rows = self
            .claim_reading(
                Some(("ferry_upload_state", upload_id)),
                upload_id,
                lo,
                hi,
                kind,
                None,
            )
            .await?;
        let (claim, _) = claim_of(&rows)?;
        let read = read_granted(&claim, &rows, |r| {
            Ok((parse(get(r, 4)?)?, parse(get(r, 5)?)?))
        });
        let read = crate::release_unless(self, read, &claim, &[]).await?;
        Ok((claim, read))
    }

    /// One statement, as [`Postgres::claim_and_read`]: the commit leases
    /// and the turn (`ferry_claim_commit_turn`), then the session and its
    /// uploads read by `ferry_session_read`.
    async fn claim_commit_turn(&self, key: &str, session_id: &str) -> Result<CommitTurn> {
        let rows = sqlx::query(
            "SELECT c.granted, c.token, c.kind, NULL::text, r.*, c.commit_ids, c.commit_tokens
             FROM ferry_claim_commit_turn($1, $2, $3) c
             LEFT JOIN LATERAL ferry_session_read(CASE WHEN c.granted THEN $2 END)
               WITH ORDINALITY r ON TRUE
             ORDER BY r.ordinality",
        )
        .bind(key)
        .bind(session_id)
        .bind(self.node.load(std::sync::atomic::Ordering::Relaxed))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let (claim, _) = claim_of(&rows)?;
        // The commit leases, in the granted turn's row's last two columns
        // (ids and tokens: decoded together, or neither).
        let commits: Vec<(String, String)> = match (&claim, rows.first()) {
            (Claim::Granted(_), Some(r)) => {
                let pair = get::<Vec<String>>(r, r.len() - 2)
                    .and_then(|ids| Ok((ids, get::<Vec<String>>(r, r.len() - 1)?)));
                match pair {
                    Ok((ids, tokens)) => ids.into_iter().zip(tokens).collect(),
                    Err(e) => {
                        let read = Err(e);
                        return crate::release_unless(self, read, &claim, &[]).await;
                    }
                }
            }
            _ => Vec::new(),
        };
        let read = read_granted(&claim, &rows, |first| {
            let session = session_row_at(first, 4)?;
            let o = 4 + SESSION_COLUMNS;
            let mut uploads = Vec::new();
            for r in &rows {
                if get::<Option<&str>>(r, o)?.is_some() {
                    uploads.push(upload_row_at(r, o)?);
                }
            }
            Ok((session, uploads))
        });
        let tokens: Vec<&str> = commits.iter().map(|(_, t)| t.as_str()).collect();
        let read = crate::release_unless(self, read, &claim, &tokens).await?;
        Ok(CommitTurn {
            claim,
            commits,
            read,
        })
    }

    async fn release(&self, token: &str) -> Result<()> {
        self.release_all(&[token.to_owned()]).await
    }

    async fn release_all(&self, tokens: &[String]) -> Result<()> {
        sqlx::query(
            "WITH gone AS (DELETE FROM leases WHERE token = ANY($1) RETURNING key, waited)
             SELECT pg_notify($2, 'released:' || key) FROM gone WHERE waited",
        )
        .bind(tokens)
        .bind(CHANGES_CHANNEL)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn fence_dead(&self) -> Result<bool> {
        sqlx::query_scalar("SELECT ferry_fence_dead()")
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    async fn forget_dead_leases(&self) -> Result<u64> {
        let gone: i64 = sqlx::query_scalar("SELECT ferry_forget_dead_leases()")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(gone as u64)
    }

    async fn ask_release(&self, tokens: &[String]) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, 'release:' || t) FROM unnest($2::text[]) t")
            .bind(CHANGES_CHANNEL)
            .bind(tokens)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_with_an_unescaped_slash_is_not_shown() {
        let t = Target::parse("postgres://ann:se/cr?et@db.example:5432/ferry");
        assert_eq!(
            t.shown.as_deref(),
            Some("postgres://ann:***@db.example:5432/ferry")
        );
        let e = t.error("the database URL does not parse", &"whatever");
        assert!(!format!("{e}").contains("se/cr?et"), "{e}");
    }

    #[test]
    fn a_url_is_shown_without_its_password() {
        let t = Target::parse("postgres://ann:s%40cret@db.example:5432/ferry?sslmode=disable");
        assert_eq!(
            t.shown.as_deref(),
            Some("postgres://ann:***@db.example:5432/ferry?sslmode=disable")
        );
        let e = t.error("cannot connect", &"ann:s@cret and s%40cret");
        let text = format!("{e} {:?} {}", e, std::error::Error::source(&e).unwrap());
        assert!(
            !text.contains("s@cret") && !text.contains("s%40cret"),
            "{text}"
        );

        let t = Target::parse("postgres://h/db?user=a&password=hunter2");
        assert_eq!(
            t.shown.as_deref(),
            Some("postgres://h/db?user=a&password=***")
        );
        assert_eq!(t.scrub("x hunter2 y"), "x *** y");

        let t = Target::parse("not a url with secret");
        assert_eq!(t.shown, None);
    }

    /// A database error with just a SQLSTATE, as the server sends.
    #[derive(Debug)]
    struct Sqlstate(&'static str);

    impl std::fmt::Display for Sqlstate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Sqlstate {}

    impl sqlx::error::DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            "test"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            match self.0 {
                "23505" => sqlx::error::ErrorKind::UniqueViolation,
                _ => sqlx::error::ErrorKind::Other,
            }
        }
    }

    fn server(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Sqlstate(code)))
    }

    #[test]
    fn a_full_disk_a_closed_pool_and_a_lock_kept_too_long_are_told_apart_and_the_rest_is_opaque() {
        assert!(matches!(db(server("53100")), MetaError::NoSpace));
        assert!(matches!(db(sqlx::Error::PoolClosed), MetaError::Closed));
        assert!(matches!(db(server("40P01")), MetaError::Backend(_)));
        assert!(matches!(db(server("55P03")), MetaError::Busy));
        assert!(matches!(db(sqlx::Error::PoolTimedOut), MetaError::Busy));
        let exists = || MetaError::AlreadyExists(Record::Session("s".into()));
        assert!(matches!(
            unique(exists)(server("23505")),
            MetaError::AlreadyExists(_)
        ));
        assert!(matches!(
            unique(exists)(server("53100")),
            MetaError::NoSpace
        ));
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("a%41%zz%4"), "aA%zz%4");
    }
}
