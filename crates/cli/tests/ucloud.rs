//! The UCloud dialect through a real server: bulk create, CHUNKED, the
//! single-file WebSocket and the folder WebSocket, their resumes and their
//! errors. (A scripted Python client does the same at scale in
//! tests/clients/python/test_ucloud.py.)

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const MIB: usize = 1 << 20;

fn ucloud_error(v: &Value, code: &str) {
    assert_eq!(v["errorCode"], code, "{v}");
    assert!(!v["why"].as_str().unwrap().is_empty(), "{v}");
}

/// Bulk create; returns the status and body.
async fn create(s: &Server, token: &str, items: Value) -> (StatusCode, Value) {
    call(
        s,
        Method::POST,
        "/api/files/upload",
        Some(token),
        Some(json!({ "items": items })),
    )
    .await
}

/// Creates one item; returns its `{endpoint, protocol, token}`.
async fn create_one(
    s: &Server,
    token: &str,
    id: &str,
    kind: &str,
    protocols: &[&str],
    policy: &str,
) -> Value {
    let (st, v) = create(
        s,
        token,
        json!([{"id": id, "type": kind, "supportedProtocols": protocols, "conflictPolicy": policy}]),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["responses"][0].clone()
}

async fn chunk(
    s: &Server,
    upload_token: &str,
    offset: i64,
    total: Option<usize>,
    data: &[u8],
) -> (StatusCode, Value) {
    let mut rb = http()
        .post(format!("{}/ucloud/chunked", s.url))
        .header("Chunked-Upload-Token", upload_token)
        .header("Chunked-Upload-Offset", offset.to_string())
        .body(data.to_vec());
    if let Some(t) = total {
        rb = rb.header("Chunked-Upload-Total-Size", t.to_string());
    }
    decode(rb.send().await.unwrap()).await
}

async fn connect(endpoint: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(endpoint).await.unwrap();
    ws
}

/// The next text or binary message (pings and pongs skipped); the close
/// code when the server closes.
async fn next(ws: &mut Ws) -> Result<Message, u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => {
                if let Some(f) = &f {
                    eprintln!("closed: {} {}", u16::from(f.code), f.reason);
                }
                return Err(f.map_or(1005, |f| u16::from(f.code)));
            }
            Ok(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => return Ok(m),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return Err(1006),
            Err(_) => panic!("no message from the server in 30 s"),
        }
    }
}

/// Waits for the server to close; its close code.
async fn closed(ws: &mut Ws) -> u16 {
    loop {
        if let Err(code) = next(ws).await {
            return code;
        }
    }
}

#[tokio::test]
async fn bulk_create_negotiates_a_protocol_per_item_and_refuses_in_ucloud_errors() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let bob = user(&s, "bob").await;
    let (st, v) = create(
        &s,
        &alice,
        json!([
            {"id": "/alice/a.bin", "type": "FILE", "supportedProtocols": ["CHUNKED"], "conflictPolicy": "RENAME"},
            {"id": "/alice/b.bin", "type": "FILE", "supportedProtocols": ["CHUNKED", "WEBSOCKET"], "conflictPolicy": "REPLACE"},
            {"id": "/alice/up", "type": "FOLDER", "supportedProtocols": ["WEBSOCKET_V2"], "conflictPolicy": "MERGE_RENAME"},
        ]),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = v["responses"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0]["protocol"], "CHUNKED");
    assert_eq!(r[0]["endpoint"], format!("{}/ucloud/chunked", s.url));
    assert_eq!(r[1]["protocol"], "WEBSOCKET");
    assert!(
        r[1]["endpoint"]
            .as_str()
            .unwrap()
            .starts_with("ws://127.0.0.1"),
        "{v}"
    );
    assert_eq!(r[2]["protocol"], "WEBSOCKET_V2");
    assert!(
        r[2]["endpoint"]
            .as_str()
            .unwrap()
            .contains("/ucloud/folder?token=")
    );
    for x in r {
        assert!(!x["token"].as_str().unwrap().is_empty());
    }

    // No credentials; a space not granted; a folder over CHUNKED; a bad
    // policy; a REJECT onto an existing file. Nothing is created when one
    // item fails.
    let (st, v) = call(
        &s,
        Method::POST,
        "/api/files/upload",
        None,
        Some(json!({"items": []})),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    ucloud_error(&v, "UNAUTHENTICATED");
    let (st, v) = create(
        &s,
        &bob,
        json!([{"id": "/alice/x", "type": "FILE", "supportedProtocols": ["CHUNKED"], "conflictPolicy": "RENAME"}]),
    )
    .await;
    assert!(
        st == StatusCode::FORBIDDEN || st == StatusCode::NOT_FOUND,
        "{st} {v}"
    );
    assert!(
        v["errorCode"] == "PERMISSION_DENIED" || v["errorCode"] == "NOT_FOUND",
        "{v}"
    );
    let (st, v) = create(
        &s,
        &alice,
        json!([{"id": "/alice/d", "type": "FOLDER", "supportedProtocols": ["CHUNKED"], "conflictPolicy": "RENAME"}]),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    ucloud_error(&v, "BAD_REQUEST");
    let (st, v) = create(
        &s,
        &alice,
        json!([{"id": "/alice/d", "type": "FILE", "supportedProtocols": ["CHUNKED"], "conflictPolicy": "SOMETIMES"}]),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    ucloud_error(&v, "BAD_REQUEST");

    let done = create_one(
        &s,
        &alice,
        "/alice/there.txt",
        "FILE",
        &["CHUNKED"],
        "REJECT",
    )
    .await;
    let (st, _) = chunk(&s, done["token"].as_str().unwrap(), 0, Some(2), b"hi").await;
    assert_eq!(st, StatusCode::OK);
    let open = || async {
        let v = call(
            &s,
            Method::GET,
            "/v1/sessions?state=open",
            Some(&alice),
            None,
        )
        .await
        .1;
        v["sessions"].as_array().unwrap().len()
    };
    let before = open().await;
    let (st, v) = create(
        &s,
        &alice,
        json!([
            {"id": "/alice/new.txt", "type": "FILE", "supportedProtocols": ["CHUNKED"], "conflictPolicy": "REJECT"},
            {"id": "/alice/there.txt", "type": "FILE", "supportedProtocols": ["CHUNKED"], "conflictPolicy": "REJECT"},
        ]),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    ucloud_error(&v, "ALREADY_EXISTS");
    assert_eq!(
        open().await,
        before,
        "no session was made for the first item"
    );
}

#[tokio::test]
async fn chunked_uploads_resume_after_an_interrupted_chunk_and_commit_on_the_last_byte() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(5 * MIB + 123, 7);
    let total = data.len();
    let r = create_one(
        &s,
        &alice,
        "/alice/docs/big.bin",
        "FILE",
        &["CHUNKED"],
        "RENAME",
    )
    .await;
    let t = r["token"].as_str().unwrap();
    // 2 MiB appended, then 2 MiB at an explicit offset.
    let (st, v) = chunk(&s, t, -1, Some(total), &data[..2 * MIB]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = chunk(&s, t, 2 * MIB as i64, Some(total), &data[2 * MIB..4 * MIB]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // The client lost the answer to the last chunk and sends it again, with
    // the next one: bytes it re-sends replace nothing that was acknowledged.
    let (st, v) = chunk(
        &s,
        t,
        3 * MIB as i64,
        Some(total),
        &data[3 * MIB..4 * MIB + 10],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _) = download(&s, &alice, "alice", "docs/big.bin").await;
    assert_eq!(
        st,
        StatusCode::NOT_FOUND,
        "not visible before the last byte"
    );
    let (st, v) = chunk(&s, t, -1, None, &data[4 * MIB + 10..]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, got) = download(&s, &alice, "alice", "docs/big.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    // The session is done: more bytes are refused.
    let (st, v) = chunk(&s, t, -1, None, b"x").await;
    assert!(
        st == StatusCode::CONFLICT || st == StatusCode::BAD_REQUEST,
        "{st} {v}"
    );

    // RENAME: a second upload to the same path lands beside it; the size
    // may come with an empty last chunk.
    let r = create_one(
        &s,
        &alice,
        "/alice/docs/big.bin",
        "FILE",
        &["CHUNKED"],
        "RENAME",
    )
    .await;
    let t = r["token"].as_str().unwrap();
    assert_eq!(chunk(&s, t, 0, None, b"abc").await.0, StatusCode::OK);
    assert_eq!(chunk(&s, t, -1, Some(3), b"").await.0, StatusCode::OK);
    let (st, got) = download(&s, &alice, "alice", "docs/big (1).bin").await;
    assert_eq!((st, got), (StatusCode::OK, b"abc".to_vec()));
}

#[tokio::test]
async fn chunked_errors_are_ucloud_errors_and_keep_acknowledged_bytes() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let r = create_one(&s, &alice, "/alice/e.bin", "FILE", &["CHUNKED"], "RENAME").await;
    let t = r["token"].as_str().unwrap().to_owned();
    assert_eq!(
        chunk(&s, &t, 0, Some(100), &[1; 40]).await.0,
        StatusCode::OK
    );

    // Missing and malformed tokens; a forged or foreign one.
    let (st, v) = decode(
        http()
            .post(format!("{}/ucloud/chunked", s.url))
            .header("Chunked-Upload-Offset", "0")
            .body(vec![1u8])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    ucloud_error(&v, "INVALID_TOKEN");
    let (st, v) = chunk(&s, "nonsense", -1, None, b"x").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    ucloud_error(&v, "INVALID_TOKEN");
    let mut forged = t.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let (st, v) = chunk(&s, &forged, -1, None, b"x").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    ucloud_error(&v, "NOT_FOUND");
    let folder = create_one(&s, &alice, "/alice/f", "FOLDER", &["WEBSOCKET"], "RENAME").await;
    let (st, v) = chunk(&s, folder["token"].as_str().unwrap(), -1, None, b"x").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    ucloud_error(&v, "INVALID_TOKEN");

    // Bad offsets: not a number, past the received bytes, past the size;
    // a size that changes.
    let (st, v) = decode(
        http()
            .post(format!("{}/ucloud/chunked", s.url))
            .header("Chunked-Upload-Token", &t)
            .header("Chunked-Upload-Offset", "-7")
            .body(vec![1u8])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    ucloud_error(&v, "BAD_OFFSET");
    let (st, v) = chunk(&s, &t, 41, None, &[2; 10]).await;
    assert_eq!(st, StatusCode::CONFLICT);
    ucloud_error(&v, "BAD_OFFSET");
    let (st, v) = chunk(&s, &t, 40, None, &[2; 61]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    ucloud_error(&v, "BAD_OFFSET");
    let (st, v) = chunk(&s, &t, 40, Some(99), &[2; 10]).await;
    assert_eq!(st, StatusCode::CONFLICT);
    ucloud_error(&v, "BAD_SIZE");

    // A chunk over 32,000,000 bytes.
    let (st, v) = chunk(&s, &t, 40, None, &vec![3u8; 32_000_001]).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    ucloud_error(&v, "CHUNK_TOO_LARGE");

    // None of that lost a byte: the rest completes the file.
    assert_eq!(chunk(&s, &t, -1, None, &[4; 60]).await.0, StatusCode::OK);
    let (st, got) = download(&s, &alice, "alice", "e.bin").await;
    assert_eq!(st, StatusCode::OK);
    let mut want = vec![1u8; 40];
    want.extend([4u8; 60]);
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_ucloud_session_expires_when_idle_and_at_its_lifetime_cap() {
    // Idle: the engine's maximum expiry (2 s) bounds the 30-minute default.
    let s = Server::start_with(&[("FERRY_MAX_EXPIRY", "2"), ("FERRY_REAP_INTERVAL", "1")]);
    let alice = user(&s, "alice").await;
    let r = create_one(
        &s,
        &alice,
        "/alice/x.bin",
        "FILE",
        &["CHUNKED", "WEBSOCKET"],
        "RENAME",
    )
    .await;
    let t = r["token"].as_str().unwrap();
    let folder = create_one(&s, &alice, "/alice/dir", "FOLDER", &["WEBSOCKET"], "RENAME").await;
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (st, v) = chunk(&s, t, -1, None, b"late").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    ucloud_error(&v, "SESSION_EXPIRED");
    let err = tokio_tungstenite::connect_async(folder["endpoint"].as_str().unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");

    // The cap: writes keep the session alive, but not past its lifetime.
    let s = Server::start_with(&[("FERRY_UCLOUD_MAX_LIFETIME", "2")]);
    let alice = user(&s, "alice").await;
    let r = create_one(&s, &alice, "/alice/y.bin", "FILE", &["CHUNKED"], "RENAME").await;
    let t = r["token"].as_str().unwrap();
    let folder = create_one(&s, &alice, "/alice/z", "FOLDER", &["WEBSOCKET"], "RENAME").await;
    let mut c = FolderClient::open(folder["endpoint"].as_str().unwrap()).await;
    assert_eq!(chunk(&s, t, -1, None, b"early").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (st, v) = chunk(&s, t, -1, None, b"late").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    ucloud_error(&v, "SESSION_EXPIRED");
    // A folder connection opened in time takes no new file past the cap.
    c.list(&[(1, "late.txt", b"x", 1)]).await;
    assert_eq!(closed(&mut c.ws).await, 4404);
}

/// Sends `data[from..]` over a single-file WebSocket, in 256 KiB frames;
/// stops after `stop_after` bytes (dropping the connection) when given.
/// Returns the last acknowledgement read.
async fn ws_send(endpoint: &str, data: &[u8], from: usize, stop_after: Option<usize>) -> u64 {
    let mut ws = connect(endpoint).await;
    ws.send(Message::text(format!("{from} {}", data.len())))
        .await
        .unwrap();
    ws.send(Message::text("ping")).await.unwrap();
    let mut sent = 0;
    for piece in data[from..].chunks(256 * 1024) {
        if stop_after.is_some_and(|n| sent >= n) {
            break;
        }
        ws.send(Message::binary(piece.to_vec())).await.unwrap();
        sent += piece.len();
    }
    let mut acked;
    let mut ponged = false;
    loop {
        match next(&mut ws).await {
            Ok(Message::Text(t)) if t.as_str() == "pong" => ponged = true,
            Ok(Message::Text(t)) => {
                acked = t.as_str().parse().unwrap();
                if acked == data.len() as u64 || stop_after.is_some_and(|_| acked > from as u64) {
                    break;
                }
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(code) => panic!("closed with {code}"),
        }
    }
    assert!(ponged || stop_after.is_some(), "ping answered");
    if stop_after.is_some() {
        // Drop the TCP connection without a close handshake.
        drop(ws);
    } else {
        ws.close(None).await.unwrap();
    }
    acked
}

#[tokio::test]
async fn the_single_file_websocket_resumes_at_the_last_acknowledged_offset() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(20 * MIB + 5, 9);
    let r = create_one(
        &s,
        &alice,
        "/alice/ws/one.bin",
        "FILE",
        &["CHUNKED", "WEBSOCKET"],
        "RENAME",
    )
    .await;
    assert_eq!(r["protocol"], "WEBSOCKET");
    let endpoint = r["endpoint"].as_str().unwrap();
    let acked = ws_send(endpoint, &data, 0, Some(12 * MIB)).await;
    assert!(acked > 0 && acked < data.len() as u64, "{acked}");
    assert_eq!(
        download(&s, &alice, "alice", "ws/one.bin").await.0,
        StatusCode::NOT_FOUND
    );
    // Resume from an earlier point than the server has: the overlap is
    // dropped, not written twice.
    let from = (acked as usize).saturating_sub(MIB);
    let last = ws_send(endpoint, &data, from, None).await;
    assert_eq!(last, data.len() as u64);
    let (st, got) = download(&s, &alice, "alice", "ws/one.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(sha256_hex(&got), sha256_hex(&data));

    // Errors: a start past the received bytes closes with 4409; a bad first
    // frame with 4400; a bad token is refused before the upgrade.
    let r = create_one(
        &s,
        &alice,
        "/alice/ws/two.bin",
        "FILE",
        &["WEBSOCKET"],
        "RENAME",
    )
    .await;
    let endpoint = r["endpoint"].as_str().unwrap();
    let mut ws = connect(endpoint).await;
    ws.send(Message::text("10 20")).await.unwrap();
    assert_eq!(closed(&mut ws).await, 4409);
    let mut ws = connect(endpoint).await;
    ws.send(Message::text("zero twenty")).await.unwrap();
    assert_eq!(closed(&mut ws).await, 4400);
    let base = endpoint.split('?').next().unwrap();
    let forged = format!("{base}?token=u{}.{}", "0".repeat(32), "0".repeat(64));
    let err = tokio_tungstenite::connect_async(forged).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    let err = tokio_tungstenite::connect_async(format!("{base}?token=junk"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
}

/// A client of the folder WebSocket.
struct FolderClient {
    ws: Ws,
    /// OK'd and SKIPped file ids.
    ok: Vec<i32>,
    skip: Vec<i32>,
    completed: i32,
}

impl FolderClient {
    async fn open(endpoint: &str) -> FolderClient {
        FolderClient {
            ws: connect(endpoint).await,
            ok: Vec::new(),
            skip: Vec::new(),
            completed: 0,
        }
    }

    async fn list(&mut self, files: &[(i32, &str, &[u8], i64)]) {
        let mut b = BytesMut::new();
        b.put_u8(4);
        for (id, path, data, mtime) in files {
            b.put_i32(*id);
            b.put_i64(data.len() as i64);
            b.put_i64(*mtime);
            b.put_u32(path.len() as u32);
            b.put_slice(path.as_bytes());
        }
        self.ws.send(Message::Binary(b.freeze())).await.unwrap();
    }

    async fn chunk(&mut self, id: i32, data: &[u8]) {
        let mut b = BytesMut::new();
        b.put_u8(2);
        b.put_i32(id);
        b.put_slice(data);
        self.ws.send(Message::Binary(b.freeze())).await.unwrap();
    }

    /// Reads server messages until `want` returns true.
    async fn read_until(&mut self, want: impl Fn(&FolderClient) -> bool) -> Result<(), u16> {
        while !want(self) {
            match next(&mut self.ws).await? {
                Message::Binary(b) => self.absorb(b),
                Message::Text(_) => {}
                _ => {}
            }
        }
        Ok(())
    }

    fn absorb(&mut self, b: Bytes) {
        let mut i = 0;
        while i < b.len() {
            let n = i32::from_be_bytes(b[i + 1..i + 5].try_into().unwrap());
            match b[i] {
                0 => self.ok.push(n),
                3 => self.skip.push(n),
                5 => self.completed = n,
                op => panic!("opcode {op} from the server"),
            }
            i += 5;
        }
    }

    async fn close(mut self) {
        self.ws
            .send(Message::Binary(Bytes::from_static(&[6])))
            .await
            .unwrap();
        assert_eq!(closed(&mut self.ws).await, 1000);
    }
}

#[tokio::test]
async fn the_folder_websocket_skips_what_is_there_and_resumes_files_and_folders() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    // The target folder exists, with a file where one of ours will go.
    let r = create_one(
        &s,
        &alice,
        "/alice/proj/a.txt",
        "FILE",
        &["CHUNKED"],
        "RENAME",
    )
    .await;
    assert_eq!(
        chunk(&s, r["token"].as_str().unwrap(), 0, Some(3), b"old")
            .await
            .0,
        StatusCode::OK
    );

    let files: Vec<(i32, String, Vec<u8>, i64)> = (0..12)
        .map(|i| {
            let path = match i {
                0 => "a.txt".to_owned(),
                1 => "empty.txt".to_owned(),
                _ => format!("d{}/sub/f{i}.bin", i % 3),
            };
            let len = if i == 1 { 0 } else { 1000 + i as usize * 3000 };
            (
                i,
                path,
                random_bytes(len, i as u64 + 100),
                1_700_000_000_000 + i as i64,
            )
        })
        .collect();
    let listing: Vec<(i32, &str, &[u8], i64)> = files
        .iter()
        .map(|(i, p, d, m)| (*i, p.as_str(), d.as_slice(), *m))
        .collect();

    let r = create_one(
        &s,
        &alice,
        "/alice/proj",
        "FOLDER",
        &["WEBSOCKET"],
        "MERGE_RENAME",
    )
    .await;
    let endpoint = r["endpoint"].as_str().unwrap().to_owned();

    // First attempt, on two connections: the first half completes, one
    // file of the second half is cut after some bytes, then both drop.
    let mut c1 = FolderClient::open(&endpoint).await;
    let mut c2 = FolderClient::open(&endpoint).await;
    c1.list(&listing[..6]).await;
    c2.list(&listing[6..]).await;
    c1.read_until(|c| c.ok.len() + c.skip.len() == 6)
        .await
        .unwrap();
    c2.read_until(|c| c.ok.len() + c.skip.len() == 6)
        .await
        .unwrap();
    assert!(c1.skip.is_empty() && c2.skip.is_empty());
    for (id, _, data, _) in &files[..6] {
        for piece in data.chunks(4096) {
            c1.chunk(*id, piece).await;
        }
    }
    c1.read_until(|c| c.completed == 6).await.unwrap();
    c1.close().await;
    let (id, _, data, _) = &files[7];
    c2.chunk(*id, &data[..5000]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c2);

    let (st, got) = download(&s, &alice, "alice", "proj/a (1).txt").await;
    assert_eq!(
        (st, got),
        (StatusCode::OK, files[0].2.clone()),
        "a.txt was renamed"
    );
    assert_eq!(download(&s, &alice, "alice", "proj/a.txt").await.1, b"old");
    assert_eq!(download(&s, &alice, "alice", "proj/empty.txt").await.1, b"");

    // Resume with a new createUpload (MERGE_RENAME) on four connections:
    // everything done is SKIPped, the rest is sent (the cut file again
    // from its start).
    let r = create_one(
        &s,
        &alice,
        "/alice/proj",
        "FOLDER",
        &["WEBSOCKET"],
        "MERGE_RENAME",
    )
    .await;
    let endpoint = r["endpoint"].as_str().unwrap().to_owned();
    let mut skipped = Vec::new();
    for part in listing.chunks(3) {
        let mut c = FolderClient::open(&endpoint).await;
        c.list(part).await;
        c.read_until(|c| c.ok.len() + c.skip.len() == part.len())
            .await
            .unwrap();
        for id in c.ok.clone() {
            let data = &files[id as usize].2;
            for piece in data.chunks(7000) {
                c.chunk(id, piece).await;
            }
        }
        c.ws.send(Message::text("ping")).await.unwrap();
        c.read_until(|c| c.completed == part.len() as i32)
            .await
            .unwrap();
        skipped.extend(c.skip.clone());
        c.close().await;
    }
    skipped.sort();
    assert_eq!(skipped, vec![0, 1, 2, 3, 4, 5]);
    for (i, path, data, _) in &files {
        let path = if *i == 0 { "a (1).txt" } else { path.as_str() };
        let (st, got) = download(&s, &alice, "alice", &format!("proj/{path}")).await;
        assert_eq!(st, StatusCode::OK, "{path}");
        assert_eq!(sha256_hex(&got), sha256_hex(data), "{path}");
    }
    let (st, _) = download(&s, &alice, "alice", "proj/a (2).txt").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "the renamed copy was recognised");
}

/// A connection that stalls halfway through a file while a newer one on
/// the same token sends it: the newer write wins and commits the file, and
/// the stalled connection is never told the file completed — it closes
/// with the file's CONFLICT error.
#[tokio::test]
async fn a_file_taken_over_by_a_newer_folder_connection_is_not_counted_on_the_old_one() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let r = create_one(
        &s,
        &alice,
        "/alice/race",
        "FOLDER",
        &["WEBSOCKET"],
        "RENAME",
    )
    .await;
    let endpoint = r["endpoint"].as_str().unwrap().to_owned();
    let b = random_bytes(200_000, 3);

    // The first connection sends half of b.bin and then stalls, open.
    let mut old = FolderClient::open(&endpoint).await;
    old.list(&[(1, "b.bin", &b, 6)]).await;
    old.read_until(|c| c.ok.len() == 1).await.unwrap();
    old.chunk(1, &b[..100_000]).await;

    // A newer connection on the same token sends the whole file.
    let mut new = FolderClient::open(&endpoint).await;
    new.list(&[(7, "b.bin", &b, 6)]).await;
    new.read_until(|c| c.ok.len() == 1).await.unwrap();
    for piece in b.chunks(64 * 1024) {
        new.chunk(7, piece).await;
    }
    new.read_until(|c| c.completed == 1).await.unwrap();
    new.close().await;
    assert_eq!(download(&s, &alice, "alice", "race/b.bin").await.1, b);

    // The stalled connection's write was taken over: not counted, and the
    // connection ends with that file's error.
    let code = old.read_until(|_| false).await.unwrap_err();
    assert_eq!((code, old.completed), (4409, 0));
}

#[tokio::test]
async fn the_folder_websocket_resumes_on_the_same_token_and_refuses_protocol_errors() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let r = create_one(
        &s,
        &alice,
        "/alice/same",
        "FOLDER",
        &["WEBSOCKET"],
        "RENAME",
    )
    .await;
    let endpoint = r["endpoint"].as_str().unwrap().to_owned();
    let a = random_bytes(300_000, 1);
    let b = random_bytes(200_000, 2);
    let mut c = FolderClient::open(&endpoint).await;
    c.list(&[(1, "x/a.bin", &a, 5), (2, "b.bin", &b, 6)]).await;
    c.read_until(|c| c.ok.len() == 2).await.unwrap();
    c.chunk(1, &a).await;
    c.chunk(2, &b[..100_000]).await;
    c.read_until(|c| c.completed == 1).await.unwrap();
    drop(c);

    // Same token: a.bin is done (SKIP); b.bin goes on (the client sends it
    // from the start; the server keeps its 100,000 bytes).
    let mut c = FolderClient::open(&endpoint).await;
    c.list(&[(10, "x/a.bin", &a, 5), (11, "b.bin", &b, 6)])
        .await;
    c.read_until(|c| c.ok.len() + c.skip.len() == 2)
        .await
        .unwrap();
    assert_eq!((c.skip.clone(), c.ok.clone()), (vec![10], vec![11]));
    for piece in b.chunks(64 * 1024) {
        c.chunk(11, piece).await;
    }
    c.read_until(|c| c.completed == 2).await.unwrap();
    c.close().await;
    assert_eq!(download(&s, &alice, "alice", "same/b.bin").await.1, b);
    assert_eq!(download(&s, &alice, "alice", "same/x/a.bin").await.1, a);

    // RENAME on an existing folder: a new folder beside it.
    let r = create_one(
        &s,
        &alice,
        "/alice/same",
        "FOLDER",
        &["WEBSOCKET"],
        "RENAME",
    )
    .await;
    let mut c = FolderClient::open(r["endpoint"].as_str().unwrap()).await;
    c.list(&[(1, "n.txt", b"n", 1)]).await;
    c.read_until(|c| c.ok.len() == 1).await.unwrap();
    c.chunk(1, b"n").await;
    c.read_until(|c| c.completed == 1).await.unwrap();
    c.close().await;
    assert_eq!(
        download(&s, &alice, "alice", "same (1)/n.txt").await.1,
        b"n"
    );
    // REJECT on an existing folder fails at create.
    let (st, v) = create(
        &s,
        &alice,
        json!([{"id": "/alice/same", "type": "FOLDER", "supportedProtocols": ["WEBSOCKET"], "conflictPolicy": "REJECT"}]),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    ucloud_error(&v, "ALREADY_EXISTS");

    // Protocol errors close with 4400: a CHUNK for a file never listed,
    // an unknown opcode, a path that climbs out of the folder.
    let r = create_one(&s, &alice, "/alice/err", "FOLDER", &["WEBSOCKET"], "RENAME").await;
    let endpoint = r["endpoint"].as_str().unwrap().to_owned();
    let mut c = FolderClient::open(&endpoint).await;
    c.chunk(99, b"zz").await;
    assert_eq!(closed(&mut c.ws).await, 4400);
    let mut c = FolderClient::open(&endpoint).await;
    c.ws.send(Message::Binary(Bytes::from_static(&[1, 0, 0, 0, 1])))
        .await
        .unwrap();
    assert_eq!(closed(&mut c.ws).await, 4400);
    let mut c = FolderClient::open(&endpoint).await;
    c.list(&[(1, "../escape.txt", b"e", 1)]).await;
    assert_eq!(closed(&mut c.ws).await, 4400);
    // A file token on the folder endpoint, and a forged token.
    let f = create_one(
        &s,
        &alice,
        "/alice/one.txt",
        "FILE",
        &["WEBSOCKET"],
        "RENAME",
    )
    .await;
    let url = format!(
        "{}?token={}",
        endpoint.split('?').next().unwrap(),
        f["token"].as_str().unwrap()
    );
    let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
    let (head, sig) = endpoint.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", sig.chars().rev().collect::<String>());
    let err = tokio_tungstenite::connect_async(forged).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}

/// The chunk that completed a file, sent again (its answer was lost),
/// answers the same success.
#[tokio::test]
async fn chunked_completing_chunk_sent_again_answers_the_same_success() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(3000, 33);
    let r = create_one(
        &s,
        &alice,
        "/alice/again.bin",
        "FILE",
        &["CHUNKED"],
        "RENAME",
    )
    .await;
    let t = r["token"].as_str().unwrap();
    let (st, v) = chunk(&s, t, -1, Some(data.len()), &data[..1000]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, first) = chunk(&s, t, 1000, Some(data.len()), &data[1000..]).await;
    assert_eq!(st, StatusCode::OK, "{first}");
    let (st, again) = chunk(&s, t, 1000, Some(data.len()), &data[1000..]).await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(again, first);
    assert_eq!(download(&s, &alice, "alice", "again.bin").await.1, data);
}

/// Issue 11, A: `RENAME` of a 255-byte name that is taken shortens the stem
/// so that ` (1)` fits: the new name is exactly 255 bytes, and the server
/// starts again over it.
#[tokio::test]
async fn a_255_byte_name_renamed_on_conflict_fits_the_name_limit() {
    let mut s = Server::start();
    let alice = user(&s, "alice").await;
    let stem = "u".repeat(251);
    let name = format!("{stem}.bin");
    assert_eq!(name.len(), 255);
    for data in [&b"one"[..], &b"two"[..]] {
        let r = create_one(
            &s,
            &alice,
            &format!("/alice/{name}"),
            "FILE",
            &["CHUNKED"],
            "RENAME",
        )
        .await;
        let t = r["token"].as_str().unwrap();
        let (st, v) = chunk(&s, t, -1, Some(data.len()), data).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let renamed = format!("{} (1).bin", &stem[..247]);
    assert_eq!(renamed.len(), 255);
    assert_eq!(download(&s, &alice, "alice", &name).await.1, b"one");
    assert_eq!(download(&s, &alice, "alice", &renamed).await.1, b"two");
    s.restart();
    assert_eq!(download(&s, &alice, "alice", &renamed).await.1, b"two");
}

/// The kill loop's finding: a chunk re-sent below the received bytes (a
/// range written aside) that a newer request on the upload stops answered
/// `400 BAD_REQUEST` "the body ended after …", as if its client had cut
/// it; it is `409`, the hand-over's answer, and the bytes are intact.
#[tokio::test]
async fn a_resent_chunk_stopped_by_a_newer_request_answers_409_not_a_cut_body() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = Server::start();
    let alice = user(&s, "alice").await;
    let data = random_bytes(4000, 41);
    let r = create_one(
        &s,
        &alice,
        "/alice/stop.bin",
        "FILE",
        &["CHUNKED"],
        "RENAME",
    )
    .await;
    let t = r["token"].as_str().unwrap();
    let (st, v) = chunk(&s, t, 0, Some(4000), &data[..2000]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // The first 2,000 bytes again, only 100 of them sent for now.
    let addr = s.url.strip_prefix("http://").unwrap().to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /ucloud/chunked HTTP/1.1\r\nHost: {addr}\r\nChunked-Upload-Token: {t}\r\nChunked-Upload-Offset: 0\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&data[..100]).await.unwrap();
    tcp.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A newer request takes the upload over and completes it.
    let (st, v) = chunk(&s, t, 2000, Some(4000), &data[2000..]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // The answer, read up to the end of its JSON body (the server may keep
    // the connection open to drain what the client still sends).
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while !answer.ends_with(b"}") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    assert!(answer.contains("\"errorCode\""), "{answer}");
    assert_eq!(download(&s, &alice, "alice", "stop.bin").await.1, data);
}
