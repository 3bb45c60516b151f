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

/// Sends every part of `file`, `IN_FLIGHT` at a time, in offset order;
/// `put(offset, len, k)` makes part `k`'s request, which gets the part's
/// bytes (streamed from the file) as its body.
async fn send_parts<F>(file: &Path, size: u64, put: F) -> anyhow::Result<Vec<Value>>
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
                let r = rb.body(file_body(file, offset, len).await?).send().await?;
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
    let answers = send_parts(file, size, |offset, len, k| {
        client
            .put(&url)
            .bearer_auth(TOKEN)
            .header(
                "content-range",
                format!("bytes {offset}-{}/{size}", offset + len - 1),
            )
            .header("digest", format!("sha={}", d.parts[k]))
            .header("content-length", len)
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
    let (sid, up) = crate::native_session(
        client,
        base,
        json!({"path": format!("native-{name}"), "size": size, "part_size": PART}),
    )
    .await?;
    send_parts(file, size, |_, len, k| {
        client
            .put(format!("{base}/v1/uploads/{up}/parts/{}", k + 1))
            .bearer_auth(TOKEN)
            .header("content-digest", format!("sha=:{}:", d.parts[k]))
            .header("content-length", len)
    })
    .await?;
    crate::native_commit(client, base, &sid).await?;
    Ok(t.elapsed())
}
