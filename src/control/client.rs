//! Talks to a running node's control socket.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{Line, Outcome, Reply, Request, read_line};

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
        let mut reader = BufReader::new(read);
        let answer = match read_line(&mut reader)
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
}

impl ControlClient {
    /// True if a node answers on the socket (no request is sent).
    pub fn blocking_alive(&self) -> bool {
        std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
    }
}
