//! The console end to end: the real binary runs `peervisor demo` (real peers,
//! libvirt daemons and a guest) inside a private tmux server; the test types
//! keys with `send-keys` and reads the screen with `capture-pane`, as an
//! operator would see it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::tmux::Tmux;
use common::{BIN, NodeOptions, TestNode, fresh_key, image_dir};

const WIDTH: u16 = 120;
const HEIGHT: u16 = 36;

fn demo_command(home: &Path, images: &Path) -> String {
    // XDG dirs in a temp dir: the demo's data and any user keymap/theme stay
    // out of the operator's. The shell keeps the pane (and stderr) visible if
    // the demo fails early.
    format!(
        "env XDG_DATA_HOME={h}/data XDG_CONFIG_HOME={h}/config TERM=xterm-256color \
         PEERVISOR_LOG=info,libp2p=warn {bin} demo --peers 2 --image-dir {img} \
         2>{h}/demo.err; echo DEMO-EXITED $?; sleep 30",
        h = home.display(),
        bin = BIN,
        img = images.display()
    )
}

#[test]
fn vm_console_in_tmux_navigates_filters_helps_and_migrates_with_m() {
    let images = image_dir();
    let home = tempfile::tempdir().unwrap();
    let tmux = Tmux::start(
        "console",
        WIDTH,
        HEIGHT,
        &demo_command(home.path(), &images),
    );
    let err_log = || std::fs::read_to_string(home.path().join("demo.err")).unwrap_or_default();

    // The demo starts two peers and boots web-1 on peer-a; the console attaches.
    let screen = tmux.wait_for("web-1 running on peer-a", Duration::from_secs(180), |s| {
        s.contains("DEMO-EXITED")
            || (s.contains("peer-a") && s.contains("web-1") && s.contains("running"))
    });
    assert!(
        !screen.contains("DEMO-EXITED"),
        "demo failed:\n{screen}\n{}",
        err_log()
    );
    // 120x36 shows every pane at once.
    for title in [
        "Topology",
        "VMs (this peer",
        "Services (overlay)",
        "Throughput: web-1",
        "Operations",
        "Log",
    ] {
        assert!(screen.contains(title), "no {title:?}:\n{screen}");
    }
    assert!(screen.contains("overlay: 1 peer"), "{screen}");
    tmux.wait_for("peer-b in the topology", Duration::from_secs(20), |s| {
        s.contains("peer-b")
    });

    // Help, generated from the keymap.
    tmux.keys(&["?"]);
    let screen = tmux.wait_for("help", Duration::from_secs(5), |s| s.contains(" Help "));
    assert!(screen.contains("migrate the selected VM"), "{screen}");
    assert!(screen.contains(":consume SERVICE [PORT]"), "{screen}");
    tmux.keys(&["Escape"]);
    tmux.wait_for("help closed", Duration::from_secs(5), |s| {
        !s.contains(" Help ")
    });

    // Focus moves with Tab / Shift-Tab; the key bar follows the pane.
    tmux.keys(&["Tab"]);
    tmux.wait_for("services focused", Duration::from_secs(5), |s| {
        s.contains("c consume")
    });
    tmux.keys(&["BTab"]);
    tmux.wait_for("VMs focused", Duration::from_secs(5), |s| {
        s.contains("m migrate")
    });

    // Filter: nothing matches, then Esc clears it.
    tmux.keys(&["/"]);
    tmux.type_text("zzz");
    let screen = tmux.wait_for("empty filter", Duration::from_secs(5), |s| {
        s.contains("no VM matches the filter")
    });
    assert!(screen.contains("/zzz"), "{screen}");
    tmux.keys(&["Escape"]);
    tmux.wait_for("filter cleared", Duration::from_secs(5), |s| {
        !s.contains("/zzz") && s.contains("web-1")
    });

    // Migrate with m: pick peer-b, confirm.
    tmux.keys(&["m"]);
    let screen = tmux.wait_for("peer picker", Duration::from_secs(5), |s| {
        s.contains("Migrate web-1 to…")
    });
    assert!(screen.contains("peer-b"), "{screen}");
    tmux.keys(&["Enter"]);
    tmux.wait_for("confirm prompt", Duration::from_secs(5), |s| {
        s.contains("Migrate web-1 to peer-b? (y/n)")
    });
    tmux.keys(&["y"]);
    let screen = tmux.wait_for("migration done", Duration::from_secs(120), |s| {
        s.contains("now runs on peer-b") || s.contains("Migration of web-1 failed")
    });
    assert!(
        screen.contains("now runs on peer-b"),
        "migration failed:\n{screen}\n{}",
        err_log()
    );
    // The panes follow: web-1 is gone from this peer, the operation is done,
    // and the overlay view finds it on peer-b.
    tmux.wait_for(
        "VM list and operation updated",
        Duration::from_secs(10),
        |s| {
            s.contains("no VMs on this peer")
                && s.lines()
                    .any(|l| l.contains("web-1") && l.contains("→ peer-b") && l.contains("done"))
        },
    );
    tmux.keys(&["a"]);
    tmux.wait_for("overlay VMs", Duration::from_secs(15), |s| {
        s.contains("VMs (overlay")
            && s.lines()
                .any(|l| l.contains("web-1") && l.contains("peer-b"))
    });

    // q quits; the demo stops its peers and VMs, and the shell says so.
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("demo exit", Duration::from_secs(60), |s| {
        s.contains("DEMO-EXITED")
    });
    assert!(screen.contains("DEMO-EXITED 0"), "{screen}\n{}", err_log());
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains("peervisor-demo"),
        "demo netns left behind"
    );
}

/// Broken user files do not keep the console from starting: it uses the
/// defaults and says which file and line are wrong.
#[test]
fn console_with_a_broken_keymap_and_theme_starts_with_defaults_and_says_why() {
    let key = fresh_key();
    let node = TestNode::start(NodeOptions {
        nick: "solo",
        key: &key,
        bootstrap: None,
        hypervisor: Some("test:///default"),
        guest_netns: "unused",
        extra: &[],
    });
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("peervisor");
    std::fs::create_dir_all(config.join("themes")).unwrap();
    std::fs::write(
        config.join("keymap.toml"),
        "[keys]\nmigrate = [\"m\"]\nteleport = [\"t\"]\n",
    )
    .unwrap();
    std::fs::write(
        config.join("themes/broken.toml"),
        "[styles]\nheader = { fg = \"cyan\" }\nborder = { fg = \"no-such-colour\" }\n",
    )
    .unwrap();
    let tmux = Tmux::start(
        "console",
        WIDTH,
        HEIGHT,
        &format!(
            "env XDG_CONFIG_HOME={} TERM=xterm-256color {BIN} --attach {} --theme broken; \
         echo CONSOLE-EXITED $?; sleep 30",
            home.path().display(),
            node.data_dir().display()
        ),
    );
    let screen = tmux.wait_for(
        "the error on the status line",
        Duration::from_secs(20),
        |s| s.contains("using defaults") || s.contains("CONSOLE-EXITED"),
    );
    for part in [
        "keymap.toml:3: unknown action `teleport`",
        "broken.toml:3: style `border`: bad colour fg = `no-such-colour`",
        "; using the default",
        "peer solo",
    ] {
        assert!(screen.contains(part), "no {part:?}:\n{screen}");
    }
    // The default keys work.
    tmux.keys(&["?"]);
    let screen = tmux.wait_for("help", Duration::from_secs(5), |s| s.contains(" Help "));
    assert!(screen.contains("migrate the selected VM"), "{screen}");
    tmux.keys(&["Escape", "q"]);
    let screen = tmux.wait_for("exit", Duration::from_secs(10), |s| {
        s.contains("CONSOLE-EXITED")
    });
    assert!(screen.contains("CONSOLE-EXITED 0"), "{screen}");
}

/// The console hands the terminal to a session (as `S` does with a VM's
/// serial console) and takes it back even when that session panics: the
/// screen is redrawn, the status line says what happened, and the keys work.
#[test]
fn console_takes_the_screen_back_when_a_handed_over_session_panics() {
    let home = tempfile::tempdir().unwrap();
    let run = |ok: &str| {
        let tmux = Tmux::start(
            "takeover",
            WIDTH,
            HEIGHT,
            &format!(
                "env XDG_CONFIG_HOME={h} TERM=xterm-256color {BIN} --data-dir {h}/data \
                 dev console-takeover {ok} 2>{h}/err; echo CONSOLE-EXITED $?; sleep 30",
                h = home.path().display(),
            ),
        );
        tmux.wait_for(
            "the session on the plain screen",
            Duration::from_secs(30),
            |s| {
                s.contains("dev takeover: the console steps aside")
                    && s.contains("dev takeover: running")
            },
        );
        tmux
    };
    let tmux = run("");
    let screen = tmux.wait_for("the console back", Duration::from_secs(30), |s| {
        s.contains("Topology") && s.contains("the console session failed")
    });
    assert!(screen.contains("panic"), "{screen}");
    assert!(!screen.contains("dev takeover: running"), "{screen}");
    tmux.keys(&["?"]);
    tmux.wait_for("help", Duration::from_secs(10), |s| s.contains(" Help "));
    tmux.keys(&["Escape", "q"]);
    let screen = tmux.wait_for("exit", Duration::from_secs(20), |s| {
        s.contains("CONSOLE-EXITED")
    });
    assert!(screen.contains("CONSOLE-EXITED 0"), "{screen}");
    drop(tmux);
    // A session that ends well: its outcome on the status line.
    let tmux = run("--ok");
    tmux.wait_for("the console back", Duration::from_secs(30), |s| {
        s.contains("Topology") && s.contains("dev takeover: ended")
    });
    tmux.quit();
}
