//! `peervisor vm console`: typing into a real guest's serial console and
//! reading its answer, on the VM's own host and from another peer over the
//! overlay (with the control role; without it the host refuses, naming
//! itself and the role), counted in the host's per-peer stream limit while
//! attached. The boot log still reaches its file.

mod common;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::guests::{Rig, boot};
use common::{TestNode, eventually, stderr};

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

    // The boot log still goes to its file.
    let log = std::fs::read_to_string("/var/lib/peervisor/console/web-1.log").unwrap_or_default();
    assert!(log.contains("peervisor-guest: ready"), "boot log: {log}");
}
