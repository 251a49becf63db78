//! This peer's part in services: publishing what it provides (DHT + gossip),
//! consuming what others provide (local listeners), serving consumers' streams,
//! and exposing legacy host services.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::control::Role;
use crate::model::{ConsumptionView, PeerLoad, ServiceSpec, ServiceView};
use crate::node::protocol::{Announcement, SERVICE_PROTOCOL, ServiceRecord};
use crate::peer::Peer;
use crate::peer::limits::{self, OpenGuard};
use crate::peer::phases::Phases;
use crate::services::hedge;
use crate::services::proxy::{self, Answer, Counters, Hello};
use crate::services::{
    Catalogue, LocalService, Provider, Target, announce_every, name_key, near_matches,
    overlay_view, rank, services_of_vms, type_key,
};

/// Providers tried for one consumer connection before giving up.
const MAX_ATTEMPTS: usize = 3;

/// A legacy host service published with `peervisor expose`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Exposure {
    pub name: String,
    pub kind: String,
    pub target: String,
    /// Peer ids that may consume it; empty: every peer with the consume role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Connections it serves at once, from all peers together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_conns: Option<u32>,
}

struct Consumption {
    service: String,
    listen: SocketAddr,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
pub struct ServiceState {
    pub catalogue: Catalogue,
    consumptions: Mutex<Vec<Consumption>>,
    exposures: Mutex<Vec<Exposure>>,
    /// DHT keys this peer currently provides.
    published: Mutex<HashSet<String>>,
    /// When each (service, vm) first appeared here: its record version.
    versions: Mutex<HashMap<(String, Option<String>), u64>>,
    /// Consumer connections this peer serves right now (its load).
    served: AtomicU64,
    /// Rotates the choice among equally good providers.
    spread: AtomicUsize,
    /// Wakes the publisher at once (a VM started, stopped or moved).
    pub republish: Notify,
}

enum Candidate {
    Local(Target),
    /// Another peer, and how long its stream may take to open before the next
    /// provider is tried as well (see services::hedge).
    Remote(hedge::Candidate<PeerId>),
}

impl Peer {
    fn exposures_file(&self) -> PathBuf {
        self.data_dir().root().join("exposed.json")
    }

    /// Reloads exposures saved by an earlier run.
    pub(crate) fn load_exposures(&self) {
        let path = self.exposures_file();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        match parse_exposures(&text) {
            Ok(list) => *lock(&self.services.exposures) = list,
            Err(e) => tracing::warn!("{}: ignored ({e})", path.display()),
        }
    }

    fn save_exposures(&self, list: &[Exposure]) -> Result<()> {
        let path = self.exposures_file();
        std::fs::write(&path, serde_json::to_vec_pretty(list)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Everything this peer provides now: its running VMs' services and its exposures.
    pub(crate) async fn local_services(&self) -> Result<Vec<LocalService>> {
        Ok(self.services_of(&self.host.vms()))
    }

    /// The services of these VMs (this peer's, as just listed) and the exposures.
    fn services_of(&self, vms: &[crate::model::VmView]) -> Vec<LocalService> {
        let mut services = services_of_vms(vms);
        for e in lock(&self.services.exposures).iter() {
            services.push(LocalService {
                spec: ServiceSpec {
                    name: e.name.clone(),
                    kind: e.kind.clone(),
                    port: 0,
                    tags: Vec::new(),
                    max_conns: e.max_conns,
                    allow: e.allow.clone(),
                },
                vm: None,
                target: Target::Legacy {
                    addr: e.target.clone(),
                },
            });
        }
        services
    }

    pub(crate) fn load(&self, running_vms: u32) -> PeerLoad {
        PeerLoad {
            cpu_pct: self.host.host_stats().map_or(0.0, |h| h.cpu_pct),
            vm_cpu_pct: crate::migrate::provision::vms_cpu_pct(&self.host.vms()),
            running_vms,
            connections: self.services.served.load(Ordering::Relaxed) as u32,
        }
    }

    fn records(&self, local: &[LocalService]) -> Vec<ServiceRecord> {
        let mut versions = lock(&self.services.versions);
        let now = unix_millis();
        let current: HashSet<(String, Option<String>)> = local
            .iter()
            .map(|s| (s.spec.name.clone(), s.vm.clone()))
            .collect();
        versions.retain(|k, _| current.contains(k));
        local
            .iter()
            .map(|s| {
                let version = *versions
                    .entry((s.spec.name.clone(), s.vm.clone()))
                    .or_insert(now);
                s.record(version)
            })
            .collect()
    }

    /// Publishes what this peer hosts and provides: gossip at once on change and
    /// every few seconds (slower in a big overlay), DHT provider records by service
    /// name and type.
    pub(crate) async fn publish_loop(self: Arc<Self>) {
        loop {
            let every = announce_every(self.services.catalogue.peer_count() + 1);
            if let Err(e) = self.publish_once(every).await {
                tracing::debug!("publish: {e:#}");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.services.republish.notified() => {}
            }
        }
    }

    async fn publish_once(&self, every: Duration) -> Result<()> {
        let vms = self.host.vms();
        let local = self.services_of(&vms);
        let running: Vec<String> = vms
            .iter()
            .filter(|v| v.state == crate::model::VmState::Running)
            .map(|v| v.name.clone())
            .collect();
        let records = self.records(&local);
        let keys: HashSet<String> = records
            .iter()
            .flat_map(|r| [name_key(&r.name), type_key(&r.kind)])
            .collect();
        let announcement = Announcement {
            nick: self.config.nick.clone(),
            load: self.load(running.len() as u32),
            vms: running,
            services: records,
            links: Vec::new(),
            seq: 0,
            every_ms: every.as_millis() as u64,
        };
        // Gossip first: it is what other peers see within a second; the DHT
        // records are the slow path for peers gossip missed.
        self.node.announce(announcement).await?;
        let (added, removed) = {
            let mut published = lock(&self.services.published);
            let added: Vec<String> = keys.difference(&published).cloned().collect();
            let removed: Vec<String> = published.difference(&keys).cloned().collect();
            *published = keys;
            (added, removed)
        };
        for key in &added {
            self.node.provide(key, true).await?;
        }
        for key in &removed {
            self.node.provide(key, false).await?;
        }
        Ok(())
    }

    pub(crate) fn on_announcement(&self, peer: PeerId, announcement: Announcement) {
        self.services.catalogue.update(
            peer,
            announcement.services,
            announcement.load,
            Duration::from_millis(announcement.every_ms),
        );
    }

    /// Answer to a peer's `ListServices` (it found us in the DHT).
    pub(crate) async fn service_records(&self) -> (Vec<ServiceRecord>, PeerLoad) {
        let local = self.local_services().await.unwrap_or_default();
        (self.records(&local), self.load(serving_vms(&local)))
    }

    /// The overlay's services as this peer sees them.
    pub(crate) async fn services_view(&self, peers: &[crate::model::PeerView]) -> Vec<ServiceView> {
        let local = self.local_services().await.unwrap_or_default();
        let remote = self.services.catalogue.fresh();
        let info = |id: &PeerId| {
            let id = id.to_string();
            peers
                .iter()
                .find(|p| p.peer_id == id)
                .map(|p| (p.display_name(), p.latency_ms))
                .unwrap_or((crate::model::short_peer_id(&id), None))
        };
        overlay_view(
            &self.node.local_peer_id().to_string(),
            &self.config.nick,
            &local,
            &self.load(serving_vms(&local)),
            &remote,
            info,
        )
    }

    /// Looks a service up in the DHT and asks each provider found for details, so a
    /// service is found even when gossip has not reached this peer.
    pub async fn find_service(&self, name: &str) -> Result<ServiceView> {
        let found = self.node.find_providers(&name_key(name)).await?;
        let me = self.node.local_peer_id();
        for peer in found.into_iter().filter(|p| *p != me) {
            match self
                .node
                .request(peer, crate::node::protocol::ControlRequest::ListServices)
                .await
            {
                Ok(crate::node::protocol::ControlResponse::Services { services, load }) => {
                    let valid: Vec<ServiceRecord> = services
                        .into_iter()
                        .filter(|s| match s.validate() {
                            Ok(()) => true,
                            Err(e) => {
                                tracing::warn!("dropped a malformed record from {peer}: {e}");
                                false
                            }
                        })
                        .collect();
                    self.services
                        .catalogue
                        .update(peer, valid, load, Duration::ZERO);
                }
                Ok(crate::node::protocol::ControlResponse::Refused { reason }) => {
                    tracing::warn!("{peer} refused to list its services: {reason}")
                }
                Ok(other) => tracing::warn!("{peer} answered ListServices with {other:?}"),
                Err(e) => tracing::debug!("asking {peer} for its services: {e:#}"),
            }
        }
        let peers = self.node.status().await?.peers;
        let view = self
            .services_view(&peers)
            .await
            .into_iter()
            .find(|s| s.name == name);
        match view {
            Some(view) => Ok(view),
            None => Err(self.unknown_service(name).await),
        }
    }

    async fn unknown_service(&self, name: &str) -> anyhow::Error {
        let local = self.local_services().await.unwrap_or_default();
        let remote = self.services.catalogue.fresh();
        let known: Vec<&str> = local
            .iter()
            .map(|s| s.spec.name.as_str())
            .chain(remote.iter().map(|p| p.record.name.as_str()))
            .collect();
        let near = near_matches(name, known.into_iter());
        if near.is_empty() {
            anyhow!("no service '{name}' in the overlay")
        } else {
            anyhow!(
                "no service '{name}' in the overlay (did you mean: {}?)",
                near.join(", ")
            )
        }
    }

    /// Where the next connection to `service` should go, best first.
    async fn candidates(&self, service: &str) -> Vec<Candidate> {
        let mut out = Vec::new();
        if let Ok(local) = self.local_services().await
            && let Some(s) = local.into_iter().find(|s| s.spec.name == service)
        {
            out.push(Candidate::Local(s.target));
        }
        let mut remote: Vec<Provider> = self.services.catalogue.providers(service);
        if remote.is_empty() && out.is_empty() && self.find_service(service).await.is_ok() {
            remote = self.services.catalogue.providers(service);
        }
        let latencies: HashMap<String, Option<f64>> = self
            .node
            .status()
            .await
            .map(|s| {
                s.peers
                    .into_iter()
                    .map(|p| (p.peer_id, p.latency_ms))
                    .collect()
            })
            .unwrap_or_default();
        let spread = self.services.spread.fetch_add(1, Ordering::Relaxed);
        let ranked = rank(
            remote,
            |p| latencies.get(&p.to_string()).copied().flatten(),
            spread,
        );
        let mut seen = HashSet::new();
        let mut unreachable = Vec::new();
        for p in ranked {
            if !seen.insert(p.peer) {
                continue;
            }
            let rtt = latencies
                .get(&p.peer.to_string())
                .copied()
                .flatten()
                .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok());
            let candidate = Candidate::Remote(hedge::Candidate {
                key: p.peer,
                hedge_after: hedge::hedge_delay(rtt),
            });
            if self.services.catalogue.unreachable(&p.peer) {
                unreachable.push(candidate);
            } else {
                out.push(candidate);
            }
        }
        // Still tried, as a last resort: it may be back.
        out.extend(unreachable);
        out
    }

    /// `peervisor consume`: a local listener whose connections reach `service`
    /// through the overlay.
    pub async fn consume(
        self: &Arc<Self>,
        service: &str,
        port: Option<u16>,
        bind: Option<&str>,
    ) -> Result<ConsumptionView> {
        if lock(&self.services.consumptions)
            .iter()
            .any(|c| c.service == service)
        {
            bail!("service '{service}' is already consumed here (see `peervisor status`)");
        }
        if self.candidates(service).await.is_empty() {
            return Err(self.unknown_service(service).await);
        }
        let ip: std::net::IpAddr = bind
            .unwrap_or("127.0.0.1")
            .parse()
            .map_err(|_| anyhow!("--bind {}: not an IP address", bind.unwrap_or_default()))?;
        let addr = SocketAddr::new(ip, port.unwrap_or(0));
        let listener = TcpListener::bind(addr).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => anyhow!("{addr} is in use: pick another --local-port"),
            _ => anyhow!("cannot listen on {addr}: {e}"),
        })?;
        let listen = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(self.clone().serve_consumers(
            listener,
            service.to_string(),
            counters.clone(),
        ));
        let consumption = Consumption {
            service: service.to_string(),
            listen,
            counters,
            task,
        };
        let view = view_of(&consumption);
        lock(&self.services.consumptions).push(consumption);
        tracing::info!("consuming '{service}' on {listen}");
        Ok(view)
    }

    /// True once this peer has heard of a provider of `name` elsewhere.
    pub fn knows_service(&self, name: &str) -> bool {
        !self.services.catalogue.providers(name).is_empty()
    }

    pub async fn connected_peers(&self) -> usize {
        self.node
            .status()
            .await
            .map(|s| s.peers.iter().filter(|p| p.connected).count())
            .unwrap_or(0)
    }

    pub fn unconsume(&self, service: &str) -> Result<()> {
        let mut list = lock(&self.services.consumptions);
        let Some(pos) = list.iter().position(|c| c.service == service) else {
            bail!("service '{service}' is not consumed here");
        };
        list.remove(pos).task.abort();
        Ok(())
    }

    pub(crate) fn consumption_views(&self) -> Vec<ConsumptionView> {
        lock(&self.services.consumptions)
            .iter()
            .map(view_of)
            .collect()
    }

    async fn serve_consumers(
        self: Arc<Self>,
        listener: TcpListener,
        service: String,
        counters: Arc<Counters>,
    ) {
        loop {
            let client = match listener.accept().await {
                Ok((client, _)) => client,
                Err(e) => {
                    // E.g. out of file descriptors: keep the listener, retry shortly.
                    tracing::warn!("consume '{service}': accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let peer = self.clone();
            let service = service.clone();
            let counters = counters.clone();
            tokio::spawn(async move {
                Counters::add(&counters.total, 1);
                Counters::add(&counters.active, 1);
                if let Err(e) = peer.forward(client, &service, &counters).await {
                    Counters::add(&counters.errors, 1);
                    tracing::warn!("consume '{service}': {e:#}");
                    *lock(&counters.last_error) = Some(format!("{e:#}"));
                }
                counters.active.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }

    /// One consumer connection: try providers best first until one takes it.
    /// This peer's own provider is tried alone; other peers are raced
    /// (services::hedge): the next one is asked too when the best has not opened
    /// a stream within its hedge delay.
    async fn forward(
        &self,
        mut client: TcpStream,
        service: &str,
        counters: &Counters,
    ) -> Result<()> {
        let _ = client.set_nodelay(true);
        // Where this connection's time goes, in the debug log.
        let phases = Phases::start();
        let mut last_error = anyhow!("no provider of '{service}' is reachable");
        let mut remote = Vec::new();
        let candidates = self.candidates(service).await;
        phases.mark("providers ranked");
        for candidate in candidates.into_iter().take(MAX_ATTEMPTS) {
            let target = match candidate {
                Candidate::Local(target) => target,
                Candidate::Remote(peer) => {
                    remote.push(peer);
                    continue;
                }
            };
            let provider = self.config.nick.clone();
            match proxy::connect_target(&target, &self.network).await {
                Ok(upstream) => {
                    phases.mark("connected");
                    let _ = upstream.set_nodelay(true);
                    let copied = pipe_timed(&mut client, upstream, &phases).await;
                    tracing::debug!("consume '{service}' through {provider}: {}", phases.line());
                    return account(counters, &provider, copied);
                }
                Err(e) => {
                    tracing::debug!("provider {provider} of '{service}' refused: {e:#}");
                    last_error = e.context(format!("provider {provider}"));
                }
            }
        }
        if remote.is_empty() {
            return Err(last_error);
        }
        let raced = self.open_remote(remote, service, &phases).await;
        let copied = match raced.winner {
            Some((peer, upstream)) => {
                phases.mark("stream open");
                Some((peer, pipe_timed(&mut client, upstream, &phases).await))
            }
            None => {
                phases.mark("refused");
                None
            }
        };
        // Names are looked up once the bytes are through (a round trip to the
        // node's event loop each).
        for (peer, e) in raced.failed {
            let provider = self.peer_name(peer).await;
            tracing::debug!("provider {provider} of '{service}' refused: {e:#}");
            last_error = e.context(format!("provider {provider}"));
        }
        for peer in raced.overtaken {
            let provider = self.peer_name(peer).await;
            tracing::debug!(
                "provider {provider} of '{service}' was overtaken: no stream within its hedge delay, another provider was asked and opened first"
            );
        }
        let Some((peer, copied)) = copied else {
            tracing::debug!("consume '{service}': {}", phases.line());
            return Err(last_error);
        };
        let provider = self.peer_name(peer).await;
        tracing::debug!("consume '{service}' through {provider}: {}", phases.line());
        account(counters, &provider, copied)
    }

    /// Races other peers' providers for one connection (services::hedge). A
    /// provider that failed, or was slower than its hedge delay, is tried last by
    /// later connections until it is heard from again; streams that open after
    /// the winner's are closed in the background.
    async fn open_remote(
        &self,
        remote: Vec<hedge::Candidate<PeerId>>,
        service: &str,
        phases: &Phases,
    ) -> hedge::Raced<PeerId, tokio_util::compat::Compat<crate::node::Stream>> {
        let node = self.node.clone();
        let mut raced = hedge::race(remote, |peer| {
            let node = node.clone();
            let service = service.to_string();
            async move { open_with_retry(&node, peer, &service).await }
        })
        .await;
        for (_, at) in raced.started.iter().skip(1) {
            phases.mark_at("next provider asked", at.into_std());
        }
        for peer in raced.failed.iter().map(|(p, _)| p).chain(&raced.overtaken) {
            self.services.catalogue.mark_unreachable(*peer);
        }
        if !raced.late.is_empty() {
            let late = std::mem::take(&mut raced.late);
            tokio::spawn(hedge::close_late(late, service.to_string()));
        }
        raced
    }

    async fn peer_name(&self, peer: PeerId) -> String {
        let id = peer.to_string();
        self.node
            .status()
            .await
            .ok()
            .and_then(|s| s.peers.into_iter().find(|p| p.peer_id == id))
            .map(|p| p.display_name())
            .unwrap_or_else(|| crate::model::short_peer_id(&id))
    }

    /// `peervisor expose`: publishes a TCP service of this host.
    pub async fn expose(
        &self,
        name: &str,
        target: &str,
        kind: Option<&str>,
        allow: Vec<PeerId>,
        max_conns: Option<u32>,
    ) -> Result<()> {
        if max_conns == Some(0) {
            bail!("--max-conns 0 would refuse every consumer: give 1 or more");
        }
        crate::peer::validate_vm_name(name).map_err(|_| {
            anyhow!("invalid service name '{name}': use letters, digits, '-', '_' or '.'")
        })?;
        let record = ServiceRecord {
            name: name.to_string(),
            kind: kind.unwrap_or("tcp").to_string(),
            ..Default::default()
        };
        record.validate().map_err(|e| anyhow!(e))?;
        if tokio::net::lookup_host(target).await.is_err() {
            bail!("--target {target}: expected HOST:PORT that resolves");
        }
        if self
            .local_services()
            .await?
            .iter()
            .any(|s| s.spec.name == name)
        {
            bail!("this peer already provides a service named '{name}'");
        }
        let list = {
            let mut list = lock(&self.services.exposures);
            list.push(Exposure {
                name: name.to_string(),
                kind: record.kind,
                target: target.to_string(),
                allow: allow.iter().map(PeerId::to_string).collect(),
                max_conns,
            });
            list.clone()
        };
        self.save_exposures(&list)?;
        self.services.republish.notify_one();
        Ok(())
    }

    pub fn unexpose(&self, name: &str) -> Result<()> {
        let list = {
            let mut list = lock(&self.services.exposures);
            let Some(pos) = list.iter().position(|e| e.name == name) else {
                bail!("no exposed service named '{name}' on this peer");
            };
            list.remove(pos);
            list.clone()
        };
        self.save_exposures(&list)?;
        self.services.republish.notify_one();
        Ok(())
    }
}

/// Provider side: serves consumers' streams for the services this peer provides.
pub async fn accept_service_streams(peer: Arc<Peer>) {
    let mut incoming = match peer.node.streams().accept(SERVICE_PROTOCOL) {
        Ok(incoming) => incoming,
        Err(e) => {
            tracing::error!("cannot serve service streams: {e}");
            return;
        }
    };
    while let Some((from, stream)) = incoming.next().await {
        let peer = peer.clone();
        tokio::spawn(async move {
            peer.services.served.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = serve_stream(&peer, from, stream).await {
                tracing::debug!("service stream from {from}: {e:#}");
            }
            peer.services.served.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve_stream(peer: &Peer, from: PeerId, stream: crate::node::Stream) -> Result<()> {
    use tokio_util::compat::FuturesAsyncReadCompatExt;
    let phases = Phases::start();
    let mut stream = stream.compat();
    // Counted before the header, so streams that never send one count too.
    let open = peer
        .limits
        .open_streams
        .try_open(&from, peer.limits.config.streams_per_peer);
    let hello: Hello = match proxy::read_frame(&mut stream).await {
        Ok(hello) => hello,
        Err(e) => {
            if peer.limits.log_refusal(&from) {
                tracing::warn!("dropped a service stream from {from}: {e:#}");
            }
            return Ok(());
        }
    };
    phases.mark("header");
    let service_name = hello.service.clone();
    let logged = |outcome: &str| {
        tracing::debug!(
            "service stream for '{service_name}' from {from}: {}{outcome}",
            phases.line()
        )
    };
    // Its VM may be migrating away: held until it moved, then forwarded there
    // (a failed migration leaves it here, admitted below).
    if !hello.served_here
        && peer.access.allows(&from, Role::Consume)
        && !peer
            .local_services()
            .await
            .is_ok_and(|l| l.iter().any(|s| s.spec.name == hello.service))
        && let Some(dest) = peer.handovers.destination(&hello.service).await
    {
        phases.mark("handed over");
        let forwarded =
            crate::migrate::handover::forward(peer, &mut stream, dest, &hello.service).await;
        phases.mark("closed");
        logged(&format!(" (forwarded to {dest})"));
        return forwarded;
    }
    let admitted = match open {
        Some(open) => peer
            .admit_stream(from, &hello.service)
            .await
            .map(|(service, guard)| (service, open, guard)),
        None => Err(format!(
            "too many open streams from you (at most {})",
            peer.limits.config.streams_per_peer
        )),
    };
    let (service, _open, _slot) = match admitted {
        Ok(admitted) => admitted,
        Err(reason) => {
            if peer.limits.log_refusal(&from) {
                tracing::warn!(
                    "refused a stream for '{}' from {from}: {reason}",
                    hello.service
                );
            }
            proxy::write_frame(
                &mut stream,
                &Answer {
                    error: Some(reason),
                },
            )
            .await?;
            return Ok(());
        }
    };
    let upstream = match proxy::connect_target(&service.target, &peer.network).await {
        Ok(upstream) => upstream,
        Err(e) => {
            let error = Some(format!("{e:#}"));
            proxy::write_frame(&mut stream, &Answer { error }).await?;
            return Err(e);
        }
    };
    phases.mark("connected");
    let _ = upstream.set_nodelay(true);
    proxy::write_frame(&mut stream, &Answer { error: None }).await?;
    let piped = pipe_timed(&mut stream, upstream, &phases).await;
    logged("");
    piped?;
    Ok(())
}

type ServiceGuard<'a> = Option<OpenGuard<'a, String>>;

impl Peer {
    /// May `from` open a stream to `service` now? The service if so, with the
    /// guard of its connection slot; the reason if not, for the consumer to show.
    async fn admit_stream(
        &self,
        from: PeerId,
        service: &str,
    ) -> Result<(LocalService, ServiceGuard<'_>), String> {
        if !self.access.allows(&from, Role::Consume) {
            return Err("this peer may not consume services here".into());
        }
        if let Err(retry) = self.limits.streams.check(&from) {
            let per_s = self.limits.streams.per_s();
            return Err(limits::rate_limited("service streams", per_s, retry));
        }
        let local = self
            .local_services()
            .await
            .map_err(|e| format!("cannot list services here: {e:#}"))?;
        let Some(found) = local.into_iter().find(|s| s.spec.name == service) else {
            return Err(format!("'{service}' is not provided here (any more)"));
        };
        let spec = &found.spec;
        if !spec.allow.is_empty() && !spec.allow.contains(&from.to_string()) {
            return Err(format!(
                "service '{service}' admits only the peers its operator listed (--allow)"
            ));
        }
        let slot = match spec.max_conns {
            None => None,
            Some(max) => match self.limits.service_streams.try_open(&spec.name, max) {
                Some(guard) => Some(guard),
                None => {
                    return Err(format!(
                        "service '{service}' is at its limit of {max} connection(s); try again later"
                    ));
                }
            },
        };
        Ok((found, slot))
    }
}

/// exposed.json as saved by an earlier run; entries an operator broke by hand
/// are refused with the entry's name.
fn parse_exposures(text: &str) -> Result<Vec<Exposure>> {
    let list: Vec<Exposure> = serde_json::from_str(text)?;
    for e in &list {
        let record = ServiceRecord {
            name: e.name.clone(),
            kind: e.kind.clone(),
            ..Default::default()
        };
        record
            .validate()
            .map_err(|why| anyhow!("exposure {:?}: {why}", e.name))?;
        if e.max_conns == Some(0) {
            bail!("exposure {:?}: max_conns 0", e.name);
        }
        if let Some(bad) = e.allow.iter().find(|p| p.parse::<PeerId>().is_err()) {
            bail!("exposure {:?}: allow: {bad:?} is not a peer id", e.name);
        }
    }
    Ok(list)
}

/// Pipes a consumer's connection and its upstream, noting when the upstream's
/// first byte came and when both sides were done.
async fn pipe_timed<A, B>(
    client: &mut A,
    upstream: B,
    phases: &Phases,
) -> std::io::Result<(u64, u64)>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut upstream = proxy::FirstByte::new(upstream);
    let copied = proxy::pipe(client, &mut upstream).await;
    if let Some(at) = upstream.at {
        phases.mark_at("first byte", at);
    }
    phases.mark("closed");
    copied
}

/// Counts a consumer connection's bytes, or says where it broke.
fn account(counters: &Counters, provider: &str, copied: std::io::Result<(u64, u64)>) -> Result<()> {
    *lock(&counters.last_provider) = Some(provider.to_string());
    match copied {
        Ok((up, down)) => {
            Counters::add(&counters.to_service, up);
            Counters::add(&counters.from_service, down);
            Ok(())
        }
        // Bytes have flowed: not retried elsewhere; the client's connection is
        // closed, which is all it can be told.
        Err(e) => Err(anyhow!(
            "the connection through provider {provider} broke mid-stream: {e}"
        )),
    }
}

/// Times a stream the provider dropped before answering is opened again.
const OPEN_RETRIES: u32 = 3;

/// Opens a service stream; a stream reset before the provider's answer is opened
/// again. libp2p-stream drops inbound streams its accept loop is not ready for
/// (a burst of hundreds at once), and nothing of the client's has been sent yet,
/// so a retry is safe. A refusal (an answer with a reason) is not retried.
async fn open_with_retry(
    node: &crate::node::Client,
    peer: PeerId,
    service: &str,
) -> Result<tokio_util::compat::Compat<crate::node::Stream>> {
    let mut streams = node.streams();
    let mut attempt = 0;
    loop {
        match proxy::open(&mut streams, peer, service).await {
            Err(e) if attempt < OPEN_RETRIES && e.downcast_ref::<std::io::Error>().is_some() => {
                attempt += 1;
                tracing::debug!(
                    "stream to {peer} for '{service}' dropped ({e:#}); retry {attempt}"
                );
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            result => return result,
        }
    }
}

/// How many VMs serve the given local services.
fn serving_vms(local: &[LocalService]) -> u32 {
    local
        .iter()
        .filter_map(|s| s.vm.as_ref())
        .collect::<HashSet<_>>()
        .len() as u32
}

fn view_of(c: &Consumption) -> ConsumptionView {
    let k = &c.counters;
    ConsumptionView {
        service: c.service.clone(),
        listen: c.listen.to_string(),
        connections_total: Counters::get(&k.total),
        connections_active: Counters::get(&k.active),
        bytes_to_service: Counters::get(&k.to_service),
        bytes_from_service: Counters::get(&k.from_service),
        errors: Counters::get(&k.errors),
        last_provider: lock(&k.last_provider).clone(),
        last_error: lock(&k.last_error).clone(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposures_file_round_trips_and_bad_entries_are_named() {
        let list = vec![Exposure {
            name: "db".into(),
            kind: "postgres".into(),
            target: "127.0.0.1:5432".into(),
            allow: vec![PeerId::random().to_string()],
            max_conns: Some(2),
        }];
        let text = serde_json::to_string(&list).unwrap();
        assert_eq!(parse_exposures(&text).unwrap(), list);
        let old = r#"[{"name":"db","kind":"tcp","target":"127.0.0.1:1"}]"#;
        assert_eq!(parse_exposures(old).unwrap()[0].max_conns, None);
        let bad = r#"[{"name":"db","kind":"tcp","target":"x","allow":["nope"]}]"#;
        let err = parse_exposures(bad).unwrap_err().to_string();
        assert!(err.contains("\"db\"") && err.contains("nope"), "{err}");
    }

    mod fuzz {
        use super::*;
        use crate::fuzzing::{CASES, config, text_like};
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(config(CASES))]
            /// exposed.json in the data dir.
            #[test]
            fn fuzz_exposures_file(text in text_like(vec![
                format!(r#"[{{"name":"db","kind":"tcp","target":"127.0.0.1:5432","allow":["{}"],"max_conns":3}}]"#, PeerId::random()),
            ])) {
                if let Ok(list) = parse_exposures(&text) {
                    prop_assert!(list.iter().all(|e| e.max_conns != Some(0)));
                }
            }
        }
    }
}
