//! `bench scale --mode sim --remote-figures`: the overlay traffic that remote
//! VM figures cost (issue 18). Each simulated node hosts one fake VM and
//! answers `VmFigures` as a real host does (`Vms::figures`: the named VMs
//! with their latest rates, and their 120-sample history when asked; the
//! round advancing once a second); consoles are the real `RemoteVms` of
//! vms/remote.rs on simulated nodes, watching a full screen of other peers'
//! VMs. What the figures cost is counted where the control messages are
//! encoded (node/traffic.rs): the `VmFigures` requests the consoles' nodes
//! send and the answers they receive, per console. The traffic at the memory
//! transport minus the idle overlay's (same run) is printed beside it, but
//! the idle overlay's own swings are larger than one console's cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::pipes::{Net, Traffic};
use crate::api::RemoteVmKey;
use crate::model::{ControlTally, MessageRole, VmHistory, VmState, VmStats, VmView};
use crate::node::Client;
use crate::node::protocol::{ControlResponse, MAX_FIGURES_HISTORY};
use crate::vms::remote::RemoteVms;

/// Rows of the VMs pane on a 200x60 terminal: a full screen.
pub const SCREEN_ROWS: usize = 50;

/// `VmFigures` answers given, all nodes together.
pub static ANSWERED: AtomicU64 = AtomicU64::new(0);

/// A simulated host's answer to `VmFigures`: its one VM, as a real host
/// sends it (all figures present; the history when asked).
pub fn answer(index: usize, asked: &[String], history: bool, since: Instant) -> ControlResponse {
    ANSWERED.fetch_add(1, Ordering::Relaxed);
    let name = format!("vm-{index}");
    let stats = VmStats {
        cpu_pct_host: Some(3.25),
        cpu_pct_guest: Some(12.5),
        mem_used_mib: Some(97),
        disk_read_bps: 123_456.7,
        disk_write_bps: 654_321.2,
        disk_read_iops: 12.0,
        disk_write_iops: 34.0,
        net_rx_bps: 4_567.8,
        net_tx_bps: 9_876.5,
        span_s: 1.0,
    };
    let ring = |v: f64| vec![v; MAX_FIGURES_HISTORY];
    let vm = VmView {
        name: name.as_str().into(),
        uuid: format!("6f1c0d1e-0000-4000-8000-{index:012}"),
        state: VmState::Running,
        vcpus: 1,
        memory_mib: 256,
        ip: Some(format!("10.77.{}.{}", index / 250, index % 250 + 2)),
        managed: true,
        history: history.then(|| VmHistory {
            interval_s: 1.0,
            span_s: ring(1.0),
            cpu_pct_guest: ring(12.5),
            disk_read_bps: ring(123_456.7),
            disk_write_bps: ring(654_321.2),
            net_rx_bps: ring(4_567.8),
            net_tx_bps: ring(9_876.5),
        }),
        stats: Some(stats),
        ..VmView::default()
    };
    let vms = if asked.contains(&name) {
        vec![vm]
    } else {
        Vec::new()
    };
    ControlResponse::VmFigures {
        vms,
        round: since.elapsed().as_secs(),
        operations: Vec::new(),
    }
}

/// What the figures cost in one window.
pub struct Cost {
    pub consoles: usize,
    pub watched: usize,
    /// Counted at the consoles' nodes' codecs, all consoles together, per
    /// second: `VmFigures` requests sent and answers received.
    pub figures: Figures,
    /// Whole overlay, per second, beyond the idle overlay's: bytes and
    /// transport writes sent (noisy: see the module's comment).
    pub bytes_per_s: f64,
    pub msgs_per_s: f64,
    /// Answers the simulated hosts gave, per second.
    pub answers_per_s: f64,
}

/// `VmFigures` traffic counted at the codec (CBOR bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub requests: f64,
    pub request_bytes: f64,
    pub answers: f64,
    pub answer_bytes: f64,
}

impl Figures {
    /// A console's side of its node's tallies: the figures it asked and got.
    pub fn of(tallies: &[ControlTally]) -> Self {
        let mut figures = Self::default();
        for t in tallies.iter().filter(|t| t.kind == "VmFigures") {
            match t.message {
                MessageRole::Request => {
                    figures.requests += t.sent as f64;
                    figures.request_bytes += t.sent_bytes as f64;
                }
                MessageRole::Answer => {
                    figures.answers += t.received as f64;
                    figures.answer_bytes += t.received_bytes as f64;
                }
            }
        }
        figures
    }

    fn minus(self, before: Self) -> Self {
        Self {
            requests: self.requests - before.requests,
            request_bytes: self.request_bytes - before.request_bytes,
            answers: self.answers - before.answers,
            answer_bytes: self.answer_bytes - before.answer_bytes,
        }
    }

    fn scaled(self, by: f64) -> Self {
        Self {
            requests: self.requests * by,
            request_bytes: self.request_bytes * by,
            answers: self.answers * by,
            answer_bytes: self.answer_bytes * by,
        }
    }
}

impl Cost {
    pub fn line(&self) -> String {
        let each = self.figures.scaled(1.0 / self.consoles as f64);
        format!(
            "remote figures, {} console(s) each watching {} VMs on as many peers: \
             per console {:.0} B/s of VmFigures ({:.0} B/s requests sent + {:.0} B/s answers received), \
             {:.1} answers/s, {:.0} B per answer, {:.0} B per request (CBOR at the codec); \
             transport beyond idle, whole overlay: {:+.0} B/s, {:+.0} writes/s; hosts answered {:.1}/s",
            self.consoles,
            self.watched,
            each.request_bytes + each.answer_bytes,
            each.request_bytes,
            each.answer_bytes,
            each.answers,
            each.answer_bytes / each.answers.max(1.0),
            each.request_bytes / each.requests.max(1.0),
            self.bytes_per_s,
            self.msgs_per_s,
            self.answers_per_s,
        )
    }
}

/// Consoles on the first `consoles` nodes, each watching up to
/// `SCREEN_ROWS` other nodes' VMs for `window`; the traffic beyond `idle`
/// (the whole overlay's idle traffic per second, same run).
pub async fn measure(
    net: &Arc<Net>,
    clients: &[Client],
    ids: &[PeerId],
    consoles: usize,
    window: Duration,
    idle: (f64, f64),
) -> Cost {
    let mut tasks = Vec::new();
    let mut watchers = Vec::new();
    let mut watched = 0;
    for (console, client) in clients.iter().enumerate().take(consoles) {
        let remote = Arc::new(RemoteVms::new(client.clone()));
        let keys: Vec<RemoteVmKey> = (0..ids.len())
            .filter(|&host| host != console)
            .take(SCREEN_ROWS)
            .map(|host| RemoteVmKey {
                host_id: ids[host].to_string(),
                vm: format!("vm-{host}").as_str().into(),
            })
            .collect();
        watched = keys.len();
        tasks.push(tokio::spawn(remote.clone().run()));
        watchers.push((remote, keys));
    }
    let renew = || {
        for (remote, keys) in &watchers {
            remote.watch(keys.clone());
        }
    };
    renew();
    // The first round asks for the histories: let it pass, measure the
    // steady state (one round's figures per VM per second).
    tokio::time::sleep(Duration::from_secs(5)).await;
    renew();
    let console_figures = || {
        let tallies: Vec<ControlTally> = clients
            .iter()
            .take(consoles)
            .flat_map(Client::control_traffic)
            .collect();
        Figures::of(&tallies)
    };
    let before: Traffic = net.traffic();
    let figures_before = console_figures();
    let answered = ANSWERED.load(Ordering::Relaxed);
    let start = Instant::now();
    while start.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(5).min(window)).await;
        renew();
    }
    let secs = start.elapsed().as_secs_f64();
    let traffic = net.traffic().minus(before);
    let figures = console_figures().minus(figures_before).scaled(1.0 / secs);
    let answers = ANSWERED.load(Ordering::Relaxed) - answered;
    for task in tasks {
        task.abort();
    }
    let shown: usize = watchers.iter().map(|(r, _)| r.views().len()).sum();
    if shown == 0 {
        eprintln!("remote figures: no console got any figures (the overlay did not answer)");
    }
    Cost {
        consoles: watchers.len(),
        watched,
        figures,
        bytes_per_s: traffic.sent_bytes as f64 / secs - idle.0,
        msgs_per_s: traffic.sent_msgs as f64 / secs - idle.1,
        answers_per_s: answers as f64 / secs,
    }
}
