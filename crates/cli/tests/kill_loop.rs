//! Kill-loop campaign (issue 11, G): mixed traffic over every dialect —
//! native parts, tus PATCH, the IETF draft's appends on the tus mount, Graph
//! ranges, Box parts, Veeva parts, UCloud CHUNKED and deepset's POST form
//! (an open-ended session, then its close) — while `ferry serve` is SIGKILLed
//! at random moments. After every restart: the server started, every acknowledged
//! byte is held, every acknowledged commit is a whole file with its
//! SHA-256, no partial file is visible, and no session is stuck.
//!
//! `FERRY_KILLS` sets the number of kills (default 30; the campaign runs
//! ≥ 100): `FERRY_KILLS=200 cargo test -p ferry-cli --test kill_loop -- --nocapture`;
//! `FERRY_SEED` changes the random moments, `FERRY_KILL_DEBUG=1` prints every
//! refusal (but 409s) with its body.

mod common;

use base64::Engine as _;
use common::*;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const P: u64 = 64 * 1024;
const GRAPH_FRAGMENT: u64 = 327_680;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    Native,
    Tus,
    Graph,
    Box,
    Draft,
    Veeva,
    Ucloud,
    Deepset,
}

const DIALECTS: [Dialect; 8] = [
    Dialect::Native,
    Dialect::Tus,
    Dialect::Graph,
    Dialect::Box,
    Dialect::Draft,
    Dialect::Veeva,
    Dialect::Ucloud,
    Dialect::Deepset,
];
const VEEVA: &str = "/api/v25.1/services/file_staging/upload";
const DEEPSET: &str = "/api/v1/workspaces/kim/upload_sessions";
/// The newest interop version (draft -12); tests/clients covers 8 as well.
const DRAFT_VERSION: &str = "9";

/// One file being uploaded, and what the server acknowledged of it.
#[derive(Clone, Debug)]
struct Job {
    dialect: Dialect,
    path: String,
    data: Vec<u8>,
    /// native: (session id, upload id); tus, draft: upload path; graph:
    /// uploadUrl path; Box, Veeva: session id; UCloud: (upload token, upload
    /// id); deepset: (session uuid, the session's JSON).
    handle: Vec<String>,
    /// Box: the part record the server answered (the whole file is one part).
    box_part: Option<Value>,
    /// Veeva: the one part was acknowledged; deepset: the form POST was.
    sent_whole: bool,
    /// deepset: a POST of the file is on its way. The SDK posts a file once
    /// and again only when it got no answer, never twice at once: a second
    /// POST replaces the first, and when it breaks off the first is lost
    /// too (pinned by deepset's
    /// `a_resent_object_that_breaks_off_keeps_the_acknowledged_one`).
    posting: bool,
    /// Native: parts acknowledged.
    acked_parts: Vec<u64>,
    /// tus/draft/Graph/UCloud: bytes acknowledged from the start.
    acked_offset: u64,
    /// The commit (or the completing write) was acknowledged.
    committed: bool,
}

#[derive(Default, Debug)]
struct Figures {
    requests: u64,
    acked_bytes_checked: u64,
    files_checked: u64,
    errors: BTreeMap<String, u64>,
}

type Jobs = Arc<Mutex<Vec<Job>>>;
type Stats = Arc<Mutex<Figures>>;

fn strip_base(url: &str) -> String {
    match url.strip_prefix("http://") {
        Some(rest) => rest[rest.find('/').unwrap_or(rest.len())..].to_owned(),
        None => url.to_owned(),
    }
}

fn error(stats: &Stats, kind: impl Into<String>) {
    *stats.lock().unwrap().errors.entry(kind.into()).or_default() += 1;
}

/// Sends one request; `None` when the connection failed (killed server).
async fn send(
    stats: &Stats,
    rb: reqwest::RequestBuilder,
) -> Option<(StatusCode, reqwest::header::HeaderMap, Value)> {
    stats.lock().unwrap().requests += 1;
    let req = rb.build().expect("a valid request");
    // Errors are counted by dialect and method.
    let draft = req.headers().contains_key("upload-draft-interop-version");
    let route = match req.url().path() {
        p if p.starts_with("/tus") && draft => "draft",
        p if p.starts_with("/tus") => "tus",
        p if p.starts_with("/v1.0") => "graph",
        p if p.starts_with("/api/2.0") => "box",
        p if p.starts_with("/api/v25.1") => "veeva",
        p if p.starts_with("/api/files") || p.starts_with("/ucloud") => "ucloud",
        p if p.starts_with("/api/v1/workspaces") || p.starts_with("/deepset") => "deepset",
        _ => "native",
    };
    let route = format!("{route} {}", req.method());
    match http().execute(req).await {
        Ok(r) => {
            let st = r.status();
            let hs = r.headers().clone();
            let Ok(text) = r.text().await else {
                error(stats, format!("{route} body cut"));
                return None;
            };
            let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
            if !st.is_success() {
                error(stats, format!("{route} {}", st.as_u16()));
                if std::env::var("FERRY_KILL_DEBUG").is_ok() && st.as_u16() != 409 {
                    eprintln!("{route} {st}: {v}");
                }
            }
            Some((st, hs, v))
        }
        Err(_) => {
            error(stats, format!("{route} connection"));
            None
        }
    }
}

/// Creates a job on the server.
async fn start_job(base: &str, tok: &str, n: u64, dialect: Dialect, stats: &Stats) -> Option<Job> {
    let c = http();
    let size = match dialect {
        Dialect::Graph => 2 * GRAPH_FRAGMENT + 1000,
        Dialect::Box | Dialect::Veeva | Dialect::Deepset => 5 * P + 7,
        _ => 3 * P + 1000,
    };
    // Box uploads go to the root folder, deepset's to the workspace root.
    let path = match dialect {
        Dialect::Box | Dialect::Deepset => format!("{dialect:?}-{n}.bin").to_lowercase(),
        _ => format!("k/{dialect:?}-{n}.bin").to_lowercase(),
    };
    let data = random_bytes(size as usize, n + 1);
    let handle = match dialect {
        Dialect::Native => {
            let body = json!({"path": path, "size": size, "part_size": P});
            let (st, _, v) = send(
                stats,
                c.post(format!("{base}/v1/sessions"))
                    .bearer_auth(tok)
                    .json(&body),
            )
            .await?;
            if st != StatusCode::CREATED {
                return None;
            }
            vec![
                v["id"].as_str()?.to_owned(),
                v["uploads"][0]["id"].as_str()?.to_owned(),
            ]
        }
        Dialect::Tus => {
            let name = base64::engine::general_purpose::STANDARD.encode(&path);
            let rb = c
                .post(format!("{base}/tus/"))
                .bearer_auth(tok)
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Length", size.to_string())
                .header("Upload-Metadata", format!("filename {name}"));
            let (st, hs, _) = send(stats, rb).await?;
            if st != StatusCode::CREATED {
                return None;
            }
            vec![strip_base(hs.get("location")?.to_str().ok()?)]
        }
        Dialect::Graph => {
            let url = format!("{base}/v1.0/me/drive/root:/{path}:/createUploadSession");
            let body = json!({"item": {"fileSize": size}});
            let (st, _, v) = send(stats, c.post(url).bearer_auth(tok).json(&body)).await?;
            if st != StatusCode::OK {
                return None;
            }
            vec![strip_base(v["uploadUrl"].as_str()?)]
        }
        Dialect::Box => {
            let body = json!({"folder_id": "0", "file_name": path, "file_size": size});
            let url = format!("{base}/api/2.0/files/upload_sessions");
            let (st, _, v) = send(stats, c.post(url).bearer_auth(tok).json(&body)).await?;
            if st != StatusCode::CREATED {
                return None;
            }
            vec![v["id"].as_str()?.to_owned()]
        }
        Dialect::Draft => {
            let rb = c
                .post(format!("{base}/tus/?path={path}"))
                .bearer_auth(tok)
                .header("Upload-Draft-Interop-Version", DRAFT_VERSION)
                .header("Upload-Complete", "?0")
                .header("Upload-Length", size.to_string())
                .header("Content-Type", "application/partial-upload")
                .body(Vec::new());
            let (st, hs, _) = send(stats, rb).await?;
            if st != StatusCode::CREATED {
                return None;
            }
            vec![strip_base(hs.get("location")?.to_str().ok()?)]
        }
        Dialect::Veeva => {
            let form = format!(
                "path=%2F{}&size={size}&overwrite=false",
                path.replace('/', "%2F")
            );
            let rb = c
                .post(format!("{base}{VEEVA}"))
                .header("Authorization", tok)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form);
            let (st, _, v) = send(stats, rb).await?;
            if st != StatusCode::OK {
                return None;
            }
            vec![v["data"]["id"].as_str()?.to_owned()]
        }
        Dialect::Ucloud => {
            let item = json!({"id": format!("/kim/{path}"), "type": "FILE",
                "supportedProtocols": ["CHUNKED"], "conflictPolicy": "REJECT"});
            let url = format!("{base}/api/files/upload");
            let rb = c.post(url).bearer_auth(tok).json(&json!({"items": [item]}));
            let (st, _, v) = send(stats, rb).await?;
            if st != StatusCode::OK {
                return None;
            }
            let token = v["responses"][0]["token"].as_str()?.to_owned();
            // A file token is `u<upload id>.<signature>`: the check reads the
            // upload's bytes through the native API.
            let upload = token.strip_prefix('u')?.split('.').next()?.to_owned();
            vec![token, upload]
        }
        Dialect::Deepset => {
            let rb = c
                .post(format!("{base}{DEEPSET}"))
                .bearer_auth(tok)
                .json(&json!({}));
            let (st, _, v) = send(stats, rb).await?;
            if st != StatusCode::CREATED {
                return None;
            }
            vec![v["session_id"].as_str()?.to_owned(), v.to_string()]
        }
    };
    Some(Job {
        dialect,
        path,
        data,
        handle,
        box_part: None,
        sent_whole: false,
        posting: false,
        acked_parts: vec![],
        acked_offset: 0,
        committed: false,
    })
}

/// Takes one step of a job; records what was acknowledged.
async fn step(
    base: &str,
    tok: &str,
    jobs: &Jobs,
    i: usize,
    rng: &mut rand::rngs::StdRng,
    stats: &Stats,
) {
    let c = http();
    let (dialect, handle, data, acked_parts, path, committed, box_part, sent_whole, acked) = {
        let j = &jobs.lock().unwrap()[i];
        (
            j.dialect,
            j.handle.clone(),
            j.data.clone(),
            j.acked_parts.clone(),
            j.path.clone(),
            j.committed,
            j.box_part.clone(),
            j.sent_whole,
            j.acked_offset,
        )
    };
    if committed {
        return;
    }
    let size = data.len() as u64;
    match dialect {
        Dialect::Box => {
            let url = format!("{base}/api/2.0/files/upload_sessions/{}", handle[0]);
            let sha = |d: &[u8]| {
                use sha1::Digest as _;
                format!(
                    "sha={}",
                    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(d))
                )
            };
            match box_part {
                None => {
                    let rb = c
                        .put(&url)
                        .bearer_auth(tok)
                        .header("content-range", format!("bytes 0-{}/{size}", size - 1))
                        .header("digest", sha(&data))
                        .body(data.clone());
                    if let Some((st, _, v)) = send(stats, rb).await
                        && st == StatusCode::OK
                    {
                        jobs.lock().unwrap()[i].box_part = Some(v["part"].clone());
                    }
                }
                Some(p) => {
                    let rb = c
                        .post(format!("{url}/commit"))
                        .bearer_auth(tok)
                        .header("digest", sha(&data))
                        .json(&json!({"parts": [p]}));
                    if let Some((st, _, _)) = send(stats, rb).await
                        && st == StatusCode::CREATED
                    {
                        jobs.lock().unwrap()[i].committed = true;
                    }
                }
            }
        }
        Dialect::Veeva => {
            let url = format!("{base}{VEEVA}/{}", handle[0]);
            if !sent_whole {
                use md5::Digest as _;
                let rb = c
                    .put(&url)
                    .header("Authorization", tok)
                    .header("Content-Type", "application/octet-stream")
                    .header("X-VaultAPI-FilePartNumber", "1")
                    .header("Content-MD5", hex::encode(md5::Md5::digest(&data)))
                    .body(data.clone());
                if let Some((st, _, _)) = send(stats, rb).await
                    && st == StatusCode::OK
                {
                    jobs.lock().unwrap()[i].sent_whole = true;
                }
                return;
            }
            let rb = c.post(&url).header("Authorization", tok);
            match send(stats, rb).await {
                Some((StatusCode::OK, _, _)) => jobs.lock().unwrap()[i].committed = true,
                // The answer to the commit was lost to a kill: the client
                // finds the file (check() verifies it is whole).
                Some(_) if stat_file(base, tok, &path, stats).await == Some(true) => {
                    jobs.lock().unwrap()[i].committed = true;
                }
                _ => {}
            }
        }
        Dialect::Ucloud => {
            if acked >= size {
                return;
            }
            // Resume from what was acknowledged; a chunk whose answer was
            // lost is sent again at its offset, as UCloud's client does.
            let end = (acked + P + rng.random_range(0..P)).min(size);
            let rb = c
                .post(format!("{base}/ucloud/chunked"))
                .header("Chunked-Upload-Token", &handle[0])
                .header("Chunked-Upload-Offset", acked.to_string())
                .header("Chunked-Upload-Total-Size", size.to_string())
                .body(data[acked as usize..end as usize].to_vec());
            if let Some((st, _, _)) = send(stats, rb).await
                && st == StatusCode::OK
            {
                let mut js = jobs.lock().unwrap();
                js[i].acked_offset = js[i].acked_offset.max(end);
                // The chunk that completes the file commits it.
                if end == size {
                    js[i].committed = true;
                }
            }
        }
        Dialect::Deepset => {
            if !sent_whole {
                {
                    // Decided under the lock: another worker may have
                    // posted it since this step read the job.
                    let mut js = jobs.lock().unwrap();
                    if js[i].sent_whole || js[i].posting {
                        return;
                    }
                    js[i].posting = true;
                }
                let session: Value = serde_json::from_str(&handle[1]).unwrap();
                let rb = deepset_form(base, &session, &path, &data);
                let answer = send(stats, rb).await;
                let mut js = jobs.lock().unwrap();
                js[i].posting = false;
                if let Some((StatusCode::NO_CONTENT, _, _)) = answer {
                    js[i].sent_whole = true;
                }
                return;
            }
            let rb = c
                .put(format!("{base}{DEEPSET}/{}", handle[0]))
                .bearer_auth(tok)
                .json(&json!({"status": "CLOSED"}));
            match send(stats, rb).await {
                Some((StatusCode::NO_CONTENT, _, _)) => jobs.lock().unwrap()[i].committed = true,
                // The answer to the close was lost to a kill (409: already
                // closed): the client finds the file.
                Some(_) if stat_file(base, tok, &path, stats).await == Some(true) => {
                    jobs.lock().unwrap()[i].committed = true;
                }
                _ => {}
            }
        }
        Dialect::Draft => {
            let url = format!("{base}{}", handle[0]);
            let head = c
                .head(&url)
                .bearer_auth(tok)
                .header("Upload-Draft-Interop-Version", DRAFT_VERSION);
            let Some((st, hs, _)) = send(stats, head).await else {
                return;
            };
            let complete = hs.get("upload-complete").and_then(|v| v.to_str().ok()) == Some("?1");
            if !st.is_success() || complete {
                // The answer that completed it was lost to a kill.
                if stat_file(base, tok, &path, stats).await == Some(true) {
                    jobs.lock().unwrap()[i].committed = true;
                }
                return;
            }
            let Some(at) = hs
                .get("upload-offset")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            else {
                error(stats, "draft HEAD without Upload-Offset");
                return;
            };
            let end = (at + P + rng.random_range(0..P)).min(size);
            let last = if end == size { "?1" } else { "?0" };
            let rb = c
                .patch(&url)
                .bearer_auth(tok)
                .header("Upload-Draft-Interop-Version", DRAFT_VERSION)
                .header("Upload-Offset", at.to_string())
                .header("Upload-Complete", last)
                .header("Content-Type", "application/partial-upload")
                .body(data[at as usize..end as usize].to_vec());
            if let Some((st, _, _)) = send(stats, rb).await {
                let mut js = jobs.lock().unwrap();
                if st == StatusCode::NO_CONTENT || st == StatusCode::OK {
                    js[i].acked_offset = js[i].acked_offset.max(end);
                }
                // The append that completes the upload commits it.
                if st == StatusCode::OK {
                    js[i].committed = true;
                }
            }
        }
        Dialect::Native => {
            let parts = size.div_ceil(P);
            let missing: Vec<u64> = (1..=parts).filter(|n| !acked_parts.contains(n)).collect();
            if missing.is_empty() {
                let url = format!("{base}/v1/sessions/{}/commit", handle[0]);
                if let Some((st, _, _)) = send(stats, c.post(url).bearer_auth(tok)).await
                    && st == StatusCode::OK
                {
                    jobs.lock().unwrap()[i].committed = true;
                }
                return;
            }
            let n = missing[rng.random_range(0..missing.len())];
            let a = ((n - 1) * P) as usize;
            let b = (n * P).min(size) as usize;
            let url = format!("{base}/v1/uploads/{}/parts/{n}", handle[1]);
            let rb = c.put(url).bearer_auth(tok).body(data[a..b].to_vec());
            if let Some((st, _, _)) = send(stats, rb).await
                && st == StatusCode::OK
            {
                // Two workers may send the same part: count it once.
                let mut js = jobs.lock().unwrap();
                if !js[i].acked_parts.contains(&n) {
                    js[i].acked_parts.push(n);
                }
            }
        }
        Dialect::Tus => {
            // Resume from the server's offset, as a tus client does.
            let url = format!("{base}{}", handle[0]);
            let head = c
                .head(&url)
                .bearer_auth(tok)
                .header("Tus-Resumable", "1.0.0");
            let Some((st, hs, _)) = send(stats, head).await else {
                return;
            };
            if st != StatusCode::OK {
                // The answer that completed it was lost to a kill: a client
                // finds the file (check() verifies it is whole).
                if st == StatusCode::NOT_FOUND
                    && stat_file(base, tok, &path, stats).await == Some(true)
                {
                    jobs.lock().unwrap()[i].committed = true;
                }
                return;
            }
            let Some(at) = hs
                .get("upload-offset")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            else {
                error(stats, "tus HEAD without Upload-Offset");
                return;
            };
            if at >= size {
                // The bytes are all there: HEAD retries the commit.
                if stat_file(base, tok, &path, stats).await == Some(true) {
                    jobs.lock().unwrap()[i].committed = true;
                }
                return;
            }
            let end = (at + P + rng.random_range(0..P)).min(size);
            let rb = c
                .patch(&url)
                .bearer_auth(tok)
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Offset", at.to_string())
                .header("Content-Type", "application/offset+octet-stream")
                .body(data[at as usize..end as usize].to_vec());
            if let Some((st, hs, _)) = send(stats, rb).await
                && st == StatusCode::NO_CONTENT
            {
                let off = hs
                    .get("upload-offset")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .unwrap_or(end);
                let mut js = jobs.lock().unwrap();
                js[i].acked_offset = js[i].acked_offset.max(off);
                // The request that completes the upload commits it.
                if off == size {
                    js[i].committed = true;
                }
            }
        }
        Dialect::Graph => {
            let url = format!("{base}{}", handle[0]);
            let Some((st, _, v)) = send(stats, c.get(&url)).await else {
                return;
            };
            if st != StatusCode::OK {
                // The answer that completed it was lost to a kill: a client
                // finds the file (check() verifies it is whole).
                if st == StatusCode::NOT_FOUND
                    && stat_file(base, tok, &path, stats).await == Some(true)
                {
                    jobs.lock().unwrap()[i].committed = true;
                }
                return;
            }
            let next = v["nextExpectedRanges"][0].as_str().unwrap_or("");
            let Some(at) = next.split('-').next().and_then(|s| s.parse::<u64>().ok()) else {
                return;
            };
            let end = (at + GRAPH_FRAGMENT).min(size);
            let rb = c
                .put(&url)
                .header("Content-Range", format!("bytes {at}-{}/{size}", end - 1))
                .body(data[at as usize..end as usize].to_vec());
            if let Some((st, _, _)) = send(stats, rb).await {
                let mut js = jobs.lock().unwrap();
                if st == StatusCode::ACCEPTED || st == StatusCode::CREATED || st == StatusCode::OK {
                    js[i].acked_offset = js[i].acked_offset.max(end);
                }
                if st == StatusCode::CREATED || st == StatusCode::OK {
                    js[i].committed = true;
                }
            }
        }
    }
}

/// A JSON answer (`Null` when it is not JSON).
async fn get_json(rb: reqwest::RequestBuilder) -> Value {
    let r = rb.send().await.expect("the restarted server answers");
    r.json().await.unwrap_or(Value::Null)
}

/// deepset's POST form for `name`: the session's signed fields, then the
/// file, as the SDK sends it (the form carries no token).
/// Whether a deepset session's form posts straight into the bucket (on
/// `--store s3`) rather than to Ferry.
fn posts_to_bucket(session: &Value) -> bool {
    let url = session["aws_prefixed_request_config"]["url"]
        .as_str()
        .unwrap_or_default();
    std::env::var("FERRY_S3_ENDPOINT")
        .is_ok_and(|e| !e.is_empty() && url.starts_with(e.trim_end_matches('/')))
}

fn deepset_form(base: &str, session: &Value, name: &str, data: &[u8]) -> reqwest::RequestBuilder {
    let cfg = &session["aws_prefixed_request_config"];
    let boundary = "ferry-kill-loop-boundary";
    let mut body = Vec::new();
    for (k, v) in cfg["fields"].as_object().into_iter().flatten() {
        let v = v.as_str().unwrap_or_default();
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let url = cfg["url"].as_str().unwrap_or_default();
    // A form posted to Ferry names the server of its session's day (the
    // port changes with every restart); one posted straight into the
    // bucket (`--store s3`) keeps its URL.
    let url = if posts_to_bucket(session) {
        url.to_owned()
    } else {
        format!("{base}{}", strip_base(url))
    };
    http()
        .post(url)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
}

/// Whether the file exists (`None`: no answer).
async fn stat_file(base: &str, tok: &str, path: &str, stats: &Stats) -> Option<bool> {
    let url = format!("{base}/v1/spaces/kim/files/{path}");
    let (st, _, _) = send(stats, http().head(url).bearer_auth(tok)).await?;
    Some(st == StatusCode::OK)
}

/// Every check after a restart; returns the failures found.
async fn check(base: &str, tok: &str, jobs: &Jobs, stats: &Stats) -> Vec<String> {
    let mut bad = Vec::new();
    let c = http();
    let snapshot: Vec<Job> = jobs.lock().unwrap().clone();
    for job in snapshot {
        let Job {
            dialect,
            path,
            data,
            handle,
            box_part,
            sent_whole,
            posting: _,
            acked_parts: parts,
            acked_offset: offset,
            committed,
        } = job;
        // No partial file: whatever is at the path is the whole file.
        let resp = c
            .get(format!("{base}/v1/spaces/kim/files/{path}"))
            .bearer_auth(tok)
            .send()
            .await
            .expect("the restarted server answers");
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        if status == StatusCode::OK {
            stats.lock().unwrap().files_checked += 1;
            if sha256_hex(&body) != sha256_hex(&data) {
                bad.push(format!(
                    "{path}: a file that is not the whole upload is visible"
                ));
            }
        } else if committed {
            let more = if dialect == Dialect::Deepset {
                let url = format!("{base}{DEEPSET}/{}/files", handle[0]);
                get_json(c.get(url).bearer_auth(tok)).await.to_string()
            } else {
                // What the server holds of uploads to that path.
                let url = format!("{base}/v1/sessions?uploads=true");
                let all = get_json(c.get(url).bearer_auth(tok)).await;
                let mine: Vec<&Value> = all["sessions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| {
                        s["uploads"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|u| u["path"] == path.as_str())
                    })
                    .collect();
                format!("{mine:?}")
            };
            bad.push(format!("{path}: acknowledged commit, but {status} {more}"));
        }
        if status == StatusCode::OK {
            stats.lock().unwrap().acked_bytes_checked += data.len() as u64;
            continue;
        }
        // Not committed: every acknowledged byte is held.
        match dialect {
            Dialect::Box => {
                let url = format!("{base}/api/2.0/files/upload_sessions/{}/parts", handle[0]);
                let v: Value = c
                    .get(url)
                    .bearer_auth(tok)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap_or(Value::Null);
                let held = v["total_count"].as_u64().unwrap_or(0);
                if box_part.is_some() {
                    stats.lock().unwrap().acked_bytes_checked += data.len() as u64;
                    if held < 1 {
                        bad.push(format!("{path}: an acknowledged Box part is gone: {v}"));
                    }
                }
            }
            Dialect::Veeva => {
                if sent_whole {
                    let url = format!("{base}{VEEVA}/{}", handle[0]);
                    let v = get_json(c.get(url).header("Authorization", tok)).await;
                    let held = v["data"]["uploaded"].as_u64().unwrap_or(0);
                    stats.lock().unwrap().acked_bytes_checked += data.len() as u64;
                    if held < data.len() as u64 {
                        bad.push(format!("{path}: an acknowledged Veeva part is gone: {v}"));
                    }
                }
            }
            Dialect::Ucloud => {
                let url = format!("{base}/v1/uploads/{}", handle[1]);
                let v = get_json(c.get(url).bearer_auth(tok)).await;
                let held = v["received_bytes"].as_u64().unwrap_or(0);
                stats.lock().unwrap().acked_bytes_checked += offset;
                if held < offset {
                    bad.push(format!(
                        "{path}: UCloud holds {held}, {offset} acknowledged: {v}"
                    ));
                }
            }
            Dialect::Deepset => {
                // A body posted into the bucket is the bucket's until the
                // close adopts it; the close's file is checked above.
                let direct = serde_json::from_str(&handle[1]).is_ok_and(|s| posts_to_bucket(&s));
                if sent_whole && !direct {
                    let url = format!("{base}/v1/sessions/{}", handle[0].replace('-', ""));
                    let v = get_json(c.get(url).bearer_auth(tok)).await;
                    let held = v["uploads"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|u| u["path"] == path.as_str())
                        .filter_map(|u| u["received_bytes"].as_u64())
                        .max()
                        .unwrap_or(0);
                    stats.lock().unwrap().acked_bytes_checked += data.len() as u64;
                    if held < data.len() as u64 {
                        bad.push(format!("{path}: an acknowledged deepset POST is gone: {v}"));
                    }
                }
            }
            Dialect::Draft => {
                let r = c
                    .head(format!("{base}{}", handle[0]))
                    .bearer_auth(tok)
                    .header("Upload-Draft-Interop-Version", DRAFT_VERSION)
                    .send()
                    .await
                    .unwrap();
                let held = r
                    .headers()
                    .get("upload-offset")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .unwrap_or(0);
                stats.lock().unwrap().acked_bytes_checked += offset;
                if held < offset {
                    bad.push(format!(
                        "{path}: draft offset {held} < acknowledged {offset} ({})",
                        r.status()
                    ));
                }
            }
            Dialect::Native => {
                let url = format!("{base}/v1/uploads/{}", handle[1]);
                let v: Value = c
                    .get(url)
                    .bearer_auth(tok)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let held = v["received_bytes"].as_u64().unwrap_or(0);
                let acked: u64 = parts
                    .iter()
                    .map(|&n| (n * P).min(data.len() as u64) - (n - 1) * P)
                    .sum();
                stats.lock().unwrap().acked_bytes_checked += acked;
                if held < acked {
                    bad.push(format!(
                        "{path}: {acked} bytes acknowledged, {held} held: {v}"
                    ));
                }
                let url = format!("{base}/v1/sessions/{}", handle[0]);
                let s: Value = c
                    .get(url)
                    .bearer_auth(tok)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let state = s["state"].as_str().unwrap_or("?");
                let up_state = s["uploads"][0]["state"].as_str().unwrap_or("?");
                if state == "open" && up_state == "committed" {
                    bad.push(format!(
                        "{path}: session stuck open with its upload committed"
                    ));
                }
                if state == "committing" || up_state == "committing" {
                    bad.push(format!("{path}: still committing after recovery: {s}"));
                }
            }
            Dialect::Tus => {
                let r = c
                    .head(format!("{base}{}", handle[0]))
                    .bearer_auth(tok)
                    .header("Tus-Resumable", "1.0.0")
                    .send()
                    .await
                    .unwrap();
                let held = r
                    .headers()
                    .get("upload-offset")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .unwrap_or(0);
                stats.lock().unwrap().acked_bytes_checked += offset;
                if held < offset {
                    bad.push(format!(
                        "{path}: tus offset {held} < acknowledged {offset} ({})",
                        r.status()
                    ));
                }
            }
            Dialect::Graph => {
                let v: Value = c
                    .get(format!("{base}{}", handle[0]))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap_or(Value::Null);
                // An open session names the next byte it expects; one whose
                // completing range was taken (its answer lost to the kill)
                // answers the committed driveItem, holding every byte.
                let held = match v["nextExpectedRanges"][0].as_str() {
                    Some(next) => next
                        .split('-')
                        .next()
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0),
                    None if v["file"].is_object() => v["size"].as_u64().unwrap_or(0),
                    None => 0,
                };
                stats.lock().unwrap().acked_bytes_checked += offset;
                if held < offset {
                    bad.push(format!(
                        "{path}: Graph expects {held}, {offset} acknowledged: {v}"
                    ));
                }
            }
        }
    }
    // No session of any dialect is stuck: open with nothing left to
    // write, or committing after recovery.
    let list: Value = c
        .get(format!("{base}/v1/sessions"))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for sess in list["sessions"].as_array().cloned().unwrap_or_default() {
        let state = sess["state"].as_str().unwrap_or("?");
        if state != "open" && state != "committing" {
            continue;
        }
        let id = sess["id"].as_str().unwrap_or("?");
        let v: Value = c
            .get(format!("{base}/v1/sessions/{id}"))
            .bearer_auth(tok)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ups = v["uploads"].as_array().cloned().unwrap_or_default();
        let dialect = v["dialect"].as_str().unwrap_or("?");
        if state == "committing" || ups.iter().any(|u| u["state"] == "committing") {
            bad.push(format!(
                "{dialect} session {id}: still committing after recovery"
            ));
        } else if !ups.is_empty() && ups.iter().all(|u| u["state"] == "committed") {
            bad.push(format!(
                "{dialect} session {id}: stuck open with all its uploads committed"
            ));
        }
    }
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_bytes_and_commits_survive_random_sigkills_in_mixed_traffic() {
    let kills = env_or("FERRY_KILLS", 30);
    kill_loop(Server::start(), kills).await;
}

/// The same on `--store s3`, when an S3 server is at hand
/// (`eval "$(scripts/s3-local.sh)"`: `FERRY_S3_ENDPOINT` and the bucket
/// `FERRY_S3_BUCKET`); each run under a prefix of its own.
/// `FERRY_S3_KILLS` sets the number of kills (default 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_s3_acknowledged_bytes_and_commits_survive_random_sigkills() {
    let (Ok(endpoint), Ok(bucket)) = (
        std::env::var("FERRY_S3_ENDPOINT"),
        std::env::var("FERRY_S3_BUCKET"),
    ) else {
        assert!(
            std::env::var("FERRY_REQUIRE_S3").is_err(),
            "FERRY_REQUIRE_S3 is set but FERRY_S3_ENDPOINT or FERRY_S3_BUCKET is not"
        );
        eprintln!(
            "SKIPPED: no FERRY_S3_ENDPOINT/FERRY_S3_BUCKET (eval \"$(scripts/s3-local.sh)\")"
        );
        return;
    };
    let prefix = format!(
        "kill-{}/",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let s = Server::start_with(&[
        ("FERRY_STORE", "s3"),
        ("FERRY_S3_ENDPOINT", &endpoint),
        ("FERRY_S3_BUCKET", &bucket),
        ("FERRY_S3_PREFIX", &prefix),
    ]);
    kill_loop(s, env_or("FERRY_S3_KILLS", 20)).await;
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Mixed traffic over every dialect, SIGKILLed `kills` times at random
/// moments; after each restart every acknowledged byte and committed file
/// is checked.
async fn kill_loop(mut s: Server, kills: u64) {
    let seed = env_or("FERRY_SEED", 11);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tok = user(&s, "kim").await;
    let jobs: Jobs = Arc::new(Mutex::new(Vec::new()));
    let stats: Stats = Arc::default();
    let mut failures = std::collections::BTreeSet::new();
    let mut next_job = 0u64;
    for round in 0..kills {
        let base = s.url.clone();
        // Keep about a dozen uploads going.
        let open = jobs.lock().unwrap().iter().filter(|j| !j.committed).count();
        for _ in open..12 {
            let dialect = DIALECTS[(next_job % DIALECTS.len() as u64) as usize];
            next_job += 1;
            if let Some(j) = start_job(&base, &tok, next_job, dialect, &stats).await {
                jobs.lock().unwrap().push(j);
            }
        }
        // Workers pick among the uploads still going.
        let live: Vec<usize> = jobs
            .lock()
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(_, j)| !j.committed)
            .map(|(i, _)| i)
            .collect();
        let mut workers = Vec::new();
        for w in 0..4u64 {
            let (base, tok, jobs, stats) = (base.clone(), tok.clone(), jobs.clone(), stats.clone());
            let live = live.clone();
            let mut wrng = rand::rngs::StdRng::seed_from_u64(seed ^ (round << 8) ^ w);
            workers.push(tokio::spawn(async move {
                for _ in 0..40 {
                    if live.is_empty() {
                        break;
                    }
                    let i = live[wrng.random_range(0..live.len())];
                    step(&base, &tok, &jobs, i, &mut wrng, &stats).await;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..400))).await;
        s.kill9();
        for w in workers {
            w.await.unwrap();
        }
        s.restart();
        for f in check(&s.url, &tok, &jobs, &stats).await {
            if failures.insert(f.clone()) {
                eprintln!("after kill {}: {f}", round + 1);
            }
        }
    }
    let f = stats.lock().unwrap();
    let committed = jobs.lock().unwrap().iter().filter(|j| j.committed).count();
    eprintln!(
        "kill loop: {kills} kills, {} requests, {} uploads ({committed} committed), {} acknowledged bytes checked, {} files checked; errors by kind: {:?}",
        f.requests,
        jobs.lock().unwrap().len(),
        f.acked_bytes_checked,
        f.files_checked,
        f.errors
    );
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
}
