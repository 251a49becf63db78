//! `peervisor dev ...` (hidden): tools for tests of peervisor itself.

use anyhow::{Context, Result};

use super::args::{DevCommand, NodeArgs};
use crate::migrate::replica::probe;
use crate::paths::DataDir;

pub async fn run(data_dir: &DataDir, node: &NodeArgs, command: DevCommand) -> Result<()> {
    let DevCommand::ReplicaOffer {
        to,
        body,
        declare,
        stall,
    } = command;
    let frame = probe::Frame {
        body: std::fs::read(&body).with_context(|| format!("reading {}", body.display()))?,
        declared: declare,
        stall,
    };
    let key = node.network_key_source();
    let bootstrap = node.bootstrap.clone();
    let report = probe::send_offer(data_dir.root(), key.as_ref(), bootstrap, to, frame).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
