//! The log pane: tracing events collected by tui-logger. The level shown is
//! changed with log_more/log_less; log_targets opens the target selector, where
//! ↑/↓ pick a target and ←/→ set its own level.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::widgets::BorderType;
use tui_logger::{TuiLoggerLevelOutput, TuiLoggerSmartWidget, TuiLoggerWidget};

use super::pane_block;
use crate::tui::app::{App, Pane};

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let theme = &app.theme;
    let focused = app.focus == Pane::Log;
    let title = format!("Log ≥ {}", app.log_level.as_str().to_lowercase());
    if app.log_targets && area.width >= 60 {
        let widget = TuiLoggerSmartWidget::default()
            .title_log(title)
            .title_target("Targets (←/→ level)")
            .border_style(if focused {
                theme.border_focused
            } else {
                theme.border
            })
            .border_type(if focused {
                BorderType::Thick
            } else {
                BorderType::Rounded
            })
            .highlight_style(theme.selected)
            .style_error(theme.log_error)
            .style_warn(theme.log_warn)
            .style_info(theme.log_info)
            .style_debug(theme.log_debug)
            .style_trace(theme.log_trace)
            .output_separator(' ')
            .output_timestamp(Some("%H:%M:%S".to_string()))
            .output_level(Some(TuiLoggerLevelOutput::Abbreviated))
            .output_target(false)
            .output_file(false)
            .output_line(false)
            .state(&app.log);
        frame.render_widget(widget, area);
        return;
    }
    let widget = TuiLoggerWidget::default()
        .block(pane_block(&title, focused, theme))
        .style_error(theme.log_error)
        .style_warn(theme.log_warn)
        .style_info(theme.log_info)
        .style_debug(theme.log_debug)
        .style_trace(theme.log_trace)
        .output_separator(' ')
        .output_timestamp(Some("%H:%M:%S".to_string()))
        .output_level(Some(TuiLoggerLevelOutput::Abbreviated))
        .output_target(false)
        .output_file(false)
        .output_line(false)
        .state(&app.log);
    frame.render_widget(widget, area);
}
