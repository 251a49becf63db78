//! The load acceptance test: 1,000 concurrent consumer connections and 10,000
//! requests through one consumer peer to one provider peer (real node processes
//! on loopback), every reply checked. Throughput and memory are in the report
//! `peervisor bench load` prints; here only correctness is asserted.

mod common;

use std::process::Command;

use common::{BIN, stderr};
use serde_json::Value;

#[test]
fn a_thousand_concurrent_consumer_connections_lose_and_corrupt_nothing() {
    let out = Command::new(BIN)
        .args([
            "bench",
            "load",
            "--connections",
            "1000",
            "--requests",
            "10000",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "bench load: {}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let overlay = &report["through_overlay"];
    assert_eq!(overlay["connections"], 1000);
    assert_eq!(overlay["requests"], 10000);
    assert_eq!(overlay["ok"], 10000, "{report:#}");
    assert_eq!(overlay["lost"], 0, "{report:#}");
    assert_eq!(overlay["corrupted"], 0, "{report:#}");
    assert_eq!(report["direct"]["ok"], 10000, "baseline: {report:#}");
    let memory = report["memory_kib"].as_array().unwrap();
    assert_eq!(memory.len(), 2, "both node processes measured");
    assert!(memory.iter().all(|m| m["peak_kib"].as_u64() > Some(0)));
}
