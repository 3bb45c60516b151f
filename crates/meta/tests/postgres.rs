//! The PostgreSQL backend passes the shared conformance suite, keeps its
//! limits and its lifecycle when several nodes write at once, migrates
//! once however many nodes start together, and fails fast, without
//! telling a password, when the server is not there.
//!
//! Each test makes its own database on the server named by
//! `FERRY_TEST_DATABASE_URL` (e.g.
//! `postgres://postgres@127.0.0.1:15432/postgres`, see
//! `scripts/pg-local.sh`) and drops it afterwards. Without that variable
//! the tests that need a server are skipped, unless
//! `FERRY_REQUIRE_POSTGRES=1` makes that a failure.

use ferry_core::{
    ConflictPolicy, FileRecord, Length, RangeSet, Session, SessionState, SpaceName, SpacePath,
    Upload, UploadState, User,
};
use ferry_meta::{
    Change, Claim, ClaimBy, Committed, CreateLimits, Held, LeaseKind, LimitRefusal, MetaError,
    MetaStore, Occupant, PathTaken, Postgres, SessionEnd, TokenRecord, TurnIfEnding, UnreadClaim,
    conformance,
};
use sqlx::Connection;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The server's URL, or `None` (the test is skipped) when none is given.
fn server_url() -> Option<String> {
    match std::env::var("FERRY_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("FERRY_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "PostgreSQL is required (FERRY_REQUIRE_POSTGRES=1) but \
                     FERRY_TEST_DATABASE_URL is not set"
                );
            }
            println!("FERRY_TEST_DATABASE_URL is not set: skipped");
            None
        }
    }
}

/// A fresh database, dropped (best effort) when this goes, even after a
/// failed assertion.
struct TestDb {
    server: String,
    name: String,
    url: String,
}

impl TestDb {
    async fn create() -> Option<TestDb> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let server = server_url()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "ferry_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = sqlx::PgConnection::connect(&server)
            .await
            .expect("the test server answers");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.ok();
        let url = with_database(&server, &name);
        Some(TestDb { server, name, url })
    }

    async fn connect(&self) -> Postgres {
        Postgres::connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // A runtime of its own: this may run inside (or after) the test's.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&server).await {
                    let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}

/// `url` naming the database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |k| k + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |k| scheme_end + k);
    format!("{}/{name}{query}", &base[..host_end])
}

fn sp(s: &str) -> SpaceName {
    SpaceName::parse(s).unwrap()
}

fn p(s: &str) -> SpacePath {
    SpacePath::parse(s).unwrap()
}

fn user(name: &str) -> User {
    User {
        name: name.into(),
        admin: false,
        quota_bytes: None,
        max_open_sessions: None,
        home_space: sp(name),
        created_at: 1,
    }
}

fn token(id: &str, owner: &str) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        user: owner.into(),
        secret_hash: vec![7; 32],
        created_at: 1,
        revoked: false,
    }
}

fn session(id: &str, owner: &str) -> Session {
    Session {
        id: id.into(),
        owner: owner.into(),
        space: sp(owner),
        conflict: ConflictPolicy::Rename,
        auto_commit: false,
        state: SessionState::Open,
        created_at: 10,
        expires_at: 1_000_000,
        dialect: "native".into(),
        extend_secs: None,
        open_ended: false,
        files_expire: false,
        failure: None,
    }
}

fn upload(id: &str, sid: &str, path: &str, length: u64) -> Upload {
    Upload {
        id: id.into(),
        session_id: sid.into(),
        path: p(path),
        length: Length::Known(length),
        part_size: 10,
        state: UploadState::Open,
        expected_sha256: None,
        whole_digests: Vec::new(),
        content_type: None,
        metadata: None,
        received: RangeSet::new(),
        parts: BTreeMap::new(),
        final_path: None,
        file_id: None,
        replaces: None,
        direct: false,
        sealed: Vec::new(),
        object: None,
        dialect_state: None,
    }
}

fn committed(upload_id: &str, owner: &str, path: &str, file_id: &str) -> Committed {
    Committed {
        upload_id: upload_id.into(),
        state: UploadState::Committed,
        final_path: p(path),
        file: FileRecord {
            id: file_id.into(),
            space: sp(owner),
            path: p(path),
            size: 1,
            sha256: "00".repeat(32),
            sha1: None,
            md5: None,
            content_type: None,
            owner: owner.into(),
            created_at: 5,
            metadata: None,
            dialect_state: None,
            expires_at: None,
            object: None,
        },
    }
}

/// `n` stores on one database, each its own pool: as many nodes.
async fn nodes(db: &TestDb, n: usize) -> Vec<Postgres> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(db.connect().await);
    }
    all
}

#[tokio::test]
async fn postgres_passes_conformance() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    conformance::run_all(&db.connect().await).await;
}

#[tokio::test]
async fn acknowledged_writes_are_read_by_another_connection() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    conformance::sessions_round_trip(&db.connect().await).await;
    let other = db.connect().await;
    let u1 = other.get_upload("u1").await.unwrap().unwrap();
    assert_eq!(u1.received.len(), 10, "the state after forget() was kept");
}

/// `n` creations of one session each for the user `ann` (created here),
/// all at once, taking turns among `nodes`, within an open-sessions limit
/// of `max_open`: how many were created, and the open count each refusal
/// gave.
async fn race_creations(nodes: &[Postgres], n: usize, max_open: u64) -> (usize, Vec<u64>) {
    nodes[0].create_user(&user("ann")).await.unwrap();
    let limits = CreateLimits {
        max_open_sessions: max_open,
        quota_bytes: None,
    };
    let tasks: Vec<_> = (0..n)
        .map(|k| {
            let m = nodes[k % nodes.len()].clone();
            tokio::spawn(async move {
                let sid = format!("s{k}");
                let ups = vec![upload(&format!("u{k}"), &sid, &format!("f{k}"), 1)];
                m.create_sessions_within(&[(session(&sid, "ann"), ups)], limits)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let (mut created, mut refused) = (0, Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            None => created += 1,
            Some(LimitRefusal::TooManySessions { open }) => refused.push(open),
            Some(other) => panic!("{other:?}"),
        }
    }
    (created, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_for_one_owner_never_pass_max_open_sessions() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let nodes = nodes(&db, 4).await;
    let (created, refused) = race_creations(&nodes, 12, 3).await;
    for open in refused {
        assert_eq!(open, 3);
    }
    assert_eq!(created, 3);
    assert_eq!(nodes[0].open_session_count("ann").await.unwrap(), 3);
    // A refused creation left nothing behind.
    assert_eq!(
        nodes[0]
            .list_sessions(Some("ann"), None)
            .await
            .unwrap()
            .len(),
        3
    );
}

/// Many creations of one owner at once, from four nodes, with a limit
/// that the first of them meet far below (they take stripes and count
/// under the owner's lock shared) and the last near it (they take the
/// owner's lock whole and count exactly): exactly the limit is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_from_far_below_the_limit_to_it_never_pass_max_open_sessions() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let nodes = nodes(&db, 4).await;
    let (created, refused) = race_creations(&nodes, 60, 24).await;
    for open in refused {
        assert!(open >= 24, "{open}");
    }
    assert_eq!(created, 24);
    assert_eq!(nodes[0].open_session_count("ann").await.unwrap(), 24);
}

/// A raw connection to `db` that has begun a creation of one session of
/// `owner`, id `<prefix>1` (`ferry_owner_limits` with room to spare, then
/// the row), and not ended it.
async fn creation_in_flight(db: &TestDb, owner: &str, prefix: &str) -> sqlx::PgConnection {
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // (Waiting for another creation in flight would be a failure.)
    sqlx::query("SET lock_timeout = '3s'")
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut c).await.unwrap();
    let ok: bool = sqlx::query_scalar("SELECT ferry_owner_limits($1, ARRAY[$2], 1, 100, 0, NULL)")
        .bind(owner)
        .bind(format!("{prefix}1"))
        .fetch_one(&mut c)
        .await
        .expect("a creation far below the limit does not wait for those in flight");
    assert!(ok);
    open_sessions(&mut c, owner, prefix, 1).await;
    c
}

/// Before, every creation took its owner's lock exclusively until its
/// transaction ended, so one owner's creations (one application's
/// account, on every node) queued behind each other's commits. Far below
/// the limit they now run side by side; one that must count exactly (a
/// quota to sum) still waits for those in flight.
#[tokio::test]
async fn creations_of_one_owner_far_below_its_limit_do_not_wait_for_each_other() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let _node = db.connect().await;
    let mut flying = Vec::new();
    for k in 0..3 {
        flying.push(creation_in_flight(&db, "o", &format!("f{k}")).await);
    }
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SET lock_timeout = '3s'")
        .execute(&mut c)
        .await
        .unwrap();
    let t = Instant::now();
    let ok: bool = sqlx::query_scalar("SELECT ferry_owner_limits('o', '{}', 1, 100, 0, NULL)")
        .fetch_one(&mut c)
        .await
        .expect("a creation far below the limit does not wait");
    assert!(ok);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // With a quota, the count is exact: it waits for them.
    let quota = sqlx::query("SELECT ferry_owner_limits('o', '{}', 1, 100, 10, 1000)")
        .execute(&mut c)
        .await
        .expect_err("a quota's sum waits for the creations in flight");
    assert!(quota.to_string().contains("lock timeout"), "{quota}");
    for f in flying {
        f.close().await.ok();
    }
}

/// Inserts `n` committed open sessions of `owner`, ids `prefix1`…
async fn open_sessions(c: &mut sqlx::PgConnection, owner: &str, prefix: &str, n: i32) {
    sqlx::query(
        "INSERT INTO sessions (id, owner, space, conflict, auto_commit, state, created_at, \
         expires_at, dialect, extend_secs) \
         SELECT $1 || g, $2, $2, 'fail', TRUE, 'open', 0, 0, 'native', 0 FROM generate_series(1, $3) g",
    )
    .bind(prefix)
    .bind(owner)
    .bind(n)
    .execute(c)
    .await
    .unwrap();
}

/// Starts `ferry_owner_limits('o', …, max 100)` on a connection of its
/// own; its result (the error's text) once it ends.
fn limits_call(db: &TestDb) -> tokio::task::JoinHandle<Result<(), String>> {
    let url = db.url.clone();
    tokio::spawn(async move {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query("SELECT ferry_owner_limits('o', '{}', 1, 100, 0, NULL)")
            .execute(&mut c)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

/// The advisory lock (its second key) that a backend of `c`'s database
/// waits for, once one does: polled for up to 10 s. (Only this database's:
/// the tests run side by side on one server, with the same owner's keys.)
async fn waiting_for(c: &mut sqlx::PgConnection) -> i64 {
    for _ in 0..200 {
        let key: Option<i64> = sqlx::query_scalar(
            "SELECT objid::TEXT::BIGINT FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_optional(&mut *c)
        .await
        .unwrap();
        if let Some(key) = key {
            return key;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing waits for an advisory lock");
}

/// A creation near its owner's limit takes the owner's lock whole: with
/// 97 open and three in flight (on stripes) it waits for them, then
/// counts them, and is refused at 100.
#[tokio::test]
async fn a_creation_near_the_limit_waits_for_the_owners_creations_in_flight_and_counts_them() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let _node = db.connect().await;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    open_sessions(&mut c, "o", "s", 81).await;
    // 81 open, 16 to spare: these three go by stripes.
    let mut flying = Vec::new();
    for k in 0..3 {
        flying.push(creation_in_flight(&db, "o", &format!("f{k}")).await);
    }
    open_sessions(&mut c, "o", "t", 16).await;
    // 97 open: the next takes the owner's lock whole, and waits for it.
    let next = limits_call(&db);
    let key = waiting_for(&mut c).await;
    let owner: i64 = sqlx::query_scalar("SELECT hashtext('o')::BIGINT & 4294967295")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(key, owner, "it waits for the owner's lock");
    assert!(!next.is_finished());
    for mut f in flying {
        sqlx::query("COMMIT").execute(&mut f).await.unwrap();
    }
    let e = next.await.unwrap().expect_err("100 open: refused");
    assert!(e.contains("sessions 100"), "{e}");
}

/// A creation that went for a stripe with room to spare and, once it had
/// one, found the owner near its limit (others committed meanwhile)
/// counts each stripe another creation holds as one more session: with
/// 84 open, 16 creations in flight and the next waiting for a stripe, 15
/// of them commit (99 open) and the last is still in flight: refused.
#[tokio::test]
async fn a_creation_that_finds_its_owner_near_the_limit_once_on_a_stripe_counts_the_other_stripes()
{
    let Some(db) = TestDb::create().await else {
        return;
    };
    let _node = db.connect().await;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    open_sessions(&mut c, "o", "s", 84).await;
    // 84 + 16 = 100: every stripe is taken, one by each.
    let mut flying = Vec::new();
    for k in 0..16 {
        let mut f = creation_in_flight(&db, "o", &format!("f{k}")).await;
        let stripe: i64 = sqlx::query_scalar(
            "SELECT objid::TEXT::BIGINT FROM pg_locks WHERE locktype = 'advisory' \
             AND classid = 1332966514 AND pid = pg_backend_pid()",
        )
        .fetch_one(&mut f)
        .await
        .unwrap();
        flying.push((stripe, f));
    }
    let next = limits_call(&db);
    let stripe = waiting_for(&mut c).await;
    // The one left in flight holds another stripe than the one awaited.
    let keep = flying.iter().position(|(s, _)| *s != stripe).unwrap();
    let (_, mut kept) = flying.swap_remove(keep);
    for (_, mut f) in flying {
        sqlx::query("COMMIT").execute(&mut f).await.unwrap();
    }
    let e = next
        .await
        .unwrap()
        .expect_err("99 open + 1 in flight: refused");
    // (A creation that commits between its stripe's try and the count is
    // counted twice: refused all the same.)
    let counted: u64 = e
        .rsplit("sessions ")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("not refused by the sessions limit: {e}"));
    assert!((100..=115).contains(&counted), "{e}");
    // It would have been the 101st: that one commits too.
    sqlx::query("COMMIT").execute(&mut kept).await.unwrap();
    let after = limits_call(&db).await.unwrap();
    assert!(after.is_err_and(|e| e.contains("sessions 100")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_for_one_owner_never_pass_the_quota() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let nodes = nodes(&db, 4).await;
    nodes[0].create_user(&user("bob")).await.unwrap();
    let limits = CreateLimits {
        max_open_sessions: 100,
        quota_bytes: Some(100),
    };
    let tasks: Vec<_> = (0..12)
        .map(|k| {
            let m = nodes[k % nodes.len()].clone();
            tokio::spawn(async move {
                let sid = format!("s{k}");
                let ups = vec![upload(&format!("u{k}"), &sid, "f", 30)];
                m.create_sessions_within(&[(session(&sid, "bob"), ups)], limits)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            None => created += 1,
            Some(LimitRefusal::OverQuota { used, more }) => assert_eq!((used, more), (90, 30)),
            Some(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(created, 3);
    assert_eq!(nodes[0].usage("bob").await.unwrap().reserved, 90);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_to_one_session_never_pass_its_limit_or_share_a_path() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let nodes = nodes(&db, 4).await;
    nodes[0].create_user(&user("cy")).await.unwrap();
    nodes[0]
        .create_session(&session("s", "cy"), &[upload("u0", "s", "first", 1)])
        .await
        .unwrap();
    // Distinct paths, limit 4 with one there: three more fit.
    let tasks: Vec<_> = (0..10)
        .map(|k| {
            let m = nodes[k % nodes.len()].clone();
            tokio::spawn(async move {
                let up = upload(&format!("a{k}"), "s", &format!("p{k}"), 1);
                m.add_uploads("s", &[up], 4).await
            })
        })
        .collect();
    let mut added = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => added += 1,
            Err(MetaError::Full(5)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(added, 3);
    let ups = nodes[0].session_uploads("s").await.unwrap();
    assert_eq!(ups.len(), 4);
    // Indexes stay distinct and in order of the adds.
    assert_eq!(ups[0].id, "u0");
    // One path, many adds: one wins, the rest find it taken.
    let tasks: Vec<_> = (0..8)
        .map(|k| {
            let m = nodes[k % nodes.len()].clone();
            tokio::spawn(async move {
                let up = upload(&format!("b{k}"), "s", "same", 1);
                m.add_uploads("s", &[up], 100).await
            })
        })
        .collect();
    let mut added = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => added += 1,
            Err(MetaError::AlreadyExists(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(added, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_ending_one_session_at_once_never_both_win() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let nodes = nodes(&db, 2).await;
    let m = &nodes[0];
    m.create_user(&user("dee")).await.unwrap();
    for round in 0..10 {
        let sid = format!("s{round}");
        let uid = format!("u{round}");
        m.create_session(&session(&sid, "dee"), &[upload(&uid, &sid, "x", 1)])
            .await
            .unwrap();
        m.begin_commit(Some(&sid), &[(uid.clone(), p(&format!("x{round}")))], &[])
            .await
            .unwrap();
        // One node commits the session, the other aborts it.
        let (a, b) = (nodes[0].clone(), nodes[1].clone());
        let (s1, u1, s2, u2) = (sid.clone(), uid.clone(), sid.clone(), uid.clone());
        let commit = tokio::spawn(async move {
            let done = committed(&u1, "dee", &format!("x{round}"), &format!("f{round}"));
            a.finish_commit(SessionEnd::To(&s1, SessionState::Committed), &[done])
                .await
        });
        let abort = tokio::spawn(async move {
            b.abort_uploads(&[u2], SessionEnd::To(&s2, SessionState::Aborted))
                .await
        });
        let (commit, abort) = (commit.await.unwrap(), abort.await.unwrap());
        let state = m.get_session(&sid).await.unwrap().unwrap().state;
        let file = m
            .get_file(&sp("dee"), &p(&format!("x{round}")))
            .await
            .unwrap();
        match (commit, abort) {
            (Ok(Some(SessionState::Committed)), Err(MetaError::IllegalTransition(_))) => {
                assert_eq!(state, SessionState::Committed);
                assert!(file.is_some());
            }
            (Err(MetaError::IllegalTransition(_)), Ok(Some(SessionState::Aborted))) => {
                assert_eq!(state, SessionState::Aborted);
                assert!(file.is_none(), "the losing commit left no file");
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_final_states_of_one_session_let_exactly_one_win() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let nodes = nodes(&db, 4).await;
    nodes[0].create_user(&user("eli")).await.unwrap();
    let finals = [
        SessionState::Aborted,
        SessionState::Expired,
        SessionState::Failed,
        SessionState::Committed,
    ];
    for round in 0..10 {
        let sid = format!("s{round}");
        nodes[0]
            .create_session(&session(&sid, "eli"), &[])
            .await
            .unwrap();
        let tasks: Vec<_> = finals
            .iter()
            .zip(&nodes)
            .map(|(st, m)| {
                let (m, st, sid) = (m.clone(), *st, sid.clone());
                tokio::spawn(async move { (st, m.set_session_state(&sid, st, None).await) })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (st, Ok(())) => winners.push(st),
                (_, Err(MetaError::IllegalTransition(_))) => {}
                (_, Err(e)) => panic!("{e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let state = nodes[0].get_session(&sid).await.unwrap().unwrap().state;
        assert_eq!(state, winners[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_of_two_concurrent_commits_settles_the_session() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let nodes = nodes(&db, 2).await;
    let m = &nodes[0];
    m.create_user(&user("fin")).await.unwrap();
    for round in 0..10 {
        let sid = format!("s{round}");
        let (ua, ub) = (format!("a{round}"), format!("b{round}"));
        m.create_session(
            &session(&sid, "fin"),
            &[upload(&ua, &sid, "a", 1), upload(&ub, &sid, "b", 1)],
        )
        .await
        .unwrap();
        let (pa, pb) = (format!("a{round}"), format!("b{round}"));
        m.begin_commit(None, &[(ua.clone(), p(&pa)), (ub.clone(), p(&pb))], &[])
            .await
            .unwrap();
        // Each node commits one upload and ends the session if it settled:
        // whichever comes second sees the other's commit.
        let tasks: Vec<_> = [(ua, pa), (ub, pb)]
            .into_iter()
            .zip(nodes.iter().cloned())
            .map(|((up, path), m)| {
                let sid = sid.clone();
                tokio::spawn(async move {
                    let done = committed(&up, "fin", &path, &format!("f-{up}"));
                    m.finish_commit(SessionEnd::IfSettled(&sid), &[done])
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut ended = Vec::new();
        for t in tasks {
            ended.push(t.await.unwrap());
        }
        ended.sort_by_key(|e| e.is_some());
        assert_eq!(
            ended,
            [None, Some(SessionState::Committed)],
            "round {round}"
        );
        let state = m.get_session(&sid).await.unwrap().unwrap().state;
        assert_eq!(state, SessionState::Committed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_connecting_at_once_to_a_fresh_database_migrate_it_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { Postgres::connect(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(t.await.unwrap().expect("every node connects"));
    }
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let versions: Vec<i32> =
        sqlx::query_scalar("SELECT version FROM ferry_migrations ORDER BY version")
            .fetch_all(&mut c)
            .await
            .unwrap();
    // Every migration in the repository, each once.
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count() as i32;
    assert_eq!(versions, (1..=files).collect::<Vec<i32>>());
    c.close().await.ok();
    // And each works on the one schema.
    stores[1].create_user(&user("gil")).await.unwrap();
    assert!(stores[2].get_user("gil").await.unwrap().is_some());
    // A later start finds nothing to do.
    let again = db.connect().await;
    assert_eq!(again.user_count().await.unwrap(), 1);
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_without_telling_the_password() {
    let started = Instant::now();
    let err = Postgres::connect("postgres://u:secretpw@127.0.0.1:1/x")
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let mut text = format!("{err} | {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(&format!(" | {s}"));
        source = s.source();
    }
    assert!(!text.contains("secretpw"), "{text}");
    assert!(text.contains("127.0.0.1:1"), "it says where: {text}");
}

#[tokio::test]
async fn a_url_that_does_not_parse_is_refused_without_telling_the_password() {
    for url in [
        "postgres://u:secretpw@127.0.0.1:notaport/x",
        "secretpw",
        "postgres://u@127.0.0.1:1/x?sslmode=bogus&password=secretpw",
    ] {
        let err = Postgres::connect(url).await.expect_err(url);
        let text = format!(
            "{err} | {err:?} | {}",
            std::error::Error::source(&err).map_or(String::new(), |s| s.to_string())
        );
        assert!(!text.contains("secretpw"), "{text}");
    }
}

#[tokio::test]
async fn calls_after_close_fail_as_closed() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let m = db.connect().await;
    m.ping().await.unwrap();
    m.close().await;
    let err = m.ping().await.unwrap_err();
    assert!(matches!(err, MetaError::Closed), "{err:?}");
}

/// A batch of outcomes is applied as SQLite applies it, one by one: a
/// file replaces the record at its path and the record of its id, even
/// an earlier one of the same batch.
#[tokio::test]
async fn a_commit_batch_ends_with_the_files_sqlite_ends_with() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lite = ferry_meta::Sqlite::open(dir.path().join("m.db")).unwrap();
    let pg = db.connect().await;
    let stores: [&dyn MetaStore; 2] = [&lite, &pg];
    let mut outcomes = Vec::new();
    for m in stores {
        m.create_user(&user("hal")).await.unwrap();
        m.finish_commit(
            SessionEnd::Keep,
            &[
                committed("-", "hal", "p1", "X"),
                committed("-", "hal", "p2", "Y"),
            ],
        )
        .await
        .unwrap();
        m.finish_commit(
            SessionEnd::Keep,
            &[
                // Z takes X's path; X moves on; Y moves onto where X went
                // and then to its own; Z moves; two land on one path.
                committed("-", "hal", "p1", "Z"),
                committed("-", "hal", "p3", "X"),
                committed("-", "hal", "p3", "Y"),
                committed("-", "hal", "p4", "Y"),
                committed("-", "hal", "p5", "Z"),
                committed("-", "hal", "q", "A"),
                committed("-", "hal", "q", "B"),
            ],
        )
        .await
        .unwrap();
        let mut files = Vec::new();
        for e in m.list(&sp("hal"), None).await.unwrap() {
            if let ferry_meta::Entry::File(f) = e {
                files.push((f.id, f.path.as_str().to_owned()));
            }
        }
        outcomes.push(files);
    }
    assert_eq!(
        outcomes[0],
        [
            ("Y".into(), "p4".into()),
            ("Z".into(), "p5".into()),
            ("B".into(), "q".into())
        ]
    );
    assert_eq!(outcomes[0], outcomes[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_node_is_announced_to_every_node() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    n[0].create_user(&user("hal")).await.unwrap();
    n[0].insert_token(&token("t-hal", "hal")).await.unwrap();
    let mut heard = n[1].changes().expect("PostgreSQL announces changes");
    assert!(n[0].revoke_token("t-hal").await.unwrap());
    let got = tokio::time::timeout(std::time::Duration::from_secs(1), heard.recv())
        .await
        .expect("announced within 1 s")
        .unwrap();
    assert_eq!(got, Change::TokenRevoked("t-hal".into()));
    // Revoking a token that does not exist announces nothing.
    assert!(!n[0].revoke_token("t-none").await.unwrap());
    let none = tokio::time::timeout(std::time::Duration::from_millis(300), heard.recv()).await;
    assert!(none.is_err(), "{none:?}");
}

#[tokio::test]
async fn one_node_at_a_time_holds_an_exclusive_and_the_next_gets_it_once_released() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    let held = n[0].try_exclusive("background").await.unwrap();
    assert!(held.is_some(), "the first asker gets it");
    assert!(n[1].try_exclusive("background").await.unwrap().is_none());
    assert!(
        n[0].try_exclusive("background").await.unwrap().is_none(),
        "held means held, for its own process too"
    );
    let other = n[1].try_exclusive("local-store").await.unwrap();
    assert!(other.is_some(), "holds are by name");
    // Dropped (as by a process that dies): the next asker gets it.
    drop(held);
    let t = Instant::now();
    loop {
        if n[1].try_exclusive("background").await.unwrap().is_some() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ends, as a database restart does, every connection holding one of the
/// cluster-wide holds (`try_exclusive`, `shared`); how many it ended.
async fn end_holds(db: &TestDb) -> usize {
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(k.pid) FROM pg_locks k
         WHERE k.locktype = 'advisory' AND k.classid = 1332636793::oid AND k.granted
           AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(ended.iter().all(|e| *e), "{ended:?}");
    ended.len()
}

/// The holds a node keeps on connections of their own outlive no restart
/// of the database unnoticed: the background work's says it is lost (its
/// node must stop that work: another may take it now), and a node's
/// presence is taken again (a node starting next is not alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_the_database_ended_is_told_lost_and_a_shared_one_is_taken_again() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    let background = n[0].try_exclusive("background").await.unwrap().unwrap();
    let _presence = n[0].shared("node").await.unwrap();
    assert!(n[1].try_exclusive("node").await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!background.is_lost(), "a hold that lives is not lost");
    assert_eq!(end_holds(&db).await, 2);
    let t = Instant::now();
    while !background.is_lost() {
        assert!(t.elapsed() < Duration::from_secs(4), "not told lost");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("told lost after {:?}", t.elapsed());
    // Lost means another may hold it.
    assert!(n[1].try_exclusive("background").await.unwrap().is_some());
    // The presence is held again: whoever asks whether it is alone is told
    // no (a hold taken in the moment between is given back at once).
    let t = Instant::now();
    while let Some(alone) = n[1].try_exclusive("node").await.unwrap() {
        drop(alone);
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "the presence was not taken again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("presence held again after {:?}", t.elapsed());
}

/// A node starting a moment after a restart of the database ended every
/// other node's holds finds `node` free, but is not misled into thinking
/// it is alone (it would run start-up recovery under the others' feet):
/// with sessions open, it sees them take their holds again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starting_as_the_database_ended_the_others_holds_is_told_they_are_at_work() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let at_work = db.connect().await;
    at_work.create_user(&user("cy")).await.unwrap();
    at_work
        .create_session(&session("s", "cy"), &[upload("u0", "s", "f", 1)])
        .await
        .unwrap();
    let _presence = at_work.shared("node").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The restart: every hold and presence of the node at work ends.
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(k.pid) FROM pg_locks k
         WHERE k.locktype = 'advisory' AND k.granted
           AND k.classid IN (1332636793::oid, 1315923045::oid)
           AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(ended.len(), 2, "its presence and its `node`");
    let starting = db.connect().await;
    let alone = starting.try_exclusive("node").await.unwrap();
    assert!(alone.is_some(), "`node` is free a moment after");
    let t = Instant::now();
    assert!(starting.others_at_work().await.unwrap());
    println!("the others were seen after {:?}", t.elapsed());
    drop(alone);
    drop(_presence);
    drop(at_work);
    // Nodes starting together (connected, none serving yet) are no others
    // at work, though sessions are open: the first to hold `node` is
    // alone, and recovers.
    let fresh = TestDb::create().await.unwrap();
    let (first, _second) = (fresh.connect().await, fresh.connect().await);
    first.create_user(&user("cy")).await.unwrap();
    first
        .create_session(&session("s", "cy"), &[upload("u0", "s", "f", 1)])
        .await
        .unwrap();
    assert!(first.try_exclusive("node").await.unwrap().is_some());
    assert!(!first.others_at_work().await.unwrap());
    // A node restarted alone (no other process connected) is told so at
    // once, though sessions are open.
    let own = TestDb::create().await.unwrap();
    let only = own.connect().await;
    only.create_user(&user("cy")).await.unwrap();
    only.create_session(&session("s", "cy"), &[upload("u0", "s", "f", 1)])
        .await
        .unwrap();
    let t = Instant::now();
    assert!(!only.others_at_work().await.unwrap());
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "kept waiting {:?}",
        t.elapsed()
    );
}

/// A restart of the database (here: every connection to it ended) costs
/// at most one statement an error, and that error says the database
/// cannot be reached (503: retry), not that it failed (500): the other
/// dead connections the pool kept are dropped before they are used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_the_database_fails_one_statement_at_most_and_as_unreachable() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let m = Postgres::connect_pooled(&db.url, 4).await.unwrap();
    m.create_user(&user("ann")).await.unwrap();
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let backends = "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()";
    // Statements at once: the pool opens its connections.
    for _ in 0..20 {
        let all = (0..16).map(|_| {
            let m = m.clone();
            tokio::spawn(async move { m.get_user("ann").await.unwrap() })
        });
        futures::future::join_all(all).await;
        let n: Vec<i32> = sqlx::query_scalar(backends)
            .fetch_all(&mut admin)
            .await
            .unwrap();
        // The listener, the presence, and the pool's.
        if n.len() >= 5 {
            break;
        }
    }
    let ended: Vec<bool> = sqlx::query_scalar(&format!(
        "SELECT pg_terminate_backend(pid) FROM ({backends}) b"
    ))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(ended.len() >= 5, "{} connections", ended.len());
    let mut failed = Vec::new();
    for _ in 0..12 {
        if let Err(e) = m.get_user("ann").await {
            failed.push(e);
        }
    }
    assert!(failed.len() <= 1, "{failed:?}");
    assert!(
        failed.iter().all(|e| matches!(e, MetaError::Unreachable)),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_one_nodes_until_released_and_overlaps_are_told_with_their_holder() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    let mut heard_by_0 = n[0].changes().unwrap();
    let mut heard_by_1 = n[1].changes().unwrap();
    let Claim::Granted(t0) = n[0].claim("u1", 0, 100, LeaseKind::Append).await.unwrap() else {
        panic!("a free key is granted");
    };
    // Overlapping: refused, naming the holder's lease and what it is for.
    let busy = n[1].claim("u1", 50, 60, LeaseKind::Write).await.unwrap();
    assert_eq!(
        busy,
        Claim::Busy(vec![Held {
            token: t0.clone(),
            kind: LeaseKind::Append
        }])
    );
    // Disjoint ranges and other keys are granted beside it.
    let Claim::Granted(t1) = n[1].claim("u1", 100, 200, LeaseKind::Write).await.unwrap() else {
        panic!("a disjoint range is granted");
    };
    assert!(matches!(
        n[1].claim("u2", 0, u64::MAX, LeaseKind::Commit)
            .await
            .unwrap(),
        Claim::Granted(_)
    ));
    // Asking reaches the holder; releasing is announced to everyone.
    n[1].ask_release(std::slice::from_ref(&t0)).await.unwrap();
    hear(&mut heard_by_0, Change::ReleaseAsked(t0.clone())).await;
    n[0].release(&t0).await.unwrap();
    hear(&mut heard_by_1, Change::Released("u1".into())).await;
    assert!(matches!(
        n[1].claim("u1", 0, 100, LeaseKind::Append).await.unwrap(),
        Claim::Granted(_)
    ));
    n[1].release(&t1).await.unwrap();

    // A release is announced only when a claim found the lease in its
    // way: the next announcement heard is the waited one's, not the
    // unwaited one's released before it.
    let Claim::Granted(quiet) = n[0].claim("u3", 0, 1, LeaseKind::Write).await.unwrap() else {
        panic!("a free key is granted");
    };
    let Claim::Granted(waited) = n[0].claim("u4", 0, 1, LeaseKind::Write).await.unwrap() else {
        panic!("a free key is granted");
    };
    assert!(matches!(
        n[1].claim("u4", 0, 1, LeaseKind::Write).await.unwrap(),
        Claim::Busy(_)
    ));
    n[0].release(&quiet).await.unwrap();
    n[0].release(&waited).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Change::Released(k) = heard_by_1.recv().await.unwrap() {
                return k;
            }
        }
    })
    .await
    .expect("the waited release is announced");
    assert_eq!(next, "u4");
}

/// A write sent to a node that never read its upload claims before the
/// read that authorizes it, so that claim disturbs nobody: made only on
/// an open upload for whom it is, refused (and no holder asked to let go)
/// while any live lease overlaps; once granted, it reads the upload,
/// marks it claimed, and takes the session's turn only for an append that
/// completes an upload committed on its last byte. A part's covers the
/// part's bytes only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_before_the_read_is_made_only_for_whom_the_upload_is_and_asks_nobody() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    n[0].create_user(&user("kim")).await.unwrap();
    let auto = Session {
        auto_commit: true,
        ..session("s1", "kim")
    };
    n[0].create_session(&auto, &[upload("u1", "s1", "a", 100)])
        .await
        .unwrap();
    n[0].create_session(&session("s2", "kim"), &[upload("u2", "s2", "b", 100)])
        .await
        .unwrap();
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let claimed = async |c: &mut sqlx::PgConnection, id: &str| -> bool {
        sqlx::query_scalar("SELECT claimed FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_one(c)
            .await
            .unwrap()
    };
    assert!(!claimed(&mut admin, "u1").await);

    // For a caller the upload is not for: nothing claimed, nothing marked.
    for by in [ClaimBy::Owner("eve".into()), ClaimBy::Session("s2".into())] {
        let Some((Claim::Busy(held), None, None)) = n[1]
            .claim_unread("u1", &by, ending(100, None))
            .await
            .unwrap()
        else {
            panic!("{by:?} claimed another's upload");
        };
        assert!(held.is_empty());
    }
    assert!(!claimed(&mut admin, "u1").await);
    let leases: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM leases")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(leases, 0);

    // Completing an auto-committed upload: the lease, the turn, the read.
    let Some((Claim::Granted(t1), Some(turn), Some((up, s)))) = n[1]
        .claim_unread("u1", &ClaimBy::Owner("kim".into()), ending(100, None))
        .await
        .unwrap()
    else {
        panic!("a free upload is granted with its turn and read");
    };
    assert_eq!((up.id.as_str(), s.id.as_str()), ("u1", "s1"));
    assert!(claimed(&mut admin, "u1").await);
    assert!(matches!(
        n[0].claim("session:s1", 0, u64::MAX, LeaseKind::Turn)
            .await
            .unwrap(),
        Claim::Busy(_)
    ));

    // Held: refused, and the holder is not asked to let go.
    let Some((Claim::Busy(held), None, None)) = n[0]
        .claim_unread("u1", &ClaimBy::Anyone, UnreadClaim::Append(None))
        .await
        .unwrap()
    else {
        panic!("a held upload is refused");
    };
    assert_eq!(held.iter().map(|h| &h.token).collect::<Vec<_>>(), [&t1]);
    let waited: bool = sqlx::query_scalar("SELECT waited FROM leases WHERE token = $1")
        .bind(&t1)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(
        !waited,
        "a claim before the read asked the holder to let go"
    );
    n[1].release(&t1).await.unwrap();
    n[1].release(&turn).await.unwrap();

    // No turn for an append that does not complete the upload, nor for a
    // session committed by request; one for an append that sets the
    // length of a deferred one and completes it.
    let deferred = Upload {
        length: Length::Deferred,
        ..upload("u3", "s3", "c", 0)
    };
    let s3 = Session {
        auto_commit: true,
        ..session("s3", "kim")
    };
    n[0].create_session(&s3, &[deferred]).await.unwrap();
    // Parts of a size whose products leave 64 bits.
    let huge = Upload {
        length: Length::Deferred,
        part_size: 1 << 62,
        ..upload("u4", "s4", "d", 0)
    };
    n[0].create_session(&session("s4", "kim"), &[huge])
        .await
        .unwrap();
    for (id, turn, takes) in [
        ("u1", ending(50, None), false),
        ("u2", ending(100, None), false),
        ("u3", ending(70, None), false),
        ("u3", ending(70, Some(70)), true),
    ] {
        let Some((Claim::Granted(t), got, Some(_))) = n[1]
            .claim_unread(id, &ClaimBy::Session(format!("s{}", &id[1..])), turn)
            .await
            .unwrap()
        else {
            panic!("{id} is granted");
        };
        assert_eq!(got.is_some(), takes, "{id} {turn:?}");
        n[1].release(&t).await.unwrap();
        if let Some(got) = got {
            n[1].release(&got).await.unwrap();
        }
    }
    // A part: its bytes as the part size places them (the last one to
    // the file's end; a deferred file's to the part's), beside another
    // part's lease; one the upload cannot have is not claimed.
    let span = async |c: &mut sqlx::PgConnection, token: &str| -> (i64, i64, String) {
        sqlx::query_as("SELECT lo, hi, kind FROM leases WHERE token = $1")
            .bind(token)
            .fetch_one(c)
            .await
            .unwrap()
    };
    let mut held = Vec::new();
    for (id, part, want) in [
        ("u1", 1, (0, 10)),
        ("u1", 10, (90, 100)),
        ("u3", 3, (20, 30)),
        ("u4", 2, (1 << 62, i64::MAX)),
    ] {
        let Some((Claim::Granted(t), None, Some(_))) = n[1]
            .claim_unread(id, &ClaimBy::Anyone, UnreadClaim::Part(part))
            .await
            .unwrap()
        else {
            panic!("part {part} of {id} is granted");
        };
        assert_eq!(span(&mut admin, &t).await, (want.0, want.1, "write".into()));
        held.push(t);
    }
    for (id, part) in [
        ("u1", 0),
        ("u1", 11),
        ("u1", ferry_meta::UNREAD_PARTS_MAX + 1),
        ("u4", 3),
    ] {
        let claimed = n[1]
            .claim_unread(id, &ClaimBy::Anyone, UnreadClaim::Part(part))
            .await
            .unwrap();
        let made = match &claimed {
            None => false,
            Some((Claim::Busy(h), None, None)) => !h.is_empty(),
            Some(_) => true,
        };
        assert!(!made, "part {part} of {id}: {claimed:?}");
    }
    // Part 1 held: the same part is refused, nobody asked; part 2 is free.
    let Some((Claim::Busy(busy), None, None)) = n[0]
        .claim_unread("u1", &ClaimBy::Anyone, UnreadClaim::Part(1))
        .await
        .unwrap()
    else {
        panic!("a held part is refused");
    };
    assert_eq!(busy.len(), 1);
    let Some((Claim::Granted(t2), None, Some(_))) = n[0]
        .claim_unread("u1", &ClaimBy::Anyone, UnreadClaim::Part(2))
        .await
        .unwrap()
    else {
        panic!("a free part is granted beside a held one");
    };
    held.push(t2);
    let waited: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM leases WHERE waited")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(waited, 0);
    for t in held {
        n[0].release(&t).await.unwrap();
    }

    // No claim at all on an unknown upload, nor on an ended one.
    n[0].abort_uploads(&["u2".to_owned()], SessionEnd::Keep)
        .await
        .unwrap();
    for id in ["nope", "u2"] {
        let Some((Claim::Busy(held), None, None)) = n[1]
            .claim_unread(id, &ClaimBy::Anyone, ending(100, None))
            .await
            .unwrap()
        else {
            panic!("{id} is claimed");
        };
        assert!(held.is_empty());
    }
    let leases: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM leases")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(leases, 0);
}

fn ending(end: u64, total: Option<u64>) -> UnreadClaim<'static> {
    UnreadClaim::Append(Some(TurnIfEnding {
        prefix: "session:",
        end,
        total,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_with_a_turn_takes_the_turn_only_once_its_claim_is_granted() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    // Both free: both granted, in one statement.
    let (claim, turn) = n[0]
        .claim_with_turn("u1", 0, u64::MAX, LeaseKind::Append, "session:s1")
        .await
        .unwrap();
    let Claim::Granted(append) = claim else {
        panic!("a free key is granted");
    };
    let turn = turn.expect("a free turn is granted with it");
    assert!(matches!(
        n[1].claim("session:s1", 0, u64::MAX, LeaseKind::Turn)
            .await
            .unwrap(),
        Claim::Busy(_)
    ));
    // The claim refused: the turn is not taken.
    let (claim, turn2) = n[1]
        .claim_with_turn("u1", 0, u64::MAX, LeaseKind::Append, "session:s2")
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Busy(_)), "{claim:?}");
    assert_eq!(turn2, None);
    assert!(matches!(
        n[0].claim("session:s2", 0, u64::MAX, LeaseKind::Turn)
            .await
            .unwrap(),
        Claim::Granted(_)
    ));
    // The turn held elsewhere: the claim is granted without it, and the
    // turn's holder is told when it releases.
    let mut heard_by_1 = n[1].changes().unwrap();
    let (claim, turn3) = n[1]
        .claim_with_turn("u2", 0, u64::MAX, LeaseKind::Append, "session:s1")
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Granted(_)), "{claim:?}");
    assert_eq!(turn3, None);
    n[0].release(&turn).await.unwrap();
    hear(&mut heard_by_1, Change::Released("session:s1".into())).await;
    n[0].release(&append).await.unwrap();
}

/// An append's claim reads the upload once it is granted, in the same
/// statement (`claim_and_read`): what the lease's previous holder on
/// another node recorded before letting go is in the read; a refused
/// claim reads nothing; the turn is taken with it as by
/// `claim_with_turn`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_and_read_sees_what_the_previous_holder_recorded_before_letting_go() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    n[0].create_session(&session("s1", "ivy"), &[upload("u1", "s1", "d/f.bin", 8)])
        .await
        .unwrap();
    let (claim, turn, read) = n[0]
        .claim_and_read("u1", 0, u64::MAX, LeaseKind::Append, None)
        .await
        .unwrap();
    let Claim::Granted(first) = claim else {
        panic!("a free upload is granted: {claim:?}");
    };
    assert_eq!(turn, None);
    let (up, s) = read.expect("granted: the upload is read");
    assert_eq!((up.id.as_str(), s.id.as_str()), ("u1", "s1"));
    assert!(up.received.is_empty());
    // Held: the other node's claim is refused and reads nothing.
    let (claim, _, read) = n[1]
        .claim_and_read("u1", 0, u64::MAX, LeaseKind::Append, Some("session:s1"))
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Busy(_)), "{claim:?}");
    assert!(read.is_none());
    // The holder records 0..5 as it lets go; the next claim reads it.
    n[0].record_write_releasing(
        "u1",
        ferry_core::ByteRange::new(0, 5).unwrap(),
        None,
        &[],
        &first,
    )
    .await
    .unwrap();
    let (claim, turn, read) = n[1]
        .claim_and_read("u1", 0, u64::MAX, LeaseKind::Append, Some("session:s1"))
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Granted(_)), "{claim:?}");
    assert!(turn.is_some(), "the free turn is taken with the claim");
    let (up, s) = read.expect("granted: the upload is read");
    assert_eq!(up.received.prefix_len(), 5);
    assert_eq!(s.state, SessionState::Open);
    assert_eq!(
        (Some(up), Some(s)),
        (
            n[0].get_upload("u1").await.unwrap(),
            n[0].get_session("s1").await.unwrap()
        ),
        "the claim reads the upload and session as recorded"
    );
    // An upload that does not exist: granted, nothing read.
    let (claim, _, read) = n[0]
        .claim_and_read("nope", 0, u64::MAX, LeaseKind::Append, None)
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Granted(_)), "{claim:?}");
    assert!(read.is_none());
}

/// The read of `claim_and_read` is taken after its claim, not with the
/// statement's snapshot: a holder whose release (its last range recorded
/// in the same transaction) commits while the claim waits for it is
/// read with that range. And a claim that reads only the states
/// (`claim_and_states`) sees the upload committed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_reads_what_a_release_it_waited_for_recorded() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    n[0].create_session(&session("s1", "ivy"), &[upload("u1", "s1", "d/f.bin", 8)])
        .await
        .unwrap();
    let Claim::Granted(first) = n[0]
        .claim("u1", 0, u64::MAX, LeaseKind::Append)
        .await
        .unwrap()
    else {
        panic!("a free upload is granted");
    };
    // The holder records 0..3 and ends its lease in a transaction that
    // stays open: the claim below waits on the lease's row.
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    for sql in [
        "BEGIN",
        "INSERT INTO ranges (upload_id, start, \"end\") VALUES ('u1', 0, 3)",
    ] {
        sqlx::query(sql).execute(&mut holder).await.unwrap();
    }
    sqlx::query("DELETE FROM leases WHERE token = $1")
        .bind(&first)
        .execute(&mut holder)
        .await
        .unwrap();
    let claimer = n[1].clone();
    let claim = tokio::spawn(async move {
        claimer
            .claim_and_read("u1", 0, u64::MAX, LeaseKind::Append, None)
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !claim.is_finished(),
        "the claim waits for the holder's release"
    );
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    let (claim, _, read) = claim.await.unwrap();
    let Claim::Granted(second) = claim else {
        panic!("released: granted, {claim:?}");
    };
    let (up, _) = read.expect("granted: the upload is read");
    assert_eq!(
        up.received.prefix_len(),
        3,
        "the range recorded with the release"
    );
    // The upload committed elsewhere: a later claim's states say so.
    sqlx::query("UPDATE uploads SET state = 'committed' WHERE id = 'u1'")
        .execute(&mut holder)
        .await
        .unwrap();
    n[1].release(&second).await.unwrap();
    let (claim, states) = n[0]
        .claim_and_states("u1", 0, 4, LeaseKind::Write)
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Granted(_)), "{claim:?}");
    assert_eq!(states, Some((UploadState::Committed, SessionState::Open)));
    let (claim, states) = n[1]
        .claim_and_states("u1", 2, 6, LeaseKind::Write)
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Busy(_)), "{claim:?}");
    assert_eq!(states, None);
}

/// The claim of a session's turn reads the session and its uploads,
/// oldest first, once granted (`claim_turn_and_read`), as
/// `get_session` and `session_uploads` read them; a session without
/// uploads reads none; a refused claim reads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commits_claim_takes_the_turn_and_its_uploads_commit_leases_all_or_none() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    n[0].create_session(
        &session("s1", "ivy"),
        &[upload("u2", "s1", "b", 3), upload("u1", "s1", "a", 8)],
    )
    .await
    .unwrap();
    n[0].record_write("u1", ferry_core::ByteRange::new(0, 4).unwrap(), None, &[])
        .await
        .unwrap();
    n[0].create_session(&session("s2", "ivy"), &[])
        .await
        .unwrap();
    let turn = n[0].claim_commit_turn("session:s1", "s1").await.unwrap();
    let Claim::Granted(token) = turn.claim else {
        panic!("a free turn is granted: {:?}", turn.claim);
    };
    let (s, uploads) = turn.read.expect("granted: the session is read");
    assert_eq!(Some(s), n[1].get_session("s1").await.unwrap());
    assert_eq!(uploads, n[1].session_uploads("s1").await.unwrap());
    assert_eq!(uploads.len(), 2);
    let ids: Vec<&str> = turn.commits.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["u2", "u1"],
        "each open upload's commit lease, in order"
    );
    // Held: another node's write and commit claim are refused.
    let write = n[1].claim("u1", 0, 4, LeaseKind::Write).await.unwrap();
    assert!(matches!(write, Claim::Busy(_)), "{write:?}");
    let other = n[1].claim_commit_turn("session:s1", "s1").await.unwrap();
    assert!(matches!(other.claim, Claim::Busy(_)), "{:?}", other.claim);
    assert!(other.read.is_none() && other.commits.is_empty());
    n[0].release(&token).await.unwrap();
    for (_, t) in &turn.commits {
        n[0].release(t).await.unwrap();
    }

    // A write in flight on u1: the turn is granted, no commit lease is
    // (u2's, taken before u1's, is not left behind).
    let Claim::Granted(write) = n[1].claim("u1", 4, 8, LeaseKind::Write).await.unwrap() else {
        panic!("a free range is granted");
    };
    let turn = n[0].claim_commit_turn("session:s1", "s1").await.unwrap();
    let Claim::Granted(token) = turn.claim else {
        panic!("the turn is free: {:?}", turn.claim);
    };
    assert!(turn.commits.is_empty(), "{:?}", turn.commits);
    assert!(turn.read.is_some());
    let Claim::Granted(w2) = n[1].claim("u2", 0, 3, LeaseKind::Write).await.unwrap() else {
        panic!("no commit lease of u2 is left behind");
    };
    n[0].release(&token).await.unwrap();
    n[1].release(&w2).await.unwrap();
    n[1].release(&write).await.unwrap();

    // The turn held elsewhere: refused, and no commit lease is left.
    let Claim::Granted(held) = n[1]
        .claim("session:s1", 0, u64::MAX, LeaseKind::Turn)
        .await
        .unwrap()
    else {
        panic!("a free turn is granted");
    };
    let turn = n[0].claim_commit_turn("session:s1", "s1").await.unwrap();
    assert!(matches!(turn.claim, Claim::Busy(_)), "{:?}", turn.claim);
    assert!(turn.commits.is_empty() && turn.read.is_none());
    let write = n[1].claim("u1", 0, 4, LeaseKind::Write).await.unwrap();
    assert!(matches!(write, Claim::Granted(_)), "{write:?}");
    n[1].release(&held).await.unwrap();

    let turn = n[1].claim_commit_turn("session:s2", "s2").await.unwrap();
    assert!(matches!(turn.claim, Claim::Granted(_)), "{:?}", turn.claim);
    let (s, uploads) = turn.read.expect("granted: the session is read");
    assert_eq!((s.id.as_str(), uploads.len()), ("s2", 0));
    let turn = n[1]
        .claim_commit_turn("session:nope", "nope")
        .await
        .unwrap();
    assert!(turn.read.is_none());
}

/// `commit_if_free_unclaimed`: a commit that claimed nothing records its
/// result only when the records say what it worked from and no lease
/// holds the upload or the session's turn; else nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_claimed_nothing_records_only_what_it_worked_from() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    let sealed =
        vec![ferry_core::Digest::new(ferry_core::DigestAlgo::Sha256, vec![7; 32]).unwrap()];
    let whole = ferry_core::ByteRange::new(0, 4).unwrap();
    for (sid, uid) in [("g1", "gu1"), ("g2", "gu2")] {
        n[0].create_session(&session(sid, "ivy"), &[upload(uid, sid, "f", 4)])
            .await
            .unwrap();
        n[0].record_write(uid, whole, None, &sealed).await.unwrap();
    }
    n[0].add_uploads("g2", &[upload("gu3", "g2", "other", 4)], 10)
        .await
        .unwrap();
    let gate = ferry_meta::CommitGate {
        turn: "session:g1".into(),
        session_id: "g1".into(),
        upload_id: "gu1".into(),
        whole: true,
        sealed: sealed.clone(),
        object: None,
        metadata: None,
        content_type: None,
        dialect_state: None,
        expires_at: 1_000_000,
        with_write: false,
    };
    let done = committed("gu1", "ivy", "g/one", "gf1");
    let end = SessionEnd::To("g1", SessionState::Committed);
    let try_commit = |gate: ferry_meta::CommitGate| {
        let (n, done) = (&n, &done);
        async move {
            n[1].commit_if_free_unclaimed(&gate, end, done, &[])
                .await
                .unwrap()
        }
    };
    let open = || async { n[1].get_upload("gu1").await.unwrap().unwrap().state };

    // Held elsewhere: a write of the upload, the session's turn.
    for key in ["gu1", "session:g1"] {
        let Claim::Granted(t) = n[0].claim(key, 0, 4, LeaseKind::Write).await.unwrap() else {
            panic!("free");
        };
        assert_eq!(try_commit(gate.clone()).await, None, "{key} is leased");
        assert_eq!(open().await, UploadState::Open);
        n[0].release(&t).await.unwrap();
    }
    // What it worked from is not what the records say.
    let other = ferry_core::Digest::new(ferry_core::DigestAlgo::Sha256, vec![8; 32]).unwrap();
    let stale = [
        ferry_meta::CommitGate {
            sealed: vec![other],
            ..gate.clone()
        },
        ferry_meta::CommitGate {
            metadata: Some("m".into()),
            ..gate.clone()
        },
        ferry_meta::CommitGate {
            content_type: Some("text/plain".into()),
            ..gate.clone()
        },
        ferry_meta::CommitGate {
            dialect_state: Some("d".into()),
            ..gate.clone()
        },
        ferry_meta::CommitGate {
            expires_at: 999,
            ..gate.clone()
        },
    ];
    for g in stale {
        assert_eq!(try_commit(g.clone()).await, None, "{g:?}");
        assert_eq!(open().await, UploadState::Open);
    }
    // Written directly (a presigned part): its object is read back at
    // commit, the usual way.
    n[0].create_session(&session("g3", "ivy"), &[upload("gu4", "g3", "f", 4)])
        .await
        .unwrap();
    n[0].record_write("gu4", whole, None, &sealed)
        .await
        .unwrap();
    n[0].mark_direct("gu4").await.unwrap();
    let g3 = ferry_meta::CommitGate {
        turn: "session:g3".into(),
        session_id: "g3".into(),
        upload_id: "gu4".into(),
        ..gate.clone()
    };
    let done3 = committed("gu4", "ivy", "g/three", "gf3");
    let end3 = SessionEnd::To("g3", SessionState::Committed);
    let got = n[1]
        .commit_if_free_unclaimed(&g3, end3, &done3, &[])
        .await
        .unwrap();
    assert_eq!(got, None, "written directly");

    // A whole session's commit of one upload of two.
    let g2 = ferry_meta::CommitGate {
        turn: "session:g2".into(),
        session_id: "g2".into(),
        upload_id: "gu2".into(),
        ..gate.clone()
    };
    let done2 = committed("gu2", "ivy", "g/two", "gf2");
    let end2 = SessionEnd::To("g2", SessionState::Committed);
    let got = n[1]
        .commit_if_free_unclaimed(&g2, end2, &done2, &[])
        .await
        .unwrap();
    assert_eq!(got, None, "the session has another upload");
    assert_eq!(
        n[1].get_upload("gu2").await.unwrap().unwrap().state,
        UploadState::Open
    );

    // As it worked from: recorded, the session committed with it.
    assert_eq!(
        try_commit(gate.clone()).await,
        Some(Some(SessionState::Committed))
    );
    assert_eq!(open().await, UploadState::Committed);
    assert!(
        n[0].get_file(&sp("ivy"), &p("g/one"))
            .await
            .unwrap()
            .is_some()
    );
    let committed = n[1].get_upload("gu1").await.unwrap().unwrap();
    assert!(committed.received.is_empty(), "its ranges went with it");
    // Once only.
    assert_eq!(try_commit(gate).await, None);
}

/// `commit_if_free_unclaimed` with the write recorded in its step
/// (`with_write`): the upload is committed, with the write's sealed
/// digests, only as it was made: never claimed, no lease of it (not even
/// a dead node's), nothing received, sealed or numbered as a part, no
/// claim of it under way, no live lease of the session's turn, still
/// open, its file record's columns unchanged, alone in its session; else
/// nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_records_its_write_commits_only_an_upload_nobody_touched() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    let ids = ["w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9"];
    for sid in ids {
        let uid = format!("{sid}u");
        n[0].create_session(&session(sid, "joy"), &[upload(&uid, sid, sid, 4)])
            .await
            .unwrap();
    }
    n[0].add_uploads("w9", &[upload("w9v", "w9", "other", 4)], 10)
        .await
        .unwrap();
    let sealed =
        vec![ferry_core::Digest::new(ferry_core::DigestAlgo::Sha256, vec![7; 32]).unwrap()];
    let whole = ferry_core::ByteRange::new(0, 4).unwrap();
    let gate = |sid: &str| ferry_meta::CommitGate {
        turn: format!("session:{sid}"),
        session_id: sid.into(),
        upload_id: format!("{sid}u"),
        whole: true,
        sealed: sealed.clone(),
        object: Some(format!("{sid}u.w1")),
        metadata: None,
        content_type: None,
        dialect_state: None,
        expires_at: 1_000_000,
        with_write: true,
    };
    let try_commit = |g: ferry_meta::CommitGate| {
        let n = &n;
        async move {
            let sid = g.session_id.clone();
            let done = committed(&g.upload_id, "joy", &format!("f/{sid}"), &format!("{sid}f"));
            let end = SessionEnd::To(&sid, SessionState::Committed);
            n[1].commit_if_free_unclaimed(&g, end, &done, &[])
                .await
                .unwrap()
        }
    };
    let untouched = |id: &'static str| {
        let n = &n;
        async move {
            let u = n[1].get_upload(&format!("{id}u")).await.unwrap().unwrap();
            u.state == UploadState::Open && u.sealed.is_empty()
        }
    };
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();

    // Claimed: refused under the lease, and after it (the claim's mark).
    let Claim::Granted(t) = n[0].claim("w1u", 0, 4, LeaseKind::Write).await.unwrap() else {
        panic!("a free key is granted");
    };
    assert_eq!(try_commit(gate("w1")).await, None, "under a write's lease");
    n[0].release(&t).await.unwrap();
    assert_eq!(try_commit(gate("w1")).await, None, "after a claim of it");
    assert!(untouched("w1").await);
    // A dead node's lease of the upload: its request may have written.
    sqlx::query("INSERT INTO leases (token, key, lo, hi, kind, node) VALUES ('tw2', 'w2u', 0, 4, 'write', 987654)")
        .execute(&mut c)
        .await
        .unwrap();
    assert_eq!(
        try_commit(gate("w2")).await,
        None,
        "under a dead node's lease"
    );
    assert!(untouched("w2").await);
    // Recorded already: a range and its sealed digests; a part alone.
    n[0].record_write("w3u", whole, None, &sealed)
        .await
        .unwrap();
    assert_eq!(try_commit(gate("w3")).await, None, "recorded twice");
    assert_eq!(
        n[1].get_upload("w3u").await.unwrap().unwrap().state,
        UploadState::Open
    );
    sqlx::query("INSERT INTO parts (upload_id, number, \"offset\", size) VALUES ('w4u', 1, 0, 4)")
        .execute(&mut c)
        .await
        .unwrap();
    assert_eq!(try_commit(gate("w4")).await, None, "a part recorded");
    assert!(untouched("w4").await);
    // A claim of it under way (its lock taken): refused at once.
    sqlx::query("SELECT pg_advisory_lock(1281712499, hashtext('w5u'))")
        .execute(&mut c)
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(try_commit(gate("w5")).await, None, "a claim under way");
    assert!(started.elapsed() < Duration::from_secs(2), "it waited");
    sqlx::query("SELECT pg_advisory_unlock(1281712499, hashtext('w5u'))")
        .execute(&mut c)
        .await
        .unwrap();
    assert!(untouched("w5").await);
    // The session's turn leased: refused; once it ends (a turn marks no
    // upload), committed.
    let Claim::Granted(t) = n[0]
        .claim("session:w6", 0, u64::MAX, LeaseKind::Turn)
        .await
        .unwrap()
    else {
        panic!("a free key is granted");
    };
    assert_eq!(
        try_commit(gate("w6")).await,
        None,
        "under the session's turn"
    );
    assert!(untouched("w6").await);
    n[0].release(&t).await.unwrap();
    assert_eq!(
        try_commit(gate("w6")).await,
        Some(Some(SessionState::Committed))
    );
    // The write is recorded with the result, with the object it named.
    let up = n[0].get_upload("w6u").await.unwrap().unwrap();
    assert_eq!(
        (up.state, up.object.as_deref()),
        (UploadState::Committed, Some("w6u.w1"))
    );
    assert_eq!(up.sealed, sealed);
    // Not what it worked from; ended; not alone in its session.
    let stale = ferry_meta::CommitGate {
        metadata: Some("m".into()),
        ..gate("w7")
    };
    assert_eq!(try_commit(stale).await, None, "stale metadata");
    assert!(untouched("w7").await);
    n[0].fail_upload("w8u", "refused").await.unwrap();
    assert_eq!(try_commit(gate("w8")).await, None, "an aborted upload");
    assert_eq!(try_commit(gate("w9")).await, None, "another upload");
    assert!(untouched("w9").await);
    c.close().await.unwrap();

    // Untouched: committed with the write's digests, its session with it;
    // once.
    assert_eq!(
        try_commit(gate("w7")).await,
        Some(Some(SessionState::Committed))
    );
    let up = n[0].get_upload("w7u").await.unwrap().unwrap();
    assert_eq!(up.state, UploadState::Committed);
    assert_eq!(up.sealed, sealed);
    assert!(up.received.is_empty());
    assert_eq!(
        n[0].get_session("w7").await.unwrap().unwrap().state,
        SessionState::Committed
    );
    assert!(
        n[0].get_file(&sp("joy"), &p("f/w7"))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(try_commit(gate("w7")).await, None, "committed twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leases_of_a_node_whose_connection_died_are_taken_over_at_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    let mut heard_by_0 = n[0].changes().unwrap();
    let Claim::Granted(t0) = n[0]
        .claim("u1", 0, u64::MAX, LeaseKind::Turn)
        .await
        .unwrap()
    else {
        panic!("a free key is granted");
    };
    assert!(matches!(
        n[0].claim("never-again", 0, 1, LeaseKind::Turn)
            .await
            .unwrap(),
        Claim::Granted(_)
    ));
    assert!(matches!(
        n[1].claim("u1", 0, 1, LeaseKind::Turn).await.unwrap(),
        Claim::Busy(_)
    ));
    // Node 0's presence ends as a killed process's does.
    end_presence(&db, &t0).await;
    let t = Instant::now();
    loop {
        if let Claim::Granted(_) = n[1].claim("u1", 0, 1, LeaseKind::Turn).await.unwrap() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "not taken over within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The node finds out, gives its leases up, and comes back present.
    hear(&mut heard_by_0, Change::LeasesLost).await;
    // What the dead node held on a key nobody claims again is swept (its
    // lease on "u1" was taken over above); live leases stay.
    assert_eq!(n[1].forget_dead_leases().await.unwrap(), 1);
    assert_eq!(n[1].forget_dead_leases().await.unwrap(), 0);
    assert!(matches!(
        n[1].claim("u1", 0, 1, LeaseKind::Turn).await.unwrap(),
        Claim::Busy(_)
    ));
    let t = Instant::now();
    loop {
        let Claim::Granted(mine) = n[0].claim("u3", 0, 1, LeaseKind::Turn).await.unwrap() else {
            panic!("a free key is granted");
        };
        match n[1].claim("u3", 0, 1, LeaseKind::Turn).await.unwrap() {
            Claim::Busy(_) => break,
            // Claimed under the lapsed id: not alive yet.
            Claim::Granted(theirs) => {
                n[1].release(&theirs).await.unwrap();
                n[0].release(&mine).await.unwrap();
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the node did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ends the presence of the node holding lease `token` as a killed
/// process's ends: PostgreSQL drops the connection holding its presence
/// lock.
async fn end_presence(db: &TestDb, token: &str) {
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // Waits (5 s at most) until the backend is gone: until then its
    // presence lock is held, and every node still sees the holder alive
    // (a fence then finds no dead node to end).
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(k.pid, 5000) FROM pg_locks k
         WHERE k.locktype = 'advisory' AND k.classid = 1315923045::oid AND k.granted
           AND k.objid = (SELECT node FROM leases WHERE token = $1)::oid",
    )
    .bind(token)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(ended, vec![true], "the presence's backend did not end");
}

/// Waits (3 s at most) until `want` is heard.
async fn hear(heard: &mut tokio::sync::broadcast::Receiver<Change>, want: Change) {
    tokio::time::timeout(Duration::from_secs(3), async {
        while heard.recv().await.unwrap() != want {}
    })
    .await
    .unwrap_or_else(|_| panic!("{want:?} not heard within 3 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_are_waited_for_in_order_and_end_with_their_hold() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    let held = n[0].turn("namespace:alice").await.unwrap();
    let waiter = {
        let other = n[1].clone();
        tokio::spawn(async move { other.turn("namespace:alice").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the waiter waits while it is held");
    // Another name is not in the way, on either node.
    drop(n[1].turn("namespace:bob").await.unwrap());
    drop(n[0].turn("namespace:bob").await.unwrap());
    drop(held);
    let got = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("granted once the holder let go");
    drop(got.unwrap().unwrap());
}

#[tokio::test]
async fn an_upload_being_committed_takes_its_path_and_around_it_for_every_node() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    n[0].create_user(&user("ivy")).await.unwrap();
    n[0].create_session(&session("s1", "ivy"), &[upload("u1", "s1", "d/f.bin", 1)])
        .await
        .unwrap();
    let space = sp("ivy");
    let around = |path: &str| {
        let (node, space, path) = (n[1].clone(), space.clone(), p(path));
        async move { node.committing_around(&space, &path).await }
    };
    assert_eq!(
        around("d/f.bin").await.unwrap(),
        None,
        "nothing committing yet"
    );
    n[0].begin_commit(None, &[("u1".into(), p("d/f.bin"))], &[])
        .await
        .unwrap();
    assert_eq!(around("d/f.bin").await.unwrap(), Some(Occupant::Folder));
    assert_eq!(around("d").await.unwrap(), Some(Occupant::Folder));
    assert_eq!(
        around("d/f.bin/x").await.unwrap(),
        Some(Occupant::FileAncestor(p("d/f.bin")))
    );
    assert_eq!(around("d/g.bin").await.unwrap(), None);
    assert_eq!(around("d/f.bin2").await.unwrap(), None);
    // `path_taken` says the same in one read: the commit first.
    let taken = |path: &str| {
        let (node, space, path) = (n[1].clone(), space.clone(), p(path));
        async move { node.path_taken(&space, &path).await.unwrap() }
    };
    assert_eq!(taken("d").await, PathTaken::Committing(Occupant::Folder));
    assert_eq!(
        taken("d/f.bin/x").await,
        PathTaken::Committing(Occupant::FileAncestor(p("d/f.bin")))
    );
    assert_eq!(taken("d/g.bin").await, PathTaken::Free);
    // Another space's paths are not taken.
    n[0].create_user(&user("jay")).await.unwrap();
    assert_eq!(
        n[1].committing_around(&sp("jay"), &p("d/f.bin"))
            .await
            .unwrap(),
        None
    );
    // Once recorded, the file is the occupant, not the commit.
    n[0].finish_commit(
        SessionEnd::IfSettled("s1"),
        &[committed("u1", "ivy", "d/f.bin", "f1")],
    )
    .await
    .unwrap();
    assert_eq!(around("d/f.bin").await.unwrap(), None);
    let PathTaken::Occupied(Occupant::File(f)) = taken("d/f.bin").await else {
        panic!("the file is the occupant");
    };
    assert_eq!(f.id, "f1");
    assert_eq!(taken("d").await, PathTaken::Occupied(Occupant::Folder));
    assert_eq!(
        taken("d/f.bin/x").await,
        PathTaken::Occupied(Occupant::FileAncestor(p("d/f.bin")))
    );
    assert_eq!(taken("e").await, PathTaken::Free);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_a_write_can_end_its_lease_in_the_same_step() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    n[0].create_user(&user("kim")).await.unwrap();
    n[0].create_session(&session("s1", "kim"), &[upload("u1", "s1", "a", 100)])
        .await
        .unwrap();
    let mut heard = n[1].changes().unwrap();
    let Claim::Granted(t) = n[0].claim("u1", 0, 50, LeaseKind::Write).await.unwrap() else {
        panic!("a free key is granted");
    };
    // n[1] waits for it: its release is announced.
    assert!(matches!(
        n[1].claim("u1", 0, 50, LeaseKind::Write).await.unwrap(),
        Claim::Busy(_)
    ));
    let part = ferry_core::Part {
        number: 1,
        offset: 0,
        size: 50,
        sha256: Some("ab".repeat(32)),
        sha1: None,
        md5: None,
    };
    n[0].record_write_releasing(
        "u1",
        ferry_core::ByteRange::new(0, 50).unwrap(),
        Some(&part),
        &[],
        &t,
    )
    .await
    .unwrap();
    let up = n[1].get_upload("u1").await.unwrap().unwrap();
    assert_eq!(
        up.received.ranges(),
        &[ferry_core::ByteRange::new(0, 50).unwrap()]
    );
    assert_eq!(up.parts.get(&1), Some(&part));
    hear(&mut heard, Change::Released("u1".into())).await;
    assert!(matches!(
        n[1].claim("u1", 0, 50, LeaseKind::Write).await.unwrap(),
        Claim::Granted(_)
    ));
    // Without a part, too.
    let Claim::Granted(t) = n[0].claim("u1", 50, 60, LeaseKind::Write).await.unwrap() else {
        panic!("a free range is granted");
    };
    assert!(matches!(
        n[1].claim("u1", 55, 56, LeaseKind::Write).await.unwrap(),
        Claim::Busy(_)
    ));
    n[0].record_write_releasing(
        "u1",
        ferry_core::ByteRange::new(50, 60).unwrap(),
        None,
        &[],
        &t,
    )
    .await
    .unwrap();
    hear(&mut heard, Change::Released("u1".into())).await;
}

/// A node presumed gone (its presence connection died) may still be
/// finishing a write when another node takes its lease over: that write's
/// record, which ends the lease, is refused whole once the lease is
/// another's, and the new holder's view stays what it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_lease_another_node_took_over_is_not_recorded() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    n[0].create_user(&user("kim")).await.unwrap();
    n[0].create_session(&session("s1", "kim"), &[upload("u1", "s1", "a", 100)])
        .await
        .unwrap();
    let Claim::Granted(stale) = n[0]
        .claim("u1", 0, u64::MAX, LeaseKind::Append)
        .await
        .unwrap()
    else {
        panic!("a free key is granted");
    };
    end_presence(&db, &stale).await;
    let t = Instant::now();
    let taken = loop {
        if let Claim::Granted(t) = n[1]
            .claim("u1", 0, u64::MAX, LeaseKind::Append)
            .await
            .unwrap()
        {
            break t;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "not taken over within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let part = ferry_core::Part {
        number: 1,
        offset: 0,
        size: 50,
        sha256: Some("ab".repeat(32)),
        sha1: None,
        md5: None,
    };
    let digest = ferry_core::Digest::new(ferry_core::DigestAlgo::Sha256, vec![7; 32]).unwrap();
    // The takeover ended the dead node's connections (`ferry_fence`): the
    // first statement after it may find its connection gone.
    let mut tries = 0;
    let err = loop {
        tries += 1;
        let err = n[0]
            .record_write_releasing(
                "u1",
                ferry_core::ByteRange::new(0, 50).unwrap(),
                Some(&part),
                std::slice::from_ref(&digest),
                &stale,
            )
            .await
            .unwrap_err();
        if !matches!(err, MetaError::Unreachable) || tries == 3 {
            break err;
        }
    };
    assert!(matches!(err, MetaError::LeaseLost), "{err:?}");
    let up = n[1].get_upload("u1").await.unwrap().unwrap();
    assert!(up.received.is_empty(), "{:?}", up.received);
    assert!(up.parts.is_empty() && up.sealed.is_empty(), "{up:?}");
    // The new holder's lease is untouched, and its own record ends it.
    assert!(matches!(
        n[0].claim("u1", 0, 1, LeaseKind::Write).await.unwrap(),
        Claim::Busy(_)
    ));
    n[1].record_write_releasing(
        "u1",
        ferry_core::ByteRange::new(0, 50).unwrap(),
        None,
        &[],
        &taken,
    )
    .await
    .unwrap();
    let up = n[0].get_upload("u1").await.unwrap().unwrap();
    assert_eq!(
        up.received.ranges(),
        &[ferry_core::ByteRange::new(0, 50).unwrap()]
    );
}

/// A statement's connection is handed to the next statement instead of
/// going back to the pool (which tests each with a round trip), yet none
/// sits unused while a caller waits: with a pool of two, many statements
/// at once, transactions alone, and both together all get a connection
/// (a wait for a kept connection nobody uses would end in the pool's
/// timeout, an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_and_transactions_beyond_the_pool_all_get_a_connection() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let m = Postgres::connect_pooled(&db.url, 2).await.unwrap();
    m.create_user(&user("ann")).await.unwrap();
    m.create_session(&session("s1", "ann"), &[upload("u0", "s1", "p0", 10)])
        .await
        .unwrap();
    let reads = |n: usize| -> Vec<_> {
        (0..n)
            .map(|_| {
                let m = m.clone();
                tokio::spawn(async move { m.get_user("ann").await.map(|_| ()) })
            })
            .collect()
    };
    let adds = |round: usize, n: usize| -> Vec<_> {
        (0..n)
            .map(|k| {
                let m = m.clone();
                let id = format!("u{round}-{k}");
                tokio::spawn(async move {
                    let up = upload(&id, "s1", &format!("p/{id}"), 10);
                    m.add_uploads("s1", &[up], 1000).await
                })
            })
            .collect()
    };
    for round in 1..=4 {
        // Statements alone: both connections end up kept.
        for r in futures::future::join_all(reads(32)).await {
            r.unwrap().unwrap();
        }
        // A transaction alone, then transactions among statements.
        for r in futures::future::join_all(adds(round * 10, 1)).await {
            r.unwrap().unwrap();
        }
        let mut all = reads(24);
        all.extend(adds(round, 6));
        for r in futures::future::join_all(all).await {
            r.unwrap().unwrap();
        }
    }
    let s = m.get_session("s1").await.unwrap().unwrap();
    assert_eq!(s.id, "s1");
}

/// A statement of a node presumed gone can still be under way in the
/// database (PostgreSQL runs it to its end though its client died): the
/// node that takes the dead node's lease over ends it first
/// (`ferry_fence`), so it never lands after the new holder read the
/// records. Pinned by a statement held behind a row lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_statement_under_way_never_lands_after_its_lease_is_taken_over() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    n[0].create_user(&user("kim")).await.unwrap();
    n[0].create_session(&session("s1", "kim"), &[upload("u1", "s1", "a", 100)])
        .await
        .unwrap();
    let Claim::Granted(stale) = n[0]
        .claim("s1", 0, u64::MAX, LeaseKind::Turn)
        .await
        .unwrap()
    else {
        panic!("a free key is granted");
    };
    let (mut admin, under_way) = stalled_change(&db, &n[0]).await;
    end_presence(&db, &stale).await;
    let t = Instant::now();
    loop {
        if let Claim::Granted(_) = n[1]
            .claim("s1", 0, u64::MAX, LeaseKind::Turn)
            .await
            .unwrap()
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "not taken over within 3 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    never_lands(&n[1], &mut admin, under_way).await;
}

/// Start-up recovery first ends what is left of dead processes
/// (`fence_dead`): a statement one was running when it died never lands
/// after recovery read the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_the_dead_ends_a_statement_of_a_dead_node_still_under_way() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    n[0].create_user(&user("kim")).await.unwrap();
    n[0].create_session(&session("s1", "kim"), &[upload("u1", "s1", "a", 100)])
        .await
        .unwrap();
    let Claim::Granted(token) = n[0].claim("k", 0, 1, LeaseKind::Turn).await.unwrap() else {
        panic!("a free key is granted");
    };
    let (mut admin, under_way) = stalled_change(&db, &n[0]).await;
    assert!(n[1].fence_dead().await.unwrap(), "nothing to end yet");
    assert!(
        !under_way.is_finished(),
        "a live node's statement was ended"
    );
    end_presence(&db, &token).await;
    assert!(n[1].fence_dead().await.unwrap());
    never_lands(&n[1], &mut admin, under_way).await;
}

/// A space's turn is a transaction lock; the intent recorded under it is
/// recorded in the same transaction (`begin_commit_ending`): a holder
/// killed while its intent waits leaves neither behind, and the next
/// holder gets the turn only once the intent can no longer land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_under_way_when_its_turns_holder_dies_never_lands() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    n[0].create_user(&user("kim")).await.unwrap();
    n[0].create_session(&session("s1", "kim"), &[upload("u1", "s1", "a", 100)])
        .await
        .unwrap();
    let turn = n[0].turn("namespace:kim").await.unwrap();
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut admin).await.unwrap();
    sqlx::query("SELECT 1 FROM uploads WHERE id = 'u1' FOR UPDATE")
        .execute(&mut admin)
        .await
        .unwrap();
    let intent = tokio::spawn({
        let n0 = n[0].clone();
        async move {
            n0.begin_commit_ending(turn, None, &[("u1".into(), p("a"))], &[])
                .await
        }
    });
    wait_for_a_lock(&mut admin).await;
    // Its process dies: the connection goes, the statement runs on.
    intent.abort();
    let next = tokio::spawn({
        let n1 = n[1].clone();
        async move { n1.turn("namespace:kim").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !next.is_finished(),
        "the turn was given while the intent under it could still land"
    );
    sqlx::query("COMMIT").execute(&mut admin).await.unwrap();
    let turn = tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("the turn is given once the dead holder's transaction ended")
        .unwrap()
        .unwrap();
    let up = n[1].get_upload("u1").await.unwrap().unwrap();
    assert_eq!(
        up.state,
        UploadState::Open,
        "the dead holder's intent landed"
    );
    // A living holder's intent lands, and its turn ends with it.
    n[1].begin_commit_ending(turn, None, &[("u1".into(), p("a"))], &[])
        .await
        .unwrap();
    let up = n[0].get_upload("u1").await.unwrap().unwrap();
    assert_eq!(up.state, UploadState::Committing);
    drop(
        tokio::time::timeout(Duration::from_secs(2), n[0].turn("namespace:kim"))
            .await
            .expect("the turn ended with the intent")
            .unwrap(),
    );
}

/// Waits (5 s at most) until a statement waits for a lock. (`admin` may
/// be in a transaction, which reads `pg_stat_activity` once unless told
/// to read it afresh.)
async fn wait_for_a_lock(admin: &mut sqlx::PgConnection) {
    let t = Instant::now();
    loop {
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut *admin)
            .await
            .unwrap();
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *admin)
        .await
        .unwrap();
        if waiting == 1 {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "nothing waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Node `node`'s change of upload "u1" (to `committing`), stalled
/// behind the row lock a transaction of the returned connection holds.
async fn stalled_change(
    db: &TestDb,
    node: &Postgres,
) -> (
    sqlx::PgConnection,
    tokio::task::JoinHandle<Result<(), MetaError>>,
) {
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut admin).await.unwrap();
    sqlx::query("SELECT 1 FROM uploads WHERE id = 'u1' FOR UPDATE")
        .execute(&mut admin)
        .await
        .unwrap();
    let under_way = tokio::spawn({
        let node = node.clone();
        async move { node.set_upload_state("u1", UploadState::Committing).await }
    });
    wait_for_a_lock(&mut admin).await;
    (admin, under_way)
}

/// What `reader` reads of "u1" now stays true once `admin`'s row lock
/// goes: the stalled change ended without landing.
async fn never_lands(
    reader: &Postgres,
    admin: &mut sqlx::PgConnection,
    under_way: tokio::task::JoinHandle<Result<(), MetaError>>,
) {
    let read = reader.get_upload("u1").await.unwrap().unwrap();
    assert_eq!(read.state, UploadState::Open);
    sqlx::query("COMMIT").execute(&mut *admin).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), under_way)
        .await
        .expect("the dead node's statement ended")
        .unwrap();
    assert!(matches!(ended, Err(MetaError::Unreachable)), "{ended:?}");
    let up = reader.get_upload("u1").await.unwrap().unwrap();
    assert_eq!(up.state, UploadState::Open, "the dead node's change landed");
}

/// A write that claimed nothing is recorded only on an upload that nothing
/// touched since it was made: once; never once any claim of it was
/// granted, held or released (its request may have written over or
/// removed the object); never while its claim's lock is taken; never on
/// an upload that ended.
#[tokio::test]
async fn a_write_that_claimed_nothing_is_recorded_only_on_an_upload_nobody_touched() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    n[0].create_user(&user("kim")).await.unwrap();
    let ids = ["u1", "u2", "u3", "u4", "u5", "u6"];
    let uploads: Vec<Upload> = ids
        .iter()
        .map(|id| upload(id, "s1", &format!("{id}.bin"), 50))
        .collect();
    n[0].create_session(&session("s1", "kim"), &uploads)
        .await
        .unwrap();
    let whole = ferry_core::ByteRange::new(0, 50).unwrap();
    let part = ferry_core::Part {
        number: 1,
        offset: 0,
        size: 50,
        sha256: Some("ab".repeat(32)),
        sha1: None,
        md5: None,
    };
    let sealed = [ferry_core::Digest::new(ferry_core::DigestAlgo::Sha256, vec![7; 32]).unwrap()];
    let record = |node: usize, id: &'static str| {
        let (n, part, sealed) = (&n[node], &part, &sealed);
        async move {
            n.record_write_if_free(id, whole, Some(part), sealed, &format!("{id}.w1"))
                .await
                .unwrap()
        }
    };
    // Untouched: recorded, as a claimed write's record would be; once.
    assert!(record(0, "u1").await);
    let up = n[1].get_upload("u1").await.unwrap().unwrap();
    assert_eq!(up.received.ranges(), &[whole]);
    assert_eq!(up.parts.get(&1), Some(&part));
    assert_eq!(up.sealed, sealed);
    assert_eq!(
        up.object.as_deref(),
        Some("u1.w1"),
        "the object the write named"
    );
    assert_eq!(up.staged_name(), "u1.w1");
    assert!(!record(1, "u1").await, "recorded twice");
    // Claimed, and released with nothing recorded: refused.
    let Claim::Granted(t) = n[0].claim("u2", 0, 50, LeaseKind::Write).await.unwrap() else {
        panic!("a free key is granted");
    };
    assert!(!record(1, "u2").await, "recorded under another's lease");
    n[0].release(&t).await.unwrap();
    assert!(!record(1, "u2").await, "recorded after a claim of it");
    let up = n[1].get_upload("u2").await.unwrap().unwrap();
    assert!(up.received.is_empty() && up.parts.is_empty() && up.sealed.is_empty());
    // A claim of it under way (its lock taken): refused at once.
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(1281712499, hashtext('u3'))")
        .execute(&mut c)
        .await
        .unwrap();
    let started = Instant::now();
    assert!(
        !record(1, "u3").await,
        "recorded while a claim was under way"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "it waited");
    sqlx::query("SELECT pg_advisory_unlock(1281712499, hashtext('u3'))")
        .execute(&mut c)
        .await
        .unwrap();
    // And once the lock is free, recorded: the lock leaves no mark.
    assert!(record(1, "u3").await);
    // A lease of it, even one whose claim left no mark (a commit's turn
    // takes its uploads' leases so): refused.
    sqlx::query("INSERT INTO leases (token, key, lo, hi, kind, node) VALUES ('t5', 'u5', 0, 50, 'commit', 1)")
        .execute(&mut c)
        .await
        .unwrap();
    assert!(!record(1, "u5").await, "recorded under a lease");
    // Written directly (a presigned part): refused.
    sqlx::query("UPDATE uploads SET direct = true WHERE id = 'u6'")
        .execute(&mut c)
        .await
        .unwrap();
    assert!(!record(1, "u6").await, "recorded over a presigned part");
    c.close().await.unwrap();
    // An upload that ended (its session failed with it): refused.
    n[0].fail_upload("u4", "refused").await.unwrap();
    assert!(!record(1, "u4").await, "recorded on an aborted upload");
}

/// A session created with its turn leased holds it against every other
/// node until the result that ends it; intents that claim their path in
/// the statement that records them, raced on two nodes for one path,
/// let exactly one through.
#[tokio::test]
async fn a_path_claimed_by_its_intent_is_one_nodes_and_a_born_turn_holds_until_the_result() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    n[0].create_user(&user("kim")).await.unwrap();
    let limits = CreateLimits {
        max_open_sessions: 1000,
        quota_bytes: None,
    };
    let made = [(
        session("k1", "kim"),
        vec![upload("ku1", "k1", "same.bin", 1)],
    )];
    let key = "session:k1".to_owned();
    let tokens = n[0]
        .create_sessions_holding(&made, limits, &[], std::slice::from_ref(&key))
        .await
        .unwrap()
        .unwrap();
    // The other node waits for the turn: it is the first node's.
    let Claim::Busy(held) = n[1]
        .claim(&key, 0, u64::MAX, LeaseKind::Turn)
        .await
        .unwrap()
    else {
        panic!("a born turn is held");
    };
    assert_eq!(held[0].token, tokens[0]);

    // 20 rounds: two nodes, one path each round, their intents at once.
    let space = sp("kim");
    for round in 0..20 {
        let (a, b) = (format!("ra{round}"), format!("rb{round}"));
        let path = p(&format!("race/{round}.bin"));
        for (node, id) in [(&n[0], &a), (&n[1], &b)] {
            let sid = format!("s{id}");
            node.create_session(&session(&sid, "kim"), &[upload(id, &sid, path.as_str(), 1)])
                .await
                .unwrap();
        }
        let one = ferry_core::ByteRange::new(0, 1);
        let (x, y) = tokio::join!(
            n[0].begin_commit_if_free(None, &a, &space, &path, one),
            n[1].begin_commit_if_free(None, &b, &space, &path, one),
        );
        let won = [x.unwrap(), y.unwrap()];
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: exactly one intent claims the path ({won:?})"
        );
    }

    // The result ends the born turn: the other node gets it at once.
    n[0].begin_commit_if_free(
        None,
        "ku1",
        &space,
        &p("same.bin"),
        ferry_core::ByteRange::new(0, 1),
    )
    .await
    .unwrap();
    n[0].finish_commit_releasing(
        SessionEnd::IfSettled("k1"),
        &[committed("ku1", "kim", "same.bin", "kf1")],
        &[],
        &tokens,
    )
    .await
    .unwrap();
    assert!(matches!(
        n[1].claim(&key, 0, u64::MAX, LeaseKind::Turn)
            .await
            .unwrap(),
        Claim::Granted(_)
    ));
}

/// An intent takes only the paths it meets: one held open (its statement's
/// transaction not ended) keeps back the intents for its path's ancestors
/// and for the paths below it, and none other in the space; a node holding
/// the space's whole turn keeps back every intent in the space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_wait_only_for_the_paths_they_meet() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    n[0].create_user(&user("lee")).await.unwrap();
    let space = sp("lee");
    for (id, path) in [
        ("l1", "e/b.bin"),
        ("l2", "d/c.bin"),
        ("l3", "d/a.bin/x"),
        ("l4", "d"),
        ("l5", "f/g.bin"),
    ] {
        let sid = format!("s{id}");
        n[0].create_session(&session(&sid, "lee"), &[upload(id, &sid, path, 1)])
            .await
            .unwrap();
    }
    let intent = |id: &'static str, path: &'static str| {
        let (node, space) = (n[1].clone(), space.clone());
        tokio::spawn(async move {
            node.begin_commit_if_free(None, id, &space, &p(path), None)
                .await
                .unwrap()
        })
    };
    // A choice of d/a.bin, its transaction left open.
    let mut held = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut held).await.unwrap();
    sqlx::query("SELECT ferry_path_free($1, $2, $3, $4, $5, $6, $7)")
        .bind(0x5475_726e_i32)
        .bind(ferry_meta::namespace_turn(&space))
        .bind("lee")
        .bind(vec!["d", "d/a.bin"])
        .bind("d/a.bin/")
        .bind("d/a.bin0")
        .bind("none")
        .execute(&mut held)
        .await
        .unwrap();
    for (id, path) in [("l1", "e/b.bin"), ("l2", "d/c.bin")] {
        let done = tokio::time::timeout(Duration::from_secs(5), intent(id, path))
            .await
            .unwrap_or_else(|_| panic!("{path} waited for d/a.bin"));
        assert!(done.unwrap(), "{path} is free");
    }
    let below = intent("l3", "d/a.bin/x");
    let above = intent("l4", "d");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!below.is_finished(), "a path below d/a.bin waits for it");
    assert!(!above.is_finished(), "an ancestor of d/a.bin waits for it");
    sqlx::query("ROLLBACK").execute(&mut held).await.unwrap();
    let (below, above) = tokio::time::timeout(Duration::from_secs(5), async {
        (below.await.unwrap(), above.await.unwrap())
    })
    .await
    .expect("both go on once d/a.bin's choice ended");
    assert!(below, "d/a.bin/x is free once d/a.bin's choice ended");
    assert!(!above, "d has d/c.bin being committed below it");

    // The space's whole turn keeps back any intent in the space.
    let whole = n[0]
        .turn(&ferry_meta::namespace_turn(&space))
        .await
        .unwrap();
    let other = intent("l5", "f/g.bin");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!other.is_finished(), "an intent waits for the whole turn");
    drop(whole);
    let got = tokio::time::timeout(Duration::from_secs(5), other)
        .await
        .expect("the intent goes on once the turn ended");
    assert!(got.unwrap());
}

/// The keys that join an upload to its parts and ranges, and a session to
/// its uploads, compare in byte order on both sides, so the joins use
/// the indexes (with sequential scans ruled out, none is planned): an
/// upload read by id once scanned every part in the database.
#[tokio::test]
async fn reads_by_id_and_path_use_the_indexes() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let _node = db.connect().await;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut c)
        .await
        .unwrap();
    for (what, sql) in [
        (
            "parts",
            "SELECT 1 FROM uploads u JOIN parts p ON p.upload_id = u.id WHERE u.id = 'x'",
        ),
        (
            "ranges",
            "SELECT 1 FROM uploads u JOIN ranges r ON r.upload_id = u.id WHERE u.id = 'x'",
        ),
        (
            "uploads",
            "SELECT 1 FROM sessions s JOIN uploads u ON u.session_id = s.id WHERE s.id = 'x'",
        ),
        (
            "files",
            "SELECT 1 FROM UNNEST(ARRAY['a']::text[], ARRAY['b']::text[]) AS g(space, path) \
             JOIN files f ON f.space = g.space AND f.path = g.path",
        ),
    ] {
        let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {sql}"))
            .fetch_all(&mut c)
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            !plan.contains(&format!("Seq Scan on {what}")),
            "{what} is scanned:\n{plan}"
        );
    }
    // Paths being committed compare in byte order whatever the
    // database's locale.
    let collation: Option<String> = sqlx::query_scalar(
        "SELECT collation_name FROM information_schema.columns \
         WHERE table_name = 'uploads' AND column_name = 'final_path'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(collation.as_deref(), Some("C"));
}

/// The count of an owner's open sessions, which every creation makes
/// under the owner's lock, reads the open sessions only, even with the
/// plan PostgreSQL cached for it while the table was empty (a new
/// database, before its statistics catch up): 3,000 ended sessions are
/// not read one by one.
#[tokio::test]
async fn an_owners_open_sessions_are_counted_without_reading_its_ended_ones() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let _node = db.connect().await;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // The plan is made at the first call, on the empty table, and kept.
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut c)
        .await
        .unwrap();
    let limits = "SELECT ferry_owner_limits('o', '{}', 1, 100, 0, NULL)";
    sqlx::query(limits).execute(&mut c).await.unwrap();
    sqlx::query(
        "INSERT INTO sessions (id, owner, space, conflict, auto_commit, state, created_at, \
         expires_at, dialect, extend_secs) \
         SELECT 's' || g, 'o', 'o', 'fail', TRUE, CASE WHEN g <= 5 THEN 'open' ELSE 'committed' END, \
         0, 0, 'native', 0 FROM generate_series(1, 3000) g",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let blocks = blocks_read(&mut c, limits).await;
    assert!(
        blocks <= 10,
        "counting 5 open sessions among 3,000 read {blocks} blocks"
    );
}

/// The lines of `EXPLAIN (ANALYZE, BUFFERS)` of `sql`, which it runs.
async fn explain_analyze(c: &mut sqlx::PgConnection, sql: &str) -> Vec<String> {
    sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"))
        .fetch_all(&mut *c)
        .await
        .unwrap()
}

/// The blocks a call read, from the "Buffers: shared hit=2 read=1" line
/// of its `EXPLAIN (ANALYZE, BUFFERS)`.
async fn blocks_read(c: &mut sqlx::PgConnection, sql: &str) -> u64 {
    let plan = explain_analyze(c, sql).await;
    let buffers = plan
        .iter()
        .find_map(|l| l.trim().strip_prefix("Buffers: shared "))
        .unwrap_or_else(|| panic!("no buffers in {plan:?}"));
    buffers
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| matches!(*k, "hit" | "read"))
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum()
}

/// The path check every commit makes (`ferry_path_free`) reads only the
/// keys around its path, even with the plans PostgreSQL cached for it
/// while the tables were empty (a new database, before its statistics
/// catch up): 5,000 files and 5,000 uploads being committed elsewhere in
/// the space are not read one by one.
#[tokio::test]
async fn a_path_check_reads_only_the_keys_around_its_path_with_plans_made_on_empty_tables() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let _node = db.connect().await;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut c)
        .await
        .unwrap();
    let check = "SELECT ferry_path_free(1, 't', 'o', ARRAY['x', 'x/y'], 'x/y/', 'x/y0', 'u0')";
    let free: bool = sqlx::query_scalar(check).fetch_one(&mut c).await.unwrap();
    assert!(free);
    for sql in [
        "INSERT INTO files (id, space, path, size, sha256, owner, created_at) \
         SELECT 'f' || g, 'o', 'd/' || g, 1, 'h', 'o', 0 FROM generate_series(1, 5000) g",
        "INSERT INTO sessions (id, owner, space, conflict, auto_commit, state, created_at, \
         expires_at, dialect, extend_secs) \
         SELECT 's' || g, 'o', 'o', 'fail', TRUE, 'committing', 0, 0, 'native', 0 \
         FROM generate_series(1, 5000) g",
        "INSERT INTO uploads (id, session_id, idx, path, part_size, state, final_path) \
         SELECT 'u' || g, 's' || g, 0, 'e/' || g, 1, 'committing', 'e/' || g \
         FROM generate_series(1, 5000) g",
    ] {
        sqlx::query(sql).execute(&mut c).await.unwrap();
    }
    let blocks = blocks_read(&mut c, check).await;
    assert!(
        blocks <= 30,
        "checking one path among 5,000 files and 5,000 commits read {blocks} blocks"
    );
    // The same plans still find what is there: a file at the path, one
    // below it, an upload being committed to it.
    for (sql, undo) in [
        (
            "INSERT INTO files (id, space, path, size, sha256, owner, created_at) \
             VALUES ('fx', 'o', 'x/y', 1, 'h', 'o', 0)",
            "DELETE FROM files WHERE id = 'fx'",
        ),
        (
            "INSERT INTO files (id, space, path, size, sha256, owner, created_at) \
             VALUES ('fx', 'o', 'x/y/z', 1, 'h', 'o', 0)",
            "DELETE FROM files WHERE id = 'fx'",
        ),
        (
            "UPDATE uploads SET final_path = 'x/y' WHERE id = 'u7'",
            "UPDATE uploads SET final_path = 'e/7' WHERE id = 'u7'",
        ),
        (
            "UPDATE uploads SET final_path = 'x/y/z' WHERE id = 'u7'",
            "UPDATE uploads SET final_path = 'e/7' WHERE id = 'u7'",
        ),
    ] {
        sqlx::query(sql).execute(&mut c).await.unwrap();
        let free: bool = sqlx::query_scalar(check).fetch_one(&mut c).await.unwrap();
        assert!(!free, "the path is free after {sql}");
        sqlx::query(undo).execute(&mut c).await.unwrap();
    }
    let free: bool = sqlx::query_scalar(check).fetch_one(&mut c).await.unwrap();
    assert!(free);
}

/// The read of an upload by its claim (`ferry_upload_read`) reads only
/// that upload's rows, even with the plan PostgreSQL cached for it while
/// the tables were empty: 5,000 other uploads, their ranges and parts
/// are not read one by one.
#[tokio::test]
async fn an_upload_read_after_a_claim_reads_only_its_rows_with_plans_made_on_empty_tables() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let _node = db.connect().await;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut c)
        .await
        .unwrap();
    let read = "SELECT * FROM ferry_upload_read('u7')";
    sqlx::query(read).execute(&mut c).await.unwrap();
    for sql in [
        "INSERT INTO sessions (id, owner, space, conflict, auto_commit, state, created_at, \
         expires_at, dialect, extend_secs) \
         SELECT 's' || g, 'o', 'o', 'fail', TRUE, 'open', 0, 0, 'native', 0 \
         FROM generate_series(1, 5000) g",
        "INSERT INTO uploads (id, session_id, idx, path, part_size, state) \
         SELECT 'u' || g, 's' || g, 0, 'e/' || g, 1, 'open' FROM generate_series(1, 5000) g",
        "INSERT INTO ranges (upload_id, start, \"end\") \
         SELECT 'u' || g, 0, 4 FROM generate_series(1, 5000) g",
        "INSERT INTO parts (upload_id, number, \"offset\", size) \
         SELECT 'u' || g, 1, 0, 4 FROM generate_series(1, 5000) g",
    ] {
        sqlx::query(sql).execute(&mut c).await.unwrap();
    }
    let blocks = blocks_read(&mut c, read).await;
    assert!(
        blocks <= 30,
        "reading one upload among 5,000 read {blocks} blocks"
    );
    let rows = sqlx::query(read).fetch_all(&mut c).await.unwrap();
    assert_eq!(rows.len(), 1);
}

/// The records of a one-request upload `k` of `owner` at `path`, as
/// `create_committed` takes them: the session and the upload committed,
/// the file (1 byte) theirs.
fn born_committed(k: usize, owner: &str, path: &str) -> (Session, Upload, Committed) {
    let (sid, uid) = (format!("ws{k}"), format!("wu{k}"));
    let done = committed(&uid, owner, path, &format!("wf{k}"));
    let session = Session {
        state: SessionState::Committed,
        ..session(&sid, owner)
    };
    let upload = Upload {
        state: UploadState::Committed,
        final_path: Some(p(path)),
        file_id: Some(done.file.id.clone()),
        ..upload(&uid, &sid, path, 1)
    };
    (session, upload, done)
}

/// A deadline no step of these tests meets.
fn soon() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

const NO_LIMITS: CreateLimits = CreateLimits {
    max_open_sessions: 100,
    quota_bytes: None,
};

/// A one-request upload is recorded in one step, session, upload and file
/// all committed, only when its path is free: not at a file, above or
/// below one, nor at a path another commit is heading for. And only
/// within the owner's limits. Otherwise nothing of it is recorded.
#[tokio::test]
async fn a_one_request_upload_is_recorded_committed_in_one_step_only_on_a_free_path_within_limits()
{
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 2).await;
    n[0].create_user(&user("kim")).await.unwrap();
    let event = |k: usize| ferry_meta::OutboxEvent {
        id: format!("e{k}"),
        key: format!("wu{k}"),
        body: "{}".into(),
        created_at: 1,
    };
    let (s, u, done) = born_committed(0, "kim", "d/f.bin");
    let got = n[0]
        .create_committed(&s, &u, &done, NO_LIMITS, &[event(0)], soon())
        .await
        .unwrap();
    assert_eq!(got, Some(Ok(())));
    // Every node reads it whole.
    let file = n[1].get_file(&sp("kim"), &p("d/f.bin")).await.unwrap();
    assert_eq!(file.map(|f| f.id), Some("wf0".to_owned()));
    let s0 = n[1].get_session("ws0").await.unwrap().unwrap();
    assert_eq!(s0.state, SessionState::Committed);
    let u0 = n[1].get_upload("wu0").await.unwrap().unwrap();
    assert_eq!(u0.state, UploadState::Committed);
    assert_eq!(u0.file_id.as_deref(), Some("wf0"));
    assert_eq!(u0.final_path, Some(p("d/f.bin")));
    assert_eq!(n[1].outbox_depth().await.unwrap(), 1);
    assert_eq!(n[1].usage("kim").await.unwrap().committed, 1);
    assert_eq!(n[1].open_session_count("kim").await.unwrap(), 0);

    // A commit heading for "c" (recorded, not finished).
    n[0].create_session(&session("s9", "kim"), &[upload("u9", "s9", "c", 1)])
        .await
        .unwrap();
    n[0].begin_commit(None, &[("u9".into(), p("c"))], &[])
        .await
        .unwrap();
    for (k, path) in [
        (1, "d/f.bin"),
        (2, "d"),
        (3, "d/f.bin/g"),
        (4, "c"),
        (5, "c/x"),
    ] {
        let (s, u, done) = born_committed(k, "kim", path);
        let got = n[k % 2]
            .create_committed(&s, &u, &done, NO_LIMITS, &[event(k)], soon())
            .await
            .unwrap();
        assert_eq!(got, None, "{path} is not free");
        assert_eq!(n[0].get_session(&s.id).await.unwrap(), None, "{path}");
        assert_eq!(n[0].get_upload(&u.id).await.unwrap(), None, "{path}");
    }
    assert_eq!(n[0].outbox_depth().await.unwrap(), 1, "no event of those");

    // Over the quota (a file's byte used, the byte the commit heading for
    // "c" reserves, 1 more): refused, nothing recorded.
    let (s, u, done) = born_committed(6, "kim", "q");
    let quota = CreateLimits {
        quota_bytes: Some(2),
        ..NO_LIMITS
    };
    let got = n[1]
        .create_committed(&s, &u, &done, quota, &[], soon())
        .await;
    assert_eq!(
        got.unwrap(),
        Some(Err(LimitRefusal::OverQuota { used: 2, more: 1 }))
    );
    assert_eq!(n[0].get_file(&sp("kim"), &p("q")).await.unwrap(), None);
    assert_eq!(n[0].get_session("ws6").await.unwrap(), None);
    // At the open-sessions limit (the commit heading for "c" holds one).
    let one = CreateLimits {
        max_open_sessions: 1,
        ..NO_LIMITS
    };
    let got = n[1].create_committed(&s, &u, &done, one, &[], soon()).await;
    assert_eq!(
        got.unwrap(),
        Some(Err(LimitRefusal::TooManySessions { open: 1 }))
    );
    assert_eq!(n[0].get_upload("wu6").await.unwrap(), None);
    // Within both: recorded.
    let roomy = CreateLimits {
        max_open_sessions: 2,
        quota_bytes: Some(3),
    };
    let got = n[1]
        .create_committed(&s, &u, &done, roomy, &[], soon())
        .await;
    assert_eq!(got.unwrap(), Some(Ok(())));
    assert_eq!(n[0].usage("kim").await.unwrap().committed, 2);
}

/// One-request uploads of one path raced on several nodes: exactly one is
/// recorded, and the file is its.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_request_uploads_of_one_path_raced_on_several_nodes_record_exactly_one() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = nodes(&db, 4).await;
    n[0].create_user(&user("kim")).await.unwrap();
    for round in 0..5 {
        let path = format!("r{round}/f.bin");
        let tasks: Vec<_> = (0..8)
            .map(|k| {
                let node = n[k % n.len()].clone();
                let (s, u, done) = born_committed(round * 10 + k, "kim", &path);
                tokio::spawn(async move {
                    let got = node
                        .create_committed(&s, &u, &done, NO_LIMITS, &[], soon())
                        .await;
                    (got.unwrap(), done.file.id)
                })
            })
            .collect();
        let mut won = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (Some(Ok(())), id) => won.push(id),
                (None, _) => {}
                (other, _) => panic!("{other:?}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: {won:?}");
        let file = n[0].get_file(&sp("kim"), &p(&path)).await.unwrap();
        assert_eq!(file.map(|f| f.id), Some(won[0].clone()));
    }
}

/// A one-request upload whose step has its locks only after its deadline
/// (its object may be gone with the orphan sweep by then) records nothing;
/// one whose deadline has passed is not sent at all.
#[tokio::test]
async fn a_one_request_upload_whose_locks_come_after_its_deadline_records_nothing() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let n = db.connect().await;
    n.create_user(&user("kim")).await.unwrap();
    // The owner's lock, held: the step waits in its limits.
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(1333227122, hashtext('kim'))")
        .execute(&mut holder)
        .await
        .unwrap();
    let (s, u, done) = born_committed(0, "kim", "late.bin");
    let step = {
        let n = n.clone();
        let deadline = Instant::now() + Duration::from_millis(300);
        tokio::spawn(async move {
            n.create_committed(&s, &u, &done, NO_LIMITS, &[], deadline)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!step.is_finished(), "the step waits for the owner's lock");
    sqlx::query("SELECT pg_advisory_unlock(1333227122, hashtext('kim'))")
        .execute(&mut holder)
        .await
        .unwrap();
    assert_eq!(step.await.unwrap().unwrap(), None);
    assert_eq!(n.get_session("ws0").await.unwrap(), None);
    assert_eq!(n.get_file(&sp("kim"), &p("late.bin")).await.unwrap(), None);

    let (s, u, done) = born_committed(1, "kim", "late.bin");
    let past = Instant::now();
    let got = n
        .create_committed(&s, &u, &done, NO_LIMITS, &[], past)
        .await;
    assert_eq!(got.unwrap(), None);
    assert_eq!(n.get_upload("wu1").await.unwrap(), None);
    // In time: recorded.
    let got = n
        .create_committed(&s, &u, &done, NO_LIMITS, &[], soon())
        .await;
    assert_eq!(got.unwrap(), Some(Ok(())));
}

/// The rows a plan read and threw away ("Rows Removed by Filter"), over
/// all its nodes ([`explain_analyze`]'s lines).
fn rows_filtered_out(plan: &[String]) -> u64 {
    plan.iter()
        .filter_map(|l| l.trim().strip_prefix("Rows Removed by Filter: "))
        .map(|n| n.parse::<u64>().unwrap())
        .sum()
}

/// A session changed by id while many are open, with the statistics of a
/// new database (the partial indexes of live sessions seen as empty): the
/// statement visits that session's row only, whichever index it takes.
#[tokio::test]
async fn a_session_changed_by_id_reads_no_other_open_session() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let _node = db.connect().await;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    open_sessions(&mut c, "ola", "open", 300).await;
    sqlx::query(
        "UPDATE pg_class SET reltuples = 0 WHERE relname IN ('sessions_open', 'sessions_expiry')",
    )
    .execute(&mut c)
    .await
    .unwrap();
    for statement in [
        "UPDATE sessions SET state = 'committed' WHERE id = 'open150' AND state = 'open'",
        "SELECT 1 FROM sessions WHERE id = 'open151' AND state IN ('open', 'committing')",
    ] {
        let plan = explain_analyze(&mut c, statement).await;
        assert_eq!(
            rows_filtered_out(&plan),
            0,
            "{statement}:\n{}",
            plan.join("\n")
        );
    }
}
