//! `ferry serve --store s3` end to end, against a real S3-compatible
//! server: bytes in the bucket, the namespace in the metadata.
//!
//! Needs `FERRY_S3_ENDPOINT` and AWS credentials in the environment
//! (`eval "$(scripts/s3-local.sh)"` starts a local server); without them
//! the tests say so and pass, unless `FERRY_REQUIRE_S3=1` (CI's S3 stage).

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const MIB: usize = 1024 * 1024;

fn endpoint() -> Option<String> {
    match std::env::var("FERRY_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(
                std::env::var("FERRY_REQUIRE_S3").is_err(),
                "FERRY_REQUIRE_S3 is set but FERRY_S3_ENDPOINT is not"
            );
            eprintln!("SKIPPED: no FERRY_S3_ENDPOINT (eval \"$(scripts/s3-local.sh)\")");
            None
        }
    }
}

/// A fresh bucket.
async fn bucket(c: &aws_sdk_s3::Client, name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let bucket = format!("ferry-{name}-{nanos}");
    c.create_bucket().bucket(&bucket).send().await.unwrap();
    bucket
}

/// Multipart uploads still open in the bucket.
async fn open_mpus(c: &aws_sdk_s3::Client, bucket: &str) -> usize {
    let out = c
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    out.uploads().len()
}

fn on_s3<'a>(endpoint: &'a str, bucket: &'a str) -> [(&'a str, &'a str); 4] {
    [
        ("FERRY_STORE", "s3"),
        ("FERRY_S3_ENDPOINT", endpoint),
        ("FERRY_S3_BUCKET", bucket),
        ("FERRY_S3_PREFIX", "ferry/"),
    ]
}

async fn commit(s: &Server, tok: &str, session: &str) -> (StatusCode, Value) {
    let path = format!("/v1/sessions/{session}/commit");
    call(s, Method::POST, &path, Some(tok), None).await
}

#[tokio::test]
async fn native_parts_out_of_order_land_in_the_bucket_and_a_replace_keeps_readers_whole() {
    let Some(endpoint) = endpoint() else { return };
    let c = s3_client(&endpoint).await;
    let b = bucket(&c, "native").await;
    let s = Server::start_with(&on_s3(&endpoint, &b));
    let tok = user(&s, "alice").await;

    // 40 MiB in 8 MiB parts, sent last first: whole S3 parts (16 MiB
    // cells) and pieces combined once they cover a cell.
    let data = random_bytes(40 * MIB + 123, 7);
    let v = create_session(
        &s,
        &tok,
        json!({"uploads": [{"path": "big/blob.bin", "size": data.len(), "part_size": 8 * MIB}]}),
    )
    .await;
    let (sess, up) = (
        v["id"].as_str().unwrap().to_owned(),
        v["uploads"][0]["id"].as_str().unwrap().to_owned(),
    );
    for n in (1..=6).rev() {
        let chunk = &data[(n - 1) * 8 * MIB..(n * 8 * MIB).min(data.len())];
        let (st, v) = part(&s, &tok, &up, n, chunk).await;
        assert_eq!(st, StatusCode::OK, "part {n}: {v}");
    }
    assert_eq!(
        open_mpus(&c, &b).await,
        1,
        "one multipart upload per staged upload"
    );
    let (st, v) = commit(&s, &tok, &sess).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["uploads"][0]["file"]["sha256"],
        json!(sha256_hex(&data)),
        "{v}"
    );
    let (st, got) = download(&s, &tok, "alice", "big/blob.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert!(got == data, "the download differs");
    assert_eq!(open_mpus(&c, &b).await, 0, "the multipart upload completed");
    let k = keys(&c, &b).await;
    assert_eq!(
        k,
        vec![format!("ferry/objects/{up}")],
        "one object, no pieces left"
    );

    // A ranged read streams from the object.
    let resp = http()
        .get(s.url_of("/v1/spaces/alice/files/big/blob.bin"))
        .bearer_auth(&tok)
        .header("range", "bytes=16777200-16777299")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.bytes().await.unwrap(), &data[16_777_200..16_777_300]);

    // Replace it while a download of the old version streams: the old
    // object stays readable (retired later), the path names the new one.
    let old = http()
        .get(s.url_of("/v1/spaces/alice/files/big/blob.bin"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), StatusCode::OK);
    let new = random_bytes(3 * MIB, 8);
    let v = create_session(
        &s,
        &tok,
        json!({"conflict": "replace", "uploads": [{"path": "big/blob.bin", "size": new.len()}]}),
    )
    .await;
    let (sess2, up2) = (
        v["id"].as_str().unwrap().to_owned(),
        v["uploads"][0]["id"].as_str().unwrap().to_owned(),
    );
    let range = format!("bytes 0-{}/{}", new.len() - 1, new.len());
    let (st, v) = put(
        &s,
        &format!("/v1/uploads/{up2}"),
        Some(&tok),
        &[("content-range", &range)],
        new.clone(),
    )
    .await;
    assert!(st.is_success(), "{st} {v}");
    let (st, v) = commit(&s, &tok, &sess2).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let old = old.bytes().await.unwrap();
    assert!(
        old == data,
        "the download that began before the replace is whole"
    );
    let (_, got) = download(&s, &tok, "alice", "big/blob.bin").await;
    assert!(got == new, "the path names the new version");
    let mut k = keys(&c, &b).await;
    k.sort();
    let mut want = vec![
        format!("ferry/objects/{up}"),
        format!("ferry/objects/{up2}"),
    ];
    want.sort();
    assert_eq!(k, want, "the old object is retired later, not copied");

    // Deleted: gone from the namespace at once.
    let (st, _) = call(
        &s,
        Method::DELETE,
        "/v1/spaces/alice/files/big/blob.bin",
        Some(&tok),
        None,
    )
    .await;
    assert!(st.is_success(), "{st}");
    let (st, _) = download(&s, &tok, "alice", "big/blob.bin").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tus_patches_of_4_kib_land_and_survive_a_restart() {
    let Some(endpoint) = endpoint() else { return };
    let c = s3_client(&endpoint).await;
    let b = bucket(&c, "tus").await;
    let mut s = Server::start_with(&on_s3(&endpoint, &b));
    let tok = user(&s, "alice").await;
    let data = random_bytes(64 * 1024 + 17, 9);
    let created = http()
        .post(s.url_of("/tus/"))
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", data.len().to_string())
        .header("Upload-Metadata", "filename dC5iaW4=") // t.bin
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let loc = created.headers()["location"].to_str().unwrap().to_owned();
    let id = loc.rsplit('/').next().unwrap().to_owned();
    let patch = |s: &Server, offset: usize, chunk: Vec<u8>| {
        http()
            .patch(s.url_of(&format!("/tus/{id}")))
            .bearer_auth(&tok)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(chunk)
            .send()
    };
    let half = 8 * 4096;
    for off in (0..half).step_by(4096) {
        let r = patch(&s, off, data[off..off + 4096].to_vec())
            .await
            .unwrap();
        let st = r.status();
        assert_eq!(
            st,
            StatusCode::NO_CONTENT,
            "at {off}: {}",
            r.text().await.unwrap()
        );
    }
    // Every acknowledged byte is in the bucket: a restart loses none.
    s.kill9();
    s.restart();
    let head = http()
        .head(s.url_of(&format!("/tus/{id}")))
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.headers()["upload-offset"].to_str().unwrap(),
        half.to_string()
    );
    for off in (half..data.len()).step_by(4096) {
        let end = (off + 4096).min(data.len());
        let r = patch(&s, off, data[off..end].to_vec()).await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "at {off}");
    }
    let (st, got) = download(&s, &tok, "alice", "t.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert!(got == data, "the tus file differs");
    assert_eq!(open_mpus(&c, &b).await, 0);
    let pieces: Vec<_> = keys(&c, &b)
        .await
        .into_iter()
        .filter(|k| k.contains("/pieces/"))
        .collect();
    assert!(pieces.is_empty(), "pieces left: {pieces:?}");
}

#[tokio::test]
async fn a_multipart_upload_that_outlived_its_committed_file_is_aborted_at_start_up_and_the_file_kept()
 {
    let Some(endpoint) = endpoint() else { return };
    let c = s3_client(&endpoint).await;
    let b = bucket(&c, "outlived").await;
    let mut s = Server::start_with(&on_s3(&endpoint, &b));
    let tok = user(&s, "olga").await;
    let data = random_bytes(4096, 51);
    let (st, v) = put(
        &s,
        "/v1/spaces/olga/files/kept.bin",
        Some(&tok),
        &[],
        data.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // A multipart upload on the file's object key, as a create sent twice
    // leaves (or one made before a small upload's length was known).
    let objects: Vec<_> = keys(&c, &b)
        .await
        .into_iter()
        .filter(|k| k.starts_with("ferry/objects/"))
        .collect();
    assert_eq!(objects.len(), 1, "{objects:?}");
    c.create_multipart_upload()
        .bucket(&b)
        .key(&objects[0])
        .send()
        .await
        .unwrap();
    assert_eq!(open_mpus(&c, &b).await, 1);
    // Start-up recovery finds it listed as staged, its upload committed:
    // it goes, the file's object stays.
    s.restart();
    assert_eq!(open_mpus(&c, &b).await, 0);
    let (st, got) = download(&s, &tok, "olga", "kept.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert!(got == data, "the file differs");
}

/// A whole small file whose checksum does not match is refused (460), and
/// nothing of it stays: the PATCHes that follow, in halves, are not
/// compared with the refused bytes.
#[tokio::test]
async fn a_refused_whole_tus_patch_leaves_nothing_a_later_patch_is_compared_with() {
    let Some(endpoint) = endpoint() else { return };
    let c = s3_client(&endpoint).await;
    let b = bucket(&c, "refused").await;
    let s = Server::start_with(&on_s3(&endpoint, &b));
    let tok = user(&s, "rita").await;
    let data = random_bytes(8192, 61);
    let created = http()
        .post(s.url_of("/tus/"))
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", data.len().to_string())
        .header("Upload-Metadata", "filename ci5iaW4=") // r.bin
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let loc = created.headers()["location"].to_str().unwrap().to_owned();
    let patch = |offset: usize, body: Vec<u8>| {
        http()
            .patch(s.url_of(&loc))
            .bearer_auth(&tok)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(body)
    };
    let r = patch(0, vec![0xEE; data.len()])
        .header("Upload-Checksum", "sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 460, "{:?}", r.text().await);
    for (offset, half) in [(0, &data[..4096]), (4096, &data[4096..])] {
        let r = patch(offset, half.to_vec()).send().await.unwrap();
        let st = r.status();
        assert_eq!(
            st,
            StatusCode::NO_CONTENT,
            "at {offset}: {:?}",
            r.text().await
        );
    }
    let (st, got) = download(&s, &tok, "rita", "r.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert!(got == data, "the file differs");
}

#[test]
fn serve_on_a_missing_bucket_exits_with_a_clear_message() {
    let Some(endpoint) = endpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(ferry_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "s3"])
        .args([
            "--s3-endpoint",
            &endpoint,
            "--s3-bucket",
            "ferry-no-such-bucket",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ferry-no-such-bucket") && err.contains("does not exist"),
        "{err}"
    );
    let out = std::process::Command::new(ferry_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "s3"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("FERRY_S3_BUCKET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--s3-bucket"), "{err}");
}

/// A TCP relay to the S3 server that can be cut: while down, it drops
/// every connection it holds and every new one.
struct Relay {
    url: String,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<tokio::sync::Notify>,
}

impl Relay {
    async fn start(target: &str) -> Relay {
        use std::sync::atomic::Ordering;
        let target = target.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cut = std::sync::Arc::new(tokio::sync::Notify::new());
        let (d, c) = (down.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let (target, c) = (target.clone(), c.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = c.notified() => {}
                    }
                });
            }
        });
        Relay { url, down, cut }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down {
            self.cut.notify_waiters();
        }
    }
}

// Multi-threaded: the relay must run while `Server::start_with` blocks on
// the server's first line (its start-up check goes through the relay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bucket_answers_503_with_retry_after_and_the_upload_resumes_after() {
    let Some(endpoint) = endpoint() else { return };
    let c = s3_client(&endpoint).await;
    let b = bucket(&c, "down").await;
    let relay = Relay::start(&endpoint).await;
    let s = Server::start_with(&on_s3(&relay.url, &b));
    let tok = user(&s, "alice").await;
    let data = random_bytes(3 * MIB, 11);
    let v = create_session(
        &s,
        &tok,
        json!({"uploads": [{"path": "d.bin", "size": data.len(), "part_size": MIB}]}),
    )
    .await;
    let (sess, up) = (
        v["id"].as_str().unwrap().to_owned(),
        v["uploads"][0]["id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(part(&s, &tok, &up, 1, &data[..MIB]).await.0, StatusCode::OK);

    relay.set_down(true);
    // The native API: 503, its JSON error, Retry-After.
    let resp = http()
        .put(s.url_of(&format!("/v1/uploads/{up}/parts/2")))
        .bearer_auth(&tok)
        .body(data[MIB..2 * MIB].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    let text = v.to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.contains("/tmp"),
        "{text}"
    );
    // tus: 503 in tus's plain text, Retry-After too (the creation of a
    // large upload starts its multipart upload).
    let created = http()
        .post(s.url_of("/tus/"))
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", (64 * MIB).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(created.headers().contains_key("retry-after"));
    assert!(created.headers().contains_key("tus-resumable"));
    // A small upload keeps nothing in the bucket until its bytes come: it
    // is made, and its bytes get the 503, then land once the bucket is
    // back.
    let created = http()
        .post(s.url_of("/tus/"))
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let loc = created.headers()["location"].to_str().unwrap().to_owned();
    let small = s.url_of(&format!("/tus/{}", loc.rsplit('/').next().unwrap()));
    let patch = || {
        http()
            .patch(&small)
            .bearer_auth(&tok)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .body(&b"0123456789"[..])
    };
    let r = patch().send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.headers().contains_key("tus-resumable"));
    // /readyz says so.
    let ready = http().get(s.url_of("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Back up: the part that failed is missing, nothing else; resume.
    relay.set_down(false);
    let r = patch().send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
    let st = status(&s, &tok, &up).await;
    assert_eq!(st["parts_received"], json!(1), "{st}");
    for n in 2..=3 {
        let (code, v) = part(&s, &tok, &up, n, &data[(n - 1) * MIB..n * MIB]).await;
        assert_eq!(code, StatusCode::OK, "part {n}: {v}");
    }
    let (code, v) = commit(&s, &tok, &sess).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let (_, got) = download(&s, &tok, "alice", "d.bin").await;
    assert!(got == data);
}

#[tokio::test]
async fn nothing_is_left_behind_replaced_aborted_and_stray_objects_go() {
    let Some(endpoint) = endpoint() else { return };
    let c = s3_client(&endpoint).await;
    let b = bucket(&c, "sweep").await;
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("ferry.toml");
    std::fs::write(
        &toml,
        "[store.s3]\nretire_after_secs = 1\nsweep_interval_secs = 1\n",
    )
    .unwrap();
    let mut env = on_s3(&endpoint, &b).to_vec();
    let cfg = toml.to_str().unwrap().to_owned();
    env.push(("FERRY_CONFIG", &cfg));
    let s = Server::start_with(&env);
    let tok = user(&s, "alice").await;

    // A stray object under the prefix, as a crash between a replace and
    // its delayed delete leaves one.
    c.put_object()
        .bucket(&b)
        .key("ferry/objects/stray")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"lost"))
        .send()
        .await
        .unwrap();
    // A file, then its replacement: the first object is retired.
    let mut ids = Vec::new();
    for (conflict, data) in [
        ("fail", b"first".to_vec()),
        ("replace", b"second!".to_vec()),
    ] {
        let v = create_session(
            &s,
            &tok,
            json!({"conflict": conflict, "uploads": [{"path": "f.txt", "size": data.len()}]}),
        )
        .await;
        let (sess, up) = (
            v["id"].as_str().unwrap().to_owned(),
            v["uploads"][0]["id"].as_str().unwrap().to_owned(),
        );
        assert_eq!(part(&s, &tok, &up, 1, &data).await.0, StatusCode::OK);
        assert_eq!(commit(&s, &tok, &sess).await.0, StatusCode::OK);
        ids.push(up);
    }
    // An upload aborted half-way: its multipart upload and pieces go.
    let v = create_session(
        &s,
        &tok,
        json!({"uploads": [{"path": "g.bin", "size": 10}]}),
    )
    .await;
    let (sess, up) = (
        v["id"].as_str().unwrap().to_owned(),
        v["uploads"][0]["id"].as_str().unwrap().to_owned(),
    );
    let (st, v) = put(
        &s,
        &format!("/v1/uploads/{up}"),
        Some(&tok),
        &[("content-range", "bytes 0-4/10")],
        b"12345".to_vec(),
    )
    .await;
    assert!(st.is_success(), "{st} {v}");
    let (st, v) = call(
        &s,
        Method::DELETE,
        &format!("/v1/sessions/{sess}"),
        Some(&tok),
        None,
    )
    .await;
    assert!(st.is_success(), "{st} {v}");

    // An upload whose one part is in, not committed: its object (named by
    // the upload's id, or, where the part claimed nothing, by the name its
    // write gave it) is kept while the upload's record names it; one named
    // the way such a write names one, which no record names, is a stray.
    let v = create_session(&s, &tok, json!({"uploads": [{"path": "h.bin", "size": 5}]})).await;
    let (held_sess, held) = (
        v["id"].as_str().unwrap().to_owned(),
        v["uploads"][0]["id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(part(&s, &tok, &held, 1, b"held!").await.0, StatusCode::OK);
    let named: Vec<String> = keys(&c, &b)
        .await
        .into_iter()
        .filter(|k| holds_upload(k, &format!("ferry/objects/{held}")))
        .collect();
    assert_eq!(named.len(), 1, "the part's object: {named:?}");
    c.put_object()
        .bucket(&b)
        .key(format!("ferry/objects/{held}.0123456789abcdef"))
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"lost"))
        .send()
        .await
        .unwrap();

    // Past the grace, only the current file's object is left (named by
    // its upload, or by the name the write that stored it gave it), and
    // the open upload's.
    let file = format!("ferry/objects/{}", ids[1]);
    let is_file = |k: &String| holds_upload(k, &file);
    let settled = |left: &[String]| matches!(left, [x, y] if (is_file(x) && *y == named[0]) || (is_file(y) && *x == named[0]));
    let mut left = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        left = keys(&c, &b).await;
        if settled(&left) {
            break;
        }
    }
    assert!(settled(&left), "what is left in the bucket: {left:?}");
    assert_eq!(commit(&s, &tok, &held_sess).await.0, StatusCode::OK);
    let (_, got) = download(&s, &tok, "alice", "h.bin").await;
    assert_eq!(got, b"held!");
    assert_eq!(open_mpus(&c, &b).await, 0, "no multipart upload left");
    let (_, got) = download(&s, &tok, "alice", "f.txt").await;
    assert_eq!(got, b"second!");
}

#[tokio::test]
async fn a_multipart_upload_aborted_behind_ferrys_back_fails_the_session_with_its_reason() {
    let Some(endpoint) = endpoint() else { return };
    let c = s3_client(&endpoint).await;
    let b = bucket(&c, "aborted").await;
    let s = Server::start_with(&on_s3(&endpoint, &b));
    let tok = user(&s, "alice").await;
    let cell = 16 * MIB;
    let data = random_bytes(2 * cell, 12);
    let v = create_session(
        &s,
        &tok,
        json!({"uploads": [{"path": "gone.bin", "size": data.len(), "part_size": cell}]}),
    )
    .await;
    let (sess, up) = (
        v["id"].as_str().unwrap().to_owned(),
        v["uploads"][0]["id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        part(&s, &tok, &up, 1, &data[..cell]).await.0,
        StatusCode::OK
    );
    // Someone aborts it in the bucket.
    let open = c.list_multipart_uploads().bucket(&b).send().await.unwrap();
    let u = &open.uploads()[0];
    c.abort_multipart_upload()
        .bucket(&b)
        .key(u.key().unwrap())
        .upload_id(u.upload_id().unwrap())
        .send()
        .await
        .unwrap();
    let (st, v) = part(&s, &tok, &up, 2, &data[cell..]).await;
    assert_eq!(st, StatusCode::GONE, "{v}");
    let (st, v) = call(
        &s,
        Method::GET,
        &format!("/v1/sessions/{sess}"),
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "failed", "{v}");
    let why = v.to_string();
    assert!(why.contains("gone from storage"), "{v}");
}

/// Asks for a presigned request for part `n`.
async fn presign(s: &Server, tok: &str, up: &str, n: u32, body: Value) -> (StatusCode, Value) {
    let path = format!("/v1/uploads/{up}/parts/{n}/presign");
    call(s, Method::POST, &path, Some(tok), Some(body)).await
}

/// Sends `data` with a presigned request, as an HTTP client does (its
/// own Content-Length); the store's status and body.
async fn send_presigned(p: &Value, url: &str, data: &[u8]) -> (StatusCode, String) {
    assert_eq!(p["method"], "PUT", "{p}");
    let mut rb = http().put(url).body(data.to_vec());
    for (k, v) in p["headers"].as_object().unwrap() {
        if k != "content-length" {
            rb = rb.header(k.as_str(), v.as_str().unwrap());
        }
    }
    let resp = rb.send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

#[tokio::test]
async fn ferry_upload_direct_sends_the_parts_straight_to_the_bucket_and_commits_them_verified() {
    let Some(endpoint) = endpoint() else { return };
    let c = s3_client(&endpoint).await;
    let b = bucket(&c, "direct").await;
    let s = Server::start_with(&on_s3(&endpoint, &b));
    let tok = user(&s, "alice").await;
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(40 * MIB + 77, 21);
    let file = write_file(dir.path(), "big.bin", &data);
    let out = cli(
        &s,
        &tok,
        &[
            "upload",
            "--direct",
            "--part-digests",
            "-q",
            file.to_str().unwrap(),
            "alice/direct/big.bin",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (st, got) = download(&s, &tok, "alice", "direct/big.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert!(got == data, "the download differs");
    // The bytes never went through Ferry: its write path saw none.
    let metrics = metrics(&s).await;
    let received: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("ferry_bytes_received_total") && !l.ends_with(" 0"))
        .collect();
    assert!(
        received.is_empty(),
        "bytes went through Ferry: {received:?}"
    );
    // It read the object back once to check the file's SHA-256.
    assert!(
        metrics.contains(&format!("ferry_commit_rehash_bytes_total {}", data.len())),
        "{metrics}"
    );
    assert_eq!(open_mpus(&c, &b).await, 0, "the multipart upload completed");
    assert_eq!(keys(&c, &b).await.len(), 1, "one object, nothing else");
}

#[tokio::test]
async fn ferry_upload_direct_with_a_part_size_off_the_stores_grid_fails_at_once_saying_which_and_a_rerun_with_it_succeeds()
 {
    let Some(endpoint) = endpoint() else { return };
    let c = s3_client(&endpoint).await;
    let b = bucket(&c, "direct-grid").await;
    let s = Server::start_with(&on_s3(&endpoint, &b));
    let tok = user(&s, "alice").await;
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(20 * MIB + 5, 23);
    let file = write_file(dir.path(), "big.bin", &data);
    let state = dir.path().join("state");
    let upload = |part_size: &str| {
        cli(
            &s,
            &tok,
            &[
                "upload",
                "--direct",
                "-q",
                "--part-size",
                part_size,
                "--state-dir",
                state.to_str().unwrap(),
                file.to_str().unwrap(),
                "alice/direct/grid.bin",
            ],
        )
    };
    // The store's parts are 16 MiB: 8 MiB parts cannot go to the bucket.
    // That is no passing contention, so the client does not retry it.
    let started = std::time::Instant::now();
    let out = upload("8MiB");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("make the upload's part size 16777216"),
        "{err}"
    );
    assert!(!err.contains("retrying"), "retried: {err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    // The part size it names works, though the first run left its state:
    // another part size is another upload.
    let out = upload("16MiB");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (st, got) = download(&s, &tok, "alice", "direct/grid.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert!(got == data, "the download differs");
}

#[tokio::test]
async fn presigned_parts_are_checked_by_digest_and_signature_and_mix_with_parts_sent_through_ferry()
{
    let Some(endpoint) = endpoint() else { return };
    let c = s3_client(&endpoint).await;
    let b = bucket(&c, "presign").await;
    let s = Server::start_with(&on_s3(&endpoint, &b));
    let tok = user(&s, "alice").await;
    let cell = 16 * MIB;
    let data = random_bytes(cell + 1000, 22);
    let v = create_session(
        &s,
        &tok,
        json!({"uploads": [{"path": "mixed.bin", "size": data.len()}], "expires_in": 600}),
    )
    .await;
    let (sess, up) = (
        v["id"].as_str().unwrap().to_owned(),
        v["uploads"][0]["id"].as_str().unwrap().to_owned(),
    );
    let session_expiry = v["expires_at"].as_str().unwrap().to_owned();
    let (st, p) = presign(
        &s,
        &tok,
        &up,
        1,
        json!({"sha256": sha256_hex(&data[..cell])}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(
        (p["part"].as_u64(), p["offset"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(p["size"].as_u64(), Some(cell as u64));
    let url = p["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&endpoint), "{url}");
    assert!(
        p["headers"]
            .as_object()
            .unwrap()
            .contains_key("x-amz-checksum-sha256"),
        "{p}"
    );
    // RFC 3339 in UTC: comparable as text. Never past the session.
    assert!(
        p["expires_at"].as_str().unwrap() <= session_expiry.as_str(),
        "{p}"
    );

    // Other bytes than the digest names: the store refuses them.
    let mut wrong = data[..cell].to_vec();
    wrong[5] ^= 1;
    let (st, body) = send_presigned(&p, &url, &wrong).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    // A tampered URL (another part number): the signature fails.
    let tampered = url.replace("partNumber=1", "partNumber=2");
    assert_ne!(tampered, url);
    let (st, body) = send_presigned(&p, &tampered, &data[..cell]).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    // The part's size is signed too: a short body is refused.
    let (st, body) = send_presigned(&p, &url, &data[..cell / 2]).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    // Nothing arrived yet: commit names what is missing.
    let (st, v) = commit(&s, &tok, &sess).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");

    let (st, body) = send_presigned(&p, &url, &data[..cell]).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // The status learns the part from the bucket; part 2 goes through Ferry.
    let v = status(&s, &tok, &up).await;
    assert_eq!(v["received_bytes"].as_u64(), Some(cell as u64), "{v}");
    let (st, v) = part(&s, &tok, &up, 2, &data[cell..]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = commit(&s, &tok, &sess).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["uploads"][0]["file"]["sha256"],
        json!(sha256_hex(&data)),
        "{v}"
    );
    let (st, got) = download(&s, &tok, "alice", "mixed.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert!(got == data, "the download differs");
    // A committed upload is presigned no more.
    let (st, v) = presign(&s, &tok, &up, 1, json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "committed", "{v}");
}

#[tokio::test]
async fn a_direct_part_of_the_wrong_size_or_a_lying_client_digest_fails_the_commit_by_name() {
    let Some(endpoint) = endpoint() else { return };
    let c = s3_client(&endpoint).await;
    let b = bucket(&c, "direct-bad").await;
    let s = Server::start_with(&on_s3(&endpoint, &b));
    let tok = user(&s, "alice").await;
    let cell = 16 * MIB;
    let data = random_bytes(2 * cell, 23);

    // Parts of another size than the store's cannot be presigned.
    let v = create_session(
        &s,
        &tok,
        json!({"uploads": [{"path": "eight.bin", "size": data.len(), "part_size": 8 * MIB}]}),
    )
    .await;
    let up8 = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    let (st, v) = presign(&s, &tok, &up8, 1, json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(v.to_string().contains("16777216"), "{v}");
    let (st, v) = presign(&s, &tok, &up8, 9, json!({})).await;
    assert_eq!(st, StatusCode::RANGE_NOT_SATISFIABLE, "{v}");
    let (st, v) = presign(&s, &tok, &up8, 1, json!({"sha256": "abc"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");

    let v = create_session(
        &s,
        &tok,
        json!({"uploads": [{"path": "short.bin", "size": data.len()}]}),
    )
    .await;
    let (sess, up) = (
        v["id"].as_str().unwrap().to_owned(),
        v["uploads"][0]["id"].as_str().unwrap().to_owned(),
    );
    // Part 2 goes presigned; part 1 arrives short, put in the bucket by
    // someone holding its credentials (a presigned request signs the size).
    let (st, p) = presign(&s, &tok, &up, 1, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{p}");
    let url = p["url"].as_str().unwrap().to_owned();
    let (st, p2) = presign(&s, &tok, &up, 2, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{p2}");
    let (st, body) = send_presigned(&p2, p2["url"].as_str().unwrap(), &data[cell..]).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let open = c.list_multipart_uploads().bucket(&b).send().await.unwrap();
    let mpu = open
        .uploads()
        .iter()
        .find(|u| u.key().is_some_and(|k| k.ends_with(&up)))
        .unwrap();
    c.upload_part()
        .bucket(&b)
        .key(mpu.key().unwrap())
        .upload_id(mpu.upload_id().unwrap())
        .part_number(1)
        .body(data[..5 * MIB].to_vec().into())
        .send()
        .await
        .unwrap();
    let (st, v) = commit(&s, &tok, &sess).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(v.to_string().contains("part 1"), "{v}");
    // Sent again whole, it commits; a client promising another digest
    // than the bytes' is refused.
    let (st, body) = send_presigned(&p, &url, &data[..cell]).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let lie = json!({"uploads": {up.clone(): {"sha256": sha256_hex(b"other")}}});
    let path = format!("/v1/sessions/{sess}/commit");
    let (st, v) = call(&s, Method::POST, &path, Some(&tok), Some(lie)).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (st, v) = commit(&s, &tok, &sess).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["uploads"][0]["file"]["sha256"],
        json!(sha256_hex(&data)),
        "{v}"
    );
}

#[tokio::test]
async fn a_part_whose_client_pauses_mid_body_still_lands_in_the_bucket() {
    let Some(endpoint) = endpoint() else { return };
    let c = s3_client(&endpoint).await;
    let b = bucket(&c, "pause").await;
    let s = Server::start_with(&on_s3(&endpoint, &b));
    let tok = user(&s, "alice").await;
    // One whole 16 MiB cell: streamed into its S3 part as it arrives.
    let data = random_bytes(16 * MIB, 31);
    let v = create_session(
        &s,
        &tok,
        json!({"path": "paused.bin", "size": data.len(), "auto_commit": true}),
    )
    .await;
    let up = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    let (tx, body) = held_body();
    let send = http()
        .put(s.url_of(&format!("/v1/uploads/{up}/parts/1")))
        .bearer_auth(&tok)
        .header("content-length", data.len())
        .body(body)
        .send();
    let feed = async {
        tx.send(Ok(data[..1].to_vec())).await.unwrap();
        // Longer than the S3 SDK's default stall grace (5 s).
        tokio::time::sleep(std::time::Duration::from_secs(6)).await;
        tx.send(Ok(data[1..].to_vec())).await.unwrap();
        drop(tx);
    };
    let (resp, ()) = tokio::join!(send, feed);
    let (st, v) = decode(resp.unwrap()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, got) = download(&s, &tok, "alice", "paused.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert!(got == data, "the download differs");
}

#[tokio::test]
async fn deepset_forms_post_straight_into_the_bucket_under_a_real_s3_policy_and_land_on_close() {
    let Some(endpoint) = endpoint() else { return };
    let c = s3_client(&endpoint).await;
    let b = bucket(&c, "deepset").await;
    let s = Server::start_with(&on_s3(&endpoint, &b));
    let tok = user(&s, "alice").await;
    let sessions = "/api/v1/workspaces/alice/upload_sessions";
    let (st, ses) = call(&s, Method::POST, sessions, Some(&tok), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED, "{ses}");
    let cfg = &ses["aws_prefixed_request_config"];
    assert_eq!(cfg["url"], json!(format!("{endpoint}/{b}")), "{ses}");
    assert_eq!(
        cfg["fields"]["x-amz-algorithm"], "AWS4-HMAC-SHA256",
        "{ses}"
    );

    let data = random_bytes(3 * MIB + 5, 41);
    let (st, body) = post_form(&ses, &[], "report.pdf", &data).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    let (st, body) = post_form(&ses, &[], "report.pdf.meta.json", br#"{"lang":"en"}"#).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    // The bucket itself enforces the policy: a key outside the session's
    // prefix, and a changed policy, are refused there.
    let (st, body) = post_form(&ses, &[("key", "elsewhere/${filename}")], "x.txt", b"x").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    let forged = cfg["fields"]["policy"].as_str().unwrap().replace('A', "B");
    let (st, body) = post_form(&ses, &[("policy", &forged)], "y.txt", b"y").await;
    assert!(st.is_client_error(), "{st}: {body}");
    // Nothing is visible before the session closes.
    let (st, _) = download(&s, &tok, "alice", "report.pdf").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let path = format!("{sessions}/{}", ses["session_id"].as_str().unwrap());
    let (st, v) = call(
        &s,
        Method::PUT,
        &path,
        Some(&tok),
        Some(json!({"status": "CLOSED"})),
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, v) = call(&s, Method::GET, &path, Some(&tok), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["ingestion_status"],
        json!({"failed_files": 0, "finished_files": 1}),
        "{v}"
    );
    let (st, got) = download(&s, &tok, "alice", "report.pdf").await;
    assert_eq!(st, StatusCode::OK);
    assert!(got == data, "the download differs");
    let hex = ses["session_id"].as_str().unwrap().replace('-', "");
    let (st, v) = call(
        &s,
        Method::GET,
        &format!("/v1/sessions/{hex}"),
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let file = &v["uploads"][0]["file"];
    assert_eq!(file["sha256"], json!(sha256_hex(&data)), "{v}");
    assert_eq!(file["metadata"], json!({"lang": "en"}), "{v}");
    // The posted objects became the file's object: nothing else is left.
    assert_eq!(keys(&c, &b).await.len(), 1, "{:?}", keys(&c, &b).await);
    assert_eq!(open_mpus(&c, &b).await, 0);
}

#[tokio::test]
async fn a_multipart_upload_aborted_before_the_commit_fails_the_session_at_commit() {
    let Some(endpoint) = endpoint() else { return };
    let c = s3_client(&endpoint).await;
    let b = bucket(&c, "gone-at-commit").await;
    let s = Server::start_with(&on_s3(&endpoint, &b));
    let tok = user(&s, "alice").await;
    let data = random_bytes(6 * MIB, 13);
    let v = create_session(&s, &tok, json!({"path": "late.bin", "size": data.len()})).await;
    let (sess, up) = (
        v["id"].as_str().unwrap().to_owned(),
        v["uploads"][0]["id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(part(&s, &tok, &up, 1, &data).await.0, StatusCode::OK);
    let open = c.list_multipart_uploads().bucket(&b).send().await.unwrap();
    let u = &open.uploads()[0];
    c.abort_multipart_upload()
        .bucket(&b)
        .key(u.key().unwrap())
        .upload_id(u.upload_id().unwrap())
        .send()
        .await
        .unwrap();
    let (st, v) = commit(&s, &tok, &sess).await;
    assert_eq!(st, StatusCode::GONE, "{v}");
    let (st, v) = call(
        &s,
        Method::GET,
        &format!("/v1/sessions/{sess}"),
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "failed", "{v}");
    assert!(v.to_string().contains("gone from storage"), "{v}");
    let (st, _) = download(&s, &tok, "alice", "late.bin").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tus_concatenation_joins_partials_on_s3_into_one_verified_file() {
    let Some(endpoint) = endpoint() else { return };
    let c = s3_client(&endpoint).await;
    let b = bucket(&c, "concat").await;
    let s = Server::start_with(&on_s3(&endpoint, &b));
    let tok = user(&s, "alice").await;
    let opts = http()
        .request(Method::OPTIONS, s.url_of("/tus/"))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    let ext = opts.headers()["tus-extension"].to_str().unwrap().to_owned();
    assert!(ext.contains("concatenation"), "{ext}");
    // Partials that cross cells at odd offsets: 5 MiB + 3, then 20 MiB.
    let parts = [random_bytes(5 * MIB + 3, 51), random_bytes(20 * MIB, 52)];
    let mut urls = Vec::new();
    for p in &parts {
        let created = http()
            .post(s.url_of("/tus/"))
            .bearer_auth(&tok)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", p.len().to_string())
            .header("Upload-Concat", "partial")
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let loc = created.headers()["location"].to_str().unwrap().to_owned();
        let r = http()
            .patch(s.url_of(&loc))
            .bearer_auth(&tok)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .body(p.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        urls.push(loc);
    }
    let fin = http()
        .post(s.url_of("/tus/"))
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Concat", format!("final;{}", urls.join(" ")))
        .header("Upload-Metadata", "filename ai5iaW4=") // j.bin
        .send()
        .await
        .unwrap();
    assert_eq!(fin.status(), StatusCode::CREATED, "{:?}", fin.text().await);
    let (st, got) = download(&s, &tok, "alice", "j.bin").await;
    assert_eq!(st, StatusCode::OK);
    let whole = parts.concat();
    assert!(got == whole, "the joined file differs");
    // The partials are gone; one object is left.
    assert_eq!(open_mpus(&c, &b).await, 0);
    assert_eq!(keys(&c, &b).await.len(), 1, "{:?}", keys(&c, &b).await);
}

/// A whole file `PUT` to its path starts no multipart upload while its
/// body streams (it is stored in one `PutObject`); a larger one starts one
/// when it needs it; a body cut short leaves nothing in the bucket.
#[tokio::test]
async fn a_one_request_put_starts_no_multipart_upload_unless_it_needs_one() {
    let Some(endpoint) = endpoint() else {
        return;
    };
    let c = s3_client(&endpoint).await;
    let b = bucket(&c, "whole").await;
    let s = Server::start_with(&on_s3(&endpoint, &b));
    let tok = user(&s, "wendy").await;
    let small = random_bytes(300_000, 41);
    // The body held half-way: the request has created its session.
    let (tx, body) = held_body();
    let sending = http()
        .put(s.url_of("/v1/spaces/wendy/files/small.bin"))
        .bearer_auth(&tok)
        .header("content-length", small.len().to_string())
        .body(body)
        .send();
    let sending = tokio::spawn(sending);
    tx.send(Ok(small[..150_000].to_vec())).await.unwrap();
    // (On one node the session is open meanwhile; in a cluster nothing is
    // recorded before the body is whole.)
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            open_mpus(&c, &b).await,
            0,
            "no multipart upload for a small whole body"
        );
    }
    tx.send(Ok(small[150_000..].to_vec())).await.unwrap();
    drop(tx);
    let r = sending.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(download(&s, &tok, "wendy", "small.bin").await.1, small);
    assert_eq!(open_mpus(&c, &b).await, 0);

    // Past one part: a multipart upload carries it, completed at commit.
    let large = random_bytes(6 * MIB + 5, 42);
    let (st, v) = put(
        &s,
        "/v1/spaces/wendy/files/large.bin",
        Some(&tok),
        &[],
        large.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(download(&s, &tok, "wendy", "large.bin").await.1, large);
    assert_eq!(open_mpus(&c, &b).await, 0);

    // Cut short: refused, and nothing of it stays in the bucket.
    let before = keys(&c, &b).await;
    let (tx, body) = held_body();
    let sending = http()
        .put(s.url_of("/v1/spaces/wendy/files/cut.bin"))
        .bearer_auth(&tok)
        .header("content-length", "200000")
        .body(body)
        .send();
    let sending = tokio::spawn(sending);
    tx.send(Ok(vec![7u8; 1000])).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    tx.send(Err(std::io::Error::other("cut"))).await.unwrap();
    drop(tx);
    let r = sending.await.unwrap();
    assert!(r.is_err() || !r.unwrap().status().is_success());
    let mut left = (keys(&c, &b).await, open_mpus(&c, &b).await);
    for _ in 0..40 {
        if left == (before.clone(), 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        left = (keys(&c, &b).await, open_mpus(&c, &b).await);
    }
    assert_eq!(
        left,
        (before, 0),
        "a cut PUT leaves no object, piece or multipart upload"
    );
}
