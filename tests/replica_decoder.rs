//! The replication decoder against real node processes: a member of the overlay
//! sends hand-made offers on `/peervisor/replicate/1` (`peervisor dev
//! replica-offer`, a hidden tool that joins as a member with an identity of its
//! own and prints the answer). Without the control role it is refused before its
//! offer is read; with it, an overflowing plan and frames at and past the offer's
//! limit are refused with the reason. The host keeps serving, and its peak
//! memory shows no large allocation: it runs with glibc's MALLOC_PERTURB_, which
//! fills every allocation, so what is allocated is resident and counted in
//! VmHWM even if never used. (Nodes on libvirt's test driver: no VMs.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{BIN, NodeOptions, TestNode, echo_server, eventually, fresh_key, node, stderr};
use serde_json::{Value, json};

/// What the host's peak memory may grow by across all hostile offers. Each
/// frame claims 64 MiB or more: one allocated as promised would take 4 times this.
const HWM_BUDGET_KIB: u64 = 16 << 10;

/// A member sending hand-made frames; its data dir holds its identity.
struct Member<'a> {
    dir: tempfile::TempDir,
    id: String,
    key: &'a str,
    host: &'a TestNode,
    host_id: String,
}

impl<'a> Member<'a> {
    /// A member with an identity of its own (the data dir's `identity.key`, in
    /// libp2p's encoding, made here so its peer id is known before it joins).
    fn new(key: &'a str, host: &'a TestNode) -> Member<'a> {
        let dir = tempfile::tempdir().unwrap();
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        std::fs::write(
            dir.path().join("identity.key"),
            keypair.to_protobuf_encoding().unwrap(),
        )
        .unwrap();
        Member {
            dir,
            id: keypair.public().to_peer_id().to_string(),
            key,
            host,
            host_id: host.peer_id(),
        }
    }

    /// `peervisor dev replica-offer` sending `body` under a prefix of `declare`
    /// bytes (default: its length).
    fn command(&self, body: &[u8], declare: Option<u64>) -> Command {
        let file = self
            .dir
            .path()
            .join(format!("body-{}", rand::random::<u32>()));
        std::fs::write(&file, body).unwrap();
        let bootstrap = format!("/ip4/127.0.0.1/tcp/{}", self.host.port);
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir")
            .arg(self.dir.path())
            .env("PEERVISOR_NETWORK_KEY", self.key)
            .args(["dev", "replica-offer", "--bootstrap", &bootstrap])
            .args(["--to", &self.host_id, "--body"])
            .arg(&file);
        if let Some(n) = declare {
            cmd.args(["--declare", &n.to_string()]);
        }
        cmd
    }

    /// The probe's report: `peer_id`, `answer` or `error`.
    fn offer(&self, body: &[u8], declare: Option<u64>) -> Value {
        let out = self.command(body, declare).output().unwrap();
        assert!(out.status.success(), "dev replica-offer: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("the probe prints JSON")
    }

    /// A probe that sends the start of an offer promising 64 MiB and stalls:
    /// its stream stays open (the host waits for the rest) until it is dropped.
    fn stall(&self) -> Stalled {
        let mut cmd = self.command(b"{\"name\":\"x", Some(64 << 20));
        cmd.arg("--stall")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Stalled(cmd.spawn().unwrap())
    }

    /// The reason of the refusal the probe heard (panics on anything else).
    fn refusal(&self, body: &[u8], declare: Option<u64>) -> String {
        let report = self.offer(body, declare);
        report["answer"]["Refuse"]["reason"]
            .as_str()
            .unwrap_or_else(|| panic!("not a refusal: {report}\n{}", self.host.log()))
            .to_string()
    }

    /// The refusal's reason, or why there was none. Two streams of one peer
    /// arriving at the same instant may see one dropped unanswered (libp2p-stream
    /// queues one inbound stream per protocol: docs/hardening.md, Load).
    fn reason_or_error(&self, body: &[u8]) -> String {
        let report = self.offer(body, None);
        match report["answer"]["Refuse"]["reason"].as_str() {
            Some(reason) => reason.to_string(),
            None => format!("no refusal: {report}"),
        }
    }
}

/// A stalled probe, killed on drop.
struct Stalled(Child);

impl Stalled {
    fn exited(&mut self) -> bool {
        self.0.try_wait().ok().flatten().is_some()
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An offer with a valid definition and one chunk ending past 2^64 (the
/// offset and length that wrapped past the old check).
fn overflowing_offer() -> Vec<u8> {
    let offset = u64::MAX - (1 << 20) - 5;
    serde_json::to_vec(&json!({
        "name": "evil-r1", "source_vm": "evil",
        "source_uuid": "0b0e8a6c-5a6f-4a51-9d7e-2f4b4a1c9e11",
        "vcpus": 1, "memory_mib": 128, "image": "default", "services": [],
        "disk": {
            "format": "qcow2", "file_size": 4u64 << 40, "virtual_size": 1u64 << 30,
            "allocated": 0, "file_sha256": null,
            "chunks": [{"offset": offset, "len": u32::MAX, "sha256": "0".repeat(64)}]
        }
    }))
    .unwrap()
}

/// Peak resident memory of a process (VmHWM), KiB.
fn hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

fn round_trip(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = [0u8; 5];
    conn.write_all(b"ping\n").is_ok() && conn.read_exact(&mut got).is_ok() && &got == b"ping\n"
}

fn logged(host: &TestNode, line: &str) -> bool {
    eventually(Duration::from_secs(5), || host.log().contains(line))
}

#[test]
fn hostile_replication_offers_are_refused_before_any_large_allocation() {
    // SAFETY: nextest runs each test in its own process; set before any node
    // starts, so the children inherit it (glibc fills each allocation with
    // this byte: allocated memory becomes resident, VmHWM counts it).
    unsafe { std::env::set_var("MALLOC_PERTURB_", "165") };
    let key = fresh_key();
    let host = node("peer-b", &key, None);
    let consumer = node("peer-a", &key, Some(host.port));
    let echo = echo_server("127.0.0.1");
    let out = host.cli(&["expose", "echo", "--target", &format!("127.0.0.1:{echo}")]);
    assert!(out.status.success(), "expose: {}", stderr(&out));
    let mut port = 0;
    assert!(
        eventually(Duration::from_secs(20), || {
            port = consumer.try_consume("echo", &[]).unwrap_or(0);
            port != 0 && round_trip(port)
        }),
        "the consumer never reached the host's service"
    );
    let pid = host.pid().unwrap();
    let before = hwm_kib(pid);

    // (a), (b) A member without the control role: refused unread, whatever it
    // sends (an overflowing plan; a prefix promising 64 MiB, or 4 GiB, and 9
    // bytes; 4 MiB).
    let member = Member::new(&key, &host);
    let id = &member.id;
    let not_allowed = format!("peer {id} is not allowed to control this host");
    let reason = member.refusal(&overflowing_offer(), None);
    assert!(reason.contains(&not_allowed), "{reason}");
    for declare in [64 << 20, u64::from(u32::MAX)] {
        let reason = member.refusal(b"{\"name\":\"", Some(declare));
        assert!(reason.contains(&not_allowed), "{reason}");
    }
    // 4 MiB that the host never takes (more than the stream's window): the
    // member hears the refusal while its offer still waits to be written.
    let mut big = b"{\"name\":\"".to_vec();
    big.resize(4 << 20, b'a');
    let reason = member.refusal(&big, None);
    assert!(reason.contains(&not_allowed), "{reason}");
    assert!(
        logged(
            &host,
            &format!("refused a replication stream from {id}: {not_allowed}")
        ),
        "the host names the member:\n{}",
        host.log()
    );

    // (c)-(f) A member granted control: its offer is read, up to the offer's
    // limit, and the plan checked.
    let controller = Member::new(&key, &host);
    let id = &controller.id;
    let out = host.cli(&["peers", "allow", id, "--role", "control"]);
    assert!(out.status.success(), "peers allow: {}", stderr(&out));
    let reason = controller.refusal(&overflowing_offer(), None);
    let overflow = "disk plan: chunk 0 (offset 18446744073708503034): ends past 2^64";
    assert!(reason.contains(overflow), "{reason}");
    assert!(
        logged(
            &host,
            &format!("refused replica 'evil-r1' of VM 'evil' from {id}: {overflow}")
        ),
        "{}",
        host.log()
    );
    let reason = controller.refusal(b"{", Some(u64::from(u32::MAX)));
    assert!(reason.contains("the offer is too large"), "{reason}");
    let limit: u64 = reason
        .split("at most ")
        .nth(1)
        .and_then(|rest| rest.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("the refusal states the limit: {reason}"));
    assert!((64 << 20..65 << 20).contains(&limit), "offer limit {limit}");
    let reason = controller.refusal(b"{\"name\":\"", Some(limit + 1));
    assert!(reason.contains("too large"), "{reason}");
    // At the limit: 10 bytes, then the end of the stream.
    let reason = controller.refusal(b"{\"name\":\"x", Some(limit));
    let cut = format!("the offer was cut after 10 of {limit} bytes");
    assert!(reason.contains(&cut), "{reason}");
    assert!(
        logged(&host, &format!("refused an offer from {id}: {cut}")),
        "{}",
        host.log()
    );

    // The host runs on, serves, and allocated nothing like what was promised.
    let after = hwm_kib(pid);
    eprintln!(
        "host VmHWM: {before} KiB before the offers, {after} KiB after (budget +{HWM_BUDGET_KIB} KiB)"
    );
    assert!(
        after <= before + HWM_BUDGET_KIB,
        "peak memory grew from {before} to {after} KiB"
    );
    assert!(round_trip(port), "the host stopped serving");
    assert!(host.status()["local"]["peer_id"].is_string());
}

/// Replication streams count against a peer's open streams and, while their
/// offer is read, against its replications at once (`--max-migrations`): one
/// that stalls holds its slot, the next is refused with the limit named, and
/// the slot comes back when the stalled stream closes.
#[test]
fn replication_streams_count_against_the_peers_limits() {
    let key = fresh_key();
    let cases = [
        (
            ["--peer-max-streams", "1"],
            "too many open streams from you (at most 1)",
        ),
        (
            ["--max-migrations", "1"],
            "too many replication streams from you at once (at most 1, --max-migrations)",
        ),
    ];
    for (flags, over) in cases {
        let host = TestNode::start(NodeOptions {
            nick: "peer-b",
            key: &key,
            bootstrap: None,
            hypervisor: Some("test:///default"),
            guest_netns: "unused",
            extra: &flags,
        });
        let controller = Member::new(&key, &host);
        let id = &controller.id;
        let out = host.cli(&["peers", "allow", id, "--role", "control"]);
        assert!(out.status.success(), "peers allow: {}", stderr(&out));

        let mut stalled = controller.stall();
        let mut reason = String::new();
        assert!(
            eventually(Duration::from_secs(20), || {
                if stalled.exited() {
                    // Refused: a probe of the loop held the slot as it came.
                    stalled = controller.stall();
                    return false;
                }
                reason = controller.reason_or_error(b"{}");
                reason.contains(over)
            }),
            "{flags:?}: the next stream was not refused: {reason}\n{}",
            host.log()
        );
        assert!(
            logged(
                &host,
                &format!("refused a replication stream from {id}: {over}")
            ),
            "{}",
            host.log()
        );
        drop(stalled);
        assert!(
            eventually(Duration::from_secs(20), || {
                reason = controller.reason_or_error(b"{}");
                reason.contains("malformed offer")
            }),
            "{flags:?}: the slot did not come back: {reason}"
        );
    }
}
