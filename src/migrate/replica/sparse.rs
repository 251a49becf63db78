//! Sparse disk files: which ranges hold data (SEEK_DATA/SEEK_HOLE), the plan of
//! chunks that must cross the wire, and the receiving side's partial file.
//!
//! A disk file (raw or qcow2) is sent as the file it is: only its data extents
//! cross, cut on a 1 MiB grid into chunks named by offset and SHA-256, all-zero
//! chunks left out. The receiver keeps what it got in a partial file; a second
//! attempt hashes that file against the new plan and asks only for the chunks that
//! differ, so a cut transfer resumes where it stopped.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::{FallocateFlags, SeekFrom};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Chunks never straddle a multiple of this.
pub const CHUNK: u64 = 1 << 20;

/// Largest disk file a destination accepts (holes included).
pub const MAX_FILE: u64 = 4 << 40;

/// Most chunks a plan may list: 512 GiB of data in whole 1 MiB chunks (less if
/// the data is scattered in smaller extents). It bounds the offer that carries
/// the plan (`wire::Offer::LIMIT`) and what the destination keeps of it.
pub const MAX_CHUNKS: usize = 1 << 19;

/// A byte range of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

/// One piece of data to send.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Chunk {
    pub offset: u64,
    pub len: u32,
    /// SHA-256 of the chunk's bytes, hex.
    pub sha256: String,
}

/// What the sender offers: the file's shape and its non-zero data chunks.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskPlan {
    /// "qcow2" or "raw".
    pub format: String,
    /// Length of the file (holes included).
    pub file_size: u64,
    /// Size of the disk the guest sees.
    pub virtual_size: u64,
    /// Bytes the file occupies on the sender's filesystem (st_blocks).
    pub allocated: u64,
    pub chunks: Vec<Chunk>,
    /// SHA-256 of the whole file, holes read as zeros, hex (None above
    /// `FULL_DIGEST_LIMIT`: hashing gigabytes of holes is not worth it).
    pub file_sha256: Option<String>,
}

/// Files up to this size get a whole-file checksum.
const FULL_DIGEST_LIMIT: u64 = 8 << 30;

impl DiskPlan {
    /// Bytes of chunk data (what crosses the wire, before framing).
    pub fn data_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.len)).sum()
    }

    /// Checks a plan from the network before acting on it: at most `max_file`
    /// bytes and `MAX_CHUNKS` chunks, each non-empty, inside the file and its
    /// 1 MiB grid cell, after the one before, with a well-formed checksum. Sums
    /// are checked: an offset near 2^64 must not wrap past these checks.
    pub fn validate(&self, max_file: u64) -> Result<(), String> {
        if self.file_size > max_file {
            return Err(format!(
                "disk plan: file_size {} is larger than the {max_file} bytes accepted",
                self.file_size
            ));
        }
        if self.chunks.len() > MAX_CHUNKS {
            return Err(format!(
                "disk plan: {} chunks, at most {MAX_CHUNKS}",
                self.chunks.len()
            ));
        }
        let mut end = 0;
        for (i, c) in self.chunks.iter().enumerate() {
            end = c
                .check(end, self.file_size)
                .map_err(|why| format!("disk plan: chunk {i} (offset {}): {why}", c.offset))?;
        }
        Ok(())
    }
}

impl Chunk {
    /// Where this chunk ends, if it is well formed and starts at or after `from`.
    fn check(&self, from: u64, file_size: u64) -> Result<u64, &'static str> {
        if self.len == 0 {
            return Err("empty");
        }
        if self.offset < from {
            return Err("overlaps the chunk before");
        }
        let end = self
            .offset
            .checked_add(u64::from(self.len))
            .ok_or("ends past 2^64")?;
        if end > file_size {
            return Err("ends past the end of the file");
        }
        // The cell's end, offset / CHUNK + 1 cells: past 2^64 in the last cell.
        let cell_end = (self.offset / CHUNK + 1).checked_mul(CHUNK);
        if cell_end.is_some_and(|cell_end| end > cell_end) {
            return Err("crosses a 1 MiB boundary");
        }
        let hex = self.sha256.len() == 64 && self.sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex {
            return Err("sha256 is not 64 hex digits");
        }
        Ok(end)
    }
}

/// Data extents of a file, in order. A filesystem without SEEK_DATA support
/// reports the whole file as data.
pub fn data_extents(file: &File) -> io::Result<Vec<Extent>> {
    let size = file.metadata()?.len();
    let mut extents = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL) if pos == 0 => {
                return Ok(vec![Extent {
                    offset: 0,
                    len: size,
                }]);
            }
            Err(e) => return Err(e.into()),
        };
        let end = rustix::fs::seek(file, SeekFrom::Hole(start))?.min(size);
        if end <= start {
            break;
        }
        extents.push(Extent {
            offset: start,
            len: end - start,
        });
        pos = end;
    }
    Ok(extents)
}

/// Extents cut on the `CHUNK` grid.
fn grid_pieces(extents: &[Extent]) -> impl Iterator<Item = Extent> + '_ {
    extents.iter().flat_map(|e| {
        let mut pieces = Vec::new();
        let mut at = e.offset;
        let end = e.offset + e.len;
        while at < end {
            let next = ((at / CHUNK + 1) * CHUNK).min(end);
            pieces.push(Extent {
                offset: at,
                len: next - at,
            });
            at = next;
        }
        pieces
    })
}

/// The plan for sending `path`: reads every data extent once.
pub fn plan(path: &Path) -> io::Result<DiskPlan> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    let file_size = meta.len();
    let mut header = [0u8; 32];
    let header_len = file.read_at(&mut header, 0)?;
    let (format, virtual_size) = match qcow2_virtual_size(&header[..header_len]) {
        Some(size) => ("qcow2", size),
        None => ("raw", file_size),
    };
    let extents = data_extents(&file)?;
    let mut chunks = Vec::new();
    let mut buf = vec![0u8; CHUNK as usize];
    // The whole-file checksum is taken in the same pass (holes as zeros).
    let mut whole = (file_size <= FULL_DIGEST_LIMIT).then(Sha256::new);
    let mut pos = 0;
    for piece in grid_pieces(&extents) {
        let data = &mut buf[..piece.len as usize];
        file.read_exact_at(data, piece.offset)?;
        if let Some(h) = whole.as_mut() {
            hash_zeros(h, piece.offset - pos);
            h.update(&*data);
        }
        pos = piece.offset + piece.len;
        if is_zero(data) {
            continue;
        }
        chunks.push(Chunk {
            offset: piece.offset,
            len: piece.len as u32,
            sha256: hex::encode(Sha256::digest(&*data)),
        });
    }
    let file_sha256 = whole.map(|mut h| {
        hash_zeros(&mut h, file_size.saturating_sub(pos));
        hex::encode(h.finalize())
    });
    Ok(DiskPlan {
        format: format.into(),
        file_size,
        virtual_size,
        allocated: std::os::unix::fs::MetadataExt::blocks(&meta) * 512,
        chunks,
        file_sha256,
    })
}

/// qcow2 keeps the virtual size at bytes 24..32 of its header, after the magic.
fn qcow2_virtual_size(header: &[u8]) -> Option<u64> {
    if header.len() < 32 || &header[..4] != b"QFI\xfb" {
        return None;
    }
    Some(u64::from_be_bytes(header[24..32].try_into().ok()?))
}

static ZEROS: [u8; CHUNK as usize] = [0; CHUNK as usize];

/// memcmp against zeros: fast even in a debug build.
fn is_zero(data: &[u8]) -> bool {
    data == &ZEROS[..data.len()]
}

fn hash_zeros(hasher: &mut Sha256, mut n: u64) {
    while n > 0 {
        let step = n.min(CHUNK);
        hasher.update(&ZEROS[..step as usize]);
        n -= step;
    }
}

/// SHA-256 of the whole file, holes hashed as the zeros they read as.
fn file_digest(file: &File, extents: &[Extent], size: u64) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut pos = 0;
    for e in extents {
        hash_zeros(&mut hasher, e.offset - pos);
        for piece in grid_pieces(std::slice::from_ref(e)) {
            let data = &mut buf[..piece.len as usize];
            file.read_exact_at(data, piece.offset)?;
            hasher.update(&*data);
        }
        pos = e.offset + e.len;
    }
    hash_zeros(&mut hasher, size.saturating_sub(pos));
    Ok(hex::encode(hasher.finalize()))
}

/// A consistent local copy of `src` at `dst`, holes kept (only data extents are
/// read and written). The caller makes sure nobody writes `src` meanwhile.
pub fn sparse_copy(src: &Path, dst: &Path) -> io::Result<u64> {
    let from = File::open(src)?;
    let to = File::create(dst)?;
    let size = from.metadata()?.len();
    to.set_len(size)?;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut copied = 0;
    for piece in grid_pieces(&data_extents(&from)?) {
        let data = &mut buf[..piece.len as usize];
        from.read_exact_at(data, piece.offset)?;
        to.write_all_at(data, piece.offset)?;
        copied += piece.len;
    }
    to.sync_all()?;
    Ok(copied)
}

/// The receiving side's file, kept between attempts.
pub struct Partial {
    file: File,
}

impl Partial {
    /// Opens (or creates) the partial file, sizes it for `plan`, and returns the
    /// indexes of the chunks it does not hold yet.
    pub fn open(path: &Path, plan: &DiskPlan) -> io::Result<(Partial, Vec<u32>)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        file.set_len(plan.file_size)?;
        // Only chunks overlapping data this file already holds can be there
        // (both lists are in offset order).
        let held = data_extents(&file)?;
        let mut next_held = 0;
        let mut need = Vec::new();
        let mut buf = vec![0u8; CHUNK as usize];
        for (i, chunk) in plan.chunks.iter().enumerate() {
            while held
                .get(next_held)
                .is_some_and(|e| e.offset + e.len <= chunk.offset)
            {
                next_held += 1;
            }
            let overlaps = held
                .get(next_held)
                .is_some_and(|e| e.offset < chunk.offset + u64::from(chunk.len));
            let data = &mut buf[..chunk.len as usize];
            let have = overlaps
                && file.read_exact_at(data, chunk.offset).is_ok()
                && hex::encode(Sha256::digest(&*data)) == chunk.sha256;
            if !have {
                need.push(i as u32);
            }
        }
        Ok((Partial { file }, need))
    }

    /// Writes a received chunk after checking it against the plan's checksum.
    pub fn write(&self, chunk: &Chunk, data: &[u8]) -> io::Result<()> {
        if hex::encode(Sha256::digest(data)) != chunk.sha256 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("chunk at offset {} failed its checksum", chunk.offset),
            ));
        }
        self.file.write_all_at(data, chunk.offset)
    }

    /// Makes the file equal to the plan: every byte outside the chunks becomes a
    /// hole (an earlier attempt may have left data there), then flushes it.
    /// Returns the whole-file SHA-256 read back from disk, when the plan has one.
    pub fn finish(self, plan: &DiskPlan) -> io::Result<Option<String>> {
        let covered: Vec<(u64, u64)> = plan
            .chunks
            .iter()
            .map(|c| (c.offset, c.offset + u64::from(c.len)))
            .collect();
        let punch = |from: u64, to: u64| {
            rustix::fs::fallocate(
                &self.file,
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                from,
                to - from,
            )
        };
        let mut first = 0;
        for e in data_extents(&self.file)? {
            let (mut at, end) = (e.offset, e.offset + e.len);
            while first < covered.len() && covered[first].1 <= at {
                first += 1;
            }
            let mut next = first;
            while at < end {
                match covered.get(next) {
                    Some(&(start, stop)) if start < end => {
                        if start > at {
                            punch(at, start)?;
                        }
                        at = at.max(stop);
                        next += 1;
                    }
                    _ => {
                        punch(at, end)?;
                        at = end;
                    }
                }
            }
        }
        self.file.sync_all()?;
        match &plan.file_sha256 {
            Some(_) => {
                let extents = data_extents(&self.file)?;
                file_digest(&self.file, &extents, plan.file_size).map(Some)
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sparse file: data at 0..4 KiB, a zero-filled block, data at 3 MiB + 100.
    fn sample(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("disk.raw");
        let f = File::create(&path).unwrap();
        f.set_len(8 * CHUNK).unwrap();
        f.write_all_at(&[7u8; 4096], 0).unwrap();
        f.write_all_at(&[0u8; 8192], 2 * CHUNK).unwrap();
        f.write_all_at(&vec![9u8; 300_000], 3 * CHUNK + 100)
            .unwrap();
        path
    }

    #[test]
    fn plan_sends_only_nonzero_data_on_the_grid() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let plan = plan(&path).unwrap();
        assert_eq!(plan.format, "raw");
        assert_eq!(plan.file_size, 8 * CHUNK);
        // Data: 4 KiB at 0 and ~300 KB near 3 MiB; the zero block is left out.
        assert!(plan.data_bytes() >= 4096 + 300_000, "{plan:?}");
        assert!(plan.data_bytes() <= 4096 + 300_000 + 2 * 4096, "{plan:?}");
        assert!(
            plan.chunks
                .iter()
                .all(|c| c.offset / CHUNK == (c.offset + u64::from(c.len) - 1) / CHUNK)
        );
        assert!(plan.validate(u64::MAX).is_ok());
        assert!(plan.allocated < plan.file_size / 4);
    }

    #[test]
    fn receiver_resumes_and_ends_equal_to_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let src = sample(dir.path());
        let plan = plan(&src).unwrap();
        let dst = dir.path().join("disk.partial");
        // A stale byte where the source has a hole must not survive.
        {
            let f = File::create(&dst).unwrap();
            f.write_all_at(&[1u8; 512], 6 * CHUNK).unwrap();
        }
        let source = File::open(&src).unwrap();
        let read = |c: &Chunk| {
            let mut data = vec![0u8; c.len as usize];
            source.read_exact_at(&mut data, c.offset).unwrap();
            data
        };
        let (partial, need) = Partial::open(&dst, &plan).unwrap();
        assert_eq!(need.len(), plan.chunks.len());
        // First attempt cut after one chunk.
        let first = &plan.chunks[need[0] as usize];
        partial.write(first, &read(first)).unwrap();
        drop(partial);
        let (partial, need) = Partial::open(&dst, &plan).unwrap();
        assert_eq!(need.len(), plan.chunks.len() - 1, "resumes after the cut");
        let bad = &plan.chunks[need[0] as usize];
        assert!(partial.write(bad, &vec![0u8; bad.len as usize]).is_err());
        for &i in &need {
            let c = &plan.chunks[i as usize];
            partial.write(c, &read(c)).unwrap();
        }
        let digest = partial.finish(&plan).unwrap();
        assert_eq!(digest, plan.file_sha256);
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
    }

    #[test]
    fn qcow2_header_gives_the_virtual_size() {
        let mut h = [0u8; 32];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[24..32].copy_from_slice(&(64u64 << 20).to_be_bytes());
        assert_eq!(qcow2_virtual_size(&h), Some(64 << 20));
        assert_eq!(qcow2_virtual_size(&[0u8; 32]), None);
        assert_eq!(qcow2_virtual_size(b"QFI"), None);
    }

    #[test]
    fn sparse_copy_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = sample(dir.path());
        let dst = dir.path().join("copy");
        sparse_copy(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&dst).unwrap());
        assert!(blocks * 512 < 2 * CHUNK, "copy is sparse: {blocks} blocks");
    }

    fn one_chunk(file_size: u64, offset: u64, len: u32) -> DiskPlan {
        DiskPlan {
            file_size,
            chunks: vec![Chunk {
                offset,
                len,
                sha256: "0".repeat(64),
            }],
            ..DiskPlan::default()
        }
    }

    /// Before: `offset + len` wrapped here (a panic in a debug build); in a
    /// release build the plan passed, and the receiver allocated 4 GiB for it.
    #[test]
    fn overflowing_chunks_are_refused() {
        let offset = u64::MAX - CHUNK - 5;
        let err = one_chunk(MAX_FILE, offset, u32::MAX)
            .validate(MAX_FILE)
            .unwrap_err();
        assert!(err.contains("chunk 0") && err.contains("2^64"), "{err}");
        // Longer than its cell, without any sum wrapping.
        let err = one_chunk(MAX_FILE, CHUNK - 1, 2)
            .validate(MAX_FILE)
            .unwrap_err();
        assert!(err.contains("1 MiB boundary"), "{err}");
        // The last cell ends at 2^64, which no u64 holds: still checked, no panic.
        assert!(
            one_chunk(u64::MAX, u64::MAX - 100, 50)
                .validate(u64::MAX)
                .is_ok()
        );
        let err = one_chunk(u64::MAX, u64::MAX - 100, 101)
            .validate(u64::MAX)
            .unwrap_err();
        assert!(err.contains("2^64"), "{err}");
    }

    #[test]
    fn too_many_chunks_are_refused_before_any_is_looked_at() {
        let plan = DiskPlan {
            file_size: MAX_FILE,
            chunks: vec![
                Chunk {
                    offset: 0,
                    len: 0,
                    sha256: String::new(),
                };
                MAX_CHUNKS + 1
            ],
            ..DiskPlan::default()
        };
        let err = plan.validate(MAX_FILE).unwrap_err();
        assert!(err.contains("chunks, at most"), "{err}");
    }

    #[test]
    fn malformed_plans_are_refused() {
        let mut p = DiskPlan {
            file_size: 10,
            chunks: vec![Chunk {
                offset: 8,
                len: 4,
                sha256: "0".repeat(64),
            }],
            ..DiskPlan::default()
        };
        assert!(p.validate(u64::MAX).unwrap_err().contains("chunk 0"));
        p.file_size = 100;
        assert!(p.validate(u64::MAX).is_ok());
        assert!(p.validate(50).is_err());
    }
}
