//! Engine features that exist for the vendor dialects: client-sized parts
//! (`WriteAt::PartAt`), whole-file digests besides SHA-256, sliding expiry
//! and files by id.

use bytes::Bytes;
use ferry_core::{ByteRange, Digest, DigestAlgo, Limits};
use ferry_engine::{
    Caller, Engine, EngineError, NewSession, NewUpload, PartChecks, Principal, WriteAt,
};
use ferry_meta::Sqlite;
use ferry_store::{ByteStream, LocalStore};
use futures::{StreamExt, TryStreamExt};
use sha1::Digest as _;
use std::sync::Arc;

fn body(data: &[u8]) -> ByteStream {
    futures::stream::iter([Ok(Bytes::copy_from_slice(data))]).boxed()
}

async fn engine(dir: &std::path::Path) -> (Engine, Caller) {
    let meta = Arc::new(Sqlite::open(dir.join("ferry.db")).unwrap());
    let store = Arc::new(LocalStore::open(dir).unwrap());
    let engine = Engine::new(meta, store, Limits::default(), vec![1; 32]);
    engine.bootstrap(Some("t")).await.unwrap();
    let admin = Caller::User(Principal {
        user: "admin".into(),
        admin: true,
    });
    (engine, admin)
}

fn one_upload(path: &str, size: u64) -> NewSession {
    NewSession {
        uploads: vec![NewUpload {
            path: path.into(),
            size: Some(size),
            whole_digests: vec![DigestAlgo::Sha1],
            ..Default::default()
        }],
        dialect: "test".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn parts_at_client_chosen_ranges_are_recorded_and_replaceable() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, admin) = engine(dir.path()).await;
    let data: Vec<u8> = (0..25u8).collect();
    let view = engine
        .create_session(&admin, one_upload("p.bin", 25))
        .await
        .unwrap();
    let id = &view.uploads[0].upload.id;
    let at = |n: u32, a: u64, b: u64| WriteAt::PartAt {
        number: n,
        range: ByteRange::new(a, b).unwrap(),
    };
    for (n, a, b) in [(1, 0, 10), (2, 10, 20), (3, 20, 25)] {
        let w = engine
            .write(
                &admin,
                id,
                at(n, a, b),
                body(&data[a as usize..b as usize]),
                PartChecks::default(),
            )
            .await
            .unwrap();
        let part = w.part.expect("a numbered part is recorded");
        assert_eq!((part.number, part.offset, part.size), (n, a, b - a));
    }
    // Part 2 again, with other bytes: it replaces the first copy.
    let mut fixed = data.clone();
    fixed[10..20].fill(7);
    engine
        .write(
            &admin,
            id,
            at(2, 10, 20),
            body(&fixed[10..20]),
            PartChecks::default(),
        )
        .await
        .unwrap();
    let err = engine
        .write(&admin, id, at(0, 0, 1), body(&[0]), PartChecks::default())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::RangeNotSatisfiable(_)), "{err}");
    let done = engine.commit_upload(&admin, id, None).await.unwrap();
    let file = done.file.unwrap();
    assert_eq!(
        file.sha1.as_deref(),
        Some(hex::encode(sha1::Sha1::digest(&fixed)).as_str())
    );
}

#[tokio::test]
async fn whole_file_sha1_is_kept_and_checked_at_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, admin) = engine(dir.path()).await;
    let data = vec![42u8; 3 << 20];
    let sha1 = sha1::Sha1::digest(&data).to_vec();
    let view = engine
        .create_session(&admin, one_upload("s.bin", data.len() as u64))
        .await
        .unwrap();
    let id = &view.uploads[0].upload.id;
    let half = data.len() / 2;
    // Second half first: the hash follower catches up after the first.
    for (a, b) in [(half, data.len()), (0, half)] {
        engine
            .write(
                &admin,
                id,
                WriteAt::Range {
                    range: ByteRange::new(a as u64, b as u64).unwrap(),
                    total: None,
                },
                body(&data[a..b]),
                PartChecks::default(),
            )
            .await
            .unwrap();
    }
    let mut wrong = sha1.clone();
    wrong[0] ^= 1;
    let err = engine
        .commit_upload(&admin, id, Digest::new(DigestAlgo::Sha1, wrong))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::DigestMismatch { .. }), "{err}");
    let done = engine
        .commit_upload(&admin, id, Digest::new(DigestAlgo::Sha1, sha1.clone()))
        .await
        .unwrap();
    let file = done.file.unwrap();
    assert_eq!(file.sha1, Some(hex::encode(&sha1)));
    let by_id = engine.file_by_id(&admin, &file.id).await.unwrap();
    assert_eq!(by_id.path, file.path);
    let stranger = Caller::User(Principal {
        user: "nobody".into(),
        admin: false,
    });
    assert!(matches!(
        engine.file_by_id(&stranger, &file.id).await,
        Err(EngineError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_write_extends_a_sliding_expiry_session() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, admin) = engine(dir.path()).await;
    let view = engine
        .create_session(
            &admin,
            NewSession {
                expires_in_secs: Some(60),
                extend_secs: Some(3600),
                ..one_upload("e.bin", 4)
            },
        )
        .await
        .unwrap();
    let before = view.session.expires_at;
    let id = &view.uploads[0].upload.id;
    let w = engine
        .write(
            &admin,
            id,
            WriteAt::Range {
                range: ByteRange::new(0, 2).unwrap(),
                total: None,
            },
            body(b"ab"),
            PartChecks::default(),
        )
        .await
        .unwrap();
    assert!(
        w.expires_at >= before + 3_000_000,
        "{} vs {before}",
        w.expires_at
    );
    let s = engine.get_session(&admin, &view.session.id).await.unwrap();
    assert_eq!(
        s.session.expires_at, w.expires_at,
        "the new expiry is recorded"
    );
}

#[tokio::test]
async fn an_open_ended_session_takes_uploads_as_they_come_and_commits_them_together() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, admin) = engine(dir.path()).await;
    let view = engine
        .create_session(
            &admin,
            NewSession {
                open_ended: true,
                dialect: "test".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(view.uploads.is_empty());
    let sid = &view.session.id;
    let new = |p: &str| NewUpload {
        path: p.into(),
        size: Some(2),
        ..Default::default()
    };
    let a = engine
        .add_uploads(&admin, sid, vec![new("f/a.txt")])
        .await
        .unwrap();
    let b = engine
        .add_uploads(&admin, sid, vec![new("f/b.txt")])
        .await
        .unwrap();
    let err = engine
        .add_uploads(&admin, sid, vec![new("f/a.txt")])
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Invalid { .. }), "{err}");
    for (u, data) in [(&a[0], b"aa"), (&b[0], b"bb")] {
        engine
            .write(
                &admin,
                &u.id,
                WriteAt::Part(1),
                body(data),
                PartChecks::default(),
            )
            .await
            .unwrap();
    }
    let done = engine
        .commit_session(&admin, sid, Default::default())
        .await
        .unwrap();
    assert_eq!(done.uploads.len(), 2);
    assert!(done.uploads.iter().all(|u| u.file.is_some()));
    let err = engine
        .add_uploads(&admin, sid, vec![new("f/c.txt")])
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Gone(_)), "{err}");
    let stranger = Caller::User(Principal {
        user: "nobody".into(),
        admin: false,
    });
    assert!(matches!(
        engine.add_uploads(&stranger, sid, vec![new("x")]).await,
        Err(EngineError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_session_token_reaches_its_own_session_only_and_an_open_ended_session_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, admin) = engine(dir.path()).await;
    let new_session = || NewSession {
        open_ended: true,
        commit: ferry_core::CommitMode::OnLastByte,
        dialect: "test".into(),
        ..Default::default()
    };
    let view = engine.create_session(&admin, new_session()).await.unwrap();
    let other = engine.create_session(&admin, new_session()).await.unwrap();
    let sid = &view.session.id;
    let sig = engine.sign_session(sid);
    let caller = engine.verify_session_sig(sid, &sig).unwrap();
    assert_eq!(caller, Caller::Session(sid.clone()));
    assert!(engine.verify_session_sig(&other.session.id, &sig).is_err());
    // A session signature is not an upload signature, nor the reverse.
    assert!(engine.verify_upload_sig(sid, &sig).is_err());
    let new = |p: &str| NewUpload {
        path: p.into(),
        size: Some(2),
        ..Default::default()
    };
    let a = engine
        .add_uploads(&caller, sid, vec![new("f/a.txt")])
        .await
        .unwrap();
    // Writing the last byte commits the file; the session stays open for
    // more uploads.
    let w = engine
        .write(
            &caller,
            &a[0].id,
            WriteAt::Append {
                offset: 0,
                total: None,
                len: None,
            },
            body(b"aa"),
            PartChecks::default(),
        )
        .await
        .unwrap();
    assert!(w.file.is_some());
    let found = engine
        .session_file(&caller, sid, "f/a.txt")
        .await
        .unwrap()
        .expect("committed");
    assert_eq!(found.size, 2);
    assert!(
        engine
            .session_file(&caller, sid, "f/none.txt")
            .await
            .unwrap()
            .is_none()
    );
    let b = engine
        .add_uploads(&caller, sid, vec![new("f/b.txt")])
        .await
        .unwrap();
    assert_eq!(
        engine
            .get_session(&caller, sid)
            .await
            .unwrap()
            .uploads
            .len(),
        2
    );
    // Nothing of another session, and nothing a user token does.
    fn not_found<T>(r: Result<T, EngineError>) -> bool {
        matches!(r, Err(EngineError::NotFound(_)))
    }
    assert!(not_found(
        engine
            .add_uploads(&caller, &other.session.id, vec![new("x")])
            .await
    ));
    assert!(not_found(
        engine
            .session_file(&caller, &other.session.id, "f/a.txt")
            .await
    ));
    let foreign = engine
        .add_uploads(&admin, &other.session.id, vec![new("y")])
        .await
        .unwrap();
    assert!(not_found(
        engine
            .write(
                &caller,
                &foreign[0].id,
                WriteAt::Part(1),
                body(b"yy"),
                PartChecks::default(),
            )
            .await
    ));
    assert!(matches!(
        engine.stat_file(&caller, "admin", "f/a.txt").await,
        Err(EngineError::Unauthenticated(_))
    ));
    // The whole-session commit (or an abort) ends it.
    engine
        .write(
            &caller,
            &b[0].id,
            WriteAt::Part(1),
            body(b"bb"),
            PartChecks::default(),
        )
        .await
        .unwrap();
    engine
        .commit_session(&caller, sid, Default::default())
        .await
        .unwrap();
    assert!(matches!(
        engine.add_uploads(&caller, sid, vec![new("f/c.txt")]).await,
        Err(EngineError::Gone(_))
    ));
}

#[tokio::test]
async fn uploads_of_a_session_commit_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, admin) = engine(dir.path()).await;
    let view = engine
        .create_session(
            &admin,
            NewSession {
                open_ended: true,
                dialect: "test".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let sid = &view.session.id;
    let caller = engine
        .verify_session_sig(sid, &engine.sign_session(sid))
        .unwrap();
    let new = |p: &str| NewUpload {
        path: p.into(),
        size: Some(1),
        ..Default::default()
    };
    let ups = engine
        .add_uploads(&caller, sid, vec![new("a"), new("b"), new("c")])
        .await
        .unwrap();
    let ids: Vec<String> = ups.iter().map(|u| u.id.clone()).collect();
    for id in &ids[..2] {
        engine
            .write(
                &caller,
                id,
                WriteAt::Part(1),
                body(b"x"),
                PartChecks::default(),
            )
            .await
            .unwrap();
    }
    // One incomplete upload: nothing of the batch is committed.
    let err = engine.commit_uploads(&caller, sid, &ids).await.unwrap_err();
    assert!(matches!(err, EngineError::Incomplete { .. }), "{err}");
    assert!(
        engine
            .session_file(&caller, sid, "a")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        engine
            .commit_uploads(&caller, sid, &ids[..2])
            .await
            .unwrap(),
        2
    );
    assert!(
        engine
            .session_file(&caller, sid, "b")
            .await
            .unwrap()
            .is_some()
    );
    // Again: already committed, nothing to do; the session stays open.
    assert_eq!(
        engine
            .commit_uploads(&caller, sid, &ids[..2])
            .await
            .unwrap(),
        0
    );
    engine
        .add_uploads(&caller, sid, vec![new("d")])
        .await
        .unwrap();
    // An upload of another session is not found.
    let other = engine
        .create_session(&admin, one_upload("z", 1))
        .await
        .unwrap();
    let foreign = vec![other.uploads[0].upload.id.clone()];
    assert!(matches!(
        engine.commit_uploads(&caller, sid, &foreign).await,
        Err(EngineError::NotFound(_))
    ));
}

#[tokio::test]
async fn files_of_a_files_expire_session_go_when_the_session_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, admin) = engine(dir.path()).await;
    let home = engine.me(&admin).await.unwrap().user.home_space.to_string();
    let mut sessions = Vec::new();
    for (name, files_expire) in [("kept.txt", false), ("temp.txt", true)] {
        let view = engine
            .create_session(
                &admin,
                NewSession {
                    files_expire,
                    expires_in_secs: Some(1),
                    ..one_upload(name, 4)
                },
            )
            .await
            .unwrap();
        let u = &view.uploads[0].upload.id;
        engine
            .write(
                &admin,
                u,
                WriteAt::Part(1),
                body(b"data"),
                PartChecks::default(),
            )
            .await
            .unwrap();
        engine
            .commit_session(&admin, &view.session.id, Default::default())
            .await
            .unwrap();
        sessions.push(view.session);
    }
    let f = engine.stat_file(&admin, &home, "temp.txt").await.unwrap();
    assert_eq!(f.expires_at, Some(sessions[1].expires_at));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Gone to readers at once, and from storage once the reaper runs.
    assert!(matches!(
        engine.stat_file(&admin, &home, "temp.txt").await,
        Err(EngineError::NotFound(_))
    ));
    let listed = engine.list(&admin, &home, "").await.unwrap();
    assert_eq!(listed.len(), 1, "only kept.txt is listed");
    engine.reap_expired().await.unwrap();
    let spaces = dir.path().join("spaces").join(&home);
    assert!(!spaces.join("temp.txt").exists());
    let kept = engine.stat_file(&admin, &home, "kept.txt").await.unwrap();
    assert_eq!(kept.expires_at, None);
    assert!(spaces.join("kept.txt").exists());
}

/// Sends a whole body of unknown length, then fixes the length where it ended.
async fn send_all(engine: &Engine, caller: &Caller, upload: &str, data: &[u8]) {
    let w = engine
        .write(
            caller,
            upload,
            WriteAt::Append {
                offset: 0,
                total: None,
                len: None,
            },
            body(data),
            PartChecks::default(),
        )
        .await
        .unwrap();
    let n = w.upload.received.prefix_len();
    assert_eq!(n, data.len() as u64);
    engine
        .write(
            caller,
            upload,
            WriteAt::Append {
                offset: n,
                total: Some(n),
                len: None,
            },
            body(b""),
            PartChecks::default(),
        )
        .await
        .unwrap();
}

fn open_ended(files_expire: bool, expires_in_secs: Option<u64>) -> NewSession {
    NewSession {
        open_ended: true,
        files_expire,
        expires_in_secs,
        conflict: ferry_core::ConflictPolicy::Rename,
        dialect: "test".into(),
        ..Default::default()
    }
}

fn deferred(path: &str) -> NewUpload {
    NewUpload {
        path: path.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn posted_files_replace_by_name_take_metadata_either_way_and_close_commits_the_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, admin) = engine(dir.path()).await;
    let view = engine
        .create_session(&admin, open_ended(false, None))
        .await
        .unwrap();
    let sid = &view.session.id;

    // Metadata after the bytes.
    let a = engine
        .put_upload(&admin, sid, deferred("a.txt"))
        .await
        .unwrap();
    send_all(&engine, &admin, &a.id, b"first").await;
    engine
        .set_upload_metadata(&admin, sid, "a.txt", r#"{"k":"a"}"#.into())
        .await
        .unwrap();
    // The same name again: the last body wins and keeps the metadata.
    let a2 = engine
        .put_upload(&admin, sid, deferred("a.txt"))
        .await
        .unwrap();
    assert_ne!(a2.id, a.id);
    assert_eq!(a2.metadata.as_deref(), Some(r#"{"k":"a"}"#));
    send_all(&engine, &admin, &a2.id, b"second").await;

    // Metadata before the bytes: the file's upload is made for it and used.
    let m = engine
        .set_upload_metadata(&admin, sid, "b.txt", r#"{"k":"b"}"#.into())
        .await
        .unwrap();
    let b = engine
        .put_upload(&admin, sid, deferred("b.txt"))
        .await
        .unwrap();
    assert_eq!(b.id, m.id);
    send_all(&engine, &admin, &b.id, b"bee").await;

    // Metadata whose file never comes, and a body that broke off.
    engine
        .set_upload_metadata(&admin, sid, "orphan.txt", "{}".into())
        .await
        .unwrap();
    let broken = engine
        .put_upload(&admin, sid, deferred("broken.txt"))
        .await
        .unwrap();
    let failing = futures::stream::iter([
        Ok(Bytes::from_static(b"par")),
        Err(std::io::Error::other("client went away")),
    ])
    .boxed();
    let _ = engine
        .write(
            &admin,
            &broken.id,
            WriteAt::Append {
                offset: 0,
                total: None,
                len: None,
            },
            failing,
            PartChecks::default(),
        )
        .await;

    let done = engine.close_session(&admin, sid).await.unwrap();
    assert_eq!(
        done.session.state,
        ferry_core::SessionState::Committed,
        "closing commits what is complete"
    );
    let committed: Vec<_> = done.uploads.iter().filter_map(|u| u.file.clone()).collect();
    let mut names: Vec<_> = committed.iter().map(|f| f.path.to_string()).collect();
    names.sort();
    assert_eq!(names, ["a.txt", "b.txt"]);
    let fa = committed
        .iter()
        .find(|f| f.path.as_str() == "a.txt")
        .unwrap();
    assert_eq!((fa.size, fa.metadata.as_deref()), (6, Some(r#"{"k":"a"}"#)));
    let fb = committed
        .iter()
        .find(|f| f.path.as_str() == "b.txt")
        .unwrap();
    assert_eq!(fb.metadata.as_deref(), Some(r#"{"k":"b"}"#));
    let aborted = done
        .uploads
        .iter()
        .filter(|u| u.upload.state == ferry_core::UploadState::Aborted)
        .count();
    assert_eq!(
        aborted, 3,
        "the replaced a.txt, the orphan, the broken body"
    );
    let err = engine.close_session(&admin, sid).await.unwrap_err();
    assert!(
        matches!(err, EngineError::Gone(_)),
        "closing is once: {err}"
    );
    let home = engine.me(&admin).await.unwrap().user.home_space.to_string();
    assert!(engine.stat_file(&admin, &home, "orphan.txt").await.is_err());
    assert!(engine.stat_file(&admin, &home, "broken.txt").await.is_err());
}

/// A body posted while an earlier post of the same name has its upload
/// but has not sent a byte yet gets an upload of its own: the earlier
/// body, arriving late, cannot write into it (and leave a third post a
/// 409 while it streams); the later body wins.
#[tokio::test]
async fn a_posted_body_never_shares_an_upload_another_post_took() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, admin) = engine(dir.path()).await;
    let view = engine
        .create_session(&admin, open_ended(false, None))
        .await
        .unwrap();
    let sid = &view.session.id;
    let early = engine
        .put_upload(&admin, sid, deferred("a.txt"))
        .await
        .unwrap();
    let late = engine
        .put_upload(&admin, sid, deferred("a.txt"))
        .await
        .unwrap();
    assert_ne!(late.id, early.id, "the upload of a body in progress");
    send_all(&engine, &admin, &late.id, b"later").await;
    let err = engine
        .write(
            &admin,
            &early.id,
            WriteAt::Append {
                offset: 0,
                total: None,
                len: None,
            },
            body(b"earlier"),
            PartChecks::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Gone(_)), "{err}");
    let third = engine
        .put_upload(&admin, sid, deferred("a.txt"))
        .await
        .unwrap();
    send_all(&engine, &admin, &third.id, b"third").await;
    let done = engine.close_session(&admin, sid).await.unwrap();
    let files: Vec<_> = done.uploads.iter().filter_map(|u| u.file.clone()).collect();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].size, 5);
    let home = engine.me(&admin).await.unwrap().user.home_space.to_string();
    let read = engine.open_file(&admin, &home, "a.txt").await.unwrap();
    let bytes: Vec<Bytes> = read.read(0, 5).try_collect().await.unwrap();
    assert_eq!(bytes.concat(), b"third");
}

/// Commits `data` at `path` in the admin's home space through an
/// `OnLastByte` session: the completing write answers the file.
async fn auto_file(
    engine: &Engine,
    admin: &Caller,
    path: &str,
    data: &[u8],
) -> ferry_core::FileRecord {
    let new = NewSession {
        commit: ferry_core::CommitMode::OnLastByte,
        ..one_upload(path, data.len() as u64)
    };
    let (_, w) = write_whole(engine, admin, new, data).await;
    w.file.expect("the last byte commits")
}

/// Creates the one-upload session `new` and writes `data` as its whole
/// upload in one write; the upload's id and the write's answer.
async fn write_whole(
    engine: &Engine,
    admin: &Caller,
    new: NewSession,
    data: &[u8],
) -> (String, ferry_engine::WriteResult) {
    let view = engine.create_session(admin, new).await.unwrap();
    let id = view.uploads[0].upload.id.clone();
    let range = ByteRange::new(0, data.len() as u64).unwrap();
    let w = engine
        .write(
            admin,
            &id,
            WriteAt::Range { range, total: None },
            body(data),
            PartChecks::default(),
        )
        .await
        .unwrap();
    (id, w)
}

#[tokio::test]
async fn fail_if_exists_is_refused_at_creation_by_the_engine_for_files_and_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, admin) = engine(dir.path()).await;
    auto_file(&engine, &admin, "d/a.txt", b"abc").await;
    let absent = |path: &str| NewSession {
        precondition: ferry_engine::Precondition::Absent,
        ..one_upload(path, 3)
    };
    for taken in ["d/a.txt", "d"] {
        match engine.create_session(&admin, absent(taken)).await {
            Err(EngineError::AlreadyExists { .. }) => {}
            other => panic!("{taken}: {other:?}"),
        }
    }
    engine
        .create_session(&admin, absent("d/b.txt"))
        .await
        .unwrap();
    // Folders are chosen by the same decision.
    let home = "admin";
    let rename = ferry_core::ConflictPolicy::Rename;
    let fail = ferry_core::ConflictPolicy::Fail;
    assert_eq!(
        engine
            .choose_folder(&admin, home, "d", rename)
            .await
            .unwrap(),
        "d (1)"
    );
    assert_eq!(
        engine
            .choose_folder(&admin, home, "e", rename)
            .await
            .unwrap(),
        "e"
    );
    assert!(matches!(
        engine.choose_folder(&admin, home, "d", fail).await,
        Err(EngineError::AlreadyExists { .. })
    ));
}

#[tokio::test]
async fn an_on_last_byte_commit_error_is_returned_by_the_write_and_resume_retries_it() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, admin) = engine(dir.path()).await;
    let new = NewSession {
        commit: ferry_core::CommitMode::OnLastByte,
        conflict: ferry_core::ConflictPolicy::Fail,
        ..one_upload("x.txt", 3)
    };
    let view = engine.create_session(&admin, new).await.unwrap();
    let id = &view.uploads[0].upload.id;
    auto_file(&engine, &admin, "x.txt", b"old").await;
    let range = ByteRange::new(0, 3).unwrap();
    let w = engine
        .write(
            &admin,
            id,
            WriteAt::Range { range, total: None },
            body(b"new"),
            PartChecks::default(),
        )
        .await;
    assert!(matches!(w, Err(EngineError::AlreadyExists { .. })), "{w:?}");
    // Still held, not committed: resume retries the commit and says why.
    assert!(matches!(
        engine.resume(&admin, id).await,
        Err(EngineError::AlreadyExists { .. })
    ));
    engine.delete_file(&admin, "admin", "x.txt").await.unwrap();
    let (view, _) = engine.resume(&admin, id).await.unwrap();
    assert_eq!(view.file.expect("committed").size, 3);
}

/// The completing write of an `OnLastByte` upload answers from what its
/// commit recorded, without reading it back: the answer must be exactly
/// what a later status read shows (the file included), whether the commit
/// made a new file or renamed around an existing one.
#[tokio::test]
async fn completing_write_answers_what_the_commit_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, admin) = engine(dir.path()).await;
    auto_file(&engine, &admin, "taken.txt", b"first").await;
    for path in ["fresh.txt", "taken.txt"] {
        let new = NewSession {
            commit: ferry_core::CommitMode::OnLastByte,
            conflict: ferry_core::ConflictPolicy::Rename,
            ..one_upload(path, 4)
        };
        let (id, w) = write_whole(&engine, &admin, new, b"abcd").await;
        let read = engine.upload_status(&admin, &id).await.unwrap();
        assert_eq!(w.upload, read.upload, "{path}: the upload answered");
        assert_eq!(w.file, read.file, "{path}: the file answered");
        assert!(w.file.is_some(), "{path}: committed");
    }
}
