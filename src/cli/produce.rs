//! `odradek produce TOPIC`: one record per input line (`kafka-console-producer.sh`).
//!
//! Lines come from stdin or `--file`; `--key-separator` splits a key off each line
//! (`parse.key`), `--headers` reads `k:v,k2:v2` and a tab before the value. Records go to
//! partitions the way the Java client puts them: murmur2 of the key for keyed records, a
//! sticky partition for records without a key that moves on once its batch is sent. Batches
//! leave when they reach `--batch-size` bytes or their first record waited `--linger-ms`;
//! retriable errors are retried (with `--idempotent` the broker drops duplicates of a retry).

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::protocol::api::ApiKey;
use crate::protocol::compression::{CODEC_GZIP, CODEC_LZ4, CODEC_NONE, CODEC_SNAPPY, CODEC_ZSTD};
use crate::protocol::{
    ErrorCode, InitProducerIdRequest, PartitionProduceData, ProduceRequest, ResponseBody,
    TopicProduceData,
};

use super::client::TopicInfo;
use super::records::{approx_size, encode_batch, ProducerFields, Record};
use super::{interrupt_flag, CliError, Common, Context};

#[derive(Args, Debug)]
pub struct ProduceArgs {
    pub topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Split each line into key and value at the first occurrence of this string (parse.key).
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Each line starts with headers, `k1:v1,k2:v2`, then a tab, then the record.
    #[arg(long)]
    pub headers: bool,
    /// Send every record to this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Acknowledgements: 0, 1 or all (-1) [default: all; or -X acks].
    #[arg(long)]
    pub acks: Option<String>,
    /// Compression of the batches [default: none; or -X compression.type].
    #[arg(long, value_enum)]
    pub compression: Option<Compression>,
    /// How long a batch waits for more records before it is sent [default: 5; or -X
    /// linger.ms].
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// Bytes a batch collects at most before it is sent [default: 16384; or -X batch.size].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Idempotent producer: retries never duplicate a record (needs acks=all; or -X
    /// enable.idempotence=true).
    #[arg(long)]
    pub idempotent: bool,
}

/// `-X` keys produce knows (the flags of the same meaning win over them).
const KEYS: &[&str] = &[
    "acks",
    "compression.type",
    "linger.ms",
    "batch.size",
    "enable.idempotence",
];

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn codec(self) -> u8 {
        match self {
            Compression::None => CODEC_NONE,
            Compression::Gzip => CODEC_GZIP,
            Compression::Snappy => CODEC_SNAPPY,
            Compression::Lz4 => CODEC_LZ4,
            Compression::Zstd => CODEC_ZSTD,
        }
    }
}

/// Tries per batch before giving up on a retriable error.
const RETRIES: u32 = 10;
/// Lines buffered between the reader thread and the sender.
const LINE_QUEUE: usize = 4096;

/// Kafka's default partition for a keyed record: murmur2 of the key, positive, modulo the
/// partition count (the Java client's `BuiltInPartitioner.partitionForKey`).
pub fn partition_for_key(key: &[u8], partitions: usize) -> i32 {
    let h = crate::protocol::murmur2::murmur2(key) & 0x7fff_ffff;
    (h as usize % partitions.max(1)) as i32
}

/// Splits one input line into a record.
pub fn parse_line(
    line: &str,
    key_separator: Option<&str>,
    headers: bool,
    now_ms: i64,
) -> Result<Record, String> {
    let mut rest = line;
    let mut hs = Vec::new();
    if headers {
        let (h, r) = rest
            .split_once('\t')
            .ok_or_else(|| format!("no tab after the headers in line {line:?}"))?;
        rest = r;
        for pair in h.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once(':')
                .ok_or_else(|| format!("header {pair:?} is not key:value"))?;
            hs.push((k.to_string(), Some(v.as_bytes().to_vec())));
        }
    }
    let (key, value) = match key_separator {
        Some(sep) => {
            let (k, v) = rest
                .split_once(sep)
                .ok_or_else(|| format!("no key separator {sep:?} in line {line:?}"))?;
            (Some(k.as_bytes().to_vec()), v)
        }
        None => (None, rest),
    };
    Ok(Record {
        key,
        value: Some(value.as_bytes().to_vec()),
        headers: hs,
        timestamp: now_ms,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Records waiting to be sent, per partition.
struct Pending {
    records: Vec<Record>,
    bytes: usize,
    since: Instant,
}

struct Producer {
    topic: TopicInfo,
    acks: i16,
    codec: u8,
    batch_size: usize,
    linger: Duration,
    idempotent: Option<(i64, i16)>,
    /// Next sequence number per partition (idempotent producers).
    sequences: BTreeMap<i32, i32>,
    sticky: Option<i32>,
    pending: BTreeMap<i32, Pending>,
    sent: u64,
}

pub fn run(a: ProduceArgs, common: &Common) -> Result<(), CliError> {
    let mut ctx = Context::new(common, KEYS)?;
    let acks = a
        .acks
        .clone()
        .or_else(|| ctx.props.get("acks").map(str::to_string))
        .unwrap_or_else(|| "all".into());
    let compression = match (a.compression, ctx.props.get("compression.type")) {
        (Some(c), _) => c,
        (None, None) => Compression::None,
        (None, Some(name)) => Compression::from_str(name, true).map_err(|_| {
            CliError::Usage(format!(
                "-X compression.type={name}: expected none, gzip, snappy, lz4 or zstd"
            ))
        })?,
    };
    let linger_ms = match a.linger_ms {
        Some(v) => v,
        None => ctx.props.num("linger.ms")?.unwrap_or(5),
    };
    let batch_size = match a.batch_size {
        Some(v) => v,
        None => ctx.props.num("batch.size")?.unwrap_or(16384),
    };
    let idempotent = a.idempotent || ctx.props.get("enable.idempotence") == Some("true");
    let acks: i16 = match acks.as_str() {
        "all" | "-1" => -1,
        "1" => 1,
        "0" => 0,
        other => {
            return Err(CliError::Usage(format!(
                "--acks {other}: expected 0, 1 or all"
            )))
        }
    };
    if idempotent && acks != -1 {
        return Err(CliError::Usage("--idempotent needs --acks all".into()));
    }
    if batch_size == 0 {
        return Err(CliError::Usage("--batch-size must be above 0".into()));
    }
    let topic = ctx.cluster.topic(&a.topic)?;
    if topic.partitions.is_empty() {
        return Err(CliError::Failed(format!(
            "topic {} has no partitions",
            a.topic
        )));
    }
    if let Some(p) = a.partition {
        if !topic.partitions.iter().any(|i| i.index == p) {
            return Err(CliError::Usage(format!(
                "--partition {p}: topic {} has partitions 0..{}",
                a.topic,
                topic.partitions.len() - 1
            )));
        }
    }
    let idempotent = if idempotent {
        let req = InitProducerIdRequest {
            transactional_id: None,
            transaction_timeout_ms: 60_000,
            ..Default::default()
        };
        let ResponseBody::InitProducerId(r) = ctx.cluster.any()?.call(req.into())? else {
            return Err(CliError::Unexpected(ApiKey::InitProducerId));
        };
        if r.error_code != 0 {
            return Err(CliError::kafka("InitProducerId", r.error_code, None));
        }
        Some((r.producer_id, r.producer_epoch))
    } else {
        None
    };
    let mut producer = Producer {
        topic,
        acks,
        codec: compression.codec(),
        batch_size,
        linger: Duration::from_millis(linger_ms),
        idempotent,
        sequences: BTreeMap::new(),
        sticky: None,
        pending: BTreeMap::new(),
        sent: 0,
    };

    // Lines are read on their own thread so a batch can leave after linger.ms even while
    // the input is quiet (a person typing).
    let (tx, rx) = sync_channel::<Result<String, String>>(LINE_QUEUE);
    let file = a.file.clone();
    std::thread::spawn(move || {
        let input: Box<dyn BufRead> = match file {
            Some(path) => match std::fs::File::open(&path) {
                Ok(f) => Box::new(std::io::BufReader::new(f)),
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot open {}: {e}", path.display())));
                    return;
                }
            },
            None => Box::new(std::io::stdin().lock()),
        };
        for line in input.lines() {
            let msg = line.map_err(|e| format!("reading input: {e}"));
            let stop = msg.is_err();
            if tx.send(msg).is_err() || stop {
                return;
            }
        }
    });

    let interrupted = interrupt_flag();
    let show_progress = std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    let tick = Duration::from_millis(linger_ms.clamp(1, 100));
    loop {
        if interrupted.load(Ordering::Relaxed) {
            producer.flush_all(&mut ctx)?;
            return Err(CliError::Interrupted);
        }
        match rx.recv_timeout(tick) {
            Ok(Ok(line)) => {
                let line = line.strip_suffix('\r').unwrap_or(&line);
                let rec = parse_line(line, a.key_separator.as_deref(), a.headers, now_ms())
                    .map_err(CliError::Usage)?;
                producer.add(&mut ctx, rec, a.partition)?;
            }
            Ok(Err(e)) => {
                producer.flush_all(&mut ctx)?;
                return Err(CliError::Failed(e));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        producer.flush_lingered(&mut ctx)?;
        if show_progress && last_progress.elapsed() >= Duration::from_secs(1) {
            eprint!("\r{} records sent", producer.sent);
            last_progress = Instant::now();
        }
    }
    producer.flush_all(&mut ctx)?;
    if show_progress && producer.sent > 0 {
        eprintln!("\r{} records sent", producer.sent);
    }
    Ok(())
}

impl Producer {
    fn partition_for(&mut self, rec: &Record, fixed: Option<i32>) -> i32 {
        if let Some(p) = fixed {
            return p;
        }
        let n = self.topic.partitions.len();
        match &rec.key {
            Some(k) => partition_for_key(k, n),
            None => *self
                .sticky
                .get_or_insert_with(|| (random_u64() % n as u64) as i32),
        }
    }

    fn add(&mut self, ctx: &mut Context, rec: Record, fixed: Option<i32>) -> Result<(), CliError> {
        let p = self.partition_for(&rec, fixed);
        let size = approx_size(&rec);
        let full = {
            let pending = self.pending.entry(p).or_insert_with(|| Pending {
                records: Vec::new(),
                bytes: 0,
                since: Instant::now(),
            });
            pending.records.push(rec);
            pending.bytes += size;
            pending.bytes >= self.batch_size
        };
        if full {
            self.send(ctx, &[p])?;
        }
        Ok(())
    }

    fn flush_lingered(&mut self, ctx: &mut Context) -> Result<(), CliError> {
        let due: Vec<i32> = self
            .pending
            .iter()
            .filter(|(_, b)| b.since.elapsed() >= self.linger)
            .map(|(p, _)| *p)
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        self.send(ctx, &due)
    }

    fn flush_all(&mut self, ctx: &mut Context) -> Result<(), CliError> {
        let all: Vec<i32> = self.pending.keys().copied().collect();
        if all.is_empty() {
            return Ok(());
        }
        self.send(ctx, &all)
    }

    /// Sends the pending batches of `partitions` (one request per leader) until each is
    /// acknowledged, retrying retriable errors.
    fn send(&mut self, ctx: &mut Context, partitions: &[i32]) -> Result<(), CliError> {
        let mut batches: BTreeMap<i32, (Vec<u8>, usize)> = BTreeMap::new();
        for p in partitions {
            let Some(pending) = self.pending.remove(p) else {
                continue;
            };
            if self.sticky == Some(*p) {
                self.sticky = None;
            }
            let fields = match self.idempotent {
                Some((id, epoch)) => {
                    let seq = self.sequences.entry(*p).or_insert(0);
                    let f = ProducerFields {
                        producer_id: id,
                        epoch,
                        base_sequence: *seq,
                    };
                    *seq = seq.wrapping_add(pending.records.len() as i32) & i32::MAX;
                    f
                }
                None => ProducerFields::NONE,
            };
            let bytes = encode_batch(&pending.records, self.codec, fields)?;
            batches.insert(*p, (bytes, pending.records.len()));
        }
        let mut attempt = 0;
        while !batches.is_empty() {
            attempt += 1;
            let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
            for p in batches.keys() {
                let leader = self
                    .topic
                    .partitions
                    .iter()
                    .find(|i| i.index == *p)
                    .map_or(-1, |i| i.leader);
                by_leader.entry(leader).or_default().push(*p);
            }
            let mut retry = Vec::new();
            let mut last_error = None;
            for (leader, parts) in by_leader {
                let req = ProduceRequest {
                    transactional_id: None,
                    acks: self.acks,
                    timeout_ms: ctx.cluster.config.request_timeout.as_millis() as i32,
                    topic_data: vec![TopicProduceData {
                        name: self.topic.name.clone(),
                        partition_data: parts
                            .iter()
                            .map(|p| PartitionProduceData {
                                index: *p,
                                records: Some(bytes::Bytes::from(batches[p].0.clone())),
                            })
                            .collect(),
                    }],
                };
                if leader < 0 {
                    retry.extend(parts);
                    last_error = Some(ErrorCode::LEADER_NOT_AVAILABLE);
                    continue;
                }
                let conn = ctx.cluster.broker(leader)?;
                if self.acks == 0 {
                    conn.send_only(req.into())?;
                    for p in parts {
                        if let Some((_, n)) = batches.remove(&p) {
                            self.sent += n as u64;
                        }
                    }
                    continue;
                }
                let ResponseBody::Produce(r) = conn.call(req.into())? else {
                    return Err(CliError::Unexpected(ApiKey::Produce));
                };
                for t in r.responses {
                    for pr in t.partition_responses {
                        let code = ErrorCode(pr.error_code);
                        if code == ErrorCode::NONE || code == ErrorCode::DUPLICATE_SEQUENCE_NUMBER {
                            if let Some((_, n)) = batches.remove(&pr.index) {
                                self.sent += n as u64;
                            }
                        } else if is_retriable(code) && attempt < RETRIES {
                            retry.push(pr.index);
                            last_error = Some(code);
                        } else {
                            return Err(CliError::kafka(
                                &format!("producing to {}-{}", t.name, pr.index),
                                pr.error_code,
                                pr.error_message,
                            ));
                        }
                    }
                }
            }
            if !retry.is_empty() {
                if attempt >= RETRIES {
                    return Err(CliError::Failed(format!(
                        "producing to {}: still failing after {RETRIES} tries ({})",
                        self.topic.name,
                        last_error.unwrap_or(ErrorCode::UNKNOWN_SERVER_ERROR)
                    )));
                }
                std::thread::sleep(Duration::from_millis(100 << attempt.min(4)));
                self.topic = ctx.cluster.topic(&self.topic.name)?;
            }
        }
        Ok(())
    }
}

/// Errors a produce may succeed after (Kafka's RetriableException subclasses).
fn is_retriable(code: ErrorCode) -> bool {
    [
        ErrorCode::NOT_LEADER_OR_FOLLOWER,
        ErrorCode::LEADER_NOT_AVAILABLE,
        ErrorCode::REQUEST_TIMED_OUT,
        ErrorCode::NOT_ENOUGH_REPLICAS,
        ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ErrorCode::KAFKA_STORAGE_ERROR,
        ErrorCode::NETWORK_EXCEPTION,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
    ]
    .contains(&code)
}

/// A random number for the sticky partition (no cryptographic need).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_land_where_the_java_client_puts_them() {
        // Utils.toPositive(Utils.murmur2("key".getBytes())) % n, values from the Java client.
        assert_eq!(
            crate::protocol::murmur2::murmur2(b"21") & 0x7fff_ffff,
            (-973932308i32) & 0x7fff_ffff
        );
        for n in 1..10 {
            let p = partition_for_key(b"some key", n);
            assert!((0..n as i32).contains(&p));
        }
    }

    #[test]
    fn lines_parse_into_keys_values_and_headers() {
        let r = parse_line("k1:hello:world", Some(":"), false, 7).unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"hello:world"[..]));
        assert_eq!(r.timestamp, 7);
        let r = parse_line("a:1,b:2\tk=v", Some("="), true, 0).unwrap();
        assert_eq!(
            r.headers,
            vec![
                ("a".to_string(), Some(b"1".to_vec())),
                ("b".to_string(), Some(b"2".to_vec()))
            ]
        );
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert!(parse_line("no separator", Some(":"), false, 0).is_err());
        assert!(parse_line("no tab", None, true, 0).is_err());
        let r = parse_line("plain", None, false, 0).unwrap();
        assert_eq!((r.key, r.value.as_deref()), (None, Some(&b"plain"[..])));
    }
}
