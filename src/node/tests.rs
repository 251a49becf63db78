use super::*;

#[test]
fn only_the_handshake_names_a_network_key_mismatch() {
    let msg = explain_dial_error("peer-b", "Transport error: network key mismatch");
    assert_eq!(msg, "cannot connect to peer-b: network key mismatch");
    // A reset is a reset: the handshake itself says when keys differ.
    let msg = explain_dial_error("peer-b", "Transport error: connection reset by peer");
    assert!(!msg.contains("network key"), "{msg}");
    let msg = explain_dial_error("peer-b", "Connection refused (os error 111)");
    assert_eq!(
        msg,
        "cannot connect to peer-b: Connection refused (os error 111)"
    );
}

#[test]
fn an_error_is_told_with_its_causes() {
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Failed to negotiate transport protocol(s)")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let error = Outer(std::io::Error::other("network key mismatch"));
    assert_eq!(
        error_chain(&error),
        "Failed to negotiate transport protocol(s): network key mismatch"
    );
}

#[test]
fn remote_addresses_are_keyed_by_ip() {
    let addr: Multiaddr = "/ip4/192.0.2.7/tcp/4001".parse().unwrap();
    assert_eq!(remote_ip(&addr), Some("192.0.2.7".parse().unwrap()));
    let addr: Multiaddr = "/ip6/2001:db8::1/tcp/4001".parse().unwrap();
    assert_eq!(remote_ip(&addr), Some("2001:db8::1".parse().unwrap()));
}

fn read_request(bytes: &[u8]) -> std::io::Result<ControlRequest> {
    use libp2p::request_response::Codec;
    let mut io = futures::io::Cursor::new(bytes.to_vec());
    futures::executor::block_on(control_codec().read_request(&CONTROL_PROTOCOL, &mut io))
}

fn read_response(bytes: &[u8]) -> std::io::Result<ControlResponse> {
    use libp2p::request_response::Codec;
    let mut io = futures::io::Cursor::new(bytes.to_vec());
    futures::executor::block_on(control_codec().read_response(&CONTROL_PROTOCOL, &mut io))
}

fn encode_request(request: ControlRequest) -> Vec<u8> {
    use libp2p::request_response::Codec;
    let mut bytes = Vec::new();
    futures::executor::block_on(async {
        let mut io = futures::io::Cursor::new(&mut bytes);
        control_codec()
            .write_request(&CONTROL_PROTOCOL, &mut io, request)
            .await
            .unwrap();
    });
    bytes
}

fn encode_response(response: ControlResponse) -> Vec<u8> {
    use libp2p::request_response::Codec;
    let mut bytes = Vec::new();
    futures::executor::block_on(async {
        let mut io = futures::io::Cursor::new(&mut bytes);
        control_codec()
            .write_response(&CONTROL_PROTOCOL, &mut io, response)
            .await
            .unwrap();
    });
    bytes
}

#[test]
fn oversized_control_request_is_refused() {
    let big = ControlRequest::PrepareMigration {
        vm: "x".repeat(MAX_CONTROL_REQUEST as usize),
        uuid: "u".into(),
        vcpus: 1,
        memory_mib: 128,
        disk_mib: 0,
        boot_files: Vec::new(),
        disks: Vec::new(),
    };
    let bytes = encode_request(big);
    assert!(bytes.len() as u64 > MAX_CONTROL_REQUEST);
    assert!(read_request(&bytes).is_err(), "oversized request decoded");
    let small = ControlRequest::ListServices;
    assert_eq!(read_request(&encode_request(small.clone())).unwrap(), small);
}

/// The messages about another peer's VMs cross the CBOR codec whole: an
/// operator's request (internally tagged JSON-style enum), a host's answer
/// with a reply, figures with history.
#[test]
fn vm_action_and_figures_cross_the_codec() {
    use crate::api::{Reply, Request};
    use crate::model::{VmHistory, VmStats, VmView};
    let requests = [
        ControlRequest::VmAction {
            request: Request::migrate("web-1", "12D3KooWPeerB"),
        },
        ControlRequest::VmAction {
            request: Request::stop("web-1"),
        },
        ControlRequest::VmFigures {
            vms: vec!["web-1".into()],
            history: true,
        },
    ];
    for request in requests {
        assert_eq!(
            read_request(&encode_request(request.clone())).unwrap(),
            request
        );
    }
    let responses = [
        ControlResponse::Acted {
            reply: Reply::MigrationStarted {
                vm: "web-1".into(),
                to: "peer-b".into(),
                operation: 3,
            },
        },
        ControlResponse::VmFigures {
            vms: vec![VmView {
                name: "web-1".into(),
                stats: Some(VmStats {
                    cpu_pct_guest: 12.5,
                    ..VmStats::default()
                }),
                history: Some(VmHistory {
                    interval_s: 1.0,
                    cpu_pct_guest: vec![0.1, 12.5],
                    ..VmHistory::default()
                }),
                ..VmView::default()
            }],
            round: 42,
        },
    ];
    for response in responses {
        assert_eq!(
            read_response(&encode_response(response.clone())).unwrap(),
            response
        );
    }
}

/// The largest figures answer a host gives stays within the response limit.
#[test]
fn the_largest_figures_answer_fits_the_response_limit() {
    use crate::model::{VmHistory, VmStats, VmView};
    use crate::node::protocol::{MAX_FIGURES, MAX_FIGURES_HISTORY};
    let ring = vec![123_456.789_f64; MAX_FIGURES_HISTORY];
    let vm = VmView {
        name: "a-rather-long-vm-name-0000000001".into(),
        uuid: "6f1c0d1e-0000-4000-8000-000000000001".into(),
        stats: Some(VmStats::default()),
        history: Some(VmHistory {
            interval_s: 1.0,
            cpu_pct_guest: ring.clone(),
            disk_read_bps: ring.clone(),
            disk_write_bps: ring.clone(),
            net_rx_bps: ring.clone(),
            net_tx_bps: ring,
        }),
        ..VmView::default()
    };
    let bytes = encode_response(ControlResponse::VmFigures {
        vms: vec![vm; MAX_FIGURES],
        round: u64::MAX,
    });
    assert!(
        (bytes.len() as u64) < MAX_CONTROL_RESPONSE,
        "{} bytes",
        bytes.len()
    );
}

mod fuzz {
    use super::*;
    use crate::fuzzing::{CASES, bytes_like, config};
    use crate::node::protocol::ServiceRecord;
    use proptest::prelude::*;

    fn valid_requests() -> Vec<Vec<u8>> {
        [
            ControlRequest::PrepareMigration {
                vm: "web-1".into(),
                uuid: "6f1c0d1e-0000-4000-8000-000000000001".into(),
                vcpus: 2,
                memory_mib: 256,
                disk_mib: 512,
                boot_files: vec!["/var/lib/peervisor/images/default/vmlinux".into()],
                disks: vec![crate::node::protocol::DiskOffer {
                    path: "/var/lib/peervisor/disks/web-1-6f1c0d1e.qcow2".into(),
                    virtual_bytes: 64 << 20,
                    file_id: Some((2049, 1234)),
                }],
            },
            ControlRequest::MigrationEnded {
                token: 42,
                ok: false,
                error: Some("tunnel broke".into()),
            },
            ControlRequest::ListServices,
            ControlRequest::VmState {
                vm: "web-1".into(),
                uuid: "6f1c0d1e-0000-4000-8000-000000000001".into(),
            },
        ]
        .into_iter()
        .map(encode_request)
        .collect()
    }

    fn valid_responses() -> Vec<Vec<u8>> {
        [
            ControlResponse::MigrationAccepted {
                token: 7,
                disk_copies: vec!["/srv/disks/web-1-6f1c0d1e.qcow2".into()],
            },
            ControlResponse::Refused {
                reason: "no".into(),
            },
            ControlResponse::Ack,
            ControlResponse::MigrationStats {
                downtime_ms: Some(200),
                transferred_bytes: None,
                running: true,
            },
            ControlResponse::Services {
                services: vec![ServiceRecord {
                    name: "web".into(),
                    kind: "http".into(),
                    tags: vec![("a".into(), "b".into())],
                    vm: Some("web-1".into()),
                    version: 3,
                }],
                load: Default::default(),
            },
        ]
        .into_iter()
        .map(encode_response)
        .collect()
    }

    proptest! {
        #![proptest_config(config(CASES))]
        /// Control requests (CBOR) from any member of the overlay.
        #[test]
        fn fuzz_control_request_cbor(bytes in bytes_like(valid_requests())) {
            let _ = read_request(&bytes);
        }

        /// Control responses (CBOR) from the peer asked.
        #[test]
        fn fuzz_control_response_cbor(bytes in bytes_like(valid_responses())) {
            let _ = read_response(&bytes);
        }
    }
}
