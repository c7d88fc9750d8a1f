//! Black-box tests of `odradek-bench soak` against a real `odradek serve`: a ~25 s soak with tiny
//! retention and compaction settings (segments roll several times a second, retention and the
//! cleaner run every 500 ms, one member leaves and rejoins the group) must account for every
//! acknowledged record of the plain topic, keep every key's latest value in the compacted one,
//! sample the broker it found from its listening socket, and write its verdict, rows, windows
//! and picture. Whether the short run shows drift is not asserted (this machine is shared and
//! its p99 is noisy); that the verdict is computed from the rows and decides `ok` is. The drift
//! check itself is unit-tested with synthetic rows in `src/soak.rs`.

mod common;

use common::{bench, cpus, json, Broker};

#[test]
fn a_short_soak_accounts_for_every_record_and_judges_drift() {
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let metrics_listen = format!("metrics.listen={metrics_addr}");
    let broker = Broker::start_with(&[
        "group.initial.rebalance.delay.ms=0",
        "log.retention.check.interval.ms=500",
        "log.cleaner.backoff.ms=500",
        &metrics_listen,
    ]);
    let pid = broker.child.as_ref().map(|c| c.id()).expect("broker pid");
    let bs = broker.bootstrap();
    let tmp = tempfile::tempdir().expect("tmp");
    let out_json = tmp.path().join("soak.json");
    let out_svg = tmp.path().join("soak.svg");
    let data = broker.dir.path().join("data");
    let (rc, out) = bench(&[
        "soak",
        "--bootstrap",
        &bs,
        "--cores",
        &cpus().1,
        "--duration-s",
        "24",
        "--interval-s",
        "2",
        "--window-s",
        "8",
        "--warmup-s",
        "4",
        "--plain-rate",
        "3000",
        "--compact-rate",
        "1000",
        "--record-size",
        "256",
        "--plain-partitions",
        "4",
        "--compact-partitions",
        "2",
        "--keys",
        "200",
        // 64 KiB segments: ~3 rolls a second per plain partition; 1 MiB kept per partition
        // (~5 s of data: a member that keeps up, rebalances included, never loses a record).
        "--segment-bytes",
        "65536",
        "--retention-bytes",
        "1048576",
        "--retention-ms",
        "8000",
        "--compact-segment-bytes",
        "65536",
        "--compact-segment-ms",
        "2000",
        "--members",
        "2",
        "--heartbeat-interval-ms",
        "300",
        "--commit-interval-ms",
        "1000",
        "--churn-every-s",
        "8",
        "--churn-pause-s",
        "1",
        "--drain-timeout-s",
        "30",
        "--broker-data-dir",
        data.to_str().expect("utf-8 path"),
        "--broker-metrics",
        &metrics_addr,
        "--broker-pause-every-s",
        "8",
        "--broker-pause-ms",
        "300",
        "--quiet",
        "--json",
        out_json.to_str().expect("utf-8 path"),
        "--svg",
        out_svg.to_str().expect("utf-8 path"),
    ]);
    assert!(
        rc == 0 || rc == 1,
        "soak could not run (exit {rc}):\n{out}\nbroker log:\n{}",
        broker.log()
    );
    let v = json(&out_json);
    let ctx = || format!("exit {rc}\n{out}\n{:#}", v["accounting"]);

    // The broker was found from its listening socket and sampled in every row.
    assert_eq!(v["broker"]["pid"].as_u64(), Some(pid as u64), "{}", ctx());
    // Paused (SIGSTOP) for 300 ms at 8 and 16 s of the load (and 24 s at its very end, maybe):
    // the accounting below holds through the stalls.
    let pauses = v["broker"]["pauses"].as_u64().unwrap_or(0);
    assert!((2..=3).contains(&pauses), "{pauses} pauses: {}", ctx());
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 12, "24 s of 2 s rows: {}", ctx());
    for r in rows {
        assert!(r["broker_rss_mib"].as_f64().is_some_and(|m| m > 1.0), "{r}");
        // From the broker's /metrics (glibc heap; the cache holds what was produced).
        let heap = r["broker_heap_allocated_mib"].as_f64().unwrap_or(0.0);
        assert!(heap > 0.1, "{r}");
        assert!(
            r["broker_cache_mib"]
                .as_f64()
                .is_some_and(|c| c > 0.0 && c <= heap),
            "{r}"
        );
        assert!(r["broker_fds"].as_u64().is_some_and(|f| f > 3), "{r}");
        assert!(r["data_dir_mib"].as_f64().is_some_and(|m| m > 0.0), "{r}");
        assert!(r["produce_us_p99"].as_u64().is_some_and(|p| p > 0), "{r}");
    }
    // Open loop at 4,000 rec/s in all: every row near it (a stalled producer would show).
    let mid = &rows[rows.len() / 2];
    let produced = mid["produced_per_s"].as_f64().unwrap_or(0.0);
    assert!(
        (3000.0..5000.0).contains(&produced),
        "{produced} rec/s: {mid}"
    );
    // Retention moved the plain topic's log start during the run, not only at the end.
    let start_mid = mid["plain_log_start"].as_i64().unwrap_or(0);
    assert!(start_mid > 0, "retention not running by mid-run: {mid}");
    assert_eq!(v["windows"].as_array().map(Vec::len), Some(3), "{}", ctx());

    // Plain topic: nothing lost, nothing expired unread, retention ran.
    let plain = &v["accounting"]["plain"];
    let acked = plain["reconciliation"]["acknowledged"]
        .as_u64()
        .unwrap_or(0);
    assert!(acked > 50_000, "acknowledged {acked}: {}", ctx());
    assert_eq!(plain["reconciliation"]["lost"], 0, "{}", ctx());
    assert_eq!(plain["expired_unread"], 0, "{}", ctx());
    assert_eq!(plain["retention_observed"], true, "{}", ctx());
    assert_eq!(plain["ok"], true, "{}", ctx());

    // Compacted topic: every key's latest offset survives, and the cleaner shrank the topic.
    let comp = &v["accounting"]["compacted"];
    assert_eq!(comp["keys_latest_mismatch"], 0, "{}", ctx());
    assert_eq!(comp["keys_at_end"], 200, "{}", ctx());
    assert_eq!(comp["keys_read_live"], 200, "{}", ctx());
    let at_end = comp["records_at_end"].as_u64().unwrap_or(u64::MAX);
    let comp_acked = comp["acknowledged"].as_u64().unwrap_or(0);
    assert!(
        comp_acked > 15_000 && at_end < comp_acked / 2,
        "{at_end} records left of {comp_acked}: {}",
        ctx()
    );
    assert_eq!(comp["ok"], true, "{}", ctx());

    // The churning member left and came back; the group kept consuming.
    assert!(
        v["group_activity"]["leaves"].as_u64().unwrap_or(0) >= 1,
        "{}",
        ctx()
    );
    assert_eq!(v["errors"]["produce"].as_object().map(|m| m.len()), Some(0));
    assert_eq!(v["errors"]["fetch"].as_object().map(|m| m.len()), Some(0));

    // The verdict is computed from the 10 post-warm-up rows and decides the outcome.
    let verdict = &v["verdict"];
    assert_eq!(verdict["rows_considered"], 10, "{verdict:#}");
    assert_eq!(verdict["first"]["rows"], 3, "{verdict:#}");
    for k in [
        "produced_change",
        "consumed_change",
        "produce_p99_ratio",
        "e2e_p99_ratio",
        "rss_growth_mib",
        "rss_slope_mib_per_hour",
        "fd_growth",
    ] {
        assert!(verdict[k].is_number(), "{k}: {verdict:#}");
    }
    assert!(verdict["rss_ok"].is_boolean() && verdict["fds_ok"].is_boolean());
    let verdict_ok = verdict["ok"].as_bool().expect("verdict.ok");
    assert_eq!(
        verdict_ok,
        verdict["problems"].as_array().is_some_and(|p| p.is_empty()),
        "{verdict:#}"
    );
    assert_eq!(v["ok"].as_bool(), Some(verdict_ok), "{}", ctx());
    assert_eq!(rc == 0, verdict_ok, "{}", ctx());
    assert!(out.contains("drift verdict: "), "{out}");

    let svg = std::fs::read_to_string(&out_svg).expect("svg written");
    assert!(
        svg.starts_with("<svg") || svg.contains("<svg"),
        "not an SVG"
    );
    for caption in [
        "broker memory",
        "broker open file descriptors",
        "latency p99",
    ] {
        assert!(svg.contains(caption), "no {caption:?} panel");
    }
}

#[test]
fn bad_settings_and_an_absent_broker_exit_2() {
    let (rc, out) = bench(&["soak", "--record-size", "10", "--duration-s", "30"]);
    assert_eq!(rc, 2, "{out}");
    assert!(out.contains("payload header"), "{out}");
    let (rc, out) = bench(&["soak", "--duration-s", "20", "--warmup-s", "15"]);
    assert_eq!(rc, 2, "{out}");
    assert!(out.contains("fewer than three"), "{out}");
    // Nothing listens on a port just released: setup fails, the run does not start.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let (rc, out) = bench(&[
        "soak",
        "--bootstrap",
        &format!("127.0.0.1:{port}"),
        "--duration-s",
        "30",
        "--warmup-s",
        "0",
    ]);
    assert_eq!(rc, 2, "{out}");
    assert!(out.contains("broker process not found"), "{out}");
    assert!(out.contains("odradek-bench: "), "{out}");
}
