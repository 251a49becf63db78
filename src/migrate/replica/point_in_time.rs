//! A consistent image of a VM's data disk to replicate from, taken so that the VM
//! hardly notices.
//!
//! - A running or paused VM: its disk is frozen under an overlay (hypervisor/
//!   snapshot.rs); the replication reads the disk file itself while the guest
//!   writes to the overlay, then the overlay is merged back. No pause, whatever
//!   the size of the disk.
//! - If the overlay cannot be made (or with `Method::Pause`, the former way, kept
//!   for `bench replica-pause` and as the fallback): the VM is paused (QEMU
//!   flushes its writes when it stops), the file copied locally (sparse) and the
//!   VM resumed: a pause of about 1 s per GB of data.
//! - A stopped VM: a local copy, no pause needed (it might be started meanwhile).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::sparse;
use crate::hypervisor::Host;
use crate::hypervisor::snapshot::FrozenDisk;
use crate::model::VmState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Freeze under an overlay (falls back to `Pause` if that fails).
    Overlay,
    /// Pause, copy locally, resume.
    Pause,
}

/// The image a replication reads.
pub enum DiskImage {
    /// The VM's own disk file, frozen until `release`.
    Frozen(FrozenDisk),
    /// A local copy, deleted on `release` (or drop).
    Copy(LocalCopy),
}

pub struct LocalCopy {
    path: PathBuf,
    /// How long the VM was paused for it (None: it was not running).
    pub paused: Option<Duration>,
}

impl Drop for LocalCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How an image was taken and given back, for the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageReport {
    /// "overlay", "paused copy" or "copy" (the VM was not running).
    pub method: &'static str,
    pub paused_ms: Option<u64>,
    /// Overlay: the snapshot call, and the merge back.
    pub overlay_ms: Option<u64>,
    pub commit_ms: Option<u64>,
}

impl DiskImage {
    /// Takes an image of `disk`, a disk file of VM `vm` (in `state`).
    pub async fn take(
        host: &Host,
        vm: &str,
        state: VmState,
        disk: &Path,
        method: Method,
    ) -> Result<DiskImage> {
        let active = matches!(state, VmState::Running | VmState::Paused);
        if active && method == Method::Overlay {
            match host.freeze_disk(vm, disk).await {
                Ok(frozen) => {
                    tracing::info!(
                        "VM '{vm}': disk frozen under an overlay in {} ms; the VM runs on",
                        frozen.took.as_millis()
                    );
                    return Ok(DiskImage::Frozen(frozen));
                }
                Err(e) => tracing::warn!(
                    "VM '{vm}': no overlay ({e:#}); pausing it for a local copy instead"
                ),
            }
        }
        let pause = state == VmState::Running;
        let mut copy = LocalCopy {
            path: disk.with_file_name(format!(".{vm}-{:08x}.snapshot", rand::random::<u32>())),
            paused: None,
        };
        let started = Instant::now();
        if pause {
            host.pause(vm).await?;
        }
        let (src, dst) = (disk.to_path_buf(), copy.path.clone());
        let copied = tokio::task::spawn_blocking(move || sparse::sparse_copy(&src, &dst)).await;
        if pause && let Err(e) = host.resume(vm).await {
            tracing::error!("VM '{vm}' stays paused after its disk copy: {e:#}");
        }
        let took = started.elapsed();
        let bytes = copied?.with_context(|| format!("copying {}", disk.display()))?;
        tracing::info!(
            "VM '{vm}': consistent disk copy of {bytes} bytes, {} for {} ms",
            if pause { "paused" } else { "not running" },
            took.as_millis()
        );
        copy.paused = pause.then_some(took);
        Ok(DiskImage::Copy(copy))
    }

    /// The file to read.
    pub fn path(&self) -> &Path {
        match self {
            DiskImage::Frozen(f) => &f.disk,
            DiskImage::Copy(c) => &c.path,
        }
    }

    /// Gives the image back: the overlay merged (the VM on its disk file again),
    /// or the copy deleted.
    pub async fn release(self) -> Result<ImageReport> {
        match self {
            DiskImage::Frozen(frozen) => {
                let overlay_ms = Some(frozen.took.as_millis() as u64);
                let commit = frozen.thaw().await?;
                Ok(ImageReport {
                    method: "overlay",
                    overlay_ms,
                    commit_ms: Some(commit.as_millis() as u64),
                    paused_ms: None,
                })
            }
            DiskImage::Copy(copy) => Ok(ImageReport {
                method: if copy.paused.is_some() {
                    "paused copy"
                } else {
                    "copy"
                },
                paused_ms: copy.paused.map(|d| d.as_millis() as u64),
                ..ImageReport::default()
            }),
        }
    }
}
