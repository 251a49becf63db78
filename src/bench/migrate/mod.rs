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
//! peervisor does it (runtime/diskmig.rs: memory and NBD channels bridged over
//! libp2p streams); direct with the same libvirt call, the destination file made
//! beforehand the same way, and libvirt's own TCP connections between the two
//! daemons (memory and NBD, on the guest bridge) instead of the bridged sockets.

mod consumer;

use std::fmt::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
    crate::cli::demo::ensure_image(&opts.image_dir).await?;
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
            Some(_) => nodes.dirs.iter().map(disk_dir_of).collect(),
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
    crate::migrate::diskmig::make_disks(&files)
        .await
        .map_err(|e| anyhow!(e))?;
    let xml =
        crate::migrate::diskmig::with_disks_renamed(&from.migratable_xml(VM).await?, &copies)?;
    let uris = crate::hypervisor::MigrationUris {
        libvirt: dest_uri.to_string(),
        memory: None,
        disks: None,
        copy_disks: !copies.is_empty(),
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

/// The table: medians per method, the ratios against the direct baseline, the
/// probe's and the consumer's gaps without a migration, and the consumer target.
pub fn table(r: &Results) -> String {
    let mut out = String::new();
    let disk = r
        .data_disk_mib
        .map(|d| format!(" with a {d} MiB data disk copied each time"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "live migration, {} MiB guest{disk}, {} round(s) (each method {} times, both directions), accel {}",
        r.memory_mib,
        r.rounds,
        2 * r.rounds,
        r.accel
    );
    let line = |out: &mut String, cells: [&str; 8]| {
        let [label, total, range, job, down, gap, consumer, mib] = cells;
        let _ = writeln!(
            out,
            "{label:<30} {total:>7} {range:>9} {job:>9} {down:>11} {gap:>10} {consumer:>15} {mib:>6}"
        );
    };
    line(
        &mut out,
        [
            "method",
            "total s",
            "(range)",
            "libvirt s",
            "downtime ms",
            "svc gap ms",
            "consumer gap ms",
            "MiB",
        ],
    );
    let row = |out: &mut String, label: &str, m: Method| {
        let s: Vec<&Sample> = r.samples.iter().filter(|s| s.method == m).collect();
        let total = median(s.iter().map(|s| s.seconds).collect());
        let job = median_of(s.iter().map(|s| s.libvirt_ms)).map(|ms| ms / 1000.0);
        let down = median_of(s.iter().map(|s| s.libvirt_downtime_ms));
        let gap = median_of(s.iter().map(|s| s.service_gap_ms));
        let consumer = median_of(s.iter().map(|s| s.consumer_gap_ms));
        let mib = median_of(s.iter().map(|s| s.transferred_bytes)).map(|b| b / (1024.0 * 1024.0));
        line(
            out,
            [
                label,
                &fmt(total, 2),
                &spread(s.iter().map(|s| s.seconds).collect()),
                &fmt(job, 2),
                &fmt(down, 0),
                &fmt(gap, 0),
                &fmt(consumer, 0),
                &fmt(mib, 1),
            ],
        );
        (total, down, gap)
    };
    let (ot, od, og) = row(&mut out, "ours: over the overlay", Method::Overlay);
    let direct = match r.direct {
        Direct::Native => "baseline: libvirt direct",
        Direct::Tunnelled => "baseline: direct, tunnelled",
        Direct::Tls => "baseline: direct, QEMU TLS",
    };
    let (dt, dd, dg) = row(&mut out, direct, Method::Direct);
    let idle = median(r.idle_gap_ms.iter().map(|&g| g as f64).collect());
    let idle_consumer = median(r.idle_consumer_gap_ms.iter().map(|&g| g as f64).collect());
    line(
        &mut out,
        [
            "baseline: no migration",
            "",
            "",
            "",
            "",
            &fmt(idle, 0),
            &fmt(idle_consumer, 0),
            "",
        ],
    );
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    };
    let _ = writeln!(
        out,
        "overlay / direct: total {} (target <= 1.2x), downtime {} (target <= 1.2x), service gap {}",
        ratio(ot, dt),
        ratio(od, dd),
        ratio(og, dg)
    );
    let overlay: Vec<&Sample> = r
        .samples
        .iter()
        .filter(|s| s.method == Method::Overlay)
        .collect();
    let worst = overlay.iter().filter_map(|s| s.consumer_gap_ms).max();
    let failed: u32 = overlay.iter().map(|s| s.consumer_failed).sum();
    let retries: u32 = overlay.iter().map(|s| s.consumer_retries).sum();
    let _ = writeln!(
        out,
        "consumer on {CONSUMER} during overlay migrations: longest gap {} ms of {} migrations (target < 1000 ms), {failed} failed request(s) after retries ({retries} retries)",
        worst.map_or_else(|| "-".into(), |g| g.to_string()),
        overlay.len()
    );
    let _ = writeln!(
        out,
        "medians. total = the caller's wall time (overlay: the `migrate --wait` request, authorization to report; direct: virDomainMigrateToURI); \
         libvirt s = libvirt's own job time (time_elapsed); downtime = libvirt's (pause to resume); \
         svc gap = longest time the guest's port did not accept a connection (probe every 25 ms); \
         consumer gap = longest time between answers of one-at-a-time requests through `peervisor consume` on {CONSUMER}"
    );
    out
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn median_of(values: impl Iterator<Item = Option<u64>>) -> Option<f64> {
    median(values.flatten().map(|v| v as f64).collect())
}

fn spread(v: Vec<f64>) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() {
        "-".into()
    } else {
        format!("{min:.1}-{max:.1}")
    }
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

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

/// The two node processes of the benchmark.
struct Nodes {
    root: PathBuf,
    dirs: Vec<DataDir>,
    children: Vec<Child>,
}

impl Nodes {
    fn start(opts: &Options) -> Result<Nodes> {
        let _ = std::fs::remove_dir_all(&opts.root);
        std::fs::create_dir_all(&opts.root)
            .with_context(|| format!("creating {}", opts.root.display()))?;
        crate::node::identity::load_or_create_network_key(&opts.root, None)?;
        let key_file = opts.root.join("network.key");
        let ports = crate::cli::demo::free_ports(3)?;
        let exe = std::env::current_exe().context("locating the peervisor binary")?;
        let certs = opts.root.join("tls");
        if opts.direct == Direct::Tls {
            make_tls_certs(&certs)?;
        }
        let mut nodes = Nodes {
            root: opts.root.clone(),
            dirs: Vec::new(),
            children: Vec::new(),
        };
        for (i, nick) in NICKS.iter().chain([&CONSUMER]).enumerate() {
            let dir = DataDir::new(opts.root.join(nick));
            std::fs::create_dir_all(dir.root())?;
            if opts.direct == Direct::Tls && *nick != CONSUMER {
                let tls = dir.libvirt_dir().join(crate::hypervisor::daemon::TLS_DIR);
                install_certs(&certs, &tls)?;
            }
            let log = std::fs::File::create(dir.root().join("node.log"))?;
            let mut cmd = Command::new(&exe);
            cmd.arg("node")
                .arg("--data-dir")
                .arg(dir.root())
                .args(["--nick", nick])
                .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{}", ports[i])])
                .arg("--network-key")
                .arg(&key_file)
                .args(["--guest-netns", NETNS])
                .arg("--image-dir")
                .arg(&opts.image_dir)
                .args(["--accel", &opts.accel])
                .arg("--destroy-vms-on-exit");
            if opts.data_disk_mib.is_some() {
                let disks = disk_dir_of(&dir);
                std::fs::create_dir_all(&disks)?;
                cmd.arg("--disk-dir").arg(disks);
            }
            if *nick == CONSUMER {
                // Hosts nothing: libvirt's test driver spares a daemon.
                cmd.args(["--hypervisor", "test:///default"]);
            }
            if i > 0 {
                cmd.args(["--bootstrap", &format!("/ip4/127.0.0.1/tcp/{}", ports[0])]);
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log));
            // Own process group: Ctrl-C reaches the benchmark, which stops them.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            nodes.dirs.push(dir);
            match cmd.spawn() {
                Ok(child) => nodes.children.push(child),
                Err(e) => {
                    nodes.stop();
                    bail!("starting {}: {e}", exe.display());
                }
            }
        }
        Ok(nodes)
    }

    /// Waits for the control sockets and the overlay, then lets the two hosting
    /// nodes migrate VMs into each other.
    async fn wait_ready(&mut self) -> Result<Vec<ControlClient>> {
        eprintln!("bench: starting three nodes…");
        let nick = |i: usize| NICKS.get(i).copied().unwrap_or(CONSUMER);
        let clients: Vec<ControlClient> = self
            .dirs
            .iter()
            .map(|d| ControlClient::new(&d.control_socket()))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ids = Vec::new();
        for (i, client) in clients.iter().enumerate() {
            loop {
                if let Ok(Reply::Status(s)) = client.call(&Request::Status).await {
                    ids.push(s.local.peer_id);
                    break;
                }
                if let Ok(Some(status)) = self.children[i].try_wait() {
                    bail!(
                        "{} exited ({status}):\n{}",
                        nick(i),
                        crate::cli::demo::log_tail(&self.dirs[i].root().join("node.log"))
                    );
                }
                if Instant::now() > deadline {
                    bail!("{} did not start within 60 s", nick(i));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
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
                    peer: ids[1 - i].clone(),
                    role: crate::control::Role::Control,
                })
                .await?;
        }
        Ok(clients)
    }

    /// SIGTERM: each node destroys its VMs and stops its libvirtd.
    fn stop(&mut self) {
        let pids: Vec<u32> = self.children.iter().map(|c| c.id()).collect();
        crate::cli::demo::terminate_and_wait(&pids);
        for child in &mut self.children {
            let _ = child.wait();
        }
        self.children.clear();
        let _ = GuestNetwork::named(NETNS).remove();
        self.keep_logs();
        let _ = std::fs::remove_dir_all(&self.root);
    }

    /// Copies the nodes' logs (each migration's phases are there) next to the
    /// data dirs that are about to go.
    fn keep_logs(&self) {
        let Some(parent) = self.root.parent() else {
            return;
        };
        for (dir, nick) in self.dirs.iter().zip(NICKS.iter().chain([&CONSUMER])) {
            let kept = parent.join(format!("migrate-{nick}.log"));
            if std::fs::copy(dir.root().join("node.log"), &kept).is_ok() {
                eprintln!("bench: {nick}'s log kept in {}", kept.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(method: Method, seconds: f64, down: u64, gap: u64) -> Sample {
        Sample {
            method,
            from: "a".into(),
            to: "b".into(),
            seconds,
            libvirt_downtime_ms: Some(down),
            libvirt_ms: Some((seconds * 800.0) as u64),
            service_gap_ms: Some(gap),
            consumer_gap_ms: Some(gap + 100),
            consumer_failed: 0,
            consumer_retries: 1,
            transferred_bytes: Some(70 << 20),
            node_probe_ms: None,
            node_seconds: None,
        }
    }

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

    #[test]
    fn table_shows_medians_and_ratios_against_the_direct_baseline() {
        let r = Results {
            data_disk_mib: None,
            memory_mib: 128,
            rounds: 1,
            accel: "tcg".into(),
            direct: Direct::Tunnelled,
            samples: vec![
                sample(Method::Overlay, 2.0, 200, 300),
                sample(Method::Overlay, 3.0, 220, 320),
                sample(Method::Direct, 2.0, 100, 200),
                sample(Method::Direct, 2.0, 300, 200),
            ],
            idle_gap_ms: vec![30],
            idle_consumer_gap_ms: vec![40],
        };
        let t = table(&r);
        assert!(t.contains("ours: over the overlay"), "{t}");
        assert!(t.contains("baseline: direct, tunnelled"), "{t}");
        assert!(t.contains("2.50"), "overlay median total: {t}");
        assert!(t.contains("total 1.25x"), "{t}");
        assert!(t.contains("downtime 1.05x"), "{t}");
        assert!(t.contains("service gap 1.55x"), "{t}");
        assert!(t.contains("70.0"), "MiB: {t}");
        assert!(
            t.contains(" 2.00 "),
            "libvirt's job time, overlay median: {t}"
        );
        assert!(
            t.contains("longest gap 420 ms of 2 migrations (target < 1000 ms), 0 failed request(s) after retries (2 retries)"),
            "{t}"
        );
        let idle = t
            .lines()
            .find(|l| l.starts_with("baseline: no migration"))
            .unwrap();
        assert!(idle.contains("30") && idle.contains("40"), "{idle}");
    }
}
