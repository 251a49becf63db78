//! The two bottom lines: the status line (messages, confirm prompts) and the
//! key bar. Every key shown comes from the active keymap.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::tui::action::Action;
use crate::tui::app::{App, MessageKind, Mode};
use crate::tui::keymap::Keymap;
use crate::tui::theme::Theme;

/// A hint: the actions whose first keys are shown together, and a label.
pub type Hint<'a> = (&'a [Action], &'a str);

/// `m migrate  ↑↓ select` as styled spans; actions without keys are left out.
pub fn hint_spans<'a>(keymap: &Keymap, theme: &Theme, hints: &[Hint<'a>]) -> Vec<Span<'a>> {
    hint_spans_with(theme, hints, |a| keymap.primary(a))
}

fn hint_spans_with<'a>(
    theme: &Theme,
    hints: &[Hint<'a>],
    key_of: impl Fn(Action) -> Option<crate::tui::keymap::KeyBinding>,
) -> Vec<Span<'a>> {
    let mut spans = Vec::new();
    for (actions, label) in hints {
        let keys: String = actions
            .iter()
            .filter_map(|a| key_of(*a))
            .map(|k| k.label())
            .collect();
        if keys.is_empty() {
            continue;
        }
        if !spans.is_empty() {
            spans.push(Span::raw("  "));
        }
        spans.push(Span::styled(keys, theme.key));
        spans.push(Span::raw(" "));
        spans.push(Span::styled(*label, theme.key_label));
    }
    spans
}

/// The hints for what the keys do right now.
fn current_hints(app: &App) -> Vec<Span<'static>> {
    let (keymap, theme) = (&app.keymap, &app.theme);
    if app.show_help {
        return hint_spans(
            keymap,
            theme,
            &[(&[Action::Help], "close help"), (&[Action::Quit], "quit")],
        );
    }
    match app.mode {
        Mode::Normal => hint_spans(
            keymap,
            theme,
            &[
                (&[Action::Migrate], "migrate"),
                (&[Action::FocusNext], "focus"),
                (&[Action::Up, Action::Down], "select"),
                (&[Action::Help], "help"),
                (&[Action::Quit], "quit"),
            ],
        ),
        Mode::PickPeer { .. } => hint_spans(
            keymap,
            theme,
            &[
                (&[Action::Up, Action::Down], "select"),
                (&[Action::Confirm], "pick"),
                (&[Action::Cancel], "cancel"),
            ],
        ),
        Mode::Confirm { .. } => hint_spans_with(
            theme,
            &[
                (&[Action::Confirm], "migrate"),
                (&[Action::Cancel], "cancel"),
            ],
            |a| keymap.prompt_key(a),
        ),
    }
}

/// What the status line says: a pending confirmation, else the latest
/// message, else the node's most recent dial failure.
fn status_line(app: &App) -> Line<'static> {
    let theme = &app.theme;
    if let Mode::Confirm { vm, peer } = &app.mode {
        let key = |a| {
            app.keymap
                .prompt_key(a)
                .map(|k| k.label())
                .unwrap_or_else(|| a.to_string())
        };
        let text = format!(
            " Migrate {vm} to {}? ({}/{}) ",
            peer.name,
            key(Action::Confirm),
            key(Action::Cancel)
        );
        return Line::from(Span::styled(text, theme.prompt));
    }
    match &app.message {
        Some(m) => {
            let style = match m.kind {
                MessageKind::Info => theme.message,
                MessageKind::Error => theme.op_failed,
            };
            Line::from(Span::styled(m.text.clone(), style))
        }
        None => match app
            .status
            .as_ref()
            .and_then(|s| s.dial_errors.last().map(|e| (e, s.dial_errors.len())))
        {
            Some((error, n)) => {
                let more = if n > 1 {
                    format!(" (+{} more)", n - 1)
                } else {
                    String::new()
                };
                Line::from(vec![
                    Span::styled("dial: ", theme.dim),
                    Span::styled(error.clone(), theme.log_warn),
                    Span::styled(more, theme.dim),
                ])
            }
            None => Line::default(),
        },
    }
}

pub fn draw_status(frame: &mut Frame, area: Rect, app: &App) {
    frame.render_widget(Paragraph::new(status_line(app)), area);
}

pub fn draw_keys(frame: &mut Frame, area: Rect, app: &App) {
    frame.render_widget(Paragraph::new(Line::from(current_hints(app))), area);
}
