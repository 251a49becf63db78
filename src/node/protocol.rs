//! Messages peers exchange over the overlay: the control protocol (request-response,
//! CBOR), gossip announcements, and the libvirt tunnel stream's header.

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

pub const CONTROL_PROTOCOL: StreamProtocol = StreamProtocol::new("/peervisor/control/1");
pub const TUNNEL_PROTOCOL: StreamProtocol = StreamProtocol::new("/peervisor/libvirt-tunnel/1");
pub const ANNOUNCE_TOPIC: &str = "peervisor/announce/1";
/// Identify agent version prefix; the nickname follows it.
pub const AGENT_PREFIX: &str = "peervisor/";

/// A request one peer makes of another.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ControlRequest {
    /// "May I live-migrate this VM to you?" Sent before any byte of the VM moves.
    PrepareMigration {
        vm: String,
        uuid: String,
        vcpus: u32,
        memory_mib: u64,
    },
    /// The source reports how the migration ended, so the destination can drop the
    /// tunnel authorization and record the outcome.
    MigrationEnded { token: u64, ok: bool },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ControlResponse {
    /// Migration authorized: open tunnel streams that start with this token.
    MigrationAccepted {
        token: u64,
    },
    Refused {
        reason: String,
    },
    Ack,
}

/// What every peer periodically tells the overlay about itself (gossipsub).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Announcement {
    pub nick: String,
    pub vms: Vec<String>,
}

impl Announcement {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Data from the network: malformed input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        const MAX_VMS: usize = 4096;
        let a: Announcement = serde_json::from_slice(bytes)?;
        if a.vms.len() > MAX_VMS {
            return Err(serde::de::Error::custom("too many VMs in announcement"));
        }
        Ok(a)
    }
}

/// The identify agent version carries the nickname: `peervisor/0.1.0 nick`.
pub fn agent_version(nick: &str) -> String {
    format!("{AGENT_PREFIX}{} {nick}", env!("CARGO_PKG_VERSION"))
}

pub fn nick_from_agent(agent: &str) -> Option<String> {
    let rest = agent.strip_prefix(AGENT_PREFIX)?;
    let (_, nick) = rest.split_once(' ')?;
    let nick = nick.trim();
    (!nick.is_empty() && nick.len() <= 64).then(|| nick.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nick_round_trips_through_agent_version() {
        assert_eq!(
            nick_from_agent(&agent_version("peer-a")).as_deref(),
            Some("peer-a")
        );
        assert_eq!(nick_from_agent("rust-libp2p/0.1"), None);
        assert_eq!(nick_from_agent("peervisor/0.1.0 "), None);
    }

    #[test]
    fn malformed_announcement_is_rejected() {
        assert!(Announcement::decode(b"{not json").is_err());
        assert!(Announcement::decode(b"{\"nick\":1}").is_err());
        let ok = Announcement {
            nick: "a".into(),
            vms: vec!["web-1".into()],
        };
        assert_eq!(Announcement::decode(&ok.encode()).unwrap(), ok);
    }
}
