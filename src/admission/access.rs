//! Who may do what on this host. Holding the network key makes a peer a member of
//! the overlay: it may observe and consume. Pushing VMs into this host (migration)
//! needs the `control` role, which only this peer's own key has until the operator
//! grants it (`peervisor peers allow PEER --role control`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow};
use libp2p::PeerId;

use crate::api::Role;

/// Role of overlay members the operator has not named.
pub const DEFAULT_ROLE: Role = Role::Consume;

/// The operator's grants, kept in `data-dir/access.json`.
pub struct AccessList {
    path: PathBuf,
    local: PeerId,
    grants: Mutex<BTreeMap<String, Role>>,
}

impl AccessList {
    pub fn load(path: PathBuf, local: PeerId) -> Result<AccessList> {
        let grants = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{}: not a valid access list", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(anyhow!("reading {}: {e}", path.display())),
        };
        Ok(AccessList {
            path,
            local,
            grants: Mutex::new(grants),
        })
    }

    pub fn role_of(&self, peer: &PeerId) -> Role {
        if *peer == self.local {
            return Role::Control;
        }
        let grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        grants
            .get(&peer.to_string())
            .copied()
            .unwrap_or(DEFAULT_ROLE)
    }

    pub fn allows(&self, peer: &PeerId, needed: Role) -> bool {
        self.role_of(peer) >= needed
    }

    /// Grants `role` to `peer` (observe also serves to demote a peer).
    pub fn set(&self, peer: PeerId, role: Role) -> Result<()> {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        grants.insert(peer.to_string(), role);
        self.save(&grants)
    }

    /// Forgets a grant: the peer falls back to the default role.
    pub fn remove(&self, peer: &PeerId) -> Result<bool> {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        let removed = grants.remove(&peer.to_string()).is_some();
        self.save(&grants)?;
        Ok(removed)
    }

    pub fn list(&self) -> Vec<(String, Role)> {
        let grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        grants.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    fn save(&self, grants: &BTreeMap<String, Role>) -> Result<()> {
        let text = serde_json::to_string_pretty(grants)?;
        std::fs::write(&self.path, text).with_context(|| format!("writing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_only_for_self_until_granted_and_grants_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.json");
        let me = PeerId::random();
        let other = PeerId::random();
        let list = AccessList::load(path.clone(), me).unwrap();
        assert!(list.allows(&me, Role::Control));
        assert!(list.allows(&other, Role::Consume));
        assert!(!list.allows(&other, Role::Control), "safe default");
        list.set(other, Role::Control).unwrap();
        let reloaded = AccessList::load(path.clone(), me).unwrap();
        assert!(reloaded.allows(&other, Role::Control));
        reloaded.set(other, Role::Observe).unwrap();
        assert!(!reloaded.allows(&other, Role::Consume), "demoted");
        assert!(reloaded.remove(&other).unwrap());
        assert_eq!(reloaded.role_of(&other), DEFAULT_ROLE);

        std::fs::write(&path, "{ nope").unwrap();
        let err = AccessList::load(path, me).err().unwrap().to_string();
        assert!(err.contains("access.json"), "{err}");
    }

    mod fuzz {
        use super::*;
        use crate::fuzzing::{CASES, config, names, text_like};
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(config(CASES / 10))]
            /// access.json: errors name the file.
            #[test]
            fn fuzz_access_file(text in text_like(vec![
                format!("{{\n  \"{}\": \"control\",\n  \"{}\": \"observe\"\n}}", PeerId::random(), PeerId::random()),
            ])) {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("access.json");
                std::fs::write(&path, &text).unwrap();
                match AccessList::load(path, PeerId::random()) {
                    Ok(list) => { let _ = list.list(); }
                    Err(e) => prop_assert!(names(&e.to_string(), "access.json"), "{e}"),
                }
            }
        }
    }
}
