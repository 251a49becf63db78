//! The VMs this peer hosts: creating one from a manifest (image, address, data
//! disk, domain), the check that a VM is peervisor's before acting on it, the
//! files a removed VM leaves; `health.rs` probes their guests' services.

mod adopt;
pub mod boot_log;
pub mod console;
mod health;
pub mod remote;
mod remote_ops;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::Notify;

use crate::hypervisor::Host;
use crate::hypervisor::accel::Accel;
use crate::hypervisor::domain::{self, BootDisk, DomainSpec, new_uuid};
use crate::hypervisor::manifest::VmManifest;
use crate::hypervisor::netns::GuestNetwork;
use crate::model::{NicSource, VmView};
use crate::names::VmName;
use crate::paths::{console_log_dir, disk_dir};

/// How long a graceful stop waits before powering the VM off.
const DEFAULT_STOP_TIMEOUT_S: u64 = 30;

/// The VMs this peer hosts: made from manifests on this peer's guest network,
/// started, stopped and removed at the operator's word, their guests probed.
pub struct Vms {
    host: Host,
    network: GuestNetwork,
    /// Where a new VM's NIC goes unless its manifest says.
    default_nic: NicSource,
    accel: Accel,
    image_dir: PathBuf,
    health: health::Health,
    /// Told whenever a VM here was made, started, stopped or removed (the
    /// services publisher listens: what this peer provides changed).
    changed: Arc<Notify>,
}

impl Vms {
    pub fn new(
        host: Host,
        network: GuestNetwork,
        default_nic: NicSource,
        accel: Accel,
        image_dir: PathBuf,
        changed: Arc<Notify>,
    ) -> Vms {
        Vms {
            host,
            network,
            default_nic,
            accel,
            image_dir,
            health: health::Health::default(),
            changed,
        }
    }

    /// Probes the running guests' services every few seconds, in the background
    /// (only on this peer's own guest network).
    pub fn start_probing(self: &Arc<Self>) {
        tokio::spawn(health::probe_loop(self.clone()));
    }

    /// Every VM of the hypervisor, fresh from libvirt.
    pub async fn list(&self) -> Result<Vec<VmView>> {
        self.host.list().await
    }

    /// One VM with its latest rates and history.
    pub async fn stats(&self, name: &VmName) -> Result<VmView> {
        self.host.vm(name).await
    }

    /// The named VMs here with their latest figures (what another peer's
    /// console shows of them), their last `keep_history` samples if asked,
    /// and the sampler round the figures come from.
    pub fn figures(&self, names: &[String], keep_history: Option<usize>) -> (u64, Vec<VmView>) {
        let mut vms = self.views();
        vms.retain(|vm| names.iter().any(|n| n == vm.name.as_str()));
        let round = self.host.annotate(&mut vms);
        for vm in &mut vms {
            match (keep_history, vm.history.as_mut()) {
                (Some(keep), Some(history)) => {
                    for ring in [
                        &mut history.cpu_pct_guest,
                        &mut history.disk_read_bps,
                        &mut history.disk_write_bps,
                        &mut history.net_rx_bps,
                        &mut history.net_tx_bps,
                        &mut history.span_s,
                    ] {
                        ring.drain(..ring.len().saturating_sub(keep));
                    }
                }
                _ => vm.history = None,
            }
        }
        (round, vms)
    }

    /// The serial console of a VM here, as a byte pipe.
    pub async fn console(&self, name: &VmName) -> Result<tokio::io::DuplexStream> {
        self.host.open_console(name).await
    }

    /// Whether a VM of this name is on this host.
    pub fn hosts(&self, name: &VmName) -> bool {
        self.host.vm_list().iter().any(|vm| &vm.name == name)
    }

    /// The VMs as last listed (without their figures: the sampler's rounds
    /// carry those), each with whether its guest's service answered the last
    /// probe.
    pub fn views(&self) -> Vec<VmView> {
        let mut vms = self.host.vm_list();
        self.health.annotate(&mut vms);
        vms
    }

    /// `user_data`: cloud-init user-data (the file's text) for a seed.
    pub async fn create(&self, manifest: &VmManifest, user_data: Option<String>) -> Result<String> {
        self.create_seeded(manifest, new_uuid(), None, user_data)
            .await?;
        Ok(format!("VM '{}' created and started", manifest.name))
    }

    /// Creates and starts a VM with this UUID. `ready_disk`: a data disk file to
    /// attach as it is (a replica's); otherwise one is made if the manifest asks.
    /// Returns its address when peervisor gave it one (None: the guest asks DHCP).
    pub async fn create_with(
        &self,
        manifest: &VmManifest,
        uuid: String,
        ready_disk: Option<PathBuf>,
    ) -> Result<Option<Ipv4Addr>> {
        self.create_seeded(manifest, uuid, ready_disk, None).await
    }

    /// `create_with`, plus a cloud-init NoCloud seed made from `user_data`
    /// (a disk image's guest only), checked before anything is made.
    async fn create_seeded(
        &self,
        manifest: &VmManifest,
        uuid: String,
        ready_disk: Option<PathBuf>,
        user_data: Option<String>,
    ) -> Result<Option<Ipv4Addr>> {
        let name = manifest.name.as_str();
        VmName::from(name).validate()?;
        manifest.validate()?;
        if let Some(text) = &user_data {
            if manifest.disk.is_none() {
                bail!(
                    "cloud-init: needs a disk image (--disk); the kernel image takes its services from the manifest"
                );
            }
            crate::image::cloud_init::check_user_data(text)
                .map_err(|e| anyhow::anyhow!("cloud-init user-data: {e}"))?;
        }
        let image_dir = self.image_dir.clone();
        // What it boots, checked before anything is made: a disk image (and its
        // checksum), else the kernel+initramfs image.
        let (image, boot_base) = match &manifest.disk {
            Some(disk) => {
                let disk = disk.clone();
                let found = tokio::task::spawn_blocking(move || {
                    crate::image::disk::resolve(&image_dir, &disk)
                })
                .await??;
                (None, Some(found))
            }
            None => {
                let image_name = manifest
                    .image
                    .clone()
                    .unwrap_or_else(|| crate::image::DEFAULT_IMAGE.to_string());
                let image = tokio::task::spawn_blocking(move || {
                    crate::image::find(&image_dir, &image_name)
                })
                .await??;
                (Some(image), None)
            }
        };
        if self.host.vm(name).await.is_ok() {
            bail!("a VM named '{name}' exists already on this peer");
        }
        let source = manifest.nic()?.unwrap_or_else(|| self.default_nic.clone());
        // Checked before anything is made: a bad name changes nothing.
        self.host.check_nic(&source).await?;
        let (nic, ip) = match &source {
            NicSource::GuestBridge if boot_base.is_some() => {
                bail!("a disk image's guest asks DHCP for its address: give --network or --bridge")
            }
            NicSource::GuestBridge => {
                if !self.network.is_namespaced() {
                    bail!(
                        "peervisor's guest bridge exists only with a private libvirtd: give --network or --bridge"
                    );
                }
                let ip = self.network.guest_ip_for(&uuid);
                self.ensure_ip_free(ip).await?;
                (self.network.nic(&uuid, ip), Some(ip))
            }
            NicSource::Network(n) => (dhcp_nic(&uuid, domain::NicSource::Network(n.clone())), None),
            NicSource::Bridge(b) => (dhcp_nic(&uuid, domain::NicSource::Bridge(b.clone())), None),
        };
        let console_dir = console_log_dir();
        std::fs::create_dir_all(&console_dir)
            .with_context(|| format!("creating {}", console_dir.display()))?;
        let made_disk = ready_disk.is_none();
        let data_disk = match (ready_disk, manifest.data_disk_mib) {
            (Some(disk), _) => Some(disk),
            (None, Some(mib)) => Some(create_data_disk(name, &uuid, mib).await?),
            (None, None) => None,
        };
        let mut boot_disk = match boot_base {
            Some((base, info)) if manifest.overlay => {
                let overlay = disk_dir().join(format!("{name}-{}.qcow2", &uuid[..8]));
                tokio::task::spawn_blocking(move || {
                    std::fs::create_dir_all(disk_dir())?;
                    crate::image::disk::create_overlay(&base, &info.format, &overlay)?;
                    Ok::<_, anyhow::Error>(BootDisk {
                        path: overlay,
                        format: "qcow2".into(),
                        owned: true,
                        seed: None,
                    })
                })
                .await??
                .into()
            }
            Some((base, info)) => Some(BootDisk {
                path: base,
                format: info.format,
                owned: false,
                seed: None,
            }),
            None => None,
        };
        if let (Some(boot), Some(text)) = (boot_disk.as_mut(), user_data) {
            let seed = disk_dir().join(format!("{name}-{}-cidata.img", &uuid[..8]));
            let meta = crate::image::cloud_init::meta_data(&format!("iid-{uuid}"), name);
            let path = seed.clone();
            let made = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(disk_dir())?;
                crate::image::cloud_init::write_seed(&path, &text, &meta)
            })
            .await?;
            if let Err(e) = made {
                if boot.owned {
                    let _ = std::fs::remove_file(&boot.path);
                }
                return Err(e);
            }
            boot.seed = Some(seed);
        }
        let image_label = match (&image, &manifest.disk) {
            (Some(image), _) => image.name.clone(),
            (None, disk) => disk.clone().unwrap_or_default(),
        };
        let spec = DomainSpec {
            name: name.to_string(),
            network: nic,
            uuid,
            vcpus: manifest.vcpus,
            memory_mib: manifest.memory_mib,
            accel: self.accel,
            kernel: image.as_ref().map(|i| i.kernel.clone()).unwrap_or_default(),
            initrd: image.as_ref().map(|i| i.initrd.clone()).unwrap_or_default(),
            console_log: console_dir.join(format!("{name}.log")),
            image: image_label,
            // None given: the guest runs its defaults (HTTP on 80, echo on 7) and
            // the services module names the HTTP one after the VM.
            services: manifest.service_specs(),
            data_disk: data_disk.clone(),
            firmware: crate::hypervisor::domain::fast_firmware(),
            boot_disk: boot_disk.clone(),
        };
        if let Err(e) = self.host.create(&spec).await {
            if made_disk && let Some(disk) = data_disk {
                let _ = std::fs::remove_file(disk);
            }
            if let Some(boot) = boot_disk {
                if let Some(seed) = boot.seed {
                    let _ = std::fs::remove_file(seed);
                }
                if boot.owned {
                    let _ = std::fs::remove_file(boot.path);
                }
            }
            return Err(e);
        }
        match ip {
            Some(ip) => tracing::info!("VM '{name}' started at {ip}"),
            None => tracing::info!("VM '{name}' started on {source}; its address comes from DHCP"),
        }
        self.changed.notify_one();
        Ok(ip)
    }

    pub async fn start(&self, name: &VmName, foreign: bool) -> Result<String> {
        self.change(name, foreign, self.host.start(name), "started")
            .await
    }

    /// Graceful (ACPI) shutdown, powered off after `timeout_s` (default 30 s);
    /// `force`: powered off at once.
    pub async fn stop(
        &self,
        name: &VmName,
        force: bool,
        timeout_s: Option<u64>,
        foreign: bool,
    ) -> Result<String> {
        self.check_ours(name, foreign).await?;
        let message = if force {
            self.host.power_off(name).await?;
            format!("VM '{name}' powered off")
        } else {
            let timeout = Duration::from_secs(timeout_s.unwrap_or(DEFAULT_STOP_TIMEOUT_S));
            if self.host.shutdown(name, timeout).await? {
                format!("VM '{name}' shut down")
            } else {
                format!(
                    "VM '{name}' did not shut down within {} s: powered off",
                    timeout.as_secs()
                )
            }
        };
        self.changed.notify_one();
        Ok(message)
    }

    pub async fn pause(&self, name: &VmName, foreign: bool) -> Result<String> {
        self.change(name, foreign, self.host.pause(name), "paused")
            .await
    }

    pub async fn resume(&self, name: &VmName, foreign: bool) -> Result<String> {
        self.change(name, foreign, self.host.resume(name), "resumed")
            .await
    }

    /// Runs `action` on a VM of ours (or a foreign one, if asked) and tells the
    /// publisher; `action` is a future, so nothing of it runs before the check.
    async fn change(
        &self,
        name: &VmName,
        foreign: bool,
        action: impl Future<Output = Result<()>>,
        done: &str,
    ) -> Result<String> {
        self.check_ours(name, foreign).await?;
        action.await?;
        self.changed.notify_one();
        Ok(format!("VM '{name}' {done}"))
    }

    /// Powers off, undefines and removes the files peervisor made for the VM.
    pub async fn remove(&self, name: &VmName, foreign: bool) -> Result<String> {
        self.check_ours(name, foreign).await?;
        self.destroy(name).await?;
        Ok(format!("VM '{name}' removed"))
    }

    /// Removes a VM without asking whose it is (a replica the provision policy
    /// placed, or every managed VM when the node stops with --destroy-vms-on-exit).
    pub async fn destroy(&self, name: &VmName) -> Result<()> {
        let disks = self.host.remove(name).await?;
        remove_vm_files(name, &disks);
        self.changed.notify_one();
        Ok(())
    }

    /// Removes every VM peervisor made here (not the adopted ones).
    pub async fn destroy_managed(&self) {
        let Ok(vms) = self.host.list().await else {
            return;
        };
        // Adopted VMs are the operator's: never destroyed with the node.
        for vm in vms.into_iter().filter(|v| v.managed && !v.adopted) {
            match self.destroy(&vm.name).await {
                Ok(()) => tracing::info!("VM '{}' destroyed", vm.name),
                Err(e) => tracing::warn!("{e:#}"),
            }
        }
    }

    /// Refuses lifecycle changes on VMs peervisor did not create, unless asked.
    async fn check_ours(&self, name: &VmName, foreign: bool) -> Result<()> {
        let vm = self.host.vm(name).await?;
        if !vm.managed && !foreign {
            bail!(
                "VM '{name}' was not created by peervisor: it is shown read-only (use --force to act on it anyway)"
            );
        }
        Ok(())
    }

    async fn ensure_ip_free(&self, ip: Ipv4Addr) -> Result<()> {
        let ip = ip.to_string();
        let vms = self.host.list().await?;
        if let Some(vm) = vms.iter().find(|v| v.ip.as_deref() == Some(ip.as_str())) {
            bail!(
                "guest address {ip} is taken by VM '{}'; try again (addresses come from the new UUID)",
                vm.name
            );
        }
        Ok(())
    }
}

/// A NIC whose guest asks DHCP for its address (a libvirt network, a host bridge).
fn dhcp_nic(uuid: &str, source: domain::NicSource) -> domain::GuestNic {
    domain::GuestNic {
        source,
        mac: domain::mac_for(uuid),
        address: None,
    }
}

/// `qemu-img create -f qcow2 <disk dir>/<name>-<uuid8>.qcow2 <mib>M`. The guest
/// formats it on first boot.
async fn create_data_disk(name: &str, uuid: &str, mib: u64) -> Result<PathBuf> {
    let dir = disk_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}-{}.qcow2", &uuid[..8]));
    let out = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&path)
        .arg(format!("{mib}M"))
        .output()
        .await
        .context("running qemu-img (install qemu-utils)")?;
    if !out.status.success() {
        bail!(
            "qemu-img create {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(path)
}

/// Deletes what peervisor made for a removed VM: its data disks (only inside
/// our disk dir, whatever the metadata says) and its console log.
fn remove_vm_files(name: &str, disks: &[String]) {
    let dir = disk_dir();
    for disk in disks {
        let path = PathBuf::from(disk);
        if path.parent() == Some(dir.as_path()) {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("removing {}: {e}", path.display());
            }
        } else {
            tracing::warn!(
                "VM '{name}': disk {disk} is outside {}: left alone",
                dir.display()
            );
        }
    }
    let _ = std::fs::remove_file(console_log_dir().join(format!("{name}.log")));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_well_formed_v4() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
        assert_ne!(u, new_uuid());
    }
}
