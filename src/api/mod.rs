//! What the operator asks of a node and what it answers: the control API's
//! requests and replies. The console builds them straight from keys, dialogs and
//! its command line; the CLI from its arguments; `control` carries them as JSON
//! lines and `Peer::handle` answers them. Plain serde types (base layer).

mod role;
pub mod update;

pub use role::Role;
pub use update::{Delta, Samples, Update, VmSample};

use serde::{Deserialize, Serialize};

use crate::model::{ConsumptionView, NicSource, ServiceSpec, ServiceView, Status, VmView};
use crate::names::{PeerRef, ServiceName, VmName};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// One snapshot of the node (`peervisor status`).
    Status,
    /// The node's state pushed as it changes (the attached console): answered
    /// with a line per `Update`, a snapshot first, until the client hangs up.
    Subscribe,
    VmList,
    VmCreate {
        name: VmName,
        vcpus: u32,
        memory_mib: u64,
        image: String,
        /// From the VM's manifest; stored in its domain XML, started by the guest.
        #[serde(default)]
        services: Vec<ServiceSpec>,
        /// Size of a qcow2 data disk to create, MiB.
        #[serde(default)]
        data_disk_mib: Option<u64>,
        /// Where its NIC goes; None: the node's default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nic: Option<NicSource>,
        /// Boot from this disk image (imported name or path) instead of `image`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disk: Option<String>,
        /// With `disk`: the image itself, no copy-on-write overlay.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        no_overlay: bool,
        /// With `disk`: cloud-init user-data (the file's text, read by the
        /// CLI) for a NoCloud seed attached to the VM.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_data: Option<String>,
    },
    /// Writes our metadata with these services into a VM defined outside
    /// peervisor: its services are published, it can be migrated.
    VmAdopt {
        name: VmName,
        #[serde(default)]
        services: Vec<ServiceSpec>,
    },
    /// Takes an adopted VM's metadata out again: foreign, unpublished.
    VmRelease {
        name: VmName,
    },
    VmStart {
        name: VmName,
        /// Act on a VM peervisor did not create.
        #[serde(default)]
        foreign: bool,
    },
    /// Graceful (ACPI) shutdown, powered off after `timeout_s`; `force`: power off now.
    VmStop {
        name: VmName,
        force: bool,
        #[serde(default)]
        timeout_s: Option<u64>,
        #[serde(default)]
        foreign: bool,
    },
    VmPause {
        name: VmName,
        #[serde(default)]
        foreign: bool,
    },
    VmResume {
        name: VmName,
        #[serde(default)]
        foreign: bool,
    },
    /// Powers off, undefines and removes the disks peervisor made for the VM.
    VmRemove {
        name: VmName,
        #[serde(default)]
        foreign: bool,
    },
    /// One VM with its latest rates and history (answered with `Vms`).
    VmStats {
        name: VmName,
    },
    /// Attach to a VM's serial console (here, or on its host over the
    /// overlay with the control role): answered `Done`, then the connection
    /// carries the console's raw bytes both ways until either side closes.
    VmConsole {
        name: VmName,
    },
    /// The tail of a VM's boot log (the file its serial console is logged
    /// to on its host; at most `BOOT_LOG_TAIL` bytes): here, or asked of its
    /// host over the overlay (observe role). Answered `BootLog`.
    VmBootLog {
        name: VmName,
    },
    Migrate {
        vm: VmName,
        to: PeerRef,
        /// Longest pause libvirt may impose at switch-over.
        #[serde(default)]
        max_downtime_ms: Option<u64>,
        /// Cap on the transfer rate, MiB/s.
        #[serde(default)]
        bandwidth_mib_s: Option<u64>,
        /// Migrate a VM peervisor did not create.
        #[serde(default)]
        foreign: bool,
        /// Answer once the destination has accepted (`MigrationStarted`) instead
        /// of at the end (`Migrated`).
        #[serde(default)]
        detach: bool,
    },
    /// Cancel the running outgoing migration of a VM; it stays here.
    MigrateAbort {
        vm: VmName,
    },
    /// Copy a VM (definition and data disk) to another peer and start it there
    /// under a new name, as one more provider of its services.
    Replicate {
        vm: VmName,
        to: PeerRef,
        /// Name of the replica (default: VM-rN).
        #[serde(default)]
        name: Option<VmName>,
        /// Answer once the copy has begun (`ReplicationStarted`) instead of
        /// at the end (`Replicated`); the outcome is kept with the operation.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        detach: bool,
    },
    /// Services of the whole overlay.
    Services,
    /// Resolve a service through the DHT (even if gossip missed it).
    Find {
        name: ServiceName,
    },
    Consume {
        service: ServiceName,
        local_port: Option<u16>,
        bind: Option<String>,
    },
    Unconsume {
        service: ServiceName,
    },
    Expose {
        name: ServiceName,
        target: String,
        kind: Option<String>,
        /// Peers (ids or nicknames) that may consume it; empty: every consumer.
        #[serde(default)]
        allow: Vec<PeerRef>,
        /// Connections it serves at once.
        #[serde(default)]
        max_conns: Option<u32>,
    },
    Unexpose {
        name: ServiceName,
    },
    /// Grant a role to a peer (by id, or nickname of a known peer).
    PeersAllow {
        peer: PeerRef,
        role: Role,
    },
    /// Drop a peer's grant (back to the default role).
    PeersForget {
        peer: PeerRef,
    },
    PeersList,
    /// `peervisor invite`: a join token for a new host, granting `role`.
    Invite {
        role: Role,
        expires_s: u64,
        /// Addresses to put in the token (default: the node's listen addresses).
        #[serde(default)]
        addresses: Vec<String>,
    },
    InviteRevoke {
        id: String,
    },
    InviteList,
    /// The console's VMs of other peers on screen: the node fetches their
    /// figures from their hosts (rate-bounded) and pushes them while the watch
    /// is renewed (it lapses after `WATCH_TTL_S`).
    Watch {
        vms: Vec<RemoteVmKey>,
    },
}

/// A watch lapses unless renewed within this many seconds.
pub const WATCH_TTL_S: u64 = 15;

/// A VM on another peer: its host's peer id and its name there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteVmKey {
    pub host_id: String,
    pub vm: VmName,
}

/// The requests the console sends, with the defaults an operator at the
/// console gets (a graceful stop, no bandwidth cap, only peervisor's own VMs).
impl Request {
    pub fn migrate(vm: impl Into<VmName>, to: impl Into<PeerRef>) -> Request {
        Request::Migrate {
            vm: vm.into(),
            to: to.into(),
            max_downtime_ms: None,
            bandwidth_mib_s: None,
            foreign: false,
            detach: false,
        }
    }

    /// A copy started on `to` under the default replica name.
    pub fn replicate(vm: impl Into<VmName>, to: impl Into<PeerRef>) -> Request {
        Request::Replicate {
            vm: vm.into(),
            to: to.into(),
            name: None,
            detach: false,
        }
    }

    pub fn start(name: impl Into<VmName>) -> Request {
        Request::VmStart {
            name: name.into(),
            foreign: false,
        }
    }

    /// Graceful (ACPI), powered off after the node's default timeout.
    pub fn stop(name: impl Into<VmName>) -> Request {
        Request::VmStop {
            name: name.into(),
            force: false,
            timeout_s: None,
            foreign: false,
        }
    }

    pub fn pause(name: impl Into<VmName>) -> Request {
        Request::VmPause {
            name: name.into(),
            foreign: false,
        }
    }

    pub fn resume(name: impl Into<VmName>) -> Request {
        Request::VmResume {
            name: name.into(),
            foreign: false,
        }
    }

    pub fn remove(name: impl Into<VmName>) -> Request {
        Request::VmRemove {
            name: name.into(),
            foreign: false,
        }
    }

    pub fn consume(service: impl Into<ServiceName>, local_port: Option<u16>) -> Request {
        Request::Consume {
            service: service.into(),
            local_port,
            bind: None,
        }
    }

    pub fn expose(name: impl Into<ServiceName>, target: String) -> Request {
        Request::Expose {
            name: name.into(),
            target,
            kind: None,
            allow: Vec::new(),
            max_conns: None,
        }
    }

    /// "Migration of web-1", for the console's status line and log.
    pub fn describe(&self) -> String {
        match self {
            Request::Migrate { vm, .. } => format!("Migration of {vm}"),
            Request::Replicate { vm, .. } => format!("Replication of {vm}"),
            Request::MigrateAbort { vm } => format!("Abort of {vm}'s migration"),
            Request::VmStart { name, .. } => format!("Start of {name}"),
            Request::VmStop { name, .. } => format!("Stop of {name}"),
            Request::VmPause { name, .. } => format!("Pause of {name}"),
            Request::VmResume { name, .. } => format!("Resume of {name}"),
            Request::VmRemove { name, .. } => format!("Deletion of {name}"),
            Request::VmCreate { name, .. } => format!("Creation of {name}"),
            Request::VmAdopt { name, .. } => format!("Adoption of {name}"),
            Request::VmRelease { name } => format!("Release of {name}"),
            Request::VmStats { name } => format!("Stats of {name}"),
            Request::VmConsole { name } => format!("Console of {name}"),
            Request::VmBootLog { name } => format!("Boot log of {name}"),
            Request::Consume { service, .. } => format!("Consume {service}"),
            Request::Unconsume { service } => format!("Unconsume {service}"),
            Request::Expose { name, .. } => format!("Expose {name}"),
            Request::Unexpose { name } => format!("Unexpose {name}"),
            Request::Find { name } => format!("Find {name}"),
            Request::PeersAllow { peer, role } => format!("Grant {role} to {peer}"),
            Request::PeersForget { peer } => format!("Forget {peer}"),
            Request::Status => "Status".into(),
            Request::Subscribe => "Updates".into(),
            Request::VmList => "VM list".into(),
            Request::Services => "Services".into(),
            Request::PeersList => "Grants".into(),
            Request::Watch { .. } => "Watch".into(),
            Request::Invite { role, .. } => format!("Invitation ({role})"),
            Request::InviteRevoke { id } => format!("Revocation of invitation {id}"),
            Request::InviteList => "Invitations".into(),
        }
    }

    /// Acts on one VM where it runs (start, stop, pause, resume, migrate,
    /// abort, replicate, stats): a node passes it on to the VM's host when the
    /// VM is not its own, and a host takes it from another peer with the
    /// control role (stats: observe).
    pub fn is_vm_action(&self) -> bool {
        matches!(
            self,
            Request::VmStart { .. }
                | Request::VmStop { .. }
                | Request::VmPause { .. }
                | Request::VmResume { .. }
                | Request::Migrate { .. }
                | Request::MigrateAbort { .. }
                | Request::Replicate { .. }
        )
    }

    /// The VM it acts on, if any.
    pub fn vm(&self) -> Option<&str> {
        match self {
            Request::Migrate { vm, .. }
            | Request::Replicate { vm, .. }
            | Request::MigrateAbort { vm } => Some(vm.as_str()),
            Request::VmStart { name, .. }
            | Request::VmStop { name, .. }
            | Request::VmPause { name, .. }
            | Request::VmResume { name, .. }
            | Request::VmRemove { name, .. }
            | Request::VmCreate { name, .. }
            | Request::VmAdopt { name, .. }
            | Request::VmRelease { name }
            | Request::VmStats { name }
            | Request::VmConsole { name }
            | Request::VmBootLog { name } => Some(name.as_str()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Status(Box<Status>),
    /// One line of the answer to `Subscribe`.
    Update(Box<Update>),
    Vms {
        vms: Vec<VmView>,
    },
    Done {
        message: String,
    },
    Migrated(MigrationReport),
    /// A detached migration was accepted by its destination and is transferring.
    MigrationStarted {
        vm: VmName,
        to: String,
        operation: u64,
    },
    Replicated(Box<ReplicationReport>),
    /// A detached replication has begun (the source's checks passed).
    ReplicationStarted {
        vm: VmName,
        to: String,
        operation: u64,
    },
    Services {
        services: Vec<ServiceView>,
    },
    Consuming(ConsumptionView),
    Grants {
        grants: Vec<(String, String)>,
        default_role: String,
    },
    /// A new invitation: the token to give the joining host.
    Invitation {
        token: String,
        id: String,
        expires: String,
    },
    Invitations {
        invitations: Vec<InvitationView>,
    },
    BootLog(BootLog),
}

/// The most of a boot log one answer carries: its end, where the latest
/// boot is (and well within the overlay's 1 MiB answers).
pub const BOOT_LOG_TAIL: u64 = 64 * 1024;

/// The end of a VM's boot log as its host read it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BootLog {
    pub vm: VmName,
    /// The host's nickname.
    pub host: String,
    /// The log file on the host.
    pub path: String,
    /// The file's whole size; `text` is its last `BOOT_LOG_TAIL` bytes at most.
    pub size: u64,
    /// Lossy UTF-8, as the guest wrote it (control characters included).
    pub text: String,
}

/// One invitation as `peervisor invite --list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InvitationView {
    pub id: String,
    pub role: Role,
    pub expires: String,
    /// open, used by PEER at TIME, expired, revoked
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MigrationReport {
    pub vm: VmName,
    pub from: String,
    pub to: String,
    pub to_peer_id: String,
    /// Total time, request to switch-over done.
    pub seconds: f64,
    /// The guest's pause at switch-over, as libvirt measured it.
    #[serde(default)]
    pub downtime_ms: Option<u64>,
    /// Bytes libvirt sent (memory, and disks when not shared).
    #[serde(default)]
    pub transferred_bytes: Option<u64>,
    /// Of those, the bytes of the VM's disks copied to the destination (None
    /// when the disks are shared or the VM has none).
    #[serde(default)]
    pub disk_bytes: Option<u64>,
    /// Longest time the VM's service did not answer a probe every 25 ms during
    /// the migration (None: the VM has no service on the guest network).
    #[serde(default)]
    pub probe_downtime_ms: Option<u64>,
    /// `direct` (our channels) or `tunnelled` (inside libvirt's connection),
    /// with why (migrate/transport.rs).
    #[serde(default)]
    pub transport: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicationReport {
    pub vm: VmName,
    pub replica: VmName,
    pub from: String,
    pub to: String,
    pub to_peer_id: String,
    /// The replica's guest address on the destination.
    pub replica_ip: String,
    /// Total time, request to replica started.
    pub seconds: f64,
    /// How long the source VM was paused for a consistent copy of its disk
    /// (only when it could not be frozen under an overlay).
    #[serde(default)]
    pub paused_ms: Option<u64>,
    /// How the disk image was taken: "overlay" (no pause), "paused copy" or
    /// "copy" (the VM was not running).
    #[serde(default)]
    pub consistent_copy: Option<String>,
    /// Overlay: the snapshot call, and merging the overlay back afterwards.
    #[serde(default)]
    pub overlay_ms: Option<u64>,
    #[serde(default)]
    pub commit_ms: Option<u64>,
    /// The data disk's transfer; None for a VM without one.
    #[serde(default)]
    pub disk: Option<DiskTransfer>,
}

/// Sizes and checksums of a replicated disk file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DiskTransfer {
    /// Size of the disk the guest sees.
    pub virtual_bytes: u64,
    /// Length of the disk file (qcow2), holes included.
    pub file_bytes: u64,
    /// What the file occupies on the source's filesystem.
    pub allocated_bytes: u64,
    /// Non-zero data in the file's allocated extents.
    pub data_bytes: u64,
    pub chunks_total: usize,
    /// Chunks this attempt sent (fewer when it resumed a cut one).
    pub chunks_sent: usize,
    pub sent_data_bytes: u64,
    /// Everything written to the stream: definition, plan, chunk headers, data.
    pub wire_bytes: u64,
    /// Whole-file SHA-256 of the source's consistent copy and of the replica's
    /// file as the destination read it back before booting it.
    pub source_sha256: Option<String>,
    pub replica_sha256: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The console's requests carry the defaults an operator expects: only
    /// peervisor's VMs, a graceful stop, no caps, an answer at the end.
    #[test]
    fn console_requests_carry_the_operators_defaults() {
        assert_eq!(
            Request::migrate("web-1", "peer-b"),
            Request::Migrate {
                vm: "web-1".into(),
                to: "peer-b".into(),
                max_downtime_ms: None,
                bandwidth_mib_s: None,
                foreign: false,
                detach: false,
            }
        );
        assert_eq!(
            Request::stop("a"),
            Request::VmStop {
                name: "a".into(),
                force: false,
                timeout_s: None,
                foreign: false
            }
        );
        assert_eq!(
            Request::consume("web", Some(8080)),
            Request::Consume {
                service: "web".into(),
                local_port: Some(8080),
                bind: None
            }
        );
        assert_eq!(
            Request::expose("pg", "127.0.0.1:5432".into()),
            Request::Expose {
                name: "pg".into(),
                target: "127.0.0.1:5432".into(),
                kind: None,
                allow: Vec::new(),
                max_conns: None,
            }
        );
        assert_eq!(
            Request::pause("a"),
            Request::VmPause {
                name: "a".into(),
                foreign: false
            }
        );
        let abort = Request::MigrateAbort { vm: "web-1".into() };
        assert_eq!(abort.describe(), "Abort of web-1's migration");
        assert_eq!(abort.vm(), Some("web-1"));
        assert_eq!(Request::remove("db").describe(), "Deletion of db");
        assert_eq!(Request::consume("web", None).vm(), None);
    }
}
