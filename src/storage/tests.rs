//! PartitionLog tests on real files (O_DIRECT on the tempdir's filesystem), each inside its own
//! glommio executor; a test that needs an injected I/O error runs on the fake disk
//! (`io::fake_disk`).

use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::protocol::record_batch::testing::BatchBuilder;
use crate::protocol::record_batch::{validate, validate_stored, BatchHeader};
use crate::storage::readahead::READ_AHEAD_DEPTH;

const NOW: i64 = 1_700_000_000_000;

use crate::io::test_executor::on_executor as run;

fn small_cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        segment_ms: i64::MAX / 2,
        index_interval_bytes: 1024,
        preallocate_bytes: 64 * 1024,
        message_timestamp_log_append: false,
    }
}

/// A produced batch (baseOffset 0, as a producer sends it).
fn produced(records: usize, seed: u64, ts: i64) -> (Bytes, BatchHeader) {
    let mut b = BatchBuilder::simple(records, seed);
    b.base_timestamp = ts;
    let bytes = Bytes::from(b.build());
    let h = validate(&bytes).unwrap();
    (bytes, h)
}

/// What the log must store for it: offsets and leader epoch rewritten.
fn stored(batch: &Bytes, base: i64, epoch: i32) -> Vec<u8> {
    let mut v = batch.to_vec();
    crate::protocol::record_batch::set_base_offset(&mut v, base).unwrap();
    crate::protocol::record_batch::set_partition_leader_epoch(&mut v, epoch).unwrap();
    v
}

/// Reads every batch from `from` up to the high watermark.
async fn read_all<D: crate::io::disk::Disk>(
    log: &PartitionLog<D>,
    from: i64,
    max_bytes: usize,
) -> Vec<Bytes> {
    let hw = log.high_watermark();
    let mut out = Vec::new();
    let mut off = from;
    while off < hw {
        let s = log.read(off, max_bytes, hw).await.unwrap();
        assert!(!s.chunks.is_empty(), "no progress at {off} (hw {hw})");
        for c in s.batches().unwrap() {
            let h = crate::protocol::record_batch::validate_stored(&c).unwrap();
            assert!(h.last_offset() >= off);
            off = h.last_offset() + 1;
            out.push(c);
        }
    }
    out
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Appends `n` batches of 1..=8 records, flushing every `flush_every`. Returns the stored bytes.
fn append_many(log: &PartitionLog, n: usize, seed: u64) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..n {
        let (b, h) = produced(
            1 + (i * 7 + seed as usize) % 8,
            seed * 1000 + i as u64,
            NOW + i as i64,
        );
        let o = log.append(&b, &h, 3, NOW).unwrap();
        assert!(!o.duplicate);
        assert_eq!(o.last_offset - o.base_offset, h.last_offset_delta as i64);
        out.push((o.base_offset, stored(&b, o.base_offset, 3)));
    }
    out
}

/// Appends a batch of `records` records (seed `seed`) whose first value is `value`; returns
/// its base offset and the batch as sent.
fn append_with_value(
    log: &PartitionLog,
    records: usize,
    seed: u64,
    value: Vec<u8>,
) -> (i64, Bytes) {
    let mut b = BatchBuilder::simple(records, seed);
    b.records[0].value = Some(value);
    let bytes = Bytes::from(b.build());
    let h = validate(&bytes).unwrap();
    let o = log.append(&bytes, &h, 0, NOW).unwrap();
    (o.base_offset, bytes)
}

/// A log on `dir` with [`small_cfg`] and no cache.
async fn open_small(dir: &Path) -> PartitionLog {
    PartitionLog::open(
        dir.to_path_buf(),
        small_cfg(),
        Rc::new(BatchCache::new(0)),
        NOW,
    )
    .await
    .unwrap()
}

/// Everything `expect` holds reads back from offset 0, byte for byte, and nothing more.
async fn assert_reads_back(log: &PartitionLog, expect: &[(i64, Vec<u8>)]) {
    let all = read_all(log, 0, 4096).await;
    assert_eq!(all.len(), expect.len());
    for (got, (_, want)) in all.iter().zip(expect) {
        assert_eq!(&got[..], &want[..]);
    }
}

#[test]
fn round_trip_across_rolls_and_reopen() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t-0");
        let cache = Rc::new(BatchCache::new(0)); // no caching: every read goes to disk
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        assert_eq!(
            (
                log.log_start_offset(),
                log.log_end_offset(),
                log.high_watermark()
            ),
            (0, 0, 0)
        );
        let mut expect = Vec::new();
        for round in 0..20 {
            expect.extend(append_many(&log, 9, round));
            assert!(log.has_unflushed());
            assert!(log.high_watermark() < log.log_end_offset());
            log.flush().await.unwrap();
            assert!(!log.has_unflushed());
            assert_eq!(log.high_watermark(), log.log_end_offset());
        }
        assert!(
            log.segment_count() >= 4,
            "segments: {}",
            log.segment_count()
        );
        // contiguous offsets
        for w in expect.windows(2) {
            let h = BatchHeader::parse(&w[0].1).unwrap();
            assert_eq!(h.last_offset() + 1, w[1].0);
        }
        let all = read_all(&log, 0, 1).await;
        assert_eq!(all.len(), expect.len());
        for (got, (_, want)) in all.iter().zip(&expect) {
            assert_eq!(&got[..], &want[..]);
        }
        // Big max_bytes: several batches per read, same content.
        let all = read_all(&log, 0, 1 << 20).await;
        assert_eq!(all.len(), expect.len());
        // Reads in the middle of a batch return the containing batch.
        for (base, bytes) in expect.iter().step_by(5) {
            let h = BatchHeader::parse(bytes).unwrap();
            for off in [*base, h.last_offset(), (base + h.last_offset()) / 2] {
                let s = log.read(off, 1, log.high_watermark()).await.unwrap();
                assert_eq!(s.batches().unwrap().len(), 1);
                assert_eq!(&s.batches().unwrap()[0][..], &bytes[..]);
                assert!(!s.from_cache);
            }
        }
        // upper bound: nothing at or past it.
        let (b5, _) = &expect[5];
        let s = log.read(0, 1 << 20, *b5).await.unwrap();
        assert_eq!(s.batches().unwrap().len(), 5);
        assert!(log
            .read(log.log_end_offset() + 1, 100, i64::MAX)
            .await
            .is_err());
        assert!(log
            .read(log.log_end_offset(), 100, log.high_watermark())
            .await
            .unwrap()
            .is_empty());

        let leo = log.log_end_offset();
        let segs = log.segment_count();
        log.close().await.unwrap();
        assert_eq!(files(&dir, "log").len(), segs);
        assert_eq!(files(&dir, "index").len(), segs);
        assert_eq!(files(&dir, "timeindex").len(), segs);
        assert!(files(&dir, "index")
            .iter()
            .any(|p| std::fs::metadata(p).unwrap().len() >= 8));
        assert!(files(&dir, "timeindex")
            .iter()
            .all(|p| std::fs::metadata(p).unwrap().len() >= 12));
        // Sealed segments are truncated to their logical size.
        let logs = files(&dir, "log");
        for p in &logs[..logs.len() - 1] {
            let len = std::fs::metadata(p).unwrap().len();
            assert!(len <= 4096, "{} bytes", len);
        }

        assert!(dir.join(log::CLEAN_MARKER).exists());
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        assert!(!log.tail_was_rescanned(), "clean shutdown: no rescan");
        assert!(
            !dir.join(log::CLEAN_MARKER).exists(),
            "marker consumed at open"
        );
        assert_eq!(
            (
                log.log_end_offset(),
                log.high_watermark(),
                log.segment_count()
            ),
            (leo, leo, segs)
        );
        let all = read_all(&log, 0, 3000).await;
        assert_eq!(all.len(), expect.len());
        for (got, (_, want)) in all.iter().zip(&expect) {
            assert_eq!(&got[..], &want[..]);
        }
        // Appending continues with the next offsets, and the partial tail page is preserved.
        let more = append_many(&log, 30, 99);
        assert_eq!(more[0].0, leo);
        log.flush().await.unwrap();
        let all = read_all(&log, 0, 5000).await;
        assert_eq!(all.len(), expect.len() + 30);
        assert_eq!(&all[expect.len()][..], &more[0].1[..]);
        log.delete().await.unwrap();
        assert!(!dir.exists());
    });
}

#[test]
fn tail_reads_hit_the_cache_and_budget_holds() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Rc::new(BatchCache::new(8 * 1024));
        let a = PartitionLog::open(tmp.path().join("a-0"), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        let b = PartitionLog::open(tmp.path().join("b-0"), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        let ea = append_many(&a, 40, 1);
        let eb = append_many(&b, 40, 2);
        assert!(cache.used_bytes() <= 8 * 1024);
        a.flush().await.unwrap();
        b.flush().await.unwrap();
        // The newest batch of b is cached.
        let (base, bytes) = eb.last().unwrap();
        let hits = cache.hits();
        let s = b.read(*base, 1, b.high_watermark()).await.unwrap();
        assert!(s.from_cache);
        assert_eq!(&s.batches().unwrap()[0][..], &bytes[..]);
        assert_eq!(cache.hits(), hits + 1);
        // The oldest batch of a was evicted: served from disk, same bytes.
        let misses = cache.misses();
        let s = a.read(0, 1, a.high_watermark()).await.unwrap();
        assert!(!s.from_cache);
        assert_eq!(&s.batches().unwrap()[0][..], &ea[0].1[..]);
        assert_eq!(cache.misses(), misses + 1);
        // Unflushed data is not visible below the high watermark bound.
        append_many(&a, 1, 3);
        let hw = a.high_watermark();
        assert!(a.read(hw, 1 << 20, hw).await.unwrap().is_empty());
        a.close().await.unwrap();
        b.close().await.unwrap();
        assert_eq!(cache.used_bytes(), 0);
    });
}

#[test]
fn idempotent_producer_rules_and_recovery() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p-0");
        let cache = Rc::new(BatchCache::new(1 << 20));
        let mk = |seq: i32, n: usize, epoch: i16| {
            let mut b = BatchBuilder::simple(n, seq as u64);
            b.producer_id = 77;
            b.producer_epoch = epoch;
            b.base_sequence = seq;
            let bytes = Bytes::from(b.build());
            let h = validate(&bytes).unwrap();
            (bytes, h)
        };
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        let mut seq = 0;
        let mut outs = Vec::new();
        for _ in 0..60 {
            let (b, h) = mk(seq, 3, 0);
            outs.push(log.append(&b, &h, 0, NOW).unwrap());
            seq += 3;
            // unrelated non-idempotent traffic in between
            let (b, h) = produced(2, seq as u64, NOW);
            log.append(&b, &h, 0, NOW).unwrap();
        }
        assert!(log.segment_count() > 1);
        let leo = log.log_end_offset();
        let (b, h) = mk(seq - 3, 3, 0);
        let d = log.append(&b, &h, 0, NOW).unwrap();
        assert!(d.duplicate);
        assert_eq!(d.base_offset, outs.last().unwrap().base_offset);
        assert_eq!(log.log_end_offset(), leo);
        let (b, h) = mk(seq + 3, 3, 0);
        assert!(matches!(
            log.append(&b, &h, 0, NOW),
            Err(StorageError::OutOfOrderSequence { .. })
        ));
        log.flush().await.unwrap();
        // Crash (no close): state is rebuilt from the snapshot + tail scan.
        drop(log);
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), leo);
        for back in 1..=5 {
            let (b, h) = mk(seq - 3 * back, 3, 0);
            let d = log.append(&b, &h, 0, NOW).unwrap();
            assert!(d.duplicate, "batch {back} back");
            assert_eq!(d.base_offset, outs[outs.len() - back as usize].base_offset);
        }
        let (b, h) = mk(seq - 18, 3, 0);
        assert!(log.append(&b, &h, 0, NOW).is_err(), "older than the window");
        let (b, h) = mk(0, 1, -1);
        assert!(matches!(
            log.append(&b, &h, 0, NOW),
            Err(StorageError::InvalidProducerEpoch { .. })
        ));
        let (b, h) = mk(5, 1, 1);
        assert!(matches!(
            log.append(&b, &h, 0, NOW),
            Err(StorageError::OutOfOrderSequence { .. })
        ));
        let (b, h) = mk(0, 1, 1);
        assert!(!log.append(&b, &h, 0, NOW).unwrap().duplicate);
        let (b, h) = mk(seq, 3, 0);
        assert!(matches!(
            log.append(&b, &h, 0, NOW),
            Err(StorageError::InvalidProducerEpoch { .. })
        ));
        log.close().await.unwrap();

        // Without the snapshot, the state is rebuilt by scanning every segment.
        for s in files(&dir, "snapshot") {
            std::fs::remove_file(s).unwrap();
        }
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        let (b, h) = mk(0, 1, 1);
        assert!(log.append(&b, &h, 0, NOW).unwrap().duplicate);
        let (b, h) = mk(1, 1, 1);
        assert!(!log.append(&b, &h, 0, NOW).unwrap().duplicate);
        log.close().await.unwrap();
    });
}

#[test]
fn offset_for_timestamp_matches_brute_force() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ts-0");
        let cache = Rc::new(BatchCache::new(0));
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        // Mostly increasing timestamps with some going backwards. `produced` gives record i of a
        // batch the timestamp base + i.
        let mut meta: Vec<(i64, Vec<i64>)> = Vec::new();
        for i in 0..150i64 {
            let ts = 1000 + i * 10 - if i % 7 == 3 { 45 } else { 0 };
            let n = 1 + (i as usize % 4);
            let (b, h) = produced(n, i as u64, ts);
            let o = log.append(&b, &h, 0, NOW).unwrap();
            meta.push((o.base_offset, (0..n as i64).map(|r| ts + r).collect()));
        }
        log.flush().await.unwrap();
        // Kafka's answer: in the first batch (by offset) whose max timestamp reaches q, the first
        // record whose timestamp does.
        async fn check(log: &PartitionLog, meta: &[(i64, Vec<i64>)]) {
            for q in (900..2600).step_by(13) {
                let want = meta
                    .iter()
                    .find(|(_, ts)| ts.iter().max().is_some_and(|m| *m >= q))
                    .and_then(|(base, ts)| {
                        let i = ts.iter().position(|t| *t >= q)?;
                        Some((base + i as i64, ts[i]))
                    });
                assert_eq!(log.offset_for_timestamp(q).await.unwrap(), want, "ts {q}");
            }
        }
        check(&log, &meta).await;
        log.close().await.unwrap();
        let log = PartitionLog::open(dir, small_cfg(), cache, NOW)
            .await
            .unwrap();
        check(&log, &meta).await;
        log.close().await.unwrap();
    });
}

#[test]
fn log_append_time_and_age_roll() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            message_timestamp_log_append: true,
            segment_ms: 1000,
            ..small_cfg()
        };
        let log = PartitionLog::open(
            tmp.path().join("lat-0"),
            cfg,
            Rc::new(BatchCache::new(1 << 20)),
            NOW,
        )
        .await
        .unwrap();
        let (b, h) = produced(3, 1, 5);
        let o = log.append(&b, &h, 2, NOW + 5).unwrap();
        assert_eq!(o.log_append_time, NOW + 5);
        let (b, h) = produced(1, 2, 5);
        log.append(&b, &h, 2, NOW + 500).unwrap();
        assert_eq!(log.segment_count(), 1);
        log.append(&b, &h, 2, NOW + 1005).unwrap();
        assert_eq!(log.segment_count(), 2);
        log.flush().await.unwrap();
        let s = log.read(0, 1, log.high_watermark()).await.unwrap();
        let h = validate(&s.batches().unwrap()[0]).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, NOW + 5);
        assert_eq!(h.partition_leader_epoch, 2);
        assert_eq!(
            log.offset_for_timestamp(NOW + 6).await.unwrap(),
            Some((3, NOW + 500))
        );
        log.close().await.unwrap();
    });
}

#[test]
fn concurrent_flushes_and_appends() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let log = Rc::new(
            PartitionLog::open(
                tmp.path().join("c-0"),
                small_cfg(),
                Rc::new(BatchCache::new(0)),
                NOW,
            )
            .await
            .unwrap(),
        );
        let mut expect = Vec::new();
        for r in 0..10 {
            expect.extend(append_many(&log, 5, r));
            let l1 = log.clone();
            let l2 = log.clone();
            let f1 = glommio::spawn_local(async move { l1.flush().await });
            expect.extend(append_many(&log, 3, 100 + r));
            let f2 = glommio::spawn_local(async move { l2.flush().await });
            f1.await.unwrap();
            f2.await.unwrap();
        }
        log.flush().await.unwrap();
        let all = read_all(&log, 0, 4096).await;
        assert_eq!(all.len(), expect.len());
        for (got, (_, want)) in all.iter().zip(&expect) {
            assert_eq!(&got[..], &want[..]);
        }
    });
}

/// The group commit's overlap: the next flush's write half runs before the previous one's
/// fdatasync, the fdatasyncs even finish out of order, and segments roll in between. The high
/// watermark moves only once data is fdatasynced, never backwards, and everything reads back
/// (also after a reopen, which checks every sealed segment is complete).
#[test]
fn overlapped_flush_halves() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("o-0");
        let log = open_small(&dir).await;
        let mut expect = Vec::new();
        let mut hw = 0;
        for r in 0..12 {
            expect.extend(append_many(&log, 2, r));
            let first = log.flush_write().await.unwrap();
            assert_eq!(log.high_watermark(), hw, "written, not yet durable");
            expect.extend(append_many(&log, 3, 100 + r));
            let second = log.flush_write().await.unwrap();
            // The later fdatasync first: it covers the earlier write too.
            if let Some(t) = second {
                log.flush_sync(t).await.unwrap();
            }
            let after_second = log.high_watermark();
            assert!(after_second >= hw);
            if let Some(t) = first {
                log.flush_sync(t).await.unwrap();
            }
            assert_eq!(log.high_watermark(), after_second, "never backwards");
            hw = log.high_watermark();
            assert_eq!(hw, log.log_end_offset(), "round {r}: everything durable");
        }
        assert!(files(&dir, "log").len() > 2, "segments rolled");
        assert_reads_back(&log, &expect).await;
        drop(log);
        let log = open_small(&dir).await;
        assert_eq!(log.high_watermark(), hw);
        assert_reads_back(&log, &expect).await;
    });
}

/// A group-commit round skips a tail that got no batch since its last write (the round before
/// took them, and completes first): no rewrite of its last page, no ticket to fdatasync. A new
/// batch is written again, a plain `flush_write` never skips, and segments still roll and seal.
#[test]
fn a_round_skips_a_tail_with_nothing_new() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s-0");
        let log = open_small(&dir).await;
        let mut expect = append_many(&log, 2, 1);
        let first = log.flush_write_round().await.unwrap().expect("new batches");
        assert!(first.added_bytes() > 0);
        assert!(
            log.flush_write_round().await.unwrap().is_none(),
            "nothing appended since the last write"
        );
        assert_eq!(log.high_watermark(), 0, "the skip made nothing durable");
        log.flush_sync(first).await.unwrap();
        assert_eq!(log.high_watermark(), log.log_end_offset());

        expect.extend(append_many(&log, 1, 2));
        let second = log.flush_write_round().await.unwrap().expect("a new batch");
        assert!(second.added_bytes() > 0);
        let plain = log.flush_write().await.unwrap();
        assert!(
            plain.is_some(),
            "a plain flush_write rewrites the last page"
        );
        log.flush_sync(second).await.unwrap();
        assert_eq!(log.high_watermark(), log.log_end_offset());

        // Rolls: the sealing segment is written, fdatasynced and sealed by the round.
        for r in 0..40 {
            expect.extend(append_many(&log, 3, 10 + r));
            if let Some(t) = log.flush_write_round().await.unwrap() {
                log.flush_sync(t).await.unwrap();
            }
            assert_eq!(log.high_watermark(), log.log_end_offset(), "round {r}");
            assert!(
                log.flush_write_round().await.unwrap().is_none(),
                "round {r}"
            );
        }
        assert!(files(&dir, "log").len() > 2, "segments rolled");
        assert_reads_back(&log, &expect).await;
        let hw = log.high_watermark();
        drop(log);
        let log = open_small(&dir).await;
        assert_eq!(log.high_watermark(), hw);
        assert_reads_back(&log, &expect).await;
    });
}

#[test]
fn crash_with_truncated_tail_across_segments() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("crash-0");
        let cache = Rc::new(BatchCache::new(0));
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        let expect = append_many(&log, 120, 5);
        log.flush().await.unwrap();
        let segs = log.segment_count();
        drop(log);
        let tail = files(&dir, "log").pop().unwrap();
        // Cut the tail's logical content (before its zero padding) in half.
        let raw = std::fs::read(&tail).unwrap();
        let logical = raw.iter().rposition(|b| *b != 0).unwrap() + 1;
        let f = std::fs::OpenOptions::new().write(true).open(&tail).unwrap();
        f.set_len(logical as u64 / 2).unwrap();
        drop(f);
        std::fs::remove_file(tail.with_extension("index")).ok();
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        assert_eq!(log.segment_count(), segs);
        let all = read_all(&log, 0, 1 << 20).await;
        assert!(all.len() < expect.len());
        for (got, (_, want)) in all.iter().zip(&expect) {
            assert_eq!(&got[..], &want[..]);
        }
        assert_eq!(
            log.log_end_offset(),
            validate(all.last().unwrap()).unwrap().last_offset() + 1
        );
        // A damaged sealed segment index is rebuilt.
        let first_index = files(&dir, "index").remove(0);
        std::fs::write(&first_index, b"garbage").unwrap();
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache, NOW)
            .await
            .unwrap();
        assert_eq!(read_all(&log, 0, 100).await.len(), all.len());
        assert_eq!(std::fs::metadata(&first_index).unwrap().len() % 8, 0);
        log.close().await.unwrap();
    });
}

#[derive(Debug, Clone)]
enum Damage {
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Garbage(prop::sample::Index, Vec<u8>),
}

fn arb_damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Damage::Flip(i, b)),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..3000)
        )
            .prop_map(|(i, g)| Damage::Garbage(i, g)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Crash (drop without close) then damage the tail segment: reopening never loses a batch
    /// lying wholly before the damage and never returns a damaged batch; the log stays usable.
    #[test]
    fn crash_recovery_keeps_the_intact_prefix(n in 1usize..40, unflushed in 0usize..5, damage in arb_damage(), multi in any::<bool>()) {
        run(move || async move {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("p-0");
            let cfg = if multi { small_cfg() } else { LogConfig { segment_bytes: 1 << 30, ..small_cfg() } };
            let cache = Rc::new(BatchCache::new(0));
            let log = PartitionLog::open(dir.clone(), cfg.clone(), cache.clone(), NOW).await.unwrap();
            let expect = append_many(&log, n, 11);
            log.flush().await.unwrap();
            append_many(&log, unflushed, 12); // never flushed: must not survive
            drop(log);

            let path = files(&dir, "log").pop().unwrap();
            let tail_base: i64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            let before_tail = expect.iter().filter(|(b, _)| *b < tail_base).count();
            let mut raw = std::fs::read(&path).unwrap();
            // batch spans in the tail file
            let mut spans = Vec::new();
            let mut pos = 0usize;
            for (_, b) in expect.iter().skip(before_tail) { spans.push((pos, b.len())); pos += b.len(); }
            let cut = match &damage {
                Damage::Truncate(i) => { let c = i.index(raw.len() + 1); raw.truncate(c); c }
                Damage::Flip(i, bit) => {
                    if raw.is_empty() { return; }
                    let c = i.index(raw.len());
                    // partitionLeaderEpoch is outside Kafka's CRC: undetectable by design.
                    if spans.iter().any(|(p, _)| c >= p + 12 && c < p + 16) { return; }
                    raw[c] ^= 1 << bit; c
                }
                Damage::Garbage(i, g) => {
                    let c = i.index(raw.len() + 1);
                    raw.truncate(c); raw.extend_from_slice(g); c
                }
            };
            std::fs::write(&path, &raw).unwrap();

            let log = PartitionLog::open(dir.clone(), cfg.clone(), cache.clone(), NOW).await.unwrap();
            let intact = before_tail + spans.iter().filter(|(p, l)| p + l <= cut).count();
            let all = read_all(&log, 0, 1 << 16).await;
            assert!(all.len() <= expect.len(), "unflushed or garbage batches resurrected");
            assert!(all.len() >= intact, "lost intact batches: {} < {}", all.len(), intact);
            for (got, (_, want)) in all.iter().zip(&expect) {
                assert_eq!(&got[..], &want[..]);
            }
            for b in &all { validate(b).unwrap(); }
            let leo = log.log_end_offset();
            let last = all.last().map(|b| validate(b).unwrap().last_offset() + 1).unwrap_or(0);
            assert_eq!(leo, last);
            // Still usable: append, flush, reopen.
            let more = append_many(&log, 3, 13);
            assert_eq!(more[0].0, leo);
            log.flush().await.unwrap();
            log.close().await.unwrap();
            let log = PartitionLog::open(dir.clone(), cfg, cache, NOW).await.unwrap();
            assert_eq!(read_all(&log, 0, 1 << 16).await.len(), all.len() + 3);
            log.close().await.unwrap();
        });
    }
}

#[test]
fn clean_marker_is_not_trusted_when_the_tail_changed() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m-0");
        let cache = Rc::new(BatchCache::new(0));
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        assert!(!log.tail_was_rescanned());
        let expect = append_many(&log, 50, 4);
        log.close().await.unwrap();
        let tail = files(&dir, "log").pop().unwrap();
        let mut raw = std::fs::read(&tail).unwrap();
        raw.extend_from_slice(&[0xAB; 100]);
        std::fs::write(&tail, &raw).unwrap();
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        assert!(log.tail_was_rescanned());
        let all = read_all(&log, 0, 1 << 20).await;
        assert_eq!(all.len(), expect.len());
        // Crash after a clean open: the marker is gone, so the next open rescans.
        drop(log);
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache, NOW)
            .await
            .unwrap();
        assert!(log.tail_was_rescanned());
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), expect.len());
        log.close().await.unwrap();
    });
}

#[test]
fn batches_larger_than_a_read_chunk() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("big-0");
        let cache = Rc::new(BatchCache::new(0));
        let cfg = LogConfig {
            segment_bytes: 512 * 1024,
            ..small_cfg()
        };
        let log = PartitionLog::open(dir.clone(), cfg.clone(), cache.clone(), NOW)
            .await
            .unwrap();
        let mut expect = Vec::new();
        for i in 0..6u64 {
            let mut b = BatchBuilder::simple(3, i);
            b.records[1].value = Some(vec![i as u8; 150_000 + i as usize * 7]);
            let bytes = Bytes::from(b.build());
            let h = validate(&bytes).unwrap();
            let o = log.append(&bytes, &h, 0, NOW).unwrap();
            expect.push((o.base_offset, stored(&bytes, o.base_offset, 0)));
            let (b, h) = produced(2, i, NOW);
            let o = log.append(&b, &h, 0, NOW).unwrap();
            expect.push((o.base_offset, stored(&b, o.base_offset, 0)));
        }
        log.flush().await.unwrap();
        assert!(log.segment_count() > 1);
        // One batch per read even with max_bytes = 1; skipping big batches from an index point.
        let all = read_all(&log, 0, 1).await;
        assert_eq!(all.len(), expect.len());
        for (got, (_, want)) in all.iter().zip(&expect) {
            assert_eq!(&got[..], &want[..]);
        }
        for (base, want) in &expect {
            let s = log.read(*base + 1, 1, log.high_watermark()).await.unwrap();
            let h = validate(&s.batches().unwrap()[0]).unwrap();
            if h.last_offset() > *base {
                assert_eq!(&s.batches().unwrap()[0][..], &want[..]);
            }
        }
        log.close().await.unwrap();
    });
}

#[test]
fn io_failure_is_an_error_then_the_log_is_offline() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("f-0");
        let log = PartitionLog::open(dir.clone(), small_cfg(), Rc::new(BatchCache::new(0)), NOW)
            .await
            .unwrap();
        append_many(&log, 3, 1);
        log.flush().await.unwrap();
        // Force a roll, then make the directory vanish so creating the next segment fails.
        append_many(&log, 40, 2);
        std::fs::remove_dir_all(&dir).unwrap();
        let err = log.flush().await.unwrap_err();
        assert!(err.is_storage_failure());
        assert!(err.to_string().contains("f-0"), "{err}");
        let (b, h) = produced(1, 1, NOW);
        assert!(matches!(
            log.append(&b, &h, 0, NOW),
            Err(StorageError::LogFailed { .. })
        ));
        assert!(matches!(
            log.flush().await,
            Err(StorageError::LogFailed { .. })
        ));
    });
}

#[test]
fn one_flush_of_several_mebibytes() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mb-0");
        let cfg = LogConfig {
            segment_bytes: 1 << 30,
            preallocate_bytes: 1 << 20,
            ..small_cfg()
        };
        let log = PartitionLog::open(dir.clone(), cfg.clone(), Rc::new(BatchCache::new(0)), NOW)
            .await
            .unwrap();
        let mut expect = Vec::new();
        for i in 0..25u64 {
            let (base, bytes) = append_with_value(&log, 2, i, vec![(i * 3) as u8; 130_003]);
            expect.push(stored(&bytes, base, 0));
        }
        log.flush().await.unwrap();
        log.close().await.unwrap();
        let log = PartitionLog::open(dir, cfg, Rc::new(BatchCache::new(0)), NOW)
            .await
            .unwrap();
        let all = read_all(&log, 0, 1 << 22).await;
        assert_eq!(all.len(), expect.len());
        for (got, want) in all.iter().zip(&expect) {
            assert_eq!(&got[..], &want[..]);
        }
        log.close().await.unwrap();
    });
}

/// Reads from disk use the chunk read ahead of them: sequential reads across segments return
/// exactly what was written, the next chunk is in flight after each read, a jump elsewhere or a
/// lower `upper` or `max_bytes` is served correctly, and a closed partition leaves no slot.
#[test]
fn disk_reads_are_read_ahead() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ra-0");
        let cfg = LogConfig {
            segment_bytes: 256 * 1024,
            ..small_cfg()
        };
        let log = PartitionLog::open(dir.clone(), cfg.clone(), Rc::new(BatchCache::new(0)), NOW)
            .await
            .unwrap();
        let mut expect = Vec::new();
        for i in 0..120u64 {
            let (base, bytes) = append_with_value(&log, 3, i, vec![i as u8; 6_000]);
            expect.push((base, stored(&bytes, base, 0)));
        }
        log.flush().await.unwrap();
        log.close().await.unwrap();
        assert!(files(&dir, "log").len() >= 3, "several segments");

        // 16 MiB of cache: 4 read-ahead slots. Fresh cache, so every read comes from disk.
        let cache = Rc::new(BatchCache::new(16 << 20));
        let log = PartitionLog::open(dir, cfg, cache.clone(), NOW)
            .await
            .unwrap();
        let hw = log.high_watermark();
        let first = log.read(0, 20_000, hw).await.unwrap();
        assert!(!first.from_cache);
        assert_eq!(cache.readahead.len(), 1, "one partition reads ahead");
        assert_eq!(
            cache.readahead.chunks(),
            READ_AHEAD_DEPTH,
            "the next chunks are being read"
        );
        let all = read_all(&log, 0, 20_000).await;
        assert_eq!(all.len(), expect.len());
        for (got, (_, want)) in all.iter().zip(&expect) {
            assert_eq!(&got[..], &want[..]);
        }

        // A jump back, then a read with a smaller max_bytes and a lower upper than the chunk
        // read ahead was made for.
        let (o40, want40) = &expect[40];
        let s = log.read(*o40, 20_000, hw).await.unwrap();
        let served = s.batches().unwrap();
        assert_eq!(&served[0][..], &want40[..]);
        // Exactly where the chunk read ahead starts.
        let next = 40 + served.len();
        let (o_next, want_next) = &expect[next];
        let upper = expect[next + 1].0;
        let s = log.read(*o_next, 1, upper).await.unwrap();
        let got = s.batches().unwrap();
        assert_eq!(got.len(), 1, "max_bytes 1: exactly one batch");
        assert_eq!(&got[0][..], &want_next[..]);
        let s = log.read(upper, 1 << 20, upper).await.unwrap();
        assert!(s.is_empty(), "nothing at or past upper");

        log.close().await.unwrap();
        assert_eq!(
            cache.readahead.len(),
            0,
            "closing forgets the partition's slot"
        );
    });
}

/// At the shard's read-ahead limit, a partition's first chunk takes the place of another's
/// second, not of a partition's next chunk; reads through chunks read two ahead, through
/// fetches of other sizes and back jumps, serve every batch as stored.
#[test]
fn read_ahead_depth_gives_way_to_other_partitions() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 256 * 1024,
            ..small_cfg()
        };
        let mut dirs = Vec::new();
        let mut expect = Vec::new();
        for p in 0..3u64 {
            let dir = tmp.path().join(format!("depth-{p}"));
            let log =
                PartitionLog::open(dir.clone(), cfg.clone(), Rc::new(BatchCache::new(0)), NOW)
                    .await
                    .unwrap();
            let mut want = Vec::new();
            for i in 0..90u64 {
                let value = vec![(p * 7 + i) as u8; 5_000];
                let (base, bytes) = append_with_value(&log, 2, p * 1000 + i, value);
                want.push(stored(&bytes, base, 0));
            }
            log.flush().await.unwrap();
            log.close().await.unwrap();
            dirs.push(dir);
            expect.push(want);
        }

        // 16 MiB of cache: 4 chunks read ahead per shard, 2 per partition at most.
        assert_eq!(READ_AHEAD_DEPTH, 2);
        let cache = Rc::new(BatchCache::new(16 << 20));
        let mut logs = Vec::new();
        for dir in &dirs {
            logs.push(
                PartitionLog::open(dir.clone(), cfg.clone(), cache.clone(), NOW)
                    .await
                    .unwrap(),
            );
        }
        let hw = logs[0].high_watermark();
        logs[0].read(0, 20_000, hw).await.unwrap();
        logs[1].read(0, 20_000, hw).await.unwrap();
        assert_eq!((cache.readahead.len(), cache.readahead.chunks()), (2, 4));
        // The third partition's next chunk takes the first one's second.
        logs[2].read(0, 20_000, hw).await.unwrap();
        assert_eq!(
            (cache.readahead.len(), cache.readahead.chunks()),
            (3, 4),
            "every partition keeps its next chunk"
        );

        // Everything, in turns over the partitions, with fetch sizes that sometimes end inside
        // a chunk read ahead (its rest is read again) and sometimes take all of it.
        let mut next = [0i64; 3];
        let mut got: Vec<Vec<Bytes>> = vec![Vec::new(); 3];
        let mut turn = 0usize;
        while next.iter().any(|&n| n < hw) {
            let p = turn % 3;
            turn += 1;
            if next[p] >= hw {
                continue;
            }
            let max = if turn % 4 == 0 { 7_000 } else { 20_000 };
            let s = logs[p].read(next[p], max, hw).await.unwrap();
            for b in s.batches().unwrap() {
                let h = crate::protocol::record_batch::validate_stored(&b).unwrap();
                next[p] = h.base_offset + h.last_offset_delta as i64 + 1;
                got[p].push(b);
            }
            assert!(cache.readahead.chunks() <= 4);
        }
        for p in 0..3 {
            assert_eq!(got[p].len(), expect[p].len(), "partition {p}");
            for (g, w) in got[p].iter().zip(&expect[p]) {
                assert_eq!(&g[..], &w[..], "partition {p}");
            }
        }

        // A jump back: the chunks read ahead are dropped, the read is served from disk.
        let s = logs[1].read(10, 20_000, hw).await.unwrap();
        let first = &s.batches().unwrap()[0];
        let h = crate::protocol::record_batch::validate_stored(first).unwrap();
        assert!(h.base_offset <= 10 && 10 <= h.base_offset + h.last_offset_delta as i64);
        for log in logs {
            log.close().await.unwrap();
        }
        assert_eq!(
            cache.readahead.chunks(),
            0,
            "closed partitions keep no chunks"
        );
    });
}

/// A read ahead stops at a batch start the offset index knows, so no batch is read twice; with
/// no batch start within the size, the size as it is.
#[test]
fn a_read_ahead_ends_at_a_batch_start() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 1 << 20,
            ..small_cfg()
        };
        let log = PartitionLog::open(
            tmp.path().join("wb-0"),
            cfg,
            Rc::new(BatchCache::new(0)),
            NOW,
        )
        .await
        .unwrap();
        let mut starts = vec![0u64];
        for i in 0..20u64 {
            let (_, bytes) = append_with_value(&log, 1, i, vec![i as u8; 3_000 + 100 * i as usize]);
            starts.push(starts.last().unwrap() + bytes.len() as u64);
        }
        log.flush().await.unwrap();
        // Every batch is over the 1,024-byte index interval, so each (but the first) has an
        // entry: from batch 2, 20,000 bytes reach up to the last batch starting by then.
        let (pos, max) = (starts[2], 20_000usize);
        let last_start = *starts
            .iter()
            .rev()
            .find(|&&p| p <= pos + max as u64)
            .unwrap();
        let n = log.whole_batches_within(0, pos, max).unwrap();
        assert_eq!(n as u64, last_start - pos);
        assert!(n < max && n > 3_000, "{n}");
        assert_eq!(
            log.whole_batches_within(0, pos, 100),
            None,
            "no batch start within"
        );
        assert_eq!(
            log.whole_batches_within(7, pos, max),
            None,
            "no such segment"
        );
        log.close().await.unwrap();
    });
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: usize,
        big: bool,
    },
    Flush,
    Read {
        at: prop::sample::Index,
        max_bytes: usize,
    },
    CloseReopen,
    CrashReopen,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..10, prop::bool::weighted(0.1)).prop_map(|(records, big)| Op::Append { records, big }),
        2 => Just(Op::Flush),
        3 => (any::<prop::sample::Index>(), prop_oneof![Just(1usize), 1usize..3000, Just(1 << 20)])
            .prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::CloseReopen),
        1 => Just(Op::CrashReopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random appends, flushes, reads, clean and crash restarts against a model: acknowledged
    /// (flushed) batches always survive with their offsets; unflushed ones vanish on a crash;
    /// reads honour containment, contiguity, max_bytes and the high watermark.
    #[test]
    fn model_based_log(ops in prop::collection::vec(arb_op(), 1..60), cache_budget in prop_oneof![Just(0usize), Just(4096usize), Just(1usize << 20)]) {
        run(move || async move {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("model-0");
            let cache = Rc::new(BatchCache::new(cache_budget));
            let cfg = small_cfg();
            let mut log = Some(PartitionLog::open(dir.clone(), cfg.clone(), cache.clone(), NOW).await.unwrap());
            let mut acked: Vec<(i64, Vec<u8>)> = Vec::new();
            let mut pending: Vec<(i64, Vec<u8>)> = Vec::new();
            let mut seed = 0u64;
            for op in ops {
                let l = log.as_ref().unwrap();
                match op {
                    Op::Append { records, big } => {
                        seed += 1;
                        let mut b = BatchBuilder::simple(records, seed);
                        if big { b.records[0].value = Some(vec![7u8; 70_000]); }
                        let bytes = Bytes::from(b.build());
                        let h = validate(&bytes).unwrap();
                        let o = l.append(&bytes, &h, 1, NOW).unwrap();
                        let expect_base = pending.last().or(acked.last())
                            .map(|(_, b)| validate(b).unwrap().last_offset() + 1).unwrap_or(0);
                        assert_eq!(o.base_offset, expect_base);
                        pending.push((o.base_offset, stored(&bytes, o.base_offset, 1)));
                    }
                    Op::Flush => {
                        l.flush().await.unwrap();
                        acked.append(&mut pending);
                    }
                    Op::Read { at, max_bytes } => {
                        let hw = l.high_watermark();
                        let acked_end = acked.last().map(|(_, b)| validate(b).unwrap().last_offset() + 1).unwrap_or(0);
                        assert_eq!(hw, acked_end);
                        if acked.is_empty() { continue; }
                        let i = at.index(acked.len());
                        let h = validate(&acked[i].1).unwrap();
                        let off = h.base_offset + (h.last_offset_delta as i64) / 2;
                        let s = l.read(off, max_bytes, hw).await.unwrap();
                        assert!(!s.chunks.is_empty());
                        let total: usize = s.chunks.iter().map(|c| c.len()).sum();
                        let batches = s.batches().unwrap();
                        assert!(batches.len() == 1 || total <= max_bytes);
                        for (k, c) in batches.iter().enumerate() {
                            assert_eq!(&c[..], &acked[i + k].1[..]);
                        }
                    }
                    Op::CloseReopen => {
                        log.take().unwrap().close().await.unwrap();
                        acked.append(&mut pending);
                        let l = PartitionLog::open(dir.clone(), cfg.clone(), cache.clone(), NOW).await.unwrap();
                        assert!(!l.tail_was_rescanned());
                        log = Some(l);
                    }
                    Op::CrashReopen => {
                        drop(log.take());
                        pending.clear();
                        log = Some(PartitionLog::open(dir.clone(), cfg.clone(), cache.clone(), NOW).await.unwrap());
                    }
                }
                let l = log.as_ref().unwrap();
                let acked_end = acked.last().map(|(_, b)| validate(b).unwrap().last_offset() + 1).unwrap_or(0);
                let end = pending.last().map(|(_, b)| validate(b).unwrap().last_offset() + 1).unwrap_or(acked_end);
                assert_eq!(l.log_end_offset(), end);
                assert_eq!(l.high_watermark(), acked_end);
                assert!(cache.used_bytes() <= cache_budget);
            }
            let l = log.take().unwrap();
            let all = read_all(&l, 0, 1 << 16).await;
            assert_eq!(all.len(), acked.len());
            for (got, (_, want)) in all.iter().zip(&acked) {
                assert_eq!(&got[..], &want[..]);
            }
            l.close().await.unwrap();
        });
    }
}

#[test]
fn damage_in_a_sealed_segment_is_reported_on_read_not_returned() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rot-0");
        let cache = Rc::new(BatchCache::new(0));
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        let expect = append_many(&log, 60, 8);
        log.close().await.unwrap();
        let first = files(&dir, "log").remove(0);
        let mut raw = std::fs::read(&first).unwrap();
        raw[expect[0].1.len() - 3] ^= 0x10; // inside the first batch's records
        raw[expect[0].1.len()] ^= 0x01; // the second batch's baseOffset (outside the CRC)
        std::fs::write(&first, &raw).unwrap();
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache, NOW)
            .await
            .unwrap();
        let hw = log.high_watermark();
        let err = log.read(0, 1 << 20, hw).await.unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        assert!(err.is_storage_failure());
        let err = log.read(expect[1].0, 1 << 20, hw).await.unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        // Other segments still serve.
        let last = expect.last().unwrap();
        assert_eq!(
            &log.read(last.0, 1, hw).await.unwrap().batches().unwrap()[0][..],
            &last.1[..]
        );
        log.close().await.unwrap();
    });
}

#[test]
fn retention_deletes_old_segments_and_moves_the_log_start() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r-0");
        let cache = Rc::new(BatchCache::new(0));
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        let mut expect = Vec::new();
        for round in 0..12 {
            expect.extend(append_many(&log, 9, round));
            log.flush().await.unwrap();
        }
        let segs = log.segment_count();
        assert!(segs >= 4, "segments: {segs}");
        let total = log.size_bytes();
        let on_disk: u64 = expect.iter().map(|(_, b)| b.len() as u64).sum();
        assert_eq!(total, on_disk, "size_bytes is the sum of stored batches");

        // Nothing is old enough, no size limit: nothing goes.
        assert_eq!(
            log.apply_retention(NOW + 1000, 3_600_000, -1)
                .await
                .unwrap(),
            0
        );
        // Size: keep at least 2 segments' worth; whole closed segments only.
        let n = log.apply_retention(NOW, -1, 2 * 4096).await.unwrap();
        assert!(n >= 1);
        assert!(log.size_bytes() >= 2 * 4096, "{}", log.size_bytes());
        assert_eq!(files(&dir, "log").len(), log.segment_count());
        let start = log.log_start_offset();
        assert!(start > 0);
        assert!(matches!(
            log.read(start - 1, 100, log.high_watermark()).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        let kept = read_all(&log, start, 1 << 20).await;
        let want: Vec<&Vec<u8>> = expect
            .iter()
            .filter(|(o, _)| *o >= start)
            .map(|(_, b)| b)
            .collect();
        assert_eq!(kept.len(), want.len());
        for (g, w) in kept.iter().zip(&want) {
            assert_eq!(&g[..], &w[..]);
        }

        // Time: ten days later, every closed segment has expired; the active one stays.
        let n = log
            .apply_retention(NOW + 10 * 86_400_000, 86_400_000, -1)
            .await
            .unwrap();
        assert!(n >= 1);
        assert_eq!(log.segment_count(), 1);
        assert_eq!(files(&dir, "log").len(), 1);
        let active_start = log.log_start_offset();
        assert!(active_start > start);

        // Reopen (as after a crash: no clean close): the start comes from the remaining files.
        let leo = log.log_end_offset();
        drop(log);
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (active_start, leo)
        );
        log.close().await.unwrap();
    });
}

#[test]
fn delete_records_moves_the_start_durably_and_refuses_past_the_high_watermark() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d-0");
        let cache = Rc::new(BatchCache::new(0));
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        for round in 0..8 {
            append_many(&log, 9, round);
            log.flush().await.unwrap();
        }
        let segs = log.segment_count();
        let hw = log.high_watermark();
        // Unflushed appends are beyond the high watermark: refused.
        append_many(&log, 3, 50);
        assert!(matches!(
            log.delete_records_before(log.log_end_offset(), NOW).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        log.flush().await.unwrap();
        // Inside the log: the start moves exactly there, whole segments below it go.
        let target = hw - 3;
        assert_eq!(
            log.delete_records_before(target, NOW).await.unwrap(),
            target
        );
        assert_eq!(log.log_start_offset(), target);
        assert!(log.segment_count() < segs);
        assert_eq!(files(&dir, "log").len(), log.segment_count());
        // Going backwards is a no-op.
        assert_eq!(log.delete_records_before(1, NOW).await.unwrap(), target);
        // The fetch at the new start returns the batch holding it.
        let s = log.read(target, 1, log.high_watermark()).await.unwrap();
        let h = BatchHeader::parse(&s.batches().unwrap()[0]).unwrap();
        assert!(h.base_offset <= target && target <= h.last_offset());

        // Survives a crash (no clean close) and a clean restart.
        drop(log);
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        assert_eq!(log.log_start_offset(), target);
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        assert_eq!(log.log_start_offset(), target);
        // Everything: the start is the high watermark.
        let hw = log.high_watermark();
        assert_eq!(log.delete_records_before(hw, NOW).await.unwrap(), hw);
        assert!(log.read(hw, 100, hw).await.unwrap().is_empty());
        log.close().await.unwrap();
    });
}

/// A keyed batch as a producer sends it: `(key, value)` records, `None` value = tombstone.
fn keyed(records: &[(&str, Option<&str>)], ts: i64) -> (Bytes, BatchHeader) {
    use crate::protocol::records::{encode_batch, KeyValue};
    let kvs: Vec<KeyValue> = records
        .iter()
        .map(|(k, v)| KeyValue {
            key: Some(k.as_bytes().to_vec()),
            value: v.map(|v| v.as_bytes().to_vec()),
        })
        .collect();
    let b = Bytes::from(encode_batch(&kvs, ts));
    let h = validate(&b).unwrap();
    (b, h)
}

/// Every record readable from `from`: (offset, key, value).
async fn records_from(log: &PartitionLog, from: i64) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    for b in read_all(log, from, 1 << 20).await {
        crate::protocol::records::for_each_record(&b, |r| {
            out.push((
                r.offset,
                String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned(),
                r.value.map(|v| String::from_utf8_lossy(v).into_owned()),
            ))
        })
        .unwrap();
    }
    out
}

fn compact_now() -> log::CompactionSettings {
    log::CompactionSettings {
        min_cleanable_ratio: 0.0,
        min_lag_ms: 0,
        max_lag_ms: i64::MAX,
        delete_retention_ms: 0,
        map_capacity: 1 << 20,
        pacer: std::rc::Rc::new(crate::storage::pacing::IoPacer::new(0)),
    }
}

#[test]
fn compaction_keeps_the_latest_value_per_key_and_survives_reopen() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c-0");
        let cache = Rc::new(BatchCache::new(0));
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        // 300 updates over 10 keys, 3 per batch; key k3 is deleted (tombstone) near the end.
        let mut latest: std::collections::BTreeMap<String, Option<String>> = Default::default();
        for i in 0..100 {
            let recs: Vec<(String, Option<String>)> = (0..3)
                .map(|j| {
                    let k = format!("k{}", (i * 3 + j) % 10);
                    let v = if i == 90 && k == "k3" {
                        None
                    } else {
                        Some(format!("v{i}-{j}"))
                    };
                    (k, v)
                })
                .collect();
            let refs: Vec<(&str, Option<&str>)> = recs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            let (b, h) = keyed(&refs, NOW + i as i64);
            log.append(&b, &h, 3, NOW).unwrap();
            for (k, v) in recs {
                latest.insert(k, v);
            }
            log.flush().await.unwrap();
        }
        let segs = log.segment_count();
        assert!(segs >= 3, "{segs} segments");
        let before = records_from(&log, 0).await;
        assert_eq!(before.len(), 300);
        let leo = log.log_end_offset();

        // Tombstones younger than delete.retention.ms stay.
        let keep_tombstones = log::CompactionSettings {
            delete_retention_ms: i64::MAX / 4,
            ..compact_now()
        };
        let o = log
            .compact(&keep_tombstones, NOW + 1000)
            .await
            .unwrap()
            .expect("compacted");
        assert!(
            o.segments_rewritten >= 1 && o.bytes_after < o.bytes_before,
            "{o:?}"
        );
        assert_eq!(files(&dir, "cleaned").len(), 0);
        let after = records_from(&log, 0).await;
        // Offsets kept, in order; within the closed segments one record per key.
        assert!(after.windows(2).all(|w| w[0].0 < w[1].0));
        let by_offset: std::collections::HashMap<i64, &(i64, String, Option<String>)> =
            before.iter().map(|r| (r.0, r)).collect();
        for r in &after {
            assert_eq!(by_offset[&r.0], r, "record at {} changed", r.0);
        }
        let clean: Vec<_> = after.iter().filter(|r| r.0 < o.first_dirty).collect();
        let mut keys: Vec<&String> = clean.iter().map(|r| &r.1).collect();
        keys.sort();
        let n = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), n, "one record per key in the compacted part");
        // The latest value of every key is still there (the active segment is not compacted).
        for (k, v) in &latest {
            let last = after.iter().rev().find(|r| &r.1 == k).expect("key present");
            assert_eq!(&last.2, v, "latest value of {k}");
        }
        assert_eq!(log.log_end_offset(), leo);

        // Nothing new: the next pass has nothing to do.
        assert!(log
            .compact(&keep_tombstones, NOW + 1000)
            .await
            .unwrap()
            .is_none());

        // Reopen as after a crash (indexes from the files written by compaction) and after a
        // crash between writing a compacted copy and swapping it (a leftover .cleaned file).
        drop(log);
        std::fs::write(dir.join("00000000000000000000.log.cleaned"), b"partial").unwrap();
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        assert_eq!(files(&dir, "cleaned").len(), 0);
        assert_eq!(records_from(&log, 0).await, after);
        // Remove the index files: rebuilt by scanning the compacted segments (empty batches
        // and gaps inside batches included).
        log.close().await.unwrap();
        for p in files(&dir, "index")
            .into_iter()
            .chain(files(&dir, "timeindex"))
        {
            std::fs::remove_file(p).unwrap();
        }
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        assert_eq!(records_from(&log, 0).await, after);

        // Appending continues at the same offsets.
        let (b, h) = keyed(&[("k1", Some("after"))], NOW + 500);
        assert_eq!(log.append(&b, &h, 3, NOW).unwrap().base_offset, leo);
        log.flush().await.unwrap();
        log.close().await.unwrap();
    });
}

/// After compaction removed every record of many segments, those segments hold one empty batch
/// each. One read from their start goes on past them to the first batch with records: a
/// fetch answered with only empty batches makes librdkafka give up (MSG_SIZE_TOO_LARGE after
/// ten of them).
#[test]
fn a_read_goes_on_past_segments_that_compaction_emptied() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("e-0");
        let cache = Rc::new(BatchCache::new(0));
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        // The same key over and over: compaction keeps only the very last record.
        for i in 0..600 {
            let v = format!("v{i}-{}", "x".repeat(100));
            let (b, h) = keyed(&[("k", Some(v.as_str()))], NOW + i as i64);
            log.append(&b, &h, 3, NOW).unwrap();
            log.flush().await.unwrap();
        }
        let segs = log.segment_count();
        assert!(segs >= 15, "{segs} segments");
        log.compact(&compact_now(), NOW + 1000)
            .await
            .unwrap()
            .expect("compacted");
        // Every closed segment is now empty batches; the active one still has records.
        let slice = log.read(0, 1 << 20, log.high_watermark()).await.unwrap();
        let headers: Vec<BatchHeader> = slice
            .batches()
            .unwrap()
            .iter()
            .map(|b| BatchHeader::parse(b).unwrap())
            .collect();
        assert!(
            headers.iter().take_while(|h| h.records_count == 0).count() >= 10,
            "{} empty batches first",
            headers.iter().take_while(|h| h.records_count == 0).count()
        );
        assert!(
            headers.iter().any(|h| h.records_count > 0),
            "a read of only empty batches: {headers:?}"
        );
        // Contiguous offsets from 0.
        let mut next = 0;
        for h in &headers {
            assert_eq!(h.base_offset, next);
            next = h.last_offset() + 1;
        }
        // A small budget still gives at least the first batch, and stops within it.
        let small = log.read(0, 100, log.high_watermark()).await.unwrap();
        assert!(small.bytes() <= 200, "{} bytes", small.bytes());
    });
}

/// A transactional batch of producer `pid` (epoch 0) with sequences from `seq`.
fn txn_batch(pid: i64, seq: i32, records: usize) -> (Bytes, BatchHeader) {
    let mut b = BatchBuilder::simple(records, pid as u64 * 1000 + seq as u64);
    b.producer_id = pid;
    b.producer_epoch = 0;
    b.base_sequence = seq;
    b.attributes = crate::protocol::record_batch::ATTR_TRANSACTIONAL;
    let bytes = Bytes::from(b.build());
    let h = validate(&bytes).unwrap();
    (bytes, h)
}

fn marker(pid: i64, epoch: i16, commit: bool, coordinator_epoch: i32) -> (Bytes, BatchHeader) {
    let m = crate::protocol::records::EndTxnMarker {
        commit,
        coordinator_epoch,
    };
    let bytes = Bytes::from(m.encode_batch(pid, epoch, NOW));
    let h = validate(&bytes).unwrap();
    (bytes, h)
}

#[test]
fn transactions_set_the_last_stable_offset_and_index_aborts_across_rolls_and_reopens() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("txn-0");
        let cache = Rc::new(BatchCache::new(0));
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        let append = |(b, h): (Bytes, BatchHeader)| log.append(&b, &h, 0, NOW).unwrap();
        // Producer 1 opens a transaction at offset 0; plain records follow; producer 2 opens
        // one too.
        let t1 = append(txn_batch(1, 0, 3));
        append(produced(2, 1, NOW));
        let t2 = append(txn_batch(2, 0, 2));
        log.flush().await.unwrap();
        assert_eq!(log.open_transactions(), 2);
        assert_eq!(log.high_watermark(), 7);
        assert_eq!(log.last_stable_offset(), t1.base_offset);
        // Producer 1 aborts: the LSO moves to producer 2's first offset, but only once the
        // marker is durable.
        let m1 = append(marker(1, 0, false, 0));
        assert_eq!(log.last_stable_offset(), 0, "marker not durable yet");
        log.flush().await.unwrap();
        assert_eq!(log.last_stable_offset(), t2.base_offset);
        let aborted = log.aborted_transactions(0, log.high_watermark());
        assert_eq!(aborted.len(), 1);
        assert_eq!(
            (
                aborted[0].producer_id,
                aborted[0].first_offset,
                aborted[0].last_offset
            ),
            (1, 0, m1.base_offset)
        );
        // A marker from an older coordinator epoch, or an older producer epoch, is refused.
        let (b, h) = marker(2, 0, true, 0);
        log.append(&b, &h, 0, NOW).unwrap();
        let (b, h) = marker(2, 0, true, -5);
        let t2b = append(txn_batch(2, 2, 1));
        assert!(matches!(
            log.append(&b, &h, 0, NOW),
            Err(StorageError::CoordinatorFenced { .. })
        ));
        let (b, h) = marker(1, -1, false, 0);
        assert!(matches!(
            log.append(&b, &h, 0, NOW),
            Err(StorageError::InvalidProducerEpoch { .. })
        ));
        // Many transactions across segment rolls (4 KiB segments): every third aborted.
        let mut expect_aborted = vec![(1, 0, m1.base_offset)];
        let mut seq = 3;
        for i in 0..40 {
            let first = append(txn_batch(1, seq, 4)).base_offset;
            seq += 4;
            append(produced(1, 100 + i, NOW));
            let abort = i % 3 == 0;
            let m = append(marker(1, 0, !abort, 0));
            if abort {
                expect_aborted.push((1, first, m.base_offset));
            }
        }
        log.flush().await.unwrap();
        assert!(log.segment_count() > 3, "rolled: {}", log.segment_count());
        // Producer 2's transaction (t2b) is still open.
        assert_eq!(log.last_stable_offset(), t2b.base_offset);
        let summary = |log: &PartitionLog| {
            log.aborted_transactions(0, i64::MAX)
                .iter()
                .map(|t| (t.producer_id, t.first_offset, t.last_offset))
                .collect::<Vec<_>>()
        };
        assert_eq!(summary(&log), expect_aborted);
        // A fetch from the middle only gets what overlaps it.
        let (_, mid_first, mid_last) = expect_aborted[5];
        let got = log.aborted_transactions(mid_first + 1, mid_last);
        assert_eq!(got.first().map(|t| t.first_offset), Some(mid_first));
        assert!(got
            .iter()
            .all(|t| t.last_offset > mid_first && t.first_offset < mid_last));
        assert!(!files(&dir, "txnindex").is_empty());
        let lso = log.last_stable_offset();

        // Clean close and reopen: the same state from the marker and the index files.
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        assert!(!log.tail_was_rescanned());
        assert_eq!(summary(&log), expect_aborted);
        assert_eq!(log.last_stable_offset(), lso);
        assert_eq!(log.open_transactions(), 1);

        // Crash (no close), then every index file lost: rebuilt from the segments and the
        // producer snapshots.
        let (b, h) = marker(2, 0, false, 0);
        let m2 = log.append(&b, &h, 0, NOW).unwrap();
        log.flush().await.unwrap();
        drop(log);
        for ext in ["txnindex", "index", "timeindex"] {
            for f in files(&dir, ext) {
                std::fs::remove_file(f).unwrap();
            }
        }
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        assert!(log.tail_was_rescanned());
        let mut with_p2 = expect_aborted.clone();
        with_p2.push((2, t2b.base_offset, m2.base_offset));
        assert_eq!(summary(&log), with_p2);
        assert_eq!(log.open_transactions(), 0);
        assert_eq!(log.last_stable_offset(), log.high_watermark());
    });
}

#[test]
fn compaction_drops_aborted_data_keeps_committed_and_stops_at_open_transactions() {
    use crate::protocol::records::{encode_batch_of, KeyValue};
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ct-0");
        let cache = Rc::new(BatchCache::new(0));
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        let append = |(b, h): (Bytes, BatchHeader)| log.append(&b, &h, 0, NOW).unwrap();
        let in_txn = |pid: i64, records: &[(&str, &str)]| {
            let kvs: Vec<KeyValue> = records
                .iter()
                .map(|(k, v)| KeyValue {
                    key: Some(k.as_bytes().to_vec()),
                    value: Some(v.as_bytes().to_vec()),
                })
                .collect();
            let b = Bytes::from(encode_batch_of(&kvs, NOW, Some((pid, 0))));
            let h = validate(&b).unwrap();
            (b, h)
        };
        let filler = |log: &PartitionLog, round: usize| {
            for i in 0..20 {
                let v = format!("fill-{round}-{i}-{}", "x".repeat(300));
                let (b, h) = keyed(&[(&format!("f{}", i % 4), Some(&v))], NOW);
                log.append(&b, &h, 0, NOW).unwrap();
            }
        };
        append(keyed(&[("k2", Some("plain"))], NOW));
        append(in_txn(5, &[("k1", "committed")]));
        append(marker(5, 0, true, 0));
        // An aborted transaction writes newer values of both keys: they must not win.
        append(in_txn(5, &[("k1", "aborted"), ("k2", "aborted")]));
        append(marker(5, 0, false, 0));
        filler(&log, 0);
        // A transaction left open: nothing from its first offset on may be compacted.
        let open = append(in_txn(6, &[("k3", "open")]));
        filler(&log, 1);
        filler(&log, 2);
        log.flush().await.unwrap();
        assert!(log.segment_count() > 3);
        assert_eq!(log.last_stable_offset(), open.base_offset);
        log.compact(&compact_now(), NOW + 1).await.unwrap();

        let mut values: Vec<(i64, String, String)> = Vec::new();
        for b in read_all(&log, 0, 1 << 20).await {
            let h = validate_stored(&b).unwrap();
            if h.is_control() {
                continue;
            }
            crate::protocol::records::for_each_record(&b, |r| {
                values.push((
                    r.offset,
                    String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned(),
                    String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned(),
                ))
            })
            .unwrap();
        }
        let of = |key: &str| -> Vec<String> {
            values
                .iter()
                .filter(|(_, k, _)| k == key)
                .map(|(_, _, v)| v.clone())
                .collect()
        };
        assert_eq!(of("k1"), vec!["committed"]);
        assert_eq!(of("k2"), vec!["plain"]);
        assert_eq!(of("k3"), vec!["open"]);
        // Below the open transaction superseded filler values went (all but those in the
        // segment holding the transaction's start, which stays whole); from it on, both later
        // rounds are still there.
        let below = values
            .iter()
            .filter(|(o, k, _)| *o < open.base_offset && k.starts_with('f'))
            .count();
        assert!(
            below < 20,
            "nothing compacted below the LSO: {below} filler values"
        );
        let above = values
            .iter()
            .filter(|(o, k, _)| *o > open.base_offset && k.starts_with('f'))
            .count();
        assert_eq!(
            above, 40,
            "nothing at or after the open transaction is compacted"
        );
    });
}

/// Regression (fault injection: 9,606 of 20,000 seeds, the first 0, 1, 6, 7): DeleteRecords
/// (or retention) past the first batch of an open transaction left the last stable offset
/// below the log start offset, so ListOffsets (read_committed, latest) answered an offset that
/// Fetch then refuses as out of range. The transaction stays open; nothing below the start is
/// held back.
#[test]
fn the_last_stable_offset_never_falls_below_the_log_start() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ls-0");
        let cache = Rc::new(BatchCache::new(0));
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        let append =
            |log: &PartitionLog, (b, h): (Bytes, BatchHeader)| log.append(&b, &h, 0, NOW).unwrap();
        append(&log, produced(2, 1, NOW));
        let open = append(&log, txn_batch(1, 0, 2));
        append(&log, produced(3, 2, NOW));
        log.flush().await.unwrap();
        assert_eq!(log.last_stable_offset(), open.base_offset);
        let start = log
            .delete_records_before(open.last_offset + 2, NOW)
            .await
            .unwrap();
        assert_eq!(start, open.last_offset + 2);
        assert_eq!(log.open_transactions(), 1);
        assert_eq!(log.last_stable_offset(), start);
        // The same after a crash: the transaction is still open from its first offset.
        drop(log);
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        assert_eq!(log.log_start_offset(), start);
        assert_eq!(log.open_transaction_starts(), vec![(1, open.base_offset)]);
        assert_eq!(log.last_stable_offset(), start);
        // Its marker ends it, and the index lists it from its first offset.
        let m = append(&log, marker(1, 0, false, 0));
        assert_eq!(log.last_stable_offset(), start, "marker not durable yet");
        log.flush().await.unwrap();
        assert_eq!(log.last_stable_offset(), log.high_watermark());
        let aborted = log.aborted_transactions(start, log.high_watermark());
        assert_eq!(
            aborted
                .iter()
                .map(|t| (t.producer_id, t.first_offset, t.last_offset))
                .collect::<Vec<_>>(),
            vec![(1, open.base_offset, m.base_offset)]
        );
    });
}

/// Regression (fault injection: 271 of 20,000 seeds, among them 54, 116, 746, 1621): an I/O
/// error reading the tail segment's producer snapshot at open was taken for "no snapshot", and
/// the producer state was rebuilt from the batches still in the log alone. An open transaction
/// whose first batches DeleteRecords had removed was forgotten (or, with batches left, moved
/// to the first of them), and its producer's epoch and sequence with it. The open fails
/// instead; once the disk reads again, it restores everything.
#[test]
fn an_unreadable_producer_snapshot_fails_the_open() {
    use crate::io::fake_disk::FakeDisk;
    run(|| async {
        let root = Path::new("/fake");
        let disk = FakeDisk::new(7, root);
        let dir = root.join("ps-0");
        let cache = Rc::new(BatchCache::new(0));
        let open =
            || PartitionLog::open_on(disk.clone(), dir.clone(), small_cfg(), cache.clone(), NOW);
        let log = open().await.unwrap();
        let (b, h) = txn_batch(1, 0, 2);
        let txn = log.append(&b, &h, 0, NOW).unwrap();
        for i in 0..80 {
            let (b, h) = produced(1 + i % 8, 100 + i as u64, NOW);
            log.append(&b, &h, 0, NOW).unwrap();
        }
        log.flush().await.unwrap();
        assert!(log.segment_count() >= 3, "{}", log.segment_count());
        // Everything before the tail segment goes, the transaction's batch with it.
        let tail = disk
            .names(&dir)
            .iter()
            .filter_map(|n| n.strip_suffix(".log")?.parse::<i64>().ok())
            .max()
            .unwrap();
        assert_eq!(log.delete_records_before(tail, NOW).await.unwrap(), tail);
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.open_transaction_starts(), vec![(1, txn.base_offset)]);
        drop(log);
        disk.restart();
        disk.fail_once("read", &segment_file_name(tail, "snapshot"));
        let failed = open().await;
        assert!(
            matches!(failed, Err(StorageError::Io(_))),
            "{:?}",
            failed.err()
        );
        let log = open().await.unwrap();
        assert_eq!(log.open_transaction_starts(), vec![(1, txn.base_offset)]);
        assert_eq!(log.last_stable_offset(), tail);
    });
}

/// Segments rolled by age (`segment.ms`) stay small: compaction merges runs of them into one
/// segment each (at most `segment.bytes`), which is what bounds the files and open descriptors
/// of a compacted topic with steady writes.
fn rolling_cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        segment_ms: 30,
        index_interval_bytes: 256,
        preallocate_bytes: 0,
        message_timestamp_log_append: false,
    }
}

/// 150 keyed batches over 10 keys, one segment roll every three appends (by age): about 50
/// small segments. Returns every key's latest value.
async fn append_rolling(log: &PartitionLog) -> std::collections::BTreeMap<String, String> {
    let mut latest = std::collections::BTreeMap::new();
    for i in 0..150i64 {
        let k = format!("k{}", i % 10);
        let v = format!("v{i}-{}", "y".repeat(40));
        let (b, h) = keyed(&[(k.as_str(), Some(v.as_str()))], NOW + i);
        log.append(&b, &h, 3, NOW + i * 10).unwrap();
        log.flush().await.unwrap();
        latest.insert(k, v);
    }
    latest
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn names_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn base_of(name: &str) -> i64 {
    name[..20].parse().unwrap()
}

/// Checks what a read at every offset of `[from, hw)` returns: the batch holding it (the
/// offset index of the merged segments agrees with their data).
async fn every_offset_reads_its_batch(log: &PartitionLog, from: i64) {
    let hw = log.high_watermark();
    for o in from..hw {
        let s = log.read(o, 1, hw).await.unwrap();
        let b = s.batches().unwrap();
        let h = validate_stored(&b[0]).unwrap();
        assert!(
            h.base_offset <= o && o <= h.last_offset(),
            "read at {o} gave [{}, {}]",
            h.base_offset,
            h.last_offset()
        );
    }
}

#[test]
fn compaction_merges_small_segments_keeping_every_offset_and_latest_value() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m-0");
        let cache = Rc::new(BatchCache::new(0));
        let log = PartitionLog::open(dir.clone(), rolling_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        let latest = append_rolling(&log).await;
        let segs_before = log.segment_count();
        assert!(segs_before >= 40, "{segs_before} segments");
        let before = records_from(&log, 0).await;
        assert_eq!(before.len(), 150);
        let leo = log.log_end_offset();

        let o = log
            .compact(&compact_now(), NOW + 100_000)
            .await
            .unwrap()
            .expect("compacted");
        let segs_after = log.segment_count();
        assert!(
            segs_after <= segs_before / 5,
            "{segs_before} -> {segs_after} segments"
        );
        assert_eq!(o.segments_merged, segs_before - segs_after, "{o:?}");
        assert_eq!(
            o.segments_rewritten,
            segs_before - 1,
            "every closed one: {o:?}"
        );
        // On disk: one .log per segment, no leftovers, and the merged-away segments' indexes
        // and producer snapshots gone.
        assert_eq!(files(&dir, "log").len(), segs_after);
        assert_eq!(files(&dir, "index").len(), segs_after - 1, "sealed ones");
        assert_eq!(
            files(&dir, "snapshot").len(),
            segs_after - 1,
            "one per later base"
        );
        assert!(names_ending(&dir, ".swap").is_empty());
        assert!(names_ending(&dir, ".cleaned").is_empty());

        let after = records_from(&log, 0).await;
        assert!(after.len() < before.len() / 2, "{} records", after.len());
        // Offsets kept, in order, each record the one produced at its offset.
        assert!(after.windows(2).all(|w| w[0].0 < w[1].0));
        let by_offset: std::collections::HashMap<i64, &(i64, String, Option<String>)> =
            before.iter().map(|r| (r.0, r)).collect();
        for r in &after {
            assert_eq!(by_offset[&r.0], r, "record at {} changed", r.0);
        }
        for (k, v) in &latest {
            let last = after.iter().rev().find(|r| &r.1 == k).expect("key present");
            assert_eq!(last.2.as_deref(), Some(v.as_str()), "latest value of {k}");
        }
        assert_eq!(log.log_end_offset(), leo);
        every_offset_reads_its_batch(&log, 0).await;
        assert_eq!(
            log.offset_for_timestamp(NOW + 149)
                .await
                .unwrap()
                .map(|t| t.0),
            Some(149)
        );

        // The next pass (new data came) merges what the first one only shrank: sizes before
        // cleaning bound a run.
        let (b, h) = keyed(&[("k0", Some("new"))], NOW + 150);
        log.append(&b, &h, 3, NOW + 10_000).unwrap();
        let (b, h) = keyed(&[("k1", Some("new"))], NOW + 151);
        log.append(&b, &h, 3, NOW + 20_000).unwrap();
        log.flush().await.unwrap();
        let o = log
            .compact(&compact_now(), NOW + 100_000)
            .await
            .unwrap()
            .expect("compacted");
        assert_eq!(log.segment_count(), 2, "{o:?}");
        let after = records_from(&log, 0).await;
        // k0..k9 once each below the tail, except k1 whose newer value is in the active
        // segment (never mapped), then k0 and k1 again.
        assert_eq!(after.len(), 11, "{after:?}");
        assert_eq!(after[9], (leo, "k0".into(), Some("new".into())));
        assert_eq!(after[10], (leo + 1, "k1".into(), Some("new".into())));
        let leo = log.log_end_offset();
        every_offset_reads_its_batch(&log, 0).await;

        // Clean reopen (indexes from the files the merge wrote), crash reopen, lost indexes.
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.clone(), rolling_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        assert_eq!(log.segment_count(), 2);
        assert_eq!(records_from(&log, 0).await, after);
        every_offset_reads_its_batch(&log, 0).await;
        drop(log);
        for p in files(&dir, "index")
            .into_iter()
            .chain(files(&dir, "timeindex"))
        {
            std::fs::remove_file(p).unwrap();
        }
        let log = PartitionLog::open(dir.clone(), rolling_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        assert_eq!(records_from(&log, 0).await, after);
        every_offset_reads_its_batch(&log, 0).await;
        // Appending continues at the same offsets.
        let (b, h) = keyed(&[("k1", Some("after"))], NOW + 500);
        assert_eq!(log.append(&b, &h, 3, NOW).unwrap().base_offset, leo);
        log.flush().await.unwrap();
        log.close().await.unwrap();
    });
}

/// Batches of the log from offset 0: (base offset, records count) of each.
async fn batch_shapes(log: &PartitionLog) -> Vec<(i64, i32)> {
    let hw = log.high_watermark();
    let mut out = Vec::new();
    let mut at = 0;
    while at < hw {
        let s = log.read(at, 1 << 20, hw).await.unwrap();
        for b in s.batches().unwrap() {
            let h = validate_stored(&b).unwrap();
            if h.base_offset >= at {
                out.push((h.base_offset, h.records_count));
                at = h.last_offset() + 1;
            }
        }
    }
    out
}

/// One single-record batch per key, timestamps from `ts`.
fn put_keys(log: &PartitionLog, keys: impl Iterator<Item = String>, ts: i64) {
    for (i, k) in keys.enumerate() {
        let (b, h) = keyed(&[(k.as_str(), Some("value"))], ts + i as i64);
        log.append(&b, &h, 3, NOW).unwrap();
    }
}

/// Writes keys `a{i}` again, then 120 filler keys from `f{fill}` (so the segments roll: the
/// active one is never compacted), and compacts.
async fn write_again_and_compact(
    log: &PartitionLog,
    keys: impl Iterator<Item = usize>,
    fill: usize,
    ts: i64,
) {
    put_keys(log, keys.map(|i| format!("a{i}")), ts);
    put_keys(log, (fill..fill + 120).map(|i| format!("f{i}")), ts + 100);
    log.flush().await.unwrap();
    log.compact(&compact_now(), ts + 1000)
        .await
        .unwrap()
        .expect("compacted");
}

/// Records removed by different passes, next to each other, end up under one empty batch: a
/// later pass joins its new gaps with the gap covers earlier passes wrote (the soak found
/// 14,000 empty batches per segment, which never shrank and kept segments from merging).
#[test]
fn gaps_removed_by_separate_passes_become_one_empty_batch() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("g-0");
        let cache = Rc::new(BatchCache::new(0));
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        // 40 keys once each, then the even ones again: a pass removes every other record.
        put_keys(&log, (0..40).map(|i| format!("a{i}")), NOW);
        write_again_and_compact(&log, (0..40).step_by(2), 0, NOW + 100).await;
        let first = batch_shapes(&log).await;
        let empty_below_40 = |v: &[(i64, i32)]| v.iter().filter(|b| b.0 < 40 && b.1 == 0).count();
        assert_eq!(
            empty_below_40(&first),
            20,
            "one gap per removed record: {first:?}"
        );

        // Now the odd ones: every record below 40 is superseded, next to the old gaps.
        write_again_and_compact(&log, (1..40).step_by(2), 120, NOW + 200).await;
        let second = batch_shapes(&log).await;
        assert_eq!(second[0], (0, 0), "{second:?}");
        assert!(
            second[1].0 >= 40,
            "offsets 0..40 under one empty batch: {second:?}"
        );
        every_offset_reads_its_batch(&log, 0).await;

        // Nothing new: no pass, and so no rewrite of a segment that has one gap cover.
        assert!(log
            .compact(&compact_now(), NOW + 3000)
            .await
            .unwrap()
            .is_none());
        log.close().await.unwrap();
    });
}

/// Every state a crash can leave a merge in (see `PartitionLog::commit_merge`), built from the
/// files before and after a real merge, reopens as the whole, correct log.
#[test]
fn a_merge_interrupted_at_any_point_reopens_as_the_whole_log() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src-0");
        let cache = Rc::new(BatchCache::new(0));
        let log = PartitionLog::open(src.clone(), rolling_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        append_rolling(&log).await;
        let before = records_from(&log, 0).await;
        let segs_before = log.segment_count();
        log.close().await.unwrap();
        let pre = tmp.path().join("pre");
        copy_dir(&src, &pre);

        let log = PartitionLog::open(src.clone(), rolling_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        log.compact(&compact_now(), NOW + 100_000)
            .await
            .unwrap()
            .expect("compacted");
        let after = records_from(&log, 0).await;
        log.close().await.unwrap();
        // The first run: from 0 to the second segment left.
        let logs = names_ending(&src, ".log");
        assert_eq!(base_of(&logs[0]), 0);
        let run_end = base_of(&logs[1]);
        let merged = std::fs::read(src.join(&logs[0])).unwrap();
        let run_later: Vec<i64> = names_ending(&pre, ".log")
            .iter()
            .map(|n| base_of(n))
            .filter(|b| *b > 0 && *b < run_end)
            .collect();
        assert!(run_later.len() >= 2, "a run of several: {run_later:?}");
        // What a reopen must give once the first run is in place: its compacted records,
        // then the rest as it was.
        let swapped: Vec<_> = after
            .iter()
            .filter(|r| r.0 < run_end)
            .chain(before.iter().filter(|r| r.0 >= run_end))
            .cloned()
            .collect();
        let swapped_segments = segs_before - run_later.len();
        let seg_file = |dir: &Path, base: i64, ext: &str| dir.join(segment_file_name(base, ext));

        struct Case {
            name: &'static str,
            expect_merged: bool,
        }
        let cases = [
            Case {
                name: "cleaned written, not committed",
                expect_merged: false,
            },
            Case {
                name: "swap committed, nothing removed",
                expect_merged: true,
            },
            Case {
                name: "swap committed, some old files removed",
                expect_merged: true,
            },
            Case {
                name: "swap committed, every old file removed",
                expect_merged: true,
            },
            Case {
                name: "swap in place, indexes missing",
                expect_merged: true,
            },
        ];
        for (i, case) in cases.iter().enumerate() {
            let dir = tmp.path().join(format!("case{i}-0"));
            copy_dir(&pre, &dir);
            // A crash, not a clean close: the tail is rescanned too.
            std::fs::remove_file(dir.join(log::CLEAN_MARKER)).unwrap();
            let swap = dir.join(format!("{}.swap", segment_file_name(0, "log")));
            match i {
                0 => std::fs::write(
                    dir.join(format!("{}.cleaned", segment_file_name(0, "log"))),
                    &merged,
                )
                .unwrap(),
                1 => std::fs::write(&swap, &merged).unwrap(),
                2 | 3 => {
                    std::fs::write(&swap, &merged).unwrap();
                    for ext in ["index", "timeindex"] {
                        std::fs::remove_file(seg_file(&dir, 0, ext)).unwrap();
                    }
                    for (j, b) in run_later.iter().enumerate() {
                        if i == 3 || j % 2 == 0 {
                            for ext in ["log", "index", "timeindex", "snapshot"] {
                                let _ = std::fs::remove_file(seg_file(&dir, *b, ext));
                            }
                        } else {
                            // Only its log went (the other files come later in the removal).
                            std::fs::remove_file(seg_file(&dir, *b, "log")).unwrap();
                        }
                    }
                }
                _ => {
                    for b in &run_later {
                        for ext in ["log", "index", "timeindex", "snapshot"] {
                            let _ = std::fs::remove_file(seg_file(&dir, *b, ext));
                        }
                    }
                    for ext in ["index", "timeindex"] {
                        std::fs::remove_file(seg_file(&dir, 0, ext)).unwrap();
                    }
                    std::fs::write(seg_file(&dir, 0, "log"), &merged).unwrap();
                }
            }
            let log = PartitionLog::open(dir.clone(), rolling_cfg(), cache.clone(), NOW)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let (want, segs) = if case.expect_merged {
                (&swapped, swapped_segments)
            } else {
                (&before, segs_before)
            };
            assert_eq!(&records_from(&log, 0).await, want, "{}", case.name);
            assert_eq!(log.segment_count(), segs, "{}", case.name);
            every_offset_reads_its_batch(&log, 0).await;
            assert!(names_ending(&dir, ".swap").is_empty(), "{}", case.name);
            assert!(names_ending(&dir, ".cleaned").is_empty(), "{}", case.name);
            // No file of a merged-away segment is left behind.
            for b in &run_later {
                for ext in ["log", "index", "timeindex", "txnindex", "snapshot"] {
                    assert_eq!(
                        seg_file(&dir, *b, ext).exists(),
                        !case.expect_merged && seg_file(&pre, *b, ext).exists(),
                        "{}: {b}.{ext}",
                        case.name
                    );
                }
            }
            // The next compaction finishes the job, and the log reopens from what it wrote.
            log.compact(&compact_now(), NOW + 100_000).await.unwrap();
            assert_eq!(records_from(&log, 0).await, after, "{}", case.name);
            log.close().await.unwrap();
            let log = PartitionLog::open(dir.clone(), rolling_cfg(), cache.clone(), NOW)
                .await
                .unwrap();
            assert_eq!(records_from(&log, 0).await, after, "{}", case.name);
            log.close().await.unwrap();
        }
    });
}

/// A swap file that does not scan whole is an error at open, and nothing is deleted on its
/// word.
#[test]
fn a_damaged_swap_file_is_refused_and_nothing_is_deleted() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bad-0");
        let cache = Rc::new(BatchCache::new(0));
        let log = PartitionLog::open(dir.clone(), rolling_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        append_rolling(&log).await;
        log.close().await.unwrap();
        let logs_before = names_ending(&dir, ".log");
        let first = std::fs::read(dir.join(&logs_before[0])).unwrap();
        let mut torn = first.clone();
        torn.truncate(first.len() - 5);
        std::fs::write(dir.join(format!("{}.swap", logs_before[0])), &torn).unwrap();
        let opened = PartitionLog::open(dir.clone(), rolling_cfg(), cache.clone(), NOW).await;
        assert!(
            matches!(opened, Err(StorageError::Corrupt { .. })),
            "{:?}",
            opened.as_ref().err()
        );
        assert_eq!(names_ending(&dir, ".log"), logs_before);
    });
}

/// A merged segment keeps the aborted-transaction entries of every segment of its run, in
/// memory and in its `.txnindex` (read back at the next open).
#[test]
fn merged_segments_keep_their_aborted_transactions() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mt-0");
        let cache = Rc::new(BatchCache::new(0));
        let cfg = LogConfig {
            segment_bytes: 64 * 1024,
            ..rolling_cfg()
        };
        let log = PartitionLog::open(dir.clone(), cfg.clone(), cache.clone(), NOW)
            .await
            .unwrap();
        let mut seq = 0;
        for i in 0..30i64 {
            let now = NOW + i * 20;
            let (b, h) = txn_batch(1, seq, 2);
            log.append(&b, &h, 0, now).unwrap();
            seq += 2;
            let (b, h) = marker(1, 0, i % 3 != 0, 0);
            log.append(&b, &h, 0, now).unwrap();
            log.flush().await.unwrap();
        }
        let summary = |log: &PartitionLog| {
            log.aborted_transactions(0, i64::MAX)
                .iter()
                .map(|t| (t.producer_id, t.first_offset, t.last_offset))
                .collect::<Vec<_>>()
        };
        let aborted = summary(&log);
        assert_eq!(aborted.len(), 10);
        let segs = log.segment_count();
        assert!(segs >= 10, "{segs}");
        let o = log
            .compact(&compact_now(), NOW + 1_000_000_000)
            .await
            .unwrap()
            .expect("compacted");
        assert!(o.segments_merged >= segs - 3, "{o:?}");
        assert_eq!(summary(&log), aborted);
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.clone(), cfg.clone(), cache.clone(), NOW)
            .await
            .unwrap();
        assert_eq!(summary(&log), aborted);
        log.close().await.unwrap();
    });
}

/// Regression (crash loop; the snapshots by fault injection): a crash between removing a
/// segment's `.log` and its other files (retention, a merge) left `.index`/`.timeindex`/
/// `.txnindex`/`.snapshot` files nothing ever removed. Opening the log removes those whose
/// segment is gone and keeps the others.
#[test]
fn index_files_without_their_segment_are_removed_at_open() {
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t-0");
        let cache = Rc::new(BatchCache::new(0));
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW)
            .await
            .unwrap();
        append_many(&log, 40, 7);
        log.flush().await.unwrap();
        let end = log.log_end_offset();
        log.close().await.unwrap();
        let kept_index = files(&dir, "index").len();
        assert!(kept_index >= 1, "no sealed segment to keep an index for");
        let kept_snapshots = files(&dir, "snapshot").len();
        assert!(
            kept_snapshots >= 1,
            "no rolled-to segment to keep a snapshot for"
        );
        let orphan = |ext: &str| dir.join(crate::storage::segment_file_name(123_456_789, ext));
        for ext in ["index", "timeindex", "txnindex", "snapshot"] {
            std::fs::write(orphan(ext), b"left by a crash").unwrap();
        }
        let log = PartitionLog::open(dir.clone(), small_cfg(), cache, NOW)
            .await
            .unwrap();
        for ext in ["index", "timeindex", "txnindex", "snapshot"] {
            assert!(!orphan(ext).exists(), "orphan .{ext} still there");
        }
        assert_eq!(files(&dir, "index").len(), kept_index);
        assert_eq!(files(&dir, "snapshot").len(), kept_snapshots);
        assert_eq!(log.log_end_offset(), end);
    });
}

/// One idempotent batch of `n` records from producer `pid` (epoch 0), timestamps from `ts`.
fn idempotent(pid: i64, seq: i32, n: usize, ts: i64) -> (Bytes, BatchHeader) {
    let mut b = BatchBuilder::simple(n, pid as u64 * 1000 + seq as u64);
    b.producer_id = pid;
    b.producer_epoch = 0;
    b.base_sequence = seq;
    b.base_timestamp = ts;
    let bytes = Bytes::from(b.build());
    let h = validate(&bytes).unwrap();
    (bytes, h)
}

#[test]
fn producer_expiry_goes_by_batch_times_that_survive_restarts() {
    const EXPIRATION_MS: i64 = 5_000;
    const OLD: i64 = NOW - 10_000;
    const SHORT_LIVED: i64 = 20;
    const KEEPER: i64 = 1_000;
    run(|| async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p-0");
        let cache = Rc::new(BatchCache::new(1 << 20));
        let open = || PartitionLog::open(dir.clone(), small_cfg(), cache.clone(), NOW);
        let log = open().await.unwrap();
        // Short-lived producers, one batch each, long ago; then plain records until the
        // segment rolls (a snapshot holding them is written), then a producer active now.
        for pid in 1..=SHORT_LIVED {
            let (b, h) = idempotent(pid, 0, 1, OLD);
            log.append(&b, &h, 0, NOW).unwrap();
        }
        let mut seed = 0;
        while log.segment_count() < 2 {
            let (b, h) = produced(5, seed, NOW);
            log.append(&b, &h, 0, NOW).unwrap();
            seed += 1;
        }
        let (b, h) = idempotent(KEEPER, 0, 3, NOW - 1);
        log.append(&b, &h, 0, NOW).unwrap();
        log.flush().await.unwrap();
        assert_eq!(log.producer_count(), SHORT_LIVED as usize + 1);

        // Crash: the state comes from the roll's snapshot plus a replay of the tail; both
        // carry the batch times, so the old producers expire at once (an unknown time would
        // keep them one more period).
        drop(log);
        let log = open().await.unwrap();
        assert_eq!(log.producer_count(), SHORT_LIVED as usize + 1);
        assert_eq!(
            log.expire_producers(NOW, EXPIRATION_MS),
            SHORT_LIVED as usize
        );
        assert_eq!(log.producer_count(), 1);
        assert_eq!(log.expire_producers(NOW, EXPIRATION_MS), 0);
        // The keeper is still checked: its retry is a duplicate, a gap is refused.
        let d = log.append(&b, &h, 0, NOW).unwrap();
        assert!(d.duplicate);
        let (gap, gap_h) = idempotent(KEEPER, 4, 1, NOW);
        assert!(matches!(
            log.append(&gap, &gap_h, 0, NOW),
            Err(StorageError::OutOfOrderSequence { .. })
        ));
        // A forgotten producer comes back mid-sequence: accepted, then checked again.
        let (back, back_h) = idempotent(7, 1, 2, NOW);
        let first = log.append(&back, &back_h, 0, NOW).unwrap();
        assert!(!first.duplicate);
        let again = log.append(&back, &back_h, 0, NOW).unwrap();
        assert!(again.duplicate);
        assert_eq!(again.base_offset, first.base_offset);
        assert_eq!(log.producer_count(), 2);

        // A clean shutdown stores the expired state: it opens as small as it closed.
        log.close().await.unwrap();
        let log = open().await.unwrap();
        assert_eq!(log.producer_count(), 2);
        assert!(log.append(&back, &back_h, 0, NOW).unwrap().duplicate);
        // Later, everything idle goes (times came back from the clean-shutdown marker).
        let later = NOW + 2 * EXPIRATION_MS;
        assert_eq!(log.expire_producers(later, EXPIRATION_MS), 2);
        assert_eq!(log.producer_count(), 0);
        // Expiry is in memory only: a crash before the next snapshot rebuilds the state from
        // what is on disk — the roll's snapshot (the short-lived producers) and the tail's
        // batches (the keeper, and producer 7 again with its new time) — with the batch times,
        // so the passes forget them again, each when its own time comes.
        log.flush().await.unwrap();
        drop(log);
        let log = open().await.unwrap();
        assert_eq!(log.producer_count(), SHORT_LIVED as usize + 1);
        assert_eq!(
            log.expire_producers(NOW, EXPIRATION_MS),
            SHORT_LIVED as usize - 1
        );
        assert_eq!(log.expire_producers(later, EXPIRATION_MS), 2);
        assert_eq!(log.producer_count(), 0);
        log.close().await.unwrap();
    });
}

/// An idempotent producer's batch (producer 7, epoch 0, sequence `seq`).
fn idempotent_batch(seq: i32, records: usize) -> (Bytes, BatchHeader) {
    let mut b = BatchBuilder::simple(records, 7_000 + seq as u64);
    b.producer_id = 7;
    b.producer_epoch = 0;
    b.base_sequence = seq;
    let bytes = Bytes::from(b.build());
    let h = validate(&bytes).unwrap();
    (bytes, h)
}

/// The shard journal's side of a log: flushes whose added batches the journal made durable
/// (`flush_journaled`, no fdatasync of the segment) are lost from the tail segment by a power
/// cut, and `replay` of the journal's records brings back exactly what was there — bytes,
/// offsets, producer state (the next sequence is accepted, a retry is a duplicate), the open
/// transaction's end — and skips what the log already holds.
#[test]
fn replay_restores_journaled_appends_a_power_cut_took_from_the_tail() {
    use crate::io::fake_disk::FakeDisk;
    run(|| async {
        let root = Path::new("/fake");
        let disk = FakeDisk::new(11, root);
        let dir = root.join("journaled-0");
        let cache = Rc::new(BatchCache::new(0));
        let open =
            || PartitionLog::open_on(disk.clone(), dir.clone(), small_cfg(), cache.clone(), NOW);
        let log = open().await.unwrap();
        // What the journal would hold: (first offset, bytes) per flush.
        let mut journal: Vec<(i64, Bytes)> = Vec::new();
        let (mut seq, mut txn_seq) = (0, 0);
        for round in 0..12 {
            for i in 0..3 {
                let (b, h) = match (round + i) % 3 {
                    0 => {
                        let r = idempotent_batch(seq, 2);
                        seq += 2;
                        r
                    }
                    1 => produced(1 + i, round as u64 * 10 + i as u64, NOW),
                    _ => {
                        txn_seq += 1;
                        txn_batch(3, txn_seq - 1, 1)
                    }
                };
                log.append(&b, &h, 0, NOW).unwrap();
            }
            if round == 11 {
                let (m, h) = marker(3, 0, true, 0);
                log.append(&m, &h, 0, NOW).unwrap();
            }
            let ticket = log.flush_write().await.unwrap().expect("a tail write");
            let (first, parts) = ticket.added_parts();
            journal.push((first, Bytes::from(parts.concat())));
            log.flush_journaled(ticket).unwrap();
        }
        let end = log.log_end_offset();
        assert_eq!(log.high_watermark(), end);
        assert_eq!(log.last_stable_offset(), end);
        let before = read_all(&log, 0, 1 << 20).await;
        drop(log);
        disk.power_cut_worst();

        let log = open().await.unwrap();
        let lost_to = log.log_end_offset();
        assert!(
            lost_to < end,
            "the cut took the unsynced tail ({lost_to} of {end})"
        );
        let mut appended = 0;
        for (first, bytes) in &journal {
            appended += log.replay(*first, bytes, NOW).unwrap();
        }
        assert!(appended > 0);
        assert_eq!(log.log_end_offset(), end);
        log.flush().await.unwrap();
        assert_eq!(read_all(&log, 0, 1 << 20).await, before);
        assert_eq!(
            log.last_stable_offset(),
            end,
            "the transaction's marker is back"
        );
        // Replaying again changes nothing.
        for (first, bytes) in &journal {
            assert_eq!(log.replay(*first, bytes, NOW).unwrap(), 0);
        }
        // The producer continues where the journal left it.
        let (b, h) = idempotent_batch(seq - 2, 2);
        let retry = log.append(&b, &h, 0, NOW).unwrap();
        assert!(retry.duplicate);
        let (b, h) = idempotent_batch(seq, 2);
        let next = log.append(&b, &h, 0, NOW).unwrap();
        assert!(!next.duplicate);
        assert_eq!(next.base_offset, end);
        // A record past the log end (a gap) is refused.
        let (first, bytes) = journal.last().unwrap();
        let gap = log.replay(*first + 1_000, bytes, NOW);
        assert!(
            matches!(gap, Err(StorageError::InvariantViolated { .. })),
            "{gap:?}"
        );
    });
}

#[test]
fn a_stored_batch_gives_its_rewritten_head_then_its_body_as_parts_and_as_chunks() {
    use crate::protocol::record_batch::BATCH_HEADER_LEN;
    let batch = Bytes::from((0..100u8).collect::<Vec<u8>>());
    let head: Vec<u8> = (0..BATCH_HEADER_LEN).map(|i| 200 - i as u8).collect();
    let s = StoredBatch::with_rewritten_head(&batch, |h| {
        assert_eq!(
            h,
            &batch[..BATCH_HEADER_LEN],
            "the rewrite starts from the batch's header"
        );
        h.copy_from_slice(&head);
        Ok::<(), ()>(())
    })
    .expect("the rewrite succeeds");
    let mut expected = head.clone();
    expected.extend_from_slice(&batch[BATCH_HEADER_LEN..]);
    assert_eq!(s.len(), 100);
    assert_eq!(s.parts().flatten().copied().collect::<Vec<u8>>(), expected);
    let chunks: Vec<Bytes> = s.chunks().collect();
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks.concat(), expected);
    // A clone is independent of the original's lifetime.
    let c = s.clone();
    drop(s);
    assert_eq!(c.parts().flatten().copied().collect::<Vec<u8>>(), expected);

    // The rewrite's error is the answer; a batch shorter than the header is all head.
    assert_eq!(
        StoredBatch::with_rewritten_head(&batch, |_| Err("refused")).err(),
        Some("refused")
    );
    let short = StoredBatch::with_rewritten_head(&batch.slice(..5), |h| {
        assert_eq!(h.len(), 5);
        h.fill(9);
        Ok::<(), ()>(())
    })
    .expect("the rewrite succeeds");
    assert_eq!(
        short.chunks().collect::<Vec<Bytes>>(),
        vec![Bytes::from(vec![9; 5])]
    );
    // Stored whole: one chunk, the same bytes.
    let w = StoredBatch::whole(batch.clone());
    assert_eq!(w.chunks().collect::<Vec<Bytes>>(), vec![batch.clone()]);
    assert_eq!(w.parts().count(), 1);
    assert!(StoredBatch::whole(Bytes::new()).chunks().next().is_none());
}
