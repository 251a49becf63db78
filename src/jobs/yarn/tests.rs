//! Bodies follow the documented Hadoop 3 examples (ResourceManager REST,
//! MapReduce Application Master REST, History Server REST), trimmed of
//! fields we do not read but keeping their neighbours.
use super::*;
use crate::jobs::testserver::{Route, TestServer};
use crate::model::WorkloadKind;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

const TS: u64 = 1476912658570;

fn cluster_info(started_on: u64) -> String {
    json!({"clusterInfo": {"id": started_on, "startedOn": started_on, "state": "STARTED",
        "haState": "ACTIVE", "resourceManagerVersion": "3.3.6", "hadoopVersion": "3.3.6"}})
    .to_string()
}

fn metrics(running: u64, failed: u64) -> String {
    json!({"clusterMetrics": {"appsSubmitted": 2, "appsCompleted": 0, "appsPending": 0,
        "appsRunning": running, "appsFailed": failed, "appsKilled": 0, "availableMB": 17408,
        "allocatedMB": 2048, "containersAllocated": 2, "totalNodes": 2, "activeNodes": 2,
        "lostNodes": 0, "unhealthyNodes": 0}})
    .to_string()
}

fn app(
    ts: u64,
    seq: u32,
    name: &str,
    state: &str,
    final_status: &str,
    diagnostics: &str,
) -> serde_json::Value {
    json!({"id": format!("application_{ts}_{seq:04}"), "user": "hadoop", "name": name,
        "queue": "default", "state": state, "finalStatus": final_status, "progress": 50.0,
        "trackingUI": "ApplicationMaster", "diagnostics": diagnostics, "clusterId": ts,
        "applicationType": "MAPREDUCE", "applicationTags": "", "priority": 0,
        "startedTime": ts + 1000, "finishedTime": 0, "elapsedTime": 25000,
        "amContainerLogs": "http://worker-1:8042/node/containerlogs/container_1/hadoop",
        "amHostHttpAddress": "worker-1:8042", "allocatedMB": 2048, "allocatedVCores": 2,
        "runningContainers": 2})
}

fn am_jobs(ts: u64, seq: u32, map_progress: f64, maps_done: u64) -> String {
    json!({"jobs": {"job": [{"startTime": ts + 1500, "finishTime": 0, "elapsedTime": 24000,
        "id": format!("job_{ts}_{seq:04}"), "name": "TeraSort", "user": "hadoop",
        "state": "RUNNING", "mapsTotal": 4, "mapsCompleted": maps_done, "reducesTotal": 1,
        "reducesCompleted": 0, "mapProgress": map_progress, "reduceProgress": 0.0,
        "mapsPending": 0, "mapsRunning": 4 - maps_done, "reducesPending": 1,
        "reducesRunning": 0, "uberized": false, "diagnostics": "",
        "newReduceAttempts": 1, "runningReduceAttempts": 0, "failedReduceAttempts": 0,
        "killedReduceAttempts": 0, "successfulReduceAttempts": 0, "newMapAttempts": 0,
        "runningMapAttempts": 4, "failedMapAttempts": 0, "killedMapAttempts": 0,
        "successfulMapAttempts": maps_done}]}})
    .to_string()
}

fn counter(name: &str, total: u64) -> serde_json::Value {
    json!({"name": name, "reduceCounterValue": 0, "mapCounterValue": total, "totalCounterValue": total})
}

fn counters(id: &str, hdfs_read: u64, file_written: u64, cpu_ms: u64) -> String {
    json!({"jobCounters": {"id": id, "counterGroup": [
        {"counterGroupName": "Shuffle Errors", "counter": [counter("BAD_ID", 0), counter("IO_ERROR", 0)]},
        {"counterGroupName": "org.apache.hadoop.mapreduce.FileSystemCounter", "counter": [
            counter("FILE_BYTES_READ", 0), counter("FILE_BYTES_WRITTEN", file_written),
            counter("FILE_READ_OPS", 0), counter("HDFS_BYTES_READ", hdfs_read),
            counter("HDFS_BYTES_WRITTEN", 0), counter("HDFS_READ_OPS", 4)]},
        {"counterGroupName": "org.apache.hadoop.mapreduce.TaskCounter", "counter": [
            counter("MAP_INPUT_RECORDS", 10), counter("CPU_MILLISECONDS", cpu_ms),
            counter("GC_TIME_MILLIS", 12)]}]}})
    .to_string()
}

fn tasks(ts: u64, seq: u32) -> String {
    json!({"tasks": {"task": [{"progress": 40.0, "elapsedTime": 5000, "state": "RUNNING",
        "startTime": ts + 2000, "id": format!("task_{ts}_{seq:04}_m_000000"), "type": "MAP",
        "successfulAttempt": "", "finishTime": 0}]}})
    .to_string()
}

fn attempts(ts: u64, seq: u32) -> String {
    json!({"taskAttempts": {"taskAttempt": [{"assignedContainerId": "container_1_0002_01_000002",
        "progress": 40.0, "elapsedTime": 5000, "state": "RUNNING", "diagnostics": "",
        "rack": "/default-rack", "nodeHttpAddress": "10.77.3.4:8042", "type": "MAP",
        "startTime": ts + 2000, "id": format!("attempt_{ts}_{seq:04}_m_000000_0"),
        "finishTime": 0}]}})
    .to_string()
}

/// One running TeraSort (app 1) and one failed wordcount (app 2).
fn serve_cluster(s: &TestServer, ts: u64, progress: f64, maps_done: u64, hdfs_read: u64) {
    let job = format!("job_{ts}_0001");
    let proxy = format!("/proxy/application_{ts}_0001/ws/v1/mapreduce/jobs");
    s.json("/ws/v1/cluster/info", &cluster_info(ts));
    s.json("/ws/v1/cluster/metrics", &metrics(1, 1));
    let apps = json!({"apps": {"app": [
        app(ts, 1, "TeraSort", "RUNNING", "UNDEFINED", ""),
        app(ts, 2, "word count", "FAILED", "FAILED",
            "Application application_2 failed 2 times due to AM Container exited with exitCode: 1"),
    ]}});
    s.json("/ws/v1/cluster/apps", &apps.to_string());
    s.json(&proxy, &am_jobs(ts, 1, progress, maps_done));
    s.json(
        &format!("{proxy}/{job}/counters"),
        &counters(&job, hdfs_read, hdfs_read / 2, hdfs_read / 1000),
    );
    s.json(&format!("{proxy}/{job}/tasks"), &tasks(ts, 1));
    s.json(
        &format!("{proxy}/{job}/tasks/task_{ts}_0001_m_000000/attempts"),
        &attempts(ts, 1),
    );
}

async fn source(s: &TestServer) -> YarnSource {
    YarnSource::from_arg(&s.url).unwrap()
}

#[tokio::test]
async fn a_running_job_progresses_over_polls_with_rates_from_counter_deltas() {
    let s = TestServer::start().await;
    let mut src = source(&s).await;
    serve_cluster(&s, TS, 20.0, 0, 0);
    let r1 = src.poll().await;
    assert!(r1.status.ok, "{}", r1.status.message);
    assert!(
        r1.status
            .message
            .contains("1 running, 0 completed, 1 failed apps; 2 active nodes"),
        "{}",
        r1.status.message
    );
    let job = r1
        .jobs
        .iter()
        .find(|j| j.name == "TeraSort")
        .expect("the running job");
    assert_eq!(job.id, format!("job_{TS}_0001"));
    assert_eq!(
        (job.benchmark.as_deref(), job.kind),
        (Some("TeraSort"), Some(WorkloadKind::Io))
    );
    assert_eq!(job.progress_pct, 10.0, "(map 20 + reduce 0) / 2");
    assert_eq!(job.read_bps, None, "first poll: no delta yet");
    assert_eq!(
        job.hosts,
        ["worker-1", "10.77.3.4"],
        "AM host and task attempt node"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    serve_cluster(&s, TS, 80.0, 3, 3_000_000);
    let r2 = src.poll().await;
    let job = r2.jobs.iter().find(|j| j.name == "TeraSort").unwrap();
    assert_eq!(
        (job.progress_pct, job.maps_completed, job.maps_total),
        (40.0, 3, 4)
    );
    let read = job.read_bps.expect("rate after two polls");
    // 3 MB over ~0.3 s (poll time adds a little): a few MB/s, not zero, not absurd.
    assert!(read > 1_000_000.0 && read < 20_000_000.0, "{read}");
    assert!(job.write_bps.unwrap() > 0.0 && job.cpu_ms_per_s.unwrap() > 0.0);
    assert_eq!(job.history_bps.len(), 1);
    assert_eq!(job.bytes_read, 3_000_000);
}

#[tokio::test]
async fn a_failed_job_shows_its_diagnostics() {
    let s = TestServer::start().await;
    let mut src = source(&s).await;
    serve_cluster(&s, TS, 20.0, 0, 0);
    let r = src.poll().await;
    let failed = r.jobs.iter().find(|j| j.name == "word count").unwrap();
    assert_eq!(failed.state, "FAILED");
    assert!(failed.error.as_deref().unwrap().contains("exitCode: 1"));
    assert_eq!(failed.benchmark.as_deref(), Some("wordcount"));
}

#[tokio::test]
async fn finished_jobs_come_from_the_history_server() {
    let s = TestServer::start().await;
    let h = TestServer::start().await;
    let mut src = YarnSource::from_arg(&format!("{},history={}", s.url, h.url)).unwrap();
    s.json("/ws/v1/cluster/info", &cluster_info(TS));
    s.json("/ws/v1/cluster/metrics", &metrics(0, 0));
    let apps =
        json!({"apps": {"app": [app(TS, 3, "QuasiMonteCarlo", "FINISHED", "SUCCEEDED", "")]}});
    s.json("/ws/v1/cluster/apps", &apps.to_string());
    let job = format!("job_{TS}_0003");
    h.json("/ws/v1/history/mapreduce/jobs", &json!({"jobs": {"job": [{"submitTime": TS, "startTime": TS + 1000,
        "finishTime": TS + 11000, "id": job, "name": "QuasiMonteCarlo", "queue": "default", "user": "hadoop",
        "state": "SUCCEEDED", "mapsTotal": 10, "mapsCompleted": 10, "reducesTotal": 1, "reducesCompleted": 1}]}}).to_string());
    h.json(
        &format!("/ws/v1/history/mapreduce/jobs/{job}/counters"),
        &counters(&job, 10_000, 0, 20_000),
    );
    let r = src.poll().await;
    assert!(r.status.ok, "{}", r.status.message);
    let j = &r.jobs[0];
    assert_eq!(
        (j.state.as_str(), j.progress_pct, j.maps_completed),
        ("SUCCEEDED", 100.0, 10)
    );
    assert_eq!(
        (j.benchmark.as_deref(), j.kind),
        (Some("pi"), Some(WorkloadKind::Cpu))
    );
    assert_eq!(j.elapsed_s, 10.0);
    assert_eq!(
        j.cpu_ms_per_s,
        Some(2000.0),
        "20 s of CPU in 10 s: two busy cores"
    );
    assert_eq!(j.read_bps, Some(1000.0));
}

#[tokio::test]
async fn a_restarted_resource_manager_is_reported_and_rates_start_afresh() {
    let s = TestServer::start().await;
    let mut src = source(&s).await;
    serve_cluster(&s, TS, 20.0, 0, 5_000_000);
    src.poll().await;
    // Restart: new start time, application ids counted from 0001 again, counters low.
    let ts2 = TS + 500_000;
    serve_cluster(&s, ts2, 5.0, 0, 1000);
    let r = src.poll().await;
    assert!(r.status.ok);
    assert!(
        r.status.message.contains("ResourceManager restarted"),
        "{}",
        r.status.message
    );
    let job = r.jobs.iter().find(|j| j.name == "TeraSort").unwrap();
    assert_eq!(job.id, format!("job_{ts2}_0001"));
    assert_eq!(job.read_bps, None, "no rate across a restart");
    // Same ids as before but counters went backwards (e.g. an RM that kept its
    // start time): no negative rate either.
    serve_cluster(&s, ts2, 6.0, 0, 10);
    let r = src.poll().await;
    let job = r.jobs.iter().find(|j| j.name == "TeraSort").unwrap();
    assert_eq!(job.read_bps, None);
}

#[tokio::test]
async fn timeouts_and_malformed_json_give_a_clear_status_and_keep_the_last_jobs() {
    let s = TestServer::start().await;
    let mut src = source(&s).await;
    serve_cluster(&s, TS, 20.0, 0, 0);
    assert_eq!(src.poll().await.jobs.len(), 2);

    s.json("/ws/v1/cluster/apps", "{\"apps\": {\"app\": [ {\"id\": ");
    let r = src.poll().await;
    assert!(!r.status.ok);
    assert!(
        r.status.message.contains(
            "/ws/v1/cluster/apps?states=NEW,NEW_SAVING,SUBMITTED,ACCEPTED,RUNNING: malformed JSON"
        ),
        "{}",
        r.status.message
    );
    assert_eq!(r.jobs.len(), 2, "last known jobs still shown");

    s.set("/ws/v1/cluster/info", Route::Hang);
    let started = Instant::now();
    let r = src.poll().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a hung RM does not stall the poller"
    );
    assert!(!r.status.ok);
    assert!(
        r.status.message.contains("timeout after 3 s"),
        "{}",
        r.status.message
    );

    s.set("/ws/v1/cluster/info", Route::Status(503));
    let r = src.poll().await;
    assert!(
        r.status.message.contains("HTTP 503"),
        "{}",
        r.status.message
    );

    // An AM that answers garbage spoils only its own job, not the poll.
    serve_cluster(&s, TS, 20.0, 0, 0);
    s.json(
        &format!("/proxy/application_{TS}_0001/ws/v1/mapreduce/jobs"),
        "not json",
    );
    let r = src.poll().await;
    assert!(r.status.ok, "{}", r.status.message);
    assert!(
        r.status.message.contains("malformed JSON"),
        "{}",
        r.status.message
    );
    let job = r.jobs.iter().find(|j| j.name == "TeraSort").unwrap();
    assert_eq!(
        job.id,
        format!("application_{TS}_0001"),
        "falls back to the RM's view of the app"
    );

    let closed = YarnSource::from_arg("http://127.0.0.1:1")
        .unwrap()
        .poll()
        .await;
    assert!(
        !closed.status.ok && closed.status.message.contains("127.0.0.1:1"),
        "{}",
        closed.status.message
    );
    assert!(YarnSource::from_arg("http://rm:8088,bogus=1").is_err());
}

/// A test CA and a certificate for "localhost" it signed: (CA PEM, chain PEM, key PEM).
fn test_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// An HTTPS-only RM with its own CA: trusted with `ca=FILE`, refused
/// without it (the reason names the certificate).
#[tokio::test]
async fn an_https_rm_with_its_own_ca_is_polled_with_ca_file() {
    let (ca, chain, key) = test_ca();
    let s = TestServer::start_tls(&chain, &key).await;
    serve_cluster(&s, TS, 20.0, 0, 0);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();

    let mut trusted = YarnSource::from_arg(&format!("{},ca={}", s.url, ca_file.display())).unwrap();
    let r = trusted.poll().await;
    assert!(r.status.ok, "{}", r.status.message);
    assert_eq!(r.jobs.len(), 2);

    let mut untrusted = YarnSource::from_arg(&s.url).unwrap();
    let r = untrusted.poll().await;
    assert!(!r.status.ok);
    assert!(
        r.status.message.to_lowercase().contains("certificate"),
        "{}",
        r.status.message
    );
}

/// RM HA: a standby answers every REST call with a redirect to the active
/// RM, which is followed; given as two URLs, a dead first one is skipped
/// and the one that answered is asked first from then on.
#[tokio::test]
async fn a_standby_rm_is_followed_to_the_active_one() {
    let active = TestServer::start().await;
    serve_cluster(&active, TS, 20.0, 0, 0);
    let standby = TestServer::start().await;
    standby.fallback(Route::Redirect(active.url.clone()));
    let mut through_redirect = YarnSource::from_arg(&standby.url).unwrap();
    let r = through_redirect.poll().await;
    assert!(r.status.ok, "{}", r.status.message);
    assert_eq!(r.jobs.len(), 2);
    assert!(active.served() > 0 && standby.served() == 0);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{port}");
    let mut two_urls = YarnSource::from_arg(&format!("{dead},standby={}", active.url)).unwrap();
    let r = two_urls.poll().await;
    assert!(r.status.ok, "{}", r.status.message);
    assert_eq!(r.jobs.len(), 2);
    assert_eq!(two_urls.rm.display(), active.url, "the answering RM first");
}

/// An RM that remembers 100,000 finished applications costs a poll what one
/// with 10 does: both lists are asked filtered (`states`,
/// `finishedTimeBegin`, `limit`). The unfiltered list would be ~30 MB.
#[tokio::test]
async fn a_poll_costs_the_same_with_10_or_100000_finished_applications() {
    let mut per_poll = Vec::new();
    for finished in [10usize, 100_000] {
        let s = TestServer::start().await;
        serve_cluster(&s, TS, 20.0, 0, 0);
        s.set(
            "/ws/v1/cluster/apps",
            Route::Compute(Arc::new(move |target: &str| rm_app_list(target, finished))),
        );
        let mut src = source(&s).await;
        let started = Instant::now();
        let r = src.poll().await;
        let took = started.elapsed();
        assert!(r.status.ok, "{}", r.status.message);
        assert_eq!(r.jobs.len(), 1, "the running application only");
        let unfiltered = rm_app_list("/ws/v1/cluster/apps", finished).len();
        eprintln!(
            "{finished} finished applications: a poll read {} bytes in {:.1} ms (the unfiltered list: {unfiltered} bytes)",
            s.served(),
            took.as_secs_f64() * 1e3
        );
        per_poll.push(s.served());
    }
    assert_eq!(per_poll[0], per_poll[1], "bytes read per poll");
}

/// What an RM answers to `/ws/v1/cluster/apps[?states=..&finishedTimeBegin=..&limit=..]`
/// with one running TeraSort and `finished` applications that ended long ago.
fn rm_app_list(target: &str, finished: usize) -> String {
    let query: HashMap<&str, &str> = target
        .split_once('?')
        .map(|(_, q)| q.split('&').filter_map(|kv| kv.split_once('=')).collect())
        .unwrap_or_default();
    let states: Option<Vec<&str>> = query.get("states").map(|s| s.split(',').collect());
    let since: u64 = query
        .get("finishedTimeBegin")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    // Builds only what the filters let through: a fixture that made 100,000
    // JSON values per request missed the source's 3 s limit on a loaded machine.
    let wanted = |state: &str| states.as_ref().is_none_or(|s| s.contains(&state));
    let mut apps = Vec::new();
    if wanted("RUNNING") {
        apps.push(app(TS, 1, "TeraSort", "RUNNING", "UNDEFINED", ""));
    }
    if wanted("FINISHED") {
        // Application i finished at 1,000 + i.
        let first = (since.saturating_sub(1_000) as usize).min(finished);
        for i in first..finished {
            if apps.len() >= limit {
                break;
            }
            let mut a = app(TS, 10 + i as u32, "old job", "FINISHED", "SUCCEEDED", "");
            a["finishedTime"] = json!(1_000 + i as u64);
            apps.push(a);
        }
    }
    apps.truncate(limit);
    json!({"apps": {"app": apps}}).to_string()
}

#[tokio::test]
async fn a_killed_or_failed_finished_job_shows_the_share_of_tasks_it_completed() {
    let s = TestServer::start().await;
    let h = TestServer::start().await;
    let mut src = YarnSource::from_arg(&format!("{},history={}", s.url, h.url)).unwrap();
    s.json("/ws/v1/cluster/info", &cluster_info(TS));
    s.json("/ws/v1/cluster/metrics", &metrics(0, 0));
    let apps = json!({"apps": {"app": [
        app(TS, 4, "TeraSort", "KILLED", "KILLED", "killed by user"),
        app(TS, 5, "word count", "FINISHED", "FAILED", "task failed"),
    ]}});
    s.json("/ws/v1/cluster/apps", &apps.to_string());
    let history = |seq: u32, state: &str, maps: u64, reduces: u64| {
        json!({"submitTime": TS, "startTime": TS + 1000, "finishTime": TS + 11000,
            "id": format!("job_{TS}_000{seq}"), "name": "x", "queue": "default", "user": "hadoop",
            "state": state, "mapsTotal": 10, "mapsCompleted": maps, "reducesTotal": 2,
            "reducesCompleted": reduces})
    };
    h.json(
        "/ws/v1/history/mapreduce/jobs",
        &json!({"jobs": {"job": [history(4, "KILLED", 4, 0), history(5, "FAILED", 10, 1)]}})
            .to_string(),
    );
    for seq in [4, 5] {
        let job = format!("job_{TS}_000{seq}");
        h.json(
            &format!("/ws/v1/history/mapreduce/jobs/{job}/counters"),
            &counters(&job, 0, 0, 0),
        );
    }
    let r = src.poll().await;
    let progress: Vec<(&str, f64)> = r
        .jobs
        .iter()
        .map(|j| (j.state.as_str(), j.progress_pct))
        .collect();
    // Maps and reduces weigh half each, as for running jobs: not 100%.
    assert_eq!(
        progress,
        [("KILLED", 20.0), ("FAILED", 75.0)],
        "{:?}",
        r.jobs
    );
}

mod fuzz {
    //! The YARN documents (ResourceManager, Application Master through the RM
    //! proxy, History Server) as JSON from the network, one of them mutated per
    //! case, into the source's mapping to jobs (`YarnSource::poll`).
    use super::*;
    use crate::fuzzing::{CASES, config, json_like};
    use crate::jobs::source::check_sound;
    use proptest::prelude::*;

    /// Every document a poll reads, valid: a running TeraSort, a failed word
    /// count, a finished pi job on the history server.
    fn documents() -> Vec<(bool, String, String)> {
        let ts = TS;
        let job = format!("job_{ts}_0001");
        let proxy = format!("/proxy/application_{ts}_0001/ws/v1/mapreduce/jobs");
        let apps = json!({"apps": {"app": [
            app(ts, 1, "TeraSort", "RUNNING", "UNDEFINED", ""),
            app(ts, 2, "word count", "FAILED", "FAILED", "exitCode: 1"),
            app(ts, 3, "QuasiMonteCarlo", "FINISHED", "SUCCEEDED", ""),
        ]}});
        let history = json!({"jobs": {"job": [{"submitTime": ts, "startTime": ts + 1000,
            "finishTime": ts + 11000, "id": format!("job_{ts}_0003"), "name": "QuasiMonteCarlo",
            "queue": "default", "user": "hadoop", "state": "SUCCEEDED", "mapsTotal": 10,
            "mapsCompleted": 10, "reducesTotal": 1, "reducesCompleted": 1}]}});
        let finished = format!("job_{ts}_0003");
        vec![
            (false, "/ws/v1/cluster/info".into(), cluster_info(ts)),
            (false, "/ws/v1/cluster/metrics".into(), metrics(1, 1)),
            (false, "/ws/v1/cluster/apps".into(), apps.to_string()),
            (false, proxy.clone(), am_jobs(ts, 1, 40.0, 2)),
            (
                false,
                format!("{proxy}/{job}/counters"),
                counters(&job, 3_000_000, 1_500_000, 3000),
            ),
            (false, format!("{proxy}/{job}/tasks"), tasks(ts, 1)),
            (
                false,
                format!("{proxy}/{job}/tasks/task_{ts}_0001_m_000000/attempts"),
                attempts(ts, 1),
            ),
            (
                true,
                "/ws/v1/history/mapreduce/jobs".into(),
                history.to_string(),
            ),
            (
                true,
                format!("/ws/v1/history/mapreduce/jobs/{finished}/counters"),
                counters(&finished, 10_000, 0, 20_000),
            ),
        ]
    }

    fn one_mutated() -> impl Strategy<Value = (usize, Vec<u8>)> {
        let docs = documents();
        (0..docs.len()).prop_flat_map(move |i| {
            json_like(vec![docs[i].2.clone().into_bytes()]).prop_map(move |b| (i, b))
        })
    }

    proptest! {
        // Two HTTP servers and a dozen requests per case.
        #![proptest_config(config(CASES / 10))]
        /// Every job the source reports is sound (`check_sound`) and the
        /// source says whether its poll worked, whatever one document holds.
        #[test]
        fn fuzz_yarn_documents((which, body) in one_mutated()) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (rm, hs) = (TestServer::start().await, TestServer::start().await);
                for (i, (history, path, doc)) in documents().into_iter().enumerate() {
                    let body = if i == which { String::from_utf8_lossy(&body).into_owned() } else { doc };
                    if history { hs.json(&path, &body) } else { rm.json(&path, &body) }
                }
                let mut src = YarnSource::from_arg(&format!("{},history={}", rm.url, hs.url)).unwrap();
                for _ in 0..2 {
                    check_sound(&src.poll().await)?;
                }
                Ok::<(), TestCaseError>(())
            })?;
        }
    }
}
