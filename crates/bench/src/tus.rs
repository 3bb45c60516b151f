//! The tus comparison: one large upload in large PATCHes through Ferry's
//! tus dialect and through peer tus servers (@tus/server with its file
//! store, rustus), with the same client, in alternating rounds.

use crate::{RssSampler, Series, TOKEN};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// A tus server under test: its creation URL and process (stopped when
/// the guard drops).
pub struct Peer {
    pub name: &'static str,
    pub endpoint: String,
    pub pid: u32,
    _guard: Box<dyn std::any::Any>,
}

/// A child process killed (by PID) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_listening(port: u16) -> anyhow::Result<()> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port} after 20 s")
}

/// @tus/server: `node peers/tus-node/server.mjs` (after `npm install`).
pub fn start_node(script: &Path, store: &Path) -> anyhow::Result<Peer> {
    let _ = std::fs::remove_dir_all(store);
    std::fs::create_dir_all(store)?;
    let port = free_port()?;
    let child = Command::new("node")
        .arg(script)
        .current_dir(script.parent().context("script dir")?)
        .env("PORT", port.to_string())
        .env("STORE_DIR", store)
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start node")?;
    let peer = Peer {
        name: "@tus/server",
        endpoint: format!("http://127.0.0.1:{port}/files"),
        pid: child.id(),
        _guard: Box::new(Killed(child)),
    };
    wait_listening(port)?;
    Ok(peer)
}

/// rustus with file storage, large bodies allowed.
pub fn start_rustus(bin: &Path, store: &Path) -> anyhow::Result<Peer> {
    start_rustus_with(bin, store, false)
}

/// rustus; with `fsync`, `--force-fsync true`: every write is synced
/// before it is acknowledged, as Ferry does.
pub fn start_rustus_with(bin: &Path, store: &Path, fsync: bool) -> anyhow::Result<Peer> {
    let _ = std::fs::remove_dir_all(store);
    std::fs::create_dir_all(store.join("data"))?;
    std::fs::create_dir_all(store.join("info"))?;
    let port = free_port()?;
    let child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--url", "/files"])
        .args(["--max-body-size", &(128u64 << 20).to_string()])
        .arg("--data-dir")
        .arg(store.join("data"))
        .arg("--info-dir")
        .arg(store.join("info"))
        .args(["--force-fsync", if fsync { "true" } else { "false" }])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start rustus")?;
    let peer = Peer {
        name: if fsync {
            "rustus --force-fsync"
        } else {
            "rustus"
        },
        endpoint: format!("http://127.0.0.1:{port}/files"),
        pid: child.id(),
        _guard: Box::new(Killed(child)),
    };
    wait_listening(port)?;
    Ok(peer)
}

/// Ferry's tus mount on a running server (`guard` stops it).
pub fn ferry(url: &str, pid: u32, guard: impl std::any::Any) -> Peer {
    Peer {
        name: "ferry /tus",
        endpoint: format!("{url}/tus/"),
        pid,
        _guard: Box::new(guard),
    }
}

/// One tus upload of `file` in `chunk`-byte PATCHes, each body streamed
/// from the file. Returns the elapsed time.
pub async fn upload(
    client: &reqwest::Client,
    endpoint: &str,
    file: &Path,
    chunk: u64,
) -> anyhow::Result<Duration> {
    let size = std::fs::metadata(file)?.len();
    let t = Instant::now();
    let r = client
        .post(endpoint)
        .bearer_auth(TOKEN)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", size)
        .header("Upload-Metadata", "filename YmVuY2guYmlu")
        .send()
        .await?;
    if r.status() != reqwest::StatusCode::CREATED {
        bail!(
            "creation: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    let location = r
        .headers()
        .get("location")
        .context("no Location")?
        .to_str()?
        .to_owned();
    let url = reqwest::Url::parse(endpoint)?.join(&location)?;
    let mut offset = 0;
    while offset < size {
        let len = chunk.min(size - offset);
        let r = client
            .patch(url.clone())
            .bearer_auth(TOKEN)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", offset)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Content-Length", len)
            .body(file_body(file, offset, len).await?)
            .send()
            .await?;
        if r.status() != reqwest::StatusCode::NO_CONTENT {
            bail!(
                "PATCH at {offset}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        offset += len;
    }
    Ok(t.elapsed())
}

/// `len` bytes of `file` from `offset`, streamed as a request body.
pub async fn file_body(file: &Path, offset: u64, len: u64) -> anyhow::Result<reqwest::Body> {
    let mut f = tokio::fs::File::open(file).await?;
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(len), 256 << 10);
    Ok(reqwest::Body::wrap_stream(stream))
}

/// Where the peers are, if installed (`crates/bench/peers/setup.sh`).
pub struct Peers {
    pub node_script: Option<PathBuf>,
    pub rustus: Option<PathBuf>,
}

/// Results per server: throughput and peak RSS.
#[derive(Default)]
pub struct Figures {
    pub rate: Series,
    pub rss: Series,
}

/// Runs `rounds` alternating rounds; `start_ferry` starts a fresh server.
pub async fn compare(
    client: &reqwest::Client,
    file: &Path,
    chunk: u64,
    rounds: usize,
    scratch: &Path,
    peers: &Peers,
    start_ferry: impl Fn() -> anyhow::Result<Peer>,
) -> anyhow::Result<Vec<(&'static str, Figures)>> {
    let mib = std::fs::metadata(file)?.len() as f64 / 1048576.0;
    let mut out: Vec<(&'static str, Figures)> = Vec::new();
    for round in 1..=rounds {
        eprintln!("tus round {round}/{rounds}");
        let mut servers: Vec<Box<dyn Fn() -> anyhow::Result<Peer>>> = vec![Box::new(&start_ferry)];
        if let Some(s) = &peers.node_script {
            let store = scratch.join("node-store");
            servers.push(Box::new(move || start_node(s, &store)));
        }
        if let Some(b) = &peers.rustus {
            let store = scratch.join("rustus-store");
            servers.push(Box::new(move || start_rustus(b, &store)));
        }
        for start in servers {
            let _ = Command::new("sync").status();
            let peer = start()?;
            let sampler = RssSampler::start(peer.pid);
            let took = upload(client, &peer.endpoint, file, chunk).await;
            let rss = sampler.stop();
            let took = took.with_context(|| format!("upload to {}", peer.name))?;
            let figures = match out.iter_mut().find(|(n, _)| *n == peer.name) {
                Some((_, f)) => f,
                None => {
                    out.push((peer.name, Figures::default()));
                    &mut out.last_mut().unwrap().1
                }
            };
            figures.rate.push(mib / took.as_secs_f64());
            figures.rss.push(rss);
        }
    }
    Ok(out)
}
