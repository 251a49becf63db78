//! The penalty results as a text table (for people) or CSV (for spreadsheets);
//! JSON is the `PenaltyView` itself.

use std::fmt::Write;

use crate::model::{PenaltyRow, PenaltyView, WorkloadKind, spread_pct};

pub fn text(view: &PenaltyView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "virtualization penalty on {}", view.host);
    let _ = writeln!(
        out,
        "accelerator: {}; {} run(s) each{}",
        view.accel,
        view.runs,
        if view.short { " (short mode)" } else { "" }
    );
    let _ = writeln!(
        out,
        "{:<13} {:<4} {:>10} {:>10} {:>8}  {:<8} {:>12} {:>12}",
        "workload", "kind", "native", "VM", "penalty", "unit", "spread nat.", "spread VM"
    );
    for row in &view.rows {
        let _ = writeln!(
            out,
            "{:<13} {:<4} {:>10} {:>10} {:>8}  {:<8} {:>12} {:>12}",
            row.workload,
            kind(row),
            num(row.native_median()),
            num(row.vm_median()),
            row.penalty_pct()
                .map(|p| format!("{p:.1}%"))
                .unwrap_or_else(|| "-".into()),
            row.unit,
            spread(&row.native),
            spread(&row.vm),
        );
    }
    let _ = writeln!(
        out,
        "native and VM: medians (higher is better); penalty = 1 - VM/native; spread = half the range of the runs"
    );
    if view.accel.starts_with("tcg") {
        let _ = writeln!(
            out,
            "note: TCG emulates every guest instruction in software, so CPU-bound work pays a large penalty here, unlike on hardware-virtualized (KVM) hosts"
        );
    }
    out
}

pub fn csv(view: &PenaltyView) -> String {
    let mut out = String::from(
        "workload,kind,unit,native_median,vm_median,penalty_pct,native_spread_pct,vm_spread_pct,native_runs,vm_runs,accel,host\n",
    );
    for row in &view.rows {
        let runs = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{}",
            row.workload,
            kind(row),
            row.unit,
            opt(row.native_median()),
            opt(row.vm_median()),
            opt(row.penalty_pct()),
            opt(spread_pct(&row.native)),
            opt(spread_pct(&row.vm)),
            runs(&row.native),
            runs(&row.vm),
            csv_field(&view.accel),
            csv_field(&view.host),
        );
    }
    out
}

fn kind(row: &PenaltyRow) -> &'static str {
    match row.kind {
        Some(WorkloadKind::Cpu) => "cpu",
        Some(WorkloadKind::Io) => "io",
        None => "-",
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
        None => "-".into(),
    }
}

fn spread(samples: &[f64]) -> String {
    match spread_pct(samples) {
        Some(s) if samples.len() > 1 => format!("±{s:.1}%"),
        _ => "-".into(),
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_default()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> PenaltyView {
        PenaltyView {
            state: "done".into(),
            host: "h (cpu, 2 CPUs)".into(),
            accel: "tcg: no vmx".into(),
            runs: 2,
            rows: vec![PenaltyRow {
                workload: "seq-read".into(),
                kind: Some(WorkloadKind::Io),
                unit: "MiB/s".into(),
                native: vec![100.0, 200.0],
                vm: vec![50.0, 50.0],
            }],
            ..PenaltyView::default()
        }
    }

    #[test]
    fn text_table_shows_medians_penalty_and_spread() {
        let t = text(&view());
        assert!(t.contains("seq-read"), "{t}");
        assert!(t.contains("150"), "native median: {t}");
        assert!(t.contains("66.7%"), "penalty 1-50/150: {t}");
        assert!(t.contains("±33.3%"), "native spread: {t}");
        assert!(t.contains("TCG"), "the accelerator is explained: {t}");
    }

    #[test]
    fn csv_quotes_fields_with_commas() {
        let c = csv(&view());
        let line = c.lines().nth(1).unwrap();
        assert!(
            line.starts_with("seq-read,io,MiB/s,150.000,50.000,66.667,"),
            "{line}"
        );
        assert!(line.ends_with("\"h (cpu, 2 CPUs)\""), "{line}");
    }
}
