//! A lab of real-looking libvirt hosts on this machine (issue 16). Each host is
//! a network namespace plus a mount namespace with its own /etc/libvirt (a copy
//! of the package's stock files), /var/lib/libvirt, /var/cache/libvirt,
//! /var/log/libvirt and a fresh /run, where virtlogd and libvirtd are started by
//! the distribution's init scripts and the `default` network is started with
//! virsh, as an operator does. The hosts share a LAN (a bridge in a namespace of
//! its own, 10.98.0.0/24). peervisor neither starts nor manages these daemons:
//! nodes run inside a host with LIBVIRT_DEFAULT_URI=qemu:///system.
//!
//! Needs libvirt-daemon-system (with its sysv init scripts), dnsmasq-base and
//! iptables (scripts/setup.sh installs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{NodeOptions, TestNode, eventually, stderr};

/// The LAN between lab hosts.
const LAN_PREFIX: &str = "10.98.0";

/// Runs inside the host's network namespace and a new mount namespace: its
/// libvirt directories, daemons started the distribution's way, then holds the
/// namespaces open.
const HOST_SCRIPT: &str = r#"#!/bin/sh
set -e
R=$1
for d in etc lib cache log; do mkdir -p "$R/$d"; done
cp -a /etc/libvirt/. "$R/etc/"
cp -a /var/lib/libvirt/. "$R/lib/"
cp -a /var/cache/libvirt/. "$R/cache/"
# A host UUID of its own, as every real host has (libvirt refuses to migrate a
# VM to a daemon reporting its own UUID: "the same host").
echo "host_uuid = \"$(cat /proc/sys/kernel/random/uuid)\"" >>"$R/etc/libvirtd.conf"
mount --bind "$R/etc" /etc/libvirt
mount --bind "$R/lib" /var/lib/libvirt
mount --bind "$R/cache" /var/cache/libvirt
mount --bind "$R/log" /var/log/libvirt
# A fresh /run, as after boot: pid files and sockets of this host only.
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/lock
/etc/init.d/virtlogd start
/etc/init.d/libvirtd start
echo $$ >"$R/holder.pid"
exec sleep infinity
"#;

pub struct Lab {
    lan: String,
    pub hosts: Vec<LabHost>,
}

pub struct LabHost {
    pub name: String,
    pub netns: String,
    /// This host's address on the lab LAN.
    pub ip: String,
    root: PathBuf,
    holder: Option<Child>,
    holder_pid: u32,
}

/// The shared guest image dir, its image built with the bootable disk
/// (`image build --disk`).
pub fn guest_image_with_disk() -> PathBuf {
    let shared = super::image_dir();
    let built = Command::new(super::BIN)
        .args(["image", "build", "--disk", "--image-dir"])
        .arg(&shared)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "image build --disk: {}",
        stderr(&built)
    );
    shared
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
}

fn must(args: &[&str]) {
    let out = run(args);
    assert!(out.status.success(), "{}: {}", args.join(" "), stderr(&out));
}

impl Lab {
    /// `n` hosts named `<tag>-1..n` on one LAN, each with its libvirtd running
    /// and its `default` network started.
    pub fn new(tag: &str, n: usize) -> Lab {
        assert!(
            Path::new("/etc/init.d/libvirtd").exists(),
            "the lab needs libvirt-daemon-system's init scripts (scripts/setup.sh installs them)"
        );
        let pid = std::process::id();
        let lan = format!("pvl-{tag}-lan-{pid}");
        must(&["ip", "netns", "add", &lan]);
        let mut lab = Lab {
            lan: lan.clone(),
            hosts: Vec::new(),
        };
        must(&["ip", "-n", &lan, "link", "add", "lan0", "type", "bridge"]);
        must(&["ip", "-n", &lan, "link", "set", "lan0", "up"]);
        for i in 1..=n {
            let host = LabHost::start(&lab.lan, &format!("{tag}-{i}"), i);
            lab.hosts.push(host);
        }
        lab
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            host.stop();
        }
        let _ = run(&["ip", "netns", "delete", &self.lan]);
    }
}

impl LabHost {
    fn start(lan: &str, name: &str, index: usize) -> LabHost {
        let netns = format!("pvl-{name}-{}", std::process::id());
        let ip = format!("{LAN_PREFIX}.{}", 10 + index);
        must(&["ip", "netns", "add", &netns]);
        must(&["ip", "-n", &netns, "link", "set", "lo", "up"]);
        let port = format!("p{index}");
        must(&[
            "ip", "-n", lan, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &netns,
        ]);
        must(&[
            "ip", "-n", lan, "link", "set", &port, "master", "lan0", "up",
        ]);
        must(&[
            "ip",
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        must(&["ip", "-n", &netns, "link", "set", "eth0", "up"]);

        let root = std::env::temp_dir().join(&netns);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let script = root.join("host.sh");
        std::fs::write(&script, HOST_SCRIPT).unwrap();
        let log = std::fs::File::create(root.join("host.log")).unwrap();
        let holder = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "unshare",
                "--mount",
                "--propagation",
                "private",
            ])
            .arg("sh")
            .arg(&script)
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start a lab host");
        let mut host = LabHost {
            name: name.to_string(),
            netns,
            ip,
            root,
            holder: Some(holder),
            holder_pid: 0,
        };
        let pid_file = host.root.join("holder.pid");
        let up = eventually(Duration::from_secs(120), || {
            pid_file.exists() || host.holder.as_mut().unwrap().try_wait().unwrap().is_some()
        });
        let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
        assert!(
            up && !pid.trim().is_empty(),
            "lab host {name} did not come up:\n{}",
            host.log()
        );
        host.holder_pid = pid.trim().parse().unwrap();
        // What an operator does once on a fresh Debian host: the stock
        // `default` network is defined but not started.
        let started = host.virsh(&["net-start", "default"]);
        assert!(
            started.status.success(),
            "net-start default on {name}: {}",
            stderr(&started)
        );
        host
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("host.log")).unwrap_or_default()
    }

    /// A directory of this host's own (removed with it), e.g. for disk images.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs a command on this host (its network and mount namespaces).
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(self.enter())
            .args(args)
            .output()
            .expect("nsenter")
    }

    /// GET `path` from a local port of this host (a consumer's listener is on
    /// its loopback); None until it answers.
    pub fn http_get(&self, port: u16, path: &str) -> Option<String> {
        let url = format!("http://127.0.0.1:{port}{path}");
        let out = self.exec(&["curl", "-sf", "--max-time", "5", &url]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// GET `path` through the consumer listening on `port` of this host, waiting
    /// (under `bound`, scaled) until it answers; `node`'s log in the panic.
    pub fn page(&self, port: u16, path: &str, bound: Duration, node: &TestNode) -> String {
        let mut page = None;
        let answered = eventually(bound, || {
            page = self.http_get(port, path);
            page.is_some()
        });
        assert!(
            answered,
            "{path} never answered through {}'s consumer on port {port}:\n{}",
            self.name,
            node.log()
        );
        page.unwrap_or_default()
    }

    /// What a user on this host does to reach a published service: wait until
    /// `node` (this host's) knows a provider of `service`, consume it, read
    /// `path` through the local port. Returns the port and the page.
    pub fn consume_page(
        &self,
        node: &TestNode,
        service: &str,
        path: &str,
        bound: Duration,
    ) -> (u16, String) {
        assert!(
            eventually(Duration::from_secs(60), || !node
                .providers(service)
                .is_empty()),
            "{} never saw a provider of {service}:\n{}",
            self.name,
            node.log()
        );
        let port = node.consume(service, &[]);
        let page = self.page(port, path, bound, node);
        (port, page)
    }

    /// Restarts this host's `default` network with DHCP leases of `minutes`
    /// (dnsmasq's minimum is 2), so guests renew every `minutes`/2 as an
    /// operator's short-lease network makes them. Before any guest starts.
    pub fn dhcp_lease_minutes(&self, minutes: u32) {
        let xml = self.virsh(&["net-dumpxml", "--inactive", "default"]);
        assert!(xml.status.success(), "net-dumpxml: {}", stderr(&xml));
        let xml = String::from_utf8_lossy(&xml.stdout).into_owned();
        let range = xml
            .lines()
            .find(|l| l.trim_start().starts_with("<range "))
            .unwrap_or_else(|| panic!("no DHCP range on {}: {xml}", self.name));
        let leased = range.replace(
            "/>",
            &format!("><lease expiry='{minutes}' unit='minutes'/></range>"),
        );
        let file = self.root.join("default-net.xml");
        std::fs::write(&file, xml.replace(range, &leased)).unwrap();
        for args in [
            vec!["net-destroy", "default"],
            vec!["net-define", file.to_str().unwrap()],
            vec!["net-start", "default"],
        ] {
            let out = self.virsh(&args);
            assert!(out.status.success(), "virsh {args:?}: {}", stderr(&out));
        }
    }

    /// The addresses this host's `default` network leased to `mac`.
    pub fn leased_ips(&self, mac: &str) -> Vec<String> {
        let out = self.virsh(&["net-dhcp-leases", "default", "--mac", mac]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|w| w.split_once('/').filter(|(ip, _)| ip.contains('.')))
            .map(|(ip, _)| ip.to_string())
            .collect()
    }

    /// The MAC address of `vm`'s first NIC (`virsh domiflist`).
    pub fn mac_of(&self, vm: &str) -> String {
        let out = self.virsh(&["domiflist", vm]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .find(|w| w.len() == 17 && w.matches(':').count() == 5)
            .unwrap_or_else(|| panic!("no NIC listed for {vm}: {}", stderr(&out)))
            .to_string()
    }

    /// An image dir of this host's own (imports land there) holding the shared
    /// guest image, built with its bootable disk (`image build --disk`).
    pub fn image_dir_with_disk(&self) -> PathBuf {
        let shared = guest_image_with_disk();
        let images = self.root.join("images");
        std::fs::create_dir_all(&images).unwrap();
        std::os::unix::fs::symlink(
            shared.join("peervisor-guest"),
            images.join("peervisor-guest"),
        )
        .unwrap();
        images
    }

    /// host-a on this host (with `extra` flags) and host-b on `two`, joined
    /// over the lab LAN.
    pub fn pair(&self, two: &LabHost, extra: &[&str]) -> (TestNode, TestNode) {
        let key = super::fresh_key();
        let a = self.node("host-a", &key, &[], extra);
        let b = two.node("host-b", &key, &[(self, &a)], &[]);
        assert!(
            eventually(Duration::from_secs(60), || a.connected_peers()
                == ["host-b"]),
            "overlay did not form:\n{}",
            a.log()
        );
        (a, b)
    }

    /// `virsh -c qemu:///system ARGS` on this host.
    pub fn virsh(&self, args: &[&str]) -> Output {
        let mut all = vec!["virsh", "-c", "qemu:///system"];
        all.extend_from_slice(args);
        self.exec(&all)
    }

    fn enter(&self) -> Vec<String> {
        vec![
            "-t".into(),
            self.holder_pid.to_string(),
            "-n".into(),
            "-m".into(),
            "--".into(),
        ]
    }

    /// A `peervisor node` on this host, using the host's libvirt as an operator
    /// would: LIBVIRT_DEFAULT_URI=qemu:///system, no --hypervisor. Listens on
    /// the LAN; `bootstrap` are other lab nodes.
    pub fn node(
        &self,
        nick: &str,
        key: &str,
        bootstrap: &[(&LabHost, &TestNode)],
        extra: &[&str],
    ) -> TestNode {
        let mut wrapper = vec!["nsenter".to_string()];
        wrapper.extend(self.enter());
        wrapper.extend(["env", "LIBVIRT_DEFAULT_URI=qemu:///system"].map(String::from));
        let bootstrap: Vec<String> = bootstrap
            .iter()
            .map(|(host, node)| format!("/ip4/{}/tcp/{}", host.ip, node.port))
            .collect();
        TestNode::start_wrapped(
            NodeOptions {
                nick,
                key,
                bootstrap: None,
                hypervisor: None,
                guest_netns: "unused",
                extra,
            },
            wrapper,
            &[self.ip.as_str()],
            &bootstrap,
            |_| {},
        )
    }

    /// Guests destroyed, networks stopped (their dnsmasq with them), daemons
    /// stopped by their init scripts, the namespaces removed.
    fn stop(&mut self) {
        if self.holder_pid != 0 {
            let names = self.virsh(&["list", "--name"]);
            for vm in String::from_utf8_lossy(&names.stdout).lines() {
                if !vm.trim().is_empty() {
                    let _ = self.virsh(&["destroy", vm.trim()]);
                }
            }
            let nets = self.virsh(&["net-list", "--name"]);
            for net in String::from_utf8_lossy(&nets.stdout).lines() {
                if !net.trim().is_empty() {
                    let _ = self.virsh(&["net-destroy", net.trim()]);
                }
            }
            let _ = self.exec(&["/etc/init.d/libvirtd", "stop"]);
            let _ = self.exec(&["/etc/init.d/virtlogd", "stop"]);
        }
        if let Some(mut holder) = self.holder.take() {
            let _ = holder.kill();
            let _ = holder.wait();
        }
        // Anything of ours still in the namespace (a straggling dnsmasq).
        let pids = run(&["ip", "netns", "pids", &self.netns]);
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) on a process in this test's own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = run(&["ip", "netns", "delete", &self.netns]);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
