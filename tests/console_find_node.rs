//! Which node `peervisor` (no command) opens, in tmux as an operator over SSH
//! would see it: the node running on this host when there is one (found without
//! being named), else a node embedded in the console, whose log also goes to
//! DATA_DIR/node.log.

mod common;

use std::time::Duration;

use common::tmux::Tmux;
use common::{BIN, TestNode, eventually, free_port, fresh_key, node};

/// How long the console may take to show on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

/// The console command in a shell that stays to show how it ended.
fn console(env: &str, args: &str) -> String {
    format!("env {env} TERM=xterm-256color {BIN} {args}; echo EXITED $?; sleep 60")
}

#[test]
fn console_without_a_running_node_embeds_one_and_keeps_its_log_in_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("network.key");
    std::fs::write(&key, fresh_key()).unwrap();
    let args = format!(
        "--data-dir {} --hypervisor test:///default --listen /ip4/127.0.0.1/tcp/{} --network-key {}",
        data.display(),
        free_port(),
        key.display()
    );
    let tmux = Tmux::start("find-embed", 120, 40, &console("", &args));
    tmux.wait_for("the console", WAIT, |s| s.contains("overlay:"));
    assert!(
        data.join("control.sock").exists(),
        "no node embedded on {}",
        data.display()
    );
    let log = data.join("node.log");
    let logged = eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("started"))
    });
    assert!(
        logged,
        "no node.log with the node's start: {:?}",
        std::fs::read_to_string(&log)
    );
    tmux.quit();
    let screen = tmux.screen();
    assert!(screen.contains("EXITED 0"), "{screen}");
    // Named on exit, since the log pane went with the terminal.
    assert!(
        screen.contains(&format!("log: {}", log.display())),
        "the exit does not name {}:\n{screen}",
        log.display()
    );
    assert!(std::fs::read_to_string(&log).unwrap().lines().count() >= 2);
}

/// The console shows the running node (its nick, "running", in the header; an
/// embedded one would show the host name), keeps its own log in the node's data
/// dir, and quitting it leaves the node running.
fn attached_to(tmux: &Tmux, node: &TestNode) {
    tmux.wait_for("the console on the running node", WAIT, |s| {
        s.contains("running (12D3") || s.contains("EXITED")
    });
    assert!(!tmux.screen().contains("EXITED"), "{}", tmux.screen());
    tmux.quit();
    let screen = tmux.screen();
    assert!(screen.contains("EXITED 0"), "{screen}");
    // The console's own log, in the node's data dir, named on exit.
    assert!(
        screen.contains("the console's log: ") && screen.contains("console.log"),
        "{screen}"
    );
    assert!(node.data_dir().join("console.log").exists(), "{screen}");
    assert!(
        node.cli(&["status"]).status.success(),
        "the node stopped with the console"
    );
}

fn test_node() -> TestNode {
    node("running", &fresh_key(), None)
}

#[test]
fn console_attaches_to_the_node_running_on_its_data_dir() {
    let node = test_node();
    let dir = node.data_dir().display().to_string();
    attached_to(
        &Tmux::start(
            "find-dir",
            120,
            40,
            &console("", &format!("--data-dir {dir}")),
        ),
        &node,
    );
    attached_to(
        &Tmux::start(
            "find-flag",
            120,
            40,
            &console("", &format!("--data-dir {dir} --attach")),
        ),
        &node,
    );
}

/// No data dir named: the console looks where a user's own node lives.
#[test]
fn console_finds_the_users_running_node_unnamed() {
    let node = test_node();
    // XDG_DATA_HOME/peervisor is where a user's node lives: point it at the node.
    let xdg = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(node.data_dir(), xdg.path().join("peervisor")).unwrap();
    let env = format!(
        "-u PEERVISOR_DATA_DIR XDG_DATA_HOME={}",
        xdg.path().display()
    );
    attached_to(
        &Tmux::start("find-unnamed", 120, 40, &console(&env, "--attach")),
        &node,
    );
    // Should it embed a node instead (the failure), that one hosts nothing real.
    let harmless = format!(
        "--hypervisor test:///default --guest-netns unused --listen /ip4/127.0.0.1/tcp/{}",
        free_port()
    );
    attached_to(
        &Tmux::start("find-plain", 120, 40, &console(&env, &harmless)),
        &node,
    );
}
