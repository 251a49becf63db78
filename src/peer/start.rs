//! Starting a peer: its hypervisor (a private libvirtd unless one is given), its
//! node, its features wired to the handles each needs, their background tasks;
//! and stopping it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::{Peer, PeerConfig};
use crate::admission::access::AccessList;
use crate::admission::limits::{PeerLimits, raise_fd_limit};
use crate::control::Request;
use crate::control::server::Answer;
use crate::hypervisor::choice::HypervisorChoice;
use crate::hypervisor::daemon::{DaemonConfig, PrivateDaemon};
use crate::hypervisor::manifest::nic_choice;
use crate::hypervisor::netns::GuestNetwork;
use crate::hypervisor::{Host, local_socket_for};
use crate::jobs::collector::Collector;
use crate::join::node::Invitations;
use crate::migrate::capacity::{Capacity, CapacityConfig, Lending, fmt_mib};
use crate::migrate::operations::Operations;
use crate::migrate::provision::Provision;
use crate::migrate::replicate::Replications;
use crate::migrate::{DaemonPaths, MigrationSettings, Migrations};
use crate::model::NicSource;
use crate::node::{self, NodeConfig};
use crate::paths::{DataDir, disk_dir};
use crate::services::Services;
use crate::vms::Vms;
use crate::vms::remote::RemoteVms;

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
                Request::VmConsole { name } => peer.console(name).await.map(Answer::Bytes),
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
        let jobs = Collector::start(
            &config.yarn,
            &config.spark,
            config.data_dir.root().join("bench"),
        )?;
        let capacity = CapacityConfig::resolve(
            config.capacity,
            &config.data_dir.root().join("capacity.toml"),
            Lending::host_defaults(&disk_dir()),
        )?;
        let lent = capacity.lending;
        tracing::info!(
            "lending incoming VMs {} vCPUs, {} memory, {} disk; at most {} migration(s) each way at once",
            lent.vcpus,
            fmt_mib(lent.memory_mib),
            fmt_mib(lent.disk_mib),
            capacity.max_migrations
        );
        match raise_fd_limit() {
            Ok(n) => tracing::debug!("open file limit {n}"),
            Err(e) => tracing::warn!("cannot raise the open file limit: {e}"),
        }
        let (accel, why) = config.accel.resolve();
        tracing::info!("accelerator {why}");

        // An existing libvirt's guests are on the host's networks; a private
        // daemon's on our namespace's bridge.
        let network = match &config.hypervisor {
            HypervisorChoice::Existing { .. } => GuestNetwork::host(),
            HypervisorChoice::Private => GuestNetwork::named(&config.guest_netns),
        };
        let default_nic = default_nic(&config)?;
        let (daemon, uri, libvirt_socket) = match &config.hypervisor {
            HypervisorChoice::Existing { uri, .. } => (None, uri.clone(), local_socket_for(uri)),
            HypervisorChoice::Private => {
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
        tracing::info!(
            "hypervisor {uri} ({}); new VMs join {default_nic}",
            config.hypervisor.origin().describe()
        );
        if let Err(e) = host.check_nic(&default_nic).await {
            tracing::warn!("the default for new VMs' NICs is not usable: {e:#}");
        }
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
            wire: node::Wire::Tcp,
        })?;
        tracing::info!("peer {} ({}) started", config.nick, client.local_peer_id());

        let daemon = DaemonPaths {
            socket: libvirt_socket,
            // The daemon's /run/libvirt, as this process sees it.
            run_dir: match &config.hypervisor {
                HypervisorChoice::Existing { .. } => PathBuf::from("/run/libvirt"),
                HypervisorChoice::Private => config.data_dir.libvirt_dir().join("run"),
            },
        };
        let access = Arc::new(AccessList::load(
            dir.join("access.json"),
            client.local_peer_id(),
        )?);
        let limits = Arc::new(PeerLimits::new(config.limits));
        let capacity = Arc::new(Capacity::new(capacity, host.clone()));
        let operations = Arc::new(Operations::default());
        let services = Arc::new(Services::new(
            client.clone(),
            host.clone(),
            network.clone(),
            config.nick.clone(),
            &config.data_dir,
            access.clone(),
            limits.clone(),
        ));
        let vms = Arc::new(Vms::new(
            host.clone(),
            network.clone(),
            default_nic,
            accel,
            config.image_dir.clone(),
            services.on_change(),
        ));
        let migrations = Arc::new(Migrations::new(
            client.clone(),
            host.clone(),
            network,
            config.nick.clone(),
            &config.data_dir,
            daemon,
            MigrationSettings {
                accept: config.accept_migrations,
                transport: config.migration_transport,
                image_dir: config.image_dir.clone(),
            },
            access.clone(),
            limits.clone(),
            capacity.clone(),
            operations.clone(),
            services.clone(),
        ));
        let replications = Arc::new(Replications::new(
            client.clone(),
            host.clone(),
            config.nick.clone(),
            &config.data_dir,
            config.image_dir.clone(),
            config.accept_migrations,
            access.clone(),
            limits.clone(),
            capacity.clone(),
            operations.clone(),
            vms.clone(),
        ));
        let provision = config.provision.enabled.then(|| {
            Provision::new(
                config.provision,
                client.clone(),
                &config.data_dir,
                vms.clone(),
                services.clone(),
                replications.clone(),
            )
        });
        let invitations = Arc::new(Invitations::new(
            client.clone(),
            &config.data_dir,
            access.clone(),
        ));
        let (node_states, states) = tokio::sync::mpsc::channel(1);
        let updates = super::updates::Publisher::start(super::updates::figures_of(&host), states);
        let remote = Arc::new(RemoteVms::new(client.clone()));
        tokio::spawn(remote.clone().run());
        let peer = Arc::new(Peer {
            nick: config.nick,
            data_dir: config.data_dir,
            node: client,
            host,
            hypervisor_origin: config.hypervisor.origin(),
            accel,
            access,
            limits,
            capacity,
            operations,
            vms,
            services,
            migrations,
            replications,
            invitations,
            jobs,
            updates,
            remote,
        });
        tokio::spawn(peer.clone().read_node_state(node_states));
        tokio::spawn(peer.clone().handle_node_events(events));
        tokio::spawn(peer.clone().serve_consoles());
        peer.migrations.start();
        peer.replications.start();
        if let Some(provision) = provision {
            tokio::spawn(provision.run());
        }
        peer.services.start();
        peer.vms.start_probing();
        Ok(peer)
    }

    /// Stops what this peer started: optionally its managed VMs, then its libvirt daemon.
    pub async fn shutdown(&self, destroy_vms: bool) {
        if destroy_vms {
            self.vms.destroy_managed().await;
        }
        self.host.stop_daemon().await;
    }
}

/// Where new VMs' NICs go unless their manifest says: `--default-network` or
/// `--default-bridge`;
/// else our guest bridge with a private daemon, the `default` network with an
/// existing libvirt (the one every libvirt host defines).
fn default_nic(config: &PeerConfig) -> Result<NicSource> {
    let given = nic_choice(
        config.default_network.as_deref(),
        config.default_bridge.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("--default-network/--default-bridge: {e}"))?;
    Ok(match (given, &config.hypervisor) {
        (Some(nic), _) => nic,
        (None, HypervisorChoice::Private) => NicSource::GuestBridge,
        (None, HypervisorChoice::Existing { .. }) => NicSource::Network("default".into()),
    })
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
