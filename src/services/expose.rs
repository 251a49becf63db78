//! `peervisor expose`: legacy host services (no VM) this peer publishes, kept in
//! `data-dir/exposed.json` across restarts.

use anyhow::{Context, Result, anyhow, bail};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::{Services, lock};
use crate::names::ServiceName;
use crate::node::protocol::ServiceRecord;

/// A legacy host service published with `peervisor expose`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Exposure {
    pub name: String,
    pub kind: String,
    pub target: String,
    /// Peer ids that may consume it; empty: every peer with the consume role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Connections it serves at once, from all peers together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_conns: Option<u32>,
}

impl Services {
    /// Reloads exposures saved by an earlier run.
    pub(super) fn load_exposures(&self) {
        let path = &self.exposures_file;
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        match parse_exposures(&text) {
            Ok(list) => *lock(&self.exposures) = list,
            Err(e) => tracing::warn!("{}: ignored ({e})", path.display()),
        }
    }

    fn save_exposures(&self, list: &[Exposure]) -> Result<()> {
        let path = &self.exposures_file;
        std::fs::write(path, serde_json::to_vec_pretty(list)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// `peervisor expose`: publishes a TCP service of this host.
    pub async fn expose(
        &self,
        name: &ServiceName,
        target: &str,
        kind: Option<&str>,
        allow: Vec<PeerId>,
        max_conns: Option<u32>,
    ) -> Result<String> {
        if max_conns == Some(0) {
            bail!("--max-conns 0 would refuse every consumer: give 1 or more");
        }
        name.validate_exposed()?;
        let record = ServiceRecord {
            name: name.to_string(),
            kind: kind.unwrap_or("tcp").to_string(),
            ..Default::default()
        };
        record.validate().map_err(|e| anyhow!(e))?;
        if tokio::net::lookup_host(target).await.is_err() {
            bail!("--target {target}: expected HOST:PORT that resolves");
        }
        if self
            .local_services()
            .await?
            .iter()
            .any(|s| s.spec.name == *name)
        {
            bail!("this peer already provides a service named '{name}'");
        }
        let list = {
            let mut list = lock(&self.exposures);
            list.push(Exposure {
                name: name.to_string(),
                kind: record.kind,
                target: target.to_string(),
                allow: allow.iter().map(PeerId::to_string).collect(),
                max_conns,
            });
            list.clone()
        };
        self.save_exposures(&list)?;
        self.republish.notify_one();
        Ok(format!("exposing {target} as service '{name}'"))
    }

    pub fn unexpose(&self, name: &ServiceName) -> Result<String> {
        let list = {
            let mut list = lock(&self.exposures);
            let Some(pos) = list.iter().position(|e| e.name == name.as_str()) else {
                bail!("no exposed service named '{name}' on this peer");
            };
            list.remove(pos);
            list.clone()
        };
        self.save_exposures(&list)?;
        self.republish.notify_one();
        Ok(format!("service '{name}' withdrawn"))
    }
}

/// exposed.json as saved by an earlier run; entries an operator broke by hand
/// are refused with the entry's name.
fn parse_exposures(text: &str) -> Result<Vec<Exposure>> {
    let list: Vec<Exposure> = serde_json::from_str(text)?;
    for e in &list {
        let record = ServiceRecord {
            name: e.name.clone(),
            kind: e.kind.clone(),
            ..Default::default()
        };
        record
            .validate()
            .map_err(|why| anyhow!("exposure {:?}: {why}", e.name))?;
        if e.max_conns == Some(0) {
            bail!("exposure {:?}: max_conns 0", e.name);
        }
        if let Some(bad) = e.allow.iter().find(|p| p.parse::<PeerId>().is_err()) {
            bail!("exposure {:?}: allow: {bad:?} is not a peer id", e.name);
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposures_file_round_trips_and_bad_entries_are_named() {
        let list = vec![Exposure {
            name: "db".into(),
            kind: "postgres".into(),
            target: "127.0.0.1:5432".into(),
            allow: vec![PeerId::random().to_string()],
            max_conns: Some(2),
        }];
        let text = serde_json::to_string(&list).unwrap();
        assert_eq!(parse_exposures(&text).unwrap(), list);
        let old = r#"[{"name":"db","kind":"tcp","target":"127.0.0.1:1"}]"#;
        assert_eq!(parse_exposures(old).unwrap()[0].max_conns, None);
        let bad = r#"[{"name":"db","kind":"tcp","target":"x","allow":["nope"]}]"#;
        let err = parse_exposures(bad).unwrap_err().to_string();
        assert!(err.contains("\"db\"") && err.contains("nope"), "{err}");
    }

    mod fuzz {
        use super::*;
        use crate::fuzzing::{CASES, config, text_like};
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(config(CASES))]
            /// exposed.json in the data dir.
            #[test]
            fn fuzz_exposures_file(text in text_like(vec![
                format!(r#"[{{"name":"db","kind":"tcp","target":"127.0.0.1:5432","allow":["{}"],"max_conns":3}}]"#, PeerId::random()),
            ])) {
                if let Ok(list) = parse_exposures(&text) {
                    prop_assert!(list.iter().all(|e| e.max_conns != Some(0)));
                }
            }
        }
    }
}
