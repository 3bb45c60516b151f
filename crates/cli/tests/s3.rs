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

async fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared)
            .endpoint_url(endpoint)
            .force_path_style(true)
            .build(),
    )
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

/// Every key in the bucket.
async fn keys(c: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let out = c.list_objects_v2().bucket(bucket).send().await.unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
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
    let c = client(&endpoint).await;
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
    let c = client(&endpoint).await;
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
