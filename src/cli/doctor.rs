//! `peervisor doctor`: is this host ready to run a node, and is its node well?
//! One line per check (ok, warn or FAIL) with a fix for what is wrong; the exit
//! status is 1 when a check failed. A running node is asked (its ports, peers,
//! libvirt link); without one, what the config file would start is checked.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde::Serialize;

use super::NodeArgs;
use super::config::{self, Globals};
use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::hypervisor::accel::{Accel, AccelChoice};
use crate::model::Status;
use crate::node::identity::{IDENTITY_FILE, NETWORK_KEY_ENV, NETWORK_KEY_FILE};
use crate::paths::DataDir;

/// Free space below which a check fails (guests' disks, images), and warns.
const DISK_FAIL_MIB: u64 = 1024;
const DISK_WARN_MIB: u64 = 5 * 1024;
/// How long a bootstrap peer may take to accept a TCP connection.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    verdict: Verdict,
    detail: String,
    /// What to do about a warning or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        verdict: Verdict::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        verdict: Verdict::Warn,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        verdict: Verdict::Fail,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// `peervisor doctor [--json]`.
pub async fn run(globals: &Globals, json: bool) -> Result<()> {
    let checks = checks(globals).await;
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "checks": checks,
                "failed": failed,
            }))?
        );
    } else {
        print!("{}", text(&checks));
    }
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

fn text(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let verdict = match c.verdict {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        out += &format!("{verdict:<5} {:<width$}  {}\n", c.name, c.detail);
        if let Some(fix) = &c.fix {
            out += &format!("      {:<width$}  fix: {fix}\n", "");
        }
    }
    out
}

async fn checks(globals: &Globals) -> Vec<Check> {
    let mut checks = Vec::new();
    // A bad config file is a failure here, not a reason to stop checking.
    let (data_dir, node) = match globals.in_force().and_then(|(dir, file)| {
        let node = config::node_args(&config::empty_matches(), file.as_ref())?;
        Ok((dir, file, node))
    }) {
        Ok((dir, file, node)) => {
            checks.push(match &file {
                Some(file) => ok(
                    "config",
                    format!("{} ({} keys)", file.path().display(), file.len()),
                ),
                None => ok("config", "none: the node's defaults and flags"),
            });
            (dir, node)
        }
        Err(e) => {
            let fix = "correct that line (`peervisor config check` checks the file again)";
            checks.push(fail("config", format!("{e:#}"), fix));
            let node = config::node_args(&config::empty_matches(), None)
                .expect("the node's defaults parse");
            (globals.data_dir_unread(), node)
        }
    };
    let status = running_status(&data_dir).await;
    checks.push(node_check(&data_dir, status.as_ref()));
    checks.push(data_dir_check(&data_dir));
    checks.extend(disk_checks(&data_dir, &node));
    checks.push(network_key_check(&data_dir, &node));
    if let Some(check) = secret_file_check("identity key", &data_dir.root().join(IDENTITY_FILE)) {
        checks.push(check);
    }
    checks.push(accel_check(&node, status.as_ref()));
    checks.push(libvirt_check(&node, status.as_ref()));
    checks.push(ports_check(&node, status.as_ref()));
    checks.push(peers_check(&node, status.as_ref()));
    if let Some(check) = clock_check() {
        checks.push(check);
    }
    checks.push(log_check(&data_dir, status.is_some()));
    checks
}

async fn running_status(data_dir: &DataDir) -> Option<Status> {
    let client = ControlClient::new(&data_dir.control_socket());
    match client.call(&Request::Status).await {
        Ok(Reply::Status(status)) => Some(*status),
        _ => None,
    }
}

fn node_check(data_dir: &DataDir, status: Option<&Status>) -> Check {
    match status {
        Some(s) => ok(
            "node",
            format!(
                "running: {} ({}) on {}",
                s.local.nick,
                s.local.peer_id,
                data_dir.root().display()
            ),
        ),
        None => warn(
            "node",
            format!("none running on {}", data_dir.root().display()),
            "`systemctl start peervisor` (the system node) or `peervisor node`",
        ),
    }
}

fn data_dir_check(data_dir: &DataDir) -> Check {
    let root = data_dir.root();
    if !root.exists() {
        return warn(
            "data dir",
            format!("{} does not exist yet", root.display()),
            "the node makes it at its first start",
        );
    }
    if !root.is_dir() {
        return fail(
            "data dir",
            format!("{} is not a directory", root.display()),
            "move it away, or give another --data-dir",
        );
    }
    match rustix::fs::access(root, rustix::fs::Access::WRITE_OK) {
        Ok(()) => ok("data dir", root.display().to_string()),
        Err(e) => fail(
            "data dir",
            format!("{} is not writable: {e}", root.display()),
            "run as the node's user (root for the system node), or give your own --data-dir",
        ),
    }
}

fn disk_checks(data_dir: &DataDir, node: &NodeArgs) -> Vec<Check> {
    let disks = node.disk_dir.clone().unwrap_or_else(crate::paths::disk_dir);
    let mut dirs: Vec<(&'static str, PathBuf)> = vec![("disk space", data_dir.root().into())];
    dirs.push(("disk space", disks));
    let mut seen = Vec::new();
    let mut checks = Vec::new();
    for (name, dir) in dirs {
        let Some(existing) = dir.ancestors().find(|d| d.exists()).map(Path::to_path_buf) else {
            continue;
        };
        let device = std::fs::metadata(&existing).map(|m| std::os::unix::fs::MetadataExt::dev(&m));
        if let Ok(dev) = device {
            if seen.contains(&dev) {
                continue;
            }
            seen.push(dev);
        }
        let Some(free) = crate::migrate::capacity::free_mib_under(&dir) else {
            continue;
        };
        let detail = format!("{} MiB free under {}", free, dir.display());
        let fix = "free space there (guests' disks and images grow), or move --disk-dir";
        checks.push(if free < DISK_FAIL_MIB {
            fail(name, detail, fix)
        } else if free < DISK_WARN_MIB {
            warn(name, detail, fix)
        } else {
            ok(name, detail)
        });
    }
    checks
}

/// The overlay's key: `--network-key FILE` (config), else the environment, else
/// the data dir's. Present, readable by its owner only, and a key.
fn network_key_check(data_dir: &DataDir, node: &NodeArgs) -> Check {
    const NAME: &str = "network key";
    let path = match &node.network_key {
        Some(file) => file.clone(),
        None => {
            if let Ok(value) = std::env::var(NETWORK_KEY_ENV) {
                return match crate::node::identity::parse_network_key(&value) {
                    Ok(key) => ok(
                        NAME,
                        format!("from {NETWORK_KEY_ENV} (fingerprint {})", key.fingerprint()),
                    ),
                    Err(e) => fail(
                        NAME,
                        format!("{NETWORK_KEY_ENV}: {e:#}"),
                        "set it to the overlay's key (64 hex digits)",
                    ),
                };
            }
            data_dir.root().join(NETWORK_KEY_FILE)
        }
    };
    if !path.exists() {
        return warn(
            NAME,
            format!("{} does not exist", path.display()),
            "`peervisor join TOKEN` (or copy the overlay's key there, mode 0600); \
             a node started without one makes a new overlay's key",
        );
    }
    if let Some(check) = secret_file_check(NAME, &path)
        && check.verdict == Verdict::Fail
    {
        return check;
    }
    match std::fs::read_to_string(&path)
        .map_err(anyhow::Error::from)
        .and_then(|t| crate::node::identity::parse_network_key(&t))
    {
        Ok(key) => ok(
            NAME,
            format!(
                "{} (0600, fingerprint {})",
                path.display(),
                key.fingerprint()
            ),
        ),
        Err(e) => fail(
            NAME,
            format!("{}: {e:#}", path.display()),
            "put the overlay's key there (swarm.key format or 64 hex digits)",
        ),
    }
}

/// A key file other users can read (or write) fails; a missing one is no check.
fn secret_file_check(name: &'static str, path: &Path) -> Option<Check> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    Some(if mode & 0o077 != 0 {
        fail(
            name,
            format!(
                "{} is mode {mode:04o}: other users can read it",
                path.display()
            ),
            format!("chmod 600 {}", path.display()),
        )
    } else {
        ok(name, format!("{} ({mode:04o})", path.display()))
    })
}

fn accel_check(node: &NodeArgs, status: Option<&Status>) -> Check {
    const NAME: &str = "accelerator";
    let fix = "guests run under TCG, many times slower: enable virtualization in the \
               firmware (or nested virtualization for a VM), `modprobe kvm_intel` or \
               `kvm_amd`, and let the node's user open /dev/kvm";
    let (probed, why) = crate::hypervisor::accel::probe();
    if let Some(s) = status {
        return match s.local.accel.as_str() {
            "kvm" => ok(NAME, "kvm (the running node's)"),
            other => warn(NAME, format!("{other} (the running node's): {why}"), fix),
        };
    }
    match (node.accel, probed) {
        (_, Accel::Kvm) => ok(NAME, why),
        (AccelChoice::Force(Accel::Kvm), Accel::Tcg) => fail(
            NAME,
            format!("accel = kvm is set, but {why}"),
            format!("{fix}; or set accel = auto"),
        ),
        (_, Accel::Tcg) => warn(NAME, why, fix),
    }
}

fn libvirt_check(node: &NodeArgs, status: Option<&Status>) -> Check {
    const NAME: &str = "libvirt";
    if let Some(s) = status {
        return match &s.local.libvirt.lost {
            Some(lost) => fail(
                NAME,
                format!("{}: connection lost ({lost:?})", s.local.hypervisor),
                "the node reconnects by itself; if it does not, restart it \
                 (`systemctl restart peervisor`: guests keep running)",
            ),
            None => ok(NAME, format!("{} answering", s.local.hypervisor)),
        };
    }
    match &node.hypervisor {
        Some(uri) if uri.starts_with("test:") => ok(NAME, format!("{uri} (libvirt's test driver)")),
        Some(uri) => {
            let socket = crate::hypervisor::local_socket_for(uri);
            match std::os::unix::net::UnixStream::connect(&socket) {
                Ok(_) => ok(NAME, format!("{uri}: {} accepts", socket.display())),
                Err(e) => fail(
                    NAME,
                    format!("{uri}: {}: {e}", socket.display()),
                    "start it (`systemctl start libvirtd`), or drop `hypervisor` for a \
                     private daemon",
                ),
            }
        }
        None => {
            let missing: Vec<&str> = [
                (
                    "libvirtd",
                    &["/usr/sbin", "/sbin", "/usr/bin", "/usr/local/sbin"][..],
                ),
                ("qemu-system-x86_64", &["/usr/bin", "/usr/local/bin"][..]),
            ]
            .into_iter()
            .filter(|(bin, dirs)| !dirs.iter().any(|d| Path::new(d).join(bin).exists()))
            .map(|(bin, _)| bin)
            .collect();
            if missing.is_empty() {
                ok(
                    NAME,
                    "libvirtd and QEMU installed (the node starts a private daemon)",
                )
            } else {
                fail(
                    NAME,
                    format!("{} not installed", missing.join(" and ")),
                    "apt install libvirt-daemon-system qemu-system-x86 qemu-utils",
                )
            }
        }
    }
}

/// TCP ports of listen addresses: a running node's are listening; else each
/// must be free to bind.
fn ports_check(node: &NodeArgs, status: Option<&Status>) -> Check {
    const NAME: &str = "ports";
    let firewall = |ports: &[u16]| {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        format!(
            "other hosts must reach TCP {} (docs/install.md)",
            list.join(", ")
        )
    };
    if let Some(s) = status {
        let ports: Vec<u16> = s
            .local
            .listen_addrs
            .iter()
            .filter_map(|a| tcp_addr(&a.parse().ok()?).map(|a| a.port()))
            .collect();
        return ok(
            NAME,
            format!(
                "listening on {}; {}",
                s.local.listen_addrs.join(", "),
                firewall(&ports)
            ),
        );
    }
    let mut busy = Vec::new();
    let mut ports = Vec::new();
    for addr in node.listen.iter().filter_map(tcp_addr) {
        ports.push(addr.port());
        if let Err(e) = TcpListener::bind(addr)
            && e.kind() == std::io::ErrorKind::AddrInUse
        {
            busy.push(addr);
        }
    }
    if busy.is_empty() {
        return ok(NAME, format!("free to listen on; {}", firewall(&ports)));
    }
    let list: Vec<String> = busy.iter().map(SocketAddr::to_string).collect();
    fail(
        NAME,
        format!("{} in use by another program", list.join(", ")),
        format!(
            "stop it (`ss -ltnp 'sport = :{}'` shows it), or set `listen` in the config",
            busy[0].port()
        ),
    )
}

/// A running node's connected peers; else whether a bootstrap peer accepts TCP.
fn peers_check(node: &NodeArgs, status: Option<&Status>) -> Check {
    const NAME: &str = "peers";
    let bootstrap: Vec<String> = node.bootstrap.iter().map(Multiaddr::to_string).collect();
    let fix = format!(
        "check that {} run and that their TCP port is open to this host \
         (`peervisor status` shows dial errors)",
        if bootstrap.is_empty() {
            "the other hosts".to_string()
        } else {
            bootstrap.join(", ")
        }
    );
    if let Some(s) = status {
        let connected = s.peers.iter().filter(|p| p.connected).count();
        return match (connected, bootstrap.is_empty()) {
            (0, true) => warn(
                NAME,
                "no peer connected and no bootstrap set (the first host of an overlay?)",
                "`peervisor join TOKEN` on this host, or set `bootstrap` in the config",
            ),
            (0, false) => fail(NAME, "no peer connected", fix),
            (n, _) => ok(NAME, format!("{n} connected")),
        };
    }
    if bootstrap.is_empty() {
        return warn(
            NAME,
            "no bootstrap set: this node will wait for others to dial it",
            "set `bootstrap` in the config to a host of the overlay, or `peervisor join TOKEN`",
        );
    }
    let reachable: Vec<&Multiaddr> = node
        .bootstrap
        .iter()
        .filter(|a| {
            tcp_addr(a).is_some_and(|addr| TcpStream::connect_timeout(&addr, DIAL_TIMEOUT).is_ok())
        })
        .collect();
    match reachable.first() {
        Some(first) => ok(NAME, format!("bootstrap {first} accepts connections")),
        None => fail(
            NAME,
            format!(
                "no bootstrap peer accepts a connection ({})",
                bootstrap.join(", ")
            ),
            fix,
        ),
    }
}

/// The TCP socket address of /ip4|ip6|dns/…/tcp/PORT, if it is one.
fn tcp_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut host = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(ip) => host = Some(ip.to_string()),
            Protocol::Ip6(ip) => host = Some(format!("[{ip}]")),
            Protocol::Dns(h) | Protocol::Dns4(h) | Protocol::Dns6(h) => host = Some(h.to_string()),
            Protocol::Tcp(port) => {
                return format!("{}:{port}", host?).to_socket_addrs().ok()?.next();
            }
            _ => {}
        }
    }
    None
}

/// Invitations expire by the clock: a host whose clock drifts refuses good tokens.
fn clock_check() -> Option<Check> {
    let out = std::process::Command::new("timedatectl")
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => ok("clock", "synchronized (NTP)"),
        _ => warn(
            "clock",
            "not synchronized: invitations expire by it",
            "enable time synchronization (`timedatectl set-ntp true`, or chrony)",
        ),
    })
}

/// Where the logs go: the journal for the service, files for the console's
/// embedded node and for an attached console.
fn log_check(data_dir: &DataDir, running: bool) -> Check {
    let embedded = data_dir.embedded_log();
    let mut detail = String::from("the system node: `journalctl -u peervisor`");
    if embedded.exists() || !running {
        detail += &format!("; the console's embedded node: {}", embedded.display());
    }
    let console = data_dir.console_log();
    if console.exists() {
        detail += &format!("; an attached console: {}", console.display());
    }
    ok("log", detail)
}
