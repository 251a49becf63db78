//! `bench scale --mode real`: `peervisor node` processes (this binary), each in
//! a network namespace of its own whose `eth0` is a veth to a bridge in a hub
//! namespace the harness makes (10.99.0.0/16, nothing else routed). Each node
//! runs on libvirt's test driver (no daemon, no guests) and exposes one legacy
//! service `svc-I`, the product's own path. Traffic is read from the hub end of
//! each veth (packets, bytes), CPU and memory from /proc. A silent leave takes
//! a peer's veth down; the 10% partition moves their veths to a second bridge.
//! Everything made is removed at the end, on error too.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::seq::SliceRandom;

use super::reach::{self, Narrowing};
use super::settle::{self, Progress, Settled, Settling, Verdict};
use super::{Options, Row, load_line, p50_p95};
use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::paths::DataDir;

const PORT: u16 = 7470;
/// How long a publication may take to reach every peer.
const DISCOVERY_BOUND: Duration = Duration::from_secs(30);
/// How often the settling wait asks every peer (n calls of n services).
const LOOK_EVERY: Duration = Duration::from_secs(2);
/// How often it prints a progress line while converging.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

struct RealPeer {
    ns: String,
    hub_if: String,
    ip: Ipv4Addr,
    child: Child,
    control: ControlClient,
}

/// The namespaces, bridges and processes of one run; removed on drop.
struct Lab {
    hub: String,
    tag: String,
    dir: tempfile::TempDir,
    key: String,
    exe: PathBuf,
    peers: Vec<RealPeer>,
    /// The host's ARP table thresholds before the run, restored on drop.
    arp: Option<[u64; 3]>,
}

const ARP_THRESHOLDS: [&str; 3] = [
    "/proc/sys/net/ipv4/neigh/default/gc_thresh1",
    "/proc/sys/net/ipv4/neigh/default/gc_thresh2",
    "/proc/sys/net/ipv4/neigh/default/gc_thresh3",
];

fn read_arp_thresholds() -> Result<[u64; 3]> {
    let mut values = [0; 3];
    for (value, path) in values.iter_mut().zip(ARP_THRESHOLDS) {
        *value = std::fs::read_to_string(path)
            .with_context(|| format!("reading {path}"))?
            .trim()
            .parse()
            .with_context(|| format!("parsing {path}"))?;
    }
    Ok(values)
}

fn write_arp_thresholds(values: [u64; 3]) -> Result<()> {
    // Highest first; the kernel takes the three in any order.
    for (value, path) in values.iter().zip(ARP_THRESHOLDS).rev() {
        std::fs::write(path, value.to_string()).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Lab {
    /// `peers`: how many processes the run starts (the ARP table is raised
    /// to hold every pair: reach::arp_thresholds).
    fn new(peers: usize) -> Result<Lab> {
        let tag = format!("pvs{}", std::process::id());
        let hub = format!("{tag}-hub");
        let mut lab = Lab {
            hub: hub.clone(),
            tag,
            dir: tempfile::tempdir()?,
            key: hex::encode(rand::random::<[u8; 32]>()),
            exe: std::env::current_exe()?,
            peers: Vec::new(),
            arp: None,
        };
        let before = read_arp_thresholds()?;
        let wanted = reach::arp_thresholds(peers, before);
        if wanted != before {
            write_arp_thresholds(wanted)?;
            lab.arp = Some(before);
            eprintln!(
                "real {peers}: the host's ARP table (one for every namespace) raised from {} to {} entries for the run",
                before[2], wanted[2]
            );
        }
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        for bridge in ["br0", "br1"] {
            ip(&["-n", &hub, "link", "add", bridge, "type", "bridge"])?;
            ip(&["-n", &hub, "link", "set", bridge, "up"])?;
        }
        Ok(lab)
    }

    fn address(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, (i / 250) as u8, (i % 250 + 1) as u8)
    }

    /// Starts the next peer in a namespace of its own, bootstrapping from
    /// `seeds` (peers already up; none for the first).
    fn add_peer(&mut self, seeds: &[usize]) -> Result<usize> {
        let i = self.peers.len();
        let ns = format!("{}-{i}", self.tag);
        let hub_if = format!("h{i}");
        let addr = Lab::address(i);
        ip(&["netns", "add", &ns])?;
        ip(&[
            "-n", &self.hub, "link", "add", &hub_if, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ])?;
        ip(&[
            "-n", &self.hub, "link", "set", &hub_if, "master", "br0", "up",
        ])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/16"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let data = DataDir::new(self.dir.path().join(format!("peer-{i}")));
        std::fs::create_dir_all(data.root())?;
        let log = std::fs::File::create(data.root().join("node.log"))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &ns])
            .arg(&self.exe)
            .arg("--data-dir")
            .arg(data.root())
            .args(["node", "--nick", &format!("real-{i}")])
            .args(["--listen", &format!("/ip4/{addr}/tcp/{PORT}")])
            .args(["--hypervisor", "test:///default", "--no-accept-migrations"])
            .args([
                "--image-dir",
                &self.dir.path().join("images").to_string_lossy(),
            ])
            // A literal key only through the environment (arguments show in
            // the process list; --network-key takes a file).
            .env(crate::node::identity::NETWORK_KEY_ENV, &self.key)
            .env("PEERVISOR_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for &seed in seeds {
            command.args([
                "--bootstrap",
                &format!("/ip4/{}/tcp/{PORT}", Lab::address(seed)),
            ]);
        }
        let child = command.spawn().context("starting peervisor node")?;
        self.peers.push(RealPeer {
            ns,
            hub_if,
            ip: addr,
            child,
            control: ControlClient::new(&data.control_socket()),
        });
        Ok(i)
    }

    /// Waits for peer `i`'s control socket, then exposes its service.
    async fn expose(&self, i: usize, name: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let request = Request::Expose {
                name: name.into(),
                target: format!("{}:9", self.peers[i].ip),
                kind: Some("tcp".into()),
                allow: Vec::new(),
                max_conns: None,
            };
            match self.peers[i].control.call(&request).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn unexpose(&self, i: usize, name: &str) {
        let request = Request::Unexpose { name: name.into() };
        let _ = self.peers[i].control.call(&request).await;
    }

    /// The services peer `i` knows of (names), if it answers.
    async fn services(&self, i: usize) -> Option<Vec<String>> {
        match self.peers[i].control.call(&Request::Services).await {
            Ok(Reply::Services { services }) => {
                Some(services.into_iter().map(|s| s.name.into()).collect())
            }
            _ => None,
        }
    }

    /// What each of `peers` lists (None: no answer), asked all at once.
    async fn views(&self, peers: &[usize]) -> Vec<Option<Vec<String>>> {
        futures::future::join_all(peers.iter().map(|&i| self.services(i))).await
    }

    /// What each of `peers` lists, asked all at once, with the time since
    /// `t` at which each answer came: a peer's figure is its own answer's,
    /// not the slowest of the round's (a hundred peers on two cores answer
    /// hundreds of milliseconds apart).
    async fn views_timed(
        &self,
        peers: &[usize],
        t: Instant,
    ) -> Vec<(usize, Option<Vec<String>>, Duration)> {
        super::reach::each_timed(peers, t, |p| self.services(p)).await
    }

    /// Those of `peers` that do not list every name in `names` or still list
    /// one in `absent`.
    async fn failing(&self, peers: &[usize], names: &[String], absent: &[String]) -> Vec<usize> {
        let views = self.views(peers).await;
        peers
            .iter()
            .zip(views)
            .filter(|(_, view)| !holds(view, names, absent))
            .map(|(&p, _)| p)
            .collect()
    }

    fn cpu_ticks(&self, i: usize) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.peers[i].child.id()))
            .unwrap_or_default();
        // Fields after the command name (which may hold spaces): utime is the 12th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |k: usize| {
            fields
                .get(k)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        field(11) + field(12)
    }

    fn rss_bytes(&self, i: usize) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.peers[i].child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// Per hub-side veth: (bytes, packets) the peer sent and received.
    fn link_counters(&self) -> Result<super::pipes::Traffic> {
        let out = Command::new("ip")
            .args(["-n", &self.hub, "-s", "-j", "link", "show"])
            .output()?;
        let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let mut total = super::pipes::Traffic::default();
        for link in links.as_array().into_iter().flatten() {
            let name = link["ifname"].as_str().unwrap_or("");
            if !name.starts_with('h') {
                continue;
            }
            let stats = &link["stats64"];
            let n = |dir: &str, what: &str| stats[dir][what].as_u64().unwrap_or(0);
            // The hub end receives what the peer sends.
            total.sent_bytes += n("rx", "bytes");
            total.sent_msgs += n("rx", "packets");
            total.recv_bytes += n("tx", "bytes");
            total.recv_msgs += n("tx", "packets");
        }
        Ok(total)
    }

    /// Time until every one of `peers` lists all of `names` and none of
    /// `absent`, if within `bound`, and when each peer first did. Only the
    /// peers that have not yet are asked (every `every`); once none is left,
    /// every peer is asked again to confirm (one that lost it is waited for
    /// again) unless `confirm` is false (a new name is not forgotten).
    async fn until_each(
        &self,
        peers: &[usize],
        names: &[String],
        absent: &[String],
        bound: Duration,
        every: Duration,
        confirm: bool,
    ) -> (Option<Duration>, Vec<Duration>) {
        let t = Instant::now();
        let mut wait = Narrowing::new(peers);
        loop {
            let pending = wait.pending();
            if pending.is_empty() {
                if !confirm {
                    return (wait.times().into_iter().max(), wait.times());
                }
                let failed = self.failing(peers, names, absent).await;
                if failed.is_empty() {
                    return (Some(t.elapsed()), wait.times());
                }
                for p in failed {
                    wait.unmet(p);
                }
            } else {
                for (p, view, at) in self.views_timed(&pending, t).await {
                    if holds(&view, names, absent) {
                        wait.met(p, at);
                    }
                }
                if wait.done() {
                    continue;
                }
            }
            if t.elapsed() > bound {
                return (None, wait.times());
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Time until every one of `peers` lists all of `names` and none of
    /// `absent` (asked every 100 ms), if within `bound`.
    async fn until_all_know(
        &self,
        peers: &[usize],
        names: &[String],
        absent: &[String],
        bound: Duration,
    ) -> Option<Duration> {
        self.until_each(
            peers,
            names,
            absent,
            bound,
            Duration::from_millis(100),
            true,
        )
        .await
        .0
    }

    /// Moves these peers' veths onto `bridge` in the hub (br1 cuts them off).
    fn move_to_bridge(&self, peers: &[usize], bridge: &str) -> Result<()> {
        for &i in peers {
            let hub_if = &self.peers[i].hub_if;
            ip(&["-n", &self.hub, "link", "set", hub_if, "master", bridge])?;
        }
        Ok(())
    }

    /// Starts `peers` processes in waves (reach::waves, `--wave`): each
    /// process of a wave bootstraps from a few peers already up, the wave's
    /// services are exposed once their control sockets answer, and the next
    /// wave starts `--wave-pause` later. One at a time from peer 0 alone, 50
    /// took 61 s and every handshake and DHT bootstrap went to peer 0.
    async fn start(&mut self, peers: usize, options: &Options) -> Result<()> {
        let plan = reach::waves(peers, options.wave);
        let last = plan.len().saturating_sub(1);
        for (w, wave) in plan.into_iter().enumerate() {
            for _ in wave.clone() {
                let seeds = reach::seeds(wave.start, reach::SEEDS, &mut rand::thread_rng());
                self.add_peer(&seeds)?;
            }
            let lab = &*self;
            let exposed = futures::future::join_all(
                wave.clone()
                    .map(|i| async move { lab.expose(i, &format!("svc-{i}")).await }),
            )
            .await;
            exposed.into_iter().collect::<Result<Vec<()>>>()?;
            if w != last {
                tokio::time::sleep(options.wave_pause).await;
            }
        }
        Ok(())
    }

    /// Waits until every peer knows every other's service while the overlay
    /// still gains (settle.rs, as the simulation waits), up to
    /// `--settle-cap`; a progress line at each full look.
    async fn settle(&self, all: &[usize], options: &Options, started: Instant) -> Settled {
        let peers = all.len();
        let cap = options
            .settle_cap
            .unwrap_or_else(|| settle::default_cap(peers));
        let mut settling = Settling::new(settle::WINDOW, cap);
        let every = names(all);
        let mut last_line = Instant::now();
        loop {
            let views = self.views(all).await;
            let progress: Progress = reach::progress(&views, &every);
            let at = started.elapsed();
            let verdict = settling.judge(at, progress);
            if verdict != Verdict::Converging || last_line.elapsed() >= PROGRESS_EVERY {
                last_line = Instant::now();
                eprintln!(
                    "real {peers}: {:.0} s: {} ({}): {verdict:?}",
                    at.as_secs_f64(),
                    progress.line(peers),
                    load_line()
                );
            }
            if verdict != Verdict::Converging {
                return Settled {
                    verdict,
                    after: at,
                    progress,
                };
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }

    async fn connections(&self, peers: &[usize]) -> f64 {
        let mut total = 0;
        for &i in peers {
            if let Ok(Reply::Status(status)) = self.peers[i].control.call(&Request::Status).await {
                total += status.peers.iter().filter(|p| p.connected).count();
            }
        }
        total as f64 / peers.len().max(1) as f64
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let pids: Vec<u32> = self.peers.iter().map(|p| p.child.id()).collect();
        crate::rig::terminate_and_wait(&pids);
        for p in &mut self.peers {
            let _ = p.child.wait();
            let _ = ip(&["netns", "del", &p.ns]);
        }
        let _ = ip(&["netns", "del", &self.hub]);
        if let Some(before) = self.arp
            && let Err(e) = write_arp_thresholds(before)
        {
            eprintln!("could not restore the ARP table's thresholds {before:?}: {e:#}");
        }
    }
}

/// Whether a peer's view lists every name in `names` and none in `absent`.
fn holds(view: &Option<Vec<String>>, names: &[String], absent: &[String]) -> bool {
    view.as_ref().is_some_and(|known| {
        names.iter().all(|n| known.contains(n)) && !absent.iter().any(|n| known.contains(n))
    })
}

fn names(peers: &[usize]) -> Vec<String> {
    peers.iter().map(|i| format!("svc-{i}")).collect()
}

pub async fn run(peers: usize, options: &Options) -> Result<Row> {
    if peers < 3 {
        bail!("--peers: at least 3");
    }
    let mut lab = Lab::new(peers)?;
    let started = Instant::now();
    lab.start(peers, options).await?;
    eprintln!(
        "real {peers}: {peers} node processes up in {:.1} s (waves of {}, {:.1} s apart, {} seeds each; {}); \
         waiting until every node knows every service…",
        started.elapsed().as_secs_f64(),
        options.wave,
        options.wave_pause.as_secs_f64(),
        reach::SEEDS,
        load_line()
    );
    let all: Vec<usize> = (0..peers).collect();
    let mut row = Row::new(peers);
    let settled = lab.settle(&all, options, started).await;
    row.settle = (settled.verdict == Verdict::Complete).then_some(settled.after);
    row.settled = Some(settled);
    tokio::time::sleep(options.quiet).await;

    // Idle.
    let ticks: Vec<u64> = all.iter().map(|&i| lab.cpu_ticks(i)).collect();
    let traffic = lab.link_counters()?;
    let t = Instant::now();
    tokio::time::sleep(options.idle).await;
    let window = t.elapsed();
    let after: Vec<u64> = all.iter().map(|&i| lab.cpu_ticks(i)).collect();
    let traffic = lab.link_counters()?.minus(traffic);
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_s: f64 = after
        .iter()
        .zip(&ticks)
        .map(|(a, b)| a.saturating_sub(*b) as f64 / hz)
        .sum();
    row.set_idle(Duration::from_secs_f64(cpu_s), traffic, window);
    row.memory_per_peer = all.iter().map(|&i| lab.rss_bytes(i) as f64).sum::<f64>() / peers as f64;
    row.connections = lab.connections(&all).await;
    eprintln!("real {peers}: idle {}", row.idle_summary());

    // Discovery.
    let mut every_peer = Vec::new();
    let mut each_peer = Vec::new();
    for round in 0..options.rounds {
        let publisher = (round * 7 + 1) % peers;
        let name = format!("probe-{round}");
        let others: Vec<usize> = all.iter().copied().filter(|&i| i != publisher).collect();
        let wanted = [name.clone()];
        lab.expose(publisher, &name).await?;
        // Asked every 20 ms, only the peers that have not seen it yet.
        let (took, each) = lab
            .until_each(
                &others,
                &wanted,
                &[],
                DISCOVERY_BOUND,
                Duration::from_millis(20),
                false,
            )
            .await;
        every_peer.push(took.unwrap_or(DISCOVERY_BOUND));
        // A peer that never saw it counts at the bound.
        let missed = others.len().saturating_sub(each.len());
        each_peer.extend(each);
        each_peer.extend(std::iter::repeat_n(DISCOVERY_BOUND, missed));
        lab.unexpose(publisher, &name).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    row.discovery = p50_p95(&mut every_peer);
    row.discovery_each = p50_p95(&mut each_peer);

    // DHT: `find` through the control socket (DHT lookup, then ListServices).
    let mut lookups = Vec::new();
    let mut made = 0;
    for i in 0..options.rounds {
        let from = (i * 3 + 2) % peers;
        let target = (i * 5 + 4) % peers;
        if from == target {
            continue;
        }
        made += 1;
        let t = Instant::now();
        let request = Request::Find {
            name: format!("svc-{target}").into(),
        };
        if lab.peers[from].control.call(&request).await.is_ok() {
            lookups.push(t.elapsed());
        }
    }
    row.dht_found = (lookups.len(), made);
    row.dht = p50_p95(&mut lookups);

    // Join.
    let t = Instant::now();
    let seeds = reach::seeds(peers, reach::SEEDS, &mut rand::thread_rng());
    let joiner = lab.add_peer(&seeds)?;
    lab.expose(joiner, &format!("svc-{joiner}")).await?;
    let with_joiner: Vec<usize> = (0..=joiner).collect();
    let every = names(&with_joiner);
    row.join = lab
        .until_all_know(&with_joiner, &every, &[], Duration::from_secs(120))
        .await
        .map(|_| t.elapsed());
    eprintln!("real {peers}: join {:?}", row.join);

    // Silent leave: the peer's link goes down.
    let vanished = peers / 2;
    ip(&[
        "-n",
        &lab.hub,
        "link",
        "set",
        &lab.peers[vanished].hub_if,
        "down",
    ])?;
    let live: Vec<usize> = with_joiner
        .iter()
        .copied()
        .filter(|&i| i != vanished)
        .collect();
    let gone = [format!("svc-{vanished}")];
    row.leave = lab
        .until_all_know(&live, &[], &gone, Duration::from_secs(120))
        .await;
    eprintln!("real {peers}: silent leave {:?}", row.leave);

    // A 10% partition: their veths on another bridge, then back.
    let mut shuffled: Vec<usize> = live.iter().copied().filter(|&i| i != 0).collect();
    shuffled.shuffle(&mut rand::thread_rng());
    let cut = &shuffled[..peers.div_ceil(10)];
    lab.move_to_bridge(cut, "br1")?;
    tokio::time::sleep(options.partition).await;
    lab.move_to_bridge(cut, "br0")?;
    let t = Instant::now();
    lab.expose(cut[0], "after-heal").await?;
    let mut every = names(&live);
    every.push("after-heal".into());
    row.heal = lab
        .until_all_know(&live, &every, &[], Duration::from_secs(120))
        .await
        .map(|_| t.elapsed());
    eprintln!("real {peers}: partition healed {:?}", row.heal);
    drop(lab);
    Ok(row)
}
