//! libp2p's own timers that pace the overlay, `slower` times longer in a
//! simulation that scales time (transport.rs, `Wire::time_scale`; 1, unchanged,
//! for every real node). Issue 20: at 1,000 simulated peers scaled x10 the
//! node's own timers ran ten times slower but these did not, so on a host that
//! gave each node a thousandth of a core a digest or snapshot pull, a gossip
//! forward waiting for its connection, or a DHT walk was bounded by a tenth of
//! the node time a real node gets.

use std::time::Duration;

/// A control request's bound (digest, snapshot page, trim notice, status).
const CONTROL_REQUEST: Duration = Duration::from_secs(30);
/// How long a gossip forward may wait for its connection (libp2p's default is
/// 1 s, then dropped): on a busy host the drops left a publication to
/// anti-entropy's 10 s rounds (discovery p95 27 s at 100 simulated peers).
const GOSSIP_FORWARD: Duration = Duration::from_secs(5);
/// How long our own publication may wait for a connection (libp2p's default).
const GOSSIP_PUBLISH: Duration = Duration::from_secs(5);
/// How long gossipsub remembers a message id (libp2p's default): a copy
/// arriving later is taken for new, checked and forwarded again.
const GOSSIP_SEEN: Duration = Duration::from_secs(60);
/// A DHT walk's bound. A provider publication first walks to the key's
/// closest peers, and kad stores nothing if that walk times out: on a busy
/// overlay (100 simulated peers) it took longer than the 10 s this was.
const DHT_QUERY: Duration = Duration::from_secs(60);
/// How often kad walks the DHT to refresh its routing table (libp2p's
/// default): each walk dials peers the connection bound then trims.
const DHT_BOOTSTRAP: Duration = Duration::from_secs(5 * 60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Timers {
    pub control_request: Duration,
    pub gossip_forward: Duration,
    pub gossip_publish: Duration,
    pub gossip_seen: Duration,
    pub dht_query: Duration,
    pub dht_bootstrap: Duration,
    /// Provider records' lifetime (republished every third of it).
    pub provider_ttl: Duration,
}

impl Timers {
    /// `provider_ttl`: a real node's (mod.rs, `PROVIDER_TTL`).
    pub(super) fn new(slower: u32, provider_ttl: Duration) -> Timers {
        let slower = slower.max(1);
        Timers {
            control_request: CONTROL_REQUEST * slower,
            gossip_forward: GOSSIP_FORWARD * slower,
            gossip_publish: GOSSIP_PUBLISH * slower,
            gossip_seen: GOSSIP_SEEN * slower,
            dht_query: DHT_QUERY * slower,
            dht_bootstrap: DHT_BOOTSTRAP * slower,
            provider_ttl: provider_ttl * slower,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_node_keeps_its_timers_and_a_scaled_simulation_stretches_them() {
        let ttl = Duration::from_secs(900);
        let real = Timers::new(1, ttl);
        assert_eq!(real.control_request, Duration::from_secs(30));
        assert_eq!(real.gossip_forward, Duration::from_secs(5));
        assert_eq!(real.gossip_publish, Duration::from_secs(5));
        assert_eq!(real.gossip_seen, Duration::from_secs(60));
        assert_eq!(real.dht_query, Duration::from_secs(60));
        assert_eq!(real.dht_bootstrap, Duration::from_secs(300));
        assert_eq!(real.provider_ttl, ttl);
        assert_eq!(Timers::new(0, ttl), real, "no scale is no change");
        let scaled = Timers::new(10, ttl);
        assert_eq!(scaled.control_request, Duration::from_secs(300));
        assert_eq!(scaled.gossip_forward, Duration::from_secs(50));
        assert_eq!(scaled.gossip_publish, Duration::from_secs(50));
        assert_eq!(scaled.gossip_seen, Duration::from_secs(600));
        assert_eq!(scaled.dht_query, Duration::from_secs(600));
        assert_eq!(scaled.dht_bootstrap, Duration::from_secs(3000));
        assert_eq!(scaled.provider_ttl, Duration::from_secs(9000));
    }
}
