//! When this node's first DHT provider records go out. Each `start_providing`
//! is a walk that dials the key's closest peers (trimmed again later). A node
//! published at start, to the few peers its routing table knew then, and again
//! 60 s later once the table had filled: two walks per key, 0.90 of the 1.86
//! connections a peer opened a second in a 100-peer overlay (session 6). Now the
//! keys are held until the table has stopped growing (the bootstrap is over) and
//! published once; kad republishes them on its own schedule after that.

use std::collections::HashSet;
use std::time::Duration;

use libp2p::kad::RecordKey;

/// How many upkeep ticks in a row the routing table must keep its size (and
/// not be empty) before the held keys are published.
const STEADY_TICKS: u32 = 2;

#[derive(Default)]
pub(super) struct FirstPublication {
    held: HashSet<RecordKey>,
    last_table: Option<usize>,
    steady: u32,
    open: bool,
}

impl FirstPublication {
    /// Whether `key` may be published now; otherwise it is held until `due`.
    pub(super) fn provide_now(&mut self, key: RecordKey) -> bool {
        if self.open {
            return true;
        }
        self.held.insert(key);
        false
    }

    /// A key no longer provided is not published later either.
    pub(super) fn withdraw(&mut self, key: &RecordKey) {
        self.held.remove(key);
    }

    /// Called every upkeep tick with the routing table's size: the held keys,
    /// once the table has been steady and non-empty for `STEADY_TICKS` ticks,
    /// or once `uptime` reaches `limit` (a node alone publishes to no one, but
    /// its own store answers; the walks then go to whoever it knows).
    pub(super) fn due(
        &mut self,
        table: usize,
        uptime: Duration,
        limit: Duration,
    ) -> Vec<RecordKey> {
        if self.open {
            return Vec::new();
        }
        if table > 0 && self.last_table == Some(table) {
            self.steady += 1;
        } else {
            self.steady = 0;
        }
        self.last_table = Some(table);
        if self.steady >= STEADY_TICKS || uptime >= limit {
            self.open = true;
            return self.held.drain().collect();
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(60);
    const EARLY: Duration = Duration::from_secs(3);

    fn key(s: &str) -> RecordKey {
        RecordKey::new(&s)
    }

    #[test]
    fn keys_wait_until_the_routing_table_stops_growing() {
        let mut p = FirstPublication::default();
        assert!(!p.provide_now(key("a")), "held at start");
        assert!(p.due(0, EARLY, LIMIT).is_empty(), "empty table");
        assert!(p.due(0, EARLY, LIMIT).is_empty());
        assert!(
            p.due(0, EARLY, LIMIT).is_empty(),
            "an empty table is never steady"
        );
        assert!(p.due(3, EARLY, LIMIT).is_empty(), "growing");
        assert!(p.due(12, EARLY, LIMIT).is_empty(), "growing");
        assert!(p.due(12, EARLY, LIMIT).is_empty(), "steady for one tick");
        assert_eq!(p.due(12, EARLY, LIMIT), vec![key("a")], "steady for two");
        assert!(p.provide_now(key("b")), "after that, at once");
        assert!(p.due(12, EARLY, LIMIT).is_empty(), "published once");
    }

    #[test]
    fn keys_go_out_at_the_limit_whatever_the_table() {
        let mut p = FirstPublication::default();
        assert!(!p.provide_now(key("a")));
        assert!(p.due(0, EARLY, LIMIT).is_empty());
        assert_eq!(p.due(0, LIMIT, LIMIT), vec![key("a")]);
    }

    #[test]
    fn a_withdrawn_key_is_not_published_later() {
        let mut p = FirstPublication::default();
        assert!(!p.provide_now(key("a")));
        p.withdraw(&key("a"));
        assert!(p.due(0, LIMIT, LIMIT).is_empty());
    }
}
