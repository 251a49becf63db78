//! The overlay transport: TCP, then the membership proof (the network key keeps
//! strangers out), then noise (authenticated encryption), then yamux. A relayed
//! circuit (circuit relay v2) gets the very same upgrade end to end: the relay only
//! forwards the membership proof and noise ciphertext between the two peers.
//!
//! QUIC is deliberately absent: the membership proof runs on raw byte streams
//! before noise, which QUIC does not expose, so a QUIC listener would let peers
//! without the network key in.

use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::{PeerId, Transport, noise, relay, tcp, yamux};

use super::identity::NetworkKey;
use super::membership;

/// Direct TCP connections, and circuits through relay peers.
pub fn build(
    keypair: &Keypair,
    key: NetworkKey,
    relayed: relay::client::Transport,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    let direct = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    Ok(secure(direct, keypair, key)?
        .or_transport(secure(relayed, keypair, key)?)
        .map(|either, _| either.into_inner())
        .boxed())
}

/// The overlay's upgrade on top of any byte-stream transport.
fn secure<T>(
    transport: T,
    keypair: &Keypair,
    key: NetworkKey,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    let noise = noise::Config::new(keypair)?;
    Ok(transport
        .and_then(move |socket, _| membership::prove(socket, key))
        .upgrade(Version::V1Lazy)
        .authenticate(noise)
        .multiplex(yamux_config())
        .timeout(Duration::from_secs(20))
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
