//! What the real-process harness (real.rs) asks its nodes, kept cheap enough
//! not to starve them: which peers a starting node bootstraps from, what the
//! overlay still misses while it settles, and which peers still have to be
//! asked while a change spreads. Every question is a control-socket call that
//! the node answers with its whole service list, so asking all n peers every
//! 20 ms (as the discovery wait did) is n x 50 calls a second, each with n
//! services, on the same 2 cores the nodes need to spread the change.

use std::time::{Duration, Instant};

use super::settle::Progress;

/// How many peers already up a starting node bootstraps from (not all from
/// peer 0: it took every handshake and every DHT bootstrap of a start-up).
pub const SEEDS: usize = 3;

/// The kernel's ARP table is one table for every network namespace, and
/// `net.ipv4.neigh.default.gc_thresh3` (1,024 by default) bounds it all: with
/// n processes each resolving up to n neighbours, 50 filled it, and a process
/// that started after that resolved no neighbour, so it never connected
/// (dmesg: "neighbor table overflow"). The thresholds (gc_thresh1..3) a run
/// of `peers` (and a joiner) needs, from the current ones: never lowered.
pub fn arp_thresholds(peers: usize, current: [u64; 3]) -> [u64; 3] {
    let n = peers as u64 + 2;
    // Every node may hold an entry for every other, plus headroom for the
    // rest of the host.
    let needed = n * n + 1024;
    [current[0], current[1].max(needed), current[2].max(needed)]
}

/// `count` distinct peers among the `up` first, at random (all if fewer).
pub fn seeds(up: usize, count: usize, rng: &mut impl rand::Rng) -> Vec<usize> {
    rand::seq::index::sample(rng, up, count.min(up)).into_vec()
}

/// The start-up plan for `peers` processes in waves of `wave`: peer 0 alone
/// (everyone else needs one peer up to bootstrap from), then waves of at
/// most `wave`. Each wave's processes start together, bootstrap from peers
/// of earlier waves and are waited for (control socket answers) before the
/// next wave.
pub fn waves(peers: usize, wave: usize) -> Vec<std::ops::Range<usize>> {
    let wave = wave.max(1);
    let mut plan = Vec::new();
    if peers == 0 {
        return plan;
    }
    plan.push(0..1);
    let mut start = 1;
    while start < peers {
        let end = (start + wave).min(peers);
        plan.push(start..end);
        start = end;
    }
    plan
}

/// What the overlay misses, from each peer's view (`views[k]`: the services
/// `peers[k]` lists, None if it did not answer) of the services `names[k]`
/// (one per peer): as settle.rs judges it. A peer that did not answer misses
/// every service but its own.
pub fn progress(views: &[Option<Vec<String>>], names: &[String]) -> Progress {
    let live: Vec<usize> = (0..names.len()).collect();
    Progress::tally(&live, names.len(), |k, other| {
        (views.get(k)).is_some_and(|view| {
            view.as_ref()
                .is_some_and(|known| known.contains(&names[other]))
        })
    })
}

/// The peers a wait still has to ask, and when each one first met its
/// condition: a peer that met it is not asked again (what it learned
/// spreads no further by asking), so the calls fall as the change spreads.
pub struct Narrowing {
    peers: Vec<usize>,
    met: Vec<Option<Duration>>,
}

impl Narrowing {
    pub fn new(peers: &[usize]) -> Narrowing {
        Narrowing {
            peers: peers.to_vec(),
            met: vec![None; peers.len()],
        }
    }

    /// The peers still to ask.
    pub fn pending(&self) -> Vec<usize> {
        self.peers
            .iter()
            .zip(&self.met)
            .filter(|(_, met)| met.is_none())
            .map(|(&p, _)| p)
            .collect()
    }

    /// `peer` met the condition at `at` (the first time counts).
    pub fn met(&mut self, peer: usize, at: Duration) {
        if let Some(k) = self.peers.iter().position(|&p| p == peer) {
            self.met[k].get_or_insert(at);
        }
    }

    /// `peer` no longer meets it (the final check over every peer failed):
    /// asked again.
    pub fn unmet(&mut self, peer: usize) {
        if let Some(k) = self.peers.iter().position(|&p| p == peer) {
            self.met[k] = None;
        }
    }

    pub fn done(&self) -> bool {
        self.met.iter().all(Option::is_some)
    }

    /// When each peer met it (those that did).
    pub fn times(&self) -> Vec<Duration> {
        self.met.iter().flatten().copied().collect()
    }
}

/// `ask` for each of `items`, all at once, with the time since `t` at which
/// each answer came (its own, not the slowest's).
pub async fn each_timed<T, F, Fut>(items: &[usize], t: Instant, ask: F) -> Vec<(usize, T, Duration)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let timed = |i: usize| {
        let answer = ask(i);
        async move { (i, answer.await, t.elapsed()) }
    };
    futures::future::join_all(items.iter().map(|&i| timed(i))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_answer_is_timed_when_it_comes_not_with_the_slowest() {
        let t = Instant::now();
        let answers = each_timed(&[0, 1], t, |i| async move {
            tokio::time::sleep(Duration::from_millis(if i == 0 { 0 } else { 400 })).await;
            i * 10
        })
        .await;
        let (fast, slow) = (&answers[0], &answers[1]);
        assert_eq!((fast.0, fast.1, slow.0, slow.1), (0, 0, 1, 10));
        assert!(slow.2 >= Duration::from_millis(400));
        assert!(
            fast.2 < slow.2,
            "the fast answer took the slow one's time: {answers:?}"
        );
    }

    #[test]
    fn the_arp_table_is_raised_to_hold_every_pair_and_never_lowered() {
        let default = [128, 512, 1024];
        let [gc1, gc2, gc3] = arp_thresholds(50, default);
        assert_eq!(gc1, 128);
        // 52 x 52 pairs: more than the default's 1,024 entries.
        assert!(gc2 >= 52 * 52 && gc3 >= 52 * 52, "{gc2} {gc3}");
        assert!(arp_thresholds(300, default)[2] >= 302 * 302);
        // A host set higher already keeps its values.
        let high = [1 << 20, 1 << 21, 1 << 22];
        assert_eq!(arp_thresholds(50, high), high);
    }

    #[test]
    fn peers_start_in_waves_after_peer_zero_alone() {
        assert_eq!(waves(1, 25), vec![0..1]);
        assert_eq!(waves(60, 25), vec![0..1, 1..26, 26..51, 51..60]);
        assert_eq!(waves(3, 0), vec![0..1, 1..2, 2..3]);
        assert!(waves(0, 25).is_empty());
        // Every peer exactly once, in order.
        let all: Vec<usize> = waves(201, 25).into_iter().flatten().collect();
        assert_eq!(all, (0..201).collect::<Vec<_>>());
    }

    #[test]
    fn a_starting_peer_bootstraps_from_a_few_distinct_peers_already_up() {
        let mut rng = rand::thread_rng();
        assert!(seeds(0, SEEDS, &mut rng).is_empty());
        assert_eq!(seeds(2, SEEDS, &mut rng).len(), 2);
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut s = seeds(100, SEEDS, &mut rng);
            assert_eq!(s.len(), SEEDS);
            assert!(s.iter().all(|&p| p < 100));
            firsts.insert(s[0]);
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), SEEDS);
        }
        // Not always peer 0.
        assert!(firsts.len() > 1);
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("svc-{i}")).collect()
    }

    #[test]
    fn progress_counts_what_each_peer_misses() {
        let names = names(4);
        let all = Some(names.clone());
        let complete = vec![all.clone(), all.clone(), all.clone(), all.clone()];
        assert!(progress(&complete, &names).complete());
        // Peer 1 misses svc-3; peer 2 did not answer (misses all but its own).
        let views = vec![
            all.clone(),
            Some(vec!["svc-0".into(), "svc-1".into(), "svc-2".into()]),
            None,
            all,
        ];
        let p = progress(&views, &names);
        assert_eq!(p.incomplete, 2);
        // svc-3 unknown to 1 and 2; svc-0 and svc-1 unknown to 2: [1, 1, 2].
        assert_eq!(p.missing_pairs, 4);
        assert_eq!(p.median_unknown, 1);
        // Peer 2 misses 3 of its 3 others, peer 1 one: both over a tenth.
        assert_eq!((p.worst_node_missing, p.nodes_missing_tenth), (3, 2));
    }

    #[test]
    fn a_peer_that_met_the_condition_is_not_asked_again() {
        let mut wait = Narrowing::new(&[3, 5, 8]);
        assert_eq!(wait.pending(), vec![3, 5, 8]);
        wait.met(5, Duration::from_millis(40));
        assert_eq!(wait.pending(), vec![3, 8]);
        // The first time counts.
        wait.met(5, Duration::from_millis(90));
        wait.met(3, Duration::from_millis(60));
        wait.met(8, Duration::from_millis(70));
        assert!(wait.done());
        assert!(wait.pending().is_empty());
        let mut times = wait.times();
        times.sort();
        assert_eq!(times, [40, 60, 70].map(Duration::from_millis).to_vec());
        // A failed final check asks that peer again.
        wait.unmet(8);
        assert_eq!(wait.pending(), vec![8]);
        assert!(!wait.done());
        // Unknown peers are ignored, never a panic.
        wait.met(99, Duration::ZERO);
        wait.unmet(99);
    }
}
