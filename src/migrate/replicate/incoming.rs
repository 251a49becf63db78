//! Replication, destination side: whether to host an offered replica (the
//! pusher's role, the operator's consent, the image, what this host lends),
//! receiving the chunks it lacks (a cut attempt resumes), and starting the
//! replica.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use libp2p::PeerId;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::{Replications, transfer_sample};
use crate::admission::limits::{self, OpenGuard};
use crate::api::Role;
use crate::hypervisor::domain::new_uuid;
use crate::hypervisor::manifest::VmManifest;
use crate::migrate::capacity::{Reservation, VmRequirements};
use crate::migrate::operations::Busy;
use crate::migrate::replica::sparse;
use crate::migrate::replica::transfer::{READ_TIMEOUT, receive_disk};
use crate::migrate::replica::wire::{self, Answer, Offer, Outcome};
use crate::model::{OperationKind, OperationPhase};
use crate::names::VmName;
use crate::node::protocol::REPLICA_PROTOCOL;
use crate::paths::disk_dir;

impl Replications {
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
        if !self.accept {
            return Err("this peer does not accept VMs from other peers".into());
        }
        // Offers being read are held in memory (up to Offer::LIMIT each): no
        // more at once than replicas this host accepts at once.
        let max = self.capacity.max_migrations();
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
        let (dir, image) = (self.image_dir.clone(), offer.image.clone());
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
            name: offer.name.as_str().into(),
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
            .capacity
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
            .vms
            .create_with(&accepted.manifest, uuid, disk.clone())
            .await
        {
            Ok(ip) => Ok(Outcome::Started {
                ip: ip.map_or_else(|| "dhcp".to_string(), |ip| ip.to_string()),
                disk_sha256,
            }),
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
    (VmName::from(offer.name.as_str()).validate()).map_err(|e| e.to_string())?;
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
        // The replica joins this host's default network.
        network: None,
        bridge: None,
        disk: None,
        overlay: true,
        cloud_init: None,
        // Its limits travel with it (each replica counts its own).
        services: offer.services.iter().map(Into::into).collect(),
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

/// Destination side: serves replication streams.
pub(super) async fn accept_replicas(replications: Arc<Replications>) {
    let mut incoming = match replications.node.streams().accept(REPLICA_PROTOCOL) {
        Ok(incoming) => incoming,
        Err(e) => {
            tracing::error!("cannot accept replicas: {e}");
            return;
        }
    };
    while let Some((from, stream)) = incoming.next().await {
        let replications = replications.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_replica(&replications, from, stream).await {
                tracing::warn!("replication from {from}: {e:#}");
            }
        });
    }
}

async fn serve_replica(
    replications: &Replications,
    from: PeerId,
    stream: crate::node::Stream,
) -> Result<()> {
    let mut stream = stream.compat();
    let _guards = match replications.admit_replica(from) {
        Ok(guards) => guards,
        Err(reason) => {
            return refuse(
                replications,
                &mut stream,
                from,
                "a replication stream",
                &reason,
            )
            .await;
        }
    };
    let offer =
        match tokio::time::timeout(READ_TIMEOUT, wire::receive::<_, Offer>(&mut stream)).await {
            Ok(Ok(offer)) => offer,
            Ok(Err(e)) => {
                let reason = format!("{e:#}");
                return refuse(replications, &mut stream, from, "an offer", &reason).await;
            }
            Err(_) => {
                let reason = format!("no offer within {READ_TIMEOUT:?}");
                return refuse(replications, &mut stream, from, "an offer", &reason).await;
            }
        };
    let limit = replications.capacity.max_migrations();
    let checked = match replications.check_offer(&offer).await {
        Ok(accepted) => replications
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
            return refuse(replications, &mut stream, from, &what, &reason).await;
        }
    };
    tracing::info!(
        "accepted replica '{}' of VM '{}' from {from}",
        offer.name,
        offer.source_vm
    );
    match replications
        .receive_replica(&mut stream, &offer, &accepted, op)
        .await
    {
        Ok(outcome) => {
            replications.operations.finish(op, None);
            if offer.auto
                && let Err(e) = replications.auto.mark(&offer.name.as_str().into(), true)
            {
                tracing::warn!("{e:#}");
            }
            tracing::info!("replica '{}' started", offer.name);
            wire::send(&mut stream, &outcome).await?;
        }
        Err(e) => {
            replications.operations.finish(op, Some(format!("{e:#}")));
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
    replications: &Replications,
    stream: &mut S,
    from: PeerId,
    what: &str,
    reason: &str,
) -> Result<()> {
    if replications.limits.log_refusal(&from) {
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
}
