//! `--suite goals`: Ferry's performance goals measured in one run, each
//! figure next to the baseline of the same run (rustus with
//! `--force-fsync`, O_DIRECT `dd`), with its ratio and whether the goal is
//! met; `--json` writes the same table.
//!
//! The goals: 4 KiB uploads at concurrency 16 — tus in one request
//! ≥ 5,000/s with p99 < 10 ms and ≥ 1.0× rustus `--force-fsync`, tus in two
//! ≥ 3,500/s, native in three ≥ 3,000/s, native in one ≥ 5,000/s —; a
//! large upload through `ferry upload -j 4` and through one tus stream each
//! ≥ 0.8× O_DIRECT `dd`; peak RSS < 100 MiB with 100 concurrent 16 MiB
//! uploads; commit time flat in file size.

use crate::small::{self, Way};
use crate::{Args, RssSampler, Series, Server, TOKEN, api, cli_upload, raw_disk_mib_s, tus};
use anyhow::{Context, bail};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// One line of the table.
struct Row {
    what: String,
    figure: Series,
    unit: &'static str,
    baseline: Option<(String, f64)>,
    goal: String,
    met: Option<bool>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        self.baseline
            .as_ref()
            .map(|(_, b)| self.figure.median() / b)
    }
}

pub async fn suite(
    args: &Args,
    dir: &Path,
    ferry: &Path,
    src: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<()> {
    // Small uploads first: they are the longest part, and a cold page
    // cache after the large writes would tell against them.
    let table = small::run(args, dir, ferry, client).await?;
    small::print(args, &table);
    let mut rows = small_rows(args, &table);

    // Large uploads, alternating with the disk's own rate.
    let data = dir.join("goals-data");
    let (mut raw, mut cli, mut stream, mut rss) = (
        Series::default(),
        Series::default(),
        Series::default(),
        Series::default(),
    );
    let mib = |d: Duration| args.size_mib as f64 / d.as_secs_f64();
    for round in 1..=args.rounds {
        eprintln!("large uploads, round {round}/{}", args.rounds);
        let _ = std::process::Command::new("sync").status();
        raw.push(raw_disk_mib_s(src, dir, args.size_mib)?);

        let server = Server::start(ferry, &data)?;
        let sampler = RssSampler::start(server.pid());
        cli.push(mib(cli_upload(ferry, dir, src, &server)?));
        rss.push(sampler.stop());
        drop(server);

        let server = Server::start(ferry, &data)?;
        let sampler = RssSampler::start(server.pid());
        let endpoint = format!("{}/tus/", server.url);
        stream.push(mib(tus::upload(
            client,
            &endpoint,
            src,
            args.tus_chunk_mib << 20,
        )
        .await?));
        rss.push(sampler.stop());
        drop(server);
    }
    let dd = raw.median();
    let dd_label = format!("O_DIRECT dd {dd:.0} MiB/s");
    let large = [
        (format!("{} MiB, ferry upload -j 4", args.size_mib), cli),
        (
            format!(
                "{} MiB, tus one stream ({} MiB PATCHes)",
                args.size_mib, args.tus_chunk_mib
            ),
            stream,
        ),
    ];
    for (what, figure) in large {
        let met = figure.median() >= 0.8 * dd;
        rows.push(Row {
            what,
            figure,
            unit: "MiB/s",
            baseline: Some((dd_label.clone(), dd)),
            goal: "≥ 0.8× dd".into(),
            met: Some(met),
        });
    }

    rows.push(Row {
        what: format!("peak RSS during the {} MiB uploads", args.size_mib),
        figure: rss,
        unit: "MiB",
        baseline: None,
        goal: "—".into(),
        met: None,
    });

    eprintln!("{} concurrent uploads of 16 MiB", args.rss_uploads);
    let server = Server::start(ferry, &data)?;
    let (peak, _) = crate::many_uploads(client, &server, args.rss_uploads).await?;
    drop(server);
    rows.push(Row {
        what: format!("peak RSS, {} concurrent 16 MiB uploads", args.rss_uploads),
        figure: Series(vec![peak]),
        unit: "MiB",
        baseline: None,
        goal: "< 100 MiB".into(),
        met: Some(peak < 100.0),
    });

    eprintln!("commit time by size");
    let server = Server::start(ferry, &data)?;
    let (mut small_commit, mut large_commit) = (Series::default(), Series::default());
    for round in 0..args.rounds {
        small_commit.push(commit_ms(client, &server, src, 1 << 20, round).await?);
        let size = args.size_mib << 20;
        large_commit.push(commit_ms(client, &server, src, size, round).await?);
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
    let one = small_commit.median();
    rows.push(Row {
        what: "commit of a 1 MiB upload".into(),
        figure: small_commit,
        unit: "ms",
        baseline: None,
        goal: "—".into(),
        met: None,
    });
    let flat = large_commit.median() <= 2.0 * one.max(1.0);
    rows.push(Row {
        what: format!("commit of a {} MiB upload", args.size_mib),
        figure: large_commit,
        unit: "ms",
        baseline: Some(("the 1 MiB commit".into(), one)),
        goal: "flat in size (≤ 2× the 1 MiB commit)".into(),
        met: Some(flat),
    });

    print(args, &rows)?;
    Ok(())
}

/// The small-upload goals from the small suite's table.
fn small_rows(args: &Args, table: &small::Table) -> Vec<Row> {
    let peer = |way: Way| {
        small::figures(table, "rustus --force-fsync", way).map(|f| {
            (
                format!("rustus --force-fsync {}", way.label()),
                f.rate.median(),
            )
        })
    };
    let goals = [
        (Way::TusOne, 5000.0, Some(Way::TusOne)),
        (Way::TusTwo, 3500.0, Some(Way::TusTwo)),
        (Way::NativeThree, 3000.0, None),
        (Way::NativeOne, 5000.0, None),
    ];
    let mut rows = Vec::new();
    for (way, floor, against) in goals {
        let Some(f) = small::figures(table, "ferry", way) else {
            continue;
        };
        let baseline = against.and_then(peer);
        let rate = f.rate.median();
        let (goal, met) = if way == Way::TusOne {
            let ratio_ok = baseline.as_ref().is_none_or(|(_, b)| rate >= *b);
            (
                format!(
                    "≥ {floor:.0}/s, p99 < 10 ms (now {:.1}), ≥ 1.0× rustus",
                    f.p99.median()
                ),
                rate >= floor && f.p99.median() < 10.0 && ratio_ok,
            )
        } else {
            (format!("≥ {floor:.0}/s"), rate >= floor)
        };
        rows.push(Row {
            what: format!(
                "{} B, {}, c={}",
                args.small_size,
                way.label(),
                args.concurrency
            ),
            figure: Series(f.rate.0.clone()),
            unit: "uploads/s",
            baseline,
            goal,
            met: Some(met),
        });
    }
    rows
}

/// Uploads the first `size` bytes of `src` in 16 MiB parts, one after
/// another, then times the commit (ms).
async fn commit_ms(
    client: &reqwest::Client,
    server: &Server,
    src: &Path,
    size: u64,
    round: usize,
) -> anyhow::Result<f64> {
    let part: u64 = 16 << 20;
    let body = json!({
        "path": format!("commit/{size}-{round}.bin"),
        "size": size,
        "part_size": part,
    });
    let (sid, up) = crate::native_session(client, &server.url, body).await?;
    for (i, offset) in (0..size).step_by(part as usize).enumerate() {
        let len = part.min(size - offset);
        let r = client
            .put(format!("{}/v1/uploads/{up}/parts/{}", server.url, i + 1))
            .bearer_auth(TOKEN)
            .header("Content-Length", len)
            .body(tus::file_body(src, offset, len).await?)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("part {}: {}", i + 1, r.status());
        }
    }
    let t = Instant::now();
    let url = format!("{}/v1/sessions/{sid}/commit", server.url);
    let v = api(client, reqwest::Method::POST, url, None).await?;
    let el = t.elapsed();
    v["state"].as_str().context("the commit's answer")?;
    Ok(el.as_secs_f64() * 1000.0)
}

/// Prints the table (and `--json`).
fn print(args: &Args, rows: &[Row]) -> anyhow::Result<()> {
    println!();
    println!("## goals, one run (medians, min–max)");
    println!("| figure | Ferry | baseline (same run) | ratio | goal | met |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let decimals = if r.unit == "uploads/s" { 0 } else { 1 };
        println!(
            "| {} | {} {} | {} | {} | {} | {} |",
            r.what,
            r.figure.range(decimals),
            r.unit,
            r.baseline
                .as_ref()
                .map_or("—".into(), |(what, v)| format!("{what}: {v:.0}")),
            r.ratio().map_or("—".into(), |v| format!("{v:.2}×")),
            r.goal,
            match r.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "—",
            }
        );
    }
    if let Some(path) = &args.json {
        let doc: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "figure": r.what,
                    "unit": r.unit,
                    "values": r.figure.0,
                    "median": r.figure.median(),
                    "baseline": r.baseline.as_ref().map(|(w, v)| json!({"what": w, "value": v})),
                    "ratio": r.ratio(),
                    "goal": r.goal,
                    "met": r.met,
                })
            })
            .collect();
        let doc = json!({"suite": "goals", "rows": doc});
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}
