//! Peers: this peer first, then the overlay peers the node knows about.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Cell, HighlightSpacing, Row, Table, TableState};

use super::{Selection, fmt_ms, pane_block, placeholder};
use crate::tui::app::{App, Focus, PeerRow, peer_rows};

/// The peers table's own state: which peer is selected.
#[derive(Debug, Default)]
pub struct PeersPane {
    selection: Selection,
}

impl PeersPane {
    pub fn sync(&mut self, rows: &[PeerRow]) {
        self.selection.sync(rows.iter().map(|r| r.peer_id.as_str()));
    }

    pub fn move_by(&mut self, rows: &[PeerRow], delta: isize) {
        self.selection
            .move_by(rows.iter().map(|r| r.peer_id.as_str()), delta);
    }

    #[cfg(test)]
    pub fn selected_id(&self) -> Option<&str> {
        self.selection.key()
    }
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let theme = &app.theme;
    let focused = app.focus == Focus::Peers;
    let block = pane_block("Peers", focused, theme);
    let Some(status) = &app.status else {
        frame.render_widget(placeholder(block, "connecting…", theme.dim), area);
        return;
    };
    let rows = peer_rows(status);
    let table_rows = rows.iter().map(|r| {
        let name_style = if r.is_local {
            theme.local_peer
        } else {
            ratatui::style::Style::new()
        };
        let (conn, conn_style) = match (r.is_local, r.connected) {
            (true, _) => ("self", theme.local_peer),
            (false, true) => ("yes", theme.connected),
            (false, false) => ("no", theme.disconnected),
        };
        let latency = r.latency_ms.map_or_else(|| "-".to_string(), fmt_ms);
        let vms = r
            .vm_count
            .map_or_else(|| "?".to_string(), |n| n.to_string());
        let row = Row::new([
            Cell::from(Line::styled(r.name.clone(), name_style)),
            Cell::from(Line::from(latency).right_aligned()),
            Cell::from(Line::styled(conn, conn_style)),
            Cell::from(Line::from(vms).right_aligned()),
        ]);
        if r.connected || r.is_local {
            row
        } else {
            row.style(theme.dim)
        }
    });
    let header = Row::new(["name", "ms", "conn", "vms"].map(Cell::from)).style(theme.table_header);
    let table = Table::new(
        table_rows,
        [
            Constraint::Fill(1),
            Constraint::Length(6),
            Constraint::Length(4),
            Constraint::Length(3),
        ],
    )
    .header(header)
    .column_spacing(1)
    .block(block)
    .highlight_symbol("▸")
    .highlight_spacing(HighlightSpacing::Always)
    .row_highlight_style(if focused {
        theme.selected
    } else {
        ratatui::style::Style::new()
    });
    let mut state = TableState::default().with_selected(if focused {
        app.peers.selection.index()
    } else {
        None
    });
    frame.render_stateful_widget(table, area, &mut state);
}
