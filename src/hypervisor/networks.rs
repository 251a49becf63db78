//! The networks of an existing libvirt host that a VM's NIC can join: libvirt
//! networks (e.g. `default`) and host bridges (e.g. `br0`), checked before a VM
//! is defined; and the address a guest on one of them was given, learned from
//! libvirt's DHCP leases, the host's ARP table or the guest's agent.

use anyhow::{Result, anyhow, bail};
use virt::domain::Domain;
use virt::sys;

use super::{Host, blocking, query};
use crate::model::NicSource;

impl Host {
    /// Fails with one line naming what is wrong if a VM cannot be plugged into
    /// `source` here: an unknown or inactive libvirt network, a missing bridge.
    pub async fn check_nic(&self, source: &NicSource) -> Result<()> {
        match source {
            NicSource::GuestBridge => Ok(()),
            NicSource::Network(name) => self.check_network(name).await,
            NicSource::Bridge(name) => {
                let name = name.clone();
                blocking(move || check_bridge(&name)).await
            }
        }
    }

    async fn check_network(&self, name: &str) -> Result<()> {
        let link = self.link.clone();
        let (active, defined) = query(
            &self.link,
            blocking(move || {
                let conn = link.conn()?;
                let active = conn
                    .list_networks()
                    .map_err(|e| anyhow!("listing libvirt networks: {}", e.message()))?;
                let defined = conn
                    .list_defined_networks()
                    .map_err(|e| anyhow!("listing libvirt networks: {}", e.message()))?;
                Ok((active, defined))
            }),
        )
        .await?;
        network_verdict(name, &active, &defined)
    }
}

/// Whether `name` is among the active networks; else what the operator can do.
fn network_verdict(name: &str, active: &[String], inactive: &[String]) -> Result<()> {
    if active.iter().any(|n| n == name) {
        return Ok(());
    }
    if inactive.iter().any(|n| n == name) {
        bail!("libvirt network '{name}' is not active (start it: virsh net-start {name})");
    }
    let mut known: Vec<&str> = active.iter().chain(inactive).map(String::as_str).collect();
    known.sort_unstable();
    if known.is_empty() {
        bail!("no libvirt network named '{name}': this host defines none");
    }
    bail!(
        "no libvirt network named '{name}' (this host has: {})",
        known.join(", ")
    )
}

/// A bridge interface in this process's network namespace (the host's, where
/// its libvirt plugs guests in).
fn check_bridge(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid {
        bail!("'{name}' is not an interface name");
    }
    let out = std::process::Command::new(super::netns::ip_binary())
        .args(["-o", "link", "show", "dev", name, "type", "bridge"])
        .output()
        .map_err(|e| anyhow!("running ip link: {e}"))?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!("no bridge named '{name}' on this host (ip link show type bridge lists them)");
    }
    Ok(())
}

/// Where a guest's address is learned from, in the order they are asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressSource {
    /// libvirt's DHCP leases (a libvirt network).
    Lease,
    /// The host's ARP table (a bridge, or a static address).
    Arp,
    /// The guest's own qemu-guest-agent, when the domain has its channel and it
    /// answers (libvirt waits for it at most its agent timeout, 5 s).
    Agent,
}

const ADDRESS_SOURCES: [AddressSource; 3] = [
    AddressSource::Lease,
    AddressSource::Arp,
    AddressSource::Agent,
];

/// The guest's first IPv4 address as the host knows it: leases, then ARP, then
/// the guest agent. None when none knows one yet.
pub(super) fn learned_address(domain: &Domain) -> Option<String> {
    first_address(|source| {
        let flag = match source {
            AddressSource::Lease => sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
            AddressSource::Arp => sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
            AddressSource::Agent => sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
        };
        let interfaces = domain.interface_addresses(flag, 0).ok()?;
        Some(
            interfaces
                .iter()
                .flat_map(|i| &i.addrs)
                .filter(|a| a.typed == i64::from(sys::VIR_IP_ADDR_TYPE_IPV4))
                .map(|a| a.addr.clone())
                .collect(),
        )
    })
    .map(|(_, addr)| addr)
}

/// The first usable IPv4 address from the sources in order; `ask` gives a
/// source's IPv4 addresses (None: it failed or is absent). The agent reports
/// every interface of the guest: loopback and link-local ones are no service
/// address.
fn first_address(
    mut ask: impl FnMut(AddressSource) -> Option<Vec<String>>,
) -> Option<(AddressSource, String)> {
    ADDRESS_SOURCES.into_iter().find_map(|source| {
        ask(source)?
            .into_iter()
            .find(|addr| {
                addr.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| {
                    !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified()
                })
            })
            .map(|addr| (source, addr))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_comes_from_leases_then_arp_then_the_guest_agent() {
        let from = |answers: [Option<Vec<&str>>; 3]| {
            let mut asked = Vec::new();
            let got = first_address(|source| {
                asked.push(source);
                let i = ADDRESS_SOURCES.iter().position(|s| *s == source).unwrap();
                answers[i]
                    .clone()
                    .map(|v| v.into_iter().map(String::from).collect())
            });
            (got, asked)
        };
        // A lease wins; ARP and the agent are not asked.
        let (got, asked) = from([Some(vec!["192.168.122.7"]), Some(vec!["10.0.0.9"]), None]);
        assert_eq!(got, Some((AddressSource::Lease, "192.168.122.7".into())));
        assert_eq!(asked, [AddressSource::Lease]);
        // No lease (a bridge): the ARP table.
        let (got, _) = from([Some(vec![]), Some(vec!["10.0.0.9"]), None]);
        assert_eq!(got, Some((AddressSource::Arp, "10.0.0.9".into())));
        // Neither knows it: the agent, whose loopback and link-local addresses
        // are passed over.
        let (got, asked) = from([
            None,
            Some(vec![]),
            Some(vec!["127.0.0.1", "169.254.3.4", "192.168.1.20"]),
        ]);
        assert_eq!(got, Some((AddressSource::Agent, "192.168.1.20".into())));
        assert_eq!(
            asked,
            [
                AddressSource::Lease,
                AddressSource::Arp,
                AddressSource::Agent
            ]
        );
        // No agent (the call fails) and nothing else: no address yet.
        assert_eq!(from([None, None, None]).0, None);
        assert_eq!(from([None, None, Some(vec!["127.0.0.1"])]).0, None);
    }

    #[test]
    fn a_network_must_exist_and_be_active() {
        let active = ["default".to_string()];
        let inactive = ["isolated".to_string()];
        assert!(network_verdict("default", &active, &inactive).is_ok());
        let e = network_verdict("isolated", &active, &inactive).unwrap_err();
        assert_eq!(
            e.to_string(),
            "libvirt network 'isolated' is not active (start it: virsh net-start isolated)"
        );
        let e = network_verdict("lan", &active, &inactive).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no libvirt network named 'lan' (this host has: default, isolated)"
        );
        let e = network_verdict("lan", &[], &[]).unwrap_err();
        assert!(e.to_string().contains("defines none"), "{e}");
    }

    #[test]
    fn a_missing_bridge_is_named() {
        let e = check_bridge("pvnobr0").unwrap_err();
        assert!(e.to_string().contains("no bridge named 'pvnobr0'"), "{e}");
        let e = check_bridge("bad name;").unwrap_err();
        assert!(e.to_string().contains("not an interface name"), "{e}");
        // The loopback device exists but is no bridge.
        assert!(check_bridge("lo").is_err());
    }
}
