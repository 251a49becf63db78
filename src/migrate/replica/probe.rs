//! `peervisor dev replica-offer` (hidden): a member of the overlay that sends
//! one hand-made offer frame on a replication stream and reports what the
//! destination answered. Tests of the destination's checks use it
//! (tests/replica_decoder.rs). It holds the network key and an identity of its
//! own, like any member, and can do nothing such a member could not do with a
//! program of its own; no node runs in its data dir.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::wire::{self, Answer};
use crate::node::protocol::REPLICA_PROTOCOL;
use crate::node::{self, identity};

/// How long joining the overlay and hearing the answer may take in all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the destination did with the frame.
#[derive(Debug, Serialize)]
pub struct ProbeReport {
    /// This member's peer id (grant it a role to probe as a controller).
    pub peer_id: String,
    /// Bytes of the frame (prefix and body); fewer cross if the destination
    /// closes the stream first.
    pub frame_bytes: u64,
    pub answer: Option<Answer>,
    /// Why no answer was read (the stream was closed, nothing came).
    pub error: Option<String>,
}

/// The frame to send.
pub struct Frame {
    pub body: Vec<u8>,
    /// The length prefix (default: the body's length).
    pub declared: Option<u32>,
    /// Leave this side of the stream open after the body, as a sender that
    /// stalls (by default it is closed: the destination sees the end).
    pub stall: bool,
}

/// Joins through `bootstrap` as the member whose identity is in `dir`, sends
/// `frame` to `to` and reads the answer.
pub async fn send_offer(
    dir: &Path,
    network_key: Option<&identity::NetworkKeySource>,
    bootstrap: Vec<Multiaddr>,
    to: PeerId,
    frame: Frame,
) -> Result<ProbeReport> {
    let Frame {
        body,
        declared,
        stall,
    } = frame;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let keypair = identity::load_or_create_identity(dir)?;
    let peer_id = keypair.public().to_peer_id().to_string();
    let network_key = identity::load_or_create_network_key(dir, network_key)?;
    let client = node::start_dialer(keypair, network_key, "replica-probe", bootstrap)?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    client.wait_connected(to, PROBE_TIMEOUT).await?;
    let stream = client
        .streams()
        .open_stream(to, REPLICA_PROTOCOL)
        .await
        .map_err(|e| anyhow!("opening a replication stream to {to}: {e}"))?;
    let (mut reader, mut writer) = tokio::io::split(stream.compat());
    let prefix = declared.unwrap_or(body.len() as u32).to_be_bytes();
    let write = async {
        writer.write_all(&prefix).await?;
        writer.write_all(&body).await?;
        if !stall {
            // Nothing more comes: a destination waiting for the rest sees the end.
            writer.shutdown().await?;
        }
        anyhow::Ok((prefix.len() + body.len()) as u64)
    };
    let wait = deadline.saturating_duration_since(Instant::now());
    let exchange = wire::offer_and_answer(&mut reader, write, wait);
    let (answer, error) = match tokio::time::timeout(wait, exchange).await {
        Ok(Ok((_, answer))) => (Some(answer), None),
        Ok(Err(e)) => (None, Some(format!("{e:#}"))),
        Err(_) => (None, Some(format!("no answer within {wait:?}"))),
    };
    Ok(ProbeReport {
        peer_id,
        frame_bytes: (prefix.len() + body.len()) as u64,
        answer,
        error,
    })
}
