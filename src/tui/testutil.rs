//! Fixtures shared by the console's tests.

use super::ConsoleOptions;
use super::app::App;
use super::keymap::Keymap;
use super::theme::Theme;
use crate::model::{
    LocalPeer, OperationKind, OperationPhase, OperationView, PeerView, Status, VmState, VmView,
};

/// This peer (node-a) with 2 VMs, and 3 other peers: two connected, one not.
pub fn sample_status() -> Status {
    let peer = |id: &str, nick: &str, connected, latency, vms: Option<&[&str]>| PeerView {
        peer_id: id.into(),
        nick: nick.into(),
        connected,
        latency_ms: latency,
        vms: vms.map(|v| v.iter().map(|s| s.to_string()).collect()),
        addrs: vec![],
        ..PeerView::default()
    };
    Status {
        local: LocalPeer {
            peer_id: "12D3KooWLocalAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaAaaa".into(),
            nick: "node-a".into(),
            listen_addrs: vec!["/ip4/0.0.0.0/tcp/4001".into()],
            hypervisor: "qemu:///system".into(),
            accel: "kvm".into(),
            host: None,
        },
        peers: vec![
            // Out of order on purpose: the table sorts.
            peer(
                "12D3KooWPeerDddddddddddddddddddddddddddddddddddddd",
                "peer-d",
                false,
                None,
                None,
            ),
            peer(
                "12D3KooWPeerCccccccccccccccccccccccccccccccccccccc",
                "peer-c",
                true,
                Some(0.42),
                None,
            ),
            peer(
                "12D3KooWPeerBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                "peer-b",
                true,
                Some(12.3),
                Some(&["cache-3"]),
            ),
        ],
        vms: vec![
            VmView {
                name: "web-1".into(),
                uuid: "u1".into(),
                state: VmState::Running,
                vcpus: 2,
                memory_mib: 1024,
                ip: Some("10.42.0.11".into()),
                managed: true,
                service_up: Some(true),
                ..VmView::default()
            },
            VmView {
                name: "db-1".into(),
                uuid: "u2".into(),
                state: VmState::Stopped,
                vcpus: 1,
                memory_mib: 2048,
                ip: None,
                managed: true,
                service_up: None,
                ..VmView::default()
            },
        ],
        operations: vec![OperationView {
            id: 1,
            kind: OperationKind::MigrateIn,
            vm: "kv-9".into(),
            peer: "peer-b".into(),
            phase: OperationPhase::Done,
            elapsed_s: 3.2,
            error: None,
        }],
        ..Status::default()
    }
}

pub fn app_with(status: Option<Status>) -> App {
    let opts = ConsoleOptions {
        title: "peervisor".into(),
        attached_to: "/var/lib/peervisor".into(),
    };
    let mut app = App::new(
        opts,
        Keymap::default(),
        Theme::builtin("default").expect("default theme"),
    );
    app.set_status(status);
    app
}
