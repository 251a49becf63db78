//! The log pane: tracing events collected by tui-logger.

use ratatui::Frame;
use ratatui::layout::Rect;
use tui_logger::{TuiLoggerLevelOutput, TuiLoggerWidget};

use super::pane_block;
use crate::tui::app::App;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let theme = &app.theme;
    let widget = TuiLoggerWidget::default()
        .block(pane_block("Log", false, theme))
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
        .output_line(false);
    frame.render_widget(widget, area);
}
