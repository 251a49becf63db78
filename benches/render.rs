//! Console frame rendering: one full frame of a big overlay (200 peers, 1000
//! VMs with history, 2000 services) must take <= 2 ms. Baselines from the same
//! run: the same frame with an empty snapshot, and the demo-sized overlay.
//! Between two timed frames a stats round with new figures for every VM is
//! applied (untimed), as the node pushes one each second: every frame differs
//! from the last, so ratatui's diff and the backend's writes are timed too (an
//! identical frame leaves the diff empty). The changed cells per frame are
//! printed; a missed target fails the bench (exit status 1).
//!
//! `cargo bench --bench render` prints a table.

// Under `cargo clippy --all-targets` the bench builds with cfg(test) but no test
// harness, so the console's test-only imports look unused here.
#![allow(dead_code, unused_imports)]

// The console is part of the binary crate; the bench compiles the same source.
#[path = "../src/api/mod.rs"]
mod api;
#[cfg(test)]
#[path = "../src/fuzzing.rs"]
mod fuzzing;
#[path = "../src/model.rs"]
mod model;
#[path = "../src/names.rs"]
mod names;
#[path = "../src/tui/mod.rs"]
mod tui;

use std::time::{Duration, Instant};

use model::*;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const TARGET_MS: f64 = 2.0;

fn big_status(peers: usize, vms: usize, services: usize) -> Status {
    let id = |i: usize| format!("12D3KooWPeer{i:0>40}");
    let local = LocalPeer {
        peer_id: id(0),
        nick: "peer-0".into(),
        listen_addrs: vec!["/ip4/127.0.0.1/tcp/7470".into()],
        hypervisor: "qemu+unix:///system".into(),
        accel: "tcg".into(),
        host: Some(HostStats {
            cpus: 2,
            cpu_pct: 12.0,
            mem_used_mib: 3000,
            mem_total_mib: 24000,
            load1: 0.5,
        }),
        lending: None,
        ..LocalPeer::default()
    };
    let peers: Vec<PeerView> = (1..peers)
        .map(|i| PeerView {
            peer_id: id(i),
            nick: format!("peer-{i}"),
            connected: i % 7 != 0,
            latency_ms: Some((i % 50) as f64 * 0.7),
            vms: Some((0..3).map(|v| format!("vm-{i}-{v}").into()).collect()),
            addrs: vec![format!("/ip4/10.0.{}.{}/tcp/7470", i / 250, i % 250)],
            load: Some(PeerLoad {
                cpu_pct: (i % 100) as f64,
                vm_cpu_pct: (i % 50) as f64,
                running_vms: 3,
                connections: (i % 9) as u32,
            }),
            links: (1..4).map(|k| id((i + k * 13) % peers)).collect(),
            ..PeerView::default()
        })
        .collect();
    let series = |k: f64| {
        (0..60)
            .map(|i| ((i as f64) * k) % 100.0)
            .collect::<Vec<_>>()
    };
    let vms: Vec<VmView> = (0..vms)
        .map(|i| VmView {
            name: format!("vm-{i:04}").into(),
            uuid: format!("uuid-{i}"),
            state: if i % 5 == 0 {
                VmState::Stopped
            } else {
                VmState::Running
            },
            vcpus: 1,
            memory_mib: 128,
            ip: Some(format!("10.77.{}.{}", i / 250, i % 250 + 2)),
            managed: true,
            adopted: false,
            service_up: Some(i % 3 != 0),
            stats: Some(VmStats {
                cpu_pct_host: Some((i % 50) as f64),
                cpu_pct_guest: Some((i % 100) as f64),
                mem_used_mib: Some(90),
                disk_read_bps: i as f64 * 100.0,
                disk_write_bps: i as f64 * 1000.0,
                disk_read_iops: 1.0,
                disk_write_iops: 2.0,
                net_rx_bps: i as f64 * 10.0,
                net_tx_bps: i as f64 * 20.0,
                span_s: 1.0,
            }),
            history: Some(VmHistory {
                interval_s: 1.0,
                cpu_pct_guest: series(3.0),
                disk_read_bps: series(1000.0),
                disk_write_bps: series(7000.0),
                net_rx_bps: series(300.0),
                net_tx_bps: series(900.0),
                span_s: vec![1.0; 60],
            }),
            services: vec![ServiceSpec {
                name: format!("svc-{i}").into(),
                kind: "http".into(),
                port: 80,
                ..Default::default()
            }],
        })
        .collect();
    let services: Vec<ServiceView> = (0..services)
        .map(|i| ServiceView {
            name: format!("svc-{i:04}").into(),
            kind: ["http", "kv", "echo"][i % 3].into(),
            tags: vec![],
            providers: (0..(1 + i % 3))
                .map(|p| ProviderView {
                    peer_id: id((i + p) % peers.len().max(1)),
                    peer_nick: format!("peer-{}", (i + p) % peers.len().max(1)),
                    vm: Some(format!("vm-{i}").into()),
                    latency_ms: Some(p as f64 * 3.0),
                    load: None,
                    local: p == 0 && i % 10 == 0,
                })
                .collect(),
        })
        .collect();
    let consumptions = (0..50)
        .map(|i| ConsumptionView {
            service: format!("svc-{:04}", i * 7).into(),
            listen: format!("127.0.0.1:{}", 20000 + i),
            connections_active: 1,
            ..ConsumptionView::default()
        })
        .collect();
    let operations = (0..20)
        .map(|i| OperationView {
            id: i,
            kind: OperationKind::MigrateOut,
            vm: format!("vm-{i:04}").into(),
            peer: format!("peer-{i}"),
            phase: if i < 2 {
                OperationPhase::Transferring
            } else {
                OperationPhase::Done
            },
            elapsed_s: i as f64,
            error: None,
            ..OperationView::default()
        })
        .collect();
    Status {
        local,
        peers,
        vms,
        operations,
        dial_errors: vec![],
        services,
        consumptions,
        ..Status::default()
    }
}

/// The same overlay seen from a peer without VMs: every VM on another peer,
/// announced by its host, with the figures and history its host gave.
fn remote_status(big: &Status) -> Status {
    let mut status = big.clone();
    let hosts: Vec<usize> = (0..status.peers.len())
        .filter(|&i| status.peers[i].connected)
        .collect();
    for p in &mut status.peers {
        p.vms = Some(Vec::new());
    }
    for (i, vm) in std::mem::take(&mut status.vms).into_iter().enumerate() {
        let host = &mut status.peers[hosts[i % hosts.len()]];
        host.vms.get_or_insert_with(Vec::new).push(vm.name.clone());
        status.remote_vms.push(RemoteVmView {
            host_id: host.peer_id.clone(),
            vm,
            age_s: 0,
        });
    }
    status
}

fn app(status: Option<Status>) -> tui::App {
    let opts = tui::ConsoleOptions {
        title: "peervisor".into(),
        attached_to: "bench".into(),
        ..Default::default()
    };
    let mut app = tui::App::new(
        opts,
        tui::Keymap::default(),
        tui::Theme::builtin("default").unwrap(),
    );
    app.set_status(status);
    app
}

/// Median and p95 of `f`, in milliseconds; `between` runs untimed before each
/// call.
fn measure_between(mut between: impl FnMut(), mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..20 {
        between();
        f();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 300 || (start.elapsed() < Duration::from_secs(2) && times.len() < 2000) {
        between();
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() * 95 / 100])
}

fn measure(f: impl FnMut()) -> (f64, f64) {
    measure_between(|| {}, f)
}

/// `n` stats rounds for the VMs of `status`, each with other figures (CPU,
/// disk and network rates shifted by the round), as the node pushes them.
fn rounds(status: &Status, n: usize) -> Vec<api::Update> {
    (0..n)
        .map(|k| {
            let vms = status
                .vms
                .iter()
                .enumerate()
                .map(|(i, vm)| {
                    let x = ((i + 17 * k) % 100) as f64;
                    api::VmSample {
                        name: vm.name.clone(),
                        stats: Some(VmStats {
                            cpu_pct_host: Some(x / 2.0),
                            cpu_pct_guest: Some(x),
                            mem_used_mib: Some(64 + (i + k) as u64 % 64),
                            disk_read_bps: x * 1000.0,
                            disk_write_bps: x * 7000.0,
                            disk_read_iops: x,
                            disk_write_iops: x / 2.0,
                            net_rx_bps: x * 300.0,
                            net_tx_bps: x * 900.0,
                            span_s: 1.0,
                        }),
                    }
                })
                .collect();
            api::Update::Delta(Box::new(api::Delta {
                samples: Some(api::Samples {
                    interval_s: 1.0,
                    keep: 120,
                    host: status.local.host.clone(),
                    vms,
                }),
                ..api::Delta::default()
            }))
        })
        .collect()
}

/// Frames of `app` as the console draws them while stats rounds arrive: a
/// round applied (untimed), then the frame drawn (timed). Returns the timing
/// and the mean number of cells that changed from one frame to the next.
fn measure_frames(
    term: &mut Terminal<TestBackend>,
    app: &mut tui::App,
    rounds: &[api::Update],
) -> ((f64, f64), f64) {
    let (mut next, mut frames, mut changed) = (0, 0u64, 0u64);
    let mut last = term.backend().buffer().clone();
    let app = std::cell::RefCell::new(app);
    let term = std::cell::RefCell::new(term);
    let timing = measure_between(
        || {
            if !rounds.is_empty() {
                app.borrow_mut().apply(rounds[next % rounds.len()].clone());
                next += 1;
            }
            // The previous frame's changes, counted outside the timing.
            let now = term.borrow().backend().buffer().clone();
            changed += last.diff(&now).len() as u64;
            frames += 1;
            last = now;
        },
        || {
            let app = app.borrow();
            term.borrow_mut().draw(|f| tui::draw(f, &app)).unwrap();
        },
    );
    (timing, changed as f64 / frames.max(1) as f64)
}

fn main() {
    println!(
        "console frame render (ratatui TestBackend, default theme, release build; target judged on the median)\n\
         between frames a stats round for every VM is applied (untimed), so each frame differs from the last\n"
    );
    println!(
        "{:<44} {:>9} {:>10} {:>10} {:>9}  target",
        "scenario", "size", "median ms", "p95 ms", "cells/fr"
    );
    let big = big_status(200, 1000, 2000);
    let demo = big_status(3, 1, 2);
    let (big_rounds, demo_rounds) = (rounds(&big, 8), rounds(&demo, 8));
    let mut missed = Vec::new();
    let mut row =
        |name: &str, w: u16, h: u16, ((med, p95), cells): ((f64, f64), f64), target: bool| {
            // Judged on the median: p95 on this shared 2-core machine mostly
            // measures other processes (see the baselines' p95).
            let verdict = if !target {
                "baseline".to_string()
            } else if med <= TARGET_MS {
                format!("<= {TARGET_MS} ms: ok")
            } else {
                missed.push(format!("{} at {w}x{h}: {med:.3} ms", name.trim()));
                format!("<= {TARGET_MS} ms: MISSED")
            };
            println!(
                "{name:<44} {:>9} {med:>10.3} {p95:>10.3} {cells:>9.0}  {verdict}",
                format!("{w}x{h}")
            );
        };
    for (w, h) in [(200u16, 60u16), (80, 24)] {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        let mut empty = app(Some(Status::default()));
        row(
            "empty snapshot (baseline)",
            w,
            h,
            measure_frames(&mut term, &mut empty, &[]),
            false,
        );
        let mut small = app(Some(demo.clone()));
        row(
            "demo-sized overlay: 3 peers, 1 VM (baseline)",
            w,
            h,
            measure_frames(&mut term, &mut small, &demo_rounds),
            false,
        );
        let mut full = app(Some(big.clone()));
        row(
            "200 peers, 1000 VMs, 2000 services",
            w,
            h,
            measure_frames(&mut term, &mut full, &big_rounds),
            true,
        );
        // Every pane zoomed in turn (the topology canvas, the charts).
        for pane in [
            tui::Pane::Topology,
            tui::Pane::Services,
            tui::Pane::Throughput,
        ] {
            full.focus = pane;
            full.zoom = true;
            row(
                &format!("  same, {} zoomed", pane.title()),
                w,
                h,
                measure_frames(&mut term, &mut full, &big_rounds),
                true,
            );
            full.zoom = false;
        }
    }
    // The overlay view of a peer whose 1000 VMs all run elsewhere: the VM
    // table zoomed, every visible row with its host's figures.
    let remote = remote_status(&big);
    for (w, h) in [(200u16, 60u16), (80, 24)] {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        let mut overlay = app(Some(remote.clone()));
        overlay.vms_all = true;
        overlay.focus = tui::Pane::Vms;
        overlay.zoom = true;
        row(
            "1000 remote VMs, overlay view, VMs zoomed",
            w,
            h,
            measure_frames(&mut term, &mut overlay, &[]),
            true,
        );
    }
    // Applying a snapshot (when a console subscribes, or falls behind)
    // re-sorts and re-selects every list.
    let mut a = app(Some(big.clone()));
    let (med, p95) = measure(|| a.set_status(Some(big.clone())));
    println!(
        "{:<44} {:>9} {med:>10.3} {p95:>10.3} {:>9}  on subscribing",
        "apply snapshot (big, incl. clone)", "-", "-"
    );
    // What the node pushes each second instead: one stats round for every VM.
    let round = &big_rounds[0];
    let (med, p95) = measure(|| a.apply(round.clone()));
    println!(
        "{:<44} {:>9} {med:>10.3} {p95:>10.3} {:>9}  once a second",
        "apply a stats round (big, incl. clone)", "-", "-"
    );
    if !missed.is_empty() {
        println!("\ntarget <= {TARGET_MS} ms MISSED: {}", missed.join("; "));
        std::process::exit(1);
    }
}
