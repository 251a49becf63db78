//! `peervisor bench replica-pause`: what a replication costs the running source
//! VM, by the way its disk image is taken, for a small and a large disk, in the
//! same run.
//!
//! One guest on a private libvirtd (the penalty benchmark's rig) with two qcow2
//! disks the guest leaves alone, filled on the host with `--small-mib` and
//! `--large-mib` of data. For each disk, each round, both ways of taking the
//! image replication reads (migrate/replica/point_in_time.rs), in alternating order:
//!
//! - **pause**: pause the VM, copy the disk file locally (sparse), resume (the
//!   way before the overlay);
//! - **overlay**: freeze the disk under an overlay while the VM runs, read the
//!   frozen file as a replication plans it (every data byte, SHA-256), merge the
//!   overlay back.
//!
//! A probe (`GET /` on the guest's HTTP server, started every 25 ms, overlapping)
//! watches each; its longest gap is what a client of the VM sees. The same probe
//! over a window with nothing happening is the baseline.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::penalty::guest::{BenchGuest, SCRATCH_SERIAL};
use crate::hypervisor::accel::Accel;
use crate::migrate::replica::point_in_time::{DiskImage, Method};
use crate::migrate::replica::sparse;
use crate::model::VmState;
use crate::services::probe::GapProbe;

/// Quiet time before and after each measured step.
const SETTLE: Duration = Duration::from_secs(1);
/// Length of the probe window without anything happening.
const IDLE_WINDOW: Duration = Duration::from_secs(3);

pub struct Options {
    pub rounds: usize,
    pub small_mib: u64,
    pub large_mib: u64,
    pub accel: Accel,
    pub image_dir: PathBuf,
    /// The private libvirtd's directory.
    pub bench_dir: PathBuf,
}

/// One measured image.
struct Sample {
    disk: usize,
    method: Method,
    /// How long the VM was paused (pause), or None.
    paused_ms: Option<u64>,
    overlay_ms: Option<u64>,
    commit_ms: Option<u64>,
    /// Take, read, give back: the whole step.
    seconds: f64,
    gap_ms: Option<u64>,
}

pub async fn run(opts: &Options) -> Result<String> {
    if opts.rounds == 0 || opts.rounds > 20 {
        bail!("--rounds must be between 1 and 20, got {}", opts.rounds);
    }
    if opts.small_mib == 0 || opts.large_mib < opts.small_mib || opts.large_mib > 16384 {
        bail!("need 0 < --small-mib <= --large-mib <= 16384");
    }
    crate::rig::ensure_image(&opts.image_dir).await?;
    let image = crate::image::find(&opts.image_dir, crate::image::DEFAULT_IMAGE)?;
    // Next to the VMs' disks, so the copies cost what a replication's would.
    let dir = crate::paths::disk_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".pvbench-pause-")
        .tempdir_in(&dir)?;
    let sizes = [opts.small_mib, opts.large_mib];
    let mut disks = Vec::new();
    for (i, mib) in sizes.iter().enumerate() {
        let path = work.path().join(format!("disk{i}.qcow2"));
        eprintln!("bench: filling {} with {mib} MiB of data…", path.display());
        fill_qcow2(&path, *mib).await?;
        disks.push(path);
    }
    let devices: String = disks
        .iter()
        .zip(["vda", "vdb"])
        .map(|(p, dev)| qcow2_disk_xml(p, dev))
        .collect();
    eprintln!("bench: booting the guest ({})…", opts.accel);
    let guest = BenchGuest::boot_with(&opts.bench_dir, opts.accel, &image, devices).await?;
    let outcome = tokio::select! {
        r = measure(&guest, &disks, opts.rounds) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    eprintln!("bench: stopping the guest…");
    guest.shutdown().await;
    let (samples, idle) = outcome?;
    Ok(table(&samples, &idle, &sizes, opts))
}

async fn measure(
    guest: &BenchGuest,
    disks: &[PathBuf],
    rounds: usize,
) -> Result<(Vec<Sample>, Vec<u64>)> {
    let (host, vm) = guest
        .host()
        .ok_or_else(|| anyhow!("the guest has no libvirt connection"))?;
    let probe = || GapProbe::start(guest.prober(Duration::from_secs(2)));
    let (mut samples, mut idle) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let window = probe();
        tokio::time::sleep(IDLE_WINDOW).await;
        idle.extend(window.finish().await.map(|g| g.longest_gap_ms()));
        let order = if round % 2 == 1 {
            [Method::Pause, Method::Overlay]
        } else {
            [Method::Overlay, Method::Pause]
        };
        for (d, disk) in disks.iter().enumerate() {
            for method in order {
                let window = probe();
                tokio::time::sleep(SETTLE).await;
                let started = Instant::now();
                let image = DiskImage::take(host, vm, VmState::Running, disk, method).await?;
                let path = image.path().to_path_buf();
                // Read it as a replication does (plan: extents, SHA-256 of all data).
                tokio::task::spawn_blocking(move || sparse::plan(&path)).await??;
                let report = image.release().await?;
                let seconds = started.elapsed().as_secs_f64();
                tokio::time::sleep(SETTLE).await;
                let gap_ms = window.finish().await.map(|g| g.longest_gap_ms());
                if method == Method::Overlay && report.method != "overlay" {
                    bail!("no overlay could be made (the VM was paused instead): see the log");
                }
                let sample = Sample {
                    disk: d,
                    method,
                    paused_ms: report.paused_ms,
                    overlay_ms: report.overlay_ms,
                    commit_ms: report.commit_ms,
                    seconds,
                    gap_ms,
                };
                eprintln!(
                    "bench: round {round}/{rounds}: disk {d} {method:?}: {seconds:.2} s, paused {} ms, overlay {} ms, commit {} ms, service gap {} ms",
                    opt(sample.paused_ms),
                    opt(sample.overlay_ms),
                    opt(sample.commit_ms),
                    opt(sample.gap_ms)
                );
                samples.push(sample);
            }
        }
    }
    Ok((samples, idle))
}

fn table(samples: &[Sample], idle: &[u64], sizes: &[u64; 2], opts: &Options) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "source VM during a replication's disk image, median of {} round(s), accel {}",
        opts.rounds, opts.accel
    );
    let _ = writeln!(
        out,
        "{:<10} {:<28} {:>10} {:>11} {:>10} {:>11} {:>9}",
        "data", "method", "paused ms", "overlay ms", "commit ms", "svc gap ms", "step s"
    );
    for (d, mib) in sizes.iter().enumerate() {
        for (method, label) in [
            (Method::Pause, "pause + local copy (before)"),
            (Method::Overlay, "overlay + commit (now)"),
        ] {
            let of = |f: &dyn Fn(&Sample) -> Option<u64>| {
                median(
                    samples
                        .iter()
                        .filter(|s| s.disk == d && s.method == method)
                        .filter_map(f)
                        .collect(),
                )
            };
            let secs = median(
                samples
                    .iter()
                    .filter(|s| s.disk == d && s.method == method)
                    .map(|s| (s.seconds * 1000.0) as u64)
                    .collect(),
            );
            let _ = writeln!(
                out,
                "{:<10} {:<28} {:>10} {:>11} {:>10} {:>11} {:>9}",
                format!("{mib} MiB"),
                label,
                opt(of(&|s| s.paused_ms)),
                opt(of(&|s| s.overlay_ms)),
                opt(of(&|s| s.commit_ms)),
                opt(of(&|s| s.gap_ms)),
                secs.map_or("-".into(), |ms| format!("{:.2}", ms as f64 / 1000.0))
            );
        }
    }
    let _ = writeln!(
        out,
        "{:<10} {:<28} {:>10} {:>11} {:>10} {:>11}",
        "",
        "baseline: probe, nothing",
        "",
        "",
        "",
        opt(median(idle.to_vec()))
    );
    out
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// A qcow2 of twice `mib` MiB virtual size whose first `mib` MiB hold data
/// (a non-zero pattern, so nothing is left out as zeros).
async fn fill_qcow2(path: &Path, mib: u64) -> Result<()> {
    let run = |program: &'static str, args: Vec<String>| async move {
        let out = tokio::process::Command::new(program)
            .args(&args)
            .output()
            .await
            .with_context(|| format!("running {program} (install qemu-utils)"))?;
        if !out.status.success() {
            bail!(
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        anyhow::Ok(())
    };
    let file = path.to_string_lossy().into_owned();
    run(
        "qemu-img",
        vec![
            "create".into(),
            "-q".into(),
            "-f".into(),
            "qcow2".into(),
            file.clone(),
            format!("{}M", mib * 2),
        ],
    )
    .await?;
    run(
        "qemu-io",
        vec![
            "-f".into(),
            "qcow2".into(),
            "-c".into(),
            format!("write -P 0x5a 0 {mib}M"),
            file,
        ],
    )
    .await
}

/// A qcow2 virtio disk as the VMs' data disks are attached (cache=none), with
/// the serial that makes the guest leave it alone.
fn qcow2_disk_xml(path: &Path, target: &str) -> String {
    format!(
        "    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2' cache='none'/>\n      <source file='{}'/>\n      <target dev='{target}' bus='virtio'/>\n      <serial>{SCRATCH_SERIAL}</serial>\n    </disk>\n",
        quick_xml::escape::escape(path.to_string_lossy().as_ref())
    )
}
