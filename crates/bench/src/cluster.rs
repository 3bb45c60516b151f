//! `--suite cluster`: the same work on three setups, in one run —
//! one node on SQLite and the local disk, one node on PostgreSQL and S3,
//! and three nodes on PostgreSQL and S3 behind nginx (round-robin; the
//! client takes turns itself when nginx is not installed). For each: small
//! uploads three ways (native create + part + commit, native `PUT`, tus
//! `POST` + `PATCH`) at two concurrencies with p50/p99,
//! Ferry's CPU per upload (every node), PostgreSQL's CPU per upload (every
//! `postgres` process), the S3 server's (`weed`, when it runs here) and
//! PostgreSQL statements per upload (from
//! `pg_stat_statements`, when the server preloads it, as
//! `scripts/pg-local.sh` does); then, once every setup's small rounds are
//! done, one large upload in parallel parts on each, next to the same
//! file sent straight into the bucket. Each setup is measured once what
//! came before it is on disk (`sync`).
//!
//! Needs `FERRY_TEST_DATABASE_URL` (a PostgreSQL server the bench may
//! create databases on: `scripts/pg-local.sh`) and the S3 environment of
//! `scripts/s3-local.sh`.

use crate::small::{Way, tus_upload};
use crate::{
    Args, Server, cpu_secs, cpu_secs_with_ended_children, percentile, small_puts, small_uploads,
};
use anyhow::{Context, bail};
use futures::StreamExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A setup `--cluster-setups` names.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SetupKind {
    Sqlite,
    Pg,
    Pg3,
}

/// A way of sending small uploads `--cluster-ways` names.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WayKind {
    Three,
    Put,
    Tus,
}

impl WayKind {
    fn of(way: Way) -> Option<WayKind> {
        match way {
            Way::NativeThree => Some(WayKind::Three),
            Way::NativeOne => Some(WayKind::Put),
            Way::TusTwo => Some(WayKind::Tus),
            Way::TusOne => None,
        }
    }
}

/// The small-upload rows of each setup: concurrency and way.
const WAYS: [(usize, Way); 6] = [
    (16, Way::NativeThree),
    (64, Way::NativeThree),
    (16, Way::NativeOne),
    (64, Way::NativeOne),
    (16, Way::TusTwo),
    (64, Way::TusTwo),
];

/// The setups, in the order each round runs them: kind, name, nodes, and
/// whether on PostgreSQL + S3.
const SETUPS: [(SetupKind, &str, usize, bool); 3] = [
    (SetupKind::Sqlite, "1 node, SQLite + disk", 1, false),
    (SetupKind::Pg, "1 node, PostgreSQL + S3", 1, true),
    (SetupKind::Pg3, "3 nodes, PostgreSQL + S3", 3, true),
];

/// Waits until what was written is on disk (`sync`), so that no setup is
/// measured while an earlier one's writes are still written back.
fn settle() {
    if let Err(e) = Command::new("sync").status() {
        eprintln!("cluster suite: sync: {e}");
    }
}

/// What one setup is: its nodes, where clients send requests, and the
/// database it uses (none for SQLite).
struct Setup {
    name: &'static str,
    nodes: Vec<Server>,
    /// The load balancer's URL, or every node's (the client takes turns).
    urls: Vec<String>,
    database: Option<String>,
    nginx: Option<Nginx>,
}

/// An nginx in front of the nodes, stopped when dropped.
struct Nginx {
    pid_file: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// Runs `sql` on the database at `url` with `psql`; its output.
fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql])
        .stderr(Stdio::piped())
        .output()
        .context("psql not found (it comes with PostgreSQL)")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A fresh database on the server at `server`; its URL.
fn create_database(server: &str) -> anyhow::Result<String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let name = format!("ferry_bench_{nanos}");
    psql(server, &format!("CREATE DATABASE {name}"))?;
    let (base, _) = server.rsplit_once('/').context("a URL ending in /<db>")?;
    Ok(format!("{base}/{name}"))
}

/// Statements the database has run (`pg_stat_statements`), if it counts.
fn statements(db: &str) -> Option<u64> {
    psql(
        db,
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .ok()?
    .parse()
    .ok()
}

/// CPU seconds of every process named `comm` on this machine, with the
/// children they have waited for (PostgreSQL's ended connections).
fn cpu_of(comm: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .map(cpu_secs_with_ended_children)
        .sum()
}

fn start_nginx(dir: &Path, nodes: &[Server]) -> anyhow::Result<Option<(Nginx, String)>> {
    if Command::new("nginx")
        .arg("-v")
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("nginx is not installed: the client takes turns among the nodes itself");
        return Ok(None);
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    let root = dir.join("nginx");
    std::fs::create_dir_all(&root)?;
    let upstream: String = nodes
        .iter()
        .map(|n| format!("    server {};\n", n.url.trim_start_matches("http://")))
        .collect();
    let r = root.display();
    let conf = format!(
        "daemon on;\npid {r}/nginx.pid;\nerror_log {r}/error.log;\nworker_processes 1;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {r}/body;\n  proxy_temp_path {r}/proxy;\n\
         \x20 upstream ferry {{\n{upstream}    keepalive 64;\n  }}\n\
         \x20 server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 0;\n\
         \x20   proxy_request_buffering off;\n    proxy_buffering off;\n    proxy_http_version 1.1;\n\
         \x20   location / {{\n      proxy_pass http://ferry;\n      proxy_set_header Host $http_host;\n\
         \x20     proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
    );
    let path = root.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let st = Command::new("nginx")
        .arg("-c")
        .arg(&path)
        .stderr(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("nginx did not start (see {r}/error.log)");
    }
    Ok(Some((
        Nginx {
            pid_file: root.join("nginx.pid"),
        },
        format!("http://127.0.0.1:{port}"),
    )))
}

async fn setup(
    name: &'static str,
    dir: &Path,
    ferry: &Path,
    count: usize,
    pg_server: Option<&str>,
    s3: &crate::s3::Bucket,
) -> anyhow::Result<Setup> {
    let database = pg_server.map(create_database).transpose()?;
    let mut env = Vec::new();
    if let Some(db) = &database {
        // Counting starts now (the server must preload the module).
        let _ = psql(db, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
        env.extend([
            ("FERRY_DATABASE_URL", db.clone()),
            ("FERRY_STORE", "s3".to_owned()),
            ("FERRY_S3_ENDPOINT", s3.endpoint.clone()),
            ("FERRY_S3_BUCKET", s3.name.clone()),
            (
                "FERRY_S3_PREFIX",
                format!("bench-{name}-{}/", std::process::id()),
            ),
        ]);
    }
    let mut nodes = Vec::new();
    for i in 0..count {
        nodes.push(Server::start_with(
            ferry,
            &dir.join(format!("{name}-{i}")),
            &env,
        )?);
    }
    let (nginx, urls) = match count {
        1 => (None, vec![nodes[0].url.clone()]),
        _ => match start_nginx(dir, &nodes)? {
            Some((n, url)) => (Some(n), vec![url]),
            None => (None, nodes.iter().map(|n| n.url.clone()).collect()),
        },
    };
    Ok(Setup {
        name,
        nodes,
        urls,
        database,
        nginx,
    })
}

/// One row of the table.
struct Row {
    setup: &'static str,
    concurrency: usize,
    /// How each file is sent.
    way: Way,
    per_s: f64,
    p50: Duration,
    p99: Duration,
    ferry_ms: f64,
    pg_ms: Option<f64>,
    /// CPU of the S3 server (SeaweedFS, `weed`) on this machine.
    s3_ms: Option<f64>,
    statements: Option<f64>,
}

/// Small uploads numbered `ids`, each sent the `way`, `concurrency` at a
/// time; the latency of each.
async fn small_batch(
    way: Way,
    client: &reqwest::Client,
    url: &str,
    ids: std::ops::Range<usize>,
    payload: &bytes::Bytes,
    concurrency: usize,
) -> anyhow::Result<Vec<Duration>> {
    match way {
        Way::NativeOne => small_puts(client, url, ids, payload, concurrency).await,
        Way::NativeThree => small_uploads(client, url, ids, payload, concurrency).await,
        Way::TusOne | Way::TusTwo => {
            let endpoint = format!("{url}/tus/");
            futures::stream::iter(ids)
                .map(|i| tus_upload(client, &endpoint, i, payload.clone(), way == Way::TusTwo))
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect()
        }
    }
}

async fn small_row(
    s: &Setup,
    client: &reqwest::Client,
    args: &Args,
    (concurrency, way): (usize, Way),
    first: usize,
) -> anyhow::Result<Row> {
    let payload = bytes::Bytes::from(vec![7u8; args.small_size]);
    let n = args.small;
    // Warm-up: connections, caches, the first transactions.
    let per = 50usize.div_ceil(s.urls.len());
    for (i, url) in s.urls.iter().enumerate() {
        small_batch(
            way,
            client,
            url,
            first + i * per..first + (i + 1) * per,
            &payload,
            8,
        )
        .await?;
    }
    let first = first + 50 + s.urls.len();
    let ferry_cpu = || s.nodes.iter().map(|n| cpu_secs(n.pid())).sum::<f64>();
    let (f0, p0, w0) = (ferry_cpu(), cpu_of("postgres"), cpu_of("weed"));
    let q0 = s.database.as_deref().and_then(statements);
    let t = Instant::now();
    // Each URL (the balancer, or each node in turn) gets its share.
    let share = n.div_ceil(s.urls.len());
    let runs = s.urls.iter().enumerate().map(|(i, url)| {
        let ids = first + i * share..first + ((i + 1) * share).min(n);
        small_batch(
            way,
            client,
            url,
            ids,
            &payload,
            concurrency.div_ceil(s.urls.len()),
        )
    });
    let mut lat: Vec<Duration> = futures::future::try_join_all(runs)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let took = t.elapsed().as_secs_f64();
    let (f1, p1, w1) = (ferry_cpu(), cpu_of("postgres"), cpu_of("weed"));
    let q1 = s.database.as_deref().and_then(statements);
    lat.sort();
    let done = lat.len() as f64;
    let pg = s.database.is_some();
    Ok(Row {
        setup: s.name,
        way,
        concurrency,
        per_s: done / took,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        ferry_ms: (f1 - f0) * 1000.0 / done,
        pg_ms: pg.then(|| (p1 - p0) * 1000.0 / done),
        s3_ms: pg.then(|| (w1 - w0) * 1000.0 / done),
        statements: q0.zip(q1).map(|(a, b)| (b - a) as f64 / done),
    })
}

pub async fn suite(
    args: &Args,
    dir: &Path,
    ferry: &Path,
    src: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<()> {
    let pg = std::env::var("FERRY_TEST_DATABASE_URL").context(
        "FERRY_TEST_DATABASE_URL is not set: eval \"$(scripts/pg-local.sh)\" and set it to \
         postgres://postgres@127.0.0.1:15432/postgres",
    )?;
    let s3 = crate::s3::bucket().await?;
    // The S3 server alone: small objects put straight into the bucket, the
    // ceiling of a setup that keeps each small file as one object there.
    eprintln!("cluster suite: PutObject straight into the bucket");
    let mut direct = Vec::new();
    for c in [16, 64] {
        let w0 = cpu_of("weed");
        let per_s = crate::s3::direct_small(&s3, args.small, args.small_size, c).await?;
        let ms = (cpu_of("weed") - w0) * 1000.0 / args.small as f64;
        direct.push((c, per_s, ms));
    }
    // Rounds (`--small-runs`): every setup once per round, in turn, so a
    // drift of the machine falls on all of them alike; each figure is the
    // median of its rounds, and each ratio the median of the rounds'.
    // (Each setup runs alone. Running each way on every setup back to
    // back, all of them started, made SQLite + disk the slower by a
    // quarter to a third, its Ferry CPU per upload 1.1–1.3 → 1.3–2.1 ms,
    // with the other setups' servers at work in the background: a
    // baseline that flattered the others.)
    let rounds = args.small_runs.max(1);
    let mut rows: Vec<(usize, Row)> = Vec::new();
    let mut large = Vec::new();
    // The large upload's ceiling on S3: the same file sent straight into
    // the bucket, as one multipart upload of the same parts.
    let large_direct = match args.size_mib {
        0 => None,
        _ => {
            eprintln!(
                "cluster suite: the large file as a multipart upload straight into the bucket"
            );
            let key = format!("bench-direct/{}", std::process::id());
            let t = crate::s3::direct(&s3, src, &key).await?;
            Some(args.size_mib as f64 / t.as_secs_f64())
        }
    };
    let chosen = || {
        SETUPS
            .into_iter()
            .filter(|(kind, ..)| args.cluster_setups.contains(kind))
    };
    for round in 0..rounds {
        for (_, name, count, on_pg) in chosen() {
            eprintln!("cluster suite: {name}, round {}/{rounds}", round + 1);
            let s = setup(name, dir, ferry, count, on_pg.then_some(pg.as_str()), &s3).await?;
            if s.nginx.is_some() {
                eprintln!("  behind nginx at {}", s.urls[0]);
            }
            // What an earlier setup wrote is on disk before this one is
            // measured: a gigabyte still being written back (the large
            // upload, once run in the rounds) made the next setup's
            // small uploads up to a third slower, whichever it was.
            settle();
            for (i, how) in WAYS.into_iter().enumerate() {
                if !WayKind::of(how.1).is_some_and(|w| args.cluster_ways.contains(&w)) {
                    continue;
                }
                let first = (round * WAYS.len() + i + 1) * 1_000_000;
                rows.push((round, small_row(&s, client, args, how, first).await?));
            }
            drop(s);
        }
    }
    // The large upload, once per setup, after every small run.
    if args.size_mib > 0 {
        for (_, name, count, on_pg) in chosen() {
            eprintln!("cluster suite: {name}, the large upload");
            let s = setup(name, dir, ferry, count, on_pg.then_some(pg.as_str()), &s3).await?;
            settle();
            let t = crate::s3::native_parts(client, &s.urls[0], src, "big.bin").await?;
            large.push((name, args.size_mib as f64 / t.as_secs_f64()));
            drop(s);
        }
    }
    println!(
        "\n## Small uploads of {} B, {} per run, {rounds} round(s), medians (min–max of uploads/s): native create + part + commit (3 requests), native PUT to the path (1), tus POST + PATCH (2)",
        args.small_size, args.small
    );
    println!(
        "| setup | way | c | uploads/s | p50 ms | p99 ms | Ferry CPU ms/upload | PostgreSQL CPU ms/upload | S3 server CPU ms/upload | PostgreSQL statements/upload |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    // The rows of one setup, way and concurrency, over the rounds.
    let of = |name: &'static str, c: usize, way: Way| {
        rows.iter()
            .filter(move |(_, r)| r.setup == name && r.concurrency == c && r.way == way)
    };
    let series = |v: &mut dyn Iterator<Item = f64>| {
        let mut s = crate::Series::default();
        v.for_each(|x| s.push(x));
        s
    };
    let opt = |s: crate::Series| {
        let m = s.median();
        if m.is_nan() {
            "—".to_owned()
        } else {
            format!("{m:.2}")
        }
    };
    let mut seen = Vec::new();
    for (_, r) in &rows {
        let key = (r.setup, r.concurrency, r.way);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let all: Vec<&Row> = of(r.setup, r.concurrency, r.way).map(|(_, r)| r).collect();
        let per_s = series(&mut all.iter().map(|r| r.per_s));
        let (lo, hi) = per_s.min_max();
        let spread = if all.len() > 1 {
            format!(" ({lo:.0}–{hi:.0})")
        } else {
            String::new()
        };
        let ms =
            |f: &dyn Fn(&Row) -> Option<f64>| opt(series(&mut all.iter().filter_map(|r| f(r))));
        println!(
            "| {} | {} | {} | {:.0}{spread} | {:.1} | {:.1} | {} | {} | {} | {} |",
            r.setup,
            r.way.label(),
            r.concurrency,
            per_s.median(),
            series(&mut all.iter().map(|r| r.p50.as_secs_f64() * 1000.0)).median(),
            series(&mut all.iter().map(|r| r.p99.as_secs_f64() * 1000.0)).median(),
            ms(&|r| Some(r.ferry_ms)),
            ms(&|r| r.pg_ms),
            ms(&|r| r.s3_ms),
            ms(&|r| r.statements),
        );
    }
    for (c, way) in WAYS {
        // Each round's ratio, from the two setups measured in that round.
        let ratios = series(&mut (0..rounds).filter_map(|round| {
            let in_round = |name| of(name, c, way).find(|(k, _)| *k == round).map(|(_, r)| r);
            let (a, b) = (
                in_round("1 node, SQLite + disk")?,
                in_round("1 node, PostgreSQL + S3")?,
            );
            Some(a.per_s / b.per_s)
        }));
        if ratios.0.is_empty() {
            continue;
        }
        let (lo, hi) = ratios.min_max();
        println!(
            "c={c}, {}: one node on PostgreSQL + S3 takes {:.2}× the time per small upload of SQLite + disk (goal ≤ 2×; {lo:.2}–{hi:.2} over {} round(s))",
            way.label(),
            ratios.median(),
            ratios.0.len(),
        );
        // Where that time goes: each round's CPU per upload of the
        // processes of one node on PostgreSQL + S3, over the Ferry process
        // of SQLite + disk (which holds SQLite): all of them; without the
        // S3 server (a bucket elsewhere, as in production); and without
        // PostgreSQL (what this machine's S3 server and Ferry alone cost).
        let cpu = |parts: fn(&Row) -> Option<f64>| {
            series(&mut (0..rounds).filter_map(|round| {
                let in_round = |name| of(name, c, way).find(|(k, _)| *k == round).map(|(_, r)| r);
                let base = in_round("1 node, SQLite + disk")?.ferry_ms;
                Some(parts(in_round("1 node, PostgreSQL + S3")?)? / base)
            }))
        };
        let all = cpu(|r| Some(r.ferry_ms + r.pg_ms? + r.s3_ms?));
        let no_s3 = cpu(|r| Some(r.ferry_ms + r.pg_ms?));
        let no_pg = cpu(|r| Some(r.ferry_ms + r.s3_ms?));
        if !all.0.is_empty() {
            let show = |s: &crate::Series| {
                let (lo, hi) = s.min_max();
                format!("{:.2}× ({lo:.2}–{hi:.2})", s.median())
            };
            println!(
                "  CPU per upload over SQLite + disk's: all three processes {}; Ferry + PostgreSQL (the S3 server elsewhere) {}; Ferry + the S3 server (no PostgreSQL) {}",
                show(&all),
                show(&no_s3),
                show(&no_pg),
            );
        }
    }
    println!(
        "\nThe S3 server alone (PutObject of {} B straight into the bucket, no Ferry):",
        args.small_size
    );
    for (c, per_s, ms) in &direct {
        let put =
            series(&mut of("1 node, PostgreSQL + S3", *c, Way::NativeOne).map(|(_, r)| r.per_s))
                .median();
        let ratio = match put.is_nan() {
            true => "—".to_owned(),
            false => format!("{:.2}", per_s / put),
        };
        println!(
            "c={c}: {per_s:.0} objects/s, S3 server CPU {ms:.2} ms/object; one node on PostgreSQL + S3 takes {ratio}× its time per small upload (PUT)"
        );
    }
    println!(
        "\n## One {} MiB upload, parts of 16 MiB, 4 at a time",
        args.size_mib
    );
    println!("| setup | MiB/s | × one node on SQLite + disk | × straight into the bucket |");
    println!("| --- | --- | --- | --- |");
    let base = large.iter().find(|(n, _)| *n == "1 node, SQLite + disk");
    let ratio =
        |of: f64, to: Option<f64>| to.map_or("—".to_owned(), |b| format!("{:.2}", of / b));
    if let Some(d) = large_direct {
        println!(
            "| the S3 server alone (aws-sdk-s3 multipart, no Ferry) | {d:.0} | {} | 1.00 |",
            ratio(d, base.map(|b| b.1))
        );
    }
    for (name, mib_s) in &large {
        println!(
            "| {name} | {mib_s:.0} | {} | {} |",
            ratio(*mib_s, base.map(|b| b.1)),
            // (SQLite + disk does not write to the bucket.)
            match name.contains("S3") {
                true => ratio(*mib_s, large_direct),
                false => "—".to_owned(),
            }
        );
    }
    Ok(())
}
