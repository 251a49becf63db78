//! The consumptions a node keeps across restarts, in `data-dir/consumed.json`:
//! each service with the local address it listens on, so a restarted node
//! listens on the same port and its users' connections work again.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::names::ServiceName;

pub const FILE: &str = "consumed.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Saved {
    pub service: ServiceName,
    pub listen: SocketAddr,
}

/// The saved list; a missing file is none, an unreadable one is logged and none.
pub fn load(path: &Path) -> Vec<Saved> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    serde_json::from_str(&text).unwrap_or_else(|e| {
        tracing::warn!("{}: ignored ({e})", path.display());
        Vec::new()
    })
}

pub fn save(path: &Path, list: &[Saved]) -> Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(list)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_consumptions_load_back_and_a_broken_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        assert!(load(&path).is_empty());
        let list = vec![Saved {
            service: "web-1".into(),
            listen: "127.0.0.1:8080".parse().unwrap(),
        }];
        save(&path, &list).unwrap();
        assert_eq!(load(&path), list);
        std::fs::write(&path, "{not json").unwrap();
        assert!(load(&path).is_empty());
    }
}
