//! The `odradek` command line as a user drives it: the binary is spawned with arguments, fed
//! stdin, and its stdout, stderr and exit code are checked, against a real `odradek serve` on a
//! private non-default port (reached with `--bootstrap-server`, or `ODRADEK_BOOTSTRAP` where a
//! test says so). Records the CLI produces are read back through rdkafka too, so the CLI is
//! checked against another client, not only against itself.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::Offset;
use serde_json::Value;

/// What one CLI run printed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self, what: &str) -> Run {
        assert_eq!(
            self.code, 0,
            "{what}: exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// How the CLI is told where the broker is.
#[derive(Clone, Copy)]
enum Reach {
    Flag,
    Env,
}

/// Runs `odradek <args>` against `broker` with `stdin`, killing it after 60 s.
fn cli_with(broker: &Broker, reach: Reach, args: &[&str], stdin: &str) -> Run {
    let mut cmd = Command::new(broker_bin());
    cmd.env_remove("ODRADEK_BOOTSTRAP");
    match reach {
        Reach::Flag => {
            cmd.args(args)
                .arg("--bootstrap-server")
                .arg(broker.bootstrap());
        }
        Reach::Env => {
            cmd.args(args).env("ODRADEK_BOOTSTRAP", broker.bootstrap());
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn the CLI: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(data.as_bytes());
    });
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: kill(pid, 0) only checks that the process exists.
            if unsafe { libc::kill(pid as i32, 0) } != 0 {
                return false;
            }
        }
        // SAFETY: our own child, still running after a minute.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        true
    });
    let out = child.wait_with_output().expect("wait for the CLI");
    let _ = writer.join();
    let killed = watchdog.join().unwrap_or(false);
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !killed,
        "`odradek {}` did not finish within 60 s\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        run.stdout,
        run.stderr
    );
    run
}

fn cli(broker: &Broker, args: &[&str]) -> Run {
    cli_with(broker, Reach::Flag, args, "")
}

/// The offsets `odradek consume --group` starts from: consumes one record per partition in
/// scope with `--print-offset` and returns partition -> first offset printed.
fn first_offsets_through_group(
    broker: &Broker,
    topic: &str,
    group: &str,
    expect: usize,
) -> std::collections::BTreeMap<i32, i64> {
    let run = cli(
        broker,
        &[
            "consume",
            topic,
            "--group",
            group,
            "--print-offset",
            "--format",
            "{partition} {offset}",
            "--timeout-ms",
            "4000",
            "-X",
            "enable.auto.commit=false",
        ],
    )
    .ok("consume through the group");
    let mut first = std::collections::BTreeMap::new();
    for line in run.stdout.lines() {
        let mut it = line.split(' ');
        let p: i32 = it.next().unwrap().parse().unwrap();
        let o: i64 = it.next().unwrap().parse().unwrap();
        first.entry(p).or_insert(o);
    }
    assert_eq!(first.len(), expect, "partitions read: {}", run.stdout);
    first
}

#[test]
fn keyed_lines_round_trip_and_land_where_the_java_partitioner_puts_them() {
    let broker = Broker::start();
    for reach in [Reach::Flag, Reach::Env] {
        let topic = match reach {
            Reach::Flag => "lines-flag",
            Reach::Env => "lines-env",
        };
        cli_with(
            &broker,
            reach,
            &["topic", "create", topic, "--partitions", "4"],
            "",
        )
        .ok("topic create");
        let lines: String = (0..200)
            .map(|i| format!("key-{}:value {i}\n", i % 17))
            .collect();
        cli_with(
            &broker,
            reach,
            &[
                "produce",
                topic,
                "--key-separator",
                ":",
                "--compression",
                "lz4",
            ],
            &lines,
        )
        .ok("produce");
        // Read back through rdkafka: every line, keys split off, and each key on the partition
        // Kafka's murmur2 partitioner gives it (rdkafka's murmur2_random does the same).
        let got = consume_exact(
            &broker.bootstrap(),
            topic,
            &[0, 1, 2, 3],
            Offset::Beginning,
            200,
            Duration::from_secs(30),
        );
        let mut values: Vec<String> = got
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
            .collect();
        values.sort();
        let mut want: Vec<String> = (0..200).map(|i| format!("value {i}")).collect();
        want.sort();
        assert_eq!(values, want);
        let java_partition = |key: &[u8]| -> i32 {
            // Kafka's Utils.murmur2, checked against the Java client's values in the unit tests.
            (odradek::protocol::murmur2::murmur2(key) & 0x7fff_ffff) % 4
        };
        for r in &got {
            let key = r.key.clone().expect("keyed");
            assert_eq!(r.partition, java_partition(&key), "key {key:?}");
        }
        // And through the CLI: keys printed with --print-key, in offset order per partition.
        let run = cli_with(
            &broker,
            reach,
            &[
                "consume",
                topic,
                "--from-beginning",
                "--print-key",
                "--max-messages",
                "200",
            ],
            "",
        )
        .ok("consume");
        let printed: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(printed.len(), 200);
        for line in printed {
            let (k, v) = line.split_once('\t').expect("key<TAB>value");
            let i: usize = v.strip_prefix("value ").unwrap().parse().unwrap();
            assert_eq!(k, format!("key-{}", i % 17));
        }
    }
}

#[test]
fn group_describe_shows_lag_after_a_partial_consume_and_json_parses() {
    let broker = Broker::start();
    let topic = "lagging";
    cli(&broker, &["topic", "create", topic, "--partitions", "2"]).ok("create");
    let lines: String = (0..30).map(|i| format!("v{i}\n")).collect();
    // 20 to partition 0, 10 to partition 1.
    cli_with(
        &broker,
        Reach::Flag,
        &["produce", topic, "--partition", "0"],
        &lines[..lines.len()],
    )
    .ok("produce p0");
    let lines1: String = (0..10).map(|i| format!("w{i}\n")).collect();
    cli_with(
        &broker,
        Reach::Flag,
        &["produce", topic, "--partition", "1"],
        &lines1,
    )
    .ok("produce p1");
    // A group consumer that stops after 25 records (it commits on exit).
    let run = cli(
        &broker,
        &[
            "consume",
            topic,
            "--group",
            "readers",
            "--from-beginning",
            "--max-messages",
            "25",
        ],
    )
    .ok("consume 25");
    assert_eq!(run.stdout.lines().count(), 25);

    let rows = cli(
        &broker,
        &["group", "describe", "readers", "--output", "json"],
    )
    .ok("describe")
    .json();
    let rows = rows.as_array().expect("a list of partition rows");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let mut total_lag = 0;
    let mut total_current = 0;
    for r in rows {
        for key in [
            "group",
            "topic",
            "partition",
            "current_offset",
            "log_end_offset",
            "lag",
            "consumer_id",
            "host",
            "client_id",
        ] {
            assert!(r.get(key).is_some(), "row lacks {key}: {r}");
        }
        assert_eq!(r["group"], "readers");
        let (cur, end, lag) = (
            r["current_offset"].as_i64().unwrap(),
            r["log_end_offset"].as_i64().unwrap(),
            r["lag"].as_i64().unwrap(),
        );
        assert_eq!(lag, end - cur, "{r}");
        assert_eq!(end, if r["partition"] == 0 { 30 } else { 10 });
        // The consumer left: nobody owns the partitions.
        assert!(r["consumer_id"].is_null(), "{r}");
        total_lag += lag;
        total_current += cur;
    }
    assert_eq!(total_current, 25);
    assert_eq!(total_lag, 15);

    // The table has the columns Kafka users know.
    let table = cli(&broker, &["group", "describe", "readers"]).ok("describe table");
    let header: Vec<&str> = table
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID"
        ]
    );
    let list = cli(&broker, &["group", "list", "--output", "json"])
        .ok("list")
        .json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|g| g["group"] == "readers"),
        "{list}"
    );
}

#[test]
fn every_reset_offsets_mode_lands_on_the_right_offsets() {
    // Every check joins the group again: no initial rebalance delay.
    let broker = BrokerOptions::new()
        .set("group.initial.rebalance.delay.ms", 0)
        .start();
    let topic = "resets";
    cli(&broker, &["topic", "create", topic, "--partitions", "2"]).ok("create");
    // Partition 0: offsets 0..10, the first five an hour old, the rest now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let hour_ago = now - 3_600_000;
    let producer = producer(&broker.bootstrap(), &[]);
    let mut recs = Vec::new();
    for i in 0..10 {
        let mut r = Rec::value(format!("p0-{i}")).in_partition(0);
        r.timestamp_ms = Some(if i < 5 { hour_ago } else { now });
        recs.push(r);
    }
    for i in 0..6 {
        recs.push(Rec::value(format!("p1-{i}")).in_partition(1));
    }
    produce_all(&producer, topic, &recs, Duration::from_secs(30));
    // The group reads everything once, so it has committed offsets (10 and 6).
    cli(
        &broker,
        &[
            "consume",
            topic,
            "--group",
            "g",
            "--from-beginning",
            "--max-messages",
            "16",
        ],
    )
    .ok("first read");

    let reset = |args: &[&str]| -> Run {
        let mut all = vec!["group", "reset-offsets", "--group", "g"];
        all.extend_from_slice(args);
        cli(&broker, &all)
    };
    // A dry run changes nothing.
    let dry = reset(&["--topic", topic, "--to-earliest"]).ok("dry run");
    assert!(dry.stderr.contains("Dry run"), "{}", dry.stderr);
    assert!(dry.stdout.contains("NEW-OFFSET"));
    let rows = cli(&broker, &["group", "describe", "g", "--output", "json"])
        .ok("describe")
        .json();
    for r in rows.as_array().unwrap() {
        assert_eq!(r["lag"], 0, "a dry run moved offsets: {r}");
    }

    let partition0 = format!("{topic}:0");
    let cases: Vec<(Vec<&str>, [i64; 2])> = vec![
        (vec!["--topic", topic, "--to-earliest"], [0, 0]),
        (vec!["--topic", topic, "--to-offset", "3"], [3, 3]),
        (vec!["--topic", topic, "--shift-by", "2"], [5, 5]),
        (vec!["--all-topics", "--shift-by", "-4"], [1, 1]),
        // Shifting below the start clamps to it, with a warning.
        (vec!["--topic", topic, "--shift-by", "-50"], [0, 0]),
        (vec!["--topic", topic, "--to-latest"], [10, 6]),
        (vec!["--topic", &partition0, "--to-offset", "7"], [7, 6]),
        // The first record at or after half an hour ago: partition 0's sixth.
        (vec!["--topic", topic, "--by-period", "PT30M"], [5, 0]),
        (vec!["--topic", topic, "--to-current"], [5, 0]),
    ];
    for (args, want) in cases {
        let mut all = args.clone();
        all.push("--execute");
        let run = reset(&all).ok(&format!("reset {args:?}"));
        if args.contains(&"-50") {
            assert!(run.stderr.contains("outside the log"), "{}", run.stderr);
        }
        // Checked through a consumer: where the group starts reading now.
        let first = first_offsets_through_group(
            &broker,
            topic,
            "g",
            want.iter().zip([10, 6]).filter(|(w, end)| *w < end).count(),
        );
        for (p, (w, end)) in want.iter().zip([10i64, 6]).enumerate() {
            if *w < end {
                assert_eq!(
                    first.get(&(p as i32)),
                    Some(w),
                    "reset {args:?}: partition {p}"
                );
            }
        }
    }
    // --to-datetime (the two hour-old batches' time, as an ISO date in UTC).
    let secs = hour_ago / 1000;
    let dt = {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    };
    reset(&[
        "--topic",
        &format!("{topic}:0"),
        "--to-datetime",
        &dt,
        "--execute",
    ])
    .ok("datetime");
    let first = first_offsets_through_group(&broker, topic, "g", 2);
    assert_eq!(first[&0], 0, "records at {dt} start at offset 0");
    // --from-file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("offsets.csv");
    std::fs::write(&file, format!("{topic},0,8\n{topic},1,2\n")).unwrap();
    reset(&[
        "--all-topics",
        "--from-file",
        file.to_str().unwrap(),
        "--execute",
    ])
    .ok("from file");
    let first = first_offsets_through_group(&broker, topic, "g", 2);
    assert_eq!((first[&0], first[&1]), (8, 2));

    // Refused while the group has an active member.
    let mut member = Command::new(broker_bin())
        .args(["consume", topic, "--group", "g", "--bootstrap-server"])
        .arg(broker.bootstrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = cli(&broker, &["group", "describe", "g", "--output", "json"]).ok("describe");
        if d.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|r| !r["consumer_id"].is_null())
        {
            break;
        }
        assert!(Instant::now() < deadline, "the member never joined");
        std::thread::sleep(Duration::from_millis(200));
    }
    let refused = reset(&["--topic", topic, "--to-earliest", "--execute"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("active member"),
        "{}",
        refused.stderr
    );
    let _ = member.kill();
    let _ = member.wait();
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[test]
fn config_alter_is_visible_in_describe_and_topic_describe() {
    let broker = Broker::start();
    cli(
        &broker,
        &[
            "topic",
            "create",
            "cfg",
            "--partitions",
            "1",
            "--config",
            "retention.ms=3600000",
        ],
    )
    .ok("create");
    cli(
        &broker,
        &[
            "config",
            "alter",
            "--topic",
            "cfg",
            "--add-config",
            "cleanup.policy=[compact,delete],max.message.bytes=2000000",
            "--delete-config",
            "retention.ms",
        ],
    )
    .ok("alter");
    let rows = cli(
        &broker,
        &["config", "describe", "--topic", "cfg", "--output", "json"],
    )
    .ok("describe")
    .json();
    let got: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("cleanup.policy".to_string(), "compact,delete".to_string()),
            ("max.message.bytes".to_string(), "2000000".to_string())
        ]
    );
    // --all includes defaults, with their source.
    let all = cli(
        &broker,
        &[
            "config", "describe", "--topic", "cfg", "--all", "--output", "json",
        ],
    )
    .ok("describe --all")
    .json();
    let retention = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "retention.ms")
        .expect("retention.ms listed");
    assert_ne!(retention["source"], "DYNAMIC_TOPIC_CONFIG");
    // topic describe shows the overrides and the offsets.
    let d = cli(&broker, &["topic", "describe", "cfg", "--output", "json"])
        .ok("topic describe")
        .json();
    assert_eq!(d[0]["configs"]["cleanup.policy"], "compact,delete");
    assert_eq!(d[0]["partitions"][0]["log_end_offset"], 0);
    // A bad value names the key; the exit code says the broker refused.
    let bad = cli(
        &broker,
        &[
            "config",
            "alter",
            "--topic",
            "cfg",
            "--add-config",
            "retention.ms=soon",
        ],
    );
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("retention.ms"), "{}", bad.stderr);
    // Broker configs: dynamic defaults set and shown.
    cli(
        &broker,
        &[
            "config",
            "alter",
            "--broker-defaults",
            "--add-config",
            "log.retention.ms=7200000",
        ],
    )
    .ok("broker defaults");
    let b = cli(
        &broker,
        &[
            "config",
            "describe",
            "--broker-defaults",
            "--output",
            "json",
        ],
    )
    .ok("describe broker defaults")
    .json();
    assert!(
        b.as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "log.retention.ms" && r["value"] == "7200000"),
        "{b}"
    );
}

#[test]
fn topics_cluster_and_errors_as_scripts_see_them() {
    let broker = Broker::start();
    cli(&broker, &["topic", "create", "t1", "--partitions", "3"]).ok("create");
    // Exists already: exit 1, unless --if-not-exists.
    let again = cli(&broker, &["topic", "create", "t1"]);
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("TOPIC_ALREADY_EXISTS"),
        "{}",
        again.stderr
    );
    cli(&broker, &["topic", "create", "t1", "--if-not-exists"]).ok("if-not-exists");
    cli(&broker, &["topic", "alter", "t1", "--partitions", "5"]).ok("alter partitions");
    let list = cli(&broker, &["topic", "list", "--output", "json"])
        .ok("list")
        .json();
    assert_eq!(
        list,
        serde_json::json!([{"topic": "t1", "partitions": 5, "internal": false}])
    );
    let internal = cli(&broker, &["topic", "list", "--include-internal"]).ok("list internal");
    assert!(
        internal.stdout.contains("__consumer_offsets"),
        "{}",
        internal.stdout
    );

    let info = cli(&broker, &["cluster", "info", "--output", "json"])
        .ok("cluster")
        .json();
    assert_eq!(info["brokers"][0]["port"], broker.port());
    assert!(info["cluster_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(info["api_versions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "Produce"));

    // Unknown topic: the hint to create it, exit 1.
    let unknown = cli(&broker, &["produce", "nope"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("odradek topic create nope"),
        "{}",
        unknown.stderr
    );
    // Unknown -X property: usage error, exit 2, naming the key.
    let bad = cli(&broker, &["topic", "list", "-X", "no.such=1"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("no.such"), "{}", bad.stderr);
    // Nothing listening: exit 3, naming the address tried.
    let port = free_port();
    let run = Command::new(broker_bin())
        .args([
            "topic",
            "list",
            "--bootstrap-server",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(3));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");

    cli(&broker, &["topic", "delete", "t1"]).ok("delete");
    let gone = cli(&broker, &["topic", "describe", "t1"]);
    assert_eq!(gone.code, 1, "{}", gone.stderr);

    // Completions for the shells people use.
    for shell in ["bash", "zsh", "fish"] {
        let c = cli(&broker, &["completions", shell]).ok("completions");
        assert!(c.stdout.contains("reset-offsets"), "{shell}");
    }
}

#[test]
fn produce_headers_idempotence_and_consume_formats() {
    let broker = Broker::start();
    cli(&broker, &["topic", "create", "fmt", "--partitions", "1"]).ok("create");
    cli_with(
        &broker,
        Reach::Flag,
        &[
            "produce",
            "fmt",
            "--headers",
            "--key-separator",
            "=",
            "--idempotent",
            "-X",
            "compression.type=zstd",
        ],
        "app:cli,trace:42\tk1=first\n\tk2=second\n",
    )
    .ok("produce");
    // rdkafka sees the headers, keys and values.
    let got = consume_exact(
        &broker.bootstrap(),
        "fmt",
        &[0],
        Offset::Beginning,
        2,
        Duration::from_secs(30),
    );
    assert_eq!(got[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(got[0].value.as_deref(), Some(&b"first"[..]));
    assert_eq!(
        got[0].headers,
        vec![
            ("app".to_string(), Some(b"cli".to_vec())),
            ("trace".to_string(), Some(b"42".to_vec()))
        ]
    );
    assert!(got[1].headers.is_empty());

    let plain = cli(
        &broker,
        &[
            "consume",
            "fmt",
            "--partition",
            "0",
            "--offset",
            "earliest",
            "--print-key",
            "--print-headers",
            "--print-timestamp",
            "--max-messages",
            "2",
        ],
    )
    .ok("consume");
    let lines: Vec<&str> = plain.stdout.lines().collect();
    assert!(lines[0].starts_with("CreateTime:"), "{}", lines[0]);
    assert!(
        lines[0].ends_with("\tapp:cli,trace:42\tk1\tfirst"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].ends_with("\tNO_HEADERS\tk2\tsecond"),
        "{}",
        lines[1]
    );

    let json = cli(
        &broker,
        &[
            "consume",
            "fmt",
            "--partition",
            "0",
            "--offset",
            "1",
            "--format",
            "json",
            "--max-messages",
            "1",
        ],
    )
    .ok("json");
    let v: Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(v["offset"], 1);
    assert_eq!(v["key"], "k2");
    assert_eq!(v["value"], "second");
    assert_eq!(v["topic"], "fmt");

    let tmpl = cli(
        &broker,
        &[
            "consume",
            "fmt",
            "--from-beginning",
            "--format",
            "{offset}:{key}={value}",
            "--max-messages",
            "2",
        ],
    )
    .ok("template");
    assert_eq!(tmpl.stdout, "0:k1=first\n1:k2=second\n");
    // A line without the separator is a usage error naming it.
    let bad = cli_with(
        &broker,
        Reach::Flag,
        &["produce", "fmt", "--key-separator", "="],
        "nokey\n",
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}

/// Ctrl-C stops `consume --group` cleanly: exit 130, and the offsets of what it printed are
/// committed (it ran for less than `auto.commit.interval.ms`, so only the commit on exit can
/// have done it).
#[test]
fn ctrl_c_commits_what_was_consumed() {
    use std::io::{BufRead, BufReader};
    let broker = BrokerOptions::new()
        .set("group.initial.rebalance.delay.ms", 0)
        .start();
    cli(&broker, &["topic", "create", "sigint", "--partitions", "1"]).ok("create");
    let lines: String = (0..100).map(|i| format!("r{i}\n")).collect();
    cli_with(&broker, Reach::Flag, &["produce", "sigint"], &lines).ok("produce");
    let mut child = Command::new(broker_bin())
        .args([
            "consume",
            "sigint",
            "--group",
            "interrupted",
            "--from-beginning",
            "-X",
            "auto.commit.interval.ms=600000",
            "--bootstrap-server",
        ])
        .arg(broker.bootstrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    for i in 0..100 {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "output ended after {i} lines"
        );
        assert_eq!(line.trim_end(), format!("r{i}"));
    }
    // Nothing committed yet: the interval is ten minutes.
    let before = cli(
        &broker,
        &["group", "describe", "interrupted", "--output", "json"],
    )
    .ok("describe while running")
    .json();
    assert!(before[0]["current_offset"].is_null(), "{before}");
    // SAFETY: our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "exit status {status:?}");
    let rows = cli(
        &broker,
        &["group", "describe", "interrupted", "--output", "json"],
    )
    .ok("describe")
    .json();
    assert_eq!(rows[0]["current_offset"], 100, "{rows}");
    assert_eq!(rows[0]["lag"], 0, "{rows}");
}
