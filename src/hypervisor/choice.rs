//! Which libvirt a peer hosts its VMs on. `--hypervisor URI` wins; else
//! `LIBVIRT_DEFAULT_URI`, as virsh reads it; else a private libvirtd of the
//! peer's own (the demo, the tests, hosts without libvirt). The host's system
//! daemon is never picked up silently: the VMs it holds are the operator's, and
//! a peer should touch them only when told to use that daemon.

use crate::model::HypervisorOrigin;

/// The environment variable virsh and every libvirt client read.
pub const DEFAULT_URI_ENV: &str = "LIBVIRT_DEFAULT_URI";
/// `--hypervisor private`: a private daemon even when LIBVIRT_DEFAULT_URI is set.
pub const PRIVATE: &str = "private";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HypervisorChoice {
    /// A libvirtd this peer starts for itself, guests on its own bridge.
    Private,
    /// An existing libvirt (e.g. the host's `qemu:///system`): its networks,
    /// its VMs, its daemon, none of which the peer starts or stops.
    Existing {
        uri: String,
        origin: HypervisorOrigin,
    },
}

impl HypervisorChoice {
    /// The flag's value, else the environment's, else private. Empty values
    /// count as unset, as libvirt treats an empty LIBVIRT_DEFAULT_URI.
    pub fn resolve(flag: Option<&str>, env: Option<&str>) -> HypervisorChoice {
        let given = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(String::from);
        match (given(flag), given(env)) {
            (Some(flag), _) if flag == PRIVATE => HypervisorChoice::Private,
            (Some(uri), _) => HypervisorChoice::Existing {
                uri,
                origin: HypervisorOrigin::Flag,
            },
            (None, Some(uri)) => HypervisorChoice::Existing {
                uri,
                origin: HypervisorOrigin::Environment,
            },
            (None, None) => HypervisorChoice::Private,
        }
    }

    /// `--hypervisor` as given and this process's LIBVIRT_DEFAULT_URI.
    pub fn from_flag_and_env(flag: Option<&str>) -> HypervisorChoice {
        let env = std::env::var(DEFAULT_URI_ENV).ok();
        HypervisorChoice::resolve(flag, env.as_deref())
    }

    /// A URI given on the command line or from the environment (for callers
    /// that already hold one, e.g. benchmarks and tests).
    pub fn existing(uri: &str) -> HypervisorChoice {
        HypervisorChoice::Existing {
            uri: uri.to_string(),
            origin: HypervisorOrigin::Flag,
        }
    }

    pub fn origin(&self) -> HypervisorOrigin {
        match self {
            HypervisorChoice::Private => HypervisorOrigin::Private,
            HypervisorChoice::Existing { origin, .. } => *origin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_the_environment_then_a_private_daemon() {
        let existing = |uri: &str, origin| HypervisorChoice::Existing {
            uri: uri.into(),
            origin,
        };
        assert_eq!(
            HypervisorChoice::resolve(Some("qemu:///system"), Some("test:///default")),
            existing("qemu:///system", HypervisorOrigin::Flag)
        );
        assert_eq!(
            HypervisorChoice::resolve(None, Some("qemu:///system")),
            existing("qemu:///system", HypervisorOrigin::Environment)
        );
        assert_eq!(
            HypervisorChoice::resolve(None, None),
            HypervisorChoice::Private
        );
        // Empty counts as unset; `private` overrides the environment.
        assert_eq!(
            HypervisorChoice::resolve(Some(" "), Some("")),
            HypervisorChoice::Private
        );
        assert_eq!(
            HypervisorChoice::resolve(Some("private"), Some("qemu:///system")),
            HypervisorChoice::Private
        );
    }
}
