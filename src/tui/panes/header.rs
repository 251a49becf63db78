//! The top line: who we are, how big the overlay is, how to get help.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::keybar::hint_spans;
use crate::model::{HypervisorOrigin, Reachability, short_peer_id};
use crate::tui::action::Action;
use crate::tui::app::{App, Link};

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let theme = &app.theme;
    let mut left = vec![Span::styled(app.opts.title.clone(), theme.header)];
    let gap = || Span::raw("  ");
    match &app.status {
        None => {
            left.push(gap());
            left.push(Span::styled("connecting…", theme.message));
        }
        Some(status) => {
            let local = &status.local;
            let connected = status
                .peers
                .iter()
                .filter(|p| p.connected && p.peer_id != local.peer_id)
                .count();
            left.push(gap());
            left.push(Span::styled("peer ", theme.header_dim));
            if local.nick.is_empty() {
                left.push(Span::styled(
                    short_peer_id(&local.peer_id),
                    theme.local_peer,
                ));
            } else {
                left.push(Span::styled(local.nick.clone(), theme.local_peer));
                left.push(Span::styled(
                    format!(" ({})", short_peer_id(&local.peer_id)),
                    theme.header_dim,
                ));
            }
            // The host's own libvirt (its VMs, its networks) must be obvious;
            // a private daemon is the quiet default.
            if local.hypervisor_origin != HypervisorOrigin::Private {
                left.push(gap());
                left.push(Span::styled("libvirt ", theme.header_dim));
                left.push(Span::raw(local.hypervisor.clone()));
            }
            if local.libvirt.lost.is_some() {
                left.push(gap());
                left.push(Span::styled("libvirt: reconnecting", theme.op_failed));
            } else if local.libvirt.not_answering_s.is_some() {
                left.push(gap());
                left.push(Span::styled("libvirt: not answering", theme.op_failed));
            }
            left.push(gap());
            left.push(Span::styled("overlay: ", theme.header_dim));
            let plural = if connected == 1 { "peer" } else { "peers" };
            left.push(Span::raw(format!("{connected} {plural}")));
            // Only worth a word once AutoNAT has an answer.
            let reach = &local.reachability;
            if *reach != Reachability::Unknown {
                left.push(Span::styled(
                    format!(" ({})", reach.word()),
                    theme.header_dim,
                ));
            }
            left.push(gap());
            left.push(Span::styled("vms: ", theme.header_dim));
            left.push(Span::raw(status.vms.len().to_string()));
            left.push(gap());
            left.push(Span::styled("services: ", theme.header_dim));
            left.push(Span::raw(status.services.len().to_string()));
            if let Some(h) = &status.local.host {
                left.push(gap());
                left.push(Span::styled("cpu ", theme.header_dim));
                left.push(Span::raw(format!("{:.0}%", h.cpu_pct)));
            }
        }
    }
    if app.link == Link::Closed {
        left.push(gap());
        left.push(Span::styled("node stopped", theme.op_failed));
    }
    let attached = [
        gap(),
        Span::styled(format!("[{}]", app.opts.attached_to), theme.header_dim),
    ];

    let right: Vec<Span> = hint_spans(
        &app.keymap,
        theme,
        &[
            (&[Action::Help], "help"),
            (&[Action::Command], "command"),
            (&[Action::Quit], "quit"),
        ],
    );
    let width = |spans: &[Span]| spans.iter().map(Span::width).sum::<usize>();
    let avail = area.width as usize;
    // Drop the least useful parts first when the line is narrow.
    if width(&left) + width(&attached) + width(&right) + 2 <= avail {
        left.extend(attached);
    }
    let mut spans = left;
    if width(&spans) + width(&right) + 2 <= avail {
        let pad = avail - width(&spans) - width(&right);
        spans.push(Span::raw(" ".repeat(pad)));
        spans.extend(right);
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}
