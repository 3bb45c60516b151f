//! The Graph comparison: one file in sequential fragments through the Graph
//! dialect's `uploadUrl`, next to the same fragments as native
//! `Content-Range` writes, on the same server, in alternating rounds.

use crate::TOKEN;
use crate::tus::file_body;
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

fn range(offset: u64, len: u64, size: u64) -> String {
    format!("bytes {offset}-{}/{size}", offset + len - 1)
}

/// Graph: createUploadSession, then `PUT uploadUrl` fragment by fragment
/// (no Authorization header: the URL is signed), as LargeFileUploadTask does.
pub async fn graph_upload(
    client: &reqwest::Client,
    base: &str,
    file: &Path,
    fragment: u64,
    name: &str,
) -> anyhow::Result<Duration> {
    let size = std::fs::metadata(file)?.len();
    let t = Instant::now();
    let r = client
        .post(format!(
            "{base}/v1.0/me/drive/root:/bench/{name}:/createUploadSession"
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"item": {"fileSize": size}}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("createUploadSession: {}", r.status());
    }
    let v: Value = r.json().await?;
    let url = v["uploadUrl"].as_str().context("uploadUrl")?.to_owned();
    let mut offset = 0;
    while offset < size {
        let len = fragment.min(size - offset);
        let r = client
            .put(&url)
            .header("Content-Range", range(offset, len, size))
            .header("Content-Length", len)
            .body(file_body(file, offset, len).await?)
            .send()
            .await?;
        let want = if offset + len == size { 201 } else { 202 };
        if r.status().as_u16() != want {
            bail!("fragment at {offset}: {}", r.status());
        }
        offset += len;
    }
    Ok(t.elapsed())
}

/// Native: a session, the same fragments as `Content-Range` writes, commit.
pub async fn native_upload(
    client: &reqwest::Client,
    base: &str,
    file: &Path,
    fragment: u64,
    name: &str,
) -> anyhow::Result<Duration> {
    let size = std::fs::metadata(file)?.len();
    let t = Instant::now();
    let (sid, up) = crate::native_session(
        client,
        base,
        json!({"path": format!("bench/{name}"), "size": size}),
    )
    .await?;
    let mut offset = 0;
    while offset < size {
        let len = fragment.min(size - offset);
        let r = client
            .put(format!("{base}/v1/uploads/{up}"))
            .bearer_auth(TOKEN)
            .header("Content-Range", range(offset, len, size))
            .header("Content-Length", len)
            .body(file_body(file, offset, len).await?)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("range at {offset}: {}", r.status());
        }
        offset += len;
    }
    crate::native_commit(client, base, &sid).await?;
    Ok(t.elapsed())
}
