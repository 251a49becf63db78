//! `--json` as a script uses it: every command that prints data takes it, and
//! prints one JSON document on stdout (JSON Lines for the commands that repeat:
//! `top`, `vm stats --watch`), progress and errors on stderr (docs/cli-json.md).

mod common;

use std::process::Command;

use common::{BIN, TestNode, echo_server, fresh_key, node, stderr, stdout};
use serde_json::Value;

/// The commands that print data, as typed after `peervisor`.
const PRINTING: &[&[&str]] = &[
    &["status"],
    &["vm", "list"],
    &["vm", "create"],
    &["vm", "start"],
    &["vm", "stop"],
    &["vm", "pause"],
    &["vm", "resume"],
    &["vm", "rm"],
    &["vm", "stats"],
    &["migrate"],
    &["replicate"],
    &["services"],
    &["find"],
    &["consume"],
    &["unconsume"],
    &["expose"],
    &["unexpose"],
    &["image", "build"],
    &["peers", "allow"],
    &["peers", "deny"],
    &["peers", "forget"],
    &["peers", "list"],
    &["invite"],
    &["join"],
    &["top"],
    &["doctor"],
    &["bench", "load"],
    &["bench", "stats"],
    &["bench", "migrate"],
    &["bench", "penalty"],
];

#[test]
fn every_command_that_prints_data_takes_json() {
    let mut missing = Vec::new();
    for words in PRINTING {
        let out = Command::new(BIN)
            .args(*words)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{words:?} --help: {}", stderr(&out));
        if !stdout(&out).contains("--json") {
            missing.push(words.join(" "));
        }
    }
    assert!(missing.is_empty(), "no --json on: {}", missing.join(", "));
}

fn json_of(node: &TestNode, args: &[&str]) -> Value {
    let out = node.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {}", stdout(&out)))
}

#[test]
fn actions_print_their_outcome_and_top_prints_json_lines() {
    let key = fresh_key();
    let node = node("json", &key, None);
    // libvirt's test driver has one running domain, "test" (foreign to peervisor).
    for (args, says) in [
        (&["vm", "pause", "test", "--force", "--json"][..], "paused"),
        (
            &["vm", "resume", "test", "--force", "--json"][..],
            "resumed",
        ),
    ] {
        let value = json_of(&node, args);
        let message = value["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{args:?}: {value}");
    }
    let port = echo_server("127.0.0.1");
    let target = format!("127.0.0.1:{port}");
    let value = json_of(&node, &["expose", "echo", "--target", &target, "--json"]);
    assert!(
        value["message"].as_str().unwrap().contains("echo"),
        "{value}"
    );
    let value = json_of(&node, &["unexpose", "echo", "--json"]);
    assert!(
        value["message"].as_str().unwrap().contains("echo"),
        "{value}"
    );
    let other = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    let value = json_of(&node, &["peers", "allow", other, "--json"]);
    assert!(
        value["message"].as_str().unwrap().contains(other),
        "{value}"
    );
    let value = json_of(&node, &["peers", "forget", other, "--json"]);
    assert!(
        value["message"].as_str().unwrap().contains(other),
        "{value}"
    );

    // top: one object per table, each a line of its own.
    let out = node.cli(&["top", "--json", "-n", "2", "-d", "0.2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in lines {
        let value: Value = serde_json::from_str(line).expect("each top line is JSON");
        let vms = value["vms"].as_array().expect("vms");
        assert!(vms.iter().any(|v| v["name"] == "test"), "{value}");
        assert!(value.get("host").is_some(), "{value}");
    }
}

#[test]
fn bench_stats_prints_ours_and_the_baseline_as_json() {
    let value = bench_json(&["stats", "--domains", "20", "--rounds", "3"]);
    assert_eq!(value["domains"], 20, "{value}");
    let methods = value["methods"].as_array().expect("methods");
    assert_eq!(methods.len(), 2, "ours and the baseline: {value}");
    for m in methods {
        assert!(
            m["median_ms"].as_f64().is_some_and(|ms| ms > 0.0),
            "{value}"
        );
    }
}

/// `peervisor bench ARGS --json` on a data dir of its own: the document it printed.
fn bench_json(args: &[&str]) -> Value {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(data.path())
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "bench {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench {args:?} --json printed no JSON ({e}): {}",
            stdout(&out)
        )
    })
}
