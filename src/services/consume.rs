//! `peervisor consume`: a local listener per consumed service; each connection
//! goes to the best provider (this peer's own, or other peers' raced: `hedge`)
//! and is piped through the overlay, with its counters for `status`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use libp2p::PeerId;
use tokio::net::{TcpListener, TcpStream};

use super::proxy::{self, Counters};
use super::serve::pipe_timed;
use super::{Provider, Services, Target, hedge, lock, rank};
use crate::model::ConsumptionView;
use crate::names::ServiceName;
use crate::phases::Phases;

/// Providers tried for one consumer connection before giving up.
const MAX_ATTEMPTS: usize = 3;

pub(super) struct Consumption {
    service: ServiceName,
    listen: SocketAddr,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

enum Candidate {
    Local(Target),
    /// Another peer, and how long its stream may take to open before the next
    /// provider is tried as well (see services::hedge).
    Remote(hedge::Candidate<PeerId>),
}

impl Services {
    /// Where the next connection to `service` should go, best first.
    async fn candidates(&self, service: &ServiceName) -> Vec<Candidate> {
        let mut out = Vec::new();
        if let Ok(local) = self.local_services().await
            && let Some(s) = local.into_iter().find(|s| s.spec.name == *service)
        {
            out.push(Candidate::Local(s.target));
        }
        let mut remote: Vec<Provider> = self.catalogue.providers(service);
        if remote.is_empty() && out.is_empty() && self.find_service(service).await.is_ok() {
            remote = self.catalogue.providers(service);
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
        let spread = self.spread.fetch_add(1, Ordering::Relaxed);
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
            if self.catalogue.unreachable(&p.peer) {
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
        service: &ServiceName,
        port: Option<u16>,
        bind: Option<&str>,
    ) -> Result<ConsumptionView> {
        if lock(&self.consumptions)
            .iter()
            .any(|c| c.service == *service)
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
        let view = self
            .listen_for(service, SocketAddr::new(ip, port.unwrap_or(0)))
            .await?;
        self.save_consumptions();
        Ok(view)
    }

    /// A listener on `addr` whose connections go to `service`.
    async fn listen_for(
        self: &Arc<Self>,
        service: &ServiceName,
        addr: SocketAddr,
    ) -> Result<ConsumptionView> {
        let listener = TcpListener::bind(addr).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => anyhow!("{addr} is in use: pick another --local-port"),
            _ => anyhow!("cannot listen on {addr}: {e}"),
        })?;
        let listen = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(self.clone().serve_consumers(
            listener,
            service.clone(),
            counters.clone(),
        ));
        let consumption = Consumption {
            service: service.clone(),
            listen,
            counters,
            task,
        };
        let view = view_of(&consumption);
        lock(&self.consumptions).push(consumption);
        tracing::info!("consuming '{service}' on {listen}");
        Ok(view)
    }

    /// Listens again on the addresses of the consumptions an earlier run kept
    /// (before any provider is known: each connection looks its providers up).
    pub(super) async fn restore_consumptions(self: Arc<Self>) {
        for saved in super::consumed::load(&self.consumptions_file) {
            if let Err(e) = self.listen_for(&saved.service, saved.listen).await {
                tracing::warn!("consumption of '{}' not restored: {e:#}", saved.service);
            }
        }
    }

    /// Keeps the consumptions for the next run (as exposures are).
    fn save_consumptions(&self) {
        let list: Vec<super::consumed::Saved> = lock(&self.consumptions)
            .iter()
            .map(|c| super::consumed::Saved {
                service: c.service.clone(),
                listen: c.listen,
            })
            .collect();
        if let Err(e) = super::consumed::save(&self.consumptions_file, &list) {
            tracing::warn!("{e:#}");
        }
    }

    pub fn unconsume(&self, service: &ServiceName) -> Result<String> {
        let mut list = lock(&self.consumptions);
        let Some(pos) = list.iter().position(|c| c.service == *service) else {
            bail!("service '{service}' is not consumed here");
        };
        list.remove(pos).task.abort();
        drop(list);
        self.save_consumptions();
        Ok(format!("stopped consuming '{service}'"))
    }

    pub fn consumption_views(&self) -> Vec<ConsumptionView> {
        lock(&self.consumptions).iter().map(view_of).collect()
    }

    async fn serve_consumers(
        self: Arc<Self>,
        listener: TcpListener,
        service: ServiceName,
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
            let services = self.clone();
            let service = service.clone();
            let counters = counters.clone();
            tokio::spawn(async move {
                Counters::add(&counters.total, 1);
                Counters::add(&counters.active, 1);
                if let Err(e) = services.forward(client, &service, &counters).await {
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
        service: &ServiceName,
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
            let provider = self.nick.clone();
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
            self.catalogue.mark_unreachable(*peer);
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
/// How long a connection waits for the DHT to say where a provider is.
const LOCATE_LIMIT: Duration = Duration::from_secs(10);

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
    let mut located = false;
    loop {
        match proxy::open(&mut streams, peer, service).await {
            Err(e) if attempt < OPEN_RETRIES && e.downcast_ref::<std::io::Error>().is_some() => {
                attempt += 1;
                tracing::debug!(
                    "stream to {peer} for '{service}' dropped ({e:#}); retry {attempt}"
                );
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            // A provider heard of by gossip or found in the DHT may be one this
            // node never connected to: libp2p has no address to dial. Find where
            // it is (a DHT walk towards its id), then try once more.
            Err(e) if !located && format!("{e:#}").contains("no addresses for peer") => {
                located = true;
                tracing::debug!("no address for {peer} yet: asking the DHT where it is");
                if !node.locate(peer, LOCATE_LIMIT).await {
                    return Err(e);
                }
            }
            result => return result,
        }
    }
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
