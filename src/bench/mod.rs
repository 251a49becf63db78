//! `peervisor bench ...`: every benchmark command and its rig, each measuring
//! its baseline in the same run. Nothing here runs inside a node.

pub mod boot;
pub mod load;
pub mod migrate;
pub mod penalty;
pub mod proxy;
pub mod replica_pause;
pub mod replicate;
pub mod scale;
pub mod stats;

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::hypervisor::accel::AccelChoice;
use crate::paths::DataDir;

/// `peervisor bench ...`.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Consume proxy vs direct loopback and ssh -L: throughput, latency, concurrency.
    Proxy {
        /// MiB sent per throughput run.
        #[arg(long, default_value_t = 256)]
        megabytes: u64,
        /// Small request/response round trips for the latency figures.
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        #[arg(long, default_value_t = 100)]
        connections: usize,
    },
    /// Many concurrent consumer connections through one peer, every reply checked:
    /// lost and corrupted replies, throughput, node memory; direct as the baseline.
    Load {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Requests in all, spread over the connections.
        #[arg(long, default_value_t = 10000)]
        requests: usize,
        #[arg(long)]
        json: bool,
    },
    /// Publish -> visible on every peer, in a local overlay.
    Discovery {
        #[arg(long, default_value_t = 50)]
        peers: usize,
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// What one peer pays as the overlay grows: idle CPU, traffic, memory,
    /// connections, discovery latency, convergence (join, silent leave, healed
    /// partition) and DHT lookups, for each size given. docs/scale.md.
    Scale {
        /// Overlay sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [10, 30, 100])]
        peers: Vec<usize>,
        /// `sim`: nodes in this process over memory pipes; `real`: `peervisor node`
        /// processes, one network namespace each.
        #[arg(long, value_enum, default_value_t = scale::Mode::Sim)]
        mode: scale::Mode,
        /// The simulation's secure channel: the product's (TLS 1.3 + ML-KEM
        /// preferred), or keyed noise alone (cheaper handshakes). Sim only.
        #[arg(long, value_enum, default_value_t = scale::Channel::Noise)]
        channel: scale::Channel,
        /// Seconds a simulated connection's handshake may take before it is
        /// dropped (a real node's: 10). Sim only.
        #[arg(long, default_value_t = 10)]
        handshake_timeout: u64,
        /// Nodes (simulated, or `peervisor node` processes) start in waves of this many...
        #[arg(long, default_value_t = 25)]
        wave: usize,
        /// ...this many seconds apart (wall clock, not scaled by --time-scale).
        #[arg(long, default_value_t = 2.0)]
        wave_pause: f64,
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Seconds of idle overlay measured.
        #[arg(long, default_value_t = 30)]
        idle: u64,
        /// Seconds to wait after the overlay settled, before the idle window.
        #[arg(long, default_value_t = 20)]
        quiet: u64,
        /// Seconds the 10% partition lasts.
        #[arg(long, default_value_t = 20)]
        partition: u64,
        /// Also measure the overlay traffic of remote VM figures (sim only):
        /// one console, then every peer's, watching a full screen of other
        /// peers' VMs for the idle window each.
        #[arg(long)]
        remote_figures: bool,
        /// The longest wait, in seconds, for every node to know every
        /// other before measuring (it ends sooner once the overlay stops
        /// gaining for a minute). Default: 300, or 1.8 per peer if more.
        #[arg(long)]
        settle_cap: Option<u64>,
        /// Sim: run the node's timers (ping, silence limit, gossip heartbeat,
        /// anti-entropy, upkeep, handshake bound, announcements) and the
        /// harness's waits this many times slower, for a host too slow for the
        /// overlay's size; figures are given in node time, the factor in the
        /// table's header.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
        time_scale: u32,
    },
    /// Cost of one stats tick (one bulk libvirt call + rates) against libvirt's
    /// test driver with many domains, against per-domain calls as the baseline.
    Stats {
        #[arg(long, default_value_t = 1000)]
        domains: usize,
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Print the figures as JSON (docs/cli-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Replication's disk transfer over the overlay against rsync --sparse over
    /// loopback, on a raw sparse disk and its qcow2 conversion; then a cut
    /// transfer resumed.
    Replicate {
        /// Size of the disk the guest would see, MiB.
        #[arg(long, default_value_t = 1024)]
        virtual_mib: u64,
        /// Random data scattered over it, MiB.
        #[arg(long, default_value_t = 128)]
        data_mib: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// What a replication costs the running source VM: its pause and the service
    /// gap a client sees while the disk image is taken, paused local copy (the
    /// former way) against an overlay + block commit, for a small and a large disk.
    ReplicaPause {
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Data on the small disk, MiB.
        #[arg(long, default_value_t = 64)]
        small_mib: u64,
        /// Data on the large disk, MiB.
        #[arg(long, default_value_t = 1024)]
        large_mib: u64,
    },
    /// Boot time (create -> guest HTTP answers) on this node's libvirt: the
    /// default boot (PVH kernel + qboot) against bzImage + SeaBIOS, plus image
    /// build times.
    Boot {
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Live migration over the overlay against libvirt's direct migration between
    /// the same two hypervisor instances (two local nodes, one guest, same run):
    /// total time, libvirt's downtime, the service gap seen by a probe, bytes.
    Migrate {
        /// Rounds of four migrations (each method once each way).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Guest memory, MiB.
        #[arg(long = "memory", value_name = "MIB", default_value_t = 128)]
        memory_mib: u64,
        /// Give the guest a qcow2 data disk of this size and the two nodes disk
        /// dirs of their own: every migration copies the disk (direct: libvirt's
        /// own TCP connections between the daemons).
        #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=65536))]
        data_disk: Option<u64>,
        /// The libvirt migration the overlay is measured against: `native` (the
        /// call peervisor makes, QEMU's stream over its own TCP connection, in the
        /// clear), `tls` (the same, encrypted by QEMU's TLS; certificates are made
        /// for the run with openssl) or `tunnelled` (QEMU's stream inside
        /// libvirt's RPC connection; not with --data-disk, which libvirt cannot
        /// tunnel).
        #[arg(long, value_enum, default_value_t = migrate::Direct::Native)]
        direct: migrate::Direct,
        /// Print every migration as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Virtualization penalty: the same CPU- and I/O-bound workloads natively and
    /// in a guest VM on this host; prints throughputs and the penalty.
    Penalty {
        /// Repetitions of every workload on each side (default 3, or 2 with --short).
        #[arg(long)]
        runs: Option<u32>,
        /// Print the results as JSON.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print the results as CSV.
        #[arg(long)]
        csv: bool,
        /// CI-sized amounts (seconds, not minutes).
        #[arg(long)]
        short: bool,
        /// Also time random I/O the old way, one `dd` process per 4 KiB
        /// operation (rows rand-read-dd, rand-write-dd): how much of that
        /// figure was process start-up.
        #[arg(long)]
        per_op_dd: bool,
    },
}

/// A benchmark's targets and baselines: each printed on a line of its own as
/// met, MISSED or NOT MEASURED; [`Targets::finish`] fails the command when any
/// target was missed or any baseline is missing, so a script (or CI) sees it.
#[derive(Default)]
pub struct Targets {
    missed: Vec<String>,
}

impl Targets {
    /// "target: WHAT: FIGURE met|MISSED", remembering a miss.
    pub fn check(&mut self, what: &str, figure: &str, ok: bool) -> String {
        if !ok {
            self.missed.push(what.to_string());
        }
        format!(
            "target: {what}: {figure} {}",
            if ok { "met" } else { "MISSED" }
        )
    }

    /// "target: WHAT: NOT MEASURED (WHY)", remembered as a miss.
    pub fn not_measured(&mut self, what: &str, why: &str) -> String {
        self.missed.push(format!("{what} (not measured)"));
        format!("target: {what}: NOT MEASURED ({why})")
    }

    /// A baseline that could not be measured: the comparison is missing.
    pub fn missing_baseline(&mut self, baseline: &str, why: &str) -> String {
        self.missed.push(format!("baseline {baseline}"));
        format!("baseline {baseline}: NOT MEASURED ({why})")
    }

    pub fn finish(self) -> Result<()> {
        if self.missed.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("targets missed or not measured: {}", self.missed.join(", "))
        }
    }
}

/// What the benchmarks take from the node's flags.
pub struct Setup {
    /// The node's data dir: `bench boot` asks its node; results go to its `bench/`.
    pub data_dir: DataDir,
    /// `--accel` for the guests the benchmarks boot.
    pub accel: AccelChoice,
    /// Where guest images are kept.
    pub image_dir: PathBuf,
    /// `--guest-netns`: the namespace of the node's guests (`bench boot`).
    pub guest_netns: String,
}

/// Runs one benchmark and prints its results.
pub async fn run(command: BenchCommand, setup: &Setup) -> Result<()> {
    match command {
        BenchCommand::Proxy {
            megabytes,
            requests,
            connections,
        } => proxy::proxy(megabytes, requests, connections).await,
        BenchCommand::Load {
            connections,
            requests,
            json,
        } => load::run(connections, requests, json).await,
        BenchCommand::Discovery { peers, rounds } => proxy::discovery(peers, rounds).await,
        BenchCommand::Scale {
            peers,
            mode,
            channel,
            handshake_timeout,
            wave,
            wave_pause,
            rounds,
            idle,
            quiet,
            partition,
            remote_figures,
            settle_cap,
            time_scale,
        } => {
            let options = scale::Options {
                remote_figures,
                mode,
                channel,
                handshake_timeout: std::time::Duration::from_secs(handshake_timeout),
                wave: wave.max(1),
                wave_pause: std::time::Duration::from_secs_f64(wave_pause.max(0.0)),
                rounds,
                idle: std::time::Duration::from_secs(idle),
                quiet: std::time::Duration::from_secs(quiet),
                partition: std::time::Duration::from_secs(partition),
                settle_cap: settle_cap.map(std::time::Duration::from_secs),
                time_scale,
            };
            scale::command(&peers, options).await
        }
        BenchCommand::Stats {
            domains,
            rounds,
            json,
        } => {
            let tick =
                tokio::task::spawn_blocking(move || stats::stats_tick(domains, rounds)).await??;
            if json {
                println!("{}", serde_json::to_string_pretty(&tick)?);
            } else {
                print!("{}", tick.text());
            }
            Ok(())
        }
        BenchCommand::Replicate {
            virtual_mib,
            data_mib,
            rounds,
        } => replicate::run(virtual_mib, data_mib, rounds).await,
        BenchCommand::Boot { rounds } => boot::command(setup, rounds).await,
        BenchCommand::Migrate {
            rounds,
            memory_mib,
            data_disk,
            direct,
            json,
        } => migrate::command(setup, (rounds, direct), (memory_mib, data_disk), json).await,
        BenchCommand::ReplicaPause {
            rounds,
            small_mib,
            large_mib,
        } => {
            let opts = replica_pause::Options {
                rounds,
                small_mib,
                large_mib,
                accel: setup.accel.resolve().0,
                image_dir: setup.image_dir.clone(),
                bench_dir: setup.data_dir.root().join("bench"),
            };
            print!("{}", replica_pause::run(&opts).await?);
            Ok(())
        }
        BenchCommand::Penalty {
            runs,
            json,
            csv,
            short,
            per_op_dd,
        } => penalty::command(setup, runs, json, csv, short, per_op_dd).await,
    }
}
