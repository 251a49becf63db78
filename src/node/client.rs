//! The handle the rest of the program holds on the node: each method sends a
//! `Command` to the `EventLoop` and, where there is an answer, awaits it on a
//! oneshot channel. Cloneable; the node stops when the last one is dropped.

use anyhow::{Result, anyhow};
use libp2p::PeerId;
use libp2p::request_response::ResponseChannel;
use tokio::sync::{mpsc, oneshot};

use super::NetworkStatus;
use super::protocol::{Announcement, ControlRequest, ControlResponse};
use super::streams::StreamControl;

#[derive(Clone)]
pub struct Client {
    pub(super) sender: mpsc::Sender<Command>,
    pub(super) local_peer_id: PeerId,
    pub(super) streams: StreamControl,
    pub(super) traffic: std::sync::Arc<super::ControlTraffic>,
}

pub(super) enum Command {
    Status {
        reply: oneshot::Sender<NetworkStatus>,
    },
    Request {
        peer: PeerId,
        request: ControlRequest,
        reply: oneshot::Sender<Result<ControlResponse>>,
    },
    Respond {
        channel: ResponseChannel<ControlResponse>,
        response: ControlResponse,
    },
    Announce {
        announcement: Announcement,
    },
    Provide {
        key: String,
        provide: bool,
    },
    /// Make sure the node knows where `peer` is: connected, or with an address
    /// to dial; else a DHT walk towards its id. True if it now knows.
    Locate {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    FindProviders {
        key: String,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    /// Tests play a hostile peer: arbitrary bytes on the announcement topic.
    #[cfg(test)]
    PublishRaw {
        bytes: Vec<u8>,
    },
}

impl Client {
    /// The control protocol's traffic since the node started, per kind.
    pub fn control_traffic(&self) -> Vec<crate::model::ControlTally> {
        self.traffic.tallies()
    }

    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// Handle for opening and accepting raw byte streams (libp2p-stream; each
    /// one counted while open, see streams.rs).
    pub fn streams(&self) -> StreamControl {
        self.streams.clone()
    }

    /// A peer's nickname if known, else its id (for log lines and refusals).
    pub async fn peer_label(&self, id: PeerId) -> String {
        let id_text = id.to_string();
        self.status()
            .await
            .ok()
            .and_then(|net| net.peers.into_iter().find(|p| p.peer_id == id_text))
            .map(|p| p.display_name())
            .unwrap_or(id_text)
    }

    pub async fn status(&self) -> Result<NetworkStatus> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Status { reply }).await?;
        rx.await.map_err(|_| node_gone())
    }

    /// Waits until this node is connected to `peer` (a member joining through
    /// a bootstrap peer, as the dev probes do), failing after `within`.
    pub async fn wait_connected(&self, peer: PeerId, within: std::time::Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + within;
        let id = peer.to_string();
        while !(self.status().await?.peers.iter()).any(|p| p.connected && p.peer_id == id) {
            if std::time::Instant::now() > deadline {
                return Err(anyhow!("not connected to {peer} within {within:?}"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Sends a control request and waits for the answer (or a transport error).
    pub async fn request(&self, peer: PeerId, request: ControlRequest) -> Result<ControlResponse> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Request {
            peer,
            request,
            reply,
        })
        .await?;
        rx.await.map_err(|_| node_gone())?
    }

    pub async fn respond(
        &self,
        channel: ResponseChannel<ControlResponse>,
        response: ControlResponse,
    ) -> Result<()> {
        self.send(Command::Respond { channel, response }).await
    }

    /// Sets what this peer announces on gossip (sent now and periodically).
    pub async fn announce(&self, announcement: Announcement) -> Result<()> {
        self.send(Command::Announce { announcement }).await
    }

    /// Starts or stops advertising this peer as a provider of `key` in the DHT.
    pub async fn provide(&self, key: &str, provide: bool) -> Result<()> {
        self.send(Command::Provide {
            key: key.to_string(),
            provide,
        })
        .await
    }

    /// Peers the DHT knows as providers of `key` (waits for the query to finish).
    pub async fn find_providers(&self, key: &str) -> Result<Vec<PeerId>> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::FindProviders {
            key: key.to_string(),
            reply,
        })
        .await?;
        rx.await.map_err(|_| node_gone())
    }

    /// Learns an address for `peer` if the node has none (a provider heard of by
    /// gossip or found in the DHT, never connected to): a stream to it would
    /// otherwise fail at once with "no addresses for peer". Bounded by `within`.
    pub async fn locate(&self, peer: PeerId, within: std::time::Duration) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Locate { peer, reply }).await.is_err() {
            return false;
        }
        matches!(tokio::time::timeout(within, rx).await, Ok(Ok(true)))
    }

    #[cfg(test)]
    pub(super) async fn publish_raw(&self, bytes: Vec<u8>) -> Result<()> {
        self.send(Command::PublishRaw { bytes }).await
    }

    async fn send(&self, command: Command) -> Result<()> {
        self.sender.send(command).await.map_err(|_| node_gone())
    }
}

fn node_gone() -> anyhow::Error {
    anyhow!("the peer node has stopped")
}
