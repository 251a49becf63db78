//! Connection churn, counted (issue 20): connections opened, by whom, and
//! closed, why. Process-wide counters (one node per process in the product,
//! summed over every node in `bench scale --mode sim`), read by the scale
//! harness to show connections and churn over time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Who opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// The peer dialed us.
    Inbound,
    /// Our top-up from the DHT (upkeep.rs).
    TopUp,
    /// Our one dial to a peer whose connection closed unasked (departures.rs).
    Check,
    /// Our redial of a lost peer, or of a bootstrap address.
    Redial,
    /// Our AutoNAT dial-back, for a peer that asked.
    DialBack,
    /// Any other dial of ours: the DHT's queries, requests, punches.
    Other,
}

/// Why a connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// We trimmed it (above the bound).
    Trim,
    /// We closed our check dial: it found the peer alive.
    CheckAlive,
    /// We closed it: the peer stopped answering pings.
    Silent,
    /// We closed it for another reason (a retired circuit, a dial-back).
    OursOther,
    /// The peer trimmed it, and told us first.
    TrimmedByPeer,
    /// The peer (or the path) closed it, unannounced.
    Remote,
}

const OPENED: usize = 6;
const CLOSED: usize = 6;

struct Counters {
    opened: [AtomicU64; OPENED],
    closed: [AtomicU64; CLOSED],
}

static COUNTERS: Counters = Counters {
    opened: [const { AtomicU64::new(0) }; OPENED],
    closed: [const { AtomicU64::new(0) }; CLOSED],
};

pub(super) fn opened(by: Opened) {
    COUNTERS.opened[by as usize].fetch_add(1, Relaxed);
}

pub(super) fn closed(why: Closed) {
    COUNTERS.closed[why as usize].fetch_add(1, Relaxed);
}

/// The counters at one moment; subtract two for what happened in between.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Churn {
    pub opened: [u64; OPENED],
    pub closed: [u64; CLOSED],
}

impl Churn {
    pub fn now() -> Churn {
        Churn {
            opened: COUNTERS.opened.each_ref().map(|c| c.load(Relaxed)),
            closed: COUNTERS.closed.each_ref().map(|c| c.load(Relaxed)),
        }
    }

    pub fn minus(&self, before: &Churn) -> Churn {
        Churn {
            opened: std::array::from_fn(|i| self.opened[i].saturating_sub(before.opened[i])),
            closed: std::array::from_fn(|i| self.closed[i].saturating_sub(before.closed[i])),
        }
    }

    pub fn opened_by(&self, by: Opened) -> u64 {
        self.opened[by as usize]
    }

    pub fn closed_for(&self, why: Closed) -> u64 {
        self.closed[why as usize]
    }

    pub fn opened_total(&self) -> u64 {
        self.opened.iter().sum()
    }

    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }

    /// Connection ends open now (each connection counts at both its ends).
    pub fn open_ends(&self) -> u64 {
        self.opened_total().saturating_sub(self.closed_total())
    }
}
