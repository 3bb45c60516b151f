//! The SQLite backend passes the shared conformance suite, and keeps what
//! it acknowledged across a reopen.

use ferry_meta::{MetaStore, Sqlite, conformance};

#[tokio::test]
async fn sqlite_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(dir.path().join("meta.db")).unwrap();
    conformance::run_all(&db).await;
}

#[tokio::test]
async fn acknowledged_writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Sqlite::open(dir.path().join("meta.db")).unwrap();
        conformance::sessions_round_trip(&db).await;
    }
    let db = Sqlite::open(dir.path().join("meta.db")).unwrap();
    let u1 = db.get_upload("u1").await.unwrap().unwrap();
    assert_eq!(u1.received.len(), 10, "the state after forget() was kept");
}
