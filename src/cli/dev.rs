//! `peervisor dev ...` (hidden): tools for tests of peervisor itself.

use anyhow::{Context, Result};

use super::args::{DevCommand, network_key_source};
use crate::migrate::replica::probe;
use crate::paths::DataDir;

pub async fn run(data_dir: &DataDir, command: DevCommand) -> Result<()> {
    let DevCommand::ReplicaOffer {
        to,
        body,
        declare,
        stall,
        bootstrap,
        network_key,
    } = command;
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
