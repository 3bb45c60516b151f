//! The open-sessions and quota limits hold under concurrent creation:
//! counting and recording a session are one metadata transaction.

use ferry_core::Limits;
use ferry_engine::{Caller, Engine, EngineError, NewSession, NewUpload, Principal};
use ferry_meta::Sqlite;
use ferry_store::LocalStore;
use std::sync::Arc;

async fn engine(dir: &std::path::Path, limits: Limits) -> (Engine, Caller) {
    let meta = Arc::new(Sqlite::open(dir.join("ferry.db")).unwrap());
    let store = Arc::new(LocalStore::open(dir).unwrap());
    let engine = Engine::new(meta, store, limits, vec![1; 32]);
    engine.bootstrap(Some("t")).await.unwrap();
    let admin = Caller::User(Principal {
        user: "admin".into(),
        admin: true,
    });
    (engine, admin)
}

fn one(path: String, size: u64) -> NewSession {
    NewSession {
        uploads: vec![NewUpload {
            path,
            size: Some(size),
            ..Default::default()
        }],
        dialect: "test".into(),
        ..Default::default()
    }
}

/// Creates `n` sessions at once; answers how many were created and the
/// errors of the others.
async fn race(engine: &Engine, caller: &Caller, n: usize, size: u64) -> (usize, Vec<EngineError>) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (engine, caller) = (engine.clone(), caller.clone());
            tokio::spawn(async move {
                engine
                    .create_session(&caller, one(format!("f{i}"), size))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    let mut errors = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => errors.push(e),
        }
    }
    (ok, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_against_an_open_sessions_limit_of_k_let_exactly_k_through() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_open_sessions: 5,
        ..Limits::default()
    };
    let (engine, admin) = engine(dir.path(), limits).await;
    let (ok, errors) = race(&engine, &admin, 40, 1).await;
    assert_eq!(ok, 5, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, EngineError::TooManySessions { .. })),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_against_a_quota_reserve_no_more_than_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        default_quota: Some(1000),
        ..Limits::default()
    };
    let (engine, admin) = engine(dir.path(), limits).await;
    let (ok, errors) = race(&engine, &admin, 40, 300).await;
    assert_eq!(ok, 3, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, EngineError::InsufficientStorage(_))),
        "{errors:?}"
    );
}
