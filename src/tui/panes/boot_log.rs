//! A VM's boot log over the panes (`boot_log` key): the end of the file its
//! serial console is logged to on its host, scrolled with the usual keys.

use ratatui::Frame;
use ratatui::layout::{Margin, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph};

use crate::api::BOOT_LOG_TAIL;
use crate::tui::app::{App, Mode};

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let Mode::BootLog(view) = &app.mode else {
        return;
    };
    let theme = &app.theme;
    let rect = area.inner(Margin::new(2, 1));
    if rect.width < 10 || rect.height < 4 {
        return;
    }
    let log = &view.log;
    let height = rect.height.saturating_sub(2) as usize;
    let top = view.window(height);
    let part = if log.size > BOOT_LOG_TAIL {
        format!("last {} of {}", size(log.text.len() as u64), size(log.size))
    } else {
        size(log.size)
    };
    let title = format!(" Boot log of {} on {} ({part}) ", log.vm, log.host);
    let end = (top + height).min(view.lines.len());
    let position = format!(" {}-{} of {} lines ", top + 1, end, view.lines.len());
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(theme.dialog_border)
        .title(Span::styled(title, theme.title_focused))
        .title_bottom(Line::styled(format!(" {} ", log.path), theme.dim))
        .title_bottom(Line::styled(position, theme.dim).right_aligned());
    let lines: Vec<Line> = if view.lines.is_empty() {
        vec![Line::styled("(the log is empty)", theme.dim)]
    } else {
        view.lines[top..end]
            .iter()
            .map(|l| Line::raw(l.as_str()))
            .collect()
    };
    frame.render_widget(Clear, rect);
    frame.render_widget(Paragraph::new(lines).block(block), rect);
}

fn size(bytes: u64) -> String {
    if bytes < 10 * 1024 {
        format!("{bytes} B")
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
