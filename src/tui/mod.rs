//! The operator console: a full-screen terminal UI over a node's status.
//!
//! Structure (grows by adding panes and actions):
//! - `action`: the `Action` vocabulary keys map to;
//! - `keymap`, `theme`: TOML-loaded key bindings and styles;
//! - `app`: all console state and the reducer (`App::update`), no I/O;
//! - `rows`: what each list shows (order, filter, sort), shared by drawing and the reducer;
//! - `cmdline`: the `:` command line (parse, complete, edit);
//! - `panes/*`: one module per pane, each drawing itself from `&App`;
//! - `ui`: the frame layout; `terminal`: raw mode, restore, suspend, input thread.

mod action;
mod app;
mod cmdline;
pub mod keymap;
pub(crate) mod panes;
mod rows;
mod terminal;
pub mod theme;
mod ui;

#[cfg(test)]
mod snapshots;
#[cfg(test)]
pub(crate) mod testutil;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use ratatui::crossterm::event::{Event, KeyCode, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

// `Pane` is for the render bench, which compiles this module on its own.
#[allow(unused_imports)]
pub use app::{App, Pane};
pub use keymap::Keymap;
pub use theme::Theme;
pub use ui::draw;

use crate::api::{Request, Update};

/// How often the screen refreshes without input (log lines, message expiry).
const RENDER_TICK: Duration = Duration::from_millis(500);

/// A command's outcome for the status line.
#[derive(Debug, Clone)]
pub struct Notice {
    pub text: String,
    pub error: bool,
    /// A boot log asked for (shown in its overlay).
    pub boot_log: Option<crate::api::BootLog>,
}

/// Something that takes the terminal for a while (a VM's serial console):
/// the console leaves its screen, shows `banner`, runs it, and takes the
/// screen back however it ends (its outcome, error or panic then shows on
/// the status line).
pub struct Takeover {
    pub banner: String,
    /// The status line's text afterwards.
    pub run: futures::future::BoxFuture<'static, anyhow::Result<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct ConsoleOptions {
    /// Shown first in the header, e.g. "peervisor".
    pub title: String,
    /// What the console is attached to: a data dir, or "embedded".
    pub attached_to: String,
    /// `--theme`: a theme name (built-in or user).
    pub theme: Option<String>,
    /// `--keymap`: a shipped keymap name or a file.
    pub keymap: Option<String>,
    /// User themes (`~/.config/peervisor/themes`).
    pub theme_dir: Option<PathBuf>,
    /// The user's config dir (`~/.config/peervisor`), for keymap.toml.
    pub config_dir: Option<PathBuf>,
}

impl ConsoleOptions {
    /// Options with the user's config dir filled in.
    pub fn new(title: &str, attached_to: String) -> ConsoleOptions {
        let config_dir = app::config_dir();
        ConsoleOptions {
            title: title.to_string(),
            attached_to,
            theme_dir: config_dir.as_deref().map(theme::user_theme_dir),
            config_dir,
            ..ConsoleOptions::default()
        }
    }
}

/// The keymap and theme the options ask for, with any file errors for the
/// status line (the console then uses the defaults).
pub fn load_look(opts: &ConsoleOptions) -> (Keymap, Theme, Vec<String>) {
    let keys = keymap::effective(opts.keymap.as_deref(), opts.config_dir.as_deref());
    let (theme, theme_error) = Theme::detect(opts.theme.as_deref(), opts.theme_dir.as_deref());
    let errors = keys.error.into_iter().chain(theme_error).collect();
    (keys.keymap, theme, errors)
}

/// Run the console until the operator quits (or SIGTERM/SIGHUP arrive).
///
/// `updates` carries the node's state (a snapshot, then deltas; the console
/// draws before the first arrives, showing "connecting…"); `commands` carries
/// the operator's requests out and `notices` their outcomes back. The terminal is
/// restored on quit, on error, on panic and on the signals; Ctrl-Z suspends.
pub async fn run(
    mut updates: mpsc::Receiver<Update>,
    commands: mpsc::Sender<Request>,
    mut notices: mpsc::Receiver<Notice>,
    mut takeovers: mpsc::Receiver<Takeover>,
    opts: ConsoleOptions,
) -> anyhow::Result<()> {
    let (keymap, theme, errors) = load_look(&opts);
    let mut app = App::new(opts, keymap, theme);
    if !errors.is_empty() {
        for e in &errors {
            tracing::warn!("{e}");
        }
        app.say_error(format!("using defaults: {}", errors.join("; ")));
    }
    let mut guard =
        terminal::TerminalGuard::enter().context("cannot set up the terminal for the console")?;
    let mut input = match terminal::InputThread::spawn() {
        Ok(input) => input,
        Err(e) => return Err(e).context("cannot start the console's input thread"),
    };
    let result = event_loop(
        &mut guard,
        &mut app,
        &mut updates,
        &commands,
        &mut notices,
        &mut takeovers,
        &mut input,
    )
    .await;
    drop(guard);
    input.stop().await;
    result
}

async fn event_loop(
    guard: &mut terminal::TerminalGuard,
    app: &mut App,
    updates: &mut mpsc::Receiver<Update>,
    commands: &mpsc::Sender<Request>,
    notices: &mut mpsc::Receiver<Notice>,
    takeovers: &mut mpsc::Receiver<Takeover>,
    input: &mut terminal::InputThread,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut tick = tokio::time::interval(RENDER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut updates_open = true;
    let mut notices_open = true;
    let mut takeovers_open = true;
    let mut dirty = true;
    let mut watch = Watch::default();
    while !app.should_quit {
        let news = tui_logger_has_news();
        if dirty || news {
            tui_logger::move_events();
            guard
                .terminal
                .draw(|frame| draw(frame, app))
                .context("cannot draw the console")?;
            dirty = false;
            watch.after_frame(app, commands, Instant::now());
        }
        tokio::select! {
            event = input.events.recv() => {
                dirty = true;
                match event {
                    Some(Ok(Event::Key(key))) if key.kind == KeyEventKind::Press => {
                        if key.code == KeyCode::Char('z')
                            && key.modifiers.contains(KeyModifiers::CONTROL)
                        {
                            guard.suspend(input).context("cannot suspend the console")?;
                            continue;
                        }
                        if let Some(cmd) = app.handle_key(key) {
                            send(app, commands, cmd);
                        }
                    }
                    Some(Ok(Event::Mouse(mouse))) => app.handle_mouse(mouse),
                    Some(Ok(_)) => {} // resize and the rest: redraw
                    Some(Err(e)) => return Err(e).context("cannot read terminal input"),
                    None => return Err(anyhow!("the console's input thread stopped")),
                }
            }
            update = updates.recv(), if updates_open => {
                dirty = true;
                match update {
                    Some(update) => {
                        app.apply(update);
                        // Whatever else is queued goes into the same frame.
                        while let Ok(update) = updates.try_recv() {
                            app.apply(update);
                        }
                    }
                    None => {
                        updates_open = false;
                        app.set_closed();
                    }
                }
            }
            notice = notices.recv(), if notices_open => {
                dirty = true;
                match notice {
                    Some(Notice { boot_log: Some(log), .. }) => app.show_boot_log(log),
                    Some(n) => app.notice(n.text, n.error),
                    None => notices_open = false,
                }
            }
            takeover = takeovers.recv(), if takeovers_open => {
                dirty = true;
                match takeover {
                    Some(t) => {
                        match guard.hand_over(input, t).await {
                            Ok(text) => app.say(text),
                            Err(e) => app.say_error(format!("{e:#}")),
                        }
                        // A console asked for again meanwhile (S pressed twice) is
                        // not run on the way back: dropping it closes its stream.
                        while takeovers.try_recv().is_ok() {}
                    }
                    None => takeovers_open = false,
                }
            }
            _ = tick.tick() => {
                let had_message = app.message.is_some();
                app.tick(Instant::now());
                dirty |= had_message != app.message.is_some();
            }
            _ = term.recv() => app.should_quit = true,
            _ = hup.recv() => app.should_quit = true,
        }
    }
    Ok(())
}

/// True when log lines arrived since the last frame (the tick then redraws).
fn tui_logger_has_news() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEEN: AtomicU64 = AtomicU64::new(u64::MAX);
    let now = log_events_total();
    SEEN.swap(now, Ordering::Relaxed) != now
}

/// Log events recorded so far (a cheap counter kept by our tracing layer).
fn log_events_total() -> u64 {
    LOG_EVENTS.load(std::sync::atomic::Ordering::Relaxed)
}

static LOG_EVENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts events so the console redraws only when there is something new.
struct CountEvents;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountEvents {
    fn on_event(
        &self,
        _event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        LOG_EVENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Hand a request to the node without waiting: a full or closed channel is
/// reported on the status line instead.
/// Tells the node which other peers' VMs are on screen: when that changes,
/// and again before the node's watch lapses.
#[derive(Default)]
struct Watch {
    sent: Vec<crate::api::RemoteVmKey>,
    at: Option<Instant>,
}

impl Watch {
    const RENEW: Duration = Duration::from_secs(crate::api::WATCH_TTL_S / 3);

    fn after_frame(&mut self, app: &App, commands: &mpsc::Sender<Request>, now: Instant) {
        let keys = app.watched_remote_vms();
        let due = self.at.is_none_or(|at| now - at >= Self::RENEW);
        if keys == self.sent && (keys.is_empty() || !due) {
            return;
        }
        // A full channel: the next frame tries again.
        if commands
            .try_send(Request::Watch { vms: keys.clone() })
            .is_ok()
        {
            self.sent = keys;
            self.at = Some(now);
        }
    }
}

fn send(app: &mut App, commands: &mpsc::Sender<Request>, cmd: Request) {
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

/// Route tracing events to the console's log pane, and with `file` also append
/// them there (the log of a node embedded in the console outlives its memory).
/// Call once, before starting the node, so its logs show. Filtering follows
/// `PEERVISOR_LOG` (default `info,libp2p=warn`), like `peervisor node`.
/// Do not install another subscriber that writes to the terminal.
pub fn init_logging(file: Option<std::fs::File>) -> anyhow::Result<()> {
    use tracing_subscriber::prelude::*;
    tui_logger::init_logger(tui_logger::LevelFilter::Trace)
        .map_err(|e| anyhow!("cannot start the console log collector: {e}"))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PEERVISOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn"));
    let file_layer = file.map(|log| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(log))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(tui_logger::TuiTracingSubscriberLayer)
        .with(file_layer)
        .with(CountEvents)
        .try_init()
        .context("a tracing subscriber is already installed")?;
    Ok(())
}
