//! How long the simulation waits for its overlay to complete (every node
//! knowing every other's service) before it measures: as long as the overlay
//! is still getting there, up to a cap. A fixed bound (320 s at 1,000 peers)
//! cut off overlays that were converging on a host that gave the process
//! half a core; waiting while the count of what is missing falls, and no
//! longer once it has stopped falling for a window, follows the host instead.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// What the overlay still misses at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Nodes that do not yet know every other node's service.
    pub incomplete: usize,
    /// (node, peer) pairs where the node does not know the peer's service.
    pub missing_pairs: usize,
    /// Of the nodes unknown to some, the median of how many they are unknown to.
    pub median_unknown: usize,
    /// How the gaps spread (not judged, said): the most peers one node
    /// misses, and the nodes missing more than a tenth of their peers (a few
    /// nodes cut off, or many missing a few).
    pub worst_node_missing: usize,
    pub nodes_missing_tenth: usize,
}

impl Progress {
    /// What `live` nodes (indices below `size`) miss of each other, where
    /// `knows(node, other)` says whether `node` knows `other`'s service. One
    /// pass over n x n entries: taken every few seconds.
    pub fn tally(live: &[usize], size: usize, knows: impl Fn(usize, usize) -> bool) -> Progress {
        let mut unknown_to = vec![0usize; size];
        let mut incomplete = 0;
        let (mut worst_node_missing, mut nodes_missing_tenth) = (0, 0);
        for &n in live {
            let mut misses = 0;
            for &other in live {
                if other != n && !knows(n, other) {
                    unknown_to[other] += 1;
                    misses += 1;
                }
            }
            incomplete += usize::from(misses > 0);
            worst_node_missing = worst_node_missing.max(misses);
            nodes_missing_tenth += usize::from(misses * 10 > live.len());
        }
        let mut counts: Vec<usize> = unknown_to.into_iter().filter(|&c| c > 0).collect();
        counts.sort_unstable();
        Progress {
            incomplete,
            missing_pairs: counts.iter().sum(),
            median_unknown: counts.get(counts.len() / 2).copied().unwrap_or(0),
            worst_node_missing,
            nodes_missing_tenth,
        }
    }

    pub fn complete(&self) -> bool {
        self.missing_pairs == 0
    }

    /// For the progress lines: `peers` is the overlay's size.
    pub fn line(&self, peers: usize) -> String {
        if self.complete() {
            return "every node knows every other".into();
        }
        format!(
            "{} node(s) incomplete, {} (node, peer) pairs missing, the median missing node \
             unknown to {} of {}; one node misses at most {}, {} node(s) miss over a tenth",
            self.incomplete,
            self.missing_pairs,
            self.median_unknown,
            peers.saturating_sub(1),
            self.worst_node_missing,
            self.nodes_missing_tenth,
        )
    }
}

/// The overlay is still converging while it gained within this much node
/// time (the last minute).
pub const WINDOW: Duration = Duration::from_secs(60);

/// What to do after a look at the overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every node knows every other: measure.
    Complete,
    /// Still getting there (or too early to say): wait.
    Converging,
    /// Nothing gained within the last window: measure anyway.
    Stalled,
    /// The cap is reached: measure anyway.
    Capped,
}

/// How the wait for completeness ended, and after how long (from the first
/// node's start): said in the table beside the figures taken after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    pub verdict: Verdict,
    pub after: Duration,
    pub progress: Progress,
}

impl fmt::Display for Settled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.after.as_secs();
        match self.verdict {
            Verdict::Complete | Verdict::Converging => write!(f, "{secs}"),
            Verdict::Stalled => write!(f, "{secs} stall"),
            Verdict::Capped => write!(f, "{secs} cap"),
        }
    }
}

/// Judges a series of looks at the overlay: converging while one of its
/// counts (missing pairs, incomplete nodes, the median missing node's
/// unknown-to) reached a new low within the last `window`. A thousand nodes
/// on half a core gain slowly and unevenly: the median can fall while the
/// pairs wobble with records expiring and coming back.
pub struct Settling {
    window: Duration,
    cap: Duration,
    /// Looks within the last window.
    recent: VecDeque<(Duration, [usize; 3])>,
    /// The lowest of each count over every look older than the window.
    best_before: Option<[usize; 3]>,
}

fn counts(p: &Progress) -> [usize; 3] {
    [p.missing_pairs, p.incomplete, p.median_unknown]
}

fn lowest(a: [usize; 3], b: [usize; 3]) -> [usize; 3] {
    [a[0].min(b[0]), a[1].min(b[1]), a[2].min(b[2])]
}

impl Settling {
    pub fn new(window: Duration, cap: Duration) -> Settling {
        Settling {
            window,
            cap,
            recent: VecDeque::new(),
            best_before: None,
        }
    }

    /// A look at the overlay at `at` (from the first node's start).
    pub fn judge(&mut self, at: Duration, progress: Progress) -> Verdict {
        if progress.complete() {
            return Verdict::Complete;
        }
        if at >= self.cap {
            return Verdict::Capped;
        }
        self.recent.push_back((at, counts(&progress)));
        while let Some(&(t, old)) = self.recent.front() {
            if at.saturating_sub(t) <= self.window {
                break;
            }
            self.best_before = Some(self.best_before.map_or(old, |b| lowest(b, old)));
            self.recent.pop_front();
        }
        // The first window: nothing to compare with yet.
        let Some(before) = self.best_before else {
            return Verdict::Converging;
        };
        let best_recent = self
            .recent
            .iter()
            .fold([usize::MAX; 3], |low, &(_, c)| lowest(low, c));
        if best_recent
            .iter()
            .zip(before)
            .any(|(&now, then)| now < then)
        {
            Verdict::Converging
        } else {
            Verdict::Stalled
        }
    }
}

/// The default cap on the wait, in wall-clock time: 5 minutes, or 1.8 s per
/// peer (30 minutes at 1,000), whichever is longer.
pub fn default_cap(peers: usize) -> Duration {
    Duration::from_secs(300).max(Duration::from_millis(1800 * peers as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing(pairs: usize) -> Progress {
        Progress {
            incomplete: 10,
            missing_pairs: pairs,
            median_unknown: 10,
            ..Progress::default()
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn a_converging_overlay_is_waited_for_past_any_fixed_bound() {
        let mut settling = Settling::new(MINUTE, at(1800));
        // Slow but steady progress: 1,000 pairs fewer every 10 s, for 20 minutes.
        for (i, secs) in (0..1200).step_by(10).enumerate() {
            let verdict = settling.judge(at(secs), missing(500_000 - 1000 * i));
            assert_eq!(verdict, Verdict::Converging, "at {secs} s");
        }
        assert_eq!(settling.judge(at(1200), missing(0)), Verdict::Complete);
    }

    #[test]
    fn an_overlay_that_stopped_gaining_for_a_window_is_measured_anyway() {
        let mut settling = Settling::new(MINUTE, at(1800));
        assert_eq!(settling.judge(at(0), missing(900)), Verdict::Converging);
        assert_eq!(settling.judge(at(30), missing(400)), Verdict::Converging);
        // Stuck at 400, wobbling above it: converging until a whole window
        // has passed without a new low, then stalled.
        assert_eq!(settling.judge(at(60), missing(420)), Verdict::Converging);
        assert_eq!(settling.judge(at(80), missing(400)), Verdict::Converging);
        assert_eq!(settling.judge(at(100), missing(410)), Verdict::Stalled);
        // A new low: converging again.
        assert_eq!(settling.judge(at(110), missing(399)), Verdict::Converging);
    }

    #[test]
    fn a_new_low_of_any_count_is_progress() {
        // The pairs wobble (records expiring and heard again) while the
        // median missing node becomes known to more: still converging.
        let mut settling = Settling::new(MINUTE, at(1800));
        let look = |pairs, median| Progress {
            incomplete: 1000,
            missing_pairs: pairs,
            median_unknown: median,
            ..Progress::default()
        };
        assert_eq!(
            settling.judge(at(0), look(925_000, 995)),
            Verdict::Converging
        );
        assert_eq!(
            settling.judge(at(61), look(926_000, 991)),
            Verdict::Converging
        );
        assert_eq!(
            settling.judge(at(122), look(925_500, 990)),
            Verdict::Converging
        );
        // No count lower than a minute ago: stalled.
        assert_eq!(
            settling.judge(at(183), look(925_600, 990)),
            Verdict::Stalled
        );
    }

    #[test]
    fn the_cap_ends_the_wait_even_while_converging() {
        let mut settling = Settling::new(MINUTE, at(600));
        assert_eq!(settling.judge(at(0), missing(900)), Verdict::Converging);
        assert_eq!(settling.judge(at(590), missing(20)), Verdict::Converging);
        assert_eq!(settling.judge(at(600), missing(10)), Verdict::Capped);
        // Complete wins over the cap.
        assert_eq!(settling.judge(at(700), missing(0)), Verdict::Complete);
    }

    #[test]
    fn the_table_says_how_the_wait_ended() {
        let settled = |verdict| {
            Settled {
                verdict,
                after: at(1234),
                progress: missing(5),
            }
            .to_string()
        };
        assert_eq!(settled(Verdict::Complete), "1234");
        assert_eq!(settled(Verdict::Stalled), "1234 stall");
        assert_eq!(settled(Verdict::Capped), "1234 cap");
        assert_eq!(default_cap(1000), at(1800));
        assert_eq!(default_cap(100), at(300));
    }
}
