//! The peer's identity (libp2p keypair) and the overlay's network key, both
//! persisted in the data dir so a restarted node is the same peer in the same overlay.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use libp2p::identity::Keypair;

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

/// Where an operator's network key comes from. A literal key never comes from
/// a command-line argument: every user of the host can read those in the
/// process list.
#[derive(Clone, Debug)]
pub enum NetworkKeySource {
    /// `--network-key FILE`.
    File(std::path::PathBuf),
    /// `PEERVISOR_NETWORK_KEY`: the key's text (or a key file's path).
    Environment(String),
}

pub const NETWORK_KEY_ENV: &str = "PEERVISOR_NETWORK_KEY";

impl NetworkKeySource {
    fn read(&self) -> Result<NetworkKey> {
        match self {
            NetworkKeySource::File(path) => {
                let text = fs::read_to_string(path).map_err(|e| {
                    let hint = if parse_network_key(&path.to_string_lossy()).is_ok() {
                        format!(
                            " (--network-key takes a key file: a key typed on the command line shows in the process list; put it in a file, or in {NETWORK_KEY_ENV})"
                        )
                    } else {
                        String::new()
                    };
                    anyhow::anyhow!("--network-key {}: {e}{hint}", path.display())
                })?;
                parse_network_key(&text)
                    .with_context(|| format!("--network-key {}", path.display()))
            }
            NetworkKeySource::Environment(value) => match parse_network_key(value) {
                Ok(key) => Ok(key),
                Err(_) if Path::new(value).is_file() => NetworkKeySource::File(value.into()).read(),
                Err(e) => Err(e.context(NETWORK_KEY_ENV)),
            },
        }
    }
}

/// Resolves the overlay's pre-shared key: an explicit one (`--network-key FILE`
/// or `PEERVISOR_NETWORK_KEY`) wins and is saved; otherwise `dir/network.key`,
/// created on first run.
pub fn load_or_create_network_key(
    dir: &Path,
    explicit: Option<&NetworkKeySource>,
) -> Result<NetworkKey> {
    let path = dir.join(NETWORK_KEY_FILE);
    if let Some(given) = explicit {
        let key = given.read()?;
        write_secret(&path, key.to_key_file().as_bytes())?;
        return Ok(key);
    }
    if path.exists() {
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        return parse_network_key(&text).with_context(|| format!("{}", path.display()));
    }
    let key = NetworkKey::new(rand::random());
    write_secret(&path, key.to_key_file().as_bytes())?;
    Ok(key)
}

/// The overlay's pre-shared key (32 bytes), kept in libp2p's swarm.key format.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NetworkKey([u8; 32]);

impl NetworkKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        NetworkKey(bytes)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Safe to show: identifies the key without revealing it.
    pub fn fingerprint(&self) -> String {
        let digest = <sha2::Sha256 as sha2::Digest>::digest(self.0);
        hex::encode(&digest[..8])
    }

    pub fn to_key_file(self) -> String {
        format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", hex::encode(self.0))
    }
}

impl std::fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NetworkKey({})", self.fingerprint())
    }
}

/// Accepts the usual swarm.key format, or just the 64 hex digits.
pub fn parse_network_key(text: &str) -> Result<NetworkKey> {
    let mut text = text.trim();
    if let Some(rest) = text.strip_prefix("/key/swarm/psk/1.0.0/") {
        let rest = rest.trim_start();
        let Some(hex_part) = rest.strip_prefix("/base16/") else {
            bail!("invalid network key file: only the /base16/ encoding is supported");
        };
        text = hex_part.trim();
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
    Ok(NetworkKey::new(array))
}

pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
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
        assert_eq!(first.fingerprint(), again.fingerprint());
        let hex_key = "11".repeat(32);
        let given = load_or_create_network_key(
            dir.path(),
            Some(&NetworkKeySource::Environment(hex_key.clone())),
        )
        .unwrap();
        assert_ne!(given.fingerprint(), first.fingerprint());
        let saved = load_or_create_network_key(dir.path(), None).unwrap();
        assert_eq!(saved.fingerprint(), given.fingerprint());
    }

    #[test]
    fn a_key_given_on_the_command_line_is_refused_with_where_to_put_it() {
        let dir = tempfile::tempdir().unwrap();
        let typed = NetworkKeySource::File("22".repeat(32).into());
        let err = load_or_create_network_key(dir.path(), Some(&typed))
            .unwrap_err()
            .to_string();
        assert!(err.contains("shows in the process list"), "{err}");
        assert!(err.contains(NETWORK_KEY_ENV), "{err}");
        // A key file works, and so does the environment naming one.
        let file = dir.path().join("swarm.key");
        fs::write(&file, NetworkKey::new([3; 32]).to_key_file()).unwrap();
        for source in [
            NetworkKeySource::File(file.clone()),
            NetworkKeySource::Environment(file.to_string_lossy().into_owned()),
        ] {
            let key = load_or_create_network_key(dir.path(), Some(&source)).unwrap();
            assert_eq!(key, NetworkKey::new([3; 32]));
        }
    }

    #[test]
    fn swarm_key_files_round_trip() {
        let key = NetworkKey::new([0xab; 32]);
        let text = key.to_key_file();
        assert!(text.starts_with("/key/swarm/psk/1.0.0/\n/base16/\n"));
        assert_eq!(parse_network_key(&text).unwrap(), key);
        let err = parse_network_key("/key/swarm/psk/1.0.0/\n/base64/\nAAAA").unwrap_err();
        assert!(err.to_string().contains("base16"), "{err}");
    }

    #[test]
    fn bad_network_key_is_a_clear_error() {
        let err = parse_network_key("abcd").unwrap_err().to_string();
        assert!(err.contains("32 bytes"), "{err}");
        let err = parse_network_key("not hex at all").unwrap_err().to_string();
        assert!(err.contains("invalid network key"), "{err}");
    }

    mod fuzz {
        use super::*;
        use crate::fuzzing::{CASES, bytes_like, config, text_like};
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(config(CASES))]
            /// network.key files and --network-key values.
            #[test]
            fn fuzz_network_key_file(text in text_like(vec![
                NetworkKey::new([0xab; 32]).to_key_file(),
                "11".repeat(32),
            ])) {
                match parse_network_key(&text) {
                    Ok(key) => prop_assert_eq!(parse_network_key(&key.to_key_file()).ok(), Some(key)),
                    Err(e) => prop_assert!(e.to_string().contains("network key"), "{e}"),
                }
            }

        }

        proptest! {
            // A file written and read twice per case.
            #![proptest_config(config(CASES / 4))]
            /// identity.key files (libp2p's protobuf encoding), through the
            /// node's own loader: a key is loaded as it is (the same peer id on
            /// every start), a damaged file is an error naming it and is left
            /// as it was: never replaced by a new identity.
            #[test]
            fn fuzz_identity_key_file(bytes in bytes_like(vec![
                Keypair::generate_ed25519().to_protobuf_encoding().unwrap(),
            ])) {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join(IDENTITY_FILE);
                std::fs::write(&path, &bytes).unwrap();
                match load_or_create_identity(dir.path()) {
                    Ok(key) => {
                        let again = load_or_create_identity(dir.path()).unwrap();
                        prop_assert_eq!(key.public().to_peer_id(), again.public().to_peer_id());
                    }
                    Err(e) => {
                        let e = format!("{e:#}");
                        prop_assert!(e.contains(&path.display().to_string()), "{e}");
                    }
                }
                prop_assert_eq!(std::fs::read(&path).unwrap(), bytes, "the file was changed");
            }
        }
    }
}
