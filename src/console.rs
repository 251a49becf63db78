//! Wiring the console to a node: embedded in this process, or attached to a running
//! node through its control socket. Either way the console reads snapshots from a
//! watch channel and sends requests out; it never waits on the node to draw.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{mpsc, watch};

use crate::bench::penalty::table as penalty_table;
use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::model::{ServiceView, Status, VmView, short_peer_id};
use crate::paths::DataDir;
use crate::peer::{Peer, PeerConfig};
use crate::tui::keymap;
use crate::tui::panes::fmt_rate;
use crate::tui::panes::jobs::{bench_label, source_errors};
use crate::tui::{self, ConsoleOptions, Notice, UiCommand};

/// How the console looks: `--theme` and `--keymap`.
#[derive(Debug, Clone, Default)]
pub struct Look {
    pub theme: Option<String>,
    pub keymap: Option<String>,
}

/// Where the console's requests go.
#[derive(Clone)]
enum Backend {
    Embedded(Arc<Peer>),
    Attached(ControlClient),
}

impl Backend {
    async fn call(&self, request: Request) -> Result<Reply> {
        match self {
            Backend::Embedded(peer) => peer.handle(request).await,
            Backend::Attached(client) => client.call(&request).await,
        }
    }
}

/// `peervisor`: starts a peer in this process and opens the console on it.
pub async fn embedded(config: PeerConfig, look: &Look) -> Result<()> {
    tui::init_logging()?;
    let peer = crate::peer::start_serving(config).await?;
    let title = format!("embedded node, {}", peer.data_dir().root().display());
    let result = run_console(Backend::Embedded(peer.clone()), title, look).await;
    peer.shutdown(false).await;
    let _ = std::fs::remove_file(peer.data_dir().control_socket());
    result
}

/// `peervisor --attach DIR`: the console on a node that runs elsewhere.
pub async fn attach(dir: &DataDir, look: &Look) -> Result<()> {
    let client = ControlClient::new(&dir.control_socket());
    // Fail before taking over the terminal if nothing answers.
    client.call(&Request::Status).await?;
    tui::init_logging()?;
    run_console(
        Backend::Attached(client),
        dir.root().display().to_string(),
        look,
    )
    .await
}

async fn run_console(backend: Backend, attached_to: String, look: &Look) -> Result<()> {
    let (status_tx, status_rx) = watch::channel(None);
    let (command_tx, command_rx) = mpsc::channel(16);
    let (notice_tx, notice_rx) = mpsc::channel(64);
    let poller = tokio::spawn(poll_status(backend.clone(), status_tx));
    let executor = tokio::spawn(execute_commands(backend, command_rx, notice_tx));
    let mut options = ConsoleOptions::new("peervisor", attached_to);
    options.theme = look.theme.clone();
    options.keymap = look.keymap.clone();
    let result = tui::run(status_rx, command_tx, notice_rx, options).await;
    poller.abort();
    executor.abort();
    result
}

/// Refreshes the snapshot once a second, off the drawing path.
async fn poll_status(backend: Backend, tx: watch::Sender<Option<Status>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut was_failing = false;
    loop {
        tick.tick().await;
        match backend.call(Request::Status).await {
            Ok(Reply::Status(status)) => {
                if was_failing {
                    tracing::info!("node reachable again");
                    was_failing = false;
                }
                if tx.send(Some(*status)).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if !was_failing {
                    tracing::error!("cannot read the node's status: {e:#}");
                    was_failing = true;
                }
            }
        }
    }
}

/// Runs the operator's requests, each in its own task (a migration takes
/// seconds; a stop must not wait for it). Outcomes go to the status line and
/// the log pane.
async fn execute_commands(
    backend: Backend,
    mut commands: mpsc::Receiver<UiCommand>,
    notices: mpsc::Sender<Notice>,
) {
    while let Some(command) = commands.recv().await {
        let Some(request) = to_request(&command) else {
            let text = format!(
                "{}: the node cannot do this yet (no control request for it)",
                command.describe()
            );
            tracing::warn!("{text}");
            let _ = notices.try_send(Notice { text, error: true });
            continue;
        };
        let backend = backend.clone();
        let notices = notices.clone();
        tokio::spawn(async move {
            tracing::info!("{} requested", command.describe());
            let notice = match backend.call(request).await {
                Ok(reply) => {
                    let text = outcome_text(&command, &reply);
                    tracing::info!("{text}");
                    Notice { text, error: false }
                }
                Err(e) => {
                    let text = format!("{} failed: {e:#}", command.describe());
                    tracing::error!("{text}");
                    Notice { text, error: true }
                }
            };
            let _ = notices.try_send(notice);
        });
    }
}

/// The control request that carries out an operator's command, where the node
/// has one.
fn to_request(command: &UiCommand) -> Option<Request> {
    Some(match command.clone() {
        UiCommand::Migrate { vm, to } => Request::Migrate {
            vm,
            to,
            max_downtime_ms: None,
            bandwidth_mib_s: None,
            foreign: false,
            detach: false,
        },
        UiCommand::Replicate { vm, to } => Request::Replicate { vm, to, name: None },
        UiCommand::Start { vm } => Request::VmStart {
            name: vm,
            foreign: false,
        },
        // Graceful (ACPI), powered off after the node's default timeout.
        UiCommand::Stop { vm } => Request::VmStop {
            name: vm,
            force: false,
            timeout_s: None,
            foreign: false,
        },
        UiCommand::Delete { vm } => Request::VmRemove {
            name: vm,
            foreign: false,
        },
        UiCommand::AbortMigration { vm } => Request::MigrateAbort { vm },
        UiCommand::Pause { vm } => Request::VmPause {
            name: vm,
            foreign: false,
        },
        UiCommand::Resume { vm } => Request::VmResume {
            name: vm,
            foreign: false,
        },
        UiCommand::Consume {
            service,
            local_port,
        } => Request::Consume {
            service,
            local_port,
            bind: None,
        },
        UiCommand::Unconsume { service } => Request::Unconsume { service },
        UiCommand::Expose { name, target } => Request::Expose {
            name,
            target,
            kind: None,
            allow: Vec::new(),
            max_conns: None,
        },
    })
}

fn outcome_text(command: &UiCommand, reply: &Reply) -> String {
    match reply {
        Reply::Migrated(r) => format!(
            "VM '{}' now runs on {} ({:.1} s)",
            r.vm,
            if r.to.is_empty() {
                short_peer_id(&r.to_peer_id)
            } else {
                r.to.clone()
            },
            r.seconds
        ),
        Reply::Replicated(r) => format!(
            "VM '{}' replicated to {} as '{}' ({:.1} s)",
            r.vm,
            if r.to.is_empty() {
                short_peer_id(&r.to_peer_id)
            } else {
                r.to.clone()
            },
            r.replica,
            r.seconds
        ),
        Reply::Done { message } => message.clone(),
        Reply::Consuming(c) => format!(
            "Consuming {} at {} (through the overlay)",
            c.service, c.listen
        ),
        _ => format!("{} done", command.describe()),
    }
}

/// "8 vCPUs (1 in use), 21.2 GiB memory (128 MiB in use), 35.3 GiB disk; 2 migrations each way".
fn lending_text(l: &crate::model::LendingView) -> String {
    use crate::peer::capacity::fmt_mib;
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
        "libvirt  {} (accel {}): {}",
        local.hypervisor,
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
    out.push_str(&vms_text(&status.vms));
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
            "{:<24} {:<16} {:<10} {:>5} {:>9} {:>9} {:>9} {:>9}  VMS",
            "JOB", "BENCHMARK", "STATE", "DONE", "MAPS", "REDUCES", "READ/S", "WRITE/S"
        );
        let rate = |b: Option<f64>| b.map(fmt_rate).unwrap_or_else(|| "-".into());
        for j in &status.jobs {
            let _ = writeln!(
                out,
                "{:<24} {:<16} {:<10} {:>4.0}% {:>9} {:>9} {:>9} {:>9}  {}",
                j.name,
                bench_label(j),
                j.state,
                j.progress_pct,
                format!("{}/{}", j.maps_completed, j.maps_total),
                format!("{}/{}", j.reduces_completed, j.reduces_total),
                rate(j.read_bps),
                rate(j.write_bps),
                if j.vms.is_empty() {
                    "-".to_string()
                } else {
                    j.vms.join(",")
                }
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

/// `peervisor services` filters: `--type`, and `--tag KEY=VALUE` (all must match).
pub fn filter_services(
    services: Vec<ServiceView>,
    kind: Option<&str>,
    tags: &[String],
) -> Result<Vec<ServiceView>> {
    let mut wanted = Vec::new();
    for tag in tags {
        let Some((k, v)) = tag.split_once('=') else {
            anyhow::bail!("--tag {tag}: expected KEY=VALUE");
        };
        wanted.push((k.to_string(), v.to_string()));
    }
    Ok(services
        .into_iter()
        .filter(|s| kind.is_none_or(|k| s.kind == k))
        .filter(|s| wanted.iter().all(|t| s.tags.contains(t)))
        .collect())
}

pub fn services_text(services: &[ServiceView]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<6} {:<16} {:<12} {:>10}  {:>5} {:>5}",
        "SERVICE", "TYPE", "PROVIDER", "VM", "LATENCY", "CPU%", "CONNS"
    );
    for s in services {
        for (i, p) in s.providers.iter().enumerate() {
            let (name, kind) = if i == 0 {
                (s.name.as_str(), s.kind.as_str())
            } else {
                ("", "")
            };
            let latency = p
                .latency_ms
                .map(|ms| format!("{ms:.2} ms"))
                .unwrap_or_else(|| "-".into());
            let (cpu, conns) = p
                .load
                .as_ref()
                .map(|l| (format!("{:.0}", l.cpu_pct), l.connections.to_string()))
                .unwrap_or_else(|| ("-".into(), "-".into()));
            let who = if p.local {
                format!("{} (here)", p.peer_nick)
            } else {
                p.peer_nick.clone()
            };
            let _ = writeln!(
                out,
                "{:<16} {:<6} {:<16} {:<12} {:>10}  {:>5} {:>5}",
                name,
                kind,
                who,
                p.vm.as_deref().unwrap_or("(host)"),
                latency,
                cpu,
                conns
            );
        }
    }
    out
}

pub fn vms_text(vms: &[VmView]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<8} {:>5} {:>8}  {:<15}",
        "VM", "STATE", "VCPU", "MEM", "IP"
    );
    for vm in vms {
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:>5} {:>5}MiB  {:<15}{}",
            vm.name,
            vm.state.as_str(),
            vm.vcpus,
            vm.memory_mib,
            vm.ip.as_deref().unwrap_or("-"),
            if vm.managed { "" } else { "  (foreign)" }
        );
    }
    out
}

/// `peervisor keys`: the effective keymap as a keymap file, with where it came from.
pub fn keys_text(look: &Look) -> String {
    let config_dir = tui::ConsoleOptions::new("peervisor", String::new()).config_dir;
    let effective = keymap::effective(look.keymap.as_deref(), config_dir.as_deref());
    let mut out = String::new();
    let _ = writeln!(out, "# effective peervisor console keymap");
    let _ = writeln!(out, "# from: {}", effective.sources.join(" + "));
    if let Some(dir) = &config_dir {
        let _ = writeln!(
            out,
            "# user file: {} (names only the actions it changes)",
            keymap::user_keymap_path(dir).display()
        );
    }
    if let Some(e) = &effective.error {
        let _ = writeln!(out, "# error: {e} (defaults shown)");
    }
    out.push_str(&effective.keymap.to_toml());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_commands_map_to_control_requests_or_are_refused() {
        assert_eq!(
            to_request(&UiCommand::Migrate {
                vm: "web-1".into(),
                to: "peer-b".into()
            }),
            Some(Request::Migrate {
                vm: "web-1".into(),
                to: "peer-b".into(),
                max_downtime_ms: None,
                bandwidth_mib_s: None,
                foreign: false,
                detach: false,
            })
        );
        assert_eq!(
            to_request(&UiCommand::Stop { vm: "a".into() }),
            Some(Request::VmStop {
                name: "a".into(),
                force: false,
                timeout_s: None,
                foreign: false
            })
        );
        assert_eq!(
            to_request(&UiCommand::Consume {
                service: "web".into(),
                local_port: Some(8080)
            }),
            Some(Request::Consume {
                service: "web".into(),
                local_port: Some(8080),
                bind: None
            })
        );
        assert_eq!(
            to_request(&UiCommand::Expose {
                name: "pg".into(),
                target: "127.0.0.1:5432".into()
            }),
            Some(Request::Expose {
                name: "pg".into(),
                target: "127.0.0.1:5432".into(),
                kind: None,
                allow: Vec::new(),
                max_conns: None,
            })
        );
        assert_eq!(
            to_request(&UiCommand::Pause { vm: "a".into() }),
            Some(Request::VmPause {
                name: "a".into(),
                foreign: false
            })
        );
    }

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
