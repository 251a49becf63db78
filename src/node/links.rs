//! How this node reaches each peer (per connection: directly, or through which
//! relay), and liveness: a connection that has not answered a ping for
//! [`SILENCE_LIMIT`] is closed, so a peer that crashed or was cut off is shown as
//! gone within seconds instead of when TCP finally gives up (many minutes on a
//! silent partition).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, ping};

use super::EventLoop;

/// Ping every connection this often. Pings are most of what an idle
/// connection sends (a write each way per ping, 57 % of an idle peer's writes
/// at 2 s: docs/scale.md), so no more often than the silence limit needs: an
/// answer may come 6 s late and the connection still holds.
pub(super) const PING_INTERVAL: Duration = Duration::from_secs(4);
/// ...and count one ping as failed after this long: as long as the silence
/// tolerated, so a slow answer on a loaded host still counts (with 3 s, every
/// ping of 100 simulated peers on 2 busy cores failed and no link held).
pub(super) const PING_TIMEOUT: Duration = SILENCE_LIMIT;
/// A connection with no answered ping for this long is closed: at least one
/// interval plus a late answer, so one slow answer on a loaded host does not
/// drop a peer (2.5 intervals; it was four of 2 s). libp2p's own failure
/// report comes later (two failures in a row). Checked every 3 s, so a silent
/// peer is gone after 10 to 13 s.
pub(super) const SILENCE_LIMIT: Duration = Duration::from_secs(10);

/// How many announcements in a row may say "links unchanged" before one
/// carries them again anyway, for peers that missed the last one that did (a
/// joining peer's snapshot has none): a quarter of the announcements at most,
/// at any overlay size.
const LINKS_RESENT_EVERY: u32 = 4;

/// Which of this node's announcements carry its links (the peers it is
/// connected to): those whose links changed, and every
/// [`LINKS_RESENT_EVERY`]th. Links were most of an announcement's bytes and
/// pushed it past gossipsub's IDONTWANT threshold (docs/scale.md).
#[derive(Default)]
pub(super) struct LinksSent {
    last: Option<Vec<String>>,
    unchanged_since: u32,
}

impl LinksSent {
    /// The links for the next announcement, or `None` for "unchanged".
    pub(super) fn next(&mut self, mut current: Vec<String>) -> Option<Vec<String>> {
        current.sort();
        if self.last.as_ref() == Some(&current) && self.unchanged_since + 1 < LINKS_RESENT_EVERY {
            self.unchanged_since += 1;
            return None;
        }
        self.unchanged_since = 0;
        self.last = Some(current.clone());
        Some(current)
    }

    /// The announcement was not sent: the next one carries the links.
    pub(super) fn unsent(&mut self) {
        *self = LinksSent::default();
    }
}

#[derive(Default)]
pub(super) struct Links {
    connections: HashMap<PeerId, HashMap<ConnectionId, Link>>,
}

struct Link {
    opened: Instant,
    /// When the peer last answered a ping here (or the connection opened).
    answered: Instant,
    /// The peer's address, when this node dialed it (not a relayed one).
    dialed: Option<Multiaddr>,
    /// The relay in between, for a circuit.
    relay: Option<PeerId>,
}

impl Links {
    /// `relay_at` names the relay behind one of this node's reservation addresses:
    /// an inbound circuit only shows the relay's address, not its peer id.
    pub(super) fn opened(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        endpoint: &ConnectedPoint,
        relay_at: impl Fn(&Multiaddr) -> Option<PeerId>,
    ) {
        let remote = endpoint.get_remote_address();
        let relay = match endpoint {
            _ if !endpoint.is_relayed() => None,
            ConnectedPoint::Dialer { address, .. } => relay_of(address),
            ConnectedPoint::Listener { local_addr, .. } => {
                relay_of(local_addr).or_else(|| relay_at(&without_circuit(local_addr)))
            }
        };
        let dialed = (endpoint.is_dialer() && relay.is_none()).then(|| remote.clone());
        self.connections.entry(peer).or_default().insert(
            id,
            Link {
                opened: Instant::now(),
                answered: Instant::now(),
                dialed,
                relay,
            },
        );
    }

    pub(super) fn answered(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(link) = self.connections.get_mut(&peer).and_then(|l| l.get_mut(&id)) {
            link.answered = Instant::now();
        }
    }

    /// Connections silent for longer than `limit`.
    fn silent(&self, limit: Duration) -> Vec<(PeerId, ConnectionId, Duration)> {
        let mut silent = Vec::new();
        for (peer, links) in &self.connections {
            for (id, link) in links {
                let quiet = link.answered.elapsed();
                if quiet > limit {
                    silent.push((*peer, *id, quiet));
                }
            }
        }
        silent
    }

    pub(super) fn closed(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(links) = self.connections.get_mut(&peer) {
            links.remove(&id);
            if links.is_empty() {
                self.connections.remove(&peer);
            }
        }
    }

    /// Peers all of whose connections opened more than `age` ago.
    pub(super) fn older_than(&self, age: Duration) -> Vec<PeerId> {
        self.connections
            .iter()
            .filter(|(_, links)| links.values().all(|l| l.opened.elapsed() > age))
            .map(|(peer, _)| *peer)
            .collect()
    }

    pub(super) fn connections_to(&self, peer: &PeerId) -> Vec<ConnectionId> {
        self.connections
            .get(peer)
            .map(|links| links.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The relay a peer is reached through, when no connection to it is direct.
    pub(super) fn relayed_via(&self, peer: &PeerId) -> Option<PeerId> {
        let links = self.connections.get(peer)?;
        if links.values().any(|l| l.relay.is_none()) {
            return None;
        }
        links.values().find_map(|l| l.relay)
    }

    /// The connections to a peer that go through a relay.
    pub(super) fn relayed_connections(&self, peer: &PeerId) -> Vec<ConnectionId> {
        self.connections
            .get(peer)
            .into_iter()
            .flatten()
            .filter(|(_, link)| link.relay.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether at least one connection to the peer is direct.
    pub(super) fn is_direct(&self, peer: &PeerId) -> bool {
        self.connections
            .get(peer)
            .is_some_and(|links| links.values().any(|l| l.relay.is_none()))
    }

    /// An address this node reached the peer at directly.
    pub(super) fn dialed_address(&self, peer: &PeerId) -> Option<Multiaddr> {
        self.connections
            .get(peer)?
            .values()
            .find_map(|l| l.dialed.clone())
    }
}

/// `/ip4/…/tcp/…/p2p-circuit` → `/ip4/…/tcp/…`.
fn without_circuit(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .take_while(|p| !matches!(p, Protocol::P2pCircuit))
        .collect()
}

/// Whether an incoming connection's remote address is that of a circuit: libp2p
/// gives only the source's peer id (`/p2p/…`), no IP.
pub(super) fn is_circuit_source(addr: &Multiaddr) -> bool {
    !addr
        .iter()
        .any(|p| matches!(p, Protocol::Ip4(_) | Protocol::Ip6(_)))
}

/// The relay's peer id in a circuit address (`…/p2p/RELAY/p2p-circuit/…`).
pub(super) fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut last_peer = None;
    for protocol in addr.iter() {
        match protocol {
            Protocol::P2p(peer) => last_peer = Some(peer),
            Protocol::P2pCircuit => return last_peer,
            _ => {}
        }
    }
    None
}

impl EventLoop {
    /// Closes connections whose peer stopped answering pings.
    pub(super) fn close_silent_connections(&mut self) {
        let limit = self.health.silence_limit(SILENCE_LIMIT * self.time_scale);
        for (peer, id, quiet) in self.links.silent(limit) {
            tracing::info!(
                "peer {} silent for {:.1} s: closing that connection",
                self.display_name(&peer),
                quiet.as_secs_f64()
            );
            self.departures.closing_silent(id, Instant::now() - quiet);
            self.swarm.close_connection(id);
            // Counted once: the close completes asynchronously.
            self.links.answered(peer, id);
        }
    }

    /// Two pings in a row failed on this connection: the peer is gone (or the path
    /// to it is). Closing the connection makes it "disconnected" everywhere at
    /// once, and lets the redial logic find another path.
    pub(super) fn on_ping_failure(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        error: ping::Failure,
    ) {
        if matches!(error, ping::Failure::Unsupported) {
            return;
        }
        // Late answers on a node that is itself behind: the silence check,
        // which tolerates longer silences then, decides.
        if self.health.behind() {
            return;
        }
        tracing::info!(
            "peer {} stopped answering pings ({error}): closing that connection",
            self.display_name(&peer)
        );
        // Two pings in a row went unanswered.
        let since = Instant::now()
            .checked_sub(2 * (PING_INTERVAL + PING_TIMEOUT) * self.time_scale)
            .unwrap_or_else(Instant::now);
        self.departures.closing_silent(connection, since);
        self.swarm.close_connection(connection);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_of_a_circuit_address_is_the_peer_before_p2p_circuit() {
        let relay = PeerId::random();
        let target = PeerId::random();
        let addr: Multiaddr =
            format!("/ip4/10.0.0.1/tcp/7470/p2p/{relay}/p2p-circuit/p2p/{target}")
                .parse()
                .unwrap();
        assert_eq!(relay_of(&addr), Some(relay));
        let direct: Multiaddr = format!("/ip4/10.0.0.1/tcp/7470/p2p/{target}")
            .parse()
            .unwrap();
        assert_eq!(relay_of(&direct), None);
    }

    fn dialed(addr: &str) -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: addr.parse().unwrap(),
            role_override: libp2p::core::Endpoint::Dialer,
            port_use: libp2p::core::transport::PortUse::Reuse,
        }
    }

    #[test]
    fn a_peer_is_relayed_only_while_no_connection_to_it_is_direct() {
        let (relay, peer) = (PeerId::random(), PeerId::random());
        let mut links = Links::default();
        let circuit = format!("/ip4/10.0.0.1/tcp/7470/p2p/{relay}/p2p-circuit/p2p/{peer}");
        let (c1, c2) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        links.opened(peer, c1, &dialed(&circuit), |_| None);
        assert_eq!(links.relayed_via(&peer), Some(relay));
        assert!(!links.is_direct(&peer));

        // Hole punching succeeded: a direct connection joins the relayed one.
        links.opened(peer, c2, &dialed("/ip4/10.0.0.2/tcp/7470"), |_| None);
        assert_eq!(links.relayed_via(&peer), None);
        // ...and the relayed one is the one to close.
        assert_eq!(links.relayed_connections(&peer), vec![c1]);
        assert_eq!(
            links.dialed_address(&peer),
            Some("/ip4/10.0.0.2/tcp/7470".parse().unwrap())
        );
        links.closed(peer, c1);
        links.closed(peer, c2);
        assert_eq!(links.relayed_via(&peer), None);
        assert!(!links.is_direct(&peer));
    }

    #[test]
    fn an_inbound_circuit_names_its_relay_by_the_reservation_address() {
        let (relay, peer) = (PeerId::random(), PeerId::random());
        let mut links = Links::default();
        let inbound = ConnectedPoint::Listener {
            local_addr: "/ip4/10.0.0.1/tcp/7470/p2p-circuit".parse().unwrap(),
            send_back_addr: format!("/p2p/{peer}").parse().unwrap(),
        };
        let reserved_at: Multiaddr = "/ip4/10.0.0.1/tcp/7470".parse().unwrap();
        links.opened(peer, ConnectionId::new_unchecked(1), &inbound, |a| {
            (a == &reserved_at).then_some(relay)
        });
        assert_eq!(links.relayed_via(&peer), Some(relay));
        assert!(is_circuit_source(&format!("/p2p/{peer}").parse().unwrap()));
        assert!(!is_circuit_source(
            &"/ip4/10.0.0.2/tcp/51000".parse().unwrap()
        ));
    }

    /// How late one ping's answer may come on a loaded host without the
    /// connection being closed (6 s with pings every 2 s and 8 s of silence).
    const LATE_ANSWER: Duration = Duration::from_secs(6);

    #[test]
    fn pings_leave_room_for_one_late_answer_and_come_no_oftener_than_that_needs() {
        // A ping answered LATE_ANSWER late keeps the connection...
        assert!(PING_INTERVAL + LATE_ANSWER <= SILENCE_LIMIT);
        // ...a silent peer is closed within 15 s (checked every 3 s), well inside
        // the 30 s a vanished peer has to be dropped everywhere...
        assert!(SILENCE_LIMIT + Duration::from_secs(3) <= Duration::from_secs(15));
        // ...and no oftener than that needs: at most 2.5 pings per silence
        // window (four at 2 s and 8 s: most of an idle connection's writes).
        assert!(
            PING_INTERVAL * 5 >= SILENCE_LIMIT * 2,
            "pinging every {PING_INTERVAL:?} for a {SILENCE_LIMIT:?} silence limit"
        );
    }

    fn peers(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn links_travel_when_they_change_and_every_fourth_announcement() {
        let mut sent = LinksSent::default();
        assert_eq!(sent.next(peers(&["b", "a"])), Some(peers(&["a", "b"])));
        // The same set, in any order: unchanged, three times...
        assert_eq!(sent.next(peers(&["a", "b"])), None);
        assert_eq!(sent.next(peers(&["b", "a"])), None);
        assert_eq!(sent.next(peers(&["a", "b"])), None);
        // ...then again for whoever missed them.
        assert_eq!(sent.next(peers(&["a", "b"])), Some(peers(&["a", "b"])));
        assert_eq!(sent.next(peers(&["a", "b"])), None);
        // A change travels at once.
        assert_eq!(sent.next(peers(&["a"])), Some(peers(&["a"])));
        assert_eq!(sent.next(peers(&["a"])), None);
        // An announcement that could not be sent: the next one carries them.
        sent.unsent();
        assert_eq!(sent.next(peers(&["a"])), Some(peers(&["a"])));
    }

    #[test]
    fn only_connections_silent_past_the_limit_are_reported() {
        let peer = PeerId::random();
        let mut links = Links::default();
        let id = ConnectionId::new_unchecked(1);
        links.opened(peer, id, &dialed("/ip4/10.0.0.2/tcp/7470"), |_| None);
        assert!(links.silent(SILENCE_LIMIT).is_empty());
        let link = links
            .connections
            .get_mut(&peer)
            .unwrap()
            .get_mut(&id)
            .unwrap();
        link.answered = Instant::now() - SILENCE_LIMIT - Duration::from_secs(1);
        assert_eq!(links.silent(SILENCE_LIMIT).len(), 1);
        links.answered(peer, id);
        assert!(links.silent(SILENCE_LIMIT).is_empty());
    }
}
