//! The Veeva Vault file-staging dialect through a real server: the
//! documented flow, Vault's part rules, errors in Vault's format with
//! precise statuses, listing, paging, jobs and expiry. (Raw HTTP, as a
//! Vault client sends it, is also scripted in tests/clients/python/test_veeva.py.)

mod common;

use base64::Engine as _;
use common::*;
use md5::{Digest as _, Md5};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const API: &str = "/api/v25.1/services/file_staging";
const MIB: usize = 1024 * 1024;

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// One Vault call: the token is the whole `Authorization` value, as Vault
/// clients send it; `form` is sent form-urlencoded.
async fn vault(
    s: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    form: Option<&[(&str, &str)]>,
) -> (StatusCode, Value) {
    let mut rb = http().request(method, s.url_of(path));
    if let Some(t) = token {
        rb = rb.header("Authorization", t);
    }
    if let Some(f) = form {
        let body: String = f
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        rb = rb
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
    }
    decode(rb.send().await.unwrap()).await
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Creates a session; returns its `data`.
async fn create(s: &Server, token: &str, path: &str, size: usize, overwrite: bool) -> Value {
    let size = size.to_string();
    let ow = overwrite.to_string();
    let form = [("path", path), ("size", size.as_str()), ("overwrite", &ow)];
    let (st, v) = vault(
        s,
        Method::POST,
        &format!("{API}/upload"),
        Some(token),
        Some(&form),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["responseStatus"], "SUCCESS", "{v}");
    v["data"].clone()
}

/// Sends part `n` with `Content-MD5` when given.
async fn part(
    s: &Server,
    token: &str,
    id: &str,
    n: u32,
    data: &[u8],
    md5: Option<&str>,
) -> (StatusCode, Value) {
    let mut rb = http()
        .put(s.url_of(&format!("{API}/upload/{id}")))
        .header("Authorization", token)
        .header("Content-Type", "application/octet-stream")
        .header("X-VaultAPI-FilePartNumber", n.to_string())
        .body(data.to_vec());
    if let Some(m) = md5 {
        rb = rb.header("Content-MD5", m);
    }
    decode(rb.send().await.unwrap()).await
}

/// Part `n` must be accepted; returns its `data`.
async fn part_ok(s: &Server, token: &str, id: &str, n: u32, data: &[u8]) -> Value {
    let (st, v) = part(s, token, id, n, data, Some(&md5_hex(data))).await;
    assert_eq!(st, StatusCode::OK, "part {n}: {v}");
    assert_eq!(v["data"]["part_number"], n);
    assert_eq!(v["data"]["size"], data.len());
    assert_eq!(v["data"]["part_content_md5"], md5_hex(data));
    v["data"].clone()
}

async fn details(s: &Server, token: &str, id: &str) -> (StatusCode, Value) {
    vault(
        s,
        Method::GET,
        &format!("{API}/upload/{id}"),
        Some(token),
        None,
    )
    .await
}

/// A Vault failure of `kind`, with a message.
fn failure(v: &Value, kind: &str) {
    assert_eq!(v["responseStatus"], "FAILURE", "{v}");
    assert_eq!(v["errors"][0]["type"], kind, "{v}");
    assert!(
        !v["errors"][0]["message"].as_str().unwrap().is_empty(),
        "{v}"
    );
}

/// Milliseconds since the epoch of a Vault date, `2020-12-11T23:30:43.000Z`.
fn millis(v: &Value) -> i64 {
    let s = v.as_str().unwrap();
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    assert!(s.len() == 24 && s.ends_with('Z'), "{s}");
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + n(11, 13)) * 60 + n(14, 16)) * 60_000 + n(17, 19) * 1000 + n(20, 23)
}

fn id(data: &Value) -> String {
    data["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn veeva_documented_flow_lands_the_file_and_reports_the_job() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(2 * 5 * MIB + 12_345, 1);
    let d = create(&s, &alice, "/veeva/flow.bin", data.len(), false).await;
    assert_eq!(d["path"], "/veeva/flow.bin");
    assert_eq!(d["name"], "flow.bin");
    assert_eq!(d["owner"], "alice");
    assert_eq!(d["size"], data.len());
    assert_eq!(d["uploaded"], 0);
    assert_eq!(d["uploaded_parts"], 0);
    assert_eq!(d["overwrite"], false);
    assert_eq!(d["created_date"], d["last_uploaded_date"]);
    let created = d["created_date"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 24, "{created}");
    let sid = id(&d);

    // Part 1 with a hex MD5, part 2 with a base64 one, part 3 (shorter,
    // the last) with none: the answer still carries its MD5.
    let (p1, p2, p3) = (
        &data[..5 * MIB],
        &data[5 * MIB..10 * MIB],
        &data[10 * MIB..],
    );
    part_ok(&s, &alice, &sid, 1, p1).await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(p2));
    let (st, v) = part(&s, &alice, &sid, 2, p2, Some(&b64)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["part_content_md5"], md5_hex(p2));
    let (st, v) = part(&s, &alice, &sid, 3, p3, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["part_content_md5"], md5_hex(p3));
    assert_eq!(v["data"]["size"], p3.len());

    // The details, with a Bearer prefix this time (also accepted).
    let (st, v) = details(&s, &format!("Bearer {alice}"), &sid).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["uploaded_parts"], 3);
    assert_eq!(v["data"]["uploaded"], data.len());

    // Commit: the job is finished at once and says where the file is.
    let (st, v) = vault(
        &s,
        Method::POST,
        &format!("{API}/upload/{sid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let job = v["data"]["job_id"].as_str().unwrap().to_owned();
    let (st, v) = vault(
        &s,
        Method::GET,
        &format!("/api/v23.2/services/jobs/{job}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let j = &v["data"];
    assert_eq!(j["id"], job.as_str());
    assert_eq!(j["status"], "SUCCESS");
    assert_eq!(j["method"], "POST");
    assert_eq!(j["created_by"], "alice");
    assert_eq!(j["links"][0]["rel"], "self");
    assert_eq!(
        j["links"][0]["href"],
        format!("/api/v23.2/services/jobs/{job}")
    );
    assert!(j["run_end_date"].as_str().unwrap().ends_with('Z'));
    assert_eq!(j["file"]["space"], "alice");
    assert_eq!(j["file"]["path"], "veeva/flow.bin");
    assert_eq!(j["file"]["size"], data.len());
    assert_eq!(j["file"]["sha256"], sha256_hex(&data));
    assert!(j["file"]["id"].is_string());
    let (st, got) = download(&s, &alice, "alice", "veeva/flow.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(sha256_hex(&got), sha256_hex(&data));

    // Committing again names the same job; the session is no longer open.
    let (st, v) = vault(
        &s,
        Method::POST,
        &format!("{API}/upload/{sid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["job_id"], job.as_str());
    let (st, v) = details(&s, &alice, &sid).await;
    assert_eq!(st, StatusCode::CONFLICT);
    failure(&v, "OPERATION_NOT_ALLOWED");
}

#[tokio::test]
async fn veeva_parts_come_in_order_and_in_vaults_sizes() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(2 * 5 * MIB + 100, 2);
    let sid = id(&create(&s, &alice, "order.bin", data.len(), false).await);

    // Part 2 before part 1.
    let (st, v) = part(&s, &alice, &sid, 2, &data[5 * MIB..10 * MIB], None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    failure(&v, "OPERATION_NOT_ALLOWED");
    // A first part under 5 MiB that is not the whole file.
    let (st, v) = part(&s, &alice, &sid, 1, &data[..4 * MIB], None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    failure(&v, "INVALID_DATA");
    // A first part larger than the file.
    let small = id(&create(&s, &alice, "small.bin", 10, false).await);
    let (st, v) = part(&s, &alice, &small, 1, &data[..11], None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    failure(&v, "INVALID_DATA");

    part_ok(&s, &alice, &sid, 1, &data[..5 * MIB]).await;
    // Part 3 before part 2.
    let (st, v) = part(&s, &alice, &sid, 3, &data[10 * MIB..], None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    failure(&v, "OPERATION_NOT_ALLOWED");
    // Part 2 must be the size of part 1.
    let (st, v) = part(&s, &alice, &sid, 2, &random_bytes(6 * MIB, 7), None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    failure(&v, "INVALID_DATA");
    // Part 1 sent again with another size.
    let (st, v) = part(&s, &alice, &sid, 1, &data[..6 * MIB], None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    failure(&v, "INVALID_DATA");
    // Header rules: the part number is required and bounded; the length
    // is required (a chunked body has none).
    let url = s.url_of(&format!("{API}/upload/{sid}"));
    let r = http()
        .put(&url)
        .header("Authorization", &alice)
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    let (st, v) = decode(r).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    failure(&v, "PARAMETER_REQUIRED");
    let (st, v) = part(&s, &alice, &sid, 2001, b"x", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    failure(&v, "INVALID_DATA");
    let chunks = futures::stream::iter(vec![Ok::<_, std::io::Error>(vec![1u8; 100])]);
    let r = http()
        .put(&url)
        .header("Authorization", &alice)
        .header("X-VaultAPI-FilePartNumber", "2")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let (st, v) = decode(r).await;
    assert_eq!(st, StatusCode::LENGTH_REQUIRED, "{v}");
    failure(&v, "PARAMETER_REQUIRED");
    // A Content-MD5 that is not one.
    let (st, v) = part(&s, &alice, &sid, 2, &data[5 * MIB..10 * MIB], Some("xyz")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    failure(&v, "INVALID_DATA");
    // Committing with parts missing is refused and keeps the session.
    let (st, v) = vault(
        &s,
        Method::POST,
        &format!("{API}/upload/{sid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    failure(&v, "OPERATION_NOT_ALLOWED");

    // Every refusal left part 1 as it was.
    let (st, v) = details(&s, &alice, &sid).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["uploaded_parts"], 1);
    assert_eq!(v["data"]["uploaded"], 5 * MIB);
    part_ok(&s, &alice, &sid, 2, &data[5 * MIB..10 * MIB]).await;
    part_ok(&s, &alice, &sid, 3, &data[10 * MIB..]).await;
    // Past the end.
    let (st, v) = part(&s, &alice, &sid, 4, b"x", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    failure(&v, "INVALID_DATA");
    let (st, _) = vault(
        &s,
        Method::POST,
        &format!("{API}/upload/{sid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(download(&s, &alice, "alice", "order.bin").await.1, data);
    // A one-part file smaller than 5 MiB.
    part_ok(&s, &alice, &small, 1, &data[..10]).await;
    let (st, _) = vault(
        &s,
        Method::POST,
        &format!("{API}/upload/{small}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        download(&s, &alice, "alice", "small.bin").await.1,
        &data[..10]
    );
}

#[tokio::test]
async fn veeva_md5_mismatch_keeps_nothing_and_a_resent_part_replaces_the_old() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(5 * MIB + 1000, 3);
    let sid = id(&create(&s, &alice, "/md5/r.bin", data.len(), false).await);
    let wrong = md5_hex(b"something else");

    // A first send whose MD5 does not match keeps nothing.
    let (st, v) = part(&s, &alice, &sid, 1, &data[..5 * MIB], Some(&wrong)).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    failure(&v, "INVALID_DATA");
    let (_, v) = details(&s, &alice, &sid).await;
    assert_eq!(v["data"]["uploaded_parts"], 0);
    assert_eq!(v["data"]["uploaded"], 0);

    part_ok(&s, &alice, &sid, 1, &data[..5 * MIB]).await;
    let stale = random_bytes(1000, 99);
    part_ok(&s, &alice, &sid, 2, &stale).await;
    // A resend whose MD5 does not match leaves the earlier part in place.
    let tail = &data[5 * MIB..];
    let (st, v) = part(&s, &alice, &sid, 2, tail, Some(&wrong)).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (st, v) = vault(
        &s,
        Method::GET,
        &format!("{API}/upload/{sid}/parts"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"][1]["part_content_md5"], md5_hex(&stale));
    // A good resend replaces it.
    part_ok(&s, &alice, &sid, 2, tail).await;
    let (_, v) = details(&s, &alice, &sid).await;
    assert_eq!(v["data"]["uploaded_parts"], 2);
    assert_eq!(v["data"]["uploaded"], data.len());
    let (st, _) = vault(
        &s,
        Method::POST,
        &format!("{API}/upload/{sid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(download(&s, &alice, "alice", "md5/r.bin").await.1, data);
}

#[tokio::test]
async fn veeva_list_parts_pages_with_an_opaque_cursor() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(3 * 5 * MIB, 4);
    let sid = id(&create(&s, &alice, "paged.bin", data.len(), false).await);
    for (i, chunk) in data.chunks(5 * MIB).enumerate() {
        part_ok(&s, &alice, &sid, i as u32 + 1, chunk).await;
    }
    // Default: everything in one page, no next_page.
    let (st, v) = vault(
        &s,
        Method::GET,
        &format!("{API}/upload/{sid}/parts"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["responseDetails"]["limit"], 1000);
    assert_eq!(v["responseDetails"]["size"], 3);
    assert!(v["responseDetails"].get("next_page").is_none(), "{v}");
    assert_eq!(v["data"][2]["part_content_md5"], md5_hex(&data[10 * MIB..]));
    // limit=2: follow next_page (an absolute URL) to the end.
    let mut next = Some(s.url_of(&format!("{API}/upload/{sid}/parts?limit=2")));
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(url) = next {
        let (st, v) = vault(&s, Method::GET, &url, Some(&alice), None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["responseDetails"]["limit"], 2);
        for p in v["data"].as_array().unwrap() {
            assert_eq!(p["size"], 5 * MIB);
            seen.push(p["part_number"].as_u64().unwrap());
        }
        next = v["responseDetails"]["next_page"]
            .as_str()
            .map(str::to_owned);
        if let Some(u) = &next {
            assert!(u.starts_with(&s.url) && u.contains("cursor="), "{u}");
        }
        pages += 1;
    }
    assert_eq!(seen, [1, 2, 3]);
    assert_eq!(pages, 2);
    for bad in ["limit=0", "limit=1001", "limit=x", "cursor=bogus"] {
        let (st, v) = vault(
            &s,
            Method::GET,
            &format!("{API}/upload/{sid}/parts?{bad}"),
            Some(&alice),
            None,
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        failure(&v, "INVALID_DATA");
    }
}

#[tokio::test]
async fn veeva_listing_admins_see_every_session_users_their_own() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let a = id(&create(&s, &alice, "/a.bin", 10, false).await);
    let b = id(&create(&s, &bob, "/b.bin", 10, false).await);
    // An admin naming an existing space uploads there; a first segment
    // that names no space is a folder of the admin's home.
    let adm = create(&s, ADMIN, "/alice/adm.bin", 3, true).await;
    assert_eq!(adm["path"], "/alice/adm.bin");
    assert_eq!(adm["overwrite"], true);
    let home = create(&s, ADMIN, "/nospace/h.bin", 2, false).await;
    // A native session is not a Vault session.
    create_session(
        &s,
        &alice,
        serde_json::json!({"path": "native.bin", "size": 1}),
    )
    .await;
    let gone = id(&create(&s, &alice, "/gone.bin", 10, false).await);
    let (st, v) = vault(
        &s,
        Method::DELETE,
        &format!("{API}/upload/{gone}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["responseStatus"], "SUCCESS");

    let ids = |v: &Value| {
        let mut ids: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let list = |t: String| {
        let s = &s;
        async move { vault(s, Method::GET, &format!("{API}/upload"), Some(&t), None).await }
    };
    let (st, v) = list(alice.clone()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(ids(&v), std::slice::from_ref(&a));
    assert_eq!(v["data"][0]["owner"], "alice");
    assert_eq!(ids(&list(bob.clone()).await.1), std::slice::from_ref(&b));
    let (_, v) = list(ADMIN.to_owned()).await;
    assert_eq!(ids(&v), sorted(vec![a, b, id(&adm), id(&home)]), "{v}");

    // The admin's uploads land where the rule says.
    part_ok(&s, ADMIN, &id(&adm), 1, b"adm").await;
    part_ok(&s, ADMIN, &id(&home), 1, b"hh").await;
    for d in [&adm, &home] {
        let (st, v) = vault(
            &s,
            Method::POST,
            &format!("{API}/upload/{}", id(d)),
            Some(ADMIN),
            None,
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    assert_eq!(download(&s, &alice, "alice", "adm.bin").await.1, b"adm");
    assert_eq!(download(&s, ADMIN, "admin", "nospace/h.bin").await.1, b"hh");
}

#[tokio::test]
async fn veeva_errors_come_in_vaults_format_with_precise_statuses() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let data = random_bytes(5 * MIB + 10, 6);
    let sid = id(&create(&s, &alice, "/err/e.bin", data.len(), false).await);
    part_ok(&s, &alice, &sid, 1, &data[..5 * MIB]).await;
    let session = format!("{API}/upload/{sid}");

    // No token, a wrong token.
    let (st, v) = vault(&s, Method::GET, &format!("{API}/upload"), None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    failure(&v, "INVALID_SESSION_ID");
    let (st, v) = vault(
        &s,
        Method::GET,
        &session,
        Some("fy_0000000000000000_00"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    failure(&v, "INVALID_SESSION_ID");
    let (st, v) = part(&s, "nonsense", &sid, 2, &data[5 * MIB..], None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    failure(&v, "INVALID_SESSION_ID");

    // Another user's session id is no session at all, whatever the call.
    for (method, path) in [
        (Method::GET, session.clone()),
        (Method::POST, session.clone()),
        (Method::DELETE, session.clone()),
        (Method::GET, format!("{session}/parts")),
        (Method::GET, format!("/api/v25.1/services/jobs/{sid}")),
    ] {
        let (st, v) = vault(&s, method.clone(), &path, Some(&bob), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path}: {v}");
        failure(&v, "MALFORMED_URL");
    }
    let (st, v) = part(&s, &bob, &sid, 2, &data[5 * MIB..], None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    failure(&v, "MALFORMED_URL");
    // Unknown ids and jobs; a job before its commit.
    let (st, v) = details(&s, &alice, "0123456789abcdef0123456789abcdef").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    failure(&v, "MALFORMED_URL");
    let (st, v) = vault(
        &s,
        Method::GET,
        &format!("/api/v25.1/services/jobs/{sid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    failure(&v, "MALFORMED_URL");

    // An oversize part is refused before its bytes are read; the client,
    // still sending, reads the answer.
    let big = vec![7u8; 50 * MIB + 1];
    let (st, v) = part(&s, &alice, &sid, 2, &big, None).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    failure(&v, "INVALID_DATA");

    // Routes: a bad version, an unknown resource, a method not supported.
    let (st, v) = vault(
        &s,
        Method::GET,
        "/api/25.1/services/file_staging/upload",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    failure(&v, "MALFORMED_URL");
    let (st, v) = vault(
        &s,
        Method::GET,
        "/api/v25.1/services/nothing",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    failure(&v, "MALFORMED_URL");
    let (st, v) = vault(
        &s,
        Method::PATCH,
        &format!("{API}/upload"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    failure(&v, "METHOD_NOT_SUPPORTED");

    // Create: missing and bad parameters.
    let up = format!("{API}/upload");
    let (st, v) = vault(
        &s,
        Method::POST,
        &up,
        Some(&alice),
        Some(&[("path", "/x.bin")]),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    failure(&v, "PARAMETER_REQUIRED");
    let (st, v) = vault(&s, Method::POST, &up, Some(&alice), Some(&[("size", "1")])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    failure(&v, "PARAMETER_REQUIRED");
    let (st, v) = vault(&s, Method::POST, &up, Some(&alice), None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    failure(&v, "PARAMETER_REQUIRED");
    let (st, v) = vault(
        &s,
        Method::POST,
        &up,
        Some(&alice),
        Some(&[("path", "/../bob/x"), ("size", "1")]),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    failure(&v, "INVALID_DATA");
    let (st, v) = vault(
        &s,
        Method::POST,
        &up,
        Some(&alice),
        Some(&[("path", "/x"), ("size", "lots")]),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    failure(&v, "INVALID_DATA");
    let too_big = (2000u64 * 50 * MIB as u64 + 1).to_string();
    let (st, v) = vault(
        &s,
        Method::POST,
        &up,
        Some(&alice),
        Some(&[("path", "/x"), ("size", &too_big)]),
    )
    .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    failure(&v, "EXCEEDS_FILE_MAX_SIZE");
    // A non-admin naming another user's space stays in their own.
    let mine = create(&s, &bob, "/alice/x.bin", 1, false).await;
    part_ok(&s, &bob, &id(&mine), 1, b"b").await;
    let (st, _) = vault(
        &s,
        Method::POST,
        &format!("{API}/upload/{}", id(&mine)),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(download(&s, &bob, "bob", "alice/x.bin").await.1, b"b");

    // A name clash without overwrite: refused at commit, the session kept;
    // with overwrite the file is replaced.
    let first = id(&create(&s, &alice, "/same.txt", 2, false).await);
    part_ok(&s, &alice, &first, 1, b"v1").await;
    vault(
        &s,
        Method::POST,
        &format!("{API}/upload/{first}"),
        Some(&alice),
        None,
    )
    .await;
    let clash = id(&create(&s, &alice, "/same.txt", 2, false).await);
    part_ok(&s, &alice, &clash, 1, b"v2").await;
    let (st, v) = vault(
        &s,
        Method::POST,
        &format!("{API}/upload/{clash}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    failure(&v, "OPERATION_NOT_ALLOWED");
    let (st, v) = details(&s, &alice, &clash).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"]["uploaded_parts"], 1);
    let over = id(&create(&s, &alice, "/same.txt", 2, true).await);
    part_ok(&s, &alice, &over, 1, b"v3").await;
    let (st, _) = vault(
        &s,
        Method::POST,
        &format!("{API}/upload/{over}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(download(&s, &alice, "alice", "same.txt").await.1, b"v3");

    // After all that, alice's first session is as it was.
    let (st, v) = details(&s, &alice, &sid).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["uploaded_parts"], 1);
    assert_eq!(v["data"]["uploaded"], 5 * MIB);

    // Abort: SUCCESS (twice), then the session is gone.
    for _ in 0..2 {
        let (st, v) = vault(&s, Method::DELETE, &session, Some(&alice), None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let (st, v) = details(&s, &alice, &sid).await;
    assert_eq!(st, StatusCode::GONE);
    failure(&v, "OPERATION_NOT_ALLOWED");
    let (st, v) = part(&s, &alice, &sid, 2, &data[5 * MIB..], None).await;
    assert_eq!(st, StatusCode::GONE);
    failure(&v, "OPERATION_NOT_ALLOWED");
}

#[tokio::test]
async fn veeva_sessions_expire_with_the_servers_maximum() {
    let s = Server::start_with(&[("FERRY_MAX_EXPIRY", "2")]);
    let alice = user(&s, "alice").await;
    let d = create(&s, &alice, "/late.bin", 10, false).await;
    let sid = id(&d);
    let life = millis(&d["expiration_date"]) - millis(&d["created_date"]);
    assert_eq!(life, 2000, "{d}");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (st, v) = part(&s, &alice, &sid, 1, b"0123456789", None).await;
    assert_eq!(st, StatusCode::GONE, "{v}");
    failure(&v, "OPERATION_NOT_ALLOWED");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    let (st, v) = details(&s, &alice, &sid).await;
    assert_eq!(st, StatusCode::GONE);
    failure(&v, "OPERATION_NOT_ALLOWED");
    let (st, v) = vault(
        &s,
        Method::POST,
        &format!("{API}/upload/{sid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::GONE, "{v}");
    let (st, v) = vault(
        &s,
        Method::GET,
        &format!("{API}/upload"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"], serde_json::json!([]));
}

/// The last part sent again after the commit answers the same part.
#[tokio::test]
async fn veeva_part_sent_again_after_the_commit_answers_the_same_part() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(1000, 32);
    let d = create(&s, &alice, "/veeva/again.bin", data.len(), false).await;
    let sid = id(&d);
    let first = part_ok(&s, &alice, &sid, 1, &data).await;
    let (st, v) = vault(
        &s,
        Method::POST,
        &format!("{API}/upload/{sid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["responseStatus"], "SUCCESS", "{v}");
    let again = part_ok(&s, &alice, &sid, 1, &data).await;
    assert_eq!(again, first);
}

#[tokio::test]
async fn veeva_keeps_the_path_as_sent_out_of_the_files_metadata() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let d = create(&s, &alice, "/veeva/m.bin", 10, false).await;
    assert_eq!(d["path"], "/veeva/m.bin");
    let sid = id(&d);
    part_ok(&s, &alice, &sid, 1, b"0123456789").await;
    let (st, v) = details(&s, &alice, &sid).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["path"], "/veeva/m.bin", "Vault still reads it");
    let (st, v) = vault(
        &s,
        Method::POST,
        &format!("{API}/upload/{sid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = call(&s, Method::GET, "/v1/sessions", Some(&alice), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let nid = v["sessions"][0]["id"].as_str().unwrap().to_owned();
    let (st, v) = call(
        &s,
        Method::GET,
        &format!("/v1/sessions/{nid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["uploads"][0]["file"]["path"], "veeva/m.bin", "{v}");
    assert_eq!(v["uploads"][0]["file"]["metadata"], Value::Null, "{v}");
}
