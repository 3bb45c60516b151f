//! The HTTP edge: request ids and what an error may reveal, every answer
//! under a dialect's prefix in that dialect's format, early answers that
//! arrive, and connection handling under load and hostile clients.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// One request; the status, the `x-request-id` and the body text.
async fn raw(
    s: &Server,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, String, String) {
    let mut rb = http().request(method, s.url_of(path)).body(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let id = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, id, resp.text().await.unwrap())
}

#[tokio::test]
async fn an_internal_error_answers_the_request_id_and_reveals_no_path_or_os_error() {
    let s = Server::start();
    let alice = user(&s, "alice").await;
    // Storage breaks under the server: its staging directory is gone.
    std::fs::remove_dir_all(s.data.join("staging")).unwrap();
    let auth = format!("Bearer {alice}");
    let native = json!({"uploads": [{"path": "a.bin", "size": 5}]}).to_string();
    let cases: [(&str, Method, &str, Vec<(&str, &str)>, Vec<u8>); 3] = [
        (
            "native",
            Method::POST,
            "/v1/sessions",
            vec![("content-type", "application/json")],
            native.into_bytes(),
        ),
        (
            "tus",
            Method::POST,
            "/tus",
            vec![("tus-resumable", "1.0.0"), ("upload-length", "5")],
            vec![],
        ),
        (
            "draft",
            Method::POST,
            "/tus",
            vec![
                ("upload-draft-interop-version", "8"),
                ("upload-complete", "?0"),
                ("upload-length", "5"),
            ],
            vec![],
        ),
    ];
    let data = s.data.to_str().unwrap().to_owned();
    for (dialect, method, path, mut headers, body) in cases {
        headers.push(("authorization", &auth));
        let (status, id, text) = raw(&s, method, path, &headers, body).await;
        assert_eq!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{dialect}: {text}"
        );
        assert_eq!(id.len(), 16, "{dialect}: an x-request-id header");
        assert!(text.contains(&id), "{dialect}: the body names {id}: {text}");
        for leak in [data.as_str(), "staging", "os error", "No such file"] {
            assert!(!text.contains(leak), "{dialect} reveals {leak:?}: {text}");
        }
    }
    // The body is still in the dialect's format.
    let (_, _, text) = raw(
        &s,
        Method::POST,
        "/v1/sessions",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        json!({"uploads": [{"path": "b.bin", "size": 5}]})
            .to_string()
            .into_bytes(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "internal", "{v}");
}
