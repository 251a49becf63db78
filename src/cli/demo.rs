//! `peervisor demo`: a local overlay of several peers on this machine, each a
//! separate `peervisor node` process with its own data dir and libvirt daemon, a
//! guest booted on the first, and the console attached to it. Quitting stops every
//! process and VM the demo started.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::cli::DemoArgs;
use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::hypervisor::accel::AccelChoice;
use crate::hypervisor::netns::GuestNetwork;
use crate::node::identity::NetworkKeySource;
use crate::paths::DataDir;
use crate::rig::{
    NodeCommand, NodeProcess, ensure_image, free_ports, stop_nodes, terminate_and_wait,
};

const DEMO_NETNS: &str = "peervisor-demo";
const DEMO_VM: &str = "web-1";
const PIDS_FILE: &str = "pids";

pub async fn run(args: DemoArgs) -> Result<()> {
    let root = DataDir::user_root().join("demo");
    if args.stop {
        return stop_detached(&root);
    }
    if !(2..=8).contains(&args.peers) {
        bail!("--peers must be between 2 and 8, got {}", args.peers);
    }
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let image_dir = args
        .image_dir
        .clone()
        .unwrap_or_else(crate::image::default_image_dir);
    ensure_image(&image_dir).await?;

    let mut demo = Demo::start(&root, args.peers, &image_dir, args.accel)?;
    let outcome = demo.bring_up().await;
    if let Err(e) = outcome {
        demo.stop();
        return Err(e);
    }
    if args.no_console {
        let first = demo.nodes[0].dir.root().display().to_string();
        demo.detach(&root)?;
        println!(
            "demo running: {} peers, VM '{DEMO_VM}' on peer-a. Attach with `peervisor --attach {first}`, stop with `peervisor demo --stop`.",
            args.peers
        );
        return Ok(());
    }
    let first = demo.nodes[0].dir.clone();
    let console = crate::console::attach(&first, &args.look.look()).await;
    eprintln!("demo: stopping peers and VMs…");
    demo.stop();
    console
}

struct Demo {
    nodes: Vec<NodeProcess>,
}

fn nick(i: usize) -> String {
    format!("peer-{}", (b'a' + i as u8) as char)
}

impl Demo {
    fn start(root: &Path, peers: usize, image_dir: &Path, accel: AccelChoice) -> Result<Demo> {
        let dirs: Vec<DataDir> = (0..peers)
            .map(|i| DataDir::new(root.join(nick(i))))
            .collect();
        for dir in &dirs {
            if ControlClient::new(&dir.control_socket()).blocking_alive() {
                bail!(
                    "a demo is already running ({}); stop it with `peervisor demo --stop`",
                    dir.root().display()
                );
            }
        }
        let key_file = root.join("network.key");
        let key = NetworkKeySource::File(key_file.clone());
        if !key_file.exists() {
            crate::node::identity::load_or_create_network_key(root, None)?;
        }
        let ports = free_ports(peers)?;
        let mut demo = Demo { nodes: Vec::new() };
        for (i, dir) in dirs.into_iter().enumerate() {
            let mut command = NodeCommand::new(dir, &nick(i), ports[i], &key)?
                .args(["--guest-netns", DEMO_NETNS])
                .arg("--image-dir")
                .arg(image_dir)
                .args(["--accel", &accel_arg(accel)])
                .arg("--destroy-vms-on-exit")
                // The terminal's Ctrl-C must not kill peers before they have
                // stopped their VMs; the demo stops them itself.
                .own_process_group();
            if i > 0 {
                command = command.bootstrap(ports[0]);
            }
            match command.spawn() {
                Ok(node) => demo.nodes.push(node),
                Err(e) => {
                    demo.stop();
                    return Err(e);
                }
            }
        }
        Ok(demo)
    }

    async fn bring_up(&mut self) -> Result<()> {
        eprintln!("demo: starting {} peers…", self.nodes.len());
        for node in &mut self.nodes {
            let client = ControlClient::new(&node.dir.control_socket());
            let answers = || async { client.call(&Request::Status).await.is_ok() };
            node.wait_until(Duration::from_secs(60), answers).await?;
        }
        let first = ControlClient::new(&self.nodes[0].dir.control_socket());
        let want = self.nodes.len() - 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Reply::Status(s) = first.call(&Request::Status).await? {
                let connected = s.peers.iter().filter(|p| p.connected).count();
                if connected >= want {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("only {connected} of {want} peers joined peer-a within 30 s");
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.grant_control_to_each_other().await?;
        eprintln!("demo: overlay formed; booting VM '{DEMO_VM}' on peer-a…");
        first
            .call(&Request::VmCreate {
                name: DEMO_VM.into(),
                vcpus: 1,
                memory_mib: 128,
                image: crate::image::DEFAULT_IMAGE.into(),
                services: Vec::new(),
                data_disk_mib: None,
                nic: None,
                disk: None,
                no_overlay: false,
                user_data: None,
            })
            .await?;
        Ok(())
    }

    /// Demo peers are one operator's hosts: each lets the others migrate VMs in.
    async fn grant_control_to_each_other(&self) -> Result<()> {
        let mut ids = Vec::new();
        for node in &self.nodes {
            let client = ControlClient::new(&node.dir.control_socket());
            if let Reply::Status(s) = client.call(&Request::Status).await? {
                ids.push(s.local.peer_id);
            }
        }
        for node in &self.nodes {
            let client = ControlClient::new(&node.dir.control_socket());
            for id in &ids {
                client
                    .call(&Request::PeersAllow {
                        peer: id.as_str().into(),
                        role: crate::control::Role::Control,
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// Leaves the peers running and records their pids for `demo --stop`.
    fn detach(self, root: &Path) -> Result<()> {
        let pids: Vec<String> = self.nodes.iter().map(|n| n.pid().to_string()).collect();
        std::fs::write(root.join(PIDS_FILE), pids.join("\n"))?;
        Ok(())
    }

    fn stop(&mut self) {
        stop_nodes(&mut self.nodes);
        let _ = GuestNetwork::named(DEMO_NETNS).remove();
    }
}

fn accel_arg(accel: AccelChoice) -> String {
    match accel {
        AccelChoice::Auto => "auto".into(),
        AccelChoice::Force(a) => a.to_string(),
    }
}

fn stop_detached(root: &Path) -> Result<()> {
    let file = root.join(PIDS_FILE);
    let text = std::fs::read_to_string(&file)
        .map_err(|_| anyhow!("no detached demo is running (no {})", file.display()))?;
    let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    terminate_and_wait(&pids);
    let _ = std::fs::remove_file(&file);
    let _ = GuestNetwork::named(DEMO_NETNS).remove();
    println!("demo stopped");
    Ok(())
}
