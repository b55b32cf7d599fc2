//! CPU time of this process and of its waited-for children, from `/proc/self/stat`: shows
//! whether a fetch was bound by the machine's cores (CPU time near cores × wall time) or by
//! waiting. Clock ticks are Linux's USER_HZ, 100 per second on every mainstream architecture.

use std::fs;

const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    /// utime + stime of this process (all its threads).
    pub own: f64,
    /// cutime + cstime: children that were waited for.
    pub children: f64,
}

impl CpuTime {
    pub fn now() -> Self {
        let Ok(stat) = fs::read_to_string("/proc/self/stat") else {
            return Self::default();
        };
        // Fields after the parenthesized command name; utime is field 14 of the whole line.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return Self::default();
        };
        let fields: Vec<f64> = rest
            .split_whitespace()
            .skip(11)
            .take(4)
            .map(|f| f.parse().unwrap_or(0.0))
            .collect();
        if fields.len() < 4 {
            return Self::default();
        }
        Self {
            own: (fields[0] + fields[1]) / TICKS_PER_SECOND,
            children: (fields[2] + fields[3]) / TICKS_PER_SECOND,
        }
    }

    /// CPU seconds spent since `earlier`: (own, children).
    pub fn since(&self, earlier: &CpuTime) -> (f64, f64) {
        (self.own - earlier.own, self.children - earlier.children)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_cpu_time_grows() {
        let before = CpuTime::now();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed().as_millis() < 50 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(CpuTime::now().since(&before).0 > 0.0);
    }
}
