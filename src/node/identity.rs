//! The peer's identity (libp2p keypair) and the overlay's network key, both
//! persisted in the data dir so a restarted node is the same peer in the same overlay.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;

pub const IDENTITY_FILE: &str = "identity.key";
pub const NETWORK_KEY_FILE: &str = "network.key";

/// Loads the keypair from `dir/identity.key`, creating it on first run.
pub fn load_or_create_identity(dir: &Path) -> Result<Keypair> {
    let path = dir.join(IDENTITY_FILE);
    if path.exists() {
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        return Keypair::from_protobuf_encoding(&bytes)
            .with_context(|| format!("{}: not a libp2p identity key", path.display()));
    }
    let keypair = Keypair::generate_ed25519();
    let bytes = keypair
        .to_protobuf_encoding()
        .context("encoding new identity key")?;
    write_secret(&path, &bytes)?;
    Ok(keypair)
}

/// Resolves the overlay's pre-shared key: an explicit `--network-key` (a key file's
/// path or its text) wins and is saved; otherwise `dir/network.key`, created on first run.
pub fn load_or_create_network_key(dir: &Path, explicit: Option<&str>) -> Result<PreSharedKey> {
    let path = dir.join(NETWORK_KEY_FILE);
    if let Some(given) = explicit {
        let text = if Path::new(given).exists() {
            fs::read_to_string(given).with_context(|| format!("reading network key {given}"))?
        } else {
            given.to_string()
        };
        let key = parse_network_key(&text).with_context(|| format!("--network-key {given}"))?;
        write_secret(&path, key.to_key_file().as_bytes())?;
        return Ok(key);
    }
    if path.exists() {
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        return parse_network_key(&text).with_context(|| format!("{}", path.display()));
    }
    let key = PreSharedKey::new(rand::random());
    write_secret(&path, key.to_key_file().as_bytes())?;
    Ok(key)
}

/// Accepts the usual swarm.key format, or just the 64 hex digits.
pub fn parse_network_key(text: &str) -> Result<PreSharedKey> {
    let text = text.trim();
    if text.starts_with("/key/swarm/psk/") {
        return text
            .parse::<PreSharedKey>()
            .map_err(|e| anyhow::anyhow!("invalid network key file: {e}"));
    }
    let bytes = hex::decode(text).map_err(|_| {
        anyhow::anyhow!("invalid network key: expected a swarm.key file or 64 hex digits")
    })?;
    let Ok(array) = <[u8; 32]>::try_from(bytes.as_slice()) else {
        bail!(
            "invalid network key: expected 32 bytes (64 hex digits), got {}",
            bytes.len()
        );
    };
    Ok(PreSharedKey::new(array))
}

fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stable_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_identity(dir.path()).unwrap();
        let b = load_or_create_identity(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
    }

    #[test]
    fn network_key_round_trips_and_explicit_key_wins() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_network_key(dir.path(), None).unwrap();
        let again = load_or_create_network_key(dir.path(), None).unwrap();
        assert_eq!(
            first.fingerprint().to_string(),
            again.fingerprint().to_string()
        );
        let hex_key = "11".repeat(32);
        let given = load_or_create_network_key(dir.path(), Some(&hex_key)).unwrap();
        assert_ne!(
            given.fingerprint().to_string(),
            first.fingerprint().to_string()
        );
        let saved = load_or_create_network_key(dir.path(), None).unwrap();
        assert_eq!(
            saved.fingerprint().to_string(),
            given.fingerprint().to_string()
        );
    }

    #[test]
    fn bad_network_key_is_a_clear_error() {
        let err = parse_network_key("abcd").unwrap_err().to_string();
        assert!(err.contains("32 bytes"), "{err}");
        let err = parse_network_key("not hex at all").unwrap_err().to_string();
        assert!(err.contains("invalid network key"), "{err}");
    }
}
