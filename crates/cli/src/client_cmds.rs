//! The client commands: upload, download, ls, rm, sessions, admin.

use crate::Command;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ferry_client::Client;
use ferry_client::download;
use ferry_client::upload::{self, Options, Progress, Source};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args)]
pub struct UploadArgs {
    /// Files and folders to upload, then the destination `<space>/<path>`;
    /// `-` alone reads standard input into the file `<space>/<path>`.
    #[arg(required = true, num_args = 2..)]
    paths: Vec<String>,
    /// Parts sent at once.
    #[arg(long, short = 'j', default_value_t = 4)]
    parallel: usize,
    /// What to do when a destination exists: fail, replace, rename, skip.
    #[arg(long, default_value = "fail")]
    conflict: String,
    /// Part size (e.g. 16MiB); default: the server's choice.
    #[arg(long, value_parser = parse_size)]
    part_size: Option<u64>,
    /// Average upload rate limit (e.g. 10MiB, per second).
    #[arg(long, value_parser = parse_size)]
    limit_rate: Option<u64>,
    /// Attempts per request before giving up.
    #[arg(long, default_value_t = 8)]
    attempts: u32,
    /// Where resume state is kept [default: $XDG_STATE_HOME/ferry or ~/.local/state/ferry].
    #[arg(long, env = "FERRY_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Send a SHA-256 with every part so the server checks each on arrival
    /// (the whole file is always checked before it becomes visible).
    #[arg(long)]
    part_digests: bool,
    /// Send the parts straight to the server's object storage (presigned
    /// URLs; the server must run on `--store s3`): the bytes bypass Ferry,
    /// which checks the parts' sizes and the file's SHA-256 at commit.
    #[arg(long)]
    direct: bool,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Args)]
pub struct DownloadArgs {
    /// `<space>/<path>` of a file, or of a folder (everything under it).
    remote: String,
    /// Where to put it [default: the file's or folder's name, here].
    local: Option<PathBuf>,
    /// Ranges fetched at once.
    #[arg(long, short = 'j', default_value_t = 4)]
    parallel: usize,
    /// Bytes per range (e.g. 8MiB).
    #[arg(long, value_parser = parse_size, default_value = "8MiB")]
    chunk_size: u64,
    /// Attempts per request before giving up.
    #[arg(long, default_value_t = 8)]
    attempts: u32,
    /// Average download rate limit (e.g. 10MiB, per second).
    #[arg(long, value_parser = parse_size)]
    limit_rate: Option<u64>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Args)]
pub struct SessionsArgs {
    #[command(subcommand)]
    command: Option<SessionsCommand>,
    /// Every user's sessions (admins).
    #[arg(long)]
    all: bool,
    /// Only sessions in this state (open, committed, aborted, expired…).
    #[arg(long)]
    state: Option<String>,
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// Abort a session and delete its staged bytes.
    Abort { id: String },
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Users: `ferry admin user add NAME [--admin] [--quota 10GiB]`.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Tokens: `ferry admin token add USER`, `ferry admin token revoke ID`.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Shared spaces: `ferry admin space add NAME --member bob=write`.
    Space {
        #[command(subcommand)]
        command: SpaceCommand,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    Add {
        name: String,
        #[arg(long)]
        admin: bool,
        #[arg(long, value_parser = parse_size)]
        quota: Option<u64>,
        #[arg(long)]
        max_open_sessions: Option<u32>,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    Add { user: String },
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum SpaceCommand {
    Add {
        name: String,
        /// `user=read` or `user=write`; repeat for more members.
        #[arg(long = "member")]
        members: Vec<String>,
    },
}

/// `123`, `64KiB`, `16MiB`, `1GiB`, `2TiB` (also KB/MB/GB as powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 16MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use KiB, MiB, GiB, TiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `<space>/<path>` → (space, path); the path may be empty.
fn split_remote(remote: &str) -> anyhow::Result<(String, String)> {
    let remote = remote.trim_start_matches('/');
    let (space, path) = remote.split_once('/').unwrap_or((remote, ""));
    if space.is_empty() {
        bail!("{remote:?} does not start with a space name: use <space>/<path>");
    }
    Ok((space.to_owned(), path.to_owned()))
}

fn default_token() -> Option<String> {
    let dir = std::env::var("FERRY_DATA_DIR").unwrap_or_else(|_| "./ferry-data".into());
    std::fs::read_to_string(Path::new(&dir).join("admin.token"))
        .ok()
        .map(|t| t.trim().to_owned())
}

pub async fn run(url: &str, token: Option<String>, cmd: Command) -> anyhow::Result<()> {
    init_logs();
    let client = Client::new(url, token.or_else(default_token));
    match cmd {
        Command::Serve(_) => unreachable!("handled by main"),
        Command::Upload(args) => upload_cmd(&client, args).await,
        Command::Download(args) => download(&client, args).await,
        Command::Ls { remote } => ls(&client, &remote).await,
        Command::Rm { remote } => {
            let (space, path) = split_remote(&remote)?;
            client.delete(&space, &path).await?;
            println!("deleted {space}/{path}");
            Ok(())
        }
        Command::Sessions(args) => sessions(&client, args).await,
        Command::Admin { command } => admin(&client, command).await,
    }
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ferry_server::stderr_is_colour_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Expands local files and folders into sources under `dest`.
fn collect_sources(locals: &[String], dest: &str) -> anyhow::Result<Vec<Source>> {
    let single_file = locals.len() == 1 && Path::new(&locals[0]).is_file();
    let as_folder = !single_file || dest.ends_with('/') || dest.is_empty();
    let dest = dest.trim_end_matches('/');
    let join = |rel: &str| {
        if dest.is_empty() {
            rel.to_owned()
        } else {
            format!("{dest}/{rel}")
        }
    };
    let mut out = Vec::new();
    for l in locals {
        let path = PathBuf::from(l);
        let meta = std::fs::metadata(&path).with_context(|| format!("cannot read {l}"))?;
        let name = path
            .canonicalize()?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if meta.is_file() {
            let remote = if as_folder {
                join(&name)
            } else {
                dest.to_owned()
            };
            out.push(Source::new(path, remote)?);
        } else if meta.is_dir() {
            let mut stack = vec![path.clone()];
            while let Some(dir) = stack.pop() {
                let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
                entries.sort_by_key(|e| e.file_name());
                for e in entries {
                    let p = e.path();
                    let ft = e.file_type()?;
                    if ft.is_dir() {
                        stack.push(p);
                    } else if ft.is_file() {
                        let rel = p.strip_prefix(&path)?.to_string_lossy().into_owned();
                        out.push(Source::new(p, join(&format!("{name}/{rel}")))?);
                    }
                }
            }
        } else {
            bail!("{l} is neither a file nor a folder");
        }
    }
    if out.is_empty() {
        bail!("nothing to upload");
    }
    Ok(out)
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, total: u64, already: u64) {
        self.0.set_length(total);
        self.0.set_position(already);
        self.0.reset_eta();
        if already > 0 {
            self.0.println(format!(
                "{} of {} already on the server",
                indicatif::HumanBytes(already),
                indicatif::HumanBytes(total)
            ));
        }
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn note(&self, message: &str) {
        self.0.println(message);
    }
}

fn bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(0);
    b.set_style(
        ProgressStyle::with_template(
            "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    b
}

async fn upload_cmd(client: &Client, args: UploadArgs) -> anyhow::Result<()> {
    let (locals, dest) = args.paths.split_at(args.paths.len() - 1);
    let (space, dest_path) = split_remote(&dest[0])?;
    let stdin = locals.iter().any(|l| l == "-");
    if stdin && locals.len() > 1 {
        bail!("`-` (standard input) is uploaded alone");
    }
    if stdin && (dest_path.is_empty() || dest_path.ends_with('/')) {
        bail!("standard input needs the file's path: <space>/<path>, not a folder");
    }
    let sources = if stdin {
        Vec::new()
    } else {
        collect_sources(locals, &dest_path)?
    };
    let state_dir = args.state_dir.unwrap_or_else(|| {
        std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("."))
            .join("ferry")
    });
    let opts = Options {
        space: Some(space),
        conflict: args.conflict,
        parallel: args.parallel,
        part_size: args.part_size,
        state_dir,
        limit_rate: args.limit_rate,
        attempts: args.attempts.max(1),
        part_digests: args.part_digests,
        direct: args.direct,
    };
    let bar = bar(args.quiet);
    let progress = Arc::new(Bar(bar.clone()));
    let outcome = if stdin {
        upload::run_stream(client, tokio::io::stdin(), &dest_path, &opts, progress).await
    } else {
        upload::run(client, sources, &opts, progress).await
    };
    bar.finish_and_clear();
    let outcome = outcome?;
    for u in &outcome.session.uploads {
        match &u.file {
            Some(f) => println!(
                "{} {}/{} {} bytes sha256 {}",
                u.state, f.space, f.path, f.size, f.sha256
            ),
            None => println!("{} {}", u.state, u.path),
        }
    }
    println!(
        "session {} committed: {} sent, {} resumed",
        outcome.session.id,
        indicatif::HumanBytes(outcome.sent_bytes),
        indicatif::HumanBytes(outcome.resumed_bytes)
    );
    Ok(())
}

async fn download(client: &Client, args: DownloadArgs) -> anyhow::Result<()> {
    let (space, path) = split_remote(&args.remote)?;
    let opts = download::Options {
        parallel: args.parallel,
        chunk: args.chunk_size,
        attempts: args.attempts.max(1),
        limit_rate: args.limit_rate,
    };
    let base = |p: &str| PathBuf::from(p.trim_end_matches('/').rsplit('/').next().unwrap_or(""));
    // A file, unless the path names a folder (or ends with `/`).
    let single = if path.is_empty() || path.ends_with('/') {
        false
    } else {
        match client.file_head(&space, &path).await {
            Ok(_) => true,
            Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => false,
            Err(e) => return Err(e.into()),
        }
    };
    let jobs: Vec<(String, PathBuf)> = if single {
        let local = args.local.clone().unwrap_or_else(|| base(&path));
        vec![(path.clone(), local)]
    } else {
        let files = download::files_under(client, &space, &path).await?;
        if files.is_empty() {
            bail!("{space}/{path}: no such file, and no files under it");
        }
        let root = args.local.clone().unwrap_or_else(|| match base(&path) {
            p if p.as_os_str().is_empty() => PathBuf::from(&space),
            p => p,
        });
        let prefix = path.trim_matches('/');
        files
            .into_iter()
            .map(|f| {
                let rel = f
                    .strip_prefix(prefix)
                    .unwrap_or(&f)
                    .trim_start_matches('/')
                    .to_owned();
                let local = root.join(&rel);
                (f, local)
            })
            .collect()
    };
    for (remote, local) in jobs {
        // Remote names are the server's; never write outside the target.
        if local
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            bail!("{space}/{remote}: refusing a path that leaves the target folder");
        }
        let bar = bar(args.quiet);
        let progress = Arc::new(Bar(bar.clone()));
        let got = download::file(client, &space, &remote, &local, &opts, progress).await;
        bar.finish_and_clear();
        let got = got?;
        println!(
            "{} {} bytes sha256 {}{}",
            got.local.display(),
            got.size,
            got.sha256,
            if got.resumed_bytes > 0 {
                format!(" ({} resumed)", indicatif::HumanBytes(got.resumed_bytes))
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

async fn ls(client: &Client, remote: &str) -> anyhow::Result<()> {
    let (space, prefix) = split_remote(remote)?;
    let v = client.list(&space, prefix.trim_end_matches('/')).await?;
    for e in v["entries"].as_array().into_iter().flatten() {
        if e["type"] == "folder" {
            println!(
                "{:>14}  {:<64}  {}/",
                "-",
                "",
                e["name"].as_str().unwrap_or("")
            );
        } else {
            println!(
                "{:>14}  {:<64}  {}",
                e["size"],
                e["sha256"].as_str().unwrap_or(""),
                e["name"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

async fn sessions(client: &Client, args: SessionsArgs) -> anyhow::Result<()> {
    if let Some(SessionsCommand::Abort { id }) = args.command {
        client.abort_session(&id).await?;
        println!("aborted {id}");
        return Ok(());
    }
    for s in client.sessions(args.state.as_deref(), args.all).await? {
        println!(
            "{}  {:<10} {:<12} {:<12} expires {}",
            s.id, s.state, s.owner, s.space, s.expires_at
        );
    }
    Ok(())
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

async fn admin(client: &Client, cmd: AdminCommand) -> anyhow::Result<()> {
    let v = match cmd {
        AdminCommand::User {
            command:
                UserCommand::Add {
                    name,
                    admin,
                    quota,
                    max_open_sessions,
                },
        } => {
            client
                .post(
                    "/v1/admin/users",
                    &json!({"name": name, "admin": admin, "quota_bytes": quota, "max_open_sessions": max_open_sessions}),
                )
                .await?
        }
        AdminCommand::Token {
            command: TokenCommand::Add { user },
        } => client.post(&format!("/v1/admin/users/{user}/tokens"), &json!({})).await?,
        AdminCommand::Token {
            command: TokenCommand::Revoke { id },
        } => {
            client.delete_path(&format!("/v1/admin/tokens/{id}")).await?;
            json!({"revoked": id})
        }
        AdminCommand::Space {
            command: SpaceCommand::Add { name, members },
        } => {
            let mut m = serde_json::Map::new();
            for spec in members {
                let (user, access) = spec
                    .split_once('=')
                    .with_context(|| format!("member {spec:?} is not user=read or user=write"))?;
                m.insert(user.to_owned(), json!(access));
            }
            client
                .post("/v1/admin/spaces", &json!({"name": name, "members": m}))
                .await?
        }
    };
    print(&v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn remotes() {
        assert_eq!(
            split_remote("alice/a/b").unwrap(),
            ("alice".into(), "a/b".into())
        );
        assert_eq!(split_remote("alice").unwrap(), ("alice".into(), "".into()));
        assert!(split_remote("/").is_err());
    }
}
