//! Routing a VM's serial console: the operator's (control socket) to the VM
//! here or to its host over the overlay; other peers' console streams to the
//! VM here, for a peer this host granted the control role.

use std::sync::Arc;

use anyhow::Result;
use futures::StreamExt;

use libp2p::PeerId;

use super::{Peer, announcing};
use crate::admission::limits::{self, OpenGuard};
use crate::api::Role;
use crate::control::server::BytePipe;
use crate::names::VmName;
use crate::node::protocol::CONSOLE_PROTOCOL;
use crate::vms::console;

impl Peer {
    /// The console of a VM here, or of one another peer announces (its host
    /// decides whether this peer may).
    pub async fn console(&self, name: VmName) -> Result<Box<dyn BytePipe>> {
        if !self.vms.hosts(&name) {
            let peers = self.node.status().await?.peers;
            if let Some(host) = announcing(&peers, &name) {
                let id = crate::names::peer_id_of(host)?;
                let pipe =
                    console::open_remote(&self.node, id, &host.display_name(), &name).await?;
                return Ok(Box::new(pipe));
            }
        }
        Ok(Box::new(self.vms.console(&name).await?))
    }

    /// Other peers' console streams, each checked for the control role.
    pub(super) async fn serve_consoles(self: Arc<Self>) {
        let mut incoming = match self.node.streams().accept(CONSOLE_PROTOCOL) {
            Ok(incoming) => incoming,
            Err(e) => {
                tracing::error!("cannot serve consoles: {e}");
                return;
            }
        };
        while let Some((peer, stream)) = incoming.next().await {
            let this = self.clone();
            tokio::spawn(async move {
                use tokio_util::compat::FuturesAsyncReadCompatExt;
                let mut stream = stream.compat();
                // Counted in the peer's stream limits while attached, as service
                // and replication streams are.
                let admitted = this.admit_stream(peer);
                let vm = match console::read_request(&mut stream).await {
                    Ok(vm) => vm,
                    Err(e) => {
                        tracing::debug!("console request from {peer}: {e:#}");
                        return;
                    }
                };
                let who = this.node.peer_label(peer).await;
                let pipe = if let Err(reason) = &admitted {
                    if this.limits.log_refusal(&peer) {
                        tracing::warn!("refused the console of {vm} to {who}: {reason}");
                    }
                    Err(format!(
                        "{} refuses the console of {vm}: {reason}",
                        this.nick
                    ))
                } else if !this.access.allows(&peer, Role::Control) {
                    tracing::warn!("refused the console of {vm} to {who}: no control role");
                    Err(format!(
                        "{host} refuses the console of {vm} to {who}: {who} lacks the control role on {host} (its operator can run `peervisor peers allow {peer} --role control`)",
                        host = this.nick
                    ))
                } else if !this.vms.hosts(&vm) {
                    Err(format!("{} has no VM '{vm}'", this.nick))
                } else {
                    tracing::info!("console of {vm} attached by {who}");
                    this.vms
                        .console(&vm)
                        .await
                        .map_err(|e| format!("{}: {e:#}", this.nick))
                };
                console::answer(stream, pipe).await;
                drop(admitted);
            });
        }
    }

    /// Whether `peer` may open another stream now (its open streams and its
    /// rate of new ones); the guard counts the stream while it is held.
    fn admit_stream(&self, peer: PeerId) -> Result<OpenGuard<'_, PeerId>, String> {
        let max = self.limits.config.streams_per_peer;
        let Some(open) = self.limits.open_streams.try_open(&peer, max) else {
            return Err(format!("too many open streams from you (at most {max})"));
        };
        if let Err(retry) = self.limits.streams.check(&peer) {
            let per_s = self.limits.streams.per_s();
            return Err(limits::rate_limited("streams", per_s, retry));
        }
        Ok(open)
    }
}
