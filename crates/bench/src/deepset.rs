//! The deepset comparison: many small files through one deepset upload
//! session (one multipart POST per file to the session's form, then the
//! close that commits them all), next to the native API's small uploads
//! (create + part + commit per file) on the same server.

use crate::{TOKEN, api};
use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const BOUNDARY: &str = "ferry-bench-7MA4YWxkTrZu0gW";

/// A multipart body: the session's fields, then `file` named `name`.
fn form(fields: &serde_json::Map<String, Value>, name: &str, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(data.len() + 2048);
    for (k, v) in fields {
        let v = v.as_str().unwrap_or_default();
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: text/plain\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub struct DeepsetRun {
    /// Files per second, POSTs only.
    pub posts: f64,
    /// Files per second, POSTs + close (commit of every file) + status.
    pub total: f64,
    pub close: Duration,
}

/// One session of `files` files of `size` bytes, `concurrency` POSTs in
/// flight; closed, and polled until every file is finished.
pub async fn session_run(
    client: &reqwest::Client,
    url: &str,
    files: usize,
    size: usize,
    concurrency: usize,
) -> anyhow::Result<DeepsetRun> {
    let me = api(client, reqwest::Method::GET, format!("{url}/v1/me"), None).await?;
    let ws = me["user"]["home_space"]
        .as_str()
        .or(me["home_space"].as_str())
        .context("home space")?
        .to_owned();
    let base = format!("{url}/api/v1/workspaces/{ws}/upload_sessions");
    let t = Instant::now();
    let s = api(client, reqwest::Method::POST, base.clone(), Some(json!({}))).await?;
    let cfg = &s["aws_prefixed_request_config"];
    let post_url = cfg["url"].as_str().context("url")?.to_owned();
    let fields = cfg["fields"].as_object().context("fields")?.clone();
    let data = vec![b'd'; size];
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..files)
        .map(|i| {
            let body = form(&fields, &format!("f{i:05}.txt"), &data);
            let rb = client
                .post(&post_url)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(body);
            async move {
                let r = rb.send().await?;
                if !r.status().is_success() {
                    bail!("POST f{i:05}.txt: {} {}", r.status(), r.text().await?);
                }
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let posted = t.elapsed();
    let id = s["session_id"].as_str().context("session_id")?;
    let tc = Instant::now();
    let r = client
        .put(format!("{base}/{id}"))
        .bearer_auth(TOKEN)
        .json(&json!({"status": "CLOSED"}))
        .send()
        .await?;
    if r.status().as_u16() != 204 {
        bail!("close: {} {}", r.status(), r.text().await?);
    }
    let close = tc.elapsed();
    let st = api(client, reqwest::Method::GET, format!("{base}/{id}"), None).await?;
    let finished = st["ingestion_status"]["finished_files"]
        .as_u64()
        .unwrap_or(0);
    if finished != files as u64 {
        bail!("{finished} of {files} files finished: {st}");
    }
    let total = t.elapsed();
    Ok(DeepsetRun {
        posts: files as f64 / posted.as_secs_f64(),
        total: files as f64 / total.as_secs_f64(),
        close,
    })
}
