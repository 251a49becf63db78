//! Racing the providers of one consumer connection. The best provider is tried
//! first; when it has not opened a stream within its hedge delay, the next one is
//! tried too, and the first to open wins. A provider whose host vanished (no
//! FIN, no reset) would otherwise hold the connection for the whole open timeout.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use anyhow::{Result, anyhow};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

use super::proxy::OPEN_TIMEOUT;

/// The least time a provider gets to open a stream before the next one is tried
/// too. Healthy opens through a relay between network namespaces took 3 ms at the
/// median, 14 ms at p99 and 60 ms at most here (1,810 opens in tests/faults.rs, 2
/// shared cores at load 2-4; docs/services.md); but a starved node's event loop
/// stalls for a few hundred milliseconds (docs/hardening.md, bench discovery), and
/// a provider whose guest lost a SYN connects only on its next attempt
/// (proxy::CONNECT_AGAIN_AFTER, 150 ms). Half a second leaves room for both and
/// still ends a vanished host's wait a tenth of the way into OPEN_TIMEOUT.
pub const HEDGE_FLOOR: Duration = Duration::from_millis(500);
/// An open takes two round trips (protocol negotiation, the header and its
/// answer) plus the provider's connect: on a slow link, twice that before
/// hedging.
const HEDGE_ROUND_TRIPS: u32 = 4;
/// A hedge later than this would hardly beat the open timeout.
const HEDGE_CEILING: Duration = Duration::from_millis(OPEN_TIMEOUT.as_millis() as u64 / 2);

/// How long a provider with this ping round-trip time (if known) gets before the
/// next provider is tried as well.
pub fn hedge_delay(rtt: Option<Duration>) -> Duration {
    let by_rtt = rtt.unwrap_or_default().saturating_mul(HEDGE_ROUND_TRIPS);
    by_rtt.clamp(HEDGE_FLOOR, HEDGE_CEILING)
}

/// What a race of opens came to.
pub struct Raced<K, T> {
    /// The first attempt that opened; None if every one failed.
    pub winner: Option<(K, T)>,
    /// Attempts that failed before a winner opened (a refusal, a failed dial, the
    /// open timeout), in the order they failed.
    pub failed: Vec<(K, anyhow::Error)>,
    /// Attempts still opening when the winner opened that had already taken
    /// longer than their hedge delay: slow or gone. (An attempt started after the
    /// winner's and still within its delay is not blamed.)
    pub overtaken: Vec<K>,
    /// Every attempt still running when the winner opened: an open that completes
    /// now is not wanted and is closed (`close_late`).
    pub late: JoinSet<(K, Result<T>)>,
    /// When each attempt started, in order.
    pub started: Vec<(K, Instant)>,
}

/// One candidate: who, and how long it gets before the next one starts too.
pub struct Candidate<K> {
    pub key: K,
    pub hedge_after: Duration,
}

/// Opens to the candidates in order and returns the first that opens. The next
/// candidate starts when the newest attempt has not opened within its hedge delay,
/// or at once when an attempt fails. With one candidate this is a plain open.
pub async fn race<K, T, F, Fut>(candidates: Vec<Candidate<K>>, open: F) -> Raced<K, T>
where
    K: Clone + Send + 'static,
    T: Send + 'static,
    F: Fn(K) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let mut racing = Racing {
        waiting: candidates.into_iter(),
        open,
        attempts: JoinSet::new(),
        running: HashMap::new(),
        hedge_at: None,
        failed: Vec::new(),
        started: Vec::new(),
    };
    racing.start_next();
    loop {
        let hedge_at = racing.hedge_at;
        let hedge = async move {
            match hedge_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = racing.attempts.join_next_with_id() => {
                let (key, result) = match done {
                    None => return racing.lost(),
                    Some(Ok((id, (key, result)))) => {
                        racing.running.remove(&id);
                        (key, result)
                    }
                    Some(Err(e)) => match racing.running.remove(&e.id()) {
                        Some((key, _)) => (key, Err(anyhow!("opening failed: {e}"))),
                        None => continue,
                    },
                };
                match result {
                    Ok(opened) => return racing.won(key, opened),
                    Err(e) => {
                        racing.failed.push((key, e));
                        racing.start_next();
                    }
                }
            }
            _ = hedge => racing.start_next(),
        }
    }
}

/// The state of one race.
struct Racing<K, T, F> {
    waiting: std::vec::IntoIter<Candidate<K>>,
    open: F,
    attempts: JoinSet<(K, Result<T>)>,
    /// Each running attempt, and when it becomes slower than its hedge delay.
    running: HashMap<Id, (K, Instant)>,
    /// When to start the next candidate if nothing opened by then.
    hedge_at: Option<Instant>,
    failed: Vec<(K, anyhow::Error)>,
    started: Vec<(K, Instant)>,
}

impl<K, T, F, Fut> Racing<K, T, F>
where
    K: Clone + Send + 'static,
    T: Send + 'static,
    F: Fn(K) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    /// Starts the next candidate, if one is left.
    fn start_next(&mut self) {
        let Some(next) = self.waiting.next() else {
            self.hedge_at = None;
            return;
        };
        let key = next.key.clone();
        let opening = (self.open)(key.clone());
        let handle = self.attempts.spawn(async move { (key, opening.await) });
        let now = Instant::now();
        let slow_at = now + next.hedge_after;
        self.running
            .insert(handle.id(), (next.key.clone(), slow_at));
        self.started.push((next.key, now));
        // The last candidate has no one to hedge with.
        self.hedge_at = (self.waiting.len() > 0).then_some(slow_at);
    }

    fn won(self, key: K, opened: T) -> Raced<K, T> {
        let now = Instant::now();
        let overtaken = self
            .running
            .into_values()
            .filter(|(_, slow_at)| *slow_at <= now)
            .map(|(key, _)| key)
            .collect();
        Raced {
            winner: Some((key, opened)),
            failed: self.failed,
            overtaken,
            late: self.attempts,
            started: self.started,
        }
    }

    fn lost(self) -> Raced<K, T> {
        Raced {
            winner: None,
            failed: self.failed,
            overtaken: Vec::new(),
            late: self.attempts,
            started: self.started,
        }
    }
}

/// Closes the streams of attempts that open after another one won, cleanly (a
/// FIN, so the provider closes its side and its connection to the service);
/// attempts that fail are only logged. Returns once every attempt is done, at
/// the latest after the open timeout.
pub async fn close_late<K, T>(mut late: JoinSet<(K, Result<T>)>, service: String)
where
    K: std::fmt::Display + 'static,
    T: AsyncWrite + Unpin + 'static,
{
    while let Some(done) = late.join_next().await {
        match done {
            Ok((key, Ok(mut stream))) => {
                let closed = tokio::time::timeout(OPEN_TIMEOUT, stream.shutdown()).await;
                tracing::debug!(
                    "'{service}': the stream to {key} opened after another provider's; closed ({})",
                    match closed {
                        Ok(Ok(())) => "FIN sent".to_string(),
                        Ok(Err(e)) => format!("{e}"),
                        Err(_) => "timed out".to_string(),
                    }
                );
            }
            Ok((key, Err(e))) => {
                tracing::debug!("'{service}': the overtaken stream to {key} failed: {e:#}")
            }
            Err(e) => tracing::debug!("'{service}': an overtaken stream: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// What a fake provider does when a stream is opened to it.
    #[derive(Clone, Copy)]
    enum Script {
        OpensAfter(u64),
        FailsAfter(u64),
        Hangs,
    }

    fn candidates(keys: &[&'static str], hedge_ms: u64) -> Vec<Candidate<&'static str>> {
        keys.iter()
            .map(|&key| Candidate {
                key,
                hedge_after: Duration::from_millis(hedge_ms),
            })
            .collect()
    }

    /// Races `keys` (hedging after `hedge_ms`) against fake providers.
    async fn race_scripted(
        keys: &[&'static str],
        hedge_ms: u64,
        script: impl Fn(&str) -> Script,
    ) -> Raced<&'static str, &'static str> {
        race(candidates(keys, hedge_ms), |key| {
            let script = script(key);
            async move {
                match script {
                    Script::OpensAfter(ms) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        Ok(key)
                    }
                    Script::FailsAfter(ms) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        Err(anyhow!("{key} refused"))
                    }
                    Script::Hangs => std::future::pending().await,
                }
            }
        })
        .await
    }

    fn keys<T>(started: &[(&'static str, T)]) -> Vec<&'static str> {
        started.iter().map(|(k, _)| *k).collect()
    }

    #[tokio::test]
    async fn a_provider_that_opens_in_time_is_the_only_one_asked() {
        let raced = race_scripted(&["a", "b"], 10_000, |_| Script::OpensAfter(5)).await;
        assert_eq!(raced.winner.map(|(k, _)| k), Some("a"));
        assert_eq!(keys(&raced.started), ["a"]);
        assert!(raced.failed.is_empty() && raced.overtaken.is_empty());
    }

    #[tokio::test]
    async fn a_silent_provider_is_overtaken_by_the_next_after_the_hedge_delay() {
        let t0 = Instant::now();
        let raced = race_scripted(&["dead", "b", "c"], 50, |k| match k {
            "dead" => Script::Hangs,
            _ => Script::OpensAfter(5),
        })
        .await;
        assert_eq!(raced.winner.map(|(k, _)| k), Some("b"));
        assert_eq!(keys(&raced.started), ["dead", "b"], "c is not needed");
        assert_eq!(raced.overtaken, ["dead"]);
        assert!(raced.failed.is_empty());
        let hedged = raced.started[1].1 - raced.started[0].1;
        assert!(
            hedged >= Duration::from_millis(50),
            "hedged after {hedged:?}"
        );
        // Behaviour, not speed: the silent provider was not waited for.
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert_eq!(raced.late.len(), 1, "the silent attempt is left to close");
    }

    #[tokio::test]
    async fn a_refusal_falls_through_at_once_without_waiting_for_the_hedge() {
        let raced = race_scripted(&["a", "b"], 60_000, |k| match k {
            "a" => Script::FailsAfter(1),
            _ => Script::OpensAfter(1),
        })
        .await;
        assert_eq!(raced.winner.map(|(k, _)| k), Some("b"));
        assert_eq!(raced.failed.len(), 1);
        assert_eq!(raced.failed[0].0, "a");
        assert!(raced.overtaken.is_empty());
    }

    #[tokio::test]
    async fn a_single_provider_is_waited_for_and_its_error_kept() {
        let raced = race_scripted(&["only"], 10, |_| Script::FailsAfter(200)).await;
        assert!(raced.winner.is_none());
        assert_eq!(keys(&raced.started), ["only"], "no one to hedge with");
        assert_eq!(raced.failed.len(), 1);
        assert_eq!(raced.failed[0].1.to_string(), "only refused");
    }

    #[tokio::test]
    async fn when_every_provider_fails_all_errors_are_kept_in_order() {
        let raced = race_scripted(&["a", "b", "c"], 50, |k| match k {
            "a" => Script::FailsAfter(1000),
            "b" => Script::FailsAfter(10),
            _ => Script::FailsAfter(5),
        })
        .await;
        assert!(raced.winner.is_none());
        assert_eq!(keys(&raced.started), ["a", "b", "c"]);
        let failed: Vec<&str> = raced.failed.iter().map(|(k, _)| *k).collect();
        // b hedged at 50 ms and failed at 60; c started then and failed at 65;
        // a failed last, at 1000.
        assert_eq!(failed, ["b", "c", "a"]);
    }

    #[tokio::test]
    async fn a_slow_first_provider_can_still_win_and_the_hedge_is_left_to_close() {
        let raced = race_scripted(&["slow", "b"], 300, |k| match k {
            "slow" => Script::OpensAfter(350),
            _ => Script::Hangs,
        })
        .await;
        assert_eq!(raced.winner.map(|(k, _)| k), Some("slow"));
        assert_eq!(keys(&raced.started), ["slow", "b"]);
        assert!(
            raced.overtaken.is_empty(),
            "b was asked 50 ms before slow opened, within its own delay: not blamed"
        );
        assert_eq!(raced.late.len(), 1, "b's attempt is left to close");
    }

    #[test]
    fn the_hedge_delay_grows_with_a_slow_link_within_bounds() {
        assert_eq!(hedge_delay(None), HEDGE_FLOOR);
        assert_eq!(hedge_delay(Some(Duration::from_millis(2))), HEDGE_FLOOR);
        assert_eq!(
            hedge_delay(Some(Duration::from_millis(200))),
            Duration::from_millis(800)
        );
        assert_eq!(hedge_delay(Some(Duration::from_secs(60))), HEDGE_CEILING);
        assert!(HEDGE_CEILING < OPEN_TIMEOUT);
    }

    #[tokio::test]
    async fn an_attempt_that_opens_too_late_is_closed_with_a_fin() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut late = JoinSet::new();
        late.spawn(async move { ("b", Ok(ours)) });
        late.spawn(async move { ("c", Err(anyhow!("refused"))) });
        close_late(late, "web".into()).await;
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(5), theirs.read(&mut buf))
            .await
            .expect("the provider's side sees the close")
            .unwrap();
        assert_eq!(n, 0, "end of stream");
    }
}
