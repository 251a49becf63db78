//! Operations: running and recent migrations with a progress bar, phase,
//! elapsed time and errors; totals in the title. `→ peer` is a VM sent to a
//! peer, `← peer` one received from it; `host → peer` an operation another
//! peer runs (started from here, or moving a VM on screen).

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row};

use super::{draw_list, fmt_elapsed, list_block, pane_block, placeholder};
use crate::model::{OperationKind, OperationPhase, OperationView};
use crate::tui::app::{App, Pane};
use crate::tui::rows::{is_active, operation_rows};

/// Cells of the progress bar.
const BAR: usize = 10;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let theme = &app.theme;
    let focused = app.focus == Pane::Operations;
    let Some(status) = &app.status else {
        let block = pane_block("Operations", focused, theme);
        frame.render_widget(placeholder(block, "connecting…", theme.dim), area);
        return;
    };
    let ops = &status.operations;
    let count = |p: OperationPhase| ops.iter().filter(|o| o.phase == p).count();
    let running = ops.iter().filter(|o| is_active(o)).count();
    let title = format!(
        "Operations: {running} running, {} done, {} failed",
        count(OperationPhase::Done),
        count(OperationPhase::Failed)
    );
    let rows = operation_rows(status, &app.operations.filter);
    let block = list_block(
        &title,
        focused,
        &app.operations.filter,
        rows.len(),
        ops.len(),
        theme,
    );
    if rows.is_empty() {
        let text = if ops.is_empty() {
            "no migrations yet (m on a running VM)"
        } else {
            "no operation matches the filter"
        };
        frame.render_widget(placeholder(block, text, theme.dim), area);
        return;
    }
    // Narrow panes drop the bar (the phase says the same in words) and the
    // figures (`status` and `migrate --json` have them).
    let with_bar = area.width >= 70;
    let with_figures = area.width >= 100;
    let mut header = vec!["vm", "peer", "progress", "phase", "time"];
    let mut widths = vec![
        Constraint::Max(16),
        Constraint::Max(16),
        Constraint::Length(BAR as u16),
        Constraint::Length(12),
        Constraint::Length(6),
    ];
    if with_figures {
        header.extend(["svc gap", "downtime", "sent"]);
        widths.extend([
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(6),
        ]);
    }
    header.push("error");
    widths.push(Constraint::Fill(1));
    if !with_bar {
        header.remove(2);
        widths.remove(2);
    }
    let header = Row::new(header.into_iter().map(Cell::from));
    draw_list(
        frame,
        area,
        app,
        Pane::Operations,
        block,
        header,
        &widths,
        rows.len(),
        |i| {
            let op = rows[i];
            let arrow = match op.kind {
                OperationKind::MigrateOut => "→",
                OperationKind::MigrateIn => "←",
                // A replica: a copy goes out or comes in, the VM stays.
                OperationKind::ReplicateOut => "⇉",
                OperationKind::ReplicateIn => "⇇",
            };
            let (phase, style) = match op.phase {
                OperationPhase::Requested => ("requested", theme.op_active),
                OperationPhase::Transferring => ("transferring", theme.op_active),
                OperationPhase::Done => ("done", theme.op_done),
                OperationPhase::Failed => ("failed", theme.op_failed),
            };
            let mut cells = vec![
                Cell::from(op.vm.to_string()),
                Cell::from(match &op.host {
                    // Another peer's operation: its host, then the other side.
                    Some(host) => format!("{host} {arrow} {}", op.peer),
                    None => format!("{arrow} {}", op.peer),
                }),
                Cell::from(bar(op, app)),
                Cell::from(Line::styled(phase, style)),
                Cell::from(Line::from(fmt_elapsed(op.elapsed_s)).right_aligned()),
            ];
            if with_figures {
                cells.extend(figures(op).map(|f| Cell::from(Line::from(f).right_aligned())));
            }
            cells.push(Cell::from(Line::styled(
                op.error.clone().unwrap_or_default(),
                theme.op_failed,
            )));
            if !with_bar {
                cells.remove(2);
            }
            Row::new(cells)
        },
    );
}

/// Service gap seen by the probe, libvirt's downtime (expected, while running),
/// bytes sent.
fn figures(op: &OperationView) -> [String; 3] {
    let ms = |v: Option<u64>| v.map_or_else(|| "-".into(), |ms| format!("{ms}ms"));
    [
        ms(op.probe_downtime_ms),
        ms(op.downtime_ms),
        op.transferred_bytes
            .map_or_else(|| "-".into(), super::fmt_bytes),
    ]
}

/// Finished operations show a full bar. A running one shows libvirt's
/// transferred fraction when the node reports it (source side), otherwise an
/// activity sweep driven by its elapsed time instead of an invented percentage.
fn bar(op: &OperationView, app: &App) -> Line<'static> {
    let theme = &app.theme;
    match op.phase {
        OperationPhase::Done => Line::styled("█".repeat(BAR), theme.op_done),
        OperationPhase::Failed => Line::styled("╳".repeat(BAR), theme.op_failed),
        OperationPhase::Requested | OperationPhase::Transferring if op.progress.is_some() => {
            let filled = (op.progress.unwrap_or(0.0).clamp(0.0, 1.0) * BAR as f64).round() as usize;
            let cells = format!("{}{}", "█".repeat(filled), "░".repeat(BAR - filled));
            Line::from(Span::styled(cells, theme.gauge))
        }
        OperationPhase::Requested | OperationPhase::Transferring => {
            let pos = (op.elapsed_s * 4.0) as usize % (BAR + 2);
            let cells: String = (0..BAR)
                .map(|i| {
                    if i + 2 >= pos && i <= pos {
                        '█'
                    } else {
                        '░'
                    }
                })
                .collect();
            Line::from(Span::styled(cells, theme.gauge))
        }
    }
}
