//! Embeds every file under assets/guest/rootfs/ into the binary, so the guest
//! image builder can lay them into the initramfs without a source checkout, and
//! builds the guest's tools from assets/guest/tools/ (static binaries: the guest
//! has no libc) to lay in beside them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Guest tools: (source under assets/guest/tools, path inside the guest).
const TOOLS: &[(&str, &str)] = &[("pv-randio.rs", "bin/pv-randio")];

fn main() {
    let root = PathBuf::from("assets/guest/rootfs");
    println!("cargo:rerun-if-changed=assets/guest/rootfs");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    let out = out_dir.join("guest_rootfs.rs");
    let mut f = fs::File::create(out).unwrap();
    writeln!(f, "/// (path inside the guest, contents, mode)").unwrap();
    writeln!(f, "pub const GUEST_ROOTFS: &[(&str, &[u8], u32)] = &[").unwrap();
    for (source, inside) in TOOLS {
        let binary = build_tool(&Path::new("assets/guest/tools").join(source), &out_dir);
        writeln!(
            f,
            "    ({inside:?}, include_bytes!({:?}), 0o755),",
            binary.display().to_string()
        )
        .unwrap();
    }
    for path in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let rel = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let abs = fs::canonicalize(&path).unwrap();
        writeln!(
            f,
            "    ({rel:?}, include_bytes!({:?}), 0o{mode:o}),",
            abs.display().to_string()
        )
        .unwrap();
    }
    writeln!(f, "];").unwrap();
}

/// Compiles a one-file std program with this build's rustc into a static
/// binary (glibc's static libc, from libc6-dev, which linking needs anyway).
fn build_tool(source: &Path, out_dir: &Path) -> PathBuf {
    println!("cargo:rerun-if-changed={}", source.display());
    let name = source.file_stem().unwrap().to_string_lossy().into_owned();
    let binary = out_dir.join(&name);
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = std::env::var("TARGET").unwrap();
    let out = Command::new(&rustc)
        .args(["--edition", "2024", "--crate-name", &name.replace('-', "_")])
        .args([
            "-C",
            "opt-level=2",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .args([
            "-C",
            "target-feature=+crt-static",
            "--target",
            &target,
            "-o",
        ])
        .arg(&binary)
        .arg(source)
        .output()
        .unwrap_or_else(|e| panic!("running {rustc} for {}: {e}", source.display()));
    assert!(
        out.status.success(),
        "building {} as a static binary failed (is libc6-dev's static libc installed?):\n{}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    binary
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        println!("cargo:rerun-if-changed={}", path.display());
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}
