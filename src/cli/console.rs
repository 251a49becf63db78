//! `peervisor vm console NAME`: the guest's serial console on this terminal,
//! like `virsh console` (the session itself is `console::serial`'s, which the
//! full-screen console's key runs too).

use anyhow::Result;

use crate::console::serial::Session;
use crate::control::client::ControlClient;
use crate::names::VmName;

pub async fn attach(control: &ControlClient, name: VmName) -> Result<()> {
    let session = Session::open(control, name).await?;
    eprintln!("{}\r", session.banner(""));
    session.run().await?;
    Ok(())
}
