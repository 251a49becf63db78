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
use clap::Parser;

use cli::{Cli, NodeArgs, TopCommand};
use paths::DataDir;
use peer::PeerConfig;

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
    let look = console::Look {
        theme: cli.theme.clone(),
        keymap: cli.keymap.clone(),
    };
    match cli.command {
        None => match cli.attach {
            Some(dir) => console::attach(&DataDir::new(dir), &look).await,
            None => console::embedded(cli.node.peer_config(data_dir), &look).await,
        },
        Some(TopCommand::Node) => run_headless(cli.node.peer_config(data_dir), &cli.node).await,
        Some(TopCommand::Cli(command)) => cli::run(command, &data_dir, &cli.node, &look).await,
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
