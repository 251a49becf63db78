//! Byte streams to other peers (libp2p-stream), with a ledger of the ones open.
//!
//! Every stream the runtime opens or accepts (service proxy, migration tunnel and
//! channel, replication, handover) is a [`Stream`] entered in a [`Ledger`] until
//! it is dropped. After a hole punch, a relayed connection to the peer is closed
//! only once the streams that may be on it have ended (relay.rs): libp2p does not
//! say which connection a stream rides, so the ledger answers "which streams with
//! this peer were opened before the punch".
//!
//! [`Behaviour`] wraps libp2p-stream's behaviour to note when the peer last
//! opened a stream on each connection. libp2p-stream opens a new stream on a
//! connection chosen at random among the peer's connections; a retiring relayed
//! connection is hidden from it (hide.rs), so new streams take the direct path
//! at once, while streams the peer opens on the hidden connection are still
//! accepted.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::{AsyncRead, AsyncWrite, StreamExt};
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, StreamProtocol};

/// The streams of ours open right now, with their peer and when each was opened.
#[derive(Clone, Default)]
pub(super) struct Ledger(Arc<Mutex<LedgerInner>>);

#[derive(Default)]
struct LedgerInner {
    next: u64,
    open: HashMap<u64, Opened>,
}

struct Opened {
    peer: PeerId,
    at: Instant,
    /// Opened by the peer (accepted here).
    inbound: bool,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enter(&self, peer: PeerId, inbound: bool) -> Entry {
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        let at = Instant::now();
        inner.open.insert(id, Opened { peer, at, inbound });
        Entry {
            ledger: self.clone(),
            id,
        }
    }

    /// Streams with `peer` still open that this node opened (or began to open)
    /// before `outbound`, or accepted before `inbound`.
    pub(super) fn open_before(
        &self,
        peer: &PeerId,
        outbound: Instant,
        inbound: Option<Instant>,
    ) -> usize {
        self.lock()
            .open
            .values()
            .filter(|o| {
                let cutoff = if o.inbound { inbound } else { Some(outbound) };
                o.peer == *peer && cutoff.is_some_and(|t| o.at < t)
            })
            .count()
    }
}

/// A stream's place in the ledger; removed when the stream is dropped.
struct Entry {
    ledger: Ledger,
    id: u64,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.ledger.lock().open.remove(&self.id);
    }
}

/// A byte stream to another peer (a libp2p stream, counted in the ledger).
pub struct Stream {
    inner: libp2p::Stream,
    _entry: Entry,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read_vectored(cx, bufs)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// Opens and accepts streams (libp2p-stream's `Control`, with the ledger).
#[derive(Clone)]
pub struct StreamControl {
    inner: libp2p_stream::Control,
    ledger: Ledger,
}

/// Times an open is tried again when its connection closed under it.
const OPEN_RETRIES: u32 = 3;

/// libp2p-stream picks one of the peer's connections at random; if that one
/// closes before the stream is open (a duplicate or an AutoNAT dial-back being
/// retired), the open fails with ConnectionReset though the peer is there and
/// nothing was sent: another connection, or a new dial, may well succeed. A
/// failed dial is NotConnected and is not retried.
fn closed_under_the_open(e: &libp2p_stream::OpenStreamError) -> bool {
    matches!(e, libp2p_stream::OpenStreamError::Io(io) if io.kind() == io::ErrorKind::ConnectionReset)
}

impl StreamControl {
    /// Opens a stream to `peer` (dialing it if needed).
    pub async fn open_stream(
        &mut self,
        peer: PeerId,
        protocol: StreamProtocol,
    ) -> Result<Stream, libp2p_stream::OpenStreamError> {
        // Entered before the stream exists: libp2p-stream picks the connection
        // as the open starts, so one begun before a relayed connection was
        // hidden counts as opened before it.
        let entry = self.ledger.enter(peer, false);
        let mut retries = 0;
        let inner = loop {
            match self.inner.open_stream(peer, protocol.clone()).await {
                Err(e) if retries < OPEN_RETRIES && closed_under_the_open(&e) => {
                    retries += 1;
                    tracing::debug!("stream to {peer}: {e}; opening it again ({retries})");
                }
                result => break result?,
            }
        };
        Ok(Stream {
            inner,
            _entry: entry,
        })
    }

    /// Streams other peers open with `protocol`, as they come.
    pub fn accept(
        &mut self,
        protocol: StreamProtocol,
    ) -> Result<
        impl futures::Stream<Item = (PeerId, Stream)> + Unpin + Send + use<>,
        libp2p_stream::AlreadyRegistered,
    > {
        let ledger = self.ledger.clone();
        let incoming = self.inner.accept(protocol)?;
        Ok(incoming.map(move |(peer, inner)| {
            let entry = ledger.enter(peer, true);
            (
                peer,
                Stream {
                    inner,
                    _entry: entry,
                },
            )
        }))
    }
}

/// When each connection last delivered a stream the peer opened.
type Arrivals = Arc<Mutex<HashMap<ConnectionId, Instant>>>;

/// libp2p-stream's behaviour, with the ledger and each connection's last
/// inbound stream.
#[derive(Default)]
pub(super) struct Behaviour {
    inner: libp2p_stream::Behaviour,
    ledger: Ledger,
    arrivals: Arrivals,
}

impl Behaviour {
    pub(super) fn new_control(&self) -> StreamControl {
        StreamControl {
            inner: self.inner.new_control(),
            ledger: self.ledger.clone(),
        }
    }

    pub(super) fn ledger(&self) -> Ledger {
        self.ledger.clone()
    }

    /// When the peer last opened a stream on `connection` (None: never).
    pub(super) fn last_arrival(&self, connection: ConnectionId) -> Option<Instant> {
        let arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        arrivals.get(&connection).copied()
    }

    /// The connection closed (really: a hidden one only looks closed to the
    /// inner behaviour, and its arrivals still count).
    pub(super) fn forget(&mut self, connection: ConnectionId) {
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        arrivals.remove(&connection);
    }

    fn handler(&self, connection: ConnectionId, inner: InnerHandler) -> Handler {
        Handler {
            inner,
            connection,
            arrivals: self.arrivals.clone(),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = <libp2p_stream::Behaviour as NetworkBehaviour>::ToSwarm;

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let inner = self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )?;
        Ok(self.handler(connection_id, inner))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let inner = self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )?;
        Ok(self.handler(connection_id, inner))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}

type InnerHandler = <libp2p_stream::Behaviour as NetworkBehaviour>::ConnectionHandler;

/// libp2p-stream's connection handler, noting when the peer opens a stream on
/// this connection.
pub(super) struct Handler {
    inner: InnerHandler,
    connection: ConnectionId,
    arrivals: Arrivals,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = <InnerHandler as ConnectionHandler>::FromBehaviour;
    type ToBehaviour = <InnerHandler as ConnectionHandler>::ToBehaviour;
    type InboundProtocol = <InnerHandler as ConnectionHandler>::InboundProtocol;
    type OutboundProtocol = <InnerHandler as ConnectionHandler>::OutboundProtocol;
    type InboundOpenInfo = <InnerHandler as ConnectionHandler>::InboundOpenInfo;
    type OutboundOpenInfo = <InnerHandler as ConnectionHandler>::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.inner.listen_protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        self.inner.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        self.inner.poll(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.inner.poll_close(cx)
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        self.inner.on_behaviour_event(event)
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        if matches!(event, ConnectionEvent::FullyNegotiatedInbound(_)) {
            let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
            arrivals.insert(self.connection, Instant::now());
        }
        self.inner.on_connection_event(event)
    }
}
