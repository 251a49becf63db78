//! The libvirt half of `peervisor bench stats`: what one stats tick costs with
//! many domains, on libvirt's in-process test driver (no daemon, no guests: our
//! code plus libvirt's API path), against the per-domain way (list the domains,
//! then one info call each), as tools without the bulk API do.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use virt::connect::Connect;

use super::sampler::{self, SamplerConfig, StatsBoard};

/// The times of `rounds` ticks each way.
pub struct TickCost {
    /// Domains the bulk call returned.
    pub records: usize,
    /// Seconds spent defining and starting the domains.
    pub setup_s: f64,
    /// Ours: one bulk GetAllDomainStats call plus rates, per round.
    pub bulk: Vec<Duration>,
    /// The baseline: list, then one info call per domain, per round.
    pub per_domain: Vec<Duration>,
}

/// Defines and starts `domains` test domains, then times `rounds` ticks each way.
pub fn tick_cost(domains: usize, rounds: usize) -> Result<TickCost> {
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
    Ok(TickCost {
        records: records_seen,
        setup_s,
        bulk,
        per_domain,
    })
}
