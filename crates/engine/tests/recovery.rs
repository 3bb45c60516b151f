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

/// A one-upload session of `data` at `path`, every byte written; its
/// session and upload ids.
async fn written(engine: &Engine, who: &Caller, path: &str, data: &[u8]) -> (String, String) {
    let view = engine
        .create_session(
            who,
            NewSession {
                uploads: vec![NewUpload {
                    path: path.into(),
                    size: Some(data.len() as u64),
                    ..Default::default()
                }],
                dialect: "native".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let uid = view.uploads[0].upload.id.clone();
    engine
        .write(
            who,
            &uid,
            WriteAt::Part(1),
            body(data),
            PartChecks::default(),
        )
        .await
        .unwrap();
    (view.session.id, uid)
}

/// Every intermediate state a crash (or an earlier version's separate
/// writes) can leave is repaired by `recover`, each to the state it was on
/// its way to, and a second recovery finds nothing left to do.
#[tokio::test]
async fn recovery_repairs_every_intermediate_state() {
    use ferry_core::{SessionState, UploadState};
    use ferry_meta::SessionEnd;
    let dir = tempfile::tempdir().unwrap();
    let admin = Caller::User(Principal {
        user: "admin".into(),
        admin: true,
    });
    let meta = Arc::new(Sqlite::open(dir.path().join("ferry.db")).unwrap());
    let store = Arc::new(LocalStore::open(dir.path()).unwrap());
    let engine = Engine::new(meta.clone(), store.clone(), Limits::default(), vec![1; 32]);
    engine.bootstrap(Some("t")).await.unwrap();
    let space = SpaceName::parse("admin").unwrap();

    // 1. An upload `committing` whose bytes were not promoted yet.
    let (s1, u1) = written(&engine, &admin, "one.bin", b"one").await;
    meta.begin_commit(
        None,
        &[(u1.clone(), SpacePath::parse("one.bin").unwrap())],
        &[],
    )
    .await
    .unwrap();
    // 2. A whole-session commit recorded for its uploads, not its session.
    let (s2, u2) = written(&engine, &admin, "two.bin", b"two").await;
    let two = SpacePath::parse("two.bin").unwrap();
    meta.begin_commit(Some(&s2), &[(u2.clone(), two.clone())], &[])
        .await
        .unwrap();
    store
        .promote(&u2, 3, &space, &two, Promote::NoReplace)
        .await
        .unwrap();
    let file = ferry_core::FileRecord {
        id: "f2".into(),
        space: space.clone(),
        path: two.clone(),
        size: 3,
        sha256: "00".repeat(32),
        sha1: None,
        md5: None,
        content_type: None,
        owner: "admin".into(),
        created_at: 1,
        metadata: None,
        dialect_state: None,
        expires_at: None,
        object: None,
    };
    meta.finish_commit(
        SessionEnd::Keep,
        &[ferry_meta::Committed {
            upload_id: u2.clone(),
            state: UploadState::Committed,
            final_path: two.clone(),
            file: file.clone(),
        }],
    )
    .await
    .unwrap();
    // 3. A session left open after its last upload was committed.
    let (s3, u3) = written(&engine, &admin, "three.bin", b"333").await;
    let three = SpacePath::parse("three.bin").unwrap();
    meta.begin_commit(None, &[(u3.clone(), three.clone())], &[])
        .await
        .unwrap();
    store
        .promote(&u3, 3, &space, &three, Promote::NoReplace)
        .await
        .unwrap();
    meta.finish_commit(
        SessionEnd::Keep,
        &[ferry_meta::Committed {
            upload_id: u3.clone(),
            state: UploadState::Committed,
            final_path: three.clone(),
            file: ferry_core::FileRecord {
                id: "f3".into(),
                path: three,
                ..file.clone()
            },
        }],
    )
    .await
    .unwrap();
    // 4. An aborted session whose upload is still open, bytes staged.
    let (s4, u4) = written(&engine, &admin, "four.bin", b"four").await;
    meta.set_session_state(&s4, SessionState::Aborted, None)
        .await
        .unwrap();
    // 5. An open upload whose staged file is gone.
    let (s5, u5) = written(&engine, &admin, "five.bin", b"five").await;
    store.discard_staged(&u5).await.unwrap();
    // And one session in no intermediate state at all.
    let (s6, u6) = written(&engine, &admin, "six.bin", b"six").await;
    drop(engine);

    let engine = Engine::new(meta.clone(), store.clone(), Limits::default(), vec![1; 32]);
    let report = engine.recover().await.unwrap();
    assert_eq!(report.rolled_forward, 1, "{report:?}");
    assert_eq!(report.sessions_repaired, 2, "{report:?}");
    assert_eq!(report.uploads_aborted, 1, "{report:?}");
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(report.orphans_removed, 1, "{report:?}");

    let state = |id: String| {
        let meta = meta.clone();
        async move { meta.get_session(&id).await.unwrap().unwrap() }
    };
    let upload = |id: String| {
        let meta = meta.clone();
        async move { meta.get_upload(&id).await.unwrap().unwrap().state }
    };
    assert_eq!(state(s1).await.state, SessionState::Committed);
    assert_eq!(upload(u1).await, UploadState::Committed);
    assert_eq!(
        std::fs::read(dir.path().join("spaces/admin/one.bin")).unwrap(),
        b"one"
    );
    assert_eq!(state(s2).await.state, SessionState::Committed);
    assert_eq!(state(s3).await.state, SessionState::Committed);
    assert_eq!(state(s4).await.state, SessionState::Aborted);
    assert_eq!(upload(u4.clone()).await, UploadState::Aborted);
    assert!(!store.staged_exists(&u4).await.unwrap());
    let five = state(s5).await;
    assert_eq!(five.state, SessionState::Failed);
    assert!(five.failure.unwrap().contains("missing"));
    assert_eq!(upload(u5).await, UploadState::Aborted);
    assert_eq!(state(s6.clone()).await.state, SessionState::Open);
    assert_eq!(upload(u6).await, UploadState::Open);

    let again = engine.recover().await.unwrap();
    assert_eq!(again, ferry_engine::RecoveryReport::default());
    // The untouched session still commits.
    engine
        .commit_session(&admin, &s6, HashMap::new())
        .await
        .unwrap();
}

/// Issue 11: with the metadata disk full, creation and commit answer
/// "insufficient storage" (507 at the edge), and a commit that failed that
/// way succeeds once space returns, with no restart. The database is held
/// to its size with SQLite's `max_page_count` (this test cannot mount a
/// small filesystem): SQLite then fails exactly as on a full disk,
/// `SQLITE_FULL`.
#[tokio::test]
async fn a_commit_refused_for_a_full_metadata_disk_succeeds_once_space_returns() {
    use ferry_core::UploadState;
    use ferry_engine::EngineError;
    let dir = tempfile::tempdir().unwrap();
    let admin = Caller::User(Principal {
        user: "admin".into(),
        admin: true,
    });
    let meta = Arc::new(Sqlite::open(dir.path().join("ferry.db")).unwrap());
    let store = Arc::new(LocalStore::open(dir.path()).unwrap());
    let engine = Engine::new(meta.clone(), store, Limits::default(), vec![1; 32]);
    engine.bootstrap(Some("t")).await.unwrap();
    let mut ready = Vec::new();
    for i in 0..40 {
        ready.push(written(&engine, &admin, &format!("r{i}.bin"), b"ready").await);
    }
    meta.cap_pages_for_tests(Some(0)).await.unwrap();
    // Fill what room is left in the last pages.
    let mut full = None;
    for i in 0..100_000 {
        let r = engine
            .create_session(
                &admin,
                NewSession {
                    uploads: vec![NewUpload {
                        path: format!("filler/{i}-{}", "x".repeat(200)),
                        size: Some(1),
                        ..Default::default()
                    }],
                    dialect: "native".into(),
                    ..Default::default()
                },
            )
            .await;
        if let Err(e) = r {
            full = Some(e);
            break;
        }
    }
    let full = full.expect("the capped database fills up");
    assert!(
        matches!(full, EngineError::InsufficientStorage(_)),
        "{full:?}"
    );
    // Commits fail the same way; some may have recorded their intent
    // (`committing`) before the result could not be written.
    let mut refused = Vec::new();
    let mut half_way = 0;
    for (sid, uid) in &ready {
        match engine.commit_session(&admin, sid, HashMap::new()).await {
            Err(EngineError::InsufficientStorage(_)) => {
                if meta.get_upload(uid).await.unwrap().unwrap().state == UploadState::Committing {
                    half_way += 1;
                }
                refused.push(sid.clone());
            }
            Err(e) => panic!("{e:?}"),
            Ok(_) => {}
        }
    }
    assert!(!refused.is_empty());
    eprintln!("{} refused, {half_way} half-way", refused.len());

    // Space returns: the same commits succeed, on the same engine.
    meta.cap_pages_for_tests(None).await.unwrap();
    for sid in &refused {
        let view = engine
            .commit_session(&admin, sid, HashMap::new())
            .await
            .unwrap();
        assert_eq!(view.session.state.as_str(), "committed");
        let f = view.uploads[0].file.as_ref().expect("a file");
        assert_eq!(
            std::fs::read(dir.path().join("spaces/admin").join(f.path.as_str())).unwrap(),
            b"ready"
        );
    }
}

/// A commit that fails after recording its intent (here a promotion that
/// fails, as a full data disk or a full metadata disk after `begin_commit`
/// would) no longer wedges the upload in `committing` ("being recovered")
/// until a restart: the next commit finishes it on the same engine.
#[tokio::test]
async fn a_commit_that_failed_half_way_is_finished_by_the_next_commit_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Caller::User(Principal {
        user: "admin".into(),
        admin: true,
    });
    let meta = Arc::new(Sqlite::open(dir.path().join("ferry.db")).unwrap());
    let store = Arc::new(CrashingStore {
        inner: LocalStore::open(dir.path()).unwrap(),
        ok: AtomicUsize::new(0),
    });
    let engine = Engine::new(meta.clone(), store.clone(), Limits::default(), vec![1; 32]);
    engine.bootstrap(Some("t")).await.unwrap();
    let (sid, uid) = written(&engine, &admin, "half.bin", b"half").await;
    let (sid2, uid2) = written(&engine, &admin, "one.bin", b"one").await;
    engine
        .commit_session(&admin, &sid, HashMap::new())
        .await
        .unwrap_err();
    engine.commit_upload(&admin, &uid2, None).await.unwrap_err();
    for u in [&uid, &uid2] {
        let up = meta.get_upload(u).await.unwrap().unwrap();
        assert_eq!(up.state.as_str(), "committing", "the intent is recorded");
    }
    store.ok.store(usize::MAX, Ordering::SeqCst);
    let view = engine
        .commit_session(&admin, &sid, HashMap::new())
        .await
        .unwrap();
    assert_eq!(view.session.state.as_str(), "committed");
    let one = engine.commit_upload(&admin, &uid2, None).await.unwrap();
    assert_eq!(one.upload.state.as_str(), "committed");
    let s2 = engine.get_session(&admin, &sid2).await.unwrap();
    assert_eq!(s2.session.state.as_str(), "committed");
    for (p, d) in [("half.bin", &b"half"[..]), ("one.bin", b"one")] {
        assert_eq!(
            std::fs::read(dir.path().join("spaces/admin").join(p)).unwrap(),
            d
        );
    }
}

/// A new version under a new name whose commit stopped after its bytes
/// were promoted (a crash before the result was recorded) is finished by
/// recovery as one move: the file keeps its id, stands at the new name
/// with the new bytes, and its old name is gone from the records and the
/// disk.
#[tokio::test]
async fn recovery_finishes_a_new_version_under_a_new_name_as_one_move() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Caller::User(Principal {
        user: "admin".into(),
        admin: true,
    });
    let meta = Arc::new(Sqlite::open(dir.path().join("ferry.db")).unwrap());
    let store = Arc::new(LocalStore::open(dir.path()).unwrap());
    let engine = Engine::new(meta.clone(), store.clone(), Limits::default(), vec![1; 32]);
    engine.bootstrap(Some("t")).await.unwrap();
    let space = SpaceName::parse("admin").unwrap();
    let (s0, _) = written(&engine, &admin, "old.txt", b"old").await;
    let v = engine
        .commit_session(&admin, &s0, HashMap::new())
        .await
        .unwrap();
    let fid = v.uploads[0].file.as_ref().unwrap().id.clone();

    let view = engine
        .create_session(
            &admin,
            NewSession {
                conflict: ferry_core::ConflictPolicy::Replace,
                uploads: vec![NewUpload {
                    path: "new.txt".into(),
                    size: Some(3),
                    replaces: Some(fid.clone()),
                    ..Default::default()
                }],
                dialect: "box".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let uid = view.uploads[0].upload.id.clone();
    engine
        .write(
            &admin,
            &uid,
            WriteAt::Part(1),
            body(b"new"),
            PartChecks::default(),
        )
        .await
        .unwrap();
    let new = SpacePath::parse("new.txt").unwrap();
    meta.begin_commit(None, &[(uid.clone(), new.clone())], &[])
        .await
        .unwrap();
    store
        .promote(&uid, 3, &space, &new, Promote::Replace)
        .await
        .unwrap();
    drop(engine);

    let engine = Engine::new(meta.clone(), store.clone(), Limits::default(), vec![1; 32]);
    let report = engine.recover().await.unwrap();
    assert_eq!(report.rolled_forward, 1, "{report:?}");
    let f = meta.get_file_by_id(&fid).await.unwrap().unwrap();
    assert_eq!(f.path, new, "the file keeps its id at its new name");
    assert_eq!(
        meta.get_file(&space, &SpacePath::parse("old.txt").unwrap())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        std::fs::read(dir.path().join("spaces/admin/new.txt")).unwrap(),
        b"new"
    );
    assert!(!dir.path().join("spaces/admin/old.txt").exists());
}
