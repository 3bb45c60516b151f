//! Limits, recovery and state consistency through a real server (issue 11,
//! sections A and D).

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn uid(session: &Value) -> String {
    session["uploads"][0]["id"].as_str().unwrap().to_owned()
}

fn sid(session: &Value) -> String {
    session["id"].as_str().unwrap().to_owned()
}

/// One native upload of `data` to `path`, committed; the commit's answer.
async fn native_upload(
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
    assert_eq!(part(s, tok, &uid(&sess), 1, data).await.0, StatusCode::OK);
    let commit = format!("/v1/sessions/{}/commit", sid(&sess));
    call(s, Method::POST, &commit, Some(tok), None).await
}

#[tokio::test]
async fn a_255_byte_name_renamed_on_conflict_fits_the_name_limit() {
    let mut s = Server::start();
    let tok = user(&s, "lena").await;
    let stem = "s".repeat(251);
    let name = format!("{stem}.txt");
    assert_eq!(name.len(), 255);
    let path = format!("docs/{name}");
    let (st, v) = native_upload(&s, &tok, &path, "fail", b"one").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = native_upload(&s, &tok, &path, "rename", b"two").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let renamed = v["uploads"][0]["file"]["path"].as_str().unwrap().to_owned();
    let renamed_name = renamed.strip_prefix("docs/").unwrap();
    assert_eq!(renamed_name.len(), 255, "{renamed}");
    assert_eq!(renamed_name, format!("{} (1).txt", &stem[..247]));
    assert_eq!(download(&s, &tok, "lena", &renamed).await.1, b"two");
    assert_eq!(download(&s, &tok, "lena", &path).await.1, b"one");

    // Graph's rename lands at exactly the limit too.
    let url = format!("/v1.0/me/drive/root:/docs/{name}:/createUploadSession");
    let r = http()
        .post(s.url_of(&url))
        .bearer_auth(&tok)
        .json(&json!({"item": {"@microsoft.graph.conflictBehavior": "rename"}}))
        .send()
        .await
        .unwrap();
    let (st, v) = decode(r).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let upload_url = v["uploadUrl"].as_str().unwrap();
    let r = http()
        .put(upload_url)
        .header("Content-Range", "bytes 0-4/5")
        .body(&b"three"[..])
        .send()
        .await
        .unwrap();
    let (st, item) = decode(r).await;
    assert_eq!(st, StatusCode::CREATED, "{item}");
    assert_eq!(item["name"], format!("{} (2).txt", &stem[..247]));

    // The metadata stays readable: the server starts again and serves both.
    s.restart();
    assert_eq!(download(&s, &tok, "lena", &renamed).await.1, b"two");
}

#[tokio::test]
async fn a_path_over_the_limit_is_refused_at_creation_naming_the_limit() {
    let s = Server::start();
    let tok = user(&s, "pia").await;
    // 4,090 bytes in 41 folders: once accepted, then a 500 at commit.
    let long = format!("{}/", "d".repeat(99)).repeat(40) + &"f".repeat(90);
    assert_eq!(long.len(), 4090);
    let (st, v) = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&tok),
        Some(json!({"path": long, "size": 1})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "invalid_path", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit is 1024"),
        "{v}"
    );
    // A 256-byte name names its own limit.
    let (st, v) = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&tok),
        Some(json!({"path": "n".repeat(256), "size": 1})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit is 255"),
        "{v}"
    );
    // Exactly at the limit: accepted, committed, downloadable.
    let at = format!("{}/", "d".repeat(99)).repeat(10) + &"f".repeat(24);
    assert_eq!(at.len(), 1024);
    let (st, v) = native_upload(&s, &tok, &at, "fail", b"x").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(download(&s, &tok, "pia", &at).await.1, b"x");

    // tus names the limit in its own (text/plain) format.
    let meta = format!("filename {}", b64(&"n".repeat(256)));
    let r = http()
        .post(s.url_of("/tus/"))
        .bearer_auth(&tok)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "1")
        .header("Upload-Metadata", meta)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let text = r.text().await.unwrap();
    assert!(text.contains("limit is 255"), "{text}");
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Edits the stopped server's metadata the way a crash or an older
/// version could have left it.
fn plant(s: &Server, sql: &str, args: &[&str]) {
    s.exec_sql(sql, args);
}

async fn session_json(s: &Server, tok: &str, id: &str) -> Value {
    let (st, v) = call(
        s,
        Method::GET,
        &format!("/v1/sessions/{id}"),
        Some(tok),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

#[tokio::test]
async fn unrecoverable_stored_state_is_marked_failed_and_the_server_starts() {
    let mut s = Server::start();
    let tok = user(&s, "rita").await;
    let mut ids = Vec::new();
    for name in ["gone.bin", "bad.bin", "fine.bin"] {
        let sess = create_session(&s, &tok, json!({"path": name, "size": 3})).await;
        assert_eq!(
            part(&s, &tok, &uid(&sess), 1, b"abc").await.0,
            StatusCode::OK
        );
        ids.push((sid(&sess), uid(&sess)));
    }
    s.kill9();
    // A commit whose bytes are neither staged nor at their final path.
    plant(
        &s,
        "UPDATE uploads SET state = 'committing', final_path = 'gone.bin' WHERE id = ?1",
        &[&ids[0].1],
    );
    std::fs::remove_file(s.data.join("staging").join(&ids[0].1)).unwrap();
    // A commit whose final path does not read back (it escapes its space).
    plant(
        &s,
        "UPDATE uploads SET state = 'committing', final_path = '../x' WHERE id = ?1",
        &[&ids[1].1],
    );
    s.restart();

    let gone = session_json(&s, &tok, &ids[0].0).await;
    assert_eq!(gone["state"], "failed", "{gone}");
    assert!(
        gone["failure"].as_str().unwrap().contains("missing"),
        "{gone}"
    );
    let bad = session_json(&s, &tok, &ids[1].0).await;
    assert_eq!(bad["state"], "failed", "{bad}");
    assert!(bad["failure"].as_str().unwrap().contains("record"), "{bad}");
    // Every other session goes on.
    let commit = format!("/v1/sessions/{}/commit", ids[2].0);
    let (st, v) = call(&s, Method::POST, &commit, Some(&tok), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(download(&s, &tok, "rita", "fine.bin").await.1, b"abc");
    let metrics = metrics(&s).await;
    assert!(
        metrics.contains("ferry_recovery_failed_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_session_left_open_after_its_last_commit_is_settled_at_start() {
    let mut s = Server::start();
    let tok = user(&s, "otto").await;
    let sess = create_session(&s, &tok, json!({"path": "o.bin", "size": 1})).await;
    assert_eq!(part(&s, &tok, &uid(&sess), 1, b"o").await.0, StatusCode::OK);
    let commit = format!("/v1/uploads/{}/commit", uid(&sess));
    let (st, v) = call(&s, Method::POST, &commit, Some(&tok), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    s.kill9();
    // The state the two separate writes of earlier versions could leave.
    plant(
        &s,
        "UPDATE sessions SET state = 'open' WHERE id = ?1",
        &[&sid(&sess)],
    );
    s.restart();
    assert_eq!(
        session_json(&s, &tok, &sid(&sess)).await["state"],
        "committed"
    );
}
