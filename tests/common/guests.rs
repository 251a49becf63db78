//! Peers with real guests: a rig of node processes with private libvirt daemons
//! sharing one guest network namespace, and helpers to boot and probe guests.

use std::time::Duration;

use super::{NodeOptions, TestNetns, TestNode, fresh_key, http_wait, scaled, stderr, virsh};

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

/// How long a guest's page or service may take to answer (scaled): under TCG a
/// CGI page forks and execs, and a loaded 2-core machine stalls guests for
/// seconds at a time.
pub const GUEST_ANSWER: Duration = Duration::from_secs(60);
/// From `vm create` (or start) to the guest's first answer.
pub const GUEST_BOOT: Duration = Duration::from_secs(90);

/// Writes 20 fresh keys through the guest's kv service and syncs its disk (the
/// write CGI ends with a sync); returns what was written.
pub fn write_known_values(netns: &TestNetns, ip: &str) -> Vec<(String, String)> {
    let values: Vec<(String, String)> = (0..20)
        .map(|i| (format!("key{i}"), format!("value-{i}-{}", fresh_key())))
        .collect();
    for (k, v) in &values {
        assert_eq!(kv(netns, ip, &format!("SET {k} {v}")), "OK");
    }
    let url = format!("http://{ip}/cgi-bin/write?1");
    assert!(
        http_wait(Some(netns), &url, GUEST_ANSWER).is_some(),
        "sync in the guest"
    );
    values
}

/// The guest's state page (`name=`, `boot_id=`, `hits=` ...), fetched from inside
/// the guest network namespace, waiting for it up to [`GUEST_ANSWER`].
pub fn guest_state(netns: &TestNetns, ip: &str) -> Option<String> {
    guest_state_within(netns, ip, GUEST_ANSWER)
}

/// The same, waiting up to `limit` (scaled).
pub fn guest_state_within(netns: &TestNetns, ip: &str, limit: Duration) -> Option<String> {
    http_wait(Some(netns), &format!("http://{ip}/cgi-bin/state"), limit)
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
        guest_state_within(netns, &ip, GUEST_BOOT).is_some(),
        "guest HTTP never answered at {ip}"
    );
    ip
}

/// One line-protocol exchange with the guest's kv service: its first answer line.
pub fn kv(netns: &TestNetns, ip: &str, line: &str) -> String {
    kv_lines(netns, ip, &[line])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Sends `lines` (then QUIT) to the guest's kv service; everything it answered.
/// The service closes the connection at QUIT, so this waits for the answers,
/// however slow, up to [`GUEST_ANSWER`] (scaled).
pub fn kv_lines(netns: &TestNetns, ip: &str, lines: &[&str]) -> String {
    let script =
        format!("exec 3<>/dev/tcp/{ip}/7000 && printf '%s\\nQUIT\\n' \"$LINES\" >&3 && cat <&3");
    let limit = format!("{:.0}", scaled(GUEST_ANSWER).as_secs_f64());
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &netns.name,
            "timeout",
            &limit,
            "bash",
            "-c",
            &script,
        ])
        .env("LINES", lines.join("\n"))
        .output()
        .expect("ip netns exec");
    String::from_utf8_lossy(&out.stdout).into_owned()
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
