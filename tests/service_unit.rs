//! The system node as peervisor.service runs it: the unit's ExecStart with its
//! Environment (only the two paths moved into a temp dir: the config file and
//! the data dir), stopped as its KillMode=process stops it (SIGTERM to the node
//! alone), and started again. The guest must still run (same boot), still be
//! published, and the node's consumption must listen again on the same local port.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::guests::guest_state;
use common::{BIN, TestNetns, eventually, free_port, fresh_key, image_dir, stderr};
use serde_json::Value;

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/packaging/debian/peervisor.service"
);

/// What systemd reads from the unit to start and stop the node.
struct Unit {
    exec_start: Vec<String>,
    environment: BTreeMap<String, String>,
    kill_mode: String,
}

fn read_unit() -> Unit {
    let text = std::fs::read_to_string(UNIT).unwrap();
    let mut unit = Unit {
        exec_start: Vec::new(),
        environment: BTreeMap::new(),
        kill_mode: "control-group".into(),
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "ExecStart" => unit.exec_start = value.split_whitespace().map(String::from).collect(),
            "Environment" => {
                let (k, v) = value.split_once('=').expect("Environment=KEY=VALUE");
                unit.environment.insert(k.into(), v.into());
            }
            "KillMode" => unit.kill_mode = value.into(),
            _ => {}
        }
    }
    unit
}

/// The node process, started from the unit.
struct ServiceNode {
    unit: Unit,
    /// The unit's Environment with its paths moved into the test's dir.
    environment: BTreeMap<String, String>,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl ServiceNode {
    fn new(dir: &Path, config: &Path) -> ServiceNode {
        let unit = read_unit();
        assert_eq!(
            unit.exec_start[0], "/usr/bin/peervisor",
            "the unit runs the packaged binary"
        );
        assert_eq!(
            unit.kill_mode, "process",
            "the unit must leave the guests alone when it stops the node"
        );
        let data_dir = dir.join("var-lib-peervisor");
        let mut environment = unit.environment.clone();
        let moved = [
            ("PEERVISOR_CONFIG", config.to_path_buf()),
            ("PEERVISOR_DATA_DIR", data_dir.clone()),
        ];
        for (key, path) in moved {
            let old = environment.insert(key.into(), path.to_string_lossy().into_owned());
            assert!(old.is_some(), "the unit sets {key}");
        }
        ServiceNode {
            unit,
            environment,
            data_dir,
            log: dir.join("journal.log"),
            child: None,
        }
    }

    /// Starts ExecStart as systemd would: a clean environment plus the unit's,
    /// no terminal, stderr to the journal (here a file).
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .args(&self.unit.exec_start[1..])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(&self.environment)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the node");
        self.child = Some(child);
        let ready = eventually(Duration::from_secs(90), || {
            self.cli(&["status", "--json"]).status.success()
        });
        assert!(ready, "node never answered:\n{}", self.journal());
    }

    /// `systemctl stop` with KillMode=process: SIGTERM to the main process only,
    /// then wait for it (TimeoutStopSec).
    fn stop(&mut self) {
        let mut child = self.child.take().expect("node running");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let exited = eventually(Duration::from_secs(60), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        assert!(exited, "node did not stop on SIGTERM:\n{}", self.journal());
    }

    /// The CLI as an operator on the host runs it: it finds the node through the
    /// config file's data-dir.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .env_remove("PEERVISOR_DATA_DIR")
            .arg("--config")
            .arg(&self.environment["PEERVISOR_CONFIG"])
            .args(args)
            .output()
            .expect("run peervisor")
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("JSON")
    }

    fn journal(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServiceNode {
    fn drop(&mut self) {
        // The guest outlives the node by design: remove it, then stop the node.
        if self.child.is_some() {
            let _ = self.cli(&["vm", "rm", "web-1", "--yes"]);
            self.stop();
        }
    }
}

fn http(port: u16) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}/cgi-bin/state"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn boot_id(state: &str) -> String {
    state
        .lines()
        .find_map(|l| l.strip_prefix("boot_id="))
        .unwrap_or_else(|| panic!("no boot_id in {state}"))
        .to_string()
}

#[test]
fn vm_node_run_as_the_unit_keeps_guests_and_consumptions_across_a_restart() {
    let images = image_dir();
    let netns = TestNetns::new("unit");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("network.key");
    std::fs::write(&key, fresh_key()).unwrap();
    let config = dir.path().join("config.toml");
    let mut node = ServiceNode::new(dir.path(), &config);
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "nick = \"unit-node\"\nlisten = [\"/ip4/127.0.0.1/tcp/{port}\"]\n\
             network-key = {key:?}\nguest-netns = {ns:?}\nimage-dir = {images:?}\n\
             data-dir = {data:?}\n",
            ns = netns.name,
            data = node.data_dir,
        ),
    )
    .unwrap();
    node.start();

    let out = node.cli(&["vm", "create", "web-1"]);
    assert!(out.status.success(), "vm create: {}", stderr(&out));
    let vm = |node: &ServiceNode| {
        node.json(&["status", "--json"])["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "web-1")
            .cloned()
    };
    let ip = vm(&node).expect("web-1 listed")["ip"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        eventually(Duration::from_secs(90), || guest_state(&netns, &ip)
            .is_some()),
        "guest never answered:\n{}",
        node.journal()
    );
    let mut local_port = 0;
    assert!(
        eventually(Duration::from_secs(60), || {
            let out = node.cli(&["consume", "web-1", "--json"]);
            if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
                local_port = v["listen"]
                    .as_str()
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
            }
            out.status.success()
        }),
        "consume web-1 never worked"
    );
    let before = http(local_port).expect("the consumption reaches the guest");
    // QEMU's pid, from the pid file of the node's own libvirtd.
    let pid_file = node.data_dir.join("libvirt/run/qemu/web-1.pid");
    let qemu = || {
        std::fs::read_to_string(&pid_file)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert!(!qemu().is_empty(), "no {}", pid_file.display());
    let qemu_before = qemu();

    node.stop();
    // Stopped, the node no longer answers, and the guest still runs.
    assert!(!node.cli(&["status"]).status.success());
    assert_eq!(
        guest_state(&netns, &ip).map(|s| boot_id(&s)),
        Some(boot_id(&before))
    );

    node.start();
    let restored = eventually(Duration::from_secs(60), || {
        vm(&node).is_some_and(|v| v["state"] == "running")
    });
    assert!(
        restored,
        "web-1 not running after the restart:\n{}",
        node.journal()
    );
    let published = eventually(Duration::from_secs(60), || {
        node.json(&["services", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "web-1" && !s["providers"].as_array().unwrap().is_empty())
    });
    assert!(
        published,
        "web-1 not published after the restart:\n{}",
        node.journal()
    );
    let consumptions = node.json(&["status", "--json"])["consumptions"].clone();
    assert!(
        consumptions
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["service"] == "web-1"
                && c["listen"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!(":{local_port}"))),
        "consumption not back on port {local_port}: {consumptions}"
    );
    let mut after = None;
    assert!(
        eventually(Duration::from_secs(60), || {
            after = http(local_port);
            after.is_some()
        }),
        "port {local_port} does not reach the guest after the restart:\n{}",
        node.journal()
    );
    assert_eq!(
        boot_id(&after.unwrap()),
        boot_id(&before),
        "the guest rebooted"
    );
    assert_eq!(qemu(), qemu_before, "QEMU was replaced");
}
