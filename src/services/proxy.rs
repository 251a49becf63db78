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
const MAX_HEADER: usize = 4096;
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
}

#[derive(Serialize, Deserialize)]
pub struct Answer {
    pub error: Option<String>,
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
) -> Result<Compat<libp2p::Stream>> {
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
            },
        )
        .await?;
        let answer: Answer = read_frame(&mut stream).await?;
        match answer.error {
            None => Ok(stream),
            Some(reason) => Err(anyhow!(reason)),
        }
    };
    tokio::time::timeout(OPEN_TIMEOUT, open)
        .await
        .map_err(|_| anyhow!("no answer within {OPEN_TIMEOUT:?}"))?
}

/// Provider side: connects to where a service is served.
pub async fn connect_target(target: &Target, network: &GuestNetwork) -> Result<TcpStream> {
    match target {
        Target::Guest { ip, port } => {
            let addr = std::net::SocketAddr::from((*ip, *port));
            let network = network.clone();
            let std_stream =
                tokio::task::spawn_blocking(move || network.connect(addr, CONNECT_TIMEOUT))
                    .await?
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

/// Copy buffer per direction: large writes make large yamux/noise frames, which
/// is most of the difference between a crawl and line rate through the overlay.
const PIPE_BUFFER: usize = 256 * 1024;

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
            },
        )
        .await
        .unwrap();
        let hello: Hello = read_frame(&mut b).await.unwrap();
        assert_eq!(hello.service, "web");

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
