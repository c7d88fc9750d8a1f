//! Black-box test of `odradek-bench rebalance` against a real `odradek serve`: a small group
//! (3 members over 12 partitions, one more joins) must stabilise on a newer generation whose
//! assignments cover every partition exactly once, and every acknowledged record (prefilled and
//! produced during the run) must be consumed by some member.

mod common;

use common::{bench, cpus, json, Broker};

#[test]
fn a_joining_member_rebalances_the_group_without_losing_records() {
    let broker = Broker::start_with(&["group.initial.rebalance.delay.ms=0"]);
    let bs = broker.bootstrap();
    let tmp = tempfile::tempdir().expect("tmp");
    let out_json = tmp.path().join("rebalance.json");
    let (rc, out) = bench(&[
        "rebalance",
        "--bootstrap",
        &bs,
        "--cores",
        &cpus().1,
        "--partitions",
        "12",
        "--consumers",
        "3",
        "--record-size",
        "200",
        "--prefill-records",
        "3000",
        "--rate",
        "2000",
        "--join-after",
        "2",
        "--duration",
        "5",
        "--heartbeat-interval-ms",
        "300",
        "--commit-interval-ms",
        "1000",
        "--quiet",
        "--json",
        out_json.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(rc, 0, "bench failed:\n{out}\nbroker log:\n{}", broker.log());
    let v = json(&out_json);
    let ctx = || format!("{out}\n{v:#}");

    // Stabilised after the join, on a newer generation, and in a plausible time (the members
    // heartbeat every 300 ms, so they all notice within about that).
    let st = v["stabilisation_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("{}", ctx()));
    assert!(st > 0.0 && st < 5000.0, "stabilisation {st} ms: {}", ctx());
    let g0 = v["timeline"]["initial"]["generation"]
        .as_i64()
        .expect("initial generation");
    let g1 = v["timeline"]["last"]["generation"]
        .as_i64()
        .expect("final generation");
    assert!(g1 > g0, "generation {g0} -> {g1}: {}", ctx());

    // Coverage: 3 members x 4 partitions, then 4 members x 3, no gap, no overlap.
    for (which, members, each) in [("initial", 3, 4), ("last", 4, 3)] {
        let c = &v["timeline"][which];
        assert_eq!(c["members"], members, "{which}: {}", ctx());
        assert_eq!(
            c["missing"].as_array().map(Vec::len),
            Some(0),
            "{which}: {}",
            ctx()
        );
        assert_eq!(
            c["overlapping"].as_array().map(Vec::len),
            Some(0),
            "{which}: {}",
            ctx()
        );
        let per: Vec<i64> = c["per_member"]
            .as_array()
            .expect("per_member")
            .iter()
            .filter_map(|x| x.as_i64())
            .collect();
        assert_eq!(per, vec![each; members], "{which}: {}", ctx());
    }

    // Nothing lost: the prefill and the concurrent producer's records, all read.
    let acc = &v["accounting"];
    let acked = acc["acknowledged"].as_u64().expect("acknowledged");
    assert!(acked >= 3000 + 2000 * 3, "acknowledged {acked}: {}", ctx());
    assert_eq!(acc["lost"], 0, "{}", ctx());
    assert!(acc["consumed"].as_u64() >= Some(acked), "{}", ctx());
    assert_eq!(
        v["errors"].as_object().map(|m| m.len()),
        Some(0),
        "{}",
        ctx()
    );
    // Throughput figures around the join were computed from a steady window before it.
    assert!(
        v["consume"]["steady_before_records_per_s"].as_f64() > Some(0.0),
        "{}",
        ctx()
    );
}
