//! `peervisor dev ...` (hidden): tools for tests of peervisor itself.

use anyhow::{Context, Result};

use super::args::{DevCommand, network_key_source};
use crate::migrate::replica::probe;
use crate::node::trim_probe;
use crate::paths::DataDir;

pub async fn run(data_dir: &DataDir, command: DevCommand) -> Result<()> {
    let (to, body, declare, stall, bootstrap, network_key) = match command {
        DevCommand::ReplicaOffer {
            to,
            body,
            declare,
            stall,
            bootstrap,
            network_key,
        } => (to, body, declare, stall, bootstrap, network_key),
        DevCommand::ConsoleTakeover { ok } => return console_takeover(ok).await,
        DevCommand::TrimNotice {
            to,
            service,
            bootstrap,
            network_key,
        } => {
            let key = network_key_source(network_key.as_deref());
            return trim_probe::run(data_dir.root(), key.as_ref(), bootstrap, to, service).await;
        }
    };
    let frame = probe::Frame {
        body: std::fs::read(&body).with_context(|| format!("reading {}", body.display()))?,
        declared: declare,
        stall,
    };
    let key = network_key_source(network_key.as_deref());
    let report = probe::send_offer(data_dir.root(), key.as_ref(), bootstrap, to, frame).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `dev console-takeover`: the console's hand-over of the terminal, with a
/// session that fails the worst way (a panic) unless `ok`.
async fn console_takeover(ok: bool) -> Result<()> {
    use tokio::sync::mpsc;

    use crate::tui::{self, ConsoleOptions, Takeover};
    tui::init_logging(None)?;
    let (_updates_tx, updates) = mpsc::channel(1);
    let (commands, _commands_rx) = mpsc::channel(1);
    let (_notices_tx, notices) = mpsc::channel(1);
    let (takeover_tx, takeovers) = mpsc::channel(1);
    let run = async move {
        println!("dev takeover: running\r");
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        if !ok {
            panic!("dev takeover: a panic while the terminal is handed over");
        }
        Ok("dev takeover: ended".to_string())
    };
    takeover_tx
        .send(Takeover {
            banner: "dev takeover: the console steps aside".into(),
            run: Box::pin(run),
        })
        .await
        .map_err(|_| anyhow::anyhow!("the console's hand-over channel closed"))?;
    let options = ConsoleOptions::new("peervisor", "dev console-takeover".into());
    tui::run(updates, commands, notices, takeovers, options).await
}
