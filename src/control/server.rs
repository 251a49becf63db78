//! Serves the control socket: one task per connection, one request per line,
//! answered with one line, or (`subscribe`) with a line per update until the
//! client hangs up.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::{Line, MAX_LINE, Outcome, Reply, Request, read_line};
use crate::api::Update;

/// What a request gets.
pub enum Answer {
    Reply(Reply),
    /// A stream of updates, one line each.
    Updates(mpsc::Receiver<Update>),
    /// A byte pipe (a VM's console): `Done` is answered, then the
    /// connection's bytes go to it and its bytes back, until either closes.
    Bytes(Box<dyn BytePipe>),
}

/// Something to read and write bytes through.
pub trait BytePipe: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> BytePipe for T {}

/// Binds the socket (owner-only). A live socket means another node owns this data dir.
pub async fn bind(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!(
                "another peervisor node is already running for this data dir ({})",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers requests with `handle` until the listener fails.
pub async fn serve<H, F>(listener: UnixListener, handle: Arc<H>)
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Answer>> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, handle).await {
                tracing::debug!("control connection: {e:#}");
            }
        });
    }
}

async fn serve_connection<H, F>(stream: UnixStream, handle: Arc<H>) -> Result<()>
where
    H: Fn(Request) -> F,
    F: Future<Output = Result<Answer>>,
{
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let (outcome, last) = match read_line(&mut reader).await? {
            Line::Eof => return Ok(()),
            Line::TooLong => (
                Outcome::Error(format!("request too large (over {MAX_LINE} bytes)")),
                true,
            ),
            Line::Text(line) => match decode_request(&line) {
                Ok(request) => match handle(request).await {
                    Ok(Answer::Reply(reply)) => (Outcome::Ok(reply), false),
                    Ok(Answer::Updates(updates)) => {
                        return stream_updates(updates, &mut reader, &mut write).await;
                    }
                    Ok(Answer::Bytes(pipe)) => {
                        return pipe_bytes(pipe, reader, write).await;
                    }
                    Err(e) => (Outcome::Error(format!("{e:#}")), false),
                },
                Err(e) => (Outcome::Error(e), false),
            },
        };
        let mut bytes = serde_json::to_vec(&outcome)?;
        bytes.push(b'\n');
        write.write_all(&bytes).await?;
        if last {
            // Closing with unread input would reset the connection and lose the
            // reply: discard (not keep) what the client still sends, briefly.
            let mut sink = tokio::io::sink();
            let discard = tokio::io::copy(&mut reader, &mut sink);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), discard).await;
            return Ok(());
        }
    }
}

/// Writes each update as a line until the updates end or the client hangs up
/// (or sends anything: a subscription is the connection's last request).
async fn stream_updates<R, W>(
    mut updates: mpsc::Receiver<Update>,
    reader: &mut R,
    write: &mut W,
) -> Result<()>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let hung_up = read_line(reader);
    tokio::pin!(hung_up);
    loop {
        tokio::select! {
            update = updates.recv() => {
                let Some(update) = update else { return Ok(()) };
                let mut bytes = serde_json::to_vec(&Outcome::Ok(Reply::Update(Box::new(update))))?;
                bytes.push(b'\n');
                write.write_all(&bytes).await?;
            }
            _ = &mut hung_up => return Ok(()),
        }
    }
}

/// `Done`, then the client's bytes to the pipe and the pipe's to the client
/// (what the client sent after its request line is in `reader`'s buffer).
async fn pipe_bytes<R, W>(pipe: Box<dyn BytePipe>, mut reader: R, mut write: W) -> Result<()>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let done = Outcome::Ok(Reply::Done {
        message: "attached".into(),
    });
    let mut bytes = serde_json::to_vec(&done)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    let (mut from_pipe, mut to_pipe) = tokio::io::split(pipe);
    let up = async {
        let _ = tokio::io::copy_buf(&mut reader, &mut to_pipe).await;
        let _ = to_pipe.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut from_pipe, &mut write).await;
        let _ = write.shutdown().await;
    };
    // Either side closing ends the session.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    Ok(())
}

/// One request line; the error is what the client is told.
pub fn decode_request(line: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::client::ControlClient;

    #[tokio::test]
    async fn requests_round_trip_and_errors_come_back_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = bind(&path).await.unwrap();
        let handler = Arc::new(|request: Request| async move {
            match request {
                Request::VmStart { name, .. } => Ok(Answer::Reply(Reply::Done {
                    message: format!("started {name}"),
                })),
                _ => anyhow::bail!("nope"),
            }
        });
        tokio::spawn(serve(listener, handler));
        let client = ControlClient::new(&path);
        let reply = client
            .call(&Request::VmStart {
                name: "web-1".into(),
                foreign: false,
            })
            .await
            .unwrap();
        assert_eq!(
            reply,
            Reply::Done {
                message: "started web-1".into()
            }
        );
        let err = client.call(&Request::Status).await.unwrap_err();
        assert_eq!(err.to_string(), "nope");
        // a second node on the same data dir is refused
        let again = bind(&path).await.unwrap_err().to_string();
        assert!(again.contains("already running"), "{again}");
    }

    #[tokio::test]
    async fn oversized_request_is_refused_without_buffering_it() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = bind(&path).await.unwrap();
        let handler = Arc::new(|_: Request| async {
            Ok(Answer::Reply(Reply::Done {
                message: "x".into(),
            }))
        });
        tokio::spawn(serve(listener, handler));
        let mut stream = UnixStream::connect(&path).await.unwrap();
        let (mut read, mut write) = stream.split();
        let flood = async {
            // More than MAX_LINE without a newline; the server stops reading.
            let chunk = vec![b'a'; 1024 * 1024];
            for _ in 0..(MAX_LINE / chunk.len() + 2) {
                if write.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        };
        let mut answer = String::new();
        let (_, read_result) = tokio::join!(flood, read.read_to_string(&mut answer));
        read_result.unwrap();
        let outcome: Outcome = serde_json::from_str(answer.trim()).unwrap();
        match outcome {
            Outcome::Error(e) => assert!(e.contains("request too large"), "{e}"),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn no_node_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let client = ControlClient::new(&dir.path().join("control.sock"));
        let err = client.call(&Request::Status).await.unwrap_err().to_string();
        assert!(err.contains("no peervisor node is running"), "{err}");
    }
}
