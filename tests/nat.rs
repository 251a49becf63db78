//! NAT and partitions, in network namespaces the tests create: peers on islands
//! with no route between them reach each other through a relay peer, and a peer
//! cut off from the overlay is shown as gone and comes back when healed.
//! (Nodes use libvirt's test driver: these tests are about the overlay.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::guests::{GUEST_BOOT, guest_state, guest_state_within};
use common::{
    Islands, NodeOptions, TestNetns, TestNode, echo_server, eventually, fresh_key, stderr,
};
use serde_json::Value;

/// A relay on this side of both islands, peer-a on island 0, peer-c on island 1.
struct Overlay {
    key: String,
    // Field order = drop order: nodes first, then the namespaces.
    relay: TestNode,
    a: TestNode,
    c: TestNode,
    islands: Islands,
}

fn overlay() -> Overlay {
    overlay_with(Some("test:///default"), "unused", &[])
}

/// The overlay with `hypervisor` (None: private libvirtds in `guest_netns`) and
/// `extra` arguments on peer-a and peer-c.
fn overlay_with(hypervisor: Option<&str>, guest_netns: &str, extra: &[&str]) -> Overlay {
    let islands = Islands::new(&["a", "c"]);
    let key = fresh_key();
    let opts = |nick| NodeOptions {
        nick,
        key: &key,
        bootstrap: None,
        hypervisor,
        guest_netns,
        extra,
    };
    let relay = TestNode::start_in(
        NodeOptions {
            hypervisor: Some("test:///default"),
            extra: &["--relay-server"],
            ..opts("relay")
        },
        None,
        &[&islands.outside(0), &islands.outside(1)],
        &[],
    );
    let join = |i: usize| vec![format!("/ip4/{}/tcp/{}", islands.outside(i), relay.port)];
    let a = TestNode::start_in(
        opts("peer-a"),
        Some(islands.name(0)),
        &[&islands.inside(0)],
        &join(0),
    );
    let c = TestNode::start_in(
        opts("peer-c"),
        Some(islands.name(1)),
        &[&islands.inside(1)],
        &join(1),
    );
    Overlay {
        key: key.clone(),
        relay,
        a,
        c,
        islands,
    }
}

fn connected(node: &TestNode, nick: &str) -> bool {
    node.peer(nick)["connected"] == true
}

/// The nicks of the peers providing `service`, as `node` sees them.
fn providers_of(node: &TestNode, service: &str) -> Vec<String> {
    node.providers(service)
        .iter()
        .map(|p| p["peer_nick"].as_str().unwrap_or("").to_string())
        .collect()
}

fn round_trip(addr: &str, port: u16, message: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut conn = TcpStream::connect((addr, port))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = conn.try_clone()?;
    let payload = message.to_vec();
    let sender = std::thread::spawn(move || writer.write_all(&payload));
    let mut got = vec![0u8; message.len()];
    conn.read_exact(&mut got)?;
    sender.join().expect("writer thread")?;
    Ok(got)
}

/// peer-a exposes an echo service (on this side of its island) and peer-c
/// consumes it on its island address; returns that consume port.
fn expose_on_a_and_consume_on_c(o: &Overlay) -> u16 {
    let echo_port = echo_server(&o.islands.outside(0));
    let target = format!("{}:{echo_port}", o.islands.outside(0));
    let out = o.a.cli(&["expose", "echo", "--target", &target]);
    assert!(out.status.success(), "expose: {}", stderr(&out));
    assert!(
        eventually(Duration::from_secs(30), || providers_of(&o.c, "echo")
            == ["peer-a"]),
        "peer-c never saw peer-a's service:\n{}",
        o.c.log()
    );
    o.c.consume("echo", &["--bind", &o.islands.inside(1)])
}

#[test]
fn peers_without_a_route_between_them_consume_a_service_through_a_relay() {
    let o = overlay();
    // The premise: the islands cannot reach each other, only the relay's side.
    assert!(!o.islands.can_connect(1, &o.islands.inside(0), o.a.port));
    assert!(
        o.islands
            .can_connect(1, &o.islands.outside(1), o.relay.port)
    );

    let relay_id = o.relay.peer_id();
    assert!(
        eventually(
            Duration::from_secs(40),
            || o.c.peer("peer-a")["relayed_via"] == relay_id.as_str() && connected(&o.c, "peer-a")
        ),
        "peer-c should reach peer-a through the relay: {}\nrelay log:\n{}\npeer-a log:\n{}\npeer-c log:\n{}",
        o.c.peer("peer-a"),
        o.relay.log(),
        o.a.log(),
        o.c.log()
    );
    assert!(
        eventually(
            Duration::from_secs(10),
            || o.a.peer("peer-c")["relayed_via"] == relay_id.as_str()
        ),
        "peer-a sees the same relayed link: {}",
        o.a.peer("peer-c")
    );
    // The relay itself is a direct link, and `status` says which is which.
    assert!(o.c.peer("relay")["relayed_via"].is_null());
    let text = common::stdout(&o.c.cli(&["status"]));
    let line = |nick: &str| {
        text.lines()
            .find(|l| l.starts_with(nick))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("peer-a").contains(" relay "), "{text}");
    assert!(line("relay").contains(" direct "), "{text}");

    let port = expose_on_a_and_consume_on_c(&o);
    let c_addr = o.islands.inside(1);
    assert_eq!(
        round_trip(&c_addr, port, b"hello through the relay\n").unwrap(),
        b"hello through the relay\n"
    );
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    assert!(
        round_trip(&c_addr, port, &big).unwrap() == big,
        "1 MB intact through the relay"
    );
    assert!(
        o.relay.log().contains("relaying peer-c -> peer-a")
            || o.relay.log().contains("relaying peer-a -> peer-c"),
        "the relay carried the circuit:\n{}",
        o.relay.log()
    );
    // Hole punching was tried and, with no route, failed: the link stays relayed.
    assert!(
        eventually(Duration::from_secs(30), || {
            let logs = o.a.log() + &o.c.log();
            logs.contains("hole punching to") && logs.contains("staying relayed")
        }),
        "DCUtR should have tried:\n{}\n{}",
        o.a.log(),
        o.c.log()
    );
    assert!(o.c.peer("peer-a")["relayed_via"] == relay_id.as_str());
}

/// Polls every check together until all have held once; returns, per check, the
/// seconds from `start` to the first time it held. Panics after `limit`.
fn times_until(
    start: Instant,
    limit: Duration,
    checks: &mut [(&str, &mut dyn FnMut() -> bool)],
) -> Vec<f64> {
    let mut seen: Vec<Option<f64>> = vec![None; checks.len()];
    while seen.iter().any(Option::is_none) {
        for (i, (_, check)) in checks.iter_mut().enumerate() {
            if seen[i].is_none() && check() {
                seen[i] = Some(start.elapsed().as_secs_f64());
            }
        }
        if start.elapsed() > limit {
            let missing: Vec<&str> = checks
                .iter()
                .zip(&seen)
                .filter(|(_, t)| t.is_none())
                .map(|((what, _), _)| *what)
                .collect();
            panic!("not within {limit:?}: {missing:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    seen.into_iter().flatten().collect()
}

#[test]
fn a_partitioned_peer_is_shown_gone_and_converges_after_the_partition_heals() {
    let o = overlay();
    let port = expose_on_a_and_consume_on_c(&o);
    let c_addr = o.islands.inside(1);
    assert!(eventually(Duration::from_secs(30), || connected(
        &o.c, "peer-a"
    )));
    assert_eq!(round_trip(&c_addr, port, b"before\n").unwrap(), b"before\n");

    // Partition: peer-a's island loses its only link. Nothing resets its TCP
    // connections; only liveness (pings) can tell.
    o.islands.cut(0);
    // Liveness: 8 s without an answered ping, checked every 3 s: 8 to 11 s. The
    // catalogue forgets a provider silent for 10 s. Limit with slack for a
    // loaded machine.
    let gone = times_until(
        Instant::now(),
        Duration::from_secs(25),
        &mut [
            ("relay shows peer-a gone", &mut || {
                !connected(&o.relay, "peer-a")
            }),
            ("peer-c shows peer-a gone", &mut || {
                !connected(&o.c, "peer-a")
            }),
            ("peer-a shows nobody", &mut || {
                o.a.connected_peers().is_empty()
            }),
            ("service withdrawn at peer-c", &mut || {
                providers_of(&o.c, "echo").is_empty()
            }),
        ],
    );
    assert!(
        o.c.cli(&["status", "--json"]).status.success(),
        "peer-c keeps answering"
    );

    o.islands.heal(0);
    let back = times_until(
        Instant::now(),
        Duration::from_secs(40),
        &mut [
            ("peer-c shows peer-a again", &mut || {
                connected(&o.c, "peer-a")
            }),
            ("service back at peer-c", &mut || {
                providers_of(&o.c, "echo") == ["peer-a"]
            }),
            ("consume through the relay again", &mut || {
                round_trip(&c_addr, port, b"after\n").is_ok_and(|got| got == b"after\n")
            }),
        ],
    );
    eprintln!(
        "partition: peer-a gone at the relay after {:.1} s, at peer-c after {:.1} s, peer-a \
         alone after {:.1} s, its service withdrawn at peer-c after {:.1} s; heal: peer-a back \
         at peer-c after {:.1} s, its service after {:.1} s, consume works after {:.1} s",
        gone[0], gone[1], gone[2], gone[3], back[0], back[1], back[2]
    );
}

fn boot_id(state: &str) -> String {
    state
        .lines()
        .find_map(|l| l.strip_prefix("boot_id="))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn vm_migrates_between_peers_that_reach_each_other_only_through_a_relay() {
    let image_dir = common::image_dir().to_string_lossy().into_owned();
    let guests = TestNetns::new("relaymig");
    // Created here, in this mount namespace: one made by a node inside its
    // island (`ip netns exec` gives it a mount namespace of its own) would not
    // be visible to the other node.
    let out = std::process::Command::new("ip")
        .args(["netns", "add", &guests.name])
        .output()
        .unwrap();
    assert!(out.status.success(), "ip netns add: {}", stderr(&out));
    let o = overlay_with(None, &guests.name, &["--image-dir", &image_dir]);
    assert!(!o.islands.can_connect(0, &o.islands.inside(1), o.c.port));
    let relay_id = o.relay.peer_id();
    assert!(
        eventually(
            Duration::from_secs(40),
            || o.a.peer("peer-c")["relayed_via"] == relay_id.as_str()
        ),
        "peer-a should reach peer-c through the relay: {}",
        o.a.peer("peer-c")
    );
    o.c.allow_control(&o.a);

    let out = o.a.cli(&["vm", "create", "web-r"]);
    assert!(out.status.success(), "vm create: {}", stderr(&out));
    let ip = o.a.vm("web-r").expect("web-r listed")["ip"]
        .as_str()
        .expect("guest ip")
        .to_string();
    assert!(
        guest_state_within(&guests, &ip, GUEST_BOOT).is_some(),
        "guest HTTP never answered at {ip}"
    );
    let before = guest_state(&guests, &ip).unwrap();

    let out =
        o.a.cli(&["migrate", "web-r", "--to", "peer-c", "--wait", "--json"]);
    assert!(
        out.status.success(),
        "migrate over the relay: {}\n{}\n{}",
        stderr(&out),
        o.a.log(),
        o.relay.log()
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("migration through the relay: {report}");
    assert_eq!(
        o.c.vm("web-r").expect("web-r on peer-c")["state"],
        "running"
    );
    assert!(o.a.vm("web-r").is_none(), "web-r still on peer-a");
    let after = guest_state(&guests, &ip).expect("guest answers after migration");
    assert_eq!(
        boot_id(&after),
        boot_id(&before),
        "same guest, not a reboot"
    );
    // Still relayed: the bytes went through the relay, not a direct path.
    assert_eq!(o.a.peer("peer-c")["relayed_via"], relay_id.as_str());

    // Baseline in the same run: the same guest onward from peer-c to peer-b,
    // which both reach directly (peer-b sits on the relay's side of both islands).
    let b = TestNode::start_in(
        NodeOptions {
            nick: "peer-b",
            key: &o.key,
            bootstrap: None,
            hypervisor: None,
            guest_netns: &guests.name,
            extra: &["--image-dir", &image_dir],
        },
        None,
        &[&o.islands.outside(0), &o.islands.outside(1)],
        &[format!(
            "/ip4/{}/tcp/{}",
            o.islands.outside(1),
            o.relay.port
        )],
    );
    assert!(
        eventually(Duration::from_secs(40), || connected(&o.c, "peer-b")
            && o.c.peer("peer-b")["relayed_via"].is_null()),
        "peer-c should reach peer-b directly: {}",
        o.c.peer("peer-b")
    );
    b.allow_control(&o.c);
    let out =
        o.c.cli(&["migrate", "web-r", "--to", "peer-b", "--wait", "--json"]);
    assert!(out.status.success(), "direct migrate: {}", stderr(&out));
    let direct: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("direct migration (baseline, same run): {direct}");
    let after = guest_state(&guests, &ip).expect("guest answers after migration");
    assert_eq!(boot_id(&after), boot_id(&before));
    drop(b);
}
