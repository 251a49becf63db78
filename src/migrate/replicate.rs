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

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use libp2p::PeerId;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::control::Role;
use crate::control::{DiskTransfer, ReplicationReport};
use crate::hypervisor::domain::new_uuid;
use crate::hypervisor::job::JobSample;
use crate::hypervisor::manifest::{ManifestService, VmManifest};
use crate::migrate::replica::point_in_time::{DiskImage, ImageReport, Method};
use crate::migrate::replica::sparse;
use crate::migrate::replica::transfer::{
    READ_TIMEOUT, Sent as ChunksSent, receive_disk, send_chunks,
};
use crate::migrate::replica::wire::{self, Answer, Offer, Outcome};
use crate::model::{OperationKind, OperationPhase, PeerView, ServiceSpec, VmState};
use crate::node::protocol::REPLICA_PROTOCOL;
use crate::node::protocol::peer_text;
use crate::paths::disk_dir;
use crate::peer::Peer;
use crate::peer::capacity::{Reservation, VmRequirements};
use crate::peer::limits::{self, OpenGuard};
use crate::peer::operations::Busy;
use crate::peer::peers::{peer_id_of, resolve};
use crate::peer::vms::validate_vm_name;

/// The destination must answer an offer this fast (it hashes its partial file).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// Defining and starting the replica.
const START_TIMEOUT: Duration = Duration::from_secs(180);

impl Peer {
    /// Source side: replicates `vm` to the peer named `to` as `name` (default
    /// `VM-rN`, the first such name no known peer uses).
    pub async fn replicate(
        self: &Arc<Self>,
        vm: &str,
        to: &str,
        name: Option<String>,
    ) -> Result<ReplicationReport> {
        self.replicate_as(vm, to, name, false).await
    }

    /// `auto`: asked by the provision policy; the destination remembers it and
    /// its policy may remove the replica when idle.
    pub(crate) async fn replicate_as(
        self: &Arc<Self>,
        vm: &str,
        to: &str,
        name: Option<String>,
        auto: bool,
    ) -> Result<ReplicationReport> {
        let local = self.host.vm(vm).await?;
        let Some(meta) = self.host.metadata(vm).await? else {
            bail!("VM '{vm}' was not created by peervisor: it has no manifest to replicate");
        };
        let net = self.node.status().await?;
        let dest = resolve(to, &net.peers)?;
        let dest_name = dest.display_name();
        if !dest.connected {
            bail!("peer {dest_name} is known but not connected: cannot replicate to it now");
        }
        let dest_id = peer_id_of(&dest)?;
        let name = match name {
            Some(n) => {
                validate_vm_name(&n)?;
                n
            }
            None => {
                let local_names: Vec<String> = self
                    .host
                    .list()
                    .await?
                    .into_iter()
                    .map(|v| v.name)
                    .collect();
                default_replica_name(vm, &local_names, &net.peers)?
            }
        };
        let limit = self.capacity.max_migrations;
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
        let started = Instant::now();
        let services = if local.services.is_empty() {
            // The guest's default HTTP service is named after the VM: keep that name.
            vec![ServiceSpec {
                name: vm.to_string(),
                kind: "http".into(),
                port: 80,
                tags: Vec::new(),
                ..ServiceSpec::default()
            }]
        } else {
            local.services.clone()
        };
        let offer = Offer {
            name: name.clone(),
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
        match &result {
            Ok(_) => {
                self.operations.finish(op, None);
                tracing::info!(
                    "VM '{vm}' replicated to {dest_name} as '{name}' in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                self.operations.finish(op, Some(format!("{e:#}")));
                tracing::error!("replication of VM '{vm}' to {dest_name} failed: {e:#}");
            }
        }
        let Sent {
            ip,
            image,
            transfer: disk,
        } = result?;
        let image = image.unwrap_or_default();
        Ok(ReplicationReport {
            vm: vm.to_string(),
            replica: name,
            from: self.config.nick.clone(),
            to: dest_name,
            to_peer_id: dest_id.to_string(),
            replica_ip: ip,
            seconds: started.elapsed().as_secs_f64(),
            paused_ms: image.paused_ms,
            consistent_copy: (!image.method.is_empty()).then(|| image.method.to_string()),
            overlay_ms: image.overlay_ms,
            commit_ms: image.commit_ms,
            disk,
        })
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

    /// Destination side: whether `from` may send a replica at all, checked
    /// before a byte of its offer is read (a member without the control role or
    /// over its limits costs this host only the refusal). The guards count the
    /// stream against `from`'s limits while it is open.
    fn admit_replica(&self, from: PeerId) -> Result<ReplicaGuards<'_>, String> {
        let limits = &self.limits;
        let max = limits.config.streams_per_peer;
        let Some(open) = limits.open_streams.try_open(&from, max) else {
            return Err(format!("too many open streams from you (at most {max})"));
        };
        if let Err(retry) = limits.streams.check(&from) {
            return Err(limits::rate_limited(
                "streams",
                limits.streams.per_s(),
                retry,
            ));
        }
        if !self.access.allows(&from, Role::Control) {
            return Err(format!(
                "peer {from} is not allowed to control this host (its operator can run `peervisor peers allow {from} --role control`)"
            ));
        }
        if !self.config.accept_migrations {
            return Err("this peer does not accept VMs from other peers".into());
        }
        // Offers being read are held in memory (up to Offer::LIMIT each): no
        // more at once than replicas this host accepts at once.
        let max = self.capacity.max_migrations;
        let Some(replica) = limits.replica_streams.try_open(&from, max) else {
            return Err(format!(
                "too many replication streams from you at once (at most {max}, --max-migrations)"
            ));
        };
        Ok((open, replica))
    }

    /// Destination side: whether to host the offered replica; what it will be
    /// created from (its capacity reserved), or why not.
    async fn check_offer(&self, offer: &Offer) -> Result<Accepted, String> {
        let manifest = offer_manifest(offer)?;
        let (dir, image) = (self.config.image_dir.clone(), offer.image.clone());
        let found = tokio::task::spawn_blocking(move || crate::image::find(&dir, &image)).await;
        let Ok(Ok(image)) = found else {
            return Err(format!(
                "image '{}' is not on this peer (build it with `peervisor image build`)",
                offer.image
            ));
        };
        // The same checks and lent capacity as an incoming migration (name and
        // UUID free, boot files here, vCPUs, memory and disk within what this
        // host lends), reserved until the replica runs or fails.
        let mut boot_files = vec![image.kernel, image.initrd];
        boot_files.extend(crate::hypervisor::domain::fast_firmware());
        let requirements = VmRequirements {
            name: offer.name.clone(),
            uuid: new_uuid(),
            vcpus: offer.vcpus,
            memory_mib: offer.memory_mib,
            disk_mib: offer
                .disk
                .as_ref()
                .map_or(0, |p| p.virtual_size.div_ceil(1 << 20)),
            boot_files,
        };
        let reservation = self
            .check_incoming(&requirements)
            .await
            .map_err(|refusal| refusal.to_string())?;
        Ok(Accepted {
            manifest,
            uuid: requirements.uuid,
            _reservation: reservation,
        })
    }

    /// Destination side: receives the disk, then defines and starts the replica.
    async fn receive_replica<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        offer: &Offer,
        accepted: &Accepted,
        op: u64,
    ) -> Result<Outcome> {
        let mut ready_disk = None;
        let mut disk_sha256 = None;
        match &offer.disk {
            None => {
                wire::send(stream, &Answer::Accept { need: Vec::new() }).await?;
            }
            Some(plan) => {
                let dir = disk_dir();
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                remove_stale_partials(&dir);
                let partial_path = dir.join(format!(
                    ".{}-{}.partial",
                    offer.name,
                    &offer.source_uuid[..8]
                ));
                let on_accept = |need: usize| {
                    if need < plan.chunks.len() {
                        tracing::info!(
                            "replica '{}': resuming, {} of {} chunks already here",
                            offer.name,
                            plan.chunks.len() - need,
                            plan.chunks.len()
                        );
                    }
                    self.operations.set_phase(op, OperationPhase::Transferring);
                };
                let digest = receive_disk(stream, plan, &partial_path, on_accept, |done, total| {
                    self.operations
                        .set_progress(op, &transfer_sample(done, total))
                })
                .await?;
                disk_sha256 = digest;
                ready_disk = Some(partial_path);
            }
        }
        let uuid = accepted.uuid.clone();
        let disk = match ready_disk {
            Some(partial) => {
                let disk = disk_dir().join(format!("{}-{}.qcow2", offer.name, &uuid[..8]));
                std::fs::rename(&partial, &disk)
                    .with_context(|| format!("renaming {}", partial.display()))?;
                Some(disk)
            }
            None => None,
        };
        match self
            .create_vm_with(&accepted.manifest, uuid, disk.clone())
            .await
        {
            Ok(ip) => {
                self.services.republish.notify_one();
                Ok(Outcome::Started {
                    ip: ip.to_string(),
                    disk_sha256,
                })
            }
            Err(e) => {
                // Nothing half-made is left behind.
                if let Some(disk) = disk {
                    let _ = std::fs::remove_file(disk);
                }
                Err(e)
            }
        }
    }
}

/// The checks of an offer that need nothing of this host: its definition as a
/// manifest, the source's UUID (its first 8 characters name the partial file)
/// and the disk plan (only qcow2 is attached).
fn offer_manifest(offer: &Offer) -> Result<VmManifest, String> {
    validate_vm_name(&offer.name).map_err(|e| e.to_string())?;
    let uuid_ok = offer.source_uuid.len() == 36
        && offer
            .source_uuid
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-');
    if !uuid_ok {
        return Err("malformed source UUID".into());
    }
    let manifest = VmManifest {
        name: offer.name.clone(),
        vcpus: offer.vcpus,
        memory_mib: offer.memory_mib,
        data_disk_mib: None,
        image: Some(offer.image.clone()),
        services: offer
            .services
            .iter()
            .map(|s| ManifestService {
                name: s.name.clone(),
                kind: s.kind.clone(),
                port: u32::from(s.port),
                tags: s.tags.iter().cloned().collect(),
                // Its limits travel with it (each replica counts its own).
                max_conns: s.max_conns,
                allow: s.allow.clone(),
            })
            .collect(),
    };
    manifest
        .validate()
        .map_err(|e| format!("replica definition: {e}"))?;
    if let Some(plan) = &offer.disk {
        plan.validate(sparse::MAX_FILE)?;
        if plan.format != "qcow2" {
            return Err(format!(
                "data disk format {:?} (only qcow2 is attached)",
                plan.format
            ));
        }
    }
    Ok(manifest)
}

/// A replica the destination agreed to host.
struct Accepted {
    manifest: VmManifest,
    uuid: String,
    /// Its share of the capacity this host lends, held until it runs or fails.
    _reservation: Reservation,
}

/// Partial files of replications nobody resumed for a week are abandoned.
const PARTIAL_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

fn remove_stale_partials(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > PARTIAL_KEPT));
        if name.starts_with('.') && name.ends_with(".partial") && stale {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!("removed {name}: a replication abandoned a week ago"),
                Err(e) => tracing::warn!("removing {name}: {e}"),
            }
        }
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
fn default_replica_name(vm: &str, local: &[String], peers: &[PeerView]) -> Result<String> {
    let taken = |name: &str| {
        local.iter().any(|n| n == name)
            || peers
                .iter()
                .any(|p| p.vms.iter().flatten().any(|n| n == name))
    };
    let base = vm.rsplit_once("-r").map_or(vm, |(b, n)| {
        if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) {
            b
        } else {
            vm
        }
    });
    (1..1000)
        .map(|n| format!("{base}-r{n}"))
        .find(|n| !taken(n))
        .ok_or_else(|| anyhow!("no free replica name for '{vm}': give one with --name"))
        .and_then(|n| validate_vm_name(&n).map(|_| n))
}

/// Destination side: serves replication streams.
pub async fn accept_replicas(peer: Arc<Peer>) {
    let mut incoming = match peer.node.streams().accept(REPLICA_PROTOCOL) {
        Ok(incoming) => incoming,
        Err(e) => {
            tracing::error!("cannot accept replicas: {e}");
            return;
        }
    };
    while let Some((from, stream)) = incoming.next().await {
        let peer = peer.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_replica(&peer, from, stream).await {
                tracing::warn!("replication from {from}: {e:#}");
            }
        });
    }
}

async fn serve_replica(peer: &Peer, from: PeerId, stream: crate::node::Stream) -> Result<()> {
    let mut stream = stream.compat();
    let _guards = match peer.admit_replica(from) {
        Ok(guards) => guards,
        Err(reason) => {
            return refuse(peer, &mut stream, from, "a replication stream", &reason).await;
        }
    };
    let offer = match tokio::time::timeout(READ_TIMEOUT, wire::receive::<_, Offer>(&mut stream))
        .await
    {
        Ok(Ok(offer)) => offer,
        Ok(Err(e)) => return refuse(peer, &mut stream, from, "an offer", &format!("{e:#}")).await,
        Err(_) => {
            let reason = format!("no offer within {READ_TIMEOUT:?}");
            return refuse(peer, &mut stream, from, "an offer", &reason).await;
        }
    };
    let limit = peer.capacity.max_migrations;
    let checked = match peer.check_offer(&offer).await {
        Ok(accepted) => peer
            .operations
            .begin_limited(
                OperationKind::ReplicateIn,
                &offer.name,
                &from.to_string(),
                limit,
            )
            .map(|op| (accepted, op))
            .map_err(|busy| match busy {
                Busy::Vm { .. } => format!("a VM named '{}' is arriving here already", offer.name),
                Busy::Limit { running } => {
                    format!("{running} replica(s) are arriving here already, the limit")
                }
            }),
        Err(reason) => Err(reason),
    };
    let (accepted, op) = match checked {
        Ok(pair) => pair,
        Err(reason) => {
            let what = format!("replica '{}' of VM '{}'", offer.name, offer.source_vm);
            return refuse(peer, &mut stream, from, &what, &reason).await;
        }
    };
    tracing::info!(
        "accepted replica '{}' of VM '{}' from {from}",
        offer.name,
        offer.source_vm
    );
    match peer
        .receive_replica(&mut stream, &offer, &accepted, op)
        .await
    {
        Ok(outcome) => {
            peer.operations.finish(op, None);
            if offer.auto
                && let Err(e) = peer.mark_auto_replica(&offer.name, true)
            {
                tracing::warn!("{e:#}");
            }
            tracing::info!("replica '{}' started", offer.name);
            wire::send(&mut stream, &outcome).await?;
        }
        Err(e) => {
            peer.operations.finish(op, Some(format!("{e:#}")));
            let _ = wire::send(&mut stream, &Outcome::failed(&format!("{e:#}"))).await;
            return Err(e.context(format!("replica '{}'", offer.name)));
        }
    }
    let _ = stream.shutdown().await;
    Ok(())
}

/// The stream's guards: one of `from`'s open streams, one of its replications.
type ReplicaGuards<'a> = (OpenGuard<'a, PeerId>, OpenGuard<'a, PeerId>);

/// Refuses `what` from `from` with `reason`, on both ends: logged here (a few
/// lines a second per peer at most), sent back for the source to show.
async fn refuse<S: AsyncWrite + Unpin>(
    peer: &Peer,
    stream: &mut S,
    from: PeerId,
    what: &str,
    reason: &str,
) -> Result<()> {
    if peer.limits.log_refusal(&from) {
        tracing::warn!("refused {what} from {from}: {reason}");
    }
    wire::send(stream, &Answer::refuse(reason)).await?;
    // Closed without reading on: what the source still sends is not taken.
    let _ = stream.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_with(vms: &[&str]) -> PeerView {
        PeerView {
            vms: Some(vms.iter().map(|s| s.to_string()).collect()),
            ..PeerView::default()
        }
    }

    #[test]
    fn only_week_old_partials_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(".web-1-r1-abcd1234.partial");
        let fresh = dir.path().join(".web-2-r1-abcd1234.partial");
        let disk = dir.path().join("web-1-abcd1234.qcow2");
        for p in [&old, &fresh, &disk] {
            std::fs::write(p, b"x").unwrap();
        }
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
        for p in [&old, &disk] {
            let f = std::fs::File::options().write(true).open(p).unwrap();
            f.set_modified(long_ago).unwrap();
        }
        remove_stale_partials(dir.path());
        assert!(!old.exists());
        assert!(fresh.exists(), "a partial of a recent attempt stays");
        assert!(disk.exists(), "disks are never touched");
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::super::offer_manifest;
        use crate::fuzzing::{CASES, config};
        use crate::migrate::replica::fuzz::{assert_sound, frames, receive, sample_offer};
        use crate::migrate::replica::sparse::MAX_FILE;
        use crate::migrate::replica::wire::Offer;

        #[test]
        fn the_sample_offer_is_accepted() {
            assert!(offer_manifest(&sample_offer()).is_ok());
        }

        proptest! {
            #![proptest_config(config(CASES))]
            /// Offers from the network through the checks a destination makes
            /// before it looks at itself: what passes names a partial file
            /// inside the disk dir and carries a sound qcow2 plan.
            #[test]
            fn fuzz_replica_offer_checks(input in frames()) {
                let Ok(offer) = receive::<Offer>(&input) else {
                    return Ok(());
                };
                if let Ok(manifest) = offer_manifest(&offer) {
                    assert_eq!(manifest.name, offer.name);
                    let uuid8 = offer.source_uuid.get(..8).expect("8 ASCII characters");
                    let partial = format!(".{}-{uuid8}.partial", offer.name);
                    assert!(!partial.contains('/'), "{partial}");
                    if let Some(plan) = &offer.disk {
                        assert_eq!(plan.format, "qcow2");
                        assert_sound(plan, MAX_FILE);
                    }
                }
            }
        }
    }

    #[test]
    fn default_names_skip_those_in_use_anywhere() {
        let none: [PeerView; 0] = [];
        assert_eq!(
            default_replica_name("web-1", &[], &none).unwrap(),
            "web-1-r1"
        );
        let peers = [peer_with(&["web-1-r1"]), peer_with(&["web-1-r2"])];
        assert_eq!(
            default_replica_name("web-1", &["web-1-r3".into()], &peers).unwrap(),
            "web-1-r4"
        );
        // A replica of a replica counts from the original's name.
        assert_eq!(
            default_replica_name("web-1-r1", &[], &peers).unwrap(),
            "web-1-r3"
        );
        assert!(default_replica_name(&"a".repeat(48), &[], &none).is_err());
    }
}
