//! Crash loop (issue 9): idempotent acks=all producers (one per codec: none, gzip, snappy, lz4,
//! zstd) write to a plain topic, a topic with a small `retention.bytes` and a compacted topic with
//! many overwrites over few keys, while a consumer group commits its position continuously. The
//! broker is killed with SIGKILL at random moments — after a random delay, right after it logs a
//! compaction or retention pass, or from inside at a named crash point (`src/crash_points.rs`:
//! segment roll and seal, index write, producer snapshot, compaction swap, retention delete,
//! group-commit fdatasync, offset commit, transaction state write and markers) — then restarted, and every cycle checks:
//!
//! 1. while it is down, straight from the files (our own batch parser, not the broker's): every
//!    segment but a partition's last is whole (CRC-32C, contiguous offsets, the file ends at its
//!    last batch, the next segment starts where it ends; a merge killed after its commit point
//!    is checked as start-up completes it, its `.log.swap` standing for the run), and every
//!    acknowledged offset lies inside the valid prefix;
//! 2. after the restart, from its log: the broker truncated only tails, exactly where our parser
//!    says the valid prefix ends, and logged no error;
//! 3. over the wire: every acknowledged record reads back exactly once at its acknowledged offset
//!    with its key and value (a verified cursor per partition keeps this linear; the whole plain
//!    topic is reread every few cycles and at the end); records sent but not acknowledged appear
//!    at most once; the retention topic likewise above its log start offset; on the compacted
//!    topic every key's latest acknowledged value (or a later one) is there, offsets increase,
//!    and no record moved;
//! 4. OffsetFetch for the group never returns less than the last acknowledged commit;
//! 5. a transactional producer's transactions (`crash_loop/txn.rs`), read with
//!    `read_committed`: committed ones whole and once, aborted ones never, ones whose commit
//!    the kill cut off all or nothing.
//!
//! Every record carries its id in an `id` header; key and value are derived from the id, so the
//! ledger keeps a few bytes per record.
//!
//! `ODRADEK_CRASH_CYCLES` (default 16, sized for CI: about a minute on 2 cores),
//! `ODRADEK_CRASH_SEED` (random, printed: a failing run replays its kill schedule as far as timing
//! allows), `ODRADEK_CRASH_RATE` (records per second over all producers, default 3000). The long
//! version: `ODRADEK_CRASH_CYCLES=200 cargo test --release --test crash_loop -- --nocapture`.

mod common;
#[path = "crash_loop/txn.rs"]
mod txn;

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{broker_bin, free_port, test_cores, wait_listeners_gone};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// Every bounded wait of the harness (reads, OffsetFetch, a graceful stop).
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a start (recovery included) may take before the harness reports a hang.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const GROUP: &str = "crash-group";
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
/// Keys per partition of the compacted topic.
const COMPACTED_KEYS: u32 = 40;
/// The whole plain topic is reread (not only past the cursor) every this many cycles.
const FULL_REREAD_EVERY: usize = 5;

/// The three topics: which one a record went to is its index here.
struct TopicSpec {
    name: &'static str,
    partitions: i32,
    configs: &'static [(&'static str, &'static str)],
    /// Share of the produced records (out of 100).
    share: u32,
}

const PLAIN: usize = 0;
const RETAINED: usize = 1;
const COMPACTED: usize = 2;
const TOPICS: [TopicSpec; 3] = [
    TopicSpec {
        name: "crash-plain",
        partitions: 4,
        configs: &[("segment.bytes", "131072")],
        share: 60,
    },
    TopicSpec {
        name: "crash-retained",
        partitions: 2,
        configs: &[
            ("segment.bytes", "65536"),
            ("retention.bytes", "262144"),
            ("retention.ms", "-1"),
        ],
        share: 20,
    },
    TopicSpec {
        name: "crash-compacted",
        partitions: 2,
        configs: &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "65536"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.compaction.lag.ms", "0"),
            ("delete.retention.ms", "2000"),
        ],
        share: 20,
    },
];

/// Broker settings that make rolls, index writes, compaction and retention frequent.
const BROKER_OVERRIDES: &[(&str, &str)] = &[
    ("log.segment.bytes", "131072"),
    ("log.index.interval.bytes", "1024"),
    ("log.cleaner.backoff.ms", "100"),
    ("log.cleaner.min.cleanable.ratio", "0.01"),
    ("log.retention.check.interval.ms", "100"),
    ("offsets.topic.num.partitions", "4"),
    ("group.initial.rebalance.delay.ms", "0"),
    ("metrics.listen", "127.0.0.1:0"),
];

/// Crash points and the probability per hit used when a cycle arms one (tuned to how often each
/// is hit under this load: a group-commit round happens hundreds of times a second, a roll a few
/// times).
const CRASH_POINTS: &[(&str, f64)] = &[
    ("segment_roll", 0.3),
    ("segment_seal", 0.3),
    ("index_write", 0.3),
    ("producer_snapshot", 0.3),
    ("compaction_cleaned", 0.3),
    ("compaction_swap_before", 0.3),
    ("compaction_swap_after", 0.3),
    ("compaction_merge_removed", 0.5),
    ("compaction_checkpoint", 0.2),
    ("retention_delete", 0.1),
    ("commit_fsync_before", 0.005),
    ("commit_fsync_after", 0.005),
    ("offset_commit_durable", 0.1),
    ("txn_state_durable", 0.05),
    ("txn_markers_written", 0.2),
];

// ---------------------------------------------------------------------------------------------
// Random numbers (seeded, so a run's schedule can be replayed)
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn between_ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// The broker process (our own fixture: each start gets its own crash-point environment)
// ---------------------------------------------------------------------------------------------

/// How one start of the broker ended.
#[derive(Debug)]
enum Death {
    /// Killed by the harness.
    Harness,
    /// Killed itself at this crash point.
    CrashPoint(String),
}

/// One broker data directory, started and killed many times on the same port.
struct CrashBroker {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    starts: u32,
    /// Where this start's lines begin in the log file.
    log_from: u64,
}

impl CrashBroker {
    fn new() -> CrashBroker {
        let dir = tempfile::Builder::new()
            .prefix("odradek-crash-")
            .tempdir()
            .expect("create temp dir");
        std::fs::create_dir_all(dir.path().join("data")).expect("create data dir");
        CrashBroker {
            dir,
            port: free_port(),
            child: None,
            starts: 0,
            log_from: 0,
        }
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }
    fn arm_path(&self) -> PathBuf {
        self.dir.path().join("crash-armed")
    }

    /// Starts the broker with `crash_spec` as `ODRADEK_CRASH_POINTS` (points fire only while the
    /// arm file exists) and waits until it accepts TCP.
    fn start(&mut self, crash_spec: Option<&str>, seed: u64) {
        assert!(self.child.is_none(), "broker already running");
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open broker log");
        writeln!(log, "===== crash loop: start #{} =====", self.starts).expect("write log");
        self.log_from = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stderr = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(broker_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg(self.bootstrap())
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--cores")
            .arg(test_cores());
        for (k, v) in BROKER_OVERRIDES {
            cmd.arg("--override").arg(format!("{k}={v}"));
        }
        cmd.env_remove("ODRADEK_CRASH_POINTS");
        if let Some(spec) = crash_spec {
            cmd.env("ODRADEK_CRASH_POINTS", spec)
                .env("ODRADEK_CRASH_ARM_FILE", self.arm_path())
                .env("ODRADEK_CRASH_SEED", seed.to_string());
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| self.fail(&format!("cannot spawn {:?}: {e}", broker_bin())));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                self.fail(&format!("broker exited during start-up with {status}"));
            }
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                let stacks = self.child.as_ref().map(|c| thread_stacks(c.id()));
                self.fail(&format!(
                    "broker did not accept TCP within {START_TIMEOUT:?}; its threads:\n{}",
                    stacks.unwrap_or_default()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status if the process has exited (reaped, listeners gone).
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        if !wait_listeners_gone(self.port, Duration::from_secs(10)) {
            self.fail("listening sockets linger 10 s after the broker exited");
        }
        Some(status)
    }

    /// SIGKILL (unless it already died) and reap; says how it ended.
    fn kill9(&mut self) -> Death {
        if let Some(status) = self.exited() {
            return self.death_of(status);
        }
        let Some(child) = self.child.as_mut() else {
            self.fail("kill9 without a running broker");
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
        }
        let status = child.wait().expect("wait for the killed broker");
        self.child = None;
        if !wait_listeners_gone(self.port, Duration::from_secs(10)) {
            self.fail("listening sockets linger 10 s after kill -9");
        }
        match self.fired_point() {
            // It fired in the same instant the harness killed it.
            Some(point) => Death::CrashPoint(point),
            None => {
                use std::os::unix::process::ExitStatusExt;
                if status.signal() != Some(libc::SIGKILL) {
                    self.fail(&format!("broker ended with {status} instead of SIGKILL"));
                }
                Death::Harness
            }
        }
    }

    /// A broker that died by itself must have died at a crash point (never a panic or an exit).
    fn death_of(&self, status: ExitStatus) -> Death {
        use std::os::unix::process::ExitStatusExt;
        match (status.signal(), self.fired_point()) {
            (Some(libc::SIGKILL), Some(point)) => Death::CrashPoint(point),
            _ => self.fail(&format!(
                "broker died by itself with {status}, not at a crash point"
            )),
        }
    }

    /// The crash point this start's log says fired, if any.
    fn fired_point(&self) -> Option<String> {
        self.this_start_log().lines().find_map(|l| {
            l.strip_prefix("crash point ")
                .and_then(|rest| rest.split_once(" fired"))
                .map(|(name, _)| name.to_string())
        })
    }

    /// The log lines written by the current (or last) start.
    fn this_start_log(&self) -> String {
        self.log_since(self.log_from).0
    }

    /// The log from byte `from` on, and where it ends now.
    fn log_since(&self, from: u64) -> (String, u64) {
        let mut bytes = Vec::new();
        if let Ok(mut f) = std::fs::File::open(self.log_path()) {
            if f.seek(SeekFrom::Start(from)).is_ok() {
                let _ = f.read_to_end(&mut bytes);
            }
        }
        let end = from + bytes.len() as u64;
        (String::from_utf8_lossy(&bytes).into_owned(), end)
    }

    /// Graceful stop: SIGTERM must end the process with status 0.
    fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.exited() {
                if !status.success() {
                    self.fail(&format!("broker exited with {status} after SIGTERM"));
                }
                return;
            }
            if Instant::now() >= deadline {
                self.fail("broker did not exit within 30 s of SIGTERM");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn fail(&self, msg: &str) -> ! {
        panic!(
            "{msg}\n----- broker log tail ({}) -----\n{}\n----- end of broker log -----",
            self.log_path().display(),
            self.log_tail(60)
        )
    }
}

/// Name, state, wait channel and kernel stack of every thread of `pid` (what a hung start-up is
/// waiting for; the kernel stack needs root, else it is left out).
fn thread_stacks(pid: u32) -> String {
    let mut out = String::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
        let state = read("status")
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or_default()
            .to_string();
        out.push_str(&format!(
            "--- {} {} wchan={}\n{}",
            read("comm").trim(),
            state,
            read("wchan"),
            read("stack")
        ));
    }
    out
}

impl Drop for CrashBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() && std::env::var_os("ODRADEK_KEEP_TEST_DATA").is_some() {
            let dir = std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("placeholder temp dir"),
            );
            eprintln!("keeping test directory {}", dir.keep().display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The ledger: every record sent, what the broker acknowledged, what the verifier saw
// ---------------------------------------------------------------------------------------------

/// One record sent (its key and value are derived from its id, see `key_of`/`value_of`).
#[derive(Clone, Debug)]
struct SentRec {
    topic: u8,
    partition: i32,
    /// Key number on the compacted topic.
    key: u32,
    value_len: u32,
    tombstone: bool,
    /// The acknowledged offset.
    ack: Option<i64>,
    failed: bool,
    /// Where a verifier read it (it must never be read anywhere else).
    seen: Option<i64>,
}

fn key_of(id: u64, r: &SentRec) -> Vec<u8> {
    if r.topic as usize == COMPACTED {
        format!("p{}-key{:02}", r.partition, r.key).into_bytes()
    } else {
        format!("k{id}").into_bytes()
    }
}

fn value_of(id: u64, r: &SentRec) -> Option<Vec<u8>> {
    (!r.tombstone).then(|| common::payload("v", id as usize, r.value_len as usize))
}

#[derive(Default)]
struct Ledger {
    sent: Vec<SentRec>,
    /// Ids acknowledged since the verifier last took them.
    fresh_acks: Vec<u64>,
    acked: u64,
    failed: u64,
    /// First delivery errors (text), for the summary.
    errors: Vec<String>,
    /// Things that are wrong whatever the log says (e.g. two delivery reports for one record).
    violations: Vec<String>,
    /// Highest acknowledged offset per topic and partition.
    max_ack: [BTreeMap<i32, i64>; 3],
}

/// Committed offsets the broker acknowledged.
#[derive(Default)]
struct Commits {
    acked: BTreeMap<i32, i64>,
    requests_ok: u64,
    requests_failed: u64,
}

/// State shared by the client threads and the verifier.
struct Shared {
    bootstrap: String,
    ledger: Mutex<Ledger>,
    commits: Mutex<Commits>,
    stop: AtomicBool,
    paused: AtomicBool,
    consumed: AtomicU64,
    producer_fatal: Mutex<Vec<String>>,
    txns: Mutex<txn::TxnLedger>,
}

/// Files each delivery report in the ledger under the record's id.
struct LedgerContext {
    shared: Arc<Shared>,
}

impl ClientContext for LedgerContext {}

impl ProducerContext for LedgerContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let mut l = self.shared.ledger.lock().unwrap();
        let l = &mut *l;
        let Some(rec) = l.sent.get_mut(id) else {
            l.violations
                .push(format!("delivery report for unknown id {id}"));
            return;
        };
        match result {
            Ok(m) => {
                let topic = rec.topic as usize;
                if m.partition() != rec.partition || m.topic() != TOPICS[topic].name {
                    l.violations.push(format!(
                        "record {id} for {}-{} acknowledged on {}-{}",
                        TOPICS[topic].name,
                        rec.partition,
                        m.topic(),
                        m.partition()
                    ));
                }
                if rec.ack.is_some() || rec.failed {
                    l.violations
                        .push(format!("record {id}: a second delivery report"));
                }
                rec.ack = Some(m.offset());
                l.acked += 1;
                l.fresh_acks.push(id as u64);
                let max = l.max_ack[topic].entry(rec.partition).or_insert(-1);
                *max = (*max).max(m.offset());
            }
            Err((e, _)) => {
                if rec.ack.is_some() || rec.failed {
                    l.violations
                        .push(format!("record {id}: a second delivery report"));
                }
                rec.failed = true;
                l.failed += 1;
                if l.errors.len() < 20 {
                    l.errors.push(format!("record {id}: {e}"));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client threads: producers (one per codec) and the group member that commits
// ---------------------------------------------------------------------------------------------

fn create_producer(shared: &Arc<Shared>, codec: &str) -> BaseProducer<LedgerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", &shared.bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", codec)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .set("socket.timeout.ms", "10000")
        .set("reconnect.backoff.ms", "20")
        .set("reconnect.backoff.max.ms", "300")
        .set("queue.buffering.max.kbytes", "65536")
        .create_with_context(LedgerContext {
            shared: shared.clone(),
        })
        .expect("create producer")
}

/// Sends records at `rate` per second (while not paused) until told to stop, then waits for every
/// delivery report.
fn produce_loop(shared: Arc<Shared>, codec: &'static str, rate: u64, seed: u64) {
    let mut rng = Rng(seed);
    let producer = create_producer(&shared, codec);
    let tick = Duration::from_millis(20);
    let per_tick = (rate * tick.as_millis() as u64 / 1000).max(1);
    let mut next = Instant::now();
    let mut fatal_seen = false;
    while !shared.stop.load(Ordering::SeqCst) {
        producer.poll(Duration::ZERO);
        if let Some((code, text)) = producer.client().fatal_error() {
            if !fatal_seen {
                fatal_seen = true;
                shared
                    .producer_fatal
                    .lock()
                    .unwrap()
                    .push(format!("{codec}: {code:?} {text}"));
            }
            thread::sleep(tick);
            continue;
        }
        if shared.paused.load(Ordering::SeqCst) || producer.in_flight_count() > 2000 {
            producer.poll(tick);
            next = Instant::now();
            continue;
        }
        for _ in 0..per_tick {
            send_random(&shared, &producer, &mut rng);
        }
        next += tick;
        let now = Instant::now();
        if next > now {
            producer.poll(next - now);
        } else {
            next = now;
        }
    }
    // Every report before leaving (the broker is up at the end of the loop).
    let deadline = Instant::now() + Duration::from_secs(120);
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        producer.poll(Duration::from_millis(100));
    }
}

fn send_random(shared: &Shared, producer: &BaseProducer<LedgerContext>, rng: &mut Rng) {
    let roll = rng.below(100) as u32;
    let topic = if roll < TOPICS[PLAIN].share {
        PLAIN
    } else if roll < TOPICS[PLAIN].share + TOPICS[RETAINED].share {
        RETAINED
    } else {
        COMPACTED
    };
    let rec = SentRec {
        topic: topic as u8,
        partition: rng.below(TOPICS[topic].partitions as u64) as i32,
        key: rng.below(COMPACTED_KEYS as u64) as u32,
        value_len: 40 + rng.below(360) as u32,
        tombstone: topic == COMPACTED && rng.below(100) < 5,
        ack: None,
        failed: false,
        seen: None,
    };
    let id = {
        let mut l = shared.ledger.lock().unwrap();
        l.sent.push(rec.clone());
        l.sent.len() as u64 - 1
    };
    let key = key_of(id, &rec);
    let value = value_of(id, &rec);
    let id_text = id.to_string();
    let headers = OwnedHeaders::new().insert(Header {
        key: "id",
        value: Some(id_text.as_bytes()),
    });
    let mut record: BaseRecord<'_, [u8], [u8], usize> =
        BaseRecord::with_opaque_to(TOPICS[topic].name, id as usize)
            .partition(rec.partition)
            .key(&key[..])
            .headers(headers);
    if let Some(v) = &value {
        record = record.payload(&v[..]);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(20));
            }
            Err((e, _)) => {
                // Never queued: no delivery report will come.
                let mut l = shared.ledger.lock().unwrap();
                l.sent[id as usize].failed = true;
                l.failed += 1;
                if l.errors.len() < 20 {
                    l.errors.push(format!("record {id} not queued: {e}"));
                }
                return;
            }
        }
    }
}

/// A group member of `GROUP` on the plain topic: polls, and commits its position every 200 ms
/// (CommitMode::Sync: an Ok is the broker's acknowledgement).
fn group_member_loop(shared: Arc<Shared>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &shared.bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "30000")
        .set("heartbeat.interval.ms", "1000")
        .set("check.crcs", "true")
        .set("socket.timeout.ms", "10000")
        .set("reconnect.backoff.ms", "20")
        .set("reconnect.backoff.max.ms", "300")
        .create()
        .expect("create group member");
    consumer
        .subscribe(&[TOPICS[PLAIN].name])
        .expect("subscribe");
    let mut last_commit = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(50)) {
            shared.consumed.fetch_add(1, Ordering::Relaxed);
        }
        if last_commit.elapsed() < Duration::from_millis(200) {
            continue;
        }
        last_commit = Instant::now();
        let Ok(position) = consumer.position() else {
            continue;
        };
        let mut tpl = TopicPartitionList::new();
        let mut offsets = Vec::new();
        for e in position.elements_for_topic(TOPICS[PLAIN].name) {
            if let Offset::Offset(o) = e.offset() {
                if tpl
                    .add_partition_offset(TOPICS[PLAIN].name, e.partition(), Offset::Offset(o))
                    .is_ok()
                {
                    offsets.push((e.partition(), o));
                }
            }
        }
        if offsets.is_empty() {
            continue;
        }
        let ok = consumer.commit(&tpl, CommitMode::Sync).is_ok();
        let mut c = shared.commits.lock().unwrap();
        if ok {
            c.requests_ok += 1;
            for (p, o) in offsets {
                let e = c.acked.entry(p).or_insert(o);
                *e = (*e).max(o);
            }
        } else {
            c.requests_failed += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Check 1: the segment files of a dead broker, parsed independently of the broker's code
// ---------------------------------------------------------------------------------------------

/// What a scan of one `.log` file found.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileScan {
    /// End of the valid prefix: whole batches with good CRCs and contiguous offsets.
    valid_end: u64,
    /// Offset after the last valid batch.
    next_offset: i64,
    /// Why the scan stopped before the end of the file, if it did.
    stop: Option<String>,
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// RecordBatch v2 framing: baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8
/// | crc u32 (CRC-32C of everything from attributes on) | attributes i16 | lastOffsetDelta i32 ...
fn scan_log_bytes(bytes: &[u8], base: i64) -> FileScan {
    let mut pos = 0usize;
    let mut next = base;
    let stop = loop {
        let rest = &bytes[pos..];
        if rest.is_empty() {
            break None;
        }
        if rest.len() < 61 {
            break Some(if rest.iter().all(|b| *b == 0) {
                "zeros".to_string()
            } else {
                format!("{} trailing bytes", rest.len())
            });
        }
        if rest[..12].iter().all(|b| *b == 0) {
            break Some("zeros".to_string());
        }
        let length = be_i32(rest, 8);
        if length < 49 {
            break Some(format!("batch length {length}"));
        }
        let total = 12 + length as usize;
        if total > rest.len() {
            break Some(format!("batch of {total} bytes, {} left", rest.len()));
        }
        if rest[16] != 2 {
            break Some(format!("magic {}", rest[16]));
        }
        let crc = u32::from_be_bytes([rest[17], rest[18], rest[19], rest[20]]);
        if crc32c::crc32c(&rest[21..total]) != crc {
            break Some("CRC mismatch".to_string());
        }
        let base_offset = be_i64(rest, 0);
        if base_offset != next {
            break Some(format!("base offset {base_offset}, expected {next}"));
        }
        next = base_offset + be_i32(rest, 23) as i64 + 1;
        pos += total;
    };
    FileScan {
        valid_end: pos as u64,
        next_offset: next,
        stop,
    }
}

/// Per partition directory, the state a dead broker left.
#[derive(Clone, Debug)]
struct PartitionFiles {
    tail_base: i64,
    tail: FileScan,
    tail_len: u64,
}

/// Scans of unchanged files are reused (a sealed segment does not change; compaction replaces
/// it with a new inode).
#[derive(Default)]
struct ScanCache {
    files: HashMap<PathBuf, ((u64, u64, i128), FileScan)>,
    files_scanned: u64,
    bytes_scanned: u64,
    /// Index files whose `.log` is gone (left by a crash in the middle of a retention delete),
    /// at the last scan.
    orphans: Vec<PathBuf>,
}

impl ScanCache {
    fn scan(&mut self, path: &Path, base: i64) -> Result<(FileScan, u64), String> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let stamp = (
            md.len(),
            md.ino(),
            md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
        );
        if let Some((s, scan)) = self.files.get(path) {
            if *s == stamp {
                return Ok((scan.clone(), md.len()));
            }
        }
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.files_scanned += 1;
        self.bytes_scanned += bytes.len() as u64;
        let scan = scan_log_bytes(&bytes, base);
        self.files.insert(path.to_path_buf(), (stamp, scan.clone()));
        Ok((scan, bytes.len() as u64))
    }

    /// Checks every partition directory under `data`: all segments but the last whole and
    /// contiguous. Returns the tail state per directory name.
    fn check_data_dir(&mut self, data: &Path) -> Result<BTreeMap<String, PartitionFiles>, String> {
        let mut out = BTreeMap::new();
        self.orphans.clear();
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(data)
            .map_err(|e| format!("{}: {e}", data.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        let live: std::collections::HashSet<PathBuf> = dirs.iter().cloned().collect();
        self.files
            .retain(|p, _| p.parent().is_some_and(|d| live.contains(d)) && p.exists());
        for dir in dirs {
            let name = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let names: Vec<String> = std::fs::read_dir(&dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            let mut bases: Vec<i64> = names
                .iter()
                .filter_map(|f| {
                    let stem = f.strip_suffix(".log")?;
                    (stem.len() == 20)
                        .then(|| stem.parse::<i64>().ok())
                        .flatten()
                })
                .collect();
            bases.sort_unstable();
            for f in &names {
                let stem = [".index", ".timeindex", ".txnindex"]
                    .iter()
                    .find_map(|ext| f.strip_suffix(ext));
                if let Some(stem) = stem {
                    if stem.parse::<i64>().is_ok_and(|b| !bases.contains(&b)) {
                        self.orphans.push(dir.join(f));
                    }
                }
            }
            // A merge of segments interrupted after its commit point (`<first>.log.swap`
            // written and synced, see `PartitionLog::commit_merge`): start-up renames the swap
            // over `<first>.log` and drops what is left of the run's later segments, so the
            // swap stands for the run. It must be whole.
            let mut swapped: HashMap<i64, PathBuf> = HashMap::new();
            for f in &names {
                let Some(stem) = f.strip_suffix(".log.swap") else {
                    continue;
                };
                let Some(b) = (stem.len() == 20)
                    .then(|| stem.parse::<i64>().ok())
                    .flatten()
                else {
                    continue;
                };
                let path = dir.join(f);
                let (scan, len) = self.scan(&path, b)?;
                if scan.stop.is_some() || scan.valid_end != len || scan.next_offset <= b {
                    return Err(format!(
                        "{}: committed merged segment corrupt: valid up to byte {} of {len}, \
                         next offset {}, stop {:?}",
                        path.display(),
                        scan.valid_end,
                        scan.next_offset,
                        scan.stop
                    ));
                }
                if !bases.contains(&b) {
                    return Err(format!(
                        "{}: committed merged segment without its first segment's .log",
                        path.display()
                    ));
                }
                bases.retain(|&x| x <= b || x >= scan.next_offset);
                swapped.insert(b, path);
            }
            let Some(&tail_base) = bases.last() else {
                continue;
            };
            if swapped.contains_key(&tail_base) {
                return Err(format!(
                    "{}: a committed merged segment at the tail ({tail_base})",
                    dir.display()
                ));
            }
            for w in bases.windows(2) {
                let path = swapped
                    .get(&w[0])
                    .cloned()
                    .unwrap_or_else(|| dir.join(format!("{:020}.log", w[0])));
                let (scan, len) = self.scan(&path, w[0])?;
                if scan.stop.is_some() || scan.valid_end != len || scan.next_offset != w[1] {
                    return Err(format!(
                        "{}: sealed segment corrupt: valid up to byte {} of {len}, next offset \
                         {} (next segment starts at {}), stop {:?}",
                        path.display(),
                        scan.valid_end,
                        scan.next_offset,
                        w[1],
                        scan.stop
                    ));
                }
            }
            let path = dir.join(format!("{tail_base:020}.log"));
            let (tail, tail_len) = self.scan(&path, tail_base)?;
            out.insert(
                name,
                PartitionFiles {
                    tail_base,
                    tail,
                    tail_len,
                },
            );
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Check 3: reading the topics back over the wire
// ---------------------------------------------------------------------------------------------

/// One record read back: offset and the `id` header.
#[derive(Clone, Debug)]
struct ReadRec {
    offset: i64,
    id: Option<u64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

fn verify_consumer(bootstrap: &str) -> BaseConsumer {
    common::consumer(
        bootstrap,
        &[
            ("fetch.wait.max.ms", "50"),
            ("reconnect.backoff.ms", "20"),
            ("reconnect.backoff.max.ms", "300"),
        ],
    )
}

fn watermarks(c: &BaseConsumer, topic: &str, p: i32) -> Result<(i64, i64), String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match c.fetch_watermarks(topic, p, Duration::from_secs(5)) {
            Ok(w) => return Ok(w),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("watermarks of {topic}-{p}: {e}"))
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Reads `topic`'s partitions from the given offsets up to their high watermark — fetched again
/// once reached, until it stops moving, so a compaction that ran meanwhile cannot hide a key's
/// latest record (its superseding record is in a closed segment, below the later watermark).
/// With `gaps_ok` (a compacted topic) a read that makes no progress for 3 s short of the
/// watermark ends there: the log may end in offsets compaction removed (an expired tombstone
/// last), which no message and no consumer position ever passes.
fn read_topic(
    bootstrap: &str,
    topic: &str,
    starts: &BTreeMap<i32, i64>,
    gaps_ok: bool,
) -> Result<BTreeMap<i32, Vec<ReadRec>>, String> {
    let c = verify_consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    let mut out: BTreeMap<i32, Vec<ReadRec>> = BTreeMap::new();
    let mut pos: BTreeMap<i32, i64> = BTreeMap::new();
    let mut target: BTreeMap<i32, i64> = BTreeMap::new();
    for (&p, &from) in starts {
        tpl.add_partition_offset(topic, p, Offset::Offset(from))
            .map_err(|e| e.to_string())?;
        out.insert(p, Vec::new());
        pos.insert(p, from);
        target.insert(p, watermarks(&c, topic, p)?.1);
    }
    c.assign(&tpl).map_err(|e| format!("assign {topic}: {e}"))?;
    let deadline = Instant::now() + TIMEOUT;
    let mut progress = (Instant::now(), pos.clone());
    loop {
        if progress.1 != pos {
            progress = (Instant::now(), pos.clone());
        } else if gaps_ok && progress.0.elapsed() > Duration::from_secs(3) {
            return Ok(out);
        }
        let behind: Vec<i32> = pos
            .iter()
            .filter(|(p, at)| **at < target[p])
            .map(|(p, _)| *p)
            .collect();
        if behind.is_empty() {
            // Reached every target: done once the watermarks stayed where they were.
            let mut moved = false;
            for (&p, t) in target.iter_mut() {
                let hw = watermarks(&c, topic, p)?.1;
                if hw > *t {
                    *t = hw;
                    moved = true;
                }
            }
            if !moved {
                return Ok(out);
            }
            continue;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "reading {topic}: positions {pos:?} short of {target:?} after {TIMEOUT:?}"
            ));
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let p = m.partition();
                let id = m.headers().and_then(|h| {
                    (0..h.count()).find_map(|i| {
                        let hd = h.get(i);
                        (hd.key == "id")
                            .then(|| hd.value.and_then(|v| std::str::from_utf8(v).ok()))
                            .flatten()
                            .and_then(|s| s.parse().ok())
                    })
                });
                if let Some(v) = out.get_mut(&p) {
                    v.push(ReadRec {
                        offset: m.offset(),
                        id,
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                    });
                }
                if let Some(at) = pos.get_mut(&p) {
                    *at = (*at).max(m.offset() + 1);
                }
            }
            Some(Err(e)) => return Err(format!("reading {topic}: {e}")),
            None => {
                // Removed offsets (compaction) end no message: follow the consumer's position.
                if let Ok(position) = c.position() {
                    for e in position.elements_for_topic(topic) {
                        if let (Offset::Offset(o), Some(at)) =
                            (e.offset(), pos.get_mut(&e.partition()))
                        {
                            *at = (*at).max(o);
                        }
                    }
                }
            }
        }
    }
}

/// What the verifier keeps between cycles.
#[derive(Default)]
struct Verifier {
    /// Plain topic: the id at every offset read so far (offsets start at 0, contiguous).
    plain: BTreeMap<i32, Vec<u64>>,
    /// Acknowledged ids not yet matched against what was read, per topic and partition.
    unmatched: [BTreeMap<i32, Vec<u64>>; 3],
    /// Retention topic: log start offset seen last time.
    retained_start: BTreeMap<i32, i64>,
    records_read: u64,
    acked_verified: u64,
    retention_expired: u64,
    start_moved_back: u64,
    commits_checked: u64,
    full_rereads: u64,
    /// Compacted keys whose latest acknowledged value went with a later tombstone.
    removed_by_later_tombstone: u64,
    txn: txn::TxnVerifier,
}

/// True if a tombstone for `key` of the compacted topic's partition `p` was sent that is not
/// acknowledged below `offset`: it may sit above the latest acknowledged value and, once
/// delete.retention.ms passed, have taken the key away.
fn later_tombstone(shared: &Shared, p: i32, key: u32, offset: i64) -> bool {
    let l = shared.ledger.lock().unwrap();
    l.sent.iter().any(|r| {
        r.topic as usize == COMPACTED
            && r.partition == p
            && r.key == key
            && r.tombstone
            && r.ack.is_none_or(|a| a > offset)
    })
}

/// A check failed: what, with enough context to find it.
type Check = Result<(), String>;

impl Verifier {
    /// Moves freshly acknowledged ids into the per-partition queues.
    fn take_acks(&mut self, shared: &Shared) -> Check {
        let l = shared.ledger.lock().unwrap();
        if !l.violations.is_empty() {
            return Err(format!(
                "client-side violations: {:?}",
                &l.violations[..l.violations.len().min(5)]
            ));
        }
        drop(l);
        let mut l = shared.ledger.lock().unwrap();
        let fresh = std::mem::take(&mut l.fresh_acks);
        for id in fresh {
            let r = &l.sent[id as usize];
            self.unmatched[r.topic as usize]
                .entry(r.partition)
                .or_default()
                .push(id);
        }
        Ok(())
    }

    /// A record read at `offset` of `topic`-`p`: its id must be one we sent there, with this key
    /// and value, read nowhere else, and at its acknowledged offset if acknowledged.
    fn check_record(&mut self, shared: &Shared, topic: usize, p: i32, r: &ReadRec) -> Check {
        let name = TOPICS[topic].name;
        let Some(id) = r.id else {
            return Err(format!(
                "{name}-{p} offset {}: record without an id header",
                r.offset
            ));
        };
        let mut l = shared.ledger.lock().unwrap();
        let Some(sent) = l.sent.get_mut(id as usize) else {
            return Err(format!(
                "{name}-{p} offset {}: id {id} was never sent",
                r.offset
            ));
        };
        if sent.topic as usize != topic || sent.partition != p {
            return Err(format!(
                "{name}-{p} offset {}: record {id} was sent to {}-{}",
                r.offset, TOPICS[sent.topic as usize].name, sent.partition
            ));
        }
        let sent_c = sent.clone();
        if r.key.as_deref() != Some(&key_of(id, &sent_c)[..]) || r.value != value_of(id, &sent_c) {
            return Err(format!(
                "{name}-{p} offset {}: record {id} has a different key or value than sent",
                r.offset
            ));
        }
        if let Some(ack) = sent_c.ack {
            if ack != r.offset {
                return Err(format!(
                    "{name}-{p}: record {id} acknowledged at offset {ack} but read at {}",
                    r.offset
                ));
            }
        }
        match sent_c.seen {
            Some(seen) if seen != r.offset => {
                return Err(format!(
                    "{name}-{p}: record {id} read at offset {} and earlier at {seen} (duplicate \
                     or moved)",
                    r.offset
                ))
            }
            _ => sent.seen = Some(r.offset),
        }
        self.records_read += 1;
        Ok(())
    }

    /// Plain topic: read past the cursor (or everything), contiguous offsets from 0, then every
    /// acknowledged id below the cursor must be where it was acknowledged.
    fn verify_plain(&mut self, shared: &Shared, full: bool) -> Check {
        let spec = &TOPICS[PLAIN];
        let mut starts = BTreeMap::new();
        for p in 0..spec.partitions {
            let have = self.plain.entry(p).or_default().len() as i64;
            starts.insert(p, if full { 0 } else { have });
        }
        let read = read_topic(&shared.bootstrap, spec.name, &starts, false)?;
        for (p, recs) in read {
            let mut expect = starts[&p];
            for r in &recs {
                if r.offset != expect {
                    return Err(format!(
                        "{}-{p}: offset {} read where {expect} was expected (gap or reorder)",
                        spec.name, r.offset
                    ));
                }
                expect += 1;
                let ids = self.plain.entry(p).or_default();
                let known = ids.get(r.offset as usize).copied();
                match (known, r.id) {
                    (Some(k), Some(id)) if k != id => {
                        return Err(format!(
                            "{}-{p} offset {}: now record {id}, earlier record {k}",
                            spec.name, r.offset
                        ))
                    }
                    (Some(_), _) => {}
                    (None, id) => {
                        self.check_record(shared, PLAIN, p, r)?;
                        self.plain
                            .entry(p)
                            .or_default()
                            .push(id.unwrap_or(u64::MAX));
                        continue;
                    }
                }
                self.records_read += 1;
            }
            if full && (expect as usize) < self.plain[&p].len() {
                return Err(format!(
                    "{}-{p}: the log now ends at {expect}, records up to {} were read before",
                    spec.name,
                    self.plain[&p].len()
                ));
            }
        }
        // Acknowledged ids below the cursor: at their offset.
        for (p, ids) in self.unmatched[PLAIN].iter_mut() {
            let read = &self.plain[p];
            let l = shared.ledger.lock().unwrap();
            let mut keep = Vec::new();
            for &id in ids.iter() {
                let ack = l.sent[id as usize].ack.unwrap_or(i64::MAX);
                match read.get(ack as usize) {
                    Some(&got) if got == id => self.acked_verified += 1,
                    Some(&got) => {
                        return Err(format!(
                            "{}-{p}: record {id} acknowledged at offset {ack} but offset {ack} \
                             holds record {got}",
                            spec.name
                        ))
                    }
                    None => keep.push(id),
                }
            }
            *ids = keep;
        }
        Ok(())
    }

    /// Retention topic: read everything from the log start; contiguous; every acknowledged id at
    /// or above the start at its offset.
    fn verify_retained(&mut self, shared: &Shared) -> Check {
        let spec = &TOPICS[RETAINED];
        let c = verify_consumer(&shared.bootstrap);
        let mut attempt = 0;
        let read = loop {
            attempt += 1;
            let mut starts = BTreeMap::new();
            for p in 0..spec.partitions {
                starts.insert(p, watermarks(&c, spec.name, p)?.0);
            }
            match read_topic(&shared.bootstrap, spec.name, &starts, false) {
                Ok(r) => break (starts, r),
                // Retention may delete the segment being read: start again from the new start.
                Err(e) if attempt < 5 && e.contains("out of range") => continue,
                Err(e) => return Err(e),
            }
        };
        let (starts, read) = read;
        for (p, recs) in read {
            let start = starts[&p];
            let prev = self.retained_start.insert(p, start).unwrap_or(0);
            if start < prev {
                self.start_moved_back += 1;
            }
            let mut at: BTreeMap<i64, u64> = BTreeMap::new();
            let mut expect = start;
            for r in &recs {
                if r.offset != expect {
                    return Err(format!(
                        "{}-{p}: offset {} read where {expect} was expected (gap or reorder)",
                        spec.name, r.offset
                    ));
                }
                expect += 1;
                self.check_record(shared, RETAINED, p, r)?;
                at.insert(r.offset, r.id.unwrap_or(u64::MAX));
            }
            let ids = self.unmatched[RETAINED].entry(p).or_default();
            let l = shared.ledger.lock().unwrap();
            let mut keep = Vec::new();
            for &id in ids.iter() {
                let ack = l.sent[id as usize].ack.unwrap_or(i64::MAX);
                if ack < start {
                    // Deleted by retention before this check could see it (it may have been
                    // verified at an earlier cycle).
                    self.retention_expired += 1;
                    continue;
                }
                match at.get(&ack) {
                    Some(&got) if got == id => self.acked_verified += 1,
                    Some(&got) => {
                        return Err(format!(
                            "{}-{p}: record {id} acknowledged at offset {ack} holds record {got}",
                            spec.name
                        ))
                    }
                    None if ack < expect => {
                        return Err(format!(
                            "{}-{p}: acknowledged offset {ack} of record {id} missing",
                            spec.name
                        ))
                    }
                    None => keep.push(id),
                }
            }
            *ids = keep;
        }
        Ok(())
    }

    /// Compacted topic: read everything; offsets increase; every key's latest acknowledged
    /// record (by offset) is present, or a later record of that key (sent, maybe not yet
    /// acknowledged); a latest tombstone may have been removed with everything before it.
    fn verify_compacted(&mut self, shared: &Shared) -> Check {
        let spec = &TOPICS[COMPACTED];
        // The latest acknowledged record per key, before reading: anything acknowledged is below
        // the watermark the read goes to.
        let mut latest_acked: BTreeMap<(i32, u32), (i64, u64, bool)> = BTreeMap::new();
        {
            let l = shared.ledger.lock().unwrap();
            for (_, ids) in self.unmatched[COMPACTED].iter() {
                for &id in ids {
                    let r = &l.sent[id as usize];
                    let ack = r.ack.unwrap_or(-1);
                    let e = latest_acked
                        .entry((r.partition, r.key))
                        .or_insert((-1, 0, false));
                    if ack > e.0 {
                        *e = (ack, id, r.tombstone);
                    }
                }
            }
        }
        let c = verify_consumer(&shared.bootstrap);
        let mut starts = BTreeMap::new();
        for p in 0..spec.partitions {
            starts.insert(p, watermarks(&c, spec.name, p)?.0);
        }
        let read = read_topic(&shared.bootstrap, spec.name, &starts, true)?;
        let mut in_log: BTreeMap<(i32, u32), (i64, u64)> = BTreeMap::new();
        for (p, recs) in read {
            let mut last = -1;
            for r in &recs {
                if r.offset <= last {
                    return Err(format!(
                        "{}-{p}: offset {} after {last}",
                        spec.name, r.offset
                    ));
                }
                last = r.offset;
                self.check_record(shared, COMPACTED, p, r)?;
                let key = {
                    let l = shared.ledger.lock().unwrap();
                    l.sent[r.id.unwrap_or(0) as usize].key
                };
                in_log.insert((p, key), (r.offset, r.id.unwrap_or(u64::MAX)));
            }
        }
        // Keep only the latest acknowledged id per key for the next cycle: older ones may be gone.
        for ids in self.unmatched[COMPACTED].values_mut() {
            ids.clear();
        }
        for ((p, key), (ack, id, tombstone)) in latest_acked {
            match in_log.get(&(p, key)) {
                Some(&(at, _)) if at >= ack => self.acked_verified += 1,
                None if tombstone => self.acked_verified += 1,
                // Gone with a later tombstone of the key (whose delete.retention.ms passed):
                // one not acknowledged (yet), or acknowledged above the latest value.
                None if later_tombstone(shared, p, key, ack) => {
                    self.removed_by_later_tombstone += 1
                }
                found => {
                    return Err(format!(
                        "{}-{p} key {key}: latest acknowledged record {id} at offset {ack} \
                         (tombstone: {tombstone}), the log's latest for the key: {found:?}",
                        spec.name
                    ))
                }
            }
            self.unmatched[COMPACTED].entry(p).or_default().push(id);
        }
        Ok(())
    }

    /// Check 4: OffsetFetch never answers less than an acknowledged commit.
    fn verify_commits(&mut self, shared: &Shared) -> Check {
        let acked = shared.commits.lock().unwrap().acked.clone();
        if acked.is_empty() {
            return Ok(());
        }
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &shared.bootstrap)
            .set("group.id", GROUP)
            .set("enable.auto.commit", "false")
            .set("socket.timeout.ms", "10000")
            .create()
            .map_err(|e| e.to_string())?;
        let mut tpl = TopicPartitionList::new();
        for &p in acked.keys() {
            tpl.add_partition(TOPICS[PLAIN].name, p);
        }
        let deadline = Instant::now() + TIMEOUT;
        let got = loop {
            match c.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                Ok(got) => break got,
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("OffsetFetch for {GROUP}: {e}"))
                }
                Err(_) => thread::sleep(Duration::from_millis(200)),
            }
        };
        for (&p, &want) in &acked {
            let found = got
                .find_partition(TOPICS[PLAIN].name, p)
                .map(|e| e.offset());
            match found {
                Some(Offset::Offset(o)) if o >= want => self.commits_checked += 1,
                other => {
                    return Err(format!(
                        "group {GROUP} partition {p}: committed offset {other:?}, but {want} was \
                         acknowledged (went backwards)"
                    ))
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Check 2: what the restarted broker logged
// ---------------------------------------------------------------------------------------------

/// No error and no corruption in a start's log.
fn check_no_errors(log: &str) -> Check {
    for line in log.lines() {
        if line.contains("level=error") {
            return Err(format!("the broker logged an error: {line}"));
        }
        if line.contains("orrupt") {
            return Err(format!("the broker reports corruption: {line}"));
        }
    }
    Ok(())
}

/// The restarted broker may truncate only a partition's tail, exactly where our own scan of the
/// dead broker's files ended.
fn check_truncations(log: &str, files: &BTreeMap<String, PartitionFiles>, data: &Path) -> Check {
    for line in log.lines() {
        let Some(i) = line.find(": truncating at ") else {
            continue;
        };
        // msg="<dir>/<base>.log: truncating at <valid> of <size> (<why>)"
        let path = line[..i].rsplit(['"', ' ']).next().unwrap_or("");
        let rest = &line[i + ": truncating at ".len()..];
        // "<valid end> of <file size> (...)"
        let words: Vec<&str> = rest.split_whitespace().collect();
        let (Some(at), Some(size)) = (
            words.first().and_then(|n| n.parse::<u64>().ok()),
            words.get(2).and_then(|n| n.parse::<u64>().ok()),
        ) else {
            return Err(format!("cannot parse truncation line: {line}"));
        };
        let path = Path::new(path);
        let part = path
            .parent()
            .and_then(|d| d.strip_prefix(data).ok())
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        let base: Option<i64> = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok());
        match files.get(&part) {
            Some(f)
                if Some(f.tail_base) == base && f.tail.valid_end == at && f.tail_len == size => {}
            other => {
                return Err(format!(
                    "the broker truncated {} at {at}, but the partition's files say {other:?}: \
                     {line}",
                    path.display()
                ))
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The loop
// ---------------------------------------------------------------------------------------------

/// How a cycle's kill is chosen.
#[derive(Clone, Debug)]
enum Plan {
    /// kill -9 after this long.
    Timer(Duration),
    /// kill -9 right after the broker logs a compaction or retention pass (else after 4 s).
    OnLog(Duration),
    /// Arm one crash point at this probability; kill -9 after 5 s if it does not fire.
    Point(&'static str, f64),
}

fn plan(rng: &mut Rng) -> Plan {
    match rng.below(100) {
        0..=34 => Plan::Timer(rng.between_ms(200, 2500)),
        35..=49 => Plan::OnLog(rng.between_ms(0, 25)),
        _ => {
            let (name, p) = CRASH_POINTS[rng.below(CRASH_POINTS.len() as u64) as usize];
            Plan::Point(name, p)
        }
    }
}

fn spec_of(plan: &Plan) -> Option<String> {
    match plan {
        Plan::Point(name, p) => Some(format!("{name}:{p}")),
        _ => None,
    }
}

fn create_topics(bootstrap: &str) {
    let admin = common::admin(bootstrap);
    let mut topics: Vec<NewTopic<'_>> = TOPICS
        .iter()
        .map(|t| {
            let mut n = NewTopic::new(t.name, t.partitions, TopicReplication::Fixed(1));
            for (k, v) in t.configs {
                n = n.set(k, v);
            }
            n
        })
        .collect();
    topics.push(NewTopic::new(
        txn::TOPIC,
        txn::PARTITIONS,
        TopicReplication::Fixed(1),
    ));
    let res = futures_lite::future::block_on(admin.create_topics(&topics, &common::admin_opts()))
        .expect("create topics");
    for r in res {
        r.expect("topic created");
    }
}

/// Runs the load phase until the broker is dead; returns the kill's phase name.
fn run_until_dead(broker: &mut CrashBroker, plan: &Plan) -> String {
    match plan {
        Plan::Timer(after) => {
            thread::sleep(*after);
            match broker.kill9() {
                Death::Harness => "timer".to_string(),
                Death::CrashPoint(p) => format!("point:{p}"),
            }
        }
        Plan::OnLog(delay) => {
            let deadline = Instant::now() + Duration::from_secs(4);
            let mut seen = None;
            // Only what this load phase logs (a pass logged while verifying does not count).
            let (_, mut from) = broker.log_since(broker.log_from);
            let mut carry = String::new();
            while Instant::now() < deadline {
                let (new, end) = broker.log_since(from);
                from = end;
                carry.push_str(&new);
                let complete = carry.rfind('\n').map_or(0, |i| i + 1);
                let lines: String = carry.drain(..complete).collect();
                seen = lines.lines().find_map(|l| {
                    if l.contains(": compacting ") {
                        Some("log:compacting")
                    } else if l.contains(": retention deleted ") {
                        Some("log:retention")
                    } else if l.contains(": compacted ") {
                        Some("log:compacted")
                    } else {
                        None
                    }
                });
                if seen.is_some() {
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
            if seen.is_some() {
                thread::sleep(*delay);
            }
            match broker.kill9() {
                Death::Harness => seen.unwrap_or("log:none(timer 4s)").to_string(),
                Death::CrashPoint(p) => format!("point:{p}"),
            }
        }
        Plan::Point(name, _) => {
            std::fs::write(broker.arm_path(), b"").expect("create arm file");
            let deadline = Instant::now() + Duration::from_secs(5);
            let death = loop {
                if let Some(status) = broker.exited() {
                    break broker.death_of(status);
                }
                if Instant::now() >= deadline {
                    break broker.kill9();
                }
                thread::sleep(Duration::from_millis(5));
            };
            let _ = std::fs::remove_file(broker.arm_path());
            match death {
                Death::CrashPoint(p) => format!("point:{p}"),
                Death::Harness => format!("unfired:{name}(timer 5s)"),
            }
        }
    }
}

/// Panics with the cycle, the seed, the broker's log tail and where the files are.
fn fail_at(
    broker: &CrashBroker,
    shared: &Shared,
    seed: u64,
    cycle: usize,
    what: &str,
    e: &str,
) -> ! {
    shared.stop.store(true, Ordering::SeqCst);
    broker.fail(&format!(
        "cycle {cycle} (ODRADEK_CRASH_SEED={seed}): {what}: {e}\n(data in {}; set \
         ODRADEK_KEEP_TEST_DATA=1 to keep it)",
        broker.data_dir().display()
    ))
}

/// Every acknowledged offset lies inside the valid prefix of the files the dead broker left.
fn check_durability(
    shared: &Shared,
    files: &BTreeMap<String, PartitionFiles>,
) -> Result<u64, String> {
    let l = shared.ledger.lock().unwrap();
    let mut checked = 0;
    for (t, spec) in TOPICS.iter().enumerate() {
        for (&p, &max) in &l.max_ack[t] {
            let dir = format!("{}-{p}", spec.name);
            let end = files.get(&dir).map_or(0, |f| f.tail.next_offset);
            if max >= end {
                return Err(format!(
                    "{dir}: offset {max} was acknowledged, the files end at offset {end}"
                ));
            }
            checked += 1;
        }
    }
    Ok(checked)
}

/// Checks 3, 4 and 5 (see the module docs); `last` checks every transaction whole.
fn verify_all(verifier: &mut Verifier, shared: &Shared, full: bool, last: bool) -> Check {
    verifier.take_acks(shared)?;
    verifier.verify_plain(shared, full)?;
    verifier.verify_retained(shared)?;
    verifier.verify_compacted(shared)?;
    verifier.verify_commits(shared)?;
    verifier.txn.verify(shared, last)
}

#[test]
fn crash_loop_keeps_every_acknowledged_record() {
    let cycles = env_u64("ODRADEK_CRASH_CYCLES").unwrap_or(16) as usize;
    let seed = env_u64("ODRADEK_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let rate = env_u64("ODRADEK_CRASH_RATE").unwrap_or(3000);
    println!(
        "crash loop: {cycles} cycles, seed {seed} (ODRADEK_CRASH_SEED={seed} replays it), \
         {rate} records/s"
    );
    let started = Instant::now();
    let mut rng = Rng(seed);

    let mut broker = CrashBroker::new();
    let mut next_plan = plan(&mut rng);
    broker.start(spec_of(&next_plan).as_deref(), rng.next());
    create_topics(&broker.bootstrap());

    let shared = Arc::new(Shared {
        bootstrap: broker.bootstrap(),
        ledger: Mutex::new(Ledger::default()),
        commits: Mutex::new(Commits::default()),
        stop: AtomicBool::new(false),
        paused: AtomicBool::new(false),
        consumed: AtomicU64::new(0),
        producer_fatal: Mutex::new(Vec::new()),
        txns: Mutex::new(txn::TxnLedger::default()),
    });
    let mut threads = Vec::new();
    for (i, codec) in CODECS.iter().enumerate() {
        let s = shared.clone();
        let per = rate / CODECS.len() as u64;
        let sd = seed ^ ((i as u64 + 1) << 56);
        threads.push(thread::spawn(move || produce_loop(s, codec, per, sd)));
    }
    {
        let s = shared.clone();
        threads.push(thread::spawn(move || group_member_loop(s)));
    }
    {
        let s = shared.clone();
        let sd = seed ^ (0xa5 << 56);
        threads.push(thread::spawn(move || txn::txn_loop(s, sd)));
    }

    let mut verifier = Verifier::default();
    let mut scans = ScanCache::default();
    let mut kills: BTreeMap<String, u32> = BTreeMap::new();
    let mut truncations = 0usize;
    let mut durability_checked = 0u64;

    for cycle in 0..cycles {
        let t0 = Instant::now();
        // Load phase: run until killed.
        let phase = run_until_dead(&mut broker, &next_plan);
        *kills.entry(phase.clone()).or_default() += 1;
        shared.paused.store(true, Ordering::SeqCst);
        if let Err(e) = check_no_errors(&broker.this_start_log()) {
            fail_at(&broker, &shared, seed, cycle, "broker log", &e);
        }

        // Check 1: the files the dead broker left.
        let files = match scans.check_data_dir(&broker.data_dir()) {
            Ok(f) => f,
            Err(e) => fail_at(&broker, &shared, seed, cycle, "segment files", &e),
        };
        match check_durability(&shared, &files) {
            Ok(n) => durability_checked += n,
            Err(e) => fail_at(&broker, &shared, seed, cycle, "durability", &e),
        }

        // Restart (armed with the next cycle's crash point, if it has one).
        next_plan = plan(&mut rng);
        broker.start(spec_of(&next_plan).as_deref(), rng.next());
        let t_up = t0.elapsed();

        // Checks 3 and 4, then check 2 (the partitions are all open once they were read).
        let full = cycle % FULL_REREAD_EVERY == FULL_REREAD_EVERY - 1;
        if let Err(e) = verify_all(&mut verifier, &shared, full, false) {
            fail_at(&broker, &shared, seed, cycle, "read-back", &e);
        }
        if full {
            verifier.full_rereads += 1;
        }
        let log = broker.this_start_log();
        if let Err(e) = check_truncations(&log, &files, &broker.data_dir()) {
            fail_at(&broker, &shared, seed, cycle, "recovery log", &e);
        }
        truncations += log.matches(": truncating at ").count();
        let fatal = shared.producer_fatal.lock().unwrap().first().cloned();
        if let Some(f) = fatal {
            fail_at(
                &broker,
                &shared,
                seed,
                cycle,
                "idempotent producer fatal error",
                &f,
            );
        }
        shared.paused.store(false, Ordering::SeqCst);
        let l = shared.ledger.lock().unwrap();
        println!(
            "cycle {cycle}: killed by {phase}; up again after {:.1} s; {} sent, {} acked, {} \
             failed; {} records read; cycle {:.1} s",
            t_up.as_secs_f64(),
            l.sent.len(),
            l.acked,
            l.failed,
            verifier.records_read,
            t0.elapsed().as_secs_f64()
        );
    }

    // Wind down: every delivery report in, then read everything once more, stop cleanly, start
    // again (the clean-shutdown path: nothing may be truncated) and check again.
    shared.paused.store(false, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(500));
    shared.stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("client thread");
    }
    let unreported = {
        let l = shared.ledger.lock().unwrap();
        l.sent
            .iter()
            .filter(|r| r.ack.is_none() && !r.failed)
            .count()
    };
    if unreported > 0 {
        fail_at(
            &broker,
            &shared,
            seed,
            cycles,
            "delivery reports",
            &format!("{unreported} records never reported"),
        );
    }
    for round in 0..2 {
        if let Err(e) = verify_all(&mut verifier, &shared, true, true) {
            fail_at(&broker, &shared, seed, cycles, "final read-back", &e);
        }
        verifier.full_rereads += 1;
        if let Err(e) = check_no_errors(&broker.this_start_log()) {
            fail_at(&broker, &shared, seed, cycles, "broker log", &e);
        }
        if round == 0 {
            broker.stop();
            broker.start(None, 0);
        } else if let Err(e) = check_truncations(
            &broker.this_start_log(),
            &BTreeMap::new(),
            &broker.data_dir(),
        ) {
            fail_at(
                &broker,
                &shared,
                seed,
                cycles,
                "restart after a clean stop",
                &e,
            );
        }
    }
    // Every acknowledged plain record was matched at its offset.
    let pending: usize = verifier.unmatched[PLAIN].values().map(Vec::len).sum();
    if pending > 0 {
        let e = format!("{pending} acknowledged plain records never read");
        fail_at(&broker, &shared, seed, cycles, "final read-back", &e);
    }
    broker.stop();

    let l = shared.ledger.lock().unwrap();
    let c = shared.commits.lock().unwrap();
    println!(
        "crash loop finished: {cycles} cycles in {:.0} s (seed {seed})",
        started.elapsed().as_secs_f64()
    );
    println!(
        "records: {} sent, {} acknowledged, {} failed (first errors: {:?})",
        l.sent.len(),
        l.acked,
        l.failed,
        &l.errors[..l.errors.len().min(3)]
    );
    println!(
        "checked: {} records read back, {} acknowledged records verified at their offset \
         ({} expired by retention first, {} compacted keys removed by a later tombstone), {} \
         partition durability checks, {} full rereads",
        verifier.records_read,
        verifier.acked_verified,
        verifier.retention_expired,
        verifier.removed_by_later_tombstone,
        durability_checked,
        verifier.full_rereads
    );
    println!(
        "commits: {} acknowledged, {} failed, {} committed offsets checked; {} records consumed \
         by the group",
        c.requests_ok,
        c.requests_failed,
        verifier.commits_checked,
        shared.consumed.load(Ordering::Relaxed)
    );
    println!(
        "segment files: {} scanned ({} MiB); {truncations} torn tails truncated; log start moved \
         back {} time(s)",
        scans.files_scanned,
        scans.bytes_scanned >> 20,
        verifier.start_moved_back
    );
    println!(
        "index files left without their segment (crash during a retention delete): {} {:?}",
        scans.orphans.len(),
        &scans.orphans[..scans.orphans.len().min(3)]
    );
    let t = shared.txns.lock().unwrap();
    let (committed, aborted, uncertain) = t.fates();
    println!(
        "transactions: {committed} committed, {aborted} aborted, {uncertain} cut off in their \
         commit ({} of them visible at the end, {} not), {} producers; {} read_committed \
         reads, {} records read (first errors: {:?})",
        verifier.txn.final_uncertain_committed,
        verifier.txn.final_uncertain_aborted,
        t.producers,
        verifier.txn.reads,
        verifier.txn.records_read,
        &t.errors[..t.errors.len().min(3)]
    );
    println!("kills by phase: {kills:?}");
    assert!(
        l.acked > 0 && verifier.acked_verified > 0,
        "nothing was acknowledged and verified"
    );
    assert!(
        c.requests_ok > 0 && verifier.commits_checked > 0,
        "no commit was acknowledged and checked"
    );
    assert!(
        verifier.txn.final_committed > 0 && verifier.txn.final_aborted > 0,
        "no transaction was both committed and aborted and checked"
    );
}

// ---------------------------------------------------------------------------------------------
// The harness's own checks (a harness that cannot fail is a defect)
// ---------------------------------------------------------------------------------------------

/// A batch with `n` offsets at `base`, CRC set (what a broker writes).
fn test_batch(base: i64, n: i32, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&base.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // length, below
    b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes
    b.extend_from_slice(&(n - 1).to_be_bytes());
    b.extend_from_slice(&[0u8; 8 + 8 + 8 + 2 + 4]); // timestamps, producer id/epoch, sequence
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(body);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn segment_scanner_finds_torn_tails_and_damage() {
    let mut img = test_batch(100, 3, b"abc");
    img.extend(test_batch(103, 2, b"defgh"));
    let whole = img.len() as u64;
    assert_eq!(
        scan_log_bytes(&img, 100),
        FileScan {
            valid_end: whole,
            next_offset: 105,
            stop: None
        }
    );
    // Padding after the last batch is a clean end; a torn batch or a flipped bit is not.
    let mut padded = img.clone();
    padded.resize(4096, 0);
    let s = scan_log_bytes(&padded, 100);
    assert_eq!((s.valid_end, s.stop.as_deref()), (whole, Some("zeros")));
    let torn = &img[..img.len() - 3];
    let s = scan_log_bytes(torn, 100);
    assert_eq!(s.next_offset, 103);
    assert!(s.stop.is_some_and(|w| w.contains("left")));
    let mut flipped = img.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(
        scan_log_bytes(&flipped, 100).stop.as_deref(),
        Some("CRC mismatch")
    );
    // Offsets must continue from the file's base.
    assert!(scan_log_bytes(&img, 99)
        .stop
        .is_some_and(|w| w.contains("expected 99")));

    // A sealed segment that does not reach the next one is reported; the tail may be torn.
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("t-0");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::write(part.join(format!("{:020}.log", 100)), &img).unwrap();
    std::fs::write(
        part.join(format!("{:020}.log", 105)),
        &test_batch(105, 1, b"x")[..20],
    )
    .unwrap();
    let files = ScanCache::default().check_data_dir(dir.path()).unwrap();
    assert_eq!(files["t-0"].tail_base, 105);
    assert_eq!(files["t-0"].tail.valid_end, 0);
    std::fs::write(part.join(format!("{:020}.log", 106)), b"").unwrap();
    let err = ScanCache::default().check_data_dir(dir.path()).unwrap_err();
    assert!(err.contains("sealed segment corrupt"), "{err}");

    // A merge killed between removing the run's later segments and renaming its swap: the
    // old first segment ends early, the swap reaches the next segment and stands for the run.
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("c-0");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::write(part.join(format!("{:020}.log", 0)), test_batch(0, 3, b"a")).unwrap();
    std::fs::write(part.join(format!("{:020}.log", 9)), test_batch(9, 1, b"b")).unwrap();
    let err = ScanCache::default().check_data_dir(dir.path()).unwrap_err();
    assert!(err.contains("sealed segment corrupt"), "{err}");
    let mut merged = test_batch(0, 3, b"a");
    merged.extend(test_batch(3, 6, b"m"));
    std::fs::write(part.join(format!("{:020}.log.swap", 0)), &merged).unwrap();
    // A leftover of the run (removed at start-up with the rest of it) is not a segment.
    std::fs::write(part.join(format!("{:020}.log", 5)), test_batch(5, 1, b"x")).unwrap();
    let files = ScanCache::default().check_data_dir(dir.path()).unwrap();
    assert_eq!(files["c-0"].tail_base, 9);
    // A swap that does not scan whole is damage, not a pending merge.
    std::fs::write(
        part.join(format!("{:020}.log.swap", 0)),
        &merged[..merged.len() - 1],
    )
    .unwrap();
    let err = ScanCache::default().check_data_dir(dir.path()).unwrap_err();
    assert!(err.contains("committed merged segment corrupt"), "{err}");
}

#[test]
fn log_checks_accept_only_tail_truncation_at_the_scanned_end_and_no_error() {
    let data = Path::new("/d/data");
    let mut files = BTreeMap::new();
    files.insert(
        "t-0".to_string(),
        PartitionFiles {
            tail_base: 500,
            tail: FileScan {
                valid_end: 4000,
                next_offset: 530,
                stop: Some("CRC mismatch".into()),
            },
            tail_len: 8192,
        },
    );
    let line = |path: &str, at: u64| {
        format!(
            "ts=x level=warn shard=0 target=odradek::storage::log \
             msg=\"{path}: truncating at {at} of 8192 (Invalid(..))\""
        )
    };
    let ok = line("/d/data/t-0/00000000000000000500.log", 4000);
    // The file size in the line must be the one the harness saw too.
    let other_size = ok.replace("of 8192", "of 4096");
    assert!(check_truncations(&other_size, &files, data).is_err());
    assert!(check_truncations(&ok, &files, data).is_ok());
    assert!(check_truncations(
        &line("/d/data/t-0/00000000000000000500.log", 3000),
        &files,
        data
    )
    .is_err());
    assert!(check_truncations(
        &line("/d/data/t-0/00000000000000000000.log", 4000),
        &files,
        data
    )
    .is_err());
    assert!(check_truncations(&ok, &BTreeMap::new(), data).is_err());
    assert!(check_no_errors("ts=x level=error msg=\"boom\"").is_err());
    assert!(check_no_errors(&format!("{ok}\nts=x level=info msg=\"fine\"")).is_ok());
}
