//! The help overlay, generated from the keymap in force.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph};

use super::centered;
use crate::tui::action::Action;
use crate::tui::app::App;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    if !app.show_help {
        return;
    }
    let theme = &app.theme;
    let rows: Vec<(String, &str)> = Action::ALL
        .iter()
        .map(|a| {
            let keys: Vec<String> = app.keymap.keys(*a).iter().map(|k| k.label()).collect();
            let keys = if keys.is_empty() {
                "(unbound)".to_string()
            } else {
                keys.join(" ")
            };
            (keys, a.description())
        })
        .collect();
    let key_w = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut lines: Vec<Line> = rows
        .into_iter()
        .map(|(keys, desc)| {
            Line::from(vec![
                Span::styled(format!(" {keys:<key_w$}  "), theme.key),
                Span::styled(desc, theme.key_label),
            ])
        })
        .collect();
    lines.push(Line::default());
    lines.push(Line::styled(
        " Keys come from the keymap; this list is generated from it.",
        theme.dim,
    ));
    let width = lines.iter().map(Line::width).max().unwrap_or(0) as u16 + 3;
    let height = lines.len() as u16 + 2;
    let rect = centered(area, width, height);
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(theme.dialog_border)
        .title(Span::styled(" Help ", theme.title_focused));
    frame.render_widget(Clear, rect);
    frame.render_widget(Paragraph::new(lines).block(block), rect);
}
