//! Replication: a copy of a VM started on another peer under a new name, UUID,
//! MAC and address, providing the same services.
//!
//! The source takes a point-in-time image of the VM's data disk (frozen under an
//! overlay while the VM runs on, see replica/point_in_time.rs), plans it as
//! checksummed chunks of its data extents, and offers the definition and the plan on a
//! `/peervisor/replicate/1` stream. The destination checks the request (role
//! `control`, name free, image present, capacity), hashes what it already holds
//! from an earlier, cut attempt, and asks only for the chunks it lacks; then it
//! defines and starts the replica, which its publisher announces as one more
//! provider of the same services. A guest without a data disk carries no state
//! (it boots from the image's initramfs): only its definition crosses.
//!
//! Here: `Replications` and the source side; the destination's in `incoming.rs`.

mod incoming;

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use libp2p::PeerId;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::capacity::Capacity;
use super::operations::{Busy, Operations};
use super::provision::AutoReplicas;
use crate::admission::access::AccessList;
use crate::admission::limits::PeerLimits;
use crate::api::{DiskTransfer, ReplicationReport, Reply};
use crate::hypervisor::Host;
use crate::hypervisor::job::JobSample;
use crate::migrate::replica::point_in_time::{DiskImage, ImageReport, Method};
use crate::migrate::replica::sparse;
use crate::migrate::replica::transfer::{Sent as ChunksSent, send_chunks};
use crate::migrate::replica::wire::{self, Answer, Offer, Outcome};
use crate::model::{OperationKind, OperationPhase, PeerView, ServiceSpec, VmState};
use crate::names::{PeerRef, VmName, peer_id_of};
use crate::node::Client;
use crate::node::protocol::{REPLICA_PROTOCOL, peer_text};
use crate::paths::DataDir;
use crate::vms::Vms;
use tokio::io::AsyncWriteExt;

/// The destination must answer an offer this fast (it hashes its partial file).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// Defining and starting the replica.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// Replication, both ends: what it holds to send a copy of a VM (node,
/// hypervisor) and to take one in (who may push VMs here, whether this peer
/// accepts them, what it lends, the images it boots from, the VMs it makes),
/// and the operations it records.
pub struct Replications {
    node: Client,
    host: Host,
    nick: String,
    image_dir: PathBuf,
    /// Whether other peers may push VMs into this host.
    accept: bool,
    access: Arc<AccessList>,
    /// Replication streams count against the sender's stream limits.
    limits: Arc<PeerLimits>,
    capacity: Arc<Capacity>,
    operations: Arc<Operations>,
    vms: Arc<Vms>,
    /// Replicas another peer's provision policy placed here.
    auto: AutoReplicas,
}

impl Replications {
    #[allow(clippy::too_many_arguments)] // the handles it holds, one each
    pub fn new(
        node: Client,
        host: Host,
        nick: String,
        data_dir: &DataDir,
        image_dir: PathBuf,
        accept: bool,
        access: Arc<AccessList>,
        limits: Arc<PeerLimits>,
        capacity: Arc<Capacity>,
        operations: Arc<Operations>,
        vms: Arc<Vms>,
    ) -> Replications {
        Replications {
            node,
            host,
            nick,
            image_dir,
            accept,
            access,
            limits,
            capacity,
            operations,
            vms,
            auto: AutoReplicas::in_dir(data_dir),
        }
    }

    /// Serves other peers' replication streams in the background.
    pub fn start(self: &Arc<Self>) {
        tokio::spawn(incoming::accept_replicas(self.clone()));
    }

    /// Source side: replicates `vm` to the peer named `to` as `name` (default
    /// `VM-rN`, the first such name no known peer uses).
    pub async fn replicate(
        self: &Arc<Self>,
        vm: &VmName,
        to: &PeerRef,
        name: Option<VmName>,
    ) -> Result<ReplicationReport> {
        self.replicate_as(vm, to, name, false, None).await
    }

    /// The control request: with `detach`, answers once the operation has
    /// begun (the source's checks passed) and lets the copy run on, its
    /// outcome kept with the operation; otherwise answers at the end.
    pub async fn replicate_request(
        self: &Arc<Self>,
        vm: VmName,
        to: PeerRef,
        name: Option<VmName>,
        detach: bool,
    ) -> Result<Reply> {
        if !detach {
            let report = self.replicate(&vm, &to, name).await?;
            return Ok(Reply::Replicated(Box::new(report)));
        }
        let (began, on_begin) = tokio::sync::oneshot::channel();
        let this = self.clone();
        let source = vm.clone();
        let task = tokio::spawn(async move {
            this.replicate_as(&source, &to, name, false, Some(began))
                .await
        });
        match on_begin.await {
            Ok((to, operation)) => Ok(Reply::ReplicationStarted { vm, to, operation }),
            // Ended before it began: refused, or bad input.
            Err(_) => match task.await {
                Ok(result) => result.map(|r| Reply::Replicated(Box::new(r))),
                Err(e) => Err(anyhow!("replication task failed: {e}")),
            },
        }
    }

    /// `auto`: asked by the provision policy; the destination remembers it and
    /// its policy may remove the replica when idle. `began` hears the
    /// destination's name and the operation's id once it is recorded.
    pub(super) async fn replicate_as(
        self: &Arc<Self>,
        vm: &VmName,
        to: &PeerRef,
        name: Option<VmName>,
        auto: bool,
        began: Option<tokio::sync::oneshot::Sender<(String, u64)>>,
    ) -> Result<ReplicationReport> {
        let local = self.host.vm(vm).await?;
        let Some(meta) = self.host.metadata(vm).await? else {
            bail!("VM '{vm}' was not created by peervisor: it has no manifest to replicate");
        };
        let net = self.node.status().await?;
        let dest = to.resolve(&net.peers)?;
        let dest_name = dest.display_name();
        if !dest.connected {
            bail!("peer {dest_name} is known but not connected: cannot replicate to it now");
        }
        let dest_id = peer_id_of(&dest)?;
        let name = match name {
            Some(n) => {
                n.validate()?;
                n
            }
            None => {
                let local_names: Vec<VmName> = self
                    .host
                    .list()
                    .await?
                    .into_iter()
                    .map(|v| v.name)
                    .collect();
                default_replica_name(vm, &local_names, &net.peers)?
            }
        };
        let limit = self.capacity.max_migrations();
        let op = self
            .operations
            .begin_limited(OperationKind::ReplicateOut, vm, &dest_name, limit)
            .map_err(|busy| match busy {
                Busy::Vm { peer, .. } => anyhow!(
                    "VM '{vm}' is busy: a migration or replication with {peer} is under way"
                ),
                Busy::Limit { running } => anyhow!(
                    "this peer is already sending {running} replica(s), its limit of {limit} (--max-migrations)"
                ),
            })?;
        tracing::info!("replicating VM '{vm}' to {dest_name} as '{name}'");
        if let Some(began) = began {
            let _ = began.send((dest_name.clone(), op));
        }
        let started = Instant::now();
        let services = if local.services.is_empty() {
            // The guest's default HTTP service is named after the VM: keep that name.
            vec![ServiceSpec {
                name: vm.as_str().into(),
                kind: "http".into(),
                port: 80,
                tags: Vec::new(),
                ..ServiceSpec::default()
            }]
        } else {
            local.services.clone()
        };
        let offer = Offer {
            name: name.to_string(),
            source_vm: vm.to_string(),
            source_uuid: local.uuid.clone(),
            vcpus: local.vcpus,
            memory_mib: local.memory_mib,
            image: meta
                .image
                .unwrap_or_else(|| crate::image::DEFAULT_IMAGE.to_string()),
            services,
            disk: None,
            auto,
        };
        let disk = meta.disks.first().map(PathBuf::from);
        let result = self
            .replicate_to(offer, local.state, disk, dest_id, &dest_name, op)
            .await;
        let sent = match result {
            Ok(sent) => sent,
            Err(e) => {
                self.operations.finish(op, Some(format!("{e:#}")));
                tracing::error!("replication of VM '{vm}' to {dest_name} failed: {e:#}");
                return Err(e);
            }
        };
        let Sent {
            ip,
            image,
            transfer: disk,
        } = sent;
        let image = image.unwrap_or_default();
        let report = ReplicationReport {
            vm: vm.clone(),
            replica: name.clone(),
            from: self.nick.clone(),
            to: dest_name.clone(),
            to_peer_id: dest_id.to_string(),
            replica_ip: ip,
            seconds: started.elapsed().as_secs_f64(),
            paused_ms: image.paused_ms,
            consistent_copy: (!image.method.is_empty()).then(|| image.method.to_string()),
            overlay_ms: image.overlay_ms,
            commit_ms: image.commit_ms,
            disk,
        };
        self.operations
            .succeed(op, Reply::Replicated(Box::new(report.clone())));
        tracing::info!(
            "VM '{vm}' replicated to {dest_name} as '{name}' in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(report)
    }

    async fn replicate_to(
        &self,
        offer: Offer,
        state: VmState,
        disk: Option<PathBuf>,
        dest: PeerId,
        dest_name: &str,
        op: u64,
    ) -> Result<Sent> {
        let image = match &disk {
            Some(disk) => Some(
                DiskImage::take(&self.host, &offer.source_vm, state, disk, Method::Overlay).await?,
            ),
            None => None,
        };
        let path = image.as_ref().map(|i| i.path().to_path_buf());
        let vm = offer.source_vm.clone();
        let sent = self.send_replica(offer, path, dest, dest_name, op).await;
        // However the transfer ended, the VM runs on its own disk file again.
        let released = match image {
            Some(image) => Some(image.release().await),
            None => None,
        };
        let (ip, transfer) = sent?;
        let image = match released {
            Some(Ok(report)) => Some(report),
            Some(Err(e)) => {
                return Err(e.context(format!(
                    "the replica runs on {dest_name} ({ip}), but VM '{vm}' could not be moved back onto its disk file"
                )));
            }
            None => None,
        };
        Ok(Sent {
            ip,
            image,
            transfer,
        })
    }

    /// Plans `image` (the disk file to read), offers the replica and sends what
    /// the destination lacks; the replica's address and the disk's figures.
    async fn send_replica(
        &self,
        mut offer: Offer,
        image: Option<PathBuf>,
        dest: PeerId,
        dest_name: &str,
        op: u64,
    ) -> Result<(String, Option<DiskTransfer>)> {
        if let Some(path) = image.clone() {
            let plan = tokio::task::spawn_blocking(move || sparse::plan(&path))
                .await?
                .context("reading the disk image")?;
            // What a destination would refuse is refused here, with the reason.
            plan.validate(sparse::MAX_FILE)
                .map_err(|e| anyhow!("this disk cannot be replicated: {e}"))?;
            offer.disk = Some(plan);
        }
        let frame = wire::encode(&offer)?;
        let stream = self
            .node
            .streams()
            .open_stream(dest, REPLICA_PROTOCOL)
            .await
            .map_err(|e| anyhow!("opening a replication stream to {dest_name}: {e}"))?;
        let (mut reader, mut writer) = tokio::io::split(stream.compat());
        let write = async {
            writer.write_all(&frame).await?;
            writer.flush().await?;
            anyhow::Ok(frame.len() as u64)
        };
        let (mut wire_bytes, answer) = wire::offer_and_answer(&mut reader, write, ANSWER_TIMEOUT)
            .await
            .with_context(|| format!("offering the replica to {dest_name}"))?;
        let need = match answer {
            Answer::Accept { need } => need,
            Answer::Refuse { reason } => bail!("{dest_name} refused: {}", peer_text(&reason)),
        };
        self.operations.set_phase(op, OperationPhase::Transferring);
        let mut sent = ChunksSent::default();
        if let (Some(plan), Some(path)) = (&offer.disk, &image) {
            let file = Arc::new(File::open(path)?);
            sent = send_chunks(&mut writer, plan, &need, file, |done, total| {
                self.operations
                    .set_progress(op, &transfer_sample(done, total))
            })
            .await
            .with_context(|| format!("sending the disk to {dest_name}"))?;
            wire_bytes += sent.stream_bytes;
        }
        let outcome = tokio::time::timeout(START_TIMEOUT, wire::receive::<_, Outcome>(&mut reader))
            .await
            .map_err(|_| anyhow!("{dest_name} did not start the replica within {START_TIMEOUT:?}"))?
            .with_context(|| format!("waiting for {dest_name} to start the replica"))?;
        let (ip, replica_sha256) = match outcome {
            Outcome::Started { ip, disk_sha256 } => (ip, disk_sha256),
            Outcome::Failed { reason } => bail!("{dest_name}: {}", peer_text(&reason)),
        };
        let transfer = offer.disk.as_ref().map(|plan| DiskTransfer {
            virtual_bytes: plan.virtual_size,
            file_bytes: plan.file_size,
            allocated_bytes: plan.allocated,
            data_bytes: plan.data_bytes(),
            chunks_total: plan.chunks.len(),
            chunks_sent: sent.chunks,
            sent_data_bytes: sent.data_bytes,
            wire_bytes,
            source_sha256: plan.file_sha256.clone(),
            replica_sha256,
        });
        Ok((ip, transfer))
    }
}

/// Progress of a byte transfer in the shape operations keep.
fn transfer_sample(done: u64, total: u64) -> JobSample {
    JobSample {
        processed_bytes: Some(done),
        remaining_bytes: Some(total.saturating_sub(done)),
        total_bytes: Some(total.max(1)),
        ..JobSample::default()
    }
}

/// What the source side of a replication produced.
struct Sent {
    ip: String,
    image: Option<ImageReport>,
    transfer: Option<DiskTransfer>,
}

/// `VM-r1`, `VM-r2`, ...: the first no VM here or on a known peer uses.
fn default_replica_name(vm: &VmName, local: &[VmName], peers: &[PeerView]) -> Result<VmName> {
    let taken = |name: &str| {
        local.iter().any(|n| n == name)
            || peers
                .iter()
                .any(|p| p.vms.iter().flatten().any(|n| n == name))
    };
    let vm = vm.as_str();
    let base = vm.rsplit_once("-r").map_or(vm, |(b, n)| {
        if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) {
            b
        } else {
            vm
        }
    });
    (1..1000)
        .map(|n| VmName::from(format!("{base}-r{n}")))
        .find(|n| !taken(n))
        .ok_or_else(|| anyhow!("no free replica name for '{vm}': give one with --name"))
        .and_then(|n| n.validate().map(|_| n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_with(vms: &[&str]) -> PeerView {
        PeerView {
            vms: Some(vms.iter().map(|&s| s.into()).collect()),
            ..PeerView::default()
        }
    }

    #[test]
    fn default_names_skip_those_in_use_anywhere() {
        let none: [PeerView; 0] = [];
        assert_eq!(
            default_replica_name(&"web-1".into(), &[], &none).unwrap(),
            "web-1-r1"
        );
        let peers = [peer_with(&["web-1-r1"]), peer_with(&["web-1-r2"])];
        assert_eq!(
            default_replica_name(&"web-1".into(), &["web-1-r3".into()], &peers).unwrap(),
            "web-1-r4"
        );
        // A replica of a replica counts from the original's name.
        assert_eq!(
            default_replica_name(&"web-1-r1".into(), &[], &peers).unwrap(),
            "web-1-r3"
        );
        assert!(default_replica_name(&"a".repeat(48).into(), &[], &none).is_err());
    }
}
