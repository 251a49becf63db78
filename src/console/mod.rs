//! Wiring the console to a node: embedded in this process, or attached to a running
//! node through its control socket. Either way the node pushes its state (a
//! snapshot, then deltas) into a channel the console reads, and the console sends
//! requests out; it never waits on the node to draw.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use crate::api::{Reply, Request, Update};
use crate::control::client::ControlClient;
use crate::model::nick_or_short_id;
use crate::names::VmName;
use crate::paths::DataDir;
use crate::peer::{Peer, PeerConfig};
use crate::tui::keymap;
use crate::tui::{self, ConsoleOptions, Notice, Takeover};

pub mod serial;

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

    /// A VM's serial console, opened (or refused) before the screen changes.
    async fn console(&self, name: VmName) -> Result<serial::Session> {
        match self {
            Backend::Embedded(peer) => {
                let (from, to) = tokio::io::split(peer.console(name.clone()).await?);
                Ok(serial::Session::new(name, from, to))
            }
            Backend::Attached(client) => serial::Session::open(client, name).await,
        }
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<Update>> {
        match self {
            Backend::Embedded(peer) => peer.subscribe().await,
            Backend::Attached(client) => client.subscribe().await,
        }
    }
}

/// `peervisor`: starts a peer in this process and opens the console on it.
pub async fn embedded(config: PeerConfig, look: &Look) -> Result<()> {
    config.data_dir.create()?;
    let log = config.data_dir.embedded_log();
    let file = append_to(&log).with_context(|| format!("opening {}", log.display()))?;
    tui::init_logging(Some(file))?;
    let peer = crate::peer::start_serving(config).await?;
    let title = format!("embedded node, {}", peer.data_dir().root().display());
    let result = run_console(Backend::Embedded(peer.clone()), title, look).await;
    peer.shutdown(false).await;
    let _ = std::fs::remove_file(peer.data_dir().control_socket());
    // The log pane is gone with the terminal: say where its lines were kept.
    eprintln!("the embedded node's log: {}", log.display());
    result
}

/// `peervisor --attach DIR`: the console on a node that runs elsewhere.
pub async fn attach(dir: &DataDir, look: &Look) -> Result<()> {
    let client = ControlClient::new(&dir.control_socket());
    // Fail before taking over the terminal if nothing answers.
    client.call(&Request::Status).await?;
    // The console's own lines, where this user may write (root's node's dir
    // may not be: then the log pane only).
    let log = dir.console_log();
    let file = append_to(&log).ok();
    let kept = file.is_some();
    tui::init_logging(file)?;
    let result = run_console(
        Backend::Attached(client),
        dir.root().display().to_string(),
        look,
    )
    .await;
    if kept {
        eprintln!("the console's log: {}", log.display());
    }
    result
}

fn append_to(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

async fn run_console(backend: Backend, attached_to: String, look: &Look) -> Result<()> {
    let (update_tx, update_rx) = mpsc::channel(64);
    let (command_tx, command_rx) = mpsc::channel(16);
    let (notice_tx, notice_rx) = mpsc::channel(64);
    let (takeover_tx, takeover_rx) = mpsc::channel(1);
    let feed = tokio::spawn(follow_node(backend.clone(), update_tx));
    let executor = tokio::spawn(execute_requests(
        backend,
        command_rx,
        notice_tx,
        takeover_tx,
    ));
    let mut options = ConsoleOptions::new("peervisor", attached_to);
    options.theme = look.theme.clone();
    options.keymap = look.keymap.clone();
    let result = tui::run(update_rx, command_tx, notice_rx, takeover_rx, options).await;
    feed.abort();
    executor.abort();
    result
}

/// Passes the node's updates on to the console, subscribing again (a new
/// snapshot) whenever the node goes away and comes back.
async fn follow_node(backend: Backend, tx: mpsc::Sender<Update>) {
    let mut was_failing = false;
    loop {
        match backend.subscribe().await {
            Ok(mut updates) => {
                if was_failing {
                    tracing::info!("node reachable again");
                }
                while let Some(update) = updates.recv().await {
                    if tx.send(update).await.is_err() {
                        return;
                    }
                }
                tracing::error!("lost the node's updates; reconnecting");
                was_failing = true;
            }
            Err(e) => {
                if !was_failing {
                    tracing::error!("cannot read the node's status: {e:#}");
                    was_failing = true;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs the operator's requests, each in its own task (a migration takes
/// seconds; a stop must not wait for it). Outcomes go to the status line and
/// the log pane.
async fn execute_requests(
    backend: Backend,
    mut requests: mpsc::Receiver<Request>,
    notices: mpsc::Sender<Notice>,
    takeovers: mpsc::Sender<Takeover>,
) {
    while let Some(request) = requests.recv().await {
        let backend = backend.clone();
        let notices = notices.clone();
        if let Request::VmConsole { name } = request {
            let takeovers = takeovers.clone();
            tokio::spawn(async move {
                let notice = match open_console(&backend, name, &takeovers).await {
                    Ok(()) => return,
                    Err(text) => text,
                };
                tracing::error!("{notice}");
                let _ = notices.try_send(Notice {
                    text: notice,
                    error: true,
                    boot_log: None,
                });
            });
            continue;
        }
        if let Request::Watch { .. } = request {
            // Bookkeeping, not an operator's request: no notice, no log.
            tokio::spawn(async move {
                if let Err(e) = backend.call(request).await {
                    tracing::debug!("watch: {e:#}");
                }
            });
            continue;
        }
        tokio::spawn(async move {
            let what = request.describe();
            tracing::info!("{what} requested");
            let notice = match backend.call(request).await {
                Ok(Reply::BootLog(log)) => Notice {
                    text: format!("{what}: {} bytes", log.size),
                    error: false,
                    boot_log: Some(log),
                },
                Ok(reply) => {
                    let text = outcome_text(&what, &reply);
                    tracing::info!("{text}");
                    Notice {
                        text,
                        error: false,
                        boot_log: None,
                    }
                }
                Err(e) => {
                    let text = format!("{what} failed: {e:#}");
                    tracing::error!("{text}");
                    Notice {
                        text,
                        error: true,
                        boot_log: None,
                    }
                }
            };
            let _ = notices.try_send(notice);
        });
    }
}

/// Opens a VM's serial console and hands it to the console to run on the
/// terminal; the refusal (its host's reason) as the status line's text.
async fn open_console(
    backend: &Backend,
    name: VmName,
    takeovers: &mpsc::Sender<Takeover>,
) -> Result<(), String> {
    tracing::info!("console of {name} requested");
    let session = backend
        .console(name.clone())
        .await
        .map_err(|e| format!("Console of {name} failed: {e:#}"))?;
    let banner = session.banner("back to the peervisor console");
    let run = async move {
        let end = session.run().await?;
        Ok(match end {
            serial::End::Detached => format!("Detached from the console of {name}"),
            serial::End::Closed => format!("The console of {name} closed (its VM stopped?)"),
            serial::End::Signal => format!("Left the console of {name} on a signal"),
        })
    };
    takeovers
        .send(Takeover {
            banner,
            run: Box::pin(run),
        })
        .await
        .map_err(|_| "the console is closing".to_string())
}

/// What the status line says of a request (`what`, its description) that succeeded.
fn outcome_text(what: &str, reply: &Reply) -> String {
    match reply {
        Reply::Migrated(r) => format!(
            "VM '{}' now runs on {} ({:.1} s)",
            r.vm,
            nick_or_short_id(&r.to, &r.to_peer_id),
            r.seconds
        ),
        Reply::Replicated(r) => format!(
            "VM '{}' replicated to {} as '{}' ({:.1} s)",
            r.vm,
            nick_or_short_id(&r.to, &r.to_peer_id),
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use tokio::sync::broadcast;

    use super::*;
    use crate::api::{Samples, VmSample};
    use crate::control::server::{self, Answer};
    use crate::hypervisor::sampler::Round;
    use crate::model::{Status, VmState, VmStats, VmView};
    use crate::peer::updates::{Figures, Publisher};

    /// Long enough for a loaded 2-core machine; the updates come at once.
    const BOUND: Duration = Duration::from_secs(30);

    fn screen(app: &tui::App) -> String {
        let mut term = Terminal::new(TestBackend::new(120, 36)).unwrap();
        term.draw(|f| tui::draw(f, app)).unwrap();
        let buffer = term.backend().buffer();
        buffer.content().iter().map(|c| c.symbol()).collect()
    }

    /// An attached console on a node whose swarm is stuck: every request but
    /// the subscription hangs (as `status` did, waiting on the swarm), and the
    /// node's state is read once and then never again. The charts and the
    /// VM table still move with each stats round.
    #[tokio::test]
    async fn an_attached_console_keeps_drawing_while_the_swarm_is_busy() {
        let (rounds, rounds_rx) = broadcast::channel(16);
        let figures = Figures {
            rounds: rounds_rx,
            read: Box::new(|_: &mut Status| 0),
        };
        let (states, states_rx) = mpsc::channel(1);
        let publisher = Publisher::start(figures, states_rx);
        let vm = VmView {
            name: "web-1".into(),
            state: VmState::Running,
            ..VmView::default()
        };
        states
            .send(Status {
                vms: vec![vm],
                ..Status::default()
            })
            .await
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let listener = server::bind(&socket).await.unwrap();
        let handler = Arc::new(move |request: Request| {
            let publisher = publisher.clone();
            async move {
                match request {
                    Request::Subscribe => publisher.subscribe().await.map(Answer::Updates),
                    _ => std::future::pending().await,
                }
            }
        });
        tokio::spawn(server::serve(listener, handler));
        let client = ControlClient::new(&socket);
        let slow = {
            let client = client.clone();
            tokio::spawn(async move { client.call(&Request::Status).await })
        };

        let (tx, mut updates) = mpsc::channel(64);
        tokio::spawn(follow_node(Backend::Attached(client), tx));
        let mut app = crate::tui::testutil::app_with(None);
        let next = async |updates: &mut mpsc::Receiver<Update>| {
            tokio::time::timeout(BOUND, updates.recv())
                .await
                .expect("an update within the bound while the swarm is stuck")
                .expect("the feed runs")
        };
        // The node's one reading lists web-1; rounds before it would be for
        // no VM the console knows.
        while app.status.as_ref().is_none_or(|s| s.vms.is_empty()) {
            app.apply(next(&mut updates).await);
        }
        let mut frames = HashMap::new();
        for (number, cpu) in (1..=4).zip([11.0, 22.0, 33.0, 44.0]) {
            let _ = rounds.send(Round {
                number,
                samples: Arc::new(Samples {
                    interval_s: 1.0,
                    keep: 120,
                    host: None,
                    vms: vec![VmSample {
                        name: "web-1".into(),
                        stats: Some(VmStats {
                            cpu_pct_guest: Some(cpu),
                            ..VmStats::default()
                        }),
                    }],
                }),
            });
            let shows = |app: &tui::App| {
                app.status.as_ref().is_some_and(|s| {
                    s.vms
                        .first()
                        .and_then(|v| v.stats.as_ref())
                        .and_then(|s| s.cpu_pct_guest)
                        == Some(cpu)
                })
            };
            while !shows(&app) {
                app.apply(next(&mut updates).await);
            }
            let frame = screen(&app);
            assert!(
                frame.contains(&format!("{cpu:.1}")),
                "round {number}:\n{frame}"
            );
            frames.insert(number, frame);
        }
        assert!(!slow.is_finished(), "the slow request is still waiting");
        let history = app.status.as_ref().unwrap().vms[0].history.clone().unwrap();
        assert_eq!(history.cpu_pct_guest, vec![11.0, 22.0, 33.0, 44.0]);
        assert_ne!(frames[&1], frames[&4], "the screen moved");
        drop(states);
    }
}
