//! The replication stream (`/peervisor/replicate/1`), one per replica:
//!
//! ```text
//! source                                        destination
//!                                               peer: open streams, rate, role
//!                                               control? (refused unread if not)
//! Offer {name, vcpus, memory, image,  ──────▶  name free? image, capacity?
//!        services, disk plan}                   plan checked, partial file hashed
//!                                     ◀──────  Answer::Accept {need} | Refuse
//! chunk frames: index (u32 BE) + bytes ──────▶  checksum, write at offset
//!                                     ◀──────  Outcome::Started {..} | Failed
//! ```
//! Control messages are length-prefixed JSON (u32 BE length). Each kind has its
//! own limit, checked before a byte of its body is read; the body is then read
//! as it arrives, so a length prefix alone costs nothing.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::sparse::{DiskPlan, MAX_CHUNKS};
use crate::model::ServiceSpec;

/// An offer's definition (name, image, services with their tags and allow lists)
/// without its chunk list: generous, a manifest has at most a few KiB.
const MAX_DEFINITION: usize = 256 << 10;
/// Longest JSON of one chunk of a plan that validates (offset below 4 TiB, a
/// length up to 1 MiB, a SHA-256 in hex) with its separating comma; checked by
/// `largest_plan_fits_the_offer_limit`.
const MAX_CHUNK_JSON: usize = 128;
/// Longest `need` entry of an answer: a u32 and a comma.
const MAX_INDEX_JSON: usize = 11;
/// Reasons sent back are clipped to this (they name what was wrong, no more).
const MAX_REASON: usize = 4096;

/// A control message of the replication stream and the most bytes its
/// encoding may take.
pub trait Message: Serialize + DeserializeOwned {
    /// What it is, for errors: "the offer is too large".
    const WHAT: &'static str;
    /// Largest body accepted; a longer length prefix is refused unread.
    const LIMIT: usize;
}

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

/// The largest offer: a definition and a plan of the most chunks a plan may list
/// (`sparse::MAX_CHUNKS`, the largest disk a destination accepts), 64.25 MiB.
impl Message for Offer {
    const WHAT: &'static str = "offer";
    const LIMIT: usize = MAX_DEFINITION + MAX_CHUNKS * MAX_CHUNK_JSON;
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

/// An answer lists at most every chunk of the plan: 5.5 MiB at most.
impl Message for Answer {
    const WHAT: &'static str = "answer";
    const LIMIT: usize = MAX_REASON * 2 + MAX_CHUNKS * MAX_INDEX_JSON;
}

impl Answer {
    pub fn refuse(reason: &str) -> Answer {
        Answer::Refuse {
            reason: clip(reason),
        }
    }
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

/// An address, a checksum or a reason: small.
impl Message for Outcome {
    const WHAT: &'static str = "outcome";
    const LIMIT: usize = MAX_REASON * 2;
}

impl Outcome {
    pub fn failed(reason: &str) -> Outcome {
        Outcome::Failed {
            reason: clip(reason),
        }
    }
}

/// At most `MAX_REASON` bytes, cut at a character boundary.
fn clip(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// One control frame, length prefix and body, checked against its limit.
pub fn encode<T: Message>(message: &T) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(message)?;
    if body.len() > T::LIMIT {
        bail!(
            "the {} of {} bytes is larger than a peer accepts ({} bytes)",
            T::WHAT,
            body.len(),
            T::LIMIT
        );
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Writes one control frame; returns the bytes written.
pub async fn send<W: AsyncWrite + Unpin, T: Message>(w: &mut W, message: &T) -> Result<u64> {
    let frame = encode(message)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(frame.len() as u64)
}

/// Reads one control frame; malformed input is an error naming what was expected.
pub async fn receive<R: AsyncRead + Unpin, T: Message>(r: &mut R) -> Result<T> {
    let body = receive_body(r, T::WHAT, T::LIMIT).await?;
    serde_json::from_slice(&body).map_err(|e| anyhow!("malformed {}: {e}", T::WHAT))
}

/// The body of one frame of at most `limit` bytes. Its buffer grows as bytes
/// arrive: a length prefix promising 64 MiB followed by 10 bytes costs 10 bytes.
async fn receive_body<R: AsyncRead + Unpin>(
    r: &mut R,
    what: &str,
    limit: usize,
) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .await
        .map_err(|e| anyhow!("reading the {what}: {e}"))?;
    let len = u32::from_be_bytes(len);
    if len as usize > limit {
        bail!("the {what} is too large ({len} bytes, at most {limit})");
    }
    let mut body = Vec::new();
    r.take(u64::from(len))
        .read_to_end(&mut body)
        .await
        .map_err(|e| anyhow!("reading the {what}: {e}"))?;
    if body.len() != len as usize {
        bail!("the {what} was cut after {} of {len} bytes", body.len());
    }
    Ok(body)
}

/// Writes `write` (the offer) while reading the answer: a destination refuses
/// some peers before it reads their offer (role, limits), and such a refusal
/// must reach the source even though the rest of the offer is never taken.
/// `wait`: how long the answer may take once the offer is written.
pub async fn offer_and_answer<R, F>(r: &mut R, write: F, wait: Duration) -> Result<(u64, Answer)>
where
    R: AsyncRead + Unpin,
    F: Future<Output = Result<u64>>,
{
    let answer = receive::<_, Answer>(r);
    tokio::pin!(answer, write);
    let written = tokio::select! {
        written = &mut write => written,
        answer = &mut answer => {
            // Only a refusal comes before the whole offer was read.
            let answer = answer?;
            if let Answer::Refuse { .. } = answer {
                return Ok((0, answer));
            }
            return Ok((write.await?, answer));
        }
    };
    let answer = tokio::time::timeout(wait, answer)
        .await
        .map_err(|_| anyhow!("no answer within {wait:?}"));
    match (written, answer) {
        (Ok(n), answer) => Ok((n, answer??)),
        // A refused stream may be closed under the offer: the refusal is the news.
        (Err(_), Ok(Ok(refusal @ Answer::Refuse { .. }))) => Ok((0, refusal)),
        (Err(e), _) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::alloc;

    #[tokio::test]
    async fn frames_round_trip_and_garbage_is_an_error() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let answer = Answer::Accept { need: vec![1, 3] };
        send(&mut a, &answer).await.unwrap();
        let back: Answer = receive(&mut b).await.unwrap();
        assert_eq!(back, answer);

        a.write_all(&5u32.to_be_bytes()).await.unwrap();
        a.write_all(b"nope!").await.unwrap();
        let err = receive::<_, Answer>(&mut b).await.unwrap_err();
        assert!(err.to_string().contains("malformed answer"), "{err}");

        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = receive::<_, Offer>(&mut b).await.unwrap_err();
        assert!(err.to_string().contains("offer is too large"), "{err}");
    }

    #[test]
    fn each_message_has_its_own_limit() {
        const { assert!(Offer::LIMIT > 64 << 20 && Offer::LIMIT < 65 << 20) };
        const { assert!(Answer::LIMIT < 6 << 20) };
        const { assert!(Outcome::LIMIT <= 8 << 10) };
        let long = Outcome::failed(&"é".repeat(10_000));
        assert!(encode(&long).is_ok(), "reasons are clipped to fit");
    }

    /// The largest plan a destination accepts, written as widely as a plan of
    /// a 4 TiB file can be, fits an offer (and validates on the other side).
    #[test]
    fn largest_plan_fits_the_offer_limit() {
        use crate::migrate::replica::sparse::{CHUNK, Chunk, MAX_FILE};
        let first = MAX_FILE - MAX_CHUNKS as u64 * CHUNK;
        let chunks = (0..MAX_CHUNKS as u64)
            .map(|i| Chunk {
                offset: first + i * CHUNK,
                len: CHUNK as u32,
                sha256: "f".repeat(64),
            })
            .collect();
        let offer = Offer {
            name: "n".repeat(48),
            disk: Some(DiskPlan {
                format: "qcow2".into(),
                file_size: MAX_FILE,
                virtual_size: u64::MAX,
                allocated: u64::MAX,
                chunks,
                file_sha256: Some("f".repeat(64)),
            }),
            ..Offer::default()
        };
        let frame = encode(&offer).unwrap();
        assert!(frame.len() > Offer::LIMIT * 7 / 8, "{} bytes", frame.len());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let back: Offer = rt.block_on(receive(&mut frame.as_slice())).unwrap();
        back.disk.unwrap().validate(MAX_FILE).unwrap();
    }

    /// A prefix at the offer's limit followed by 10 bytes and the end of the
    /// stream: refused for what arrived, having allocated about that much.
    #[test]
    fn a_promised_body_costs_only_what_arrives() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut input = (Offer::LIMIT as u32).to_be_bytes().to_vec();
        input.extend_from_slice(b"{\"name\":\"x");
        let (result, peak) =
            alloc::peak(|| rt.block_on(receive::<_, Offer>(&mut input.as_slice())));
        let err = result.unwrap_err().to_string();
        assert!(err.contains("offer was cut after 10 of"), "{err}");
        assert!(peak < 16 << 10, "allocated {peak} bytes for 10");
        // One past the limit is refused before reading.
        let over = (Offer::LIMIT as u32 + 1).to_be_bytes();
        let err = rt
            .block_on(receive::<_, Offer>(&mut over.as_slice()))
            .unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    /// The source hears a refusal sent before its offer was read, while the
    /// destination takes none of it.
    #[tokio::test]
    async fn a_refusal_before_the_offer_is_read_reaches_the_source() {
        let (source, mut dest) = tokio::io::duplex(1024);
        let (mut r, mut w) = tokio::io::split(source);
        send(&mut dest, &Answer::refuse("not allowed"))
            .await
            .unwrap();
        let big = vec![b' '; 1 << 20];
        let write = async {
            w.write_all(&big).await?;
            anyhow::Ok(big.len() as u64)
        };
        let exchange = offer_and_answer(&mut r, write, Duration::from_secs(5));
        let (_, answer) = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .expect("the refusal was heard while the offer waited to be written")
            .unwrap();
        assert_eq!(answer, Answer::refuse("not allowed"));
    }
}
