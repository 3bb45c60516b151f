//! The Box comparison: one file in 8 MiB parts, four in flight, each with
//! its SHA-1, through the Box dialect and as native part writes, on the
//! same server, in alternating rounds. Digests are computed before the
//! clock starts, so both sides measure the server, not the client's hashing.

use crate::TOKEN;
use crate::tus::file_body;
use anyhow::{Context, bail};
use base64::Engine as _;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

pub const PART: u64 = 8 << 20;
const IN_FLIGHT: usize = 4;

/// Base64 SHA-1 of each part and of the whole file.
pub struct Digests {
    pub parts: Vec<String>,
    pub whole: String,
}

pub fn digests(file: &Path) -> anyhow::Result<Digests> {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let mut f = std::fs::File::open(file)?;
    let (mut whole, mut parts) = (Sha1::new(), Vec::new());
    let mut buf = vec![0u8; PART as usize];
    loop {
        let mut n = 0;
        while n < buf.len() {
            let k = f.read(&mut buf[n..])?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            break;
        }
        whole.update(&buf[..n]);
        parts.push(b64(&Sha1::digest(&buf[..n])));
        if n < buf.len() {
            break;
        }
    }
    Ok(Digests {
        parts,
        whole: b64(&whole.finalize()),
    })
}

/// Sends every part, `IN_FLIGHT` at a time, in offset order; `put` makes
/// one part's request.
async fn send_parts<F>(size: u64, put: F) -> anyhow::Result<Vec<Value>>
where
    F: Fn(u64, u64, usize) -> reqwest::RequestBuilder,
{
    let parts = size.div_ceil(PART) as usize;
    futures::stream::iter(0..parts)
        .map(|k| {
            let offset = k as u64 * PART;
            let len = PART.min(size - offset);
            let rb = put(offset, len, k);
            async move {
                let r = rb.send().await?;
                if !r.status().is_success() {
                    bail!("part at {offset}: {}", r.status());
                }
                Ok(r.json::<Value>().await.unwrap_or(Value::Null))
            }
        })
        .buffered(IN_FLIGHT)
        .try_collect()
        .await
}

/// Box: create a session, parts with `digest: sha=`, commit with the
/// part list and the whole-file digest.
pub async fn box_upload(
    client: &reqwest::Client,
    base: &str,
    file: &Path,
    d: &Digests,
    name: &str,
) -> anyhow::Result<Duration> {
    let size = std::fs::metadata(file)?.len();
    let t = Instant::now();
    let r = client
        .post(format!("{base}/api/2.0/files/upload_sessions"))
        .bearer_auth(TOKEN)
        .json(&json!({"folder_id": "0", "file_name": name, "file_size": size}))
        .send()
        .await?;
    if r.status().as_u16() != 201 {
        bail!("create upload session: {}", r.status());
    }
    let v: Value = r.json().await?;
    let url = v["session_endpoints"]["upload_part"]
        .as_str()
        .context("upload_part")?
        .to_owned();
    if v["part_size"] != PART {
        bail!("the session's part size is {}, not {PART}", v["part_size"]);
    }
    let mut bodies = Vec::new();
    for k in 0..size.div_ceil(PART) {
        let offset = k * PART;
        bodies.push(file_body(file, offset, PART.min(size - offset)).await?);
    }
    let bodies = std::sync::Mutex::new(bodies.into_iter().map(Some).collect::<Vec<_>>());
    let answers = send_parts(size, |offset, len, k| {
        let body = bodies.lock().unwrap()[k].take().expect("each part once");
        client
            .put(&url)
            .bearer_auth(TOKEN)
            .header(
                "content-range",
                format!("bytes {offset}-{}/{size}", offset + len - 1),
            )
            .header("digest", format!("sha={}", d.parts[k]))
            .header("content-length", len)
            .body(body)
    })
    .await?;
    let parts: Vec<Value> = answers.into_iter().map(|a| a["part"].clone()).collect();
    let r = client
        .post(format!("{url}/commit"))
        .bearer_auth(TOKEN)
        .header("digest", format!("sha={}", d.whole))
        .json(&json!({"parts": parts}))
        .send()
        .await?;
    if r.status().as_u16() != 201 {
        bail!("commit: {}", r.status());
    }
    Ok(t.elapsed())
}

/// Native: a session with the same part size, the same parts with
/// `Content-Digest: sha=`, commit.
pub async fn native_upload(
    client: &reqwest::Client,
    base: &str,
    file: &Path,
    d: &Digests,
    name: &str,
) -> anyhow::Result<Duration> {
    let size = std::fs::metadata(file)?.len();
    let t = Instant::now();
    let r = client
        .post(format!("{base}/v1/sessions"))
        .bearer_auth(TOKEN)
        .json(&json!({"path": format!("native-{name}"), "size": size, "part_size": PART}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("create session: {}", r.status());
    }
    let v: Value = r.json().await?;
    let up = v["uploads"][0]["id"]
        .as_str()
        .context("upload id")?
        .to_owned();
    let sid = v["id"].as_str().context("session id")?.to_owned();
    let mut bodies = Vec::new();
    for k in 0..size.div_ceil(PART) {
        let offset = k * PART;
        bodies.push(file_body(file, offset, PART.min(size - offset)).await?);
    }
    let bodies = std::sync::Mutex::new(bodies.into_iter().map(Some).collect::<Vec<_>>());
    send_parts(size, |_, len, k| {
        let body = bodies.lock().unwrap()[k].take().expect("each part once");
        client
            .put(format!("{base}/v1/uploads/{up}/parts/{}", k + 1))
            .bearer_auth(TOKEN)
            .header("content-digest", format!("sha=:{}:", d.parts[k]))
            .header("content-length", len)
            .body(body)
    })
    .await?;
    let r = client
        .post(format!("{base}/v1/sessions/{sid}/commit"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("commit: {}", r.status());
    }
    Ok(t.elapsed())
}
