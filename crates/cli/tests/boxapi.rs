//! The Box dialect through a real server. (The official `box-sdk-gen` is
//! exercised by tests/clients/python/test_box.py.)

mod common;

use base64::Engine as _;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

const MIB: usize = 1 << 20;

fn sha(data: &[u8]) -> String {
    format!(
        "sha={}",
        base64::engine::general_purpose::STANDARD.encode(Sha1::digest(data))
    )
}

/// Creates a session for `name` in folder `0`; returns the session JSON.
async fn session(s: &Server, token: &str, name: &str, size: usize) -> Value {
    let (st, v) = call(
        s,
        Method::POST,
        "/api/2.0/files/upload_sessions",
        Some(token),
        Some(json!({"folder_id": "0", "file_name": name, "file_size": size})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

/// Uploads bytes `lo..hi` of `data` to a session.
async fn send_part(
    s: &Server,
    token: &str,
    id: &str,
    data: &[u8],
    lo: usize,
    hi: usize,
    digest: &str,
) -> (StatusCode, Value) {
    let range = format!("bytes {lo}-{}/{}", hi - 1, data.len());
    put(
        s,
        &format!("/api/2.0/files/upload_sessions/{id}"),
        Some(token),
        &[("content-range", &range), ("digest", digest)],
        data[lo..hi].to_vec(),
    )
    .await
}

async fn commit(
    s: &Server,
    token: &str,
    id: &str,
    parts: &Value,
    digest: &str,
) -> (StatusCode, Value) {
    let r = http()
        .post(s.url_of(&format!("/api/2.0/files/upload_sessions/{id}/commit")))
        .bearer_auth(token)
        .header("digest", digest)
        .json(&json!({"parts": parts}))
        .send()
        .await
        .unwrap();
    decode(r).await
}

fn box_error(v: &Value, status: u16, code: &str) {
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["status"], status, "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert!(!v["message"].as_str().unwrap().is_empty(), "{v}");
}

#[tokio::test]
async fn box_parts_in_parallel_commit_with_the_whole_file_sha1() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(2 * 8 * MIB + 12_345, 11);
    let v = session(&s, &alice, "big.bin", data.len()).await;
    assert_eq!(v["type"], "upload_session");
    assert_eq!(v["part_size"], 8 * MIB);
    assert_eq!(v["total_parts"], 3);
    assert_eq!(v["num_parts_processed"], 0);
    let id = v["id"].as_str().unwrap();
    let upload_url = v["session_endpoints"]["upload_part"].as_str().unwrap();
    assert!(
        upload_url.starts_with("http://127.0.0.1:"),
        "absolute: {upload_url}"
    );

    let bounds = [(0, 8 * MIB), (8 * MIB, 16 * MIB), (16 * MIB, data.len())];
    let sent = futures_join(&s, &alice, id, &data, &bounds).await;
    let mut parts = Vec::new();
    for ((st, p), (lo, hi)) in sent.into_iter().zip(bounds) {
        assert_eq!(st, StatusCode::OK, "{p}");
        let p = &p["part"];
        assert_eq!(p["offset"], lo);
        assert_eq!(p["size"], hi - lo);
        assert_eq!(p["sha1"], hex::encode(Sha1::digest(&data[lo..hi])));
        parts.push(p.clone());
    }
    let (st, listed) = call(
        &s,
        Method::GET,
        &format!("/2.0/files/upload_sessions/{id}/parts?offset=1&limit=1"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{listed}");
    assert_eq!(listed["total_count"], 3);
    assert_eq!(listed["entries"], json!([parts[1]]));

    let mut wrong = Sha1::digest(&data).to_vec();
    wrong[0] ^= 1;
    let wrong = format!(
        "sha={}",
        base64::engine::general_purpose::STANDARD.encode(wrong)
    );
    let (st, v) = commit(&s, &alice, id, &json!(parts), &wrong).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    box_error(&v, 400, "bad_digest");

    let (st, v) = commit(&s, &alice, id, &json!(parts), &sha(&data)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let file = &v["entries"][0];
    assert_eq!(file["type"], "file");
    assert_eq!(file["name"], "big.bin");
    assert_eq!(file["size"], data.len());
    assert_eq!(file["sha1"], hex::encode(Sha1::digest(&data)));
    assert_eq!(file["parent"]["id"], "0");
    let (st, bytes) = download(&s, &alice, "alice", "big.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert!(bytes == data, "the stored bytes differ");

    // The file by id, and a second commit answers the same file.
    let fid = file["id"].as_str().unwrap();
    let (st, info) = call(
        &s,
        Method::GET,
        &format!("/2.0/files/{fid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!((st, &info["size"]), (StatusCode::OK, &json!(data.len())));
    let (st, _) = commit(&s, &alice, id, &json!(parts), &sha(&data)).await;
    assert_eq!(st, StatusCode::CREATED);
}

async fn futures_join(
    s: &Server,
    token: &str,
    id: &str,
    data: &[u8],
    bounds: &[(usize, usize)],
) -> Vec<(StatusCode, Value)> {
    let mut tasks = Vec::new();
    for &(lo, hi) in bounds {
        let (url, token, id) = (s.url.clone(), token.to_owned(), id.to_owned());
        let chunk = data[lo..hi].to_vec();
        let (total, digest) = (data.len(), sha(&data[lo..hi]));
        tasks.push(tokio::spawn(async move {
            let r = http()
                .put(format!("{url}/api/2.0/files/upload_sessions/{id}"))
                .bearer_auth(token)
                .header("content-range", format!("bytes {lo}-{}/{total}", hi - 1))
                .header("digest", digest)
                .body(chunk)
                .send()
                .await
                .unwrap();
            decode(r).await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn box_refuses_bad_digests_overlaps_and_misaligned_ranges_keeping_the_session() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let data = random_bytes(8 * MIB + 100, 12);
    let v = session(&s, &alice, "p.bin", data.len()).await;
    let id = v["id"].as_str().unwrap();

    let (st, v) = send_part(&s, &alice, id, &data, 0, 8 * MIB, &sha(b"other")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    box_error(&v, 400, "bad_digest");
    let (st, v) = send_part(&s, &alice, id, &data, 0, 8 * MIB, "md5=abc").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    box_error(&v, 400, "bad_digest");
    let (st, v) = send_part(
        &s,
        &alice,
        id,
        &data,
        1,
        8 * MIB + 1,
        &sha(&data[1..8 * MIB + 1]),
    )
    .await;
    assert_eq!(st, StatusCode::RANGE_NOT_SATISFIABLE);
    box_error(&v, 416, "requested_range_not_satisfiable");

    let (st, _) = send_part(&s, &alice, id, &data, 0, 8 * MIB, &sha(&data[..8 * MIB])).await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = send_part(&s, &alice, id, &data, 0, 8 * MIB, &sha(&data[..8 * MIB])).await;
    assert_eq!(st, StatusCode::CONFLICT);
    box_error(&v, 409, "range_overlaps_existing_part");

    // Another user's session id is not found; a bad token is 401.
    let (st, v) = call(
        &s,
        Method::GET,
        &format!("/2.0/files/upload_sessions/{id}"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    box_error(&v, 404, "not_found");
    let (st, v) = call(
        &s,
        Method::GET,
        &format!("/2.0/files/upload_sessions/{id}"),
        Some("fy_nope_nope"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    box_error(&v, 401, "unauthorized");

    let (st, v) = call(
        &s,
        Method::GET,
        &format!("/2.0/files/upload_sessions/{id}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["num_parts_processed"], 1, "only the good part was kept");

    // Abort: 204, then the session is gone.
    let (st, _) = call(
        &s,
        Method::DELETE,
        &format!("/2.0/files/upload_sessions/{id}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = call(
        &s,
        Method::GET,
        &format!("/2.0/files/upload_sessions/{id}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    box_error(&v, 404, "not_found");
}

#[tokio::test]
async fn box_name_clash_is_409_and_new_versions_replace_by_file_id() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let one = random_bytes(1000, 1);
    let v = session(&s, &alice, "v.txt", one.len()).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let (_, p) = send_part(&s, &alice, &id, &one, 0, one.len(), &sha(&one)).await;
    let (st, f) = commit(&s, &alice, &id, &json!([p["part"]]), &sha(&one)).await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    let fid = f["entries"][0]["id"].as_str().unwrap().to_owned();

    // A new session for the same name: 409 with the file in context_info.
    let (st, v) = call(
        &s,
        Method::POST,
        "/api/2.0/files/upload_sessions",
        Some(&alice),
        Some(json!({"folder_id": "0", "file_name": "v.txt", "file_size": 5})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    box_error(&v, 409, "item_name_in_use");
    assert_eq!(v["context_info"]["conflicts"]["id"], fid.as_str());

    // New version by file id: same path, same id, new bytes.
    let two = random_bytes(1500, 7);
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/api/2.0/files/{fid}/upload_sessions"),
        Some(&alice),
        Some(json!({"file_size": two.len()})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let idv = v["id"].as_str().unwrap().to_owned();
    let (_, p) = send_part(&s, &alice, &idv, &two, 0, two.len(), &sha(&two)).await;
    let (st, f) = commit(&s, &alice, &idv, &json!([p["part"]]), &sha(&two)).await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    assert_eq!(
        f["entries"][0]["id"],
        fid.as_str(),
        "a new version keeps the file id"
    );
    assert_eq!(
        download(&s, &alice, "alice", "v.txt").await,
        (StatusCode::OK, two)
    );

    // New version by file id, under a new name.
    let two = random_bytes(2000, 2);
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/api/2.0/files/{fid}/upload_sessions"),
        Some(&alice),
        Some(json!({"file_size": two.len(), "file_name": "v2.txt"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id2 = v["id"].as_str().unwrap().to_owned();
    let (_, p) = send_part(&s, &alice, &id2, &two, 0, two.len(), &sha(&two)).await;
    let (st, f) = commit(&s, &alice, &id2, &json!([p["part"]]), &sha(&two)).await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    assert_eq!(f["entries"][0]["name"], "v2.txt");
    assert_eq!(
        f["entries"][0]["id"],
        fid.as_str(),
        "a renamed version keeps the file id"
    );
    assert_eq!(
        download(&s, &alice, "alice", "v2.txt").await,
        (StatusCode::OK, two)
    );
    assert_eq!(
        download(&s, &alice, "alice", "v.txt").await.0,
        StatusCode::NOT_FOUND
    );

    // A clash that appears during the session: 409 at commit, session kept.
    let three = random_bytes(10, 3);
    let v = session(&s, &alice, "late.txt", three.len()).await;
    let id3 = v["id"].as_str().unwrap().to_owned();
    let (_, p) = send_part(&s, &alice, &id3, &three, 0, three.len(), &sha(&three)).await;
    let other = session(&s, &alice, "late.txt", 1).await;
    let oid = other["id"].as_str().unwrap();
    let (_, op) = send_part(&s, &alice, oid, b"x", 0, 1, &sha(b"x")).await;
    let (st, _) = commit(&s, &alice, oid, &json!([op["part"]]), &sha(b"x")).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, v) = commit(&s, &alice, &id3, &json!([p["part"]]), &sha(&three)).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    box_error(&v, 409, "item_name_in_use");
    let (st, _) = call(
        &s,
        Method::GET,
        &format!("/2.0/files/upload_sessions/{id3}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "the session survives the clash");
}

#[tokio::test]
async fn box_folders_are_ids_for_paths_and_uploads_land_in_them() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let (st, f) = call(
        &s,
        Method::POST,
        "/2.0/folders",
        Some(&alice),
        Some(json!({"name": "docs", "parent": {"id": "0"}})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    let folder = f["id"].as_str().unwrap().to_owned();
    let data = b"hello box".to_vec();
    let (st, v) = call(
        &s,
        Method::POST,
        "/api/2.0/files/upload_sessions",
        Some(&alice),
        Some(json!({"folder_id": folder, "file_name": "h.txt", "file_size": data.len()})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap();
    let (_, p) = send_part(&s, &alice, id, &data, 0, data.len(), &sha(&data)).await;
    let (st, v) = commit(&s, &alice, id, &json!([p["part"]]), &sha(&data)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["entries"][0]["parent"]["id"], folder.as_str());
    assert_eq!(
        download(&s, &alice, "alice", "docs/h.txt").await,
        (StatusCode::OK, data)
    );
    let (st, items) = call(
        &s,
        Method::GET,
        &format!("/2.0/folders/{folder}/items"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{items}");
    assert_eq!(items["entries"][0]["name"], "h.txt");
    let (st, root) = call(&s, Method::GET, "/2.0/folders/0/items", Some(&alice), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(root["entries"][0]["id"], folder.as_str());
    let (st, v) = call(
        &s,
        Method::POST,
        "/2.0/folders",
        Some(&alice),
        Some(json!({"name": "docs", "parent": {"id": "0"}})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    box_error(&v, 409, "item_name_in_use");
    // Bob cannot see into alice's folder by its id.
    let bob = user(&s, "bob").await;
    let (st, v) = call(
        &s,
        Method::GET,
        &format!("/2.0/folders/{folder}"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    box_error(&v, 404, "not_found");
}

#[tokio::test]
async fn box_commit_that_outlasts_the_wait_answers_202_retry_after_then_201() {
    let s = Server::start_with(&[("FERRY_BOX_COMMIT_WAIT", "0")]);
    let alice = user(&s, "alice").await;
    let data = random_bytes(8 * MIB + 1, 4);
    let v = session(&s, &alice, "slow.bin", data.len()).await;
    let id = v["id"].as_str().unwrap();
    let bounds = [(0, 8 * MIB), (8 * MIB, data.len())];
    let parts: Vec<Value> = futures_join(&s, &alice, id, &data, &bounds)
        .await
        .into_iter()
        .map(|(_, p)| p["part"].clone())
        .collect();
    let r = http()
        .post(s.url_of(&format!("/api/2.0/files/upload_sessions/{id}/commit")))
        .bearer_auth(&alice)
        .header("digest", sha(&data))
        .json(&json!({"parts": parts}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["retry-after"], "1");
    let mut last = StatusCode::ACCEPTED;
    for _ in 0..50 {
        let (st, v) = commit(&s, &alice, id, &json!(parts), &sha(&data)).await;
        last = st;
        if st == StatusCode::CREATED {
            assert_eq!(v["entries"][0]["size"], data.len());
            break;
        }
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last, StatusCode::CREATED);
}

/// The names in folder `0`.
async fn root_names(s: &Server, token: &str) -> Vec<String> {
    let (st, v) = call(s, Method::GET, "/2.0/folders/0/items", Some(token), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn box_version_under_a_new_name_moves_the_file_in_the_commit_itself() {
    // The commit answers 202 and finishes on its own: nothing after it in
    // the request may be needed to remove the old name.
    let s = Server::start_with(&[("FERRY_BOX_COMMIT_WAIT", "0")]);
    let alice = user(&s, "alice").await;
    let one = random_bytes(1000, 1);
    let v = session(&s, &alice, "old.txt", one.len()).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let (_, p) = send_part(&s, &alice, &id, &one, 0, one.len(), &sha(&one)).await;
    let mut fid = None;
    for _ in 0..100 {
        let (st, f) = commit(&s, &alice, &id, &json!([p["part"]]), &sha(&one)).await;
        if st == StatusCode::CREATED {
            fid = Some(f["entries"][0]["id"].as_str().unwrap().to_owned());
            break;
        }
        assert_eq!(st, StatusCode::ACCEPTED, "{f}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let fid = fid.expect("the first version commits");

    let two = random_bytes(3000, 2);
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/api/2.0/files/{fid}/upload_sessions"),
        Some(&alice),
        Some(json!({"file_size": two.len(), "file_name": "new.txt"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let idv = v["id"].as_str().unwrap().to_owned();
    let (_, p) = send_part(&s, &alice, &idv, &two, 0, two.len(), &sha(&two)).await;
    let r = http()
        .post(s.url_of(&format!("/api/2.0/files/upload_sessions/{idv}/commit")))
        .bearer_auth(&alice)
        .header("digest", sha(&two))
        .json(&json!({"parts": [p["part"]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Never both names, never neither: the old one until the move, then
    // only the new one — without the client coming back for the commit.
    let mut names = Vec::new();
    for _ in 0..200 {
        names = root_names(&s, &alice).await;
        assert_eq!(names.len(), 1, "{names:?}");
        if names == ["new.txt"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(names, ["new.txt"]);
    let (st, f) = call(
        &s,
        Method::GET,
        &format!("/2.0/files/{fid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{f}");
    assert_eq!(f["name"], "new.txt", "the file keeps its id: {f}");
    assert_eq!(
        download(&s, &alice, "alice", "new.txt").await,
        (StatusCode::OK, two)
    );
    assert_eq!(
        download(&s, &alice, "alice", "old.txt").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn box_expired_session_is_not_found() {
    let s = Server::start_with(&[("FERRY_MAX_EXPIRY", "1")]);
    let alice = user(&s, "alice").await;
    let v = session(&s, &alice, "e.bin", 10).await;
    let id = v["id"].as_str().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let data = random_bytes(10, 5);
    let (st, v) = send_part(&s, &alice, id, &data, 0, 10, &sha(&data)).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    box_error(&v, 404, "not_found");
}

/// A part sent again after the commit (a client that missed the part's
/// answer) answers the same part, not 404.
#[tokio::test]
async fn box_part_sent_again_after_the_commit_answers_the_same_part() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(1000, 31);
    let v = session(&s, &alice, "again.bin", data.len()).await;
    let id = v["id"].as_str().unwrap();
    let (st, first) = send_part(&s, &alice, id, &data, 0, data.len(), &sha(&data)).await;
    assert_eq!(st, StatusCode::OK, "{first}");
    let (st, v) = commit(&s, &alice, id, &json!([first["part"]]), &sha(&data)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, again) = send_part(&s, &alice, id, &data, 0, data.len(), &sha(&data)).await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(again["part"], first["part"]);
    // Other bytes are not that part.
    let mut other = data.clone();
    other[0] ^= 1;
    let (st, v) = send_part(&s, &alice, id, &other, 0, data.len(), &sha(&other)).await;
    assert_ne!(st, StatusCode::OK, "{v}");
}

/// Authorization before existence: a read-only member can neither create
/// a folder (it was answered 201) nor learn that a name is taken (409)
/// before hearing 403.
#[tokio::test]
async fn box_read_only_member_gets_403_before_any_existence_answer() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let (st, v) = call(
        &s,
        Method::POST,
        "/v1/admin/spaces",
        Some(ADMIN),
        Some(json!({"name": "team", "members": {"alice": "write", "bob": "read"}})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let v = create_session(
        &s,
        &alice,
        json!({"space": "team", "path": "x.txt", "size": 1, "auto_commit": true}),
    )
    .await;
    let up = v["uploads"][0]["id"].as_str().unwrap();
    assert_eq!(part(&s, &alice, up, 1, b"x").await.0, StatusCode::OK);
    let root = format!("d{}", hex::encode("team/"));

    for name in ["new-dir", "x.txt"] {
        let (st, v) = call(
            &s,
            Method::POST,
            "/2.0/folders",
            Some(&bob),
            Some(json!({"name": name, "parent": {"id": root}})),
        )
        .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{name}: {v}");
        box_error(&v, 403, "access_denied_insufficient_permissions");
    }
    let (st, v) = call(
        &s,
        Method::POST,
        "/api/2.0/files/upload_sessions",
        Some(&bob),
        Some(json!({"folder_id": root, "file_name": "x.txt", "file_size": 1})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    // The writer still hears that the name is taken, with the file.
    let (st, v) = call(
        &s,
        Method::POST,
        "/api/2.0/files/upload_sessions",
        Some(&alice),
        Some(json!({"folder_id": root, "file_name": "x.txt", "file_size": 1})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    box_error(&v, 409, "item_name_in_use");
    assert_eq!(v["context_info"]["conflicts"]["name"], "x.txt", "{v}");
}
