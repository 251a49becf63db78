//! The data disks a live migration copies (or finds shared), both ends.
//!
//! A disk the destination finds in its own disk dir (the very file: same path,
//! device and inode) is shared and not copied. Otherwise the destination makes
//! an empty qcow2 of the same virtual size in its disk dir before anything moves
//! and deletes it if the VM does not arrive; QEMU's NBD disk mirror then rides
//! the disks channel (`tunnel.rs`), and the source deletes its own file only
//! once the destination has confirmed that the VM runs there. A node killed
//! mid-transfer deletes the files it made when it starts again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, bail};

use super::Migrations;
use crate::hypervisor::domain::xml_escape;
use crate::node::protocol::DiskOffer;
use crate::paths::disk_dir;

/// Bounds on what a source may offer.
const MAX_DISKS: usize = 8;

/// What the destination does with the VM's disks.
#[derive(Debug, Default, PartialEq)]
pub enum DiskPlan {
    /// No disk, or every disk is the very file the destination has in its own
    /// disk dir.
    #[default]
    Shared,
    /// Files to make here, one per offered disk, with their virtual sizes.
    Copy(Vec<(PathBuf, u64)>),
}

impl Migrations {
    /// Source side: the VM's disk files as the destination needs to know them.
    /// A file this node cannot read (a foreign VM's, elsewhere) is offered with
    /// what is known; the destination then copies it, as libvirt would.
    pub(super) async fn disk_offers(&self, vm: &str) -> Result<Vec<DiskOffer>> {
        use std::os::unix::fs::MetadataExt;
        let footprint = self.host.footprint(vm).await?;
        Ok(footprint
            .disks
            .iter()
            .map(|path| {
                let meta = std::fs::metadata(path).ok();
                DiskOffer {
                    path: path.to_string_lossy().into_owned(),
                    virtual_bytes: crate::hypervisor::footprint::virtual_bytes(path).unwrap_or(0),
                    file_id: meta.map(|m| (m.dev(), m.ino())),
                    base_sha256: crate::image::disk::base_checksum(path),
                }
            })
            .collect())
    }
}

impl Migrations {
    /// Destination side: the VM did not arrive; deletes the files made for its
    /// disks, unless a VM of that name is defined here after all (then they are
    /// its disks: kept, and said so).
    pub(super) async fn discard_disks(&self, vm: &str, made: &[PathBuf]) {
        discard(self.host.clone(), vm.to_string(), made.to_vec()).await;
        self.forget_made_disks(vm);
    }

    /// The same, from code that cannot wait.
    pub(super) fn discard_disks_later(&self, vm: &str, made: &[PathBuf]) {
        if !made.is_empty() {
            tokio::spawn(discard(self.host.clone(), vm.to_string(), made.to_vec()));
            self.forget_made_disks(vm);
        }
    }

    /// Source side, after a migration that copied disks: deletes this peer's copy
    /// once the destination confirmed the VM runs there; otherwise keeps it.
    pub(super) fn remove_moved_disks(
        &self,
        vm: &str,
        dest_name: &str,
        copies: &[(String, String)],
        confirmed: bool,
    ) {
        if copies.is_empty() {
            return;
        }
        if confirmed {
            remove_disks(copies.iter().map(|(from, _)| Path::new(from.as_str())));
        } else {
            for (from, _) in copies {
                tracing::warn!(
                    "VM '{vm}' moved to {dest_name}, which did not confirm it runs there: kept {from} (delete it once it does)"
                );
            }
        }
    }
}

/// Destination side: files made for incoming VMs are listed under the data dir
/// until the VM arrived or they are deleted, so that a node killed mid-transfer
/// deletes them when it starts again (`sweep_half_made_disks`).
pub(super) const LEDGER: &str = "incoming-disks";

impl Migrations {
    /// One file per incoming VM (names are checked, and one VM of a name
    /// arrives at a time).
    fn ledger_file(&self, vm: &str) -> PathBuf {
        self.ledger_dir.join(vm)
    }

    /// Lists the files made for an incoming VM.
    pub(super) fn note_made_disks(&self, vm: &str, made: &[PathBuf]) {
        if made.is_empty() {
            return;
        }
        let file = self.ledger_file(vm);
        let text: String = made.iter().map(|p| format!("{}\n", p.display())).collect();
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&file, text));
        if let Err(e) = written {
            tracing::warn!("recording {}: {e}", file.display());
        }
    }

    /// The migration is settled: its files are the VM's or gone.
    pub(super) fn forget_made_disks(&self, vm: &str) {
        let _ = std::fs::remove_file(self.ledger_file(vm));
    }

    /// At start: deletes files made for incoming VMs that never arrived (the node
    /// was killed mid-transfer); files a VM defined here uses are kept.
    pub(super) async fn sweep_half_made_disks(self: Arc<Self>) {
        let Ok(entries) = std::fs::read_dir(&self.ledger_dir) else {
            return;
        };
        let in_use = match self.disks_in_use().await {
            Ok(disks) => disks,
            Err(e) => {
                tracing::warn!("not sweeping half-made disks: {e:#}");
                return;
            }
        };
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let orphans: Vec<&Path> = text
                .lines()
                .map(Path::new)
                .filter(|p| !in_use.iter().any(|u| u == p))
                .collect();
            if !orphans.is_empty() {
                tracing::info!("deleting disk files of a migration that never arrived");
                remove_disks(orphans);
            }
            let _ = std::fs::remove_file(entry.path());
        }
    }

    async fn disks_in_use(&self) -> Result<Vec<PathBuf>> {
        let mut disks = Vec::new();
        for vm in self.host.list().await? {
            disks.extend(self.host.footprint(&vm.name).await?.disks);
        }
        Ok(disks)
    }
}

async fn discard(host: crate::hypervisor::Host, vm: String, made: Vec<PathBuf>) {
    if made.is_empty() {
        return;
    }
    if host.vm(&vm).await.is_ok() {
        tracing::warn!(
            "VM '{vm}' is defined here although its migration failed: kept its disks {made:?}"
        );
        return;
    }
    remove_disks(made.iter().map(PathBuf::as_path));
}

/// Source side: pairs each offered disk with the file the destination made.
pub fn pair_copies(offers: &[DiskOffer], made: Vec<String>) -> Result<Vec<(String, String)>> {
    if made.is_empty() {
        return Ok(Vec::new());
    }
    if made.len() != offers.len() {
        bail!(
            "the destination made {} disk file(s) for {} disk(s)",
            made.len(),
            offers.len()
        );
    }
    Ok(offers.iter().map(|o| o.path.clone()).zip(made).collect())
}

/// Destination side: shared disks, or the files to make for a copy. Checks, before
/// anything is made, that the files are free to take and that the filesystem
/// holds the disks' virtual size now (a copy fills at most that; the free space
/// is read at each request, not at start).
pub fn plan_disks(
    dir: &Path,
    vm: &str,
    uuid: &str,
    offers: &[DiskOffer],
) -> Result<DiskPlan, String> {
    if offers.is_empty() {
        return Ok(DiskPlan::Shared);
    }
    if offers.len() > MAX_DISKS || offers.iter().any(|d| d.path.len() > 4096) {
        return Err("malformed request: too many or too long disk paths".into());
    }
    if offers.iter().all(|offer| is_shared_here(offer, dir)) {
        return Ok(DiskPlan::Shared);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let stem: String = uuid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect();
    let mut files = Vec::new();
    for (i, offer) in offers.iter().enumerate() {
        let name = match i {
            0 => format!("{vm}-{stem}.qcow2"),
            i => format!("{vm}-{stem}-{i}.qcow2"),
        };
        let path = dir.join(name);
        if path.exists() {
            return Err(format!(
                "{} exists already here: remove it, or migrate to another peer",
                path.display()
            ));
        }
        files.push((path, offer.virtual_bytes));
    }
    // Sizes from the other peer: a sum past u64 is refused, not wrapped.
    let needed = offers
        .iter()
        .try_fold(0u64, |sum, d| sum.checked_add(d.virtual_bytes))
        .ok_or("malformed request: the disks' sizes add up past 2^64 bytes")?;
    let free_mib = super::capacity::free_mib_under(dir)
        .ok_or_else(|| format!("cannot read the free space of {}", dir.display()))?;
    if needed.div_ceil(1 << 20) > free_mib {
        return Err(format!(
            "needs {} MiB free in {} for the copy of its disks (virtual size), {free_mib} MiB free",
            needed.div_ceil(1 << 20),
            dir.display(),
        ));
    }
    Ok(DiskPlan::Copy(files))
}

/// The offered disk lies in this peer's disk dir and is the very file the source
/// has (same device and inode): the peers share the storage. A file this host
/// can merely see elsewhere (another peer's disk dir on the same machine) is
/// not its storage: it is copied.
fn is_shared_here(offer: &DiskOffer, dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(id) = offer.file_id else {
        return false;
    };
    let path = Path::new(&offer.path);
    path.parent() == Some(dir) && std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == id)
}

/// Destination side: the base images under `image_dir` the offered overlays
/// can sit on here (matched by checksum), one per offer (None: a disk with no
/// base); None when some overlay's base is not here (then every disk is copied
/// whole).
pub fn local_bases(
    image_dir: &Path,
    offers: &[DiskOffer],
) -> Option<Vec<Option<(PathBuf, String)>>> {
    offers
        .iter()
        .map(|offer| match &offer.base_sha256 {
            None => Some(None),
            Some(sha) => crate::image::disk::find_by_checksum(image_dir, sha).map(Some),
        })
        .collect()
}

/// Destination side: makes the qcow2 files of a copy: empty ones, or overlays on
/// the local base images (`bases`, one per file); on failure removes what it made.
pub async fn make_disks(
    files: &[(PathBuf, u64)],
    bases: Option<&[Option<(PathBuf, String)>]>,
) -> Result<(), String> {
    for (i, (path, bytes)) in files.iter().enumerate() {
        let mut cmd = tokio::process::Command::new("qemu-img");
        cmd.args(["create", "-q", "-f", "qcow2"]);
        if let Some((base, format)) = bases.and_then(|b| b.get(i)).and_then(Option::as_ref) {
            cmd.arg("-b").arg(base).args(["-F", format]);
        }
        let out = cmd.arg(path).arg(bytes.to_string()).output().await;
        let failed = match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Some(format!("running qemu-img: {e}")),
        };
        if let Some(why) = failed {
            remove_disks(files[..=i].iter().map(|(p, _)| p.as_path()));
            return Err(format!("cannot make {}: {why}", path.display()));
        }
    }
    Ok(())
}

/// Deletes disk files peervisor made (only inside its disk dir).
pub fn remove_disks<'a>(paths: impl IntoIterator<Item = &'a Path>) {
    let dir = disk_dir();
    for path in paths {
        if path.parent() != Some(dir.as_path()) {
            tracing::warn!(
                "{} is outside {}: left alone",
                path.display(),
                dir.display()
            );
            continue;
        }
        match std::fs::remove_file(path) {
            Ok(()) => tracing::info!("removed {}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("removing {}: {e}", path.display()),
        }
    }
}

/// The destination's definition: the source's with each disk file renamed
/// (in `<source file=…>` and in peervisor's metadata alike).
pub fn with_disks_renamed(xml: &str, copies: &[(String, String)]) -> Result<String> {
    let mut out = xml.to_string();
    for (from, to) in copies {
        let (from, to) = (xml_escape(from), xml_escape(to));
        if !out.contains(&from) {
            bail!("disk {from} is not in the VM's definition");
        }
        out = out.replace(&from, &to);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_destination_definition_names_the_new_files() {
        let xml = "<domain><metadata><pv:vm><pv:disk>/a/web-1.qcow2</pv:disk></pv:vm></metadata>\
                   <devices><disk><source file='/a/web-1.qcow2'/></disk></devices></domain>";
        let copies = [("/a/web-1.qcow2".to_string(), "/b/web-1.qcow2".to_string())];
        let renamed = with_disks_renamed(xml, &copies).unwrap();
        assert!(!renamed.contains("/a/"), "{renamed}");
        assert_eq!(renamed.matches("/b/web-1.qcow2").count(), 2);
        let missing = [("/c/x.qcow2".to_string(), "/b/x.qcow2".to_string())];
        assert!(with_disks_renamed(xml, &missing).is_err());
    }

    fn offer(path: &Path, virtual_bytes: u64) -> DiskOffer {
        DiskOffer {
            path: path.to_string_lossy().into_owned(),
            virtual_bytes,
            file_id: None,
            base_sha256: None,
        }
    }

    #[test]
    fn the_destination_plans_files_of_its_own_and_refuses_what_does_not_fit() {
        let source = tempfile::tempdir().unwrap();
        let here = tempfile::tempdir().unwrap();
        let uuid = "6f1c0d1e-0000-4000-8000-000000000001";
        let disk = source.path().join("web-1-6f1c0d1e.qcow2");

        assert_eq!(
            plan_disks(here.path(), "web-1", uuid, &[]),
            Ok(DiskPlan::Shared)
        );
        let plan = plan_disks(here.path(), "web-1", uuid, &[offer(&disk, 64 << 20)]);
        assert_eq!(
            plan,
            Ok(DiskPlan::Copy(vec![(
                here.path().join("web-1-6f1c0d1e.qcow2"),
                64 << 20
            )]))
        );

        let huge = plan_disks(here.path(), "web-1", uuid, &[offer(&disk, 1 << 60)]).unwrap_err();
        assert!(
            huge.starts_with("needs 1099511627776 MiB free in") && huge.contains("(virtual size)"),
            "{huge}"
        );

        std::fs::write(here.path().join("web-1-6f1c0d1e.qcow2"), b"").unwrap();
        let taken = plan_disks(here.path(), "web-1", uuid, &[offer(&disk, 1 << 20)]).unwrap_err();
        assert!(taken.contains("exists already here"), "{taken}");

        let many = vec![offer(&disk, 1); MAX_DISKS + 1];
        assert!(
            plan_disks(here.path(), "web-1", uuid, &many)
                .unwrap_err()
                .contains("malformed")
        );
    }

    #[test]
    fn only_the_same_file_in_the_destinations_disk_dir_is_shared() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.qcow2");
        std::fs::write(&path, b"x").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let mut offer = DiskOffer {
            path: path.to_string_lossy().into_owned(),
            virtual_bytes: 1 << 20,
            file_id: Some((meta.dev(), meta.ino())),
            base_sha256: None,
        };
        assert!(is_shared_here(&offer, dir.path()));
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(
            !is_shared_here(&offer, elsewhere.path()),
            "visible, but not in this peer's disk dir"
        );
        offer.file_id = Some((meta.dev(), meta.ino() + 1));
        assert!(
            !is_shared_here(&offer, dir.path()),
            "another file at the same path"
        );
        offer.file_id = None;
        assert!(!is_shared_here(&offer, dir.path()));
    }
}
