//! Live migration over the overlay.
//!
//! The destination authorizes the request and hands out a token; the source binds
//! one-shot unix sockets bridged to libp2p streams that start with that token (one
//! for libvirt's RPC, one for QEMU's memory stream, one for a disk copy: see
//! `diskmig`), and asks its own libvirt to migrate peer-to-peer to them. The
//! destination connects each authorized stream to its local libvirt socket or
//! QEMU's. No libvirt or QEMU port is opened between hosts: every stream rides the
//! encrypted overlay.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use libp2p::PeerId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::control::Role;
use crate::control::{MigrationReport, Reply};
use crate::hypervisor::job::JobSample;
use crate::model::{OperationKind, OperationPhase, VmState, VmView};
use crate::node::protocol::{CHANNEL_PROTOCOL, ControlRequest, ControlResponse, TUNNEL_PROTOCOL};
use crate::peer::Peer;
use crate::peer::capacity::{Refusal, Reservation, VmRequirements};
use crate::peer::operations::Busy;
use crate::peer::peers::{peer_id_of, resolve};
use crate::peer::phases::Phases;
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

/// Read size of the tunnel's copies: large noise/yamux frames.
const TUNNEL_BUFFER: usize = 256 * 1024;

/// How long an authorization to open tunnel streams stays valid.
const GRANT_TTL: Duration = Duration::from_secs(600);
/// An accepted migration whose source opens no tunnel stream this fast is over
/// (the source's libvirt connects at once; the source may have died).
const UNUSED_GRANT_TTL: Duration = Duration::from_secs(60);
/// A tunnel stream must present its token this fast.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a destination waits, once the last tunnel stream of a migration has
/// closed, for the source to say how it ended before finding out itself.
const SETTLE_AFTER_TUNNEL: Duration = Duration::from_secs(5);
/// Bounds on what a source may send about the files its VM boots from.
const MAX_BOOT_FILES: usize = 8;
const MAX_PATH_LEN: usize = 4096;

struct Grant {
    peer: PeerId,
    vm: String,
    operation: u64,
    expires: Instant,
    /// The VM's share of the lent capacity, held until it arrived or failed.
    _reservation: Option<Reservation>,
    /// Tunnel streams of this migration open right now.
    streams: u32,
    /// Whether any tunnel stream was opened yet.
    opened: bool,
    /// Disk files made here for the VM (diskmig.rs): deleted unless it arrives.
    made_disks: Vec<PathBuf>,
}

/// Tunnel authorizations this peer (as a destination) has handed out.
#[derive(Default)]
pub struct TunnelGrants {
    grants: Mutex<HashMap<u64, Grant>>,
}

impl TunnelGrants {
    fn insert(&self, token: u64, grant: Grant) {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        grants.insert(token, grant);
    }

    /// Removes and returns the grants whose time is up (and carry no transfer).
    fn take_expired(&self) -> Vec<Grant> {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let expired: Vec<u64> = grants
            .iter()
            .filter(|(_, g)| g.expires <= now && g.streams == 0)
            .map(|(t, _)| *t)
            .collect();
        expired
            .into_iter()
            .filter_map(|t| grants.remove(&t))
            .collect()
    }

    /// Counts a tunnel stream of this grant; false if the token is not good.
    fn stream_opened(&self, token: u64, peer: PeerId) -> bool {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        match grants.get_mut(&token) {
            Some(g) if g.peer == peer && g.expires > Instant::now() => {
                g.streams += 1;
                g.opened = true;
                true
            }
            _ => false,
        }
    }

    /// Uncounts a tunnel stream; true if it was the grant's last one.
    fn stream_closed(&self, token: u64) -> bool {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        grants.get_mut(&token).is_some_and(|g| {
            g.streams = g.streams.saturating_sub(1);
            g.streams == 0
        })
    }

    /// Removes the grant if no tunnel stream was ever opened with it.
    fn take_unused(&self, token: u64) -> Option<Grant> {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        match grants.get(&token) {
            Some(g) if !g.opened => grants.remove(&token),
            _ => None,
        }
    }

    fn contains(&self, token: u64) -> bool {
        let grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        grants.contains_key(&token)
    }

    #[cfg(test)]
    fn allows(&self, token: u64, peer: PeerId) -> bool {
        let grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        grants
            .get(&token)
            .is_some_and(|g| g.peer == peer && g.expires > Instant::now())
    }

    fn take(&self, token: u64, peer: PeerId) -> Option<Grant> {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        match grants.get(&token) {
            Some(g) if g.peer == peer => grants.remove(&token),
            _ => None,
        }
    }
}

impl Peer {
    /// The control request: with `detach`, answers once the destination has
    /// accepted the VM (its checks passed, nothing moved yet) and lets the
    /// transfer run on; otherwise answers at the end with the report.
    pub(crate) async fn migrate_request(
        self: &Arc<Self>,
        vm: String,
        to: String,
        limits: Limits,
        foreign: bool,
        detach: bool,
    ) -> Result<Reply> {
        if !detach {
            let report = self.migrate_with(&vm, &to, limits, foreign, None).await;
            self.services.republish.notify_one();
            return report.map(Reply::Migrated);
        }
        let (accepted, on_accept) = tokio::sync::oneshot::channel();
        let this = self.clone();
        let (name, dest) = (vm.clone(), to.clone());
        let task = tokio::spawn(async move {
            let result = this
                .migrate_with(&name, &dest, limits, foreign, Some(accepted))
                .await;
            this.services.republish.notify_one();
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
        vm: &str,
        to: &str,
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
        let dest = resolve(to, &net.peers)?;
        let dest_name = dest.display_name();
        if !dest.connected {
            bail!("peer {dest_name} is known but not connected: cannot migrate to it now");
        }
        let dest_id = peer_id_of(&dest)?;
        let requirements = self.requirements_of(&local).await?;
        let limit = self.capacity.max_migrations;
        let op = self
            .operations
            .begin_limited(OperationKind::MigrateOut, vm, &dest_name, limit)
            .map_err(|busy| outgoing_busy(vm, &busy, limit))?;
        tracing::info!("migrating VM '{vm}' to {dest_name}");
        let started = Instant::now();
        let phases = Phases::start();
        let accepted = accepted.map(|tx| (tx, dest_name.clone(), op));
        self.handover_begin(vm, dest_id).await;
        let result = self
            .migrate_to(
                &requirements,
                dest_id,
                &dest_name,
                op,
                limits,
                accepted,
                &phases,
            )
            .await;
        self.handovers.end(vm, result.is_ok());
        phases.mark("reported");
        tracing::info!("migration of VM '{vm}' to {dest_name}: {}", phases.line());
        match &result {
            Ok(arrival) => {
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
                self.operations.finish(op, None);
                tracing::info!(
                    "VM '{vm}' migrated to {dest_name} in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                self.operations.finish(op, Some(format!("{e:#}")));
                tracing::error!("migration of VM '{vm}' to {dest_name} failed: {e:#}");
            }
        }
        result.map(|arrival| MigrationReport {
            vm: vm.to_string(),
            from: self.config.nick.clone(),
            to: dest_name,
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
        })
    }

    /// Source side: cancels the running outgoing migration of `vm`. libvirt stops
    /// the transfer and the VM keeps running here; `migrate` then reports failure.
    pub async fn abort_migration(&self, vm: &str) -> Result<()> {
        if !self.operations.is_outgoing(vm) {
            bail!("VM '{vm}' is not being migrated from this peer");
        }
        self.host.abort_job(vm).await
    }

    #[allow(clippy::too_many_arguments)] // what one migration needs, no more
    async fn migrate_to(
        self: &Arc<Self>,
        vm: &VmRequirements,
        dest: PeerId,
        dest_name: &str,
        op: u64,
        limits: Limits,
        accepted: Option<(tokio::sync::oneshot::Sender<Started>, String, u64)>,
        phases: &Phases,
    ) -> Result<Arrival> {
        let offers = self.disk_offers(&vm.name).await?;
        let request = ControlRequest::PrepareMigration {
            vm: vm.name.clone(),
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
        };
        let (token, copies) = match self.node.request(dest, request).await? {
            ControlResponse::MigrationAccepted { token, disk_copies } => {
                (token, super::diskmig::pair_copies(&offers, disk_copies)?)
            }
            ControlResponse::Refused { reason } => {
                bail!("{dest_name} refuses {}: {reason}", vm.name)
            }
            other => bail!("{dest_name} answered unexpectedly: {other:?}"),
        };
        phases.mark("accepted");
        self.operations.set_phase(op, OperationPhase::Transferring);
        if let Some((tx, to, operation)) = accepted {
            let _ = tx.send(Started { to, operation });
        }
        let socket = self
            .data_dir()
            .run_dir()
            .join(format!("migrate-{token:016x}.sock"));
        let bridge = TunnelBridge::bind(
            self,
            socket,
            dest,
            TUNNEL_PROTOCOL,
            token.to_be_bytes().to_vec(),
            phases.clone(),
        )?;
        let dest_uri = format!("qemu+unix:///system?socket={}", bridge.path.display());
        let watcher = tokio::spawn(watch_progress(self.clone(), vm.name.clone(), op));
        let probe = self.probe_migrating_service(&vm.name, dest).await;
        phases.mark("libvirt called");
        let moved = self
            .migrate_over_channels(&vm.name, dest_uri, (dest, token), &copies, limits, phases)
            .await;
        let (outcome, channel_error, disk_bytes) = (moved.outcome, moved.broken, moved.disk_bytes);
        let switched = Instant::now();
        phases.mark_at("libvirt returned", switched);
        if outcome.is_ok() {
            // The VM runs at the destination now: held consumer streams go there.
            self.handovers.end(&vm.name, true);
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

    /// Destination side: decides whether to accept a VM, before anything moves.
    pub(crate) async fn prepare_incoming(
        self: &Arc<Self>,
        from: PeerId,
        vm: VmRequirements,
        disks: Vec<crate::node::protocol::DiskOffer>,
    ) -> ControlResponse {
        let from_name = self.peer_label(from).await;
        let refuse = |reason: String| {
            tracing::warn!("refusing VM '{}' from {from_name}: {reason}", vm.name);
            ControlResponse::Refused { reason }
        };
        if !self.access.allows(&from, Role::Control) {
            return refuse(format!(
                "peer {from} is not allowed to control this host (its operator can run `peervisor peers allow {from} --role control`)"
            ));
        }
        if !self.config.accept_migrations {
            return refuse("this peer does not accept incoming migrations".into());
        }
        if vm.boot_files.len() > MAX_BOOT_FILES
            || vm
                .boot_files
                .iter()
                .any(|f| f.as_os_str().len() > MAX_PATH_LEN)
        {
            return refuse("malformed request: too many or too long boot file paths".into());
        }
        self.settle_expired_grants();
        let reservation = match self.check_incoming(&vm).await {
            Ok(reservation) => reservation,
            Err(refusal) => return refuse(refusal.to_string()),
        };
        if let Err(e) = std::fs::create_dir_all(crate::paths::console_log_dir()) {
            return refuse(format!("cannot create the console log directory: {e}"));
        }
        let disk_plan =
            match super::diskmig::plan_disks(&crate::paths::disk_dir(), &vm.name, &vm.uuid, &disks)
            {
                Ok(plan) => plan,
                Err(reason) => return refuse(reason),
            };
        let limit = self.capacity.max_migrations;
        let operation = match self.operations.begin_limited(
            OperationKind::MigrateIn,
            &vm.name,
            &from_name,
            limit,
        ) {
            Ok(id) => id,
            Err(Busy::Limit { running }) => {
                return refuse(Refusal::Busy { running, limit }.to_string());
            }
            Err(Busy::Vm { .. }) => {
                return refuse(format!("VM '{}' is being migrated here already", vm.name));
            }
        };
        let made_disks = match disk_plan {
            super::diskmig::DiskPlan::Shared => Vec::new(),
            super::diskmig::DiskPlan::Copy(files) => {
                if let Err(reason) = super::diskmig::make_disks(&files).await {
                    self.operations.finish(operation, Some(reason.clone()));
                    return refuse(reason);
                }
                files.into_iter().map(|(path, _)| path).collect()
            }
        };
        self.operations
            .set_phase(operation, OperationPhase::Transferring);
        let token: u64 = rand::random();
        self.grants.insert(
            token,
            Grant {
                peer: from,
                vm: vm.name.clone(),
                operation,
                expires: Instant::now() + GRANT_TTL,
                _reservation: Some(reservation),
                streams: 0,
                opened: false,
                made_disks: made_disks.clone(),
            },
        );
        self.note_made_disks(&vm.name, &made_disks);
        tokio::spawn(self.clone().expire_unused_grant(token));
        self.handovers.arriving(&vm.name);
        tracing::info!("accepted migration of VM '{}' from {from_name}", vm.name);
        ControlResponse::MigrationAccepted {
            token,
            disk_copies: made_disks
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
        }
    }

    /// A peer's nickname if known, else its id.
    async fn peer_label(&self, id: PeerId) -> String {
        let id_text = id.to_string();
        self.node
            .status()
            .await
            .ok()
            .and_then(|net| net.peers.into_iter().find(|p| p.peer_id == id_text))
            .map(|p| p.display_name())
            .unwrap_or(id_text)
    }

    /// Destination side: an accepted migration whose source opened no tunnel in
    /// time frees its reservation and its parallel slot.
    async fn expire_unused_grant(self: Arc<Self>, token: u64) {
        tokio::time::sleep(UNUSED_GRANT_TTL).await;
        if let Some(grant) = self.grants.take_unused(token) {
            self.discard_disks(&grant.vm, &grant.made_disks).await;
            self.operations.finish(
                grant.operation,
                Some(format!(
                    "the source opened no migration tunnel within {} s",
                    UNUSED_GRANT_TTL.as_secs()
                )),
            );
            tracing::warn!(
                "incoming migration of VM '{}': the source never opened the tunnel",
                grant.vm
            );
        }
    }

    /// Destination side: incoming migrations whose grant ran out without word
    /// from the source are over.
    fn settle_expired_grants(&self) {
        for grant in self.grants.take_expired() {
            self.discard_disks_later(&grant.vm, &grant.made_disks);
            self.operations.finish(
                grant.operation,
                Some("no word from the source before the authorization expired".into()),
            );
            tracing::warn!("incoming migration of VM '{}' expired", grant.vm);
        }
    }

    /// Destination side: the last tunnel stream of a migration closed. If the
    /// source does not report the end soon (it died, or the overlay was cut),
    /// find out from libvirt whether the VM arrived, and close the books.
    async fn settle_after_tunnel(self: Arc<Self>, from: PeerId, token: u64) {
        tokio::time::sleep(SETTLE_AFTER_TUNNEL).await;
        if !self.grants.contains(token) {
            return; // the source reported the end
        }
        let Some(grant) = self.grants.take(token, from) else {
            return;
        };
        let arrived = self
            .host
            .vm(&grant.vm)
            .await
            .is_ok_and(|v| v.state == VmState::Running);
        if arrived {
            self.record_arrival(&grant, from).await;
        } else {
            self.discard_disks(&grant.vm, &grant.made_disks).await;
            self.operations.finish(
                grant.operation,
                Some("the migration tunnel closed before the VM arrived".into()),
            );
            tracing::warn!(
                "incoming migration of VM '{}' from {from}: the tunnel closed before it arrived",
                grant.vm
            );
        }
    }

    /// Destination side: the VM is here; records what libvirt measured.
    async fn record_arrival(&self, grant: &Grant, from: PeerId) -> JobSample {
        // The source's libvirt sent its measurements along with the VM.
        let completed = match self.host.completed_job(&grant.vm).await {
            Ok(sample) => sample.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("no completed job stats for VM '{}': {e:#}", grant.vm);
                JobSample::default()
            }
        };
        self.operations.set_progress(grant.operation, &completed);
        self.operations.finish(grant.operation, None);
        self.forget_made_disks(&grant.vm);
        tracing::info!(
            "VM '{}' arrived from {from} (libvirt: job {:?} ms, downtime {:?} ms, {:?} bytes)",
            grant.vm,
            completed.elapsed_ms,
            completed.downtime_ms,
            completed.processed_bytes
        );
        completed
    }

    /// Destination side: the source says the migration is over.
    pub(crate) async fn incoming_ended(
        &self,
        from: PeerId,
        token: u64,
        ok: bool,
        error: Option<String>,
    ) -> ControlResponse {
        let Some(grant) = self.grants.take(token, from) else {
            return ControlResponse::Refused {
                reason: "unknown migration token".into(),
            };
        };
        // The VM arrived or did not: status shows it before the source hears back.
        self.host.refresh().await;
        if ok {
            let completed = self.record_arrival(&grant, from).await;
            // Consumers learn the new provider now, not at the next periodic announcement.
            self.services.republish.notify_one();
            let running = self
                .host
                .vm(&grant.vm)
                .await
                .is_ok_and(|v| v.state == VmState::Running);
            return ControlResponse::MigrationStats {
                downtime_ms: completed.downtime_ms,
                transferred_bytes: completed.processed_bytes,
                running,
            };
        }
        self.discard_disks(&grant.vm, &grant.made_disks).await;
        let why = match error {
            Some(e) => format!(
                "the source reported: {}",
                e.chars().take(500).collect::<String>()
            ),
            None => "the source reported failure".into(),
        };
        tracing::warn!("incoming migration of VM '{}' failed: {why}", grant.vm);
        self.operations.finish(grant.operation, Some(why));
        ControlResponse::Ack
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
async fn watch_progress(peer: Arc<Peer>, vm: String, op: u64) {
    loop {
        tokio::time::sleep(PROGRESS_EVERY).await;
        match peer.host.job_progress(&vm).await {
            Ok(Some(sample)) => peer.operations.set_progress(op, &sample),
            Ok(None) => {}
            Err(e) => tracing::debug!("migration progress of VM '{vm}': {e:#}"),
        }
    }
}

/// Source side: a unix socket for the local libvirtd whose every connection is
/// carried to the destination in a libp2p stream. Removed when dropped.
pub(crate) struct TunnelBridge {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
    /// The first error a tunnel stream ended with (the overlay broke).
    broken: Arc<Mutex<Option<String>>>,
    /// Bytes carried towards the destination so far.
    sent: Arc<std::sync::atomic::AtomicU64>,
}

impl TunnelBridge {
    /// Each connection to `path` becomes a `protocol` stream to `dest` that starts
    /// with `header` (the token; a data channel adds its tag).
    pub(crate) fn bind(
        peer: &Peer,
        path: PathBuf,
        dest: PeerId,
        protocol: libp2p::StreamProtocol,
        header: Vec<u8>,
        phases: Phases,
    ) -> Result<Self> {
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        let streams = peer.node.streams();
        let broken = Arc::new(Mutex::new(None));
        let first_error = broken.clone();
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = sent.clone();
        let task = tokio::spawn(async move {
            while let Ok((local, _)) = listener.accept().await {
                let mut streams = streams.clone();
                let first_error = first_error.clone();
                let phases = phases.clone();
                let (protocol, header) = (protocol.clone(), header.clone());
                let counter = counter.clone();
                tokio::spawn(async move {
                    let carried = carry(
                        &mut streams,
                        local,
                        dest,
                        (protocol, &header),
                        counter,
                        &phases,
                    )
                    .await;
                    phases.mark("tunnel stream closed");
                    let broke = match carried {
                        Ok(None) => return,
                        Ok(Some(why)) => why,
                        Err(e) => format!("{e:#}"),
                    };
                    tracing::warn!("migration tunnel: {broke}");
                    let mut first = first_error.lock().unwrap_or_else(|e| e.into_inner());
                    first.get_or_insert(broke);
                });
            }
        });
        Ok(TunnelBridge {
            path,
            task,
            broken,
            sent,
        })
    }

    /// Bytes carried towards the destination so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn first_error(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for TunnelBridge {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Carries one libvirt connection to the destination. The local libvirt ends a
/// connection it is done with; if the overlay side ends first, the tunnel broke
/// under a running transfer (destination gone, overlay cut): returns why.
async fn carry(
    streams: &mut crate::node::StreamControl,
    local: UnixStream,
    dest: PeerId,
    (protocol, header): (libp2p::StreamProtocol, &[u8]),
    sent: Arc<std::sync::atomic::AtomicU64>,
    phases: &Phases,
) -> Result<Option<String>> {
    let stream = streams
        .open_stream(dest, protocol)
        .await
        .map_err(|e| anyhow!("opening a tunnel stream: {e}"))?;
    phases.mark_once("tunnel open");
    let mut remote = stream.compat();
    remote.write_all(header).await?;
    let (local_read, mut local_write) = local.into_split();
    let (remote_read, remote_write) = tokio::io::split(remote);
    let mut remote_write = super::diskmig::Counted {
        inner: remote_write,
        count: sent,
    };
    // Large reads make large noise/yamux frames (the memory stream is most of it).
    let mut local_read = tokio::io::BufReader::with_capacity(TUNNEL_BUFFER, local_read);
    let mut remote_read = tokio::io::BufReader::with_capacity(TUNNEL_BUFFER, remote_read);
    let up = async {
        let copied = tokio::io::copy_buf(&mut local_read, &mut remote_write).await;
        let _ = remote_write.shutdown().await;
        copied
    };
    let down = async {
        let copied = tokio::io::copy_buf(&mut remote_read, &mut local_write).await;
        let _ = local_write.shutdown().await;
        copied
    };
    tokio::pin!(up, down);
    tokio::select! {
        sent = &mut up => {
            // libvirt hung up first: the far end follows once it has seen that.
            let received = down.await;
            tracing::debug!(
                "migration tunnel stream done: {:?} bytes sent, {:?} received",
                sent.ok(),
                received.ok()
            );
            Ok(None)
        }
        far_end = &mut down => Ok(Some(match far_end {
            Ok(_) => "the stream was closed from the far end".to_string(),
            Err(e) => e.to_string(),
        })),
    }
}

/// Destination side: accepts tunnel streams and connects each authorized one to
/// the local libvirt socket.
pub async fn accept_tunnels(peer: Arc<Peer>) {
    tokio::spawn(accept_streams(peer.clone(), CHANNEL_PROTOCOL));
    accept_streams(peer, TUNNEL_PROTOCOL).await
}

/// Destination side: accepts `protocol` streams: libvirt tunnels, or a migration's
/// data channels (diskmig.rs).
async fn accept_streams(peer: Arc<Peer>, protocol: libp2p::StreamProtocol) {
    let channel = protocol == CHANNEL_PROTOCOL;
    let mut incoming = match peer.node.streams().accept(protocol) {
        Ok(incoming) => incoming,
        Err(e) => {
            tracing::error!("cannot accept migration tunnels: {e}");
            return;
        }
    };
    while let Some((from, stream)) = incoming.next().await {
        let peer = peer.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_tunnel(peer.clone(), from, stream, channel).await
                && peer.limits.log_refusal(&from)
            {
                tracing::warn!("migration tunnel from {from}: {e:#}");
            }
        });
    }
}

async fn serve_tunnel(
    peer: Arc<Peer>,
    from: PeerId,
    stream: crate::node::Stream,
    channel: bool,
) -> Result<()> {
    if let Err(retry) = peer.limits.streams.check(&from) {
        let per_s = peer.limits.streams.per_s();
        bail!(
            "dropped: {}",
            crate::peer::limits::rate_limited("streams", per_s, retry)
        );
    }
    let mut remote = stream.compat();
    let mut token = [0u8; 8];
    tokio::time::timeout(TOKEN_TIMEOUT, remote.read_exact(&mut token))
        .await
        .map_err(|_| anyhow!("no token within {TOKEN_TIMEOUT:?}"))??;
    let token = u64::from_be_bytes(token);
    let target = if channel {
        let mut tag = [0u8; 1];
        tokio::time::timeout(TOKEN_TIMEOUT, remote.read_exact(&mut tag))
            .await
            .map_err(|_| anyhow!("no channel tag within {TOKEN_TIMEOUT:?}"))??;
        peer.channel_socket(token, tag[0])?
    } else {
        peer.libvirt_socket.clone()
    };
    if !peer.grants.stream_opened(token, from) {
        bail!("stream with an unknown or expired token: dropped");
    }
    tracing::debug!("migration tunnel stream from {from} opened");
    let carried = async {
        let mut local = UnixStream::connect(&target)
            .await
            .with_context(|| format!("connecting to {}", target.display()))?;
        let (received, sent) = crate::services::proxy::pipe(&mut remote, &mut local).await?;
        tracing::debug!(
            "migration tunnel stream from {from} closed: {received} bytes received, {sent} sent"
        );
        anyhow::Ok(())
    }
    .await;
    if peer.grants.stream_closed(token) {
        tokio::spawn(peer.clone().settle_after_tunnel(from, token));
    }
    carried
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_bound_to_their_peer_and_expire() {
        let grants = TunnelGrants::default();
        let a = PeerId::random();
        let b = PeerId::random();
        grants.insert(
            7,
            Grant {
                peer: a,
                vm: "web-1".into(),
                operation: 1,
                expires: Instant::now() + Duration::from_secs(60),
                _reservation: None,
                streams: 0,
                opened: false,
                made_disks: Vec::new(),
            },
        );
        assert!(grants.allows(7, a));
        assert!(!grants.allows(7, b), "another peer cannot use the token");
        assert!(!grants.allows(8, a));
        assert!(grants.take(7, b).is_none());
        assert!(grants.take(7, a).is_some());
        assert!(!grants.allows(7, a), "a token is good for one migration");
        grants.insert(
            9,
            Grant {
                peer: a,
                vm: "x".into(),
                operation: 2,
                expires: Instant::now() - Duration::from_secs(1),
                _reservation: None,
                streams: 0,
                opened: false,
                made_disks: Vec::new(),
            },
        );
        assert!(!grants.allows(9, a), "expired");
        assert!(!grants.stream_opened(9, a), "expired");
        assert_eq!(grants.take_expired().len(), 1);
        assert!(!grants.contains(9));

        grants.insert(
            10,
            Grant {
                peer: a,
                vm: "y".into(),
                operation: 3,
                expires: Instant::now() + Duration::from_secs(60),
                _reservation: None,
                streams: 0,
                opened: false,
                made_disks: Vec::new(),
            },
        );
        assert!(!grants.stream_opened(10, b), "bound to its peer");
        assert!(grants.stream_opened(10, a) && grants.stream_opened(10, a));
        assert!(!grants.stream_closed(10), "one stream still open");
        assert!(grants.stream_closed(10), "the last one closed");
        assert!(grants.take_expired().is_empty());
        assert!(grants.take_unused(10).is_none(), "it was used");
        grants.insert(
            11,
            Grant {
                peer: a,
                vm: "z".into(),
                operation: 4,
                expires: Instant::now() + Duration::from_secs(60),
                _reservation: None,
                streams: 0,
                opened: false,
                made_disks: Vec::new(),
            },
        );
        assert!(grants.take_unused(11).is_some());
    }
}
