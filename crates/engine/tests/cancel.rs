//! A request that goes away (client gone, HTTP/2 reset) drops its engine
//! future mid-way: no claim it held may outlive it, and the next request
//! proceeds without waiting for a timeout (issue 11, F).

use bytes::Bytes;
use ferry_core::{Limits, SpaceName, SpacePath};
use ferry_engine::{Caller, Engine, NewSession, NewUpload, PartChecks, Principal, WriteAt};
use ferry_meta::Sqlite;
use ferry_store::{ByteStream, LocalStore, Promote, Store, StoreError, WriteFailure};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn body(data: &[u8]) -> ByteStream {
    futures::stream::iter([Ok(Bytes::copy_from_slice(data))]).boxed()
}

/// A body that sends `data` and then stalls forever, like a client that
/// stopped sending without closing; `read` is set once the engine has
/// taken the first chunk (the write is streaming).
fn stalled(data: &[u8], read: Arc<AtomicBool>) -> ByteStream {
    futures::stream::iter([Ok(Bytes::copy_from_slice(data))])
        .inspect(move |_| read.store(true, Ordering::SeqCst))
        .chain(futures::stream::pending())
        .boxed()
}

fn admin() -> Caller {
    Caller::User(Principal {
        user: "admin".into(),
        admin: true,
    })
}

fn one(path: &str, size: u64) -> NewSession {
    NewSession {
        uploads: vec![NewUpload {
            path: path.into(),
            size: Some(size),
            ..Default::default()
        }],
        dialect: "native".into(),
        ..Default::default()
    }
}

/// Drives `f` until `ready` says it reached the point to interrupt, then
/// drops it (the request's client went away).
async fn drop_when<F: std::future::Future>(f: F, ready: impl Fn() -> bool) {
    tokio::pin!(f);
    loop {
        tokio::select! {
            _ = &mut f => panic!("the request finished before it was dropped"),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {
                if ready() {
                    return;
                }
            }
        }
    }
}

#[tokio::test]
async fn a_dropped_write_leaves_no_write_in_flight_and_the_next_write_proceeds() {
    let dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(Sqlite::open(dir.path().join("ferry.db")).unwrap());
    let store = Arc::new(LocalStore::open(dir.path()).unwrap());
    let engine = Engine::new(meta, store, Limits::default(), vec![1; 32]);
    engine.bootstrap(Some("t")).await.unwrap();
    let view = engine
        .create_session(&admin(), one("w.bin", 8))
        .await
        .unwrap();
    let uid = view.uploads[0].upload.id.clone();
    let sent = Arc::new(AtomicBool::new(false));
    let read = Arc::new(AtomicBool::new(false));
    let (s2, r2) = (sent.clone(), read.clone());
    let e2 = engine.clone();
    let u2 = uid.clone();
    // The first half arrives, then the client goes silent and is dropped.
    drop_when(
        async move {
            let r = e2
                .write(
                    &admin(),
                    &u2,
                    WriteAt::Part(1),
                    stalled(b"abcd", r2),
                    PartChecks::default(),
                )
                .await;
            s2.store(true, Ordering::SeqCst);
            r
        },
        || read.load(Ordering::SeqCst),
    )
    .await;
    assert!(!sent.load(Ordering::SeqCst));
    // The same part again, whole: not refused as overlapping a write in
    // flight, and the upload commits.
    engine
        .write(
            &admin(),
            &uid,
            WriteAt::Part(1),
            body(b"abcdefgh"),
            PartChecks::default(),
        )
        .await
        .unwrap();
    let v = engine
        .commit_session(&admin(), &view.session.id, HashMap::new())
        .await
        .unwrap();
    assert_eq!(v.session.state.as_str(), "committed");
    assert_eq!(
        std::fs::read(dir.path().join("spaces/admin/w.bin")).unwrap(),
        b"abcdefgh"
    );
}

/// The local store, except that promotions stall while `stall` is set.
struct StallingStore {
    inner: LocalStore,
    stall: AtomicBool,
    stalled: AtomicBool,
}

#[async_trait::async_trait]
impl Store for StallingStore {
    async fn create_staged(&self, u: &str) -> Result<(), StoreError> {
        self.inner.create_staged(u).await
    }
    async fn write_at(
        &self,
        u: &str,
        o: u64,
        n: ferry_store::BodyLen,
        b: ByteStream,
    ) -> Result<u64, WriteFailure> {
        self.inner.write_at(u, o, n, b).await
    }
    async fn read_staged(&self, u: &str, o: u64, l: u64) -> Result<ByteStream, StoreError> {
        self.inner.read_staged(u, o, l).await
    }
    async fn copy_staged(&self, f: &str, t: &str, o: u64, l: u64) -> Result<(), StoreError> {
        self.inner.copy_staged(f, t, o, l).await
    }
    async fn staged_exists(&self, u: &str) -> Result<bool, StoreError> {
        self.inner.staged_exists(u).await
    }
    async fn discard_staged(&self, u: &str) -> Result<(), StoreError> {
        self.inner.discard_staged(u).await
    }
    async fn list_staged(&self) -> Result<Vec<String>, StoreError> {
        self.inner.list_staged().await
    }
    async fn promote(
        &self,
        u: &str,
        n: u64,
        s: &SpaceName,
        p: &SpacePath,
        m: Promote,
    ) -> Result<Option<String>, StoreError> {
        if self.stall.load(Ordering::SeqCst) {
            self.stalled.store(true, Ordering::SeqCst);
            futures::future::pending::<()>().await;
        }
        self.inner.promote(u, n, s, p, m).await
    }
    async fn open_file(
        &self,
        f: ferry_store::FileLoc<'_>,
    ) -> Result<Box<dyn ferry_store::OpenFile>, StoreError> {
        self.inner.open_file(f).await
    }
    async fn file_exists(&self, s: &SpaceName, p: &SpacePath) -> Result<bool, StoreError> {
        self.inner.file_exists(s, p).await
    }
    async fn delete_file(&self, f: ferry_store::FileLoc<'_>) -> Result<(), StoreError> {
        self.inner.delete_file(f).await
    }
    async fn ready(&self) -> Result<(), StoreError> {
        self.inner.ready().await
    }
}

#[tokio::test]
async fn a_dropped_commit_leaves_no_claim_and_the_next_commit_proceeds() {
    let dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(Sqlite::open(dir.path().join("ferry.db")).unwrap());
    let store = Arc::new(StallingStore {
        inner: LocalStore::open(dir.path()).unwrap(),
        stall: AtomicBool::new(true),
        stalled: AtomicBool::new(false),
    });
    let engine = Engine::new(meta, store.clone(), Limits::default(), vec![1; 32]);
    engine.bootstrap(Some("t")).await.unwrap();
    let mut sessions = Vec::new();
    for data in [&b"first"[..], b"second"] {
        let v = engine
            .create_session(&admin(), one("c.bin", data.len() as u64))
            .await
            .unwrap();
        let uid = v.uploads[0].upload.id.clone();
        engine
            .write(
                &admin(),
                &uid,
                WriteAt::Part(1),
                body(data),
                PartChecks::default(),
            )
            .await
            .unwrap();
        sessions.push(v.session.id);
    }
    // The first commit claims `c.bin` and stalls promoting it; its client
    // goes away.
    let (e2, s0) = (engine.clone(), sessions[0].clone());
    let st = store.clone();
    drop_when(
        async move { e2.commit_session(&admin(), &s0, HashMap::new()).await },
        move || st.stalled.load(Ordering::SeqCst),
    )
    .await;
    store.stall.store(false, Ordering::SeqCst);
    // The claim went with it: another session's commit to the same path
    // decides at once (`fail` policy: the path is free, nothing holds it).
    let v = engine
        .commit_session(&admin(), &sessions[1], HashMap::new())
        .await
        .unwrap();
    assert_eq!(v.session.state.as_str(), "committed");
    assert_eq!(
        std::fs::read(dir.path().join("spaces/admin/c.bin")).unwrap(),
        b"second"
    );
    // The dropped commit had recorded its intent: committing it again
    // finishes it (the path is taken now, so it fails as `fail` says, and
    // nothing is left half-way).
    let again = engine
        .commit_session(&admin(), &sessions[0], HashMap::new())
        .await;
    assert!(
        matches!(again, Err(ferry_engine::EngineError::AlreadyExists { .. })),
        "{again:?}"
    );
    let state = engine.get_session(&admin(), &sessions[0]).await.unwrap();
    assert_eq!(state.session.state.as_str(), "open");
    assert_eq!(state.uploads[0].upload.state.as_str(), "open");
}
