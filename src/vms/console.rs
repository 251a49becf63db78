//! A guest's serial console over the overlay (`/peervisor/console/1`): the
//! asking peer sends a header line naming the VM, the host answers a line
//! (attached, or why not: its name and the missing role), then raw bytes flow
//! both ways until either side closes.

use anyhow::{Context, Result, bail};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use crate::names::VmName;
use crate::node::protocol::CONSOLE_PROTOCOL;
use crate::node::{Client, Stream};

/// Longest header or answer line.
const MAX_LINE: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    vm: VmName,
}

#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    #[serde(default)]
    error: Option<String>,
}

/// A console byte pipe, wherever the guest runs.
pub trait ConsoleIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ConsoleIo for T {}

/// Asking side: the console of `vm` on `host`, or the host's refusal.
pub async fn open_remote(
    node: &Client,
    host: PeerId,
    host_name: &str,
    vm: &VmName,
) -> Result<Compat<Stream>> {
    let stream = node
        .streams()
        .open_stream(host, CONSOLE_PROTOCOL)
        .await
        .with_context(|| format!("opening the console of {vm} on {host_name}"))?;
    let mut stream = stream.compat();
    let mut header = serde_json::to_vec(&Header { vm: vm.clone() })?;
    header.push(b'\n');
    stream.write_all(&header).await?;
    stream.flush().await?;
    let line = read_line(&mut stream).await?;
    if line.is_empty() {
        bail!("{host_name} closed the console stream without an answer");
    }
    let answer: Answer = serde_json::from_slice(&line)
        .with_context(|| format!("console of {vm} on {host_name}: malformed answer"))?;
    if let Some(error) = answer.error {
        bail!("{error}");
    }
    Ok(stream)
}

/// Host side: the VM asked for on a stream another peer opened.
pub async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Result<VmName> {
    let line = read_line(stream).await?;
    let header: Header = serde_json::from_slice(&line).context("malformed console request")?;
    Ok(header.vm)
}

/// Host side: answers, then pipes the guest's console to the stream.
pub async fn answer<S: ConsoleIo>(mut stream: S, console: Result<impl ConsoleIo, String>) {
    let (mut console, reply) = match console {
        Ok(c) => (Some(c), Answer { error: None }),
        Err(error) => (None, Answer { error: Some(error) }),
    };
    let Ok(mut line) = serde_json::to_vec(&reply) else {
        return;
    };
    line.push(b'\n');
    if stream.write_all(&line).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    if let Some(console) = console.as_mut() {
        let _ = tokio::io::copy_bidirectional(&mut stream, console).await;
    }
    let _ = stream.shutdown().await;
}

/// One line, read a byte at a time: what follows it is the console's and
/// must stay in the stream. Empty when the stream ended first.
async fn read_line<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte).await? == 0 || byte[0] == b'\n' {
            return Ok(line);
        }
        line.push(byte[0]);
        if line.len() > MAX_LINE {
            bail!("console header over {MAX_LINE} bytes");
        }
    }
}
