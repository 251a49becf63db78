//! Local health, after Lifeguard (the SWIM extension HashiCorp's memberlist
//! uses): a node that is itself slow must not take its peers' silence for their
//! failure. On a starved host (a CPU shared by many processes, or 100 nodes in
//! one benchmark process) pings wait for a core and come back late on every
//! connection at once; closing those connections as silent and dialing each
//! peer again (a handshake each) starves the host further, until no link holds.
//!
//! The signal is this node's own upkeep tick: when it fires late, the node is
//! behind, and the silence it tolerates grows with the score (up to
//! `1 + MAX_SCORE` times the base limit); ticks on time bring it back down.

use std::time::{Duration, Instant};

/// A tick this late (after its due time) counts against the node's health.
const LATE: Duration = Duration::from_millis(1000);
/// The score's ceiling: the silence tolerated is at most 9x the base limit.
const MAX_SCORE: u32 = 8;

#[derive(Default)]
pub(super) struct LocalHealth {
    score: u32,
    last_tick: Option<Instant>,
}

impl LocalHealth {
    /// The upkeep tick ran at `now`; it is due `every` after the previous one.
    pub(super) fn tick(&mut self, now: Instant, every: Duration) {
        if let Some(last) = self.last_tick {
            let late = now.saturating_duration_since(last + every);
            let was = self.score;
            if late > LATE {
                self.score = (self.score + 1).min(MAX_SCORE);
            } else {
                self.score = self.score.saturating_sub(1);
            }
            if was != self.score && (was == 0 || self.score == 0) {
                tracing::info!(
                    "local health: {} (upkeep tick {:.1} s late)",
                    if self.score > 0 {
                        "behind, tolerating longer silences"
                    } else {
                        "on time again"
                    },
                    late.as_secs_f64()
                );
            }
        }
        self.last_tick = Some(now);
    }

    /// How long a connection may go without an answered ping before it is
    /// closed: the base limit, times one plus the score.
    pub(super) fn silence_limit(&self, base: Duration) -> Duration {
        base * (1 + self.score)
    }

    /// Whether the node is behind now.
    pub(super) fn behind(&self) -> bool {
        self.score > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_ticks_stretch_the_silence_tolerated_and_ticks_on_time_undo_it() {
        let every = Duration::from_secs(3);
        let base = Duration::from_secs(8);
        let mut health = LocalHealth::default();
        let mut now = Instant::now();
        health.tick(now, every);
        assert_eq!(health.silence_limit(base), base, "healthy at start");

        // Three ticks 2 s late each: a starved node.
        for _ in 0..3 {
            now += every + Duration::from_secs(2);
            health.tick(now, every);
        }
        assert!(health.behind());
        assert_eq!(health.silence_limit(base), base * 4);

        // Far behind for long: capped.
        for _ in 0..20 {
            now += every * 3;
            health.tick(now, every);
        }
        assert_eq!(health.silence_limit(base), base * 9);

        // A little jitter is no sign of trouble, and on-time ticks recover.
        for _ in 0..9 {
            now += every + Duration::from_millis(300);
            health.tick(now, every);
        }
        assert!(!health.behind());
        assert_eq!(health.silence_limit(base), base);
    }
}
