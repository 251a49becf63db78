//! Turning what an operator types (a peer id, a prefix of one, or a nickname)
//! into a peer of the overlay.

use anyhow::{Result, anyhow, bail};
use libp2p::PeerId;

use crate::model::PeerView;

pub fn resolve(query: &str, peers: &[PeerView]) -> Result<PeerView> {
    let exact = peers
        .iter()
        .find(|p| p.peer_id == query || (!p.nick.is_empty() && p.nick == query));
    if let Some(p) = exact {
        return Ok(p.clone());
    }
    let by_prefix: Vec<&PeerView> = peers
        .iter()
        .filter(|p| query.len() >= 6 && p.peer_id.starts_with(query))
        .collect();
    match by_prefix.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let known: Vec<String> = peers
                .iter()
                .filter(|p| p.connected)
                .map(|p| p.display_name())
                .collect();
            if known.is_empty() {
                bail!("no peer '{query}' in the overlay (no other peer is connected)")
            }
            bail!(
                "no peer '{query}' in the overlay (connected: {})",
                known.join(", ")
            )
        }
        _ => bail!("'{query}' matches several peers: give more of the peer id"),
    }
}

pub fn peer_id_of(view: &PeerView) -> Result<PeerId> {
    view.peer_id
        .parse()
        .map_err(|_| anyhow!("bad peer id {}", view.peer_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, nick: &str) -> PeerView {
        PeerView {
            peer_id: id.into(),
            nick: nick.into(),
            connected: true,
            ..Default::default()
        }
    }

    #[test]
    fn resolves_by_nick_id_and_prefix() {
        let peers = vec![
            peer("12D3KooWAAAAAA1", "peer-a"),
            peer("12D3KooWBBBBBB2", "peer-b"),
        ];
        assert_eq!(resolve("peer-b", &peers).unwrap().nick, "peer-b");
        assert_eq!(resolve("12D3KooWAAAAAA1", &peers).unwrap().nick, "peer-a");
        assert_eq!(resolve("12D3KooWB", &peers).unwrap().nick, "peer-b");
        let err = resolve("12D3Koo", &peers).unwrap_err().to_string();
        assert!(err.contains("several"), "{err}");
        let err = resolve("peer-z", &peers).unwrap_err().to_string();
        assert!(
            err.contains("no peer 'peer-z'") && err.contains("peer-a, peer-b"),
            "{err}"
        );
    }
}
