//! The libvirt connection, kept alive. libvirt tells us (close callback, from its
//! event loop) when a connection dies: the daemon exited or closed the socket; a
//! 1 s `virConnectIsAlive` check backs that up. A supervisor thread then says so
//! once, restarts our private libvirtd if it exited (running guests survive: the
//! new daemon reattaches to their QEMUs), reopens the connection with backoff,
//! registers events again and says how long it took. Meanwhile every call fails
//! at once with "libvirt connection lost".
//!
//! A daemon that is alive but does not answer (stopped, deadlocked) is not
//! dropped: libvirt's keepalive would close the connection, but libvirt 9.0's
//! client then crashes (segfault) when calls that waited on it finish after the
//! daemon answers again. Instead a query that times out marks the link
//! *stalled*: calls fail at once ("libvirtd has not answered for N s") until the
//! stats sampler's next call comes back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow};
use virt::connect::Connect;

use super::daemon::PrivateDaemon;
use super::ffi;
use crate::model::{LibvirtLink, LinkLost};

/// How often the supervisor asks libvirt whether the connection still lives,
/// in case no close callback came.
const CHECK_EVERY: Duration = Duration::from_secs(1);
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// What a lifecycle event is handed to (logging, caches).
pub type EventHandler = Arc<dyn Fn(ffi::DomainEvent) + Send + Sync>;

pub struct Link {
    uri: String,
    state: Mutex<State>,
    /// Our own libvirtd, restarted if it dies; None for a given URI.
    daemon: Option<Mutex<PrivateDaemon>>,
    /// libvirt's close callbacks send (connection number, reason) here, to the
    /// supervisor.
    closed: Sender<(u64, String)>,
    events: EventHandler,
    stopping: AtomicBool,
}

#[derive(Default)]
struct State {
    /// None while reconnecting.
    live: Option<Live>,
    /// Counts connections opened, so a late close callback of an old one is
    /// not taken for the loss of the current one.
    generation: u64,
    lost: Option<Lost>,
    /// Since when a query found the daemon not answering (cleared by any answer).
    stalled: Option<Instant>,
    reconnects: u32,
    last_outage: Option<Duration>,
}

struct Live {
    conn: Arc<Connect>,
    generation: u64,
}

struct Lost {
    at: Instant,
    since_unix_ms: u64,
    why: String,
}

impl Link {
    /// Connects (blocking) and starts the supervisor. A first connection that
    /// fails is an error: there is nothing to reconnect to yet.
    pub fn open(
        uri: &str,
        daemon: Option<PrivateDaemon>,
        events: EventHandler,
    ) -> Result<Arc<Link>> {
        let (closed, reasons) = mpsc::channel();
        let link = Arc::new(Link {
            uri: uri.to_string(),
            state: Mutex::new(State::default()),
            daemon: daemon.map(Mutex::new),
            closed,
            events,
            stopping: AtomicBool::new(false),
        });
        link.install(connect(uri)?);
        let weak = Arc::downgrade(&link);
        let spawned = std::thread::Builder::new()
            .name("libvirt-link".into())
            .spawn(move || supervise(weak, reasons));
        if let Err(e) = spawned {
            tracing::warn!("cannot watch the libvirt connection ({e}): no reconnection");
        }
        Ok(link)
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The connection, or why there is none right now.
    pub fn conn(&self) -> Result<Arc<Connect>> {
        let state = self.state();
        if let Some(since) = state.stalled {
            return Err(anyhow!(
                "libvirtd has not answered for {:.0} s; waiting for it",
                since.elapsed().as_secs_f64()
            ));
        }
        if let Some(live) = &state.live {
            return Ok(live.conn.clone());
        }
        Err(match &state.lost {
            Some(lost) => anyhow!(
                "libvirt connection lost {:.0} s ago ({}); reconnecting",
                lost.at.elapsed().as_secs_f64(),
                lost.why
            ),
            None => anyhow!("libvirt connection closed"),
        })
    }

    /// The connection if there is one, even while stalled (the sampler's call
    /// is what notices the daemon answering again).
    pub fn current(&self) -> Option<Arc<Connect>> {
        self.state().live.as_ref().map(|l| l.conn.clone())
    }

    /// A query waited too long for the daemon.
    pub fn note_stalled(&self) {
        let mut state = self.state();
        if state.stalled.is_none() && state.live.is_some() {
            tracing::warn!("libvirtd is not answering; libvirt calls fail until it does");
            state.stalled = Some(Instant::now());
        }
    }

    /// The daemon answered a call.
    pub fn note_answered(&self) {
        let mut state = self.state();
        if let Some(since) = state.stalled.take() {
            tracing::info!(
                "libvirtd answers again after {:.1} s",
                since.elapsed().as_secs_f64()
            );
        }
    }

    /// Connected or reconnecting, for `status`.
    pub fn view(&self) -> LibvirtLink {
        let state = self.state();
        LibvirtLink {
            lost: state.lost.as_ref().map(|l| LinkLost {
                since_unix_ms: l.since_unix_ms,
                for_s: l.at.elapsed().as_secs_f64(),
                why: l.why.clone(),
            }),
            not_answering_s: state.stalled.map(|s| s.elapsed().as_secs_f64()),
            reconnects: state.reconnects,
            last_outage_s: state.last_outage.map(|d| d.as_secs_f64()),
        }
    }

    /// Stops the private daemon for good (node shutdown): no restart after this.
    pub fn stop_daemon(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(daemon) = &self.daemon {
            lock(daemon).stop();
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Takes a fresh connection into use: close callback, events.
    fn install(&self, conn: Connect) {
        let generation = self.state().generation + 1;
        let closed = self.closed.clone();
        let close_sink: ffi::CloseSink = Box::new(move |reason| {
            let _ = closed.send((generation, ffi::close_reason(reason).to_string()));
        });
        if let Err(e) = ffi::on_close(&conn, close_sink) {
            tracing::debug!("libvirt close callback unavailable: {}", e.message());
        }
        let events = self.events.clone();
        let sink: ffi::EventSink = Box::new(move |event| events(event));
        if let Err(e) = ffi::watch_lifecycle(&conn, sink) {
            tracing::warn!("libvirt lifecycle events unavailable: {}", e.message());
        }
        let mut state = self.state();
        state.generation = generation;
        state.stalled = None;
        state.live = Some(Live {
            conn: Arc::new(conn),
            generation,
        });
        if let Some(lost) = state.lost.take() {
            let outage = lost.at.elapsed();
            state.reconnects += 1;
            state.last_outage = Some(outage);
            tracing::info!(
                "reconnected to libvirt after {:.1} s ({})",
                outage.as_secs_f64(),
                self.uri
            );
        }
    }

    /// Why the connection is dead, or None if it is alive (or already known lost).
    fn dead(&self) -> Option<String> {
        let conn = self.current()?;
        match conn.is_alive() {
            Ok(true) => None,
            Ok(false) => Some("connection closed".into()),
            Err(e) => Some(e.message().to_string()),
        }
    }

    /// Drops the dead connection (once) and says so. Its callbacks stay
    /// registered: deregistering them while a call on it still waits for the
    /// daemon makes libvirt 9.0 crash when that call ends. The old connection
    /// object (a few KiB) is kept by them; it sends no more events.
    fn mark_lost(&self, why: String) {
        let mut state = self.state();
        if state.live.take().is_none() {
            return;
        }
        state.stalled = None;
        tracing::warn!("libvirt connection lost: {why}; reconnecting");
        state.lost = Some(Lost {
            at: Instant::now(),
            since_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            why,
        });
    }

    /// Whether a close callback's connection is the one in use.
    fn is_current(&self, generation: u64) -> bool {
        self.state()
            .live
            .as_ref()
            .is_some_and(|l| l.generation == generation)
    }

    /// One reconnection attempt: our daemon started again if it died, then a
    /// new connection.
    fn try_reconnect(&self) -> Result<()> {
        if let Some(daemon) = &self.daemon {
            let mut daemon = lock(daemon);
            if self.stopping.load(Ordering::SeqCst) {
                return Err(anyhow!("the node is stopping"));
            }
            if let Some(how) = daemon.exit_status() {
                tracing::warn!("private libvirtd ended ({how}); starting it again");
                daemon.restart()?;
                tracing::info!("private libvirtd started again");
            }
        }
        self.install(connect(&self.uri)?);
        Ok(())
    }
}

fn connect(uri: &str) -> Result<Connect> {
    Connect::open(Some(uri))
        .map_err(|e| anyhow!("cannot connect to libvirt at {uri}: {}", e.message()))
}

/// Watches the connection until the link is dropped or the node stops.
fn supervise(link: Weak<Link>, reasons: Receiver<(u64, String)>) {
    loop {
        let reason = match reasons.recv_timeout(CHECK_EVERY) {
            Ok((generation, why)) => Some((generation, why)),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let Some(strong) = link.upgrade() else {
            return;
        };
        if strong.stopping.load(Ordering::SeqCst) {
            return;
        }
        let reason = match reason {
            Some((generation, why)) => strong.is_current(generation).then_some(why),
            None => strong.dead(),
        };
        let Some(why) = reason else {
            continue;
        };
        strong.mark_lost(why);
        drop(strong);
        let mut delay = FIRST_RETRY;
        let mut last_error = String::new();
        loop {
            let Some(strong) = link.upgrade() else {
                return;
            };
            if strong.stopping.load(Ordering::SeqCst) {
                return;
            }
            match strong.try_reconnect() {
                Ok(()) => break,
                Err(e) => {
                    let error = format!("{e:#}");
                    if error != last_error {
                        tracing::warn!("reconnecting to libvirt: {error}; retrying");
                        last_error = error;
                    }
                }
            }
            drop(strong);
            std::thread::sleep(delay);
            delay = (delay * 2).min(MAX_RETRY);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
