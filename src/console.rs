//! Wiring the console to a node: embedded in this process, or attached to a running
//! node through its control socket. Either way the console reads snapshots from a
//! watch channel and sends requests out; it never waits on the node to draw.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{mpsc, watch};

use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::model::{ServiceView, Status, VmView, short_peer_id};
use crate::paths::DataDir;
use crate::runtime::{Peer, PeerConfig};
use crate::tui::{self, ConsoleOptions, UiCommand};

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
pub async fn embedded(config: PeerConfig) -> Result<()> {
    tui::init_logging()?;
    let peer = crate::start_serving(config).await?;
    let title = format!("embedded node, {}", peer.data_dir().root().display());
    let result = run_console(Backend::Embedded(peer.clone()), title).await;
    peer.shutdown(false).await;
    let _ = std::fs::remove_file(peer.data_dir().control_socket());
    result
}

/// `peervisor --attach DIR`: the console on a node that runs elsewhere.
pub async fn attach(dir: &DataDir) -> Result<()> {
    let client = ControlClient::new(&dir.control_socket());
    // Fail before taking over the terminal if nothing answers.
    client.call(&Request::Status).await?;
    tui::init_logging()?;
    run_console(Backend::Attached(client), dir.root().display().to_string()).await
}

async fn run_console(backend: Backend, attached_to: String) -> Result<()> {
    let (status_tx, status_rx) = watch::channel(None);
    let (command_tx, command_rx) = mpsc::channel(16);
    let poller = tokio::spawn(poll_status(backend.clone(), status_tx));
    let executor = tokio::spawn(execute_commands(backend, command_rx));
    let options = ConsoleOptions {
        title: "peervisor".into(),
        attached_to,
    };
    let result = tui::run(status_rx, command_tx, options).await;
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

/// Runs the operator's requests one after another; results go to the log pane.
async fn execute_commands(backend: Backend, mut commands: mpsc::Receiver<UiCommand>) {
    while let Some(command) = commands.recv().await {
        match command {
            UiCommand::Migrate { vm, to_peer_id } => {
                let backend = backend.clone();
                // Migrations take seconds: do not hold up other commands.
                tokio::spawn(async move {
                    tracing::info!("migrate {vm} -> {}", short_peer_id(&to_peer_id));
                    match backend
                        .call(Request::Migrate {
                            vm: vm.clone(),
                            to: to_peer_id,
                        })
                        .await
                    {
                        Ok(Reply::Migrated(r)) => tracing::info!(
                            "VM '{}' now runs on {} ({:.1} s)",
                            r.vm,
                            r.to,
                            r.seconds
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::error!("migrating '{vm}': {e:#}"),
                    }
                });
            }
        }
    }
}

/// `peervisor status` as plain text.
pub fn status_text(status: &Status) -> String {
    let mut out = String::new();
    let local = &status.local;
    let _ = writeln!(out, "peer     {} ({})", local.nick, local.peer_id);
    let _ = writeln!(out, "listen   {}", local.listen_addrs.join(" "));
    let _ = writeln!(out, "libvirt  {} (accel {})", local.hypervisor, local.accel);
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
        let link = if p.connected { "up" } else { "down" };
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
        }
    }
    for e in &status.dial_errors {
        let _ = writeln!(out, "warning: {e}");
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
