//! The initramfs: busybox-static, our /init and the kernel modules it loads,
//! packed with `busybox cpio -o -H newc | gzip`.

use super::kernel::Extracted;
use super::{GUEST_INIT, GUEST_ROOTFS};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// virtio networking, in load order (each after its dependencies).
pub const NET_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// A virtio data disk with ext4 (about 1 MB compressed); optional, so a kernel
/// without them still gives a working network guest.
pub const DISK_MODULES: &[&str] = &[
    "crc16",
    "mbcache",
    "jbd2",
    "crc32c_generic",
    "ext4",
    "virtio_blk",
];

/// A cloud-init seed volume (FAT, or ISO 9660 as cloud-localds makes it);
/// optional: without them a seed is not read.
pub const SEED_MODULES: &[&str] = &[
    "fat",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "cdrom",
    "isofs",
];

/// The ACPI power button as an input device, so the guest hears a graceful
/// shutdown request; optional (without them, stopping means powering off).
pub const ACPI_MODULES: &[&str] = &["button", "evdev"];

/// Where busybox-static puts its binary (before and after usrmerge).
const BUSYBOX_PATHS: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// The host's busybox, which must be static: the initramfs has no libc.
pub fn busybox_path() -> Result<PathBuf> {
    let path = BUSYBOX_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!("busybox not found: run scripts/setup.sh (installs busybox-static)")
        })?;
    if !is_static_elf(&path)? {
        bail!(
            "{} is dynamically linked: install busybox-static (scripts/setup.sh)",
            path.display()
        );
    }
    Ok(path)
}

/// A 64-bit little-endian ELF without a PT_INTERP program header.
fn is_static_elf(path: &Path) -> Result<bool> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .with_context(|| format!("reading {}", path.display()))?;
    let bad = || anyhow!("{} is not a 64-bit little-endian ELF", path.display());
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return Err(bad());
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().map_err(|_| bad())?) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        let p_type = data.get(off..off + 4).ok_or_else(bad)?;
        if p_type == 3u32.to_le_bytes() {
            return Ok(false); // PT_INTERP: needs a dynamic loader
        }
    }
    Ok(true)
}

/// Assembles the tree in `tree` and packs it into `out`. Returns the modules
/// included, in load order.
pub fn build(kernel: &Extracted, busybox: &Path, tree: &Path, out: &Path) -> Result<Vec<String>> {
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "etc",
        "lib/modules",
        "root",
    ] {
        let p = tree.join(d);
        fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    }
    write_file(&tree.join("init"), GUEST_INIT.as_bytes(), 0o755)?;
    for (path, bytes, mode) in GUEST_ROOTFS {
        let dest = tree.join(path);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        write_file(&dest, bytes, *mode)?;
    }
    let bb = tree.join("bin/busybox");
    fs::copy(busybox, &bb).with_context(|| format!("copying {}", busybox.display()))?;
    set_mode(&bb, 0o755)?;
    let modules = copy_modules(kernel, busybox, &tree.join("lib/modules"))?;
    let list: String = modules.iter().map(|m| format!("{m}\n")).collect();
    write_file(&tree.join("etc/modules"), list.as_bytes(), 0o644)?;
    pack(busybox, tree, out)?;
    Ok(modules)
}

/// Copies (decompressing) the wanted modules as `<dest>/<name>.ko`.
fn copy_modules(kernel: &Extracted, busybox: &Path, dest: &Path) -> Result<Vec<String>> {
    let index = index_modules(&kernel.modules_dir.join("kernel"))?;
    let builtin = builtin_modules(&kernel.modules_dir)?;
    let mut included = Vec::new();
    let wanted = NET_MODULES
        .iter()
        .map(|m| (m, true))
        .chain(DISK_MODULES.iter().map(|m| (m, false)))
        .chain(ACPI_MODULES.iter().map(|m| (m, false)))
        .chain(SEED_MODULES.iter().map(|m| (m, false)));
    for (&name, required) in wanted {
        match index.get(name) {
            Some(src) => {
                install_module(busybox, src, &dest.join(format!("{name}.ko")))?;
                included.push(name.to_string());
            }
            None if builtin.contains(name) => {} // compiled into the kernel
            None if required => bail!(
                "module {name} is neither in {} nor built in",
                kernel.modules_dir.display()
            ),
            None => tracing::warn!(module = name, "optional guest module missing; skipped"),
        }
    }
    Ok(included)
}

/// Module name ('-' folded to '_') -> file, for every module under `dir`.
fn index_modules(dir: &Path) -> Result<HashMap<String, PathBuf>> {
    let mut index = HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)
            .with_context(|| format!("reading {}", d.display()))?
            .flatten()
        {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = module_name(&path) {
                index.insert(name, path);
            }
        }
    }
    Ok(index)
}

/// `foo-bar.ko[.xz|.gz|.zst]` -> `foo_bar`.
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = [".ko", ".ko.xz", ".ko.gz", ".ko.zst"]
        .iter()
        .find_map(|s| file.strip_suffix(s))?;
    Some(stem.replace('-', "_"))
}

fn builtin_modules(modules_dir: &Path) -> Result<HashSet<String>> {
    let path = modules_dir.join("modules.builtin");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| module_name(Path::new(l.trim())))
        .collect())
}

/// Copies a module, decompressing it: the guest's busybox insmod wants plain .ko.
fn install_module(busybox: &Path, src: &Path, dest: &Path) -> Result<()> {
    let name = src.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else if name.ends_with(".zst") {
        // Ubuntu 24.04's modules; busybox has no zstd, ruzstd decodes in-process.
        return unzstd(src, dest);
    } else {
        None
    };
    match tool {
        None => {
            fs::copy(src, dest).with_context(|| format!("copying {name}"))?;
        }
        Some(tool) => {
            let out = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
            let status = Command::new(busybox)
                .args([tool, "-dc"])
                .arg(src)
                .stdout(out)
                .status()
                .with_context(|| format!("running busybox {tool} -dc {name}"))?;
            if !status.success() {
                bail!("busybox {tool} -dc {name} failed ({status})");
            }
        }
    }
    Ok(())
}

fn unzstd(src: &Path, dest: &Path) -> Result<()> {
    let file = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let mut decoder = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(file))
        .map_err(|e| anyhow!("{}: not a zstd frame: {e}", src.display()))?;
    let mut out = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    std::io::copy(&mut decoder, &mut out)
        .with_context(|| format!("decompressing {}", src.display()))?;
    Ok(())
}

/// `busybox cpio -o -H newc | gzip -9n > out`, paths relative to `tree`.
fn pack(busybox: &Path, tree: &Path, out: &Path) -> Result<()> {
    let mut paths = Vec::new();
    list_tree(tree, Path::new("."), &mut paths)?;
    paths.sort();
    let out_file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cpio = Command::new(busybox)
        .args(["cpio", "-o", "-H", "newc"])
        .current_dir(tree)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null()) // it prints a block count
        .spawn()
        .context("running busybox cpio")?;
    let cpio_out = cpio.stdout.take().context("busybox cpio stdout")?;
    let mut gzip = Command::new("gzip")
        .args(["-9", "-n"])
        .stdin(cpio_out)
        .stdout(out_file)
        .spawn()
        .context("running gzip")?;
    {
        let mut stdin = cpio.stdin.take().context("busybox cpio stdin")?;
        let list: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
        stdin
            .write_all(list.as_bytes())
            .context("writing the file list to busybox cpio")?;
    }
    let cpio_status = cpio.wait().context("waiting for busybox cpio")?;
    let gzip_status = gzip.wait().context("waiting for gzip")?;
    if !cpio_status.success() || !gzip_status.success() {
        bail!(
            "packing {}: busybox cpio {cpio_status}, gzip {gzip_status}",
            out.display()
        );
    }
    Ok(())
}

fn list_tree(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    out.push(rel.to_path_buf());
    let dir = root.join(rel);
    if !dir.is_dir() {
        return Ok(());
    }
    for e in fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
    {
        list_tree(root, &rel.join(e.file_name()), out)?;
    }
    Ok(())
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_fold_dashes_and_suffixes() {
        assert_eq!(
            module_name(Path::new("a/crc32c-intel.ko")).as_deref(),
            Some("crc32c_intel")
        );
        assert_eq!(
            module_name(Path::new("virtio_net.ko.xz")).as_deref(),
            Some("virtio_net")
        );
        assert_eq!(module_name(Path::new("modules.order")), None);
    }

    /// Ubuntu's layout: the virtio drivers built in (modules.builtin), the rest
    /// zstd-compressed (`.ko.zst`, Ubuntu 24.04), copied decompressed.
    #[test]
    fn ubuntu_style_modules_builtin_or_zstd_compressed() {
        let tmp = tempfile::tempdir().unwrap();
        let modules_dir = tmp.path().join("lib/modules/6.8.0-88-generic");
        let fat = modules_dir.join("kernel/fs/fat");
        fs::create_dir_all(&fat).unwrap();
        let builtin: String = NET_MODULES
            .iter()
            .chain(["ext4", "virtio_blk"].iter())
            .map(|m| format!("kernel/drivers/x/{m}.ko\n"))
            .collect();
        fs::write(modules_dir.join("modules.builtin"), builtin).unwrap();
        let plain = b"\x7fELF a vfat module".repeat(100);
        let packed = ruzstd::encoding::compress_to_vec(
            &plain[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        fs::write(fat.join("vfat.ko.zst"), &packed).unwrap();
        fs::write(fat.join("fat.ko.zst"), b"not zstd at all").unwrap();
        let kernel = Extracted {
            vmlinuz: tmp.path().join("vmlinuz"),
            kernel_version: "6.8.0-88-generic".into(),
            modules_dir: modules_dir.clone(),
        };
        let busybox = busybox_path().unwrap();
        let dest = tmp.path().join("out");
        fs::create_dir_all(&dest).unwrap();
        // A corrupt module is an error naming it, not a panic.
        let err = copy_modules(&kernel, &busybox, &dest).unwrap_err();
        assert!(
            format!("{err:#}").contains("fat.ko.zst: not a zstd frame"),
            "{err:#}"
        );
        fs::remove_file(fat.join("fat.ko.zst")).unwrap();
        let included = copy_modules(&kernel, &busybox, &dest).unwrap();
        assert_eq!(included, ["vfat"], "the rest are built in or optional");
        assert_eq!(fs::read(dest.join("vfat.ko")).unwrap(), plain);
    }

    #[test]
    fn host_busybox_is_static() {
        // The guest image needs it: a missing or dynamic busybox fails here with
        // the set-up hint, not later in a guest test.
        let p = busybox_path().unwrap_or_else(|e| panic!("{e:#}"));
        assert!(is_static_elf(&p).unwrap());
        assert!(!is_static_elf(Path::new("/bin/sh")).unwrap_or(false));
    }
}
