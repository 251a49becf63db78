//! The overlay admits only peers with the network key. Nodes here use libvirt's
//! test driver: these tests are about the overlay, not VMs.

mod common;

use std::time::Duration;

use common::{eventually, fresh_key, node};

#[test]
fn peers_with_the_key_join_and_a_peer_without_it_cannot() {
    let key = fresh_key();
    let a = node("peer-a", &key, None);
    let b = node("peer-b", &key, Some(a.port));
    let stranger = node("stranger", &fresh_key(), Some(a.port));

    assert!(
        eventually(Duration::from_secs(20), || a.connected_peers()
            == ["peer-b"]),
        "peer-b (same key) should join peer-a; a sees {:?}\n{}",
        a.connected_peers(),
        a.log()
    );
    // latency is measured by ping
    assert!(eventually(Duration::from_secs(10), || {
        a.status()["peers"][0]["latency_ms"].as_f64().is_some()
    }));
    // Give the stranger time to try (it redials every 3 s).
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        a.connected_peers(),
        ["peer-b"],
        "the stranger must not get in"
    );
    assert!(stranger.connected_peers().is_empty());
    let errors = stranger.status()["dial_errors"].to_string();
    assert!(
        errors.contains("network key mismatch"),
        "the stranger is told why: {errors}"
    );
    drop(b);
}

#[test]
fn status_text_lists_peers_with_latency_and_unknown_peer_is_a_clear_error() {
    let key = fresh_key();
    let a = node("alpha", &key, None);
    let b = node("beta", &key, Some(a.port));
    assert!(eventually(Duration::from_secs(20), || {
        a.status()["peers"][0]["latency_ms"].as_f64().is_some()
    }));
    let out = a.cli(&["status"]);
    let text = common::stdout(&out);
    assert!(out.status.success());
    assert!(text.contains("beta") && text.contains(" ms"), "{text}");

    let out = a.cli(&["migrate", "nope", "--to", "beta"]);
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(err.starts_with("error: no VM named 'nope'"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    drop(b);
}

#[test]
fn cli_without_a_node_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["vm", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = common::stderr(&out);
    assert!(
        err.contains("no peervisor node is running") && err.contains("peervisor node"),
        "{err}"
    );
}

#[test]
fn a_member_without_the_control_role_cannot_push_a_vm_in() {
    let key = fresh_key();
    let a = node("peer-a", &key, None);
    let b = node("peer-b", &key, Some(a.port));
    assert!(eventually(Duration::from_secs(20), || a.connected_peers()
        == ["peer-b"]));
    // libvirt's test driver runs a domain named "test" on peer-a.
    let out = a.cli(&["migrate", "test", "--to", "peer-b", "--force"]);
    assert_eq!(out.status.code(), Some(1));
    let err = common::stderr(&out);
    assert!(
        err.contains("peer-b refuses test") && err.contains("not allowed to control this host"),
        "{err}"
    );
    assert!(
        b.log().contains("not allowed to control this host"),
        "the destination says so too:\n{}",
        b.log()
    );
    // granting the role is what changes the answer (the refusal moves on to the
    // next check: peer-b's test driver has a VM named "test" too)
    b.allow_control(&a);
    let out = a.cli(&["migrate", "test", "--to", "peer-b", "--force"]);
    let err = common::stderr(&out);
    assert!(
        !err.contains("not allowed") && err.contains("exists already here"),
        "{err}"
    );
    let out = b.cli(&["peers", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["grants"][0][1], "control");
    assert_eq!(list["default_role"], "consume");
}

#[test]
fn a_crashed_peer_is_shown_gone_within_seconds() {
    let key = fresh_key();
    let a = node("peer-a", &key, None);
    let mut b = node("peer-b", &key, Some(a.port));
    assert!(eventually(Duration::from_secs(20), || a.connected_peers()
        == ["peer-b"]));
    b.kill_hard();
    let killed = std::time::Instant::now();
    // Its kernel closes the sockets of a killed process: no need to wait for
    // liveness (8-11 s, which covers a vanished host; see tests/nat.rs).
    assert!(
        eventually(Duration::from_secs(5), || a.connected_peers().is_empty()),
        "peer-b still shown connected:\n{}",
        a.log()
    );
    eprintln!(
        "peer-b (kill -9) shown gone after {:.2} s",
        killed.elapsed().as_secs_f64()
    );
    let peers = a.status()["peers"].clone();
    assert_eq!(peers[0]["nick"], "peer-b", "still listed, as gone: {peers}");
    assert_eq!(peers[0]["connected"], false);
}
