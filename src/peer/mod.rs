//! A running peer: the node, the hypervisor and the control API wired together.
//! Used by the headless `peervisor node` and by the console's embedded node.

pub mod access;
pub mod capacity;
pub mod health;
pub mod limits;
pub mod operations;
pub mod peers;
pub mod phases;
pub mod updates;
pub mod vms;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use libp2p::Multiaddr;

use crate::control::server::Answer;
use crate::control::{Reply, Request};
use crate::hypervisor::accel::{Accel, AccelChoice};
use crate::hypervisor::daemon::{DaemonConfig, PrivateDaemon};
use crate::hypervisor::manifest::{ManifestService, VmManifest};
use crate::hypervisor::netns::GuestNetwork;
use crate::hypervisor::{Host, local_socket_for};
use crate::migrate::incoming::TunnelGrants;
pub use crate::migrate::provision::ProvisionPolicy;
use crate::model::{LocalPeer, Status};
use crate::node::protocol::{ControlRequest, ControlResponse};
use crate::node::{self, Client, Event, NodeConfig};
use crate::paths::{DataDir, disk_dir};
use operations::Operations;
use vms::remove_vm_files;

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
    /// `None`: start a private libvirt daemon for this peer.
    pub hypervisor: Option<String>,
    pub accel: AccelChoice,
    /// Network namespace holding the guests' bridge.
    pub guest_netns: String,
    pub image_dir: PathBuf,
    /// Whether other peers may live-migrate VMs into this host.
    pub accept_migrations: bool,
    /// On-demand provision (`--provision`), off by default.
    pub provision: ProvisionPolicy,
    /// Stats sampling interval and history length.
    pub sampling: crate::hypervisor::sampler::SamplerConfig,
    /// Job sources to poll (`--yarn`, `--spark`).
    pub yarn: Vec<String>,
    pub spark: Vec<String>,
    /// What this host lends to incoming VMs, parallel migrations (`--lend-*`,
    /// `--max-migrations`; unset ones from capacity.toml or the host).
    pub capacity: capacity::CapacityFlags,
    /// Per-peer rate limits on control requests and service streams.
    pub limits: limits::LimitsConfig,
    /// Caps on overlay connections (`--max-connections*`).
    pub connections: node::ConnectionCaps,
}

pub struct Peer {
    pub(crate) config: PeerConfig,
    pub(crate) node: Client,
    pub(crate) host: Host,
    pub(crate) accel: Accel,
    /// Path of the unix socket of the local libvirt, where migration tunnels end.
    pub(crate) libvirt_socket: PathBuf,
    pub(crate) network: GuestNetwork,
    pub(crate) operations: Operations,
    pub(crate) health: health::Health,
    pub(crate) services: crate::services::ServiceState,
    pub(crate) grants: TunnelGrants,
    /// Consumer streams for VMs migrating away: held, then forwarded.
    pub(crate) handovers: crate::migrate::handover::Handovers,
    pub(crate) access: access::AccessList,
    /// What this host lends to incoming VMs, and the parallel migration limit.
    pub(crate) capacity: capacity::CapacityConfig,
    /// Incoming VMs accepted but not yet here.
    pub(crate) capacity_reservations: capacity::Reservations,
    pub(crate) limits: limits::PeerLimits,
    /// YARN/Spark jobs and the penalty benchmark, polled off the status path.
    pub(crate) bench: crate::jobs::collector::Collector,
    /// The node's state pushed to consoles.
    pub(crate) updates: updates::Publisher,
}

/// Starts a peer and serves its control socket.
pub async fn start_serving(config: PeerConfig) -> Result<Arc<Peer>> {
    config
        .data_dir
        .create()
        .with_context(|| format!("creating {}", config.data_dir.root().display()))?;
    // Bind first: a second node on the same data dir must fail before touching anything.
    let listener = crate::control::server::bind(&config.data_dir.control_socket()).await?;
    let peer = Peer::start(config).await?;
    let handler_peer = peer.clone();
    let handler = Arc::new(move |request: Request| {
        let peer = handler_peer.clone();
        async move {
            match request {
                Request::Subscribe => peer.subscribe().await.map(Answer::Updates),
                request => peer.handle(request).await.map(Answer::Reply),
            }
        }
    });
    tokio::spawn(crate::control::server::serve(listener, handler));
    Ok(peer)
}

impl Peer {
    /// Starts the hypervisor (a private libvirtd unless one was given), the node,
    /// and the background tasks. Returns once the peer can serve requests.
    pub async fn start(config: PeerConfig) -> Result<Arc<Peer>> {
        config
            .data_dir
            .create()
            .with_context(|| format!("creating data dir {}", config.data_dir.root().display()))?;
        if config.provision.enabled {
            config
                .provision
                .validate()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        // Bad source URLs fail here, before anything is started.
        let bench = crate::jobs::collector::Collector::start(
            &config.yarn,
            &config.spark,
            config.data_dir.root().join("bench"),
        )?;
        let capacity = capacity::CapacityConfig::resolve(
            config.capacity,
            &config.data_dir.root().join("capacity.toml"),
            capacity::Lending::host_defaults(&disk_dir()),
        )?;
        let lent = capacity.lending;
        tracing::info!(
            "lending incoming VMs {} vCPUs, {} memory, {} disk; at most {} migration(s) each way at once",
            lent.vcpus,
            capacity::fmt_mib(lent.memory_mib),
            capacity::fmt_mib(lent.disk_mib),
            capacity.max_migrations
        );
        match limits::raise_fd_limit() {
            Ok(n) => tracing::debug!("open file limit {n}"),
            Err(e) => tracing::warn!("cannot raise the open file limit: {e}"),
        }
        let (accel, why) = config.accel.resolve();
        tracing::info!("accelerator {why}");

        let network = GuestNetwork::named(&config.guest_netns);
        let (daemon, uri, libvirt_socket) = match &config.hypervisor {
            Some(uri) => (None, uri.clone(), local_socket_for(uri)),
            None => {
                let net = network.clone();
                tokio::task::spawn_blocking(move || net.ensure())
                    .await?
                    .context("setting up the guest network namespace")?;
                let daemon_config = DaemonConfig {
                    dir: config.data_dir.libvirt_dir(),
                    netns: network.netns.clone(),
                    bridge_ip: network.gateway,
                    migration_ports: migration_ports_for(&config.data_dir),
                };
                let daemon =
                    tokio::task::spawn_blocking(move || PrivateDaemon::start(&daemon_config))
                        .await??;
                let (uri, socket) = (daemon.uri(), daemon.socket_path().to_path_buf());
                (Some(daemon), uri, socket)
            }
        };
        let host = match daemon {
            Some(daemon) => Host::open_private(daemon, config.sampling).await?,
            None => Host::open_with(&uri, config.sampling).await?,
        };
        tracing::info!("hypervisor {uri}");
        host.keep_list_fresh().await;
        let warm = host.clone();
        tokio::spawn(async move { warm.warm_up().await });
        // A node that died mid-replication left its VM writing to an overlay.
        let thaw = host.clone();
        tokio::spawn(async move { thaw.thaw_leftover_overlays().await });

        let dir = config.data_dir.root();
        let keypair = node::identity::load_or_create_identity(dir)?;
        let network_key =
            node::identity::load_or_create_network_key(dir, config.network_key.as_ref())?;
        let (client, events) = node::start(NodeConfig {
            keypair,
            network_key,
            nick: config.nick.clone(),
            listen: config.listen.clone(),
            bootstrap: config.bootstrap.clone(),
            mdns: config.mdns,
            relay: config.relay,
            connections: config.connections,
        })?;
        tracing::info!("peer {} ({}) started", config.nick, client.local_peer_id());

        let access = access::AccessList::load(dir.join("access.json"), client.local_peer_id())?;
        let config_limits = config.limits;
        let (node_states, states) = tokio::sync::mpsc::channel(1);
        let updates = updates::Publisher::start(updates::figures_of(&host), states);
        let peer = Arc::new(Peer {
            config,
            node: client,
            host,
            accel,
            libvirt_socket,
            network,
            operations: Operations::default(),
            health: health::Health::default(),
            services: crate::services::ServiceState::default(),
            grants: TunnelGrants::default(),
            handovers: crate::migrate::handover::Handovers::default(),
            access,
            capacity,
            capacity_reservations: capacity::Reservations::default(),
            limits: limits::PeerLimits::new(config_limits),
            bench,
            updates,
        });
        tokio::spawn(peer.clone().read_node_state(node_states));
        tokio::spawn(peer.clone().handle_node_events(events));
        tokio::spawn(crate::migrate::tunnel::accept_tunnels(peer.clone()));
        tokio::spawn(peer.clone().sweep_half_made_disks());
        tokio::spawn(crate::migrate::replicate::accept_replicas(peer.clone()));
        if peer.config.provision.enabled {
            tokio::spawn(crate::migrate::provision::run(peer.clone()));
        }
        peer.load_exposures();
        tokio::spawn(peer.clone().restore_consumptions());
        tokio::spawn(peer.clone().publish_loop());
        tokio::spawn(crate::services::serve::accept_service_streams(peer.clone()));
        if peer.config.hypervisor.is_none() {
            // Guests on an external hypervisor are not on our namespace's bridge.
            tokio::spawn(health::probe_loop(peer.clone()));
        }
        Ok(peer)
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.config.data_dir
    }

    /// Answers one control API request.
    pub async fn handle(self: &Arc<Self>, request: Request) -> Result<Reply> {
        match request {
            Request::Status => Ok(Reply::Status(Box::new(self.status().await?))),
            Request::Subscribe => anyhow::bail!("updates are streamed on the control socket only"),
            Request::VmList => Ok(Reply::Vms {
                vms: self.host.list().await?,
            }),
            Request::VmCreate {
                name,
                vcpus,
                memory_mib,
                image,
                services,
                data_disk_mib,
            } => {
                let manifest = VmManifest {
                    name: name.clone(),
                    vcpus,
                    memory_mib,
                    data_disk_mib,
                    image: Some(image),
                    services: services
                        .into_iter()
                        .map(|s| ManifestService {
                            name: s.name,
                            kind: s.kind,
                            port: u32::from(s.port),
                            tags: s.tags.into_iter().collect(),
                            max_conns: s.max_conns,
                            allow: s.allow,
                        })
                        .collect(),
                };
                self.create_vm(&manifest).await?;
                self.services.republish.notify_one();
                Ok(done(format!("VM '{name}' created and started")))
            }
            Request::VmStart { name, foreign } => {
                self.check_ours(&name, foreign).await?;
                self.host.start(&name).await?;
                self.services.republish.notify_one();
                Ok(done(format!("VM '{name}' started")))
            }
            Request::VmStop {
                name,
                force,
                timeout_s,
                foreign,
            } => {
                self.check_ours(&name, foreign).await?;
                if force {
                    self.host.power_off(&name).await?;
                    self.services.republish.notify_one();
                    return Ok(done(format!("VM '{name}' powered off")));
                }
                let timeout = Duration::from_secs(timeout_s.unwrap_or(DEFAULT_STOP_TIMEOUT_S));
                let message = if self.host.shutdown(&name, timeout).await? {
                    format!("VM '{name}' shut down")
                } else {
                    format!(
                        "VM '{name}' did not shut down within {} s: powered off",
                        timeout.as_secs()
                    )
                };
                self.services.republish.notify_one();
                Ok(done(message))
            }
            Request::VmPause { name, foreign } => {
                self.check_ours(&name, foreign).await?;
                self.host.pause(&name).await?;
                self.services.republish.notify_one();
                Ok(done(format!("VM '{name}' paused")))
            }
            Request::VmResume { name, foreign } => {
                self.check_ours(&name, foreign).await?;
                self.host.resume(&name).await?;
                self.services.republish.notify_one();
                Ok(done(format!("VM '{name}' resumed")))
            }
            Request::VmRemove { name, foreign } => {
                self.check_ours(&name, foreign).await?;
                let disks = self.host.remove(&name).await?;
                remove_vm_files(&name, &disks);
                self.services.republish.notify_one();
                Ok(done(format!("VM '{name}' removed")))
            }
            Request::VmStats { name } => Ok(Reply::Vms {
                vms: vec![self.host.vm(&name).await?],
            }),
            Request::Migrate {
                vm,
                to,
                max_downtime_ms,
                bandwidth_mib_s,
                foreign,
                detach,
            } => {
                let limits = crate::migrate::outgoing::Limits {
                    max_downtime_ms,
                    bandwidth_mib_s,
                };
                self.migrate_request(vm, to, limits, foreign, detach).await
            }
            Request::Replicate { vm, to, name } => Ok(Reply::Replicated(Box::new(
                self.replicate(&vm, &to, name).await?,
            ))),
            Request::MigrateAbort { vm } => {
                self.abort_migration(&vm).await?;
                Ok(done(format!(
                    "migration of VM '{vm}' aborted: it keeps running on this peer"
                )))
            }
            Request::Services => {
                let peers = self.node.status().await?.peers;
                Ok(Reply::Services {
                    services: self.services_view(&peers).await,
                })
            }
            Request::Find { name } => Ok(Reply::Services {
                services: vec![self.find_service(&name).await?],
            }),
            Request::Consume {
                service,
                local_port,
                bind,
            } => Ok(Reply::Consuming(
                self.consume(&service, local_port, bind.as_deref()).await?,
            )),
            Request::Unconsume { service } => {
                self.unconsume(&service)?;
                Ok(done(format!("stopped consuming '{service}'")))
            }
            Request::Expose {
                name,
                target,
                kind,
                allow,
                max_conns,
            } => {
                let mut peers = Vec::new();
                for query in &allow {
                    let id = self
                        .peer_id_for(query)
                        .await
                        .with_context(|| format!("--allow {query}"))?;
                    peers.push(id);
                }
                self.expose(&name, &target, kind.as_deref(), peers, max_conns)
                    .await?;
                Ok(done(format!("exposing {target} as service '{name}'")))
            }
            Request::PeersAllow { peer, role } => {
                let id = self.peer_id_for(&peer).await?;
                self.access.set(id, role)?;
                Ok(done(format!("peer {peer} may now {role} on this host")))
            }
            Request::PeersForget { peer } => {
                let id = self.peer_id_for(&peer).await?;
                if self.access.remove(&id)? {
                    Ok(done(format!(
                        "grant of {peer} removed: it has the default role ({})",
                        access::DEFAULT_ROLE
                    )))
                } else {
                    Ok(done(format!("{peer} had no grant")))
                }
            }
            Request::Invite {
                role,
                expires_s,
                addresses,
            } => {
                self.invite(role, std::time::Duration::from_secs(expires_s), addresses)
                    .await
            }
            Request::InviteRevoke { id } => self.revoke_invitation(&id),
            Request::InviteList => self.invitations(),
            Request::PeersList => Ok(Reply::Grants {
                grants: self
                    .access
                    .list()
                    .into_iter()
                    .map(|(peer, role)| (peer, role.to_string()))
                    .collect(),
                default_role: access::DEFAULT_ROLE.to_string(),
            }),
            Request::Unexpose { name } => {
                self.unexpose(&name)?;
                Ok(done(format!("service '{name}' withdrawn")))
            }
        }
    }

    /// A one-shot snapshot (`peervisor status`): the node's state with the
    /// latest figures.
    pub async fn status(&self) -> Result<Status> {
        let mut status = self.node_state().await?;
        status.local.host = self.host.host_stats();
        self.host.annotate(&mut status.vms);
        Ok(status)
    }

    /// Everything but the figures (VMs' stats and history, host stats): what
    /// the node's own clock publishes. Waits on the swarm.
    pub(crate) async fn node_state(&self) -> Result<Status> {
        let net = self.node.status().await?;
        let mut vms = self.host.vm_list();
        self.health.annotate(&mut vms);
        let services = self.services_view(&net.peers).await;
        let mut status = Status {
            local: LocalPeer {
                peer_id: self.node.local_peer_id().to_string(),
                nick: self.config.nick.clone(),
                listen_addrs: net.listen_addrs,
                hypervisor: self.host.uri().to_string(),
                accel: self.accel.to_string(),
                host: None,
                lending: Some(self.capacity.view(&vms)),
                libvirt: self.host.link(),
                reachability: net.reachability,
            },
            peers: net.peers,
            vms,
            operations: self.operations.list(),
            dial_errors: net.dial_errors,
            services,
            consumptions: self.consumption_views(),
            ..Status::default()
        };
        self.bench.fill(&mut status);
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
    async fn peer_id_for(&self, query: &str) -> Result<libp2p::PeerId> {
        if let Ok(id) = query.parse() {
            return Ok(id);
        }
        let peers = self.node.status().await?.peers;
        peers::peer_id_of(&peers::resolve(query, &peers)?)
    }

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
                    self.on_announcement(peer, announcement);
                }
            }
        }
    }

    async fn answer_peer(
        self: &Arc<Self>,
        peer: libp2p::PeerId,
        request: ControlRequest,
    ) -> ControlResponse {
        match request {
            ControlRequest::PrepareMigration {
                vm,
                uuid,
                vcpus,
                memory_mib,
                disk_mib,
                boot_files,
                disks,
            } => {
                let requirements = capacity::VmRequirements {
                    name: vm,
                    uuid,
                    vcpus,
                    memory_mib,
                    disk_mib,
                    boot_files: boot_files.into_iter().map(PathBuf::from).collect(),
                };
                self.prepare_incoming(peer, requirements, disks).await
            }
            ControlRequest::MigrationEnded { token, ok, error } => {
                self.incoming_ended(peer, token, ok, error).await
            }
            ControlRequest::ListServices => {
                let (services, load) = self.service_records().await;
                ControlResponse::Services { services, load }
            }
            ControlRequest::VmState { vm, uuid } => self.vm_state_for(peer, &vm, &uuid).await,
            ControlRequest::Redeem { secret } => self.answer_redeem(peer, &secret),
            ControlRequest::GroupMembers { members } => self.answer_group_members(peer, &members),
        }
    }

    /// Stops what this peer started: optionally its managed VMs, then its libvirt daemon.
    pub async fn shutdown(&self, destroy_vms: bool) {
        if destroy_vms && let Ok(vms) = self.host.list().await {
            for vm in vms.into_iter().filter(|v| v.managed) {
                match self.host.remove(&vm.name).await {
                    Ok(disks) => {
                        remove_vm_files(&vm.name, &disks);
                        tracing::info!("VM '{}' destroyed", vm.name)
                    }
                    Err(e) => tracing::warn!("{e:#}"),
                }
            }
        }
        self.host.stop_daemon().await;
    }
}

/// How long a graceful stop waits before powering the VM off.
const DEFAULT_STOP_TIMEOUT_S: u64 = 30;

fn done(message: String) -> Reply {
    Reply::Done { message }
}

/// Each private daemon gets its own QEMU migration port range (unused by peervisor,
/// whose migrations send QEMU's streams to unix sockets bridged over the overlay,
/// but libvirt insists on one, two daemons must not share it, and the migration
/// benchmark's direct baseline uses it).
fn migration_ports_for(dir: &DataDir) -> (u16, u16) {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(dir.root().to_string_lossy().as_bytes());
    let slot = u16::from_be_bytes([digest[0], digest[1]]) % 1000;
    let low = 50000 + slot * 10;
    (low, low + 9)
}
