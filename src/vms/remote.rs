//! VMs on other peers: requests passed on to their hosts (`VmAction`, which
//! the host answers only for a peer it granted the control role), and figures
//! fetched from their hosts over the overlay
//! (`VmFigures`, observe role) for what consoles have on screen: each console
//! renews its watch (`Request::Watch`), a watch lapses after `WATCH_TTL_S`, and
//! each host is asked at most once per `PER_HOST_EVERY` with one request naming
//! all its watched VMs, one request in flight per host. Their operations
//! (`remote_ops.rs`): those moving watched VMs come with the figures; those
//! this node started on a host are asked for by id, at the same bounded rate.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use libp2p::PeerId;

use super::remote_ops::{Ended, RemoteOps};
use crate::api::update::push;
use crate::api::{RemoteVmKey, Reply, Request, WATCH_TTL_S};
use crate::model::{OperationKind, OperationView, PeerView, RemoteVmView, VmView};
use crate::names::VmName;
use crate::node::Client;
use crate::node::protocol::{ControlRequest, ControlResponse, MAX_FIGURES, MAX_FIGURES_HISTORY};

/// The fastest a host is asked for figures (its sampler's default interval).
pub const PER_HOST_EVERY: Duration = Duration::from_secs(1);
/// An answer older than this is dropped (the host went quiet).
const STALE_AFTER: Duration = Duration::from_secs(10);
/// How long one host may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// VMs one node watches at once, all consoles together.
const MAX_WATCHED: usize = 1024;

#[derive(Default)]
struct State {
    /// What consoles watch, until when.
    watched: HashMap<RemoteVmKey, Instant>,
    /// The latest answer for each VM, and when it came.
    figures: HashMap<RemoteVmKey, (VmView, Instant)>,
    /// Hosts asked and not yet answered, and when each was last asked.
    in_flight: BTreeSet<String>,
    last_asked: HashMap<String, Instant>,
    /// The sampler round of each host's last answer: the next round's
    /// figures extend the histories kept here.
    last_round: HashMap<String, u64>,
    /// Hosts whose histories must be asked for again (a round was missed).
    stale_history: HashSet<String>,
}

/// One host to ask: the VMs, and whether their histories are needed.
#[derive(Debug, PartialEq)]
struct Ask {
    host: String,
    vms: Vec<VmName>,
    history: bool,
}

impl State {
    /// Drops lapsed watches and stale answers; the rest as views.
    fn views(&mut self, now: Instant) -> Vec<RemoteVmView> {
        self.watched.retain(|_, until| *until > now);
        let watched = &self.watched;
        self.figures
            .retain(|key, (_, at)| watched.contains_key(key) && now - *at < STALE_AFTER);
        let mut views: Vec<RemoteVmView> = self
            .figures
            .iter()
            .map(|(key, (vm, at))| RemoteVmView {
                host_id: key.host_id.clone(),
                vm: vm.clone(),
                age_s: (now - *at).as_secs(),
            })
            .collect();
        views.sort_by(|a, b| (&a.host_id, &a.vm.name).cmp(&(&b.host_id, &b.vm.name)));
        views
    }

    /// Hosts to ask now with the names to ask for; marks them in flight.
    fn due(&mut self, now: Instant) -> Vec<Ask> {
        let mut by_host: BTreeMap<String, Vec<VmName>> = BTreeMap::new();
        for (key, until) in &self.watched {
            if *until > now {
                by_host
                    .entry(key.host_id.clone())
                    .or_default()
                    .push(key.vm.clone());
            }
        }
        let mut due = Vec::new();
        for (host, vms) in by_host {
            let asked_lately = self
                .last_asked
                .get(&host)
                .is_some_and(|at| now.duration_since(*at) < PER_HOST_EVERY);
            if self.in_flight.contains(&host) || asked_lately {
                continue;
            }
            let history = !self.last_round.contains_key(&host)
                || self.stale_history.contains(&host)
                || vms.iter().any(|vm| {
                    !self.figures.contains_key(&RemoteVmKey {
                        host_id: host.clone(),
                        vm: vm.clone(),
                    })
                });
            self.in_flight.insert(host.clone());
            self.last_asked.insert(host.clone(), now);
            due.push(Ask { host, vms, history });
        }
        due
    }

    /// A host's answer: with histories, they replace what is kept; without,
    /// the next round's figures are appended to them, and a missed round has
    /// the histories asked for again.
    fn answered(&mut self, ask: &Ask, round: u64, vms: Vec<VmView>, now: Instant) {
        let host = &ask.host;
        let previous = self.last_round.insert(host.clone(), round);
        let next_round = previous.is_some_and(|r| round == r + 1);
        let same_round = previous == Some(round);
        if ask.history {
            self.stale_history.remove(host);
        }
        for vm in vms {
            let key = RemoteVmKey {
                host_id: host.clone(),
                vm: vm.name.clone(),
            };
            let kept = self.figures.get_mut(&key).filter(|_| !ask.history);
            let Some((old, at)) = kept else {
                if !ask.history {
                    self.stale_history.insert(host.clone());
                }
                self.figures.insert(key, (vm, now));
                continue;
            };
            let mut history = old.history.take();
            match (history.as_mut(), &vm.stats) {
                (Some(h), Some(stats)) if next_round => push(h, stats, MAX_FIGURES_HISTORY),
                _ if same_round => {}
                _ => {
                    self.stale_history.insert(host.clone());
                }
            }
            *old = VmView { history, ..vm };
            *at = now;
        }
    }
}

/// Other peers' VMs: their figures as this node fetched them, and requests
/// passed on to their hosts.
pub struct RemoteVms {
    node: Client,
    state: Mutex<State>,
    ops: Mutex<RemoteOps>,
}

/// One host's answer to `VmFigures`.
pub struct Figures {
    pub round: u64,
    pub vms: Vec<VmView>,
    /// The host's operations on those VMs.
    pub operations: Vec<OperationView>,
}

impl RemoteVms {
    pub fn new(node: Client) -> RemoteVms {
        RemoteVms {
            node,
            state: Mutex::new(State::default()),
            ops: Mutex::new(RemoteOps::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ops(&self) -> std::sync::MutexGuard<'_, RemoteOps> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Other peers' operations to show: started from here, or moving
    /// watched VMs.
    pub fn operations(&self) -> Vec<OperationView> {
        self.ops().views(Instant::now())
    }

    /// A host's answer that it began an operation (`MigrationStarted`,
    /// `ReplicationStarted`) asked from here: followed until it ends.
    pub fn follow(&self, host: PeerId, host_name: &str, started: &Reply) -> Option<u64> {
        let (kind, vm, to, id) = match started {
            Reply::MigrationStarted { vm, to, operation } => {
                (OperationKind::MigrateOut, vm, to, *operation)
            }
            Reply::ReplicationStarted { vm, to, operation } => {
                (OperationKind::ReplicateOut, vm, to, *operation)
            }
            _ => return None,
        };
        let view = OperationView {
            id,
            kind,
            vm: vm.clone(),
            peer: to.clone(),
            host: Some(host_name.to_string()),
            ..OperationView::default()
        };
        self.ops().follow(&host.to_string(), view, Instant::now());
        Some(id)
    }

    /// Waits for the end of an operation followed on `host`: its report, or
    /// the host's reason it failed (or why its outcome is unknown here).
    pub async fn wait_for(&self, host: PeerId, id: u64) -> Result<Reply> {
        let host = host.to_string();
        loop {
            if let Some(ended) = self.ops().ended(&host, id) {
                return match ended {
                    Ended::Done(Some(report)) => Ok(report),
                    Ended::Done(None) => {
                        let view = self.ops().view(&host, id).unwrap_or_default();
                        Ok(Reply::Done {
                            message: format!(
                                "{} of VM '{}' to {} done",
                                match view.kind {
                                    OperationKind::ReplicateOut => "replication",
                                    _ => "migration",
                                },
                                view.vm,
                                view.peer
                            ),
                        })
                    }
                    Ended::Failed(reason) => bail!("{reason}"),
                };
            }
            tokio::time::sleep(PER_HOST_EVERY / 4).await;
        }
    }

    /// Asks a host how the operations followed there are going.
    async fn follow_up(&self, host: &str, ids: Vec<u64>) {
        let Ok(peer) = host.parse::<PeerId>() else {
            return;
        };
        let name = self.node.peer_label(peer).await;
        let request = ControlRequest::Operations { ids: ids.clone() };
        let answer = tokio::time::timeout(ANSWER_WITHIN, self.node.request(peer, request)).await;
        let now = Instant::now();
        let error = match answer {
            Ok(Ok(ControlResponse::Operations { operations })) => {
                self.ops().answered(host, &name, &ids, operations, now);
                return;
            }
            Err(_) => format!("no answer within {} s", ANSWER_WITHIN.as_secs()),
            Ok(Err(e)) => format!("{e:#}"),
            Ok(Ok(ControlResponse::Refused { reason })) => reason,
            Ok(Ok(other)) => format!("unexpected answer {other:?}"),
        };
        tracing::debug!("operations on {name}: {error}");
        self.ops().unanswered(host, &name, &error, now);
    }

    /// A console's watch: these VMs are on its screen now.
    pub fn watch(&self, vms: Vec<RemoteVmKey>) {
        let until = Instant::now() + Duration::from_secs(WATCH_TTL_S);
        let mut state = self.state();
        for key in vms {
            if state.watched.len() >= MAX_WATCHED && !state.watched.contains_key(&key) {
                break;
            }
            state.watched.insert(key, until);
        }
    }

    /// The watched VMs' latest figures, for the node's state.
    pub fn views(&self) -> Vec<RemoteVmView> {
        self.state().views(Instant::now())
    }

    /// Asks the hosts of watched VMs for their figures, each host at most once
    /// per `PER_HOST_EVERY`, until the node stops.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PER_HOST_EVERY / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let asks = self.state().due(Instant::now());
            for ask in asks {
                let this = self.clone();
                tokio::spawn(async move {
                    let answer = this
                        .fetch_from(&ask.host, ask.vms.clone(), ask.history)
                        .await;
                    this.state().in_flight.remove(&ask.host);
                    match answer {
                        Ok(figures) => this.take_figures(&ask, figures).await,
                        Err(e) => tracing::debug!("figures from {}: {e:#}", ask.host),
                    }
                });
            }
            let follow = self.ops().due(PER_HOST_EVERY, Instant::now());
            for (host, ids) in follow {
                let this = self.clone();
                tokio::spawn(async move { this.follow_up(&host, ids).await });
            }
        }
    }

    /// A host's figures answer: the figures, and its operations on them.
    async fn take_figures(&self, ask: &Ask, figures: Figures) {
        let Figures {
            round,
            vms,
            operations,
        } = figures;
        self.state().answered(ask, round, vms, Instant::now());
        if operations.is_empty() {
            return;
        }
        let Ok(peer) = ask.host.parse::<PeerId>() else {
            return;
        };
        let name = self.node.peer_label(peer).await;
        let operations = operations.into_iter().map(|op| (op, None)).collect();
        self.ops()
            .observed(&ask.host, &name, operations, Instant::now());
    }

    /// Passes an operator's request on a VM to its host; its answer, or its
    /// refusal (which names the host and the role) as the error.
    pub async fn act(&self, host: PeerId, request: Request) -> Result<Reply> {
        match self
            .node
            .request(host, ControlRequest::VmAction { request })
            .await?
        {
            ControlResponse::Acted { reply } => Ok(reply),
            ControlResponse::Refused { reason } => bail!("{reason}"),
            other => bail!("unexpected answer from {host}: {other:?}"),
        }
    }

    /// The end of a VM's boot log, asked of its host (observe role).
    pub async fn boot_log(&self, host: PeerId, vm: &VmName) -> Result<crate::api::BootLog> {
        let request = ControlRequest::VmBootLog { vm: vm.to_string() };
        match self.ask(host, request).await? {
            ControlResponse::BootLog { log } => Ok(log),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// A request to a host, answered within `ANSWER_WITHIN`; its refusal
    /// (which names the host) as the error.
    async fn ask(&self, host: PeerId, request: ControlRequest) -> Result<ControlResponse> {
        match tokio::time::timeout(ANSWER_WITHIN, self.node.request(host, request)).await {
            Err(_) => bail!("no answer within {} s", ANSWER_WITHIN.as_secs()),
            Ok(Err(e)) => Err(e),
            Ok(Ok(ControlResponse::Refused { reason })) => bail!("{reason}"),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    /// Every VM the other peers announce, with figures asked of each host now
    /// (the one-shot `status`); hosts that do not answer are left out.
    pub async fn fetch_all(&self, peers: &[PeerView]) -> Vec<RemoteVmView> {
        let asks = peers.iter().filter(|p| p.connected).filter_map(|p| {
            let names = p.vms.clone().filter(|v| !v.is_empty())?;
            Some(async move {
                let answer = self.fetch_from(&p.peer_id, names, true).await;
                (p.peer_id.clone(), answer)
            })
        });
        let mut views = Vec::new();
        for (host_id, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(Figures { vms, .. }) => views.extend(vms.into_iter().map(|vm| RemoteVmView {
                    host_id: host_id.clone(),
                    vm,
                    age_s: 0,
                })),
                Err(e) => tracing::debug!("figures from {host_id}: {e:#}"),
            }
        }
        views
    }

    /// One host's figures of the named VMs, now (also `status` and `vm stats`).
    pub async fn fetch_from(
        &self,
        host: &str,
        mut names: Vec<VmName>,
        history: bool,
    ) -> Result<Figures> {
        let peer: PeerId = host
            .parse()
            .map_err(|_| anyhow::anyhow!("bad peer id {host:?}"))?;
        names.truncate(MAX_FIGURES);
        let request = ControlRequest::VmFigures {
            vms: names.iter().map(|n| n.to_string()).collect(),
            history,
        };
        match self.ask(peer, request).await? {
            ControlResponse::VmFigures {
                vms,
                round,
                operations,
            } => Ok(Figures {
                round,
                vms: vms
                    .into_iter()
                    .filter(|vm| names.contains(&vm.name))
                    .take(MAX_FIGURES)
                    .collect(),
                operations: operations
                    .into_iter()
                    .filter(|op| names.contains(&op.vm))
                    .take(MAX_FIGURES)
                    .collect(),
            }),
            other => bail!("unexpected answer {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{VmHistory, VmStats};

    fn key(host: &str, vm: &str) -> RemoteVmKey {
        RemoteVmKey {
            host_id: host.into(),
            vm: vm.into(),
        }
    }

    fn state_with(watch: &[RemoteVmKey]) -> State {
        let until = Instant::now() + Duration::from_secs(WATCH_TTL_S);
        State {
            watched: watch.iter().map(|k| (k.clone(), until)).collect(),
            ..State::default()
        }
    }

    fn vm(name: &str, cpu: f64, history: Option<&[f64]>) -> VmView {
        VmView {
            name: name.into(),
            stats: Some(VmStats {
                cpu_pct_guest: Some(cpu),
                ..VmStats::default()
            }),
            history: history.map(|h| VmHistory {
                cpu_pct_guest: h.to_vec(),
                ..VmHistory::default()
            }),
            ..VmView::default()
        }
    }

    fn cpu_history(state: &mut State, now: Instant) -> Vec<f64> {
        let views = state.views(now);
        views[0].vm.history.as_ref().unwrap().cpu_pct_guest.clone()
    }

    /// One request per host naming all its watched VMs, and a host is not
    /// asked again before `PER_HOST_EVERY` nor while its answer is pending.
    #[test]
    fn each_host_is_asked_once_per_interval_for_all_its_watched_vms() {
        let mut state = state_with(&[key("c", "web-1"), key("c", "web-2"), key("d", "db")]);
        let t0 = Instant::now();
        let mut first = state.due(t0);
        first.iter_mut().for_each(|ask| ask.vms.sort());
        assert_eq!(
            first,
            vec![
                Ask {
                    host: "c".into(),
                    vms: vec!["web-1".into(), "web-2".into()],
                    history: true,
                },
                Ask {
                    host: "d".into(),
                    vms: vec!["db".into()],
                    history: true,
                },
            ]
        );
        assert!(
            state.due(t0 + PER_HOST_EVERY * 2).is_empty(),
            "answers pending"
        );
        state.in_flight.clear();
        assert!(state.due(t0 + PER_HOST_EVERY / 2).is_empty(), "too soon");
        assert_eq!(state.due(t0 + PER_HOST_EVERY).len(), 2);
    }

    /// Histories cross the overlay once: the next rounds' figures are
    /// appended here; a missed round has them asked for again.
    #[test]
    fn histories_are_asked_once_then_extended_round_by_round() {
        let mut state = state_with(&[key("c", "web-1")]);
        let t0 = Instant::now();
        let ask = state.due(t0).remove(0);
        assert!(ask.history);
        state.in_flight.clear();
        state.answered(&ask, 7, vec![vm("web-1", 2.0, Some(&[1.0, 2.0]))], t0);
        assert_eq!(cpu_history(&mut state, t0), [1.0, 2.0]);

        let t1 = t0 + PER_HOST_EVERY;
        let ask = state.due(t1).remove(0);
        assert!(!ask.history, "history already here");
        state.in_flight.clear();
        state.answered(&ask, 8, vec![vm("web-1", 3.0, None)], t1);
        assert_eq!(cpu_history(&mut state, t1), [1.0, 2.0, 3.0]);
        // The same round again adds nothing.
        state.answered(&ask, 8, vec![vm("web-1", 3.0, None)], t1);
        assert_eq!(cpu_history(&mut state, t1), [1.0, 2.0, 3.0]);

        // Round 9 was missed: the figures are taken, the history asked again.
        state.answered(&ask, 10, vec![vm("web-1", 5.0, None)], t1);
        let views = state.views(t1);
        assert_eq!(views[0].vm.stats.as_ref().unwrap().cpu_pct_guest, Some(5.0));
        let t2 = t1 + PER_HOST_EVERY;
        assert!(state.due(t2).remove(0).history, "history asked again");
    }

    /// A watch that is not renewed lapses, and its figures go with it.
    #[test]
    fn a_lapsed_watch_drops_its_figures() {
        let mut state = state_with(&[key("c", "web-1")]);
        let now = Instant::now();
        let ask = state.due(now).remove(0);
        state.answered(&ask, 1, vec![vm("web-1", 1.0, None)], now);
        assert_eq!(state.views(now).len(), 1, "watched and fresh");
        state.watched.insert(key("c", "web-1"), now);
        assert!(state.views(now).is_empty(), "lapsed: figures dropped");
        state.in_flight.clear();
        assert!(
            state.due(now + Duration::from_secs(2)).is_empty(),
            "a lapsed watch asks nobody"
        );
    }
}
