//! Consumer-group (KIP-848) coordinator settings (Kafka key names in the field docs).

use super::ServerAssignor;

/// Settings of one consumer group. Defaults follow Kafka except where Kafka is unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupConfig {
    /// `group.consumer.session.timeout.ms`: a member silent for this long is removed (a static
    /// member that left with epoch -2 keeps its partitions this long after its last heartbeat).
    pub session_timeout_ms: u64,
    /// `group.consumer.heartbeat.interval.ms`: sent to members in every response.
    pub heartbeat_interval_ms: u64,
    /// `group.consumer.max.size`. Kafka's default is unbounded; ours is finite so a misbehaving
    /// client cannot grow coordinator memory without bound.
    pub max_size: usize,
    /// The first of `group.consumer.assignors`: used when no member names one.
    pub default_assignor: ServerAssignor,
    /// Bound on one member's stored strings (ids, rack, client id and host, subscribed topic
    /// names plus [`super::TOPIC_NAME_OVERHEAD_BYTES`] each). Kafka bounds these only by the
    /// request size. Worst case per group ≈ `max_size` × this, plus the assignments.
    pub max_member_metadata_bytes: usize,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        ConsumerGroupConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: 1_000,
            default_assignor: ServerAssignor::Uniform,
            max_member_metadata_bytes: 64 * 1024,
        }
    }
}
