//! Black-box tests of the upload flows against a real `ferry serve`.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest as _;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;
const K64: usize = 64 * 1024;

fn uid(session: &Value, i: usize) -> String {
    session["uploads"][i]["id"].as_str().unwrap().to_owned()
}

fn sid(session: &Value) -> String {
    session["id"].as_str().unwrap().to_owned()
}

async fn commit(s: &Server, tok: &str, session: &str) -> (StatusCode, Value) {
    call(
        s,
        Method::POST,
        &format!("/v1/sessions/{session}/commit"),
        Some(tok),
        None,
    )
    .await
}

/// Sends the headers and the first `sent` bytes of a PUT announcing
/// `announced` bytes, then drops the connection.
async fn put_then_drop(
    s: &Server,
    path: &str,
    tok: &str,
    extra: &str,
    announced: usize,
    data: &[u8],
) {
    let addr = s.url.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {tok}\r\nContent-Length: {announced}\r\n{extra}\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(data).await.unwrap();
    sock.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(sock);
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn parallel_out_of_order_parts_of_64mib_file() {
    let s = Server::start();
    let tok = user(&s, "alice").await;
    let data = random_bytes(64 * MIB, 1);
    let sess = create_session(
        &s,
        &tok,
        json!({"path": "big/blob.bin", "size": data.len(), "part_size": 4 * MIB}),
    )
    .await;
    assert_eq!(sess["uploads"][0]["total_parts"], 16);
    let up = uid(&sess, 0);
    // Reverse-interleaved order, 8 at a time.
    let order: Vec<usize> = (1..=16)
        .rev()
        .step_by(2)
        .chain((1..=16).step_by(2))
        .collect();
    let data = std::sync::Arc::new(data);
    for chunk in order.chunks(8) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&n| {
                let (d, tok, up) = (data.clone(), tok.clone(), up.clone());
                let url = s.url.clone();
                tokio::spawn(async move {
                    let body = d[(n - 1) * 4 * MIB..n * 4 * MIB].to_vec();
                    let r = http()
                        .put(format!("{url}/v1/uploads/{up}/parts/{n}"))
                        .bearer_auth(tok)
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    (n, r.status(), r.json::<Value>().await.unwrap())
                })
            })
            .collect();
        for t in tasks {
            let (n, st, v) = t.await.unwrap();
            assert_eq!(st, StatusCode::OK, "part {n}: {v}");
            assert_eq!(v["part"], n);
            assert_eq!(v["offset"], (n - 1) * 4 * MIB);
        }
    }
    let st = status(&s, &tok, &up).await;
    assert_eq!(st["received_bytes"], 64 * MIB);
    assert_eq!(st["missing"], json!([]));
    let (code, done) = commit(&s, &tok, &sid(&sess)).await;
    assert_eq!(code, StatusCode::OK, "{done}");
    let file = &done["uploads"][0]["file"];
    assert_eq!(file["sha256"], sha256_hex(&data));
    let (code, got) = download(&s, &tok, "alice", "big/blob.bin").await;
    assert_eq!(code, StatusCode::OK);
    assert!(got == *data, "downloaded bytes differ");
    // The file sits at its real path on disk; nothing is left staged.
    let on_disk = std::fs::read(s.data.join("spaces/alice/big/blob.bin")).unwrap();
    assert_eq!(sha256_hex(&on_disk), sha256_hex(&data));
    assert_eq!(
        std::fs::read_dir(s.data.join("staging")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn range_writes_in_any_order_with_deferred_length() {
    let s = Server::start();
    let tok = user(&s, "rita").await;
    let data = random_bytes(1_000_000, 2);
    let sess = create_session(&s, &tok, json!({"path": "r.bin"})).await;
    let up = uid(&sess, 0);
    assert_eq!(sess["uploads"][0]["size"], Value::Null);
    let cr = |a: usize, b: usize, total: &str| format!("bytes {a}-{}/{total}", b - 1);
    let (st, v) = put(
        &s,
        &format!("/v1/uploads/{up}"),
        Some(&tok),
        &[("content-range", &cr(500_000, 700_000, "*"))],
        data[500_000..700_000].to_vec(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["missing"], json!([[0, 499_999], [700_000, null]]));
    let (st, v) = put(
        &s,
        &format!("/v1/uploads/{up}"),
        Some(&tok),
        &[("content-range", &cr(0, 500_000, "*"))],
        data[..500_000].to_vec(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // The last write announces the total.
    let (st, v) = put(
        &s,
        &format!("/v1/uploads/{up}"),
        Some(&tok),
        &[("content-range", &cr(700_000, 1_000_000, "1000000"))],
        data[700_000..].to_vec(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["size"], 1_000_000);
    assert_eq!(v["missing"], json!([]));
    // A total that contradicts the known size is refused.
    let (st, v) = put(
        &s,
        &format!("/v1/uploads/{up}"),
        Some(&tok),
        &[("content-range", "bytes 0-9/999")],
        vec![0; 10],
    )
    .await;
    assert_eq!(st, StatusCode::RANGE_NOT_SATISFIABLE, "{v}");
    let (st, done) = commit(&s, &tok, &sid(&sess)).await;
    assert_eq!(st, StatusCode::OK, "{done}");
    assert_eq!(done["uploads"][0]["file"]["sha256"], sha256_hex(&data));
}

#[tokio::test]
async fn dropped_connection_mid_part_loses_only_that_part() {
    let s = Server::start();
    let tok = user(&s, "dora").await;
    let data = random_bytes(3 * MIB, 3);
    let sess = create_session(
        &s,
        &tok,
        json!({"path": "d.bin", "size": data.len(), "part_size": MIB}),
    )
    .await;
    let up = uid(&sess, 0);
    assert_eq!(part(&s, &tok, &up, 1, &data[..MIB]).await.0, StatusCode::OK);
    // Part 2: half of it, then the connection drops.
    put_then_drop(
        &s,
        &format!("/v1/uploads/{up}/parts/2"),
        &tok,
        "",
        MIB,
        &data[MIB..MIB + MIB / 2],
    )
    .await;
    let st = status(&s, &tok, &up).await;
    assert_eq!(
        st["missing"],
        json!([[MIB, 3 * MIB - 1]]),
        "part 2 is all or nothing"
    );
    // A range write that drops keeps its durable prefix.
    let cr = format!(
        "Content-Range: bytes {}-{}/{}\r\n",
        2 * MIB,
        3 * MIB - 1,
        3 * MIB
    );
    put_then_drop(
        &s,
        &format!("/v1/uploads/{up}"),
        &tok,
        &cr,
        MIB,
        &data[2 * MIB..2 * MIB + 300_000],
    )
    .await;
    let st = status(&s, &tok, &up).await;
    let missing = st["missing"].clone();
    assert_eq!(missing[0], json!([MIB, 2 * MIB - 1]));
    let kept_to = missing[1][0].as_u64().unwrap() as usize;
    assert!(
        kept_to > 2 * MIB,
        "the range write kept some bytes: {missing}"
    );
    // Resume: part 2, and the rest of the range.
    assert_eq!(
        part(&s, &tok, &up, 2, &data[MIB..2 * MIB]).await.0,
        StatusCode::OK
    );
    let cr = format!("bytes {kept_to}-{}/{}", 3 * MIB - 1, 3 * MIB);
    let (code, v) = put(
        &s,
        &format!("/v1/uploads/{up}"),
        Some(&tok),
        &[("content-range", &cr)],
        data[kept_to..].to_vec(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let (code, done) = commit(&s, &tok, &sid(&sess)).await;
    assert_eq!(code, StatusCode::OK, "{done}");
    assert_eq!(done["uploads"][0]["file"]["sha256"], sha256_hex(&data));
}

#[tokio::test]
async fn sigkill_mid_upload_then_restart_and_finish() {
    let mut s = Server::start();
    let tok = user(&s, "kim").await;
    let data = random_bytes(64 * MIB, 4);
    let sess = create_session(
        &s,
        &tok,
        json!({"path": "k/crash.bin", "size": data.len(), "part_size": 8 * MIB}),
    )
    .await;
    let up = uid(&sess, 0);
    for n in [1, 3, 5, 8] {
        let (st, v) = part(&s, &tok, &up, n, &data[(n - 1) * 8 * MIB..n * 8 * MIB]).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    // Kill -9 while part 2 is streaming in.
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v1/uploads/{up}/parts/2 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {tok}\r\nContent-Length: {}\r\n\r\n",
        8 * MIB
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&data[8 * MIB..12 * MIB]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.kill9();
    let mut buf = Vec::new();
    let _ = sock.read_to_end(&mut buf).await;
    s.restart();

    let st = status(&s, &tok, &up).await;
    assert_eq!(
        st["received_bytes"],
        4 * 8 * MIB,
        "every acknowledged part survived: {st}"
    );
    assert_eq!(
        st["missing"],
        json!([
            [8 * MIB, 16 * MIB - 1],
            [24 * MIB, 32 * MIB - 1],
            [40 * MIB, 56 * MIB - 1]
        ])
    );
    // Nothing is visible yet.
    assert_eq!(
        download(&s, &tok, "kim", "k/crash.bin").await.0,
        StatusCode::NOT_FOUND
    );
    for n in [2, 4, 6, 7] {
        let (st, v) = part(&s, &tok, &up, n, &data[(n - 1) * 8 * MIB..n * 8 * MIB]).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let (code, done) = commit(&s, &tok, &sid(&sess)).await;
    assert_eq!(code, StatusCode::OK, "{done}");
    let (_, got) = download(&s, &tok, "kim", "k/crash.bin").await;
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
}

#[tokio::test]
async fn multi_file_commit_is_atomic() {
    let s = Server::start();
    let tok = user(&s, "ava").await;
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("set/f{i}.bin"),
                random_bytes(100_000 + i * 10, 10 + i as u64),
            )
        })
        .collect();
    let uploads: Vec<Value> = files
        .iter()
        .map(|(p, d)| json!({"path": p, "size": d.len()}))
        .collect();
    let sess = create_session(&s, &tok, json!({"uploads": uploads})).await;
    for (i, (_, d)) in files.iter().enumerate() {
        assert_eq!(part(&s, &tok, &uid(&sess, i), 1, d).await.0, StatusCode::OK);
        // Complete but uncommitted: not visible.
        let (_, list) = call(&s, Method::GET, "/v1/spaces/ava/list/set", Some(&tok), None).await;
        assert_eq!(list["entries"], json!([]));
    }
    let (code, done) = commit(&s, &tok, &sid(&sess)).await;
    assert_eq!(code, StatusCode::OK, "{done}");
    assert_eq!(done["state"], "committed");
    let (_, list) = call(&s, Method::GET, "/v1/spaces/ava/list/set", Some(&tok), None).await;
    assert_eq!(list["entries"].as_array().unwrap().len(), 3);
    for (p, d) in &files {
        assert_eq!(download(&s, &tok, "ava", p).await.1, *d);
    }
    // Committing again answers the same (idempotent).
    let (code, again) = commit(&s, &tok, &sid(&sess)).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        again["uploads"][2]["file"]["id"],
        done["uploads"][2]["file"]["id"]
    );

    // A second set where one destination clashes under "fail": none appear.
    let uploads = json!([{"path": "set2/new.bin", "size": 5}, {"path": "set/f1.bin", "size": 5}]);
    let sess = create_session(&s, &tok, json!({"uploads": uploads, "conflict": "fail"})).await;
    for i in 0..2 {
        assert_eq!(
            part(&s, &tok, &uid(&sess, i), 1, b"fresh").await.0,
            StatusCode::OK
        );
    }
    let (code, err) = commit(&s, &tok, &sid(&sess)).await;
    assert_eq!(code, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "already_exists");
    assert_eq!(
        download(&s, &tok, "ava", "set2/new.bin").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(download(&s, &tok, "ava", "set/f1.bin").await.1, files[1].1);
    // The session stays open and its bytes stay staged.
    let (_, v) = call(
        &s,
        Method::GET,
        &format!("/v1/sessions/{}", sid(&sess)),
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(v["state"], "open");
}

async fn upload_one(
    s: &Server,
    tok: &str,
    path: &str,
    conflict: &str,
    data: &[u8],
) -> (StatusCode, Value) {
    let sess = create_session(
        s,
        tok,
        json!({"path": path, "size": data.len(), "conflict": conflict}),
    )
    .await;
    assert_eq!(
        part(s, tok, &uid(&sess, 0), 1, data).await.0,
        StatusCode::OK
    );
    commit(s, tok, &sid(&sess)).await
}

#[tokio::test]
async fn every_conflict_policy() {
    let s = Server::start();
    let tok = user(&s, "cora").await;
    assert_eq!(
        upload_one(&s, &tok, "doc/report.pdf", "fail", b"v1")
            .await
            .0,
        StatusCode::OK
    );

    let (code, v) = upload_one(&s, &tok, "doc/report.pdf", "fail", b"v2").await;
    assert_eq!(code, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["path"], "cora/doc/report.pdf");

    let (code, v) = upload_one(&s, &tok, "doc/report.pdf", "rename", b"v3").await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["uploads"][0]["file"]["path"], "doc/report (1).pdf");
    let (_, v) = upload_one(&s, &tok, "doc/report.pdf", "rename", b"v4").await;
    assert_eq!(v["uploads"][0]["file"]["path"], "doc/report (2).pdf");

    let (code, v) = upload_one(&s, &tok, "doc/report.pdf", "skip", b"v5").await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["uploads"][0]["state"], "skipped");
    assert_eq!(download(&s, &tok, "cora", "doc/report.pdf").await.1, b"v1");

    let (code, v) = upload_one(&s, &tok, "doc/report.pdf", "replace", b"v6!").await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(download(&s, &tok, "cora", "doc/report.pdf").await.1, b"v6!");
    assert_eq!(
        download(&s, &tok, "cora", "doc/report (1).pdf").await.1,
        b"v3"
    );

    // A file cannot become a folder, whatever the policy.
    let (code, v) = upload_one(&s, &tok, "doc/report.pdf/inner.txt", "replace", b"x").await;
    assert_eq!(code, StatusCode::CONFLICT, "{v}");
}

#[tokio::test]
async fn expired_sessions_are_reaped_and_refuse_bytes() {
    let s = Server::start_with(&[("FERRY_REAP_INTERVAL", "1")]);
    let tok = user(&s, "eli").await;
    let sess = create_session(
        &s,
        &tok,
        json!({"path": "e.bin", "size": 2 * K64, "part_size": K64, "expires_in": 1}),
    )
    .await;
    let up = uid(&sess, 0);
    assert_eq!(part(&s, &tok, &up, 1, &[1; K64]).await.0, StatusCode::OK);
    assert!(s.data.join("staging").join(&up).exists());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !s.data.join("staging").join(&up).exists(),
        "the reaper freed the staged bytes"
    );
    let (code, v) = part(&s, &tok, &up, 2, &[2; K64]).await;
    assert_eq!(code, StatusCode::GONE, "{v}");
    assert_eq!(v["error"]["code"], "expired");
    let (_, v) = call(
        &s,
        Method::GET,
        &format!("/v1/sessions/{}", sid(&sess)),
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(v["state"], "expired");
}

#[tokio::test]
async fn signed_urls_write_without_token_and_refuse_tampering() {
    let s = Server::start();
    let tok = user(&s, "sig").await;
    let other = create_session(&s, &tok, json!({"path": "o.bin", "size": 4})).await;
    let sess = create_session(
        &s,
        &tok,
        json!({"path": "s.bin", "size": 2 * K64, "part_size": K64}),
    )
    .await;
    let url = sess["uploads"][0]["url"].as_str().unwrap().to_owned();
    let (base, sig) = url.split_once("?sig=").unwrap();
    let (code, v) = put(
        &s,
        &format!("{base}/parts/1?sig={sig}"),
        None,
        &[],
        vec![7; K64],
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let (code, v) = call(&s, Method::GET, &url, None, None).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["received_bytes"], K64);

    let mut bad = sig.to_owned();
    bad.replace_range(..1, if sig.starts_with('0') { "1" } else { "0" });
    let (code, v) = put(
        &s,
        &format!("{base}/parts/2?sig={bad}"),
        None,
        &[],
        vec![8; K64],
    )
    .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "unauthenticated");
    // A valid signature of another upload does not open this one.
    let other_sig = other["uploads"][0]["url"]
        .as_str()
        .unwrap()
        .split_once("?sig=")
        .unwrap()
        .1
        .to_owned();
    let (code, _) = put(
        &s,
        &format!("{base}/parts/2?sig={other_sig}"),
        None,
        &[],
        vec![8; K64],
    )
    .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    // Nor does it commit, or reach any other route.
    let (code, _) = call(
        &s,
        Method::POST,
        &format!("{base}/commit?sig={sig}"),
        None,
        None,
    )
    .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (_, v) = call(&s, Method::GET, &url, None, None).await;
    assert_eq!(v["received_bytes"], K64, "the refused writes left nothing");
}

#[tokio::test]
async fn auto_commit_on_last_byte_even_through_a_signed_url() {
    let s = Server::start();
    let tok = user(&s, "auto").await;
    let sess = create_session(
        &s,
        &tok,
        json!({"path": "a/auto.txt", "size": 10, "auto_commit": true}),
    )
    .await;
    let up = uid(&sess, 0);
    let (_, v) = put(
        &s,
        &format!("/v1/uploads/{up}"),
        Some(&tok),
        &[("content-range", "bytes 5-9/10")],
        b"56789".to_vec(),
    )
    .await;
    assert_eq!(v["state"], "open");
    // The last byte arrives through the signed URL, without a token: the
    // upload still commits itself.
    let url = sess["uploads"][0]["url"].as_str().unwrap().to_owned();
    let (code, v) = put(
        &s,
        &url,
        None,
        &[("content-range", "bytes 0-4/10")],
        b"01234".to_vec(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "committed");
    assert_eq!(v["file"]["sha256"], sha256_hex(b"0123456789"));
    assert_eq!(
        download(&s, &tok, "auto", "a/auto.txt").await.1,
        b"0123456789"
    );
}

#[tokio::test]
async fn part_digests_are_checked_and_a_refused_resend_keeps_the_earlier_part() {
    let s = Server::start();
    let tok = user(&s, "dig").await;
    let data = random_bytes(200_000, 9);
    let sess = create_session(
        &s,
        &tok,
        json!({"path": "d.bin", "size": 200_000, "part_size": 100_000}),
    )
    .await;
    let up = uid(&sess, 0);
    let b64 = |d: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(d),
        ))
    };
    let good1 = format!("sha-256=:{}:", b64(&data[..100_000]));
    let (code, v) = put(
        &s,
        &format!("/v1/uploads/{up}/parts/1"),
        Some(&tok),
        &[("content-digest", &good1)],
        data[..100_000].to_vec(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    // Part 2 announced with part 1's digest: refused, discarded.
    let (code, v) = put(
        &s,
        &format!("/v1/uploads/{up}/parts/2"),
        Some(&tok),
        &[("content-digest", &good1)],
        data[100_000..].to_vec(),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "digest_mismatch");
    assert_eq!(
        status(&s, &tok, &up).await["missing"],
        json!([[100_000, 199_999]])
    );
    // Re-sending part 1 with a bad MD5 is refused too, and the part 1
    // that was acknowledged earlier is still there, byte for byte.
    let mut corrupt = data[..100_000].to_vec();
    corrupt[5] ^= 0xff;
    let (code, _) = put(
        &s,
        &format!("/v1/uploads/{up}/parts/1"),
        Some(&tok),
        &[("content-md5", "AAAAAAAAAAAAAAAAAAAAAA==")],
        corrupt,
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        status(&s, &tok, &up).await["missing"],
        json!([[100_000, 199_999]])
    );
    let (code, _) = part(&s, &tok, &up, 2, &data[100_000..]).await;
    assert_eq!(code, StatusCode::OK);
    // A whole-file digest that does not match refuses the commit.
    let (code, v) = call(
        &s,
        Method::POST,
        &format!("/v1/uploads/{up}/commit"),
        Some(&tok),
        Some(json!({"sha256": "00".repeat(32)})),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (code, v) = call(
        &s,
        Method::POST,
        &format!("/v1/uploads/{up}/commit"),
        Some(&tok),
        Some(json!({"sha256": sha256_hex(&data)})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["file"]["sha256"], sha256_hex(&data));
}

#[tokio::test]
async fn downloads_serve_ranges_etags_and_digests() {
    let s = Server::start();
    let tok = user(&s, "dl").await;
    let data = random_bytes(1000, 5);
    assert_eq!(
        upload_one(&s, &tok, "f.bin", "fail", &data).await.0,
        StatusCode::OK
    );
    let url = format!("{}/v1/spaces/dl/files/f.bin", s.url);
    let r = http()
        .get(&url)
        .bearer_auth(&tok)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/1000");
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&data)));
    assert!(
        r.headers()["repr-digest"]
            .to_str()
            .unwrap()
            .starts_with("sha-256=:")
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[10..20]);
    let r = http().head(&url).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "1000");
    let r = http()
        .get(&url)
        .bearer_auth(&tok)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = http()
        .get(&url)
        .bearer_auth(&tok)
        .header("range", "bytes=5000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */1000");
    let (code, _) = call(
        &s,
        Method::DELETE,
        "/v1/spaces/dl/files/f.bin",
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    assert_eq!(
        download(&s, &tok, "dl", "f.bin").await.0,
        StatusCode::NOT_FOUND
    );
    assert!(!s.data.join("spaces/dl/f.bin").exists());
}

#[tokio::test]
async fn graceful_shutdown_lets_an_inflight_write_finish() {
    let mut s = Server::start();
    let tok = user(&s, "gs").await;
    let data = random_bytes(2 * MIB, 6);
    let sess = create_session(&s, &tok, json!({"path": "g.bin", "size": data.len()})).await;
    let up = uid(&sess, 0);
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v1/uploads/{up}/parts/1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {tok}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        data.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&data[..MIB]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = s.pid();
    sigterm(pid);
    tokio::time::sleep(Duration::from_millis(200)).await;
    sock.write_all(&data[MIB..]).await.unwrap();
    let mut resp = String::new();
    sock.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(s.terminate_wait().success());
    s.restart();
    assert_eq!(status(&s, &tok, &up).await["missing"], json!([]));
}

#[tokio::test]
async fn concurrent_commits_to_one_path_each_get_their_own_name() {
    let s = Server::start();
    let tok = user(&s, "race").await;
    let mut sessions = Vec::new();
    for i in 0..8u8 {
        let sess = create_session(
            &s,
            &tok,
            json!({"path": "same.txt", "size": 1, "conflict": "rename"}),
        )
        .await;
        assert_eq!(
            part(&s, &tok, &uid(&sess, 0), 1, &[b'a' + i]).await.0,
            StatusCode::OK
        );
        sessions.push(sid(&sess));
    }
    let commits = sessions.iter().map(|id| {
        let url = format!("{}/v1/sessions/{id}/commit", s.url);
        let tok = tok.clone();
        tokio::spawn(async move {
            let r = http().post(url).bearer_auth(tok).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()["uploads"][0]["file"]["path"]
                .as_str()
                .unwrap()
                .to_owned()
        })
    });
    let mut paths: Vec<String> = futures::future::join_all(commits)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    paths.sort();
    let mut expected: Vec<String> = std::iter::once("same.txt".to_owned())
        .chain((1..8).map(|n| format!("same ({n}).txt")))
        .collect();
    expected.sort();
    assert_eq!(paths, expected);
    let (_, list) = call(&s, Method::GET, "/v1/spaces/race/list/", Some(&tok), None).await;
    assert_eq!(list["entries"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn a_session_of_10000_uploads_commits_them_all_at_once() {
    let s = Server::start();
    let tok = user(&s, "bulk").await;
    let uploads: Vec<Value> = (0..10_000)
        .map(|i| json!({"path": format!("many/d{}/f{i}.txt", i % 10), "size": 0}))
        .collect();
    let sess = create_session(&s, &tok, json!({"uploads": uploads})).await;
    assert_eq!(sess["uploads"].as_array().unwrap().len(), 10_000);
    let (_, list) = call(
        &s,
        Method::GET,
        "/v1/spaces/bulk/list/many",
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(
        list["entries"],
        json!([]),
        "nothing visible before the commit"
    );
    let (code, done) = commit(&s, &tok, &sid(&sess)).await;
    assert_eq!(
        code,
        StatusCode::OK,
        "{}",
        &done.to_string()[..300.min(done.to_string().len())]
    );
    assert_eq!(done["state"], "committed");
    let (_, list) = call(
        &s,
        Method::GET,
        "/v1/spaces/bulk/list/many/d3",
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(list["entries"].as_array().unwrap().len(), 1_000);
    assert_eq!(
        std::fs::read_dir(s.data.join("spaces/bulk/many/d9"))
            .unwrap()
            .count(),
        1_000
    );

    let too_many: Vec<Value> = (0..10_001)
        .map(|i| json!({"path": format!("x/{i}"), "size": 0}))
        .collect();
    let (code, v) = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&tok),
        Some(json!({"uploads": too_many})),
    )
    .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"]["limit"], 10_000);
}

/// With auto-commit, the part that completed the upload, sent again,
/// answers the same success; a body of another length does not.
#[tokio::test]
async fn auto_commit_part_sent_again_after_the_commit_answers_the_same_part() {
    let s = Server::start();
    let tok = user(&s, "alice").await;
    let v = create_session(
        &s,
        &tok,
        json!({"path": "again.txt", "size": 10, "auto_commit": true}),
    )
    .await;
    let uid = &uid(&v, 0);
    let (st, first) = part(&s, &tok, uid, 1, b"0123456789").await;
    assert_eq!(st, StatusCode::OK, "{first}");
    assert_eq!(status(&s, &tok, uid).await["state"], "committed");
    let (st, again) = part(&s, &tok, uid, 1, b"0123456789").await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(again, first);
    let (st, v) = part(&s, &tok, uid, 1, b"01234").await;
    assert_ne!(st, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn presigning_a_part_on_the_local_store_answers_409_saying_it_needs_store_s3() {
    let s = Server::start();
    let tok = user(&s, "lena").await;
    let v = create_session(&s, &tok, json!({"path": "p.bin", "size": 10})).await;
    let up = v["uploads"][0]["id"].as_str().unwrap();
    let path = format!("/v1/uploads/{up}/parts/1/presign");
    let (st, v) = call(&s, Method::POST, &path, Some(&tok), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    // Not `conflict` (contention a client retries): asking again changes
    // nothing on this server.
    assert_eq!(v["error"]["code"], "unsupported", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--store s3"),
        "{v}"
    );
    // The part still goes through Ferry.
    assert_eq!(part(&s, &tok, up, 1, b"0123456789").await.0, StatusCode::OK);
    // Another user's upload is not found, not presigned.
    let other = user(&s, "mila").await;
    let (st, v) = call(&s, Method::POST, &path, Some(&other), Some(json!({}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn a_whole_file_put_to_its_path_lands_in_one_request_and_replaces_by_default() {
    let s = Server::start();
    let tok = user(&s, "putter").await;
    let a = random_bytes(3 * MIB + 17, 1);
    let (st, v) = put(
        &s,
        "/v1/spaces/putter/files/one/a.bin",
        Some(&tok),
        &[],
        a.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["path"].as_str(), v["size"].as_u64(), v["sha256"].as_str()),
        (
            Some("one/a.bin"),
            Some(a.len() as u64),
            Some(sha256_hex(&a).as_str())
        )
    );
    assert_eq!(download(&s, &tok, "putter", "one/a.bin").await.1, a);

    // PUT again: the file is replaced (HTTP's PUT), in one request.
    let b = random_bytes(4096, 2);
    let resp = http()
        .put(s.url_of("/v1/spaces/putter/files/one/a.bin"))
        .bearer_auth(&tok)
        .header("content-type", "text/plain")
        .body(b.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&b)));
    let (st, got) = download(&s, &tok, "putter", "one/a.bin").await;
    assert_eq!((st, got), (StatusCode::OK, b.clone()));

    // ?conflict=rename keeps both.
    let (st, v) = put(
        &s,
        "/v1/spaces/putter/files/one/a.bin?conflict=rename",
        Some(&tok),
        &[],
        a.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["path"], "one/a (1).bin");
    assert_eq!(download(&s, &tok, "putter", "one/a (1).bin").await.1, a);

    // A body of unknown length (chunked) lands with the length it had.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        a.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let resp = http()
        .put(s.url_of("/v1/spaces/putter/files/streamed.bin"))
        .bearer_auth(&tok)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let (st, v) = decode(resp).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["size"].as_u64(), Some(a.len() as u64));
    assert_eq!(download(&s, &tok, "putter", "streamed.bin").await.1, a);

    // An empty file.
    let (st, v) = put(&s, "/v1/spaces/putter/files/empty", Some(&tok), &[], vec![]).await;
    assert_eq!(
        (st, v["size"].as_u64()),
        (StatusCode::CREATED, Some(0)),
        "{v}"
    );
    assert_eq!(open_sessions(&s, &tok).await, 0);
}

/// `curl --data-binary` labels any body `application/x-www-form-urlencoded`:
/// a file's bytes under that label are stored as they are, whatever their
/// size and whether or not they would decode as a form.
#[tokio::test]
async fn a_file_body_labelled_form_urlencoded_is_stored_as_its_bytes() {
    let s = Server::start();
    let tok = user(&s, "former").await;
    let mut body = random_bytes(2 * MIB + 5, 7);
    body[..6].copy_from_slice(b"a=%FF&");
    let resp = http()
        .put(s.url_of("/v1/spaces/former/files/form.bin"))
        .bearer_auth(&tok)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let (st, v) = decode(resp).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["sha256"].as_str(), Some(sha256_hex(&body).as_str()));
    assert_eq!(download(&s, &tok, "former", "form.bin").await.1, body);
}

#[tokio::test]
async fn a_refused_or_cut_one_request_put_leaves_the_path_and_no_session_behind() {
    let s = Server::start();
    let tok = user(&s, "careful").await;
    let old = random_bytes(1000, 3);
    let (st, _) = put(
        &s,
        "/v1/spaces/careful/files/kept.bin",
        Some(&tok),
        &[],
        old.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let new = random_bytes(5000, 4);

    // If-None-Match: * on a path that exists: 412, nothing changes.
    let (st, v) = put(
        &s,
        "/v1/spaces/careful/files/kept.bin",
        Some(&tok),
        &[("if-none-match", "*")],
        new.clone(),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::PRECONDITION_FAILED, Some("precondition_failed")),
        "{v}"
    );
    // ?conflict=fail: 409 in the native format.
    let (st, v) = put(
        &s,
        "/v1/spaces/careful/files/kept.bin?conflict=fail",
        Some(&tok),
        &[],
        new.clone(),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_exists")),
        "{v}"
    );

    // A whole-file digest the bytes do not have: 422, the old file stays.
    let wrong = format!("sha-256=:{}:", b64(&[0u8; 32]));
    let (st, v) = put(
        &s,
        "/v1/spaces/careful/files/kept.bin",
        Some(&tok),
        &[("repr-digest", &wrong)],
        new.clone(),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("digest_mismatch")),
        "{v}"
    );
    // The same for the body's digest.
    let (st, v) = put(
        &s,
        "/v1/spaces/careful/files/kept.bin",
        Some(&tok),
        &[("content-digest", &wrong)],
        new.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // The right digests are accepted.
    let right = format!("sha-256=:{}:", b64(&sha2::Sha256::digest(&new)));
    let (st, v) = put(
        &s,
        "/v1/spaces/careful/files/checked.bin",
        Some(&tok),
        &[("repr-digest", &right), ("content-digest", &right)],
        new.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    // Malformed headers and queries.
    for (path, headers) in [
        ("/v1/spaces/careful/files/x.bin?conflict=sideways", vec![]),
        (
            "/v1/spaces/careful/files/x.bin",
            vec![("if-none-match", "\"abc\"")],
        ),
        (
            "/v1/spaces/careful/files/x.bin",
            vec![("repr-digest", "sha-256=:nope:")],
        ),
        (
            "/v1/spaces/careful/files/x.bin",
            vec![("repr-digest", "md5=:AAAAAAAAAAAAAAAAAAAAAA==:")],
        ),
    ] {
        let (st, v) = put(&s, path, Some(&tok), &headers, new.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path} {headers:?}: {v}");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    // No token, another user's space.
    let (st, _) = put(&s, "/v1/spaces/careful/files/x.bin", None, &[], new.clone()).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let bob = user(&s, "bob").await;
    let (st, _) = put(
        &s,
        "/v1/spaces/careful/files/x.bin",
        Some(&bob),
        &[],
        new.clone(),
    )
    .await;
    assert!(
        matches!(st, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
        "{st}"
    );

    // A body cut short: nothing at the path, no session left open.
    put_then_drop(
        &s,
        "/v1/spaces/careful/files/kept.bin",
        &tok,
        "",
        100_000,
        &new[..3000],
    )
    .await;
    put_then_drop(
        &s,
        "/v1/spaces/careful/files/cut.bin",
        &tok,
        "",
        100_000,
        &new[..3000],
    )
    .await;
    let (st, _) = download(&s, &tok, "careful", "cut.bin").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(download(&s, &tok, "careful", "kept.bin").await.1, old);
    let (st, _) = download(&s, &tok, "careful", "x.bin").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(open_sessions(&s, &tok).await, 0);
}
