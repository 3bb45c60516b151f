//! The UCloud folder WebSocket: many small files over 4 parallel
//! connections of one folder session (LISTING, OK, one CHUNK per file,
//! FILES_COMPLETED, CLOSE), as files/s next to the native API's small
//! uploads (create + part + commit) on the same server; and the server's
//! peak RSS while 4 folder connections stream large files.

use crate::TOKEN;
use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

pub const CONNECTIONS: usize = 4;

/// Creates a FOLDER upload; its WebSocket endpoint.
pub async fn folder_endpoint(
    client: &reqwest::Client,
    url: &str,
    folder: &str,
) -> anyhow::Result<String> {
    let r = client
        .post(format!("{url}/api/files/upload"))
        .bearer_auth(TOKEN)
        .json(&json!({"items": [{
            "id": format!("/admin/{folder}"),
            "type": "FOLDER",
            "supportedProtocols": ["WEBSOCKET"],
            "conflictPolicy": "MERGE_RENAME",
        }]}))
        .send()
        .await?;
    let st = r.status();
    let v: serde_json::Value = r.json().await?;
    if !st.is_success() {
        bail!("createUpload: {st} {v}");
    }
    Ok(v["responses"][0]["endpoint"]
        .as_str()
        .context("endpoint")?
        .to_owned())
}

/// One connection: lists `files` (ids `first..first+files`, each `size`
/// bytes), sends each OK'd file in frames of at most `frame` bytes,
/// closes once all are completed.
async fn connection(
    endpoint: String,
    first: i32,
    files: usize,
    size: usize,
    frame: usize,
    payload: Bytes,
) -> anyhow::Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async(endpoint.as_str()).await?;
    for batch in (0..files).collect::<Vec<_>>().chunks(500) {
        let mut b = BytesMut::new();
        b.put_u8(4);
        for &i in batch {
            let id = first + i as i32;
            let path = format!("d{}/f{id}.bin", id % 100);
            b.put_i32(id);
            b.put_i64(size as i64);
            b.put_i64(1_700_000_000_000);
            b.put_u32(path.len() as u32);
            b.put_slice(path.as_bytes());
        }
        ws.send(Message::Binary(b.freeze())).await?;
    }
    let mut done = 0;
    while done < files as i32 {
        let m = tokio::time::timeout(Duration::from_secs(120), ws.next())
            .await
            .context("no answer from the server in 120 s")?;
        let b = match m {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Close(f))) => bail!("closed: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended"),
        };
        for m in b.chunks(5) {
            let n = i32::from_be_bytes(m[1..5].try_into()?);
            match m[0] {
                0 => {
                    let mut sent = 0;
                    while sent < size {
                        let k = frame.min(size - sent);
                        let mut c = BytesMut::with_capacity(5 + k);
                        c.put_u8(2);
                        c.put_i32(n);
                        c.put_slice(&payload[..k]);
                        ws.send(Message::Binary(c.freeze())).await?;
                        sent += k;
                    }
                }
                3 => bail!("file {n} was skipped"),
                5 => done = n,
                op => bail!("opcode {op} from the server"),
            }
        }
    }
    ws.send(Message::Binary(Bytes::from_static(&[6]))).await?;
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Close(_) = m {
            break;
        }
    }
    Ok(())
}

/// `files` files of `size` bytes over [`CONNECTIONS`] connections of one
/// folder session; the elapsed time.
pub async fn folder_upload(
    client: &reqwest::Client,
    url: &str,
    folder: &str,
    files: usize,
    size: usize,
    frame: usize,
) -> anyhow::Result<Duration> {
    let endpoint = folder_endpoint(client, url, folder).await?;
    let payload = Bytes::from(vec![42u8; frame.min(size).max(1)]);
    let per = files.div_ceil(CONNECTIONS);
    let t = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|k| {
            let n = per.min(files.saturating_sub(k * per));
            tokio::spawn(connection(
                endpoint.clone(),
                (k * per) as i32,
                n,
                size,
                frame,
                payload.clone(),
            ))
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(t.elapsed())
}
