//! The deepset dialect through a real server: upload sessions under
//! `/api/v1/workspaces/{workspace}/upload_sessions…` and the POST form their
//! `aws_prefixed_request_config` points at. (The official
//! `deepset-cloud-sdk` is exercised by tests/clients/python/test_deepset.py.)

mod common;

use base64::Engine as _;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn sessions(ws: &str) -> String {
    format!("/api/v1/workspaces/{ws}/upload_sessions")
}

async fn create(s: &Server, token: &str, ws: &str, body: Value) -> Value {
    let (st, v) = call(s, Method::POST, &sessions(ws), Some(token), Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

async fn post(session: &Value, filename: &str, data: &[u8]) {
    let (st, body) = post_form(session, &[], filename, data).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{filename}: {body}");
}

fn sid(session: &Value) -> &str {
    session["session_id"].as_str().unwrap()
}

async fn close(s: &Server, token: &str, ws: &str, session: &Value) -> (StatusCode, Value) {
    let path = format!("{}/{}", sessions(ws), sid(session));
    call(
        s,
        Method::PUT,
        &path,
        Some(token),
        Some(json!({"status": "CLOSED"})),
    )
    .await
}

async fn status(s: &Server, token: &str, ws: &str, session: &Value) -> Value {
    let path = format!("{}/{}", sessions(ws), sid(session));
    let (st, v) = call(s, Method::GET, &path, Some(token), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

/// A file's bytes through the native API.
async fn native(s: &Server, token: &str, ws: &str, name: &str) -> (Vec<u8>, ()) {
    let (st, bytes) = download(s, token, ws, name).await;
    assert_eq!(st, StatusCode::OK, "{name}");
    (bytes, ())
}

/// The metadata of the file `name` committed by a deepset session, as the
/// native API shows the same session (`/v1/sessions/{id}`).
async fn metadata_of(s: &Server, token: &str, session: &Value, name: &str) -> Value {
    let hex = sid(session).replace('-', "");
    let (st, v) = call(
        s,
        Method::GET,
        &format!("/v1/sessions/{hex}"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["uploads"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["file"].as_object())
        .find(|f| f["path"] == name)
        .map(|f| f.get("metadata").cloned().unwrap_or(Value::Null))
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn posted_files_and_meta_companions_land_flat_and_together_on_close() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let ses = create(&s, &alice, "alice", json!({})).await;
    assert_eq!(sid(&ses).len(), 36, "a UUID: {ses}");
    let fields = &ses["aws_prefixed_request_config"]["fields"];
    assert!(fields["key"].as_str().unwrap().ends_with("/${filename}"));
    assert!(
        ses["aws_prefixed_request_config"]["url"]
            .as_str()
            .unwrap()
            .starts_with(&s.url)
    );

    // A companion before its file, one after; a name sent twice; a file
    // with no companion; a name that needs the filename's %-escapes undone.
    post(&ses, "a.txt.meta.json", br#"{"lang":"en"}"#).await;
    post(&ses, "a.txt", b"alpha").await;
    post(&ses, "b.txt", b"first body").await;
    post(&ses, "b.txt", b"bravo").await;
    post(&ses, "b.txt.meta.json", br#"{"n":2}"#).await;
    post(&ses, "c.txt", b"").await;
    post(&ses, "d%20e.txt", b"delta echo").await;
    let mid = status(&s, &alice, "alice", &ses).await;
    assert_eq!(
        mid["ingestion_status"],
        json!({"failed_files": 0, "finished_files": 0})
    );
    let (st, _) = download(&s, &alice, "alice", "a.txt").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "nothing is visible before close");

    let (st, v) = close(&s, &alice, "alice", &ses).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let done = status(&s, &alice, "alice", &ses).await;
    assert_eq!(
        done["ingestion_status"],
        json!({"failed_files": 0, "finished_files": 4})
    );
    for (name, data) in [
        ("a.txt", &b"alpha"[..]),
        ("b.txt", b"bravo"),
        ("c.txt", b""),
        ("d e.txt", b"delta echo"),
    ] {
        let (bytes, _) = native(&s, &alice, "alice", name).await;
        assert_eq!(bytes, data, "{name}");
    }
    assert_eq!(
        metadata_of(&s, &alice, &ses, "a.txt").await,
        json!({"lang": "en"})
    );
    assert_eq!(
        metadata_of(&s, &alice, &ses, "b.txt").await,
        json!({"n": 2})
    );
    let (st, _) = download(&s, &alice, "alice", "a.txt.meta.json").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "a companion is no file");

    // The session's files with their states; the session in the list.
    let path = format!("{}/{}/files?limit=2", sessions("alice"), sid(&ses));
    let (st, v) = call(&s, Method::GET, &path, Some(&alice), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["total"].as_u64(), v["has_more"].as_bool()),
        (Some(4), Some(true))
    );
    assert_eq!(v["data"][0]["name"], "a.txt");
    assert_eq!(v["data"][0]["ingestion_status"], "FINISHED");
    let (_, v) = call(&s, Method::GET, &sessions("alice"), Some(&alice), None).await;
    assert_eq!(v["total"], 1);
    assert_eq!(v["data"][0]["status"], "CLOSED");
    assert_eq!(v["data"][0]["write_mode"], "KEEP");
    assert_eq!(v["data"][0]["created_by"]["given_name"], "alice");

    // Closing twice, and sending to a closed session.
    let (st, v) = close(&s, &alice, "alice", &ses).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("already closed"),
        "{v}"
    );
    let (st, body) = post_form(&ses, &[], "late.txt", b"x").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
}

#[tokio::test]
async fn write_modes_keep_overwrite_fail_and_orphans_fail() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let first = create(&s, &alice, "alice", json!({})).await;
    for name in ["k.txt", "o.txt", "f.txt"] {
        post(&first, name, b"old").await;
    }
    assert_eq!(
        close(&s, &alice, "alice", &first).await.0,
        StatusCode::NO_CONTENT
    );

    for (mode, name) in [("KEEP", "k.txt"), ("OVERWRITE", "o.txt"), ("FAIL", "f.txt")] {
        let ses = create(&s, &alice, "alice", json!({"write_mode": mode})).await;
        post(&ses, name, b"new").await;
        post(&ses, &format!("fresh-{name}"), b"fresh").await;
        if mode == "FAIL" {
            // Metadata whose file never comes.
            post(&ses, "orphan.txt.meta.json", b"{}").await;
        }
        assert_eq!(
            close(&s, &alice, "alice", &ses).await.0,
            StatusCode::NO_CONTENT
        );
        let st = status(&s, &alice, "alice", &ses).await;
        let (finished, failed) = match mode {
            "FAIL" => (1, 2),
            _ => (2, 0),
        };
        assert_eq!(
            st["ingestion_status"],
            json!({"failed_files": failed, "finished_files": finished}),
            "{mode}"
        );
    }
    let content = |name: &'static str| {
        let (s, alice) = (&s, &alice);
        async move { native(s, alice, "alice", name).await.0 }
    };
    assert_eq!(content("k.txt").await, b"old");
    assert_eq!(content("k (1).txt").await, b"new", "KEEP keeps both");
    assert_eq!(content("o.txt").await, b"new", "OVERWRITE replaces");
    assert_eq!(
        content("f.txt").await,
        b"old",
        "FAIL keeps the existing file"
    );
    assert_eq!(
        content("fresh-f.txt").await,
        b"fresh",
        "and the others land"
    );
    let (st, _) = download(&s, &alice, "alice", "orphan.txt").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn temporary_files_expire_with_their_session() {
    let s = Server::start_with(&[("FERRY_REAP_INTERVAL", "1")]);
    let alice = user(&s, "alice").await;
    let ses = create(
        &s,
        &alice,
        "alice",
        json!({"write_mode": "TEMPORARY", "expires_in_seconds": 3}),
    )
    .await;
    post(&ses, "t.txt", b"temporary").await;
    assert_eq!(
        close(&s, &alice, "alice", &ses).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(native(&s, &alice, "alice", "t.txt").await.0, b"temporary");
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;
    let (st, _) = download(&s, &alice, "alice", "t.txt").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "gone with the session");
    let (_, v) = call(&s, Method::GET, &sessions("alice"), Some(&alice), None).await;
    assert_eq!(v["data"][0]["write_mode"], "TEMPORARY");
}

#[tokio::test]
async fn the_form_is_verified_field_by_field() {
    let s = Server::start_with(&[("FERRY_MAX_FILE_SIZE", "1000")]);
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let ses = create(&s, &alice, "alice", json!({})).await;
    let other = create(&s, &bob, "bob", json!({})).await;
    let fields = &ses["aws_prefixed_request_config"]["fields"];

    // A tampered policy: same signature, one condition changed.
    let policy = fields["policy"].as_str().unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(policy)
        .unwrap();
    let doc = String::from_utf8(raw)
        .unwrap()
        .replace(",1000]", ",999999]");
    let forged = base64::engine::general_purpose::STANDARD.encode(doc);
    assert_ne!(forged, policy);
    let (st, body) = post_form(&ses, &[("policy", forged.as_str())], "x.txt", b"x").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");

    // Another session's key under this policy, a changed date, an extra
    // field, a missing signature: each refused.
    let bob_key = other["aws_prefixed_request_config"]["fields"]["key"]
        .as_str()
        .unwrap();
    for over in [
        vec![("key", bob_key)],
        vec![("x-amz-date", "20000101T000000Z")],
        vec![("acl", "public-read")],
        vec![("x-amz-signature", "00")],
    ] {
        let (st, body) = post_form(&ses, &over, "x.txt", b"x").await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{over:?}: {body}");
        assert!(body.starts_with("<?xml"), "{body}");
    }
    // An x-ignore- field is allowed, as on S3.
    let (st, body) = post_form(&ses, &[("x-ignore-note", "hi")], "ok.txt", b"ok").await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");

    // Over the policy's content-length-range: refused while streaming.
    let (st, body) = post_form(&ses, &[], "big.txt", &[7u8; 1001]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("EntityTooLarge"), "{body}");
    // A workspace is flat.
    let (st, body) = post_form(&ses, &[], "dir/x.txt", b"x").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    // Not multipart at all.
    let resp = http()
        .post(ses["aws_prefixed_request_config"]["url"].as_str().unwrap())
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // The oversize body counts as failed; the rest is committed.
    assert_eq!(
        close(&s, &alice, "alice", &ses).await.0,
        StatusCode::NO_CONTENT
    );
    let st = status(&s, &alice, "alice", &ses).await;
    assert_eq!(
        st["ingestion_status"],
        json!({"failed_files": 1, "finished_files": 1})
    );
    assert_eq!(native(&s, &alice, "alice", "ok.txt").await.0, b"ok");
}

#[tokio::test]
async fn an_expired_form_and_an_expired_session() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let ses = create(&s, &alice, "alice", json!({"expires_in_seconds": 1})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let (st, body) = post_form(&ses, &[], "x.txt", b"x").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("Policy expired"), "{body}");
    let (st, v) = close(&s, &alice, "alice", &ses).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("expired"), "{v}");
    let (_, v) = call(
        &s,
        Method::GET,
        &format!("{}?is_expired=true", sessions("alice")),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(v["data"][0]["status"], "EXPIRED");
}

#[tokio::test]
async fn errors_in_deepset_shapes() {
    let s = Server::start_with(&[("FERRY_MAX_OPEN_SESSIONS", "2")]);
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;

    // 422: pydantic's detail list.
    let (st, v) = call(
        &s,
        Method::POST,
        &sessions("alice"),
        Some(&alice),
        Some(json!({"write_mode": "SOMETIMES", "expires_in_seconds": 86401})),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let detail = v["detail"].as_array().unwrap();
    assert_eq!(detail.len(), 2, "{v}");
    assert_eq!(detail[0]["loc"], json!(["body", "write_mode"]));
    assert_eq!(detail[0]["type"], "enum");
    assert!(detail[0]["msg"].as_str().unwrap().contains("'TEMPORARY'"));
    assert_eq!(detail[1]["type"], "less_than_equal");

    // Bad token, no token.
    let (st, v) = call(&s, Method::GET, &sessions("alice"), Some("fy_nope"), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["detail"].is_string(), "{v}");
    let (st, _) = call(&s, Method::POST, &sessions("alice"), None, Some(json!({}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // A workspace one may not write to.
    let (st, v) = call(
        &s,
        Method::POST,
        &sessions("bob"),
        Some(&alice),
        Some(json!({})),
    )
    .await;
    assert!(
        st == StatusCode::FORBIDDEN || st == StatusCode::NOT_FOUND,
        "{st} {v}"
    );

    // A foreign session is not found, in any workspace; a bad id is 422.
    let ses = create(&s, &alice, "alice", json!({})).await;
    for ws in ["alice", "bob"] {
        let path = format!("{}/{}", sessions(ws), sid(&ses));
        let (st, v) = call(&s, Method::GET, &path, Some(&bob), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
        let (st, _) = close(&s, &bob, ws, &ses).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
    let (st, v) = call(
        &s,
        Method::GET,
        &format!("{}/not-a-uuid", sessions("alice")),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["detail"][0]["type"], "uuid_parsing");
    let path = format!("{}/{}", sessions("alice"), sid(&ses));
    let (st, v) = call(
        &s,
        Method::PUT,
        &path,
        Some(&alice),
        Some(json!({"status": "OPEN"})),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (st, v) = call(
        &s,
        Method::GET,
        &format!("{}?limit=0", sessions("alice")),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    // 406 past the open sessions allowed, with the documented message;
    // closing one makes room.
    let _second = create(&s, &alice, "alice", json!({})).await;
    let (st, v) = call(
        &s,
        Method::POST,
        &sessions("alice"),
        Some(&alice),
        Some(json!({})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_ACCEPTABLE, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("maximum number of upload sessions"),
        "{v}"
    );
    assert_eq!(
        close(&s, &alice, "alice", &ses).await.0,
        StatusCode::NO_CONTENT
    );
    create(&s, &alice, "alice", json!({})).await;
    let (_, v) = call(
        &s,
        Method::GET,
        &format!("{}?limit=2&page_number=2", sessions("alice")),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(
        (v["total"].as_u64(), v["has_more"].as_bool()),
        (Some(3), Some(false)),
        "{v}"
    );
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_session_holds_at_most_its_limit_of_files() {
    let s = Server::start_with(&[("FERRY_MAX_UPLOADS_PER_SESSION", "2")]);
    let alice = user(&s, "alice").await;
    let ses = create(&s, &alice, "alice", json!({})).await;
    post(&ses, "1.txt", b"1").await;
    post(&ses, "2.txt", b"2").await;
    post(&ses, "2.txt", b"again").await;
    let (st, body) = post_form(&ses, &[], "3.txt", b"3").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("limit"), "{body}");
}

/// Listing the sessions of a workspace the caller may not write is 403,
/// not an empty list.
#[tokio::test]
async fn deepset_listing_a_workspace_one_may_not_write_is_403() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    create(&s, &bob, "bob", json!({})).await;
    let (st, v) = call(&s, Method::GET, &sessions("bob"), Some(&alice), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert!(v["detail"].is_string(), "{v}");
    let (st, v) = call(&s, Method::GET, &sessions("bob"), Some(&bob), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["total"], 1, "{v}");
}

/// Sends the form for `filename` announcing `data` but only its first
/// `sent` bytes, then drops the connection: a body that breaks off.
async fn post_broken_off(session: &Value, filename: &str, data: &[u8], sent: usize) {
    use tokio::io::AsyncWriteExt;
    let cfg = &session["aws_prefixed_request_config"];
    let boundary = "ferry-test-boundary-broken";
    let mut body = Vec::new();
    for (k, v) in cfg["fields"].as_object().unwrap() {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{}\r\n",
                v.as_str().unwrap()
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: text/plain\r\n\r\n"
        )
        .as_bytes(),
    );
    let head_len = body.len();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let url = reqwest::Url::parse(cfg["url"].as_str().unwrap()).unwrap();
    let mut conn = tokio::net::TcpStream::connect((
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap(),
    ))
    .await
    .unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        url.path(),
        url.host_str().unwrap(),
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body[..head_len + sent]).await.unwrap();
    conn.flush().await.unwrap();
    drop(conn);
}

/// Retries `op` while it answers 409: the server may still be settling
/// a body that broke off (the write is "in flight" until it has recorded
/// what arrived).
async fn until_settled<F, Fut, T>(mut op: F) -> (StatusCode, T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (StatusCode, T)>,
{
    for _ in 0..200 {
        let (st, v) = op().await;
        if st != StatusCode::CONFLICT {
            return (st, v);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("still 409 after 10 s");
}

#[tokio::test]
async fn a_name_posted_again_whose_body_fails_midway_leaves_the_earlier_upload_intact_and_closable()
{
    let s = Server::start_with(&[("FERRY_MAX_FILE_SIZE", "100000")]);
    let alice = user(&s, "alice").await;
    let ses = create(&s, &alice, "alice", json!({})).await;
    post(&ses, "a.txt.meta.json", br#"{"lang":"en"}"#).await;
    post(&ses, "a.txt", b"the first body").await;
    post(&ses, "b.txt", b"bravo").await;

    // Sent again, over the policy's size: refused while streaming.
    let (st, body) = post_form(&ses, &[], "a.txt", &[7u8; 100_001]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("EntityTooLarge"), "{body}");
    // Sent again, and the connection breaks off halfway.
    post_broken_off(&ses, "a.txt", &[8u8; 50_000], 20_000).await;
    post_broken_off(&ses, "b.txt", &[9u8; 50_000], 20_000).await;

    let path = format!("{}/{}/files", sessions("alice"), sid(&ses));
    let (st, v) = until_settled(|| close(&s, &alice, "alice", &ses)).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(
        native(&s, &alice, "alice", "a.txt").await.0,
        b"the first body"
    );
    assert_eq!(native(&s, &alice, "alice", "b.txt").await.0, b"bravo");
    assert_eq!(
        metadata_of(&s, &alice, &ses, "a.txt").await,
        json!({"lang": "en"})
    );
    let done = status(&s, &alice, "alice", &ses).await;
    assert_eq!(
        done["ingestion_status"],
        json!({"failed_files": 0, "finished_files": 2})
    );
    let (_, v) = call(&s, Method::GET, &path, Some(&alice), None).await;
    assert_eq!(v["total"], 2, "{v}");
    for f in v["data"].as_array().unwrap() {
        assert_eq!(f["ingestion_status"], "FINISHED", "{v}");
    }
}

#[tokio::test]
async fn a_name_posted_again_replaces_the_earlier_body_once_complete() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let ses = create(&s, &alice, "alice", json!({})).await;
    post(&ses, "a.txt", b"first").await;
    post_broken_off(&ses, "a.txt", &[8u8; 50_000], 20_000).await;
    let (st, body) = until_settled(|| post_form(&ses, &[], "a.txt", b"second")).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    // The broken-off request may reach the engine only now (the server
    // reads its form after the client has gone): while its body fails,
    // the path answers 409, as to any body in flight.
    let (st, body) = until_settled(|| post_form(&ses, &[], "a.txt", b"third")).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    let (st, v) = close(&s, &alice, "alice", &ses).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(native(&s, &alice, "alice", "a.txt").await.0, b"third");
    let done = status(&s, &alice, "alice", &ses).await;
    assert_eq!(
        done["ingestion_status"],
        json!({"failed_files": 0, "finished_files": 1})
    );
}

/// Issue 11, A: `KEEP` of a 255-byte name that is taken shortens the stem
/// so that ` (1)` fits: the file is stored under exactly 255 bytes, and the
/// server starts again over it.
#[tokio::test]
async fn a_255_byte_name_kept_on_conflict_fits_the_name_limit() {
    let mut s = Server::start();
    let alice = user(&s, "alice").await;
    let stem = "k".repeat(251);
    let name = format!("{stem}.txt");
    assert_eq!(name.len(), 255);
    let mut stored = Vec::new();
    for data in [&b"old"[..], &b"new"[..]] {
        let ses = create(&s, &alice, "alice", json!({"write_mode": "KEEP"})).await;
        post(&ses, &name, data).await;
        assert_eq!(
            close(&s, &alice, "alice", &ses).await.0,
            StatusCode::NO_CONTENT
        );
        let files = format!("{}/{}/files", sessions("alice"), sid(&ses));
        let (st, v) = call(&s, Method::GET, &files, Some(&alice), None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["data"][0]["ingestion_status"], "FINISHED", "{v}");
        stored.push(v["data"][0]["stored_as"].as_str().unwrap().to_owned());
    }
    let renamed = format!("{} (1).txt", &stem[..247]);
    assert_eq!(renamed.len(), 255);
    assert_eq!(stored, [name.clone(), renamed.clone()]);
    assert_eq!(native(&s, &alice, "alice", &name).await.0, b"old");
    assert_eq!(native(&s, &alice, "alice", &renamed).await.0, b"new");
    s.restart();
    assert_eq!(native(&s, &alice, "alice", &renamed).await.0, b"new");
}

/// The kill loop's finding: an object POSTed again whose body breaks off
/// must not lose the first one, acknowledged with 204 (as S3, whose POST
/// deepset's form is, keeps the earlier object when a later one fails).
#[tokio::test]
async fn a_resent_object_that_breaks_off_keeps_the_acknowledged_one() {
    use tokio::io::AsyncWriteExt as _;
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let ses = create(&s, &alice, "alice", json!({})).await;
    post(&ses, "r.txt", b"acknowledged").await;
    // The same object again, its body cut after the first bytes.
    let cfg = &ses["aws_prefixed_request_config"];
    let boundary = "cut-boundary";
    let mut body = Vec::new();
    for (k, v) in cfg["fields"].as_object().unwrap() {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{}\r\n",
                v.as_str().unwrap()
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"r.txt\"\r\n\r\nthe start of a resend").as_bytes(),
    );
    let addr = s.url.strip_prefix("http://").unwrap().to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /deepset/objects HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len() + 100_000
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body).await.unwrap();
    tcp.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(tcp);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    assert_eq!(
        close(&s, &alice, "alice", &ses).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(&s, &alice, "alice", &ses).await["ingestion_status"],
        json!({"failed_files": 0, "finished_files": 1})
    );
    assert_eq!(
        native(&s, &alice, "alice", "r.txt").await.0,
        b"acknowledged"
    );
}
