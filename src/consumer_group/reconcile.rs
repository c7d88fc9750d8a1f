//! One member's step towards its target (the behaviour of Kafka's `CurrentAssignmentBuilder`):
//! revoke before assign, and never hand out a partition another member still owns.
//!
//! From its current assignment (epoch, state, assigned, pending revocation), the target (epoch,
//! partitions) and what the member reported owning, the next assignment is:
//! - Stable at the target epoch: nothing to do.
//! - UnrevokedPartitions: nothing until the member reports none of the pending partitions
//!   (not reporting counts as still owning); then they are released and it continues below.
//! - Otherwise, with keep = assigned ∩ target and revoke = assigned − target: if the member
//!   still owns some of `revoke`, it keeps only `keep`, stays at its epoch and must revoke
//!   (UnrevokedPartitions). Else it moves to the target epoch with `keep` plus the target
//!   partitions nobody else owns; if some are still owned elsewhere it is UnreleasedPartitions
//!   (it gets them on a later heartbeat, once released), else Stable.

use super::{Assignment, MemberState, TopicId};

/// A member's current assignment: the part of the member reconciliation changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CurrentAssignment {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
}

/// The member's next assignment, or `None` when it does not change. `owned` is what the member
/// reported (`None`: not reported); `owned_by_other` tells whether another member holds a
/// partition (in its assigned or pending-revocation set).
pub(crate) fn reconcile(
    current: &CurrentAssignment,
    target_epoch: i32,
    target: &Assignment,
    owned: Option<&Assignment>,
    owned_by_other: impl Fn(TopicId, i32) -> bool,
) -> Option<CurrentAssignment> {
    let next = match current.state {
        MemberState::Stable if current.member_epoch == target_epoch => return None,
        MemberState::UnrevokedPartitions if still_owns(&current.pending_revocation, owned) => {
            return None
        }
        MemberState::Stable
        | MemberState::UnrevokedPartitions
        | MemberState::UnreleasedPartitions => {
            next_assignment(current, target_epoch, target, owned, owned_by_other)
        }
    };
    (next != *current).then_some(next)
}

fn next_assignment(
    current: &CurrentAssignment,
    target_epoch: i32,
    target: &Assignment,
    owned: Option<&Assignment>,
    owned_by_other: impl Fn(TopicId, i32) -> bool,
) -> CurrentAssignment {
    let mut keep = Assignment::new();
    let mut revoke = Assignment::new();
    let mut grant = Assignment::new();
    let mut unreleased = false;
    for (topic, partitions) in &current.assigned {
        let wanted = target.get(topic);
        for &p in partitions {
            let side = if wanted.is_some_and(|w| w.contains(&p)) {
                &mut keep
            } else {
                &mut revoke
            };
            side.entry(*topic).or_default().insert(p);
        }
    }
    for (topic, partitions) in target {
        let mine = current.assigned.get(topic);
        for &p in partitions {
            if mine.is_some_and(|m| m.contains(&p)) {
                continue;
            }
            if owned_by_other(*topic, p) {
                unreleased = true;
            } else {
                grant.entry(*topic).or_default().insert(p);
            }
        }
    }

    if still_owns(&revoke, owned) {
        return CurrentAssignment {
            member_epoch: current.member_epoch,
            previous_member_epoch: current.previous_member_epoch,
            state: MemberState::UnrevokedPartitions,
            assigned: keep,
            pending_revocation: revoke,
        };
    }
    for (topic, partitions) in grant {
        keep.entry(topic).or_default().extend(partitions);
    }
    let previous_member_epoch = if current.member_epoch == target_epoch {
        current.previous_member_epoch
    } else {
        current.member_epoch
    };
    CurrentAssignment {
        member_epoch: target_epoch,
        previous_member_epoch,
        state: if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        },
        assigned: keep,
        pending_revocation: Assignment::new(),
    }
}

/// Whether the member may still own any of `partitions`: unknown when it did not report.
fn still_owns(partitions: &Assignment, owned: Option<&Assignment>) -> bool {
    if partitions.values().all(|p| p.is_empty()) {
        return false;
    }
    let Some(owned) = owned else {
        return true;
    };
    partitions.iter().any(|(topic, ps)| {
        owned
            .get(topic)
            .is_some_and(|o| ps.iter().any(|p| o.contains(p)))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const T: TopicId = TopicId([7; 16]);

    fn parts(ps: &[i32]) -> Assignment {
        if ps.is_empty() {
            return Assignment::new();
        }
        Assignment::from([(T, ps.iter().copied().collect::<BTreeSet<_>>())])
    }

    fn stable(epoch: i32, ps: &[i32]) -> CurrentAssignment {
        CurrentAssignment {
            member_epoch: epoch,
            previous_member_epoch: epoch - 1,
            state: MemberState::Stable,
            assigned: parts(ps),
            pending_revocation: Assignment::new(),
        }
    }

    fn free(_: TopicId, _: i32) -> bool {
        false
    }

    #[test]
    fn reconciled_member_does_not_change() {
        assert_eq!(
            reconcile(&stable(3, &[0]), 3, &parts(&[1]), None, free),
            None
        );
    }

    #[test]
    fn revocation_first_then_new_epoch_with_free_partitions() {
        let cur = stable(3, &[0, 1, 2]);
        let target = parts(&[2, 3]);
        let next = reconcile(&cur, 4, &target, Some(&parts(&[0, 1, 2])), free).unwrap();
        assert_eq!(next.state, MemberState::UnrevokedPartitions);
        assert_eq!(next.member_epoch, 3);
        assert_eq!(next.assigned, parts(&[2]));
        assert_eq!(next.pending_revocation, parts(&[0, 1]));
        // Not reported, or still owning one: no progress.
        assert_eq!(reconcile(&next, 4, &target, None, free), None);
        assert_eq!(
            reconcile(&next, 4, &target, Some(&parts(&[1, 2])), free),
            None
        );
        // Revoked: new epoch, gets 3.
        let done = reconcile(&next, 4, &target, Some(&parts(&[2])), free).unwrap();
        assert_eq!(done.state, MemberState::Stable);
        assert_eq!((done.member_epoch, done.previous_member_epoch), (4, 3));
        assert_eq!(done.assigned, parts(&[2, 3]));
        assert!(done.pending_revocation.is_empty());
    }

    #[test]
    fn partitions_already_gone_are_not_revoked_again() {
        let cur = stable(3, &[0, 1]);
        let next = reconcile(&cur, 4, &parts(&[1]), Some(&parts(&[1])), free).unwrap();
        assert_eq!(next.state, MemberState::Stable);
        assert_eq!(next.member_epoch, 4);
        assert_eq!(next.assigned, parts(&[1]));
    }

    #[test]
    fn partitions_owned_elsewhere_wait_until_released() {
        let cur = stable(0, &[]);
        let target = parts(&[0, 1]);
        let held = |_: TopicId, p: i32| p == 1;
        let next = reconcile(&cur, 2, &target, Some(&Assignment::new()), held).unwrap();
        assert_eq!(next.state, MemberState::UnreleasedPartitions);
        assert_eq!(next.member_epoch, 2);
        assert_eq!(next.assigned, parts(&[0]));
        // Still held: unchanged.
        assert_eq!(reconcile(&next, 2, &target, None, held), None);
        // Released.
        let done = reconcile(&next, 2, &target, None, free).unwrap();
        assert_eq!(done.state, MemberState::Stable);
        assert_eq!(done.assigned, parts(&[0, 1]));
    }
}
