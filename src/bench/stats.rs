//! `peervisor bench stats`: what one stats tick costs with many domains, on
//! libvirt's in-process test driver (no daemon, no guests: it measures our code
//! plus libvirt's API path). Baseline in the same run: the per-domain way
//! (list the domains, then one info call each), as tools without the bulk API do.

use std::fmt::Write;
use std::time::Duration;

use anyhow::{Result, anyhow};
use serde::Serialize;

use crate::hypervisor::tick_cost::{TickCost, tick_cost};

/// What one stats tick costs, ours against the baseline.
#[derive(Debug, Serialize)]
pub struct StatsTick {
    pub domains: usize,
    /// Domains the bulk call returned records for.
    pub records: usize,
    /// Seconds to define and start the domains.
    pub setup_s: f64,
    pub rounds: usize,
    pub methods: Vec<Method>,
}

#[derive(Debug, Serialize)]
pub struct Method {
    pub method: &'static str,
    pub median_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
    pub per_vm_us: f64,
}

pub fn stats_tick(domains: usize, rounds: usize) -> Result<StatsTick> {
    if domains == 0 || rounds == 0 {
        return Err(anyhow!("--domains and --rounds must be at least 1"));
    }
    let TickCost {
        records,
        setup_s,
        mut bulk,
        mut per_domain,
    } = tick_cost(domains, rounds)?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut methods = Vec::new();
    for (method, times) in [
        ("bulk GetAllDomainStats + rates (ours)", &mut bulk),
        ("baseline: list + info per domain", &mut per_domain),
    ] {
        times.sort();
        let median = times[times.len() / 2];
        methods.push(Method {
            method,
            median_ms: ms(median),
            p95_ms: ms(times[(times.len() * 95 / 100).min(times.len() - 1)]),
            max_ms: ms(times[times.len() - 1]),
            per_vm_us: median.as_secs_f64() * 1e6 / records.max(1) as f64,
        });
    }
    Ok(StatsTick {
        domains,
        records,
        setup_s,
        rounds,
        methods,
    })
}

impl StatsTick {
    /// The table `bench stats` prints.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "stats tick, libvirt test driver, {} domains ({} defined+started in {:.2} s), {} rounds",
            self.records, self.domains, self.setup_s, self.rounds
        );
        let _ = writeln!(
            out,
            "{:<44} {:>10} {:>10} {:>10} {:>12}",
            "method", "median ms", "p95 ms", "max ms", "per VM us"
        );
        for m in &self.methods {
            let _ = writeln!(
                out,
                "{:<44} {:>10.2} {:>10.2} {:>10.2} {:>12.1}",
                m.method, m.median_ms, m.p95_ms, m.max_ms, m.per_vm_us
            );
        }
        out
    }
}
