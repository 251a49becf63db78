//! The joining host's side (`peervisor join TOKEN`, no node running yet): puts
//! the overlay's key in the data dir, joins the overlay as this host's identity
//! for long enough to hand the secret to the inviter, and on its answer records
//! the grants (control to the trust group's members) and the group's authority.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use libp2p::{Multiaddr, PeerId};

use super::{Token, now, store};
use crate::admission::access::AccessList;
use crate::api::Role;
use crate::node::protocol::{ControlRequest, ControlResponse};
use crate::node::{self, identity};

/// How long to try to reach the inviter.
const REACH_TIMEOUT: Duration = Duration::from_secs(60);

/// What joining gave this host.
#[derive(Debug)]
pub struct Joined {
    pub inviter: PeerId,
    pub role: Role,
    pub bootstrap: Vec<Multiaddr>,
    /// Peers granted control here (the trust group).
    pub members: Vec<String>,
    pub network_key_file: std::path::PathBuf,
    pub peer_id: PeerId,
}

pub async fn join(dir: &Path, token: &Token) -> Result<Joined> {
    if let Some(expired) = token.expired(now()) {
        bail!(
            "this invitation cannot be used: {expired}; ask for a new one (`peervisor invite` on {})",
            token.inviter
        );
    }
    let inviter: PeerId = token
        .inviter
        .parse()
        .map_err(|_| anyhow!("a damaged join token (inviter)"))?;
    let bootstrap: Vec<Multiaddr> = token
        .addrs
        .iter()
        .map(|a| {
            a.parse()
                .map_err(|_| anyhow!("a damaged join token (address {a:?})"))
        })
        .collect::<Result<_>>()?;
    let key = identity::parse_network_key(&token.key).context("a damaged join token (key)")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key_file = dir.join(identity::NETWORK_KEY_FILE);
    if key_file.exists() {
        let have = identity::load_or_create_network_key(dir, None)?;
        if have != key {
            bail!(
                "{} holds the key of another overlay (fingerprint {}): move it away to join this one",
                key_file.display(),
                have.fingerprint()
            );
        }
    } else {
        identity::write_secret(&key_file, key.to_key_file().as_bytes())?;
    }
    let keypair = identity::load_or_create_identity(dir)?;
    let peer_id = keypair.public().to_peer_id();

    let client = node::start_dialer(keypair, key, "joining", bootstrap.clone())?;
    let deadline = Instant::now() + REACH_TIMEOUT;
    loop {
        let status = client.status().await?;
        if status
            .peers
            .iter()
            .any(|p| p.connected && p.peer_id == token.inviter)
        {
            break;
        }
        if Instant::now() > deadline {
            let why = status.dial_errors.last().cloned().unwrap_or_default();
            bail!(
                "cannot reach the inviter {inviter} at {} within {REACH_TIMEOUT:?} (is its TCP port open to this host?) {why}",
                token.addrs.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = client
        .request(
            inviter,
            ControlRequest::Redeem {
                secret: token.secret.clone(),
            },
        )
        .await
        .with_context(|| format!("asking {inviter}"))?;
    let (role, members) = match answer {
        ControlResponse::Joined { role, members } => (role, members),
        ControlResponse::Refused { reason } => bail!("the inviter {inviter} refused: {reason}"),
        other => bail!("unexpected answer from {inviter}: {other:?}"),
    };
    let role: Role = role.parse().map_err(|e: String| anyhow!(e))?;
    if role == Role::Control {
        let access = AccessList::load(dir.join("access.json"), peer_id)?;
        for member in &members {
            if let Ok(id) = member.parse::<PeerId>() {
                access.set(id, Role::Control)?;
            }
        }
        let mut group = store::load_group(dir)?;
        group.authority = Some(token.inviter.clone());
        store::save_group(dir, &group)?;
    }
    Ok(Joined {
        inviter,
        role,
        bootstrap,
        members,
        network_key_file: key_file,
        peer_id,
    })
}
