//! What a node pushes to a subscribed console (bottom's `Update(Box<Data>)`):
//! its whole state once, then what changed: each stats round of the sampler
//! (new samples, appended to the history rings), and the sections of the
//! node's state that changed (peers, VMs, services, operations, jobs, ...),
//! each sent whole. `Delta::apply` is how both the node's own copy and the
//! console's move forward, so they stay the same.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::model::{
    ConsumptionView, HostStats, JobSourceView, JobView, LocalPeer, OperationView, PeerView,
    PenaltyView, RemoteVmView, ServiceView, Status, VmHistory, VmStats, VmView,
};
use crate::names::VmName;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "update", rename_all = "snake_case")]
pub enum Update {
    /// The whole state: first, and again whenever the subscriber fell behind.
    Snapshot(Box<Status>),
    /// What changed since the previous update.
    Delta(Box<Delta>),
}

/// Changes to a `Status`. A section that is `None` did not change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Delta {
    /// One round of the stats sampler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<Samples>,
    /// This peer (its `host` figures come with the samples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<PeerView>>,
    /// The VMs without `stats` and `history` (the samples carry those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vms: Option<Vec<VmView>>,
    /// Other peers' VMs with the figures their hosts gave (sent whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_vms: Option<Vec<RemoteVmView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<Vec<OperationView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial_errors: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ServiceView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumptions: Option<Vec<ConsumptionView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Vec<JobView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_sources: Option<Vec<JobSourceView>>,
    /// `Some(None)`: the penalty run is gone.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub penalty: Option<Option<PenaltyView>>,
}

/// One stats round: the host's figures and the latest rates of every VM the
/// sampler saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Samples {
    /// Seconds between rounds.
    pub interval_s: f64,
    /// Samples a VM's history keeps.
    pub keep: usize,
    pub host: Option<HostStats>,
    pub vms: Vec<VmSample>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VmSample {
    pub name: VmName,
    /// New rates, appended to the history; `None`: seen, but no new rate this
    /// round (its first sample, or counters that went back), figures kept.
    pub stats: Option<VmStats>,
}

/// A field present in the JSON (even as `null`) is `Some`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        *self == Delta::default()
    }

    /// True when something other than figures changed: rows may have come or
    /// gone (samples only reorder a list sorted by a rate).
    pub fn changes_rows(&self) -> bool {
        self.vms.is_some()
            || self.peers.is_some()
            || self.services.is_some()
            || self.operations.is_some()
            || self.remote_vms.is_some()
            || self.jobs.is_some()
            || self.local.is_some()
    }

    /// The changes between `old` and `new`, where `new` is the node's state
    /// read now, without stats, history and host figures (the samples carry
    /// those; `old` has them, they are left out of the comparison).
    pub fn between(old: &mut Status, new: Status) -> Delta {
        fn changed<T: PartialEq>(old: &T, new: T) -> Option<T> {
            (*old != new).then_some(new)
        }
        let host = old.local.host.take();
        let local = changed(&old.local, new.local);
        old.local.host = host;
        let figures: Vec<_> = old
            .vms
            .iter_mut()
            .map(|vm| (vm.stats.take(), vm.history.take()))
            .collect();
        let vms = changed(&old.vms, new.vms);
        for (vm, (stats, history)) in old.vms.iter_mut().zip(figures) {
            vm.stats = stats;
            vm.history = history;
        }
        Delta {
            samples: None,
            local,
            peers: changed(&old.peers, new.peers),
            vms,
            remote_vms: changed(&old.remote_vms, new.remote_vms),
            operations: changed(&old.operations, new.operations),
            dial_errors: changed(&old.dial_errors, new.dial_errors),
            services: changed(&old.services, new.services),
            consumptions: changed(&old.consumptions, new.consumptions),
            jobs: changed(&old.jobs, new.jobs),
            job_sources: changed(&old.job_sources, new.job_sources),
            penalty: changed(&old.penalty, new.penalty),
        }
    }

    /// Moves `status` forward: changed sections replace the old ones (VMs keep
    /// their figures), then the samples are appended.
    pub fn apply(self, status: &mut Status) {
        if let Some(mut local) = self.local {
            local.host = status.local.host.take();
            status.local = local;
        }
        if let Some(mut vms) = self.vms {
            let mut figures: HashMap<VmName, (Option<VmStats>, Option<VmHistory>)> = status
                .vms
                .drain(..)
                .map(|vm| (vm.name, (vm.stats, vm.history)))
                .collect();
            for vm in &mut vms {
                if let Some((stats, history)) = figures.remove(&vm.name) {
                    vm.stats = stats;
                    vm.history = history;
                }
            }
            status.vms = vms;
        }
        replace(&mut status.peers, self.peers);
        replace(&mut status.remote_vms, self.remote_vms);
        replace(&mut status.operations, self.operations);
        replace(&mut status.dial_errors, self.dial_errors);
        replace(&mut status.services, self.services);
        replace(&mut status.consumptions, self.consumptions);
        replace(&mut status.jobs, self.jobs);
        replace(&mut status.job_sources, self.job_sources);
        if let Some(penalty) = self.penalty {
            status.penalty = penalty;
        }
        if let Some(samples) = self.samples {
            samples.apply(status);
        }
    }
}

impl Samples {
    /// As the sampler keeps them: a VM it saw gets its new rate appended (the
    /// oldest dropped past `keep`); a VM it did not see loses its figures.
    fn apply(self, status: &mut Status) {
        status.local.host = self.host;
        let mut seen: HashMap<VmName, Option<VmStats>> =
            self.vms.into_iter().map(|s| (s.name, s.stats)).collect();
        for vm in &mut status.vms {
            match seen.remove(&vm.name) {
                None => {
                    vm.stats = None;
                    vm.history = None;
                }
                Some(None) => {}
                Some(Some(stats)) => {
                    let history = vm.history.get_or_insert_with(|| VmHistory {
                        interval_s: self.interval_s,
                        ..VmHistory::default()
                    });
                    push(history, &stats, self.keep);
                    vm.stats = Some(stats);
                }
            }
        }
    }
}

fn replace<T>(old: &mut T, new: Option<T>) {
    if let Some(new) = new {
        *old = new;
    }
}

/// Appends one tick's rates, dropping the oldest past `keep`; a tick without
/// a CPU figure is left out whole, as the node's own history does
/// (`hypervisor::stats::History::push`).
pub fn push(history: &mut VmHistory, s: &VmStats, keep: usize) {
    let Some(cpu_pct_guest) = s.cpu_pct_guest else {
        return;
    };
    let put = |ring: &mut Vec<f64>, v: f64| {
        ring.push(v);
        if ring.len() > keep {
            ring.drain(..ring.len() - keep);
        }
    };
    put(&mut history.cpu_pct_guest, cpu_pct_guest);
    put(&mut history.disk_read_bps, s.disk_read_bps);
    put(&mut history.disk_write_bps, s.disk_write_bps);
    put(&mut history.net_rx_bps, s.net_rx_bps);
    put(&mut history.net_tx_bps, s.net_tx_bps);
    put(&mut history.span_s, s.span_s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OperationPhase, VmState};

    fn vm(name: &str) -> VmView {
        VmView {
            name: name.into(),
            state: VmState::Running,
            ..VmView::default()
        }
    }

    fn rate(cpu: f64) -> VmStats {
        VmStats {
            cpu_pct_guest: Some(cpu),
            net_rx_bps: cpu * 10.0,
            ..VmStats::default()
        }
    }

    fn round(vms: &[(&str, Option<f64>)]) -> Delta {
        Delta {
            samples: Some(Samples {
                interval_s: 1.0,
                keep: 3,
                host: Some(HostStats {
                    cpus: 2,
                    ..HostStats::default()
                }),
                vms: vms
                    .iter()
                    .map(|(name, cpu)| VmSample {
                        name: (*name).into(),
                        stats: cpu.map(rate),
                    })
                    .collect(),
            }),
            ..Delta::default()
        }
    }

    #[test]
    fn samples_append_to_the_rings_and_keep_only_the_newest() {
        let mut status = Status {
            vms: vec![vm("a"), vm("b")],
            ..Status::default()
        };
        for cpu in [1.0, 2.0, 3.0, 4.0] {
            round(&[("a", Some(cpu)), ("b", None)]).apply(&mut status);
        }
        let a = &status.vms[0];
        assert_eq!(a.stats.as_ref().unwrap().cpu_pct_guest, Some(4.0));
        let history = a.history.as_ref().unwrap();
        assert_eq!(history.cpu_pct_guest, vec![2.0, 3.0, 4.0]);
        assert_eq!(history.net_rx_bps, vec![20.0, 30.0, 40.0]);
        assert_eq!(status.vms[1].history, None, "seen, never rated");
        assert_eq!(status.local.host.as_ref().unwrap().cpus, 2);
        // A VM the sampler no longer sees loses its figures.
        round(&[("b", Some(5.0))]).apply(&mut status);
        assert_eq!(status.vms[0].stats, None);
        assert_eq!(status.vms[0].history, None);
        assert_eq!(
            status.vms[1].history.as_ref().unwrap().cpu_pct_guest,
            vec![5.0]
        );
    }

    #[test]
    fn a_changed_section_replaces_the_old_and_vms_keep_their_figures() {
        let mut status = Status {
            vms: vec![vm("a")],
            ..Status::default()
        };
        round(&[("a", Some(7.0))]).apply(&mut status);
        let before = status.clone();

        // The node's state read now: no figures, a VM stopped, one added, an operation.
        let mut node = Status {
            vms: vec![vm("a"), vm("c")],
            ..Status::default()
        };
        node.vms[0].state = VmState::Paused;
        node.operations.push(OperationView {
            id: 1,
            phase: OperationPhase::Transferring,
            ..OperationView::default()
        });
        let delta = Delta::between(&mut status, node.clone());
        assert_eq!(status, before, "comparing leaves the old state as it was");
        assert!(delta.vms.is_some() && delta.operations.is_some());
        assert!(delta.peers.is_none() && delta.local.is_none() && delta.penalty.is_none());
        assert!(delta.changes_rows());
        delta.apply(&mut status);
        assert_eq!(status.vms[0].state, VmState::Paused);
        assert_eq!(
            status.vms[0].stats.as_ref().unwrap().cpu_pct_guest,
            Some(7.0)
        );
        assert_eq!(status.vms[1].name, "c");
        assert_eq!(status.operations.len(), 1);

        // Nothing changed: nothing to send, figures aside.
        assert!(Delta::between(&mut status, node).is_empty());
    }

    #[test]
    fn updates_cross_the_wire_as_they_were() {
        let mut delta = round(&[("a", Some(1.0)), ("b", None)]);
        delta.penalty = Some(None);
        delta.peers = Some(vec![PeerView::default()]);
        let update = Update::Delta(Box::new(delta));
        let json = serde_json::to_string(&update).unwrap();
        assert!(
            json.starts_with(r#"{"update":"delta","samples":"#),
            "{json}"
        );
        assert!(
            !json.contains("\"operations\"") && !json.contains("\"local\""),
            "unchanged sections are left out: {json}"
        );
        assert_eq!(serde_json::from_str::<Update>(&json).unwrap(), update);
        let snapshot = Update::Snapshot(Box::default());
        let json = serde_json::to_string(&snapshot).unwrap();
        assert_eq!(serde_json::from_str::<Update>(&json).unwrap(), snapshot);
    }
}
