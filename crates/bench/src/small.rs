//! `--suite small`: many small uploads at a fixed concurrency, through
//! every way Ferry takes them, next to rustus with and without
//! `--force-fsync` (the fair peer acknowledges durable bytes, as Ferry
//! does; the other is the bar), in alternating rounds on the same disk.
//!
//! Each case reports uploads/s, p50 and p99 latency, and the server's CPU
//! time per upload (user + system, from /proc): on this machine the client
//! and the server share two cores, so CPU per upload is what decides.

use crate::tus::{Peer, start_rustus_with};
use crate::{Args, Series, Server, TOKEN, cpu_secs, percentile, small_put, small_upload};
use anyhow::{Context, bail};
use base64::Engine as _;
use futures::StreamExt;
use serde_json::json;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

/// One way of sending a small file.
#[derive(Clone, Copy, PartialEq)]
pub enum Way {
    /// tus creation-with-upload: `POST` with the bytes, one request.
    TusOne,
    /// tus `POST` then `PATCH`.
    TusTwo,
    /// Ferry's native API: create, part, commit.
    NativeThree,
    /// Ferry's native API: `PUT` of the whole file to its path.
    NativeOne,
}

impl Way {
    pub fn label(self) -> &'static str {
        match self {
            Way::TusOne => "tus creation-with-upload (1 request)",
            Way::TusTwo => "tus POST + PATCH (2 requests)",
            Way::NativeThree => "native create + part + commit (3 requests)",
            Way::NativeOne => "native PUT to the path (1 request)",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Way::TusOne => "tus_1req",
            Way::TusTwo => "tus_2req",
            Way::NativeThree => "native_3req",
            Way::NativeOne => "native_1req",
        }
    }
}

/// Figures of one server and way over all rounds.
#[derive(Default)]
pub struct Figures {
    pub rate: Series,
    pub p50: Series,
    pub p99: Series,
    pub cpu_ms: Series,
}

/// One tus small upload in one or two requests; its latency.
pub(crate) async fn tus_upload(
    client: &reqwest::Client,
    endpoint: &str,
    i: usize,
    data: bytes::Bytes,
    two: bool,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let name = base64::engine::general_purpose::STANDARD.encode(format!("small/{i}.bin"));
    let mut rb = client
        .post(endpoint)
        .bearer_auth(TOKEN)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", data.len())
        .header("Upload-Metadata", format!("filename {name}"));
    if !two {
        rb = rb
            .header("Content-Type", "application/offset+octet-stream")
            .body(data.clone());
    }
    let r = rb.send().await?;
    if r.status() != reqwest::StatusCode::CREATED {
        bail!(
            "creation: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    if !two {
        if r.headers()
            .get("upload-offset")
            .and_then(|v| v.to_str().ok())
            != Some(&data.len().to_string())
        {
            bail!("creation-with-upload did not take the bytes");
        }
        return Ok(t.elapsed());
    }
    let location = r
        .headers()
        .get("location")
        .context("no Location")?
        .to_str()?;
    let url = reqwest::Url::parse(endpoint)?.join(location)?;
    let r = client
        .patch(url)
        .bearer_auth(TOKEN)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", 0)
        .header("Content-Type", "application/offset+octet-stream")
        .body(data)
        .send()
        .await?;
    if r.status() != reqwest::StatusCode::NO_CONTENT {
        bail!("PATCH: {}", r.status());
    }
    Ok(t.elapsed())
}

/// `n` uploads made by `one(i)`, `concurrency` at a time, against the
/// server `pid`: rate, p50, p99 (ms) and server CPU per upload (ms).
async fn measure<F, Fut>(n: usize, concurrency: usize, pid: u32, one: F) -> anyhow::Result<[f64; 4]>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Duration>>,
{
    let cpu = cpu_secs(pid);
    let t = Instant::now();
    let lat: anyhow::Result<Vec<Duration>> = futures::stream::iter(0..n)
        .map(one)
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect();
    let el = t.elapsed();
    let mut lat = lat?;
    lat.sort();
    let cpu_ms = (cpu_secs(pid) - cpu) * 1000.0 / n as f64;
    Ok([
        n as f64 / el.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1000.0,
        percentile(&lat, 0.99).as_secs_f64() * 1000.0,
        cpu_ms,
    ])
}

/// Every server and way measured, in the order first measured.
pub type Table = Vec<(String, Way, Figures)>;

/// The figures of `server` sending the `way`, if measured.
pub fn figures<'a>(table: &'a Table, server: &str, way: Way) -> Option<&'a Figures> {
    table
        .iter()
        .find(|(s, w, _)| s == server && *w == way)
        .map(|(_, _, f)| f)
}

pub async fn suite(
    args: &Args,
    dir: &Path,
    ferry: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<()> {
    let table = run(args, dir, ferry, client).await?;
    let rows = print(args, &table);
    if let Some(path) = &args.json {
        let doc = json!({
            "suite": "small",
            "uploads": args.small,
            "size": args.small_size,
            "concurrency": args.concurrency,
            "rounds": args.small_runs,
            "rows": rows,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}

/// Runs every way on Ferry and the tus ways on rustus, `--small-runs`
/// alternating rounds.
pub async fn run(
    args: &Args,
    dir: &Path,
    ferry: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<Table> {
    let rustus = args.peers.join("rustus/bin/rustus");
    let rustus = rustus.exists().then_some(rustus);
    if rustus.is_none() {
        eprintln!(
            "rustus is not installed: run crates/bench/peers/setup.sh (its rows are skipped)"
        );
    }
    let payload = bytes::Bytes::from(vec![42u8; args.small_size]);
    let n = args.small;
    let c = args.concurrency;
    let mut table: Table = Vec::new();
    let mut record = |server: &str, way: Way, f: [f64; 4]| {
        let i = match table.iter().position(|(s, w, _)| s == server && *w == way) {
            Some(i) => i,
            None => {
                table.push((server.to_owned(), way, Figures::default()));
                table.len() - 1
            }
        };
        let fig = &mut table[i].2;
        fig.rate.push(f[0]);
        fig.p50.push(f[1]);
        fig.p99.push(f[2]);
        fig.cpu_ms.push(f[3]);
    };
    for round in 1..=args.small_runs {
        eprintln!("small uploads, round {round}/{}", args.small_runs);
        // Ferry: a fresh server for each way, so no way pays for the
        // files of another.
        for way in [Way::TusOne, Way::TusTwo, Way::NativeThree, Way::NativeOne] {
            let _ = std::process::Command::new("sync").status();
            let server = Server::start(ferry, &dir.join("small-data"))?;
            let url = server.url.clone();
            let tus = format!("{url}/tus/");
            let f = match way {
                Way::TusOne | Way::TusTwo => {
                    measure(n, c, server.pid(), |i| {
                        tus_upload(client, &tus, i, payload.clone(), way == Way::TusTwo)
                    })
                    .await?
                }
                Way::NativeThree => {
                    measure(n, c, server.pid(), |i| {
                        small_upload(client, &url, i, payload.clone())
                    })
                    .await?
                }
                Way::NativeOne => {
                    measure(n, c, server.pid(), |i| {
                        small_put(client, &url, i, payload.clone())
                    })
                    .await?
                }
            };
            record("ferry", way, f);
        }
        // rustus, with and without fsync.
        if let Some(bin) = &rustus {
            for (name, fsync) in [("rustus --force-fsync", true), ("rustus", false)] {
                for way in [Way::TusOne, Way::TusTwo] {
                    let _ = std::process::Command::new("sync").status();
                    let peer: Peer = start_rustus_with(bin, &dir.join("rustus-small"), fsync)?;
                    let f = measure(n, c, peer.pid, |i| {
                        tus_upload(
                            client,
                            &peer.endpoint,
                            i,
                            payload.clone(),
                            way == Way::TusTwo,
                        )
                    })
                    .await?;
                    record(name, way, f);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir.join("small-data"));
    let _ = std::fs::remove_dir_all(dir.join("rustus-small"));
    Ok(table)
}

/// Prints the table; its rows as JSON.
pub fn print(args: &Args, table: &Table) -> Vec<serde_json::Value> {
    let (n, c) = (args.small, args.concurrency);
    let baseline = |way: Way| figures(table, "rustus --force-fsync", way).map(|f| f.rate.median());
    println!(
        "## {n} small uploads of {} B, concurrency {c}, {} rounds (medians, min–max)",
        args.small_size, args.small_runs
    );
    println!(
        "| server | way | uploads/s | p50 ms | p99 ms | server CPU ms/upload | vs rustus --force-fsync |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for (server, way, f) in table {
        let vs = match way {
            Way::TusOne | Way::TusTwo => baseline(*way).map(|b| f.rate.median() / b),
            // The native ways against the peer's one-request tus upload.
            _ => baseline(Way::TusOne).map(|b| f.rate.median() / b),
        };
        println!(
            "| {server} | {} | {} | {} | {} | {} | {} |",
            way.label(),
            f.rate.range(0),
            f.p50.range(1),
            f.p99.range(1),
            f.cpu_ms.range(2),
            vs.map_or("—".into(), |v| format!("{v:.2}×")),
        );
        rows.push(json!({
            "server": server,
            "way": way.key(),
            "uploads_per_s": f.rate.0,
            "p50_ms": f.p50.0,
            "p99_ms": f.p99.0,
            "server_cpu_ms_per_upload": f.cpu_ms.0,
            "vs_rustus_force_fsync": vs,
        }));
    }
    rows
}
