//! Interoperability: a libp2p node of another implementation, js-libp2p (pinned
//! in tests/interop/package-lock.json, Node.js runtime included), joins a
//! peervisor overlay with the network key the documented way (docs/interop.md:
//! libp2p-noise with the prologue HMAC-SHA256(key, label)). With the key it
//! identifies, pings and queries the DHT of a real `peervisor node`; without it,
//! it gets nothing and the node logs "network key mismatch".
//!
//! tests/interop/join.mjs does the js-libp2p side and reports what it got as
//! JSON; the assertions are here. `scripts/setup.sh` installs it (`npm ci`).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{TestNode, eventually, fresh_key, node};

const JS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");

/// join.mjs bounds each of its steps (30 s); this bounds the whole run, inside
/// nextest's own limit (.config/nextest.toml) so the panic shows its stderr.
const JS_RUN_LIMIT: Duration = Duration::from_secs(100);

/// A type of service whose DHT key, `svc/type/KIND`, is 120 bytes starting
/// "sv": js-libp2p can only look providers up by CID, and such a key is the
/// bytes of a valid multihash (join.mjs, `providerCid`).
fn long_type(prefix: &str) -> String {
    let kind = format!("{prefix}{}", "x".repeat(111));
    kind[..111].to_string()
}

/// The overlay's key in the swarm.key format an operator hands out.
fn key_file(hex_key: &str) -> String {
    format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex_key}\n")
}

/// The Node.js runtime `npm ci` put next to join.mjs, or a failure saying how
/// to install it: this test is never skipped.
fn js_runtime() -> PathBuf {
    let dir = Path::new(JS_DIR);
    let node = dir.join("node_modules/.bin/node");
    let hint = "run scripts/setup.sh (it runs `npm ci` in tests/interop; needs npm, \
                which it installs from apt if missing)";
    assert!(
        node.exists(),
        "the interop test's js-libp2p node is not installed: no {}; {hint}",
        node.display()
    );
    let lock =
        std::fs::read(dir.join("package-lock.json")).expect("tests/interop/package-lock.json");
    let installed_from = std::fs::read_to_string(dir.join("node_modules/.installed-lock.sha256"))
        .unwrap_or_default();
    let lock_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&lock));
    assert_eq!(
        installed_from.trim(),
        lock_hash,
        "tests/interop/node_modules was not installed from the current package-lock.json; {hint}"
    );
    node
}

/// Runs join.mjs with `args`; its report.
fn run_js(args: &[&str]) -> Value {
    let mut child = Command::new(js_runtime())
        .arg("join.mjs")
        .args(args)
        .current_dir(JS_DIR)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the js-libp2p node");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + JS_RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "join.mjs still ran after {JS_RUN_LIMIT:?}:\n{}",
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(
        status.success(),
        "join.mjs failed ({status}):\n{stderr}{stdout}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("join.mjs report: {e}\n{stdout}"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

/// The answer `from` gave to a DHT query in `query` (a join.mjs report part).
fn answer_from<'a>(query: &'a Value, from: &str) -> &'a Value {
    query["answers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["from"] == from)
        .unwrap_or_else(|| panic!("{from} did not answer the DHT query: {query:#}"))
}

fn multiaddr(node: &TestNode) -> String {
    format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", node.port, node.peer_id())
}

#[test]
fn js_libp2p_with_the_network_key_identifies_pings_and_queries_the_dht() {
    js_runtime();
    let key = key_file(&fresh_key());
    let a = node("peer-a", &key, None);
    let b = node("peer-b", &key, Some(a.port));
    let (a_id, b_id) = (a.peer_id(), b.peer_id());
    // peer-a's DHT knows peer-b once identify gave it peer-b's listen address.
    assert!(
        eventually(Duration::from_secs(30), || a.peer("peer-b")["addrs"]
            .as_array()
            .is_some_and(|addrs| !addrs.is_empty())),
        "peer-b did not join peer-a:\n{}",
        a.log()
    );
    // peer-a provides its services' keys in the DHT (services/publish.rs).
    let kind = long_type("js-libp2p-finds-this-type-");
    let out = a.cli(&[
        "expose",
        "interop",
        "--type",
        &kind,
        "--target",
        "127.0.0.1:9",
    ]);
    assert!(out.status.success(), "expose: {}", common::stderr(&out));
    // Its keys are provided together: once peer-b finds the name through the
    // DHT, the type's record is in peer-a's store too.
    assert!(
        eventually(Duration::from_secs(60), || b
            .cli(&["find", "interop"])
            .status
            .success()),
        "peer-b never found 'interop' through the DHT:\n{}",
        a.log()
    );

    let provided = format!("svc/type/{kind}");
    let unprovided = format!("svc/type/{}", long_type("nobody-provides-this-type-"));
    let key_path = a.data_dir().join("network.key");
    let report = run_js(&[
        "--key",
        key_path.to_str().unwrap(),
        "--peer",
        &multiaddr(&a),
        "--closest-to",
        &b_id,
        "--providers-of",
        &provided,
        "--providers-of",
        &unprovided,
    ]);
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let versions = &report["implementation"];
    println!(
        "interop: js-libp2p {} (noise {}, yamux {}, kad-dht {}) on Node.js {}",
        text(&versions["libp2p"]),
        text(&versions["noise"]),
        text(&versions["yamux"]),
        text(&versions["kad-dht"]),
        text(&versions["node"])
    );

    // The handshake: noise (js-libp2p offers no TLS), with peer-a's identity.
    let connection = &report["connection"];
    assert_eq!(connection["remote_peer"], a_id.as_str(), "{report:#}");
    assert_eq!(connection["encryption"], "/noise", "{report:#}");
    println!(
        "interop: dialed peer-a: {} + {}, remote peer {a_id}",
        text(&connection["encryption"]),
        text(&connection["multiplexer"])
    );
    // peer-a saw it too, as a peer like any other.
    let js_peer = text(&report["self"]);
    assert!(
        a.log().contains(&format!("peer {js_peer} connected")),
        "peer-a did not log the JS node {js_peer}:\n{}",
        a.log()
    );

    // Identify: peer-a says who it is and what it speaks.
    let identify = &report["identify"];
    assert_eq!(identify["peer"], a_id.as_str(), "{report:#}");
    let agent = identify["agent_version"].as_str().unwrap_or_default();
    assert!(
        agent.starts_with("peervisor/") && agent.ends_with(" peer-a"),
        "{report:#}"
    );
    let protocols = strings(&identify["protocols"]);
    for wanted in ["/peervisor/kad/1", "/ipfs/ping/1.0.0", "/ipfs/id/1.0.0"] {
        assert!(
            protocols.iter().any(|p| p == wanted),
            "{wanted} not in {protocols:?}"
        );
    }
    println!(
        "interop: identify: agent {agent:?}, protocol version {}, {} protocols incl. /peervisor/kad/1 and /ipfs/ping/1.0.0",
        text(&identify["protocol_version"]),
        protocols.len()
    );
    assert_eq!(
        report["dht_routing_table"]["added"],
        a_id.as_str(),
        "{report:#}"
    );

    // Ping.
    let rtt = report["ping"]["rtt_ms"].as_f64();
    assert!(rtt.is_some_and(|ms| ms >= 0.0), "no ping: {report:#}");
    println!("interop: ping: rtt {} ms", rtt.unwrap());

    // FIND_NODE over /peervisor/kad/1: peer-a names peer-b, whom the JS node
    // was never told about, with an address.
    let closest = answer_from(&report["closest"], &a_id);
    let named_b = closest["closer"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"] == b_id.as_str());
    let b_port = format!("/tcp/{}", b.port);
    assert!(
        named_b.is_some_and(|p| strings(&p["addrs"]).iter().any(|a| a.contains(&b_port))),
        "peer-a's DHT answer does not name peer-b at its address: {closest:#}"
    );
    println!("interop: FIND_NODE {b_id}: peer-a answered with peer-b at {b_port}");

    // GET_PROVIDERS: peer-a names itself for the key it provides, nobody for
    // one nobody provides.
    let found = answer_from(&report["providers"][&provided], &a_id);
    assert_eq!(strings(&found["providers"]), [a_id.as_str()], "{found:#}");
    let none = answer_from(&report["providers"][&unprovided], &a_id);
    assert!(strings(&none["providers"]).is_empty(), "{none:#}");
    println!(
        "interop: GET_PROVIDERS svc/type/<{} chars>: peer-a answered provider peer-a; for an unprovided key: none",
        kind.len()
    );
}

#[test]
fn js_libp2p_without_the_network_key_gets_nothing() {
    js_runtime();
    let key = key_file(&fresh_key());
    let key_file_at = |text: String| {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    };
    let (right_key, wrong_key) = (
        key_file_at(key.clone()),
        key_file_at(key_file(&fresh_key())),
    );
    let cases = [
        ("another key", wrong_key.path(), None),
        (
            "the key but no prologue",
            right_key.path(),
            Some("--no-prologue"),
        ),
    ];
    for (case, key_path, flag) in cases {
        // One node per case: refusals are logged once per address per interval.
        let a = node("peer-a", &key, None);
        let (target, a_id) = (multiaddr(&a), a.peer_id());
        let mut args = vec!["--key", key_path.to_str().unwrap(), "--peer", &target];
        args.extend(["--closest-to", &a_id]);
        args.extend(flag);
        let report = run_js(&args);

        // Refused in the noise handshake itself, not for want of a listener.
        let refused = report["connection"]["error"].as_str().unwrap_or_default();
        assert!(
            refused.contains("EncryptionFailedError"),
            "{case}: {report:#}"
        );
        assert!(report["ping"]["rtt_ms"].is_null(), "{case}: {report:#}");
        assert!(
            strings(&report["identified_peers"]).is_empty(),
            "{case}: {report:#}"
        );
        assert_eq!(report["connections_at_end"], 0, "{case}: {report:#}");
        assert!(
            report["closest"].is_null(),
            "{case}: no DHT query without a connection"
        );
        assert!(
            eventually(Duration::from_secs(20), || a
                .log()
                .contains("network key mismatch")),
            "{case}: peer-a did not log the refusal:\n{}",
            a.log()
        );
        assert!(a.connected_peers().is_empty(), "{case}");
        println!(
            "interop: {case}: the JS dial failed ({refused}); no identify; ping failed; peer-a logged \"network key mismatch\""
        );
    }
}
