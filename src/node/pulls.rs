//! Anti-entropy and departures, counted (issue 20): digests compared, snapshot
//! pulls asked, answered and failed, the announcements they brought, and the
//! departures reported, applied and refuted. Process-wide counters (summed over
//! every node in `bench scale --mode sim`), read by the scale harness to tell
//! why a large overlay converges slowly: pulls that fail, pulls that bring
//! nothing new, or departures taking peers away as fast as pulls bring them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// A neighbour asked for its digest.
    DigestAsked,
    /// Its digest equalled ours.
    DigestSame,
    /// Its digest differed (a pull follows).
    DigestDiffers,
    /// The digest request failed (timeout, connection closed).
    DigestFailed,
    /// A snapshot page asked (a first snapshot, or differing buckets).
    PullAsked,
    /// A snapshot page answered.
    PullAnswered,
    /// A snapshot page failed (timeout, connection closed).
    PullFailed,
    /// Announcements the answered pages carried.
    PullEntries,
    /// Of those, new to us (a newer sequence number).
    PullNew,
    /// Departures we reported (our own check found the peer gone).
    DepartureReported,
    /// Departures applied (a peer's announcement dropped), ours or heard.
    DepartureApplied,
    /// Times this node heard itself reported gone and announced again.
    Refuted,
    /// Gossip messages dropped or expired in a connection's queue (SlowPeer).
    GossipDropped,
    /// SlowPeer reports (one per peer per heartbeat with drops): many
    /// messages per report is a stuck connection, one or two a slow one.
    GossipSlowReports,
    /// A check dial to a peer whose last connection closed could not start
    /// (no address, a local limit): reported gone at once.
    CheckNotStarted,
    /// A check dial failed: reported gone.
    CheckFailed,
    /// The node's own control requests (digests, pulls, trim notices) that
    /// failed, by why.
    RequestTimeout,
    RequestClosed,
    RequestOther,
}

const COUNTS: usize = 19;

static COUNTERS: [AtomicU64; COUNTS] = [const { AtomicU64::new(0) }; COUNTS];

pub(super) fn add(what: Count, n: u64) {
    COUNTERS[what as usize].fetch_add(n, Relaxed);
}

pub(super) fn one(what: Count) {
    add(what, 1);
}

/// The counters at one moment; subtract two for what happened in between.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pulls(pub [u64; COUNTS]);

impl Pulls {
    pub fn now() -> Pulls {
        Pulls(COUNTERS.each_ref().map(|c| c.load(Relaxed)))
    }

    pub fn minus(&self, before: &Pulls) -> Pulls {
        Pulls(std::array::from_fn(|i| {
            self.0[i].saturating_sub(before.0[i])
        }))
    }

    pub fn get(&self, what: Count) -> u64 {
        self.0[what as usize]
    }

    /// One line for a progress report.
    pub fn line(&self) -> String {
        use Count::*;
        let g = |c| self.get(c);
        format!(
            "digests {} (same {}, differ {}, failed {}); pulls {} (answered {}, failed {}; \
             entries {}, new {}); own requests failed: timeout {}, closed {}, other {}; departures \
             reported {} (check dial not started {}, failed {}), applied {}, refuted {}; gossip dropped {} in {} reports",
            g(DigestAsked),
            g(DigestSame),
            g(DigestDiffers),
            g(DigestFailed),
            g(PullAsked),
            g(PullAnswered),
            g(PullFailed),
            g(PullEntries),
            g(PullNew),
            g(RequestTimeout),
            g(RequestClosed),
            g(RequestOther),
            g(DepartureReported),
            g(CheckNotStarted),
            g(CheckFailed),
            g(DepartureApplied),
            g(Refuted),
            g(GossipDropped),
            g(GossipSlowReports),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_of_readings_counts_what_happened_in_between() {
        let before = Pulls::now();
        add(Count::PullEntries, 7);
        one(Count::PullFailed);
        let delta = Pulls::now().minus(&before);
        // Other tests run alongside and may add: at least ours.
        assert!(delta.get(Count::PullEntries) >= 7);
        assert!(delta.get(Count::PullFailed) >= 1);
        assert!(delta.line().contains("pulls"));
    }
}
