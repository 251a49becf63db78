//! Running and recent migrations.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Padding, Paragraph, Row, Table};

use super::{fmt_elapsed, pane_block};
use crate::model::{OperationKind, OperationPhase, OperationView};
use crate::tui::app::App;

/// Rows worth showing: running ones first, then the most recent.
pub fn ordered(ops: &[OperationView]) -> Vec<&OperationView> {
    let mut v: Vec<&OperationView> = ops.iter().collect();
    let active = |o: &OperationView| {
        matches!(
            o.phase,
            OperationPhase::Requested | OperationPhase::Transferring
        )
    };
    v.sort_by_key(|o| (!active(o), std::cmp::Reverse(o.id)));
    v
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let theme = &app.theme;
    let block = pane_block("Operations", false, theme).padding(Padding::horizontal(1));
    let ops = app
        .status
        .as_ref()
        .map(|s| ordered(&s.operations))
        .unwrap_or_default();
    if ops.is_empty() {
        frame.render_widget(
            Paragraph::new(Line::styled("no migrations yet", theme.dim)).block(block),
            area,
        );
        return;
    }
    let rows = ops.into_iter().map(|op| {
        let (arrow, word) = match op.kind {
            OperationKind::MigrateOut => ("→", "to"),
            OperationKind::MigrateIn => ("←", "from"),
        };
        let (phase, style) = match op.phase {
            OperationPhase::Requested => ("requested", theme.op_active),
            OperationPhase::Transferring => ("transferring", theme.op_active),
            OperationPhase::Done => ("done", theme.op_done),
            OperationPhase::Failed => ("failed", theme.op_failed),
        };
        Row::new([
            Cell::from(op.vm.clone()),
            Cell::from(format!("{arrow} {word} {}", op.peer)),
            Cell::from(Line::styled(phase, style)),
            Cell::from(Line::from(fmt_elapsed(op.elapsed_s)).right_aligned()),
            Cell::from(Line::styled(
                op.error.clone().unwrap_or_default(),
                theme.op_failed,
            )),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Max(16),
            Constraint::Max(22),
            Constraint::Length(12),
            Constraint::Length(6),
            Constraint::Fill(1),
        ],
    )
    .column_spacing(2)
    .block(block);
    frame.render_widget(table, area);
}
