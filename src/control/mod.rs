//! The local control API: a running node (console or headless) serves a unix
//! socket in its data dir; the CLI and an attached console send it requests.
//! One JSON object per line each way.

pub mod client;
mod role;
pub mod server;

pub use role::Role;

use serde::{Deserialize, Serialize};

use crate::model::{ConsumptionView, ServiceSpec, ServiceView, Status, VmView};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    VmList,
    VmCreate {
        name: String,
        vcpus: u32,
        memory_mib: u64,
        image: String,
        /// From the VM's manifest; stored in its domain XML, started by the guest.
        #[serde(default)]
        services: Vec<ServiceSpec>,
        /// Size of a qcow2 data disk to create, MiB.
        #[serde(default)]
        data_disk_mib: Option<u64>,
    },
    VmStart {
        name: String,
        /// Act on a VM peervisor did not create.
        #[serde(default)]
        foreign: bool,
    },
    /// Graceful (ACPI) shutdown, powered off after `timeout_s`; `force`: power off now.
    VmStop {
        name: String,
        force: bool,
        #[serde(default)]
        timeout_s: Option<u64>,
        #[serde(default)]
        foreign: bool,
    },
    VmPause {
        name: String,
        #[serde(default)]
        foreign: bool,
    },
    VmResume {
        name: String,
        #[serde(default)]
        foreign: bool,
    },
    /// Powers off, undefines and removes the disks peervisor made for the VM.
    VmRemove {
        name: String,
        #[serde(default)]
        foreign: bool,
    },
    /// One VM with its latest rates and history (answered with `Vms`).
    VmStats {
        name: String,
    },
    Migrate {
        vm: String,
        to: String,
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
        vm: String,
    },
    /// Copy a VM (definition and data disk) to another peer and start it there
    /// under a new name, as one more provider of its services.
    Replicate {
        vm: String,
        to: String,
        /// Name of the replica (default: VM-rN).
        #[serde(default)]
        name: Option<String>,
    },
    /// Services of the whole overlay.
    Services,
    /// Resolve a service through the DHT (even if gossip missed it).
    Find {
        name: String,
    },
    Consume {
        service: String,
        local_port: Option<u16>,
        bind: Option<String>,
    },
    Unconsume {
        service: String,
    },
    Expose {
        name: String,
        target: String,
        kind: Option<String>,
        /// Peers (ids or nicknames) that may consume it; empty: every consumer.
        #[serde(default)]
        allow: Vec<String>,
        /// Connections it serves at once.
        #[serde(default)]
        max_conns: Option<u32>,
    },
    Unexpose {
        name: String,
    },
    /// Grant a role to a peer (by id, or nickname of a known peer).
    PeersAllow {
        peer: String,
        role: Role,
    },
    /// Drop a peer's grant (back to the default role).
    PeersForget {
        peer: String,
    },
    PeersList,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Status(Box<Status>),
    Vms {
        vms: Vec<VmView>,
    },
    Done {
        message: String,
    },
    Migrated(MigrationReport),
    /// A detached migration was accepted by its destination and is transferring.
    MigrationStarted {
        vm: String,
        to: String,
        operation: u64,
    },
    Replicated(Box<ReplicationReport>),
    Services {
        services: Vec<ServiceView>,
    },
    Consuming(ConsumptionView),
    Grants {
        grants: Vec<(String, String)>,
        default_role: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MigrationReport {
    pub vm: String,
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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicationReport {
    pub vm: String,
    pub replica: String,
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

/// What travels back: a reply or a one-line error for the operator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok(Reply),
    Error(String),
}

/// Largest request or reply line accepted (a status with many VMs stays far below).
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// One line read from a control connection.
#[derive(Debug, PartialEq)]
pub enum Line {
    Text(Vec<u8>),
    /// Longer than [`MAX_LINE`]: the rest is not read (the connection is done).
    TooLong,
    Eof,
}

/// Reads one line, never buffering more than [`MAX_LINE`] bytes of it.
pub async fn read_line<R>(reader: &mut R) -> std::io::Result<Line>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut buf = Vec::new();
    let n = reader
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        return Ok(Line::TooLong);
    }
    Ok(Line::Text(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all_lines(bytes: &[u8]) -> Vec<Line> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut reader = tokio::io::BufReader::new(bytes);
            let mut out = Vec::new();
            loop {
                match read_line(&mut reader).await.unwrap() {
                    Line::Eof => return out,
                    Line::TooLong => {
                        out.push(Line::TooLong);
                        return out;
                    }
                    line => out.push(line),
                }
            }
        })
    }

    #[test]
    fn lines_are_split_and_bounded() {
        let lines = read_all_lines(b"a\nbc\n\nlast");
        let texts: Vec<Line> = ["a", "bc", "", "last"]
            .iter()
            .map(|t| Line::Text(t.as_bytes().to_vec()))
            .collect();
        assert_eq!(lines, texts);
        let long = vec![b'x'; MAX_LINE + 10];
        assert_eq!(read_all_lines(&long), vec![Line::TooLong]);
        let mut exact = vec![b'x'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(read_all_lines(&exact).len(), 1);
    }

    /// Every request the CLI and the console send, and the replies they read,
    /// as bytes on the socket: the wire format must not move when the types do.
    fn wire_examples() -> (Vec<Request>, Vec<Outcome>) {
        let requests = vec![
            Request::Status,
            Request::VmList,
            Request::VmCreate {
                name: "web-2".into(),
                vcpus: 1,
                memory_mib: 128,
                image: "default".into(),
                services: vec![ServiceSpec {
                    name: "site".into(),
                    kind: "http".into(),
                    port: 80,
                    ..ServiceSpec::default()
                }],
                data_disk_mib: Some(64),
            },
            Request::VmStart {
                name: "a".into(),
                foreign: false,
            },
            Request::VmStop {
                name: "a".into(),
                force: false,
                timeout_s: None,
                foreign: false,
            },
            Request::VmPause {
                name: "a".into(),
                foreign: true,
            },
            Request::VmResume {
                name: "a".into(),
                foreign: false,
            },
            Request::VmRemove {
                name: "a".into(),
                foreign: false,
            },
            Request::VmStats { name: "a".into() },
            Request::Migrate {
                vm: "web-1".into(),
                to: "peer-b".into(),
                max_downtime_ms: Some(300),
                bandwidth_mib_s: None,
                foreign: false,
                detach: true,
            },
            Request::MigrateAbort { vm: "web-1".into() },
            Request::Replicate {
                vm: "web-1".into(),
                to: "peer-b".into(),
                name: None,
            },
            Request::Services,
            Request::Find { name: "web".into() },
            Request::Consume {
                service: "web".into(),
                local_port: Some(8080),
                bind: None,
            },
            Request::Unconsume {
                service: "web".into(),
            },
            Request::Expose {
                name: "pg".into(),
                target: "127.0.0.1:5432".into(),
                kind: None,
                allow: Vec::new(),
                max_conns: None,
            },
            Request::Unexpose { name: "pg".into() },
            Request::PeersAllow {
                peer: "peer-b".into(),
                role: Role::Control,
            },
            Request::PeersForget {
                peer: "peer-b".into(),
            },
            Request::PeersList,
        ];
        let outcomes = vec![
            Outcome::Ok(Reply::Status(Box::default())),
            Outcome::Ok(Reply::Done {
                message: "ok".into(),
            }),
            Outcome::Ok(Reply::MigrationStarted {
                vm: "web-1".into(),
                to: "peer-b".into(),
                operation: 3,
            }),
            Outcome::Ok(Reply::Migrated(MigrationReport {
                vm: "web-1".into(),
                from: "peer-a".into(),
                to: "peer-b".into(),
                to_peer_id: "12D3KooWB".into(),
                seconds: 1.5,
                downtime_ms: Some(90),
                transferred_bytes: None,
                disk_bytes: None,
                probe_downtime_ms: Some(120),
            })),
            Outcome::Ok(Reply::Grants {
                grants: vec![("12D3Koo".into(), "control".into())],
                default_role: "consume".into(),
            }),
            Outcome::Error("no such VM".into()),
        ];
        (requests, outcomes)
    }

    #[test]
    fn the_control_socket_json_stays_byte_identical() {
        let (requests, outcomes) = wire_examples();
        let lines: Vec<String> = requests
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .chain(outcomes.iter().map(|o| serde_json::to_string(o).unwrap()))
            .collect();
        let expected = include_str!("wire_examples.jsonl");
        assert_eq!(lines.join("\n") + "\n", expected);
        // ... and each line reads back as what was written.
        for (r, line) in requests.iter().zip(&lines) {
            assert_eq!(&serde_json::from_str::<Request>(line).unwrap(), r);
        }
        for (o, line) in outcomes.iter().zip(&lines[requests.len()..]) {
            assert_eq!(&serde_json::from_str::<Outcome>(line).unwrap(), o);
        }
    }

    mod fuzz {
        use super::*;
        use crate::fuzzing::{CASES, bytes_like, config};
        use proptest::prelude::*;

        fn valid_requests() -> Vec<Vec<u8>> {
            [
                Request::Status,
                Request::Migrate {
                    vm: "web-1".into(),
                    to: "peer-b".into(),
                    max_downtime_ms: Some(300),
                    bandwidth_mib_s: None,
                    foreign: false,
                    detach: true,
                },
                Request::Expose {
                    name: "db".into(),
                    target: "127.0.0.1:5432".into(),
                    kind: Some("postgres".into()),
                    allow: vec!["peer-b".into()],
                    max_conns: Some(4),
                },
                Request::VmCreate {
                    name: "web-2".into(),
                    vcpus: 1,
                    memory_mib: 128,
                    image: "default".into(),
                    services: Vec::new(),
                    data_disk_mib: Some(64),
                },
            ]
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap())
            .collect()
        }

        fn valid_outcomes() -> Vec<Vec<u8>> {
            [
                Outcome::Ok(Reply::Done {
                    message: "ok".into(),
                }),
                Outcome::Error("no such VM".into()),
                Outcome::Ok(Reply::Status(Box::default())),
                Outcome::Ok(Reply::Grants {
                    grants: vec![("12D3Koo".into(), "control".into())],
                    default_role: "consume".into(),
                }),
            ]
            .iter()
            .map(|o| serde_json::to_vec(o).unwrap())
            .collect()
        }

        proptest! {
            #![proptest_config(config(CASES))]
            /// Request lines on the control socket (the server side).
            #[test]
            fn fuzz_control_socket_request(bytes in bytes_like(valid_requests())) {
                let _ = read_all_lines(&bytes);
                if let Err(e) = server::decode_request(&bytes) {
                    prop_assert!(e.starts_with("malformed request"), "{e}");
                }
            }

            /// Reply lines read by the CLI and an attached console.
            #[test]
            fn fuzz_control_socket_reply(bytes in bytes_like(valid_outcomes())) {
                let _ = serde_json::from_slice::<Outcome>(&bytes);
            }
        }
    }
}
