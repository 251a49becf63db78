//! `peervisor bench penalty --short` end to end: a real guest under the host's
//! accelerator, the same workloads natively and in the VM.

mod common;

use std::process::Command;

use common::{BIN, image_dir, stderr};
use serde_json::Value;

#[test]
fn vm_penalty_benchmark_measures_every_workload_both_ways() {
    let images = image_dir();
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "bench",
            "penalty",
            "--short",
            "--runs",
            "1",
            "--json",
            "--image-dir",
        ])
        .arg(&images)
        .output()
        .expect("run peervisor bench penalty");
    assert!(
        out.status.success(),
        "bench penalty failed: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("in the VM"),
        "progress is shown on stderr: {}",
        stderr(&out)
    );
    let view: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(view["state"], "done");
    assert!(
        view["accel"].as_str().unwrap().starts_with("tcg")
            || view["accel"].as_str().unwrap().starts_with("kvm")
    );
    let rows = view["rows"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["workload"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["cpu", "seq-write", "seq-read", "rand-read", "rand-write"]
    );
    for row in rows {
        for side in ["native", "vm"] {
            let samples = row[side].as_array().unwrap();
            assert_eq!(samples.len(), 1, "{side} {row}");
            assert!(
                samples[0].as_f64().unwrap() > 0.0,
                "positive throughput: {side} {row}"
            );
        }
    }
    assert!(rows.iter().any(|r| r["kind"] == "cpu") && rows.iter().any(|r| r["kind"] == "io"));

    // Saved to the data dir, and readable by the text table's reader.
    let saved = data.path().join("bench/penalty-latest.json");
    let saved: Value = serde_json::from_slice(&std::fs::read(saved).unwrap()).unwrap();
    assert_eq!(saved["rows"], view["rows"]);
    // Nothing left behind: no scratch disks, no benchmark namespace or guest.
    let work = std::fs::read_dir(data.path().join("bench/work"))
        .unwrap()
        .count();
    assert_eq!(work, 0, "scratch files removed");
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains("pvbench-"),
        "benchmark netns removed"
    );
    let qemu = Command::new("pgrep")
        .args(["-af", "guest=pv-bench-"])
        .output()
        .unwrap();
    assert!(
        qemu.stdout.is_empty(),
        "benchmark guest stopped: {}",
        String::from_utf8_lossy(&qemu.stdout)
    );
}

#[test]
fn penalty_rejects_zero_runs_with_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(data.path())
        .args(["bench", "penalty", "--runs", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--runs must be at least 1"),
        "{}",
        stderr(&out)
    );
}
