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
