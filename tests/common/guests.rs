//! Peers with real guests: a rig of node processes with private libvirt daemons
//! sharing one guest network namespace, and helpers to boot and probe guests.

use std::time::Duration;

use super::{NodeOptions, TestNetns, TestNode, eventually, fresh_key, stderr, virsh};

/// What the peers of one test share: a guest namespace of its own (removed after
/// the nodes, which are declared later and so dropped first), a network key and
/// the image dir.
pub struct Rig {
    pub netns: TestNetns,
    pub key: String,
    pub image_dir: String,
}

impl Rig {
    pub fn new(tag: &str) -> Rig {
        Rig {
            image_dir: super::image_dir().to_string_lossy().into_owned(),
            netns: TestNetns::new(tag),
            key: fresh_key(),
        }
    }

    pub fn node(&self, nick: &str, bootstrap: Option<&TestNode>, extra: &[&str]) -> TestNode {
        let mut args = vec!["--image-dir", self.image_dir.as_str()];
        args.extend_from_slice(extra);
        TestNode::start(NodeOptions {
            nick,
            key: &self.key,
            bootstrap: bootstrap.map(|n| n.port),
            hypervisor: None,
            guest_netns: &self.netns.name,
            extra: &args,
        })
    }

    /// peer-a and peer-b joined, peer-b letting peer-a migrate VMs in.
    pub fn pair(&self, extra_b: &[&str]) -> (TestNode, TestNode) {
        self.pair_with(&[], extra_b)
    }

    /// The same, with arguments for each node.
    pub fn pair_with(&self, extra_a: &[&str], extra_b: &[&str]) -> (TestNode, TestNode) {
        let a = self.node("peer-a", None, extra_a);
        let b = self.node("peer-b", Some(&a), extra_b);
        b.join_and_allow_control(&a);
        (a, b)
    }
}

/// Writes 20 fresh keys through the guest's kv service and syncs its disk (the
/// write CGI ends with a sync); returns what was written.
pub fn write_known_values(netns: &TestNetns, ip: &str) -> Vec<(String, String)> {
    let values: Vec<(String, String)> = (0..20)
        .map(|i| (format!("key{i}"), format!("value-{i}-{}", fresh_key())))
        .collect();
    for (k, v) in &values {
        assert_eq!(kv(netns, ip, &format!("SET {k} {v}")), "OK");
    }
    let synced = netns.exec(&["curl", "-sf", &format!("http://{ip}/cgi-bin/write?1")]);
    assert!(synced.status.success(), "sync in the guest");
    values
}

/// The guest's state page (`name=`, `boot_id=`, `hits=` ...), fetched from inside
/// the guest network namespace.
pub fn guest_state(netns: &TestNetns, ip: &str) -> Option<String> {
    let out = netns.exec(&[
        "curl",
        "-sf",
        "--max-time",
        "2",
        &format!("http://{ip}/cgi-bin/state"),
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates a VM on `node` and waits until its HTTP service answers; returns its IP.
pub fn boot(node: &TestNode, netns: &TestNetns, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["vm", "create", name];
    args.extend_from_slice(extra);
    let out = node.cli(&args);
    assert!(out.status.success(), "vm create: {}", stderr(&out));
    let ip = node.vm(name).unwrap_or_else(|| panic!("{name} listed"))["ip"]
        .as_str()
        .expect("guest ip")
        .to_string();
    assert!(
        eventually(Duration::from_secs(60), || guest_state(netns, &ip)
            .is_some()),
        "guest HTTP never answered at {ip}"
    );
    ip
}

/// One line-protocol exchange with the guest's kv service.
pub fn kv(netns: &TestNetns, ip: &str, line: &str) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/{ip}/7000 && printf '%s\\nQUIT\\n' \"$LINE\" >&3 && head -n1 <&3"
    );
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &netns.name,
            "timeout",
            "5",
            "bash",
            "-c",
            &script,
        ])
        .env("LINE", line)
        .output()
        .expect("ip netns exec");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The data disk file of a VM, as libvirt has it.
pub fn disk_of(node: &TestNode, vm: &str) -> String {
    virsh(&node.hypervisor_uri(), &["domblklist", vm])
        .lines()
        .find_map(|l| l.trim().strip_prefix("vda").map(|p| p.trim().to_string()))
        .unwrap_or_else(|| panic!("{vm} has no vda"))
}

/// sha256 of a file, as `sha256sum` prints it.
pub fn sha256_of(path: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
