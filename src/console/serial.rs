//! A VM's serial console on this terminal, like `virsh console`: used by
//! `peervisor vm console NAME` and by the console's key (the full-screen
//! console steps aside while it runs). Raw mode while attached (when stdin is
//! a terminal), restored however the session ends; Ctrl-] detaches, as in virsh.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::control::Request;
use crate::control::client::ControlClient;
use crate::names::VmName;

/// The byte that detaches (Ctrl-]).
const ESCAPE: u8 = 0x1d;
/// How the escape is written for the operator.
pub const ESCAPE_NAME: &str = "Ctrl-]";
/// How often the stdin reader checks whether the session ended.
const STDIN_POLL: Duration = Duration::from_millis(100);

/// An open console: the guest's bytes in `from`, what is typed goes to `to`.
pub struct Session {
    pub name: VmName,
    from: Box<dyn AsyncRead + Send + Unpin>,
    to: Box<dyn AsyncWrite + Send + Unpin>,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The operator typed the escape (or stdin ended).
    Detached,
    /// The console closed on the guest's side (the VM stopped, or its host
    /// went away).
    Closed,
    /// SIGTERM or SIGHUP.
    Signal,
}

impl Session {
    pub fn new(
        name: VmName,
        from: impl AsyncRead + Send + Unpin + 'static,
        to: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Session {
        Session {
            name,
            from: Box::new(from),
            to: Box::new(to),
        }
    }

    /// The console of `name` through a node's control socket (here or on
    /// the VM's host over the overlay): the host's refusal is the error.
    pub async fn open(control: &ControlClient, name: VmName) -> Result<Session> {
        let (from, to) = control
            .attach(&Request::VmConsole { name: name.clone() })
            .await?;
        Ok(Session::new(name, from, to))
    }

    /// The line shown before attaching: how to get out again (and, when
    /// given, where that leads).
    pub fn banner(&self, then: &str) -> String {
        let then = if then.is_empty() {
            String::new()
        } else {
            format!(", {then}")
        };
        format!(
            "Connected to the console of {} (detach: {ESCAPE_NAME}{then})",
            self.name
        )
    }

    /// Pipes this terminal to the console until the escape, the console's
    /// end or a signal. Raw mode is undone and the stdin reader stopped on
    /// every way out, so a caller may take the terminal back at once.
    pub async fn run(mut self) -> Result<End> {
        let _raw = RawMode::enter()?;
        let mut typed = StdinReader::spawn()?;
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut out = [0u8; 4096];
        let end = loop {
            tokio::select! {
                _ = term.recv() => break End::Signal,
                _ = hup.recv() => break End::Signal,
                chunk = typed.bytes.recv() => {
                    let Some(bytes) = chunk else { break End::Detached };
                    let (before, escaped) = match bytes.iter().position(|b| *b == ESCAPE) {
                        Some(i) => (&bytes[..i], true),
                        None => (&bytes[..], false),
                    };
                    self.to.write_all(before).await.context("sending to the console")?;
                    if escaped {
                        break End::Detached;
                    }
                }
                n = self.from.read(&mut out) => {
                    let n = n.context("reading the console")?;
                    if n == 0 {
                        eprintln!("\r\nthe console of {} closed\r", self.name);
                        break End::Closed;
                    }
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(&out[..n])?;
                    stdout.flush()?;
                }
            }
        };
        typed.stop().await;
        Ok(end)
    }
}

/// Raw mode on a terminal stdin, undone on drop (also when unwinding).
struct RawMode(bool);

impl RawMode {
    fn enter() -> Result<RawMode> {
        if !std::io::stdin().is_terminal() {
            return Ok(RawMode(false));
        }
        ratatui::crossterm::terminal::enable_raw_mode().context("raw mode for the console")?;
        Ok(RawMode(true))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.0 {
            let _ = ratatui::crossterm::terminal::disable_raw_mode();
        }
    }
}

/// Reads stdin on a thread of its own, waiting for input with `poll` so the
/// thread ends when the session does: the full-screen console reads the
/// same terminal again once the operator detached, and no key may go astray.
struct StdinReader {
    bytes: mpsc::Receiver<Vec<u8>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StdinReader {
    fn spawn() -> Result<StdinReader> {
        let (tx, bytes) = mpsc::channel::<Vec<u8>>(16);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("peervisor-console-stdin".into())
            .spawn(move || read_stdin(tx, flag))
            .context("the console's stdin thread")?;
        Ok(StdinReader {
            bytes,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (at most one poll interval).
    async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.bytes.close();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for StdinReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_stdin(tx: mpsc::Sender<Vec<u8>>, stop: Arc<AtomicBool>) {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let timeout = Timespec {
        tv_sec: 0,
        tv_nsec: STDIN_POLL.as_nanos() as _,
    };
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        let ready = {
            let fd = stdin.as_fd();
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            match poll(&mut fds, Some(&timeout)) {
                Ok(n) => n > 0,
                Err(rustix::io::Errno::INTR) => false,
                Err(_) => return,
            }
        };
        if !ready || stop.load(Ordering::Relaxed) {
            continue;
        }
        // Straight from the descriptor: std's buffered stdin would keep bytes
        // poll cannot see.
        match rustix::io::read(stdin.as_fd(), &mut buf) {
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.blocking_send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        }
    }
}
