//! Rendering tests: snapshot files of every pane at 80x24 and 200x60 with the
//! shipped dark and 16-colour themes (text and styles, as ratatui's buffer
//! prints them), and assertions on what an operator must be able to read.
//!
//! Snapshots live in src/tui/snapshots/. After an intended change, rewrite them
//! with `PEERVISOR_UPDATE_SNAPSHOTS=1 cargo nextest run snapshot` and review the diff.

use std::path::PathBuf;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};

use super::app::{App, Mode, Pane};
use super::testutil::{app_with, rich_status, sample_status};
use super::theme::Theme;
use super::ui::draw;
use crate::model::{OperationKind, OperationPhase, OperationView};

fn render_buffer(app: &App, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| draw(f, app)).unwrap();
    terminal.backend().buffer().clone()
}

/// The screen as lines of text.
pub fn render(app: &App, width: u16, height: u16) -> Vec<String> {
    let buf = render_buffer(app, width, height);
    (0..height)
        .map(|y| (0..width).map(|x| buf[(x, y)].symbol()).collect::<String>())
        .collect()
}

fn screen(lines: &[String]) -> String {
    lines.join("\n")
}

/// Compare with (or, with PEERVISOR_UPDATE_SNAPSHOTS=1, write) a snapshot file.
fn assert_snapshot(name: &str, buf: &Buffer) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/tui/snapshots");
    let path = dir.join(format!("{name}.snap"));
    let actual = format!("{buf:?}\n");
    if std::env::var_os("PEERVISOR_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}; create it with PEERVISOR_UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "snapshot {name} differs at line {}:\n  expected: {}\n  actual:   {}\n(rewrite with PEERVISOR_UPDATE_SNAPSHOTS=1 after checking)",
            first + 1,
            expected.lines().nth(first).unwrap_or(""),
            actual.lines().nth(first).unwrap_or("")
        );
    }
}

fn app_for(theme: &str, focus: Pane) -> App {
    let mut app = app_with(Some(rich_status()));
    app.theme = Theme::builtin(theme).unwrap();
    // web-1 (the VM with figures) is second by name.
    app.handle_key(key('j'));
    app.focus = focus;
    app
}

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

fn code(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

#[test]
fn snapshot_every_pane_at_80x24_and_200x60_in_both_themes() {
    for theme in ["default", "16color"] {
        for pane in Pane::ALL {
            let name = pane.title().to_lowercase();
            let app = app_for(theme, pane);
            assert_snapshot(
                &format!("{name}_80x24_{theme}"),
                &render_buffer(&app, 80, 24),
            );
            let mut zoomed = app_for(theme, pane);
            zoomed.zoom = true;
            assert_snapshot(
                &format!("{name}_200x60_zoom_{theme}"),
                &render_buffer(&zoomed, 200, 60),
            );
        }
        let app = app_for(theme, Pane::Vms);
        assert_snapshot(
            &format!("all_200x60_{theme}"),
            &render_buffer(&app, 200, 60),
        );
    }
}

#[test]
fn themes_change_colours_not_text() {
    let dark = render(&app_for("default", Pane::Vms), 200, 60);
    let sixteen = render(&app_for("16color", Pane::Vms), 200, 60);
    assert_eq!(dark, sixteen);
    assert_ne!(
        render_buffer(&app_for("default", Pane::Vms), 200, 60),
        render_buffer(&app_for("16color", Pane::Vms), 200, 60)
    );
}

fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line contains {needle:?}:\n{}", screen(lines)))
}

#[test]
fn big_terminal_shows_every_pane_with_the_figures() {
    let lines = render(&app_for("default", Pane::Vms), 200, 60);
    let s = screen(&lines);
    for title in [
        "Topology",
        "VMs (this peer, by name)",
        "Services (overlay)",
        "Throughput: web-1",
        "Operations: 1 running, 1 done, 1 failed",
        "Log ≥ info",
    ] {
        assert!(s.contains(title), "no {title:?}:\n{s}");
    }
    let header = &lines[0];
    for part in [
        "peer node-a",
        "overlay: 2 peers",
        "vms: 2",
        "services: 3",
        "cpu 23%",
    ] {
        assert!(header.contains(part), "header lacks {part:?}: {header}");
    }
    let web = line_with(&lines, "web-1 ✓");
    for part in [
        "running", "13.0", "87/1024M", "12K/3.4M", "9K/420K", "web", "node-a",
    ] {
        assert!(web.contains(part), "web-1 row lacks {part:?}: {web}");
    }
    let db = line_with(&lines, "db-1");
    assert!(db.contains("stopped") && db.contains(" - "), "{db}");
    // Services: the local provider is best; the consumption shows where it listens.
    let web_svc = line_with(&lines, "self/web-1");
    assert!(
        web_svc.contains("http") && web_svc.contains(" 2 "),
        "{web_svc}"
    );
    let cache = line_with(&lines, "peer-b/cache-3");
    assert!(
        cache.contains("peer-b/cache-3") && cache.contains("127.0.0.1:6380 2c ↑2K ↓3.3M"),
        "{cache}"
    );
    let legacy = line_with(&lines, "legacy-db");
    assert!(
        legacy.contains("peer-c (host)") && legacy.contains("0.4"),
        "{legacy}"
    );
    // Topology labels carry latency and load; operations show phase and error.
    assert!(s.contains("●peer-b 12ms 41%"), "{s}");
    assert!(line_with(&lines, "web-3").contains("transferring"));
    assert!(line_with(&lines, "db-2").contains("destination refuses"));
}

/// Another peer's operation (started from here, or moving a VM on screen)
/// names its host and the other side, beside this peer's own; the same id on
/// two hosts is two rows.
#[test]
fn operations_of_other_peers_show_their_host() {
    let mut status = rich_status();
    let id = status.operations[0].id;
    status.operations.push(OperationView {
        id,
        kind: OperationKind::MigrateOut,
        vm: "web-9".into(),
        peer: "peer-b".into(),
        phase: OperationPhase::Transferring,
        progress: Some(0.5),
        host: Some("peer-c".into()),
        ..OperationView::default()
    });
    let mut app = app_with(Some(status));
    app.focus = Pane::Operations;
    let lines = render(&app, 200, 60);
    let row = line_with(&lines, "web-9");
    assert!(
        row.contains("peer-c → peer-b")
            && row.contains("transferring")
            && row.contains("█████░░░░░"),
        "{row}"
    );
    assert!(
        line_with(&lines, "web-3").contains("→ peer-c")
            && !line_with(&lines, "web-3").contains("peer-c →"),
        "this peer's own keeps its arrow"
    );
    assert!(
        line_with(&lines, "Operations:").contains("2 running"),
        "{}",
        line_with(&lines, "Operations:")
    );
}

/// The boot log over the panes at 80x24: its end, where it comes from, how
/// much of it; the key bar says how to scroll and close it.
#[test]
fn boot_log_overlay_shows_the_end_of_the_log_and_where_it_comes_from() {
    let mut app = app_for("default", Pane::Vms);
    let text: String = (1..=500).map(|i| format!("[{i:>4}] line {i}\n")).collect();
    app.show_boot_log(crate::api::BootLog {
        vm: "web-1".into(),
        host: "peer-b".into(),
        path: "/var/lib/peervisor/console/web-1.log".into(),
        size: 200_000,
        text,
    });
    let lines = render(&app, 80, 24);
    let s = screen(&lines);
    assert!(
        s.contains("Boot log of web-1 on peer-b (last 7892 B of 195.3 KiB)"),
        "{s}"
    );
    assert!(s.contains("/var/lib/peervisor/console/web-1.log"), "{s}");
    assert!(s.contains("[ 500] line 500"), "{s}");
    assert!(!s.contains("[   1] line 1 "), "{s}");
    assert!(s.contains("of 500 lines"), "{s}");
    let keys = lines.last().unwrap();
    assert!(
        keys.contains("↑↓ scroll") && keys.contains("PgDn page") && keys.contains("Esc close"),
        "{keys}"
    );
}

#[test]
fn small_terminal_shows_tabs_the_focused_pane_and_the_log() {
    let mut app = app_for("default", Pane::Vms);
    let lines = render(&app, 80, 24);
    assert!(
        lines[1].contains("Topology") && lines[1].contains("Operations"),
        "{}",
        lines[1]
    );
    let web = line_with(&lines, "web-1");
    assert!(web.contains("13.0") && web.contains("12K/3.4M"), "{web}");
    assert!(screen(&lines).contains("Log ≥ info"));
    let keys = lines.last().unwrap();
    assert!(
        keys.starts_with("m migrate  S console  s start/stop"),
        "{keys}"
    );
    app.handle_key(code(KeyCode::Tab));
    let lines = render(&app, 80, 24);
    assert!(
        screen(&lines).contains("Services (overlay)"),
        "{}",
        screen(&lines)
    );
    assert!(
        lines.last().unwrap().starts_with("c consume"),
        "{:?}",
        lines.last()
    );
}

#[test]
fn empty_fields_show_dashes_and_no_data_notes() {
    let mut app = app_with(Some(sample_status()));
    app.focus = Pane::Throughput;
    let s = screen(&render(&app, 80, 24));
    assert!(s.contains("no data yet"), "{s}");
    app.focus = Pane::Services;
    assert!(screen(&render(&app, 80, 24)).contains("no services discovered yet"));
    app.focus = Pane::Vms;
    let lines = render(&app, 80, 24);
    let web = line_with(&lines, "web-1");
    assert!(web.contains("1024M") && web.contains(" - "), "{web}");
    let app = app_with(None);
    assert!(render(&app, 80, 24)[0].contains("connecting…"));
}

#[test]
fn filter_narrows_the_list_and_esc_clears_it() {
    let mut app = app_for("default", Pane::Services);
    for k in [key('/'), key('c'), key('a')] {
        app.handle_key(k);
    }
    let lines = render(&app, 80, 24);
    let s = screen(&lines);
    assert!(s.contains("/ca") && s.contains("1/3"), "{s}");
    assert!(!s.contains("legacy-db"), "{s}");
    assert!(lines[22].starts_with("/Services: ca"), "{}", lines[22]);
    app.handle_key(code(KeyCode::Enter));
    assert_eq!(app.services.filter, "ca");
    assert_eq!(app.selected_service(), Some("cache"));
    app.handle_key(code(KeyCode::Esc));
    assert_eq!(app.services.filter, "");
    assert!(screen(&render(&app, 80, 24)).contains("legacy-db"));
}

#[test]
fn help_lists_every_key_from_the_keymap_and_scrolls() {
    let mut app = app_for("default", Pane::Vms);
    app.handle_key(key('?'));
    let s = screen(&render(&app, 200, 60));
    for (keys, what) in [
        (" m ", "migrate the selected VM"),
        (" d Del ", "delete VM, abort migration (asks)"),
        (" q C-c ", "quit the console"),
        (" / ", "filter the focused list"),
        (" : ", "command line"),
    ] {
        let line = line_with(&s.lines().map(String::from).collect::<Vec<_>>(), what).to_string();
        assert!(
            line.contains(&format!("{keys} ")),
            "help line for {what:?} lacks {keys:?}: {line}"
        );
    }
    for part in [
        ":migrate VM PEER",
        ":consume SERVICE [PORT]",
        ":expose SERVICE HOST:PORT",
    ] {
        assert!(s.contains(part), "help lacks {part:?}:\n{s}");
    }
    let small = render(&app, 80, 24);
    assert!(
        screen(&small).contains("↑↓ scroll 0/"),
        "{}",
        screen(&small)
    );
    app.handle_key(key('j'));
    assert!(screen(&render(&app, 80, 24)).contains("↑↓ scroll 1/"));
    app.handle_key(code(KeyCode::Esc));
    assert!(!app.show_help);
}

#[test]
fn vim_keymap_changes_the_hints() {
    let mut app = app_for("default", Pane::Vms);
    app.keymap = crate::tui::keymap::Keymap::builtin("vim").unwrap();
    let keys = render(&app, 120, 24).pop().unwrap();
    assert!(
        keys.contains("x delete") && keys.contains("L pane") && keys.contains("kj select"),
        "{keys}"
    );
}

#[test]
fn migrate_flow_shows_picker_then_prompt() {
    let mut app = app_with(Some(sample_status()));
    app.handle_key(key('j'));
    app.handle_key(key('m'));
    let lines = render(&app, 80, 24);
    assert!(screen(&lines).contains("Migrate web-1 to…"));
    assert!(line_with(&lines, "▸ peer-b").contains("12 ms"));
    app.handle_key(code(KeyCode::Enter));
    let lines = render(&app, 80, 24);
    assert!(
        lines[22].contains("Migrate web-1 to peer-b? (y/n)"),
        "{:?}",
        lines[22]
    );
    assert!(
        lines[23].contains("y yes") && lines[23].contains("n no"),
        "{:?}",
        lines[23]
    );
}

#[test]
fn replicate_flow_shows_its_own_picker_and_prompt() {
    let mut app = app_with(Some(sample_status()));
    app.handle_key(key('j'));
    app.handle_key(key('r'));
    let lines = render(&app, 80, 24);
    assert!(screen(&lines).contains("Replicate web-1 to…"));
    app.handle_key(code(KeyCode::Enter));
    let lines = render(&app, 80, 24);
    assert!(
        lines[22].contains("Replicate web-1 to peer-b?"),
        "{:?}",
        lines[22]
    );
}

#[test]
fn peer_detail_opens_on_enter_in_the_topology() {
    let mut app = app_for("default", Pane::Topology);
    app.handle_key(key('j'));
    app.handle_key(code(KeyCode::Enter));
    assert!(matches!(&app.mode, Mode::Detail { peer_id } if peer_id == super::testutil::PEER_B));
    let s = screen(&render(&app, 100, 30));
    for part in [
        "peer-b",
        "connected, 12 ms",
        "41% cpu, 1 running VMs, 3 connections",
        "/ip4/127.0.0.1/tcp/7471",
        "cache-3",
        "web (http)",
        "cache (kv)",
    ] {
        assert!(s.contains(part), "detail lacks {part:?}:\n{s}");
    }
    app.handle_key(code(KeyCode::Esc));
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn mouse_click_focuses_and_selects_and_the_wheel_scrolls() {
    let mut app = app_for("default", Pane::Vms);
    let lines = render(&app, 200, 60);
    let (y, _) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.contains("db-1"))
        .unwrap();
    let x = lines[y].find("db-1").unwrap() as u16;
    let click = |col, row| MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: col,
        row,
        modifiers: KeyModifiers::NONE,
    };
    app.handle_mouse(click(x, y as u16));
    assert_eq!(app.selected_vm_key(), Some("db-1"));
    // A click in the services pane focuses it.
    let (sy, _) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.contains("legacy-db"))
        .unwrap();
    app.handle_mouse(click(5, sy as u16));
    assert_eq!(app.focus, Pane::Services);
    assert_eq!(app.selected_service(), Some("legacy-db"));
    render(&app, 200, 60);
    app.handle_mouse(MouseEvent {
        kind: MouseEventKind::ScrollUp,
        column: 5,
        row: sy as u16,
        modifiers: KeyModifiers::NONE,
    });
    assert_eq!(app.selected_service(), Some("cache"));
}

#[test]
fn tiny_terminals_do_not_panic() {
    let mut app = app_for("default", Pane::Topology);
    for pane in Pane::ALL {
        app.focus = pane;
        for (w, h) in [(1, 1), (20, 5), (40, 10), (80, 8), (119, 33)] {
            render(&app, w, h);
        }
    }
}

/// Look at the console without a terminal:
/// `cargo test --bin peervisor print_screens -- --ignored --nocapture`
#[test]
#[ignore = "prints screens for eyeballing"]
fn print_screens() {
    for pane in Pane::ALL {
        println!("{}\n", screen(&render(&app_for("default", pane), 80, 24)));
    }
    println!(
        "{}\n",
        screen(&render(&app_for("default", Pane::Vms), 200, 60))
    );
    let mut app = app_for("default", Pane::Vms);
    app.handle_key(key('?'));
    println!("{}\n", screen(&render(&app, 80, 24)));
    println!("{}\n", screen(&render(&app, 200, 60)));
}

/// The Throughput pane switched to jobs and benchmarks (`b`).
fn jobs_app(theme: &str) -> App {
    let mut app = app_for(theme, Pane::Vms);
    app.handle_key(key('b'));
    app
}

#[test]
#[ignore = "prints screens for eyeballing"]
fn print_jobs_screens() {
    let app = jobs_app("default");
    println!("{}\n", screen(&render(&app, 80, 24)));
    println!("{}\n", screen(&render(&app, 200, 60)));
    let mut zoomed = jobs_app("default");
    zoomed.zoom = true;
    println!("{}\n", screen(&render(&zoomed, 200, 60)));
}

#[test]
fn snapshot_jobs_view_at_80x24_and_200x60() {
    for theme in ["default", "16color"] {
        let app = jobs_app(theme);
        assert_snapshot(&format!("jobs_80x24_{theme}"), &render_buffer(&app, 80, 24));
        assert_snapshot(
            &format!("jobs_200x60_{theme}"),
            &render_buffer(&app, 200, 60),
        );
    }
}

#[test]
fn jobs_view_shows_jobs_penalty_and_failing_sources() {
    let mut app = jobs_app("default");
    assert_eq!(app.focus, Pane::Throughput);
    for (w, h) in [(80, 24), (200, 60)] {
        let lines = render(&app, w, h);
        let s = screen(&lines);
        assert!(s.contains("Throughput: jobs and benchmarks"), "{s}");
        let tera = line_with(&lines, "▸TeraSort");
        for part in [
            "TeraSort io",
            "RUNNING",
            "45%",
            "12/16",
            "1/4",
            "42.0M/s",
            "8.3M/s",
        ] {
            assert!(tera.contains(part), "TeraSort row lacks {part:?}: {tera}");
        }
        let pi = line_with(&lines, "QuasiMonteCarlo");
        for part in ["pi cpu", "SUCCEEDED", "100%", "8/8", "1/1"] {
            assert!(pi.contains(part), "pi row lacks {part:?}: {pi}");
        }
        // A Spark job group under its application, its own kind, its gauge
        // kept as its total of jobs grew.
        let group = line_with(&lines, "└ CPU phase");
        for part in ["cpu", "RUNNING", "100%", "4/6"] {
            assert!(group.contains(part), "group row lacks {part:?}: {group}");
        }
        // The selected job's throughput: latest sample, CPU and the VM it ran on.
        let chart = line_with(&lines, "read+write 45.0M/s");
        assert!(
            chart.contains("cpu 1450 ms/s") && chart.contains("on web-1"),
            "{chart}"
        );
        let title = line_with(&lines, "Penalty done");
        assert!(
            title.contains("accel tcg") && title.contains("node-a (Intel Xeon)"),
            "{title}"
        );
        let read = line_with(&lines, "seq-read");
        for part in ["410.0 MiB/s", "100.0 MiB/s", "75.6%", "±2.4% / ±10.0%"] {
            assert!(read.contains(part), "seq-read row lacks {part:?}: {read}");
        }
        assert!(line_with(&lines, "cpu-loop").contains("90.0%"));
        assert!(
            s.contains("spark http://10.42.0.12:18080: connection refused"),
            "{s}"
        );
        assert!(
            !s.contains("http://10.42.0.11:8088"),
            "a healthy source is not an error: {s}"
        );
        assert!(
            lines.last().unwrap().starts_with("b vm charts"),
            "{:?}",
            lines.last()
        );
    }
    // At 200x60 (zoomed) the selected job's history is a chart with a time axis.
    app.zoom = true;
    let lines = render(&app, 200, 60);
    let s = screen(&lines);
    assert!(s.contains("-38s") && s.contains("59.4M/s"), "{s}");
    // A pane this wide says `n of m` jobs in a column.
    let group = line_with(&lines, "└ CPU phase");
    assert!(group.contains("1 of 2"), "{group}");
    app.zoom = false;
    // Down selects the next job; its chart follows.
    app.handle_key(key('j'));
    let lines = render(&app, 80, 24);
    assert!(line_with(&lines, "▸QuasiMonteCarlo").contains("SUCCEEDED"));
    // (At 80x24 the job list leaves its chart no room.)
    let lines = render(&app, 200, 60);
    assert!(
        screen(&lines).contains("no throughput yet"),
        "{}",
        screen(&lines)
    );
    // The same key switches back to the selected VM's charts.
    app.handle_key(key('b'));
    let s = screen(&render(&app, 80, 24));
    assert!(
        s.contains("Throughput: web-1") && !s.contains("TeraSort"),
        "{s}"
    );
}

#[test]
fn a_running_penalty_benchmark_shows_its_progress() {
    let mut status = rich_status();
    let p = status.penalty.as_mut().unwrap();
    p.state = "running".into();
    p.progress = "run 2/3: seq-read in the VM".into();
    p.steps_done = 5;
    p.rows[1].vm.clear();
    let mut app = app_with(Some(status));
    app.handle_key(key('b'));
    let lines = render(&app, 80, 24);
    let title = line_with(&lines, "Penalty");
    assert!(
        title.contains("running: run 2/3: seq-read in the VM (5/12)"),
        "{title}"
    );
    // A workload not yet measured in the VM has no penalty yet.
    let cpu = line_with(&lines, "cpu-loop");
    assert!(cpu.contains("50.0 Mloop/s") && cpu.contains(" - "), "{cpu}");
}

#[test]
fn jobs_view_without_jobs_says_so() {
    let mut app = app_with(Some(sample_status()));
    app.handle_key(key('b'));
    let s = screen(&render(&app, 80, 24));
    assert!(s.contains("no jobs (no job sources configured)"), "{s}");
}

#[test]
fn clicking_a_job_selects_it_and_its_chart_follows() {
    let mut app = jobs_app("default");
    let lines = render(&app, 80, 24);
    let y = lines
        .iter()
        .position(|l| l.contains("QuasiMonteCarlo"))
        .unwrap();
    app.handle_mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: 5,
        row: y as u16,
        modifiers: KeyModifiers::NONE,
    });
    assert_eq!(
        app.selected_job().map(|j| j.name.as_str()),
        Some("QuasiMonteCarlo")
    );
    let lines = render(&app, 80, 24);
    assert!(line_with(&lines, "QuasiMonteCarlo read+write").contains("-"));
    // The VM selection is left alone.
    assert_eq!(app.selected_vm_key(), Some("web-1"));
}

#[test]
fn header_says_when_libvirt_is_reconnecting_or_not_answering() {
    let mut status = sample_status();
    assert!(!render(&app_with(Some(status.clone())), 80, 24)[0].contains("libvirt"));
    status.local.libvirt.lost = Some(crate::model::LinkLost {
        since_unix_ms: 1,
        for_s: 3.0,
        why: "the daemon closed the connection".into(),
    });
    let top = render(&app_with(Some(status.clone())), 80, 24)[0].clone();
    assert!(top.contains("libvirt: reconnecting"), "{top}");
    status.local.libvirt.lost = None;
    status.local.libvirt.not_answering_s = Some(12.0);
    let top = render(&app_with(Some(status)), 80, 24)[0].clone();
    assert!(top.contains("libvirt: not answering"), "{top}");
}

#[test]
fn header_names_the_hosts_libvirt_but_not_a_private_one() {
    let mut status = sample_status();
    let top = render(&app_with(Some(status.clone())), 200, 24)[0].clone();
    assert!(!top.contains("qemu:///system"), "{top}");
    status.local.hypervisor_origin = crate::model::HypervisorOrigin::Environment;
    let top = render(&app_with(Some(status)), 200, 24)[0].clone();
    assert!(top.contains("libvirt qemu:///system"), "{top}");
}

#[test]
fn header_says_whether_this_peer_is_reachable_once_autonat_knows() {
    let mut status = sample_status();
    let top = render(&app_with(Some(status.clone())), 200, 24)[0].clone();
    assert!(!top.contains("public") && !top.contains("NAT"), "{top}");
    status.local.reachability = crate::model::Reachability::Private;
    let top = render(&app_with(Some(status.clone())), 200, 24)[0].clone();
    assert!(top.contains("(behind NAT)"), "{top}");
    status.local.reachability = crate::model::Reachability::Public {
        address: "/ip4/198.51.100.1/tcp/7470".into(),
    };
    let top = render(&app_with(Some(status)), 200, 24)[0].clone();
    assert!(top.contains("(public)"), "{top}");
}

#[test]
fn failed_consumer_connections_show_in_the_services_pane() {
    let mut status = rich_status();
    status.consumptions[0].errors = 3;
    status.consumptions[0].last_error = Some("provider peer-b: rate limit".into());
    let mut app = app_with(Some(status));
    app.theme = Theme::builtin("default").unwrap();
    let lines = render(&app, 200, 60);
    let cache = line_with(&lines, "peer-b/cache-3");
    assert!(cache.contains("127.0.0.1:6380 2c 3err ↑2K"), "{cache}");
}

/// Issue 20: a thousand peers, a dozen of them linked to this one. The graph
/// shows the neighbourhood and says where the rest are; the list scrolls.
fn thousand_peer_app() -> App {
    let mut status = sample_status();
    let id = |i: usize| format!("12D3KooWScale{i:04}{}", "x".repeat(38));
    status.peers = (0..1000)
        .map(|i| crate::model::PeerView {
            peer_id: id(i),
            nick: format!("host-{i:04}"),
            connected: i % 83 == 0,
            latency_ms: (i % 83 == 0).then_some(1.0 + i as f64 / 100.0),
            vms: Some(vec![format!("vm-{i}").into()]),
            links: (1..4).map(|k| id((i + k * 83) % 1000)).collect(),
            ..Default::default()
        })
        .collect();
    let mut app = app_with(Some(status));
    app.focus = Pane::Topology;
    app
}

#[test]
fn snapshot_topology_with_a_thousand_peers() {
    let app = thousand_peer_app();
    for (w, h) in [(80, 24), (200, 60)] {
        assert_snapshot(
            &format!("topology_1000_peers_{w}x{h}"),
            &render_buffer(&app, w, h),
        );
    }
    let lines = render(&app, 200, 60);
    let text = screen(&lines);
    assert!(
        text.contains("14 of 1001 peers; 987 more in the list →"),
        "{text}"
    );
    // The linked peers are labelled on the graph; the unlinked ones are not.
    assert!(text.matches("host-0083").count() >= 2, "{text}");
    assert_eq!(
        text.matches("host-0001").count(),
        1,
        "in the list only: {text}"
    );
}
