//! Bodies shaped like the Spark monitoring REST API's (Spark 3.x and 4.x).
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
    s.json(
        &format!("{p}/jobs"),
        &json!([{"jobId": 0, "name": "reduce at SparkPi.scala:38",
        "submissionTime": "2026-11-25T20:15:02.000GMT", "stageIds": [0], "status": job_status,
        "numTasks": 10, "numActiveTasks": 10 - tasks_done, "numCompletedTasks": tasks_done,
        "numSkippedTasks": 0, "numFailedTasks": 0, "numKilledTasks": 0,
        "numCompletedIndices": tasks_done, "numActiveStages": 1, "numCompletedStages": 0,
        "numSkippedStages": 0, "numFailedStages": 0, "killedTasksSummary": {}}])
        .to_string(),
    );
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
        (j.benchmark.as_deref(), j.kind, j.parent.as_deref()),
        (Some("pi"), Some(WorkloadKind::Cpu), None),
        "the application names the benchmark; its one group says what it is bound by"
    );
    let group = &r.jobs[1];
    assert_eq!(
        (group.id.as_str(), group.parent.as_deref()),
        (&*format!("{APP}/reduce at SparkPi.scala:38"), Some(APP))
    );
    assert_eq!(
        group.kind,
        Some(WorkloadKind::Cpu),
        "1,100 B moved in 0.9 s of tasks"
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
    assert_eq!(
        r.jobs.len(),
        2,
        "last known application and group still shown"
    );
    assert_eq!(r.jobs[0].state, "FAILED", "a broken answer does not end it");

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
    assert_eq!(r.jobs.len(), 2, "the application and its one group");
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

const MIB: u64 = 1024 * 1024;

/// An application running an I/O phase (job group "io": write then read
/// 64 MiB) and then a CPU phase (job group "cpu"), named like the I/O
/// benchmark; `cpu_done` of the CPU job's 4 tasks done.
fn serve_phases(s: &TestServer, cpu_done: u64) {
    s.json(
        "/api/v1/applications",
        &json!([{"id": APP, "name": "TestDFSIO then pi", "attempts": [{
            "duration": 30000, "sparkUser": "spark", "completed": false}]}])
        .to_string(),
    );
    let p = format!("/api/v1/applications/{APP}");
    let job = |id: u64, group: &str, desc: &str, status: &str, done: u64| {
        json!({"jobId": id, "name": format!("job {id} at phases.py:{id}"),
            "description": desc, "jobGroup": group, "stageIds": [id], "status": status,
            "numTasks": 4, "numCompletedTasks": done, "numSkippedTasks": 0})
    };
    let cpu_status = if cpu_done == 4 {
        "SUCCEEDED"
    } else {
        "RUNNING"
    };
    s.json(
        &format!("{p}/jobs"),
        // Newest first, as Spark lists them.
        &json!([
            job(2, "cpu", "CPU phase: hash loop", cpu_status, cpu_done),
            job(1, "io", "I/O phase: write and read 64 MiB", "SUCCEEDED", 4),
            job(0, "io", "I/O phase: write and read 64 MiB", "SUCCEEDED", 4),
        ])
        .to_string(),
    );
    let stage = |id: u64, status: &str, input: u64, output: u64, run_ms: u64| {
        json!({"stageId": id, "attemptId": 0, "status": status, "inputBytes": input,
            "outputBytes": output, "shuffleReadBytes": 0, "shuffleWriteBytes": 0,
            "executorRunTime": run_ms, "executorCpuTime": run_ms * 900_000})
    };
    s.json(
        &format!("{p}/stages"),
        &json!([
            stage(
                2,
                if cpu_done == 4 { "COMPLETE" } else { "ACTIVE" },
                0,
                0,
                5_000 * cpu_done
            ),
            stage(1, "COMPLETE", 64 * MIB, 0, 2_000),
            stage(0, "COMPLETE", 0, 64 * MIB, 3_000),
        ])
        .to_string(),
    );
    s.json(
        &format!("{p}/executors"),
        &json!([{"id": "driver", "hostPort": "10.77.0.9:40123"}]).to_string(),
    );
}

#[tokio::test]
async fn job_groups_are_rows_under_their_application_classified_by_their_own_counters() {
    let s = TestServer::start().await;
    serve_phases(&s, 2);
    let mut src = SparkSource::from_arg(&s.url).unwrap();
    let r = src.poll().await;
    assert!(r.status.ok, "{}", r.status.message);
    type Row<'a> = (&'a str, Option<&'a str>, &'a str, Option<WorkloadKind>, f64);
    let rows: Vec<Row> = r
        .jobs
        .iter()
        .map(|j| {
            let parent = j.parent.as_deref();
            (
                j.name.as_str(),
                parent,
                j.state.as_str(),
                j.kind,
                j.progress_pct,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "TestDFSIO then pi",
                None,
                "RUNNING",
                None,
                83.33333333333333
            ),
            (
                "I/O phase: write and read 64 MiB",
                Some(APP),
                "SUCCEEDED",
                Some(WorkloadKind::Io),
                100.0
            ),
            (
                "CPU phase: hash loop",
                Some(APP),
                "RUNNING",
                Some(WorkloadKind::Cpu),
                50.0
            ),
        ]
    );
    let (app, io, cpu) = (&r.jobs[0], &r.jobs[1], &r.jobs[2]);
    assert_eq!((io.bytes_read, io.bytes_written), (64 * MIB, 64 * MIB));
    assert_eq!((cpu.bytes_read, cpu.bytes_written), (0, 0));
    assert_eq!((app.bytes_read, app.bytes_written), (64 * MIB, 64 * MIB));
    assert_eq!((app.jobs_completed, app.jobs_total), (2, 3));
    assert_eq!((io.jobs_completed, io.jobs_total), (2, 2));
    assert_eq!(app.benchmark.as_deref(), Some("TestDFSIO"));
    assert_eq!(cpu.hosts, ["10.77.0.9"]);
}

#[tokio::test]
async fn progress_never_goes_backwards_when_more_jobs_are_submitted() {
    let s = TestServer::start().await;
    serve_phases(&s, 4);
    let mut src = SparkSource::from_arg(&s.url).unwrap();
    let before = src.poll().await.jobs;
    assert_eq!(before[0].progress_pct, 100.0, "all 12 tasks done");
    // A fourth job joins the CPU group: 13 of 16 tasks, 3 of 4 jobs.
    let p = format!("/api/v1/applications/{APP}/jobs");
    let mut jobs: serde_json::Value =
        serde_json::from_str(&s.routes().into_iter().find(|r| r.0 == p).unwrap().1).unwrap();
    jobs.as_array_mut().unwrap().insert(
        0,
        json!({"jobId": 3, "name": "job 3",
        "jobGroup": "cpu", "description": "CPU phase: hash loop", "stageIds": [3],
        "status": "RUNNING", "numTasks": 4, "numCompletedTasks": 1}),
    );
    s.json(&p, &jobs.to_string());
    let after = src.poll().await.jobs;
    for (b, a) in before.iter().zip(&after) {
        assert!(
            a.progress_pct >= b.progress_pct,
            "{} went back: {b:?} -> {a:?}",
            a.name
        );
    }
    assert_eq!((after[0].jobs_completed, after[0].jobs_total), (3, 4));
    assert_eq!((after[2].jobs_completed, after[2].jobs_total), (1, 2));
    assert_eq!((after[2].maps_completed, after[2].maps_total), (5, 8));
    assert_eq!(after[2].state, "RUNNING");
}

#[tokio::test]
async fn an_application_the_ui_stops_serving_is_marked_ended() {
    let s = TestServer::start().await;
    serve_phases(&s, 2);
    let mut src = SparkSource::from_arg(&s.url).unwrap();
    assert_eq!(src.poll().await.jobs[0].state, "RUNNING");

    // The driver's UI went away with its application: nobody answers.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    s.set(
        "/api/v1/applications",
        Route::Redirect(format!("{dead}/api/v1/applications")),
    );
    let r = src.poll().await;
    assert!(
        !r.status.ok,
        "the source says it failed: {}",
        r.status.message
    );
    let states: Vec<&str> = r.jobs.iter().map(|j| j.state.as_str()).collect();
    assert_eq!(states, ["ENDED", "SUCCEEDED", "ENDED"]);
    for j in &r.jobs {
        let note = j.note.as_deref().unwrap_or_default();
        assert!(note.starts_with("UI gone, last seen 20"), "{note}");
        assert_eq!(j.read_bps, None, "no rates for what no longer runs");
    }
    assert_eq!(r.jobs[2].progress_pct, 50.0, "as last seen");
    let again = src.poll().await;
    assert_eq!(again.jobs, r.jobs, "stays ended, listed");

    // A UI that answers without the application ends it too.
    let s2 = TestServer::start().await;
    serve_phases(&s2, 2);
    let mut src = SparkSource::from_arg(&s2.url).unwrap();
    src.poll().await;
    s2.json("/api/v1/applications", "[]");
    let r = src.poll().await;
    assert!(r.status.ok, "{}", r.status.message);
    assert_eq!(r.jobs[0].state, "ENDED");
}

#[tokio::test]
async fn an_ended_application_is_read_from_the_history_server() {
    let ui = TestServer::start().await;
    serve_phases(&ui, 2);
    let history = TestServer::start().await;
    let mut src = SparkSource::from_arg(&format!("{},history={}", ui.url, history.url)).unwrap();
    assert_eq!(src.poll().await.jobs[0].state, "RUNNING");

    serve_phases(&history, 4);
    let app = json!({"id": APP, "name": "TestDFSIO then pi", "attempts": [{
        "duration": 41000, "sparkUser": "spark", "completed": true}]});
    history.json(&format!("/api/v1/applications/{APP}"), &app.to_string());
    ui.json("/api/v1/applications", "[]");
    let r = src.poll().await;
    assert!(r.status.ok, "{}", r.status.message);
    let rows: Vec<(&str, f64, Option<&str>)> = r
        .jobs
        .iter()
        .map(|j| (j.state.as_str(), j.progress_pct, j.note.as_deref()))
        .collect();
    assert_eq!(
        rows,
        [
            ("COMPLETED", 100.0, Some(FROM_HISTORY)),
            ("SUCCEEDED", 100.0, Some(FROM_HISTORY)),
            ("SUCCEEDED", 100.0, Some(FROM_HISTORY)),
        ]
    );
    assert_eq!(r.jobs[0].elapsed_s, 41.0);

    // Without the application in the history server: ended, saying why.
    let ui = TestServer::start().await;
    serve_phases(&ui, 2);
    let mut src = SparkSource::from_arg(&format!("{},history={}", ui.url, history.url)).unwrap();
    src.poll().await;
    history.set(&format!("/api/v1/applications/{APP}"), Route::Status(404));
    ui.json("/api/v1/applications", "[]");
    let r = src.poll().await;
    let note = r.jobs[0].note.as_deref().unwrap();
    assert!(
        note.starts_with("UI gone, last seen")
            && note.contains("history server: GET")
            && note.contains("HTTP 404"),
        "{note}"
    );
    assert_eq!(r.jobs[0].state, "ENDED");
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
