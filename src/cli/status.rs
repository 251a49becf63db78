//! `peervisor status` and its plain text: this peer, its peers, VMs,
//! consumptions, operations, jobs and the penalty benchmark's latest run.

use std::fmt::Write;

use anyhow::{Result, bail};

use crate::bench::penalty::table as penalty_table;
use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::model::{Status, short_peer_id};
use crate::tui::panes::fmt_rate;
use crate::tui::panes::jobs::{bench_label, jobs_label, name_label, source_errors};

/// `peervisor status`.
pub async fn run(control: &ControlClient, json: bool) -> Result<()> {
    let Reply::Status(status) = control.call(&Request::Status).await? else {
        bail!("unexpected reply to status");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status_text(&status));
    }
    Ok(())
}

/// "8 vCPUs (1 in use), 21.2 GiB memory (128 MiB in use), 35.3 GiB disk; 2 migrations each way".
fn lending_text(l: &crate::model::LendingView) -> String {
    use crate::migrate::capacity::fmt_mib;
    format!(
        "{} vCPUs ({} in use), {} memory ({} in use), {} disk; {} migration(s) each way at once",
        l.vcpus,
        l.vcpus_used,
        fmt_mib(l.memory_mib),
        fmt_mib(l.memory_used_mib),
        fmt_mib(l.disk_mib),
        l.max_migrations
    )
}

/// `peervisor status` as plain text.
pub fn status_text(status: &Status) -> String {
    let mut out = String::new();
    let local = &status.local;
    let _ = writeln!(out, "peer     {} ({})", local.nick, local.peer_id);
    let _ = writeln!(out, "listen   {}", local.listen_addrs.join(" "));
    let _ = match &local.reachability {
        crate::model::Reachability::Public { address } => {
            writeln!(out, "reach    public at {address}")
        }
        other => writeln!(out, "reach    {}", other.word()),
    };
    let _ = writeln!(
        out,
        "libvirt  {} ({}; accel {}): {}",
        local.hypervisor,
        local.hypervisor_origin.describe(),
        local.accel,
        local.libvirt.describe()
    );
    if let Some(l) = &local.lending {
        let _ = writeln!(out, "lends    {}", lending_text(l));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<16} {:<10} {:>10}  {:<6} VMS",
        "PEER", "ID", "LATENCY", "LINK"
    );
    for p in &status.peers {
        let latency = p
            .latency_ms
            .map(|ms| format!("{ms:.2} ms"))
            .unwrap_or_else(|| "-".into());
        let vms = p
            .vms
            .as_ref()
            .map(|v| v.join(","))
            .unwrap_or_else(|| "?".into());
        let link = match (p.connected, &p.relayed_via) {
            (false, _) => "down",
            (true, None) => "direct",
            (true, Some(_)) => "relay",
        };
        let _ = writeln!(
            out,
            "{:<16} {:<10} {:>10}  {:<6} {}",
            p.display_name(),
            short_peer_id(&p.peer_id),
            latency,
            link,
            vms
        );
    }
    let _ = writeln!(out);
    out.push_str(&super::vm::vms_text(&status.vms));
    if !status.consumptions.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<16} {:<21} {:>6} {:>6} {:>10} {:>10} {:>6}  PROVIDER",
            "CONSUMING", "LISTEN", "CONNS", "ACTIVE", "SENT", "RECEIVED", "ERRORS"
        );
        for c in &status.consumptions {
            let _ = writeln!(
                out,
                "{:<16} {:<21} {:>6} {:>6} {:>10} {:>10} {:>6}  {}",
                c.service,
                c.listen,
                c.connections_total,
                c.connections_active,
                c.bytes_to_service,
                c.bytes_from_service,
                c.errors,
                c.last_provider.as_deref().unwrap_or("-")
            );
            if let Some(error) = &c.last_error {
                let _ = writeln!(out, "  last error: {error}");
            }
        }
    }
    out.push_str(&operations_text(status));
    out.push_str(&jobs_text(status));
    for e in &status.dial_errors {
        let _ = writeln!(out, "warning: {e}");
    }
    out
}

/// Running and recent migrations and replications with their figures; empty when
/// there is none.
fn operations_text(status: &Status) -> String {
    use crate::model::{OperationKind, OperationPhase};
    let mut out = String::new();
    if status.operations.is_empty() {
        return out;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<16} {:<18} {:<12} {:>8} {:>9} {:>9} {:>8}  ERROR",
        "MIGRATION", "PEER", "PHASE", "TIME", "SVC GAP", "DOWNTIME", "SENT"
    );
    let ms = |v: Option<u64>| v.map_or_else(|| "-".into(), |ms| format!("{ms} ms"));
    for op in &status.operations {
        let peer = match op.kind {
            OperationKind::MigrateOut => format!("to {}", op.peer),
            OperationKind::MigrateIn => format!("from {}", short_peer_id(&op.peer)),
            OperationKind::ReplicateOut => format!("replica to {}", op.peer),
            OperationKind::ReplicateIn => format!("replica from {}", short_peer_id(&op.peer)),
        };
        let phase = match op.phase {
            OperationPhase::Requested => "requested",
            OperationPhase::Transferring => "transferring",
            OperationPhase::Done => "done",
            OperationPhase::Failed => "failed",
        };
        let _ = writeln!(
            out,
            "{:<16} {:<18} {:<12} {:>7.2}s {:>9} {:>9} {:>8}  {}",
            op.vm,
            peer,
            phase,
            op.elapsed_s,
            ms(op.probe_downtime_ms),
            ms(op.downtime_ms),
            op.transferred_bytes
                .map_or_else(|| "-".into(), crate::tui::panes::fmt_bytes),
            op.error.as_deref().unwrap_or("")
        );
    }
    out
}

/// Jobs seen through the job sources, failing sources, and the latest penalty
/// benchmark; empty when there is none of these.
fn jobs_text(status: &Status) -> String {
    let mut out = String::new();
    if !status.jobs.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<24} {:<16} {:<10} {:>5} {:>8} {:>9} {:>9} {:>9} {:>9}  VMS",
            "JOB", "BENCHMARK", "STATE", "DONE", "JOBS", "MAPS", "REDUCES", "READ/S", "WRITE/S"
        );
        let rate = |b: Option<f64>| b.map(fmt_rate).unwrap_or_else(|| "-".into());
        for j in &status.jobs {
            let _ = writeln!(
                out,
                "{:<24} {:<16} {:<10} {:>4.0}% {:>8} {:>9} {:>9} {:>9} {:>9}  {}{}",
                name_label(j),
                bench_label(j),
                j.state,
                j.progress_pct,
                jobs_label(j),
                format!("{}/{}", j.maps_completed, j.maps_total),
                format!("{}/{}", j.reduces_completed, j.reduces_total),
                rate(j.read_bps),
                rate(j.write_bps),
                if j.vms.is_empty() {
                    "-".to_string()
                } else {
                    j.vms.join(",")
                },
                j.note
                    .as_ref()
                    .map(|n| format!("  ({n})"))
                    .unwrap_or_default()
            );
        }
    }
    for e in source_errors(status) {
        let _ = writeln!(out, "warning: job source {e}");
    }
    if let Some(p) = &status.penalty {
        let _ = writeln!(out);
        match p.state.as_str() {
            "running" => {
                let _ = writeln!(
                    out,
                    "penalty benchmark running: {} ({}/{})",
                    p.progress, p.steps_done, p.steps_total
                );
            }
            state => {
                let _ = writeln!(out, "penalty benchmark {state}");
            }
        }
        if let Some(e) = &p.error {
            let _ = writeln!(out, "error: {e}");
        }
        if !p.rows.is_empty() {
            out.push_str(&penalty_table::text(p));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_lists_migrations_with_their_figures() {
        let mut status = crate::tui::testutil::rich_status();
        if let Some(op) = status.operations.iter_mut().find(|o| o.vm == "web-3") {
            op.probe_downtime_ms = Some(212);
        }
        let text = status_text(&status);
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle:?}:\n{text}"))
                .to_string()
        };
        assert!(line("MIGRATION").contains("SVC GAP"), "{text}");
        let web = line("web-3");
        for part in ["to peer-c", "transferring", "212 ms", "40 ms", "30.0M"] {
            assert!(web.contains(part), "web-3 line lacks {part:?}: {web}");
        }
        let db = line("db-2 ");
        assert!(
            db.contains("failed") && db.contains("destination refuses"),
            "{db}"
        );
        let empty = Status::default();
        assert!(!status_text(&empty).contains("MIGRATION"));
    }

    #[test]
    fn status_text_lists_jobs_failing_sources_and_the_penalty_table() {
        let text = status_text(&crate::tui::testutil::rich_status());
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle:?}:\n{text}"))
        };
        let tera = line("TeraSort ");
        for part in [
            "TeraSort io",
            "RUNNING",
            "45%",
            "12/16",
            "1/4",
            "42.0M",
            "8.3M",
            "web-1",
        ] {
            assert!(tera.contains(part), "TeraSort line lacks {part:?}: {tera}");
        }
        assert!(line("QuasiMonteCarlo").contains("pi cpu"));
        let group = line("CPU phase");
        for part in [" └ CPU phase", "cpu", "RUNNING", "100%", "1 of 2", "4/6"] {
            assert!(
                group.contains(part),
                "Spark group line lacks {part:?}: {group}"
            );
        }
        assert!(
            line("warning: job source")
                .contains("spark http://10.42.0.12:18080: connection refused")
        );
        assert!(!text.contains("10.42.0.11:8088"), "{text}");
        assert!(text.contains("penalty benchmark done"), "{text}");
        assert!(line("accelerator:").contains("tcg"));
        let read = line("seq-read");
        assert!(read.contains(" 410 ") && read.contains("75.6%"), "{read}");

        let mut running = crate::tui::testutil::rich_status();
        let p = running.penalty.as_mut().unwrap();
        p.state = "running".into();
        p.progress = "run 2/3: seq-read in the VM".into();
        p.steps_done = 5;
        let text = status_text(&running);
        assert!(
            text.contains("penalty benchmark running: run 2/3: seq-read in the VM (5/12)"),
            "{text}"
        );
        let plain = status_text(&crate::tui::testutil::sample_status());
        assert!(
            !plain.contains("JOB") && !plain.contains("penalty"),
            "{plain}"
        );
    }
}
