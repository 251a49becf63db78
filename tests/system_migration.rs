//! Live migration between two hosts' own (system) libvirt daemons over the
//! overlay (issue 16), in the lab of stock libvirt hosts (tests/common/lab.rs):
//! QEMU runs as libvirt-qemu there, so the source hands its channel sockets to
//! that user (direct), or the data goes inside libvirt's own connection
//! (tunnelled, forced here since AppArmor is absent on this machine; its disk
//! copy goes from QEMU to a loopback port the node carries over the overlay).

mod common;

use std::path::Path;
use std::time::Duration;

use common::lab::{Lab, LabHost};
use common::{TestNode, eventually, fresh_key, stderr, stdout};
use serde_json::Value;

const VM: &str = "sysvm";
/// A guest without a disk: the figures of direct against tunnelled memory
/// transfer, no disk copy in them.
const DISKLESS: &str = "sysk";

/// How a domain boots: its `<os>` lines and its disk devices.
enum Boot<'a> {
    /// From a qcow2 disk (an overlay on an imported base image), with a data
    /// disk (a qcow2 of its own, no base) the guest leaves alone.
    Disk(&'a Path, &'a Path),
    /// The guest image's kernel from its directory (the same path on both
    /// hosts), no disk.
    Kernel(&'a Path),
}

/// A domain as an operator defines one with virsh: 128 MiB, a NIC on the
/// `default` network.
fn domain_xml(name: &str, boot: Boot) -> String {
    let (os, disks) = match boot {
        Boot::Disk(disk, data) => (
            "<boot dev='hd'/>".to_string(),
            format!(
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
                 <source file='{}'/><target dev='vda' bus='virtio'/></disk>\
                 <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
                 <source file='{}'/><target dev='vdb' bus='virtio'/></disk>",
                disk.display(),
                data.display()
            ),
        ),
        Boot::Kernel(image) => (
            format!(
                "<kernel>{}</kernel><initrd>{}</initrd>\
                 <cmdline>console=ttyS0 quiet panic=-1 pv.name={name} pv.ip=dhcp</cmdline>",
                image.join("vmlinuz").display(),
                image.join("initrd.img").display()
            ),
            String::new(),
        ),
    };
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    {os}
  </os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <devices>
    {disks}
    <interface type='network'>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'/>
    <memballoon model='none'/>
  </devices>
</domain>"
    )
}

/// Where the test writes its pattern on the VM's data disk, before it starts.
const PATTERN: &str = "-P 0x5a 1M 64k";

/// Writes (`write`) or checks (`read`) the pattern on a qcow2 file; a read
/// is read-only and shared (`-r -U`): a running QEMU holds the disk. True
/// when it succeeded.
fn pattern(op: &str, file: &Path) -> bool {
    let shared: &[&str] = if op == "read" { &["-r", "-U"] } else { &[] };
    let out = std::process::Command::new("qemu-io")
        .args(shared)
        .args(["-f", "qcow2", "-c", &format!("{op} {PATTERN}")])
        .arg(file)
        .output()
        .unwrap();
    let said = format!("{}{}", stdout(&out), stderr(&out));
    out.status.success() && !said.contains("failed") && said.contains("65536/65536")
}

/// The copies a host's disk dir holds of the VM's disks: (boot disk, data disk).
fn copies_in(disks: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let files: Vec<_> = std::fs::read_dir(disks)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 2, "copies in {}: {files:?}", disks.display());
    // plan_disks names them NAME-STEM.qcow2, NAME-STEM-1.qcow2.
    let second = |f: &&std::path::PathBuf| f.to_string_lossy().ends_with("-1.qcow2");
    let data = files.iter().find(second).expect("the data disk's copy");
    let boot = files
        .iter()
        .find(|f| !second(f))
        .expect("the boot disk's copy");
    (boot.clone(), data.clone())
}

/// The backing file `qemu-img info` names for `file`.
fn backing_of(file: &Path) -> Option<std::path::PathBuf> {
    let info = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(file)
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    info["backing-filename"].as_str().map(Into::into)
}

/// How long a guest's state page may take to answer through a consumer.
const PAGE_BOUND: Duration = Duration::from_secs(180);
const STATE: &str = "/cgi-bin/state";

/// The guest's boot id from its state page (name, boot_id, ...).
fn boot_id(page: &str) -> String {
    let boot = page
        .lines()
        .find_map(|l| l.strip_prefix("boot_id="))
        .unwrap_or_default()
        .to_string();
    assert!(!boot.is_empty(), "no boot id in {page:?}");
    boot
}

/// The guest's boot id, once its state page answers through the consumer on
/// `host`'s port (`node`'s log shown if it never does).
fn boot_id_on(host: &LabHost, port: u16, node: &TestNode) -> String {
    boot_id(&host.page(port, STATE, PAGE_BOUND, node))
}

/// Consumes `service` on `host` (through `node`) and returns the local port
/// and the guest's boot id read through it.
fn consume_boot_id(host: &LabHost, node: &TestNode, service: &str) -> (u16, String) {
    let (port, page) = host.consume_page(node, service, STATE, PAGE_BOUND);
    (port, boot_id(&page))
}

/// Waits until `node` lists `peer` among the providers of `service`.
fn provided_by(node: &TestNode, service: &str, peer: &str) {
    assert!(
        eventually(Duration::from_secs(60), || node
            .providers(service)
            .iter()
            .any(|p| p["peer_nick"] == peer)),
        "{} never saw {service} provided by {peer}: {:?}",
        node.nick,
        node.providers(service)
    );
}

/// `virsh domstate VM` on `host`, or "" when the VM is not defined there.
fn domstate(host: &LabHost, vm: &str) -> String {
    let out = host.virsh(&["domstate", vm]);
    if out.status.success() {
        stdout(&out).trim().to_string()
    } else {
        String::new()
    }
}

/// The base image imported into a host's own image dir.
fn import_base(node: &TestNode, images: &Path, disk: &Path) {
    let out = node.cli(&[
        "image",
        "import",
        disk.to_str().unwrap(),
        "--name",
        "pvdisk",
        "--image-dir",
        images.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "import: {}", stderr(&out));
}

/// `migrate VM --to TO --wait --json` on `from`: the report, or the error.
fn migrate(from: &TestNode, vm: &str, to: &str) -> Result<Value, String> {
    let out = from.cli(&["migrate", vm, "--to", to, "--wait", "--json"]);
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("migration report"))
    } else {
        Err(stderr(&out))
    }
}

/// The VM's learned address on `node`, once it has one on the `default` network.
fn learned_ip(node: &TestNode, vm: &str) -> bool {
    node.vm(vm)
        .and_then(|v| v["ip"].as_str().map(|ip| ip.starts_with("192.168.122.")))
        .unwrap_or(false)
}

/// `vm adopt VM ARGS` on `node` once it lists the VM; waits until it learned
/// the VM's address.
fn adopt(node: &TestNode, vm: &str, args: &[&str]) {
    assert!(
        eventually(Duration::from_secs(60), || node.vm(vm).is_some()),
        "{vm} not listed:\n{}",
        node.log()
    );
    let mut all = vec!["vm", "adopt", vm];
    all.extend_from_slice(args);
    let out = node.cli(&all);
    assert!(out.status.success(), "adopt {vm}: {}", stderr(&out));
    assert!(
        eventually(Duration::from_secs(300), || learned_ip(node, vm)),
        "no address learned for {vm}:\n{}",
        node.log()
    );
}

/// A libvirt hook on `host` that refuses incoming migrations while
/// /etc/libvirt/refuse-migrations exists (an operator's policy); libvirtd reads
/// hooks when it starts, so it is restarted.
fn install_refusing_hook(host: &LabHost) {
    let hooks = host.root().join("etc").join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook = hooks.join("qemu");
    std::fs::write(
        &hook,
        "#!/bin/sh\ncat >/dev/null\nif [ \"$2\" = migrate ] && [ -e /etc/libvirt/refuse-migrations ]; then\n  echo 'incoming migrations refused by this host' >&2\n  exit 1\nfi\nexit 0\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = host.exec(&["/etc/init.d/libvirtd", "restart"]);
    assert!(out.status.success(), "libvirtd restart: {}", stderr(&out));
    assert!(
        eventually(Duration::from_secs(60), || host
            .virsh(&["version"])
            .status
            .success()),
        "libvirtd did not come back:\n{}",
        host.log()
    );
}

/// A migration of the VM from `from` that `to`'s libvirt refuses mid-way (its
/// hook, after `to`'s node accepted): the VM keeps running on `from` only,
/// nothing of it is left on `to` (`to_disks` is its disk dir).
fn refused_by_the_hook(from: (&TestNode, &LabHost), to: (&str, &LabHost), to_disks: &Path) {
    let ((node, source), (to_name, dest)) = (from, to);
    let flag = dest.root().join("etc").join("refuse-migrations");
    std::fs::write(&flag, "").unwrap();
    let err = migrate(node, VM, to_name).expect_err("the hook let the migration through");
    assert!(
        err.contains("did not move") && err.contains("it keeps running on this peer"),
        "{err}"
    );
    assert_eq!(domstate(source, VM), "running");
    assert_eq!(
        domstate(dest, VM),
        "",
        "a half-received {VM} left on {to_name}"
    );
    assert!(
        eventually(Duration::from_secs(30), || std::fs::read_dir(to_disks)
            .unwrap()
            .next()
            .is_none()),
        "disk files made for the failed migration left in {}",
        to_disks.display()
    );
    std::fs::remove_file(flag).unwrap();
}

#[test]
fn vm_on_a_hosts_libvirt_live_migrates_to_another_hosts_daemon_over_the_overlay() {
    let shared = common::lab::guest_image_with_disk();
    let base_disk = shared.join("peervisor-guest").join("disk.qcow2");
    // Two hosts that run the VM in turn, and a third that only consumes it.
    let lab = Lab::new("sm", 3);
    let (one, two, three) = (&lab.hosts[0], &lab.hosts[1], &lab.hosts[2]);
    // Short leases, so the guest renews on the destination within a minute.
    one.dhcp_lease_minutes(2);
    two.dhcp_lease_minutes(2);
    install_refusing_hook(one);
    install_refusing_hook(two);

    // Each host: its image dir and its disk dir. Host-b sends tunnelled.
    let dirs = |host: &LabHost| {
        let images = host.root().join("images");
        let disks = host.root().join("disks");
        std::fs::create_dir_all(&images).unwrap();
        std::fs::create_dir_all(&disks).unwrap();
        (images, disks)
    };
    let ((images_a, disks_a), (images_b, disks_b)) = (dirs(one), dirs(two));
    let key = fresh_key();
    let flags = |images: &Path, disks: &Path| {
        vec![
            "--image-dir".to_string(),
            images.to_str().unwrap().to_string(),
            "--disk-dir".to_string(),
            disks.to_str().unwrap().to_string(),
        ]
    };
    let fa = flags(&images_a, &disks_a);
    let a = one.node(
        "host-a",
        &key,
        &[],
        &fa.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut fb = flags(&images_b, &disks_b);
    fb.extend(["--migration-transport".into(), "tunnelled".into()]);
    let b = two.node(
        "host-b",
        &key,
        &[(one, &a)],
        &fb.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let c = three.node("host-c", &key, &[(one, &a)], &[]);
    assert!(
        eventually(Duration::from_secs(60), || {
            let mut peers = a.connected_peers();
            peers.sort();
            peers == ["host-b", "host-c"]
        }),
        "overlay did not form:\n{}",
        a.log()
    );
    b.allow_control(&a);
    a.allow_control(&b);
    import_base(&a, &images_a, &base_disk);
    import_base(&b, &images_b, &base_disk);

    // The operator's VM on host-a: an overlay on host-a's base image.
    let overlay = one.root().join("sysvm.qcow2");
    let base_a = images_a.join("disks").join("pvdisk.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base_a)
        .arg(&overlay)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    // Its data disk, with a pattern the test reads back wherever it moves.
    let data = one.root().join("sysvm-data.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&data)
        .arg("16M")
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    assert!(!pattern("read", &data), "a blank disk has no pattern");
    assert!(pattern("write", &data), "writing the pattern");
    let xml_file = one.root().join("sysvm.xml");
    std::fs::write(&xml_file, domain_xml(VM, Boot::Disk(&overlay, &data))).unwrap();
    for args in [
        vec!["define", xml_file.to_str().unwrap()],
        vec!["start", VM],
    ] {
        let out = one.virsh(&args);
        assert!(out.status.success(), "virsh {args:?}: {}", stderr(&out));
    }
    let manifest = a.data_dir().join("sysvm.toml");
    std::fs::write(
        &manifest,
        "name = \"sysvm\"\n[[services]]\nname = \"sysvm-web\"\ntype = \"http\"\nport = 80\n",
    )
    .unwrap();
    adopt(&a, VM, &["-f", manifest.to_str().unwrap()]);

    // Its service, consumed on the third host (host-c, which runs no VM) and
    // on host-b through the overlay: the boot to compare.
    let (port_c, boot) = consume_boot_id(three, &c, "sysvm-web");
    let (port_b, on_b) = consume_boot_id(two, &b, "sysvm-web");
    assert_eq!(on_b, boot, "one guest seen from two hosts");

    // Host-b's libvirt refuses mid-way (after host-b's node accepted): the VM
    // keeps running on host-a only, nothing of it is left on host-b.
    refused_by_the_hook((&a, one), ("host-b", two), &disks_b);

    // Direct: host-a's QEMU (libvirt-qemu, unconfined) reaches the sockets host-a
    // hands it; the overlay copy goes, the base image stays.
    let report = migrate(&a, VM, "host-b").unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    let transport = report["transport"].as_str().unwrap_or_default();
    assert!(
        transport.starts_with("direct (QEMU runs as uid"),
        "{report}"
    );
    let direct_s = report["seconds"].as_f64().unwrap();
    let copied = report["disk_bytes"].as_u64().expect("disk bytes reported");
    let base_bytes = std::fs::metadata(&base_a).unwrap().len();
    assert!(
        copied < base_bytes,
        "{copied} bytes copied, the base image alone is {base_bytes}: the base was copied"
    );
    assert_eq!(domstate(one, VM), "", "virsh on host-a still has {VM}");
    assert_eq!(domstate(two, VM), "running");
    // Host-b's copy is an overlay on host-b's own base image; the data disk
    // came whole, pattern included.
    let (copy, data_b) = copies_in(&disks_b);
    assert_eq!(
        backing_of(&copy),
        Some(images_b.join("disks").join("pvdisk.qcow2"))
    );
    assert_eq!(backing_of(&data_b), None);
    assert!(
        pattern("read", &data_b),
        "the data disk's pattern on host-b"
    );
    let ops = a.status()["operations"].clone();
    assert!(
        ops.as_array()
            .is_some_and(|ops| ops.iter().any(|o| o["transport"]
                .as_str()
                .is_some_and(|t| t.starts_with("direct")))),
        "status shows no transport: {ops}"
    );
    // The same guest, re-learned by host-b and serving from there.
    assert!(
        eventually(Duration::from_secs(300), || learned_ip(&b, VM)),
        "host-b learned no address for {VM}:\n{}",
        b.log()
    );
    let after = boot_id_on(two, port_b, &b);
    assert_eq!(after, boot, "same guest, not a reboot");
    // The third host's consumer: the same local port, untouched by its user,
    // answers from the new host (each connection picks its provider anew, so
    // nothing is reconnected by hand).
    provided_by(&c, "sysvm-web", "host-b");
    let mut last_provider = Value::Null;
    let from_b = eventually(PAGE_BOUND, || {
        let page = three.http_get(port_c, STATE);
        last_provider = c.status()["consumptions"][0]["last_provider"].clone();
        page.is_some_and(|p| boot_id(&p) == boot) && last_provider == "host-b"
    });
    assert!(
        from_b,
        "host-c's consumer on port {port_c} was not answered from host-b (last provider {last_provider}):\n{}",
        c.log()
    );
    provided_by(&b, "sysvm-web", "host-b");
    provided_by(&a, "sysvm-web", "host-b");
    let port_a = a.consume("sysvm-web", &[]);
    assert_eq!(boot_id_on(one, port_a, &a), boot);

    // DHCP on the destination (docs/migration.md). The guest came with host-a's
    // lease; its next renewal reaches host-b's dnsmasq, which never leased it
    // and takes it over (libvirt's networks are dhcp-authoritative): the same
    // address, now leased by host-b.
    let mac = two.mac_of(VM);
    let old_ip = b
        .vm(VM)
        .and_then(|v| v["ip"].as_str().map(String::from))
        .unwrap();
    let leases = |host: &LabHost| stdout(&host.virsh(&["net-dhcp-leases", "default"]));
    assert!(
        eventually(Duration::from_secs(240), || two
            .leased_ips(&mac)
            .contains(&old_ip)),
        "host-b's DHCP never took over {VM}'s lease of {old_ip} ({mac}):\n{}",
        leases(two)
    );
    // The address taken on host-b (reserved for another machine here, as
    // another guest's lease would be): the next renewal is refused, the guest
    // asks anew and gets another address, and what host-b serves follows it.
    let out = two.virsh(&[
        "net-update",
        "default",
        "add",
        "ip-dhcp-host",
        &format!("<host mac='52:54:00:fe:00:01' ip='{old_ip}'/>"),
        "--live",
        "--config",
    ]);
    assert!(out.status.success(), "net-update: {}", stderr(&out));
    let mut new_ip = None;
    assert!(
        eventually(Duration::from_secs(240), || {
            new_ip = two.leased_ips(&mac).into_iter().find(|ip| *ip != old_ip);
            new_ip.is_some()
        }),
        "{VM} kept {old_ip} after host-b refused it:\n{}",
        leases(two)
    );
    let new_ip = new_ip.unwrap();
    assert!(
        eventually(Duration::from_secs(60), || b
            .vm(VM)
            .is_some_and(|v| v["ip"] == new_ip.as_str())),
        "host-b still has {:?} for {VM}, its lease says {new_ip}",
        b.vm(VM).map(|v| v["ip"].clone())
    );
    assert_eq!(
        boot_id_on(three, port_c, &c),
        boot,
        "host-c's consumer, after the guest's new address {new_ip}"
    );

    // Tunnelled (forced on host-b) with its disks to copy: libvirt copies no
    // disk inside its own connection, so it goes loopback: QEMU's memory and
    // disk streams to ports on host-b's loopback, over the overlay, to
    // host-a's QEMU on host-a's loopback. First refused by host-a's libvirt:
    // it stays on host-b only, nothing made on host-a.
    refused_by_the_hook((&b, two), ("host-a", one), &disks_a);
    let report = migrate(&b, VM, "host-a").unwrap_or_else(|e| panic!("{e}\n{}", b.log()));
    let transport = report["transport"].as_str().unwrap_or_default();
    assert!(
        transport.starts_with(
            "loopback (instead of tunnelled (forced by --migration-transport): libvirt copies no disk"
        ),
        "{report}"
    );
    let tunnelled_disk_s = report["seconds"].as_f64().unwrap();
    let copied_back = report["disk_bytes"].as_u64().expect("disk bytes reported");
    assert!(
        copied_back > 0 && copied_back < base_bytes,
        "{copied_back} disk bytes through the overlay (base image {base_bytes})"
    );
    assert_eq!(domstate(two, VM), "", "virsh on host-b still has {VM}");
    assert_eq!(domstate(one, VM), "running");
    let (copy, data_a) = copies_in(&disks_a);
    assert_eq!(
        backing_of(&copy),
        Some(images_a.join("disks").join("pvdisk.qcow2"))
    );
    assert!(
        pattern("read", &data_a),
        "the data disk's pattern on host-a"
    );
    assert!(
        std::fs::read_dir(&disks_b).unwrap().next().is_none(),
        "host-b kept its copies after host-a confirmed the VM"
    );
    assert!(
        eventually(Duration::from_secs(300), || learned_ip(&a, VM)),
        "host-a learned no address for {VM}:\n{}",
        a.log()
    );
    assert_eq!(
        boot_id_on(one, port_a, &a),
        boot,
        "same guest, not a reboot"
    );

    // A disk-less guest, defined with virsh on host-b and adopted: tunnelled
    // to host-a, then direct back. Its kernel and initramfs are at the same
    // path on both hosts, each host's own copy (one file used by two daemons
    // would carry two hosts' DAC ownership records).
    for host in [one, two] {
        let dir = host.root().join("lib").join("images").join("pvguest");
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["vmlinuz", "initrd.img"] {
            std::fs::copy(shared.join("peervisor-guest").join(file), dir.join(file)).unwrap();
        }
    }
    let xml_file = two.root().join("sysk.xml");
    std::fs::write(
        &xml_file,
        domain_xml(
            DISKLESS,
            Boot::Kernel(Path::new("/var/lib/libvirt/images/pvguest")),
        ),
    )
    .unwrap();
    for args in [
        vec!["define", xml_file.to_str().unwrap()],
        vec!["start", DISKLESS],
    ] {
        let out = two.virsh(&args);
        assert!(out.status.success(), "virsh {args:?}: {}", stderr(&out));
    }
    adopt(&b, DISKLESS, &[]);
    let (port_k, boot_k) = consume_boot_id(one, &a, DISKLESS);
    let report = migrate(&b, DISKLESS, "host-a").unwrap_or_else(|e| panic!("{e}\n{}", b.log()));
    assert_eq!(
        report["transport"], "tunnelled (forced by --migration-transport)",
        "{report}"
    );
    let mut tunnelled = vec![report["seconds"].as_f64().unwrap()];
    assert_eq!(domstate(two, DISKLESS), "", "virsh on host-b still has it");
    assert_eq!(domstate(one, DISKLESS), "running");
    assert!(
        eventually(Duration::from_secs(300), || learned_ip(&a, DISKLESS)),
        "host-a learned no address for {DISKLESS}:\n{}",
        a.log()
    );
    let back = boot_id_on(one, port_k, &a);
    assert_eq!(back, boot_k, "same guest, not a reboot");
    let report = migrate(&a, DISKLESS, "host-b").unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    assert!(
        report["transport"]
            .as_str()
            .is_some_and(|t| t.starts_with("direct")),
        "{report}"
    );
    let mut direct = vec![report["seconds"].as_f64().unwrap()];
    assert_eq!(domstate(one, DISKLESS), "");
    assert_eq!(domstate(two, DISKLESS), "running");

    // Figures (docs/hosting.md): PEERVISOR_SYSMIG_ROUNDS more round trips of
    // the same guest, tunnelled out of host-b and direct back, each timed by
    // its source.
    let rounds: usize = std::env::var("PEERVISOR_SYSMIG_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    for _ in 0..rounds {
        for (from, to, times) in [(&b, "host-a", &mut tunnelled), (&a, "host-b", &mut direct)] {
            let report = migrate(from, DISKLESS, to).unwrap_or_else(|e| panic!("{e}"));
            times.push(report["seconds"].as_f64().unwrap());
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "system daemons over the overlay, {DISKLESS} (128 MiB, no disk): \
         direct {direct:.2?} s, median {:.2} s; tunnelled {tunnelled:.2?} s, median {:.2} s; \
         {VM}'s direct move copied {copied} disk bytes in {direct_s:.2} s, \
         its tunnelled one {copied_back} in {tunnelled_disk_s:.2} s; load {}",
        median(direct.clone()),
        median(tunnelled.clone()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
