//! Classic consumer-group coordinator as a pure state machine (Kafka's `GroupCoordinator` +
//! `GroupMetadata` behaviour for JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit
//! validation and DeleteGroups).
//!
//! What it owns: one [`GroupMachine`] per group id — its state (Empty, PreparingRebalance,
//! CompletingRebalance, Stable, Dead), generation, selected protocol, leader, members with their
//! protocol metadata and assignments, the pending members of the member-id-required round trip
//! (KIP-394), static-membership mapping (KIP-345), and every deadline (session timeouts, rebalance
//! timeout, `group.initial.rebalance.delay.ms` (KIP-134), pending-sync timeout).
//! It does NO I/O, has no async and reads no clock: every input carries `now_ms`.
//!
//! Who drives it: the shard that owns the group's `__consumer_offsets` partition. The driver
//! - creates a machine with [`GroupMachine::new`] (or [`GroupMachine::restore`] from the last
//!   persisted [`GroupSnapshot`]) and hands it each request with a fresh [`RequestId`];
//! - executes the returned [`Effect`]s: answers delayed JoinGroup/SyncGroup requests by id,
//!   keeps ONE timer per group (each [`Effect::ScheduleTimer`] replaces the previous one) and calls
//!   [`GroupMachine::tick`] when it fires, appends [`Effect::PersistGroup`] snapshots to
//!   `__consumer_offsets` and reports the outcome with [`GroupMachine::persisted`].
//!
//! The driver keeps no other group state. Spurious or late ticks are harmless.
//!
//! Invariants:
//! - every JoinGroup/SyncGroup [`RequestId`] handed in is answered by exactly one `Respond*`
//!   effect (a superseded duplicate request is answered with REBALANCE_IN_PROGRESS);
//! - a member is in at most one of {awaiting join, awaiting sync};
//! - whenever the group has members, the leader is one of them; Empty and Dead groups have none;
//! - memory is bounded: members ≤ 2 × `max_size` (during a rebalance Kafka counts only members
//!   that rejoined, so old and new members coexist briefly; we cap the total at twice the
//!   limit), pending members ≤ `max_size`, per-member metadata and
//!   assignment ≤ `max_metadata_bytes`, protocols per member ≤ [`MAX_PROTOCOLS_PER_MEMBER`],
//!   pending persists ≤ 1 + members.
//!
//! Wire structs stay in `protocol`; this module only sees plain structs, so versions are the
//! driver's job (e.g. JoinGroup v0 has no rebalance timeout: pass the session timeout; v4+ sets
//! [`JoinRequest::require_known_member_id`]; LeaveGroup v0–2 maps the single member's error to the
//! top level).

mod config;
mod machine;
#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use config::GroupConfig;
pub use machine::{validate_commit_unknown_group, GroupMachine};

/// More protocols than any real client sends (Java sends one per assignor); bounds the
/// O(members × protocols²) protocol selection.
pub const MAX_PROTOCOLS_PER_MEMBER: usize = 32;

/// Kafka's `GroupCoordinator.NewMemberJoinTimeoutMs`: a new member's JoinGroup is parked at most
/// this long; the client retries if it is still alive (its socket is muted while parked, so a
/// disconnect is not seen and defunct members would otherwise pile up).
pub const NEW_MEMBER_JOIN_TIMEOUT_MS: u64 = 5 * 60 * 1000;

/// Kafka error codes this module answers with. Mapped to the wire by [`GroupError::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("unknown server error")]
    UnknownServerError,
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    #[error("not coordinator")]
    NotCoordinator,
    #[error("illegal generation")]
    IllegalGeneration,
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("invalid session timeout")]
    InvalidSessionTimeout,
    #[error("rebalance in progress")]
    RebalanceInProgress,
    #[error("invalid request")]
    InvalidRequest,
    #[error("non-empty group")]
    NonEmptyGroup,
    #[error("group id not found")]
    GroupIdNotFound,
    #[error("member id required")]
    MemberIdRequired,
    #[error("group max size reached")]
    GroupMaxSizeReached,
    #[error("fenced instance id")]
    FencedInstanceId,
}

impl GroupError {
    /// Kafka's `Errors` code.
    pub const fn code(self) -> i16 {
        match self {
            GroupError::UnknownServerError => -1,
            GroupError::CoordinatorNotAvailable => 15,
            GroupError::NotCoordinator => 16,
            GroupError::IllegalGeneration => 22,
            GroupError::InconsistentGroupProtocol => 23,
            GroupError::InvalidGroupId => 24,
            GroupError::UnknownMemberId => 25,
            GroupError::InvalidSessionTimeout => 26,
            GroupError::RebalanceInProgress => 27,
            GroupError::InvalidRequest => 42,
            GroupError::NonEmptyGroup => 68,
            GroupError::GroupIdNotFound => 69,
            GroupError::MemberIdRequired => 79,
            GroupError::GroupMaxSizeReached => 81,
            GroupError::FencedInstanceId => 82,
        }
    }
}

/// `0` when `None`, else the error's code: the shape every response field wants.
pub fn error_code(error: Option<GroupError>) -> i16 {
    error.map_or(0, GroupError::code)
}

/// Group states, named as Kafka's DescribeGroups/ListGroups report them ([`GroupState::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub const fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Driver-chosen id of a parked JoinGroup/SyncGroup request, echoed in its `Respond*` effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Id of one [`Effect::PersistGroup`], echoed back through [`GroupMachine::persisted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersistId(pub u64);

/// Source of the random part of generated member ids (`{client_id}-{uuid}`, or
/// `{group_instance_id}-{uuid}` for static members). Tests pass a counter.
pub trait MemberIdSource {
    fn next_uuid(&mut self) -> String;
}

/// One (protocol name, metadata) pair of a JoinGroup, in the member's order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: an unknown dynamic member gets MEMBER_ID_REQUIRED and must rejoin (KIP-394).
    pub require_known_member_id: bool,
    /// JoinGroup v9+ (KIP-814): the client understands `skip_assignment`.
    pub supports_skip_assignment: bool,
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// The member's metadata for the selected protocol.
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: Option<GroupError>,
    /// -1 on error.
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// Empty on error.
    pub leader_id: String,
    /// The caller's (possibly new) member id; the new id with MEMBER_ID_REQUIRED.
    pub member_id: String,
    /// Non-empty only in the leader's response.
    pub members: Vec<JoinMember>,
    /// JoinGroup v9+: the leader must not run its assignor (a static leader came back while
    /// the group is Stable and keeps its assignment).
    pub skip_assignment: bool,
}

impl JoinResponse {
    /// A refusal: no generation, leader or members.
    pub fn error(member_id: String, error: GroupError) -> Self {
        JoinResponse {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader_id: String::new(),
            member_id,
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAssignment {
    pub member_id: String,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// SyncGroup v5+; checked against the group's when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// Only the leader's are used; followers send none.
    pub assignments: Vec<MemberAssignment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    /// A refusal: no assignment.
    pub fn error(error: GroupError) -> Self {
        SyncResponse {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
}

/// One member of a LeaveGroup (v3+ batch; v0–2 send exactly one with no instance id). An empty
/// member id with an instance id removes that static member administratively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMemberResult {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub error: Option<GroupError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveResponse {
    /// Group-level error; when set, `members` is empty.
    pub error: Option<GroupError>,
    pub members: Vec<LeaveMemberResult>,
}

/// The group fields of an OffsetCommit / TxnOffsetCommit (generation -1 and empty member id for
/// a "simple" commit by a client that does not use group management).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitIdentity {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
}

/// One member as DescribeGroups shows it: metadata and assignment only while the group is
/// Stable (Kafka's `summaryNoMetadata` otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups and ListGroups show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub state: GroupState,
    /// Empty when the group has none (a group only used for commits).
    pub protocol_type: String,
    /// Empty unless the group is Stable.
    pub protocol_name: String,
    pub members: Vec<DescribedMember>,
}

/// What the driver must do after handing the machine an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    RespondJoin {
        request_id: RequestId,
        response: JoinResponse,
    },
    RespondSync {
        request_id: RequestId,
        response: SyncResponse,
    },
    /// Call [`GroupMachine::tick`] at or after `at_ms`; replaces any earlier ScheduleTimer.
    ScheduleTimer { at_ms: u64 },
    /// Append this group metadata record to `__consumer_offsets`, then call
    /// [`GroupMachine::persisted`] with `persist_id` (some persists only need it for a log line;
    /// reporting is always safe).
    PersistGroup {
        persist_id: PersistId,
        snapshot: GroupSnapshot,
    },
}

/// The persisted part of a group (Kafka's GroupMetadataValue): enough to rebuild a Stable or
/// Empty group after a restart or a coordinator move.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct GroupSnapshot {
    pub group_id: String,
    pub protocol_type: Option<String>,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub members: Vec<MemberSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// Metadata for the selected protocol only (what the leader assigned from).
    /// (`Vec<u8>` rather than `Bytes`: our rkyv is built without its `bytes` feature.)
    pub subscription: Vec<u8>,
    pub assignment: Vec<u8>,
}
