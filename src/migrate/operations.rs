//! Running and recent migrations and replications, for the console and
//! `status`, and for other peers that follow them (`ControlRequest::Operations`).

use std::sync::Mutex;
use std::time::Instant;

use crate::api::Reply;
use crate::hypervisor::job::JobSample;
use crate::model::{OperationKind, OperationPhase, OperationView};

const KEEP_FINISHED: usize = 20;

#[derive(Default)]
pub struct Operations {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    ops: Vec<Entry>,
}

struct Entry {
    view: OperationView,
    started: Instant,
    /// The report of a completed operation, for a peer that follows it.
    outcome: Option<Reply>,
}

/// Why an operation could not begin.
#[derive(Debug, Clone, PartialEq)]
pub enum Busy {
    /// The VM is already being migrated (this way or the other).
    Vm { kind: OperationKind, peer: String },
    /// `running` operations of this kind are under way, the limit.
    Limit { running: u32 },
}

impl Operations {
    /// Begins an operation unless the VM has one under way already or `limit`
    /// operations of this kind are running: checked and recorded at once, so two
    /// concurrent requests cannot both pass.
    pub fn begin_limited(
        &self,
        kind: OperationKind,
        vm: &str,
        peer: &str,
        limit: u32,
    ) -> Result<u64, Busy> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let active = || inner.ops.iter().filter(|e| !is_final(e.view.phase));
        if let Some(e) = active().find(|e| e.view.vm == vm) {
            return Err(Busy::Vm {
                kind: e.view.kind,
                peer: e.view.peer.clone(),
            });
        }
        let running = active().filter(|e| e.view.kind == kind).count() as u32;
        if running >= limit {
            return Err(Busy::Limit { running });
        }
        Ok(begin_locked(&mut inner, kind, vm, peer))
    }

    /// True if a migration of this VM is under way (one at a time per VM).
    #[cfg(test)]
    pub fn is_active(&self, vm: &str) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .ops
            .iter()
            .any(|e| e.view.vm == vm && !is_final(e.view.phase))
    }

    /// True if this peer is sending this VM away right now.
    pub fn is_outgoing(&self, vm: &str) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.ops.iter().any(|e| {
            e.view.vm == vm && e.view.kind == OperationKind::MigrateOut && !is_final(e.view.phase)
        })
    }

    pub fn set_phase(&self, id: u64, phase: OperationPhase) {
        self.update(id, |e| e.view.phase = phase);
    }

    /// Records a job stats sample of a running migration.
    pub fn set_progress(&self, id: u64, sample: &JobSample) {
        self.update(id, |e| {
            let v = &mut e.view;
            v.progress = sample.progress().or(v.progress);
            v.transferred_bytes = sample.processed_bytes.or(v.transferred_bytes);
            v.remaining_bytes = sample.remaining_bytes.or(v.remaining_bytes);
            v.dirty_pages_per_s = sample.dirty_rate.or(v.dirty_pages_per_s);
            v.iteration = sample.iteration.or(v.iteration);
            v.downtime_ms = sample.downtime_ms.or(v.downtime_ms);
        });
    }

    /// Records the longest gap the service probe saw during the migration.
    pub fn set_probe_downtime(&self, id: u64, ms: Option<u64>) {
        self.update(id, |e| {
            e.view.probe_downtime_ms = ms.or(e.view.probe_downtime_ms)
        });
    }

    pub fn transport_of(&self, id: u64) -> Option<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .ops
            .iter()
            .find(|e| e.view.id == id)
            .and_then(|e| e.view.transport.clone())
    }

    /// The way a sent migration carries its data, and why (transport.rs).
    pub fn set_transport(&self, id: u64, transport: &str) {
        self.update(id, |e| e.view.transport = Some(transport.to_string()));
    }

    pub fn finish(&self, id: u64, error: Option<String>) {
        self.update(id, |e| {
            e.view.phase = if error.is_some() {
                OperationPhase::Failed
            } else {
                OperationPhase::Done
            };
            e.view.error = error;
            e.view.elapsed_s = e.started.elapsed().as_secs_f64();
        });
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let finished = inner.ops.iter().filter(|e| is_final(e.view.phase)).count();
        if finished > KEEP_FINISHED
            && let Some(pos) = inner.ops.iter().position(|e| is_final(e.view.phase))
        {
            inner.ops.remove(pos);
        }
    }

    /// Ends an operation that completed, with its report (what a peer that
    /// started it from afar prints), both at once.
    pub fn succeed(&self, id: u64, outcome: Reply) {
        self.update(id, |e| e.outcome = Some(outcome));
        self.finish(id, None);
    }

    /// The operations with these ids, each with its report once completed.
    pub fn by_ids(&self, ids: &[u64]) -> Vec<(OperationView, Option<Reply>)> {
        let outcomes: Vec<(u64, Option<Reply>)> = {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner
                .ops
                .iter()
                .filter(|e| ids.contains(&e.view.id))
                .map(|e| (e.view.id, e.outcome.clone()))
                .collect()
        };
        self.list()
            .into_iter()
            .filter_map(|view| {
                let (_, outcome) = outcomes.iter().find(|(id, _)| *id == view.id)?;
                Some((view, outcome.clone()))
            })
            .collect()
    }

    /// The operations moving or copying these VMs (another peer shows them).
    pub fn concerning(&self, vms: &[String]) -> Vec<OperationView> {
        self.list()
            .into_iter()
            .filter(|v| vms.iter().any(|n| n == v.vm.as_str()))
            .collect()
    }

    pub fn list(&self) -> Vec<OperationView> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .ops
            .iter()
            .map(|e| {
                let mut view = e.view.clone();
                if !is_final(view.phase) {
                    view.elapsed_s = e.started.elapsed().as_secs_f64();
                }
                view
            })
            .collect()
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Entry)) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = inner.ops.iter_mut().find(|e| e.view.id == id) {
            f(entry);
        }
    }
}

fn begin_locked(inner: &mut Inner, kind: OperationKind, vm: &str, peer: &str) -> u64 {
    inner.next_id += 1;
    let id = inner.next_id;
    inner.ops.push(Entry {
        view: OperationView {
            id,
            kind,
            vm: vm.into(),
            peer: peer.to_string(),
            phase: OperationPhase::Requested,
            elapsed_s: 0.0,
            error: None,
            ..OperationView::default()
        },
        started: Instant::now(),
        outcome: None,
    });
    id
}

fn is_final(phase: OperationPhase) -> bool {
    matches!(phase, OperationPhase::Done | OperationPhase::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_migration_per_vm_and_history_is_kept() {
        let ops = Operations::default();
        let id = ops
            .begin_limited(OperationKind::MigrateOut, "web-1", "peer-b", 1)
            .unwrap();
        assert!(ops.is_active("web-1"));
        assert!(!ops.is_active("web-2"));
        ops.finish(id, Some("boom".into()));
        assert!(!ops.is_active("web-1"));
        let list = ops.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].phase, OperationPhase::Failed);
        assert_eq!(list[0].error.as_deref(), Some("boom"));
    }

    #[test]
    fn a_busy_vm_or_a_full_quota_refuses_a_new_operation() {
        let ops = Operations::default();
        let out = OperationKind::MigrateOut;
        let first = ops.begin_limited(out, "web-1", "peer-b", 2).unwrap();
        assert_eq!(
            ops.begin_limited(out, "web-1", "peer-c", 2),
            Err(Busy::Vm {
                kind: out,
                peer: "peer-b".into()
            }),
            "one migration per VM"
        );
        ops.begin_limited(out, "web-2", "peer-b", 2).unwrap();
        assert_eq!(
            ops.begin_limited(out, "web-3", "peer-b", 2),
            Err(Busy::Limit { running: 2 })
        );
        // The quota is per direction: receiving is counted apart.
        ops.begin_limited(OperationKind::MigrateIn, "db-1", "peer-c", 2)
            .unwrap();
        ops.finish(first, None);
        assert!(ops.begin_limited(out, "web-3", "peer-b", 2).is_ok());
        assert!(
            ops.begin_limited(out, "web-1", "peer-b", 3).is_ok(),
            "done: free again"
        );
    }
}
