//! `peervisor peers ...`: the roles other peers have on this host.

use anyhow::{Result, bail};

use crate::control::client::ControlClient;
use crate::control::{Reply, Request, Role};

use super::PeersCommand;

/// `peervisor peers ...`.
pub async fn run(control: &ControlClient, command: PeersCommand) -> Result<()> {
    let (request, json) = match command {
        PeersCommand::Allow { peer, role, json } => (Request::PeersAllow { peer, role }, json),
        PeersCommand::Deny { peer, json } => (
            Request::PeersAllow {
                peer,
                role: Role::Observe,
            },
            json,
        ),
        PeersCommand::Forget { peer, json } => (Request::PeersForget { peer }, json),
        PeersCommand::List { json } => {
            let Reply::Grants {
                grants,
                default_role,
            } = control.call(&Request::PeersList).await?
            else {
                bail!("unexpected reply to peers list");
            };
            if json {
                let value = serde_json::json!({ "grants": grants, "default_role": default_role });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!("this peer: control; other members of the overlay: {default_role}");
                for (peer, role) in grants {
                    println!("{peer}  {role}");
                }
            }
            return Ok(());
        }
    };
    super::done(control, request, json).await
}
