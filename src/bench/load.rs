//! `peervisor bench load`: many concurrent consumer connections through one
//! consumer peer to one provider peer, every reply checked. The peers are real
//! `peervisor node` processes (on libvirt's test driver: no VMs), so their memory
//! is measured apart from the load generator. The baseline is the same load sent
//! straight to the service, in the same run.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

use crate::control::client::ControlClient;
use crate::control::{Reply, Request};
use crate::node::identity::NetworkKeySource;
use crate::paths::DataDir;
use crate::rig::{NodeCommand, NodeProcess};

/// Bytes of one request (and of its echo).
const REQUEST_BYTES: usize = 64;
/// A request not answered in this long counts as lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// What a node may hold at its peak under the load: a base (an idle node,
/// debug build, measured 36-46 MiB) and a share per concurrent connection
/// (measured 20-25 KiB each at 1,000 and 3,000): 126.5 MiB at 1,000.
const MEMORY_BASE_KIB: u64 = 64 * 1024;
const MEMORY_PER_CONNECTION_KIB: u64 = 64;

/// The peak RSS each node may reach under `connections` concurrent connections.
pub fn memory_budget_kib(connections: usize) -> u64 {
    MEMORY_BASE_KIB + MEMORY_PER_CONNECTION_KIB * connections as u64
}

/// What one load run found.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub path: String,
    pub connections: usize,
    pub requests: usize,
    pub ok: usize,
    /// No reply (connection refused, closed or timed out).
    pub lost: usize,
    /// A reply that differs from the request.
    pub corrupted: usize,
    pub seconds: f64,
    pub requests_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub through_overlay: LoadResult,
    pub direct: LoadResult,
    /// Resident memory of the node processes, KiB: (nick, idle, after load, peak).
    pub memory_kib: Vec<NodeMemory>,
    /// The peak each node may reach ([`memory_budget_kib`]).
    pub memory_budget_kib: u64,
    pub fd_limit: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeMemory {
    pub node: String,
    pub idle_kib: u64,
    pub after_kib: u64,
    pub peak_kib: u64,
}

/// Runs the benchmark and prints a table (or JSON).
pub async fn run(connections: usize, requests: usize, json: bool) -> Result<()> {
    let report = measure(connections, requests).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    // With --json, stdout is the report; the target lines go to stderr.
    let say = |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let mut targets = super::Targets::default();
    let r = &report.through_overlay;
    say(targets.check(
        "no request lost or corrupted through the overlay",
        &format!("{} lost, {} corrupted", r.lost, r.corrupted),
        r.lost == 0 && r.corrupted == 0,
    ));
    let d = &report.direct;
    if d.ok < d.requests {
        let why = format!("{} lost, {} corrupted", d.lost, d.corrupted);
        say(targets.missing_baseline("direct to the service", &why));
    }
    for m in &report.memory_kib {
        say(targets.check(
            &format!(
                "{} peak RSS <= {} MiB",
                m.node,
                report.memory_budget_kib / 1024
            ),
            &format!("{} MiB", m.peak_kib / 1024),
            m.peak_kib <= report.memory_budget_kib,
        ));
    }
    targets.finish()
}

pub async fn measure(connections: usize, requests: usize) -> Result<LoadReport> {
    if connections == 0 || requests < connections {
        bail!("need at least one connection and one request per connection");
    }
    // All consumer connections ride one overlay connection between the two nodes.
    let most = crate::node::MAX_STREAMS_PER_CONNECTION;
    if connections > most {
        bail!("at most {most} connections: the streams one overlay connection carries");
    }
    let fd_limit = crate::admission::limits::raise_fd_limit()?;
    // Per connection: client and accepted socket here, two sockets in the nodes.
    if (connections as u64) * 2 + 64 > fd_limit {
        bail!("{connections} connections need more open files than the limit of {fd_limit}");
    }
    let echo = super::proxy::echo_server().await?;
    let dir = tempfile::Builder::new().prefix("pv-load-").tempdir()?;
    let key = hex::encode(rand::random::<[u8; 32]>());
    // The nodes run with the default per-peer limits, which admit 1,000 streams at
    // once; a bigger load raises them so it measures the path, not the limit.
    let rate = (connections as u32).max(1000).to_string();
    let limits = ["--peer-stream-rate", rate.as_str()];
    let mut provider = LoadNode::start(dir.path(), "load-provider", &key, None, &limits)?;
    let mut consumer = LoadNode::start(
        dir.path(),
        "load-consumer",
        &key,
        Some(provider.0.port),
        &limits,
    )?;
    provider.wait_ready().await?;
    consumer.wait_ready().await?;
    provider
        .call(Request::Expose {
            name: "load-echo".into(),
            target: format!("127.0.0.1:{echo}"),
            kind: Some("echo".into()),
            allow: Vec::new(),
            max_conns: None,
        })
        .await?;
    let listen = consumer.consume_when_found("load-echo").await?;

    let idle = [provider.rss()?, consumer.rss()?];
    let direct = load(echo, connections, requests, "direct to the service").await;
    let through_overlay = load(listen, connections, requests, "through the overlay").await;
    let memory_kib = [(&provider, idle[0]), (&consumer, idle[1])]
        .into_iter()
        .map(|(node, idle)| {
            let (after, peak) = node.rss()?;
            Ok(NodeMemory {
                node: node.0.nick.clone(),
                idle_kib: idle.0,
                after_kib: after,
                peak_kib: peak,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(LoadReport {
        through_overlay,
        direct,
        memory_kib,
        memory_budget_kib: memory_budget_kib(connections),
        fd_limit,
    })
}

/// Opens every connection first (so they are all open at once), then sends
/// `requests` in all, spread evenly, each one checked against its echo.
async fn load(port: u16, connections: usize, requests: usize, path: &str) -> LoadResult {
    let barrier = Arc::new(Barrier::new(connections + 1));
    let started = Arc::new(std::sync::OnceLock::new());
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let share = requests / connections + usize::from(i < requests % connections);
            let barrier = barrier.clone();
            tokio::spawn(async move { connection(port, i, share, barrier).await })
        })
        .collect();
    barrier.wait().await;
    let _ = started.set(Instant::now());
    let mut result = LoadResult {
        path: path.to_string(),
        connections,
        requests,
        ok: 0,
        lost: 0,
        corrupted: 0,
        seconds: 0.0,
        requests_per_s: 0.0,
    };
    for task in tasks {
        let (ok, corrupted) = task.await.unwrap_or((0, 0));
        result.ok += ok;
        result.corrupted += corrupted;
    }
    result.lost = requests - result.ok - result.corrupted;
    result.seconds = started
        .get()
        .map_or(0.0, |t: &Instant| t.elapsed().as_secs_f64());
    result.requests_per_s = result.ok as f64 / result.seconds.max(1e-9);
    result
}

/// One client: connect, wait for all others, then request/reply `count` times.
/// Returns (answered correctly, answered wrongly).
async fn connection(port: u16, id: usize, count: usize, barrier: Arc<Barrier>) -> (usize, usize) {
    let conn = TcpStream::connect(("127.0.0.1", port)).await;
    barrier.wait().await;
    let Ok(mut conn) = conn else {
        return (0, 0);
    };
    let _ = conn.set_nodelay(true);
    let (mut ok, mut corrupted) = (0, 0);
    let mut reply = [0u8; REQUEST_BYTES];
    for n in 0..count {
        let message = request_bytes(id, n);
        let exchange = async {
            conn.write_all(&message).await?;
            conn.read_exact(&mut reply).await
        };
        match tokio::time::timeout(REPLY_TIMEOUT, exchange).await {
            Ok(Ok(_)) if reply == message => ok += 1,
            Ok(Ok(_)) => corrupted += 1,
            _ => break,
        }
    }
    (ok, corrupted)
}

/// A request that names its connection and number, so a reply delivered to the
/// wrong connection or out of order shows as corrupted.
fn request_bytes(connection: usize, n: usize) -> [u8; REQUEST_BYTES] {
    let mut out = [0u8; REQUEST_BYTES];
    let head = format!("c{connection:06} r{n:06} ");
    out[..head.len()].copy_from_slice(head.as_bytes());
    for (i, b) in out[head.len()..].iter_mut().enumerate() {
        *b = ((connection * 31 + n * 7 + i) % 251) as u8;
    }
    out
}

/// A `peervisor node` child process on libvirt's test driver; killed on drop.
struct LoadNode(NodeProcess);

impl LoadNode {
    fn start(
        root: &Path,
        nick: &str,
        key: &str,
        bootstrap: Option<u16>,
        extra: &[&str],
    ) -> Result<LoadNode> {
        let port = crate::rig::free_ports(1)?[0];
        let dir = DataDir::new(root.join(nick));
        let key = NetworkKeySource::Environment(key.to_string());
        let mut command = NodeCommand::new(dir, nick, port, &key)?
            .args(["--hypervisor", "test:///default"])
            .args(["--guest-netns", "unused"])
            .args(extra)
            .env("PEERVISOR_LOG", "warn");
        if let Some(b) = bootstrap {
            command = command.bootstrap(b);
        }
        Ok(LoadNode(command.spawn()?))
    }

    fn control(&self) -> ControlClient {
        ControlClient::new(&self.0.dir.control_socket())
    }

    async fn call(&self, request: Request) -> Result<Reply> {
        self.control()
            .call(&request)
            .await
            .with_context(|| format!("node {}", self.0.nick))
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let control = self.control();
        let answers = || async { control.call(&Request::Status).await.is_ok() };
        self.0.wait_until(Duration::from_secs(30), answers).await
    }

    /// Consumes `service` once gossip or the DHT has shown it; the listener's port.
    async fn consume_when_found(&self, service: &str) -> Result<u16> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let request = Request::Consume {
                service: service.into(),
                local_port: None,
                bind: None,
            };
            match self.call(request).await {
                Ok(Reply::Consuming(c)) => {
                    let addr: std::net::SocketAddr = c.listen.parse()?;
                    return Ok(addr.port());
                }
                Ok(_) => bail!("unexpected reply to consume"),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// (resident, peak resident) KiB, from /proc.
    fn rss(&self) -> Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.0.pid());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| anyhow!("{path}: no {name}"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for LoadNode {
    fn drop(&mut self) {
        self.0.kill();
    }
}

fn table(report: &LoadReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "load: {} concurrent connections, {} requests of {REQUEST_BYTES} B (open file limit {})",
        report.through_overlay.connections, report.through_overlay.requests, report.fd_limit
    );
    let _ = writeln!(
        out,
        "{:<22} {:>8} {:>6} {:>9} {:>9} {:>12}",
        "path", "ok", "lost", "corrupted", "seconds", "requests/s"
    );
    for r in [&report.through_overlay, &report.direct] {
        let _ = writeln!(
            out,
            "{:<22} {:>8} {:>6} {:>9} {:>9.2} {:>12.0}",
            r.path, r.ok, r.lost, r.corrupted, r.seconds, r.requests_per_s
        );
    }
    let _ = writeln!(
        out,
        "{:<22} {:>10} {:>12} {:>10}",
        "node memory (RSS)", "idle", "after load", "peak"
    );
    for m in &report.memory_kib {
        let _ = writeln!(
            out,
            "{:<22} {:>7} MiB {:>9} MiB {:>7} MiB",
            m.node,
            m.idle_kib / 1024,
            m.after_kib / 1024,
            m.peak_kib / 1024
        );
    }
    let _ = writeln!(
        out,
        "baseline: the same load straight to the service (no peers), in the same run"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_differ_per_connection_and_number() {
        assert_ne!(request_bytes(1, 2), request_bytes(2, 1));
        assert_ne!(request_bytes(1, 2), request_bytes(1, 3));
        assert!(request_bytes(12, 34).starts_with(b"c000012 r000034 "));
    }
}
