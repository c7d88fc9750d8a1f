//! The shard journal, black-box: a real broker, a real librdkafka producer and consumer.
//!
//! Small appends are acknowledged once the shard journal's fdatasync returned; their segment
//! files are written but not fdatasynced until the next checkpoint. A power cut can therefore
//! take the tail of a segment file that the journal still holds. These tests make exactly that
//! state: produce (acks=all), kill -9 the broker, cut the tail segment file of every partition
//! short (what a power cut may leave of unsynced writes), start again — and read every
//! acknowledged record back, restored from the journal.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rdkafka::topic_partition_list::Offset;

const TOPIC: &str = "journaled";
const PARTITIONS: i32 = 4;

/// Produces `rounds` x 200 records over the partitions, one delivery wait per round (so the
/// journal holds several entries); returns (partition, offset, value) of every acknowledged one.
fn produce_rounds(broker: &Broker, rounds: usize) -> Vec<(i32, i64, Vec<u8>)> {
    let producer = producer(&broker.bootstrap(), &[("acks", "all"), ("linger.ms", "2")]);
    let mut acked = Vec::new();
    for round in 0..rounds {
        let recs: Vec<Rec> = (0..200)
            .map(|i| {
                Rec::value(format!("round {round} record {i} {}", "x".repeat(i % 50)))
                    .to_partition(i as i32 % PARTITIONS)
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
    let got = consume_exact(
        &broker.bootstrap(),
        TOPIC,
        &parts,
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
