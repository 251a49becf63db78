//! Two real nodes on loopback: what a node does with a hostile peer's gossip.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// Log lines written while a test runs (this thread's tracing output).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn config(nick: &str, bootstrap: Vec<Multiaddr>) -> NodeConfig {
    NodeConfig {
        keypair: Keypair::generate_ed25519(),
        network_key: identity::NetworkKey::new([7; 32]),
        nick: nick.into(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap,
        mdns: false,
        relay: Default::default(),
    }
}

/// Acceptance (issue 5): malformed records from a peer are dropped and logged,
/// never trusted to crash the node. The honest node keeps hearing the same
/// peer's valid announcements after its garbage.
#[tokio::test(flavor = "current_thread")]
async fn a_malformed_announcement_is_dropped_and_logged_and_the_node_goes_on() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (honest, mut heard) = start(config("honest", Vec::new())).unwrap();
    let listen = loop {
        let addrs = honest.status().await.unwrap().listen_addrs;
        if let Some(addr) = addrs.first() {
            break addr.parse::<Multiaddr>().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (hostile, _events) = start(config("hostile", vec![listen])).unwrap();
    let hostile_id = hostile.local_peer_id();

    let hostile_record = Announcement {
        nick: "hostile".into(),
        services: vec![protocol::ServiceRecord {
            name: "web\u{1b}[2J".into(),
            kind: "http".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let garbage: [Vec<u8>; 3] = [
        b"{not json".to_vec(),
        vec![0xff; 300],
        hostile_record.encode(),
    ];
    let valid = Announcement {
        nick: "hostile".into(),
        vms: vec!["web-1".into()],
        ..Default::default()
    };
    // Garbage first, then a valid announcement on the same connection: once the
    // valid one is heard, the garbage before it has been handled.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let announcement = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no announcement within 30 s:\n{}",
            log.text()
        );
        for bytes in &garbage {
            hostile.publish_raw(bytes.clone()).await.unwrap();
        }
        hostile.announce(valid.clone()).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(500), heard.recv()).await {
            Ok(Some(Event::Announcement { peer, announcement })) => {
                assert_eq!(peer, hostile_id);
                break announcement;
            }
            Ok(Some(_)) | Err(_) => continue,
            Ok(None) => panic!("the honest node stopped:\n{}", log.text()),
        }
    };
    assert_eq!(
        announcement.vms,
        ["web-1"],
        "only the valid announcement is heard"
    );
    let text = log.text();
    let dropped = text.matches("dropped malformed announcement from").count();
    assert!(dropped >= 3, "each bad message is logged:\n{text}");
    assert!(
        text.contains("bad service name"),
        "the log says why:\n{text}"
    );
    // Still serving its operator.
    assert!(
        honest
            .status()
            .await
            .unwrap()
            .peers
            .iter()
            .any(|p| p.connected)
    );
}
