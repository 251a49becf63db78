//! Fixtures shared by the console's tests.

use super::ConsoleOptions;
use super::app::App;
use super::keymap::Keymap;
use super::theme::Theme;
use crate::model::{
    ConsumptionView, HostStats, JobSourceView, JobView, LocalPeer, OperationKind, OperationPhase,
    OperationView, PeerLoad, PeerView, PenaltyRow, PenaltyView, ProviderView, ServiceSpec,
    ServiceView, Status, VmHistory, VmState, VmStats, VmView, WorkloadKind,
};

pub const PEER_B: &str = "12D3KooWPeerBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
pub const PEER_C: &str = "12D3KooWPeerCccccccccccccccccccccccccccccccccccccc";

/// `sample_status` plus everything the other engineers' fields carry: stats and
/// history, services with providers, consumptions, loads and links, host stats.
pub fn rich_status() -> Status {
    let mut s = sample_status();
    s.local.host = Some(HostStats {
        cpus: 2,
        cpu_pct: 23.0,
        mem_used_mib: 3100,
        mem_total_mib: 24000,
        load1: 0.62,
    });
    for p in &mut s.peers {
        if p.nick == "peer-b" {
            p.load = Some(PeerLoad {
                cpu_pct: 41.0,
                vm_cpu_pct: 30.0,
                running_vms: 1,
                connections: 3,
            });
            p.links = vec![PEER_C.into()];
            p.addrs = vec!["/ip4/127.0.0.1/tcp/7471".into()];
        }
    }
    let ramp = |k: f64| {
        (0..30)
            .map(|i| ((i as f64 * 7.0) % 97.0) * k)
            .collect::<Vec<_>>()
    };
    let web = &mut s.vms[0];
    web.stats = Some(VmStats {
        cpu_pct_host: Some(6.5),
        cpu_pct_guest: Some(13.0),
        mem_used_mib: Some(87),
        disk_read_bps: 12_000.0,
        disk_write_bps: 3_400_000.0,
        disk_read_iops: 3.0,
        disk_write_iops: 40.0,
        net_rx_bps: 9_100.0,
        net_tx_bps: 420_000.0,
        span_s: 1.0,
    });
    web.history = Some(VmHistory {
        interval_s: 1.0,
        cpu_pct_guest: ramp(1.0),
        disk_read_bps: ramp(120.0),
        disk_write_bps: ramp(35_000.0),
        net_rx_bps: ramp(95.0),
        net_tx_bps: ramp(4_300.0),
        span_s: vec![1.0; 30],
    });
    web.services = vec![ServiceSpec {
        name: "web".into(),
        kind: "http".into(),
        port: 80,
        ..Default::default()
    }];
    let provider =
        |peer_id: &str, nick: &str, vm: Option<&str>, ms: Option<f64>, local| ProviderView {
            peer_id: peer_id.into(),
            peer_nick: nick.into(),
            vm: vm.map(Into::into),
            latency_ms: ms,
            load: Some(PeerLoad {
                cpu_pct: 41.0,
                vm_cpu_pct: 30.0,
                running_vms: 1,
                connections: 3,
            }),
            local,
        };
    s.services = vec![
        ServiceView {
            name: "web".into(),
            kind: "http".into(),
            tags: vec![],
            providers: vec![
                provider(PEER_B, "peer-b", Some("web-2"), Some(12.3), false),
                provider(&s.local.peer_id, "node-a", Some("web-1"), None, true),
            ],
        },
        ServiceView {
            name: "cache".into(),
            kind: "kv".into(),
            tags: vec![],
            providers: vec![provider(
                PEER_B,
                "peer-b",
                Some("cache-3"),
                Some(12.3),
                false,
            )],
        },
        ServiceView {
            name: "legacy-db".into(),
            kind: "postgres".into(),
            tags: vec![],
            providers: vec![provider(PEER_C, "peer-c", None, Some(0.42), false)],
        },
    ];
    s.consumptions = vec![ConsumptionView {
        service: "cache".into(),
        listen: "127.0.0.1:6380".into(),
        connections_total: 5,
        connections_active: 2,
        bytes_to_service: 2048,
        bytes_from_service: 3_500_000,
        errors: 0,
        last_provider: Some("peer-b".into()),
        last_error: None,
    }];
    s.operations.push(OperationView {
        id: 2,
        kind: OperationKind::MigrateOut,
        vm: "web-3".into(),
        peer: "peer-c".into(),
        phase: OperationPhase::Transferring,
        elapsed_s: 1.5,
        error: None,
        progress: Some(0.4),
        transferred_bytes: Some(30 << 20),
        downtime_ms: Some(40),
        ..OperationView::default()
    });
    s.operations.push(OperationView {
        id: 3,
        kind: OperationKind::MigrateOut,
        vm: "db-2".into(),
        peer: "peer-b".into(),
        phase: OperationPhase::Failed,
        elapsed_s: 0.3,
        error: Some("destination refuses migrations".into()),
        ..OperationView::default()
    });
    s.jobs = sample_jobs();
    s.job_sources = vec![
        JobSourceView {
            kind: "yarn".into(),
            url: "http://10.42.0.11:8088".into(),
            ok: true,
            message: "2 jobs".into(),
        },
        JobSourceView {
            kind: "spark".into(),
            url: "http://10.42.0.12:18080".into(),
            ok: false,
            message: "connection refused".into(),
        },
    ];
    s.penalty = Some(sample_penalty());
    s
}

/// A running TeraSort (I/O) on web-1 with throughput history, and a finished pi (CPU).
pub fn sample_jobs() -> Vec<JobView> {
    vec![
        JobView {
            source: "yarn".into(),
            id: "job_1764100000000_0002".into(),
            name: "TeraSort".into(),
            user: "hadoop".into(),
            state: "RUNNING".into(),
            benchmark: Some("TeraSort".into()),
            kind: Some(WorkloadKind::Io),
            progress_pct: 45.0,
            maps_completed: 12,
            maps_total: 16,
            reduces_completed: 1,
            reduces_total: 4,
            read_bps: Some(42_000_000.0),
            write_bps: Some(8_300_000.0),
            cpu_ms_per_s: Some(1450.0),
            elapsed_s: 95.0,
            hosts: vec!["10.42.0.11".into()],
            vms: vec!["web-1".into()],
            history_bps: (0..20).map(|i| (i % 7) as f64 * 9_000_000.0).collect(),
            ..JobView::default()
        },
        JobView {
            source: "yarn".into(),
            id: "job_1764100000000_0001".into(),
            name: "QuasiMonteCarlo".into(),
            user: "hadoop".into(),
            state: "SUCCEEDED".into(),
            benchmark: Some("pi".into()),
            kind: Some(WorkloadKind::Cpu),
            progress_pct: 100.0,
            maps_completed: 8,
            maps_total: 8,
            reduces_completed: 1,
            reduces_total: 1,
            elapsed_s: 61.0,
            ..JobView::default()
        },
        // A Spark application with an I/O and a CPU job group under it; the
        // CPU group's total of jobs grew, its gauge did not go back.
        JobView {
            source: "spark".into(),
            id: "app-1".into(),
            name: "phases".into(),
            state: "RUNNING".into(),
            progress_pct: 100.0,
            maps_completed: 12,
            maps_total: 14,
            jobs_completed: 3,
            jobs_total: 4,
            ..JobView::default()
        },
        JobView {
            source: "spark".into(),
            id: "app-1/io".into(),
            name: "I/O phase".into(),
            state: "SUCCEEDED".into(),
            kind: Some(WorkloadKind::Io),
            progress_pct: 100.0,
            maps_completed: 8,
            maps_total: 8,
            jobs_completed: 2,
            jobs_total: 2,
            parent: Some("app-1".into()),
            ..JobView::default()
        },
        JobView {
            source: "spark".into(),
            id: "app-1/cpu".into(),
            name: "CPU phase".into(),
            state: "RUNNING".into(),
            kind: Some(WorkloadKind::Cpu),
            progress_pct: 100.0,
            maps_completed: 4,
            maps_total: 6,
            jobs_completed: 1,
            jobs_total: 2,
            parent: Some("app-1".into()),
            ..JobView::default()
        },
    ]
}

/// A finished penalty run under TCG: sequential reads and a CPU loop.
pub fn sample_penalty() -> PenaltyView {
    PenaltyView {
        state: "done".into(),
        progress: "done".into(),
        steps_done: 12,
        steps_total: 12,
        host: "node-a (Intel Xeon)".into(),
        accel: "tcg".into(),
        runs: 3,
        short: false,
        started_at: 1_764_100_000,
        rows: vec![
            PenaltyRow {
                workload: "seq-read".into(),
                kind: Some(WorkloadKind::Io),
                unit: "MiB/s".into(),
                native: vec![400.0, 420.0, 410.0],
                vm: vec![100.0, 90.0, 110.0],
            },
            PenaltyRow {
                workload: "cpu-loop".into(),
                kind: Some(WorkloadKind::Cpu),
                unit: "Mloop/s".into(),
                native: vec![50.0, 50.0, 50.0],
                vm: vec![5.0, 5.0, 5.0],
            },
        ],
        error: None,
    }
}

/// This peer (node-a) with 2 VMs, and 3 other peers: two connected, one not.
pub fn sample_status() -> Status {
    let peer = |id: &str, nick: &str, connected, latency, vms: Option<&[&str]>| PeerView {
        peer_id: id.into(),
        nick: nick.into(),
        connected,
        latency_ms: latency,
        vms: vms.map(|v| v.iter().map(|&s| s.into()).collect()),
        addrs: vec![],
        ..PeerView::default()
    };
    Status {
        local: LocalPeer {
            peer_id: "12D3KooWLocalAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaAaaa".into(),
            nick: "node-a".into(),
            listen_addrs: vec!["/ip4/0.0.0.0/tcp/4001".into()],
            hypervisor: "qemu:///system".into(),
            accel: "kvm".into(),
            host: None,
            lending: None,
            ..LocalPeer::default()
        },
        peers: vec![
            // Out of order on purpose: the table sorts.
            peer(
                "12D3KooWPeerDddddddddddddddddddddddddddddddddddddd",
                "peer-d",
                false,
                None,
                None,
            ),
            peer(
                "12D3KooWPeerCccccccccccccccccccccccccccccccccccccc",
                "peer-c",
                true,
                Some(0.42),
                None,
            ),
            peer(
                "12D3KooWPeerBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                "peer-b",
                true,
                Some(12.3),
                Some(&["cache-3"]),
            ),
        ],
        vms: vec![
            VmView {
                name: "web-1".into(),
                uuid: "u1".into(),
                state: VmState::Running,
                vcpus: 2,
                memory_mib: 1024,
                ip: Some("10.42.0.11".into()),
                managed: true,
                service_up: Some(true),
                ..VmView::default()
            },
            VmView {
                name: "db-1".into(),
                uuid: "u2".into(),
                state: VmState::Stopped,
                vcpus: 1,
                memory_mib: 2048,
                ip: None,
                managed: true,
                service_up: None,
                ..VmView::default()
            },
        ],
        operations: vec![OperationView {
            id: 1,
            kind: OperationKind::MigrateIn,
            vm: "kv-9".into(),
            peer: "peer-b".into(),
            phase: OperationPhase::Done,
            elapsed_s: 3.2,
            error: None,
            downtime_ms: Some(234),
            transferred_bytes: Some(72_999_721),
            ..OperationView::default()
        }],
        ..Status::default()
    }
}

pub fn app_with(status: Option<Status>) -> App {
    let opts = ConsoleOptions {
        title: "peervisor".into(),
        attached_to: "/var/lib/peervisor".into(),
        ..ConsoleOptions::default()
    };
    let mut app = App::new(
        opts,
        Keymap::default(),
        Theme::builtin("default").expect("default theme"),
    );
    app.set_status(status);
    app
}
