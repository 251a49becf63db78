//! Fuzz targets for what other peers send this one, driven past the decoder
//! into the code that acts on it: a real `Peer` on libvirt's test driver
//! (in-process, no daemon, no guests) answers decoded control requests from
//! members of each role, and this peer's handling of other peers' answers is
//! held to what an operator may be shown. `harness()` is shared with the other
//! targets that need a running peer: the control socket's (`control_socket`)
//! and the service stream header's (`stream_headers`).

mod control_socket;
mod stream_headers;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use libp2p::PeerId;
use proptest::prelude::*;

use super::{Peer, PeerConfig};
use crate::control::Role;
use crate::fuzzing::{CASES, bytes_like, config, sized};
use crate::node::codec_io::{
    encode_request, read_request, read_response, sample_requests, sample_responses,
};
use crate::node::protocol::{ControlRequest, ControlResponse, DiskOffer, MAX_PEER_TEXT};
use crate::node::{MAX_CONTROL_REQUEST, MAX_CONTROL_RESPONSE};
use crate::paths::DataDir;

/// A peer on libvirt's test driver that accepts migrations, with one member of
/// each role, an exposed service, and a disk dir of its own.
pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    pub peer: Arc<Peer>,
    /// (role, member): observe, consume (the default) and control.
    pub members: [(Role, PeerId); 3],
    /// The service `exposed` here (a legacy host service).
    pub exposed: String,
    pub disk_dir: PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let disks = tempfile::tempdir().unwrap();
        // Disks a control member makes this peer create go here, not to the
        // machine's disk dir (a test process sets it once).
        crate::paths::set_disk_dir(disks.path().to_path_buf());
        assert_eq!(
            crate::paths::disk_dir(),
            disks.path(),
            "disk dir set elsewhere"
        );
        let config = PeerConfig {
            accept_migrations: true,
            ..PeerConfig::on_test_driver(DataDir::new(data.path().to_path_buf()), "fuzzed", 0)
        };
        let peer = rt
            .block_on(Peer::start(config))
            .expect("a peer on test:///default");
        let members = [Role::Observe, Role::Consume, Role::Control].map(|role| {
            let id = PeerId::random();
            if role != Role::Consume {
                peer.access.set(id, role).unwrap();
            }
            (role, id)
        });
        let exposed = "fuzz-echo".to_string();
        rt.block_on(peer.services.expose(
            &exposed.as_str().into(),
            "127.0.0.1:9",
            Some("echo"),
            Vec::new(),
            None,
        ))
        .expect("exposing a service");
        Harness {
            rt,
            peer,
            members,
            exposed,
            disk_dir: disks.path().to_path_buf(),
            _dirs: (data, disks),
        }
    })
}

impl Harness {
    fn domains(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .rt
            .block_on(self.peer.host.list())
            .unwrap()
            .into_iter()
            .map(|v| v.name.to_string())
            .collect();
        names.sort();
        names
    }

    fn files_in_disk_dir(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.disk_dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    fn operations_running(&self) -> usize {
        use crate::model::OperationPhase::{Requested, Transferring};
        self.peer
            .operations
            .list()
            .iter()
            .filter(|o| matches!(o.phase, Requested | Transferring))
            .count()
    }
}

/// A refusal's reason as the other peer's operator sees it: one line, bounded.
fn fit_to_show(reason: &str) -> bool {
    !reason.is_empty() && !reason.contains('\n') && reason.chars().count() <= 2 * MAX_PEER_TEXT
}

/// What a member of `role` sent (`request`) and what this peer answered, held
/// to what each role may do; an accepted migration is ended by its source, as
/// a failed one is, and must leave nothing behind.
fn check_answer(
    h: &Harness,
    role: Role,
    from: PeerId,
    request: &ControlRequest,
    answer: ControlResponse,
) -> Result<(), TestCaseError> {
    match (request, answer) {
        (ControlRequest::ListServices, ControlResponse::Services { services, .. }) => {
            for record in &services {
                prop_assert!(record.validate().is_ok(), "{record:?}");
            }
            prop_assert!(services.iter().any(|s| s.name == h.exposed));
        }
        (ControlRequest::PrepareMigration { disks, .. }, answer) if role < Role::Control => {
            prop_assert!(
                matches!(&answer, ControlResponse::Refused { reason } if reason.contains("not allowed to control")),
                "a {role} member got {answer:?} for a migration of {} disk(s)",
                disks.len()
            );
        }
        (ControlRequest::VmState { .. }, answer) if role < Role::Control => {
            prop_assert!(
                matches!(&answer, ControlResponse::Refused { .. }),
                "{answer:?}"
            );
        }
        (ControlRequest::VmState { .. }, answer) => {
            prop_assert!(
                matches!(&answer, ControlResponse::VmState { .. }),
                "{answer:?}"
            );
        }
        (ControlRequest::MigrationEnded { .. }, answer) => {
            // No grant of this member's is open between cases.
            prop_assert!(
                matches!(&answer, ControlResponse::Refused { reason } if reason == "unknown migration token"),
                "{answer:?}"
            );
        }
        (
            ControlRequest::PrepareMigration { disks, .. },
            ControlResponse::MigrationAccepted {
                token, disk_copies, ..
            },
        ) => {
            prop_assert!(
                disk_copies.is_empty() || disk_copies.len() == disks.len(),
                "{} copies for {} disks",
                disk_copies.len(),
                disks.len()
            );
            for copy in &disk_copies {
                let path = Path::new(copy);
                prop_assert!(
                    path.parent() == Some(h.disk_dir.as_path()) && path.is_file(),
                    "copy {copy} is not a file made in the disk dir"
                );
            }
            let ended = ControlRequest::MigrationEnded {
                token,
                ok: false,
                error: Some("fuzz: ended".into()),
            };
            let answer = h.rt.block_on(h.peer.answer_peer(from, ended.clone()));
            prop_assert_eq!(answer, ControlResponse::Ack);
            // The grant is gone: the same end again is an unknown token.
            let again = h.rt.block_on(h.peer.answer_peer(from, ended));
            prop_assert!(
                matches!(&again, ControlResponse::Refused { reason } if reason == "unknown migration token"),
                "grant {token} left open: {again:?}"
            );
            for copy in &disk_copies {
                prop_assert!(!Path::new(copy).exists(), "{copy} left behind");
            }
        }
        (ControlRequest::VmFigures { vms, .. }, ControlResponse::VmFigures { vms: answer, .. }) => {
            // Every member observes: figures of the VMs asked for, no others.
            for vm in &answer {
                prop_assert!(vms.iter().any(|n| n == vm.name.as_str()), "{vm:?}");
            }
        }
        (ControlRequest::Operations { ids }, ControlResponse::Operations { operations }) => {
            // Every member observes: only operations asked for by id.
            for (op, _) in &operations {
                prop_assert!(ids.contains(&op.id), "{op:?}");
            }
        }
        (ControlRequest::VmAction { .. }, answer) if role < Role::Control => {
            prop_assert!(
                matches!(&answer, ControlResponse::Refused { reason } if reason.contains("lacks the control role") && fit_to_show(reason)),
                "a {role} member got {answer:?}"
            );
        }
        (ControlRequest::VmAction { .. }, ControlResponse::Acted { .. }) => {}
        (_, ControlResponse::Refused { reason }) => {
            prop_assert!(fit_to_show(&reason), "{reason:?}");
        }
        (request, answer) => {
            prop_assert!(false, "{answer:?} answers {request:?}");
        }
    }
    Ok(())
}

/// Requests at the codec's size limit: a valid request grown by one field to
/// the limit and just past it.
fn requests_near_the_limit() -> impl Strategy<Value = Vec<u8>> {
    let limit = MAX_CONTROL_REQUEST as usize;
    (0..4usize, limit - 2..limit + 3).prop_map(|(field, len)| {
        let make = |n: usize| {
            let long = "x".repeat(n);
            encode_request(match field {
                0 => ControlRequest::VmState {
                    vm: long,
                    uuid: "6f1c0d1e-0000-4000-8000-000000000001".into(),
                },
                1 => ControlRequest::MigrationEnded {
                    token: 1,
                    ok: false,
                    error: Some(long),
                },
                2 => ControlRequest::PrepareMigration {
                    vm: "web-1".into(),
                    uuid: "6f1c0d1e-0000-4000-8000-000000000001".into(),
                    vcpus: 1,
                    memory_mib: 64,
                    disk_mib: 0,
                    boot_files: vec![long],
                    disks: Vec::new(),
                    address: None,
                },
                _ => ControlRequest::PrepareMigration {
                    vm: "web-1".into(),
                    uuid: "6f1c0d1e-0000-4000-8000-000000000001".into(),
                    vcpus: 1,
                    memory_mib: 64,
                    disk_mib: 0,
                    boot_files: Vec::new(),
                    disks: vec![DiskOffer {
                        path: long,
                        virtual_bytes: 1 << 20,
                        file_id: None,
                        base_sha256: None,
                    }],
                    address: None,
                },
            })
        };
        sized(make, len)
    })
}

/// Migrations this peer can accept (no boot files, small, with and without
/// disks to copy), beside the shared samples.
fn acceptable_requests() -> Vec<Vec<u8>> {
    let prepare = |vm: &str, disks: Vec<DiskOffer>| ControlRequest::PrepareMigration {
        vm: vm.into(),
        uuid: "6f1c0d1e-0000-4000-8000-00000000000a".into(),
        vcpus: 1,
        memory_mib: 16,
        disk_mib: 1,
        boot_files: Vec::new(),
        disks,
        address: None,
    };
    let offer = |path: &str| DiskOffer {
        path: path.into(),
        virtual_bytes: 1 << 20,
        file_id: None,
        base_sha256: None,
    };
    let mut all = sample_requests();
    all.extend(
        [
            prepare("fz-1", Vec::new()),
            prepare("fz-2", vec![offer("/srv/a.qcow2")]),
            prepare("fz-3", vec![offer("/srv/a.qcow2"), offer("/srv/b.qcow2")]),
        ]
        .into_iter()
        .map(encode_request),
    );
    all
}

/// Names as a hostile member might send them: plausible, empty, long, with
/// path separators, dots, control characters, non-ASCII.
pub(crate) fn names() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z][a-z0-9-]{0,12}",
        1 => Just(String::new()),
        1 => Just("../../etc/passwd".to_string()),
        1 => Just(".hidden".to_string()),
        1 => Just("a/b".to_string()),
        1 => "\\PC{0,80}",
        1 => "[a-z]{60,70}",
        1 => ".{0,12}",
    ]
}

fn uuids() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-8[0-9a-f]{3}-[0-9a-f]{12}",
        ".{0,40}",
    ]
}

/// Paths: this host's real files (boot files that exist, a disk another VM
/// uses), missing ones, relative ones, traversals, long ones.
fn paths() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/bin/sh".to_string()),
        Just("/etc/hostname".to_string()),
        Just("/nonexistent/vmlinux".to_string()),
        Just("relative/disk.qcow2".to_string()),
        Just("/var/lib/peervisor/disks/../../../etc/shadow".to_string()),
        "/[a-z/]{1,40}",
        "\\PC{0,60}",
    ]
}

fn offers() -> impl Strategy<Value = DiskOffer> {
    let file_ids = prop_oneof![
        Just(None),
        any::<(u64, u64)>().prop_map(Some),
        // The device and inode of a real file here: a "shared" disk.
        Just(std::fs::metadata("/etc/hostname").ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        })),
    ];
    let sizes = prop_oneof![Just(0u64), Just(1 << 20), 1u64..(64 << 20), any::<u64>()];
    (paths(), sizes, file_ids).prop_map(|(path, virtual_bytes, file_id)| DiskOffer {
        path,
        virtual_bytes,
        file_id,
        base_sha256: None,
    })
}

/// Control requests built field by field, encoded with the node's codec.
fn structured_requests() -> impl Strategy<Value = Vec<u8>> {
    let small = prop_oneof![1 => Just(0u32), 6 => 1u32..4, 1 => any::<u32>()];
    let memory = prop_oneof![1 => Just(0u64), 6 => 1u64..256, 1 => any::<u64>()];
    // Mostly files this host has (the boot files of a VM it could run).
    let boot_file = prop_oneof![4 => Just("/bin/sh".to_string()), 1 => paths()];
    let prepare = (
        names(),
        uuids(),
        small,
        memory.clone(),
        memory,
        proptest::collection::vec(boot_file, 0..3),
        proptest::collection::vec(offers(), 0..4),
    )
        .prop_map(
            |(vm, uuid, vcpus, memory_mib, disk_mib, boot_files, disks)| {
                ControlRequest::PrepareMigration {
                    vm,
                    uuid,
                    vcpus,
                    memory_mib,
                    disk_mib,
                    boot_files,
                    disks,
                    address: None,
                }
            },
        );
    let ended = (any::<u64>(), any::<bool>(), proptest::option::of(names()))
        .prop_map(|(token, ok, error)| ControlRequest::MigrationEnded { token, ok, error });
    let state = (names(), uuids()).prop_map(|(vm, uuid)| ControlRequest::VmState { vm, uuid });
    prop_oneof![
        6 => prepare,
        2 => ended,
        1 => state,
        1 => Just(ControlRequest::ListServices),
    ]
    .prop_map(encode_request)
}

proptest! {
    #![proptest_config(config(CASES / 5))]
    /// Control requests (our CBOR codec, 64 KiB limit) from a member of each
    /// role, into the handler that acts on them (`Peer::answer_peer`): observe
    /// and consume members are refused everything but the service list; a
    /// control member's accepted migration made its disk files only in the disk
    /// dir and, ended by its source, leaves no file, grant or running operation;
    /// no request defines a domain; every refusal is one bounded line.
    #[test]
    fn fuzz_peer_control_requests(
        bytes in prop_oneof![
            5 => structured_requests(),
            4 => bytes_like(acceptable_requests()),
            1 => requests_near_the_limit(),
        ],
        who in 0..3usize,
    ) {
        let h = harness();
        let Ok(request) = read_request(&bytes) else {
            return Ok(());
        };
        if std::env::var_os("PEERVISOR_FUZZ_TRACE").is_some() {
            eprintln!("{:?} from {:?}", request, h.members[who].0);
        }
        prop_assert!(bytes.len() <= MAX_CONTROL_REQUEST as usize, "{} bytes decoded", bytes.len());
        let domains = h.domains();
        let (role, from) = h.members[who];
        let answer = h.rt.block_on(h.peer.answer_peer(from, request.clone()));
        if std::env::var_os("PEERVISOR_FUZZ_TRACE").is_some() {
            eprintln!("  -> {answer:?}");
        }
        check_answer(h, role, from, &request, answer)?;
        prop_assert_eq!(h.domains(), domains, "a domain was defined or removed");
        prop_assert_eq!(h.files_in_disk_dir(), Vec::<PathBuf>::new());
        prop_assert_eq!(h.operations_running(), 0);
    }

    /// Answers (our CBOR codec, 1 MiB limit) from the peer this one asked, into
    /// what this peer makes of them: a refusal's reason, as shown to this
    /// operator, is one bounded line without control characters; the disk
    /// copies a destination names are paired one to one with the disks offered
    /// or refused; service records are kept only when they validate.
    #[test]
    fn fuzz_peer_answers(bytes in prop_oneof![
        9 => bytes_like(sample_responses()),
        1 => (MAX_CONTROL_RESPONSE as usize - 2..MAX_CONTROL_RESPONSE as usize + 3)
            .prop_map(|len| sized(|n| crate::node::codec_io::encode_response(
                ControlResponse::Refused { reason: "\u{1b}".repeat(n) }), len)),
    ]) {
        let Ok(answer) = read_response(&bytes) else {
            return Ok(());
        };
        prop_assert!(bytes.len() <= MAX_CONTROL_RESPONSE as usize);
        match answer {
            ControlResponse::Refused { reason } => {
                let shown = crate::node::protocol::peer_text(&reason);
                prop_assert!(!shown.chars().any(char::is_control), "{shown:?}");
                prop_assert!(shown.chars().count() <= MAX_PEER_TEXT + 1);
            }
            ControlResponse::MigrationAccepted { disk_copies, .. } => {
                let offers = vec![DiskOffer {
                    path: "/srv/disks/web-1-6f1c0d1e.qcow2".into(),
                    virtual_bytes: 64 << 20,
                    file_id: None,
                    base_sha256: None,
                }];
                // Either no copies (shared disks) or one per disk, in order.
                if let Ok(pairs) = crate::migrate::diskmig::pair_copies(&offers, disk_copies.clone()) {
                    prop_assert!(
                        pairs.is_empty()
                            || pairs.iter().map(|(from, _)| from).eq(offers.iter().map(|o| &o.path)),
                        "{pairs:?} from {disk_copies:?}"
                    );
                }
            }
            ControlResponse::Services { services, .. } => {
                let kept = crate::services::publish::valid_records(PeerId::random(), services);
                for record in &kept {
                    prop_assert!(record.validate().is_ok());
                }
            }
            _ => {}
        }
    }
}
