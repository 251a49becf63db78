//! The Throughput pane's jobs view (toggled with `toggle_jobs`): YARN/Spark
//! jobs with progress gauges, the selected job's throughput, the latest
//! virtualization-penalty table, and job sources that fail. Drawn only from
//! the snapshot; the node does the polling.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};

use super::{draw_list, fmt_rate, pane_block, placeholder, spark};
use crate::model::{
    JOB_ENDED, JOB_POLL_EVERY_S, JobView, PenaltyView, Status, WorkloadKind, spread_pct,
};
use crate::tui::app::{App, Pane};

/// Width of a progress gauge's bar, in cells.
const GAUGE_CELLS: usize = 10;
/// Failing job sources listed at most.
const MAX_SOURCE_ERRORS: usize = 3;
/// From this pane width on, the job list uses its long layout.
const WIDE_JOBS: u16 = 100;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let theme = &app.theme;
    let focused = app.focus == Pane::Throughput;
    let block = pane_block("Throughput: jobs and benchmarks", focused, theme);
    let Some(status) = &app.status else {
        frame.render_widget(placeholder(block, "connecting…", theme.dim), area);
        return;
    };
    let errors = source_errors(status);
    if status.jobs.is_empty() && status.penalty.is_none() && errors.is_empty() {
        let text = "no jobs (no job sources configured) and no penalty benchmark run";
        frame.render_widget(placeholder(block, text, theme.dim), area);
        return;
    }
    let inner = block.inner(area);
    frame.render_widget(block, area);

    let errors_h = errors.len().min(MAX_SOURCE_ERRORS) as u16;
    let penalty_h = status
        .penalty
        .as_ref()
        .map_or(0, |p| p.rows.len() as u16 + 2);
    let jobs_h = if status.jobs.is_empty() {
        0
    } else {
        status.jobs.len() as u16 + 1
    };
    let [jobs_a, chart_a, penalty_a, errors_a] = Layout::vertical([
        Constraint::Max(jobs_h),
        Constraint::Fill(1),
        Constraint::Max(penalty_h),
        Constraint::Length(errors_h),
    ])
    .areas(inner);
    if jobs_h > 0 {
        draw_jobs(frame, jobs_a, app, &status.jobs);
    }
    if let Some(job) = app.selected_job() {
        draw_job_throughput(frame, chart_a, app, job);
    }
    if let Some(p) = &status.penalty {
        draw_penalty(frame, penalty_a, app, p);
    }
    let lines: Vec<Line> = errors
        .into_iter()
        .take(MAX_SOURCE_ERRORS)
        .map(|e| Line::styled(format!(" {e}"), theme.dim))
        .collect();
    frame.render_widget(Paragraph::new(lines), errors_a);
}

/// `yarn http://rm:8088: connection refused` for each source whose last poll failed.
pub fn source_errors(status: &Status) -> Vec<String> {
    status
        .job_sources
        .iter()
        .filter(|s| !s.ok)
        .map(|s| format!("{} {}: {}", s.kind, s.url, s.message))
        .collect()
}

/// `TeraSort io`, or `-` for a job not recognised as a benchmark.
pub fn bench_label(job: &JobView) -> String {
    let kind = match job.kind {
        Some(WorkloadKind::Io) => " io",
        Some(WorkloadKind::Cpu) => " cpu",
        None => "",
    };
    match &job.benchmark {
        Some(b) => format!("{b}{kind}"),
        None if kind.is_empty() => "-".into(),
        None => kind.trim_start().into(),
    }
}

/// `2 of 3` Spark jobs done, or `-` for a row without such jobs.
pub fn jobs_label(job: &JobView) -> String {
    if job.jobs_total == 0 {
        return "-".into();
    }
    format!("{} of {}", job.jobs_completed, job.jobs_total)
}

/// The row's name, a child (a Spark job group) indented under its parent.
pub fn name_label(job: &JobView) -> String {
    match job.parent {
        Some(_) => format!(" └ {}", job.name),
        None => job.name.clone(),
    }
}

/// `████▌░░░░░ 45%`-style gauge with `cells` cells.
pub fn gauge(pct: f64, cells: usize) -> String {
    let pct = if pct.is_finite() {
        pct.clamp(0.0, 100.0)
    } else {
        0.0
    };
    let filled = ((pct / 100.0) * cells as f64).round() as usize;
    format!(
        "{}{} {pct:>3.0}%",
        "█".repeat(filled),
        "░".repeat(cells - filled.min(cells))
    )
}

fn rate(bps: Option<f64>) -> String {
    bps.map(|b| format!("{}/s", fmt_rate(b)))
        .unwrap_or_else(|| "-".into())
}

fn draw_jobs(frame: &mut Frame, area: Rect, app: &App, jobs: &[JobView]) {
    let theme = &app.theme;
    // Narrow panes get a shorter gauge and counters so job names stay readable.
    let wide = area.width >= WIDE_JOBS;
    let cells = if wide { GAUGE_CELLS } else { GAUGE_CELLS / 2 };
    let (maps_w, reduces_w, reduces) = if wide {
        (9, 9, "REDUCES")
    } else {
        (5, 3, "RED")
    };
    // The JOBS column (`n of m` Spark jobs) only where it leaves the names
    // room; narrow, the selected row's chart title says it.
    let mut header = vec!["JOB", "BENCHMARK", "STATE", "PROGRESS"];
    let mut widths = vec![
        Constraint::Min(8),
        Constraint::Length(12),
        Constraint::Length(9),
        Constraint::Length(cells as u16 + 5),
    ];
    if wide {
        header.push("JOBS");
        widths.push(Constraint::Length(8));
    }
    header.extend(["MAPS", reduces, "READ", "WRITE"]);
    widths.extend([
        Constraint::Length(maps_w),
        Constraint::Length(reduces_w),
        Constraint::Length(7),
        Constraint::Length(7),
    ]);
    let header = Row::new(header);
    draw_list(
        frame,
        area,
        app,
        Pane::Throughput,
        Block::new(),
        header,
        &widths,
        jobs.len(),
        |i| {
            let j = &jobs[i];
            let state_style = match j.state.as_str() {
                "FAILED" | "KILLED" => theme.op_failed,
                "RUNNING" => theme.op_active,
                JOB_ENDED => theme.dim,
                _ => theme.op_done,
            };
            let mut cells = vec![
                Span::raw(name_label(j)),
                Span::raw(bench_label(j)),
                Span::styled(j.state.clone(), state_style),
                Span::styled(gauge(j.progress_pct, cells), theme.gauge),
            ];
            if wide {
                cells.push(Span::raw(jobs_label(j)));
            }
            cells.extend([
                Span::raw(format!("{}/{}", j.maps_completed, j.maps_total)),
                Span::raw(format!("{}/{}", j.reduces_completed, j.reduces_total)),
                Span::styled(rate(j.read_bps), theme.chart_disk_read),
                Span::styled(rate(j.write_bps), theme.chart_disk_write),
            ]);
            Row::new(cells)
        },
    );
}

/// The selected job's read+write throughput over its recent polls.
fn draw_job_throughput(frame: &mut Frame, area: Rect, app: &App, job: &JobView) {
    if area.height == 0 {
        return;
    }
    let theme = &app.theme;
    let [title_a, rest] =
        Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
    let now = job
        .history_bps
        .last()
        .map(|b| format!("{}/s", fmt_rate(*b)))
        .unwrap_or_else(|| "-".into());
    let cpu = job
        .cpu_ms_per_s
        .map(|c| format!("  cpu {:.0} ms/s", c))
        .unwrap_or_default();
    let vms = if job.vms.is_empty() {
        String::new()
    } else {
        format!("  on {}", job.vms.join(","))
    };
    let jobs = if job.jobs_total > 0 {
        format!("  jobs {}", jobs_label(job))
    } else {
        String::new()
    };
    let note = job
        .note
        .as_ref()
        .map(|n| format!("  ({n})"))
        .unwrap_or_default();
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(format!(" {} ", job.name), theme.title),
            Span::styled(format!("read+write {now}{cpu}{jobs}{vms}{note}"), theme.dim),
        ])),
        title_a,
    );
    if job.history_bps.is_empty() {
        frame.render_widget(
            Paragraph::new(Line::styled(
                " no throughput yet (after two polls)",
                theme.dim,
            )),
            rest,
        );
        return;
    }
    if rest.height < super::throughput::MIN_CHART_HEIGHT {
        let width = rest.width.saturating_sub(2) as usize;
        let line = Line::styled(
            format!(" {}", spark(&job.history_bps, width, None)),
            theme.chart_disk_write,
        );
        frame.render_widget(Paragraph::new(line), rest);
        return;
    }
    let series = (
        "read+write",
        job.history_bps.as_slice(),
        theme.chart_disk_write,
    );
    let interval_s = JOB_POLL_EVERY_S as f64;
    super::throughput::rate_chart(frame, rest, app, series, interval_s);
}

fn draw_penalty(frame: &mut Frame, area: Rect, app: &App, p: &PenaltyView) {
    let theme = &app.theme;
    let title = if p.state == "running" {
        format!(
            " Penalty running: {} ({}/{})",
            p.progress, p.steps_done, p.steps_total
        )
    } else {
        format!(" Penalty {}: accel {}, host {}", p.state, p.accel, p.host)
    };
    let mut title_line = vec![Span::styled(title, theme.title)];
    if let Some(e) = &p.error {
        title_line.push(Span::styled(format!("  {e}"), theme.op_failed));
    }
    let [title_a, table_a] =
        Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
    frame.render_widget(Paragraph::new(Line::from(title_line)), title_a);
    let num = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
    let rows: Vec<Row> = p
        .rows
        .iter()
        .map(|r| {
            let spread = match (spread_pct(&r.native), spread_pct(&r.vm)) {
                (Some(n), Some(v)) => format!("±{n:.1}% / ±{v:.1}%"),
                _ => "-".into(),
            };
            Row::new(vec![
                format!(" {}", r.workload),
                format!("{} {}", num(r.native_median()), r.unit),
                format!("{} {}", num(r.vm_median()), r.unit),
                r.penalty_pct()
                    .map(|x| format!("{x:.1}%"))
                    .unwrap_or_else(|| "-".into()),
                spread,
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Fill(1),
            Constraint::Length(14),
            Constraint::Length(14),
            Constraint::Length(8),
            Constraint::Length(15),
        ],
    )
    .header(
        Row::new([" WORKLOAD", "NATIVE", "VM", "PENALTY", "SPREAD N/VM"]).style(theme.table_header),
    )
    .column_spacing(1);
    frame.render_widget(table, table_a);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_fills_in_proportion_and_clamps() {
        assert_eq!(gauge(45.0, 10), "█████░░░░░  45%");
        assert_eq!(gauge(100.0, 5), "█████ 100%");
        assert_eq!(gauge(250.0, 4), "████ 100%");
        assert_eq!(gauge(f64::NAN, 4), "░░░░   0%");
    }

    #[test]
    fn benchmark_label_names_the_kind() {
        let mut job = JobView::default();
        assert_eq!(bench_label(&job), "-");
        job.benchmark = Some("TestDFSIO".into());
        job.kind = Some(WorkloadKind::Io);
        assert_eq!(bench_label(&job), "TestDFSIO io");
        job.benchmark = None;
        assert_eq!(bench_label(&job), "io", "classified by its counters alone");
    }

    #[test]
    fn a_job_group_is_indented_under_its_application_with_its_jobs_counted() {
        let mut job = JobView {
            name: "CPU phase".into(),
            ..JobView::default()
        };
        assert_eq!(
            (name_label(&job), jobs_label(&job)),
            ("CPU phase".into(), "-".into())
        );
        job.parent = Some("app-1".into());
        (job.jobs_completed, job.jobs_total) = (1, 2);
        assert_eq!(
            (name_label(&job), jobs_label(&job)),
            (" └ CPU phase".into(), "1 of 2".into())
        );
    }
}
