//! `bench scale --real`: `peervisor node` processes, each in a network
//! namespace of its own.

use anyhow::{Result, bail};

use super::{Options, Row};

pub async fn run(_peers: usize, _options: &Options) -> Result<Row> {
    bail!("not yet")
}
