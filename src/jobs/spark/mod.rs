//! Spark source: polls a Spark application UI (driver, port 4040) or history
//! server's monitoring REST API (`/api/v1/applications`, and per application
//! its jobs, stages and executors). Each application is a parent row followed
//! by one row per job group (`groups.rs`: grouped, classified I/O- or
//! CPU-bound from the group's own counters, progress kept from going
//! backwards). An application the UI no longer serves is marked ended: from
//! the history server when one is given (`history=URL`), else "UI gone, last
//! seen ...". Progress is completed tasks over all tasks ("maps" = tasks,
//! "reduces" = stages); bytes are stage input + shuffle read / output +
//! shuffle write.

mod docs;
pub mod groups;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use futures::future::BoxFuture;

use super::http::{BaseUrl, SourceArg, get_json, is_unreachable};
use super::source::{JobSource, RateTracker, SourceReport, classify, host_of};
use crate::model::{JOB_ENDED, JobView};
use docs::{Application, Executor, SparkJob, Stage};
use groups::{Figures, Monotone};

const TIMEOUT: Duration = Duration::from_secs(3);
/// Applications followed per poll (the newest first, as Spark lists them),
/// and ended applications kept listed.
const MAX_APPS: usize = 20;
/// The note of rows read from the history server.
pub const FROM_HISTORY: &str = "from the history server";

pub struct SparkSource {
    base: BaseUrl,
    /// The history server asked about applications the UI stopped serving.
    history: Option<BaseUrl>,
    url: String,
    rates: RateTracker,
    progress: Monotone,
    /// Applications the UI served at the last poll.
    live: Vec<AppRows>,
    /// Applications it no longer serves, newest first, rows final.
    ended: Vec<AppRows>,
    last_jobs: Vec<JobView>,
}

/// One application's rows: its own, then its job groups'.
struct AppRows {
    id: String,
    last_seen: SystemTime,
    rows: Vec<JobView>,
}

/// What a poll reads about one application.
struct AppDocs {
    jobs: Vec<SparkJob>,
    stages: Vec<Stage>,
    executors: Vec<Executor>,
}

impl SparkSource {
    /// `URL[,history=URL][,ca=FILE][,auth=...]`.
    pub fn from_arg(arg: &str) -> Result<SparkSource> {
        let SourceArg { base, history } =
            SourceArg::parse("--spark", arg, "history=URL or ca=FILE")?;
        Ok(SparkSource {
            url: base.display(),
            base,
            history,
            rates: RateTracker::default(),
            progress: Monotone::default(),
            live: Vec::new(),
            ended: Vec::new(),
            last_jobs: Vec::new(),
        })
    }

    async fn poll_once(&mut self, notes: &mut Vec<String>) -> Result<Vec<JobView>> {
        let apps: Vec<Application> =
            match get_json(&self.base, "/api/v1/applications", TIMEOUT).await {
                Ok(apps) => apps,
                Err(e) => {
                    // A UI nobody answers at is gone (a driver's UI ends with its
                    // application); one that is slow or errs may come back.
                    if is_unreachable(&e) {
                        let gone = std::mem::take(&mut self.live);
                        self.end(gone).await;
                        self.last_jobs = self.rows();
                    }
                    return Err(e);
                }
            };
        let now = Instant::now();
        let mut live = Vec::new();
        for app in apps.iter().take(MAX_APPS) {
            match fetch(&self.base, app).await {
                Ok(docs) => live.push(AppRows {
                    id: app.id.clone(),
                    last_seen: SystemTime::now(),
                    rows: self.rows_of(app, &docs, now),
                }),
                Err(e) => notes.push(format!("{}: {e:#}", app.id)),
            }
        }
        let listed = |id: &str| apps.iter().any(|a| a.id == id);
        let gone: Vec<AppRows> = std::mem::take(&mut self.live)
            .into_iter()
            .filter(|a| !listed(&a.id))
            .collect();
        self.ended.retain(|a| !listed(&a.id));
        self.end(gone).await;
        self.live = live;
        let rows = self.rows();
        let ids: Vec<&str> = rows.iter().map(|j| j.id.as_str()).collect();
        self.rates.retain(&ids);
        self.progress.retain(&ids);
        notes.insert(0, format!("{} application(s)", apps.len()));
        Ok(rows)
    }

    /// Live applications' rows, then ended ones'.
    fn rows(&self) -> Vec<JobView> {
        self.live
            .iter()
            .chain(&self.ended)
            .flat_map(|a| a.rows.iter().cloned())
            .collect()
    }

    /// Marks applications the UI stopped serving as ended: their final rows
    /// from the history server when it has them, else their last rows.
    async fn end(&mut self, gone: Vec<AppRows>) {
        for mut app in gone {
            let seen = humantime::format_rfc3339_seconds(app.last_seen);
            let mut note = format!("UI gone, last seen {seen}");
            if let Some(history) = self.history.clone() {
                match self.history_rows(&history, &app.id).await {
                    Ok(rows) => {
                        app.rows = rows;
                        note = FROM_HISTORY.into();
                    }
                    Err(e) => note = format!("{note}; history server: {e:#}"),
                }
            }
            for row in &mut app.rows {
                if row.state == "RUNNING" {
                    row.state = JOB_ENDED.into();
                }
                (row.read_bps, row.write_bps, row.cpu_ms_per_s) = (None, None, None);
                row.note = Some(note.clone());
            }
            self.ended.insert(0, app);
        }
        self.ended.truncate(MAX_APPS);
    }

    async fn history_rows(&mut self, history: &BaseUrl, id: &str) -> Result<Vec<JobView>> {
        let app: Application =
            get_json(history, &format!("/api/v1/applications/{id}"), TIMEOUT).await?;
        let docs = fetch(history, &app).await?;
        Ok(self.rows_of(&app, &docs, Instant::now()))
    }

    /// The application's row, then one per job group.
    fn rows_of(&mut self, app: &Application, docs: &AppDocs, now: Instant) -> Vec<JobView> {
        let attempt = app.attempts.last().cloned().unwrap_or_default();
        let (groups, whole) = groups::group(&docs.jobs, &docs.stages);
        let mut hosts: Vec<String> = Vec::new();
        for e in &docs.executors {
            let host = host_of(&e.host_port);
            if !host.is_empty() && !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        let state = if whole.failure.is_some() {
            "FAILED"
        } else if attempt.completed {
            "COMPLETED"
        } else {
            "RUNNING"
        };
        let mut app_row = JobView {
            source: "spark".into(),
            id: app.id.clone(),
            name: app.name.clone(),
            user: attempt.spark_user.clone(),
            state: state.into(),
            elapsed_s: attempt.duration as f64 / 1000.0,
            hosts: hosts.clone(),
            // The application's name may say which benchmark it is; what it is
            // bound by is its groups' (below), when they agree.
            benchmark: classify(&app.name).map(|(label, _)| label.to_string()),
            ..JobView::default()
        };
        let name_kind = classify(&app.name).map(|(_, kind)| kind);
        let done = attempt.completed && whole.failure.is_none();
        self.fill(&mut app_row, &whole, done, now);
        let mut rows = vec![app_row];
        for g in groups {
            let named = classify(&g.name).or_else(|| classify(&g.key));
            let mut row = JobView {
                source: "spark".into(),
                id: format!("{}/{}", app.id, g.key),
                name: g.name.clone(),
                user: attempt.spark_user.clone(),
                state: g.figures.state().into(),
                parent: Some(app.id.clone()),
                hosts: hosts.clone(),
                benchmark: named.map(|(label, _)| label.to_string()),
                kind: g.figures.kind().or(named.map(|(_, kind)| kind)),
                ..JobView::default()
            };
            let done = done || (g.figures.state() == "SUCCEEDED");
            self.fill(&mut row, &g.figures, done, now);
            rows.push(row);
        }
        rows[0].kind = common_kind(&rows[1..]).unwrap_or(name_kind);
        rows
    }

    /// Progress (never backwards), counts and rates of a row from its figures.
    fn fill(&mut self, row: &mut JobView, f: &Figures, done: bool, now: Instant) {
        let pct = if done { 100.0 } else { f.progress_pct() };
        row.progress_pct = self.progress.keep(&row.id, pct);
        row.maps_completed = f.tasks_done.min(f.tasks_total);
        row.maps_total = f.tasks_total;
        row.reduces_completed = f.stages_done;
        row.reduces_total = f.stages_total;
        row.jobs_completed = f.jobs_done;
        row.jobs_total = f.jobs_total;
        row.error = f.failure.clone();
        self.rates.update(row, f.counters, now);
    }
}

/// The kind all groups share: Some(None) when they differ or one is not yet
/// known (an application with an I/O and a CPU phase is neither), None when
/// there are no groups (then the application's name says).
fn common_kind(groups: &[JobView]) -> Option<Option<crate::model::WorkloadKind>> {
    let first = groups.first()?.kind;
    Some(first.filter(|_| groups.iter().all(|g| g.kind == first)))
}

/// An application's jobs, stages and executors (these optional).
async fn fetch(base: &BaseUrl, app: &Application) -> Result<AppDocs> {
    let attempt = app.attempts.last().cloned().unwrap_or_default();
    // Applications with several attempts (YARN cluster mode) name one in the path.
    let prefix = match &attempt.attempt_id {
        Some(a) => format!("/api/v1/applications/{}/{a}", app.id),
        None => format!("/api/v1/applications/{}", app.id),
    };
    Ok(AppDocs {
        jobs: get_json(base, &format!("{prefix}/jobs"), TIMEOUT).await?,
        stages: get_json(base, &format!("{prefix}/stages"), TIMEOUT).await?,
        executors: get_json(base, &format!("{prefix}/executors"), TIMEOUT)
            .await
            .unwrap_or_default(),
    })
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
