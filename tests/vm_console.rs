//! `peervisor vm console` and the full-screen console's keys for it (`S`,
//! the serial console; `v`, the boot log): typing into a real guest's serial
//! console and reading its answer, on the VM's own host and from another peer
//! over the overlay (with the control role; without it the host refuses,
//! naming itself and the role, and the full-screen console stays up),
//! counted in the host's per-peer stream limit while attached. The boot log
//! still reaches its file, and the console's `v` shows it.

mod common;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::guests::{Rig, boot};
use common::tmux::Tmux;
use common::{NodeOptions, TestNode, eventually, stderr};

const BIN: &str = env!("CARGO_BIN_EXE_peervisor");

/// A `vm console` session with piped stdin and stdout.
struct Session {
    child: Child,
    stdin: ChildStdin,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Session {
    fn open(node: &TestNode, vm: &str) -> Session {
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(node.data_dir())
            .args(["vm", "console", vm])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("peervisor vm console");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    return;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Session {
            child,
            stdin,
            output,
        }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Types `line` (again every few seconds: the shell may still be
    /// starting) until `answer` shows in what the guest printed.
    fn ask(&mut self, line: &str, answer: &str) -> bool {
        let mut typed_at: Option<Instant> = None;
        eventually(Duration::from_secs(60), || {
            if typed_at.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                let _ = self.stdin.write_all(format!("{line}\n").as_bytes());
                let _ = self.stdin.flush();
                typed_at = Some(Instant::now());
            }
            self.output().contains(answer)
        })
    }

    /// Ctrl-] detaches; the command ends by itself.
    fn detach(mut self) -> bool {
        let _ = self.stdin.write_all(&[0x1d]);
        let _ = self.stdin.flush();
        let ended = eventually(Duration::from_secs(20), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        let _ = self.child.kill();
        let _ = self.child.wait();
        ended
    }
}

/// The full-screen console attached to `node`, in a tmux of its own.
struct Screen {
    tmux: Tmux,
    _home: tempfile::TempDir,
}

impl Screen {
    fn open(tag: &str, node: &TestNode) -> Screen {
        Screen::run(
            tag,
            &format!("{BIN} --attach {}", node.data_dir().display()),
        )
    }

    /// The console running `command` (`peervisor --attach DIR`, or
    /// `peervisor --embed ...` with its node inside).
    fn run(tag: &str, command: &str) -> Screen {
        // The user's keymap and themes stay out of it.
        let home = tempfile::tempdir().unwrap();
        let command = format!(
            "env XDG_CONFIG_HOME={h} TERM=xterm-256color PEERVISOR_LOG=info,libp2p=warn \
             {command} 2>{h}/console.err; echo CONSOLE-EXITED $?; sleep 30",
            h = home.path().display(),
        );
        let tmux = Tmux::start(tag, 160, 44, &command);
        Screen { tmux, _home: home }
    }

    fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        self.tmux.wait_for(what, Duration::from_secs(60), check)
    }

    /// `S` on the selected VM: the console steps aside, the escape is shown,
    /// a command typed into the guest's shell is answered, Ctrl-] brings the
    /// console back (redrawn, saying so).
    fn console_answers(&self, vm: &str, question: &str, answer: &str) {
        self.tmux.keys(&["S"]);
        let banner = format!(
            "Connected to the console of {vm} (detach: Ctrl-], back to the peervisor console)"
        );
        self.wait_for("the escape banner", |s| s.contains(&banner));
        let mut typed_at: Option<Instant> = None;
        let answered = eventually(Duration::from_secs(60), || {
            // Again every few seconds: the shell may still be starting.
            if typed_at.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                self.tmux.type_text(question);
                self.tmux.keys(&["Enter"]);
                typed_at = Some(Instant::now());
            }
            self.tmux.screen().contains(answer)
        });
        assert!(answered, "no {answer}:\n{}", self.tmux.screen());
        self.tmux.keys(&["C-]"]);
        self.wait_for("the console back", |s| {
            s.contains(&format!("Detached from the console of {vm}"))
                && s.contains("VMs (")
                && s.contains("Topology")
                && !s.contains(answer)
        });
    }

    /// `v` on the selected VM: its boot log over the panes; Esc closes it.
    fn boot_log_shows(&self, vm: &str, host: &str, line: &str) -> String {
        self.tmux.keys(&["v"]);
        let screen = self.wait_for("the boot log", |s| {
            s.contains(&format!("Boot log of {vm} on {host}")) || s.contains("failed")
        });
        assert!(
            screen.contains(line),
            "no {line:?} in the boot log:\n{screen}"
        );
        assert!(
            screen.contains(&format!("/var/lib/peervisor/console/{vm}.log")),
            "{screen}"
        );
        self.tmux.keys(&["Escape"]);
        let title = format!("Boot log of {vm} on {host}");
        self.wait_for("the boot log closed", |s| !s.contains(&title));
        screen
    }
}

/// The status line: what is between the panes' last border and the key bar
/// (wrapped lines joined again).
fn status_line(screen: &str) -> String {
    let lines: Vec<&str> = screen.lines().collect();
    let bottom = lines.iter().rposition(|l| l.starts_with('╰')).unwrap_or(0);
    let keys = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .unwrap_or(0);
    lines[bottom + 1..keys.max(bottom + 1)]
        .iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn vm_console_answers_typed_commands_here_and_from_another_peer() {
    let rig = Rig::new("vcon");
    let a = rig.node("peer-a", None, &[]);
    // One open stream per peer on B: a console is counted in it.
    let b = rig.node("peer-b", Some(&a), &["--peer-max-streams", "1"]);
    assert!(
        eventually(Duration::from_secs(30), || a.connected_peers()
            == ["peer-b"]),
        "overlay did not form"
    );
    boot(&b, &rig.netns, "web-1", &[]);

    // On its own host.
    let mut local = Session::open(&b, "web-1");
    assert!(
        local.ask("echo pv-$((6*7))", "pv-42"),
        "no answer from the guest's shell on B: {:?}\n{}",
        local.output(),
        b.log()
    );
    assert!(local.detach(), "Ctrl-] did not detach");

    // The full-screen console on B: S attaches to web-1 (selected: the only
    // VM), Ctrl-] comes back; v shows its boot log.
    let on_b = Screen::open("vconb", &b);
    on_b.wait_for("web-1 running", |s| {
        s.lines()
            .any(|l| l.contains("web-1") && l.contains("running"))
    });
    on_b.console_answers("web-1", "echo pv-$((9*9))", "pv-81");
    // The guest boots with `quiet`: its init's lines, no kernel chatter.
    let log = on_b.boot_log_shows("web-1", "peer-b", "peervisor-guest: ready");
    assert!(log.contains("peervisor-guest: name=web-1"), "{log}");
    on_b.tmux.quit();

    // From peer-a, which peer-b does not let control it: refused.
    assert!(
        eventually(Duration::from_secs(30), || a.peer("peer-b")["vms"]
            .as_array()
            .is_some_and(|v| v.iter().any(|n| n == "web-1"))),
        "A never heard of web-1"
    );
    let out = a.cli(&["vm", "console", "web-1"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "console without the role: {err}");
    assert!(
        err.contains("peer-b refuses the console of web-1") && err.contains("control role"),
        "{err}"
    );

    // A's full-screen console: the overlay's VMs (a), web-1 on peer-b
    // selected; S is refused on the status line, the console stays; v shows
    // the boot log (every member observes).
    let on_a = Screen::open("vcona", &a);
    on_a.wait_for("the console", |s| s.contains("VMs (this peer"));
    on_a.tmux.keys(&["a"]);
    on_a.wait_for("web-1 on peer-b", |s| {
        s.contains("VMs (overlay")
            && s.lines()
                .any(|l| l.contains("web-1") && l.contains("peer-b"))
    });
    on_a.tmux.keys(&["S"]);
    let screen = on_a.wait_for("the refusal on the status line", |s| {
        status_line(s).contains("Console of web-1 failed")
    });
    let status = status_line(&screen);
    assert!(
        status.contains("peer-b refuses the console of web-1") && status.contains("control role"),
        "{status}"
    );
    assert!(
        screen.contains("VMs (overlay") && screen.contains("Topology"),
        "{screen}"
    );
    on_a.boot_log_shows("web-1", "peer-b", "peervisor-guest: ready");

    // With the role, through the overlay.
    b.allow_control(&a);
    let mut remote = Session::open(&a, "web-1");
    assert!(
        remote.ask("echo pv-$((7*8))", "pv-56"),
        "no answer from the guest's shell through the overlay: {:?}\n{}",
        remote.output(),
        a.log()
    );
    // A second console from A while this one is attached: over A's limit on B.
    let out = a.cli(&["vm", "console", "web-1"]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "a second console over the limit: {err}"
    );
    assert!(
        err.contains(
            "peer-b refuses the console of web-1: too many open streams from you (at most 1)"
        ),
        "{err}"
    );
    assert!(remote.detach(), "Ctrl-] did not detach");
    // Detached, the stream no longer counts.
    let mut again = Session::open(&a, "web-1");
    assert!(
        again.ask("echo pv-$((8*9))", "pv-72"),
        "no console after the first detached: {:?}\n{}",
        again.output(),
        b.log()
    );
    assert!(again.detach(), "Ctrl-] did not detach");
    // And from A's full-screen console.
    on_a.console_answers("web-1", "echo pv-$((9*11))", "pv-99");

    // The console with its node inside (`peervisor` without --attach, how an
    // operator usually starts it; `Backend::Embedded` opens the stream
    // itself): peer-c, granted control by peer-b, attaches to web-1 with S.
    let mut on_c = None;
    let c = TestNode::embedded(
        NodeOptions {
            nick: "peer-c",
            key: &rig.key,
            bootstrap: Some(a.port),
            // It hosts nothing: no libvirt daemon of its own to leave behind.
            hypervisor: Some("test:///default"),
            guest_netns: &rig.netns.name,
            extra: &[],
        },
        |command| on_c = Some(Screen::run("vconc", command)),
    );
    let on_c = on_c.unwrap();
    b.allow_control(&c);
    on_c.wait_for("the embedded console", |s| {
        s.contains("VMs (this peer") && s.contains("peer peer-c")
    });
    on_c.tmux.keys(&["a"]);
    on_c.wait_for("web-1 on peer-b", |s| {
        s.contains("VMs (overlay")
            && s.lines()
                .any(|l| l.contains("web-1") && l.contains("peer-b"))
    });
    // libvirt's test driver lists a VM "test" of its own: web-1 alone.
    on_c.tmux.keys(&["/"]);
    on_c.tmux.type_text("web-1");
    on_c.tmux.keys(&["Enter"]);
    on_c.wait_for("web-1 alone", |s| {
        // The VMs pane's selected row (the services pane has a web-1 too).
        s.lines()
            .any(|l| l.contains("▸web-1") && l.contains("running") && l.contains("peer-b"))
    });
    on_c.console_answers("web-1", "echo pv-$((5*13))", "pv-65");
    on_c.tmux.quit();
    let screen = on_c.tmux.screen();
    assert!(screen.contains("CONSOLE-EXITED 0"), "{screen}");
    // Attached when the VM stops: the console comes back by itself and says so.
    on_a.tmux.keys(&["S"]);
    on_a.wait_for("the escape banner", |s| {
        s.contains("Connected to the console of web-1 (detach: Ctrl-]")
    });
    let out = b.cli(&["vm", "stop", "web-1", "--hard"]);
    assert!(out.status.success(), "vm stop: {}", stderr(&out));
    let screen = on_a.wait_for("the console back after the VM stopped", |s| {
        status_line(s).contains("console of web-1") && s.contains("Topology")
    });
    assert!(
        status_line(&screen).contains("The console of web-1 closed"),
        "{screen}"
    );
    on_a.tmux.quit();

    // The boot log still goes to its file.
    let log = std::fs::read_to_string("/var/lib/peervisor/console/web-1.log").unwrap_or_default();
    assert!(log.contains("peervisor-guest: ready"), "boot log: {log}");
}
