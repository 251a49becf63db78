//! NAT traversal: circuit relay v2 and hole punching (DCUtR).
//!
//! A peer started with `--relay-server` forwards circuits between other members.
//! It only ever sees the membership proof and noise ciphertext: the two ends run
//! the same upgrade over the circuit as over a direct TCP connection (transport.rs).
//! Every peer (unless `--no-relay-client`) keeps a reservation on up to
//! [`MAX_RELAYS`] directly connected relay peers and advertises the resulting
//! `/p2p-circuit` address through identify, so peers that cannot dial it directly
//! reach it through a relay. Reachability is per pair of peers (a relay may dial a
//! peer that others cannot), so the reservation is kept whether or not this peer
//! looks reachable; direct addresses are dialed alongside it, and DCUtR then tries
//! to replace a relayed connection by a direct one (TCP simultaneous open through
//! both NATs; the transport reuses the listen port for outgoing connections, so a
//! port-preserving NAT maps both to the same public port). A relay server offers
//! relaying only once AutoNAT confirmed an external address (reachability.rs).

use std::collections::HashMap;
use std::time::Duration;

use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, dcutr, identify, relay};

use super::EventLoop;

/// How this node takes part in relaying.
#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    /// Forward circuits for other members (`--relay-server`).
    pub serve: bool,
    /// Reserve a slot on relay peers and advertise the circuit address.
    pub reserve: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            serve: false,
            reserve: true,
        }
    }
}

/// Relays a node keeps a reservation on at once.
pub const MAX_RELAYS: usize = 2;

/// The relay server. Every peer that can open a circuit has passed the membership
/// proof, so the limits guard against mistakes, not strangers: a circuit may carry
/// a migration or a long consumption, so there is no byte limit (0) and a day's
/// duration (the connection is redialed after). libp2p's default rate limits (one
/// circuit per 2 min per peer once a burst of 30 is spent) are dropped: a peer
/// retrying every 3 s through a long partition would be locked out for hours.
pub(super) fn server(peer_id: PeerId) -> relay::Behaviour {
    relay::Behaviour::new(
        peer_id,
        relay::Config {
            max_circuits: 64,
            max_circuits_per_peer: 8,
            max_circuit_duration: Duration::from_secs(24 * 3600),
            max_circuit_bytes: 0,
            reservation_rate_limiters: Vec::new(),
            circuit_src_rate_limiters: Vec::new(),
            ..Default::default()
        },
    )
}

/// Reservations this node holds or is asking for, by listener.
#[derive(Default)]
pub(super) struct Reservations {
    pending_or_active: HashMap<ListenerId, Reservation>,
}

impl Reservations {
    /// The address this node reserved a slot on `relay` at.
    pub(super) fn address_of(&self, relay: &PeerId) -> Option<Multiaddr> {
        self.pending_or_active
            .values()
            .find(|r| r.relay == *relay)
            .map(|r| r.at.clone())
    }

    /// Whether this node holds (or asked for) a slot on `relay`.
    pub(super) fn on(&self, relay: &PeerId) -> bool {
        self.pending_or_active.values().any(|r| r.relay == *relay)
    }
}

struct Reservation {
    relay: PeerId,
    /// The relay's address the reservation was made at (without its peer id).
    at: Multiaddr,
}

impl EventLoop {
    /// A peer identified itself: if it offers relaying and this node needs another
    /// relay, reserve a slot on it.
    pub(super) fn consider_relay(&mut self, peer: PeerId, info: &identify::Info) {
        let config = self.relay_config;
        if !config.reserve {
            return;
        }
        // A relay server that AutoNAT found public needs no slot elsewhere; one
        // behind NAT (or not probed yet) is reached like any other peer.
        if config.serve && self.swarm.behaviour().autonat.public_address().is_some() {
            return;
        }
        if !info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            return;
        }
        let held = &self.reservations.pending_or_active;
        if held.len() >= MAX_RELAYS || held.values().any(|r| r.relay == peer) {
            return;
        }
        if !self.links.is_direct(&peer) {
            return; // no relaying through a relayed connection
        }
        // The address this node dialed the relay at; else one it listens on,
        // preferring one that is not loopback (others will dial it too).
        let direct = || {
            info.listen_addrs
                .iter()
                .filter(|a| super::links::relay_of(a).is_none())
        };
        let Some(base) = self
            .links
            .dialed_address(&peer)
            .or_else(|| direct().find(|a| !is_loopback(a)).cloned())
            .or_else(|| direct().next().cloned())
        else {
            return;
        };
        let at = without_peer_id(base);
        let circuit = at
            .clone()
            .with(Protocol::P2p(peer))
            .with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(id) => {
                let reservation = Reservation { relay: peer, at };
                self.reservations.pending_or_active.insert(id, reservation);
                tracing::info!(
                    "asking {} for a relay slot ({circuit})",
                    self.display_name(&peer)
                );
            }
            Err(e) => tracing::warn!("cannot reserve on relay {}: {e}", self.display_name(&peer)),
        }
    }

    /// A listener ended; when it was a relay reservation, the slot is gone (the
    /// relay left or refused) and the next identified relay may take its place.
    pub(super) fn on_listener_closed(&mut self, id: ListenerId, reason: &str) {
        if let Some(reservation) = self.reservations.pending_or_active.remove(&id) {
            tracing::info!(
                "relay slot on {} closed{reason}",
                self.display_name(&reservation.relay)
            );
        }
    }

    /// Records how a new connection reaches its peer (direct, or which relay).
    pub(super) fn note_connection(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        let held = &self.reservations.pending_or_active;
        let relay_at = |addr: &Multiaddr| held.values().find(|r| &r.at == addr).map(|r| r.relay);
        self.links.opened(peer, id, endpoint, relay_at);
    }

    pub(super) fn on_relay_client_event(&mut self, event: relay::client::Event) {
        use relay::client::Event as E;
        match event {
            E::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                if !renewal {
                    tracing::info!(
                        "reachable through relay {}",
                        self.display_name(&relay_peer_id)
                    );
                }
            }
            E::OutboundCircuitEstablished { relay_peer_id, .. } => tracing::debug!(
                "circuit through relay {} established",
                self.display_name(&relay_peer_id)
            ),
            E::InboundCircuitEstablished { src_peer_id, .. } => tracing::debug!(
                "peer {} reached this node through a relay",
                self.display_name(&src_peer_id)
            ),
        }
    }

    pub(super) fn on_relay_server_event(&mut self, event: relay::Event) {
        use relay::Event as E;
        match event {
            E::ReservationReqAccepted { src_peer_id, .. } => {
                tracing::debug!("relay: slot for {}", self.display_name(&src_peer_id))
            }
            E::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => tracing::info!(
                "relaying {} -> {}",
                self.display_name(&src_peer_id),
                self.display_name(&dst_peer_id)
            ),
            E::CircuitReqDenied {
                src_peer_id,
                dst_peer_id,
                status,
            } => tracing::warn!(
                "relay: circuit {} -> {} denied: {status:?}",
                self.display_name(&src_peer_id),
                self.display_name(&dst_peer_id)
            ),
            E::ReservationReqDenied {
                src_peer_id,
                status,
            } => tracing::warn!(
                "relay: slot for {} denied: {status:?}",
                self.display_name(&src_peer_id)
            ),
            other => tracing::debug!("relay: {other:?}"),
        }
    }

    /// A punched connection replaces the relayed one: new streams (services,
    /// migrations, control) take the direct path at once, and the relayed
    /// connections to that peer close once the streams that may ride them have
    /// ended (retire.rs), so a migration or consumption started over the relay
    /// before the punch is not cut.
    pub(super) fn on_dcutr_event(&mut self, event: dcutr::Event) {
        let peer = event.remote_peer_id;
        let who = self.display_name(&peer);
        match event.result {
            Ok(_) => {
                self.repunches.forget(&peer);
                let relayed = self.links.relayed_connections(&peer);
                tracing::info!(
                    "hole punched: direct connection to {who}; {} relayed connection(s) close once their streams end",
                    relayed.len()
                );
                self.retire_relayed(peer, super::retire::Cause::Punched, None);
            }
            Err(e) => self.on_punch_failed(peer, &e.to_string()),
        }
    }
}

fn without_peer_id(mut addr: Multiaddr) -> Multiaddr {
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}
