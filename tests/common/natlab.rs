//! Two homes behind NAT routers and a public segment, all in network namespaces
//! the test creates (nothing is added to the test's own namespace):
//!
//! ```text
//!  home-a 192.168.1.2 ─ router-a (NAT) ─ 198.51.100.2 ┐
//!                                                     public: 198.51.100.1, 203.0.113.1 (relay)
//!  home-c 192.168.2.2 ─ router-c (NAT) ─ 203.0.113.2 ─┘
//! ```
//!
//! A router masquerades its home behind its public address (nft `masquerade`:
//! Linux keeps the source port when it is free, so one inside port maps to one
//! outside port whatever the destination: hole punching can work) and drops every
//! packet from outside that does not belong to a connection started inside, like a
//! home router. `Nat::Symmetric` uses `masquerade fully-random` instead: a fresh
//! port per destination, so the port a peer learns from the relay is useless to
//! anyone else. Namespaces (with their nft tables and links) are deleted on drop.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{TestNetns, stderr};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Nat {
    /// Port-preserving masquerade (endpoint-independent mapping in practice).
    PortPreserving,
    /// `masquerade fully-random`: endpoint-dependent mapping.
    Symmetric,
}

/// Bytes counted on the public segment's two paths (see `NatLab::path_bytes`).
#[derive(Clone, Copy, Debug)]
pub struct PathBytes {
    /// Forwarded from one router to the other: a direct (punched) connection.
    pub direct: u64,
    /// Sent to the public segment's own addresses: the relay's circuits.
    pub relay: u64,
}

impl PathBytes {
    pub fn since(self, before: PathBytes) -> PathBytes {
        PathBytes {
            direct: self.direct - before.direct,
            relay: self.relay - before.relay,
        }
    }
}

pub struct NatLab {
    pub public: TestNetns,
    pub routers: [TestNetns; 2],
    pub homes: [TestNetns; 2],
}

impl NatLab {
    pub fn new(nat: [Nat; 2]) -> NatLab {
        let lab = NatLab {
            public: TestNetns::new("pub"),
            routers: [TestNetns::new("rta"), TestNetns::new("rtc")],
            homes: [TestNetns::new("homea"), TestNetns::new("homec")],
        };
        for ns in [&lab.public, &lab.routers[0], &lab.routers[1]]
            .into_iter()
            .chain(&lab.homes)
        {
            ip(&["netns", "add", &ns.name]);
            ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        }
        sysctl(&lab.public, "net.ipv4.ip_forward=1");
        lab.count_paths();
        for (i, nat) in nat.into_iter().enumerate() {
            let (router, home) = (&lab.routers[i], &lab.homes[i]);
            // public <-> router's wan
            veth(&lab.public, &format!("wan{i}"), router, "wan");
            addr(
                &lab.public,
                &format!("wan{i}"),
                &format!("{}/24", lab.public_ip(i)),
            );
            addr(router, "wan", &format!("{}/24", lab.router_wan(i)));
            route_default(router, &lab.public_ip(i));
            // router's lan <-> home
            veth(router, "lan", home, "eth0");
            addr(router, "lan", &format!("{}/24", lab.router_lan(i)));
            addr(home, "eth0", &format!("{}/24", lab.home_ip(i)));
            route_default(home, &lab.router_lan(i));
            sysctl(router, "net.ipv4.ip_forward=1");
            lab.set_nat(i, nat);
        }
        lab
    }

    /// (Re)writes router `i`'s NAT and firewall tables. Connections already
    /// mapped keep their mapping (conntrack); new ones get the new NAT.
    pub fn set_nat(&self, i: usize, nat: Nat) {
        let flags = match nat {
            Nat::PortPreserving => "",
            Nat::Symmetric => " fully-random",
        };
        let rules = format!(
            "table ip pvnat\n\
             delete table ip pvnat\n\
             table inet pvfw\n\
             delete table inet pvfw\n\
             table ip pvnat {{\n\
               chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
                 oifname \"wan\" masquerade{flags}; }}\n\
             }}\n\
             table inet pvfw {{\n\
               chain input {{ type filter hook input priority filter; policy drop;\n\
                 ct state established,related accept;\n\
                 iifname {{ \"lo\", \"lan\" }} accept; }}\n\
               chain forward {{ type filter hook forward priority filter; policy drop;\n\
                 ct state established,related accept;\n\
                 iifname \"lan\" oifname \"wan\" accept; }}\n\
             }}\n"
        );
        nft(&self.routers[i], &rules);
    }

    /// Drops (`true`) or lets through (`false`) every packet between the two
    /// routers on the public segment: a punch attempt meanwhile waits on its SYN
    /// retransmissions, and succeeds at the next one after the path opens. The
    /// relayed path (through the relay's own addresses) is not touched.
    pub fn hold_punches(&self, hold: bool) {
        let rules = if hold {
            "table inet pvhold {\n\
               chain forward { type filter hook forward priority filter; policy accept;\n\
                 iifname \"wan0\" oifname \"wan1\" drop;\n\
                 iifname \"wan1\" oifname \"wan0\" drop; }\n\
             }\n"
        } else {
            "delete table inet pvhold\n"
        };
        nft(&self.public, rules);
    }

    /// Counts the bytes the public segment carries on each path: router to
    /// router (a punched, direct connection) and to or from the public
    /// segment's own addresses (where the relay listens).
    fn count_paths(&self) {
        nft(
            &self.public,
            "table inet pvcount {\n\
               counter direct {}\n\
               counter relay {}\n\
               chain forward { type filter hook forward priority -10; policy accept;\n\
                 iifname { \"wan0\", \"wan1\" } oifname { \"wan0\", \"wan1\" } counter name \"direct\"; }\n\
               chain input { type filter hook input priority -10; policy accept;\n\
                 iifname { \"wan0\", \"wan1\" } counter name \"relay\"; }\n\
             }\n",
        );
    }

    /// Bytes the public segment has carried so far on each path, both
    /// directions: what a consumption's traffic took, whatever the load.
    pub fn path_bytes(&self) -> PathBytes {
        let counter = |name: &str| {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.public.name, "nft", "list", "counter"])
                .args(["inet", "pvcount", name])
                .output()
                .expect("nft list counter");
            assert!(out.status.success(), "nft list counter: {}", stderr(&out));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.split_once("bytes ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no byte count in {text}"))
        };
        PathBytes {
            direct: counter("direct"),
            relay: counter("relay"),
        }
    }

    /// The relay's address facing router `i`.
    pub fn public_ip(&self, i: usize) -> String {
        ["198.51.100.1", "203.0.113.1"][i].into()
    }

    /// Router `i`'s public address (what the relay sees home `i` as).
    pub fn router_wan(&self, i: usize) -> String {
        ["198.51.100.2", "203.0.113.2"][i].into()
    }

    fn router_lan(&self, i: usize) -> String {
        format!("192.168.{}.1", i + 1)
    }

    pub fn home_ip(&self, i: usize) -> String {
        format!("192.168.{}.2", i + 1)
    }

    pub fn home(&self, i: usize) -> &str {
        &self.homes[i].name
    }

    /// Whether a TCP connection from home `from` to `addr:port` succeeds.
    pub fn can_connect(&self, from: usize, addr: &str, port: u16) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                self.home(from),
                "timeout",
                "3",
                "bash",
                "-c",
            ])
            .arg(format!("exec 3<>/dev/tcp/{addr}/{port}"))
            .output()
            .expect("ip netns exec")
            .status
            .success()
    }
}

/// Runs `f` on a thread that has entered network namespace `netns`: sockets it
/// opens live there (listeners keep serving from any thread).
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        use std::os::fd::AsRawFd;
        // SAFETY: setns(2) on this thread only, with a namespace fd we hold open.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("thread in netns")
}

/// Loads `rules` into namespace `ns`'s nftables.
fn nft(ns: &TestNetns, rules: &str) {
    let mut nft = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("nft (apt-get install nftables)");
    nft.stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    let out = nft.wait_with_output().unwrap();
    assert!(out.status.success(), "nft: {}", stderr(&out));
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
}

fn veth(a: &TestNetns, a_dev: &str, b: &TestNetns, b_dev: &str) {
    ip(&[
        "link", "add", a_dev, "netns", &a.name, "type", "veth", "peer", "name", b_dev, "netns",
        &b.name,
    ]);
    ip(&["-n", &a.name, "link", "set", a_dev, "up"]);
    ip(&["-n", &b.name, "link", "set", b_dev, "up"]);
}

fn addr(ns: &TestNetns, dev: &str, cidr: &str) {
    ip(&["-n", &ns.name, "addr", "add", cidr, "dev", dev]);
}

fn route_default(ns: &TestNetns, via: &str) {
    ip(&["-n", &ns.name, "route", "add", "default", "via", via]);
}

fn sysctl(ns: &TestNetns, setting: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "sysctl", "-qw", setting])
        .output()
        .expect("sysctl");
    assert!(out.status.success(), "sysctl {setting}: {}", stderr(&out));
}
