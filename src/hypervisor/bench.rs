//! `peervisor bench stats`: what one stats tick costs with many domains, on
//! libvirt's in-process test driver (no daemon, no guests: it measures our code
//! plus libvirt's API path). Baseline in the same run: the per-domain way
//! (list the domains, then one info call each), as tools without the bulk API do.

use std::fmt::Write;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use virt::connect::Connect;

use super::sampler::{self, SamplerConfig, StatsBoard};

pub fn stats_tick(domains: usize, rounds: usize) -> Result<String> {
    if domains == 0 || rounds == 0 {
        return Err(anyhow!("--domains and --rounds must be at least 1"));
    }
    virt::error::clear_error_callback();
    let conn = Connect::open(Some("test:///default"))
        .map_err(|e| anyhow!("opening test:///default: {}", e.message()))?;
    let setup = Instant::now();
    for i in 0..domains {
        let xml = format!(
            "<domain type='test'><name>bench-{i}</name><memory unit='MiB'>64</memory>\
             <vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>\
             <devices><interface type='network'><source network='default'/></interface></devices></domain>"
        );
        let d = conn
            .define_domain_xml(&xml)
            .map_err(|e| anyhow!("defining bench-{i}: {}", e.message()))?;
        d.create()
            .map_err(|e| anyhow!("starting bench-{i}: {}", e.message()))?;
    }
    let setup_s = setup.elapsed().as_secs_f64();

    let board = StatsBoard::new(SamplerConfig::default());
    let origin = Instant::now();
    let mut bulk = Vec::with_capacity(rounds);
    let mut records_seen = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let records =
            sampler::collect(&conn).map_err(|e| anyhow!("bulk stats: {}", e.message()))?;
        board.update(&records, origin.elapsed() + Duration::from_secs(1), 2);
        bulk.push(t.elapsed());
        records_seen = records.len();
    }

    let mut per_domain = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let list = conn
            .list_all_domains(0)
            .map_err(|e| anyhow!("listing: {}", e.message()))?;
        for d in &list {
            let _ = d.info();
        }
        per_domain.push(t.elapsed());
    }

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
