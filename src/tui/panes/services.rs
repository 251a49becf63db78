//! Services: what the overlay offers, with providers, the best one (this peer's
//! own, else the lowest latency), its latency and load, and our consumptions.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Row};

use super::{draw_list, fmt_bytes, fmt_ms, list_block, pane_block, placeholder};
use crate::tui::app::{App, Pane};
use crate::tui::rows::{best_provider, consumptions_of, service_rows};

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let theme = &app.theme;
    let focused = app.focus == Pane::Services;
    let Some(status) = &app.status else {
        let block = pane_block("Services", focused, theme);
        frame.render_widget(placeholder(block, "connecting…", theme.dim), area);
        return;
    };
    let rows = service_rows(status, &app.services.filter);
    let block = list_block(
        "Services (overlay)",
        focused,
        &app.services.filter,
        rows.len(),
        status.services.len(),
        theme,
    );
    if rows.is_empty() {
        let text = if status.services.is_empty() {
            "no services discovered yet"
        } else {
            "no service matches the filter (Esc clears it)"
        };
        frame.render_widget(placeholder(block, text, theme.dim), area);
        return;
    }
    let wide = area.width >= 90;
    let mut header = vec!["name", "type", "prov", "best", "ms", "load"];
    let mut widths = vec![
        Constraint::Fill(1),
        Constraint::Length(6),
        Constraint::Length(4),
        Constraint::Fill(1),
        Constraint::Length(5),
        Constraint::Length(4),
    ];
    header.push(if wide { "consumed at" } else { "use" });
    widths.push(if wide {
        Constraint::Min(30)
    } else {
        Constraint::Length(5)
    });
    let header = Row::new(header.into_iter().map(Cell::from));
    draw_list(
        frame,
        area,
        app,
        Pane::Services,
        block,
        header,
        &widths,
        rows.len(),
        |i| {
            let s = rows[i];
            let best = best_provider(s);
            let best_name = best.map_or_else(
                || "-".to_string(),
                |p| {
                    let who = if p.local {
                        "self".to_string()
                    } else {
                        p.peer_nick.clone()
                    };
                    match &p.vm {
                        Some(vm) => format!("{who}/{vm}"),
                        None => format!("{who} (host)"),
                    }
                },
            );
            let latency = match best {
                Some(p) if p.local => "local".into(),
                _ => best
                    .and_then(|p| p.latency_ms)
                    .map_or_else(|| "-".into(), fmt_ms),
            };
            let load = best
                .and_then(|p| p.load.as_ref())
                .map_or_else(|| "-".into(), |l| format!("{:.0}%", l.cpu_pct));
            let uses = consumptions_of(status, &s.name);
            let active: u64 = uses.iter().map(|c| c.connections_active).sum();
            let consumed = if uses.is_empty() {
                Line::styled("-", theme.dim)
            } else if wide {
                let listens: Vec<&str> = uses.iter().map(|c| c.listen.as_str()).collect();
                let sent: u64 = uses.iter().map(|c| c.bytes_to_service).sum();
                let got: u64 = uses.iter().map(|c| c.bytes_from_service).sum();
                let errors: u64 = uses.iter().map(|c| c.errors).sum();
                // Refused or failed connections: the reason is in the log and `status`.
                let failed = if errors > 0 {
                    format!(" {errors}err")
                } else {
                    String::new()
                };
                Line::styled(
                    format!(
                        "{} {active}c{failed} ↑{} ↓{}",
                        listens.join(","),
                        fmt_bytes(sent),
                        fmt_bytes(got)
                    ),
                    if errors > 0 {
                        theme.log_warn
                    } else {
                        theme.connected
                    },
                )
            } else {
                Line::styled(format!("{active}"), theme.connected)
            };
            Row::new([
                Cell::from(s.name.to_string()),
                Cell::from(Line::styled(s.kind.clone(), theme.dim)),
                Cell::from(Line::from(s.providers.len().to_string()).right_aligned()),
                Cell::from(best_name),
                Cell::from(Line::from(latency).right_aligned()),
                Cell::from(Line::from(load).right_aligned()),
                Cell::from(consumed),
            ])
        },
    );
}
