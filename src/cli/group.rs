//! Consumer groups: `odradek group list|describe|delete|reset-offsets`
//! (`kafka-consumer-groups.sh`), and [`Member`], the classic-protocol group member
//! `odradek consume --group` runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use clap::{ArgGroup, Args, Subcommand};

use crate::protocol::api::ApiKey;
use crate::protocol::consumer_protocol::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription, range_assign,
};
use crate::protocol::{
    DeleteGroupsRequest, DescribeGroupsRequest, ErrorCode, HeartbeatRequest, JoinGroupRequest,
    JoinGroupRequestProtocol, LeaveGroupRequest, ListGroupsRequest, MemberIdentity,
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    OffsetFetchRequest, OffsetFetchRequestTopic, ResponseBody, SyncGroupRequest,
    SyncGroupRequestAssignment,
};

use super::client::{Cluster, TopicInfo, EARLIEST, LATEST};
use super::consume::Positions;
use super::output::{self, Cell, Table};
use super::{CliError, Common, Context};

const PROTOCOL_TYPE: &str = "consumer";
const ASSIGNOR: &str = "range";

/// A member of a classic consumer group reading one topic.
pub struct Member {
    group: String,
    topic: String,
    member_id: String,
    instance_id: Option<String>,
    generation: i32,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    heartbeat_interval: Duration,
    auto_commit: Option<Duration>,
    last_heartbeat: Instant,
    last_commit: Instant,
    /// Partitions of `topic` assigned in the current generation.
    pub assigned: Vec<i32>,
    /// What was last committed, so unchanged positions are not committed again.
    committed: Positions,
}

fn retriable_coordinator_error(code: ErrorCode) -> bool {
    code == ErrorCode::COORDINATOR_NOT_AVAILABLE
        || code == ErrorCode::NOT_COORDINATOR
        || code == ErrorCode::COORDINATOR_LOAD_IN_PROGRESS
}

impl Member {
    /// Joins `group` subscribed to `topic` and waits for an assignment.
    pub fn join(ctx: &mut Context, group: &str, topic: &str) -> Result<Member, CliError> {
        let session_timeout_ms: i32 = ctx.props.num("session.timeout.ms")?.unwrap_or(10_000);
        let rebalance_timeout_ms: i32 = ctx.props.num("max.poll.interval.ms")?.unwrap_or(30_000);
        let heartbeat_ms: u64 = ctx
            .props
            .num("heartbeat.interval.ms")?
            .unwrap_or((session_timeout_ms / 3).max(100) as u64);
        let auto_commit = match ctx.props.get("enable.auto.commit") {
            Some("false") => None,
            _ => Some(Duration::from_millis(
                ctx.props.num("auto.commit.interval.ms")?.unwrap_or(5000),
            )),
        };
        let mut m = Member {
            group: group.to_string(),
            topic: topic.to_string(),
            member_id: String::new(),
            instance_id: ctx.props.get("group.instance.id").map(str::to_string),
            generation: -1,
            session_timeout_ms,
            rebalance_timeout_ms,
            heartbeat_interval: Duration::from_millis(heartbeat_ms),
            auto_commit,
            last_heartbeat: Instant::now(),
            last_commit: Instant::now(),
            assigned: Vec::new(),
            committed: Positions::new(),
        };
        m.rejoin(&mut ctx.cluster)?;
        Ok(m)
    }

    /// JoinGroup (with the member-id round trip of KIP-394) and SyncGroup until an assignment
    /// arrives; the leader computes the range assignment.
    fn rejoin(&mut self, cluster: &mut Cluster) -> Result<(), CliError> {
        let deadline = Instant::now()
            + Duration::from_millis(self.rebalance_timeout_ms as u64)
            + cluster.config.request_timeout;
        let subscription = encode_subscription(std::slice::from_ref(&self.topic));
        // A JoinGroup waits at the coordinator until every member has joined.
        let wait = Duration::from_millis(self.rebalance_timeout_ms as u64 + 5000);
        loop {
            if Instant::now() >= deadline {
                return Err(CliError::Failed(format!(
                    "could not join group {} within {} ms",
                    self.group, self.rebalance_timeout_ms
                )));
            }
            let req = JoinGroupRequest {
                group_id: self.group.clone(),
                session_timeout_ms: self.session_timeout_ms,
                rebalance_timeout_ms: self.rebalance_timeout_ms,
                member_id: self.member_id.clone(),
                group_instance_id: self.instance_id.clone(),
                protocol_type: PROTOCOL_TYPE.into(),
                protocols: vec![JoinGroupRequestProtocol {
                    name: ASSIGNOR.into(),
                    metadata: subscription.clone(),
                }],
                reason: None,
            };
            let request_timeout = cluster.config.request_timeout;
            let conn = cluster.coordinator(&self.group, 0)?;
            conn.set_timeout(wait)?;
            let resp = conn.call(req.into());
            conn.set_timeout(request_timeout)?;
            let ResponseBody::JoinGroup(r) = resp? else {
                return Err(CliError::Unexpected(ApiKey::JoinGroup));
            };
            match ErrorCode(r.error_code) {
                ErrorCode::NONE => {}
                ErrorCode::MEMBER_ID_REQUIRED => {
                    self.member_id = r.member_id;
                    continue;
                }
                ErrorCode::UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    continue;
                }
                ErrorCode::REBALANCE_IN_PROGRESS => continue,
                c if retriable_coordinator_error(c) => {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                _ => {
                    return Err(CliError::kafka(
                        &format!("joining group {}", self.group),
                        r.error_code,
                        None,
                    ))
                }
            }
            self.member_id = r.member_id.clone();
            self.generation = r.generation_id;
            let mut assignments = Vec::new();
            if r.leader == r.member_id {
                let mut subs = Vec::new();
                let mut topics = BTreeSet::new();
                for m in &r.members {
                    let t = decode_subscription(&m.metadata)
                        .map_err(|e| CliError::Protocol(e.to_string()))?;
                    topics.extend(t.iter().cloned());
                    subs.push((m.member_id.clone(), t));
                }
                let mut counts = BTreeMap::new();
                for t in topics {
                    match cluster.topic(&t) {
                        Ok(info) => {
                            counts.insert(t, info.partitions.len() as i32);
                        }
                        // Another member's topic that does not exist: nothing to assign.
                        Err(CliError::UnknownTopic(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                for (member, a) in range_assign(&subs, &counts) {
                    assignments.push(SyncGroupRequestAssignment {
                        member_id: member,
                        assignment: encode_assignment(&a),
                    });
                }
            }
            let req = SyncGroupRequest {
                group_id: self.group.clone(),
                generation_id: self.generation,
                member_id: self.member_id.clone(),
                group_instance_id: self.instance_id.clone(),
                protocol_type: Some(PROTOCOL_TYPE.into()),
                protocol_name: r.protocol_name.clone(),
                assignments,
            };
            let conn = cluster.coordinator(&self.group, 0)?;
            conn.set_timeout(wait)?;
            let resp = conn.call(req.into());
            conn.set_timeout(request_timeout)?;
            let ResponseBody::SyncGroup(s) = resp? else {
                return Err(CliError::Unexpected(ApiKey::SyncGroup));
            };
            match ErrorCode(s.error_code) {
                ErrorCode::NONE => {}
                ErrorCode::REBALANCE_IN_PROGRESS | ErrorCode::ILLEGAL_GENERATION => continue,
                ErrorCode::UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    continue;
                }
                c if retriable_coordinator_error(c) => continue,
                _ => {
                    return Err(CliError::kafka(
                        &format!("syncing group {}", self.group),
                        s.error_code,
                        None,
                    ))
                }
            }
            let a =
                decode_assignment(&s.assignment).map_err(|e| CliError::Protocol(e.to_string()))?;
            self.assigned = a.get(&self.topic).cloned().unwrap_or_default();
            self.assigned.sort_unstable();
            self.last_heartbeat = Instant::now();
            return Ok(());
        }
    }

    /// Where each assigned partition starts: the committed offset, else `reset`.
    pub fn start_positions(
        &self,
        ctx: &mut Context,
        topic: &TopicInfo,
        reset: i64,
    ) -> Result<Positions, CliError> {
        let committed =
            fetch_committed(&mut ctx.cluster, &self.group, &self.topic, &self.assigned)?;
        let missing: Vec<i32> = self
            .assigned
            .iter()
            .filter(|p| committed.get(p).is_none_or(|o| *o < 0))
            .copied()
            .collect();
        let reset_to = if missing.is_empty() {
            BTreeMap::new()
        } else {
            ctx.cluster.list_offsets(topic, &missing, reset)?
        };
        Ok(self
            .assigned
            .iter()
            .map(|p| {
                let o = committed
                    .get(p)
                    .copied()
                    .filter(|o| *o >= 0)
                    .or_else(|| reset_to.get(p).copied())
                    .unwrap_or(0);
                (*p, o)
            })
            .collect())
    }

    /// Heartbeats and auto-commits when due. When the group rebalances, commits `positions`,
    /// rejoins, and returns the new positions (`None`: the assignment stands).
    pub fn poll(
        &mut self,
        ctx: &mut Context,
        topic: &TopicInfo,
        positions: &Positions,
        reset: i64,
    ) -> Result<Option<Positions>, CliError> {
        if self
            .auto_commit
            .is_some_and(|every| self.last_commit.elapsed() >= every)
        {
            self.commit(ctx, positions)?;
        }
        if self.last_heartbeat.elapsed() < self.heartbeat_interval {
            return Ok(None);
        }
        let req = HeartbeatRequest {
            group_id: self.group.clone(),
            generation_id: self.generation,
            member_id: self.member_id.clone(),
            group_instance_id: self.instance_id.clone(),
        };
        let ResponseBody::Heartbeat(r) =
            ctx.cluster.coordinator(&self.group, 0)?.call(req.into())?
        else {
            return Err(CliError::Unexpected(ApiKey::Heartbeat));
        };
        self.last_heartbeat = Instant::now();
        match ErrorCode(r.error_code) {
            ErrorCode::NONE => Ok(None),
            ErrorCode::REBALANCE_IN_PROGRESS => {
                // Eager protocol: commit what was consumed, give everything up, rejoin.
                if self.auto_commits() {
                    self.commit(ctx, positions)?;
                }
                self.rejoin(&mut ctx.cluster)?;
                Ok(Some(self.start_positions(ctx, topic, reset)?))
            }
            ErrorCode::UNKNOWN_MEMBER_ID
            | ErrorCode::ILLEGAL_GENERATION
            | ErrorCode::FENCED_INSTANCE_ID => {
                // Dropped from the group (e.g. stalled past the session timeout): what was
                // consumed since the last commit may be read again by the new owner.
                if ErrorCode(r.error_code) == ErrorCode::UNKNOWN_MEMBER_ID {
                    self.member_id.clear();
                }
                self.rejoin(&mut ctx.cluster)?;
                Ok(Some(self.start_positions(ctx, topic, reset)?))
            }
            c if retriable_coordinator_error(c) => Ok(None),
            _ => Err(CliError::kafka(
                &format!("heartbeat to group {}", self.group),
                r.error_code,
                None,
            )),
        }
    }

    /// Whether positions are committed (every `auto.commit.interval.ms` and on exit), as with
    /// Kafka's `enable.auto.commit` (default true).
    pub fn auto_commits(&self) -> bool {
        self.auto_commit.is_some()
    }

    /// Commits the positions of the assigned partitions that moved since the last commit.
    pub fn commit(&mut self, ctx: &mut Context, positions: &Positions) -> Result<(), CliError> {
        self.last_commit = Instant::now();
        let changed: Vec<(i32, i64)> = positions
            .iter()
            .filter(|(p, o)| self.assigned.contains(p) && self.committed.get(p) != Some(o))
            .map(|(p, o)| (*p, *o))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let result = commit_offsets(
            &mut ctx.cluster,
            &self.group,
            self.generation,
            &self.member_id,
            self.instance_id.clone(),
            &self.topic,
            &changed,
        );
        match result {
            Ok(()) => {
                self.committed.extend(changed);
                Ok(())
            }
            // A rebalance started: the next heartbeat rejoins; this commit is lost, as in
            // Kafka's eager protocol when the generation moved on.
            Err(CliError::Kafka { code, .. })
                if code == ErrorCode::REBALANCE_IN_PROGRESS
                    || code == ErrorCode::ILLEGAL_GENERATION =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Leaves the group so its partitions move at once (not after the session timeout).
    pub fn leave(&mut self, ctx: &mut Context) -> Result<(), CliError> {
        if self.member_id.is_empty() || self.instance_id.is_some() {
            // Static members stay, as Kafka's do on close.
            return Ok(());
        }
        let req = LeaveGroupRequest {
            group_id: self.group.clone(),
            member_id: String::new(),
            members: vec![MemberIdentity {
                member_id: self.member_id.clone(),
                group_instance_id: None,
                reason: Some("the odradek consume command is exiting".into()),
            }],
        };
        let ResponseBody::LeaveGroup(r) =
            ctx.cluster.coordinator(&self.group, 0)?.call(req.into())?
        else {
            return Err(CliError::Unexpected(ApiKey::LeaveGroup));
        };
        if r.error_code != 0 && ErrorCode(r.error_code) != ErrorCode::UNKNOWN_MEMBER_ID {
            return Err(CliError::kafka(
                &format!("leaving group {}", self.group),
                r.error_code,
                None,
            ));
        }
        Ok(())
    }
}

/// OffsetCommit of `offsets` of `topic` for `group` (generation -1 and an empty member id
/// commit as an admin, which the coordinator accepts only while the group has no members).
pub fn commit_offsets(
    cluster: &mut Cluster,
    group: &str,
    generation: i32,
    member_id: &str,
    instance_id: Option<String>,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Result<(), CliError> {
    let req = OffsetCommitRequest {
        group_id: group.to_string(),
        generation_id_or_member_epoch: generation,
        member_id: member_id.to_string(),
        group_instance_id: instance_id,
        retention_time_ms: -1,
        topics: vec![OffsetCommitRequestTopic {
            name: topic.to_string(),
            partitions: offsets
                .iter()
                .map(|(p, o)| OffsetCommitRequestPartition {
                    partition_index: *p,
                    committed_offset: *o,
                    committed_leader_epoch: -1,
                    committed_metadata: Some(String::new()),
                })
                .collect(),
        }],
    };
    let ResponseBody::OffsetCommit(r) = cluster.coordinator(group, 0)?.call(req.into())? else {
        return Err(CliError::Unexpected(ApiKey::OffsetCommit));
    };
    for t in r.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                return Err(CliError::kafka(
                    &format!("committing offsets of group {group}"),
                    p.error_code,
                    None,
                ));
            }
        }
    }
    Ok(())
}

/// The committed offsets of `group` for `partitions` of `topic` (-1 where none).
pub fn fetch_committed(
    cluster: &mut Cluster,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, i64>, CliError> {
    let scope = OffsetFetchRequestTopic {
        name: topic.to_string(),
        partition_indexes: partitions.to_vec(),
    };
    Ok(offset_fetch(cluster, group, Some(vec![scope]))?
        .remove(topic)
        .unwrap_or_default())
}

/// Every committed offset of `group`: topic -> partition -> offset.
fn fetch_all_committed(
    cluster: &mut Cluster,
    group: &str,
) -> Result<BTreeMap<String, BTreeMap<i32, i64>>, CliError> {
    let mut all = offset_fetch(cluster, group, None)?;
    for parts in all.values_mut() {
        parts.retain(|_, o| *o >= 0);
    }
    all.retain(|_, parts| !parts.is_empty());
    Ok(all)
}

/// OffsetFetch of `topics` (`None`: all) for `group`: topic -> partition -> offset (-1 where
/// none is committed).
fn offset_fetch(
    cluster: &mut Cluster,
    group: &str,
    topics: Option<Vec<OffsetFetchRequestTopic>>,
) -> Result<BTreeMap<String, BTreeMap<i32, i64>>, CliError> {
    let req = OffsetFetchRequest {
        group_id: group.to_string(),
        topics,
        ..Default::default()
    };
    let ResponseBody::OffsetFetch(r) = cluster.coordinator(group, 0)?.call(req.into())? else {
        return Err(CliError::Unexpected(ApiKey::OffsetFetch));
    };
    let failed = |code| {
        CliError::kafka(
            &format!("fetching the offsets of group {group}"),
            code,
            None,
        )
    };
    if r.error_code != 0 {
        return Err(failed(r.error_code));
    }
    let mut out: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for t in r.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                return Err(failed(p.error_code));
            }
            out.entry(t.name.clone())
                .or_default()
                .insert(p.partition_index, p.committed_offset);
        }
    }
    Ok(out)
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List the consumer groups.
    List,
    /// Members, assignments, committed offsets and lag of groups.
    Describe(DescribeArgs),
    /// Delete groups (they must have no active members).
    Delete(DeleteArgs),
    /// Move a group's committed offsets (a dry run unless --execute).
    ResetOffsets(ResetArgs),
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    #[arg(required = true)]
    pub groups: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[arg(required = true)]
    pub groups: Vec<String>,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("scope").required(true).args(["topic", "all_topics"])))]
#[command(group(ArgGroup::new("to").required(true).args([
    "to_earliest", "to_latest", "to_offset", "shift_by", "to_datetime", "by_period",
    "from_file", "to_current",
])))]
pub struct ResetArgs {
    #[arg(long)]
    pub group: String,
    /// A topic, or topic:0,2 for some of its partitions (repeatable).
    #[arg(long)]
    pub topic: Vec<String>,
    /// Every topic the group has committed offsets for.
    #[arg(long)]
    pub all_topics: bool,
    #[arg(long)]
    pub to_earliest: bool,
    #[arg(long)]
    pub to_latest: bool,
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// Move by N (negative: back).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
    /// The first offset at or after this time: YYYY-MM-DDTHH:mm:SS[.sss][Z|+hh:mm].
    #[arg(long, value_name = "DATETIME")]
    pub to_datetime: Option<String>,
    /// The first offset at or after now minus this ISO-8601 duration (e.g. P1DT2H, PT30M).
    #[arg(long, value_name = "DURATION")]
    pub by_period: Option<String>,
    /// A CSV file of topic,partition,offset lines.
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<std::path::PathBuf>,
    /// The committed offsets as they are (e.g. to export them).
    #[arg(long)]
    pub to_current: bool,
    /// Apply the new offsets (without it, only show them).
    #[arg(long)]
    pub execute: bool,
    /// Only show the new offsets (the default).
    #[arg(long, conflicts_with = "execute")]
    pub dry_run: bool,
}

pub fn run(cmd: GroupCommand, common: &Common) -> Result<(), CliError> {
    let mut ctx = Context::new(common, &[])?;
    match cmd {
        GroupCommand::List => list(&mut ctx),
        GroupCommand::Describe(a) => describe(&mut ctx, a),
        GroupCommand::Delete(a) => delete(&mut ctx, a),
        GroupCommand::ResetOffsets(a) => reset_offsets(&mut ctx, a),
    }
}

fn list(ctx: &mut Context) -> Result<(), CliError> {
    let ResponseBody::ListGroups(r) = ctx
        .cluster
        .any()?
        .call(ListGroupsRequest::default().into())?
    else {
        return Err(CliError::Unexpected(ApiKey::ListGroups));
    };
    if r.error_code != 0 {
        return Err(CliError::kafka("listing groups", r.error_code, None));
    }
    let mut groups: Vec<_> = r.groups;
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    let mut t = Table::new(
        &["GROUP", "TYPE", "STATE"],
        &["group", "protocol_type", "state"],
    );
    for g in groups {
        let state = if g.group_state.is_empty() {
            Cell::Missing
        } else {
            Cell::Text(g.group_state)
        };
        t.push(vec![g.group_id.into(), g.protocol_type.into(), state]);
    }
    t.print(ctx.output)
}

/// One member as DescribeGroups describes it.
struct MemberInfo {
    member_id: String,
    client_id: String,
    host: String,
    /// Topic -> partitions.
    assignment: BTreeMap<String, Vec<i32>>,
}

/// What DescribeGroups said about a group.
struct GroupInfo {
    state: String,
    members: Vec<MemberInfo>,
}

fn describe_group(cluster: &mut Cluster, group: &str) -> Result<GroupInfo, CliError> {
    let req = DescribeGroupsRequest {
        groups: vec![group.to_string()],
        include_authorized_operations: false,
    };
    let ResponseBody::DescribeGroups(r) = cluster.coordinator(group, 0)?.call(req.into())? else {
        return Err(CliError::Unexpected(ApiKey::DescribeGroups));
    };
    let g = r
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Protocol("DescribeGroups answered no group".into()))?;
    if g.error_code != 0 {
        return Err(CliError::kafka(
            &format!("describing group {group}"),
            g.error_code,
            None,
        ));
    }
    let mut members = Vec::new();
    for m in g.members {
        // Only the consumer protocol's assignment is understood; others show no partitions.
        let a = if g.protocol_type == PROTOCOL_TYPE {
            decode_assignment(&m.member_assignment).unwrap_or_default()
        } else {
            BTreeMap::new()
        };
        members.push(MemberInfo {
            member_id: m.member_id,
            client_id: m.client_id,
            host: m.client_host,
            assignment: a,
        });
    }
    Ok(GroupInfo {
        state: g.group_state,
        members,
    })
}

fn describe(ctx: &mut Context, a: DescribeArgs) -> Result<(), CliError> {
    let mut t = Table::new(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ],
        &[
            "group",
            "topic",
            "partition",
            "current_offset",
            "log_end_offset",
            "lag",
            "consumer_id",
            "host",
            "client_id",
        ],
    );
    let mut notes = String::new();
    for group in &a.groups {
        let info = describe_group(&mut ctx.cluster, group)?;
        let committed = fetch_all_committed(&mut ctx.cluster, group)?;
        if info.state == "Dead" && committed.is_empty() {
            return Err(CliError::Failed(format!("group {group} does not exist")));
        }
        // Rows: every partition with a committed offset or an owner.
        let mut owner: BTreeMap<(String, i32), (String, String, String)> = BTreeMap::new();
        for m in &info.members {
            for (topic, parts) in &m.assignment {
                for p in parts {
                    owner.insert(
                        (topic.clone(), *p),
                        (m.member_id.clone(), m.host.clone(), m.client_id.clone()),
                    );
                }
            }
        }
        let mut rows: BTreeSet<(String, i32)> = owner.keys().cloned().collect();
        for (topic, parts) in &committed {
            rows.extend(parts.keys().map(|p| (topic.clone(), *p)));
        }
        let topics: BTreeSet<String> = rows.iter().map(|(t, _)| t.clone()).collect();
        let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for topic in topics {
            let info = match ctx.cluster.topic(&topic) {
                Ok(i) => i,
                Err(CliError::UnknownTopic(_)) => continue,
                Err(e) => return Err(e),
            };
            let parts: Vec<i32> = rows
                .iter()
                .filter(|(t, _)| *t == topic)
                .map(|(_, p)| *p)
                .filter(|p| info.partitions.iter().any(|i| i.index == *p))
                .collect();
            for (p, o) in ctx.cluster.list_offsets(&info, &parts, LATEST)? {
                ends.insert((topic.clone(), p), o);
            }
        }
        if rows.is_empty() {
            notes.push_str(&format!(
                "Group {group} ({}) has no committed offsets and no assigned partitions.\n",
                info.state
            ));
        }
        for (topic, p) in rows {
            let current = committed.get(&topic).and_then(|m| m.get(&p)).copied();
            let end = ends.get(&(topic.clone(), p)).copied();
            let lag = match (current, end) {
                (Some(c), Some(e)) => Some((e - c).max(0)),
                _ => None,
            };
            let (member, host, client) = owner.get(&(topic.clone(), p)).cloned().map_or(
                (Cell::Missing, Cell::Missing, Cell::Missing),
                |(m, h, c)| (m.into(), h.into(), c.into()),
            );
            t.push(vec![
                group.clone().into(),
                topic.into(),
                p.into(),
                current.into(),
                end.into(),
                lag.into(),
                member,
                host,
                client,
            ]);
        }
    }
    if ctx.output == super::OutputFormat::Table && !notes.is_empty() {
        eprint!("{notes}");
    }
    t.print(ctx.output)
}

fn delete(ctx: &mut Context, a: DeleteArgs) -> Result<(), CliError> {
    let mut text = String::new();
    for group in &a.groups {
        let req = DeleteGroupsRequest {
            groups_names: vec![group.clone()],
        };
        let ResponseBody::DeleteGroups(r) = ctx.cluster.coordinator(group, 0)?.call(req.into())?
        else {
            return Err(CliError::Unexpected(ApiKey::DeleteGroups));
        };
        for res in r.results {
            match ErrorCode(res.error_code) {
                ErrorCode::NONE => text.push_str(&format!("Deleted group {}.\n", res.group_id)),
                ErrorCode::NON_EMPTY_GROUP => {
                    return Err(CliError::Failed(format!(
                        "group {} still has active members: stop its consumers first",
                        res.group_id
                    )))
                }
                ErrorCode::GROUP_ID_NOT_FOUND => {
                    return Err(CliError::Failed(format!(
                        "group {} does not exist",
                        res.group_id
                    )))
                }
                _ => {
                    return Err(CliError::kafka(
                        &format!("deleting group {}", res.group_id),
                        res.error_code,
                        None,
                    ))
                }
            }
        }
    }
    output::write_out(&text)
}

/// A parsed `--topic` scope: the topic and its partitions (`None`: all of them).
fn parse_topic_scope(s: &str) -> Result<(String, Option<Vec<i32>>), CliError> {
    match s.split_once(':') {
        None => Ok((s.to_string(), None)),
        Some((t, parts)) => {
            let ps = parts
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .map_err(|_| CliError::Usage(format!("--topic {s}: bad partition {p:?}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((t.to_string(), Some(ps)))
        }
    }
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:mm:SS[.sss][Z|±hh:mm]` (local offsets must
/// be explicit; none means UTC).
pub fn parse_datetime(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?}: expected YYYY-MM-DDTHH:mm:SS[.sss][Z|+hh:mm]");
    let (date, rest) = s.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3 {
        return Err(bad());
    }
    // Split off the zone.
    let (time, zone_ms) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, z) = rest.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (h, m) = z[1..].split_once(':').ok_or_else(bad)?;
        let h: i64 = h.parse().map_err(|_| bad())?;
        let m: i64 = m.parse().map_err(|_| bad())?;
        (t, sign * (h * 3600 + m * 60) * 1000)
    } else {
        (rest, 0)
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if t.len() != 3 {
        return Err(bad());
    }
    let millis: i64 = format!("{frac:0<3}")[..3].parse().map_err(|_| bad())?;
    let (y, mo, day) = (d[0], d[1], d[2]);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || t[0] > 23 || t[1] > 59 || t[2] > 60 {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1000 + millis) - zone_ms)
}

/// Milliseconds of an ISO-8601 duration `PnDTnHnMnS` (days, hours, minutes, seconds).
pub fn parse_period(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?}: expected an ISO-8601 duration like P1DT2H30M or PT15M");
    let rest = s.strip_prefix('P').ok_or_else(bad)?;
    let (days, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut ms = 0i64;
    let mut take = |part: &str, units: &[(char, i64)]| -> Result<(), String> {
        let mut num = String::new();
        for ch in part.chars() {
            if ch.is_ascii_digit() || ch == '.' {
                num.push(ch);
                continue;
            }
            let unit = units.iter().find(|(u, _)| *u == ch).ok_or_else(bad)?.1;
            let n: f64 = num.parse().map_err(|_| bad())?;
            ms += (n * unit as f64) as i64;
            num.clear();
        }
        if num.is_empty() {
            Ok(())
        } else {
            Err(bad())
        }
    };
    take(days, &[('D', 86_400_000), ('W', 7 * 86_400_000)])?;
    take(time, &[('H', 3_600_000), ('M', 60_000), ('S', 1000)])?;
    if days.is_empty() && time.is_empty() {
        return Err(bad());
    }
    Ok(ms)
}

fn reset_offsets(ctx: &mut Context, a: ResetArgs) -> Result<(), CliError> {
    let group = a.group.clone();
    let info = describe_group(&mut ctx.cluster, &group)?;
    if !info.members.is_empty() && a.execute {
        return Err(CliError::Failed(format!(
            "group {group} has {} active member(s) (state {}): offsets can only be reset while it is inactive; stop its consumers first",
            info.members.len(),
            info.state
        )));
    }
    let committed = fetch_all_committed(&mut ctx.cluster, &group)?;
    // (topic, partitions) in scope.
    let mut scope: Vec<(TopicInfo, Vec<i32>)> = Vec::new();
    let mut file_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
    if let Some(path) = &a.from_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let parsed = match f.as_slice() {
                [t, p, o] => p
                    .parse::<i32>()
                    .ok()
                    .zip(o.parse::<i64>().ok())
                    .map(|po| (t, po)),
                _ => None,
            };
            let (t, (p, o)) = parsed.ok_or_else(|| {
                CliError::Usage(format!(
                    "{} line {}: expected topic,partition,offset",
                    path.display(),
                    n + 1
                ))
            })?;
            file_offsets.insert((t.to_string(), p), o);
        }
    }
    let mut wanted: Vec<(String, Option<Vec<i32>>)> = Vec::new();
    if a.all_topics {
        wanted.extend(committed.keys().map(|t| (t.clone(), None)));
        for (t, _) in file_offsets.keys() {
            if !wanted.iter().any(|(w, _)| w == t) {
                wanted.push((t.clone(), None));
            }
        }
    } else {
        for s in &a.topic {
            wanted.push(parse_topic_scope(s)?);
        }
    }
    for (topic, parts) in wanted {
        let info = ctx.cluster.topic(&topic)?;
        let parts = match parts {
            Some(p) => p,
            None if a.from_file.is_some() => file_offsets
                .keys()
                .filter(|(t, _)| *t == topic)
                .map(|(_, p)| *p)
                .collect(),
            None => info.partitions.iter().map(|p| p.index).collect(),
        };
        for p in &parts {
            if !info.partitions.iter().any(|i| i.index == *p) {
                return Err(CliError::Usage(format!(
                    "topic {topic} has no partition {p}"
                )));
            }
        }
        scope.push((info, parts));
    }

    let mut table = Table::new(
        &["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"],
        &["group", "topic", "partition", "new_offset"],
    );
    let mut plan: Vec<(String, Vec<(i32, i64)>)> = Vec::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let show_progress = std::io::IsTerminal::is_terminal(&std::io::stderr()) && scope.len() > 1;
    for (i, (info, parts)) in scope.iter().enumerate() {
        if show_progress {
            eprint!("\rcomputing offsets: topic {}/{}", i + 1, scope.len());
        }
        let earliest = ctx.cluster.list_offsets(info, parts, EARLIEST)?;
        let latest = ctx.cluster.list_offsets(info, parts, LATEST)?;
        let current = |p: i32| committed.get(&info.name).and_then(|m| m.get(&p)).copied();
        let target: BTreeMap<i32, i64> = if a.to_earliest {
            earliest.clone()
        } else if a.to_latest {
            latest.clone()
        } else if let Some(o) = a.to_offset {
            parts.iter().map(|p| (*p, o)).collect()
        } else if let Some(n) = a.shift_by {
            parts
                .iter()
                .map(|p| {
                    let from = current(*p).unwrap_or(latest[p]);
                    (*p, from.saturating_add(n))
                })
                .collect()
        } else if let Some(dt) = &a.to_datetime {
            let ts =
                parse_datetime(dt).map_err(|e| CliError::Usage(format!("--to-datetime {e}")))?;
            let at = ctx.cluster.list_offsets(info, parts, ts)?;
            // No record at or after the time: the end of the log, as Kafka does.
            parts
                .iter()
                .map(|p| {
                    (
                        *p,
                        at.get(p).copied().filter(|o| *o >= 0).unwrap_or(latest[p]),
                    )
                })
                .collect()
        } else if let Some(period) = &a.by_period {
            let ms =
                parse_period(period).map_err(|e| CliError::Usage(format!("--by-period {e}")))?;
            let at = ctx.cluster.list_offsets(info, parts, now - ms)?;
            parts
                .iter()
                .map(|p| {
                    (
                        *p,
                        at.get(p).copied().filter(|o| *o >= 0).unwrap_or(latest[p]),
                    )
                })
                .collect()
        } else if a.from_file.is_some() {
            parts
                .iter()
                .filter_map(|p| file_offsets.get(&(info.name.clone(), *p)).map(|o| (*p, *o)))
                .collect()
        } else {
            // --to-current
            parts
                .iter()
                .map(|p| (*p, current(*p).unwrap_or(latest[p])))
                .collect()
        };
        // Offsets outside the log are clamped to it, with a warning, as Kafka does.
        let mut offsets = Vec::new();
        for (p, o) in target {
            let (lo, hi) = (earliest[&p], latest[&p]);
            let clamped = o.clamp(lo, hi.max(lo));
            if clamped != o {
                eprintln!(
                    "odradek: new offset {o} of {}-{p} is outside the log [{lo}, {hi}]: using {clamped}",
                    info.name
                );
            }
            table.push(vec![
                group.clone().into(),
                info.name.clone().into(),
                p.into(),
                clamped.into(),
            ]);
            offsets.push((p, clamped));
        }
        plan.push((info.name.clone(), offsets));
    }
    if show_progress {
        eprintln!();
    }
    table.print(ctx.output)?;
    if !a.execute {
        eprintln!("Dry run: nothing changed. Run again with --execute to apply these offsets.");
        return Ok(());
    }
    for (topic, offsets) in plan {
        if !offsets.is_empty() {
            commit_offsets(&mut ctx.cluster, &group, -1, "", None, &topic, &offsets)?;
        }
    }
    eprintln!("Offsets of group {group} reset.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_to_epoch_millis() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00").unwrap(), 0);
        assert_eq!(parse_datetime("1970-01-01T00:00:01.5Z").unwrap(), 1500);
        assert_eq!(
            parse_datetime("2026-12-03T10:00:00Z").unwrap(),
            1_796_292_000_000
        );
        assert_eq!(
            parse_datetime("2026-12-03T12:00:00+02:00").unwrap(),
            1_796_292_000_000
        );
        assert_eq!(
            parse_datetime("2000-02-29T23:59:59.999-01:30").unwrap(),
            951_868_799_999 + 5_400_000
        );
        assert!(parse_datetime("2026-13-01T00:00:00").is_err());
        assert!(parse_datetime("yesterday").is_err());
    }

    #[test]
    fn periods_parse_to_millis() {
        assert_eq!(parse_period("PT30M").unwrap(), 30 * 60_000);
        assert_eq!(parse_period("P1DT2H").unwrap(), 26 * 3_600_000);
        assert_eq!(parse_period("PT1.5S").unwrap(), 1500);
        assert!(parse_period("P").is_err());
        assert!(parse_period("1D").is_err());
        assert!(parse_period("PT5X").is_err());
    }

    #[test]
    fn topic_scopes_name_partitions() {
        assert_eq!(parse_topic_scope("t").unwrap(), ("t".to_string(), None));
        assert_eq!(
            parse_topic_scope("t:0,2").unwrap(),
            ("t".to_string(), Some(vec![0, 2]))
        );
        assert!(parse_topic_scope("t:x").is_err());
    }
}
