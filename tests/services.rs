//! Services across the overlay without VMs: a legacy TCP service exposed by one
//! peer is found and consumed from another that has no direct configuration for it.
//! (Nodes use libvirt's test driver: these tests are about discovery and the proxy.)

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{TestNode, eventually, fresh_key, node, stderr};
use serde_json::Value;

/// A line-echo server on loopback, for a bounded number of connections.
fn echo_server(connections: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn providers_of(node: &TestNode, service: &str) -> Vec<String> {
    let out = node.cli(&["services", "--json"]);
    let services: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    services
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == service)
        .flat_map(|s| s["providers"].as_array().cloned().unwrap_or_default())
        .map(|p| p["peer_nick"].as_str().unwrap_or("").to_string())
        .collect()
}

fn round_trip(port: u16, message: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(message).unwrap();
    let mut got = vec![0u8; message.len()];
    conn.read_exact(&mut got).unwrap();
    got
}

#[test]
fn legacy_service_exposed_on_one_peer_is_found_and_consumed_from_another() {
    let key = fresh_key();
    let a = node("peer-a", &key, None);
    let b = node("peer-b", &key, Some(a.port));
    let c = node("peer-c", &key, Some(b.port)); // knows only peer-b
    let echo_port = echo_server(8);

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

    assert_eq!(
        round_trip(port, b"hello through the overlay\n"),
        b"hello through the overlay\n"
    );
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(round_trip(port, &big), big, "large payload intact");

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
    let echo_port = echo_server(1);
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
