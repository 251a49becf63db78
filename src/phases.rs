//! Where an operation's time goes: named moments since its start, logged as one
//! line ("accepted +12 ms, tunnel open +15 ms, libvirt done +2310 ms, …").

use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The moments of one operation; cheap to clone into the tasks that see them.
#[derive(Clone)]
pub struct Phases {
    start: Instant,
    marks: Arc<Mutex<Vec<(&'static str, Instant)>>>,
}

impl Phases {
    pub fn start() -> Phases {
        Phases {
            start: Instant::now(),
            marks: Arc::default(),
        }
    }

    /// Records `what` happening now.
    pub fn mark(&self, what: &'static str) {
        self.mark_at(what, Instant::now());
    }

    pub fn mark_at(&self, what: &'static str, at: Instant) {
        self.lock().push((what, at));
    }

    /// Records `what` now unless it was recorded before (a first stream opens).
    pub fn mark_once(&self, what: &'static str) {
        let mut marks = self.lock();
        if !marks.iter().any(|(w, _)| *w == what) {
            marks.push((what, Instant::now()));
        }
    }

    /// "a +12 ms, b +40 ms", in time order.
    pub fn line(&self) -> String {
        let mut marks = self.lock().clone();
        marks.sort_by_key(|(_, at)| *at);
        marks
            .iter()
            .map(|(what, at)| {
                format!(
                    "{what} +{} ms",
                    at.saturating_duration_since(self.start).as_millis()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(&'static str, Instant)>> {
        self.marks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn line_lists_moments_in_time_order_since_the_start() {
        let p = Phases::start();
        let t0 = p.start;
        p.mark_at("done", t0 + Duration::from_millis(62300));
        p.mark_at("accepted", t0 + Duration::from_millis(60012));
        p.mark_once("tunnel open"); // now: well before the two above
        p.mark_once("tunnel open");
        let line = p.line();
        assert!(line.starts_with("tunnel open +"), "{line}");
        assert!(
            line.ends_with(", accepted +60012 ms, done +62300 ms"),
            "{line}"
        );
        assert_eq!(line.matches("tunnel open").count(), 1, "{line}");
    }
}
