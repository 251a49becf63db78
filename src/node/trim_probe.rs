//! `peervisor dev trim-notice` (hidden): a member of the overlay that says it
//! is trimming its connection to a peer and then does not close it. Tests of
//! the notice against a real node use it (tests/trim_notice.rs): the notice
//! excuses only the close of the sender's own connection, never a silence, so a
//! member that sends it and then falls silent must still be reported gone. It
//! holds the network key and an identity of its own, like any member, and can
//! do nothing such a member could not do with a program of its own.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use libp2p::{Multiaddr, PeerId};

use super::protocol::{Announcement, ControlRequest, ServiceRecord};
use super::{identity, start_dialer};

/// How long joining the overlay may take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Joins through `bootstrap`, announces `service` (kept by receivers for
/// hours: only a departure report drops it), sends the trim notice to `to`,
/// prints its answer as one JSON line and then waits for ever.
pub async fn run(
    dir: &Path,
    network_key: Option<&identity::NetworkKeySource>,
    bootstrap: Vec<Multiaddr>,
    to: PeerId,
    service: String,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let keypair = identity::load_or_create_identity(dir)?;
    let network_key = identity::load_or_create_network_key(dir, network_key)?;
    let client = start_dialer(keypair, network_key, "trim-probe", bootstrap)?;
    client.wait_connected(to, JOIN_TIMEOUT).await?;
    client
        .announce(Announcement {
            nick: "trim-probe".into(),
            services: vec![ServiceRecord {
                name: service,
                kind: "tcp".into(),
                tags: Vec::new(),
                vm: None,
                version: 1,
            }],
            every_ms: 3_600_000,
            ..Default::default()
        })
        .await?;
    let answer = client.request(to, ControlRequest::Trimming).await;
    let line = serde_json::json!({
        "peer_id": client.local_peer_id().to_string(),
        "answer": answer.as_ref().ok().map(|a| format!("{a:?}")),
        "error": answer.as_ref().err().map(|e| e.to_string()),
    });
    println!("{line}");
    std::future::pending::<()>().await;
    Ok(())
}
