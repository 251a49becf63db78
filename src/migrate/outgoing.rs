//! Live migration over the overlay, source side: the checks, the request to the
//! destination, the libvirt call, progress, and how it ended.
//!
//! The destination authorizes the request and hands out a token (`incoming.rs`);
//! the source binds one-shot unix sockets bridged to libp2p streams that start
//! with that token (one for libvirt's RPC, one for QEMU's memory stream, one for
//! a disk copy: `tunnel.rs`, `diskmig.rs`; only the first when the VM's QEMU
//! cannot reach our sockets and the migration is tunnelled: `transport.rs`),
//! and asks its own libvirt to migrate peer-to-peer to them. The destination connects each authorized stream to its
//! local libvirt socket or QEMU's. No libvirt or QEMU port is opened between
//! hosts: every stream rides the encrypted overlay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use libp2p::PeerId;

use super::Migrations;
use super::capacity::VmRequirements;
use super::diskmig::with_disks_renamed;
use super::operations::Busy;
use super::transport::{Transport, with_disks};
use super::tunnel::{
    DISKS_CHANNEL, LOOPBACK_DISKS_CHANNEL, LOOPBACK_MEMORY_CHANNEL, MEMORY_CHANNEL, TunnelBridge,
    channel_file,
};
use crate::api::{MigrationReport, Reply};
use crate::hypervisor::MigrationUris;
use crate::hypervisor::job::JobSample;
use crate::model::{OperationKind, OperationPhase, VmState, VmView};
use crate::names::{PeerRef, VmName, peer_id_of};
use crate::node::protocol::{CHANNEL_PROTOCOL, ControlRequest, ControlResponse, TUNNEL_PROTOCOL};
use crate::phases::Phases;
use crate::services::probe::GapProbe;

/// How often the source samples libvirt's job stats while a migration runs.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Operator limits for one migration, handed to libvirt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub max_downtime_ms: Option<u64>,
    pub bandwidth_mib_s: Option<u64>,
}

/// What the destination reports once the VM has arrived, and what the source's
/// probe of the VM's service saw.
#[derive(Debug, Clone, Default)]
struct Arrival {
    downtime_ms: Option<u64>,
    transferred_bytes: Option<u64>,
    /// Of those, the bytes of disks copied to the destination.
    disk_bytes: Option<u64>,
    /// Longest time the VM's service did not answer (see downtime.rs).
    probe_downtime_ms: Option<u64>,
    /// When libvirt reported the switch-over done.
    switched: Option<Instant>,
}

impl Migrations {
    /// The control request: with `detach`, answers once the destination has
    /// accepted the VM (its checks passed, nothing moved yet) and lets the
    /// transfer run on; otherwise answers at the end with the report.
    pub async fn migrate_request(
        self: &Arc<Self>,
        vm: VmName,
        to: PeerRef,
        limits: Limits,
        foreign: bool,
        detach: bool,
    ) -> Result<Reply> {
        if !detach {
            let report = self.migrate_with(&vm, &to, limits, foreign, None).await;
            self.services.republish();
            return report.map(Reply::Migrated);
        }
        let (accepted, on_accept) = tokio::sync::oneshot::channel();
        let this = self.clone();
        let (name, dest) = (vm.clone(), to.clone());
        let task = tokio::spawn(async move {
            let result = this
                .migrate_with(&name, &dest, limits, foreign, Some(accepted))
                .await;
            this.services.republish();
            result
        });
        match on_accept.await {
            Ok(started) => Ok(Reply::MigrationStarted {
                vm,
                to: started.to,
                operation: started.operation,
            }),
            // Ended before the destination accepted: refused, or bad input.
            Err(_) => match task.await {
                Ok(result) => result.map(Reply::Migrated),
                Err(e) => Err(anyhow!("migration task failed: {e}")),
            },
        }
    }

    /// Source side: the checks, then the migration. `accepted` hears once the
    /// destination has said yes and the transfer begins.
    async fn migrate_with(
        self: &Arc<Self>,
        vm: &VmName,
        to: &PeerRef,
        limits: Limits,
        foreign: bool,
        accepted: Option<tokio::sync::oneshot::Sender<Started>>,
    ) -> Result<MigrationReport> {
        if limits.max_downtime_ms == Some(0) || limits.bandwidth_mib_s == Some(0) {
            bail!("--max-downtime and --bandwidth must be greater than 0");
        }
        let local = self.host.vm(vm).await?;
        check_migratable(&local, foreign)?;
        let net = self.node.status().await?;
        let dest = to.resolve(&net.peers)?;
        let dest_name = dest.display_name();
        if !dest.connected {
            bail!("peer {dest_name} is known but not connected: cannot migrate to it now");
        }
        let dest_id = peer_id_of(&dest)?;
        let requirements = self.capacity.requirements_of(&local).await?;
        let limit = self.capacity.max_migrations();
        let op = self
            .operations
            .begin_limited(OperationKind::MigrateOut, vm, &dest_name, limit)
            .map_err(|busy| outgoing_busy(vm, &busy, limit))?;
        tracing::info!("migrating VM '{vm}' to {dest_name}");
        let started = Instant::now();
        let phases = Phases::start();
        let accepted = accepted.map(|tx| (tx, dest_name.clone(), op));
        self.services.handover_begin(vm, dest_id).await;
        let result = self
            .migrate_to(
                &requirements,
                local.ip.clone(),
                dest_id,
                &dest_name,
                op,
                limits,
                accepted,
                &phases,
            )
            .await;
        self.services.handovers().end(vm, result.is_ok());
        phases.mark("reported");
        tracing::info!("migration of VM '{vm}' to {dest_name}: {}", phases.line());
        let arrival = match result {
            Ok(arrival) => arrival,
            Err(e) => {
                self.operations.finish(op, Some(format!("{e:#}")));
                tracing::error!("migration of VM '{vm}' to {dest_name} failed: {e:#}");
                return Err(e);
            }
        };
        let sample = JobSample {
            downtime_ms: arrival.downtime_ms,
            processed_bytes: arrival.transferred_bytes,
            remaining_bytes: Some(0),
            total_bytes: arrival.transferred_bytes,
            disk_processed_bytes: arrival.disk_bytes,
            ..JobSample::default()
        };
        self.operations.set_progress(op, &sample);
        self.operations
            .set_probe_downtime(op, arrival.probe_downtime_ms);
        let report = MigrationReport {
            vm: vm.clone(),
            from: self.nick.clone(),
            to: dest_name.clone(),
            to_peer_id: dest_id.to_string(),
            seconds: arrival
                .switched
                .unwrap_or_else(Instant::now)
                .duration_since(started)
                .as_secs_f64(),
            downtime_ms: arrival.downtime_ms,
            transferred_bytes: arrival.transferred_bytes,
            disk_bytes: arrival.disk_bytes,
            probe_downtime_ms: arrival.probe_downtime_ms,
            transport: self.operations.transport_of(op),
        };
        self.operations.succeed(op, Reply::Migrated(report.clone()));
        tracing::info!(
            "VM '{vm}' migrated to {dest_name} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(report)
    }

    /// Source side: cancels the running outgoing migration of `vm`. libvirt stops
    /// the transfer and the VM keeps running here; `migrate` then reports failure.
    pub async fn abort(&self, vm: &VmName) -> Result<String> {
        if !self.operations.is_outgoing(vm) {
            bail!("VM '{vm}' is not being migrated from this peer");
        }
        self.host.abort_job(vm).await?;
        Ok(format!(
            "migration of VM '{vm}' aborted: it keeps running on this peer"
        ))
    }

    #[allow(clippy::too_many_arguments)] // what one migration needs, no more
    async fn migrate_to(
        self: &Arc<Self>,
        vm: &VmRequirements,
        address: Option<String>,
        dest: PeerId,
        dest_name: &str,
        op: u64,
        limits: Limits,
        accepted: Option<(tokio::sync::oneshot::Sender<Started>, String, u64)>,
        phases: &Phases,
    ) -> Result<Arrival> {
        let offers = self.disk_offers(&vm.name).await?;
        let request = ControlRequest::PrepareMigration {
            vm: vm.name.to_string(),
            uuid: vm.uuid.clone(),
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            disk_mib: vm.disk_mib,
            boot_files: vm
                .boot_files
                .iter()
                .map(|f| f.to_string_lossy().into_owned())
                .collect(),
            disks: offers.clone(),
            address,
        };
        let (token, copies, incremental, direct_refused, loopback_ports) =
            match self.node.request(dest, request).await? {
                ControlResponse::MigrationAccepted {
                    token,
                    disk_copies,
                    incremental,
                    direct_refused,
                    loopback_ports,
                } => (
                    token,
                    super::diskmig::pair_copies(&offers, disk_copies)?,
                    incremental,
                    direct_refused,
                    loopback_ports,
                ),
                ControlResponse::Refused { reason } => {
                    let reason = crate::node::protocol::peer_text(&reason);
                    bail!("{dest_name} refuses {}: {reason}", vm.name)
                }
                other => bail!("{dest_name} answered unexpectedly: {other:?}"),
            };
        phases.mark("accepted");
        self.operations.set_phase(op, OperationPhase::Transferring);
        if let Some((tx, to, operation)) = accepted {
            let _ = tx.send(Started { to, operation });
        }
        let socket = self.run_dir.join(format!("migrate-{token:016x}.sock"));
        let bridge = TunnelBridge::bind(
            &self.node,
            socket,
            dest,
            TUNNEL_PROTOCOL,
            token.to_be_bytes().to_vec(),
            phases.clone(),
        )?;
        let dest_uri = format!(
            "qemu+unix:///system?socket={}",
            socket_of(&bridge).display()
        );
        let watcher = tokio::spawn(watch_progress(self.clone(), vm.name.clone(), op));
        let probe = self.probe_migrating_service(&vm.name, dest).await;
        let plan = DataPlan {
            copies: &copies,
            incremental,
            loopback_ports,
            ..self.transport_for(&vm.name, dest_name, op, direct_refused.as_deref())
        };
        phases.mark("libvirt called");
        let moved = self
            .migrate_over_channels(&vm.name, dest_uri, (dest, token, op), &plan, limits, phases)
            .await;
        let (outcome, channel_error, disk_bytes) = (moved.outcome, moved.broken, moved.disk_bytes);
        let switched = Instant::now();
        phases.mark_at("libvirt returned", switched);
        if outcome.is_ok() {
            // The VM runs at the destination now: held consumer streams go there.
            self.services.handovers().end(&vm.name, true);
        }
        watcher.abort();
        let tunnel_error = bridge.first_error().or(channel_error);
        drop(bridge);
        // What went wrong, for both sides: libvirt's reason, and whether the
        // overlay tunnel broke under it.
        let cause = outcome.as_ref().err().map(|e| {
            let tunnel = tunnel_error
                .map(|t| format!(" (the overlay tunnel to {dest_name} broke mid-transfer: {t})"))
                .unwrap_or_default();
            format!("{e:#}{tunnel}")
        });
        let ended = ControlRequest::MigrationEnded {
            token,
            ok: outcome.is_ok(),
            error: cause.clone(),
        };
        let mut arrival = Arrival {
            disk_bytes,
            ..Arrival::default()
        };
        let mut confirmed = false;
        match self.node.request(dest, ended).await {
            Ok(ControlResponse::MigrationStats {
                downtime_ms,
                transferred_bytes,
                running,
            }) => {
                arrival = Arrival {
                    downtime_ms,
                    transferred_bytes,
                    disk_bytes,
                    ..Arrival::default()
                };
                confirmed = running;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("telling {dest_name} how the migration ended: {e:#}"),
        }
        phases.mark("destination confirmed");
        if let Some(cause) = cause {
            return Err(self
                .explain_failure(&vm.name, &vm.uuid, dest, dest_name, cause)
                .await);
        }
        arrival.switched = Some(switched);
        arrival.probe_downtime_ms = finish_probe(probe).await;
        phases.mark("service answered");
        // libvirt undefines the source on success; make sure nothing is left here.
        if let Ok(still) = self.host.vm(&vm.name).await {
            bail!(
                "libvirt reported success but VM '{}' is still here ({})",
                vm.name,
                still.state.as_str()
            );
        }
        self.remove_moved_disks(&vm.name, dest_name, &copies, confirmed);
        Ok(arrival)
    }

    /// Source side: what the operator needs to know about a failed transfer:
    /// its cause, and where the VM is now.
    async fn explain_failure(
        &self,
        vm: &str,
        uuid: &str,
        dest: PeerId,
        dest_name: &str,
        cause: String,
    ) -> anyhow::Error {
        let here = match self.host.vm(vm).await {
            Ok(v) if v.state == VmState::Running => "it keeps running on this peer".to_string(),
            // Left paused by libvirt: resumed only if the destination surely
            // does not run it (paused_source.rs).
            Ok(v) if v.state == VmState::Paused => {
                self.settle_paused_source(vm, uuid, dest, dest_name).await
            }
            Ok(v) => format!(
                "it is {} on this peer: check {dest_name} before resuming it",
                v.state.as_str()
            ),
            Err(_) => format!("it is no longer defined on this peer: look for it on {dest_name}"),
        };
        anyhow!("VM '{vm}' did not move: {cause}; {here}")
    }

    /// Source side: how the VM's data goes (transport.rs), said in the
    /// operation and the log; `dest_refused`: why the destination's QEMU cannot
    /// use direct channels.
    fn transport_for(
        &self,
        vm: &str,
        dest_name: &str,
        op: u64,
        dest_refused: Option<&str>,
    ) -> DataPlan<'static> {
        let pid_file = self.daemon.run_dir.join("qemu").join(format!("{vm}.pid"));
        let reach = super::transport::qemu_reach(&pid_file);
        let (transport, why) = super::transport::decide(self.transport, &reach, dest_refused);
        let said = format!("{} ({why})", transport.as_str());
        tracing::info!("migration of VM '{vm}' to {dest_name}: {said}");
        self.operations.set_transport(op, &said);
        // A socket of ours is handed to QEMU's user when that is another one.
        let hand_to = reach.qemu_uid.filter(|uid| *uid != reach.node_uid);
        DataPlan {
            copies: &[],
            incremental: false,
            transport,
            hand_to,
            loopback_ports: None,
            qemu_on_our_loopback: reach.on_our_loopback,
            qemu_uid: reach.qemu_uid,
        }
    }

    /// Source side: the transfer of a VM: direct, over the overlay's data
    /// channels (binds the memory listener, and the NBD listener when disks are
    /// copied, bridges them to the destination), or tunnelled inside libvirt's
    /// connection; then asks libvirt.
    async fn migrate_over_channels(
        self: &Arc<Self>,
        vm: &str,
        libvirt_uri: String,
        (dest, token, op): (PeerId, u64, u64),
        plan: &DataPlan<'_>,
        limits: Limits,
        phases: &Phases,
    ) -> ChannelOutcome {
        let copies = plan.copies;
        let failed = |e| ChannelOutcome {
            outcome: Err(e),
            ..ChannelOutcome::default()
        };
        let xml = match self.host.migratable_xml(vm).await {
            Ok(xml) => xml,
            Err(e) => return failed(e),
        };
        let dest_xml = match with_disks_renamed(&xml, copies) {
            Ok(xml) => xml,
            Err(e) => return failed(e),
        };
        let copy_disks = !copies.is_empty();
        let transport = match with_disks(
            plan.transport,
            copies.len(),
            plan.loopback_ports,
            plan.qemu_on_our_loopback,
        ) {
            Ok((transport, None)) => transport,
            Ok((transport, Some(why))) => {
                let before = self.operations.transport_of(op).unwrap_or_default();
                let said = format!("{} (instead of {before}: {why})", transport.as_str());
                tracing::info!("migration of VM '{vm}': {said}");
                self.operations.set_transport(op, &said);
                transport
            }
            Err(why) => return failed(anyhow!(why)),
        };
        let mut bridges = Vec::new();
        let mut uris = Vec::new();
        // Dropped (removed) once libvirt is done with the sockets in it.
        let mut _channels = None;
        match (transport, plan.loopback_ports) {
            (Transport::Tunnelled, _) => {}
            (Transport::Loopback, Some(ports)) => {
                let channels = [LOOPBACK_MEMORY_CHANNEL, LOOPBACK_DISKS_CHANNEL];
                let Some(qemu_uid) = plan.qemu_uid else {
                    return failed(anyhow!("QEMU's user is unknown: no loopback migration"));
                };
                for (port, tag) in ports.into_iter().zip(channels) {
                    let bound = TunnelBridge::bind_loopback(
                        &self.node,
                        (port, qemu_uid),
                        dest,
                        (token, tag),
                        phases.clone(),
                    )
                    .await;
                    match bound {
                        Ok(bridge) => bridges.push(bridge),
                        Err(e) => return failed(e),
                    }
                    // Both QEMUs read the same URI: the destination's listens
                    // on it, the source's connects to it, each on its own
                    // host's loopback.
                    uris.push(format!("tcp://127.0.0.1:{port}"));
                }
            }
            _ => {
                let run = &self.daemon.run_dir;
                match super::tunnel::ChannelDir::make(run, token, plan.hand_to) {
                    Ok(dir) => _channels = Some(dir),
                    Err(e) => return failed(e),
                }
                let tags: &[u8] = if copy_disks {
                    &[MEMORY_CHANNEL, DISKS_CHANNEL]
                } else {
                    &[MEMORY_CHANNEL]
                };
                for &tag in tags {
                    let Some(file) = channel_file(token, tag) else {
                        continue;
                    };
                    let mut header = token.to_be_bytes().to_vec();
                    header.push(tag);
                    let bound = TunnelBridge::bind(
                        &self.node,
                        run.join(&file),
                        dest,
                        CHANNEL_PROTOCOL,
                        header,
                        phases.clone(),
                    );
                    match bound.and_then(|bridge| hand_over(bridge, plan.hand_to)) {
                        Ok(bridge) => bridges.push(bridge),
                        Err(e) => return failed(e),
                    }
                    // The source daemon's own view of the same socket.
                    uris.push(format!("unix:///run/libvirt/{file}"));
                }
            }
        }
        let uris = MigrationUris {
            libvirt: libvirt_uri,
            memory: uris.first().cloned(),
            disks: uris.get(1).cloned().filter(|_| copy_disks),
            copy_disks,
            incremental: plan.incremental,
            tunnelled: transport == Transport::Tunnelled,
            // The destination's QEMU listens on its loopback only.
            listen_address: (transport == Transport::Loopback).then(|| "127.0.0.1".to_string()),
            qemu_tls: false,
        };
        let outcome = self
            .host
            .migrate_p2p(
                vm,
                uris,
                dest_xml,
                limits.max_downtime_ms,
                limits.bandwidth_mib_s,
            )
            .await;
        ChannelOutcome {
            outcome,
            broken: bridges.iter().find_map(|b| b.first_error()),
            disk_bytes: bridges
                .get(1)
                .filter(|_| copy_disks)
                .map(TunnelBridge::sent),
        }
    }
}

/// Waits for the probed service to answer again and returns the longest gap.
async fn finish_probe(probe: Option<(GapProbe, String)>) -> Option<u64> {
    let (probe, service) = probe?;
    let report = probe.finish().await?;
    tracing::info!(
        "service {service}: longest gap {} ms during the migration ({} of {} probes answered{})",
        report.longest_gap_ms(),
        report.answered,
        report.probes,
        if report.recovered {
            ""
        } else {
            "; it did not answer again"
        }
    );
    Some(report.longest_gap_ms())
}

/// Source side: samples the VM's migration job into its operation until aborted.
async fn watch_progress(migrations: Arc<Migrations>, vm: VmName, op: u64) {
    loop {
        tokio::time::sleep(PROGRESS_EVERY).await;
        match migrations.host.job_progress(&vm).await {
            Ok(Some(sample)) => migrations.operations.set_progress(op, &sample),
            Ok(None) => {}
            Err(e) => tracing::debug!("migration progress of VM '{vm}': {e:#}"),
        }
    }
}

/// What a detached migration request answers once the destination accepted.
struct Started {
    to: String,
    operation: u64,
}

/// Only a running VM peervisor made (or one the operator insists on) migrates.
fn check_migratable(vm: &VmView, foreign: bool) -> Result<()> {
    let name = &vm.name;
    match vm.state {
        VmState::Running => {}
        VmState::Paused => {
            bail!("VM '{name}' is paused: only a running VM can live-migrate (resume it first)")
        }
        other => bail!(
            "VM '{name}' is {}: only a running VM can live-migrate (start it first)",
            other.as_str()
        ),
    }
    if !vm.managed && !foreign {
        bail!(
            "VM '{name}' was not created by peervisor: it is shown read-only (use --force to migrate it anyway)"
        );
    }
    Ok(())
}

/// The source's answer when it may not start one more migration.
fn outgoing_busy(vm: &str, busy: &Busy, limit: u32) -> anyhow::Error {
    match busy {
        Busy::Vm {
            kind: OperationKind::MigrateIn,
            peer,
        } => anyhow!("VM '{vm}' is still arriving from {peer}: wait for it to land"),
        Busy::Vm { peer, .. } => anyhow!(
            "VM '{vm}' is already being migrated to {peer}: wait for it to end (or `peervisor migrate --abort {vm}`)"
        ),
        Busy::Limit { running } => anyhow!(
            "this peer is already sending {running} migration(s), its limit of {limit} (--max-migrations): try again when one ends"
        ),
    }
}

/// How one migration's data goes (`Migrations::data_plan`).
struct DataPlan<'a> {
    /// Source file → destination file, empty when nothing is copied.
    copies: &'a [(String, String)],
    /// Only the overlays are copied, the destination has their base images.
    incremental: bool,
    transport: Transport,
    /// QEMU's user, when it is not this node's: our sockets are handed to it.
    hand_to: Option<u32>,
    /// The destination's loopback ports (memory, disks) for a loopback migration.
    loopback_ports: Option<[u16; 2]>,
    /// QEMU here shares this node's network namespace.
    qemu_on_our_loopback: bool,
    /// The user QEMU runs as here (None: unknown).
    qemu_uid: Option<u32>,
}

/// Gives a data channel's socket to QEMU's user (`uid`), so that a QEMU running
/// as another user than this node (the system daemon's libvirt-qemu) may
/// connect to it; only that user and this node can.
fn hand_over(bridge: TunnelBridge, uid: Option<u32>) -> Result<TunnelBridge> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(uid) = uid {
        let path = socket_of(&bridge);
        std::os::unix::fs::chown(path, Some(uid), None)
            .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)))
            .map_err(|e| anyhow!("handing {} to QEMU's user (uid {uid}): {e}", path.display()))?;
    }
    Ok(bridge)
}

/// The socket file of a bridge bound with `TunnelBridge::bind`.
fn socket_of(bridge: &TunnelBridge) -> &std::path::Path {
    bridge.path.as_deref().unwrap_or(std::path::Path::new(""))
}

/// How a transfer over the data channels ended, at the source.
struct ChannelOutcome {
    /// libvirt's answer.
    pub outcome: Result<()>,
    /// The first error a data channel ended with (the overlay broke).
    pub broken: Option<String>,
    /// Bytes the NBD disk copy sent through the overlay (libvirt's job stats
    /// show the disk copy only while it runs, and the destination's completed
    /// job not at all).
    pub disk_bytes: Option<u64>,
}

impl Default for ChannelOutcome {
    fn default() -> Self {
        ChannelOutcome {
            outcome: Ok(()),
            broken: None,
            disk_bytes: None,
        }
    }
}
