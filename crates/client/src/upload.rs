//! Resumable, parallel uploads of local files into one session.
//!
//! A run is identified by *what* is uploaded: the server, the destination,
//! and each local file's path, size and modification time. That identity
//! names a small state file holding the session id. Running the same
//! command again (after Ctrl-C, a dropped network, a reboot) finds the
//! session, asks the server which byte ranges it still misses, and sends
//! only the parts that overlap them. The session commits atomically, with
//! the SHA-256 of every local file for the server to check first.

use crate::{Client, ClientError, Result, SessionInfo, UploadInfo};
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One local file and where it goes.
#[derive(Clone, Debug)]
pub struct Source {
    pub local: PathBuf,
    pub remote: String,
    pub size: u64,
    /// Modification time, nanoseconds since the epoch (part of the identity).
    pub mtime_ns: i128,
}

impl Source {
    pub fn new(local: PathBuf, remote: String) -> std::io::Result<Source> {
        let meta = std::fs::metadata(&local)?;
        let mtime_ns = meta
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        Ok(Source {
            local,
            remote,
            size: meta.len(),
            mtime_ns,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub space: Option<String>,
    pub conflict: String,
    pub parallel: usize,
    pub part_size: Option<u64>,
    /// Where resume state files live.
    pub state_dir: PathBuf,
    /// Average bytes per second to stay under, if any.
    pub limit_rate: Option<u64>,
    /// Attempts per request before giving up.
    pub attempts: u32,
    /// Send a `Content-Digest` (SHA-256) with each part, so the server
    /// checks every part on arrival. The whole file is checked at commit
    /// either way; this finds a corrupt part sooner, for one more hash pass.
    pub part_digests: bool,
    /// Send the parts straight to the server's object storage (presigned
    /// requests): the bytes bypass Ferry, which learns the parts at
    /// commit. Needs a server on `--store s3`.
    pub direct: bool,
}

/// Receives progress; the CLI draws a bar with it.
pub trait Progress: Send + Sync {
    fn start(&self, total: u64, already: u64);
    fn advance(&self, bytes: u64);
    fn note(&self, message: &str);
}

pub struct Outcome {
    pub session: SessionInfo,
    /// Bytes the server already had when this run started.
    pub resumed_bytes: u64,
    /// Bytes this run sent (counting retries once).
    pub sent_bytes: u64,
}

fn identity(client: &Client, sources: &[Source], opts: &Options) -> String {
    let mut h = Sha256::new();
    h.update(client.base().as_bytes());
    h.update(format!("\0{:?}\0{}\0", opts.space, opts.conflict).as_bytes());
    // Another part size is another upload (a saved session keeps the
    // part size it was made with).
    if let Some(p) = opts.part_size {
        h.update(format!("part_size {p}\0").as_bytes());
    }
    for s in sources {
        let local = std::fs::canonicalize(&s.local).unwrap_or_else(|_| s.local.clone());
        h.update(
            format!(
                "{}\0{}\0{}\0{}\0",
                local.display(),
                s.remote,
                s.size,
                s.mtime_ns
            )
            .as_bytes(),
        );
    }
    hex::encode(&h.finalize()[..16])
}

fn state_path(opts: &Options, key: &str) -> PathBuf {
    opts.state_dir.join(format!("{key}.json"))
}

fn save_state(path: &Path, session: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json!({ "session": session }).to_string())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Retries `f` on transient errors with exponential backoff and jitter.
pub async fn retry<T, F, Fut>(attempts: u32, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(200);
    for attempt in 1.. {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && attempt < attempts => {
                let jitter = Duration::from_millis(rand::random::<u64>() % 100);
                tracing::warn!(%e, attempt, "{what} failed; retrying in {:?}", delay + jitter);
                tokio::time::sleep(delay + jitter).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!()
}

/// Keeps the average rate under a limit by sleeping before each transfer.
pub(crate) struct Pacer {
    start: Instant,
    sent: AtomicU64,
    rate: Option<u64>,
}

impl Pacer {
    pub(crate) fn new(rate: Option<u64>) -> Pacer {
        Pacer {
            start: Instant::now(),
            sent: AtomicU64::new(0),
            rate,
        }
    }

    pub(crate) async fn wait(&self, bytes: u64) {
        let Some(rate) = self.rate else { return };
        let total = self.sent.fetch_add(bytes, Ordering::SeqCst);
        let due = Duration::from_secs_f64(total as f64 / rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// One part on its way to the server.
struct Job {
    upload: String,
    number: u64,
    data: Bytes,
    /// SHA-256 of the part, when part digests are on.
    digest: Option<[u8; 32]>,
}

/// Reads every file once, in order: returns each file's SHA-256 and sends
/// the parts in `need` (by number) to `tx`.
fn read_parts(
    plan: Vec<(PathBuf, String, u64, std::collections::HashSet<u64>)>,
    part_digests: bool,
    tx: tokio::sync::mpsc::Sender<Result<Job>>,
) -> Result<Vec<String>> {
    use std::io::Read;
    let mut hashes = Vec::new();
    for (path, upload, part_size, need) in plan {
        let mut f = std::fs::File::open(&path)?;
        let mut whole = Sha256::new();
        for number in 1.. {
            let mut buf = Vec::with_capacity(part_size as usize);
            (&mut f).take(part_size).read_to_end(&mut buf)?;
            if buf.is_empty() {
                break;
            }
            whole.update(&buf);
            if need.contains(&number) {
                let digest = part_digests.then(|| Sha256::digest(&buf).into());
                let job = Job {
                    upload: upload.clone(),
                    number,
                    data: Bytes::from(buf),
                    digest,
                };
                if tx.blocking_send(Ok(job)).is_err() {
                    return Err(ClientError::Other("the upload stopped".into()));
                }
            }
        }
        hashes.push(hex::encode(whole.finalize()));
    }
    Ok(hashes)
}

/// Part numbers of `u` that overlap a missing range.
fn needed_parts(u: &UploadInfo) -> Vec<(u64, u64, u64)> {
    let size = u.size.unwrap_or(0);
    let total = u.total_parts.unwrap_or(0);
    (1..=total)
        .filter_map(|n| {
            let start = (n - 1) * u.part_size;
            let end = (start + u.part_size).min(size);
            let needed = u
                .missing
                .iter()
                .any(|(a, b)| *a < end && b.is_none_or(|b| b >= start));
            needed.then_some((n, start, end - start))
        })
        .collect()
}

/// Uploads `sources` into one session, resuming a previous run's session
/// when there is one, and commits it.
pub async fn run(
    client: &Client,
    sources: Vec<Source>,
    opts: &Options,
    progress: Arc<dyn Progress>,
) -> Result<Outcome> {
    let key = identity(client, &sources, opts);
    let state = state_path(opts, &key);
    let mut session = None;
    if let Ok(text) = std::fs::read_to_string(&state)
        && let Ok(v) = serde_json::from_str::<Value>(&text)
        && let Some(id) = v["session"].as_str()
    {
        match client.session(id).await {
            Ok(s) if s.state == "open" => {
                progress.note(&format!("resuming session {}", s.id));
                session = Some(s);
            }
            Ok(s) if s.state == "committed" => {
                let _ = std::fs::remove_file(&state);
                return Ok(Outcome {
                    resumed_bytes: sources.iter().map(|s| s.size).sum(),
                    sent_bytes: 0,
                    session: s,
                });
            }
            Ok(s) => progress.note(&format!("session {} is {}; starting over", s.id, s.state)),
            Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => {}
            Err(e) => return Err(e),
        }
    }
    let session = match session {
        Some(s) => s,
        None => {
            let uploads: Vec<Value> = sources
                .iter()
                .map(|s| {
                    let mut u = json!({"path": s.remote, "size": s.size});
                    if let Some(p) = opts.part_size {
                        u["part_size"] = json!(p);
                    }
                    u
                })
                .collect();
            let mut body = json!({"conflict": opts.conflict, "uploads": uploads});
            if let Some(space) = &opts.space {
                body["space"] = json!(space);
            }
            let s = retry(opts.attempts, "creating the session", || {
                client.create_session(&body)
            })
            .await?;
            save_state(&state, &s.id)?;
            s
        }
    };
    if session.uploads.len() != sources.len() {
        return Err(ClientError::Other(format!(
            "session {} has {} uploads for {} local files",
            session.id,
            session.uploads.len(),
            sources.len()
        )));
    }

    let total: u64 = sources.iter().map(|s| s.size).sum();
    let mut needed = Vec::new();
    for up in &session.uploads {
        needed.push(if up.state == "open" {
            needed_parts(up).into_iter().map(|p| p.0).collect()
        } else {
            std::collections::HashSet::new()
        });
    }
    let todo: u64 = session
        .uploads
        .iter()
        .filter(|u| u.state == "open")
        .flat_map(needed_parts)
        .map(|p| p.2)
        .sum();
    let resumed = total - todo;
    progress.start(total, resumed);

    // One reader goes through each file in order: it computes the file's
    // SHA-256 in a single pass and hands the parts the server still needs
    // to the senders, which run `parallel` at a time.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Job>>(opts.parallel.max(1));
    let plan: Vec<(PathBuf, String, u64, std::collections::HashSet<u64>)> = sources
        .iter()
        .zip(&session.uploads)
        .zip(needed)
        .map(|((src, up), need)| (src.local.clone(), up.id.clone(), up.part_size, need))
        .collect();
    let part_digests = opts.part_digests;
    let reader = tokio::task::spawn_blocking(move || read_parts(plan, part_digests, tx));

    let pacer = Arc::new(Pacer::new(opts.limit_rate));
    let sent = Arc::new(AtomicU64::new(0));
    let mut rx = rx;
    let jobs = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut results = jobs
        .map(|job| {
            let client = client.clone();
            let progress = progress.clone();
            let pacer = pacer.clone();
            let sent = sent.clone();
            let attempts = opts.attempts;
            let direct = opts.direct;
            async move {
                let job = job?;
                let len = job.data.len() as u64;
                pacer.wait(len).await;
                if direct {
                    let hex = job.digest.map(hex::encode);
                    retry(attempts, "sending a part to object storage", || {
                        client.put_part_direct(
                            &job.upload,
                            job.number,
                            job.data.clone(),
                            hex.as_deref(),
                        )
                    })
                    .await?;
                } else {
                    let b64 = job
                        .digest
                        .map(|d| base64::engine::general_purpose::STANDARD.encode(d));
                    retry(attempts, "sending a part", || {
                        client.put_part(&job.upload, job.number, job.data.clone(), b64.as_deref())
                    })
                    .await?;
                }
                sent.fetch_add(len, Ordering::Relaxed);
                progress.advance(len);
                Ok::<_, ClientError>(())
            }
        })
        .buffer_unordered(opts.parallel.max(1));
    while let Some(r) = results.next().await {
        r?;
    }
    drop(results);

    let hashes = reader
        .await
        .map_err(|e| ClientError::Other(e.to_string()))??;
    let mut expected = serde_json::Map::new();
    for (up, h) in session.uploads.iter().zip(&hashes) {
        if up.state == "open" {
            expected.insert(up.id.clone(), json!({ "sha256": h }));
        }
    }
    let body = json!({ "uploads": expected });
    progress.note("committing");
    let done = retry(opts.attempts, "committing", || {
        client.commit_session(&session.id, &body)
    })
    .await?;
    for (up, h) in done.uploads.iter().zip(&hashes) {
        if let Some(f) = &up.file
            && up.state == "committed"
            && &f.sha256 != h
        {
            return Err(ClientError::Other(format!(
                "{}: the server's SHA-256 {} differs from the local file's {h}",
                f.path, f.sha256
            )));
        }
    }
    let _ = std::fs::remove_file(&state);
    Ok(Outcome {
        session: done,
        resumed_bytes: resumed,
        sent_bytes: sent.load(Ordering::Relaxed),
    })
}

/// Reads up to `n` bytes (fewer only at the end of the stream).
async fn read_chunk<R: tokio::io::AsyncRead + Unpin>(r: &mut R, n: usize) -> Result<Bytes> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(n);
    while buf.len() < n {
        let got = (&mut *r)
            .take((n - buf.len()) as u64)
            .read_to_end(&mut buf)
            .await?;
        if got == 0 {
            break;
        }
    }
    Ok(Bytes::from(buf))
}

/// Uploads a stream of unknown length (standard input) to `remote`: a
/// deferred-length upload whose chunks go as byte ranges as they are read,
/// `parallel` at a time, each retried from memory on a transient error;
/// the last one announces the size, and the commit carries the SHA-256.
/// Not resumable across runs (the stream cannot be read twice).
pub async fn run_stream<R: tokio::io::AsyncRead + Unpin>(
    client: &Client,
    mut input: R,
    remote: &str,
    opts: &Options,
    progress: Arc<dyn Progress>,
) -> Result<Outcome> {
    const DEFAULT_CHUNK: u64 = 8 << 20;
    let chunk = opts.part_size.unwrap_or(DEFAULT_CHUNK).max(1) as usize;
    // The first chunk is read before the session exists: a stream that
    // ends inside it is a file of known size.
    let first = read_chunk(&mut input, chunk).await?;
    let known = (first.len() < chunk).then_some(first.len() as u64);
    let mut body = json!({"conflict": opts.conflict, "path": remote});
    if let Some(size) = known {
        body["size"] = json!(size);
    }
    if let Some(space) = &opts.space {
        body["space"] = json!(space);
    }
    let session = retry(opts.attempts, "creating the session", || {
        client.create_session(&body)
    })
    .await?;
    let upload = session
        .uploads
        .first()
        .ok_or_else(|| ClientError::Other(format!("session {} has no upload", session.id)))?
        .id
        .clone();
    progress.start(known.unwrap_or(0), 0);

    // Chunks in order, each knowing whether it is the last (one read ahead).
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Result<(u64, Bytes, Option<u64>)>>(opts.parallel.max(1));
    let reader = async move {
        let mut hasher = Sha256::new();
        let mut at = 0u64;
        let mut current = first;
        loop {
            let next = if current.len() < chunk {
                Bytes::new()
            } else {
                match read_chunk(&mut input, chunk).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return None;
                    }
                }
            };
            hasher.update(&current);
            let last = next.is_empty();
            let len = current.len() as u64;
            let total = last.then_some(at + len);
            if (len > 0 || (last && known.is_none()))
                && tx.send(Ok((at, current, total))).await.is_err()
            {
                return None;
            }
            at += len;
            if last {
                return Some((hex::encode(hasher.finalize()), at));
            }
            current = next;
        }
    };
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let jobs = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let (sent, progress) = (sent.clone(), progress.clone());
        let upload = upload.clone();
        async move {
            let mut results = jobs
                .map(|job| {
                    let (client, sent, progress, upload) = (
                        client.clone(),
                        sent.clone(),
                        progress.clone(),
                        upload.clone(),
                    );
                    async move {
                        let (at, data, total) = job?;
                        let len = data.len() as u64;
                        retry(opts.attempts, "sending bytes", || {
                            client.put_range(&upload, at, data.clone(), total)
                        })
                        .await?;
                        sent.fetch_add(len, Ordering::Relaxed);
                        progress.advance(len);
                        Ok::<_, ClientError>(())
                    }
                })
                .buffer_unordered(opts.parallel.max(1));
            while let Some(r) = results.next().await {
                r?;
            }
            Ok::<_, ClientError>(())
        }
    };
    let (read, sending) = tokio::join!(reader, sender);
    sending?;
    let (sha256, size) =
        read.ok_or_else(|| ClientError::Other("reading the input failed".into()))?;
    progress.note("committing");
    let commit = json!({"uploads": {upload.clone(): {"sha256": sha256}}});
    let done = retry(opts.attempts, "committing", || {
        client.commit_session(&session.id, &commit)
    })
    .await?;
    if let Some(f) = done.uploads.first().and_then(|u| u.file.as_ref())
        && (f.sha256 != sha256 || f.size != size)
    {
        return Err(ClientError::Other(format!(
            "{}: the server has {} bytes with SHA-256 {}; {size} bytes with {sha256} were sent",
            f.path, f.size, f.sha256
        )));
    }
    Ok(Outcome {
        session: done,
        resumed_bytes: 0,
        sent_bytes: sent.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(size: u64, part: u64, missing: Vec<(u64, Option<u64>)>) -> UploadInfo {
        UploadInfo {
            id: "u".into(),
            path: "p".into(),
            size: Some(size),
            part_size: part,
            total_parts: Some(size.div_ceil(part)),
            received_bytes: 0,
            missing,
            url: String::new(),
            state: "open".into(),
            file: None,
        }
    }

    #[test]
    fn needed_parts_follow_missing_ranges() {
        let parts = |u: &UploadInfo| needed_parts(u).into_iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(parts(&info(25, 10, vec![(0, Some(24))])), vec![1, 2, 3]);
        assert_eq!(parts(&info(25, 10, vec![(10, Some(19))])), vec![2]);
        assert_eq!(parts(&info(25, 10, vec![(15, Some(21))])), vec![2, 3]);
        assert!(parts(&info(25, 10, vec![])).is_empty());
        assert_eq!(
            needed_parts(&info(25, 10, vec![(20, Some(24))]))[0],
            (3, 20, 5)
        );
    }
}
