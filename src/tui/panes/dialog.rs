//! Dialogs: the peer picker shown while choosing a migration target, and a
//! peer's details (Enter in the topology).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, List, ListItem, ListState};

use super::{centered, fmt_ms};
use crate::model::{Status, short_peer_id};
use crate::tui::app::{App, Mode};
use ratatui::widgets::{Paragraph, Wrap};

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    if let Mode::Detail { peer_id } = &app.mode {
        if let Some(status) = &app.status {
            draw_detail(frame, area, app, status, peer_id);
        }
        return;
    }
    let Mode::PickPeer {
        vm,
        replicate,
        candidates,
        selected,
    } = &app.mode
    else {
        return;
    };
    let theme = &app.theme;
    let verb = if *replicate { "Replicate" } else { "Migrate" };
    let title = format!(" {verb} {vm} to… ");
    let name_w = candidates
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(8);
    let items: Vec<ListItem> = candidates
        .iter()
        .map(|c| {
            let latency = c
                .latency_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{} ms", fmt_ms(ms)));
            ListItem::new(Line::from(vec![
                Span::raw(format!("{:<name_w$}", c.name)),
                Span::styled(format!("  {latency:>8}"), theme.dim),
            ]))
        })
        .collect();
    let width = (name_w as u16 + 16).max(title.chars().count() as u16 + 4);
    let height = candidates.len() as u16 + 2;
    let rect = centered(area, width, height);
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(theme.dialog_border)
        .title(Span::styled(title, theme.title_focused));
    let list = List::new(items)
        .block(block)
        .highlight_symbol("▸ ")
        .highlight_style(theme.selected);
    let mut state = ListState::default().with_selected(Some(*selected));
    frame.render_widget(Clear, rect);
    frame.render_stateful_widget(list, rect, &mut state);
}

/// Everything known about one peer: identity, addresses, load, VMs, services.
fn draw_detail(frame: &mut Frame, area: Rect, app: &App, status: &Status, peer_id: &str) {
    let theme = &app.theme;
    let local = status.local.peer_id == peer_id;
    let peer = status.peers.iter().find(|p| p.peer_id == peer_id);
    let field = |k: &str, v: String| {
        Line::from(vec![
            Span::styled(format!("{k:<10}"), theme.dim),
            Span::raw(v),
        ])
    };
    let dash = || "-".to_string();
    let mut lines = vec![field("peer id", peer_id.to_string())];
    let (name, addrs, vms): (String, Vec<String>, Vec<String>) = if local {
        (
            format!("{} (this peer)", status.local.nick),
            status.local.listen_addrs.clone(),
            status.vms.iter().map(|v| v.name.to_string()).collect(),
        )
    } else if let Some(p) = peer {
        (
            p.display_name(),
            p.addrs.clone(),
            p.vms.iter().flatten().map(ToString::to_string).collect(),
        )
    } else {
        (short_peer_id(peer_id), vec![], vec![])
    };
    lines.insert(0, field("name", name));
    if local {
        lines.push(field(
            "libvirt",
            format!("{} (accel {})", status.local.hypervisor, status.local.accel),
        ));
        if let Some(h) = &status.local.host {
            lines.push(field(
                "host",
                format!(
                    "{} cpus, {:.0}% cpu, load {:.2}, mem {}/{} MiB",
                    h.cpus, h.cpu_pct, h.load1, h.mem_used_mib, h.mem_total_mib
                ),
            ));
        }
    }
    if let Some(p) = peer {
        lines.push(field("link", {
            let via = match (&p.relayed_via, p.connected) {
                (Some(relay), true) => {
                    let name = status
                        .peers
                        .iter()
                        .find(|q| &q.peer_id == relay)
                        .map_or_else(|| short_peer_id(relay), |q| q.display_name());
                    format!(" through relay {name}")
                }
                _ => String::new(),
            };
            match (p.connected, p.latency_ms) {
                (true, Some(ms)) => format!("connected{via}, {} ms", fmt_ms(ms)),
                (true, None) => format!("connected{via}"),
                (false, _) => "not connected".into(),
            }
        }));
        lines.push(field(
            "load",
            p.load.as_ref().map_or_else(dash, |l| {
                format!(
                    "{:.0}% cpu, {} running VMs, {} connections",
                    l.cpu_pct, l.running_vms, l.connections
                )
            }),
        ));
        lines.push(field("links", p.links.len().to_string()));
    }
    lines.push(field(
        "protocols",
        "tcp + membership proof + noise + yamux".into(),
    ));
    lines.push(field(
        "addresses",
        if addrs.is_empty() {
            dash()
        } else {
            addrs.join(" ")
        },
    ));
    lines.push(field(
        "VMs",
        if vms.is_empty() {
            dash()
        } else {
            vms.join(", ")
        },
    ));
    let services: Vec<String> = status
        .services
        .iter()
        .filter(|s| s.providers.iter().any(|p| p.peer_id == peer_id))
        .map(|s| format!("{} ({})", s.name, s.kind))
        .collect();
    lines.push(field(
        "services",
        if services.is_empty() {
            dash()
        } else {
            services.join(", ")
        },
    ));
    let width = area.width.saturating_sub(4).min(90);
    let height = (lines.len() as u16 + 4).min(area.height);
    let rect = centered(area, width, height);
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(theme.dialog_border)
        .title(Span::styled(" Peer ", theme.title_focused))
        .title_bottom(Line::styled(" Esc close ", theme.dim).right_aligned());
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block),
        rect,
    );
}
