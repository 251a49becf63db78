//! What this peer provides (its running VMs' services and its exposures), told
//! to the overlay: gossip at once on change and every few seconds, DHT provider
//! records by name and type; and the overlay's services as this peer sees them
//! (the view, a lookup through the DHT).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, anyhow};
use libp2p::PeerId;

use super::{
    LocalService, OverlaySize, Services, Target, announce_every, lock, name_key, near_matches,
    overlay_view, services_of_vms, type_key,
};
use crate::model::{PeerLoad, PeerView, ServiceSpec, ServiceView, VmState, VmView, short_peer_id};
use crate::names::{ServiceName, VmName};
use crate::node::protocol::{Announcement, ServiceRecord};

/// How long a DHT lookup of a service may keep its caller waiting (the old
/// query timeout; the walk itself may go on).
pub const LOOKUP_LIMIT: Duration = Duration::from_secs(10);

impl Services {
    /// Everything this peer provides now: its running VMs' services and its exposures.
    pub async fn local_services(&self) -> Result<Vec<LocalService>> {
        Ok(self.services_of(&self.host.vms()))
    }

    /// The services of these VMs (this peer's, as just listed) and the exposures.
    fn services_of(&self, vms: &[VmView]) -> Vec<LocalService> {
        let mut services = services_of_vms(vms);
        for e in lock(&self.exposures).iter() {
            services.push(LocalService {
                spec: ServiceSpec {
                    name: e.name.as_str().into(),
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

    fn load(&self, running_vms: u32) -> PeerLoad {
        PeerLoad {
            cpu_pct: self.host.host_stats().map_or(0.0, |h| h.cpu_pct),
            vm_cpu_pct: vms_cpu_pct(&self.host.vms()),
            running_vms,
            connections: self.served.load(Ordering::Relaxed) as u32,
        }
    }

    fn records(&self, local: &[LocalService]) -> Vec<ServiceRecord> {
        let mut versions = lock(&self.versions);
        let now = unix_millis();
        let current: HashSet<(ServiceName, Option<VmName>)> = local
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
    pub(super) async fn publish_loop(self: Arc<Self>) {
        let mut size = OverlaySize::default();
        loop {
            let known = size.update(self.catalogue.peer_count(), std::time::Instant::now());
            let every = announce_every(known + 1);
            if let Err(e) = self.publish_once(every).await {
                tracing::debug!("publish: {e:#}");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.republish.notified() => {}
            }
        }
    }

    async fn publish_once(&self, every: Duration) -> Result<()> {
        let vms = self.host.vms();
        let local = self.services_of(&vms);
        let running: Vec<String> = vms
            .iter()
            .filter(|v| v.state == VmState::Running)
            .map(|v| v.name.to_string())
            .collect();
        let records = self.records(&local);
        let keys: HashSet<String> = records
            .iter()
            .flat_map(|r| [name_key(&r.name), type_key(&r.kind)])
            .collect();
        let announcement = Announcement {
            nick: self.nick.clone(),
            load: self.load(running.len() as u32),
            vms: running,
            services: records,
            links: Vec::new(),
            links_unchanged: false,
            seq: 0,
            every_ms: every.as_millis() as u64,
            departed: Vec::new(),
        };
        // Gossip first: it is what other peers see within a second; the DHT
        // records are the slow path for peers gossip missed.
        self.node.announce(announcement).await?;
        let (added, removed) = {
            let mut published = lock(&self.published);
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

    pub fn on_announcement(&self, peer: PeerId, announcement: Announcement) {
        self.catalogue.update(
            peer,
            announcement.services,
            announcement.load,
            Duration::from_millis(announcement.every_ms),
        );
    }

    /// A peer left the overlay (its neighbours said so): its records go at once.
    pub fn on_departed(&self, peer: &PeerId) {
        self.catalogue.remove(peer);
    }

    /// Answer to a peer's `ListServices` (it found us in the DHT).
    pub async fn service_records(&self) -> (Vec<ServiceRecord>, PeerLoad) {
        let local = self.local_services().await.unwrap_or_default();
        (self.records(&local), self.load(serving_vms(&local)))
    }

    /// The overlay's services as this peer sees them.
    pub async fn services_view(&self, peers: &[PeerView]) -> Vec<ServiceView> {
        let local = self.local_services().await.unwrap_or_default();
        let remote = self.catalogue.fresh();
        let info = |id: &PeerId| {
            let id = id.to_string();
            peers
                .iter()
                .find(|p| p.peer_id == id)
                .map(|p| (p.display_name(), p.latency_ms))
                .unwrap_or((short_peer_id(&id), None))
        };
        overlay_view(
            &self.node.local_peer_id().to_string(),
            &self.nick,
            &local,
            &self.load(serving_vms(&local)),
            &remote,
            info,
        )
    }

    /// Looks a service up in the DHT and asks each provider found for details, so a
    /// service is found even when gossip has not reached this peer.
    pub async fn find_service(&self, name: &ServiceName) -> Result<ServiceView> {
        // The DHT walk may go on for a minute on a busy overlay (node/mod.rs);
        // a consumer's next connection or `services find` waits at most this.
        let found = tokio::time::timeout(LOOKUP_LIMIT, self.node.find_providers(&name_key(name)))
            .await
            .unwrap_or(Ok(Vec::new()))?;
        let me = self.node.local_peer_id();
        for peer in found.into_iter().filter(|p| *p != me) {
            match self
                .node
                .request(peer, crate::node::protocol::ControlRequest::ListServices)
                .await
            {
                Ok(crate::node::protocol::ControlResponse::Services { services, load }) => {
                    let valid = valid_records(peer, services);
                    self.catalogue.update(peer, valid, load, Duration::ZERO);
                }
                Ok(crate::node::protocol::ControlResponse::Refused { reason }) => {
                    let reason = crate::node::protocol::peer_text(&reason);
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
            .find(|s| s.name == *name);
        match view {
            Some(view) => Ok(view),
            None => Err(self.unknown_service(name).await),
        }
    }

    pub(super) async fn unknown_service(&self, name: &str) -> anyhow::Error {
        let local = self.local_services().await.unwrap_or_default();
        let remote = self.catalogue.fresh();
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

    /// True once this peer has heard of a provider of `name` elsewhere.
    pub fn knows_service(&self, name: &ServiceName) -> bool {
        !self.catalogue.providers(name).is_empty()
    }
}

/// CPU the running VMs use, % of the host's CPUs: announced in the load (the
/// on-demand provision policy's signal, migrate/provision.rs).
pub fn vms_cpu_pct(vms: &[VmView]) -> f64 {
    vms.iter()
        .filter(|vm| vm.state == VmState::Running)
        // An unknown figure (no CPU counter) adds nothing rather than a guess.
        .filter_map(|vm| vm.stats.as_ref().and_then(|s| s.cpu_pct_host))
        .fold(0.0, |sum, pct| sum + pct) // (an empty f64 sum is -0.0)
        .clamp(0.0, 100.0)
}

/// How many VMs serve the given local services.
fn serving_vms(local: &[LocalService]) -> u32 {
    local
        .iter()
        .filter_map(|s| s.vm.as_ref())
        .collect::<HashSet<_>>()
        .len() as u32
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The records of a `ListServices` answer from `peer` that validate; the others
/// are dropped with a log line.
pub fn valid_records(peer: PeerId, records: Vec<ServiceRecord>) -> Vec<ServiceRecord> {
    records
        .into_iter()
        .filter(|s| match s.validate() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("dropped a malformed record from {peer}: {e}");
                false
            }
        })
        .collect()
}
