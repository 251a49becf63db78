//! Connection upkeep: redialing the bootstrap peers while alone, topping the
//! node's connections up to a target from the DHT, and trimming idle ones above
//! a bound.

use std::collections::HashSet;
use std::time::Duration;

use super::churn::{Closed, Opened};
use super::*;

/// Direct connections a node keeps when the DHT knows enough peers.
pub(super) const TARGET_CONNECTIONS: usize = 8;
/// Above this many peers connected, the node closes idle connections down to it
/// (after [`TRIM_AFTER`]): without a bound, the overlay's seed peer keeps a
/// connection (and its pings and gossip) to every peer that ever joined.
const MAX_CONNECTED: usize = 2 * TARGET_CONNECTIONS;
/// A connection younger than this is never trimmed: its peer is still joining,
/// or a DHT query opened it and is using it. It was a minute, and since every
/// DHT query opens connections to peers not yet connected (provider records
/// are published a minute after start), the bound never took hold in a
/// settling overlay: 96 of 99 peers connected to each at 100 simulated peers.
const TRIM_AFTER: Duration = Duration::from_secs(20);

impl EventLoop {
    pub(super) fn redial_bootstrap(&mut self, uptime: Duration) {
        let connected = self.swarm.connected_peers().count();
        // Back off once the node has company, so a dead bootstrap peer costs little.
        if connected > 0 && uptime > Duration::from_secs(30) {
            return;
        }
        for addr in self.bootstrap.clone() {
            let known = self
                .peers
                .values()
                .any(|p| p.connections > 0 && p.addrs.contains(&addr));
            if !known && let Err(e) = self.dial_for(addr.clone(), Opened::Redial) {
                tracing::debug!("dial {addr}: {e}");
            }
        }
        if bootstrap_dht(connected) {
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
    }

    /// Keeps a handful of direct connections to peers the DHT knows, so gossip
    /// meshes form and an announcement reaches everyone in a few hops, not via
    /// one bootstrap peer's lazy gossip.
    pub(super) fn top_up_connections(&mut self) {
        let connected: std::collections::HashSet<PeerId> =
            self.swarm.connected_peers().copied().collect();
        if connected.len() > MAX_CONNECTED {
            self.trim_connections(connected.len() - MAX_CONNECTED);
            return;
        }
        if connected.is_empty() || connected.len() >= TARGET_CONNECTIONS {
            return;
        }
        let mut candidates: Vec<PeerId> = Vec::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for entry in bucket.iter() {
                let peer = *entry.node.key.preimage();
                if !connected.contains(&peer) {
                    candidates.push(peer);
                }
            }
        }
        let parted = self.departures.parted();
        let want = TARGET_CONNECTIONS - connected.len();
        for peer in to_dial(candidates, &parted, want) {
            if let Err(e) = self.dial_for(peer, Opened::TopUp) {
                tracing::debug!("dial {peer}: {e}");
            }
        }
    }

    /// Closes up to `excess` peers' connections: direct ones, older than
    /// [`TRIM_AFTER`], carrying no stream of ours and no relay slot, and not
    /// in our gossip mesh; only on a node that relays for no one (a circuit
    /// rides its connections).
    fn trim_connections(&mut self, excess: usize) {
        if self.relay_config.serve {
            return;
        }
        let now = std::time::Instant::now();
        let mesh: HashSet<PeerId> = (self.swarm.behaviour().gossipsub)
            .mesh_peers(&self.topic.hash())
            .copied()
            .collect();
        let idle: Vec<PeerId> = self
            .links
            .older_than(TRIM_AFTER)
            .into_iter()
            .filter(|p| {
                self.links.is_direct(p)
                    && !self.departures.notice_pending(p)
                    && !self.reservations.on(p)
                    && self.ledger.open_before(p, now, Some(now)) == 0
            })
            .collect();
        for peer in to_trim(idle, &mesh, excess) {
            // Told first, so it takes the close for no failure (no check dial);
            // closed at the answer (departures.rs).
            tracing::debug!("trimming the connection to {}", self.display_name(&peer));
            self.departures.trimming(peer);
            let id = (self.swarm.behaviour_mut().control)
                .send_request(&peer, protocol::ControlRequest::Trimming);
            self.departures.trim_notices.insert(id, peer);
        }
    }

    /// Closes the connections to a peer told it is trimmed, if still idle.
    pub(super) fn close_trimmed(&mut self, peer: PeerId) {
        let now = std::time::Instant::now();
        if self.ledger.open_before(&peer, now, Some(now)) > 0 {
            return;
        }
        for id in self.links.connections_to(&peer) {
            self.departures.closing_for(id, Closed::Trim);
            self.swarm.close_connection(id);
        }
    }
}

/// Which of the `idle` peers to disconnect, `excess` at most, at random: never
/// one in our gossip mesh. Cutting a mesh link loses the messages in flight on
/// it and makes gossipsub graft another peer (whose link may be the next cut):
/// trimming 80 connections at once churned the meshes of a whole overlay.
fn to_trim(idle: Vec<PeerId>, mesh: &HashSet<PeerId>, excess: usize) -> Vec<PeerId> {
    use rand::seq::SliceRandom;
    let mut idle: Vec<PeerId> = idle.into_iter().filter(|p| !mesh.contains(p)).collect();
    idle.shuffle(&mut rand::thread_rng());
    idle.truncate(excess);
    idle
}

/// Whether the early upkeep (its first 30 s, or while alone) asks the DHT for
/// more peers: only while short of them, and not alone (no one to ask). It
/// did every 3 s regardless, and a bootstrap walks every bucket (dozens of
/// peers asked, a connection each, trimmed again 20 s later); kad bootstraps
/// by itself too, while its table is small and every 5 minutes.
fn bootstrap_dht(connected: usize) -> bool {
    connected > 0 && connected < TARGET_CONNECTIONS
}

/// Which of the `candidates` to dial, `want` at most, at random: peers a trim
/// parted us from lately only when there are not enough others. Dialing one
/// back undid the trim (and the trimming peer, still above its bound, trimmed
/// again 20 s later: a loop of handshakes).
fn to_dial(candidates: Vec<PeerId>, parted: &HashSet<PeerId>, want: usize) -> Vec<PeerId> {
    use rand::seq::SliceRandom;
    let mut candidates = candidates;
    candidates.shuffle(&mut rand::thread_rng());
    // Stable: shuffled within each group, the parted ones last.
    candidates.sort_by_key(|p| parted.contains(p));
    candidates.truncate(want);
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20: trimming keeps the gossip mesh whole and closes no more than
    /// the excess.
    #[test]
    fn trimming_spares_gossip_mesh_peers_and_stops_at_the_excess() {
        let idle: Vec<PeerId> = (0..30).map(|_| PeerId::random()).collect();
        let mesh: HashSet<PeerId> = idle[..6].iter().copied().collect();
        for _ in 0..20 {
            let trimmed = to_trim(idle.clone(), &mesh, 20);
            assert_eq!(trimmed.len(), 20);
            assert!(
                trimmed.iter().all(|p| !mesh.contains(p)),
                "a mesh peer was trimmed"
            );
        }
        assert_eq!(
            to_trim(idle.clone(), &mesh, 100).len(),
            24,
            "at most the idle non-mesh ones"
        );
        assert_eq!(to_trim(idle, &mesh, 3).len(), 3);
    }

    /// Issue 20: the DHT is walked for more peers only while some are there
    /// to ask and too few are connected.
    #[test]
    fn the_dht_is_bootstrapped_only_while_short_of_peers() {
        assert!(!bootstrap_dht(0), "alone: no one to ask");
        assert!(bootstrap_dht(1));
        assert!(bootstrap_dht(TARGET_CONNECTIONS - 1));
        assert!(!bootstrap_dht(TARGET_CONNECTIONS), "enough peers");
        assert!(!bootstrap_dht(MAX_CONNECTED + 5));
    }

    /// Issue 20: the top-up does not redial a peer a trim parted us from while
    /// others are there to dial, and does when they are not.
    #[test]
    fn the_top_up_dials_peers_parted_by_a_trim_only_when_short_of_others() {
        let candidates: Vec<PeerId> = (0..12).map(|_| PeerId::random()).collect();
        let parted: HashSet<PeerId> = candidates[..8].iter().copied().collect();
        for _ in 0..20 {
            let dialed = to_dial(candidates.clone(), &parted, 4);
            assert_eq!(dialed.len(), 4);
            assert!(
                dialed.iter().all(|p| !parted.contains(p)),
                "a peer just trimmed was dialed back"
            );
        }
        let dialed = to_dial(candidates.clone(), &parted, 6);
        assert_eq!(dialed.len(), 6, "short of others: parted ones fill in");
        assert_eq!(dialed.iter().filter(|p| !parted.contains(p)).count(), 4);
        assert_eq!(to_dial(candidates, &HashSet::new(), 20).len(), 12);
    }
}
