//! Resumable, parallel downloads of files and folders.
//!
//! A file comes in ranges (`Range: bytes=…`), `parallel` at a time, into
//! `<local>.ferry-part`; a small state file next to it
//! (`<local>.ferry-part.json`) names the file's SHA-256 (its ETag) and the
//! ranges already written and flushed. Running the same command again
//! after Ctrl-C or a dropped network fetches only the missing ranges, as
//! long as the server still has the same file (same SHA-256); otherwise it
//! starts over. The finished file is hashed and compared with the server's
//! SHA-256 before it takes its name.

use crate::upload::{Progress, retry};
use crate::{Client, ClientError, Result};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Options {
    /// Ranges fetched at once.
    pub parallel: usize,
    /// Bytes per range.
    pub chunk: u64,
    /// Attempts per request before giving up.
    pub attempts: u32,
    /// Average bytes per second to stay under, if any.
    pub limit_rate: Option<u64>,
}

/// What a finished download holds.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub local: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// Bytes already on disk from an earlier run.
    pub resumed_bytes: u64,
}

/// The resume state of one file.
#[derive(Serialize, Deserialize, Default)]
struct State {
    sha256: String,
    size: u64,
    chunk: u64,
    /// Chunks written and flushed.
    done: BTreeSet<u64>,
}

fn part_path(local: &Path) -> PathBuf {
    let mut name = local.as_os_str().to_owned();
    name.push(".ferry-part");
    PathBuf::from(name)
}

fn state_path(local: &Path) -> PathBuf {
    let mut name = local.as_os_str().to_owned();
    name.push(".ferry-part.json");
    PathBuf::from(name)
}

fn save(path: &Path, state: &State) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(state).map_err(|e| ClientError::Other(e.to_string()))?,
    )?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Downloads `space/path` into `local`.
pub async fn file(
    client: &Client,
    space: &str,
    path: &str,
    local: &Path,
    opts: &Options,
    progress: Arc<dyn Progress>,
) -> Result<Fetched> {
    let (size, sha256) = retry(opts.attempts, "reading the file's size", || {
        client.file_head(space, path)
    })
    .await?;
    if let Some(dir) = local.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let (part, state_file) = (part_path(local), state_path(local));
    let chunk = opts.chunk.max(1);
    // An earlier run of the same file (same bytes on the server) resumes.
    let earlier = std::fs::read(&state_file)
        .ok()
        .and_then(|b| serde_json::from_slice::<State>(&b).ok())
        .filter(|s| s.sha256 == sha256 && s.size == size && s.chunk > 0 && part.exists());
    let state = match earlier {
        Some(s) => s,
        None => {
            let f = std::fs::File::create(&part)?;
            f.set_len(size)?;
            let s = State {
                sha256: sha256.clone(),
                size,
                chunk,
                done: BTreeSet::new(),
            };
            save(&state_file, &s)?;
            s
        }
    };
    let chunk = state.chunk;
    let chunks = size.div_ceil(chunk);
    let len_of = |k: u64| (size - k * chunk).min(chunk);
    let resumed: u64 = state.done.iter().map(|&k| len_of(k)).sum();
    progress.start(size, resumed);
    let todo: Vec<u64> = (0..chunks).filter(|k| !state.done.contains(k)).collect();
    let state = Arc::new(Mutex::new(state));
    let pacer = Arc::new(crate::upload::Pacer::new(opts.limit_rate));

    let mut fetches = futures::stream::iter(todo)
        .map(|k| {
            let (state, progress, pacer) = (state.clone(), progress.clone(), pacer.clone());
            let (part, state_file, sha256) = (part.clone(), state_file.clone(), sha256.clone());
            async move {
                let (start, end) = (k * chunk, k * chunk + len_of(k));
                pacer.wait(end - start).await;
                let data = retry(opts.attempts, "fetching a range", || async {
                    let resp = client.download_range(space, path, start, end).await?;
                    let etag = resp
                        .headers()
                        .get("etag")
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v.trim_matches('"').to_owned());
                    if etag.as_deref() != Some(sha256.as_str()) {
                        return Err(ClientError::Other(format!(
                            "{space}/{path} changed on the server while downloading; run again"
                        )));
                    }
                    let data = resp.bytes().await?;
                    if data.len() as u64 != end - start {
                        return Err(ClientError::Other(format!(
                            "asked bytes {start}..{end} of {space}/{path}, got {}",
                            data.len()
                        )));
                    }
                    Ok(data)
                })
                .await?;
                let written = tokio::task::spawn_blocking(move || -> Result<()> {
                    use std::os::unix::fs::FileExt;
                    let f = std::fs::OpenOptions::new().write(true).open(&part)?;
                    f.write_all_at(&data, start)?;
                    f.sync_data()?;
                    Ok(())
                })
                .await
                .map_err(|e| ClientError::Other(e.to_string()))?;
                written?;
                // Recorded only once flushed: a resumed run trusts it.
                {
                    let mut s = state.lock().unwrap();
                    s.done.insert(k);
                    save(&state_file, &s)?;
                }
                progress.advance(end - start);
                Ok::<_, ClientError>(())
            }
        })
        .buffer_unordered(opts.parallel.max(1));
    while let Some(r) = fetches.next().await {
        r?;
    }
    drop(fetches);

    progress.note("verifying SHA-256");
    let check = part.clone();
    let actual = tokio::task::spawn_blocking(move || -> Result<String> {
        let mut f = std::fs::File::open(&check)?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        Ok(hex::encode(h.finalize()))
    })
    .await
    .map_err(|e| ClientError::Other(e.to_string()))??;
    if actual != sha256 {
        let _ = std::fs::remove_file(&part);
        let _ = std::fs::remove_file(&state_file);
        return Err(ClientError::Other(format!(
            "{space}/{path} arrived corrupt: SHA-256 {actual}, the server says {sha256}; run again"
        )));
    }
    std::fs::rename(&part, local)?;
    let _ = std::fs::remove_file(&state_file);
    Ok(Fetched {
        local: local.to_owned(),
        size,
        sha256,
        resumed_bytes: resumed,
    })
}

/// Every file under the folder `prefix` of `space` (recursively), as paths
/// relative to the space.
pub async fn files_under(client: &Client, space: &str, prefix: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut folders = vec![prefix.trim_matches('/').to_owned()];
    while let Some(folder) = folders.pop() {
        let listing = client.list(space, &folder).await?;
        for e in listing["entries"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap_or_default();
            let full = if folder.is_empty() {
                name.to_owned()
            } else {
                format!("{folder}/{name}")
            };
            if e["type"] == "folder" {
                folders.push(full);
            } else {
                out.push(full);
            }
        }
    }
    out.sort();
    Ok(out)
}
