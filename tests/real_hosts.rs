//! peervisor on existing libvirt hosts (issue 16), in a lab of real-looking
//! hosts (tests/common/lab.rs): each with a libvirtd started by the
//! distribution's init script, its stock configuration and `default` network.
//! Nodes use the host's libvirt through LIBVIRT_DEFAULT_URI, as virsh does.

mod common;

use std::time::Duration;

use common::lab::Lab;
use common::{eventually, fresh_key, stderr, stdout};

/// Polls the guest's HTTP service through the overlay from `host`: the
/// consumer's listener is on that host's loopback.
fn http_on(host: &common::lab::LabHost, port: u16, path: &str) -> Option<String> {
    let out = host.exec(&[
        "curl",
        "-sf",
        "--max-time",
        "5",
        &format!("http://127.0.0.1:{port}{path}"),
    ]);
    out.status.success().then(|| stdout(&out))
}

#[test]
fn vm_on_the_hosts_libvirt_network_serves_another_host_through_the_overlay() {
    let image_dir = common::image_dir();
    let image_dir = image_dir.to_str().unwrap();
    let lab = Lab::new("rh", 2);
    let (one, two) = (&lab.hosts[0], &lab.hosts[1]);
    let key = fresh_key();
    let a = one.node("host-a", &key, &[], &["--image-dir", image_dir]);
    let b = two.node("host-b", &key, &[(one, &a)], &[]);
    assert!(
        eventually(Duration::from_secs(60), || a.connected_peers()
            == ["host-b"]),
        "overlay did not form:\n{}",
        a.log()
    );

    // Which libvirt, and who chose it, in `status` (JSON and text).
    let status = a.status();
    assert_eq!(status["local"]["hypervisor"], "qemu:///system");
    assert_eq!(status["local"]["hypervisor_origin"], "environment");
    let text = stdout(&a.cli(&["status"]));
    assert!(
        text.contains("libvirt  qemu:///system (host's libvirt, from LIBVIRT_DEFAULT_URI"),
        "{text}"
    );

    // Bad input: one line naming what is wrong, nothing defined.
    for (flag, name, says) in [
        (
            "--network",
            "nosuch",
            "no libvirt network named 'nosuch' (this host has: default)",
        ),
        ("--bridge", "nobr0", "no bridge named 'nobr0' on this host"),
    ] {
        let out = a.cli(&["vm", "create", "bad-1", flag, name]);
        assert!(!out.status.success(), "{flag} {name} was accepted");
        let err = stderr(&out);
        assert!(err.contains(says), "{flag} {name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let defined = stdout(&one.virsh(&["list", "--all", "--name"]));
    assert!(!defined.contains("bad-1"), "{defined}");

    // A VM on the host's `default` network (the node's default with the host's
    // libvirt): its address comes from the network's DHCP and is learned back.
    let out = a.cli(&["vm", "create", "web-1"]);
    assert!(
        out.status.success(),
        "create: {}\n{}",
        stderr(&out),
        a.log()
    );
    let xml = stdout(&one.virsh(&["dumpxml", "web-1"]));
    assert!(xml.contains("<source network='default'"), "{xml}");
    let mut ip = String::new();
    let learned = eventually(Duration::from_secs(240), || {
        ip = a
            .vm("web-1")
            .and_then(|v| v["ip"].as_str().map(String::from))
            .unwrap_or_default();
        ip.starts_with("192.168.122.")
    });
    assert!(learned, "no address learned for web-1:\n{}", a.log());
    let leases = stdout(&one.virsh(&["net-dhcp-leases", "default"]));
    assert!(leases.contains(&ip), "{ip} not in the leases:\n{leases}");

    // Its service, published by host-a, consumed on host-b through the overlay.
    assert!(
        eventually(Duration::from_secs(60), || !b.providers("web-1").is_empty()),
        "host-b never saw web-1's service:\n{}",
        a.log()
    );
    let port = b.consume("web-1", &[]);
    let mut page = None;
    let answered = eventually(Duration::from_secs(120), || {
        page = http_on(two, port, "/");
        page.is_some()
    });
    assert!(answered, "no answer through the overlay:\n{}", b.log());
    assert!(
        page.unwrap().contains("peervisor guest web-1"),
        "the page is web-1's"
    );
}
