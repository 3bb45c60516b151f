//! A commit interrupted half-way (some files promoted, some not, nothing
//! recorded) is rolled forward by `Engine::recover` at the next start:
//! every file of the session ends up visible *and* recorded, none without
//! the other.

use bytes::Bytes;
use ferry_core::{Limits, SpaceName, SpacePath};
use ferry_engine::{Caller, Engine, NewSession, NewUpload, PartChecks, Principal, WriteAt};
use ferry_meta::{MetaStore, Sqlite};
use ferry_store::{ByteStream, LocalStore, Promote, Store, StoreError, WriteFailure};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The local store, except that promotions fail after the first `ok` ones,
/// the way a crash would stop them.
struct CrashingStore {
    inner: LocalStore,
    ok: AtomicUsize,
}

#[async_trait::async_trait]
impl Store for CrashingStore {
    async fn create_staged(&self, u: &str) -> Result<(), StoreError> {
        self.inner.create_staged(u).await
    }
    async fn write_at(&self, u: &str, o: u64, b: ByteStream) -> Result<u64, WriteFailure> {
        self.inner.write_at(u, o, b).await
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
        s: &SpaceName,
        p: &SpacePath,
        m: Promote,
    ) -> Result<(), StoreError> {
        if self
            .ok
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(StoreError::Io {
                path: p.as_str().into(),
                source: std::io::Error::other("simulated crash"),
            });
        }
        self.inner.promote(u, s, p, m).await
    }
    async fn open_file(
        &self,
        s: &SpaceName,
        p: &SpacePath,
    ) -> Result<Box<dyn ferry_store::OpenFile>, StoreError> {
        self.inner.open_file(s, p).await
    }
    async fn file_exists(&self, s: &SpaceName, p: &SpacePath) -> Result<bool, StoreError> {
        self.inner.file_exists(s, p).await
    }
    async fn delete_file(&self, s: &SpaceName, p: &SpacePath) -> Result<(), StoreError> {
        self.inner.delete_file(s, p).await
    }
    async fn ready(&self) -> Result<(), StoreError> {
        self.inner.ready().await
    }
}

fn body(data: &[u8]) -> ByteStream {
    futures::stream::iter([Ok(Bytes::copy_from_slice(data))]).boxed()
}

#[tokio::test]
async fn interrupted_session_commit_is_rolled_forward_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Caller::User(Principal {
        user: "admin".into(),
        admin: true,
    });
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("set/f{i}.txt"), format!("content {i}").into_bytes()))
        .collect();
    let session_id;
    {
        let meta = Arc::new(Sqlite::open(dir.path().join("ferry.db")).unwrap());
        let store = Arc::new(CrashingStore {
            inner: LocalStore::open(dir.path()).unwrap(),
            ok: AtomicUsize::new(1),
        });
        let engine = Engine::new(meta, store, Limits::default(), vec![1; 32]);
        engine.bootstrap(Some("t")).await.unwrap();
        let view = engine
            .create_session(
                &admin,
                NewSession {
                    uploads: files
                        .iter()
                        .map(|(p, d)| NewUpload {
                            path: p.clone(),
                            size: Some(d.len() as u64),
                            ..Default::default()
                        })
                        .collect(),
                    dialect: "native".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        session_id = view.session.id.clone();
        for (u, (_, d)) in view.uploads.iter().zip(&files) {
            engine
                .write(
                    &admin,
                    &u.upload.id,
                    WriteAt::Part(1),
                    body(d),
                    PartChecks::default(),
                )
                .await
                .unwrap();
        }
        let err = engine
            .commit_session(&admin, &session_id, HashMap::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("simulated crash"), "{err}");
        // Half-way: the first file is on disk, but nothing is recorded.
        assert!(dir.path().join("spaces/admin/set/f0.txt").exists());
        assert!(!dir.path().join("spaces/admin/set/f1.txt").exists());
    }

    // "Restart": a fresh engine on the same directory.
    let meta = Arc::new(Sqlite::open(dir.path().join("ferry.db")).unwrap());
    let store = Arc::new(LocalStore::open(dir.path()).unwrap());
    let engine = Engine::new(meta.clone(), store, Limits::default(), vec![1; 32]);
    let report = engine.recover().await.unwrap();
    assert_eq!(report.rolled_forward, 3);
    let view = engine.get_session(&admin, &session_id).await.unwrap();
    assert_eq!(view.session.state.as_str(), "committed");
    for (u, (path, data)) in view.uploads.iter().zip(&files) {
        let f = u.file.as_ref().expect("a recorded file");
        assert_eq!(f.path.as_str(), path);
        assert_eq!(f.size, data.len() as u64);
        assert_eq!(
            std::fs::read(dir.path().join("spaces/admin").join(path)).unwrap(),
            *data
        );
        use sha2::Digest;
        assert_eq!(f.sha256, hex::encode(sha2::Sha256::digest(data)));
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("staging"))
            .unwrap()
            .count(),
        0
    );
    // A second recovery finds nothing to do.
    assert_eq!(engine.recover().await.unwrap().rolled_forward, 0);
    let listed = meta
        .list(
            &SpaceName::parse("admin").unwrap(),
            Some(&SpacePath::parse("set").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 3);
}
