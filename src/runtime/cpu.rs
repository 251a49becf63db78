//! Host CPU use from /proc/stat deltas, for the load this peer announces.

use std::sync::Mutex;

#[derive(Default)]
pub struct CpuMeter {
    last: Mutex<Option<(u64, u64)>>,
}

impl CpuMeter {
    /// CPU use of all cores since the previous call, 0..100 (0 on the first call).
    pub fn percent(&self) -> f64 {
        let Some(now) = read_proc_stat() else {
            return 0.0;
        };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let pct = match *last {
            Some(prev) => busy_percent(prev, now),
            None => 0.0,
        };
        *last = Some(now);
        pct
    }
}

/// (busy, total) jiffies of the aggregate "cpu" line.
fn read_proc_stat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(text.lines().next()?)
}

fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    let total: u64 = values.iter().take(8).sum();
    Some((total.saturating_sub(idle), total))
}

fn busy_percent(prev: (u64, u64), now: (u64, u64)) -> f64 {
    let busy = now.0.saturating_sub(prev.0) as f64;
    let total = now.1.saturating_sub(prev.1) as f64;
    if total <= 0.0 {
        return 0.0;
    }
    (busy / total * 100.0).clamp(0.0, 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_share_from_two_samples() {
        let a = parse_cpu_line("cpu  100 0 100 700 100 0 0 0 0 0").unwrap();
        let b = parse_cpu_line("cpu  200 0 200 1400 200 0 0 0 0 0").unwrap();
        assert_eq!(a, (200, 1000));
        assert!((busy_percent(a, b) - 20.0).abs() < 1e-9);
        assert_eq!(
            busy_percent(b, a),
            0.0,
            "counter going back is not negative load"
        );
        assert!(parse_cpu_line("cpu0 1 2 3 4").is_none());
    }
}
