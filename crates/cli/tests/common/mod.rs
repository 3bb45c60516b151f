//! A real `ferry serve` process on 127.0.0.1 for black-box tests, and small
//! helpers to talk to it.

#![allow(dead_code)]

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ADMIN: &str = "test-admin-token-0123456789";

pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// A server process; killed when dropped.
pub struct Server {
    pub url: String,
    pub data: PathBuf,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
    extra: Vec<(String, String)>,
    /// Its own PostgreSQL database, when the suite runs on PostgreSQL.
    database: Option<TestDatabase>,
}

/// A database of its own for one test server, when
/// `FERRY_TEST_DATABASE_URL` names a PostgreSQL server (the CI stage that
/// runs the black-box suites on PostgreSQL sets it): created with `psql`
/// on first start, kept across restarts, dropped with the server.
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    fn create() -> Option<TestDatabase> {
        let admin_url = std::env::var("FERRY_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())?;
        let name = format!("ferry_t_{}", hex::encode(rand::random::<[u8; 6]>()));
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Some(TestDatabase {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([&self.admin_url, "-qc"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// Runs `sql` with `psql` on `url`; what it printed, unaligned and trimmed.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql])
        .output()
        .expect("psql runs (FERRY_TEST_DATABASE_URL is set)");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts with extra `FERRY_*` variables (e.g. limits).
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let extra = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut s = Server {
            url: String::new(),
            data,
            child: None,
            _tmp: Some(tmp),
            extra,
            database: None,
        };
        s.spawn();
        s
    }

    /// Starts with its data in `data` (e.g. on a small filesystem).
    pub fn start_in(data: PathBuf) -> Server {
        let mut s = Server {
            url: String::new(),
            data,
            child: None,
            _tmp: None,
            extra: Vec::new(),
            database: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(ferry_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data)
            .env("FERRY_ADMIN_TOKEN", ADMIN)
            // FERRY_TEST_LOG: the servers' log filter (e.g. `info` to see
            // what recovery did), `warn` by default.
            .env(
                "RUST_LOG",
                std::env::var("FERRY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // On SQLite unless a database is made or given below, whatever
            // the shell exported (`eval "$(scripts/pg-local.sh)"`).
            .env_remove("FERRY_DATABASE_URL");
        let shares = self.extra.iter().any(|(k, _)| k == "FERRY_DATABASE_URL");
        if self.database.is_none() && !shares {
            self.database = TestDatabase::create();
        }
        if let Some(db) = &self.database {
            cmd.env("FERRY_DATABASE_URL", &db.url);
        }
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("ferry serve starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("a first line").unwrap();
        let addr = first
            .strip_prefix("Ferry listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        std::thread::spawn(move || for _ in lines {});
        self.url = addr;
        self.child = Some(child);
    }

    /// SIGKILL: no chance to flush or finish anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for a process already told to stop.
    pub fn terminate_wait(&mut self) -> std::process::ExitStatus {
        self.child.take().expect("running").wait().unwrap()
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// An absolute URL: `path` as is when it already is one.
    pub fn url_of(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.url)
        }
    }

    /// The PostgreSQL database this server made for itself, if any.
    pub fn database_url(&self) -> Option<&str> {
        self.database.as_ref().map(|d| d.url.as_str())
    }

    /// The value of a `FERRY_*` variable it was started with.
    #[allow(dead_code)]
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Runs one statement on the server's metadata (SQLite in its data
    /// directory, or its PostgreSQL database); `?1`, `?2`… take `args`.
    pub fn exec_sql(&self, sql: &str, args: &[&str]) {
        match &self.database {
            None => {
                let db = rusqlite::Connection::open(self.data.join("ferry.db")).unwrap();
                db.execute(sql, rusqlite::params_from_iter(args)).unwrap();
            }
            Some(pg) => {
                let mut sql = sql.to_owned();
                for (k, a) in args.iter().enumerate().rev() {
                    let literal = format!("'{}'", a.replace('\'', "''"));
                    sql = sql.replace(&format!("?{}", k + 1), &literal);
                }
                psql(&pg.url, &sql);
            }
        }
    }

    /// The first value of `sql`'s answer, as text, on the server's
    /// PostgreSQL database.
    #[allow(dead_code)]
    pub fn pg_value(&self, sql: &str) -> String {
        psql(&self.database.as_ref().expect("on PostgreSQL").url, sql)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
}

/// Sends SIGTERM to the server, as an operator stopping it would.
pub fn sigterm(pid: u32) {
    use nix::sys::signal::{Signal, kill};
    kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM).expect("signal sent");
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// One call; returns the status and the body as JSON (Null when empty).
pub async fn call(
    s: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let url = s.url_of(path);
    let mut rb = http().request(method, url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.unwrap();
    decode(resp).await
}

/// The server's `/metrics` text.
pub async fn metrics(s: &Server) -> String {
    http()
        .get(s.url_of("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Open sessions of a user (a one-request upload leaves none behind).
pub async fn open_sessions(s: &Server, tok: &str) -> usize {
    let (st, v) = call(s, Method::GET, "/v1/sessions?state=open", Some(tok), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["sessions"].as_array().unwrap().len()
}

pub async fn decode(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

/// Sends raw bytes with extra headers.
pub async fn put(
    s: &Server,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    data: Vec<u8>,
) -> (StatusCode, Value) {
    let url = s.url_of(path);
    let mut rb = http().put(url).body(data);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    decode(rb.send().await.unwrap()).await
}

/// Sends part `n` of an upload.
pub async fn part(
    s: &Server,
    token: &str,
    upload: &str,
    n: impl std::fmt::Display,
    data: impl AsRef<[u8]>,
) -> (StatusCode, Value) {
    let path = format!("/v1/uploads/{upload}/parts/{n}");
    put(s, &path, Some(token), &[], data.as_ref().to_vec()).await
}

/// An upload's status; it must answer 200.
pub async fn status(s: &Server, token: &str, upload: &str) -> Value {
    let path = format!("/v1/uploads/{upload}");
    let (st, v) = call(s, Method::GET, &path, Some(token), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

/// Creates a user; returns their token.
pub async fn user(s: &Server, name: &str) -> String {
    let (st, v) = call(
        s,
        Method::POST,
        "/v1/admin/users",
        Some(ADMIN),
        Some(json!({"name": name})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

pub async fn create_session(s: &Server, token: &str, body: Value) -> Value {
    let (st, v) = call(s, Method::POST, "/v1/sessions", Some(token), Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

/// Downloads a file and returns its bytes.
pub async fn download(s: &Server, token: &str, space: &str, path: &str) -> (StatusCode, Vec<u8>) {
    let resp = http()
        .get(format!("{}/v1/spaces/{space}/files/{path}", s.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.bytes().await.unwrap().to_vec())
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    // xorshift: fast, deterministic, incompressible enough.
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, data).unwrap();
    p
}

/// Runs the `ferry` CLI against a server.
pub fn cli(s: &Server, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(ferry_bin())
        .args(args)
        .env("FERRY_URL", &s.url)
        .env("FERRY_TOKEN", token)
        .output()
        .unwrap()
}

/// Creates a tus upload of `len` bytes (it must answer 201); its id.
pub async fn create_tus(s: &Server, token: &str, len: u64) -> String {
    create_tus_with(s, token, len, None).await
}

/// [`create_tus`] with `Upload-Metadata: metadata` when given.
pub async fn create_tus_with(s: &Server, token: &str, len: u64, metadata: Option<&str>) -> String {
    let mut post = http()
        .post(s.url_of("/tus/"))
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", len.to_string());
    if let Some(metadata) = metadata {
        post = post.header("Upload-Metadata", metadata);
    }
    let created = post.send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    created.headers()["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

/// Sends a deepset session's form (to wherever it points) with `file` last, as the SDK does; extra
/// fields (or replaced ones) come from `over`. Returns status and body.
pub async fn post_form(
    session: &Value,
    over: &[(&str, &str)],
    filename: &str,
    data: &[u8],
) -> (StatusCode, String) {
    let cfg = &session["aws_prefixed_request_config"];
    let mut fields: Vec<(String, String)> = cfg["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    for (k, v) in over {
        match fields.iter_mut().find(|(name, _)| name == k) {
            Some(f) => f.1 = v.to_string(),
            None => fields.push((k.to_string(), v.to_string())),
        }
    }
    let boundary = "ferry-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (k, v) in &fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: text/plain\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let resp = http()
        .post(cfg["url"].as_str().unwrap())
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.text().await.unwrap())
}

/// A request body fed by the test, chunk by chunk, that stays open until
/// its sender is dropped (a client that stalls, or whose network died
/// without a word).
pub fn held_body() -> (
    tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    reqwest::Body,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    }));
    (tx, body)
}

/// A client of the S3 server at `endpoint` (credentials from the
/// environment).
pub async fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
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

/// Every key in the bucket.
pub async fn keys(c: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let out = c.list_objects_v2().bucket(bucket).send().await.unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

/// Whether `key` holds bytes of the upload whose own object is `base`
/// (`<prefix>objects/<id>`): that object, or one a write gave a name of
/// its own (`<id>.<suffix>`).
pub fn holds_upload(key: &str, base: &str) -> bool {
    key.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Every key in the bucket under `prefix`, sorted.
pub async fn keys_under(c: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let out = c
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    let mut keys: Vec<String> = out
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    keys.sort();
    keys
}
