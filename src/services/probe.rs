//! A service's downtime as a client sees it: probe it every few tens of
//! milliseconds and keep the longest time between two answers.
//!
//! Probes overlap (a new one starts every `PROBE_EVERY` whatever the previous one
//! is doing), so a probe stuck on a paused guest does not delay the next one: the
//! first probe started after the service is back answers at once, and the gap ends
//! there. The resolution is one probe period plus one round trip.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Time between probe starts.
pub const PROBE_EVERY: Duration = Duration::from_millis(25);
/// A probe that takes longer than this counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// After the measured operation, probing goes on until the service answers again,
/// at most this long.
const RECOVERY_MAX: Duration = Duration::from_secs(15);

/// What one probing window found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GapReport {
    /// Longest time without an answer, between two answers (or from the last
    /// answer to the end, if the service did not come back).
    pub longest_gap: Duration,
    pub probes: u32,
    pub answered: u32,
    /// Whether the service answered after the operation ended.
    pub recovered: bool,
}

impl GapReport {
    pub fn longest_gap_ms(&self) -> u64 {
        self.longest_gap.as_millis() as u64
    }
}

#[derive(Default)]
struct Record {
    answers: Vec<Instant>,
    probes: u32,
}

/// A running probe; `finish` stops it and reports.
pub struct GapProbe {
    record: Arc<Mutex<Record>>,
    answered: Arc<Notify>,
    task: JoinHandle<()>,
}

impl GapProbe {
    /// Starts probing with `probe`, which returns true when the service answered.
    pub fn start<F, Fut>(probe: F) -> GapProbe
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let record = Arc::new(Mutex::new(Record::default()));
        let answered = Arc::new(Notify::new());
        let probe = Arc::new(probe);
        let (rec, notify) = (record.clone(), answered.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut running = tokio::task::JoinSet::new();
            loop {
                tick.tick().await;
                // Reap finished probes so the set does not grow.
                while running.try_join_next().is_some() {}
                lock(&rec).probes += 1;
                let (probe, rec, notify) = (probe.clone(), rec.clone(), notify.clone());
                running.spawn(async move {
                    let ok = tokio::time::timeout(PROBE_TIMEOUT, probe())
                        .await
                        .unwrap_or(false);
                    if ok {
                        lock(&rec).answers.push(Instant::now());
                        notify.notify_waiters();
                    }
                });
            }
        });
        GapProbe {
            record,
            answered,
            task,
        }
    }

    /// Call when the measured operation is over: waits for the service to answer
    /// once more (so a gap that outlasts the operation is counted whole), stops
    /// probing and reports. None when the service never answered.
    pub async fn finish(self) -> Option<GapReport> {
        self.finish_within(RECOVERY_MAX).await
    }

    /// `finish`, waiting at most `limit` for the service to come back.
    pub async fn finish_within(self, limit: Duration) -> Option<GapReport> {
        let ended = Instant::now();
        let deadline = tokio::time::Instant::now() + limit;
        let recovered = loop {
            let waiting = self.answered.notified();
            if lock(&self.record).answers.iter().any(|t| *t > ended) {
                break true;
            }
            if tokio::time::timeout_at(deadline, waiting).await.is_err() {
                break false;
            }
        };
        self.task.abort();
        let stopped = Instant::now();
        let record = lock(&self.record);
        let mut answers = record.answers.clone();
        answers.sort();
        let mut gap = longest_gap(&answers)?;
        if !recovered && let Some(last) = answers.last() {
            gap = gap.max(stopped - *last);
        }
        Some(GapReport {
            longest_gap: gap,
            probes: record.probes,
            answered: answers.len() as u32,
            recovered,
        })
    }
}

impl Drop for GapProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Longest interval between consecutive answers (sorted); zero with one answer,
/// None with none.
pub fn longest_gap(answers: &[Instant]) -> Option<Duration> {
    let first = answers.first()?;
    let mut longest = Duration::ZERO;
    let mut previous = *first;
    for &t in &answers[1..] {
        longest = longest.max(t.saturating_duration_since(previous));
        previous = t;
    }
    Some(longest)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn longest_gap_is_between_consecutive_answers() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(longest_gap(&[]), None);
        assert_eq!(longest_gap(&[at(5)]), Some(Duration::ZERO));
        assert_eq!(
            longest_gap(&[at(0), at(25), at(50), at(330), at(355)]),
            Some(Duration::from_millis(280))
        );
    }

    /// A real outage of a real listener: the probe sees a gap about as long as it.
    #[tokio::test]
    async fn probe_measures_an_outage_of_a_tcp_service() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        // A service that refuses connections while "down".
        let probe = GapProbe::start(move || {
            let up = flag.load(Ordering::Relaxed);
            async move { up && tokio::net::TcpStream::connect(addr).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        up.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(400)).await;
        up.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let report = probe.finish().await.expect("answers");
        drop(listener);
        assert!(report.recovered);
        let gap = report.longest_gap_ms();
        assert!(
            (400..1000).contains(&gap),
            "gap {gap} ms for a 400 ms outage"
        );
        assert!(report.answered > 5 && report.answered < report.probes);
    }

    #[tokio::test]
    async fn a_service_that_does_not_come_back_is_reported_so() {
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        let probe = GapProbe::start(move || {
            let up = flag.load(Ordering::Relaxed);
            async move { up }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        up.store(false, Ordering::Relaxed);
        let report = probe
            .finish_within(Duration::from_millis(300))
            .await
            .expect("answered before");
        assert!(!report.recovered);
        assert!(
            report.longest_gap >= Duration::from_millis(300),
            "{report:?}"
        );
    }
}
