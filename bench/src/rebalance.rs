//! `odradek-bench rebalance`: how long a classic consumer group takes to stabilise after one
//! member joins, and how far consumption dips meanwhile.
//!
//! The run: create the topic (optionally prefill it), start `--consumers` group members
//! ([`crate::client::group`], eager "range" assignor) consuming it while a producer writes at a
//! fixed `--rate`; once the group is stable (every member holds an assignment of one generation
//! that covers every partition exactly once) and `--join-after` has passed, start one more
//! member; the producer stops at `--duration`, the members drain to the high watermark and stop.
//!
//! Measured (run-clock µs, one clock for every core):
//! - stabilisation: from the joiner's first JoinGroup to the moment every member (old ones and
//!   the joiner) holds its assignment of a newer generation, all of one generation;
//!   split into *notice* (until the last old member sent its rejoining JoinGroup: heartbeat
//!   driven) and *coordinator* (from then until the last SyncGroup answer).
//! - consumption in `--bucket-ms` intervals: the median rate over the steady window before the
//!   join, the lowest interval during the rebalance (its "dip"), the median after.
//! - coverage (union of the assignments = every partition, no overlap) for the initial and the
//!   final generation, and the accounting: every acknowledged offset consumed by some member;
//!   offsets consumed more than once (a partition re-read from an older commit after moving) are
//!   counted as duplicates and reported.
//!
//! Members run as tasks on the bench cores (member i on core i mod cores, the producer on the
//! first); they share only atomics with each other and send timestamped [`Event`]s to the main
//! thread, which decides when the joiner starts and when the run ends.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use odradek::protocol::{ErrorCode, FetchPartition, FetchRequest, FetchTopic, ResponseBody};
use serde::Serialize;
use serde_json::{json, Value};

use crate::client::batch::{for_each_record, Compression};
use crate::client::group::{GroupError, GroupMember, MemberTimeouts};
use crate::client::producer::{PayloadPool, Producer, ProducerSpec};
use crate::client::{ensure_topic, list_offsets, ClientError, Connection, TopicLayout};
use crate::run::{self, RunError, RunPlan};
use crate::stats::{reconcile, Clock, CoreProbe, Ranges, Reconciliation};
use crate::workload::{Cores, LoadSpec};

/// Run-clock time at which the producer starts (executors and connections are up by then).
const LOAD_START_US: u64 = 200_000;

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct RebalanceSpec {
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Bench cores: CPU list to pin to ("1-1"), or a count (unpinned).
    #[arg(long, default_value = "1")]
    pub cores: String,
    /// Topic (default: a fresh `rebalance-<ms>`).
    #[arg(long)]
    pub topic: Option<String>,
    #[arg(long, default_value_t = 60)]
    pub partitions: usize,
    /// Group members before the join (one more joins).
    #[arg(long, default_value_t = 10)]
    pub consumers: usize,
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records produced before the members start (closed loop).
    #[arg(long, default_value_t = 0)]
    pub prefill_records: u64,
    /// Records/s the concurrent producer writes until --duration (0: no producer).
    #[arg(long, default_value_t = 50_000.0)]
    pub rate: f64,
    /// Seconds after the start at which the extra member joins (later if the group is not
    /// stable by then).
    #[arg(long, default_value_t = 8.0)]
    pub join_after: f64,
    /// Seconds the producer runs; the members then drain and stop.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Members' heartbeat.interval.ms (a member learns of a rebalance from its heartbeat).
    #[arg(long, default_value_t = 3000)]
    pub heartbeat_interval_ms: u64,
    #[arg(long, default_value_t = 45_000)]
    pub session_timeout_ms: i32,
    /// max.poll.interval.ms: how long the coordinator waits for members to rejoin.
    #[arg(long, default_value_t = 300_000)]
    pub rebalance_timeout_ms: i32,
    /// auto.commit.interval.ms (positions are also committed before every rejoin).
    #[arg(long, default_value_t = 5000)]
    pub commit_interval_ms: u64,
    #[arg(long, default_value_t = 100)]
    pub fetch_max_wait_ms: i32,
    /// Throughput interval.
    #[arg(long, default_value_t = 100)]
    pub bucket_ms: u64,
    /// Seconds of steady consumption before the join whose median is the reference rate.
    #[arg(long, default_value_t = 3.0)]
    pub steady_window: f64,
    /// Seconds the members may take to drain after the producer stops.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Group id (default: `odradek-bench-rebalance-<ms>`).
    #[arg(long)]
    pub group: Option<String>,
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RebalanceError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("setup: {0}")]
    Setup(#[from] ClientError),
    #[error("{0}")]
    Spec(String),
}

/// What a member tells the main thread, stamped with the run clock.
#[derive(Debug)]
enum Event {
    JoinSent {
        member: usize,
        t_us: u64,
    },
    Assigned {
        member: usize,
        generation: i32,
        leader: bool,
        partitions: Vec<i32>,
        t_us: u64,
    },
    /// The member learned of a rebalance (or lost its membership) and gave up its partitions.
    Revoked {
        member: usize,
        t_us: u64,
        why: String,
    },
}

/// Flags and counters the members share (atomics only).
struct Shared {
    join_now: AtomicBool,
    producer_done: AtomicBool,
    stop: AtomicBool,
    /// Member i has read every assigned partition to its high watermark after the producer
    /// finished (reset while it rebalances).
    drained: Vec<AtomicBool>,
    /// Records consumed per bucket of the run clock.
    buckets: Vec<AtomicU64>,
}

struct MemberCtx {
    spec: RebalanceSpec,
    group: String,
    layout: Rc<TopicLayout>,
    /// Earliest offset per partition (where a member starts without a committed offset).
    earliest: Vec<i64>,
    shared: Arc<Shared>,
    clock: Clock,
    events: mpsc::Sender<Event>,
    initial: usize,
}

#[derive(Debug, Default)]
struct MemberResult {
    consumed: Ranges,
    records: u64,
    generations: u64,
    /// JoinGroup/SyncGroup answered REBALANCE_IN_PROGRESS (rejoined at once).
    retries: u64,
    errors: BTreeMap<String, u64>,
}

impl MemberResult {
    fn error(&mut self, what: String) {
        *self.errors.entry(what).or_default() += 1;
    }
}

fn send(ctx: &MemberCtx, e: Event) {
    let _ = ctx.events.send(e);
}

/// Why the member leaves its fetch loop.
enum Exit {
    Rejoin,
    Stop,
}

async fn reconnect(ctx: &MemberCtx, old: &GroupMember) -> Option<GroupMember> {
    let timeouts = member_timeouts(&ctx.spec);
    loop {
        if ctx.shared.stop.load(Ordering::Relaxed) {
            return None;
        }
        if let Ok(mut g) = GroupMember::connect(&ctx.spec.bootstrap, &ctx.group, timeouts).await {
            g.member_id = old.member_id.clone();
            g.generation = old.generation;
            return Some(g);
        }
        glommio::timer::sleep(Duration::from_millis(200)).await;
    }
}

fn member_timeouts(s: &RebalanceSpec) -> MemberTimeouts {
    MemberTimeouts {
        session_ms: s.session_timeout_ms,
        rebalance_ms: s.rebalance_timeout_ms,
    }
}

/// One group member: join, consume the assignment, rejoin on a rebalance (eager: nothing is
/// fetched between learning of the rebalance and receiving the new assignment).
async fn run_member(i: usize, ctx: Rc<MemberCtx>) -> MemberResult {
    let mut res = MemberResult::default();
    let shared = &ctx.shared;
    let topic = ctx.layout.topic.clone();
    if i >= ctx.initial {
        while !shared.join_now.load(Ordering::Acquire) {
            if shared.stop.load(Ordering::Relaxed) {
                return res;
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut gm = loop {
        match GroupMember::connect(&ctx.spec.bootstrap, &ctx.group, member_timeouts(&ctx.spec))
            .await
        {
            Ok(g) => break g,
            Err(e) => {
                res.error(format!("find coordinator: {e}"));
                if shared.stop.load(Ordering::Relaxed) {
                    return res;
                }
                glommio::timer::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let counts: BTreeMap<String, i32> = [(topic.clone(), ctx.layout.partitions() as i32)].into();
    let topics = vec![topic.clone()];
    let mut fetchers: BTreeMap<String, Connection> = BTreeMap::new();
    while !shared.stop.load(Ordering::Relaxed) {
        shared.drained[i].store(false, Ordering::Release);
        let joined = gm
            .join_and_sync(&topics, &counts, || {
                send(
                    &ctx,
                    Event::JoinSent {
                        member: i,
                        t_us: ctx.clock.now_us(),
                    },
                )
            })
            .await;
        let joined = match joined {
            Ok(j) => j,
            Err(e) => {
                let conn = matches!(e, GroupError::Conn(_));
                if e.code() == Some(ErrorCode::REBALANCE_IN_PROGRESS) {
                    // The generation moved on before our SyncGroup: the ordinary way to learn
                    // of a further rebalance, not a failure.
                    res.retries += 1;
                } else {
                    res.error(format!("join: {e}"));
                }
                if conn {
                    match reconnect(&ctx, &gm).await {
                        Some(g) => gm = g,
                        None => break,
                    }
                }
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        res.generations += 1;
        let parts: Vec<i32> = joined.assignment.get(&topic).cloned().unwrap_or_default();
        send(
            &ctx,
            Event::Assigned {
                member: i,
                generation: joined.generation,
                leader: joined.leader,
                partitions: parts.clone(),
                t_us: ctx.clock.now_us(),
            },
        );
        match consume_assignment(&ctx, i, &mut gm, &parts, &mut fetchers, &mut res).await {
            Exit::Rejoin => continue,
            Exit::Stop => break,
        }
    }
    // Best effort: the run is over, the group's fate no longer matters.
    if gm.generation >= 0 && !gm.member_id.is_empty() {
        let _ = gm.leave().await;
    }
    res
}

/// Fetches `parts` from their committed offsets (or the earliest), heartbeating and committing
/// on the intervals, until a rebalance (commit, then rejoin) or the end of the run.
async fn consume_assignment(
    ctx: &MemberCtx,
    i: usize,
    gm: &mut GroupMember,
    parts: &[i32],
    fetchers: &mut BTreeMap<String, Connection>,
    res: &mut MemberResult,
) -> Exit {
    let shared = &ctx.shared;
    let topic = ctx.layout.topic.clone();
    let committed = match gm.committed(&topic, parts).await {
        Ok(c) => c,
        Err(e) => {
            res.error(format!("offset fetch: {e}"));
            glommio::timer::sleep(Duration::from_millis(100)).await;
            return Exit::Rejoin;
        }
    };
    let mut pos: BTreeMap<i32, i64> = parts
        .iter()
        .map(|&p| {
            let start = ctx.earliest.get(p as usize).copied().unwrap_or(0);
            (p, committed.get(&p).copied().flatten().unwrap_or(start))
        })
        .collect();
    let mut hw: BTreeMap<i32, i64> = BTreeMap::new();
    // Partitions grouped by leader, one fetch connection per leader.
    let mut by_leader: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for &p in parts {
        if let Some(l) = ctx.layout.leaders.get(p as usize) {
            by_leader.entry(l.clone()).or_default().push(p);
        }
    }
    let hb_us = ctx.spec.heartbeat_interval_ms * 1000;
    let commit_us = ctx.spec.commit_interval_ms * 1000;
    let bucket_us = ctx.spec.bucket_ms.max(1) * 1000;
    let mut next_hb = ctx.clock.now_us() + hb_us;
    let mut next_commit = ctx.clock.now_us() + commit_us;
    loop {
        let positions: Vec<(i32, i64)> = pos.iter().map(|(p, o)| (*p, *o)).collect();
        if shared.stop.load(Ordering::Relaxed) {
            if let Err(e) = gm.commit(&topic, &positions).await {
                res.error(format!("final commit: {e}"));
            }
            return Exit::Stop;
        }
        let now = ctx.clock.now_us();
        let mut group_err = None;
        if now >= next_hb {
            next_hb = now + hb_us;
            if let Err(e) = gm.heartbeat().await {
                group_err = Some(("heartbeat", e));
            }
        }
        if group_err.is_none() && now >= next_commit {
            next_commit = now + commit_us;
            if let Err(e) = gm.commit(&topic, &positions).await {
                group_err = Some(("commit", e));
            }
        }
        if let Some((what, e)) = group_err {
            shared.drained[i].store(false, Ordering::Release);
            match e.code() {
                Some(ErrorCode::REBALANCE_IN_PROGRESS) => {
                    // Eager revocation: commit what was read, then rejoin.
                    if let Err(e) = gm.commit(&topic, &positions).await {
                        res.error(format!("commit before rejoin: {e}"));
                    }
                }
                Some(ErrorCode::ILLEGAL_GENERATION | ErrorCode::UNKNOWN_MEMBER_ID) => {
                    // Out of the group: the positions cannot be committed any more.
                    res.error(format!("{what}: {e}"));
                    if e.code() == Some(ErrorCode::UNKNOWN_MEMBER_ID) {
                        gm.member_id.clear();
                    }
                }
                _ => {
                    res.error(format!("{what}: {e}"));
                    if matches!(e, GroupError::Conn(_)) {
                        match reconnect(ctx, gm).await {
                            Some(g) => *gm = g,
                            None => return Exit::Stop,
                        }
                    }
                }
            }
            send(
                ctx,
                Event::Revoked {
                    member: i,
                    t_us: ctx.clock.now_us(),
                    why: format!("{what}: {e}"),
                },
            );
            return Exit::Rejoin;
        }
        let done_before = shared.producer_done.load(Ordering::Acquire);
        if parts.is_empty() {
            shared.drained[i].store(done_before, Ordering::Release);
            let wait = ctx.spec.fetch_max_wait_ms.max(1) as u64;
            glommio::timer::sleep(Duration::from_millis(wait)).await;
            continue;
        }
        let mut fetch_failed = false;
        for (leader, lparts) in &by_leader {
            if !fetchers.contains_key(leader) {
                match Connection::connect(leader).await {
                    Ok(c) => {
                        fetchers.insert(leader.clone(), c);
                    }
                    Err(e) => {
                        res.error(format!("fetch connect: {e}"));
                        fetch_failed = true;
                        continue;
                    }
                }
            }
            let Some(conn) = fetchers.get_mut(leader) else {
                continue;
            };
            let req = FetchRequest {
                replica_id: -1,
                max_wait_ms: ctx.spec.fetch_max_wait_ms,
                min_bytes: 1,
                max_bytes: 50 << 20,
                isolation_level: 0,
                session_id: 0,
                session_epoch: -1,
                topics: vec![FetchTopic {
                    topic: topic.clone(),
                    partitions: lparts
                        .iter()
                        .map(|p| FetchPartition {
                            partition: *p,
                            fetch_offset: pos.get(p).copied().unwrap_or(0),
                            partition_max_bytes: 1 << 20,
                            ..Default::default()
                        })
                        .collect(),
                }],
                ..Default::default()
            };
            let resp = match conn.call(req).await {
                Ok(ResponseBody::Fetch(r)) => r,
                Ok(_) => {
                    res.error("fetch: unexpected response".into());
                    fetchers.remove(leader);
                    fetch_failed = true;
                    continue;
                }
                Err(e) => {
                    res.error(format!("fetch: {e}"));
                    fetchers.remove(leader);
                    fetch_failed = true;
                    continue;
                }
            };
            if resp.error_code != 0 {
                res.error(format!("fetch: {}", ErrorCode(resp.error_code)));
                fetch_failed = true;
                continue;
            }
            let mut n = 0u64;
            for t in &resp.responses {
                for pd in &t.partitions {
                    let p = pd.partition_index;
                    if pd.error_code != 0 {
                        res.error(format!("fetch: {}", ErrorCode(pd.error_code)));
                        fetch_failed = true;
                        continue;
                    }
                    hw.insert(p, pd.high_watermark);
                    let (Some(records), Some(from)) = (pd.record_bytes(), pos.get(&p).copied())
                    else {
                        continue;
                    };
                    let consumed = &mut res.consumed;
                    let walked = for_each_record(&records, |r| {
                        if r.offset >= from {
                            consumed.push(p, r.offset, r.offset + 1);
                            n += 1;
                        }
                    });
                    match walked {
                        Ok(Some(next)) => {
                            if let Some(o) = pos.get_mut(&p) {
                                *o = (*o).max(next);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            res.error(format!("fetch p{p}: {e}"));
                            fetch_failed = true;
                        }
                    }
                }
            }
            res.records += n;
            let b = (ctx.clock.now_us() / bucket_us) as usize;
            let last = shared.buckets.len().saturating_sub(1);
            if let Some(c) = shared.buckets.get(b.min(last)) {
                c.fetch_add(n, Ordering::Relaxed);
            }
        }
        let drained = done_before
            && !fetch_failed
            && pos.iter().all(|(p, o)| hw.get(p).is_some_and(|h| *o >= *h));
        shared.drained[i].store(drained, Ordering::Release);
        if fetch_failed {
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What an executor hands back.
#[derive(Default)]
struct CoreOut {
    members: Vec<(usize, MemberResult)>,
    acked: Ranges,
    produced: u64,
    produce_errors: BTreeMap<String, u64>,
}

/// The group as the main thread sees it from the events.
#[derive(Default)]
struct GroupView {
    /// Member -> (generation, partitions) of its current assignment (None while rejoining).
    holding: BTreeMap<usize, Option<(i32, Vec<i32>)>>,
}

/// Coverage of one generation's assignments.
#[derive(Debug, Clone, Default, Serialize)]
struct Coverage {
    generation: i32,
    members: usize,
    missing: Vec<i32>,
    overlapping: Vec<i32>,
    /// Partitions per member, sorted by member index.
    per_member: Vec<usize>,
}

impl Coverage {
    fn ok(&self) -> bool {
        self.missing.is_empty() && self.overlapping.is_empty()
    }
}

impl GroupView {
    /// If the `members` all hold an assignment of one generation, its coverage.
    fn settled(&self, members: usize, partitions: usize) -> Option<Coverage> {
        let mut generation = None;
        let mut seen = vec![0u32; partitions];
        let mut per_member = Vec::new();
        for m in 0..members {
            let (g, parts) = self.holding.get(&m)?.as_ref()?;
            if *generation.get_or_insert(*g) != *g {
                return None;
            }
            per_member.push(parts.len());
            for &p in parts {
                if let Some(s) = seen.get_mut(p as usize) {
                    *s += 1;
                }
            }
        }
        Some(Coverage {
            generation: generation?,
            members,
            missing: (0..partitions as i32)
                .filter(|&p| seen[p as usize] == 0)
                .collect(),
            overlapping: (0..partitions as i32)
                .filter(|&p| seen[p as usize] > 1)
                .collect(),
            per_member,
        })
    }
}

/// The rebalance's timeline as the main thread recorded it.
#[derive(Debug, Default, Clone, Serialize)]
struct Timeline {
    initial_stable_us: Option<u64>,
    initial: Option<Coverage>,
    join_us: Option<u64>,
    /// Last JoinGroup of an old member after the join.
    last_rejoin_us: Option<u64>,
    stable_us: Option<u64>,
    last: Option<Coverage>,
    /// Generations handed out from the join to stabilisation (1 if one rebalance sufficed).
    generations_during: u32,
    revocations: Vec<(usize, u64, String)>,
}

pub fn run_rebalance(spec: RebalanceSpec) -> Result<bool, RebalanceError> {
    if spec.consumers == 0 || spec.partitions == 0 {
        return Err(RebalanceError::Spec(
            "--consumers and --partitions must be at least 1".into(),
        ));
    }
    if spec.record_size < crate::client::batch::PAYLOAD_HEADER_LEN {
        return Err(RebalanceError::Spec(format!(
            "--record-size {} is below the 24-byte payload header",
            spec.record_size
        )));
    }
    let cores = crate::workload::parse_cores(&spec.cores).map_err(RunError::from)?;
    let ncores = cores.count();
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let topic = spec
        .topic
        .clone()
        .unwrap_or_else(|| format!("rebalance-{ms}"));
    let group = spec
        .group
        .clone()
        .unwrap_or_else(|| format!("odradek-bench-rebalance-{ms}"));

    // Prefill (creates the topic), else create it.
    let mut acked = Ranges::default();
    let mut produced = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    if spec.prefill_records > 0 {
        let load = LoadSpec {
            bootstrap: spec.bootstrap.clone(),
            topic: Some(topic.clone()),
            partitions: spec.partitions,
            record_size: spec.record_size,
            records: Some(spec.prefill_records),
            cores: spec.cores.clone(),
            ..LoadSpec::default()
        };
        let o = run::run(RunPlan::prefill(load))?;
        println!(
            "prefill: {} records acknowledged of {}",
            o.acked, spec.prefill_records
        );
        produced += o.acked;
        acked.merge(o.acked_ranges.clone());
        for (k, v) in &o.errors_by_kind {
            *errors.entry(format!("prefill: {k}")).or_default() += v;
        }
    }
    let (bs, t2, np) = (spec.bootstrap.clone(), topic.clone(), spec.partitions);
    let (layout, earliest) = run::admin(move || async move {
        let layout = ensure_topic(&bs, &t2, np, true).await?;
        let earliest = list_offsets(&layout, -2).await?;
        Ok::<_, ClientError>((layout, earliest))
    })??;
    println!(
        "topic {topic} ({} partitions), group {group}: {} members, then 1 joins after {} s; producer {} rec/s of {} bytes for {} s",
        layout.partitions(),
        spec.consumers,
        spec.join_after,
        spec.rate,
        spec.record_size,
        spec.duration
    );

    let members = spec.consumers + 1;
    let bucket_us = spec.bucket_ms.max(1) * 1000;
    let horizon_us = ((spec.duration + spec.drain_timeout + 30.0) * 1e6) as u64;
    let shared = Arc::new(Shared {
        join_now: AtomicBool::new(false),
        producer_done: AtomicBool::new(spec.rate <= 0.0),
        stop: AtomicBool::new(false),
        drained: (0..members).map(|_| AtomicBool::new(false)).collect(),
        buckets: (0..horizon_us / bucket_us + 1)
            .map(|_| AtomicU64::new(0))
            .collect(),
    });
    let clock = Clock::new();
    let (tx, rx) = mpsc::channel::<Event>();
    let mut handles = Vec::new();
    for core in 0..ncores {
        let placement = match &cores {
            Cores::Pinned(v) => Placement::Fixed(v[core]),
            Cores::Unpinned(_) => Placement::Unbound,
        };
        let spec = spec.clone();
        let group = group.clone();
        let layout = layout.clone();
        let earliest = earliest.clone();
        let shared = shared.clone();
        let tx = tx.clone();
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("bench-{core}"))
            .io_memory(1 << 20)
            .spawn(move || async move {
                core_main(
                    core, ncores, spec, group, layout, earliest, shared, clock, tx,
                )
                .await
            })
            .map_err(|e| RunError::Executor {
                core,
                detail: e.to_string(),
            })?;
        handles.push(h);
    }
    drop(tx);

    // Watch the group: start the joiner once the initial group is stable, end the run once
    // everyone drained after the producer (or at the deadline).
    let initial = spec.consumers;
    let join_after_us = (spec.join_after * 1e6) as u64;
    let produce_end_us = if spec.rate > 0.0 {
        (spec.duration * 1e6) as u64
    } else {
        0
    };
    let deadline_us = produce_end_us.max(join_after_us) + (spec.drain_timeout * 1e6) as u64;
    let mut view = GroupView::default();
    let mut tl = Timeline::default();
    let mut join_set = false;
    let mut timed_out = false;
    let mut gen_before = i32::MIN;
    let mut generations_during: BTreeSet<i32> = BTreeSet::new();
    let mut last_progress_s = 0;
    loop {
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(ev) => match ev {
                Event::JoinSent { member, t_us } => {
                    view.holding.insert(member, None);
                    if member == initial && tl.join_us.is_none() {
                        tl.join_us = Some(t_us);
                    } else if member < initial && tl.join_us.is_some() && tl.stable_us.is_none() {
                        tl.last_rejoin_us = Some(t_us);
                    }
                }
                Event::Assigned {
                    member,
                    generation,
                    leader,
                    partitions,
                    t_us,
                } => {
                    if !spec.quiet {
                        println!(
                            "[{:>7.3}s] member {member} generation {generation}{}: {} partitions",
                            t_us as f64 / 1e6,
                            if leader { " (leader)" } else { "" },
                            partitions.len()
                        );
                    }
                    view.holding.insert(member, Some((generation, partitions)));
                    if tl.join_us.is_none() && tl.initial_stable_us.is_none() {
                        if let Some(c) = view.settled(initial, layout.partitions()) {
                            if c.ok() {
                                tl.initial_stable_us = Some(t_us);
                                gen_before = c.generation;
                                tl.initial = Some(c);
                            }
                        }
                    }
                    if tl.join_us.is_some() && tl.stable_us.is_none() {
                        generations_during.insert(generation);
                        if let Some(c) = view.settled(members, layout.partitions()) {
                            if c.generation > gen_before {
                                tl.stable_us = Some(t_us);
                                tl.generations_during = generations_during.len() as u32;
                                tl.last = Some(c);
                            }
                        }
                    }
                }
                Event::Revoked { member, t_us, why } => {
                    view.holding.insert(member, None);
                    if tl.revocations.len() < 64 {
                        tl.revocations.push((member, t_us, why));
                    }
                }
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = clock.now_us();
        if !spec.quiet && now / 1_000_000 > last_progress_s {
            last_progress_s = now / 1_000_000;
            let b = &shared.buckets;
            let per_s = bucket_us.max(1);
            let from = ((last_progress_s - 1) * 1_000_000 / per_s) as usize;
            let to = (last_progress_s * 1_000_000 / per_s) as usize;
            let n: u64 = b[from.min(b.len())..to.min(b.len())]
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum();
            println!("[{last_progress_s:>4}s] consume {} rec/s", run::fmt_int(n));
        }
        if !join_set
            && tl
                .initial_stable_us
                .is_some_and(|s| now >= join_after_us.max(s + 1_000_000))
        {
            shared.join_now.store(true, Ordering::Release);
            join_set = true;
        }
        let all_drained = shared.drained.iter().all(|d| d.load(Ordering::Acquire));
        if !shared.stop.load(Ordering::Relaxed)
            && ((shared.producer_done.load(Ordering::Acquire)
                && tl.stable_us.is_some()
                && all_drained)
                || now > deadline_us
                || run::STOP.load(Ordering::Relaxed))
        {
            timed_out = now > deadline_us;
            shared.stop.store(true, Ordering::Release);
        }
    }
    let elapsed_s = clock.start.elapsed().as_secs_f64();
    let mut results: Vec<(usize, MemberResult)> = Vec::new();
    for (core, h) in handles.into_iter().enumerate() {
        let o = h.join().map_err(|e| RunError::Executor {
            core,
            detail: e.to_string(),
        })?;
        results.extend(o.members);
        acked.merge(o.acked);
        produced += o.produced;
        for (k, v) in o.produce_errors {
            *errors.entry(format!("produce: {k}")).or_default() += v;
        }
    }
    results.sort_by_key(|(i, _)| *i);
    let mut consumed = Ranges::default();
    let mut records = 0;
    let mut sync_retries = 0;
    for (i, r) in &results {
        consumed.merge(r.consumed.clone());
        records += r.records;
        sync_retries += r.retries;
        for (k, v) in &r.errors {
            *errors.entry(format!("member {i}: {k}")).or_default() += v;
        }
    }
    let acc = reconcile(&acked, &consumed, 0);
    let buckets: Vec<u64> = shared
        .buckets
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let summary = Summary {
        spec: &spec,
        topic: &topic,
        group: &group,
        tl: &tl,
        buckets: &buckets,
        bucket_us,
        produce_end_us,
        produced,
        consumed_records: records,
        sync_retries,
        acc: &acc,
        errors: &errors,
        timed_out,
        elapsed_s,
    };
    print!("{}", summary.text());
    let v = summary.json();
    if let Some(p) = &spec.json {
        crate::report::write_json(p, &v).map_err(|e| RebalanceError::Spec(e.to_string()))?;
    }
    Ok(summary.ok())
}

#[allow(clippy::too_many_arguments)]
async fn core_main(
    core: usize,
    ncores: usize,
    spec: RebalanceSpec,
    group: String,
    layout: TopicLayout,
    earliest: Vec<i64>,
    shared: Arc<Shared>,
    clock: Clock,
    events: mpsc::Sender<Event>,
) -> CoreOut {
    let mut out = CoreOut::default();
    let layout = Rc::new(layout);
    let producer = if core == 0 && spec.rate > 0.0 {
        let probe = Rc::new(RefCell::new(CoreProbe::default()));
        let pspec = Rc::new(ProducerSpec {
            record_size: spec.record_size,
            keys: 0,
            acks: -1,
            compression: Compression::None,
            linger_us: 1000,
            batch_bytes: 128 << 10,
            max_in_flight: 5,
            max_request_bytes: 1 << 20,
            ready_batches_max: 256,
            idempotent: false,
            transaction: None,
            rate: Some(spec.rate),
            records: None,
            end_us: Some((spec.duration * 1e6) as u64),
            start_us: LOAD_START_US,
        });
        let pool = Rc::new(PayloadPool::new(1.0, spec.record_size, 17));
        let p = Producer::new(0, pspec, layout.clone(), probe.clone(), pool, clock);
        let shared = shared.clone();
        Some(glommio::spawn_local(async move {
            let now = clock.now_us();
            if now < LOAD_START_US {
                glommio::timer::sleep(Duration::from_micros(LOAD_START_US - now)).await;
            }
            let r = p.run().await;
            shared.producer_done.store(true, Ordering::Release);
            let mut probe = probe.borrow_mut();
            let errors = std::mem::take(&mut probe.errors_by_kind);
            let acked = probe.acked_offsets.take_ranges();
            (r, errors, acked)
        }))
    } else {
        None
    };
    let ctx = Rc::new(MemberCtx {
        initial: spec.consumers,
        spec,
        group,
        layout,
        earliest,
        shared,
        clock,
        events,
    });
    let mut tasks = Vec::new();
    for i in (0..=ctx.spec.consumers).filter(|i| i % ncores == core) {
        let ctx = ctx.clone();
        tasks.push((i, glommio::spawn_local(run_member(i, ctx))));
    }
    for (i, t) in tasks {
        out.members.push((i, t.await));
    }
    if let Some(p) = producer {
        let (r, errors, acked) = p.await;
        out.acked = acked;
        out.produced = r.acked;
        out.produce_errors = errors;
    }
    out
}

/// The figures of a finished run.
struct Summary<'a> {
    spec: &'a RebalanceSpec,
    topic: &'a str,
    group: &'a str,
    tl: &'a Timeline,
    buckets: &'a [u64],
    bucket_us: u64,
    produce_end_us: u64,
    produced: u64,
    consumed_records: u64,
    sync_retries: u64,
    acc: &'a Reconciliation,
    errors: &'a BTreeMap<String, u64>,
    timed_out: bool,
    elapsed_s: f64,
}

/// Consumption figures around the rebalance, records/s.
#[derive(Debug, Default, Serialize)]
struct Dip {
    steady_before_records_per_s: f64,
    steady_window_buckets: usize,
    min_during_records_per_s: f64,
    mean_during_records_per_s: f64,
    during_buckets: usize,
    /// 1 - min during / steady before.
    dip_fraction: f64,
    median_after_records_per_s: f64,
    /// Records the group fell behind the steady rate during the rebalance.
    deficit_records: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Summary<'_> {
    fn rate(&self, b: usize) -> f64 {
        self.buckets.get(b).copied().unwrap_or(0) as f64 * 1e6 / self.bucket_us as f64
    }

    /// Buckets [from, to) of the run clock, whole buckets only.
    fn bucket_range(&self, from_us: u64, to_us: u64) -> std::ops::Range<usize> {
        let a = from_us.div_ceil(self.bucket_us) as usize;
        let b = (to_us / self.bucket_us) as usize;
        a..b.max(a)
    }

    fn dip(&self) -> Option<Dip> {
        let (join, stable) = (self.tl.join_us?, self.tl.stable_us?);
        let initial = self.tl.initial_stable_us.unwrap_or(0);
        let window = (self.spec.steady_window * 1e6) as u64;
        let before = self.bucket_range(join.saturating_sub(window).max(initial), join);
        let steady = median(before.clone().map(|b| self.rate(b)).collect());
        // Every bucket the rebalance touches, partial ones included.
        let first = (join / self.bucket_us) as usize;
        let last = (stable / self.bucket_us) as usize;
        let during: Vec<f64> = (first..=last).map(|b| self.rate(b)).collect();
        let min = during.iter().copied().fold(f64::INFINITY, f64::min);
        let mean = during.iter().sum::<f64>() / during.len().max(1) as f64;
        let after_end = if self.produce_end_us > stable {
            self.produce_end_us.min(stable + window)
        } else {
            stable + window
        };
        let after = median(
            self.bucket_range(stable, after_end)
                .map(|b| self.rate(b))
                .collect(),
        );
        let deficit: f64 = during
            .iter()
            .map(|r| (steady - r).max(0.0) * self.bucket_us as f64 / 1e6)
            .sum();
        Some(Dip {
            steady_before_records_per_s: steady,
            steady_window_buckets: before.len(),
            min_during_records_per_s: min,
            mean_during_records_per_s: mean,
            during_buckets: during.len(),
            dip_fraction: if steady > 0.0 {
                1.0 - min / steady
            } else {
                0.0
            },
            median_after_records_per_s: after,
            deficit_records: deficit,
        })
    }

    fn stabilisation_ms(&self) -> Option<f64> {
        Some((self.tl.stable_us? - self.tl.join_us?) as f64 / 1e3)
    }

    fn coverage_ok(&self) -> bool {
        self.tl.initial.as_ref().is_some_and(Coverage::ok)
            && self.tl.last.as_ref().is_some_and(Coverage::ok)
    }

    fn ok(&self) -> bool {
        self.tl.stable_us.is_some() && self.coverage_ok() && self.acc.lost == 0 && !self.timed_out
    }

    fn text(&self) -> String {
        let ms =
            |us: Option<u64>| us.map_or("-".to_string(), |u| format!("{:.3} s", u as f64 / 1e6));
        let mut s = format!(
            "topic {}, group {}, {:.1} s\ninitial group stable at {} (generation {}), joiner's first JoinGroup at {}, stable again at {} (generation {})\n",
            self.topic,
            self.group,
            self.elapsed_s,
            ms(self.tl.initial_stable_us),
            self.tl.initial.as_ref().map_or(-1, |c| c.generation),
            ms(self.tl.join_us),
            ms(self.tl.stable_us),
            self.tl.last.as_ref().map_or(-1, |c| c.generation),
        );
        match (self.stabilisation_ms(), self.tl.last_rejoin_us, self.tl.join_us, self.tl.stable_us) {
            (Some(st), Some(r), Some(j), Some(e)) => s.push_str(&format!(
                "stabilisation: {st:.1} ms = notice {:.1} ms (until the last old member rejoined) + coordinator {:.1} ms (until the last assignment arrived); {} generation(s)\n",
                (r.saturating_sub(j)) as f64 / 1e3,
                (e.saturating_sub(r)) as f64 / 1e3,
                self.tl.generations_during
            )),
            (Some(st), ..) => s.push_str(&format!("stabilisation: {st:.1} ms\n")),
            _ => s.push_str("stabilisation: the group did not stabilise after the join\n"),
        }
        if let Some(d) = self.dip() {
            s.push_str(&format!(
                "consume ({} ms intervals): steady before {} rec/s (median of {}), during the rebalance min {} rec/s, mean {} rec/s over {} intervals (dip {:.0}%), after {} rec/s; {} records behind\n",
                self.bucket_us / 1000,
                run::fmt_int(d.steady_before_records_per_s as u64),
                d.steady_window_buckets,
                run::fmt_int(d.min_during_records_per_s as u64),
                run::fmt_int(d.mean_during_records_per_s as u64),
                d.during_buckets,
                d.dip_fraction * 100.0,
                run::fmt_int(d.median_after_records_per_s as u64),
                run::fmt_int(d.deficit_records as u64),
            ));
        }
        for (name, c) in [("initial", &self.tl.initial), ("final", &self.tl.last)] {
            match c {
                Some(c) => s.push_str(&format!(
                    "coverage {name} (generation {}, {} members, partitions per member {:?}): missing {:?}, overlapping {:?}\n",
                    c.generation, c.members, c.per_member, c.missing, c.overlapping
                )),
                None => s.push_str(&format!("coverage {name}: no settled generation\n")),
            }
        }
        s.push_str(&format!(
            "produced {}, consumed {} records; {}\n",
            run::fmt_int(self.produced),
            run::fmt_int(self.consumed_records),
            self.acc.line()
        ));
        s.push_str(&format!(
            "joins answered REBALANCE_IN_PROGRESS (rejoined): {}\n",
            self.sync_retries
        ));
        if self.timed_out {
            s.push_str("the run hit its deadline before every member drained\n");
        }
        if self.errors.is_empty() {
            s.push_str("errors: none\n");
        }
        for (k, v) in self.errors {
            s.push_str(&format!("error: {k}: {v}\n"));
        }
        s
    }

    fn json(&self) -> Value {
        let bucket_s = self.bucket_us as f64 / 1e6;
        let series: Vec<f64> = self
            .buckets
            .iter()
            .take(((self.elapsed_s / bucket_s).ceil() as usize).min(self.buckets.len()))
            .map(|n| *n as f64 / bucket_s)
            .collect();
        json!({
            "name": "rebalance",
            "date": crate::report::utc_now(),
            "machine": crate::report::machine(),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "config": self.spec,
            "topic": self.topic,
            "group": self.group,
            "elapsed_s": self.elapsed_s,
            "ok": self.ok(),
            "stabilisation_ms": self.stabilisation_ms(),
            "notice_ms": match (self.tl.join_us, self.tl.last_rejoin_us) {
                (Some(j), Some(r)) => Some(r.saturating_sub(j) as f64 / 1e3),
                _ => None,
            },
            "coordinator_ms": match (self.tl.last_rejoin_us, self.tl.stable_us) {
                (Some(r), Some(e)) => Some(e.saturating_sub(r) as f64 / 1e3),
                _ => None,
            },
            "timeline": self.tl,
            "consume": self.dip(),
            "consume_series_records_per_s": series,
            "bucket_ms": self.bucket_us / 1000,
            "coverage_ok": self.coverage_ok(),
            "produced": self.produced,
            "consumed_records": self.consumed_records,
            "joins_answered_rebalance_in_progress": self.sync_retries,
            "accounting": self.acc,
            "timed_out": self.timed_out,
            "errors": self.errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_view_needs_one_generation_and_reports_gaps_and_overlaps() {
        let mut v = GroupView::default();
        v.holding.insert(0, Some((3, vec![0, 1])));
        v.holding.insert(1, Some((3, vec![2, 3])));
        let c = v.settled(2, 4).unwrap();
        assert!(c.ok());
        assert_eq!(c.per_member, vec![2, 2]);
        v.holding.insert(1, Some((4, vec![1, 2])));
        assert!(v.settled(2, 4).is_none(), "two generations are not settled");
        v.holding.insert(0, Some((4, vec![0, 1])));
        let c = v.settled(2, 4).unwrap();
        assert_eq!(c.missing, vec![3]);
        assert_eq!(c.overlapping, vec![1]);
        v.holding.insert(0, None);
        assert!(
            v.settled(2, 4).is_none(),
            "a rejoining member holds nothing"
        );
        assert!(v.settled(3, 4).is_none(), "a member not seen yet");
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
