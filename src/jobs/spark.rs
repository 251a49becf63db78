//! Spark source: polls a Spark application UI (driver, port 4040) or history
//! server's monitoring REST API (`/api/v1/applications`, and per application
//! its jobs, stages and executors). One `JobView` per application: progress is
//! completed tasks over all tasks of its jobs ("maps" = tasks, "reduces" =
//! stages), bytes are stage input + shuffle read / output + shuffle write.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use serde::Deserialize;

use super::http::{BaseUrl, EndpointOptions, get_json};
use super::source::{Counters, JobSource, RateTracker, SourceReport, classify, host_of};
use crate::model::JobView;

const TIMEOUT: Duration = Duration::from_secs(3);
/// Applications followed per poll (the newest first, as Spark lists them).
const MAX_APPS: usize = 20;

pub struct SparkSource {
    base: BaseUrl,
    url: String,
    rates: RateTracker,
    last_jobs: Vec<JobView>,
}

impl SparkSource {
    /// `URL[,ca=FILE][,auth=...]`.
    pub fn from_arg(arg: &str) -> Result<SparkSource> {
        let mut parts = arg.split(',');
        let url = parts.next().unwrap_or("");
        let mut options = EndpointOptions::default();
        for p in parts {
            let (key, value) = p.split_once('=').unwrap_or((p, ""));
            if !options
                .take(key, value)
                .with_context(|| format!("--spark {arg:?}"))?
            {
                anyhow::bail!("--spark {arg:?}: unknown option {p:?} (expected ca=FILE)");
            }
        }
        let base = BaseUrl::with_options(url, &options)?;
        Ok(SparkSource {
            url: base.display(),
            base,
            rates: RateTracker::default(),
            last_jobs: Vec::new(),
        })
    }

    async fn poll_once(&mut self, notes: &mut Vec<String>) -> Result<Vec<JobView>> {
        let apps: Vec<Application> = get_json(&self.base, "/api/v1/applications", TIMEOUT).await?;
        let now = Instant::now();
        let mut out = Vec::new();
        for app in apps.iter().take(MAX_APPS) {
            match self.application(app, now).await {
                Ok(job) => out.push(job),
                Err(e) => notes.push(format!("{}: {e:#}", app.id)),
            }
        }
        let ids: Vec<&str> = out.iter().map(|j| j.id.as_str()).collect();
        self.rates.retain(&ids);
        notes.insert(0, format!("{} application(s)", apps.len()));
        Ok(out)
    }

    async fn application(&mut self, app: &Application, now: Instant) -> Result<JobView> {
        let attempt = app.attempts.last().cloned().unwrap_or_default();
        // Applications with several attempts (YARN cluster mode) name one in the path.
        let prefix = match &attempt.attempt_id {
            Some(a) => format!("/api/v1/applications/{}/{a}", app.id),
            None => format!("/api/v1/applications/{}", app.id),
        };
        let jobs: Vec<SparkJob> = get_json(&self.base, &format!("{prefix}/jobs"), TIMEOUT).await?;
        let stages: Vec<Stage> = get_json(&self.base, &format!("{prefix}/stages"), TIMEOUT).await?;
        let executors: Vec<Executor> =
            get_json(&self.base, &format!("{prefix}/executors"), TIMEOUT)
                .await
                .unwrap_or_default();
        // Counts and counters come from the network: summed without overflow
        // (a server's u64::MAX panicked the poller in debug builds).
        let tasks = saturating_sum(jobs.iter().map(|j| j.num_tasks));
        let done = saturating_sum(
            jobs.iter()
                .map(|j| j.num_completed_tasks.saturating_add(j.num_skipped_tasks)),
        );
        let failed_job = jobs.iter().find(|j| j.status == "FAILED");
        let failure = stages
            .iter()
            .find_map(|s| s.failure_reason.clone())
            .or_else(|| failed_job.map(|j| format!("job {} ({}) failed", j.job_id, j.name)));
        let state = if failed_job.is_some() {
            "FAILED"
        } else if attempt.completed {
            "COMPLETED"
        } else {
            "RUNNING"
        };
        let mut job = JobView {
            source: "spark".into(),
            id: app.id.clone(),
            name: app.name.clone(),
            user: attempt.spark_user.clone(),
            state: state.into(),
            progress_pct: if attempt.completed && failed_job.is_none() {
                100.0
            } else if tasks > 0 {
                done.min(tasks) as f64 * 100.0 / tasks as f64
            } else {
                0.0
            },
            maps_completed: done,
            maps_total: tasks,
            reduces_completed: stages.iter().filter(|s| s.status == "COMPLETE").count() as u64,
            reduces_total: stages.len() as u64,
            elapsed_s: attempt.duration as f64 / 1000.0,
            error: failure,
            ..JobView::default()
        };
        if let Some((name, kind)) = classify(&app.name) {
            job.benchmark = Some(name.into());
            job.kind = Some(kind);
        }
        for e in &executors {
            let host = host_of(&e.host_port);
            if !host.is_empty() && !job.hosts.contains(&host) {
                job.hosts.push(host);
            }
        }
        let counters = Counters {
            bytes_read: saturating_sum(
                stages
                    .iter()
                    .map(|s| s.input_bytes.saturating_add(s.shuffle_read_bytes)),
            ),
            bytes_written: saturating_sum(
                stages
                    .iter()
                    .map(|s| s.output_bytes.saturating_add(s.shuffle_write_bytes)),
            ),
            cpu_ms: saturating_sum(stages.iter().map(|s| s.executor_cpu_time / 1_000_000)),
        };
        self.rates.update(&mut job, counters, now);
        Ok(job)
    }
}

fn saturating_sum(values: impl Iterator<Item = u64>) -> u64 {
    values.fold(0, u64::saturating_add)
}

impl JobSource for SparkSource {
    fn poll(&mut self) -> BoxFuture<'_, SourceReport> {
        Box::pin(async move {
            let mut notes = Vec::new();
            let outcome = self.poll_once(&mut notes).await;
            SourceReport::from_poll("spark", &self.url, outcome, notes, &mut self.last_jobs)
        })
    }
}

// ---- Spark monitoring REST documents (only the fields used) ----

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
struct Application {
    id: String,
    name: String,
    attempts: Vec<Attempt>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase", default)]
struct Attempt {
    attempt_id: Option<String>,
    duration: u64,
    spark_user: String,
    completed: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SparkJob {
    job_id: u64,
    name: String,
    status: String,
    num_tasks: u64,
    num_completed_tasks: u64,
    num_skipped_tasks: u64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Stage {
    status: String,
    input_bytes: u64,
    output_bytes: u64,
    shuffle_read_bytes: u64,
    shuffle_write_bytes: u64,
    /// Nanoseconds.
    executor_cpu_time: u64,
    failure_reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Executor {
    host_port: String,
}

#[cfg(test)]
mod tests {
    //! Bodies shaped like the Spark monitoring REST API's (Spark 3.x).
    use super::*;
    use crate::jobs::testserver::{Route, TestServer};
    use crate::model::WorkloadKind;
    use serde_json::json;

    const APP: &str = "app-20261125201500-0000";

    fn serve(s: &TestServer, completed: bool, tasks_done: u64, input: u64, job_status: &str) {
        s.json(
            "/api/v1/applications",
            &json!([{"id": APP, "name": "Spark Pi", "attempts": [{
            "startTime": "2026-11-25T20:15:00.000GMT", "endTime": "1969-12-31T23:59:59.999GMT",
            "lastUpdated": "2026-11-25T20:15:00.000GMT", "duration": 12000, "sparkUser": "spark",
            "completed": completed, "appSparkVersion": "3.5.1", "startTimeEpoch": 1795637700000_u64,
            "endTimeEpoch": -1, "lastUpdatedEpoch": 1795637700000_u64}]}])
            .to_string(),
        );
        let p = format!("/api/v1/applications/{APP}");
        s.json(&format!("{p}/jobs"), &json!([{"jobId": 0, "name": "reduce at SparkPi.scala:38",
            "submissionTime": "2026-11-25T20:15:02.000GMT", "stageIds": [0, 1], "status": job_status,
            "numTasks": 10, "numActiveTasks": 10 - tasks_done, "numCompletedTasks": tasks_done,
            "numSkippedTasks": 0, "numFailedTasks": 0, "numKilledTasks": 0,
            "numCompletedIndices": tasks_done, "numActiveStages": 1, "numCompletedStages": 0,
            "numSkippedStages": 0, "numFailedStages": 0, "killedTasksSummary": {}}]).to_string());
        let failure = if job_status == "FAILED" {
            json!("Job aborted due to stage failure: Task 3 in stage 0.0 failed 4 times")
        } else {
            json!(null)
        };
        s.json(&format!("{p}/stages"), &json!([{"status": if completed {"COMPLETE"} else {"ACTIVE"},
            "stageId": 0, "attemptId": 0, "numTasks": 10, "numActiveTasks": 0, "numCompleteTasks": tasks_done,
            "numFailedTasks": 0, "executorRunTime": 900, "executorCpuTime": 400_000_000_u64,
            "inputBytes": input, "inputRecords": 100, "outputBytes": 0, "outputRecords": 0,
            "shuffleReadBytes": 0, "shuffleWriteBytes": input / 10, "memoryBytesSpilled": 0,
            "diskBytesSpilled": 0, "name": "reduce at SparkPi.scala:38", "failureReason": failure}]).to_string());
        s.json(&format!("{p}/executors"), &json!([
            {"id": "driver", "hostPort": "10.77.0.9:40123", "isActive": true, "totalInputBytes": 0},
            {"id": "1", "hostPort": "spark-worker-1:40211", "isActive": true, "totalInputBytes": input}]).to_string());
    }

    #[tokio::test]
    async fn an_application_progresses_with_rates_and_hosts() {
        let s = TestServer::start().await;
        let mut src = SparkSource::from_arg(&s.url).unwrap();
        serve(&s, false, 2, 1000, "RUNNING");
        let r = src.poll().await;
        assert!(r.status.ok, "{}", r.status.message);
        let j = &r.jobs[0];
        assert_eq!(
            (j.id.as_str(), j.state.as_str(), j.progress_pct),
            (APP, "RUNNING", 20.0)
        );
        assert_eq!(
            (j.benchmark.as_deref(), j.kind),
            (Some("pi"), Some(WorkloadKind::Cpu))
        );
        assert_eq!(j.hosts, ["10.77.0.9", "spark-worker-1"]);
        assert_eq!(j.read_bps, None);
        tokio::time::sleep(Duration::from_millis(200)).await;
        serve(&s, false, 8, 2_001_000, "RUNNING");
        let j = &src.poll().await.jobs[0];
        assert_eq!(j.progress_pct, 80.0);
        let read = j.read_bps.unwrap();
        assert!(
            read > 1_000_000.0 && read < 20_000_000.0,
            "2 MB in ~0.2 s: {read}"
        );
        assert!(j.write_bps.unwrap() > 0.0);
        serve(&s, true, 10, 2_001_000, "SUCCEEDED");
        let j = &src.poll().await.jobs[0];
        assert_eq!((j.state.as_str(), j.progress_pct), ("COMPLETED", 100.0));
    }

    #[tokio::test]
    async fn failures_timeouts_and_bad_json_are_reported() {
        let s = TestServer::start().await;
        let mut src = SparkSource::from_arg(&s.url).unwrap();
        serve(&s, true, 3, 10, "FAILED");
        let r = src.poll().await;
        assert_eq!(r.jobs[0].state, "FAILED");
        assert!(
            r.jobs[0]
                .error
                .as_deref()
                .unwrap()
                .contains("failed 4 times")
        );

        s.json("/api/v1/applications", "[{\"id\": 3");
        let r = src.poll().await;
        assert!(
            !r.status.ok && r.status.message.contains("malformed JSON"),
            "{}",
            r.status.message
        );
        assert_eq!(r.jobs.len(), 1, "last known application still shown");

        s.set("/api/v1/applications", Route::Hang);
        let r = src.poll().await;
        assert!(
            !r.status.ok && r.status.message.contains("timeout after 3 s"),
            "{}",
            r.status.message
        );

        serve(&s, false, 1, 10, "RUNNING");
        s.json(
            &format!("/api/v1/applications/{APP}/stages"),
            "<html>oops</html>",
        );
        let r = src.poll().await;
        assert!(
            r.status.ok && r.jobs.is_empty(),
            "one broken application spoils only itself"
        );
        assert!(r.status.message.contains(APP), "{}", r.status.message);
    }

    /// A Spark UI under YARN redirects to the RM's proxy: followed. A slow
    /// UI (answering within the deadline) is waited for; a hung one is cut
    /// at the deadline (above).
    #[tokio::test]
    async fn a_spark_ui_behind_a_redirect_or_slow_is_still_polled() {
        let proxy = TestServer::start().await;
        serve(&proxy, false, 4, 1000, "RUNNING");
        let ui = TestServer::start().await;
        ui.fallback(Route::Redirect(proxy.url.clone()));
        let mut src = SparkSource::from_arg(&ui.url).unwrap();
        let r = src.poll().await;
        assert!(r.status.ok, "{}", r.status.message);
        assert_eq!(r.jobs.len(), 1);
        assert_eq!(ui.served(), 0, "the UI only redirected");

        let apps = "/api/v1/applications";
        let body = {
            let direct = TestServer::start().await;
            serve(&direct, false, 4, 1000, "RUNNING");
            reqwest::get(format!("{}{apps}", direct.url))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        };
        proxy.set(
            apps,
            Route::Slow(std::time::Duration::from_millis(1500), body),
        );
        let started = std::time::Instant::now();
        let r = src.poll().await;
        assert!(r.status.ok, "{}", r.status.message);
        assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
    }

    mod fuzz {
        //! The Spark monitoring REST documents as JSON from the network, one
        //! of them changed per case, into the source's mapping to jobs.
        use super::*;
        use crate::fuzzing::{CASES, config, json_like};
        use crate::jobs::source::check_sound;
        use proptest::prelude::*;

        /// Every document a poll reads, valid (a running application).
        fn documents() -> Vec<(String, String)> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let s = TestServer::start().await;
                serve(&s, false, 4, 1000, "RUNNING");
                s.routes()
            })
        }

        fn one_mutated() -> impl Strategy<Value = (usize, Vec<u8>)> {
            let docs = documents();
            (0..docs.len()).prop_flat_map(move |i| {
                json_like(vec![docs[i].1.clone().into_bytes()]).prop_map(move |b| (i, b))
            })
        }

        proptest! {
            // An HTTP server and a few requests per case.
            #![proptest_config(config(CASES / 10))]
            /// Every job the source reports is sound (`check_sound`), however
            /// one document is changed.
            #[test]
            fn fuzz_spark_documents((which, body) in one_mutated()) {
                let docs = documents();
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let s = TestServer::start().await;
                    for (i, (path, doc)) in docs.into_iter().enumerate() {
                        let body = if i == which { String::from_utf8_lossy(&body).into_owned() } else { doc };
                        s.json(&path, &body);
                    }
                    let mut src = SparkSource::from_arg(&s.url).unwrap();
                    for _ in 0..2 {
                        check_sound(&src.poll().await)?;
                    }
                    Ok::<(), TestCaseError>(())
                })?;
            }
        }
    }
}
