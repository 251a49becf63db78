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
use super::settle::{self, Progress, Settled, Settling, Verdict};
use super::{Options, Row, memory_bytes, p50_p95, until};
use crate::bench::proxy::{load_line, process_cpu};
use crate::model::PeerLoad;
use crate::node::identity::NetworkKey;
use crate::node::protocol::{Announcement, ControlRequest, ControlResponse, ServiceRecord};
use crate::node::{self, Client, Event, NodeConfig, SimWire};
use crate::services::publish::LOOKUP_LIMIT;
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
                self.wire.time_scale,
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

    /// What the overlay still misses: nodes that do not know every other, the
    /// (node, peer) pairs missing, and how many nodes the median missing node is
    /// unknown to (a few peers that never joined tell apart from gossip lost
    /// here and there).
    fn progress(&self) -> Progress {
        let live: Vec<usize> = self.live().collect();
        Progress::tally(&live, self.nodes.len(), |n, other| self.knows(n, other))
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
        handshake_timeout: options.node_time(options.handshake_timeout),
        time_scale: options.time_scale,
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
/// and every `announce_every` otherwise (`time_scale` times slower, said in
/// the announcement, so records live as many times longer); DHT provider
/// records by name and type.
async fn publish(
    index: usize,
    client: Client,
    catalogue: Arc<Catalogue>,
    services: Arc<Mutex<Vec<ServiceRecord>>>,
    republish: Arc<Notify>,
    time_scale: u32,
) {
    let first = lock(&services)[0].clone();
    for key in [name_key(&first.name), type_key(&first.kind)] {
        let _ = client.provide(&key, true).await;
    }
    let mut size = OverlaySize::default();
    loop {
        let known = size.update(catalogue.peer_count(), Instant::now());
        let every = announce_every(known + 1) * time_scale;
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

/// The harness's bounds, in node time: discovery (a publication not seen
/// everywhere by then counts as this), a join, a silent leave, a heal.
const DISCOVERY_BOUND: Duration = Duration::from_secs(30);
const JOIN_BOUND: Duration = Duration::from_secs(120);
const LEAVE_BOUND: Duration = Duration::from_secs(180);
const HEAL_BOUND: Duration = Duration::from_secs(180);

/// How often the settling wait looks at the whole overlay (n x n entries)
/// and prints a progress line.
const LOOK_EVERY: Duration = Duration::from_secs(15);

/// Waits until every node knows every other, while the overlay is still
/// getting there (settle.rs), up to `--settle-cap`; prints a progress line
/// with the CPU share the process got at each look.
async fn settle(overlay: &Overlay, peers: usize, options: &Options, started: Instant) -> Settled {
    let cap = options
        .settle_cap
        .unwrap_or_else(|| settle::default_cap(peers));
    let mut settling = Settling::new(options.node_time(settle::WINDOW), cap);
    // The cheap check (stops at the first gap) runs often, so a complete
    // overlay is seen within seconds; the full count only every LOOK_EVERY.
    let check_every = Duration::from_secs(1 + peers as u64 / 250);
    let mut last_look = (Instant::now(), process_cpu());
    let mut last_pulls = node::Pulls::now();
    loop {
        let complete = overlay.complete();
        if complete || last_look.0.elapsed() >= LOOK_EVERY {
            let progress = if complete {
                Progress::default()
            } else {
                overlay.progress()
            };
            let at = started.elapsed();
            let verdict = settling.judge(at, progress);
            let cpu = process_cpu();
            let share = (cpu - last_look.1).as_secs_f64() / last_look.0.elapsed().as_secs_f64();
            last_look = (Instant::now(), cpu);
            eprintln!(
                "sim {peers}: {:.0} s: {}; the process got {share:.2} of a core ({}): {verdict:?}",
                at.as_secs_f64(),
                progress.line(peers),
                load_line(),
            );
            // What anti-entropy and departures did since the last look: why
            // a large overlay converges slowly (pulls failing, bringing
            // nothing new, or departures taking peers away).
            let pulls = node::Pulls::now();
            eprintln!(
                "sim {peers}: since the last look: {}",
                pulls.minus(&last_pulls).line()
            );
            last_pulls = pulls;
            if verdict != Verdict::Converging {
                return Settled {
                    verdict,
                    after: at,
                    progress,
                };
            }
        }
        tokio::time::sleep(check_every).await;
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
            // Not scaled: the pause lets a wave's handshakes (CPU) finish.
            tokio::time::sleep(options.wave_pause).await;
        }
    }
    let last_start = Instant::now();
    eprintln!(
        "sim {peers}: {peers} nodes started in {:.1} s; waiting until every node knows every other…",
        started.elapsed().as_secs_f64()
    );
    let settled = settle(&overlay, peers, options, started).await;
    // Let the start-up work (DHT bootstraps, first provider records) pass.
    tokio::time::sleep(options.node_time(options.quiet)).await;
    let (steady, waited) = meter
        .wait_steady(
            last_start,
            options.node_time(STEADY_BOUND),
            options.time_scale,
        )
        .await;
    let steady_note = format!(
        "connections {} {:.0} s after the quiet ({:.0} s after the last node started): {:.1} per peer",
        if steady { "steady" } else { "still not steady" },
        waited.as_secs_f64(),
        last_start.elapsed().as_secs_f64(),
        meter.connections()
    );
    eprintln!("sim {peers}: {steady_note}");
    let mut row = Row::new(peers);
    row.settle = Some(settled.after);
    row.settled = Some(settled);
    if settled.verdict != Verdict::Complete {
        row.notes.push(format!(
            "measured after {} s of settling without a complete overlay ({:?}): {}",
            settled.after.as_secs(),
            settled.verdict,
            settled.progress.line(peers)
        ));
    }
    row.memory_per_peer = memory_bytes().saturating_sub(memory_before) as f64 / peers as f64;

    // Idle: nothing changes; what does each node spend?
    let traffic_before = overlay.net.traffic();
    let protocols_before = node::wiretap::snapshot();
    let churn_before = meter.reading();
    let cpu_before = process_cpu();
    let window_start = Instant::now();
    tokio::time::sleep(options.node_time(options.idle)).await;
    let window = window_start.elapsed();
    let cpu = process_cpu() - cpu_before;
    let traffic = overlay.net.traffic().minus(traffic_before);
    // Per second of node time: with time scaled k times, the nodes do in k
    // wall seconds what they would do in one.
    row.set_idle(cpu, traffic, options.unscaled(window));
    let idle_churn = format!(
        "idle churn: {}",
        meter.since(&churn_before, options.unscaled(window))
    );
    row.connections = overlay.connections().await;
    let sent = node::wiretap::since(&protocols_before);
    eprint!(
        "{}",
        super::protocols::table(
            peers,
            row.connections,
            &sent,
            traffic,
            options.unscaled(window)
        )
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
            .wait_seen(&name, publisher, options.node_time(DISCOVERY_BOUND))
            .await
        {
            Some(all) => every_peer.push(options.unscaled(all)),
            None => every_peer.push(DISCOVERY_BOUND),
        }
        if let Some(times) = overlay
            .probe
            .times(overlay.live().filter(|&n| n != publisher))
        {
            each_peer.extend(times.into_iter().map(|t| options.unscaled(t)));
        }
        overlay.withdraw_service(publisher, &name);
        tokio::time::sleep(options.node_time(Duration::from_millis(300))).await;
    }
    row.discovery = p50_p95(&mut every_peer);
    row.discovery_each = p50_p95(&mut each_peer);
    // Each phase's figures as it ends: a long run stopped early keeps them.
    eprintln!(
        "sim {peers}: discovery -> every peer (p50, p95) {:?}, -> one peer {:?}",
        row.discovery, row.discovery_each
    );

    // DHT: look up other nodes' services from a few nodes, as `services
    // find` does: the lookup answers at the first providers found, and the
    // caller waits at most LOOKUP_LIMIT (a lookup still walking then counts
    // as not found).
    let mut lookups = Vec::new();
    for i in 0..options.rounds {
        let from = (i * 31 + 3) % peers;
        let target = (i * 17 + 5) % peers;
        let key = name_key(&format!("svc-{target}"));
        let t = Instant::now();
        let lookup = overlay.nodes[from].client.find_providers(&key);
        let found = tokio::time::timeout(options.node_time(LOOKUP_LIMIT), lookup)
            .await
            .unwrap_or(Ok(Vec::new()))?;
        if found.contains(&overlay.ids[target]) {
            lookups.push(options.unscaled(t.elapsed()));
        }
    }
    row.dht_found = (lookups.len(), options.rounds);
    row.dht = p50_p95(&mut lookups);
    eprintln!(
        "sim {peers}: DHT lookups found {}/{} (p50, p95 {:?})",
        lookups.len(),
        options.rounds,
        row.dht
    );

    // Join and heal wait for every node to know every other: an overlay that
    // never got there would only spend their whole bounds (5 minutes at 1,000).
    if !overlay.complete() {
        let progress = overlay.progress();
        eprintln!(
            "sim {peers}: the overlay is still incomplete ({}): join, leave and heal not measured",
            progress.line(peers)
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
    row.join = until(
        options.node_time(JOIN_BOUND),
        Duration::from_millis(100),
        || {
            let known = overlay.probe.times(overlay.live().filter(|&n| n != joiner));
            std::future::ready(known.is_some() && overlay.complete())
        },
    )
    .await
    .map(|_| options.unscaled(t.elapsed()));
    eprintln!("sim {peers}: join {:?}", row.join);

    // A peer vanishes without a word: until no one lists it.
    let vanished = peers / 2;
    overlay.net.set_group(&[vanished], u32::MAX);
    overlay.gone.insert(vanished);
    overlay.nodes[vanished].tasks.iter().for_each(|t| t.abort());
    row.leave = until(
        options.node_time(LEAVE_BOUND),
        Duration::from_millis(250),
        || std::future::ready(overlay.still_listing(vanished) == 0),
    )
    .await
    .map(|t| options.unscaled(t));
    eprintln!("sim {peers}: silent leave {:?}", row.leave);

    // A tenth of the overlay cut off for a while, then healed: until every node
    // knows every other again and a service published in the cut-off part at the
    // heal is known everywhere.
    let mut live: Vec<usize> = overlay.live().filter(|&n| n != 0).collect();
    live.shuffle(&mut rand::thread_rng());
    let cut: Vec<usize> = live[..peers.div_ceil(10)].to_vec();
    overlay.net.set_group(&cut, 1);
    tokio::time::sleep(options.node_time(options.partition)).await;
    let name = "after-heal".to_string();
    overlay.probe.watch(&name);
    overlay.net.set_group(&cut, 0);
    let t = Instant::now();
    overlay.publish_service(cut[0], &name).await?;
    row.heal = until(
        options.node_time(HEAL_BOUND),
        Duration::from_millis(100),
        || {
            let spread = overlay
                .probe
                .times(overlay.live().filter(|&n| n != cut[0]))
                .is_some();
            std::future::ready(spread && overlay.complete())
        },
    )
    .await
    .map(|_| options.unscaled(t.elapsed()));
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
            settle_cap: None,
            time_scale: 1,
        };
        let wire = sim_wire(&options);
        assert_eq!(wire.channel, crate::node::SimChannel::Noise);
        assert_eq!(wire.handshake_timeout, Duration::from_secs(40));
        assert_eq!(wire.time_scale, 1);
        // Time scaled: the node is told, and its handshake bound is in node time.
        let slower = Options {
            time_scale: 3,
            ..options
        };
        let wire = sim_wire(&slower);
        assert_eq!(wire.time_scale, 3);
        assert_eq!(wire.handshake_timeout, Duration::from_secs(120));
        assert_eq!(
            slower.unscaled(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        let product = Options {
            channel: super::super::Channel::Product,
            ..options
        };
        assert_eq!(sim_wire(&product).channel, crate::node::SimChannel::Product);
    }

    /// Writes of pings and gossip (the traffic the scaled timers pace) of an
    /// idle overlay of `n` nodes over `window`, once every node knows every
    /// other, with the node's timers `time_scale` times slower. Not every
    /// write: libp2p's own timers (AutoNAT's probes, identify, kad) are not
    /// scaled.
    async fn idle_writes(n: usize, time_scale: u32, window: Duration) -> u64 {
        let mut overlay = Overlay::new(SimWire {
            channel: crate::node::SimChannel::Noise,
            handshake_timeout: Duration::from_secs(30),
            time_scale,
        });
        for _ in 0..n {
            overlay.add_node().unwrap();
        }
        let complete = until(Duration::from_secs(120), Duration::from_millis(200), || {
            std::future::ready(overlay.complete())
        })
        .await;
        assert!(complete.is_some(), "{}", overlay.progress().line(n));
        // Past start-up (snapshots, first announcements, DHT bootstraps).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = node::wiretap::snapshot();
        tokio::time::sleep(window).await;
        let writes = node::wiretap::since(&before)
            .iter()
            .filter(|(protocol, _)| protocol.contains("/ping/") || protocol.contains("/meshsub/"))
            .map(|(_, sent)| sent.writes)
            .sum();
        overlay.stop();
        writes
    }

    /// `--time-scale`: the nodes' own timers (pings, gossip heartbeat,
    /// anti-entropy, announcements) run slower, not only the harness's waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_time_scaled_overlay_idles_that_many_times_slower() {
        let window = Duration::from_secs(12);
        let normal = idle_writes(4, 1, window).await;
        let scaled = idle_writes(4, 4, window).await;
        assert!(normal > 0);
        assert!(
            (scaled as f64) < normal as f64 / 2.0,
            "idle ping and gossip writes in {window:?}: {normal} at their own pace, {scaled} four times slower"
        );
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
