//! The guest network: one bridge inside a network namespace peervisor owns.
//! Every peer's libvirtd on this machine runs in that namespace, so guests of all
//! local peers share one L2 segment and keep their static IP when they migrate
//! between local peers; nothing is exposed on the host's own interfaces.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNetwork {
    pub netns: String,
    pub bridge: String,
    /// The bridge's address; also the daemons' migration address.
    pub gateway: Ipv4Addr,
    pub prefix: u8,
}

impl GuestNetwork {
    /// The NIC of a guest on this network's bridge.
    pub fn nic(&self, uuid: &str, ip: Ipv4Addr) -> super::domain::GuestNic {
        super::domain::GuestNic {
            source: super::domain::NicSource::Bridge(self.bridge.clone()),
            mac: super::domain::mac_for(uuid),
            address: Some(super::domain::StaticAddress {
                ip,
                prefix: self.prefix,
                gateway: self.gateway,
            }),
        }
    }

    /// The host's own network (an existing libvirt's networks and bridges):
    /// guests are reached from the node's namespace, no namespace of ours.
    pub fn host() -> Self {
        GuestNetwork {
            netns: String::new(),
            ..GuestNetwork::named("")
        }
    }

    /// Whether guests live in a namespace of ours (else on the host's network).
    pub fn is_namespaced(&self) -> bool {
        !self.netns.is_empty()
    }

    /// `netns` with the default bridge pvbr0 and 10.77.0.1/16.
    pub fn named(netns: &str) -> Self {
        GuestNetwork {
            netns: netns.to_string(),
            bridge: "pvbr0".into(),
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            prefix: 16,
        }
    }

    /// `/run/netns/<name>`, the handle `ip netns` keeps.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }

    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    /// Creates the namespace and the bridge if missing; safe to call again, and
    /// from several peers starting at once (they take turns on a lock file).
    pub fn ensure(&self) -> Result<()> {
        let _turn = SetupLock::take()?;
        if !self.exists() {
            ip(&["netns", "add", &self.netns])?;
        }
        let ns = self.netns.as_str();
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        if ip(&["-n", ns, "link", "show", &self.bridge]).is_err() {
            // STP off and no forward delay: a new tap forwards at once.
            ip(&[
                "-n",
                ns,
                "link",
                "add",
                &self.bridge,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            ])?;
        }
        let addr = format!("{}/{}", self.gateway, self.prefix);
        ip(&["-n", ns, "addr", "replace", &addr, "dev", &self.bridge])?;
        ip(&["-n", ns, "link", "set", &self.bridge, "up"])?;
        Ok(())
    }

    /// Deletes the namespace (and with it the bridge); no-op if absent.
    pub fn remove(&self) -> Result<()> {
        if self.exists() {
            ip(&["netns", "delete", &self.netns])?;
        }
        Ok(())
    }

    /// A stable address for a VM: hash of its uuid into the subnet, never the
    /// network address, the gateway or the broadcast address. Distinct uuids
    /// can collide (birthday bound: ~1% at 36 VMs in a /16).
    pub fn guest_ip_for(&self, uuid: &str) -> Ipv4Addr {
        let prefix = self.prefix.clamp(8, 30) as u32;
        let mask = u32::MAX << (32 - prefix);
        let net = u32::from(self.gateway) & mask;
        let size = 1u64 << (32 - prefix); // addresses in the subnet
        let digest = Sha256::digest(uuid.trim().to_ascii_lowercase().as_bytes());
        let h = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
        // Offsets 2..=size-2: skips .0 (network), .1 and the broadcast.
        let mut offset = 2 + h % (size - 3);
        if net + offset as u32 == u32::from(self.gateway) {
            offset = if offset < size - 2 { offset + 1 } else { 2 };
        }
        Ipv4Addr::from(net + offset as u32)
    }

    /// A TCP connection made from inside the namespace. The socket belongs to
    /// the namespace for its whole life, whichever thread then uses it.
    pub fn connect(&self, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
        if !self.is_namespaced() {
            return TcpStream::connect_timeout(&addr, timeout);
        }
        let path = self.path();
        // setns changes only the calling thread: use a throwaway one.
        std::thread::spawn(move || {
            let ns = File::open(&path)
                .map_err(|e| annotate(e, &format!("opening {}", path.display())))?;
            // SAFETY: setns on a valid namespace fd; affects this thread only.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(annotate(e, &format!("setns {}", path.display())));
            }
            TcpStream::connect_timeout(&addr, timeout)
        })
        .join()
        .map_err(|_| std::io::Error::other("netns connect thread panicked"))?
    }
}

/// An exclusive flock held while a namespace is set up; released on drop.
struct SetupLock {
    _held: File,
}

impl SetupLock {
    fn take() -> Result<SetupLock> {
        let path = std::env::temp_dir().join("peervisor-netns.lock");
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            let e = std::io::Error::last_os_error();
            bail!("locking {}: {e}", path.display());
        }
        Ok(SetupLock { _held: file })
    }
}

fn annotate(e: std::io::Error, what: &str) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new(ip_binary())
        .args(args)
        .output()
        .with_context(|| format!("running ip {}: is iproute2 installed?", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// root's PATH may lack /sbin when started from a user shell.
pub(crate) fn ip_binary() -> PathBuf {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("ip"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_ips_stay_in_the_subnet_and_off_reserved_addresses() {
        let net = GuestNetwork::named("t");
        for i in 0..5000 {
            let ip = net.guest_ip_for(&format!("uuid-{i}"));
            let o = ip.octets();
            assert_eq!((o[0], o[1]), (10, 77));
            assert!(
                ip != Ipv4Addr::new(10, 77, 0, 0)
                    && ip != net.gateway
                    && ip != Ipv4Addr::new(10, 77, 255, 255)
            );
        }
        assert_eq!(net.guest_ip_for("ABC"), net.guest_ip_for("abc"));
    }
}
