//! Moving VMs between peers: live migration over the overlay (both ends, the
//! tunnel and data channels, the data disks it copies, the service gap it
//! causes, a paused source resolved), replication (both ends, and its byte path
//! in `replica/`), and the on-demand provision policy that replicates busy VMs;
//! what this host lends to incoming VMs (`capacity.rs`) and the running and
//! recent operations (`operations.rs`).

pub mod capacity;
pub mod diskmig;
pub mod downtime;
pub mod incoming;
pub mod loopback;
pub mod operations;
pub mod outgoing;
pub mod paused_source;
pub mod provision;
pub mod replica;
pub mod replicate;
pub mod transport;
pub mod tunnel;

use std::path::PathBuf;
use std::sync::Arc;

use crate::admission::access::AccessList;
use crate::admission::limits::PeerLimits;
use crate::hypervisor::Host;
use crate::hypervisor::netns::GuestNetwork;
use crate::node::Client;
use crate::paths::DataDir;
use crate::services::Services;
use capacity::Capacity;
use incoming::TunnelGrants;
use operations::Operations;

/// Where this process reaches the local libvirt daemon: its socket (where
/// migration tunnels end) and its /run/libvirt (where QEMU's data channels are).
#[derive(Debug, Clone)]
pub struct DaemonPaths {
    pub socket: PathBuf,
    pub run_dir: PathBuf,
}

/// How this peer takes part in migrations: whether it accepts VMs, the way it
/// sends their data, where its base images are (an incoming overlay on one of
/// them is copied without its base).
#[derive(Debug, Clone)]
pub struct MigrationSettings {
    pub accept: bool,
    pub transport: transport::TransportChoice,
    pub image_dir: PathBuf,
}

/// Live migration, both ends: what it holds to send a VM (node, hypervisor,
/// this node's run dir, the services whose consumers it hands over) and to take
/// one in (who may push VMs here, whether this peer accepts them, what it lends,
/// the grants its tunnels need), and the operations it records.
pub struct Migrations {
    node: Client,
    host: Host,
    /// The guest network, where the migrating VM's service is probed directly.
    network: GuestNetwork,
    nick: String,
    /// This node's run dir: the source's libvirt tunnel sockets.
    run_dir: PathBuf,
    /// `data-dir/incoming-disks`: disk files made for VMs on their way (diskmig.rs).
    ledger_dir: PathBuf,
    daemon: DaemonPaths,
    /// Whether other peers may live-migrate VMs into this host.
    accept: bool,
    /// `--migration-transport` (transport.rs).
    transport: transport::TransportChoice,
    /// Where imported base images are (`image import`).
    image_dir: PathBuf,
    access: Arc<AccessList>,
    limits: Arc<PeerLimits>,
    capacity: Arc<Capacity>,
    operations: Arc<Operations>,
    services: Arc<Services>,
    grants: TunnelGrants,
}

impl Migrations {
    #[allow(clippy::too_many_arguments)] // the handles it holds, one each
    pub fn new(
        node: Client,
        host: Host,
        network: GuestNetwork,
        nick: String,
        data_dir: &DataDir,
        daemon: DaemonPaths,
        settings: MigrationSettings,
        access: Arc<AccessList>,
        limits: Arc<PeerLimits>,
        capacity: Arc<Capacity>,
        operations: Arc<Operations>,
        services: Arc<Services>,
    ) -> Migrations {
        Migrations {
            node,
            host,
            network,
            nick,
            run_dir: data_dir.run_dir(),
            ledger_dir: data_dir.root().join(diskmig::LEDGER),
            daemon,
            accept: settings.accept,
            transport: settings.transport,
            image_dir: settings.image_dir,
            access,
            limits,
            capacity,
            operations,
            services,
            grants: TunnelGrants::default(),
        }
    }

    /// Accepts other peers' tunnel streams, and deletes disk files made for
    /// VMs that never arrived (the node was killed mid-transfer), in the background.
    pub fn start(self: &Arc<Self>) {
        tokio::spawn(tunnel::accept_tunnels(self.clone()));
        tokio::spawn(self.clone().sweep_half_made_disks());
    }
}
