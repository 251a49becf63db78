//! The overlay transport: TCP, then the membership proof (the network key keeps
//! strangers out), then noise (authenticated encryption), then yamux.
//!
//! QUIC is deliberately absent: the membership proof runs on raw byte streams
//! before noise, which QUIC does not expose, so a QUIC listener would let peers
//! without the network key in.

use std::time::Duration;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::{PeerId, Transport, noise, tcp, yamux};

use super::identity::NetworkKey;
use super::membership;

pub fn build(
    keypair: &Keypair,
    key: NetworkKey,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    let noise = noise::Config::new(keypair)?;
    Ok(
        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .and_then(move |socket, _| membership::prove(socket, key))
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .timeout(Duration::from_secs(20))
            .boxed(),
    )
}
