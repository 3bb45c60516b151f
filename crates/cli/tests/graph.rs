//! The Microsoft Graph dialect through a real server. (The official
//! `msgraph-sdk` is exercised by tests/clients/python/test_graph.py.)

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Creates an upload session; returns its `uploadUrl`.
async fn session(s: &Server, token: &str, path: &str, body: Value) -> String {
    let r = http()
        .post(s.url_of(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["nextExpectedRanges"], json!(["0-"]));
    assert!(v["expirationDateTime"].as_str().unwrap().ends_with('Z'));
    v["uploadUrl"].as_str().unwrap().to_owned()
}

/// One fragment, with no Authorization header (the URL carries its own).
async fn fragment(url: &str, first: u64, total: u64, data: &[u8]) -> (StatusCode, Value) {
    let last = first + data.len() as u64 - 1;
    let r = http()
        .put(url)
        .header("Content-Range", format!("bytes {first}-{last}/{total}"))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    decode(r).await
}

async fn on_url(method: Method, url: &str) -> (StatusCode, Value) {
    decode(http().request(method, url).send().await.unwrap()).await
}

fn graph_error(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(!v["error"]["message"].as_str().unwrap().is_empty(), "{v}");
}

#[tokio::test]
async fn graph_fragments_resume_from_next_expected_ranges_and_land_as_a_drive_item() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(3 * 327_680 + 1000, 5);
    let total = data.len() as u64;
    let url = session(
        &s,
        &alice,
        "/v1.0/me/drive/root:/docs/big.bin:/createUploadSession",
        json!({"item": {"fileSize": total}}),
    )
    .await;
    let (st, v) = fragment(&url, 0, total, &data[..327_680]).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let last = total - 1;
    assert_eq!(v["nextExpectedRanges"], json!([format!("327680-{last}")]));
    // A gap: the status lists both missing ranges.
    let (st, _) = fragment(&url, 655_360, total, &data[655_360..983_040]).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (st, v) = on_url(Method::GET, &url).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        v["nextExpectedRanges"],
        json!(["327680-655359", format!("983040-{last}")])
    );
    // Bytes already received are refused, not rewritten.
    let (st, v) = fragment(&url, 0, total, &data[..10]).await;
    assert_eq!(st, StatusCode::RANGE_NOT_SATISFIABLE);
    graph_error(&v, "invalidRange");
    let (st, _) = fragment(&url, 327_680, total, &data[327_680..655_360]).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (st, item) = fragment(&url, 983_040, total, &data[983_040..]).await;
    assert_eq!(st, StatusCode::CREATED, "{item}");
    assert_eq!(item["name"], "big.bin");
    assert_eq!(item["size"], total);
    assert_eq!(item["parentReference"]["path"], "/drive/root:/docs");
    assert_eq!(
        item["file"]["hashes"]["sha256Hash"],
        sha256_hex(&data).to_uppercase()
    );
    let (_, got) = download(&s, &alice, "alice", "docs/big.bin").await;
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
}

#[tokio::test]
async fn graph_accepts_the_sdk_item_id_form_and_defers_the_commit() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let url = session(
        &s,
        &alice,
        "/v1.0/drives/alice/items/root%3A%2Fdeferred.txt%3A/createUploadSession",
        json!({"deferCommit": true}),
    )
    .await;
    let (st, v) = fragment(&url, 0, 5, b"hello").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(
        download(&s, &alice, "alice", "deferred.txt").await.0,
        StatusCode::NOT_FOUND
    );
    let (st, item) = on_url(Method::POST, &url).await;
    assert_eq!(st, StatusCode::CREATED, "{item}");
    assert_eq!(
        download(&s, &alice, "alice", "deferred.txt").await.1,
        b"hello"
    );
}

#[tokio::test]
async fn graph_conflict_behaviours_fail_replace_and_rename() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let path = "/v1.0/me/drive/root:/same.txt:/createUploadSession";
    let first = session(&s, &alice, path, json!({})).await;
    assert_eq!(fragment(&first, 0, 2, b"v1").await.0, StatusCode::CREATED);
    let fail = session(&s, &alice, path, json!({})).await;
    let (st, v) = fragment(&fail, 0, 2, b"v2").await;
    assert_eq!(st, StatusCode::CONFLICT);
    graph_error(&v, "nameAlreadyExists");
    assert_eq!(download(&s, &alice, "alice", "same.txt").await.1, b"v1");
    let rename = session(
        &s,
        &alice,
        path,
        json!({"item": {"@microsoft.graph.conflictBehavior": "rename"}}),
    )
    .await;
    let (st, item) = fragment(&rename, 0, 2, b"v3").await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(item["name"], "same (1).txt");
    let replace = session(
        &s,
        &alice,
        path,
        json!({"item": {"@microsoft.graph.conflictBehavior": "replace"}}),
    )
    .await;
    assert_eq!(fragment(&replace, 0, 2, b"v4").await.0, StatusCode::CREATED);
    assert_eq!(download(&s, &alice, "alice", "same.txt").await.1, b"v4");
}

#[tokio::test]
async fn graph_cancel_and_errors_in_graph_format() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let url = session(
        &s,
        &alice,
        "/v1.0/me/drive/root:/c.bin:/createUploadSession",
        json!({}),
    )
    .await;
    // A bad Content-Range.
    let r = http()
        .put(&url)
        .header("Content-Range", "bytes x-y/z")
        .body("q")
        .send()
        .await
        .unwrap();
    let (st, v) = decode(r).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    graph_error(&v, "invalidRequest");
    // A forged signature names no session; nor does another user's token.
    let forged = format!("{}00", url);
    let (st, v) = fragment(&forged, 0, 1, b"x").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    graph_error(&v, "itemNotFound");
    let bare = url.split('?').next().unwrap();
    let r = http().get(bare).bearer_auth(&bob).send().await.unwrap();
    let (st, v) = decode(r).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    graph_error(&v, "itemNotFound");
    // A wrong token on creation.
    let r = http()
        .post(s.url_of("/v1.0/me/drive/root:/x:/createUploadSession"))
        .bearer_auth("fy_0000000000000000_00")
        .send()
        .await
        .unwrap();
    let (st, v) = decode(r).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    graph_error(&v, "unauthenticated");
    // Oversize.
    let (st, v) = fragment(&url, 0, 1 << 50, b"x").await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"]["code"].is_string());
    // Cancel: the session is gone.
    assert_eq!(on_url(Method::DELETE, &url).await.0, StatusCode::NO_CONTENT);
    let (st, v) = on_url(Method::GET, &url).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    graph_error(&v, "itemNotFound");
}

#[tokio::test]
async fn graph_items_by_id_take_new_content_and_children_and_report_sha1() {
    use sha1::Digest as _;
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let url = session(
        &s,
        &alice,
        "/v1.0/me/drive/root:/dir/a.txt:/createUploadSession",
        json!({}),
    )
    .await;
    let (st, item) = fragment(&url, 0, 5, b"first").await;
    assert_eq!(st, StatusCode::CREATED, "{item}");
    let id = item["id"].as_str().unwrap().to_owned();
    let parent = item["parentReference"]["id"].as_str().unwrap().to_owned();

    // New content for the item by id: same id, the new bytes and hashes.
    let url = session(
        &s,
        &alice,
        &format!("/v1.0/drives/alice/items/{id}/createUploadSession"),
        json!({}),
    )
    .await;
    let (st, v) = fragment(&url, 0, 10, b"second").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let (st, item) = fragment(&url, 6, 10, b" try").await;
    assert_eq!(st, StatusCode::CREATED, "{item}");
    assert_eq!(item["id"], id.as_str());
    assert_eq!(
        item["file"]["hashes"]["sha1Hash"],
        hex::encode(sha1::Sha1::digest(b"second try")).to_uppercase()
    );
    assert_eq!(
        download(&s, &alice, "alice", "dir/a.txt").await.1,
        b"second try"
    );

    // A new file in the parent folder by its id.
    let url = session(
        &s,
        &alice,
        &format!("/v1.0/me/drive/items/{parent}:/b.txt:/createUploadSession"),
        json!({}),
    )
    .await;
    let (st, _) = fragment(&url, 0, 2, b"bb").await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(download(&s, &alice, "alice", "dir/b.txt").await.1, b"bb");

    // Another user's item id is not found.
    let bob = user(&s, "bob").await;
    let r = http()
        .post(s.url_of(&format!("/v1.0/me/drive/items/{id}/createUploadSession")))
        .bearer_auth(&bob)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (st, v) = decode(r).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    graph_error(&v, "itemNotFound");
}

#[tokio::test]
async fn graph_expired_session_is_item_not_found() {
    let s = Server::start_with(&[("FERRY_DEFAULT_EXPIRY", "1"), ("FERRY_MAX_EXPIRY", "1")]);
    let alice = user(&s, "alice").await;
    let url = session(
        &s,
        &alice,
        "/v1.0/me/drive/root:/late.bin:/createUploadSession",
        json!({"item": {"fileSize": 4}}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (st, v) = fragment(&url, 0, 4, b"late").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    graph_error(&v, "itemNotFound");
    let (st, v) = on_url(Method::GET, &url).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    graph_error(&v, "itemNotFound");
}

#[tokio::test]
async fn graph_fragments_extend_the_session() {
    // Sessions live 10 s here; a fragment moves the expiry once it would
    // move by a tenth of that.
    let s = Server::start_with(&[("FERRY_DEFAULT_EXPIRY", "10")]);
    let alice = user(&s, "alice").await;
    let url = session(
        &s,
        &alice,
        "/v1.0/me/drive/root:/slow.bin:/createUploadSession",
        json!({"item": {"fileSize": 8}}),
    )
    .await;
    let (_, before) = on_url(Method::GET, &url).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (st, v) = fragment(&url, 0, 8, b"slow").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let (_, after) = on_url(Method::GET, &url).await;
    let (b, a) = (
        before["expirationDateTime"].as_str().unwrap(),
        after["expirationDateTime"].as_str().unwrap(),
    );
    assert!(a > b, "the expiry moved: {b} -> {a}");
    assert_eq!(v["expirationDateTime"], after["expirationDateTime"]);
}

/// msgraph-core's `LargeFileUploadTask.upload()` sends its last range
/// again after the 201: the same range with the same bytes answers the
/// same 201 and driveItem; other bytes are refused.
#[tokio::test]
async fn graph_last_range_sent_again_after_the_201_answers_the_same_201() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(2 * 327_680 + 77, 11);
    let total = data.len() as u64;
    let url = session(
        &s,
        &alice,
        "/v1.0/me/drive/root:/again.bin:/createUploadSession",
        json!({"item": {"fileSize": total}}),
    )
    .await;
    let (st, _) = fragment(&url, 0, total, &data[..327_680]).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (st, first) = fragment(&url, 327_680, total, &data[327_680..]).await;
    assert_eq!(st, StatusCode::CREATED, "{first}");
    let (st, again) = fragment(&url, 327_680, total, &data[327_680..]).await;
    assert_eq!(st, StatusCode::CREATED, "{again}");
    assert_eq!(again, first);
    // The whole file again (its SHA-256 is checked) also answers the 201.
    let (st, whole) = fragment(&url, 0, total, &data).await;
    assert_eq!(st, StatusCode::CREATED, "{whole}");
    assert_eq!(whole["id"], first["id"]);
    // Different bytes of the whole file are not the completing request.
    let mut other = data.clone();
    other[5] ^= 1;
    let (st, v) = fragment(&url, 0, total, &other).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    // Status of the committed upload: its driveItem (200 with an id).
    let (st, v) = on_url(Method::GET, &url).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["id"], first["id"]);
    assert_eq!(download(&s, &alice, "alice", "again.bin").await.1, data);
}

/// An upload that holds every byte but whose commit did not happen is not
/// stranded: `GET uploadUrl` (the SDK's resume) commits it. Honest setup:
/// the last fragment's commit fails for a real reason (conflictBehavior
/// `fail` and a file appeared at the path after the session was created),
/// then the file goes away, as a killed server between last byte and
/// commit would leave it: all bytes held, not committed.
#[tokio::test]
async fn graph_get_upload_url_commits_an_upload_that_holds_every_byte() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let path = "/v1.0/me/drive/root:/held.txt:/createUploadSession";
    let url = session(&s, &alice, path, json!({})).await;
    let other = session(&s, &alice, path, json!({})).await;
    assert_eq!(fragment(&other, 0, 2, b"v1").await.0, StatusCode::CREATED);
    let (st, v) = fragment(&url, 0, 5, b"hello").await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    graph_error(&v, "nameAlreadyExists");
    // Every byte is held: the status says none is missing.
    let (st, v) = on_url(Method::GET, &url).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (code, _) = call(
        &s,
        Method::DELETE,
        "/v1/spaces/alice/files/held.txt",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    let (st, item) = on_url(Method::GET, &url).await;
    assert_eq!(st, StatusCode::OK, "{item}");
    assert_eq!(item["name"], "held.txt");
    assert_eq!(item["size"], 5);
    assert_eq!(download(&s, &alice, "alice", "held.txt").await.1, b"hello");
    // The SDK's resend of its last range after that answers the same file.
    let (st, again) = fragment(&url, 0, 5, b"hello").await;
    assert_eq!(st, StatusCode::CREATED, "{again}");
    assert_eq!(again["id"], item["id"]);
}

/// After a restart, the status reports every byte the upload holds, and
/// the fragments that remain complete it.
#[tokio::test]
async fn graph_status_after_a_restart_reports_every_byte_held() {
    let mut s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(3 * 327_680, 12);
    let total = data.len() as u64;
    let url = session(
        &s,
        &alice,
        "/v1.0/me/drive/root:/restart.bin:/createUploadSession",
        json!({"item": {"fileSize": total}}),
    )
    .await;
    assert_eq!(
        fragment(&url, 0, total, &data[..327_680]).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        fragment(&url, 655_360, total, &data[655_360..]).await.0,
        StatusCode::ACCEPTED
    );
    s.restart();
    let url = url.replace(&url[..url.find("/v1.0").unwrap()], &s.url_of(""));
    let (st, v) = on_url(Method::GET, &url).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["nextExpectedRanges"], json!(["327680-655359"]));
    let (st, item) = fragment(&url, 327_680, total, &data[327_680..655_360]).await;
    assert_eq!(st, StatusCode::CREATED, "{item}");
    assert_eq!(download(&s, &alice, "alice", "restart.bin").await.1, data);
}
