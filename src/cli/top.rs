//! Plain-text figures for scripts and terminals: `peervisor top` (a table per
//! interval, like virt-top's batch mode) and `peervisor vm stats`.

use std::fmt::Write;

use anyhow::{Result, bail};

use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::model::{HostStats, VmStats, VmView};

/// 1536 -> "1.5K", in bytes (or bytes per second) with binary prefixes.
pub fn human(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut v = bytes.max(0.0);
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

pub fn host_line(host: Option<&HostStats>) -> String {
    match host {
        Some(h) => format!(
            "host: {} CPUs, cpu {:.1}%, load {:.2}, mem {}/{} MiB\n",
            h.cpus, h.cpu_pct, h.load1, h.mem_used_mib, h.mem_total_mib
        ),
        None => "host: (not sampled yet)\n".to_string(),
    }
}

/// The `top` table: one row per VM, rates as of the last sample.
pub fn table(vms: &[VmView]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<8} {:>4} {:>6} {:>6} {:>7} {:>8} {:>8} {:>6} {:>6} {:>8} {:>8}",
        "NAME",
        "STATE",
        "VCPU",
        "%CPU",
        "%VCPU",
        "MEM",
        "RD/s",
        "WR/s",
        "RDIOPS",
        "WRIOPS",
        "RX/s",
        "TX/s"
    );
    for vm in vms {
        let name = if vm.managed {
            vm.name.to_string()
        } else {
            format!("{} (foreign)", vm.name)
        };
        match &vm.stats {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "{:<16} {:<8} {:>4} {:>6} {:>6} {:>7} {:>8} {:>8} {:>6.0} {:>6.0} {:>8} {:>8}",
                    name,
                    vm.state.as_str(),
                    vm.vcpus,
                    pct(s.cpu_pct_host),
                    pct(s.cpu_pct_guest),
                    s.mem_used_mib
                        .map_or_else(|| "-".into(), |m| format!("{m}M")),
                    human(s.disk_read_bps),
                    human(s.disk_write_bps),
                    s.disk_read_iops,
                    s.disk_write_iops,
                    human(s.net_rx_bps),
                    human(s.net_tx_bps),
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "{:<16} {:<8} {:>4} {:>6} {:>6} {:>7} {:>8} {:>8} {:>6} {:>6} {:>8} {:>8}",
                    name,
                    vm.state.as_str(),
                    vm.vcpus,
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-"
                );
            }
        }
    }
    out
}

/// One line of `vm stats`.
pub fn stats_line(vm: &VmView) -> String {
    match &vm.stats {
        Some(s) => format_stats(&vm.name, vm.state.as_str(), s),
        None => format!(
            "{} {}: no figures yet (sampled every second while it runs)",
            vm.name,
            vm.state.as_str()
        ),
    }
}

/// A CPU share with one decimal, "-" when not measured.
fn pct(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

fn format_stats(name: &str, state: &str, s: &VmStats) -> String {
    let cpu = match (s.cpu_pct_host, s.cpu_pct_guest) {
        (Some(host), Some(guest)) => format!("cpu {host:.1}% of host, {guest:.1}% of vCPUs"),
        _ => "cpu unknown".into(),
    };
    let mem = s
        .mem_used_mib
        .map_or_else(|| "mem unknown".into(), |m| format!("mem {m} MiB"));
    format!(
        "{name} {state}: {cpu}; {mem}; disk rd {}B/s wr {}B/s ({:.0}/{:.0} IOPS); net rx {}B/s tx {}B/s",
        human(s.disk_read_bps),
        human(s.disk_write_bps),
        s.disk_read_iops,
        s.disk_write_iops,
        human(s.net_rx_bps),
        human(s.net_tx_bps),
    )
}

/// `peervisor top`: a table every `delay` seconds; with `json`, one JSON object
/// per line instead (`{"host": ..., "vms": [...]}`), as `vm stats --watch --json`.
pub async fn run(
    control: &ControlClient,
    delay: f64,
    iterations: Option<u64>,
    json: bool,
) -> Result<()> {
    if !(0.1..=3600.0).contains(&delay) {
        bail!("--delay must be between 0.1 and 3600 seconds, got {delay}");
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs_f64(delay));
    let mut shown = 0;
    loop {
        tick.tick().await;
        let Reply::Status(status) = control.call(&Request::Status).await? else {
            bail!("unexpected reply to status");
        };
        if json {
            let value = serde_json::json!({ "host": status.local.host, "vms": status.vms });
            println!("{}", serde_json::to_string(&value)?);
        } else {
            if shown > 0 {
                println!();
            }
            print!("{}", host_line(status.local.host.as_ref()));
            print!("{}", table(&status.vms));
        }
        shown += 1;
        if iterations.is_some_and(|n| shown >= n) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VmState;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human(0.0), "0");
        assert_eq!(human(1536.0), "1.5K");
        assert_eq!(human(3.0 * 1024.0 * 1024.0), "3.0M");
        assert_eq!(human(-5.0), "0");
    }

    #[test]
    fn table_shows_rates_and_marks_foreign_vms() {
        let vms = vec![
            VmView {
                name: "web-1".into(),
                state: VmState::Running,
                vcpus: 1,
                managed: true,
                stats: Some(VmStats {
                    cpu_pct_host: Some(49.5),
                    cpu_pct_guest: Some(99.0),
                    mem_used_mib: Some(100),
                    disk_write_bps: 2048.0,
                    ..VmStats::default()
                }),
                ..VmView::default()
            },
            VmView {
                name: "legacy".into(),
                ..VmView::default()
            },
        ];
        let t = table(&vms);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].contains("web-1") && lines[1].contains("99.0") && lines[1].contains("2.0K")
        );
        assert!(lines[2].contains("legacy (foreign)") && lines[2].contains("stopped"));
        assert!(stats_line(&vms[0]).contains("99.0% of vCPUs"));
        // Counters libvirt did not give are unknown, not 0.
        let unknown = VmView {
            name: "quiet".into(),
            stats: Some(VmStats::default()),
            ..VmView::default()
        };
        let line = stats_line(&unknown);
        assert!(
            line.contains("cpu unknown") && line.contains("mem unknown"),
            "{line}"
        );
        let row = table(std::slice::from_ref(&unknown));
        let row = row.lines().nth(1).unwrap();
        assert!(!row.contains(" 0.0 ") && !row.contains("0M"), "{row}");
    }
}
