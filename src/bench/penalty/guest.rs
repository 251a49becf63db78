//! The benchmark's own guest: a private libvirtd in a network namespace of its
//! own (so it never disturbs a node's guests), one VM from the standard image
//! with a raw virtio data disk, driven over its HTTP CGI from inside the namespace.

use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::{Workload, parse_result};
use crate::hypervisor::Host;
use crate::hypervisor::accel::Accel;
use crate::hypervisor::daemon::{DaemonConfig, PrivateDaemon};
use crate::hypervisor::domain::{DomainSpec, raw_disk_xml, with_devices};
use crate::hypervisor::netns::GuestNetwork;
use crate::image::Image;

/// The guest's CGI writes only to a disk carrying this serial: a VM's real data
/// disk can never be overwritten through it.
pub const SCRATCH_SERIAL: &str = "pvbench-scratch";

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// One workload run in the guest; generous because TCG is slow.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

pub struct BenchGuest {
    name: String,
    addr: SocketAddr,
    network: GuestNetwork,
    host: Option<Host>,
    daemon: Option<PrivateDaemon>,
}

impl BenchGuest {
    pub async fn boot(
        bench_dir: &Path,
        accel: Accel,
        image: &Image,
        disk: &Path,
    ) -> Result<BenchGuest> {
        let devices = raw_disk_xml(disk, "vda", SCRATCH_SERIAL);
        BenchGuest::boot_with(bench_dir, accel, image, devices).await
    }

    /// The same guest with other devices (`<disk>` elements ...). A disk the
    /// guest must leave alone carries the serial [`SCRATCH_SERIAL`].
    pub async fn boot_with(
        bench_dir: &Path,
        accel: Accel,
        image: &Image,
        devices: String,
    ) -> Result<BenchGuest> {
        let pid = std::process::id();
        let network = GuestNetwork::named(&format!("pvbench-{pid}"));
        let mut guest = BenchGuest {
            name: format!("pv-bench-{pid}"),
            addr: SocketAddr::from(([0, 0, 0, 0], 80)),
            network: network.clone(),
            host: None,
            daemon: None,
        };
        // From here on, `shutdown` (or drop) undoes whatever was made.
        let net = network.clone();
        tokio::task::spawn_blocking(move || net.ensure())
            .await?
            .context("setting up the benchmark's network namespace")?;
        let daemon_config = DaemonConfig {
            dir: bench_dir.join("libvirt"),
            netns: network.netns.clone(),
            bridge_ip: network.gateway,
            migration_ports: (49900, 49909),
        };
        let daemon =
            tokio::task::spawn_blocking(move || PrivateDaemon::start(&daemon_config)).await?;
        let daemon = match daemon {
            Ok(d) => d,
            Err(e) => {
                guest.shutdown().await;
                return Err(e);
            }
        };
        let uri = daemon.uri();
        guest.daemon = Some(daemon);
        if let Err(e) = guest.define_and_wait(&uri, accel, image, devices).await {
            guest.shutdown().await;
            return Err(e);
        }
        Ok(guest)
    }

    async fn define_and_wait(
        &mut self,
        uri: &str,
        accel: Accel,
        image: &Image,
        devices: String,
    ) -> Result<()> {
        let host = Host::open(uri).await?;
        self.host = Some(host.clone());
        let uuid = crate::hypervisor::domain::new_uuid();
        let ip = self.network.guest_ip_for(&uuid);
        self.addr = SocketAddr::from((ip, 80));
        let console_dir = crate::paths::console_log_dir();
        std::fs::create_dir_all(&console_dir)
            .with_context(|| format!("creating {}", console_dir.display()))?;
        let spec = DomainSpec {
            name: self.name.clone(),
            network: self.network.nic(&uuid, ip),
            uuid,
            vcpus: 1,
            memory_mib: 256,
            accel,
            kernel: image.kernel.clone(),
            initrd: image.initrd.clone(),
            console_log: console_dir.join(format!("{}.log", self.name)),
            image: image.name.clone(),
            services: Vec::new(),
            // Our raw scratch disk is added below (cache=none, its own serial),
            // not the qcow2 data disk the guest's init would format and mount.
            data_disk: None,
            firmware: crate::hypervisor::domain::fast_firmware(),
            boot_disk: None,
        };
        let xml = with_devices(&spec.to_xml(), &devices);
        host.create_from_xml(&self.name, xml).await?;
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            match self.get("/", Duration::from_secs(5)).await {
                Ok(body) if body.contains("peervisor guest") => return Ok(()),
                _ if Instant::now() > deadline => bail!(
                    "benchmark guest did not answer on {} within {:?} (serial log: {})",
                    self.addr,
                    BOOT_TIMEOUT,
                    spec.console_log.display()
                ),
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// The guest's libvirt connection and domain name.
    pub fn host(&self) -> Option<(&Host, &str)> {
        self.host.as_ref().map(|h| (h, self.name.as_str()))
    }

    /// A probe for `GapProbe`: whether the guest's HTTP server answers `GET /`
    /// within `timeout`.
    pub fn prober(
        &self,
        timeout: Duration,
    ) -> impl Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync + 'static {
        let (network, addr) = (self.network.clone(), self.addr);
        move || {
            let network = network.clone();
            Box::pin(async move { http_get(&network, addr, "/", timeout).await.is_ok() })
        }
    }

    /// Runs one workload on the guest's data disk; returns its elapsed microseconds.
    pub async fn run(&self, w: &Workload) -> Result<u64> {
        let body = self
            .get(
                &format!("/cgi-bin/bench?w={}&n={}", w.name, w.amount),
                RUN_TIMEOUT,
            )
            .await
            .with_context(|| format!("VM {}", w.name))?;
        parse_result(&body, w).with_context(|| format!("VM {}", w.name))
    }

    /// A plain HTTP/1.0 GET from inside the namespace; returns the body. The
    /// connection is made in the namespace, then driven asynchronously, so an
    /// interrupted run never waits on a guest that is gone.
    async fn get(&self, path: &str, timeout: Duration) -> Result<String> {
        http_get(&self.network, self.addr, path, timeout).await
    }

    /// Destroys the VM, stops the daemon, removes the namespace. Never fails.
    pub async fn shutdown(mut self) {
        self.teardown().await;
    }

    async fn teardown(&mut self) {
        if let Some(host) = self.host.take()
            && let Err(e) = host.remove(&self.name).await
        {
            tracing::warn!("removing the benchmark guest: {e:#}");
        }
        if let Some(mut daemon) = self.daemon.take() {
            let _ = tokio::task::spawn_blocking(move || daemon.stop()).await;
        }
        let net = self.network.clone();
        let _ = tokio::task::spawn_blocking(move || net.remove()).await;
        let _ = std::fs::remove_file(
            crate::paths::console_log_dir().join(format!("{}.log", self.name)),
        );
    }
}

async fn http_get(
    network: &GuestNetwork,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let network = network.clone();
    let std_stream: TcpStream =
        tokio::task::spawn_blocking(move || network.connect(addr, Duration::from_secs(3)))
            .await??;
    std_stream.set_nonblocking(true)?;
    let mut s = tokio::net::TcpStream::from_std(std_stream)?;
    let exchange = async {
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: guest\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow!("guest gave no answer within {timeout:?}"))??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    // CGI headers may end lines with a bare \n: split at the first blank line.
    let (head, body) = split_head(&text)
        .ok_or_else(|| anyhow!("malformed HTTP reply from the guest: {text:?}"))?;
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1) != Some("200") {
        bail!("guest answered {:?}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// (head, body) of an HTTP reply, at the first empty line (CRLF or LF).
fn split_head(text: &str) -> Option<(&str, &str)> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        offset += line.len();
        if line.trim_end_matches(['\r', '\n']).is_empty() {
            return Some((&text[..offset - line.len()], &text[offset..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_split_at_the_first_blank_line() {
        let r = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\n\nresult x\n";
        let (head, body) = split_head(r).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"));
        assert_eq!(body, "result x\n");
        assert_eq!(split_head("HTTP/1.0 200 OK\r\n\r\nhi").unwrap().1, "hi");
        assert!(split_head("HTTP/1.0 200 OK\r\n").is_none());
    }
}
