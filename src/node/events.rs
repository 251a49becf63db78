//! What the behaviours report to the event loop: identify, ping, Kademlia,
//! gossipsub, mDNS, relay, DCUtR and AutoNAT events, provider lookups, and the
//! control protocol's requests and responses.

use anyhow::anyhow;
use libp2p::{Multiaddr, PeerId, gossipsub, identify, kad, mdns, ping, request_response};
use tokio::sync::mpsc;

use super::protocol::{Announcement, ControlRequest, ControlResponse, nick_from_agent};
use super::{BehaviourEvent, Event, EventLoop};

impl EventLoop {
    pub(super) async fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                connection_id,
            }) => {
                if self.dial_backs.remove(&connection_id) {
                    self.departures.closing_on_purpose(connection_id);
                    self.swarm.close_connection(connection_id);
                }
                self.consider_relay(peer_id, &info);
                let entry = self.peers.entry(peer_id).or_default();
                if let Some(nick) = nick_from_agent(&info.agent_version) {
                    entry.nick = nick;
                }
                for addr in info.listen_addrs.into_iter().take(16) {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                    let entry = self.peers.entry(peer_id).or_default();
                    if !entry.addrs.contains(&addr) {
                        entry.addrs.push(addr);
                    }
                }
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Ok(rtt),
            }) => {
                self.peers.entry(peer).or_default().latency = Some(rtt);
                self.links.answered(peer, connection);
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(error),
            }) => self.on_ping_failure(peer, connection, error),
            BehaviourEvent::RelayClient(event) => self.on_relay_client_event(event),
            BehaviourEvent::RelayServer(event) => self.on_relay_server_event(event),
            BehaviourEvent::Dcutr(event) => self.on_dcutr_event(event),
            BehaviourEvent::Autonat(event) => self.on_autonat_event(event),
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
                // Strict signing means every message has its author; be sure anyway.
                let Some(source) = message.source else {
                    self.judge_gossip(&message_id, propagation_source, Reject);
                    return;
                };
                // Our own publication coming back (allowed in mod.rs): nothing to
                // learn, nothing to forward, and the relayer did no wrong.
                if source == *self.swarm.local_peer_id() {
                    self.judge_gossip(&message_id, propagation_source, Ignore);
                    return;
                }
                match Announcement::decode(&message.data) {
                    Ok(a) => {
                        // Already applied (the same publication again) counts as
                        // stale too: accepting it would forward it once more.
                        let stale = self.peers.get(&source).is_some_and(|e| e.outdates(a.seq));
                        if stale {
                            tracing::trace!("stale announcement from {source} ignored");
                            self.judge_gossip(&message_id, propagation_source, Ignore);
                            return;
                        }
                        self.judge_gossip(&message_id, propagation_source, Accept);
                        self.on_departures_heard(&a.departed);
                        self.heard(source, a).await;
                    }
                    Err(e) => {
                        tracing::warn!(
                            "dropped malformed announcement from {source} (via {propagation_source}): {e}"
                        );
                        self.judge_gossip(&message_id, propagation_source, Reject);
                    }
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::SlowPeer {
                peer_id,
                failed_messages,
            }) => {
                // Not held against the peer (guard.rs: no slow-peer score).
                super::pulls::one(super::pulls::Count::GossipSlowReports);
                super::pulls::add(
                    super::pulls::Count::GossipDropped,
                    (failed_messages.priority + failed_messages.non_priority) as u64,
                );
                tracing::debug!(
                    "gossip to {} dropped or expired: {} message(s) in the last heartbeat",
                    self.display_name(&peer_id),
                    failed_messages.priority + failed_messages.non_priority
                );
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, .. }) => {
                self.departure_on_subscribed(peer_id);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    let _ = self.swarm.dial(addr);
                }
            }
            BehaviourEvent::Control(event) => self.on_control_event(event).await,
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(result),
                step,
                ..
            }) => self.on_providers(id, result, step.last),
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetClosestPeers(result),
                step,
                ..
            }) => self.on_closest_peers(id, result, step.last),
            _ => {}
        }
    }

    /// A peer's announcement (gossip or snapshot), checked already: kept unless
    /// an equal or newer one is known; true if kept.
    pub(super) async fn heard(&mut self, source: PeerId, a: Announcement) -> bool {
        let entry = self.peers.entry(source).or_default();
        if entry.nick.is_empty() {
            entry.nick = a.nick.clone();
        }
        if entry.outdates(a.seq) {
            return false;
        }
        tracing::debug!(seq = a.seq, services = a.services.len(), from = %source, "heard");
        entry.apply(&a);
        let event = Event::Announcement {
            peer: source,
            announcement: a,
        };
        // The forward just queued leaves at the next swarm poll: do
        // not yield before it unless the runtime is behind.
        let sent = match self.events.try_send(event) {
            Err(mpsc::error::TrySendError::Full(event)) => self.events.send(event).await.is_ok(),
            other => other.is_ok(),
        };
        if !sent {
            tracing::debug!("announcement dropped: nobody is listening");
        }
        true
    }

    fn on_providers(
        &mut self,
        id: kad::QueryId,
        result: Result<kad::GetProvidersOk, kad::GetProvidersError>,
        last: bool,
    ) {
        let Some(lookup) = self.pending_lookups.get_mut(&id) else {
            return;
        };
        if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result {
            lookup.found.extend(providers);
        }
        // The caller asks each provider in turn: the first ones found are
        // enough, and the rest of the walk (up to the query timeout on a busy
        // overlay) would only keep it waiting.
        let enough = !lookup.found.is_empty();
        if enough
            && !last
            && let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id)
        {
            query.finish();
        }
        if (last || enough)
            && let Some(lookup) = self.pending_lookups.remove(&id)
        {
            let mut found = lookup.found;
            found.sort();
            found.dedup();
            let _ = lookup.reply.send(found);
        }
    }

    /// A walk towards a peer's id (Command::Locate): its addresses, as the
    /// peers closest to it know them, become dialable.
    fn on_closest_peers(
        &mut self,
        id: kad::QueryId,
        result: Result<kad::GetClosestPeersOk, kad::GetClosestPeersError>,
        last: bool,
    ) {
        let Some((target, _)) = self.pending_locates.get(&id) else {
            return;
        };
        let target = *target;
        let peers = match result {
            Ok(ok) => ok.peers,
            Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
        };
        let addrs: Vec<Multiaddr> = peers
            .into_iter()
            .filter(|p| p.peer_id == target)
            .flat_map(|p| p.addrs)
            .take(16)
            .collect();
        for addr in &addrs {
            self.swarm.add_peer_address(target, addr.clone());
            let entry = self.peers.entry(target).or_default();
            if !entry.addrs.contains(addr) {
                entry.addrs.push(addr.clone());
            }
        }
        if (last || !addrs.is_empty())
            && let Some((_, reply)) = self.pending_locates.remove(&id)
        {
            let _ = reply.send(!addrs.is_empty());
        }
    }

    async fn on_control_event(
        &mut self,
        event: request_response::Event<ControlRequest, ControlResponse>,
    ) {
        use request_response::{Event as RR, Message};
        match event {
            RR::Message {
                peer,
                connection_id,
                message:
                    Message::Request {
                        request, channel, ..
                    },
            } => {
                self.retiring.request_received(connection_id);
                match &request {
                    ControlRequest::Snapshot { after, buckets } => {
                        self.answer_snapshot(after.as_deref(), buckets, channel);
                        return;
                    }
                    ControlRequest::Trimming => {
                        self.on_trim_notice(peer, channel);
                        return;
                    }
                    ControlRequest::Digest => {
                        let buckets = self.digests().to_vec();
                        let digest = buckets.iter().fold(0, |all, b| all ^ b);
                        self.respond(channel, ControlResponse::Digest { digest, buckets });
                        return;
                    }
                    _ => {}
                }
                let event = Event::InboundRequest {
                    peer,
                    request,
                    channel,
                };
                if self.events.send(event).await.is_err() {
                    tracing::warn!("control request from {peer} dropped: nobody is listening");
                }
            }
            RR::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((_, reply)) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                } else {
                    self.on_own_response(peer, request_id, Some(response)).await;
                }
            }
            RR::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, reply)) = self.pending_requests.remove(&request_id) {
                    let name = self.display_name(&peer);
                    let _ = reply.send(Err(anyhow!("request to peer {name} failed: {error}")));
                } else {
                    use super::pulls::Count;
                    super::pulls::one(match &error {
                        request_response::OutboundFailure::Timeout => Count::RequestTimeout,
                        request_response::OutboundFailure::ConnectionClosed => Count::RequestClosed,
                        _ => Count::RequestOther,
                    });
                    self.on_own_response(peer, request_id, None).await;
                }
            }
            RR::InboundFailure {
                peer,
                connection_id,
                error,
                ..
            } => {
                self.retiring.request_done(connection_id);
                tracing::warn!(
                    "control request from {} failed: {error}",
                    self.display_name(&peer)
                );
            }
            RR::ResponseSent { connection_id, .. } => self.retiring.request_done(connection_id),
        }
    }
}
