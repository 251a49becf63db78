//! The byte paths of a live migration, both ends: the libvirt RPC tunnel and
//! QEMU's data channels, each a unix socket bridged to a libp2p stream.
//!
//! A VM migrates peer-to-peer, by default *not* tunnelled, over up to three
//! channels that all ride the overlay (libp2p streams: noise-encrypted,
//! authenticated): QEMU's memory stream then skips libvirt's RPC layer (measured
//! faster than tunnelling it, docs/migration.md). The NBD channel exists only
//! when the destination does not share the VM's disks:
//!
//! ```text
//! source daemon                         source node ══ overlay ══ destination node      destination daemon
//! libvirt RPC  → <run>/…/migrate-T.sock  → /peervisor/libvirt-tunnel/1     → libvirt socket
//! QEMU memory  → /run/libvirt/qemu/pv-T/mig.sock → migration-channel (T, 1) → same path → QEMU -incoming
//! QEMU NBD     → /run/libvirt/qemu/pv-T/nbd.sock → migration-channel (T, 2) → same path → QEMU NBD server
//! ```
//!
//! `pv-T` belongs to the user QEMU runs as on each side (`ChannelDir`). A
//! tunnelled migration (transport.rs) uses the libvirt RPC stream alone; a
//! loopback one puts memory and NBD on TCP ports of each host's loopback
//! instead of the unix sockets (tags 3 and 4, the ports the destination
//! picked), for a QEMU that may not reach our sockets.
//!
//! Each private libvirtd has its own /run/libvirt (a private mount namespace), so
//! one path names the source node's listener in the source daemon's view and the
//! destination QEMU's socket in the destination daemon's.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use libp2p::PeerId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::Migrations;
use crate::node::Client;
use crate::node::protocol::{CHANNEL_PROTOCOL, TUNNEL_PROTOCOL};
use crate::phases::Phases;

/// Channel tags after the token on a `CHANNEL_PROTOCOL` stream.
pub const MEMORY_CHANNEL: u8 = 1;

pub const DISKS_CHANNEL: u8 = 2;

/// A loopback migration's memory stream and disk copy: to QEMU on the
/// destination's loopback (transport.rs, `Transport::Loopback`).
pub const LOOPBACK_MEMORY_CHANNEL: u8 = 3;

pub const LOOPBACK_DISKS_CHANNEL: u8 = 4;

/// Read size of the tunnel's copies: large noise/yamux frames.
const TUNNEL_BUFFER: usize = 256 * 1024;

/// A tunnel stream must present its token this fast.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The directory of a migration's channel sockets inside a daemon's /run/libvirt.
fn channel_dir(token: u64) -> String {
    format!("qemu/pv-{token:016x}")
}

/// Where a channel's socket lives inside a daemon's /run/libvirt.
pub(super) fn channel_file(token: u64, tag: u8) -> Option<String> {
    let kind = match tag {
        MEMORY_CHANNEL => "mig",
        DISKS_CHANNEL => "nbd",
        _ => return None,
    };
    Some(format!("{}/{kind}.sock", channel_dir(token)))
}

/// A migration's directory for the data channel sockets, owned by the user
/// QEMU runs as (libvirt-qemu with a host's system daemon, mode 0700): the
/// destination's QEMU may bind its listening sockets there (it may not in the
/// root-owned /run/libvirt/qemu), the source's QEMU may reach the ones this node
/// binds; other users can do neither. Removed when dropped.
pub(super) struct ChannelDir {
    path: PathBuf,
}

impl ChannelDir {
    pub(super) fn make(run_dir: &Path, token: u64, owner: Option<u32>) -> Result<ChannelDir> {
        use std::os::unix::fs::PermissionsExt;
        let path = run_dir.join(channel_dir(token));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).with_context(|| format!("making {}", path.display()))?;
        let dir = ChannelDir { path };
        std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o700))
            .and_then(|()| std::os::unix::fs::chown(&dir.path, owner, None))
            .with_context(|| format!("handing {} to uid {owner:?}", dir.path.display()))?;
        Ok(dir)
    }
}

impl Drop for ChannelDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl Migrations {
    /// Destination side: the local socket a data channel connects to.
    fn channel_socket(&self, token: u64, tag: u8) -> Result<PathBuf> {
        let file = channel_file(token, tag).ok_or_else(|| anyhow!("unknown channel {tag}"))?;
        Ok(self.daemon.run_dir.join(file))
    }
}

/// Source side: a local listener (a unix socket for the local libvirtd or
/// QEMU, or a loopback TCP port for a confined QEMU's disk copy) whose every
/// connection is carried to the destination in a libp2p stream. A socket file
/// is removed when dropped.
pub(super) struct TunnelBridge {
    /// The unix socket's path (None for a TCP port).
    pub(super) path: Option<PathBuf>,
    task: tokio::task::JoinHandle<()>,
    /// The first error a tunnel stream ended with (the overlay broke).
    broken: Arc<Mutex<Option<String>>>,
    /// Bytes carried towards the destination so far.
    sent: Arc<std::sync::atomic::AtomicU64>,
}

/// What a bridge listens on: a unix socket, or a loopback port only
/// connections of one user are carried from.
enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener, u32),
}

/// A local connection to carry, either kind.
trait LocalStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> LocalStream for T {}

impl Listener {
    async fn accept(&self) -> std::io::Result<Box<dyn LocalStream>> {
        Ok(match self {
            Listener::Unix(l) => Box::new(l.accept().await?.0),
            Listener::Tcp(l, uid) => loop {
                let (stream, peer) = l.accept().await?;
                let to = l.local_addr()?.port();
                let owner = super::loopback::connection_owner(peer.port(), to);
                if super::loopback::trusted(owner, *uid) {
                    break Box::new(stream);
                }
                tracing::warn!(
                    "migration: a connection to 127.0.0.1:{to} from uid {owner:?}, neither QEMU's ({uid}) nor root: dropped"
                );
            },
        })
    }
}

impl TunnelBridge {
    /// Each connection to the unix socket `path` becomes a `protocol` stream
    /// to `dest` that starts with `header` (the token; a data channel adds its tag).
    pub(super) fn bind(
        node: &Client,
        path: PathBuf,
        dest: PeerId,
        protocol: libp2p::StreamProtocol,
        header: Vec<u8>,
        phases: Phases,
    ) -> Result<Self> {
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        let mut bridge = Self::serve(
            node,
            Listener::Unix(listener),
            dest,
            (protocol, header),
            phases,
        );
        bridge.path = Some(path);
        Ok(bridge)
    }

    /// The same on `port` of this host's loopback (a confined QEMU may connect
    /// to a TCP port where it may not reach a unix socket of ours), for the
    /// data channel `tag`; only connections of `qemu_uid` are carried.
    pub(super) async fn bind_loopback(
        node: &Client,
        (port, qemu_uid): (u16, u32),
        dest: PeerId,
        (token, tag): (u64, u8),
        phases: Phases,
    ) -> Result<Self> {
        let mut header = token.to_be_bytes().to_vec();
        header.push(tag);
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{port} for QEMU"))?;
        Ok(Self::serve(
            node,
            Listener::Tcp(listener, qemu_uid),
            dest,
            (CHANNEL_PROTOCOL, header),
            phases,
        ))
    }

    fn serve(
        node: &Client,
        listener: Listener,
        dest: PeerId,
        (protocol, header): (libp2p::StreamProtocol, Vec<u8>),
        phases: Phases,
    ) -> Self {
        let streams = node.streams();
        let broken = Arc::new(Mutex::new(None));
        let first_error = broken.clone();
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = sent.clone();
        let task = tokio::spawn(async move {
            while let Ok(local) = listener.accept().await {
                let mut streams = streams.clone();
                let first_error = first_error.clone();
                let phases = phases.clone();
                let (protocol, header) = (protocol.clone(), header.clone());
                let counter = counter.clone();
                tokio::spawn(async move {
                    let carried = carry(
                        &mut streams,
                        local,
                        dest,
                        (protocol, &header),
                        counter,
                        &phases,
                    )
                    .await;
                    phases.mark("tunnel stream closed");
                    let broke = match carried {
                        Ok(None) => return,
                        Ok(Some(why)) => why,
                        Err(e) => format!("{e:#}"),
                    };
                    tracing::warn!("migration tunnel: {broke}");
                    let mut first = first_error.lock().unwrap_or_else(|e| e.into_inner());
                    first.get_or_insert(broke);
                });
            }
        });
        TunnelBridge {
            path: None,
            task,
            broken,
            sent,
        }
    }

    /// Bytes carried towards the destination so far.
    pub(super) fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn first_error(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for TunnelBridge {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Carries one libvirt connection to the destination. The local libvirt ends a
/// connection it is done with; if the overlay side ends first, the tunnel broke
/// under a running transfer (destination gone, overlay cut): returns why.
async fn carry(
    streams: &mut crate::node::StreamControl,
    local: Box<dyn LocalStream>,
    dest: PeerId,
    (protocol, header): (libp2p::StreamProtocol, &[u8]),
    sent: Arc<std::sync::atomic::AtomicU64>,
    phases: &Phases,
) -> Result<Option<String>> {
    let stream = streams
        .open_stream(dest, protocol)
        .await
        .map_err(|e| anyhow!("opening a tunnel stream: {e}"))?;
    phases.mark_once("tunnel open");
    let mut remote = stream.compat();
    remote.write_all(header).await?;
    let (local_read, mut local_write) = tokio::io::split(local);
    let (remote_read, remote_write) = tokio::io::split(remote);
    let mut remote_write = Counted {
        inner: remote_write,
        count: sent,
    };
    // Large reads make large noise/yamux frames (the memory stream is most of it).
    let mut local_read = tokio::io::BufReader::with_capacity(TUNNEL_BUFFER, local_read);
    let mut remote_read = tokio::io::BufReader::with_capacity(TUNNEL_BUFFER, remote_read);
    let up = async {
        let copied = tokio::io::copy_buf(&mut local_read, &mut remote_write).await;
        let _ = remote_write.shutdown().await;
        copied
    };
    let down = async {
        let copied = tokio::io::copy_buf(&mut remote_read, &mut local_write).await;
        let _ = local_write.shutdown().await;
        copied
    };
    tokio::pin!(up, down);
    tokio::select! {
        sent = &mut up => {
            // libvirt hung up first: the far end follows once it has seen that.
            let received = down.await;
            tracing::debug!(
                "migration tunnel stream done: {:?} bytes sent, {:?} received",
                sent.ok(),
                received.ok()
            );
            Ok(None)
        }
        far_end = &mut down => Ok(Some(match far_end {
            Ok(_) => "the stream was closed from the far end".to_string(),
            Err(e) => e.to_string(),
        })),
    }
}

/// Destination side: accepts tunnel streams and connects each authorized one to
/// the local libvirt socket.
pub(super) async fn accept_tunnels(migrations: Arc<Migrations>) {
    tokio::spawn(accept_streams(migrations.clone(), CHANNEL_PROTOCOL));
    accept_streams(migrations, TUNNEL_PROTOCOL).await
}

/// Destination side: accepts `protocol` streams: libvirt tunnels, or a migration's
/// data channels (`channel_socket`).
async fn accept_streams(migrations: Arc<Migrations>, protocol: libp2p::StreamProtocol) {
    let channel = protocol == CHANNEL_PROTOCOL;
    let mut incoming = match migrations.node.streams().accept(protocol) {
        Ok(incoming) => incoming,
        Err(e) => {
            tracing::error!("cannot accept migration tunnels: {e}");
            return;
        }
    };
    while let Some((from, stream)) = incoming.next().await {
        let migrations = migrations.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_tunnel(migrations.clone(), from, stream, channel).await
                && migrations.limits.log_refusal(&from)
            {
                tracing::warn!("migration tunnel from {from}: {e:#}");
            }
        });
    }
}

async fn serve_tunnel(
    migrations: Arc<Migrations>,
    from: PeerId,
    stream: crate::node::Stream,
    channel: bool,
) -> Result<()> {
    if let Err(retry) = migrations.limits.streams.check(&from) {
        let per_s = migrations.limits.streams.per_s();
        bail!(
            "dropped: {}",
            crate::admission::limits::rate_limited("streams", per_s, retry)
        );
    }
    let mut remote = stream.compat();
    let mut token = [0u8; 8];
    tokio::time::timeout(TOKEN_TIMEOUT, remote.read_exact(&mut token))
        .await
        .map_err(|_| anyhow!("no token within {TOKEN_TIMEOUT:?}"))??;
    let token = u64::from_be_bytes(token);
    let target = if !channel {
        Target::Unix(migrations.daemon.socket.clone())
    } else {
        let mut tag = [0u8; 1];
        tokio::time::timeout(TOKEN_TIMEOUT, remote.read_exact(&mut tag))
            .await
            .map_err(|_| anyhow!("no channel tag within {TOKEN_TIMEOUT:?}"))??;
        if let Some(which) = loopback_index(tag[0]) {
            // The port is the grant's, never one the stream names.
            let (ports, qemu_uid) = migrations
                .grants
                .loopback_ports(token)
                .ok_or_else(|| anyhow!("no loopback migration for this token"))?;
            Target::Loopback(ports[which], qemu_uid)
        } else {
            Target::Unix(migrations.channel_socket(token, tag[0])?)
        }
    };
    if !migrations.grants.stream_opened(token, from) {
        bail!("stream with an unknown or expired token: dropped");
    }
    tracing::debug!("migration tunnel stream from {from} opened");
    let carried = async {
        let (received, sent) = match &target {
            Target::Unix(path) => {
                let mut local = UnixStream::connect(path)
                    .await
                    .with_context(|| format!("connecting to {}", path.display()))?;
                crate::services::proxy::pipe(&mut remote, &mut local).await?
            }
            Target::Loopback(port, qemu_uid) => {
                // Anyone may listen on a loopback port: the VM goes only to QEMU.
                let owner = super::loopback::listener_owner(*port);
                if !super::loopback::trusted(owner, *qemu_uid) {
                    bail!("127.0.0.1:{port} is held by uid {owner:?}, neither QEMU's ({qemu_uid}) nor root: not connected");
                }
                let mut local = TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, *port))
                    .await
                    .with_context(|| format!("connecting to QEMU on 127.0.0.1:{port}"))?;
                crate::services::proxy::pipe(&mut remote, &mut local).await?
            }
        };
        tracing::debug!(
            "migration tunnel stream from {from} closed: {received} bytes received, {sent} sent"
        );
        anyhow::Ok(())
    }
    .await;
    if migrations.grants.stream_closed(token) {
        tokio::spawn(migrations.clone().settle_after_tunnel(from, token));
    }
    carried
}

/// Which of a grant's loopback ports a channel tag names.
fn loopback_index(tag: u8) -> Option<usize> {
    match tag {
        LOOPBACK_MEMORY_CHANNEL => Some(0),
        LOOPBACK_DISKS_CHANNEL => Some(1),
        _ => None,
    }
}

/// Where the destination connects a tunnel stream.
enum Target {
    Unix(PathBuf),
    /// A port and the user QEMU runs as.
    Loopback(u16, u32),
}

/// A writer that counts the bytes written through it.
pub struct Counted<W> {
    pub inner: W,
    pub count: Arc<AtomicU64>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.count.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_have_fixed_socket_names() {
        assert_eq!(
            channel_file(0xab, MEMORY_CHANNEL).unwrap(),
            "qemu/pv-00000000000000ab/mig.sock"
        );
        assert_eq!(
            channel_file(0xab, DISKS_CHANNEL).unwrap(),
            "qemu/pv-00000000000000ab/nbd.sock"
        );
        assert!(channel_file(1, 9).is_none());
    }
}
