//! A failed hole punch is tried again later. DCUtR makes its (three) attempts
//! once per relayed connection, when it opens; a punch that failed because the
//! path was briefly closed, or both hosts too busy to answer in time, would
//! leave two peers relayed for good. So the side that saw the punch fail opens
//! a new circuit to the peer after a backoff (150 s, doubling up to 10 min): the
//! peer, which accepts it, starts DCUtR on it. The older relayed connections
//! retire (retire.rs): they take no new streams and close once theirs end.
//!
//! Not sooner than 150 s: each router still holds the failed attempt's
//! half-open connection (Linux conntrack keeps a SYN_SENT entry 2 min) and
//! drops a new attempt between the same two ports until it expires. Measured
//! in the NAT lab: tries 30 s apart all failed; the first one 150 s after the
//! last failure went through at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};

use super::EventLoop;
use super::retire::Cause;

const FIRST_RETRY: Duration = Duration::from_secs(150);
const LONGEST_RETRY: Duration = Duration::from_secs(600);

/// The wait before the `failures`-th punch to a peer is tried again.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_RETRY * 2u32.pow(doublings)).min(LONGEST_RETRY)
}

#[derive(Default)]
struct RePunch {
    failures: u32,
    /// When to open the next circuit; `None` while one is being opened.
    due: Option<Instant>,
    /// The circuit opened to try again, until it is established or fails.
    circuit: Option<ConnectionId>,
}

/// Peers whose last punch failed, by when to try again.
#[derive(Default)]
pub(super) struct RePunches {
    peers: HashMap<PeerId, RePunch>,
}

impl RePunches {
    /// A punch to `peer` failed: returns the wait before the next try.
    fn failed(&mut self, peer: PeerId, now: Instant) -> Duration {
        let entry = self.peers.entry(peer).or_default();
        entry.failures += 1;
        entry.circuit = None;
        let wait = backoff(entry.failures);
        entry.due = Some(now + wait);
        wait
    }

    /// Peers to try again now; each is then waiting for its new circuit.
    fn due(&mut self, now: Instant) -> Vec<PeerId> {
        let mut due = Vec::new();
        for (peer, entry) in &mut self.peers {
            if entry.due.is_some_and(|at| at <= now) {
                entry.due = None;
                due.push(*peer);
            }
        }
        due
    }

    /// Whether `id` is the circuit opened to try `peer` again (then forgotten).
    fn take_circuit(&mut self, peer: &PeerId, id: ConnectionId) -> bool {
        let Some(entry) = self.peers.get_mut(peer) else {
            return false;
        };
        let ours = entry.circuit == Some(id);
        if ours {
            entry.circuit = None;
        }
        ours
    }

    fn circuit_failed(&mut self, id: ConnectionId) -> Option<PeerId> {
        self.peers
            .iter()
            .find(|(_, e)| e.circuit == Some(id))
            .map(|(peer, _)| *peer)
    }

    /// The peer was punched through, or is gone: nothing to try again.
    pub(super) fn forget(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }
}

/// `/ip4/…/tcp/…` of relay `relay` → the circuit address of `peer` through it.
fn circuit_to(relay_at: Multiaddr, relay: PeerId, peer: PeerId) -> Multiaddr {
    let mut at = relay_at;
    if matches!(at.iter().last(), Some(Protocol::P2p(_))) {
        at.pop();
    }
    at.with(Protocol::P2p(relay))
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(peer))
}

impl EventLoop {
    /// DCUtR gave up on `peer`: try again after a backoff.
    pub(super) fn on_punch_failed(&mut self, peer: PeerId, error: &str) {
        let wait = self.repunches.failed(peer, Instant::now());
        tracing::info!(
            "hole punching to {} failed ({error}): staying relayed, trying again in {} s",
            self.display_name(&peer),
            wait.as_secs()
        );
    }

    /// Opens a new circuit to each peer whose punch is due to be tried again.
    pub(super) fn repunch_due(&mut self) {
        for peer in self.repunches.due(Instant::now()) {
            let Some(relay) = self.links.relayed_via(&peer) else {
                // Punched meanwhile, or gone.
                self.repunches.forget(&peer);
                continue;
            };
            let Some(relay_at) = self
                .reservations
                .address_of(&relay)
                .or_else(|| self.links.dialed_address(&relay))
            else {
                // Reached through a relay this node has no address of.
                self.repunches.failed(peer, Instant::now());
                continue;
            };
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![circuit_to(relay_at, relay, peer)])
                .condition(PeerCondition::Always)
                .build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    if let Some(entry) = self.repunches.peers.get_mut(&peer) {
                        entry.circuit = Some(id);
                    }
                    tracing::info!(
                        "trying the hole punch to {} again: a new circuit through {}",
                        self.display_name(&peer),
                        self.display_name(&relay)
                    );
                }
                Err(e) => {
                    self.repunches.failed(peer, Instant::now());
                    tracing::debug!("new circuit to {peer}: {e}");
                }
            }
        }
    }

    /// A connection opened: when it is a circuit opened to try a punch again,
    /// the peer starts DCUtR on it and the older relayed connections retire.
    pub(super) fn on_repunch_circuit(&mut self, peer: PeerId, id: ConnectionId) {
        if self.repunches.take_circuit(&peer, id) {
            self.retire_relayed(peer, Cause::NewCircuit, Some(id));
        }
    }

    /// A dial failed: when it was a circuit opened to try a punch again, the
    /// next try waits longer.
    pub(super) fn on_repunch_dial_failed(&mut self, id: ConnectionId) {
        if let Some(peer) = self.repunches.circuit_failed(id) {
            self.repunches.failed(peer, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_punch_is_tried_again_later_and_later() {
        // Past a NAT's 2 min hold on the failed attempt, then doubling.
        assert_eq!(backoff(1), Duration::from_secs(150));
        assert_eq!(backoff(2), Duration::from_secs(300));
        assert_eq!(backoff(3), LONGEST_RETRY);
        assert_eq!(backoff(u32::MAX), LONGEST_RETRY);

        let mut repunches = RePunches::default();
        let peer = PeerId::random();
        let t0 = Instant::now();
        assert_eq!(repunches.failed(peer, t0), FIRST_RETRY);
        assert!(repunches.due(t0).is_empty(), "not before its time");
        assert_eq!(repunches.due(t0 + FIRST_RETRY), vec![peer]);
        assert!(
            repunches.due(t0 + FIRST_RETRY).is_empty(),
            "tried once, then waits for the circuit's outcome"
        );
        // The circuit opened: recognised once, by its id only.
        let circuit = ConnectionId::new_unchecked(7);
        repunches.peers.get_mut(&peer).unwrap().circuit = Some(circuit);
        assert!(!repunches.take_circuit(&peer, ConnectionId::new_unchecked(8)));
        assert!(repunches.take_circuit(&peer, circuit));
        assert!(!repunches.take_circuit(&peer, circuit));
        // Failing again waits longer; punched through, nothing is due.
        assert_eq!(repunches.failed(peer, t0), Duration::from_secs(300));
        repunches.forget(&peer);
        assert!(repunches.due(t0 + LONGEST_RETRY).is_empty());
    }

    #[test]
    fn the_new_circuit_goes_through_the_relay_the_peer_is_reached_by() {
        let (relay, peer) = (PeerId::random(), PeerId::random());
        let at: Multiaddr = "/ip4/198.51.100.1/tcp/4001".parse().unwrap();
        let expected: Multiaddr =
            format!("/ip4/198.51.100.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{peer}")
                .parse()
                .unwrap();
        assert_eq!(circuit_to(at.clone(), relay, peer), expected);
        // An address that already names the relay is not given its id twice.
        assert_eq!(
            circuit_to(at.with(Protocol::P2p(relay)), relay, peer),
            expected
        );
    }
}
