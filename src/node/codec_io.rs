//! Test helpers: control messages through the node's own CBOR codec (with its
//! size limits), as a peer reads and writes them; a few valid encodings for the
//! fuzz targets to start from.

use super::control_codec;
use super::protocol::{
    CONTROL_PROTOCOL, ControlRequest, ControlResponse, DiskOffer, ServiceRecord,
};

pub(crate) fn read_request(bytes: &[u8]) -> std::io::Result<ControlRequest> {
    use libp2p::request_response::Codec;
    let mut io = futures::io::Cursor::new(bytes.to_vec());
    futures::executor::block_on(control_codec().read_request(&CONTROL_PROTOCOL, &mut io))
}

pub(crate) fn read_response(bytes: &[u8]) -> std::io::Result<ControlResponse> {
    use libp2p::request_response::Codec;
    let mut io = futures::io::Cursor::new(bytes.to_vec());
    futures::executor::block_on(control_codec().read_response(&CONTROL_PROTOCOL, &mut io))
}

pub(crate) fn encode_request(request: ControlRequest) -> Vec<u8> {
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

pub(crate) fn encode_response(response: ControlResponse) -> Vec<u8> {
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

pub(crate) fn sample_requests() -> Vec<Vec<u8>> {
    [
        ControlRequest::PrepareMigration {
            vm: "web-1".into(),
            uuid: "6f1c0d1e-0000-4000-8000-000000000001".into(),
            vcpus: 2,
            memory_mib: 256,
            disk_mib: 512,
            boot_files: vec!["/var/lib/peervisor/images/default/vmlinux".into()],
            disks: vec![DiskOffer {
                path: "/var/lib/peervisor/disks/web-1-6f1c0d1e.qcow2".into(),
                virtual_bytes: 64 << 20,
                file_id: Some((2049, 1234)),
                base_sha256: None,
            }],
            address: None,
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
        ControlRequest::VmFigures {
            vms: vec!["web-1".into()],
            history: true,
        },
        ControlRequest::VmAction {
            request: crate::api::Request::migrate("web-1", "12D3KooWPeerB"),
        },
        ControlRequest::Operations { ids: vec![3, 4] },
    ]
    .into_iter()
    .map(encode_request)
    .collect()
}

pub(crate) fn sample_responses() -> Vec<Vec<u8>> {
    [
        ControlResponse::MigrationAccepted {
            token: 7,
            disk_copies: vec!["/srv/disks/web-1-6f1c0d1e.qcow2".into()],
            incremental: true,
            direct_refused: None,
            loopback_ports: Some([40123, 40124]),
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
        ControlResponse::VmFigures {
            vms: vec![crate::model::VmView {
                name: "web-1".into(),
                ..Default::default()
            }],
            round: 3,
            operations: vec![crate::model::OperationView {
                id: 3,
                vm: "web-1".into(),
                ..Default::default()
            }],
        },
        ControlResponse::Operations {
            operations: vec![(
                crate::model::OperationView {
                    id: 3,
                    vm: "web-1".into(),
                    phase: crate::model::OperationPhase::Done,
                    ..Default::default()
                },
                Some(crate::api::Reply::Done {
                    message: "moved".into(),
                }),
            )],
        },
        ControlResponse::Acted {
            reply: crate::api::Reply::Done {
                message: "VM 'web-1' paused".into(),
            },
        },
    ]
    .into_iter()
    .map(encode_response)
    .collect()
}
