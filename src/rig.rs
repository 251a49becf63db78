//! What the demo and the benchmarks share to run peervisor on this machine: the
//! guest image built if it is missing, free loopback ports, `peervisor node`
//! child processes (started, waited for, stopped with SIGTERM then SIGKILL), the
//! tail of a node's log.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::node::identity::{NETWORK_KEY_ENV, NetworkKeySource};
use crate::paths::DataDir;

pub async fn ensure_image(image_dir: &Path) -> Result<()> {
    let dir = image_dir.to_path_buf();
    if crate::image::find(&dir, crate::image::DEFAULT_IMAGE).is_ok() {
        return Ok(());
    }
    eprintln!("demo: building the guest image (once)…");
    let report = tokio::task::spawn_blocking(move || {
        crate::image::build(
            &dir,
            &crate::image::ImageSpec {
                name: crate::image::DEFAULT_IMAGE.into(),
            },
            &mut |step| eprintln!("  {step}"),
        )
    })
    .await??;
    eprintln!("demo: image ready in {:.1} s", report.seconds);
    Ok(())
}

/// SIGTERM (peers then destroy their VMs and stop their daemons), then wait up
/// to 30 s before SIGKILL.
pub fn terminate_and_wait(pids: &[u32]) {
    for &pid in pids {
        // SAFETY: plain kill(2) on a pid we started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for &pid in pids {
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if process_alive(pid) {
            // SAFETY: as above.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

fn process_alive(pid: u32) -> bool {
    // A zombie child counts as gone: reap it if it is ours.
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on a pid; harmless if it is not our child.
    let reaped = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
    if reaped == pid as i32 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .context("finding free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// `peervisor node` as a child of this process, listening on a loopback port,
/// its stderr in `DATA_DIR/node.log`: the demo's peers and the benchmarks'.
pub struct NodeCommand {
    command: Command,
    nick: String,
    dir: DataDir,
    port: u16,
}

impl NodeCommand {
    /// `peervisor node --data-dir DIR --nick NICK --listen
    /// /ip4/127.0.0.1/tcp/PORT`, with the network key from a file
    /// (`--network-key`) or given in its environment (a literal key).
    pub fn new(dir: DataDir, nick: &str, port: u16, key: &NetworkKeySource) -> Result<Self> {
        let exe = std::env::current_exe().context("locating the peervisor binary")?;
        let mut command = Command::new(exe);
        command
            .arg("node")
            .arg("--data-dir")
            .arg(dir.root())
            .args(["--nick", nick])
            .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{port}")]);
        match key {
            NetworkKeySource::File(file) => command.arg("--network-key").arg(file),
            NetworkKeySource::Environment(text) => command.env(NETWORK_KEY_ENV, text),
        };
        Ok(NodeCommand {
            command,
            nick: nick.to_string(),
            dir,
            port,
        })
    }

    /// Joins the overlay through the node listening on this loopback port.
    pub fn bootstrap(self, port: u16) -> Self {
        self.args(["--bootstrap", &format!("/ip4/127.0.0.1/tcp/{port}")])
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.command.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.command.env(key, value);
        self
    }

    /// In a process group of its own: the terminal's Ctrl-C reaches only this
    /// process, which then stops the node (and its VMs) itself.
    pub fn own_process_group(mut self) -> Self {
        std::os::unix::process::CommandExt::process_group(&mut self.command, 0);
        self
    }

    pub fn spawn(mut self) -> Result<NodeProcess> {
        std::fs::create_dir_all(self.dir.root())
            .with_context(|| format!("creating {}", self.dir.root().display()))?;
        let log = std::fs::File::create(self.dir.root().join("node.log"))?;
        self.command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let child = (self.command.spawn())
            .with_context(|| format!("starting node {} (peervisor node)", self.nick))?;
        Ok(NodeProcess {
            nick: self.nick,
            dir: self.dir,
            port: self.port,
            child,
        })
    }
}

/// A running `peervisor node` child. Dropping it leaves the process running:
/// stop it with `stop_nodes` (or `kill`).
pub struct NodeProcess {
    pub nick: String,
    pub dir: DataDir,
    /// Its loopback listening port.
    pub port: u16,
    child: Child,
}

impl NodeProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> PathBuf {
        self.dir.root().join("node.log")
    }

    /// Waits until `ready` says the node is up (e.g. its control socket
    /// answers); its exit or `within` passing first is an error with the tail
    /// of its log.
    pub async fn wait_until<F, Fut>(&mut self, within: Duration, mut ready: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        loop {
            if ready().await {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "{} exited ({status}) during start-up:\n{}",
                    self.nick,
                    log_tail(&self.log())
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not start within {} s:\n{}",
                    self.nick,
                    within.as_secs(),
                    log_tail(&self.log())
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL, for a node with nothing to clean up (no VMs, no daemon).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops nodes as `terminate_and_wait` does (each destroys its VMs and stops
/// its libvirtd on SIGTERM), and reaps them.
pub fn stop_nodes(nodes: &mut Vec<NodeProcess>) {
    let pids: Vec<u32> = nodes.iter().map(NodeProcess::pid).collect();
    terminate_and_wait(&pids);
    for node in nodes.iter_mut() {
        let _ = node.child.wait();
    }
    nodes.clear();
}
