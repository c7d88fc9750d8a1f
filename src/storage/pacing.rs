//! Pacing background I/O (compaction) so it does not slow the produce path down.
//!
//! A fixed byte rate is not enough: how much background reading a disk absorbs without delaying
//! the produce path's fdatasyncs changes with the disk, its other tenants and the foreground
//! load. So the pacer watches the foreground's own fdatasync latency (the group commit reports
//! every round) and compares it with the latency of rounds that ran while no background I/O was
//! in flight (the quiet level). It adapts the background rate, additive increase /
//! multiplicative decrease: while the recent latency stays near the quiet level the rate climbs
//! back towards the configured maximum; when it rises well above it, the rate halves (down to a
//! floor, so the background work still finishes). With no foreground fdatasyncs there is
//! nothing to protect and the maximum applies.
//!
//! Background I/O calls [`IoPacer::before_io`] right after each piece it moved and sleeps the
//! returned time before the next one: a round that started and ended inside that sleep is a
//! quiet sample.
//!
//! The maximum is a dynamic broker config (`log.cleaner.io.max.bytes.per.second`, applied by
//! the shard with every new metadata image): [`IoPacer::set_max_rate`] recomputes a pause
//! already under way for the new rate and wakes the sleeper, so a pass paused at a very low
//! rate resumes at once when the rate goes up, instead of sleeping out the old pause.
//!
//! The policy ([`Pacer`]) is pure: it takes the time and the samples and returns how long to
//! wait, so it is unit tested with a fake clock.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Recent latency above `quiet * SLOW_FACTOR + SLOW_SLACK` means the background slows the
/// foreground down.
const SLOW_FACTOR: f64 = 1.5;
const SLOW_SLACK: Duration = Duration::from_micros(300);
/// Weight of a new sample in the moving averages.
const RECENT_WEIGHT: f64 = 0.25;
const QUIET_WEIGHT: f64 = 0.1;
/// No foreground fdatasync for this long: nothing to protect.
const IDLE_AFTER: Duration = Duration::from_millis(500);
/// The rate never drops below this share of the maximum, and climbs back by this share per
/// piece.
const FLOOR_SHARE: f64 = 1.0 / 32.0;
const STEP_SHARE: f64 = 1.0 / 16.0;
/// Longest pause after one piece, whatever the rate (a piece is at most a few hundred KiB, so
/// this only binds at rates of a few KiB/s and below, which pause the work in effect).
const MAX_WAIT: Duration = Duration::from_secs(10);

/// The pacing policy (see the module docs).
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Bytes per second at most; 0: no limit and no pacing.
    max_rate: f64,
    rate: f64,
    /// Foreground fdatasync latency in seconds: all rounds, and rounds with no background I/O
    /// in flight (`None` until one was seen).
    recent: Option<f64>,
    quiet: Option<f64>,
    last_sample: Option<Instant>,
    /// When the last background piece ended, its size, and when the next one may start.
    background_done: Option<Instant>,
    background_bytes: u64,
    background_next: Option<Instant>,
    /// Pieces after which the rate was lowered because the foreground ran slow.
    slowdowns: u64,
}

fn average(avg: Option<f64>, sample: f64, weight: f64) -> f64 {
    match avg {
        None => sample,
        Some(a) => a + weight * (sample - a),
    }
}

impl Pacer {
    pub fn new(max_bytes_per_sec: u64) -> Pacer {
        Pacer {
            max_rate: max_bytes_per_sec as f64,
            rate: max_bytes_per_sec as f64,
            recent: None,
            quiet: None,
            last_sample: None,
            background_done: None,
            background_bytes: 0,
            background_next: None,
            slowdowns: 0,
        }
    }

    /// A new maximum (the dynamic config changed). The adaptive rate keeps its share of the
    /// maximum, and the pause after the last piece is recomputed at the new rate: the next
    /// piece may start when the new rate allows (see [`Pacer::wait_left`]).
    pub fn set_max_rate(&mut self, max_bytes_per_sec: u64) {
        let max = max_bytes_per_sec as f64;
        if max == self.max_rate {
            return;
        }
        self.rate = if self.max_rate > 0.0 && max > 0.0 {
            (self.rate / self.max_rate * max).clamp(max * FLOOR_SHARE, max)
        } else {
            max
        };
        self.max_rate = max;
        if let Some(done) = self.background_done {
            self.background_next = Some(done + self.wait_for(self.background_bytes));
        }
    }

    /// The configured maximum, bytes per second (0: no limit).
    pub fn max_rate(&self) -> u64 {
        self.max_rate as u64
    }

    /// How long, from `now`, the next background piece must still wait.
    pub fn wait_left(&self, now: Instant) -> Duration {
        self.background_next
            .map_or(Duration::ZERO, |next| next.saturating_duration_since(now))
    }

    /// Pieces after which the rate was halved because the foreground's fdatasyncs ran slow.
    pub fn slowdowns(&self) -> u64 {
        self.slowdowns
    }

    /// The pause `bytes` earn at the current rate.
    fn wait_for(&self, bytes: u64) -> Duration {
        if self.max_rate <= 0.0 || self.rate <= 0.0 || bytes == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(bytes as f64 / self.rate).min(MAX_WAIT)
    }

    /// A foreground fdatasync round ended at `now` after `latency`.
    pub fn foreground_sync(&mut self, now: Instant, latency: Duration) {
        let l = latency.as_secs_f64();
        self.recent = Some(average(self.recent, l, RECENT_WEIGHT));
        let started = now.checked_sub(latency).unwrap_or(now);
        let quiet = match (self.background_done, self.background_next) {
            (None, _) => true,
            (Some(done), Some(next)) => started >= done && now <= next,
            (Some(_), None) => false,
        };
        if quiet {
            self.quiet = Some(average(self.quiet, l, QUIET_WEIGHT));
        }
        self.last_sample = Some(now);
    }

    /// Whether the foreground's fdatasyncs are currently slower than when the background is
    /// quiet.
    pub fn foreground_slow(&self, now: Instant) -> bool {
        match (self.recent, self.quiet) {
            (Some(recent), Some(quiet)) => {
                self.foreground_active(now)
                    && recent > quiet * SLOW_FACTOR + SLOW_SLACK.as_secs_f64()
            }
            _ => false,
        }
    }

    fn foreground_active(&self, now: Instant) -> bool {
        self.last_sample
            .is_some_and(|t| now.saturating_duration_since(t) < IDLE_AFTER)
    }

    /// Background I/O just moved `bytes`: how long to wait before its next piece, adapting the
    /// rate.
    pub fn before_io(&mut self, now: Instant, bytes: u64) -> Duration {
        if self.max_rate <= 0.0 || bytes == 0 {
            return Duration::ZERO;
        }
        self.rate = if !self.foreground_active(now) {
            self.max_rate
        } else if self.foreground_slow(now) {
            self.slowdowns += 1;
            (self.rate / 2.0).max(self.max_rate * FLOOR_SHARE)
        } else {
            (self.rate + self.max_rate * STEP_SHARE).min(self.max_rate)
        };
        let wait = self.wait_for(bytes);
        self.background_done = Some(now);
        self.background_bytes = bytes;
        self.background_next = Some(now + wait);
        wait
    }

    /// The rate the last [`Pacer::before_io`] allowed, bytes per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }
}

/// A shard's pacer: the group commit reports to it, background tasks wait on it.
#[derive(Debug)]
pub struct IoPacer {
    pacer: RefCell<Pacer>,
    /// Bumped by every change of the maximum; a pause under way wakes on it and recomputes.
    generation: Cell<u64>,
    /// Tasks pausing in [`IoPacer::before_io`], one waker per task (the compaction pass is one
    /// task per shard).
    sleepers: RefCell<Vec<Waker>>,
    /// Bytes background I/O reported moving.
    bytes: Cell<u64>,
}

impl IoPacer {
    pub fn new(max_bytes_per_sec: u64) -> IoPacer {
        IoPacer {
            pacer: RefCell::new(Pacer::new(max_bytes_per_sec)),
            generation: Cell::new(0),
            sleepers: RefCell::new(Vec::new()),
            bytes: Cell::new(0),
        }
    }

    /// A foreground fdatasync round took `latency` (ending now).
    pub fn foreground_sync(&self, latency: Duration) {
        self.pacer
            .borrow_mut()
            .foreground_sync(Instant::now(), latency);
    }

    /// Sets the maximum (`log.cleaner.io.max.bytes.per.second`); a pause under way is
    /// recomputed for it at once. True if it changed.
    pub fn set_max_rate(&self, max_bytes_per_sec: u64) -> bool {
        {
            let mut p = self.pacer.borrow_mut();
            if p.max_rate() == max_bytes_per_sec {
                return false;
            }
            p.set_max_rate(max_bytes_per_sec);
        }
        self.generation.set(self.generation.get().wrapping_add(1));
        let sleepers = std::mem::take(&mut *self.sleepers.borrow_mut());
        for w in sleepers {
            w.wake();
        }
        true
    }

    /// Background I/O just moved `bytes`: waits before its next piece. A change of the
    /// maximum during the wait shortens or lengthens it to what the new rate allows.
    pub async fn before_io(&self, bytes: u64) {
        self.bytes.set(self.bytes.get().saturating_add(bytes));
        let mut wait = self.pacer.borrow_mut().before_io(Instant::now(), bytes);
        while !wait.is_zero() {
            let changed = RateChanged {
                pacer: self,
                generation: self.generation.get(),
            };
            futures_lite::future::or(glommio::timer::sleep(wait), changed).await;
            wait = self.pacer.borrow().wait_left(Instant::now());
        }
    }

    /// The configured maximum, bytes per second (0: no limit).
    pub fn max_rate(&self) -> u64 {
        self.pacer.borrow().max_rate()
    }

    /// The rate the adaptive policy allows now, bytes per second.
    pub fn rate(&self) -> u64 {
        self.pacer.borrow().rate() as u64
    }

    /// Bytes background I/O has moved under this pacer.
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }

    /// Pieces after which the rate was halved because the foreground ran slow.
    pub fn slowdowns(&self) -> u64 {
        self.pacer.borrow().slowdowns()
    }
}

/// Completes at the first change of the pacer's maximum after `generation`.
struct RateChanged<'a> {
    pacer: &'a IoPacer,
    generation: u64,
}

impl Future for RateChanged<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.pacer.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut sleepers = self.pacer.sleepers.borrow_mut();
        if !sleepers.iter().any(|w| w.will_wake(cx.waker())) {
            sleepers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A pacer that has seen a steady 1 ms foreground, no background, for a second.
    fn settled() -> (Pacer, Instant) {
        let mut p = Pacer::new(50 * MIB);
        let mut now = Instant::now();
        for _ in 0..1000 {
            now += ms(1);
            p.foreground_sync(now, ms(1));
        }
        (p, now)
    }

    #[test]
    fn no_limit_never_waits() {
        let mut p = Pacer::new(0);
        let now = Instant::now();
        p.foreground_sync(now, ms(50));
        assert_eq!(p.before_io(now, MIB), Duration::ZERO);
    }

    #[test]
    fn idle_foreground_gets_the_maximum_rate() {
        let (mut p, now) = settled();
        // 1 MiB at 50 MiB/s: 20 ms.
        assert_eq!(p.before_io(now, MIB), ms(20));
        for _ in 0..10 {
            p.foreground_sync(now, ms(40));
        }
        assert!(p.foreground_slow(now));
        assert!(p.before_io(now, MIB) > ms(20));
        // Half a second after the last fdatasync the foreground counts as idle again.
        assert_eq!(p.before_io(now + ms(600), MIB), ms(20));
    }

    #[test]
    fn slow_fdatasyncs_halve_the_rate_down_to_the_floor_then_it_climbs_back() {
        let (mut p, mut now) = settled();
        assert!(!p.foreground_slow(now));
        assert_eq!(p.before_io(now, MIB), ms(20));
        // While the background reads, the foreground's fdatasyncs take 5x longer: the rate
        // halves on every piece...
        for _ in 0..5 {
            p.foreground_sync(now, ms(5));
        }
        assert!(p.foreground_slow(now));
        let rates: Vec<f64> = (0..8)
            .map(|_| {
                p.before_io(now, MIB);
                p.rate() / MIB as f64
            })
            .collect();
        assert_eq!(rates[..3], [25.0, 12.5, 6.25]);
        // ...but never below 1/32 of the maximum.
        assert_eq!(*rates.last().unwrap(), 50.0 / 32.0);

        // Back to 1 ms: it climbs back, a sixteenth of the maximum per piece.
        for _ in 0..20 {
            now += ms(1);
            p.foreground_sync(now, ms(1));
        }
        assert!(!p.foreground_slow(now));
        p.before_io(now, MIB);
        assert_eq!(p.rate() / MIB as f64, 50.0 / 32.0 + 50.0 / 16.0);
        for _ in 0..20 {
            p.before_io(now, MIB);
        }
        assert_eq!(p.rate(), (50 * MIB) as f64);
    }

    #[test]
    fn quiet_level_comes_only_from_rounds_inside_a_background_pause() {
        let (mut p, now) = settled();
        // A piece ends at `now`; the next may start 20 ms later.
        assert_eq!(p.before_io(now, MIB), ms(20));
        // Rounds overlapping background I/O do not move the quiet level, however many...
        let mut t = now + ms(25);
        for _ in 0..1000 {
            p.foreground_sync(t, ms(4));
        }
        assert!(p.foreground_slow(t), "4 ms against a quiet 1 ms");
        // ...a round inside the pause does.
        let (mut q, now) = settled();
        q.before_io(now, MIB);
        t = now + ms(15);
        for _ in 0..100 {
            q.foreground_sync(t, ms(4));
        }
        assert!(
            !q.foreground_slow(t),
            "4 ms with no background running is the disk itself"
        );
    }

    #[test]
    fn a_new_maximum_recomputes_the_pause_under_way() {
        let (mut p, now) = settled();
        // At 1 byte/s a 256 KiB piece earns the longest pause.
        p.set_max_rate(1);
        assert_eq!(p.before_io(now, 256 << 10), MAX_WAIT);
        assert_eq!(p.wait_left(now + ms(100)), MAX_WAIT - ms(100));
        // Back to 50 MiB/s: the same piece earns 5 ms from when it ended, so 100 ms later
        // nothing is left to wait.
        p.set_max_rate(50 * MIB);
        assert_eq!(p.max_rate(), 50 * MIB);
        assert_eq!(p.wait_left(now), ms(5));
        assert_eq!(p.wait_left(now + ms(100)), Duration::ZERO);
        // Down again: the pause grows to what the new rate allows (1 MiB/s: 250 ms).
        p.set_max_rate(MIB);
        assert_eq!(p.wait_left(now), ms(250));
        // No limit: no pause.
        p.set_max_rate(0);
        assert_eq!(p.wait_left(now), Duration::ZERO);
        assert_eq!(p.before_io(now, MIB), Duration::ZERO);
    }

    #[test]
    fn a_new_maximum_keeps_the_adaptive_share() {
        let (mut p, now) = settled();
        p.before_io(now, MIB);
        for _ in 0..5 {
            p.foreground_sync(now, ms(5));
        }
        p.before_io(now, MIB);
        p.before_io(now, MIB);
        // Halved twice: a quarter of the maximum, two slowdowns counted.
        assert_eq!(p.rate(), (50 * MIB) as f64 / 4.0);
        assert_eq!(p.slowdowns(), 2);
        p.set_max_rate(100 * MIB);
        assert_eq!(p.rate(), (100 * MIB) as f64 / 4.0);
        // From no limit the new maximum applies whole.
        p.set_max_rate(0);
        p.set_max_rate(8 * MIB);
        assert_eq!(p.rate(), (8 * MIB) as f64);
    }

    /// A pass sleeping out a long pause at a near-zero rate resumes as soon as the rate is
    /// raised, not when the old pause ends.
    #[test]
    fn raising_the_maximum_wakes_a_sleeping_pass() {
        let took = crate::io::test_executor::on_executor(|| async {
            let pacer = std::rc::Rc::new(IoPacer::new(1));
            let sleeper = pacer.clone();
            let started = Instant::now();
            let pass = glommio::spawn_local(async move {
                sleeper.before_io(256 << 10).await;
                started.elapsed()
            });
            glommio::timer::sleep(ms(50)).await;
            assert!(pacer.set_max_rate(50 * MIB));
            assert!(!pacer.set_max_rate(50 * MIB), "unchanged");
            let took = pass.await;
            assert_eq!(pacer.bytes(), 256 << 10);
            took
        });
        assert!(took >= ms(50), "slept until the change: {took:?}");
        assert!(
            took < ms(2000),
            "woke at the change, not after 10 s: {took:?}"
        );
    }

    #[test]
    fn small_jitter_is_not_slowness() {
        let (mut p, mut now) = settled();
        for i in 0..1000u64 {
            // 1.0 to 1.2 ms: within the slack.
            p.foreground_sync(now, Duration::from_micros(1000 + (i % 3) * 100));
            now += ms(1);
            assert!(!p.foreground_slow(now));
        }
    }
}
