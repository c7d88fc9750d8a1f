//! `odradek consume TOPIC`: prints records (`kafka-console-consumer.sh`), from chosen
//! partitions and offsets, or as a member of a consumer group that commits its position.
//!
//! Without `--group` it reads the partitions given (all by default) from `--offset`
//! (`--from-beginning` = earliest; default latest). With `--group` it joins the group (classic
//! protocol, range assignor, like a Java consumer), starts each assigned partition at the
//! group's committed offset (or `auto.offset.reset`), commits every `auto.commit.interval.ms`
//! and on exit, and leaves the group. It stops after `--max-messages`, after `--timeout-ms`
//! without a record, or on Ctrl-C (committing first).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::protocol::api::ApiKey;
use crate::protocol::{ErrorCode, FetchPartition, FetchRequest, FetchTopic, ResponseBody};

use super::client::{TopicInfo, EARLIEST, LATEST};
use super::group::Member;
use super::output;
use super::records::{decode_record_set, Consumed};
use super::{interrupt_flag, CliError, Common, Context};

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Consume as a member of this consumer group (committing offsets).
    #[arg(long)]
    pub group: Option<String>,
    /// Start at the earliest offset when there is no committed one.
    #[arg(long)]
    pub from_beginning: bool,
    /// Where to start: an offset, `earliest` or `latest` (needs --partition).
    #[arg(long)]
    pub offset: Option<String>,
    /// Read only this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Exit after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Exit when no record arrived for this long.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Print the key before the value.
    #[arg(long)]
    pub print_key: bool,
    /// Print the timestamp (CreateTime:ms or LogAppendTime:ms).
    #[arg(long)]
    pub print_timestamp: bool,
    /// Print the headers (k:v,k2:v2, or NO_HEADERS).
    #[arg(long)]
    pub print_headers: bool,
    /// Print partition and offset.
    #[arg(long)]
    pub print_offset: bool,
    /// `json` for one JSON object per record, or a template with {topic} {partition}
    /// {offset} {timestamp} {key} {value} {headers}.
    #[arg(long)]
    pub format: Option<String>,
    /// read_uncommitted (default) or read_committed.
    #[arg(long, default_value = "read_uncommitted")]
    pub isolation_level: String,
}

/// `-X` keys consume knows.
const KEYS: &[&str] = &[
    "auto.offset.reset",
    "auto.commit.interval.ms",
    "enable.auto.commit",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.wait.ms",
    "group.instance.id",
];

/// How records are printed.
pub enum Format {
    Fields {
        key: bool,
        timestamp: bool,
        headers: bool,
        offset: bool,
    },
    Json,
    Template(String),
}

fn text(b: &Option<Vec<u8>>) -> String {
    b.as_ref().map_or_else(
        || "null".to_string(),
        |v| String::from_utf8_lossy(v).into_owned(),
    )
}

impl Format {
    /// One record as one output line (with its newline).
    pub fn line(&self, topic: &str, c: &Consumed) -> String {
        let ts_type = if c.log_append_time {
            "LogAppendTime"
        } else {
            "CreateTime"
        };
        let headers = || {
            if c.record.headers.is_empty() {
                "NO_HEADERS".to_string()
            } else {
                c.record
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", text(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        match self {
            Format::Json => {
                let hs: Vec<_> = c
                    .record
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        json!({"key": k, "value": v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned())})
                    })
                    .collect();
                let s = |b: &Option<Vec<u8>>| {
                    b.as_ref().map(|v| String::from_utf8_lossy(v).into_owned())
                };
                format!(
                    "{}\n",
                    json!({
                        "topic": topic,
                        "partition": c.partition,
                        "offset": c.offset,
                        "timestamp": c.record.timestamp,
                        "timestamp_type": ts_type,
                        "key": s(&c.record.key),
                        "value": s(&c.record.value),
                        "headers": hs,
                    })
                )
            }
            Format::Template(t) => {
                let mut s = t
                    .replace("{topic}", topic)
                    .replace("{partition}", &c.partition.to_string())
                    .replace("{offset}", &c.offset.to_string())
                    .replace("{timestamp}", &c.record.timestamp.to_string())
                    .replace("{headers}", &headers())
                    .replace("{key}", &text(&c.record.key))
                    .replace("{value}", &text(&c.record.value))
                    .replace("\\t", "\t");
                s.push('\n');
                s
            }
            Format::Fields {
                key,
                timestamp,
                headers: print_headers,
                offset,
            } => {
                // The order of Kafka's DefaultMessageFormatter, tab-separated.
                let mut parts = Vec::new();
                if *timestamp {
                    parts.push(format!("{ts_type}:{}", c.record.timestamp));
                }
                if *offset {
                    parts.push(format!("Partition:{}", c.partition));
                    parts.push(format!("Offset:{}", c.offset));
                }
                if *print_headers {
                    parts.push(headers());
                }
                if *key {
                    parts.push(text(&c.record.key));
                }
                parts.push(text(&c.record.value));
                let mut s = parts.join("\t");
                s.push('\n');
                s
            }
        }
    }
}

/// Where each partition read is: the next offset to fetch.
pub type Positions = BTreeMap<i32, i64>;

pub fn run(a: ConsumeArgs, common: &Common) -> Result<(), CliError> {
    let mut ctx = Context::new(common, KEYS)?;
    let format = match a.format.as_deref() {
        Some("json") => Format::Json,
        Some(t) => Format::Template(t.to_string()),
        None => Format::Fields {
            key: a.print_key,
            timestamp: a.print_timestamp,
            headers: a.print_headers,
            offset: a.print_offset,
        },
    };
    let isolation: i8 = match a.isolation_level.as_str() {
        "read_uncommitted" => 0,
        "read_committed" => 1,
        other => {
            return Err(CliError::Usage(format!(
                "--isolation-level {other}: expected read_uncommitted or read_committed"
            )))
        }
    };
    let reset = match ctx.props.get("auto.offset.reset") {
        _ if a.from_beginning => EARLIEST,
        None | Some("latest") => LATEST,
        Some("earliest") => EARLIEST,
        Some(other) => {
            return Err(CliError::Usage(format!(
                "-X auto.offset.reset={other}: expected earliest or latest"
            )))
        }
    };
    if a.offset.is_some() && a.partition.is_none() {
        return Err(CliError::Usage("--offset needs --partition".into()));
    }
    if a.group.is_some() && (a.offset.is_some() || a.partition.is_some()) {
        return Err(CliError::Usage(
            "--group assigns partitions itself: drop --partition and --offset (use `odradek group reset-offsets` to move the group)".into(),
        ));
    }
    let mut topic = ctx.cluster.topic(&a.topic)?;
    let interrupted = interrupt_flag();
    let fetch_max: i32 = ctx.props.num("fetch.max.bytes")?.unwrap_or(50 << 20);
    let partition_max: i32 = ctx
        .props
        .num("max.partition.fetch.bytes")?
        .unwrap_or(1 << 20);
    let max_wait: i32 = ctx.props.num("fetch.max.wait.ms")?.unwrap_or(500);

    let mut member = match &a.group {
        Some(g) => Some(Member::join(&mut ctx, g, &a.topic)?),
        None => None,
    };
    let mut positions: Positions = match &member {
        Some(m) => m.start_positions(&mut ctx, &topic, reset)?,
        None => {
            let parts: Vec<i32> = match a.partition {
                Some(p) => vec![p],
                None => topic.partitions.iter().map(|p| p.index).collect(),
            };
            match a.offset.as_deref() {
                None => ctx.cluster.list_offsets(&topic, &parts, reset)?,
                Some("earliest") => ctx.cluster.list_offsets(&topic, &parts, EARLIEST)?,
                Some("latest") => ctx.cluster.list_offsets(&topic, &parts, LATEST)?,
                Some(n) => {
                    let o: i64 = n.parse().map_err(|_| {
                        CliError::Usage(format!(
                            "--offset {n}: expected a number, earliest or latest"
                        ))
                    })?;
                    parts.iter().map(|p| (*p, o)).collect()
                }
            }
        }
    };

    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let idle_limit = a.timeout_ms.map(Duration::from_millis);
    let done = |printed: u64| a.max_messages.is_some_and(|m| printed >= m);
    let mut result = Ok(());
    while !done(printed) {
        if interrupted.load(Ordering::Relaxed) {
            result = Err(CliError::Interrupted);
            break;
        }
        if idle_limit.is_some_and(|l| last_record.elapsed() >= l) {
            break;
        }
        if let Some(m) = member.as_mut() {
            if let Some(new_positions) = m.poll(&mut ctx, &topic, &positions, reset)? {
                positions = new_positions;
            }
        }
        if positions.is_empty() {
            std::thread::sleep(Duration::from_millis(max_wait.max(10) as u64));
            continue;
        }
        let batch = fetch(
            &mut ctx,
            &mut topic,
            &mut positions,
            isolation,
            max_wait,
            fetch_max,
            partition_max,
            reset,
        )?;
        if !batch.is_empty() {
            last_record = Instant::now();
        }
        let mut out = String::new();
        for c in &batch {
            if done(printed) {
                break;
            }
            out.push_str(&format.line(&a.topic, c));
            printed += 1;
            // What was printed is consumed: the committed position follows it.
            positions.insert(c.partition, c.offset + 1);
        }
        output::write_out(&out)?;
    }
    if let Some(m) = member.as_mut() {
        if m.auto_commits() {
            m.commit(&mut ctx, &positions)?;
        }
        m.leave(&mut ctx)?;
    }
    result
}

/// One Fetch round over every partition read, grouped by leader: the records at or after
/// each position, in partition then offset order. Positions move past control batches and
/// records skipped; an out-of-range position resets by `reset`.
#[allow(clippy::too_many_arguments)]
fn fetch(
    ctx: &mut Context,
    topic: &mut TopicInfo,
    positions: &mut Positions,
    isolation: i8,
    max_wait: i32,
    fetch_max: i32,
    partition_max: i32,
    reset: i64,
) -> Result<Vec<Consumed>, CliError> {
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in positions.keys() {
        let leader = topic
            .partitions
            .iter()
            .find(|i| i.index == *p)
            .map_or(-1, |i| i.leader);
        by_leader.entry(leader).or_default().push(*p);
    }
    let mut out = Vec::new();
    let mut refresh = false;
    for (leader, parts) in by_leader {
        if leader < 0 {
            refresh = true;
            continue;
        }
        let req = FetchRequest {
            replica_id: -1,
            max_wait_ms: max_wait,
            min_bytes: 1,
            max_bytes: fetch_max,
            isolation_level: isolation,
            session_id: 0,
            session_epoch: -1,
            topics: vec![FetchTopic {
                topic: topic.name.clone(),
                partitions: parts
                    .iter()
                    .map(|p| FetchPartition {
                        partition: *p,
                        fetch_offset: positions[p],
                        partition_max_bytes: partition_max,
                        ..Default::default()
                    })
                    .collect(),
            }],
            ..Default::default()
        };
        let ResponseBody::Fetch(r) = ctx.cluster.broker(leader)?.call(req.into())? else {
            return Err(CliError::Unexpected(ApiKey::Fetch));
        };
        if r.error_code != 0 {
            return Err(CliError::kafka("Fetch", r.error_code, None));
        }
        for t in r.responses {
            for pd in t.partitions {
                let p = pd.partition_index;
                // Only partitions asked for (a broker answering others is ignored).
                let Some(&from) = positions.get(&p) else {
                    continue;
                };
                match ErrorCode(pd.error_code) {
                    ErrorCode::NONE => {}
                    ErrorCode::OFFSET_OUT_OF_RANGE => {
                        let to = ctx.cluster.list_offsets(topic, &[p], reset)?;
                        if let Some(o) = to.get(&p) {
                            eprintln!(
                                "odradek: offset {from} of partition {p} is out of range, resetting to {o}"
                            );
                            positions.insert(p, *o);
                        }
                        continue;
                    }
                    ErrorCode::NOT_LEADER_OR_FOLLOWER
                    | ErrorCode::LEADER_NOT_AVAILABLE
                    | ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
                    | ErrorCode::KAFKA_STORAGE_ERROR => {
                        refresh = true;
                        continue;
                    }
                    _ => {
                        return Err(CliError::kafka(
                            &format!("fetching {}-{p}", t.topic),
                            pd.error_code,
                            None,
                        ))
                    }
                }
                let Some(records) = pd.record_bytes() else {
                    continue;
                };
                let (recs, next) = decode_record_set(p, &records, from)?;
                out.extend(recs);
                if let Some(n) = next {
                    // Past batches without a printed record (control batches, skipped
                    // records); printed records move it again as they are printed.
                    if out.iter().all(|c| c.partition != p) {
                        positions.insert(p, n.max(from));
                    }
                }
            }
        }
    }
    if refresh {
        std::thread::sleep(Duration::from_millis(200));
        *topic = ctx.cluster.topic(&topic.name)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::records::Record;

    fn consumed() -> Consumed {
        Consumed {
            partition: 2,
            offset: 17,
            log_append_time: false,
            record: Record {
                key: Some(b"k".to_vec()),
                value: Some(b"v".to_vec()),
                headers: vec![("h".into(), Some(b"1".to_vec()))],
                timestamp: 1000,
            },
        }
    }

    #[test]
    fn formats_print_what_was_asked() {
        let c = consumed();
        let plain = Format::Fields {
            key: false,
            timestamp: false,
            headers: false,
            offset: false,
        };
        assert_eq!(plain.line("t", &c), "v\n");
        let all = Format::Fields {
            key: true,
            timestamp: true,
            headers: true,
            offset: true,
        };
        assert_eq!(
            all.line("t", &c),
            "CreateTime:1000\tPartition:2\tOffset:17\th:1\tk\tv\n"
        );
        let t = Format::Template("{topic}/{partition}@{offset} {key}={value} [{headers}]".into());
        assert_eq!(t.line("t", &c), "t/2@17 k=v [h:1]\n");
        let j: serde_json::Value = serde_json::from_str(&Format::Json.line("t", &c)).unwrap();
        assert_eq!(j["offset"], 17);
        assert_eq!(j["key"], "k");
        assert_eq!(j["headers"][0]["value"], "1");
        let mut tomb = consumed();
        tomb.record.value = None;
        assert!(Format::Json.line("t", &tomb).contains("\"value\":null"));
    }
}
