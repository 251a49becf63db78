//! The guest image: a Debian kernel (extracted, not installed) and an initramfs
//! (busybox-static + our `/init` + virtio modules). Built locally from Debian
//! packages, cached per name under an image dir, rebuilt when an input changes.
//!
//! Layout: `<image_dir>/<name>/{vmlinuz, [vmlinux], initrd.img, image.json}`;
//! `vmlinux` (the uncompressed kernel, for PVH direct boot) is booted when present.
//! `<image_dir>/.lock` serialises builds across processes.

pub mod cloud_init;
pub mod disk;
pub mod initramfs;
mod kernel;
mod pvh;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The guest's `/init`, baked into the binary so the image needs no source tree.
pub const GUEST_INIT: &str = include_str!("../../assets/guest/init");

// Files laid into the guest as they are (assets/guest/rootfs/), embedded by build.rs.
include!(concat!(env!("OUT_DIR"), "/guest_rootfs.rs"));

/// Bumped when the build recipe changes in a way the other inputs do not show.
const RECIPE_VERSION: u32 = 3;

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub name: String,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            name: "peervisor-guest".into(),
        }
    }
}

/// A built image, ready for direct kernel boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub dir: PathBuf,
    /// What the VM boots: `vmlinux` (PVH) if the image has one, else `vmlinuz`.
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// True when `kernel` is the uncompressed PVH ELF.
    pub pvh: bool,
    pub kernel_version: String,
    /// vmlinuz + initrd.img.
    pub size_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct BuildReport {
    pub image: Image,
    /// false: the cached image was up to date.
    pub built: bool,
    pub seconds: f64,
}

/// What image.json records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    name: String,
    kernel_version: String,
    kernel_package: String,
    kernel_package_version: String,
    input_hash: String,
    modules: Vec<String>,
    kernel_bytes: u64,
    initrd_bytes: u64,
    /// Unix seconds.
    built_at: u64,
    build_seconds: f64,
}

/// /var/lib/peervisor/images for root, else the user's cache dir.
pub fn default_image_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/peervisor/images");
    }
    match directories::BaseDirs::new() {
        Some(b) => b.cache_dir().join("peervisor/images"),
        None => std::env::temp_dir().join("peervisor-images"),
    }
}

/// The cached image `name`, without building anything.
pub fn find(image_dir: &Path, name: &str) -> Result<Image> {
    // Names arrive from other peers (replication offers): never a path.
    validate_name(name)?;
    let (image, _) = load(image_dir, name)?;
    Ok(image)
}

/// Builds the image unless the cached one has the same inputs.
pub fn build(
    image_dir: &Path,
    spec: &ImageSpec,
    progress: &mut dyn FnMut(&str),
) -> Result<BuildReport> {
    let started = Instant::now();
    validate_name(&spec.name)?;
    fs::create_dir_all(image_dir)
        .with_context(|| format!("creating image dir {}", image_dir.display()))?;
    let _lock = lock(image_dir)?;
    remove_stale_work_dirs(image_dir);

    progress("resolving the distribution's kernel package");
    let pkg = match kernel::resolve(progress) {
        Ok(p) => p,
        Err(e) => {
            // Offline or apt broken: an existing image is better than none.
            if let Ok(image) = find(image_dir, &spec.name) {
                progress(&format!(
                    "cannot check kernel package ({e:#}); using the cached image"
                ));
                return Ok(report(image, false, started));
            }
            return Err(e);
        }
    };
    let busybox = initramfs::busybox_path()?;
    let hash = input_hash(&pkg, &busybox)?;
    if let Ok((image, manifest)) = load(image_dir, &spec.name) {
        if manifest.input_hash == hash {
            progress("image is up to date");
            return Ok(report(image, false, started));
        }
        progress("inputs changed: rebuilding");
    }

    let work = WorkDir::create(image_dir, &spec.name)?;
    let out = work.path.join("out");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let extracted = kernel::fetch_and_extract(&pkg, &work.path, progress)?;
    fs::copy(&extracted.vmlinuz, out.join("vmlinuz"))
        .with_context(|| format!("copying {}", extracted.vmlinuz.display()))?;
    progress("extracting the uncompressed kernel (PVH boot)");
    if let Err(e) = pvh::extract(&out.join("vmlinuz"), &out.join("vmlinux")) {
        progress(&format!("no PVH kernel ({e:#}); guests boot the bzImage"));
    }
    progress("assembling the initramfs");
    let modules = initramfs::build(
        &extracted,
        &busybox,
        &work.path.join("tree"),
        &out.join("initrd.img"),
    )?;

    let manifest = Manifest {
        name: spec.name.clone(),
        kernel_version: extracted.kernel_version.clone(),
        kernel_package: pkg.name.clone(),
        kernel_package_version: pkg.version.clone(),
        input_hash: hash,
        modules,
        kernel_bytes: file_size(&out.join("vmlinuz"))?,
        initrd_bytes: file_size(&out.join("initrd.img"))?,
        built_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        build_seconds: started.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec_pretty(&manifest).context("encoding image.json")?;
    fs::write(out.join("image.json"), json)
        .with_context(|| format!("writing {}/image.json", out.display()))?;
    install(&out, image_dir, &spec.name)?;
    progress("image built");
    let image = find(image_dir, &spec.name)?;
    Ok(report(image, true, started))
}

fn report(image: Image, built: bool, started: Instant) -> BuildReport {
    BuildReport {
        image,
        built,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Names become directory names: keep them boring.
fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        bail!("invalid image name {name:?}: use letters, digits, '-', '_', '.'");
    }
    Ok(())
}

fn load(image_dir: &Path, name: &str) -> Result<(Image, Manifest)> {
    let dir = image_dir.join(name);
    let json_path = dir.join("image.json");
    let not_found = || {
        format!(
            "image '{name}' not found in {}: run `peervisor image build`",
            image_dir.display()
        )
    };
    if !json_path.is_file() {
        bail!(not_found());
    }
    let text = fs::read(&json_path).with_context(|| format!("reading {}", json_path.display()))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("reading {}", json_path.display()))?;
    // A truncated or replaced file would boot a guest that never answers: say so
    // now (`image build` rebuilds an image that fails this check).
    for (file, recorded) in [
        ("vmlinuz", manifest.kernel_bytes),
        ("initrd.img", manifest.initrd_bytes),
    ] {
        let actual = file_size(&dir.join(file)).with_context(not_found)?;
        if actual != recorded {
            bail!(
                "image '{name}' in {} is damaged: {file} is {actual} bytes, image.json says \
                 {recorded}: run `peervisor image build` to rebuild it",
                image_dir.display()
            );
        }
    }
    let vmlinux = dir.join("vmlinux");
    let pvh = vmlinux.is_file();
    let kernel = if pvh { vmlinux } else { dir.join("vmlinuz") };
    let initrd = dir.join("initrd.img");
    let size_bytes =
        file_size(&kernel).with_context(not_found)? + file_size(&initrd).with_context(not_found)?;
    let image = Image {
        name: name.to_string(),
        dir,
        kernel,
        initrd,
        pvh,
        kernel_version: manifest.kernel_version.clone(),
        size_bytes,
    };
    Ok((image, manifest))
}

fn input_hash(pkg: &kernel::Package, busybox: &Path) -> Result<String> {
    let bb = fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    let mut h = Sha256::new();
    h.update(format!(
        "recipe={RECIPE_VERSION}\nkernel={} {}\n",
        pkg.name, pkg.version
    ));
    if !pkg.with.is_empty() {
        h.update(format!("with={}\n", pkg.with.join(" ")));
    }
    h.update(format!(
        "modules={} {} {} {}\n",
        initramfs::NET_MODULES.join(","),
        initramfs::DISK_MODULES.join(","),
        initramfs::ACPI_MODULES.join(","),
        initramfs::SEED_MODULES.join(",")
    ));
    h.update(Sha256::digest(&bb));
    h.update(GUEST_INIT.as_bytes());
    for (path, bytes, mode) in GUEST_ROOTFS {
        h.update(path.as_bytes());
        h.update(bytes);
        h.update(mode.to_le_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

fn file_size(p: &Path) -> Result<u64> {
    Ok(fs::metadata(p)
        .with_context(|| format!("stat {}", p.display()))?
        .len())
}

/// Exclusive flock on `<image_dir>/.lock`, released when the file closes.
fn lock(image_dir: &Path) -> Result<File> {
    let path = image_dir.join(".lock");
    let f = File::create(&path).with_context(|| format!("opening lock {}", path.display()))?;
    // SAFETY: flock on a valid open fd; blocks until the other builder is done.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("flock {}", path.display()));
    }
    Ok(f)
}

/// Leftovers of builds that crashed; safe to remove since we hold the lock.
fn remove_stale_work_dirs(image_dir: &Path) {
    let Ok(entries) = fs::read_dir(image_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(".build-") {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Swaps the freshly built dir in place of the old one.
fn install(out: &Path, image_dir: &Path, name: &str) -> Result<()> {
    let dest = image_dir.join(name);
    let old = image_dir.join(format!(".build-old-{name}"));
    let _ = fs::remove_dir_all(&old);
    if dest.exists() {
        fs::rename(&dest, &old).with_context(|| format!("moving {} aside", dest.display()))?;
    }
    fs::rename(out, &dest)
        .with_context(|| format!("renaming {} to {}", out.display(), dest.display()))?;
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

/// `<image_dir>/.build-<name>-<pid>`, removed on drop (success or error).
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create(image_dir: &Path, name: &str) -> Result<WorkDir> {
        let path = image_dir.join(format!(".build-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The image VMs are created from unless told otherwise.
pub const DEFAULT_IMAGE: &str = "peervisor-guest";

#[cfg(test)]
mod tests {
    use super::*;

    /// An installed image with files of the sizes its image.json records.
    fn fake_image(dir: &Path) {
        let image = dir.join("guest");
        fs::create_dir_all(&image).unwrap();
        fs::write(image.join("vmlinuz"), vec![1u8; 100]).unwrap();
        fs::write(image.join("initrd.img"), vec![2u8; 50]).unwrap();
        let manifest = Manifest {
            name: "guest".into(),
            kernel_version: "6.1.0-test".into(),
            kernel_package: "linux-image-test".into(),
            kernel_package_version: "1".into(),
            input_hash: "h".into(),
            modules: vec![],
            kernel_bytes: 100,
            initrd_bytes: 50,
            built_at: 0,
            build_seconds: 1.0,
        };
        fs::write(
            image.join("image.json"),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
    }

    fn error(dir: &Path) -> String {
        format!("{:#}", find(dir, "guest").unwrap_err())
    }

    #[test]
    fn missing_damaged_and_unreadable_images_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = error(dir.path());
        assert!(
            err.contains("image 'guest' not found") && err.contains("peervisor image build"),
            "{err}"
        );

        fake_image(dir.path());
        assert_eq!(find(dir.path(), "guest").unwrap().size_bytes, 150);

        fs::write(dir.path().join("guest/initrd.img"), [2u8; 10]).unwrap();
        let err = error(dir.path());
        assert!(
            err.contains("is damaged: initrd.img is 10 bytes, image.json says 50"),
            "{err}"
        );

        fs::remove_file(dir.path().join("guest/vmlinuz")).unwrap();
        assert!(error(dir.path()).contains("not found"));

        fs::write(dir.path().join("guest/image.json"), b"{ not json").unwrap();
        let err = error(dir.path());
        assert!(err.contains("image.json"), "names the file: {err}");
    }
}
