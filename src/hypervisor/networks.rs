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
        let asked = domain.interface_addresses(flag, 0).ok().map(|interfaces| {
            interfaces
                .iter()
                .flat_map(|i| &i.addrs)
                .filter(|a| a.typed == i64::from(sys::VIR_IP_ADDR_TYPE_IPV4))
                .map(|a| a.addr.clone())
                .collect::<Vec<_>>()
        });
        match asked {
            Some(addrs) if !addrs.is_empty() => Some(addrs),
            // libvirt 9.0's ARP source fails on some kernels ("wrong nlmsg
            // len"): the same table, read from /proc (this process shares the
            // host's network namespace with an existing libvirt).
            _ if source == AddressSource::Arp => proc_arp_address(domain).map(|a| vec![a]),
            other => other,
        }
    })
    .map(|(_, addr)| addr)
}

/// The guest's address in the host's /proc/net/arp, matched on its NICs' MACs.
fn proc_arp_address(domain: &Domain) -> Option<String> {
    let xml = domain.xml_desc(0).ok()?;
    let arp = std::fs::read_to_string("/proc/net/arp").ok()?;
    arp_address(&arp, &macs_of(&xml))
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

/// The MAC addresses of a domain's NICs (`<mac address='…'/>`), lower case.
fn macs_of(xml: &str) -> Vec<String> {
    xml.split("<mac address=")
        .skip(1)
        .filter_map(|rest| {
            let quote = rest.chars().next()?;
            let mac = rest.get(1..)?.split(quote).next()?;
            Some(mac.to_ascii_lowercase())
        })
        .collect()
}

/// The first complete entry of /proc/net/arp for one of `macs`.
fn arp_address(arp: &str, macs: &[String]) -> Option<String> {
    arp.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (ip, flags, mac) = (fields.first()?, fields.get(2)?, fields.get(3)?);
        let complete = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()? & 0x2 != 0;
        (complete && macs.iter().any(|m| m.eq_ignore_ascii_case(mac))).then(|| ip.to_string())
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
    fn the_arp_table_gives_the_address_of_the_domains_mac() {
        let xml = "<domain><devices><interface type='network'>\
                   <mac address='52:54:00:FA:69:F5'/></interface></devices></domain>";
        let macs = macs_of(xml);
        assert_eq!(macs, ["52:54:00:fa:69:f5"]);
        let arp = "IP address       HW type     Flags       HW address            Mask     Device\n\
                   192.168.122.9    0x1         0x0         52:54:00:fa:69:f5     *        virbr0\n\
                   10.98.0.11       0x1         0x2         be:1f:75:c9:6a:33     *        eth0\n\
                   192.168.122.112  0x1         0x2         52:54:00:fa:69:f5     *        virbr0\n";
        // The incomplete entry (flags 0x0) is skipped.
        assert_eq!(arp_address(arp, &macs).as_deref(), Some("192.168.122.112"));
        assert_eq!(arp_address(arp, &["52:54:00:00:00:01".into()]), None);
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
