//! The node's state pushed to consoles: a snapshot when one subscribes, then
//! deltas on two clocks that never wait for each other: the stats sampler's
//! rounds (new samples for the charts) and the node's own tick (peers, VMs,
//! services, operations, jobs that changed). The node's state is read by a task
//! of its own, since it waits on the swarm; a busy swarm delays only that
//! part, never the charts.
//!
//! One task keeps the state as the consoles have it (applying each delta it
//! sends with the same `Delta::apply` they use) and answers subscriptions, so a
//! snapshot and the deltas after it always fit together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::api::{Delta, Samples, Update};
use crate::hypervisor::sampler::Round;
use crate::model::Status;
use crate::names::VmName;

/// How often the node's own state is read and compared.
pub const NODE_TICK: Duration = Duration::from_secs(1);
/// Updates a subscriber may fall behind before it is sent a new snapshot.
const BUFFERED: usize = 64;

/// Where the figures (stats, history, host) come from.
pub struct Figures {
    /// The sampler's rounds as it takes them.
    pub rounds: broadcast::Receiver<Round>,
    /// Fills VMs' stats and history and the host figures from the sampler's
    /// board; returns the round they come from.
    pub read: Box<dyn Fn(&mut Status) -> u64 + Send>,
}

type Subscription = (Status, broadcast::Receiver<Arc<Update>>);

/// A handle on the publishing task; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    subscribe: mpsc::Sender<oneshot::Sender<Subscription>>,
}

impl Publisher {
    /// Starts publishing: figures as the sampler takes them, the node's state
    /// as `states` delivers it (whole, without figures; compared here).
    pub fn start(figures: Figures, states: mpsc::Receiver<Status>) -> Publisher {
        let (subscribe, requests) = mpsc::channel(16);
        let (updates, _) = broadcast::channel(BUFFERED);
        tokio::spawn(
            State {
                status: Status::default(),
                applied: 0,
                fresh: HashMap::new(),
                read: figures.read,
                updates,
            }
            .run(figures.rounds, states, requests),
        );
        Publisher { subscribe }
    }

    /// The state now, then every change, until the receiver is dropped. A
    /// subscriber that falls behind is sent a new snapshot.
    pub async fn subscribe(&self) -> Result<mpsc::Receiver<Update>> {
        let (snapshot, updates) = self.ask().await?;
        let (tx, rx) = mpsc::channel(BUFFERED);
        let publisher = self.clone();
        tokio::spawn(async move { publisher.forward(snapshot, updates, tx).await });
        Ok(rx)
    }

    async fn ask(&self) -> Result<Subscription> {
        let gone = || anyhow!("the node stopped publishing its state");
        let (tx, rx) = oneshot::channel();
        self.subscribe.send(tx).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    async fn forward(
        &self,
        snapshot: Status,
        mut updates: broadcast::Receiver<Arc<Update>>,
        tx: mpsc::Sender<Update>,
    ) {
        if tx.send(Update::Snapshot(Box::new(snapshot))).await.is_err() {
            return;
        }
        loop {
            let update = match updates.recv().await {
                Ok(update) => (*update).clone(),
                Err(RecvError::Lagged(_)) => match self.ask().await {
                    Ok((snapshot, again)) => {
                        updates = again;
                        Update::Snapshot(Box::new(snapshot))
                    }
                    Err(_) => return,
                },
                Err(RecvError::Closed) => return,
            };
            if tx.send(update).await.is_err() {
                return;
            }
        }
    }
}

/// The publishing task's own copy of what consoles see.
struct State {
    status: Status,
    /// The last round in `status`.
    applied: u64,
    /// VMs whose figures were read from the board at the given round when they
    /// appeared: earlier rounds still on their way must not add them again.
    fresh: HashMap<VmName, u64>,
    read: Box<dyn Fn(&mut Status) -> u64 + Send>,
    updates: broadcast::Sender<Arc<Update>>,
}

impl State {
    async fn run(
        mut self,
        mut rounds: broadcast::Receiver<Round>,
        mut states: mpsc::Receiver<Status>,
        mut requests: mpsc::Receiver<oneshot::Sender<Subscription>>,
    ) {
        let (mut sampling, mut ticking) = (true, true);
        loop {
            tokio::select! {
                round = rounds.recv(), if sampling => match round {
                    Ok(round) => self.on_round(round),
                    Err(RecvError::Lagged(_)) => self.resync(),
                    Err(RecvError::Closed) => sampling = false,
                },
                state = states.recv(), if ticking => match state {
                    Some(state) => self.on_state(state),
                    None => ticking = false,
                },
                request = requests.recv() => match request {
                    Some(reply) => {
                        let _ = reply.send((self.status.clone(), self.updates.subscribe()));
                    }
                    None => return,
                },
            }
        }
    }

    fn on_round(&mut self, round: Round) {
        if round.number <= self.applied {
            return;
        }
        self.applied = round.number;
        let mut samples = Samples::clone(&round.samples);
        for sample in &mut samples.vms {
            if self
                .fresh
                .get(&sample.name)
                .is_some_and(|at| *at >= round.number)
            {
                // Seen, and already in the figures read for it.
                sample.stats = None;
            }
        }
        self.fresh.retain(|_, at| *at > round.number);
        self.publish(Delta {
            samples: Some(samples),
            ..Delta::default()
        });
    }

    /// The node's state read now: what changed is sent; VMs new to the list
    /// come with the figures the board has for them.
    fn on_state(&mut self, state: Status) {
        let mut delta = Delta::between(&mut self.status, state);
        if let Some(vms) = &mut delta.vms {
            let known: Vec<&str> = self.status.vms.iter().map(|v| v.name.as_str()).collect();
            let mut new = Status {
                vms: vms
                    .iter()
                    .filter(|v| !known.contains(&v.name.as_str()))
                    .cloned()
                    .collect(),
                ..Status::default()
            };
            if !new.vms.is_empty() {
                let at = (self.read)(&mut new);
                for read in new.vms {
                    if let Some(vm) = vms.iter_mut().find(|v| v.name == read.name) {
                        vm.stats = read.stats;
                        vm.history = read.history;
                    }
                    if at > self.applied {
                        self.fresh.insert(read.name, at);
                    }
                }
            }
        }
        if !delta.is_empty() {
            self.publish(delta);
        }
    }

    /// Fell behind the sampler: figures read again, everyone sent a snapshot.
    fn resync(&mut self) {
        self.applied = (self.read)(&mut self.status);
        self.fresh.clear();
        let snapshot = Update::Snapshot(Box::new(self.status.clone()));
        let _ = self.updates.send(Arc::new(snapshot));
    }

    fn publish(&mut self, delta: Delta) {
        delta.clone().apply(&mut self.status);
        // No subscriber is fine.
        let _ = self.updates.send(Arc::new(Update::Delta(Box::new(delta))));
    }
}

impl super::Peer {
    /// The node's state pushed as it changes (see the module doc).
    pub async fn subscribe(&self) -> Result<mpsc::Receiver<Update>> {
        self.updates.subscribe().await
    }

    /// Reads the node's state on its own clock for the publisher. It waits on
    /// the swarm; a slow answer delays the next reading, nothing else.
    pub(super) async fn read_node_state(self: Arc<Self>, states: mpsc::Sender<Status>) {
        let mut tick = tokio::time::interval(NODE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.node_state().await {
                Ok(state) => {
                    if states.send(state).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::debug!("node state for the consoles: {e:#}"),
            }
        }
    }
}

/// Figures from a host's stats sampler.
pub fn figures_of(host: &crate::hypervisor::Host) -> Figures {
    let board = host.clone();
    Figures {
        rounds: host.stats_rounds(),
        read: Box::new(move |status: &mut Status| {
            status.local.host = board.host_stats();
            board.annotate(&mut status.vms)
        }),
    }
}

#[cfg(test)]
mod tests;
