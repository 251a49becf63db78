//! Per-peer rate limits: how often another peer may ask this one something
//! (control requests) and open streams (service, tunnel, replication), and how
//! many service and replication streams it may keep open at once. A refused
//! request or stream gets a reason the other side shows.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// The operator's limits (`peervisor node --peer-control-rate …`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitsConfig {
    /// Control requests per second one peer may make; bursts of twice that.
    pub control_per_s: u32,
    /// New service streams per second one peer may open; bursts of twice that.
    pub streams_per_s: u32,
    /// Service streams one peer may have open at once.
    pub streams_per_peer: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            control_per_s: 20,
            // A consumer with many short connections (a web page, a load test)
            // opens hundreds at once; these bound a member, not a busy consumer.
            streams_per_s: 1000,
            streams_per_peer: 4096,
        }
    }
}

/// A token bucket: `burst` tokens, refilled at `per_s` a second.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// One bucket per peer. Peers whose bucket is full again are forgotten, so the
/// map stays as small as the set of peers that are busy right now.
pub struct RateLimiter {
    per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<PeerId, Bucket>>,
}

/// Peers tracked before idle (full) buckets are swept out.
const SWEEP_AT: usize = 1024;

impl RateLimiter {
    pub fn new(per_s: u32) -> Self {
        let per_s = f64::from(per_s.max(1));
        RateLimiter {
            per_s,
            burst: per_s * 2.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `peer`, or says how long until one is free.
    pub fn check(&self, peer: &PeerId) -> Result<(), Duration> {
        self.check_at(peer, Instant::now())
    }

    fn check_at(&self, peer: &PeerId, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= SWEEP_AT {
            let (per_s, burst) = (self.per_s, self.burst);
            buckets.retain(|_, b| refilled(b, now, per_s, burst) < burst);
        }
        let bucket = buckets.entry(*peer).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        bucket.tokens = refilled(bucket, now, self.per_s, self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_s))
        }
    }

    pub fn per_s(&self) -> u32 {
        self.per_s as u32
    }
}

fn refilled(bucket: &Bucket, now: Instant, per_s: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
    (bucket.tokens + elapsed * per_s).min(burst)
}

/// Counts what each key (a peer, a service) has open; a guard gives it back.
pub struct OpenCounts<K: std::hash::Hash + Eq + Clone> {
    open: Mutex<HashMap<K, u32>>,
}

impl<K: std::hash::Hash + Eq + Clone> Default for OpenCounts<K> {
    fn default() -> Self {
        OpenCounts {
            open: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> OpenCounts<K> {
    /// One more open for `key` if it has fewer than `max`.
    pub fn try_open(&self, key: &K, max: u32) -> Option<OpenGuard<'_, K>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(OpenGuard {
            counts: self,
            key: key.clone(),
        })
    }

    #[cfg(test)]
    pub fn get(&self, key: &K) -> u32 {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(key).copied().unwrap_or(0)
    }
}

pub struct OpenGuard<'a, K: std::hash::Hash + Eq + Clone> {
    counts: &'a OpenCounts<K>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Clone> Drop for OpenGuard<'_, K> {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The limits a peer enforces on every other peer.
pub struct PeerLimits {
    pub config: LimitsConfig,
    pub control: RateLimiter,
    pub streams: RateLimiter,
    pub open_streams: OpenCounts<PeerId>,
    /// Open streams per service, for services with `--max-conns`.
    pub service_streams: OpenCounts<String>,
    /// Replication streams per peer (each also one of its `open_streams`).
    pub replica_streams: OpenCounts<PeerId>,
    /// Refusals are logged a few times a second per peer, not once per request:
    /// a flood must not become a flood of log lines.
    log_lines: RateLimiter,
}

impl PeerLimits {
    pub fn new(config: LimitsConfig) -> Self {
        PeerLimits {
            config,
            control: RateLimiter::new(config.control_per_s),
            streams: RateLimiter::new(config.streams_per_s),
            open_streams: OpenCounts::default(),
            service_streams: OpenCounts::default(),
            replica_streams: OpenCounts::default(),
            log_lines: RateLimiter::new(2),
        }
    }

    /// Whether a refusal of `peer` should be logged now.
    pub fn log_refusal(&self, peer: &PeerId) -> bool {
        self.log_lines.check(peer).is_ok()
    }
}

/// The reason sent back with a rate-limited request or stream.
pub fn rate_limited(what: &str, per_s: u32, retry: Duration) -> String {
    format!(
        "rate limit: too many {what} from you (at most {per_s}/s); retry in {:.1} s",
        retry.as_secs_f64().max(0.1)
    )
}

/// Every consumer connection costs a node two file descriptors (the client's
/// socket and, on the provider, the target's); the usual soft limit of 1024 would
/// cap a node at a few hundred. Raises the soft limit to the hard one; returns it.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_refuses_until_refilled() {
        let limiter = RateLimiter::new(2);
        let a = PeerId::random();
        let b = PeerId::random();
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(limiter.check_at(&a, t0).is_ok(), "burst of twice the rate");
        }
        let wait = limiter.check_at(&a, t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500));
        assert!(
            limiter.check_at(&b, t0).is_ok(),
            "other peers are not affected"
        );
        assert!(
            limiter
                .check_at(&a, t0 + Duration::from_millis(500))
                .is_ok()
        );
        assert!(
            limiter
                .check_at(&a, t0 + Duration::from_millis(500))
                .is_err()
        );
    }

    #[test]
    fn idle_peers_are_forgotten() {
        let limiter = RateLimiter::new(1000);
        let t0 = Instant::now();
        for _ in 0..SWEEP_AT {
            limiter.check_at(&PeerId::random(), t0).unwrap();
        }
        limiter
            .check_at(&PeerId::random(), t0 + Duration::from_secs(1))
            .unwrap();
        let tracked = limiter.buckets.lock().unwrap().len();
        assert_eq!(tracked, 1, "refilled buckets were swept");
    }

    #[test]
    fn open_counts_stop_at_the_maximum_and_guards_give_back() {
        let counts: OpenCounts<String> = OpenCounts::default();
        let key = "web".to_string();
        let first = counts.try_open(&key, 2).unwrap();
        let _second = counts.try_open(&key, 2).unwrap();
        assert!(counts.try_open(&key, 2).is_none());
        drop(first);
        assert_eq!(counts.get(&key), 1);
        assert!(counts.try_open(&key, 2).is_some());
    }

    #[test]
    fn fd_limit_is_raised_to_the_hard_limit() {
        let soft = raise_fd_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        assert_eq!(soft, limit.rlim_cur);
    }

    #[test]
    fn refusal_says_what_and_when() {
        let text = rate_limited("control requests", 20, Duration::from_millis(300));
        assert_eq!(
            text,
            "rate limit: too many control requests from you (at most 20/s); retry in 0.3 s"
        );
    }
}
