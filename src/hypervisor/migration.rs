//! The libvirt side of a live migration: the peer-to-peer call (over the
//! overlay's channels, or tunnelled inside libvirt's connection), the domain
//! XML sent with it, and the job's progress, outcome and abort.

use anyhow::{Result, anyhow};
use virt::domain::Domain;

use super::*;

impl Host {
    /// Live-migrates a running VM peer-to-peer, tunnelled: this hypervisor connects
    /// to `dest_uri` itself and tunnels the memory stream over that connection.
    /// Not peervisor's way (see `migrate_p2p`): the migration benchmark's
    /// `--direct tunnelled` baseline. On failure libvirt resumes the VM here.
    /// `max_downtime_ms` bounds the final pause; `bandwidth_mib_s` caps the transfer.
    pub async fn migrate_p2p_tunnelled(
        &self,
        name: &str,
        dest_uri: &str,
        max_downtime_ms: Option<u64>,
        bandwidth_mib_s: Option<u64>,
    ) -> Result<()> {
        let dest = dest_uri.to_string();
        let done = self
            .with_domain(name, move |d, name| {
                set_max_downtime(d, name, max_downtime_ms)?;
                let mut flags = sys::VIR_MIGRATE_LIVE
                    | sys::VIR_MIGRATE_PEER2PEER
                    | sys::VIR_MIGRATE_TUNNELLED
                    | sys::VIR_MIGRATE_PERSIST_DEST
                    | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
                // Our data disks sit in the machine-wide disk dir (cache=none), which
                // every peer of this machine sees at the same path: shared storage
                // libvirt cannot recognise as such. Elsewhere the destination QEMU
                // cannot open the disk and the VM stays here.
                if read_metadata(d).is_some_and(|m| !m.disks.is_empty()) {
                    flags |= sys::VIR_MIGRATE_UNSAFE;
                }
                d.migrate_to_uri(&dest, flags, None, bandwidth_mib_s.unwrap_or(0))
                    .map_err(|e| anyhow!("migrating VM '{name}': {}", e.message()))
            })
            .await;
        self.refresh().await;
        done
    }

    /// The daemon's capabilities XML (`virsh capabilities`): its security
    /// drivers and the user its QEMUs run as.
    pub async fn capabilities(&self) -> Result<String> {
        let link = self.link.clone();
        blocking(move || {
            link.conn()?
                .capabilities()
                .map_err(|e| anyhow!("libvirt capabilities: {}", e.message()))
        })
        .await
    }

    /// The definition a destination would get (`dumpxml --migratable`).
    pub async fn migratable_xml(&self, name: &str) -> Result<String> {
        self.with_domain(name, |d, name| {
            d.xml_desc(sys::VIR_DOMAIN_XML_MIGRATABLE | sys::VIR_DOMAIN_XML_SECURE)
                .map_err(|e| anyhow!("definition of VM '{name}': {}", e.message()))
        })
        .await
    }

    /// Live-migrates a running VM peer-to-peer: `uris.libvirt` reaches the
    /// destination's libvirt; QEMU sends memory to `uris.memory` and, when
    /// `uris.disks` is set, mirrors the disks over NBD to it (both unix sockets
    /// the caller bridges to the destination; None: TCP, libvirt's default).
    /// With `uris.tunnelled` the memory goes inside libvirt's own connection
    /// instead (for a QEMU that may not reach the caller's sockets; slower: the
    /// stream passes through both libvirtds). `dest_xml` names the
    /// destination's disk files. On failure libvirt resumes the VM here.
    pub async fn migrate_p2p(
        &self,
        name: &str,
        uris: MigrationUris,
        dest_xml: String,
        max_downtime_ms: Option<u64>,
        bandwidth_mib_s: Option<u64>,
    ) -> Result<()> {
        let done = self
            .with_domain(name, move |d, name| {
                set_max_downtime(d, name, max_downtime_ms)?;
                let mut flags = sys::VIR_MIGRATE_LIVE
                    | sys::VIR_MIGRATE_PEER2PEER
                    | sys::VIR_MIGRATE_PERSIST_DEST
                    | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
                if uris.qemu_tls {
                    flags |= sys::VIR_MIGRATE_TLS;
                }
                if uris.tunnelled {
                    flags |= sys::VIR_MIGRATE_TUNNELLED;
                }
                if uris.copy_disks && uris.incremental {
                    flags |= sys::VIR_MIGRATE_NON_SHARED_INC;
                } else if uris.copy_disks {
                    flags |= sys::VIR_MIGRATE_NON_SHARED_DISK;
                } else if read_metadata(d).is_some_and(|m| !m.disks.is_empty()) {
                    // Not copied: the disks sit in the machine-wide disk dir
                    // (cache=none), which every peer of this machine sees at the
                    // same path: shared storage libvirt cannot recognise as such.
                    flags |= sys::VIR_MIGRATE_UNSAFE;
                }
                let params = virt::domain::MigrateParameters {
                    uri: uris.memory,
                    disks_uri: uris.disks,
                    listen_address: uris.listen_address,
                    dest_xml: Some(dest_xml.clone()),
                    persist_xml: Some(dest_xml),
                    bandwidth: bandwidth_mib_s,
                    ..Default::default()
                };
                d.migrate_to_uri3(Some(&uris.libvirt), params, flags)
                    .map_err(|e| anyhow!("migrating VM '{name}': {}", e.message()))
            })
            .await;
        self.refresh().await;
        done
    }

    /// The running job of a VM (an outgoing migration), or None when it has none.
    pub async fn job_progress(&self, name: &str) -> Result<Option<job::JobSample>> {
        self.with_domain(name, |d, name| {
            let (kind, params) = ffi::job_stats(d, 0)
                .map_err(|e| anyhow!("job stats of VM '{name}': {}", e.message()))?;
            Ok((kind != sys::VIR_DOMAIN_JOB_NONE as i32)
                .then(|| job::JobSample::from_params(&params)))
        })
        .await
    }

    /// Stats of the VM's last completed job; on a migration's destination they
    /// carry what the source measured (downtime, bytes, time). Kept for the next
    /// reader (libvirt drops them once read otherwise).
    pub async fn completed_job(&self, name: &str) -> Result<Option<job::JobSample>> {
        self.with_domain(name, |d, name| {
            let flags =
                sys::VIR_DOMAIN_JOB_STATS_COMPLETED | sys::VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED;
            let (kind, params) = ffi::job_stats(d, flags)
                .map_err(|e| anyhow!("completed job of VM '{name}': {}", e.message()))?;
            Ok((kind != sys::VIR_DOMAIN_JOB_NONE as i32)
                .then(|| job::JobSample::from_params(&params)))
        })
        .await
    }

    /// Cancels the VM's running job; an outgoing migration stops and the VM keeps
    /// running here.
    pub async fn abort_job(&self, name: &str) -> Result<()> {
        self.with_domain(name, |d, name| {
            ffi::abort_job(d)
                .map_err(|e| anyhow!("aborting the job of VM '{name}': {}", e.message()))
        })
        .await
    }
}

/// Where a non-tunnelled migration sends its streams.
#[derive(Debug, Clone)]
pub struct MigrationUris {
    /// The destination's libvirt (RPC), e.g. `qemu+unix:///system?socket=…`.
    pub libvirt: String,
    /// QEMU's memory stream, e.g. `unix:///run/libvirt/qemu/pv-…/mig.sock`
    /// (None: TCP to the destination's migration address, libvirt's default).
    pub memory: Option<String>,
    /// The NBD server the destination QEMU runs for the disk copy (None: TCP).
    pub disks: Option<String>,
    /// Whether the disks are copied (`NON_SHARED_DISK`) or the destination
    /// opens the very files.
    pub copy_disks: bool,
    /// Only the top layer of each disk is copied (`NON_SHARED_INC`): the
    /// destination made overlays on base images of its own.
    pub incremental: bool,
    /// The memory stream goes inside libvirt's own connection
    /// (`VIR_MIGRATE_TUNNELLED`; `memory` and `disks` are then None): for a
    /// QEMU that may not connect to our sockets (migrate/transport.rs).
    pub tunnelled: bool,
    /// Where the destination's QEMU listens for `memory` (None: libvirt's
    /// default, every address): the loopback in a loopback migration.
    pub listen_address: Option<String>,
    /// QEMU encrypts its own streams with TLS (`VIR_MIGRATE_TLS`; both daemons
    /// need certificates, see `daemon::TLS_DIR`). Peervisor's streams are
    /// encrypted by the overlay: only the migration benchmark's `--direct tls`.
    pub qemu_tls: bool,
}

/// Bounds the final pause of the migration libvirt is about to start, if asked.
fn set_max_downtime(d: &Domain, name: &str, max_downtime_ms: Option<u64>) -> Result<()> {
    if let Some(ms) = max_downtime_ms {
        d.migrate_set_max_downtime(ms, 0).map_err(|e| {
            anyhow!(
                "setting max downtime {ms} ms for VM '{name}': {}",
                e.message()
            )
        })?;
    }
    Ok(())
}
