//! Hooks over HTTP: each event is a signed JSON `POST` to the configured
//! URL (docs/HOOKS.md is the contract).

use crate::config::HooksConfig;
use anyhow::{Context, bail};
use ferry_engine::{HookData, HookKind, HookSink, Verdict};
use futures::FutureExt;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::HashSet;
use std::time::Duration;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Ferry-Signature";
/// How long a notification's receiver gets to answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct HttpHooks {
    client: reqwest::Client,
    url: String,
    secret: Option<String>,
    events: HashSet<HookKind>,
    timeout: Duration,
    fail_open: bool,
}

impl HttpHooks {
    /// The configured hooks, or `None` without a URL.
    pub fn from_config(c: &HooksConfig) -> anyhow::Result<Option<HttpHooks>> {
        let Some(url) = c.url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let parsed = reqwest::Url::parse(url)
            .with_context(|| format!("the hooks URL {url:?} is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("the hooks URL must be http:// or https://, not {url:?}");
        }
        let events = match &c.events {
            None => HookKind::ALL.into_iter().collect(),
            Some(names) => names
                .iter()
                .map(|n| n.trim())
                .filter(|n| !n.is_empty())
                .map(|n| {
                    HookKind::parse(n).with_context(|| {
                        let all: Vec<&str> = HookKind::ALL.iter().map(|k| k.name()).collect();
                        format!("unknown hook event {n:?}; events are {}", all.join(", "))
                    })
                })
                .collect::<anyhow::Result<HashSet<_>>>()?,
        };
        if c.timeout_secs == 0 {
            bail!("the hooks' timeout must be at least 1 second");
        }
        Ok(Some(HttpHooks {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .context("cannot build the hooks' HTTP client")?,
            url: url.to_owned(),
            secret: c.secret.clone().filter(|s| !s.is_empty()),
            events,
            timeout: Duration::from_secs(c.timeout_secs),
            fail_open: c.fail_open,
        }))
    }

    /// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
    pub fn signature(secret: &str, t: u64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(format!("{t}.").as_bytes());
        mac.update(body.as_bytes());
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    async fn post(&self, body: &str, timeout: Duration) -> Result<(u16, bytes::Bytes), String> {
        let mut rb = self
            .client
            .post(&self.url)
            .timeout(timeout)
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(secret) = &self.secret {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            rb = rb.header(SIGNATURE_HEADER, Self::signature(secret, t, body));
        }
        let resp = rb.send().await.map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {timeout:?}")
            } else {
                format!("cannot reach the receiver: {e}")
            }
        })?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("the answer broke off: {e}"))?;
        Ok((status, bytes))
    }
}

/// A blocking hook's answer body: `{}` (or nothing) allows,
/// `{"reject": {"status", "message"}}` refuses, `{"change": {"path",
/// "metadata"}}` rewrites.
fn verdict(body: &[u8]) -> Result<Verdict, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Verdict::Allow);
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if let Some(r) = v.get("reject") {
        let status = r["status"].as_u64().unwrap_or(403);
        if !(400..=499).contains(&status) {
            return Err(format!("a reject's status must be 400-499, not {status}"));
        }
        let message = r["message"]
            .as_str()
            .unwrap_or("refused by the server's policy")
            .to_owned();
        return Ok(Verdict::Reject {
            status: status as u16,
            message,
        });
    }
    if let Some(c) = v.get("change") {
        let path = match &c["path"] {
            Value::Null => None,
            Value::String(p) => Some(p.clone()),
            other => return Err(format!("a change's path must be a string, not {other}")),
        };
        let metadata = match &c["metadata"] {
            Value::Null => None,
            m @ Value::Object(_) => Some(m.to_string()),
            other => {
                return Err(format!(
                    "a change's metadata must be an object, not {other}"
                ));
            }
        };
        return Ok(Verdict::Change { path, metadata });
    }
    match v {
        Value::Object(_) => Ok(Verdict::Allow),
        other => Err(format!("the answer must be a JSON object, not {other}")),
    }
}

impl HookSink for HttpHooks {
    fn wants(&self, kind: HookKind) -> bool {
        self.events.contains(&kind)
    }

    fn render(&self, kind: HookKind, d: &HookData, at: i64) -> (String, String) {
        let id = ferry_engine::auth::random_hex(16);
        let metadata = d
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str::<Value>(m).ok());
        let body = json!({
            "id": id,
            "type": kind.name(),
            "time": ferry_http::rfc3339(at),
            "data": {
                "session_id": d.session_id,
                "upload_id": d.upload_id,
                "space": d.space,
                "path": d.path,
                "size": d.size,
                "offset": d.offset,
                "sha256": d.sha256,
                "user": d.user,
                "dialect": d.dialect,
                "metadata": metadata,
            }
        });
        (id, body.to_string())
    }

    fn ask<'a>(&'a self, body: &'a str) -> BoxFuture<'a, Result<Verdict, String>> {
        async move {
            let (status, answer) = self.post(body, self.timeout).await?;
            if !(200..300).contains(&status) {
                return Err(format!("the receiver answered {status}"));
            }
            verdict(&answer)
        }
        .boxed()
    }

    fn deliver<'a>(&'a self, body: &'a str) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let (status, _) = self.post(body, DELIVERY_TIMEOUT.max(self.timeout)).await?;
            if (200..300).contains(&status) {
                Ok(())
            } else {
                Err(format!("the receiver answered {status}"))
            }
        }
        .boxed()
    }

    fn fail_open(&self) -> bool {
        self.fail_open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_read_from_the_answer() {
        assert_eq!(verdict(b""), Ok(Verdict::Allow));
        assert_eq!(verdict(b"{}"), Ok(Verdict::Allow));
        assert_eq!(
            verdict(br#"{"reject":{"status":422,"message":"no .exe"}}"#),
            Ok(Verdict::Reject {
                status: 422,
                message: "no .exe".into()
            })
        );
        assert_eq!(
            verdict(br#"{"change":{"path":"inbox/a.txt","metadata":{"k":1}}}"#),
            Ok(Verdict::Change {
                path: Some("inbox/a.txt".into()),
                metadata: Some(r#"{"k":1}"#.into())
            })
        );
        assert!(verdict(br#"{"reject":{"status":500}}"#).is_err());
        assert!(verdict(br#"{"change":{"metadata":[1]}}"#).is_err());
        assert!(verdict(b"[1]").is_err());
        assert!(verdict(b"not json").is_err());
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_time_dot_body() {
        // Computed independently: Python's hmac.new(b"whsec_test",
        // b'1700000000.{"id":"x"}', hashlib.sha256).hexdigest().
        assert_eq!(
            HttpHooks::signature("whsec_test", 1_700_000_000, r#"{"id":"x"}"#),
            "t=1700000000,v1=80e8d098018f757aa814ab1abb924f35d304affa1d93d29611a54696207eb7c3"
        );
    }
}
