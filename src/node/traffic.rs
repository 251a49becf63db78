//! The control protocol's traffic per message kind: bytes and messages each
//! way, counted where they are encoded and decoded (a codec around the CBOR
//! one). What an operator asks "what does my console cost the overlay?" and
//! `bench scale --remote-figures` reports, without subtracting an idle
//! overlay's traffic from a busy one's. Counted are the CBOR bytes of each
//! message; the stream's negotiation (about 40 bytes per request: one
//! substream per request) and the transport's framing and encryption are not.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;

use super::ControlCodec;
use super::protocol::{ControlRequest, ControlResponse};
use crate::model::{ControlTally, MessageRole};

/// The kind of a message that did not decode (oversized, garbled, unknown).
const UNDECODABLE: &str = "undecodable";

/// Counters shared by every connection's codec of one node.
#[derive(Debug, Default)]
pub struct ControlTraffic {
    tallies: Mutex<BTreeMap<(&'static str, MessageRole), ControlTally>>,
}

impl ControlTraffic {
    fn count(&self, kind: &'static str, role: MessageRole, bytes: u64, sent: bool) {
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let tally = tallies.entry((kind, role)).or_insert_with(|| ControlTally {
            kind: kind.to_string(),
            message: role,
            ..ControlTally::default()
        });
        if sent {
            tally.sent += 1;
            tally.sent_bytes += bytes;
        } else {
            tally.received += 1;
            tally.received_bytes += bytes;
        }
    }

    /// Every kind seen so far, by kind then request before answer.
    pub fn tallies(&self) -> Vec<ControlTally> {
        let tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        tallies.values().cloned().collect()
    }
}

/// The node's CBOR codec, counting what passes through it.
#[derive(Clone)]
pub(super) struct CountingCodec {
    inner: ControlCodec,
    traffic: Arc<ControlTraffic>,
}

impl CountingCodec {
    pub(super) fn new(inner: ControlCodec, traffic: Arc<ControlTraffic>) -> Self {
        Self { inner, traffic }
    }
}

impl Codec for CountingCodec {
    type Protocol = StreamProtocol;
    type Request = ControlRequest;
    type Response = ControlResponse;

    async fn read_request<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<ControlRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut io = Counted::new(io);
        let read = self.inner.read_request(p, &mut io).await;
        let kind = read.as_ref().map_or(UNDECODABLE, ControlRequest::kind);
        self.traffic
            .count(kind, MessageRole::Request, io.bytes, false);
        read
    }

    async fn read_response<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<ControlResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut io = Counted::new(io);
        let read = self.inner.read_response(p, &mut io).await;
        let kind = read.as_ref().map_or(UNDECODABLE, ControlResponse::kind);
        self.traffic
            .count(kind, MessageRole::Answer, io.bytes, false);
        read
    }

    async fn write_request<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        request: ControlRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let kind = request.kind();
        let mut io = Counted::new(io);
        let written = self.inner.write_request(p, &mut io, request).await;
        self.traffic
            .count(kind, MessageRole::Request, io.bytes, true);
        written
    }

    async fn write_response<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        response: ControlResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let kind = response.kind();
        let mut io = Counted::new(io);
        let written = self.inner.write_response(p, &mut io, response).await;
        self.traffic
            .count(kind, MessageRole::Answer, io.bytes, true);
        written
    }
}

/// A stream that counts the bytes read from or written to it.
struct Counted<'a, T> {
    io: &'a mut T,
    bytes: u64,
}

impl<'a, T> Counted<'a, T> {
    fn new(io: &'a mut T) -> Self {
        Self { io, bytes: 0 }
    }

    fn add(&mut self, done: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = done {
            self.bytes += n as u64;
        }
        done
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let done = Pin::new(&mut *self.io).poll_read(cx, buf);
        self.add(done)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let done = Pin::new(&mut *self.io).poll_write(cx, buf);
        self.add(done)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_close(cx)
    }
}

impl ControlRequest {
    /// The message's kind, as counted and shown (`status --json`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PrepareMigration { .. } => "PrepareMigration",
            Self::MigrationEnded { .. } => "MigrationEnded",
            Self::ListServices => "ListServices",
            Self::VmState { .. } => "VmState",
            Self::Snapshot { .. } => "Snapshot",
            Self::Digest => "Digest",
            Self::VmFigures { .. } => "VmFigures",
            Self::VmAction { .. } => "VmAction",
            Self::Operations { .. } => "Operations",
            Self::VmBootLog { .. } => "VmBootLog",
            Self::Redeem { .. } => "Redeem",
            Self::GroupMembers { .. } => "GroupMembers",
            Self::Trimming => "Trimming",
        }
    }
}

impl ControlResponse {
    /// The answer's kind, as counted and shown (`status --json`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MigrationAccepted { .. } => "MigrationAccepted",
            Self::Refused { .. } => "Refused",
            Self::Ack => "Ack",
            Self::MigrationStats { .. } => "MigrationStats",
            Self::Services { .. } => "Services",
            Self::VmState { .. } => "VmState",
            Self::Snapshot { .. } => "Snapshot",
            Self::Digest { .. } => "Digest",
            Self::VmFigures { .. } => "VmFigures",
            Self::Operations { .. } => "Operations",
            Self::Acted { .. } => "Acted",
            Self::BootLog { .. } => "BootLog",
            Self::Joined { .. } => "Joined",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::control_codec;
    use crate::node::protocol::CONTROL_PROTOCOL;
    use futures::executor::block_on;

    fn codec() -> (CountingCodec, Arc<ControlTraffic>) {
        let traffic = Arc::new(ControlTraffic::default());
        (
            CountingCodec::new(control_codec(), traffic.clone()),
            traffic,
        )
    }

    fn tally(
        kind: &str,
        message: MessageRole,
        sent: (u64, u64),
        received: (u64, u64),
    ) -> ControlTally {
        ControlTally {
            kind: kind.into(),
            message,
            sent: sent.0,
            sent_bytes: sent.1,
            received: received.0,
            received_bytes: received.1,
        }
    }

    /// A console's node asks a host for figures twice, once refused: each
    /// side counts each message under its own kind, request or answer, with
    /// the bytes that crossed.
    #[test]
    fn each_kind_is_counted_each_way_with_its_bytes() {
        let (mut console, console_traffic) = codec();
        let (mut host, host_traffic) = codec();
        let request = ControlRequest::VmFigures {
            vms: vec!["web-1".into(), "db-1".into()],
            history: false,
        };
        let figures = ControlResponse::VmFigures {
            vms: Vec::new(),
            round: 7,
            operations: Vec::new(),
        };
        let refused = ControlResponse::Refused {
            reason: "peer-a lacks the observe role".into(),
        };
        let mut sizes = (0, 0, 0);
        for answer in [figures, refused.clone()] {
            let mut wire = Vec::new();
            block_on(async {
                let mut out = futures::io::Cursor::new(&mut wire);
                console
                    .write_request(&CONTROL_PROTOCOL, &mut out, request.clone())
                    .await
                    .unwrap();
            });
            sizes.0 = wire.len() as u64;
            let asked = block_on(host.read_request(&CONTROL_PROTOCOL, &mut &wire[..])).unwrap();
            assert_eq!(asked, request);
            let is_refusal = answer == refused;
            let mut wire = Vec::new();
            block_on(async {
                let mut out = futures::io::Cursor::new(&mut wire);
                host.write_response(&CONTROL_PROTOCOL, &mut out, answer)
                    .await
                    .unwrap();
            });
            if is_refusal {
                sizes.2 = wire.len() as u64;
            } else {
                sizes.1 = wire.len() as u64;
            }
            block_on(console.read_response(&CONTROL_PROTOCOL, &mut &wire[..])).unwrap();
        }
        let (request_bytes, figures_bytes, refusal_bytes) = sizes;
        assert!(request_bytes > 10 && figures_bytes > 10 && refusal_bytes > figures_bytes);
        assert_eq!(
            console_traffic.tallies(),
            vec![
                tally("Refused", MessageRole::Answer, (0, 0), (1, refusal_bytes)),
                tally(
                    "VmFigures",
                    MessageRole::Request,
                    (2, 2 * request_bytes),
                    (0, 0)
                ),
                tally("VmFigures", MessageRole::Answer, (0, 0), (1, figures_bytes)),
            ]
        );
        assert_eq!(
            host_traffic.tallies(),
            vec![
                tally("Refused", MessageRole::Answer, (1, refusal_bytes), (0, 0)),
                tally(
                    "VmFigures",
                    MessageRole::Request,
                    (0, 0),
                    (2, 2 * request_bytes)
                ),
                tally("VmFigures", MessageRole::Answer, (1, figures_bytes), (0, 0)),
            ]
        );
    }

    /// Garbage is counted as such (its bytes read), not under a real kind.
    #[test]
    fn an_undecodable_message_is_counted_apart() {
        let (mut host, traffic) = codec();
        let garbage = [0xffu8; 9];
        assert!(block_on(host.read_request(&CONTROL_PROTOCOL, &mut &garbage[..])).is_err());
        assert_eq!(
            traffic.tallies(),
            vec![tally(UNDECODABLE, MessageRole::Request, (0, 0), (1, 9))]
        );
    }

    /// Each message is counted under its own variant's name (the compiler
    /// checks every variant has one; this checks it is the right one).
    #[test]
    fn kinds_are_the_variants_names() {
        use crate::node::codec_io::{
            read_request, read_response, sample_requests, sample_responses,
        };
        fn variant(debug: String) -> String {
            debug
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect()
        }
        for bytes in sample_requests() {
            let request = read_request(&bytes).unwrap();
            assert_eq!(request.kind(), variant(format!("{request:?}")));
        }
        for bytes in sample_responses() {
            let response = read_response(&bytes).unwrap();
            assert_eq!(response.kind(), variant(format!("{response:?}")));
        }
    }
}
