//! `peervisor doctor` as an operator runs it: on a healthy running node it
//! passes (exit 0); a network key others can read, a listen port taken by
//! another program, an unreachable bootstrap peer and a bad config file each
//! fail it (exit 1) with a line naming the file, port or peer and a fix.

mod common;

use std::process::{Command, Output};

use common::{BIN, free_port, fresh_key, node, stderr, stdout};
use serde_json::Value;

fn doctor(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("doctor")
        .env_remove("PEERVISOR_NETWORK_KEY")
        .env_remove("PEERVISOR_CONFIG")
        .output()
        .expect("run peervisor doctor")
}

/// The line of check `name` ("ok    ports  ...") with its fix line, if any.
fn line(out: &str, name: &str) -> String {
    let lines: Vec<&str> = out.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.get(6..).is_some_and(|rest| rest.starts_with(name)))
        .unwrap_or_else(|| panic!("no {name} line in:\n{out}"));
    match lines.get(i + 1) {
        Some(next) if next.trim_start().starts_with("fix:") => format!("{}\n{next}", lines[i]),
        _ => lines[i].to_string(),
    }
}

#[test]
fn doctor_passes_on_a_running_node_and_fails_on_a_key_others_can_read() {
    let key = fresh_key();
    let node = node("doc", &key, None);
    let dir = node.data_dir().to_str().unwrap().to_string();
    let key_file = node.data_dir().join("network.key");
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();

    let out = doctor(&["--data-dir", &dir]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(line(&text, "node").starts_with("ok"), "{text}");
    assert!(line(&text, "node").contains("doc"), "{text}");
    assert!(line(&text, "libvirt").contains("test:///default"), "{text}");
    assert!(line(&text, "network key").starts_with("ok"), "{text}");
    assert!(
        line(&text, "ports").contains("listening on /ip4/127.0.0.1/tcp/"),
        "{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");

    // The same as JSON: every check named, with its verdict.
    let out = Command::new(BIN)
        .args(["--data-dir", &dir, "doctor", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("doctor --json prints JSON");
    assert_eq!(json["failed"], 0);
    let names: Vec<&str> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for name in [
        "config",
        "node",
        "data dir",
        "network key",
        "libvirt",
        "ports",
        "peers",
    ] {
        assert!(names.contains(&name), "{name} missing from {json}");
    }

    // Readable by others: a failure naming the file and the fix.
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let out = doctor(&["--data-dir", &dir]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let key_line = line(&text, "network key");
    assert!(key_line.starts_with("FAIL"), "{text}");
    assert!(key_line.contains("0644"), "{text}");
    assert!(
        key_line.contains(&format!("chmod 600 {}", key_file.display())),
        "{text}"
    );
    assert!(
        stderr(&out).contains("1 check(s) failed"),
        "{}",
        stderr(&out)
    );
}

/// A node config listening on `port` and joining through `bootstrap`, both on loopback.
fn write_config(path: &std::path::Path, port: u16, bootstrap: u16) {
    let text = format!(
        "listen = [\"/ip4/127.0.0.1/tcp/{port}\"]\n\
         bootstrap = [\"/ip4/127.0.0.1/tcp/{bootstrap}\"]\n\
         hypervisor = \"test:///default\"\n"
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn doctor_fails_on_a_taken_port_and_an_unreachable_bootstrap_peer() {
    let dir = tempfile::tempdir().unwrap();
    // Another program holds the port the config says to listen on.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // Nothing listens on the bootstrap peer's port.
    let closed = free_port();
    let config = dir.path().join("config.toml");
    write_config(&config, port, closed);
    let data = dir.path().join("data");
    let args = [
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    let out = doctor(&args);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let ports = line(&text, "ports");
    assert!(ports.starts_with("FAIL"), "{text}");
    assert!(
        ports.contains(&format!("127.0.0.1:{port} in use")),
        "{text}"
    );
    let peers = line(&text, "peers");
    assert!(peers.starts_with("FAIL"), "{text}");
    assert!(
        peers.contains(&format!("/ip4/127.0.0.1/tcp/{closed}")),
        "{text}"
    );
    assert!(
        stderr(&out).contains("2 check(s) failed"),
        "{}",
        stderr(&out)
    );

    // Freed port and a bootstrap peer that accepts: both pass.
    drop(taken);
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = peer.local_addr().unwrap().port();
    write_config(&config, port, open);
    let out = doctor(&args);
    let text = stdout(&out);
    assert!(line(&text, "ports").starts_with("ok"), "{text}");
    assert!(line(&text, "peers").starts_with("ok"), "{text}");
}

#[test]
fn doctor_names_a_bad_config_file_and_goes_on_checking() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "nick = \"a\"\nlisen = \"/ip4/0.0.0.0/tcp/1\"\n").unwrap();
    let data = dir.path().join("data");
    let out = doctor(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let bad = line(&text, "config");
    assert!(bad.starts_with("FAIL"), "{text}");
    // file:line: and the key
    assert!(bad.contains(&format!("{}:2:", config.display())), "{text}");
    assert!(bad.contains("lisen"), "{text}");
    // The other checks still ran, the log one naming the console's log file.
    assert!(line(&text, "data dir").starts_with("warn"), "{text}");
    assert!(
        line(&text, "log").contains(&format!("{}", data.join("node.log").display())),
        "{text}"
    );
}
