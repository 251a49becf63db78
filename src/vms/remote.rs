//! VMs on other peers: requests passed on to their hosts (`VmAction`, which
//! the host answers only for a peer it granted the control role), and figures
//! fetched from their hosts over the overlay
//! (`VmFigures`, observe role) for what consoles have on screen: each console
//! renews its watch (`Request::Watch`), a watch lapses after `WATCH_TTL_S`, and
//! each host is asked at most once per `PER_HOST_EVERY` with one request naming
//! all its watched VMs, one request in flight per host.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use libp2p::PeerId;

use crate::api::{RemoteVmKey, Reply, Request, WATCH_TTL_S};
use crate::model::{PeerView, RemoteVmView, VmView};
use crate::names::VmName;
use crate::node::Client;
use crate::node::protocol::{ControlRequest, ControlResponse, MAX_FIGURES};

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
    fn due(&mut self, now: Instant) -> Vec<(String, Vec<VmName>)> {
        let mut by_host: BTreeMap<String, Vec<VmName>> = BTreeMap::new();
        for (key, until) in &self.watched {
            if *until > now {
                by_host
                    .entry(key.host_id.clone())
                    .or_default()
                    .push(key.vm.clone());
            }
        }
        let due: Vec<(String, Vec<VmName>)> = by_host
            .into_iter()
            .filter(|(host, _)| {
                !self.in_flight.contains(host)
                    && self
                        .last_asked
                        .get(host)
                        .is_none_or(|at| now.duration_since(*at) >= PER_HOST_EVERY)
            })
            .collect();
        for (host, _) in &due {
            self.in_flight.insert(host.clone());
            self.last_asked.insert(host.clone(), now);
        }
        due
    }
}

/// Other peers' VMs: their figures as this node fetched them, and requests
/// passed on to their hosts.
pub struct RemoteVms {
    node: Client,
    state: Mutex<State>,
}

impl RemoteVms {
    pub fn new(node: Client) -> RemoteVms {
        RemoteVms {
            node,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
            for (host, names) in self.state().due(Instant::now()) {
                let this = self.clone();
                tokio::spawn(async move {
                    let answer = this.fetch_from(&host, names).await;
                    this.answered(&host, answer);
                });
            }
        }
    }

    fn answered(&self, host: &str, answer: Result<Vec<VmView>>) {
        let mut state = self.state();
        state.in_flight.remove(host);
        match answer {
            Ok(vms) => {
                let now = Instant::now();
                for vm in vms {
                    let key = RemoteVmKey {
                        host_id: host.to_string(),
                        vm: vm.name.clone(),
                    };
                    state.figures.insert(key, (vm, now));
                }
            }
            Err(e) => tracing::debug!("figures from {host}: {e:#}"),
        }
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

    /// Every VM the other peers announce, with figures asked of each host now
    /// (the one-shot `status`); hosts that do not answer are left out.
    pub async fn fetch_all(&self, peers: &[PeerView]) -> Vec<RemoteVmView> {
        let asks = peers.iter().filter(|p| p.connected).filter_map(|p| {
            let names = p.vms.clone().filter(|v| !v.is_empty())?;
            Some(async move {
                let answer = self.fetch_from(&p.peer_id, names).await;
                (p.peer_id.clone(), answer)
            })
        });
        let mut views = Vec::new();
        for (host_id, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(vms) => views.extend(vms.into_iter().map(|vm| RemoteVmView {
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
    pub async fn fetch_from(&self, host: &str, mut names: Vec<VmName>) -> Result<Vec<VmView>> {
        let peer: PeerId = host
            .parse()
            .map_err(|_| anyhow::anyhow!("bad peer id {host:?}"))?;
        names.truncate(MAX_FIGURES);
        let request = ControlRequest::VmFigures {
            vms: names.iter().map(|n| n.to_string()).collect(),
        };
        let answer = tokio::time::timeout(ANSWER_WITHIN, self.node.request(peer, request)).await;
        match answer {
            Err(_) => bail!("no answer within {} s", ANSWER_WITHIN.as_secs()),
            Ok(Err(e)) => Err(e),
            Ok(Ok(ControlResponse::VmFigures { vms })) => Ok(vms
                .into_iter()
                .filter(|vm| names.contains(&vm.name))
                .collect()),
            Ok(Ok(ControlResponse::Refused { reason })) => bail!("{reason}"),
            Ok(Ok(other)) => bail!("unexpected answer {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// One request per host naming all its watched VMs, and a host is not
    /// asked again before `PER_HOST_EVERY` nor while its answer is pending.
    #[test]
    fn each_host_is_asked_once_per_interval_for_all_its_watched_vms() {
        let mut state = state_with(&[key("c", "web-1"), key("c", "web-2"), key("d", "db")]);
        let t0 = Instant::now();
        let mut first = state.due(t0);
        first.iter_mut().for_each(|(_, names)| names.sort());
        assert_eq!(
            first,
            vec![
                ("c".to_string(), vec!["web-1".into(), "web-2".into()]),
                ("d".to_string(), vec!["db".into()]),
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

    /// A watch that is not renewed lapses, and its figures go with it.
    #[test]
    fn a_lapsed_watch_drops_its_figures() {
        let mut state = state_with(&[key("c", "web-1")]);
        let now = Instant::now();
        state.figures.insert(
            key("c", "web-1"),
            (
                VmView {
                    name: "web-1".into(),
                    ..VmView::default()
                },
                now,
            ),
        );
        assert_eq!(state.views(now).len(), 1, "watched and fresh");
        state.watched.insert(key("c", "web-1"), now);
        assert!(state.views(now).is_empty(), "lapsed: figures dropped");
        assert!(
            state.due(now + Duration::from_secs(1)).is_empty(),
            "a lapsed watch asks nobody"
        );
    }
}
