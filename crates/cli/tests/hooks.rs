//! Hooks through the built binary, with a real HTTP receiver in the test:
//! notifications (signed, in order per upload, every field), a receiver
//! that is down while Ferry is SIGKILLed and restarted (nothing lost),
//! and the blocking hooks refusing or rewriting in each dialect's format.

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::*;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "hook-secret-for-tests";

type Answer = Box<dyn Fn(&Value) -> (u16, String) + Send + Sync>;

#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    answer: Arc<Mutex<Answer>>,
    url: String,
}

impl Receiver {
    /// Listens on 127.0.0.1 (`port` 0: any free port).
    async fn start(port: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let r = Receiver {
            got: Default::default(),
            answer: Arc::new(Mutex::new(Box::new(|_| (200, "{}".into())))),
            url,
        };
        let app = Router::new()
            .route("/hooks", post(take))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    fn answer(&self, f: impl Fn(&Value) -> (u16, String) + Send + Sync + 'static) {
        *self.answer.lock().unwrap() = Box::new(f);
    }

    fn events(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn of(&self, kind: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["type"] == kind)
            .collect()
    }

    /// Waits until `done` holds of the events received (10 s at most).
    async fn until(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ev = self.events();
            if done(&ev) {
                return ev;
            }
            assert!(Instant::now() < deadline, "{what}: got {ev:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn take(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let v: Value = serde_json::from_slice(&body).expect("a JSON event");
    let (status, answer) = (r.answer.lock().unwrap())(&v);
    if (200..300).contains(&status) {
        r.got.lock().unwrap().push((headers.clone(), v));
    }
    // Every event, answered or not, must be signed over its raw body.
    let sig = headers["ferry-signature"].to_str().unwrap().to_owned();
    let (t, v1) = sig.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&body);
    assert_eq!(
        v1.strip_prefix("v1=").unwrap(),
        hex::encode(mac.finalize().into_bytes())
    );
    (StatusCode::from_u16(status).unwrap(), answer)
}

fn hooked(url: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![("FERRY_HOOKS_URL", url), ("FERRY_HOOKS_SECRET", SECRET)];
    env.extend_from_slice(extra);
    Server::start_with(&env)
}

#[tokio::test]
async fn notifications_arrive_signed_in_order_per_upload_with_every_field() {
    let r = Receiver::start(0).await;
    let s = hooked(&r.url, &[("FERRY_REAP_INTERVAL", "1")]);
    let tok = user(&s, "nora").await;
    let data = random_bytes(3 * 1024 * 1024, 1);
    let sess = create_session(
        &s,
        &tok,
        json!({"path": "in/a.bin", "size": data.len(), "part_size": 1024 * 1024,
               "metadata": {"project": "apollo"}}),
    )
    .await;
    let (sid, up) = (
        sess["id"].as_str().unwrap().to_owned(),
        sess["uploads"][0]["id"].as_str().unwrap().to_owned(),
    );
    for n in 1..=3 {
        let (st, _) = part(
            &s,
            &tok,
            &up,
            n,
            &data[(n - 1) * 1024 * 1024..n * 1024 * 1024],
        )
        .await;
        assert_eq!(st, StatusCode::OK);
    }
    let (st, _) = call(
        &s,
        Method::POST,
        &format!("/v1/sessions/{sid}/commit"),
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);

    let ev = r
        .until("create, receive, finish", |ev| {
            ev.iter().any(|e| e["type"] == "post-finish")
        })
        .await;
    let all: Vec<&str> = ev
        .iter()
        .filter(|e| e["data"]["upload_id"] == up.as_str())
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    // The blocking ones are asked in the request, before their change.
    assert_eq!(all.first(), Some(&"pre-create"), "{all:?}");
    assert!(all.contains(&"pre-finish"), "{all:?}");
    let mine: Vec<&Value> = ev
        .iter()
        .filter(|e| e["data"]["upload_id"] == up.as_str())
        .filter(|e| e["type"].as_str().unwrap().starts_with("post-"))
        .collect();
    let kinds: Vec<&str> = mine.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"post-create"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"post-finish"), "{kinds:?}");
    assert!(kinds.contains(&"post-receive"), "{kinds:?}");
    let finish = mine.last().unwrap();
    assert_eq!(finish["data"]["session_id"], sid.as_str());
    assert_eq!(finish["data"]["space"], "nora");
    assert_eq!(finish["data"]["path"], "in/a.bin");
    assert_eq!(finish["data"]["size"], data.len());
    assert_eq!(finish["data"]["sha256"], sha256_hex(&data));
    assert_eq!(finish["data"]["user"], "nora");
    assert_eq!(finish["data"]["dialect"], "native");
    assert_eq!(finish["data"]["metadata"], json!({"project": "apollo"}));
    assert_eq!(finish["id"].as_str().unwrap().len(), 32);
    assert!(finish["time"].as_str().unwrap().ends_with('Z'));
    let create = mine.first().unwrap();
    assert_eq!(create["data"]["sha256"], Value::Null);
    assert_eq!(create["data"]["offset"], 0);

    // A deleted file, an aborted session, an expired one.
    let (st, _) = call(
        &s,
        Method::DELETE,
        "/v1/spaces/nora/files/in/a.bin",
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let aborted = create_session(&s, &tok, json!({"path": "gone.bin", "size": 10})).await;
    let (st, _) = call(
        &s,
        Method::DELETE,
        &format!("/v1/sessions/{}", aborted["id"].as_str().unwrap()),
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    create_session(
        &s,
        &tok,
        json!({"path": "late.bin", "size": 10, "expires_in": 1}),
    )
    .await;
    let ev = r
        .until("terminate and expire", |ev| {
            ev.iter().filter(|e| e["type"] == "post-terminate").count() == 2
                && ev.iter().any(|e| e["type"] == "post-expire")
        })
        .await;
    let terminated: Vec<&Value> = ev
        .iter()
        .filter(|e| e["type"] == "post-terminate")
        .collect();
    assert!(
        terminated.iter().any(|e| e["data"]["path"] == "in/a.bin"
            && e["data"]["sha256"] == sha256_hex(&data).as_str())
    );
    assert!(terminated.iter().any(|e| e["data"]["path"] == "gone.bin"
        && e["data"]["upload_id"] == aborted["uploads"][0]["id"]));
    let expired = r.of("post-expire");
    assert_eq!(expired[0]["data"]["path"], "late.bin");
    // Every event once (nothing was retried here), ids unique.
    let mut ids: Vec<&str> = ev.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n);
    // The outbox is empty, and /metrics says so.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = metrics(&s).await;
    assert!(metrics.contains("ferry_hooks_outbox_depth 0"), "{metrics}");
    assert!(metrics.contains("ferry_hooks_delivered_total"), "{metrics}");
}

#[tokio::test]
async fn a_receiver_down_through_a_sigkill_gets_every_event_once_it_is_up() {
    // A port nobody listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hooks");
    let mut s = hooked(
        &url,
        &[("FERRY_HOOKS_EVENTS", "post-finish,post-terminate")],
    );
    let tok = user(&s, "dora").await;
    let mut paths = Vec::new();
    for i in 0..20 {
        let path = format!("/v1/spaces/dora/files/batch/{i}.txt");
        let (st, v) = put(&s, &path, Some(&tok), &[], format!("file {i}").into_bytes()).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        paths.push(format!("batch/{i}.txt"));
    }
    // Deliveries have been failing; Ferry dies with all of them pending.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.kill9();
    s.restart();
    let r = Receiver::start(port).await;
    let ev = r
        .until("20 post-finish after the restart", |ev| {
            let mut got: Vec<&str> = ev
                .iter()
                .filter(|e| e["type"] == "post-finish")
                .map(|e| e["data"]["path"].as_str().unwrap())
                .collect();
            got.sort();
            got.dedup();
            got.len() == 20
        })
        .await;
    let finished: std::collections::HashSet<&str> = ev
        .iter()
        .filter(|e| e["type"] == "post-finish")
        .map(|e| e["data"]["path"].as_str().unwrap())
        .collect();
    for p in &paths {
        assert!(finished.contains(p.as_str()), "{p} was lost");
    }
    // Only the events asked for.
    assert!(
        ev.iter()
            .all(|e| e["type"] == "post-finish" || e["type"] == "post-terminate")
    );
    let duplicates = ev.len() - finished.len();
    eprintln!(
        "hook run: 20 events, {} received, {duplicates} duplicates, 0 lost",
        ev.len()
    );
}

#[tokio::test]
async fn blocking_hooks_refuse_or_rewrite_in_each_dialects_format() {
    let r = Receiver::start(0).await;
    r.answer(|e| {
        match (e["type"].as_str().unwrap(), e["data"]["path"].as_str().unwrap_or("")) {
        ("pre-create", p) if p.ends_with(".exe") => (
            200,
            json!({"reject": {"status": 415, "message": "no programs here"}}).to_string(),
        ),
        ("pre-create", p) if p.starts_with("drop/") => (
            200,
            json!({"change": {"path": format!("inbox/{}", &p[5..]), "metadata": {"checked": true}}})
                .to_string(),
        ),
        ("pre-finish", p) if p.contains("infected") => (
            200,
            json!({"reject": {"status": 422, "message": "malware found"}}).to_string(),
        ),
        _ => (200, String::new()),
    }
    });
    let s = hooked(&r.url, &[]);
    let tok = user(&s, "bea").await;

    // Native: refused at creation with the hook's status and message.
    let (st, v) = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&tok),
        Some(json!({"path": "a.exe", "size": 3})),
    )
    .await;
    assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    assert_eq!(v["error"]["code"], "rejected");
    assert_eq!(v["error"]["message"], "no programs here");
    // tus: the same refusal, as tus answers errors.
    let resp = http()
        .post(s.url_of("/tus/"))
        .bearer_auth(&tok)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "3")
        .header("upload-metadata", "filename Yi5leGU=")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(resp.text().await.unwrap().contains("no programs here"));

    // A rewritten destination and metadata.
    let (st, v) = put(
        &s,
        "/v1/spaces/bea/files/drop/report.txt",
        Some(&tok),
        &[],
        b"hello".to_vec(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["path"], "inbox/report.txt");
    assert_eq!(v["metadata"], json!({"checked": true}));
    let (st, _) = download(&s, &tok, "bea", "drop/report.txt").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Refused at finish: the session fails with the reason, nothing lands.
    let sess = create_session(&s, &tok, json!({"path": "infected.doc", "size": 5})).await;
    let up = sess["uploads"][0]["id"].as_str().unwrap();
    let (st, _) = part(&s, &tok, up, 1, b"virus").await;
    assert_eq!(st, StatusCode::OK);
    let sid = sess["id"].as_str().unwrap();
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/v1/sessions/{sid}/commit"),
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["message"], "malware found");
    let (_, v) = call(
        &s,
        Method::GET,
        &format!("/v1/sessions/{sid}"),
        Some(&tok),
        None,
    )
    .await;
    assert_eq!(v["state"], "failed", "{v}");
    let (st, _) = download(&s, &tok, "bea", "infected.doc").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // A hook that answers garbage or an error: refused with 503 (closed).
    r.answer(|e| match e["type"].as_str().unwrap() {
        "pre-create" => (500, "oops".into()),
        _ => (200, String::new()),
    });
    let (st, v) = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&tok),
        Some(json!({"path": "b.txt", "size": 3})),
    )
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pre-create hook"),
        "{v}"
    );
    r.answer(|e| match e["type"].as_str().unwrap() {
        "pre-create" => (200, "[not an object]".into()),
        _ => (200, String::new()),
    });
    let (st, _) = call(
        &s,
        Method::POST,
        "/v1/sessions",
        Some(&tok),
        Some(json!({"path": "b.txt", "size": 3})),
    )
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_blocking_hook_that_is_down_refuses_unless_it_fails_open() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hooks");
    let closed = hooked(&url, &[("FERRY_HOOKS_TIMEOUT", "1")]);
    let tok = user(&closed, "cy").await;
    let (st, v) = put(
        &closed,
        "/v1/spaces/cy/files/x.txt",
        Some(&tok),
        &[],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "unavailable");
    let open = hooked(
        &url,
        &[
            ("FERRY_HOOKS_TIMEOUT", "1"),
            ("FERRY_HOOKS_FAIL_OPEN", "true"),
        ],
    );
    let tok = user(&open, "cy").await;
    let (st, v) = put(
        &open,
        "/v1/spaces/cy/files/x.txt",
        Some(&tok),
        &[],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}

#[test]
fn bad_hook_settings_stop_the_server_with_a_clear_message() {
    for (env, says) in [
        (
            vec![("FERRY_HOOKS_URL", "ftp://example")],
            "http:// or https://",
        ),
        (
            vec![
                ("FERRY_HOOKS_URL", "http://127.0.0.1:9/h"),
                ("FERRY_HOOKS_EVENTS", "post-finish,post-party"),
            ],
            "post-party",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(ferry_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .envs(env)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
}
