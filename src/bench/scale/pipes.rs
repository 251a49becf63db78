//! The simulated network of `bench scale --sim`: libp2p's memory transport
//! between the nodes of this process, with per-node counters and a switch that
//! silently cuts links (a vanished peer, a partition).
//!
//! A connection is measured and cut at its dialing end, which knows both nodes
//! (the listening end only sees a throwaway port). A cut link neither delivers
//! nor refuses, as a TCP path whose packets are dropped: reads wait, writes go
//! to a send buffer (256 KiB, then they wait too) that is delivered when the
//! link heals, and closing the connection is at once (the kernel's business).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::{Boxed, MemoryTransport};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, Transport};

use crate::node::Pipe;

/// Memory ports of simulated nodes start here; each overlay gets ports of its
/// own (the process-wide memory hub outlives an overlay's nodes a moment).
const BASE_PORT: u64 = 40_000;
const PORTS_PER_NET: u64 = 1_000_000;
static NETS: AtomicU64 = AtomicU64::new(0);

/// What one node sent and received, counted at the transport: bytes on the
/// wire (after encryption) and writes, each about one encrypted frame.
#[derive(Default)]
pub struct Counters {
    pub sent_bytes: AtomicU64,
    pub recv_bytes: AtomicU64,
    pub sent_msgs: AtomicU64,
    pub recv_msgs: AtomicU64,
}

#[derive(Clone, Copy, Default, Debug)]
pub struct Traffic {
    pub sent_bytes: u64,
    pub recv_bytes: u64,
    pub sent_msgs: u64,
    pub recv_msgs: u64,
}

impl Traffic {
    pub fn minus(self, before: Traffic) -> Traffic {
        Traffic {
            sent_bytes: self.sent_bytes - before.sent_bytes,
            recv_bytes: self.recv_bytes - before.recv_bytes,
            sent_msgs: self.sent_msgs - before.sent_msgs,
            recv_msgs: self.recv_msgs - before.recv_msgs,
        }
    }
}

/// The simulated network: each node's group (links between groups are cut) and
/// counters.
pub struct Net {
    base: u64,
    groups: Mutex<Vec<u32>>,
    counters: Mutex<Vec<Arc<Counters>>>,
    /// Streams waiting on a cut link, woken when links heal.
    waiting: Mutex<Vec<Waker>>,
}

impl Net {
    pub fn new() -> Arc<Net> {
        Arc::new(Net {
            base: BASE_PORT + NETS.fetch_add(1, Ordering::Relaxed) * PORTS_PER_NET,
            groups: Mutex::new(Vec::new()),
            counters: Mutex::new(Vec::new()),
            waiting: Mutex::new(Vec::new()),
        })
    }

    /// Adds a node (group 0); returns its index.
    pub fn add_node(&self) -> usize {
        let mut groups = lock(&self.groups);
        groups.push(0);
        lock(&self.counters).push(Arc::default());
        groups.len() - 1
    }

    pub fn address(&self, node: usize) -> Multiaddr {
        Multiaddr::empty().with(Protocol::Memory(self.base + node as u64))
    }

    fn node_of(&self, addr: &Multiaddr) -> Option<usize> {
        addr.iter().find_map(|p| match p {
            Protocol::Memory(port) if (self.base..self.base + PORTS_PER_NET).contains(&port) => {
                Some((port - self.base) as usize)
            }
            _ => None,
        })
    }

    /// Moves nodes into a group; links between different groups are cut.
    pub fn set_group(&self, nodes: &[usize], group: u32) {
        {
            let mut groups = lock(&self.groups);
            for &n in nodes {
                groups[n] = group;
            }
        }
        for waker in lock(&self.waiting).drain(..) {
            waker.wake();
        }
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        let groups = lock(&self.groups);
        groups.get(a) != groups.get(b)
    }

    pub fn traffic(&self) -> Traffic {
        let mut total = Traffic::default();
        for c in lock(&self.counters).iter() {
            total.sent_bytes += c.sent_bytes.load(Ordering::Relaxed);
            total.recv_bytes += c.recv_bytes.load(Ordering::Relaxed);
            total.sent_msgs += c.sent_msgs.load(Ordering::Relaxed);
            total.recv_msgs += c.recv_msgs.load(Ordering::Relaxed);
        }
        total
    }

    /// The byte transport of node `me` (for `NodeConfig::wire`).
    pub fn transport(self: &Arc<Self>, me: usize) -> Boxed<Pipe> {
        let net = self.clone();
        MemoryTransport::default()
            .map(move |channel, endpoint| {
                let link = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => net.node_of(address).map(|peer| {
                        let counters = lock(&net.counters);
                        Link {
                            net: net.clone(),
                            me,
                            peer,
                            mine: counters[me].clone(),
                            theirs: counters[peer].clone(),
                        }
                    }),
                    ConnectedPoint::Listener { .. } => None,
                };
                Box::new(Cut {
                    inner: channel,
                    link,
                    queued: Vec::new(),
                }) as Pipe
            })
            .boxed()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Link {
    net: Arc<Net>,
    me: usize,
    peer: usize,
    mine: Arc<Counters>,
    theirs: Arc<Counters>,
}

impl Link {
    /// Whether the link is cut now; if so, the task is woken when links heal.
    fn stalled(&self, cx: &mut Context<'_>) -> bool {
        if !self.net.cut(self.me, self.peer) {
            return false;
        }
        lock(&self.net.waiting).push(cx.waker().clone());
        // Healed between the check and the registration: go on.
        self.net.cut(self.me, self.peer)
    }
}

/// What a cut link's writer may queue, as a socket's send buffer.
const SEND_BUFFER: usize = 256 * 1024;

struct Cut<T> {
    inner: T,
    link: Option<Link>,
    /// Written while the link was cut, sent once it heals.
    queued: Vec<u8>,
}

impl<T: AsyncWrite + Unpin> Cut<T> {
    /// Sends what was queued while cut; Ready once nothing is left.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.queued.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.queued) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.count_sent(n);
                    self.queued.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn count_sent(&self, n: usize) {
        if let Some(link) = &self.link {
            link.mine.sent_bytes.fetch_add(n as u64, Ordering::Relaxed);
            link.mine.sent_msgs.fetch_add(1, Ordering::Relaxed);
            link.theirs
                .recv_bytes
                .fetch_add(n as u64, Ordering::Relaxed);
            link.theirs.recv_msgs.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Cut<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.link.as_ref().is_some_and(|l| l.stalled(cx)) {
            return Poll::Pending;
        }
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (Some(link), Poll::Ready(Ok(n))) = (&self.link, &polled)
            && *n > 0
        {
            link.mine.recv_bytes.fetch_add(*n as u64, Ordering::Relaxed);
            link.mine.recv_msgs.fetch_add(1, Ordering::Relaxed);
            link.theirs
                .sent_bytes
                .fetch_add(*n as u64, Ordering::Relaxed);
            link.theirs.sent_msgs.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Cut<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.link.as_ref().is_some_and(|l| l.stalled(cx)) {
            let room = SEND_BUFFER.saturating_sub(this.queued.len()).min(buf.len());
            if room == 0 {
                return Poll::Pending;
            }
            this.queued.extend_from_slice(&buf[..room]);
            return Poll::Ready(Ok(room));
        }
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            this.count_sent(*n);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.link.as_ref().is_some_and(|l| l.stalled(cx)) {
            // In the send buffer: as flushed as a socket gets.
            return Poll::Ready(Ok(()));
        }
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.link.as_ref().is_some_and(|l| l.net.cut(l.me, l.peer)) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_map_back_to_their_node() {
        let (a, b) = (Net::new(), Net::new());
        assert_eq!(a.node_of(&a.address(7)), Some(7));
        assert_eq!(b.node_of(&a.address(7)), None, "another overlay's node");
        assert_eq!(a.node_of(&"/memory/12".parse().unwrap()), None);
    }
}
