//! A private libvirtd per peer, so several peers on one machine behave as
//! separate libvirt hosts (distinct host_uuid, state, sockets, migration ports).
//!
//! The daemon runs inside the guest network namespace (its tap devices land on
//! the shared bridge) and in a private mount namespace where per-peer
//! directories are bind-mounted over libvirt's fixed paths:
//!
//! ```text
//! <dir>/etc   -> /etc/libvirt        (libvirtd.conf, qemu.conf, domain XML)
//! <dir>/run   -> /run/libvirt
//! <dir>/lib   -> /var/lib/libvirt
//! <dir>/cache -> /var/cache/libvirt
//! <dir>/log   -> /var/log/libvirt    (libvirtd.log, libvirtd.stderr, qemu/*.log)
//! <dir>/sock/libvirt-sock            (not under a bind mount: same path inside and out)
//! <dir>/libvirtd.pid, <dir>/host-uuid
//! ```
//!
//! A daemon left running by an earlier run of the same dir is stopped before a
//! new one starts (fresh config, and we own the child). QEMU guests survive a
//! daemon stop/restart: the next daemon reattaches to them.

use anyhow::{Context, Result, anyhow, bail};
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// (subdir of the peer dir, libvirt path it replaces in the daemon's mount ns)
const BIND_MOUNTS: &[(&str, &str)] = &[
    ("etc", "/etc/libvirt"),
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("cache", "/var/cache/libvirt"),
    ("log", "/var/log/libvirt"),
];

const START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs in the netns (via `ip netns exec`, which also unshares the mount ns),
/// bind-mounts the peer dirs, then becomes libvirtd (the child of our reaper,
/// reaper.rs, which is our child).
/// Args: libvirtd conf pidfile [src target]...
const LAUNCH_SCRIPT: &str = r#"set -e
libvirtd=$1 conf=$2 pid=$3
shift 3
mount --make-rprivate /
while [ $# -gt 0 ]; do
  mkdir -p "$2"
  mount --bind "$1" "$2"
  shift 2
done
exec "$libvirtd" --config "$conf" --pid-file "$pid"
"#;

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Per-peer state, e.g. `<data-dir>/libvirt`.
    pub dir: PathBuf,
    /// Network namespace the daemon (and its guests) live in.
    pub netns: String,
    /// Bridge address in that namespace; used as the migration address
    /// (libvirt refuses loopback there).
    pub bridge_ip: Ipv4Addr,
    /// Inclusive range for incoming (non-tunnelled) QEMU migration streams.
    pub migration_ports: (u16, u16),
}

#[derive(Debug)]
pub struct PrivateDaemon {
    /// What it was started with (`dir` made absolute), for a restart.
    config: DaemonConfig,
    dir: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
}

impl PrivateDaemon {
    /// Writes the config, starts libvirtd and waits until its socket accepts.
    pub fn start(cfg: &DaemonConfig) -> Result<PrivateDaemon> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("a private libvirtd needs root (mount and network namespaces)");
        }
        let libvirtd = find_binary(
            "libvirtd",
            &["/usr/sbin", "/sbin", "/usr/bin", "/usr/local/sbin"],
        )
        .ok_or_else(|| {
            anyhow!("libvirtd not found: run scripts/setup.sh (installs libvirt-daemon)")
        })?;
        let netns_path = Path::new("/run/netns").join(&cfg.netns);
        if !netns_path.exists() {
            bail!(
                "network namespace {} missing ({}): create it with GuestNetwork::ensure",
                cfg.netns,
                netns_path.display()
            );
        }
        let dir = std::path::absolute(&cfg.dir)
            .with_context(|| format!("resolving {}", cfg.dir.display()))?;
        for sub in BIND_MOUNTS.iter().map(|(s, _)| *s).chain(["sock"]) {
            let p = dir.join(sub);
            fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        }
        stop_stale(&dir)?;
        stop_orphan_probes(&dir);
        write_config(&dir, cfg)?;
        let socket = dir.join("sock/libvirt-sock");
        let _ = fs::remove_file(&socket); // so a connect means *this* daemon is up
        let child = spawn(&libvirtd, &dir, &cfg.netns)?;
        let mut daemon = PrivateDaemon {
            config: DaemonConfig {
                dir: dir.clone(),
                ..cfg.clone()
            },
            dir,
            socket,
            child: Some(child),
        };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    pub fn uri(&self) -> String {
        format!("qemu+unix:///system?socket={}", self.socket.display())
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// None while the daemon runs; else how it ended (it is reaped here).
    pub fn exit_status(&mut self) -> Option<String> {
        let Some(child) = self.child.as_mut() else {
            return Some("stopped".into());
        };
        match child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => {
                self.child = None;
                Some(status.to_string())
            }
            Err(e) => Some(format!("cannot tell ({e})")),
        }
    }

    /// Starts the daemon again with the same directories and config (after it
    /// died). Running guests survive: the new daemon reattaches to their QEMUs.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        *self = PrivateDaemon::start(&self.config)?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after 10 s. Guests keep running. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: signalling our own child (the reaper, which passes it on to
        // libvirtd), which we have not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(dir = %self.dir.display(), "libvirtd ignored SIGTERM for 10 s; killing it");
        if let Some(daemon) = daemon_pid(&self.dir) {
            // SAFETY: a signal to the libvirtd that pid file and cmdline name.
            unsafe { libc::kill(daemon, libc::SIGKILL) };
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().context("daemon already stopped")?;
            if let Some(status) = child.try_wait().context("waiting for libvirtd")? {
                self.child = None;
                bail!(
                    "libvirtd for {} exited during startup ({status}):\n{}",
                    self.dir.display(),
                    log_tail(&self.dir)
                );
            }
            if UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                bail!(
                    "libvirtd for {} did not open {} within {:?}:\n{}",
                    self.dir.display(),
                    self.socket.display(),
                    START_TIMEOUT,
                    log_tail(&self.dir)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(libvirtd: &Path, dir: &Path, netns: &str) -> Result<Child> {
    let stderr_path = dir.join("log/libvirtd.stderr");
    let stderr = fs::File::create(&stderr_path)
        .with_context(|| format!("creating {}", stderr_path.display()))?;
    // Under the reaper, so the QEMUs libvirtd daemonizes are reaped at once.
    let mut cmd = super::reaper::command(super::netns::ip_binary().as_os_str())
        .context("locating the peervisor binary (the reaper libvirtd runs under)")?;
    cmd.args(["netns", "exec", netns, "sh", "-c", LAUNCH_SCRIPT, "sh"])
        .arg(libvirtd)
        .arg(dir.join("etc/libvirtd.conf"))
        .arg(dir.join("libvirtd.pid"));
    for (sub, target) in BIND_MOUNTS {
        cmd.arg(dir.join(sub)).arg(target);
    }
    cmd.stdin(Stdio::null())
        .stdout(stderr.try_clone().context("duplicating log fd")?)
        .stderr(stderr)
        // Own process group: a Ctrl-C in our terminal must not kill the daemon
        // behind our back; stop() shuts it down in order.
        .process_group(0);
    cmd.spawn()
        .with_context(|| format!("spawning libvirtd in netns {netns} for {}", dir.display()))
}

/// Where, under a private daemon's dir, QEMU finds the certificates of a TLS
/// migration (ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem,
/// client-key.pem), if any. Peervisor migrates over the encrypted overlay and
/// needs none; the migration benchmark makes them for its `--direct tls` baseline.
pub const TLS_DIR: &str = "tls";

fn write_config(dir: &Path, cfg: &DaemonConfig) -> Result<()> {
    let uuid = host_uuid(dir)?;
    let libvirtd_conf = format!(
        "# Written by peervisor at each start; edits are lost.\n\
         unix_sock_dir = \"{sock}\"\n\
         unix_sock_ro_perms = \"0777\"\n\
         unix_sock_rw_perms = \"0700\"\n\
         unix_sock_admin_perms = \"0700\"\n\
         auth_unix_ro = \"none\"\n\
         auth_unix_rw = \"none\"\n\
         host_uuid = \"{uuid}\"\n\
         log_outputs = \"3:file:{log}\"\n",
        sock = dir.join("sock").display(),
        log = dir.join("log/libvirtd.log").display(),
    );
    let (port_min, port_max) = cfg.migration_ports;
    if port_min == 0 || port_min > port_max {
        bail!("invalid migration port range {port_min}-{port_max}");
    }
    // root/no security driver/no namespaces: no libvirt-qemu user, no labels;
    // stdio to files: no virtlogd. No dynamic ownership: QEMU as root needs
    // no chown, and a shared image another daemon (the host's own, running
    // QEMU as libvirt-qemu) has relabelled must not make our start fail with
    // "Setting different DAC user or group ... already in use".
    let qemu_conf = format!(
        "# Written by peervisor at each start; edits are lost.\n\
         user = \"root\"\n\
         group = \"root\"\n\
         dynamic_ownership = 0\n\
         stdio_handler = \"file\"\n\
         security_driver = \"none\"\n\
         namespaces = [ ]\n\
         migration_address = \"{ip}\"\n\
         migration_host = \"{ip}\"\n\
         migration_port_min = {port_min}\n\
         migration_port_max = {port_max}\n",
        ip = cfg.bridge_ip,
    );
    let tls = dir.join(TLS_DIR);
    let qemu_conf = if tls.join("ca-cert.pem").exists() {
        format!(
            "{qemu_conf}migrate_tls_x509_cert_dir = \"{}\"\nmigrate_tls_x509_verify = 1\n",
            tls.display()
        )
    } else {
        qemu_conf
    };
    write(&dir.join("etc/libvirtd.conf"), &libvirtd_conf)?;
    write(&dir.join("etc/qemu.conf"), &qemu_conf)
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The peer's libvirt host UUID, made once and kept in `<dir>/host-uuid`.
fn host_uuid(dir: &Path) -> Result<String> {
    let path = dir.join("host-uuid");
    if let Ok(text) = fs::read_to_string(&path) {
        let uuid = text.trim();
        if is_uuid(uuid) {
            return Ok(uuid.to_string());
        }
    }
    let uuid = super::domain::new_uuid();
    write(&path, &format!("{uuid}\n"))?;
    Ok(uuid)
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// The pid of the libvirtd running for this dir, from its pid file; None if
/// there is none (the pid may have been reused: only a libvirtd using our config).
fn daemon_pid(dir: &Path) -> Option<libc::pid_t> {
    let text = fs::read_to_string(dir.join("libvirtd.pid")).ok()?;
    let pid = text.trim().parse::<libc::pid_t>().ok()?;
    let conf = dir.join("etc/libvirtd.conf");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    (pid > 1 && cmdline.contains("libvirtd") && cmdline.contains(&*conf.to_string_lossy()))
        .then_some(pid)
}

/// Stops a libvirtd an earlier run started for this dir, if it still runs.
fn stop_stale(dir: &Path) -> Result<()> {
    let pid_file = dir.join("libvirtd.pid");
    let Some(pid) = daemon_pid(dir) else {
        return Ok(());
    };
    tracing::info!(pid, dir = %dir.display(), "stopping libvirtd left by an earlier run");
    // SAFETY: plain signals to a pid we just identified as our libvirtd.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while alive(pid) {
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            std::thread::sleep(Duration::from_millis(200));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        bail!(
            "libvirtd pid {pid} (from {}) would not stop",
            pid_file.display()
        );
    }
    Ok(())
}

/// Stops QEMU capability probes (`-machine none`, started by libvirtd to learn
/// what QEMU can do) that a killed daemon left behind: they would wait for it
/// forever. Each has its pid file in `<dir>/lib/qemu/qmp-*/qmp.pid`, a directory
/// libvirtd removes when a probe ends normally.
fn stop_orphan_probes(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir.join("lib/qemu")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("qmp-") {
            continue;
        }
        let pid = fs::read_to_string(entry.path().join("qmp.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<libc::pid_t>().ok());
        if let Some(pid) = pid {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            // Only the probe that pid file names (the pid may have been reused).
            if pid > 1 && cmdline.contains(&name) && cmdline.contains("-machine\0none") {
                tracing::info!(pid, "stopping a QEMU probe left by a killed libvirtd");
                // SAFETY: a signal to the probe process identified above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = fs::remove_dir_all(entry.path());
    }
}

/// Running and not a zombie (a non-child we cannot reap).
fn alive(pid: libc::pid_t) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // state is the field after "(comm)"
        Ok(stat) => {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                != Some('Z')
        }
        Err(_) => false,
    }
}

/// Last lines of the daemon's own log and of its stderr.
fn log_tail(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["log/libvirtd.stderr", "log/libvirtd.log"] {
        let path = dir.join(name);
        let text = fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(15)..];
        if !tail.is_empty() {
            out.push_str(&format!(
                "--- {} ---\n{}\n",
                path.display(),
                tail.join("\n")
            ));
        }
    }
    if out.is_empty() {
        out.push_str("(no log output)");
    }
    out
}

fn find_binary(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .chain(extra_dirs.iter().copied())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_uuids_are_valid_and_distinct() {
        let a = super::super::domain::new_uuid();
        let b = super::super::domain::new_uuid();
        assert!(is_uuid(&a) && is_uuid(&b) && a != b, "{a} {b}");
        assert!(!is_uuid("not-a-uuid"));
    }
}
