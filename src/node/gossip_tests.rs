//! Two real nodes on loopback: what a node does with a hostile peer's gossip.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// Log lines written while a test runs (this thread's tracing output).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn config(nick: &str, bootstrap: Vec<Multiaddr>) -> NodeConfig {
    NodeConfig {
        keypair: Keypair::generate_ed25519(),
        network_key: identity::NetworkKey::new([7; 32]),
        nick: nick.into(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap,
        mdns: false,
        relay: Default::default(),
        connections: Default::default(),
        wire: Default::default(),
    }
}

/// Acceptance (issue 5): malformed records from a peer are dropped and logged,
/// never trusted to crash the node. (After two, the sender is graylisted: see
/// `invalid_announcements_stop_at_the_first_hop_and_graylist_their_sender`.)
#[tokio::test(flavor = "current_thread")]
async fn a_malformed_announcement_is_dropped_and_logged_and_the_node_goes_on() {
    let (log, _guard) = capture(tracing::Level::WARN);
    let (honest, heard) = start(config("honest", Vec::new())).unwrap();
    let heard = Heard::collect(heard);
    let listen = listen_addr(&honest).await;
    let (hostile, _events) = start(config("hostile", vec![listen])).unwrap();
    let hostile_id = hostile.local_peer_id();

    // A valid announcement first: once it is heard, the two are connected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !heard.has(hostile_id, "web-1") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no announcement within 30 s:\n{}",
            log.text()
        );
        hostile.announce(announcing("web-1")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let hostile_record = Announcement {
        services: vec![protocol::ServiceRecord {
            name: "web\u{1b}[2J".into(),
            kind: "http".into(),
            ..Default::default()
        }],
        ..announcing("web-2")
    };
    hostile.publish_raw(hostile_record.encode()).await.unwrap();
    hostile.publish_raw(b"{not json".to_vec()).await.unwrap();
    let dropped = |text: &str| text.matches("dropped malformed announcement from").count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while dropped(&log.text()) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "each bad message is logged:\n{}",
            log.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = log.text();
    assert!(
        text.contains("bad service name") && text.contains("key must be a string"),
        "the log says why:\n{text}"
    );
    assert!(
        !heard.has(hostile_id, "web-2"),
        "the bad record is not heard"
    );
    // Still serving its operator.
    assert!(
        honest
            .status()
            .await
            .unwrap()
            .peers
            .iter()
            .any(|p| p.connected)
    );
}

/// Captures this thread's log lines at `level` and up while the guard lives.
fn capture(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(level)
        .with_ansi(false)
        .finish();
    (log, tracing::subscriber::set_default(subscriber))
}

async fn listen_addr(client: &Client) -> Multiaddr {
    loop {
        let addrs = client.status().await.unwrap().listen_addrs;
        if let Some(addr) = addrs.first() {
            return addr.parse().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Announcements a node heard: (author, its VMs), collected so the node's
/// event channel never fills.
#[derive(Clone, Default)]
struct Heard(Arc<Mutex<Vec<Authored>>>);

/// An announcement's author and its VMs.
type Authored = (PeerId, Vec<String>);

impl Heard {
    fn collect(mut events: mpsc::Receiver<Event>) -> Heard {
        let heard = Heard::default();
        let sink = heard.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let Event::Announcement { peer, announcement } = event {
                    sink.0.lock().unwrap().push((peer, announcement.vms));
                }
            }
        });
        heard
    }

    fn has(&self, peer: PeerId, vm: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|(p, vms)| *p == peer && vms.iter().any(|v| v == vm))
    }
}

fn announcing(vm: &str) -> Announcement {
    Announcement {
        nick: "hostile".into(),
        vms: vec![vm.into()],
        ..Default::default()
    }
}

/// A hostile member driven by hand: the node's own behaviours without its event
/// loop, and no listen address, so other peers reach it only through the
/// connections it opens.
struct Hostile {
    swarm: Swarm<Behaviour>,
    topic: gossipsub::IdentTopic,
}

impl Hostile {
    fn new(connections: ConnectionCaps) -> Hostile {
        let config = NodeConfig {
            listen: Vec::new(),
            connections,
            ..config("hostile", Vec::new())
        };
        let mut swarm = build_swarm(&mut { config }, Default::default()).unwrap();
        let topic = gossipsub::IdentTopic::new(ANNOUNCE_TOPIC);
        swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
        Hostile { swarm, topic }
    }

    fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Publishes raw bytes on the announcement topic (signed, as any member can).
    fn publish(&mut self, bytes: Vec<u8>) -> bool {
        let topic = self.topic.clone();
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, bytes)
            .is_ok()
    }

    /// Drives the swarm for `time`, handing each event to `seen`.
    async fn run_for(&mut self, time: Duration, mut seen: impl FnMut(SwarmEvent<BehaviourEvent>)) {
        let until = tokio::time::Instant::now() + time;
        while let Ok(event) = tokio::time::timeout_at(until, self.swarm.select_next_some()).await {
            seen(event);
        }
    }
}

/// Issue 9: a member publishing malformed announcements. The first honest peer
/// drops them with a log line and does not forward them (a third peer never
/// sees them), graylists the sender after a few, and then ignores even its
/// valid gossip, while honest peers' announcements still converge.
#[tokio::test(flavor = "current_thread")]
async fn invalid_announcements_stop_at_the_first_hop_and_graylist_their_sender() {
    let (log, _guard) = capture(tracing::Level::WARN);
    let (first, first_events) = start(config("first", Vec::new())).unwrap();
    let first_heard = Heard::collect(first_events);
    let first_addr = listen_addr(&first).await;
    let (third, third_events) = start(config("third", vec![first_addr.clone()])).unwrap();
    let third_heard = Heard::collect(third_events);
    let mut hostile = Hostile::new(ConnectionCaps::default());
    let hostile_id = hostile.peer_id();
    hostile.swarm.dial(first_addr).unwrap();

    // A valid announcement of the hostile peer travels through the first peer to
    // the third: the path works, so what does not arrive later was stopped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !third_heard.has(hostile_id, "h-1") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the third peer never heard a valid announcement forwarded:\n{}",
            log.text()
        );
        hostile.publish(announcing("h-1").encode());
        hostile.run_for(Duration::from_millis(300), |_| {}).await;
    }

    let bad_service = Announcement {
        services: vec![protocol::ServiceRecord {
            name: "web\u{1b}[2J".into(),
            kind: "http".into(),
            ..Default::default()
        }],
        ..announcing("h-bad")
    };
    let garbage = [b"{not json".to_vec(), vec![0xff; 300], bad_service.encode()];
    for bytes in garbage.iter().cycle().take(12) {
        assert!(
            hostile.publish(bytes.clone()),
            "the first peer is subscribed"
        );
        hostile.run_for(Duration::from_millis(50), |_| {}).await;
    }
    let first_id = first.local_peer_id();
    let graylisted = "peer hostile graylisted on gossip";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !log.text().contains(graylisted) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hostile peer was not graylisted:\n{}",
            log.text()
        );
        hostile.run_for(Duration::from_millis(200), |_| {}).await;
    }

    // Graylisted: even its valid gossip is ignored. Meanwhile the honest peers'
    // announcements converge.
    let started = tokio::time::Instant::now();
    while !(third_heard.has(first_id, "first-1")
        && first_heard.has(third.local_peer_id(), "third-1"))
        || started.elapsed() < Duration::from_secs(3)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "honest announcements did not converge:\n{}",
            log.text()
        );
        hostile.publish(announcing("h-2").encode());
        first
            .announce(Announcement {
                nick: "first".into(),
                ..announcing("first-1")
            })
            .await
            .unwrap();
        third
            .announce(Announcement {
                nick: "third".into(),
                ..announcing("third-1")
            })
            .await
            .unwrap();
        hostile.run_for(Duration::from_millis(300), |_| {}).await;
    }
    assert!(
        !first_heard.has(hostile_id, "h-2"),
        "a graylisted peer is not heard"
    );
    assert!(!third_heard.has(hostile_id, "h-2"), "nor forwarded");

    let text = log.text();
    let at_first_hop = text
        .matches(&format!(
            "dropped malformed announcement from {hostile_id} (via {hostile_id})"
        ))
        .count();
    assert!(
        at_first_hop >= 3,
        "the first peer logs each bad message until it graylists:\n{text}"
    );
    assert!(
        !text.contains(&format!("from {hostile_id} (via {first_id})")),
        "the first peer forwarded a malformed announcement to the third:\n{text}"
    );
    assert!(!third_heard.has(hostile_id, "h-bad"));
}

/// Issue 9: a member opening many connections to one node gets at most its
/// per-peer cap; the rest are refused with a log line, and the node goes on
/// serving its other peers.
#[tokio::test(flavor = "current_thread")]
async fn a_peer_opening_too_many_connections_is_capped_and_others_are_served() {
    let (log, _guard) = capture(tracing::Level::WARN);
    let caps = ConnectionCaps {
        per_peer: 2,
        ..ConnectionCaps::default()
    };
    let (node, node_events) = start(NodeConfig {
        connections: caps,
        ..config("node", Vec::new())
    })
    .unwrap();
    let node_heard = Heard::collect(node_events);
    let addr = listen_addr(&node).await;
    let node_id = node.local_peer_id();
    // The hostile side allows itself plenty.
    let mut hostile = Hostile::new(ConnectionCaps {
        per_peer: 64,
        ..ConnectionCaps::default()
    });
    const ATTEMPTS: usize = 12;
    for _ in 0..ATTEMPTS {
        let dial = libp2p::swarm::dial_opts::DialOpts::unknown_peer_id()
            .address(addr.clone())
            .build();
        hostile.swarm.dial(dial).unwrap();
    }
    let (mut established, mut closed, mut failed) = (0usize, 0usize, 0usize);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // Until every attempt was answered, then a second for late closes.
    let mut settled_at = None;
    loop {
        hostile
            .run_for(Duration::from_millis(200), |event| match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == node_id => {
                    established += 1
                }
                SwarmEvent::ConnectionClosed { peer_id, .. } if peer_id == node_id => closed += 1,
                SwarmEvent::OutgoingConnectionError { .. } => failed += 1,
                _ => {}
            })
            .await;
        let now = tokio::time::Instant::now();
        assert!(now < deadline, "dials unanswered:\n{}", log.text());
        if established + failed >= ATTEMPTS && settled_at.is_none() {
            settled_at = Some(now);
        }
        if settled_at.is_some_and(|t| now - t > Duration::from_secs(1)) {
            break;
        }
    }
    let open = established - closed;
    println!(
        "connection caps: {ATTEMPTS} dials, {established} established, {closed} closed by the \
         node, {failed} failed, {open} left open (cap {})",
        caps.per_peer
    );
    assert_eq!(
        open, caps.per_peer as usize,
        "the hostile peer keeps its cap, no more"
    );
    let text = log.text();
    assert!(
        text.contains("refused a connection from")
            && text.contains("at most 2 established connections per peer"),
        "the node logs the refusal:\n{text}"
    );
    assert_eq!(
        text.matches("refused a connection from").count(),
        1,
        "one line, not one per refusal:\n{text}"
    );

    // An honest peer joins and is heard.
    let (honest, _events) = start(config("honest", vec![addr])).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !node_heard.has(honest.local_peer_id(), "honest-1") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node stopped serving others:\n{}",
            log.text()
        );
        honest
            .announce(Announcement {
                nick: "honest".into(),
                ..announcing("honest-1")
            })
            .await
            .unwrap();
        hostile.run_for(Duration::from_millis(300), |_| {}).await;
    }
}
