//! Frame layout: which pane goes where. Only paints; never waits on anything.
//!
//! Two layouts: on a big terminal every pane shows at once (the sketch in
//! DESIGN.md); on a small one (80x24 over SSH, say) a tab line picks the pane
//! shown large, with the log below it. `zoom` gives the focused pane the body.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use super::app::{App, Hits, Pane};
use super::panes::{
    boot_log, dialog, header, help, keybar, log, operations, services, throughput, topology, vms,
};

/// The full layout needs at least this much room.
const FULL_WIDTH: u16 = 120;
const FULL_HEIGHT: u16 = 34;
/// Log lines (with borders) under the focused pane in the small layout.
const SMALL_LOG_HEIGHT: u16 = 6;

/// Draw the whole console for the current state.
pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    *app.hits.borrow_mut() = Hits::default();
    if app.theme.background != ratatui::style::Style::new() {
        frame.render_widget(Block::new().style(app.theme.background), area);
    }
    let [header_a, body_a, status_a, keys_a] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(keybar::status_height(app, area.width)),
        Constraint::Length(1),
    ])
    .areas(area);
    header::draw(frame, header_a, app);
    if app.zoom {
        let [tabs_a, pane_a] =
            Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(body_a);
        draw_tabs(frame, tabs_a, app);
        draw_pane(frame, pane_a, app, app.focus);
    } else if area.width >= FULL_WIDTH && area.height >= FULL_HEIGHT {
        draw_full(frame, body_a, app);
    } else {
        draw_small(frame, body_a, app);
    }
    keybar::draw_status(frame, status_a, app);
    keybar::draw_keys(frame, keys_a, app);
    // Overlays last.
    dialog::draw(frame, area, app);
    boot_log::draw(frame, body_a, app);
    help::draw(frame, area, app);
}

fn draw_full(frame: &mut Frame, body: Rect, app: &App) {
    let [top, middle, bottom] = Layout::vertical([
        Constraint::Percentage(42),
        Constraint::Percentage(30),
        Constraint::Fill(1),
    ])
    .areas(body);
    let split = |r: Rect, left: u16| {
        Layout::horizontal([Constraint::Percentage(left), Constraint::Fill(1)]).areas::<2>(r)
    };
    let [topo, vms_a] = split(top, 45);
    let [svc, thr] = split(middle, 50);
    let [ops, log_a] = split(bottom, 45);
    for (pane, rect) in [
        (Pane::Topology, topo),
        (Pane::Vms, vms_a),
        (Pane::Services, svc),
        (Pane::Throughput, thr),
        (Pane::Operations, ops),
        (Pane::Log, log_a),
    ] {
        draw_pane(frame, rect, app, pane);
    }
}

fn draw_small(frame: &mut Frame, body: Rect, app: &App) {
    let log_h = if app.focus == Pane::Log || body.height < 14 {
        0
    } else {
        SMALL_LOG_HEIGHT
    };
    let [tabs_a, pane_a, log_a] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(log_h),
    ])
    .areas(body);
    draw_tabs(frame, tabs_a, app);
    draw_pane(frame, pane_a, app, app.focus);
    if log_h > 0 {
        draw_pane(frame, log_a, app, Pane::Log);
    }
}

/// `Topology  VMs  Services …` with the focused pane marked; clickable.
fn draw_tabs(frame: &mut Frame, area: Rect, app: &App) {
    let theme = &app.theme;
    let mut spans = Vec::new();
    let mut x = area.x;
    let mut hits = Vec::new();
    for pane in Pane::ALL {
        let label = format!(" {} ", pane.title());
        let w = label.chars().count() as u16;
        let style = if pane == app.focus {
            theme.tab_active
        } else {
            theme.tab
        };
        hits.push((
            pane,
            Rect::new(x, area.y, w.min(area.right().saturating_sub(x)), 1),
        ));
        spans.push(Span::styled(label, style));
        spans.push(Span::raw(" "));
        x = x.saturating_add(w + 1);
    }
    app.hits.borrow_mut().tabs.extend(hits);
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_pane(frame: &mut Frame, area: Rect, app: &App, pane: Pane) {
    if area.width < 3 || area.height < 3 {
        return;
    }
    app.hits.borrow_mut().panes.push((pane, area));
    match pane {
        Pane::Topology => topology::draw(frame, area, app),
        Pane::Vms => vms::draw(frame, area, app),
        Pane::Services => services::draw(frame, area, app),
        Pane::Throughput => throughput::draw(frame, area, app),
        Pane::Operations => operations::draw(frame, area, app),
        Pane::Log => log::draw(frame, area, app),
    }
}
