//! Running the broker as a systemd service: readiness and stopping through the notify protocol
//! (`NOTIFY_SOCKET`), keep-alives when `WATCHDOG_USEC` asks for them. The broker is spawned as
//! systemd would (environment only), with a datagram socket the test owns.

mod common;
mod wire;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use odradek::protocol::messages::ApiVersionsRequest;
use wire::Conn;

/// Every datagram received until `stop` says enough or `timeout` passes.
fn receive_until(
    socket: &UnixDatagram,
    timeout: Duration,
    mut stop: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = stop(&message);
            got.push(message);
            if done {
                break;
            }
        }
    }
    got
}

#[test]
fn systemd_hears_ready_only_once_the_listener_accepts_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let port = free_port();
    let data = dir.path().join("data");
    let log = std::fs::File::create(dir.path().join("broker.log")).unwrap();
    let mut child = Command::new(broker_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&data)
        .args(["--cores", &test_cores()])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn odradek serve");
    let log_tail = || std::fs::read_to_string(dir.path().join("broker.log")).unwrap_or_default();

    let before_ready = receive_until(&socket, Duration::from_secs(60), |m| {
        m.starts_with("READY=1")
    });
    let ready = before_ready.last().cloned().unwrap_or_default();
    assert!(
        ready.starts_with("READY=1") && ready.contains("STATUS=serving"),
        "no READY=1 within 60 s; got {before_ready:?}\n{}",
        log_tail()
    );
    // Ready means serving: the very first connection attempt is answered, no retry.
    let mut conn = Conn::open(format!("127.0.0.1:{port}").parse().unwrap());
    let versions = conn.call(&ApiVersionsRequest::default(), 3);
    assert_eq!(versions.error_code, 0);
    assert!(!versions.api_keys.is_empty());

    // WatchdogSec=0.4 s: keep-alives every 0.2 s while the shards answer.
    let pings = receive_until(&socket, Duration::from_secs(3), |_| false);
    let keepalives = pings.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(
        keepalives >= 5,
        "expected a WATCHDOG=1 about every 0.2 s for 3 s, got {keepalives}: {pings:?}"
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let after = receive_until(&socket, Duration::from_secs(30), |m| {
        m.starts_with("STOPPING=1")
    });
    assert!(
        after.last().is_some_and(|m| m.starts_with("STOPPING=1")),
        "no STOPPING=1 after SIGTERM: {after:?}\n{}",
        log_tail()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("broker still running 30 s after SIGTERM\n{}", log_tail());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}\n{}", log_tail());
}

/// `systemd-analyze verify` accepts the shipped unit (with its binary path pointed at this
/// build), printing nothing: it reports unknown keys and bad values only as warnings, so
/// silence is the check. scripts/test installs systemd when the tool is missing.
#[test]
fn shipped_systemd_unit_verifies() {
    let Ok(found) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!("systemd-analyze is not installed (scripts/test installs the systemd package)");
    };
    assert!(found.status.success());
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/odradek.service"
    ))
    .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("LimitMEMLOCK=infinity"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odradek.service");
    let bin = broker_bin();
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/odradek", &bin.display().to_string()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify: {}\n{text}",
        out.status
    );
    // The check itself notices a bad key.
    std::fs::write(&path, unit.replace("Type=notify", "Type=notifyy")).unwrap();
    let bad = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("notifyy"));
}
