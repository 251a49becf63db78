//! What every job source (YARN, Spark) has in common: one trait the collector
//! polls, and the counter-delta bookkeeping that turns cumulative byte and CPU
//! counters into rates and a short time series per job.

use std::collections::HashMap;
use std::time::Instant;

use futures::future::BoxFuture;

use crate::model::{JobSourceView, JobView, WorkloadKind};

/// Samples kept per job for charts.
pub const HISTORY_LEN: usize = 120;

/// A benchmark source: polled now and then, it answers with the jobs it sees
/// (rates filled from its own previous polls) and how the poll went.
pub trait JobSource: Send {
    fn poll(&mut self) -> BoxFuture<'_, SourceReport>;
}

#[derive(Debug, Clone, Default)]
pub struct SourceReport {
    pub status: JobSourceView,
    pub jobs: Vec<JobView>,
}

impl SourceReport {
    /// The report of one poll. On failure the error leads the notes and the jobs
    /// last known stay listed, marked by the failed status; on success they are
    /// remembered for that.
    pub fn from_poll(
        kind: &str,
        url: &str,
        outcome: anyhow::Result<Vec<JobView>>,
        mut notes: Vec<String>,
        last_jobs: &mut Vec<JobView>,
    ) -> SourceReport {
        let (ok, jobs) = match outcome {
            Ok(jobs) => {
                *last_jobs = jobs.clone();
                (true, jobs)
            }
            Err(e) => {
                notes.insert(0, format!("{e:#}"));
                (false, last_jobs.clone())
            }
        };
        SourceReport {
            status: JobSourceView {
                kind: kind.into(),
                url: url.to_string(),
                ok,
                message: notes.join("; "),
            },
            jobs,
        }
    }
}

/// Cumulative counters of one job at one poll.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub cpu_ms: u64,
}

struct Previous {
    at: Instant,
    counters: Counters,
    history: Vec<f64>,
}

/// Per-job previous counters; rates are deltas over the time between polls.
#[derive(Default)]
pub struct RateTracker {
    jobs: HashMap<String, Previous>,
}

impl RateTracker {
    /// Fills `job`'s rates and history from `now`'s counters. A counter that went
    /// backwards (a restarted source reusing the id) starts the job afresh.
    pub fn update(&mut self, job: &mut JobView, counters: Counters, now: Instant) {
        job.bytes_read = counters.bytes_read;
        job.bytes_written = counters.bytes_written;
        let entry = self.jobs.remove(&job.id);
        let mut history = Vec::new();
        if let Some(prev) = entry {
            let dt = now.duration_since(prev.at).as_secs_f64();
            let c = prev.counters;
            let backwards = counters.bytes_read < c.bytes_read
                || counters.bytes_written < c.bytes_written
                || counters.cpu_ms < c.cpu_ms;
            if !backwards {
                history = prev.history;
                if dt > 0.0 {
                    let read = (counters.bytes_read - c.bytes_read) as f64 / dt;
                    let write = (counters.bytes_written - c.bytes_written) as f64 / dt;
                    job.read_bps = Some(read);
                    job.write_bps = Some(write);
                    job.cpu_ms_per_s = Some((counters.cpu_ms - c.cpu_ms) as f64 / dt);
                    history.push(read + write);
                    if history.len() > HISTORY_LEN {
                        history.remove(0);
                    }
                }
            }
        }
        job.history_bps = history.clone();
        self.jobs.insert(
            job.id.clone(),
            Previous {
                at: now,
                counters,
                history,
            },
        );
    }

    /// Forgets everything (the source restarted).
    pub fn clear(&mut self) {
        self.jobs.clear();
    }

    /// Forgets jobs no longer listed.
    pub fn retain(&mut self, ids: &[&str]) {
        self.jobs.retain(|id, _| ids.contains(&id.as_str()));
    }
}

/// Recognises the classic Hadoop/Spark benchmarks by job name and says what they
/// are bound by (TestDFSIO, Tera*, NNBench and wordcount move data; pi and
/// MRBench's tiny jobs mostly burn CPU and framework time).
pub fn classify(name: &str) -> Option<(&'static str, WorkloadKind)> {
    let n = name.to_ascii_lowercase();
    let table: &[(&[&str], &str, WorkloadKind)] = &[
        (
            &[
                "testdfsio",
                "io_write",
                "io_read",
                "io_append",
                "io_random_read",
            ],
            "TestDFSIO",
            WorkloadKind::Io,
        ),
        (&["teragen"], "TeraGen", WorkloadKind::Io),
        (&["terasort"], "TeraSort", WorkloadKind::Io),
        (&["teravalidate"], "TeraValidate", WorkloadKind::Io),
        (&["nnbench"], "NNBench", WorkloadKind::Io),
        (&["mrbench"], "MRBench", WorkloadKind::Cpu),
        (&["word count", "wordcount"], "wordcount", WorkloadKind::Io),
        (
            &["quasimontecarlo", "sparkpi", "spark pi"],
            "pi",
            WorkloadKind::Cpu,
        ),
    ];
    for (needles, label, kind) in table {
        if needles.iter().any(|k| n.contains(k)) {
            return Some((label, *kind));
        }
    }
    // "pi" alone is too short to search inside other words.
    if n == "pi" || n.starts_with("pi ") || n.ends_with(" pi") {
        return Some(("pi", WorkloadKind::Cpu));
    }
    None
}

/// "host:port" or "http://host:port/..." -> "host".
pub fn host_of(address: &str) -> String {
    let a = address.trim();
    let a = a.split_once("://").map(|(_, r)| r).unwrap_or(a);
    let a = a.split('/').next().unwrap_or(a);
    match a.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => a.to_string(),
    }
}

/// What every job a source reports must be, whatever its server answered: the
/// figures the console draws are finite and in range (a progress of 0..100,
/// no negative or infinite rate or time).
#[cfg(test)]
pub fn check_sound(report: &SourceReport) -> Result<(), proptest::test_runner::TestCaseError> {
    use proptest::prop_assert;
    let rate_ok = |r: Option<f64>| r.is_none_or(|r| r.is_finite() && r >= 0.0);
    for j in &report.jobs {
        prop_assert!(
            j.progress_pct.is_finite() && (0.0..=100.0).contains(&j.progress_pct),
            "{j:?}"
        );
        prop_assert!(j.elapsed_s.is_finite() && j.elapsed_s >= 0.0, "{j:?}");
        prop_assert!(
            rate_ok(j.read_bps) && rate_ok(j.write_bps) && rate_ok(j.cpu_ms_per_s),
            "{j:?}"
        );
        prop_assert!(
            j.history_bps.iter().all(|r| r.is_finite() && *r >= 0.0),
            "{j:?}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_come_from_deltas_and_reset_on_backwards_counters() {
        let mut t = RateTracker::default();
        let t0 = Instant::now();
        let mut job = JobView {
            id: "j".into(),
            ..JobView::default()
        };
        let c = |r, w, cpu| Counters {
            bytes_read: r,
            bytes_written: w,
            cpu_ms: cpu,
        };
        t.update(&mut job, c(0, 0, 0), t0);
        assert_eq!(job.read_bps, None, "one poll: no rate yet");
        t.update(&mut job, c(2000, 1000, 500), t0 + Duration::from_secs(2));
        assert_eq!(
            (job.read_bps, job.write_bps, job.cpu_ms_per_s),
            (Some(1000.0), Some(500.0), Some(250.0))
        );
        assert_eq!(job.history_bps, vec![1500.0]);
        let mut again = JobView {
            id: "j".into(),
            ..JobView::default()
        };
        t.update(&mut again, c(10, 0, 0), t0 + Duration::from_secs(3));
        assert_eq!(
            again.read_bps, None,
            "counters went backwards: start afresh"
        );
        assert!(again.history_bps.is_empty());
    }

    #[test]
    fn classic_benchmarks_are_recognised() {
        assert_eq!(classify("TeraSort"), Some(("TeraSort", WorkloadKind::Io)));
        assert_eq!(classify("io_write"), Some(("TestDFSIO", WorkloadKind::Io)));
        assert_eq!(classify("QuasiMonteCarlo"), Some(("pi", WorkloadKind::Cpu)));
        assert_eq!(
            classify("word count"),
            Some(("wordcount", WorkloadKind::Io))
        );
        assert_eq!(
            classify("NNBench-write"),
            Some(("NNBench", WorkloadKind::Io))
        );
        assert_eq!(classify("mrbench"), Some(("MRBench", WorkloadKind::Cpu)));
        assert_eq!(classify("Spark Pi"), Some(("pi", WorkloadKind::Cpu)));
        assert_eq!(classify("pipeline"), None);
        assert_eq!(classify("my etl"), None);
    }

    #[test]
    fn hosts_are_taken_from_addresses() {
        assert_eq!(host_of("node-3.cluster:8042"), "node-3.cluster");
        assert_eq!(host_of("http://10.77.0.5:8042/node"), "10.77.0.5");
        assert_eq!(host_of("worker"), "worker");
    }
}
