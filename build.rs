//! Embeds every file under assets/guest/rootfs/ into the binary, so the guest
//! image builder can lay them into the initramfs without a source checkout.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from("assets/guest/rootfs");
    println!("cargo:rerun-if-changed=assets/guest/rootfs");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guest_rootfs.rs");
    let mut f = fs::File::create(out).unwrap();
    writeln!(f, "/// (path inside the guest, contents, mode)").unwrap();
    writeln!(f, "pub const GUEST_ROOTFS: &[(&str, &[u8], u32)] = &[").unwrap();
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
