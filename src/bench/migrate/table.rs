//! The benchmark's table: medians per method, the ratios against the direct
//! baseline, the probe's and the consumer's gaps without a migration, and the
//! consumer target.

use std::fmt::Write;

use super::{CONSUMER, Direct, Method, Results, Sample};
use crate::bench::Targets;

/// The table: medians per method, the ratios against the direct baseline, the
/// probe's and the consumer's gaps without a migration, and the consumer target.
pub fn table(r: &Results) -> String {
    let mut out = String::new();
    let disk = r
        .data_disk_mib
        .map(|d| format!(" with a {d} MiB data disk copied each time"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "live migration, {} MiB guest{disk}, {} round(s) (each method {} times, both directions), accel {}",
        r.memory_mib,
        r.rounds,
        2 * r.rounds,
        r.accel
    );
    let line = |out: &mut String, cells: [&str; 8]| {
        let [label, total, range, job, down, gap, consumer, mib] = cells;
        let _ = writeln!(
            out,
            "{label:<30} {total:>7} {range:>9} {job:>9} {down:>11} {gap:>10} {consumer:>15} {mib:>6}"
        );
    };
    line(
        &mut out,
        [
            "method",
            "total s",
            "(range)",
            "libvirt s",
            "downtime ms",
            "svc gap ms",
            "consumer gap ms",
            "MiB",
        ],
    );
    let row = |out: &mut String, label: &str, m: Method| {
        let s: Vec<&Sample> = r.samples.iter().filter(|s| s.method == m).collect();
        let total = median(s.iter().map(|s| s.seconds).collect());
        let job = median_of(s.iter().map(|s| s.libvirt_ms)).map(|ms| ms / 1000.0);
        let down = median_of(s.iter().map(|s| s.libvirt_downtime_ms));
        let gap = median_of(s.iter().map(|s| s.service_gap_ms));
        let consumer = median_of(s.iter().map(|s| s.consumer_gap_ms));
        let mib = median_of(s.iter().map(|s| s.transferred_bytes)).map(|b| b / (1024.0 * 1024.0));
        line(
            out,
            [
                label,
                &fmt(total, 2),
                &spread(s.iter().map(|s| s.seconds).collect()),
                &fmt(job, 2),
                &fmt(down, 0),
                &fmt(gap, 0),
                &fmt(consumer, 0),
                &fmt(mib, 1),
            ],
        );
        (total, down, gap)
    };
    let (ot, od, og) = row(&mut out, "ours: over the overlay", Method::Overlay);
    let direct = match r.direct {
        Direct::Native => "baseline: libvirt direct",
        Direct::Tunnelled => "baseline: direct, tunnelled",
        Direct::Tls => "baseline: direct, QEMU TLS",
    };
    let (dt, dd, dg) = row(&mut out, direct, Method::Direct);
    let idle = median(r.idle_gap_ms.iter().map(|&g| g as f64).collect());
    let idle_consumer = median(r.idle_consumer_gap_ms.iter().map(|&g| g as f64).collect());
    line(
        &mut out,
        [
            "baseline: no migration",
            "",
            "",
            "",
            "",
            &fmt(idle, 0),
            &fmt(idle_consumer, 0),
            "",
        ],
    );
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    };
    let _ = writeln!(
        out,
        "overlay / direct: total {}, downtime {}, service gap {}",
        ratio(ot, dt),
        ratio(od, dd),
        ratio(og, dg)
    );
    let overlay: Vec<&Sample> = r
        .samples
        .iter()
        .filter(|s| s.method == Method::Overlay)
        .collect();
    let worst = overlay.iter().filter_map(|s| s.consumer_gap_ms).max();
    let failed: u32 = overlay.iter().map(|s| s.consumer_failed).sum();
    let retries: u32 = overlay.iter().map(|s| s.consumer_retries).sum();
    let _ = writeln!(
        out,
        "consumer on {CONSUMER} during overlay migrations: longest gap {} ms of {} migrations, {failed} failed request(s) after retries ({retries} retries)",
        worst.map_or_else(|| "-".into(), |g| g.to_string()),
        overlay.len()
    );
    let _ = writeln!(
        out,
        "medians. total = the caller's wall time (overlay: the `migrate --wait` request, authorization to report; direct: virDomainMigrateToURI); \
         libvirt s = libvirt's own job time (time_elapsed); downtime = libvirt's (pause to resume); \
         svc gap = longest time the guest's port did not accept a connection (probe every 25 ms); \
         consumer gap = longest time between answers of one-at-a-time requests through `peervisor consume` on {CONSUMER}"
    );
    out
}

/// The design's targets for a migration over the overlay, against the direct
/// baseline of the same run: one line each, and what was missed.
pub fn targets(r: &Results) -> (String, Targets) {
    let mut targets = Targets::default();
    let mut out = String::new();
    let of = |m: Method| -> Vec<&Sample> { r.samples.iter().filter(|s| s.method == m).collect() };
    let (overlay, direct) = (of(Method::Overlay), of(Method::Direct));
    let total = |s: &[&Sample]| median(s.iter().map(|s| s.seconds).collect());
    let down = |s: &[&Sample]| median_of(s.iter().map(|s| s.libvirt_downtime_ms));
    for (what, limit, ours, theirs) in [
        (
            "total time <= 1.2x direct",
            1.2,
            total(&overlay),
            total(&direct),
        ),
        (
            "downtime <= 1.0x direct",
            1.0,
            down(&overlay),
            down(&direct),
        ),
    ] {
        let line = match (ours, theirs) {
            (Some(a), Some(b)) if b > 0.0 => {
                targets.check(what, &format!("{:.2}x", a / b), a / b <= limit)
            }
            (None, _) => targets.not_measured(what, "no overlay migration measured"),
            _ => targets.missing_baseline("libvirt direct", "no direct migration measured"),
        };
        let _ = writeln!(out, "{line}");
    }
    let worst = overlay.iter().filter_map(|s| s.consumer_gap_ms).max();
    let failed: u32 = overlay.iter().map(|s| s.consumer_failed).sum();
    let what = "consumer gap < 1000 ms, no failed request";
    let line = match worst {
        Some(gap) => targets.check(
            what,
            &format!("{gap} ms, {failed} failed"),
            gap < 1000 && failed == 0,
        ),
        None => targets.not_measured(what, "no consumer gap measured"),
    };
    let _ = writeln!(out, "{line}");
    (out, targets)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn median_of(values: impl Iterator<Item = Option<u64>>) -> Option<f64> {
    median(values.flatten().map(|v| v as f64).collect())
}

fn spread(v: Vec<f64>) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() {
        "-".into()
    } else {
        format!("{min:.1}-{max:.1}")
    }
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(method: Method, seconds: f64, down: u64, gap: u64) -> Sample {
        Sample {
            method,
            from: "a".into(),
            to: "b".into(),
            seconds,
            libvirt_downtime_ms: Some(down),
            libvirt_ms: Some((seconds * 800.0) as u64),
            service_gap_ms: Some(gap),
            consumer_gap_ms: Some(gap + 100),
            consumer_failed: 0,
            consumer_retries: 1,
            transferred_bytes: Some(70 << 20),
            node_probe_ms: None,
            node_seconds: None,
        }
    }

    #[test]
    fn table_shows_medians_and_ratios_against_the_direct_baseline() {
        let r = Results {
            data_disk_mib: None,
            memory_mib: 128,
            rounds: 1,
            accel: "tcg".into(),
            direct: Direct::Tunnelled,
            samples: vec![
                sample(Method::Overlay, 2.0, 200, 300),
                sample(Method::Overlay, 3.0, 220, 320),
                sample(Method::Direct, 2.0, 100, 200),
                sample(Method::Direct, 2.0, 300, 200),
            ],
            idle_gap_ms: vec![30],
            idle_consumer_gap_ms: vec![40],
        };
        let t = table(&r);
        assert!(t.contains("ours: over the overlay"), "{t}");
        assert!(t.contains("baseline: direct, tunnelled"), "{t}");
        assert!(t.contains("2.50"), "overlay median total: {t}");
        assert!(t.contains("total 1.25x"), "{t}");
        assert!(t.contains("downtime 1.05x"), "{t}");
        assert!(t.contains("service gap 1.55x"), "{t}");
        // 1.25x and 1.05x miss the design's 1.2x and 1.0x: said, and an error.
        let (lines, targets) = targets(&r);
        assert!(
            lines.contains("total time <= 1.2x direct: 1.25x MISSED"),
            "{lines}"
        );
        assert!(
            lines.contains("downtime <= 1.0x direct: 1.05x MISSED"),
            "{lines}"
        );
        assert!(lines.contains("420 ms, 0 failed met"), "{lines}");
        let e = targets.finish().unwrap_err().to_string();
        assert!(e.contains("total time") && e.contains("downtime"), "{e}");
        assert!(t.contains("70.0"), "MiB: {t}");
        assert!(
            t.contains(" 2.00 "),
            "libvirt's job time, overlay median: {t}"
        );
        assert!(
            t.contains(
                "longest gap 420 ms of 2 migrations, 0 failed request(s) after retries (2 retries)"
            ),
            "{t}"
        );
        let idle = t
            .lines()
            .find(|l| l.starts_with("baseline: no migration"))
            .unwrap();
        assert!(idle.contains("30") && idle.contains("40"), "{idle}");
    }

    #[test]
    fn a_missing_direct_baseline_is_said_and_fails() {
        let r = Results {
            data_disk_mib: None,
            memory_mib: 128,
            rounds: 1,
            accel: "tcg".into(),
            direct: Direct::Native,
            samples: vec![sample(Method::Overlay, 2.0, 200, 300)],
            idle_gap_ms: vec![30],
            idle_consumer_gap_ms: vec![40],
        };
        let (lines, targets) = targets(&r);
        assert!(
            lines.contains("baseline libvirt direct: NOT MEASURED"),
            "{lines}"
        );
        assert!(targets.finish().is_err());
    }
}
