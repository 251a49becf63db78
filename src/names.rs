//! Names that cross modules, each a type of its own so a VM's name cannot be
//! passed where a service's or a peer's is meant: `VmName` (a libvirt domain's
//! name), `ServiceName`, and `PeerRef`, a peer as an operator types it (a peer
//! id, a prefix of one, or a nickname), resolved against the overlay's peers.
//! All three serialize as the plain strings they wrap, so the control API and
//! `status --json` read as they always did.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use anyhow::{Result, anyhow, bail};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::model::PeerView;

/// A string newtype: built from and compared with strings, read as `&str`.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        /// As the string it wraps (quoted), so messages read as before.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        /// As the string, width and alignment included (table columns).
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

name_type!(
    /// A VM's name: its libvirt domain's. Any name libvirt holds (a VM another
    /// tool made may have any); one peervisor gives a VM passes `validate`.
    VmName
);

name_type!(
    /// A service's name, as a manifest, `expose` or the overlay's records give it.
    ServiceName
);

name_type!(
    /// A peer as an operator names it: a peer id, a unique prefix of one (6
    /// characters or more), or the nickname the peer announces.
    PeerRef
);

impl VmName {
    /// Names become file names and kernel arguments: keep them plain.
    pub fn validate(&self) -> Result<()> {
        if !is_plain(self) {
            bail!(
                "invalid VM name '{self}': use 1-48 letters, digits, '-', '_' or '.', not starting with '.' or '-'"
            );
        }
        Ok(())
    }
}

impl ServiceName {
    /// A service this host exposes goes by a name as plain as a VM's.
    pub fn validate_exposed(&self) -> Result<()> {
        if !is_plain(self) {
            bail!("invalid service name '{self}': use letters, digits, '-', '_' or '.'");
        }
        Ok(())
    }
}

/// 1-48 letters, digits, '-', '_' or '.', not starting with '.' or '-'.
fn is_plain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.')
        && !name.starts_with('-')
}

impl PeerRef {
    /// The peer among `peers` this names: the one with this id or nickname, or
    /// the only one whose id starts with it.
    pub fn resolve(&self, peers: &[PeerView]) -> Result<PeerView> {
        let query = self.as_str();
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

    /// The peer id, when what was typed is a whole one.
    pub fn peer_id(&self) -> Option<PeerId> {
        self.parse().ok()
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
        let resolve = |q: &str| PeerRef::from(q).resolve(&peers);
        assert_eq!(resolve("peer-b").unwrap().nick, "peer-b");
        assert_eq!(resolve("12D3KooWAAAAAA1").unwrap().nick, "peer-a");
        assert_eq!(resolve("12D3KooWB").unwrap().nick, "peer-b");
        let err = resolve("12D3Koo").unwrap_err().to_string();
        assert!(err.contains("several"), "{err}");
        let err = resolve("peer-z").unwrap_err().to_string();
        assert!(
            err.contains("no peer 'peer-z'") && err.contains("peer-a, peer-b"),
            "{err}"
        );
    }

    #[test]
    fn vm_names_are_checked() {
        assert!(VmName::from("web-1").validate().is_ok());
        for bad in ["", "a b", "../x", "-x", "x;y", &"a".repeat(49)] {
            let err = VmName::from(bad).validate().unwrap_err().to_string();
            assert!(err.contains("invalid VM name"), "{bad}: {err}");
            let err = ServiceName::from(bad).validate_exposed().unwrap_err();
            assert!(err.to_string().contains("invalid service name"), "{bad}");
        }
    }

    #[test]
    fn names_are_plain_strings_in_json_and_compare_with_strings() {
        let name = VmName::from("web-1");
        assert_eq!(serde_json::to_string(&name).unwrap(), r#""web-1""#);
        assert_eq!(
            serde_json::from_str::<Vec<PeerRef>>(r#"["peer-b"]"#).unwrap(),
            [PeerRef::from("peer-b")]
        );
        let typed = String::from("web-1");
        assert!(name == "web-1" && name == *"web-1" && name == typed);
        assert_eq!(format!("{name} {name:?}"), r#"web-1 "web-1""#);
        assert_eq!(
            format!("{name:<8}|{name:>6}|{name:.3}"),
            "web-1   | web-1|web"
        );
    }
}
