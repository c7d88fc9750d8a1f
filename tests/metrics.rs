//! The metrics endpoint of a real `odradek serve` process (`metrics.listen`): `/metrics` during
//! and after a produce load (counters move by exactly what was produced, the whole output is
//! valid Prometheus text), `/health`, `/ready`, unknown paths, and HTTP input that must not hurt
//! the broker (garbage, oversized, silent and too many connections).
//!
//! Every HTTP exchange is bounded by socket timeouts; the format is checked three ways: the
//! `prometheus-parse` crate, the line rules below (stricter than that crate), and `promtool
//! check metrics` when promtool is installed (Debian's `prometheus` package).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// A broker with its metrics endpoint on a free loopback port.
fn metered_broker(extra: &[(&str, &str)]) -> (Broker, SocketAddr) {
    let port = free_port();
    let mut options = BrokerOptions::new()
        .cores(test_cores())
        .set("metrics.listen", format!("127.0.0.1:{port}"));
    for (k, v) in extra {
        options = options.set(*k, *v);
    }
    let broker = options.start();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // The endpoint binds before the Kafka listener opens, so it answers by now.
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(addr, "/ready").map(|r| r.0) != Ok(200) {
        if Instant::now() > deadline {
            broker.fail("the metrics endpoint never answered /ready with 200");
        }
        thread::sleep(Duration::from_millis(50));
    }
    (broker, addr)
}

/// Sends raw bytes, returns everything the server answers before closing (bounded).
fn http_raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// (status, headers, body) of an HTTP/1.1 answer.
fn split_response(raw: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_string(), body.to_string())
}

fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String, String), String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n");
    let raw = http_raw(addr, req.as_bytes()).map_err(|e| e.to_string())?;
    Ok(split_response(&raw))
}

/// Scrapes `/metrics`, checks the format every way we can, returns the samples.
fn scrape(addr: SocketAddr) -> Samples {
    let (status, head, body) = http_get(addr, "/metrics").expect("scrape");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(head.contains("Connection: close"), "{head}");
    check_exposition(&body);
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus-parse accepts the output");
    assert!(!parsed.samples.is_empty());
    Samples::parse(&body)
}

/// One sample's labels and value.
type Sample = (BTreeMap<String, String>, f64);

/// Every sample line as name -> [(labels, value)].
struct Samples {
    series: HashMap<String, Vec<Sample>>,
    text: String,
}

impl Samples {
    fn parse(text: &str) -> Samples {
        let mut series: HashMap<String, Vec<_>> = HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, labels, value) = parse_sample(line).unwrap();
            series.entry(name).or_default().push((labels, value));
        }
        Samples {
            series,
            text: text.to_string(),
        }
    }

    /// Sum of the samples of `name` whose labels include every pair of `want`.
    fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.series
            .get(name)
            .map(|v| {
                v.iter()
                    .filter(|(l, _)| {
                        want.iter()
                            .all(|(k, x)| l.get(*k).map(String::as_str) == Some(*x))
                    })
                    .map(|(_, v)| v)
                    .sum()
            })
            .unwrap_or(0.0)
    }

    /// The one sample of `name` with exactly these labels.
    fn get(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.series
            .get(name)?
            .iter()
            .find(|(l, _)| *l == want)
            .map(|(_, v)| *v)
    }
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

/// Parses `name{k="v",...} value` by the exposition format's rules (escapes included).
fn parse_sample(line: &str) -> Result<(String, BTreeMap<String, String>, f64), String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value: {line:?}"))?;
    let name = &line[..name_end];
    if !is_name(name, true) {
        return Err(format!("bad metric name {name:?} in {line:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let at_end;
        loop {
            // label name
            let start = chars.peek().map(|c| c.0).ok_or("unterminated labels")?;
            if r[start..].starts_with('}') {
                at_end = start + 1;
                break;
            }
            let eq = r[start..].find('=').ok_or(format!("no '=' in {line:?}"))? + start;
            let key = &r[start..eq];
            if !is_name(key, false) {
                return Err(format!("bad label name {key:?} in {line:?}"));
            }
            while chars.peek().is_some_and(|c| c.0 <= eq) {
                chars.next();
            }
            if chars.next().map(|c| c.1) != Some('"') {
                return Err(format!("label value not quoted in {line:?}"));
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|c| c.1) {
                    Some('\\') => match chars.next().map(|c| c.1) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape {other:?} in {line:?}")),
                    },
                    Some('"') => break,
                    Some('\n') | None => return Err(format!("unterminated value in {line:?}")),
                    Some(c) => value.push(c),
                }
            }
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key} twice in {line:?}"));
            }
            match chars.next().map(|c| c.1) {
                Some(',') => continue,
                Some('}') => {
                    at_end = chars.peek().map_or(r.len(), |c| c.0);
                    break;
                }
                other => return Err(format!("unexpected {other:?} after a label in {line:?}")),
            }
        }
        rest = &r[at_end..];
    }
    let value_text = rest
        .strip_prefix(' ')
        .ok_or(format!("no space before the value in {line:?}"))?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse::<f64>()
            .map_err(|_| format!("bad value {v:?} in {line:?}"))?,
    };
    Ok((name.to_string(), labels, value))
}

/// The text format's rules, checked line by line: HELP and TYPE once per family and before its
/// samples, a family's samples together, every sample parseable, no series twice, counters
/// named `_total`, histograms with ascending `le` ending in `+Inf` = `_count`, cumulative
/// counts. Then `promtool check metrics`, when installed.
fn check_exposition(text: &str) {
    assert!(text.ends_with('\n'), "output must end with a newline");
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<String> = HashSet::new();
    // histogram series (labels without le) -> (last le, last count)
    let mut buckets: HashMap<String, (f64, f64)> = HashMap::new();
    let mut inf: HashMap<String, f64> = HashMap::new();
    let mut counts: HashMap<String, f64> = HashMap::new();
    let switch = |current: &mut Option<String>, finished: &mut HashSet<String>, name: &str| {
        if current.as_deref() != Some(name) {
            if let Some(c) = current.take() {
                finished.insert(c);
            }
            assert!(!finished.contains(name), "samples of {name} are split");
            *current = Some(name.to_string());
        }
    };
    for line in text.lines() {
        assert!(!line.is_empty(), "empty line in the output");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has text");
            assert!(is_name(name, true) && !help.is_empty(), "{line}");
            assert!(helped.insert(name.to_string()), "HELP {name} twice");
            switch(&mut current, &mut finished, name);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE {name} twice"
            );
            assert_eq!(
                current.as_deref(),
                Some(name),
                "TYPE {name} away from its HELP"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (name, labels, value) = parse_sample(line).unwrap_or_else(|e| panic!("{e}"));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                let base = name.strip_suffix(s)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(&name)
            .to_string();
        let kind = types
            .get(&family)
            .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
        assert_eq!(
            current.as_deref(),
            Some(family.as_str()),
            "{line} outside its family"
        );
        assert!(
            series.insert(line.rsplit_once(' ').unwrap().0.to_string()),
            "series twice: {line}"
        );
        match kind.as_str() {
            "counter" => {
                assert!(
                    family.ends_with("_total"),
                    "counter {family} not named _total"
                );
                assert!(value >= 0.0 && value.is_finite(), "{line}");
            }
            "histogram" => {
                let mut key_labels = labels.clone();
                let le = key_labels.remove("le");
                let key = format!("{family}{key_labels:?}");
                if name.ends_with("_bucket") {
                    let le = le.unwrap_or_else(|| panic!("bucket without le: {line}"));
                    let le: f64 = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or_else(|_| panic!("bad le in {line}"))
                    };
                    let (last_le, last_count) = buckets
                        .get(&key)
                        .copied()
                        .unwrap_or((f64::NEG_INFINITY, 0.0));
                    assert!(le > last_le, "le not ascending: {line}");
                    assert!(value >= last_count, "bucket counts not cumulative: {line}");
                    buckets.insert(key.clone(), (le, value));
                    if le == f64::INFINITY {
                        inf.insert(key, value);
                    }
                } else {
                    assert!(le.is_none(), "le outside a bucket: {line}");
                    if name.ends_with("_count") {
                        counts.insert(key, value);
                    }
                }
            }
            _ => {}
        }
    }
    for (key, n) in &counts {
        assert_eq!(
            inf.get(key),
            Some(n),
            "{key}: +Inf bucket differs from _count"
        );
    }
    assert_eq!(counts.len(), inf.len());
    for name in types.keys() {
        assert!(helped.contains(name), "{name} has no HELP");
    }
    promtool_check(text);
}

/// `promtool check metrics` (lints included) when promtool is on PATH.
fn promtool_check(text: &str) {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        return; // not installed: the checks above stand alone
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn counters_move_by_exactly_what_a_produce_load_wrote() {
    let (broker, maddr) = metered_broker(&[]);
    let topic = "metered";
    create_topic(broker.addr(), topic, 2);
    let before = scrape(maddr);
    assert_eq!(before.get("odradek_up", &[]), Some(1.0));
    assert_eq!(before.get("odradek_ready", &[]), Some(1.0));
    assert_eq!(before.get("odradek_metrics_collect", &[]), Some(1.0));

    // Scrape once every 100 ms while producing: each answer is valid and the produce counter
    // never goes back.
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut last = 0.0;
            let mut scrapes = 0;
            while !stop.load(Ordering::SeqCst) {
                let s = scrape(maddr);
                let now = s.sum("odradek_produce_records_total", &[]);
                assert!(
                    now >= last,
                    "produce records went back from {last} to {now}"
                );
                last = now;
                scrapes += 1;
                thread::sleep(Duration::from_millis(100));
            }
            scrapes
        })
    };
    const N: usize = 3000;
    const VALUE_BYTES: usize = 300;
    let recs: Vec<Rec> = (0..N)
        .map(|i| Rec::value(payload("m", i, VALUE_BYTES)).in_partition((i % 2) as i32))
        .collect();
    let producer = producer(&broker.bootstrap(), &[("acks", "all"), ("linger.ms", "20")]);
    produce_all(&producer, topic, &recs, Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    let scrapes = scraper.join().expect("scraper thread");
    assert!(scrapes >= 1);
    let after = scrape(maddr);

    let delta =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    for p in ["0", "1"] {
        let labels = [("topic", topic), ("partition", p)];
        let records = delta("odradek_partition_produce_records_total", &labels);
        assert_eq!(
            records,
            (N / 2) as f64,
            "partition {p} records\n{}",
            after.text
        );
        let bytes = delta("odradek_partition_produce_bytes_total", &labels);
        assert!(
            bytes >= (N / 2 * VALUE_BYTES) as f64,
            "partition {p}: {bytes} bytes for {} bytes of values",
            N / 2 * VALUE_BYTES
        );
        let owner = after
            .series
            .get("odradek_log_end_offset")
            .and_then(|v| {
                v.iter().find(|(l, _)| {
                    l.get("topic").map(String::as_str) == Some(topic)
                        && l.get("partition").map(String::as_str) == Some(p)
                })
            })
            .unwrap_or_else(|| panic!("no log end offset for {topic}-{p}\n{}", after.text));
        assert_eq!(owner.1, (N / 2) as f64, "log end offset of {topic}-{p}");
        let shard = owner.0["shard"].as_str();
        let full = [("shard", shard), ("topic", topic), ("partition", p)];
        assert_eq!(
            after.get("odradek_high_watermark", &full),
            Some((N / 2) as f64)
        );
        assert_eq!(after.get("odradek_log_start_offset", &full), Some(0.0));
    }
    // Shard totals: exactly N more records, at least the value bytes (no other producer ran).
    assert_eq!(delta("odradek_produce_records_total", &[]), N as f64);
    assert!(delta("odradek_produce_bytes_total", &[]) >= (N * VALUE_BYTES) as f64);
    assert!(delta("odradek_network_received_bytes_total", &[]) >= (N * VALUE_BYTES) as f64);
    assert!(delta("odradek_network_sent_bytes_total", &[]) > 0.0);
    // acks=all: every produce waited for a durable round: fdatasyncs, or segment writes that
    // were durable themselves (O_DSYNC).
    assert!(
        delta("odradek_fsync_duration_seconds_count", &[])
            + delta("odradek_durable_writes_total", &[])
            >= 1.0
    );
    assert!(delta("odradek_group_commit_rounds_total", &[]) >= 1.0);
    // Every round is also timed (both are counted at the round's end, read together).
    let round = "odradek_group_commit_round_duration_seconds";
    assert_eq!(
        after.sum(&format!("{round}_count"), &[]),
        after.sum("odradek_group_commit_rounds_total", &[])
    );
    assert!(delta(&format!("{round}_sum"), &[]) > 0.0);
    // ... and every acks=all request waited for one, inside its own duration.
    let wait = "odradek_produce_durable_wait_seconds";
    let waits = delta(&format!("{wait}_count"), &[]);
    assert!(waits >= 1.0);
    assert!(delta(&format!("{wait}_sum"), &[]) > 0.0);
    let shards = after.series["odradek_connections_open"].len() as f64;
    assert!(
        waits
            <= shards
                * delta(
                    "odradek_request_duration_seconds_count",
                    &[("api", "Produce")]
                ),
        "{waits} durable waits: at most one per produce request and owning shard"
    );
    assert!(delta("odradek_io_file_writes_total", &[]) >= 1.0);
    let produce = [("api", "Produce")];
    assert!(delta("odradek_request_duration_seconds_count", &produce) >= 1.0);
    assert!(delta("odradek_request_duration_seconds_sum", &produce) > 0.0);
    assert!(after.sum("odradek_connections_accepted_total", &[]) >= 1.0);
    assert!(after.sum("odradek_connections_open", &[]) >= 1.0);
    assert_eq!(after.sum("odradek_under_replicated_partitions", &[]), 0.0);
    assert_eq!(after.sum("odradek_offline_partitions", &[]), 0.0);
    for name in [
        "odradek_build_info",
        "odradek_batch_cache_hit_ratio",
        "odradek_mailbox_queue_length",
        "odradek_fsyncs_in_flight",
        "odradek_queued_request_bytes",
    ] {
        assert!(after.series.contains_key(name), "no {name}\n{}", after.text);
    }
    // Every request passed through queued.max.request.bytes (512 MiB per shard by default).
    let peak = after.sum("odradek_queued_request_bytes_max", &[]);
    assert!(
        peak > 0.0 && peak <= 2.0 * (256 << 20) as f64,
        "peak {peak}"
    );

    // Fetch everything back: the fetch counters see at least every record and its bytes.
    let fetch_before = scrape(maddr);
    consume_exact(
        &broker.bootstrap(),
        topic,
        &[0, 1],
        Offset::Beginning,
        N,
        Duration::from_secs(60),
    );
    let fetch_after = scrape(maddr);
    let fetched = |name: &str| {
        fetch_after.sum(name, &[("topic", topic)]) - fetch_before.sum(name, &[("topic", topic)])
    };
    assert!(fetched("odradek_partition_fetch_records_total") >= N as f64);
    assert!(fetched("odradek_partition_fetch_bytes_total") >= (N * VALUE_BYTES) as f64);
    assert!(
        fetch_after.sum("odradek_fetch_records_total", &[])
            - fetch_before.sum("odradek_fetch_records_total", &[])
            >= N as f64
    );
    let fetch_api = [("api", "Fetch")];
    assert!(fetch_after.sum("odradek_request_duration_seconds_count", &fetch_api) >= 1.0);
    assert!(fetch_after.sum("odradek_batch_cache_hits_total", &[]) >= 1.0);

    // Memory: the resident set as /proc says (within what moved between the two reads), the
    // heap holding at least the batch cache it feeds.
    let pid = broker.pid().expect("broker pid");
    let vm_rss = rss_bytes(pid) as f64;
    let memory = scrape(maddr);
    let resident = memory
        .get("process_resident_memory_bytes", &[])
        .expect("resident bytes");
    assert!(
        (resident - vm_rss).abs() < vm_rss * 0.25,
        "resident {resident} vs VmRSS {vm_rss}"
    );
    let heap = memory
        .get("odradek_heap_allocated_bytes", &[])
        .expect("heap allocated (counted by the broker's allocator)");
    let cache = memory.sum("odradek_batch_cache_used_bytes", &[]);
    assert!(cache > 0.0, "the load filled the cache");
    // (Not "heap < resident": allocated but untouched capacity is not resident.)
    assert!(heap >= cache, "heap {heap}, cache {cache}");
    // mimalloc does not say what it holds free; the gauge is there only under glibc's malloc.
    assert!(memory.get("odradek_heap_free_bytes", &[]).is_none());

    // Consumer-group lag: a group commits offset 1000 of partition 0 (high watermark N/2).
    let group_id = "metrics-lag-group";
    let group_consumer = consumer(&broker.bootstrap(), &[("group.id", group_id)]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(1000))
        .expect("offset");
    group_consumer
        .commit(&tpl, CommitMode::Sync)
        .expect("commit offsets");
    let lagging = scrape(maddr);
    let labels = [("group", group_id), ("topic", topic), ("partition", "0")];
    assert_eq!(
        lagging.get("odradek_consumer_group_committed_offset", &labels),
        Some(1000.0),
        "\n{}",
        lagging.text
    );
    assert_eq!(
        lagging.get("odradek_consumer_group_lag", &labels),
        Some((N / 2 - 1000) as f64)
    );

    // acks=0 appends wait for nothing: produce counters grow, durable waits do not.
    const UNACKED: usize = 500;
    let before_acks0 = scrape(maddr);
    let unacked: Vec<Rec> = (0..UNACKED)
        .map(|i| Rec::value(payload("z", i, VALUE_BYTES)).in_partition((i % 2) as i32))
        .collect();
    let acks0 = common::producer(&broker.bootstrap(), &[("acks", "0")]);
    produce_all(&acks0, topic, &unacked, Duration::from_secs(60));
    let records = |s: &Samples| s.sum("odradek_produce_records_total", &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let after_acks0 = loop {
        let s = scrape(maddr);
        if records(&s) - records(&before_acks0) >= UNACKED as f64 || Instant::now() > deadline {
            break s;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        records(&after_acks0) - records(&before_acks0),
        UNACKED as f64
    );
    let wait_count = format!("{wait}_count");
    assert_eq!(
        after_acks0.sum(&wait_count, &[]),
        before_acks0.sum(&wait_count, &[])
    );
}

#[test]
fn health_ready_and_hostile_http_leave_the_broker_serving() {
    let (mut broker, maddr) = metered_broker(&[]);
    assert_eq!(http_get(maddr, "/health").unwrap().0, 200);
    assert_eq!(http_get(maddr, "/health").unwrap().2, "ok\n");
    let ready = http_get(maddr, "/ready").unwrap();
    assert_eq!((ready.0, ready.2.as_str()), (200, "ready\n"));
    assert_eq!(http_get(maddr, "/ready?x=1").unwrap().0, 200);
    assert_eq!(http_get(maddr, "/nope").unwrap().0, 404);
    assert_eq!(http_get(maddr, "/metrics/extra").unwrap().0, 404);

    let (status, head, _) = split_response(
        &http_raw(
            maddr,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap(),
    );
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET"), "{head}");
    // Garbage with an end of head: 400.
    let (status, _, _) =
        split_response(&http_raw(maddr, b"\x16\x03\x01\x00\xa5\x01 garbage\r\n\r\n").unwrap());
    assert_eq!(status, 400);
    // A Kafka request sent to the metrics port: no empty line ever comes; it is answered 431
    // or 408 (bounded either way), never a crash.
    let kafka = request_frame(18, 0, 1, &[]);
    let answer = http_raw(maddr, &kafka).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 408") || answer.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // An oversized head: 431 without waiting for the rest.
    let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
    while big.len() < 64 * 1024 {
        big.extend_from_slice(
            b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        );
    }
    match http_raw(maddr, &big) {
        Ok(answer) => assert!(
            answer.starts_with(b"HTTP/1.1 431"),
            "{:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        ),
        // The server closed while we were still writing the rest: also fine.
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        ),
    }
    // A client that says nothing is answered 408 after the request timeout (5 s).
    let started = Instant::now();
    let mut silent = TcpStream::connect(maddr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut answer = Vec::new();
    silent.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(started.elapsed() < Duration::from_secs(12));
    // Far more idle connections than it serves at once: the extra ones are closed at once, and
    // once the idle ones go away it answers again.
    let idle: Vec<TcpStream> = (0..40)
        .filter_map(|_| TcpStream::connect(maddr).ok())
        .collect();
    thread::sleep(Duration::from_millis(200));
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match http_get(maddr, "/health") {
            Ok((200, _, _)) => break,
            other if Instant::now() > deadline => panic!("/health after the idle flood: {other:?}"),
            _ => thread::sleep(Duration::from_millis(100)),
        }
    }
    // The broker itself never noticed.
    assert_serving(&mut broker);
    let s = scrape(maddr);
    assert_eq!(s.get("odradek_up", &[]), Some(1.0));
}

#[test]
fn collection_off_keeps_request_counters_at_zero() {
    let (broker, maddr) = metered_broker(&[("metrics.collect", "false")]);
    let topic = "unmetered";
    create_topic(broker.addr(), topic, 1);
    let recs: Vec<Rec> = (0..200)
        .map(|i| Rec::value(payload("u", i, 100)).in_partition(0))
        .collect();
    let producer = producer(&broker.bootstrap(), &[("acks", "all")]);
    produce_all(&producer, topic, &recs, Duration::from_secs(60));
    let s = scrape(maddr);
    assert_eq!(s.get("odradek_metrics_collect", &[]), Some(0.0));
    assert_eq!(s.sum("odradek_produce_records_total", &[]), 0.0);
    assert_eq!(s.sum("odradek_network_received_bytes_total", &[]), 0.0);
    assert!(!s
        .series
        .contains_key("odradek_request_duration_seconds_count"));
    assert_eq!(s.sum("odradek_fsync_duration_seconds_count", &[]), 0.0);
    assert_eq!(
        s.sum("odradek_group_commit_round_duration_seconds_count", &[]),
        0.0
    );
    assert_eq!(
        s.sum("odradek_produce_durable_wait_seconds_count", &[]),
        0.0
    );
    assert!(s.sum("odradek_group_commit_rounds_total", &[]) >= 1.0);
    // What is read from the partitions at scrape time is still there.
    assert_eq!(s.sum("odradek_log_end_offset", &[("topic", topic)]), 200.0);
    assert!(s.sum("odradek_connections_accepted_total", &[]) >= 1.0);
}

#[test]
fn a_taken_metrics_port_does_not_stop_the_broker() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut broker = BrokerOptions::new()
        .set("metrics.listen", format!("127.0.0.1:{port}"))
        .start();
    assert_serving(&mut broker);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !broker.log_tail(200).contains("metrics: cannot listen") {
        if Instant::now() > deadline {
            broker.fail("no error about the taken metrics port");
        }
        thread::sleep(Duration::from_millis(100));
    }
    // And with the endpoint off, nothing about it is logged at all.
    let mut quiet = BrokerOptions::new().set("metrics.listen", "").start();
    assert_serving(&mut quiet);
    assert!(
        !quiet.log_tail(200).contains("metrics:"),
        "{}",
        quiet.log_tail(200)
    );
}
