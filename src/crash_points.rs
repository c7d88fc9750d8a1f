//! Deliberate crash points: a real `SIGKILL` at a named moment (segment roll, index write,
//! compaction swap, retention delete, group-commit fdatasync, ...) so crash tests hit the rare
//! moments on purpose instead of by chance.
//!
//! Off unless the broker is started with `ODRADEK_CRASH_POINTS`, a comma-separated list of
//! `name:probability` (probability per hit, 0..=1), e.g.
//! `ODRADEK_CRASH_POINTS=segment_roll:0.05,index_write:0.1`. The name `*` matches every point.
//! With `ODRADEK_CRASH_ARM_FILE=<path>` a point only fires while that file exists, so a harness
//! can keep the broker alive while it verifies and arm it for the load phase. The random stream
//! is seeded from `ODRADEK_CRASH_SEED` (else time and pid).
//!
//! The same names serve as pause points (`ODRADEK_PAUSE_POINTS`, see [`pause`]): a test that
//! must look at the broker during a moment (an fdatasync) makes it last.
//!
//! Why a real `SIGKILL` of our own process and not `abort()` or an exit: it is exactly what
//! `kill -9` does — no destructors, no buffered writes flushed, io_uring requests in flight
//! abandoned — so the test exercises the same recovery path as an operator's crash.
//!
//! Cost when off: one load of an initialised `OnceLock` and a branch per call. The variable is
//! read once per process, on the first call, from whichever thread makes it.
//!
//! Before firing, one line `crash point <name> fired (hit <n>): SIGKILL` goes to stderr (the
//! broker's log) so a harness can count kills by phase.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable listing the armed points and their probabilities.
pub const ENV_POINTS: &str = "ODRADEK_CRASH_POINTS";
/// The environment variable naming the file whose existence arms the points.
pub const ENV_ARM_FILE: &str = "ODRADEK_CRASH_ARM_FILE";
/// The environment variable seeding the random stream.
pub const ENV_SEED: &str = "ODRADEK_CRASH_SEED";

/// Every point the broker calls, so a spec naming something else is reported at start.
pub const KNOWN_POINTS: &[&str] = &[
    "segment_roll",
    "segment_seal",
    "index_write",
    "producer_snapshot",
    "compaction_cleaned",
    "compaction_swap_before",
    "compaction_swap_after",
    "compaction_merge_removed",
    "compaction_checkpoint",
    "retention_delete",
    "commit_fsync_before",
    "commit_fsync_after",
    "offset_commit_durable",
    "txn_state_durable",
    "txn_markers_written",
];

/// The parsed configuration: which points fire, how likely, when armed.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashPoints {
    points: Vec<(String, f64)>,
    arm_file: Option<std::path::PathBuf>,
}

/// A malformed entry of `ODRADEK_CRASH_POINTS`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("crash point entry {entry:?}: expected name:probability")]
    Shape { entry: String },
    #[error("crash point entry {entry:?}: probability must be a number in 0..=1")]
    Probability { entry: String },
    #[error("crash point entry {entry:?}: no such point (known: {known})")]
    UnknownPoint { entry: String, known: String },
}

impl CrashPoints {
    /// Parses a spec (`name:p,name:p`); empty entries are ignored.
    pub fn parse(spec: &str, arm_file: Option<std::path::PathBuf>) -> Result<Self, SpecError> {
        let mut points = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((name, p)) = entry.split_once(':') else {
                return Err(SpecError::Shape {
                    entry: entry.to_string(),
                });
            };
            let name = name.trim();
            if name != "*" && !KNOWN_POINTS.contains(&name) {
                return Err(SpecError::UnknownPoint {
                    entry: entry.to_string(),
                    known: KNOWN_POINTS.join(","),
                });
            }
            let p: f64 = p.trim().parse().map_err(|_| SpecError::Probability {
                entry: entry.to_string(),
            })?;
            if !(0.0..=1.0).contains(&p) {
                return Err(SpecError::Probability {
                    entry: entry.to_string(),
                });
            }
            points.push((name.to_string(), p));
        }
        Ok(CrashPoints { points, arm_file })
    }

    /// The probability that a hit of `name` fires (the first matching entry; 0 if none).
    pub fn probability(&self, name: &str) -> f64 {
        self.points
            .iter()
            .find(|(n, _)| n == name || n == "*")
            .map_or(0.0, |(_, p)| *p)
    }

    /// True while the arm file exists (always, without one).
    fn armed(&self) -> bool {
        self.arm_file.as_ref().is_none_or(|f| f.exists())
    }
}

static POINTS: OnceLock<Option<CrashPoints>> = OnceLock::new();
static RANDOM: AtomicU64 = AtomicU64::new(0);
static HITS: AtomicU64 = AtomicU64::new(0);

fn load() -> Option<CrashPoints> {
    let spec = std::env::var(ENV_POINTS).ok()?;
    let arm_file = std::env::var_os(ENV_ARM_FILE).map(std::path::PathBuf::from);
    let seed = std::env::var(ENV_SEED)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ ((std::process::id() as u64) << 32)
        });
    RANDOM.store(seed, Ordering::Relaxed);
    match CrashPoints::parse(&spec, arm_file) {
        Ok(points) => {
            let _ = writeln!(
                std::io::stderr(),
                "crash points armed: {spec} (seed {seed})"
            );
            Some(points)
        }
        Err(e) => {
            // A test facility: a typo must not silently turn the crash test into a no-op.
            let _ = writeln!(
                std::io::stderr(),
                "{ENV_POINTS}: {e}; crash points stay off"
            );
            None
        }
    }
}

/// A uniform number in [0, 1) from a lock-free splitmix64 stream shared by all threads.
fn uniform() -> f64 {
    let mut z = RANDOM
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// A crash point: with the configured probability (and while armed), the process sends itself
/// `SIGKILL` here. Does nothing when `ODRADEK_CRASH_POINTS` is not set.
#[inline]
pub fn hit(name: &str) {
    if let Some(points) = POINTS.get_or_init(load) {
        maybe_fire(points, name);
    }
}

#[cold]
fn maybe_fire(points: &CrashPoints, name: &str) {
    let p = points.probability(name);
    if p <= 0.0 || !points.armed() {
        return;
    }
    let n = HITS.fetch_add(1, Ordering::Relaxed) + 1;
    if uniform() < p {
        let _ = writeln!(
            std::io::stderr(),
            "crash point {name} fired (hit {n}): SIGKILL"
        );
        // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught, so nothing runs after it.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        // SIGKILL to ourselves is delivered before kill(2) returns; this is never reached, but
        // if it were, stopping here keeps the promise of a crash at this point.
        std::process::abort();
    }
}

/// The environment variable naming points to pause at, comma-separated `name:milliseconds`
/// (e.g. `ODRADEK_PAUSE_POINTS=commit_fsync_before:2000`): a test that must look at the broker
/// in the middle of a moment too short to catch (an fdatasync) stretches it. Same names as the
/// crash points; only the points reached from async code pause ([`pause`]).
pub const ENV_PAUSES: &str = "ODRADEK_PAUSE_POINTS";

static PAUSES: OnceLock<Vec<(String, u64)>> = OnceLock::new();

/// Parses a pause spec (`name:ms,name:ms`); an entry that is not a known point with a whole
/// number of milliseconds is an error.
pub fn parse_pauses(spec: &str) -> Result<Vec<(String, u64)>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (name, ms) = entry.split_once(':').ok_or_else(|| {
                format!("pause point entry {entry:?}: expected name:milliseconds")
            })?;
            let name = name.trim();
            if !KNOWN_POINTS.contains(&name) {
                return Err(format!("pause point entry {entry:?}: no such point"));
            }
            let ms = ms
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("pause point entry {entry:?}: milliseconds expected"))?;
            Ok((name.to_string(), ms))
        })
        .collect()
}

fn load_pauses() -> Vec<(String, u64)> {
    let Ok(spec) = std::env::var(ENV_PAUSES) else {
        return Vec::new();
    };
    match parse_pauses(&spec) {
        Ok(pauses) => {
            let _ = writeln!(std::io::stderr(), "pause points set: {spec}");
            pauses
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{ENV_PAUSES}: {e}; no pauses");
            Vec::new()
        }
    }
}

/// A pause point: waits (without blocking the shard) the milliseconds `ODRADEK_PAUSE_POINTS`
/// gives `name`. Does nothing, and costs a load and a branch, when it is not set.
pub async fn pause(name: &str) {
    let pauses = PAUSES.get_or_init(load_pauses);
    if pauses.is_empty() {
        return;
    }
    if let Some((_, ms)) = pauses.iter().find(|(n, _)| n == name) {
        glommio::timer::sleep(std::time::Duration::from_millis(*ms)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pause_points() {
        assert_eq!(
            parse_pauses(" commit_fsync_before:2000,,").unwrap(),
            vec![("commit_fsync_before".to_string(), 2000)]
        );
        assert!(parse_pauses("commit_fsync_before").is_err());
        assert!(parse_pauses("commit_fsync_before:soon").is_err());
        assert!(parse_pauses("no_such_point:10").is_err());
        assert!(parse_pauses("").unwrap().is_empty());
    }

    #[test]
    fn parses_points_and_wildcard() {
        let c = CrashPoints::parse(" segment_roll:0.5, index_write:1 ,,", None).unwrap();
        assert_eq!(c.probability("segment_roll"), 0.5);
        assert_eq!(c.probability("index_write"), 1.0);
        assert_eq!(c.probability("retention_delete"), 0.0);
        let all = CrashPoints::parse("retention_delete:0.2,*:0.01", None).unwrap();
        assert_eq!(all.probability("retention_delete"), 0.2);
        assert_eq!(all.probability("commit_fsync_after"), 0.01);
        assert!(CrashPoints::parse("", None).unwrap().points.is_empty());
    }

    #[test]
    fn rejects_bad_entries() {
        assert!(matches!(
            CrashPoints::parse("segment_roll", None),
            Err(SpecError::Shape { .. })
        ));
        assert!(matches!(
            CrashPoints::parse("segment_roll:often", None),
            Err(SpecError::Probability { .. })
        ));
        assert!(matches!(
            CrashPoints::parse("segment_roll:1.5", None),
            Err(SpecError::Probability { .. })
        ));
        assert!(matches!(
            CrashPoints::parse("segmentroll:0.5", None),
            Err(SpecError::UnknownPoint { .. })
        ));
    }

    #[test]
    fn arm_file_gates_firing() {
        let dir = tempfile::tempdir().unwrap();
        let arm = dir.path().join("armed");
        let c = CrashPoints::parse("*:1", Some(arm.clone())).unwrap();
        assert!(!c.armed());
        std::fs::write(&arm, b"").unwrap();
        assert!(c.armed());
        // Disarmed, a probability-1 point is a no-op (the test process survives it).
        std::fs::remove_file(&arm).unwrap();
        maybe_fire(&c, "segment_roll");
        assert!(CrashPoints::parse("*:1", None).unwrap().armed());
    }

    #[test]
    fn uniform_stays_in_range_and_varies() {
        let xs: Vec<f64> = (0..1000).map(|_| uniform()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
    }
}
