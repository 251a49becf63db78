//! Per-VM figures from libvirt's bulk stats: raw counters per sample, rates from
//! the deltas between two samples (virt-manager's formulas), and ring buffers of
//! recent rates. Pure code: the sampler feeds it, tests drive it directly.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::ffi::StatsRecord;
use crate::model::{VmHistory, VmStats};

/// Counters of one block device.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiskCounters {
    pub rd_bytes: u64,
    pub wr_bytes: u64,
    pub rd_reqs: u64,
    pub wr_reqs: u64,
}

/// Counters of one network interface.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NicCounters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// One domain's counters at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Monotonic time of the sample (from any fixed origin).
    pub at: Duration,
    /// libvirt's virDomainState, if reported.
    pub state: Option<i64>,
    /// Total CPU time of the guest, ns.
    pub cpu_time_ns: Option<u64>,
    pub vcpus: u32,
    /// Memory the guest uses, KiB (see `memory_used_kib`).
    pub mem_used_kib: Option<u64>,
    /// Keyed by device name (e.g. "vda"), so a device that comes or goes does not
    /// shift the others.
    pub disks: BTreeMap<String, DiskCounters>,
    pub nics: BTreeMap<String, NicCounters>,
}

impl Sample {
    /// Reads the fields we use from a stats record; absent groups stay empty.
    pub fn from_record(record: &StatsRecord, at: Duration) -> Sample {
        let mut s = Sample {
            at,
            ..Sample::default()
        };
        let mut disk_names: BTreeMap<u32, String> = BTreeMap::new();
        let mut disks: BTreeMap<u32, DiskCounters> = BTreeMap::new();
        let mut nic_names: BTreeMap<u32, String> = BTreeMap::new();
        let mut nics: BTreeMap<u32, NicCounters> = BTreeMap::new();
        let (mut rss, mut current, mut available, mut unused) = (None, None, None, None);
        for (field, value) in &record.params {
            let n = value.as_u64();
            match field.as_str() {
                "state.state" => s.state = n.map(|v| v as i64),
                "cpu.time" => s.cpu_time_ns = n,
                "vcpu.current" => s.vcpus = n.unwrap_or(0) as u32,
                "balloon.rss" => rss = n,
                "balloon.current" => current = n,
                "balloon.available" => available = n,
                "balloon.unused" => unused = n,
                _ => {
                    if let Some((i, key)) = indexed(field, "block.") {
                        let d = disks.entry(i).or_default();
                        match key {
                            "name" => {
                                if let Some(name) = value.as_str() {
                                    disk_names.insert(i, name.to_string());
                                }
                            }
                            "rd.bytes" => d.rd_bytes = n.unwrap_or(0),
                            "wr.bytes" => d.wr_bytes = n.unwrap_or(0),
                            "rd.reqs" => d.rd_reqs = n.unwrap_or(0),
                            "wr.reqs" => d.wr_reqs = n.unwrap_or(0),
                            _ => {}
                        }
                    } else if let Some((i, key)) = indexed(field, "net.") {
                        let c = nics.entry(i).or_default();
                        match key {
                            "name" => {
                                if let Some(name) = value.as_str() {
                                    nic_names.insert(i, name.to_string());
                                }
                            }
                            "rx.bytes" => c.rx_bytes = n.unwrap_or(0),
                            "tx.bytes" => c.tx_bytes = n.unwrap_or(0),
                            _ => {}
                        }
                    }
                }
            }
        }
        s.mem_used_kib = memory_used_kib(available, unused, rss, current);
        let name_of = |names: &BTreeMap<u32, String>, i: u32| {
            names.get(&i).cloned().unwrap_or_else(|| format!("#{i}"))
        };
        s.disks = disks
            .into_iter()
            .map(|(i, d)| (name_of(&disk_names, i), d))
            .collect();
        s.nics = nics
            .into_iter()
            .map(|(i, c)| (name_of(&nic_names, i), c))
            .collect();
        s
    }
}

/// `block.3.wr.bytes` with prefix `block.` -> (3, "wr.bytes").
fn indexed<'a>(field: &'a str, prefix: &str) -> Option<(u32, &'a str)> {
    let rest = field.strip_prefix(prefix)?;
    let (index, key) = rest.split_once('.')?;
    Some((index.parse().ok()?, key))
}

/// Guest-reported use (available - unused, with a balloon stats period) when
/// there is one; otherwise QEMU's resident memory (what the host pays); otherwise
/// the balloon size.
fn memory_used_kib(
    available: Option<u64>,
    unused: Option<u64>,
    rss: Option<u64>,
    current: Option<u64>,
) -> Option<u64> {
    match (available, unused) {
        (Some(a), Some(u)) if a >= u => Some(a - u),
        _ => rss.or(current),
    }
}

/// Samples closer than this give noise, not rates.
const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// Rates between two samples of one domain, or None when they cannot be compared
/// (time did not advance). A counter that went backwards (the domain restarted, a
/// device was replaced) counts as no activity; devices present in only one sample
/// are left out.
pub fn rates(prev: &Sample, cur: &Sample, host_cpus: u32) -> Option<VmStats> {
    let dt = cur.at.checked_sub(prev.at)?;
    if dt < MIN_INTERVAL {
        return None;
    }
    let secs = dt.as_secs_f64();
    let per_sec = |d: u64| d as f64 / secs;
    // Unknown unless both samples carry the CPU time: not measured is not idle.
    let cpu_ns = match (prev.cpu_time_ns, cur.cpu_time_ns) {
        (Some(p), Some(c)) => Some(c.saturating_sub(p)),
        _ => None,
    };
    // virt-manager: delta cpu.time ns / (dt * 1e9) / CPUs, as a percentage, clamped.
    let pct = |cpus: u32| {
        cpu_ns.map(|ns| (ns as f64 / (secs * 1e9) * 100.0 / cpus.max(1) as f64).clamp(0.0, 100.0))
    };

    let mut s = VmStats {
        cpu_pct_host: pct(host_cpus),
        cpu_pct_guest: pct(cur.vcpus.max(prev.vcpus)),
        mem_used_mib: cur.mem_used_kib.map(|kib| kib / 1024),
        span_s: secs,
        ..VmStats::default()
    };
    for (name, c) in &cur.disks {
        let Some(p) = prev.disks.get(name) else {
            continue;
        };
        s.disk_read_bps += per_sec(delta(p.rd_bytes, c.rd_bytes));
        s.disk_write_bps += per_sec(delta(p.wr_bytes, c.wr_bytes));
        s.disk_read_iops += per_sec(delta(p.rd_reqs, c.rd_reqs));
        s.disk_write_iops += per_sec(delta(p.wr_reqs, c.wr_reqs));
    }
    for (name, c) in &cur.nics {
        let Some(p) = prev.nics.get(name) else {
            continue;
        };
        s.net_rx_bps += per_sec(delta(p.rx_bytes, c.rx_bytes));
        s.net_tx_bps += per_sec(delta(p.tx_bytes, c.tx_bytes));
    }
    Some(s)
}

/// Increase of a counter; a reset (smaller value) counts as none.
fn delta(prev: u64, cur: u64) -> u64 {
    cur.saturating_sub(prev)
}

/// Recent rates of one VM, oldest first, at most `capacity` of each.
#[derive(Debug, Clone)]
pub struct History {
    capacity: usize,
    cpu_pct_guest: VecDeque<f64>,
    disk_read_bps: VecDeque<f64>,
    disk_write_bps: VecDeque<f64>,
    net_rx_bps: VecDeque<f64>,
    net_tx_bps: VecDeque<f64>,
    span_s: VecDeque<f64>,
}

impl History {
    pub fn new(capacity: usize) -> History {
        let ring = || VecDeque::with_capacity(capacity);
        History {
            capacity: capacity.max(1),
            cpu_pct_guest: ring(),
            disk_read_bps: ring(),
            disk_write_bps: ring(),
            net_rx_bps: ring(),
            net_tx_bps: ring(),
            span_s: ring(),
        }
    }

    /// Adds one tick's rates. A tick without a CPU figure is left out whole (the
    /// series stay aligned, and the chart shows no made-up 0).
    pub fn push(&mut self, s: &VmStats) {
        let Some(cpu_pct_guest) = s.cpu_pct_guest else {
            return;
        };
        let cap = self.capacity;
        let put = |ring: &mut VecDeque<f64>, v: f64| {
            if ring.len() == cap {
                ring.pop_front();
            }
            ring.push_back(v);
        };
        put(&mut self.cpu_pct_guest, cpu_pct_guest);
        put(&mut self.disk_read_bps, s.disk_read_bps);
        put(&mut self.disk_write_bps, s.disk_write_bps);
        put(&mut self.net_rx_bps, s.net_rx_bps);
        put(&mut self.net_tx_bps, s.net_tx_bps);
        put(&mut self.span_s, s.span_s);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.cpu_pct_guest.len()
    }

    pub fn to_view(&self, interval: Duration) -> VmHistory {
        let v = |r: &VecDeque<f64>| r.iter().copied().collect();
        VmHistory {
            interval_s: interval.as_secs_f64(),
            cpu_pct_guest: v(&self.cpu_pct_guest),
            disk_read_bps: v(&self.disk_read_bps),
            disk_write_bps: v(&self.disk_write_bps),
            net_rx_bps: v(&self.net_rx_bps),
            net_tx_bps: v(&self.net_tx_bps),
            span_s: v(&self.span_s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ffi::ParamValue;
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn sample(at: f64, cpu_ns: u64, disk: Option<(u64, u64)>, nic: Option<(u64, u64)>) -> Sample {
        let mut s = Sample {
            at: secs(at),
            cpu_time_ns: Some(cpu_ns),
            vcpus: 2,
            mem_used_kib: Some(256 * 1024),
            ..Sample::default()
        };
        if let Some((rd, wr)) = disk {
            s.disks.insert(
                "vda".into(),
                DiskCounters {
                    rd_bytes: rd,
                    wr_bytes: wr,
                    rd_reqs: rd / 4096,
                    wr_reqs: wr / 4096,
                },
            );
        }
        if let Some((rx, tx)) = nic {
            s.nics.insert(
                "vnet0".into(),
                NicCounters {
                    rx_bytes: rx,
                    tx_bytes: tx,
                },
            );
        }
        s
    }

    #[test]
    fn cpu_percent_of_host_and_of_guest() {
        // 1 s of CPU time in 2 s on a 4-CPU host with a 2-vCPU guest.
        let a = sample(10.0, 0, None, None);
        let b = sample(12.0, 1_000_000_000, None, None);
        let r = rates(&a, &b, 4).unwrap();
        assert!((r.cpu_pct_host.unwrap() - 12.5).abs() < 1e-9, "{r:?}");
        assert!((r.cpu_pct_guest.unwrap() - 25.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r.mem_used_mib, Some(256));
    }

    #[test]
    fn cpu_percent_is_clamped() {
        // More CPU time than wall time allows (counter granularity, vCPU hotplug).
        let a = sample(0.0, 0, None, None);
        let b = sample(1.0, 10_000_000_000, None, None);
        let r = rates(&a, &b, 1).unwrap();
        assert_eq!(r.cpu_pct_host, Some(100.0));
        assert_eq!(r.cpu_pct_guest, Some(100.0));
    }

    #[test]
    fn disk_and_network_rates_from_byte_counters() {
        let a = sample(0.0, 0, Some((0, 4096)), Some((1000, 2000)));
        let b = sample(0.5, 0, Some((8192, 4096 + 40960)), Some((1500, 3000)));
        let r = rates(&a, &b, 1).unwrap();
        assert_eq!(r.disk_read_bps, 16384.0);
        assert_eq!(r.disk_write_bps, 81920.0);
        // Half a second apart: the rates say so, and rate x span is the bytes.
        assert_eq!(r.span_s, 0.5);
        assert_eq!(r.disk_write_bps * r.span_s, 40960.0);
        assert_eq!(r.disk_read_iops, 4.0);
        assert_eq!(r.disk_write_iops, 20.0);
        assert_eq!(r.net_rx_bps, 1000.0);
        assert_eq!(r.net_tx_bps, 2000.0);
    }

    #[test]
    fn counter_reset_counts_as_no_activity() {
        // The domain restarted: every counter starts again from a small value.
        let a = sample(
            0.0,
            50_000_000_000,
            Some((1 << 30, 1 << 30)),
            Some((9999, 9999)),
        );
        let b = sample(1.0, 10_000_000, Some((100, 100)), Some((10, 10)));
        let r = rates(&a, &b, 1).unwrap();
        assert_eq!(r.cpu_pct_host, Some(0.0));
        assert_eq!(r.disk_read_bps, 0.0);
        assert_eq!(r.disk_write_bps, 0.0);
        assert_eq!(r.net_rx_bps, 0.0);
        // and the next interval is measured from the new values
        let c = sample(2.0, 510_000_000, Some((200, 100)), Some((110, 10)));
        let r = rates(&b, &c, 1).unwrap();
        assert!((r.cpu_pct_host.unwrap() - 50.0).abs() < 1e-9);
        assert_eq!(r.disk_read_bps, 100.0);
        assert_eq!(r.net_rx_bps, 100.0);
    }

    #[test]
    fn devices_present_in_one_sample_only_are_left_out() {
        let a = sample(0.0, 0, Some((0, 0)), None);
        let b = sample(1.0, 0, None, Some((5000, 5000)));
        let r = rates(&a, &b, 1).unwrap();
        assert_eq!(r.disk_write_bps, 0.0);
        assert_eq!(r.net_rx_bps, 0.0);
        // a hot-added second disk does not disturb the first
        let mut c = sample(0.0, 0, Some((0, 0)), None);
        let mut d = sample(1.0, 0, Some((0, 1000)), None);
        d.disks.insert(
            "vdb".into(),
            DiskCounters {
                wr_bytes: 1 << 40,
                ..DiskCounters::default()
            },
        );
        c.cpu_time_ns = None; // missing CPU stats: no CPU figure, no panic
        d.mem_used_kib = None;
        let r = rates(&c, &d, 1).unwrap();
        assert_eq!(r.disk_write_bps, 1000.0);
        // Not measured is unknown, not 0 (null in `status --json`).
        assert_eq!(
            (r.cpu_pct_host, r.cpu_pct_guest, r.mem_used_mib),
            (None, None, None)
        );
        let json = serde_json::to_value(&r).unwrap();
        assert!(
            json["cpu_pct_guest"].is_null() && json["mem_used_mib"].is_null(),
            "{json}"
        );
        // and the history leaves the tick out rather than charting a 0
        let mut h = History::new(4);
        h.push(&r);
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn clock_going_backwards_or_standing_still_gives_no_rates() {
        let a = sample(5.0, 0, None, None);
        let b = sample(4.0, 1_000_000, None, None);
        assert!(rates(&a, &b, 1).is_none());
        assert!(rates(&a, &a, 1).is_none());
        let near = sample(5.01, 1_000_000, None, None);
        assert!(rates(&a, &near, 1).is_none());
        // a long stall (clock jump forward, suspended host) gives the average
        let later = sample(105.0, 10_000_000_000, None, None);
        let r = rates(&a, &later, 1).unwrap();
        assert!((r.cpu_pct_host.unwrap() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn record_fields_become_a_sample() {
        let p = |f: &str, v: ParamValue| (f.to_string(), v);
        let record = StatsRecord {
            name: "web-1".into(),
            uuid: "u".into(),
            params: vec![
                p("state.state", ParamValue::Int(1)),
                p("cpu.time", ParamValue::UInt(123)),
                p("vcpu.current", ParamValue::UInt(2)),
                p("balloon.current", ParamValue::UInt(131072)),
                p("balloon.rss", ParamValue::UInt(65536)),
                p("block.count", ParamValue::UInt(1)),
                p("block.0.name", ParamValue::Str("vda".into())),
                p("block.0.wr.bytes", ParamValue::UInt(4096)),
                p("block.0.wr.reqs", ParamValue::UInt(1)),
                p("net.count", ParamValue::UInt(1)),
                p("net.0.name", ParamValue::Str("vnet3".into())),
                p("net.0.rx.bytes", ParamValue::UInt(77)),
                p("net.1.tx.bytes", ParamValue::UInt(5)), // no name: indexed
            ],
        };
        let s = Sample::from_record(&record, secs(1.0));
        assert_eq!(s.state, Some(1));
        assert_eq!(s.cpu_time_ns, Some(123));
        assert_eq!(s.vcpus, 2);
        assert_eq!(s.mem_used_kib, Some(65536)); // rss, no guest figures
        assert_eq!(s.disks["vda"].wr_bytes, 4096);
        assert_eq!(s.nics["vnet3"].rx_bytes, 77);
        assert_eq!(s.nics["#1"].tx_bytes, 5);
    }

    #[test]
    fn guest_reported_memory_wins_over_rss() {
        assert_eq!(
            memory_used_kib(Some(1000), Some(400), Some(900), Some(1000)),
            Some(600)
        );
        assert_eq!(
            memory_used_kib(None, Some(400), None, Some(1000)),
            Some(1000)
        );
        assert_eq!(memory_used_kib(None, None, None, None), None);
    }

    #[test]
    fn history_keeps_the_newest_values() {
        let mut h = History::new(3);
        for i in 0..5 {
            h.push(&VmStats {
                cpu_pct_guest: Some(i as f64),
                ..VmStats::default()
            });
        }
        assert_eq!(h.len(), 3);
        let v = h.to_view(Duration::from_secs(1));
        assert_eq!(v.cpu_pct_guest, vec![2.0, 3.0, 4.0]);
        assert_eq!(v.interval_s, 1.0);
    }
}
