//! The Debian package as a user gets it: scripts/release.sh packages the binary
//! this suite built (cargo-deb, completions and man pages generated from it),
//! and scripts/package-test.sh installs the .deb into a fresh Debian 12 root
//! (debootstrap, chroot) with its dependencies from Debian's archive, then
//! checks `peervisor --version`, the systemd unit (systemd-analyze verify), the
//! config file, the completions, the man pages and `peervisor doctor`'s libvirt
//! check. The debootstrapped base and
//! the downloaded dependencies are cached in /var/cache/peervisor-test, so after
//! a machine's first run this takes about two minutes.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_peervisor");

fn run(command: &mut Command) -> String {
    let out = command.output().expect("run script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

#[test]
fn package_installs_into_a_fresh_debian_12_root() {
    let out = tempfile::tempdir().unwrap();
    run(Command::new("bash")
        .arg(Path::new(ROOT).join("scripts/release.sh"))
        .arg("--fast")
        .env("PEERVISOR_BIN", BIN)
        .env("DEB_DIR", out.path()));
    let deb = std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("release.sh made no .deb");
    let report = run(Command::new("bash")
        .arg(Path::new(ROOT).join("scripts/package-test.sh"))
        .arg(&deb));
    println!("{report}");
    assert!(report.lines().any(|l| l == "package-test: ok"), "{report}");
    assert!(
        report.contains("package-test: doctor: ok    libvirt "),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "package-test: peervisor {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{report}"
    );
}
