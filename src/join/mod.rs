//! Joining hosts to an overlay with one command each.
//!
//! `peervisor invite` on a member makes a one-line token: the member's addresses
//! and peer id, the overlay's network key, a single-use secret and the role it
//! grants, and when it expires. `peervisor join TOKEN` on a new host writes the
//! key and a config file, joins the overlay with the key (so the secret only ever
//! travels inside the keyed, encrypted channel), and hands the secret to the
//! inviter, who checks it (known, unused, unexpired, not revoked) and marks it
//! used. Nothing new is invented: the overlay's own authenticated channel carries
//! a bearer secret, checked by its issuer.
//!
//! A `control` invitation also joins the inviter's trust group: every member of
//! the group may migrate VMs into every other. The inviter is the group's
//! authority: it grants control to the newcomer, tells the newcomer the members
//! (who it grants control to), and tells each member the new list. So n hosts
//! that migrate into each other take n invite/join pairs, not n(n-1) `peers allow`.
//!
//! Files, in the data dir: `invitations.json` (the inviter's, secrets kept as
//! SHA-256 only) and `group.json` (the authority, and on it, the members).

pub mod joiner;
pub mod node;
mod store;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::api::Role;

/// What a token starts with, so a pasted token is recognised (and versioned).
const TOKEN_PREFIX: &str = "pvjoin1.";

/// What `peervisor join` needs to join and redeem.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Token {
    /// The inviter's peer id.
    pub inviter: String,
    /// Where to reach it (bootstrap addresses).
    pub addrs: Vec<String>,
    /// The overlay's network key, 64 hex digits.
    pub key: String,
    /// The single-use secret, 64 hex digits.
    pub secret: String,
    pub role: Role,
    /// Unix seconds.
    pub expires: u64,
}

impl Token {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a token serializes");
        format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        )
    }

    pub fn decode(text: &str) -> Result<Token> {
        let body = text.trim().strip_prefix(TOKEN_PREFIX).ok_or_else(|| {
            anyhow!("not a peervisor join token (they start with {TOKEN_PREFIX})")
        })?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .context("a damaged join token (copy the whole line)")?;
        let token: Token =
            serde_json::from_slice(&json).context("a damaged join token (copy the whole line)")?;
        if token.addrs.is_empty() {
            bail!("the join token names no address of the inviter");
        }
        Ok(token)
    }

    /// "expired at ..." when it has.
    pub fn expired(&self, now: u64) -> Option<String> {
        (now >= self.expires).then(|| format!("it expired at {}", when(self.expires)))
    }
}

/// The id an invitation is listed and revoked by: the start of its secret's hash.
pub fn invitation_id(secret_sha256: &str) -> String {
    secret_sha256.chars().take(12).collect()
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()))
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix seconds as RFC 3339 (UTC), for messages.
pub fn when(unix: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token {
            inviter: "12D3KooWexample".into(),
            addrs: vec!["/ip4/192.0.2.1/tcp/7470".into()],
            key: "ab".repeat(32),
            secret: "cd".repeat(32),
            role: Role::Control,
            expires: 2_000_000_000,
        }
    }

    #[test]
    fn a_token_is_one_line_and_reads_back() {
        let text = token().encode();
        assert!(!text.contains(['\n', ' ', '=']), "{text}");
        assert_eq!(Token::decode(&format!("  {text}\n")).unwrap(), token());
    }

    #[test]
    fn a_damaged_or_foreign_token_is_refused_clearly() {
        let text = token().encode();
        let cut = &text[..text.len() - 5];
        assert!(format!("{:#}", Token::decode(cut).unwrap_err()).contains("damaged"));
        assert!(
            format!("{:#}", Token::decode("hello").unwrap_err())
                .contains("not a peervisor join token")
        );
    }

    #[test]
    fn expiry_is_named_with_its_time() {
        let t = token();
        assert_eq!(t.expired(t.expires - 1), None);
        assert_eq!(
            t.expired(t.expires).as_deref(),
            Some("it expired at 2033-05-18T03:33:20Z")
        );
    }
}
