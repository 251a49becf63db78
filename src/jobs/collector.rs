//! Runs the configured job sources in the background of a node and keeps their
//! latest answers (and the penalty benchmark's progress file) ready for
//! `Status`: the status call only copies, it never waits on a source.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

use super::source::{JobSource, SourceReport};
use super::spark::SparkSource;
use super::yarn::YarnSource;
use crate::model::{JobView, PenaltyView, Status, VmView};

/// The penalty benchmark's progress and results in a node's bench dir, written
/// by `peervisor bench penalty` while it runs and at its end; `Status.penalty`
/// shows it.
pub const PENALTY_LATEST: &str = "penalty-latest.json";

const POLL_EVERY: Duration = Duration::from_secs(crate::model::JOB_POLL_EVERY_S);

#[derive(Default)]
struct Latest {
    /// One slot per source, in configuration order.
    reports: Vec<SourceReport>,
    penalty: Option<PenaltyView>,
}

#[derive(Clone, Default)]
pub struct Collector {
    latest: Arc<Mutex<Latest>>,
}

impl Collector {
    /// Parses the source URLs (a bad one is an error naming it) and starts one
    /// polling task per source plus one watching `<bench_dir>/penalty-latest.json`.
    pub fn start(yarn: &[String], spark: &[String], bench_dir: PathBuf) -> Result<Collector> {
        let mut sources: Vec<Box<dyn JobSource>> = Vec::new();
        for url in yarn {
            sources.push(Box::new(
                YarnSource::from_arg(url).map_err(|e| anyhow::anyhow!("--yarn: {e:#}"))?,
            ));
        }
        for url in spark {
            sources.push(Box::new(
                SparkSource::from_arg(url).map_err(|e| anyhow::anyhow!("--spark: {e:#}"))?,
            ));
        }
        let collector = Collector::default();
        if let Ok(mut l) = collector.latest.lock() {
            l.reports = vec![SourceReport::default(); sources.len()];
        }
        for (slot, mut source) in sources.into_iter().enumerate() {
            let latest = collector.latest.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(POLL_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let report = source.poll().await;
                    match latest.lock() {
                        Ok(mut l) => l.reports[slot] = report,
                        Err(_) => return,
                    }
                }
            });
        }
        let latest = collector.latest.clone();
        tokio::spawn(async move {
            let path = bench_dir.join(PENALTY_LATEST);
            loop {
                let view = read_penalty(&path).await;
                match latest.lock() {
                    Ok(mut l) => l.penalty = view,
                    Err(_) => return,
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(collector)
    }

    /// Copies the latest jobs, source states and penalty run into `status`,
    /// linking jobs to this peer's VMs.
    pub fn fill(&self, status: &mut Status) {
        let Ok(l) = self.latest.lock() else { return };
        status.job_sources = l
            .reports
            .iter()
            .filter(|r| !r.status.url.is_empty())
            .map(|r| r.status.clone())
            .collect();
        status.jobs = l
            .reports
            .iter()
            .flat_map(|r| r.jobs.iter().cloned())
            .collect();
        for job in &mut status.jobs {
            link_vms(job, &status.vms);
        }
        status.penalty = l.penalty.clone();
    }
}

/// A run still "running" whose file has not changed for this long was interrupted.
const STALE_RUN: Duration = Duration::from_secs(15 * 60);

async fn read_penalty(path: &std::path::Path) -> Option<PenaltyView> {
    let bytes = tokio::fs::read(path).await.ok()?;
    let mut view: PenaltyView = serde_json::from_slice(&bytes).ok()?;
    let age = tokio::fs::metadata(path)
        .await
        .ok()?
        .modified()
        .ok()?
        .elapsed()
        .unwrap_or_default();
    if view.state == "running" && age > STALE_RUN {
        view.state = "interrupted".into();
    }
    Some(view)
}

/// A job runs on a VM when one of its hosts is the VM's name or address.
pub fn link_vms(job: &mut JobView, vms: &[VmView]) {
    job.vms = vms
        .iter()
        .filter(|vm| {
            job.hosts.iter().any(|h| {
                h.eq_ignore_ascii_case(&vm.name)
                    || h.split('.')
                        .next()
                        .is_some_and(|short| short.eq_ignore_ascii_case(&vm.name))
                    || vm.ip.as_deref() == Some(h.as_str())
            })
        })
        .map(|vm| vm.name.to_string())
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::testserver::TestServer;

    #[test]
    fn jobs_link_to_vms_by_name_or_address() {
        let vms = vec![
            VmView {
                name: "worker-1".into(),
                ip: Some("10.77.3.4".into()),
                ..VmView::default()
            },
            VmView {
                name: "worker-2".into(),
                ip: Some("10.77.3.5".into()),
                ..VmView::default()
            },
            VmView {
                name: "web".into(),
                ..VmView::default()
            },
        ];
        let mut job = JobView {
            hosts: vec!["worker-1.cluster.local".into(), "10.77.3.5".into()],
            ..JobView::default()
        };
        link_vms(&mut job, &vms);
        assert_eq!(job.vms, ["worker-1", "worker-2"]);
    }

    #[tokio::test]
    async fn status_gets_the_sources_latest_answers_and_the_penalty_run() {
        let s = TestServer::start().await;
        s.json("/api/v1/applications", "[]");
        let dir = tempfile::tempdir().unwrap();
        let view = PenaltyView {
            state: "running".into(),
            progress: "run 1/3: cpu in the VM".into(),
            ..PenaltyView::default()
        };
        std::fs::write(
            dir.path().join(PENALTY_LATEST),
            serde_json::to_vec(&view).unwrap(),
        )
        .unwrap();
        let c = Collector::start(
            &["http://127.0.0.1:1".into()],
            std::slice::from_ref(&s.url),
            dir.path().into(),
        )
        .unwrap();
        let mut status = Status::default();
        for _ in 0..50 {
            c.fill(&mut status);
            if status.job_sources.len() == 2 && status.penalty.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            status.penalty.as_ref().map(|p| p.progress.as_str()),
            Some("run 1/3: cpu in the VM")
        );
        let yarn = &status.job_sources[0];
        assert!(
            yarn.kind == "yarn" && !yarn.ok && yarn.message.contains("127.0.0.1:1"),
            "{yarn:?}"
        );
        let spark = &status.job_sources[1];
        assert!(spark.kind == "spark" && spark.ok, "{spark:?}");
        let bad = Collector::start(&["ftp://x".into()], &[], dir.path().into());
        assert!(bad.err().unwrap().to_string().contains("--yarn"));
    }

    mod fuzz {
        //! The penalty benchmark's latest run, as the node reads it from its
        //! data dir for `status` and the console.
        use super::*;
        use crate::fuzzing::{CASES, config, json_like};
        use crate::model::{PenaltyRow, PenaltyView, WorkloadKind};
        use proptest::prelude::*;

        fn sample() -> Vec<u8> {
            let row = |workload: &str, native: Vec<f64>, vm: Vec<f64>| PenaltyRow {
                workload: workload.into(),
                kind: Some(WorkloadKind::Io),
                unit: "IOPS".into(),
                native,
                vm,
            };
            serde_json::to_vec(&PenaltyView {
                state: "done".into(),
                progress: "finished".into(),
                steps_done: 4,
                steps_total: 4,
                host: "host (CPU, 2 CPUs)".into(),
                accel: "tcg".into(),
                runs: 2,
                short: true,
                started_at: 1_796_000_000,
                rows: vec![
                    row("rand-read", vec![5192.0, 8631.0], vec![1453.0, 1458.0]),
                    row("cpu", vec![0.53], vec![]),
                ],
                error: None,
            })
            .unwrap()
        }

        proptest! {
            // A file written and read per case.
            #![proptest_config(config(CASES / 4))]
            /// Whatever the file holds, the node reads a view or nothing, and
            /// the figures it shows are finite: medians of the runs and the
            /// penalty (a figure out of f64's range is not shown as a penalty).
            #[test]
            fn fuzz_penalty_view_file(bytes in json_like(vec![sample()])) {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join(PENALTY_LATEST);
                std::fs::write(&path, &bytes).unwrap();
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                if let Some(view) = rt.block_on(read_penalty(&path)) {
                    for row in &view.rows {
                        for figure in [row.native_median(), row.vm_median(), row.penalty_pct()] {
                            prop_assert!(figure.is_none_or(f64::is_finite), "{row:?}");
                        }
                    }
                }
            }
        }
    }
}
