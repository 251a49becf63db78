//! Anti-entropy: every few seconds a node asks one random neighbour for a
//! digest of what it knows (each peer's latest announcement's sequence number,
//! and the peers known gone) and pulls that neighbour's snapshot only when the
//! digests differ. Gossip can lose a message (a forward that waited too long on
//! a busy host is dropped; a peer joins between two announcements); without
//! this, a peer that missed one would wait for the author's next periodic
//! announcement, up to an hour in a big overlay. An idle overlay agrees, so it
//! costs one small request per peer per interval.
//!
//! The digest is kept per bucket of peer ids ([`BUCKETS`], by the id's last
//! byte), and a mismatch pulls only the buckets that differ: while the overlay
//! is still busy (an announcement in flight makes two digests differ for a
//! moment) a pull costs about n / 16 announcements instead of all n.

use std::time::Duration;

use libp2p::PeerId;
use sha2::{Digest as _, Sha256};

use super::EventLoop;
use super::departures::Snapshot;
use super::protocol::{ControlRequest, ControlResponse, Departure};
use super::pulls::{self, Count};

/// How often a node compares its digest with a neighbour's.
pub(super) const DIGEST_EVERY: Duration = Duration::from_secs(10);

/// How many buckets the digest is split into.
pub(super) const BUCKETS: usize = 16;

/// The bucket of a peer id: its last byte (a public key's or a hash's, so
/// evenly spread), modulo [`BUCKETS`].
pub(super) fn bucket_of(peer: &PeerId) -> u8 {
    let last = peer.to_bytes().last().copied().unwrap_or(0);
    last % BUCKETS as u8
}

/// The buckets whose digests differ; None when the other side sent no
/// buckets (an older node): nothing to narrow the pull to.
fn differing(mine: &[u64; BUCKETS], theirs: &[u64]) -> Option<Vec<u8>> {
    if theirs.len() != BUCKETS {
        return None;
    }
    let buckets = (0u8..)
        .zip(mine.iter().zip(theirs))
        .filter(|(_, (a, b))| a != b)
        .map(|(bucket, _)| bucket)
        .collect();
    Some(buckets)
}

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
    /// The digest of every announcement and departure this node knows, its
    /// own included, per bucket of peer ids.
    pub(super) fn digests(&self) -> [u64; BUCKETS] {
        let mut digests = [0; BUCKETS];
        let mut add = |peer: &PeerId, share: u64| digests[bucket_of(peer) as usize] ^= share;
        for (peer, entry) in &self.peers {
            if entry.announcement.is_some() {
                add(peer, entry_hash(peer, entry.announced_seq, false));
            } else if let Some(seq) = entry.departed_seq {
                add(peer, entry_hash(peer, seq, true));
            }
        }
        if let Some(mine) = &self.announcement {
            let me = self.swarm.local_peer_id();
            add(me, entry_hash(me, mine.seq, false));
        }
        digests
    }

    /// Peers known gone (those `wanted`), for a snapshot.
    pub(super) fn tombstones(&self, wanted: impl Fn(&PeerId) -> bool) -> Vec<Departure> {
        self.peers
            .iter()
            .filter(|(peer, e)| e.announcement.is_none() && wanted(peer))
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
            Snapshot::NotAsked => return self.ask_snapshot(peer, None, Vec::new()),
            Snapshot::Asked(..) => return,
        }
        self.ask_digest(peer);
    }

    /// Compares digests with `peer` now, unless a comparison is under way.
    pub(super) fn ask_digest(&mut self, peer: PeerId) {
        if self.departures.digest_asked.is_some() || self.departures.snapshot != Snapshot::Done {
            return;
        }
        let id = self
            .swarm
            .behaviour_mut()
            .control
            .send_request(&peer, ControlRequest::Digest);
        self.departures.digest_asked = Some(id);
        pulls::one(Count::DigestAsked);
    }

    /// A neighbour's digest: pull the buckets of its snapshot that differ.
    pub(super) fn on_digest(&mut self, from: PeerId, response: Option<ControlResponse>) {
        let Some(ControlResponse::Digest { digest, buckets }) = response else {
            pulls::one(Count::DigestFailed);
            return;
        };
        let mine = self.digests();
        let all = mine.iter().fold(0, |all, b| all ^ b);
        pulls::one(if digest == all {
            Count::DigestSame
        } else {
            Count::DigestDiffers
        });
        if digest != all && self.departures.snapshot == Snapshot::Done {
            // Empty: all buckets (an older node's answer).
            let wanted = differing(&mine, &buckets).unwrap_or_default();
            tracing::debug!("digest differs from {from}'s: pulling buckets {wanted:?}");
            self.ask_snapshot(from, None, wanted);
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

    /// Issue 20: a mismatch pulls only the buckets that differ (all of them
    /// from an older node that sends no buckets).
    #[test]
    fn only_the_buckets_whose_digests_differ_are_pulled() {
        let mut mine = [7u64; BUCKETS];
        let mut theirs = mine.to_vec();
        assert_eq!(differing(&mine, &theirs), Some(vec![]));
        theirs[3] = 8;
        mine[11] = 9;
        assert_eq!(differing(&mine, &theirs), Some(vec![3, 11]));
        assert_eq!(differing(&mine, &[]), None, "an older node: pull all");
    }

    #[test]
    fn peers_spread_over_every_bucket() {
        let mut seen = [0usize; BUCKETS];
        for _ in 0..1600 {
            seen[bucket_of(&PeerId::random()) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 40), "{seen:?}");
    }
}
