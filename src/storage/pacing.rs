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
//! The policy ([`Pacer`]) is pure: it takes the time and the samples and returns how long to
//! wait, so it is unit tested with a fake clock.

use std::cell::RefCell;
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
    /// When the last background piece ended, and when the next one may start.
    background_done: Option<Instant>,
    background_next: Option<Instant>,
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
            background_next: None,
        }
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
            (self.rate / 2.0).max(self.max_rate * FLOOR_SHARE)
        } else {
            (self.rate + self.max_rate * STEP_SHARE).min(self.max_rate)
        };
        let wait = Duration::from_secs_f64((bytes as f64 / self.rate).min(10.0));
        self.background_done = Some(now);
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
}

impl IoPacer {
    pub fn new(max_bytes_per_sec: u64) -> IoPacer {
        IoPacer {
            pacer: RefCell::new(Pacer::new(max_bytes_per_sec)),
        }
    }

    /// A foreground fdatasync round took `latency` (ending now).
    pub fn foreground_sync(&self, latency: Duration) {
        self.pacer
            .borrow_mut()
            .foreground_sync(Instant::now(), latency);
    }

    /// Background I/O just moved `bytes`: waits before its next piece.
    pub async fn before_io(&self, bytes: u64) {
        let wait = self.pacer.borrow_mut().before_io(Instant::now(), bytes);
        if !wait.is_zero() {
            glommio::timer::sleep(wait).await;
        }
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
