//! The overlay transport: TCP, then a secure channel keyed by the network key
//! (TLS or noise; membership, authentication and encryption in one handshake:
//! see `membership`), then yamux. A relayed circuit (circuit relay v2) gets the
//! very same upgrade end to end: the relay only forwards ciphertext between the
//! two peers.
//!
//! QUIC is absent: libp2p-quic runs its own TLS handshake with no place for the
//! network key, so a QUIC listener would let peers without it in.

use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::{PeerId, Transport, relay, tcp, yamux};

use super::identity::NetworkKey;
use super::membership::{Membership, SetupError};

/// A connection's whole upgrade (multistream, noise, yamux) must finish in this;
/// a remote that stalls mid-handshake is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The byte transport under the overlay's upgrade.
#[derive(Default)]
pub enum Wire {
    /// TCP: what every real node uses.
    #[default]
    Tcp,
    /// Any other byte-stream transport: `bench scale` runs a thousand nodes in
    /// one process over libp2p's memory transport (`/memory/N` addresses).
    Pipes(Boxed<Pipe>),
}

/// A byte stream of a [`Wire::Pipes`] transport.
pub type Pipe = Box<dyn PipeIo>;
pub trait PipeIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PipeIo for T {}

/// Direct connections (TCP, or the pipes given), and circuits through relay peers.
pub fn build(
    keypair: &Keypair,
    key: NetworkKey,
    wire: Wire,
    relayed: relay::client::Transport,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, SetupError> {
    let direct = match wire {
        Wire::Tcp => secure(
            tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)),
            keypair,
            key,
        )?,
        Wire::Pipes(pipes) => secure(pipes, keypair, key)?,
    };
    Ok(direct
        .or_transport(secure(relayed, keypair, key)?)
        .map(|either, _| either.into_inner())
        .boxed())
}

/// The overlay's upgrade on top of any byte-stream transport.
fn secure<T>(
    transport: T,
    keypair: &Keypair,
    key: NetworkKey,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, SetupError>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    Ok(transport
        .upgrade(Version::V1Lazy)
        .authenticate(Membership::new(keypair, &key)?)
        .multiplex(yamux_config())
        .timeout(HANDSHAKE_TIMEOUT)
        .boxed())
}

/// Streams one connection may carry at once. Every consumer connection is a
/// stream, so yamux's default of 512 would refuse the 513th concurrent one; 4096
/// is the most yamux allows with its 1 GiB connection window (256 KiB each).
pub const MAX_STREAMS_PER_CONNECTION: usize = 4096;

fn yamux_config() -> yamux::Config {
    let mut config = yamux::Config::default();
    config.set_max_num_streams(MAX_STREAMS_PER_CONNECTION);
    config
}
