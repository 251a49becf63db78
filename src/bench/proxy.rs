//! `peervisor bench proxy` and `peervisor bench discovery`: the consume proxy and
//! discovery measured against their baselines in the same run, on loopback, with
//! real peers (in this process, on libvirt's test driver: no VMs are involved).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::names::ServiceName;
use crate::node::identity::NetworkKeySource;
use crate::paths::DataDir;
use crate::peer::{Peer, PeerConfig};

const CHUNK: usize = 64 * 1024;

/// One peer of a benchmark overlay.
async fn bench_peer(
    root: &Path,
    nick: &str,
    key: &str,
    bootstrap: Option<u16>,
) -> Result<(Arc<Peer>, u16)> {
    let port = free_port()?;
    let config = PeerConfig {
        bootstrap: bootstrap
            .map(|p| format!("/ip4/127.0.0.1/tcp/{p}").parse())
            .transpose()?
            .into_iter()
            .collect(),
        network_key: Some(NetworkKeySource::Environment(key.to_string())),
        ..PeerConfig::on_test_driver(DataDir::new(root.join(nick)), nick, port)
    };
    Ok((Peer::start(config).await?, port))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Counts what it receives until EOF, then answers with the count (8 bytes).
async fn sink_server() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                let mut total = 0u64;
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                let _ = conn.write_all(&total.to_be_bytes()).await;
            });
        }
    });
    Ok(port)
}

/// An echo server on loopback for the proxy and load benchmarks.
pub(super) async fn echo_server() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = conn.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok(port)
}

/// A plain TCP forwarder to `target` (no encryption, no multiplexing).
async fn relay(target: u16) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                    let _ = crate::services::proxy::pipe(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok(port)
}

/// An AEAD sealing and opening 16 KiB frames on one core, in B/s of payload:
/// the cipher's share of the ceiling, since every byte through the overlay is
/// sealed once and opened once. ChaCha20-Poly1305 is what noise uses (ring's,
/// through snow); AES-128-GCM what the TLS channel negotiates on CPUs with AES
/// instructions (aws-lc's, through rustls).
fn cipher_throughput(algorithm: &'static ring::aead::Algorithm, bytes: u64) -> Result<f64> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
    let key = vec![7u8; algorithm.key_len()];
    let cipher =
        LessSafeKey::new(UnboundKey::new(algorithm, &key).map_err(|_| anyhow!("bad key"))?);
    const FRAME: usize = 16 * 1024;
    let mut frame = vec![0x5au8; FRAME];
    let frames = bytes / FRAME as u64;
    let started = Instant::now();
    for counter in 0..frames {
        let nonce = || {
            let mut n = [0u8; 12];
            n[4..].copy_from_slice(&counter.to_le_bytes());
            Nonce::assume_unique_for_key(n)
        };
        let tag = cipher
            .seal_in_place_separate_tag(nonce(), Aad::empty(), &mut frame)
            .map_err(|_| anyhow!("seal failed"))?;
        frame.extend_from_slice(tag.as_ref());
        cipher
            .open_in_place(nonce(), Aad::empty(), &mut frame)
            .map_err(|_| anyhow!("open failed"))?;
        frame.truncate(FRAME);
    }
    Ok((frames * FRAME as u64) as f64 / started.elapsed().as_secs_f64())
}

/// CPU time (user + system) this process has used so far, all threads.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Sends `bytes` and waits for the sink's count: one stream's throughput in B/s.
async fn throughput(port: u16, bytes: u64) -> Result<f64> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await?;
    let chunk = vec![0x5au8; CHUNK];
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(CHUNK as u64) as usize;
        conn.write_all(&chunk[..n]).await?;
        sent += n as u64;
    }
    conn.shutdown().await?;
    let mut count = [0u8; 8];
    conn.read_exact(&mut count).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let received = u64::from_be_bytes(count);
    if received != bytes {
        bail!("sink received {received} of {bytes} bytes");
    }
    Ok(bytes as f64 / elapsed)
}

/// A path's figures: the best of three runs' throughput (the least disturbed
/// by the rest of the machine) and the CPU this process spent per GiB moved,
/// which holds still on a busy machine where throughput does not.
struct PathFigures {
    throughput: f64,
    cpu_per_gib: Option<Duration>,
}

async fn best_throughput(port: u16, bytes: u64) -> Result<PathFigures> {
    let mut best: f64 = 0.0;
    let cpu_before = process_cpu();
    for _ in 0..3 {
        best = best.max(throughput(port, bytes).await?);
    }
    let cpu = process_cpu().saturating_sub(cpu_before);
    let gib = (3 * bytes) as f64 / (1u64 << 30) as f64;
    Ok(PathFigures {
        throughput: best,
        cpu_per_gib: Some(cpu.div_f64(gib)),
    })
}

/// Round-trip times of small messages on one established connection.
async fn round_trips(port: u16, count: usize) -> Result<Vec<Duration>> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await?;
    conn.set_nodelay(true)?;
    let message = [7u8; 64];
    let mut reply = [0u8; 64];
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        conn.write_all(&message).await?;
        conn.read_exact(&mut reply).await?;
        times.push(started.elapsed());
    }
    Ok(times)
}

/// Many connections at once, each checking its echoed bytes; returns failures.
async fn concurrent(port: u16, connections: usize, exchanges: usize) -> usize {
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            tokio::spawn(async move {
                let run = async {
                    let mut conn = TcpStream::connect(("127.0.0.1", port)).await?;
                    let message: Vec<u8> = (0..1024).map(|j| ((i + j) % 251) as u8).collect();
                    let mut reply = vec![0u8; message.len()];
                    for _ in 0..exchanges {
                        conn.write_all(&message).await?;
                        conn.read_exact(&mut reply).await?;
                        if reply != message {
                            bail!("corrupted reply");
                        }
                    }
                    Ok::<_, anyhow::Error>(())
                };
                tokio::time::timeout(Duration::from_secs(60), run)
                    .await
                    .is_ok_and(|r| r.is_ok())
            })
        })
        .collect();
    let mut failed = 0;
    for task in tasks {
        if !task.await.unwrap_or(false) {
            failed += 1;
        }
    }
    failed
}

fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    let index = ((times.len() as f64 - 1.0) * p).round() as usize;
    times.get(index).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn rate(bps: f64) -> String {
    format!("{:.1} MB/s", bps / 1e6)
}

/// A consumer and a provider peer; returns the consume listener's port for a
/// legacy service exposed on the provider at `target_port`.
async fn consume_through_overlay(
    root: &Path,
    key: &str,
    service: &str,
    target_port: u16,
) -> Result<(u16, Vec<Arc<Peer>>)> {
    let service = &ServiceName::from(service);
    let (provider, provider_port) =
        bench_peer(root, &format!("provider-{service}"), key, None).await?;
    let (consumer, _) = bench_peer(
        root,
        &format!("consumer-{service}"),
        key,
        Some(provider_port),
    )
    .await?;
    provider
        .services()
        .expose(
            service,
            &format!("127.0.0.1:{target_port}"),
            Some("tcp"),
            Vec::new(),
            None,
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !consumer.services().knows_service(service) {
        if Instant::now() > deadline {
            bail!("the consumer never heard of '{service}'");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let view = consumer.services().consume(service, None, None).await?;
    let port = view
        .listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("bad listen address {}", view.listen))?;
    Ok((port, vec![provider, consumer]))
}

pub async fn proxy(megabytes: u64, requests: usize, connections: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = hex::encode(rand::random::<[u8; 32]>());
    let bytes = megabytes * 1024 * 1024;
    eprintln!("starting two peers on loopback…");
    let sink = sink_server().await?;
    let echo = echo_server().await?;
    let (sink_via, _p1) = consume_through_overlay(dir.path(), &key, "sink", sink).await?;
    let (echo_via, _p2) = consume_through_overlay(dir.path(), &key, "echo", echo).await?;

    eprintln!("throughput: {megabytes} MiB per run, best of 3…");
    let direct = best_throughput(sink, bytes).await?;
    let relayed = best_throughput(relay(relay(sink).await?).await?, bytes).await?;
    let overlay = best_throughput(sink_via, bytes).await?;
    let ssh = match SshTunnel::start(dir.path(), sink).await {
        Ok(tunnel) => {
            let result = best_throughput(tunnel.port, bytes).await;
            drop(tunnel);
            // Its CPU is spent in ssh and sshd, not in this process.
            Ok(PathFigures {
                cpu_per_gib: None,
                ..result?
            })
        }
        Err(e) => Err(format!("{e:#}")),
    };
    let chacha = tokio::task::spawn_blocking(move || {
        cipher_throughput(&ring::aead::CHACHA20_POLY1305, bytes)
    })
    .await??;
    let aes =
        tokio::task::spawn_blocking(move || cipher_throughput(&ring::aead::AES_128_GCM, bytes))
            .await??;

    println!(
        "\nconsume proxy throughput, one stream, {megabytes} MiB, loopback ({})",
        load_line()
    );
    println!(
        "{:<34} {:>12} {:>10} {:>12}",
        "path", "throughput", "vs relays", "CPU per GiB"
    );
    let row = |name: &str, figures: &PathFigures| {
        let cpu = figures
            .cpu_per_gib
            .map(|c| format!("{:.2} s", c.as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        println!(
            "{name:<34} {:>12} {:>9.2}x {cpu:>12}",
            rate(figures.throughput),
            figures.throughput / relayed.throughput
        );
    };
    row("direct loopback", &direct);
    row("two plain TCP relays (baseline)", &relayed);
    row("peervisor consume", &overlay);
    match &ssh {
        Ok(figures) => row("ssh -L (OpenSSH)", figures),
        Err(why) => println!(
            "{:<34} {:>12}   not measured: {why}",
            "ssh -L (OpenSSH)", "-"
        ),
    }
    println!(
        "{:<34} {:>12}",
        "ChaCha20-Poly1305, 1 core (noise)",
        rate(chacha)
    );
    println!("{:<34} {:>12}", "AES-128-GCM, 1 core (TLS)", rate(aes));
    println!(
        "(consume and ssh -L cross the same hops as two plain relays: client -> relay -> relay -> sink;\n \
         CPU per GiB is this whole process's (client, relays or both peers, sink); a cipher row is\n \
         sealing plus opening 16 KiB frames on one core, which every byte through the overlay needs)"
    );
    let mut targets = super::Targets::default();
    let vs_relays = overlay.throughput / relayed.throughput;
    println!(
        "{}",
        targets.check(
            "consume >= 0.8x two plain relays",
            &format!("{vs_relays:.2}x"),
            vs_relays >= 0.8
        )
    );
    match &ssh {
        Ok(figures) => {
            let vs_ssh = overlay.throughput / figures.throughput;
            let figure = format!("{vs_ssh:.2}x");
            println!(
                "{}",
                targets.check("consume >= 3x ssh -L", &figure, vs_ssh >= 3.0)
            );
        }
        Err(_) => println!(
            "{}",
            targets.not_measured("consume >= 3x ssh -L", "no ssh baseline")
        ),
    }

    eprintln!("latency: {requests} round trips of 64 bytes…");
    let mut direct_rtt = round_trips(echo, requests).await?;
    let mut overlay_rtt = round_trips(echo_via, requests).await?;
    let (d50, o50) = (
        percentile(&mut direct_rtt, 0.5),
        percentile(&mut overlay_rtt, 0.5),
    );
    let (d99, o99) = (
        percentile(&mut direct_rtt, 0.99),
        percentile(&mut overlay_rtt, 0.99),
    );
    println!("\nsmall request/response on an open connection, {requests} round trips");
    println!("{:<28} {:>12} {:>12}", "path", "p50", "p99");
    println!(
        "{:<28} {:>12} {:>12}",
        "direct loopback (baseline)",
        ms(d50),
        ms(d99)
    );
    println!(
        "{:<28} {:>12} {:>12}",
        "peervisor consume",
        ms(o50),
        ms(o99)
    );
    let added = o50.saturating_sub(d50);
    println!("{:<28} {:>12}", "added by the overlay (p50)", ms(added));
    println!(
        "{}",
        targets.check(
            "consume adds <= 1 ms p50 to a small request",
            &ms(added),
            added <= Duration::from_millis(1)
        )
    );

    eprintln!("{connections} concurrent connections…");
    let started = Instant::now();
    let failed = concurrent(echo_via, connections, 10).await;
    println!(
        "\n{connections} concurrent connections x 10 exchanges of 1 KiB through the proxy: {} ok, {failed} failed ({:.2} s)",
        connections - failed,
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        bail!("{failed} of {connections} concurrent connections failed");
    }
    targets.finish()
}

/// `ssh -L` through a private sshd on loopback: the baseline an operator would
/// otherwise use to reach a remote service.
struct SshTunnel {
    port: u16,
    sshd: tokio::process::Child,
    ssh: tokio::process::Child,
}

impl SshTunnel {
    async fn start(dir: &Path, target: u16) -> Result<SshTunnel> {
        if !crate::paths::is_root() {
            bail!("needs root to run a private sshd");
        }
        let sshd_bin = Path::new("/usr/sbin/sshd");
        if !sshd_bin.exists() {
            bail!("/usr/sbin/sshd not installed (openssh-server)");
        }
        let dir = dir.join("ssh");
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all("/run/sshd")?;
        for name in ["host_key", "client_key"] {
            let out = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(name))
                .output()
                .context("running ssh-keygen")?;
            if !out.status.success() {
                bail!(
                    "ssh-keygen failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
        let sshd_port = free_port()?;
        let config = format!(
            "Port {sshd_port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nAllowTcpForwarding yes\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config)?;
        let sshd = tokio::process::Command::new(sshd_bin)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting sshd")?;
        let port = free_port()?;
        wait_for_port(sshd_port)
            .await
            .context("sshd did not start")?;
        let ssh = tokio::process::Command::new("ssh")
            .args([
                "-N",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-i",
            ])
            .arg(dir.join("client_key"))
            .args([
                "-p",
                &sshd_port.to_string(),
                "-L",
                &format!("{port}:127.0.0.1:{target}"),
                "root@127.0.0.1",
            ])
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting ssh")?;
        wait_for_port(port)
            .await
            .context("ssh -L did not open its port")?;
        Ok(SshTunnel { port, sshd, ssh })
    }
}

impl Drop for SshTunnel {
    fn drop(&mut self) {
        let _ = self.ssh.start_kill();
        let _ = self.sshd.start_kill();
    }
}

async fn wait_for_port(port: u16) -> Result<()> {
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("port {port} never opened")
}

/// The machine's 1-minute load average, printed beside figures that depend on it.
fn load_line() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    match sysinfo::System::load_average() {
        Ok(load) => format!("load average {:.1} on {cpus} CPUs", load.one),
        Err(_) => format!("{cpus} CPUs"),
    }
}

/// CPU time this process used over `window`, in cores (1.0 = one core busy).
async fn process_cpu_over(window: Duration) -> f64 {
    fn cpu_ms() -> Option<u64> {
        use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System};
        let pid = sysinfo::get_current_pid().ok()?;
        let mut system = System::new().ok()?;
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            false,
            ProcessRefreshKind::nothing().with_cpu(),
        );
        Some(system.process(pid)?.accumulated_cpu_time())
    }
    let before = cpu_ms();
    tokio::time::sleep(window).await;
    match (before, cpu_ms()) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1000.0 / window.as_secs_f64(),
        _ => f64::NAN,
    }
}

/// Publish -> visible on every peer, in an overlay of `peers` in-process peers.
pub async fn discovery(peers: usize, rounds: usize) -> Result<()> {
    if peers < 2 {
        bail!("--peers must be at least 2");
    }
    let dir = tempfile::tempdir()?;
    let key = hex::encode(rand::random::<[u8; 32]>());
    let target = sink_server().await?;
    eprintln!("starting {peers} peers on loopback…");
    let overlay_age = Instant::now();
    let (hub, hub_port) = bench_peer(dir.path(), "peer-0", &key, None).await?;
    let mut overlay = vec![hub];
    for i in 1..peers {
        let (peer, _) = bench_peer(dir.path(), &format!("peer-{i}"), &key, Some(hub_port)).await?;
        overlay.push(peer);
    }
    // Measure a settled overlay: every peer at its connection target, the start-up
    // DHT bootstraps over (30 s), gossip meshes built.
    eprintln!("waiting for the overlay to settle…");
    let want = (peers - 1).min(8);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut settled = true;
        for peer in &overlay {
            settled &= peer.connected_peers().await >= want;
        }
        if settled && overlay_age.elapsed() > Duration::from_secs(35) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the overlay did not settle within 90 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let idle_cores = process_cpu_over(Duration::from_secs(5)).await;
    eprintln!("idle overlay: {idle_cores:.2} CPUs busy; {rounds} publications…");
    let mut first = Vec::with_capacity(rounds);
    let mut stragglers = 0;
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let publisher = &overlay[(round * 7 + 1) % peers];
        let name = ServiceName::from(format!("bench-{round}"));
        let started = Instant::now();
        publisher
            .services()
            .expose(
                &name,
                &format!("127.0.0.1:{target}"),
                Some("tcp"),
                Vec::new(),
                None,
            )
            .await?;
        let deadline = started + Duration::from_secs(30);
        let mut first_seen = None;
        loop {
            let missing = overlay
                .iter()
                .filter(|p| !Arc::ptr_eq(p, publisher) && !p.services().knows_service(&name))
                .count();
            if missing < peers - 1 && first_seen.is_none() {
                first_seen = Some(started.elapsed());
            }
            if missing == 0 {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("'{name}' still unknown to {missing} peer(s) after 30 s");
                stragglers += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(started.elapsed());
        first.extend(first_seen);
        publisher.services().unexpose(&name)?;
        // Let the withdrawal settle so rounds do not overlap.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "\ndiscovery: publish -> known to other peers, {peers} peers in this process, {rounds} publications ({})",
        load_line()
    );
    println!("{:<28} {:>12} {:>12} {:>12}", "", "p50", "p95", "max");
    for (label, list) in [
        ("first other peer", &mut first),
        ("every other peer", &mut times),
    ] {
        println!(
            "{:<28} {:>12} {:>12} {:>12}",
            label,
            ms(percentile(list, 0.5)),
            ms(percentile(list, 0.95)),
            ms(percentile(list, 1.0))
        );
    }
    if stragglers > 0 {
        println!("{stragglers} publication(s) not known everywhere within 30 s (counted as 30 s)");
    }
    let mut targets = super::Targets::default();
    let p95 = percentile(&mut times, 0.95);
    println!(
        "{}",
        targets.check(
            &format!(
                "publish -> every other peer p95 < 1 s ({peers} peers; the design's is for 50)"
            ),
            &ms(p95),
            p95 < Duration::from_secs(1) && stragglers == 0
        )
    );
    println!(
        "the idle overlay kept {idle_cores:.2} of this host's {} CPUs busy (5 s before the publications)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for peer in &overlay {
        peer.shutdown(false).await;
    }
    targets.finish()
}
