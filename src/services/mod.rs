//! Services: what this peer provides, what the overlay provides (the discovered
//! catalogue, here), and which provider a new connection goes to. This peer's
//! part: `publish` (announcing, the overlay view, DHT lookup), `consume` (local
//! listeners), `serve` (consumers' streams, provider side), `expose` (legacy
//! host services), `handover` (streams for a VM migrating away, held and
//! forwarded); the byte path is `proxy`, racing providers `hedge`, a service's
//! longest gap `probe`.

pub mod consume;
mod consumed;
pub mod expose;
pub mod handover;
pub mod hedge;
pub mod probe;
pub mod proxy;
#[cfg(test)]
pub(crate) mod proxy_fuzz;
pub mod publish;
pub mod serve;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio::sync::Notify;

use crate::admission::access::AccessList;
use crate::admission::limits::PeerLimits;
use crate::hypervisor::Host;
use crate::hypervisor::netns::GuestNetwork;
use crate::model::{PeerLoad, ProviderView, ServiceSpec, ServiceView, VmState, VmView};
use crate::names::{ServiceName, VmName};
use crate::node::Client;
use crate::node::protocol::ServiceRecord;
use crate::paths::DataDir;
use consume::Consumption;
use expose::Exposure;
use handover::Handovers;

/// A provider not heard from for this long is dropped (it announces every 3 s in a
/// small overlay; see `announce_every`).
pub const RECORD_TTL: Duration = Duration::from_secs(10);

/// Re-announcement interval per peer in the overlay, between these bounds.
const ANNOUNCE_PER_PEER: Duration = Duration::from_secs(1);
const ANNOUNCE_MIN: Duration = Duration::from_secs(3);
const ANNOUNCE_MAX: Duration = Duration::from_secs(3600);

/// How often a peer re-announces unchanged state (changes go out at once). Every
/// peer hears every other peer's announcements, several times over its mesh links:
/// with a fixed interval (or one capped at 30 s, as before issue 20) each peer's
/// idle work grows with the overlay. An interval of one second per peer keeps
/// each peer's share constant: about one announcement a second reaches it, from
/// whichever peer, up to 3,600 peers. Nothing relies on these repetitions to
/// notice a peer that vanished: its neighbours report it (node/departures.rs).
pub fn announce_every(peers: usize) -> Duration {
    let peers = u32::try_from(peers).unwrap_or(u32::MAX);
    ANNOUNCE_PER_PEER
        .saturating_mul(peers)
        .clamp(ANNOUNCE_MIN, ANNOUNCE_MAX)
}

/// How long the overlay's size, as this peer last saw it at its largest, is
/// held for the announcement interval while fewer records are fresh.
const SIZE_HOLD: Duration = Duration::from_secs(600);

/// The overlay's size the announcement interval follows: the most peers
/// known within [`SIZE_HOLD`], not the records fresh right now. Records expire
/// when announcements arrive late (a busy host), and an interval that shrank
/// with them made every peer announce more often, which made announcements
/// later still: at 100 simulated peers a peer announced every 7 s instead of
/// every 100 s, and gossip lagged 20-45 s behind (docs/scale.md, session 5).
#[derive(Default)]
pub struct OverlaySize {
    most: usize,
    at: Option<Instant>,
}

impl OverlaySize {
    /// `known` peers are fresh now: the size to announce by.
    pub fn update(&mut self, known: usize, now: Instant) -> usize {
        let held = self
            .at
            .is_some_and(|at| now.saturating_duration_since(at) < SIZE_HOLD);
        if known >= self.most || !held {
            self.most = known;
            self.at = Some(now);
        }
        self.most
    }
}

/// How long the records of a peer announcing every `every` stay fresh: three
/// missed announcements, never less than `RECORD_TTL`, never more than a bound
/// (`every` comes from the network). A safety net: a vanished peer is dropped
/// when its neighbours report it, long before.
pub fn record_ttl(every: Duration) -> Duration {
    (every.min(ANNOUNCE_MAX) * 3).max(RECORD_TTL)
}

/// DHT keys under which providers are published.
pub fn name_key(name: &str) -> String {
    format!("svc/name/{name}")
}

pub fn type_key(kind: &str) -> String {
    format!("svc/type/{kind}")
}

/// Where a service this peer provides is actually served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A port of a guest on the peer's guest network.
    Guest { ip: std::net::Ipv4Addr, port: u16 },
    /// A legacy TCP service of the host (`peervisor expose`), as HOST:PORT.
    Legacy { addr: String },
}

/// A service this peer provides, with where to connect for it.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalService {
    pub spec: ServiceSpec,
    pub vm: Option<VmName>,
    pub target: Target,
}

impl LocalService {
    pub fn record(&self, version: u64) -> ServiceRecord {
        ServiceRecord {
            name: self.spec.name.to_string(),
            kind: self.spec.kind.clone(),
            tags: self.spec.tags.clone(),
            vm: self.vm.as_ref().map(VmName::to_string),
            version,
        }
    }
}

/// The services of the running VMs: their manifest's, or, without a manifest, the
/// HTTP server every peervisor guest runs, named after the VM.
pub fn services_of_vms(vms: &[VmView]) -> Vec<LocalService> {
    let mut out = Vec::new();
    for vm in vms
        .iter()
        .filter(|v| v.managed && v.state == VmState::Running)
    {
        let Some(ip) = vm.ip.as_deref().and_then(|ip| ip.parse().ok()) else {
            continue;
        };
        let specs = if vm.services.is_empty() {
            vec![ServiceSpec {
                name: vm.name.as_str().into(),
                kind: "http".into(),
                port: 80,
                ..Default::default()
            }]
        } else {
            vm.services.clone()
        };
        for spec in specs {
            out.push(LocalService {
                target: Target::Guest {
                    ip,
                    port: spec.port,
                },
                vm: Some(vm.name.clone()),
                spec,
            });
        }
    }
    out
}

struct Heard {
    services: Vec<ServiceRecord>,
    load: PeerLoad,
    seen: Instant,
    ttl: Duration,
}

/// What other peers provide, as last heard (gossip or a DHT lookup).
#[derive(Default)]
pub struct Catalogue {
    peers: Mutex<HashMap<PeerId, Heard>>,
    /// Providers a consumer connection could not reach, and when: tried last
    /// until they are heard from again (a dead peer's records live on elsewhere
    /// until their TTL, and every connection would otherwise try it first).
    failed: Mutex<HashMap<PeerId, Instant>>,
}

/// One remote provider of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub peer: PeerId,
    pub record: ServiceRecord,
    pub load: PeerLoad,
}

impl Catalogue {
    /// Replaces everything known of `peer`: a service it no longer lists is gone.
    /// `every`: how often the peer says it re-announces (zero: unknown).
    pub fn update(
        &self,
        peer: PeerId,
        services: Vec<ServiceRecord>,
        load: PeerLoad,
        every: Duration,
    ) {
        lock(&self.failed).remove(&peer);
        let mut peers = lock(&self.peers);
        peers.insert(
            peer,
            Heard {
                services,
                load,
                seen: Instant::now(),
                ttl: record_ttl(every),
            },
        );
    }

    /// A peer left the overlay (its neighbours said so): its records go at once.
    pub fn remove(&self, peer: &PeerId) {
        lock(&self.peers).remove(peer);
    }

    /// Whether `peer` was heard from within its TTL (cheap: no copy of the
    /// records, which the scale benchmark asks of 1,000 catalogues at once).
    pub fn knows(&self, peer: &PeerId) -> bool {
        lock(&self.peers)
            .get(peer)
            .is_some_and(|heard| heard.seen.elapsed() < heard.ttl)
    }

    /// Other peers heard from within their TTL.
    pub fn peer_count(&self) -> usize {
        let mut peers = lock(&self.peers);
        peers.retain(|_, heard| heard.seen.elapsed() < heard.ttl);
        peers.len()
    }

    /// Providers of `name` heard within the TTL.
    pub fn providers(&self, name: &str) -> Vec<Provider> {
        self.fresh()
            .into_iter()
            .filter(|p| p.record.name == name)
            .collect()
    }

    /// Every provider of every service heard within the TTL.
    pub fn fresh(&self) -> Vec<Provider> {
        let mut peers = lock(&self.peers);
        peers.retain(|_, heard| heard.seen.elapsed() < heard.ttl);
        peers
            .iter()
            .flat_map(|(peer, heard)| {
                heard.services.iter().map(|record| Provider {
                    peer: *peer,
                    record: record.clone(),
                    load: heard.load.clone(),
                })
            })
            .collect()
    }
}

impl Catalogue {
    /// A connection to `peer` failed: try it after the others until it is heard
    /// from again.
    pub fn mark_unreachable(&self, peer: PeerId) {
        lock(&self.failed).insert(peer, Instant::now());
    }

    pub fn unreachable(&self, peer: &PeerId) -> bool {
        let mut failed = lock(&self.failed);
        failed.retain(|_, at| at.elapsed() < RECORD_TTL);
        failed.contains_key(peer)
    }
}

/// This peer's part in services: what it provides (its running VMs' services
/// and its exposures), consumes and has heard of, and the handles that takes:
/// the node (gossip, DHT, streams), the hypervisor's VM list, the guest
/// network (where guest services are connected), who may consume and how often.
pub struct Services {
    node: Client,
    host: Host,
    network: GuestNetwork,
    nick: String,
    /// `data-dir/exposed.json`: the exposures, kept across restarts.
    exposures_file: PathBuf,
    /// `data-dir/consumed.json`: the consumptions, kept across restarts.
    consumptions_file: PathBuf,
    access: Arc<AccessList>,
    limits: Arc<PeerLimits>,
    catalogue: Catalogue,
    consumptions: Mutex<Vec<Consumption>>,
    exposures: Mutex<Vec<Exposure>>,
    /// DHT keys this peer currently provides.
    published: Mutex<HashSet<String>>,
    /// When each (service, vm) first appeared here: its record version.
    versions: Mutex<HashMap<(ServiceName, Option<VmName>), u64>>,
    /// Consumer connections this peer serves right now (its load).
    served: AtomicU64,
    /// Rotates the choice among equally good providers.
    spread: AtomicUsize,
    /// Wakes the publisher at once (a VM started, stopped or moved).
    republish: Arc<Notify>,
    /// Consumer streams for VMs migrating away: held, then forwarded.
    handovers: Handovers,
}

impl Services {
    pub fn new(
        node: Client,
        host: Host,
        network: GuestNetwork,
        nick: String,
        data_dir: &DataDir,
        access: Arc<AccessList>,
        limits: Arc<PeerLimits>,
    ) -> Services {
        Services {
            node,
            host,
            network,
            nick,
            exposures_file: data_dir.root().join("exposed.json"),
            consumptions_file: data_dir.root().join(consumed::FILE),
            access,
            limits,
            catalogue: Catalogue::default(),
            consumptions: Mutex::default(),
            exposures: Mutex::default(),
            published: Mutex::default(),
            versions: Mutex::default(),
            served: AtomicU64::default(),
            spread: AtomicUsize::default(),
            republish: Arc::default(),
            handovers: Handovers::default(),
        }
    }

    /// Reloads the exposures and consumptions of an earlier run, then publishes what this peer
    /// provides and serves consumers' streams, in the background.
    pub fn start(self: &Arc<Self>) {
        self.load_exposures();
        tokio::spawn(self.clone().restore_consumptions());
        tokio::spawn(self.clone().publish_loop());
        tokio::spawn(serve::accept_service_streams(self.clone()));
    }

    /// Announces what this peer provides now rather than at the next interval.
    pub fn republish(&self) {
        self.republish.notify_one();
    }

    /// What to tell when this peer's VMs change (the publisher listens).
    pub fn on_change(&self) -> Arc<Notify> {
        self.republish.clone()
    }

    /// Consumer streams for this peer's VMs that migrate away.
    pub fn handovers(&self) -> &Handovers {
        &self.handovers
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Orders providers for a new connection: the least loaded first, then the lowest
/// latency; `spread` rotates among equally good ones so replicas share the work.
pub fn rank(
    mut providers: Vec<Provider>,
    latency_ms: impl Fn(&PeerId) -> Option<f64>,
    spread: usize,
) -> Vec<Provider> {
    // Coarse load buckets: a few % of CPU is noise, not a reason to pile onto one peer.
    let bucket =
        |p: &Provider| (p.load.cpu_pct / 25.0).floor() as u64 + u64::from(p.load.connections) / 8;
    let latency = |p: &Provider| latency_ms(&p.peer).unwrap_or(f64::MAX);
    providers.sort_by(|a, b| {
        bucket(a)
            .cmp(&bucket(b))
            .then(latency(a).total_cmp(&latency(b)))
    });
    let Some(best) = providers.first() else {
        return providers;
    };
    let (best_bucket, best_latency) = (bucket(best), latency(best));
    let equally_good = providers
        .iter()
        .take_while(|p| bucket(p) == best_bucket && latency(p) <= best_latency * 2.0 + 1.0)
        .count();
    if equally_good > 1 {
        providers[..equally_good].rotate_left(spread % equally_good);
    }
    providers
}

/// The services view for the console and `peervisor services`: local and remote
/// providers grouped by service name.
pub fn overlay_view(
    local_peer: &str,
    local_nick: &str,
    local: &[LocalService],
    local_load: &PeerLoad,
    remote: &[Provider],
    peer_info: impl Fn(&PeerId) -> (String, Option<f64>),
) -> Vec<ServiceView> {
    let local_rows = local.iter().map(|s| {
        let provider = ProviderView {
            peer_id: local_peer.to_string(),
            peer_nick: local_nick.to_string(),
            vm: s.vm.clone(),
            // Nothing measures a round trip to ourselves: none, not 0.0 ms.
            latency_ms: None,
            load: Some(local_load.clone()),
            local: true,
        };
        (s.spec.name.as_str(), &s.spec.kind, &s.spec.tags, provider)
    });
    let remote_rows = remote.iter().map(|p| {
        let (nick, latency_ms) = peer_info(&p.peer);
        let provider = ProviderView {
            peer_id: p.peer.to_string(),
            peer_nick: nick,
            vm: p.record.vm.as_deref().map(VmName::from),
            latency_ms,
            load: Some(p.load.clone()),
            local: false,
        };
        (
            p.record.name.as_str(),
            &p.record.kind,
            &p.record.tags,
            provider,
        )
    });
    let mut by_name: HashMap<String, ServiceView> = HashMap::new();
    for (name, kind, tags, provider) in local_rows.chain(remote_rows) {
        by_name
            .entry(name.to_string())
            .or_insert_with(|| ServiceView {
                name: name.into(),
                kind: kind.clone(),
                tags: tags.clone(),
                providers: Vec::new(),
            })
            .providers
            .push(provider);
    }
    let mut services: Vec<ServiceView> = by_name.into_values().collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    services
}

/// Names close to `wanted`, for "did you mean" in errors.
pub fn near_matches<'a>(wanted: &str, known: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut scored: Vec<(usize, String)> = known
        .map(|k| (edit_distance(wanted, k), k.to_string()))
        .filter(|(d, k)| {
            *d <= if wanted.len() <= 3 { 1 } else { 2 }
                || k.contains(wanted)
                || wanted.contains(k.as_str())
        })
        .collect();
    scored.sort();
    scored.dedup();
    scored.into_iter().take(3).map(|(_, k)| k).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            row.push((prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(peer: PeerId, name: &str, cpu: f64) -> Provider {
        Provider {
            peer,
            record: ServiceRecord {
                name: name.into(),
                kind: "http".into(),
                ..Default::default()
            },
            load: PeerLoad {
                cpu_pct: cpu,
                ..Default::default()
            },
        }
    }

    #[test]
    fn least_loaded_then_nearest_and_replicas_share() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let latency = |p: &PeerId| {
            Some(if *p == a {
                5.0
            } else if *p == b {
                1.0
            } else {
                1.2
            })
        };
        // c is near but busy: it goes last whatever its latency
        let ranked = rank(
            vec![
                provider(a, "web", 10.0),
                provider(b, "web", 5.0),
                provider(c, "web", 90.0),
            ],
            latency,
            0,
        );
        assert_eq!(ranked.iter().map(|p| p.peer).collect::<Vec<_>>(), [b, a, c]);
        // a and b equally loaded and both near enough: successive connections alternate
        let near = |p: &PeerId| Some(if *p == a { 1.5 } else { 1.0 });
        let first = rank(
            vec![provider(a, "web", 0.0), provider(b, "web", 0.0)],
            near,
            0,
        );
        let second = rank(
            vec![provider(a, "web", 0.0), provider(b, "web", 0.0)],
            near,
            1,
        );
        assert_ne!(first[0].peer, second[0].peer);
    }

    #[test]
    fn catalogue_replaces_a_peers_list() {
        let cat = Catalogue::default();
        let p = PeerId::random();
        cat.update(
            p,
            vec![provider(p, "web", 0.0).record],
            PeerLoad::default(),
            Duration::ZERO,
        );
        assert_eq!(cat.providers("web").len(), 1);
        cat.update(p, vec![], PeerLoad::default(), Duration::ZERO);
        assert!(cat.providers("web").is_empty(), "withdrawn at once");
        cat.update(
            p,
            vec![provider(p, "kv", 0.0).record],
            PeerLoad::default(),
            Duration::ZERO,
        );
        assert_eq!(cat.fresh().len(), 1);
    }

    /// Issue 20: records expiring (announcements arriving late on a busy
    /// host) do not shorten the announcement interval for ten minutes; a
    /// bigger overlay lengthens it at once.
    #[test]
    fn the_announcement_interval_follows_the_largest_overlay_seen_lately() {
        let t0 = Instant::now();
        let mut size = OverlaySize::default();
        assert_eq!(size.update(3, t0), 3);
        assert_eq!(size.update(99, t0 + Duration::from_secs(5)), 99);
        let later = t0 + Duration::from_secs(65);
        assert_eq!(
            size.update(10, later),
            99,
            "expired records shrank the overlay"
        );
        assert_eq!(size.update(120, later), 120);
        let much_later = later + SIZE_HOLD + Duration::from_secs(1);
        assert_eq!(
            size.update(10, much_later),
            10,
            "a smaller overlay, for good"
        );
    }

    #[test]
    fn big_overlays_announce_less_often_and_keep_records_longer() {
        assert_eq!(announce_every(3), Duration::from_secs(3));
        assert_eq!(announce_every(50), Duration::from_secs(50));
        assert_eq!(announce_every(1000), Duration::from_secs(1000));
        assert_eq!(announce_every(100_000), Duration::from_secs(3600));
        assert_eq!(record_ttl(Duration::ZERO), RECORD_TTL, "older peers");
        assert_eq!(record_ttl(Duration::from_secs(15)), Duration::from_secs(45));
        assert_eq!(
            record_ttl(Duration::from_secs(u32::MAX as u64)),
            Duration::from_secs(3 * 3600),
            "a hostile interval is bounded"
        );
        let cat = Catalogue::default();
        let p = PeerId::random();
        cat.update(p, vec![], PeerLoad::default(), Duration::from_secs(15));
        assert_eq!(cat.peer_count(), 1);
    }

    #[test]
    fn an_unreachable_provider_is_marked_until_it_is_heard_from_again() {
        let cat = Catalogue::default();
        let p = PeerId::random();
        cat.update(
            p,
            vec![provider(p, "web", 0.0).record],
            PeerLoad::default(),
            Duration::ZERO,
        );
        assert!(!cat.unreachable(&p));
        cat.mark_unreachable(p);
        assert!(cat.unreachable(&p));
        assert_eq!(
            cat.providers("web").len(),
            1,
            "still listed: it may come back"
        );
        cat.update(
            p,
            vec![provider(p, "web", 0.0).record],
            PeerLoad::default(),
            Duration::ZERO,
        );
        assert!(!cat.unreachable(&p), "heard from again");
    }

    #[test]
    fn vms_without_a_manifest_offer_their_http_server() {
        let vm = VmView {
            name: "web-1".into(),
            state: VmState::Running,
            ip: Some("10.77.0.9".into()),
            managed: true,
            ..Default::default()
        };
        let stopped = VmView {
            name: "off".into(),
            state: VmState::Stopped,
            ..vm.clone()
        };
        let services = services_of_vms(&[vm, stopped]);
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].spec.name, "web-1");
        assert_eq!(
            services[0].target,
            Target::Guest {
                ip: "10.77.0.9".parse().unwrap(),
                port: 80
            }
        );
    }

    #[test]
    fn near_matches_suggest_similar_names() {
        let known = ["web-1", "web-2", "kv-store", "db"];
        assert_eq!(
            near_matches("web1", known.iter().copied()),
            ["web-1", "web-2"]
        );
        assert_eq!(near_matches("kv", known.iter().copied()), ["kv-store"]);
        assert!(near_matches("zzzzzz", known.iter().copied()).is_empty());
    }
}
