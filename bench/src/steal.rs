//! Steal time: CPU time a virtual machine's host gave to someone else while the guest had work
//! for that CPU. On a shared VM it comes and goes (the development VM has lost 1% and 40% of
//! each CPU within the same hour), and a run that lost a third of its CPUs measures the host,
//! not the broker. The bench reads it from `/proc/stat` once a second and over the measured
//! window, so every figure carries what the machine took from it.

use std::collections::BTreeMap;

/// Above this share of a CPU lost to the host over the measured window, the run's figures are
/// not comparable with runs that lost less, and the summary says so.
pub const STEAL_WARNING: f64 = 0.05;

/// Every CPU's steal and total time counters, clock ticks, as `/proc/stat` gives them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StealTicks {
    /// (CPU number, steal ticks, all ticks), in `/proc/stat`'s order.
    cpus: Vec<(usize, u64, u64)>,
}

/// One CPU's steal and total ticks between two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StealDelta {
    pub cpu: usize,
    pub steal: u64,
    pub total: u64,
}

impl StealDelta {
    /// The share of this CPU's time the host took (0 when no time passed).
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.steal as f64 / self.total as f64
        }
    }
}

impl StealTicks {
    /// The counters now (`None` if `/proc/stat` cannot be read).
    pub fn now() -> Option<StealTicks> {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .map(|s| Self::parse(&s))
    }

    /// The `cpuN` lines of a `/proc/stat` text (the summed `cpu` line is left out).
    pub fn parse(stat: &str) -> StealTicks {
        let cpus = stat
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let cpu = fields.next()?.strip_prefix("cpu")?.parse().ok()?;
                // user nice system idle iowait irq softirq steal; guest time is inside user.
                let ticks: Vec<u64> = fields.take(8).map(|v| v.parse().unwrap_or(0)).collect();
                let steal = ticks.get(7).copied().unwrap_or(0);
                Some((cpu, steal, ticks.iter().sum()))
            })
            .collect();
        StealTicks { cpus }
    }

    /// Per CPU, what passed between `earlier` and these counters. CPUs missing from either
    /// reading (taken offline) are left out; counters that went backwards count as nothing.
    pub fn since(&self, earlier: &StealTicks) -> Vec<StealDelta> {
        self.cpus
            .iter()
            .filter_map(|&(cpu, steal, total)| {
                let &(_, s0, t0) = earlier.cpus.iter().find(|c| c.0 == cpu)?;
                Some(StealDelta {
                    cpu,
                    steal: steal.saturating_sub(s0),
                    total: total.saturating_sub(t0),
                })
            })
            .collect()
    }
}

/// Steal over a stretch of work that is not split into seconds (the ceiling's measurements):
/// read at [`StealWindow::start`], taken at [`StealWindow::finish`].
pub struct StealWindow(Option<StealTicks>);

impl StealWindow {
    pub fn start() -> StealWindow {
        StealWindow(StealTicks::now())
    }

    /// Per CPU, what the host took since the start (empty if `/proc/stat` could not be read).
    pub fn finish(&self) -> Vec<StealDelta> {
        match (StealTicks::now(), &self.0) {
            (Some(now), Some(start)) => now.since(start),
            _ => Vec::new(),
        }
    }
}

/// Per CPU (`cpu0`, `cpu1`, ...), the share the host took, to three decimals: the JSON form.
pub fn by_cpu(deltas: &[StealDelta]) -> BTreeMap<String, f64> {
    deltas
        .iter()
        .map(|d| {
            (
                format!("cpu{}", d.cpu),
                (d.fraction() * 1000.0).round() / 1000.0,
            )
        })
        .collect()
}

/// "cpu0 0.012, cpu1 0.034": the text form.
pub fn per_cpu_text(deltas: &[StealDelta]) -> String {
    deltas
        .iter()
        .map(|d| format!("cpu{} {:.3}", d.cpu, d.fraction()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "; host steal cpu0 0.012, cpu1 0.034" after a ceiling's figures, with a warning from
/// [`STEAL_WARNING`]: a ceiling measured in a starved moment reads low.
pub fn ceiling_suffix(deltas: &[StealDelta]) -> String {
    if deltas.is_empty() {
        return String::new();
    }
    let mut s = format!("; host steal {}", per_cpu_text(deltas));
    if max_fraction(deltas) >= STEAL_WARNING {
        s.push_str(&format!(
            " (WARNING: the host took {:.0}% or more of a CPU while this was measured)",
            STEAL_WARNING * 100.0
        ));
    }
    s
}

/// Serializes per-CPU deltas as [`by_cpu`] gives them (`serialize_with` for the ceilings).
pub fn serialize_by_cpu<S: serde::Serializer>(
    deltas: &[StealDelta],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&by_cpu(deltas), serializer)
}

/// The largest share any one CPU lost to the host.
pub fn max_fraction(deltas: &[StealDelta]) -> f64 {
    deltas.iter().map(StealDelta::fraction).fold(0.0, f64::max)
}

/// Per CPU, the sum of several stretches' deltas (the seconds of a measured window).
pub fn sum(stretches: &[Vec<StealDelta>]) -> Vec<StealDelta> {
    let mut out: Vec<StealDelta> = Vec::new();
    for d in stretches.iter().flatten() {
        match out.iter_mut().find(|o| o.cpu == d.cpu) {
            Some(o) => {
                o.steal += d.steal;
                o.total += d.total;
            }
            None => out.push(*d),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "cpu  300 0 100 1000 0 0 0 60 0 0\n\
                          cpu0 100 0 50 500 0 0 0 10 0 0\n\
                          cpu1 200 0 50 500 0 0 0 50 0 0\n\
                          intr 1 2 3\n\
                          cpu_not_a_cpu 1 2\n";
    const AFTER: &str = "cpu  400 0 200 1100 0 0 0 160 0 0\n\
                         cpu0 150 0 100 550 0 0 0 20 0 0\n\
                         cpu1 250 0 100 550 10 5 5 140 7 0\n";

    #[test]
    fn steal_is_read_per_cpu_and_taken_between_readings() {
        let (before, after) = (StealTicks::parse(BEFORE), StealTicks::parse(AFTER));
        assert_eq!(before.cpus, vec![(0, 10, 660), (1, 50, 800)]);
        let d = after.since(&before);
        // cpu0: 50 + 50 + 50 idle + 10 steal = 160 ticks, 10 of them stolen.
        // cpu1: 50 + 50 + 50 + 10 iowait + 5 irq + 5 softirq + 90 steal = 260; guest (7) is
        // already inside user and is not counted twice.
        assert_eq!(
            d,
            vec![
                StealDelta {
                    cpu: 0,
                    steal: 10,
                    total: 160
                },
                StealDelta {
                    cpu: 1,
                    steal: 90,
                    total: 260
                }
            ]
        );
        assert!((max_fraction(&d) - 90.0 / 260.0).abs() < 1e-12);
        assert_eq!(max_fraction(&[]), 0.0);
        assert_eq!(StealDelta::default().fraction(), 0.0);
    }

    #[test]
    fn a_cpu_missing_from_a_reading_is_left_out_and_counters_never_go_negative() {
        let before = StealTicks::parse("cpu0 10 0 0 10 0 0 0 5\n");
        let after = StealTicks::parse("cpu0 5 0 0 5 0 0 0 1\ncpu1 1 1 1 1 1 1 1 1\n");
        assert_eq!(
            after.since(&before),
            vec![StealDelta {
                cpu: 0,
                steal: 0,
                total: 0
            }]
        );
        assert_eq!(StealTicks::parse("").since(&before), vec![]);
    }

    #[test]
    fn stretches_add_up_per_cpu() {
        let a = |cpu, steal, total| StealDelta { cpu, steal, total };
        let s = sum(&[
            vec![a(0, 1, 100), a(1, 30, 100)],
            vec![a(1, 10, 100), a(0, 3, 100)],
        ]);
        assert_eq!(s, vec![a(0, 4, 200), a(1, 40, 200)]);
        assert!((s[1].fraction() - 0.2).abs() < 1e-12);
        assert_eq!(per_cpu_text(&s), "cpu0 0.020, cpu1 0.200");
        let map = by_cpu(&[a(0, 1, 3), a(1, 0, 0)]);
        assert_eq!(map.get("cpu0"), Some(&0.333));
        assert_eq!(map.get("cpu1"), Some(&0.0));
    }

    #[test]
    fn a_ceiling_s_steal_is_told_after_its_figures_with_a_warning_from_five_percent() {
        let a = |cpu, steal, total| StealDelta { cpu, steal, total };
        assert_eq!(ceiling_suffix(&[]), "");
        assert_eq!(
            ceiling_suffix(&[a(0, 0, 100), a(1, 49, 1000)]),
            "; host steal cpu0 0.000, cpu1 0.049"
        );
        assert_eq!(
            ceiling_suffix(&[a(0, 5, 100), a(1, 0, 100)]),
            "; host steal cpu0 0.050, cpu1 0.000 (WARNING: the host took 5% or more of a CPU \
             while this was measured)"
        );
        // The ceilings' JSON form is the window's.
        let json = serde_json::to_value(SerializeByCpu(vec![a(0, 1, 3), a(1, 0, 0)])).unwrap();
        assert_eq!(json, serde_json::json!({"cpu0": 0.333, "cpu1": 0.0}));
    }

    #[derive(serde::Serialize)]
    struct SerializeByCpu(#[serde(serialize_with = "serialize_by_cpu")] Vec<StealDelta>);

    #[test]
    fn this_machine_s_counters_can_be_read() {
        let now = StealTicks::now().expect("/proc/stat");
        assert!(!now.cpus.is_empty(), "no cpuN line in /proc/stat");
        let later = StealTicks::now().expect("/proc/stat");
        let d = later.since(&now);
        assert_eq!(d.len(), now.cpus.len());
        assert!(d.iter().all(|d| d.steal <= d.total));
        let window = StealWindow::start().finish();
        assert_eq!(window.len(), now.cpus.len());
    }
}
