//! Anti-entropy: every few seconds a node asks one random neighbour for a
//! digest of what it knows (each peer's latest announcement's sequence number,
//! and the peers known gone) and pulls that neighbour's snapshot only when the
//! digests differ. Gossip can lose a message (a forward that waited too long on
//! a busy host is dropped; a peer joins between two announcements); without
//! this, a peer that missed one would wait for the author's next periodic
//! announcement, up to an hour in a big overlay. An idle overlay agrees, so it
//! costs one small request per peer per interval.

use std::time::Duration;

use libp2p::PeerId;
use sha2::{Digest as _, Sha256};

use super::EventLoop;
use super::departures::Snapshot;
use super::protocol::{ControlRequest, ControlResponse, Departure};

/// How often a node compares its digest with a neighbour's.
pub(super) const DIGEST_EVERY: Duration = Duration::from_secs(10);

/// One entry's share of the digest: order-free (XORed), so both sides need
/// not sort.
fn entry_hash(peer: &PeerId, seq: u64, gone: bool) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(peer.to_bytes());
    hasher.update(seq.to_be_bytes());
    hasher.update([u8::from(gone)]);
    let out = hasher.finalize();
    u64::from_be_bytes(out[..8].try_into().unwrap_or([0; 8]))
}

impl EventLoop {
    /// The digest of every announcement and departure this node knows, its own included.
    pub(super) fn digest(&self) -> u64 {
        let mut digest = 0;
        for (peer, entry) in &self.peers {
            if entry.announcement.is_some() {
                digest ^= entry_hash(peer, entry.announced_seq, false);
            } else if let Some(seq) = entry.departed_seq {
                digest ^= entry_hash(peer, seq, true);
            }
        }
        if let Some(mine) = &self.announcement {
            digest ^= entry_hash(self.swarm.local_peer_id(), mine.seq, false);
        }
        digest
    }

    /// Peers known gone, for a snapshot.
    pub(super) fn tombstones(&self) -> Vec<Departure> {
        self.peers
            .iter()
            .filter(|(_, e)| e.announcement.is_none())
            .filter_map(|(peer, e)| {
                Some(Departure {
                    peer: peer.to_string(),
                    seq: e.departed_seq?,
                })
            })
            .collect()
    }

    /// Every [`DIGEST_EVERY`]: ask one random neighbour for its digest. A node
    /// whose snapshot failed (the neighbour's connection closed, or the answer
    /// timed out on a busy host) asks a neighbour for one instead: waiting for
    /// the next new connection, it could go on without one (and without digests)
    /// for as long as its links held, missing every announcement made before it
    /// joined.
    pub(super) fn compare_digests(&mut self) {
        use rand::seq::IteratorRandom;
        if self.departures.digest_asked.is_some() {
            return;
        }
        let Some(peer) = self
            .swarm
            .connected_peers()
            .choose(&mut rand::thread_rng())
            .copied()
        else {
            return;
        };
        match self.departures.snapshot {
            Snapshot::Done => {}
            Snapshot::NotAsked => return self.ask_snapshot(peer, None),
            Snapshot::Asked(_) => return,
        }
        let id = self
            .swarm
            .behaviour_mut()
            .control
            .send_request(&peer, ControlRequest::Digest);
        self.departures.digest_asked = Some(id);
    }

    /// A neighbour's digest: pull its snapshot if it knows something else.
    pub(super) fn on_digest(&mut self, from: PeerId, response: Option<ControlResponse>) {
        let Some(ControlResponse::Digest { digest }) = response else {
            return;
        };
        if digest != self.digest() && self.departures.snapshot == Snapshot::Done {
            tracing::debug!("digest differs from {from}'s: pulling its snapshot");
            self.ask_snapshot(from, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_share_depends_on_peer_sequence_and_whether_gone() {
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_eq!(entry_hash(&a, 7, false), entry_hash(&a, 7, false));
        assert_ne!(entry_hash(&a, 7, false), entry_hash(&a, 8, false));
        assert_ne!(entry_hash(&a, 7, false), entry_hash(&a, 7, true));
        assert_ne!(entry_hash(&a, 7, false), entry_hash(&b, 7, false));
    }
}
