//! pv-randio: the penalty benchmark's random I/O, all operations in one process.
//!
//!   pv-randio read|write OPS TARGET
//!
//! OPS reads or writes of 4 KiB at random 4 KiB-aligned offsets in the first
//! 64 MiB of TARGET, with O_DIRECT (no page cache on either side). Prints
//! "ops=N" (the operations done) or "error ..." and exits non-zero.
//!
//! One process per run, on the host and in the guest alike: starting a `dd` per
//! operation measured process start-up (slow under TCG) instead of the I/O.
//! Built by build.rs as a static binary (no libc in the guest) and laid into the
//! guest image at /bin/pv-randio; std only, so it builds with rustc alone.

use std::alloc::{Layout, alloc_zeroed};
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::{SystemTime, UNIX_EPOCH};

/// O_DIRECT on x86_64 Linux (the guest's and the host's architecture).
const O_DIRECT: i32 = 0o40000;
const BLOCK: usize = 4096;
/// 4 KiB blocks in the first 64 MiB: the benchmark's targets are at least that.
const BLOCKS: u64 = 16384;

fn main() {
    if let Err(e) = run() {
        println!("error {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, ops, target] = args.as_slice() else {
        return Err("usage: pv-randio read|write OPS TARGET".into());
    };
    let write = match mode.as_str() {
        "read" => false,
        "write" => true,
        other => return Err(format!("unknown mode '{other}' (read or write)")),
    };
    let ops: u64 = ops.parse().map_err(|_| format!("bad count '{ops}'"))?;
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(O_DIRECT)
        .open(target)
        .map_err(|e| format!("opening {target}: {e}"))?;
    // O_DIRECT wants a buffer aligned to the block size.
    let layout = Layout::from_size_align(BLOCK, BLOCK).expect("a valid layout");
    // SAFETY: the layout has a non-zero size; the memory lives to the end of
    // the process and is only used as this slice.
    let buf = unsafe {
        let ptr = alloc_zeroed(layout);
        if ptr.is_null() {
            return Err("out of memory".into());
        }
        std::slice::from_raw_parts_mut(ptr, BLOCK)
    };
    buf.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i % 251) as u8);
    let mut state = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
        | 1;
    let mut done = 0u64;
    while done < ops {
        // xorshift64: offsets need only be spread, not unpredictable.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let offset = (state % BLOCKS) * BLOCK as u64;
        let result = if write {
            file.write_all_at(buf, offset)
        } else {
            file.read_exact_at(buf, offset)
        };
        result.map_err(|e| format!("{mode} at {offset} of {target}: {e}"))?;
        done += 1;
    }
    println!("ops={done}");
    Ok(())
}
