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
    let mut n = nodes_with(2, &[])?;
    let b = n.pop().unwrap();
    Some((n.pop().unwrap(), b))
}

/// `count` nodes on one fresh database and one bucket (under a prefix of
/// their own), or `None` (skipped).
fn nodes_with(count: usize, extra: &[(&str, &str)]) -> Option<Vec<Server>> {
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
    let first = Server::start_with(&on_s3);
    let url = first.database_url().expect("on PostgreSQL").to_owned();
    let mut env = on_s3.clone();
    env.push(("FERRY_DATABASE_URL", &url));
    let mut all = vec![first];
    all.extend((1..count).map(|_| Server::start_with(&env)));
    Some(all)
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
    assert_a_second_local_node_is_refused(&a).await;
}

#[tokio::test]
async fn a_second_node_on_the_local_store_is_refused_after_the_database_ended_the_first_ones_hold()
{
    if !available(false) {
        return;
    }
    let a = Server::start();
    let held = "SELECT count(*) FROM pg_locks k
         WHERE k.locktype = 'advisory' AND k.classid = 1332636793::oid
           AND k.objid = hashtext('local-store')::oid AND k.granted
           AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    assert_eq!(a.pg_value(held), "1", "the node holds the local store");
    // As a restart of the database would: every connection holding a
    // node-wide lock ends.
    let ended = a.pg_value(
        "SELECT count(pg_terminate_backend(k.pid)) FROM pg_locks k
         WHERE k.locktype = 'advisory' AND k.classid = 1332636793::oid AND k.granted
           AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    );
    assert_ne!(ended, "0", "no hold ended");
    // The node takes its hold again within seconds (it checks every second).
    let t = Instant::now();
    while a.pg_value(held) != "1" {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the node did not take the local store again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_a_second_local_node_is_refused(&a).await;
}

/// A second node on `a`'s database, with a local store of its own, does
/// not start, and says why; `a` goes on serving.
async fn assert_a_second_local_node_is_refused(a: &Server) {
    let url = a.database_url().expect("on PostgreSQL");
    let data = tempfile::tempdir().unwrap();
    let mut second = std::process::Command::new(ferry_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("FERRY_DATABASE_URL", url)
        .env("FERRY_ADMIN_TOKEN", ADMIN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It gives up within seconds (it asks for the hold for 2 s); one
    // still running after 20 s started.
    let t = Instant::now();
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if t.elapsed() > Duration::from_secs(20) {
            second.kill().ok();
            second.wait().ok();
            panic!("the second node started");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "the second node must not start");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("local disk") && err.contains("--store s3"),
        "{err}"
    );
    let (st, _) = call(a, Method::GET, "/v1/me", Some(ADMIN), None).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn parts_of_one_upload_sent_round_robin_to_three_nodes_commit_on_any_verified() {
    let Some(n) = nodes_with(3, &[]) else {
        return;
    };
    let alice = user(&n[0], "alice").await;
    let part_size = 5 * 1024 * 1024;
    let data = random_bytes(5 * part_size + 1000, 9);
    let v = create_session(
        &n[0],
        &alice,
        json!({"path": "rr.bin", "size": data.len(), "part_size": part_size}),
    )
    .await;
    let (sid, up) = (
        v["id"].as_str().unwrap().to_owned(),
        v["uploads"][0]["id"].as_str().unwrap().to_owned(),
    );
    // Round-robin over the three nodes, out of order, two at a time.
    let order = [6, 1, 4, 2, 5, 3];
    for (i, pair) in order.chunks(2).enumerate() {
        let sends = pair.iter().enumerate().map(|(j, &k)| {
            let node = &n[(2 * i + j) % 3];
            let start = (k - 1) * part_size;
            let end = (start + part_size).min(data.len());
            let (alice, up, bytes) = (&alice, &up, &data[start..end]);
            async move { (k, part(node, alice, up, k, bytes).await) }
        });
        for (k, (st, v)) in futures::future::join_all(sends).await {
            assert_eq!(st, StatusCode::OK, "part {k}: {v}");
        }
    }
    // Every node sees every part.
    for node in &n {
        let v = status(node, &alice, &up).await;
        assert_eq!(v["received_bytes"], json!(data.len()), "{v}");
    }
    // The commit, a fourth request, on the node after the last part's.
    let (st, v) = call(
        &n[1],
        Method::POST,
        &format!("/v1/sessions/{sid}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    for node in &n {
        assert_file(node, &alice, "rr.bin", &data).await;
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
    assert_file(&b, &alice, &name, &data).await;
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
            assert_file(n, &alice, &path, want).await;
        }
        // On S3 the loser's object was sealed before its path was found
        // taken: it stays the loser's, and commits, on the other node,
        // once the path is free.
        let (loser_id, loser_bytes, other) = if won[0] {
            (&ids[1], b"bbb", &a)
        } else {
            (&ids[0], b"aaa", &b)
        };
        let file = format!("/v1/spaces/alice/files/{path}");
        let (st, v) = call(other, Method::DELETE, &file, Some(&alice), None).await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
        let retry = format!("/v1/uploads/{loser_id}/commit");
        let (st, v) = call(other, Method::POST, &retry, Some(&alice), None).await;
        assert_eq!(st, StatusCode::OK, "the refused upload commits later: {v}");
        for n in [&a, &b] {
            assert_file(n, &alice, &path, loser_bytes).await;
        }
    }
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

/// A node keeps the uploads it created cached; an append there reads the
/// upload afresh once its lease is granted: it continues from what another
/// node wrote meanwhile, and a resend to an upload another node completed
/// is answered as that node answers it.
#[tokio::test]
async fn an_append_on_the_node_that_made_the_upload_sees_what_another_node_wrote() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let data = random_bytes(64 * 1024 + 3, 31);
    let half = data.len() / 2;
    let id = create_tus(&a, &alice, data.len() as u64).await;
    let path = format!("/tus/{id}");
    let r = tus_patch(&b, &path, &alice, 0)
        .body(data[..half].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Node a made the upload when it was empty: it takes the rest at the
    // offset b reached.
    let r = tus_patch(&a, &path, &alice, half)
        .body(data[half..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
    assert_eq!(
        r.headers()["upload-offset"],
        data.len().to_string().as_str()
    );

    // Completed on b, then the whole body sent again to a and to b: the
    // same answer from both, and the file as it was.
    let id = create_tus(&a, &alice, data.len() as u64).await;
    let path = format!("/tus/{id}");
    let r = tus_patch(&b, &path, &alice, 0)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let mut answers = Vec::new();
    for n in [&a, &b] {
        let r = tus_patch(n, &path, &alice, 0)
            .body(data.clone())
            .send()
            .await
            .unwrap();
        let offset = r.headers().get("upload-offset").cloned();
        answers.push((r.status(), offset));
    }
    assert_eq!(answers[0], answers[1], "a and b answer a resend alike");
    let r = tus_head(&a, &path, &alice).send().await.unwrap();
    assert_eq!(
        r.headers()["upload-offset"],
        data.len().to_string().as_str()
    );
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
    // Node b counts the append it got from a holder that let go.
    assert_eq!(lease_busy(&b, "append", "granted").await, 1);
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
    assert_file(&a, &alice, &tus_file_name(&a, &alice).await, &data).await;
}

/// An append sent to a node that never read its upload claims it in the
/// statement that reads it, before its request is authorized: a
/// stranger's is refused as for an unknown upload and disturbs nothing —
/// not even the owner's small PATCH in flight on the node that made the
/// upload, which claims nothing and gives way to any claim —, and the
/// owner's own append there lands and commits.
#[tokio::test]
async fn a_strangers_patch_on_a_node_that_never_read_the_upload_disturbs_nothing() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let bob = user(&a, "bob").await;
    let data = random_bytes(8 * 1024 + 1, 7);
    let id = create_tus(&a, &alice, data.len() as u64).await;
    let path = format!("/tus/{id}");
    // Alice's whole file on node a, its body held back halfway.
    let (tx, body) = held_body();
    let owner = tokio::spawn(tus_patch(&a, &path, &alice, 0).body(body).send());
    tx.send(Ok(data[..4096].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = tus_patch(&b, &path, &bob, 0)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "{:?}", r.text().await);
    tx.send(Ok(data[4096..].to_vec())).await.unwrap();
    drop(tx);
    let r = owner.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
    assert_file(&a, &alice, &tus_file_name(&a, &alice).await, &data).await;

    // Alice's next upload, its file sent to node b.
    let id = create_tus(&a, &alice, data.len() as u64).await;
    let path = format!("/tus/{id}");
    let r = tus_patch(&b, &path, &alice, 0)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
    assert_eq!(
        r.headers()["upload-offset"],
        data.len().to_string().as_str()
    );
    assert_eq!(listed(&b, &alice, 2).await.len(), 2, "committed once");
}

/// A completing PATCH of a small file holds its session's turn for its
/// commit from its first byte: stalled, it must not hold up an abort of
/// its session from another node, which asks for the turn and gets it at
/// once (a tus DELETE takes the upload over first; the native abort does
/// not).
#[tokio::test]
async fn an_abort_on_another_node_is_not_held_up_by_a_stalled_completing_append() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let data = random_bytes(64 * 1024, 32);
    let id = create_tus(&a, &alice, data.len() as u64).await;
    let path = format!("/tus/{id}");
    let (tx, body) = held_body();
    let stalled = tokio::spawn(
        tus_patch(&a, &path, &alice, 0)
            .header("content-length", data.len().to_string())
            .body(body)
            .send(),
    );
    tx.send(Ok(data[..32 * 1024].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (st, v) = call(
        &b,
        Method::GET,
        "/v1/sessions?state=open",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let sid = v["sessions"][0]["id"].as_str().unwrap().to_owned();
    let t = Instant::now();
    let (st, v) = call(
        &b,
        Method::DELETE,
        &format!("/v1/sessions/{sid}"),
        Some(&alice),
        None,
    )
    .await;
    let took = t.elapsed();
    assert!(st.is_success(), "{st}: {v}");
    println!("the abort on node b was answered in {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // The rest of the body comes: the upload is gone, nothing is committed.
    tx.send(Ok(data[32 * 1024..].to_vec())).await.unwrap();
    drop(tx);
    let old = tokio::time::timeout(Duration::from_secs(10), stalled)
        .await
        .expect("the stalled PATCH was answered")
        .unwrap();
    if let Ok(old) = old {
        assert!(!old.status().is_success(), "{}", old.status());
    }
    let r = tus_head(&a, &path, &alice).send().await.unwrap();
    assert!(
        matches!(r.status(), StatusCode::NOT_FOUND | StatusCode::GONE),
        "{}",
        r.status()
    );
    let (st, v) = call(&a, Method::GET, "/v1/spaces/alice/list", Some(&alice), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["entries"].as_array().map_or(0, Vec::len), 0, "{v}");
}

/// A small upload has no multipart upload on S3 until a part of it is
/// presigned: presigned on another node than the one that made it, the
/// part is found by the maker, whose status read and commit take it.
#[tokio::test]
async fn a_small_upload_made_on_one_node_commits_a_part_presigned_on_another() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let data = random_bytes(100_000, 33);
    let v = create_session(
        &a,
        &alice,
        json!({"path": "direct.bin", "size": data.len()}),
    )
    .await;
    let sid = v["id"].as_str().unwrap().to_owned();
    let up = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    let (st, p) = call(
        &b,
        Method::POST,
        &format!("/v1/uploads/{up}/parts/1/presign"),
        Some(&alice),
        Some(json!({})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(p["size"].as_u64(), Some(data.len() as u64), "{p}");
    let mut rb = http().put(p["url"].as_str().unwrap()).body(data.clone());
    for (k, v) in p["headers"].as_object().unwrap() {
        if k != "content-length" {
            rb = rb.header(k.as_str(), v.as_str().unwrap());
        }
    }
    let sent = rb.send().await.unwrap();
    assert!(sent.status().is_success(), "{:?}", sent.text().await);
    let (st, v) = call(
        &a,
        Method::GET,
        &format!("/v1/sessions/{sid}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "open", "{v}");
    let (st, v) = call(
        &a,
        Method::POST,
        &format!("/v1/sessions/{sid}/commit"),
        Some(&alice),
        None,
    )
    .await;
    assert!(st.is_success(), "{st}: {v}");
    assert_file(&b, &alice, "direct.bin", &data).await;
}

/// The name of alice's one file.
async fn tus_file_name(n: &Server, alice: &str) -> String {
    let entries = listed(n, alice, 1).await;
    entries[0]["name"].as_str().unwrap().to_owned()
}

/// Alice's space's entries once there are `count` of them (10 s at most).
async fn listed(n: &Server, alice: &str, count: usize) -> Vec<serde_json::Value> {
    let t = Instant::now();
    loop {
        let (st, v) = call(n, Method::GET, "/v1/spaces/alice/list", Some(alice), None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if let Some(e) = v["entries"].as_array().filter(|e| e.len() >= count) {
            return e.clone();
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "fewer than {count} files: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A native upload in three 5 MiB parts; (session, upload, bytes).
async fn three_parts(n: &Server, alice: &str, seed: u64) -> (String, String, Vec<u8>) {
    let part_size = 5 * 1024 * 1024;
    let data = random_bytes(3 * part_size - 1000, seed);
    let body = json!({"path": "p.bin", "size": data.len(), "part_size": part_size});
    let (sid, up) = one_upload(n, alice, body).await;
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
    // Node b counts both refusals, by what the claims were for.
    assert_eq!(lease_busy(&b, "write", "refused").await, 1);
    assert_eq!(lease_busy(&b, "commit", "refused").await, 1);
    // The held part ends; then the commit on node b takes it all.
    tx.send(Ok(first[1000..].to_vec())).await.unwrap();
    drop(tx);
    let r = held.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    let (st, v) = call(&b, Method::POST, &commit, Some(&alice), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_file(&a, &alice, "p.bin", &data).await;
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
    assert_file(&b, &alice, "p.bin", &data).await;
}

/// Asserts that `path` in alice's space, read through node `n`, is `data`.
async fn assert_file(n: &Server, token: &str, path: &str, data: &[u8]) {
    let (st, got) = download(n, token, "alice", path).await;
    assert_eq!(st, StatusCode::OK, "{path} through {}", n.url);
    assert!(
        got == data,
        "{path} read through {} differs from what was sent",
        n.url
    );
}

/// `url` (absolute, naming one node) sent to node `n` instead, as a load
/// balancer would.
fn via(n: &Server, url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    n.url_of(path)
}

#[tokio::test]
async fn a_graph_range_cut_by_the_death_of_its_node_resumes_on_another_node() {
    let Some((mut a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let fragment = 10 * 327_680;
    let data = random_bytes(3 * fragment + 999, 34);
    let total = data.len();
    let r = http()
        .post(a.url_of("/v1.0/me/drive/root:/g.bin:/createUploadSession"))
        .bearer_auth(&alice)
        .json(&json!({"item": {"fileSize": total}}))
        .send()
        .await
        .unwrap();
    let (st, v) = decode(r).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let upload_url = v["uploadUrl"].as_str().unwrap().to_owned();
    let put = |url: String, first: usize, body: reqwest::Body, len: usize| {
        http()
            .put(url)
            .header(
                "Content-Range",
                format!("bytes {first}-{}/{total}", first + len - 1),
            )
            .header("Content-Length", len.to_string())
            .body(body)
            .send()
    };
    let (st, _) = decode(
        put(
            via(&a, &upload_url),
            0,
            data[..fragment].to_vec().into(),
            fragment,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    // The second range stalls half-way on node a, which is SIGKILLed.
    let (tx, body) = held_body();
    let cut = tokio::spawn(put(via(&a, &upload_url), fragment, body, fragment));
    tx.send(Ok(data[fragment..fragment + fragment / 2].to_vec()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill9();
    let _ = cut.await;
    // Node b tells what it still needs, and takes it at once.
    let (st, v) = decode(http().get(via(&b, &upload_url)).send().await.unwrap()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let next = v["nextExpectedRanges"][0].as_str().unwrap().to_owned();
    let start: usize = next.split('-').next().unwrap().parse().unwrap();
    assert_eq!(start, fragment, "the acknowledged range is kept: {v}");
    let mut at = start;
    let mut last = (StatusCode::OK, json!(null));
    while at < total {
        let len = fragment.min(total - at);
        let r = put(
            via(&b, &upload_url),
            at,
            data[at..at + len].to_vec().into(),
            len,
        )
        .await
        .unwrap();
        last = decode(r).await;
        at += len;
    }
    assert_eq!(last.0, StatusCode::CREATED, "{}", last.1);
    assert_file(&b, &alice, "g.bin", &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_mid_traffic_leaves_nothing_stuck_and_nothing_lost() {
    let Some(n) = nodes_with(3, &[]) else {
        return;
    };
    let alice = user(&n[0], "alice").await;
    let urls: Vec<String> = n.iter().map(|s| s.url.clone()).collect();
    let urls = std::sync::Arc::new(std::sync::RwLock::new(urls));
    let nodes = std::sync::Arc::new(tokio::sync::Mutex::new(n));
    // Four clients, each uploading files of three parts, every request to
    // the next node; a request that fails is sent again to the next one.
    let part_size = 5 * 1024 * 1024;
    let client = |w: usize| {
        let (urls, alice) = (urls.clone(), alice.clone());
        async move {
            let mut turn = w;
            let mut next_url = move || {
                turn += 1;
                let u = urls.read().unwrap();
                u[turn % u.len()].clone()
            };
            let mut files = Vec::new();
            for f in 0..3 {
                let path = format!("w{w}/f{f}.bin");
                let data = random_bytes(2 * part_size + 1000 * (w + 1), (w * 10 + f) as u64);
                let body = json!({"path": path, "size": data.len(), "part_size": part_size});
                let v = retry(&mut next_url, |url| {
                    http()
                        .post(format!("{url}/v1/sessions"))
                        .bearer_auth(&alice)
                        .json(&body)
                })
                .await;
                let sid = v["id"].as_str().unwrap().to_owned();
                let up = v["uploads"][0]["id"].as_str().unwrap().to_owned();
                for k in 1..=3 {
                    let bytes = data[(k - 1) * part_size..(k * part_size).min(data.len())].to_vec();
                    retry(&mut next_url, |url| {
                        http()
                            .put(format!("{url}/v1/uploads/{up}/parts/{k}"))
                            .bearer_auth(&alice)
                            .body(bytes.clone())
                    })
                    .await;
                }
                retry(&mut next_url, |url| {
                    http()
                        .post(format!("{url}/v1/sessions/{sid}/commit"))
                        .bearer_auth(&alice)
                })
                .await;
                files.push((path, data));
            }
            files
        }
    };
    let clients = tokio::spawn(futures::future::join_all((0..4).map(client)));
    // Mid-traffic, node 1 is killed and starts again (on a new port).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    {
        let mut n = nodes.lock().await;
        n[1].restart();
        urls.write().unwrap()[1] = n[1].url.clone();
    }
    let files = tokio::time::timeout(Duration::from_secs(120), clients)
        .await
        .expect("no client got stuck")
        .unwrap();
    let retried = RETRIED.load(std::sync::atomic::Ordering::Relaxed);
    println!("requests sent again after the restart: {retried}");
    assert!(retried > 0, "the restart did not happen mid-traffic");
    let n = nodes.lock().await;
    for (path, data) in files.into_iter().flatten() {
        for node in n.iter() {
            assert_file(node, &alice, &path, &data).await;
        }
    }
    // No session is left half-way. (A creation whose answer the restart
    // cut may have left an empty open one, which the client never saw.)
    let (st, v) = call(&n[2], Method::GET, "/v1/sessions", Some(&alice), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let sessions = v["sessions"].as_array().unwrap();
    assert!(sessions.len() >= 12, "{v}");
    for s in sessions {
        assert_ne!(s["state"], json!("committing"), "{s}");
    }
}

/// Requests [`retry`] sent again.
static RETRIED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sends the request `make` builds for the next node until one answers
/// 2xx (a node being restarted refuses connections or is cut mid-answer);
/// its JSON body.
async fn retry(
    next_url: &mut impl FnMut() -> String,
    make: impl Fn(&str) -> reqwest::RequestBuilder,
) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let url = next_url();
        match make(&url).send().await {
            Ok(r) if r.status().is_success() => return r.json().await.unwrap_or(json!(null)),
            Ok(r) => {
                let st = r.status();
                let body = r.text().await.unwrap_or_default();
                assert!(
                    st.is_server_error() || st == StatusCode::CONFLICT,
                    "{st}: {body}"
                );
            }
            Err(_) => {}
        }
        RETRIED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(t.elapsed() < Duration::from_secs(60), "never answered 2xx");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_commit_cut_by_the_death_of_its_node_is_finished_on_another_node() {
    let Some((mut a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let part_size = 16 * 1024 * 1024;
    let data = random_bytes(4 * part_size + 3, 35);
    let v = create_session(
        &a,
        &alice,
        json!({"path": "c.bin", "size": data.len(), "part_size": part_size}),
    )
    .await;
    let sid = v["id"].as_str().unwrap().to_owned();
    let up = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    // Out of order, so that the commit reads the object back (it takes a
    // while: long enough to be cut).
    for k in [5, 4, 3, 2, 1] {
        let bytes = &data[(k - 1) * part_size..(k * part_size).min(data.len())];
        let (st, v) = part(&b, &alice, &up, k, bytes).await;
        assert_eq!(st, StatusCode::OK, "part {k}: {v}");
    }
    let commit = format!("/v1/sessions/{sid}/commit");
    let cut = tokio::spawn(http().post(a.url_of(&commit)).bearer_auth(&alice).send());
    tokio::time::sleep(Duration::from_millis(150)).await;
    a.kill9();
    let _ = cut.await;
    // Wherever the commit was cut, the next one, on node b, finishes it.
    let t = Instant::now();
    let (st, v) = call(&b, Method::POST, &commit, Some(&alice), None).await;
    println!("the commit on node b took {:?}", t.elapsed());
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], json!("committed"), "{v}");
    assert_file(&b, &alice, "c.bin", &data).await;
}

/// The commit's intent of a node killed while that statement waits (here
/// for a row lock held by the test) still runs in PostgreSQL; the node
/// that takes the commit over ends it before it reads the records
/// (fencing), so the dead node's intent never lands under the new
/// commit's feet. Before, it landed after the takeover's read, and the
/// new commit refused the session's own path as taken (409).
#[tokio::test]
async fn a_commit_intent_under_way_when_its_node_dies_never_lands_after_another_node_took_over() {
    let Some((mut a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let part_size = 16 * 1024 * 1024;
    let data = random_bytes(part_size + 3, 37);
    let v = create_session(
        &a,
        &alice,
        json!({"path": "d.bin", "size": data.len(), "part_size": part_size}),
    )
    .await;
    let sid = v["id"].as_str().unwrap().to_owned();
    let up = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    // Out of order: the commit records its intent on its own, then reads
    // the object back.
    for k in [2, 1] {
        let bytes = &data[(k - 1) * part_size..(k * part_size).min(data.len())];
        let (st, v) = part(&b, &alice, &up, k, bytes).await;
        assert_eq!(st, StatusCode::OK, "part {k}: {v}");
    }
    let url = a.database_url().unwrap().to_owned();
    let waiting = || {
        psql(
            &url,
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
    };
    let held = AdvisoryLockHeld::upload_row(&url, &up);
    let commit = format!("/v1/sessions/{sid}/commit");
    let cut = tokio::spawn(http().post(a.url_of(&commit)).bearer_auth(&alice).send());
    let t = Instant::now();
    while waiting() == "0" {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the intent never waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill9();
    let _ = cut.await;
    let on_b = tokio::spawn({
        let (url, alice) = (b.url_of(&commit), alice.clone());
        async move { http().post(url).bearer_auth(&alice).send().await }
    });
    // Node b's commit, past its claim and its read, waits for the row in
    // turn (its connections are named after its process); then the row
    // is let go.
    let b_waits = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND wait_event_type = 'Lock' AND application_name LIKE 'ferry/{:x}-%'",
        b.pid()
    );
    let t = Instant::now();
    while psql(&url, &b_waits) == "0" {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "node b's commit never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(waiting(), "1", "the dead node's statement still waits");
    drop(held);
    let r = tokio::time::timeout(Duration::from_secs(60), on_b)
        .await
        .expect("node b's commit answered")
        .unwrap()
        .unwrap();
    let st = r.status();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], json!("committed"), "{v}");
    assert_file(&b, &alice, "d.bin", &data).await;
}

#[tokio::test]
async fn a_box_session_from_one_node_takes_parts_and_its_commit_on_another() {
    use base64::Engine as _;
    use sha1::Digest as _;
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let mib = 1 << 20;
    let data = random_bytes(8 * mib + 4321, 36);
    let sha = |d: &[u8]| {
        format!(
            "sha={}",
            base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(d))
        )
    };
    let (st, v) = call(
        &a,
        Method::POST,
        "/api/2.0/files/upload_sessions",
        Some(&alice),
        Some(json!({"folder_id": "0", "file_name": "box.bin", "file_size": data.len()})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let upload_part = v["session_endpoints"]["upload_part"].as_str().unwrap();
    let commit_url = v["session_endpoints"]["commit"].as_str().unwrap();
    // One part through each node, at the URLs node a handed out.
    let mut parts = Vec::new();
    for (node, lo, hi) in [(&b, 0, 8 * mib), (&a, 8 * mib, data.len())] {
        let r = http()
            .put(via(node, upload_part))
            .bearer_auth(&alice)
            .header(
                "content-range",
                format!("bytes {lo}-{}/{}", hi - 1, data.len()),
            )
            .header("digest", sha(&data[lo..hi]))
            .body(data[lo..hi].to_vec())
            .send()
            .await
            .unwrap();
        let (st, v) = decode(r).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        parts.push(v["part"].clone());
    }
    let r = http()
        .post(via(&b, commit_url))
        .bearer_auth(&alice)
        .header("digest", sha(&data))
        .json(&json!({"parts": parts}))
        .send()
        .await
        .unwrap();
    let (st, v) = decode(r).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_file(&a, &alice, "box.bin", &data).await;
}

#[tokio::test]
async fn a_ucloud_upload_token_from_one_node_appends_on_every_node() {
    let Some(n) = nodes_with(3, &[]) else {
        return;
    };
    let alice = user(&n[0], "alice").await;
    let mib = 1 << 20;
    let data = random_bytes(5 * mib + 77, 37);
    let (st, v) = call(
        &n[0],
        Method::POST,
        "/api/files/upload",
        Some(&alice),
        Some(json!({"items": [{"id": "/alice/u.bin", "type": "FILE",
            "supportedProtocols": ["CHUNKED"], "conflictPolicy": "REJECT"}]})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let token = v["responses"][0]["token"].as_str().unwrap().to_owned();
    // Chunks appended in turn through the three nodes; the last byte
    // commits, wherever it lands.
    for (i, piece) in data.chunks(mib).enumerate() {
        let r = http()
            .post(n[i % 3].url_of("/ucloud/chunked"))
            .header("Chunked-Upload-Token", &token)
            .header("Chunked-Upload-Offset", "-1")
            .header("Chunked-Upload-Total-Size", data.len().to_string())
            .body(piece.to_vec())
            .send()
            .await
            .unwrap();
        let (st, v) = decode(r).await;
        assert_eq!(st, StatusCode::OK, "chunk {i}: {v}");
    }
    for node in &n {
        assert_file(node, &alice, "u.bin", &data).await;
    }
}

/// One-request uploads (`PUT` of a whole file) claim their path in the
/// step that records their intent, without taking the space's turn:
/// raced on three nodes for one path, each policy still holds — `fail`
/// (If-None-Match: *) lets exactly one through and answers 412 to the
/// others, `rename` gives every body a path of its own, and `replace`
/// leaves one whole body at the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_puts_of_one_path_raced_on_three_nodes_keep_the_conflict_policy() {
    let Some(n) = nodes_with(3, &[]) else {
        return;
    };
    let alice = user(&n[0], "alice").await;
    let body = |k: usize, round: usize| vec![b'a' + k as u8; 4096 + round];
    let race = |path: String, round: usize, headers: &'static [(&'static str, &'static str)]| {
        let (n, alice) = (&n, &alice);
        async move {
            let puts = (0..3).map(|k| {
                let path = path.clone();
                async move {
                    let url = format!("/v1/spaces/alice/files/{path}");
                    put(&n[k], &url, Some(alice), headers, body(k, round)).await
                }
            });
            futures::future::join_all(puts).await
        }
    };
    for round in 0..4 {
        // fail: one 201, two 412, the file is the winner's body.
        let path = format!("fail/{round}.bin");
        let got = race(path.clone(), round, &[("if-none-match", "*")]).await;
        let won: Vec<usize> = (0..3)
            .filter(|k| got[*k].0 == StatusCode::CREATED)
            .collect();
        assert_eq!(won.len(), 1, "round {round}: exactly one PUT wins: {got:?}");
        for (k, (st, v)) in got.iter().enumerate() {
            if k != won[0] {
                assert_eq!(*st, StatusCode::PRECONDITION_FAILED, "round {round}: {v}");
            }
        }
        assert_file(&n[(round + 1) % 3], &alice, &path, &body(won[0], round)).await;

        // rename: three files, each body whole at its own path.
        let url = format!("/v1/spaces/alice/files/rename/r{round}.bin?conflict=rename");
        let puts = (0..3).map(|k| {
            let (n, alice, url) = (&n, &alice, url.clone());
            async move { put(&n[k], &url, Some(alice), &[], body(k, round)).await }
        });
        let got = futures::future::join_all(puts).await;
        let mut paths = Vec::new();
        for (k, (st, v)) in got.iter().enumerate() {
            assert_eq!(*st, StatusCode::CREATED, "round {round}: {v}");
            let p = v["path"].as_str().unwrap().to_owned();
            assert_file(&n[(k + 1) % 3], &alice, &p, &body(k, round)).await;
            paths.push(p);
        }
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 3, "round {round}: a path each: {paths:?}");

        // replace (the default): one whole body stays, one that was
        // answered 201; a body that met another's commit in progress is
        // told to retry (409), never half-stored.
        let path = format!("replace/{round}.bin");
        let got = race(path.clone(), round, &[]).await;
        for (st, v) in &got {
            assert!(
                *st == StatusCode::CREATED || *st == StatusCode::CONFLICT,
                "round {round}: {v}"
            );
        }
        let (st, stored) = download(&n[round % 3], &alice, "alice", &path).await;
        assert_eq!(st, StatusCode::OK);
        assert!(
            (0..3).any(|k| got[k].0 == StatusCode::CREATED && stored == body(k, round)),
            "round {round}: the file at {path} is a body answered 201, whole"
        );
    }
}

/// A small one-request upload recorded the usual way (here because a
/// progress hook is wanted: it is recorded before its bytes come) holds
/// its session's turn from its creation to its result: the owner aborting
/// that session from another node meanwhile waits for it and is told the
/// session is committed, never leaves the upload half-committed. A larger
/// one holds no turn while its body streams: the abort goes through at
/// once, the upload fails, and its path stays free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_from_another_node_never_leaves_a_one_request_upload_half_committed() {
    // (Nothing listens there: the events wait in the outbox.)
    let hooked = [
        ("FERRY_HOOKS_URL", "http://127.0.0.1:9/hooks"),
        ("FERRY_HOOKS_EVENTS", "post-receive"),
    ];
    let Some(mut n) = nodes_with(2, &hooked) else {
        return;
    };
    let (b, a) = (n.pop().unwrap(), n.pop().unwrap());
    let alice = user(&a, "alice").await;
    for (size, path) in [(4096usize, "small.bin"), (2 << 20, "large.bin")] {
        let data = vec![b'z'; size];
        let (tx, held) = held_body();
        let url = a.url_of(&format!("/v1/spaces/alice/files/{path}"));
        let sending = tokio::spawn(
            http()
                .put(url)
                .bearer_auth(&alice)
                .header("content-length", size.to_string())
                .body(held)
                .send(),
        );
        tx.send(Ok(data[..size / 2].to_vec())).await.unwrap();
        // The session, as the owner sees it on the other node.
        let sid = {
            let started = Instant::now();
            loop {
                let (_, v) = call(
                    &b,
                    Method::GET,
                    "/v1/sessions?state=open",
                    Some(&alice),
                    None,
                )
                .await;
                if let Some(s) = v["sessions"].as_array().and_then(|s| s.first()) {
                    break s["id"].as_str().unwrap().to_owned();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "no open session: {v}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let abort = {
            let (b, alice, sid) = (b.url.clone(), alice.clone(), sid.clone());
            tokio::spawn(async move {
                let r = http()
                    .delete(format!("{b}/v1/sessions/{sid}"))
                    .bearer_auth(&alice)
                    .send()
                    .await
                    .unwrap();
                r.status()
            })
        };
        if size <= 4096 {
            // Let the abort reach the turn, then finish the body.
            tokio::time::sleep(Duration::from_millis(300)).await;
            tx.send(Ok(data[size / 2..].to_vec())).await.unwrap();
            drop(tx);
            let put = sending.await.unwrap().unwrap();
            assert_eq!(put.status(), StatusCode::CREATED, "the PUT commits");
            let aborted = abort.await.unwrap();
            assert!(
                aborted == StatusCode::GONE || aborted == StatusCode::CONFLICT,
                "the abort is told the session is committed: {aborted}"
            );
            assert_file(&b, &alice, path, &data).await;
            let (_, s) = call(
                &b,
                Method::GET,
                &format!("/v1/sessions/{sid}"),
                Some(&alice),
                None,
            )
            .await;
            assert_eq!(s["state"], "committed", "{s}");
        } else {
            let aborted = abort.await.unwrap();
            assert!(aborted.is_success(), "the abort goes through: {aborted}");
            let _ = tx.send(Ok(data[size / 2..].to_vec())).await;
            drop(tx);
            if let Ok(r) = sending.await.unwrap() {
                assert!(
                    r.status().is_client_error(),
                    "the PUT fails: {}",
                    r.status()
                );
            }
            let (st, _) = download(&b, &alice, "alice", path).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "nothing at {path}");
            let url = format!("/v1/spaces/alice/files/{path}");
            let (st, v) = put(&b, &url, Some(&alice), &[("if-none-match", "*")], data).await;
            assert_eq!(st, StatusCode::CREATED, "the path is free: {v}");
        }
    }
}

/// A small one-request upload with nothing to ask first is recorded in
/// one step once its body is whole: while the body comes no node knows
/// its session (nothing can abort or see it half done); then the session,
/// the upload and the file are there at once, on every node, committed.
/// A body that ends short leaves nothing open and the path free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_one_request_upload_is_recorded_only_once_whole_and_committed() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let data = random_bytes(4096, 61);
    let sessions = |state: &'static str| {
        let (b, alice) = (&b, &alice);
        async move {
            let url = format!("/v1/sessions?state={state}");
            let (_, v) = call(b, Method::GET, &url, Some(alice), None).await;
            v["sessions"].as_array().cloned().unwrap_or_default()
        }
    };
    let (tx, held) = held_body();
    let sending = tokio::spawn(
        http()
            .put(a.url_of("/v1/spaces/alice/files/whole.bin"))
            .bearer_auth(&alice)
            .header("content-length", data.len().to_string())
            .body(held)
            .send(),
    );
    tx.send(Ok(data[..1000].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        sessions("open").await.is_empty(),
        "no session while the body comes"
    );
    let (st, _) = download(&b, &alice, "alice", "whole.bin").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    tx.send(Ok(data[1000..].to_vec())).await.unwrap();
    drop(tx);
    let r = sending.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["size"], 4096, "{v}");
    assert_file(&b, &alice, "whole.bin", &data).await;
    let committed = sessions("committed").await;
    assert_eq!(committed.len(), 1, "{committed:?}");
    assert!(sessions("open").await.is_empty());

    // A body cut short: nothing recorded, the path free.
    let (tx, held) = held_body();
    let sending = tokio::spawn(
        http()
            .put(a.url_of("/v1/spaces/alice/files/cut.bin"))
            .bearer_auth(&alice)
            .header("content-length", data.len().to_string())
            .body(held)
            .send(),
    );
    tx.send(Ok(data[..1000].to_vec())).await.unwrap();
    tx.send(Err(std::io::Error::other("the client went away")))
        .await
        .unwrap();
    drop(tx);
    let _ = sending.await.unwrap();
    let (st, _) = download(&b, &alice, "alice", "cut.bin").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // (The usual way, which a failed body takes, may have made its
    // session: the request that went away aborts it in the background.)
    let t = std::time::Instant::now();
    while !sessions("open").await.is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "nothing left open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = "/v1/spaces/alice/files/cut.bin";
    let (st, v) = put(
        &b,
        url,
        Some(&alice),
        &[("if-none-match", "*")],
        data.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "the path is free: {v}");
}

/// A small one-request upload refused after its body came (over the
/// owner's quota, or its path taken under `fail`) is answered as ever, and
/// leaves no object behind in the bucket.
#[tokio::test]
async fn a_refused_one_request_upload_answers_as_ever_and_leaves_no_object() {
    let prefix = format!(
        "cluster-refused-{}/",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let Some(mut n) = nodes_with(2, &[("FERRY_S3_PREFIX", &prefix)]) else {
        return;
    };
    let (b, a) = (n.pop().unwrap(), n.pop().unwrap());
    let alice = user(&a, "alice").await;
    let (st, v) = call(
        &a,
        Method::PATCH,
        "/v1/admin/users/alice",
        Some(ADMIN),
        Some(json!({"quota_bytes": 6000})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let s3 = s3_client(&std::env::var("FERRY_S3_ENDPOINT").unwrap()).await;
    let bucket = std::env::var("FERRY_S3_BUCKET").unwrap();
    let data = random_bytes(4096, 67);
    let (st, v) = put(
        &a,
        "/v1/spaces/alice/files/one.bin",
        Some(&alice),
        &[],
        data.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let stored = keys_under(&s3, &bucket, &prefix).await;
    assert!(!stored.is_empty(), "the file's object");

    // 4096 more bytes would pass the quota of 6000.
    let (st, v) = put(
        &b,
        "/v1/spaces/alice/files/two.bin",
        Some(&alice),
        &[],
        data.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::INSUFFICIENT_STORAGE, "{v}");
    assert!(v.to_string().contains("over the quota"), "{v}");
    assert_eq!(keys_under(&s3, &bucket, &prefix).await, stored);
    let (st, _) = download(&a, &alice, "alice", "two.bin").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Within the quota again, but at a taken path under `fail`.
    let (st, v) = call(
        &a,
        Method::PATCH,
        "/v1/admin/users/alice",
        Some(ADMIN),
        Some(json!({"quota_bytes": null})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let url = "/v1/spaces/alice/files/one.bin?conflict=fail";
    let other = random_bytes(4096, 68);
    let (st, v) = put(&b, url, Some(&alice), &[], other).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_file(&a, &alice, "one.bin", &data).await;
    assert_eq!(keys_under(&s3, &bucket, &prefix).await, stored);
}

/// A completing append's commit goes on under the append's lease and
/// records its last range with its intent. When that commit is refused
/// (`fail`, and another node put a file at the path meanwhile), the range
/// is recorded all the same and the lease ends with the answer: another
/// node sees every byte at once, and commits the upload once the path is
/// free again.
#[tokio::test]
async fn a_completing_append_whose_commit_is_refused_keeps_its_bytes_and_frees_the_upload() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let data = random_bytes(48 * 1024 + 5, 47);
    let name = base64_of(b"taken.bin");
    let fail = base64_of(b"fail");
    let metadata = format!("filename {name},conflict {fail}");
    let id = create_tus_with(&a, &alice, data.len() as u64, Some(&metadata)).await;
    let path = format!("/tus/{id}");
    // The path is taken on the other node after the creation's check.
    let (st, v) = put(
        &b,
        "/v1/spaces/alice/files/taken.bin",
        Some(&alice),
        &[],
        b"first".to_vec(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let r = tus_patch(&a, &path, &alice, 0)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT, "{:?}", r.text().await);
    // Every byte is recorded, and nothing holds the upload: the other
    // node's resume tries the commit at once, and is refused alike.
    let v = status(&b, &alice, &id).await;
    assert_eq!(v["received_bytes"], json!(data.len()), "{v}");
    assert_eq!(v["state"], json!("open"), "{v}");
    let started = Instant::now();
    let r = tus_head(&b, &path, &alice).send().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the HEAD waited {:?}",
        started.elapsed()
    );
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // Once the path is free, a resume on the other node commits it.
    let (st, _) = call(
        &b,
        Method::DELETE,
        "/v1/spaces/alice/files/taken.bin",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let r = tus_head(&b, &path, &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_file(&a, &alice, "taken.bin", &data).await;
}

/// How many statements naming `function` the nodes' database ran
/// (`pg_stat_statements`, which the PostgreSQL of `scripts/pg-local.sh`
/// preloads).
fn statements_calling(n: &Server, function: &str) -> u64 {
    let url = n.database_url().unwrap();
    psql(url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    let sql = format!(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND query LIKE '%{function}(%'"
    );
    psql(url, &sql).parse().unwrap()
}

/// The statements of a write that claimed nothing: its own record
/// (`ferry_record_if_free`), and a commit that records it
/// (`ferry_write_commit_ready`).
fn write_statements(n: &Server) -> (u64, u64) {
    (
        statements_calling(n, "ferry_record_if_free"),
        statements_calling(n, "ferry_write_commit_ready"),
    )
}

/// A tus upload whose one PATCH carries its whole small file, on the node
/// that made it: its write is recorded by its commit's statement, with no
/// statement of its own, and every node sees the file.
#[tokio::test]
async fn a_tus_upload_in_one_patch_records_its_write_in_its_commits_statement() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let data = random_bytes(4096, 71);
    let id = create_tus(&a, &alice, data.len() as u64).await;
    let before = write_statements(&a);
    let r = tus_patch(&a, &format!("/tus/{id}"), &alice, 0)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
    assert_eq!(r.headers()["upload-offset"], "4096");
    let (own, with_commit) = write_statements(&a);
    assert_eq!(own - before.0, 0, "the write had a statement of its own");
    assert_eq!(with_commit - before.1, 1);
    let r = tus_head(&b, &format!("/tus/{id}"), &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["upload-offset"], "4096");
    let v = status(&b, &alice, &id).await;
    assert_eq!(v["state"], json!("committed"), "{v}");
    assert_eq!(v["file"]["sha256"], json!(sha256_hex(&data)), "{v}");
    let name = tus_file_name(&b, &alice).await;
    assert_file(&b, &alice, &name, &data).await;
}

/// When that commit cannot record (its path is taken), the write is
/// recorded on its own and committed the usual way, under the session's
/// conflict policy: nothing is lost, and the client is answered once.
#[tokio::test]
async fn a_tus_patch_whose_commit_finds_its_path_taken_is_recorded_then_committed_the_usual_way() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let (st, v) = put(
        &b,
        "/v1/spaces/alice/files/same.bin",
        Some(&alice),
        &[],
        b"first".to_vec(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let data = random_bytes(4096, 72);
    let name = base64_of(b"same.bin");
    let rename = base64_of(b"rename");
    let metadata = format!("filename {name},conflict {rename}");
    let id = create_tus_with(&a, &alice, data.len() as u64, Some(&metadata)).await;
    let before = write_statements(&a);
    let r = tus_patch(&a, &format!("/tus/{id}"), &alice, 0)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
    assert_eq!(r.headers()["upload-offset"], "4096");
    let (own, with_commit) = write_statements(&a);
    assert_eq!((own - before.0, with_commit - before.1), (1, 1));
    let v = status(&b, &alice, &id).await;
    assert_eq!(v["state"], json!("committed"), "{v}");
    assert_eq!(v["file"]["sha256"], json!(sha256_hex(&data)), "{v}");
    let renamed = v["file"]["path"].as_str().unwrap().to_owned();
    assert_ne!(renamed, "same.bin", "{v}");
    assert_file(&a, &alice, &renamed, &data).await;
    assert_file(&a, &alice, "same.bin", b"first").await;
}

/// A tus `HEAD` on the node whose `PATCH` is committing the whole file
/// in its write's statement (held up here by the file's path lock, taken
/// in that statement): the HEAD waits for the commit, then both answer,
/// the file complete.
#[tokio::test]
async fn a_tus_head_during_the_commit_of_a_patch_that_claimed_nothing_waits_for_it() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let data = random_bytes(4096, 73);
    let metadata = format!("filename {}", base64_of(b"held.bin"));
    let id = create_tus_with(&a, &alice, data.len() as u64, Some(&metadata)).await;
    let path = format!("/tus/{id}");
    let url = a.database_url().unwrap().to_owned();
    let lock = "hashtextextended('alice:held.bin', 0)";
    let held = AdvisoryLockHeld::take(&url, lock);
    let patch = tokio::spawn(tus_patch(&a, &path, &alice, 0).body(data.clone()).send());
    let waiting = Instant::now();
    while psql(
        &url,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    ) == "0"
    {
        assert!(
            waiting.elapsed() < Duration::from_secs(5),
            "the commit never waited for the path"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let head = tokio::spawn(tus_head(&a, &path, &alice).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!head.is_finished(), "the HEAD answered mid-commit");
    drop(held);
    let answered = |r: tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>| async {
        tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .expect("no answer in 10 s")
            .unwrap()
            .unwrap()
    };
    let r = answered(patch).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
    let r = answered(head).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["upload-offset"], "4096");
    assert_file(&b, &alice, "held.bin", &data).await;
}

/// A `psql` session of its own holding the advisory lock `key` (an SQL
/// expression) until dropped.
struct AdvisoryLockHeld(std::process::Child);

impl AdvisoryLockHeld {
    fn take(url: &str, key: &str) -> AdvisoryLockHeld {
        AdvisoryLockHeld::run(url, &format!("SELECT 'held' FROM pg_advisory_lock({key});"))
    }

    /// The lock on upload `id`'s row that an update waits for, held in
    /// a transaction until dropped.
    fn upload_row(url: &str, id: &str) -> AdvisoryLockHeld {
        AdvisoryLockHeld::run(
            url,
            &format!("BEGIN; SELECT 'held' FROM uploads WHERE id = '{id}' FOR UPDATE;"),
        )
    }

    /// Runs `sql`, which answers one line `held` once it holds what it
    /// takes, in a session kept until dropped.
    fn run(url: &str, sql: &str) -> AdvisoryLockHeld {
        use std::io::{BufRead, Write};
        let mut psql = std::process::Command::new("psql")
            .args([url, "-qAt", "-v", "ON_ERROR_STOP=1"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("psql runs");
        psql.stdin
            .as_mut()
            .unwrap()
            .write_all(format!("{sql}\n").as_bytes())
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(psql.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "held");
        AdvisoryLockHeld(psql)
    }
}

impl Drop for AdvisoryLockHeld {
    /// Ends the session (and its lock) and waits for it.
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// What `ferry_commit_rehash_bytes_total` says on `n`: the bytes its
/// commits read back from the store to hash them.
async fn rehashed(n: &Server) -> u64 {
    let text = metrics(n).await;
    text.lines()
        .find_map(|l| l.strip_prefix("ferry_commit_rehash_bytes_total "))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

/// In a cluster, a file whose bytes one node took from first to last
/// while it held the upload until the commit (a one-request `PUT`, a tus
/// `PATCH` of the whole file) is hashed as it arrives: the commit reads
/// nothing back from S3. A file written over several requests is read
/// back once (another node may have rewritten bytes between them).
#[tokio::test]
async fn a_file_one_node_held_from_first_byte_to_commit_is_not_read_back() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let data = random_bytes(40_000, 53);
    let (st, v) = put(
        &a,
        "/v1/spaces/alice/files/put.bin",
        Some(&alice),
        &[],
        data.clone(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["sha256"], json!(sha256_hex(&data)), "{v}");
    let id = create_tus(&b, &alice, data.len() as u64).await;
    let r = tus_patch(&a, &format!("/tus/{id}"), &alice, 0)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(rehashed(&a).await, 0, "nothing read back");
    let v = status(&b, &alice, &id).await;
    assert_eq!(v["file"]["sha256"], json!(sha256_hex(&data)), "{v}");

    // Two PATCHes: the commit reads the file back to hash it.
    let id = create_tus(&b, &alice, data.len() as u64).await;
    let path = format!("/tus/{id}");
    for (from, to) in [(0, 10_000), (10_000, data.len())] {
        let r = tus_patch(&a, &path, &alice, from)
            .body(data[from..to].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(rehashed(&a).await, data.len() as u64);
    let v = status(&b, &alice, &id).await;
    assert_eq!(v["file"]["sha256"], json!(sha256_hex(&data)), "{v}");
}

/// A native session of one upload made from `body`: (session, upload).
async fn one_upload(n: &Server, token: &str, body: serde_json::Value) -> (String, String) {
    let v = create_session(n, token, body).await;
    let id = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
    (id(&v["id"]), id(&v["uploads"][0]["id"]))
}

/// A session's commit that expects `sha256` for `up`.
async fn commit_expecting(
    n: &Server,
    token: &str,
    sid: &str,
    up: &str,
    sha256: &str,
) -> (StatusCode, serde_json::Value) {
    let body = json!({"uploads": {up: {"sha256": sha256}}});
    let path = format!("/v1/sessions/{sid}/commit");
    call(n, Method::POST, &path, Some(token), Some(body)).await
}

/// A small file stored whole by one request (a native part of the whole
/// file) is its final object: the digests hashed as it came are recorded
/// with it, and a commit on another node takes them and reads nothing
/// back. The object never changes (a resend of other bytes is refused),
/// and an expected SHA-256 given at commit is checked against the
/// recorded digest (a wrong one is refused with both values).
#[tokio::test]
async fn a_small_file_stored_whole_commits_on_another_node_without_being_read_back() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let data = random_bytes(40_000, 61);
    let (sid, up) = one_upload(&a, &alice, json!({"path": "whole.bin", "size": data.len()})).await;
    let (st, v) = part(&b, &alice, &up, 1, &data).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let mut other = data.clone();
    other[7] ^= 1;
    let (st, v) = part(&a, &alice, &up, 1, &other).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (st, v) = commit_expecting(&a, &alice, &sid, &up, &sha256_hex(&data)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        rehashed(&a).await + rehashed(&b).await,
        0,
        "nothing read back"
    );
    assert_file(&b, &alice, "whole.bin", &data).await;

    let (sid, up) = one_upload(&a, &alice, json!({"path": "wrong.bin", "size": data.len()})).await;
    let (st, v) = part(&a, &alice, &up, 1, &data).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let wrong = sha256_hex(&other);
    let (st, v) = commit_expecting(&b, &alice, &sid, &up, &wrong).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["expected"], json!(wrong), "{v}");
    assert_eq!(v["error"]["actual"], json!(sha256_hex(&data)), "{v}");
    assert_eq!(rehashed(&b).await, 0, "nothing read back");
}

/// Parts sent all at once to the node that made the upload (whose slot
/// it keeps): each part's claim reads the upload, and a read taken before
/// another of these parts recorded itself never takes the slot back (the
/// slot is read again). Every part lands, every node sees them all, and
/// the file commits verified.
#[tokio::test]
async fn parts_sent_at_once_to_the_node_that_made_the_upload_all_land_and_commit_verified() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let part_size = 5 * 1024 * 1024;
    let data = random_bytes(4 * part_size - 300, 71);
    let body = json!({"path": "at-once.bin", "size": data.len(), "part_size": part_size});
    let (sid, up) = one_upload(&a, &alice, body).await;
    let sends = (1..=4).map(|k| {
        let bytes = &data[(k - 1) * part_size..(k * part_size).min(data.len())];
        let (a, alice, up) = (&a, &alice, &up);
        async move { (k, part(a, alice, up, k, bytes).await) }
    });
    for (k, (st, v)) in futures::future::join_all(sends).await {
        assert_eq!(st, StatusCode::OK, "part {k}: {v}");
    }
    for n in [&a, &b] {
        let v = status(n, &alice, &up).await;
        assert_eq!(v["received_bytes"], json!(data.len()), "{v}");
    }
    let commit = format!("/v1/sessions/{sid}/commit");
    let (st, v) = call(&a, Method::POST, &commit, Some(&alice), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_file(&b, &alice, "at-once.bin", &data).await;
}

/// A session's commit claims its turn and its uploads' commit leases in
/// one step. One refused (a file still missing, the first or the last, or
/// a wrong expected digest) ends them all before it answers: the part sent
/// next lands, and the commit sent next is not told that bytes are still
/// being written.
#[tokio::test]
async fn a_refused_commit_ends_its_leases_before_it_answers() {
    let Some((a, _b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    for i in 0..8u64 {
        let files = [random_bytes(3000, 70 + i), random_bytes(2000, 90 + i)];
        let body = json!({"uploads": [
            {"path": format!("r{i}/0.bin"), "size": files[0].len()},
            {"path": format!("r{i}/1.bin"), "size": files[1].len()},
        ]});
        let v = create_session(&a, &alice, body).await;
        let sid = v["id"].as_str().unwrap().to_owned();
        let up = |n: usize| v["uploads"][n]["id"].as_str().unwrap().to_owned();
        // Even rounds miss the last file, odd ones the first.
        let (sent, missing) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
        let (st, v) = part(&a, &alice, &up(sent), 1, &files[sent]).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let commit_path = format!("/v1/sessions/{sid}/commit");
        let (st, v) = call(&a, Method::POST, &commit_path, Some(&alice), None).await;
        assert_eq!(
            st,
            StatusCode::CONFLICT,
            "round {i}: a file is missing: {v}"
        );
        assert!(!v.to_string().contains("being written"), "round {i}: {v}");
        let (st, v) = part(&a, &alice, &up(missing), 1, &files[missing]).await;
        assert_eq!(
            st,
            StatusCode::OK,
            "round {i}: the part after a refused commit: {v}"
        );
        let wrong = sha256_hex(b"other");
        let (st, v) = commit_expecting(&a, &alice, &sid, &up(missing), &wrong).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "round {i}: {v}");
        let (st, v) = call(&a, Method::POST, &commit_path, Some(&alice), None).await;
        assert_eq!(
            st,
            StatusCode::OK,
            "round {i}: the commit after a refused one: {v}"
        );
        for (n, data) in files.iter().enumerate() {
            assert_file(&a, &alice, &format!("r{i}/{n}.bin"), data).await;
        }
    }
}

/// `--database-pool 1`: a node with one connection for its statements
/// serves uploads of every way at once, each to the end. No step holds
/// its connection while it waits for another (which would wait out the
/// pool's timeout, then fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_one_database_connection_serves_every_way_at_once() {
    let Some(n) = nodes_with(1, &[("FERRY_DATABASE_POOL", "1")]) else {
        return;
    };
    let (a, alice) = (&n[0], &user(&n[0], "alice").await);
    let started = Instant::now();
    let uploads = (0..8u64).map(|i| async move {
        let data = random_bytes(5000, 200 + i);
        // create + part + commit
        let (sid, up) = one_upload(
            a,
            alice,
            json!({"path": format!("three/{i}"), "size": data.len()}),
        )
        .await;
        let (st, v) = part(a, alice, &up, 1, &data).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let commit = format!("/v1/sessions/{sid}/commit");
        let (st, v) = call(a, Method::POST, &commit, Some(alice), None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        // PUT
        let (st, v) = put(
            a,
            &format!("/v1/spaces/alice/files/put/{i}"),
            Some(alice),
            &[],
            data.clone(),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        // tus POST + PATCH
        let name = base64_of(format!("tus/{i}").as_bytes());
        let r = http()
            .post(a.url_of("/tus/"))
            .bearer_auth(alice)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", data.len().to_string())
            .header("Upload-Metadata", format!("filename {name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let at = r.headers()["location"].to_str().unwrap();
        let path = at.split_once("://").map_or(at, |(_, rest)| rest);
        let path = &path[path.find('/').unwrap()..];
        let r = tus_patch(a, path, alice, 0)
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        data
    });
    let sent = futures::future::join_all(uploads).await;
    for (i, data) in sent.iter().enumerate() {
        for path in [format!("three/{i}"), format!("put/{i}"), format!("tus/{i}")] {
            assert_file(a, alice, &path, data).await;
        }
    }
    // Far inside the pool's timeout: nothing waited for a connection a
    // step of its own held.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

/// A session's commit on the node whose write stored its small file
/// whole claims nothing: its one step checks that the records still say
/// what the node knows. When they do not, it commits the usual way, which
/// answers from the records: a write in flight on another node makes it
/// wait (409), an abort there makes it `Gone`.
#[tokio::test]
async fn a_commit_from_what_its_node_knows_answers_from_the_records_when_they_changed() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let data = random_bytes(40_000, 81);
    let commit = |sid: &str| format!("/v1/sessions/{sid}/commit");

    // A resend of the part in flight on node b.
    let (sid, up) = one_upload(
        &a,
        &alice,
        json!({"path": "k/held.bin", "size": data.len()}),
    )
    .await;
    let (st, v) = part(&a, &alice, &up, 1, &data).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (tx, body) = held_body();
    let held = tokio::spawn(
        http()
            .put(b.url_of(&format!("/v1/uploads/{up}/parts/1")))
            .bearer_auth(&alice)
            .body(body)
            .send(),
    );
    tx.send(Ok(data[..1000].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (st, v) = call(&a, Method::POST, &commit(&sid), Some(&alice), None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    tx.send(Ok(data[1000..].to_vec())).await.unwrap();
    drop(tx);
    let r = held.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    let (st, v) = call(&a, Method::POST, &commit(&sid), Some(&alice), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_file(&b, &alice, "k/held.bin", &data).await;

    // Aborted on node b.
    let (sid, up) = one_upload(
        &a,
        &alice,
        json!({"path": "k/gone.bin", "size": data.len()}),
    )
    .await;
    let (st, v) = part(&a, &alice, &up, 1, &data).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = call(
        &b,
        Method::DELETE,
        &format!("/v1/sessions/{sid}"),
        Some(&alice),
        None,
    )
    .await;
    assert!(st.is_success(), "{st} {v}");
    let (st, v) = call(&a, Method::POST, &commit(&sid), Some(&alice), None).await;
    assert_eq!(st, StatusCode::GONE, "{v}");
    let (st, _) = download(&a, &alice, "alice", "k/gone.bin").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// A `psql` session of its own holding the advisory lock a claim of
/// `key` takes (`ferry_claim`'s, "Leas" and the key's hash) until dropped.
struct ClaimLockHeld;

impl ClaimLockHeld {
    fn take(url: &str, key: &str) -> AdvisoryLockHeld {
        AdvisoryLockHeld::take(url, &format!("1281712499, hashtext('{key}')"))
    }
}

#[tokio::test]
async fn a_write_whose_client_left_while_its_claim_waited_leaves_no_lease() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let (sid, up, data) = three_parts(&a, &alice, 33).await;
    let url = a.database_url().unwrap().to_owned();
    // The part's claim waits behind this lock, in PostgreSQL...
    let held = ClaimLockHeld::take(&url, &up);
    // ... while its client gives up: the HTTP/2 stream is reset, and
    // node a drops the request.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let sent = tokio::spawn(
        h2.put(a.url_of(&format!("/v1/uploads/{up}/parts/1")))
            .bearer_auth(&alice)
            .body(nth_part(&data, 1).to_vec())
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !sent.is_finished(),
        "the part was answered: {:?}",
        sent.await
    );
    sent.abort();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The claim then runs to its end in PostgreSQL; what it leased is
    // released, not kept by a request that is gone: the part goes
    // through on another node at once, not refused as being written.
    drop(held);
    let t = Instant::now();
    loop {
        let (st, v) = part(&b, &alice, &up, 1, nth_part(&data, 1)).await;
        if st == StatusCode::OK {
            break;
        }
        assert_eq!(st, StatusCode::CONFLICT, "{v}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "part 1 still refused after 3 s: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in [2, 3] {
        let (st, v) = part(&b, &alice, &up, n, nth_part(&data, n as usize)).await;
        assert_eq!(st, StatusCode::OK, "part {n}: {v}");
    }
    let commit = format!("/v1/sessions/{sid}/commit");
    let (st, v) = call(&a, Method::POST, &commit, Some(&alice), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_file(&b, &alice, "p.bin", &data).await;
}

#[tokio::test]
async fn a_small_part_sent_without_a_claim_gives_way_to_the_same_part_recorded_on_another_node() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let (first, second) = (random_bytes(4096, 41), random_bytes(4096, 42));
    let v = create_session(&a, &alice, json!({"path": "one.bin", "size": 4096})).await;
    let sid = v["id"].as_str().unwrap().to_owned();
    let up = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    // Node a made the upload: its part claims nothing, and holds nothing
    // while its body comes.
    let (tx, body) = held_body();
    let held = tokio::spawn(
        http()
            .put(a.url_of(&format!("/v1/uploads/{up}/parts/1")))
            .bearer_auth(&alice)
            .body(body)
            .send(),
    );
    tx.send(Ok(first[..1000].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Meanwhile the same part, other bytes, on node b: stored and recorded.
    let (st, v) = part(&b, &alice, &up, 1, &second).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // Node a's part then ends: the object is node b's, and a's bytes are
    // not the part recorded, so they are refused, and nothing changes.
    tx.send(Ok(first[1000..].to_vec())).await.unwrap();
    drop(tx);
    let r = held.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT, "{:?}", r.text().await);
    // The same bytes again are the part already recorded.
    let (st, v) = part(&a, &alice, &up, 1, &second).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let commit = format!("/v1/sessions/{sid}/commit");
    let (st, v) = call(&a, Method::POST, &commit, Some(&alice), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["uploads"][0]["file"]["sha256"],
        json!(sha256_hex(&second)),
        "{v}"
    );
    assert_file(&a, &alice, "one.bin", &second).await;
    assert_file(&b, &alice, "one.bin", &second).await;
}

#[tokio::test]
async fn a_small_part_on_the_node_that_made_it_goes_the_usual_way_past_a_dead_nodes_claim() {
    let Some((a, mut b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let (stale, data) = (random_bytes(4096, 43), random_bytes(4096, 44));
    let v = create_session(&a, &alice, json!({"path": "two.bin", "size": 4096})).await;
    let sid = v["id"].as_str().unwrap().to_owned();
    let up = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    // Node b's part holds a lease (it did not make the upload), its
    // bytes stop short, and the node is killed: its lease stays, a dead
    // node's.
    let (tx, body) = held_body();
    let held = tokio::spawn(
        http()
            .put(b.url_of(&format!("/v1/uploads/{up}/parts/1")))
            .bearer_auth(&alice)
            .body(body)
            .send(),
    );
    tx.send(Ok(stale[..4000].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.kill9();
    let _ = held.await;
    // Node a's part: the upload was claimed (by the dead node's write), so
    // its record is refused; it goes the usual way, whose claim takes the
    // dead node's lease over, and its bytes are the part and the file.
    let (st, v) = part(&a, &alice, &up, 1, &data).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let commit = format!("/v1/sessions/{sid}/commit");
    let (st, v) = call(&a, Method::POST, &commit, Some(&alice), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["uploads"][0]["file"]["sha256"],
        json!(sha256_hex(&data)),
        "{v}"
    );
    assert_file(&a, &alice, "two.bin", &data).await;
}

/// The objects in the bucket that hold bytes of upload `up` on node `n`:
/// the one named by its id, and any a write gave a name of its own
/// (`<id>.<suffix>`).
async fn objects_of(n: &Server, up: &str) -> Vec<String> {
    let s3 = s3_client(&std::env::var("FERRY_S3_ENDPOINT").unwrap()).await;
    let prefix = n.setting("FERRY_S3_PREFIX").unwrap();
    let base = format!("{prefix}objects/{up}");
    keys_under(&s3, &std::env::var("FERRY_S3_BUCKET").unwrap(), &base)
        .await
        .into_iter()
        .filter(|k| holds_upload(k, &base))
        .map(|k| k[prefix.len() + "objects/".len()..].to_owned())
        .collect()
}

/// A small part that claims nothing (sent to the node that made its
/// upload) is stored under a name of its own, with no conditional write,
/// and its record gives the upload that name: every node compares a
/// resend with that object, commits it as the file without a copy, and an
/// abort of another such upload deletes its object.
#[tokio::test]
async fn a_part_that_claimed_nothing_is_stored_under_its_own_name_which_every_node_uses() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let data = random_bytes(4096, 81);
    let (sid, up) = one_upload(&a, &alice, json!({"path": "named.bin", "size": 4096})).await;
    let before = write_statements(&a);
    let (st, v) = part(&a, &alice, &up, 1, &data).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(write_statements(&a).0 - before.0, 1, "it claimed");
    let objects = objects_of(&a, &up).await;
    let [named] = objects.as_slice() else {
        panic!("not one object: {objects:?}");
    };
    assert!(named.starts_with(&format!("{up}.")), "{named}");
    // Node b never saw the write: it takes the name from the records.
    let mut other = data.clone();
    other[9] ^= 1;
    let (st, v) = part(&b, &alice, &up, 1, &other).await;
    assert_eq!(st, StatusCode::CONFLICT, "other bytes: {v}");
    let (st, v) = part(&b, &alice, &up, 1, &data).await;
    assert_eq!(st, StatusCode::OK, "the same bytes again: {v}");
    // The same bytes with a digest they do not have: refused, and the
    // part stays as it was (the object is only ever compared with).
    let wrong = format!("sha-256=:{}:", base64_of(&[0u8; 32]));
    let (st, v) = put(
        &b,
        &format!("/v1/uploads/{up}/parts/1"),
        Some(&alice),
        &[("content-digest", wrong.as_str())],
        data.clone(),
    )
    .await;
    assert!(st.is_client_error(), "a wrong digest: {st} {v}");
    let (st, v) = commit_expecting(&b, &alice, &sid, &up, &sha256_hex(&data)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_file(&b, &alice, "named.bin", &data).await;
    assert_file(&a, &alice, "named.bin", &data).await;
    assert_eq!(
        objects_of(&a, &up).await,
        objects,
        "the file is not the object the write stored"
    );

    // Aborted on the other node: its object goes with it.
    let (_, up) = one_upload(&a, &alice, json!({"path": "gone.bin", "size": 4096})).await;
    let (st, v) = part(&a, &alice, &up, 1, &data).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(objects_of(&a, &up).await.len(), 1);
    let (st, v) = call(
        &b,
        Method::DELETE,
        &format!("/v1/uploads/{up}"),
        Some(&alice),
        None,
    )
    .await;
    assert!(st.is_success(), "{st} {v}");
    let left = objects_of(&a, &up).await;
    assert!(
        left.is_empty(),
        "an aborted upload's object stayed: {left:?}"
    );
}

#[tokio::test]
async fn a_small_part_whose_record_was_refused_leaves_no_object_nobody_recorded() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let (first, second) = (random_bytes(4096, 45), random_bytes(4096, 46));
    let v = create_session(&a, &alice, json!({"path": "three.bin", "size": 4096})).await;
    let sid = v["id"].as_str().unwrap().to_owned();
    let up = v["uploads"][0]["id"].as_str().unwrap().to_owned();
    let url = a.database_url().unwrap().to_owned();
    // A claim of the upload is under way (its lock is taken): node a's
    // part, which claims nothing, stores its object, but its record is
    // refused, and the claim that removes what nobody recorded waits...
    let held = ClaimLockHeld::take(&url, &up);
    let before = write_statements(&a);
    let sent = tokio::spawn(
        http()
            .put(a.url_of(&format!("/v1/uploads/{up}/parts/1")))
            .bearer_auth(&alice)
            .body(first.clone())
            .timeout(Duration::from_secs(2))
            .send(),
    );
    // (A record is tried only for an object stored.)
    let stored = Instant::now();
    while write_statements(&a).0 == before.0 {
        assert!(
            stored.elapsed() < Duration::from_secs(2),
            "its record was never tried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... while its client gives up (the usual way's claim waits).
    assert!(sent.await.unwrap().is_err(), "the part was answered");
    drop(held);
    // The object went with the refusal: no write of the upload is
    // recorded, and later writes must not be compared with it nor seal it
    // as the file.
    let left = objects_of(&a, &up).await;
    assert!(left.is_empty(), "objects nobody recorded stayed: {left:?}");
    // Other bytes are then the part, on any node, and the file (once the
    // lease under which the object went is released, a moment later).
    let sent = Instant::now();
    loop {
        let (st, v) = part(&b, &alice, &up, 1, &second).await;
        if st == StatusCode::CONFLICT && sent.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(st, StatusCode::OK, "{v}");
        break;
    }
    let commit = format!("/v1/sessions/{sid}/commit");
    let (st, v) = call(&a, Method::POST, &commit, Some(&alice), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["uploads"][0]["file"]["sha256"],
        json!(sha256_hex(&second)),
        "{v}"
    );
    assert_file(&a, &alice, "three.bin", &second).await;
}

#[tokio::test]
async fn a_tus_patch_that_claimed_nothing_gives_way_to_a_claim_of_its_upload_made_meanwhile() {
    let Some((a, b)) = two_nodes() else {
        return;
    };
    let alice = user(&a, "alice").await;
    let data = random_bytes(4096, 47);
    let id = create_tus(&a, &alice, data.len() as u64).await;
    let path = format!("/tus/{id}");
    let url = a.database_url().unwrap().to_owned();
    // A claim of the upload is under way (its lock is taken, as a newer
    // request's claim would): node a's PATCH, which claims nothing,
    // stores its object, but neither its commit nor, then, its own record
    // records it...
    let held = ClaimLockHeld::take(&url, &id);
    let before = write_statements(&a);
    let sent = tokio::spawn(tus_patch(&a, &path, &alice, 0).body(data.clone()).send());
    let stored = Instant::now();
    while write_statements(&a).0 == before.0 {
        assert!(
            stored.elapsed() < Duration::from_secs(5),
            "its record was never tried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        write_statements(&a).1 - before.1,
        1,
        "its commit was not tried first"
    );
    // (Both are tried only for an object stored.)
    drop(held);
    // ... and gives way, as a PATCH holding the upload's lease would have
    // been stopped: 409, its object gone, nothing received.
    let r = sent.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT, "{:?}", r.text().await);
    let left = objects_of(&a, &id).await;
    assert!(left.is_empty(), "its object stayed: {left:?}");
    let r = tus_head(&b, &path, &alice).send().await.unwrap();
    assert_eq!(r.headers()["upload-offset"], "0");
    // The client asks, and sends it again: it lands.
    let r = tus_patch(&a, &path, &alice, 0)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
    assert_eq!(r.headers()["upload-offset"], "4096");
}

/// What `ferry_lease_busy_total` says on node `n` for claims of `kind`
/// that found the lease held and ended as `outcome`.
async fn lease_busy(n: &Server, kind: &str, outcome: &str) -> u64 {
    let text = metrics(n).await;
    let (kind, outcome) = (format!("kind=\"{kind}\""), format!("outcome=\"{outcome}\""));
    text.lines()
        .filter(|l| l.starts_with("ferry_lease_busy_total{"))
        .find(|l| l.contains(&kind) && l.contains(&outcome))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Whether node `n` says it runs the background work
/// (`ferry_cluster_background`).
async fn runs_background(n: &Server) -> bool {
    let text = metrics(n).await;
    text.lines()
        .find_map(|l| l.strip_prefix("ferry_cluster_background "))
        .is_some_and(|v| v.trim() == "1")
}

/// How many of `nodes` say they run the background work.
async fn running_background(nodes: &[Server]) -> usize {
    let mut n = 0;
    for node in nodes {
        n += usize::from(runs_background(node).await);
    }
    n
}

/// Expiry, the orphan sweep and recovery run on one node at a time, and
/// still do after the database ended the connection that held that turn
/// (as a restart does): the node that held it stops, and one node takes
/// the work on — never two at once.
#[tokio::test]
async fn the_background_work_stays_on_one_node_after_the_database_ended_its_hold() {
    let Some(nodes) = nodes_with(2, &[("FERRY_REAP_INTERVAL", "1")]) else {
        return;
    };
    let t = Instant::now();
    while running_background(&nodes).await != 1 {
        assert!(t.elapsed() < Duration::from_secs(5), "no node runs it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every connection holding a node-wide lock ends.
    nodes[0].exec_sql(
        "SELECT pg_terminate_backend(k.pid) FROM pg_locks k
         WHERE k.locktype = 'advisory' AND k.classid = 1332636793::oid AND k.granted
           AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        &[],
    );
    // For the next 10 s (the holder sees its hold end within about two
    // seconds; a node taking it over waits 5 s before it starts): never
    // two, and one again by the end.
    let t = Instant::now();
    let mut last = 0;
    while t.elapsed() < Duration::from_secs(10) {
        last = running_background(&nodes).await;
        assert!(last <= 1, "{last} nodes run the background work");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(last, 1, "no node took the background work on again");
}
