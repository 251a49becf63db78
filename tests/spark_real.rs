//! A real Spark application watched by a real node: pyspark (pinned, installed
//! by scripts/setup.sh into ~/.cache/peervisor) runs tests/spark/phases.py, a
//! local job with an I/O phase and a CPU phase in separate job groups, and a
//! node started with `--spark http://127.0.0.1:UI_PORT` polls its UI. At each
//! point where the job waits for the test, the node's rows (`status --json`)
//! are checked against Spark's own REST answers taken then: one row per job
//! group under the application row, each group's bytes, jobs and tasks, its
//! classification, progress that never went back, and, once the driver has
//! stopped, the application marked ended.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{NodeOptions, TestNode, eventually, free_port, fresh_key};
use serde_json::Value;

/// The pyspark scripts/setup.sh installs (its version is pinned there).
const PYSPARK_VENV: &str = ".cache/peervisor/pyspark-4.0.1";
/// MiB the I/O phase writes and reads back.
const IO_MIB: u64 = 32;

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("PEERVISOR_PYSPARK_PYTHON") {
        return p.into();
    }
    let home = std::env::var("HOME").expect("HOME");
    let p = Path::new(&home).join(PYSPARK_VENV).join("bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (it installs pyspark and a JRE)",
        p.display()
    );
    p
}

/// The Spark driver (python and its JVM), killed with its process group.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let pgid = self.0.id() as i32;
        // SAFETY: kill(2) on the process group this test created.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

fn get(url: &str) -> Value {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "10", url])
        .output()
        .expect("curl");
    assert!(out.status.success(), "GET {url} failed");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// What Spark's REST API says of one job group: (jobs done, jobs, tasks
/// done, tasks, bytes read, bytes written), summed as an operator would.
fn spark_group(ui: &str, app: &str, group: &str) -> (u64, u64, u64, u64, u64, u64) {
    let jobs = get(&format!("{ui}/api/v1/applications/{app}/jobs"));
    let stages = get(&format!("{ui}/api/v1/applications/{app}/stages"));
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let mine: Vec<&Value> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["jobGroup"] == group)
        .collect();
    let stage_ids: Vec<u64> = mine
        .iter()
        .flat_map(|j| j["stageIds"].as_array().unwrap().iter())
        .filter_map(Value::as_u64)
        .collect();
    let (mut read, mut written) = (0, 0);
    for s in stages.as_array().unwrap() {
        if stage_ids.contains(&n(s, "stageId")) {
            read += n(s, "inputBytes") + n(s, "shuffleReadBytes");
            written += n(s, "outputBytes") + n(s, "shuffleWriteBytes");
        }
    }
    let done = mine.iter().filter(|j| j["status"] == "SUCCEEDED").count() as u64;
    let tasks_done = mine
        .iter()
        .map(|j| n(j, "numCompletedTasks") + n(j, "numSkippedTasks"))
        .sum();
    let tasks = mine.iter().map(|j| n(j, "numTasks")).sum();
    (done, mine.len() as u64, tasks_done, tasks, read, written)
}

/// The node's rows of the Spark source.
fn rows(node: &TestNode) -> Vec<Value> {
    node.status()["jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|j| j["source"] == "spark")
        .collect()
}

fn row<'a>(rows: &'a [Value], id: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["id"] == id)
}

/// A row's figures in the shape of `spark_group`.
fn figures(r: &Value) -> (u64, u64, u64, u64, u64, u64) {
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    (
        n("jobs_completed"),
        n("jobs_total"),
        n("maps_completed"),
        n("maps_total"),
        n("bytes_read"),
        n("bytes_written"),
    )
}

/// Every row's progress, to check none ever goes back.
#[derive(Default)]
struct Progress(std::collections::HashMap<String, f64>);

impl Progress {
    fn record(&mut self, rows: &[Value]) {
        for r in rows {
            let id = r["id"].as_str().unwrap().to_string();
            let pct = r["progress_pct"].as_f64().unwrap();
            if let Some(before) = self.0.insert(id.clone(), pct) {
                assert!(pct >= before, "{id}: progress went back {before} -> {pct}");
            }
        }
    }
}

/// Waits for the job's mark file, recording the node's rows meanwhile.
fn wait_mark(
    work: &Path,
    name: &str,
    node: &TestNode,
    progress: &mut Progress,
    driver: &mut Driver,
) {
    let found = eventually(Duration::from_secs(240), || {
        progress.record(&rows(node));
        if let Ok(Some(status)) = driver.0.try_wait() {
            panic!("the Spark job exited early ({status}) before {name}");
        }
        work.join(name).exists()
    });
    assert!(found, "the Spark job never reached {name}");
}

/// Waits until the node's row `id` shows Spark's `expected` figures, and
/// returns it.
fn agreed(
    node: &TestNode,
    id: &str,
    expected: (u64, u64, u64, u64, u64, u64),
    progress: &mut Progress,
) -> Value {
    let mut last = Vec::new();
    let ok = eventually(Duration::from_secs(30), || {
        last = rows(node);
        progress.record(&last);
        row(&last, id).is_some_and(|r| figures(r) == expected)
    });
    let got = row(&last, id).cloned();
    assert!(
        ok,
        "{id}: the node never showed Spark's figures {expected:?}; it shows {:?} ({got:?})",
        got.as_ref().map(figures)
    );
    got.unwrap()
}

#[test]
fn a_real_spark_job_is_shown_as_its_job_groups_classified_with_progress_and_end() {
    let python = python();
    let work = tempfile::Builder::new()
        .prefix("pv-spark-")
        .tempdir()
        .unwrap();
    let port = free_port();
    let ui = format!("http://127.0.0.1:{port}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spark/phases.py");
    let log = std::fs::File::create(work.path().join("driver.log")).unwrap();
    let mut driver = Driver(
        Command::new(&python)
            .arg(&script)
            .arg(work.path())
            .arg(port.to_string())
            .arg(IO_MIB.to_string())
            .env("PYSPARK_PYTHON", &python)
            .env("SPARK_LOCAL_IP", "127.0.0.1")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the Spark job"),
    );
    let key = fresh_key();
    let node = TestNode::start(NodeOptions {
        nick: "spark",
        key: &key,
        bootstrap: None,
        hypervisor: Some("test:///default"),
        guest_netns: "unused",
        extra: &["--spark", &ui],
    });
    let mut progress = Progress::default();
    let driver_log = || std::fs::read_to_string(work.path().join("driver.log")).unwrap_or_default();

    // The I/O phase done: its group's row agrees with Spark, I/O-bound.
    wait_mark(work.path(), "io-done", &node, &mut progress, &mut driver);
    let apps = get(&format!("{ui}/api/v1/applications"));
    let app = apps[0]["id"].as_str().expect("one application").to_string();
    let io_id = format!("{app}/io");
    let cpu_id = format!("{app}/cpu");
    let spark_io = spark_group(&ui, &app, "io");
    assert_eq!((spark_io.0, spark_io.1), (2, 2), "{}", driver_log());
    assert!(
        spark_io.4 >= IO_MIB << 20 && spark_io.5 >= IO_MIB << 20,
        "{spark_io:?}"
    );
    let io = agreed(&node, &io_id, spark_io, &mut progress);
    assert_eq!(
        io["name"],
        format!("I/O phase: write and read {IO_MIB} MiB")
    );
    assert_eq!(io["parent"], app.as_str());
    assert_eq!(io["kind"], "io", "{io}");
    assert_eq!(
        (io["state"].as_str(), io["progress_pct"].as_f64()),
        (Some("SUCCEEDED"), Some(100.0))
    );
    let all = rows(&node);
    assert_eq!(
        all[0]["id"],
        app.as_str(),
        "the application first, its groups under it"
    );
    assert_eq!(all[0]["name"], "peervisor phases");
    assert_eq!(all[0]["state"], "RUNNING");
    assert!(all[0]["parent"].is_null());

    // The first CPU job done: a CPU-bound group of one job.
    std::fs::write(work.path().join("go-cpu"), "").unwrap();
    wait_mark(work.path(), "cpu-one", &node, &mut progress, &mut driver);
    let spark_cpu = spark_group(&ui, &app, "cpu");
    assert_eq!((spark_cpu.0, spark_cpu.1), (1, 1));
    let cpu = agreed(&node, &cpu_id, spark_cpu, &mut progress);
    assert_eq!(cpu["kind"], "cpu", "{cpu}");
    assert_eq!(cpu["progress_pct"].as_f64(), Some(100.0));
    assert_eq!(
        row(&rows(&node), &io_id).unwrap()["kind"],
        "io",
        "each group keeps its own kind"
    );

    // A second CPU job, its two tasks held running: the group's totals grow
    // (1 of 2 jobs, 4 of 6 tasks in Spark's answer), its gauge does not go back.
    std::fs::write(work.path().join("go-cpu2"), "").unwrap();
    for i in 0..2 {
        wait_mark(
            work.path(),
            &format!("wait-{i}"),
            &node,
            &mut progress,
            &mut driver,
        );
    }
    let spark_cpu = spark_group(&ui, &app, "cpu");
    assert_eq!(
        (spark_cpu.0, spark_cpu.1, spark_cpu.2, spark_cpu.3),
        (1, 2, 4, 6),
        "{spark_cpu:?}"
    );
    let cpu = agreed(&node, &cpu_id, spark_cpu, &mut progress);
    assert_eq!(cpu["state"], "RUNNING");
    assert_eq!(cpu["progress_pct"].as_f64(), Some(100.0), "kept, not 67%");
    let app_row = row(&rows(&node), &app).cloned().unwrap();
    assert_eq!(
        (
            app_row["jobs_completed"].as_u64(),
            app_row["jobs_total"].as_u64()
        ),
        (Some(3), Some(4))
    );

    // The job finishes, then the driver stops: its UI goes, the rows end.
    std::fs::write(work.path().join("go-finish"), "").unwrap();
    wait_mark(work.path(), "cpu-done", &node, &mut progress, &mut driver);
    let spark_cpu = spark_group(&ui, &app, "cpu");
    let cpu = agreed(&node, &cpu_id, spark_cpu, &mut progress);
    assert_eq!(
        (cpu["state"].as_str(), cpu["kind"].as_str()),
        (Some("SUCCEEDED"), Some("cpu"))
    );
    std::fs::write(work.path().join("go-end"), "").unwrap();
    let exited = eventually(Duration::from_secs(120), || {
        matches!(driver.0.try_wait(), Ok(Some(_)))
    });
    assert!(exited, "the driver did not stop: {}", driver_log());
    let mut last = Vec::new();
    let ended = eventually(Duration::from_secs(30), || {
        last = rows(&node);
        progress.record(&last);
        row(&last, &app).is_some_and(|r| r["state"] == "ENDED")
    });
    assert!(ended, "the application was not marked ended: {last:?}");
    let app_row = row(&last, &app).unwrap();
    let note = app_row["note"].as_str().unwrap_or_default();
    assert!(note.starts_with("UI gone, last seen 20"), "{app_row}");
    let groups: Vec<(&str, &str)> = last
        .iter()
        .filter(|r| r["parent"] == app.as_str())
        .map(|r| (r["name"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        groups,
        [
            ("I/O phase: write and read 32 MiB", "SUCCEEDED"),
            ("CPU phase: SHA-256 loops", "SUCCEEDED"),
        ]
    );
}
