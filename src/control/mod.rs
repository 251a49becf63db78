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

        /// Requests built field by field (names as a confused or hostile
        /// caller might type them), one JSON line each.
        fn structured_requests() -> impl Strategy<Value = Vec<u8>> {
            use crate::peer::fuzz::names;
            let foreign = any::<bool>();
            let spec = (
                names(),
                names(),
                any::<u16>(),
                proptest::option::of(0u32..3),
            )
                .prop_map(|(name, kind, port, max_conns)| ServiceSpec {
                    name,
                    kind,
                    port,
                    tags: Vec::new(),
                    max_conns,
                    allow: Vec::new(),
                });
            let create = (
                names(),
                prop_oneof![Just(0u32), 1u32..4, any::<u32>()],
                prop_oneof![Just(0u64), 1u64..512, any::<u64>()],
                prop_oneof![Just("default".to_string()), names()],
                proptest::collection::vec(spec, 0..3),
                proptest::option::of(prop_oneof![Just(0u64), 1u64..256, any::<u64>()]),
            )
                .prop_map(
                    |(name, vcpus, memory_mib, image, services, data_disk_mib)| Request::VmCreate {
                        name,
                        vcpus,
                        memory_mib,
                        image,
                        services,
                        data_disk_mib,
                    },
                );
            // The test driver's own domain is "test": not ours, so foreign.
            let vm = prop_oneof![Just("test".to_string()), names()];
            let lifecycle = (0..5usize, vm, foreign).prop_map(|(op, name, foreign)| match op {
                0 => Request::VmStart { name, foreign },
                1 => Request::VmPause { name, foreign },
                2 => Request::VmResume { name, foreign },
                3 => Request::VmRemove { name, foreign },
                _ => Request::VmStop {
                    name,
                    force: true,
                    timeout_s: None,
                    foreign,
                },
            });
            let targets = prop_oneof![
                Just("127.0.0.1:9".to_string()),
                Just("[::1]:9".to_string()),
                Just("localhost:0".to_string()),
                names(),
            ];
            let expose = (
                names(),
                targets,
                proptest::option::of(names()),
                proptest::option::of(0u32..3),
            )
                .prop_map(|(name, target, kind, max_conns)| Request::Expose {
                    name,
                    target,
                    kind,
                    allow: Vec::new(),
                    max_conns,
                });
            let consume = (
                prop_oneof![Just("fuzz-echo".to_string()), names()],
                proptest::option::of(prop_oneof![Just(0u16), Just(1u16), any::<u16>()]),
                proptest::option::of(prop_oneof![
                    Just("127.0.0.1".to_string()),
                    Just("0.0.0.0".to_string()),
                    names()
                ]),
            )
                .prop_map(|(service, local_port, bind)| Request::Consume {
                    service,
                    local_port,
                    bind,
                });
            let role = prop_oneof![
                Just(Role::Observe),
                Just(Role::Consume),
                Just(Role::Control)
            ];
            let peers = (names(), role, any::<bool>()).prop_map(|(peer, role, allow)| {
                if allow {
                    Request::PeersAllow { peer, role }
                } else {
                    Request::PeersForget { peer }
                }
            });
            let simple = prop_oneof![
                Just(Request::Status),
                Just(Request::VmList),
                Just(Request::Services),
                Just(Request::PeersList),
                names().prop_map(|name| Request::VmStats { name }),
                names().prop_map(|vm| Request::MigrateAbort { vm }),
                names().prop_map(|service| Request::Unconsume { service }),
                names().prop_map(|name| Request::Unexpose { name }),
            ];
            prop_oneof![create, lifecycle, expose, consume, peers, simple].prop_map(|r| {
                let mut line = serde_json::to_vec(&r).unwrap();
                line.push(b'\n');
                line
            })
        }

        /// Sends `input` on a fresh connection to a real control server whose
        /// handler is a real peer's (`Peer::handle`, libvirt's test driver);
        /// returns the reply lines and whether the server closed the connection.
        /// Requests that wait on the network (find, migrate, replicate) or on a
        /// guest (a graceful stop) get a stand-in answer: their arguments are
        /// checked by other tests.
        fn serve_once(input: &[u8]) -> (Vec<Vec<u8>>, bool) {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let h = crate::peer::fuzz::harness();
            h.rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("control.sock");
                let listener = server::bind(&path).await.unwrap();
                let peer = h.peer.clone();
                let handler = std::sync::Arc::new(move |request: Request| {
                    let peer = peer.clone();
                    async move {
                        match request {
                            Request::Find { .. }
                            | Request::Migrate { .. }
                            | Request::Replicate { .. }
                            | Request::VmStop { force: false, .. } => Ok(Reply::Done {
                                message: "not run by the fuzz target".into(),
                            }),
                            request => peer.handle(request).await,
                        }
                    }
                });
                let serving = tokio::spawn(server::serve(listener, handler));
                let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
                let (mut read, mut write) = stream.split();
                // The server may stop reading (a line over the limit): the
                // write may then fail, the replies still come.
                let sent = async {
                    let _ = write.write_all(input).await;
                    let _ = write.shutdown().await;
                };
                let mut replies = Vec::new();
                let got = async { read.read_to_end(&mut replies).await };
                let limit = std::time::Duration::from_secs(30);
                let (_, got) = tokio::time::timeout(limit, async { tokio::join!(sent, got) })
                    .await
                    .expect("the control server answered within 30 s");
                serving.abort();
                let closed = got.is_ok();
                let lines = replies
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect();
                (lines, closed)
            })
        }

        /// Request lines at the 8 MiB limit: a valid request with a field grown
        /// to the limit and just past it, newline-terminated or not.
        fn lines_near_the_limit() -> impl Strategy<Value = Vec<u8>> {
            (MAX_LINE - 1..MAX_LINE + 2, any::<bool>()).prop_map(|(len, newline)| {
                let mut line = crate::fuzzing::sized(
                    |n| {
                        let name = "x".repeat(n);
                        serde_json::to_vec(&Request::VmStats { name }).unwrap()
                    },
                    len,
                );
                if newline {
                    line.push(b'\n');
                }
                line
            })
        }

        /// What the server must answer to the lines in `input`.
        fn check_replies(input: &[u8], replies: &[Vec<u8>]) -> Result<(), TestCaseError> {
            let lines = read_all_lines(input);
            for reply in replies {
                let outcome = serde_json::from_slice::<Outcome>(reply);
                prop_assert!(outcome.is_ok(), "{:?}", String::from_utf8_lossy(reply));
            }
            // One reply per line, up to and including a line over the limit,
            // which is the last one answered.
            prop_assert_eq!(replies.len(), lines.len(), "{} lines", lines.len());
            if lines.last() == Some(&Line::TooLong) {
                let last = String::from_utf8_lossy(replies.last().unwrap()).into_owned();
                prop_assert!(last.contains("request too large"), "{last}");
            }
            for (line, reply) in lines.iter().zip(replies) {
                if let Line::Text(text) = line
                    && let Err(e) = server::decode_request(text)
                {
                    let told = serde_json::from_slice::<Outcome>(reply).unwrap();
                    prop_assert_eq!(told, Outcome::Error(e));
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(config(CASES / 5))]
            /// Request lines on the control socket, through the real server and
            /// line reader into a real peer's handler: every line is answered
            /// with one decodable reply (the decoder's error for a malformed
            /// one), whatever the handler makes of it; the server and the peer
            /// survive every request.
            #[test]
            fn fuzz_control_socket_request(bytes in prop_oneof![
                structured_requests(),
                bytes_like(valid_requests()),
            ]) {
                let (replies, _) = serve_once(&bytes);
                check_replies(&bytes, &replies)?;
            }
        }

        proptest! {
            // 8 whatever PROPTEST_CASES says: each case is 8 MiB.
            #![proptest_config(proptest::test_runner::Config { cases: 8, ..config(8) })]
            /// The same at the 8 MiB line limit (each case sends 8 MiB): a line
            /// of exactly the limit is decoded and answered; one byte more is
            /// answered "request too large" and the connection ends.
            #[test]
            fn fuzz_control_socket_at_the_limit(bytes in lines_near_the_limit()) {
                let (replies, closed) = serve_once(&bytes);
                check_replies(&bytes, &replies)?;
                prop_assert!(closed);
                let over = bytes.len() - usize::from(bytes.last() == Some(&b'\n')) > MAX_LINE;
                let told = String::from_utf8_lossy(&replies[0]).into_owned();
                prop_assert_eq!(over, told.contains("request too large"), "{}", told);
            }
        }
    }
}
