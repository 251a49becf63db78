//! The node's config file as an operator writes it: a node runs from a file with
//! every key set (a flag on the command line still wins), and a file with a bad
//! key or value stops the node at start naming the file, the line and the key.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{BIN, eventually, free_port, fresh_key, stderr};
use serde_json::Value;

/// The keys a config file may hold, read from `peervisor node --help`: every
/// flag of the node without `--` (the global --config and --help are not keys).
fn keys_from_help() -> Vec<String> {
    let out = Command::new(BIN).args(["node", "--help"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split([' ', '<']).next())
        .filter(|k| !["config", "help"].contains(k))
        .map(String::from)
        .collect()
}

fn node_with(config: &Path, flags: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["node", "--config"]).arg(config).args(flags);
    cmd.env_remove("PEERVISOR_DATA_DIR")
        .env_remove("PEERVISOR_DISK_DIR")
        .env_remove("PEERVISOR_NETWORK_KEY");
    cmd
}

fn cli(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn node_runs_from_a_config_with_every_key_and_a_flag_wins() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("network.key");
    std::fs::write(&key, fresh_key()).unwrap();
    let port = free_port();
    let text = format!(
        r#"data-dir = {data:?}
nick = "from-file"
listen = ["/ip4/127.0.0.1/tcp/{port}"]
bootstrap = ["/ip4/127.0.0.1/tcp/{other}"]
network-key = {key:?}
mdns = false
relay-server = true
no-relay-client = true
hypervisor = "test:///default"
accel = "tcg"
guest-netns = "pvt-config-{pid}"
image-dir = {images:?}
disk-dir = {disks:?}
no-accept-migrations = true
lend-vcpus = 3
lend-memory = "3GiB"
lend-disk = "7GiB"
max-migrations = 5
migration-transport = "tunnelled"
stats-interval = 0.5
stats-history = 30
destroy-vms-on-exit = true
yarn = ["http://127.0.0.1:{other}"]
spark = ["http://127.0.0.1:{other}"]
peer-control-rate = 7
peer-stream-rate = 70
peer-max-streams = 700
max-connections = 64
max-connections-per-peer = 2
max-pending-connections = 16
provision = true
provision-high = 90
provision-low = 10.5
provision-after = 30
default-network = "default"
"#,
        other = free_port(),
        pid = std::process::id(),
        images = dir.path().join("images"),
        disks = dir.path().join("disks"),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &text).unwrap();
    // One of each pair of keys that exclude each other.
    let alternatives = [("default-bridge", "default-network")];
    for key in keys_from_help() {
        let has = |key: &str| text.lines().any(|l| l.starts_with(&format!("{key} = ")));
        let alternative = alternatives
            .iter()
            .find(|(a, _)| *a == key)
            .map(|(_, b)| *b);
        assert!(
            has(&key) || alternative.is_some_and(has),
            "the test's config lacks `{key}`"
        );
    }
    let check = Command::new(BIN)
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(check.status.success(), "config check: {}", stderr(&check));

    let mut node = node_with(&config, &["--nick", "from-flag"])
        .stderr(std::fs::File::create(dir.path().join("node.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default();
    let mut status = Value::Null;
    let ready = eventually(Duration::from_secs(60), || {
        let out = cli(&data, &["status", "--json"]);
        if out.status.success() {
            status = serde_json::from_slice(&out.stdout).unwrap();
        }
        out.status.success() && status["local"]["lending"].is_object()
    });
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(node.id() as i32, libc::SIGTERM) };
    let _ = node.wait();
    assert!(
        ready,
        "node from the config never answered at {}:\n{}",
        data.display(),
        log()
    );

    let local = &status["local"];
    assert_eq!(local["nick"], "from-flag", "the flag wins over the file");
    assert!(
        local["listen_addrs"]
            .to_string()
            .contains(&format!("/tcp/{port}")),
        "{local}"
    );
    assert_eq!(local["hypervisor"], "test:///default");
    assert_eq!(local["accel"], "tcg");
    let lending = &local["lending"];
    assert_eq!(
        (
            &lending["vcpus"],
            &lending["memory_mib"],
            &lending["disk_mib"],
            &lending["max_migrations"]
        ),
        (
            &Value::from(3),
            &Value::from(3072),
            &Value::from(7168),
            &Value::from(5)
        ),
        "{lending}"
    );
    let kinds: Vec<&str> = status["job_sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["yarn", "spark"], "{}", status["job_sources"]);
    assert!(
        log().contains(&format!("config: {}", config.display())),
        "{}",
        log()
    );
}

#[test]
fn node_refuses_each_kind_of_bad_config_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    let shown = config.display().to_string();
    // (file, what the error starts with after "error: ")
    let cases = [
        (
            "nick = \"a\"\nlisen = [\"/ip4/127.0.0.1/tcp/1\"]\n",
            ":2: unknown key `lisen`",
        ),
        (
            "nick = \"a\"\n\nmax-connections = 3\n",
            ":3: key `max-connections`: invalid value '3'",
        ),
        (
            "max-connections = \"many\"\n",
            ":1: key `max-connections`: invalid value 'many'",
        ),
        (
            "listen = [\"tcp://0.0.0.0:7470\"]\n",
            ":1: key `listen`: invalid value 'tcp://0.0.0.0:7470'",
        ),
        ("mdns = \"yes\"\n", ":1: key `mdns`: expects true or false"),
        (
            "nick = [\"a\", \"b\"]\n",
            ":1: key `nick`: expects one value, not an array",
        ),
        ("accel = \"xen\"\n", ":1: key `accel`: invalid value 'xen'"),
        (
            "provision-low = 120\n",
            ":1: key `provision-low`: invalid value '120'",
        ),
        (
            "lend-memory = \"lots\"\n",
            ":1: key `lend-memory`: invalid value 'lots'",
        ),
        ("[node]\nnick = \"a\"\n", ":1: unknown key `node`"),
        ("nick = \"unterminated\n", ": TOML parse error at line 1"),
    ];
    for (text, expected) in cases {
        std::fs::write(&config, text).unwrap();
        let out = node_with(&config, &[])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{text:?} was accepted");
        assert!(
            err.starts_with(&format!("error: {shown}{expected}")),
            "{text:?}\n  got: {err}\n want: error: {shown}{expected}"
        );
        assert!(
            !dir.path().join("data").exists(),
            "{text:?}: the node started"
        );
        let check = Command::new(BIN)
            .args(["config", "check"])
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(stderr(&check), err, "config check says the same");
    }
}
