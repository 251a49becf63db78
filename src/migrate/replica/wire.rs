//! The replication stream (`/peervisor/replicate/1`), one per replica:
//!
//! ```text
//! source                                        destination
//! Offer {name, vcpus, memory, image,  ──────▶  role control? name free? image,
//!        services, disk plan}                   capacity? partial file hashed
//!                                     ◀──────  Answer::Accept {need} | Refuse
//! chunk frames: index (u32 BE) + bytes ──────▶  checksum, write at offset
//!                                     ◀──────  Outcome::Started {..} | Failed
//! ```
//! Control messages are length-prefixed JSON (u32 BE length).

use anyhow::{Result, anyhow, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::sparse::DiskPlan;
use crate::model::ServiceSpec;

/// Largest control frame (an offer lists every chunk: ~100 bytes each).
pub const MAX_FRAME: usize = 64 << 20;

/// What the source asks the destination to host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Offer {
    /// Name of the replica on the destination.
    pub name: String,
    /// The VM replicated, and its UUID (names the partial file for resuming).
    pub source_vm: String,
    pub source_uuid: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub image: String,
    /// Services the replica provides (the source's, under the same names).
    pub services: Vec<ServiceSpec>,
    pub disk: Option<DiskPlan>,
    /// Placed by the source's on-demand provision policy (not by an operator).
    #[serde(default)]
    pub auto: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Answer {
    /// Send these chunks (indexes into the plan), in this order.
    Accept {
        need: Vec<u32>,
    },
    Refuse {
        reason: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Outcome {
    Started {
        ip: String,
        /// Whole-file SHA-256 of the replica's disk, read back before it booted.
        disk_sha256: Option<String>,
    },
    Failed {
        reason: String,
    },
}

/// Writes one control frame; returns the bytes written.
pub async fn send<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, message: &T) -> Result<u64> {
    let body = serde_json::to_vec(message)?;
    if body.len() > MAX_FRAME {
        bail!("message of {} bytes is too large", body.len());
    }
    w.write_all(&(body.len() as u32).to_be_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await?;
    Ok(4 + body.len() as u64)
}

/// Reads one control frame; malformed input is an error naming what was expected.
pub async fn receive<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    what: &str,
) -> Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .await
        .map_err(|e| anyhow!("reading the {what}: {e}"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        bail!("the {what} is too large ({len} bytes)");
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
        .await
        .map_err(|e| anyhow!("reading the {what}: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| anyhow!("malformed {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_garbage_is_an_error() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let answer = Answer::Accept { need: vec![1, 3] };
        send(&mut a, &answer).await.unwrap();
        let back: Answer = receive(&mut b, "answer").await.unwrap();
        assert_eq!(back, answer);

        a.write_all(&5u32.to_be_bytes()).await.unwrap();
        a.write_all(b"nope!").await.unwrap();
        let err = receive::<_, Answer>(&mut b, "answer").await.unwrap_err();
        assert!(err.to_string().contains("malformed answer"), "{err}");

        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = receive::<_, Offer>(&mut b, "offer").await.unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }
}
