//! Wiring the console to a node: embedded in this process, or attached to a running
//! node through its control socket. Either way the console reads snapshots from a
//! watch channel and sends requests out; it never waits on the node to draw.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{mpsc, watch};

use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::model::{Status, short_peer_id};
use crate::paths::DataDir;
use crate::peer::{Peer, PeerConfig};
use crate::tui::keymap;
use crate::tui::{self, ConsoleOptions, Notice};

/// How the console looks: `--theme` and `--keymap`.
#[derive(Debug, Clone, Default)]
pub struct Look {
    pub theme: Option<String>,
    pub keymap: Option<String>,
}

/// Where the console's requests go.
#[derive(Clone)]
enum Backend {
    Embedded(Arc<Peer>),
    Attached(ControlClient),
}

impl Backend {
    async fn call(&self, request: Request) -> Result<Reply> {
        match self {
            Backend::Embedded(peer) => peer.handle(request).await,
            Backend::Attached(client) => client.call(&request).await,
        }
    }
}

/// `peervisor`: starts a peer in this process and opens the console on it.
pub async fn embedded(config: PeerConfig, look: &Look) -> Result<()> {
    tui::init_logging()?;
    let peer = crate::peer::start_serving(config).await?;
    let title = format!("embedded node, {}", peer.data_dir().root().display());
    let result = run_console(Backend::Embedded(peer.clone()), title, look).await;
    peer.shutdown(false).await;
    let _ = std::fs::remove_file(peer.data_dir().control_socket());
    result
}

/// `peervisor --attach DIR`: the console on a node that runs elsewhere.
pub async fn attach(dir: &DataDir, look: &Look) -> Result<()> {
    let client = ControlClient::new(&dir.control_socket());
    // Fail before taking over the terminal if nothing answers.
    client.call(&Request::Status).await?;
    tui::init_logging()?;
    run_console(
        Backend::Attached(client),
        dir.root().display().to_string(),
        look,
    )
    .await
}

async fn run_console(backend: Backend, attached_to: String, look: &Look) -> Result<()> {
    let (status_tx, status_rx) = watch::channel(None);
    let (command_tx, command_rx) = mpsc::channel(16);
    let (notice_tx, notice_rx) = mpsc::channel(64);
    let poller = tokio::spawn(poll_status(backend.clone(), status_tx));
    let executor = tokio::spawn(execute_requests(backend, command_rx, notice_tx));
    let mut options = ConsoleOptions::new("peervisor", attached_to);
    options.theme = look.theme.clone();
    options.keymap = look.keymap.clone();
    let result = tui::run(status_rx, command_tx, notice_rx, options).await;
    poller.abort();
    executor.abort();
    result
}

/// Refreshes the snapshot once a second, off the drawing path.
async fn poll_status(backend: Backend, tx: watch::Sender<Option<Status>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut was_failing = false;
    loop {
        tick.tick().await;
        match backend.call(Request::Status).await {
            Ok(Reply::Status(status)) => {
                if was_failing {
                    tracing::info!("node reachable again");
                    was_failing = false;
                }
                if tx.send(Some(*status)).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if !was_failing {
                    tracing::error!("cannot read the node's status: {e:#}");
                    was_failing = true;
                }
            }
        }
    }
}

/// Runs the operator's requests, each in its own task (a migration takes
/// seconds; a stop must not wait for it). Outcomes go to the status line and
/// the log pane.
async fn execute_requests(
    backend: Backend,
    mut requests: mpsc::Receiver<Request>,
    notices: mpsc::Sender<Notice>,
) {
    while let Some(request) = requests.recv().await {
        let backend = backend.clone();
        let notices = notices.clone();
        tokio::spawn(async move {
            let what = request.describe();
            tracing::info!("{what} requested");
            let notice = match backend.call(request).await {
                Ok(reply) => {
                    let text = outcome_text(&what, &reply);
                    tracing::info!("{text}");
                    Notice { text, error: false }
                }
                Err(e) => {
                    let text = format!("{what} failed: {e:#}");
                    tracing::error!("{text}");
                    Notice { text, error: true }
                }
            };
            let _ = notices.try_send(notice);
        });
    }
}

/// What the status line says of a request (`what`, its description) that succeeded.
fn outcome_text(what: &str, reply: &Reply) -> String {
    match reply {
        Reply::Migrated(r) => format!(
            "VM '{}' now runs on {} ({:.1} s)",
            r.vm,
            if r.to.is_empty() {
                short_peer_id(&r.to_peer_id)
            } else {
                r.to.clone()
            },
            r.seconds
        ),
        Reply::Replicated(r) => format!(
            "VM '{}' replicated to {} as '{}' ({:.1} s)",
            r.vm,
            if r.to.is_empty() {
                short_peer_id(&r.to_peer_id)
            } else {
                r.to.clone()
            },
            r.replica,
            r.seconds
        ),
        Reply::Done { message } => message.clone(),
        Reply::Consuming(c) => format!(
            "Consuming {} at {} (through the overlay)",
            c.service, c.listen
        ),
        _ => format!("{what} done"),
    }
}

/// `peervisor keys`: the effective keymap as a keymap file, with where it came from.
pub fn keys_text(look: &Look) -> String {
    let config_dir = tui::ConsoleOptions::new("peervisor", String::new()).config_dir;
    let effective = keymap::effective(look.keymap.as_deref(), config_dir.as_deref());
    let mut out = String::new();
    let _ = writeln!(out, "# effective peervisor console keymap");
    let _ = writeln!(out, "# from: {}", effective.sources.join(" + "));
    if let Some(dir) = &config_dir {
        let _ = writeln!(
            out,
            "# user file: {} (names only the actions it changes)",
            keymap::user_keymap_path(dir).display()
        );
    }
    if let Some(e) = &effective.error {
        let _ = writeln!(out, "# error: {e} (defaults shown)");
    }
    out.push_str(&effective.keymap.to_toml());
    out
}
