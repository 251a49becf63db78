//! `peervisor migrate` (with its progress line) and `peervisor replicate`, and
//! the one-line summaries of their reports.

use anyhow::{Result, bail};

use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::names::VmName;

/// `peervisor migrate`: sends the request; while a `--wait` runs, shows the
/// transfer's progress on a terminal.
pub async fn migrate(control: &ControlClient, request: &Request, json: bool) -> Result<()> {
    let follow = match request {
        Request::Migrate {
            vm, detach: false, ..
        } if std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
            Some(tokio::spawn(show_progress(control.clone(), vm.clone())))
        }
        _ => None,
    };
    let reply = control.call(request).await;
    if let Some(task) = follow {
        task.abort();
        eprint!("\r\x1b[2K");
    }
    match reply? {
        Reply::Migrated(report) if json => {
            println!("{}", serde_json::to_string_pretty(&report)?)
        }
        Reply::Migrated(report) => println!("{}", describe_migration(&report)),
        Reply::MigrationStarted { vm, to, operation } if json => println!(
            "{}",
            serde_json::json!({ "vm": vm, "to": to, "operation": operation, "state": "transferring" })
        ),
        Reply::MigrationStarted { vm, to, .. } => println!(
            "VM '{vm}' accepted by {to}: migrating (follow it with `peervisor status`; --wait waits for the end)"
        ),
        Reply::Done { message } => println!("{message}"),
        _ => bail!("unexpected reply to migrate"),
    }
    Ok(())
}

/// `peervisor replicate`: waits for the end and prints the figures.
pub async fn replicate(control: &ControlClient, request: &Request, json: bool) -> Result<()> {
    match control.call(request).await? {
        Reply::Replicated(report) if json => {
            println!("{}", serde_json::to_string_pretty(&report)?)
        }
        Reply::Replicated(report) => println!("{}", describe_replication(&report)),
        _ => bail!("unexpected reply to replicate"),
    }
    Ok(())
}

/// One progress line, redrawn each second, from the node's operation list.
async fn show_progress(control: ControlClient, vm: VmName) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let Ok(Reply::Status(status)) = control.call(&Request::Status).await else {
            continue;
        };
        let Some(op) = status
            .operations
            .iter()
            .rev()
            .find(|o| o.vm == vm && o.kind == crate::model::OperationKind::MigrateOut)
        else {
            continue;
        };
        let pct = op
            .progress
            .map_or(String::from("?"), |p| format!("{:.0}", p * 100.0));
        let sent = op.transferred_bytes.unwrap_or(0) >> 20;
        eprint!(
            "\r\x1b[2K{vm} -> {}: {pct}% ({sent} MiB sent, {:.0} s)",
            op.peer, op.elapsed_s
        );
    }
}

/// One line for a finished migration: total time, downtime, bytes.
fn describe_migration(report: &crate::control::MigrationReport) -> String {
    let mut line = format!(
        "VM '{}' migrated from {} to {} in {:.2} s",
        report.vm, report.from, report.to, report.seconds
    );
    if let Some(transport) = &report.transport {
        line.push_str(&format!(", {transport}"));
    }
    if let Some(ms) = report.probe_downtime_ms {
        line.push_str(&format!(", service gap {ms} ms"));
    }
    if let Some(ms) = report.downtime_ms {
        line.push_str(&format!(", downtime {ms} ms (libvirt)"));
    }
    if let Some(bytes) = report.transferred_bytes {
        line.push_str(&format!(
            ", {:.1} MiB sent",
            bytes as f64 / (1024.0 * 1024.0)
        ));
    }
    line
}

/// One line for a finished replication: name, time, pause, disk sizes and bytes.
fn describe_replication(r: &crate::control::ReplicationReport) -> String {
    let mut line = format!(
        "VM '{}' replicated from {} to {} as '{}' ({}) in {:.2} s",
        r.vm, r.from, r.to, r.replica, r.replica_ip, r.seconds
    );
    if let Some(ms) = r.paused_ms {
        line.push_str(&format!(", source paused {ms} ms"));
    }
    if let (Some(snap), Some(commit)) = (r.overlay_ms, r.commit_ms) {
        line.push_str(&format!(
            ", source not paused (disk frozen under an overlay in {snap} ms, merged back in {commit} ms)"
        ));
    }
    if let Some(d) = &r.disk {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        line.push_str(&format!(
            "\ndisk: virtual {:.1} MiB, allocated {:.1} MiB, data {:.1} MiB; sent {}/{} chunks, {:.2} MiB on the stream",
            mib(d.virtual_bytes),
            mib(d.allocated_bytes),
            mib(d.data_bytes),
            d.chunks_sent,
            d.chunks_total,
            mib(d.wire_bytes)
        ));
        if d.chunks_sent < d.chunks_total {
            line.push_str(" (resumed: the rest was there already)");
        }
    }
    line
}
