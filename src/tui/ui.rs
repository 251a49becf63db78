//! Frame layout: which pane goes where. Only paints; never waits on anything.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};

use super::app::{App, peer_rows};
use super::panes::{dialog, header, help, keybar, log, operations, peers, vms};

/// Rows of the operations block's body at most.
const MAX_OPERATION_ROWS: u16 = 4;
/// The log keeps at least this many lines (with borders).
const MIN_LOG_HEIGHT: u16 = 5;
/// Tables are never smaller than this (borders, header, one row, one spare).
const MIN_TABLE_HEIGHT: u16 = 5;

/// Draw the whole console for the current state.
pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let (table_rows, op_rows) = match &app.status {
        Some(s) => (
            peer_rows(s).len().max(s.vms.len()) as u16,
            s.operations.len() as u16,
        ),
        None => (1, 0),
    };
    let ops_h = op_rows.clamp(1, MAX_OPERATION_ROWS) + 2;
    // Header, status line and key bar take one line each.
    let room = area.height.saturating_sub(3 + ops_h);
    let table_cap = room.saturating_sub(MIN_LOG_HEIGHT).max(MIN_TABLE_HEIGHT);
    let table_h = (table_rows + 3).clamp(MIN_TABLE_HEIGHT, table_cap);

    let [header_a, body_a, ops_a, log_a, status_a, keys_a] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(table_h),
        Constraint::Length(ops_h),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let peers_w = (area.width * 2 / 5).clamp(30, 52).min(area.width);
    let [peers_a, vms_a] =
        Layout::horizontal([Constraint::Length(peers_w), Constraint::Fill(1)]).areas(body_a);

    header::draw(frame, header_a, app);
    peers::draw(frame, peers_a, app);
    vms::draw(frame, vms_a, app);
    operations::draw(frame, ops_a, app);
    log::draw(frame, log_a, app);
    keybar::draw_status(frame, status_a, app);
    keybar::draw_keys(frame, keys_a, app);
    // Overlays last.
    dialog::draw(frame, area, app);
    help::draw(frame, area, app);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::testutil::{app_with, sample_status};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    /// Render the app and return the screen as lines of text.
    fn render(app: &App, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, app)).unwrap();
        let buf = terminal.backend().buffer();
        (0..height)
            .map(|y| (0..width).map(|x| buf[(x, y)].symbol()).collect::<String>())
            .collect()
    }

    fn screen(lines: &[String]) -> String {
        lines.join("\n")
    }

    /// The first line below the header containing `needle`.
    fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
        lines
            .iter()
            .skip(1)
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line contains {needle:?}:\n{}", screen(lines)))
    }

    fn assert_main_content(lines: &[String]) {
        let s = screen(lines);
        let header = &lines[0];
        for part in [
            "peervisor",
            "peer node-a",
            "(12D3..Aaaa)",
            "overlay: 2 peers",
            "vms: 2",
            "? help",
            "q quit",
        ] {
            assert!(header.contains(part), "header lacks {part:?}: {header:?}");
        }
        // Peers: this peer first with "self", then by connected, with latencies.
        let row_a = line_with(lines, "node-a ");
        assert!(row_a.contains("self") && row_a.contains(" 2 "), "{row_a:?}");
        let row_b = line_with(lines, "peer-b");
        assert!(
            row_b.contains("12") && row_b.contains("yes") && row_b.contains(" 1"),
            "{row_b:?}"
        );
        let row_c = line_with(lines, "peer-c");
        assert!(
            row_c.contains("0.4") && row_c.contains("yes") && row_c.contains('?'),
            "{row_c:?}"
        );
        let row_d = line_with(lines, "peer-d");
        assert!(row_d.contains(" - ") && row_d.contains(" no "), "{row_d:?}");
        let pos = |n: &str| s.find(n).unwrap();
        assert!(
            pos("node-a ") < pos("peer-b")
                && pos("peer-b") < pos("peer-c")
                && pos("peer-c") < pos("peer-d")
        );
        // VMs.
        let web = line_with(lines, "web-1");
        for part in ["running", "1024", "10.42.0.11"] {
            assert!(web.contains(part), "web-1 row lacks {part:?}: {web:?}");
        }
        let db = line_with(lines, "db-1 ");
        assert!(db.contains("stopped") && db.contains("2048"), "{db:?}");
        // Operations, log, key bar.
        let op = line_with(lines, "kv-9");
        assert!(
            op.contains("from peer-b") && op.contains("done") && op.contains("3.2s"),
            "{op:?}"
        );
        assert!(s.contains("Log"), "no log pane:\n{s}");
        let keys = lines.last().unwrap();
        for part in ["m migrate", "Tab focus", "↑↓ select", "? help", "q quit"] {
            assert!(keys.contains(part), "key bar lacks {part:?}: {keys:?}");
        }
    }

    #[test]
    fn renders_peers_vms_and_keys_at_80x24() {
        let app = app_with(Some(sample_status()));
        let lines = render(&app, 80, 24);
        assert_main_content(&lines);
        // The log keeps several lines even at 80x24.
        let log_top = lines.iter().position(|l| l.contains(" Log ")).unwrap();
        assert!(24 - 2 - log_top >= 6, "log too small:\n{}", screen(&lines));
    }

    #[test]
    fn renders_at_120x40_with_attached_dir() {
        let app = app_with(Some(sample_status()));
        let lines = render(&app, 120, 40);
        assert_main_content(&lines);
        assert!(lines[0].contains("[/var/lib/peervisor]"), "{:?}", lines[0]);
    }

    #[test]
    fn before_first_snapshot_says_connecting() {
        let app = app_with(None);
        let lines = render(&app, 80, 24);
        assert!(lines[0].contains("connecting…"), "{:?}", lines[0]);
        assert!(!lines[0].contains("overlay"));
        assert!(lines.last().unwrap().contains("q quit"));
        let app = app_with(Some(sample_status()));
        assert!(!render(&app, 80, 24)[0].contains("connecting"));
    }

    #[test]
    fn key_bar_follows_the_keymap() {
        let mut app = app_with(Some(sample_status()));
        let text = "[keys]\nquit = [\"x\"]\nmigrate = [\"F2\"]\nhelp = [\"h\"]\nup = [\"Up\"]\ndown = [\"Down\"]\nfocus_next = [\"Tab\"]\n";
        app.keymap = crate::tui::keymap::Keymap::load("t.toml", text).unwrap();
        let lines = render(&app, 80, 24);
        let keys = lines.last().unwrap();
        assert!(
            keys.contains("F2 migrate") && keys.contains("x quit") && keys.contains("h help"),
            "{keys:?}"
        );
        assert!(!keys.contains("q quit"), "{keys:?}");
        assert!(
            lines[0].contains("h help") && lines[0].contains("x quit"),
            "{:?}",
            lines[0]
        );
    }

    #[test]
    fn migrate_flow_shows_picker_then_prompt() {
        let mut app = app_with(Some(sample_status()));
        app.handle_key(KeyEvent::new(KeyCode::Char('m'), KeyModifiers::NONE));
        let lines = render(&app, 80, 24);
        let s = screen(&lines);
        assert!(s.contains("Migrate web-1 to…"), "{s}");
        let pick = line_with(&lines, "▸ peer-b");
        assert!(pick.contains("12 ms"), "{pick:?}");
        assert!(
            lines.last().unwrap().contains("Enter pick"),
            "{:?}",
            lines.last()
        );
        app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        let lines = render(&app, 80, 24);
        assert!(
            lines[22].contains("Migrate web-1 to peer-b? (y/n)"),
            "{:?}",
            lines[22]
        );
        assert!(
            lines[23].contains("y migrate") && lines[23].contains("n cancel"),
            "{:?}",
            lines[23]
        );
        assert!(!screen(&lines).contains("Migrate web-1 to…"));
    }

    #[test]
    fn message_and_help_overlay_render() {
        let mut status = sample_status();
        status.peers.iter_mut().for_each(|p| p.connected = false);
        let mut app = app_with(Some(status));
        app.handle_key(KeyEvent::new(KeyCode::Char('m'), KeyModifiers::NONE));
        let lines = render(&app, 80, 24);
        assert!(
            lines[22].contains("No other connected peer to migrate to"),
            "{:?}",
            lines[22]
        );
        app.handle_key(KeyEvent::new(KeyCode::Char('?'), KeyModifiers::NONE));
        let s = screen(&render(&app, 80, 24));
        for part in [
            "Help",
            "q C-c",
            "quit the console",
            "m ",
            "migrate the selected VM",
            "S-Tab",
        ] {
            assert!(s.contains(part), "help lacks {part:?}:\n{s}");
        }
    }

    #[test]
    fn status_line_shows_latest_dial_error_until_a_message() {
        let mut status = sample_status();
        status.dial_errors = vec![
            "peer-x: timeout".into(),
            "peer-y: network key mismatch?".into(),
        ];
        let mut app = app_with(Some(status));
        let lines = render(&app, 80, 24);
        assert!(
            lines[22].contains("dial: peer-y: network key mismatch? (+1 more)"),
            "{:?}",
            lines[22]
        );
        app.say("hello".into());
        assert!(render(&app, 80, 24)[22].starts_with("hello"));
    }

    #[test]
    fn focused_pane_border_changes_with_tab() {
        let mut app = app_with(Some(sample_status()));
        let before = render(&app, 80, 24);
        // VMs are focused first: thick border on the right pane, rounded on the left.
        assert!(
            before[1].starts_with('╭') && before[1].contains('┏'),
            "{:?}",
            before[1]
        );
        app.handle_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE));
        let after = render(&app, 80, 24);
        assert!(
            after[1].starts_with('┏') && after[1].contains('╭'),
            "{:?}",
            after[1]
        );
    }

    /// Look at the console without a terminal:
    /// `cargo test --bin peervisor print_screens -- --ignored --nocapture`
    #[test]
    #[ignore = "prints screens for eyeballing"]
    fn print_screens() {
        let mut app = app_with(Some(sample_status()));
        println!("{}\n", screen(&render(&app, 80, 24)));
        app.handle_key(KeyEvent::new(KeyCode::Char('m'), KeyModifiers::NONE));
        println!("{}\n", screen(&render(&app, 120, 40)));
        app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        println!("{}\n", screen(&render(&app, 80, 24)));
        app.handle_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
        app.handle_key(KeyEvent::new(KeyCode::Char('?'), KeyModifiers::NONE));
        println!("{}\n", screen(&render(&app, 80, 24)));
        println!("{}", screen(&render(&app_with(None), 80, 24)));
    }

    #[test]
    fn tiny_terminal_does_not_panic() {
        let app = app_with(Some(sample_status()));
        for (w, h) in [(1, 1), (20, 5), (40, 10), (80, 8)] {
            render(&app, w, h);
        }
    }
}
