//! The operator console: a full-screen terminal UI over a node's status.
//!
//! Structure (grows by adding panes and actions):
//! - `action`: the `Action` vocabulary keys map to;
//! - `keymap`, `theme`: TOML-loaded key bindings and styles;
//! - `app`: all console state and the reducer (`App::update`), no I/O;
//! - `panes/*`: one module per pane, each drawing itself from `&App`;
//! - `ui`: the frame layout; `terminal`: raw mode, panic-safe restore, input thread.

mod action;
mod app;
mod keymap;
mod panes;
mod terminal;
mod theme;
mod ui;

#[cfg(test)]
mod testutil;

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use ratatui::crossterm::event::{Event, KeyEventKind};
use tokio::sync::{mpsc, watch};

pub use app::App;
pub use keymap::Keymap;
pub use theme::Theme;
pub use ui::draw;

use crate::model::Status;

/// How often the screen refreshes without input (log lines, message expiry).
const RENDER_TICK: Duration = Duration::from_millis(250);

/// A request from the operator. The node executes it and reports the outcome
/// through tracing, which the log pane shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UiCommand {
    Migrate { vm: String, to_peer_id: String },
}

#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// Shown first in the header, e.g. "peervisor".
    pub title: String,
    /// What the console is attached to: a data dir, or "embedded".
    pub attached_to: String,
}

/// Run the console until the operator quits.
///
/// `status` carries node snapshots (`None` until the first arrives; the
/// console draws anyway, showing "connecting…"); `commands` carries the
/// operator's requests out. The terminal is restored on quit, on error and on
/// panic. The theme follows `NO_COLOR`, `PEERVISOR_THEME` (default, 16color,
/// monochrome) and the terminal's colour support.
pub async fn run(
    mut status: watch::Receiver<Option<Status>>,
    commands: mpsc::Sender<UiCommand>,
    opts: ConsoleOptions,
) -> anyhow::Result<()> {
    let keymap = Keymap::load(keymap::DEFAULT_KEYMAP_PATH, keymap::DEFAULT_KEYMAP)?;
    let theme = Theme::detect()?;
    let mut app = App::new(opts, keymap, theme);
    app.set_status(status.borrow_and_update().clone());

    let mut guard =
        terminal::TerminalGuard::enter().context("cannot set up the terminal for the console")?;
    let mut input = match terminal::InputThread::spawn() {
        Ok(input) => input,
        Err(e) => return Err(e).context("cannot start the console's input thread"),
    };
    let result = event_loop(
        &mut guard,
        &mut app,
        &mut status,
        &commands,
        &mut input.events,
    )
    .await;
    drop(guard);
    input.stop().await;
    result
}

async fn event_loop(
    guard: &mut terminal::TerminalGuard,
    app: &mut App,
    status: &mut watch::Receiver<Option<Status>>,
    commands: &mpsc::Sender<UiCommand>,
    events: &mut mpsc::Receiver<std::io::Result<Event>>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(RENDER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut status_open = true;
    while !app.should_quit {
        tui_logger::move_events();
        guard
            .terminal
            .draw(|frame| draw(frame, app))
            .context("cannot draw the console")?;
        tokio::select! {
            event = events.recv() => match event {
                Some(Ok(Event::Key(key))) if key.kind == KeyEventKind::Press => {
                    if let Some(cmd) = app.handle_key(key) {
                        send(app, commands, cmd);
                    }
                }
                Some(Ok(_)) => {} // resize and the rest: redraw
                Some(Err(e)) => return Err(e).context("cannot read terminal input"),
                None => return Err(anyhow!("the console's input thread stopped")),
            },
            changed = status.changed(), if status_open => match changed {
                Ok(()) => app.set_status(status.borrow_and_update().clone()),
                Err(_) => {
                    status_open = false;
                    app.set_closed();
                }
            },
            _ = tick.tick() => app.tick(Instant::now()),
        }
    }
    Ok(())
}

/// Hand a request to the node without waiting: a full or closed channel is
/// reported on the status line instead.
fn send(app: &mut App, commands: &mpsc::Sender<UiCommand>, cmd: UiCommand) {
    use mpsc::error::TrySendError;
    match commands.try_send(cmd) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            app.say_error("The node is busy; request dropped, try again".into())
        }
        Err(TrySendError::Closed(_)) => {
            app.say_error("The node is not accepting requests; request dropped".into())
        }
    }
}

/// Route tracing events to the console's log pane. Call once, before starting
/// the node, so its logs show. Filtering follows `PEERVISOR_LOG` (default `info,libp2p=warn`), like `peervisor node`.
/// Do not install another subscriber that writes to the terminal.
pub fn init_logging() -> anyhow::Result<()> {
    use tracing_subscriber::prelude::*;
    tui_logger::init_logger(tui_logger::LevelFilter::Trace)
        .map_err(|e| anyhow!("cannot start the console log collector: {e}"))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PEERVISOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn"));
    tracing_subscriber::registry()
        .with(filter)
        .with(tui_logger::TuiTracingSubscriberLayer)
        .try_init()
        .context("a tracing subscriber is already installed")?;
    Ok(())
}
