//! The inviter's invitations (`invitations.json`) and the trust group
//! (`group.json`), both in the data dir, written whole under one lock.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{invitation_id, sha256_hex, when};
use crate::api::InvitationView;
use crate::api::Role;

const INVITATIONS: &str = "invitations.json";
const GROUP: &str = "group.json";

/// Read-modify-write of either file, one at a time in this process.
static LOCK: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Invitation {
    /// Only the hash: the file does not hold a usable secret.
    secret_sha256: String,
    role: Role,
    created: u64,
    expires: u64,
    #[serde(default)]
    used_by: Option<String>,
    #[serde(default)]
    used_at: Option<u64>,
    #[serde(default)]
    revoked: bool,
}

fn read<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            serde_json::from_str(&text).with_context(|| format!("{}: damaged", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    crate::node::identity::write_secret(path, &serde_json::to_vec_pretty(value)?)
}

pub fn invitations_file(dir: &Path) -> PathBuf {
    dir.join(INVITATIONS)
}

/// Records a new invitation; its id.
pub fn add(dir: &Path, secret: &str, role: Role, created: u64, expires: u64) -> Result<String> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = invitations_file(dir);
    let mut list: Vec<Invitation> = read(&path)?;
    let hash = sha256_hex(secret);
    let id = invitation_id(&hash);
    list.push(Invitation {
        secret_sha256: hash,
        role,
        created,
        expires,
        used_by: None,
        used_at: None,
        revoked: false,
    });
    write(&path, &list)?;
    Ok(id)
}

/// Uses the invitation with `secret` for `peer`: its role, or why not (for the joiner).
pub fn redeem(dir: &Path, secret: &str, peer: &str, now: u64) -> Result<Role, String> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = invitations_file(dir);
    let mut list: Vec<Invitation> = read(&path).map_err(|e| format!("{e:#}"))?;
    let hash = sha256_hex(secret);
    let Some(invitation) = list.iter_mut().find(|i| i.secret_sha256 == hash) else {
        return Err("this host made no such invitation".into());
    };
    if invitation.revoked {
        return Err("the invitation was revoked".into());
    }
    if let (Some(by), Some(at)) = (&invitation.used_by, invitation.used_at) {
        return Err(format!(
            "the invitation was already used, by {by} at {}: an invitation joins one host; ask for a new one",
            when(at)
        ));
    }
    if now >= invitation.expires {
        return Err(format!(
            "the invitation expired at {}",
            when(invitation.expires)
        ));
    }
    invitation.used_by = Some(peer.to_string());
    invitation.used_at = Some(now);
    let role = invitation.role;
    write(&path, &list).map_err(|e| format!("{e:#}"))?;
    Ok(role)
}

/// Revokes the open invitation whose id starts with `id`.
pub fn revoke(dir: &Path, id: &str) -> Result<String> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = invitations_file(dir);
    let mut list: Vec<Invitation> = read(&path)?;
    let matching: Vec<usize> = (0..list.len())
        .filter(|&n| !id.is_empty() && invitation_id(&list[n].secret_sha256).starts_with(id))
        .collect();
    let [n] = matching[..] else {
        bail!("no single invitation with id {id} (see `peervisor invite --list`)");
    };
    let invitation = &mut list[n];
    if let Some(by) = &invitation.used_by {
        bail!(
            "invitation {id} was already used, by {by}: revoking it changes nothing (`peervisor peers deny {by}` does)"
        );
    }
    invitation.revoked = true;
    let full = invitation_id(&invitation.secret_sha256);
    write(&path, &list)?;
    Ok(full)
}

pub fn list(dir: &Path, now: u64) -> Result<Vec<InvitationView>> {
    let list: Vec<Invitation> = read(&invitations_file(dir))?;
    Ok(list
        .into_iter()
        .map(|i| InvitationView {
            id: invitation_id(&i.secret_sha256),
            role: i.role,
            expires: when(i.expires),
            state: match (&i.used_by, i.used_at) {
                (Some(by), Some(at)) => format!("used by {by} at {}", when(at)),
                _ if i.revoked => "revoked".into(),
                _ if now >= i.expires => "expired".into(),
                _ => "open".into(),
            },
        })
        .collect())
}

/// The trust group as this host knows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Group {
    /// The peer that invited this one with the control role (None: this host is
    /// an authority, or joined no group).
    #[serde(default)]
    pub authority: Option<String>,
    /// On an authority: the peers that joined its group.
    #[serde(default)]
    pub members: Vec<String>,
}

pub fn load_group(dir: &Path) -> Result<Group> {
    read(&dir.join(GROUP))
}

pub fn save_group(dir: &Path, group: &Group) -> Result<()> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    write(&dir.join(GROUP), group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invitation_is_used_once_before_it_expires_unless_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        add(d, "s1", Role::Control, 100, 200).unwrap();
        assert_eq!(redeem(d, "s1", "peer-b", 150), Ok(Role::Control));
        let again = redeem(d, "s1", "peer-c", 160).unwrap_err();
        assert!(again.contains("already used, by peer-b"), "{again}");

        add(d, "s2", Role::Consume, 100, 200).unwrap();
        let late = redeem(d, "s2", "peer-c", 200).unwrap_err();
        assert!(late.contains("expired at"), "{late}");

        let id = add(d, "s3", Role::Control, 100, 200).unwrap();
        revoke(d, &id[..6]).unwrap();
        assert_eq!(
            redeem(d, "s3", "peer-c", 150),
            Err("the invitation was revoked".into())
        );
        assert_eq!(
            redeem(d, "nope", "peer-c", 150),
            Err("this host made no such invitation".into())
        );

        let states: Vec<String> = list(d, 150).unwrap().into_iter().map(|v| v.state).collect();
        assert!(states[0].starts_with("used by peer-b"), "{states:?}");
        assert_eq!(&states[1..], ["open", "revoked"]);
        // Only hashes are kept.
        let text = std::fs::read_to_string(invitations_file(d)).unwrap();
        assert!(!text.contains("\"s1\""), "{text}");
    }
}
