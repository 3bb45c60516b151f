//! `ferry-bench`: measures a release `ferry` server end to end, next to
//! baselines taken in the same run on the same machine.
//!
//! Baselines: the device's raw write rate for the same size (`dd` with
//! O_DIRECT), a buffered `dd … conv=fsync`, and loopback TCP throughput.
//! Ferry: a large upload through `ferry upload` (parallel parts) and through
//! plain `curl` part PUTs; many small uploads (create + data + commit) from
//! this program's own async client; and the server's peak RSS, sampled
//! during each phase. Large-write runs alternate (raw, ferry, curl,
//! buffered, raw, …) because this kind of VM makes buffered writes into
//! idle memory erratic; figures are medians with min–max.
//!
//! Run: `cargo run --release -p ferry-bench -- --size-mib 1024 --rounds 3`
//! (it builds nothing itself: run `cargo build --release` first).

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// The ferry binary to measure.
    #[arg(long, default_value = "target/release/ferry")]
    ferry: PathBuf,
    /// Scratch directory (on the disk under test).
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
    /// Size of the large upload, MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Alternating rounds of the large-write runs.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Small uploads per run.
    #[arg(long, default_value_t = 2000)]
    small: usize,
    /// Size of each small upload, bytes.
    #[arg(long, default_value_t = 4096)]
    small_size: usize,
    /// Concurrency of the small uploads.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Concurrent large uploads for the memory check.
    #[arg(long, default_value_t = 100)]
    rss_uploads: usize,
    /// Runs of the small-upload test.
    #[arg(long, default_value_t = 3)]
    small_runs: usize,
    /// What to measure: `all`, `native` (disk baselines, CLI, curl, small
    /// uploads, memory), `tus` (Ferry's tus dialect next to peer servers)
    /// `graph` (the Graph dialect next to native range writes), `box`
    /// (the Box dialect's parallel SHA-1 parts next to native parts),
    /// `ucloud` (small files through the folder WebSocket next to native
    /// small uploads, and memory with 4 folder connections) or `deepset`
    /// (small files POSTed into one deepset session next to native small
    /// uploads) or `s3` (Ferry on `--store s3` next to a direct multipart
    /// upload into the same S3 server; needs `eval "$(scripts/s3-local.sh)"`)
    /// or `small` (4 KiB uploads through tus in one and two requests and
    /// the native API in three and one, next to rustus with and without
    /// `--force-fsync`; `--json` writes the table) or `goals` (the
    /// performance goals in one run: the small ways, a large upload
    /// through `ferry upload -j 4` and through one tus stream next to
    /// O_DIRECT `dd`, memory with `--rss-uploads` uploads, commit time by
    /// size; one table of figure, baseline, ratio and goal; `--json`)
    /// or `cluster` (small and large uploads on one node with SQLite, one
    /// node on PostgreSQL + S3, and three behind nginx; needs both local
    /// servers and `FERRY_TEST_DATABASE_URL`).
    #[arg(long, default_value = "all")]
    suite: String,
    /// Files of the UCloud folder run (and of its native comparison).
    #[arg(long, default_value_t = 10_000)]
    ucloud_files: usize,
    /// Files of the deepset comparison (one session holds up to 10,000);
    /// each is `--small-size` bytes, `--concurrency` POSTs in flight.
    #[arg(long, default_value_t = 10_000)]
    deepset_files: usize,
    /// PATCH size of the tus comparison, MiB.
    #[arg(long, default_value_t = 64)]
    tus_chunk_mib: u64,
    /// Fragment size of the Graph comparison, MiB (Graph wants multiples of
    /// 320 KiB below 60 MiB: 10 MiB = 32 × 320 KiB).
    #[arg(long, default_value_t = 10)]
    graph_fragment_mib: u64,
    /// Where `crates/bench/peers/setup.sh` installed the peer tus servers;
    /// peers that are not installed are skipped (and say so).
    #[arg(long, default_value = "crates/bench/peers")]
    peers: PathBuf,
    /// Also write the figures as JSON here (`--suite small` and `goals`).
    #[arg(long)]
    json: Option<PathBuf>,
    /// `--suite cluster`: the setups to run, of `sqlite` (one node on
    /// SQLite + disk), `pg` (one node on PostgreSQL + S3) and `pg3`
    /// (three nodes); all by default.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,pg,pg3")]
    cluster_setups: Vec<cluster::SetupKind>,
    /// `--suite cluster`: the ways small uploads are sent, of `three`
    /// (native create + part + commit), `put` (native `PUT`) and `tus`
    /// (`POST` + `PATCH`); all by default.
    #[arg(long, value_delimiter = ',', default_value = "three,put,tus")]
    cluster_ways: Vec<cluster::WayKind>,
}

mod boxapi;
mod cluster;
mod deepset;
mod goals;
mod graph;
mod s3;
mod small;
mod tus;
mod ucloud;

const TOKEN: &str = "bench-admin-token-0123456789abcdef";

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(bin: &Path, data: &Path) -> anyhow::Result<Server> {
        Server::start_with(bin, data, &[])
    }

    /// With extra environment (`FERRY_STORE=s3`, …).
    fn start_with(bin: &Path, data: &Path, env: &[(&str, String)]) -> anyhow::Result<Server> {
        let _ = std::fs::remove_dir_all(data);
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env("FERRY_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            // The setup is what `env` says: a shell's `eval "$(scripts/pg-local.sh)"`
            // (or a config file naming a database) would otherwise put the
            // SQLite baseline on PostgreSQL.
            .env_remove("FERRY_DATABASE_URL")
            .env_remove("FERRY_STORE")
            .env_remove("FERRY_CONFIG")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().context("no output")??;
        let url = first
            .strip_prefix("Ferry listening on ")
            .context("unexpected first line")?
            .to_owned();
        std::thread::spawn(move || for _ in lines {});
        Ok(Server { child, url })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples a process's resident memory every 20 ms; `stop()` returns the peak (KiB).
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<()>,
}

/// Creates a native session from `body`; its id and its first upload's id.
async fn native_session(
    client: &reqwest::Client,
    base: &str,
    body: Value,
) -> anyhow::Result<(String, String)> {
    let url = format!("{base}/v1/sessions");
    let v = api(client, reqwest::Method::POST, url, Some(body)).await?;
    let sid = v["id"].as_str().context("session id")?;
    let up = v["uploads"][0]["id"].as_str().context("upload id")?;
    Ok((sid.to_owned(), up.to_owned()))
}

/// Commits a native session.
async fn native_commit(client: &reqwest::Client, base: &str, sid: &str) -> anyhow::Result<()> {
    let url = format!("{base}/v1/sessions/{sid}/commit");
    api(client, reqwest::Method::POST, url, None).await?;
    Ok(())
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let t = cpu_ticks(pid);
    (t[0] + t[1]) / 100.0
}

/// CPU seconds of `pid` and of the children it has waited for (a server
/// whose per-connection processes come and go: their time stays counted
/// once they end).
fn cpu_secs_with_ended_children(pid: u32) -> f64 {
    cpu_ticks(pid).iter().sum::<f64>() / 100.0
}

/// utime, stime, cutime and cstime of `pid` (fields 14 to 17 of its stat).
fn cpu_ticks(pid: u32) -> [f64; 4] {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    [ticks(11), ticks(12), ticks(13), ticks(14)]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssSampler { stop, peak, handle }
    }

    fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
        self.peak.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

fn sh(cmd: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let st = Command::new("bash")
        .args(["-c", cmd])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("command failed: {cmd}");
    }
    Ok(t.elapsed())
}

/// The device's raw write rate for `src`: `dd` with O_DIRECT and a final
/// fsync into `dir`, MiB/s (the copy is removed afterwards).
fn raw_disk_mib_s(src: &Path, dir: &Path, size_mib: u64) -> anyhow::Result<f64> {
    let out = dir.join("dd.out");
    let took = sh(&format!(
        "dd if={} of={} bs=8M oflag=direct conv=fsync",
        src.display(),
        out.display()
    ))?;
    let _ = std::fs::remove_file(&out);
    Ok(size_mib as f64 / took.as_secs_f64())
}

fn drop_caches_hint() {
    let _ = Command::new("sync").status();
}

#[derive(Default)]
struct Series(Vec<f64>);

impl Series {
    fn push(&mut self, v: f64) {
        self.0.push(v);
    }
    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return f64::NAN;
        }
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    }
    fn min_max(&self) -> (f64, f64) {
        let min = self.0.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }
    /// `median (min–max)` with `decimals`.
    fn range(&self, decimals: usize) -> String {
        let (min, max) = self.min_max();
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median(),
            min,
            max,
            d = decimals
        )
    }
    fn show(&self, unit: &str) -> String {
        let (min, max) = self.min_max();
        format!(
            "{:8.1} {unit} (min {:.1}, max {:.1}, n={})",
            self.median(),
            min,
            max,
            self.0.len()
        )
    }
}

async fn api(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut rb = client.request(method, url).bearer_auth(TOKEN);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await?;
    let st = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !st.is_success() {
        bail!("{st}: {v}");
    }
    Ok(v)
}

/// Loopback TCP: one connection, `bytes` through it, MiB/s.
async fn loopback_mib_s(bytes: u64) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        anyhow::Ok(total)
    });
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let buf = vec![7u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..bytes / (1 << 20) {
        s.write_all(&buf).await?;
    }
    s.shutdown().await?;
    let got = reader.await??;
    Ok(got as f64 / 1048576.0 / t.elapsed().as_secs_f64())
}

/// One small upload: create, send its only part, commit. Returns latency.
async fn small_upload(
    client: &reqwest::Client,
    url: &str,
    i: usize,
    data: bytes::Bytes,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let s = api(
        client,
        reqwest::Method::POST,
        format!("{url}/v1/sessions"),
        Some(json!({"path": format!("small/{i}.bin"), "size": data.len()})),
    )
    .await?;
    let up = s["uploads"][0]["id"].as_str().context("upload id")?;
    let r = client
        .put(format!("{url}/v1/uploads/{up}/parts/1"))
        .bearer_auth(TOKEN)
        .body(data)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("part: {}", r.status());
    }
    let sid = s["id"].as_str().context("session id")?;
    api(
        client,
        reqwest::Method::POST,
        format!("{url}/v1/sessions/{sid}/commit"),
        None,
    )
    .await?;
    Ok(t.elapsed())
}

/// One small upload in one request: `PUT` of the whole file to its path.
async fn small_put(
    client: &reqwest::Client,
    url: &str,
    i: usize,
    data: bytes::Bytes,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let r = client
        .put(format!("{url}/v1/spaces/admin/files/small-put/{i}.bin"))
        .bearer_auth(TOKEN)
        .body(data)
        .send()
        .await?;
    if r.status() != reqwest::StatusCode::CREATED {
        bail!("put: {}", r.status());
    }
    Ok(t.elapsed())
}

/// One-request small uploads numbered `ids`, `concurrency` at a time.
async fn small_puts(
    client: &reqwest::Client,
    url: &str,
    ids: std::ops::Range<usize>,
    payload: &bytes::Bytes,
    concurrency: usize,
) -> anyhow::Result<Vec<Duration>> {
    futures::stream::iter(ids)
        .map(|i| small_put(client, url, i, payload.clone()))
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Small uploads numbered `ids`, `concurrency` at a time; the latency of
/// each.
async fn small_uploads(
    client: &reqwest::Client,
    url: &str,
    ids: std::ops::Range<usize>,
    payload: &bytes::Bytes,
    concurrency: usize,
) -> anyhow::Result<Vec<Duration>> {
    futures::stream::iter(ids)
        .map(|i| small_upload(client, url, i, payload.clone()))
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let ferry = std::fs::canonicalize(&args.ferry).with_context(|| {
        format!(
            "{} not found: run cargo build --release",
            args.ferry.display()
        )
    })?;
    let size = args.size_mib << 20;
    let src = dir.join("source.bin");
    println!(
        "# ferry-bench: {} MiB large upload, {} rounds; {} small uploads of {} B at concurrency {}",
        args.size_mib, args.rounds, args.small, args.small_size, args.concurrency
    );
    if args.suite != "ucloud" && args.suite != "small" {
        sh(&format!("head -c {size} /dev/urandom > {}", src.display()))?;
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let suite = args.suite.as_str();
    if suite == "small" {
        return small::suite(&args, &dir, &ferry, &client).await;
    }
    if suite == "goals" {
        goals::suite(&args, &dir, &ferry, &src, &client).await?;
        let _ = std::fs::remove_file(&src);
        return Ok(());
    }
    if suite == "s3" || suite == "cluster" {
        if suite == "s3" {
            s3::suite(&args, &dir, &ferry, &src, &client).await?;
        } else {
            cluster::suite(&args, &dir, &ferry, &src, &client).await?;
        }
        let _ = std::fs::remove_file(&src);
        return Ok(());
    }
    let (native_on, tus_on, graph_on, box_on, ucloud_on, deepset_on) = match suite {
        "all" => (true, true, true, true, true, true),
        "native" | "tus" | "graph" | "box" | "ucloud" | "deepset" => (
            suite == "native",
            suite == "tus",
            suite == "graph",
            suite == "box",
            suite == "ucloud",
            suite == "deepset",
        ),
        other => {
            bail!(
                "--suite must be all, goals, native, small, tus, graph, box, ucloud, deepset, s3 or cluster; got {other:?}"
            )
        }
    };
    if native_on {
        native(&args, &dir, &ferry, &src, &client).await?;
    }
    if tus_on {
        tus_suite(&args, &dir, &ferry, &src, &client).await?;
    }
    if graph_on {
        graph_suite(&args, &dir, &ferry, &src, &client).await?;
    }
    if box_on {
        box_suite(&args, &dir, &ferry, &src, &client).await?;
    }
    if ucloud_on {
        ucloud_suite(&args, &dir, &ferry, &client).await?;
    }
    if deepset_on {
        deepset_suite(&args, &dir, &ferry, &client).await?;
    }
    let _ = std::fs::remove_file(&src);
    Ok(())
}

/// Disk baselines, the CLI and curl, small uploads, memory.
async fn native(
    args: &Args,
    dir: &Path,
    ferry: &Path,
    src: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<()> {
    let size = args.size_mib << 20;
    // curl sends parts from files (`-T`), so it streams them without
    // buffering; split once, before any timing.
    let parts_dir = dir.join("parts");
    let _ = std::fs::remove_dir_all(&parts_dir);
    std::fs::create_dir_all(&parts_dir)?;
    sh(&format!(
        "split -b 16M -d -a 4 {} {}/p",
        src.display(),
        parts_dir.display()
    ))?;

    let tcp = loopback_mib_s(4 << 30).await?;
    let (mut raw, mut buffered, mut via_cli, mut via_curl) = (
        Series::default(),
        Series::default(),
        Series::default(),
        Series::default(),
    );
    let (mut rss_cli, mut rss_curl) = (Series::default(), Series::default());
    let out = dir.join("dd.out");
    let data = dir.join("data");
    let mib = |d: Duration| args.size_mib as f64 / d.as_secs_f64();
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}", args.rounds);
        drop_caches_hint();
        raw.push(raw_disk_mib_s(src, dir, args.size_mib)?);

        // ferry upload, 4 parallel parts.
        let server = Server::start(ferry, &data)?;
        let sampler = RssSampler::start(server.pid());
        let el = cli_upload(ferry, dir, src, &server)?;
        rss_cli.push(sampler.stop());
        via_cli.push(mib(el));
        drop(server);

        // curl: one session, 16 MiB parts, 4 at a time.
        let server = Server::start(ferry, &data)?;
        let s = api(
            client,
            reqwest::Method::POST,
            format!("{}/v1/sessions", server.url),
            Some(json!({"path": "curl.bin", "size": size, "part_size": 16 << 20})),
        )
        .await?;
        let up = s["uploads"][0]["id"].as_str().unwrap().to_owned();
        let sid = s["id"].as_str().unwrap().to_owned();
        let parts = size.div_ceil(16 << 20);
        let sampler = RssSampler::start(server.pid());
        let t = Instant::now();
        sh(&format!(
            "seq 1 {parts} | xargs -P4 -I{{}} sh -c 'curl -sf -o /dev/null -T {dir}/p$(printf %04d $(({{}}-1))) -H \"Authorization: Bearer {TOKEN}\" {url}/v1/uploads/{up}/parts/{{}}'",
            dir = parts_dir.display(),
            url = server.url
        ))?;
        api(
            client,
            reqwest::Method::POST,
            format!("{}/v1/sessions/{sid}/commit", server.url),
            None,
        )
        .await?;
        let el = t.elapsed();
        rss_curl.push(sampler.stop());
        via_curl.push(mib(el));
        drop(server);

        buffered.push(mib(sh(&format!(
            "dd if={} of={} bs=8M conv=fsync",
            src.display(),
            out.display()
        ))?));
        let _ = std::fs::remove_file(&out);
    }

    // Small uploads: in three requests, and in one PUT, run after run
    // (A/B on the same server build and disk).
    let mut rates = Series::default();
    let (mut p50s, mut p99s, mut rss_small) =
        (Series::default(), Series::default(), Series::default());
    let (mut put_rates, mut put_p50s, mut put_p99s) =
        (Series::default(), Series::default(), Series::default());
    let payload = bytes::Bytes::from(vec![42u8; args.small_size]);
    for run in 1..=args.small_runs {
        eprintln!("small uploads, run {run}/{}", args.small_runs);
        let server = Server::start(ferry, &data)?;
        let sampler = RssSampler::start(server.pid());
        let t = Instant::now();
        let url = server.url.clone();
        let mut lat =
            small_uploads(client, &url, 0..args.small, &payload, args.concurrency).await?;
        let el = t.elapsed();
        rss_small.push(sampler.stop());
        lat.sort();
        rates.push(args.small as f64 / el.as_secs_f64());
        p50s.push(percentile(&lat, 0.5).as_secs_f64() * 1000.0);
        p99s.push(percentile(&lat, 0.99).as_secs_f64() * 1000.0);

        let t = Instant::now();
        let mut lat = small_puts(client, &url, 0..args.small, &payload, args.concurrency).await?;
        let el = t.elapsed();
        lat.sort();
        put_rates.push(args.small as f64 / el.as_secs_f64());
        put_p50s.push(percentile(&lat, 0.5).as_secs_f64() * 1000.0);
        put_p99s.push(percentile(&lat, 0.99).as_secs_f64() * 1000.0);
    }

    // Memory with many concurrent large uploads (16 MiB each, streamed).
    eprintln!("{} concurrent uploads", args.rss_uploads);
    let server = Server::start(ferry, &data)?;
    let (many_rss, many_el) = many_uploads(client, &server, args.rss_uploads).await?;
    drop(server);

    let r = raw.median();
    println!();
    println!("## baselines (same run)");
    println!(
        "raw disk, dd O_DIRECT bs=8M conv=fsync : {}",
        raw.show("MiB/s")
    );
    println!(
        "buffered dd bs=8M conv=fsync          : {}",
        buffered.show("MiB/s")
    );
    println!("loopback TCP, one connection           : {tcp:8.1} MiB/s");
    println!("## {} MiB upload", args.size_mib);
    println!(
        "ferry upload -j 4                      : {}  = {:.0}% of O_DIRECT; server peak RSS {}",
        via_cli.show("MiB/s"),
        100.0 * via_cli.median() / r,
        rss_cli.show("MiB")
    );
    println!(
        "curl part PUTs, 16 MiB, 4 at a time    : {}  = {:.0}% of O_DIRECT; server peak RSS {}",
        via_curl.show("MiB/s"),
        100.0 * via_curl.median() / r,
        rss_curl.show("MiB")
    );
    println!(
        "## {} small uploads of {} B (create + part + commit), concurrency {}",
        args.small, args.small_size, args.concurrency
    );
    println!(
        "rate                                   : {}",
        rates.show("uploads/s")
    );
    println!(
        "latency p50                            : {}",
        p50s.show("ms")
    );
    println!(
        "latency p99                            : {}",
        p99s.show("ms")
    );
    println!(
        "server peak RSS                        : {}",
        rss_small.show("MiB")
    );
    println!(
        "## {} small uploads of {} B in one request (PUT to the path), concurrency {}",
        args.small, args.small_size, args.concurrency
    );
    println!(
        "rate                                   : {}  = {:.2}× the three-request rate",
        put_rates.show("uploads/s"),
        put_rates.median() / rates.median()
    );
    println!(
        "latency p50                            : {}",
        put_p50s.show("ms")
    );
    println!(
        "latency p99                            : {}",
        put_p99s.show("ms")
    );
    println!("## {} concurrent uploads of 16 MiB", args.rss_uploads);
    println!(
        "server peak RSS                        : {many_rss:8.1} MiB ({:.1} MiB/s overall)",
        (args.rss_uploads as u64 * 16) as f64 / many_el.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&parts_dir);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

/// `ferry upload -j 4` of `src` to `server`: the time it took.
fn cli_upload(ferry: &Path, dir: &Path, src: &Path, server: &Server) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let st = Command::new(ferry)
        .args(["upload", "-q", "-j", "4", "--state-dir"])
        .arg(dir.join("state"))
        .arg(src)
        .arg("admin/big.bin")
        .env("FERRY_URL", &server.url)
        .env("FERRY_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .status()?;
    let el = t.elapsed();
    if !st.success() {
        bail!("ferry upload failed");
    }
    Ok(el)
}

/// Peak server RSS (MiB) and the time while `n` uploads of 16 MiB, each
/// one streamed part, run at once.
async fn many_uploads(
    client: &reqwest::Client,
    server: &Server,
    n: usize,
) -> anyhow::Result<(f64, Duration)> {
    let each: u64 = 16 << 20;
    let chunk = bytes::Bytes::from(vec![1u8; 1 << 20]);
    let mut ups = Vec::new();
    for i in 0..n {
        let body = json!({"path": format!("many/{i}.bin"), "size": each, "part_size": each});
        ups.push(native_session(client, &server.url, body).await?.1);
    }
    let sampler = RssSampler::start(server.pid());
    let t = Instant::now();
    futures::future::try_join_all(ups.iter().map(|up| {
        let chunk = chunk.clone();
        let body =
            futures::stream::iter((0..16).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
        let client = client.clone();
        let url = format!("{}/v1/uploads/{up}/parts/1", server.url);
        async move {
            let r = client
                .put(url)
                .bearer_auth(TOKEN)
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("{}", r.status());
            }
            anyhow::Ok(())
        }
    }))
    .await?;
    let el = t.elapsed();
    Ok((sampler.stop(), el))
}

/// Ferry's tus dialect next to @tus/server and rustus, same client, same
/// file, alternating rounds, with the raw disk rate of each round.
async fn tus_suite(
    args: &Args,
    dir: &Path,
    ferry: &Path,
    src: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<()> {
    let peers_dir = std::fs::canonicalize(&args.peers).unwrap_or_else(|_| args.peers.clone());
    let node = peers_dir.join("tus-node/server.mjs");
    let node_ok = peers_dir.join("tus-node/node_modules/@tus/server").exists();
    let rustus = peers_dir.join("rustus/bin/rustus");
    let peers = tus::Peers {
        node_script: node_ok.then_some(node),
        rustus: rustus.exists().then_some(rustus),
    };
    if peers.node_script.is_none() {
        eprintln!("@tus/server is not installed: run crates/bench/peers/setup.sh (skipped)");
    }
    if peers.rustus.is_none() {
        eprintln!("rustus is not installed: run crates/bench/peers/setup.sh (skipped)");
    }
    let data = dir.join("data");
    let start_ferry = || {
        let server = Server::start(ferry, &data)?;
        let (url, pid) = (server.url.clone(), server.pid());
        Ok(tus::ferry(&url, pid, server))
    };
    let mut raw = Series::default();
    let chunk = args.tus_chunk_mib << 20;
    let mut results: Vec<(&'static str, tus::Figures)> = Vec::new();
    for round in 1..=args.rounds {
        raw.push(raw_disk_mib_s(src, dir, args.size_mib)?);
        eprintln!("tus comparison, round {round}/{}", args.rounds);
        for (name, f) in tus::compare(
            client,
            src,
            chunk,
            1,
            &dir.join("peers"),
            &peers,
            start_ferry,
        )
        .await?
        {
            match results.iter_mut().find(|(n, _)| *n == name) {
                Some((_, all)) => {
                    all.rate.0.extend(f.rate.0);
                    all.rss.0.extend(f.rss.0);
                }
                None => results.push((name, f)),
            }
        }
    }
    println!();
    println!(
        "## tus: {} MiB in {} MiB PATCHes, one client for every server",
        args.size_mib, args.tus_chunk_mib
    );
    println!(
        "raw disk, dd O_DIRECT (same rounds)    : {}",
        raw.show("MiB/s")
    );
    for (name, f) in &results {
        println!(
            "{name:<39}: {}; peak RSS {}",
            f.rate.show("MiB/s"),
            f.rss.show("MiB")
        );
    }
    let ferry_rate = results
        .iter()
        .find(|(n, _)| *n == "ferry /tus")
        .map(|(_, f)| f.rate.median());
    for (name, f) in results.iter().filter(|(n, _)| *n != "ferry /tus") {
        if let Some(r) = ferry_rate {
            println!("ferry / {name:<31}: {:.2}x", r / f.rate.median());
        }
    }
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(dir.join("peers"));
    Ok(())
}

/// One upload of a comparison: (server URL, round) → its duration.
type Upload<'a> =
    Box<dyn Fn(String, usize) -> futures::future::BoxFuture<'a, anyhow::Result<Duration>> + 'a>;

/// Throughput and server CPU per GiB of one side of a comparison.
#[derive(Default)]
struct Side {
    rate: Series,
    cpu: Series,
}

impl Side {
    async fn run(
        &mut self,
        pid: u32,
        size_mib: u64,
        upload: impl Future<Output = anyhow::Result<Duration>>,
    ) -> anyhow::Result<()> {
        let cpu = cpu_secs(pid);
        let d = upload.await?;
        self.rate.push(size_mib as f64 / d.as_secs_f64());
        self.cpu
            .push((cpu_secs(pid) - cpu) / (size_mib as f64 / 1024.0));
        Ok(())
    }
}

/// A dialect next to the native API on the same server, in rounds that
/// alternate which goes first (so neither always meets a warm cache), with
/// the raw disk rate measured in the same rounds. `labels`: the native
/// line, the dialect line, and the dialect's short name.
#[allow(clippy::too_many_arguments)]
async fn dialect_vs_native(
    args: &Args,
    dir: &Path,
    ferry: &Path,
    src: &Path,
    title: String,
    labels: [&str; 3],
    native_upload: Upload<'_>,
    dialect_upload: Upload<'_>,
) -> anyhow::Result<()> {
    let data = dir.join("data");
    let (mut raw, mut native, mut dialect) = (Series::default(), Side::default(), Side::default());
    for round in 1..=args.rounds {
        eprintln!("{} comparison, round {round}/{}", labels[2], args.rounds);
        raw.push(raw_disk_mib_s(src, dir, args.size_mib)?);
        let server = Server::start(ferry, &data)?;
        let pid = server.pid();
        for native_turn in [round % 2 == 1, round % 2 == 0] {
            let url = server.url.clone();
            if native_turn {
                native
                    .run(pid, args.size_mib, native_upload(url, round))
                    .await?;
            } else {
                dialect
                    .run(pid, args.size_mib, dialect_upload(url, round))
                    .await?;
            }
        }
        drop(server);
    }
    let [native_label, dialect_label, short] = labels;
    println!();
    println!("{title}");
    println!(
        "raw disk, dd O_DIRECT (same rounds)    : {}",
        raw.show("MiB/s")
    );
    println!("{native_label:<39}: {}", native.rate.show("MiB/s"));
    println!("{dialect_label:<39}: {}", dialect.rate.show("MiB/s"));
    println!(
        "{:<39}: {:.2}x",
        format!("{short} / native"),
        dialect.rate.median() / native.rate.median()
    );
    println!(
        "{:<39}: {} / {}",
        format!("server CPU per GiB, native / {short}"),
        native.cpu.show("s"),
        dialect.cpu.show("s")
    );
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

/// The Graph dialect's sequential fragments next to the same fragments as
/// native range writes.
async fn graph_suite(
    args: &Args,
    dir: &Path,
    ferry: &Path,
    src: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<()> {
    let fragment = args.graph_fragment_mib << 20;
    dialect_vs_native(
        args,
        dir,
        ferry,
        src,
        format!(
            "## graph: {} MiB in sequential {} MiB fragments, one client",
            args.size_mib, args.graph_fragment_mib
        ),
        [
            "native Content-Range writes + commit",
            "graph uploadUrl fragments",
            "graph",
        ],
        Box::new(move |url, round| {
            Box::pin(async move {
                graph::native_upload(client, &url, src, fragment, &format!("n{round}.bin")).await
            })
        }),
        Box::new(move |url, round| {
            Box::pin(async move {
                graph::graph_upload(client, &url, src, fragment, &format!("g{round}.bin")).await
            })
        }),
    )
    .await
}

/// The Box dialect's parallel SHA-1 parts next to the same parts through the
/// native API.
async fn box_suite(
    args: &Args,
    dir: &Path,
    ferry: &Path,
    src: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<()> {
    let digests = &boxapi::digests(src)?;
    dialect_vs_native(
        args,
        dir,
        ferry,
        src,
        format!(
            "## box: {} MiB in {} MiB parts, 4 in flight, SHA-1 per part, one client",
            args.size_mib,
            boxapi::PART >> 20
        ),
        [
            "native parts + Content-Digest + commit",
            "box parts + digest + commit (SHA-1)",
            "box",
        ],
        Box::new(move |url, round| {
            Box::pin(async move {
                boxapi::native_upload(client, &url, src, digests, &format!("b{round}.bin")).await
            })
        }),
        Box::new(move |url, round| {
            Box::pin(async move {
                boxapi::box_upload(client, &url, src, digests, &format!("b{round}.bin")).await
            })
        }),
    )
    .await
}

/// UCloud: small files through the folder WebSocket (4 connections) next
/// to native small uploads on the same server, alternating which goes
/// first; then peak RSS while 4 folder connections stream large files.
async fn ucloud_suite(
    args: &Args,
    dir: &Path,
    ferry: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<()> {
    let data = dir.join("data");
    let n = args.ucloud_files;
    let size = args.small_size;
    let (mut native_rate, mut folder_rate, mut rss_folder) =
        (Series::default(), Series::default(), Series::default());
    let payload = bytes::Bytes::from(vec![42u8; size]);
    for run in 1..=args.small_runs {
        eprintln!("ucloud comparison, run {run}/{}", args.small_runs);
        let server = Server::start(ferry, &data)?;
        let url = server.url.clone();
        let native_run = async {
            let t = Instant::now();
            let ids = run * n..(run + 1) * n;
            small_uploads(client, &url, ids, &payload, args.concurrency).await?;
            anyhow::Ok(n as f64 / t.elapsed().as_secs_f64())
        };
        let folder_run = async {
            let sampler = RssSampler::start(server.pid());
            let el = ucloud::folder_upload(client, &url, &format!("u{run}"), n, size, size).await;
            let rss = sampler.stop();
            anyhow::Ok((n as f64 / el?.as_secs_f64(), rss))
        };
        if run % 2 == 1 {
            native_rate.push(native_run.await?);
            let (r, rss) = folder_run.await?;
            folder_rate.push(r);
            rss_folder.push(rss);
        } else {
            let (r, rss) = folder_run.await?;
            folder_rate.push(r);
            rss_folder.push(rss);
            native_rate.push(native_run.await?);
        }
        drop(server);
    }
    // Memory: 4 connections, each with 8 files of 32 MiB in 1 MiB frames
    // (1 GiB in all), from a client that sends as fast as it can.
    eprintln!("ucloud memory run");
    let server = Server::start(ferry, &data)?;
    let sampler = RssSampler::start(server.pid());
    let big = ucloud::folder_upload(client, &server.url, "big", 32, 32 << 20, 1 << 20).await?;
    let rss_big = sampler.stop();
    drop(server);
    println!();
    println!(
        "## ucloud: {n} files of {size} B through the folder WebSocket ({} connections of one session) vs native small uploads (concurrency {})",
        ucloud::CONNECTIONS,
        args.concurrency
    );
    println!(
        "native small uploads (create+part+commit): {}",
        native_rate.show("files/s")
    );
    println!(
        "ucloud folder WebSocket                  : {}",
        folder_rate.show("files/s")
    );
    println!(
        "folder / native                          : {:.2}x",
        folder_rate.median() / native_rate.median()
    );
    println!(
        "peak RSS, folder run                     : {}",
        rss_folder.show("MiB")
    );
    println!(
        "peak RSS, 4 folder connections x 8 x 32 MiB: {rss_big:.1} MiB ({:.0} MiB/s)",
        1024.0 / big.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

/// Small files through one deepset session (POST form per file, then the
/// close that commits them all) next to native small uploads (create +
/// part + commit each), same server, alternating which goes first.
async fn deepset_suite(
    args: &Args,
    dir: &Path,
    ferry: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<()> {
    let data = dir.join("data");
    let n = args.deepset_files;
    let (mut native, mut posts, mut total, mut close) = (
        Series::default(),
        Series::default(),
        Series::default(),
        Series::default(),
    );
    let payload = bytes::Bytes::from(vec![42u8; args.small_size]);
    for run in 1..=args.small_runs {
        eprintln!("deepset comparison, run {run}/{}", args.small_runs);
        let server = Server::start(ferry, &data)?;
        let url = server.url.clone();
        let native_run = || async {
            let t = Instant::now();
            small_uploads(client, &url, 0..n, &payload, args.concurrency).await?;
            Ok::<_, anyhow::Error>(n as f64 / t.elapsed().as_secs_f64())
        };
        let deepset_run =
            || deepset::session_run(client, &url, n, args.small_size, args.concurrency);
        let d = if run % 2 == 1 {
            native.push(native_run().await?);
            deepset_run().await?
        } else {
            let d = deepset_run().await?;
            native.push(native_run().await?);
            d
        };
        posts.push(d.posts);
        total.push(d.total);
        close.push(d.close.as_secs_f64());
        drop(server);
    }
    println!();
    println!(
        "## deepset: {n} files of {} B, {} in flight, one client",
        args.small_size, args.concurrency
    );
    println!(
        "native small uploads (create+part+commit): {}",
        native.show("files/s")
    );
    println!(
        "deepset POSTs into one session            : {}",
        posts.show("files/s")
    );
    println!(
        "deepset POSTs + close (atomic commit)     : {}",
        total.show("files/s")
    );
    println!(
        "deepset close of {n} files                : {}",
        close.show("s")
    );
    println!(
        "deepset (with close) / native             : {:.2}x",
        total.median() / native.median()
    );
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
