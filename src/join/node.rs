//! The inviter's side, in the running node: making invitations, checking the
//! secret a joining peer sends, and keeping the trust group's members in step.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use libp2p::PeerId;

use super::{Token, now, store, when};
use crate::admission::access::AccessList;
use crate::api::{Reply, Role};
use crate::node::Client;
use crate::node::protocol::{ControlRequest, ControlResponse};
use crate::paths::DataDir;

/// The longest an invitation may stay open.
const MAX_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);

/// This host's invitations and trust group (in its data dir), the node to reach
/// the group's members, and the grants an admitted member gets.
pub struct Invitations {
    node: Client,
    dir: PathBuf,
    access: Arc<AccessList>,
}

impl Invitations {
    pub fn new(node: Client, data_dir: &DataDir, access: Arc<AccessList>) -> Invitations {
        Invitations {
            node,
            dir: data_dir.root().to_path_buf(),
            access,
        }
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    /// `peervisor invite`: records a single-use invitation and returns its token.
    pub async fn invite(
        &self,
        role: Role,
        expires: Duration,
        addresses: Vec<String>,
    ) -> Result<Reply> {
        if expires.is_zero() || expires > MAX_EXPIRY {
            bail!("--expires must be between 1s and 30 days");
        }
        if role < Role::Consume {
            bail!("an invitation grants consume or control");
        }
        let dir = self.dir();
        let key = crate::node::identity::load_or_create_network_key(dir, None)?;
        let addrs = match addresses.is_empty() {
            false => addresses,
            true => reachable_addrs(self.node.status().await?.listen_addrs),
        };
        if addrs.is_empty() {
            bail!("this node listens on no address: give one with --address");
        }
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let created = now();
        let expires = created + expires.as_secs();
        let id = store::add(dir, &secret, role, created, expires)?;
        let token = Token {
            inviter: self.node.local_peer_id().to_string(),
            addrs,
            key: hex::encode(key.bytes()),
            secret,
            role,
            expires,
        };
        tracing::info!("invitation {id} ({role}) made, expires {}", when(expires));
        Ok(Reply::Invitation {
            token: token.encode(),
            id,
            expires: when(expires),
        })
    }

    pub fn revoke(&self, id: &str) -> Result<Reply> {
        let id = store::revoke(self.dir(), id)?;
        Ok(Reply::Done {
            message: format!("invitation {id} revoked"),
        })
    }

    pub fn list(&self) -> Result<Reply> {
        Ok(Reply::Invitations {
            invitations: store::list(self.dir(), now())?,
        })
    }

    /// A joining peer's secret: checked and used once; a control invitation
    /// also makes the peer a member of this host's trust group.
    pub fn answer_redeem(&self, peer: PeerId, secret: &str) -> ControlResponse {
        let dir = self.dir();
        let role = match store::redeem(dir, secret, &peer.to_string(), now()) {
            Ok(role) => role,
            Err(reason) => {
                tracing::warn!("invitation refused to {peer}: {reason}");
                return ControlResponse::Refused { reason };
            }
        };
        let members = match role {
            Role::Control => match self.admit_to_group(peer) {
                Ok(members) => members,
                Err(e) => {
                    return ControlResponse::Refused {
                        reason: format!("{e:#}"),
                    };
                }
            },
            _ => Vec::new(),
        };
        tracing::info!("{peer} joined with an invitation ({role})");
        ControlResponse::Joined {
            role: role.to_string(),
            members,
        }
    }

    /// Grants `peer` control here, adds it to the group, tells the other members;
    /// the members it should grant control to (this host first).
    fn admit_to_group(&self, peer: PeerId) -> Result<Vec<String>> {
        let dir = self.dir();
        self.access.set(peer, Role::Control)?;
        let mut group = store::load_group(dir)?;
        let me = self.node.local_peer_id().to_string();
        let joined = peer.to_string();
        let before: Vec<String> = std::iter::once(me.clone())
            .chain(group.members.iter().filter(|m| **m != joined).cloned())
            .collect();
        if !group.members.contains(&joined) {
            group.members.push(joined.clone());
        }
        store::save_group(dir, &group)?;
        let everyone: Vec<String> = std::iter::once(me).chain(group.members.clone()).collect();
        let node = self.node.clone();
        tokio::spawn(async move {
            for member in everyone.iter().skip(1).filter(|m| **m != joined) {
                let Ok(id) = member.parse::<PeerId>() else {
                    continue;
                };
                let request = ControlRequest::GroupMembers {
                    members: everyone.clone(),
                };
                match node.request(id, request).await {
                    Ok(ControlResponse::Ack) => {}
                    Ok(other) => tracing::warn!("group update to {member}: {other:?}"),
                    Err(e) => tracing::warn!("group update to {member}: {e:#}"),
                }
            }
        });
        Ok(before)
    }

    /// The group's authority says who its members are: each may control here.
    pub fn answer_group_members(&self, peer: PeerId, members: &[String]) -> ControlResponse {
        let dir = self.dir();
        let authority = store::load_group(dir).ok().and_then(|g| g.authority);
        if authority.as_deref() != Some(peer.to_string().as_str()) {
            return ControlResponse::Refused {
                reason: "you are not the authority of this host's trust group".into(),
            };
        }
        let me = self.node.local_peer_id();
        for member in members {
            match member.parse::<PeerId>() {
                Ok(id) if id != me => {
                    if let Err(e) = self.access.set(id, Role::Control) {
                        tracing::warn!("{e:#}");
                    }
                }
                Ok(_) => {}
                Err(_) => tracing::warn!("group update from {peer}: {member:?} is not a peer id"),
            }
        }
        tracing::info!(
            "trust group of {peer}: {} members may control here",
            members.len()
        );
        ControlResponse::Ack
    }
}

/// Listen addresses worth giving a joiner: loopback only when there is nothing else.
fn reachable_addrs(all: Vec<String>) -> Vec<String> {
    let outside: Vec<String> = all
        .iter()
        .filter(|a| {
            !a.starts_with("/ip4/127.")
                && !a.starts_with("/ip6/::1/")
                && !a.contains("/p2p-circuit")
        })
        .cloned()
        .collect();
    if outside.is_empty() { all } else { outside }
}
