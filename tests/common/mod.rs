//! Shared fixture for the black-box tests: a real `odradek serve` process, rdkafka helpers and a
//! raw-TCP Kafka wire helper.
//!
//! Everything here talks to the broker only the way a user does: over the listener, through
//! the command line, through signals. Nothing here links the broker library.
//!
//! Invariants the tests rely on:
//! - every wait is bounded (connect, delivery, consume, process exit); a timeout panics with the
//!   broker's log tail so a failure explains itself;
//! - a `Broker` owns one temp directory (`data/` and `broker.log`) that survives `restart()`;
//! - dropping a `Broker` kills the process; dropping it during a panic also prints the log tail.
//!   Set `ODRADEK_KEEP_TEST_DATA=1` to keep the directory of a failed test.
#![allow(dead_code)]

pub mod small_disk;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

/// How long the broker may take to accept TCP after spawn.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the broker may take to exit after SIGTERM (it flushes first).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of broker log printed on failure.
const LOG_TAIL_LINES: usize = 80;

// ---------------------------------------------------------------------------------------------
// Broker process
// ---------------------------------------------------------------------------------------------

/// Command-line options for one broker fixture. `start()` spawns it.
#[derive(Clone, Debug, Default)]
pub struct BrokerOptions {
    cores: Option<String>,
    overrides: Vec<(String, String)>,
    env: Vec<(String, String)>,
}

impl BrokerOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// `--cores N|LIST`. Without it the broker uses its default.
    pub fn cores(mut self, cores: impl Into<String>) -> Self {
        self.cores = Some(cores.into());
        self
    }

    /// `--override KEY=VALUE` (Kafka property names).
    pub fn set(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.overrides.push((key.into(), value.to_string()));
        self
    }

    /// An environment variable of the broker process (e.g. `ODRADEK_PAUSE_POINTS`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn start(self) -> Broker {
        Broker::start_with(self)
    }
}

/// One `odradek serve` process on a private loopback port and data directory.
pub struct Broker {
    child: Option<Child>,
    port: u16,
    dir: Option<tempfile::TempDir>,
    options: BrokerOptions,
    starts: u32,
    /// Set once the log tail went into a panic message, so Drop does not print it twice.
    tail_reported: std::cell::Cell<bool>,
}

/// Path of the broker binary under test: the one cargo built for this test run, unless
/// `ODRADEK_TEST_BIN` names another build (an instrumented binary, a stand-in to check the
/// tests themselves).
pub fn broker_bin() -> PathBuf {
    match std::env::var_os("ODRADEK_TEST_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_odradek")),
    }
}

/// Two shards when the machine has them, so requests cross the shard mailbox.
pub fn test_cores() -> String {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    n.min(2).to_string()
}

/// The text of `GET /metrics` from the broker's metrics endpoint at `addr` (headers included;
/// the server closes the connection after its answer).
pub fn try_metrics_text(addr: SocketAddr) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// [`try_metrics_text`], failing the test if the endpoint does not answer.
pub fn metrics_text(addr: SocketAddr) -> String {
    try_metrics_text(addr).unwrap_or_else(|e| panic!("GET /metrics from {addr}: {e}"))
}

/// A loopback port that was free a moment ago (bind :0, read it back, release it) and that no
/// lingering listener holds: a broker another test killed can keep its SO_REUSEPORT listener a
/// few milliseconds after its port was released, and the start-up probe of a broker given
/// that port would connect to it (seen once in CI: "connection reset" on the first request).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        if listeners_on(port) == 0 {
            return port;
        }
    }
    panic!("no loopback port without a lingering listener in 100 tries");
}

impl Broker {
    /// A broker with default options.
    pub fn start() -> Broker {
        Broker::start_with(BrokerOptions::new())
    }

    pub fn start_with(options: BrokerOptions) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("odradek-test-")
            .tempdir()
            .expect("create temp dir");
        std::fs::create_dir_all(dir.path().join("data")).expect("create data dir");
        let mut broker = Broker {
            child: None,
            port: free_port(),
            dir: Some(dir),
            options,
            starts: 0,
            tail_reported: std::cell::Cell::new(false),
        };
        broker.spawn();
        broker
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `bootstrap.servers` value for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir().join("broker.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The last `lines` lines of the broker's combined stdout/stderr (all starts).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path().display()));
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        all[from..].join("\n")
    }

    /// Panics with `msg` and the log tail.
    pub fn fail(&self, msg: &str) -> ! {
        self.tail_reported.set(true);
        panic!(
            "{msg}\n----- broker log tail ({}) -----\n{}\n----- end of broker log -----",
            self.log_path().display(),
            self.log_tail(LOG_TAIL_LINES)
        )
    }

    /// True if the process is alive (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(child) => matches!(child.try_wait(), Ok(None)),
        }
    }

    fn spawn(&mut self) {
        self.launch();
        self.wait_accepting();
    }

    /// Starts the process (its output appended to the log), without waiting for anything.
    fn launch(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        self.starts += 1;
        let log_path = self.log_path();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open broker log");
        writeln!(
            log,
            "===== test fixture: start #{} on port {} =====",
            self.starts, self.port
        )
        .expect("write broker log");
        let stderr = log.try_clone().expect("clone log handle");

        let mut cmd = Command::new(broker_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg(self.bootstrap())
            .arg("--data-dir")
            .arg(self.data_dir());
        if let Some(cores) = &self.options.cores {
            cmd.arg("--cores").arg(cores);
        }
        // Test brokers run side by side: each takes an ephemeral port for its metrics endpoint
        // (the default 127.0.0.1:9644 would go to the first one and the others would log that
        // they cannot bind it), unless the test chooses one.
        if !self
            .options
            .overrides
            .iter()
            .any(|(k, _)| k == "metrics.listen")
        {
            cmd.arg("--override").arg("metrics.listen=127.0.0.1:0");
        }
        for (k, v) in &self.options.overrides {
            cmd.arg("--override").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.envs(self.options.env.iter().map(|(k, v)| (k, v)));
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => self.fail(&format!("cannot spawn {:?}: {e}", broker_bin())),
        };
        self.child = Some(child);
    }

    /// Waits until the listener accepts TCP, or fails with the log if the process exits or
    /// `START_TIMEOUT` passes.
    fn wait_accepting(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    self.fail(&format!("broker exited during start-up with {status}"));
                }
            }
            // Accepting is not enough: a lingering listener of another test's killed broker
            // may answer on this port. With the fixture's log level, this start's own "broker
            // ready" line says the listener is ours.
            let ready_logged = std::env::var_os("RUST_LOG").is_some()
                || self.log_of_last_start().contains("broker ready");
            if ready_logged
                && TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500)).is_ok()
            {
                return;
            }
            if Instant::now() >= deadline {
                self.kill_quietly();
                self.fail(&format!(
                    "broker did not accept TCP on {} within {START_TIMEOUT:?}",
                    self.addr()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` and waits up to `timeout` for exit, then until the process's listening
    /// sockets are gone (see [`wait_listeners_gone`]): a client of the next start could otherwise
    /// connect to one of them — the start-up probe would even take that for the new broker — and
    /// be reset when it closes.
    fn signal_and_wait(&mut self, signal: libc::c_int, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    if !wait_listeners_gone(self.port, Duration::from_secs(10)) {
                        self.fail(&format!(
                            "{} socket(s) still listen on port {} 10 s after the broker exited",
                            listeners_on(self.port),
                            self.port
                        ));
                    }
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                _ => return None,
            }
        }
    }

    /// Graceful stop: SIGTERM, wait, assert exit code 0.
    pub fn stop(&mut self) {
        self.stop_with(libc::SIGTERM, "SIGTERM");
    }

    /// Graceful stop by SIGINT (Ctrl-C), wait, assert exit code 0.
    pub fn interrupt(&mut self) {
        self.stop_with(libc::SIGINT, "SIGINT");
    }

    fn stop_with(&mut self, signal: libc::c_int, name: &str) {
        if self.child.is_none() {
            return;
        }
        match self.signal_and_wait(signal, STOP_TIMEOUT) {
            Some(status) if status.success() => {}
            Some(status) => self.fail(&format!("broker exited with {status} after {name}")),
            None => {
                self.kill_quietly();
                self.fail(&format!(
                    "broker did not exit within {STOP_TIMEOUT:?} of {name}"
                ));
            }
        }
    }

    /// Crash: SIGKILL and reap.
    pub fn kill9(&mut self) {
        if self
            .signal_and_wait(libc::SIGKILL, Duration::from_secs(10))
            .is_none()
            && self.child.is_some()
        {
            self.fail("broker survived SIGKILL for 10 s");
        }
    }

    fn kill_quietly(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker gracefully if it runs, then starts it again on the same port and data
    /// directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Every partition's segment files with their sizes (what a failed test shows next to the
    /// log: tells lost data from a stalled reader).
    pub fn segment_listing(&self) -> String {
        let mut lines = Vec::new();
        let Ok(parts) = std::fs::read_dir(self.data_dir()) else {
            return String::from("(no data directory)");
        };
        let mut parts: Vec<PathBuf> = parts.flatten().map(|e| e.path()).collect();
        parts.sort();
        for part in parts.iter().filter(|p| p.is_dir()) {
            let name = part.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with("__") {
                continue;
            }
            let mut files: Vec<(String, u64)> = std::fs::read_dir(part)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| {
                            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                            (e.file_name().to_string_lossy().into_owned(), len)
                        })
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            let files: Vec<String> = files.iter().map(|(f, l)| format!("{f} {l}")).collect();
            lines.push(format!("{name}: {}", files.join(", ")));
        }
        lines.join("\n")
    }

    /// Adds `--override KEY=VALUE` to the broker's next starts (a later one wins).
    pub fn add_override(&mut self, key: impl Into<String>, value: impl ToString) {
        self.options.overrides.push((key.into(), value.to_string()));
    }

    /// Starts a stopped (or killed) broker again on the same port and data directory.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again on a running broker");
        self.spawn();
    }

    /// Starts a stopped (or killed) broker again expecting the start to fail: waits up to
    /// `timeout` for the process to exit by itself and returns its status. Fails (with the log
    /// tail) if it is still running then, or if it exits successfully.
    pub fn start_expecting_exit(&mut self, timeout: Duration) -> ExitStatus {
        assert!(
            self.child.is_none(),
            "start_expecting_exit on a running broker"
        );
        self.launch();
        let deadline = Instant::now() + timeout;
        loop {
            let Some(child) = self.child.as_mut() else {
                self.fail("no broker process");
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    if status.success() {
                        self.fail("a start expected to fail exited with success");
                    }
                    return status;
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                Ok(None) => {
                    self.kill_quietly();
                    self.fail(&format!(
                        "a start expected to fail was still running after {timeout:?}"
                    ));
                }
                Err(e) => self.fail(&format!("waiting for the broker: {e}")),
            }
        }
    }

    /// The log of the latest start only (the fixture marks where each start begins).
    pub fn log_of_last_start(&self) -> String {
        let text = std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let marker = format!("===== test fixture: start #{} ", self.starts);
        match text.find(&marker) {
            Some(at) => text[at..].to_string(),
            None => String::new(),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill_quietly();
        if thread::panicking() && !self.tail_reported.get() {
            eprintln!(
                "----- broker log tail ({}) -----\n{}\n----- end of broker log -----",
                self.log_path().display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
        if thread::panicking() {
            eprintln!("----- segment files -----\n{}", self.segment_listing());
        }
        if thread::panicking() && std::env::var_os("ODRADEK_KEEP_TEST_DATA").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("keeping test directory {}", dir.keep().display());
            }
        }
    }
}

/// Runs `odradek <args>` expecting it to exit by itself within `timeout` (e.g. on a bad
/// configuration). Returns the exit status and combined stdout+stderr. If it is still running
/// at the deadline it is killed and the function panics with its output.
pub fn run_to_exit(args: &[&str], timeout: Duration) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("output.log");
    let out = File::create(&out_path).expect("create output file");
    let err = out.try_clone().expect("clone output handle");
    let mut child = Command::new(broker_bin())
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {:?}: {e}", broker_bin()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            panic!(
                "`odradek {}` still running after {timeout:?}; output:\n{text}",
                args.join(" ")
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    let text = String::from_utf8_lossy(&std::fs::read(&out_path).unwrap_or_default()).into_owned();
    (status, text)
}

// ---------------------------------------------------------------------------------------------
// rdkafka producer
// ---------------------------------------------------------------------------------------------

/// One record to produce. `partition: None` lets the client's partitioner choose.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rec {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub partition: Option<i32>,
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Rec {
    pub fn value(value: impl Into<Vec<u8>>) -> Rec {
        Rec {
            value: Some(value.into()),
            ..Rec::default()
        }
    }

    pub fn keyed(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Rec {
        Rec {
            key: Some(key.into()),
            value: Some(value.into()),
            ..Rec::default()
        }
    }

    pub fn in_partition(mut self, partition: i32) -> Rec {
        self.partition = Some(partition);
        self
    }
}

/// Outcome of one delivery report: `Ok((partition, offset))` or the client's error text.
pub type Delivery = Result<(i32, i64), String>;

/// Producer context that files every delivery report under the id passed as opaque.
#[derive(Default)]
pub struct DeliveryLog {
    next_id: AtomicUsize,
    ok_total: AtomicUsize,
    reports: Mutex<HashMap<usize, Delivery>>,
}

impl DeliveryLog {
    /// Reserves `n` consecutive delivery ids; returns the first.
    pub fn reserve(&self, n: usize) -> usize {
        self.next_id.fetch_add(n, Ordering::SeqCst)
    }

    pub fn take(&self, id: usize) -> Option<Delivery> {
        self.reports.lock().unwrap().remove(&id)
    }

    /// Removes and returns every report filed so far.
    pub fn drain(&self) -> HashMap<usize, Delivery> {
        std::mem::take(&mut *self.reports.lock().unwrap())
    }

    pub fn count(&self) -> usize {
        self.reports.lock().unwrap().len()
    }

    /// Successful deliveries reported so far (never decreases).
    pub fn ok_total(&self) -> usize {
        self.ok_total.load(Ordering::SeqCst)
    }
}

impl ClientContext for DeliveryLog {}

impl ProducerContext for DeliveryLog {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let outcome = match result {
            Ok(m) => {
                self.ok_total.fetch_add(1, Ordering::SeqCst);
                Ok((m.partition(), m.offset()))
            }
            Err((e, _)) => Err(e.to_string()),
        };
        self.reports.lock().unwrap().insert(id, outcome);
    }
}

pub type TestProducer = BaseProducer<DeliveryLog>;

/// A producer with bounded timeouts; `extra` overrides or adds librdkafka properties.
pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> TestProducer {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "30000")
        .set("socket.timeout.ms", "10000")
        .set("linger.ms", "5")
        .set("queue.buffering.max.kbytes", "262144");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    cfg.create_with_context(DeliveryLog::default())
        .expect("create producer")
}

/// Queues one record; polls while the local queue is full (bounded by `deadline`).
pub fn send_one(producer: &TestProducer, topic: &str, rec: &Rec, id: usize, deadline: Instant) {
    let mut headers = None;
    if !rec.headers.is_empty() {
        let mut h = OwnedHeaders::new_with_capacity(rec.headers.len());
        for (k, v) in &rec.headers {
            h = h.insert(Header {
                key: k.as_str(),
                value: v.as_deref(),
            });
        }
        headers = Some(h);
    }
    loop {
        let mut record: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, id);
        if let Some(k) = &rec.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &rec.value {
            record = record.payload(v.as_slice());
        }
        if let Some(p) = rec.partition {
            record = record.partition(p);
        }
        if let Some(ts) = rec.timestamp_ms {
            record = record.timestamp(ts);
        }
        if let Some(h) = &headers {
            record = record.headers(h.clone());
        }
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                assert!(
                    Instant::now() < deadline,
                    "producer queue stayed full until the deadline"
                );
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => panic!("send to {topic} failed locally: {e}"),
        }
    }
}

/// Produces every record and waits for every delivery report (bounded by `timeout`).
/// Returns the report per record, in input order.
pub fn try_produce_all(
    producer: &TestProducer,
    topic: &str,
    recs: &[Rec],
    timeout: Duration,
) -> Vec<Delivery> {
    let deadline = Instant::now() + timeout;
    let first = producer.context().reserve(recs.len());
    for (i, rec) in recs.iter().enumerate() {
        send_one(producer, topic, rec, first + i, deadline);
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    let mut out: Vec<Option<Delivery>> = vec![None; recs.len()];
    let mut missing = recs.len();
    while missing > 0 {
        producer.poll(Duration::from_millis(100));
        for (i, slot) in out.iter_mut().enumerate() {
            if slot.is_none() {
                if let Some(d) = producer.context().take(first + i) {
                    *slot = Some(d);
                    missing -= 1;
                }
            }
        }
        if missing > 0 && Instant::now() >= deadline {
            panic!(
                "{missing} of {} delivery reports for topic {topic} missing after {timeout:?}",
                recs.len()
            );
        }
    }
    out.into_iter().map(Option::unwrap).collect()
}

/// Like `try_produce_all` but asserts every delivery succeeded; returns (partition, offset).
pub fn produce_all(
    producer: &TestProducer,
    topic: &str,
    recs: &[Rec],
    timeout: Duration,
) -> Vec<(i32, i64)> {
    let reports = try_produce_all(producer, topic, recs, timeout);
    let failed: Vec<(usize, &String)> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.as_ref().err().map(|e| (i, e)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} records to {topic} failed delivery; first: {:?}",
        failed.len(),
        recs.len(),
        &failed[..failed.len().min(5)]
    );
    reports.into_iter().map(Result::unwrap).collect()
}

/// Flushes a producer within `timeout` or panics.
pub fn flush(producer: &TestProducer, timeout: Duration) {
    producer.flush(timeout).expect("producer flush");
}

// ---------------------------------------------------------------------------------------------
// rdkafka consumer
// ---------------------------------------------------------------------------------------------

/// A record read back, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// CreateTime in ms, if the record carries one.
    pub create_time_ms: Option<i64>,
    /// LogAppendTime in ms, if the broker stamped the batch.
    pub log_append_time_ms: Option<i64>,
}

static CONSUMER_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A consumer for `assign()`-only use: a unique group id (librdkafka requires one for assign),
/// no commits, CRCs checked on read.
pub fn consumer(bootstrap: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let group = format!(
        "odradek-test-{}-{}",
        std::process::id(),
        CONSUMER_SEQ.fetch_add(1, Ordering::SeqCst)
    );
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "error")
        .set("check.crcs", "true")
        .set("socket.timeout.ms", "10000");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    cfg.create().expect("create consumer")
}

/// Reads exactly `expected` records from `topic`'s `partitions`, each starting at `from`.
/// Panics on timeout or if more records than expected arrive within a short grace period.
pub fn consume_exact(
    bootstrap: &str,
    topic: &str,
    partitions: &[i32],
    from: Offset,
    expected: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    let starts: Vec<(i32, Offset)> = partitions.iter().map(|p| (*p, from)).collect();
    consume_exact_from(bootstrap, topic, &starts, expected, timeout)
}

/// Like `consume_exact` with a start offset per partition.
pub fn consume_exact_from(
    bootstrap: &str,
    topic: &str,
    starts: &[(i32, Offset)],
    expected: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    let consumer = consumer(bootstrap, &[]);
    let mut tpl = TopicPartitionList::new();
    for (p, off) in starts {
        tpl.add_partition_offset(topic, *p, *off)
            .expect("add partition offset");
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(expected);
    let mut errors: Vec<String> = Vec::new();
    while out.len() < expected {
        if Instant::now() >= deadline {
            panic!(
                "consumed {} of {expected} records from {topic} within {timeout:?}; per partition: {:?}; \
                 client errors (first 5): {:?}",
                out.len(),
                count_per_partition(&out),
                &errors[..errors.len().min(5)]
            );
        }
        if let Some(r) = consumer.poll(Duration::from_millis(200)) {
            match r {
                Ok(m) => out.push(owned_message(&m)),
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    // Grace period: nothing beyond `expected` may show up.
    let grace = Instant::now() + Duration::from_millis(1000);
    while Instant::now() < grace {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let extra = owned_message(&m);
            panic!(
                "more than {expected} records in {topic}: extra record at partition {} offset {}",
                extra.partition, extra.offset
            );
        }
    }
    out
}

/// Copies a consumed message into an owned `Consumed`.
pub fn owned_message(m: &rdkafka::message::BorrowedMessage<'_>) -> Consumed {
    let headers = m
        .headers()
        .map(|h| {
            (0..h.count())
                .map(|i| {
                    let hd = h.get(i);
                    (hd.key.to_string(), hd.value.map(|v| v.to_vec()))
                })
                .collect()
        })
        .unwrap_or_default();
    let (create_time_ms, log_append_time_ms) = match m.timestamp() {
        rdkafka::message::Timestamp::CreateTime(t) => (Some(t), None),
        rdkafka::message::Timestamp::LogAppendTime(t) => (None, Some(t)),
        rdkafka::message::Timestamp::NotAvailable => (None, None),
    };
    Consumed {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| k.to_vec()),
        value: m.payload().map(|v| v.to_vec()),
        headers,
        create_time_ms,
        log_append_time_ms,
    }
}

pub fn count_per_partition(records: &[Consumed]) -> Vec<(i32, usize)> {
    let mut counts: HashMap<i32, usize> = HashMap::new();
    for r in records {
        *counts.entry(r.partition).or_default() += 1;
    }
    let mut v: Vec<(i32, usize)> = counts.into_iter().collect();
    v.sort();
    v
}

/// Asserts an rdkafka client can fetch cluster metadata (the broker serves well-behaved
/// clients).
pub fn assert_metadata_ok(bootstrap: &str) {
    let p = producer(bootstrap, &[]);
    let md = p
        .client()
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("rdkafka metadata request to {bootstrap} failed: {e}"));
    assert!(!md.brokers().is_empty(), "metadata lists no brokers");
}

// ---------------------------------------------------------------------------------------------
// Raw Kafka wire helper (for bad-input tests)
// ---------------------------------------------------------------------------------------------

/// Big-endian Kafka primitive writer.
#[derive(Default, Clone, Debug)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }
    pub fn i8(&mut self, v: i8) -> &mut Self {
        self.buf.push(v as u8);
        self
    }
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.buf.push(v as u8);
        self
    }
    /// STRING: int16 length + bytes.
    pub fn string(&mut self, s: &str) -> &mut Self {
        self.i16(s.len() as i16);
        self.buf.extend_from_slice(s.as_bytes());
        self
    }
    /// NULLABLE_STRING: -1 for null.
    pub fn nullable_string(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.string(s),
            None => self.i16(-1),
        }
    }
    /// BYTES / RECORDS: int32 length + bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.i32(b.len() as i32);
        self.buf.extend_from_slice(b);
        self
    }
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    /// Zig-zag VARINT (record fields).
    pub fn varint(&mut self, v: i32) -> &mut Self {
        self.uvarint(((v << 1) ^ (v >> 31)) as u32 as u64)
    }
    /// Zig-zag VARLONG.
    pub fn varlong(&mut self, v: i64) -> &mut Self {
        self.uvarint(((v << 1) ^ (v >> 63)) as u64)
    }
    /// Unsigned VARINT (flexible-version lengths).
    pub fn uvarint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
        self
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Big-endian Kafka primitive reader; panics with context on short input (tests only).
pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(
            self.pos + n <= self.buf.len(),
            "response too short: need {n} bytes at {} of {} ({:02x?})",
            self.pos,
            self.buf.len(),
            self.buf
        );
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    pub fn i8(&mut self) -> i8 {
        self.take(1)[0] as i8
    }
    pub fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    pub fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    pub fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    pub fn string(&mut self) -> String {
        let n = self.i16();
        assert!(n >= 0, "null where a STRING was expected");
        String::from_utf8_lossy(self.take(n as usize)).into_owned()
    }
    pub fn nullable_string(&mut self) -> Option<String> {
        let n = self.i16();
        if n < 0 {
            None
        } else {
            Some(String::from_utf8_lossy(self.take(n as usize)).into_owned())
        }
    }
    /// ARRAY length (non-flexible), -1 as 0.
    pub fn array_len(&mut self) -> usize {
        let n = self.i32();
        assert!(n <= 1_000_000, "implausible array length {n}");
        n.max(0) as usize
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// A framed request: int32 size, request header v1 (api key, version, correlation id, client
/// id), body.
pub fn request_frame(api_key: i16, api_version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.i16(api_key)
        .i16(api_version)
        .i32(correlation_id)
        .nullable_string(Some("odradek-blackbox"));
    w.raw(body);
    frame(&w.buf)
}

/// Prefixes `payload` with its int32 length.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&(payload.len() as i32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A loopback connection with 10 s read/write timeouts.
pub fn raw_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads one size-prefixed response frame (without the size).
pub fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(0..=256 * 1024 * 1024).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("response size {len}"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body)?;
    Ok(body)
}

/// Sends one request on a fresh connection and returns the response body after the
/// correlation id (response header v0), checking the correlation id.
pub fn roundtrip(addr: SocketAddr, api_key: i16, api_version: i16, body: &[u8]) -> Vec<u8> {
    let mut s = raw_connect(addr);
    roundtrip_on(&mut s, api_key, api_version, 7, body)
}

pub fn roundtrip_on(
    s: &mut TcpStream,
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    body: &[u8],
) -> Vec<u8> {
    s.write_all(&request_frame(api_key, api_version, correlation_id, body))
        .unwrap_or_else(|e| panic!("write api {api_key} v{api_version}: {e}"));
    let resp = read_frame(s)
        .unwrap_or_else(|e| panic!("no response to api {api_key} v{api_version}: {e}"));
    let mut r = Reader::new(&resp);
    let cid = r.i32();
    assert_eq!(
        cid, correlation_id,
        "correlation id of api {api_key} v{api_version} response"
    );
    resp[4..].to_vec()
}

/// How a connection ended after bad input.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// EOF or reset: the broker closed it.
    Closed,
    /// The broker answered with `n` bytes (then maybe closed).
    Answered(usize),
    /// Still open and silent after the timeout.
    StillOpen,
}

/// Reads until the peer closes, data arrives, or `timeout` passes.
pub fn await_ending(stream: &mut TcpStream, timeout: Duration) -> Ending {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ending::Closed,
            Ok(n) => return Ending::Answered(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() >= deadline {
                    return Ending::StillOpen;
                }
            }
            Err(_) => return Ending::Closed, // reset and friends
        }
    }
}

/// Writes bytes, ignoring errors caused by the broker already having closed the connection.
pub fn write_lenient(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}

pub fn half_close(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
}

/// ApiVersions v0 on a fresh connection; asserts error code 0 and returns (key, min, max).
pub fn api_versions(addr: SocketAddr) -> Vec<(i16, i16, i16)> {
    let (err, versions) = decode_api_versions_v0(&roundtrip(addr, 18, 0, &[]));
    assert_eq!(err, 0, "ApiVersions v0 error code");
    versions
}

/// ApiVersions v0 response body: error_code, [api_key, min_version, max_version].
pub fn decode_api_versions_v0(body: &[u8]) -> (i16, Vec<(i16, i16, i16)>) {
    let mut r = Reader::new(body);
    let err = r.i16();
    let n = r.array_len();
    (err, (0..n).map(|_| (r.i16(), r.i16(), r.i16())).collect())
}

/// Asserts the broker serves a well-behaved client: ApiVersions v0 answered on a fresh
/// connection and an rdkafka metadata request succeeds.
pub fn assert_serving(broker: &mut Broker) {
    if !broker.is_running() {
        broker.fail("broker process is no longer running");
    }
    let versions = api_versions(broker.addr());
    assert!(
        versions.iter().any(|(k, _, _)| *k == 18),
        "ApiVersions answer does not list ApiVersions: {versions:?}"
    );
    assert_metadata_ok(&broker.bootstrap());
}

/// Asserts `api_key` is advertised and its version range covers `version`.
pub fn assert_supports(addr: SocketAddr, api_key: i16, version: i16) {
    let versions = api_versions(addr);
    let ok = versions
        .iter()
        .any(|(k, lo, hi)| *k == api_key && *lo <= version && version <= *hi);
    assert!(
        ok,
        "broker does not advertise api {api_key} v{version}: {versions:?}"
    );
}

/// CreateTopics v2 body (non-flexible): topics, timeout_ms, validate_only.
pub fn create_topics_body(topics: &[(&str, i32)], timeout_ms: i32) -> Vec<u8> {
    let mut w = Writer::new();
    w.i32(topics.len() as i32);
    for (name, partitions) in topics {
        w.string(name).i32(*partitions).i16(1);
        w.i32(0); // assignments
        w.i32(0); // configs
    }
    w.i32(timeout_ms).bool(false);
    w.buf
}

/// Sends CreateTopics v2 and returns (name, error code, error message) per topic.
pub fn create_topics(
    addr: SocketAddr,
    topics: &[(&str, i32)],
) -> Vec<(String, i16, Option<String>)> {
    decode_create_topics_v2(&roundtrip(addr, 19, 2, &create_topics_body(topics, 10_000)))
}

/// CreateTopics v2 response body: throttle_time_ms, [name, error_code, error_message].
pub fn decode_create_topics_v2(body: &[u8]) -> Vec<(String, i16, Option<String>)> {
    let mut r = Reader::new(body);
    let _throttle_ms = r.i32();
    let n = r.array_len();
    let out = (0..n)
        .map(|_| (r.string(), r.i16(), r.nullable_string()))
        .collect();
    assert_eq!(
        r.remaining(),
        0,
        "trailing bytes in CreateTopics v2 response"
    );
    out
}

/// Creates one topic and asserts success.
pub fn create_topic(addr: SocketAddr, name: &str, partitions: i32) {
    let res = create_topics(addr, &[(name, partitions)]);
    assert_eq!(res.len(), 1, "CreateTopics answered {res:?}");
    assert_eq!(
        (res[0].0.as_str(), res[0].1),
        (name, 0),
        "CreateTopics {name}: {res:?}"
    );
}

/// Runs `f` in a thread and panics if it does not finish within `timeout`.
pub fn with_timeout<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(timeout)
        .unwrap_or_else(|_| panic!("{what} did not finish within {timeout:?}"))
}

/// Deterministic payload of `len` bytes for record `i` of `tag` (content differs per record,
/// compressible but not trivially).
pub fn payload(tag: &str, i: usize, len: usize) -> Vec<u8> {
    let head = format!("{tag}:{i:08}:");
    let head_len = head.len();
    let mut v = head.into_bytes();
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Mostly letters with some repetition so every codec has something to do.
        v.push(b'a' + (x % 16) as u8);
    }
    v.truncate(len.max(head_len));
    v
}

/// (compression codec, record count) of every batch stored on disk for `topic`'s `partitions`
/// (codec = attributes & 7: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), read straight from the
/// segment files: the broker must store producer batches exactly as sent (passthrough), never
/// recompressed or decompressed.
pub fn stored_batch_codecs(data_dir: &Path, topic: &str, partitions: &[i32]) -> Vec<(u8, i32)> {
    use odradek::protocol::record_batch::BatchHeader;
    let mut codecs = Vec::new();
    for p in partitions {
        let dir = data_dir.join(format!("{topic}-{p}"));
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        segments.sort();
        for seg in segments {
            let bytes =
                std::fs::read(&seg).unwrap_or_else(|e| panic!("read {}: {e}", seg.display()));
            let mut pos = 0;
            while pos + 12 <= bytes.len() {
                let Ok(h) = BatchHeader::parse(&bytes[pos..]) else {
                    break;
                };
                if h.batch_length <= 0 {
                    break;
                }
                codecs.push((h.compression(), h.records_count));
                pos += h.total_len();
            }
        }
    }
    codecs
}

// ---------------------------------------------------------------------------------------------
// Listener sockets of a stopped broker
// ---------------------------------------------------------------------------------------------

/// Number of sockets in LISTEN state on 127.0.0.1:`port` or 0.0.0.0:`port` (from
/// `/proc/net/tcp`; 0 where it cannot be read).
pub fn listeners_on(port: u16) -> usize {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    let port_hex = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3
                && fields[1]
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p.eq_ignore_ascii_case(&port_hex))
                && fields[3] == "0A" // TCP_LISTEN
        })
        .count()
}

/// Waits until no socket listens on `port` any more; returns false if some still do after
/// `timeout`.
///
/// Why: after SIGKILL the broker's io_uring instance is torn down by the kernel after the process
/// is reaped, and the listening sockets its pending accepts hold linger for a few milliseconds.
/// The broker binds with SO_REUSEPORT, so a new broker joins that group, and connections the
/// kernel hashes to a lingering socket are reset when it finally closes.
pub fn wait_listeners_gone(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while listeners_on(port) > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
    true
}

// ---------------------------------------------------------------------------------------------
// rdkafka admin client
// ---------------------------------------------------------------------------------------------

/// An AdminClient with bounded socket timeouts.
pub fn admin(
    bootstrap: &str,
) -> rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "10000")
        .create()
        .expect("admin client")
}

/// Admin options with a 30 s request timeout.
pub fn admin_opts() -> rdkafka::admin::AdminOptions {
    rdkafka::admin::AdminOptions::new().request_timeout(Some(Duration::from_secs(30)))
}

/// VmRSS of `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}
