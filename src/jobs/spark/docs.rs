//! The Spark monitoring REST documents the source reads (only the fields used;
//! a missing field takes its default, as older Spark versions omit some).

use serde::Deserialize;

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct Application {
    pub id: String,
    pub name: String,
    pub attempts: Vec<Attempt>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct Attempt {
    pub attempt_id: Option<String>,
    pub duration: u64,
    pub spark_user: String,
    pub completed: bool,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct SparkJob {
    pub job_id: u64,
    pub name: String,
    /// `spark.job.description` (pyspark's `setJobGroup(id, description)`).
    pub description: Option<String>,
    /// `spark.jobGroup.id`.
    pub job_group: Option<String>,
    pub stage_ids: Vec<u64>,
    /// RUNNING, SUCCEEDED, FAILED or UNKNOWN.
    pub status: String,
    pub num_tasks: u64,
    pub num_completed_tasks: u64,
    pub num_skipped_tasks: u64,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct Stage {
    pub stage_id: u64,
    pub status: String,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub shuffle_read_bytes: u64,
    pub shuffle_write_bytes: u64,
    /// Milliseconds of task run time, summed over the stage's tasks.
    pub executor_run_time: u64,
    /// Nanoseconds.
    pub executor_cpu_time: u64,
    pub failure_reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Executor {
    pub host_port: String,
}
