//! Connection churn in the simulation (issue 20): connections per peer and
//! what opened and closed them, over time (node/churn.rs counts them), and a
//! wait until the connection bound holds, so the idle window measures the
//! steady state and not the start-up's DHT connections still being trimmed.

use std::time::{Duration, Instant};

use crate::node::Churn;
use crate::node::churn::{Closed, Opened};

/// Start-up work opens connections until this long (node time) after a node
/// started (its provider records published again after 60 s) and they are
/// trimmed 20 s later: the steady state comes after.
const STARTUP_DONE: Duration = Duration::from_secs(85);
/// Steady: less churn than this, opened plus closed per peer per second of
/// node time.
const STEADY_CHURN: f64 = 0.05;

/// Whether the connections are steady: `since_start` (wall clock) after the
/// last node started, with `churn` per peer per wall-clock second, the node's
/// timers running `slower` times slower. Both in node time: a run scaled x10
/// is as steady with ten times fewer trims and dials a wall second, and its
/// start-up work lasts ten times longer. (Session 6's 1,000-peer run judged
/// both in wall clock: 85 s, passed long before, and 0.2-0.3 per peer per
/// wall second, which is 2-3 per node second, far from steady either way.)
fn steady(since_start: Duration, churn: f64, slower: u32) -> bool {
    let slower = slower.max(1);
    since_start > STARTUP_DONE * slower && churn * f64::from(slower) < STEADY_CHURN
}

/// The counters of one overlay: those of earlier overlays in this process
/// (their nodes dropped without closing) are taken off.
#[derive(Clone, Copy)]
pub struct Meter {
    base: Churn,
    peers: usize,
}

impl Meter {
    pub fn start(peers: usize) -> Meter {
        Meter {
            base: Churn::now(),
            peers,
        }
    }

    fn now(&self) -> Churn {
        Churn::now().minus(&self.base)
    }

    /// Connections per peer now.
    pub fn connections(&self) -> f64 {
        self.now().open_ends() as f64 / self.peers as f64
    }

    /// One line: connections per peer, and per peer per second since `before`
    /// (taken `over` ago), what opened and closed connections.
    fn line(&self, before: &Churn, over: Duration) -> String {
        let delta = Churn::now().minus(&self.base).minus(before);
        rates(&delta, self.peers, over, self.connections())
    }

    /// Prints a line every `every` until the printer is dropped.
    pub fn print_every(self, label: String, every: Duration) -> Printer {
        Printer(tokio::spawn(async move {
            let started = Instant::now();
            loop {
                let before = self.now();
                tokio::time::sleep(every).await;
                eprintln!(
                    "{label} t={:.0}s: {}",
                    started.elapsed().as_secs_f64(),
                    self.line(&before, every)
                );
            }
        }))
    }

    /// Waits until the start-up's connections are trimmed: `STARTUP_DONE`
    /// after the last node started, and churn low; at most `bound`. Not on
    /// the count: the bound is on peers, and a second connection to a peer
    /// (an AutoNAT dial-back, two dials crossing) counts here as one more (30
    /// peers: 17.5 connection ends per peer, 14.4 peers connected, no churn).
    /// Whether it got there, and when.
    /// `slower`: the simulation's time scale (1: not scaled).
    pub async fn wait_steady(
        &self,
        last_start: Instant,
        bound: Duration,
        slower: u32,
    ) -> (bool, Duration) {
        let t = Instant::now();
        let every = Duration::from_secs(2);
        loop {
            let before = self.now();
            tokio::time::sleep(every).await;
            let delta = self.now().minus(&before);
            let churn = (delta.opened_total() + delta.closed_total()) as f64
                / self.peers as f64
                / every.as_secs_f64();
            let steady = steady(last_start.elapsed(), churn, slower);
            if steady || t.elapsed() > bound {
                return (steady, t.elapsed());
            }
        }
    }

    /// What happened between two readings, as one line.
    pub fn since(&self, before: &Churn, over: Duration) -> String {
        self.line(before, over)
    }

    pub fn reading(&self) -> Churn {
        self.now()
    }
}

/// The task printing the lines, stopped when dropped.
pub struct Printer(tokio::task::JoinHandle<()>);

impl Drop for Printer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connections per peer, and opened/closed per peer per second by cause.
pub fn rates(delta: &Churn, peers: usize, over: Duration, connections: f64) -> String {
    let per = |n: u64| n as f64 / peers as f64 / over.as_secs_f64();
    format!(
        "{connections:.1} conns/peer; per peer per s: opened {:.3} (in {:.3}, top-up {:.3}, \
         check {:.3}, redial {:.3}, autonat {:.3}, dht/other {:.3}), closed {:.3} (trim {:.3}, told-trimmed {:.3}, \
         check-alive {:.3}, silent {:.3}, other ours {:.3}, remote {:.3})",
        per(delta.opened_total()),
        per(delta.opened_by(Opened::Inbound)),
        per(delta.opened_by(Opened::TopUp)),
        per(delta.opened_by(Opened::Check)),
        per(delta.opened_by(Opened::Redial)),
        per(delta.opened_by(Opened::DialBack)),
        per(delta.opened_by(Opened::Other)),
        per(delta.closed_total()),
        per(delta.closed_for(Closed::Trim)),
        per(delta.closed_for(Closed::TrimmedByPeer)),
        per(delta.closed_for(Closed::CheckAlive)),
        per(delta.closed_for(Closed::Silent)),
        per(delta.closed_for(Closed::OursOther)),
        per(delta.closed_for(Closed::Remote)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_is_judged_in_node_time() {
        let secs = Duration::from_secs;
        // Not scaled: 85 s after the last start, under 0.05 a peer a second.
        assert!(!steady(secs(80), 0.01, 1), "start-up work still under way");
        assert!(steady(secs(90), 0.04, 1));
        assert!(!steady(secs(90), 0.06, 1));
        // x10: the start-up lasts 850 s of wall clock...
        assert!(!steady(secs(90), 0.001, 10));
        // ...and 0.025 a wall second is 0.25 a node second: not steady; 0.003
        // is 0.03: steady.
        assert!(!steady(secs(900), 0.025, 10));
        assert!(steady(secs(900), 0.003, 10));
        assert!(!steady(secs(900), 0.006, 10));
    }
}
