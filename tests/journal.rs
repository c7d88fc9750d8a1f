//! The shard journal, black-box: a real broker, a real librdkafka producer and consumer.
//!
//! Small appends are acknowledged once the shard journal's fdatasync returned; their segment
//! files are written but not fdatasynced until the next checkpoint. A power cut can therefore
//! take the tail of a segment file that the journal still holds. These tests make exactly that
//! state: produce (acks=all), kill -9 the broker, cut the tail segment file of every partition
//! short (what a power cut may leave of unsynced writes), start again — and read every
//! acknowledged record back, restored from the journal.
//!
//! And the two bad starts: a journal file that cannot be read stops the start (nothing is
//! served, no journal is touched), and a record that cannot be replayed keeps its partition
//! offline until the next start — whether its partition did not open or its replay's flush
//! failed, and through later metadata changes — while the others serve, the journals kept as
//! they are for that start. The damage used is what a filesystem does to a root process: the
//! immutable attribute (`chattr +i`) refuses every open for writing with EPERM, a directory
//! where a file belongs refuses it with EISDIR, and a full filesystem (a small loop-mounted
//! one) refuses new blocks with ENOSPC.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use rdkafka::topic_partition_list::Offset;

const TOPIC: &str = "journaled";
const PARTITIONS: i32 = 4;

/// Produces `rounds` x 200 records over the partitions, one delivery wait per round (so the
/// journal holds several entries); returns (partition, offset, value) of every acknowledged one.
fn produce_rounds(broker: &Broker, rounds: usize) -> Vec<(i32, i64, Vec<u8>)> {
    let all: Vec<i32> = (0..PARTITIONS).collect();
    produce_rounds_to(broker, rounds, &all)
}

/// [`produce_rounds`] over the partitions `parts` only.
fn produce_rounds_to(broker: &Broker, rounds: usize, parts: &[i32]) -> Vec<(i32, i64, Vec<u8>)> {
    let producer = producer(&broker.bootstrap(), &[("acks", "all"), ("linger.ms", "2")]);
    let mut acked = Vec::new();
    for round in 0..rounds {
        let recs: Vec<Rec> = (0..200)
            .map(|i| {
                Rec::value(format!("round {round} record {i} {}", "x".repeat(i % 50)))
                    .in_partition(parts[i % parts.len()])
            })
            .collect();
        let placed = produce_all(&producer, TOPIC, &recs, Duration::from_secs(30));
        for (rec, (p, off)) in recs.iter().zip(placed) {
            acked.push((p, off, rec.value.clone().expect("value")));
        }
    }
    acked
}

/// The newest `.log` file of a partition directory.
fn tail_segment(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("partition directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a segment file")
}

/// What a power cut can leave of segment files whose last writes were never fdatasynced: the
/// second half of every partition's tail segment file is gone. Returns the bytes cut.
fn cut_tails(broker: &Broker) -> u64 {
    let mut cut = 0;
    for p in 0..PARTITIONS {
        let path = tail_segment(&broker.data_dir().join(format!("{TOPIC}-{p}")));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open tail segment");
        let len = file.metadata().expect("metadata").len();
        file.set_len(len / 2).expect("truncate tail segment");
        cut += len - len / 2;
    }
    cut
}

fn check_all_back(broker: &Broker, acked: &[(i32, i64, Vec<u8>)]) {
    let parts: Vec<i32> = (0..PARTITIONS).collect();
    check_back(broker, acked, &parts);
}

/// Partitions `parts` hold exactly the records `acked` (all of theirs), at their offsets.
fn check_back(broker: &Broker, acked: &[(i32, i64, Vec<u8>)], parts: &[i32]) {
    let got = consume_exact(
        &broker.bootstrap(),
        TOPIC,
        parts,
        Offset::Beginning,
        acked.len(),
        Duration::from_secs(60),
    );
    let mut got: Vec<(i32, i64, Vec<u8>)> = got
        .into_iter()
        .map(|c| (c.partition, c.offset, c.value.unwrap_or_default()))
        .collect();
    got.sort();
    let mut want = acked.to_vec();
    want.sort();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "record at partition {} offset {}", w.0, w.1);
    }
}

fn restored_batches(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("restored from the journal"))
        .filter_map(|l| {
            let msg = l.split("msg=\"").nth(1)?;
            msg.split(": ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[test]
fn acknowledged_records_a_power_cut_took_from_segment_files_come_back_from_the_journal() {
    let mut broker = Broker::start();
    create_topic(broker.addr(), TOPIC, PARTITIONS);
    let acked = produce_rounds(&broker, 5);
    assert!(broker.data_dir().join("shard-0.journal").exists());
    broker.kill9();
    let cut = cut_tails(&broker);
    assert!(cut > 0);
    broker.start_again();
    let log = std::fs::read_to_string(broker.log_path()).expect("broker log");
    let restored = restored_batches(&log);
    assert!(
        restored > 0,
        "no batch restored from the journal after cutting {cut} bytes"
    );
    check_all_back(&broker, &acked);
    // Everything restored is durable in the segment files now, and the next start replays
    // nothing more (the journal started a new epoch).
    broker.kill9();
    broker.start_again();
    let log = std::fs::read_to_string(broker.log_path()).expect("broker log");
    assert_eq!(restored_batches(&log), restored, "a second replay happened");
    check_all_back(&broker, &acked);
}

/// Turning the journal off (`log.journal.bytes=0`) after a crash still replays it first, then
/// removes it.
#[test]
fn a_journal_left_by_a_crash_is_replayed_even_when_the_restart_turns_it_off() {
    let mut broker = Broker::start();
    create_topic(broker.addr(), TOPIC, PARTITIONS);
    let acked = produce_rounds(&broker, 3);
    broker.kill9();
    cut_tails(&broker);
    broker.add_override("log.journal.bytes", 0);
    broker.start_again();
    let log = std::fs::read_to_string(broker.log_path()).expect("broker log");
    assert!(restored_batches(&log) > 0);
    assert!(!broker.data_dir().join("shard-0.journal").exists());
    check_all_back(&broker, &acked);
    // Without a journal every acknowledged append is in its fdatasynced segment file.
    let more = produce_rounds(&broker, 1);
    broker.restart();
    let all: Vec<_> = acked.iter().chain(&more).cloned().collect();
    check_all_back(&broker, &all);
}

/// A file with the immutable attribute (`chattr +i`): every open for writing fails with EPERM,
/// even for root, and the file cannot be removed, renamed over or truncated. Dropping this
/// clears the attribute again — also when a test fails, so its temp directory can be removed.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        let out = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .expect("run chattr");
        assert!(
            out.status.success(),
            "chattr +i {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Immutable(path.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let cleared = Command::new("chattr").arg("-i").arg(&self.0).status();
        if !cleared.is_ok_and(|s| s.success()) && !std::thread::panicking() {
            panic!("chattr -i {} failed", self.0.display());
        }
    }
}

/// A file's length and a hash of its bytes (what an assertion can print).
fn fingerprint(path: &Path) -> Option<(u64, u64)> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some((bytes.len() as u64, h.finish()))
}

/// Every `shard-<id>.journal` in the data directory with its fingerprint, by name.
fn journal_files(broker: &Broker) -> Vec<(String, (u64, u64))> {
    let mut out: Vec<(String, (u64, u64))> = std::fs::read_dir(broker.data_dir())
        .expect("data directory")
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            if !(name.starts_with("shard-") && name.ends_with(".journal")) {
                return None;
            }
            Some((name, fingerprint(&e.path())?))
        })
        .collect();
    out.sort();
    out
}

/// A start that must fail because of the journal: the process exits by itself, non-zero, within
/// the start-up bound, saying which journal file it could not read and that it did not start.
fn assert_start_refused(broker: &mut Broker, journal_name: &str) {
    let status = broker.start_expecting_exit(START_TIMEOUT);
    assert!(
        status.code().is_some_and(|c| c != 0),
        "the refused start ended with {status}"
    );
    let log = broker.log_of_last_start();
    assert!(
        log.lines()
            .any(|l| l.contains(journal_name) && l.contains("not starting")),
        "no log line names {journal_name} and says the broker is not starting:\n{log}"
    );
    assert!(
        !log.contains("broker ready"),
        "the refused start got ready:\n{log}"
    );
}

/// `chattr` needs root and a file system that keeps the attribute (ext4, xfs, btrfs; tmpfs
/// only on newer kernels) where the tests put their data; elsewhere a test says so.
fn can_damage(test: &str) -> bool {
    if !common::small_disk::is_root() {
        eprintln!("{test}: not run, needs root to set file attributes");
        return false;
    }
    let probe = tempfile::NamedTempFile::new().expect("probe file");
    let set = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .arg(probe.path())
            .status()
            .is_ok_and(|s| s.success())
    };
    let works = set("+i");
    if works {
        assert!(set("-i"), "chattr -i {}", probe.path().display());
    } else {
        eprintln!("{test}: not run, chattr +i does not work in the temp directory");
    }
    works
}

#[test]
fn an_unreadable_journal_stops_the_start() {
    if !can_damage("an_unreadable_journal_stops_the_start") {
        return;
    }
    let mut broker = Broker::start();
    create_topic(broker.addr(), TOPIC, PARTITIONS);
    let acked = produce_rounds(&broker, 5);
    broker.kill9();
    // Only the journals hold the tails now.
    assert!(cut_tails(&broker) > 0);
    let journals = journal_files(&broker);
    let path = broker.data_dir().join("shard-0.journal");
    assert!(
        journals.iter().any(|(n, _)| n == "shard-0.journal"),
        "{journals:?}"
    );

    // EPERM: the journal was made immutable.
    let immutable = Immutable::set(&path);
    assert_start_refused(&mut broker, "shard-0.journal");
    drop(immutable);
    // Every journal as it was: the readable ones were not opened for a new epoch either.
    assert_eq!(journal_files(&broker), journals, "a journal changed");

    // EISDIR: a directory where the journal belongs (a restore that unpacked it one level too
    // deep), the journal inside it.
    let inner = path.join("shard-0.journal");
    std::fs::rename(&path, broker.dir().join("journal.aside")).expect("move journal aside");
    std::fs::create_dir(&path).expect("directory in the journal's place");
    std::fs::rename(broker.dir().join("journal.aside"), &inner).expect("journal into it");
    assert_start_refused(&mut broker, "shard-0.journal");
    assert_eq!(
        fingerprint(&inner).as_ref(),
        journals
            .iter()
            .find(|(n, _)| n == "shard-0.journal")
            .map(|(_, f)| f),
        "the journal inside the directory changed or went away"
    );
    std::fs::rename(&inner, broker.dir().join("journal.aside")).expect("journal out");
    std::fs::remove_dir(&path).expect("remove the directory");
    std::fs::rename(broker.dir().join("journal.aside"), &path).expect("journal back");
    assert_eq!(journal_files(&broker), journals, "a journal changed");

    // Repaired: the start replays the journals and every acknowledged record is back.
    broker.start_again();
    let log = broker.log_of_last_start();
    assert!(
        restored_batches(&log) > 0,
        "nothing restored from the journals:\n{log}"
    );
    check_all_back(&broker, &acked);
}

const KAFKA_STORAGE_ERROR: i16 = 56;

/// ListOffsets v1 (latest) of one partition over the wire: (error code, offset).
fn latest_offset(addr: SocketAddr, partition: i32) -> (i16, i64) {
    let mut w = Writer::new();
    w.i32(-1).i32(1).string(TOPIC).i32(1).i32(partition).i64(-1);
    let body = roundtrip(addr, 2, 1, &w.buf);
    let mut r = Reader::new(&body);
    assert_eq!(r.array_len(), 1);
    assert_eq!(r.string(), TOPIC);
    assert_eq!(r.array_len(), 1);
    assert_eq!(r.i32(), partition);
    let error = r.i16();
    let _timestamp = r.i64();
    (error, r.i64())
}

/// The sum over every series of `name` on the metrics endpoint at `addr`; `None` if absent.
fn metric_sum(addr: SocketAddr, name: &str) -> Option<f64> {
    let values: Vec<f64> = metrics_text(addr)
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The partition whose replay fails in the tests below.
const BAD: i32 = 2;

/// What [`crash_with_an_unopenable_partition`] leaves.
struct BadStart {
    /// Partition [`BAD`]'s tail segment; dropped (first) to repair it.
    bad_segment: Immutable,
    broker: Broker,
    metrics: SocketAddr,
    acked: Vec<(i32, i64, Vec<u8>)>,
    /// The journals as the crash left them.
    journals: Vec<(String, (u64, u64))>,
}

/// Produces, kills the broker, cuts every tail (the journals hold them), makes partition
/// [`BAD`]'s tail segment immutable — the partition cannot open, so its journal records cannot
/// be replayed — and starts again.
fn crash_with_an_unopenable_partition() -> BadStart {
    let metrics_port = free_port();
    let mut broker = BrokerOptions::new()
        .cores(test_cores())
        .set("metrics.listen", format!("127.0.0.1:{metrics_port}"))
        .start();
    create_topic(broker.addr(), TOPIC, PARTITIONS);
    let acked = produce_rounds(&broker, 5);
    broker.kill9();
    assert!(cut_tails(&broker) > 0);
    let journals = journal_files(&broker);
    assert!(!journals.is_empty());
    let bad_segment = Immutable::set(&tail_segment(
        &broker.data_dir().join(format!("{TOPIC}-{BAD}")),
    ));
    broker.start_again();
    BadStart {
        broker,
        metrics: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
        acked,
        journals,
        bad_segment,
    }
}

/// Partition [`BAD`] answers KAFKA_STORAGE_ERROR, counts as offline, and the journals are as
/// the crash left them.
fn assert_bad_partition_offline(b: &BadStart) {
    let (error, offset) = latest_offset(b.broker.addr(), BAD);
    assert_eq!(
        error, KAFKA_STORAGE_ERROR,
        "ListOffsets of partition {BAD} (latest offset {offset})"
    );
    assert_eq!(
        metric_sum(b.metrics, "odradek_offline_partitions"),
        Some(1.0),
        "odradek_offline_partitions"
    );
    assert_eq!(journal_files(&b.broker), b.journals, "a journal changed");
}

#[test]
fn a_record_that_cannot_be_replayed_keeps_its_partition_offline() {
    if !can_damage("a_record_that_cannot_be_replayed_keeps_its_partition_offline") {
        return;
    }
    let mut b = crash_with_an_unopenable_partition();
    let log = b.broker.log_of_last_start();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("partition {TOPIC}-{BAD}")) && l.contains("error")),
        "no error names partition {TOPIC}-{BAD}:\n{log}"
    );
    assert!(
        log.contains("journals are kept"),
        "the log does not say the journals are kept:\n{log}"
    );

    // The others serve every acknowledged record (from the journals); the bad one is offline.
    let good: Vec<(i32, i64, Vec<u8>)> = b.acked.iter().filter(|r| r.0 != BAD).cloned().collect();
    check_back(&b.broker, &good, &[0, 1, 3]);
    for p in (0..PARTITIONS).filter(|p| *p != BAD) {
        let want = b.acked.iter().filter(|r| r.0 == p).count() as i64;
        assert_eq!(
            latest_offset(b.broker.addr(), p),
            (0, want),
            "ListOffsets of partition {p}"
        );
    }
    assert_bad_partition_offline(&b);
    // Meanwhile the others take writes, each fdatasynced in its own file (no journal).
    let more = produce_rounds_to(&b.broker, 1, &[0, 1, 3]);

    // Repaired, after another crash: the bad partition's records come back from the journal.
    b.broker.kill9();
    drop(b.bad_segment);
    b.broker.start_again();
    let all: Vec<_> = b.acked.iter().chain(&more).cloned().collect();
    check_all_back(&b.broker, &all);
    assert_eq!(
        metric_sum(b.metrics, "odradek_offline_partitions"),
        Some(0.0),
        "odradek_offline_partitions after the repair"
    );
}

/// The file repaired while the broker runs, then any metadata change (here a new topic) is
/// applied on every shard: the partition must stay offline until the next start, which replays
/// its journal records. Opened now it would have lost them (the start dropped what it could
/// not replay) and take their offsets for new appends; the next start then skips the journal's
/// records at those offsets, and acknowledged records are gone for good.
#[test]
fn a_partition_left_offline_by_the_replay_is_not_reopened_by_a_metadata_change() {
    if !can_damage("a_partition_left_offline_by_the_replay_is_not_reopened_by_a_metadata_change") {
        return;
    }
    let mut b = crash_with_an_unopenable_partition();
    assert_bad_partition_offline(&b);
    drop(b.bad_segment);
    create_topic(b.broker.addr(), "another", 2);
    std::thread::sleep(Duration::from_millis(500));
    let (error, offset) = latest_offset(b.broker.addr(), BAD);
    // What a client gets now, kept to check after the next start if it was accepted.
    let producer = producer(
        &b.broker.bootstrap(),
        &[("acks", "all"), ("message.timeout.ms", "5000")],
    );
    let recs: Vec<Rec> = (0..20)
        .map(|i| Rec::value(format!("after the repair {i}")).in_partition(BAD))
        .collect();
    let reports = try_produce_all(&producer, TOPIC, &recs, Duration::from_secs(30));
    let accepted: Vec<(i32, i64, Vec<u8>)> = recs
        .iter()
        .zip(&reports)
        .filter_map(|(r, d)| {
            let (p, off) = d.clone().ok()?;
            Some((p, off, r.value.clone()?))
        })
        .collect();
    drop(producer);
    b.broker.kill9();
    b.broker.start_again();
    let all: Vec<_> = b.acked.iter().chain(&accepted).cloned().collect();
    let want = b.acked.iter().filter(|r| r.0 == BAD).count();
    assert!(
        error == KAFKA_STORAGE_ERROR && accepted.is_empty(),
        "partition {BAD} came back before its {want} journaled records were replayed: ListOffsets \
         answered error {error}, latest offset {offset}; {} of {} new records accepted at offsets {:?}",
        accepted.len(),
        recs.len(),
        accepted.iter().map(|r| r.1).collect::<Vec<_>>()
    );
    check_all_back(&b.broker, &all);
}

/// Fills the filesystem of `dir` until a write fails for want of space (root's reserved blocks
/// too: the broker runs as root), then frees `left` bytes of it. Returns the filler file.
fn fill_up(dir: &Path, left: usize) -> PathBuf {
    let reserve = dir.join("reserve");
    std::fs::write(&reserve, vec![1u8; left]).expect("reserve");
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    for chunk in [1 << 20, 4096, 512] {
        let ones = vec![1u8; chunk];
        while f.write_all(&ones).is_ok() {}
    }
    f.sync_all().expect("sync filler");
    std::fs::remove_file(&reserve).expect("free the reserve");
    path
}

#[test]
fn a_replay_whose_flush_fails_keeps_its_partition_offline() {
    if !common::small_disk::is_root() {
        eprintln!(
            "a_replay_whose_flush_fails_keeps_its_partition_offline: not run, needs root to loop-mount a filesystem"
        );
        return;
    }
    let disk = common::small_disk::SmallDisk::new(32)
        .unwrap_or_else(|e| panic!("cannot set up the small disk: {e}"));
    let metrics_port = free_port();
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let mut broker = BrokerOptions::new()
        .cores(test_cores())
        .set("metrics.listen", format!("127.0.0.1:{metrics_port}"))
        .start();
    // The bad partition's directory is a link onto the small disk.
    let target = disk.mount.join(format!("{TOPIC}-{BAD}"));
    std::fs::create_dir(&target).expect("partition directory on the small disk");
    std::os::unix::fs::symlink(&target, broker.data_dir().join(format!("{TOPIC}-{BAD}")))
        .expect("link the partition directory");
    create_topic(broker.addr(), TOPIC, PARTITIONS);
    let acked = produce_rounds(&broker, 5);
    broker.kill9();
    assert!(cut_tails(&broker) > 0);
    let journals = journal_files(&broker);
    // No room for what the journal brings back: the replay's flush fails with ENOSPC.
    // Left: one page (opening the partition writes and removes a probe file of one page).
    let filler = fill_up(&disk.mount, 4096);
    broker.start_again();
    let log = broker.log_of_last_start();
    assert!(
        log.lines().any(|l| l.contains(&format!(
            "{TOPIC}-{BAD}: flushing what the journal restored"
        )) && l.contains("stays offline")),
        "no error says the flush of {TOPIC}-{BAD}'s replay failed:\n{log}"
    );
    let good: Vec<(i32, i64, Vec<u8>)> = acked.iter().filter(|r| r.0 != BAD).cloned().collect();
    check_back(&broker, &good, &[0, 1, 3]);
    assert_eq!(journal_files(&broker), journals, "a journal changed");
    let (error, offset) = latest_offset(broker.addr(), BAD);
    assert_eq!(
        metric_sum(metrics, "odradek_offline_partitions"),
        Some(1.0),
        "odradek_offline_partitions (ListOffsets of partition {BAD}: error {error}, offset {offset})"
    );
    assert_eq!(error, KAFKA_STORAGE_ERROR, "ListOffsets of partition {BAD}");

    // Space again, after another crash: the bad partition's records come back.
    broker.kill9();
    std::fs::remove_file(&filler).expect("remove filler");
    broker.start_again();
    check_all_back(&broker, &acked);
}
