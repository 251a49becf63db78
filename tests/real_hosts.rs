//! peervisor on existing libvirt hosts (issue 16), in a lab of real-looking
//! hosts (tests/common/lab.rs): each with a libvirtd started by the
//! distribution's init script, its stock configuration and `default` network.
//! Nodes use the host's libvirt through LIBVIRT_DEFAULT_URI, as virsh does.

mod common;

use std::path::Path;
use std::time::Duration;

use common::lab::{Lab, LabHost};
use common::{TestNode, eventually, stderr, stdout};

/// `vm create ARGS` on `node`, which must succeed; the domain XML as virsh on
/// its host shows it.
fn create(node: &TestNode, host: &LabHost, args: &[&str]) -> String {
    let mut all = vec!["vm", "create"];
    all.extend_from_slice(args);
    let out = node.cli(&all);
    assert!(
        out.status.success(),
        "vm create {args:?}: {}\n{}",
        stderr(&out),
        node.log()
    );
    stdout(&host.virsh(&["dumpxml", args[0]]))
}

#[test]
fn vm_on_the_hosts_libvirt_network_serves_another_host_through_the_overlay() {
    let lab = Lab::new("rh", 2);
    let (one, two) = (&lab.hosts[0], &lab.hosts[1]);
    // Host-a's image dir of its own (imports land there), with the kernel image
    // and its bootable qcow2 disk.
    let images = one.image_dir_with_disk();
    let shared = common::image_dir();
    let image_dir = images.to_str().unwrap();
    let (a, b) = one.pair(two, &["--image-dir", image_dir]);

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
    // Missing and corrupt disk images, and an unknown base image.
    let garbage = one.root().join("corrupt.qcow2");
    std::fs::write(&garbage, "not a disk image\n").unwrap();
    for (args, says) in [
        (
            vec![
                "image",
                "import",
                "/nonexistent/base.qcow2",
                "--image-dir",
                image_dir,
            ],
            "disk image /nonexistent/base.qcow2 not found".to_string(),
        ),
        (
            vec![
                "image",
                "import",
                garbage.to_str().unwrap(),
                "--image-dir",
                image_dir,
            ],
            format!("{}: not a qcow2 image", garbage.display()),
        ),
        (
            vec!["vm", "create", "bad-1", "--disk", "nosuch"],
            "no disk image named 'nosuch' (none imported".to_string(),
        ),
        (
            vec!["vm", "create", "bad-1", "--disk", garbage.to_str().unwrap()],
            format!("{}: not a qcow2 image", garbage.display()),
        ),
    ] {
        let out = a.cli(&args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = stderr(&out);
        assert!(err.contains(&says), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let defined = stdout(&one.virsh(&["list", "--all", "--name"]));
    assert!(!defined.contains("bad-1"), "{defined}");
    assert!(!images.join("disks").join("corrupt.qcow2").exists());

    // A qcow2 disk image, imported with its checksum, booted on an overlay.
    let disk = shared.join("peervisor-guest").join("disk.qcow2");
    let out = a.cli(&[
        "image",
        "import",
        disk.to_str().unwrap(),
        "--name",
        "pvdisk",
        "--image-dir",
        image_dir,
    ]);
    assert!(out.status.success(), "import: {}", stderr(&out));
    assert!(stdout(&out).contains("sha256"), "{}", stdout(&out));
    let xml = create(&a, one, &["disk-1", "--disk", "pvdisk"]);
    assert!(xml.contains("<boot dev='hd'/>"), "{xml}");
    let base = images.join("disks").join("pvdisk.qcow2");
    assert!(
        xml.contains("<backingStore type='file'")
            && xml.contains(&format!("<source file='{}'", base.display())),
        "not an overlay on the base image: {xml}"
    );

    // A VM on the host's `default` network (the node's default with the host's
    // libvirt): its address comes from the network's DHCP and is learned back.
    let xml = create(&a, one, &["web-1"]);
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
    let (_, page) = two.consume_page(&b, "web-1", "/", Duration::from_secs(120));
    assert!(
        page.contains("peervisor guest web-1"),
        "the page is web-1's"
    );

    // The disk-booted guest: its address learned, its service consumed too.
    assert!(
        eventually(Duration::from_secs(240), || a
            .vm("disk-1")
            .and_then(|v| v["ip"].as_str().map(|ip| ip.starts_with("192.168.122.")))
            .unwrap_or(false)),
        "no address learned for disk-1:\n{}",
        a.log()
    );
    let (_, page) = two.consume_page(&b, "disk-1", "/", Duration::from_secs(120));
    assert!(page.contains("peervisor guest"), "{page}");
}

/// A domain as an operator defines one with virsh: the guest image's kernel
/// booted directly, a qcow2 disk of its own, a NIC on the `default` network.
fn foreign_domain_xml(name: &str, image: &Path, disk: &Path) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 pv.name={name} pv.ip=dhcp</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'/>
    <memballoon model='none'/>
  </devices>
</domain>",
        kernel = image.join("vmlinuz").display(),
        initrd = image.join("initrd.img").display(),
        disk = disk.display(),
    )
}

#[test]
fn vm_defined_with_virsh_is_foreign_until_adopted_and_released() {
    let image_dir = common::image_dir();
    let lab = Lab::new("ad", 2);
    let (one, two) = (&lab.hosts[0], &lab.hosts[1]);

    // The operator's VM, defined and started with virsh before peervisor runs.
    let disk = one.root().join("fvm.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("64M")
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let xml_file = one.root().join("fvm.xml");
    let image = image_dir.join("peervisor-guest");
    std::fs::write(&xml_file, foreign_domain_xml("fvm", &image, &disk)).unwrap();
    for args in [
        vec!["define", xml_file.to_str().unwrap()],
        vec!["start", "fvm"],
    ] {
        let out = one.virsh(&args);
        assert!(out.status.success(), "virsh {args:?}: {}", stderr(&out));
    }

    let (a, b) = one.pair(two, &[]);

    // Listed as foreign, with live stats and the address its DHCP lease gave.
    let listed = eventually(Duration::from_secs(240), || {
        a.vm("fvm").is_some_and(|v| {
            v["managed"] == false
                && v["state"] == "running"
                && v["stats"]["cpu_pct_guest"].is_number()
                && v["ip"]
                    .as_str()
                    .is_some_and(|ip| ip.starts_with("192.168.122."))
        })
    });
    assert!(
        listed,
        "fvm not listed with stats and address: {:?}\n{}",
        a.vm("fvm"),
        a.log()
    );
    // Nothing of it is published while it is foreign.
    assert!(b.providers("fvm").is_empty());

    // Bad input: one line naming what is wrong, nothing changed.
    let missing = a.cli(&["vm", "adopt", "ghost"]);
    assert!(!missing.status.success());
    let err = stderr(&missing);
    assert!(err.contains("no VM named 'ghost' on this peer"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // Adopted with a manifest: its service is published, another host consumes it.
    let manifest = a.data_dir().join("fvm.toml");
    std::fs::write(
        &manifest,
        "name = \"fvm\"\n[[services]]\nname = \"fvm-web\"\ntype = \"http\"\nport = 80\n",
    )
    .unwrap();
    let out = a.cli(&["vm", "adopt", "fvm", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "adopt: {}", stderr(&out));
    assert!(stdout(&out).contains("fvm-web"), "{}", stdout(&out));
    let xml = stdout(&one.virsh(&["dumpxml", "fvm"]));
    assert!(
        xml.contains("urn:peervisor:vm:1"),
        "metadata written: {xml}"
    );
    let again = a.cli(&["vm", "adopt", "fvm"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("VM 'fvm' is adopted already"),
        "{}",
        stderr(&again)
    );
    let (_, page) = two.consume_page(&b, "fvm-web", "/", Duration::from_secs(120));
    assert!(page.contains("peervisor guest fvm"), "{page}");

    // Released: foreign again, its metadata gone, its service withdrawn.
    let out = a.cli(&["vm", "release", "fvm"]);
    assert!(out.status.success(), "release: {}", stderr(&out));
    let xml = stdout(&one.virsh(&["dumpxml", "fvm"]));
    assert!(!xml.contains("urn:peervisor:vm:1"), "metadata left: {xml}");
    assert!(
        eventually(Duration::from_secs(60), || a
            .vm("fvm")
            .is_some_and(|v| v["managed"] == false)),
        "fvm still managed"
    );
    assert!(
        eventually(Duration::from_secs(60), || b
            .providers("fvm-web")
            .is_empty()),
        "fvm-web still published"
    );

    // Adopted again, then the node stops with --destroy-vms-on-exit (as every
    // test node does): the operator's VM runs on.
    let out = a.cli(&["vm", "adopt", "fvm"]);
    assert!(out.status.success(), "adopt again: {}", stderr(&out));
    drop(b);
    drop(a);
    let state = stdout(&one.virsh(&["domstate", "fvm"]));
    assert_eq!(state.trim(), "running", "the adopted VM was touched");
}
