//! One console for the whole overlay: peer A sees the live figures of a VM on
//! peer C (as C itself reports them) and moves it from C to B, once C grants
//! A the control role; before that, C's refusal names C and the role. A's
//! `migrate --wait` follows the host's operation to its end (its report, its
//! failure's reason, or its host going away), and A's operations show it
//! running, then done. Real node processes, private libvirt daemons, a real
//! guest (TCG).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::guests::{Rig, boot};
use common::{TestNode, eventually, stderr, stdout, virsh};
use serde_json::Value;

fn domains(node: &TestNode, all: bool) -> Vec<String> {
    let mut args = vec!["list", "--name"];
    if all {
        args.push("--all");
    }
    virsh(&node.hypervisor_uri(), &args)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// A sample of a VM's history: (cpu, disk r, disk w, net rx, net tx).
type Sample = [f64; 5];

fn samples(vm: &Value) -> Vec<Sample> {
    let h = &vm["history"];
    let ring = |k: &str| -> Vec<f64> {
        h[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .collect()
    };
    let series = [
        ring("cpu_pct_guest"),
        ring("disk_read_bps"),
        ring("disk_write_bps"),
        ring("net_rx_bps"),
        ring("net_tx_bps"),
    ];
    (0..series[0].len())
        .map(|i| std::array::from_fn(|k| series[k].get(i).copied().unwrap_or(f64::NAN)))
        .collect()
}

/// web-1 as A's one-shot status shows it (figures asked of its host).
fn remote_vm(a: &TestNode, host_id: &str, name: &str) -> Option<Value> {
    a.status()["remote_vms"]
        .as_array()?
        .iter()
        .find(|r| r["host_id"] == host_id && r["vm"]["name"] == name)
        .map(|r| r["vm"].clone())
}

/// C's own `vm stats NAME --json`.
fn own_stats(c: &TestNode, name: &str) -> Value {
    let out = c.cli(&["vm", "stats", name, "--json"]);
    assert!(out.status.success(), "vm stats: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("vm stats --json")
}

/// A's figures of a VM agree with its host's within one sample: A's latest
/// sample is the host's latest or the one before (the host may have sampled
/// once between the two reads), and A's history is the host's up to there.
fn agree_within_one_sample(theirs: &[Sample], own: &[Sample]) -> bool {
    let Some(last) = theirs.last() else {
        return false;
    };
    let n = own.len();
    let at = (n.saturating_sub(2)..n).rev().find(|&i| own[i] == *last);
    at.is_some_and(|i| {
        let k = theirs.len().min(i + 1);
        theirs[theirs.len() - k..] == own[i + 1 - k..=i]
    })
}

/// Lines of A's pushed updates (what an attached console reads) after a
/// watch of `web-1` on `host_id`, until one carries its figures.
fn figures_pushed_to_a_console(a: &TestNode, host_id: &str, within: Duration) -> Option<Value> {
    watch_web_1(a, host_id);
    let socket = a.data_dir().join("control.sock");
    let mut conn = UnixStream::connect(&socket).expect("control socket");
    writeln!(conn, "{}", serde_json::json!({ "request": "subscribe" })).unwrap();
    conn.set_read_timeout(Some(within)).unwrap();
    let deadline = Instant::now() + within;
    let mut reader = BufReader::new(conn);
    while Instant::now() < deadline {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        let update: Value = serde_json::from_str(&line).ok()?;
        let found = update["ok"]["remote_vms"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["host_id"] == host_id && r["vm"]["name"] == "web-1")
            .filter(|r| !r["vm"]["stats"].is_null());
        if let Some(r) = found {
            return Some(r["vm"].clone());
        }
    }
    None
}

/// What a console on A showing web-1 (on `host_id`) tells its node; it
/// lapses after 15 s unless renewed.
fn watch_web_1(a: &TestNode, host_id: &str) {
    let watch = serde_json::json!({
        "request": "watch",
        "vms": [{ "host_id": host_id, "vm": "web-1" }],
    });
    let mut conn = UnixStream::connect(a.data_dir().join("control.sock")).expect("control socket");
    writeln!(conn, "{watch}").unwrap();
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\""), "watch answered {line}");
}

/// A's view of the operation on web-1 that `host` runs (A's `status`).
fn remote_operation(a: &TestNode, host: &str) -> Option<Value> {
    a.status()["operations"]
        .as_array()?
        .iter()
        .rev()
        .find(|o| o["host"] == host && o["vm"] == "web-1")
        .cloned()
}

/// `peervisor migrate web-1 --to TO --wait ARGS` from A's data dir, run
/// while `meanwhile` watches A's operations (it gets the phases seen of the
/// operation `host` runs, and may act once it transfers). A wait that does
/// not end within `WAIT_ENDS` fails the test.
fn migrate_waiting(
    a: &TestNode,
    to: &str,
    host: &str,
    args: &[&str],
    meanwhile: impl FnOnce(&dyn Fn() -> Vec<String>),
) -> (std::process::Output, Vec<String>) {
    use std::process::{Command, Stdio};
    let mut cli = Command::new(common::BIN)
        .arg("--data-dir")
        .arg(a.data_dir())
        .args(["migrate", "web-1", "--to", to, "--wait"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run peervisor");
    {
        let seen = std::cell::RefCell::new(Vec::<String>::new());
        let phases = || {
            if let Some(op) = remote_operation(a, host) {
                let phase = op["phase"].as_str().unwrap_or("?").to_string();
                let mut seen = seen.borrow_mut();
                if seen.last() != Some(&phase) {
                    seen.push(phase);
                }
            }
            seen.borrow().clone()
        };
        meanwhile(&phases);
        let deadline = Instant::now() + common::scaled(WAIT_ENDS);
        while cli.try_wait().expect("wait for the CLI").is_none() {
            if Instant::now() > deadline {
                let _ = cli.kill();
                let out = cli.wait_with_output().expect("CLI output");
                panic!(
                    "migrate --wait did not end within {WAIT_ENDS:?}: {}\nA's operations: {}",
                    stderr(&out),
                    a.status()["operations"]
                );
            }
            phases();
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = cli.wait_with_output().expect("CLI output");
        (out, seen.into_inner())
    }
}

/// How long a `migrate --wait` may last here: a capped transfer, or a host
/// that went away (silent for 30 s before the wait gives up) on a loaded
/// machine.
const WAIT_ENDS: Duration = Duration::from_secs(180);

/// Waits until A sees the operation on `host` transferring.
fn until_transferring(phases: &dyn Fn() -> Vec<String>, a: &TestNode) {
    assert!(
        eventually(Duration::from_secs(60), || phases()
            .last()
            .is_some_and(|p| p == "transferring")),
        "A never saw the migration transferring: {:?}\n{}",
        phases(),
        a.log()
    );
}

#[test]
fn vm_on_a_third_peer_is_watched_and_moved_from_any_console() {
    let rig = Rig::new("ovc");
    let a = rig.node("peer-a", None, &[]);
    let mut b = rig.node("peer-b", Some(&a), &[]);
    let c = rig.node("peer-c", Some(&a), &[]);
    for (node, others) in [(&a, ["peer-b", "peer-c"]), (&c, ["peer-a", "peer-b"])] {
        assert!(
            eventually(Duration::from_secs(60), || {
                let peers = node.connected_peers();
                others.iter().all(|o| peers.iter().any(|p| p == o))
            }),
            "{} did not meet {others:?}:\n{}",
            node.nick,
            node.log()
        );
    }
    b.allow_control(&c);
    let c_id = c.peer_id();

    boot(&c, &rig.netns, "web-1", &[]);
    assert!(
        eventually(Duration::from_secs(30), || a.peer("peer-c")["vms"]
            .as_array()
            .is_some_and(|v| v.iter().any(|n| n == "web-1"))),
        "A never heard of web-1 on peer-c"
    );

    // A's figures of web-1 are C's own, within one sample.
    let mut last = (Vec::new(), Vec::new());
    let agreed = eventually(Duration::from_secs(60), || {
        let Some(theirs) = remote_vm(&a, &c_id, "web-1") else {
            return false;
        };
        let own = own_stats(&c, "web-1");
        assert_eq!(theirs["state"], "running");
        assert_eq!(theirs["state"], own["state"]);
        last = (samples(&theirs), samples(&own));
        last.0.len() >= 2 && agree_within_one_sample(&last.0, &last.1)
    });
    assert!(
        agreed,
        "A's figures of web-1 never matched C's:\nA: {:?}\nC: {:?}",
        last.0, last.1
    );

    // What they cost, as the operators read it (`status --json`): A sent
    // VmFigures requests and received answers; C received and answered them.
    let tally = |node: &TestNode, message: &str| {
        node.status()["control_traffic"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["kind"] == "VmFigures" && t["message"] == message)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let count = |t: &Value, k: &str| t[k].as_u64().unwrap_or(0);
    let (a_asked, a_got) = (tally(&a, "request"), tally(&a, "answer"));
    let (c_asked, c_gave) = (tally(&c, "request"), tally(&c, "answer"));
    assert!(
        count(&a_asked, "sent") > 0 && count(&a_got, "received_bytes") > 0,
        "A's control_traffic: {a_asked} {a_got}"
    );
    assert!(
        count(&c_asked, "received") > 0 && count(&c_gave, "sent_bytes") > 0,
        "C's control_traffic: {c_asked} {c_gave}"
    );
    assert_eq!(
        count(&a_asked, "received"),
        0,
        "A was asked nothing: {a_asked}"
    );

    // What an attached console gets: the watched VM's figures, pushed.
    let pushed = figures_pushed_to_a_console(&a, &c_id, Duration::from_secs(30))
        .expect("no pushed figures of web-1 on A's updates");
    assert_eq!(pushed["state"], "running");
    assert!(!samples(&pushed).is_empty(), "history pushed: {pushed}");

    // Without the control role on C, C refuses and says who and why.
    let out = a.cli(&["migrate", "web-1", "--to", "peer-b"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "migrate without the role: {err}");
    assert!(
        err.contains("peer-c refuses") && err.contains("control role"),
        "{err}"
    );
    let out = a.cli(&["vm", "pause", "web-1"]);
    assert!(
        stderr(&out).contains("peer-c refuses") && stderr(&out).contains("control role"),
        "{}",
        stderr(&out)
    );
    assert_eq!(domains(&c, false), ["web-1"], "web-1 still runs on C");

    // With it, A moves web-1 from C to B and waits for the end (capped at
    // 4 MiB/s so it lasts seconds): C's report, and A's operations show C's
    // migration running, then done.
    c.allow_control(&a);
    let (out, seen) = migrate_waiting(
        &a,
        "peer-b",
        "peer-c",
        &["--json", "--bandwidth", "4"],
        |_| {},
    );
    assert!(
        out.status.success(),
        "migrate --wait from A: {}\n{}",
        stderr(&out),
        c.log()
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("migrate --json");
    assert_eq!(report["vm"], "web-1", "{}", stdout(&out));
    assert_eq!(report["from"], "peer-c", "the host's own report: {report}");
    assert_eq!(report["to"], "peer-b", "{report}");
    assert!(report["seconds"].as_f64().is_some(), "{report}");
    assert!(
        seen.first()
            .is_some_and(|p| p == "requested" || p == "transferring"),
        "A's operations never showed it running: {seen:?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || remote_operation(&a, "peer-c")
            .is_some_and(|op| op["phase"] == "done" && op["peer"] == "peer-b")),
        "A's operations do not show it done: {:?}",
        remote_operation(&a, "peer-c")
    );
    assert_eq!(domains(&b, false), ["web-1"], "web-1 runs on B");
    assert!(domains(&c, true).is_empty(), "and nowhere on C");
    assert!(domains(&a, true).is_empty(), "nothing on A");
    // A acts on it where it now runs: B grants A nothing, so B refuses.
    let out = a.cli(&["vm", "pause", "web-1"]);
    assert!(
        eventually(Duration::from_secs(30), || {
            let out = a.cli(&["vm", "pause", "web-1"]);
            stderr(&out).contains("peer-b refuses")
        }),
        "{}",
        stderr(&out)
    );

    // A failure on the host: A's wait ends non-zero with the host's reason.
    b.allow_control(&a);
    c.allow_control(&b);
    let (out, _) = migrate_waiting(&a, "peer-c", "peer-b", &["--bandwidth", "1"], |phases| {
        until_transferring(phases, &a);
        let abort = a.cli(&["migrate", "web-1", "--abort"]);
        assert!(abort.status.success(), "abort from A: {}", stderr(&abort));
    });
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "an aborted migration succeeded: {err}"
    );
    assert!(
        err.contains("on peer-b") && err.contains("VM 'web-1' did not move"),
        "the host's reason: {err}"
    );
    assert_eq!(domains(&b, false), ["web-1"], "web-1 keeps running on B");

    // The host going away mid-way: an error naming it.
    let (out, _) = migrate_waiting(&a, "peer-c", "peer-b", &["--bandwidth", "1"], |phases| {
        until_transferring(phases, &a);
        b.kill_hard();
    });
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("lost contact with peer-b"), "{err}");
    // B's libvirtd kept the VM; the restarted node finds it.
    b.restart();
    assert!(
        eventually(Duration::from_secs(60), || domains(&b, false) == ["web-1"]),
        "web-1 not running on B: {:?}",
        domains(&b, true)
    );

    // A migration somebody else started (C moves B's web-1 to itself) on a VM
    // A's console watches: A's operations show it, B's, running then done,
    // riding the figures' answers (A never asked about it).
    let b_id = b.peer_id();
    // Both A (which watches) and C (which names web-1 to move it) must have
    // heard of it on the restarted peer-b: C's command otherwise looks for it
    // at home ("no VM named 'web-1' on this peer", once in a suite run).
    for (node, nick) in [(&a, "A"), (&c, "C")] {
        assert!(
            eventually(Duration::from_secs(60), || node.peer("peer-b")["vms"]
                .as_array()
                .is_some_and(|v| v.iter().any(|n| n == "web-1"))),
            "{nick} never heard of web-1 on the restarted peer-b"
        );
    }
    let watched_done = |a: &TestNode| {
        a.status()["operations"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["host"] == "peer-b" && o["vm"] == "web-1" && o["phase"] == "done")
            .cloned()
    };
    assert!(watched_done(&a).is_none(), "{}", a.status()["operations"]);
    watch_web_1(&a, &b_id);
    let out = c.cli(&["migrate", "web-1", "--to", "peer-c", "--bandwidth", "8"]);
    assert!(out.status.success(), "migrate from C: {}", stderr(&out));
    let mut done = None;
    let seen = eventually(WAIT_ENDS, || {
        watch_web_1(&a, &b_id);
        done = watched_done(&a);
        done.is_some()
    });
    assert!(
        seen,
        "A's operations never showed B's migration of web-1 done: {}\n{}",
        a.status()["operations"],
        a.log()
    );
    let done = done.unwrap();
    assert_eq!(done["peer"], "peer-c", "{done}");
    assert_eq!(domains(&c, false), ["web-1"], "web-1 runs on C");
}

#[test]
fn figures_agree_within_one_sample_means_what_it_says() {
    let own = [[1.0; 5], [2.0; 5], [3.0; 5]];
    assert!(agree_within_one_sample(&own[..], &own[..]));
    assert!(agree_within_one_sample(&own[..2], &own[..]), "one behind");
    assert!(!agree_within_one_sample(&own[..1], &own[..]), "two behind");
    assert!(!agree_within_one_sample(&[[9.0; 5]], &own[..]));
    let skewed = [[1.0; 5], [3.0; 5]];
    assert!(
        !agree_within_one_sample(&skewed[..], &own[..]),
        "history differs"
    );
}
