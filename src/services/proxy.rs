//! The byte path of a consumed service: the consumer opens a libp2p stream to the
//! provider, names the service in a small header, the provider answers yes or why
//! not, then both pipe raw bytes (backpressure and half-close come from the copy).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use libp2p::PeerId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use super::Target;
use crate::hypervisor::netns::GuestNetwork;
use crate::node::StreamControl;
use crate::node::protocol::SERVICE_PROTOCOL;

/// Headers are tiny; anything bigger is hostile.
pub(crate) const MAX_HEADER: usize = 4096;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Opening a stream to a provider and hearing its answer. A provider that died
/// without closing its connections (a crashed host) would otherwise hold the
/// consumer's connection until the transport gives up; after this the next
/// provider is tried.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    pub service: String,
    /// Serve it here or refuse; never pass it on to another peer (a source
    /// forwarding a consumer to where its VM went, a probe asking whether the
    /// VM runs there). Two peers forwarding to each other would loop.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub served_here: bool,
}

#[derive(Serialize, Deserialize)]
pub struct Answer {
    pub error: Option<String>,
}

impl Answer {
    /// What the consumer makes of the provider's answer: go on, or the reason
    /// it keeps as the consumption's `last_error` and logs (made printable: it
    /// is another peer's text).
    pub fn outcome(&self) -> Result<(), String> {
        match &self.error {
            None => Ok(()),
            Some(reason) => Err(crate::node::protocol::peer_text(reason)),
        }
    }
}

/// Live counters of one consumption (a local listener).
#[derive(Default)]
pub struct Counters {
    pub total: AtomicU64,
    pub active: AtomicU64,
    pub to_service: AtomicU64,
    pub from_service: AtomicU64,
    pub errors: AtomicU64,
    pub last_provider: Mutex<Option<String>>,
    pub last_error: Mutex<Option<String>>,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec(value)?;
    let len = u16::try_from(bytes.len()).map_err(|_| anyhow!("header too large"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(r: &mut R) -> Result<T> {
    let read = async {
        let mut len = [0u8; 2];
        r.read_exact(&mut len).await?;
        let len = u16::from_be_bytes(len) as usize;
        if len > MAX_HEADER {
            bail!("header of {len} bytes refused");
        }
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf).await?;
        serde_json::from_slice(&buf).context("malformed header")
    };
    tokio::time::timeout(HEADER_TIMEOUT, read)
        .await
        .map_err(|_| anyhow!("no header within {HEADER_TIMEOUT:?}"))?
}

/// Consumer side: a stream to `peer` that now carries `service`'s bytes.
pub async fn open(
    streams: &mut StreamControl,
    peer: PeerId,
    service: &str,
) -> Result<Compat<crate::node::Stream>> {
    open_with(streams, peer, service, false).await
}

/// `open`, but only if `peer` serves `service` itself (see Hello::served_here).
pub async fn open_served_there(
    streams: &mut StreamControl,
    peer: PeerId,
    service: &str,
) -> Result<Compat<crate::node::Stream>> {
    open_with(streams, peer, service, true).await
}

async fn open_with(
    streams: &mut StreamControl,
    peer: PeerId,
    service: &str,
    served_here: bool,
) -> Result<Compat<crate::node::Stream>> {
    let open = async {
        let stream = streams
            .open_stream(peer, SERVICE_PROTOCOL)
            .await
            .map_err(|e| anyhow!("opening a stream: {e}"))?;
        let mut stream = stream.compat();
        write_frame(
            &mut stream,
            &Hello {
                service: service.to_string(),
                served_here,
            },
        )
        .await?;
        let answer: Answer = read_frame(&mut stream).await?;
        answer.outcome().map_err(|reason| anyhow!(reason))?;
        Ok(stream)
    };
    tokio::time::timeout(OPEN_TIMEOUT, open)
        .await
        .map_err(|_| anyhow!("no answer within {OPEN_TIMEOUT:?}"))?
}

/// A guest connection not made this fast gets company: another attempt starts.
/// A SYN that reaches a guest while it is paused (a migration's switch-over) is
/// lost, and the kernel sends the next one only after TCP's initial
/// retransmission timeout, a whole second; a fresh attempt after the guest runs
/// again is answered at once. A guest that answers normally sees one connection.
pub const CONNECT_AGAIN_AFTER: Duration = Duration::from_millis(150);
/// At most this many attempts at once per guest connection.
const CONNECT_ATTEMPTS: usize = 6;

/// Provider side: connects to where a service is served.
pub async fn connect_target(target: &Target, network: &GuestNetwork) -> Result<TcpStream> {
    match target {
        Target::Guest { ip, port } => {
            let addr = std::net::SocketAddr::from((*ip, *port));
            let network = network.clone();
            let connect = move |limit| network.connect(addr, limit);
            let std_stream = connect_staggered(connect, CONNECT_AGAIN_AFTER)
                .await
                .with_context(|| format!("connecting to the guest at {addr}"))?;
            std_stream.set_nonblocking(true)?;
            Ok(TcpStream::from_std(std_stream)?)
        }
        Target::Legacy { addr } => tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr}: timed out"))?
            .with_context(|| format!("connecting to {addr}")),
    }
}

/// Connects with `connect` (a blocking connect given its time limit), starting
/// another attempt every `again` while none has connected (see
/// CONNECT_AGAIN_AFTER); the first connection wins, later ones are closed as they
/// come. A refusal ends it at once: nothing listens there.
async fn connect_staggered<F>(connect: F, again: Duration) -> std::io::Result<std::net::TcpStream>
where
    F: Fn(Duration) -> std::io::Result<std::net::TcpStream> + Clone + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    let mut attempts = tokio::task::JoinSet::new();
    let mut started = 0;
    loop {
        if started < CONNECT_ATTEMPTS {
            started += 1;
            let connect = connect.clone();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            attempts.spawn_blocking(move || connect(left.max(again)));
        }
        let next_attempt = tokio::time::sleep(again);
        tokio::select! {
            done = attempts.join_next() => match done {
                Some(Ok(Ok(stream))) => {
                    // The others finish on the blocking pool and are dropped (closed).
                    attempts.detach_all();
                    return Ok(stream);
                }
                Some(Ok(Err(e))) if e.kind() != std::io::ErrorKind::TimedOut
                    || attempts.is_empty() =>
                {
                    attempts.detach_all();
                    return Err(e);
                }
                Some(Ok(Err(_))) => {}
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Err(std::io::ErrorKind::TimedOut.into()),
            },
            _ = next_attempt, if started < CONNECT_ATTEMPTS => {}
            _ = tokio::time::sleep_until(deadline) => {
                attempts.detach_all();
                return Err(std::io::ErrorKind::TimedOut.into());
            }
        }
    }
}

/// Copy buffer per direction: large writes make large yamux/noise frames, which
/// is most of the difference between a crawl and line rate through the overlay.
const PIPE_BUFFER: usize = 256 * 1024;

/// A byte stream that notes when its first byte arrived (where a consumer
/// connection's time goes: see `Peer::forward`).
pub struct FirstByte<S> {
    inner: S,
    pub at: Option<std::time::Instant>,
}

impl<S> FirstByte<S> {
    pub fn new(inner: S) -> Self {
        FirstByte { inner, at: None }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstByte<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.at.is_none() && buf.filled().len() > before {
            self.at = Some(std::time::Instant::now());
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstByte<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Pipes both ways until both sides are done; returns (a→b, b→a) byte counts.
pub async fn pipe<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, PIPE_BUFFER, PIPE_BUFFER).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_or_garbage_headers_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        write_frame(
            &mut a,
            &Hello {
                service: "web".into(),
                served_here: false,
            },
        )
        .await
        .unwrap();
        let hello: Hello = read_frame(&mut b).await.unwrap();
        assert_eq!(hello.service, "web");
        assert!(!hello.served_here);
        // Headers of peers that do not know the flag: not served_here.
        let old = br#"{"service":"web"}"#;
        a.write_all(&(old.len() as u16).to_be_bytes())
            .await
            .unwrap();
        a.write_all(old).await.unwrap();
        let hello: Hello = read_frame(&mut b).await.unwrap();
        assert!(!hello.served_here);
        write_frame(
            &mut a,
            &Hello {
                service: "web".into(),
                served_here: true,
            },
        )
        .await
        .unwrap();
        let hello: Hello = read_frame(&mut b).await.unwrap();
        assert!(hello.served_here);

        a.write_all(&60000u16.to_be_bytes()).await.unwrap();
        let err = read_frame::<_, Hello>(&mut b)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("refused"), "{err}");

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&3u16.to_be_bytes()).await.unwrap();
        a.write_all(b"{{{").await.unwrap();
        let err = read_frame::<_, Hello>(&mut b)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("malformed"), "{err}");
    }

    /// A listener whose accept queue is full drops SYNs, as a paused guest does;
    /// once it accepts again, a fresh attempt connects at once, where the first
    /// would wait for TCP's one-second SYN retransmission.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connect_whose_syn_was_dropped_is_overtaken_by_a_fresh_attempt() {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        // Fill the accept queue until a SYN goes unanswered.
        let mut queued = Vec::new();
        while let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            queued.push(s);
            assert!(queued.len() < 64, "the accept queue never filled");
        }
        // Each attempt notes its number and, if it connects, its local address.
        let attempts = std::sync::Arc::new(Mutex::new(Vec::new()));
        let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (noted, counter) = (attempts.clone(), started.clone());
        let connect = move |limit| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let stream = std::net::TcpStream::connect_timeout(&addr, limit)?;
            noted.lock().unwrap().push((n, stream.local_addr()?));
            Ok(stream)
        };
        let connecting = tokio::spawn(connect_staggered(connect, Duration::from_millis(100)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // "The guest runs again": drain the queue, keep accepting.
        let accepting = tokio::spawn(async move {
            let mut accepted = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                accepted.push(s);
            }
        });
        let stream = connecting.await.unwrap().expect("connected");
        accepting.abort();
        assert_eq!(stream.peer_addr().unwrap(), addr);
        // Behaviour, not a time bound a loaded machine could miss: the winner is
        // a later attempt, not the first one after its SYN retransmission.
        let local = stream.local_addr().unwrap();
        let attempts = attempts.lock().unwrap().clone();
        let winner = attempts.iter().find(|(_, a)| *a == local).map(|(n, _)| *n);
        assert!(
            winner.is_some_and(|n| n > 0),
            "attempt {winner:?} won (of {attempts:?}): the first connect waited for the SYN retransmission"
        );
    }

    #[tokio::test]
    async fn a_refused_connect_fails_at_once() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(); // closed again: nothing listens there
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let connect = move |limit| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::net::TcpStream::connect_timeout(&addr, limit)
        };
        let err = connect_staggered(connect, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        // One attempt, and no waiting for the next (the interval is a minute:
        // the test would hang, not pass slowly).
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "no retries"
        );
    }

    #[tokio::test]
    async fn legacy_target_connects_over_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let target = Target::Legacy { addr };
        let network = GuestNetwork::named("unused");
        let (connected, accepted) =
            tokio::join!(connect_target(&target, &network), listener.accept());
        assert!(connected.is_ok() && accepted.is_ok());
        let closed = Target::Legacy {
            addr: "127.0.0.1:1".into(),
        };
        let err = connect_target(&closed, &network).await.unwrap_err();
        assert!(format!("{err:#}").contains("127.0.0.1:1"), "{err:#}");
    }
}
