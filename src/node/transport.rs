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
use libp2p::{PeerId, Transport, noise, relay, tcp, yamux};

use super::identity::NetworkKey;
use super::membership::{Membership, SetupError, noise_prologue};

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
    /// one process over libp2p's memory transport (`/memory/N` addresses), with
    /// the channel the benchmark chose.
    Pipes(Boxed<Pipe>, SimWire),
}

/// How a simulated overlay's connections are secured ([`Wire::Pipes`] only).
#[derive(Clone, Copy, Debug)]
pub struct SimWire {
    pub channel: SimChannel,
    /// The whole upgrade's bound: [`HANDSHAKE_TIMEOUT`] unless the simulation
    /// scales it (a thousand nodes on two cores wait seconds for a core, and a
    /// handshake dropped at its bound is redone from the start).
    pub handshake_timeout: Duration,
    /// Simulation only: the node's timers that pace the overlay (ping and the
    /// silence limit, the gossip heartbeat, anti-entropy, upkeep) run this many
    /// times slower, for a host too slow for the overlay's size (`bench scale
    /// --time-scale`). 1 for every real node.
    pub time_scale: u32,
}

impl Wire {
    /// How many times slower the node's timers run: 1 except in a simulation
    /// that asks for more.
    pub fn time_scale(&self) -> u32 {
        match self {
            Wire::Tcp => 1,
            Wire::Pipes(_, sim) => sim.time_scale.max(1),
        }
    }
}

/// The secure channel of a simulated overlay ([`Wire::Pipes`]); real nodes
/// always offer the product's. The issue allows a cheaper one in the
/// simulation: a thousand nodes' handshakes on two cores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SimChannel {
    /// The product's: keyed TLS 1.3 (hybrid X25519 + ML-KEM key exchange,
    /// ECDSA certificates) preferred, keyed noise offered.
    #[default]
    Product,
    /// Keyed noise alone (X25519 and Ed25519, the same network-key prologue):
    /// the product's second construction, without TLS's costlier handshake.
    Noise,
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
    let product = SimWire {
        channel: SimChannel::Product,
        handshake_timeout: HANDSHAKE_TIMEOUT,
        time_scale: 1,
    };
    let direct = match wire {
        Wire::Tcp => secure(
            tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)),
            keypair,
            key,
            product,
        )?,
        // The simulation counts what each protocol sends (`bench scale`).
        Wire::Pipes(pipes, sim) => secure(pipes, keypair, key, sim)?
            .map(|(peer, muxer), _| (peer, super::wiretap::tap(muxer)))
            .boxed(),
    };
    Ok(direct
        .or_transport(secure(relayed, keypair, key, product)?)
        .map(|either, _| either.into_inner())
        .boxed())
}

/// The overlay's upgrade on top of any byte-stream transport: the product's
/// channel, or (simulation only) keyed noise alone, libp2p-noise with the same
/// prologue as the product's noise, so membership still holds.
fn secure<T>(
    transport: T,
    keypair: &Keypair,
    key: NetworkKey,
    how: SimWire,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, SetupError>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    let upgrading = transport.upgrade(Version::V1Lazy);
    Ok(match how.channel {
        SimChannel::Product => upgrading
            .authenticate(Membership::new(keypair, &key)?)
            .multiplex(yamux_config())
            .timeout(how.handshake_timeout)
            .boxed(),
        SimChannel::Noise => upgrading
            .authenticate(noise::Config::new(keypair)?.with_prologue(noise_prologue(&key)))
            .multiplex(yamux_config())
            .timeout(how.handshake_timeout)
            .boxed(),
    })
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use futures::StreamExt;
    use libp2p::Multiaddr;
    use libp2p::core::Endpoint;
    use libp2p::core::transport::{DialOpts, ListenerId, MemoryTransport, PortUse, TransportEvent};

    use super::*;

    fn sim_transport(
        keypair: &Keypair,
        key: NetworkKey,
        sim: SimWire,
    ) -> Boxed<(PeerId, StreamMuxerBox)> {
        let pipes = MemoryTransport::default()
            .map(|channel, _| Box::new(channel) as Pipe)
            .boxed();
        let (relayed, _) = relay::client::new(keypair.public().to_peer_id());
        build(keypair, key, Wire::Pipes(pipes, sim), relayed).unwrap()
    }

    fn dial_opts() -> DialOpts {
        DialOpts {
            role: Endpoint::Dialer,
            port_use: PortUse::New,
        }
    }

    /// Listens on `addr` and upgrades every incoming connection in the background.
    fn serve(mut listener: Boxed<(PeerId, StreamMuxerBox)>, addr: Multiaddr) {
        listener.listen_on(ListenerId::next(), addr).unwrap();
        tokio::spawn(async move {
            while let Some(event) = listener.next().await {
                if let TransportEvent::Incoming { upgrade, .. } = event {
                    tokio::spawn(upgrade);
                }
            }
        });
    }

    fn noise(handshake_timeout: Duration) -> SimWire {
        SimWire {
            channel: SimChannel::Noise,
            handshake_timeout,
            time_scale: 1,
        }
    }

    #[tokio::test]
    async fn the_simulations_noise_channel_admits_only_holders_of_the_network_key() {
        let key = NetworkKey::new([3; 32]);
        let listener_keys = Keypair::generate_ed25519();
        let addr: Multiaddr = format!("/memory/{}", rand::random::<u32>() as u64 + 1)
            .parse()
            .unwrap();
        serve(
            sim_transport(&listener_keys, key, noise(HANDSHAKE_TIMEOUT)),
            addr.clone(),
        );

        let mut member = sim_transport(&Keypair::generate_ed25519(), key, noise(HANDSHAKE_TIMEOUT));
        let (peer, _) = member
            .dial(addr.clone(), dial_opts())
            .unwrap()
            .await
            .unwrap();
        assert_eq!(peer, listener_keys.public().to_peer_id());

        let other_key = NetworkKey::new([4; 32]);
        let mut stranger = sim_transport(
            &Keypair::generate_ed25519(),
            other_key,
            noise(HANDSHAKE_TIMEOUT),
        );
        assert!(stranger.dial(addr, dial_opts()).unwrap().await.is_err());
    }

    #[tokio::test]
    async fn a_simulated_handshake_is_dropped_at_the_simulations_own_bound() {
        // A listener that accepts the pipe and never answers the handshake.
        let addr: Multiaddr = format!("/memory/{}", rand::random::<u32>() as u64 + 1)
            .parse()
            .unwrap();
        let mut silent = MemoryTransport::default().boxed();
        silent.listen_on(ListenerId::next(), addr.clone()).unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(event) = silent.next().await {
                if let TransportEvent::Incoming { upgrade, .. } = event {
                    held.push(upgrade.await);
                }
            }
        });

        let bound = Duration::from_millis(300);
        let mut dialer = sim_transport(
            &Keypair::generate_ed25519(),
            NetworkKey::new([3; 32]),
            noise(bound),
        );
        let started = Instant::now();
        let result = dialer.dial(addr, dial_opts()).unwrap().await;
        let took = started.elapsed();
        assert!(result.is_err(), "a silent listener completed a handshake");
        assert!(took >= bound, "dropped after {took:?}, before the bound");
        // Not at the product's 10 s: the simulation's bound is the one applied.
        assert!(took < HANDSHAKE_TIMEOUT, "dropped after {took:?}");
    }
}
