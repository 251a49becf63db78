//! One module per pane. Each pane owns the state only it needs (a selection,
//! say) and draws itself from `&App`; the reducer in `app.rs` routes actions.

pub mod boot_log;
pub mod dialog;
pub mod header;
pub mod help;
pub mod jobs;
pub mod keybar;
pub mod log;
pub mod operations;
pub mod services;
pub mod throughput;
pub mod topology;
pub mod vms;

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, BorderType, HighlightSpacing, Padding, Paragraph, Row, Table, TableState,
};

use super::app::{App, Pane};
use super::theme::Theme;

/// Draw a list as a table, building only the rows that fit (lists may hold
/// thousands), and remember where its rows are for the mouse.
#[allow(clippy::too_many_arguments)]
pub fn draw_list<'a>(
    frame: &mut Frame,
    area: Rect,
    app: &App,
    pane: Pane,
    block: Block<'a>,
    header: Row<'a>,
    widths: &[Constraint],
    len: usize,
    make_row: impl Fn(usize) -> Row<'a>,
) {
    let Some(list) = app.list(pane) else { return };
    let inner = block.inner(area);
    let rows_area = Rect {
        y: inner.y.saturating_add(1),
        height: inner.height.saturating_sub(1),
        ..inner
    };
    let offset = list.window(len, rows_area.height as usize);
    let end = len.min(offset + rows_area.height as usize);
    let rows: Vec<Row> = (offset..end).map(make_row).collect();
    let focused = app.focus == pane;
    let table = Table::new(rows, widths.to_vec())
        .header(header.style(app.theme.table_header))
        .column_spacing(1)
        .block(block)
        .highlight_symbol("▸")
        .highlight_spacing(HighlightSpacing::Always)
        .row_highlight_style(if focused {
            app.theme.selected
        } else {
            Style::new()
        });
    let selected = list
        .selection
        .index()
        .filter(|i| (offset..end).contains(i))
        .map(|i| i - offset);
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, area, &mut state);
    app.hits.borrow_mut().rows.push((pane, rows_area, offset));
}

/// The bordered block every pane sits in; the focused one stands out.
pub fn pane_block<'a>(title: &str, focused: bool, theme: &Theme) -> Block<'a> {
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

/// A list pane's block: title, the `/` filter when one is set, and a row count
/// on the right.
pub fn list_block<'a>(
    title: &str,
    focused: bool,
    filter: &str,
    shown: usize,
    total: usize,
    theme: &Theme,
) -> Block<'a> {
    let mut block = pane_block(title, focused, theme);
    if !filter.is_empty() {
        block = block.title(Line::from(Span::styled(
            format!(" /{filter} "),
            theme.filter,
        )));
    }
    let count = if shown == total {
        format!(" {total} ")
    } else {
        format!(" {shown}/{total} ")
    };
    block.title(Line::from(Span::styled(count, theme.dim)).right_aligned())
}

/// `▁▂▄█` from the last `width` values, scaled to `max` (or the values' own max).
pub fn spark(values: &[f64], width: usize, max: Option<f64>) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = &values[values.len().saturating_sub(width)..];
    let top = max
        .unwrap_or_else(|| tail.iter().copied().fold(0.0, f64::max))
        .max(f64::EPSILON);
    tail.iter()
        .map(|v| {
            let i = ((v.max(0.0) / top) * 7.0).round() as usize;
            BARS[i.min(7)]
        })
        .collect()
}

/// Bytes per second, compactly: `0`, `12K`, `3.4M`, `1.2G`.
pub fn fmt_rate(bps: f64) -> String {
    let b = bps.max(0.0);
    if b < 1000.0 {
        format!("{b:.0}")
    } else if b < 1e6 {
        format!("{:.0}K", b / 1e3)
    } else if b < 1e9 {
        format!("{:.1}M", b / 1e6)
    } else {
        format!("{:.1}G", b / 1e9)
    }
}

/// Bytes: `512B`, `12K`, `3.4M`, `1.2G`.
pub fn fmt_bytes(b: u64) -> String {
    let f = b as f64;
    if f < 1024.0 {
        format!("{b}B")
    } else if f < 1024.0 * 1024.0 {
        format!("{:.0}K", f / 1024.0)
    } else if f < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1}M", f / 1024.0 / 1024.0)
    } else {
        format!("{:.1}G", f / 1024.0 / 1024.0 / 1024.0)
    }
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
        assert_eq!(fmt_rate(0.0), "0");
        assert_eq!(fmt_rate(12_345.0), "12K");
        assert_eq!(fmt_rate(3_400_000.0), "3.4M");
        assert_eq!(fmt_bytes(3 * 1024 * 1024 + 400 * 1024), "3.4M");
    }

    #[test]
    fn sparkline_scales_to_the_max() {
        assert_eq!(spark(&[0.0, 50.0, 100.0], 10, Some(100.0)), "▁▅█");
        assert_eq!(spark(&[1.0, 2.0, 3.0, 4.0], 2, None), "▆█");
        assert_eq!(spark(&[], 5, None), "");
        assert_eq!(spark(&[0.0, 0.0], 5, None), "▁▁");
    }
}
