//! YARN / MapReduce source: polls a ResourceManager's REST API (cluster info,
//! metrics, applications), each running MapReduce job through the RM's proxy to
//! its application master (job, counters, where its tasks run), and optionally a
//! JobHistory server for finished jobs. Everything is parsed leniently (missing
//! fields default); a failure names the URL and never ends the poller.

mod docs;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::future::BoxFuture;

use super::http::{BaseUrl, SourceArg, get_json};
use super::source::{Counters, JobSource, RateTracker, SourceReport, classify, host_of};
use crate::model::JobView;
use docs::{
    AmJobsDoc, App, AppsDoc, AttemptsDoc, ClusterInfoDoc, CountersDoc, HistoryJob, HistoryJobsDoc,
    MetricsDoc, TasksDoc,
};

const TIMEOUT: Duration = Duration::from_secs(3);
/// Applications not ended, and ended ones (asked with the time they ended after).
const ACTIVE_APPS: &str = "/ws/v1/cluster/apps?states=NEW,NEW_SAVING,SUBMITTED,ACCEPTED,RUNNING";
const ENDED_APPS: &str = "/ws/v1/cluster/apps?states=FINISHED,FAILED,KILLED";
/// Ended applications shown (the newest), and how far back the first poll looks.
const ENDED_KEPT: usize = 100;
const ENDED_WINDOW: Duration = Duration::from_secs(3600);
/// How far before the previous poll the next one asks for ended applications.
const CLOCK_SLACK: Duration = Duration::from_secs(300);
/// Running tasks whose attempts are asked for their node (the VM link), per job.
const TASKS_FOR_HOSTS: usize = 8;

pub struct YarnSource {
    rm: BaseUrl,
    history: Option<BaseUrl>,
    url: String,
    rm_started_on: Option<u64>,
    rates: RateTracker,
    /// Finished jobs' counters, fetched once.
    finished: HashMap<String, Counters>,
    last_jobs: Vec<JobView>,
    /// Ended applications seen, by id.
    ended: HashMap<String, App>,
    /// `finishedTimeBegin` of the next poll (ms since the epoch).
    ended_since: Option<u64>,
}

fn is_ended(state: &str) -> bool {
    matches!(state, "FINISHED" | "FAILED" | "KILLED")
}

impl YarnSource {
    /// `URL[,standby=URL][,history=URL][,ca=FILE][,auth=...]`: the RM (HA: a
    /// standby's URL too, or the active one found through the standby's
    /// redirect), a JobHistory server, the CA of their certificates.
    pub fn from_arg(arg: &str) -> Result<YarnSource> {
        let SourceArg { base: rm, history } =
            SourceArg::parse("--yarn", arg, "history=URL, standby=URL or ca=FILE")?;
        Ok(YarnSource {
            url: rm.display(),
            rm,
            history,
            rm_started_on: None,
            rates: RateTracker::default(),
            finished: HashMap::new(),
            last_jobs: Vec::new(),
            ended: HashMap::new(),
            ended_since: None,
        })
    }

    async fn poll_once(&mut self, notes: &mut Vec<String>) -> Result<Vec<JobView>> {
        let info: ClusterInfoDoc = get_json(&self.rm, "/ws/v1/cluster/info", TIMEOUT).await?;
        let started = info.cluster_info.started_on;
        if self.rm_started_on.is_some_and(|s| s != started) {
            notes.push("ResourceManager restarted: rates start afresh".into());
            self.rates.clear();
            self.finished.clear();
        }
        self.rm_started_on = Some(started);
        let metrics: MetricsDoc = get_json(&self.rm, "/ws/v1/cluster/metrics", TIMEOUT).await?;
        let m = metrics.cluster_metrics;
        notes.insert(
            0,
            format!(
                "{} running, {} completed, {} failed apps; {} active nodes",
                m.apps_running, m.apps_completed, m.apps_failed, m.active_nodes
            ),
        );
        let apps = self.applications().await?;
        let history = match &self.history {
            Some(h) if apps.iter().any(|a| a.state != "RUNNING") => {
                match get_json::<HistoryJobsDoc>(h, "/ws/v1/history/mapreduce/jobs", TIMEOUT).await
                {
                    Ok(doc) => doc.jobs.map(|j| j.job).unwrap_or_default(),
                    Err(e) => {
                        notes.push(format!("history: {e:#}"));
                        Vec::new()
                    }
                }
            }
            _ => Vec::new(),
        };
        let now = Instant::now();
        let mut jobs = Vec::new();
        for app in &apps {
            let is_mr = app.application_type.eq_ignore_ascii_case("MAPREDUCE");
            if is_mr && app.state == "RUNNING" {
                match self.running_jobs(app, now).await {
                    Ok(mut js) if !js.is_empty() => {
                        jobs.append(&mut js);
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => notes.push(format!("{}: {e:#}", app.id)),
                }
            } else if is_mr && let Some(h) = history.iter().find(|j| j.id == job_id_of(&app.id)) {
                jobs.push(self.finished_job(app, h, notes).await);
                continue;
            }
            jobs.push(app_only(app));
        }
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        self.rates.retain(&ids);
        Ok(jobs)
    }

    /// The applications to show: those not ended, and those that ended lately
    /// (kept here once seen, the newest `ENDED_KEPT`). Both lists are asked
    /// filtered (`states`, `finishedTimeBegin`, `limit`), so a poll costs the
    /// same on an RM that remembers 10 or 100,000 finished applications.
    async fn applications(&mut self) -> Result<Vec<App>> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let since = self
            .ended_since
            .unwrap_or(now_ms.saturating_sub(ENDED_WINDOW.as_millis() as u64));
        let active: AppsDoc = get_json(&self.rm, ACTIVE_APPS, TIMEOUT).await?;
        let ended: AppsDoc = get_json(
            &self.rm,
            &format!("{ENDED_APPS}&finishedTimeBegin={since}&limit={ENDED_KEPT}"),
            TIMEOUT,
        )
        .await?;
        // Clocks differ: the next poll looks back a little before this one.
        self.ended_since = Some(now_ms.saturating_sub(CLOCK_SLACK.as_millis() as u64));
        let mut apps: Vec<App> = active.apps.map(|a| a.app).unwrap_or_default();
        // A server that ignores the filter still gives the right split.
        apps.retain(|a| !is_ended(&a.state));
        for app in ended.apps.map(|a| a.app).unwrap_or_default() {
            if is_ended(&app.state) {
                self.ended.insert(app.id.clone(), app);
            }
        }
        if self.ended.len() > ENDED_KEPT {
            let mut by_end: Vec<(u64, String)> = self
                .ended
                .values()
                .map(|a| (a.finished_time, a.id.clone()))
                .collect();
            by_end.sort();
            for (_, id) in by_end.iter().take(self.ended.len() - ENDED_KEPT) {
                self.ended.remove(id);
            }
        }
        apps.retain(|a| !self.ended.contains_key(&a.id));
        let mut ended: Vec<App> = self.ended.values().cloned().collect();
        ended.sort_by(|a, b| a.id.cmp(&b.id));
        apps.extend(ended);
        Ok(apps)
    }

    /// The MapReduce jobs of a running application, from its AM via the RM proxy.
    async fn running_jobs(&mut self, app: &App, now: Instant) -> Result<Vec<JobView>> {
        let base = format!("/proxy/{}/ws/v1/mapreduce/jobs", app.id);
        let doc: AmJobsDoc = get_json(&self.rm, &base, TIMEOUT).await?;
        let mut out = Vec::new();
        for j in doc.jobs.map(|j| j.job).unwrap_or_default() {
            let mut job = JobView {
                source: "yarn".into(),
                id: j.id.clone(),
                name: j.name.clone(),
                user: j.user.clone(),
                state: j.state.clone(),
                progress_pct: percent(if j.reduces_total > 0 {
                    (j.map_progress + j.reduce_progress) / 2.0
                } else {
                    j.map_progress
                }),
                maps_completed: j.maps_completed,
                maps_total: j.maps_total,
                reduces_completed: j.reduces_completed,
                reduces_total: j.reduces_total,
                elapsed_s: j.elapsed_time as f64 / 1000.0,
                error: non_empty(&j.diagnostics),
                ..JobView::default()
            };
            label(&mut job);
            if let Some(am) = &app.am_host_http_address {
                job.hosts.push(host_of(am));
            }
            let counters: CountersDoc =
                get_json(&self.rm, &format!("{base}/{}/counters", j.id), TIMEOUT).await?;
            self.rates.update(&mut job, counters.totals(), now);
            self.add_task_hosts(&base, &mut job).await;
            out.push(job);
        }
        Ok(out)
    }

    /// Nodes of up to a few running tasks' attempts (best effort).
    async fn add_task_hosts(&self, base: &str, job: &mut JobView) {
        let Ok(tasks) =
            get_json::<TasksDoc>(&self.rm, &format!("{base}/{}/tasks", job.id), TIMEOUT).await
        else {
            return;
        };
        let running = tasks.tasks.map(|t| t.task).unwrap_or_default();
        for task in running
            .iter()
            .filter(|t| t.state == "RUNNING")
            .take(TASKS_FOR_HOSTS)
        {
            let path = format!("{base}/{}/tasks/{}/attempts", job.id, task.id);
            if let Ok(doc) = get_json::<AttemptsDoc>(&self.rm, &path, TIMEOUT).await {
                for a in doc
                    .task_attempts
                    .map(|a| a.task_attempt)
                    .unwrap_or_default()
                {
                    let host = host_of(&a.node_http_address);
                    if !host.is_empty() && !job.hosts.contains(&host) {
                        job.hosts.push(host);
                    }
                }
            }
        }
    }

    /// A finished job from the history server; average rates over its run time.
    async fn finished_job(
        &mut self,
        app: &App,
        h: &HistoryJob,
        notes: &mut Vec<String>,
    ) -> JobView {
        let mut job = JobView {
            source: "yarn".into(),
            id: h.id.clone(),
            name: h.name.clone(),
            user: h.user.clone(),
            state: h.state.clone(),
            progress_pct: finished_progress(h),
            maps_completed: h.maps_completed,
            maps_total: h.maps_total,
            reduces_completed: h.reduces_completed,
            reduces_total: h.reduces_total,
            elapsed_s: h.finish_time.saturating_sub(h.start_time) as f64 / 1000.0,
            error: non_empty(&h.diagnostics).or_else(|| failed_diagnostics(app)),
            ..JobView::default()
        };
        label(&mut job);
        if let Some(am) = &app.am_host_http_address {
            job.hosts.push(host_of(am));
        }
        let counters = match self.finished.get(&h.id) {
            Some(c) => Some(*c),
            None => {
                let path = format!("/ws/v1/history/mapreduce/jobs/{}/counters", h.id);
                let url = self.history.as_ref().unwrap_or(&self.rm);
                match get_json::<CountersDoc>(url, &path, TIMEOUT).await {
                    Ok(doc) => {
                        self.finished.insert(h.id.clone(), doc.totals());
                        Some(doc.totals())
                    }
                    Err(e) => {
                        notes.push(format!("{}: {e:#}", h.id));
                        None
                    }
                }
            }
        };
        if let Some(c) = counters {
            job.bytes_read = c.bytes_read;
            job.bytes_written = c.bytes_written;
            if job.elapsed_s > 0.0 {
                job.read_bps = Some(c.bytes_read as f64 / job.elapsed_s);
                job.write_bps = Some(c.bytes_written as f64 / job.elapsed_s);
                job.cpu_ms_per_s = Some(c.cpu_ms as f64 / job.elapsed_s);
            }
        }
        job
    }
}

impl JobSource for YarnSource {
    fn poll(&mut self) -> BoxFuture<'_, SourceReport> {
        Box::pin(async move {
            let mut notes = Vec::new();
            let outcome = self.poll_once(&mut notes).await;
            SourceReport::from_poll("yarn", &self.url, outcome, notes, &mut self.last_jobs)
        })
    }
}

/// A non-MapReduce (or not yet reachable) application as the RM describes it.
fn app_only(app: &App) -> JobView {
    let mut job = JobView {
        source: "yarn".into(),
        id: app.id.clone(),
        name: app.name.clone(),
        user: app.user.clone(),
        state: if app.state == "FINISHED" && !app.final_status.is_empty() {
            app.final_status.clone()
        } else {
            app.state.clone()
        },
        progress_pct: percent(app.progress),
        elapsed_s: app.elapsed_time as f64 / 1000.0,
        error: failed_diagnostics(app),
        ..JobView::default()
    };
    label(&mut job);
    if let Some(am) = &app.am_host_http_address {
        job.hosts.push(host_of(am));
    }
    job
}

/// A progress the server reported, held to 0..100 (a server's figure out of
/// range is not shown as measured).
fn percent(p: f64) -> f64 {
    if p.is_finite() {
        p.clamp(0.0, 100.0)
    } else {
        0.0
    }
}

/// A finished job's progress: 100 when it succeeded; otherwise the share of its
/// tasks that completed before it failed or was killed (not 100: it did not).
fn finished_progress(h: &HistoryJob) -> f64 {
    if h.state == "SUCCEEDED" {
        return 100.0;
    }
    let share = |done: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            done.min(total) as f64 / total as f64
        }
    };
    let maps = share(h.maps_completed, h.maps_total);
    if h.reduces_total > 0 {
        (maps + share(h.reduces_completed, h.reduces_total)) * 50.0
    } else {
        maps * 100.0
    }
}

fn failed_diagnostics(app: &App) -> Option<String> {
    let failed = ["FAILED", "KILLED"].contains(&app.state.as_str())
        || ["FAILED", "KILLED"].contains(&app.final_status.as_str());
    if failed {
        non_empty(&app.diagnostics).or_else(|| Some(app.final_status.clone()))
    } else {
        None
    }
}

fn label(job: &mut JobView) {
    if let Some((name, kind)) = classify(&job.name) {
        job.benchmark = Some(name.to_string());
        job.kind = Some(kind);
    }
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// application_1326821518301_0005 -> job_1326821518301_0005
fn job_id_of(app_id: &str) -> String {
    app_id.replacen("application_", "job_", 1)
}

#[cfg(test)]
mod tests;
