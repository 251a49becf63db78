//! Overlay membership: only holders of the network key complete a handshake, and
//! the handshake is the secure channel's own, with no home-made protocol.
//!
//! Every connection offers two standard constructions, the first preferred:
//! - `/tls/1.0.0` ([`KeyedTls`]): libp2p's TLS 1.3 handshake with AES-GCM
//!   where the CPU has AES instructions, then an HMAC of the network key over
//!   the session's TLS exporter and the sender's side (channel binding). About
//!   twice noise's speed on the data path (docs/security-channel.md has figures).
//! - `/noise` ([`KeyedNoise`]): libp2p-noise's XX handshake with a *prologue*
//!   derived from the network key (noise spec §6): both sides hash it into the
//!   handshake, and every handshake message after the first is authenticated
//!   under that hash, so different keys fail at the first authenticated message.
//!   Roles and transcript are bound by noise itself. Any libp2p implementation
//!   whose noise takes a prologue (js-libp2p `noise({ prologueBytes })`,
//!   go-libp2p `noise.Prologue`) joins with [`noise_prologue`]'s bytes.
//!
//! Both keys are derived from a 256-bit random key and never sent, so they
//! cannot be guessed offline. SECURITY.md argues both.
//!
//! A failed handshake is named for the operator: a decrypt failure or a wrong
//! proof is a key mismatch; a remote that leaves right after our first
//! authenticated message is one that could not check it, i.e. one without the key.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::future::Either;
use futures::io::{BufReader, BufWriter};
use futures::{AsyncRead, AsyncWrite, FutureExt};
use libp2p::PeerId;
use libp2p::core::UpgradeInfo;
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use libp2p::identity::Keypair;
use libp2p::noise;

use super::identity::NetworkKey;
use super::keyed_tls::{KeyedTls, TlsStream};

/// The label the noise prologue is derived under; changing it splits the overlay.
pub const PROLOGUE_LABEL: &[u8] = b"peervisor overlay noise prologue v1";

/// Socket reads are gathered this much at a time: rustls asks for 4 KiB per
/// read, which cost one system call each; this makes it one per 64 KiB.
const READ_BUFFER: usize = 64 * 1024;
/// Plaintext gathered before TLS seals it: yamux writes a 12-byte header and
/// then its frame, which would otherwise be two records and two system calls.
const WRITE_BUFFER: usize = 64 * 1024;

const TLS_PROTOCOL: &str = "/tls/1.0.0";
const NOISE_PROTOCOL: &str = "/noise";

/// HMAC-SHA256(network key, [`PROLOGUE_LABEL`]): what both sides hash into the
/// noise handshake. In Node.js: `createHmac('sha256', key).update(label).digest()`.
pub fn noise_prologue(key: &NetworkKey) -> Vec<u8> {
    let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.bytes());
    ring::hmac::sign(&mac, PROLOGUE_LABEL).as_ref().to_vec()
}

/// libp2p-noise keyed by the network key.
#[derive(Clone)]
pub struct KeyedNoise {
    noise: noise::Config,
}

impl KeyedNoise {
    pub fn new(keypair: &Keypair, key: &NetworkKey) -> Result<Self, noise::Error> {
        Ok(KeyedNoise {
            noise: noise::Config::new(keypair)?.with_prologue(noise_prologue(key)),
        })
    }

    async fn upgrade<T>(
        self,
        socket: T,
        dialer: bool,
    ) -> Result<(PeerId, NoiseStream<T>), HandshakeError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (socket, counter) = Counted::new(socket);
        let result = if dialer {
            self.noise.upgrade_outbound(socket, NOISE_PROTOCOL).await
        } else {
            self.noise.upgrade_inbound(socket, NOISE_PROTOCOL).await
        };
        result.map_err(|e| HandshakeError::from_noise(e, &counter))
    }
}

pub type NoiseStream<T> = noise::Output<Counted<T>>;

/// The security upgrade of every overlay connection: keyed TLS or keyed noise.
#[derive(Clone)]
pub struct Membership {
    tls: KeyedTls,
    noise: KeyedNoise,
}

impl Membership {
    pub fn new(keypair: &Keypair, key: &NetworkKey) -> Result<Self, SetupError> {
        Ok(Membership {
            tls: KeyedTls::new(keypair, key)?,
            noise: KeyedNoise::new(keypair, key)?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("setting up TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("setting up noise: {0}")]
    Noise(#[from] noise::Error),
}

/// Why a handshake failed, in the operator's words.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The remote's handshake or proof did not verify under our key.
    #[error("network key mismatch")]
    KeyMismatch,
    /// The remote closed the connection right after our first authenticated
    /// message: a peer that could not verify it (another key), or a stranger.
    #[error("network key mismatch (the remote left the handshake after our first message)")]
    LeftAfterOurMessage,
    #[error("noise handshake failed: {0}")]
    Noise(noise::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error("membership proof failed: {0}")]
    Proof(io::Error),
}

impl HandshakeError {
    fn from_noise(error: noise::Error, counted: &Counter) -> HandshakeError {
        match error {
            noise::Error::Noise(snow::Error::Decrypt) => HandshakeError::KeyMismatch,
            noise::Error::Io(ref e) if is_decrypt_error(e) => HandshakeError::KeyMismatch,
            noise::Error::Io(ref e) if counted.wrote_handshake() && is_closed(e) => {
                HandshakeError::LeftAfterOurMessage
            }
            other => HandshakeError::Noise(other),
        }
    }
}

/// libp2p-noise hands a failed decryption up as an I/O error wrapping snow's.
fn is_decrypt_error(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<snow::Error>())
        .is_some_and(|inner| matches!(inner, snow::Error::Decrypt))
}

pub(super) fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

impl UpgradeInfo for Membership {
    type Info = &'static str;
    type InfoIter = std::array::IntoIter<&'static str, 2>;

    fn protocol_info(&self) -> Self::InfoIter {
        [TLS_PROTOCOL, NOISE_PROTOCOL].into_iter()
    }
}

/// The channel one connection ended up with.
pub type Secured<T> = Either<BufWriter<TlsStream<BufReader<T>>>, NoiseStream<BufReader<T>>>;
type Upgraded<T> = (PeerId, Secured<T>);
type UpgradeFuture<T> = Pin<Box<dyn Future<Output = Result<Upgraded<T>, HandshakeError>> + Send>>;

impl Membership {
    fn upgrade<T>(self, socket: T, protocol: &str, dialer: bool) -> UpgradeFuture<T>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let socket = BufReader::with_capacity(READ_BUFFER, socket);
        if protocol == TLS_PROTOCOL {
            async move {
                let (peer, stream) = if dialer {
                    self.tls.dial(socket).await?
                } else {
                    self.tls.accept(socket).await?
                };
                Ok((
                    peer,
                    Either::Left(BufWriter::with_capacity(WRITE_BUFFER, stream)),
                ))
            }
            .boxed()
        } else {
            self.noise
                .upgrade(socket, dialer)
                .map(|r| r.map(|(peer, stream)| (peer, Either::Right(stream))))
                .boxed()
        }
    }
}

impl<T> InboundConnectionUpgrade<T> for Membership
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = Upgraded<T>;
    type Error = HandshakeError;
    type Future = UpgradeFuture<T>;

    fn upgrade_inbound(self, socket: T, info: Self::Info) -> Self::Future {
        self.upgrade(socket, info, false)
    }
}

impl<T> OutboundConnectionUpgrade<T> for Membership
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = Upgraded<T>;
    type Error = HandshakeError;
    type Future = UpgradeFuture<T>;

    fn upgrade_outbound(self, socket: T, info: Self::Info) -> Self::Future {
        self.upgrade(socket, info, true)
    }
}

/// How many handshake bytes we wrote; shared with the error explanation.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Past the initiator's first message (an ephemeral key, 32 bytes plus the
    /// 2-byte frame length) nothing we send is unauthenticated.
    fn wrote_handshake(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 34
    }
}

/// The socket under noise, counting what we write during the handshake only:
/// once the counter has seen enough it stops touching it, so the data path
/// pays one comparison per write.
pub struct Counted<T> {
    inner: T,
    counter: Option<Counter>,
}

impl<T> Counted<T> {
    fn new(inner: T) -> (Self, Counter) {
        let counter = Counter::default();
        (
            Counted {
                inner,
                counter: Some(counter.clone()),
            },
            counter,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let (Some(counter), Poll::Ready(Ok(n))) = (&this.counter, &written) {
            let total = counter.0.fetch_add(*n as u64, Ordering::Relaxed) + *n as u64;
            if total > 1024 {
                this.counter = None;
            }
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::compat::TokioAsyncReadCompatExt;

    type Pipe = tokio_util::compat::Compat<tokio::io::DuplexStream>;

    fn pipe() -> (Pipe, Pipe) {
        let (x, y) = tokio::io::duplex(64 * 1024);
        (x.compat(), y.compat())
    }

    type Outcome = Result<PeerId, HandshakeError>;

    /// Both ends of one handshake over `protocol`; a failed side drops its
    /// socket, as the swarm does.
    async fn handshake(
        protocol: &'static str,
        dialer: NetworkKey,
        listener: NetworkKey,
    ) -> (Outcome, Outcome) {
        let (a, b) = pipe();
        let dialer = Membership::new(&Keypair::generate_ed25519(), &dialer).unwrap();
        let listener = Membership::new(&Keypair::generate_ed25519(), &listener).unwrap();
        futures::join!(
            async move { dialer.upgrade_outbound(a, protocol).await.map(|(p, _)| p) },
            async move { listener.upgrade_inbound(b, protocol).await.map(|(p, _)| p) }
        )
    }

    #[test]
    fn the_prologue_is_the_documented_hmac() {
        // What another implementation computes (docs/security-channel.md):
        // printf %s "peervisor overlay noise prologue v1" | openssl dgst -sha256 -mac HMAC -macopt hexkey:0707...07 (32 bytes)
        let prologue = noise_prologue(&NetworkKey::new([7; 32]));
        assert_eq!(
            hex::encode(prologue),
            "0223c014d274f2cb26f6dca5adeddaafc78466dfe2836c0f64bca19db59e4105"
        );
    }

    #[tokio::test]
    async fn same_key_joins_and_a_different_key_is_refused_on_both_sides() {
        let key = NetworkKey::new([7; 32]);
        for protocol in [TLS_PROTOCOL, NOISE_PROTOCOL] {
            let (out, inn) = handshake(protocol, key, key).await;
            assert!(out.is_ok() && inn.is_ok(), "{protocol}: {out:?} {inn:?}");

            let (out, inn) = handshake(protocol, key, NetworkKey::new([8; 32])).await;
            for side in [out, inn] {
                let text = side.unwrap_err().to_string();
                assert!(
                    text.starts_with("network key mismatch"),
                    "{protocol}: {text}"
                );
            }
        }
    }

    /// The peer id each side learns is the other's identity.
    #[tokio::test]
    async fn each_side_learns_the_others_identity() {
        let key = NetworkKey::new([7; 32]);
        let (dialer_keys, listener_keys) =
            (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        for protocol in [TLS_PROTOCOL, NOISE_PROTOCOL] {
            let (a, b) = pipe();
            let dialer = Membership::new(&dialer_keys, &key).unwrap();
            let listener = Membership::new(&listener_keys, &key).unwrap();
            let (out, inn) = futures::join!(
                dialer.upgrade_outbound(a, protocol),
                listener.upgrade_inbound(b, protocol)
            );
            assert_eq!(
                out.unwrap().0,
                listener_keys.public().to_peer_id(),
                "{protocol}"
            );
            assert_eq!(
                inn.unwrap().0,
                dialer_keys.public().to_peer_id(),
                "{protocol}"
            );
        }
    }

    /// The other side of a connection that sends `input` and then closes.
    struct Scripted {
        input: futures::io::Cursor<Vec<u8>>,
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.input).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    mod fuzz {
        use super::*;
        use crate::fuzzing::{bytes_like, config};
        use proptest::prelude::*;

        /// A listener's view of a stranger: whatever bytes follow the protocol
        /// choice, on either channel, end in a named refusal (never a
        /// connection, a panic or a hang).
        fn refuses(
            membership: &Membership,
            protocol: &'static str,
            bytes: Vec<u8>,
        ) -> Result<(), String> {
            let peer = Scripted {
                input: futures::io::Cursor::new(bytes),
            };
            match futures::executor::block_on(membership.clone().upgrade_inbound(peer, protocol)) {
                Ok(_) => Err(format!("{protocol}: random bytes completed a handshake")),
                Err(e) if e.to_string().is_empty() => Err(format!("{protocol}: unnamed error")),
                Err(_) => Ok(()),
            }
        }

        proptest! {
            #![proptest_config(config(2_000))]
            #[test]
            fn fuzz_handshake_first_bytes(bytes in bytes_like(vec![
                // A TLS record header (handshake, TLS 1.0 record version) and a
                // noise frame length, so mutations reach past the first check.
                vec![0x16, 0x03, 0x01, 0x00, 0x40],
                vec![0x00, 0x20],
            ])) {
                thread_local! {
                    static LISTENER: Membership =
                        Membership::new(&Keypair::generate_ed25519(), &NetworkKey::new([7; 32])).unwrap();
                }
                LISTENER.with(|listener| -> Result<(), TestCaseError> {
                    for protocol in [TLS_PROTOCOL, NOISE_PROTOCOL] {
                        refuses(listener, protocol, bytes.clone()).map_err(TestCaseError::fail)?;
                    }
                    Ok(())
                })?;
            }
        }
    }
}
