//! Topology: the overlay drawn as a graph (this peer in the middle, the others
//! around it, edges for live connections, labels with latency and load) beside
//! a list of the peers. Enter opens the selected peer's details. In a big
//! overlay the graph shows this peer's neighbourhood (the peers it is connected
//! to, and the selected one) and says how many more the list holds: a thousand
//! points on a circle would be one grey ring.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::f64::consts::TAU;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::canvas::{Canvas, Line as Edge, Points};
use ratatui::widgets::{Block, Borders, Cell, Row};

use super::{draw_list, fmt_ms, list_block, pane_block, placeholder};
use crate::model::Status;
use crate::tui::app::{App, Pane};
use crate::tui::rows::{PeerRow, filtered_peer_rows, peer_rows};

/// Above this many peers only this peer's and the selected peer's labels show.
const MAX_LABELS: usize = 24;
/// Above this many peers the graph shows only this peer's neighbourhood.
const MAX_GRAPH_PEERS: usize = 40;
/// The list needs this much width to sit beside the graph.
const LIST_WIDTH: u16 = 27;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let theme = &app.theme;
    let focused = app.focus == Pane::Topology;
    let Some(status) = &app.status else {
        let block = pane_block("Topology", focused, theme);
        frame.render_widget(placeholder(block, "connecting…", theme.dim), area);
        return;
    };
    let all = peer_rows(status);
    let rows = filtered_peer_rows(status, &app.topology.filter);
    let block = list_block(
        "Topology",
        focused,
        &app.topology.filter,
        rows.len(),
        all.len(),
        theme,
    );
    let inner = block.inner(area);
    frame.render_widget(block, area);
    // Graph beside the list when there is room, else the list alone (a graph in
    // a few cells says nothing).
    let (graph_a, list_a) = if inner.width >= LIST_WIDTH + 20 && inner.height >= 6 {
        let [g, l] =
            Layout::horizontal([Constraint::Fill(1), Constraint::Length(LIST_WIDTH)]).areas(inner);
        (Some(g), l)
    } else {
        (None, inner)
    };
    if let Some(g) = graph_a {
        draw_graph(frame, g, app, status, &all);
    }
    draw_peer_list(frame, list_a, app, &rows, graph_a.is_some());
}

/// Marks a peer reached only through a relay.
const RELAYED: &str = "⇄";

fn draw_peer_list(frame: &mut Frame, area: Rect, app: &App, rows: &[PeerRow], bordered: bool) {
    let theme = &app.theme;
    let block = if bordered {
        Block::new()
            .borders(Borders::LEFT)
            .border_style(theme.border)
    } else {
        Block::new()
    };
    let header = Row::new(["peer", "ms", "cpu%", "vms"].map(Cell::from));
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(5),
        Constraint::Length(4),
        Constraint::Length(3),
    ];
    draw_list(
        frame,
        area,
        app,
        Pane::Topology,
        block,
        header,
        &widths,
        rows.len(),
        |i| {
            let r = &rows[i];
            let (name_style, latency) = if r.is_local {
                (theme.local_peer, "self".to_string())
            } else if r.connected {
                (
                    Style::new(),
                    r.latency_ms.map_or_else(|| "-".into(), fmt_ms),
                )
            } else if r.vm_count.is_some() {
                // Heard on gossip, not linked here: the usual case in a big overlay.
                (Style::new(), "·".to_string())
            } else {
                (theme.disconnected, "off".to_string())
            };
            let cpu = r
                .load
                .as_ref()
                .map_or_else(|| "-".into(), |l| format!("{:.0}", l.cpu_pct));
            let vms = r.vm_count.map_or_else(|| "?".into(), |n| n.to_string());
            // ⇄: reached only through a relay (the peer detail names it).
            let latency = if r.relayed {
                format!("{RELAYED}{latency}")
            } else {
                latency
            };
            Row::new([
                Cell::from(Line::styled(r.name.clone(), name_style)),
                Cell::from(Line::from(latency).right_aligned()),
                Cell::from(Line::from(cpu).right_aligned()),
                Cell::from(Line::from(vms).right_aligned()),
            ])
        },
    );
}

/// Where each peer sits: this peer in the middle, the others on a circle.
fn positions(rows: &[PeerRow]) -> HashMap<&str, (f64, f64)> {
    let others = rows.len().saturating_sub(1).max(1) as f64;
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let pos = if r.is_local {
                (0.0, 0.0)
            } else {
                // From the upper left, so two peers do not sit on one line with us.
                let angle = TAU * (i - 1) as f64 / others + TAU * 3.0 / 8.0;
                (angle.cos(), angle.sin())
            };
            (r.peer_id.as_str(), pos)
        })
        .collect()
}

/// Live connections: this peer's own, and the links other peers announce.
fn edges<'a>(status: &'a Status, rows: &[PeerRow]) -> BTreeSet<(&'a str, &'a str)> {
    let known: HashSet<&str> = rows.iter().map(|r| r.peer_id.as_str()).collect();
    let local = status.local.peer_id.as_str();
    // Ordered, so overlapping edges paint the same way every frame.
    let mut set = BTreeSet::new();
    let mut add = |a: &'a str, b: &'a str| {
        if a != b && known.contains(a) && known.contains(b) {
            set.insert(if a < b { (a, b) } else { (b, a) });
        }
    };
    for p in &status.peers {
        if p.connected {
            add(local, &p.peer_id);
        }
        for l in &p.links {
            add(&p.peer_id, l);
        }
    }
    set
}

fn fg(style: Style) -> Color {
    style.fg.unwrap_or(Color::Reset)
}

/// The peers the graph draws: all of them in a small overlay; else this peer,
/// the peers connected to it (up to the bound) and the selected peer.
fn graph_rows(rows: &[PeerRow], selected: Option<&str>) -> Vec<PeerRow> {
    if rows.len() <= MAX_GRAPH_PEERS {
        return rows.to_vec();
    }
    let is_selected = |r: &PeerRow| selected == Some(r.peer_id.as_str());
    let mut shown: Vec<PeerRow> = rows
        .iter()
        .filter(|r| r.is_local || r.connected)
        .take(MAX_GRAPH_PEERS - 1)
        .cloned()
        .collect();
    if let Some(r) = rows.iter().find(|r| is_selected(r))
        && !shown.iter().any(is_selected)
    {
        shown.push(r.clone());
    }
    shown
}

fn draw_graph(frame: &mut Frame, area: Rect, app: &App, status: &Status, all: &[PeerRow]) {
    let theme = &app.theme;
    let selected = app.selected_peer();
    let rows = &graph_rows(all, selected)[..];
    let area = if rows.len() < all.len() {
        let [graph, caption] =
            Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(area);
        let hidden = all.len() - rows.len();
        let text = format!(
            "{} of {} peers; {hidden} more in the list →",
            rows.len(),
            all.len()
        );
        frame.render_widget(Line::styled(text, theme.dim).centered(), caption);
        graph
    } else {
        area
    };
    let pos = positions(rows);
    let edges = edges(status, rows);
    let labels = rows.len() <= MAX_LABELS;
    let canvas = Canvas::default()
        .marker(Marker::Braille)
        .x_bounds([-1.6, 1.6])
        .y_bounds([-1.25, 1.25])
        .paint(|ctx| {
            for (a, b) in &edges {
                let (Some(pa), Some(pb)) = (pos.get(a), pos.get(b)) else {
                    continue;
                };
                let hot = selected == Some(*a) || selected == Some(*b);
                let style = if hot {
                    theme.topo_edge_active
                } else {
                    theme.topo_edge
                };
                ctx.draw(&Edge::new(pa.0, pa.1, pb.0, pb.1, fg(style)));
            }
            ctx.layer();
            let coords: Vec<(f64, f64)> = pos.values().copied().collect();
            ctx.draw(&Points {
                coords: &coords,
                color: fg(theme.topo_node),
            });
            for r in rows {
                let Some(&(x, y)) = pos.get(r.peer_id.as_str()) else {
                    continue;
                };
                let is_selected = selected == Some(r.peer_id.as_str());
                if !(labels || r.is_local || is_selected) {
                    continue;
                }
                let style = if is_selected {
                    theme.selected
                } else if r.is_local {
                    theme.local_peer
                } else if r.connected {
                    theme.topo_node
                } else {
                    theme.disconnected
                };
                let mut spans = vec![Span::styled(format!("●{}", r.name), style)];
                let detail = match (&r.latency_ms, &r.load) {
                    (Some(ms), Some(l)) => format!(" {}ms {:.0}%", fmt_ms(*ms), l.cpu_pct),
                    (Some(ms), None) => format!(" {}ms", fmt_ms(*ms)),
                    (None, Some(l)) => format!(" {:.0}%", l.cpu_pct),
                    (None, None) => String::new(),
                };
                if !detail.is_empty() {
                    spans.push(Span::styled(detail, theme.dim));
                }
                if r.relayed {
                    spans.push(Span::styled(format!(" {RELAYED}"), theme.dim));
                }
                // Labels start at the node and run right; nodes on the right
                // half are labelled to the left so they stay inside.
                let width: usize = spans.iter().map(Span::width).sum();
                let cell_w = 3.2 / area.width.max(1) as f64;
                let lx = if x > 0.3 {
                    x - width as f64 * cell_w + cell_w
                } else {
                    x
                };
                ctx.print(lx, y, Line::from(spans));
            }
        });
    frame.render_widget(canvas, area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::testutil::sample_status;

    #[test]
    fn edges_join_this_peer_to_connected_peers_and_follow_announced_links() {
        let mut status = sample_status();
        let b = status.peers[2].peer_id.clone();
        let c = status.peers[1].peer_id.clone();
        let d = status.peers[0].peer_id.clone();
        status.peers[2].links = vec![c.clone(), "12D3KooWUnknown".into()];
        let rows = peer_rows(&status);
        let e = edges(&status, &rows);
        let local = status.local.peer_id.as_str();
        let has = |x: &str, y: &str| e.contains(&if x < y { (x, y) } else { (y, x) });
        assert!(has(local, &b) && has(local, &c) && has(&b, &c));
        assert!(!has(local, &d), "peer-d is not connected");
        assert_eq!(e.len(), 3, "links to unknown peers are left out: {e:?}");
    }

    #[test]
    fn a_peer_reached_only_through_a_relay_is_marked_relayed() {
        let mut status = sample_status();
        let relay = status.peers[1].peer_id.clone();
        status.peers[2].relayed_via = Some(relay);
        let name = status.peers[2].display_name();
        let app = crate::tui::testutil::app_with(Some(status));
        let screen = crate::tui::snapshots::render(&app, 120, 40).join("\n");
        let line = screen
            .lines()
            .find(|l| l.contains(&name))
            .unwrap_or_default();
        assert!(line.contains(&format!("{RELAYED}12")), "{screen}");
        // the list and the graph's label, nothing else
        assert_eq!(screen.matches(RELAYED).count(), 2, "{screen}");
    }
}
