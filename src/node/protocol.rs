//! Messages peers exchange over the overlay: the control protocol (request-response,
//! CBOR), gossip announcements, and the libvirt tunnel stream's header.

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::model::PeerLoad;

pub const CONTROL_PROTOCOL: StreamProtocol = StreamProtocol::new("/peervisor/control/1");
pub const TUNNEL_PROTOCOL: StreamProtocol = StreamProtocol::new("/peervisor/libvirt-tunnel/1");
/// The data channels of a migration that copies disks: QEMU's memory stream and
/// its NBD disk copy (header: the token, then a channel tag; migrate/tunnel.rs).
pub const CHANNEL_PROTOCOL: StreamProtocol = StreamProtocol::new("/peervisor/migration-channel/1");
/// Byte streams of consumed services: a header naming the service, then raw bytes.
pub const SERVICE_PROTOCOL: StreamProtocol = StreamProtocol::new("/peervisor/service/1");
/// Replication of a VM: its definition and its disk's data chunks (migrate/replica/wire.rs).
pub const REPLICA_PROTOCOL: StreamProtocol = StreamProtocol::new("/peervisor/replicate/1");
/// A guest's serial console (vms/console.rs): a header naming the VM, the
/// host's answer, then the console's bytes both ways.
pub const CONSOLE_PROTOCOL: StreamProtocol = StreamProtocol::new("/peervisor/console/1");
pub const ANNOUNCE_TOPIC: &str = "peervisor/announce/1";
/// Identify agent version prefix; the nickname follows it.
pub const AGENT_PREFIX: &str = "peervisor/";

/// A request one peer makes of another.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ControlRequest {
    /// "May I live-migrate this VM to you?" Sent before any byte of the VM moves.
    PrepareMigration {
        vm: String,
        uuid: String,
        vcpus: u32,
        memory_mib: u64,
        /// Virtual size of the VM's disks, MiB (checked against what the host lends).
        #[serde(default)]
        disk_mib: u64,
        /// Files the VM boots from (kernel, initramfs, firmware), which must exist
        /// on the destination at the same paths.
        #[serde(default)]
        boot_files: Vec<String>,
        /// The VM's disk files (empty for a disk-less VM): the destination sees
        /// whether they are shared with it or must be copied.
        #[serde(default)]
        disks: Vec<DiskOffer>,
        /// The VM's address on the source's network (learned there): a
        /// destination that learns addresses from its ARP table asks for it
        /// once the VM arrived, so the VM is found there before it speaks.
        #[serde(default)]
        address: Option<String>,
    },
    /// The source reports how the migration ended, so the destination can drop the
    /// tunnel authorization and record the outcome.
    MigrationEnded {
        token: u64,
        ok: bool,
        /// Why it failed, as the source's operator sees it.
        #[serde(default)]
        error: Option<String>,
    },
    /// "Which services do you provide?" (after a DHT lookup found this peer).
    ListServices,
    /// "Is this VM (name and UUID) on your host, and in which state?" The source
    /// of a failed migration asks before it resumes a VM libvirt left paused.
    VmState { vm: String, uuid: String },
    /// "What do you know of the overlay?" A new node asks one neighbour for the
    /// latest announcement of every peer, instead of waiting for each peer's
    /// next periodic one (answered by the node itself), a page at a time:
    /// peers whose id sorts after `after`; only the digest buckets listed in
    /// `buckets` (node/digest.rs), or all when it is empty.
    Snapshot {
        #[serde(default)]
        after: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        buckets: Vec<u8>,
    },
    /// "What is the digest of what you know?" (anti-entropy, node/digest.rs).
    Digest,
    /// "The latest figures (state, rates, history) of these VMs of yours": a
    /// console elsewhere shows them (observe role; at most `MAX_FIGURES` names).
    VmFigures {
        vms: Vec<String>,
        /// Also their history (the asker has none yet, or missed a round).
        #[serde(default)]
        history: bool,
    },
    /// An operator elsewhere acts on a VM of this host (control role): start,
    /// stop, pause, resume, migrate (also to a third peer), abort, replicate.
    VmAction { request: crate::api::Request },
    /// "How are these operations of yours going?": the asker started them
    /// here (a detached migration or replication) and follows them (observe
    /// role; at most `MAX_FOLLOWED` ids).
    Operations { ids: Vec<u64> },
    /// "The end of this VM's boot log" (observe role; `api::BOOT_LOG_TAIL`).
    VmBootLog { vm: String },
    /// "Here is the secret of your invitation" (`peervisor join`; join/).
    Redeem { secret: String },
    /// From a trust group's authority: every member of its group now (join/).
    GroupMembers { members: Vec<String> },
    /// "I am closing our connections to keep my own count bounded; I am not
    /// going away": answered `Ack`, then the asker closes. The peer told so
    /// takes the close for no departure and does not dial back to check
    /// (node/upkeep.rs). An older peer cannot decode it and checks as before.
    Trimming,
}

/// VMs one `VmFigures` request may name (a screenful and then some), and
/// the samples of history sent for each: the answer stays well within the
/// control protocol's 1 MiB.
pub const MAX_FIGURES: usize = 128;
pub const MAX_FIGURES_HISTORY: usize = 120;
/// Operations one `Operations` request may name.
pub const MAX_FOLLOWED: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ControlResponse {
    /// Migration authorized: open tunnel streams that start with this token.
    MigrationAccepted {
        token: u64,
        /// The files the destination made for the VM's disks, in the order of
        /// `PrepareMigration::disks`; empty when the disks are shared (or none).
        #[serde(default)]
        disk_copies: Vec<String>,
        /// The copies are overlays on base images the destination has (the
        /// same checksum): only the top layer is copied (`NON_SHARED_INC`).
        #[serde(default)]
        incremental: bool,
        /// Why this destination's QEMU cannot use direct data channels (its
        /// libvirt confines QEMU): the source then tunnels.
        #[serde(default)]
        direct_refused: Option<String>,
        /// Free ports on the destination's loopback (memory, disks) where its
        /// QEMU will listen in a loopback migration (transport.rs `Loopback`;
        /// None: no disk is copied, or its QEMU cannot listen on this node's
        /// loopback).
        #[serde(default)]
        loopback_ports: Option<[u16; 2]>,
    },
    Refused {
        reason: String,
    },
    Ack,
    /// A migration arrived: what libvirt measured (destination's completed job).
    MigrationStats {
        downtime_ms: Option<u64>,
        transferred_bytes: Option<u64>,
        /// The destination checked that the VM runs there (the source may then
        /// delete its copy of the disks).
        #[serde(default)]
        running: bool,
    },
    Services {
        services: Vec<ServiceRecord>,
        load: PeerLoad,
    },
    /// The answer to `VmState`: None when no VM of that name and UUID is here.
    VmState {
        state: Option<crate::model::VmState>,
    },
    /// The answer to `Snapshot`: (peer id, its latest announcement, without
    /// its links), hearsay from a member, as DHT records are; validated like
    /// gossip. `more`: ask again after the last peer id.
    Snapshot {
        announcements: Vec<(String, Announcement)>,
        #[serde(default)]
        more: bool,
        /// Peers known gone (first page only).
        #[serde(default)]
        departed: Vec<Departure>,
    },
    /// The answer to `Digest`: the digest of all, and one per bucket of peer
    /// ids (empty from an older node), so the asker pulls only what differs.
    Digest {
        digest: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        buckets: Vec<u64>,
    },
    /// The answer to `VmFigures`: the named VMs this host has, with figures.
    VmFigures {
        vms: Vec<crate::model::VmView>,
        /// The host's sampler round the figures come from: consecutive rounds
        /// let the asker extend the history it has without asking for it.
        #[serde(default)]
        round: u64,
        /// The host's running and recent operations on those VMs (migrations
        /// and replications), so the asker's consoles see them move.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        operations: Vec<crate::model::OperationView>,
    },
    /// The answer to `Operations`: those the host still knows, each with
    /// its report once completed (what the asker's `--wait` prints).
    Operations {
        operations: Vec<(crate::model::OperationView, Option<crate::api::Reply>)>,
    },
    /// The answer to `VmAction`: what the host's own control API answered.
    Acted {
        reply: crate::api::Reply,
    },
    /// The answer to `VmBootLog`.
    BootLog {
        log: crate::api::BootLog,
    },
    /// An invitation redeemed: the role granted, and (for `control`) the members
    /// of the inviter's trust group, inviter first.
    Joined {
        role: String,
        members: Vec<String>,
    },
}

/// One disk of a migrating VM, as the source sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DiskOffer {
    pub path: String,
    /// The size the guest sees (a qcow2's virtual size).
    pub virtual_bytes: u64,
    /// Device and inode of the file at the source: a destination that finds the
    /// same file at the same path shares the storage (peers of one machine).
    #[serde(default)]
    pub file_id: Option<(u64, u64)>,
    /// SHA-256 of the base image the disk is a copy-on-write overlay on: a
    /// destination with an imported image of that checksum makes an overlay on
    /// it, and only the overlay is copied.
    #[serde(default)]
    pub base_sha256: Option<String>,
}

/// What every peer periodically tells the overlay about itself (gossipsub).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Announcement {
    pub nick: String,
    pub vms: Vec<String>,
    /// Everything this peer provides right now; a service missing from the next
    /// announcement is withdrawn.
    #[serde(default)]
    pub services: Vec<ServiceRecord>,
    #[serde(default)]
    pub load: PeerLoad,
    /// Peer ids this peer is connected to (filled in by the node); empty when
    /// `links_unchanged`.
    #[serde(default)]
    pub links: Vec<String>,
    /// The links are those this peer sent last (filled in by the node): they
    /// were most of an announcement's bytes, repeated D times a second for
    /// nothing (docs/scale.md). A receiver keeps the ones it has; an older
    /// peer, which knows no such field, shows none until they change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub links_unchanged: bool,
    /// Grows with every announcement of a peer (filled in by the node): gossip may
    /// deliver an older one after a newer one, which must not undo it.
    #[serde(default)]
    pub seq: u64,
    /// How often this peer re-announces (ms): receivers keep its records for a few
    /// intervals. 0 (an older peer): the default TTL.
    #[serde(default)]
    pub every_ms: u64,
    /// Peers this one lost without a goodbye and could not reach again (filled
    /// in by the node): everyone drops them, unless they announce again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub departed: Vec<Departure>,
}

/// A peer a neighbour saw vanish: its last announcement known then.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Departure {
    pub peer: String,
    pub seq: u64,
}

/// One service a peer provides, as it travels in announcements and answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct ServiceRecord {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// The VM serving it; None for a legacy host service.
    pub vm: Option<String>,
    /// Grows each time the provider's view of the service changes (e.g. it moved).
    pub version: u64,
}

const MAX_SERVICES: usize = 1024;
const MAX_TAGS: usize = 32;
const MAX_TEXT: usize = 128;
const MAX_NICK: usize = 64;

impl ServiceRecord {
    /// Records come from other peers: bound every field.
    pub fn validate(&self) -> Result<(), String> {
        let text_ok =
            |s: &str| !s.is_empty() && s.len() <= MAX_TEXT && !s.chars().any(char::is_control);
        if !text_ok(&self.name) {
            return Err(format!("bad service name {:?}", truncate(&self.name)));
        }
        if !text_ok(&self.kind) {
            return Err(format!("service {}: bad type", self.name));
        }
        if self.tags.len() > MAX_TAGS
            || self
                .tags
                .iter()
                .any(|(k, v)| !text_ok(k) || v.len() > MAX_TEXT)
        {
            return Err(format!("service {}: bad tags", self.name));
        }
        if self.vm.as_deref().is_some_and(|vm| !text_ok(vm)) {
            return Err(format!("service {}: bad VM name", self.name));
        }
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

impl Announcement {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Data from the network: malformed input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let a: Announcement = serde_json::from_slice(bytes)?;
        a.validate().map_err(serde::de::Error::custom)?;
        Ok(a)
    }

    /// Announcements come from other peers: bound every field.
    pub fn validate(&self) -> Result<(), String> {
        const MAX_VMS: usize = 4096;
        const MAX_LINKS: usize = 4096;
        const MAX_DEPARTED: usize = 256;
        let a = self;
        if a.vms.len() > MAX_VMS
            || a.links.len() > MAX_LINKS
            || a.services.len() > MAX_SERVICES
            || a.departed.len() > MAX_DEPARTED
        {
            return Err("announcement too large".into());
        }
        if let Some(bad) = a.services.iter().find_map(|s| s.validate().err()) {
            return Err(bad);
        }
        // Everything here ends up on an operator's terminal: no control characters.
        if a.nick.len() > MAX_NICK || a.nick.chars().any(char::is_control) {
            return Err("bad nick".into());
        }
        let bad_text =
            |s: &String| s.is_empty() || s.len() > MAX_TEXT || s.chars().any(char::is_control);
        if a.vms.iter().any(bad_text) {
            return Err("bad VM name".into());
        }
        if a.links.iter().any(bad_text) {
            return Err("bad link".into());
        }
        if a.departed.iter().any(|d| bad_text(&d.peer)) {
            return Err("bad departed peer".into());
        }
        Ok(())
    }
}

/// At most this many characters of a reason another peer gives are shown.
pub const MAX_PEER_TEXT: usize = 500;

/// Free text another peer sent (a refusal's reason, a failure it reports), fit
/// for this operator's terminal, logs and `status`: one line, control
/// characters (ESC sequences, newlines) shown escaped, at most
/// [`MAX_PEER_TEXT`] characters.
pub fn peer_text(text: &str) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for c in text.chars() {
        let escaped: Vec<char> = if c.is_control() {
            c.escape_default().collect()
        } else {
            vec![c]
        };
        if shown + escaped.len() > MAX_PEER_TEXT {
            out.push('…');
            break;
        }
        shown += escaped.len();
        out.extend(escaped);
    }
    out
}

/// The identify agent version carries the nickname: `peervisor/0.1.0 nick`.
pub fn agent_version(nick: &str) -> String {
    format!("{AGENT_PREFIX}{} {nick}", env!("CARGO_PKG_VERSION"))
}

pub fn nick_from_agent(agent: &str) -> Option<String> {
    let rest = agent.strip_prefix(AGENT_PREFIX)?;
    let (_, nick) = rest.split_once(' ')?;
    let nick = nick.trim();
    let ok = !nick.is_empty() && nick.len() <= MAX_NICK && !nick.chars().any(char::is_control);
    ok.then(|| nick.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nick_round_trips_through_agent_version() {
        assert_eq!(
            nick_from_agent(&agent_version("peer-a")).as_deref(),
            Some("peer-a")
        );
        assert_eq!(nick_from_agent("rust-libp2p/0.1"), None);
        assert_eq!(nick_from_agent("peervisor/0.1.0 "), None);
        assert_eq!(nick_from_agent("peervisor/0.1.0 a\u{1b}[2Jb"), None);
    }

    #[test]
    fn malformed_announcement_is_rejected() {
        assert!(Announcement::decode(b"{not json").is_err());
        assert!(Announcement::decode(b"{\"nick\":1}").is_err());
        let ok = Announcement {
            nick: "a".into(),
            vms: vec!["web-1".into()],
            ..Default::default()
        };
        assert_eq!(Announcement::decode(&ok.encode()).unwrap(), ok);
        let mut hostile = ok.clone();
        hostile.services.push(ServiceRecord {
            name: "x\u{1b}[2J".into(),
            kind: "http".into(),
            ..Default::default()
        });
        let err = Announcement::decode(&hostile.encode())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad service name"), "{err}");
    }

    fn sample_announcement() -> Announcement {
        Announcement {
            nick: "peer-a".into(),
            vms: vec!["web-1".into(), "kv-2".into()],
            services: vec![ServiceRecord {
                name: "web-1".into(),
                kind: "http".into(),
                tags: vec![("tier".into(), "front".into())],
                vm: Some("web-1".into()),
                version: 7,
            }],
            load: PeerLoad {
                cpu_pct: 12.5,
                vm_cpu_pct: 10.0,
                running_vms: 2,
                connections: 3,
            },
            links: vec!["12D3KooWAbc".into()],
            links_unchanged: false,
            seq: 1_764_000_000_000,
            every_ms: 3000,
            departed: vec![Departure {
                peer: "12D3KooWDef".into(),
                seq: 1_763_999_999_000,
            }],
        }
    }

    #[test]
    fn oversized_announcement_is_dropped() {
        let mut a = sample_announcement();
        a.vms = vec!["vm".into(); 5000];
        let err = Announcement::decode(&a.encode()).unwrap_err().to_string();
        assert!(err.contains("too large"), "{err}");
    }

    mod fuzz {
        use super::*;
        use crate::fuzzing::{CASES, bytes_like, config, text_like};
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(config(CASES))]
            /// Gossip announcements, straight from any member of the overlay.
            #[test]
            fn fuzz_announcement_decode(bytes in bytes_like(vec![
                sample_announcement().encode(),
                Announcement::default().encode(),
            ])) {
                if let Ok(a) = Announcement::decode(&bytes) {
                    prop_assert!(a.services.len() <= MAX_SERVICES);
                    prop_assert!(!a.nick.chars().any(char::is_control));
                    for s in &a.services {
                        prop_assert!(s.validate().is_ok());
                    }
                }
            }

            /// Service records as they come in `ListServices` answers.
            #[test]
            fn fuzz_service_record_validate(bytes in bytes_like(vec![
                serde_json::to_vec(&sample_announcement().services[0]).unwrap(),
            ])) {
                if let Ok(record) = serde_json::from_slice::<ServiceRecord>(&bytes)
                    && let Err(e) = record.validate()
                {
                    prop_assert!(!e.contains('\n') && !e.contains('\u{1b}'), "{e:?}");
                }
            }

            /// Identify's agent version (the nickname rides in it).
            #[test]
            fn fuzz_nick_from_agent(agent in text_like(vec![agent_version("peer-a")])) {
                if let Some(nick) = nick_from_agent(&agent) {
                    prop_assert!(!nick.is_empty() && nick.len() <= MAX_NICK);
                    prop_assert!(!nick.chars().any(char::is_control));
                }
            }
        }
    }
}
