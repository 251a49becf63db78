//! The data every part of peervisor shows or exchanges: what the console draws,
//! what `peervisor status --json` prints, what the control socket carries.
//! Plain serde types, no behaviour beyond small helpers.

use serde::{Deserialize, Serialize};

/// One snapshot of a node as seen by its operator.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// This peer.
    pub local: LocalPeer,
    /// Other peers of the overlay this node knows about.
    pub peers: Vec<PeerView>,
    /// VMs hosted on this peer.
    pub vms: Vec<VmView>,
    /// Running and recent migrations started or received by this peer.
    pub operations: Vec<OperationView>,
    /// Recent failures to connect to peers, explained (e.g. "network key mismatch?").
    #[serde(default)]
    pub dial_errors: Vec<String>,
    /// Services discovered across the overlay (this peer's included).
    #[serde(default)]
    pub services: Vec<ServiceView>,
    /// Local listeners forwarding to remote services (`peervisor consume`).
    #[serde(default)]
    pub consumptions: Vec<ConsumptionView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LocalPeer {
    pub peer_id: String,
    pub nick: String,
    pub listen_addrs: Vec<String>,
    /// libvirt connection URI this peer hosts VMs on.
    pub hypervisor: String,
    /// "kvm" or "tcg".
    pub accel: String,
    /// Host figures (sysinfo), once sampled.
    #[serde(default)]
    pub host: Option<HostStats>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HostStats {
    pub cpus: u32,
    /// All CPUs, 0..100.
    pub cpu_pct: f64,
    pub mem_used_mib: u64,
    pub mem_total_mib: u64,
    pub load1: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PeerView {
    pub peer_id: String,
    /// Nickname the peer announces (identify agent version), or empty if not yet known.
    pub nick: String,
    pub connected: bool,
    /// Round-trip time of the last ping, if any.
    pub latency_ms: Option<f64>,
    /// VMs the peer announced it hosts (gossip), if heard.
    pub vms: Option<Vec<String>>,
    pub addrs: Vec<String>,
    /// The load the peer announced (gossip), if heard.
    #[serde(default)]
    pub load: Option<PeerLoad>,
    /// Peer ids this peer announced it is connected to (topology edges).
    #[serde(default)]
    pub links: Vec<String>,
}

/// What a peer announces about its load.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PeerLoad {
    /// Host CPU use, 0..100.
    pub cpu_pct: f64,
    pub running_vms: u32,
    /// Consume connections its providers currently serve.
    pub connections: u32,
}

impl PeerView {
    /// The name an operator sees: the nickname, or a short peer id.
    pub fn display_name(&self) -> String {
        if self.nick.is_empty() {
            short_peer_id(&self.peer_id)
        } else {
            self.nick.clone()
        }
    }
}

/// `12D3KooWAbc...xyz` -> `12D3..xyz` (last 4 chars), for narrow columns.
pub fn short_peer_id(id: &str) -> String {
    if id.len() <= 10 {
        id.to_string()
    } else {
        format!("{}..{}", &id[..4], &id[id.len() - 4..])
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Running,
    Paused,
    #[default]
    Stopped,
    Crashed,
    Other,
}

impl VmState {
    pub fn as_str(&self) -> &'static str {
        match self {
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopped => "stopped",
            VmState::Crashed => "crashed",
            VmState::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VmView {
    pub name: String,
    pub uuid: String,
    pub state: VmState,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Guest address on the peer's guest network, if peervisor gave it one.
    pub ip: Option<String>,
    /// True when peervisor defined the VM (it carries our metadata).
    pub managed: bool,
    /// Whether the guest's HTTP service (port 80) accepted a connection from this
    /// peer at the last probe; None when not probed (stopped, foreign, no address).
    #[serde(default)]
    pub service_up: Option<bool>,
    /// Latest rates, once two samples exist.
    #[serde(default)]
    pub stats: Option<VmStats>,
    /// Recent samples, oldest first, for sparklines and charts.
    #[serde(default)]
    pub history: Option<VmHistory>,
    /// Services the VM provides (from its manifest).
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
}

/// A service as a manifest declares it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct ServiceSpec {
    pub name: String,
    /// Service type, e.g. "http", "kv", "echo".
    pub kind: String,
    /// TCP port inside the guest (or on the legacy target).
    pub port: u16,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

/// Rates computed from libvirt counter deltas.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VmStats {
    /// Share of all host CPUs, 0..100.
    pub cpu_pct_host: f64,
    /// Share of the guest's vCPUs, 0..100.
    pub cpu_pct_guest: f64,
    pub mem_used_mib: u64,
    pub disk_read_bps: f64,
    pub disk_write_bps: f64,
    pub disk_read_iops: f64,
    pub disk_write_iops: f64,
    pub net_rx_bps: f64,
    pub net_tx_bps: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VmHistory {
    /// Seconds between samples.
    pub interval_s: f64,
    pub cpu_pct_guest: Vec<f64>,
    pub disk_read_bps: Vec<f64>,
    pub disk_write_bps: Vec<f64>,
    pub net_rx_bps: Vec<f64>,
    pub net_tx_bps: Vec<f64>,
}

/// One service as the overlay knows it, with every provider found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceView {
    pub name: String,
    /// Service type, e.g. "http", "kv".
    pub kind: String,
    pub tags: Vec<(String, String)>,
    pub providers: Vec<ProviderView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProviderView {
    pub peer_id: String,
    pub peer_nick: String,
    /// VM serving it, or None for a legacy host service (`peervisor expose`).
    pub vm: Option<String>,
    pub latency_ms: Option<f64>,
    pub load: Option<PeerLoad>,
    /// True when this peer provides it.
    pub local: bool,
}

/// A local listener forwarding connections to a service through the overlay.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConsumptionView {
    pub service: String,
    /// e.g. "127.0.0.1:8080"
    pub listen: String,
    pub connections_total: u64,
    pub connections_active: u64,
    pub bytes_to_service: u64,
    pub bytes_from_service: u64,
    pub errors: u64,
    /// Provider the last connection went to (display name).
    pub last_provider: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OperationKind {
    /// This peer sends a VM away.
    MigrateOut,
    /// This peer receives a VM.
    MigrateIn,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OperationPhase {
    Requested,
    Transferring,
    Done,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OperationView {
    pub id: u64,
    pub kind: OperationKind,
    pub vm: String,
    /// The other side (display name).
    pub peer: String,
    pub phase: OperationPhase,
    /// Seconds since the operation started (or its total time once ended).
    pub elapsed_s: f64,
    /// Error message when failed.
    pub error: Option<String>,
}
