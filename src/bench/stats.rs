//! `peervisor bench stats`: what one stats tick costs with many domains, on
//! libvirt's in-process test driver (no daemon, no guests: it measures our code
//! plus libvirt's API path). Baseline in the same run: the per-domain way
//! (list the domains, then one info call each), as tools without the bulk API do.

use std::fmt::Write;
use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::hypervisor::tick_cost::{TickCost, tick_cost};

/// The table of what one stats tick costs, ours against the baseline.
pub fn stats_tick(domains: usize, rounds: usize) -> Result<String> {
    if domains == 0 || rounds == 0 {
        return Err(anyhow!("--domains and --rounds must be at least 1"));
    }
    let TickCost {
        records: records_seen,
        setup_s,
        mut bulk,
        mut per_domain,
    } = tick_cost(domains, rounds)?;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "stats tick, libvirt test driver, {records_seen} domains ({domains} defined+started in {setup_s:.2} s), {rounds} rounds"
    );
    let _ = writeln!(
        out,
        "{:<44} {:>10} {:>10} {:>10} {:>12}",
        "method", "median ms", "p95 ms", "max ms", "per VM us"
    );
    for (label, times) in [
        ("bulk GetAllDomainStats + rates (ours)", &mut bulk),
        ("baseline: list + info per domain", &mut per_domain),
    ] {
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let median = times[times.len() / 2];
        let p95 = times[(times.len() * 95 / 100).min(times.len() - 1)];
        let max = times[times.len() - 1];
        let _ = writeln!(
            out,
            "{:<44} {:>10.2} {:>10.2} {:>10.2} {:>12.1}",
            label,
            ms(median),
            ms(p95),
            ms(max),
            median.as_secs_f64() * 1e6 / records_seen.max(1) as f64
        );
    }
    Ok(out)
}
