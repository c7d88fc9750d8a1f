//! The one timer of a group, classic or consumer: a task on the coordinating shard that sleeps
//! until the group's next deadline (monotonic [`clock_ms`]) and then calls back into the group's
//! runtime. Dropping the timer (or arming another) cancels the pending tick.

use std::rc::{Rc, Weak};
use std::time::Duration;

use glommio::Task;

use super::groups::clock_ms;
use crate::shard::Shard;

/// What a tick calls: the runtime's handler for `group`'s deadline `at`.
pub type Fire = fn(&Rc<Shard>, &str, u64);

#[derive(Default)]
pub struct GroupTimer {
    armed: Option<(u64, Task<()>)>,
}

impl GroupTimer {
    /// The deadline of the armed tick, if any.
    pub fn armed_at(&self) -> Option<u64> {
        self.armed.as_ref().map(|(at, _)| *at)
    }

    pub fn cancel(&mut self) {
        self.armed = None;
    }

    /// Arms a tick that calls `fire(shard, group, at)` at `at`, replacing any armed one.
    pub fn arm(&mut self, shard: &Rc<Shard>, group: &str, at: u64, fire: Fire) {
        let weak: Weak<Shard> = Rc::downgrade(shard);
        let name = group.to_string();
        let task = glommio::spawn_local(async move {
            let now = clock_ms();
            if at > now {
                glommio::timer::sleep(Duration::from_millis(at - now)).await;
            }
            if let Some(shard) = weak.upgrade() {
                fire(&shard, &name, at);
            }
        });
        self.armed = Some((at, task));
    }

    /// Called by `fire`: true if the tick for `at` is the armed one, which is then disarmed.
    /// A stale tick (superseded by a later `arm`) gets false and changes nothing.
    pub fn take_fired(&mut self, at: u64) -> bool {
        match self.armed.take() {
            Some((armed, task)) if armed == at => {
                // The running task itself: let it finish instead of cancelling it.
                task.detach();
                true
            }
            other => {
                self.armed = other;
                false
            }
        }
    }
}

/// Keeps `since` = the wall-clock time a group last became Empty (offsets retention counts from
/// it), `None` while it is not.
pub fn note_empty_since(since: &mut Option<i64>, empty: bool) {
    if !empty {
        *since = None;
    } else if since.is_none() {
        *since = Some(crate::shard::now_ms());
    }
}
