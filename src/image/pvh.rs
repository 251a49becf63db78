//! The kernel as an uncompressed ELF (`vmlinux`) for PVH direct boot: QEMU jumps
//! straight into it, skipping the bzImage's self-decompression (xz, seconds under
//! TCG). Debian kernels have CONFIG_PVH=y; the ELF is cut out of the bzImage.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
/// The ELF note type that marks a PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY).
const PVH_NOTE: u32 = 18;

/// Writes the vmlinux inside `vmlinuz` to `out`. Fails (and the image keeps
/// booting the bzImage) when the payload is not xz or the ELF has no PVH entry.
pub fn extract(vmlinuz: &Path, out: &Path) -> Result<()> {
    let mut data = Vec::new();
    File::open(vmlinuz)
        .and_then(|mut f| f.read_to_end(&mut data))
        .with_context(|| format!("reading {}", vmlinuz.display()))?;
    let Some(offset) = data.windows(XZ_MAGIC.len()).position(|w| w == XZ_MAGIC) else {
        bail!("{}: no xz payload", vmlinuz.display());
    };
    let result = decompress(&data[offset..], out);
    if result.is_err() {
        let _ = std::fs::remove_file(out);
    }
    result
}

/// xz-utils' xz: busybox's cannot undo the x86 BCJ filter the kernel uses.
fn decompress(payload: &[u8], out: &Path) -> Result<()> {
    let out_file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut xz = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(out_file)
        .stderr(Stdio::null()) // "trailing garbage" after the stream is expected
        .spawn()
        .context("running xz (install xz-utils)")?;
    if let Some(mut stdin) = xz.stdin.take() {
        // xz stops reading at the end of its stream; a broken pipe then is fine.
        let _ = stdin.write_all(payload);
    }
    let status = xz.wait().context("waiting for xz")?;
    if !status.success() {
        bail!("xz -dc failed ({status})");
    }
    let mut head = [0u8; 4];
    File::open(out)
        .and_then(|mut f| f.read_exact(&mut head))
        .with_context(|| format!("reading {}", out.display()))?;
    if &head != b"\x7fELF" || !has_pvh_note(out)? {
        bail!("the kernel payload is not a PVH-bootable ELF");
    }
    Ok(())
}

/// Looks for the PVH entry note in the ELF's PT_NOTE segments.
fn has_pvh_note(path: &Path) -> Result<bool> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16_at = |o: usize| {
        data.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(|b: [u8; 8]| u64::from_le_bytes(b) as usize)
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Ok(false);
    };
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph) != Some(4) {
            continue; // not PT_NOTE
        }
        let (Some(off), Some(size)) = (u64_at(ph + 8), u64_at(ph + 32)) else {
            continue;
        };
        let mut at = off;
        while at + 12 <= off + size {
            let (Some(namesz), Some(descsz), Some(kind)) =
                (u32_at(at), u32_at(at + 4), u32_at(at + 8))
            else {
                break;
            };
            if kind == PVH_NOTE {
                return Ok(true);
            }
            let pad = |n: u32| (n as usize).div_ceil(4) * 4;
            at += 12 + pad(namesz) + pad(descsz);
        }
    }
    Ok(false)
}
