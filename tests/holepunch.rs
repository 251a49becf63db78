//! Hole punching through real NAT: two peers in home namespaces behind nft
//! masquerading routers, a relay on the public segment between them (tests/common/
//! natlab.rs). They first reach each other through the relay; DCUtR then punches a
//! direct TCP connection (simultaneous open through both NATs) and the relayed one
//! is dropped. Behind a symmetric NAT the link stays relayed and still works.
//! AutoNAT tells the relay it is public and the homes that they are behind NAT.
//! (Nodes use libvirt's test driver: these tests are about the overlay.)
//!
//! `cargo nextest run --no-capture --test holepunch` prints the figures.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::guests::{Rig, boot, guest_state};
use common::natlab::{Nat, NatLab, PathBytes, in_netns};
use common::{NodeOptions, TestNode, echo_server, eventually, fresh_key, stderr};
use serde_json::Value;

/// Punch rounds for the median time to a direct link.
const ROUNDS: usize = 3;

fn options<'a>(nick: &'a str, key: &'a str, extra: &'a [&'a str]) -> NodeOptions<'a> {
    NodeOptions {
        nick,
        key,
        bootstrap: None,
        hypervisor: Some("test:///default"),
        guest_netns: "unused",
        extra,
    }
}

fn start_relay(lab: &NatLab, key: &str) -> TestNode {
    TestNode::start_in(
        options("relay", key, &["--relay-server"]),
        Some(&lab.public.name),
        &[&lab.public_ip(0), &lab.public_ip(1)],
        &[],
    )
}

/// Peer-a in home 0 or peer-c in home 1, joining through the relay.
fn start_home(lab: &NatLab, key: &str, relay: &TestNode, i: usize) -> TestNode {
    start_home_with(lab, options(["peer-a", "peer-c"][i], key, &[]), relay, i)
}

fn start_home_with(lab: &NatLab, opts: NodeOptions, relay: &TestNode, i: usize) -> TestNode {
    TestNode::start_in(
        opts,
        Some(lab.home(i)),
        &[&lab.home_ip(i)],
        &[format!("/ip4/{}/tcp/{}", lab.public_ip(i), relay.port)],
    )
}

/// Peer-a and peer-c, once peer-c reaches peer-a through the relay.
fn start_relayed_pair(lab: &NatLab, key: &str, relay: &TestNode) -> (TestNode, TestNode) {
    let relay_id = relay.peer_id();
    let a = start_home(lab, key, relay, 0);
    let c = start_home(lab, key, relay, 1);
    assert!(
        eventually(Duration::from_secs(60), || relayed(&c, "peer-a", &relay_id)),
        "peer-c should reach peer-a through the relay: {}\n{}",
        c.peer("peer-a"),
        logs(&[relay, &a, &c])
    );
    (a, c)
}

/// Established TCP connections from home `i` to router `j`'s public address: a
/// direct link between the homes crosses both NATs.
fn tcp_to_router(lab: &NatLab, i: usize, j: usize) -> usize {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.home(i),
            "ss",
            "-Htn",
            "state",
            "established",
        ])
        .arg(format!("dst {}", lab.router_wan(j)))
        .output()
        .expect("ss");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn direct(node: &TestNode, nick: &str) -> bool {
    let p = node.peer(nick);
    p["connected"] == true && p["relayed_via"].is_null()
}

fn relayed(node: &TestNode, nick: &str, relay_id: &str) -> bool {
    let p = node.peer(nick);
    p["connected"] == true && p["relayed_via"] == relay_id
}

fn reachability(node: &TestNode) -> String {
    node.status()["local"]["reachability"]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The LINK column of `peervisor status` for `nick`.
fn link_column(node: &TestNode, nick: &str) -> String {
    let text = common::stdout(&node.cli(&["status"]));
    // The LINK column's word: the LATENCY before it is "-" or "0.52 ms", one
    // token or two (a link up for less than a ping has none yet). An earlier
    // round's node of the same nick stays listed "down" until the overlay has
    // seen it go: the live one is wanted, as in `TestNode::peer`.
    let links: Vec<&str> = text
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(nick))
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| ["direct", "relay", "down"].contains(w))
        })
        .collect();
    let live = links.iter().find(|w| **w != "down");
    live.or(links.first()).unwrap_or(&"").to_string()
}

fn logs(nodes: &[&TestNode]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- {} ---\n{}", n.nick, n.log()))
        .collect()
}

/// Peer-a exposes an echo server of its home; peer-c consumes it. Returns the
/// consume port (on 127.0.0.1 in peer-c's home).
fn consume_echo(lab: &NatLab, a: &TestNode, c: &TestNode) -> u16 {
    let echo_port = in_netns(lab.home(0), || echo_server("127.0.0.1"));
    let target = format!("127.0.0.1:{echo_port}");
    let out = a.cli(&["expose", "echo", "--target", &target]);
    assert!(out.status.success(), "expose: {}", stderr(&out));
    let a_id = a.peer_id();
    assert!(
        eventually(Duration::from_secs(30), || c
            .providers("echo")
            .iter()
            .any(|p| p["peer_id"] == a_id.as_str())),
        "peer-c never saw peer-a's service:\n{}",
        logs(&[a, c])
    );
    c.consume("echo", &["--bind", "127.0.0.1"])
}

/// What a consumer sees on one path.
struct PathFigures {
    /// MB/s of an 8 MiB echo (every byte crosses the path both ways).
    echo_mb_s: f64,
    /// Median round trip of a 64-byte request, ms.
    rtt_p50_ms: f64,
    /// What the public segment carried on each path meanwhile.
    bytes: PathBytes,
}

/// The echo moves 8 MiB each way, so the path that carried it counted at least
/// this much; the other one carried only the overlay's background (pings,
/// gossip), far below it.
const ECHO_BYTES: u64 = 16 << 20;
const BACKGROUND_BYTES: u64 = 2 << 20;

/// Measures the consumption at 127.0.0.1:`port` in peer-c's home; checks every
/// byte that comes back.
fn measure(lab: &NatLab, port: u16) -> PathFigures {
    let before = lab.path_bytes();
    let mut figures = in_netns(lab.home(1), move || {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("consume listener");
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        conn.set_nodelay(true).unwrap();
        let mut rtts = Vec::new();
        let mut reply = [0u8; 64];
        for i in 0..200u32 {
            let request = [(i % 251) as u8; 64];
            let t = Instant::now();
            conn.write_all(&request).unwrap();
            conn.read_exact(&mut reply).expect("echo reply");
            rtts.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(reply, request, "echo corrupted");
        }
        let big: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut writer = conn.try_clone().unwrap();
        let payload = big.clone();
        let t = Instant::now();
        let sender = std::thread::spawn(move || writer.write_all(&payload));
        let mut got = vec![0u8; big.len()];
        conn.read_exact(&mut got).expect("8 MiB echo");
        let seconds = t.elapsed().as_secs_f64();
        sender.join().unwrap().unwrap();
        assert!(got == big, "8 MiB came back changed");
        PathFigures {
            echo_mb_s: big.len() as f64 / 1e6 / seconds,
            rtt_p50_ms: median(&mut rtts),
            bytes: before,
        }
    });
    figures.bytes = lab.path_bytes().since(before);
    figures
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[test]
fn peers_behind_nat_punch_a_direct_link_and_stay_relayed_behind_a_symmetric_nat() {
    let lab = NatLab::new([Nat::PortPreserving, Nat::PortPreserving]);
    let key = fresh_key();
    let relay = start_relay(&lab, &key);
    let relay_id = relay.peer_id();

    // The premise: no home can dial the other (the router drops what it did not ask
    // for), but both reach the public segment.
    assert!(!lab.can_connect(0, &lab.router_wan(1), 22));
    assert!(!lab.can_connect(0, &lab.home_ip(1), 22));
    assert!(lab.can_connect(0, &lab.public_ip(0), relay.port));

    let mut punch_seconds = Vec::new();
    let mut direct_figures = None;
    for round in 0..ROUNDS {
        let circuits_before = relay.log().matches("relaying ").count();
        let a = start_home(&lab, &key, &relay, 0);
        // From starting the second peer to a direct link, as `status` shows it.
        let up = Instant::now();
        let c = start_home(&lab, &key, &relay, 1);
        assert!(
            eventually(Duration::from_secs(90), || direct(&c, "peer-a")
                && direct(&a, "peer-c")),
            "round {round}: no direct link between peer-a and peer-c: {} / {}\n{}",
            c.peer("peer-a"),
            a.peer("peer-c"),
            logs(&[&relay, &a, &c])
        );
        punch_seconds.push(up.elapsed().as_secs_f64());
        if up.elapsed() > Duration::from_secs(10) {
            // Not a failure, but worth seeing why (e.g. a punch attempt timed out).
            eprintln!("round {round} was slow:\n{}", logs(&[&relay, &a, &c]));
        }
        // It went through the relay first, and the direct link is a punched one:
        // a TCP connection from one home to the other's router.
        let all = logs(&[&relay, &a, &c]);
        assert!(
            relay.log().matches("relaying ").count() > circuits_before,
            "the first link was not relayed:\n{all}"
        );
        assert!(all.contains("hole punched: direct connection to"), "{all}");
        assert_eq!(link_column(&c, "peer-a"), "direct");
        assert!(tcp_to_router(&lab, 0, 1) >= 1 && tcp_to_router(&lab, 1, 0) >= 1);
        if std::env::var_os("PEERVISOR_TEST_LOGS").is_some() {
            eprintln!("{all}");
        }

        if round == 0 {
            // AutoNAT: the relay learned it is public, the homes that they are not.
            assert_eq!(reachability(&relay), "public", "{}", relay.log());
            assert!(
                eventually(Duration::from_secs(60), || reachability(&a) == "private"
                    && reachability(&c) == "private"),
                "homes should learn they are behind NAT: {} / {}\n{}",
                reachability(&a),
                reachability(&c),
                logs(&[&a, &c])
            );
            let text = common::stdout(&a.cli(&["status"]));
            assert!(text.contains("reach    behind NAT"), "{text}");

            // A consumption over the punched link; the relay carries none of it.
            let port = consume_echo(&lab, &a, &c);
            let relayed_before = relay.log().matches("relaying ").count();
            direct_figures = Some(measure(&lab, port));
            assert!(direct(&c, "peer-a"), "{}", c.peer("peer-a"));
            assert_eq!(
                relay.log().matches("relaying ").count(),
                relayed_before,
                "no new circuit for the consumption"
            );
        }
        drop((a, c));
    }

    // A symmetric NAT in front of peer-a: a new port per destination, so the port
    // the relay saw is useless to peer-c. The link stays relayed and works.
    lab.set_nat(0, Nat::Symmetric);
    let (a, c) = start_relayed_pair(&lab, &key, &relay);
    assert!(
        eventually(Duration::from_secs(120), || {
            let l = a.log() + &c.log();
            l.contains("hole punching to") && l.contains("staying relayed")
        }),
        "DCUtR should have tried and failed:\n{}",
        logs(&[&a, &c])
    );
    assert!(relayed(&c, "peer-a", &relay_id), "{}", c.peer("peer-a"));
    assert_eq!(link_column(&c, "peer-a"), "relay");
    assert_eq!(tcp_to_router(&lab, 1, 0), 0, "no direct TCP connection");
    // Failed punches and dial-backs are NAT at work, not a key problem.
    for node in [&a, &c] {
        let errors = node.status()["dial_errors"].to_string();
        assert!(!errors.contains("network key"), "{}: {errors}", node.nick);
    }
    let port = consume_echo(&lab, &a, &c);
    let relayed_figures = measure(&lab, port);
    assert!(relayed(&c, "peer-a", &relay_id), "{}", c.peer("peer-a"));

    let direct_figures = direct_figures.expect("measured in round 0");
    let runs: Vec<String> = punch_seconds.iter().map(|s| format!("{s:.1}")).collect();
    eprintln!(
        "hole punching (debug build, this run):\n\
         second peer started -> direct link in `status`: {} s (median of {ROUNDS}: {:.1} s)\n\
         | path                                | 8 MiB echo | 64 B round trip p50 |\n\
         | direct (punched, port-preserving NAT) | {:>6.1} MB/s | {:>8.2} ms |\n\
         | relayed (symmetric NAT at peer-a)     | {:>6.1} MB/s | {:>8.2} ms |",
        runs.join(", "),
        median(&mut punch_seconds.clone()),
        direct_figures.echo_mb_s,
        direct_figures.rtt_p50_ms,
        relayed_figures.echo_mb_s,
        relayed_figures.rtt_p50_ms,
    );
    // Which path carried each echo, counted on the public segment: the punched
    // consumption went router to router and the relay saw none of it; the
    // relayed one went through the relay and nothing crossed between the
    // routers. (Their speeds, printed above, are a benchmark's business: a
    // loaded machine can bring them level.)
    let (direct, relayed) = (direct_figures.bytes, relayed_figures.bytes);
    assert!(
        direct.direct >= ECHO_BYTES && direct.relay < BACKGROUND_BYTES,
        "the punched consumption did not go router to router: {direct:?}"
    );
    assert!(
        relayed.relay >= ECHO_BYTES && relayed.direct < BACKGROUND_BYTES,
        "the relayed consumption did not go through the relay: {relayed:?}"
    );
}

/// A long echo through the consumption at 127.0.0.1:`port` in peer-c's home: a
/// writer sends a byte pattern (about 1.6 MB/s) until stopped, a reader checks
/// every byte that comes back.
struct LongEcho {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    writer: JoinHandle<std::io::Result<u64>>,
    reader: JoinHandle<Result<u64, String>>,
}

impl LongEcho {
    fn start(lab: &NatLab, port: u16) -> LongEcho {
        let conn = in_netns(lab.home(1), move || TcpStream::connect(("127.0.0.1", port)))
            .expect("consume listener");
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let mut out = conn.try_clone().unwrap();
        let stopped = stop.clone();
        let writer = std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stopped.load(Ordering::Relaxed) {
                let chunk: Vec<u8> = (sent..sent + 16384).map(|i| (i % 251) as u8).collect();
                out.write_all(&chunk)?;
                sent += chunk.len() as u64;
                std::thread::sleep(Duration::from_millis(10));
            }
            out.shutdown(Shutdown::Write)?;
            Ok(sent)
        });
        let counter = received.clone();
        let mut conn = conn;
        let reader = std::thread::spawn(move || {
            let mut got = 0u64;
            let mut buf = [0u8; 16384];
            loop {
                let n = conn
                    .read(&mut buf)
                    .map_err(|e| format!("after {got} bytes: {e}"))?;
                if n == 0 {
                    return Ok(got);
                }
                for (i, b) in buf[..n].iter().enumerate() {
                    if *b != ((got + i as u64) % 251) as u8 {
                        return Err(format!("byte {} came back changed", got + i as u64));
                    }
                }
                got += n as u64;
                counter.store(got, Ordering::Relaxed);
            }
        });
        LongEcho {
            stop,
            received,
            writer,
            reader,
        }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Stops writing; every byte sent must come back before the echo closes.
    fn finish(self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self
            .writer
            .join()
            .unwrap()
            .map_err(|e| format!("writing: {e}"))?;
        let got = self.reader.join().unwrap()?;
        if got != sent {
            return Err(format!("sent {sent} bytes, {got} came back"));
        }
        Ok(got)
    }
}

/// The risk of closing a relayed connection as soon as the punch succeeds: a
/// stream opened over the relay just before (a consumption here; a migration's
/// tunnel is the same kind of stream) would be cut. The punch is held back by
/// dropping packets between the routers until the consumer's connection is open
/// and echoing over the relay, and until DCUtR gave up; the punch tried again on
/// a new circuit then succeeds under it (repunch.rs). That stream must finish
/// intact, a stream opened after the punch must take the direct connection (it
/// outlives the relayed one), and the relayed connection closes once idle.
#[test]
fn a_consumption_opened_over_the_relay_survives_the_punch_and_new_streams_go_direct() {
    let lab = NatLab::new([Nat::PortPreserving, Nat::PortPreserving]);
    let key = fresh_key();
    let relay = start_relay(&lab, &key);
    let relay_id = relay.peer_id();
    lab.hold_punches(true);
    let (a, c) = start_relayed_pair(&lab, &key, &relay);
    let port = consume_echo(&lab, &a, &c);
    let first = LongEcho::start(&lab, port);
    assert!(
        eventually(Duration::from_secs(30), || first.received() > 256 * 1024),
        "no echo over the relay:\n{}",
        logs(&[&a, &c])
    );
    assert!(
        relayed(&c, "peer-a", &relay_id),
        "the link should still be relayed: {}",
        c.peer("peer-a")
    );

    // DCUtR's attempts all fail while the path is closed; a peer that saw
    // them fail opens a new circuit later, and that punch goes through.
    let both = || a.log() + &c.log();
    assert!(
        eventually(Duration::from_secs(120), || both()
            .contains("trying again in")),
        "DCUtR never gave up on the closed path:\n{}",
        both()
    );
    let released = Instant::now();
    lab.hold_punches(false);
    assert!(
        eventually(Duration::from_secs(400), || direct(&c, "peer-a")
            && direct(&a, "peer-c")),
        "no punch after the path opened: {}\n{}",
        c.peer("peer-a"),
        logs(&[&relay, &a, &c])
    );
    let punched_after = released.elapsed();
    let at_punch = first.received();
    assert!(
        both().contains("trying the hole punch to"),
        "the punch was not tried again on a new circuit:\n{}",
        both()
    );
    assert!(
        both().contains("hole punched: direct connection to"),
        "{}",
        both()
    );

    // Opened after the punch: they must take the direct connection (libp2p-stream
    // picks one of the peer's connections at random, so 4 streams would hardly
    // all miss the relayed one if it were still offered).
    let later: Vec<LongEcho> = (0..4).map(|_| LongEcho::start(&lab, port)).collect();
    // The first stream still rides the relayed connection: it stays open (it
    // breaks otherwise). The circuit the punch was tried again on carries no
    // stream and may close meanwhile.
    std::thread::sleep(Duration::from_secs(4));
    let closes = || both().matches("closing the relayed connection to").count();
    let closed_before = closes();
    let first_bytes = first.finish().unwrap_or_else(|e| {
        panic!(
            "the stream opened over the relay broke: {e}\n{}",
            logs(&[&relay, &a, &c])
        )
    });
    let done = Instant::now();
    assert!(
        eventually(Duration::from_secs(15), || closes() > closed_before),
        "the idle relayed connection was never closed:\n{}",
        both()
    );
    let closed_after = done.elapsed();
    assert!(tcp_to_router(&lab, 0, 1) >= 1 && tcp_to_router(&lab, 1, 0) >= 1);
    // Still flowing after the relayed connection closed: they were never on it.
    let before: Vec<u64> = later.iter().map(LongEcho::received).collect();
    assert!(
        eventually(Duration::from_secs(15), || later
            .iter()
            .zip(&before)
            .all(|(echo, b)| echo.received() > b + 64 * 1024)),
        "a stream opened after the punch stalled:\n{}",
        both()
    );
    let mut later_bytes = 0;
    for echo in later {
        later_bytes += echo
            .finish()
            .unwrap_or_else(|e| panic!("a stream opened after the punch broke: {e}\n{}", both()));
    }
    assert!(direct(&c, "peer-a"), "{}", c.peer("peer-a"));
    assert_eq!(link_column(&c, "peer-a"), "direct");
    eprintln!(
        "punch under a running stream: punched {:.1} s after the path opened; the stream \
         opened over the relay echoed {at_punch} bytes before and {first_bytes} in all, intact; \
         the relayed connection closed {:.1} s after it ended; 4 streams opened after the \
         punch echoed {later_bytes} bytes, intact",
        punched_after.as_secs_f64(),
        closed_after.as_secs_f64()
    );
}

fn boot_id(state: &str) -> String {
    state
        .lines()
        .find_map(|l| l.strip_prefix("boot_id="))
        .unwrap_or_default()
        .to_string()
}

/// A NAT lab for guests. The guests' namespace is created here, in this mount
/// namespace: one made by a node inside its home (`ip netns exec` gives it a
/// mount namespace of its own) would not be visible to the other node.
fn guest_lab(rig: &Rig) -> NatLab {
    let out = std::process::Command::new("ip")
        .args(["netns", "add", &rig.netns.name])
        .output()
        .unwrap();
    assert!(out.status.success(), "ip netns add: {}", stderr(&out));
    NatLab::new([Nat::PortPreserving, Nat::PortPreserving])
}

/// Peer-a or peer-c with a private libvirtd hosting guests in the rig's namespace.
fn start_guest_home(lab: &NatLab, rig: &Rig, relay: &TestNode, i: usize) -> TestNode {
    let extra = ["--image-dir", rig.image_dir.as_str()];
    let opts = NodeOptions {
        nick: ["peer-a", "peer-c"][i],
        key: &rig.key,
        bootstrap: None,
        hypervisor: None,
        guest_netns: &rig.netns.name,
        extra: &extra,
    };
    start_home_with(lab, opts, relay, i)
}

/// `vm` runs on peer-c, not on peer-a, and is the same guest (same boot).
fn assert_moved(rig: &Rig, vm: &str, ip: &str, before: &str, a: &TestNode, c: &TestNode) {
    assert_eq!(c.vm(vm).expect("VM on peer-c")["state"], "running");
    assert!(a.vm(vm).is_none(), "{vm} still on peer-a");
    let after = guest_state(&rig.netns, ip).expect("guest answers after migration");
    assert_eq!(boot_id(&after), boot_id(before), "same guest, not a reboot");
}

#[test]
fn vm_migrates_between_peers_behind_nat_over_the_punched_link() {
    let rig = Rig::new("punchmig");
    let lab = guest_lab(&rig);
    let relay = start_relay(&lab, &rig.key);
    let a = start_guest_home(&lab, &rig, &relay, 0);
    let c = start_guest_home(&lab, &rig, &relay, 1);
    assert!(
        eventually(Duration::from_secs(90), || direct(&a, "peer-c")
            && direct(&c, "peer-a")),
        "no punched link: {}\n{}",
        a.peer("peer-c"),
        logs(&[&relay, &a, &c])
    );
    c.allow_control(&a);
    let ip = boot(&a, &rig.netns, "web-p", &[]);
    let before = guest_state(&rig.netns, &ip).unwrap();
    let circuits = relay.log().matches("relaying ").count();

    let out = a.cli(&["migrate", "web-p", "--to", "peer-c", "--wait", "--json"]);
    assert!(
        out.status.success(),
        "migrate over the punched link: {}\n{}",
        stderr(&out),
        logs(&[&a, &c])
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("migration over the punched link: {report}");
    assert_moved(&rig, "web-p", &ip, &before, &a, &c);
    // The bytes took the direct path: still direct, no circuit opened meanwhile.
    assert!(direct(&a, "peer-c"), "{}", a.peer("peer-c"));
    assert_eq!(relay.log().matches("relaying ").count(), circuits);
}

/// A live migration started while the link is still relayed, with the punch
/// succeeding under it (held back as in the consumption test until the
/// destination accepted the migration): the tunnel stream rides the relayed
/// connection to the end, the VM arrives, and the relayed connection closes once
/// the migration's streams are done.
#[test]
fn vm_a_migration_started_over_the_relay_survives_the_punch() {
    let rig = Rig::new("punchlate");
    let lab = guest_lab(&rig);
    let relay = start_relay(&lab, &rig.key);
    let relay_id = relay.peer_id();
    lab.hold_punches(true);
    // The guest boots before peer-c starts: DCUtR gives up after 3 attempts of
    // up to 10 s each, and the punch is then tried again only after 150 s, so
    // it is not held back through a slow boot.
    let a = start_guest_home(&lab, &rig, &relay, 0);
    let ip = boot(&a, &rig.netns, "web-l", &[]);
    let before = guest_state(&rig.netns, &ip).unwrap();
    let c = start_guest_home(&lab, &rig, &relay, 1);
    assert!(
        eventually(Duration::from_secs(30), || relayed(&a, "peer-c", &relay_id)
            && relayed(&c, "peer-a", &relay_id)),
        "no relayed link: {}\n{}",
        a.peer("peer-c"),
        logs(&[&relay, &a, &c])
    );
    c.allow_control(&a);

    let (out, punched_after) = std::thread::scope(|s| {
        // Capped bandwidth: the transfer lasts seconds, the punch takes < 1 s.
        let migration = s.spawn(|| {
            a.cli(&[
                "migrate",
                "web-l",
                "--to",
                "peer-c",
                "--bandwidth",
                "10",
                "--wait",
                "--json",
            ])
        });
        assert!(
            eventually(Duration::from_secs(60), || c
                .log()
                .contains("accepted migration of VM 'web-l'")),
            "the destination never accepted:\n{}",
            logs(&[&a, &c])
        );
        let released = Instant::now();
        lab.hold_punches(false);
        // On a busy machine DCUtR may have given up before the release: the
        // punch is then tried again on a new circuit 150 s after.
        let punched = eventually(Duration::from_secs(300), || {
            direct(&a, "peer-c") && direct(&c, "peer-a")
        });
        let punched_after = released.elapsed();
        let out = migration.join().unwrap();
        assert!(punched, "no punch:\n{}", logs(&[&relay, &a, &c]));
        (out, punched_after)
    });
    let all = logs(&[&a, &c]);
    assert!(
        out.status.success(),
        "the migration started over the relay failed: {}\n{all}",
        stderr(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(all.contains("hole punched: direct connection to"), "{all}");
    assert_moved(&rig, "web-l", &ip, &before, &a, &c);
    // The punch came during the transfer, and the relayed connection outlived it.
    let migrated = a
        .log()
        .lines()
        .find(|l| l.contains("VM 'web-l' migrated to"))
        .map(str::to_string)
        .unwrap_or_default();
    // Log lines start with an RFC 3339 UTC timestamp: they sort as text.
    let punched_at = a
        .log()
        .lines()
        .find(|l| l.contains("hole punched: direct connection to"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    let migrated_at = migrated.split_whitespace().next().unwrap_or_default();
    assert!(
        !punched_at.is_empty() && punched_at.as_str() < migrated_at,
        "the punch ({punched_at}) should come during the migration (done {migrated_at})\n{all}"
    );
    assert!(
        eventually(Duration::from_secs(20), || (a.log() + &c.log())
            .contains("closing the relayed connection to")),
        "the relayed connection never closed:\n{}",
        logs(&[&a, &c])
    );
    assert!(direct(&a, "peer-c"), "{}", a.peer("peer-c"));
    eprintln!(
        "migration started over the relay, punched {:.1} s after the path opened: {report}\n\
         {migrated}\n{}",
        punched_after.as_secs_f64(),
        (a.log() + &c.log())
            .lines()
            .filter(|l| l.contains("hole punched") || l.contains("closing the relayed"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
