//! `peervisor bench replicate`: the replication disk transfer against rsync
//! --sparse, same disk files, same run, over loopback.
//!
//! Two disks are made: a raw sparse file (data scattered over a larger virtual
//! size) and the same disk converted to qcow2. Each is sent (a) by peervisor
//! between two real overlay nodes in this process (membership proof, noise,
//! yamux; plan + checksums + sparse write + read-back checksum), received by
//! the product's own disk receiver (`replica::transfer::receive_disk`, what a
//! replica's destination runs), and (b) by rsync --sparse to an rsync daemon on
//! 127.0.0.1 (plain TCP: no encryption, an advantage for the baseline). Then a
//! peervisor transfer cut halfway is resumed. Not included on either side: the
//! source VM's pause for a consistent copy and booting the replica. Target (the
//! design's): bytes on the wire at most 1.1x the allocated data.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use libp2p::{Multiaddr, PeerId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::migrate::replica::sparse::{self, DiskPlan};
use crate::migrate::replica::transfer::{receive_disk, send_chunks};
use crate::migrate::replica::wire::{self, Answer, Offer, Outcome};
use crate::node::protocol::REPLICA_PROTOCOL;
use crate::node::{self, Client, NodeConfig, identity::NetworkKey};

/// One transfer's figures.
struct Run {
    seconds: f64,
    /// Bytes the sender put on its connection (peervisor: stream payload; rsync:
    /// its "Total bytes sent").
    wire_bytes: u64,
    equal: bool,
}

pub async fn run(virtual_mib: u64, data_mib: u64, rounds: usize) -> Result<()> {
    if data_mib == 0 || data_mib * 2 > virtual_mib {
        bail!("--data-mib must be between 1 and half of --virtual-mib");
    }
    let rounds = rounds.max(1);
    let dir = tempfile::Builder::new()
        .prefix("pv-bench-replicate-")
        .tempdir()?;
    eprintln!("making a {virtual_mib} MiB disk with {data_mib} MiB of data…");
    let raw = dir.path().join("disk.raw");
    make_sparse_disk(&raw, virtual_mib << 20, data_mib << 20)?;
    let qcow2 = dir.path().join("disk.qcow2");
    let out = tokio::process::Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2)
        .output()
        .await
        .context("running qemu-img (install qemu-utils)")?;
    if !out.status.success() {
        bail!(
            "qemu-img convert: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    let target = Target::default();
    let (src, dst) = overlay_pair(target.clone()).await?;
    let mut targets = super::Targets::default();
    // Without rsync the table still shows ours, and says the baseline is missing.
    let rsyncd = RsyncDaemon::start(dir.path())
        .await
        .map_err(|e| format!("{e:#}"));
    let dest_dir = dir.path().join("dest");

    println!("replication disk transfer vs rsync --sparse, loopback, median of {rounds} run(s)");
    println!(
        "{:<6} {:>10} {:>10} {:>10} {:<21} {:>7} {:>11} {:>10} {:>5}",
        "disk",
        "virtual",
        "file",
        "allocated",
        "method",
        "time",
        "on the wire",
        "wire/alloc",
        "equal"
    );
    let mut qcow2_full_wire = 0;
    let mut target_lines = Vec::new();
    for (label, path) in [("qcow2", &qcow2), ("raw", &raw)] {
        let shape = plan_of(path).await?;
        let allocated = shape.allocated;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            // Interleaved, each to a fresh destination.
            let _ = std::fs::remove_dir_all(&dest_dir);
            std::fs::create_dir_all(&dest_dir)?;
            target.set(&dest_dir.join("p"), None);
            ours.push(peervisor_transfer(&src, &dst, path).await?);
            if let Ok(rsyncd) = &rsyncd {
                theirs.push(rsyncd.send(path, &dest_dir).await?);
            }
        }
        let ours_median = median_run(&ours);
        if label == "qcow2" {
            qcow2_full_wire = ours_median.wire_bytes;
        }
        let wire_ratio = ours_median.wire_bytes as f64 / allocated.max(1) as f64;
        target_lines.push(targets.check(
            &format!("{label}: peervisor's bytes on the wire <= 1.1x allocated, file equal"),
            &format!(
                "{wire_ratio:.2}x, {}",
                if ours.iter().all(|r| r.equal) {
                    "equal"
                } else {
                    "NOT equal"
                }
            ),
            wire_ratio <= 1.1 && ours.iter().all(|r| r.equal),
        ));
        if let Err(why) = &rsyncd {
            println!("{label:<6} rsync --sparse (tcp): NOT MEASURED ({why})");
        }
        for (method, runs) in [
            ("peervisor (overlay)", &ours),
            ("rsync --sparse (tcp)", &theirs),
        ] {
            if runs.is_empty() {
                continue;
            }
            let r = median_run(runs);
            println!(
                "{:<6} {:>10} {:>10} {:>10} {:<21} {:>6.2}s {:>11} {:>9.2}x {:>5}",
                label,
                mib(shape.virtual_size),
                mib(shape.file_size),
                mib(allocated),
                method,
                r.seconds,
                mib(r.wire_bytes),
                r.wire_bytes as f64 / allocated.max(1) as f64,
                if runs.iter().all(|r| r.equal) {
                    "yes"
                } else {
                    "NO"
                }
            );
        }
    }

    // A cut transfer, then the resumed one.
    let _ = std::fs::remove_dir_all(&dest_dir);
    std::fs::create_dir_all(&dest_dir)?;
    let plan = plan_of(&qcow2).await?;
    let half = plan.chunks.len() / 2;
    target.set(&dest_dir.join("p"), Some(half));
    if peervisor_transfer(&src, &dst, &qcow2).await.is_ok() {
        bail!("the transfer cut after {half} chunks did not fail");
    }
    target.set(&dest_dir.join("p"), None);
    let resumed = peervisor_transfer(&src, &dst, &qcow2).await?;
    println!(
        "\nqcow2 cut after {half} of {} chunks, then resumed: {} on the wire ({:.0}% of a full transfer), {:.2}s, equal: {}",
        plan.chunks.len(),
        mib(resumed.wire_bytes),
        100.0 * resumed.wire_bytes as f64 / qcow2_full_wire.max(1) as f64,
        resumed.seconds,
        if resumed.equal { "yes" } else { "NO" }
    );
    println!(
        "peervisor: only non-zero data extents cross, with checksums, encrypted (noise) and\n\
         authenticated; rsync sends every byte of the file, holes as zeros, unencrypted."
    );
    if !resumed.equal {
        target_lines.push(targets.check("resumed transfer: file equal", "NOT equal", false));
    }
    if let Err(why) = &rsyncd {
        target_lines.push(targets.missing_baseline("rsync --sparse", why));
    }
    for line in target_lines {
        println!("{line}");
    }
    targets.finish()
}

/// Where the benchmark's receiver writes the next transfer, and after how many
/// chunks it cuts it (None: never).
#[derive(Clone, Default)]
struct Target(Arc<std::sync::Mutex<(PathBuf, Option<usize>)>>);

impl Target {
    fn set(&self, path: &Path, cut: Option<usize>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = (path.to_path_buf(), cut);
    }

    fn get(&self) -> (PathBuf, Option<usize>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn median_run(runs: &[Run]) -> Run {
    let mut sorted: Vec<&Run> = runs.iter().collect();
    sorted.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let m = sorted[sorted.len() / 2];
    Run {
        seconds: m.seconds,
        wire_bytes: m.wire_bytes,
        equal: m.equal,
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A sparse file of `size` bytes with `data` bytes of random data in runs of
/// 64 KiB to 1 MiB scattered over it (like a filesystem's used blocks).
fn make_sparse_disk(path: &Path, size: u64, data: u64) -> Result<()> {
    let f = File::create(path)?;
    f.set_len(size)?;
    let mut written = 0u64;
    let slots = size / (1 << 20);
    let mut used = vec![false; slots as usize];
    while written < data {
        let slot = rand::random::<u64>() % slots;
        if used[slot as usize] {
            continue;
        }
        used[slot as usize] = true;
        let len = ((rand::random::<u64>() % 16) + 1) * (64 << 10);
        let len = len.min(data - written);
        let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        f.write_all_at(&bytes, slot << 20)?;
        written += len;
    }
    f.sync_all()?;
    Ok(())
}

async fn plan_of(path: &Path) -> Result<DiskPlan> {
    let p = path.to_path_buf();
    Ok(tokio::task::spawn_blocking(move || sparse::plan(&p)).await??)
}

/// Two overlay nodes on loopback in this process, connected.
async fn overlay_pair(target: Target) -> Result<(Client, Client)> {
    let key = NetworkKey::new(rand::random());
    let port_a = free_port()?;
    let addr_a: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port_a}").parse()?;
    let start = |nick: &str, listen: Multiaddr, bootstrap: Vec<Multiaddr>| {
        let (client, mut events) = node::start(NodeConfig {
            keypair: libp2p::identity::Keypair::generate_ed25519(),
            network_key: key,
            nick: nick.into(),
            listen: vec![listen],
            bootstrap,
            mdns: false,
            relay: Default::default(),
            connections: Default::default(),
        })?;
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        anyhow::Ok(client)
    };
    let a = start("bench-src", addr_a.clone(), Vec::new())?;
    let b = start(
        "bench-dst",
        format!("/ip4/127.0.0.1/tcp/{}", free_port()?).parse()?,
        vec![addr_a],
    )?;
    let b_id = b.local_peer_id().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !a
        .status()
        .await?
        .peers
        .iter()
        .any(|p| p.peer_id == b_id && p.connected)
    {
        if Instant::now() > deadline {
            bail!("the two bench nodes did not connect");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let server = b.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(server, target).await {
            eprintln!("bench receiver: {e:#}");
        }
    });
    Ok((a, b))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The destination's disk half of a replication, into the file `target` names:
/// the product's receiver, on a stream that ends after `cut` chunks when the
/// target says so.
async fn serve(node: Client, target: Target) -> Result<()> {
    let mut incoming = node
        .streams()
        .accept(REPLICA_PROTOCOL)
        .map_err(|e| anyhow!("{e}"))?;
    while let Some((_, stream)) = incoming.next().await {
        let (path, cut) = target.get();
        let mut s = stream.compat();
        let result: Result<()> = async {
            let offer: Offer = wire::receive(&mut s).await?;
            let plan = offer.disk.ok_or_else(|| anyhow!("no disk"))?;
            // The first `cut` chunks of the plan (those a fresh file needs first).
            // Reading stops there: an end of stream mid-transfer, as a cut
            // overlay stream gives the receiver.
            let cut_after = cut.map_or(u64::MAX, |n| {
                plan.chunks
                    .iter()
                    .take(n)
                    .map(|c| 4 + u64::from(c.len))
                    .sum::<u64>()
            });
            let (read, write) = tokio::io::split(&mut s);
            let mut s = tokio::io::join(read.take(cut_after), write);
            let digest = receive_disk(&mut s, &plan, &path, |_| {}, |_, _| {}).await?;
            wire::send(
                &mut s,
                &Outcome::Started {
                    ip: String::new(),
                    disk_sha256: digest,
                },
            )
            .await?;
            Ok(())
        }
        .await;
        if let Err(e) = result
            && cut.is_none()
        {
            eprintln!("bench receiver: {e:#}");
        }
    }
    Ok(())
}

/// Sends `path` to `dst`, as a replication does (plan with checksums, the
/// chunks the receiver lacks, read-back checksum). A receiver told to cut stops
/// reading; the sender then fails, as it would on a cut stream.
async fn peervisor_transfer(src: &Client, dst: &Client, path: &Path) -> Result<Run> {
    let started = Instant::now();
    let plan = plan_of(path).await?;
    let offer = Offer {
        disk: Some(plan.clone()),
        ..Offer::default()
    };
    let peer: PeerId = dst.local_peer_id();
    let stream = src
        .streams()
        .open_stream(peer, REPLICA_PROTOCOL)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let mut s = stream.compat();
    let mut wire_bytes = wire::send(&mut s, &offer).await?;
    let Answer::Accept { need } = wire::receive(&mut s).await? else {
        bail!("refused");
    };
    let file = Arc::new(File::open(path)?);
    let sent = send_chunks(&mut s, &plan, &need, file, |_, _| {}).await?;
    wire_bytes += sent.stream_bytes;
    let outcome: Outcome = wire::receive(&mut s).await?;
    let _ = s.shutdown().await;
    let Outcome::Started { disk_sha256, .. } = outcome else {
        bail!("the receiver failed");
    };
    Ok(Run {
        seconds: started.elapsed().as_secs_f64(),
        wire_bytes,
        equal: disk_sha256.is_some() && disk_sha256 == plan.file_sha256,
    })
}

/// An rsync daemon on 127.0.0.1 with a writable module, stopped when dropped.
struct RsyncDaemon {
    port: u16,
    child: tokio::process::Child,
}

impl RsyncDaemon {
    async fn start(dir: &Path) -> Result<RsyncDaemon> {
        let port = free_port()?;
        let dest = dir.join("dest");
        std::fs::create_dir_all(&dest)?;
        let conf = dir.join("rsyncd.conf");
        std::fs::write(
            &conf,
            format!(
                "use chroot = false\n[bench]\npath = {}\nread only = false\nuid = root\ngid = root\n",
                dest.display()
            ),
        )?;
        let child = tokio::process::Command::new("rsync")
            .args(["--daemon", "--no-detach", "--address", "127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--config={}", conf.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting rsync --daemon (install rsync: scripts/setup.sh)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("rsync daemon did not listen on 127.0.0.1:{port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(RsyncDaemon { port, child })
    }

    async fn send(&self, path: &Path, dest_dir: &Path) -> Result<Run> {
        let started = Instant::now();
        let out = tokio::process::Command::new("rsync")
            .args(["--sparse", "--stats"])
            .arg(path)
            .arg(format!("rsync://127.0.0.1:{}/bench/r", self.port))
            .output()
            .await
            .context("running rsync")?;
        let seconds = started.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("rsync: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let stats = String::from_utf8_lossy(&out.stdout);
        let wire_bytes = stats
            .lines()
            .find_map(|l| l.strip_prefix("Total bytes sent: "))
            .map(|v| v.replace(',', "").trim().parse::<u64>())
            .transpose()?
            .ok_or_else(|| anyhow!("rsync --stats printed no 'Total bytes sent'"))?;
        let equal = files_equal(path, &dest_dir.join("r")).await?;
        Ok(Run {
            seconds,
            wire_bytes,
            equal,
        })
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn files_equal(a: &Path, b: &Path) -> Result<bool> {
    let (a, b) = (a.to_path_buf(), b.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let (pa, pb) = (sparse::plan(&a)?, sparse::plan(&b)?);
        anyhow::Ok(pa.file_size == pb.file_size && pa.file_sha256 == pb.file_sha256)
    })
    .await?
}
