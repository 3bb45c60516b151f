//! The `ferry` CLI against a real server: resume after a kill, and the
//! everyday commands.

mod common;

use common::*;
use reqwest::Method;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn cli_resumes_an_interrupted_upload() {
    let s = Server::start();
    let tok = user(&s, "cli").await;
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(16 * MIB, 42);
    let file = write_file(dir.path(), "movie.bin", &data);
    let state = dir.path().join("state");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "upload".to_owned(),
            file.display().to_string(),
            "cli/films/movie.bin".into(),
            "--part-size".into(),
            "1MiB".into(),
            "-j".into(),
            "1".into(),
            "-q".into(),
            "--state-dir".into(),
            state.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // First run, slowed down, killed once a few parts are on the server.
    let mut first = Command::new(ferry_bin())
        .args(args(&["--limit-rate", "4MiB"]))
        .env("FERRY_URL", &s.url)
        .env("FERRY_TOKEN", &tok)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let received = loop {
        assert!(Instant::now() < deadline, "no progress seen");
        let (_, v) = call(&s, Method::GET, "/v1/sessions?state=open", Some(&tok), None).await;
        if let Some(id) = v["sessions"][0]["id"].as_str() {
            let (_, sess) = call(
                &s,
                Method::GET,
                &format!("/v1/sessions/{id}"),
                Some(&tok),
                None,
            )
            .await;
            let got = sess["uploads"][0]["received_bytes"].as_u64().unwrap();
            if got >= 3 * MIB as u64 {
                break got;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(received < 16 * MIB as u64, "killed before the end");

    // Same command again: it continues from what the server has.
    let out = Command::new(ferry_bin())
        .args(args(&[]))
        .env("FERRY_URL", &s.url)
        .env("FERRY_TOKEN", &tok)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("committed cli/films/movie.bin"), "{stdout}");
    let resumed_line = stdout.lines().last().unwrap();
    assert!(!resumed_line.contains(", 0 B resumed"), "{resumed_line}");
    let (_, got) = download(&s, &tok, "cli", "films/movie.bin").await;
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    // The state file is gone once committed.
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
}

#[tokio::test]
async fn everyday_commands() {
    let s = Server::start();
    let admin_out = cli(
        &s,
        ADMIN,
        &["admin", "user", "add", "eve", "--quota", "10MiB"],
    );
    assert!(admin_out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&admin_out.stdout).unwrap();
    let tok = v["token"].as_str().unwrap().to_owned();

    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "tree/a.txt", b"alpha");
    write_file(dir.path(), "tree/sub/b.txt", b"bravo");
    let one = write_file(dir.path(), "one.txt", b"single");
    let state = dir.path().join("state");
    let st = state.display().to_string();
    let tree = dir.path().join("tree").display().to_string();
    let out = cli(
        &s,
        &tok,
        &[
            "upload",
            "-q",
            "--state-dir",
            &st,
            &tree,
            one.to_str().unwrap(),
            "eve/in/",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ls = cli(&s, &tok, &["ls", "eve/in"]);
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.contains("tree/") && ls.contains("one.txt"), "{ls}");
    let ls = String::from_utf8_lossy(&cli(&s, &tok, &["ls", "eve/in/tree/sub"]).stdout).to_string();
    assert!(ls.contains("b.txt"), "{ls}");

    let target = dir.path().join("got.txt");
    let out = cli(
        &s,
        &tok,
        &[
            "download",
            "eve/in/tree/sub/b.txt",
            target.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"bravo");

    // A clash under the default "fail" policy is reported, and nothing changes.
    let out = cli(
        &s,
        &tok,
        &[
            "upload",
            "-q",
            "--state-dir",
            &st,
            one.to_str().unwrap(),
            "eve/in/",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already_exists"));
    let out = cli(&s, &tok, &["sessions", "--state", "open"]);
    let open = String::from_utf8_lossy(&out.stdout).to_string();
    let id = open
        .split_whitespace()
        .next()
        .expect("the failed session is still open");
    assert!(cli(&s, &tok, &["sessions", "abort", id]).status.success());

    assert!(cli(&s, &tok, &["rm", "eve/in/one.txt"]).status.success());
    let ls = String::from_utf8_lossy(&cli(&s, &tok, &["ls", "eve/in"]).stdout).to_string();
    assert!(!ls.contains("one.txt"), "{ls}");

    // Admin: a shared space and a revoked token.
    let out = cli(
        &s,
        ADMIN,
        &["admin", "space", "add", "shared", "--member", "eve=read"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&s, ADMIN, &["admin", "token", "add", "eve"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (id, tok2) = (v["id"].as_str().unwrap(), v["token"].as_str().unwrap());
    assert!(cli(&s, tok2, &["ls", "eve"]).status.success());
    assert!(
        cli(&s, ADMIN, &["admin", "token", "revoke", id])
            .status
            .success()
    );
    let out = cli(&s, tok2, &["ls", "eve"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthenticated"));
}

/// `ferry serve` writing its log into a pipe or a file (not a terminal)
/// writes plain text: no ANSI colour codes for log collectors to strip.
#[test]
fn serve_logs_into_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(ferry_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("FERRY_ADMIN_TOKEN", ADMIN)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
        log
    });
    // Let it start and log, then stop it as an operator would.
    std::thread::sleep(Duration::from_millis(1500));
    sigterm(child.id());
    child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(log.contains("INFO"), "the server logged: {log:?}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a piped log: {log:?}"
    );
}

/// Runs `ferry download` with `args`; its output.
fn ferry_download(s: &Server, tok: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["download", "-q"];
    all.extend_from_slice(args);
    cli(s, tok, &all)
}

fn ok(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Starts `ferry download` slowed down and kills it once some ranges are
/// on disk (its state file names them).
async fn download_then_kill(s: &Server, tok: &str, remote: &str, local: &std::path::Path) {
    let mut run = Command::new(ferry_bin())
        .args(["download", "-q", remote])
        .arg(local)
        .args(["--chunk-size", "1MiB", "-j", "2", "--limit-rate", "4MiB"])
        .env("FERRY_URL", &s.url)
        .env("FERRY_TOKEN", tok)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = local.with_file_name(format!(
        "{}.ferry-part.json",
        local.file_name().unwrap().to_string_lossy()
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no range landed");
        let done = std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["done"].as_array().map(Vec::len))
            .unwrap_or(0);
        if done >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.kill().unwrap();
    run.wait().unwrap();
    assert!(!local.exists(), "the file takes its name only when whole");
}

#[tokio::test]
async fn cli_download_resumes_after_a_kill_and_checks_the_sha256() {
    let s = Server::start();
    let tok = user(&s, "dl").await;
    let data = random_bytes(24 * MIB + 123, 5);
    let (st, _) = put(
        &s,
        "/v1/spaces/dl/files/big.bin",
        Some(&tok),
        &[],
        data.clone(),
    )
    .await;
    assert_eq!(st, reqwest::StatusCode::CREATED);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("big.bin");

    // Killed part-way; the same command again fetches only what is missing.
    download_then_kill(&s, &tok, "dl/big.bin", &local).await;
    let out = ok(&ferry_download(
        &s,
        &tok,
        &[
            "dl/big.bin",
            local.to_str().unwrap(),
            "--chunk-size",
            "1MiB",
        ],
    ));
    assert!(out.contains("resumed"), "{out}");
    assert!(out.contains(&sha256_hex(&data)), "{out}");
    assert!(std::fs::read(&local).unwrap() == data);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no part or state file left"
    );

    // Bytes damaged on disk between runs: the SHA-256 check refuses the
    // file, and the next run starts over and gets it right.
    let other = dir.path().join("again.bin");
    download_then_kill(&s, &tok, "dl/big.bin", &other).await;
    let part = dir.path().join("again.bin.ferry-part");
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&part, bytes).unwrap();
    let out = ferry_download(
        &s,
        &tok,
        &[
            "dl/big.bin",
            other.to_str().unwrap(),
            "--chunk-size",
            "1MiB",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("corrupt"),
        "{out:?}"
    );
    assert!(!other.exists());
    ok(&ferry_download(
        &s,
        &tok,
        &["dl/big.bin", other.to_str().unwrap()],
    ));
    assert!(std::fs::read(&other).unwrap() == data);

    // The file replaced on the server between runs: the old ranges are not
    // trusted, the new file arrives whole.
    let third = dir.path().join("third.bin");
    download_then_kill(&s, &tok, "dl/big.bin", &third).await;
    let newer = random_bytes(3 * MIB, 6);
    let (st, _) = put(
        &s,
        "/v1/spaces/dl/files/big.bin",
        Some(&tok),
        &[],
        newer.clone(),
    )
    .await;
    assert_eq!(st, reqwest::StatusCode::CREATED);
    let out = ok(&ferry_download(
        &s,
        &tok,
        &["dl/big.bin", third.to_str().unwrap()],
    ));
    assert!(!out.contains("resumed"), "{out}");
    assert!(std::fs::read(&third).unwrap() == newer);

    // Errors: a missing file, no token.
    let out = ferry_download(
        &s,
        &tok,
        &["dl/nothing.bin", dir.path().join("n").to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such file"),
        "{out:?}"
    );
    let out = ferry_download(
        &s,
        "wrong-token",
        &["dl/big.bin", dir.path().join("n").to_str().unwrap()],
    );
    assert!(!out.status.success());
}

#[tokio::test]
async fn cli_downloads_a_folder_and_uploads_standard_input() {
    let s = Server::start();
    let tok = user(&s, "io").await;
    let a = random_bytes(2 * MIB + 7, 1);
    for (path, data) in [
        ("tree/a.bin", &a[..]),
        ("tree/sub/b.txt", b"bravo"),
        ("tree/sub/deeper/c", b""),
        ("elsewhere.txt", b"not in the tree"),
    ] {
        let (st, v) = put(
            &s,
            &format!("/v1/spaces/io/files/{path}"),
            Some(&tok),
            &[],
            data.to_vec(),
        )
        .await;
        assert_eq!(st, reqwest::StatusCode::CREATED, "{v}");
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("copy");
    ok(&ferry_download(
        &s,
        &tok,
        &[
            "io/tree/",
            target.to_str().unwrap(),
            "--chunk-size",
            "512KiB",
        ],
    ));
    assert!(std::fs::read(target.join("a.bin")).unwrap() == a);
    assert_eq!(std::fs::read(target.join("sub/b.txt")).unwrap(), b"bravo");
    assert_eq!(std::fs::read(target.join("sub/deeper/c")).unwrap(), b"");
    assert!(!target.join("elsewhere.txt").exists());

    // `ferry upload -`: standard input of unknown length, in ranges.
    let state = dir.path().join("state");
    let upload_stdin = |data: Vec<u8>, dest: &str| {
        let mut child = Command::new(ferry_bin())
            .args(["upload", "-q", "--part-size", "1MiB", "--state-dir"])
            .arg(&state)
            .args(["-", dest])
            .env("FERRY_URL", &s.url)
            .env("FERRY_TOKEN", &tok)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            for c in data.chunks(100_000) {
                // A refused upload may exit before it reads: the pipe
                // breaks, and its exit status says why. (An upload that
                // stopped reading otherwise fails its checksum below.)
                if stdin.write_all(c).is_err() {
                    break;
                }
            }
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    };
    for (name, data) in [
        ("piped.bin", random_bytes(5 * MIB + 3, 9)),
        ("exact.bin", random_bytes(2 * MIB, 10)),
        ("small.txt", b"hello".to_vec()),
        ("empty", Vec::new()),
    ] {
        let out = ok(&upload_stdin(data.clone(), &format!("io/in/{name}")));
        assert!(out.contains(&sha256_hex(&data)), "{name}: {out}");
        let (_, got) = download(&s, &tok, "io", &format!("in/{name}")).await;
        assert!(got == data, "{name}");
    }
    // A folder destination, or `-` with other files, is refused.
    let out = upload_stdin(b"x".to_vec(), "io/in/");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("file's path"),
        "{out:?}"
    );
}
