//! The data every part of peervisor shows or exchanges: what the console draws,
//! what `peervisor status --json` prints, what the control socket carries.
//! Plain serde types, no behaviour beyond small helpers.

use serde::{Deserialize, Serialize};

pub use crate::names::{ServiceName, VmName};

/// One snapshot of a node as seen by its operator.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// This peer.
    pub local: LocalPeer,
    /// Other peers of the overlay this node knows about.
    pub peers: Vec<PeerView>,
    /// VMs hosted on this peer.
    pub vms: Vec<VmView>,
    /// VMs of other peers with the figures their hosts gave: those a console
    /// watches (on screen), or every one for a one-shot `status`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_vms: Vec<RemoteVmView>,
    /// Running and recent migrations and replications started or received by
    /// this peer; then those of other peers (`host` set) that this peer
    /// started there or that move VMs its consoles watch.
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
    /// Hadoop/Spark jobs seen by the configured benchmark sources (`--yarn`, `--spark`).
    #[serde(default)]
    pub jobs: Vec<JobView>,
    /// How each configured job source answered at its last poll.
    #[serde(default)]
    pub job_sources: Vec<JobSourceView>,
    /// The running or latest penalty benchmark (`peervisor bench penalty`).
    #[serde(default)]
    pub penalty: Option<PenaltyView>,
    /// The control protocol's traffic since the node started, per message
    /// kind: what remote figures, actions and migrations cost the overlay.
    /// Filled by a one-shot `status` only (not pushed to consoles).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub control_traffic: Vec<ControlTally>,
}

/// One kind of control message, each way, since the node started: CBOR bytes
/// as encoded (the stream's negotiation and the transport's framing aside).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ControlTally {
    /// The message's kind: `VmFigures`, `VmAction`, `Refused`, ...
    pub kind: String,
    pub message: MessageRole,
    pub sent: u64,
    pub sent_bytes: u64,
    pub received: u64,
    pub received_bytes: u64,
}

/// A control message is a request, or the answer to one.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    #[default]
    Request,
    Answer,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LocalPeer {
    pub peer_id: String,
    pub nick: String,
    pub listen_addrs: Vec<String>,
    /// libvirt connection URI this peer hosts VMs on.
    pub hypervisor: String,
    /// Whose libvirt that is: a private daemon of the peer's own, or an
    /// existing one named by `--hypervisor` or `LIBVIRT_DEFAULT_URI`.
    #[serde(default)]
    pub hypervisor_origin: HypervisorOrigin,
    /// "kvm" or "tcg".
    pub accel: String,
    /// Host figures (sysinfo), once sampled.
    #[serde(default)]
    pub host: Option<HostStats>,
    /// What this peer lends to VMs other peers push in, and what its VMs use of it.
    #[serde(default)]
    pub lending: Option<LendingView>,
    /// Whether the libvirt connection is up or being reopened.
    #[serde(default)]
    pub libvirt: LibvirtLink,
    /// Whether other peers can dial this one directly (AutoNAT).
    #[serde(default)]
    pub reachability: Reachability,
}

/// Where a peer's libvirt comes from (docs/hosting.md, "which libvirt").
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HypervisorOrigin {
    /// A libvirtd the peer started for itself (the default).
    #[default]
    Private,
    /// An existing libvirt named with `--hypervisor URI`.
    Flag,
    /// An existing libvirt named by `LIBVIRT_DEFAULT_URI`.
    Environment,
}

impl HypervisorOrigin {
    /// A few words for `status` and the console header.
    pub fn describe(&self) -> &'static str {
        match self {
            HypervisorOrigin::Private => "private libvirtd",
            HypervisorOrigin::Flag => "host's libvirt, from --hypervisor",
            HypervisorOrigin::Environment => "host's libvirt, from LIBVIRT_DEFAULT_URI",
        }
    }
}

/// What a VM's network card is plugged into.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum NicSource {
    /// The peer's own guest bridge (a private daemon's), a static address
    /// derived from the VM's UUID.
    #[default]
    GuestBridge,
    /// A libvirt network, e.g. `default`; the guest asks its DHCP for an address.
    Network(String),
    /// A host bridge, e.g. `br0`; the guest asks the LAN's DHCP for an address.
    Bridge(String),
}

impl std::fmt::Display for NicSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NicSource::GuestBridge => write!(f, "peervisor's guest bridge"),
            NicSource::Network(name) => write!(f, "libvirt network '{name}'"),
            NicSource::Bridge(name) => write!(f, "bridge '{name}'"),
        }
    }
}

/// What AutoNAT found out about this peer: other peers were asked to dial it back.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum Reachability {
    /// Not probed yet, or no peer to ask.
    #[default]
    Unknown,
    /// A peer dialed this one back at `address`.
    Public { address: String },
    /// Dial-backs failed: behind NAT or a firewall; reached through relays.
    Private,
}

impl Reachability {
    /// One word for the console header and `status`.
    pub fn word(&self) -> &'static str {
        match self {
            Reachability::Unknown => "unknown",
            Reachability::Public { .. } => "public",
            Reachability::Private => "behind NAT",
        }
    }
}

/// The node's libvirt connection. Default: connected, never lost.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LibvirtLink {
    /// Set while the connection is lost and the node reconnects.
    #[serde(default)]
    pub lost: Option<LinkLost>,
    /// Seconds the daemon has not answered (connection kept, calls refused).
    #[serde(default)]
    pub not_answering_s: Option<f64>,
    /// Times the node reconnected since it started.
    #[serde(default)]
    pub reconnects: u32,
    /// How long the last outage lasted, in seconds.
    #[serde(default)]
    pub last_outage_s: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LinkLost {
    pub since_unix_ms: u64,
    /// Seconds since it was lost, when the status was taken.
    pub for_s: f64,
    pub why: String,
}

impl LibvirtLink {
    /// "connected", "connected (reconnected 2×, last outage 3.1 s)",
    /// "reconnecting for 4 s (the daemon closed the connection)" or
    /// "libvirtd not answering for 12 s".
    pub fn describe(&self) -> String {
        if let Some(s) = self.not_answering_s {
            return format!("libvirtd not answering for {s:.0} s");
        }
        match (&self.lost, self.last_outage_s) {
            (Some(lost), _) => format!("reconnecting for {:.0} s ({})", lost.for_s, lost.why),
            (None, Some(outage)) => format!(
                "connected (reconnected {}×, last outage {outage:.1} s)",
                self.reconnects
            ),
            (None, None) => "connected".to_string(),
        }
    }
}

/// Capacity a peer lends to incoming VMs (`--lend-*`), and its running and paused
/// VMs' share of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LendingView {
    pub vcpus: u32,
    pub vcpus_used: u32,
    pub memory_mib: u64,
    pub memory_used_mib: u64,
    pub disk_mib: u64,
    /// Parallel migrations each way.
    pub max_migrations: u32,
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
    pub vms: Option<Vec<VmName>>,
    pub addrs: Vec<String>,
    /// The load the peer announced (gossip), if heard.
    #[serde(default)]
    pub load: Option<PeerLoad>,
    /// Peer ids this peer announced it is connected to (topology edges).
    #[serde(default)]
    pub links: Vec<String>,
    /// Peer id of the relay this peer is reached through, when no connection to
    /// it is direct (NAT); `None` when direct or not connected.
    #[serde(default)]
    pub relayed_via: Option<String>,
}

/// Leaves out the rows of peers replaced by a restart: a node restarted under
/// the same nickname comes back with a new peer id, and its old entry stays in
/// the overlay's view (down) until every peer has seen it go. Once a peer of
/// that nickname is connected, its disconnected namesakes are not listed.
pub fn without_replaced(mut peers: Vec<PeerView>) -> Vec<PeerView> {
    let up: std::collections::HashSet<String> = peers
        .iter()
        .filter(|p| p.connected && !p.nick.is_empty())
        .map(|p| p.nick.clone())
        .collect();
    peers.retain(|p| p.connected || p.nick.is_empty() || !up.contains(&p.nick));
    peers
}

/// What a peer announces about its load.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PeerLoad {
    /// Host CPU use, 0..100.
    pub cpu_pct: f64,
    /// CPU this peer's running VMs use, % of its host's CPUs (the on-demand
    /// provision policy's signal: on a machine several peers share, each
    /// peer's own).
    #[serde(default)]
    pub vm_cpu_pct: f64,
    pub running_vms: u32,
    /// Consume connections its providers currently serve.
    pub connections: u32,
}

impl PeerView {
    /// The name an operator sees: the nickname, or a short peer id.
    pub fn display_name(&self) -> String {
        nick_or_short_id(&self.nick, &self.peer_id)
    }
}

/// A peer as an operator names it: its nickname, or a short peer id without one.
pub fn nick_or_short_id(nick: &str, peer_id: &str) -> String {
    if nick.is_empty() {
        short_peer_id(peer_id)
    } else {
        nick.to_string()
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
    pub name: VmName,
    pub uuid: String,
    pub state: VmState,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Guest address: the one peervisor gave it on its guest bridge, else the
    /// one learned from the guest (libvirt's DHCP leases, then the ARP table).
    pub ip: Option<String>,
    /// True when peervisor defined the VM or the operator adopted it (it
    /// carries our metadata).
    pub managed: bool,
    /// Defined by someone else and adopted (`vm adopt`): peervisor publishes
    /// and moves it, but never destroys it on its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
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

/// A VM on another peer as its host reported it (state, figures, history).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RemoteVmView {
    /// The host's peer id.
    pub host_id: String,
    pub vm: VmView,
    /// Seconds since the host answered (0 when fresh).
    #[serde(default)]
    pub age_s: u64,
}

/// A service as a manifest declares it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct ServiceSpec {
    pub name: ServiceName,
    /// Service type, e.g. "http", "kv", "echo".
    pub kind: String,
    /// TCP port inside the guest (or on the legacy target).
    pub port: u16,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// Connections served at once, all consumers together; None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_conns: Option<u32>,
    /// Peer ids that may consume it; empty: every peer with the consume role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

/// Rates computed from libvirt counter deltas.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VmStats {
    /// Share of all host CPUs, 0..100; None when libvirt gave no CPU time
    /// (shown "-", null in JSON: not measured is not idle).
    pub cpu_pct_host: Option<f64>,
    /// Share of the guest's vCPUs, 0..100; None as above.
    pub cpu_pct_guest: Option<f64>,
    /// None when neither the guest (balloon stats) nor QEMU reported it.
    pub mem_used_mib: Option<u64>,
    pub disk_read_bps: f64,
    pub disk_write_bps: f64,
    pub disk_read_iops: f64,
    pub disk_write_iops: f64,
    pub net_rx_bps: f64,
    pub net_tx_bps: f64,
    /// Seconds the rates cover (the time between the two samples compared):
    /// about the sampling interval, longer or shorter on a loaded host.
    #[serde(default)]
    pub span_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VmHistory {
    /// Seconds between samples, as configured.
    pub interval_s: f64,
    /// Seconds each sample covers, as measured: rate x span is what moved, even
    /// when a loaded host took its samples late.
    #[serde(default)]
    pub span_s: Vec<f64>,
    pub cpu_pct_guest: Vec<f64>,
    pub disk_read_bps: Vec<f64>,
    pub disk_write_bps: Vec<f64>,
    pub net_rx_bps: Vec<f64>,
    pub net_tx_bps: Vec<f64>,
}

/// One service as the overlay knows it, with every provider found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceView {
    pub name: ServiceName,
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
    pub vm: Option<VmName>,
    pub latency_ms: Option<f64>,
    pub load: Option<PeerLoad>,
    /// True when this peer provides it.
    pub local: bool,
}

/// A local listener forwarding connections to a service through the overlay.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConsumptionView {
    pub service: ServiceName,
    /// e.g. "127.0.0.1:8080"
    pub listen: String,
    pub connections_total: u64,
    pub connections_active: u64,
    pub bytes_to_service: u64,
    pub bytes_from_service: u64,
    pub errors: u64,
    /// Provider the last connection went to (display name).
    pub last_provider: Option<String>,
    /// Why the latest failed connection failed (e.g. the provider's refusal).
    #[serde(default)]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OperationKind {
    /// This peer sends a VM away.
    #[default]
    MigrateOut,
    /// This peer receives a VM.
    MigrateIn,
    /// This peer copies a VM to another as a replica (the VM stays here).
    ReplicateOut,
    /// This peer receives a replica.
    ReplicateIn,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OperationPhase {
    #[default]
    Requested,
    Transferring,
    Done,
    Failed,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OperationView {
    pub id: u64,
    pub kind: OperationKind,
    pub vm: VmName,
    /// The other side (display name).
    pub peer: String,
    pub phase: OperationPhase,
    /// Seconds since the operation started (or its total time once ended).
    pub elapsed_s: f64,
    /// Error message when failed.
    pub error: Option<String>,
    /// Share of the data sent, 0..=1 (libvirt job stats, source side).
    #[serde(default)]
    pub progress: Option<f64>,
    #[serde(default)]
    pub transferred_bytes: Option<u64>,
    #[serde(default)]
    pub remaining_bytes: Option<u64>,
    /// Guest memory pages dirtied per second.
    #[serde(default)]
    pub dirty_pages_per_s: Option<u64>,
    /// Pre-copy pass over memory (1 = first).
    #[serde(default)]
    pub iteration: Option<u64>,
    /// While running: libvirt's expected downtime; once done: the measured one.
    #[serde(default)]
    pub downtime_ms: Option<u64>,
    /// Longest time the VM's service did not answer the source's probe (sent
    /// migrations).
    #[serde(default)]
    pub probe_downtime_ms: Option<u64>,
    /// How a sent migration carries its data (`direct` or `tunnelled`), and why.
    #[serde(default)]
    pub transport: Option<String>,
    /// The peer that runs the operation (display name) when it is not this
    /// one: an operation this peer started there, or one that moves a VM its
    /// consoles watch. `id` is that host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl OperationView {
    /// What tells operations apart in a list: ids are per host.
    pub fn key(&self) -> String {
        match &self.host {
            Some(host) => format!("{}@{host}", self.id),
            None => self.id.to_string(),
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(self.phase, OperationPhase::Done | OperationPhase::Failed)
    }
}

/// Whether a workload is limited by the CPU or by I/O (disk, network).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Cpu,
    Io,
}

/// Seconds between polls of the job sources (one `JobView::history_bps` sample each).
pub const JOB_POLL_EVERY_S: u64 = 2;

/// `JobView::state` of a row whose application its UI no longer serves, when
/// no history server told how it ended (`JobView::note` says since when).
pub const JOB_ENDED: &str = "ENDED";

/// A Hadoop MapReduce job or Spark job seen through its REST API.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobView {
    /// "yarn" or "spark".
    pub source: String,
    /// e.g. "job_1326381300833_0002", or "app-2026...:3" for Spark.
    pub id: String,
    pub name: String,
    pub user: String,
    /// As the source says it: RUNNING, SUCCEEDED, FAILED, KILLED, ...
    pub state: String,
    /// Classic benchmark recognised by name (TestDFSIO, TeraSort, pi, ...).
    pub benchmark: Option<String>,
    /// What that benchmark is bound by.
    pub kind: Option<WorkloadKind>,
    /// 0..100.
    pub progress_pct: f64,
    pub maps_completed: u64,
    pub maps_total: u64,
    pub reduces_completed: u64,
    pub reduces_total: u64,
    /// Bytes read / written per second (HDFS + local file, or Spark input/output +
    /// shuffle), from counter deltas between polls; None until two polls.
    pub read_bps: Option<f64>,
    pub write_bps: Option<f64>,
    /// CPU milliseconds spent per wall second (1000 = one busy core).
    pub cpu_ms_per_s: Option<f64>,
    /// Cumulative counters at the last poll.
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub elapsed_s: f64,
    /// Node host names or addresses the job ran on.
    pub hosts: Vec<String>,
    /// VMs of this peer whose name or address matches one of `hosts`.
    pub vms: Vec<String>,
    /// Recent read+write throughput samples (bytes/s), oldest first.
    pub history_bps: Vec<f64>,
    /// Diagnostics of a failed job.
    pub error: Option<String>,
    /// The id of the row this one belongs to (a Spark job group's application);
    /// None for a top-level row. A parent is listed before its children.
    #[serde(default)]
    pub parent: Option<String>,
    /// Spark jobs done and known so far (`n of m jobs`): the total grows as an
    /// application submits more, which is why `progress_pct` is kept from
    /// going backwards. Both 0 for sources without such jobs (MapReduce).
    #[serde(default)]
    pub jobs_completed: u64,
    #[serde(default)]
    pub jobs_total: u64,
    /// How the state is known when it is not the source's live answer, e.g.
    /// "UI gone, last seen 2026-12-07T13:02:11Z" or "from the history server".
    #[serde(default)]
    pub note: Option<String>,
}

/// A configured job source and how it answered.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobSourceView {
    /// "yarn" or "spark".
    pub kind: String,
    pub url: String,
    /// True when the last poll succeeded.
    pub ok: bool,
    /// What went wrong (timeout, bad JSON, restart detected, ...), or a summary.
    pub message: String,
}

/// The virtualization-penalty benchmark: a run in progress or its results.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PenaltyView {
    /// "running", "done" or "failed".
    pub state: String,
    /// The current step, e.g. "run 2/3: seq-read in the VM".
    pub progress: String,
    pub steps_done: u32,
    pub steps_total: u32,
    /// Host name and CPU model.
    pub host: String,
    /// "kvm" or "tcg", with the probe's reason.
    pub accel: String,
    pub runs: u32,
    pub short: bool,
    /// Unix seconds.
    pub started_at: u64,
    pub rows: Vec<PenaltyRow>,
    pub error: Option<String>,
}

/// One workload measured natively and in the VM (throughputs, higher is better).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PenaltyRow {
    pub workload: String,
    pub kind: Option<WorkloadKind>,
    /// e.g. "MiB/s", "IOPS", "Mloop/s".
    pub unit: String,
    pub native: Vec<f64>,
    pub vm: Vec<f64>,
}

impl PenaltyRow {
    pub fn native_median(&self) -> Option<f64> {
        median(&self.native)
    }

    pub fn vm_median(&self) -> Option<f64> {
        median(&self.vm)
    }

    /// Throughput lost in the VM, in % of native (medians); negative if faster.
    pub fn penalty_pct(&self) -> Option<f64> {
        let (n, v) = (self.native_median()?, self.vm_median()?);
        // Figures at the edge of f64 (a damaged results file) give no penalty.
        Some((1.0 - v / n) * 100.0).filter(|p| n > 0.0 && p.is_finite())
    }
}

/// Median of the samples; None when empty.
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    Some(if s.len().is_multiple_of(2) {
        // Halves first: the sum of two huge figures would be infinite.
        s[mid - 1] / 2.0 + s[mid] / 2.0
    } else {
        s[mid]
    })
}

/// Half the range as % of the median: "±x%" spread of repeated runs.
pub fn spread_pct(samples: &[f64]) -> Option<f64> {
    let m = median(samples)?;
    let lo = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (m > 0.0).then(|| (hi - lo) / 2.0 / m * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_restarted_under_its_nickname_replaces_its_old_row_once_up() {
        let peer = |id: &str, nick: &str, connected: bool| PeerView {
            peer_id: id.into(),
            nick: nick.into(),
            connected,
            ..PeerView::default()
        };
        let ids = |peers: Vec<PeerView>| -> Vec<String> {
            without_replaced(peers)
                .into_iter()
                .map(|p| p.peer_id)
                .collect()
        };
        // The new id of "b" is up: the old one's row goes.
        assert_eq!(
            ids(vec![
                peer("old-b", "b", false),
                peer("new-b", "b", true),
                peer("c", "c", false)
            ]),
            ["new-b", "c"]
        );
        // Not up yet: both rows stay (the old one may be the live one).
        assert_eq!(
            ids(vec![peer("old-b", "b", false), peer("new-b", "b", false)]),
            ["old-b", "new-b"]
        );
        // Peers without a nickname yet are never merged.
        assert_eq!(
            ids(vec![peer("x", "", false), peer("y", "", true)]),
            ["x", "y"]
        );
    }

    #[test]
    fn penalty_figures_stay_finite_at_the_edge_of_f64() {
        let row = |native: Vec<f64>, vm: Vec<f64>| PenaltyRow {
            native,
            vm,
            ..PenaltyRow::default()
        };
        assert_eq!(
            row(vec![1e308, 1e308], vec![1.0]).native_median(),
            Some(1e308)
        );
        assert_eq!(row(vec![1e-6], vec![1e308]).penalty_pct(), None);
        assert_eq!(row(vec![200.0], vec![50.0]).penalty_pct(), Some(75.0));
    }

    #[test]
    fn libvirt_link_says_what_state_it_is_in() {
        let mut link = LibvirtLink::default();
        assert_eq!(link.describe(), "connected");
        link.lost = Some(LinkLost {
            since_unix_ms: 1,
            for_s: 2.4,
            why: "the daemon closed the connection".into(),
        });
        assert_eq!(
            link.describe(),
            "reconnecting for 2 s (the daemon closed the connection)"
        );
        link.lost = None;
        link.reconnects = 1;
        link.last_outage_s = Some(0.42);
        assert_eq!(
            link.describe(),
            "connected (reconnected 1×, last outage 0.4 s)"
        );
        // A status from a node without the field reads as connected.
        let old: LocalPeer = serde_json::from_str(
            r#"{"peer_id":"p","nick":"n","listen_addrs":[],"hypervisor":"h","accel":"tcg"}"#,
        )
        .unwrap();
        assert_eq!(old.libvirt, LibvirtLink::default());
    }
}
