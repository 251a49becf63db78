//! What the swarm does against members that misbehave at the connection and gossip
//! level: caps on connections (per peer, incoming, in all), and gossipsub peer
//! scoring, so a peer that keeps sending invalid announcements is graylisted
//! (its gossip ignored) while the announcements of honest peers flow on.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::swarm::ConnectionDenied;
use libp2p::{PeerId, connection_limits, gossipsub};

/// How many connections the node accepts. A connection beyond a cap is closed
/// right after the handshake (per peer) or before it (pending), with a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    /// Connections with one peer at once, both directions (a direct and a relayed
    /// one, or two from simultaneous dials, are normal).
    pub per_peer: u32,
    /// Established connections in all. An eighth is kept for this node's own
    /// dials, so incoming connections alone cannot stop it reaching a replica.
    pub total: u32,
    /// Incoming connections still in their handshake (membership proof, noise).
    pub pending_incoming: u32,
}

impl Default for ConnectionCaps {
    fn default() -> Self {
        ConnectionCaps {
            per_peer: 4,
            total: 512,
            pending_incoming: 64,
        }
    }
}

impl ConnectionCaps {
    pub fn incoming(&self) -> u32 {
        (self.total - self.total / 8).max(1)
    }

    pub fn behaviour(&self) -> connection_limits::Behaviour {
        connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established_per_peer(Some(self.per_peer))
                .with_max_established(Some(self.total))
                .with_max_established_incoming(Some(self.incoming()))
                .with_max_pending_incoming(Some(self.pending_incoming)),
        )
    }
}

/// The cap a refused connection hit, if a cap refused it.
pub fn exceeded(cause: &ConnectionDenied) -> Option<&connection_limits::Exceeded> {
    cause.downcast_ref::<connection_limits::Exceeded>()
}

/// A peer hammering the node must not flood the log: one line per peer (or
/// remote address) per interval, with the count of refusals not logged.
pub struct RefusalLog<K = Option<PeerId>> {
    last: HashMap<K, (Instant, u64)>,
}

impl<K> Default for RefusalLog<K> {
    fn default() -> Self {
        RefusalLog {
            last: HashMap::new(),
        }
    }
}

const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl<K: std::hash::Hash + Eq> RefusalLog<K> {
    /// Whether to log this refusal now, and how many were not logged before it.
    pub fn should_log(&mut self, peer: K, now: Instant) -> Option<u64> {
        if self.last.len() > 1024 {
            self.last
                .retain(|_, (at, _)| now.duration_since(*at) < REFUSAL_LOG_INTERVAL);
            if self.last.len() > 1024 && !self.last.contains_key(&peer) {
                // More sources than that in one interval: a flood; stay quiet.
                return None;
            }
        }
        match self.last.get_mut(&peer) {
            Some((at, suppressed)) if now.duration_since(*at) < REFUSAL_LOG_INTERVAL => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let before = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(before)
            }
            None => {
                self.last.insert(peer, (now, 0));
                Some(0)
            }
        }
    }
}

/// Below this score a peer's gossip is ignored altogether (libp2p's default).
pub const GRAYLIST_THRESHOLD: f64 = -80.0;
/// Each invalid message counts 1, decaying by this factor every second; the
/// penalty is the count squared times [`INVALID_MESSAGE_WEIGHT`]. One invalid
/// message (-30) only stops gossip metadata to and from the peer (below -10);
/// two graylist it (-120) for about 40 s, while its count decays below 1.63.
/// Messages of a graylisted peer are not even read, so a flood counts no more.
const INVALID_MESSAGE_DECAY: f64 = 0.995;
const INVALID_MESSAGE_WEIGHT: f64 = -30.0;

/// Peer scoring for the announcement topic. Only invalid messages (P4) count
/// against a peer. Slow-peer penalties are off (below); delivery-rate penalties
/// are off (announcements are few and irregular); so is the IP colocation
/// penalty (peers on one host, behind one NAT, or reached through one relay
/// share an address legitimately); and so is libp2p's behaviour penalty: with
/// it, `bench discovery` (50 peers, a loaded host) graylisted dozens of honest
/// peers for grafting within the prune backoff as meshes churned, and
/// publications took 15 s to reach everyone.
pub fn score_params(topic: &gossipsub::IdentTopic) -> gossipsub::PeerScoreParams {
    let announcements = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
        invalid_message_deliveries_decay: INVALID_MESSAGE_DECAY,
        ..Default::default()
    };
    let mut params = gossipsub::PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        behaviour_penalty_weight: 0.0,
        // Slowness is not misbehaviour: gossipsub counts -0.2 for every message
        // it could not queue to a peer or that expired in its queue, and a link
        // stalled for a few seconds (a partition, a busy host) drops hundreds
        // at once when it resumes. That graylisted honest peers (16 of 100
        // simulated) just as they came back, so their gossip was ignored while
        // the overlay healed. A stalled link is the failure detector's business.
        slow_peer_weight: 0.0,
        ..Default::default()
    };
    params.topics.insert(topic.hash(), announcements);
    params
}

pub fn score_thresholds() -> gossipsub::PeerScoreThresholds {
    gossipsub::PeerScoreThresholds {
        graylist_threshold: GRAYLIST_THRESHOLD,
        ..Default::default()
    }
}

/// Which peers are graylisted, so the operator reads one line when a peer is
/// graylisted and one when it recovers.
#[derive(Default)]
pub struct Graylist {
    peers: HashSet<PeerId>,
}

impl Graylist {
    /// Notes `peer`'s current score; returns the change worth a log line.
    pub fn update(&mut self, peer: PeerId, score: Option<f64>) -> Option<GraylistChange> {
        let score = score?;
        let listed = score < GRAYLIST_THRESHOLD;
        match (listed, self.peers.contains(&peer)) {
            (true, false) => {
                self.peers.insert(peer);
                Some(GraylistChange::Listed(score))
            }
            (false, true) => {
                self.peers.remove(&peer);
                Some(GraylistChange::Recovered(score))
            }
            _ => None,
        }
    }

    pub fn listed(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.iter()
    }
}

#[derive(Debug, PartialEq)]
pub enum GraylistChange {
    Listed(f64),
    Recovered(f64),
}

impl super::EventLoop {
    /// Tells gossipsub what we made of a message: only an accepted one is
    /// forwarded; a rejected one counts against the peer that sent it to us.
    pub(super) fn judge_gossip(
        &mut self,
        id: &gossipsub::MessageId,
        from: PeerId,
        verdict: gossipsub::MessageAcceptance,
    ) {
        let rejected = matches!(verdict, gossipsub::MessageAcceptance::Reject);
        let gossip = &mut self.swarm.behaviour_mut().gossipsub;
        if !gossip.report_message_validation_result(id, &from, verdict) {
            tracing::debug!("announcement {id} judged after it left gossipsub's cache");
        }
        if rejected {
            let score = gossip.peer_score(&from);
            self.note_score(from, score);
        }
    }

    /// Scores also fall for what gossipsub rejects itself (a bad signature) and
    /// recover as penalties decay: look at every peer now and then.
    pub(super) fn review_graylist(&mut self) {
        let mut peers: HashSet<PeerId> = self.graylist.listed().copied().collect();
        peers.extend(self.swarm.connected_peers().copied());
        for peer in peers {
            let score = self.swarm.behaviour().gossipsub.peer_score(&peer);
            self.note_score(peer, score);
        }
    }

    fn note_score(&mut self, peer: PeerId, score: Option<f64>) {
        match self.graylist.update(peer, score) {
            Some(GraylistChange::Listed(score)) => tracing::warn!(
                "peer {} graylisted on gossip (score {score:.0}, invalid messages): its \
                 gossip is ignored until the penalty decays",
                self.display_name(&peer)
            ),
            Some(GraylistChange::Recovered(score)) => tracing::info!(
                "peer {} no longer graylisted on gossip (score {score:.0})",
                self.display_name(&peer)
            ),
            None => {}
        }
    }

    /// A connection refused by a cap: logged (not as a dial failure, which the
    /// operator reads as trouble of ours), at most once per peer per interval.
    pub(super) fn on_refused(
        &mut self,
        peer: Option<PeerId>,
        cause: &ConnectionDenied,
        direction: &str,
    ) {
        let Some(suppressed) = self.refusals.should_log(peer, Instant::now()) else {
            return;
        };
        let who = peer.map_or_else(|| "a peer".to_string(), |p| self.display_name(&p));
        let why = exceeded(cause).map_or_else(|| cause.to_string(), |e| e.to_string());
        let more = if suppressed > 0 {
            format!(" ({suppressed} more since the last line)")
        } else {
            String::new()
        };
        tracing::warn!("refused a connection {direction} {who}: {why}{more}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoring_parameters_are_accepted_by_gossipsub_and_count_only_invalid_messages() {
        let topic = gossipsub::IdentTopic::new("t");
        let params = score_params(&topic);
        params.validate().unwrap();
        score_thresholds().validate().unwrap();
        assert_eq!(
            params.behaviour_penalty_weight, 0.0,
            "honest peers under churn"
        );
        assert_eq!(
            params.ip_colocation_factor_weight, 0.0,
            "peers behind one NAT"
        );
        assert_eq!(
            params.slow_peer_weight, 0.0,
            "a link that stalls and resumes (partition, busy host) is not misbehaviour"
        );
        // Two invalid messages graylist; one does not.
        let penalty = |n: f64| n * n * INVALID_MESSAGE_WEIGHT;
        assert!(penalty(1.0) > GRAYLIST_THRESHOLD && penalty(2.0) < GRAYLIST_THRESHOLD);
    }

    #[test]
    fn caps_keep_room_for_our_own_dials() {
        let caps = ConnectionCaps::default();
        assert_eq!(caps.incoming(), 448);
        let tiny = ConnectionCaps { total: 1, ..caps };
        assert_eq!(tiny.incoming(), 1);
    }

    #[test]
    fn a_graylisted_peer_is_reported_once_and_again_when_it_recovers() {
        let peer = PeerId::random();
        let mut list = Graylist::default();
        assert_eq!(list.update(peer, Some(-10.0)), None);
        assert_eq!(
            list.update(peer, Some(-90.0)),
            Some(GraylistChange::Listed(-90.0))
        );
        assert_eq!(list.update(peer, Some(-200.0)), None);
        assert_eq!(
            list.update(peer, Some(-5.0)),
            Some(GraylistChange::Recovered(-5.0))
        );
        assert_eq!(list.update(peer, None), None);
    }

    #[test]
    fn refusals_are_logged_once_per_peer_per_interval() {
        let mut log = RefusalLog::default();
        let peer = Some(PeerId::random());
        let t0 = Instant::now();
        assert_eq!(log.should_log(peer, t0), Some(0));
        assert_eq!(log.should_log(peer, t0), None);
        assert_eq!(log.should_log(peer, t0 + Duration::from_secs(1)), None);
        assert_eq!(log.should_log(None, t0), Some(0), "another peer is logged");
        let later = t0 + REFUSAL_LOG_INTERVAL;
        assert_eq!(
            log.should_log(peer, later),
            Some(2),
            "with the count not logged"
        );
    }
}
