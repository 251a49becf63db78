//! Connection upkeep: redialing the bootstrap peers while alone, topping the
//! node's connections up to a target from the DHT, and trimming idle ones above
//! a bound.

use std::time::Duration;

use super::*;

/// Direct connections a node keeps when the DHT knows enough peers.
pub(super) const TARGET_CONNECTIONS: usize = 8;
/// Above this many peers connected, the node closes idle connections down to it
/// (after [`TRIM_AFTER`]): without a bound, the overlay's seed peer keeps a
/// connection (and its pings and gossip) to every peer that ever joined.
const MAX_CONNECTED: usize = 2 * TARGET_CONNECTIONS;
/// A connection younger than this is never trimmed: its peer is still joining.
const TRIM_AFTER: Duration = Duration::from_secs(60);

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
            if !known && let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!("dial {addr}: {e}");
            }
        }
        if connected > 0 {
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
        use rand::seq::SliceRandom;
        candidates.shuffle(&mut rand::thread_rng());
        for peer in candidates
            .into_iter()
            .take(TARGET_CONNECTIONS - connected.len())
        {
            if let Err(e) = self.swarm.dial(peer) {
                tracing::debug!("dial {peer}: {e}");
            }
        }
    }

    /// Closes up to `excess` peers' connections: direct ones, older than
    /// [`TRIM_AFTER`], carrying no stream of ours and no relay slot, and only
    /// on a node that relays for no one (a circuit rides its connections).
    fn trim_connections(&mut self, excess: usize) {
        if self.relay_config.serve {
            return;
        }
        let now = std::time::Instant::now();
        let mut idle: Vec<PeerId> = self
            .links
            .older_than(TRIM_AFTER)
            .into_iter()
            .filter(|p| {
                self.links.is_direct(p)
                    && !self.reservations.on(p)
                    && self.ledger.open_before(p, now, Some(now)) == 0
            })
            .collect();
        use rand::seq::SliceRandom;
        idle.shuffle(&mut rand::thread_rng());
        for peer in idle.into_iter().take(excess) {
            tracing::debug!("trimming the connection to {}", self.display_name(&peer));
            self.departures.trimming(peer);
            for id in self.links.connections_to(&peer) {
                self.departures.closing_on_purpose(id);
                self.swarm.close_connection(id);
            }
        }
    }
}
