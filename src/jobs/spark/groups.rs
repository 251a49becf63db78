//! Spark jobs as an operator reads them: an application's jobs grouped by job
//! group (else by description, else by name), each group's figures from the
//! stages its jobs ran, a group classified I/O- or CPU-bound from those
//! figures, and progress that never goes backwards as more jobs are submitted.

use std::collections::HashMap;

use super::docs::{SparkJob, Stage};
use crate::jobs::source::Counters;
use crate::model::WorkloadKind;

/// Bytes moved (input + output + shuffle read + shuffle write) per second of
/// task run time from which a group counts as I/O-bound. A CPU-bound job moves
/// little data per second of compute (pi, a hash loop: well under 100 KiB/s);
/// one that writes, reads or shuffles data moves tens of MB per task-second
/// even from the page cache.
pub const IO_BOUND_BYTES_PER_RUN_S: f64 = 1024.0 * 1024.0;
/// Task run time below which the counters say too little to classify by.
pub const MIN_RUN_MS: u64 = 500;

/// One group's (or a whole application's) figures from its jobs and stages.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Figures {
    pub jobs_total: u64,
    pub jobs_done: u64,
    pub tasks_total: u64,
    /// Completed + skipped.
    pub tasks_done: u64,
    pub stages_total: u64,
    pub stages_done: u64,
    /// A job still running (or in an unknown state).
    pub running: bool,
    /// The first failure: a stage's reason, else the failed job.
    pub failure: Option<String>,
    /// Read = input + shuffle read, written = output + shuffle write.
    pub counters: Counters,
    /// Task run time, milliseconds.
    pub run_ms: u64,
}

impl Figures {
    /// Completed over all tasks of the jobs, 0..100.
    pub fn progress_pct(&self) -> f64 {
        if self.tasks_total == 0 {
            return if self.jobs_total > 0 && self.jobs_done == self.jobs_total {
                100.0
            } else {
                0.0
            };
        }
        self.tasks_done.min(self.tasks_total) as f64 * 100.0 / self.tasks_total as f64
    }

    /// What the counters say the work is bound by; None until enough has run.
    pub fn kind(&self) -> Option<WorkloadKind> {
        kind_from_counters(
            self.counters
                .bytes_read
                .saturating_add(self.counters.bytes_written),
            self.run_ms,
        )
    }

    /// RUNNING, FAILED or SUCCEEDED (Spark's job states).
    pub fn state(&self) -> &'static str {
        if self.failure.is_some() {
            "FAILED"
        } else if self.running {
            "RUNNING"
        } else {
            "SUCCEEDED"
        }
    }
}

/// I/O-bound when the bytes moved per second of task run time reach
/// `IO_BOUND_BYTES_PER_RUN_S`, CPU-bound below; None below `MIN_RUN_MS`.
pub fn kind_from_counters(bytes: u64, run_ms: u64) -> Option<WorkloadKind> {
    if run_ms < MIN_RUN_MS {
        return None;
    }
    let per_run_s = bytes as f64 / (run_ms as f64 / 1000.0);
    Some(if per_run_s >= IO_BOUND_BYTES_PER_RUN_S {
        WorkloadKind::Io
    } else {
        WorkloadKind::Cpu
    })
}

/// Jobs submitted under one job group (or description, or name).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The job group's id, else the description, else the job name.
    pub key: String,
    /// What the operator reads: the description when there is one.
    pub name: String,
    pub figures: Figures,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.trim().is_empty())
}

/// The key a job is grouped by and the name its group is shown with.
fn key_and_name(job: &SparkJob) -> (String, String) {
    match (nonempty(&job.job_group), nonempty(&job.description)) {
        (Some(g), Some(d)) => (g.to_string(), d.to_string()),
        (Some(g), None) => (g.to_string(), g.to_string()),
        (None, Some(d)) => (d.to_string(), d.to_string()),
        (None, None) => (job.name.clone(), job.name.clone()),
    }
}

/// The application's groups in the order their first job was submitted, and
/// the figures of the whole application. A stage shared by several jobs (a
/// shuffle reused, "skipped" in the later ones) counts for the first job that
/// lists it.
pub fn group(jobs: &[SparkJob], stages: &[Stage]) -> (Vec<Group>, Figures) {
    let mut sorted: Vec<&SparkJob> = jobs.iter().collect();
    sorted.sort_by_key(|j| j.job_id);
    let mut groups: Vec<Group> = Vec::new();
    let mut owner: HashMap<u64, usize> = HashMap::new();
    for job in &sorted {
        let (key, name) = key_and_name(job);
        let at = match groups.iter().position(|g| g.key == key) {
            Some(i) => i,
            None => {
                groups.push(Group {
                    key,
                    name,
                    figures: Figures::default(),
                });
                groups.len() - 1
            }
        };
        for s in &job.stage_ids {
            owner.entry(*s).or_insert(at);
        }
        add_job(&mut groups[at].figures, job);
    }
    let mut whole = Figures::default();
    for job in &sorted {
        add_job(&mut whole, job);
    }
    for stage in stages {
        add_stage(&mut whole, stage);
        if let Some(&at) = owner.get(&stage.stage_id) {
            add_stage(&mut groups[at].figures, stage);
        }
    }
    (groups, whole)
}

fn add_job(f: &mut Figures, job: &SparkJob) {
    f.jobs_total += 1;
    match job.status.as_str() {
        "SUCCEEDED" => f.jobs_done += 1,
        "FAILED" => {
            if f.failure.is_none() {
                f.failure = Some(format!("job {} ({}) failed", job.job_id, job.name));
            }
        }
        _ => f.running = true,
    }
    // Counts come from the network: summed without overflow.
    f.tasks_total = f.tasks_total.saturating_add(job.num_tasks);
    f.tasks_done = f.tasks_done.saturating_add(
        job.num_completed_tasks
            .saturating_add(job.num_skipped_tasks),
    );
}

fn add_stage(f: &mut Figures, s: &Stage) {
    f.stages_total += 1;
    if s.status == "COMPLETE" {
        f.stages_done += 1;
    }
    if let Some(reason) = &s.failure_reason {
        // A stage's reason says more than "job N failed".
        if f.failure.as_deref().is_none_or(|x| x.starts_with("job ")) {
            f.failure = Some(reason.clone());
        }
    }
    let c = &mut f.counters;
    c.bytes_read = c
        .bytes_read
        .saturating_add(s.input_bytes.saturating_add(s.shuffle_read_bytes));
    c.bytes_written = c
        .bytes_written
        .saturating_add(s.output_bytes.saturating_add(s.shuffle_write_bytes));
    c.cpu_ms = c.cpu_ms.saturating_add(s.executor_cpu_time / 1_000_000);
    f.run_ms = f.run_ms.saturating_add(s.executor_run_time);
}

/// The highest progress shown per row: a group's total of tasks grows when it
/// submits another job, which would otherwise take its gauge back (100% to
/// 40%); the row says "n of m jobs" instead.
#[derive(Default)]
pub struct Monotone {
    best: HashMap<String, f64>,
}

impl Monotone {
    pub fn keep(&mut self, id: &str, pct: f64) -> f64 {
        let pct = if pct.is_finite() {
            pct.clamp(0.0, 100.0)
        } else {
            0.0
        };
        let best = self.best.entry(id.to_string()).or_insert(0.0);
        *best = best.max(pct);
        *best
    }

    /// Forgets rows no longer listed.
    pub fn retain(&mut self, ids: &[&str]) {
        self.best.retain(|id, _| ids.contains(&id.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, group: Option<&str>, desc: Option<&str>, stages: &[u64]) -> SparkJob {
        SparkJob {
            job_id: id,
            name: format!("count at job{id}.py:1"),
            description: desc.map(Into::into),
            job_group: group.map(Into::into),
            stage_ids: stages.to_vec(),
            status: "SUCCEEDED".into(),
            num_tasks: 4,
            num_completed_tasks: 4,
            ..SparkJob::default()
        }
    }

    fn stage(id: u64, input: u64, output: u64, run_ms: u64) -> Stage {
        Stage {
            stage_id: id,
            status: "COMPLETE".into(),
            input_bytes: input,
            output_bytes: output,
            executor_run_time: run_ms,
            ..Stage::default()
        }
    }

    #[test]
    fn jobs_are_grouped_by_group_then_description_then_name() {
        let jobs = [
            job(0, Some("io"), Some("write and read 64 MB"), &[0]),
            job(1, Some("io"), Some("write and read 64 MB"), &[1]),
            job(2, None, Some("warm-up"), &[2]),
            job(3, Some("cpu"), None, &[3]),
            job(4, None, None, &[4]),
            job(5, None, None, &[5]),
        ];
        let (groups, whole) = group(&jobs, &[]);
        let keys: Vec<(&str, &str, u64)> = groups
            .iter()
            .map(|g| (g.key.as_str(), g.name.as_str(), g.figures.jobs_total))
            .collect();
        assert_eq!(
            keys,
            [
                ("io", "write and read 64 MB", 2),
                ("warm-up", "warm-up", 1),
                ("cpu", "cpu", 1),
                ("count at job4.py:1", "count at job4.py:1", 1),
                ("count at job5.py:1", "count at job5.py:1", 1),
            ]
        );
        assert_eq!((whole.jobs_total, whole.jobs_done), (6, 6));
    }

    #[test]
    fn each_group_is_classified_from_its_own_counters() {
        // An I/O phase writing then reading 64 MiB, and a CPU phase moving
        // a few KB in 20 s of task time, in one application.
        let mib = 1024 * 1024;
        let jobs = [
            job(0, Some("io"), None, &[0]),
            job(1, Some("io"), None, &[1]),
            job(2, Some("cpu"), None, &[2]),
        ];
        let stages = [
            stage(0, 0, 64 * mib, 3_000),
            stage(1, 64 * mib, 0, 2_000),
            stage(2, 0, 8_000, 20_000),
        ];
        let (groups, whole) = group(&jobs, &stages);
        assert_eq!(groups[0].figures.kind(), Some(WorkloadKind::Io));
        assert_eq!(groups[0].figures.counters.bytes_read, 64 * mib);
        assert_eq!(groups[0].figures.counters.bytes_written, 64 * mib);
        assert_eq!(groups[1].figures.kind(), Some(WorkloadKind::Cpu));
        assert_eq!(groups[1].figures.run_ms, 20_000);
        assert_eq!(whole.counters.bytes_written, 64 * mib + 8_000);
        assert_eq!(kind_from_counters(10 * mib, 100), None, "too early to say");
    }

    #[test]
    fn a_shared_stage_counts_once_for_the_first_job_that_ran_it() {
        let jobs = [
            job(0, Some("a"), None, &[0, 1]),
            job(1, Some("b"), None, &[1, 2]),
        ];
        let stages = [stage(0, 10, 0, 1), stage(1, 20, 0, 1), stage(2, 40, 0, 1)];
        let (groups, whole) = group(&jobs, &stages);
        assert_eq!(groups[0].figures.counters.bytes_read, 30);
        assert_eq!(groups[1].figures.counters.bytes_read, 40);
        assert_eq!(whole.counters.bytes_read, 70);
    }

    #[test]
    fn progress_never_goes_backwards_when_a_group_submits_another_job() {
        let mut m = Monotone::default();
        let mut jobs = vec![job(0, Some("io"), None, &[0])];
        let (g, _) = group(&jobs, &[]);
        assert_eq!(m.keep("app/io", g[0].figures.progress_pct()), 100.0);
        let mut next = job(1, Some("io"), None, &[1]);
        (next.status, next.num_completed_tasks) = ("RUNNING".into(), 1);
        jobs.push(next);
        let (g, _) = group(&jobs, &[]);
        let f = &g[0].figures;
        assert_eq!(f.progress_pct(), 62.5, "5 of 8 tasks");
        assert_eq!(m.keep("app/io", f.progress_pct()), 100.0);
        assert_eq!((f.jobs_done, f.jobs_total, f.state()), (1, 2, "RUNNING"));
        m.retain(&[]);
        assert_eq!(m.keep("app/io", 62.5), 62.5, "forgotten once unlisted");
    }
}
