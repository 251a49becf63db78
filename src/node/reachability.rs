//! AutoNAT: does anyone reach this node directly? Every node asks a connected peer
//! now and then to dial it back at its addresses (and answers such requests for
//! others). A successful dial-back confirms that address as external: identify then
//! advertises it, and a `--relay-server` starts offering relaying only then (libp2p's
//! relay hands out reservations only with a confirmed external address). Failed
//! dial-backs mean "behind NAT": the node stays reachable through relay slots and
//! DCUtR tries to punch a direct path.
//!
//! Dial-backs are real overlay connections, so only members (network key) can ask
//! or answer, and a dial-back goes only to the asking peer's observed IP.

use std::time::Duration;

use libp2p::core::ConnectedPoint;
use libp2p::core::transport::PortUse;
use libp2p::{PeerId, autonat};

use super::EventLoop;
use crate::model::Reachability;

/// Probes come often while the answer is unknown, so a relay server becomes usable
/// seconds after its first peer connects; once sure (two answers alike), every ten
/// minutes.
const BOOT_DELAY: Duration = Duration::from_secs(1);
const RETRY_INTERVAL: Duration = Duration::from_secs(5);
const REFRESH_INTERVAL: Duration = Duration::from_secs(600);
// The same peer may be asked again soon: an overlay may have only one peer able
// to dial back (the relay, for peers behind NAT).
const THROTTLE_SERVER_PERIOD: Duration = Duration::from_secs(5);

/// `time_scale`: a simulation's slower clock (transport.rs; 1 for real nodes)
/// slows AutoNAT's timers like the overlay's others, or its probes weigh ten
/// times too much in a x10 run's node-time figures.
///
/// `dial_backs`: whether a peer can dial this node back at all. A simulated
/// overlay's `/memory/N` addresses carry no IP, and libp2p's AutoNAT server
/// dials back only an address with the observed IP: it refuses every request
/// ("no dialable addresses", DialRefused), which leaves the status unknown,
/// so a simulated node probed every 5 s for ever (the largest stream count of
/// an idle 100-peer overlay, session 6). A real node on a LAN settles after
/// two answers and probes every ten minutes: the simulation models that
/// settled node by probing at the refresh pace from the start.
pub(super) fn behaviour(peer_id: PeerId, time_scale: u32, dial_backs: bool) -> autonat::Behaviour {
    autonat::Behaviour::new(peer_id, config(time_scale, dial_backs))
}

fn config(time_scale: u32, dial_backs: bool) -> autonat::Config {
    let slower = time_scale.max(1);
    let retry = if dial_backs {
        RETRY_INTERVAL
    } else {
        REFRESH_INTERVAL
    };
    autonat::Config {
        boot_delay: BOOT_DELAY * slower,
        retry_interval: retry * slower,
        refresh_interval: REFRESH_INTERVAL * slower,
        throttle_server_period: THROTTLE_SERVER_PERIOD * slower,
        confidence_max: 2,
        // Overlays live on LANs and private address ranges too: a dial-back to
        // 10.x or 192.168.x proves reachability from that peer as well.
        only_global_ips: false,
        ..Default::default()
    }
}

/// Whether a connection is an AutoNAT dial-back this node made for a peer: the
/// only dial here that asks for a new local port (every other dial reuses the
/// listen port, for hole punching). The dial-back proved what it had to as soon as
/// it opened: it is closed then, or it would stay as a second connection to the
/// peer for an hour, and libp2p-stream spreads streams over all connections, whose
/// bursts its single inbound queue then drops more often.
pub(super) fn is_dial_back(endpoint: &ConnectedPoint) -> bool {
    matches!(
        endpoint,
        ConnectedPoint::Dialer {
            port_use: PortUse::New,
            ..
        }
    )
}

pub(super) fn from_nat_status(status: &autonat::NatStatus) -> Reachability {
    match status {
        autonat::NatStatus::Public(address) => Reachability::Public {
            address: address.to_string(),
        },
        autonat::NatStatus::Private => Reachability::Private,
        autonat::NatStatus::Unknown => Reachability::Unknown,
    }
}

impl EventLoop {
    /// Keeps control requests and streams off an AutoNAT dial-back, on either
    /// end: the prober's peer closes it once identified, and a request or stream
    /// that happened to pick it (both spread over a peer's connections) would be
    /// cut with it ("connection closed before a response was received").
    pub(super) fn hide_dial_back(&mut self, connection: libp2p::swarm::ConnectionId) {
        let behaviour = self.swarm.behaviour_mut();
        behaviour.control.hide(connection);
        behaviour.streams.hide(connection);
    }

    pub(super) fn on_autonat_event(&mut self, event: autonat::Event) {
        match event {
            autonat::Event::StatusChanged { new, .. } => match &new {
                autonat::NatStatus::Public(address) => {
                    tracing::info!("reachability: public at {address} (a peer dialed back)")
                }
                autonat::NatStatus::Private => tracing::info!(
                    "reachability: behind NAT (dial-backs failed); reached through relays"
                ),
                autonat::NatStatus::Unknown => tracing::info!("reachability: unknown"),
            },
            autonat::Event::OutboundProbe(event) => {
                tracing::debug!("autonat probe: {event:?}");
                match event {
                    autonat::OutboundProbeEvent::Request { peer, .. } => {
                        self.probing.insert(peer);
                    }
                    autonat::OutboundProbeEvent::Response { peer, .. }
                    | autonat::OutboundProbeEvent::Error {
                        peer: Some(peer), ..
                    } => {
                        self.probing.remove(&peer);
                    }
                    autonat::OutboundProbeEvent::Error { peer: None, .. } => {}
                }
            }
            autonat::Event::InboundProbe(event) => {
                tracing::debug!("autonat dial-back for a peer: {event:?}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_node_probes_as_before() {
        let c = config(1, true);
        assert_eq!(c.boot_delay, Duration::from_secs(1));
        assert_eq!(c.retry_interval, Duration::from_secs(5));
        assert_eq!(c.refresh_interval, Duration::from_secs(600));
        assert_eq!(c.throttle_server_period, Duration::from_secs(5));
        assert_eq!(c.confidence_max, 2);
        assert!(!c.only_global_ips);
    }

    #[test]
    fn a_slower_simulation_slows_every_probe_timer() {
        let c = config(10, true);
        assert_eq!(c.boot_delay, Duration::from_secs(10));
        assert_eq!(c.retry_interval, Duration::from_secs(50));
        assert_eq!(c.refresh_interval, Duration::from_secs(6000));
        assert_eq!(c.throttle_server_period, Duration::from_secs(50));
        assert_eq!(
            config(0, true).retry_interval,
            Duration::from_secs(5),
            "0 reads as 1"
        );
    }

    #[test]
    fn without_dial_backs_a_node_probes_at_the_settled_pace() {
        assert_eq!(config(1, false).retry_interval, Duration::from_secs(600));
        assert_eq!(config(10, false).retry_interval, Duration::from_secs(6000));
        assert_eq!(config(1, false).boot_delay, Duration::from_secs(1));
    }
}
