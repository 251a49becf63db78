//! Disk images: the guest image turned into a bootable qcow2 disk (syslinux on
//! a FAT "superfloppy": no partition table, no loop device, no root needed),
//! imported base images kept with their checksum (`<image dir>/disks/NAME.qcow2`
//! and `NAME.sha256`), and a copy-on-write overlay on one for each VM.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};

/// Where imported base images are kept, under the image dir.
const DISKS: &str = "disks";
/// The FAT volume holding kernel, initramfs and syslinux: 64 MiB fits the
/// 10 MiB of boot files with room for a bigger kernel.
const BOOT_DISK_MIB: u64 = 64;

/// A disk image as `qemu-img info` sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskInfo {
    pub format: String,
    pub virtual_size: u64,
    pub actual_size: u64,
}

/// Checks that `path` is a disk image QEMU can read (qcow2 or raw) and, for
/// qcow2, that its metadata is consistent (`qemu-img check`).
pub fn inspect(path: &Path) -> Result<DiskInfo> {
    if !path.is_file() {
        bail!("disk image {} not found", path.display());
    }
    let out = qemu_img(&["info", "--output=json", &path.to_string_lossy()])
        .map_err(|e| anyhow!("{}: not a disk image QEMU can open ({e})", path.display()))?;
    let info: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| anyhow!("{}: qemu-img info: {e}", path.display()))?;
    let format = info["format"].as_str().unwrap_or("").to_string();
    let named_qcow2 = path.extension().is_some_and(|e| e == "qcow2");
    if named_qcow2 && format != "qcow2" {
        bail!(
            "{}: not a qcow2 image (no qcow2 header; qemu-img sees {format} data)",
            path.display()
        );
    }
    if format != "qcow2" && format != "raw" {
        bail!(
            "{}: a {format} file, not a qcow2 or raw disk image",
            path.display()
        );
    }
    if format == "qcow2" {
        qemu_img(&["check", "-q", &path.to_string_lossy()])
            .map_err(|e| anyhow!("{}: corrupt qcow2 image: {e}", path.display()))?;
    }
    Ok(DiskInfo {
        format,
        virtual_size: info["virtual-size"].as_u64().unwrap_or(0),
        actual_size: info["actual-size"].as_u64().unwrap_or(0),
    })
}

/// `qemu-img ARGS`: its stdout, or an error with its first stderr line.
fn qemu_img(args: &[&str]) -> Result<String> {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .context("running qemu-img (qemu-utils)")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("failed");
        bail!("{}", line.trim().trim_start_matches("qemu-img: "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// An imported base image.
#[derive(Debug, Clone)]
pub struct Imported {
    pub name: String,
    pub path: PathBuf,
    pub info: DiskInfo,
    pub sha256: String,
}

/// Copies `file` into the image dir as base image `name`, with its checksum.
/// Nothing is kept if it is not a readable, consistent disk image.
pub fn import(image_dir: &Path, file: &Path, name: &str) -> Result<Imported> {
    super::validate_name(name)?;
    let info = inspect(file)?;
    let dir = image_dir.join(DISKS);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.{}", info.format));
    if base_path(image_dir, name).is_some() {
        bail!(
            "a disk image named '{name}' exists already in {}",
            dir.display()
        );
    }
    let partial = dir.join(format!(".{name}.partial"));
    fs::copy(file, &partial).with_context(|| format!("copying {}", file.display()))?;
    let sha256 = sha256_file(&partial)?;
    fs::write(dir.join(format!("{name}.sha256")), format!("{sha256}\n"))?;
    fs::rename(&partial, &path)?;
    Ok(Imported {
        name: name.to_string(),
        path,
        info,
        sha256,
    })
}

/// The imported base image `name`, if any.
fn base_path(image_dir: &Path, name: &str) -> Option<PathBuf> {
    ["qcow2", "raw"]
        .iter()
        .map(|ext| image_dir.join(DISKS).join(format!("{name}.{ext}")))
        .find(|p| p.is_file())
}

/// A VM's disk image as the operator names it: an imported base image's name,
/// or a path (anything with a '/'); checked readable, and an imported one
/// against its recorded checksum.
pub fn resolve(image_dir: &Path, image: &str) -> Result<(PathBuf, DiskInfo)> {
    if image.contains('/') {
        let path = PathBuf::from(image);
        let info = inspect(&path)?;
        return Ok((path, info));
    }
    super::validate_name(image)?;
    let Some(path) = base_path(image_dir, image) else {
        let known = imported_names(image_dir);
        if known.is_empty() {
            bail!("no disk image named '{image}' (none imported: peervisor image import FILE)");
        }
        bail!(
            "no disk image named '{image}' (imported: {})",
            known.join(", ")
        );
    };
    // The checksum first: a changed image is named as such, whatever else.
    let recorded = fs::read_to_string(image_dir.join(DISKS).join(format!("{image}.sha256")))
        .unwrap_or_default();
    let actual = sha256_file(&path)?;
    if recorded.trim() != actual {
        bail!(
            "disk image '{image}' changed since it was imported (checksum {} recorded, {} now)",
            short(recorded.trim()),
            short(&actual)
        );
    }
    let info = inspect(&path)?;
    Ok((path, info))
}

/// The SHA-256 of the base image `overlay` sits on (None: no base, or not
/// readable here): the checksum recorded beside an imported image
/// (`NAME.sha256`), else computed.
pub fn base_checksum(overlay: &Path) -> Option<String> {
    // -U: the overlay is open in the running VM's QEMU, which holds its lock.
    let out = qemu_img(&["info", "-U", "--output=json", &overlay.to_string_lossy()]).ok()?;
    let info: serde_json::Value = serde_json::from_str(&out).ok()?;
    let base = info["full-backing-filename"]
        .as_str()
        .or_else(|| info["backing-filename"].as_str())?;
    let base = Path::new(base);
    let recorded = fs::read_to_string(base.with_extension("sha256"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| s.len() == 64);
    recorded.or_else(|| sha256_file(base).ok())
}

/// The imported base image with checksum `sha256` under `image_dir`, and its
/// format (as recorded at import; the file is not hashed again).
pub fn find_by_checksum(image_dir: &Path, sha256: &str) -> Option<(PathBuf, String)> {
    imported_names(image_dir).into_iter().find_map(|name| {
        let recorded = fs::read_to_string(image_dir.join(DISKS).join(format!("{name}.sha256")))
            .unwrap_or_default();
        if recorded.trim() != sha256 {
            return None;
        }
        let path = base_path(image_dir, &name)?;
        let format = path.extension()?.to_string_lossy().into_owned();
        Some((path, format))
    })
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn imported_names(image_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(image_dir.join(DISKS))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (stem, ext) = name.rsplit_once('.')?;
            (["qcow2", "raw"].contains(&ext) && !stem.starts_with('.')).then(|| stem.to_string())
        })
        .collect();
    names.sort();
    names
}

/// A copy-on-write overlay on `base` at `overlay` (qcow2): the VM writes there,
/// the base image stays as imported and can back many VMs.
pub fn create_overlay(base: &Path, base_format: &str, overlay: &Path) -> Result<()> {
    let base = base
        .canonicalize()
        .with_context(|| format!("resolving {}", base.display()))?;
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        &base.to_string_lossy(),
        "-F",
        base_format,
        &overlay.to_string_lossy(),
    ])
    .map(|_| ())
    .map_err(|e| anyhow!("creating overlay {}: {e}", overlay.display()))
}

/// The guest image (`dir`: its vmlinuz and initrd.img) as a bootable qcow2
/// disk at `out`: syslinux boots the kernel with `pv.ip=dhcp pv.boot=disk` (the
/// init then leaves the boot disk alone). Needs syslinux, mtools, dosfstools.
pub fn build_boot_disk(dir: &Path, out: &Path) -> Result<()> {
    for tool in ["syslinux", "mcopy", "mkfs.vfat"] {
        if which(tool).is_none() {
            bail!("{tool} not found: install syslinux, mtools and dosfstools (scripts/setup.sh)");
        }
    }
    let raw = out.with_extension("raw.partial");
    let _ = fs::remove_file(&raw);
    let file = fs::File::create(&raw).with_context(|| format!("creating {}", raw.display()))?;
    file.set_len(BOOT_DISK_MIB << 20)?;
    drop(file);
    let cfg = dir.join("syslinux.cfg");
    fs::write(
        &cfg,
        "DEFAULT pv\nLABEL pv\n  KERNEL vmlinuz\n  APPEND initrd=initrd.img console=ttyS0 quiet panic=-1 pv.ip=dhcp pv.boot=disk\n",
    )?;
    let raw_s = raw.to_string_lossy().into_owned();
    let steps: Vec<Vec<String>> = vec![
        vec![
            "mkfs.vfat".into(),
            "-n".into(),
            "PVBOOT".into(),
            raw_s.clone(),
        ],
        mcopy(&raw_s, &dir.join("vmlinuz"), "vmlinuz"),
        mcopy(&raw_s, &dir.join("initrd.img"), "initrd.img"),
        mcopy(&raw_s, &cfg, "syslinux.cfg"),
        vec!["syslinux".into(), "--install".into(), raw_s.clone()],
        vec![
            "qemu-img".into(),
            "convert".into(),
            "-f".into(),
            "raw".into(),
            "-O".into(),
            "qcow2".into(),
            raw_s.clone(),
            out.to_string_lossy().into_owned(),
        ],
    ];
    let result = steps.iter().try_for_each(|step| {
        let out = Command::new(&step[0])
            .args(&step[1..])
            .output()
            .with_context(|| format!("running {}", step[0]))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}",
                step.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    });
    let _ = fs::remove_file(&raw);
    let _ = fs::remove_file(&cfg);
    result
}

fn mcopy(raw: &str, from: &Path, to: &str) -> Vec<String> {
    vec![
        "mcopy".into(),
        "-i".into(),
        raw.into(),
        from.to_string_lossy().into_owned(),
        format!("::{to}"),
    ]
}

fn which(tool: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_imported_image_is_kept_with_its_checksum_and_checked_on_use() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("base.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", &src.to_string_lossy(), "16M"]).unwrap();
        let images = dir.path().join("images");
        let imported = import(&images, &src, "base").unwrap();
        assert_eq!(imported.info.format, "qcow2");
        assert_eq!(imported.sha256, sha256_file(&src).unwrap());
        let (path, info) = resolve(&images, "base").unwrap();
        assert_eq!((path, info.virtual_size), (imported.path.clone(), 16 << 20));
        let again = import(&images, &src, "base").unwrap_err().to_string();
        assert!(again.contains("exists already"), "{again}");
        let missing = resolve(&images, "other").unwrap_err().to_string();
        assert_eq!(missing, "no disk image named 'other' (imported: base)");

        // An overlay backs onto it and leaves it as it was.
        let overlay = dir.path().join("vm.qcow2");
        create_overlay(&imported.path, "qcow2", &overlay).unwrap();
        assert_eq!(inspect(&overlay).unwrap().format, "qcow2");

        // Changed after the import: refused with both checksums.
        let mut bytes = fs::read(&imported.path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&imported.path, bytes).unwrap();
        let changed = resolve(&images, "base").unwrap_err().to_string();
        assert!(
            changed.contains("changed since it was imported"),
            "{changed}"
        );
    }

    #[test]
    fn garbage_and_missing_files_are_not_disk_images() {
        let dir = tempfile::tempdir().unwrap();
        let missing = inspect(&dir.path().join("nope.qcow2"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("not found"), "{missing}");
        // A qcow2 header over garbage: qemu-img cannot open it.
        let bad = dir.path().join("bad.qcow2");
        let mut bytes = b"QFI\xfb\x00\x00\x00\x03".to_vec();
        bytes.extend(std::iter::repeat_n(0xa5u8, 4096));
        fs::write(&bad, bytes).unwrap();
        let err = inspect(&bad).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:", bad.display())), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let images = dir.path().join("images");
        assert!(import(&images, &bad, "bad").is_err());
        let text = dir.path().join("notes.qcow2");
        fs::write(&text, "not an image\n").unwrap();
        let err = inspect(&text).unwrap_err().to_string();
        assert!(err.contains("not a qcow2 image"), "{err}");
        assert!(!images.join("disks").join("bad.qcow2").exists());
    }
}
