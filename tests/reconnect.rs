//! The node and its libvirt: a private libvirtd killed or hung under a running
//! node (the node says so, requests get a clear error, it restarts the daemon and
//! reconnects), a guest that runs on through that, and a node restarted after a
//! crash that finds its guest and its exposed services again.
//! Tests named vm_* boot real guests (nextest runs them one at a time).

mod common;

use std::time::{Duration, Instant};

use common::guests::{GUEST_ANSWER, GUEST_BOOT};
use common::{
    NodeOptions, TestNetns, TestNode, eventually, fresh_key, http_wait, stderr, stdout, virsh,
};
use serde_json::Value;

/// A node on its own private libvirtd in the test's guest namespace.
fn node_in(netns: &TestNetns, nick: &str, key: &str, extra: &[&str]) -> TestNode {
    TestNode::start(NodeOptions {
        nick,
        key,
        bootstrap: None,
        hypervisor: None,
        guest_netns: &netns.name,
        extra,
    })
}

fn libvirtd_pid(node: &TestNode) -> i32 {
    let path = node.data_dir().join("libvirt/libvirtd.pid");
    let text = std::fs::read_to_string(&path).unwrap();
    text.trim().parse().unwrap()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    (unsafe { libc::kill(pid, 0) }) == 0
}

/// Seconds from the node's "accelerator" log line to its "hypervisor" line: the
/// netns check, the private libvirtd's start and the first connection.
fn first_start_s(log: &str) -> f64 {
    let at = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .and_then(|l| l.split_whitespace().next())
            .and_then(chrono_secs)
            .unwrap_or(f64::NAN)
    };
    at("peervisor::peer: hypervisor ") - at("peervisor::peer: accelerator ")
}

/// Seconds of the day of an RFC 3339 UTC timestamp (2026-11-25T22:40:23.494061Z).
fn chrono_secs(stamp: &str) -> Option<f64> {
    let time = stamp.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// QEMU capability probes (`-machine none`) running in the mount namespace of a
/// libvirtd of this node (found by the bind mount of its `libvirt/lib`).
fn qemu_probes_of(node: &TestNode) -> Vec<i32> {
    let lib = node.data_dir().join("libvirt/lib");
    let lib = lib.to_str().unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("-machine\0none") {
            continue;
        }
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
        if mounts.contains(lib) {
            found.push(pid);
        }
    }
    found
}

/// `status.local.libvirt`; every status call must answer, whatever libvirt does.
fn link(node: &TestNode) -> Value {
    node.status()["local"]["libvirt"].clone()
}

fn reconnects(node: &TestNode) -> u64 {
    link(node)["reconnects"].as_u64().unwrap_or(0)
}

/// Sends SIGCONT on drop, so a failing test does not leave a stopped daemon.
struct Continue(i32);

impl Drop for Continue {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the daemon our node started.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn killed_libvirtd_is_restarted_and_the_node_reconnects() {
    let netns = TestNetns::new("rc-kill");
    let node = node_in(&netns, "rc-kill", &fresh_key(), &[]);
    assert!(link(&node)["lost"].is_null(), "{}", link(&node));
    let old = libvirtd_pid(&node);

    // SAFETY: kill(2) on the daemon our node started.
    unsafe { libc::kill(old, libc::SIGKILL) };
    let started = Instant::now();
    // status answers all along (the loss and the reconnection are in it).
    assert!(
        eventually(Duration::from_secs(60), || reconnects(&node) == 1),
        "never reconnected:\n{}",
        node.log()
    );
    eprintln!(
        "reconnected {:.1} s after kill -9 (node's figure: {} s); baseline, the node's \
         first libvirtd start and connect: {:.2} s",
        started.elapsed().as_secs_f64(),
        link(&node)["last_outage_s"],
        first_start_s(&node.log())
    );
    let log = node.log();
    for line in [
        "libvirt connection lost: the daemon closed the connection; reconnecting",
        "private libvirtd ended (signal: 9",
        "reconnected to libvirt after",
    ] {
        assert!(log.contains(line), "no '{line}' in the log:\n{log}");
    }
    assert_eq!(
        log.matches("libvirt connection lost").count(),
        1,
        "one warning per loss:\n{log}"
    );
    let new = libvirtd_pid(&node);
    assert!(new != old && alive(new), "libvirtd {old} -> {new}");
    // A QEMU probe the killed daemon was running (it probes right after start)
    // is stopped, not left waiting forever; the new daemon's own probe ends.
    assert!(
        eventually(Duration::from_secs(30), || qemu_probes_of(&node).is_empty()),
        "QEMU probes left: {:?}",
        qemu_probes_of(&node)
    );
    eprintln!(
        "a probe of the killed daemon was stopped: {}",
        node.log()
            .contains("stopping a QEMU probe left by a killed libvirtd")
    );
    let out = node.cli(&["vm", "list"]);
    assert!(out.status.success(), "vm list: {}", stderr(&out));
    let text = stdout(&node.cli(&["status"]));
    assert!(text.contains("connected (reconnected 1×"), "{text}");
}

/// How long the node waits for one libvirt call ("libvirtd did not answer
/// within 10 s").
const LIBVIRT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn hung_libvirtd_gives_clear_errors_until_it_answers_again() {
    let netns = TestNetns::new("rc-hung");
    let node = node_in(&netns, "rc-hung", &fresh_key(), &[]);
    let pid = libvirtd_pid(&node);

    // SAFETY: kill(2) on the daemon our node started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let resume = Continue(pid);
    // The first query waits its time out; the ones after it fail at once.
    let out = node.cli(&["vm", "list"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("libvirtd did not answer within 10 s"),
        "{}",
        stderr(&out)
    );
    let t = Instant::now();
    let out = node.cli(&["vm", "list"]);
    assert!(
        stderr(&out).contains("libvirtd has not answered for"),
        "{}",
        stderr(&out)
    );
    // "At once" means without waiting the call's 10 s timeout out again; a CLI
    // round trip on a loaded machine may take seconds, so the bound is that
    // timeout, not a guess at the round trip (not scaled: it is the property).
    assert!(
        t.elapsed() < LIBVIRT_CALL_TIMEOUT,
        "took {:?}: the query waited for the hung daemon again",
        t.elapsed()
    );
    let t = Instant::now();
    assert!(link(&node)["not_answering_s"].as_f64().is_some());
    let text = stdout(&node.cli(&["status"]));
    assert!(text.contains("libvirtd not answering for"), "{text}");
    assert!(
        t.elapsed() < LIBVIRT_CALL_TIMEOUT,
        "took {:?}: status waited for the hung daemon",
        t.elapsed()
    );

    drop(resume);
    assert!(
        eventually(Duration::from_secs(30), || link(&node)["not_answering_s"]
            .is_null()),
        "still not answering:\n{}",
        node.log()
    );
    assert!(node.cli(&["vm", "list"]).status.success());
    assert_eq!(reconnects(&node), 0, "the connection was kept");
    let log = node.log();
    for line in ["libvirtd is not answering", "libvirtd answers again after"] {
        assert!(log.contains(line), "no '{line}' in the log:\n{log}");
    }
}

/// The guest's front page, waiting for it (common::http_wait).
fn front_page(netns: &TestNetns, ip: &str) -> Option<String> {
    http_wait(Some(netns), &format!("http://{ip}/"), GUEST_ANSWER)
}

/// The QEMU process running guest `name`.
fn qemu_pid(name: &str) -> Option<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("guest={name},")])
        .output()
        .unwrap();
    stdout(&out)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
}

fn samples(node: &TestNode, name: &str) -> usize {
    let out = node.cli(&["vm", "stats", name, "--json"]);
    let vm: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    vm["history"]["cpu_pct_guest"]
        .as_array()
        .map_or(0, Vec::len)
}

/// A node with one running guest whose HTTP answers; returns the guest's IP.
fn boot_guest(node: &TestNode, netns: &TestNetns, name: &str) -> String {
    let out = node.cli(&["vm", "create", name]);
    assert!(out.status.success(), "create: {}", stderr(&out));
    let ip = node.vm(name).unwrap()["ip"].as_str().unwrap().to_string();
    assert!(
        http_wait(Some(netns), &format!("http://{ip}/"), GUEST_BOOT).is_some(),
        "guest HTTP never answered:\n{}",
        node.log()
    );
    ip
}

fn guest_node(netns: &TestNetns, nick: &str, key: &str) -> TestNode {
    let image_dir = common::image_dir();
    node_in(
        netns,
        nick,
        key,
        &[
            "--image-dir",
            image_dir.to_str().unwrap(),
            "--stats-history",
            "1000",
        ],
    )
}

#[test]
fn vm_guest_runs_on_while_its_libvirtd_is_killed_and_restarted() {
    let netns = TestNetns::new("rc-vm");
    let node = guest_node(&netns, "rc-vm", &fresh_key());
    let name = format!("rc-{}", std::process::id());
    let ip = boot_guest(&node, &netns, &name);
    let qemu = qemu_pid(&name).expect("QEMU runs");

    let old = libvirtd_pid(&node);
    // SAFETY: kill(2) on the daemon our node started.
    unsafe { libc::kill(old, libc::SIGKILL) };
    let killed = Instant::now();
    assert!(
        eventually(Duration::from_secs(60), || reconnects(&node) == 1),
        "never reconnected:\n{}",
        node.log()
    );
    eprintln!(
        "guest {name}: reconnected {:.1} s after kill -9 of libvirtd (node's figure: {} s); \
         baseline, the node's first libvirtd start and connect: {:.2} s",
        killed.elapsed().as_secs_f64(),
        link(&node)["last_outage_s"],
        first_start_s(&node.log())
    );
    // The same guest (same QEMU, never rebooted), seen by the new daemon.
    assert_eq!(qemu_pid(&name), Some(qemu));
    assert!(virsh(&node.hypervisor_uri(), &["list", "--name"]).contains(&name));
    let out = node.cli(&["vm", "list", "--json"]);
    assert!(out.status.success(), "vm list: {}", stderr(&out));
    let vms: Value = serde_json::from_slice(&out.stdout).unwrap();
    let vm = vms
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} not listed: {vms}"));
    assert_eq!(vm["state"], "running", "{vm}");
    // Its stats tick again.
    let after = samples(&node, &name);
    assert!(
        eventually(Duration::from_secs(30), || samples(&node, &name)
            >= after + 3),
        "stats stopped at {after} samples:\n{}",
        node.log()
    );
    assert!(front_page(&netns, &ip).is_some());
    // Lifecycle works on the new connection.
    let out = node.cli(&["vm", "pause", &name]);
    assert!(out.status.success(), "pause: {}", stderr(&out));
    assert_eq!(node.vm(&name).unwrap()["state"], "paused");
    assert!(node.cli(&["vm", "resume", &name]).status.success());
}

/// The node's services as another peer sees them: (service, provider VM) pairs.
fn seen_from(other: &TestNode, provider: &str) -> Vec<(String, Option<String>)> {
    let out = other.cli(&["services", "--json"]);
    let services: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut seen = Vec::new();
    for s in services.as_array().into_iter().flatten() {
        for p in s["providers"].as_array().into_iter().flatten() {
            if p["peer_nick"] == provider {
                let vm = p["vm"].as_str().map(str::to_string);
                seen.push((s["name"].as_str().unwrap_or("").to_string(), vm));
            }
        }
    }
    seen
}

#[test]
fn vm_restarted_node_finds_its_guest_and_publishes_again() {
    let netns = TestNetns::new("rc-restart");
    let key = fresh_key();
    let mut node = guest_node(&netns, "rc-restart", &key);
    let name = format!("rr-{}", std::process::id());
    let ip = boot_guest(&node, &netns, &name);
    let qemu = qemu_pid(&name).expect("QEMU runs");
    let out = node.cli(&["expose", "legacy", "--target", "127.0.0.1:9"]);
    assert!(out.status.success(), "expose: {}", stderr(&out));

    // A crash: the node dies, its libvirtd and the guest run on.
    node.kill_hard();
    assert!(front_page(&netns, &ip).is_some());
    node.restart();
    assert!(
        node.log()
            .contains("stopping libvirtd left by an earlier run"),
        "{}",
        node.log()
    );

    // The restarted node hosts the same guest...
    let vm = node.vm(&name).expect("guest found again");
    assert_eq!(vm["state"], "running", "{vm}");
    assert_eq!(qemu_pid(&name), Some(qemu), "the guest was not restarted");
    assert!(
        eventually(Duration::from_secs(30), || samples(&node, &name) >= 3),
        "no stats after the restart"
    );
    // ...and publishes its service and the exposed one again: a peer that joins
    // only now finds both.
    let other = common::node("rc-other", &key, Some(node.port));
    let wanted = [
        (name.clone(), Some(name.clone())),
        ("legacy".to_string(), None),
    ];
    assert!(
        eventually(Duration::from_secs(30), || {
            let seen = seen_from(&other, "rc-restart");
            wanted.iter().all(|w| seen.contains(w))
        }),
        "services seen from another peer: {:?}\n{}",
        seen_from(&other, "rc-restart"),
        node.log()
    );
}
