//! Retention: which whole segments a partition may drop, by age, by size and below the log
//! start offset (after DeleteRecords), the way Kafka decides it. Pure: the log applies the plan
//! (see `PartitionLog::apply_retention`).
//!
//! Only closed segments are candidates, oldest first, and deletion stops at the first segment
//! that must stay, so what remains is always a contiguous suffix of the log ending with the
//! active segment.

/// What retention needs to know about one closed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    pub base_offset: i64,
    /// The offset after its last record (= the next segment's base).
    pub next_offset: i64,
    pub size: u64,
    /// Largest record timestamp in it (ms), or -1 when none is known.
    pub max_timestamp: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionRules {
    /// `retention.ms`; negative: no time limit.
    pub retention_ms: i64,
    /// `retention.bytes`; negative: no size limit.
    pub retention_bytes: i64,
    /// Segments wholly below this go whatever their age (DeleteRecords).
    pub log_start_offset: i64,
}

/// How many of `closed` (oldest first, the active segment not included) to delete.
/// `total_size` is the whole partition's size, active segment included.
pub fn segments_to_delete(
    closed: &[SegmentSummary],
    total_size: u64,
    rules: RetentionRules,
    now_ms: i64,
) -> usize {
    let below_start = closed
        .iter()
        .take_while(|s| s.next_offset <= rules.log_start_offset)
        .count();
    let by_time = if rules.retention_ms < 0 {
        0
    } else {
        closed
            .iter()
            .take_while(|s| {
                s.max_timestamp >= 0 && now_ms.saturating_sub(s.max_timestamp) > rules.retention_ms
            })
            .count()
    };
    let by_size = if rules.retention_bytes < 0 {
        0
    } else {
        // Kafka's rule: drop the oldest segment while the log stays at least retention.bytes
        // without it.
        let mut excess = total_size as i128 - rules.retention_bytes as i128;
        closed
            .iter()
            .take_while(|s| {
                if excess - s.size as i128 >= 0 {
                    excess -= s.size as i128;
                    true
                } else {
                    false
                }
            })
            .count()
    };
    below_start.max(by_time).max(by_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(sizes_ts: &[(u64, i64)]) -> Vec<SegmentSummary> {
        let mut base = 0;
        sizes_ts
            .iter()
            .map(|&(size, ts)| {
                let s = SegmentSummary {
                    base_offset: base,
                    next_offset: base + 10,
                    size,
                    max_timestamp: ts,
                };
                base += 10;
                s
            })
            .collect()
    }

    const NONE: RetentionRules = RetentionRules {
        retention_ms: -1,
        retention_bytes: -1,
        log_start_offset: 0,
    };

    #[test]
    fn time_deletes_the_expired_prefix_only() {
        let closed = segs(&[(100, 1_000), (100, 5_000), (100, 2_000), (100, 9_000)]);
        let rules = RetentionRules {
            retention_ms: 3_000,
            ..NONE
        };
        // At 7_500: 1_000 and 2_000 are expired, but 5_000 is not, so only the first goes.
        assert_eq!(segments_to_delete(&closed, 500, rules, 7_500), 1);
        assert_eq!(segments_to_delete(&closed, 500, rules, 12_001), 4);
        // Unknown timestamps are never "old".
        let unknown = segs(&[(100, -1), (100, 0)]);
        assert_eq!(segments_to_delete(&unknown, 300, rules, 1 << 40), 0);
        assert_eq!(segments_to_delete(&closed, 500, NONE, 1 << 40), 0);
    }

    #[test]
    fn size_keeps_at_least_retention_bytes() {
        let closed = segs(&[(100, 0), (100, 0), (100, 0)]);
        // 350 bytes in all (50 active); keep >= 120: dropping two leaves 150, three 50.
        let rules = RetentionRules {
            retention_bytes: 120,
            ..NONE
        };
        assert_eq!(segments_to_delete(&closed, 350, rules, 0), 2);
        let rules = RetentionRules {
            retention_bytes: 0,
            ..NONE
        };
        assert_eq!(segments_to_delete(&closed, 350, rules, 0), 3);
        let rules = RetentionRules {
            retention_bytes: 1_000,
            ..NONE
        };
        assert_eq!(segments_to_delete(&closed, 350, rules, 0), 0);
    }

    #[test]
    fn segments_wholly_below_the_log_start_go() {
        let closed = segs(&[(100, 0), (100, 0), (100, 0)]);
        let rules = RetentionRules {
            log_start_offset: 20,
            ..NONE
        };
        assert_eq!(segments_to_delete(&closed, 400, rules, 0), 2);
        let rules = RetentionRules {
            log_start_offset: 19,
            ..NONE
        };
        assert_eq!(segments_to_delete(&closed, 400, rules, 0), 1);
    }
}
