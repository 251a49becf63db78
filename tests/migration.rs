//! The walking skeleton end to end: two peers as separate processes, each with its
//! own libvirt daemon; a real guest boots on A and live-migrates to B through the
//! overlay. Slow (real guests under TCG): nextest runs these in the `vm` group.

mod common;

use std::time::Duration;

use common::guests::{GUEST_ANSWER, GUEST_BOOT, Rig, boot, guest_state};
use common::{
    NodeOptions, TestNode, cut_connections, eventually, fresh_key, stderr, stdout, virsh,
};

fn field(state: &str, key: &str) -> String {
    state
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .to_string()
}

fn running_names(uri: &str) -> Vec<String> {
    virsh(uri, &["list", "--name"])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The downtime the migration asks libvirt for. QEMU aims at it but cannot
/// promise it: on a loaded 2-core host the final pause (stop, device state,
/// resume, all CPU work under TCG) overshot 500 ms by 276 ms. The achieved
/// figure against the request is `bench migrate`'s business, not a test's.
const MAX_DOWNTIME_MS: u64 = 500;
/// How much later than libvirt's pause the node's service probe may see the
/// gap end: one probe period (25 ms) plus a round trip, with room to spare.
const PROBE_TOLERANCE_MS: u64 = 250;

#[test]
fn vm_live_migrates_between_two_peers_over_the_overlay() {
    let rig = Rig::new("mig");
    let netns = &rig.netns;
    let (a, b) = rig.pair(&[]);

    let ip = boot(&a, netns, "web-1", &[]);
    assert_eq!(
        a.vm("web-1").expect("web-1 listed on A")["state"],
        "running"
    );
    let before = guest_state(netns, &ip).expect("guest answers before migration");
    assert_eq!(field(&before, "name"), "web-1");

    let out = a.cli(&[
        "migrate",
        "web-1",
        "--to",
        "peer-b",
        "--max-downtime",
        &MAX_DOWNTIME_MS.to_string(),
        "--wait",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "migrate: {}\n{}",
        stderr(&out),
        a.log()
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["to"], "peer-b");
    // libvirt's own measurements, carried from the destination's completed job.
    let downtime = report["downtime_ms"]
        .as_u64()
        .expect("downtime_ms reported");
    let sent = report["transferred_bytes"]
        .as_u64()
        .expect("bytes reported");
    // libvirt's pause is a real figure, and what a client saw agrees with it:
    // the node's service probe, which knows nothing of libvirt, found a gap at
    // least that long (the pause lies between two answers). A figure in the
    // wrong unit, or the whole job's time, fails here.
    let probe = report["probe_downtime_ms"]
        .as_u64()
        .expect("probe_downtime_ms reported");
    assert!(
        downtime > 0 && downtime <= probe + PROBE_TOLERANCE_MS,
        "libvirt's downtime {downtime} ms is not within the service gap the probe saw ({probe} ms + {PROBE_TOLERANCE_MS} ms): {report}"
    );
    eprintln!(
        "downtime {downtime} ms (requested at most {MAX_DOWNTIME_MS} ms), service gap {probe} ms"
    );
    assert!(sent > 1 << 20, "a guest's RAM is more than 1 MiB: {report}");
    eprintln!("migration figures: {report}");
    // Both peers keep the finished operation with its figures.
    let ops = a.status()["operations"].clone();
    assert_eq!(ops[0]["phase"], "done", "{ops}");
    assert_eq!(ops[0]["progress"], 1.0, "{ops}");
    assert_eq!(ops[0]["transferred_bytes"].as_u64(), Some(sent), "{ops}");

    // B runs it, A does not, and each peer's libvirt agrees.
    assert_eq!(b.vm("web-1").expect("web-1 on B")["state"], "running");
    assert!(a.vm("web-1").is_none(), "web-1 still listed on A");
    assert_eq!(running_names(&b.hypervisor_uri()), ["web-1"]);
    assert!(running_names(&a.hypervisor_uri()).is_empty());
    assert!(
        virsh(&a.hypervisor_uri(), &["list", "--all", "--name"])
            .trim()
            .is_empty(),
        "A keeps no definition"
    );

    // Same guest, same memory: the boot id survived, the service answers.
    let after = guest_state(netns, &ip).expect("guest answers after migration");
    assert_eq!(field(&after, "boot_id"), field(&before, "boot_id"));
    let hits = |s: &str| field(s, "hits").parse::<u64>().unwrap_or(0);
    assert!(
        hits(&after) > hits(&before),
        "the counter in guest RAM kept counting"
    );
}

#[test]
fn vm_migration_refused_by_destination_leaves_vm_running_on_source() {
    let rig = Rig::new("refuse");
    let (a, b) = rig.pair(&["--no-accept-migrations"]);
    let out = a.cli(&["vm", "create", "web-2"]);
    assert!(out.status.success(), "vm create: {}", stderr(&out));

    let out = a.cli(&["migrate", "web-2", "--to", "peer-b"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("peer-b refuses web-2") && err.contains("does not accept"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = a.cli(&["migrate", "web-2", "--to", "peer-z"]);
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("no peer 'peer-z'") && err.contains("peer-b"),
        "{err}"
    );

    assert_eq!(running_names(&a.hypervisor_uri()), ["web-2"]);
    assert!(running_names(&b.hypervisor_uri()).is_empty());
    assert!(
        virsh(&b.hypervisor_uri(), &["list", "--all", "--name"])
            .trim()
            .is_empty(),
        "nothing half-made on B"
    );
}

#[test]
fn vm_migration_aborted_mid_transfer_leaves_vm_running_on_source() {
    let rig = Rig::new("abort");
    let netns = &rig.netns;
    let (a, b) = rig.pair(&[]);
    let ip = boot(&a, netns, "web-3", &["--memory", "512"]);

    std::thread::scope(|scope| {
        // 1 MiB/s: the transfer takes far longer than the test waits for it.
        let migration = scope.spawn(|| {
            a.cli(&[
                "migrate",
                "web-3",
                "--to",
                "peer-b",
                "--bandwidth",
                "1",
                "--wait",
            ])
        });
        let mut progress = None;
        assert!(
            eventually(Duration::from_secs(60), || {
                let ops = a.status()["operations"].clone();
                progress = ops[0]["progress"].as_f64();
                ops[0]["transferred_bytes"].as_u64().unwrap_or(0) > 0
            }),
            "no progress from libvirt's job stats:\n{}",
            a.log()
        );
        let progress = progress.expect("progress while transferring");
        assert!(progress > 0.0 && progress < 1.0, "{progress}");

        let out = a.cli(&["migrate", "--abort", "web-3"]);
        assert!(out.status.success(), "abort: {}", stderr(&out));
        let out = migration.join().unwrap();
        assert!(
            !out.status.success(),
            "the aborted migration reports failure"
        );
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    });

    assert_eq!(running_names(&a.hypervisor_uri()), ["web-3"]);
    assert!(
        eventually(Duration::from_secs(20), || virsh(
            &b.hypervisor_uri(),
            &["list", "--all", "--name"]
        )
        .trim()
        .is_empty()),
        "nothing left on B"
    );
    assert!(
        guest_state(netns, &ip).is_some(),
        "service answers on A after the abort"
    );
    assert_eq!(a.status()["operations"][0]["phase"], "failed");
    let out = a.cli(&["migrate", "--abort", "web-3"]);
    assert!(
        stderr(&out).contains("not being migrated"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn vm_migration_survives_destination_killed_mid_transfer() {
    let rig = Rig::new("kill");
    let netns = &rig.netns;
    let (a, mut b) = rig.pair(&[]);
    let b_uri = b.hypervisor_uri();
    let ip = boot(&a, netns, "web-4", &["--memory", "512"]);

    let out = std::thread::scope(|scope| {
        let migration = scope.spawn(|| {
            a.cli(&[
                "migrate",
                "web-4",
                "--to",
                "peer-b",
                "--bandwidth",
                "1",
                "--wait",
            ])
        });
        assert!(
            eventually(Duration::from_secs(60), || {
                a.status()["operations"][0]["transferred_bytes"]
                    .as_u64()
                    .unwrap_or(0)
                    > 0
            }),
            "the transfer never started:\n{}",
            a.log()
        );
        // The node dies; its libvirtd (and the half-received QEMU) live on.
        b.kill_hard();
        migration.join().unwrap()
    });
    assert!(
        !out.status.success(),
        "migration to a dead peer cannot succeed"
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));

    assert_eq!(running_names(&a.hypervisor_uri()), ["web-4"]);
    assert!(
        guest_state(netns, &ip).is_some(),
        "service answers on A after the failed migration"
    );
    assert_eq!(a.status()["operations"][0]["phase"], "failed");
    // With the tunnel gone, B's libvirt drops the incoming VM on its own.
    let left_on_b = || virsh(&b_uri, &["list", "--all", "--name"]);
    let clean = eventually(Duration::from_secs(30), || left_on_b().trim().is_empty());
    let left = left_on_b();
    b.stop_orphan_libvirtd();
    assert!(clean, "B's libvirt keeps a half-made VM: {left}");
}

#[test]
fn vm_migration_survives_source_killed_mid_transfer() {
    let rig = Rig::new("srckill");
    let netns = &rig.netns;
    let (mut a, b) = rig.pair(&[]);
    let (a_uri, b_uri) = (a.hypervisor_uri(), b.hypervisor_uri());
    let ip = boot(&a, netns, "web-9", &["--memory", "512"]);
    let before = guest_state(netns, &ip).expect("guest answers before migration");

    let a_dir = a.data_dir().to_path_buf();
    let out = std::thread::scope(|scope| {
        // The CLI on its own (the test kills A's node meanwhile).
        let migration = scope.spawn(|| {
            std::process::Command::new(common::BIN)
                .arg("--data-dir")
                .arg(&a_dir)
                .args([
                    "migrate",
                    "web-9",
                    "--to",
                    "peer-b",
                    "--bandwidth",
                    "1",
                    "--wait",
                ])
                .output()
                .expect("run peervisor")
        });
        assert!(
            eventually(Duration::from_secs(60), || {
                a.status()["operations"][0]["transferred_bytes"]
                    .as_u64()
                    .unwrap_or(0)
                    > 0
            }),
            "the transfer never started:\n{}",
            a.log()
        );
        // The source node dies; its libvirtd, which drives the migration, lives on.
        a.kill_hard();
        migration.join().unwrap()
    });
    assert!(!out.status.success(), "the CLI lost its node");

    // The tunnel died with the node: the source's libvirt gives up and keeps the
    // VM running; the destination's drops what it had received.
    assert!(
        eventually(Duration::from_secs(60), || running_names(&a_uri)
            == ["web-9"]),
        "the VM is not running on A's libvirt: {:?}",
        virsh(&a_uri, &["list", "--all"])
    );
    let left_on_b = || virsh(&b_uri, &["list", "--all", "--name"]);
    assert!(
        eventually(Duration::from_secs(30), || left_on_b().trim().is_empty()),
        "B's libvirt keeps a half-made VM: {}",
        left_on_b()
    );
    // B closed the operation by itself (no word came from the dead source).
    assert!(
        eventually(Duration::from_secs(30), || {
            b.status()["operations"][0]["phase"] == "failed"
        }),
        "B's operation: {}",
        b.status()["operations"]
    );
    let state = guest_state(netns, &ip).expect("service answers on A's libvirt");
    assert_eq!(
        field(&state, "boot_id"),
        field(&before, "boot_id"),
        "the same guest"
    );

    // With A silent, B forgets its services; the restarted source finds the VM
    // and publishes it again.
    assert!(
        eventually(Duration::from_secs(40), || b.providers("web-9").is_empty()),
        "B still lists web-9: {:?}",
        b.providers("web-9")
    );
    a.restart();
    assert_eq!(a.vm("web-9").expect("found again")["state"], "running");
    assert!(
        eventually(Duration::from_secs(30), || {
            b.providers("web-9")
                .iter()
                .any(|p| p["peer_nick"] == "peer-a" && p["vm"] == "web-9")
        }),
        "B does not see A providing web-9 again: {:?}",
        b.providers("web-9")
    );
    // Nothing is held for it on B (name, UUID, reservation): it can move now.
    let out = a.cli(&["migrate", "web-9", "--to", "peer-b", "--wait"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), b.log());
    assert!(running_names(&a_uri).is_empty());
    assert_eq!(running_names(&b_uri), ["web-9"]);
    let state = guest_state(netns, &ip).expect("service answers on B");
    assert_eq!(field(&state, "boot_id"), field(&before, "boot_id"));
}

/// GET through a consume listener on this host, waiting up to `limit` (scaled).
fn http_get(port: u16, path: &str, limit: Duration) -> Option<String> {
    common::http_wait(None, &format!("http://127.0.0.1:{port}{path}"), limit)
}

fn service_listed(node: &TestNode, name: &str) -> bool {
    let out = node.cli(&["services", "--json"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .any(|s| s["name"] == name)
}

#[test]
fn vm_service_is_consumed_across_the_overlay_and_follows_its_vm() {
    let rig = Rig::new("svc");
    let (a, b) = rig.pair(&[]);
    let c = rig.node("peer-c", Some(&b), &[]); // told only about peer-b
    let out = a.cli(&["vm", "create", "web-1"]);
    assert!(out.status.success(), "vm create: {}", stderr(&out));

    // Found from C, which was only told about B.
    assert!(
        eventually(Duration::from_secs(30), || service_listed(&c, "web-1")),
        "peer-c never saw web-1:\n{}",
        c.log()
    );
    let port = c.consume("web-1", &[]);
    let page = http_get(port, "/", GUEST_BOOT).expect("guest page never came through the overlay");
    assert!(page.contains("peervisor guest web-1"));

    let out = a.cli(&["migrate", "web-1", "--to", "peer-b", "--wait"]);
    assert!(out.status.success(), "migrate: {}", stderr(&out));
    // A new request through the same local port reaches the VM on B.
    let state = http_get(port, "/cgi-bin/state", GUEST_ANSWER)
        .expect("no answer through the same port after the move");
    assert!(state.contains("name=web-1"));
    assert!(
        eventually(Duration::from_secs(10), || {
            c.status()["services"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["name"] == "web-1" && s["providers"][0]["peer_nick"] == "peer-b")
        }),
        "the record follows the VM"
    );

    // A stopped VM's service disappears from every peer.
    let out = b.cli(&["vm", "stop", "web-1", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for node in [&a, &b, &c] {
        assert!(
            eventually(Duration::from_secs(12), || !service_listed(node, "web-1")),
            "{} still lists web-1",
            node.nick
        );
    }
}

// ---- Guarantees: checks before anything moves, parallel migrations, faults ----

/// Two peers on libvirt's test driver (nothing boots): the checks that refuse a
/// migration before anything moves. peer-b lends 4 vCPUs and 3 GiB, and already
/// runs the test driver's own VM "test" (2 vCPUs, 2 GiB), which counts against it.
#[test]
fn bad_migrations_are_refused_before_anything_moves_with_a_clear_error() {
    let key = fresh_key();
    let image_dir = common::image_dir().to_string_lossy().into_owned();
    let start = |nick, bootstrap, extra: &[&str]| {
        TestNode::start(NodeOptions {
            nick,
            key: &key,
            bootstrap,
            hypervisor: Some("test:///default"),
            guest_netns: "unused",
            extra,
        })
    };
    let a = start("peer-a", None, &["--image-dir", &image_dir]);
    let b = start(
        "peer-b",
        Some(a.port),
        &["--lend-vcpus", "4", "--lend-memory", "3GiB"],
    );
    b.join_and_allow_control(&a);
    let lending = b.status()["local"]["lending"].clone();
    assert_eq!(lending["memory_mib"], 3072, "{lending}");
    assert_eq!(
        lending["vcpus_used"], 2,
        "the test driver's VM counts: {lending}"
    );
    let text = common::stdout(&b.cli(&["status"]));
    assert!(
        text.contains("lends    4 vCPUs (2 in use), 3 GiB memory (2 GiB in use)"),
        "{text}"
    );
    let refused = |args: &[&str]| {
        let out = a.cli(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        err
    };

    // A VM peervisor did not create stays put unless the operator insists...
    let err = refused(&["migrate", "test", "--to", "peer-b"]);
    assert!(
        err.contains("'test' was not created by peervisor") && err.contains("--force"),
        "{err}"
    );
    // ...and then the destination checks that the name is free.
    let err = refused(&["migrate", "test", "--to", "peer-b", "--force"]);
    assert!(
        err.contains("peer-b refuses test: a VM named 'test' exists already here"),
        "{err}"
    );

    // Beyond what peer-b lends: refused by the destination, naming the resource.
    for (name, vcpus, memory) in [("big-mem", "1", "2048"), ("big-cpu", "3", "64")] {
        let out = a.cli(&["vm", "create", name, "--vcpus", vcpus, "--memory", memory]);
        assert!(out.status.success(), "vm create: {}", stderr(&out));
    }
    let err = refused(&["migrate", "big-mem", "--to", "peer-b"]);
    assert!(
        err.contains("peer-b refuses big-mem: needs 2 GiB memory, 1 GiB left of 3 GiB lent"),
        "{err}"
    );
    let err = refused(&["migrate", "big-cpu", "--to", "peer-b", "--wait"]);
    assert!(
        err.contains("peer-b refuses big-cpu: needs 3 vCPUs, 2 left of 4 lent"),
        "{err}"
    );
    let log = b.log();
    assert!(
        log.contains("refusing VM 'big-mem' from peer-a: needs 2 GiB memory")
            && log.contains("refusing VM 'big-cpu' from peer-a: needs 3 vCPUs"),
        "the destination says why too:\n{log}"
    );

    // A VM that is not running cannot live-migrate.
    let out = a.cli(&["vm", "pause", "big-mem"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = refused(&["migrate", "big-mem", "--to", "peer-b"]);
    assert!(
        err.contains("'big-mem' is paused") && err.contains("resume it first"),
        "{err}"
    );

    // Nothing changed: every VM where it was, nothing defined on peer-b, no
    // operation under way anywhere.
    let names = |node: &TestNode| -> Vec<String> {
        node.status()["vms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&a), ["big-cpu", "big-mem", "test"]);
    assert_eq!(names(&b), ["test"]);
    for node in [&a, &b] {
        let ops = node.status()["operations"].clone();
        assert!(
            ops.as_array()
                .unwrap()
                .iter()
                .all(|o| o["phase"] != "transferring"),
            "{ops}"
        );
    }
}

#[test]
fn bad_lending_settings_are_refused_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let node = |extra: &[&str]| {
        std::process::Command::new(common::BIN)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["node", "--hypervisor", "test:///default", "--listen"])
            .arg(format!("/ip4/127.0.0.1/tcp/{}", common::free_port()))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = node(&["--lend-memory", "4GB"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'--lend-memory <SIZE>'") && err.contains("unknown unit 'GB'"),
        "{err}"
    );
    std::fs::write(dir.path().join("capacity.toml"), "lend_disk = \"lots\"\n").unwrap();
    let out = node(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("capacity.toml: lend_disk: 'lots' is not a size"),
        "{err}"
    );
}

/// The overlay connection between the peers is cut mid-transfer (every TCP
/// connection between their ports destroyed, as a network fault would): the VM
/// keeps running on the source only, its service answers, the destination keeps
/// nothing and records the failure, and the service record still points at the
/// source. While the transfer runs, a second migration of the same VM and one
/// beyond the destination's parallel limit are refused.
#[test]
fn vm_migration_cut_mid_transfer_leaves_vm_on_source_and_parallel_ones_are_refused() {
    let rig = Rig::new("cut");
    let netns = &rig.netns;
    let (a, b) = rig.pair(&["--max-migrations", "1"]);
    let ip = boot(&a, netns, "web-6", &["--memory", "512"]);
    let out = a.cli(&["vm", "create", "web-7"]);
    assert!(out.status.success(), "vm create: {}", stderr(&out));
    let before = guest_state(netns, &ip).expect("guest answers before migration");

    let out = std::thread::scope(|scope| {
        // 1 MiB/s: the transfer takes far longer than the test waits for it.
        let migration = scope.spawn(|| {
            a.cli(&[
                "migrate",
                "web-6",
                "--to",
                "peer-b",
                "--bandwidth",
                "1",
                "--wait",
            ])
        });
        assert!(
            eventually(Duration::from_secs(60), || {
                a.status()["operations"][0]["transferred_bytes"]
                    .as_u64()
                    .unwrap_or(0)
                    > 0
            }),
            "the transfer never started:\n{}",
            a.log()
        );

        let out = a.cli(&["migrate", "web-6", "--to", "peer-b"]);
        let err = stderr(&out);
        assert!(
            !out.status.success() && err.contains("'web-6' is already being migrated to peer-b"),
            "{err}"
        );
        let out = a.cli(&["migrate", "web-7", "--to", "peer-b"]);
        let err = stderr(&out);
        assert!(
            !out.status.success()
                && err.contains("peer-b refuses web-7: already receiving 1 migration(s) (limit 1)"),
            "{err}"
        );

        cut_connections(&[a.port, b.port]);
        migration.join().unwrap()
    });
    let err = stderr(&out);
    assert!(!out.status.success(), "a cut migration cannot succeed");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("VM 'web-6' did not move")
            && err.contains("the overlay tunnel to peer-b broke mid-transfer")
            && err.contains("it keeps running on this peer"),
        "{err}"
    );

    assert_eq!(running_names(&a.hypervisor_uri()), ["web-6", "web-7"]);
    let after = guest_state(netns, &ip).expect("service answers on A after the cut");
    assert_eq!(field(&after, "boot_id"), field(&before, "boot_id"));
    assert_eq!(a.status()["operations"][0]["phase"], "failed");
    assert!(
        eventually(Duration::from_secs(30), || virsh(
            &b.hypervisor_uri(),
            &["list", "--all", "--name"]
        )
        .trim()
        .is_empty()),
        "B's libvirt keeps a half-made VM"
    );
    // B closes its books on the incoming VM (its operation fails, the lent
    // capacity and the parallel slot are free again).
    assert!(
        eventually(Duration::from_secs(20), || {
            b.status()["operations"][0]["phase"] == "failed"
        }),
        "B still shows the incoming migration: {}",
        b.status()["operations"]
    );
    let why = b.status()["operations"][0]["error"].clone();
    assert!(
        why.as_str()
            .is_some_and(|w| w.contains("source reported")
                || w.contains("tunnel closed before the VM arrived")),
        "{why}"
    );
    eprintln!("source said: {err}destination recorded: {why}");
    // The overlay heals and the service record points at A, where the VM runs.
    assert!(
        eventually(Duration::from_secs(30), || {
            b.status()["services"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["name"] == "web-6" && s["providers"][0]["peer_nick"] == "peer-a")
        }),
        "B does not see web-6 served by peer-a:\n{}",
        b.status()["services"]
    );
}

/// The longest a consumer may go without an answer while its service migrates
/// (scaled): the design's target is under 1 s (release, quiet machine); ten
/// runs of this test (debug build, load average 7-10 on 2 cores) measured
/// 0.38-0.86 s. An outage of the kind the old 10 s retries hid (the source
/// refusing, or the consumer asking a provider that is gone) is well above it.
const CONSUMER_GAP_BOUND: Duration = Duration::from_secs(3);

/// One request through the consume listener on `port`: the guest's static page
/// (a CGI page costs a fork and exec, slow under TCG). Waits for the answer up
/// to `limit`: a slow answer counts in the gap, it is not a failure.
fn state_through(port: u16, limit: Duration) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, limit).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    (reply.starts_with("HTTP/1.") && reply.contains(" 200 ") && reply.contains("peervisor guest"))
        .then_some(reply)
}

/// What a consumer looping requests saw.
#[derive(Default)]
struct ConsumerLog {
    /// When each request was answered.
    answered: Vec<std::time::Instant>,
    /// Requests not answered within the gap bound, retries included.
    failed: u32,
    /// Failed attempts (refused, reset): (started, how long it took). Each is
    /// retried after 20 ms, its time counting in the gap.
    failures: Vec<(std::time::Instant, Duration)>,
    /// Successful requests slower than 500 ms: (started, how long it took).
    slow: Vec<(std::time::Instant, Duration)>,
}

impl ConsumerLog {
    fn longest_gap(&self) -> Duration {
        self.answered
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }
}

/// Loops requests every 20 ms until `stop`, as a client with a retry would:
/// a failed attempt is retried after 20 ms, a slow answer waited for, until
/// the gap bound; a request still unanswered then counts as failed.
fn consume_loop(port: u16, stop: &std::sync::atomic::AtomicBool) -> ConsumerLog {
    let mut log = ConsumerLog::default();
    let bound = common::scaled(CONSUMER_GAP_BOUND);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let given_up = std::time::Instant::now() + bound;
        loop {
            let attempt = std::time::Instant::now();
            let left = given_up.saturating_duration_since(attempt);
            if state_through(port, left.max(Duration::from_millis(100))).is_some() {
                log.answered.push(std::time::Instant::now());
                if attempt.elapsed() > Duration::from_millis(500) {
                    log.slow.push((attempt, attempt.elapsed()));
                }
                break;
            }
            log.failures.push((attempt, attempt.elapsed()));
            if std::time::Instant::now() >= given_up {
                log.failed += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    log
}

#[test]
fn vm_consumer_sees_no_failed_request_during_migration() {
    let rig = Rig::new("gap");
    let (a, b) = rig.pair(&[]);
    let c = rig.node("peer-c", Some(&b), &[]);
    boot(&a, &rig.netns, "web-1", &[]);
    assert!(
        eventually(Duration::from_secs(30), || service_listed(&c, "web-1")),
        "peer-c never saw web-1:\n{}",
        c.log()
    );
    let port = c.consume("web-1", &[]);
    assert!(
        eventually(Duration::from_secs(30), || state_through(
            port,
            Duration::from_secs(5)
        )
        .is_some()),
        "no answer through the consume listener"
    );

    let stop = std::sync::atomic::AtomicBool::new(false);
    let t0 = std::time::Instant::now();
    let (consumer, out) = std::thread::scope(|scope| {
        let consumer = scope.spawn(|| consume_loop(port, &stop));
        std::thread::sleep(Duration::from_secs(2));
        eprintln!("migration starts at {} ms", t0.elapsed().as_millis());
        let out = a.cli(&["migrate", "web-1", "--to", "peer-b", "--wait", "--json"]);
        eprintln!("migration returns at {} ms", t0.elapsed().as_millis());
        // Keep consuming until the answers come from B through the overlay.
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (consumer.join().unwrap(), out)
    });
    assert!(
        out.status.success(),
        "migrate: {}\n{}",
        stderr(&out),
        a.log()
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "consumer through peer-c: longest gap {} ms, {} answered, {} failed attempts (retried), {} failed; migration report {report}",
        consumer.longest_gap().as_millis(),
        consumer.answered.len(),
        consumer.failures.len(),
        consumer.failed,
    );
    for (at, took) in &consumer.slow {
        eprintln!(
            "  slow request at {} ms, took {} ms",
            at.duration_since(t0).as_millis(),
            took.as_millis()
        );
    }
    for (at, took) in &consumer.failures {
        eprintln!(
            "  failed attempt at {} ms, took {} ms",
            at.duration_since(t0).as_millis(),
            took.as_millis()
        );
    }
    // The bound is what the retries used to hide: a request retried for 10 s
    // counted as answered however long the service was gone.
    let bound = common::scaled(CONSUMER_GAP_BOUND);
    assert_eq!(
        consumer.failed, 0,
        "a request was not answered within {bound:?}, retries included"
    );
    assert!(
        consumer.longest_gap() <= bound,
        "the consumer went {:?} without an answer (bound {bound:?})",
        consumer.longest_gap()
    );
    assert!(consumer.answered.len() > 20, "the consumer kept asking");

    // The source's own probe of the service, next to libvirt's figures.
    let probe = report["probe_downtime_ms"]
        .as_u64()
        .expect("probe_downtime_ms reported");
    assert!(probe > 0, "the guest pauses at switch-over: {report}");
    let op = a.status()["operations"][0].clone();
    assert_eq!(op["probe_downtime_ms"].as_u64(), Some(probe), "{op}");
    let text = stdout(&a.cli(&["status"]));
    assert!(
        text.contains("MIGRATION") && text.contains("web-1") && text.contains("peer-b"),
        "{text}"
    );

    // Once gossip has spread the move, requests go to peer-b (until then the
    // source forwards them there).
    assert!(
        eventually(Duration::from_secs(15), || {
            state_through(port, Duration::from_secs(5)).is_some()
                && c.status()["consumptions"][0]["last_provider"] == "peer-b"
        }),
        "consumers never switched to peer-b: {}",
        c.status()["consumptions"]
    );
    assert_eq!(running_names(&b.hypervisor_uri()), ["web-1"]);
}
