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
