//! The help overlay, generated from the keymap in force, and the commands.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph};

use super::centered;
use crate::tui::action::{Action, Group};
use crate::tui::app::App;
use crate::tui::cmdline::{COMMANDS, usage};

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    if !app.show_help {
        return;
    }
    let theme = &app.theme;
    let groups = [Group::Operate, Group::Navigate, Group::View, Group::Console];
    let key_w = Action::ALL
        .iter()
        .map(|a| keys_of(app, *a).chars().count())
        .max()
        .unwrap_or(0)
        .min(12);
    let mut columns: Vec<Vec<Line>> = groups
        .iter()
        .map(|g| {
            let mut lines = vec![Line::styled(format!(" {}", g.title()), theme.title_focused)];
            lines.extend(Action::ALL.iter().filter(|a| a.group() == *g).map(|a| {
                Line::from(vec![
                    Span::styled(format!(" {:<key_w$} ", keys_of(app, *a)), theme.key),
                    Span::styled(a.description(), theme.key_label),
                ])
            }));
            lines
        })
        .collect();
    let mut commands = vec![Line::styled(
        " Commands (: then Tab completes)",
        theme.title_focused,
    )];
    commands.extend(COMMANDS.iter().map(|(name, _, what)| {
        Line::from(vec![
            Span::styled(
                format!(" :{:<26}", usage(name).unwrap_or_default()),
                theme.key,
            ),
            Span::styled(*what, theme.key_label),
        ])
    }));
    columns.push(commands);
    let col_w = columns.iter().flatten().map(Line::width).max().unwrap_or(0) as u16 + 1;
    // Two columns when they fit side by side, else one long list.
    let two = area.width >= col_w * 2 + 2;
    let lines: Vec<Line> = if two {
        let (left, right): (Vec<_>, Vec<_>) = {
            let mut l = Vec::new();
            let mut r = Vec::new();
            for (i, col) in columns.into_iter().enumerate() {
                let side = if i < 2 { &mut l } else { &mut r };
                if !side.is_empty() {
                    side.push(Line::default());
                }
                side.extend(col);
            }
            (l, r)
        };
        let rows = left.len().max(right.len());
        (0..rows)
            .map(|i| {
                let mut spans = Vec::new();
                let l = left.get(i).cloned().unwrap_or_default();
                let pad = col_w as usize - l.width().min(col_w as usize);
                spans.extend(l.spans);
                spans.push(Span::raw(" ".repeat(pad)));
                if let Some(r) = right.get(i) {
                    spans.extend(r.spans.clone());
                }
                Line::from(spans)
            })
            .collect()
    } else {
        columns
            .into_iter()
            .flat_map(|c| c.into_iter().chain([Line::default()]))
            .collect()
    };
    let mut lines = lines;
    lines.push(Line::styled(
        " Generated from the keymap in force (peervisor keys prints it).",
        theme.dim,
    ));
    let width = lines.iter().map(Line::width).max().unwrap_or(0) as u16 + 3;
    let height = lines.len() as u16 + 2;
    let rect = centered(area, width, height);
    // Scrolls with ↑/↓ when it does not fit.
    let room = rect.height.saturating_sub(2);
    let max_scroll = (lines.len() as u16).saturating_sub(room);
    let scroll = app.help_scroll.min(max_scroll);
    let mut block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(theme.dialog_border)
        .title(Span::styled(" Help ", theme.title_focused));
    if max_scroll > 0 {
        block = block.title_bottom(
            Line::styled(format!(" ↑↓ scroll {}/{} ", scroll, max_scroll), theme.dim)
                .right_aligned(),
        );
    }
    frame.render_widget(Clear, rect);
    frame.render_widget(Paragraph::new(lines).scroll((scroll, 0)).block(block), rect);
}

fn keys_of(app: &App, action: Action) -> String {
    let keys: Vec<String> = app.keymap.keys(action).iter().map(|k| k.label()).collect();
    if keys.is_empty() {
        "(unbound)".into()
    } else {
        keys.join(" ")
    }
}
