//! `ferry`: the server (`ferry serve`) and a client for it.

mod client_cmds;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Resumable upload sessions: server and client"
)]
struct Cli {
    /// Server to talk to (client commands).
    #[arg(
        long,
        env = "FERRY_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// API token (client commands). Default: <data dir>/admin.token if readable.
    #[arg(long, env = "FERRY_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<serve::ServeArgs>),
    /// Upload files or folders: `ferry upload a.bin dir/ <space>/<dest>`.
    Upload(client_cmds::UploadArgs),
    /// Download a file or a folder: `ferry download <space>/<path> [local]`
    /// (parallel ranges; run it again to resume; the SHA-256 is checked).
    Download(client_cmds::DownloadArgs),
    /// List a folder: `ferry ls <space>[/<folder>]`.
    Ls { remote: String },
    /// Delete a file: `ferry rm <space>/<path>`.
    Rm { remote: String },
    /// List your upload sessions, or abort one.
    Sessions(client_cmds::SessionsArgs),
    /// Manage users, tokens and spaces (admin token needed).
    Admin {
        #[command(subcommand)]
        command: client_cmds::AdminCommand,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Blocking work takes permits (store writes 32, file calls 16, hashing
    // 16, SQLite reads 16); the cap, their sum, keeps the pool bounded even
    // when a burst outruns thread reuse on a loaded machine (other blocking
    // work, such as downloads' reads, queues behind them).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(80)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            other => client_cmds::run(&cli.url, cli.token, other).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
