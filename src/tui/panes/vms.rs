//! VMs hosted on this peer.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::{Cell, HighlightSpacing, Row, Table, TableState};

use super::{Selection, pane_block, placeholder};
use crate::model::VmView;
use crate::tui::app::{App, Focus};

/// The VM table's own state: which VM is selected (by name).
#[derive(Debug, Default)]
pub struct VmsPane {
    selection: Selection,
}

impl VmsPane {
    pub fn sync(&mut self, vms: &[VmView]) {
        self.selection.sync(vms.iter().map(|v| v.name.as_str()));
    }

    pub fn move_by(&mut self, vms: &[VmView], delta: isize) {
        self.selection
            .move_by(vms.iter().map(|v| v.name.as_str()), delta);
    }

    #[cfg(test)]
    pub fn selected_name(&self) -> Option<&str> {
        self.selection.key()
    }

    pub fn selected_vm<'a>(&self, vms: &'a [VmView]) -> Option<&'a VmView> {
        let name = self.selection.key()?;
        vms.iter().find(|v| v.name == name)
    }
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let theme = &app.theme;
    let focused = app.focus == Focus::Vms;
    let block = pane_block("VMs (this peer)", focused, theme);
    let status = match &app.status {
        Some(s) if !s.vms.is_empty() => s,
        other => {
            let text = if other.is_none() {
                "connecting…"
            } else {
                "no VMs on this peer"
            };
            frame.render_widget(placeholder(block, text, theme.dim), area);
            return;
        }
    };
    let rows = status.vms.iter().map(|vm| {
        Row::new([
            Cell::from(vm.name.clone()),
            Cell::from(Line::styled(vm.state.as_str(), theme.vm_state(vm.state))),
            Cell::from(Line::from(vm.vcpus.to_string()).right_aligned()),
            Cell::from(Line::from(vm.memory_mib.to_string()).right_aligned()),
            Cell::from(vm.ip.clone().unwrap_or_else(|| "-".into())),
            Cell::from(service_cell(vm.service_up, theme)),
        ])
    });
    let header = Row::new([
        Cell::from("name"),
        Cell::from("state"),
        Cell::from(Line::from("cpu").right_aligned()),
        Cell::from(Line::from("MiB").right_aligned()),
        Cell::from("ip"),
        Cell::from("http"),
    ])
    .style(theme.table_header);
    let table = Table::new(
        rows,
        [
            Constraint::Fill(1),
            Constraint::Length(7),
            Constraint::Length(3),
            Constraint::Length(6),
            Constraint::Max(15),
            Constraint::Length(4),
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
        Style::new()
    });
    let mut state = TableState::default().with_selected(app.vms.selection.index());
    frame.render_stateful_widget(table, area, &mut state);
}

/// Whether the guest's service answered the hosting peer's last probe.
fn service_cell(up: Option<bool>, theme: &crate::tui::Theme) -> Line<'static> {
    match up {
        Some(true) => Line::styled("up", theme.vm_state(crate::model::VmState::Running)),
        Some(false) => Line::styled("down", theme.vm_state(crate::model::VmState::Crashed)),
        None => Line::styled("-", theme.dim),
    }
}
