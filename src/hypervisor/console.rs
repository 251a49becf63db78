//! A guest's serial console as a byte stream, like `virsh console`: libvirt's
//! `virDomainOpenConsole` on a non-blocking stream, pumped by a thread of its
//! own (the libvirt event loop fills the stream; the thread polls it and sends
//! what the other side typed), bridged to a tokio duplex pipe.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use virt::connect::Connect;
use virt::stream::Stream;
use virt::sys;

use super::ffi::{self, StreamRead};

/// How often an idle console thread looks for output.
const IDLE_POLL: Duration = Duration::from_millis(10);
const CHUNK: usize = 4096;

/// Attaches to the serial console of `name` (taking it over from another
/// session, as `virsh console --force` does): the returned pipe carries
/// what the guest writes and takes what is typed; dropping it detaches.
pub fn open(conn: Arc<Connect>, name: &str) -> Result<DuplexStream> {
    let domain = super::lookup(&conn, name)?.ok_or_else(|| anyhow!("no VM named '{name}'"))?;
    let stream = Stream::new(&conn, sys::VIR_STREAM_NONBLOCK)
        .map_err(|e| anyhow!("console of VM '{name}': {}", e.message()))?;
    domain
        .open_console(None, &stream, sys::VIR_DOMAIN_CONSOLE_FORCE)
        .map_err(|e| anyhow!("console of VM '{name}': {}", e.message()))?;
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(64);
    let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(64);
    let vm = name.to_string();
    std::thread::Builder::new()
        .name(format!("console-{name}"))
        .spawn(move || {
            // The connection outlives the stream.
            let _conn = conn;
            pump(&stream, out_tx, in_rx, &vm);
            let _ = stream.abort();
        })
        .map_err(|e| anyhow!("console thread: {e}"))?;
    tokio::spawn(bridge(ours, out_rx, in_tx));
    Ok(theirs)
}

/// Moves bytes between the libvirt stream and the channels until either side ends.
fn pump(stream: &Stream, out: mpsc::Sender<Vec<u8>>, mut input: mpsc::Receiver<Vec<u8>>, vm: &str) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut busy = false;
        match ffi::stream_recv(stream, &mut buf) {
            Ok(StreamRead::Data(n)) => {
                busy = true;
                if out.blocking_send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
            Ok(StreamRead::Empty) => {}
            Ok(StreamRead::End) => return,
            Err(e) => {
                tracing::debug!("console of {vm}: {}", e.message());
                return;
            }
        }
        match input.try_recv() {
            Ok(bytes) => {
                busy = true;
                if !send_all(stream, &bytes) {
                    return;
                }
            }
            Err(mpsc::error::TryRecvError::Empty) => {}
            Err(mpsc::error::TryRecvError::Disconnected) => return,
        }
        if out.is_closed() {
            return;
        }
        if !busy {
            std::thread::sleep(IDLE_POLL);
        }
    }
}

/// Sends all of `bytes` on a non-blocking stream (it may take part of them);
/// false once the stream failed.
fn send_all(stream: &Stream, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match ffi::stream_send(stream, bytes) {
            Ok(Some(n)) => bytes = &bytes[n..],
            Ok(None) => std::thread::sleep(IDLE_POLL),
            Err(e) => {
                tracing::debug!("console: {}", e.message());
                return false;
            }
        }
    }
    true
}

/// The async side: the pipe's end to and from the channels.
async fn bridge(
    mut pipe: DuplexStream,
    mut out: mpsc::Receiver<Vec<u8>>,
    input: mpsc::Sender<Vec<u8>>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            chunk = out.recv() => match chunk {
                Some(bytes) => if pipe.write_all(&bytes).await.is_err() { return },
                None => return,
            },
            n = pipe.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if input.send(buf[..n].to_vec()).await.is_err() { return },
            },
        }
    }
}
