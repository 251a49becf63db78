//! Who left the overlay, told by the peers that saw it go (after SWIM's idea:
//! failure is detected by neighbours and disseminated, not inferred from every
//! peer hearing every other peer's heartbeat, which costs each peer O(n)).
//!
//! A peer whose last connection to us closed without our asking is dialed once;
//! if that fails, it is reported in our next announcement (`departed`, with its
//! last sequence number we knew) and dropped here. Receivers drop it too,
//! unless they are connected to it or heard a newer announcement. A peer that
//! reads its own name there announces again (a newer sequence number wins). A
//! lost peer is redialed for a while: when it answers (a partition healed), we
//! announce again, so the other side, which dropped us, hears of us.
//!
//! Also here: the snapshot a node pulls from its first neighbour, so it learns
//! the overlay at once instead of as each peer's next periodic announcement comes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::core::ConnectedPoint;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::swarm::ConnectionId;

use super::churn::{self, Closed, Opened};
use super::digest::bucket_of;
use super::protocol::{Announcement, ControlResponse, Departure};
use super::pulls::{self, Count};
use super::{Event, EventLoop};

/// A trim notice, or our own trim, explains a close for this long: the close
/// follows the notice's answer at once, an older peer's check dial within seconds.
const TRIM_NOTICE_VALID: Duration = Duration::from_secs(120);
/// How long the top-up avoids redialing a peer a trim parted us from.
const PARTED_FOR: Duration = Duration::from_secs(600);
/// How long a lost peer is redialed (every 3 s) before we give up on it.
const REDIAL_LOST_FOR: Duration = Duration::from_secs(600);
/// Changes within this are announced together (a partition loses many at once).
const ANNOUNCE_BATCH: Duration = Duration::from_millis(500);
/// How many departures one announcement carries at most.
const MAX_REPORTED: usize = 64;
/// Announcements per snapshot answer (without links, a few hundred bytes each:
/// well under the control protocol's 1 MiB answer).
const SNAPSHOT_PAGE: usize = 500;

#[derive(Default)]
pub(super) struct Departures {
    /// Peers whose last connection closed without our asking, and when.
    lost: HashMap<PeerId, Lost>,
    /// Connections this node closed on purpose (spare, trimmed, retired), and why.
    closing: HashMap<ConnectionId, Closed>,
    /// Our dials in progress, and why we made them (churn.rs counts them).
    dialing: HashMap<ConnectionId, (Opened, Instant)>,
    /// Connections this node closed because the peer stopped answering, and
    /// when it last answered.
    silent: HashMap<ConnectionId, Instant>,
    /// Peers whose connections we trimmed, and when: an older peer's answer (a
    /// dial that finds us here, then closed again) is no departure.
    trimmed: HashMap<PeerId, Instant>,
    /// Peers that told us they are trimming their connections to us, and when:
    /// that close is no departure (taken once, at the close).
    told_trim: HashMap<PeerId, Instant>,
    /// Peers between whom and us a trim happened lately (either side): the
    /// top-up dials others first, so a trim is not undone at the next tick.
    parted: HashMap<PeerId, Instant>,
    /// Our trim notices waiting for their answer, and their peer.
    pub(super) trim_notices: HashMap<OutboundRequestId, PeerId>,
    /// Departures for our next announcement.
    to_report: Vec<Departure>,
    /// When to announce again (batched changes), if at all.
    pub(super) announce_at: Option<Instant>,
    /// Lost peers that came back: we announce again once they subscribed to
    /// our gossip (an announcement before that would not reach them).
    back: HashSet<PeerId>,
    /// Our last announcement reached no one (no peer had subscribed yet).
    pub(super) unheard: bool,
    /// When we last announced.
    pub(super) announced_at: Option<Instant>,
    /// Asked a neighbour for its view; None once answered.
    pub(super) snapshot: Snapshot,
    /// The digest buckets the snapshot being pulled is limited to (empty: all).
    snapshot_buckets: Vec<u8>,
    /// The digest we asked a neighbour for (node/digest.rs).
    pub(super) digest_asked: Option<OutboundRequestId>,
}

struct Lost {
    since: Instant,
    reported: bool,
    /// It stopped answering (not: it closed the connection) after this: when
    /// it answers again, the path between us was cut, and it may have missed
    /// what we announced since.
    silent_since: Option<Instant>,
}

#[derive(Default, PartialEq)]
pub(super) enum Snapshot {
    #[default]
    NotAsked,
    Asked(OutboundRequestId),
    Done,
}

impl Departures {
    /// This node closes `id` itself: not a departure.
    pub(super) fn closing_on_purpose(&mut self, id: ConnectionId) {
        self.closing_for(id, Closed::OursOther);
    }

    /// This node closes `id` itself, for `why`.
    pub(super) fn closing_for(&mut self, id: ConnectionId, why: Closed) {
        self.closing.insert(id, why);
    }

    /// This node closes `id` because its peer stopped answering after `since`.
    pub(super) fn closing_silent(&mut self, id: ConnectionId, since: Instant) {
        self.silent.insert(id, since);
    }

    /// Whether a peer that was lost, and answers again, makes us announce again:
    /// when it (or we) had been reported gone, so the far side refutes or hears
    /// of us; or when it went silent before our latest announcement, which it
    /// may have missed. Not for every silence: on a busy host many links fall
    /// silent for a while without any partition, and an announcement for each
    /// of them (gossiped to the whole overlay) was what kept 100 simulated
    /// peers from ever settling (3,842 in a minute).
    fn announce_on_return(&self, lost: &Lost, believed_gone: bool) -> bool {
        let missed = lost
            .silent_since
            .zip(self.announced_at)
            .is_some_and(|(silent, announced)| announced >= silent);
        lost.reported || believed_gone || missed
    }

    /// This node trims its connections to `peer` (closing them once told).
    pub(super) fn trimming(&mut self, peer: PeerId) {
        stamp(&mut self.trimmed, peer, TRIM_NOTICE_VALID);
        stamp(&mut self.parted, peer, PARTED_FOR);
    }

    /// `peer` is trimming its connections to us.
    fn told_trimming(&mut self, peer: PeerId) {
        stamp(&mut self.told_trim, peer, TRIM_NOTICE_VALID);
        stamp(&mut self.parted, peer, PARTED_FOR);
    }

    /// Peers a trim parted us from lately: the top-up prefers others.
    pub(super) fn parted(&self) -> HashSet<PeerId> {
        (self.parted.iter())
            .filter(|(_, at)| at.elapsed() < PARTED_FOR)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Whether a trim notice to `peer` is waiting for its answer.
    pub(super) fn notice_pending(&self, peer: &PeerId) -> bool {
        self.trim_notices.values().any(|p| p == peer)
    }

    /// What the close of the last connection to `peer` means: `silent` if we
    /// closed it because the peer stopped answering.
    fn close_means(&mut self, peer: &PeerId, silent: bool) -> CloseMeans {
        let told = self.told_trim.remove(peer).map(|at| at.elapsed());
        let trimmed = self.trimmed.get(peer).map(|at| at.elapsed());
        close_means(silent, told, trimmed)
    }

    fn announce_soon(&mut self) {
        let at = Instant::now() + ANNOUNCE_BATCH;
        self.announce_at = Some(self.announce_at.map_or(at, |t| t.min(at)));
    }

    /// The departures to put in the announcement being made now.
    pub(super) fn take_report(&mut self) -> Vec<Departure> {
        let n = self.to_report.len().min(MAX_REPORTED);
        let report: Vec<Departure> = self.to_report.drain(..n).collect();
        if !self.to_report.is_empty() {
            self.announce_soon();
        }
        report
    }
}

/// Whether the check dial to a peer whose last connection closed could not
/// be made, so the peer is reported gone at once. A dial to it already under
/// way (a top-up, a redial, a DHT query's) refuses ours: that one's outcome
/// tells instead (its failure reaches `departure_on_dial_failed`, its
/// connection `departure_on_connected`). Reported at once, a living peer was
/// dropped by every node (thousands of false departures at 1,000 simulated
/// peers: docs/scale.md, session 7).
fn check_not_started(dialed: &Result<(), libp2p::swarm::DialError>) -> bool {
    !matches!(
        dialed,
        Ok(()) | Err(libp2p::swarm::DialError::DialPeerConditionFalse(_))
    )
}

/// Remembers `peer` as of now, forgetting the entries older than `keep`.
fn stamp(map: &mut HashMap<PeerId, Instant>, peer: PeerId, keep: Duration) {
    map.retain(|_, at| at.elapsed() < keep);
    map.insert(peer, Instant::now());
}

/// What the close of the last connection to a peer, not asked by us, says.
#[derive(Clone, Copy, Debug, PartialEq)]
enum CloseMeans {
    /// Nothing to check: an older peer's check dial closed again after we
    /// trimmed it (a newer one does not dial back), or one of ours.
    Nothing,
    /// The peer trimmed it and told us first: it is alive.
    TrimmedByPeer,
    /// Gone, or only this path? One dial tells.
    Check,
}

/// A close after the peer's trim notice (`told`, that long ago) is no
/// departure; nor one shortly after we trimmed the peer (`trimmed`): an older
/// peer's check dial, closed again. A connection we closed because the peer
/// went silent is checked whatever came before: a notice does not make a
/// vanished peer alive.
fn close_means(silent: bool, told: Option<Duration>, trimmed: Option<Duration>) -> CloseMeans {
    let recent = |t: Option<Duration>| t.is_some_and(|t| t < TRIM_NOTICE_VALID);
    if silent {
        CloseMeans::Check
    } else if recent(told) {
        CloseMeans::TrimmedByPeer
    } else if recent(trimmed) {
        CloseMeans::Nothing
    } else {
        CloseMeans::Check
    }
}

impl EventLoop {
    /// A peer tells us it is trimming its connections to us.
    pub(super) fn on_trim_notice(
        &mut self,
        peer: PeerId,
        channel: ResponseChannel<ControlResponse>,
    ) {
        tracing::debug!("{} trims its connection to us", self.display_name(&peer));
        self.departures.told_trimming(peer);
        self.respond(channel, ControlResponse::Ack);
    }

    /// Dials `peer`, remembering why (counted when the connection opens).
    pub(super) fn dial_for(
        &mut self,
        peer: impl Into<libp2p::swarm::dial_opts::DialOpts>,
        why: Opened,
    ) -> Result<(), libp2p::swarm::DialError> {
        let opts = peer.into();
        let id = opts.connection_id();
        self.swarm.dial(opts)?;
        let dialing = &mut self.departures.dialing;
        // Failed dials leave their entry: forgotten after a minute.
        if dialing.len() > 256 {
            dialing.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(60));
        }
        dialing.insert(id, (why, Instant::now()));
        Ok(())
    }

    /// A connection opened: counted by who opened it.
    pub(super) fn churn_on_opened(&mut self, id: ConnectionId, endpoint: &ConnectedPoint) {
        let ours = self.departures.dialing.remove(&id).map(|(why, _)| why);
        churn::opened(match ours {
            Some(why) => why,
            None if super::reachability::is_dial_back(endpoint) => Opened::DialBack,
            None if endpoint.is_dialer() => Opened::Other,
            None => Opened::Inbound,
        });
    }

    /// A connection closed; `remaining` to that peer are still open.
    pub(super) fn departure_on_closed(&mut self, peer: PeerId, id: ConnectionId, remaining: u32) {
        let on_purpose = self.departures.closing.remove(&id);
        let silent_since = self.departures.silent.remove(&id);
        let means = match on_purpose {
            Some(_) => CloseMeans::Nothing,
            None => (self.departures).close_means(&peer, silent_since.is_some()),
        };
        churn::closed(match (on_purpose, silent_since, means) {
            (Some(why), _, _) => why,
            (None, Some(_), _) => Closed::Silent,
            (None, None, CloseMeans::TrimmedByPeer) => Closed::TrimmedByPeer,
            (None, None, _) => Closed::Remote,
        });
        if remaining > 0 || means != CloseMeans::Check {
            return;
        }
        self.departures.back.remove(&peer);
        self.departures.lost.insert(
            peer,
            Lost {
                since: Instant::now(),
                reported: false,
                silent_since,
            },
        );
        // Gone, or only this path? One dial tells.
        let dialed = self.dial_for(peer, Opened::Check);
        if check_not_started(&dialed) {
            tracing::debug!("dial lost peer {peer}: {:?}", dialed.err());
            pulls::one(Count::CheckNotStarted);
            self.report_departure(peer);
        }
    }

    /// A dial failed: if it was one to a lost peer, the peer is gone.
    pub(super) fn departure_on_dial_failed(&mut self, peer: PeerId) {
        if self.swarm.is_connected(&peer) {
            return;
        }
        if self.departures.lost.get(&peer).is_some_and(|l| !l.reported) {
            pulls::one(Count::CheckFailed);
            self.report_departure(peer);
        }
    }

    fn report_departure(&mut self, peer: PeerId) {
        let Some(lost) = self.departures.lost.get_mut(&peer) else {
            return;
        };
        lost.reported = true;
        let seq = self.peers.get(&peer).map_or(0, |e| e.announced_seq);
        // Someone else reported it already (their announcement reached us first).
        let known_gone = self
            .peers
            .get(&peer)
            .is_some_and(|e| e.departed_seq.is_some_and(|s| s >= seq));
        tracing::info!(
            "peer {} is gone (no connection, no answer to a dial)",
            self.display_name(&peer)
        );
        self.drop_departed(peer, seq);
        if !known_gone {
            pulls::one(Count::DepartureReported);
            self.departures.to_report.push(Departure {
                peer: peer.to_string(),
                seq,
            });
            self.departures.announce_soon();
        }
    }

    /// Forgets `peer`'s announcement `seq` (and older ones) and tells the rest of
    /// the program its records are gone.
    fn drop_departed(&mut self, peer: PeerId, seq: u64) {
        let entry = self.peers.entry(peer).or_default();
        if entry.departed_seq.is_some_and(|s| s >= seq) {
            return;
        }
        entry.departed_seq = Some(seq);
        pulls::one(Count::DepartureApplied);
        entry.announcement = None;
        entry.vms = None;
        let _ = self.events.try_send(Event::Departed { peer });
    }

    /// A connection to `peer` opened (its first): a lost one is back.
    pub(super) fn departure_on_connected(&mut self, peer: PeerId, id: ConnectionId) {
        // Reported gone (by us or another peer), yet here: once it listens, we
        // name it in our next announcement, so it announces again (refutes).
        let believed_gone = self
            .peers
            .get(&peer)
            .is_some_and(|e| e.departed_seq.is_some());
        match self.departures.lost.remove(&peer) {
            Some(lost) if self.departures.announce_on_return(&lost, believed_gone) => {
                // The other side of a partition dropped us as we dropped them.
                tracing::info!("peer {} is back", self.display_name(&peer));
                self.departures.back.insert(peer);
                // And each side may have missed what the other heard meanwhile:
                // compare digests now (both ends do: push-pull), not at the
                // next anti-entropy round, up to 10 s away.
                self.ask_digest(peer);
            }
            // Our check found it alive: the other end closed the connection
            // (it trims its own). Kept only if we are short of connections.
            Some(_) if self.swarm.connected_peers().count() > super::upkeep::TARGET_CONNECTIONS => {
                self.departures.closing_for(id, Closed::CheckAlive);
                self.swarm.close_connection(id);
            }
            _ if believed_gone => {
                self.departures.back.insert(peer);
            }
            _ => {}
        }
        if self.departures.snapshot == Snapshot::NotAsked {
            self.ask_snapshot(peer, None, Vec::new());
        }
    }

    /// Once, a minute after start: another neighbour's snapshot. A node that
    /// joined while the overlay itself was forming (many peers starting at
    /// once) missed the announcements made before the meshes joined up.
    pub(super) fn second_snapshot(&mut self) {
        use rand::seq::IteratorRandom;
        if self.departures.snapshot != Snapshot::Done {
            return;
        }
        let peer = self
            .swarm
            .connected_peers()
            .choose(&mut rand::thread_rng())
            .copied();
        if let Some(peer) = peer {
            self.ask_snapshot(peer, None, Vec::new());
        }
    }

    /// Pulls `peer`'s snapshot, the peers after `after`, in `buckets` (empty: all).
    pub(super) fn ask_snapshot(&mut self, peer: PeerId, after: Option<String>, buckets: Vec<u8>) {
        self.departures.snapshot_buckets = buckets.clone();
        let request = super::protocol::ControlRequest::Snapshot { after, buckets };
        let id = self
            .swarm
            .behaviour_mut()
            .control
            .send_request(&peer, request);
        self.departures.snapshot = Snapshot::Asked(id);
        pulls::one(Count::PullAsked);
    }

    /// A peer subscribed to the announcements: if it is one that came back, or
    /// if our last announcement reached no one, we announce again now; one we
    /// still hold for gone is named in it, so it hears that and refutes.
    pub(super) fn departure_on_subscribed(&mut self, peer: PeerId) {
        let back = self.departures.back.remove(&peer);
        if back && let Some(seq) = self.peers.get(&peer).and_then(|e| e.departed_seq) {
            self.departures.to_report.push(Departure {
                peer: peer.to_string(),
                seq,
            });
        }
        if back || std::mem::take(&mut self.departures.unheard) {
            self.departures.announce_soon();
        }
    }

    /// Departures another peer reported in its announcement.
    pub(super) fn on_departures_heard(&mut self, departed: &[Departure]) {
        let me = *self.swarm.local_peer_id();
        for d in departed {
            let Ok(peer) = d.peer.parse::<PeerId>() else {
                continue;
            };
            if peer == me {
                let mine = self.announcement.as_ref().map_or(0, |a| a.seq);
                if d.seq >= mine {
                    tracing::info!("reported gone, but here: announcing again");
                    pulls::one(Count::Refuted);
                    self.departures.announce_soon();
                }
                continue;
            }
            let newer = self
                .peers
                .get(&peer)
                .is_some_and(|e| e.announced_seq > d.seq);
            if newer || self.swarm.is_connected(&peer) {
                continue;
            }
            self.drop_departed(peer, d.seq);
        }
    }

    /// Every 3 s: lost peers are redialed for a while (a healed partition).
    pub(super) fn redial_lost(&mut self) {
        self.departures
            .lost
            .retain(|_, l| l.since.elapsed() < REDIAL_LOST_FOR);
        let lost: Vec<PeerId> = self
            .departures
            .lost
            .iter()
            .filter(|(_, l)| l.reported)
            .map(|(p, _)| *p)
            .collect();
        for peer in lost {
            let _ = self.dial_for(peer, Opened::Redial);
        }
    }

    /// Our answer to a neighbour's `Snapshot`: every peer's latest announcement
    /// (ours too), by peer id, a page at a time.
    pub(super) fn answer_snapshot(
        &mut self,
        after: Option<&str>,
        buckets: &[u8],
        channel: ResponseChannel<ControlResponse>,
    ) {
        let wanted = |peer: &PeerId| buckets.is_empty() || buckets.contains(&bucket_of(peer));
        let me = *self.swarm.local_peer_id();
        let mine = self.announcement.as_ref().map(|a| (me, a));
        let mut all: Vec<(String, &Announcement)> = self
            .peers
            .iter()
            .filter_map(|(id, e)| Some((*id, e.announcement.as_ref()?)))
            .chain(mine)
            .filter(|(id, _)| wanted(id))
            .map(|(id, a)| (id.to_string(), a))
            .filter(|(id, _)| after.is_none_or(|after| id.as_str() > after))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let more = all.len() > SNAPSHOT_PAGE;
        let departed = if after.is_none() {
            self.tombstones(wanted)
        } else {
            Vec::new()
        };
        let announcements = all
            .into_iter()
            .take(SNAPSHOT_PAGE)
            .map(|(id, a)| {
                // Without links (a page's size): the receiver keeps its own.
                let entry = Announcement {
                    links: Vec::new(),
                    links_unchanged: true,
                    departed: Vec::new(),
                    ..a.clone()
                };
                (id, entry)
            })
            .collect();
        self.respond(
            channel,
            ControlResponse::Snapshot {
                announcements,
                more,
                departed,
            },
        );
    }

    /// A response to a request of the node's own; true if it was one.
    pub(super) async fn on_own_response(
        &mut self,
        from: PeerId,
        id: OutboundRequestId,
        response: Option<ControlResponse>,
    ) -> bool {
        if let Some(peer) = self.departures.trim_notices.remove(&id) {
            // Told (or an older peer that cannot read the notice): close now.
            self.close_trimmed(peer);
            return true;
        }
        if self.departures.digest_asked == Some(id) {
            self.departures.digest_asked = None;
            self.on_digest(from, response);
            return true;
        }
        if self.departures.snapshot != Snapshot::Asked(id) {
            return false;
        }
        let Some(ControlResponse::Snapshot {
            announcements,
            more,
            departed,
        }) = response
        else {
            // Failed: ask the next peer that connects.
            pulls::one(Count::PullFailed);
            self.departures.snapshot = Snapshot::NotAsked;
            return true;
        };
        self.departures.snapshot = Snapshot::Done;
        pulls::one(Count::PullAnswered);
        pulls::add(Count::PullEntries, announcements.len() as u64);
        let last = announcements.last().map(|(id, _)| id.clone());
        if more && last.is_some() {
            let buckets = self.departures.snapshot_buckets.clone();
            self.ask_snapshot(from, last, buckets);
        }
        self.on_departures_heard(&departed);
        let me = *self.swarm.local_peer_id();
        let mut heard: u64 = 0;
        for (peer, announcement) in announcements {
            let Ok(peer) = peer.parse::<PeerId>() else {
                continue;
            };
            if peer == me {
                continue;
            }
            if let Err(e) = announcement.validate() {
                tracing::warn!("dropped a malformed snapshot entry for {peer}: {e}");
                continue;
            }
            if self.heard(peer, announcement).await {
                heard += 1;
            }
        }
        pulls::add(Count::PullNew, heard);
        tracing::debug!("snapshot: {heard} peers' announcements");
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn a_check_dial_refused_for_a_dial_under_way_waits_for_that_one() {
        use libp2p::swarm::{DialError, dial_opts::PeerCondition};
        let under_way = Err(DialError::DialPeerConditionFalse(
            PeerCondition::DisconnectedAndNotDialing,
        ));
        assert!(
            !super::check_not_started(&under_way),
            "reported a peer being dialed"
        );
        assert!(!super::check_not_started(&Ok(())));
        assert!(super::check_not_started(&Err(DialError::NoAddresses)));
    }

    use libp2p::Multiaddr;
    use libp2p::identity::Keypair;
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::super::identity::NetworkKey;
    use super::super::{Client, ConnectionCaps, Event, NodeConfig, start};
    use super::*;

    fn node(
        nick: &str,
        bootstrap: Vec<Multiaddr>,
        caps: ConnectionCaps,
    ) -> (Client, mpsc::Receiver<Event>) {
        start(NodeConfig {
            keypair: Keypair::generate_ed25519(),
            network_key: NetworkKey::new([9; 32]),
            nick: nick.into(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            bootstrap,
            mdns: false,
            relay: Default::default(),
            connections: caps,
            wire: Default::default(),
        })
        .unwrap()
    }

    async fn listen_addr(client: &Client) -> Multiaddr {
        loop {
            if let Some(addr) = client.status().await.unwrap().listen_addrs.first() {
                return addr.parse().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn announcing(vm: &str) -> Announcement {
        Announcement {
            nick: vm.into(),
            vms: vec![vm.into()],
            // Nothing repeats it within the test.
            every_ms: 3_600_000,
            ..Default::default()
        }
    }

    /// Waits for the first event `wanted` accepts, skipping others.
    async fn wait_for(
        events: &mut mpsc::Receiver<Event>,
        bound: Duration,
        wanted: impl Fn(&Event) -> bool,
    ) -> Option<Duration> {
        let t = Instant::now();
        let deadline = t + bound;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
            if wanted(&event) {
                return Some(t.elapsed());
            }
        }
        None
    }

    /// Issue 20: a peer that told us it trims its connection to us is not
    /// dialed back to check it is alive when the connection closes; a silent
    /// one is, notice or not, and so is any unannounced close.
    #[test]
    fn a_close_after_a_trim_notice_is_no_departure_but_a_silent_or_unannounced_one_is_checked() {
        let s = Duration::from_secs;
        assert_eq!(
            close_means(false, None, None),
            CloseMeans::Check,
            "unannounced"
        );
        assert_eq!(
            close_means(false, Some(s(1)), None),
            CloseMeans::TrimmedByPeer,
            "told"
        );
        assert_eq!(
            close_means(true, Some(s(1)), None),
            CloseMeans::Check,
            "told, but silent: vanished"
        );
        assert_eq!(
            close_means(false, Some(TRIM_NOTICE_VALID + s(1)), None),
            CloseMeans::Check,
            "a notice long ago explains nothing"
        );
        assert_eq!(
            close_means(false, None, Some(s(5))),
            CloseMeans::Nothing,
            "an older peer's check dial after our trim"
        );
        assert_eq!(
            close_means(true, None, Some(s(5))),
            CloseMeans::Check,
            "a peer we trimmed, reconnected and then silent"
        );
        assert_eq!(
            close_means(false, None, Some(TRIM_NOTICE_VALID + s(1))),
            CloseMeans::Check
        );

        // The notice is taken once: a later close of a new connection is checked.
        let peer = PeerId::random();
        let mut departures = Departures::default();
        departures.told_trimming(peer);
        assert_eq!(
            departures.close_means(&peer, false),
            CloseMeans::TrimmedByPeer
        );
        assert_eq!(departures.close_means(&peer, false), CloseMeans::Check);
        assert!(departures.parted().contains(&peer));
    }

    /// Issue 20: a peer that answers again after a silence makes us announce
    /// again only if it may have missed our announcement (made after it fell
    /// silent), or if one side took the other for gone (the refutation).
    #[test]
    fn a_returning_peer_gets_our_announcement_again_only_if_it_may_have_missed_it() {
        let t0 = std::time::Instant::now();
        let lost = |silent_since: Option<std::time::Instant>, reported: bool| Lost {
            since: t0 + Duration::from_secs(10),
            reported,
            silent_since,
        };
        let mut departures = Departures {
            announced_at: Some(t0),
            ..Departures::default()
        };
        let silent_after_ours = lost(Some(t0 + Duration::from_secs(1)), false);
        assert!(!departures.announce_on_return(&silent_after_ours, false));
        assert!(
            departures.announce_on_return(&silent_after_ours, true),
            "held for gone"
        );
        assert!(
            departures.announce_on_return(&lost(None, true), false),
            "reported gone"
        );
        assert!(
            !departures.announce_on_return(&lost(None, false), false),
            "it closed"
        );

        // We announced while it was silent (a service published at a heal).
        departures.announced_at = Some(t0 + Duration::from_secs(5));
        assert!(departures.announce_on_return(&silent_after_ours, false));
    }

    /// Issue 20: A joins an overlay whose only other member announced once, long
    /// before. Gossip does not replay, and that peer repeats itself only hourly:
    /// A knows it at once all the same, from its first neighbour's snapshot.
    #[tokio::test(flavor = "current_thread")]
    async fn a_joining_node_learns_earlier_announcements_from_a_neighbours_snapshot() {
        let (seed, mut seed_events) = node("seed", Vec::new(), ConnectionCaps::default());
        let seed_addr = listen_addr(&seed).await;
        let (early, _early_events) =
            node("early", vec![seed_addr.clone()], ConnectionCaps::default());
        early.announce(announcing("early-vm")).await.unwrap();
        let early_id = early.local_peer_id();
        let heard = wait_for(
            &mut seed_events,
            Duration::from_secs(30),
            |e| matches!(e, Event::Announcement { peer, .. } if *peer == early_id),
        )
        .await;
        assert!(
            heard.is_some(),
            "the seed hears the early peer's announcement"
        );

        let (_joiner, mut joiner_events) =
            node("joiner", vec![seed_addr], ConnectionCaps::default());
        let learned = wait_for(&mut joiner_events, Duration::from_secs(30), |e| {
            matches!(e, Event::Announcement { peer, announcement }
                if *peer == early_id && announcement.vms == ["early-vm"])
        })
        .await;
        assert!(
            learned.is_some(),
            "the joiner never learned of the early peer's VM"
        );
    }

    /// Issue 20: C reaches the overlay only through B (caps of one connection on
    /// A and C). When C goes away, B, which lost it, reports it in its
    /// announcement, and A, never connected to C, drops C: long before C's
    /// records would expire (it announced an hourly interval).
    #[tokio::test(flavor = "current_thread")]
    async fn a_vanished_peer_is_dropped_by_peers_that_never_saw_it_go() {
        let one = ConnectionCaps {
            total: 1,
            ..ConnectionCaps::default()
        };
        let (b, _b_events) = node("b", Vec::new(), ConnectionCaps::default());
        let b_addr = listen_addr(&b).await;
        let (a, mut a_events) = node("a", vec![b_addr.clone()], one);
        let (c, c_events) = node("c", vec![b_addr], one);
        let c_id = c.local_peer_id();
        // B announces too: gossip needs a subscribed mesh on both sides of B.
        b.announce(announcing("b-vm")).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut heard_c = false;
        while !heard_c {
            assert!(Instant::now() < deadline, "A never heard C's announcement");
            c.announce(announcing("c-vm")).await.unwrap();
            heard_c = wait_for(
                &mut a_events,
                Duration::from_secs(2),
                |e| matches!(e, Event::Announcement { peer, .. } if *peer == c_id),
            )
            .await
            .is_some();
        }
        let a_status = a.status().await.unwrap();
        assert!(
            !a_status
                .peers
                .iter()
                .any(|p| p.peer_id == c_id.to_string() && p.connected),
            "A must not be connected to C for this test to mean anything"
        );

        // C goes away: its node stops when its last handle is dropped.
        drop(c);
        drop(c_events);
        let dropped = wait_for(
            &mut a_events,
            Duration::from_secs(30),
            |e| matches!(e, Event::Departed { peer } if *peer == c_id),
        )
        .await;
        assert!(
            dropped.is_some(),
            "A still believes in C 30 s after it went away"
        );
    }
}
