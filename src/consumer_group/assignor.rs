//! Server-side assignors: pure functions from (members with their subscriptions and previous
//! targets, partition counts) to each member's new target.
//!
//! - `uniform` (Kafka's `UniformAssignor`): balanced partition counts, sticky. Each member first
//!   keeps the partitions of its previous target that are still valid (topic still subscribed
//!   and existing, partition still there, not kept by an earlier member); free partitions go to
//!   the least-loaded subscriber; then partitions move from the most- to the least-loaded
//!   subscriber of their topic while the two differ by more than one. When every member has the
//!   same subscription that makes counts differ by at most one, and a member never drops below
//!   `min(kept, partitions / members)`. With different subscriptions it reaches a state where no
//!   single move between subscribers of a topic narrows the gap, within
//!   [`MAX_BALANCE_PASSES`] passes (Kafka caps its equivalent phase too).
//! - `range` (Kafka's server-side `RangeAssignor`): per topic, subscribers in order (static
//!   members by instance id first, then the others by member id) get contiguous ranges, the
//!   first `partitions % subscribers` one partition more. Members with the same subscription
//!   get the same partition numbers of equally sized topics (co-partitioning), and static
//!   members keep their ranges across restarts. Not sticky otherwise, as in Kafka.
//!
//! Deterministic: the same input gives the same output (ties break on member order).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use super::{Assignment, ServerAssignor, TopicId};

/// Bound on the uniform assignor's balancing passes over all topics. Identical subscriptions
/// settle in one pass (and one more to see it); overlapping ones usually in a handful.
pub const MAX_BALANCE_PASSES: usize = 64;

/// One member as an assignor sees it.
#[derive(Debug, Clone)]
pub struct AssignorMember<'a> {
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
    /// Subscribed topics; those missing from the partition counts are ignored.
    pub topics: BTreeSet<TopicId>,
    /// The member's previous target, for stickiness (invalid entries are ignored).
    pub current: &'a Assignment,
}

/// Each member's new target, in the order of `members`. `partitions` maps every existing
/// subscribed topic to its partition count.
pub fn assign(
    assignor: ServerAssignor,
    members: &[AssignorMember<'_>],
    partitions: &BTreeMap<TopicId, u32>,
) -> Vec<Assignment> {
    let subscribers = subscribers_by_topic(members, partitions);
    match assignor {
        ServerAssignor::Uniform => uniform(members, partitions, &subscribers),
        ServerAssignor::Range => range(members, partitions, &subscribers),
    }
}

/// Existing topics with at least one subscriber → their subscribers (ascending member index).
fn subscribers_by_topic(
    members: &[AssignorMember<'_>],
    partitions: &BTreeMap<TopicId, u32>,
) -> BTreeMap<TopicId, Vec<usize>> {
    let mut subscribers: BTreeMap<TopicId, Vec<usize>> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        for t in &m.topics {
            if partition_count(partitions, t) > 0 {
                subscribers.entry(*t).or_default().push(i);
            }
        }
    }
    subscribers
}

fn partition_count(partitions: &BTreeMap<TopicId, u32>, topic: &TopicId) -> usize {
    // Partition numbers are i32 on the wire.
    partitions
        .get(topic)
        .map_or(0, |&n| n.min(i32::MAX as u32) as usize)
}

fn uniform(
    members: &[AssignorMember<'_>],
    partitions: &BTreeMap<TopicId, u32>,
    subscribers: &BTreeMap<TopicId, Vec<usize>>,
) -> Vec<Assignment> {
    let mut result = vec![Assignment::new(); members.len()];
    let mut counts = vec![0usize; members.len()];
    // Owner of each partition of each subscribed topic.
    let mut owner: BTreeMap<TopicId, Vec<bool>> = subscribers
        .keys()
        .map(|t| (*t, vec![false; partition_count(partitions, t)]))
        .collect();

    // 1. Stickiness: keep what is still valid, first member first.
    for (i, m) in members.iter().enumerate() {
        for (t, ps) in m.current {
            if !m.topics.contains(t) {
                continue;
            }
            let Some(taken) = owner.get_mut(t) else {
                continue;
            };
            for &p in ps {
                let Some(slot) = usize::try_from(p).ok().and_then(|p| taken.get_mut(p)) else {
                    continue;
                };
                if !*slot {
                    *slot = true;
                    result[i].entry(*t).or_default().insert(p);
                    counts[i] += 1;
                }
            }
        }
    }

    // Most constrained topics (fewest subscribers) first, so flexible ones fill the gaps.
    let mut topics: Vec<TopicId> = subscribers.keys().copied().collect();
    topics.sort_by_key(|t| (subscribers[t].len(), *t));

    // 2. Free partitions to the least-loaded subscriber.
    for t in &topics {
        let subs = &subscribers[t];
        let mut heap: BinaryHeap<Reverse<(usize, usize)>> =
            subs.iter().map(|&i| Reverse((counts[i], i))).collect();
        for (p, taken) in owner[t].iter().enumerate() {
            if *taken {
                continue;
            }
            let Some(Reverse((_, i))) = heap.pop() else {
                break;
            };
            result[i].entry(*t).or_default().insert(p as i32);
            counts[i] += 1;
            heap.push(Reverse((counts[i], i)));
        }
    }

    // 3. Balance.
    for _ in 0..MAX_BALANCE_PASSES {
        let mut moved = false;
        for t in &topics {
            moved |= balance_topic(*t, &subscribers[t], &mut result, &mut counts);
        }
        if !moved {
            break;
        }
    }
    result
}

/// Moves partitions of `topic` from its most-loaded owner to its least-loaded subscriber while
/// they differ by more than one. Every move lowers Σ count², so this ends. Returns whether
/// anything moved.
fn balance_topic(
    topic: TopicId,
    subs: &[usize],
    result: &mut [Assignment],
    counts: &mut [usize],
) -> bool {
    if subs.len() < 2 {
        return false;
    }
    let owns =
        |result: &[Assignment], i: usize| result[i].get(&topic).is_some_and(|s| !s.is_empty());
    // Lazy heaps: an entry is current only while its count matches.
    let mut least: BinaryHeap<Reverse<(usize, usize)>> =
        subs.iter().map(|&i| Reverse((counts[i], i))).collect();
    let mut most: BinaryHeap<(usize, Reverse<usize>)> = subs
        .iter()
        .filter(|&&i| owns(result, i))
        .map(|&i| (counts[i], Reverse(i)))
        .collect();
    let mut moved = false;
    loop {
        let from = loop {
            match most.peek() {
                None => return moved,
                Some(&(c, Reverse(i))) if c == counts[i] && owns(result, i) => break i,
                Some(_) => {
                    most.pop();
                }
            }
        };
        let to = loop {
            match least.peek() {
                None => return moved,
                Some(&Reverse((c, i))) if c == counts[i] => break i,
                Some(_) => {
                    least.pop();
                }
            }
        };
        if counts[from] <= counts[to] + 1 {
            return moved;
        }
        let Some(partitions) = result[from].get_mut(&topic) else {
            return moved;
        };
        let Some(p) = partitions.pop_last() else {
            return moved;
        };
        if partitions.is_empty() {
            result[from].remove(&topic);
        }
        result[to].entry(topic).or_default().insert(p);
        counts[from] -= 1;
        counts[to] += 1;
        most.pop();
        least.pop();
        for i in [from, to] {
            least.push(Reverse((counts[i], i)));
            if owns(result, i) {
                most.push((counts[i], Reverse(i)));
            }
        }
        moved = true;
    }
}

fn range(
    members: &[AssignorMember<'_>],
    partitions: &BTreeMap<TopicId, u32>,
    subscribers: &BTreeMap<TopicId, Vec<usize>>,
) -> Vec<Assignment> {
    // Static members first, by instance id; then the others by member id.
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| {
            let m = &members[i];
            (
                m.instance_id.is_none(),
                m.instance_id.unwrap_or(m.member_id),
            )
        };
        key(a).cmp(&key(b)).then(a.cmp(&b))
    });
    let mut rank = vec![0usize; members.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }

    let mut result = vec![Assignment::new(); members.len()];
    for (t, subs) in subscribers {
        let mut subs = subs.clone();
        subs.sort_by_key(|&i| rank[i]);
        let n = partition_count(partitions, t);
        let quota = n / subs.len();
        let extra = n % subs.len();
        let mut start = 0usize;
        for (j, &i) in subs.iter().enumerate() {
            let len = quota + usize::from(j < extra);
            if len > 0 {
                result[i].insert(*t, (start..start + len).map(|p| p as i32).collect());
            }
            start += len;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn topic(n: u8) -> TopicId {
        TopicId([n; 16])
    }

    /// One generated case: partition counts per topic, and per member its subscription (topic
    /// indices) and a previous target (possibly invalid: unsubscribed topics, partitions out of
    /// range, partitions another member also claims).
    #[derive(Debug, Clone)]
    struct Case {
        counts: Vec<u32>,
        members: Vec<GenMember>,
    }

    #[derive(Debug, Clone)]
    struct GenMember {
        /// Indices into `Case::counts`.
        topics: Vec<usize>,
        instance_id: Option<String>,
        /// (topic index, partition) pairs.
        current: Vec<(usize, i32)>,
    }

    impl Case {
        fn partitions(&self) -> BTreeMap<TopicId, u32> {
            self.counts
                .iter()
                .enumerate()
                .map(|(t, &n)| (topic(t as u8), n))
                .collect()
        }

        fn currents(&self) -> Vec<Assignment> {
            self.members
                .iter()
                .map(|m| {
                    let mut a = Assignment::new();
                    for &(t, p) in &m.current {
                        a.entry(topic(t as u8)).or_default().insert(p);
                    }
                    a
                })
                .collect()
        }

        fn ids(&self) -> Vec<String> {
            (0..self.members.len())
                .map(|i| format!("m{i:02}"))
                .collect()
        }

        fn run(&self, assignor: ServerAssignor, currents: &[Assignment]) -> Vec<Assignment> {
            let ids = self.ids();
            let members: Vec<AssignorMember<'_>> = self
                .members
                .iter()
                .zip(currents)
                .zip(&ids)
                .map(|((m, current), id)| AssignorMember {
                    member_id: id,
                    instance_id: m.instance_id.as_deref(),
                    topics: m.topics.iter().map(|&t| topic(t as u8)).collect(),
                    current,
                })
                .collect();
            assign(assignor, &members, &self.partitions())
        }

        fn subscribed(&self, member: usize, t: TopicId) -> bool {
            self.members[member]
                .topics
                .iter()
                .any(|&i| topic(i as u8) == t)
        }
    }

    fn case(homogeneous: bool) -> impl Strategy<Value = Case> {
        (prop::collection::vec(1u32..10, 1..5), 1usize..8).prop_flat_map(move |(counts, n)| {
            let topics = counts.len();
            let subs = prop::collection::vec(0..topics, 0..=topics);
            let member = (
                subs.clone(),
                prop::option::of("[a-c]"),
                prop::collection::vec((0..topics, -1i32..12), 0..8),
            )
                .prop_map(|(topics, instance_id, current)| GenMember {
                    topics,
                    instance_id,
                    current,
                });
            (
                Just(counts),
                prop::collection::vec(member, n),
                subs.prop_filter("non-empty", |s| !s.is_empty()),
            )
                .prop_map(move |(counts, mut members, shared)| {
                    if homogeneous {
                        for m in &mut members {
                            m.topics = shared.clone();
                        }
                    }
                    // Instance ids must be unique within a group.
                    let mut seen = BTreeSet::new();
                    for m in &mut members {
                        if let Some(i) = &m.instance_id {
                            if !seen.insert(i.clone()) {
                                m.instance_id = None;
                            }
                        }
                    }
                    Case { counts, members }
                })
        })
    }

    /// Every partition of every topic with a subscriber is assigned exactly once, to a
    /// subscriber; nothing else is assigned.
    fn check_exactly_once(case: &Case, out: &[Assignment]) -> Result<(), TestCaseError> {
        let mut seen: BTreeMap<(TopicId, i32), usize> = BTreeMap::new();
        for (i, a) in out.iter().enumerate() {
            for (t, ps) in a {
                prop_assert!(case.subscribed(i, *t), "member {i} got unsubscribed {t:?}");
                prop_assert!(!ps.is_empty(), "empty topic entry kept");
                for &p in ps {
                    let n = case.partitions()[t];
                    prop_assert!(p >= 0 && (p as u32) < n, "partition {p} out of range");
                    prop_assert!(seen.insert((*t, p), i).is_none(), "{t:?}-{p} twice");
                }
            }
        }
        for (t, &n) in case.partitions().iter() {
            let wanted = (0..case.members.len()).any(|i| case.subscribed(i, *t));
            for p in 0..n as i32 {
                prop_assert_eq!(seen.contains_key(&(*t, p)), wanted, "{:?}-{}", t, p);
            }
        }
        Ok(())
    }

    fn sizes(out: &[Assignment]) -> Vec<usize> {
        out.iter()
            .map(|a| a.values().map(BTreeSet::len).sum())
            .collect()
    }

    proptest! {
        #[test]
        fn uniform_homogeneous_is_balanced_and_sticky(case in case(true)) {
            let currents = case.currents();
            let out = case.run(ServerAssignor::Uniform, &currents);
            check_exactly_once(&case, &out)?;
            let sizes = sizes(&out);
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            prop_assert!(max - min <= 1, "unbalanced {:?}", sizes);
            // A member keeps at least min(what it validly had, total / members).
            let total: usize = sizes.iter().sum();
            let quota = total / case.members.len();
            let mut claimed = BTreeSet::new();
            for (i, (cur, new)) in currents.iter().zip(&out).enumerate() {
                let mut valid = 0;
                let mut kept = 0;
                for (t, ps) in cur {
                    for &p in ps {
                        let in_range = p >= 0 && (p as u32) < case.partitions()[t];
                        if case.subscribed(i, *t) && in_range && claimed.insert((*t, p)) {
                            valid += 1;
                            kept += usize::from(new.get(t).is_some_and(|s| s.contains(&p)));
                        }
                    }
                }
                prop_assert!(kept >= valid.min(quota), "member {} kept {} of {}", i, kept, valid);
            }
            // Feeding the result back changes nothing.
            prop_assert_eq!(case.run(ServerAssignor::Uniform, &out), out);
        }

        #[test]
        fn uniform_heterogeneous_is_locally_balanced(case in case(false)) {
            let out = case.run(ServerAssignor::Uniform, &case.currents());
            check_exactly_once(&case, &out)?;
            // No partition can move to another subscriber of its topic to narrow a gap > 1.
            let sizes = sizes(&out);
            for (a, assignment) in out.iter().enumerate() {
                for t in assignment.keys() {
                    for b in 0..case.members.len() {
                        if case.subscribed(b, *t) {
                            prop_assert!(
                                sizes[a] <= sizes[b] + 1,
                                "{:?}: member {} ({}) could give to {} ({})",
                                t, a, sizes[a], b, sizes[b]
                            );
                        }
                    }
                }
            }
            prop_assert_eq!(case.run(ServerAssignor::Uniform, &out), out);
        }

        #[test]
        fn range_gives_contiguous_balanced_ranges(case in case(false)) {
            let out = case.run(ServerAssignor::Range, &case.currents());
            check_exactly_once(&case, &out)?;
            for (t, &n) in case.partitions().iter() {
                let subs: Vec<usize> =
                    (0..case.members.len()).filter(|&i| case.subscribed(i, *t)).collect();
                for &i in &subs {
                    let got: Vec<i32> =
                        out[i].get(t).map(|s| s.iter().copied().collect()).unwrap_or_default();
                    let len = got.len();
                    prop_assert!(len == n as usize / subs.len()
                        || len == n as usize / subs.len() + 1);
                    if let (Some(first), Some(last)) = (got.first(), got.last()) {
                        prop_assert_eq!((last - first + 1) as usize, len, "not contiguous");
                    }
                }
            }
        }

        #[test]
        fn range_co_partitions_equal_topics(case in case(true)) {
            let mut case = case;
            let n = case.counts[0];
            for c in &mut case.counts {
                *c = n;
            }
            let out = case.run(ServerAssignor::Range, &case.currents());
            check_exactly_once(&case, &out)?;
            for a in &out {
                let mut per_topic = a.values();
                if let Some(first) = per_topic.next() {
                    for other in per_topic {
                        prop_assert_eq!(first, other);
                    }
                }
                // Every subscribed topic is present iff the member got any partition.
                let subs = case.members[0].topics.iter().collect::<BTreeSet<_>>().len();
                prop_assert!(a.is_empty() || a.len() == subs);
            }
        }
    }

    fn member<'a>(id: &'a str, topics: &[TopicId], current: &'a Assignment) -> AssignorMember<'a> {
        AssignorMember {
            member_id: id,
            instance_id: None,
            topics: topics.iter().copied().collect(),
            current,
        }
    }

    fn parts(t: TopicId, ps: &[i32]) -> Assignment {
        Assignment::from([(t, ps.iter().copied().collect())])
    }

    #[test]
    fn uniform_new_member_takes_only_the_surplus() {
        let t = topic(1);
        let counts = BTreeMap::from([(t, 6)]);
        let a_prev = parts(t, &[0, 1, 2, 3, 4, 5]);
        let empty = Assignment::new();
        let out = assign(
            ServerAssignor::Uniform,
            &[member("a", &[t], &a_prev), member("b", &[t], &empty)],
            &counts,
        );
        assert_eq!(out[0], parts(t, &[0, 1, 2]));
        assert_eq!(out[1], parts(t, &[3, 4, 5]));
    }

    #[test]
    fn range_orders_static_members_first_by_instance_id() {
        let t = topic(1);
        let counts = BTreeMap::from([(t, 5)]);
        let empty = Assignment::new();
        let mut z = member("a-dynamic", &[t], &empty);
        z.instance_id = None;
        let mut s2 = member("zz", &[t], &empty);
        s2.instance_id = Some("i2");
        let mut s1 = member("yy", &[t], &empty);
        s1.instance_id = Some("i1");
        let out = assign(ServerAssignor::Range, &[z, s2, s1], &counts);
        assert_eq!(out[2], parts(t, &[0, 1]));
        assert_eq!(out[1], parts(t, &[2, 3]));
        assert_eq!(out[0], parts(t, &[4]));
    }

    #[test]
    fn unknown_topics_and_empty_groups_assign_nothing() {
        let counts = BTreeMap::from([(topic(1), 3)]);
        let empty = Assignment::new();
        for a in ServerAssignor::ALL {
            assert!(assign(a, &[], &counts).is_empty());
            let out = assign(a, &[member("m", &[topic(9)], &empty)], &counts);
            assert_eq!(out, vec![Assignment::new()]);
        }
    }
}
