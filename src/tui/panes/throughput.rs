//! Throughput: charts over time for the VM selected in the VM table: CPU, and
//! disk and network rates. Drawn from the history the node samples.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, LegendPosition, Paragraph};

use super::{fmt_rate, pane_block, placeholder, spark};
use crate::model::VmHistory;
use crate::tui::app::{App, Pane};

/// A chart line: legend name, (seconds ago, value) points, style.
type Series<'a> = (&'a str, Vec<(f64, f64)>, Style);

/// The same, borrowed for drawing.
type SeriesRef<'a> = (&'a str, &'a [(f64, f64)], Style);

/// Below this many rows the charts become sparklines.
pub(super) const MIN_CHART_HEIGHT: u16 = 8;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let theme = &app.theme;
    if app.show_jobs {
        super::jobs::draw(frame, area, app);
        return;
    }
    let focused = app.focus == Pane::Throughput;
    let Some(key) = app.selected_vm_key() else {
        let block = pane_block("Throughput", focused, theme);
        let text = if app.status.is_none() {
            "connecting…"
        } else {
            "select a VM to see its throughput"
        };
        frame.render_widget(placeholder(block, text, theme.dim), area);
        return;
    };
    let title = format!("Throughput: {key}");
    let block = pane_block(&title, focused, theme);
    let vm = app.selected_vm();
    let history = vm
        .and_then(|v| v.history.as_ref())
        .filter(|h| !h.cpu_pct_guest.is_empty());
    let Some(history) = history else {
        let text = if vm.is_none() {
            "runs on another peer: waiting for its host's figures"
        } else {
            "no data yet (figures appear after two samples)"
        };
        frame.render_widget(placeholder(block, text, theme.dim), area);
        return;
    };
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let now = vm.and_then(|v| v.stats.as_ref());
    let [top, charts] = Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(inner);
    let summary = match now {
        Some(s) => Line::from(vec![
            Span::styled(
                s.cpu_pct_guest
                    .map_or_else(|| " cpu -".into(), |c| format!(" cpu {c:.1}%")),
                theme.chart_cpu,
            ),
            Span::styled(
                format!("  disk r {}/s", fmt_rate(s.disk_read_bps)),
                theme.chart_disk_read,
            ),
            Span::styled(
                format!(" w {}/s", fmt_rate(s.disk_write_bps)),
                theme.chart_disk_write,
            ),
            Span::styled(
                format!("  net rx {}/s", fmt_rate(s.net_rx_bps)),
                theme.chart_net_rx,
            ),
            Span::styled(
                format!(" tx {}/s", fmt_rate(s.net_tx_bps)),
                theme.chart_net_tx,
            ),
        ]),
        None => Line::styled(" -", theme.dim),
    };
    frame.render_widget(Paragraph::new(summary), top);
    if charts.height < MIN_CHART_HEIGHT {
        draw_sparklines(frame, charts, app, history);
        return;
    }
    let [cpu_a, io_a] = if charts.width >= 70 {
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(charts)
    } else {
        Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(charts)
    };
    let span_s = history.interval_s * history.cpu_pct_guest.len().saturating_sub(1) as f64;
    let points = |v: &[f64]| -> Vec<(f64, f64)> {
        let n = v.len();
        v.iter()
            .enumerate()
            .map(|(i, y)| (-((n - 1 - i) as f64) * history.interval_s, *y))
            .collect()
    };
    let cpu = points(&history.cpu_pct_guest);
    chart(
        frame,
        cpu_a,
        app,
        vec![("cpu %", cpu.as_slice(), theme.chart_cpu)],
        span_s,
        100.0,
        |v| format!("{v:.0}"),
    );
    let series = [
        ("disk r", &history.disk_read_bps, theme.chart_disk_read),
        ("disk w", &history.disk_write_bps, theme.chart_disk_write),
        ("net rx", &history.net_rx_bps, theme.chart_net_rx),
        ("net tx", &history.net_tx_bps, theme.chart_net_tx),
    ];
    let data: Vec<Series> = series.iter().map(|(n, v, s)| (*n, points(v), *s)).collect();
    let max = series
        .iter()
        .flat_map(|(_, v, _)| v.iter().copied())
        .fold(0.0, f64::max)
        .max(1024.0);
    chart(
        frame,
        io_a,
        app,
        data.iter()
            .map(|(n, v, s)| (*n, v.as_slice(), *s))
            .collect(),
        span_s,
        max * 1.1,
        |v| format!("{}/s", fmt_rate(v)),
    );
}

/// One rate series (bytes/s, oldest first, one sample every `interval_s`).
pub(super) fn rate_chart(
    frame: &mut Frame,
    area: Rect,
    app: &App,
    (name, values, style): (&str, &[f64], Style),
    interval_s: f64,
) {
    let n = values.len();
    let points: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .map(|(i, y)| (-((n - 1 - i) as f64) * interval_s, *y))
        .collect();
    let max = values.iter().copied().fold(0.0, f64::max).max(1024.0);
    chart(
        frame,
        area,
        app,
        vec![(name, points.as_slice(), style)],
        n.saturating_sub(1) as f64 * interval_s,
        max * 1.1,
        |v| format!("{}/s", fmt_rate(v)),
    );
}

fn chart(
    frame: &mut Frame,
    area: Rect,
    app: &App,
    series: Vec<SeriesRef>,
    span_s: f64,
    y_max: f64,
    label: impl Fn(f64) -> String,
) {
    let theme = &app.theme;
    let datasets = series
        .into_iter()
        .map(|(name, data, style)| {
            Dataset::default()
                .name(name)
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(style)
                .data(data)
        })
        .collect();
    let span = span_s.max(1.0);
    let x_axis = Axis::default()
        .style(theme.dim)
        .bounds([-span, 0.0])
        .labels([format!("-{span:.0}s"), "now".to_string()]);
    let y_axis = Axis::default()
        .style(theme.dim)
        .bounds([0.0, y_max])
        .labels([label(0.0), label(y_max)]);
    let chart = Chart::new(datasets)
        .block(Block::new())
        .x_axis(x_axis)
        .y_axis(y_axis)
        .legend_position(Some(LegendPosition::TopLeft))
        .hidden_legend_constraints((Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)));
    frame.render_widget(chart, area);
}

fn draw_sparklines(frame: &mut Frame, area: Rect, app: &App, h: &VmHistory) {
    let theme = &app.theme;
    let width = area.width.saturating_sub(9) as usize;
    let line = |label: &str, values: &[f64], max: Option<f64>, style: Style| {
        Line::from(vec![
            Span::styled(format!(" {label:<7} "), theme.dim),
            Span::styled(spark(values, width, max), style),
        ])
    };
    let lines = vec![
        line("cpu", &h.cpu_pct_guest, Some(100.0), theme.chart_cpu),
        line("disk r", &h.disk_read_bps, None, theme.chart_disk_read),
        line("disk w", &h.disk_write_bps, None, theme.chart_disk_write),
        line("net rx", &h.net_rx_bps, None, theme.chart_net_rx),
        line("net tx", &h.net_tx_bps, None, theme.chart_net_tx),
    ];
    frame.render_widget(Paragraph::new(lines), area);
}
