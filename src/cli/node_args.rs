//! `NodeArgs`: how a node joins the overlay and hosts VMs, the options of
//! `peervisor node` and of the console (and of the config file, one key each),
//! with their value parsers.

use std::path::PathBuf;

use clap::Args;
use libp2p::Multiaddr;

use crate::hypervisor::accel::AccelChoice;
use crate::node::identity::{NETWORK_KEY_ENV, NetworkKeySource};
use crate::paths::DataDir;
use crate::peer::PeerConfig;

/// How a node joins the overlay and hosts VMs (used by `node` and the console).
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Name shown to other peers (default: the host name).
    #[arg(long)]
    pub nick: Option<String>,
    /// Address to listen on (repeatable).
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/7470")]
    pub listen: Vec<Multiaddr>,
    /// Address of a peer to join through (repeatable), e.g. /ip4/192.0.2.7/tcp/7470.
    #[arg(long)]
    pub bootstrap: Vec<Multiaddr>,
    /// The overlay's network key file (swarm.key format, or 64 hex digits in a
    /// file). A literal key only through the environment (PEERVISOR_NETWORK_KEY):
    /// arguments show in the process list. Default: the data dir's network.key,
    /// generated on first run (copy it to other peers).
    #[arg(long, value_name = "FILE")]
    pub network_key: Option<std::path::PathBuf>,
    /// Find peers on the LAN with multicast DNS.
    #[arg(long)]
    pub mdns: bool,
    /// Relay circuits between other members (for a peer every other peer can
    /// reach, e.g. one with a public address); it relays once AutoNAT confirmed
    /// that a member can dial it. See docs/nat.md.
    #[arg(long)]
    pub relay_server: bool,
    /// Do not reserve a slot on relay peers (this node is then reachable only at
    /// its own addresses).
    #[arg(long)]
    pub no_relay_client: bool,
    /// The libvirt to host VMs on, e.g. qemu:///system (the host's own daemon).
    /// Default: LIBVIRT_DEFAULT_URI if set, as virsh; else a private libvirtd
    /// of this peer's own (`private` forces that).
    #[arg(long, value_name = "URI")]
    pub hypervisor: Option<String>,
    /// Libvirt network for new VMs' NICs unless their manifest or `vm create
    /// --network/--bridge` says (default with an existing libvirt: `default`).
    #[arg(long, value_name = "NAME", conflicts_with = "default_bridge")]
    pub default_network: Option<String>,
    /// Host bridge for new VMs' NICs instead of a network.
    #[arg(long, value_name = "BR")]
    pub default_bridge: Option<String>,
    /// Accelerator for guests: auto (probe), kvm or tcg.
    #[arg(long, default_value = "auto")]
    pub accel: AccelChoice,
    /// Network namespace holding the guests' bridge.
    #[arg(long, default_value = "peervisor")]
    pub guest_netns: String,
    /// Where guest images are kept.
    #[arg(long)]
    pub image_dir: Option<PathBuf>,
    /// Where this peer keeps VMs' data disks. Default: one directory per machine
    /// (/var/lib/peervisor/disks), shared by its peers; with a dir of its own, a
    /// migration to or from this peer copies the disks.
    #[arg(long, value_name = "DIR", env = "PEERVISOR_DISK_DIR")]
    pub disk_dir: Option<PathBuf>,
    /// Refuse VMs migrated in by other peers.
    #[arg(long)]
    pub no_accept_migrations: bool,
    /// How live migrations sent from here carry their data: our direct channels
    /// when the VM's QEMU can reach this node's sockets, else libvirt's
    /// tunnelled migration (auto); or always one of them.
    #[arg(long, value_name = "WAY", value_enum, default_value_t)]
    pub migration_transport: crate::migrate::transport::TransportChoice,
    /// vCPUs this host lends to VMs other peers push in (all VMs here count
    /// against it). Default: lend_vcpus in DATA_DIR/capacity.toml, else 4 per host CPU.
    #[arg(long, value_name = "N")]
    pub lend_vcpus: Option<u32>,
    /// Memory lent to VMs, e.g. 4GiB. Default: lend_memory in capacity.toml, else
    /// the host's memory minus 10% (at least 1 GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub lend_memory: Option<u64>,
    /// Disk lent to VMs' data disks (virtual sizes), e.g. 20GiB. Default: lend_disk
    /// in capacity.toml, else 90% of the free space under the disk dir at start.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub lend_disk: Option<u64>,
    /// Migrations this peer sends, and receives, at once (default 2, or
    /// max_migrations in capacity.toml).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_migrations: Option<u32>,
    /// Seconds between two libvirt stats samples.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = parse_interval)]
    pub stats_interval: f64,
    /// Stats samples kept per VM (history for charts and `vm stats --json`).
    #[arg(long, value_name = "N", default_value_t = 120,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=100_000))]
    pub stats_history: usize,
    /// Destroy this node's VMs when it stops (the demo and tests use it).
    #[arg(long)]
    pub destroy_vms_on_exit: bool,
    /// Poll this YARN ResourceManager (e.g. http://rm:8088) for MapReduce jobs
    /// (repeatable; `URL,history=URL` adds a JobHistory server for finished jobs).
    #[arg(long, value_name = "URL", value_parser = parse_yarn)]
    pub yarn: Vec<String>,
    /// Poll this Spark application UI / history server (e.g. http://driver:4040)
    /// (repeatable).
    #[arg(long, value_name = "URL", value_parser = parse_spark)]
    pub spark: Vec<String>,
    /// Control requests per second another peer may make of this one (bursts of 2x).
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub peer_control_rate: u32,
    /// Service streams per second another peer may open here (bursts of 2x).
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub peer_stream_rate: u32,
    /// Service streams another peer may have open here at once.
    #[arg(long, value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub peer_max_streams: u32,
    /// Overlay connections this node keeps at once (an eighth is kept for its own
    /// dials; more are refused with a log line).
    #[arg(long, value_name = "N", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(8..))]
    pub max_connections: u32,
    /// Overlay connections one peer may have with this node at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_peer: u32,
    /// Incoming connections still in their handshake at once.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending_connections: u32,
    /// On-demand provision: replicate this host's busiest serving VM to the
    /// least-loaded peer while this peer's VMs keep the host's CPU busy; give
    /// back replicas placed here once they and the other providers are quiet.
    /// Off by default; actions are logged with reasons.
    #[arg(long)]
    pub provision: bool,
    /// CPU this peer's VMs use, % of the host's CPUs, above which --provision replicates.
    #[arg(long, value_name = "PCT", default_value_t = 80.0, value_parser = parse_percent)]
    pub provision_high: f64,
    /// VM CPU % below which --provision removes the replicas it was given.
    #[arg(long, value_name = "PCT", default_value_t = 20.0, value_parser = parse_percent)]
    pub provision_low: f64,
    /// Seconds a condition must hold before --provision acts (and between actions).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub provision_after: u64,
}

impl NodeArgs {
    /// `--network-key FILE`, else `PEERVISOR_NETWORK_KEY`, else none given.
    pub fn network_key_source(&self) -> Option<NetworkKeySource> {
        network_key_source(self.network_key.as_deref())
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
            hypervisor: crate::hypervisor::choice::HypervisorChoice::from_flag_and_env(
                self.hypervisor.as_deref(),
            ),
            default_network: self.default_network.clone(),
            default_bridge: self.default_bridge.clone(),
            accel: self.accel,
            guest_netns: self.guest_netns.clone(),
            image_dir: self
                .image_dir
                .clone()
                .unwrap_or_else(crate::image::default_image_dir),
            accept_migrations: !self.no_accept_migrations,
            migration_transport: self.migration_transport,
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

/// A network key file, else `PEERVISOR_NETWORK_KEY`, else none given.
pub fn network_key_source(file: Option<&std::path::Path>) -> Option<NetworkKeySource> {
    match (file, std::env::var(NETWORK_KEY_ENV)) {
        (Some(file), _) => Some(NetworkKeySource::File(file.to_path_buf())),
        (None, Ok(value)) => Some(NetworkKeySource::Environment(value)),
        (None, Err(_)) => None,
    }
}

fn default_nick() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "peer".into())
}

/// `--yarn URL[,history=URL]`, checked when given rather than when polled.
fn parse_yarn(text: &str) -> Result<String, String> {
    crate::jobs::yarn::YarnSource::from_arg(text).map_err(|e| format!("{e:#}"))?;
    Ok(text.to_string())
}

fn parse_spark(text: &str) -> Result<String, String> {
    crate::jobs::spark::SparkSource::from_arg(text).map_err(|e| format!("{e:#}"))?;
    Ok(text.to_string())
}

/// Seconds between 0.1 and an hour.
fn parse_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.1..=3600.0).contains(&s) => Ok(s),
        _ => Err(format!(
            "{text:?} is not a number of seconds from 0.1 to 3600"
        )),
    }
}

fn parse_percent(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a percentage from 0 to 100")),
    }
}

/// `30m`, `1h`, `2days` (humantime).
pub(super) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 30m, 1h, 2days)"))
}

/// A size with a binary unit, in MiB.
fn parse_size(text: &str) -> Result<u64, String> {
    crate::migrate::capacity::parse_size_mib(text)
}
