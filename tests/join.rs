//! Joining hosts by invitation: A invites, B and C join with their tokens and
//! start from the config `join` wrote, and B migrates a real guest into C (and C
//! back into B) with no `peers allow` typed anywhere. A used, an expired and a
//! revoked token are refused, each saying why.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::guests::{Rig, boot, guest_state};
use common::{BIN, NodeOptions, TestNode, eventually, fresh_key, node, stderr, stdout};
use serde_json::Value;

/// `peervisor invite ARGS` on `node`: the token (stdout's one line).
fn invite(node: &TestNode, args: &[&str]) -> String {
    let out = node.cli(&[&["invite"], args].concat());
    assert!(out.status.success(), "invite: {}", stderr(&out));
    let token = stdout(&out).trim().to_string();
    assert_eq!(token.lines().count(), 1, "{token}");
    token
}

fn join(data_dir: &Path, config: &Path, token: &str) -> Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(config)
        .args(["join", token])
        .output()
        .unwrap()
}

/// A node started from the config `peervisor join` wrote (its bootstrap and
/// network key come from the token: the key it would otherwise get is wrong).
fn joined(rig: &Rig, nick: &str, token: &str, configs: &Path) -> TestNode {
    let config = configs.join(format!("{nick}.toml"));
    let config_arg = config.to_str().unwrap().to_string();
    let wrong_key = fresh_key();
    TestNode::start_prepared(
        NodeOptions {
            nick,
            key: &wrong_key,
            bootstrap: None,
            hypervisor: None,
            guest_netns: &rig.netns.name,
            extra: &["--image-dir", &rig.image_dir, "--config", &config_arg],
        },
        None,
        &["127.0.0.1"],
        &[],
        |dir| {
            let out = join(dir, &config, token);
            assert!(out.status.success(), "{nick} join: {}", stderr(&out));
            assert!(
                stdout(&out).contains("joined the overlay of"),
                "{}",
                stdout(&out)
            );
        },
    )
}

fn connected(a: &TestNode, b: &TestNode) -> bool {
    a.connected_peers().contains(&b.nick) && b.connected_peers().contains(&a.nick)
}

fn migrate(from: &TestNode, vm: &str, to: &TestNode) {
    let out = from.cli(&["migrate", vm, "--to", &to.nick, "--wait"]);
    assert!(
        out.status.success(),
        "migrate {vm} {} -> {}: {}\n{}",
        from.nick,
        to.nick,
        stderr(&out),
        to.log()
    );
    assert!(
        eventually(Duration::from_secs(30), || to
            .vm(vm)
            .is_some_and(|v| v["state"] == "running")),
        "{vm} not running on {}",
        to.nick
    );
}

#[test]
fn vm_hosts_joined_by_invitation_migrate_into_each_other_without_peers_allow() {
    let rig = Rig::new("join");
    let a = rig.node("peer-a", None, &[]);
    let token_b = invite(&a, &["--role", "control", "--expires", "1h"]);
    let token_c = invite(&a, &["--role", "control", "--expires", "1h"]);
    let configs = tempfile::tempdir().unwrap();
    let b = joined(&rig, "peer-b", &token_b, configs.path());
    let c = joined(&rig, "peer-c", &token_c, configs.path());
    assert!(
        eventually(Duration::from_secs(60), || connected(&b, &c)),
        "B and C never connected: {:?} {:?}",
        b.connected_peers(),
        c.connected_peers()
    );

    let ip = boot(&b, &rig.netns, "web-1", &[]);
    let before = guest_state(&rig.netns, &ip).expect("guest answers");
    migrate(&b, "web-1", &c);
    // B learned of C from A (the group's authority) after C joined.
    assert!(
        eventually(Duration::from_secs(30), || {
            let out = b.cli(&["peers", "list", "--json"]);
            stdout(&out).contains(&c.peer_id())
        }),
        "B never granted C control"
    );
    migrate(&c, "web-1", &b);
    let after = guest_state(&rig.netns, &ip).expect("guest answers after two migrations");
    let boot_id = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("boot_id="))
            .map(String::from)
    };
    assert_eq!(boot_id(&after), boot_id(&before), "the guest rebooted");
    for node in [&a, &b, &c] {
        let log = node.log();
        assert!(!log.contains("peers allow"), "{}", node.nick);
    }

    // B's token again, from another host: A refuses it, naming who used it.
    let other = tempfile::tempdir().unwrap();
    let out = join(other.path(), &other.path().join("config.toml"), &token_b);
    assert!(!out.status.success(), "a used token was accepted");
    let err = stderr(&out);
    assert!(
        err.contains("refused: the invitation was already used, by") && err.contains(&b.peer_id()),
        "{err}"
    );
    assert!(
        !other.path().join("config.toml").exists(),
        "a refused join wrote a config"
    );
}

#[test]
fn expired_and_revoked_invitations_are_refused_saying_why() {
    let key = fresh_key();
    let a = node("peer-a", &key, None);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");

    let expiring = invite(&a, &["--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let out = join(dir.path(), &config, &expiring);
    assert!(!out.status.success(), "an expired token was accepted");
    assert!(
        stderr(&out).contains("this invitation cannot be used: it expired at"),
        "{}",
        stderr(&out)
    );

    let out = a.cli(&["invite", "--json"]);
    let reply: Value = serde_json::from_slice(&out.stdout).expect("invite --json");
    let (token, id) = (
        reply["token"].as_str().unwrap(),
        reply["id"].as_str().unwrap(),
    );
    let out = a.cli(&["invite", "--revoke", id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = join(dir.path(), &config, token);
    assert!(!out.status.success(), "a revoked token was accepted");
    assert!(
        stderr(&out).contains("refused: the invitation was revoked"),
        "{}",
        stderr(&out)
    );
    assert!(!config.exists(), "a refused join wrote a config");

    let list = stdout(&a.cli(&["invite", "--list"]));
    assert!(
        list.contains("expired") && list.contains("revoked"),
        "{list}"
    );
}
