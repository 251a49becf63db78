//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;

use crate::hypervisor::accel::AccelChoice;
use crate::names::{PeerRef, ServiceName, VmName};
use crate::node::identity::{NETWORK_KEY_ENV, NetworkKeySource};
use crate::paths::DataDir;
use crate::peer::PeerConfig;

#[derive(Parser, Debug)]
#[command(
    name = "peervisor",
    version,
    about = "Peer-to-peer hosting, discovery and delivery of services in virtual machines",
    long_about = "Without a command, opens the operator console on an embedded peer node \
                  (or, with --attach, on a running one)."
)]
pub struct Cli {
    /// The node's data dir (identity, network key, control socket, libvirt daemon).
    #[arg(long, global = true, env = "PEERVISOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<TopCommand>,

    /// Attach the console to the running node of this data dir instead of embedding one.
    #[arg(long, value_name = "DATA_DIR")]
    pub attach: Option<PathBuf>,

    /// Console theme: default (dark), light, 16color, monochrome, or a user theme
    /// in ~/.config/peervisor/themes/. NO_COLOR wins over it.
    #[arg(long, global = true, env = "PEERVISOR_THEME")]
    pub theme: Option<String>,

    /// Console keymap: default, vim, or a keymap file (default: the user's
    /// ~/.config/peervisor/keymap.toml over the default keymap).
    #[arg(long, global = true, env = "PEERVISOR_KEYMAP")]
    pub keymap: Option<String>,

    #[command(flatten)]
    pub node: NodeArgs,
}

/// What `peervisor COMMAND` runs: a node, which main.rs starts, or one of the
/// commands cli/ runs (the two are separate types, so neither side has a case
/// it cannot handle).
#[derive(Subcommand, Debug)]
pub enum TopCommand {
    /// Run a headless peer node (serves the control socket; stop with Ctrl-C).
    Node,
    #[command(flatten)]
    Cli(Command),
}

/// The commands cli/ runs: over a node's control socket, or on their own.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show this node's peers (with latency) and VMs.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Manage the VMs hosted on this node.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Live-migrate a running VM to another peer over the overlay.
    ///
    /// Without --wait, returns once the destination has accepted the VM (its checks
    /// passed: access, name, image files, lent capacity) and the transfer runs on;
    /// a refusal is an error here, before anything moves. Follow the transfer in
    /// `peervisor status` or the console. With --wait, returns when it has ended.
    Migrate {
        /// VM name on this peer.
        vm: VmName,
        /// Destination: peer id, unique prefix of one, or nickname.
        #[arg(long, required_unless_present = "abort")]
        to: Option<PeerRef>,
        /// Longest pause of the guest at switch-over, in milliseconds.
        #[arg(long, value_name = "MS", conflicts_with = "abort")]
        max_downtime: Option<u64>,
        /// Cap on the transfer rate, in MiB/s.
        #[arg(long, value_name = "MIB_S", conflicts_with = "abort")]
        bandwidth: Option<u64>,
        /// Cancel the running migration of VM instead; it keeps running here.
        #[arg(long, conflicts_with = "to")]
        abort: bool,
        /// Wait until the migration has ended: print its figures, or fail (exit
        /// status 1) if it did not complete, in which case the VM keeps running here.
        #[arg(long, conflicts_with = "abort")]
        wait: bool,
        /// Migrate a VM peervisor did not create (otherwise refused: it is shown read-only).
        #[arg(long, conflicts_with = "abort")]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Copy a VM (definition and data disk, sparse) to another peer and start it
    /// there under a new name, as one more provider of the same services.
    Replicate {
        /// VM name on this peer (it keeps running).
        vm: VmName,
        /// Destination: peer id, unique prefix of one, or nickname.
        #[arg(long)]
        to: PeerRef,
        /// Name of the replica (default: VM-r1, VM-r2, ... whichever is free).
        #[arg(long)]
        name: Option<VmName>,
        #[arg(long)]
        json: bool,
    },
    /// Services of the whole overlay, with their providers, latency and load.
    Services {
        /// Only services of this type (e.g. http).
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// Only services with this tag (KEY=VALUE; repeatable).
        #[arg(long, value_name = "KEY=VALUE")]
        tag: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Resolve a service through the DHT, even where gossip has not reached.
    Find {
        name: ServiceName,
        #[arg(long)]
        json: bool,
    },
    /// Forward a local port to a service through the overlay (kept by the node).
    Consume {
        service: ServiceName,
        /// Local port (default: any free port).
        #[arg(long)]
        local_port: Option<u16>,
        /// Address to listen on (default 127.0.0.1; others expose the service).
        #[arg(long)]
        bind: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Stop forwarding a consumed service.
    Unconsume { service: ServiceName },
    /// Publish a TCP service of this host (no VM) in the overlay.
    Expose {
        name: ServiceName,
        /// HOST:PORT the service listens on.
        #[arg(long)]
        target: String,
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// Only this peer (id or nickname) may consume it; repeat for several.
        #[arg(long, value_name = "PEER")]
        allow: Vec<PeerRef>,
        /// Serve at most N connections at once (from all peers together).
        #[arg(long, value_name = "N")]
        max_conns: Option<u32>,
    },
    /// Withdraw a service published with `expose`.
    Unexpose { name: ServiceName },
    /// Build guest images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Which peers may consume from or control this host.
    #[command(subcommand)]
    Peers(PeersCommand),
    /// VMs with live figures, as a plain table every interval (like virt-top -b).
    Top {
        /// Seconds between tables.
        #[arg(long, short = 'd', default_value_t = 1.0)]
        delay: f64,
        /// Stop after this many tables (default: until interrupted).
        #[arg(long, short = 'n')]
        iterations: Option<u64>,
    },
    /// Benchmarks, each printing its baseline measured in the same run.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Start a local overlay of peers with a guest and open the console on it.
    Demo(DemoArgs),
    /// Print the console's effective keymap (shipped defaults plus your keymap.toml).
    Keys,
    /// Tools for testing peervisor itself.
    #[command(subcommand, hide = true)]
    Dev(DevCommand),
}

/// Hidden: tools for tests of peervisor itself, not for operators.
#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// Join the overlay (--network-key, --bootstrap) as the member whose identity
    /// is in --data-dir (no node runs there), send one hand-made replication offer
    /// frame to a peer, and print its answer as JSON.
    ReplicaOffer {
        /// Peer id of the destination.
        #[arg(long)]
        to: libp2p::PeerId,
        /// File holding the offer's body (any bytes, e.g. JSON).
        #[arg(long)]
        body: PathBuf,
        /// Length to put in the frame's prefix (default: the body's).
        #[arg(long)]
        declare: Option<u32>,
        /// Keep the stream open after the body, as a sender that stalls.
        #[arg(long)]
        stall: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// List VMs on this node.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create a VM from an image and start it (from a TOML manifest, or flags).
    Create {
        /// VM name (default: the manifest's).
        name: Option<VmName>,
        /// Manifest file: name, vcpus, memory_mib, data_disk_mib, image, [[services]].
        #[arg(long, short = 'f', value_name = "FILE")]
        manifest: Option<PathBuf>,
        #[arg(long)]
        vcpus: Option<u32>,
        #[arg(long = "memory", value_name = "MIB")]
        memory_mib: Option<u64>,
        #[arg(long)]
        image: Option<String>,
        /// Attach a new qcow2 data disk of this size (the guest mounts it on /data).
        #[arg(long = "data-disk", value_name = "MIB")]
        data_disk_mib: Option<u64>,
    },
    /// Start a stopped VM.
    Start {
        name: VmName,
        /// Act on a VM peervisor did not create.
        #[arg(long)]
        force: bool,
    },
    /// Shut a VM down (ACPI power button; powered off after --timeout).
    Stop {
        name: VmName,
        /// Power off at once instead.
        #[arg(long)]
        hard: bool,
        /// Seconds to wait for the guest before powering it off.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Act on a VM peervisor did not create.
        #[arg(long)]
        force: bool,
    },
    /// Pause a running VM (it keeps its memory).
    Pause {
        name: VmName,
        #[arg(long)]
        force: bool,
    },
    /// Resume a paused VM.
    Resume {
        name: VmName,
        #[arg(long)]
        force: bool,
    },
    /// Power off and delete a VM with its disks.
    Rm {
        name: VmName,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Act on a VM peervisor did not create.
        #[arg(long)]
        force: bool,
    },
    /// A VM's live figures: CPU, memory, disk and network rates.
    Stats {
        name: VmName,
        #[arg(long)]
        json: bool,
        /// Print a new line every second until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Attach to a VM's serial console, here or on another peer that grants
    /// this one the control role (like `virsh console`). Ctrl-] detaches.
    Console { name: VmName },
}

#[derive(Subcommand, Debug)]
pub enum PeersCommand {
    /// Grant a peer a role on this host (control lets it migrate VMs here).
    Allow {
        /// Peer id, or nickname of a connected peer.
        peer: PeerRef,
        #[arg(long, default_value = "control")]
        role: crate::control::Role,
    },
    /// Reduce a peer to observing: it may neither consume nor control.
    Deny { peer: PeerRef },
    /// Drop a peer's grant: it gets the default role again.
    Forget { peer: PeerRef },
    /// List grants.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build (or reuse the cached) guest image from Debian packages.
    Build {
        #[arg(long, default_value = crate::image::DEFAULT_IMAGE)]
        name: String,
        /// Where images are kept.
        #[arg(long)]
        image_dir: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How many peers to start.
    #[arg(long, default_value_t = 3)]
    pub peers: usize,
    /// Start the overlay and the guest, print how to reach them, and exit without a console
    /// (the peers keep running until `peervisor demo --stop`).
    #[arg(long)]
    pub no_console: bool,
    /// Stop a demo started with --no-console.
    #[arg(long)]
    pub stop: bool,
}

/// How a node joins the overlay and hosts VMs (used by `node` and the console).
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Name shown to other peers (default: the host name).
    #[arg(long, global = true)]
    pub nick: Option<String>,
    /// Address to listen on (repeatable).
    #[arg(long, global = true, default_value = "/ip4/0.0.0.0/tcp/7470")]
    pub listen: Vec<Multiaddr>,
    /// Address of a peer to join through (repeatable), e.g. /ip4/192.0.2.7/tcp/7470.
    #[arg(long, global = true)]
    pub bootstrap: Vec<Multiaddr>,
    /// The overlay's network key file (swarm.key format, or 64 hex digits in a
    /// file). A literal key only through the environment (PEERVISOR_NETWORK_KEY):
    /// arguments show in the process list. Default: the data dir's network.key,
    /// generated on first run (copy it to other peers).
    #[arg(long, global = true, value_name = "FILE")]
    pub network_key: Option<std::path::PathBuf>,
    /// Find peers on the LAN with multicast DNS.
    #[arg(long, global = true)]
    pub mdns: bool,
    /// Relay circuits between other members (for a peer every other peer can
    /// reach, e.g. one with a public address); it relays once AutoNAT confirmed
    /// that a member can dial it. See docs/nat.md.
    #[arg(long, global = true)]
    pub relay_server: bool,
    /// Do not reserve a slot on relay peers (this node is then reachable only at
    /// its own addresses).
    #[arg(long, global = true)]
    pub no_relay_client: bool,
    /// Use this libvirt instead of a private daemon, e.g. qemu:///system.
    #[arg(long, global = true)]
    pub hypervisor: Option<String>,
    /// Accelerator for guests: auto (probe), kvm or tcg.
    #[arg(long, global = true, default_value = "auto")]
    pub accel: AccelChoice,
    /// Network namespace holding the guests' bridge.
    #[arg(long, global = true, default_value = "peervisor")]
    pub guest_netns: String,
    /// Where guest images are kept.
    #[arg(long, global = true)]
    pub image_dir: Option<PathBuf>,
    /// Where this peer keeps VMs' data disks. Default: one directory per machine
    /// (/var/lib/peervisor/disks), shared by its peers; with a dir of its own, a
    /// migration to or from this peer copies the disks.
    #[arg(long, global = true, value_name = "DIR", env = "PEERVISOR_DISK_DIR")]
    pub disk_dir: Option<PathBuf>,
    /// Refuse VMs migrated in by other peers.
    #[arg(long, global = true)]
    pub no_accept_migrations: bool,
    /// vCPUs this host lends to VMs other peers push in (all VMs here count
    /// against it). Default: lend_vcpus in DATA_DIR/capacity.toml, else 4 per host CPU.
    #[arg(long, global = true, value_name = "N")]
    pub lend_vcpus: Option<u32>,
    /// Memory lent to VMs, e.g. 4GiB. Default: lend_memory in capacity.toml, else
    /// the host's memory minus 10% (at least 1 GiB).
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_size)]
    pub lend_memory: Option<u64>,
    /// Disk lent to VMs' data disks (virtual sizes), e.g. 20GiB. Default: lend_disk
    /// in capacity.toml, else 90% of the free space under the disk dir at start.
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_size)]
    pub lend_disk: Option<u64>,
    /// Migrations this peer sends, and receives, at once (default 2, or
    /// max_migrations in capacity.toml).
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_migrations: Option<u32>,
    /// Seconds between two libvirt stats samples.
    #[arg(long, global = true, default_value_t = 1.0)]
    pub stats_interval: f64,
    /// Stats samples kept per VM (history for charts and `vm stats --json`).
    #[arg(long, global = true, default_value_t = 120)]
    pub stats_history: usize,
    /// Destroy this node's VMs when it stops (the demo and tests use it).
    #[arg(long, global = true)]
    pub destroy_vms_on_exit: bool,
    /// Poll this YARN ResourceManager (e.g. http://rm:8088) for MapReduce jobs
    /// (repeatable; `URL,history=URL` adds a JobHistory server for finished jobs).
    #[arg(long, global = true, value_name = "URL")]
    pub yarn: Vec<String>,
    /// Poll this Spark application UI / history server (e.g. http://driver:4040)
    /// (repeatable).
    #[arg(long, global = true, value_name = "URL")]
    pub spark: Vec<String>,
    /// Control requests per second another peer may make of this one (bursts of 2x).
    #[arg(long, global = true, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub peer_control_rate: u32,
    /// Service streams per second another peer may open here (bursts of 2x).
    #[arg(long, global = true, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub peer_stream_rate: u32,
    /// Service streams another peer may have open here at once.
    #[arg(long, global = true, value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub peer_max_streams: u32,
    /// Overlay connections this node keeps at once (an eighth is kept for its own
    /// dials; more are refused with a log line).
    #[arg(long, global = true, value_name = "N", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(8..))]
    pub max_connections: u32,
    /// Overlay connections one peer may have with this node at once.
    #[arg(long, global = true, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_peer: u32,
    /// Incoming connections still in their handshake at once.
    #[arg(long, global = true, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending_connections: u32,
    /// On-demand provision: replicate this host's busiest serving VM to the
    /// least-loaded peer while this peer's VMs keep the host's CPU busy; give
    /// back replicas placed here once they and the other providers are quiet.
    /// Off by default; actions are logged with reasons.
    #[arg(long, global = true)]
    pub provision: bool,
    /// CPU this peer's VMs use, % of the host's CPUs, above which --provision replicates.
    #[arg(long, global = true, value_name = "PCT", default_value_t = 80.0)]
    pub provision_high: f64,
    /// VM CPU % below which --provision removes the replicas it was given.
    #[arg(long, global = true, value_name = "PCT", default_value_t = 20.0)]
    pub provision_low: f64,
    /// Seconds a condition must hold before --provision acts (and between actions).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 60)]
    pub provision_after: u64,
}

impl NodeArgs {
    /// `--network-key FILE`, else `PEERVISOR_NETWORK_KEY`, else none given.
    pub fn network_key_source(&self) -> Option<NetworkKeySource> {
        match (&self.network_key, std::env::var(NETWORK_KEY_ENV)) {
            (Some(file), _) => Some(NetworkKeySource::File(file.clone())),
            (None, Ok(value)) => Some(NetworkKeySource::Environment(value)),
            (None, Err(_)) => None,
        }
    }

    /// The peer these flags describe, on `data_dir`.
    pub fn peer_config(&self, data_dir: DataDir) -> PeerConfig {
        let interval = if self.stats_interval.is_finite() {
            self.stats_interval.clamp(0.1, 3600.0)
        } else {
            1.0
        };
        PeerConfig {
            sampling: crate::hypervisor::sampler::SamplerConfig {
                interval: std::time::Duration::from_secs_f64(interval),
                history: self.stats_history.clamp(2, 100_000),
            },
            data_dir,
            nick: self.nick.clone().unwrap_or_else(default_nick),
            listen: self.listen.clone(),
            bootstrap: self.bootstrap.clone(),
            network_key: self.network_key_source(),
            mdns: self.mdns,
            relay: crate::node::RelayConfig {
                serve: self.relay_server,
                reserve: !self.no_relay_client,
            },
            hypervisor: self.hypervisor.clone(),
            accel: self.accel,
            guest_netns: self.guest_netns.clone(),
            image_dir: self
                .image_dir
                .clone()
                .unwrap_or_else(crate::image::default_image_dir),
            accept_migrations: !self.no_accept_migrations,
            provision: crate::peer::ProvisionPolicy {
                enabled: self.provision,
                high_pct: self.provision_high,
                low_pct: self.provision_low,
                sustain: std::time::Duration::from_secs(self.provision_after),
            },
            yarn: self.yarn.clone(),
            spark: self.spark.clone(),
            limits: crate::admission::limits::LimitsConfig {
                control_per_s: self.peer_control_rate,
                streams_per_s: self.peer_stream_rate,
                streams_per_peer: self.peer_max_streams,
            },
            connections: crate::node::ConnectionCaps {
                per_peer: self.max_connections_per_peer,
                total: self.max_connections,
                pending_incoming: self.max_pending_connections,
            },
            capacity: crate::migrate::capacity::CapacityFlags {
                lend_vcpus: self.lend_vcpus,
                lend_memory_mib: self.lend_memory,
                lend_disk_mib: self.lend_disk,
                max_migrations: self.max_migrations,
            },
        }
    }
}

fn default_nick() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "peer".into())
}

/// A size with a binary unit, in MiB.
fn parse_size(text: &str) -> Result<u64, String> {
    crate::migrate::capacity::parse_size_mib(text)
}
