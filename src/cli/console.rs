//! `peervisor vm console NAME`: the guest's serial console on this terminal,
//! like `virsh console`. Raw mode while attached (when stdin is a terminal),
//! restored however the session ends; Ctrl-] detaches, as in virsh.

use std::io::{IsTerminal, Read, Write};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::control::Request;
use crate::control::client::ControlClient;
use crate::names::VmName;

/// The byte that detaches (Ctrl-]).
const ESCAPE: u8 = 0x1d;

pub async fn attach(control: &ControlClient, name: VmName) -> Result<()> {
    let (mut from_node, mut to_node) = control
        .attach(&Request::VmConsole { name: name.clone() })
        .await?;
    eprintln!("Connected to the console of {name} (detach: Ctrl-])\r");
    let _raw = RawMode::enter()?;
    let (typed_tx, mut typed) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    // Blocking stdin on a thread of its own: it ends with the process.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if typed_tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut out = [0u8; 4096];
    loop {
        tokio::select! {
            // The terminal is restored on the way out (RawMode's drop).
            _ = term.recv() => break,
            _ = hup.recv() => break,
            chunk = typed.recv() => {
                let Some(bytes) = chunk else { break };
                let (before, escaped) = match bytes.iter().position(|b| *b == ESCAPE) {
                    Some(i) => (&bytes[..i], true),
                    None => (&bytes[..], false),
                };
                to_node.write_all(before).await.context("sending to the console")?;
                if escaped {
                    break;
                }
            }
            n = from_node.read(&mut out) => {
                let n = n.context("reading the console")?;
                if n == 0 {
                    eprintln!("\r\nthe console of {name} closed\r");
                    break;
                }
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&out[..n])?;
                stdout.flush()?;
            }
        }
    }
    Ok(())
}

/// Raw mode on a terminal stdin, undone on drop (also when unwinding).
struct RawMode(bool);

impl RawMode {
    fn enter() -> Result<RawMode> {
        if !std::io::stdin().is_terminal() {
            return Ok(RawMode(false));
        }
        ratatui::crossterm::terminal::enable_raw_mode().context("raw mode for the console")?;
        Ok(RawMode(true))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.0 {
            let _ = ratatui::crossterm::terminal::disable_raw_mode();
        }
    }
}
