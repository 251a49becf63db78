//! Talks to a running node's control socket.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::mpsc;

use super::{Line, Outcome, Reply, Request, read_line};
use crate::api::Update;

#[derive(Debug, Clone)]
pub struct ControlClient {
    socket: PathBuf,
}

impl ControlClient {
    pub fn new(socket: &Path) -> Self {
        ControlClient {
            socket: socket.to_path_buf(),
        }
    }

    /// Sends one request and waits for its reply. A refused connection means no node
    /// serves this data dir: say how to start one.
    pub async fn call(&self, request: &Request) -> Result<Reply> {
        let (mut reader, _write) = self.send(request).await?;
        next_reply(&mut reader).await
    }

    /// Sends a request answered by a byte pipe (`vm console`): once the node
    /// said yes, the connection's halves carry the bytes (the reader may hold
    /// some already).
    pub async fn attach(
        &self,
        request: &Request,
    ) -> Result<(BufReader<OwnedReadHalf>, tokio::net::unix::OwnedWriteHalf)> {
        let (mut reader, write) = self.send(request).await?;
        next_reply(&mut reader).await?;
        Ok((reader, write))
    }

    /// The node's state as it changes: a snapshot, then deltas (see
    /// `api::update`). The receiver ends when the node goes away; dropping it
    /// hangs up.
    pub async fn subscribe(&self) -> Result<mpsc::Receiver<Update>> {
        let (mut reader, write) = self.send(&Request::Subscribe).await?;
        let first = expect_update(next_reply(&mut reader).await?)?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let _hang_up_with_the_reader = write;
            let mut next = Ok(first);
            while let Ok(update) = next {
                if tx.send(update).await.is_err() {
                    return;
                }
                next = next_reply(&mut reader).await.and_then(expect_update);
            }
            if let Err(e) = next {
                tracing::debug!("the node's updates ended: {e:#}");
            }
        });
        Ok(rx)
    }

    async fn send(
        &self,
        request: &Request,
    ) -> Result<(BufReader<OwnedReadHalf>, tokio::net::unix::OwnedWriteHalf)> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            anyhow!(
                "no peervisor node is running for this data dir ({}: {e}); start one with `peervisor node`",
                self.socket.display()
            )
        })?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        write.write_all(&line).await.context("sending request")?;
        Ok((BufReader::new(read), write))
    }
}

async fn next_reply(reader: &mut BufReader<OwnedReadHalf>) -> Result<Reply> {
    let answer = match read_line(reader)
        .await
        .context("reading the node's reply")?
    {
        Line::Text(answer) => answer,
        Line::Eof => bail!("the node closed the control connection without answering"),
        Line::TooLong => bail!("the node's reply is too large"),
    };
    match serde_json::from_slice::<Outcome>(&answer).context("malformed reply from the node")? {
        Outcome::Ok(reply) => Ok(reply),
        Outcome::Error(message) => Err(anyhow!(message)),
    }
}

fn expect_update(reply: Reply) -> Result<Update> {
    match reply {
        Reply::Update(update) => Ok(*update),
        _ => Err(anyhow!(
            "the node answered a subscription with something else"
        )),
    }
}

impl ControlClient {
    /// True if a node answers on the socket (no request is sent).
    pub fn blocking_alive(&self) -> bool {
        std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
    }
}
