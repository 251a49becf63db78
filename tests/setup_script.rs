//! scripts/setup.sh's decisions on the machines the README names, without
//! installing anything: `SETUP_PLAN_ONLY=1` prints what it would do, and the
//! commands it asks (cargo, rustup, apt-cache, dpkg-query) are stand-ins that
//! answer as each distribution would.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const SETUP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup.sh");

/// One machine: which cargo is on PATH (a version or none), whether the
/// distribution has a rustup package, whether ~/.cargo/bin has a cargo.
struct Machine {
    cargo: Option<&'static str>,
    rustup_package: bool,
    home_cargo: Option<&'static str>,
    installed: &'static [&'static str],
    /// Whether npm is on PATH (for the interop test's js-libp2p node).
    npm: bool,
    /// Packages the distribution's archive does not have (`apt-cache show` fails).
    lacks: &'static [&'static str],
}

fn stub(dir: &Path, name: &str, script: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn cargo_stub(version: &str) -> String {
    format!("[ \"$1\" = --version ] && echo 'cargo {version} (stub)'")
}

/// The script's plan on `machine`: its output lines.
fn plan(machine: &Machine) -> String {
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // Only the tools the script needs besides the stand-ins, so nothing of this
    // machine's own (its cargo, its apt) leaks in.
    for tool in [
        "bash", "sh", "sed", "awk", "sort", "head", "id", "getent", "uname", "mktemp", "grep",
        "dirname", "cat",
    ] {
        let real = which(tool);
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }
    if let Some(v) = machine.cargo {
        stub(&bin, "cargo", &cargo_stub(v));
    }
    if machine.npm {
        stub(&bin, "npm", "exit 0");
    }
    stub(
        &bin,
        "apt-cache",
        &format!(
            "[ \"$1 $2\" = 'show rustup' ] && exit {}; for p in {}; do [ \"$2\" = \"$p\" ] && exit 100; done; [ \"$1\" = show ] && exit 0; exit 1",
            if machine.rustup_package { 0 } else { 100 },
            machine.lacks.join(" ")
        ),
    );
    let installed = machine.installed.join(" ");
    stub(
        &bin,
        "dpkg-query",
        &format!(
            "for last; do :; done; for p in {installed}; do [ \"$p\" = \"$last\" ] && echo 'install ok installed' && exit 0; done; exit 1"
        ),
    );
    let home = root.path().join("home");
    if let Some(v) = machine.home_cargo {
        let dir = home.join(".cargo/bin");
        std::fs::create_dir_all(&dir).unwrap();
        stub(&dir, "cargo", &cargo_stub(v));
    }
    let out = Command::new(bin.join("bash"))
        .arg(SETUP)
        .env_clear()
        .env("PATH", &bin)
        .env("HOME", &home)
        .env("SETUP_PLAN_ONLY", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setup.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn which(tool: &str) -> String {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let path = format!("{dir}/{tool}");
        if Path::new(&path).exists() {
            return path;
        }
    }
    panic!("{tool} not found");
}

#[test]
fn debian_12_gets_rustup_init_instead_of_its_old_cargo() {
    // bookworm: cargo 1.63 from the distribution, no rustup package.
    let out = plan(&Machine {
        cargo: Some("1.63.0"),
        rustup_package: false,
        home_cargo: None,
        installed: &[],
        npm: true,
        lacks: &[],
    });
    assert!(out.contains("rust: rustup-init (need 1.88)"), "{out}");
}

#[test]
fn debian_13_and_ubuntu_24_04_use_their_rustup_package() {
    // trixie: no cargo yet; noble: the distribution's cargo 1.75 is too old.
    for cargo in [None, Some("1.75.0")] {
        let out = plan(&Machine {
            cargo,
            rustup_package: true,
            home_cargo: None,
            installed: &[],
            npm: true,
            lacks: &[],
        });
        assert!(out.contains("rust: apt-rustup"), "{cargo:?}: {out}");
    }
}

#[test]
fn a_recent_enough_cargo_is_kept_wherever_it_is() {
    let out = plan(&Machine {
        cargo: Some("1.95.0"),
        rustup_package: false,
        home_cargo: None,
        installed: &[],
        npm: true,
        lacks: &[],
    });
    assert!(out.contains("rust: ok"), "{out}");
    // rustup's cargo in ~/.cargo/bin, not on PATH yet (a fresh login shell).
    let out = plan(&Machine {
        cargo: Some("1.63.0"),
        rustup_package: false,
        home_cargo: Some("1.90.0"),
        installed: &[],
        npm: true,
        lacks: &[],
    });
    assert!(out.contains("rust: path"), "{out}");
}

#[test]
fn only_missing_packages_are_installed() {
    let out = plan(&Machine {
        cargo: Some("1.95.0"),
        rustup_package: false,
        home_cargo: None,
        installed: &["libvirt-daemon", "qemu-system-x86", "busybox-static"],
        npm: true,
        lacks: &[],
    });
    let apt = out.lines().find(|l| l.starts_with("apt: ")).unwrap();
    assert!(
        apt.contains("libvirt-dev") && apt.contains("nftables"),
        "{apt}"
    );
    assert!(
        !apt.split_whitespace()
            .any(|p| p == "qemu-system-x86" || p == "libvirt-daemon"),
        "{apt}"
    );
}

#[test]
fn npm_comes_from_apt_only_where_it_is_missing() {
    let machine = |npm| Machine {
        cargo: Some("1.95.0"),
        rustup_package: false,
        home_cargo: None,
        installed: &[],
        npm,
        lacks: &[],
    };
    let out = plan(&machine(false));
    assert!(out.contains("interop: apt-npm"), "{out}");
    // With npm: `npm ci`, or nothing when tests/interop is installed from the
    // current lock file.
    let out = plan(&machine(true));
    let interop = out.lines().find(|l| l.starts_with("interop: ")).unwrap();
    assert!(
        interop == "interop: npm-ci" || interop == "interop: ok",
        "{out}"
    );
}

#[test]
fn the_spark_test_gets_a_jre_and_the_pinned_pyspark_where_missing() {
    // A fresh machine: no java, no pyspark venv in its (empty) home.
    let out = plan(&Machine {
        cargo: Some("1.95.0"),
        rustup_package: false,
        home_cargo: None,
        installed: &[],
        npm: true,
        lacks: &[],
    });
    assert!(out.contains("spark: jre pyspark"), "{out}");
    let apt = out.lines().find(|l| l.starts_with("apt: ")).unwrap();
    assert!(apt.contains("python3-venv"), "{apt}");
}

#[test]
fn a_package_the_archive_lacks_is_skipped_not_fatal() {
    let machine = |lacks| Machine {
        cargo: Some("1.95.0"),
        rustup_package: true,
        home_cargo: None,
        installed: &[],
        npm: true,
        lacks,
    };
    // An Ubuntu without Debian's sysv init-script package for libvirt: said,
    // and the rest still planned.
    let out = plan(&machine(&["libvirt-daemon-system-sysv"]));
    assert!(
        out.lines()
            .any(|l| l == "apt-skip: libvirt-daemon-system-sysv"),
        "{out}"
    );
    assert!(!plan(&machine(&[])).contains("apt-skip"));
}
