//! A behaviour wrapper that can hide a connection from the behaviour inside:
//! the inner behaviour is told the connection closed, so it stops choosing it for
//! new streams or requests, while the connection itself stays open and its
//! handler keeps serving what already runs on it (what it reports to the
//! behaviour meanwhile is dropped: the behaviour thinks it closed). Used for a
//! relayed connection replaced by a punched one (retire.rs) and an AutoNAT
//! dial-back (reachability.rs).

use std::collections::{HashMap, HashSet};
use std::ops::{Deref, DerefMut};
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::swarm::behaviour::ConnectionEstablished;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

pub(super) struct Hideable<B> {
    inner: B,
    /// Every open connection's peer and endpoint: telling the inner behaviour
    /// that one closed or opened takes them.
    endpoints: HashMap<ConnectionId, (PeerId, ConnectedPoint)>,
    hidden: HashSet<ConnectionId>,
}

impl<B> Hideable<B> {
    pub(super) fn new(inner: B) -> Self {
        Hideable {
            inner,
            endpoints: HashMap::new(),
            hidden: HashSet::new(),
        }
    }

    /// Connections to `peer` the inner behaviour knows of, besides `except`.
    fn visible(&self, peer: &PeerId, except: ConnectionId) -> usize {
        self.endpoints
            .iter()
            .filter(|(id, (p, _))| p == peer && **id != except && !self.hidden.contains(id))
            .count()
    }
}

impl<B: NetworkBehaviour> Hideable<B> {
    /// The inner behaviour no longer sees `connection` (told it closed).
    pub(super) fn hide(&mut self, connection: ConnectionId) {
        let Some((peer_id, endpoint)) = self.endpoints.get(&connection).cloned() else {
            return;
        };
        if !self.hidden.insert(connection) {
            return;
        }
        let remaining_established = self.visible(&peer_id, connection);
        self.inner
            .on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id: connection,
                endpoint: &endpoint,
                cause: None,
                remaining_established,
            }));
    }

    /// Undoes [`Hideable::hide`].
    pub(super) fn show(&mut self, connection: ConnectionId) {
        let Some((peer_id, endpoint)) = self.endpoints.get(&connection).cloned() else {
            return;
        };
        if !self.hidden.remove(&connection) {
            return;
        }
        let other_established = self.visible(&peer_id, connection);
        self.inner
            .on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id: connection,
                endpoint: &endpoint,
                failed_addresses: &[],
                other_established,
            }));
    }
}

impl<B> Deref for Hideable<B> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.inner
    }
}

impl<B> DerefMut for Hideable<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for Hideable<B> {
    type ConnectionHandler = B::ConnectionHandler;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.endpoints
                    .insert(e.connection_id, (e.peer_id, e.endpoint.clone()));
                // The inner behaviour counts only the connections it sees.
                let other_established = self.visible(&e.peer_id, e.connection_id);
                self.inner.on_swarm_event(FromSwarm::ConnectionEstablished(
                    ConnectionEstablished {
                        other_established,
                        ..e
                    },
                ));
            }
            FromSwarm::ConnectionClosed(e) => {
                let was_hidden = self.hidden.remove(&e.connection_id);
                self.endpoints.remove(&e.connection_id);
                if was_hidden {
                    return; // the inner behaviour was told when it was hidden
                }
                let remaining_established = self.visible(&e.peer_id, e.connection_id);
                self.inner
                    .on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                        remaining_established,
                        ..e
                    }));
            }
            other => self.inner.on_swarm_event(other),
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        // The inner behaviour was told a hidden connection closed: what its
        // handler still reports is about a connection it no longer has (an
        // answer to a request it already failed, a request it can no longer
        // take). request-response asserts it never hears of one ("Expect
        // request_id to be pending before response is omitted", seen in debug
        // builds while an overlay forms); release builds passed them on as
        // stray failures. Dropped, a request that arrives there goes
        // unanswered, as it did: its sender sees the stream end.
        if self.hidden.contains(&connection_id) {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::swarm::dummy;

    /// Records what the swarm (or the wrapper) tells it: (connection, opened?, count).
    #[derive(Default)]
    struct Recorder(Vec<(ConnectionId, bool, usize)>);

    impl NetworkBehaviour for Recorder {
        type ConnectionHandler = dummy::ConnectionHandler;
        type ToSwarm = ();
        fn handle_established_inbound_connection(
            &mut self,
            _: ConnectionId,
            _: PeerId,
            _: &Multiaddr,
            _: &Multiaddr,
        ) -> Result<THandler<Self>, ConnectionDenied> {
            Ok(dummy::ConnectionHandler)
        }
        fn handle_established_outbound_connection(
            &mut self,
            _: ConnectionId,
            _: PeerId,
            _: &Multiaddr,
            _: Endpoint,
            _: PortUse,
        ) -> Result<THandler<Self>, ConnectionDenied> {
            Ok(dummy::ConnectionHandler)
        }
        fn on_swarm_event(&mut self, event: FromSwarm) {
            match event {
                FromSwarm::ConnectionEstablished(e) => {
                    self.0.push((e.connection_id, true, e.other_established))
                }
                FromSwarm::ConnectionClosed(e) => {
                    self.0
                        .push((e.connection_id, false, e.remaining_established))
                }
                _ => {}
            }
        }
        fn on_connection_handler_event(
            &mut self,
            _: PeerId,
            _: ConnectionId,
            e: THandlerOutEvent<Self>,
        ) {
            libp2p::core::util::unreachable(e)
        }
        fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<(), THandlerInEvent<Self>>> {
            Poll::Pending
        }
    }

    fn endpoint() -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: "/ip4/10.0.0.2/tcp/7470".parse().unwrap(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    fn opened(h: &mut Hideable<Recorder>, peer: PeerId, id: ConnectionId, others: usize) {
        let endpoint = endpoint();
        h.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: peer,
            connection_id: id,
            endpoint: &endpoint,
            failed_addresses: &[],
            other_established: others,
        }));
    }

    fn closed(h: &mut Hideable<Recorder>, peer: PeerId, id: ConnectionId, remaining: usize) {
        let endpoint = endpoint();
        h.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: peer,
            connection_id: id,
            endpoint: &endpoint,
            cause: None,
            remaining_established: remaining,
        }));
    }

    #[test]
    fn a_hidden_connection_looks_closed_inside_once_and_counts_stay_consistent() {
        let peer = PeerId::random();
        let (relayed, direct) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        let mut h = Hideable::new(Recorder::default());
        opened(&mut h, peer, relayed, 0);
        opened(&mut h, peer, direct, 1);
        h.hide(relayed);
        h.hide(relayed); // twice: told once
        assert_eq!(
            h.0,
            vec![(relayed, true, 0), (direct, true, 1), (relayed, false, 1)]
        );
        // The direct one closes while the hidden one is still open: the swarm
        // counts 1 left, the inner behaviour has none.
        closed(&mut h, peer, direct, 1);
        assert_eq!(h.0.last(), Some(&(direct, false, 0)));
        // Shown again, then really closed: each once.
        h.show(relayed);
        closed(&mut h, peer, relayed, 0);
        assert_eq!(&h.0[4..], &[(relayed, true, 0), (relayed, false, 0)]);
        // Hidden and then really closed: the real close is not passed on.
        let other = ConnectionId::new_unchecked(3);
        opened(&mut h, peer, other, 0);
        h.hide(other);
        let told = h.0.len();
        closed(&mut h, peer, other, 0);
        assert_eq!(h.0.len(), told);
    }
}
