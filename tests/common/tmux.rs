//! A tmux server of the test's own, to drive the console as an operator's
//! terminal would: keys in with `send-keys`, the screen out with `capture-pane`.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SESSION: &str = "console";

/// A tmux server of our own (its own socket), killed on drop. Killing it
/// hangs up the console, which then quits and stops every demo peer and VM.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// A session of `width` x `height` running `command` (a shell command line).
    pub fn start(tag: &str, width: u16, height: u16, command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("pvtest-{tag}-{}", std::process::id()),
        };
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            SESSION,
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux")
    }

    /// Keys as tmux names them: "m", "Enter", "Escape", "BTab", "Tab".
    pub fn keys(&self, keys: &[&str]) {
        for k in keys {
            let out = self.run(&["send-keys", "-t", SESSION, k]);
            assert!(out.status.success(), "send-keys {k}");
            // The console handles one key per event; give each a moment.
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    pub fn type_text(&self, text: &str) {
        let out = self.run(&["send-keys", "-t", SESSION, "-l", text]);
        assert!(out.status.success());
        std::thread::sleep(Duration::from_millis(300));
    }

    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", SESSION]).stdout)
            .into_owned()
    }

    /// `q`, then wait until the command has exited (the pane shows EXITED).
    pub fn quit(&self) {
        self.keys(&["q"]);
        let exited = |s: &str| s.contains("EXITED");
        self.wait_for("the console to quit", Duration::from_secs(30), exited);
    }

    pub fn alive(&self) -> bool {
        self.run(&["has-session", "-t", SESSION]).status.success()
    }

    /// Wait until the screen satisfies `check`; panic with the screen if not.
    pub fn wait_for(&self, what: &str, limit: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Once the program has exited, the pane only sleeps: no need to wait.
        if self.alive() && !self.screen().contains("EXITED") {
            // Quit politely first, so the demo stops its peers and VMs.
            let _ = self.run(&["send-keys", "-t", SESSION, "q"]);
            let deadline = Instant::now() + Duration::from_secs(40);
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let _ = self.run(&["kill-server"]);
        // tmux leaves its socket file behind.
        // SAFETY: getuid(2) cannot fail.
        let uid = unsafe { libc::getuid() };
        let dir = std::env::var("TMUX_TMPDIR").unwrap_or_else(|_| "/tmp".into());
        let _ = std::fs::remove_file(format!("{dir}/tmux-{uid}/{}", self.socket));
    }
}
