//! One module per pane. Each pane owns the state only it needs (a selection,
//! say) and draws itself from `&App`; the reducer in `app.rs` routes actions.

pub mod dialog;
pub mod header;
pub mod help;
pub mod keybar;
pub mod log;
pub mod operations;
pub mod peers;
pub mod vms;

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Padding, Paragraph};

use super::theme::Theme;

/// The bordered block every pane sits in; the focused one stands out.
pub fn pane_block<'a>(title: &'a str, focused: bool, theme: &Theme) -> Block<'a> {
    let (border, title_style) = if focused {
        (theme.border_focused, theme.title_focused)
    } else {
        (theme.border, theme.title)
    };
    Block::bordered()
        .border_type(if focused {
            BorderType::Thick
        } else {
            BorderType::Rounded
        })
        .border_style(border)
        .title(Line::from(Span::styled(format!(" {title} "), title_style)))
}

/// A pane showing only a short dim note ("connecting…", "no VMs").
pub fn placeholder<'a>(block: Block<'a>, text: &'a str, style: Style) -> Paragraph<'a> {
    Paragraph::new(Line::styled(text, style)).block(block.padding(Padding::horizontal(1)))
}

/// A `width` x `height` rectangle centred in `area` (clipped to it).
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [rect] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    rect
}

/// A selection kept by key (a VM name, a peer id) so it stays on the same item
/// when a new snapshot reorders rows, falling back to the same position when
/// the item goes away.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    key: Option<String>,
    index: usize,
}

impl Selection {
    /// Re-anchor on the new list of row keys.
    pub fn sync<'a>(&mut self, keys: impl ExactSizeIterator<Item = &'a str>) {
        let keys: Vec<&str> = keys.collect();
        if keys.is_empty() {
            *self = Selection::default();
            return;
        }
        if let Some(i) = self
            .key
            .as_deref()
            .and_then(|k| keys.iter().position(|x| *x == k))
        {
            self.index = i;
        } else {
            self.index = self.index.min(keys.len() - 1);
            self.key = Some(keys[self.index].to_string());
        }
    }

    pub fn move_by<'a>(&mut self, keys: impl ExactSizeIterator<Item = &'a str>, delta: isize) {
        let keys: Vec<&str> = keys.collect();
        if keys.is_empty() {
            return;
        }
        let i = self.index.saturating_add_signed(delta).min(keys.len() - 1);
        self.index = i;
        self.key = Some(keys[i].to_string());
    }

    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Row index to highlight, if anything is selected.
    pub fn index(&self) -> Option<usize> {
        self.key.as_ref().map(|_| self.index)
    }
}

/// Milliseconds for a narrow column: `0.4`, `12`, `1250`.
pub fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// Seconds as `4.2s`, `1m05s`, `2h03m`.
pub fn fmt_elapsed(s: f64) -> String {
    let s = s.max(0.0);
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        let t = s as u64;
        format!("{}m{:02}s", t / 60, t % 60)
    } else {
        let t = s as u64;
        format!("{}h{:02}m", t / 3600, (t % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_keeps_key_then_position() {
        let mut s = Selection::default();
        s.sync(["a", "b", "c"].into_iter());
        assert_eq!((s.key(), s.index()), (Some("a"), Some(0)));
        s.move_by(["a", "b", "c"].into_iter(), 2);
        assert_eq!(s.key(), Some("c"));
        s.sync(["c", "a"].into_iter());
        assert_eq!(s.index(), Some(0));
        s.sync(["x"].into_iter());
        assert_eq!((s.key(), s.index()), (Some("x"), Some(0)));
        s.sync([].into_iter());
        assert_eq!(s.index(), None);
        s.move_by(["a"].into_iter(), -1);
        assert_eq!(s.key(), Some("a"));
    }

    #[test]
    fn durations_and_latencies_format_compactly() {
        assert_eq!(fmt_ms(0.42), "0.4");
        assert_eq!(fmt_ms(48.0), "48");
        assert_eq!(fmt_elapsed(4.23), "4.2s");
        assert_eq!(fmt_elapsed(65.0), "1m05s");
        assert_eq!(fmt_elapsed(7380.0), "2h03m");
    }
}
