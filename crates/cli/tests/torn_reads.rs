//! Downloads during concurrent replaces: every body is one whole committed
//! version, the one its ETag and Repr-Digest name (issue 11, D).

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const SIZE: usize = 256 << 10;
const READS: u64 = 2000;

async fn replace_with(s: &Server, tok: &str, byte: u8) {
    let sess = create_session(
        s,
        tok,
        json!({"path": "v.bin", "size": SIZE, "conflict": "replace"}),
    )
    .await;
    let up = sess["uploads"][0]["id"].as_str().unwrap().to_owned();
    let (st, v) = part(s, tok, &up, 1, vec![byte; SIZE]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let id = sess["id"].as_str().unwrap();
    let path = format!("/v1/sessions/{id}/commit");
    let (st, v) = call(s, Method::POST, &path, Some(tok), None).await;
    // Two commits to one path at once answer 409: the replacer is alone,
    // so every commit lands.
    assert_eq!(st, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_download_during_concurrent_replaces_returns_one_whole_version() {
    let s = Arc::new(Server::start());
    let tok = user(&s, "tina").await;
    replace_with(&s, &tok, b'a').await;
    let etag_of = |b: u8| format!("\"{}\"", sha256_hex(&vec![b; SIZE]));
    let (etag_a, etag_b) = (etag_of(b'a'), etag_of(b'b'));

    let stop = Arc::new(AtomicBool::new(false));
    let replaces = Arc::new(AtomicU64::new(0));
    let replacer = {
        let (s, tok, stop, replaces) = (s.clone(), tok.clone(), stop.clone(), replaces.clone());
        tokio::spawn(async move {
            let mut byte = b'b';
            while !stop.load(Ordering::Relaxed) {
                replace_with(&s, &tok, byte).await;
                replaces.fetch_add(1, Ordering::Relaxed);
                byte = if byte == b'a' { b'b' } else { b'a' };
            }
        })
    };

    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for r in 0..4u64 {
        let (s, tok, reads) = (s.clone(), tok.clone(), reads.clone());
        let (etag_a, etag_b) = (etag_a.clone(), etag_b.clone());
        readers.push(tokio::spawn(async move {
            let client = http();
            let url = format!("{}/v1/spaces/tina/files/v.bin", s.url);
            let mut i = r;
            while reads.fetch_add(1, Ordering::Relaxed) < READS {
                i += 1;
                let mut req = client.get(&url).bearer_auth(&tok);
                // Every other read asks for a range somewhere in the file.
                let ranged = i % 2 == 0;
                let (first, last) = ((i * 7919) % (SIZE as u64 / 2), SIZE as u64 - 1 - (i % 1000));
                if ranged {
                    req = req.header("range", format!("bytes={first}-{last}"));
                }
                let resp = req.send().await.unwrap();
                let want = if ranged {
                    StatusCode::PARTIAL_CONTENT
                } else {
                    StatusCode::OK
                };
                assert_eq!(resp.status(), want);
                let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
                let digest = resp.headers()["repr-digest"].to_str().unwrap().to_owned();
                let body = resp.bytes().await.unwrap();
                let byte = if etag == etag_a {
                    b'a'
                } else {
                    assert_eq!(etag, etag_b, "the ETag names one of the two versions");
                    b'b'
                };
                let hex = etag.trim_matches('"');
                let bytes: Vec<u8> = (0..32)
                    .map(|k| u8::from_str_radix(&hex[2 * k..2 * k + 2], 16).unwrap())
                    .collect();
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                assert_eq!(digest, format!("sha-256=:{b64}:"), "Repr-Digest agrees");
                let len = if ranged {
                    (last - first + 1) as usize
                } else {
                    SIZE
                };
                assert_eq!(body.len(), len);
                let torn = body.iter().filter(|&&b| b != byte).count();
                assert_eq!(
                    torn, 0,
                    "a body under ETag {etag} holds {torn} bytes of the other version"
                );
            }
        }));
    }
    for r in readers {
        r.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    replacer.await.unwrap();
    let replaced = replaces.load(Ordering::Relaxed);
    eprintln!("{READS} reads during {replaced} replaces");
    assert!(replaced >= 2, "the reads ran while the file was replaced");
}
