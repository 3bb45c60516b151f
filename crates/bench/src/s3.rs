//! `--suite s3`: Ferry on `--store s3` next to a direct multipart upload of
//! the same file into the same S3 server (aws-sdk-s3, the same part size
//! and concurrency), in alternating rounds; then small uploads next to
//! direct small PUTs, and memory with many concurrent uploads.
//!
//! Needs a bucket and its server in the environment, as
//! `eval "$(scripts/s3-local.sh)"` sets them (`FERRY_S3_ENDPOINT`,
//! `FERRY_S3_BUCKET`, `AWS_*`).

use crate::{Args, Series, Server, TOKEN, native_commit, native_session};
use anyhow::{Context, bail};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::StreamExt;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const PART: u64 = 16 << 20;
const PARALLEL: usize = 4;

pub(crate) struct Bucket {
    client: aws_sdk_s3::Client,
    pub name: String,
    pub endpoint: String,
}

pub(crate) async fn bucket() -> anyhow::Result<Bucket> {
    let endpoint = std::env::var("FERRY_S3_ENDPOINT")
        .context("FERRY_S3_ENDPOINT is not set: eval \"$(scripts/s3-local.sh)\"")?;
    let name = std::env::var("FERRY_S3_BUCKET").context("FERRY_S3_BUCKET is not set")?;
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared)
            .endpoint_url(&endpoint)
            .force_path_style(true)
            .build(),
    );
    Ok(Bucket {
        client,
        name,
        endpoint,
    })
}

/// The baseline: one multipart upload of `file`, `PART`-byte parts,
/// `PARALLEL` at a time, each streamed from the file.
pub(crate) async fn direct(b: &Bucket, file: &Path, key: &str) -> anyhow::Result<Duration> {
    let size = std::fs::metadata(file)?.len();
    let t = Instant::now();
    let mpu = b
        .client
        .create_multipart_upload()
        .bucket(&b.name)
        .key(key)
        .send()
        .await?;
    let id = mpu.upload_id().context("upload id")?.to_owned();
    let parts: Vec<CompletedPart> = futures::stream::iter(0..size.div_ceil(PART))
        .map(|k| {
            let (id, file) = (id.clone(), file.to_owned());
            async move {
                let len = PART.min(size - k * PART);
                let body = ByteStream::read_from()
                    .path(&file)
                    .offset(k * PART)
                    .length(Length::Exact(len))
                    .build()
                    .await?;
                let out = b
                    .client
                    .upload_part()
                    .bucket(&b.name)
                    .key(key)
                    .upload_id(&id)
                    .part_number(k as i32 + 1)
                    .content_length(len as i64)
                    .body(body)
                    .send()
                    .await?;
                anyhow::Ok(
                    CompletedPart::builder()
                        .part_number(k as i32 + 1)
                        .set_e_tag(out.e_tag().map(str::to_owned))
                        .build(),
                )
            }
        })
        .buffered(PARALLEL)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    b.client
        .complete_multipart_upload()
        .bucket(&b.name)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await?;
    let el = t.elapsed();
    b.client
        .delete_object()
        .bucket(&b.name)
        .key(key)
        .send()
        .await?;
    Ok(el)
}

/// Ferry's native API: one session, `PART`-byte parts, `PARALLEL` at a
/// time, each streamed from the file, then the commit.
pub(crate) async fn native_parts(
    client: &reqwest::Client,
    url: &str,
    file: &Path,
    name: &str,
) -> anyhow::Result<Duration> {
    let size = std::fs::metadata(file)?.len();
    let t = Instant::now();
    let body = json!({"path": name, "size": size, "part_size": PART});
    let (sid, up) = native_session(client, url, body).await?;
    futures::stream::iter(0..size.div_ceil(PART))
        .map(|k| {
            let up = up.clone();
            async move {
                let len = PART.min(size - k * PART);
                let r = client
                    .put(format!("{url}/v1/uploads/{up}/parts/{}", k + 1))
                    .bearer_auth(TOKEN)
                    .header("Content-Length", len)
                    .body(crate::tus::file_body(file, k * PART, len).await?)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("part {}: {}", k + 1, r.status());
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;
    native_commit(client, url, &sid).await?;
    Ok(t.elapsed())
}

/// Direct small PUTs of `size` bytes, `concurrency` at a time, each to a
/// new key: objects/s.
pub(crate) async fn direct_small(
    b: &Bucket,
    n: usize,
    size: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let data = bytes::Bytes::from(vec![42u8; size]);
    // New keys in one folder, as a server that stores uploads makes them
    // (a key written again costs an S3 server less than a new one).
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let t = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let data = data.clone();
            async move {
                b.client
                    .put_object()
                    .bucket(&b.name)
                    .key(format!("bench-small/{run}-{i}"))
                    .body(ByteStream::from(data))
                    .send()
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

pub async fn suite(
    args: &Args,
    dir: &Path,
    ferry: &Path,
    src: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<()> {
    let b = bucket().await?;
    let data = dir.join("data-s3");
    let env = |prefix: &str| {
        vec![
            ("FERRY_STORE", "s3".to_owned()),
            ("FERRY_S3_ENDPOINT", b.endpoint.clone()),
            ("FERRY_S3_BUCKET", b.name.clone()),
            ("FERRY_S3_PREFIX", format!("bench-{prefix}/")),
        ]
    };
    let mib = |d: Duration| args.size_mib as f64 / d.as_secs_f64();
    let (mut base, mut parts, mut tus) = (Series::default(), Series::default(), Series::default());
    let (mut rss_parts, mut rss_tus) = (Series::default(), Series::default());
    let (mut direct_cli, mut rss_direct) = (Series::default(), Series::default());
    for round in 1..=args.rounds {
        eprintln!("s3 round {round}/{}", args.rounds);
        base.push(mib(direct(&b, src, &format!("bench-direct/{round}")).await?));

        let server = Server::start_with(ferry, &data, &env(&format!("parts-{round}")))?;
        let sampler = crate::RssSampler::start(server.pid());
        parts.push(mib(native_parts(client, &server.url, src, "big.bin").await?));
        rss_parts.push(sampler.stop());
        drop(server);

        let server = Server::start_with(ferry, &data, &env(&format!("tus-{round}")))?;
        let sampler = crate::RssSampler::start(server.pid());
        let endpoint = format!("{}/tus/", server.url);
        let chunk = args.tus_chunk_mib << 20;
        tus.push(mib(crate::tus::upload(client, &endpoint, src, chunk).await?));
        rss_tus.push(sampler.stop());
        drop(server);

        // `ferry upload --direct`: the CLI sends the parts to the bucket.
        let server = Server::start_with(ferry, &data, &env(&format!("direct-{round}")))?;
        let sampler = crate::RssSampler::start(server.pid());
        let t = Instant::now();
        let st = std::process::Command::new(ferry)
            .args(["upload", "--direct", "-q", "-j", &PARALLEL.to_string()])
            .arg("--state-dir")
            .arg(dir.join("state-direct"))
            .arg(src)
            .arg(format!("admin/direct-{round}.bin"))
            .env("FERRY_URL", &server.url)
            .env("FERRY_TOKEN", TOKEN)
            .stdout(std::process::Stdio::null())
            .status()?;
        let el = t.elapsed();
        rss_direct.push(sampler.stop());
        if !st.success() {
            bail!("ferry upload --direct failed");
        }
        direct_cli.push(mib(el));
        drop(server);
    }

    // Small uploads (create + part + commit), next to direct small PUTs.
    let n = args.small.min(1000);
    let payload = bytes::Bytes::from(vec![42u8; args.small_size]);
    let (mut small, mut small_direct) = (Series::default(), Series::default());
    for run in 1..=args.small_runs {
        eprintln!("s3 small uploads, run {run}/{}", args.small_runs);
        small_direct.push(direct_small(&b, n, args.small_size, args.concurrency).await?);
        let server = Server::start_with(ferry, &data, &env(&format!("small-{run}")))?;
        let t = Instant::now();
        let url = server.url.clone();
        crate::small_uploads(client, &url, 0..n, &payload, args.concurrency).await?;
        small.push(n as f64 / t.elapsed().as_secs_f64());
    }

    eprintln!("s3: {} concurrent uploads", args.rss_uploads);
    let server = Server::start_with(ferry, &data, &env("many"))?;
    let (many_rss, many_el) = crate::many_uploads(client, &server, args.rss_uploads).await?;
    drop(server);
    let _ = std::fs::remove_dir_all(&data);

    let d = base.median();
    println!();
    println!(
        "## {} MiB into S3 at {} ({} MiB parts, {PARALLEL} at a time)",
        args.size_mib,
        b.endpoint,
        PART >> 20
    );
    println!(
        "direct multipart upload (aws-sdk-s3)   : {}",
        base.show("MiB/s")
    );
    println!(
        "ferry native parts                     : {}  = {:.2}x direct; server peak RSS {}",
        parts.show("MiB/s"),
        parts.median() / d,
        rss_parts.show("MiB")
    );
    println!(
        "ferry tus, one stream, {:>3} MiB PATCHes : {}  = {:.2}x direct; server peak RSS {}",
        args.tus_chunk_mib,
        tus.show("MiB/s"),
        tus.median() / d,
        rss_tus.show("MiB")
    );
    println!(
        "ferry upload --direct (presigned parts): {}  = {:.2}x direct; server peak RSS {}",
        direct_cli.show("MiB/s"),
        direct_cli.median() / d,
        rss_direct.show("MiB")
    );
    println!(
        "## {n} small uploads of {} B, concurrency {}",
        args.small_size, args.concurrency
    );
    println!(
        "direct PutObject                       : {}",
        small_direct.show("objects/s")
    );
    println!(
        "ferry (create + part + commit)         : {}  = {:.2}x direct",
        small.show("uploads/s"),
        small.median() / small_direct.median()
    );
    println!("## {} concurrent uploads of 16 MiB", args.rss_uploads);
    println!(
        "server peak RSS                        : {many_rss:8.1} MiB ({:.1} MiB/s overall)",
        (args.rss_uploads as u64 * 16) as f64 / many_el.as_secs_f64()
    );
    Ok(())
}
