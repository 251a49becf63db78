//! The stats sampler: a thread of its own that makes one bulk libvirt stats call
//! per tick for every domain, turns counter deltas into rates, keeps ring buffers,
//! and samples the host (sysinfo). Readers take the latest board under a short
//! lock: nothing on the status or drawing path waits for libvirt. Each round is
//! also broadcast as it is made (`StatsBoard::rounds`), for the node's pushed
//! updates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::sys as vsys;

use super::ffi;
use super::link::Link;
use super::stats::{History, Sample, rates};
use crate::api::{Samples, VmSample};
use crate::model::{HostStats, VmStats, VmView};

/// How often and how much to keep.
#[derive(Debug, Clone, Copy)]
pub struct SamplerConfig {
    pub interval: Duration,
    /// Samples kept per VM for sparklines.
    pub history: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            interval: Duration::from_secs(1),
            history: 120,
        }
    }
}

/// The stats groups read each tick.
pub const STATS_GROUPS: u32 = vsys::VIR_DOMAIN_STATS_STATE
    | vsys::VIR_DOMAIN_STATS_CPU_TOTAL
    | vsys::VIR_DOMAIN_STATS_BALLOON
    | vsys::VIR_DOMAIN_STATS_VCPU
    | vsys::VIR_DOMAIN_STATS_INTERFACE
    | vsys::VIR_DOMAIN_STATS_BLOCK;

/// The latest figures, shared between the sampler and its readers.
pub struct StatsBoard {
    inner: Mutex<Board>,
    rounds: tokio::sync::broadcast::Sender<Round>,
}

/// One round of the sampler as it was taken, numbered from 1.
#[derive(Debug, Clone)]
pub struct Round {
    pub number: u64,
    pub samples: Arc<Samples>,
}

/// Rounds a slow listener may fall behind before it must read the board again.
const ROUNDS_BUFFERED: usize = 64;

#[derive(Default)]
struct Board {
    interval: Duration,
    capacity: usize,
    prev: HashMap<String, Sample>,
    latest: HashMap<String, VmStats>,
    history: HashMap<String, History>,
    host: Option<HostStats>,
    /// Why the last tick failed, if it did.
    error: Option<String>,
    /// Rounds taken so far.
    rounds: u64,
}

impl StatsBoard {
    pub fn new(config: SamplerConfig) -> StatsBoard {
        StatsBoard {
            inner: Mutex::new(Board {
                interval: config.interval,
                capacity: config.history,
                ..Board::default()
            }),
            rounds: tokio::sync::broadcast::channel(ROUNDS_BUFFERED).0,
        }
    }

    /// Every round from now on. A listener that falls behind gets `Lagged`
    /// and reads the board again (`annotate` says which round it shows).
    pub fn rounds(&self) -> tokio::sync::broadcast::Receiver<Round> {
        self.rounds.subscribe()
    }

    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fills `stats` and `history` of the VMs the sampler has figures for.
    /// Returns the number of the round they come from.
    pub fn annotate(&self, vms: &mut [VmView]) -> u64 {
        let board = self.board();
        for vm in vms {
            vm.stats = board.latest.get(vm.name.as_str()).cloned();
            vm.history = board
                .history
                .get(vm.name.as_str())
                .map(|h| h.to_view(board.interval));
        }
        board.rounds
    }

    pub fn host(&self) -> Option<HostStats> {
        self.board().host.clone()
    }

    /// Takes one round of records: rates against the previous round, history
    /// pushed, VMs that disappeared forgotten.
    /// Broadcasts the round, as the board now has it.
    pub fn update(&self, records: &[ffi::StatsRecord], at: Duration, host_cpus: u32) {
        let mut board = self.board();
        let capacity = board.capacity;
        let mut seen = HashMap::with_capacity(records.len());
        let mut samples = Vec::with_capacity(records.len());
        for record in records {
            let sample = Sample::from_record(record, at);
            let previous = board.prev.get(&record.name);
            let rated = previous.and_then(|p| rates(p, &sample, host_cpus));
            if let Some(r) = &rated {
                board
                    .history
                    .entry(record.name.clone())
                    .or_insert_with(|| History::new(capacity))
                    .push(r);
                board.latest.insert(record.name.clone(), r.clone());
            }
            samples.push(VmSample {
                name: record.name.as_str().into(),
                stats: rated,
            });
            seen.insert(record.name.clone(), sample);
        }
        board.latest.retain(|name, _| seen.contains_key(name));
        board.history.retain(|name, _| seen.contains_key(name));
        board.prev = seen;
        board.error = None;
        board.rounds += 1;
        let round = Round {
            number: board.rounds,
            samples: Arc::new(Samples {
                interval_s: board.interval.as_secs_f64(),
                keep: capacity.max(1),
                host: board.host.clone(),
                vms: samples,
            }),
        };
        // Sent under the lock, so rounds go out in order; none listening is fine.
        let _ = self.rounds.send(round);
    }

    fn set_host(&self, host: Option<HostStats>) {
        self.board().host = host;
    }

    fn set_error(&self, error: String) {
        self.board().error = Some(error);
    }
}

/// One bulk stats call for every domain of `conn`.
pub fn collect(conn: &Connect) -> Result<Vec<ffi::StatsRecord>, virt::error::Error> {
    ffi::all_domain_stats(conn, STATS_GROUPS, 0)
}

/// Starts the sampler thread. It stops once `board` is dropped elsewhere.
/// Each tick uses the link's current connection; while it is being reopened the
/// tick is skipped (the board keeps the last figures).
pub fn spawn(link: &Arc<Link>, board: &Arc<StatsBoard>, config: SamplerConfig) {
    let weak = Arc::downgrade(board);
    let link = Arc::downgrade(link);
    let spawned = std::thread::Builder::new()
        .name("stats-sampler".into())
        .spawn(move || run(link, weak, config));
    if let Err(e) = spawned {
        tracing::error!("cannot start the stats sampler: {e}");
    }
}

/// Holds neither the board nor the link between ticks: when the `Host` goes, so
/// does the sampler (and a daemon stopped after that is not reconnected to).
fn run(link: Weak<Link>, board: Weak<StatsBoard>, config: SamplerConfig) {
    let origin = Instant::now();
    let mut host = HostSampler::new();
    let mut failing = false;
    let mut next = Instant::now();
    loop {
        let (Some(board), Some(link)) = (board.upgrade(), link.upgrade()) else {
            return;
        };
        board.set_host(host.sample());
        match link.current().map(|conn| (collect(&conn), conn)) {
            Some((Ok(records), _)) => {
                link.note_answered();
                if failing {
                    tracing::info!("libvirt stats readable again");
                    failing = false;
                }
                board.update(&records, origin.elapsed(), host.cpus());
            }
            // The link says the connection is lost (once) and reopens it.
            None => board.set_error("libvirt connection lost".into()),
            Some((Err(e), conn)) if !conn.is_alive().unwrap_or(false) => {
                board.set_error(e.message().to_string())
            }
            Some((Err(e), _)) => {
                if !failing {
                    tracing::warn!("libvirt stats: {}", e.message());
                    failing = true;
                }
                board.set_error(e.message().to_string());
            }
        }
        drop((board, link));
        next += config.interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Fell behind (slow libvirt): skip the missed ticks rather than burst.
            next = now;
        }
    }
}

/// Host CPU, memory and load through sysinfo.
struct HostSampler {
    system: Option<sysinfo::System>,
}

impl HostSampler {
    fn new() -> HostSampler {
        let system = match sysinfo::System::new() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("host stats unavailable: {e}");
                None
            }
        };
        HostSampler { system }
    }

    fn cpus(&self) -> u32 {
        match &self.system {
            Some(s) if !s.cpus().is_empty() => s.cpus().len() as u32,
            _ => std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
        }
    }

    fn sample(&mut self) -> Option<HostStats> {
        let cpus = self.cpus();
        let system = self.system.as_mut()?;
        system.refresh_cpu_usage();
        system.refresh_memory();
        let load1 = sysinfo::System::load_average()
            .map(|l| l.one)
            .unwrap_or(0.0);
        Some(HostStats {
            cpus,
            cpu_pct: f64::from(system.global_cpu_usage()).clamp(0.0, 100.0),
            mem_used_mib: system.used_memory() / (1024 * 1024),
            mem_total_mib: system.total_memory() / (1024 * 1024),
            load1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal domain for libvirt's in-process test driver.
    pub fn test_domain_xml(name: &str) -> String {
        format!(
            "<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>\
             <vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>"
        )
    }

    #[test]
    fn one_bulk_call_reads_every_domain_and_frees_it() {
        let conn = Connect::open(Some("test:///default")).unwrap();
        for i in 0..3 {
            let d = conn
                .define_domain_xml(&test_domain_xml(&format!("stats-{i}")))
                .unwrap();
            d.create().unwrap();
        }
        let board = StatsBoard::new(SamplerConfig {
            interval: Duration::from_millis(100),
            history: 4,
        });
        // Many rounds: the records are freed each time (run under valgrind/ASan to see).
        for round in 0..5u64 {
            let records = collect(&conn).unwrap();
            let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
            for i in 0..3 {
                assert!(names.contains(&format!("stats-{i}").as_str()), "{names:?}");
            }
            let r = records.iter().find(|r| r.name == "stats-0").unwrap();
            assert_eq!(r.uuid.len(), 36);
            assert!(r.params.iter().any(|(f, _)| f == "state.state"), "{r:?}");
            board.update(&records, Duration::from_millis(200 * (round + 1)), 2);
        }
        let mut vms = vec![VmView {
            name: "stats-1".into(),
            ..VmView::default()
        }];
        board.annotate(&mut vms);
        // The test driver reports no CPU time, memory or devices: rates exist,
        // and say they are unknown rather than 0; nothing goes into the history.
        let stats = vms[0].stats.as_ref().expect("rates after two rounds");
        assert_eq!((stats.cpu_pct_guest, stats.mem_used_mib), (None, None));
        assert_eq!(vms[0].history.as_ref().unwrap().cpu_pct_guest.len(), 0);
        for i in 0..3 {
            let d = conn.lookup_domain_by_name(&format!("stats-{i}")).unwrap();
            d.destroy().unwrap();
            d.undefine().unwrap();
        }
        // a VM that went away is forgotten at the next round
        board.update(&collect(&conn).unwrap(), Duration::from_secs(5), 2);
        board.annotate(&mut vms);
        assert!(vms[0].stats.is_none());
    }
}
