//! The benchmark's three `peervisor node` processes (two hosting nodes and a
//! consumer), and the TLS certificates `--direct tls` gives their daemons.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{CONSUMER, Direct, NETNS, NICKS, Options, disk_dir_of};
use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::hypervisor::netns::GuestNetwork;
use crate::node::identity::NetworkKeySource;
use crate::paths::DataDir;
use crate::rig::{NodeCommand, NodeProcess, stop_nodes};

/// A CA and one certificate both daemons use as TLS server and client for
/// `--direct tls`, naming the daemons' migration address (the bench namespace's
/// bridge). Made with openssl, valid for two days.
fn make_tls_certs(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let address = GuestNetwork::named(NETNS).gateway;
    std::fs::write(
        dir.join("ext.cnf"),
        format!(
            "subjectAltName = IP:{address}, IP:127.0.0.1, DNS:localhost\n\
             extendedKeyUsage = serverAuth, clientAuth\n\
             keyUsage = critical, digitalSignature, keyEncipherment\n"
        ),
    )?;
    const EC_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let steps = [
        format!(
            "req -x509 {EC_KEY} -keyout ca-key.pem -out ca-cert.pem -days 2 \
             -subj /CN=peervisor-bench-ca -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign"
        ),
        format!(
            "req {EC_KEY} -keyout server-key.pem -out server.csr -subj /CN=peervisor-bench-daemon"
        ),
        "x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \
         -out server-cert.pem -days 2 -extfile ext.cnf"
            .to_string(),
    ];
    for step in steps {
        let out = Command::new("openssl")
            .args(step.split_whitespace())
            .current_dir(dir)
            .output()
            .context("running openssl (needed by --direct tls)")?;
        if !out.status.success() {
            bail!(
                "openssl {step}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    for (from, to) in [
        ("server-cert.pem", "client-cert.pem"),
        ("server-key.pem", "client-key.pem"),
    ] {
        std::fs::copy(dir.join(from), dir.join(to))?;
    }
    Ok(())
}

/// Copies what a daemon needs of the run's certificates into its TLS dir.
fn install_certs(certs: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for file in [
        "ca-cert.pem",
        "server-cert.pem",
        "server-key.pem",
        "client-cert.pem",
        "client-key.pem",
    ] {
        std::fs::copy(certs.join(file), to.join(file))
            .with_context(|| format!("copying {file} to {}", to.display()))?;
    }
    Ok(())
}

/// The three node processes of the benchmark.
pub(super) struct Nodes {
    root: PathBuf,
    nodes: Vec<NodeProcess>,
}

impl Nodes {
    pub(super) fn start(opts: &Options) -> Result<Nodes> {
        let _ = std::fs::remove_dir_all(&opts.root);
        std::fs::create_dir_all(&opts.root)
            .with_context(|| format!("creating {}", opts.root.display()))?;
        crate::node::identity::load_or_create_network_key(&opts.root, None)?;
        let key = NetworkKeySource::File(opts.root.join("network.key"));
        let ports = crate::rig::free_ports(3)?;
        let certs = opts.root.join("tls");
        if opts.direct == Direct::Tls {
            make_tls_certs(&certs)?;
        }
        let mut nodes = Nodes {
            root: opts.root.clone(),
            nodes: Vec::new(),
        };
        for (i, nick) in NICKS.iter().chain([&CONSUMER]).enumerate() {
            let dir = DataDir::new(opts.root.join(nick));
            std::fs::create_dir_all(dir.root())?;
            if opts.direct == Direct::Tls && *nick != CONSUMER {
                let tls = dir.libvirt_dir().join(crate::hypervisor::daemon::TLS_DIR);
                install_certs(&certs, &tls)?;
            }
            let mut command = NodeCommand::new(dir.clone(), nick, ports[i], &key)?
                .args(["--guest-netns", NETNS])
                .arg("--image-dir")
                .arg(&opts.image_dir)
                .args(["--accel", &opts.accel])
                .arg("--destroy-vms-on-exit")
                // Ctrl-C reaches the benchmark, which stops them.
                .own_process_group();
            if opts.data_disk_mib.is_some() {
                let disks = disk_dir_of(&dir);
                std::fs::create_dir_all(&disks)?;
                command = command.arg("--disk-dir").arg(disks);
            }
            if *nick == CONSUMER {
                // Hosts nothing: libvirt's test driver spares a daemon.
                command = command.args(["--hypervisor", "test:///default"]);
            }
            if i > 0 {
                command = command.bootstrap(ports[0]);
            }
            match command.spawn() {
                Ok(node) => nodes.nodes.push(node),
                Err(e) => {
                    nodes.stop();
                    return Err(e);
                }
            }
        }
        Ok(nodes)
    }

    /// The nodes' data dirs: the two hosting nodes', then the consumer's.
    pub(super) fn dirs(&self) -> Vec<DataDir> {
        self.nodes.iter().map(|n| n.dir.clone()).collect()
    }

    /// Waits for the control sockets and the overlay, then lets the two hosting
    /// nodes migrate VMs into each other.
    pub(super) async fn wait_ready(&mut self) -> Result<Vec<ControlClient>> {
        eprintln!("bench: starting three nodes…");
        let clients: Vec<ControlClient> = self
            .nodes
            .iter()
            .map(|n| ControlClient::new(&n.dir.control_socket()))
            .collect();
        let mut ids = Vec::new();
        for (node, client) in self.nodes.iter_mut().zip(&clients) {
            let answers = || async { client.call(&Request::Status).await.is_ok() };
            node.wait_until(Duration::from_secs(60), answers).await?;
            if let Reply::Status(s) = client.call(&Request::Status).await? {
                ids.push(s.local.peer_id);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Reply::Status(s) = clients[0].call(&Request::Status).await?
                && s.peers.iter().filter(|p| p.connected).count() == 2
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("the three nodes did not connect within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for (i, client) in clients.iter().take(2).enumerate() {
            client
                .call(&Request::PeersAllow {
                    peer: ids[1 - i].as_str().into(),
                    role: crate::control::Role::Control,
                })
                .await?;
        }
        Ok(clients)
    }

    /// SIGTERM: each node destroys its VMs and stops its libvirtd.
    pub(super) fn stop(&mut self) {
        let logs: Vec<(String, PathBuf)> = self
            .nodes
            .iter()
            .map(|n| (n.nick.clone(), n.log()))
            .collect();
        stop_nodes(&mut self.nodes);
        let _ = GuestNetwork::named(NETNS).remove();
        self.keep_logs(&logs);
        let _ = std::fs::remove_dir_all(&self.root);
    }

    /// Copies the nodes' logs (each migration's phases are there) next to the
    /// data dirs that are about to go.
    fn keep_logs(&self, logs: &[(String, PathBuf)]) {
        let Some(parent) = self.root.parent() else {
            return;
        };
        for (nick, log) in logs {
            let kept = parent.join(format!("migrate-{nick}.log"));
            if std::fs::copy(log, &kept).is_ok() {
                eprintln!("bench: {nick}'s log kept in {}", kept.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_certificates_chain_to_the_ca_and_name_the_migration_address() {
        let dir = tempfile::tempdir().unwrap();
        make_tls_certs(dir.path()).unwrap();
        let to = dir.path().join("daemon");
        install_certs(dir.path(), &to).unwrap();
        let verify = Command::new("openssl")
            .args(["verify", "-purpose", "sslserver", "-CAfile", "ca-cert.pem"])
            .args(["server-cert.pem", "client-cert.pem"])
            .current_dir(&to)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        let text = Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-ext",
                "subjectAltName,extendedKeyUsage",
                "-in",
            ])
            .arg(to.join("server-cert.pem"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        let gateway = GuestNetwork::named(NETNS).gateway;
        assert!(text.contains(&format!("IP Address:{gateway}")), "{text}");
        assert!(text.contains("TLS Web Client Authentication"), "{text}");
    }
}
