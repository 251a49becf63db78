//! What each protocol sends, counted on every stream of a simulated overlay's
//! connections (`bench scale --mode sim`; real nodes are not tapped).
//!
//! A stream's protocol is read from the stream itself: the first
//! multistream-select message we write on it that is neither the multistream
//! header nor "na" (the protocol we propose on a stream we opened, or the one
//! we accept on a stream the other side opened). Gossipsub's frames are also
//! taken apart by kind (messages, IHAVE, IWANT, ...), from their protobuf
//! field numbers. Counts are process-wide: every simulated node's sends.
//! What the wire carries beyond the streams' writes (yamux's frames that open,
//! acknowledge and close streams, window updates) is the difference with the
//! pipes' own counters.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerBox, StreamMuxerEvent, SubstreamBox};

/// What one protocol (or one kind of gossipsub frame) sent.
#[derive(Default)]
struct Counts {
    streams: AtomicU64,
    writes: AtomicU64,
    bytes: AtomicU64,
}

/// A protocol's (or gossipsub frame kind's) sends, summed over the process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub streams: u64,
    pub writes: u64,
    pub bytes: u64,
}

fn table() -> &'static Mutex<BTreeMap<String, Arc<Counts>>> {
    static TABLE: OnceLock<Mutex<BTreeMap<String, Arc<Counts>>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

fn counts(name: &str) -> Arc<Counts> {
    let mut table = table().lock().unwrap_or_else(|e| e.into_inner());
    table.entry(name.to_string()).or_default().clone()
}

/// Every protocol's sends so far (gossipsub's kinds as `gossipsub:KIND`).
pub fn snapshot() -> BTreeMap<String, Sent> {
    let table = table().lock().unwrap_or_else(|e| e.into_inner());
    table
        .iter()
        .map(|(name, c)| {
            let sent = Sent {
                streams: c.streams.load(Ordering::Relaxed),
                writes: c.writes.load(Ordering::Relaxed),
                bytes: c.bytes.load(Ordering::Relaxed),
            };
            (name.clone(), sent)
        })
        .collect()
}

/// The sends between two snapshots.
pub fn since(before: &BTreeMap<String, Sent>) -> BTreeMap<String, Sent> {
    snapshot()
        .into_iter()
        .map(|(name, now)| {
            let then = before.get(&name).copied().unwrap_or_default();
            let sent = Sent {
                streams: now.streams - then.streams,
                writes: now.writes - then.writes,
                bytes: now.bytes - then.bytes,
            };
            (name, sent)
        })
        .filter(|(_, s)| *s != Sent::default())
        .collect()
}

/// A connection's muxer whose streams are counted.
pub fn tap(muxer: StreamMuxerBox) -> StreamMuxerBox {
    StreamMuxerBox::new(Tapped(muxer))
}

struct Tapped(StreamMuxerBox);

impl StreamMuxer for Tapped {
    type Substream = SubstreamBox;
    type Error = io::Error;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<SubstreamBox, io::Error>> {
        Pin::new(&mut self.0)
            .poll_inbound(cx)
            .map_ok(|s| SubstreamBox::new(TappedStream::new(s)))
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<SubstreamBox, io::Error>> {
        Pin::new(&mut self.0)
            .poll_outbound(cx)
            .map_ok(|s| SubstreamBox::new(TappedStream::new(s)))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Pin::new(&mut self.0).poll_close(cx)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, io::Error>> {
        Pin::new(&mut self.0).poll(cx)
    }
}

struct TappedStream {
    inner: SubstreamBox,
    /// What we wrote before the protocol was known (the negotiation).
    head: Vec<u8>,
    protocol: Option<Arc<Counts>>,
    /// Gossipsub only: payload bytes not yet split into whole frames.
    gossip: Option<Vec<u8>>,
}

/// Negotiation longer than this is not multistream-select: counted as "unknown".
const MAX_HEAD: usize = 1024;

impl TappedStream {
    fn new(inner: SubstreamBox) -> TappedStream {
        TappedStream {
            inner,
            head: Vec::new(),
            protocol: None,
            gossip: None,
        }
    }

    fn wrote(&mut self, bytes: &[u8]) {
        let payload: Vec<u8> = match &self.protocol {
            Some(counts) => {
                counts.writes.fetch_add(1, Ordering::Relaxed);
                counts
                    .bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                bytes.to_vec()
            }
            None => {
                self.head.extend_from_slice(bytes);
                let (name, rest) = match negotiated(&self.head) {
                    Some((name, used)) => (name, self.head[used..].to_vec()),
                    None if self.head.len() > MAX_HEAD => ("unknown".to_string(), Vec::new()),
                    None => return,
                };
                let counts = counts(&name);
                counts.streams.fetch_add(1, Ordering::Relaxed);
                counts.writes.fetch_add(1, Ordering::Relaxed);
                counts
                    .bytes
                    .fetch_add(self.head.len() as u64, Ordering::Relaxed);
                self.protocol = Some(counts);
                if name.starts_with("/meshsub/") {
                    self.gossip = Some(Vec::new());
                }
                self.head = Vec::new();
                rest
            }
        };
        if let Some(pending) = &mut self.gossip {
            pending.extend_from_slice(&payload);
            let used = count_gossip_frames(pending);
            pending.drain(..used);
        }
    }
}

/// The protocol our multistream-select messages in `head` settle on, and how
/// many bytes they take; `None` while incomplete.
fn negotiated(head: &[u8]) -> Option<(String, usize)> {
    let mut at = 0;
    loop {
        let (len, n) = varint(&head[at..])?;
        let end = at + n + len as usize;
        let message = head.get(at + n..end)?;
        at = end;
        let text = String::from_utf8_lossy(message);
        let text = text.trim_end_matches('\n');
        if text != "/multistream/1.0.0" && text != "na" {
            return Some((text.to_string(), at));
        }
    }
}

/// An unsigned LEB128 varint: its value and length; `None` if incomplete.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Counts the whole gossipsub frames (varint length + RPC protobuf) at the
/// start of `bytes` by what they carry; returns the bytes they take.
fn count_gossip_frames(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some((len, n)) = varint(&bytes[at..]) {
        let end = at + n + len as usize;
        let Some(rpc) = bytes.get(at + n..end) else {
            break;
        };
        let mut kinds = rpc_kinds(rpc);
        kinds.sort_unstable();
        kinds.dedup();
        let label = format!("gossipsub:{}", kinds.join("+"));
        let c = counts(&label);
        c.writes.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add((end - at) as u64, Ordering::Relaxed);
        count_copies(rpc);
        at = end;
    }
    at
}

/// Each message copy in an RPC, as `gossipsub:copy ...` (writes = copies):
/// whether the announcement in it carries its author's links.
fn count_copies(rpc: &[u8]) {
    for (_, message) in fields(rpc).into_iter().filter(|(f, _)| *f == 2) {
        // Message { from = 1, data = 2, ... }: the announcement's JSON.
        let data = fields(message)
            .into_iter()
            .find(|(f, _)| *f == 2)
            .map_or(&[][..], |(_, d)| d);
        let unchanged = data.windows(22).any(|w| w == b"\"links_unchanged\":true");
        let c = counts(if unchanged {
            "gossipsub:copy, links unchanged"
        } else {
            "gossipsub:copy with links"
        });
        c.writes.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(message.len() as u64, Ordering::Relaxed);
    }
}

/// The kinds in one gossipsub RPC: its top-level fields (1 subscriptions,
/// 2 messages, 3 control), control split into its own fields.
fn rpc_kinds(rpc: &[u8]) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    for (field, body) in fields(rpc) {
        match field {
            1 => kinds.push("subscribe"),
            2 => kinds.push("message"),
            3 => {
                for (control, _) in fields(body) {
                    kinds.push(match control {
                        1 => "ihave",
                        2 => "iwant",
                        3 => "graft",
                        4 => "prune",
                        5 => "idontwant",
                        _ => "control?",
                    });
                }
            }
            _ => kinds.push("other"),
        }
    }
    if kinds.is_empty() {
        kinds.push("empty");
    }
    kinds
}

/// Length-delimited protobuf fields (every field of an RPC is one); stops at
/// anything else.
fn fields(mut bytes: &[u8]) -> Vec<(u64, &[u8])> {
    let mut out = Vec::new();
    while let Some((key, n)) = varint(bytes) {
        if key & 7 != 2 {
            break;
        }
        let Some((len, m)) = varint(&bytes[n..]) else {
            break;
        };
        let Some(body) = bytes.get(n + m..n + m + len as usize) else {
            break;
        };
        out.push((key >> 3, body));
        bytes = &bytes[n + m + len as usize..];
    }
    out
}

impl AsyncRead for TappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.wrote(&buf[..n]);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> Vec<u8> {
        let mut out = vec![text.len() as u8 + 1];
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
        out
    }

    #[test]
    fn a_streams_protocol_is_the_first_message_past_the_header_and_refusals() {
        let mut head = message("/multistream/1.0.0");
        head.extend(message("na"));
        assert_eq!(negotiated(&head), None, "incomplete");
        head.extend(message("/ipfs/ping/1.0.0"));
        let used = head.len();
        head.extend([1, 2, 3]);
        assert_eq!(
            negotiated(&head),
            Some(("/ipfs/ping/1.0.0".to_string(), used))
        );
    }

    #[test]
    fn gossipsub_frames_are_told_apart_by_what_they_carry() {
        // RPC { control { ihave {..}, ihave {..} } }: field 3 holding two field-1s.
        let control = [0x0a, 0x01, 0x00, 0x0a, 0x01, 0x00];
        let mut rpc = vec![0x1a, control.len() as u8];
        rpc.extend(control);
        assert_eq!(rpc_kinds(&rpc), vec!["ihave", "ihave"]);
        // RPC { publish {..} }
        assert_eq!(rpc_kinds(&[0x12, 0x02, 0x00, 0x00]), vec!["message"]);
        let mut frames = vec![rpc.len() as u8];
        frames.extend(&rpc);
        frames.extend([5, 0x12]); // the start of a second frame
        assert_eq!(count_gossip_frames(&frames), rpc.len() + 1);
    }
}
