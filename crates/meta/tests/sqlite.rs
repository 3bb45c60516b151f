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

/// A database from before the commit mode was stored with the session:
/// open tus sessions (not partial uploads) and Graph sessions without
/// deferCommit commit on their last byte once it is opened; the rest keep
/// manual commits.
#[tokio::test]
async fn sessions_whose_dialect_committed_them_commit_on_their_last_byte_after_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    drop(Sqlite::open(&path).unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        let rows = [
            ("tus", "tus", "a.bin", "null", "open"),
            ("partial", "tus", ".tus-partial/0a1b", "null", "open"),
            (
                "graph",
                "graph",
                "g.bin",
                r#"'{"defer_commit":false}'"#,
                "open",
            ),
            (
                "deferred",
                "graph",
                "d.bin",
                r#"'{"defer_commit":true}'"#,
                "open",
            ),
            ("native", "native", "n.bin", "null", "open"),
            ("done", "tus", "c.bin", "null", "committed"),
        ];
        for (id, dialect, p, meta, state) in rows {
            c.execute_batch(&format!(
                "INSERT INTO sessions (id, owner, space, conflict, auto_commit, state, created_at, expires_at, dialect) \
                 VALUES ('{id}', 'alice', 'alice', 'fail', 0, '{state}', 0, 9999999999999, '{dialect}');
                 INSERT INTO uploads (id, session_id, idx, path, length, part_size, state, metadata) \
                 VALUES ('u-{id}', '{id}', 0, '{p}', 10, 10, 'open', {meta});"
            ))
            .unwrap();
        }
        c.execute_batch("PRAGMA user_version = 0").unwrap();
    }
    let db = Sqlite::open(&path).unwrap();
    for (id, auto) in [
        ("tus", true),
        ("partial", false),
        ("graph", true),
        ("deferred", false),
        ("native", false),
        ("done", false),
    ] {
        let s = db.get_session(id).await.unwrap().unwrap();
        assert_eq!(s.auto_commit, auto, "{id}");
    }
    // Once applied, a migration does not run again: a manual session made
    // afterwards stays manual across a reopen.
    drop(db);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("UPDATE sessions SET auto_commit = 0 WHERE id = 'tus'")
            .unwrap();
    }
    let db = Sqlite::open(&path).unwrap();
    assert!(!db.get_session("tus").await.unwrap().unwrap().auto_commit);
}

/// A database from before Box's new version under a new name was an
/// engine operation: an unfinished Box upload's old path (kept in its
/// metadata) becomes the id of the file it `replaces`, and Box's
/// bookkeeping leaves the user's metadata of Box uploads and their files;
/// another dialect's metadata is left alone.
#[tokio::test]
async fn box_renames_kept_in_user_metadata_move_to_replaces_after_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    drop(Sqlite::open(&path).unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "INSERT INTO sessions (id, owner, space, conflict, auto_commit, state, created_at, expires_at, dialect) VALUES \
               ('b1', 'alice', 'alice', 'replace', 0, 'open', 0, 9999999999999, 'box'), \
               ('b0', 'alice', 'alice', 'fail', 0, 'committed', 0, 9999999999999, 'box'), \
               ('n0', 'alice', 'alice', 'fail', 0, 'committed', 0, 9999999999999, 'native'); \
             INSERT INTO uploads (id, session_id, idx, path, length, part_size, state, metadata, file_id) VALUES \
               ('u-b1', 'b1', 0, 'new.txt', 10, 10, 'open', '{\"renames\":\"old.txt\"}', NULL), \
               ('u-b0', 'b0', 0, 'old.txt', 10, 10, 'committed', '{}', 'f-old'), \
               ('u-n0', 'n0', 0, 'n.txt', 10, 10, 'committed', '{}', 'f-n'); \
             INSERT INTO files (id, space, path, size, sha256, owner, created_at, metadata) VALUES \
               ('f-old', 'alice', 'old.txt', 10, 'x', 'alice', 0, '{}'), \
               ('f-n', 'alice', 'n.txt', 10, 'x', 'alice', 0, '{}'); \
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let db = Sqlite::open(&path).unwrap();
    let up = db.get_upload("u-b1").await.unwrap().unwrap();
    assert_eq!((up.replaces.as_deref(), up.metadata), (Some("f-old"), None));
    let old = db.get_file_by_id("f-old").await.unwrap().unwrap();
    assert_eq!(old.metadata, None, "Box's bookkeeping is not user metadata");
    let native = db.get_file_by_id("f-n").await.unwrap().unwrap();
    assert_eq!(
        native.metadata.as_deref(),
        Some("{}"),
        "a user's own `{{}}` stays"
    );
}

/// A database from before `dialect_state`: what tus, the IETF draft,
/// Vault and UCloud kept between requests in the user's metadata moves out of it
/// (HEAD and Vault read it from `dialect_state` now), Graph's old
/// deferCommit goes, and the files those dialects made no longer show it
/// as their metadata; a native upload's metadata stays.
#[tokio::test]
async fn dialect_state_kept_in_user_metadata_moves_to_its_own_column_after_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    drop(Sqlite::open(&path).unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        let rows = [
            (
                "tus",
                "tus",
                r#"{"upload_metadata":"filename YQ=="}"#,
                "open",
                "",
            ),
            ("draft", "ietf-draft", "{}", "committed", "f-draft"),
            (
                "veeva",
                "veeva",
                r#"{"path":"/a/b.txt"}"#,
                "committed",
                "f-veeva",
            ),
            ("graph", "graph", r#"{"defer_commit":true}"#, "open", ""),
            ("native", "native", r#"{"k":1}"#, "committed", "f-native"),
            (
                "ucloud",
                "ucloud",
                r#"{"ucloud":{"modifiedAt":5,"path":"/alice/u"}}"#,
                "committed",
                "f-ucloud",
            ),
        ];
        for (id, dialect, meta, state, file) in rows {
            c.execute(
                "INSERT INTO sessions (id, owner, space, conflict, auto_commit, state, created_at, expires_at, dialect) \
                 VALUES (?1, 'alice', 'alice', 'fail', 0, 'open', 0, 9999999999999, ?2)",
                [id, dialect],
            )
            .unwrap();
            c.execute(
                "INSERT INTO uploads (id, session_id, idx, path, length, part_size, state, metadata, file_id) \
                 VALUES (?1, ?1, 0, ?1, 10, 10, ?2, ?3, NULLIF(?4, ''))",
                [id, state, meta, file],
            )
            .unwrap();
            if !file.is_empty() {
                c.execute(
                    "INSERT INTO files (id, space, path, size, sha256, owner, created_at, metadata) \
                     VALUES (?1, 'alice', ?1, 10, 'x', 'alice', 0, ?2)",
                    [file, meta],
                )
                .unwrap();
            }
        }
        c.execute_batch("PRAGMA user_version = 2").unwrap();
    }
    let db = Sqlite::open(&path).unwrap();
    for (id, meta, state) in [
        ("tus", None, Some(r#"{"upload_metadata":"filename YQ=="}"#)),
        ("draft", None, Some("{}")),
        ("veeva", None, Some(r#"{"path":"/a/b.txt"}"#)),
        ("graph", None, None),
        ("native", Some(r#"{"k":1}"#), None),
        (
            "ucloud",
            None,
            Some(r#"{"ucloud":{"modifiedAt":5,"path":"/alice/u"}}"#),
        ),
    ] {
        let up = db.get_upload(id).await.unwrap().unwrap();
        assert_eq!(
            (up.metadata.as_deref(), up.dialect_state.as_deref()),
            (meta, state),
            "{id}"
        );
    }
    for (id, meta) in [
        ("f-draft", None),
        ("f-veeva", None),
        ("f-native", Some(r#"{"k":1}"#)),
    ] {
        let f = db.get_file_by_id(id).await.unwrap().unwrap();
        assert_eq!(f.metadata.as_deref(), meta, "{id}");
    }
    let f = db.get_file_by_id("f-ucloud").await.unwrap().unwrap();
    assert_eq!(
        (f.metadata, f.dialect_state.as_deref()),
        (
            None,
            Some(r#"{"ucloud":{"modifiedAt":5,"path":"/alice/u"}}"#)
        ),
        "UCloud's identity of the file stays with it"
    );
}
