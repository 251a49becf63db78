//! The two bottom lines: the status line (command line, filter, prompts,
//! messages) and the key bar. Every key shown comes from the active keymap.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::tui::action::Action;
use crate::tui::app::{App, MessageKind, Mode, Pane};
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

/// The hints for what the keys do right now, most useful first (the line is
/// cut at the terminal's width).
fn current_hints(app: &App) -> Vec<Span<'static>> {
    use Action::*;
    let (keymap, theme) = (&app.keymap, &app.theme);
    if app.show_help {
        return hint_spans(
            keymap,
            theme,
            &[
                (&[Up, Down], "scroll"),
                (&[Help], "close help"),
                (&[Quit], "quit"),
            ],
        );
    }
    let text = |s: &'static str| vec![Span::styled(s, theme.key_label)];
    match app.mode {
        Mode::Command(_) => text("Enter run  Tab complete  ↑↓ history  C-w word  Esc cancel"),
        Mode::Filter(_) => text("type to filter  Enter keep  Esc clear"),
        Mode::Detail { .. } => hint_spans(keymap, theme, &[(&[Cancel], "close")]),
        Mode::BootLog(_) => hint_spans(
            keymap,
            theme,
            &[
                (&[Up, Down], "scroll"),
                (&[PageDown], "page"),
                (&[Top], "start"),
                (&[Bottom], "end"),
                (&[Cancel], "close"),
            ],
        ),
        Mode::PickPeer { .. } => hint_spans(
            keymap,
            theme,
            &[
                (&[Up, Down], "select"),
                (&[Confirm], "pick"),
                (&[Cancel], "cancel"),
            ],
        ),
        Mode::Confirm { .. } => {
            hint_spans_with(theme, &[(&[Confirm], "yes"), (&[Cancel], "no")], |a| {
                keymap.prompt_key(a)
            })
        }
        Mode::Normal => {
            let pane: &[Hint] = match app.focus {
                Pane::Topology => &[(&[Confirm], "details"), (&[Filter], "filter")],
                Pane::Throughput if app.show_jobs => &[(&[ToggleJobs], "vm charts")],
                Pane::Vms | Pane::Throughput => &[
                    (&[Migrate], "migrate"),
                    (&[SerialConsole], "console"),
                    (&[StartStop], "start/stop"),
                    (&[PauseResume], "pause"),
                    (&[BootLog], "boot log"),
                    (&[Delete], "delete"),
                    (&[Sort], "sort"),
                    (&[ToggleOverlay], "all"),
                    (&[ToggleJobs], "jobs"),
                    (&[Filter], "filter"),
                ],
                Pane::Services => &[(&[Consume], "consume"), (&[Filter], "filter")],
                Pane::Operations => &[(&[Delete], "abort"), (&[Filter], "filter")],
                Pane::Log => &[
                    (&[LogMore, LogLess], "level"),
                    (&[LogTargets], "targets"),
                    (&[PageUp, PageDown], "scroll"),
                ],
            };
            let common: &[Hint] = &[
                (&[FocusNext], "pane"),
                (&[Up, Down], "select"),
                (&[Zoom], "zoom"),
                (&[Command], "command"),
                (&[Help], "help"),
                (&[Quit], "quit"),
            ];
            let mut hints = pane.to_vec();
            hints.extend_from_slice(common);
            hint_spans(keymap, theme, &hints)
        }
    }
}

/// What the status line says: the line being typed, a pending confirmation,
/// else the latest message, else the node's most recent dial failure.
fn status_line(app: &App) -> Line<'static> {
    let theme = &app.theme;
    match &app.mode {
        Mode::Command(editor) => {
            let mut spans = vec![
                Span::styled(":", theme.key),
                Span::raw(editor.text.clone()),
                Span::styled("█", theme.dim),
            ];
            if !editor.candidates.is_empty() {
                spans.push(Span::styled(
                    format!("   {}", editor.candidates.join(" ")),
                    theme.dim,
                ));
            } else if editor.text.trim().is_empty() {
                spans.push(Span::styled(
                    "  migrate VM PEER · consume SERVICE [PORT] · expose NAME HOST:PORT · theme NAME",
                    theme.dim,
                ));
            }
            return Line::from(spans);
        }
        Mode::Filter(editor) => {
            return Line::from(vec![
                Span::styled(format!("/{}: ", app.focus.title()), theme.key),
                Span::styled(editor.text.clone(), theme.filter),
                Span::styled("█", theme.dim),
            ]);
        }
        Mode::Confirm { question, .. } => {
            let key = |a| {
                app.keymap
                    .prompt_key(a)
                    .map(|k| k.label())
                    .unwrap_or_else(|| a.to_string())
            };
            let text = format!(
                " {question} ({}/{}) ",
                key(Action::Confirm),
                key(Action::Cancel)
            );
            return Line::from(Span::styled(text, theme.prompt));
        }
        _ => {}
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
    frame.render_widget(
        Paragraph::new(status_line(app)).wrap(ratatui::widgets::Wrap { trim: false }),
        area,
    );
}

/// Lines the status line needs at `width`: long messages (a file error, say)
/// wrap onto up to three lines instead of being cut.
pub fn status_height(app: &App, width: u16) -> u16 {
    let (w, width) = (status_line(app).width() as u16, width.max(1));
    // One spare line: wrapping at word boundaries needs more than width alone says.
    (w.div_ceil(width) + u16::from(w > width)).clamp(1, 3)
}

pub fn draw_keys(frame: &mut Frame, area: Rect, app: &App) {
    frame.render_widget(Paragraph::new(Line::from(current_hints(app))), area);
}
