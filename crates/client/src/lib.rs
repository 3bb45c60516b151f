//! A Rust client for Ferry's native API, and the resumable uploader the
//! `ferry` CLI is built on.
//!
//! [`Client`] maps one method to one call. [`upload`] adds what makes a
//! transfer survive bad networks: a local state file that remembers the
//! session of a given set of local files, parallel part uploads, retries
//! with exponential backoff, and a whole-file SHA-256 that the server
//! checks before the files become visible.

pub mod download;
pub mod upload;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{status}: {message} ({code})")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
        body: Value,
    },
    #[error("cannot reach the server: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    /// Whether retrying the same request may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Http(_) => true,
            ClientError::Api { status, code, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || code == "conflict"
                    || code == "body_failed"
            }
            _ => false,
        }
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A connection to one Ferry server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct FileInfo {
    pub id: String,
    pub space: String,
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct UploadInfo {
    pub id: String,
    pub path: String,
    pub size: Option<u64>,
    pub part_size: u64,
    pub total_parts: Option<u64>,
    pub received_bytes: u64,
    pub missing: Vec<(u64, Option<u64>)>,
    pub url: String,
    pub state: String,
    pub file: Option<FileInfo>,
}

/// A presigned request for one part, as the server hands it out.
#[derive(Clone, Debug, Deserialize)]
pub struct Presigned {
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    pub expires_at: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct SessionInfo {
    pub id: String,
    pub state: String,
    pub owner: String,
    pub space: String,
    pub expires_at: String,
    #[serde(default)]
    pub uploads: Vec<UploadInfo>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Client {
        Client {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("a default HTTP client"),
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let rb = self.http.request(method, url);
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends and turns an error status into [`ClientError::Api`].
    pub async fn send(rb: RequestBuilder) -> Result<Response> {
        let resp = rb.send().await?;
        if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned();
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("no error message")
            .to_owned();
        Err(ClientError::Api {
            status,
            code,
            message,
            body,
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T> {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        Ok(Self::send(rb).await?.json().await?)
    }

    pub async fn me(&self) -> Result<Value> {
        self.json(Method::GET, "/v1/me", None).await
    }

    pub async fn create_session(&self, body: &Value) -> Result<SessionInfo> {
        self.json(Method::POST, "/v1/sessions", Some(body)).await
    }

    pub async fn session(&self, id: &str) -> Result<SessionInfo> {
        self.json(Method::GET, &format!("/v1/sessions/{id}"), None)
            .await
    }

    pub async fn sessions(&self, state: Option<&str>, all: bool) -> Result<Vec<SessionInfo>> {
        let mut q = vec![];
        if let Some(s) = state {
            q.push(format!("state={s}"));
        }
        if all {
            q.push("all=true".into());
        }
        let v: Value = self
            .json(Method::GET, &format!("/v1/sessions?{}", q.join("&")), None)
            .await?;
        serde_json::from_value(v["sessions"].clone()).map_err(|e| ClientError::Other(e.to_string()))
    }

    pub async fn upload(&self, id: &str) -> Result<UploadInfo> {
        self.json(Method::GET, &format!("/v1/uploads/{id}"), None)
            .await
    }

    pub async fn put_part(
        &self,
        upload: &str,
        n: u64,
        data: bytes::Bytes,
        sha256_b64: Option<&str>,
    ) -> Result<Value> {
        let mut rb = self
            .request(Method::PUT, &format!("/v1/uploads/{upload}/parts/{n}"))
            .body(data);
        if let Some(d) = sha256_b64 {
            rb = rb.header("content-digest", format!("sha-256=:{d}:"));
        }
        Ok(Self::send(rb).await?.json().await?)
    }

    /// Writes `data` at `start` of an upload (`Content-Range`), announcing
    /// the file's total size with the last bytes (`None`: not known yet).
    pub async fn put_range(
        &self,
        upload: &str,
        start: u64,
        data: bytes::Bytes,
        total: Option<u64>,
    ) -> Result<Value> {
        let total = total.map_or("*".to_owned(), |t| t.to_string());
        let range = if data.is_empty() {
            format!("bytes */{total}")
        } else {
            format!("bytes {start}-{}/{total}", start + data.len() as u64 - 1)
        };
        let rb = self
            .request(Method::PUT, &format!("/v1/uploads/{upload}"))
            .header("content-range", range)
            .body(data);
        Ok(Self::send(rb).await?.json().await?)
    }

    /// Sends part `n` straight to object storage: asks the server for a
    /// presigned request (with the part's SHA-256, the store checks the
    /// bytes), then sends the bytes there. The server learns the part at
    /// commit.
    pub async fn put_part_direct(
        &self,
        upload: &str,
        n: u64,
        data: bytes::Bytes,
        sha256_hex: Option<&str>,
    ) -> Result<()> {
        let body = match sha256_hex {
            Some(h) => serde_json::json!({ "sha256": h }),
            None => serde_json::json!({}),
        };
        let p: Presigned = self
            .json(
                Method::POST,
                &format!("/v1/uploads/{upload}/parts/{n}/presign"),
                Some(&body),
            )
            .await?;
        let method = Method::from_bytes(p.method.as_bytes())
            .map_err(|_| ClientError::Other(format!("the server presigned a {:?}", p.method)))?;
        let mut rb = self.http.request(method, &p.url).body(data);
        for (k, v) in &p.headers {
            rb = rb.header(k, v);
        }
        let resp = rb.send().await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        // Object storage answers in its own (XML) format.
        let text = resp.text().await.unwrap_or_default();
        let code = text
            .split_once("<Code>")
            .and_then(|(_, rest)| rest.split_once("</Code>"))
            .map_or("unknown", |(c, _)| c)
            .to_owned();
        Err(ClientError::Api {
            status,
            message: format!("object storage refused part {n}: {code}"),
            code,
            body: Value::String(text),
        })
    }

    pub async fn commit_session(&self, id: &str, body: &Value) -> Result<SessionInfo> {
        self.json(
            Method::POST,
            &format!("/v1/sessions/{id}/commit"),
            Some(body),
        )
        .await
    }

    pub async fn abort_session(&self, id: &str) -> Result<()> {
        Self::send(self.request(Method::DELETE, &format!("/v1/sessions/{id}"))).await?;
        Ok(())
    }

    pub async fn list(&self, space: &str, prefix: &str) -> Result<Value> {
        self.json(
            Method::GET,
            &format!("/v1/spaces/{space}/list/{prefix}"),
            None,
        )
        .await
    }

    pub async fn delete(&self, space: &str, path: &str) -> Result<()> {
        Self::send(self.request(Method::DELETE, &format!("/v1/spaces/{space}/files/{path}")))
            .await?;
        Ok(())
    }

    pub async fn download(&self, space: &str, path: &str) -> Result<Response> {
        Self::send(self.request(Method::GET, &format!("/v1/spaces/{space}/files/{path}"))).await
    }

    /// Bytes `start..end` of a file (a `206` answer), or all of it.
    pub async fn download_range(
        &self,
        space: &str,
        path: &str,
        start: u64,
        end: u64,
    ) -> Result<Response> {
        let rb = self
            .request(Method::GET, &format!("/v1/spaces/{space}/files/{path}"))
            .header("range", format!("bytes={start}-{}", end - 1));
        Self::send(rb).await
    }

    /// A file's size and SHA-256 (hex, its ETag), without its bytes.
    pub async fn file_head(&self, space: &str, path: &str) -> Result<(u64, String)> {
        let resp =
            Self::send(self.request(Method::HEAD, &format!("/v1/spaces/{space}/files/{path}")))
                .await?;
        let size = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::Other(format!("{space}/{path}: no Content-Length")))?;
        let sha = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_owned())
            .ok_or_else(|| ClientError::Other(format!("{space}/{path}: no ETag")))?;
        Ok((size, sha))
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.json(Method::POST, path, Some(body)).await
    }

    pub async fn delete_path(&self, path: &str) -> Result<()> {
        Self::send(self.request(Method::DELETE, path)).await?;
        Ok(())
    }
}
