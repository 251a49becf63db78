//! A consumer looping HTTP requests through a `peervisor consume` listener, as
//! a client of a migrating service would: one request at a time, each retried
//! until it succeeds. What it reports is the longest time between two answered
//! requests, and how many requests failed even after their retries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// Pause between two requests, and between a failed attempt and its retry.
const PAUSE: Duration = Duration::from_millis(20);
/// One attempt: connect, send, read the whole reply.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// A request not answered after retrying this long counts as failed.
const RETRY_FOR: Duration = Duration::from_secs(10);

/// What one looping window saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ConsumerReport {
    pub requests: u32,
    /// Longest time between two answered requests.
    pub longest_gap_ms: u64,
    /// Failed attempts that were retried.
    pub retries: u32,
    /// Requests that failed even after retrying for RETRY_FOR.
    pub failed: u32,
}

/// A running consumer loop; `finish` stops it after its current request.
pub struct ConsumerLoop {
    stop: Arc<AtomicBool>,
    task: JoinHandle<ConsumerReport>,
}

impl ConsumerLoop {
    pub fn start(listener: SocketAddr) -> ConsumerLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(listener, stop.clone()));
        ConsumerLoop { stop, task }
    }

    /// Stops after the current request (retried as usual, so a gap still open
    /// is counted whole) and reports.
    pub async fn finish(mut self) -> ConsumerReport {
        self.stop.store(true, Ordering::Relaxed);
        (&mut self.task).await.unwrap_or_default()
    }
}

impl Drop for ConsumerLoop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(listener: SocketAddr, stop: Arc<AtomicBool>) -> ConsumerReport {
    let mut report = ConsumerReport::default();
    let mut last_answer: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        report.requests += 1;
        let given_up = Instant::now() + RETRY_FOR;
        loop {
            if request(listener).await {
                let now = Instant::now();
                if let Some(last) = last_answer {
                    let gap = now.duration_since(last).as_millis() as u64;
                    report.longest_gap_ms = report.longest_gap_ms.max(gap);
                }
                last_answer = Some(now);
                break;
            }
            if Instant::now() > given_up {
                report.failed += 1;
                break;
            }
            report.retries += 1;
            tokio::time::sleep(PAUSE).await;
        }
        tokio::time::sleep(PAUSE).await;
    }
    report
}

/// One `GET /` through the listener; true on a complete 200 reply.
async fn request(listener: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(listener).await?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        std::io::Result::Ok(reply)
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
        Ok(Ok(reply)) => reply.starts_with(b"HTTP/1.") && reply.windows(5).any(|w| w == b" 200 "),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP server on loopback that stops answering for a while: the loop
    /// sees a gap about as long, retries through it, and fails nothing.
    #[tokio::test]
    async fn the_loop_reports_the_longest_gap_and_retries_through_an_outage() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let flag = down.clone();
        let server = tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                if !flag.load(Ordering::Relaxed) {
                    let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nhello").await;
                }
            }
        });
        let consumer = ConsumerLoop::start(addr);
        tokio::time::sleep(Duration::from_millis(200)).await;
        down.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(400)).await;
        down.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let report = consumer.finish().await;
        server.abort();
        assert_eq!(report.failed, 0, "{report:?}");
        assert!(report.retries > 3, "{report:?}");
        assert!(
            (400..1000).contains(&report.longest_gap_ms),
            "a 400 ms outage: {report:?}"
        );
    }
}
