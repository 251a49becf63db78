//! Live migration over the overlay.
//!
//! The destination authorizes the request and hands out a token; the source binds a
//! one-shot unix socket bridged to libp2p streams that start with that token, and
//! asks its own libvirt to migrate peer-to-peer (tunnelled) to a URI pointing at the
//! socket. The destination connects each authorized stream to its local libvirt
//! socket. No libvirt or QEMU port is opened between hosts: the memory stream rides
//! the libvirt RPC connection, which rides the encrypted overlay.

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

use super::access::Role;
use super::peers::{peer_id_of, resolve};
use super::{Peer, validate_vm_name};
use crate::control::MigrationReport;
use crate::hypervisor::job::JobSample;
use crate::model::{OperationKind, OperationPhase, VmState};
use crate::node::protocol::{ControlRequest, ControlResponse, TUNNEL_PROTOCOL};

/// How often the source samples libvirt's job stats while a migration runs.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Operator limits for one migration, handed to libvirt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub max_downtime_ms: Option<u64>,
    pub bandwidth_mib_s: Option<u64>,
}

/// What the destination reports once the VM has arrived.
#[derive(Debug, Clone, Copy, Default)]
struct Arrival {
    downtime_ms: Option<u64>,
    transferred_bytes: Option<u64>,
}

/// How long an authorization to open tunnel streams stays valid.
const GRANT_TTL: Duration = Duration::from_secs(600);
/// A tunnel stream must present its token this fast.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

struct Grant {
    peer: PeerId,
    vm: String,
    operation: u64,
    expires: Instant,
}

/// Tunnel authorizations this peer (as a destination) has handed out.
#[derive(Default)]
pub struct TunnelGrants {
    grants: Mutex<HashMap<u64, Grant>>,
}

impl TunnelGrants {
    fn insert(&self, token: u64, grant: Grant) {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        grants.retain(|_, g| g.expires > now);
        grants.insert(token, grant);
    }

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
    /// Source side: live-migrates `vm` to the peer named `to`.
    pub async fn migrate(
        self: &Arc<Self>,
        vm: &str,
        to: &str,
        limits: Limits,
    ) -> Result<MigrationReport> {
        if limits.max_downtime_ms == Some(0) || limits.bandwidth_mib_s == Some(0) {
            bail!("--max-downtime and --bandwidth must be greater than 0");
        }
        let local = self.host.vm(vm).await?;
        if local.state != VmState::Running {
            bail!(
                "VM '{vm}' is {}: only a running VM can live-migrate (start it first)",
                local.state.as_str()
            );
        }
        let net = self.node.status().await?;
        let dest = resolve(to, &net.peers)?;
        let dest_name = dest.display_name();
        if !dest.connected {
            bail!("peer {dest_name} is known but not connected: cannot migrate to it now");
        }
        let dest_id = peer_id_of(&dest)?;
        if self.operations.is_active(vm) {
            bail!("VM '{vm}' is already being migrated");
        }
        let op = self
            .operations
            .begin(OperationKind::MigrateOut, vm, &dest_name);
        tracing::info!("migrating VM '{vm}' to {dest_name}");
        let started = Instant::now();
        let result = self
            .migrate_to(&local, dest_id, &dest_name, op, limits)
            .await;
        match &result {
            Ok(arrival) => {
                let sample = JobSample {
                    downtime_ms: arrival.downtime_ms,
                    processed_bytes: arrival.transferred_bytes,
                    remaining_bytes: Some(0),
                    total_bytes: arrival.transferred_bytes,
                    ..JobSample::default()
                };
                self.operations.set_progress(op, &sample);
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
            seconds: started.elapsed().as_secs_f64(),
            downtime_ms: arrival.downtime_ms,
            transferred_bytes: arrival.transferred_bytes,
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

    async fn migrate_to(
        self: &Arc<Self>,
        vm: &crate::model::VmView,
        dest: PeerId,
        dest_name: &str,
        op: u64,
        limits: Limits,
    ) -> Result<Arrival> {
        let request = ControlRequest::PrepareMigration {
            vm: vm.name.clone(),
            uuid: vm.uuid.clone(),
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
        };
        let token = match self.node.request(dest, request).await? {
            ControlResponse::MigrationAccepted { token } => token,
            ControlResponse::Refused { reason } => bail!("{dest_name} refused: {reason}"),
            other => bail!("{dest_name} answered unexpectedly: {other:?}"),
        };
        self.operations.set_phase(op, OperationPhase::Transferring);
        let socket = self
            .data_dir()
            .run_dir()
            .join(format!("migrate-{token:016x}.sock"));
        let bridge = TunnelBridge::bind(self, socket, dest, token)?;
        let dest_uri = format!("qemu+unix:///system?socket={}", bridge.path.display());
        let watcher = tokio::spawn(watch_progress(self.clone(), vm.name.clone(), op));
        let outcome = self
            .host
            .migrate_p2p_tunnelled(
                &vm.name,
                &dest_uri,
                limits.max_downtime_ms,
                limits.bandwidth_mib_s,
            )
            .await;
        watcher.abort();
        drop(bridge);
        let ended = ControlRequest::MigrationEnded {
            token,
            ok: outcome.is_ok(),
        };
        let mut arrival = Arrival::default();
        match self.node.request(dest, ended).await {
            Ok(ControlResponse::MigrationStats {
                downtime_ms,
                transferred_bytes,
            }) => {
                arrival = Arrival {
                    downtime_ms,
                    transferred_bytes,
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("telling {dest_name} how the migration ended: {e:#}"),
        }
        outcome?;
        // libvirt undefines the source on success; make sure nothing is left here.
        if let Ok(still) = self.host.vm(&vm.name).await {
            bail!(
                "libvirt reported success but VM '{}' is still here ({})",
                vm.name,
                still.state.as_str()
            );
        }
        Ok(arrival)
    }

    /// Destination side: decides whether to accept a VM, before anything moves.
    pub(super) async fn prepare_incoming(
        &self,
        from: PeerId,
        vm: &str,
        uuid: &str,
        vcpus: u32,
        memory_mib: u64,
    ) -> ControlResponse {
        let refuse = |reason: String| {
            tracing::warn!("refused migration of VM '{vm}' from {from}: {reason}");
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
        if let Err(e) = validate_vm_name(vm) {
            return refuse(format!("{e}"));
        }
        if vcpus == 0 || memory_mib == 0 {
            return refuse("VM has no vCPU or no memory".into());
        }
        match self.host.list().await {
            Ok(vms) => {
                if vms.iter().any(|v| v.name == vm) {
                    return refuse(format!("a VM named '{vm}' exists already here"));
                }
                if vms.iter().any(|v| v.uuid == uuid) {
                    return refuse(format!("a VM with UUID {uuid} exists already here"));
                }
            }
            Err(e) => return refuse(format!("hypervisor unavailable: {e:#}")),
        }
        if let Err(e) = std::fs::create_dir_all(crate::paths::console_log_dir()) {
            return refuse(format!("cannot create the console log directory: {e}"));
        }
        let token: u64 = rand::random();
        let operation = self
            .operations
            .begin(OperationKind::MigrateIn, vm, &from.to_string());
        self.operations
            .set_phase(operation, OperationPhase::Transferring);
        self.grants.insert(
            token,
            Grant {
                peer: from,
                vm: vm.to_string(),
                operation,
                expires: Instant::now() + GRANT_TTL,
            },
        );
        tracing::info!("accepted migration of VM '{vm}' from {from}");
        ControlResponse::MigrationAccepted { token }
    }

    /// Destination side: the source says the migration is over.
    pub(super) async fn incoming_ended(
        &self,
        from: PeerId,
        token: u64,
        ok: bool,
    ) -> ControlResponse {
        let Some(grant) = self.grants.take(token, from) else {
            return ControlResponse::Refused {
                reason: "unknown migration token".into(),
            };
        };
        if ok {
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
            tracing::info!(
                "VM '{}' arrived from {from} (downtime {:?} ms, {:?} bytes)",
                grant.vm,
                completed.downtime_ms,
                completed.processed_bytes
            );
            return ControlResponse::MigrationStats {
                downtime_ms: completed.downtime_ms,
                transferred_bytes: completed.processed_bytes,
            };
        } else {
            self.operations
                .finish(grant.operation, Some("the source reported failure".into()));
            tracing::warn!("incoming migration of VM '{}' failed", grant.vm);
        }
        ControlResponse::Ack
    }
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
struct TunnelBridge {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl TunnelBridge {
    fn bind(peer: &Peer, path: PathBuf, dest: PeerId, token: u64) -> Result<Self> {
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        let streams = peer.node.streams();
        let task = tokio::spawn(async move {
            while let Ok((local, _)) = listener.accept().await {
                let mut streams = streams.clone();
                tokio::spawn(async move {
                    if let Err(e) = carry(&mut streams, local, dest, token).await {
                        tracing::warn!("migration tunnel: {e:#}");
                    }
                });
            }
        });
        Ok(TunnelBridge { path, task })
    }
}

impl Drop for TunnelBridge {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn carry(
    streams: &mut crate::node::StreamControl,
    mut local: UnixStream,
    dest: PeerId,
    token: u64,
) -> Result<()> {
    let stream = streams
        .open_stream(dest, TUNNEL_PROTOCOL)
        .await
        .map_err(|e| anyhow!("opening a tunnel stream: {e}"))?;
    let mut remote = stream.compat();
    remote.write_all(&token.to_be_bytes()).await?;
    tokio::io::copy_bidirectional(&mut local, &mut remote).await?;
    Ok(())
}

/// Destination side: accepts tunnel streams and connects each authorized one to
/// the local libvirt socket.
pub async fn accept_tunnels(peer: Arc<Peer>) {
    let mut incoming = match peer.node.streams().accept(TUNNEL_PROTOCOL) {
        Ok(incoming) => incoming,
        Err(e) => {
            tracing::error!("cannot accept migration tunnels: {e}");
            return;
        }
    };
    while let Some((from, stream)) = incoming.next().await {
        let peer = peer.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_tunnel(&peer, from, stream).await {
                tracing::warn!("migration tunnel from {from}: {e:#}");
            }
        });
    }
}

async fn serve_tunnel(peer: &Peer, from: PeerId, stream: libp2p::Stream) -> Result<()> {
    let mut remote = stream.compat();
    let mut token = [0u8; 8];
    tokio::time::timeout(TOKEN_TIMEOUT, remote.read_exact(&mut token))
        .await
        .map_err(|_| anyhow!("no token within {TOKEN_TIMEOUT:?}"))??;
    let token = u64::from_be_bytes(token);
    if !peer.grants.allows(token, from) {
        bail!("stream with an unknown or expired token: dropped");
    }
    let mut local = UnixStream::connect(&peer.libvirt_socket)
        .await
        .with_context(|| format!("connecting to {}", peer.libvirt_socket.display()))?;
    tokio::io::copy_bidirectional(&mut remote, &mut local).await?;
    Ok(())
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
            },
        );
        assert!(!grants.allows(9, a), "expired");
    }
}
