//! Several `ferry serve` processes on one PostgreSQL database: what one
//! node does, the others see. Runs when `FERRY_TEST_DATABASE_URL` names a
//! PostgreSQL server (the CI stage on PostgreSQL sets it); skipped
//! otherwise, unless `FERRY_REQUIRE_POSTGRES=1`.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

/// Whether PostgreSQL (and, with `s3`, a local S3 server) is there to
/// run on; without, the test is skipped unless `FERRY_REQUIRE_POSTGRES=1`.
fn available(s3: bool) -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
    if set("FERRY_TEST_DATABASE_URL") && (!s3 || set("FERRY_S3_ENDPOINT")) {
        return true;
    }
    assert!(
        std::env::var("FERRY_REQUIRE_POSTGRES").as_deref() != Ok("1"),
        "FERRY_REQUIRE_POSTGRES=1 but FERRY_TEST_DATABASE_URL{} is not set",
        if s3 { " or FERRY_S3_ENDPOINT" } else { "" }
    );
    eprintln!(
        "SKIPPED: needs FERRY_TEST_DATABASE_URL (scripts/pg-local.sh) and FERRY_S3_ENDPOINT (scripts/s3-local.sh)"
    );
    false
}

/// Two nodes on one fresh database and one bucket (under a prefix of
/// their own), or `None` (skipped).
fn two_nodes() -> Option<(Server, Server)> {
    two_nodes_with(&[])
}

/// [`two_nodes`] with more environment for both.
fn two_nodes_with(extra: &[(&str, &str)]) -> Option<(Server, Server)> {
    if !available(true) {
        return None;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("cluster-{nanos}/");
    let mut on_s3 = vec![("FERRY_STORE", "s3"), ("FERRY_S3_PREFIX", prefix.as_str())];
    on_s3.extend_from_slice(extra);
    let a = Server::start_with(&on_s3);
    let url = a.database_url().expect("on PostgreSQL").to_owned();
    let mut env = on_s3.clone();
    env.push(("FERRY_DATABASE_URL", &url));
    let b = Server::start_with(&env);
    Some((a, b))
}

#[tokio::test]
async fn a_token_revoked_on_one_node_is_refused_by_another_within_1_s() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let (st, t) = call(
        &a,
        Method::POST,
        "/v1/admin/users/alice/tokens",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    let (tok, id) = (t["token"].as_str().unwrap(), t["id"].as_str().unwrap());
    // Node b knows (and caches) both of alice's tokens.
    for token in [alice.as_str(), tok] {
        let (st, me) = call(&b, Method::GET, "/v1/me", Some(token), None).await;
        assert_eq!((st, me["user"].clone()), (StatusCode::OK, json!("alice")));
    }
    let (st, v) = call(
        &a,
        Method::DELETE,
        &format!("/v1/admin/tokens/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let revoked = Instant::now();
    loop {
        let (st, v) = call(&b, Method::GET, "/v1/me", Some(tok), None).await;
        if st == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(st, StatusCode::OK, "{v}");
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "node b still accepts the token revoked on node a after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The other token still works on both.
    for n in [&a, &b] {
        let (st, _) = call(n, Method::GET, "/v1/me", Some(&alice), None).await;
        assert_eq!(st, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_signed_upload_url_from_one_node_is_accepted_by_another() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let v = create_session(&a, &alice, json!({"path": "s.bin", "size": 10})).await;
    let url = v["uploads"][0]["url"].as_str().unwrap();
    let (_, query) = url.split_once('?').unwrap();
    let id = v["uploads"][0]["id"].as_str().unwrap();
    // Without a token: the signature alone grants the upload, on node b.
    let (st, parts) = call(
        &b,
        Method::GET,
        &format!("/v1/uploads/{id}/parts?{query}"),
        None,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{parts}");
    // A signature node b would make with a key of its own is refused.
    let forged = format!("/v1/uploads/{id}/parts?sig={}", "0".repeat(64));
    let (st, _) = call(&b, Method::GET, &forged, None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn nodes_sharing_a_database_share_the_admin_and_its_token() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    // One admin, created by the first node; a user made on one node signs
    // in on the other.
    let bob = user(&b, "bob").await;
    let (st, me) = call(&a, Method::GET, "/v1/me", Some(&bob), None).await;
    assert_eq!(
        (st, me["user"].clone()),
        (StatusCode::OK, json!("bob")),
        "{me}"
    );
    let (st, users) = call(
        &a,
        Method::POST,
        "/v1/admin/users",
        Some(ADMIN),
        Some(json!({"name": "bob"})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "a user is created once: {users}");
}

#[tokio::test]
async fn a_second_node_on_the_local_store_is_refused_with_the_reason() {
    if !available(false) {
        return;
    }
    let a = Server::start();
    let url = a.database_url().expect("on PostgreSQL");
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(ferry_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("FERRY_DATABASE_URL", url)
        .env("FERRY_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the second node must not start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("local disk") && err.contains("--store s3"),
        "{err}"
    );
    // The first node is untouched.
    let (st, _) = call(&a, Method::GET, "/v1/me", Some(ADMIN), None).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn parts_of_one_upload_sent_to_two_nodes_commit_on_either_verified() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let part_size = 5 * 1024 * 1024;
    let data = random_bytes(3 * part_size + 1000, 9);
    let v = create_session(
        &a,
        &alice,
        json!({"path": "rr.bin", "size": data.len(), "part_size": part_size}),
    )
    .await;
    let (sid, up) = (
        v["id"].as_str().unwrap().to_owned(),
        v["uploads"][0]["id"].as_str().unwrap().to_owned(),
    );
    // Round-robin, out of order: 4, 1 on b; 2 on a; 3 on b.
    for (node, n) in [(&b, 4), (&b, 1), (&a, 2), (&b, 3)] {
        let start = (n - 1) * part_size;
        let end = (start + part_size).min(data.len());
        let (st, v) = part(node, &alice, &up, n, &data[start..end]).await;
        assert_eq!(st, StatusCode::OK, "part {n}: {v}");
    }
    // Both nodes see every part.
    for node in [&a, &b] {
        let v = status(node, &alice, &up).await;
        assert_eq!(v["received_bytes"], json!(data.len()), "{v}");
    }
    let (st, v) = call(
        &a,
        Method::POST,
        &format!("/v1/sessions/{sid}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    for node in [&a, &b] {
        let (st, got) = download(node, &alice, "alice", "rr.bin").await;
        assert_eq!(st, StatusCode::OK);
        assert!(
            got == data,
            "the file read through each node is the file sent"
        );
    }
}

#[tokio::test]
async fn a_tus_patch_cut_by_the_death_of_its_node_resumes_on_another_node() {
    let Some((mut a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let mib = 1024 * 1024;
    let data = random_bytes(12 * mib + 77, 12);
    let id = create_tus(&a, &alice, data.len() as u64).await;
    let path = format!("/tus/{id}");
    // A PATCH of the whole file that sends 7 MiB, then stalls; node a is
    // SIGKILLed while it waits for the rest.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    }));
    let patch = http()
        .patch(a.url_of(&path))
        .bearer_auth(&alice)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(body)
        .send();
    let patch = tokio::spawn(patch);
    for chunk in data[..7 * mib].chunks(mib) {
        tx.send(Ok(chunk.to_vec())).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.kill9();
    drop(tx);
    let _ = patch.await;
    // Node b answers at once with what is durable, and takes the rest.
    let head = |n: &Server| {
        http()
            .head(n.url_of(&path))
            .bearer_auth(&alice)
            .header("Tus-Resumable", "1.0.0")
            .send()
    };
    let r = head(&b).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let offset: usize = r.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        offset <= 7 * mib,
        "more is durable ({offset}) than was sent"
    );
    let r = http()
        .patch(b.url_of(&path))
        .bearer_auth(&alice)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(data[offset..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
    let r = head(&b).await.unwrap();
    assert_eq!(
        r.headers()["upload-offset"].to_str().unwrap(),
        data.len().to_string()
    );
    // The file the tus upload made, read through node b, is the file sent.
    let t = Instant::now();
    let name = loop {
        let (st, v) = call(&b, Method::GET, "/v1/spaces/alice/list", Some(&alice), None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if let Some(e) = v["entries"].as_array().and_then(|e| e.first()) {
            break e["name"].as_str().unwrap().to_owned();
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no file: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (st, got) = download(&b, &alice, "alice", &name).await;
    assert_eq!(st, StatusCode::OK);
    assert!(got == data, "the file differs from what was sent");
}

#[tokio::test]
async fn fail_commits_of_one_path_raced_on_two_nodes_let_exactly_one_win() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    for round in 0..5 {
        let path = format!("race-{round}.txt");
        let mut ids = Vec::new();
        for (node, byte) in [(&a, b'a'), (&b, b'b')] {
            let v = create_session(
                node,
                &alice,
                json!({"path": path, "size": 3, "conflict": "fail"}),
            )
            .await;
            let up = v["uploads"][0]["id"].as_str().unwrap().to_owned();
            let (st, v) = part(node, &alice, &up, 1, [byte; 3]).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            ids.push(up);
        }
        // Commit both at once, each on its own node.
        let (pa, pb) = (
            format!("/v1/uploads/{}/commit", ids[0]),
            format!("/v1/uploads/{}/commit", ids[1]),
        );
        let (ra, rb) = tokio::join!(
            call(&a, Method::POST, &pa, Some(&alice), None),
            call(&b, Method::POST, &pb, Some(&alice), None)
        );
        let won: Vec<bool> = [&ra, &rb].iter().map(|(st, _)| st.is_success()).collect();
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "exactly one commit wins: {ra:?} {rb:?}"
        );
        let loser = if won[0] { &rb } else { &ra };
        assert_eq!(loser.0, StatusCode::CONFLICT, "{loser:?}");
        // The file is the winner's bytes, on both nodes.
        let want = if won[0] { b"aaa" } else { b"bbb" };
        for n in [&a, &b] {
            let (st, got) = download(n, &alice, "alice", &path).await;
            assert_eq!(st, StatusCode::OK);
            assert_eq!(got, want);
        }
    }
}

/// A request body fed by the test, chunk by chunk, that stays open until
/// its sender is dropped (a client that stalls, or whose network died
/// without a word).
fn held_body() -> (
    tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    reqwest::Body,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    }));
    (tx, body)
}

fn tus_head(n: &Server, path: &str, token: &str) -> reqwest::RequestBuilder {
    http()
        .head(n.url_of(path))
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
}

fn tus_patch(n: &Server, path: &str, token: &str, offset: usize) -> reqwest::RequestBuilder {
    http()
        .patch(n.url_of(path))
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream")
}

#[tokio::test]
async fn a_tus_patch_stalled_on_one_node_is_taken_over_from_another_within_1_s() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let mib = 1024 * 1024;
    let data = random_bytes(12 * mib + 5, 31);
    let id = create_tus(&a, &alice, data.len() as u64).await;
    let path = format!("/tus/{id}");
    // A PATCH on node a sends 6 MiB and stalls, its connection open: a
    // client whose network went away without a word, now back on node b.
    let (tx, body) = held_body();
    let stalled = tokio::spawn(tus_patch(&a, &path, &alice, 0).body(body).send());
    for chunk in data[..6 * mib].chunks(mib) {
        tx.send(Ok(chunk.to_vec())).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let r = tus_head(&b, &path, &alice).send().await.unwrap();
    let took = t.elapsed();
    assert_eq!(r.status(), StatusCode::OK);
    println!("HEAD on node b took the upload over in {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let offset: usize = r.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        offset > 0 && offset <= 6 * mib,
        "the stalled PATCH's durable bytes are kept: offset {offset}"
    );
    // The stalled request was told it was taken over; what it sends
    // now goes nowhere.
    let old = tokio::time::timeout(Duration::from_secs(5), stalled)
        .await
        .expect("the stalled PATCH was answered")
        .unwrap();
    if let Ok(old) = old {
        assert_eq!(old.status(), StatusCode::CONFLICT);
    }
    drop(tx);
    let r = tus_patch(&b, &path, &alice, offset)
        .body(data[offset..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
    let (st, got) = download(&a, &alice, "alice", &tus_file_name(&a, &alice).await).await;
    assert_eq!(st, StatusCode::OK);
    assert!(got == data, "the file differs from what was sent");
}

/// The name of alice's one file.
async fn tus_file_name(n: &Server, alice: &str) -> String {
    let t = Instant::now();
    loop {
        let (st, v) = call(n, Method::GET, "/v1/spaces/alice/list", Some(alice), None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if let Some(e) = v["entries"].as_array().and_then(|e| e.first()) {
            return e["name"].as_str().unwrap().to_owned();
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no file: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A native upload in three 5 MiB parts; (session, upload, bytes).
async fn three_parts(n: &Server, alice: &str, seed: u64) -> (String, String, Vec<u8>) {
    let part_size = 5 * 1024 * 1024;
    let data = random_bytes(3 * part_size - 1000, seed);
    let v = create_session(
        n,
        alice,
        json!({"path": "p.bin", "size": data.len(), "part_size": part_size}),
    )
    .await;
    let sid = v["id"].as_str().unwrap().to_owned();
    let up = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    (sid, up, data)
}

fn nth_part(data: &[u8], n: usize) -> &[u8] {
    let size = 5 * 1024 * 1024;
    &data[(n - 1) * size..(n * size).min(data.len())]
}

#[tokio::test]
async fn a_part_in_flight_on_one_node_refuses_the_same_part_and_a_commit_on_another() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let (sid, up, data) = three_parts(&a, &alice, 32).await;
    let (tx, body) = held_body();
    let held = tokio::spawn(
        http()
            .put(a.url_of(&format!("/v1/uploads/{up}/parts/1")))
            .bearer_auth(&alice)
            .body(body)
            .send(),
    );
    let first = nth_part(&data, 1);
    tx.send(Ok(first[..1000].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The same part on node b: refused while node a writes it.
    let (st, v) = part(&b, &alice, &up, 1, first).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(v.to_string().contains("overlap"), "{v}");
    // Other parts go through on node b meanwhile.
    for n in [2, 3] {
        let (st, v) = part(&b, &alice, &up, n, nth_part(&data, n as usize)).await;
        assert_eq!(st, StatusCode::OK, "part {n}: {v}");
    }
    // A commit cannot freeze bytes being written elsewhere.
    let commit = format!("/v1/sessions/{sid}/commit");
    let (st, v) = call(&b, Method::POST, &commit, Some(&alice), None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    // The held part ends; then the commit on node b takes it all.
    tx.send(Ok(first[1000..].to_vec())).await.unwrap();
    drop(tx);
    let r = held.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    let (st, v) = call(&b, Method::POST, &commit, Some(&alice), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, got) = download(&a, &alice, "alice", "p.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert!(got == data, "the file differs from what was sent");
}

#[tokio::test]
async fn a_part_held_by_a_killed_node_is_taken_over_at_once() {
    let Some((mut a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let (sid, up, data) = three_parts(&a, &alice, 33).await;
    let (tx, body) = held_body();
    let held = tokio::spawn(
        http()
            .put(a.url_of(&format!("/v1/uploads/{up}/parts/2")))
            .bearer_auth(&alice)
            .body(body)
            .send(),
    );
    tx.send(Ok(nth_part(&data, 2)[..1000].to_vec()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill9();
    let _ = held.await;
    // Node b writes part 2 at once: a dead node holds nothing.
    let t = Instant::now();
    for n in [2, 1, 3] {
        let (st, v) = part(&b, &alice, &up, n, nth_part(&data, n as usize)).await;
        assert_eq!(st, StatusCode::OK, "part {n}: {v}");
        if n == 2 {
            println!("part 2 on node b after the kill: {:?}", t.elapsed());
            assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        }
    }
    let commit = format!("/v1/sessions/{sid}/commit");
    let (st, v) = call(&b, Method::POST, &commit, Some(&alice), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, got) = download(&b, &alice, "alice", "p.bin").await;
    assert_eq!(st, StatusCode::OK);
    assert!(got == data, "the file differs from what was sent");
}
