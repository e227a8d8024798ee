//! Helpers shared by the end-to-end tests: run the real `chatvault` binary on a loopback
//! port and talk to it over HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_chatvault");

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/samples")
}

/// The Python virtualenv with the third-party test tools (created by scripts/test.sh).
pub fn test_venv() -> PathBuf {
    std::env::var("CHATVAULT_TEST_VENV").map_or_else(
        |_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/chatvault/test-venv")
        },
        PathBuf::from,
    )
}

/// A `chatvault serve` child process.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// The admin key printed at first start (None on later starts of the same data dir).
    pub first_key: Option<String>,
}

impl Server {
    pub fn start(data_dir: &Path, envs: &[(&str, &str)]) -> Server {
        Server::start_with(data_dir, envs, Stdio::inherit())
    }

    /// As [`Server::start`], with the server's log (stderr) written to `log`.
    pub fn start_logging_to(data_dir: &Path, envs: &[(&str, &str)], log: &Path) -> Server {
        let file = std::fs::File::create(log).expect("create the log file");
        Server::start_with(data_dir, envs, Stdio::from(file))
    }

    fn start_with(data_dir: &Path, envs: &[(&str, &str)], stderr: Stdio) -> Server {
        Server::run_until_ready(&["serve"], data_dir, envs, stderr)
    }

    /// `chatvault demo` with `args`, until it serves.
    pub fn start_demo(data_dir: &Path, args: &[&str]) -> Server {
        let mut command = vec!["demo"];
        command.extend_from_slice(args);
        Server::run_until_ready(&command, data_dir, &[], Stdio::inherit())
    }

    /// Runs a command that ends by serving (`serve`, `demo`) on a free loopback port, and
    /// waits for its "Ready.".
    fn run_until_ready(
        command: &[&str],
        data_dir: &Path,
        envs: &[(&str, &str)],
        stderr: Stdio,
    ) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(command)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
        cmd.env_remove("CHATVAULT_CONFIG")
            .env("CHATVAULT_LOG", "warn");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn chatvault serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut base = None;
        let mut first_key = None;
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                base = Some(rest.trim().to_owned());
            }
            if line.starts_with("cv_") {
                first_key = Some(line.trim().to_owned());
            }
            if line == "Ready." {
                break;
            }
        }
        let base = base.unwrap_or_else(|| {
            panic!(
                "chatvault serve did not report its address (exit: {:?})",
                child.try_wait()
            )
        });
        Server {
            child,
            base,
            first_key,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no shutdown code runs, exactly like a power cut for the process.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a chatvault subcommand to completion: (exit code, stdout, stderr).
pub fn run(args: &[&str], data_dir: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("CHATVAULT_CONFIG")
        .env("CHATVAULT_LOG", "warn")
        .output()
        .expect("run chatvault");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn create_key(data_dir: &Path, scope: &str, sites: Option<&str>) -> String {
    let mut args = vec!["keys", "create", "--name", "test", "--scope", scope];
    if let Some(s) = sites {
        args.extend(["--sites", s]);
    }
    let (code, out, err) = run(&args, data_dir);
    assert_eq!(code, 0, "keys create failed: {err}");
    out.lines().last().expect("key line").trim().to_owned()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// `GET /api/v1/stats`: (live chats, deleted chats).
pub async fn chat_counts(server: &Server, key: &str) -> (u64, u64) {
    let stats: serde_json::Value = client()
        .get(server.url("/api/v1/stats"))
        .bearer_auth(key)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json");
    (
        stats["chats"].as_u64().unwrap_or(u64::MAX),
        stats["deleted_chats"].as_u64().unwrap_or(u64::MAX),
    )
}

pub fn read_sample(name: &str) -> Vec<u8> {
    std::fs::read(samples().join(name)).unwrap_or_else(|e| panic!("sample {name}: {e}"))
}

/// The console sign-in form's token, from the form's HTML.
pub fn sign_in_token(page: &str) -> String {
    page.split("name=\"token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the sign-in form's token")
        .to_owned()
}
