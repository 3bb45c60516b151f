//! tus 1.0 and the IETF draft through a real server, request by request.
//! (Real client libraries — tuspy, tus-js-client, Uppy in Chromium — are
//! exercised by tests/clients/.)

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha1::Digest as _;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");
const OCTETS: (&str, &str) = ("Content-Type", "application/offset+octet-stream");

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn offset(&self) -> u64 {
        self.header("upload-offset")
            .unwrap_or_else(|| panic!("no Upload-Offset in {:?} {}", self.status, self.body))
            .parse()
            .unwrap()
    }

    fn location(&self) -> String {
        self.header("location")
            .unwrap_or_else(|| panic!("no Location in {:?} {}", self.status, self.body))
            .to_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn req(
    s: &Server,
    method: Method,
    url: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let mut rb = http()
        .request(method, s.url_of(url))
        .bearer_auth(token)
        .body(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    Reply {
        status: r.status(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

fn metadata(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k} {}", B64.encode(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Creates a tus upload; returns its URL.
async fn create(s: &Server, token: &str, len: u64, meta: &[(&str, &str)]) -> String {
    let len = len.to_string();
    let meta = metadata(meta);
    let r = creation(
        s,
        token,
        &[TUS, ("Upload-Length", &len), ("Upload-Metadata", &meta)],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.header("upload-expires").is_some());
    r.location()
}

/// A `POST` to the creation URL.
async fn creation(s: &Server, token: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    req(s, Method::POST, "/tus/", token, headers, body).await
}

async fn patch(
    s: &Server,
    token: &str,
    url: &str,
    at: u64,
    data: &[u8],
    extra: &[(&str, &str)],
) -> Reply {
    let at = at.to_string();
    let mut headers = vec![TUS, OCTETS, ("Upload-Offset", at.as_str())];
    headers.extend_from_slice(extra);
    req(s, Method::PATCH, url, token, &headers, data.to_vec()).await
}

async fn head(s: &Server, token: &str, url: &str) -> Reply {
    req(s, Method::HEAD, url, token, &[TUS], vec![]).await
}

#[tokio::test]
async fn tus_upload_in_chunks_lands_at_its_metadata_path() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(3 << 20, 1);
    let url = create(
        &s,
        &alice,
        data.len() as u64,
        &[
            ("filename", "ignored.bin"),
            ("path", "docs/report.bin"),
            ("filetype", "application/x-test"),
        ],
    )
    .await;
    let mut at = 0;
    for chunk in data.chunks(1 << 20) {
        let r = patch(&s, &alice, &url, at, chunk, &[]).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        at += chunk.len() as u64;
        assert_eq!(r.offset(), at);
    }
    let h = head(&s, &alice, &url).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.offset(), data.len() as u64);
    assert_eq!(h.header("cache-control"), Some("no-store"));
    let (st, got) = download(&s, &alice, "alice", "docs/report.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    let r = http()
        .get(s.url_of("/v1/spaces/alice/files/docs/report.bin"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-test");
}

#[tokio::test]
async fn tus_wrong_offset_is_409_and_changes_nothing() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let url = create(&s, &alice, 10, &[("filename", "a.txt")]).await;
    assert_eq!(
        patch(&s, &alice, &url, 0, b"hello", &[]).await.status,
        StatusCode::NO_CONTENT
    );
    let r = patch(&s, &alice, &url, 3, b"XXXXXXX", &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.body.contains("offset is 5"), "{}", r.body);
    assert_eq!(head(&s, &alice, &url).await.offset(), 5);
    assert_eq!(
        patch(&s, &alice, &url, 5, b"world", &[]).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        download(&s, &alice, "alice", "a.txt").await.1,
        b"helloworld"
    );
}

#[tokio::test]
async fn tus_checksum_mismatch_is_460_and_the_offset_stays() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let url = create(&s, &alice, 8, &[("filename", "c.txt")]).await;
    let wrong = format!("sha1 {}", B64.encode(sha1::Sha1::digest(b"nope")));
    let r = patch(&s, &alice, &url, 0, b"abcd", &[("Upload-Checksum", &wrong)]).await;
    assert_eq!(r.status.as_u16(), 460, "{}", r.body);
    assert_eq!(head(&s, &alice, &url).await.offset(), 0);
    let right = format!("md5 {}", B64.encode(md5::Md5::digest(b"abcd")));
    let r = patch(&s, &alice, &url, 0, b"abcd", &[("Upload-Checksum", &right)]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = patch(
        &s,
        &alice,
        &url,
        4,
        b"efgh",
        &[("Upload-Checksum", "crc32 AAAA")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(head(&s, &alice, &url).await.offset(), 4);
    let sha1 = format!("sha1 {}", B64.encode(sha1::Sha1::digest(b"efgh")));
    let r = patch(&s, &alice, &url, 4, b"efgh", &[("Upload-Checksum", &sha1)]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(download(&s, &alice, "alice", "c.txt").await.1, b"abcdefgh");
}

/// A creation that carries the whole file is one step: committed in its
/// 201, or refused with nothing left behind (its client never learnt an
/// address to resume).
#[tokio::test]
async fn tus_creation_with_the_whole_file_commits_at_once_or_leaves_nothing() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let meta = metadata(&[("filename", "whole.txt")]);
    let sha1_of = |b: &[u8]| format!("sha1 {}", B64.encode(sha1::Sha1::digest(b)));
    let (wrong, right) = (sha1_of(b"nope"), sha1_of(b"abcdef"));
    let headers = |checksum| {
        [
            TUS,
            OCTETS,
            ("Upload-Length", "6"),
            ("Upload-Metadata", meta.as_str()),
            ("Upload-Checksum", checksum),
        ]
    };
    let r = creation(&s, &alice, &headers(&wrong), b"abcdef".to_vec()).await;
    assert_eq!(r.status.as_u16(), 460, "{}", r.body);
    assert_eq!(
        r.header("location"),
        None,
        "no address for a refused creation"
    );
    assert_eq!(open_sessions(&s, &alice).await, 0, "nothing left open");

    let r = creation(&s, &alice, &headers(&right), b"abcdef".to_vec()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.offset(), 6);
    assert_eq!(
        download(&s, &alice, "alice", "whole.txt").await.1,
        b"abcdef"
    );
    // The address it gave answers for the committed upload.
    let h = head(&s, &alice, &r.location()).await;
    assert_eq!(h.offset(), 6);
    assert_eq!(h.header("upload-length"), Some("6"));
}

/// Raw HTTP/1.1 over TCP, for what reqwest cannot send (trailers, a body
/// that stalls).
fn raw(s: &Server) -> std::net::TcpStream {
    let addr = s.url.trim_start_matches("http://");
    let c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c
}

fn read_status(c: &mut std::net::TcpStream) -> (u16, String) {
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before an answer");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_string();
    (text[9..12].parse().unwrap(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn tus_checksum_in_a_trailer_is_checked_after_the_body() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let url = create(&s, &alice, 8, &[("filename", "t.txt")]).await;
    let path = url.trim_start_matches(&s.url).to_owned();
    let send = |at: u64, data: &'static [u8], sum: String| {
        let mut c = raw(&s);
        let req = format!(
            "PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\nTus-Resumable: 1.0.0\r\n\
             Content-Type: application/offset+octet-stream\r\nUpload-Offset: {at}\r\n\
             Transfer-Encoding: chunked\r\nTrailer: Upload-Checksum\r\n\r\n\
             {:x}\r\n",
            data.len()
        );
        c.write_all(req.as_bytes()).unwrap();
        c.write_all(data).unwrap();
        c.write_all(format!("\r\n0\r\nUpload-Checksum: {sum}\r\n\r\n").as_bytes())
            .unwrap();
        read_status(&mut c).0
    };
    let sha = |d: &[u8]| format!("sha256 {}", B64.encode(sha2::Sha256::digest(d)));
    let st = tokio::task::block_in_place(|| send(0, b"abcd", sha(b"zzzz")));
    assert_eq!(st, 460);
    assert_eq!(head(&s, &alice, &url).await.offset(), 0);
    let st = tokio::task::block_in_place(|| send(0, b"abcd", sha(b"abcd")));
    assert_eq!(st, 204);
    assert_eq!(head(&s, &alice, &url).await.offset(), 4);
    // Announced, and no trailer after the body (as nginx passes such a
    // request on: the header kept, the trailer dropped): refused, nothing
    // kept.
    let (st, text) = tokio::task::block_in_place(|| {
        let mut c = raw(&s);
        let req = format!(
            "PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\nTus-Resumable: 1.0.0\r\n\
             Content-Type: application/offset+octet-stream\r\nUpload-Offset: 4\r\n\
             Trailer: Upload-Checksum\r\nContent-Length: 4\r\n\r\nefgh"
        );
        c.write_all(req.as_bytes()).unwrap();
        read_status(&mut c)
    });
    assert_eq!(st, 400, "{text}");
    assert_eq!(head(&s, &alice, &url).await.offset(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn tus_head_takes_over_from_a_stalled_patch_and_keeps_its_bytes() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let total = 4u64 << 20;
    let data = random_bytes(total as usize, 7);
    let url = create(&s, &alice, total, &[("filename", "stall.bin")]).await;
    let path = url.trim_start_matches(&s.url).to_owned();
    // A PATCH that announces every byte, sends 1 MiB, then goes silent
    // (a client whose network died).
    let mut c = raw(&s);
    let head_part = format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: {total}\r\n\r\n"
    );
    c.write_all(head_part.as_bytes()).unwrap();
    c.write_all(&data[..1 << 20]).unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;

    let t = Instant::now();
    let h = head(&s, &alice, &url).await;
    assert_eq!(h.status, StatusCode::OK);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "HEAD waited {:?}",
        t.elapsed()
    );
    let kept = h.offset();
    assert!(kept > 0 && kept <= 1 << 20, "kept {kept}");
    // The stalled request is told it lost the upload.
    let (code, _) = tokio::task::block_in_place(|| read_status(&mut c));
    assert_eq!(code, 409);
    // The client resumes where the server says, and the file is whole.
    let r = patch(&s, &alice, &url, kept, &data[kept as usize..], &[]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let (_, got) = download(&s, &alice, "alice", "stall.bin").await;
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
}

#[tokio::test]
async fn tus_concatenation_joins_partials_into_one_file_and_frees_them() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(5_000_000, 3);
    let mut urls = Vec::new();
    for piece in data.chunks(1_700_000) {
        let len = piece.len().to_string();
        let r = creation(
            &s,
            &alice,
            &[TUS, ("Upload-Length", &len), ("Upload-Concat", "partial")],
            vec![],
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let url = r.location();
        assert_eq!(
            patch(&s, &alice, &url, 0, piece, &[]).await.status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            head(&s, &alice, &url).await.header("upload-concat"),
            Some("partial")
        );
        urls.push(url);
    }
    // A partial is never a file by itself.
    let (_, listing) = call(
        &s,
        Method::GET,
        "/v1/spaces/alice/list/",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(listing["entries"].as_array().unwrap().len(), 0, "{listing}");
    let fin = format!("final;{}", urls.join(" "));
    let meta = metadata(&[("filename", "joined.bin")]);
    let r = creation(
        &s,
        &alice,
        &[TUS, ("Upload-Concat", &fin), ("Upload-Metadata", &meta)],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let final_url = r.location();
    let h = head(&s, &alice, &final_url).await;
    assert_eq!(h.offset(), data.len() as u64);
    assert!(h.header("upload-concat").unwrap().starts_with("final;"));
    assert_eq!(
        patch(&s, &alice, &final_url, 0, b"x", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    let (_, got) = download(&s, &alice, "alice", "joined.bin").await;
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    for u in &urls {
        assert_eq!(head(&s, &alice, u).await.status, StatusCode::GONE);
    }
}

#[tokio::test]
async fn tus_deferred_length_is_fixed_by_a_later_patch() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let meta = metadata(&[("filename", "d.txt")]);
    let r = creation(
        &s,
        &alice,
        &[
            TUS,
            ("Upload-Defer-Length", "1"),
            ("Upload-Metadata", &meta),
        ],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let url = r.location();
    assert_eq!(
        patch(&s, &alice, &url, 0, b"abc", &[]).await.status,
        StatusCode::NO_CONTENT
    );
    let h = head(&s, &alice, &url).await;
    assert_eq!(h.header("upload-defer-length"), Some("1"));
    let r = patch(&s, &alice, &url, 3, b"def", &[("Upload-Length", "6")]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(
        head(&s, &alice, &url).await.header("upload-length"),
        Some("6")
    );
    assert_eq!(download(&s, &alice, "alice", "d.txt").await.1, b"abcdef");
}

#[tokio::test]
async fn tus_protocol_errors_name_the_problem() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let r = creation(&s, &alice, &[("Upload-Length", "5")], vec![]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.header("tus-version"), Some("1.0.0"));
    let url = create(&s, &alice, 5, &[("filename", "e.txt")]).await;
    let r = req(
        &s,
        Method::PATCH,
        &url,
        &alice,
        &[TUS, ("Upload-Offset", "0")],
        b"hello".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.body);
    // Another user's upload does not exist for them.
    assert_eq!(head(&s, &bob, &url).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        patch(&s, &bob, &url, 0, b"hello", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    // A path that escapes is refused before any byte is sent.
    let meta = metadata(&[("path", "../etc/passwd")]);
    let r = creation(
        &s,
        &alice,
        &[TUS, ("Upload-Length", "5"), ("Upload-Metadata", &meta)],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = creation(
        &s,
        &alice,
        &[TUS, ("Upload-Length", "99999999999999999")],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    // Termination.
    let r = req(&s, Method::DELETE, &url, &alice, &[TUS], vec![]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(head(&s, &alice, &url).await.status, StatusCode::GONE);
}

#[tokio::test]
async fn tus_method_override_and_creation_with_upload() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let meta = metadata(&[("filename", "w.txt")]);
    let r = creation(
        &s,
        &alice,
        &[
            TUS,
            OCTETS,
            ("Upload-Length", "10"),
            ("Upload-Metadata", &meta),
        ],
        b"01234".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.offset(), 5);
    let url = r.location();
    let r = req(
        &s,
        Method::POST,
        &url,
        &alice,
        &[
            TUS,
            OCTETS,
            ("Upload-Offset", "5"),
            ("X-HTTP-Method-Override", "PATCH"),
        ],
        b"56789".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(
        download(&s, &alice, "alice", "w.txt").await.1,
        b"0123456789"
    );
}

#[tokio::test]
async fn tus_conflict_fail_refuses_an_existing_path_at_creation() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let url = create(&s, &alice, 2, &[("filename", "same.txt")]).await;
    patch(&s, &alice, &url, 0, b"v1", &[]).await;
    let meta = metadata(&[("filename", "same.txt"), ("conflict", "fail")]);
    let r = creation(
        &s,
        &alice,
        &[TUS, ("Upload-Length", "2"), ("Upload-Metadata", &meta)],
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    // The default policy renames.
    let url = create(&s, &alice, 2, &[("filename", "same.txt")]).await;
    patch(&s, &alice, &url, 0, b"v2", &[]).await;
    assert_eq!(download(&s, &alice, "alice", "same.txt").await.1, b"v1");
    assert_eq!(download(&s, &alice, "alice", "same (1).txt").await.1, b"v2");
}

const DRAFT: (&str, &str) = ("Upload-Draft-Interop-Version", "8");

async fn draft_append(
    s: &Server,
    token: &str,
    url: &str,
    at: u64,
    complete: &str,
    data: &[u8],
) -> Reply {
    let at = at.to_string();
    let headers = [
        DRAFT,
        ("Content-Type", "application/partial-upload"),
        ("Upload-Offset", at.as_str()),
        ("Upload-Complete", complete),
    ];
    req(s, Method::PATCH, url, token, &headers, data.to_vec()).await
}

#[tokio::test]
async fn draft_upload_create_append_complete_and_mismatch() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let r = req(
        &s,
        Method::POST,
        "/tus/?path=draft/one.bin",
        &alice,
        &[DRAFT, ("Upload-Complete", "?0"), ("Upload-Length", "9")],
        b"abc".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.header("upload-complete"), Some("?0"));
    assert!(r.header("upload-limit").unwrap().contains("max-size="));
    let url = r.location();

    let h = req(&s, Method::HEAD, &url, &alice, &[DRAFT], vec![]).await;
    assert_eq!(h.status, StatusCode::NO_CONTENT);
    assert_eq!(h.offset(), 3);
    assert_eq!(h.header("upload-complete"), Some("?0"));
    assert_eq!(h.header("upload-length"), Some("9"));
    assert_eq!(h.header("cache-control"), Some("no-store"));

    let r = draft_append(&s, &alice, &url, 1, "?0", b"zz").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let p = r.json();
    assert_eq!(
        p["type"],
        "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
    );
    assert_eq!(p["expected-offset"], 3);
    assert_eq!(p["provided-offset"], 1);

    let r = draft_append(&s, &alice, &url, 3, "?0", b"def").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(r.header("upload-complete"), Some("?0"));
    let r = draft_append(&s, &alice, &url, 6, "?1", b"ghi").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.header("upload-complete"), Some("?1"));
    assert_eq!(r.json()["path"], "draft/one.bin");
    assert_eq!(r.json()["sha256"], sha256_hex(b"abcdefghi"));
    assert!(r.header("repr-digest").unwrap().starts_with("sha-256=:"));
    assert_eq!(
        download(&s, &alice, "alice", "draft/one.bin").await.1,
        b"abcdefghi"
    );

    // Appending bytes to a completed upload is an inconsistent length.
    let r = draft_append(&s, &alice, &url, 9, "?1", b"j").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        r.json()["type"],
        "https://iana.org/assignments/http-problem-types#inconsistent-upload-length"
    );
}

#[tokio::test]
async fn draft_one_request_upload_and_cancel() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let r = creation(
        &s,
        &alice,
        &[
            DRAFT,
            ("Upload-Complete", "?1"),
            ("Content-Disposition", "attachment; filename=\"whole.txt\""),
        ],
        b"all at once".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.header("location").is_some());
    assert_eq!(
        download(&s, &alice, "alice", "whole.txt").await.1,
        b"all at once"
    );

    let r = req(
        &s,
        Method::POST,
        "/tus/?path=gone.txt",
        &alice,
        &[DRAFT, ("Upload-Complete", "?0")],
        b"x".to_vec(),
    )
    .await;
    let url = r.location();
    let r = req(&s, Method::DELETE, &url, &alice, &[DRAFT], vec![]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let h = req(&s, Method::HEAD, &url, &alice, &[DRAFT], vec![]).await;
    assert_eq!(h.status, StatusCode::GONE);
}

/// A one-request draft upload whose digest does not match is refused as
/// processed (`Upload-Complete: ?1`: not to be resumed), and leaves no
/// session open.
#[tokio::test]
async fn draft_one_request_upload_with_a_wrong_digest_is_refused_and_leaves_nothing() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let wrong = format!(
        "sha-256=:{}:",
        B64.encode(sha2::Sha256::digest(b"something else"))
    );
    let r = req(
        &s,
        Method::POST,
        "/tus/?path=refused.txt",
        &alice,
        &[DRAFT, ("Upload-Complete", "?1"), ("Content-Digest", &wrong)],
        b"all at once".to_vec(),
    )
    .await;
    assert_eq!(r.status.as_u16(), 422, "{}", r.body);
    assert_eq!(r.header("upload-complete"), Some("?1"));
    assert_eq!(r.header("location"), None);
    assert_eq!(open_sessions(&s, &alice).await, 0, "nothing left open");
    let (st, _) = call(
        &s,
        Method::GET,
        "/v1/spaces/alice/files/refused.txt",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn upload_page_is_served_with_its_assets() {
    let s = Server::start();
    let page = http().get(s.url_of("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("/app.js") && html.contains("/app.css"));
    for (path, kind) in [("/app.js", "javascript"), ("/app.css", "css")] {
        let r = http().get(s.url_of(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()["content-type"].to_str().unwrap().contains(kind));
        assert!(r.bytes().await.unwrap().len() > 1000);
    }
}

#[tokio::test]
async fn cors_lets_a_configured_origin_use_tus_and_read_its_headers() {
    let s = Server::start_with(&[("FERRY_CORS_ORIGINS", "http://app.example")]);
    let alice = user(&s, "alice").await;
    // The browser's preflight for a tus PATCH.
    let r = http()
        .request(Method::OPTIONS, s.url_of("/tus/"))
        .header("Origin", "http://app.example")
        .header("Access-Control-Request-Method", "PATCH")
        .header(
            "Access-Control-Request-Headers",
            "authorization,tus-resumable,upload-offset,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let allowed = r.headers()["access-control-allow-origin"].to_str().unwrap();
    assert_eq!(allowed, "http://app.example");
    let headers = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(headers.contains("upload-offset") && headers.contains("tus-resumable"));
    // A creation from that origin exposes Location and the Upload-* headers.
    let r = http()
        .post(s.url_of("/tus/"))
        .bearer_auth(&alice)
        .header("Origin", "http://app.example")
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("location") && exposed.contains("upload-offset"));
    // Another origin gets no CORS grant.
    let r = http()
        .request(Method::OPTIONS, s.url_of("/tus/"))
        .header("Origin", "http://evil.example")
        .header("Access-Control-Request-Method", "PATCH")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

/// A client that missed the answer to its completing PATCH sends it again:
/// the same offset and bytes answer the same 204 at the full offset.
#[tokio::test]
async fn tus_completing_patch_sent_again_answers_the_same_204() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(300_000, 21);
    let url = create(&s, &alice, data.len() as u64, &[("path", "again.bin")]).await;
    let r = patch(&s, &alice, &url, 0, &data[..100_000], &[]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = patch(&s, &alice, &url, 100_000, &data[100_000..], &[]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(r.offset(), data.len() as u64);
    let again = patch(&s, &alice, &url, 100_000, &data[100_000..], &[]).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT, "{}", again.body);
    assert_eq!(again.offset(), data.len() as u64);
    // A body of another length is not that request.
    let r = patch(&s, &alice, &url, 100_000, &data[100_000..200_000], &[]).await;
    assert_ne!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(download(&s, &alice, "alice", "again.bin").await.1, data);
}

/// The draft's completing append (`Upload-Complete: ?1`) sent again
/// answers the same 200, file and digest.
#[tokio::test]
async fn draft_completing_append_sent_again_answers_the_same_200() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let r = req(
        &s,
        Method::POST,
        "/tus/?path=draft/again.bin",
        &alice,
        &[DRAFT, ("Upload-Complete", "?0"), ("Upload-Length", "6")],
        b"abc".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let url = r.location();
    let first = draft_append(&s, &alice, &url, 3, "?1", b"def").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let again = draft_append(&s, &alice, &url, 3, "?1", b"def").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.header("upload-complete"), Some("?1"));
    assert_eq!(again.header("repr-digest"), first.header("repr-digest"));
    assert_eq!(again.json(), first.json());
    assert_eq!(
        download(&s, &alice, "alice", "draft/again.bin").await.1,
        b"abcdef"
    );
}

/// The metadata of the file of the caller's newest session, as the native
/// API shows it.
async fn native_file_metadata(s: &Server, token: &str) -> Value {
    let (st, v) = call(s, Method::GET, "/v1/sessions", Some(token), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let id = v["sessions"][0]["id"].as_str().unwrap().to_owned();
    let (st, v) = call(
        s,
        Method::GET,
        &format!("/v1/sessions/{id}"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["uploads"][0]["file"]["metadata"].clone()
}

#[tokio::test]
async fn tus_upload_metadata_is_the_files_metadata_and_tus_bookkeeping_is_not() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let raw = metadata(&[("filename", "a.txt"), ("note", "hi")]);
    let url = create(&s, &alice, 2, &[("filename", "a.txt"), ("note", "hi")]).await;
    let r = patch(&s, &alice, &url, 0, b"ab", &[]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    // HEAD still echoes the header verbatim.
    let h = head(&s, &alice, &url).await;
    assert_eq!(h.header("upload-metadata"), Some(raw.as_str()));
    assert_eq!(
        native_file_metadata(&s, &alice).await,
        json!({"filename": "a.txt", "note": "hi"})
    );
}
