//! The trim notice against a real node: a member that says "I am trimming my
//! connection to you" (`ControlRequest::Trimming`) asks the node to take the
//! next close of that connection for no departure. A member that sends it and
//! then falls silent, without closing (`peervisor dev trim-notice`, a hidden
//! tool that joins as a member with an identity of its own, then stopped with
//! SIGSTOP: its sockets stay open, nothing answers), must still be found gone
//! and its service dropped: the notice excuses a close, never a silence. The
//! member announces its service with a three-hour record lifetime, so only the
//! node's departure report can drop it within the test's bound.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{BIN, eventually, fresh_key, node, scaled};
use serde_json::Value;

const SERVICE: &str = "trim-svc";

/// The `dev trim-notice` process: continued and killed on drop.
struct Member(Child);

impl Member {
    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_member_that_says_it_trims_and_then_falls_silent_is_still_reported_gone() {
    let key = fresh_key();
    let host = node("host", &key, None);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .env("PEERVISOR_NETWORK_KEY", &key)
        .args(["dev", "trim-notice", "--service", SERVICE, "--to"])
        .arg(host.peer_id())
        .args(["--bootstrap", &format!("/ip4/127.0.0.1/tcp/{}", host.port)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn peervisor dev trim-notice");
    let stdout = child.stdout.take().unwrap();
    let member = Member(child);

    // Its one line: the host's answer to the notice.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(scaled(Duration::from_secs(60)))
        .unwrap_or_else(|_| panic!("no answer to the trim notice:\n{}", host.log()));
    let report: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("dev trim-notice printed {line:?}: {e}"));
    assert_eq!(
        report["answer"], "Ack",
        "the host did not take the notice: {report}"
    );

    assert!(
        eventually(Duration::from_secs(60), || !host
            .providers(SERVICE)
            .is_empty()),
        "the host never listed the member's service:\n{}",
        host.log()
    );
    let silent_at = Instant::now();
    member.signal("-STOP");
    // Silence is noticed in 10-14 s (pings every 4 s), then one check dial
    // (12 s here unloaded); the bound is within nextest's 120 s for the test.
    assert!(
        eventually(Duration::from_secs(60), || host
            .providers(SERVICE)
            .is_empty()),
        "a member silent for {:?} after its trim notice is still listed: the notice \
         excused a silence\n{}",
        silent_at.elapsed(),
        host.log()
    );
    eprintln!(
        "dropped {:?} after the member fell silent",
        silent_at.elapsed()
    );
}
