//! The simulation's idle traffic by protocol (`node::wiretap`'s counts): what
//! one peer and one connection send a second, and what the wire carries beyond
//! the streams' writes (yamux's own frames).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use super::pipes::Traffic;
use crate::node::wiretap::Sent;

/// One line per protocol (gossipsub's frame kinds indented under it), then the
/// streams' sum and the wire's counts: writes/s and bytes/s per peer and per
/// connection, streams opened per peer per second.
pub fn table(
    peers: usize,
    connections_per_peer: f64,
    sent: &BTreeMap<String, Sent>,
    wire: Traffic,
    window: Duration,
) -> String {
    let per_peer = |x: u64| x as f64 / window.as_secs_f64() / peers as f64;
    let per_conn = |x: u64| per_peer(x) / connections_per_peer.max(1.0);
    let mut out = format!(
        "sim {peers}: idle sends by protocol ({connections_per_peer:.1} connections per peer, \
         {:.0} s)\n  {:<34} {:>9} {:>9} {:>10} {:>9} {:>9}\n",
        window.as_secs_f64(),
        "protocol",
        "writes/s",
        "/conn",
        "B/s",
        "B/s/conn",
        "streams/s"
    );
    let mut line = |name: &str, s: Sent| {
        let _ = writeln!(
            out,
            "  {name:<34} {:>9.2} {:>9.3} {:>10.0} {:>9.1} {:>9.3}",
            per_peer(s.writes),
            per_conn(s.writes),
            per_peer(s.bytes),
            per_conn(s.bytes),
            per_peer(s.streams),
        );
    };
    let mut streams = Sent::default();
    for (name, s) in sent {
        if name.starts_with("gossipsub:") {
            line(&format!("  {name}"), *s);
        } else {
            streams.streams += s.streams;
            streams.writes += s.writes;
            streams.bytes += s.bytes;
            line(name, *s);
        }
    }
    line("all streams' writes", streams);
    let on_wire = Sent {
        streams: 0,
        writes: wire.sent_msgs,
        bytes: wire.sent_bytes,
    };
    line("wire (encrypted frames)", on_wire);
    out
}
