//! Other peers' operations this node shows: those it started on their hosts
//! (a migration or replication of a VM another peer hosts, followed by the
//! host's operation id until it ends, so `migrate --wait` can wait for the
//! outcome) and those moving VMs its consoles watch (carried by the hosts'
//! figures answers, vms/remote.rs). Plain state here; `RemoteVms` asks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::api::Reply;
use crate::model::{OperationPhase, OperationView};
use crate::node::protocol::MAX_FOLLOWED;

/// A host that has not answered about operations followed there for this
/// long is taken as gone: they fail here with "outcome unknown".
pub const LOST_AFTER: Duration = Duration::from_secs(30);
/// Ended operations stay on show this long.
const KEEP_ENDED: Duration = Duration::from_secs(600);
/// A running operation not heard of again (its VM left the screen) goes
/// after this.
const UNSEEN_AFTER: Duration = Duration::from_secs(15);
/// Other peers' operations shown at once.
const MAX_SHOWN: usize = 32;

/// One operation of another peer.
struct Tracked {
    /// As its host reports it, `host` set to the host's name.
    view: OperationView,
    /// Started from here: asked for by id until it ends.
    followed: bool,
    /// Its report, once completed (followed ones).
    outcome: Option<Reply>,
    /// In which order it was first heard of; when last heard of, and ended.
    order: u64,
    seen: Instant,
    ended: Option<Instant>,
}

/// How a followed operation ended, for its waiter.
#[derive(Debug, PartialEq)]
pub enum Ended {
    /// Completed: the host's report (None from a host too old to keep it).
    Done(Option<Reply>),
    /// Failed: the host's reason, or why its outcome is unknown here.
    Failed(String),
}

#[derive(Default)]
pub struct RemoteOps {
    /// By (host peer id, the host's operation id).
    ops: HashMap<(String, u64), Tracked>,
    /// Hosts asked about followed operations and not yet answered, when each
    /// was last asked, and when each last answered.
    in_flight: HashSet<String>,
    last_asked: HashMap<String, Instant>,
    last_answer: HashMap<String, Instant>,
    /// Operations heard of so far (their order).
    heard: u64,
}

impl RemoteOps {
    /// An operation this node just started on `host_id` (it answered with
    /// its id): followed until it ends.
    pub fn follow(&mut self, host_id: &str, view: OperationView, now: Instant) {
        self.last_answer.insert(host_id.to_string(), now);
        self.upsert(host_id, view, None, true, now);
    }

    /// What a host said of its operations: a followed one's answer (with
    /// its report once done), or those moving the VMs watched here.
    pub fn observed(
        &mut self,
        host_id: &str,
        host_name: &str,
        ops: Vec<(OperationView, Option<Reply>)>,
        now: Instant,
    ) {
        for (mut view, outcome) in ops {
            view.host = Some(host_name.to_string());
            self.upsert(host_id, view, outcome, false, now);
        }
    }

    fn upsert(
        &mut self,
        host_id: &str,
        view: OperationView,
        outcome: Option<Reply>,
        followed: bool,
        now: Instant,
    ) {
        let ended = view.is_final().then_some(now);
        self.heard += 1;
        let order = self.heard;
        let entry = self
            .ops
            .entry((host_id.to_string(), view.id))
            .or_insert_with(|| Tracked {
                view: view.clone(),
                followed,
                outcome: None,
                order,
                seen: now,
                ended,
            });
        entry.followed |= followed;
        entry.seen = now;
        if entry.ended.is_none() {
            entry.ended = ended;
        }
        entry.outcome = outcome.or(entry.outcome.take());
        entry.view = view;
    }

    /// The answer to a follow request: the operations the host still knows;
    /// a followed one it no longer knows failed (the host restarted).
    pub fn answered(
        &mut self,
        host_id: &str,
        host_name: &str,
        asked: &[u64],
        ops: Vec<(OperationView, Option<Reply>)>,
        now: Instant,
    ) {
        self.in_flight.remove(host_id);
        self.last_answer.insert(host_id.to_string(), now);
        let known: Vec<u64> = ops.iter().map(|(v, _)| v.id).collect();
        self.observed(host_id, host_name, ops, now);
        for id in asked.iter().filter(|id| !known.contains(id)) {
            self.fail(
                host_id,
                *id,
                format!("{host_name} no longer knows this operation (restarted?): its outcome is unknown"),
                now,
            );
        }
    }

    /// A follow request that got no answer; past `LOST_AFTER` without one,
    /// the host's followed operations fail here, naming the host.
    pub fn unanswered(&mut self, host_id: &str, host_name: &str, error: &str, now: Instant) {
        self.in_flight.remove(host_id);
        let silent = self
            .last_answer
            .get(host_id)
            .is_none_or(|at| now.duration_since(*at) >= LOST_AFTER);
        if !silent {
            return;
        }
        let lost: Vec<u64> = self
            .ops
            .iter()
            .filter(|((h, _), t)| h == host_id && t.followed && t.ended.is_none())
            .map(|((_, id), _)| *id)
            .collect();
        for id in lost {
            self.fail(
                host_id,
                id,
                format!(
                    "lost contact with {host_name}, which runs it: no answer for {} s ({error}); its outcome is unknown",
                    LOST_AFTER.as_secs()
                ),
                now,
            );
        }
    }

    fn fail(&mut self, host_id: &str, id: u64, reason: String, now: Instant) {
        if let Some(t) = self.ops.get_mut(&(host_id.to_string(), id))
            && t.ended.is_none()
        {
            t.view.phase = OperationPhase::Failed;
            t.view.error = Some(reason);
            t.ended = Some(now);
        }
    }

    /// Hosts to ask now about the followed operations still running there,
    /// each at most once per `every`, one request in flight; marked asked.
    pub fn due(&mut self, every: Duration, now: Instant) -> Vec<(String, Vec<u64>)> {
        let mut by_host: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for ((host, id), t) in &self.ops {
            if t.followed && t.ended.is_none() {
                by_host.entry(host.clone()).or_default().push(*id);
            }
        }
        let mut due = Vec::new();
        for (host, mut ids) in by_host {
            let lately = self
                .last_asked
                .get(&host)
                .is_some_and(|at| now.duration_since(*at) < every);
            if lately || self.in_flight.contains(&host) {
                continue;
            }
            ids.sort_unstable();
            ids.truncate(MAX_FOLLOWED);
            self.in_flight.insert(host.clone());
            self.last_asked.insert(host.clone(), now);
            due.push((host, ids));
        }
        due
    }

    /// How a followed operation ended, once it has.
    pub fn ended(&self, host_id: &str, id: u64) -> Option<Ended> {
        let t = self.ops.get(&(host_id.to_string(), id))?;
        t.ended?;
        Some(match t.view.phase {
            OperationPhase::Done => Ended::Done(t.outcome.clone()),
            _ => Ended::Failed(t.view.error.clone().unwrap_or_else(|| "failed".into())),
        })
    }

    /// The latest view of one operation (a waiter's progress).
    pub fn view(&self, host_id: &str, id: u64) -> Option<OperationView> {
        Some(self.ops.get(&(host_id.to_string(), id))?.view.clone())
    }

    /// What consoles show: running ones still heard of (followed ones until
    /// they end), ended ones for `KEEP_ENDED`; at most `MAX_SHOWN`, the
    /// running and most recent first; in the order first heard of.
    pub fn views(&mut self, now: Instant) -> Vec<OperationView> {
        self.ops.retain(|_, t| match t.ended {
            Some(at) => now.duration_since(at) < KEEP_ENDED,
            None => t.followed || now.duration_since(t.seen) < UNSEEN_AFTER,
        });
        let mut shown: Vec<&Tracked> = self.ops.values().collect();
        shown.sort_by_key(|t| (t.ended.is_some(), std::cmp::Reverse(t.order)));
        shown.truncate(MAX_SHOWN);
        shown.sort_by_key(|t| t.order);
        shown.iter().map(|t| t.view.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OperationKind;

    fn op(id: u64, vm: &str, phase: OperationPhase) -> OperationView {
        OperationView {
            id,
            kind: OperationKind::MigrateOut,
            vm: vm.into(),
            peer: "peer-b".into(),
            phase,
            ..OperationView::default()
        }
    }

    fn shown(ops: &mut RemoteOps, now: Instant) -> Vec<(String, OperationPhase)> {
        ops.views(now)
            .into_iter()
            .map(|v| (format!("{}@{}", v.vm, v.host.unwrap_or_default()), v.phase))
            .collect()
    }

    /// Shown: what this peer started elsewhere until it ends, then for a
    /// while; others' operations on watched VMs while they are heard of.
    #[test]
    fn started_here_and_watched_operations_are_shown_while_they_matter() {
        let mut ops = RemoteOps::default();
        let t0 = Instant::now();
        let mut started = op(7, "web-1", OperationPhase::Requested);
        started.host = Some("peer-c".into());
        ops.follow("C", started, t0);
        ops.observed(
            "D",
            "peer-d",
            vec![(op(2, "db", OperationPhase::Transferring), None)],
            t0,
        );
        assert_eq!(
            shown(&mut ops, t0),
            [
                ("web-1@peer-c".into(), OperationPhase::Requested),
                ("db@peer-d".into(), OperationPhase::Transferring)
            ]
        );
        // db's VM left the screen: no word of it for a while, gone; web-1
        // is followed, so it stays though nothing was heard.
        let t1 = t0 + UNSEEN_AFTER;
        assert_eq!(
            shown(&mut ops, t1),
            [("web-1@peer-c".into(), OperationPhase::Requested)]
        );
        ops.answered(
            "C",
            "peer-c",
            &[7],
            vec![(
                op(7, "web-1", OperationPhase::Done),
                Some(Reply::Done {
                    message: "moved".into(),
                }),
            )],
            t1,
        );
        assert_eq!(
            ops.ended("C", 7),
            Some(Ended::Done(Some(Reply::Done {
                message: "moved".into()
            })))
        );
        assert!(
            ops.due(Duration::ZERO, t1).is_empty(),
            "ended: no more asking"
        );
        let ended = t1 + KEEP_ENDED - Duration::from_secs(1);
        assert_eq!(
            shown(&mut ops, ended),
            [("web-1@peer-c".into(), OperationPhase::Done)]
        );
        assert!(
            shown(&mut ops, t1 + KEEP_ENDED).is_empty(),
            "kept a while only"
        );
    }

    /// Followed operations are asked about once per interval per host, one
    /// request in flight; a host silent past `LOST_AFTER` fails them with
    /// its name, one that forgot them (restarted) too.
    #[test]
    fn a_silent_or_forgetful_host_fails_what_is_followed_there() {
        let mut ops = RemoteOps::default();
        let t0 = Instant::now();
        ops.follow("C", op(7, "web-1", OperationPhase::Requested), t0);
        ops.follow("C", op(8, "web-2", OperationPhase::Requested), t0);
        ops.follow("B", op(1, "db", OperationPhase::Requested), t0);
        let every = Duration::from_secs(1);
        assert_eq!(
            ops.due(every, t0),
            [("B".to_string(), vec![1]), ("C".to_string(), vec![7, 8])]
        );
        assert!(ops.due(every, t0 + every).is_empty(), "answers pending");
        ops.unanswered("C", "peer-c", "timeout", t0 + every);
        assert!(ops.due(every, t0 + every / 2).is_empty(), "too soon");
        assert_eq!(ops.due(every, t0 + every).len(), 1, "C again; B in flight");
        assert_eq!(ops.ended("C", 7), None, "silent for a moment only");

        ops.unanswered("C", "peer-c", "dial failed", t0 + LOST_AFTER);
        let Some(Ended::Failed(reason)) = ops.ended("C", 7) else {
            panic!("not failed")
        };
        assert!(reason.contains("lost contact with peer-c"), "{reason}");
        assert!(reason.contains("dial failed"), "{reason}");

        ops.answered("B", "peer-b", &[1], Vec::new(), t0);
        let Some(Ended::Failed(reason)) = ops.ended("B", 1) else {
            panic!("not failed")
        };
        assert!(reason.contains("peer-b no longer knows"), "{reason}");
    }

    /// At most `MAX_SHOWN` at once: running ones before ended ones.
    #[test]
    fn what_is_shown_is_bounded_running_first() {
        let mut ops = RemoteOps::default();
        let t0 = Instant::now();
        let many: Vec<_> = (0..MAX_SHOWN as u64 + 5)
            .map(|i| (op(i, &format!("vm-{i}"), OperationPhase::Done), None))
            .collect();
        ops.observed("C", "peer-c", many, t0);
        let later = t0 + Duration::from_secs(1);
        ops.observed(
            "C",
            "peer-c",
            vec![(op(100, "busy", OperationPhase::Transferring), None)],
            later,
        );
        let views = ops.views(later);
        assert_eq!(views.len(), MAX_SHOWN);
        assert!(
            views.iter().any(|v| v.vm == "busy"),
            "the running one is kept"
        );
    }
}
