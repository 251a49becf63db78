//! A running peer: the node, the hypervisor and the control API wired together,
//! and the features that do the work, each holding the handles it needs: `Vms`
//! (vms/), `Services` (services/), `Migrations`, `Replications` and the
//! provision policy (migrate/), the job collector (jobs/), `Invitations` (join/). `Peer` starts them
//! (`start.rs`) and routes control requests, other peers' requests and gossip to
//! them; it does none of their work. Used by the headless `peervisor node` and by
//! the console's embedded node.

mod console;
mod start;
pub mod updates;

pub use start::start_serving;

#[cfg(test)]
pub(crate) mod fuzz;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use libp2p::{Multiaddr, PeerId};

use crate::admission::access::{AccessList, DEFAULT_ROLE};
use crate::admission::limits::{self, LimitsConfig, PeerLimits};
use crate::api::Role;
use crate::control::{Reply, Request};
use crate::hypervisor::Host;
use crate::hypervisor::accel::{Accel, AccelChoice};
use crate::hypervisor::manifest::VmManifest;
use crate::jobs::collector::Collector;
use crate::join::node::Invitations;
use crate::migrate::Migrations;
use crate::migrate::capacity::{Capacity, CapacityFlags, VmRequirements};
use crate::migrate::operations::Operations;
use crate::migrate::outgoing::Limits;
pub use crate::migrate::provision::ProvisionPolicy;
use crate::migrate::replicate::Replications;
use crate::model::{HypervisorOrigin, LocalPeer, NicSource, PeerView, Status, VmView};
use crate::names::{PeerRef, VmName, peer_id_of};
use crate::node::protocol::{
    ControlRequest, ControlResponse, MAX_FIGURES, MAX_FIGURES_HISTORY, MAX_FOLLOWED,
};
use crate::node::{self, Client, Event};
use crate::paths::DataDir;
use crate::services::Services;
use crate::vms::Vms;
use crate::vms::remote::RemoteVms;

/// Everything needed to start a peer.
pub struct PeerConfig {
    pub data_dir: DataDir,
    pub nick: String,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub network_key: Option<crate::node::identity::NetworkKeySource>,
    pub mdns: bool,
    /// Relaying for others and through others (NAT).
    pub relay: node::RelayConfig,
    /// A private libvirt daemon for this peer, or an existing libvirt.
    pub hypervisor: crate::hypervisor::choice::HypervisorChoice,
    /// `--default-network` / `--default-bridge`: where new VMs' NICs go unless
    /// their manifest says.
    pub default_network: Option<String>,
    pub default_bridge: Option<String>,
    pub accel: AccelChoice,
    /// Network namespace holding the guests' bridge.
    pub guest_netns: String,
    pub image_dir: PathBuf,
    /// Whether other peers may live-migrate VMs into this host.
    pub accept_migrations: bool,
    /// `--migration-transport`: how migrations' data goes (migrate/transport.rs).
    pub migration_transport: crate::migrate::transport::TransportChoice,
    /// On-demand provision (`--provision`), off by default.
    pub provision: ProvisionPolicy,
    /// Stats sampling interval and history length.
    pub sampling: crate::hypervisor::sampler::SamplerConfig,
    /// Job sources to poll (`--yarn`, `--spark`).
    pub yarn: Vec<String>,
    pub spark: Vec<String>,
    /// What this host lends to incoming VMs, parallel migrations (`--lend-*`,
    /// `--max-migrations`; unset ones from capacity.toml or the host).
    pub capacity: CapacityFlags,
    /// Per-peer rate limits on control requests and service streams.
    pub limits: LimitsConfig,
    /// Caps on overlay connections (`--max-connections*`).
    pub connections: node::ConnectionCaps,
}

impl PeerConfig {
    /// A peer in-process on libvirt's test driver (no daemon, no guests), on
    /// `port` of loopback, alone and without a network key: what benchmarks
    /// and fuzz targets change with struct update syntax.
    pub fn on_test_driver(data_dir: DataDir, nick: &str, port: u16) -> PeerConfig {
        let image_dir = data_dir.root().join("images");
        PeerConfig {
            data_dir,
            nick: nick.to_string(),
            listen: vec![
                format!("/ip4/127.0.0.1/tcp/{port}")
                    .parse()
                    .expect("a multiaddr"),
            ],
            bootstrap: Vec::new(),
            network_key: None,
            mdns: false,
            relay: Default::default(),
            hypervisor: crate::hypervisor::choice::HypervisorChoice::existing("test:///default"),
            default_network: None,
            default_bridge: None,
            accel: AccelChoice::Force(crate::hypervisor::accel::Accel::Tcg),
            guest_netns: "unused".into(),
            image_dir,
            accept_migrations: false,
            migration_transport: Default::default(),
            provision: Default::default(),
            sampling: Default::default(),
            yarn: Vec::new(),
            spark: Vec::new(),
            capacity: Default::default(),
            limits: Default::default(),
            connections: Default::default(),
        }
    }
}

/// A running peer: what `status` shows of it and the features it routes to.
pub struct Peer {
    nick: String,
    data_dir: DataDir,
    node: Client,
    host: Host,
    /// Private daemon, or an existing libvirt and who named it (for `status`).
    hypervisor_origin: HypervisorOrigin,
    accel: Accel,
    /// Roles other peers have here (`peervisor peers`).
    access: Arc<AccessList>,
    /// Per-peer rates; the control requests of other peers are checked here.
    limits: Arc<PeerLimits>,
    /// What this host lends, for `status`.
    capacity: Arc<Capacity>,
    /// Migrations and replications under way and recent, for `status`.
    operations: Arc<Operations>,
    vms: Arc<Vms>,
    services: Arc<Services>,
    migrations: Arc<Migrations>,
    replications: Arc<Replications>,
    /// Invitations to join the overlay and this host's trust group.
    invitations: Arc<Invitations>,
    /// YARN/Spark jobs and the penalty benchmark, polled off the status path.
    jobs: Collector,
    /// The node's state pushed to consoles.
    updates: updates::Publisher,
    /// Other peers' VMs: figures for consoles, requests passed on.
    remote: Arc<RemoteVms>,
}

impl Peer {
    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    /// This peer's part in services (the service benchmarks drive it directly).
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Answers one control API request: each goes to the feature that does it.
    pub async fn handle(self: &Arc<Self>, request: Request) -> Result<Reply> {
        if let Some((host, host_name)) = self.remote_host_of(&request).await {
            return self.on_remote_host(host, &host_name, request).await;
        }
        match request {
            Request::Status => Ok(Reply::Status(Box::new(self.status().await?))),
            Request::Subscribe => anyhow::bail!("updates are streamed on the control socket only"),
            Request::VmConsole { .. } => {
                anyhow::bail!("a console is attached on the control socket only")
            }
            Request::VmList => Ok(Reply::Vms {
                vms: self.vms.list().await?,
            }),
            Request::VmStats { name } => Ok(Reply::Vms {
                vms: vec![self.vm_stats(name).await?],
            }),
            Request::VmBootLog { name } => self.boot_log(name).await.map(Reply::BootLog),
            Request::Watch { vms } => {
                self.remote.watch(vms);
                Ok(done(String::new()))
            }
            Request::VmCreate {
                name,
                vcpus,
                memory_mib,
                image,
                services,
                data_disk_mib,
                nic,
                disk,
                no_overlay,
                user_data,
            } => {
                let (network, bridge) = match nic {
                    Some(NicSource::Network(n)) => (Some(n), None),
                    Some(NicSource::Bridge(b)) => (None, Some(b)),
                    Some(NicSource::GuestBridge) | None => (None, None),
                };
                let manifest = VmManifest {
                    name: name.into(),
                    vcpus,
                    memory_mib,
                    data_disk_mib,
                    image: Some(image),
                    network,
                    bridge,
                    disk,
                    overlay: !no_overlay,
                    cloud_init: None,
                    services: services.iter().map(Into::into).collect(),
                };
                self.vms.create(&manifest, user_data).await.map(done)
            }
            Request::VmAdopt { name, services } => self.vms.adopt(&name, services).await.map(done),
            Request::VmRelease { name } => self.vms.release(&name).await.map(done),
            Request::VmStart { name, foreign } => self.vms.start(&name, foreign).await.map(done),
            Request::VmStop {
                name,
                force,
                timeout_s,
                foreign,
            } => self
                .vms
                .stop(&name, force, timeout_s, foreign)
                .await
                .map(done),
            Request::VmPause { name, foreign } => self.vms.pause(&name, foreign).await.map(done),
            Request::VmResume { name, foreign } => self.vms.resume(&name, foreign).await.map(done),
            Request::VmRemove { name, foreign } => self.vms.remove(&name, foreign).await.map(done),
            Request::Migrate {
                vm,
                to,
                max_downtime_ms,
                bandwidth_mib_s,
                foreign,
                detach,
            } => {
                let limits = Limits {
                    max_downtime_ms,
                    bandwidth_mib_s,
                };
                self.migrations
                    .migrate_request(vm, to, limits, foreign, detach)
                    .await
            }
            Request::MigrateAbort { vm } => self.migrations.abort(&vm).await.map(done),
            Request::Replicate {
                vm,
                to,
                name,
                detach,
            } => {
                self.replications
                    .replicate_request(vm, to, name, detach)
                    .await
            }
            Request::Services => {
                let peers = self.node.status().await?.peers;
                Ok(Reply::Services {
                    services: self.services.services_view(&peers).await,
                })
            }
            Request::Find { name } => Ok(Reply::Services {
                services: vec![self.services.find_service(&name).await?],
            }),
            Request::Consume {
                service,
                local_port,
                bind,
            } => Ok(Reply::Consuming(
                self.services
                    .consume(&service, local_port, bind.as_deref())
                    .await?,
            )),
            Request::Unconsume { service } => self.services.unconsume(&service).map(done),
            Request::Expose {
                name,
                target,
                kind,
                allow,
                max_conns,
            } => {
                let mut peers = Vec::new();
                for query in &allow {
                    let id = self.peer_id_for(query).await;
                    peers.push(id.with_context(|| format!("--allow {query}"))?);
                }
                self.services
                    .expose(&name, &target, kind.as_deref(), peers, max_conns)
                    .await
                    .map(done)
            }
            Request::Unexpose { name } => self.services.unexpose(&name).map(done),
            Request::PeersAllow { peer, role } => {
                self.access.set(self.peer_id_for(&peer).await?, role)?;
                Ok(done(format!("peer {peer} may now {role} on this host")))
            }
            Request::PeersForget { peer } => Ok(done(
                if self.access.remove(&self.peer_id_for(&peer).await?)? {
                    format!("grant of {peer} removed: it has the default role ({DEFAULT_ROLE})")
                } else {
                    format!("{peer} had no grant")
                },
            )),
            Request::Invite {
                role,
                expires_s,
                addresses,
            } => {
                let expires = std::time::Duration::from_secs(expires_s);
                self.invitations.invite(role, expires, addresses).await
            }
            Request::InviteRevoke { id } => self.invitations.revoke(&id),
            Request::InviteList => self.invitations.list(),
            Request::PeersList => Ok(Reply::Grants {
                grants: self
                    .access
                    .list()
                    .into_iter()
                    .map(|(peer, role)| (peer, role.to_string()))
                    .collect(),
                default_role: DEFAULT_ROLE.to_string(),
            }),
        }
    }

    /// A VM here, or on the peer that announces it (its figures asked of it).
    async fn vm_stats(&self, name: VmName) -> Result<VmView> {
        if !self.vms.hosts(&name) {
            let peers = self.node.status().await?.peers;
            if let Some(host) = announcing(&peers, &name) {
                let vms = self
                    .remote
                    .fetch_from(&host.peer_id, vec![name.clone()], true)
                    .await
                    .with_context(|| format!("figures of {name} from {}", host.display_name()))?
                    .vms;
                return vms
                    .into_iter()
                    .next()
                    .with_context(|| format!("{} no longer has {name}", host.display_name()));
            }
        }
        self.vms.stats(&name).await
    }

    /// The end of a VM's boot log here, or asked of the peer that announces it.
    async fn boot_log(&self, name: VmName) -> Result<crate::api::BootLog> {
        if !self.vms.hosts(&name) {
            let peers = self.node.status().await?.peers;
            if let Some(host) = announcing(&peers, &name) {
                let id = crate::names::peer_id_of(host)?;
                return self
                    .remote
                    .boot_log(id, &name)
                    .await
                    .with_context(|| format!("boot log of {name} from {}", host.display_name()));
            }
            anyhow::bail!("no VM named '{name}' here or on a connected peer");
        }
        crate::vms::boot_log::read(&name, &self.nick).await
    }

    /// The host of the VM a request acts on, when that is another peer that
    /// announces it (a VM of this name here is always the one meant).
    async fn remote_host_of(&self, request: &Request) -> Option<(PeerId, String)> {
        let vm = VmName::from(request.vm()?);
        if !request.is_vm_action() || self.vms.hosts(&vm) {
            return None;
        }
        let peers = self.node.status().await.ok()?.peers;
        let host = announcing(&peers, &vm)?;
        Some((host.peer_id.parse().ok()?, host.display_name()))
    }

    /// A request on a VM another peer hosts, passed on to it. A migration or
    /// replication is answered by the host once it began (the overlay's
    /// request timeout is shorter than either) and followed from here by its
    /// id (the operations pane shows it); one the operator waits for
    /// (`migrate --wait`, `replicate`) is answered here at its end.
    async fn on_remote_host(
        &self,
        host: PeerId,
        host_name: &str,
        request: Request,
    ) -> Result<Reply> {
        let what = request.describe();
        let context = || format!("{what} on {host_name}");
        let wait = matches!(
            request,
            Request::Migrate { detach: false, .. } | Request::Replicate { detach: false, .. }
        );
        let request = self.for_remote_host(request).await?;
        let reply = self.remote.act(host, request).await.with_context(context)?;
        match self.remote.follow(host, host_name, &reply) {
            Some(id) if wait => self.remote.wait_for(host, id).await.with_context(context),
            _ => Ok(reply),
        }
    }

    /// A request as the VM's host must read it: the destination as a peer id
    /// (nicknames are this peer's view; this peer itself included), and a
    /// migration or replication answered once it began.
    async fn for_remote_host(&self, mut request: Request) -> Result<Request> {
        match &mut request {
            Request::Migrate { to, detach, .. } | Request::Replicate { to, detach, .. } => {
                *to = self.peer_ref_for_others(to).await?;
                *detach = true;
            }
            _ => {}
        }
        Ok(request)
    }

    async fn peer_ref_for_others(&self, peer: &PeerRef) -> Result<PeerRef> {
        let me = self.node.local_peer_id().to_string();
        if peer.as_str() == self.nick || peer.as_str() == me {
            return Ok(PeerRef::from(me));
        }
        Ok(PeerRef::from(self.peer_id_for(peer).await?.to_string()))
    }

    /// Another peer's request on a VM here: only with the control role, only
    /// for a VM this host has; refused with a reason naming host and role.
    async fn act_for_peer(self: &Arc<Self>, peer: PeerId, request: Request) -> ControlResponse {
        let refuse = |reason: String| ControlResponse::Refused { reason };
        let what = request.describe();
        let Some(vm) = request.vm().filter(|_| request.is_vm_action()) else {
            return refuse(format!("{}: {what} is not asked of other peers", self.nick));
        };
        if !self.access.allows(&peer, Role::Control) {
            let who = self.node.peer_label(peer).await;
            tracing::warn!("refused {what} asked by {who}: no control role");
            return refuse(format!(
                "{host} refuses {what} to {who}: {who} lacks the control role on {host} (its operator can run `peervisor peers allow {peer} --role control`)",
                host = self.nick
            ));
        }
        if !self.vms.hosts(&VmName::from(vm)) {
            return refuse(format!("{} has no VM '{vm}'", self.nick));
        }
        tracing::info!("{what} asked by {}", self.node.peer_label(peer).await);
        match self.handle(request).await {
            Ok(reply) => ControlResponse::Acted { reply },
            Err(e) => refuse(format!("{}: {e:#}", self.nick)),
        }
    }

    /// Answers another peer's request over the overlay.
    async fn answer_peer(
        self: &Arc<Self>,
        peer: PeerId,
        request: ControlRequest,
    ) -> ControlResponse {
        match request {
            ControlRequest::VmFigures { mut vms, history } => {
                // Every member observes; the check stays should a lower role come.
                if !self.access.allows(&peer, Role::Observe) {
                    return ControlResponse::Refused {
                        reason: format!("{} refuses figures: no observe role", self.nick),
                    };
                }
                vms.truncate(MAX_FIGURES);
                let keep = history.then_some(MAX_FIGURES_HISTORY);
                let operations = self.operations.concerning(&vms);
                let (round, vms) = self.vms.figures(&vms, keep);
                ControlResponse::VmFigures {
                    vms,
                    round,
                    operations,
                }
            }
            ControlRequest::VmAction { request } => self.act_for_peer(peer, request).await,
            ControlRequest::Operations { mut ids } => {
                // Every member observes; the check stays should a lower role come.
                if !self.access.allows(&peer, Role::Observe) {
                    return ControlResponse::Refused {
                        reason: format!("{} refuses operations: no observe role", self.nick),
                    };
                }
                ids.truncate(MAX_FOLLOWED);
                ControlResponse::Operations {
                    operations: self.operations.by_ids(&ids),
                }
            }
            ControlRequest::VmBootLog { vm } => {
                let refuse = |reason| ControlResponse::Refused { reason };
                if !self.access.allows(&peer, Role::Observe) {
                    return refuse(format!(
                        "{} refuses the boot log of {vm}: no observe role",
                        self.nick
                    ));
                }
                let vm = VmName::from(vm);
                if !self.vms.hosts(&vm) {
                    return refuse(format!("{} has no VM '{vm}'", self.nick));
                }
                match crate::vms::boot_log::read(&vm, &self.nick).await {
                    Ok(log) => ControlResponse::BootLog { log },
                    Err(e) => refuse(format!("{e:#}")),
                }
            }
            ControlRequest::PrepareMigration {
                vm,
                uuid,
                vcpus,
                memory_mib,
                disk_mib,
                boot_files,
                disks,
                address,
            } => {
                let requirements = VmRequirements {
                    name: vm.into(),
                    uuid,
                    vcpus,
                    memory_mib,
                    disk_mib,
                    boot_files: boot_files.into_iter().map(PathBuf::from).collect(),
                };
                self.migrations
                    .prepare_incoming(peer, requirements, disks, address)
                    .await
            }
            ControlRequest::MigrationEnded { token, ok, error } => {
                self.migrations.incoming_ended(peer, token, ok, error).await
            }
            ControlRequest::ListServices => {
                let (services, load) = self.services.service_records().await;
                ControlResponse::Services { services, load }
            }
            ControlRequest::VmState { vm, uuid } => {
                self.migrations.vm_state_for(peer, &vm, &uuid).await
            }
            // The node answers these itself; one that gets here is answered empty.
            ControlRequest::Snapshot { .. } => ControlResponse::Snapshot {
                announcements: Vec::new(),
                more: false,
                departed: Vec::new(),
            },
            ControlRequest::Digest => ControlResponse::Digest {
                digest: 0,
                buckets: Vec::new(),
            },
            ControlRequest::Trimming => ControlResponse::Ack,
            ControlRequest::Redeem { secret } => self.invitations.answer_redeem(peer, &secret),
            ControlRequest::GroupMembers { members } => {
                self.invitations.answer_group_members(peer, &members)
            }
        }
    }

    /// Other peers' requests (each checked against its sender's control rate
    /// first) and gossip, as the node hears them.
    async fn handle_node_events(self: Arc<Self>, mut events: tokio::sync::mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            match event {
                Event::InboundRequest {
                    peer,
                    request,
                    channel,
                } => {
                    if let Err(retry) = self.limits.control.check(&peer) {
                        let reason = limits::rate_limited(
                            "control requests",
                            self.limits.control.per_s(),
                            retry,
                        );
                        if self.limits.log_refusal(&peer) {
                            tracing::warn!("control request from {peer} refused: {reason}");
                        }
                        let refused = ControlResponse::Refused { reason };
                        if let Err(e) = self.node.respond(channel, refused).await {
                            tracing::warn!("answering {peer}: {e:#}");
                        }
                        continue;
                    }
                    let this = self.clone();
                    tokio::spawn(async move {
                        let response = this.answer_peer(peer, request).await;
                        if let Err(e) = this.node.respond(channel, response).await {
                            tracing::warn!("answering {peer}: {e:#}");
                        }
                    });
                }
                Event::Announcement { peer, announcement } => {
                    self.services.on_announcement(peer, announcement);
                }
                Event::Departed { peer } => self.services.on_departed(&peer),
            }
        }
    }

    /// A one-shot snapshot (`peervisor status`): the node's state with the
    /// latest figures, other peers' VMs' asked of their hosts now.
    pub async fn status(&self) -> Result<Status> {
        let mut status = self.node_state().await?;
        status.local.host = self.host.host_stats();
        self.host.annotate(&mut status.vms);
        status.remote_vms = self.remote.fetch_all(&status.peers).await;
        status.control_traffic = self.node.control_traffic();
        Ok(status)
    }

    /// Everything but the figures (VMs' stats and history, host stats): what
    /// the node's own clock publishes. Waits on the swarm.
    pub(crate) async fn node_state(&self) -> Result<Status> {
        let net = self.node.status().await?;
        let vms = self.vms.views();
        let services = self.services.services_view(&net.peers).await;
        let mut status = Status {
            local: LocalPeer {
                peer_id: self.node.local_peer_id().to_string(),
                nick: self.nick.clone(),
                listen_addrs: net.listen_addrs,
                hypervisor: self.host.uri().to_string(),
                hypervisor_origin: self.hypervisor_origin,
                accel: self.accel.to_string(),
                host: None,
                lending: Some(self.capacity.view(&vms)),
                libvirt: self.host.link(),
                reachability: net.reachability,
            },
            peers: net.peers,
            vms,
            remote_vms: self.remote.views(),
            operations: self
                .operations
                .list()
                .into_iter()
                .chain(self.remote.operations())
                .collect(),
            dial_errors: net.dial_errors,
            services,
            consumptions: self.services.consumption_views(),
            ..Status::default()
        };
        self.jobs.fill(&mut status);
        Ok(status)
    }

    pub async fn connected_peers(&self) -> usize {
        self.node
            .status()
            .await
            .map(|s| s.peers.iter().filter(|p| p.connected).count())
            .unwrap_or(0)
    }

    /// A peer id as typed, or the id of a known peer by nickname or id prefix.
    async fn peer_id_for(&self, peer: &PeerRef) -> Result<PeerId> {
        if let Some(id) = peer.peer_id() {
            return Ok(id);
        }
        let peers = self.node.status().await?.peers;
        peer_id_of(&peer.resolve(&peers)?)
    }
}

/// The connected peer that announces a VM of this name.
fn announcing<'a>(peers: &'a [PeerView], vm: &VmName) -> Option<&'a PeerView> {
    peers
        .iter()
        .filter(|p| p.connected)
        .find(|p| p.vms.as_ref().is_some_and(|vms| vms.contains(vm)))
}

fn done(message: String) -> Reply {
    Reply::Done { message }
}
