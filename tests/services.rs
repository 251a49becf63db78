//! Services across the overlay without VMs: a legacy TCP service exposed by one
//! peer is found and consumed from another that has no direct configuration for it.
//! (Nodes use libvirt's test driver: these tests are about discovery and the proxy.)

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::failover::{consume_loop_across_a_kill, kill_provider, read_line, whoami_server};
use common::{TestNode, echo_server, eventually, fresh_key, node, stderr};
use serde_json::Value;

/// A line-echo server on loopback, for a bounded number of connections.
/// The nicks of the peers providing `service`, as `node` sees them.
fn providers_of(node: &TestNode, service: &str) -> Vec<String> {
    node.providers(service)
        .iter()
        .map(|p| p["peer_nick"].as_str().unwrap_or("").to_string())
        .collect()
}

fn round_trip(port: u16, message: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(message)?;
    let mut got = vec![0u8; message.len()];
    conn.read_exact(&mut got)?;
    Ok(got)
}

#[test]
fn legacy_service_exposed_on_one_peer_is_found_and_consumed_from_another() {
    let key = fresh_key();
    let a = node("peer-a", &key, None);
    let b = node("peer-b", &key, Some(a.port));
    let c = node("peer-c", &key, Some(b.port)); // knows only peer-b
    let echo_port = echo_server("127.0.0.1");

    let out = a.cli(&[
        "expose",
        "echo",
        "--target",
        &format!("127.0.0.1:{echo_port}"),
        "--type",
        "echo",
    ]);
    assert!(out.status.success(), "expose: {}", stderr(&out));
    assert!(
        eventually(Duration::from_secs(20), || providers_of(&c, "echo")
            == ["peer-a"]),
        "peer-c never saw the service:\n{}",
        c.log()
    );
    // The DHT path answers too.
    let out = c.cli(&["find", "echo", "--json"]);
    assert!(out.status.success(), "find: {}", stderr(&out));
    let found: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found[0]["providers"][0]["peer_nick"], "peer-a");
    assert_eq!(found[0]["kind"], "echo");

    let out = c.cli(&["consume", "echo", "--json"]);
    assert!(out.status.success(), "consume: {}", stderr(&out));
    let consumption: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listen = consumption["listen"].as_str().unwrap();
    assert!(
        listen.starts_with("127.0.0.1:"),
        "loopback by default: {listen}"
    );
    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();

    // A failed round trip shows both ends' logs: the consumer's and the provider's.
    let through = |message: &[u8]| {
        round_trip(port, message).unwrap_or_else(|e| {
            panic!(
                "round trip through peer-c's port {port}: {e}\n--- peer-c:\n{}\n--- peer-a:\n{}",
                c.log(),
                a.log()
            )
        })
    };
    assert_eq!(
        through(b"hello through the overlay\n"),
        b"hello through the overlay\n"
    );
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(through(&big), big, "large payload intact");

    // counters reach status
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = c.status();
            let k = &s["consumptions"][0];
            k["connections_total"] == 2 && k["bytes_from_service"].as_u64() >= Some(200_026)
        }),
        "{}",
        c.status()["consumptions"]
    );

    // withdrawn: gone from the other peers quickly
    let out = a.cli(&["unexpose", "echo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        eventually(Duration::from_secs(12), || providers_of(&c, "echo")
            .is_empty()),
        "still listed after unexpose"
    );
    drop(b);
}

#[test]
fn unknown_services_and_busy_ports_are_clear_errors() {
    let key = fresh_key();
    let a = node("peer-a", &key, None);
    let b = node("peer-b", &key, Some(a.port));
    let echo_port = echo_server("127.0.0.1");
    let out = a.cli(&[
        "expose",
        "web-store",
        "--target",
        &format!("127.0.0.1:{echo_port}"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(eventually(Duration::from_secs(20), || providers_of(
        &b,
        "web-store"
    ) == ["peer-a"]));

    let out = b.cli(&["consume", "web-stor"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("no service 'web-stor'") && err.contains("did you mean: web-store"),
        "{err}"
    );

    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let out = b.cli(&["consume", "web-store", "--local-port", &busy_port]);
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("in use"), "{err}");

    let out = a.cli(&["expose", "bad", "--target", "nowhere"]);
    assert!(
        !out.status.success() && stderr(&out).contains("HOST:PORT"),
        "{}",
        stderr(&out)
    );
}

/// Waits until `consumer` lists both providers of `service` and is directly
/// connected to both, so killing one leaves the other reachable.
fn wait_for_two_providers(consumer: &TestNode, service: &str) {
    let ready = eventually(Duration::from_secs(30), || {
        let mut providers = providers_of(consumer, service);
        providers.sort();
        let connected = consumer.connected_peers();
        providers == ["peer-a", "peer-b"]
            && connected.iter().any(|p| p == "peer-a")
            && connected.iter().any(|p| p == "peer-b")
    });
    assert!(
        ready,
        "peer-c never saw both providers:\n{}",
        consumer.log()
    );
}

fn expose(node: &TestNode, service: &str, port: u16) {
    let out = node.cli(&["expose", service, "--target", &format!("127.0.0.1:{port}")]);
    assert!(out.status.success(), "expose: {}", stderr(&out));
}

/// A service that names the provider it runs beside, then streams bytes until
/// the client goes away.
fn feed_server(provider: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let chunk = [b'x'; 16 * 1024];
                if stream.write_all(format!("{provider}\n").as_bytes()).is_ok() {
                    while stream.write_all(&chunk).is_ok() {}
                }
            });
        }
    });
    port
}

/// Acceptance (issue 5, bad input): the provider vanishes mid-stream. The
/// consumer's connection must end rather than hang, and the listener must go on
/// serving new connections from the other provider.
#[test]
fn a_provider_vanishing_mid_stream_ends_the_connection_and_the_listener_serves_on() {
    let key = fresh_key();
    let mut a = node("peer-a", &key, None);
    let mut b = node("peer-b", &key, Some(a.port));
    let c = node("peer-c", &key, Some(a.port));
    expose(&a, "feed", feed_server("peer-a"));
    expose(&b, "feed", feed_server("peer-b"));
    wait_for_two_providers(&c, "feed");
    let port = c.consume("feed", &[]);

    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let provider = read_line(&mut conn).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut streamed = 0;
    while streamed < 1 << 20 {
        streamed += conn.read(&mut buf).unwrap();
    }
    let survivor = kill_provider(&provider, &mut a, &mut b);

    // Bytes in flight may still arrive; then the connection ends (EOF or reset).
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let killed = Instant::now();
    loop {
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "the consumer's connection was still open 20 s after {provider} died"
        );
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    println!(
        "connection ended {:?} after its provider died",
        killed.elapsed()
    );

    // The same listener serves the next connection, from the provider left.
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    assert_eq!(read_line(&mut conn).unwrap(), survivor, "{}", c.log());
    let n = conn.read(&mut buf).unwrap();
    assert!(n > 0, "the survivor's feed streams");
    drop(conn);

    let broken = eventually(Duration::from_secs(5), || {
        c.status()["consumptions"][0]["errors"].as_u64() >= Some(1)
    });
    assert!(broken, "the broken stream is counted as an error");
    assert!(
        c.log().contains("mid-stream"),
        "the consumer's log names the broken stream:\n{}",
        c.log()
    );
}

/// Issue 9's fault test: two peers provide one service; a consume loop runs
/// through a third; one provider's node is killed mid-loop. The loop goes on
/// through the replica.
#[test]
fn a_consume_loop_fails_over_to_a_replica_when_a_providers_node_is_killed() {
    let key = fresh_key();
    let mut a = node("peer-a", &key, None);
    let mut b = node("peer-b", &key, Some(a.port));
    let c = node("peer-c", &key, Some(a.port));
    expose(&a, "whoami", whoami_server("127.0.0.1", "peer-a"));
    expose(&b, "whoami", whoami_server("127.0.0.1", "peer-b"));
    wait_for_two_providers(&c, "whoami");
    let port = c.consume("whoami", &[]);
    let report = consume_loop_across_a_kill("127.0.0.1", port, Duration::from_secs(8), |last| {
        kill_provider(last, &mut a, &mut b)
    });
    println!("{report}");
    // The one request in flight when the node died may fail; no other may.
    assert!(
        report.failed.len() <= 1,
        "requests failed after the kill: {:?}",
        report.failed
    );
    assert!(
        report.only_survivor,
        "only the replica answers after the kill"
    );
    assert!(report.goes_on, "the loop goes on through the replica");
}
