//! peervisor: parses arguments and wires the parts together.

mod admission;
mod api;
mod bench;
mod cli;
mod console;
mod control;
#[cfg(test)]
mod fuzzing;
mod hypervisor;
mod image;
mod jobs;
mod join;
mod migrate;
mod model;
mod names;
mod node;
mod paths;
mod peer;
mod phases;
mod rig;
mod services;
mod tui;
mod vms;

use std::process::ExitCode;

use anyhow::Result;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use cli::config::{ConfigFile, Globals};
use cli::{Cli, NodeArgs, TopCommand};
use paths::DataDir;
use peer::PeerConfig;

fn main() -> ExitCode {
    // The subreaper a private libvirtd runs under (hypervisor/reaper.rs).
    if let Some(code) = hypervisor::reaper::run_if_asked() {
        return ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX));
    }
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err(message) = cli.check_console_options(&matches) {
        Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, &matches)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, matches: &ArgMatches) -> Result<()> {
    let globals = Globals {
        data_dir: cli.data_dir.clone(),
        config: cli.config.clone(),
    };
    let data_dir_given = globals.data_dir_given();
    match cli.command {
        Some(TopCommand::Cli(command)) => cli::run(command, &globals).await,
        Some(TopCommand::Host(command)) => cli::run_host(command, &globals).await,
        None => {
            let (data_dir, config) = globals.in_force()?;
            let look = cli.look.look();
            if let Some(dir) = &cli.attach {
                let dir = match dir {
                    None => cli::find_node::running_node(&data_dir, data_dir_given)?,
                    Some(dir) => DataDir::new(dir),
                };
                return console::attach(&dir, &look).await;
            }
            if !cli.embed
                && let Some(running) = cli::find_node::find_running_node(&data_dir, data_dir_given)
            {
                return console::attach(&running, &look).await;
            }
            let node = cli::config::node_args(matches, config.as_ref())?;
            set_disk_dir(&node);
            console::embedded(node.peer_config(data_dir), &look).await
        }
        Some(TopCommand::Node(_)) => {
            let (data_dir, config) = globals.in_force()?;
            let node_matches = matches.subcommand_matches("node").expect("node's matches");
            let node = cli::config::node_args(node_matches, config.as_ref())?;
            log_config(config.as_ref());
            set_disk_dir(&node);
            run_headless(node.peer_config(data_dir), &node).await
        }
    }
}

fn set_disk_dir(node: &NodeArgs) {
    if let Some(dir) = &node.disk_dir {
        paths::set_disk_dir(dir.clone());
    }
}

fn log_config(config: Option<&ConfigFile>) {
    init_stderr_logging();
    if let Some(config) = config {
        tracing::info!("config: {}", config.path().display());
    }
}

/// `peervisor node`: the peer without a console, until SIGINT/SIGTERM.
async fn run_headless(config: PeerConfig, args: &NodeArgs) -> Result<()> {
    init_stderr_logging();
    let peer = peer::start_serving(config).await?;
    wait_for_termination().await;
    tracing::info!("stopping");
    peer.shutdown(args.destroy_vms_on_exit).await;
    let _ = std::fs::remove_file(peer.data_dir().control_socket());
    Ok(())
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // Under systemd stderr is the journal (JOURNAL_STREAM set), which stamps
    // each line itself.
    let _ = match std::env::var_os("JOURNAL_STREAM") {
        Some(_) => builder.without_time().try_init(),
        None => builder.try_init(),
    };
}
