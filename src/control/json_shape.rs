//! Names in the control API's JSON, byte for byte: what `wire_examples.jsonl`
//! (control/mod.rs) does not hold, the names inside model types (a status with
//! VMs, peers, services, operations and consumptions; a VM list), a replica's
//! name, an exposure's allow list and a replication report. Names are typed in
//! Rust (`VmName`, `ServiceName`, `PeerRef`) but travel as the plain strings
//! they always were; the expected lines were written by the String-typed code.

use super::{ReplicationReport, Reply, Request};
use crate::model::{
    ConsumptionView, OperationView, PeerView, ProviderView, ServiceSpec, ServiceView, Status,
    VmView,
};

fn web_service() -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        kind: "http".into(),
        port: 80,
        tags: vec![("tier".into(), "front".into())],
        max_conns: Some(4),
        allow: vec!["12D3KooWPeerB".into()],
    }
}

fn requests() -> Vec<Request> {
    vec![
        Request::VmCreate {
            name: "web-1".into(),
            vcpus: 1,
            memory_mib: 128,
            image: "default".into(),
            services: vec![web_service()],
            data_disk_mib: Some(64),
            nic: None,
            disk: None,
            no_overlay: false,
            user_data: None,
        },
        Request::Replicate {
            vm: "web-1".into(),
            to: "12D3KooWPeerB".into(),
            name: Some("web-1-r1".into()),
            detach: false,
        },
        Request::Expose {
            name: "db".into(),
            target: "127.0.0.1:5432".into(),
            kind: Some("postgres".into()),
            allow: vec!["peer-b".into(), "12D3KooWPeerC".into()],
            max_conns: None,
        },
    ]
}

const REQUESTS: &[&str] = &[
    r#"{"request":"vm_create","name":"web-1","vcpus":1,"memory_mib":128,"image":"default","services":[{"name":"web","kind":"http","port":80,"tags":[["tier","front"]],"max_conns":4,"allow":["12D3KooWPeerB"]}],"data_disk_mib":64}"#,
    r#"{"request":"replicate","vm":"web-1","to":"12D3KooWPeerB","name":"web-1-r1"}"#,
    r#"{"request":"expose","name":"db","target":"127.0.0.1:5432","kind":"postgres","allow":["peer-b","12D3KooWPeerC"],"max_conns":null}"#,
];

fn vm() -> VmView {
    VmView {
        name: "web-1".into(),
        uuid: "6f1c0d1e-0000-4000-8000-000000000001".into(),
        ip: Some("10.77.0.9".into()),
        managed: true,
        services: vec![web_service()],
        ..VmView::default()
    }
}

fn replies() -> Vec<Reply> {
    let status = Status {
        peers: vec![PeerView {
            peer_id: "12D3KooWPeerB".into(),
            nick: "peer-b".into(),
            connected: true,
            vms: Some(vec!["web-1-r1".into()]),
            ..PeerView::default()
        }],
        vms: vec![vm()],
        operations: vec![OperationView {
            id: 3,
            vm: "web-1".into(),
            peer: "peer-b".into(),
            ..OperationView::default()
        }],
        services: vec![ServiceView {
            name: "web".into(),
            kind: "http".into(),
            tags: Vec::new(),
            providers: vec![ProviderView {
                peer_id: "12D3KooWPeerB".into(),
                peer_nick: "peer-b".into(),
                vm: Some("web-1-r1".into()),
                latency_ms: Some(0.5),
                load: None,
                local: false,
            }],
        }],
        consumptions: vec![ConsumptionView {
            service: "web".into(),
            listen: "127.0.0.1:8080".into(),
            last_provider: Some("peer-b".into()),
            ..ConsumptionView::default()
        }],
        ..Status::default()
    };
    vec![
        Reply::Status(Box::new(status)),
        Reply::Vms { vms: vec![vm()] },
        Reply::Replicated(Box::new(ReplicationReport {
            vm: "web-1".into(),
            replica: "web-1-r1".into(),
            from: "peer-a".into(),
            to: "peer-b".into(),
            to_peer_id: "12D3KooWPeerB".into(),
            replica_ip: "10.77.0.10".into(),
            seconds: 2.0,
            paused_ms: None,
            consistent_copy: Some("overlay".into()),
            overlay_ms: Some(5),
            commit_ms: Some(7),
            disk: None,
        })),
    ]
}

const REPLIES: &[&str] = &[
    r#"{"reply":"status","local":{"peer_id":"","nick":"","listen_addrs":[],"hypervisor":"","hypervisor_origin":"private","accel":"","host":null,"lending":null,"libvirt":{"lost":null,"not_answering_s":null,"reconnects":0,"last_outage_s":null},"reachability":{"state":"unknown"}},"peers":[{"peer_id":"12D3KooWPeerB","nick":"peer-b","connected":true,"latency_ms":null,"vms":["web-1-r1"],"addrs":[],"load":null,"links":[],"relayed_via":null}],"vms":[{"name":"web-1","uuid":"6f1c0d1e-0000-4000-8000-000000000001","state":"stopped","vcpus":0,"memory_mib":0,"ip":"10.77.0.9","managed":true,"service_up":null,"stats":null,"history":null,"services":[{"name":"web","kind":"http","port":80,"tags":[["tier","front"]],"max_conns":4,"allow":["12D3KooWPeerB"]}]}],"operations":[{"id":3,"kind":"migrateout","vm":"web-1","peer":"peer-b","phase":"requested","elapsed_s":0.0,"error":null,"progress":null,"transferred_bytes":null,"remaining_bytes":null,"dirty_pages_per_s":null,"iteration":null,"downtime_ms":null,"probe_downtime_ms":null,"transport":null}],"dial_errors":[],"services":[{"name":"web","kind":"http","tags":[],"providers":[{"peer_id":"12D3KooWPeerB","peer_nick":"peer-b","vm":"web-1-r1","latency_ms":0.5,"load":null,"local":false}]}],"consumptions":[{"service":"web","listen":"127.0.0.1:8080","connections_total":0,"connections_active":0,"bytes_to_service":0,"bytes_from_service":0,"errors":0,"last_provider":"peer-b","last_error":null}],"jobs":[],"job_sources":[],"penalty":null}"#,
    r#"{"reply":"vms","vms":[{"name":"web-1","uuid":"6f1c0d1e-0000-4000-8000-000000000001","state":"stopped","vcpus":0,"memory_mib":0,"ip":"10.77.0.9","managed":true,"service_up":null,"stats":null,"history":null,"services":[{"name":"web","kind":"http","port":80,"tags":[["tier","front"]],"max_conns":4,"allow":["12D3KooWPeerB"]}]}]}"#,
    r#"{"reply":"replicated","vm":"web-1","replica":"web-1-r1","from":"peer-a","to":"peer-b","to_peer_id":"12D3KooWPeerB","replica_ip":"10.77.0.10","seconds":2.0,"paused_ms":null,"consistent_copy":"overlay","overlay_ms":5,"commit_ms":7,"disk":null}"#,
];

#[test]
fn names_keep_their_json_byte_for_byte() {
    let requests = requests();
    let replies = replies();
    let sent: Vec<String> = requests
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .chain(replies.iter().map(|r| serde_json::to_string(r).unwrap()))
        .collect();
    let expected: Vec<&str> = REQUESTS.iter().chain(REPLIES).copied().collect();
    for json in &sent {
        println!("{json}");
    }
    assert_eq!(
        sent, expected,
        "the JSON changed (got the lines printed above)"
    );
    for (request, json) in requests.iter().zip(REQUESTS) {
        assert_eq!(&serde_json::from_str::<Request>(json).unwrap(), request);
    }
    for (reply, json) in replies.iter().zip(REPLIES) {
        assert_eq!(&serde_json::from_str::<Reply>(json).unwrap(), reply);
    }
}
