use super::codec_io::{encode_request, read_request};
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
    };
    let bytes = encode_request(big);
    assert!(bytes.len() as u64 > MAX_CONTROL_REQUEST);
    assert!(read_request(&bytes).is_err(), "oversized request decoded");
    let small = ControlRequest::ListServices;
    assert_eq!(read_request(&encode_request(small.clone())).unwrap(), small);
}
