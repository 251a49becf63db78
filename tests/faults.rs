//! Fault tests with every peer in a network namespace of its own: the peers reach
//! each other only through a relay peer in this namespace (each island has a link
//! to this side and none to the others), so a killed peer is seen the way a
//! remote one would be, through the relay and its circuits.
//! (Nodes use libvirt's test driver; the partition test is in tests/nat.rs, the
//! libvirtd restart under a running node in tests/reconnect.rs.)

mod common;

use std::time::Duration;

use common::failover::{consume_loop_across_a_kill, kill_provider, whoami_server};
use common::{Islands, NodeOptions, TestNode, eventually, fresh_key, stderr};
use serde_json::Value;

struct Overlay {
    // Field order = drop order: nodes first, then the namespaces.
    relay: TestNode,
    a: TestNode,
    b: TestNode,
    c: TestNode,
    islands: Islands,
}

/// A relay here; peer-a, peer-b and peer-c each on an island of its own.
fn overlay() -> Overlay {
    let islands = Islands::new(&["fa", "fb", "fc"]);
    let key = fresh_key();
    let opts = |nick| NodeOptions {
        nick,
        key: &key,
        bootstrap: None,
        hypervisor: Some("test:///default"),
        guest_netns: "unused",
        extra: &[],
    };
    let outside: Vec<String> = (0..3).map(|i| islands.outside(i)).collect();
    let relay = TestNode::start_in(
        NodeOptions {
            extra: &["--relay-server"],
            ..opts("relay")
        },
        None,
        &outside.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    let island_node = |i: usize, nick| {
        TestNode::start_in(
            opts(nick),
            Some(islands.name(i)),
            &[&islands.inside(i)],
            &[format!("/ip4/{}/tcp/{}", islands.outside(i), relay.port)],
        )
    };
    let a = island_node(0, "peer-a");
    let b = island_node(1, "peer-b");
    let c = island_node(2, "peer-c");
    Overlay {
        relay,
        a,
        b,
        c,
        islands,
    }
}

fn providers_of(node: &TestNode, service: &str) -> Vec<String> {
    let mut nicks: Vec<String> = node
        .providers(service)
        .iter()
        .map(|p| p["peer_nick"].as_str().unwrap_or("").to_string())
        .collect();
    nicks.sort();
    nicks
}

/// Peer `i` exposes a whoami service that runs on this side of its island.
fn expose_whoami(o: &Overlay, node: &TestNode, i: usize, name: &'static str) {
    let ip = o.islands.outside(i);
    let port = whoami_server(&ip, name);
    let out = node.cli(&["expose", "whoami", "--target", &format!("{ip}:{port}")]);
    assert!(out.status.success(), "expose: {}", stderr(&out));
}

/// Exposes whoami on peer-a and peer-b, waits until peer-c knows both, consumes
/// it on peer-c's island address; returns that address and the port.
fn consume_on_c_from_two_providers(o: &Overlay) -> (String, u16) {
    expose_whoami(o, &o.a, 0, "peer-a");
    expose_whoami(o, &o.b, 1, "peer-b");
    let ready = eventually(Duration::from_secs(40), || {
        let connected = o.c.connected_peers();
        providers_of(&o.c, "whoami") == ["peer-a", "peer-b"]
            && connected.iter().any(|p| p == "peer-a")
            && connected.iter().any(|p| p == "peer-b")
    });
    assert!(ready, "peer-c never saw both providers:\n{}", o.c.log());
    let relayed: Vec<Value> = o.c.status()["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["relayed_via"].is_string())
        .map(|p| p["nick"].clone())
        .collect();
    println!("peer-c reaches through the relay: {relayed:?}");

    let c_addr = o.islands.inside(2);
    let port = o.c.consume("whoami", &["--bind", &c_addr]);
    (c_addr, port)
}

/// Issue 9's fault test, in namespaces: peer-a and peer-b provide one service;
/// a consume loop runs through peer-c; the node of the provider in use is
/// killed mid-loop (its sockets are closed by its kernel). The loop goes on
/// through the replica.
#[test]
fn a_consume_loop_across_namespaces_fails_over_to_a_replica_when_a_providers_node_is_killed() {
    let mut o = overlay();
    let (c_addr, port) = consume_on_c_from_two_providers(&o);
    let (a, b) = (&mut o.a, &mut o.b);
    let report = consume_loop_across_a_kill(&c_addr, port, Duration::from_secs(10), |last| {
        kill_provider(last, a, b)
    });
    println!("node killed: {report}");
    assert!(
        report.failed.len() <= 1,
        "requests failed after the kill: {:?}\n{}",
        report.failed,
        o.c.log()
    );
    assert!(
        report.only_survivor,
        "only the replica answers after the kill"
    );
    assert!(
        report.goes_on,
        "the loop goes on through the replica:\n{}",
        o.c.log()
    );
}

/// The consumer's stream-open timeout (`proxy::OPEN_TIMEOUT` in the node).
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// The same loop when the provider's host vanishes without a word (its link
/// goes down: no FIN, no reset, as at a power cut). The request that meets the
/// dead provider does not wait for its stream to time out: the replica is asked
/// too after a short hedge delay and answers; none fails, and the replica serves
/// on.
#[test]
fn a_consume_loop_across_namespaces_fails_over_when_a_providers_host_vanishes() {
    let o = overlay();
    let (c_addr, port) = consume_on_c_from_two_providers(&o);
    let survivor_island = std::cell::Cell::new(None);
    let report =
        consume_loop_across_a_kill(&c_addr, port, Duration::from_secs(20), |last| match last {
            "peer-a" => {
                o.islands.cut(0);
                survivor_island.set(Some(1));
                "peer-b"
            }
            "peer-b" => {
                o.islands.cut(1);
                survivor_island.set(Some(0));
                "peer-a"
            }
            other => panic!("unexpected provider {other:?}"),
        });
    println!("host vanished: {report}");
    assert!(
        report.failed.is_empty(),
        "requests failed after the host vanished: {:?}\n{}",
        report.failed,
        o.c.log()
    );
    assert!(
        report.only_survivor,
        "only the replica answers after the cut"
    );
    // Behaviour, not speed: no connection waited out the open timeout on the
    // dead provider (the gap would be 5 s and more). Half of it leaves a loaded
    // machine room: the hedge delay is 0.5 s.
    assert!(
        report.longest_gap < OPEN_TIMEOUT / 2,
        "a connection waited {:?} for the vanished provider:\n{}",
        report.longest_gap,
        o.c.log()
    );
    assert!(
        report.goes_on,
        "the loop goes on through the replica:\n{}",
        o.c.log()
    );
    let gone = eventually(Duration::from_secs(30), || {
        o.relay.connected_peers().len() == 2
    });
    assert!(gone, "the relay notices the vanished peer");

    // The replica's host vanishes too. Its records are the only ones left (the
    // first provider's expired), so there is no one to race: the connection waits
    // the whole open timeout, then is closed, and the consumption says why.
    o.islands
        .cut(survivor_island.get().expect("one island was cut"));
    // The proxy's open timeout runs from the moment it accepts the connection,
    // so the wait is measured from before the connect (measured from the write
    // after it, it came out 0.5 ms short of the timeout).
    let asked = std::time::Instant::now();
    let mut conn = std::net::TcpStream::connect((c_addr.as_str(), port)).unwrap();
    conn.set_read_timeout(Some(OPEN_TIMEOUT * 3)).unwrap();
    std::io::Write::write_all(&mut conn, b"ping\n").unwrap();
    let reply = common::failover::read_line(&mut conn);
    let waited = asked.elapsed();
    // Closed: an end of stream, or a reset (the line sent was never read).
    let closed = match &reply {
        Ok(line) => line.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "no provider left, yet {reply:?} after {waited:?}");
    assert!(
        waited >= OPEN_TIMEOUT,
        "closed after {waited:?}: the lone provider was not given the whole open timeout"
    );
    let error = o.c.status()["consumptions"][0]["last_error"].clone();
    assert!(
        error
            .as_str()
            .is_some_and(|e| e.contains("no answer within 5s") && e.contains("provider peer-")),
        "the consumption names the provider and why: {error}"
    );
    println!("with no replica left: closed after {waited:?}: {error}");
}
