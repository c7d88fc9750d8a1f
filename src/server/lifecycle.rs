//! The broker process's lifecycle as the outside world sees it: ready (every shard has
//! recovered its partitions and listens), stopping (a signal arrived). Told to systemd through
//! its notify protocol (`sd_notify(3)`: datagrams such as `READY=1` to the socket named by
//! `NOTIFY_SOCKET`, a path or `@abstract`), and read by the health endpoints.
//!
//! One per process, shared by every shard and the signal thread (`Arc`, atomics only). Without
//! `NOTIFY_SOCKET` (not started by systemd) notifications are skipped.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct Lifecycle {
    notify: Option<(UnixDatagram, SocketAddr)>,
    ready: AtomicBool,
    stopping: AtomicBool,
    /// `WATCHDOG_USEC` when systemd asks for keep-alives (and they are meant for us).
    watchdog: Option<Duration>,
}

impl Lifecycle {
    /// From the environment systemd gives a `Type=notify` service.
    pub fn from_env() -> Lifecycle {
        let notify = std::env::var_os("NOTIFY_SOCKET").and_then(|s| {
            let s = s.to_string_lossy().into_owned();
            match notify_socket(&s) {
                Ok(target) => Some(target),
                Err(e) => {
                    log::warn!("NOTIFY_SOCKET={s}: {e}; systemd will not hear from the broker");
                    None
                }
            }
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|usec| *usec > 0 && for_us)
            .map(Duration::from_micros);
        Lifecycle {
            notify,
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            watchdog,
        }
    }

    /// Every shard serves: tells systemd (`READY=1` with a status line).
    pub fn mark_ready(&self, status: &str) {
        self.ready.store(true, Ordering::Release);
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// Shutdown began: not ready any more, and systemd is told (`STOPPING=1`).
    pub fn mark_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
        self.ready.store(false, Ordering::Release);
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// Ready and not stopping.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// How often to send `WATCHDOG=1` (half of `WatchdogSec`, as sd_watchdog_enabled(3)
    /// recommends), if systemd watches this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// One keep-alive: the caller has just checked that every shard answers.
    pub fn watchdog_ping(&self) {
        self.send("WATCHDOG=1");
    }

    fn send(&self, message: &str) {
        if let Some((socket, target)) = &self.notify {
            if let Err(e) = socket.send_to_addr(message.as_bytes(), target) {
                log::warn!("sd_notify {:?}: {e}", message.lines().next());
            }
        }
    }
}

/// The datagram socket and address for a `NOTIFY_SOCKET` value: an absolute path, or `@name`
/// for the abstract namespace.
fn notify_socket(value: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    let target = match value.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None if value.starts_with('/') => SocketAddr::from_pathname(value)?,
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "neither an absolute path nor @abstract",
            ))
        }
    };
    Ok((UnixDatagram::unbound()?, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let (socket, target) = notify_socket(path.to_str().unwrap()).unwrap();
        let life = Lifecycle {
            notify: Some((socket, target)),
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            watchdog: None,
        };
        assert!(!life.is_ready());
        life.mark_ready("serving");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
        assert!(life.is_ready());
        life.mark_stopping();
        let n = listener.recv(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"STOPPING=1"));
        assert!(!life.is_ready() && life.is_stopping());

        use std::os::linux::net::SocketAddrExt;
        let name = format!("odradek-test-{}", std::process::id());
        let abstract_addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        let (socket, target) = notify_socket(&format!("@{name}")).unwrap();
        socket.send_to_addr(b"WATCHDOG=1", &target).unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");

        assert!(notify_socket("relative/path").is_err());
    }
}
