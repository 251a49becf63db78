//! VMs: this peer's (or, toggled, the whole overlay's) in a sortable table with
//! live figures and a CPU sparkline. Figures show "-" until the node has them.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row};

use super::{draw_list, fmt_rate, list_block, pane_block, placeholder, spark};
use crate::model::{VmStats, VmView};
use crate::tui::app::{App, Pane};
use crate::tui::rows::{VmRow, VmSort};

/// Width of the CPU sparkline column (samples shown).
const SPARK: usize = 10;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let theme = &app.theme;
    let focused = app.focus == Pane::Vms;
    let scope = if app.vms_all { "overlay" } else { "this peer" };
    let title = format!("VMs ({scope}, by {})", app.vm_sort.label());
    let Some(status) = &app.status else {
        let block = pane_block(&title, focused, theme);
        frame.render_widget(placeholder(block, "connecting…", theme.dim), area);
        return;
    };
    let rows = app.vm_rows(status);
    let total = if app.vms_all {
        status.vms.len()
            + status
                .peers
                .iter()
                .filter(|p| p.peer_id != status.local.peer_id)
                .filter_map(|p| p.vms.as_ref().map(Vec::len))
                .sum::<usize>()
    } else {
        status.vms.len()
    };
    let block = list_block(&title, focused, &app.vms.filter, rows.len(), total, theme);
    if rows.is_empty() {
        let text = if total == 0 {
            "no VMs on this peer (create one: peervisor vm create NAME)"
        } else {
            "no VM matches the filter (Esc clears it)"
        };
        frame.render_widget(placeholder(block, text, theme.dim), area);
        return;
    }
    // Columns by importance: narrow terminals keep the first ones.
    let wide = area.width >= 110;
    let show_host = app.vms_all || wide;
    let mut headers: Vec<(&str, Constraint, VmSort)> = vec![
        ("name", Constraint::Fill(1), VmSort::Name),
        ("state", Constraint::Length(7), VmSort::State),
        ("cpu%", Constraint::Length(5), VmSort::Cpu),
        ("mem", Constraint::Length(9), VmSort::Memory),
        ("disk r/w", Constraint::Length(11), VmSort::Disk),
        ("net rx/tx", Constraint::Length(11), VmSort::Net),
    ];
    if wide {
        headers.push(("cpu", Constraint::Length(SPARK as u16), VmSort::Cpu));
        headers.push(("services", Constraint::Max(18), VmSort::Name));
    }
    if show_host {
        headers.push(("host", Constraint::Max(12), VmSort::Host));
    }
    let sort = app.vm_sort;
    let header = Row::new(headers.iter().map(|(h, _, s)| {
        let marked = *s == sort && !matches!(*h, "cpu" | "services");
        let text = if marked {
            format!("{h}▼")
        } else {
            h.to_string()
        };
        let line = if matches!(*h, "cpu%" | "mem" | "disk r/w" | "net rx/tx") {
            Line::from(text).right_aligned()
        } else {
            Line::from(text)
        };
        Cell::from(line)
    }));
    let widths: Vec<Constraint> = headers.iter().map(|(_, c, _)| *c).collect();
    draw_list(
        frame,
        area,
        app,
        Pane::Vms,
        block,
        header,
        &widths,
        rows.len(),
        |i| vm_row(&rows[i], app, wide, show_host),
    );
}

fn vm_row<'a>(row: &VmRow, app: &App, wide: bool, show_host: bool) -> Row<'a> {
    let theme = &app.theme;
    let dash = || Cell::from(Line::styled("-", theme.dim).right_aligned());
    let right = |s: String| Cell::from(Line::from(s).right_aligned());
    let mut cells = vec![Cell::from(Line::from(name_spans(row, app)))];
    match row.view {
        None => {
            cells.push(Cell::from(Line::styled("?", theme.dim)));
            cells.extend([dash(), dash(), dash(), dash()]);
            if wide {
                cells.push(Cell::from(""));
                cells.push(Cell::from(Line::styled("-", theme.dim)));
            }
        }
        Some(vm) => {
            cells.push(Cell::from(Line::styled(
                vm.state.as_str(),
                theme.vm_state(vm.state),
            )));
            match &vm.stats {
                Some(s) => {
                    cells.push(right(
                        s.cpu_pct_guest
                            .map_or_else(|| "-".into(), |c| format!("{c:.1}")),
                    ));
                    cells.push(right(mem(vm)));
                    cells.push(right(format!(
                        "{}/{}",
                        fmt_rate(s.disk_read_bps),
                        fmt_rate(s.disk_write_bps)
                    )));
                    cells.push(right(format!(
                        "{}/{}",
                        fmt_rate(s.net_rx_bps),
                        fmt_rate(s.net_tx_bps)
                    )));
                }
                None => {
                    cells.push(dash());
                    cells.push(right(mem(vm)));
                    cells.extend([dash(), dash()]);
                }
            }
            if wide {
                let line = match &vm.history {
                    Some(h) if !h.cpu_pct_guest.is_empty() => {
                        Line::styled(spark(&h.cpu_pct_guest, SPARK, Some(100.0)), theme.chart_cpu)
                    }
                    _ => Line::styled("-", theme.dim),
                };
                cells.push(Cell::from(line));
                cells.push(Cell::from(services(vm, theme)));
            }
        }
    }
    if show_host {
        let style = if row.local {
            theme.local_peer
        } else {
            Style::new()
        };
        cells.push(Cell::from(Line::styled(row.host.clone(), style)));
    }
    Row::new(cells)
}

fn name_spans(row: &VmRow, app: &App) -> Vec<Span<'static>> {
    let mut spans = vec![Span::raw(row.name.to_string())];
    // The guest's own HTTP probe, where the node ran one.
    if let Some(up) = row.view.and_then(|v| v.service_up) {
        let (mark, style) = if up {
            (" ✓", app.theme.vm_running)
        } else {
            (" ✗", app.theme.vm_crashed)
        };
        spans.push(Span::styled(mark, style));
    }
    spans
}

/// `used/total` MiB when the guest reports use, else the configured size.
fn mem(vm: &VmView) -> String {
    match &vm.stats {
        Some(VmStats {
            mem_used_mib: Some(used),
            ..
        }) => format!("{used}/{}M", vm.memory_mib),
        _ => format!("{}M", vm.memory_mib),
    }
}

fn services(vm: &VmView, theme: &crate::tui::Theme) -> Line<'static> {
    if vm.services.is_empty() {
        return Line::styled("-", theme.dim);
    }
    let names: Vec<&str> = vm.services.iter().map(|s| s.name.as_str()).collect();
    Line::from(names.join(","))
}
