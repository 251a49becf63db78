use std::sync::Mutex;

use super::*;
use crate::api::VmSample;
use crate::model::{VmHistory, VmStats, VmView};

/// Long enough for a loaded 2-core machine; the updates come at once.
const BOUND: Duration = Duration::from_secs(30);

/// A stand-in for the sampler: rounds sent by hand, a board the publisher
/// reads when a VM appears.
struct FakeSampler {
    rounds: broadcast::Sender<Round>,
    board: Arc<Mutex<(u64, HashMap<String, VmHistory>)>>,
}

impl FakeSampler {
    fn new() -> (FakeSampler, Figures) {
        let (rounds, rx) = broadcast::channel(16);
        let board: Arc<Mutex<(u64, HashMap<String, VmHistory>)>> = Arc::default();
        let read_board = board.clone();
        let figures = Figures {
            rounds: rx,
            read: Box::new(move |status: &mut Status| {
                let board = read_board.lock().unwrap();
                for vm in &mut status.vms {
                    vm.history = board.1.get(vm.name.as_str()).cloned();
                    vm.stats = vm.history.as_ref().map(|h| VmStats {
                        cpu_pct_guest: h.cpu_pct_guest.last().copied(),
                        ..VmStats::default()
                    });
                }
                board.0
            }),
        };
        (FakeSampler { rounds, board }, figures)
    }

    /// Round `number`: each VM at `cpu` % (the board gets it too).
    fn round(&self, number: u64, vms: &[&str], cpu: f64) {
        let mut board = self.board.lock().unwrap();
        board.0 = number;
        for vm in vms {
            board
                .1
                .entry(vm.to_string())
                .or_default()
                .cpu_pct_guest
                .push(cpu);
        }
        let samples = Samples {
            interval_s: 1.0,
            keep: 10,
            host: None,
            vms: vms
                .iter()
                .map(|vm| VmSample {
                    name: vm.to_string().into(),
                    stats: Some(VmStats {
                        cpu_pct_guest: Some(cpu),
                        ..VmStats::default()
                    }),
                })
                .collect(),
        };
        let _ = self.rounds.send(Round {
            number,
            samples: Arc::new(samples),
        });
    }
}

fn node_state(vms: &[&str]) -> Status {
    Status {
        vms: vms
            .iter()
            .map(|name| VmView {
                name: (*name).into(),
                ..VmView::default()
            })
            .collect(),
        ..Status::default()
    }
}

async fn next(updates: &mut mpsc::Receiver<Update>) -> Update {
    tokio::time::timeout(BOUND, updates.recv())
        .await
        .expect("an update within the bound")
        .expect("the publisher is running")
}

fn cpu_history(status: &Status, vm: &str) -> Vec<f64> {
    status
        .vms
        .iter()
        .find(|v| v.name == vm)
        .and_then(|v| v.history.as_ref())
        .map(|h| h.cpu_pct_guest.clone())
        .unwrap_or_default()
}

/// A publisher on a fake sampler, a subscriber and the snapshot it got first.
async fn subscribed() -> (
    FakeSampler,
    mpsc::Sender<Status>,
    Publisher,
    mpsc::Receiver<Update>,
    Box<Status>,
) {
    let (sampler, figures) = FakeSampler::new();
    let (states, rx) = mpsc::channel(1);
    let publisher = Publisher::start(figures, rx);
    let mut updates = publisher.subscribe().await.unwrap();
    let Update::Snapshot(seen) = next(&mut updates).await else {
        panic!("a snapshot comes first");
    };
    (sampler, states, publisher, updates, seen)
}

#[tokio::test]
async fn a_console_gets_a_snapshot_then_only_what_changed() {
    let (sampler, states, publisher, mut updates, mut seen) = subscribed().await;

    states.send(node_state(&["web-1"])).await.unwrap();
    let Update::Delta(delta) = next(&mut updates).await else {
        panic!("then deltas");
    };
    assert!(delta.vms.is_some() && delta.samples.is_none() && delta.peers.is_none());
    delta.apply(&mut seen);

    sampler.round(1, &["web-1"], 12.0);
    let Update::Delta(delta) = next(&mut updates).await else {
        panic!("a delta");
    };
    assert!(
        delta.samples.is_some() && !delta.changes_rows(),
        "a round carries samples only: {delta:?}"
    );
    delta.apply(&mut seen);
    assert_eq!(cpu_history(&seen, "web-1"), vec![12.0]);

    // The same state again: nothing is sent; the next round is.
    states.send(node_state(&["web-1"])).await.unwrap();
    sampler.round(2, &["web-1"], 13.0);
    let Update::Delta(delta) = next(&mut updates).await else {
        panic!("a delta");
    };
    assert!(delta.vms.is_none(), "{delta:?}");
    delta.apply(&mut seen);
    assert_eq!(cpu_history(&seen, "web-1"), vec![12.0, 13.0]);

    // A late subscriber's snapshot is where the first one got by deltas.
    let mut late = publisher.subscribe().await.unwrap();
    assert_eq!(next(&mut late).await, Update::Snapshot(seen));
}

#[tokio::test]
async fn charts_move_while_the_node_state_is_slow_to_come() {
    // The publisher lives as long as its handle.
    let (sampler, states, _publisher, mut updates, mut seen) = subscribed().await;
    states.send(node_state(&["web-1"])).await.unwrap();
    let Update::Delta(delta) = next(&mut updates).await else {
        panic!("then deltas");
    };
    delta.apply(&mut seen);
    // From here on the node's state does not come (a swarm busy for good);
    // `states` stays open.
    for (number, cpu) in (1..=5).zip([10.0, 20.0, 30.0, 40.0, 50.0]) {
        sampler.round(number, &["web-1"], cpu);
    }
    while cpu_history(&seen, "web-1").len() < 5 {
        match next(&mut updates).await {
            Update::Delta(delta) => delta.apply(&mut seen),
            Update::Snapshot(s) => seen = s,
        }
    }
    assert_eq!(
        cpu_history(&seen, "web-1"),
        vec![10.0, 20.0, 30.0, 40.0, 50.0]
    );
    drop(states);
}

#[tokio::test]
async fn a_vm_that_appears_brings_its_history_and_no_round_twice() {
    // The publisher lives as long as its handle.
    let (sampler, states, _publisher, mut updates, mut seen) = subscribed().await;
    let mut apply = async |seen: &mut Status| match next(&mut updates).await {
        Update::Delta(delta) => delta.apply(seen),
        Update::Snapshot(s) => *seen = *s,
    };
    states.send(node_state(&["web-1"])).await.unwrap();
    apply(&mut seen).await;
    // The sampler sees web-2 (migrated in) before the node's list has it.
    sampler.round(1, &["web-1", "web-2"], 1.0);
    apply(&mut seen).await;
    assert_eq!(cpu_history(&seen, "web-2"), Vec::<f64>::new());
    // Round 2 is on the board when the list gets web-2, and arrives after.
    sampler.board.lock().unwrap().0 = 2;
    sampler
        .board
        .lock()
        .unwrap()
        .1
        .get_mut("web-2")
        .unwrap()
        .cpu_pct_guest
        .push(2.0);
    states.send(node_state(&["web-1", "web-2"])).await.unwrap();
    apply(&mut seen).await;
    assert_eq!(
        cpu_history(&seen, "web-2"),
        vec![1.0, 2.0],
        "from the board"
    );
    let _ = sampler.rounds.send(Round {
        number: 2,
        samples: Arc::new(Samples {
            interval_s: 1.0,
            keep: 10,
            host: None,
            vms: ["web-1", "web-2"]
                .iter()
                .map(|vm| VmSample {
                    name: vm.to_string().into(),
                    stats: Some(VmStats {
                        cpu_pct_guest: Some(2.0),
                        ..VmStats::default()
                    }),
                })
                .collect(),
        }),
    });
    sampler.round(3, &["web-1", "web-2"], 3.0);
    while cpu_history(&seen, "web-1").len() < 3 {
        apply(&mut seen).await;
    }
    assert_eq!(cpu_history(&seen, "web-2"), vec![1.0, 2.0, 3.0]);
    assert_eq!(cpu_history(&seen, "web-1"), vec![1.0, 2.0, 3.0]);
}
