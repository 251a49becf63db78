//! The virtualization-penalty benchmark (Bailey & Vella 2010: I/O-bound Hadoop
//! work pays a virtualization penalty, CPU-bound work hardly does), reproduced
//! with one command: the same workloads natively on this host and inside a guest
//! VM on this host, repeated, as a table of throughputs and the penalty.
//!
//! Fairness: both sides run the same script (assets/guest/rootfs/bin/pv-bench)
//! with the same static busybox binary (the guest's initramfs carries a copy of
//! the host's), and both time it from inside with the same clock call. The I/O
//! workloads use O_DIRECT on both sides: natively on a preallocated file, in the
//! guest on a virtio disk backed by a file in the same directory that QEMU opens
//! with cache=none, so neither side's page cache hides the disk. Every run of a
//! workload is one process doing all of it (awk, dd, or `pv-randio` for the
//! random I/O), so process start-up, slow under TCG, is paid once per run, and
//! each reports the amount it did, which must be the amount asked for.

pub(crate) mod guest;
pub mod table;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::hypervisor::accel::AccelChoice;
use crate::jobs::collector::PENALTY_LATEST;
use crate::model::{PenaltyRow, PenaltyView, WorkloadKind};

/// The workload script, also laid into the guest at /bin/pv-bench.
const SCRIPT: &str = include_str!("../../../assets/guest/rootfs/bin/pv-bench");
/// Where the guest image has the random-I/O tool the script runs.
const RANDIO_IN_GUEST: &str = "bin/pv-randio";

/// Size of the disk (guest) and file (native) the I/O workloads use.
const TARGET_MIB_FULL: u64 = 1024;
const TARGET_MIB_SHORT: u64 = 64;

#[derive(Debug, Clone)]
pub struct PenaltyOptions {
    pub runs: u32,
    /// CI-sized amounts.
    pub short: bool,
    /// Also random I/O the old way, one `dd` per operation (`rand-*-dd` rows).
    pub per_op_dd: bool,
    pub accel: AccelChoice,
    pub image_dir: PathBuf,
    /// Results and scratch files go under `<bench_dir>`.
    pub bench_dir: PathBuf,
}

/// One workload with its amount per run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    pub name: &'static str,
    pub kind: WorkloadKind,
    pub amount: u64,
    pub unit: &'static str,
}

impl Workload {
    /// Throughput in `unit` from the amount and the elapsed microseconds.
    pub fn throughput(&self, usec: u64) -> f64 {
        let secs = usec.max(1) as f64 / 1e6;
        match self.name {
            "cpu" => self.amount as f64 / 1e6 / secs, // million loop iterations/s
            _ => self.amount as f64 / secs,           // MiB/s or IOPS
        }
    }
}

/// What runs, in order, each run; with `per_op_dd` also the random I/O as it
/// was measured before pv-randio, one `dd` process per 4 KiB operation (at the
/// old amounts), so one run shows how much of that figure was process start-up.
pub fn plan(short: bool, per_op_dd: bool) -> Vec<Workload> {
    let (loops, mib, ops) = if short {
        (300_000, TARGET_MIB_SHORT, 1000)
    } else {
        (2_000_000, TARGET_MIB_FULL, 5000)
    };
    let io = WorkloadKind::Io;
    let mut all = vec![
        Workload {
            name: "cpu",
            kind: WorkloadKind::Cpu,
            amount: loops,
            unit: "Mloop/s",
        },
        Workload {
            name: "seq-write",
            kind: io,
            amount: mib,
            unit: "MiB/s",
        },
        Workload {
            name: "seq-read",
            kind: io,
            amount: mib,
            unit: "MiB/s",
        },
        Workload {
            name: "rand-read",
            kind: io,
            amount: ops,
            unit: "IOPS",
        },
        Workload {
            name: "rand-write",
            kind: io,
            amount: ops,
            unit: "IOPS",
        },
    ];
    if per_op_dd {
        let ops = if short { 100 } else { 500 };
        for name in ["rand-read-dd", "rand-write-dd"] {
            all.push(Workload {
                name,
                kind: io,
                amount: ops,
                unit: "IOPS",
            });
        }
    }
    all
}

/// Parses the script's "result workload=W amount=N usec=T" line; N must be the
/// amount asked for (a tool that stopped short would flatter the figure).
pub fn parse_result(output: &str, expected: &Workload) -> Result<u64> {
    let line = output
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("result ") || l.starts_with("error"))
        .with_context(|| format!("no result line from pv-bench: {:?}", output.trim()))?;
    if let Some(err) = line.strip_prefix("error") {
        bail!("pv-bench {}: {}", expected.name, err.trim());
    }
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    if field("workload") != Some(expected.name) {
        bail!("pv-bench answered for another workload: {line:?}");
    }
    let done: Option<u64> = field("amount").and_then(|v| v.parse().ok());
    if done != Some(expected.amount) {
        bail!(
            "pv-bench {} did {} of the {} asked for: {line:?}",
            expected.name,
            done.map_or("an unknown amount".into(), |d| d.to_string()),
            expected.amount
        );
    }
    let usec: u64 = field("usec")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("pv-bench result without usec: {line:?}"))?;
    if usec == 0 {
        bail!(
            "pv-bench measured zero time for {}: {line:?}",
            expected.name
        );
    }
    Ok(usec)
}

/// Runs the benchmark; `progress` sees every step (for stderr or the console).
pub async fn run(
    opts: &PenaltyOptions,
    progress: &mut dyn FnMut(&PenaltyView),
) -> Result<PenaltyView> {
    if opts.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let workloads = plan(opts.short, opts.per_op_dd);
    let (accel, why) = opts.accel.resolve();
    let mut view = PenaltyView {
        state: "running".into(),
        progress: "preparing".into(),
        steps_done: 0,
        steps_total: opts.runs * workloads.len() as u32 * 2,
        host: host_description(),
        accel: why,
        runs: opts.runs,
        short: opts.short,
        started_at: unix_now(),
        rows: workloads
            .iter()
            .map(|w| PenaltyRow {
                workload: w.name.into(),
                kind: Some(w.kind),
                unit: w.unit.into(),
                ..PenaltyRow::default()
            })
            .collect(),
        error: None,
    };
    progress(&view);
    let outcome = measure(opts, accel, &workloads, &mut view, progress).await;
    match &outcome {
        Ok(()) => {
            view.state = "done".into();
            view.progress = "finished".into();
        }
        Err(e) => {
            view.state = "failed".into();
            view.error = Some(format!("{e:#}"));
        }
    }
    progress(&view);
    outcome.map(|()| view)
}

async fn measure(
    opts: &PenaltyOptions,
    accel: crate::hypervisor::accel::Accel,
    workloads: &[Workload],
    view: &mut PenaltyView,
    progress: &mut dyn FnMut(&PenaltyView),
) -> Result<()> {
    let target_mib = if opts.short {
        TARGET_MIB_SHORT
    } else {
        TARGET_MIB_FULL
    };
    let work = opts.bench_dir.join("work");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let busybox = busybox_path()?;
    let script = work.join("pv-bench");
    std::fs::write(&script, SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    let randio = write_randio(&work)?;
    let native_target = work.join("native.img");
    let guest_disk = work.join("guest.img");
    view.progress = format!(
        "filling {target_mib} MiB scratch files in {}",
        work.display()
    );
    progress(view);
    for f in [&native_target, &guest_disk] {
        fill(f, target_mib)?;
    }
    let _scratch = RemoveOnDrop(vec![
        native_target.clone(),
        guest_disk.clone(),
        script.clone(),
        randio.clone(),
    ]);
    let native = Native {
        busybox,
        script,
        randio,
    };

    view.progress = "building/checking the guest image".into();
    progress(view);
    let image_dir = opts.image_dir.clone();
    let image = tokio::task::spawn_blocking(move || {
        crate::image::build(&image_dir, &crate::image::ImageSpec::default(), &mut |_| {})
    })
    .await??
    .image;

    view.progress = format!("booting the benchmark guest ({accel})");
    progress(view);
    let vm = guest::BenchGuest::boot(&opts.bench_dir, accel, &image, &guest_disk).await?;
    let measurements = async {
        for run in 1..=opts.runs {
            for (i, w) in workloads.iter().enumerate() {
                view.progress = format!("run {run}/{}: {} natively", opts.runs, w.name);
                progress(view);
                let usec = native.run(w, &native_target).await?;
                view.rows[i].native.push(w.throughput(usec));
                view.steps_done += 1;

                view.progress = format!("run {run}/{}: {} in the VM", opts.runs, w.name);
                progress(view);
                let usec = vm.run(w).await?;
                view.rows[i].vm.push(w.throughput(usec));
                view.steps_done += 1;
                progress(view);
            }
        }
        Ok(())
    };
    // Ctrl-C stops the runs but still tears the guest, daemon and namespace down.
    let result = tokio::select! {
        r = measurements => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    vm.shutdown().await;
    result
}

/// The workloads' native side: the same script, busybox and tools as the guest's.
struct Native {
    busybox: PathBuf,
    script: PathBuf,
    randio: PathBuf,
}

impl Native {
    async fn run(&self, w: &Workload, target: &Path) -> Result<u64> {
        let (busybox, script) = (&self.busybox, &self.script);
        let out = tokio::process::Command::new(busybox)
            .arg("sh")
            .arg(script)
            .arg(w.name)
            .arg(w.amount.to_string())
            .arg(target)
            .env("BUSYBOX", busybox)
            .env("RANDIO", &self.randio)
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("running {} sh {}", busybox.display(), script.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_result(&text, w).with_context(|| format!("native {}", w.name))
    }
}

/// Writes the guest image's random-I/O tool into `dir`, for the native runs.
fn write_randio(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let (_, bytes, _) = crate::image::GUEST_ROOTFS
        .iter()
        .find(|(path, _, _)| *path == RANDIO_IN_GUEST)
        .context("this build carries no pv-randio (build.rs)")?;
    let path = dir.join("pv-randio");
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(path)
}

/// The host's busybox: the binary the image builder copies into the guest.
fn busybox_path() -> Result<PathBuf> {
    crate::image::initramfs::busybox_path()
}

/// Writes `mib` MiB of non-zero data, so reads hit allocated blocks (not holes).
fn fill(path: &Path, mib: u64) -> Result<()> {
    use std::io::Write;
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let block: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    for _ in 0..mib {
        f.write_all(&block)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))
}

struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// "hostname (CPU model, N CPUs)".
fn host_description() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{name} ({model}, {cpus} CPUs)")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `peervisor bench penalty`: runs, saves, and prints the table (or JSON, CSV).
pub async fn command(
    setup: &crate::bench::Setup,
    runs: Option<u32>,
    json: bool,
    csv: bool,
    short: bool,
    per_op_dd: bool,
) -> Result<()> {
    let opts = PenaltyOptions {
        runs: runs.unwrap_or(if short { 2 } else { 3 }),
        short,
        per_op_dd,
        accel: setup.accel,
        image_dir: setup.image_dir.clone(),
        bench_dir: setup.data_dir.root().join("bench"),
    };
    let view = run_and_save(&opts).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else if csv {
        print!("{}", table::csv(&view));
    } else {
        print!("{}", table::text(&view));
    }
    Ok(())
}

/// Runs with progress on stderr, keeping `penalty-latest.json` current (a node
/// on the same data dir shows it live), and saves the results.
pub async fn run_and_save(opts: &PenaltyOptions) -> Result<PenaltyView> {
    let latest = opts.bench_dir.join(PENALTY_LATEST);
    let _ = std::fs::create_dir_all(&opts.bench_dir);
    let mut last_line = String::new();
    let mut report = |view: &PenaltyView| {
        let line = format!(
            "[{}/{}] {}",
            view.steps_done, view.steps_total, view.progress
        );
        if line != last_line {
            eprintln!("{line}");
            last_line = line;
        }
        if let Ok(json) = serde_json::to_vec(view) {
            let _ = std::fs::write(&latest, json);
        }
    };
    let view = run(opts, &mut report).await?;
    let path = save(&opts.bench_dir, &view)?;
    eprintln!("results saved to {}", path.display());
    Ok(view)
}

/// Saves the results as `<bench_dir>/penalty-<unix time>.json` and `penalty-latest.json`.
pub fn save(bench_dir: &Path, view: &PenaltyView) -> Result<PathBuf> {
    std::fs::create_dir_all(bench_dir)
        .with_context(|| format!("creating {}", bench_dir.display()))?;
    let json = serde_json::to_vec_pretty(view).context("encoding results")?;
    let path = bench_dir.join(format!("penalty-{}.json", view.started_at));
    std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
    let latest = bench_dir.join(PENALTY_LATEST);
    std::fs::write(&latest, &json).with_context(|| format!("writing {}", latest.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_parse_and_errors_are_reported() {
        let w = plan(true, false)[1];
        assert_eq!(
            parse_result("result workload=seq-write amount=64 usec=500000\n", &w).unwrap(),
            500_000
        );
        // A run that did less than asked (dd stopped at the end of a short
        // file, an unknown count) is an error, not a fast run.
        for short in [
            "result workload=seq-write amount=63 usec=500000",
            "result workload=seq-write amount= usec=500000",
            "result workload=seq-write usec=500000",
        ] {
            let e = parse_result(short, &w).unwrap_err().to_string();
            assert!(e.contains("of the 64 asked for"), "{short}: {e}");
        }
        assert!(
            (w.throughput(500_000) - 128.0).abs() < 1e-9,
            "64 MiB in 0.5 s"
        );
        let e = parse_result("error no data disk /dev/vda\n", &w)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no data disk"), "{e}");
        assert!(parse_result("result workload=cpu amount=1 usec=5", &w).is_err());
        assert!(parse_result("<html>500</html>", &w).is_err());
        assert!(parse_result("result workload=seq-write amount=64 usec=0", &w).is_err());
    }

    /// Every workload through the real script, busybox and pv-randio on the
    /// host, on a small file: each reports doing exactly what it was asked.
    #[test]
    fn the_same_script_runs_natively_and_does_the_whole_amount() {
        let busybox = busybox_path().unwrap_or_else(|e| panic!("{e:#}"));
        // O_DIRECT needs a file system that has it (/tmp may be tmpfs).
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let script = dir.path().join("pv-bench");
        std::fs::write(&script, SCRIPT).unwrap();
        let native = Native {
            busybox,
            script,
            randio: write_randio(dir.path()).unwrap(),
        };
        let target = dir.path().join("target.img");
        fill(&target, 64).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        for w in plan(true, true) {
            let w = Workload {
                amount: if w.name == "cpu" {
                    10_000
                } else {
                    w.amount.min(16)
                },
                ..w
            };
            let usec = rt
                .block_on(native.run(&w, &target))
                .unwrap_or_else(|e| panic!("{}: {e:#}", w.name));
            assert!(w.throughput(usec) > 0.0, "{}", w.name);
        }
        // Asked for more than the file holds, dd copies less: an error.
        let w = Workload {
            amount: 65,
            ..plan(true, false)[2]
        };
        let e = rt.block_on(native.run(&w, &target)).unwrap_err();
        assert!(format!("{e:#}").contains("did 64 of the 65"), "{e:#}");
    }
}
