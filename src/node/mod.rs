//! The peer node: one task (`EventLoop`) owns the libp2p `Swarm`; the rest of the
//! program talks to it through a cloneable [`Client`] (commands over mpsc, replies
//! over oneshot), as in rust-libp2p's file-sharing example.

pub mod churn;
mod client;
mod departures;
mod digest;
mod events;
mod guard;
mod health;
mod hide;
pub mod identity;
mod keyed_tls;
mod links;
mod membership;
pub mod protocol;
pub mod pulls;
mod reachability;
mod relay;
mod repunch;
mod retire;
mod streams;
mod timers;
mod traffic;
mod transport;
pub mod trim_probe;
mod upkeep;
mod why;
pub mod wiretap;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::store::RecordStore;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle};
use libp2p::{Multiaddr, PeerId, Swarm, autonat, dcutr, gossipsub, identify, kad, mdns, ping};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, interval};

use crate::model::{PeerView, Reachability};
use protocol::{
    ANNOUNCE_TOPIC, Announcement, CONTROL_PROTOCOL, ControlRequest, ControlResponse, agent_version,
};

pub use churn::Churn;
pub use client::Client;
use client::Command;
pub use guard::ConnectionCaps;
pub use pulls::Pulls;
pub use relay::RelayConfig;
pub use streams::{Stream, StreamControl};
pub use traffic::ControlTraffic;
pub use transport::{MAX_STREAMS_PER_CONNECTION, Pipe, SimChannel, SimWire, Wire};
pub use why::error_chain;
use why::{explain_dial_error, remote_ip};

/// How a node joins the overlay.
pub struct NodeConfig {
    pub keypair: Keypair,
    pub network_key: identity::NetworkKey,
    pub nick: String,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    /// LAN discovery by multicast DNS. Off by default: it sends multicast on every interface.
    pub mdns: bool,
    /// Relaying for others and through others (NAT).
    pub relay: RelayConfig,
    /// Caps on connections from and to other peers.
    pub connections: ConnectionCaps,
    /// TCP, except in `bench scale`'s in-process overlay.
    pub wire: Wire,
}

/// What the node reports to the rest of the program.
#[derive(Debug)]
pub enum Event {
    /// Another peer asks something of this one; answer with [`Client::respond`].
    InboundRequest {
        peer: PeerId,
        request: ControlRequest,
        channel: ResponseChannel<ControlResponse>,
    },
    /// A peer told the overlay what it hosts and provides (gossip, or a
    /// neighbour's snapshot when this node joined).
    Announcement {
        peer: PeerId,
        announcement: Announcement,
    },
    /// A peer vanished (its neighbours lost it and could not reach it again):
    /// its records are gone.
    Departed { peer: PeerId },
}

/// The overlay as this node sees it right now.
#[derive(Debug, Clone, Default)]
pub struct NetworkStatus {
    pub peers: Vec<PeerView>,
    pub listen_addrs: Vec<String>,
    /// Recent dial failures, explained for the operator.
    pub dial_errors: Vec<String>,
    /// Whether peers can dial this node directly (AutoNAT).
    pub reachability: Reachability,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    // First, so a connection over a cap is refused before the others see it.
    limits: libp2p::connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    // Both hideable: a retiring relayed connection takes no new streams (hidden
    // at once) and no new requests (hidden once idle, just before it closes).
    control: hide::Hideable<request_response::Behaviour<traffic::CountingCodec>>,
    streams: hide::Hideable<streams::Behaviour>,
    relay_server: Toggle<libp2p::relay::Behaviour>,
    relay_client: libp2p::relay::client::Behaviour,
    dcutr: dcutr::Behaviour,
    autonat: autonat::Behaviour,
}

/// A node that only dials out (no listen address, no relaying) and ignores what
/// other peers send it: for one exchange with a known peer (`peervisor join`,
/// the replica probe).
pub fn start_dialer(
    keypair: Keypair,
    network_key: identity::NetworkKey,
    nick: &str,
    bootstrap: Vec<Multiaddr>,
) -> Result<Client> {
    let (client, mut events) = start(NodeConfig {
        keypair,
        network_key,
        nick: nick.into(),
        listen: Vec::new(),
        bootstrap,
        mdns: false,
        relay: RelayConfig {
            serve: false,
            reserve: false,
        },
        connections: Default::default(),
        wire: Wire::Tcp,
    })?;
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    Ok(client)
}

/// Starts the node on the current tokio runtime.
pub fn start(mut config: NodeConfig) -> Result<(Client, mpsc::Receiver<Event>)> {
    let local_peer_id = config.keypair.public().to_peer_id();
    let traffic = std::sync::Arc::new(traffic::ControlTraffic::default());
    let time_scale = config.wire.time_scale();
    let mut swarm = build_swarm(&mut config, traffic.clone())?;
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .with_context(|| format!("cannot listen on {addr}"))?;
    }
    let topic = gossipsub::IdentTopic::new(ANNOUNCE_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| anyhow!("gossipsub subscribe: {e:?}"))?;
    let streams = swarm.behaviour().streams.new_control();
    let ledger = swarm.behaviour().streams.ledger();
    let (sender, commands) = mpsc::channel(64);
    let (events, event_rx) = mpsc::channel(64);
    let event_loop = EventLoop {
        swarm,
        commands,
        events,
        topic,
        bootstrap: config.bootstrap,
        peers: HashMap::new(),
        pending_requests: HashMap::new(),
        pending_lookups: HashMap::new(),
        pending_locates: HashMap::new(),
        announcement: None,
        dial_errors: VecDeque::new(),
        links: links::Links::default(),
        links_sent: links::LinksSent::default(),
        relay_config: config.relay,
        reservations: relay::Reservations::default(),
        retiring: retire::Retiring::default(),
        repunches: repunch::RePunches::default(),
        ledger,
        refusals: guard::RefusalLog::default(),
        handshake_refusals: guard::RefusalLog::default(),
        dial_refusals: guard::RefusalLog::default(),
        graylist: guard::Graylist::default(),
        departures: departures::Departures::default(),
        health: Default::default(),
        dial_backs: Default::default(),
        probing: Default::default(),
        time_scale,
    };
    tokio::spawn(event_loop.run());
    Ok((
        Client {
            sender,
            local_peer_id,
            streams,
            traffic,
        },
        event_rx,
    ))
}

fn build_swarm(
    config: &mut NodeConfig,
    traffic: std::sync::Arc<traffic::ControlTraffic>,
) -> Result<Swarm<Behaviour>> {
    let network_key = config.network_key;
    // A simulation's slower clock (1 for real nodes): transport.rs.
    let slower = config.wire.time_scale();
    let timers = timers::Timers::new(slower, PROVIDER_TTL);
    // Only TCP addresses can be dialed back (reachability.rs).
    let dial_backs = matches!(config.wire, transport::Wire::Tcp);
    let wire = std::mem::take(&mut config.wire);
    let nick = config.nick.clone();
    let mdns_on = config.mdns;
    let relay_config = config.relay;
    let connection_caps = config.connections;
    let (relay_transport, relay_client) =
        libp2p::relay::client::new(config.keypair.public().to_peer_id());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_other_transport(|key| {
            transport::build(key, network_key, wire, relay_transport)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })?
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let identify = identify::Behaviour::new(
                identify::Config::new("/peervisor/id/1".into(), key.public())
                    .with_agent_version(agent_version(&nick))
                    // a new relay (circuit) address must reach peers already connected
                    .with_push_listen_addr_updates(true),
            );
            let mut kad_config = kad::Config::new(libp2p::StreamProtocol::new("/peervisor/kad/1"));
            // Provider records of a vanished peer must expire in minutes, not days.
            kad_config
                .set_provider_record_ttl(Some(timers.provider_ttl))
                .set_provider_publication_interval(Some(timers.provider_ttl / 3))
                .set_periodic_bootstrap_interval(Some(timers.dht_bootstrap))
                // A provider publication first walks to the key's closest peers,
                // and kad stores nothing if that walk times out: on a busy
                // overlay (100 simulated peers) it took longer than the 10 s
                // this was, and no lookup found anything. Lookups return at
                // the first providers found (events.rs), so they rarely wait this.
                .set_query_timeout(timers.dht_query);
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad_config,
            );
            // Without a confirmed external address Kademlia stays a client and never
            // answers queries; peers on loopback or a LAN never get one.
            kad.set_mode(Some(kad::Mode::Server));
            let mut gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossipsub::ConfigBuilder::default()
                    .heartbeat_interval(Duration::from_millis(200) * slower)
                    .max_transmit_size(64 * 1024)
                    .idontwant_message_size_threshold(IDONTWANT_ABOVE)
                    // Forward a message only once we decoded and checked it. It waits
                    // in the cache meanwhile: keep 5 s of heartbeats there (default 5
                    // heartbeats, 1 s at ours), so a busy event loop still forwards it.
                    .validate_messages()
                    .history_length(25)
                    // A forward may wait 5 s for its connection (default 1 s):
                    // timers.rs, scaled with a simulation's clock.
                    .forward_queue_duration(timers.gossip_forward)
                    .publish_queue_duration(timers.gossip_publish)
                    .duplicate_cache_time(timers.gossip_seen)
                    // Our own message relayed back is not the relayer's fault:
                    // gossipsub forgets ids after a minute, and on a busy overlay a
                    // publication still circling after that comes back by IHAVE/IWANT
                    // (we asked for it). Rejected, it counted as an invalid message
                    // against an honest peer (graylisted at two: docs/scale.md);
                    // signatures are still checked, and events.rs ignores it.
                    .allow_self_origin(true)
                    .build()?,
            )?;
            let topic = gossipsub::IdentTopic::new(ANNOUNCE_TOPIC);
            gossipsub.with_peer_score(guard::score_params(&topic), guard::score_thresholds())?;
            let mdns = if mdns_on {
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config::default(),
                    peer_id,
                )?)
            } else {
                None
            };
            let control = request_response::Behaviour::with_codec(
                traffic::CountingCodec::new(control_codec(), traffic.clone()),
                [(CONTROL_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(timers.control_request),
            );
            Ok(Behaviour {
                limits: connection_caps.behaviour(),
                identify,
                ping: ping::Behaviour::new(
                    ping::Config::new()
                        .with_interval(links::PING_INTERVAL * slower)
                        .with_timeout(links::PING_TIMEOUT * slower),
                ),
                kad,
                gossipsub,
                mdns: mdns.into(),
                control: hide::Hideable::new(control),
                streams: hide::Hideable::new(streams::Behaviour::default()),
                relay_server: relay_config.serve.then(|| relay::server(peer_id)).into(),
                relay_client,
                dcutr: dcutr::Behaviour::new(peer_id),
                autonat: reachability::behaviour(peer_id, slower, dial_backs),
            })
        })
        .map_err(|e| anyhow!("building the node: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Ok(swarm)
}

/// Gossipsub sends an IDONTWANT to every mesh peer for each message received
/// above this size (libp2p's default, 1,000 bytes, is meant for blocks of
/// hundreds of kB). Announcements of a few kB crossed it: at 100 simulated
/// peers IDONTWANTs were 40 of 135 writes/s per peer, 2.5 for every message
/// copy they might have spared (docs/scale.md). Only an announcement this big
/// (hundreds of services) is worth one.
pub const IDONTWANT_ABOVE: usize = 32 * 1024;

/// Control requests are a few hundred bytes; a bigger one is hostile.
pub const MAX_CONTROL_REQUEST: u64 = 64 * 1024;
/// The largest answer: a service list (at most 1024 bounded records).
pub const MAX_CONTROL_RESPONSE: u64 = 1024 * 1024;

type ControlCodec = request_response::cbor::codec::Codec<ControlRequest, ControlResponse>;

/// CBOR with our size limits: an oversized message fails to decode and is
/// dropped (logged as an inbound or outbound failure naming the peer).
fn control_codec() -> ControlCodec {
    ControlCodec::default()
        .set_request_size_maximum(MAX_CONTROL_REQUEST)
        .set_response_size_maximum(MAX_CONTROL_RESPONSE)
}

#[derive(Default)]
struct PeerEntry {
    nick: String,
    connections: usize,
    latency: Option<Duration>,
    addrs: Vec<Multiaddr>,
    vms: Option<Vec<String>>,
    load: Option<crate::model::PeerLoad>,
    links: Vec<String>,
    announced_seq: u64,
    /// Its latest announcement, for a joining neighbour's snapshot.
    announcement: Option<Announcement>,
    /// Reported gone at this announcement: it and older ones are stale.
    departed_seq: Option<u64>,
}

impl PeerEntry {
    /// Whether an announcement numbered `seq` brings nothing new: it is the one
    /// applied already, an older one, or one from before the peer was reported
    /// gone. Each publication has its own seq (unix millis), so an equal seq is
    /// the same publication coming round again: gossipsub forgets message ids
    /// after a minute, and on a busy overlay a publication still circling after
    /// that was accepted and forwarded anew by every node, until it reached its
    /// author, which gossipsub rejects as "from self" and charges the honest
    /// relayer an invalid message (graylisted at two: docs/scale.md).
    fn outdates(&self, seq: u64) -> bool {
        (self.announcement.is_some() && seq <= self.announced_seq)
            || self.departed_seq.is_some_and(|d| seq <= d)
    }

    /// Takes in a newer announcement; its links only if it carries them.
    fn apply(&mut self, a: &Announcement) {
        self.announced_seq = a.seq;
        self.departed_seq = None;
        self.vms = Some(a.vms.clone());
        self.load = Some(a.load.clone());
        if !a.links_unchanged {
            self.links = a.links.clone();
        }
        // Kept for a joining neighbour's snapshot; departures are news only once.
        self.announcement = Some(Announcement {
            departed: Vec::new(),
            ..a.clone()
        });
    }
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    topic: gossipsub::IdentTopic,
    bootstrap: Vec<Multiaddr>,
    peers: HashMap<PeerId, PeerEntry>,
    /// Control requests sent and not answered yet, with the peer asked.
    pending_requests:
        HashMap<OutboundRequestId, (PeerId, oneshot::Sender<Result<ControlResponse>>)>,
    pending_lookups: HashMap<kad::QueryId, Lookup>,
    /// DHT walks towards a peer whose address a stream needs (Command::Locate).
    pending_locates: HashMap<kad::QueryId, (PeerId, oneshot::Sender<bool>)>,
    announcement: Option<Announcement>,
    dial_errors: VecDeque<String>,
    links: links::Links,
    /// Which announcements carry our links.
    links_sent: links::LinksSent,
    relay_config: RelayConfig,
    reservations: relay::Reservations,
    /// Relayed connections replaced by a punched one, closed once idle.
    retiring: retire::Retiring,
    /// Peers whose hole punch failed, to try again (repunch.rs).
    repunches: repunch::RePunches,
    /// The streams of ours open now (streams.rs).
    ledger: streams::Ledger,
    refusals: guard::RefusalLog,
    /// Failed incoming handshakes, logged once per remote address per interval.
    handshake_refusals: guard::RefusalLog<Option<std::net::IpAddr>>,
    /// Failed dials, logged once per peer per interval.
    dial_refusals: guard::RefusalLog<String>,
    graylist: guard::Graylist,
    departures: departures::Departures,
    /// Whether this node is itself behind (health.rs): its peers' silence
    /// is then tolerated longer.
    health: health::LocalHealth,
    /// AutoNAT dial-backs this node made, closed once the peer identified
    /// itself on them (reachability.rs says why).
    dial_backs: std::collections::HashSet<libp2p::swarm::ConnectionId>,
    /// Peers asked for an AutoNAT dial-back, until their answer: a connection
    /// they open meanwhile is the dial-back, about to be closed by them.
    probing: std::collections::HashSet<PeerId>,
    /// How many times slower the overlay's timers run: 1, except in a
    /// simulation that scales time (transport.rs, `Wire::time_scale`).
    time_scale: u32,
}

const MAX_DIAL_ERRORS: usize = 8;
/// How long a DHT provider record lives without being republished (every
/// third of it). The DHT is the slow path for what gossip missed, and `find`
/// asks every provider it returns, so a stale record costs one failed request;
/// republishing every 30 s (a 90 s TTL, before issue 20) made each peer's
/// provider queries dial dozens of peers a minute in a big overlay.
pub const PROVIDER_TTL: Duration = Duration::from_secs(15 * 60);
/// A node's first provider records go to the few peers its DHT knew at start:
/// published once more when its routing table has filled, instead of waiting
/// for the first republication; and a second neighbour's snapshot is pulled.
const REPROVIDE_AFTER: Duration = Duration::from_secs(60);
/// Connection upkeep (redials, top-up, trim, silent connections) runs this often.
const UPKEEP_EVERY: Duration = Duration::from_secs(3);

struct Lookup {
    found: Vec<PeerId>,
    reply: oneshot::Sender<Vec<PeerId>>,
}

impl EventLoop {
    async fn run(mut self) {
        // Bootstrap peers may start after us: keep dialing the ones we are not connected to.
        let upkeep_every = UPKEEP_EVERY * self.time_scale;
        let mut redial_tick = interval(upkeep_every);
        // A late tick is measured (health.rs), not made up for in a burst.
        redial_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retire_tick = interval(Duration::from_secs(1));
        let mut digest_tick = interval(digest::DIGEST_EVERY * self.time_scale);
        let started = Instant::now();
        let mut reprovided = false;
        loop {
            let announce_at = self.departures.announce_at.map(Instant::from_std);
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event).await,
                _ = tokio::time::sleep_until(announce_at.unwrap_or_else(Instant::now)),
                    if announce_at.is_some() => self.publish_announcement(),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => return, // every Client is gone: shut down
                },
                _ = redial_tick.tick() => {
                    self.health.tick(std::time::Instant::now(), upkeep_every);
                    self.redial_bootstrap(started.elapsed());
                    if !reprovided && started.elapsed() > REPROVIDE_AFTER * self.time_scale {
                        reprovided = true;
                        self.reprovide();
                        self.second_snapshot();
                    }
                    self.top_up_connections();
                    self.redial_lost();
                    self.close_silent_connections();
                    self.review_graylist();
                }
                _ = retire_tick.tick() => {
                    self.review_retiring();
                    self.repunch_due();
                }
                _ = digest_tick.tick() => self.compare_digests(),
            }
        }
    }

    fn reprovide(&mut self) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        let keys: Vec<kad::RecordKey> = kad
            .store_mut()
            .provided()
            .map(|record| record.key.clone())
            .collect();
        for key in keys {
            if let Err(e) = kad.start_providing(key) {
                tracing::debug!("DHT: cannot provide again: {e}");
            }
        }
    }

    fn publish_announcement(&mut self) {
        self.departures.announce_at = None;
        let departed = self.departures.take_report();
        if self.announcement.is_some() {
            self.departures.announced_at = Some(std::time::Instant::now());
        }
        let Some(announcement) = &mut self.announcement else {
            return;
        };
        announcement.departed = departed;
        // Unix millis, kept strictly increasing: survives restarts without a counter file.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        announcement.seq = now.max(announcement.seq + 1);
        let links = self
            .swarm
            .connected_peers()
            .map(|p| p.to_string())
            .collect();
        match self.links_sent.next(links) {
            Some(links) => {
                announcement.links = links;
                announcement.links_unchanged = false;
            }
            None => {
                announcement.links = Vec::new();
                announcement.links_unchanged = true;
            }
        }
        let bytes = announcement.encode();
        tracing::debug!(
            seq = announcement.seq,
            services = announcement.services.len(),
            "announce"
        );
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), bytes)
        {
            // No subscribed peer yet is normal while the overlay forms: said
            // again when the first one subscribes (departures.rs), not at the
            // next periodic announcement, which may be minutes away.
            tracing::trace!("announce: {e}");
            self.departures.unheard = true;
            self.links_sent.unsent();
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Status { reply } => {
                let _ = reply.send(self.network_status());
            }
            Command::Request {
                peer,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .control
                    .send_request(&peer, request);
                self.pending_requests.insert(id, (peer, reply));
            }
            Command::Respond { channel, response } => self.respond(channel, response),
            // The runtime announces every few seconds (that is what keeps its records
            // alive elsewhere) and at once when something changed.
            Command::Announce { mut announcement } => {
                announcement.seq = self.announcement.as_ref().map_or(0, |old| old.seq);
                self.announcement = Some(announcement);
                self.publish_announcement();
            }
            Command::Provide { key, provide } => {
                let key = kad::RecordKey::new(&key);
                if provide {
                    if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
                        tracing::warn!("DHT: cannot provide: {e}");
                    }
                } else {
                    self.swarm.behaviour_mut().kad.stop_providing(&key);
                }
            }
            #[cfg(test)]
            Command::PublishRaw { bytes } => {
                let topic = self.topic.clone();
                let _ = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes);
            }
            Command::Locate { peer, reply } => {
                let known = self.swarm.is_connected(&peer)
                    || self.peers.get(&peer).is_some_and(|e| !e.addrs.is_empty());
                if known {
                    let _ = reply.send(true);
                } else {
                    let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                    self.pending_locates.insert(id, (peer, reply));
                }
            }
            Command::FindProviders { key, reply } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(kad::RecordKey::new(&key));
                self.pending_lookups.insert(
                    id,
                    Lookup {
                        found: Vec::new(),
                        reply,
                    },
                );
            }
        }
    }

    fn respond(&mut self, channel: ResponseChannel<ControlResponse>, response: ControlResponse) {
        let control = &mut self.swarm.behaviour_mut().control;
        if control.send_response(channel, response).is_err() {
            tracing::warn!("control response dropped: the requesting peer went away");
        }
    }

    fn display_name(&self, peer: &PeerId) -> String {
        match self.peers.get(peer) {
            Some(entry) if !entry.nick.is_empty() => entry.nick.clone(),
            _ => peer.to_string(),
        }
    }

    fn network_status(&self) -> NetworkStatus {
        let mut peers: Vec<PeerView> = self
            .peers
            .iter()
            .map(|(id, entry)| PeerView {
                peer_id: id.to_string(),
                nick: entry.nick.clone(),
                connected: entry.connections > 0,
                latency_ms: entry.latency.map(|d| d.as_secs_f64() * 1000.0),
                vms: (entry.vms.as_ref())
                    .map(|vms| vms.iter().map(|vm| vm.as_str().into()).collect()),
                addrs: entry.addrs.iter().map(|a| a.to_string()).collect(),
                load: entry.load.clone(),
                links: entry.links.clone(),
                relayed_via: self.links.relayed_via(id).map(|r| r.to_string()),
            })
            .collect();
        peers.sort_by_key(|p| p.display_name());
        NetworkStatus {
            peers: crate::model::without_replaced(peers),
            listen_addrs: self.swarm.listeners().map(|a| a.to_string()).collect(),
            dial_errors: self.dial_errors.iter().cloned().collect(),
            reachability: reachability::from_nat_status(
                &self.swarm.behaviour().autonat.nat_status(),
            ),
        }
    }

    fn record_dial_error(&mut self, message: String) {
        tracing::warn!("{message}");
        if self.dial_errors.len() == MAX_DIAL_ERRORS {
            self.dial_errors.pop_front();
        }
        self.dial_errors.push_back(message);
    }

    async fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!("listening on {address}");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.note_connection(peer_id, connection_id, &endpoint);
                self.churn_on_opened(connection_id, &endpoint);
                self.on_repunch_circuit(peer_id, connection_id);
                let entry = self.peers.entry(peer_id).or_default();
                entry.connections += 1;
                let addr = endpoint.get_remote_address().clone();
                if endpoint.is_dialer() && !entry.addrs.contains(&addr) {
                    entry.addrs.push(addr);
                }
                if entry.connections == 1 {
                    tracing::info!("peer {} connected", self.display_name(&peer_id));
                    self.departure_on_connected(peer_id, connection_id);
                } else if reachability::is_dial_back(&endpoint) {
                    // AutoNAT has its answer (it saw the connection open); a spare
                    // connection would only take streams away from the main one.
                    // Closing it now would cut the peer's side mid-handshake (it
                    // logged that as a failed incoming connection): wait until
                    // the peer has identified itself on it, so its side is done.
                    self.dial_backs.insert(connection_id);
                    self.hide_dial_back(connection_id);
                } else if !endpoint.is_dialer() && self.probing.contains(&peer_id) {
                    // The other side of the above: the prober's end.
                    self.hide_dial_back(connection_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.dial_backs.remove(&connection_id);
                if num_established == 0 {
                    // A probe cut short by the peer's going has no answer to wait for.
                    self.probing.remove(&peer_id);
                    self.repunches.forget(&peer_id);
                }
                self.links.closed(peer_id, connection_id);
                self.on_closed_for_retiring(peer_id, connection_id);
                self.departure_on_closed(peer_id, connection_id, num_established);
                if let Some(entry) = self.peers.get_mut(&peer_id) {
                    entry.connections = num_established as usize;
                    if num_established == 0 {
                        entry.latency = None;
                        tracing::info!("peer {} disconnected", self.display_name(&peer_id));
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id,
                error: libp2p::swarm::DialError::Denied { cause },
                ..
            } => self.on_refused(peer_id, &cause, "to"),
            SwarmEvent::IncomingConnectionError {
                peer_id,
                error: libp2p::swarm::ListenError::Denied { cause },
                ..
            } => self.on_refused(peer_id, &cause, "from"),
            SwarmEvent::OutgoingConnectionError {
                peer_id,
                error,
                connection_id,
            } => {
                self.on_repunch_dial_failed(connection_id);
                if let Some(peer) = peer_id {
                    self.departure_on_dial_failed(peer);
                }
                let who = peer_id
                    .map(|p| self.display_name(&p))
                    .unwrap_or_else(|| "bootstrap peer".into());
                let connected = peer_id
                    .and_then(|p| self.peers.get(&p))
                    .is_some_and(|e| e.connections > 0);
                if connected {
                    // An extra connection to a peer already reached: an AutoNAT
                    // dial-back or a hole punch, which fail behind NAT by nature.
                    tracing::info!("extra connection to {who} failed: {error}");
                    return;
                }
                // Redialed every few seconds: one line per peer per interval.
                let Some(suppressed) = self
                    .dial_refusals
                    .should_log(who.clone(), Instant::now().into_std())
                else {
                    return;
                };
                let mut message = explain_dial_error(&who, &error_chain(&error));
                if suppressed > 0 {
                    message.push_str(&format!(" ({suppressed} more since the last line)"));
                }
                self.record_dial_error(message);
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                if links::is_circuit_source(&send_back_addr) {
                    // Only members reach a relay, so no key trouble: the other end
                    // dialed several circuit addresses at once and kept another.
                    tracing::debug!("relayed connection from {send_back_addr} abandoned: {error}");
                    return;
                }
                // A stranger may knock often: one line per remote address per
                // interval, with the count of those not logged.
                let Some(suppressed) = self
                    .handshake_refusals
                    .should_log(remote_ip(&send_back_addr), Instant::now().into_std())
                else {
                    return;
                };
                let mut message = explain_dial_error(
                    &format!("incoming connection from {send_back_addr}"),
                    &error_chain(&error),
                );
                if suppressed > 0 {
                    message.push_str(&format!(
                        " ({suppressed} more from there since the last line)"
                    ));
                }
                self.record_dial_error(message);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let reason = reason.err().map(|e| format!(": {e}")).unwrap_or_default();
                self.on_listener_closed(listener_id, &reason);
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event).await,
            _ => {}
        }
    }
}

#[cfg(test)]
pub(crate) mod codec_io;
#[cfg(test)]
mod gossip_tests;

#[cfg(test)]
mod tests;
