//! The shared test suite every [`MetaStore`] backend must pass.
//!
//! Call [`run_all`] with a fresh, empty store.

use crate::{
    Claim, Committed, CreateLimits, Entry, LeaseKind, MetaError, MetaStore, Occupant, OutboxEvent,
    Record, SessionEnd, SpaceRecord, TokenRecord,
};
use ferry_core::{
    Access, ByteRange, ConflictPolicy, Digest, DigestAlgo, FileRecord, Length, Part, RangeSet,
    Session, SessionState, SpaceName, SpacePath, Upload, UploadState, User,
};
use std::collections::BTreeMap;

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
        quota_bytes: Some(1000),
        max_open_sessions: None,
        home_space: sp(name),
        created_at: 1,
    }
}

fn session(id: &str, owner: &str, expires_at: i64) -> Session {
    Session {
        id: id.into(),
        owner: owner.into(),
        space: sp(owner),
        conflict: ConflictPolicy::Rename,
        auto_commit: false,
        state: SessionState::Open,
        created_at: 10,
        expires_at,
        dialect: "native".into(),
        extend_secs: None,
        open_ended: false,
        files_expire: false,
        failure: None,
    }
}

fn upload(id: &str, sid: &str, path: &str, length: Length) -> Upload {
    Upload {
        id: id.into(),
        session_id: sid.into(),
        path: p(path),
        length,
        part_size: 10,
        state: UploadState::Open,
        expected_sha256: None,
        whole_digests: Vec::new(),
        content_type: Some("text/plain".into()),
        metadata: Some("{\"k\":1}".into()),
        received: RangeSet::new(),
        parts: BTreeMap::new(),
        final_path: None,
        file_id: None,
        replaces: None,
        direct: false,
        sealed: Vec::new(),
        object: None,
        dialect_state: Some("{\"d\":2}".into()),
    }
}

fn file(id: &str, space: &str, path: &str, size: u64, owner: &str) -> FileRecord {
    FileRecord {
        id: id.into(),
        space: sp(space),
        path: p(path),
        size,
        sha256: "00".repeat(32),
        sha1: None,
        md5: None,
        content_type: None,
        owner: owner.into(),
        created_at: 5,
        metadata: None,
        dialect_state: Some("{\"d\":1}".into()),
        expires_at: None,
        object: Some(format!("obj-{id}")),
    }
}

pub async fn run_all(m: &dyn MetaStore) {
    users_tokens_and_spaces(m).await;
    sessions_round_trip(m).await;
    concurrent_writes_are_all_recorded(m).await;
    commit_is_one_transaction(m).await;
    files_listing_and_occupants(m).await;
    expiry_and_usage(m).await;
    state_changes_end_the_session_in_the_same_transaction(m).await;
    failing_an_upload_fails_its_session_with_a_reason(m).await;
    illegal_state_changes_are_refused(m).await;
    a_body_sent_again_waits_beside_the_one_it_replaces(m).await;
    the_first_shared_secret_stored_is_the_one_everyone_gets(m).await;
    hook_events_ride_with_their_change_and_leave_in_order_per_key(m).await;
    accounts_are_listed_and_changed(m).await;
    moves_are_all_or_nothing_and_never_onto_a_taken_path(m).await;
    an_intent_if_free_claims_only_a_free_path_and_records_its_range(m).await;
    a_commit_if_free_records_a_file_at_a_free_path_in_one_step(m).await;
    a_whole_files_digests_are_kept_with_its_write_until_its_bytes_are_forgotten(m).await;
    m.ping().await.unwrap();
}

fn event(id: &str, key: &str, at: i64) -> OutboxEvent {
    OutboxEvent {
        id: id.into(),
        key: key.into(),
        body: format!("{{\"id\":\"{id}\"}}"),
        created_at: at,
    }
}

pub async fn hook_events_ride_with_their_change_and_leave_in_order_per_key(m: &dyn MetaStore) {
    m.create_user(&user("hooker")).await.unwrap();
    let limits = CreateLimits {
        max_open_sessions: 100,
        quota_bytes: None,
    };
    let s = session("hk1", "hooker", 10_000);
    let ups = vec![
        upload("hk1a", "hk1", "a", Length::Known(1)),
        upload("hk1b", "hk1", "b", Length::Known(1)),
    ];
    let refused = m
        .create_sessions_reporting(
            &[(s, ups)],
            limits,
            &[event("c-a", "hk1a", 100), event("c-b", "hk1b", 100)],
        )
        .await
        .unwrap();
    assert_eq!(refused, None);
    // A refused creation writes no event.
    let full = CreateLimits {
        max_open_sessions: 0,
        quota_bytes: None,
    };
    let refused = m
        .create_sessions_reporting(
            &[(session("hk2", "hooker", 10_000), vec![])],
            full,
            &[event("never", "hk2", 100)],
        )
        .await
        .unwrap();
    assert!(refused.is_some());
    // Commit h1a with its event; abort both (only h1b is still abortable:
    // its event goes in, h1a's does not).
    m.begin_commit(None, &[("hk1a".into(), p("a"))], &[])
        .await
        .unwrap();
    let done = Committed {
        upload_id: "hk1a".into(),
        state: UploadState::Committed,
        final_path: p("a"),
        file: file("hkf", "hooker", "a", 1, "hooker"),
    };
    m.finish_commit_reporting(SessionEnd::Keep, &[done], &[event("f-a", "hk1a", 101)])
        .await
        .unwrap();
    m.abort_uploads_reporting(
        &["hk1a".into(), "hk1b".into()],
        SessionEnd::Keep,
        &[event("t-a", "hk1a", 102), event("t-b", "hk1b", 102)],
    )
    .await
    .unwrap();
    // A deleted file reports; a path with no file does not.
    m.delete_file_reporting(&sp("hooker"), &p("a"), &[event("d-a", "file:hkf", 103)])
        .await
        .unwrap();
    m.delete_file_reporting(&sp("hooker"), &p("none"), &[event("never2", "file:x", 103)])
        .await
        .unwrap();
    m.outbox_add(&[event("r-b", "hk1b", 104)]).await.unwrap();
    assert_eq!(m.outbox_depth().await.unwrap(), 6);

    // Only the oldest of each key is claimed, and claimed events are held.
    let claimed = m.outbox_claim(200, 10_000, 100).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["c-a", "c-b", "d-a"]);
    assert!(m.outbox_claim(200, 10_000, 100).await.unwrap().is_empty());
    // Not yet due: nothing.
    let early = m.outbox_claim(50, 10_000, 100).await;
    assert!(early.unwrap().is_empty());
    // Delivered ones leave; a failed one comes back when due, counted, and
    // holds back its key's later events until then.
    let seq = |id: &str| claimed.iter().find(|r| r.id == id).unwrap().seq;
    m.outbox_done(seq("c-a")).await.unwrap();
    m.outbox_done(seq("d-a")).await.unwrap();
    m.outbox_retry(seq("c-b"), 20_000).await.unwrap();
    let next = m.outbox_claim(15_000, 16_000, 100).await.unwrap();
    let ids: Vec<&str> = next.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["f-a"]);
    m.outbox_done(next[0].seq).await.unwrap();
    let again = m.outbox_claim(20_000, 30_000, 100).await.unwrap();
    let ids: Vec<(&str, u32)> = again.iter().map(|r| (r.id.as_str(), r.attempts)).collect();
    assert_eq!(ids, [("c-b", 1)]);
    m.outbox_done(again[0].seq).await.unwrap();
    let rest = m.outbox_claim(40_000, 50_000, 100).await.unwrap();
    assert_eq!(
        rest.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["t-b"]
    );
    assert_eq!(rest[0].created_at, 102);
    m.outbox_done(rest[0].seq).await.unwrap();
    let last = m.outbox_claim(40_000, 50_000, 100).await.unwrap();
    assert_eq!(
        last.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["r-b"]
    );
    m.outbox_done(last[0].seq).await.unwrap();
    assert_eq!(m.outbox_depth().await.unwrap(), 0);
}

pub async fn the_first_shared_secret_stored_is_the_one_everyone_gets(m: &dyn MetaStore) {
    let first = m
        .shared_secret("signing", b"first-candidate")
        .await
        .unwrap();
    assert_eq!(first, b"first-candidate");
    let again = m
        .shared_secret("signing", b"second-candidate")
        .await
        .unwrap();
    assert_eq!(
        again, b"first-candidate",
        "a later candidate changes nothing"
    );
    let other = m.shared_secret("other", b"x").await.unwrap();
    assert_eq!(other, b"x", "secrets are kept by name");
}

pub async fn users_tokens_and_spaces(m: &dyn MetaStore) {
    let before = m.user_count().await.unwrap();
    m.create_user(&user("ann")).await.unwrap();
    assert_eq!(m.user_count().await.unwrap(), before + 1);
    assert!(matches!(
        m.create_user(&user("ann")).await,
        Err(MetaError::AlreadyExists(_))
    ));
    assert_eq!(m.get_user("ann").await.unwrap(), Some(user("ann")));
    assert_eq!(m.get_user("nobody").await.unwrap(), None);
    let home = m.get_space(&sp("ann")).await.unwrap().unwrap();
    assert_eq!(home.owner.as_deref(), Some("ann"));

    let tok = TokenRecord {
        id: "t1".into(),
        user: "ann".into(),
        secret_hash: vec![1, 2, 3],
        created_at: 2,
        revoked: false,
    };
    m.insert_token(&tok).await.unwrap();
    assert_eq!(m.get_token("t1").await.unwrap(), Some(tok));
    assert!(m.revoke_token("t1").await.unwrap());
    assert!(m.get_token("t1").await.unwrap().unwrap().revoked);
    assert!(!m.revoke_token("nope").await.unwrap());

    let shared = SpaceRecord {
        name: sp("team"),
        owner: None,
        members: vec![("ann".into(), Access::Write), ("bob".into(), Access::Read)],
        created_at: 3,
    };
    m.create_space(&shared).await.unwrap();
    assert_eq!(
        m.get_space(&sp("team")).await.unwrap(),
        Some(shared.clone())
    );
    assert!(matches!(
        m.create_space(&shared).await,
        Err(MetaError::AlreadyExists(_))
    ));
}

pub async fn accounts_are_listed_and_changed(m: &dyn MetaStore) {
    m.create_user(&user("acc-a")).await.unwrap();
    m.create_user(&user("acc-b")).await.unwrap();
    let names: Vec<String> = m
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "users come by name");
    assert!(names.contains(&"acc-a".into()) && names.contains(&"acc-b".into()));

    assert!(
        m.set_user_limits("acc-a", Some(5_000), Some(3))
            .await
            .unwrap()
    );
    let a = m.get_user("acc-a").await.unwrap().unwrap();
    assert_eq!((a.quota_bytes, a.max_open_sessions), (Some(5_000), Some(3)));
    assert!(m.set_user_limits("acc-a", None, None).await.unwrap());
    let a = m.get_user("acc-a").await.unwrap().unwrap();
    assert_eq!((a.quota_bytes, a.max_open_sessions), (None, None));
    assert!(
        !m.set_user_limits("acc-nobody", Some(1), None)
            .await
            .unwrap()
    );

    for (id, at) in [("acc-t2", 20), ("acc-t1", 10)] {
        m.insert_token(&TokenRecord {
            id: id.into(),
            user: "acc-b".into(),
            secret_hash: vec![9],
            created_at: at,
            revoked: false,
        })
        .await
        .unwrap();
    }
    m.revoke_token("acc-t2").await.unwrap();
    let toks = m.list_tokens("acc-b").await.unwrap();
    let ids: Vec<(&str, bool)> = toks.iter().map(|t| (t.id.as_str(), t.revoked)).collect();
    assert_eq!(ids, [("acc-t1", false), ("acc-t2", true)], "oldest first");
    assert!(m.list_tokens("acc-a").await.unwrap().is_empty());

    assert!(
        m.set_member(&sp("acc-a"), "acc-b", Some(Access::Read))
            .await
            .unwrap()
    );
    assert!(
        m.set_member(&sp("acc-a"), "acc-b", Some(Access::Write))
            .await
            .unwrap()
    );
    let got = m.get_space(&sp("acc-a")).await.unwrap().unwrap();
    assert_eq!(got.members, [("acc-b".to_owned(), Access::Write)]);
    let listed = m.list_spaces().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "spaces come by name");
    assert_eq!(listed.iter().find(|s| s.name == sp("acc-a")), Some(&got));
    assert_eq!(
        listed
            .iter()
            .find(|s| s.name == sp("acc-b"))
            .unwrap()
            .members,
        [],
        "a space without members lists none"
    );
    assert!(m.set_member(&sp("acc-a"), "acc-b", None).await.unwrap());
    assert!(
        m.get_space(&sp("acc-a"))
            .await
            .unwrap()
            .unwrap()
            .members
            .is_empty()
    );
    assert!(
        !m.set_member(&sp("acc-none"), "acc-b", Some(Access::Read))
            .await
            .unwrap()
    );
}

pub async fn moves_are_all_or_nothing_and_never_onto_a_taken_path(m: &dyn MetaStore) {
    m.create_user(&user("mover")).await.unwrap();
    m.create_session(&session("smv", "mover", 1000), &[])
        .await
        .unwrap();
    let paths = ["a.txt", "dir/x.txt", "dir/sub/y.txt", "other/z.txt", "f"];
    let done: Vec<_> = paths
        .iter()
        .enumerate()
        .map(|(k, path)| Committed {
            upload_id: format!("mv{k}"),
            state: UploadState::Committed,
            final_path: p(path),
            file: file(&format!("mvf{k}"), "mover", path, 1, "mover"),
        })
        .collect();
    m.finish_commit(SessionEnd::Keep, &done).await.unwrap();
    let space = sp("mover");
    let at = |path: &'static str| async move { m.get_file(&sp("mover"), &p(path)).await.unwrap() };

    // A rename keeps the record (id and all) under its new path.
    let old = m
        .move_files(&space, &[(p("a.txt"), p("new/b.txt"))])
        .await
        .unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(
        (old[0].id.as_str(), old[0].path.as_str()),
        ("mvf0", "a.txt")
    );
    assert!(at("a.txt").await.is_none());
    assert_eq!(at("new/b.txt").await.unwrap().id, "mvf0");

    // Onto a file, a folder, or below a file: refused, nothing moved.
    for to in ["other/z.txt", "other", "f/inside.txt"] {
        let r = m
            .move_files(
                &space,
                &[
                    (p("dir/x.txt"), p("moved.txt")),
                    (p("dir/sub/y.txt"), p(to)),
                ],
            )
            .await;
        assert!(
            matches!(&r, Err(MetaError::AlreadyExists(Record::File(t))) if t.as_str() == to),
            "{to}: {r:?}"
        );
        assert!(
            at("dir/x.txt").await.is_some(),
            "{to}: the first move was undone"
        );
        assert!(at("moved.txt").await.is_none(), "{to}");
    }
    // A source that is not a file.
    let r = m.move_files(&space, &[(p("dir"), p("d2"))]).await;
    assert!(
        matches!(r, Err(MetaError::NotFound(Record::File(_)))),
        "{r:?}"
    );

    // A folder, file by file in one call.
    m.move_files(
        &space,
        &[
            (p("dir/x.txt"), p("d2/x.txt")),
            (p("dir/sub/y.txt"), p("d2/sub/y.txt")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(at("d2/sub/y.txt").await.unwrap().id, "mvf2");
    assert!(m.list(&space, Some(&p("dir"))).await.unwrap().is_empty());
}

pub async fn sessions_round_trip(m: &dyn MetaStore) {
    m.create_user(&user("sam")).await.unwrap();
    let s = Session {
        extend_secs: Some(600),
        open_ended: true,
        ..session("s1", "sam", 1000)
    };
    let ups = vec![
        Upload {
            whole_digests: vec![DigestAlgo::Sha1, DigestAlgo::Md5],
            ..upload("u1", "s1", "a/b.txt", Length::Known(25))
        },
        upload("u2", "s1", "c.txt", Length::Deferred),
    ];
    m.create_session(&s, &ups).await.unwrap();
    assert_eq!(m.get_session("s1").await.unwrap(), Some(s.clone()));
    assert_eq!(m.session_uploads("s1").await.unwrap(), ups);
    assert_eq!(m.get_upload("u2").await.unwrap(), Some(ups[1].clone()));
    assert_eq!(m.open_session_count("sam").await.unwrap(), 1);

    let part = Part {
        number: 2,
        offset: 10,
        size: 10,
        sha256: Some("ab".repeat(32)),
        sha1: None,
        md5: Some("cd".repeat(16)),
    };
    m.record_write("u1", ByteRange::new(10, 20).unwrap(), Some(&part), &[])
        .await
        .unwrap();
    m.record_write("u1", ByteRange::new(0, 10).unwrap(), None, &[])
        .await
        .unwrap();
    let u1 = m.get_upload("u1").await.unwrap().unwrap();
    assert_eq!(u1.received.ranges(), &[ByteRange::new(0, 20).unwrap()]);
    assert_eq!(u1.parts.get(&2), Some(&part));
    // The upload with its session, in one step, reads the same.
    let session = m.get_session(&u1.session_id).await.unwrap().unwrap();
    assert_eq!(
        m.upload_and_session("u1").await.unwrap(),
        Some((u1.clone(), session))
    );
    assert_eq!(m.upload_and_session("nope").await.unwrap(), None);

    m.forget("u1", &[ByteRange::new(0, 10).unwrap()], Some(2))
        .await
        .unwrap();
    let u1 = m.get_upload("u1").await.unwrap().unwrap();
    assert_eq!(u1.received.ranges(), &[ByteRange::new(0, 10).unwrap()]);
    assert!(u1.parts.is_empty());

    m.set_length("u2", Length::Known(7)).await.unwrap();
    assert_eq!(
        m.get_upload("u2").await.unwrap().unwrap().length,
        Length::Known(7)
    );
    m.set_upload_state("u2", UploadState::Aborted)
        .await
        .unwrap();
    assert_eq!(
        m.get_upload("u2").await.unwrap().unwrap().state,
        UploadState::Aborted
    );
    assert!(matches!(
        m.set_upload_state("zz", UploadState::Aborted).await,
        Err(MetaError::NotFound(_))
    ));
    // Uploads added later continue the order; a path already there or a
    // batch past the limit changes nothing.
    let more = vec![upload("u1b", "s1", "d.txt", Length::Known(1))];
    m.add_uploads("s1", &more, 3).await.unwrap();
    let ids: Vec<String> = m
        .session_uploads("s1")
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(ids, ["u1", "u2", "u1b"]);
    assert!(matches!(
        m.add_uploads(
            "s1",
            &[upload("u1c", "s1", "a/b.txt", Length::Known(1))],
            10
        )
        .await,
        Err(MetaError::AlreadyExists(_))
    ));
    let two = [
        upload("u1d", "s1", "e.txt", Length::Known(1)),
        upload("u1e", "s1", "f.txt", Length::Known(1)),
    ];
    assert!(matches!(
        m.add_uploads("s1", &two, 3).await,
        Err(MetaError::Full(4))
    ));
    assert_eq!(m.session_uploads("s1").await.unwrap().len(), 3);
    // An aborted upload (u2) holds neither its path nor a place under the
    // limit; the newest upload at a path is the one found there.
    m.add_uploads("s1", &[upload("u1c", "s1", "c.txt", Length::Deferred)], 3)
        .await
        .unwrap();
    let at = |path: &'static str| async move {
        m.upload_at("s1", &p(path)).await.unwrap().map(|u| u.id)
    };
    assert_eq!(at("c.txt").await.as_deref(), Some("u1c"));
    assert_eq!(at("d.txt").await.as_deref(), Some("u1b"));
    assert_eq!(at("nope.txt").await, None);
    // Every upload at a path, the aborted one too, in order.
    let all_at = |path: &'static str| async move {
        let ups = m.uploads_at("s1", &p(path)).await.unwrap();
        ups.into_iter().map(|u| u.id).collect::<Vec<_>>()
    };
    assert_eq!(all_at("c.txt").await, ["u2", "u1c"]);
    assert_eq!(all_at("nope.txt").await, Vec::<String>::new());
    m.set_upload_metadata("u1c", Some("{\"m\":2}"))
        .await
        .unwrap();
    let u1c = m.get_upload("u1c").await.unwrap().unwrap();
    assert_eq!(u1c.metadata.as_deref(), Some("{\"m\":2}"));
    assert!(!u1c.direct);
    m.mark_direct("u1c").await.unwrap();
    m.mark_direct("u1c").await.unwrap();
    assert!(m.get_upload("u1c").await.unwrap().unwrap().direct);
    m.set_upload_state("u1c", UploadState::Aborted)
        .await
        .unwrap();
    assert_eq!(m.session_uploads("s1").await.unwrap().len(), 4);
    let listed = m
        .list_sessions(Some("sam"), Some(SessionState::Open))
        .await
        .unwrap();
    assert_eq!(listed, vec![s]);
    assert!(
        m.list_sessions(Some("sam"), Some(SessionState::Aborted))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn concurrent_writes_are_all_recorded(m: &dyn MetaStore) {
    m.create_user(&user("cat")).await.unwrap();
    m.create_session(
        &session("s2", "cat", 1000),
        &[upload("u3", "s2", "big", Length::Known(1000))],
    )
    .await
    .unwrap();
    let writes = (0..100).map(|k| {
        m.record_write(
            "u3",
            ByteRange::new(k * 10, k * 10 + 10).unwrap(),
            None,
            &[],
        )
    });
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    let u3 = m.get_upload("u3").await.unwrap().unwrap();
    assert!(u3.received.is_complete(1000), "{:?}", u3.received);
}

pub async fn commit_is_one_transaction(m: &dyn MetaStore) {
    m.create_user(&user("dan")).await.unwrap();
    m.create_session(
        &session("s3", "dan", 1000),
        &[
            upload("u4", "s3", "x.txt", Length::Known(3)),
            upload("u5", "s3", "y.txt", Length::Known(4)),
        ],
    )
    .await
    .unwrap();
    m.begin_commit(
        Some("s3"),
        &[("u4".into(), p("x.txt")), ("u5".into(), p("y (1).txt"))],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        m.get_session("s3").await.unwrap().unwrap().state,
        SessionState::Committing
    );
    let mut committing = m.upload_ids(UploadState::Committing).await.unwrap();
    committing.sort();
    assert_eq!(committing, ["u4", "u5"]);
    let u5 = m.get_upload("u5").await.unwrap().unwrap();
    assert_eq!(u5.final_path, Some(p("y (1).txt")));
    assert_eq!(
        m.session_ids(SessionState::Committing).await.unwrap(),
        ["s3"]
    );

    let done = vec![
        Committed {
            upload_id: "u4".into(),
            state: UploadState::Committed,
            final_path: p("x.txt"),
            file: file("f4", "dan", "x.txt", 3, "dan"),
        },
        Committed {
            upload_id: "u5".into(),
            state: UploadState::Committed,
            final_path: p("y (1).txt"),
            file: file("f5", "dan", "y (1).txt", 4, "dan"),
        },
    ];
    let ended = m
        .finish_commit(SessionEnd::To("s3", SessionState::Committed), &done)
        .await
        .unwrap();
    assert_eq!(ended, Some(SessionState::Committed));
    assert!(
        m.upload_ids(UploadState::Committing)
            .await
            .unwrap()
            .is_empty()
    );
    let u5 = m.get_upload("u5").await.unwrap().unwrap();
    assert_eq!(u5.state, UploadState::Committed);
    assert_eq!(u5.file_id.as_deref(), Some("f5"));
    assert_eq!(
        m.get_file(&sp("dan"), &p("y (1).txt")).await.unwrap(),
        Some(done[1].file.clone())
    );
    // Replacing a record at the same path keeps one file there.
    m.finish_commit(
        SessionEnd::Keep,
        &[Committed {
            upload_id: "u4".into(),
            state: UploadState::Committed,
            final_path: p("x.txt"),
            file: file("f6", "dan", "x.txt", 9, "dan"),
        }],
    )
    .await
    .unwrap();
    assert_eq!(
        m.get_file(&sp("dan"), &p("x.txt"))
            .await
            .unwrap()
            .unwrap()
            .id,
        "f6"
    );
    // A record keeps its id: recorded at another path (a new version
    // under a new name), it leaves its old path in the same transaction.
    m.finish_commit(
        SessionEnd::Keep,
        &[Committed {
            upload_id: "u4".into(),
            state: UploadState::Committed,
            final_path: p("moved.txt"),
            file: file("f6", "dan", "moved.txt", 9, "dan"),
        }],
    )
    .await
    .unwrap();
    assert_eq!(m.get_file(&sp("dan"), &p("x.txt")).await.unwrap(), None);
    assert_eq!(
        m.get_file_by_id("f6").await.unwrap().unwrap().path,
        p("moved.txt")
    );
}

pub async fn files_listing_and_occupants(m: &dyn MetaStore) {
    m.create_user(&user("eve")).await.unwrap();
    m.create_session(&session("s4", "eve", 1000), &[])
        .await
        .unwrap();
    let paths = [
        "top.txt",
        "d/one.txt",
        "d/two.txt",
        "d/e/deep.txt",
        "d0.txt",
    ];
    let done: Vec<_> = paths
        .iter()
        .enumerate()
        .map(|(k, path)| Committed {
            upload_id: format!("none{k}"),
            state: UploadState::Committed,
            final_path: p(path),
            file: file(&format!("g{k}"), "eve", path, 1, "eve"),
        })
        .collect();
    m.finish_commit(SessionEnd::Keep, &done).await.unwrap();
    let names = |entries: Vec<Entry>| -> Vec<String> {
        entries
            .into_iter()
            .map(|e| match e {
                Entry::Folder(f) => format!("{f}/"),
                Entry::File(f) => f.path.name().to_owned(),
            })
            .collect()
    };
    assert_eq!(
        names(m.list(&sp("eve"), None).await.unwrap()),
        vec!["d/", "d0.txt", "top.txt"]
    );
    assert_eq!(
        names(m.list(&sp("eve"), Some(&p("d"))).await.unwrap()),
        vec!["e/", "one.txt", "two.txt"]
    );
    assert!(
        m.list(&sp("eve"), Some(&p("nothing")))
            .await
            .unwrap()
            .is_empty()
    );

    assert!(matches!(
        m.occupant(&sp("eve"), &p("d/one.txt")).await.unwrap(),
        Some(Occupant::File(_))
    ));
    assert_eq!(
        m.occupant(&sp("eve"), &p("d/e")).await.unwrap(),
        Some(Occupant::Folder)
    );
    assert_eq!(
        m.occupant(&sp("eve"), &p("top.txt/x")).await.unwrap(),
        Some(Occupant::FileAncestor(p("top.txt")))
    );
    assert_eq!(m.occupant(&sp("eve"), &p("d/new.txt")).await.unwrap(), None);
    assert_eq!(
        m.occupant(&sp("eve"), &p("d")).await.unwrap(),
        Some(Occupant::Folder)
    );

    let gone = m.delete_file(&sp("eve"), &p("d/one.txt")).await.unwrap();
    assert_eq!(gone.map(|f| f.id), Some("g1".to_owned()));
    assert_eq!(
        m.delete_file(&sp("eve"), &p("d/one.txt")).await.unwrap(),
        None
    );
    assert_eq!(m.get_file(&sp("eve"), &p("d/one.txt")).await.unwrap(), None);
    assert_eq!(m.get_file_by_id("g1").await.unwrap(), None);
    let by_id = m
        .get_file_by_id("g3")
        .await
        .unwrap()
        .expect("g3 is recorded");
    assert_eq!(by_id.path, p("d/e/deep.txt"));
}

pub async fn expiry_and_usage(m: &dyn MetaStore) {
    m.create_user(&user("fay")).await.unwrap();
    m.create_session(
        &session("s5", "fay", 100),
        &[upload("u6", "s5", "a", Length::Known(300))],
    )
    .await
    .unwrap();
    m.create_session(
        &session("s6", "fay", 5000),
        &[upload("u7", "s6", "b", Length::Known(200))],
    )
    .await
    .unwrap();
    let expired = m.expired_sessions(100).await.unwrap();
    assert_eq!(
        expired.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        vec!["s5"]
    );
    // Extending moves an open session's expiry later, never earlier.
    m.extend_session("s6", 7000).await.unwrap();
    m.extend_session("s6", 6000).await.unwrap();
    let s6 = m.get_session("s6").await.unwrap().unwrap();
    assert_eq!(s6.expires_at, 7000);
    m.finish_commit(
        SessionEnd::Keep,
        &[Committed {
            upload_id: "x".into(),
            state: UploadState::Committed,
            final_path: p("old"),
            file: file("h1", "fay", "old", 50, "fay"),
        }],
    )
    .await
    .unwrap();
    let usage = m.usage("fay").await.unwrap();
    assert_eq!((usage.committed, usage.reserved), (50, 500));
    m.set_session_state("s5", SessionState::Expired, None)
        .await
        .unwrap();
    assert_eq!(m.usage("fay").await.unwrap().reserved, 200);
    assert!(m.expired_sessions(100).await.unwrap().is_empty());
    assert_eq!(m.open_session_count("fay").await.unwrap(), 1);
    let counts = m.session_counts().await.unwrap();
    assert!(counts.contains(&(SessionState::Expired, 1)), "{counts:?}");

    // A session whose files expire with it; its files carry the expiry.
    let s7 = Session {
        files_expire: true,
        ..session("s7", "fay", 900)
    };
    m.create_session(&s7, &[]).await.unwrap();
    assert!(m.get_session("s7").await.unwrap().unwrap().files_expire);
    assert!(!m.get_session("s6").await.unwrap().unwrap().files_expire);
    m.finish_commit(
        SessionEnd::Keep,
        &[Committed {
            upload_id: "y".into(),
            state: UploadState::Committed,
            final_path: p("temp"),
            file: FileRecord {
                expires_at: Some(900),
                ..file("h2", "fay", "temp", 5, "fay")
            },
        }],
    )
    .await
    .unwrap();
    let f = m.get_file(&sp("fay"), &p("temp")).await.unwrap().unwrap();
    assert_eq!(f.expires_at, Some(900));
    assert_eq!(f.object.as_deref(), Some("obj-h2"), "the object is kept");
    let by_object = m.get_file_by_object("obj-h2").await.unwrap().unwrap();
    assert_eq!(by_object.id, "h2");
    assert!(m.get_file_by_object("obj-none").await.unwrap().is_none());
    assert!(m.expired_files(899).await.unwrap().is_empty());
    let due = m.expired_files(900).await.unwrap();
    assert_eq!(
        due.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
        vec!["h2"],
        "only files with an expiry are due"
    );
}

/// The session's end is written with the change that causes it: a crash
/// between "the last upload is committed" and "the session is committed"
/// cannot happen, because there is no between.
pub async fn state_changes_end_the_session_in_the_same_transaction(m: &dyn MetaStore) {
    m.create_user(&user("gus")).await.unwrap();
    let s = session("g1", "gus", 10_000);
    let ups = [
        upload("g1a", "g1", "a", Length::Known(1)),
        upload("g1b", "g1", "b", Length::Known(1)),
    ];
    m.create_session(&s, &ups).await.unwrap();
    let commit = |id: &str, path: &str, f: &str| Committed {
        upload_id: id.into(),
        state: UploadState::Committed,
        final_path: p(path),
        file: file(f, "gus", path, 1, "gus"),
    };
    // One of two committed: the session stays open.
    m.begin_commit(None, &[("g1a".into(), p("a"))], &[])
        .await
        .unwrap();
    let ended = m
        .finish_commit(SessionEnd::IfSettled("g1"), &[commit("g1a", "a", "ga")])
        .await
        .unwrap();
    assert_eq!(ended, None);
    assert_eq!(
        m.get_session("g1").await.unwrap().unwrap().state,
        SessionState::Open
    );
    // The last one aborted: the session ends committed (one file came of it).
    let ended = m
        .abort_uploads(&["g1b".into()], SessionEnd::IfSettled("g1"))
        .await
        .unwrap();
    assert_eq!(ended, Some(SessionState::Committed));
    assert_eq!(
        m.get_session("g1").await.unwrap().unwrap().state,
        SessionState::Committed
    );

    // Every upload aborted: the session ends aborted.
    m.create_session(
        &session("g2", "gus", 10_000),
        &[upload("g2a", "g2", "a", Length::Known(1))],
    )
    .await
    .unwrap();
    let ended = m
        .abort_uploads(&["g2a".into()], SessionEnd::IfSettled("g2"))
        .await
        .unwrap();
    assert_eq!(ended, Some(SessionState::Aborted));

    // An open-ended session never settles by itself.
    let s3 = Session {
        open_ended: true,
        ..session("g3", "gus", 10_000)
    };
    m.create_session(&s3, &[upload("g3a", "g3", "a", Length::Known(1))])
        .await
        .unwrap();
    m.begin_commit(None, &[("g3a".into(), p("c"))], &[])
        .await
        .unwrap();
    let ended = m
        .finish_commit(SessionEnd::IfSettled("g3"), &[commit("g3a", "c", "gc")])
        .await
        .unwrap();
    assert_eq!(ended, None);
    assert_eq!(
        m.get_session("g3").await.unwrap().unwrap().state,
        SessionState::Open
    );

    // Ending a session aborts its open uploads in the same transaction.
    m.create_session(
        &session("g4", "gus", 10_000),
        &[upload("g4a", "g4", "a", Length::Known(1))],
    )
    .await
    .unwrap();
    m.abort_uploads(&["g4a".into()], SessionEnd::To("g4", SessionState::Expired))
        .await
        .unwrap();
    assert_eq!(
        m.get_session("g4").await.unwrap().unwrap().state,
        SessionState::Expired
    );
    assert_eq!(
        m.get_upload("g4a").await.unwrap().unwrap().state,
        UploadState::Aborted
    );
}

/// Recovery's last resort: an upload it cannot repair is aborted and its
/// session failed with a reason, reading nothing but the id.
pub async fn failing_an_upload_fails_its_session_with_a_reason(m: &dyn MetaStore) {
    m.create_user(&user("hal")).await.unwrap();
    m.create_session(
        &session("h1", "hal", 10_000),
        &[upload("h1a", "h1", "a", Length::Known(1))],
    )
    .await
    .unwrap();
    m.begin_commit(None, &[("h1a".into(), p("a"))], &[])
        .await
        .unwrap();
    m.fail_upload("h1a", "its bytes are missing").await.unwrap();
    let s = m.get_session("h1").await.unwrap().unwrap();
    assert_eq!(s.state, SessionState::Failed);
    assert_eq!(s.failure.as_deref(), Some("its bytes are missing"));
    let u = m.get_upload("h1a").await.unwrap().unwrap();
    assert_eq!((u.state, u.final_path), (UploadState::Aborted, None));

    // An upload committed meanwhile (its bytes found missing by a write
    // that ran before its commit) stays committed, and its session too.
    m.create_session(
        &session("h2", "hal", 10_000),
        &[upload("h2a", "h2", "b", Length::Known(1))],
    )
    .await
    .unwrap();
    m.begin_commit(Some("h2"), &[("h2a".into(), p("b"))], &[])
        .await
        .unwrap();
    let done = [Committed {
        upload_id: "h2a".into(),
        state: UploadState::Committed,
        final_path: p("b"),
        file: file("h2f", "hal", "b", 1, "hal"),
    }];
    m.finish_commit(SessionEnd::To("h2", SessionState::Committed), &done)
        .await
        .unwrap();
    m.fail_upload("h2a", "its bytes are missing").await.unwrap();
    let u = m.get_upload("h2a").await.unwrap().unwrap();
    assert_eq!(
        (u.state, u.final_path),
        (UploadState::Committed, Some(p("b")))
    );
    let s = m.get_session("h2").await.unwrap().unwrap();
    assert_eq!((s.state, s.failure), (SessionState::Committed, None));

    // Nor is a session still open for another upload failed for one of
    // its uploads committed meanwhile.
    m.create_session(
        &session("h3", "hal", 10_000),
        &[
            upload("h3a", "h3", "c", Length::Known(1)),
            upload("h3b", "h3", "d", Length::Known(1)),
        ],
    )
    .await
    .unwrap();
    m.begin_commit(None, &[("h3a".into(), p("c"))], &[])
        .await
        .unwrap();
    let done = [Committed {
        upload_id: "h3a".into(),
        state: UploadState::Committed,
        final_path: p("c"),
        file: file("h3f", "hal", "c", 1, "hal"),
    }];
    m.finish_commit(SessionEnd::IfSettled("h3"), &done)
        .await
        .unwrap();
    m.fail_upload("h3a", "its bytes are missing").await.unwrap();
    let s = m.get_session("h3").await.unwrap().unwrap();
    assert_eq!((s.state, s.failure), (SessionState::Open, None));
    let u = m.get_upload("h3b").await.unwrap().unwrap();
    assert_eq!(u.state, UploadState::Open);
}

/// Every state change is held to the core's lifecycle: an illegal one is
/// refused and changes nothing.
pub async fn illegal_state_changes_are_refused(m: &dyn MetaStore) {
    m.create_user(&user("ike")).await.unwrap();
    m.create_session(
        &session("i1", "ivy", 10_000),
        &[upload("i1a", "i1", "a", Length::Known(1))],
    )
    .await
    .unwrap();
    // An open upload cannot become a file without its intent recorded.
    let err = m
        .finish_commit(
            SessionEnd::Keep,
            &[Committed {
                upload_id: "i1a".into(),
                state: UploadState::Committed,
                final_path: p("a"),
                file: file("i1f", "ivy", "a", 1, "ivy"),
            }],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::IllegalTransition(_)), "{err:?}");
    assert!(m.get_file(&sp("ivy"), &p("a")).await.unwrap().is_none());
    m.set_session_state("i1", SessionState::Aborted, None)
        .await
        .unwrap();
    // A final state is never left.
    let err = m
        .set_session_state("i1", SessionState::Open, None)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::IllegalTransition(_)), "{err:?}");
    m.set_upload_state("i1a", UploadState::Aborted)
        .await
        .unwrap();
    let err = m
        .begin_commit(None, &[("i1a".into(), p("a"))], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::IllegalTransition(_)), "{err:?}");
    assert_eq!(
        m.get_upload("i1a").await.unwrap().unwrap().state,
        UploadState::Aborted
    );
    // A commit's intent in a session that has ended: refused whole, the
    // upload left as it was (PostgreSQL's one-statement compare-and-set
    // misses and its locking path says why).
    m.create_session(
        &session("i2", "ivy", 10_000),
        &[upload("i2a", "i2", "a", Length::Known(1))],
    )
    .await
    .unwrap();
    m.set_session_state("i2", SessionState::Aborted, None)
        .await
        .unwrap();
    let err = m
        .begin_commit(Some("i2"), &[("i2a".into(), p("a"))], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::IllegalTransition(_)), "{err:?}");
    let i2a = m.get_upload("i2a").await.unwrap().unwrap();
    assert_eq!((i2a.state, i2a.final_path), (UploadState::Open, None));
}

/// A body sent again is added beside the complete upload it replaces
/// (aborting earlier attempts in the same transaction); closing aborts the
/// losers with the commit's intent.
pub async fn a_body_sent_again_waits_beside_the_one_it_replaces(m: &dyn MetaStore) {
    m.create_user(&user("kim")).await.unwrap();
    let s = Session {
        open_ended: true,
        ..session("k1", "kim", 10_000)
    };
    m.create_session(&s, &[upload("k1a", "k1", "a", Length::Known(1))])
        .await
        .unwrap();
    m.add_uploads("k1", &[upload("k1b", "k1", "a", Length::Deferred)], 10)
        .await
        .unwrap_err();
    let beside = |id: &str| upload(id, "k1", "a", Length::Deferred);
    m.add_upload_beside("k1", &beside("k1b"), &["k1a".into()], &[], 10)
        .await
        .unwrap();
    // Another holder of the path than those named: refused, nothing changed.
    let err = m
        .add_upload_beside("k1", &beside("k1c"), &["k1a".into()], &[], 10)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::AlreadyExists(_)), "{err:?}");
    assert_eq!(m.get_upload("k1c").await.unwrap(), None);
    // The attempt k1b broke off: the next one aborts it as it is added.
    m.add_upload_beside("k1", &beside("k1c"), &["k1a".into()], &["k1b".into()], 10)
        .await
        .unwrap();
    let state = |id: &'static str| async move { m.get_upload(id).await.unwrap().unwrap().state };
    assert_eq!(state("k1b").await, UploadState::Aborted);
    assert_eq!(state("k1a").await, UploadState::Open);
    // Closing commits k1a and drops k1c in the intent's transaction.
    m.begin_commit(Some("k1"), &[("k1a".into(), p("a"))], &["k1c".into()])
        .await
        .unwrap();
    assert_eq!(state("k1a").await, UploadState::Committing);
    assert_eq!(state("k1c").await, UploadState::Aborted);
}

/// [`MetaStore::begin_commit_if_free`] and the steps that go with it: a
/// session created with its turn leased, an intent that claims only a
/// free path (and records the write that left its record to it), and a
/// result that ends leases.
pub async fn an_intent_if_free_claims_only_a_free_path_and_records_its_range(m: &dyn MetaStore) {
    m.create_user(&user("una")).await.unwrap();
    let limits = CreateLimits {
        max_open_sessions: 100,
        quota_bytes: None,
    };
    let made = [(
        session("fs1", "una", 10_000),
        vec![
            upload("fu1", "fs1", "a/b.txt", Length::Known(5)),
            upload("fu2", "fs1", "a/b.txt", Length::Known(5)),
            upload("fu3", "fs1", "a", Length::Known(5)),
            upload("fu4", "fs1", "c.txt", Length::Known(5)),
            upload("fu5", "fs1", "d.txt", Length::Known(5)),
        ],
    )];
    let turns = m
        .create_sessions_holding(&made, limits, &[], &["session:fs1".to_owned()])
        .await
        .unwrap()
        .expect("within the limits");
    assert_eq!(turns.len(), 1, "one token per turn asked for");
    let (space, whole) = (sp("una"), ByteRange::new(0, 5));
    assert!(
        m.begin_commit_if_free(None, "fu1", &space, &p("a/b.txt"), whole)
            .await
            .unwrap(),
        "a free path is claimed"
    );
    let fu1 = m.get_upload("fu1").await.unwrap().unwrap();
    assert_eq!(fu1.state, UploadState::Committing);
    assert_eq!(fu1.final_path, Some(p("a/b.txt")));
    assert!(fu1.is_complete(), "the range is recorded with the intent");
    // Another upload heading for the same path, or for a file above it.
    for (id, path) in [("fu2", "a/b.txt"), ("fu3", "a")] {
        assert!(
            !m.begin_commit_if_free(None, id, &space, &p(path), whole)
                .await
                .unwrap(),
            "{path} is taken by a commit in progress"
        );
        let u = m.get_upload(id).await.unwrap().unwrap();
        assert_eq!(u.state, UploadState::Open, "nothing changed for {id}");
        assert!(u.received.is_empty(), "no range recorded for {id}");
    }
    m.finish_commit_releasing(
        SessionEnd::Keep,
        &[Committed {
            upload_id: "fu1".into(),
            state: UploadState::Committed,
            final_path: p("a/b.txt"),
            file: file("ff1", "una", "a/b.txt", 5, "una"),
        }],
        &[],
        &turns,
    )
    .await
    .unwrap();
    // Now a file: the path, a file above it and a folder around it stay taken.
    for (id, path) in [("fu2", "a/b.txt"), ("fu3", "a"), ("fu4", "a/b.txt/c")] {
        assert!(
            !m.begin_commit_if_free(None, id, &space, &p(path), None)
                .await
                .unwrap(),
            "{path} is taken by a file"
        );
    }
    // An upload that is no longer open is not claimed either.
    m.abort_uploads(&["fu5".to_owned()], SessionEnd::Keep)
        .await
        .unwrap();
    assert!(
        !m.begin_commit_if_free(None, "fu5", &space, &p("d.txt"), None)
            .await
            .unwrap()
    );
    assert_eq!(
        m.get_upload("fu5").await.unwrap().unwrap().state,
        UploadState::Aborted
    );
    // Without a range, the one recorded before stands.
    m.record_write("fu4", ByteRange::new(0, 5).unwrap(), None, &[])
        .await
        .unwrap();
    assert!(
        m.begin_commit_if_free(None, "fu4", &space, &p("c.txt"), None)
            .await
            .unwrap()
    );
    let fu4 = m.get_upload("fu4").await.unwrap().unwrap();
    assert_eq!(fu4.state, UploadState::Committing);
    assert!(fu4.is_complete());

    // The commit of a whole session of one upload: the session goes
    // `committing` with the upload, only from `open`.
    let made = [
        (
            session("fs2", "una", 10_000),
            vec![upload("fu6", "fs2", "e.txt", Length::Known(5))],
        ),
        (
            session("fs3", "una", 10_000),
            vec![upload("fu7", "fs3", "f.txt", Length::Known(5))],
        ),
    ];
    m.create_sessions_within(&made, limits).await.unwrap();
    m.set_session_state("fs3", SessionState::Aborted, None)
        .await
        .unwrap();
    assert!(
        !m.begin_commit_if_free(Some("fs3"), "fu7", &space, &p("f.txt"), whole)
            .await
            .unwrap(),
        "an ended session is not committed"
    );
    let fu7 = m.get_upload("fu7").await.unwrap().unwrap();
    assert_eq!(fu7.state, UploadState::Open, "nothing changed for fu7");
    assert!(fu7.received.is_empty(), "no range recorded for fu7");
    assert!(
        m.begin_commit_if_free(Some("fs2"), "fu6", &space, &p("e.txt"), whole)
            .await
            .unwrap()
    );
    let fs2 = m.get_session("fs2").await.unwrap().unwrap();
    assert_eq!(fs2.state, SessionState::Committing);
    let fu6 = m.get_upload("fu6").await.unwrap().unwrap();
    assert_eq!(fu6.state, UploadState::Committing);
    assert!(fu6.is_complete());
}

/// [`MetaStore::commit_if_free`]: an upload goes from `open` to a file at
/// a free path with its session's end, its events and its leases in one
/// step; at a taken path, or for an upload or session no longer open,
/// nothing changes.
pub async fn a_commit_if_free_records_a_file_at_a_free_path_in_one_step(m: &dyn MetaStore) {
    m.create_user(&user("ola")).await.unwrap();
    let limits = CreateLimits {
        max_open_sessions: 100,
        quota_bytes: None,
    };
    let made = [(
        session("gs1", "ola", 10_000),
        vec![
            upload("ga1", "gs1", "g/x.txt", Length::Known(5)),
            upload("ga2", "gs1", "g/x.txt", Length::Known(5)),
            upload("ga3", "gs1", "g", Length::Known(5)),
            upload("ga4", "gs1", "h.txt", Length::Known(5)),
        ],
    )];
    let turns = m
        .create_sessions_holding(&made, limits, &[], &["session:gs1".to_owned()])
        .await
        .unwrap()
        .expect("within the limits");
    for id in ["ga1", "ga2", "ga3", "ga4"] {
        m.record_write(id, ByteRange::new(0, 5).unwrap(), None, &[])
            .await
            .unwrap();
    }
    let space = sp("ola");
    let done = |id: &str, path: &str, file_id: &str| Committed {
        upload_id: id.into(),
        state: UploadState::Committed,
        final_path: p(path),
        file: file(file_id, "ola", path, 5, "ola"),
    };
    let depth = m.outbox_depth().await.unwrap();
    let ended = m
        .commit_if_free(
            SessionEnd::IfSettled("gs1"),
            &done("ga1", "g/x.txt", "gf1"),
            &[event("g-1", "ga1", 100)],
            &turns,
        )
        .await
        .unwrap();
    assert_eq!(ended, Some(None), "committed; the session has open uploads");
    let ga1 = m.get_upload("ga1").await.unwrap().unwrap();
    assert_eq!(ga1.state, UploadState::Committed);
    assert_eq!(ga1.final_path, Some(p("g/x.txt")));
    assert_eq!(ga1.file_id.as_deref(), Some("gf1"));
    let f = m.get_file(&space, &p("g/x.txt")).await.unwrap().unwrap();
    assert_eq!(
        (f.id.as_str(), f.object.as_deref()),
        ("gf1", Some("obj-gf1"))
    );
    assert_eq!(
        m.outbox_depth().await.unwrap(),
        depth + 1,
        "its event is written"
    );

    // The same path, or a file's path below which it lies: taken.
    for (id, path) in [("ga2", "g/x.txt"), ("ga3", "g")] {
        let ended = m
            .commit_if_free(
                SessionEnd::IfSettled("gs1"),
                &done(id, path, "never"),
                &[event("never", id, 100)],
                &[],
            )
            .await
            .unwrap();
        assert_eq!(ended, None, "{path} is taken");
        let u = m.get_upload(id).await.unwrap().unwrap();
        assert_eq!(u.state, UploadState::Open, "nothing changed for {id}");
        assert!(u.is_complete(), "{id} keeps its range");
    }
    let f = m.get_file(&space, &p("g/x.txt")).await.unwrap().unwrap();
    assert_eq!(f.id, "gf1", "the file stays");
    assert_eq!(m.outbox_depth().await.unwrap(), depth + 1, "no event");

    // The last open upload's commit ends its session.
    m.abort_uploads(&["ga2".to_owned(), "ga3".to_owned()], SessionEnd::Keep)
        .await
        .unwrap();
    assert_eq!(
        m.commit_if_free(
            SessionEnd::IfSettled("gs1"),
            &done("ga2", "k.txt", "never"),
            &[],
            &[]
        )
        .await
        .unwrap(),
        None,
        "an aborted upload is not committed"
    );
    assert_eq!(m.get_file(&space, &p("k.txt")).await.unwrap(), None);
    let ended = m
        .commit_if_free(
            SessionEnd::IfSettled("gs1"),
            &done("ga4", "h.txt", "gf4"),
            &[],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ended, Some(Some(SessionState::Committed)));
    let gs1 = m.get_session("gs1").await.unwrap().unwrap();
    assert_eq!(gs1.state, SessionState::Committed);

    // The commit of a whole session, only from `open`.
    let made = [
        (
            session("gs2", "ola", 10_000),
            vec![upload("gb1", "gs2", "m.txt", Length::Known(5))],
        ),
        (
            session("gs3", "ola", 10_000),
            vec![upload("gc1", "gs3", "n.txt", Length::Known(5))],
        ),
    ];
    m.create_sessions_within(&made, limits).await.unwrap();
    m.set_session_state("gs3", SessionState::Aborted, None)
        .await
        .unwrap();
    let whole = |id| SessionEnd::To(id, SessionState::Committed);
    assert_eq!(
        m.commit_if_free(whole("gs3"), &done("gc1", "n.txt", "never"), &[], &[])
            .await
            .unwrap(),
        None,
        "an ended session is not committed"
    );
    assert_eq!(
        m.get_upload("gc1").await.unwrap().unwrap().state,
        UploadState::Open
    );
    assert_eq!(m.get_file(&space, &p("n.txt")).await.unwrap(), None);
    assert_eq!(
        m.commit_if_free(whole("gs2"), &done("gb1", "m.txt", "gf5"), &[], &[])
            .await
            .unwrap(),
        Some(Some(SessionState::Committed))
    );
    assert_eq!(
        m.get_session("gs2").await.unwrap().unwrap().state,
        SessionState::Committed
    );
    assert_eq!(
        m.get_upload("gb1").await.unwrap().unwrap().state,
        UploadState::Committed
    );
}

/// `Upload::sealed`: recorded with the write that stored the whole file
/// (alone or ending its lease), read by every way an upload is read (with
/// its session, under a claim, with its session's uploads under the turn),
/// left alone by a write that carries none, and cleared by `forget`.
pub async fn a_whole_files_digests_are_kept_with_its_write_until_its_bytes_are_forgotten(
    m: &dyn MetaStore,
) {
    m.create_user(&user("wes")).await.unwrap();
    let ups = vec![
        upload("sw1", "sw", "w1.bin", Length::Known(4)),
        upload("sw2", "sw", "w2.bin", Length::Known(4)),
    ];
    m.create_session(&session("sw", "wes", 1000), &ups)
        .await
        .unwrap();
    let digests = vec![
        Digest::new(DigestAlgo::Sha256, vec![0x5a; 32]).unwrap(),
        Digest::new(DigestAlgo::Sha1, vec![0x1f; 20]).unwrap(),
    ];
    let whole = ByteRange::new(0, 4).unwrap();
    let part = Part {
        number: 1,
        offset: 0,
        size: 4,
        sha256: Some("5a".repeat(32)),
        sha1: None,
        md5: None,
    };
    m.record_write("sw1", whole, Some(&part), &digests)
        .await
        .unwrap();
    let Claim::Granted(lease) = m.claim("sw2", 0, 4, LeaseKind::Write).await.unwrap() else {
        panic!("the claim of a free range is granted");
    };
    m.record_write_releasing("sw2", whole, None, &digests[..1], &lease)
        .await
        .unwrap();

    let u1 = m.get_upload("sw1").await.unwrap().unwrap();
    assert_eq!(u1.sealed, digests);
    assert_eq!(u1.parts.get(&1), Some(&part));
    assert_eq!(
        m.get_upload("sw2").await.unwrap().unwrap().sealed,
        &digests[..1]
    );
    let (read, _) = m.upload_and_session("sw1").await.unwrap().unwrap();
    assert_eq!(read, u1);
    let (claim, _, read) = m
        .claim_and_read("sw1", 0, u64::MAX, LeaseKind::Commit, None)
        .await
        .unwrap();
    assert_eq!(read.map(|(u, _)| u), Some(u1.clone()));
    if let Claim::Granted(t) = claim {
        m.release(&t).await.unwrap();
    }
    let turn = m.claim_commit_turn("sw turn", "sw").await.unwrap();
    let (_, uploads) = turn.read.expect("the turn is granted and the session read");
    assert_eq!(uploads[0], u1);
    let ids: Vec<&str> = turn.commits.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["sw1", "sw2"], "a commit lease of each open upload");
    for (_, t) in &turn.commits {
        m.release(t).await.unwrap();
    }
    if let Claim::Granted(t) = turn.claim {
        m.release(&t).await.unwrap();
    }

    // A resend compared with the object records no digests: they stay.
    m.record_write("sw1", whole, Some(&part), &[])
        .await
        .unwrap();
    assert_eq!(m.get_upload("sw1").await.unwrap().unwrap().sealed, digests);
    // Bytes forgotten: the digests go with them.
    m.forget("sw1", &[], Some(1)).await.unwrap();
    let u1 = m.get_upload("sw1").await.unwrap().unwrap();
    assert!(u1.sealed.is_empty() && u1.received.is_empty() && u1.parts.is_empty());
}
