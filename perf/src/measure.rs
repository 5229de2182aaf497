//! What the benches share to read a run: a figure's spread over repeated
//! windows, and a process's CPU time from `/proc`.

use serde::Serialize;

/// One figure over the windows: median, minimum, maximum, and each window's.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Spread {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The lowest window.
    pub min: f64,
    /// The highest window.
    pub max: f64,
    /// Every window, in order.
    pub windows: Vec<f64>,
}

impl Spread {
    /// The spread of `windows`; `None` when there are none.
    pub fn of(windows: &[f64]) -> Option<Spread> {
        if windows.is_empty() {
            return None;
        }
        let mut v = windows.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            windows: windows.to_vec(),
        })
    }

    /// `median (min–max)` with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        format!(
            "{:.*} ({:.*}–{:.*})",
            digits, self.median, digits, self.min, digits, self.max
        )
    }
}

/// The fields of a `/proc/PID/stat` line from field 3 (the state) on: the
/// command name before them (field 2) may hold spaces and parentheses, so
/// they resume after the last `)`.
pub fn stat_fields(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace())
}

/// `(utime, stime)` of a `/proc/PID/stat` line (fields 14 and 15), in
/// clock ticks.
pub fn parse_pid_stat(stat: &str) -> Option<(u64, u64)> {
    let mut f = stat_fields(stat)?.skip(11);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// `(utime, stime)` of process `pid`, all its threads included, in clock
/// ticks; `None` if there is no such process.
pub fn pid_cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    parse_pid_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if it cannot tell).
pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_the_median_and_range_of_the_windows() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.windows, vec![3.0, 1.0, 2.0], "windows kept in order");
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert_eq!(s.show(1), "2.5 (1.0–4.0)");
        assert!(Spread::of(&[]).is_none());
    }

    #[test]
    fn pid_stat_utime_stime_past_odd_names() {
        let line = "4242 (dpdk (test) pmd) R 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 3 0 999 0 0";
        assert_eq!(parse_pid_stat(line), Some((1234, 567)));
        let line =
            "1234 (sluice w0) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 555 0 0";
        assert_eq!(parse_pid_stat(line), Some((250, 75)));
        assert_eq!(parse_pid_stat("garbage"), None);
        let me = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_pid_stat(&me).is_some());
        assert!(pid_cpu_ticks(std::process::id()).is_some());
    }
}
