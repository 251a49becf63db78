//! A relayed connection replaced by a punched one retires: new streams take the
//! direct connection at once, and the relayed one is closed once the streams that
//! may ride it have ended (a migration or a consumption started before the punch
//! finishes undisturbed), or after [`RETIRE_LIMIT`] whatever still rides it, so a
//! relayed connection is not pinned for ever. A relayed connection replaced by a
//! newer circuit to the same peer (a punch tried again, repunch.rs) retires the
//! same way, without the limit: no direct path exists to take over its streams.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::swarm::ConnectionId;

use super::EventLoop;

/// A retiring connection is kept at least this long: the other end learns of the
/// punch a moment later and may still open a stream over it meanwhile.
pub(super) const GRACE: Duration = Duration::from_secs(2);
/// A stream the peer opened reaches the ledger when the runtime takes it, a
/// little after it arrived on its connection: streams accepted up to this long
/// after the last arrival on a retiring connection count as riding it.
const ACCEPT_LAG: Duration = Duration::from_secs(2);
/// A retiring relayed connection is closed after this long in any case.
pub(super) const RETIRE_LIMIT: Duration = Duration::from_secs(600);

/// What replaced a retiring relayed connection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Cause {
    /// A punched, direct connection.
    Punched,
    /// A newer circuit through a relay (to try the punch again).
    NewCircuit,
}

impl Cause {
    fn after(self) -> &'static str {
        match self {
            Cause::Punched => "the punch",
            Cause::NewCircuit => "a new circuit replaced it",
        }
    }
}

/// Relayed connections replaced by a direct one or a newer circuit, not closed yet.
#[derive(Default)]
pub(super) struct Retiring {
    connections: HashMap<ConnectionId, (PeerId, Instant, Cause)>,
    /// Control requests received on a connection and not answered yet.
    inbound_requests: HashMap<ConnectionId, usize>,
}

impl Retiring {
    pub(super) fn request_received(&mut self, connection: ConnectionId) {
        *self.inbound_requests.entry(connection).or_default() += 1;
    }

    pub(super) fn request_done(&mut self, connection: ConnectionId) {
        if let Some(n) = self.inbound_requests.get_mut(&connection) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inbound_requests.remove(&connection);
            }
        }
    }
}

/// What to do with a retiring connection held for `held`, with `busy` streams or
/// requests of ours that may still ride it. Only a connection a direct one
/// replaced is closed at the limit: one replaced by a newer circuit carries its
/// streams to their end (the newer circuit is no better a path).
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    Keep,
    Close(String),
}

pub(super) fn verdict(held: Duration, busy: usize, cause: Cause) -> Verdict {
    if held < GRACE {
        Verdict::Keep
    } else if busy == 0 {
        Verdict::Close("no stream of ours left on it".into())
    } else if held >= RETIRE_LIMIT && cause == Cause::Punched {
        Verdict::Close(format!(
            "{busy} stream(s) still open, closed at the {} s limit",
            RETIRE_LIMIT.as_secs()
        ))
    } else {
        Verdict::Keep
    }
}

impl EventLoop {
    /// A punch to `peer` succeeded (or a newer circuit, `keep`, reached it): its
    /// other relayed connections stop taking new streams and close once their
    /// streams end (checked by [`Self::review_retiring`]).
    pub(super) fn retire_relayed(
        &mut self,
        peer: PeerId,
        cause: Cause,
        keep: Option<ConnectionId>,
    ) {
        let now = Instant::now();
        for id in self.links.relayed_connections(&peer) {
            if Some(id) == keep || self.retiring.connections.contains_key(&id) {
                continue;
            }
            self.retiring.connections.insert(id, (peer, now, cause));
            self.swarm.behaviour_mut().streams.hide(id);
        }
    }

    /// Streams and requests with `peer` that may ride `connection`, retiring since
    /// `since`: streams this node opened before it was hidden, streams the peer
    /// opened up to the last one that arrived on it, control requests.
    fn busy(&self, peer: &PeerId, connection: ConnectionId, since: Instant) -> usize {
        let streams = self.swarm.behaviour().streams.last_arrival(connection);
        let streams = self
            .ledger
            .open_before(peer, since, streams.map(|t| t + ACCEPT_LAG));
        let outbound = self
            .pending_requests
            .values()
            .filter(|(p, _)| p == peer)
            .count();
        let inbound = self
            .retiring
            .inbound_requests
            .get(&connection)
            .copied()
            .unwrap_or(0);
        tracing::debug!(%peer, streams, outbound, inbound, "retiring relayed connection: busy");
        streams + outbound + inbound
    }

    /// Closes the retiring connections whose streams have ended (or that reached
    /// the limit).
    pub(super) fn review_retiring(&mut self) {
        let retiring: Vec<_> = self
            .retiring
            .connections
            .iter()
            .map(|(id, (peer, since, cause))| (*id, *peer, *since, *cause))
            .collect();
        for (id, peer, since, cause) in retiring {
            let held = since.elapsed();
            if let Verdict::Close(why) = verdict(held, self.busy(&peer, id, since), cause) {
                tracing::info!(
                    "closing the relayed connection to {} {:.1} s after {}: {why}",
                    self.display_name(&peer),
                    held.as_secs_f64(),
                    cause.after()
                );
                self.retiring.connections.remove(&id);
                // No request rides it now: none may pick it while it closes.
                self.swarm.behaviour_mut().control.hide(id);
                self.departures.closing_on_purpose(id);
                self.swarm.close_connection(id);
            }
        }
    }

    /// A connection closed. When it was the peer's last direct one, its retiring
    /// relayed connections are the link again and take new streams.
    pub(super) fn on_closed_for_retiring(&mut self, peer: PeerId, id: ConnectionId) {
        self.retiring.connections.remove(&id);
        self.retiring.inbound_requests.remove(&id);
        self.swarm.behaviour_mut().streams.forget(id);
        if self.links.is_direct(&peer) {
            return;
        }
        let back: Vec<ConnectionId> = self
            .retiring
            .connections
            .iter()
            .filter(|(_, (p, _, cause))| *p == peer && *cause == Cause::Punched)
            .map(|(id, _)| *id)
            .collect();
        if back.is_empty() {
            return;
        }
        tracing::info!(
            "direct connection to {} lost: back to the relayed one",
            self.display_name(&peer)
        );
        for id in back {
            self.retiring.connections.remove(&id);
            self.swarm.behaviour_mut().streams.show(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retiring_connection_closes_when_idle_after_the_grace_or_at_the_limit() {
        // Within the grace the other end may still open streams on it.
        let punched = Cause::Punched;
        assert_eq!(verdict(Duration::ZERO, 0, punched), Verdict::Keep);
        // Idle afterwards: closed.
        assert!(
            matches!(verdict(GRACE, 0, punched), Verdict::Close(why) if why.contains("no stream"))
        );
        // A stream opened before the punch still runs: kept...
        assert_eq!(verdict(Duration::from_secs(120), 1, punched), Verdict::Keep);
        // ...but not for ever.
        assert!(
            matches!(verdict(RETIRE_LIMIT, 2, punched), Verdict::Close(why) if why.contains("2 stream(s) still open"))
        );
    }

    #[test]
    fn a_connection_a_newer_circuit_replaced_keeps_its_streams_to_their_end() {
        let replaced = Cause::NewCircuit;
        assert!(matches!(verdict(GRACE, 0, replaced), Verdict::Close(_)));
        // No direct path to take a long consumption over: it is never cut.
        assert_eq!(verdict(RETIRE_LIMIT * 10, 1, replaced), Verdict::Keep);
    }
}
