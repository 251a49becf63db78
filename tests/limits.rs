//! Limits a provider puts on consumers: per service (`expose --max-conns`,
//! `--allow`) and per peer (rate limits on streams and control requests). Every
//! refusal must reach the consumer with its reason. (Nodes on libvirt's test
//! driver: no VMs.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{NodeOptions, TestNetns, TestNode, echo_server, eventually, fresh_key, node, stderr};

fn expose(node: &TestNode, name: &str, target: u16, extra: &[&str]) {
    let target = format!("127.0.0.1:{target}");
    let mut args = vec!["expose", name, "--target", &target];
    args.extend_from_slice(extra);
    let out = node.cli(&args);
    assert!(out.status.success(), "expose {name}: {}", stderr(&out));
}

/// Consumes `service` on `node` once it is known there; the local port.
fn consume(node: &TestNode, service: &str) -> u16 {
    let mut port = None;
    let found = eventually(Duration::from_secs(20), || {
        port = node.try_consume(service, &[]).ok();
        port.is_some()
    });
    assert!(
        found,
        "{} never found '{service}':\n{}",
        node.nick,
        node.log()
    );
    port.unwrap()
}

fn connect(port: u16) -> TcpStream {
    let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn
}

fn exchange(conn: &mut TcpStream, message: &[u8]) -> Result<(), String> {
    conn.write_all(message).map_err(|e| e.to_string())?;
    let mut got = vec![0u8; message.len()];
    conn.read_exact(&mut got).map_err(|e| e.to_string())?;
    if got == message {
        Ok(())
    } else {
        Err("corrupted".into())
    }
}

fn round_trip(port: u16) -> Result<(), String> {
    exchange(&mut connect(port), b"ping\n")
}

/// The consumer's view of why its latest connection failed.
fn last_error(node: &TestNode, service: &str) -> String {
    node.status()["consumptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == service)
        .and_then(|c| c["last_error"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn per_service_limits_refuse_consumers_with_a_clear_error() {
    let key = fresh_key();
    let a = node("peer-a", &key, None);
    let b = node("peer-b", &key, Some(a.port));
    let echo = echo_server("127.0.0.1");
    expose(&a, "single", echo, &["--max-conns", "1"]);
    // Only peer-a itself may consume "private": peer-b is not listed.
    let only_a = a.peer_id();
    expose(&a, "private", echo, &["--allow", &only_a]);

    let single = consume(&b, "single");
    let mut held = connect(single);
    exchange(&mut held, b"first\n").expect("the first connection is served");
    let refused = round_trip(single);
    assert!(refused.is_err(), "a second connection got through");
    assert!(
        eventually(Duration::from_secs(5), || last_error(&b, "single")
            .contains("service 'single' is at its limit of 1 connection")),
        "consumer's last error: {:?}",
        last_error(&b, "single")
    );
    drop(held);
    assert!(
        eventually(Duration::from_secs(5), || round_trip(single).is_ok()),
        "the slot never came back"
    );

    let private = consume(&b, "private");
    assert!(round_trip(private).is_err(), "an unlisted peer got through");
    assert!(
        eventually(Duration::from_secs(5), || last_error(&b, "private")
            .contains(
                "service 'private' admits only the peers its operator listed"
            )),
        "consumer's last error: {:?}",
        last_error(&b, "private")
    );
    let out = b.cli(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("last error: provider peer-a: service"),
        "status shows the refusal:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The provider's log names the consumer.
    let b_id = b.peer_id();
    assert!(
        a.log()
            .contains(&format!("refused a stream for 'private' from {b_id}")),
        "{}",
        a.log()
    );

    let out = a.cli(&[
        "expose",
        "zero",
        "--target",
        "127.0.0.1:1",
        "--max-conns",
        "0",
    ]);
    assert!(
        !out.status.success() && stderr(&out).contains("--max-conns 0"),
        "{}",
        stderr(&out)
    );
    let out = a.cli(&[
        "expose",
        "who",
        "--target",
        "127.0.0.1:1",
        "--allow",
        "nobody",
    ]);
    assert!(
        !out.status.success() && stderr(&out).contains("--allow nobody"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn per_peer_rate_limits_refuse_with_a_reason_the_caller_sees() {
    let key = fresh_key();
    let a = TestNode::start(NodeOptions {
        nick: "peer-a",
        key: &key,
        bootstrap: None,
        hypervisor: Some("test:///default"),
        guest_netns: "unused",
        extra: &["--peer-stream-rate", "1", "--peer-control-rate", "1"],
    });
    let b = node("peer-b", &key, Some(a.port));
    expose(&a, "echo", echo_server("127.0.0.1"), &[]);
    let port = consume(&b, "echo");

    // A burst of twice the rate passes, then streams are refused.
    let results: Vec<bool> = (0..6).map(|_| round_trip(port).is_ok()).collect();
    assert!(results[0], "the first stream is within the burst");
    assert!(
        results.iter().any(|ok| !ok),
        "no stream refused: {results:?}"
    );
    assert!(
        eventually(Duration::from_secs(5), || last_error(&b, "echo").contains(
            "rate limit: too many service streams from you (at most 1/s)"
        )),
        "consumer's last error: {:?}",
        last_error(&b, "echo")
    );
    // After a pause the bucket has refilled.
    assert!(eventually(Duration::from_secs(5), || round_trip(port).is_ok()));

    // Control requests: `find` asks the provider for its services each time.
    for _ in 0..5 {
        let _ = b.cli(&["find", "echo"]);
    }
    assert!(
        eventually(Duration::from_secs(5), || b.log().contains(
            "refused to list its services: rate limit: too many control requests from you"
        )),
        "{}",
        b.log()
    );
    let b_id = b.peer_id();
    assert!(
        a.log()
            .contains(&format!("control request from {b_id} refused: rate limit")),
        "{}",
        a.log()
    );
}

#[test]
fn vm_service_limits_from_the_manifest_refuse_the_extra_consumer() {
    let netns = TestNetns::new("lim");
    let key = fresh_key();
    let image_dir = common::image_dir().to_string_lossy().into_owned();
    let a = TestNode::start(NodeOptions {
        nick: "peer-a",
        key: &key,
        bootstrap: None,
        hypervisor: None,
        guest_netns: &netns.name,
        extra: &["--image-dir", &image_dir],
    });
    let b = node("peer-b", &key, Some(a.port));
    let name = format!("lim-{}", std::process::id());
    let manifest = a.data_dir().join("vm.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"{name}\"\n[[services]]\nname = \"lim-echo\"\ntype = \"echo\"\nport = 7\nmax_conns = 1\n"
        ),
    )
    .unwrap();
    let out = a.cli(&["vm", "create", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "create: {}", stderr(&out));

    let port = consume(&b, "lim-echo");
    // The guest's echo service answers once it has booted.
    let mut held = None;
    assert!(
        eventually(Duration::from_secs(90), || {
            let mut conn = connect(port);
            let ok = exchange(&mut conn, b"first\n").is_ok();
            if ok {
                held = Some(conn);
            }
            ok
        }),
        "the guest's echo never answered:\n{}",
        a.log()
    );
    assert!(round_trip(port).is_err(), "a second connection got through");
    assert!(
        eventually(Duration::from_secs(5), || last_error(&b, "lim-echo")
            .contains("service 'lim-echo' is at its limit of 1 connection")),
        "consumer's last error: {:?}",
        last_error(&b, "lim-echo")
    );
    drop(held);
    assert!(
        eventually(Duration::from_secs(15), || round_trip(port).is_ok()),
        "the slot never came back"
    );
}
