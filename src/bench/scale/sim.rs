//! `bench scale --sim`: many overlay nodes in this process, each the real node
//! (`node::start`: the same behaviours, membership proof, noise and yamux) over
//! libp2p's memory transport instead of TCP (pipes.rs). Nothing else of a peer
//! runs: no libvirt, no control socket. Each node announces a fake VM `vm-I`
//! serving `svc-I` (type http) the way `services/publish.rs` does (same
//! interval rule, DHT provider records by name and type) and keeps the real
//! `services::Catalogue` of what it hears. Time is not scaled: every timer
//! runs at its product value.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use libp2p::PeerId;
use rand::seq::SliceRandom;
use tokio::sync::{Notify, mpsc};

use super::churn;
use super::figures;
use super::pipes::Net;
use super::{Options, Row, memory_bytes, p50_p95, until};
use crate::model::PeerLoad;
use crate::node::identity::NetworkKey;
use crate::node::protocol::{Announcement, ControlRequest, ControlResponse, ServiceRecord};
use crate::node::{self, Client, Event, NodeConfig, SimWire};
use crate::services::{Catalogue, OverlaySize, announce_every, name_key, type_key};

struct SimNode {
    client: Client,
    catalogue: Arc<Catalogue>,
    services: Arc<Mutex<Vec<ServiceRecord>>>,
    republish: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// When each node first heard of the service being watched.
struct Probe {
    name: Mutex<Option<String>>,
    started: Mutex<Instant>,
    seen: Mutex<Vec<Option<Duration>>>,
}

impl Probe {
    fn watch(&self, name: &str) {
        *lock(&self.started) = Instant::now();
        lock(&self.seen).iter_mut().for_each(|s| *s = None);
        *lock(&self.name) = Some(name.to_string());
    }

    fn note(&self, node: usize, announcement: &Announcement) {
        let name = lock(&self.name);
        let Some(name) = name.as_deref() else { return };
        if announcement.services.iter().any(|s| s.name == name) {
            let at = lock(&self.started).elapsed();
            let mut seen = lock(&self.seen);
            if seen.len() <= node {
                seen.resize(node + 1, None);
            }
            seen[node].get_or_insert(at);
        }
    }

    /// Times the nodes in `nodes` heard of it; None while one has not.
    fn times(&self, nodes: impl Iterator<Item = usize>) -> Option<Vec<Duration>> {
        let seen = lock(&self.seen);
        nodes.map(|n| seen.get(n).copied().flatten()).collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Overlay {
    net: Arc<Net>,
    key: NetworkKey,
    nodes: Vec<SimNode>,
    ids: Vec<PeerId>,
    probe: Arc<Probe>,
    /// Nodes cut off for good (vanished).
    gone: HashSet<usize>,
    /// When the overlay started (the fake hosts' sampler rounds count from it).
    started: Instant,
    /// How every node's connections are secured.
    wire: SimWire,
}

fn record(name: &str, vm: &str) -> ServiceRecord {
    ServiceRecord {
        name: name.into(),
        kind: "http".into(),
        tags: Vec::new(),
        vm: Some(vm.into()),
        version: 1,
    }
}

impl Overlay {
    fn new(wire: SimWire) -> Overlay {
        Overlay {
            wire,
            net: Net::new(),
            key: NetworkKey::new(rand::random()),
            nodes: Vec::new(),
            ids: Vec::new(),
            probe: Arc::new(Probe {
                name: Mutex::new(None),
                started: Mutex::new(Instant::now()),
                seen: Mutex::new(Vec::new()),
            }),
            gone: HashSet::new(),
            started: Instant::now(),
        }
    }

    /// Starts one more node; it bootstraps from a few random nodes already in
    /// (not all from one seed: at 1,000 peers a single seed refused the dials
    /// beyond its cap on handshakes in progress, and no overlay formed).
    fn add_node(&mut self) -> Result<usize> {
        let seeds = bootstrap_peers(self.nodes.len(), SEEDS_PER_JOIN, &mut rand::thread_rng());
        let index = self.net.add_node();
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let (client, events) = node::start(NodeConfig {
            keypair,
            network_key: self.key,
            nick: format!("sim-{index}"),
            listen: vec![self.net.address(index)],
            bootstrap: seeds.into_iter().map(|n| self.net.address(n)).collect(),
            mdns: false,
            relay: Default::default(),
            connections: Default::default(),
            wire: node::Wire::Pipes(self.net.transport(index), self.wire),
        })?;
        let vm = format!("vm-{index}");
        let services = Arc::new(Mutex::new(vec![record(&format!("svc-{index}"), &vm)]));
        let catalogue = Arc::new(Catalogue::default());
        let republish = Arc::new(Notify::new());
        let tasks = vec![
            tokio::spawn(listen(
                index,
                client.clone(),
                events,
                catalogue.clone(),
                services.clone(),
                self.probe.clone(),
                self.started,
            )),
            tokio::spawn(publish(
                index,
                client.clone(),
                catalogue.clone(),
                services.clone(),
                republish.clone(),
            )),
        ];
        self.ids.push(client.local_peer_id());
        self.nodes.push(SimNode {
            client,
            catalogue,
            services,
            republish,
            tasks,
        });
        Ok(index)
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|n| !self.gone.contains(n))
    }

    /// Whether node `n` knows `other`'s service now.
    fn knows(&self, n: usize, other: usize) -> bool {
        self.nodes[n].catalogue.knows(&self.ids[other])
    }

    /// Every live node knows every other live node's service. Cheap on purpose
    /// (no copies of the catalogues, stops at the first gap): it runs on the
    /// runtime the nodes share, and a check that copied 1,000 catalogues of
    /// 1,000 records every second starved them until their links timed out.
    fn complete(&self) -> bool {
        let live: Vec<usize> = self.live().collect();
        live.iter()
            .all(|&n| live.iter().all(|&other| other == n || self.knows(n, other)))
    }

    /// Live nodes that do not yet know every other live node's service.
    fn incomplete(&self) -> usize {
        let live: Vec<usize> = self.live().collect();
        live.iter()
            .filter(|&&n| {
                live.iter()
                    .any(|&other| other != n && !self.knows(n, other))
            })
            .count()
    }

    /// Why the overlay is incomplete: how many nodes each missing node is
    /// unknown to, so a few peers that never joined tell apart from gossip lost
    /// here and there. (missing nodes, unknown to how many at most, median).
    fn missing_summary(&self) -> (usize, usize, usize) {
        let live: Vec<usize> = self.live().collect();
        let mut unknown_to = vec![0usize; self.nodes.len()];
        for &n in &live {
            for &other in &live {
                if other != n && !self.knows(n, other) {
                    unknown_to[other] += 1;
                }
            }
        }
        let mut counts: Vec<usize> = unknown_to.into_iter().filter(|&c| c > 0).collect();
        counts.sort_unstable();
        let median = counts.get(counts.len() / 2).copied().unwrap_or(0);
        (counts.len(), counts.last().copied().unwrap_or(0), median)
    }

    /// Live nodes that still list `node`'s service.
    fn still_listing(&self, node: usize) -> usize {
        self.live().filter(|&n| self.knows(n, node)).count()
    }

    /// Adds a service to `node`'s list and announces it now.
    async fn publish_service(&self, node: usize, name: &str) -> Result<()> {
        let vm = format!("vm-{node}");
        lock(&self.nodes[node].services).push(record(name, &vm));
        self.nodes[node].republish.notify_one();
        self.nodes[node].client.provide(&name_key(name), true).await
    }

    fn withdraw_service(&self, node: usize, name: &str) {
        lock(&self.nodes[node].services).retain(|s| s.name != name);
        self.nodes[node].republish.notify_one();
    }

    async fn wait_seen(&self, name: &str, except: usize, bound: Duration) -> Option<Duration> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(times) = self.probe.times(self.live().filter(|&n| n != except)) {
                let _ = name;
                return times.into_iter().max();
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Connections per node, over up to 50 nodes asked at once (each answer
    /// lists every peer the node knows: asking all 1,000 in turn took minutes).
    async fn connections(&self) -> f64 {
        let mut live: Vec<usize> = self.live().collect();
        live.shuffle(&mut rand::thread_rng());
        live.truncate(50);
        let asked = live
            .iter()
            .map(|&n| tokio::time::timeout(Duration::from_secs(30), self.nodes[n].client.status()));
        let counts: Vec<usize> = futures::future::join_all(asked)
            .await
            .into_iter()
            .filter_map(|r| r.ok()?.ok())
            .map(|status| status.peers.iter().filter(|p| p.connected).count())
            .collect();
        counts.iter().sum::<usize>() as f64 / counts.len().max(1) as f64
    }

    fn stop(self) {
        for node in self.nodes {
            for task in node.tasks {
                task.abort();
            }
        }
    }
}

/// How long the idle window waits, after the quiet, for the connection bound
/// to hold (churn.rs): at 100 peers the start-up's DHT connections were all
/// trimmed about 170 s after the last node started.
const STEADY_BOUND: Duration = Duration::from_secs(240);
/// How many nodes already in a joining node bootstraps from.
const SEEDS_PER_JOIN: usize = 3;
/// The channel and handshake bound the options ask for.
fn sim_wire(options: &Options) -> SimWire {
    SimWire {
        channel: options.channel.for_node(),
        handshake_timeout: options.handshake_timeout,
    }
}

/// Nodes start in waves (`--wave`, 25 by default), a pause between waves
/// (`--wave-pause`, 2 s), so each wave finds the one before it already in the
/// overlay to bootstrap from, and the handshakes of a wave (about 8
/// connections a node) are done before the next: at 1,000 nodes in 22 s,
/// thousands of handshakes timed out on this host. Whether node `i` closes a wave.
fn ends_wave(i: usize, wave: usize) -> bool {
    i % wave == wave - 1
}

/// `count` distinct nodes among the `joined` first, at random (all if fewer).
fn bootstrap_peers(joined: usize, count: usize, rng: &mut impl rand::Rng) -> Vec<usize> {
    rand::seq::index::sample(rng, joined, count.min(joined)).into_vec()
}

/// A node's events: announcements into its catalogue, control requests answered.
async fn listen(
    index: usize,
    client: Client,
    mut events: mpsc::Receiver<Event>,
    catalogue: Arc<Catalogue>,
    services: Arc<Mutex<Vec<ServiceRecord>>>,
    probe: Arc<Probe>,
    started: Instant,
) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Announcement { peer, announcement } => {
                probe.note(index, &announcement);
                catalogue.update(
                    peer,
                    announcement.services,
                    announcement.load,
                    Duration::from_millis(announcement.every_ms),
                );
            }
            Event::Departed { peer } => catalogue.remove(&peer),
            Event::InboundRequest {
                request, channel, ..
            } => {
                let response = match request {
                    ControlRequest::ListServices => ControlResponse::Services {
                        services: lock(&services).clone(),
                        load: PeerLoad::default(),
                    },
                    ControlRequest::VmFigures { vms, history } => {
                        figures::answer(index, &vms, history, started)
                    }
                    _ => ControlResponse::Refused {
                        reason: "a simulated peer hosts no VMs".into(),
                    },
                };
                let client = client.clone();
                tokio::spawn(async move { client.respond(channel, response).await });
            }
        }
    }
}

/// A node's announcements, as `Peer::publish_loop` makes them: at once on change
/// and every `announce_every` otherwise; DHT provider records by name and type.
async fn publish(
    index: usize,
    client: Client,
    catalogue: Arc<Catalogue>,
    services: Arc<Mutex<Vec<ServiceRecord>>>,
    republish: Arc<Notify>,
) {
    let first = lock(&services)[0].clone();
    for key in [name_key(&first.name), type_key(&first.kind)] {
        let _ = client.provide(&key, true).await;
    }
    let mut size = OverlaySize::default();
    loop {
        let known = size.update(catalogue.peer_count(), Instant::now());
        let every = announce_every(known + 1);
        let announcement = Announcement {
            nick: format!("sim-{index}"),
            vms: vec![format!("vm-{index}")],
            services: lock(&services).clone(),
            load: PeerLoad::default(),
            links: Vec::new(),
            links_unchanged: false,
            seq: 0,
            every_ms: every.as_millis() as u64,
            departed: Vec::new(),
        };
        if client.announce(announcement).await.is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = republish.notified() => {}
        }
    }
}

/// Runs the whole sequence for one size and returns its row.
pub async fn run(peers: usize, options: &Options) -> Result<Row> {
    if peers < 3 {
        bail!("--peers: at least 3 for the simulation");
    }
    let memory_before = memory_bytes();
    let mut overlay = Overlay::new(sim_wire(options));
    let meter = churn::Meter::start(peers);
    let _printer = meter.print_every(format!("sim {peers}"), Duration::from_secs(10));
    let started = Instant::now();
    for i in 0..peers {
        overlay.add_node()?;
        if ends_wave(i, options.wave) {
            tokio::time::sleep(options.wave_pause).await;
        }
    }
    let last_start = Instant::now();
    eprintln!(
        "sim {peers}: {peers} nodes started in {:.1} s; waiting until every node knows every other…",
        started.elapsed().as_secs_f64()
    );
    let settle_bound = Duration::from_secs(120) + Duration::from_millis(200 * peers as u64);
    let deadline = Instant::now() + settle_bound;
    loop {
        if overlay.complete() {
            break;
        }
        if Instant::now() > deadline {
            let missing = overlay.incomplete();
            let (unknown, most, median) = overlay.missing_summary();
            eprintln!(
                "sim {peers}: {missing} node(s) still incomplete after {} s ({unknown} node(s) \
                 unknown to some: to {most} at most, {median} the median); measuring anyway",
                settle_bound.as_secs()
            );
            break;
        }
        // The check walks n x n catalogue entries on the nodes' runtime.
        tokio::time::sleep(Duration::from_secs(1 + peers as u64 / 250)).await;
    }
    let settled = started.elapsed();
    // Let the start-up work (DHT bootstraps, first provider records) pass.
    tokio::time::sleep(options.quiet).await;
    let (steady, waited) = meter.wait_steady(last_start, STEADY_BOUND).await;
    let steady_note = format!(
        "connections {} {:.0} s after the quiet ({:.0} s after the last node started): {:.1} per peer",
        if steady { "steady" } else { "still not steady" },
        waited.as_secs_f64(),
        last_start.elapsed().as_secs_f64(),
        meter.connections()
    );
    eprintln!("sim {peers}: {steady_note}");
    let mut row = Row::new(peers);
    row.settle = Some(settled);
    row.memory_per_peer = memory_bytes().saturating_sub(memory_before) as f64 / peers as f64;

    // Idle: nothing changes; what does each node spend?
    let traffic_before = overlay.net.traffic();
    let protocols_before = node::wiretap::snapshot();
    let churn_before = meter.reading();
    let cpu_before = super::super::proxy::process_cpu();
    let window_start = Instant::now();
    tokio::time::sleep(options.idle).await;
    let window = window_start.elapsed();
    let cpu = super::super::proxy::process_cpu() - cpu_before;
    let traffic = overlay.net.traffic().minus(traffic_before);
    row.set_idle(cpu, traffic, window);
    let idle_churn = format!("idle churn: {}", meter.since(&churn_before, window));
    row.connections = overlay.connections().await;
    let sent = node::wiretap::since(&protocols_before);
    eprint!(
        "{}",
        super::protocols::table(peers, row.connections, &sent, traffic, window)
    );
    eprintln!("sim {peers}: idle {}", row.idle_summary());
    eprintln!("sim {peers}: {steady_note}; {idle_churn}");
    row.notes.push(steady_note);
    row.notes.push(idle_churn);

    if options.remote_figures {
        let idle = (
            traffic.sent_bytes as f64 / window.as_secs_f64(),
            traffic.sent_msgs as f64 / window.as_secs_f64(),
        );
        let clients: Vec<Client> = overlay.nodes.iter().map(|n| n.client.clone()).collect();
        for consoles in [1, peers] {
            let cost = figures::measure(
                &overlay.net,
                &clients,
                &overlay.ids,
                consoles,
                options.idle,
                idle,
            )
            .await;
            eprintln!("sim {peers}: {}", cost.line());
            row.notes.push(cost.line());
        }
    }

    // Discovery: a new service on one node, until every other node has heard of it.
    let mut every_peer = Vec::new();
    let mut each_peer = Vec::new();
    for round in 0..options.rounds {
        let publisher = (round * 7919 + 1) % peers;
        let name = format!("probe-{round}");
        overlay.probe.watch(&name);
        overlay.publish_service(publisher, &name).await?;
        match overlay
            .wait_seen(&name, publisher, Duration::from_secs(30))
            .await
        {
            Some(all) => every_peer.push(all),
            None => every_peer.push(Duration::from_secs(30)),
        }
        if let Some(times) = overlay
            .probe
            .times(overlay.live().filter(|&n| n != publisher))
        {
            each_peer.extend(times);
        }
        overlay.withdraw_service(publisher, &name);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    row.discovery = p50_p95(&mut every_peer);
    row.discovery_each = p50_p95(&mut each_peer);

    // DHT: look up other nodes' services from a few nodes.
    let mut lookups = Vec::new();
    for i in 0..options.rounds {
        let from = (i * 31 + 3) % peers;
        let target = (i * 17 + 5) % peers;
        let t = Instant::now();
        let found = overlay.nodes[from]
            .client
            .find_providers(&name_key(&format!("svc-{target}")))
            .await?;
        if found.contains(&overlay.ids[target]) {
            lookups.push(t.elapsed());
        }
    }
    row.dht_found = (lookups.len(), options.rounds);
    row.dht = p50_p95(&mut lookups);

    // Join and heal wait for every node to know every other: an overlay that
    // never got there would only spend their whole bounds (5 minutes at 1,000).
    if !overlay.complete() {
        let (unknown, most, median) = overlay.missing_summary();
        eprintln!(
            "sim {peers}: the overlay is still incomplete ({unknown} node(s) unknown to some: \
             to {most} at most, {median} the median): join, leave and heal not measured"
        );
        overlay.stop();
        tokio::time::sleep(Duration::from_secs(2)).await;
        return Ok(row);
    }

    // A peer joins: until it knows everyone and everyone knows it.
    let t = Instant::now();
    let joiner = overlay.add_node()?;
    let name = format!("svc-{joiner}");
    overlay.probe.watch(&name);
    row.join = until(Duration::from_secs(120), Duration::from_millis(100), || {
        let known = overlay.probe.times(overlay.live().filter(|&n| n != joiner));
        std::future::ready(known.is_some() && overlay.complete())
    })
    .await
    .map(|_| t.elapsed());
    eprintln!("sim {peers}: join {:?}", row.join);

    // A peer vanishes without a word: until no one lists it.
    let vanished = peers / 2;
    overlay.net.set_group(&[vanished], u32::MAX);
    overlay.gone.insert(vanished);
    overlay.nodes[vanished].tasks.iter().for_each(|t| t.abort());
    row.leave = until(Duration::from_secs(180), Duration::from_millis(250), || {
        std::future::ready(overlay.still_listing(vanished) == 0)
    })
    .await;
    eprintln!("sim {peers}: silent leave {:?}", row.leave);

    // A tenth of the overlay cut off for a while, then healed: until every node
    // knows every other again and a service published in the cut-off part at the
    // heal is known everywhere.
    let mut live: Vec<usize> = overlay.live().filter(|&n| n != 0).collect();
    live.shuffle(&mut rand::thread_rng());
    let cut: Vec<usize> = live[..peers.div_ceil(10)].to_vec();
    overlay.net.set_group(&cut, 1);
    tokio::time::sleep(options.partition).await;
    let name = "after-heal".to_string();
    overlay.probe.watch(&name);
    overlay.net.set_group(&cut, 0);
    let t = Instant::now();
    overlay.publish_service(cut[0], &name).await?;
    row.heal = until(Duration::from_secs(180), Duration::from_millis(100), || {
        let spread = overlay
            .probe
            .times(overlay.live().filter(|&n| n != cut[0]))
            .is_some();
        std::future::ready(spread && overlay.complete())
    })
    .await
    .map(|_| t.elapsed());
    eprintln!("sim {peers}: partition healed {:?}", row.heal);
    overlay.stop();
    // Let the nodes' tasks wind down before the next size.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_start_in_waves_of_the_size_asked() {
        let closing: Vec<usize> = (0..100).filter(|&i| ends_wave(i, 25)).collect();
        assert_eq!(closing, vec![24, 49, 74, 99]);
        // Waves of one: a pause after every node.
        assert!((0..10).all(|i| ends_wave(i, 1)));
    }

    #[test]
    fn the_simulations_wire_takes_the_channel_and_handshake_bound_asked() {
        let options = Options {
            mode: super::super::Mode::Sim,
            channel: super::super::Channel::Noise,
            handshake_timeout: Duration::from_secs(40),
            wave: 25,
            wave_pause: Duration::from_secs(2),
            rounds: 1,
            idle: Duration::from_secs(1),
            quiet: Duration::from_secs(1),
            partition: Duration::from_secs(1),
            remote_figures: false,
        };
        let wire = sim_wire(&options);
        assert_eq!(wire.channel, crate::node::SimChannel::Noise);
        assert_eq!(wire.handshake_timeout, Duration::from_secs(40));
        let product = Options {
            channel: super::super::Channel::Product,
            ..options
        };
        assert_eq!(sim_wire(&product).channel, crate::node::SimChannel::Product);
    }

    #[test]
    fn a_joining_node_bootstraps_from_a_few_distinct_nodes_already_in() {
        let mut rng = rand::thread_rng();
        assert!(bootstrap_peers(0, SEEDS_PER_JOIN, &mut rng).is_empty());
        assert_eq!(bootstrap_peers(2, SEEDS_PER_JOIN, &mut rng).len(), 2);
        let mut chosen = HashSet::new();
        for _ in 0..200 {
            let seeds = bootstrap_peers(1000, SEEDS_PER_JOIN, &mut rng);
            assert_eq!(seeds.len(), SEEDS_PER_JOIN);
            assert_eq!(seeds.iter().collect::<HashSet<_>>().len(), SEEDS_PER_JOIN);
            assert!(seeds.iter().all(|&n| n < 1000));
            chosen.extend(seeds);
        }
        // Spread over the overlay, not one seed for everyone.
        assert!(chosen.len() > 300, "{} distinct seeds", chosen.len());
    }
}
