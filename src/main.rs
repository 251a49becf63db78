//! peervisor: parses arguments and wires the parts together.

mod bench;
mod cli;
mod console;
mod control;
mod demo;
#[cfg(test)]
mod fuzzing;
mod hypervisor;
mod image;
mod model;
mod node;
mod paths;
mod replica;
mod runtime;
mod services;
mod top;
mod tui;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{
    BenchCommand, Cli, Command, DevCommand, ImageCommand, NodeArgs, PeersCommand, VmCommand,
};
use control::client::ControlClient;
use control::{Reply, Request};
use paths::DataDir;
use runtime::{Peer, PeerConfig};

fn main() -> ExitCode {
    // The subreaper a private libvirtd runs under (hypervisor/reaper.rs).
    if let Some(code) = hypervisor::reaper::run_if_asked() {
        return ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX));
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let data_dir = DataDir::new(cli.data_dir.clone().unwrap_or_else(DataDir::default_root));
    if let Some(dir) = &cli.node.disk_dir {
        paths::set_disk_dir(dir.clone());
    }
    let control = ControlClient::new(&data_dir.control_socket());
    let look = console::Look {
        theme: cli.theme.clone(),
        keymap: cli.keymap.clone(),
    };
    match cli.command {
        None => match cli.attach {
            Some(dir) => console::attach(&DataDir::new(dir), &look).await,
            None => console::embedded(peer_config(data_dir, &cli.node), &look).await,
        },
        Some(Command::Dev(command)) => dev_command(&data_dir, &cli.node, command).await,
        Some(Command::Keys) => {
            print!("{}", console::keys_text(&look));
            Ok(())
        }
        Some(Command::Node) => run_headless(peer_config(data_dir, &cli.node), &cli.node).await,
        Some(Command::Status { json }) => {
            let Reply::Status(status) = control.call(&Request::Status).await? else {
                anyhow::bail!("unexpected reply to status");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", console::status_text(&status));
            }
            Ok(())
        }
        Some(Command::Vm(command)) => vm_command(&control, command).await,
        Some(Command::Migrate {
            vm,
            to,
            max_downtime,
            bandwidth,
            abort,
            wait,
            force,
            json,
        }) => {
            let request = match to {
                Some(to) if !abort => Request::Migrate {
                    vm,
                    to,
                    max_downtime_ms: max_downtime,
                    bandwidth_mib_s: bandwidth,
                    foreign: force,
                    detach: !wait,
                },
                _ => Request::MigrateAbort { vm },
            };
            migrate_command(&control, &request, json).await
        }
        Some(Command::Replicate { vm, to, name, json }) => {
            let request = Request::Replicate { vm, to, name };
            match control.call(&request).await? {
                Reply::Replicated(report) if json => {
                    println!("{}", serde_json::to_string_pretty(&report)?)
                }
                Reply::Replicated(report) => println!("{}", describe_replication(&report)),
                _ => anyhow::bail!("unexpected reply to replicate"),
            }
            Ok(())
        }
        Some(Command::Services { kind, tag, json }) => {
            let Reply::Services { services } = control.call(&Request::Services).await? else {
                anyhow::bail!("unexpected reply to services");
            };
            let services = console::filter_services(services, kind.as_deref(), &tag)?;
            print_services(&services, json)
        }
        Some(Command::Find { name, json }) => {
            let Reply::Services { services } = control.call(&Request::Find { name }).await? else {
                anyhow::bail!("unexpected reply to find");
            };
            print_services(&services, json)
        }
        Some(Command::Consume {
            service,
            local_port,
            bind,
            json,
        }) => {
            let request = Request::Consume {
                service,
                local_port,
                bind,
            };
            let Reply::Consuming(c) = control.call(&request).await? else {
                anyhow::bail!("unexpected reply to consume");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                println!(
                    "consuming '{}' on {} (stop with `peervisor unconsume {}`)",
                    c.service, c.listen, c.service
                );
            }
            Ok(())
        }
        Some(Command::Unconsume { service }) => {
            done(&control, Request::Unconsume { service }).await
        }
        Some(Command::Expose {
            name,
            target,
            kind,
            allow,
            max_conns,
        }) => {
            let request = Request::Expose {
                name,
                target,
                kind,
                allow,
                max_conns,
            };
            done(&control, request).await
        }
        Some(Command::Unexpose { name }) => done(&control, Request::Unexpose { name }).await,
        Some(Command::Image(ImageCommand::Build { name, image_dir })) => {
            let dir = image_dir
                .or(cli.node.image_dir)
                .unwrap_or_else(image::default_image_dir);
            build_image(dir, name).await
        }
        Some(Command::Demo(args)) => demo::run(args, &cli.node, &look).await,
        Some(Command::Peers(command)) => peers_command(&control, command).await,
        Some(Command::Bench(BenchCommand::Proxy {
            megabytes,
            requests,
            connections,
        })) => services::bench::proxy(megabytes, requests, connections).await,
        Some(Command::Bench(BenchCommand::Load {
            connections,
            requests,
            json,
        })) => services::load::run(connections, requests, json).await,
        Some(Command::Bench(BenchCommand::Discovery { peers, rounds })) => {
            services::bench::discovery(peers, rounds).await
        }
        Some(Command::Top { delay, iterations }) => top(&control, delay, iterations).await,
        Some(Command::Bench(BenchCommand::Stats { domains, rounds })) => {
            let table =
                tokio::task::spawn_blocking(move || hypervisor::bench::stats_tick(domains, rounds))
                    .await??;
            print!("{table}");
            Ok(())
        }
        Some(Command::Bench(BenchCommand::Replicate {
            virtual_mib,
            data_mib,
            rounds,
        })) => replica::bench::run(virtual_mib, data_mib, rounds).await,
        Some(Command::Bench(BenchCommand::Boot { rounds })) => {
            bench_boot(&control, &cli.node, rounds).await
        }
        Some(Command::Bench(BenchCommand::Migrate {
            rounds,
            memory_mib,
            data_disk,
            direct,
            json,
        })) => {
            let sizes = (memory_mib, data_disk);
            bench_migrate(&data_dir, &cli.node, (rounds, direct), sizes, json).await
        }
        Some(Command::Bench(BenchCommand::ReplicaPause {
            rounds,
            small_mib,
            large_mib,
        })) => {
            let opts = bench::replica_pause::Options {
                rounds,
                small_mib,
                large_mib,
                accel: cli.node.accel.resolve().0,
                image_dir: cli
                    .node
                    .image_dir
                    .clone()
                    .unwrap_or_else(image::default_image_dir),
                bench_dir: data_dir.root().join("bench"),
            };
            print!("{}", bench::replica_pause::run(&opts).await?);
            Ok(())
        }
        Some(Command::Bench(BenchCommand::Penalty {
            runs,
            json,
            csv,
            short,
        })) => penalty_command(&data_dir, &cli.node, runs, json, csv, short).await,
    }
}

/// `peervisor dev ...` (hidden): tools for tests of peervisor itself.
async fn dev_command(data_dir: &DataDir, node: &NodeArgs, command: DevCommand) -> Result<()> {
    let DevCommand::ReplicaOffer {
        to,
        body,
        declare,
        stall,
    } = command;
    let frame = replica::probe::Frame {
        body: std::fs::read(&body).with_context(|| format!("reading {}", body.display()))?,
        declared: declare,
        stall,
    };
    let key = node.network_key.as_deref();
    let bootstrap = node.bootstrap.clone();
    let report = replica::probe::send_offer(data_dir.root(), key, bootstrap, to, frame).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn peers_command(control: &ControlClient, command: PeersCommand) -> Result<()> {
    use runtime::access::Role;
    let request = match command {
        PeersCommand::Allow { peer, role } => Request::PeersAllow { peer, role },
        PeersCommand::Deny { peer } => Request::PeersAllow {
            peer,
            role: Role::Observe,
        },
        PeersCommand::Forget { peer } => Request::PeersForget { peer },
        PeersCommand::List { json } => {
            let Reply::Grants {
                grants,
                default_role,
            } = control.call(&Request::PeersList).await?
            else {
                anyhow::bail!("unexpected reply to peers list");
            };
            if json {
                let value = serde_json::json!({ "grants": grants, "default_role": default_role });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!("this peer: control; other members of the overlay: {default_role}");
                for (peer, role) in grants {
                    println!("{peer}  {role}");
                }
            }
            return Ok(());
        }
    };
    done(control, request).await
}

/// Sends a request whose reply is a message, and prints it.
async fn done(control: &ControlClient, request: Request) -> Result<()> {
    if let Reply::Done { message } = control.call(&request).await? {
        println!("{message}");
    }
    Ok(())
}

fn print_services(services: &[model::ServiceView], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(services)?);
    } else {
        print!("{}", console::services_text(services));
    }
    Ok(())
}

async fn vm_command(control: &ControlClient, command: VmCommand) -> Result<()> {
    let request = match command {
        VmCommand::List { json } => {
            let Reply::Vms { vms } = control.call(&Request::VmList).await? else {
                anyhow::bail!("unexpected reply to vm list");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&vms)?);
            } else {
                print!("{}", console::vms_text(&vms));
            }
            return Ok(());
        }
        VmCommand::Create {
            name,
            manifest,
            vcpus,
            memory_mib,
            image,
            data_disk_mib,
        } => create_request(name, manifest, vcpus, memory_mib, image, data_disk_mib)?,
        VmCommand::Start { name, force } => Request::VmStart {
            name,
            foreign: force,
        },
        VmCommand::Stop {
            name,
            hard,
            timeout,
            force,
        } => Request::VmStop {
            name,
            force: hard,
            timeout_s: Some(timeout),
            foreign: force,
        },
        VmCommand::Pause { name, force } => Request::VmPause {
            name,
            foreign: force,
        },
        VmCommand::Resume { name, force } => Request::VmResume {
            name,
            foreign: force,
        },
        VmCommand::Rm { name, yes, force } => {
            if !yes && !confirm(&format!("Delete VM '{name}' and its disks?"))? {
                anyhow::bail!("not removed");
            }
            Request::VmRemove {
                name,
                foreign: force,
            }
        }
        VmCommand::Stats { name, json, watch } => {
            return vm_stats(control, &name, json, watch).await;
        }
    };
    done(control, request).await
}

/// The create request from a manifest file and/or flags (flags win).
fn create_request(
    name: Option<String>,
    manifest: Option<PathBuf>,
    vcpus: Option<u32>,
    memory_mib: Option<u64>,
    image: Option<String>,
    data_disk_mib: Option<u64>,
) -> Result<Request> {
    use hypervisor::manifest::VmManifest;
    let base = match &manifest {
        Some(path) => VmManifest::load(path)?,
        None => VmManifest::parse(&format!(
            "name = {:?}",
            name.clone()
                .ok_or_else(|| anyhow::anyhow!("give a VM name or --manifest FILE"))?
        ))?,
    };
    let m = VmManifest {
        name: name.unwrap_or(base.name.clone()),
        vcpus: vcpus.unwrap_or(base.vcpus),
        memory_mib: memory_mib.unwrap_or(base.memory_mib),
        data_disk_mib: data_disk_mib.or(base.data_disk_mib),
        image: image.or(base.image.clone()),
        services: base.services.clone(),
    };
    m.validate().map_err(|e| match &manifest {
        Some(path) => anyhow::anyhow!("{}: {e}", path.display()),
        None => e,
    })?;
    Ok(Request::VmCreate {
        services: m.service_specs(),
        name: m.name,
        vcpus: m.vcpus,
        memory_mib: m.memory_mib,
        image: m.image.unwrap_or_else(|| image::DEFAULT_IMAGE.into()),
        data_disk_mib: m.data_disk_mib,
    })
}

/// Asks on the terminal; without one, the operator must pass --yes.
fn confirm(question: &str) -> Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{question} Not a terminal: pass --yes to confirm");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

async fn vm_stats(control: &ControlClient, name: &str, json: bool, watch: bool) -> Result<()> {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let request = Request::VmStats {
            name: name.to_string(),
        };
        let Reply::Vms { vms } = control.call(&request).await? else {
            anyhow::bail!("unexpected reply to vm stats");
        };
        let vm = vms
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no VM named '{name}'"))?;
        if json {
            // One JSON object per line when watching, so scripts can stream it.
            if watch {
                println!("{}", serde_json::to_string(&vm)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&vm)?);
            }
        } else {
            println!("{}", top::stats_line(&vm));
        }
        if !watch {
            return Ok(());
        }
    }
}

/// `peervisor bench boot`: image build times, then boots on the node's libvirt.
async fn bench_boot(control: &ControlClient, args: &NodeArgs, rounds: usize) -> Result<()> {
    let Reply::Status(status) = control.call(&Request::Status).await? else {
        anyhow::bail!("unexpected reply to status");
    };
    let dir = args
        .image_dir
        .clone()
        .unwrap_or_else(image::default_image_dir);
    let build_dir = dir.clone();
    let report = tokio::task::spawn_blocking(move || {
        image::build(
            &build_dir,
            &image::ImageSpec {
                name: image::DEFAULT_IMAGE.into(),
            },
            &mut |_| {},
        )
    })
    .await??;
    println!(
        "image: {} in {:.1} s ({}); {:.1} MiB booted (kernel + initrd)",
        if report.built {
            "built"
        } else {
            "cache checked"
        },
        report.seconds,
        report.image.dir.display(),
        report.image.size_bytes as f64 / (1024.0 * 1024.0),
    );
    let accel = match status.local.accel.as_str() {
        "kvm" => hypervisor::accel::Accel::Kvm,
        _ => hypervisor::accel::Accel::Tcg,
    };
    let host = hypervisor::Host::open(&status.local.hypervisor).await?;
    let network = hypervisor::netns::GuestNetwork::named(&args.guest_netns);
    let table = hypervisor::bench::boot(&host, &report.image, &network, accel, rounds).await?;
    print!("{table}");
    Ok(())
}

/// `peervisor bench migrate`: two local nodes, one guest, both methods.
async fn bench_migrate(
    data_dir: &DataDir,
    node: &NodeArgs,
    (rounds, direct): (usize, bench::migrate::Direct),
    (memory_mib, data_disk_mib): (u64, Option<u64>),
    json: bool,
) -> Result<()> {
    use hypervisor::accel::AccelChoice;
    if direct == bench::migrate::Direct::Tunnelled && data_disk_mib.is_some() {
        anyhow::bail!(
            "--direct tunnelled cannot go with --data-disk: libvirt cannot copy disks in a tunnelled migration"
        );
    }
    let opts = bench::migrate::Options {
        rounds,
        direct,
        memory_mib,
        data_disk_mib,
        accel: match node.accel {
            AccelChoice::Auto => "auto".into(),
            AccelChoice::Force(a) => a.to_string(),
        },
        image_dir: node
            .image_dir
            .clone()
            .unwrap_or_else(image::default_image_dir),
        root: data_dir.root().join("bench").join("migrate-nodes"),
    };
    let results = bench::migrate::run(&opts).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", bench::migrate::table(&results));
    }
    Ok(())
}

async fn top(control: &ControlClient, delay: f64, iterations: Option<u64>) -> Result<()> {
    if !(0.1..=3600.0).contains(&delay) {
        anyhow::bail!("--delay must be between 0.1 and 3600 seconds, got {delay}");
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs_f64(delay));
    let mut shown = 0;
    loop {
        tick.tick().await;
        let Reply::Status(status) = control.call(&Request::Status).await? else {
            anyhow::bail!("unexpected reply to status");
        };
        if shown > 0 {
            println!();
        }
        print!("{}", top::host_line(status.local.host.as_ref()));
        print!("{}", top::table(&status.vms));
        shown += 1;
        if iterations.is_some_and(|n| shown >= n) {
            return Ok(());
        }
    }
}

async fn penalty_command(
    data_dir: &DataDir,
    node: &NodeArgs,
    runs: Option<u32>,
    json: bool,
    csv: bool,
    short: bool,
) -> Result<()> {
    let opts = bench::penalty::PenaltyOptions {
        runs: runs.unwrap_or(if short { 2 } else { 3 }),
        short,
        accel: node.accel,
        image_dir: node
            .image_dir
            .clone()
            .unwrap_or_else(image::default_image_dir),
        bench_dir: data_dir.root().join("bench"),
    };
    let view = bench::penalty::run_and_save(&opts).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else if csv {
        print!("{}", bench::penalty::table::csv(&view));
    } else {
        print!("{}", bench::penalty::table::text(&view));
    }
    Ok(())
}

async fn build_image(dir: PathBuf, name: String) -> Result<()> {
    let report = tokio::task::spawn_blocking(move || {
        image::build(&dir, &image::ImageSpec { name }, &mut |step| {
            eprintln!("  {step}");
        })
    })
    .await??;
    let image = &report.image;
    let verb = if report.built { "built" } else { "up to date" };
    println!(
        "image '{}' {verb}: kernel {} , {:.1} MiB in {} ({:.1} s)",
        image.name,
        image.kernel_version,
        image.size_bytes as f64 / (1024.0 * 1024.0),
        image.dir.display(),
        report.seconds
    );
    Ok(())
}

fn peer_config(data_dir: DataDir, args: &NodeArgs) -> PeerConfig {
    let interval = if args.stats_interval.is_finite() {
        args.stats_interval.clamp(0.1, 3600.0)
    } else {
        1.0
    };
    PeerConfig {
        sampling: hypervisor::sampler::SamplerConfig {
            interval: std::time::Duration::from_secs_f64(interval),
            history: args.stats_history.clamp(2, 100_000),
        },
        data_dir,
        nick: args.nick.clone().unwrap_or_else(default_nick),
        listen: args.listen.clone(),
        bootstrap: args.bootstrap.clone(),
        network_key: args.network_key.clone(),
        mdns: args.mdns,
        relay: crate::node::RelayConfig {
            serve: args.relay_server,
            reserve: !args.no_relay_client,
        },
        hypervisor: args.hypervisor.clone(),
        accel: args.accel,
        guest_netns: args.guest_netns.clone(),
        image_dir: args
            .image_dir
            .clone()
            .unwrap_or_else(image::default_image_dir),
        accept_migrations: !args.no_accept_migrations,
        provision: runtime::ProvisionPolicy {
            enabled: args.provision,
            high_pct: args.provision_high,
            low_pct: args.provision_low,
            sustain: std::time::Duration::from_secs(args.provision_after),
        },
        yarn: args.yarn.clone(),
        spark: args.spark.clone(),
        limits: runtime::limits::LimitsConfig {
            control_per_s: args.peer_control_rate,
            streams_per_s: args.peer_stream_rate,
            streams_per_peer: args.peer_max_streams,
        },
        connections: crate::node::ConnectionCaps {
            per_peer: args.max_connections_per_peer,
            total: args.max_connections,
            pending_incoming: args.max_pending_connections,
        },
        capacity: runtime::capacity::CapacityFlags {
            lend_vcpus: args.lend_vcpus,
            lend_memory_mib: args.lend_memory,
            lend_disk_mib: args.lend_disk,
            max_migrations: args.max_migrations,
        },
    }
}

/// `peervisor migrate`: sends the request; while a `--wait` runs, shows the
/// transfer's progress on a terminal.
async fn migrate_command(control: &ControlClient, request: &Request, json: bool) -> Result<()> {
    let follow = match request {
        Request::Migrate {
            vm, detach: false, ..
        } if std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
            Some(tokio::spawn(show_progress(control.clone(), vm.clone())))
        }
        _ => None,
    };
    let reply = control.call(request).await;
    if let Some(task) = follow {
        task.abort();
        eprint!("\r\x1b[2K");
    }
    match reply? {
        Reply::Migrated(report) if json => {
            println!("{}", serde_json::to_string_pretty(&report)?)
        }
        Reply::Migrated(report) => println!("{}", describe_migration(&report)),
        Reply::MigrationStarted { vm, to, operation } if json => println!(
            "{}",
            serde_json::json!({ "vm": vm, "to": to, "operation": operation, "state": "transferring" })
        ),
        Reply::MigrationStarted { vm, to, .. } => println!(
            "VM '{vm}' accepted by {to}: migrating (follow it with `peervisor status`; --wait waits for the end)"
        ),
        Reply::Done { message } => println!("{message}"),
        _ => anyhow::bail!("unexpected reply to migrate"),
    }
    Ok(())
}

/// One progress line, redrawn each second, from the node's operation list.
async fn show_progress(control: ControlClient, vm: String) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let Ok(Reply::Status(status)) = control.call(&Request::Status).await else {
            continue;
        };
        let Some(op) = status
            .operations
            .iter()
            .rev()
            .find(|o| o.vm == vm && o.kind == model::OperationKind::MigrateOut)
        else {
            continue;
        };
        let pct = op
            .progress
            .map_or(String::from("?"), |p| format!("{:.0}", p * 100.0));
        let sent = op.transferred_bytes.unwrap_or(0) >> 20;
        eprint!(
            "\r\x1b[2K{vm} -> {}: {pct}% ({sent} MiB sent, {:.0} s)",
            op.peer, op.elapsed_s
        );
    }
}

fn default_nick() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "peer".into())
}

/// `peervisor node`: the peer without a console, until SIGINT/SIGTERM.
async fn run_headless(config: PeerConfig, args: &NodeArgs) -> Result<()> {
    init_stderr_logging();
    let peer = start_serving(config).await?;
    wait_for_termination().await;
    tracing::info!("stopping");
    peer.shutdown(args.destroy_vms_on_exit).await;
    let _ = std::fs::remove_file(peer.data_dir().control_socket());
    Ok(())
}

/// Starts a peer and serves its control socket.
pub async fn start_serving(config: PeerConfig) -> Result<Arc<Peer>> {
    config
        .data_dir
        .create()
        .with_context(|| format!("creating {}", config.data_dir.root().display()))?;
    // Bind first: a second node on the same data dir must fail before touching anything.
    let listener = control::server::bind(&config.data_dir.control_socket()).await?;
    let peer = Peer::start(config).await?;
    let handler_peer = peer.clone();
    let handler = Arc::new(move |request: Request| {
        let peer = handler_peer.clone();
        async move { peer.handle(request).await }
    });
    tokio::spawn(control::server::serve(listener, handler));
    Ok(peer)
}

async fn wait_for_termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_stderr_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PEERVISOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// One line for a finished migration: total time, downtime, bytes.
fn describe_migration(report: &control::MigrationReport) -> String {
    let mut line = format!(
        "VM '{}' migrated from {} to {} in {:.2} s",
        report.vm, report.from, report.to, report.seconds
    );
    if let Some(ms) = report.probe_downtime_ms {
        line.push_str(&format!(", service gap {ms} ms"));
    }
    if let Some(ms) = report.downtime_ms {
        line.push_str(&format!(", downtime {ms} ms (libvirt)"));
    }
    if let Some(bytes) = report.transferred_bytes {
        line.push_str(&format!(
            ", {:.1} MiB sent",
            bytes as f64 / (1024.0 * 1024.0)
        ));
    }
    line
}

/// One line for a finished replication: name, time, pause, disk sizes and bytes.
fn describe_replication(r: &control::ReplicationReport) -> String {
    let mut line = format!(
        "VM '{}' replicated from {} to {} as '{}' ({}) in {:.2} s",
        r.vm, r.from, r.to, r.replica, r.replica_ip, r.seconds
    );
    if let Some(ms) = r.paused_ms {
        line.push_str(&format!(", source paused {ms} ms"));
    }
    if let (Some(snap), Some(commit)) = (r.overlay_ms, r.commit_ms) {
        line.push_str(&format!(
            ", source not paused (disk frozen under an overlay in {snap} ms, merged back in {commit} ms)"
        ));
    }
    if let Some(d) = &r.disk {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        line.push_str(&format!(
            "\ndisk: virtual {:.1} MiB, allocated {:.1} MiB, data {:.1} MiB; sent {}/{} chunks, {:.2} MiB on the stream",
            mib(d.virtual_bytes),
            mib(d.allocated_bytes),
            mib(d.data_bytes),
            d.chunks_sent,
            d.chunks_total,
            mib(d.wire_bytes)
        ));
        if d.chunks_sent < d.chunks_total {
            line.push_str(" (resumed: the rest was there already)");
        }
    }
    line
}
