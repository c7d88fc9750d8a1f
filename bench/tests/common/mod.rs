//! What the black-box tests share: the broker binary, a real `odradek serve` on a private
//! loopback port and temp data directory (killed on drop), and running `odradek-bench` with a
//! time bound. Every wait is bounded.

#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BENCH: &str = env!("CARGO_BIN_EXE_odradek-bench");

pub fn broker_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("ODRADEK_BIN") {
            return PathBuf::from(p);
        }
        let dir = Path::new(BENCH).parent().expect("bench binary dir");
        let bin = dir.join("odradek");
        let release = dir.ends_with("release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "odradek", "--bin", "odradek"]);
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo build for the broker");
        assert!(st.success(), "building the broker failed");
        bin
    })
}

/// CPU for the broker (the bench client uses the other one when there are two).
pub fn cpus() -> (String, String) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n >= 2 {
        ("0-0".into(), "1-1".into())
    } else {
        ("0-0".into(), "0-0".into())
    }
}

pub struct Broker {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub overrides: Vec<String>,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// With `--override KEY=VALUE` options.
    pub fn start_with(overrides: &[&str]) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("odradek-bench-test-")
            .tempdir()
            .expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut b = Broker {
            child: None,
            port,
            dir,
            overrides: overrides.iter().map(|o| o.to_string()).collect(),
        };
        b.spawn();
        b
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .expect("broker log");
        let child = Command::new(broker_bin())
            .args(["serve", "--listen", &self.bootstrap(), "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--cores", &cpus().0])
            .args(
                self.overrides
                    .iter()
                    .flat_map(|o| ["--override", o.as_str()]),
            )
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn odradek serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "broker did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The killed process's io_uring is torn down asynchronously: its SO_REUSEPORT listener
        // can outlive it briefly and take (then reset) connections meant for the restarted
        // broker. Wait until nothing listens on the port.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the bench with a time bound; returns (exit code, stdout+stderr).
pub fn bench(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(BENCH)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn odradek-bench");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("bench output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.code().unwrap_or(-1), text)
}

pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read json")).expect("parse json")
}
