//! The real terminal: raw mode + alternate screen + mouse capture while the
//! console runs, restored on drop (normal exit, errors, signals) and by a panic
//! hook; Ctrl-Z suspends (restore, SIGTSTP, re-enter on SIGCONT); and a thread
//! that reads terminal events so the async loop never blocks on input.
//!
//! ratatui 0.30 does not expose crossterm's `event-stream` feature, so input is
//! read on a plain thread and forwarded over a channel.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::EnterAlternateScreen;
use tokio::sync::mpsc;

/// How often the input thread checks whether it should stop.
const INPUT_POLL: Duration = Duration::from_millis(100);

pub struct TerminalGuard {
    pub terminal: DefaultTerminal,
}

impl TerminalGuard {
    /// Enter raw mode, the alternate screen and mouse capture; installs a panic
    /// hook that restores the terminal before the panic message prints.
    pub fn enter() -> io::Result<TerminalGuard> {
        let terminal = ratatui::try_init()?;
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = execute!(io::stdout(), DisableMouseCapture);
            previous(info);
        }));
        execute!(io::stdout(), EnableMouseCapture)?;
        Ok(TerminalGuard { terminal })
    }

    /// Ctrl-Z: give the terminal back, stop like any job, and take it again
    /// when the shell continues us.
    pub fn suspend(&mut self, input: &mut InputThread) -> io::Result<()> {
        input.pause(true);
        restore();
        // SAFETY: raise() only sends a signal to this process; SIGTSTP's default
        // action stops it until SIGCONT.
        unsafe {
            libc::raise(libc::SIGTSTP);
        }
        ratatui::crossterm::terminal::enable_raw_mode()?;
        execute!(io::stdout(), EnterAlternateScreen, EnableMouseCapture)?;
        input.pause(false);
        self.terminal.clear()
    }
}

impl TerminalGuard {
    /// Gives the terminal to `takeover` (a VM's serial console) and takes it
    /// back however that ends: the escape, the console closing, an error, a
    /// panic (run on a task of its own, so it unwinds there), or this future
    /// being dropped (`Reenter`'s drop). Input is paused first so that no key
    /// meant for the guest reaches the console.
    pub async fn hand_over(
        &mut self,
        input: &mut InputThread,
        takeover: super::Takeover,
    ) -> anyhow::Result<String> {
        input.pause_and_wait().await;
        let back = Reenter { guard: self, input };
        restore();
        let _ = execute!(io::stdout(), ratatui::crossterm::cursor::Show);
        println!("\r\n{}\r", takeover.banner);
        let outcome = tokio::spawn(takeover.run).await;
        back.now()?;
        match outcome {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(anyhow::anyhow!("the console session failed: {e}")),
            Err(e) => Err(anyhow::anyhow!("the console session ended: {e}")),
        }
    }
}

/// Takes the terminal back for the console: raw mode, the alternate screen,
/// mouse capture, input, a full redraw. On drop if `now` was not reached.
struct Reenter<'a> {
    guard: &'a mut TerminalGuard,
    input: &'a InputThread,
}

impl Reenter<'_> {
    fn now(mut self) -> io::Result<()> {
        let result = self.take_back();
        std::mem::forget(self);
        result
    }

    fn take_back(&mut self) -> io::Result<()> {
        self.input.pause(false);
        ratatui::crossterm::terminal::enable_raw_mode()?;
        execute!(io::stdout(), EnterAlternateScreen, EnableMouseCapture)?;
        self.guard.terminal.clear()
    }
}

impl Drop for Reenter<'_> {
    fn drop(&mut self) {
        let _ = self.take_back();
    }
}

fn restore() {
    let _ = execute!(io::stdout(), DisableMouseCapture);
    ratatui::restore();
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

pub struct InputThread {
    pub events: mpsc::Receiver<io::Result<Event>>,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    /// Set by the thread once it saw `paused` and no longer reads.
    idle: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl InputThread {
    pub fn spawn() -> io::Result<InputThread> {
        let (tx, events) = mpsc::channel(64);
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let idle = Arc::new(AtomicBool::new(false));
        let (flag, pause, rests) = (stop.clone(), paused.clone(), idle.clone());
        let handle = std::thread::Builder::new()
            .name("peervisor-console-input".into())
            .spawn(move || read_events(tx, flag, pause, rests))?;
        Ok(InputThread {
            events,
            stop,
            paused,
            idle,
            handle: Some(handle),
        })
    }

    /// While paused (suspended), the thread leaves the terminal alone.
    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// Pause, and wait until the thread has stopped reading (it finishes the
    /// poll it is in: at most one poll interval), so that what is typed next
    /// goes to whoever reads the terminal instead.
    pub async fn pause_and_wait(&self) {
        self.pause(true);
        while !self.idle.load(Ordering::Relaxed) && !self.stop.load(Ordering::Relaxed) {
            if self.handle.as_ref().is_none_or(|h| h.is_finished()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stop reading and wait for the thread (at most one poll interval).
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.events.close();
        if let Some(handle) = self.handle.take() {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

fn read_events(
    tx: mpsc::Sender<io::Result<Event>>,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        if paused.load(Ordering::Relaxed) {
            idle.store(true, Ordering::Relaxed);
            std::thread::sleep(INPUT_POLL);
            continue;
        }
        idle.store(false, Ordering::Relaxed);
        let next = match event::poll(INPUT_POLL) {
            Ok(false) => continue,
            Ok(true) => event::read(),
            Err(e) => Err(e),
        };
        let failed = next.is_err();
        if tx.blocking_send(next).is_err() || failed {
            return;
        }
    }
}
