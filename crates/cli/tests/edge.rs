//! The HTTP edge: request ids and what an error may reveal, every answer
//! under a dialect's prefix in that dialect's format, early answers that
//! arrive, and connection handling under load and hostile clients.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// One request; the status, the `x-request-id` and the body text.
async fn raw(
    s: &Server,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, String, String) {
    let mut rb = http().request(method, s.url_of(path)).body(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let id = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, id, resp.text().await.unwrap())
}

#[tokio::test]
async fn an_internal_error_answers_the_request_id_and_reveals_no_path_or_os_error() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    // Storage breaks under the server: its staging directory is gone.
    std::fs::remove_dir_all(s.data.join("staging")).unwrap();
    let auth = format!("Bearer {alice}");
    let native = json!({"uploads": [{"path": "a.bin", "size": 5}]}).to_string();
    type Case<'a> = (&'a str, Method, &'a str, Vec<(&'a str, &'a str)>, Vec<u8>);
    let cases: [Case; 3] = [
        (
            "native",
            Method::POST,
            "/v1/sessions",
            vec![("content-type", "application/json")],
            native.into_bytes(),
        ),
        (
            "tus",
            Method::POST,
            "/tus",
            vec![("tus-resumable", "1.0.0"), ("upload-length", "5")],
            vec![],
        ),
        (
            "draft",
            Method::POST,
            "/tus",
            vec![
                ("upload-draft-interop-version", "8"),
                ("upload-complete", "?0"),
                ("upload-length", "5"),
            ],
            vec![],
        ),
    ];
    let data = s.data.to_str().unwrap().to_owned();
    for (dialect, method, path, mut headers, body) in cases {
        headers.push(("authorization", &auth));
        let (status, id, text) = raw(&s, method, path, &headers, body).await;
        assert_eq!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{dialect}: {text}"
        );
        assert_eq!(id.len(), 16, "{dialect}: an x-request-id header");
        assert!(text.contains(&id), "{dialect}: the body names {id}: {text}");
        for leak in [data.as_str(), "staging", "os error", "No such file"] {
            assert!(!text.contains(leak), "{dialect} reveals {leak:?}: {text}");
        }
    }
    // The body is still in the dialect's format.
    let (_, _, text) = raw(
        &s,
        Method::POST,
        "/v1/sessions",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        json!({"uploads": [{"path": "b.bin", "size": 5}]})
            .to_string()
            .into_bytes(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "internal", "{v}");
}

/// What a bad request must get: the status, and a check of the body (and
/// content type) that says it is the dialect's format.
struct Bad {
    what: &'static str,
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
    status: u16,
    shape: fn(&str, &str) -> bool,
}

fn json_of(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

fn native(ct: &str, t: &str) -> bool {
    ct.starts_with("application/json") && json_of(t)["error"]["code"].is_string()
}
fn tus_v1(ct: &str, t: &str) -> bool {
    ct.starts_with("text/plain") && !t.is_empty()
}
fn draft(ct: &str, t: &str) -> bool {
    ct == "application/problem+json" && json_of(t)["status"].is_u64()
}
fn graph(ct: &str, t: &str) -> bool {
    ct.starts_with("application/json") && json_of(t)["error"]["code"].is_string()
}
fn boxapi(ct: &str, t: &str) -> bool {
    let v = json_of(t);
    ct.starts_with("application/json") && v["type"] == "error" && v["request_id"].is_string()
}
fn veeva(ct: &str, t: &str) -> bool {
    let v = json_of(t);
    ct.starts_with("application/json")
        && v["responseStatus"] == "FAILURE"
        && v["errors"][0]["type"].is_string()
}
fn ucloud(ct: &str, t: &str) -> bool {
    let v = json_of(t);
    ct.starts_with("application/json") && v["errorCode"].is_string() && v["why"].is_string()
}
fn deepset(ct: &str, t: &str) -> bool {
    ct.starts_with("application/json") && json_of(t)["detail"].is_string()
}
fn s3(ct: &str, t: &str) -> bool {
    ct == "application/xml" && t.contains("<Error><Code>") && t.contains("<RequestId>")
}

const DRAFT: (&str, &str) = ("upload-draft-interop-version", "8");
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

fn bad_inputs() -> Vec<Bad> {
    use Method as M;
    let b = |what, method, path, headers, body, status, shape| Bad {
        what,
        method,
        path,
        headers,
        body,
        status,
        shape,
    };
    vec![
        b(
            "native: non-UTF-8 path segment",
            M::GET,
            "/v1/sessions/%FF",
            &[],
            b"",
            400,
            native,
        ),
        b(
            "native: non-UTF-8 query",
            M::GET,
            "/v1/sessions?state=%C3",
            &[],
            b"",
            400,
            native,
        ),
        b(
            "native: unknown method",
            M::PATCH,
            "/v1/sessions",
            &[],
            b"",
            405,
            native,
        ),
        b(
            "native: unknown route",
            M::GET,
            "/v1/nothing",
            &[],
            b"",
            404,
            native,
        ),
        b(
            "tus: non-UTF-8 id",
            M::HEAD,
            "/tus/%FF",
            &[("tus-resumable", "1.0.0")],
            b"",
            400,
            |_, _| true,
        ),
        b(
            "tus: non-UTF-8 id",
            M::DELETE,
            "/tus/%FF",
            &[("tus-resumable", "1.0.0")],
            b"",
            400,
            tus_v1,
        ),
        b(
            "tus: unknown route",
            M::GET,
            "/tus/a/b",
            &[],
            b"",
            404,
            tus_v1,
        ),
        b(
            "draft: unknown route",
            M::GET,
            "/tus/a/b",
            &[DRAFT],
            b"",
            404,
            draft,
        ),
        b(
            "draft: non-UTF-8 ?path=",
            M::POST,
            "/tus?path=a%FF.bin",
            &[DRAFT],
            b"",
            400,
            draft,
        ),
        b(
            "graph: unknown method",
            M::GET,
            "/v1.0/me/drive",
            &[],
            b"",
            405,
            graph,
        ),
        b(
            "graph: non-UTF-8 id",
            M::PUT,
            "/v1.0/uploadSessions/%FF",
            &[],
            b"",
            400,
            graph,
        ),
        b(
            "box: unknown route",
            M::GET,
            "/2.0/nothing/here",
            &[],
            b"",
            404,
            boxapi,
        ),
        b(
            "box: unknown method",
            M::PATCH,
            "/2.0/files/upload_sessions",
            &[],
            b"",
            405,
            boxapi,
        ),
        b(
            "box: non-UTF-8 id",
            M::GET,
            "/api/2.0/files/upload_sessions/%FF",
            &[],
            b"",
            400,
            boxapi,
        ),
        b(
            "box: duplicated query",
            M::GET,
            "/2.0/folders/0/items?limit=1&limit=2",
            &[],
            b"",
            400,
            boxapi,
        ),
        b(
            "veeva: non-UTF-8 form field",
            M::POST,
            "/api/v25.1/services/file_staging/upload",
            &[FORM],
            b"path=%FF.bin&size=5&kind=file",
            400,
            veeva,
        ),
        b(
            "veeva: unknown method",
            M::PATCH,
            "/api/v25.1/services/file_staging/upload",
            &[],
            b"",
            405,
            veeva,
        ),
        b(
            "ucloud: no WebSocket upgrade",
            M::GET,
            "/ucloud/file?token=x",
            &[],
            b"",
            400,
            ucloud,
        ),
        b(
            "ucloud: unknown route",
            M::GET,
            "/ucloud/nothing",
            &[],
            b"",
            404,
            ucloud,
        ),
        b(
            "ucloud: duplicated query",
            M::GET,
            "/ucloud/file?token=a&token=b",
            &[],
            b"",
            400,
            ucloud,
        ),
        b(
            "deepset: unknown route",
            M::GET,
            "/api/v1/workspaces/w/upload_sessions/x/nope",
            &[],
            b"",
            404,
            deepset,
        ),
        b(
            "deepset: non-UTF-8 workspace",
            M::GET,
            "/api/v1/workspaces/%FF/upload_sessions",
            &[],
            b"",
            400,
            deepset,
        ),
        b(
            "deepset form: unknown method",
            M::GET,
            "/deepset/objects",
            &[],
            b"",
            405,
            s3,
        ),
        b(
            "deepset form: unknown route",
            M::PUT,
            "/deepset/else",
            &[],
            b"",
            404,
            s3,
        ),
    ]
}

#[tokio::test]
async fn every_answer_under_a_dialects_prefix_is_in_that_dialects_format() {
    let s = Server::start();
    let mut failures = Vec::new();
    for bad in bad_inputs() {
        let mut rb = http()
            .request(bad.method.clone(), s.url_of(bad.path))
            .body(bad.body.to_vec());
        for (k, v) in bad.headers {
            rb = rb.header(*k, *v);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = resp.text().await.unwrap();
        if status != bad.status || !(bad.shape)(&ct, &text) {
            failures.push(format!(
                "{} ({} {}): {status} {ct} {text}",
                bad.what, bad.method, bad.path
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn tus_refuses_a_content_type_that_only_starts_like_offset_octet_stream() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let auth = format!("Bearer {alice}");
    let created = http()
        .post(s.url_of("/tus"))
        .header("authorization", &auth)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let at = created.headers()["location"].to_str().unwrap().to_owned();
    for (ct, want) in [
        ("application/offset+octet-streamx", 415),
        ("application/offset+octet-stream; charset=x", 204),
    ] {
        let resp = http()
            .patch(s.url_of(&at))
            .header("authorization", &auth)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", "0")
            .header("content-type", ct)
            .body(&b"abc"[..if want == 204 { 3 } else { 1 }])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), want, "{ct}");
    }
}

/// Sends `PUT path` with a 5 MiB body in one go over a raw socket, as
/// Python's urllib does (no `Expect: 100-continue`), then reads the answer.
/// Returns the status line, or the error the client saw.
fn put_5mib_raw(url: &str, path: &str, token: Option<&str>) -> Result<String, std::io::Error> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut sock = std::net::TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    sock.set_write_timeout(Some(std::time::Duration::from_secs(30)))?;
    let len = 5 << 20;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        sock,
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
    )?;
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..len / chunk.len() {
        sock.write_all(&chunk)?;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut buf)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn an_early_answer_to_a_5_mib_put_reaches_a_client_still_sending() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let v = create_session(
        &s,
        &bob,
        json!({"uploads": [{"path": "b.bin", "size": 5 << 20}]}),
    )
    .await;
    let bobs = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    let url = s.url.clone();
    let cases = [
        (
            format!("/v1/uploads/{bobs}/parts/1"),
            Some(alice.clone()),
            "404",
        ),
        (format!("/v1/uploads/{bobs}/parts/1"), None, "401"),
    ];
    for (path, token, want) in cases {
        let url = url.clone();
        let line = tokio::task::spawn_blocking(move || put_5mib_raw(&url, &path, token.as_deref()))
            .await
            .unwrap();
        let line = line.unwrap_or_else(|e| panic!("the client saw {e} instead of {want}"));
        assert!(line.contains(want), "{line}");
    }
}

/// Reads from `sock` until the peer closes it or sends a whole head;
/// `Ok(None)` when it closed without answering.
fn read_head(sock: &mut std::net::TcpStream) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    Ok((!got.is_empty()).then(|| String::from_utf8_lossy(&got).into_owned()))
}

#[tokio::test]
async fn a_write_taken_over_while_its_body_stalls_answers_409_at_once() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let id = create_tus(&s, &alice, 100).await;
    let addr = s.url.trim_start_matches("http://").to_owned();
    let (tok, path) = (alice.clone(), format!("/tus/{id}"));
    // A PATCH that sends 10 bytes of its chunked body, then nothing; it
    // keeps its connection open and waits for an answer.
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
    let stalled = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut sock = std::net::TcpStream::connect(&addr).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        write!(
            sock,
            "PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"
        )
        .unwrap();
        sent_tx.send(()).unwrap();
        let head = read_head(&mut sock);
        (head, std::time::Instant::now())
    });
    sent_rx.await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // A HEAD takes the upload over (tus clients resume this way).
    let head = http()
        .head(s.url_of(&format!("/tus/{id}")))
        .bearer_auth(&alice)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    let taken = std::time::Instant::now();
    assert_eq!(head.status(), StatusCode::OK);
    let (answer, at) = stalled.await.unwrap();
    let answer = answer.unwrap().expect("an answer, not a closed connection");
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    // The answer does not wait for the stalled body (the drain of a body
    // left unread runs beside the answer, for up to 10 s).
    let late = at.saturating_duration_since(taken);
    assert!(
        late < std::time::Duration::from_secs(5),
        "the 409 came {late:?} after the hand-over"
    );
}

#[test]
fn a_connection_that_never_finishes_its_headers_is_closed() {
    use std::io::Write;
    let s = Server::start_with(&[("FERRY_HEADER_READ_TIMEOUT", "1")]);
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    // Generous: the bound is 1 s; this only fails if the server holds on.
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let head = read_head(&mut sock).expect("closed, not held open");
    if let Some(h) = head {
        assert!(h.starts_with("HTTP/1.1 408"), "{h}");
    }
}

#[tokio::test]
async fn a_body_that_sends_nothing_is_ended_as_a_failed_body() {
    let s = Server::start_with(&[("FERRY_BODY_IDLE_TIMEOUT", "1")]);
    let alice = user(&s, "alice").await;
    let v = create_session(
        &s,
        &alice,
        json!({"uploads": [{"path": "a.bin", "size": 10}]}),
    )
    .await;
    let upload = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    let addr = s.url.trim_start_matches("http://").to_owned();
    let (token, id) = (alice.clone(), upload.clone());
    let head = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut sock = std::net::TcpStream::connect(&addr).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        write!(
            sock,
            "PUT /v1/uploads/{upload} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\nContent-Range: bytes 0-9/10\r\nContent-Length: 10\r\n\r\nabcd"
        )
        .unwrap();
        // ... and then nothing: the server ends the body and answers.
        read_head(&mut sock).expect("an answer, not a held connection")
    })
    .await
    .unwrap()
    .expect("an answer");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // The session is intact and the upload can be written again.
    let (st, v) = put(
        &s,
        &format!("/v1/uploads/{id}"),
        Some(&token),
        &[("content-range", "bytes 0-9/10")],
        b"abcdefghij".to_vec(),
    )
    .await;
    assert!(st.is_success(), "{st} {v}");
}

/// `Threads` and `VmRSS` (KiB) of a process, from /proc.
fn threads_and_rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in {status}"))
    };
    (field("Threads:"), field("VmRSS:"))
}

#[tokio::test]
async fn a_thousand_slow_uploads_hold_no_thread_each_and_control_requests_answer() {
    const SLOW: usize = 1000;
    const SIZE: u64 = 1 << 20;
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let uploads: Vec<_> = (0..SLOW)
        .map(|i| json!({"path": format!("slow/{i}.bin"), "size": SIZE}))
        .collect();
    let v = create_session(&s, &alice, json!({ "uploads": uploads })).await;
    let ids: Vec<String> = v["uploads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    // A thousand uploads that sent their headers and 1 KiB, then stall.
    let addr = s.url.trim_start_matches("http://").to_owned();
    let token = alice.clone();
    let socks = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        ids.iter()
            .map(|id| {
                let mut sock = std::net::TcpStream::connect(&addr).unwrap();
                write!(
                    sock,
                    "PUT /v1/uploads/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Range: bytes 0-{}/{SIZE}\r\nContent-Length: {SIZE}\r\n\r\n",
                    SIZE - 1
                )
                .unwrap();
                sock.write_all(&[1u8; 1024]).unwrap();
                sock
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;

    // Control requests answer while they stall (latencies are reported,
    // not asserted: this VM is shared).
    let mut ready = Vec::new();
    let mut create = Vec::new();
    for i in 0..20 {
        let t = std::time::Instant::now();
        let r = http().get(s.url_of("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        ready.push(t.elapsed());
        let t = std::time::Instant::now();
        let (st, v) = call(
            &s,
            Method::POST,
            "/v1/sessions",
            Some(&alice),
            Some(json!({"uploads": [{"path": format!("c/{i}.bin"), "size": 1}]})),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        create.push(t.elapsed());
    }
    let (threads, rss_kib) = threads_and_rss(s.pid());
    ready.sort();
    create.sort();
    eprintln!(
        "{SLOW} slow uploads: {threads} threads, RSS {} MiB; /readyz max {:?}, median {:?}; session creation max {:?}, median {:?}",
        rss_kib / 1024,
        ready[ready.len() - 1],
        ready[ready.len() / 2],
        create[create.len() - 1],
        create[create.len() / 2],
    );
    // The bounds: threads < 100 (was 517), RSS < 200 MiB.
    assert!(threads < 100, "{threads} threads");
    assert!(rss_kib < 200 * 1024, "RSS {rss_kib} KiB");
    drop(socks);
}

#[tokio::test]
async fn past_the_connection_cap_a_connection_waits_until_one_closes() {
    let s = Server::start_with(&[("FERRY_MAX_CONNECTIONS", "1")]);
    let addr = s.url.trim_start_matches("http://").to_owned();
    // The one connection allowed, open and silent.
    let held = std::net::TcpStream::connect(&addr).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let url = s.url_of("/healthz");
    let waiting = tokio::spawn(async move { http().get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "answered past the cap");
    drop(held);
    let status = waiting
        .await
        .unwrap()
        .expect("answered once a slot is free");
    assert_eq!(status, StatusCode::OK);
}
