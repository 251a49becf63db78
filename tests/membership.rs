//! Attacks on the overlay's secure channel, made from outside against real node
//! processes (libvirt's test driver: no VMs). The attacker here never holds the
//! network key: it can only connect, listen, relay, record, replay and flip bytes.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::natlab::in_netns;
use common::{Islands, NodeOptions, TestNode, echo_server, eventually, fresh_key, node};

/// A man in the middle: accepts TCP connections and relays each to `target`,
/// recording what passes. It can flip one byte of what goes to the target.
struct Relay {
    port: u16,
    /// Bytes towards the target, per connection, in order.
    to_target: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Bytes back from the target, all connections.
    from_target: Arc<Mutex<Vec<u8>>>,
    /// When set, the next chunk towards the target has its first byte flipped.
    flip_next: Arc<AtomicBool>,
    flipped: Arc<AtomicU64>,
}

impl Relay {
    fn start(listen_ip: &str, target: (String, u16)) -> Relay {
        let listener = TcpListener::bind((listen_ip, 0)).unwrap();
        let relay = Relay {
            port: listener.local_addr().unwrap().port(),
            to_target: Default::default(),
            from_target: Default::default(),
            flip_next: Default::default(),
            flipped: Default::default(),
        };
        let (to_target, from_target) = (relay.to_target.clone(), relay.from_target.clone());
        let (flip_next, flipped) = (relay.flip_next.clone(), relay.flipped.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                let Ok(outbound) = TcpStream::connect((target.0.as_str(), target.1)) else {
                    continue;
                };
                let index = {
                    let mut all = to_target.lock().unwrap();
                    all.push(Vec::new());
                    all.len() - 1
                };
                let (to_target, from_target) = (to_target.clone(), from_target.clone());
                let (flip_next, flipped) = (flip_next.clone(), flipped.clone());
                let (mut in_r, mut out_w) =
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = in_r.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if flip_next.swap(false, Ordering::SeqCst) {
                            buf[n / 2] ^= 0x01;
                            flipped.fetch_add(1, Ordering::SeqCst);
                        }
                        to_target.lock().unwrap()[index].extend_from_slice(&buf[..n]);
                        if out_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = out_w.shutdown(Shutdown::Write);
                });
                let (mut out_r, mut in_w) = (outbound, inbound);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = out_r.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        from_target.lock().unwrap().extend_from_slice(&buf[..n]);
                        if in_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = in_w.shutdown(Shutdown::Write);
                });
            }
        });
        relay
    }

    fn carried(&self) -> usize {
        self.to_target
            .lock()
            .unwrap()
            .iter()
            .map(Vec::len)
            .sum::<usize>()
            + self.from_target.lock().unwrap().len()
    }

    /// Whether any 16-byte window of `secret` appears in what passed.
    fn saw_any_of(&self, secret: &[u8]) -> bool {
        let from = self.from_target.lock().unwrap().clone();
        let to: Vec<Vec<u8>> = self.to_target.lock().unwrap().clone();
        secret
            .windows(16)
            .any(|w| contains(&from, w) || to.iter().any(|bytes| contains(bytes, w)))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn count(text: &str, what: &str) -> usize {
    text.lines().filter(|l| l.contains(what)).count()
}

#[test]
fn a_node_relayed_to_itself_refuses_the_connection() {
    // The node's own bootstrap address is the attacker's, which relays the
    // node's dial back into the node: every message the node needs comes from
    // itself (a reflection). The handshake is the node's with itself, and libp2p
    // refuses a connection whose remote is the local peer.
    let key = fresh_key();
    let attacker = TcpListener::bind("127.0.0.1:0").unwrap();
    let attacker_port = attacker.local_addr().unwrap().port();
    let a = TestNode::start_in(
        NodeOptions {
            nick: "peer-a",
            key: &key,
            bootstrap: None,
            hypervisor: Some("test:///default"),
            guest_netns: "unused",
            extra: &[],
        },
        None,
        &["127.0.0.1"],
        &[format!("/ip4/127.0.0.1/tcp/{attacker_port}")],
    );
    drop(attacker);
    // The attacker's port is free again: listen there and send every
    // connection the node makes straight back into the node.
    let listener =
        TcpListener::bind(("127.0.0.1", attacker_port)).expect("the attacker's port is free again");
    let node_port = a.port;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            if let Ok(back) = TcpStream::connect(("127.0.0.1", node_port)) {
                pipe(conn, back);
            }
        }
    });
    assert!(
        eventually(Duration::from_secs(30), || {
            let log = a.log().to_lowercase();
            log.contains("local peer id")
        }),
        "the node should refuse a connection to itself:\n{}",
        a.log()
    );
    assert!(a.connected_peers().is_empty(), "{:?}", a.status()["peers"]);
    // It keeps serving.
    assert!(a.cli(&["status"]).status.success());
}

/// Copies both ways between two sockets on two threads.
fn pipe(a: TcpStream, b: TcpStream) {
    let (mut a_r, mut b_w) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a_r, &mut b_w);
        let _ = b_w.shutdown(Shutdown::Write);
    });
    let (mut b_r, mut a_w) = (b, a);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut b_r, &mut a_w);
        let _ = a_w.shutdown(Shutdown::Write);
    });
}

#[test]
fn a_man_in_the_middle_between_two_members_learns_nothing_and_cannot_inject() {
    // Two members on islands with no route between them; the only path is
    // the attacker, who relays TCP between them and reads what passes.
    let islands = Islands::new(&["mitm-a", "mitm-b"]);
    let key = fresh_key();
    let opts = |nick| NodeOptions {
        nick,
        key: &key,
        bootstrap: None,
        hypervisor: Some("test:///default"),
        guest_netns: "unused",
        extra: &[],
    };
    let a = TestNode::start_in(
        opts("peer-a"),
        Some(islands.name(0)),
        &[&islands.inside(0)],
        &[],
    );
    let mitm = Relay::start(&islands.outside(1), (islands.inside(0), a.port));
    let b = TestNode::start_in(
        opts("peer-b"),
        Some(islands.name(1)),
        &[&islands.inside(1)],
        &[format!("/ip4/{}/tcp/{}", islands.outside(1), mitm.port)],
    );
    assert!(
        eventually(Duration::from_secs(30), || b.connected_peers()
            == ["peer-a"]),
        "the members should connect through the relaying attacker:\n{}",
        b.log()
    );
    // A service on A's side, consumed from B's: its bytes cross the attacker.
    let echo = echo_server(&islands.outside(0));
    let out = a.cli(&[
        "expose",
        "echo",
        "--target",
        &format!("{}:{echo}", islands.outside(0)),
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let mut port = None;
    assert!(eventually(Duration::from_secs(30), || {
        port = b.try_consume("echo", &[]).ok();
        port.is_some()
    }));
    let port = port.unwrap();
    let b_netns = islands.name(1).to_string();
    let connect = move || in_netns(&b_netns, move || TcpStream::connect(("127.0.0.1", port)));

    let secret: Vec<u8> = (0..256).map(|_| rand::random::<u8>()).collect();
    let mut conn = connect().expect("consume listener");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(&secret).unwrap();
    let mut echoed = vec![0u8; secret.len()];
    conn.read_exact(&mut echoed)
        .expect("echo through the overlay");
    assert_eq!(echoed, secret);
    assert!(
        mitm.carried() > 2 * secret.len(),
        "the traffic crossed the attacker"
    );
    assert!(
        !mitm.saw_any_of(&secret),
        "the attacker must see ciphertext only"
    );

    // Flip one bit of what goes to A: the channel must fail, never deliver
    // altered bytes.
    let flipped_before = mitm.flipped.load(Ordering::SeqCst);
    mitm.flip_next.store(true, Ordering::SeqCst);
    let second: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
    let _ = conn.write_all(&second);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    while got.len() < second.len() && started.elapsed() < Duration::from_secs(30) {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        mitm.flipped.load(Ordering::SeqCst) > flipped_before,
        "the attacker did alter a byte"
    );
    assert!(
        second.starts_with(&got),
        "altered bytes were delivered ({} bytes back)",
        got.len()
    );
    assert!(
        got.len() < second.len(),
        "the altered connection must break"
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            let log = a.log();
            log.contains("decrypt")
                || log.contains("Decrypt")
                || log.contains("bad record")
                || log.contains("disconnected")
        }),
        "peer-a should drop the tampered connection:\n{}",
        a.log()
    );
}

#[test]
fn a_recorded_handshake_replayed_to_a_member_is_refused() {
    let key = fresh_key();
    let a = node("peer-a", &key, None);
    let recorder = Relay::start("127.0.0.1", ("127.0.0.1".into(), a.port));
    let b = node("peer-b", &key, Some(recorder.port));
    assert!(
        eventually(Duration::from_secs(30), || a.connected_peers()
            == ["peer-b"]),
        "{}",
        a.log()
    );
    // What peer-b sent on its first connection, handshake included.
    let recorded = recorder.to_target.lock().unwrap()[0].clone();
    assert!(recorded.len() > 200, "a handshake was recorded");
    let before = count(&a.log(), "cannot connect to incoming connection");

    let mut replay = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    let replay_port = replay.local_addr().unwrap().port();
    replay
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = replay.write_all(&recorded);
    let mut sink = Vec::new();
    let _ = replay.read_to_end(&mut sink);
    assert!(
        eventually(Duration::from_secs(30), || {
            count(&a.log(), "cannot connect to incoming connection") > before
        }),
        "peer-a should refuse the replay:\n{}",
        a.log()
    );
    let line = a
        .log()
        .lines()
        .rfind(|l| l.contains("cannot connect to incoming connection"))
        .unwrap()
        .to_string();
    assert!(line.contains(&format!("/tcp/{replay_port}")), "{line}");
    assert_eq!(a.connected_peers(), ["peer-b"]);
    assert_eq!(a.peer("peer-b")["connected"], true, "the real peer-b stays");
    drop(b);
}

#[test]
fn a_stranger_is_refused_on_both_sides_and_logged_once_per_address() {
    let a = node("peer-a", &fresh_key(), None);
    let stranger = node("stranger", &fresh_key(), Some(a.port));
    // The stranger redials every 3 s; peer-a logs its address once per 10 s
    // and counts the rest.
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(60), || a
            .log()
            .contains("more from there")),
        "peer-a should count the repeats:\n{}",
        a.log()
    );
    let elapsed = started.elapsed().as_secs();
    let lines = count(&a.log(), "network key mismatch");
    assert!(lines >= 1);
    assert!(
        lines as u64 <= elapsed / 10 + 2,
        "{lines} lines in {elapsed} s:\n{}",
        a.log()
    );
    let errors = stranger.status()["dial_errors"].to_string();
    assert!(errors.contains("network key mismatch"), "{errors}");
    assert!(a.connected_peers().is_empty() && stranger.connected_peers().is_empty());
}

#[test]
fn connections_stalled_in_their_handshake_are_dropped_and_the_node_keeps_serving() {
    let key = fresh_key();
    let a = node("peer-a", &key, None);
    let b = node("peer-b", &key, Some(a.port));
    assert!(eventually(Duration::from_secs(30), || a.connected_peers()
        == ["peer-b"]));
    // Thirty connections that never finish a handshake: some send nothing,
    // some stop in the middle of protocol negotiation.
    let stalled: Vec<TcpStream> = (0..30)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
            if i % 2 == 0 {
                s.write_all(b"\x13/multistream/1.0.0\n").unwrap();
            }
            s
        })
        .collect();
    // Meanwhile the node answers its operator and keeps its peer.
    assert!(a.cli(&["status"]).status.success());
    assert_eq!(a.connected_peers(), ["peer-b"]);
    // Each is closed by the node once its handshake time is up.
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut buf = [0u8; 1024];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break true,
                Ok(_) => continue,
            }
        };
        assert!(closed);
    }
    assert_eq!(a.connected_peers(), ["peer-b"]);
    drop(b);
}
