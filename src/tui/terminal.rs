//! The real terminal: raw mode + alternate screen while the console runs,
//! restored on drop (normal exit and errors) and by ratatui's panic hook; and
//! a thread that reads terminal events so the async loop never blocks on input.
//!
//! ratatui 0.30 does not expose crossterm's `event-stream` feature, so input is
//! read on a plain thread and forwarded over a channel.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, Event};
use tokio::sync::mpsc;

/// How often the input thread checks whether it should stop.
const INPUT_POLL: Duration = Duration::from_millis(100);

pub struct TerminalGuard {
    pub terminal: DefaultTerminal,
}

impl TerminalGuard {
    /// Enter raw mode and the alternate screen; installs a panic hook that
    /// restores the terminal before the panic message prints.
    pub fn enter() -> io::Result<TerminalGuard> {
        Ok(TerminalGuard {
            terminal: ratatui::try_init()?,
        })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

pub struct InputThread {
    pub events: mpsc::Receiver<io::Result<Event>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl InputThread {
    pub fn spawn() -> io::Result<InputThread> {
        let (tx, events) = mpsc::channel(64);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("peervisor-console-input".into())
            .spawn(move || read_events(tx, flag))?;
        Ok(InputThread {
            events,
            stop,
            handle: Some(handle),
        })
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

fn read_events(tx: mpsc::Sender<io::Result<Event>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
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
