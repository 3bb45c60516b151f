//! Every error row of NATIVE-API.md provoked over real HTTP, cross-user
//! isolation on every route, shared-space access, and the ops endpoints.

mod common;
use common::*;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The smallest part size the server accepts for a multi-part upload.
const P: u64 = 64 * 1024;
/// Three parts: two full ones and a short last one.
const N: u64 = 2 * P + 1000;

/// Checks a failed call: the status, the `{"error":{"code","message"}}` shape,
/// the code, and that the message is a sentence mentioning `keyword`.
#[track_caller]
fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str, keyword: &str) {
    let (st, v) = got;
    assert_eq!(*st, status, "wanted {status} {code}, got {st}: {v}");
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("error body is not a JSON object: {v}"));
    assert_eq!(
        obj.len(),
        1,
        "error body has only \"error\" at the top: {v}"
    );
    let e = &v["error"];
    assert!(e.is_object(), "\"error\" is an object: {v}");
    assert_eq!(e["code"], json!(code), "{v}");
    let msg = e["message"]
        .as_str()
        .unwrap_or_else(|| panic!("\"message\" is a string: {v}"));
    assert!(
        msg.trim().len() > 10 && msg.contains(' '),
        "message is a sentence: {v}"
    );
    assert!(
        msg.to_lowercase().contains(&keyword.to_lowercase()),
        "message {msg:?} mentions {keyword:?}"
    );
}

/// Any request with raw bytes and headers.
async fn req(
    s: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (StatusCode, Value) {
    let url = s.url_of(path);
    let mut rb = http().request(method, url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb.body(b);
    }
    decode(rb.send().await.unwrap()).await
}

#[track_caller]
fn ok_part(got: &(StatusCode, Value), n: u32) {
    assert_eq!(got.0, StatusCode::OK, "part {n}: {}", got.1);
    assert_eq!(got.1["part"], json!(n), "{}", got.1);
}

async fn part_numbers(s: &Server, token: &str, uid: &str) -> Vec<u64> {
    let (st, v) = call(
        s,
        Method::GET,
        &format!("/v1/uploads/{uid}/parts"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["part"].as_u64().unwrap())
        .collect()
}

/// A three-part upload in `token`'s home space; returns (session id, upload id).
async fn three_parts(s: &Server, token: &str, path: &str) -> (String, String) {
    let v = create_session(s, token, json!({"path": path, "size": N, "part_size": P})).await;
    let sid = v["id"].as_str().unwrap().to_owned();
    let uid = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(v["uploads"][0]["part_size"], json!(P), "{v}");
    assert_eq!(v["uploads"][0]["total_parts"], json!(3), "{v}");
    (sid, uid)
}

fn chunk(data: &[u8], n: u64) -> Vec<u8> {
    let a = ((n - 1) * P) as usize;
    let b = (n * P).min(data.len() as u64) as usize;
    data[a..b].to_vec()
}

/// Asserts the upload still has exactly `parts` received, with the bytes count to match.
async fn assert_parts_kept(s: &Server, token: &str, uid: &str, parts: &[u64]) {
    assert_eq!(
        part_numbers(s, token, uid).await,
        parts,
        "acknowledged parts are kept"
    );
    let v = status(s, token, uid).await;
    let bytes: u64 = parts.iter().map(|&n| (n * P).min(N) - (n - 1) * P).sum();
    assert_eq!(v["received_bytes"], json!(bytes), "{v}");
    assert_eq!(v["state"], json!("open"), "{v}");
}

// ---------------------------------------------------------------- 400

#[tokio::test]
async fn malformed_paths_answer_400_invalid_path() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let create = |path: String| {
        let s = &s;
        let alice = alice.clone();
        async move {
            call(
                s,
                Method::POST,
                "/v1/sessions",
                Some(&alice),
                Some(json!({"path": path, "size": 10})),
            )
            .await
        }
    };
    assert_error(
        &create("../x.bin".into()).await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
        "..",
    );
    assert_error(
        &create("a/../../etc/passwd".into()).await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
        "..",
    );
    assert_error(
        &create("a\u{0}b".into()).await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
        "NUL",
    );
    assert_error(
        &create("a\u{1}b".into()).await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
        "control",
    );
    assert_error(
        &create("a\nb".into()).await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
        "control",
    );
    let long = "x".repeat(256);
    let r = create(format!("dir/{long}")).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_path", "255");
    // 255 bytes is still fine.
    let (st, v) = create("x".repeat(255)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    // The same rules on URL paths: NUL via %00, `..` via encoded slashes, control chars.
    let r = call(
        &s,
        Method::GET,
        "/v1/spaces/alice/files/a%00b",
        Some(&alice),
        None,
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_path", "NUL");
    let r = call(
        &s,
        Method::GET,
        "/v1/spaces/alice/files/a%2F..%2F..%2Fb",
        Some(&alice),
        None,
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_path", "..");
    let r = call(
        &s,
        Method::DELETE,
        "/v1/spaces/alice/files/a%01b",
        Some(&alice),
        None,
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_path", "control");
    let r = call(
        &s,
        Method::GET,
        &format!("/v1/spaces/alice/list/{long}"),
        Some(&alice),
        None,
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_path", "255");
    // Nothing escaped the data directory's space folders.
    assert!(!s.data.join("etc").exists());
}

#[tokio::test]
async fn malformed_headers_and_bodies_answer_400() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(N as usize, 1);
    let (_sid, uid) = three_parts(&s, &alice, "x/a.bin").await;
    ok_part(&part(&s, &alice, &uid, 1, chunk(&data, 1)).await, 1);

    // invalid_range: a Content-Range that does not parse.
    for cr in ["bytes abc", "bytes 5-1/100", "octets 0-9/10", "bytes 0-9"] {
        let r = put(
            &s,
            &format!("/v1/uploads/{uid}"),
            Some(&alice),
            &[("Content-Range", cr)],
            vec![0; 10],
        )
        .await;
        assert_error(
            &r,
            StatusCode::BAD_REQUEST,
            "invalid_range",
            "Content-Range",
        );
    }
    // A range write without any Content-Range.
    let r = put(
        &s,
        &format!("/v1/uploads/{uid}"),
        Some(&alice),
        &[],
        vec![0; 10],
    )
    .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_header",
        "Content-Range",
    );
    // A part number that is not a number.
    let r = put(
        &s,
        &format!("/v1/uploads/{uid}/parts/one"),
        Some(&alice),
        &[],
        vec![0; 10],
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_range", "part number");

    // invalid_header: a Content-Digest that does not parse.
    for cd in [
        "sha-256=nocolons",
        "sha-256=:!!notbase64!!:",
        "sha-256=:AAAA:",
        "garbage",
    ] {
        let r = put(
            &s,
            &format!("/v1/uploads/{uid}/parts/2"),
            Some(&alice),
            &[("Content-Digest", cd)],
            chunk(&data, 2),
        )
        .await;
        assert_error(
            &r,
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "Content-Digest",
        );
    }
    let r = put(
        &s,
        &format!("/v1/uploads/{uid}/parts/2"),
        Some(&alice),
        &[("Content-MD5", "zz")],
        chunk(&data, 2),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_header", "Content-MD5");

    // invalid_body: malformed JSON on every JSON route.
    let bad = b"{\"path\": \"x\", ".to_vec();
    for (m, p) in [
        (Method::POST, "/v1/sessions".to_owned()),
        (Method::POST, "/v1/admin/users".to_owned()),
        (Method::POST, "/v1/admin/spaces".to_owned()),
        (Method::POST, format!("/v1/uploads/{uid}/commit")),
    ] {
        let r = req(
            &s,
            m,
            &p,
            Some(ADMIN),
            &[("Content-Type", "application/json")],
            Some(bad.clone()),
        )
        .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_body", "JSON");
    }
    // Well-formed JSON of the wrong shape.
    let r = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&alice),
        Some(json!({"path": 7, "size": "big"})),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_body", "JSON");
    let r = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&alice),
        Some(json!({"size": 7})),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_body", "path");
    let r = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&alice),
        Some(json!({"path": "y", "size": 7, "conflict": "explode"})),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_body", "explode");

    // Nothing acknowledged was lost, nothing refused was recorded.
    assert_parts_kept(&s, &alice, &uid, &[1]).await;
}

// ---------------------------------------------------------------- 401

#[tokio::test]
async fn bad_credentials_answer_401() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let r = call(&s, Method::GET, "/v1/me", None, None).await;
    assert_error(
        &r,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "Authorization",
    );
    let r = call(
        &s,
        Method::POST,
        "/v1/sessions",
        None,
        Some(json!({"path": "a", "size": 1})),
    )
    .await;
    assert_error(
        &r,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "Authorization",
    );
    let r = call(
        &s,
        Method::GET,
        "/v1/me",
        Some("fy_0123456789abcdef_nope"),
        None,
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthenticated", "token");
    let r = call(&s, Method::GET, "/v1/me", Some(&format!("{alice}x")), None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthenticated", "token");
    let r = call(&s, Method::GET, "/v1/me", Some("wrong"), None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthenticated", "token");

    // A second token, revoked.
    let (st, t) = call(
        &s,
        Method::POST,
        "/v1/admin/users/alice/tokens",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    let tok = t["token"].as_str().unwrap().to_owned();
    let id = t["id"].as_str().expect("the new token's id").to_owned();
    let (st, me) = call(&s, Method::GET, "/v1/me", Some(&tok), None).await;
    assert_eq!(
        (st, me["user"].clone()),
        (StatusCode::OK, json!("alice")),
        "{me}"
    );
    let (st, v) = call(
        &s,
        Method::DELETE,
        &format!("/v1/admin/tokens/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let r = call(&s, Method::GET, "/v1/me", Some(&tok), None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthenticated", "token");
    let r = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&tok),
        Some(json!({"path": "a", "size": 1})),
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthenticated", "token");
    // The user's other token still works.
    let (st, _) = call(&s, Method::GET, "/v1/me", Some(&alice), None).await;
    assert_eq!(st, StatusCode::OK);
    // Revoking an unknown token id is a 404.
    let r = call(
        &s,
        Method::DELETE,
        "/v1/admin/tokens/0000000000000000",
        Some(ADMIN),
        None,
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", "token");

    // A forged signature on an upload URL.
    let (_sid, uid) = three_parts(&s, &alice, "a.bin").await;
    let r = put(
        &s,
        &format!("/v1/uploads/{uid}/parts/1?sig=00ff"),
        None,
        &[],
        vec![1; P as usize],
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthenticated", "signature");
    assert_parts_kept(&s, &alice, &uid, &[]).await;
}

// ---------------------------------------------------------------- 403

#[tokio::test]
async fn disallowed_spaces_answer_403() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let r = call(
        &s,
        Method::POST,
        "/v1/admin/users",
        Some(&alice),
        Some(json!({"name": "mallory"})),
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "admin");
    let r = call(
        &s,
        Method::POST,
        "/v1/admin/spaces",
        Some(&alice),
        Some(json!({"name": "x", "members": {}})),
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "admin");
    let r = call(
        &s,
        Method::POST,
        "/v1/admin/users/bob/tokens",
        Some(&alice),
        None,
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "admin");
    let r = call(&s, Method::GET, "/v1/sessions?all=true", Some(&alice), None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "admin");

    let (st, v) = call(
        &s,
        Method::POST,
        "/v1/admin/spaces",
        Some(ADMIN),
        Some(json!({"name": "team", "members": {"alice": "write", "bob": "read"}})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let r = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&bob),
        Some(json!({"space": "team", "path": "b.bin", "size": 10})),
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "team");
    let r = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&bob),
        Some(json!({"space": "alice", "path": "b.bin", "size": 10})),
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "alice");
    let (st, v) = call(&s, Method::GET, "/v1/sessions", Some(&bob), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        v["sessions"],
        json!([]),
        "refused creates leave no session: {v}"
    );
}

// ---------------------------------------------------------------- 404

#[tokio::test]
async fn unknown_ids_and_routes_answer_404() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let sid = "0123456789abcdef0123456789abcdef";
    for (m, p) in [
        (Method::GET, format!("/v1/sessions/{sid}")),
        (Method::DELETE, format!("/v1/sessions/{sid}")),
        (Method::POST, format!("/v1/sessions/{sid}/commit")),
        (Method::GET, format!("/v1/uploads/{sid}")),
        (Method::GET, format!("/v1/uploads/{sid}/parts")),
        (Method::POST, format!("/v1/uploads/{sid}/commit")),
        (Method::DELETE, format!("/v1/uploads/{sid}")),
    ] {
        let r = call(&s, m.clone(), &p, Some(&alice), None).await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found", sid);
    }
    let r = put(
        &s,
        &format!("/v1/uploads/{sid}/parts/1"),
        Some(&alice),
        &[],
        vec![1; 10],
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", sid);
    let r = put(
        &s,
        &format!("/v1/uploads/{sid}"),
        Some(&alice),
        &[("Content-Range", "bytes 0-9/10")],
        vec![1; 10],
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", sid);
    let r = call(
        &s,
        Method::GET,
        "/v1/spaces/alice/files/nope.bin",
        Some(&alice),
        None,
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", "nope.bin");
    let r = call(
        &s,
        Method::GET,
        "/v1/spaces/nospace/list/",
        Some(&alice),
        None,
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", "nospace");

    // Unknown routes, with and without a token.
    let r = call(&s, Method::GET, "/v1/nothing/here", Some(&alice), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", "/v1/nothing/here");
    let r = call(&s, Method::GET, "/nope", None, None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", "/nope");
}

// ---------------------------------------------------------------- 409

#[tokio::test]
async fn existing_destination_and_incomplete_commit_answer_409() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let first = random_bytes(N as usize, 2);
    let (sid, uid) = three_parts(&s, &alice, "x/a.bin").await;
    for n in 1..=3 {
        ok_part(&part(&s, &alice, &uid, n, chunk(&first, n as u64)).await, n);
    }
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/v1/sessions/{sid}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], json!("committed"), "{v}");

    // Same path again, conflict "fail" (the default, and explicitly).
    let second = random_bytes(N as usize, 3);
    for conflict in [None, Some("fail")] {
        let mut body = json!({"path": "x/a.bin", "size": N, "part_size": P});
        if let Some(c) = conflict {
            body["conflict"] = json!(c);
        }
        let v = create_session(&s, &alice, body).await;
        let sid2 = v["id"].as_str().unwrap().to_owned();
        let uid2 = v["uploads"][0]["id"].as_str().unwrap().to_owned();
        for n in 1..=3 {
            ok_part(
                &part(&s, &alice, &uid2, n, chunk(&second, n as u64)).await,
                n,
            );
        }
        let r = call(
            &s,
            Method::POST,
            &format!("/v1/sessions/{sid2}/commit"),
            Some(&alice),
            None,
        )
        .await;
        assert_error(&r, StatusCode::CONFLICT, "already_exists", "x/a.bin");
        let p = r.1["error"]["path"].as_str().expect("\"path\" in the body");
        assert!(p.contains("x/a.bin"), "{}", r.1);
        let r = call(
            &s,
            Method::POST,
            &format!("/v1/uploads/{uid2}/commit"),
            Some(&alice),
            None,
        )
        .await;
        assert_error(&r, StatusCode::CONFLICT, "already_exists", "x/a.bin");
        assert!(
            r.1["error"]["path"].as_str().unwrap().contains("x/a.bin"),
            "{}",
            r.1
        );
        // The refused commit changed nothing: the upload keeps its bytes, the file is the first.
        assert_parts_kept(&s, &alice, &uid2, &[1, 2, 3]).await;
        let (st, got) = download(&s, &alice, "alice", "x/a.bin").await;
        assert_eq!(st, StatusCode::OK);
        assert!(got == first, "the existing file is untouched");
    }

    // Commit before every byte arrived.
    let (sid3, uid3) = three_parts(&s, &alice, "x/b.bin").await;
    ok_part(&part(&s, &alice, &uid3, 1, chunk(&first, 1)).await, 1);
    ok_part(&part(&s, &alice, &uid3, 3, chunk(&first, 3)).await, 3);
    for p in [
        format!("/v1/sessions/{sid3}/commit"),
        format!("/v1/uploads/{uid3}/commit"),
    ] {
        let r = call(&s, Method::POST, &p, Some(&alice), None).await;
        assert_error(&r, StatusCode::CONFLICT, "incomplete", "missing");
        assert_eq!(r.1["error"]["missing"], json!([[P, 2 * P - 1]]), "{}", r.1);
    }
    assert_parts_kept(&s, &alice, &uid3, &[1, 3]).await;
    let (st, v) = call(
        &s,
        Method::GET,
        &format!("/v1/sessions/{sid3}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(
        (st, v["state"].clone()),
        (StatusCode::OK, json!("open")),
        "{v}"
    );
    let (st, _) = download(&s, &alice, "alice", "x/b.bin").await;
    assert_eq!(
        st,
        StatusCode::NOT_FOUND,
        "no file appears after a refused commit"
    );
    // The missing part completes it.
    ok_part(&part(&s, &alice, &uid3, 2, chunk(&first, 2)).await, 2);
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/v1/sessions/{sid3}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(download(&s, &alice, "alice", "x/b.bin").await.1, first);
}

// ---------------------------------------------------------------- 410

#[tokio::test]
async fn writes_to_an_aborted_session_answer_410_aborted() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(N as usize, 4);
    let (sid, uid) = three_parts(&s, &alice, "a.bin").await;
    ok_part(&part(&s, &alice, &uid, 1, chunk(&data, 1)).await, 1);
    let (st, v) = call(
        &s,
        Method::DELETE,
        &format!("/v1/sessions/{sid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let r = part(&s, &alice, &uid, 2, chunk(&data, 2)).await;
    assert_error(&r, StatusCode::GONE, "aborted", "abort");
    let r = put(
        &s,
        &format!("/v1/uploads/{uid}"),
        Some(&alice),
        &[("Content-Range", &format!("bytes 0-9/{N}"))],
        vec![0; 10],
    )
    .await;
    assert_error(&r, StatusCode::GONE, "aborted", "abort");
    let r = call(
        &s,
        Method::POST,
        &format!("/v1/sessions/{sid}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_error(&r, StatusCode::GONE, "aborted", "abort");
    let r = call(
        &s,
        Method::POST,
        &format!("/v1/uploads/{uid}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_error(&r, StatusCode::GONE, "aborted", "abort");
    let (st, v) = call(
        &s,
        Method::GET,
        &format!("/v1/sessions/{sid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["state"], json!("aborted"), "{v}");

    // Aborting a single upload.
    let (_sid2, uid2) = three_parts(&s, &alice, "b.bin").await;
    let (st, _) = call(
        &s,
        Method::DELETE,
        &format!("/v1/uploads/{uid2}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let r = part(&s, &alice, &uid2, 1, chunk(&data, 1)).await;
    assert_error(&r, StatusCode::GONE, "aborted", "abort");
}

#[tokio::test]
async fn writes_to_an_expired_session_answer_410_expired() {
    let s = Server::start_with(&[("FERRY_REAP_INTERVAL", "1")]);
    let alice = user(&s, "alice").await;
    let data = random_bytes(N as usize, 5);
    let v = create_session(
        &s,
        &alice,
        json!({"path": "a.bin", "size": N, "part_size": P, "expires_in": 1}),
    )
    .await;
    let sid = v["id"].as_str().unwrap().to_owned();
    let uid = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    ok_part(&part(&s, &alice, &uid, 1, chunk(&data, 1)).await, 1);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let r = part(&s, &alice, &uid, 2, chunk(&data, 2)).await;
    assert_error(&r, StatusCode::GONE, "expired", "expire");
    let r = put(
        &s,
        &format!("/v1/uploads/{uid}"),
        Some(&alice),
        &[("Content-Range", &format!("bytes 0-9/{N}"))],
        vec![0; 10],
    )
    .await;
    assert_error(&r, StatusCode::GONE, "expired", "expire");
    let r = call(
        &s,
        Method::POST,
        &format!("/v1/sessions/{sid}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_error(&r, StatusCode::GONE, "expired", "expire");
    let (st, v) = call(
        &s,
        Method::GET,
        &format!("/v1/sessions/{sid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["state"], json!("expired"), "{v}");
    let (st, v) = call(
        &s,
        Method::GET,
        "/v1/sessions?state=open",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["sessions"], json!([]), "{v}");
}

// ---------------------------------------------------------------- 413

#[tokio::test]
async fn declared_size_over_the_limit_answers_413() {
    let s = Server::start_with(&[("FERRY_MAX_FILE_SIZE", "1000")]);
    let alice = user(&s, "alice").await;
    let r = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&alice),
        Some(json!({"path": "a.bin", "size": 1001})),
    )
    .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "too_large", "1000");
    assert_eq!(r.1["error"]["limit"], json!(1000), "{}", r.1);
    // In a multi-upload session, one oversized upload refuses the whole session.
    let r = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&alice),
        Some(
            json!({"uploads": [{"path": "ok.bin", "size": 10}, {"path": "big.bin", "size": 5000}]}),
        ),
    )
    .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "too_large", "1000");
    assert_eq!(r.1["error"]["limit"], json!(1000), "{}", r.1);
    let (_, v) = call(&s, Method::GET, "/v1/sessions", Some(&alice), None).await;
    assert_eq!(v["sessions"], json!([]), "{v}");
    // Exactly at the limit is fine.
    let v = create_session(&s, &alice, json!({"path": "a.bin", "size": 1000})).await;
    let uid = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    // A deferred length announced over the limit.
    let v = create_session(&s, &alice, json!({"path": "d.bin"})).await;
    let did = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    let r = put(
        &s,
        &format!("/v1/uploads/{did}"),
        Some(&alice),
        &[("Content-Range", "bytes 0-9/2000")],
        vec![0; 10],
    )
    .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "too_large", "1000");
    assert_eq!(r.1["error"]["limit"], json!(1000), "{}", r.1);
    let data = random_bytes(1000, 6);
    ok_part(&part(&s, &alice, &uid, 1, data.clone()).await, 1);
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/v1/uploads/{uid}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(download(&s, &alice, "alice", "a.bin").await.1, data);
}

#[tokio::test]
async fn a_part_body_longer_than_the_part_answers_413() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(N as usize, 7);
    let (sid, uid) = three_parts(&s, &alice, "a.bin").await;
    ok_part(&part(&s, &alice, &uid, 2, chunk(&data, 2)).await, 2);
    // Part 1 one byte too long.
    let mut long = chunk(&data, 1);
    long.push(0);
    let r = part(&s, &alice, &uid, 1, long).await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &P.to_string(),
    );
    assert_eq!(r.1["error"]["limit"], json!(P), "{}", r.1);
    assert_parts_kept(&s, &alice, &uid, &[2]).await;
    // The short last part, much too long.
    let r = part(&s, &alice, &uid, 3, vec![9; 5000]).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "too_large", "1000");
    assert_eq!(r.1["error"]["limit"], json!(1000), "{}", r.1);
    assert_parts_kept(&s, &alice, &uid, &[2]).await;
    // A range write whose body is longer than its Content-Range.
    let r = put(
        &s,
        &format!("/v1/uploads/{uid}"),
        Some(&alice),
        &[("Content-Range", &format!("bytes {}-{}/{N}", 2 * P, N - 1))],
        vec![9; 2000],
    )
    .await;
    // With a Content-Length the mismatch is caught up front (400); either way it is refused.
    match r.0 {
        StatusCode::BAD_REQUEST => assert_error(
            &r,
            StatusCode::BAD_REQUEST,
            "invalid_range",
            "Content-Length",
        ),
        _ => assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "too_large", "1000"),
    }
    assert_parts_kept(&s, &alice, &uid, &[2]).await;
    // The same without a Content-Length (chunked): the overflow is seen while streaming.
    let body = futures::stream::iter([Ok::<_, std::io::Error>(vec![9u8; 700]), Ok(vec![9u8; 700])]);
    let resp = http()
        .put(format!("{}/v1/uploads/{uid}", s.url))
        .bearer_auth(&alice)
        .header("Content-Range", format!("bytes {}-{}/{N}", 2 * P, N - 1))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    let r = decode(resp).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "too_large", "1000");
    assert_eq!(r.1["error"]["limit"], json!(1000), "{}", r.1);
    let v = status(&s, &alice, &uid).await;
    assert_eq!(part_numbers(&s, &alice, &uid).await, [2], "{v}");
    assert_eq!(v["state"], json!("open"), "{v}");
    // The upload still completes with the right bytes.
    for n in [1, 2, 3] {
        ok_part(&part(&s, &alice, &uid, n, chunk(&data, n as u64)).await, n);
    }
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/v1/sessions/{sid}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let got = download(&s, &alice, "alice", "a.bin").await.1;
    assert!(got == data, "the committed file is the right bytes");
}

// ---------------------------------------------------------------- 416

#[tokio::test]
async fn writes_outside_the_declared_size_answer_416() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(N as usize, 8);
    let (_sid, uid) = three_parts(&s, &alice, "a.bin").await;
    ok_part(&part(&s, &alice, &uid, 1, chunk(&data, 1)).await, 1);
    let url = format!("/v1/uploads/{uid}");
    // A range that ends past the size (total unknown to the header).
    let r = put(
        &s,
        &url,
        Some(&alice),
        &[("Content-Range", &format!("bytes {}-{}/*", N - 5, N + 4))],
        vec![1; 10],
    )
    .await;
    assert_error(
        &r,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
        &N.to_string(),
    );
    // A range that starts past the size.
    let r = put(
        &s,
        &url,
        Some(&alice),
        &[("Content-Range", &format!("bytes {}-{}/*", N, N + 9))],
        vec![1; 10],
    )
    .await;
    assert_error(
        &r,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
        &N.to_string(),
    );
    // A total that disagrees with the declared size.
    let r = put(
        &s,
        &url,
        Some(&alice),
        &[("Content-Range", &format!("bytes 0-9/{}", N + 100))],
        vec![1; 10],
    )
    .await;
    assert_error(
        &r,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
        &N.to_string(),
    );
    // Part numbers past the last part, and part 0.
    for n in [4, 5, 10_001, 0] {
        let r = part(&s, &alice, &uid, n, vec![1; 10]).await;
        assert_error(
            &r,
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            "part",
        );
    }
    assert_parts_kept(&s, &alice, &uid, &[1]).await;
    assert_eq!(
        status(&s, &alice, &uid).await["missing"],
        json!([[P, N - 1]])
    );
}

// ---------------------------------------------------------------- 422

fn content_digest(data: &[u8]) -> String {
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data))
    )
}

#[tokio::test]
async fn digest_mismatch_answers_422_and_discards_the_part() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(N as usize, 9);
    let (sid, uid) = three_parts(&s, &alice, "a.bin").await;
    // The right digest is accepted.
    let good = content_digest(&chunk(&data, 1));
    let r = put(
        &s,
        &format!("/v1/uploads/{uid}/parts/1"),
        Some(&alice),
        &[("Content-Digest", &good)],
        chunk(&data, 1),
    )
    .await;
    ok_part(&r, 1);
    assert_eq!(
        r.1["sha256"],
        json!(sha256_hex(&chunk(&data, 1))),
        "{}",
        r.1
    );

    // A wrong one on part 2.
    let wrong = content_digest(b"something else");
    let r = put(
        &s,
        &format!("/v1/uploads/{uid}/parts/2"),
        Some(&alice),
        &[("Content-Digest", &wrong)],
        chunk(&data, 2),
    )
    .await;
    assert_error(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "digest_mismatch",
        "mismatch",
    );
    let e = &r.1["error"];
    let expected = e["expected"].as_str().expect("\"expected\" in the body");
    let actual = e["actual"].as_str().expect("\"actual\" in the body");
    assert_ne!(expected, actual, "{}", r.1);
    let want_exp = [
        sha256_hex(b"something else"),
        wrong
            .trim_start_matches("sha-256=:")
            .trim_end_matches(':')
            .to_owned(),
    ];
    let want_act = [
        sha256_hex(&chunk(&data, 2)),
        content_digest(&chunk(&data, 2))
            .trim_start_matches("sha-256=:")
            .trim_end_matches(':')
            .to_owned(),
    ];
    assert!(
        want_exp.iter().any(|w| w == expected),
        "expected is the client's digest: {}",
        r.1
    );
    assert!(
        want_act.iter().any(|w| w == actual),
        "actual is the received bytes' digest: {}",
        r.1
    );
    // The part is not recorded, part 1 is kept.
    assert_parts_kept(&s, &alice, &uid, &[1]).await;
    let v = status(&s, &alice, &uid).await;
    assert_eq!(v["missing"], json!([[P, N - 1]]), "{v}");
    assert_eq!(v["parts_received"], json!(1), "{v}");

    // A wrong digest on a range write.
    let r = put(
        &s,
        &format!("/v1/uploads/{uid}"),
        Some(&alice),
        &[
            ("Content-Range", &format!("bytes {}-{}/{N}", 2 * P, N - 1)),
            ("Content-Digest", &wrong),
        ],
        chunk(&data, 3),
    )
    .await;
    assert_error(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "digest_mismatch",
        "mismatch",
    );
    assert_parts_kept(&s, &alice, &uid, &[1]).await;

    // A wrong whole-file sha256 at commit.
    for n in [2, 3] {
        ok_part(&part(&s, &alice, &uid, n, chunk(&data, n as u64)).await, n);
    }
    let r = call(
        &s,
        Method::POST,
        &format!("/v1/uploads/{uid}/commit"),
        Some(&alice),
        Some(json!({"sha256": sha256_hex(b"nope")})),
    )
    .await;
    assert_error(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "digest_mismatch",
        "mismatch",
    );
    assert_eq!(
        r.1["error"]["expected"],
        json!(sha256_hex(b"nope")),
        "{}",
        r.1
    );
    assert_eq!(r.1["error"]["actual"], json!(sha256_hex(&data)), "{}", r.1);
    assert_parts_kept(&s, &alice, &uid, &[1, 2, 3]).await;
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/v1/sessions/{sid}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["uploads"][0]["file"]["sha256"],
        json!(sha256_hex(&data)),
        "{v}"
    );
}

// ---------------------------------------------------------------- 429

#[tokio::test]
async fn too_many_open_sessions_answer_429() {
    let s = Server::start_with(&[("FERRY_MAX_OPEN_SESSIONS", "2")]);
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let v1 = create_session(&s, &alice, json!({"path": "1.bin", "size": 10})).await;
    let _v2 = create_session(&s, &alice, json!({"path": "2.bin", "size": 10})).await;
    let r = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&alice),
        Some(json!({"path": "3.bin", "size": 10})),
    )
    .await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "too_many_sessions", "2");
    assert_eq!(r.1["error"]["limit"], json!(2), "{}", r.1);
    // The limit is per user.
    create_session(&s, &bob, json!({"path": "1.bin", "size": 10})).await;
    // The existing sessions still work; ending one frees a slot.
    let uid1 = v1["uploads"][0]["id"].as_str().unwrap();
    ok_part(&part(&s, &alice, uid1, 1, vec![7; 10]).await, 1);
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/v1/uploads/{uid1}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    create_session(&s, &alice, json!({"path": "3.bin", "size": 10})).await;
    let r = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&alice),
        Some(json!({"path": "4.bin", "size": 10})),
    )
    .await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "too_many_sessions", "2");
}

// ---------------------------------------------------------------- 507

/// User `q` with a 1000-byte quota, and the 507 refusal of a 2000-byte
/// session; returns their token and that answer.
async fn over_quota(s: &Server) -> (String, (StatusCode, Value)) {
    let (st, v) = call(
        s,
        Method::POST,
        "/v1/admin/users",
        Some(ADMIN),
        Some(json!({"name": "q", "quota_bytes": 1000})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let q = v["token"].as_str().unwrap().to_owned();
    let r = call(
        s,
        Method::POST,
        "/v1/sessions",
        Some(&q),
        Some(json!({"path": "big.bin", "size": 2000})),
    )
    .await;
    assert_error(
        &r,
        StatusCode::INSUFFICIENT_STORAGE,
        "insufficient_storage",
        "quota",
    );
    (q, r)
}

#[tokio::test]
async fn quota_exhausted_answers_507_and_keeps_acknowledged_bytes() {
    let s = Server::start();
    let (q, r) = over_quota(&s).await;
    assert!(
        r.1["error"]["message"].as_str().unwrap().contains("1000"),
        "{}",
        r.1
    );

    // 600 bytes fit and are acknowledged; 500 more do not.
    let data = random_bytes(600, 10);
    let v = create_session(&s, &q, json!({"path": "a.bin", "size": 600})).await;
    let uid = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    ok_part(&part(&s, &q, &uid, 1, data.clone()).await, 1);
    let r = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&q),
        Some(json!({"path": "b.bin", "size": 500})),
    )
    .await;
    assert_error(
        &r,
        StatusCode::INSUFFICIENT_STORAGE,
        "insufficient_storage",
        "quota",
    );
    // A deferred length announced over the quota in a write.
    let v = create_session(&s, &q, json!({"path": "d.bin"})).await;
    let did = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    let r = put(
        &s,
        &format!("/v1/uploads/{did}"),
        Some(&q),
        &[("Content-Range", "bytes 0-9/900")],
        vec![1; 10],
    )
    .await;
    assert_error(
        &r,
        StatusCode::INSUFFICIENT_STORAGE,
        "insufficient_storage",
        "quota",
    );
    let v = status(&s, &q, &did).await;
    assert_eq!(v["received_bytes"], json!(0), "{v}");
    // Nothing acknowledged was lost.
    let v = status(&s, &q, &uid).await;
    assert_eq!(v["received_bytes"], json!(600), "{v}");
    assert_eq!(v["missing"], json!([]), "{v}");
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/v1/uploads/{uid}/commit"),
        Some(&q),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(download(&s, &q, "q", "a.bin").await.1, data);
    let (_, me) = call(&s, Method::GET, "/v1/me", Some(&q), None).await;
    assert_eq!(me["quota_bytes"], json!(1000), "{me}");
    assert_eq!(me["used_bytes"], json!(600), "{me}");
    // Still over quota after the commit.
    let r = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&q),
        Some(json!({"path": "c.bin", "size": 401})),
    )
    .await;
    assert_error(
        &r,
        StatusCode::INSUFFICIENT_STORAGE,
        "insufficient_storage",
        "quota",
    );
}

// ---------------------------------------------------------------- isolation

#[tokio::test]
async fn other_users_sessions_uploads_and_files_are_out_of_reach() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let data = random_bytes(N as usize, 11);

    // A committed file and an open upload with one part.
    let (sid1, uid1) = three_parts(&s, &alice, "x/done.bin").await;
    for n in 1..=3 {
        ok_part(&part(&s, &alice, &uid1, n, chunk(&data, n as u64)).await, n);
    }
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/v1/sessions/{sid1}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (sid, uid) = three_parts(&s, &alice, "x/open.bin").await;
    ok_part(&part(&s, &alice, &uid, 1, chunk(&data, 1)).await, 1);

    for (sid, uid) in [(&sid1, &uid1), (&sid, &uid)] {
        for (m, p) in [
            (Method::GET, format!("/v1/sessions/{sid}")),
            (Method::DELETE, format!("/v1/sessions/{sid}")),
            (Method::POST, format!("/v1/sessions/{sid}/commit")),
            (Method::GET, format!("/v1/uploads/{uid}")),
            (Method::GET, format!("/v1/uploads/{uid}/parts")),
            (Method::POST, format!("/v1/uploads/{uid}/commit")),
            (Method::DELETE, format!("/v1/uploads/{uid}")),
        ] {
            let r = call(&s, m.clone(), &p, Some(&bob), None).await;
            assert_error(&r, StatusCode::NOT_FOUND, "not_found", "no ");
            let leaked = r.1.to_string();
            assert!(
                !leaked.contains("alice") && !leaked.contains("open.bin"),
                "{m} {p} leaks: {leaked}"
            );
        }
        for n in [1, 2] {
            let r = part(&s, &bob, uid, n, vec![0xbb; P as usize]).await;
            assert_error(&r, StatusCode::NOT_FOUND, "not_found", "no ");
        }
        let r = put(
            &s,
            &format!("/v1/uploads/{uid}"),
            Some(&bob),
            &[("Content-Range", &format!("bytes 0-9/{N}"))],
            vec![0xbb; 10],
        )
        .await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found", "no ");
    }
    // Another upload's signature does not open this one.
    let (_bsid, buid) = three_parts(&s, &bob, "mine.bin").await;
    let (_, bv) = call(
        &s,
        Method::GET,
        &format!("/v1/uploads/{buid}"),
        Some(&bob),
        None,
    )
    .await;
    let sig = bv["url"]
        .as_str()
        .unwrap()
        .split("sig=")
        .nth(1)
        .unwrap()
        .to_owned();
    let r = put(
        &s,
        &format!("/v1/uploads/{uid}/parts/2?sig={sig}"),
        None,
        &[],
        vec![0xbb; P as usize],
    )
    .await;
    assert_eq!(r.0, StatusCode::UNAUTHORIZED, "{}", r.1);
    let r = call(
        &s,
        Method::GET,
        &format!("/v1/uploads/{uid}?sig={sig}"),
        None,
        None,
    )
    .await;
    assert_eq!(r.0, StatusCode::UNAUTHORIZED, "{}", r.1);

    // Files in alice's space.
    for m in [Method::GET, Method::DELETE] {
        let r = call(&s, m, "/v1/spaces/alice/files/x/done.bin", Some(&bob), None).await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "alice");
    }
    let resp = http()
        .head(format!("{}/v1/spaces/alice/files/x/done.bin", s.url))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    for p in [
        "/v1/spaces/alice/list/",
        "/v1/spaces/alice/list/x",
        "/v1/spaces/alice/list",
    ] {
        let r = call(&s, Method::GET, p, Some(&bob), None).await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "alice");
    }

    // Bob's listing shows only his own session; the admin sees alice's.
    let (st, v) = call(&s, Method::GET, "/v1/sessions", Some(&bob), None).await;
    assert_eq!(st, StatusCode::OK);
    let ids: Vec<&str> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&sid.as_str()) && !ids.contains(&sid1.as_str()),
        "{v}"
    );
    assert_eq!(ids.len(), 1, "{v}");
    let (st, v) = call(
        &s,
        Method::GET,
        &format!("/v1/sessions/{sid}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["owner"], json!("alice"), "{v}");
    let (st, v) = call(&s, Method::GET, "/v1/sessions?all=true", Some(ADMIN), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let all: Vec<&str> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert!(
        all.contains(&sid.as_str()) && all.contains(&sid1.as_str()),
        "{v}"
    );
    let (st, v) = call(
        &s,
        Method::GET,
        &format!("/v1/uploads/{uid}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // Alice's work is intact.
    let (st, v) = call(
        &s,
        Method::GET,
        &format!("/v1/sessions/{sid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(
        (st, v["state"].clone()),
        (StatusCode::OK, json!("open")),
        "{v}"
    );
    assert_parts_kept(&s, &alice, &uid, &[1]).await;
    let (_, parts) = call(
        &s,
        Method::GET,
        &format!("/v1/uploads/{uid}/parts"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(parts["parts"][0]["size"], json!(P), "{parts}");
    let (st, got) = download(&s, &alice, "alice", "x/done.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert!(got == data, "the committed file is intact");
    for n in [2, 3] {
        ok_part(&part(&s, &alice, &uid, n, chunk(&data, n as u64)).await, n);
    }
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/v1/sessions/{sid}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(download(&s, &alice, "alice", "x/open.bin").await.1 == data);
}

// ---------------------------------------------------------------- shared spaces

#[tokio::test]
async fn shared_space_members_get_their_access_only() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let carol = user(&s, "carol").await;
    let (st, v) = call(
        &s,
        Method::POST,
        "/v1/admin/spaces",
        Some(ADMIN),
        Some(json!({"name": "team", "members": {"alice": "write", "bob": "read"}})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    let data = random_bytes(3000, 12);
    let v = create_session(
        &s,
        &alice,
        json!({"space": "team", "path": "docs/r.bin", "size": 3000}),
    )
    .await;
    assert_eq!(v["space"], json!("team"), "{v}");
    let sid = v["id"].as_str().unwrap().to_owned();
    let uid = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    ok_part(&part(&s, &alice, &uid, 1, data.clone()).await, 1);
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/v1/sessions/{sid}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["uploads"][0]["file"]["space"], json!("team"), "{v}");

    // Bob reads.
    let (st, v) = call(&s, Method::GET, "/v1/spaces/team/list/", Some(&bob), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["entries"][0]["name"], json!("docs"), "{v}");
    assert_eq!(v["entries"][0]["type"], json!("folder"), "{v}");
    let (st, v) = call(
        &s,
        Method::GET,
        "/v1/spaces/team/list/docs",
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["entries"][0]["name"], json!("r.bin"), "{v}");
    assert_eq!(v["entries"][0]["size"], json!(3000), "{v}");
    let (st, got) = download(&s, &bob, "team", "docs/r.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert!(got == data);
    // Bob does not write.
    let r = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&bob),
        Some(json!({"space": "team", "path": "docs/b.bin", "size": 10})),
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "team");
    let r = call(
        &s,
        Method::DELETE,
        "/v1/spaces/team/files/docs/r.bin",
        Some(&bob),
        None,
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "team");
    // Nor does he see alice's session in the team space.
    let r = call(
        &s,
        Method::GET,
        &format!("/v1/sessions/{sid}"),
        Some(&bob),
        None,
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", "no ");
    // Carol, not a member, neither reads nor writes.
    let r = call(&s, Method::GET, "/v1/spaces/team/list/", Some(&carol), None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "team");
    let r = call(
        &s,
        Method::GET,
        "/v1/spaces/team/files/docs/r.bin",
        Some(&carol),
        None,
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", "team");
    // The file survived bob's attempt; alice may delete it.
    assert!(download(&s, &alice, "team", "docs/r.bin").await.1 == data);
    let (st, _) = call(
        &s,
        Method::DELETE,
        "/v1/spaces/team/files/docs/r.bin",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(
        download(&s, &bob, "team", "docs/r.bin").await.0,
        StatusCode::NOT_FOUND
    );
}

// ---------------------------------------------------------------- ops

#[tokio::test]
async fn health_metrics_and_openapi() {
    let s = Server::start();
    for p in ["/healthz", "/readyz"] {
        let resp = http().get(format!("{}{p}", s.url)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{p}");
    }
    let alice = user(&s, "alice").await;
    let data = random_bytes(2000, 13);
    let v = create_session(&s, &alice, json!({"path": "m.bin", "size": 2000})).await;
    let sid = v["id"].as_str().unwrap().to_owned();
    let uid = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    ok_part(&part(&s, &alice, &uid, 1, data).await, 1);
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/v1/sessions/{sid}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");

    let resp = http()
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let received = text
        .lines()
        .find(|l| l.starts_with("ferry_bytes_received_total"))
        .unwrap_or_else(|| panic!("ferry_bytes_received_total in:\n{text}"));
    let n: f64 = received.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 2000.0, "{received}");
    let committed = text
        .lines()
        .find(|l| l.starts_with("ferry_sessions{state=\"committed\"}"))
        .unwrap_or_else(|| panic!("ferry_sessions{{state=\"committed\"}} in:\n{text}"));
    let n: f64 = committed.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{committed}");

    let (st, doc) = call(&s, Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(doc.is_object(), "valid JSON: {doc}");
    let paths = doc["paths"].as_object().expect("\"paths\" object");
    for p in [
        "/v1/sessions",
        "/v1/uploads/{uid}/parts/{n}",
        "/v1/sessions/{sid}/commit",
        "/v1/uploads/{uid}",
    ] {
        assert!(
            paths.contains_key(p),
            "openapi lists {p}: {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }

    let r = call(&s, Method::GET, "/definitely/not/a/route", None, None).await;
    assert_error(
        &r,
        StatusCode::NOT_FOUND,
        "not_found",
        "/definitely/not/a/route",
    );
    let r = call(&s, Method::GET, "/v1/definitely-not", Some(&alice), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found", "route");
}

/// A 507 is the client's quota, not a server fault: its message names the
/// quota and is not dressed up as an internal error.
#[tokio::test]
async fn quota_refusal_is_not_reported_as_an_internal_error() {
    let s = Server::start();
    let (_, r) = over_quota(&s).await;
    let msg = r.1["error"]["message"].as_str().unwrap();
    assert!(
        !msg.to_lowercase().contains("internal error"),
        "a quota refusal is labelled internal: {msg:?}"
    );
}

/// Re-sending an acknowledged part with a body that fails (too long, wrong
/// digest) never leaves status claiming bytes the server no longer has, and
/// the other parts are untouched.
#[tokio::test]
async fn a_failed_resend_of_a_part_keeps_the_acknowledged_part() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(N as usize, 14);
    let (sid, uid) = three_parts(&s, &alice, "a.bin").await;
    for n in [1, 2, 3] {
        ok_part(&part(&s, &alice, &uid, n, chunk(&data, n as u64)).await, n);
    }
    let mut long = chunk(&data, 2);
    long.extend_from_slice(&[0; 10]);
    let r = part(&s, &alice, &uid, 2, long).await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &P.to_string(),
    );
    let wrong = content_digest(b"x");
    let r = put(
        &s,
        &format!("/v1/uploads/{uid}/parts/1"),
        Some(&alice),
        &[("Content-Digest", &wrong)],
        vec![0xee; P as usize],
    )
    .await;
    assert_error(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "digest_mismatch",
        "mismatch",
    );
    // Part 3 was not touched; whatever else is still listed must be the original bytes.
    let (_, parts) = call(
        &s,
        Method::GET,
        &format!("/v1/uploads/{uid}/parts"),
        Some(&alice),
        None,
    )
    .await;
    for p in parts["parts"].as_array().unwrap() {
        let n = p["part"].as_u64().unwrap();
        // Parts sent without Content-Digest carry no per-part SHA-256.
        assert!(
            p["sha256"].is_null() || p["sha256"] == json!(sha256_hex(&chunk(&data, n))),
            "{parts}"
        );
    }
    // Nothing acknowledged was lost: every part is still listed with its
    // original digest, and the session commits to the original file.
    let listed = part_numbers(&s, &alice, &uid).await;
    assert_eq!(listed, vec![1, 2, 3], "{parts}");
    let v = status(&s, &alice, &uid).await;
    assert_eq!(v["received_bytes"], json!(N), "{v}");
    let r = call(
        &s,
        Method::POST,
        &format!("/v1/sessions/{sid}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(
        r.1["uploads"][0]["file"]["sha256"],
        json!(sha256_hex(&data))
    );
}

/// Two writes of the same bytes in flight at once: the second is refused
/// with 409 `conflict` while the first, held open, still completes.
#[tokio::test]
async fn overlapping_writes_in_flight_answer_409_conflict() {
    use futures::SinkExt;
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(N as usize, 15);
    let (sid, uid) = three_parts(&s, &alice, "a.bin").await;
    let first = chunk(&data, 1);
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let url = format!("{}/v1/uploads/{uid}/parts/1", s.url);
    let token = alice.clone();
    let held = tokio::spawn(async move {
        let resp = http()
            .put(url)
            .bearer_auth(token)
            .body(reqwest::Body::wrap_stream(rx))
            .send()
            .await
            .unwrap();
        decode(resp).await
    });
    tx.send(Ok(first[..1000].to_vec())).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The same part, and a range that overlaps it.
    let r = part(&s, &alice, &uid, 1, first.clone()).await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", "overlap");
    let r = put(
        &s,
        &format!("/v1/uploads/{uid}"),
        Some(&alice),
        &[("Content-Range", &format!("bytes 500-{}/{N}", P + 99))],
        vec![0xcc; (P + 100 - 500) as usize],
    )
    .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict", "overlap");
    // A disjoint part goes through meanwhile.
    ok_part(&part(&s, &alice, &uid, 2, chunk(&data, 2)).await, 2);
    tx.send(Ok(first[1000..].to_vec())).await.unwrap();
    drop(tx);
    let r = tokio::time::timeout(std::time::Duration::from_secs(20), held)
        .await
        .expect("the held write finishes")
        .unwrap();
    ok_part(&r, 1);
    ok_part(&part(&s, &alice, &uid, 3, chunk(&data, 3)).await, 3);
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/v1/sessions/{sid}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(download(&s, &alice, "alice", "a.bin").await.1 == data);
}
