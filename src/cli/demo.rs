//! `peervisor demo`: a local overlay of several peers on this machine, each a
//! separate `peervisor node` process with its own data dir and libvirt daemon, a
//! guest booted on the first, and the console attached to it. Quitting stops every
//! process and VM the demo started.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::cli::DemoArgs;
use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::hypervisor::accel::AccelChoice;
use crate::hypervisor::netns::GuestNetwork;
use crate::paths::DataDir;
use crate::rig::{ensure_image, free_ports, log_tail, terminate_and_wait};

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
        let first = demo.dirs[0].root().display().to_string();
        demo.detach(&root)?;
        println!(
            "demo running: {} peers, VM '{DEMO_VM}' on peer-a. Attach with `peervisor --attach {first}`, stop with `peervisor demo --stop`.",
            args.peers
        );
        return Ok(());
    }
    let first = demo.dirs[0].clone();
    let console = crate::console::attach(&first, &args.look.look()).await;
    eprintln!("demo: stopping peers and VMs…");
    demo.stop();
    console
}

struct Demo {
    dirs: Vec<DataDir>,
    children: Vec<Child>,
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
        if !key_file.exists() {
            crate::node::identity::load_or_create_network_key(root, None)?;
        }
        let ports = free_ports(peers)?;
        let exe = std::env::current_exe().context("locating the peervisor binary")?;
        let mut demo = Demo {
            dirs: dirs.clone(),
            children: Vec::new(),
        };
        for (i, dir) in dirs.iter().enumerate() {
            std::fs::create_dir_all(dir.root())?;
            let log = std::fs::File::create(dir.root().join("node.log"))?;
            let mut cmd = Command::new(&exe);
            cmd.arg("node")
                .arg("--data-dir")
                .arg(dir.root())
                .args(["--nick", &nick(i)])
                .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{}", ports[i])])
                .arg("--network-key")
                .arg(&key_file)
                .args(["--guest-netns", DEMO_NETNS])
                .arg("--image-dir")
                .arg(image_dir)
                .args(["--accel", &accel_arg(accel)])
                .arg("--destroy-vms-on-exit");
            if i > 0 {
                cmd.args(["--bootstrap", &format!("/ip4/127.0.0.1/tcp/{}", ports[0])]);
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log));
            // Own process group: the terminal's Ctrl-C must not kill peers before
            // they have stopped their VMs; the demo stops them itself.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            match cmd.spawn() {
                Ok(child) => demo.children.push(child),
                Err(e) => {
                    demo.stop();
                    bail!("starting {}: {e}", exe.display());
                }
            }
        }
        Ok(demo)
    }

    async fn bring_up(&mut self) -> Result<()> {
        eprintln!("demo: starting {} peers…", self.dirs.len());
        for (i, dir) in self.dirs.clone().iter().enumerate() {
            self.wait_for_node(i, dir).await?;
        }
        let first = ControlClient::new(&self.dirs[0].control_socket());
        let want = self.dirs.len() - 1;
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
            })
            .await?;
        Ok(())
    }

    /// Demo peers are one operator's hosts: each lets the others migrate VMs in.
    async fn grant_control_to_each_other(&self) -> Result<()> {
        let mut ids = Vec::new();
        for dir in &self.dirs {
            let client = ControlClient::new(&dir.control_socket());
            if let Reply::Status(s) = client.call(&Request::Status).await? {
                ids.push(s.local.peer_id);
            }
        }
        for dir in &self.dirs {
            let client = ControlClient::new(&dir.control_socket());
            for id in &ids {
                client
                    .call(&Request::PeersAllow {
                        peer: id.clone(),
                        role: crate::control::Role::Control,
                    })
                    .await?;
            }
        }
        Ok(())
    }

    async fn wait_for_node(&mut self, i: usize, dir: &DataDir) -> Result<()> {
        let client = ControlClient::new(&dir.control_socket());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if client.call(&Request::Status).await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.children[i].try_wait() {
                bail!(
                    "{} exited ({status}) during start-up:\n{}",
                    nick(i),
                    log_tail(&dir.root().join("node.log"))
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not start within 60 s:\n{}",
                    nick(i),
                    log_tail(&dir.root().join("node.log"))
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Leaves the peers running and records their pids for `demo --stop`.
    fn detach(mut self, root: &Path) -> Result<()> {
        let pids: Vec<String> = self.children.iter().map(|c| c.id().to_string()).collect();
        std::fs::write(root.join(PIDS_FILE), pids.join("\n"))?;
        self.children.clear();
        Ok(())
    }

    fn stop(&mut self) {
        let pids: Vec<u32> = self.children.iter().map(|c| c.id()).collect();
        terminate_and_wait(&pids);
        for child in &mut self.children {
            let _ = child.wait();
        }
        self.children.clear();
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
