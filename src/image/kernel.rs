//! The distribution's kernel package: resolved through its metapackage
//! (`apt-cache show`), downloaded with `apt-get download` and unpacked with
//! `dpkg -x` (never installed). Debian ships the kernel and its modules in one
//! package (linux-image-amd64 -> linux-image-6.1.0-N-amd64); Ubuntu splits
//! them (linux-image-virtual -> linux-image-6.8.0-N-generic, which depends on
//! linux-modules-6.8.0-N-generic holding /lib/modules), so the image
//! package's `linux-modules-*` dependencies are fetched and unpacked with it.

use anyhow::{Context, Result, anyhow, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Overrides the distribution read from /etc/os-release (`debian`, `ubuntu`).
pub const DISTRO_ENV: &str = "PEERVISOR_KERNEL_DISTRO";

/// Whose kernel packages the image is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distro {
    Debian,
    Ubuntu,
}

impl Distro {
    /// The metapackage that always depends on the current kernel. Ubuntu's
    /// `virtual` is its generic kernel without linux-modules-extra (the
    /// virtio drivers are built in or in linux-modules).
    fn meta_package(self) -> &'static str {
        match self {
            Distro::Debian => "linux-image-amd64",
            Distro::Ubuntu => "linux-image-virtual",
        }
    }

    fn parse(id: &str) -> Option<Distro> {
        match id.trim().to_ascii_lowercase().as_str() {
            "debian" => Some(Distro::Debian),
            "ubuntu" => Some(Distro::Ubuntu),
            _ => None,
        }
    }

    /// The distribution of this host: `PEERVISOR_KERNEL_DISTRO` if set, else
    /// /etc/os-release.
    pub fn detect() -> Result<Distro> {
        if let Ok(forced) = std::env::var(DISTRO_ENV) {
            return Distro::parse(&forced).ok_or_else(|| {
                anyhow!("{DISTRO_ENV}={forced}: unknown distribution (debian or ubuntu)")
            });
        }
        let path = "/etc/os-release";
        let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        from_os_release(&text).ok_or_else(|| {
            anyhow!(
                "{path}: neither Debian nor Ubuntu nor derived from them (ID, ID_LIKE); \
                 set {DISTRO_ENV}=debian or ubuntu to pick the kernel packages"
            )
        })
    }
}

/// ID, then ID_LIKE's words in order (a derivative such as Linux Mint says
/// `ID_LIKE="ubuntu debian"` and uses Ubuntu's kernels).
fn from_os_release(text: &str) -> Option<Distro> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches(['"', '\'']).to_string())
            .unwrap_or_default()
    };
    let id = field("ID");
    let like = field("ID_LIKE");
    std::iter::once(id.as_str())
        .chain(like.split_whitespace())
        .find_map(Distro::parse)
}

#[derive(Debug, Clone)]
pub struct Package {
    /// e.g. linux-image-6.1.0-56-amd64
    pub name: String,
    /// e.g. 6.1.192-2
    pub version: String,
    /// Packages unpacked with it: its `linux-modules-*` dependencies (Ubuntu),
    /// as `name=version`.
    pub with: Vec<String>,
}

/// The unpacked package.
#[derive(Debug, Clone)]
pub struct Extracted {
    pub vmlinuz: PathBuf,
    /// e.g. 6.1.0-56-amd64
    pub kernel_version: String,
    /// `.../lib/modules/<kernel_version>`
    pub modules_dir: PathBuf,
}

/// Which kernel package apt would give us now.
pub fn resolve(progress: &mut dyn FnMut(&str)) -> Result<Package> {
    let distro = Distro::detect()?;
    let meta = distro.meta_package();
    let resolve_once = || {
        resolve_with(meta, &mut |name| {
            run(Command::new("apt-cache").args(["show", "--no-all-versions", name]))
        })
        .with_context(|| format!("{distro:?}'s kernel through {meta}"))
    };
    match resolve_once() {
        Ok(p) => Ok(p),
        Err(first) => {
            // Usually the package lists are missing (fresh container).
            progress(&format!("{first:#}; running apt-get update"));
            apt_update()?;
            resolve_once()
        }
    }
}

/// The kernel behind `meta`, `show` being `apt-cache show --no-all-versions`:
/// the metapackage's linux-image dependency, then that package's version and
/// its linux-modules dependencies (none on Debian).
fn resolve_with(meta: &str, show: &mut dyn FnMut(&str) -> Result<String>) -> Result<Package> {
    let meta_show = show(meta)?;
    let (name, pinned) = dependencies(&meta_show)
        .into_iter()
        .find(|(d, _)| d.starts_with("linux-image-"))
        .ok_or_else(|| anyhow!("apt-cache show {meta}: no linux-image dependency"))?;
    let image_show = show(&name)?;
    let version = match pinned {
        Some(v) => v,
        None => field(&image_show, "Version")
            .ok_or_else(|| anyhow!("apt-cache show {name}: no Version field"))?,
    };
    let mut with = Vec::new();
    for (module_pkg, pinned) in dependencies(&image_show) {
        if !module_pkg.starts_with("linux-modules-") {
            continue;
        }
        let version = match pinned {
            Some(v) => v,
            None => field(&show(&module_pkg)?, "Version")
                .ok_or_else(|| anyhow!("apt-cache show {module_pkg}: no Version field"))?,
        };
        with.push(format!("{module_pkg}={version}"));
    }
    Ok(Package {
        name,
        version,
        with,
    })
}

/// `Depends: a (= 1), b | c` -> [(a, Some(1)), (b, None), (c, None)]; only an
/// exact `=` pin is kept.
fn dependencies(show: &str) -> Vec<(String, Option<String>)> {
    let Some(deps) = field(show, "Depends") else {
        return Vec::new();
    };
    deps.split([',', '|'])
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|dep| {
            let (name, rest) = dep.split_once(' ').unwrap_or((dep, ""));
            let version = rest
                .trim()
                .strip_prefix("(=")
                .and_then(|v| v.strip_suffix(')'))
                .map(|v| v.trim().to_string());
            (name.to_string(), version)
        })
        .collect()
}

/// The first stanza's `Key:` value.
fn field(show: &str, key: &str) -> Option<String> {
    show.lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// Downloads the package into `work/deb` and unpacks it into `work/root`.
pub fn fetch_and_extract(
    pkg: &Package,
    work: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Extracted> {
    let deb_dir = work.join("deb");
    fs::create_dir_all(&deb_dir).with_context(|| format!("creating {}", deb_dir.display()))?;
    let mut specs = vec![format!("{}={}", pkg.name, pkg.version)];
    specs.extend(pkg.with.iter().cloned());
    progress(&format!("downloading {}", specs.join(" ")));
    let download = || {
        run(Command::new("apt-get")
            .arg("download")
            .args(&specs)
            .current_dir(&deb_dir))
    };
    if let Err(first) = download() {
        progress(&format!("{first:#}; running apt-get update"));
        apt_update()?;
        download()?;
    }
    let root = work.join("root");
    for deb in find_debs(&deb_dir)? {
        progress(&format!("extracting {}", deb.display()));
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
    }
    locate(&root)
}

fn find_debs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let debs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    if debs.is_empty() {
        bail!("apt-get download left no .deb in {}", dir.display());
    }
    Ok(debs)
}

/// Finds boot/vmlinuz-* and the matching modules dir in the unpacked tree.
fn locate(root: &Path) -> Result<Extracted> {
    let boot = root.join("boot");
    let entries = fs::read_dir(&boot).with_context(|| format!("reading {}", boot.display()))?;
    let vmlinuz = entries
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| anyhow!("no vmlinuz-* in {}", boot.display()))?;
    let file_name = vmlinuz
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kernel_version = file_name.trim_start_matches("vmlinuz-").to_string();
    // Debian 12 ships /lib/modules, later releases /usr/lib/modules.
    let modules_dir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&kernel_version))
        .find(|p| p.is_dir())
        .ok_or_else(|| anyhow!("no modules dir for {kernel_version} in {}", root.display()))?;
    Ok(Extracted {
        vmlinuz,
        kernel_version,
        modules_dir,
    })
}

fn apt_update() -> Result<()> {
    run(Command::new("apt-get").args(["update", "-qq"]))
        .context("apt-get update (needs root and the Debian mirror)")?;
    Ok(())
}

/// Runs a command, returns stdout; on failure the error names the command and
/// carries the end of its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let line = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {line}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{line} failed ({}): {}", out.status, tail.join(" | "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `apt-cache show` answers from fixture files named after the package.
    fn fixtures(prefix: &'static str) -> impl FnMut(&str) -> Result<String> {
        move |name| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/image/fixtures")
                .join(format!("{prefix}-{name}.show"));
            fs::read_to_string(&path).map_err(|_| anyhow!("E: No packages found ({name})"))
        }
    }

    #[test]
    fn debian_kernel_is_one_package_pinned_by_its_metapackage() {
        // Captured on this Debian 12 host.
        let pkg = resolve_with(Distro::Debian.meta_package(), &mut fixtures("debian")).unwrap();
        assert_eq!(pkg.name, "linux-image-6.1.0-57-amd64");
        assert_eq!(pkg.version, "6.1.192-3");
        assert!(pkg.with.is_empty(), "{:?}", pkg.with);
    }

    #[test]
    fn ubuntu_kernel_brings_its_modules_package() {
        // Written after Ubuntu 24.04's package entries (no Ubuntu host here):
        // the metapackage does not pin a version, the image package depends on
        // linux-modules-<abi>-generic, where /lib/modules lives.
        let pkg =
            resolve_with(Distro::Ubuntu.meta_package(), &mut fixtures("ubuntu-noble")).unwrap();
        assert_eq!(pkg.name, "linux-image-6.8.0-88-generic");
        assert_eq!(pkg.version, "6.8.0-88.89");
        assert_eq!(pkg.with, ["linux-modules-6.8.0-88-generic=6.8.0-88.89"]);
        // linux-image-generic adds linux-modules-extra (not needed by the guest).
        let generic = resolve_with("linux-image-generic", &mut fixtures("ubuntu-noble")).unwrap();
        assert_eq!(generic.name, "linux-image-6.8.0-88-generic");
        // Debian's metapackage does not exist there: the error names it.
        let err = resolve_with("linux-image-amd64", &mut fixtures("ubuntu-noble")).unwrap_err();
        assert!(format!("{err:#}").contains("linux-image-amd64"), "{err:#}");
    }

    #[test]
    fn distribution_from_os_release() {
        let debian =
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";
        let ubuntu = "NAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nID=ubuntu\nID_LIKE=debian\n";
        let mint = "NAME=\"Linux Mint\"\nID=linuxmint\nID_LIKE=\"ubuntu debian\"\n";
        let raspbian = "ID=raspbian\nID_LIKE=debian\n";
        let fedora = "ID=fedora\nVERSION_ID=40\n";
        assert_eq!(from_os_release(debian), Some(Distro::Debian));
        assert_eq!(from_os_release(ubuntu), Some(Distro::Ubuntu));
        assert_eq!(from_os_release(mint), Some(Distro::Ubuntu));
        assert_eq!(from_os_release(raspbian), Some(Distro::Debian));
        assert_eq!(from_os_release(fedora), None);
        // ID_LIKE is not read as ID.
        assert_eq!(
            from_os_release("ID_LIKE=ubuntu\nID=debian\n"),
            Some(Distro::Debian)
        );
    }

    #[test]
    fn dependencies_keep_exact_pins_only() {
        let show = "Package: x\nDepends: foo, linux-image-6.12.1-amd64-unsigned | linux-image-6.12.1-amd64, linux-base (>= 4.3~)\n";
        assert_eq!(
            dependencies(show),
            [
                ("foo".to_string(), None),
                ("linux-image-6.12.1-amd64-unsigned".to_string(), None),
                ("linux-image-6.12.1-amd64".to_string(), None),
                ("linux-base".to_string(), None),
            ]
        );
        let pinned = "Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\n";
        assert_eq!(
            dependencies(pinned),
            [(
                "linux-image-6.1.0-56-amd64".to_string(),
                Some("6.1.192-2".to_string())
            )]
        );
        assert!(dependencies("Package: y\n").is_empty());
    }
}
