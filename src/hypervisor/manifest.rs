//! The VM manifest: what an operator writes (TOML) to describe a VM and the
//! services it provides. It is checked here, stored in the domain XML's metadata
//! (so it travels with the VM) and handed to the guest on its kernel command line.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use serde::Deserialize;

use crate::model::{NicSource, ServiceSpec};

/// Service types the guest image knows how to start.
pub const SERVICE_TYPES: &[&str] = &["http", "echo", "kv"];

/// A VM as a manifest file describes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmManifest {
    pub name: String,
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    #[serde(default = "default_memory", alias = "memory")]
    pub memory_mib: u64,
    /// Size of an optional qcow2 data disk, MiB.
    #[serde(default)]
    pub data_disk_mib: Option<u64>,
    #[serde(default)]
    pub image: Option<String>,
    /// A libvirt network for its NIC (e.g. "default"); default: the node's.
    #[serde(default)]
    pub network: Option<String>,
    /// A host bridge for its NIC (e.g. "br0"), instead of a network.
    #[serde(default)]
    pub bridge: Option<String>,
    /// Boot from this disk image (an imported base image's name, or a path)
    /// instead of the kernel+initramfs image.
    #[serde(default)]
    pub disk: Option<String>,
    /// With `disk`: run on a copy-on-write overlay of it (the default), or on
    /// the image itself (false).
    #[serde(default = "default_overlay")]
    pub overlay: bool,
    /// With `disk`: cloud-init user-data for a NoCloud seed (relative to the
    /// manifest's directory); the CLI reads it and sends its text.
    #[serde(default)]
    pub cloud_init: Option<PathBuf>,
    #[serde(default)]
    pub services: Vec<ManifestService>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestService {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub port: u32,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Connections it serves at once, all consumers together.
    #[serde(default)]
    pub max_conns: Option<u32>,
    /// Peer ids that may consume it; empty: every peer with the consume role.
    #[serde(default)]
    pub allow: Vec<String>,
}

fn default_vcpus() -> u32 {
    1
}

fn default_memory() -> u64 {
    128
}

fn default_overlay() -> bool {
    true
}

impl VmManifest {
    /// Reads and checks a manifest file; errors name the file and the field.
    pub fn load(path: &Path) -> Result<VmManifest> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("cannot read manifest {}: {e}", path.display()))?;
        let mut manifest =
            VmManifest::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        // Relative to the manifest, as an operator reading it would take it.
        if let (Some(file), Some(dir)) = (&manifest.cloud_init, path.parent()) {
            manifest.cloud_init = Some(dir.join(file));
        }
        Ok(manifest)
    }

    pub fn parse(text: &str) -> Result<VmManifest> {
        let manifest: VmManifest = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| {
                text.as_bytes()[..s.start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1
            });
            match line {
                Some(l) => anyhow!("line {l}: {}", e.message().trim()),
                None => anyhow!("{}", e.message().trim()),
            }
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    pub fn validate(&self) -> Result<()> {
        if !(1..=64).contains(&self.vcpus) {
            bail!("vcpus: must be between 1 and 64, got {}", self.vcpus);
        }
        if !(64..=1024 * 1024).contains(&self.memory_mib) {
            bail!(
                "memory_mib: must be between 64 and 1048576, got {}",
                self.memory_mib
            );
        }
        if let Some(size) = self.data_disk_mib
            && !(1..=1024 * 1024).contains(&size)
        {
            bail!("data_disk_mib: must be between 1 and 1048576, got {size}");
        }
        self.nic()?;
        if let Some(disk) = &self.disk {
            if disk.trim().is_empty() {
                bail!("disk: empty");
            }
            if self.data_disk_mib.is_some() {
                bail!("data_disk_mib: not with a boot disk (give one or the other)");
            }
        } else if self.cloud_init.is_some() {
            bail!(
                "cloud_init: needs a disk image (disk = ...); the kernel image takes its services from the manifest"
            );
        }
        let mut names = HashSet::new();
        let mut ports = HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let at = format!("services[{i}]");
            if !valid_service_name(&s.name) {
                bail!(
                    "{at}.name: '{}' is not a service name (1-32 lowercase letters, digits, '-')",
                    s.name
                );
            }
            if !names.insert(s.name.as_str()) {
                bail!("{at}.name: duplicate service '{}'", s.name);
            }
            if !SERVICE_TYPES.contains(&s.kind.as_str()) {
                bail!(
                    "{at}.type: unknown service type '{}' (known: {})",
                    s.kind,
                    SERVICE_TYPES.join(", ")
                );
            }
            if !(1..=65535).contains(&s.port) {
                bail!("{at}.port: {} is out of range 1-65535", s.port);
            }
            if !ports.insert(s.port) {
                bail!("{at}.port: port {} is used twice", s.port);
            }
            for key in s.tags.keys() {
                if key.is_empty() {
                    bail!("{at}.tags: empty tag name");
                }
            }
            if s.max_conns == Some(0) {
                bail!("{at}.max_conns: must be 1 or more");
            }
            if let Some(bad) = s
                .allow
                .iter()
                .find(|p| p.parse::<libp2p::PeerId>().is_err())
            {
                bail!("{at}.allow: '{bad}' is not a peer id");
            }
        }
        Ok(())
    }

    /// Where its NIC goes, if the manifest says (else the node's default).
    pub fn nic(&self) -> Result<Option<NicSource>> {
        nic_choice(self.network.as_deref(), self.bridge.as_deref())
            .map_err(|e| anyhow!("network/bridge: {e}"))
    }

    pub fn service_specs(&self) -> Vec<ServiceSpec> {
        self.services
            .iter()
            .map(|s| ServiceSpec {
                name: s.name.as_str().into(),
                kind: s.kind.clone(),
                port: s.port as u16,
                tags: s.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                max_conns: s.max_conns,
                allow: s.allow.clone(),
            })
            .collect()
    }
}

impl From<&ServiceSpec> for ManifestService {
    /// A service as the control API or a replication offer gives it, for a new
    /// VM's manifest (the inverse of `VmManifest::service_specs`).
    fn from(s: &ServiceSpec) -> Self {
        ManifestService {
            name: s.name.to_string(),
            kind: s.kind.clone(),
            port: u32::from(s.port),
            tags: s.tags.iter().cloned().collect(),
            max_conns: s.max_conns,
            allow: s.allow.clone(),
        }
    }
}

/// A NIC source from `network` / `bridge` (a manifest's fields, or the flags):
/// at most one of them, each a plain name.
pub fn nic_choice(network: Option<&str>, bridge: Option<&str>) -> Result<Option<NicSource>> {
    let plain = |kind: &str, name: &str| {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if ok {
            Ok(name.to_string())
        } else {
            Err(anyhow!(
                "'{name}' is not a {kind} name (letters, digits, '-', '_', '.')"
            ))
        }
    };
    match (network, bridge) {
        (Some(_), Some(_)) => bail!("give a network or a bridge, not both"),
        (Some(n), None) => Ok(Some(NicSource::Network(plain("network", n)?))),
        (None, Some(b)) => Ok(Some(NicSource::Bridge(plain("bridge", b)?))),
        (None, None) => Ok(None),
    }
}

/// Lowercase letters, digits and '-': safe in a kernel argument and a file name.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `web:http:80,kv:kv:7000`: what the guest's /init reads from `pv.services=`.
pub fn services_arg(services: &[ServiceSpec]) -> String {
    services
        .iter()
        .map(|s| format!("{}:{}:{}", s.name, s.kind, s.port))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "web-1"
vcpus = 2
memory_mib = 256
data_disk_mib = 64

[[services]]
name = "web"
type = "http"
port = 80
tags = { tier = "front" }

[[services]]
name = "store"
type = "kv"
port = 7000
"#;

    #[test]
    fn a_manifest_reads_into_services() {
        let m = VmManifest::parse(GOOD).unwrap();
        assert_eq!(m.vcpus, 2);
        assert_eq!(m.data_disk_mib, Some(64));
        let specs = m.service_specs();
        assert_eq!(specs[0].port, 80);
        assert_eq!(specs[0].tags, vec![("tier".into(), "front".into())]);
        assert_eq!(services_arg(&specs), "web:http:80,store:kv:7000");
        assert_eq!(specs[0].max_conns, None);
        let limited = GOOD.replacen(
            "port = 80\n",
            &format!(
                "port = 80\nmax_conns = 5\nallow = [\"{}\"]\n",
                libp2p::PeerId::random()
            ),
            1,
        );
        let specs = VmManifest::parse(&limited).unwrap().service_specs();
        assert_eq!(specs[0].max_conns, Some(5));
        assert_eq!(specs[0].allow.len(), 1);
    }

    #[test]
    fn a_manifest_names_a_network_or_a_bridge() {
        let m = VmManifest::parse("name = \"a\"\nnetwork = \"default\"\n").unwrap();
        assert_eq!(m.nic().unwrap(), Some(NicSource::Network("default".into())));
        let m = VmManifest::parse("name = \"a\"\nbridge = \"br0\"\n").unwrap();
        assert_eq!(m.nic().unwrap(), Some(NicSource::Bridge("br0".into())));
        let both = error_of("name = \"a\"\nnetwork = \"default\"\nbridge = \"br0\"\n");
        assert_eq!(both, "network/bridge: give a network or a bridge, not both");
        let odd = error_of("name = \"a\"\nbridge = \"br 0\"\n");
        assert!(odd.contains("'br 0' is not a bridge name"), "{odd}");
    }

    fn error_of(text: &str) -> String {
        VmManifest::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_manifests_name_the_field() {
        let unknown = error_of("name = \"a\"\ncolour = \"red\"\n");
        assert!(
            unknown.contains("colour") && unknown.contains("line 2"),
            "{unknown}"
        );
        let port =
            error_of("name = \"a\"\n[[services]]\nname = \"w\"\ntype = \"http\"\nport = 70000\n");
        assert!(
            port.contains("services[0].port") && port.contains("70000"),
            "{port}"
        );
        let zero =
            error_of("name = \"a\"\n[[services]]\nname = \"w\"\ntype = \"http\"\nport = 0\n");
        assert!(zero.contains("services[0].port"), "{zero}");
        let dup = error_of(
            "name = \"a\"\n[[services]]\nname = \"w\"\ntype = \"http\"\nport = 80\n\
             [[services]]\nname = \"w\"\ntype = \"kv\"\nport = 81\n",
        );
        assert!(
            dup.contains("services[1].name") && dup.contains("duplicate"),
            "{dup}"
        );
        let max = error_of(
            "name = \"a\"\n[[services]]\nname = \"w\"\ntype = \"http\"\nport = 80\nmax_conns = 0\n",
        );
        assert!(max.contains("services[0].max_conns"), "{max}");
        let allow = error_of(
            "name = \"a\"\n[[services]]\nname = \"w\"\ntype = \"http\"\nport = 80\nallow = [\"bob\"]\n",
        );
        assert!(
            allow.contains("services[0].allow") && allow.contains("'bob'"),
            "{allow}"
        );
        let kind =
            error_of("name = \"a\"\n[[services]]\nname = \"w\"\ntype = \"ftp\"\nport = 21\n");
        assert!(
            kind.contains("services[0].type") && kind.contains("ftp"),
            "{kind}"
        );
        let svc_field = error_of(
            "name = \"a\"\n[[services]]\nname = \"w\"\ntype = \"kv\"\nport = 1\nproto = \"udp\"\n",
        );
        assert!(svc_field.contains("proto"), "{svc_field}");
        assert!(error_of("vcpus = 1\n").contains("name"));
        assert!(error_of("name = \"a\"\nvcpus = 0\n").contains("vcpus"));
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.toml");
        std::fs::write(&path, "name = \"a\"\nbogus = 1\n").unwrap();
        let e = VmManifest::load(&path).unwrap_err().to_string();
        assert!(e.contains("vm.toml") && e.contains("bogus"), "{e}");
        let missing = VmManifest::load(&dir.path().join("nope.toml")).unwrap_err();
        assert!(missing.to_string().contains("nope.toml"));
    }

    mod fuzz {
        use super::*;
        use crate::fuzzing::{CASES, config, names, text_like};
        use proptest::prelude::*;

        const VALID: &str = r#"
name = "web-1"
vcpus = 2
memory_mib = 256
data_disk_mib = 64

[[services]]
name = "web"
type = "http"
port = 80
tags = { tier = "front" }
max_conns = 5
allow = ["12D3KooWKmGEsA55CAE5ZJHxTY25tTYHu23s3KwiQG5xUKjXPVth"]

[[services]]
name = "kv"
type = "kv"
port = 7000
"#;

        #[test]
        fn the_seed_is_a_valid_manifest() {
            VmManifest::parse(VALID).unwrap();
        }

        proptest! {
            #![proptest_config(config(CASES / 10))]
            /// VM manifests (`vm create -f`): errors name the file and the line or field.
            #[test]
            fn fuzz_vm_manifest(text in text_like(vec![VALID.to_string()])) {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("web.toml");
                std::fs::write(&path, &text).unwrap();
                match VmManifest::load(&path) {
                    Ok(m) => prop_assert!(m.validate().is_ok()),
                    Err(e) => {
                        let e = e.to_string();
                        prop_assert!(names(&e, "web.toml"), "{e}");
                        prop_assert!(!e.trim_end().contains('\n') || e.contains("line "), "{e}");
                    }
                }
            }
        }
    }
}
