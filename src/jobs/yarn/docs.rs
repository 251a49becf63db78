//! Hadoop 3 REST documents as the YARN source reads them (only the fields used;
//! every field defaults, so a document missing one still parses).

use serde::Deserialize;

use crate::jobs::source::Counters;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct ClusterInfoDoc {
    pub(super) cluster_info: ClusterInfo,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct ClusterInfo {
    pub(super) started_on: u64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct MetricsDoc {
    pub(super) cluster_metrics: Metrics,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Metrics {
    pub(super) apps_running: u64,
    pub(super) apps_completed: u64,
    pub(super) apps_failed: u64,
    pub(super) active_nodes: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct AppsDoc {
    pub(super) apps: Option<AppList>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct AppList {
    pub(super) app: Vec<App>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct App {
    pub(super) id: String,
    pub(super) user: String,
    pub(super) name: String,
    pub(super) state: String,
    pub(super) final_status: String,
    pub(super) progress: f64,
    pub(super) application_type: String,
    pub(super) elapsed_time: u64,
    pub(super) finished_time: u64,
    pub(super) am_host_http_address: Option<String>,
    pub(super) diagnostics: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct AmJobsDoc {
    pub(super) jobs: Option<AmJobList>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct AmJobList {
    pub(super) job: Vec<AmJob>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct AmJob {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) user: String,
    pub(super) state: String,
    pub(super) elapsed_time: u64,
    pub(super) maps_total: u64,
    pub(super) maps_completed: u64,
    pub(super) reduces_total: u64,
    pub(super) reduces_completed: u64,
    pub(super) map_progress: f64,
    pub(super) reduce_progress: f64,
    pub(super) diagnostics: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct HistoryJobsDoc {
    pub(super) jobs: Option<HistoryJobList>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct HistoryJobList {
    pub(super) job: Vec<HistoryJob>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct HistoryJob {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) user: String,
    pub(super) state: String,
    pub(super) start_time: u64,
    pub(super) finish_time: u64,
    pub(super) maps_total: u64,
    pub(super) maps_completed: u64,
    pub(super) reduces_total: u64,
    pub(super) reduces_completed: u64,
    pub(super) diagnostics: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct CountersDoc {
    pub(super) job_counters: JobCounters,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct JobCounters {
    pub(super) counter_group: Vec<CounterGroup>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct CounterGroup {
    pub(super) counter: Vec<Counter>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Counter {
    pub(super) name: String,
    pub(super) total_counter_value: u64,
}

impl CountersDoc {
    /// HDFS + local file bytes, and CPU time, summed over the job.
    pub(super) fn totals(&self) -> Counters {
        let mut c = Counters::default();
        for g in &self.job_counters.counter_group {
            for k in &g.counter {
                // Values from the network: added without overflow (a server's
                // u64::MAX panicked the poller in debug builds).
                let total = match k.name.as_str() {
                    "HDFS_BYTES_READ" | "FILE_BYTES_READ" => &mut c.bytes_read,
                    "HDFS_BYTES_WRITTEN" | "FILE_BYTES_WRITTEN" => &mut c.bytes_written,
                    "CPU_MILLISECONDS" => &mut c.cpu_ms,
                    _ => continue,
                };
                *total = total.saturating_add(k.total_counter_value);
            }
        }
        c
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct TasksDoc {
    pub(super) tasks: Option<TaskList>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct TaskList {
    pub(super) task: Vec<Task>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Task {
    pub(super) id: String,
    pub(super) state: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct AttemptsDoc {
    pub(super) task_attempts: Option<AttemptList>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct AttemptList {
    pub(super) task_attempt: Vec<Attempt>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Attempt {
    pub(super) node_http_address: String,
}
