//! The peer picker shown while choosing a migration target.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, List, ListItem, ListState};

use super::{centered, fmt_ms};
use crate::tui::app::{App, Mode};

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let Mode::PickPeer {
        vm,
        candidates,
        selected,
    } = &app.mode
    else {
        return;
    };
    let theme = &app.theme;
    let title = format!(" Migrate {vm} to… ");
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
