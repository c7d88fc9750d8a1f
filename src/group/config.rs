//! Group coordinator limits (Kafka key names in the field docs).

/// Limits of one group. Defaults follow Kafka except where Kafka is unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`.
    pub session_timeout_min_ms: u64,
    /// `group.max.session.timeout.ms`.
    pub session_timeout_max_ms: u64,
    /// `group.initial.rebalance.delay.ms` (KIP-134): how long the first rebalance of an Empty
    /// group waits for more members, extended by the same amount (up to the rebalance timeout)
    /// while new members keep arriving.
    pub initial_rebalance_delay_ms: u64,
    /// `group.max.size`. Kafka's default is unbounded; ours is finite so a misbehaving client
    /// cannot grow coordinator memory without bound.
    pub max_size: usize,
    /// Bound on one member's JoinGroup strings + protocol metadata, and on one member's
    /// assignment. Worst case per group ≈ 2 × `max_size` × 2 × this.
    pub max_metadata_bytes: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            session_timeout_min_ms: 6_000,
            session_timeout_max_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: 1_000,
            max_metadata_bytes: 128 * 1024,
        }
    }
}
