//! Both ends of a disk transfer on an open stream: the chunks the receiver asked
//! for, each as its index (u32 BE) and its bytes, checked against the plan.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::sparse::{CHUNK, DiskPlan, Partial};
use super::wire::{self, Answer};

/// Longest silence inside a transfer (either way).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Test hook: a receiver in a process started with this variable set to N drops
/// the first transfer it serves after writing N chunks, as a cut overlay stream
/// would (tests/replication.rs).
pub const CUT_AFTER_CHUNKS_ENV: &str = "PEERVISOR_TEST_CUT_REPLICA_AFTER_CHUNKS";
static CUT_DONE: AtomicBool = AtomicBool::new(false);

/// What one send put on the stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    pub chunks: usize,
    pub data_bytes: u64,
    /// Data plus chunk headers.
    pub stream_bytes: u64,
}

/// Checks the receiver's request (indexes into the plan, ascending, each at
/// most once, so it asks for no more than the plan) and returns its bytes.
pub fn needed_bytes(plan: &DiskPlan, need: &[u32]) -> Result<u64> {
    let mut total = 0u64;
    let mut last: Option<u32> = None;
    for &i in need {
        let Some(chunk) = plan.chunks.get(i as usize) else {
            bail!(
                "the receiver asked for chunk {i}, the plan has {}",
                plan.chunks.len()
            );
        };
        if let Some(last) = last.filter(|&last| i <= last) {
            bail!("the receiver asked for chunk {i} after chunk {last}");
        }
        last = Some(i);
        total += u64::from(chunk.len);
    }
    Ok(total)
}

/// Sends the chunks `need` of `file`; `progress(done, total)` after each.
pub async fn send_chunks<W: AsyncWrite + Unpin>(
    w: &mut W,
    plan: &DiskPlan,
    need: &[u32],
    file: Arc<File>,
    mut progress: impl FnMut(u64, u64),
) -> Result<Sent> {
    let total = needed_bytes(plan, need)?;
    let mut sent = Sent::default();
    for &index in need {
        let chunk = plan.chunks[index as usize].clone();
        let f = file.clone();
        let data = tokio::task::spawn_blocking(move || {
            let mut data = vec![0u8; chunk.len as usize];
            f.read_exact_at(&mut data, chunk.offset).map(|_| data)
        })
        .await??;
        let write = async {
            w.write_all(&index.to_be_bytes()).await?;
            w.write_all(&data).await
        };
        tokio::time::timeout(READ_TIMEOUT, write)
            .await
            .map_err(|_| anyhow!("the receiver took no data for {READ_TIMEOUT:?}"))??;
        sent.chunks += 1;
        sent.data_bytes += data.len() as u64;
        sent.stream_bytes += 4 + data.len() as u64;
        progress(sent.data_bytes, total);
    }
    w.flush().await?;
    Ok(sent)
}

/// The destination's disk half of a replication: opens (or resumes) the
/// partial file at `path` for `plan`, answers which chunks it needs (`accepted`
/// is told how many of them there are), receives them, and checks the whole
/// file against the plan's checksum (removing it on a mismatch). Returns that
/// checksum; the file stays at `path`. `bench replicate` times this very code.
pub async fn receive_disk<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    plan: &DiskPlan,
    path: &Path,
    accepted: impl FnOnce(usize),
    progress: impl FnMut(u64, u64),
) -> Result<Option<String>> {
    let (p, pl) = (path.to_path_buf(), plan.clone());
    let (partial, need) = tokio::task::spawn_blocking(move || Partial::open(&p, &pl))
        .await?
        .with_context(|| format!("opening {}", path.display()))?;
    wire::send(stream, &Answer::Accept { need: need.clone() }).await?;
    accepted(need.len());
    let partial = receive_chunks(stream, plan, &need, partial, progress).await?;
    let pl = plan.clone();
    let digest = tokio::task::spawn_blocking(move || partial.finish(&pl))
        .await?
        .context("finishing the disk file")?;
    if digest != plan.file_sha256 {
        let _ = std::fs::remove_file(path);
        bail!("the received disk does not match the source's checksum");
    }
    Ok(digest)
}

/// Receives the chunks `need` into `partial`; `progress(done, total)` after each.
pub async fn receive_chunks<R: AsyncRead + Unpin>(
    r: &mut R,
    plan: &DiskPlan,
    need: &[u32],
    partial: Partial,
    mut progress: impl FnMut(u64, u64),
) -> Result<Partial> {
    let cut_after: Option<usize> = std::env::var(CUT_AFTER_CHUNKS_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let total = needed_bytes(plan, need)?;
    let partial = Arc::new(partial);
    let mut received = 0u64;
    for (n, &index) in need.iter().enumerate() {
        if cut_after == Some(n) && !CUT_DONE.swap(true, Ordering::SeqCst) {
            bail!("test hook {CUT_AFTER_CHUNKS_ENV}: stream dropped after {n} chunks");
        }
        let mut head = [0u8; 4];
        read_within(r, &mut head).await?;
        let got = u32::from_be_bytes(head);
        if got != index {
            bail!("chunk {got} arrived where chunk {index} was expected");
        }
        let chunk = plan.chunks[index as usize].clone();
        // Validated plans hold no more; this function must not trust it blindly.
        if u64::from(chunk.len) > CHUNK {
            bail!(
                "chunk {index} of {} bytes is larger than the grid",
                chunk.len
            );
        }
        let mut data = vec![0u8; chunk.len as usize];
        read_within(r, &mut data).await?;
        received += data.len() as u64;
        let p = partial.clone();
        tokio::task::spawn_blocking(move || p.write(&chunk, &data)).await??;
        progress(received, total);
    }
    Arc::into_inner(partial).ok_or_else(|| anyhow!("partial file still in use"))
}

async fn read_within<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<()> {
    tokio::time::timeout(READ_TIMEOUT, r.read_exact(buf))
        .await
        .map_err(|_| anyhow!("the sender went silent for {READ_TIMEOUT:?}"))?
        .map_err(|e| anyhow!("replication stream cut: {e}"))?;
    Ok(())
}
