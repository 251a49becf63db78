use super::codec_io::{encode_request, encode_response, read_request, read_response};
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
        address: None,
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
    use crate::model::{OperationPhase, OperationView, VmHistory, VmStats, VmView};
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
        ControlRequest::Operations { ids: vec![3] },
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
                    cpu_pct_guest: Some(12.5),
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
            operations: vec![OperationView {
                id: 3,
                vm: "web-1".into(),
                peer: "peer-b".into(),
                progress: Some(0.5),
                ..OperationView::default()
            }],
        },
        ControlResponse::Operations {
            operations: vec![(
                OperationView {
                    id: 3,
                    vm: "web-1".into(),
                    phase: OperationPhase::Failed,
                    error: Some("aborted".into()),
                    ..OperationView::default()
                },
                None,
            )],
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
            span_s: ring.clone(),
            net_tx_bps: ring,
        }),
        ..VmView::default()
    };
    // Operations: what a host keeps (20 ended) and runs (its limits), with
    // long errors.
    let op = crate::model::OperationView {
        vm: "a-rather-long-vm-name-0000000001".into(),
        error: Some("e".repeat(500)),
        transport: Some("t".repeat(100)),
        ..Default::default()
    };
    let bytes = encode_response(ControlResponse::VmFigures {
        vms: vec![vm; MAX_FIGURES],
        round: u64::MAX,
        operations: vec![op; 40],
    });
    assert!(
        (bytes.len() as u64) < MAX_CONTROL_RESPONSE,
        "{} bytes",
        bytes.len()
    );
}

#[test]
fn an_announcement_already_applied_is_not_news_so_it_is_not_forwarded_again() {
    let mut entry = PeerEntry::default();
    // Nothing heard yet: any announcement is news.
    assert!(!entry.outdates(1_000));
    entry.announcement = Some(Announcement::default());
    entry.announced_seq = 1_000;
    assert!(
        entry.outdates(1_000),
        "the same publication again (gossipsub forgot its id after a minute) must be ignored"
    );
    assert!(entry.outdates(999), "an older one");
    assert!(!entry.outdates(1_001), "a newer one is news");
    // Reported gone at 2,000: that one and older are stale, a later one is back.
    entry.departed_seq = Some(2_000);
    assert!(entry.outdates(2_000));
    assert!(!entry.outdates(2_001));
}

#[test]
fn an_announcement_with_links_unchanged_keeps_the_links_known() {
    let mut entry = PeerEntry::default();
    entry.apply(&Announcement {
        links: vec!["peer-b".into(), "peer-c".into()],
        seq: 1,
        ..Default::default()
    });
    entry.apply(&Announcement {
        links_unchanged: true,
        seq: 2,
        ..Default::default()
    });
    assert_eq!(entry.links, ["peer-b", "peer-c"], "kept");
    entry.apply(&Announcement {
        links: vec!["peer-c".into()],
        seq: 3,
        ..Default::default()
    });
    assert_eq!(entry.links, ["peer-c"], "a change is taken");
}

#[test]
fn an_announcement_with_many_links_and_services_costs_no_idontwant() {
    use crate::node::protocol::ServiceRecord;
    let busy = Announcement {
        nick: "a-host-with-a-long-name".into(),
        vms: (0..20).map(|i| format!("vm-{i:03}")).collect(),
        services: (0..20)
            .map(|i| ServiceRecord {
                name: format!("service-{i:03}"),
                kind: "http".into(),
                tags: vec![("tier".into(), "front".into())],
                vm: Some(format!("vm-{i:03}")),
                version: 1_765_000_000_000,
            })
            .collect(),
        // Every peer of a whole connection bound, and as many again.
        links: (0..32).map(|_| PeerId::random().to_string()).collect(),
        seq: 1_765_000_000_000,
        every_ms: 1_000_000,
        ..Default::default()
    };
    // Gossipsub's envelope (source, sequence number, topic, signature) adds
    // about 150 bytes.
    let size = busy.encode().len() + 150;
    assert!(
        size < IDONTWANT_ABOVE,
        "a {size}-byte announcement would cost an IDONTWANT to every mesh peer"
    );
}
