//! `peervisor bench migrate`: live migration over the overlay against libvirt's
//! direct migration between the same two hypervisor instances, with the same
//! guest, in the same run.
//!
//! Two `peervisor node` processes (each with its private libvirtd, in a guest
//! network namespace of the benchmark's own) and one guest. Each round migrates
//! the guest four times, so both methods go both ways (overlay A→B, direct B→A,
//! direct A→B, overlay B→A; the next round in the opposite order), after one
//! uncounted warm-up migration each way. "Direct" is, by default, the same libvirt
//! call peervisor makes (peer-to-peer, live, not tunnelled) aimed at the
//! destination libvirtd's own socket, with QEMU's own TCP connection for the
//! memory stream instead of the overlay's channel; `--direct tunnelled` measures
//! libvirt's tunnelled migration instead. Every migration is watched by the same
//! probe of the guest's HTTP port (every 25 ms, from the benchmark process), and
//! by a consumer on a third node (no hypervisor of its own) looping requests
//! through `peervisor consume`; both over an equally long window without a
//! migration are the gap baselines.
//!
//! With `--data-disk MIB` the guest has a qcow2 data disk and each node a disk
//! dir of its own, so every migration copies the disk: over the overlay as
//! peervisor does it (migrate/tunnel.rs, diskmig.rs: memory and NBD channels bridged over
//! libp2p streams); direct with the same libvirt call, the destination file made
//! beforehand the same way, and libvirt's own TCP connections between the two
//! daemons (memory and NBD, on the guest bridge) instead of the bridged sockets.

mod consumer;
mod nodes;
mod table;

use table::table;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::hypervisor::Host;
use crate::hypervisor::netns::GuestNetwork;
use crate::paths::DataDir;
use crate::services::probe::GapProbe;
use consumer::ConsumerLoop;
use nodes::Nodes;

const NETNS: &str = "pvmigbench";
const VM: &str = "bench-mig";
const NICKS: [&str; 2] = ["bench-a", "bench-b"];
/// The third node: consumes the guest's service through the overlay.
const CONSUMER: &str = "bench-c";
/// Quiet time before and after each migration (probe warm-up, guest settles).
const SETTLE: Duration = Duration::from_secs(2);
/// Length of the no-migration probe window (about one migration here).
const IDLE_WINDOW: Duration = Duration::from_secs(3);

/// Which libvirt migration "direct" is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Direct {
    /// The call peervisor makes (peer-to-peer, not tunnelled), QEMU's own TCP.
    Native,
    /// Peer-to-peer, tunnelled: QEMU's stream inside libvirt's RPC connection.
    Tunnelled,
    /// Native, with QEMU's own TLS (`VIR_MIGRATE_TLS`): libvirt's encrypted
    /// migration, certificates made for the run.
    Tls,
}

pub struct Options {
    pub rounds: usize,
    /// The baseline's libvirt migration.
    pub direct: Direct,
    pub memory_mib: u64,
    /// A data disk of this size, copied by every migration.
    pub data_disk_mib: Option<u64>,
    /// `--accel` for the nodes: auto, kvm or tcg.
    pub accel: String,
    pub image_dir: PathBuf,
    /// Where the two nodes keep their data dirs (removed afterwards).
    pub root: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Overlay,
    Direct,
}

/// One migration.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub method: Method,
    pub from: String,
    pub to: String,
    /// Wall time of the whole call, seen by the benchmark.
    pub seconds: f64,
    /// libvirt's downtime (completed job on the destination).
    pub libvirt_downtime_ms: Option<u64>,
    /// libvirt's own time for the job (its `time_elapsed`, the same source for
    /// both methods).
    #[serde(default)]
    pub libvirt_ms: Option<u64>,
    /// Longest gap the benchmark's probe saw.
    pub service_gap_ms: Option<u64>,
    /// Longest gap between answers of the consumer looping through bench-c.
    #[serde(default)]
    pub consumer_gap_ms: Option<u64>,
    /// The consumer's requests that failed even after retrying for 10 s.
    #[serde(default)]
    pub consumer_failed: u32,
    /// The consumer's failed attempts that were retried.
    #[serde(default)]
    pub consumer_retries: u32,
    pub transferred_bytes: Option<u64>,
    /// Overlay only: the source node's own probe (what `migrate --json` reports).
    pub node_probe_ms: Option<u64>,
    /// Overlay only: the node's total time (request to switch-over done).
    pub node_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub memory_mib: u64,
    #[serde(default)]
    pub data_disk_mib: Option<u64>,
    pub rounds: usize,
    pub accel: String,
    /// The baseline's libvirt migration.
    pub direct: Direct,
    pub samples: Vec<Sample>,
    /// The same probe over a window without a migration, once per round.
    pub idle_gap_ms: Vec<u64>,
    /// The consumer over the same window.
    #[serde(default)]
    pub idle_consumer_gap_ms: Vec<u64>,
}

/// `peervisor bench migrate`: two local nodes, one guest, both methods.
pub async fn command(
    setup: &crate::bench::Setup,
    (rounds, direct): (usize, Direct),
    (memory_mib, data_disk_mib): (u64, Option<u64>),
    json: bool,
) -> Result<()> {
    use crate::hypervisor::accel::AccelChoice;
    if direct == Direct::Tunnelled && data_disk_mib.is_some() {
        bail!(
            "--direct tunnelled cannot go with --data-disk: libvirt cannot copy disks in a tunnelled migration"
        );
    }
    let opts = Options {
        rounds,
        direct,
        memory_mib,
        data_disk_mib,
        accel: match setup.accel {
            AccelChoice::Auto => "auto".into(),
            AccelChoice::Force(a) => a.to_string(),
        },
        image_dir: setup.image_dir.clone(),
        root: setup.data_dir.root().join("bench").join("migrate-nodes"),
    };
    let results = run(&opts).await?;
    let (lines, targets) = table::targets(&results);
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        eprint!("{lines}");
    } else {
        print!("{}{lines}", table(&results));
    }
    targets.finish()
}

pub async fn run(opts: &Options) -> Result<Results> {
    if opts.rounds == 0 || opts.rounds > 50 {
        bail!("--rounds must be between 1 and 50, got {}", opts.rounds);
    }
    if !(64..=4096).contains(&opts.memory_mib) {
        bail!(
            "--memory must be between 64 and 4096 MiB, got {}",
            opts.memory_mib
        );
    }
    crate::rig::ensure_image(&opts.image_dir).await?;
    let mut nodes = Nodes::start(opts)?;
    let outcome = tokio::select! {
        r = measure(&mut nodes, opts) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    eprintln!("bench: stopping the nodes and the guest…");
    nodes.stop();
    outcome
}

async fn measure(nodes: &mut Nodes, opts: &Options) -> Result<Results> {
    let clients = nodes.wait_ready().await?;
    let mut uris = Vec::new();
    for client in &clients {
        let Reply::Status(s) = client.call(&Request::Status).await? else {
            bail!("unexpected reply to status");
        };
        uris.push(s.local.hypervisor.clone());
    }
    eprintln!(
        "bench: booting '{VM}' ({} MiB) on {}…",
        opts.memory_mib, NICKS[0]
    );
    clients[0]
        .call(&Request::VmCreate {
            name: VM.into(),
            vcpus: 1,
            memory_mib: opts.memory_mib,
            image: crate::image::DEFAULT_IMAGE.into(),
            services: Vec::new(),
            data_disk_mib: opts.data_disk_mib,
            nic: None,
            disk: None,
            no_overlay: false,
            user_data: None,
        })
        .await?;
    let Reply::Vms { vms } = clients[0]
        .call(&Request::VmStats { name: VM.into() })
        .await?
    else {
        bail!("unexpected reply to vm stats");
    };
    let ip: std::net::Ipv4Addr = vms
        .first()
        .and_then(|v| v.ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| anyhow!("the guest has no address"))?;
    let target = std::net::SocketAddr::from((ip, 80));
    wait_answering(target, Duration::from_secs(120)).await?;
    let consumed = consume(&clients[2]).await?;
    let hosts = [Host::open(&uris[0]).await?, Host::open(&uris[1]).await?];

    let rig = Rig {
        clients,
        hosts,
        uris,
        disk_dirs: match opts.data_disk_mib {
            Some(_) => nodes.dirs().iter().map(disk_dir_of).collect(),
            None => Vec::new(),
        },
        direct: opts.direct,
    };
    let mut results = Results {
        memory_mib: opts.memory_mib,
        data_disk_mib: opts.data_disk_mib,
        rounds: opts.rounds,
        accel: opts.accel.clone(),
        direct: opts.direct,
        samples: Vec::new(),
        idle_gap_ms: Vec::new(),
        idle_consumer_gap_ms: Vec::new(),
    };
    // Both methods both ways each round, the guest ending where it started; the
    // order flips every round so neither method always goes first.
    let plans = [
        [
            (Method::Overlay, 0, 1),
            (Method::Direct, 1, 0),
            (Method::Direct, 0, 1),
            (Method::Overlay, 1, 0),
        ],
        [
            (Method::Direct, 0, 1),
            (Method::Overlay, 1, 0),
            (Method::Overlay, 0, 1),
            (Method::Direct, 1, 0),
        ],
    ];
    // Not counted: the first migration into each daemon pays one-time costs.
    eprintln!("bench: warm-up migrations (not counted)…");
    for (method, from, to) in [(Method::Direct, 0, 1), (Method::Overlay, 1, 0)] {
        migrate_once(method, from, to, &rig).await?;
        wait_answering(target, Duration::from_secs(60)).await?;
        tokio::time::sleep(SETTLE).await;
    }
    for round in 1..=opts.rounds {
        let plan = plans[(round - 1) % 2];
        let idle = GapProbe::start(move || answers(target));
        let idle_consumer = ConsumerLoop::start(consumed);
        tokio::time::sleep(IDLE_WINDOW).await;
        if let Some(gap) = idle.finish().await {
            results.idle_gap_ms.push(gap.longest_gap_ms());
        }
        results
            .idle_consumer_gap_ms
            .push(idle_consumer.finish().await.longest_gap_ms);
        for (method, from, to) in plan {
            let probe = GapProbe::start(move || answers(target));
            let consumer = ConsumerLoop::start(consumed);
            tokio::time::sleep(SETTLE).await;
            let mut sample = migrate_once(method, from, to, &rig).await?;
            sample.service_gap_ms = probe.finish().await.map(|g| g.longest_gap_ms());
            // The consumer switches to the new host by gossip: give it the
            // settling time too.
            tokio::time::sleep(SETTLE).await;
            let seen = consumer.finish().await;
            sample.consumer_gap_ms = Some(seen.longest_gap_ms);
            sample.consumer_failed = seen.failed;
            sample.consumer_retries = seen.retries;
            eprintln!(
                "bench: round {round}/{}: {:?} {}→{} {:.2} s{}, libvirt job {} ms, downtime {} ms, service gap {} ms, consumer gap {} ms ({} failed, {} retries)",
                opts.rounds,
                method,
                sample.from,
                sample.to,
                sample.seconds,
                sample
                    .node_seconds
                    .map(|s| format!(" (node {s:.2} s)"))
                    .unwrap_or_default(),
                opt(sample.libvirt_ms),
                opt(sample.libvirt_downtime_ms),
                opt(sample.service_gap_ms),
                opt(sample.consumer_gap_ms),
                sample.consumer_failed,
                sample.consumer_retries
            );
            results.samples.push(sample);
        }
    }
    Ok(results)
}

/// One migration of the guest from node `from` to node `to`, timed.
/// What a migration of the benchmark needs to reach.
struct Rig {
    /// The two hosts' control sockets and the consumer's.
    clients: Vec<ControlClient>,
    /// The two hosts' libvirt daemons, and their URIs.
    hosts: [Host; 2],
    uris: Vec<String>,
    /// Only with a data disk: where each node keeps it.
    disk_dirs: Vec<PathBuf>,
    direct: Direct,
}

async fn migrate_once(method: Method, from: usize, to: usize, rig: &Rig) -> Result<Sample> {
    let Rig {
        clients,
        hosts,
        uris,
        disk_dirs,
        direct,
    } = rig;
    let started = Instant::now();
    let mut sample = Sample {
        method,
        from: NICKS[from].into(),
        to: NICKS[to].into(),
        seconds: 0.0,
        libvirt_downtime_ms: None,
        libvirt_ms: None,
        service_gap_ms: None,
        consumer_gap_ms: None,
        consumer_failed: 0,
        consumer_retries: 0,
        transferred_bytes: None,
        node_probe_ms: None,
        node_seconds: None,
    };
    match method {
        Method::Overlay => {
            let request = Request::Migrate {
                vm: VM.into(),
                to: NICKS[to].into(),
                max_downtime_ms: None,
                bandwidth_mib_s: None,
                foreign: false,
                // The report comes at the end, with the figures.
                detach: false,
            };
            let Reply::Migrated(report) = clients[from].call(&request).await? else {
                bail!("unexpected reply to migrate");
            };
            sample.seconds = started.elapsed().as_secs_f64();
            sample.libvirt_downtime_ms = report.downtime_ms;
            sample.transferred_bytes = report.transferred_bytes;
            sample.node_probe_ms = report.probe_downtime_ms;
            sample.node_seconds = Some(report.seconds);
            if let Some(job) = hosts[to].completed_job(VM).await? {
                sample.libvirt_ms = job.elapsed_ms;
            }
        }
        Method::Direct if *direct == Direct::Tunnelled => {
            hosts[from]
                .migrate_p2p_tunnelled(VM, &uris[to], None, None)
                .await?;
            sample.seconds = started.elapsed().as_secs_f64();
            if let Some(job) = hosts[to].completed_job(VM).await? {
                sample.libvirt_downtime_ms = job.downtime_ms;
                sample.libvirt_ms = job.elapsed_ms;
                sample.transferred_bytes = job.processed_bytes;
            }
        }
        Method::Direct => {
            let tls = *direct == Direct::Tls;
            let moved = direct_native(&hosts[from], &uris[to], disk_dirs.get(to), tls).await?;
            for (from_file, _) in &moved {
                std::fs::remove_file(from_file)
                    .with_context(|| format!("removing the source's {from_file}"))?;
            }
            sample.seconds = started.elapsed().as_secs_f64();
            if let Some(job) = hosts[to].completed_job(VM).await? {
                sample.libvirt_downtime_ms = job.downtime_ms;
                sample.libvirt_ms = job.elapsed_ms;
                sample.transferred_bytes = job.processed_bytes;
            }
        }
    }
    Ok(sample)
}

/// bench-c consumes the guest's service; the address of its local listener.
async fn consume(client: &ControlClient) -> Result<std::net::SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let listen = loop {
        let request = Request::Consume {
            service: VM.into(),
            local_port: None,
            bind: None,
        };
        match client.call(&request).await {
            Ok(Reply::Consuming(view)) => break view.listen,
            // Not heard of yet: gossip and the DHT take a moment.
            Ok(_) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(other) => bail!("unexpected reply to consume: {other:?}"),
            Err(e) => return Err(e.context(format!("{CONSUMER} could not consume '{VM}'"))),
        }
    };
    let listen: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("{CONSUMER}'s consume listener {listen}"))?;
    let probe = ConsumerLoop::start(listen);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = probe.finish().await;
    if seen.requests == 0 || seen.failed > 0 {
        bail!("no answer through {CONSUMER}'s consume listener {listen}");
    }
    Ok(listen)
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// True when the guest's HTTP port accepts a connection (inside the namespace).
async fn answers(target: std::net::SocketAddr) -> bool {
    let network = GuestNetwork::named(NETNS);
    tokio::task::spawn_blocking(move || network.connect(target, Duration::from_secs(1)).is_ok())
        .await
        .unwrap_or(false)
}

async fn wait_answering(target: std::net::SocketAddr, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !answers(target).await {
        if Instant::now() > deadline {
            bail!("the guest's HTTP service at {target} did not answer within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Direct migration as peervisor's overlay path does it (the same libvirt call;
/// with `dest_dir`, the disks copied into files made there beforehand) but with
/// QEMU's own TCP connections, TLS-encrypted by QEMU with `tls`. Returns the
/// (source, destination) disk files.
async fn direct_native(
    from: &Host,
    dest_uri: &str,
    dest_dir: Option<&PathBuf>,
    tls: bool,
) -> Result<Vec<(String, String)>> {
    let mut copies = Vec::new();
    let mut files = Vec::new();
    if let Some(dest_dir) = dest_dir {
        for disk in from.footprint(VM).await?.disks {
            let name = disk
                .file_name()
                .ok_or_else(|| anyhow!("disk without a name"))?;
            let bytes = crate::hypervisor::footprint::virtual_bytes(&disk)
                .ok_or_else(|| anyhow!("cannot size {}", disk.display()))?;
            let dest = dest_dir.join(name);
            copies.push((
                disk.to_string_lossy().into_owned(),
                dest.to_string_lossy().into_owned(),
            ));
            files.push((dest, bytes));
        }
    }
    crate::migrate::diskmig::make_disks(&files, None)
        .await
        .map_err(|e| anyhow!(e))?;
    let xml =
        crate::migrate::diskmig::with_disks_renamed(&from.migratable_xml(VM).await?, &copies)?;
    let uris = crate::hypervisor::MigrationUris {
        libvirt: dest_uri.to_string(),
        memory: None,
        disks: None,
        copy_disks: !copies.is_empty(),
        incremental: false,
        tunnelled: false,
        listen_address: None,
        qemu_tls: tls,
    };
    if let Err(e) = from.migrate_p2p(VM, uris, xml, None, None).await {
        for (dest, _) in &files {
            let _ = std::fs::remove_file(dest);
        }
        return Err(e);
    }
    Ok(copies)
}

/// A node's disk dir in the benchmark (`--disk-dir`).
fn disk_dir_of(dir: &DataDir) -> PathBuf {
    dir.root().join("disks")
}
