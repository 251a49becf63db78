//! Hosting for real: a guest created from a manifest on a peer's private libvirt,
//! its services, live stats checked against what the guest itself measures, the
//! lifecycle (pause, graceful stop, start, delete) and foreign domains.
//! Slow (real guests under TCG): nextest runs these in the `vm` group.

mod common;

use std::time::{Duration, Instant};

use common::guests::{GUEST_ANSWER, GUEST_BOOT, kv_lines};
use common::{
    NodeOptions, TestNetns, TestNode, eventually, fresh_key, http_once, http_wait, scaled, stderr,
    stdout, virsh,
};
use serde_json::Value;

fn node(netns: &TestNetns) -> TestNode {
    node_in(netns, "host", &fresh_key(), None)
}

fn node_in(netns: &TestNetns, nick: &str, key: &str, bootstrap: Option<u16>) -> TestNode {
    let image_dir = common::image_dir();
    TestNode::start(NodeOptions {
        nick,
        key,
        bootstrap,
        hypervisor: None,
        guest_netns: &netns.name,
        extra: &[
            "--image-dir",
            image_dir.to_str().unwrap(),
            "--stats-history",
            "1000",
        ],
    })
}

/// How long a guest workload (a 48 MiB write with fsync, 2 MiB echoed) may take
/// under TCG on a loaded machine (scaled).
const GUEST_WORK: Duration = Duration::from_secs(180);

/// The guest's front page, waiting up to `limit` (scaled) for it.
fn front_page(netns: &TestNetns, ip: &str, limit: Duration) -> Option<String> {
    http_wait(Some(netns), &format!("http://{ip}/"), limit)
}

/// Sends `bytes` zero bytes through the guest's echo service on port 7 and
/// counts what comes back: waits for all of it, up to [`GUEST_WORK`].
fn echo_count(netns: &TestNetns, ip: &str, bytes: usize) -> usize {
    let script = format!(
        "exec 3<>/dev/tcp/{ip}/7 && (head -c {bytes} /dev/zero >&3 &) && head -c {bytes} <&3 | wc -c"
    );
    let limit = format!("{:.0}", scaled(GUEST_WORK).as_secs_f64());
    let out = netns.exec(&["timeout", &limit, "bash", "-c", &script]);
    stdout(&out).trim().parse().unwrap_or(0)
}

/// Waits until the VM's stats history holds `n` samples past `from` (the
/// sampler's ticks, however late a loaded machine makes them); the stats then.
fn samples_past(node: &TestNode, name: &str, from: usize, n: usize) -> Value {
    let mut v = Value::Null;
    assert!(
        eventually(Duration::from_secs(60), || {
            v = vm_json(node, name);
            series(&v, "cpu_pct_guest").len() >= from + n
        }),
        "the stats history never reached {} samples: {v}",
        from + n
    );
    v
}

fn vm_json(node: &TestNode, name: &str) -> Value {
    let out = node.cli(&["vm", "stats", name, "--json"]);
    assert!(out.status.success(), "vm stats: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn series(vm: &Value, key: &str) -> Vec<f64> {
    vm["history"][key]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// Bytes a rate series adds up to from sample `from` on: each rate times the
/// time its sample covers (on a loaded host samples come late or early, and a
/// burst in a short one would be over-counted by the nominal interval).
fn integral(vm: &Value, key: &str, from: usize) -> f64 {
    let (rates, spans) = (series(vm, key), series(vm, "span_s"));
    assert_eq!(rates.len(), spans.len(), "every sample says its span: {vm}");
    rates
        .iter()
        .zip(&spans)
        .skip(from)
        .map(|(rate, span)| rate * span)
        .sum()
}

/// A window of `n` stats ticks: the guest's CPU as the stats show it (average
/// of the ticks) and as QEMU's CPU time in /proc says over the same time, both
/// in % of one CPU (the guest has one vCPU).
#[derive(Debug)]
#[allow(dead_code)] // `samples` is for the failure message
struct CpuWindow {
    stats: f64,
    qemu: f64,
    samples: Vec<f64>,
}

fn cpu_window(node: &TestNode, name: &str, qemu: u32, n: usize) -> CpuWindow {
    // Start on a tick: the next sample then covers the time after it, as /proc
    // does (a sample straddling the start would count what came before).
    let len = series(&vm_json(node, name), "cpu_pct_guest").len();
    let from = series(&samples_past(node, name, len, 1), "cpu_pct_guest").len();
    let (ticks, t0) = (process_cpu_ticks(qemu), Instant::now());
    let v = samples_past(node, name, from, n);
    let (ticks_end, elapsed) = (process_cpu_ticks(qemu), t0.elapsed());
    let samples: Vec<f64> = series(&v, "cpu_pct_guest").into_iter().skip(from).collect();
    let clk_tck = 100.0; // USER_HZ on Linux
    CpuWindow {
        stats: samples.iter().sum::<f64>() / samples.len().max(1) as f64,
        qemu: (ticks_end - ticks) as f64 / clk_tck / elapsed.as_secs_f64() * 100.0,
        samples,
    }
}

/// The QEMU process running guest `name`.
fn qemu_pid(name: &str) -> u32 {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("guest={name},")])
        .output()
        .unwrap();
    stdout(&out)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no QEMU process for {name}"))
}

/// utime + stime of a process, in clock ticks.
fn process_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which ends with the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn vm_hosting_from_a_manifest_with_stats_and_lifecycle() {
    let netns = TestNetns::new("hyp");
    let node = node(&netns);
    let name = format!("hyp-{}", std::process::id());
    let manifest = node.data_dir().join("vm.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"{name}\"\nvcpus = 1\nmemory_mib = 128\ndata_disk_mib = 128\n\
             [[services]]\nname = \"web\"\ntype = \"http\"\nport = 80\n\
             [[services]]\nname = \"store\"\ntype = \"kv\"\nport = 7000\ntags = {{ tier = \"back\" }}\n\
             [[services]]\nname = \"echo\"\ntype = \"echo\"\nport = 7\n"
        ),
    )
    .unwrap();
    let out = node.cli(&["vm", "create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "create: {}", stderr(&out));

    // The manifest is in the VM's metadata and the guest serves it.
    let vm = node.vm(&name).expect("VM listed");
    let ip = vm["ip"].as_str().unwrap().to_string();
    let services = vm["services"].as_array().unwrap();
    assert_eq!(services.len(), 3, "{vm}");
    assert!(services.iter().any(|s| s["name"] == "store"
        && s["kind"] == "kv"
        && s["port"] == 7000
        && s["tags"][0][0] == "tier"));
    let disk = std::fs::read_dir("/var/lib/peervisor/disks")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}-"))
        })
        .expect("data disk created");
    assert!(
        front_page(&netns, &ip, GUEST_BOOT).is_some(),
        "guest HTTP never answered:\n{}",
        node.log()
    );
    assert_eq!(
        kv_lines(&netns, &ip, &["SET colour blue", "GET colour"]),
        "OK\nblue\n"
    );

    // CPU: a busy loop on the one vCPU shows as all the CPU the guest gets. On a
    // busy machine that is less than a whole core, so each window is compared
    // with QEMU's own CPU time from /proc over the same window, and the burn
    // must show as a clear rise of both. Windows are counted in the sampler's
    // ticks, not slept out: on a loaded machine ticks come late.
    let qemu = qemu_pid(&name);
    let idle = cpu_window(&node, &name, qemu, 3);
    // Longer than the ramp and window below take on a quiet machine.
    let burn_for = scaled(Duration::from_secs(30));
    let burn_started = Instant::now();
    assert!(
        http_wait(
            Some(&netns),
            &format!("http://{ip}/cgi-bin/burn?{}", burn_for.as_secs()),
            GUEST_ANSWER
        )
        .is_some()
    );
    let ramp_from = series(&vm_json(&node, &name), "cpu_pct_guest").len();
    samples_past(&node, &name, ramp_from, 2);
    let burn = cpu_window(&node, &name, qemu, 6);
    assert!(
        burn_started.elapsed() < burn_for,
        "the burn ended before its window did ({:?} > {burn_for:?}): raise PEERVISOR_TEST_TIME_SCALE",
        burn_started.elapsed()
    );
    eprintln!("cpu: idle {idle:?}; during the burn {burn:?}");
    for w in [&idle, &burn] {
        assert!(
            (w.stats - w.qemu).abs() <= 15.0,
            "stats say {:.1}%, QEMU's CPU time says {:.1}%",
            w.stats,
            w.qemu
        );
    }
    // Near 100 on a quiet machine; with other work on the two cores, what QEMU
    // was given (a suite run at nice 10 beside four builds gave 25.9 against 8.2
    // idle), which must have risen clearly.
    assert!(
        burn.qemu >= idle.qemu + 10.0 && burn.stats >= idle.stats + 10.0,
        "the burn did not show: idle {idle:?}, burn {burn:?}"
    );
    // Let the burn end: the guest is back near idle.
    assert!(
        eventually(burn_for + Duration::from_secs(30), || {
            let now = series(&vm_json(&node, &name), "cpu_pct_guest");
            now.last().is_some_and(|&last| last < idle.stats + 15.0)
        }),
        "the burn never ended"
    );

    // Disk: what the host saw written matches what the guest's dd wrote.
    let before = series(&vm_json(&node, &name), "disk_write_bps").len();
    let report = http_wait(
        Some(&netns),
        &format!("http://{ip}/cgi-bin/write?48"),
        GUEST_WORK,
    )
    .expect("write workload");
    assert!(
        report.contains("dir=/data"),
        "no data disk in the guest: {report}"
    );
    let guest_bytes: f64 = report
        .lines()
        .find_map(|l| l.strip_prefix("bytes="))
        .unwrap()
        .parse()
        .unwrap();
    // The sample after the write's end holds its last bytes; one more for luck.
    let written = series(&vm_json(&node, &name), "disk_write_bps").len();
    let after = samples_past(&node, &name, written, 2);
    let host_bytes = integral(&after, "disk_write_bps", before);
    eprintln!("disk write: guest {guest_bytes} B, host stats {host_bytes:.0} B ({report:?})");
    assert!(
        (host_bytes - guest_bytes).abs() <= 0.2 * guest_bytes,
        "host saw {host_bytes:.0} B written, guest wrote {guest_bytes} B"
    );

    // Network: 2 MiB through the echo service show in both directions.
    let before = series(&vm_json(&node, &name), "net_rx_bps").len();
    let echoed = echo_count(&netns, &ip, 2_097_152) as f64;
    let sent = series(&vm_json(&node, &name), "net_rx_bps").len();
    let v = samples_past(&node, &name, sent, 2);
    let (rx, tx) = (
        integral(&v, "net_rx_bps", before),
        integral(&v, "net_tx_bps", before),
    );
    eprintln!("net: echoed {echoed} B; host stats rx {rx:.0} B, tx {tx:.0} B");
    assert!(echoed >= 2_000_000.0, "echo returned {echoed} B");
    assert!(
        rx >= 0.9 * 2_097_152.0 && tx >= 0.9 * echoed,
        "rx {rx:.0} tx {tx:.0}"
    );

    // Pause: the guest stops answering; resume: it answers again.
    let out = node.cli(&["vm", "pause", &name]);
    assert!(out.status.success(), "pause: {}", stderr(&out));
    assert_eq!(node.vm(&name).unwrap()["state"], "paused");
    assert!(
        http_once(
            Some(&netns),
            &format!("http://{ip}/"),
            Duration::from_secs(3)
        )
        .is_none(),
        "paused guest answered"
    );
    let out = node.cli(&["vm", "resume", &name]);
    assert!(out.status.success(), "resume: {}", stderr(&out));
    assert!(
        front_page(&netns, &ip, GUEST_ANSWER).is_some(),
        "resumed guest never answered"
    );

    // Graceful stop through the ACPI power button, not a power-off.
    let out = node.cli(&["vm", "stop", &name, "--timeout", "60"]);
    assert!(out.status.success(), "stop: {}", stderr(&out));
    assert!(stdout(&out).contains("shut down"), "{}", stdout(&out));
    assert_eq!(node.vm(&name).unwrap()["state"], "stopped");

    // Start again: the kv data lives on the data disk.
    let out = node.cli(&["vm", "start", &name]);
    assert!(out.status.success(), "start: {}", stderr(&out));
    assert!(
        front_page(&netns, &ip, GUEST_BOOT).is_some(),
        "restarted guest never answered"
    );
    assert_eq!(kv_lines(&netns, &ip, &["GET colour"]), "blue\n");

    // Delete: confirmation required, then nothing is left.
    let out = node.cli(&["vm", "rm", &name]);
    assert!(
        !out.status.success() && stderr(&out).contains("--yes"),
        "{}",
        stderr(&out)
    );
    let out = node.cli(&["vm", "rm", &name, "--yes"]);
    assert!(out.status.success(), "rm: {}", stderr(&out));
    assert!(node.vm(&name).is_none());
    assert!(!disk.exists(), "{} left behind", disk.display());
    assert!(!std::path::Path::new(&format!("/var/lib/peervisor/console/{name}.log")).exists());
    let uri = node.hypervisor_uri();
    assert!(!virsh(&uri, &["list", "--all", "--name"]).contains(&name));
}

#[test]
fn vm_foreign_domains_are_read_only_unless_forced() {
    let netns = TestNetns::new("hypf");
    let node = node(&netns);
    let uri = node.hypervisor_uri();
    let xml = node.data_dir().join("foreign.xml");
    std::fs::write(
        &xml,
        "<domain type='qemu'><name>legacy</name><memory unit='MiB'>64</memory>\
         <vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>",
    )
    .unwrap();
    virsh(&uri, &["define", xml.to_str().unwrap()]);
    // The node hears of it by libvirt's event (or its 2 s poll).
    assert!(
        eventually(Duration::from_secs(5), || node.vm("legacy").is_some()),
        "foreign domain not listed"
    );
    let vm = node.vm("legacy").unwrap();
    assert_eq!(vm["managed"], false);
    for args in [
        vec!["vm", "start", "legacy"],
        vec!["vm", "rm", "legacy", "--yes"],
    ] {
        let out = node.cli(&args);
        assert!(!out.status.success(), "{args:?} succeeded on a foreign VM");
        assert!(
            stderr(&out).contains("not created by peervisor"),
            "{}",
            stderr(&out)
        );
    }
    let out = node.cli(&["vm", "rm", "legacy", "--yes", "--force"]);
    assert!(out.status.success(), "forced rm: {}", stderr(&out));
    assert!(node.vm("legacy").is_none());
}

#[test]
fn vm_create_refuses_a_bad_manifest_naming_the_field() {
    // Checked by the CLI before any node is involved.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"x\"\n[[services]]\nname = \"a\"\ntype = \"http\"\nport = 80\n\
         [[services]]\nname = \"a\"\ntype = \"kv\"\nport = 81\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "vm",
            "create",
            "-f",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("bad.toml") && err.contains("services[1].name"),
        "{err}"
    );
}

#[test]
fn vm_with_a_data_disk_live_migrates_on_one_machine() {
    // The disk lives in the machine-wide disk dir, so both peers' libvirt see the
    // same path: tunnelled live migration needs no storage copy.
    let netns = TestNetns::new("hypm");
    let key = fresh_key();
    let a = node_in(&netns, "host-a", &key, None);
    let b = node_in(&netns, "host-b", &key, Some(a.port));
    let name = format!("hypm-{}", std::process::id());
    let manifest = a.data_dir().join("vm.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"{name}\"\ndata_disk_mib = 64\n\
             [[services]]\nname = \"web\"\ntype = \"http\"\nport = 80\n\
             [[services]]\nname = \"store\"\ntype = \"kv\"\nport = 7000\n"
        ),
    )
    .unwrap();
    let out = a.cli(&["vm", "create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "create: {}", stderr(&out));
    let ip = a.vm(&name).unwrap()["ip"].as_str().unwrap().to_string();
    assert!(
        front_page(&netns, &ip, GUEST_BOOT).is_some(),
        "guest never answered"
    );
    assert_eq!(kv_lines(&netns, &ip, &["SET k moved"]), "OK\n");
    assert!(eventually(Duration::from_secs(30), || a
        .connected_peers()
        .contains(&"host-b".to_string())));
    b.allow_control(&a);
    let out = a.cli(&["migrate", &name, "--to", "host-b", "--wait"]);
    assert!(
        out.status.success(),
        "migrate: {}\n{}",
        stderr(&out),
        a.log()
    );
    let moved = b.vm(&name).expect("VM on host-b");
    assert_eq!(
        moved["services"].as_array().unwrap().len(),
        2,
        "manifest travelled: {moved}"
    );
    assert_eq!(kv_lines(&netns, &ip, &["GET k"]), "moved\n");
    let out = b.cli(&["vm", "rm", &name, "--yes"]);
    assert!(out.status.success(), "rm: {}", stderr(&out));
}
