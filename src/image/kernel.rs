//! The Debian kernel package: resolved through the linux-image-amd64
//! metapackage (`apt-cache show`), downloaded with
//! `apt-get download` and unpacked with `dpkg -x` (never installed).

use anyhow::{Context, Result, anyhow, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The metapackage that always depends on the current kernel.
const META_PACKAGE: &str = "linux-image-amd64";

#[derive(Debug, Clone)]
pub struct Package {
    /// e.g. linux-image-6.1.0-56-amd64
    pub name: String,
    /// e.g. 6.1.192-2
    pub version: String,
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

fn resolve_once() -> Result<Package> {
    // One apt-cache call (~0.7 s here): the metapackage pins the exact version.
    let show = run(Command::new("apt-cache").args(["show", "--no-all-versions", META_PACKAGE]))?;
    let (name, version) = parse_meta_depends(&show)
        .ok_or_else(|| anyhow!("apt-cache show {META_PACKAGE}: no linux-image dependency"))?;
    let version = match version {
        Some(v) => v,
        None => package_version(&name)?,
    };
    Ok(Package { name, version })
}

/// `Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)` -> (name, version).
fn parse_meta_depends(show: &str) -> Option<(String, Option<String>)> {
    let deps = show.lines().find_map(|l| l.strip_prefix("Depends:"))?;
    let dep = deps
        .split([',', '|'])
        .map(str::trim)
        .find(|d| d.starts_with("linux-image-"))?;
    let (name, rest) = dep.split_once(' ').unwrap_or((dep, ""));
    let version = rest
        .trim()
        .strip_prefix("(=")
        .and_then(|v| v.strip_suffix(')'))
        .map(|v| v.trim().to_string());
    Some((name.to_string(), version))
}

fn package_version(name: &str) -> Result<String> {
    let show = run(Command::new("apt-cache").args(["show", "--no-all-versions", name]))?;
    show.lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| anyhow!("apt-cache show {name}: no Version field"))
}

/// Downloads the package into `work/deb` and unpacks it into `work/root`.
pub fn fetch_and_extract(
    pkg: &Package,
    work: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Extracted> {
    let deb_dir = work.join("deb");
    fs::create_dir_all(&deb_dir).with_context(|| format!("creating {}", deb_dir.display()))?;
    progress(&format!("downloading {} {}", pkg.name, pkg.version));
    let spec = format!("{}={}", pkg.name, pkg.version);
    if let Err(first) = run(Command::new("apt-get")
        .args(["download", &spec])
        .current_dir(&deb_dir))
    {
        progress(&format!("{first:#}; running apt-get update"));
        apt_update()?;
        run(Command::new("apt-get")
            .args(["download", &spec])
            .current_dir(&deb_dir))?;
    }
    let deb = find_deb(&deb_dir)?;
    let root = work.join("root");
    progress(&format!("extracting {}", deb.display()));
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
    locate(&root)
}

fn find_deb(dir: &Path) -> Result<PathBuf> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| anyhow!("apt-get download left no .deb in {}", dir.display()))
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

    #[test]
    fn parses_the_metapackage_dependency() {
        let show = "Package: linux-image-amd64\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\n";
        let (name, version) = parse_meta_depends(show).unwrap();
        assert_eq!(name, "linux-image-6.1.0-56-amd64");
        assert_eq!(version.as_deref(), Some("6.1.192-2"));
        let loose = "Depends: foo, linux-image-6.12.1-amd64-unsigned | linux-image-6.12.1-amd64\n";
        assert_eq!(
            parse_meta_depends(loose),
            Some(("linux-image-6.12.1-amd64-unsigned".into(), None))
        );
        assert_eq!(parse_meta_depends("Depends: foo\n"), None);
    }
}
