use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;
use crate::model::VmState;
use crate::tui::testutil::{PEER_B, PEER_C, app_with, rich_status, sample_status};

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

fn code(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

/// Feed keys; return every command they produced.
fn press(app: &mut App, keys: &[KeyEvent]) -> Vec<Request> {
    keys.iter().filter_map(|k| app.handle_key(*k)).collect()
}

fn typed(text: &str) -> Vec<KeyEvent> {
    text.chars().map(key).collect()
}

fn message(app: &App) -> &str {
    app.message.as_ref().map_or("", |m| m.text.as_str())
}

/// The sample's VMs sort by name: db-1 (stopped), web-1 (running).
fn on_web_1(app: &mut App) {
    press(app, &[key('j')]);
    assert_eq!(app.selected_vm_key(), Some("web-1"));
}

#[test]
fn r_enter_y_replicates_to_the_picked_peer_and_works_on_stopped_vms() {
    let mut app = app_with(Some(sample_status()));
    on_web_1(&mut app);
    assert!(press(&mut app, &[key('r')]).is_empty());
    assert!(matches!(
        &app.mode,
        Mode::PickPeer {
            replicate: true,
            ..
        }
    ));
    press(&mut app, &[code(KeyCode::Enter)]);
    assert!(
        matches!(&app.mode, Mode::Confirm { question, .. } if question == "Replicate web-1 to peer-b? It keeps running here.")
    );
    let cmds = press(&mut app, &[key('y')]);
    assert_eq!(cmds, vec![Request::replicate("web-1", PEER_B)]);
    assert_eq!(message(&app), "Replication of web-1 requested");
    // db-1 is stopped: it cannot migrate, but its disk can be replicated.
    press(&mut app, &[key('k')]);
    assert_eq!(app.selected_vm_key(), Some("db-1"));
    press(&mut app, &[key('r')]);
    assert!(matches!(&app.mode, Mode::PickPeer { vm, replicate: true, .. } if vm == "db-1"));
}

#[test]
fn m_down_enter_y_migrates_to_the_second_connected_peer() {
    let mut app = app_with(Some(sample_status()));
    on_web_1(&mut app);
    assert!(press(&mut app, &[key('m')]).is_empty());
    assert!(
        matches!(&app.mode, Mode::PickPeer { vm, candidates, selected: 0, replicate: false }
        if vm == "web-1" && candidates.iter().map(|c| c.name.as_str()).collect::<Vec<_>>() == ["peer-b", "peer-c"])
    );
    press(&mut app, &[code(KeyCode::Down), code(KeyCode::Enter)]);
    assert!(
        matches!(&app.mode, Mode::Confirm { question, .. } if question == "Migrate web-1 to peer-c?")
    );
    let cmds = press(&mut app, &[key('y')]);
    assert_eq!(cmds, vec![Request::migrate("web-1", PEER_C)]);
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(message(&app), "Migration of web-1 requested");
    assert!(press(&mut app, &[key('y'), code(KeyCode::Enter)]).is_empty());
}

#[test]
fn esc_cancels_every_dialog_and_m_refuses_a_stopped_vm() {
    let mut app = app_with(Some(sample_status()));
    press(&mut app, &[key('m')]); // db-1 is stopped
    assert_eq!(app.mode, Mode::Normal);
    assert!(
        message(&app).contains("db-1 is stopped"),
        "{}",
        message(&app)
    );
    on_web_1(&mut app);
    for keys in [
        vec![key('m'), code(KeyCode::Esc)],
        vec![key('m'), code(KeyCode::Enter), code(KeyCode::Esc)],
        vec![key('m'), code(KeyCode::Enter), key('n')],
        vec![key('d'), key('n')],
    ] {
        assert!(press(&mut app, &keys).is_empty());
        assert_eq!(app.mode, Mode::Normal);
    }
    assert!(!app.should_quit);
}

#[test]
fn d_on_the_operations_pane_aborts_the_selected_migration_after_asking() {
    let mut app = app_with(Some(crate::tui::testutil::rich_status()));
    app.focus = Pane::Operations;
    press(&mut app, &[code(KeyCode::Home)]);
    assert!(press(&mut app, &[key('d')]).is_empty(), "asks first");
    assert!(
        matches!(&app.mode, Mode::Confirm { question, .. }
            if question.starts_with("Abort the migration of web-3 to peer-c?")),
        "{:?}",
        app.mode
    );
    assert_eq!(
        press(&mut app, &[key('y')]),
        vec![Request::MigrateAbort { vm: "web-3".into() }]
    );
    // A finished operation has nothing to abort.
    press(&mut app, &[code(KeyCode::Down)]);
    assert!(press(&mut app, &[key('d')]).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert!(message(&app).contains("is over"), "{}", message(&app));
}

#[test]
fn s_p_d_make_lifecycle_commands_for_the_selected_vm() {
    let mut app = app_with(Some(sample_status()));
    assert_eq!(press(&mut app, &[key('s')]), vec![Request::start("db-1")]);
    assert!(press(&mut app, &[key('p')]).is_empty());
    assert!(message(&app).contains("only running or paused"));
    on_web_1(&mut app);
    assert_eq!(press(&mut app, &[key('s')]), vec![Request::stop("web-1")]);
    assert_eq!(press(&mut app, &[key('p')]), vec![Request::pause("web-1")]);
    let mut status = sample_status();
    status.vms[0].state = VmState::Paused;
    app.set_status(Some(status));
    assert_eq!(press(&mut app, &[key('p')]), vec![Request::resume("web-1")]);
    assert!(press(&mut app, &[key('d')]).is_empty());
    assert!(
        matches!(&app.mode, Mode::Confirm { question, .. } if question.starts_with("Delete web-1?"))
    );
    assert_eq!(press(&mut app, &[key('y')]), vec![Request::remove("web-1")]);
}

/// With the overlay toggle, another peer's VM is listed; once its host's
/// figures arrive it shows them and can be acted on here (its host decides),
/// its migration picker offering every connected peer but its host, this one
/// included; before they arrive the console says it waits. Only what is on
/// screen (and the selection) is watched.
#[test]
fn overlay_toggle_shows_other_peers_vms_with_their_figures_and_acts_on_them() {
    use crate::api::RemoteVmKey;
    use crate::model::{RemoteVmView, VmStats};
    let peer_b = "12D3KooWPeerBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let mut app = app_with(Some(sample_status()));
    press(&mut app, &[key('a')]);
    assert!(app.vms_all);
    press(&mut app, &[key('k')]);
    assert_eq!(app.selected_vm_key(), Some("cache-3@peer-b"));
    let cache_3 = RemoteVmKey {
        host_id: peer_b.into(),
        vm: "cache-3".into(),
    };
    assert_eq!(app.watched_remote_vms(), vec![cache_3.clone()]);
    assert!(press(&mut app, &[key('s')]).is_empty());
    assert!(
        message(&app).contains("no state from its host yet"),
        "{}",
        message(&app)
    );

    let mut status = sample_status();
    status.remote_vms = vec![RemoteVmView {
        host_id: peer_b.into(),
        vm: VmView {
            name: "cache-3".into(),
            state: VmState::Running,
            stats: Some(VmStats {
                cpu_pct_guest: Some(42.0),
                ..VmStats::default()
            }),
            ..VmView::default()
        },
        age_s: 0,
    }];
    app.set_status(Some(status));
    let shown = app.selected_vm().expect("figures from peer-b");
    assert_eq!(shown.stats.as_ref().unwrap().cpu_pct_guest, Some(42.0));
    assert_eq!(press(&mut app, &[key('s')]), vec![Request::stop("cache-3")]);
    assert_eq!(
        press(&mut app, &[key('p')]),
        vec![Request::pause("cache-3")]
    );
    press(&mut app, &[key('m')]);
    let Mode::PickPeer { candidates, .. } = &app.mode else {
        panic!("picker expected, got {:?}", app.mode)
    };
    let names: Vec<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["node-a", "peer-c"],
        "all connected peers but its host"
    );
    press(&mut app, &[code(KeyCode::Down), code(KeyCode::Enter)]);
    let sent = press(&mut app, &[key('y')]);
    assert_eq!(
        sent,
        vec![Request::migrate(
            "cache-3",
            "12D3KooWPeerCccccccccccccccccccccccccccccccccccccc"
        )]
    );
    assert!(
        press(&mut app, &[key('d')]).is_empty(),
        "deletion stays local"
    );
    assert!(
        message(&app).contains("delete it there"),
        "{}",
        message(&app)
    );

    // Back to this peer's VMs: nothing of other peers is watched.
    press(&mut app, &[key('a')]);
    assert!(app.watched_remote_vms().is_empty());
    press(
        &mut app,
        &[key('o'), key('o'), key('o'), key('o'), key('o'), key('o')],
    );
    assert_eq!(app.vm_sort, VmSort::Host);
}

#[test]
fn command_line_completes_runs_and_remembers() {
    let mut app = app_with(Some(rich_status()));
    press(&mut app, &[key(':')]);
    press(&mut app, &typed("mig"));
    press(&mut app, &[code(KeyCode::Tab)]);
    press(&mut app, &typed("we"));
    press(&mut app, &[code(KeyCode::Tab)]);
    press(&mut app, &typed("peer-"));
    press(&mut app, &[code(KeyCode::Tab)]);
    assert!(
        matches!(&app.mode, Mode::Command(e) if e.text == "migrate web-1 peer-" && e.candidates == ["peer-b", "peer-c", "peer-d"]),
        "{:?}",
        app.mode
    );
    press(&mut app, &typed("b"));
    let cmds = press(&mut app, &[code(KeyCode::Enter)]);
    assert_eq!(cmds, vec![Request::migrate("web-1", PEER_B)]);
    // History: ↑ brings the line back.
    press(&mut app, &[key(':'), code(KeyCode::Up)]);
    assert!(matches!(&app.mode, Mode::Command(e) if e.text == "migrate web-1 peer-b"));
    press(&mut app, &[code(KeyCode::Esc)]);
    // Consume with a port; expose; a bad line says why.
    press(&mut app, &[key(':')]);
    press(&mut app, &typed("consume cache 6380"));
    assert_eq!(
        press(&mut app, &[code(KeyCode::Enter)]),
        vec![Request::consume("cache", Some(6380))]
    );
    press(&mut app, &[key(':')]);
    press(&mut app, &typed("expose pg 127.0.0.1:5432"));
    assert_eq!(
        press(&mut app, &[code(KeyCode::Enter)]),
        vec![Request::expose("pg", "127.0.0.1:5432".into())]
    );
    press(&mut app, &[key(':')]);
    press(&mut app, &typed("replicate web-1 peer-b"));
    let sent = press(&mut app, &[code(KeyCode::Enter)]);
    assert!(
        matches!(&sent[..], [Request::Replicate { vm, .. }] if vm == "web-1"),
        "{sent:?}"
    );
    press(&mut app, &[key(':')]);
    press(&mut app, &typed("theme light"));
    press(&mut app, &[code(KeyCode::Enter)]);
    assert_eq!(app.theme.name, "light");
    press(&mut app, &[key(':')]);
    press(&mut app, &typed("theme nope"));
    press(&mut app, &[code(KeyCode::Enter)]);
    assert!(message(&app).contains("unknown theme `nope`"));
    assert_eq!(app.theme.name, "light");
    // q while typing is text, not quit.
    press(&mut app, &[key(':'), key('q')]);
    assert!(!app.should_quit);
    press(&mut app, &[code(KeyCode::Enter)]);
    assert!(app.should_quit);
}

#[test]
fn c_on_a_service_prefills_the_consume_command() {
    let mut app = app_with(Some(rich_status()));
    press(&mut app, &[code(KeyCode::Tab)]);
    assert_eq!(app.focus, Pane::Services);
    press(&mut app, &[key('c')]);
    assert!(matches!(&app.mode, Mode::Command(e) if e.text == "consume cache "));
    assert_eq!(
        press(&mut app, &[code(KeyCode::Enter)]),
        vec![Request::consume("cache", None)]
    );
}

#[test]
fn log_level_steps_and_zoom_and_focus_cycle() {
    let mut app = app_with(Some(sample_status()));
    press(&mut app, &[key('-'), key('-'), key('-')]);
    assert_eq!(app.log_level, LevelFilter::Error);
    press(&mut app, &[key('+')]);
    assert_eq!(app.log_level, LevelFilter::Warn);
    press(&mut app, &[key('z')]);
    assert!(app.zoom);
    press(&mut app, &[code(KeyCode::Esc)]);
    assert!(!app.zoom);
    let mut seen = vec![app.focus];
    for _ in 0..6 {
        press(&mut app, &[code(KeyCode::Tab)]);
        seen.push(app.focus);
    }
    assert_eq!(seen.first(), seen.last());
    assert_eq!(seen.len(), 7);
    press(
        &mut app,
        &[KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT)],
    );
    assert_eq!(app.focus, Pane::Topology);
}

#[test]
fn picker_follows_peers_and_closes_when_the_last_leaves() {
    let mut app = app_with(Some(sample_status()));
    on_web_1(&mut app);
    press(&mut app, &[key('m'), key('j')]);
    let mut status = sample_status();
    status.peers.retain(|p| p.nick == "peer-c");
    app.set_status(Some(status.clone()));
    assert!(
        matches!(&app.mode, Mode::PickPeer { candidates, selected: 0, .. } if candidates.len() == 1)
    );
    status.peers.clear();
    app.set_status(Some(status));
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(message(&app), "No other connected peer to migrate to");
}

#[test]
fn help_swallows_keys_and_ctrl_c_quits() {
    let mut app = app_with(Some(sample_status()));
    press(&mut app, &[key('?'), key('m')]);
    assert!(app.show_help);
    assert_eq!(app.mode, Mode::Normal);
    press(&mut app, &[code(KeyCode::Esc)]);
    assert!(!app.show_help);
    let mut app = app_with(None);
    press(
        &mut app,
        &[KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)],
    );
    assert!(app.should_quit);
}

#[test]
fn messages_expire() {
    let mut app = app_with(None);
    app.say("hello".into());
    let t0 = app.message.as_ref().unwrap().shown_at;
    app.tick(t0 + Duration::from_secs(1));
    assert!(app.message.is_some());
    app.tick(t0 + MESSAGE_TTL);
    assert!(app.message.is_none());
}

/// A delta from the node moves the console's state: new samples extend the
/// selected VM's history, a VM that goes away leaves the table, and an open
/// dialog about it closes.
#[test]
fn a_delta_from_the_node_moves_the_state_and_the_selection() {
    use crate::api::{Delta, Samples, Update, VmSample};
    use crate::model::VmStats;
    let mut app = app_with(None);
    app.apply(Update::Snapshot(Box::new(sample_status())));
    on_web_1(&mut app);
    assert_eq!(app.selected_vm().map(|v| v.name.as_str()), Some("web-1"));
    let before = app
        .selected_vm()
        .unwrap()
        .history
        .clone()
        .unwrap_or_default();
    let round = |cpu: f64| {
        Update::Delta(Box::new(Delta {
            samples: Some(Samples {
                interval_s: 1.0,
                keep: 120,
                host: None,
                vms: ["db-1", "web-1"]
                    .iter()
                    .map(|&name| VmSample {
                        name: name.into(),
                        stats: Some(VmStats {
                            cpu_pct_guest: Some(cpu),
                            ..VmStats::default()
                        }),
                    })
                    .collect(),
            }),
            ..Delta::default()
        }))
    };
    app.apply(round(77.0));
    let web = app.selected_vm().unwrap();
    assert_eq!(web.stats.as_ref().unwrap().cpu_pct_guest, Some(77.0));
    let history = web.history.as_ref().unwrap();
    assert_eq!(history.cpu_pct_guest.len(), before.cpu_pct_guest.len() + 1);
    assert_eq!(history.cpu_pct_guest.last(), Some(&77.0));

    // web-1 leaves (migrated away) while its deletion is being confirmed.
    press(&mut app, &[key('d')]);
    assert!(matches!(app.mode, Mode::Confirm { .. }));
    let mut vms = app.status.as_ref().unwrap().vms.clone();
    vms.retain(|v| v.name != "web-1");
    app.apply(Update::Delta(Box::new(Delta {
        vms: Some(vms),
        ..Delta::default()
    })));
    assert!(matches!(app.mode, Mode::Normal));
    assert!(message(&app).contains("web-1 is gone"), "{}", message(&app));
    assert_eq!(app.selected_vm().map(|v| v.name.as_str()), Some("db-1"));
    // db-1 kept its figures through the list change.
    assert_eq!(
        app.selected_vm()
            .unwrap()
            .stats
            .as_ref()
            .unwrap()
            .cpu_pct_guest,
        Some(77.0)
    );
}

fn shift(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::SHIFT)
}

/// `S` asks for the selected VM's serial console, here or on another peer
/// (even before its figures came: its host decides); a stopped VM has none.
#[test]
fn shift_s_asks_for_the_selected_vms_serial_console() {
    let mut app = app_with(Some(sample_status()));
    on_web_1(&mut app);
    assert_eq!(
        press(&mut app, &[shift('S')]),
        vec![Request::VmConsole {
            name: "web-1".into()
        }]
    );
    assert_eq!(message(&app), "Opening the console of web-1…");
    // db-1 is stopped.
    press(&mut app, &[key('k')]);
    assert!(press(&mut app, &[shift('S')]).is_empty());
    assert_eq!(
        message(&app),
        "db-1 is stopped: start it first (its boot log: v)"
    );
    // Another peer's VM.
    press(&mut app, &[key('a'), key('k')]);
    assert_eq!(app.selected_vm_key(), Some("cache-3@peer-b"));
    assert_eq!(
        press(&mut app, &[shift('S')]),
        vec![Request::VmConsole {
            name: "cache-3".into()
        }]
    );
    // Nothing selected, nothing asked.
    let mut empty = app_with(Some(Status::default()));
    assert!(press(&mut empty, &[shift('S')]).is_empty());
    assert_eq!(message(&empty), "No VM selected");
}

/// `v` asks for the boot log; its answer opens an overlay that starts at
/// the end, scrolls, and closes with q or Esc without quitting; Ctrl-C
/// still quits.
#[test]
fn v_shows_the_boot_log_scrolled_to_its_end_and_q_closes_it() {
    use crate::api::BootLog;
    let mut app = app_with(Some(sample_status()));
    on_web_1(&mut app);
    assert_eq!(
        press(&mut app, &[key('v')]),
        vec![Request::VmBootLog {
            name: "web-1".into()
        }]
    );
    let text: String = (1..=100)
        .map(|i| format!("[ {i}.0] boot line {i}\r\n"))
        .collect();
    app.show_boot_log(BootLog {
        vm: "web-1".into(),
        host: "peer-a".into(),
        path: "/var/lib/peervisor/console/web-1.log".into(),
        size: text.len() as u64,
        text: format!("\u{1b}[1;32m{text}\u{1b}[0m"),
    });
    let Mode::BootLog(view) = &app.mode else {
        panic!("boot log expected, got {:?}", app.mode)
    };
    assert_eq!(view.lines.len(), 100);
    assert_eq!(
        view.lines[0], "[ 1.0] boot line 1",
        "escapes and \\r dropped"
    );
    // A 10-line window starts at the end; up scrolls back, End follows again.
    assert_eq!(view.window(10), 90);
    press(&mut app, &[key('k'), code(KeyCode::PageUp)]);
    let Mode::BootLog(view) = &app.mode else {
        panic!()
    };
    assert_eq!(view.window(10), 79);
    press(&mut app, &[key('g')]);
    let Mode::BootLog(view) = &app.mode else {
        panic!()
    };
    assert_eq!(view.window(10), 0);
    press(&mut app, &[key('G')]);
    let Mode::BootLog(view) = &app.mode else {
        panic!()
    };
    assert_eq!(view.window(10), 90);
    // q closes the log, not the console.
    press(&mut app, &[key('q')]);
    assert_eq!(app.mode, Mode::Normal);
    assert!(!app.should_quit);
    press(&mut app, &[key('v')]);
    app.show_boot_log(BootLog::default());
    press(&mut app, &[code(KeyCode::Esc)]);
    assert_eq!(app.mode, Mode::Normal);
    app.show_boot_log(BootLog::default());
    press(
        &mut app,
        &[KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)],
    );
    assert!(app.should_quit);
}

/// What a guest writes may move the cursor or retitle the terminal: none
/// of it reaches the screen.
#[test]
fn boot_log_lines_drop_escape_sequences_and_control_characters() {
    let lines =
        printable_lines("a\u{1b}]0;title\u{7}b\u{1b}[2J\u{1b}[Hc\td\u{8}\r\ne\u{1b}P1$r\u{1b}\\f");
    assert_eq!(lines, ["abc    d", "ef"]);
}
