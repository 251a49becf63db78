//! Console state and its reducer. Everything here is plain data: no terminal,
//! no channels, no clock other than the `Instant`s handed in, so the whole
//! console can be driven and inspected from tests. The reducer (keys, mouse,
//! actions and the command line into state changes and requests) is in
//! `update.rs`.

mod update;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ratatui::layout::Rect;
use tui_logger::{LevelFilter, TuiWidgetState};

use super::ConsoleOptions;
use super::cmdline::LineEditor;
use super::keymap::Keymap;
use super::panes::Selection;
use super::rows::{self, VmRow, VmSort};
use super::theme::Theme;
use crate::api::{BootLog, RemoteVmKey, Request, Update};
use crate::model::{JobView, OperationView, Status, VmView};

/// How long a status-line message stays up.
const MESSAGE_TTL: Duration = Duration::from_secs(6);
/// Rows the mouse wheel scrolls.
const WHEEL_ROWS: isize = 3;
/// Command-line history kept.
const HISTORY: usize = 100;

/// The panes, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pane {
    Topology,
    Vms,
    Services,
    Throughput,
    Operations,
    Log,
}

impl Pane {
    pub const ALL: [Pane; 6] = [
        Pane::Topology,
        Pane::Vms,
        Pane::Services,
        Pane::Throughput,
        Pane::Operations,
        Pane::Log,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Topology => "Topology",
            Pane::Vms => "VMs",
            Pane::Services => "Services",
            Pane::Throughput => "Throughput",
            Pane::Operations => "Operations",
            Pane::Log => "Log",
        }
    }

    fn step(self, by: isize) -> Pane {
        let n = Self::ALL.len() as isize;
        let i = Self::ALL.iter().position(|f| *f == self).unwrap_or(0) as isize;
        Self::ALL[(i + by).rem_euclid(n) as usize]
    }

    /// Panes with a selectable, filterable list.
    pub fn has_list(self) -> bool {
        matches!(
            self,
            Pane::Topology | Pane::Vms | Pane::Services | Pane::Operations
        )
    }
}

/// A list's selection, `/` filter and scroll position.
#[derive(Debug, Default)]
pub struct ListView {
    pub selection: Selection,
    pub filter: String,
    /// First row shown; kept between frames so the list scrolls smoothly.
    pub offset: Cell<usize>,
}

impl ListView {
    /// Where the visible window starts so that the selection shows in `height` rows.
    pub fn window(&self, len: usize, height: usize) -> usize {
        let height = height.max(1);
        let mut offset = self.offset.get();
        if let Some(sel) = self.selection.index() {
            if sel < offset {
                offset = sel;
            } else if sel >= offset + height {
                offset = sel + 1 - height;
            }
        }
        offset = offset.min(len.saturating_sub(height));
        self.offset.set(offset);
        offset
    }
}

/// A peer the operator may pick as a migration target.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub peer_id: String,
    pub name: String,
    pub latency_ms: Option<f64>,
}

/// What the keys currently talk to.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    /// Choosing where to migrate `vm` (or to replicate it, with `replicate`).
    PickPeer {
        vm: String,
        replicate: bool,
        candidates: Vec<Candidate>,
        selected: usize,
    },
    /// Waiting for y/n before sending `command`.
    Confirm {
        question: String,
        command: Request,
    },
    /// Typing after `:`.
    Command(LineEditor),
    /// Typing the focused list's filter after `/`.
    Filter(LineEditor),
    /// A peer's details (Enter in the topology).
    Detail {
        peer_id: String,
    },
    /// A VM's boot log, scrolled.
    BootLog(BootLogView),
}

/// The boot log overlay: the log as its host sent it, made printable, and
/// where it is scrolled to.
#[derive(Debug, Clone, PartialEq)]
pub struct BootLogView {
    pub log: BootLog,
    pub lines: Vec<String>,
    /// First line shown; `usize::MAX` follows the end (the latest boot).
    pub top: usize,
    /// The last frame's (greatest `top`, visible lines), for the keys.
    pub shown: Cell<(usize, usize)>,
}

impl BootLogView {
    pub fn new(log: BootLog) -> BootLogView {
        let lines = printable_lines(&log.text);
        BootLogView {
            log,
            lines,
            top: usize::MAX,
            shown: Cell::new((0, 10)),
        }
    }

    /// The first line to show in `height` rows (and remember them for the keys).
    pub fn window(&self, height: usize) -> usize {
        let max_top = self.lines.len().saturating_sub(height);
        self.shown.set((max_top, height.max(1)));
        self.top.min(max_top)
    }

    /// Scrolls by `by` lines (negative: up); past the end follows it again.
    pub fn scroll(&mut self, by: isize) {
        let (max_top, _) = self.shown.get();
        let top = self.top.min(max_top) as isize + by;
        self.top = if top >= max_top as isize {
            usize::MAX
        } else {
            top.max(0) as usize
        };
    }

    pub fn page(&self) -> isize {
        self.shown.get().1 as isize
    }
}

/// A serial log as lines fit to draw: terminal escape sequences and other
/// control characters (the guest's, possibly hostile) dropped, tabs as spaces.
pub fn printable_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => lines.push(std::mem::take(&mut line)),
            '\t' => line.push_str("    "),
            '\u{1b}' => match chars.next() {
                // CSI: parameters, then a final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC and the like: up to BEL or ESC \.
                Some(']' | 'P' | '_' | '^') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            c if c.is_control() => {}
            c => line.push(c),
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Info,
    Error,
}

#[derive(Debug, Clone)]
pub struct Message {
    pub text: String,
    pub kind: MessageKind,
    pub shown_at: Instant,
}

/// Where the node's status stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// No snapshot yet.
    Connecting,
    Live,
    /// The status sender went away; the last snapshot stays on screen.
    Closed,
}

/// Screen regions of the last frame, for the mouse.
#[derive(Debug, Default, Clone)]
pub struct Hits {
    pub panes: Vec<(Pane, Rect)>,
    pub tabs: Vec<(Pane, Rect)>,
    /// A list's rows region and the index of its first visible row.
    pub rows: Vec<(Pane, Rect, usize)>,
}

pub struct App {
    pub opts: ConsoleOptions,
    pub keymap: Keymap,
    pub theme: Theme,
    pub status: Option<Status>,
    pub link: Link,
    pub focus: Pane,
    pub zoom: bool,
    pub topology: ListView,
    pub vms: ListView,
    pub services: ListView,
    pub operations: ListView,
    pub vm_sort: VmSort,
    /// VMs of the whole overlay instead of this peer's.
    pub vms_all: bool,
    /// The Throughput pane shows jobs and benchmarks instead of the selected VM.
    pub show_jobs: bool,
    pub jobs: ListView,
    pub log: TuiWidgetState,
    pub log_level: LevelFilter,
    pub log_targets: bool,
    pub mode: Mode,
    pub show_help: bool,
    pub help_scroll: u16,
    pub message: Option<Message>,
    pub history: Vec<String>,
    pub should_quit: bool,
    /// Written by drawing, read by the mouse handler.
    pub hits: RefCell<Hits>,
}

impl App {
    pub fn new(opts: ConsoleOptions, keymap: Keymap, theme: Theme) -> App {
        App {
            opts,
            keymap,
            theme,
            status: None,
            link: Link::Connecting,
            focus: Pane::Vms,
            zoom: false,
            topology: ListView::default(),
            vms: ListView::default(),
            services: ListView::default(),
            operations: ListView::default(),
            vm_sort: VmSort::Name,
            vms_all: false,
            show_jobs: false,
            jobs: ListView::default(),
            log: TuiWidgetState::new().set_default_display_level(LevelFilter::Info),
            log_level: LevelFilter::Info,
            log_targets: false,
            mode: Mode::Normal,
            show_help: false,
            help_scroll: 0,
            message: None,
            history: Vec::new(),
            should_quit: false,
            hits: RefCell::new(Hits::default()),
        }
    }

    /// A new snapshot from the node (or `None`, still waiting).
    pub fn set_status(&mut self, status: Option<Status>) {
        let Some(status) = status else {
            return;
        };
        self.status = Some(status);
        self.link = Link::Live;
        self.resync();
        self.refresh_dialog();
    }

    /// An update from the node: a snapshot replaces the state, a delta moves
    /// it forward (before the first snapshot there is nothing to move).
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Snapshot(status) => self.set_status(Some(*status)),
            Update::Delta(delta) => {
                let Some(status) = &mut self.status else {
                    return;
                };
                let rows_changed = delta.changes_rows();
                delta.apply(status);
                if rows_changed || self.vm_sort.by_figures() {
                    self.resync();
                }
                if rows_changed {
                    self.refresh_dialog();
                }
            }
        }
    }

    /// The node's status channel closed.
    pub fn set_closed(&mut self) {
        self.link = Link::Closed;
    }

    /// Periodic housekeeping (expire the status-line message).
    pub fn tick(&mut self, now: Instant) {
        if self
            .message
            .as_ref()
            .is_some_and(|m| now.duration_since(m.shown_at) >= MESSAGE_TTL)
        {
            self.message = None;
        }
    }

    pub fn list(&self, pane: Pane) -> Option<&ListView> {
        match pane {
            Pane::Topology => Some(&self.topology),
            Pane::Throughput if self.show_jobs => Some(&self.jobs),
            Pane::Vms | Pane::Throughput => Some(&self.vms),
            Pane::Services => Some(&self.services),
            Pane::Operations => Some(&self.operations),
            Pane::Log => None,
        }
    }

    fn list_mut(&mut self, pane: Pane) -> Option<&mut ListView> {
        match pane {
            Pane::Topology => Some(&mut self.topology),
            Pane::Throughput if self.show_jobs => Some(&mut self.jobs),
            Pane::Vms | Pane::Throughput => Some(&mut self.vms),
            Pane::Services => Some(&mut self.services),
            Pane::Operations => Some(&mut self.operations),
            Pane::Log => None,
        }
    }

    /// Row keys of a list as shown now.
    fn keys(&self, pane: Pane) -> Vec<String> {
        let Some(status) = &self.status else {
            return vec![];
        };
        match pane {
            Pane::Topology => rows::filtered_peer_rows(status, &self.topology.filter)
                .into_iter()
                .map(|r| r.peer_id)
                .collect(),
            Pane::Throughput if self.show_jobs => status.jobs.iter().map(job_key).collect(),
            Pane::Vms | Pane::Throughput => self.vm_rows(status).iter().map(VmRow::key).collect(),
            Pane::Services => rows::service_rows(status, &self.services.filter)
                .iter()
                .map(|s| s.name.to_string())
                .collect(),
            Pane::Operations => rows::operation_rows(status, &self.operations.filter)
                .iter()
                .map(|o| o.key())
                .collect(),
            Pane::Log => vec![],
        }
    }

    pub fn vm_rows<'a>(&self, status: &'a Status) -> Vec<VmRow<'a>> {
        rows::vm_rows(status, self.vms_all, self.vm_sort, &self.vms.filter)
    }

    /// Re-anchor every selection on the current rows.
    fn resync(&mut self) {
        for pane in [Pane::Topology, Pane::Vms, Pane::Services, Pane::Operations] {
            let keys = self.keys(pane);
            if let Some(list) = self.list_mut(pane) {
                list.selection.sync(keys.iter().map(String::as_str));
            }
        }
        let jobs: Vec<String> = self
            .status
            .as_ref()
            .map(|s| s.jobs.iter().map(job_key).collect())
            .unwrap_or_default();
        self.jobs.selection.sync(jobs.iter().map(String::as_str));
    }

    fn move_selection(&mut self, pane: Pane, delta: isize) {
        let keys = self.keys(pane);
        if let Some(list) = self.list_mut(pane) {
            list.selection
                .move_by(keys.iter().map(String::as_str), delta);
        }
    }

    fn select_index(&mut self, pane: Pane, index: usize) {
        let keys = self.keys(pane);
        if index < keys.len()
            && let Some(list) = self.list_mut(pane)
        {
            let current = list.selection.index().unwrap_or(0) as isize;
            list.selection
                .move_by(keys.iter().map(String::as_str), index as isize - current);
        }
    }

    /// Rows visible in a pane at the last frame (for PageUp/PageDown).
    fn page(&self, pane: Pane) -> isize {
        self.hits
            .borrow()
            .rows
            .iter()
            .find(|(p, _, _)| *p == pane)
            .map_or(10, |(_, r, _)| r.height.max(1) as isize)
    }

    /// The VM selected in the VM table, if it runs on this peer.
    /// The job selected in the Throughput pane's job list.
    pub fn selected_job(&self) -> Option<&JobView> {
        let status = self.status.as_ref()?;
        let key = self.jobs.selection.key()?;
        status.jobs.iter().find(|j| job_key(j) == key)
    }

    /// The VM selected in the VM table with its figures: this peer's, or
    /// another's once its host gave them.
    pub fn selected_vm(&self) -> Option<&VmView> {
        self.selected_vm_row()?.view
    }

    /// The selected row of the VM table (here or, with the overlay toggle, on
    /// another peer).
    pub fn selected_vm_row(&self) -> Option<VmRow<'_>> {
        let status = self.status.as_ref()?;
        let key = self.vms.selection.key()?;
        rows::vm_rows(status, self.vms_all, VmSort::Name, "")
            .into_iter()
            .find(|r| r.key() == key)
    }

    /// Other peers' VMs whose figures the console needs: the rows of the VM
    /// table on screen at the last frame and the selected one (the
    /// Throughput pane); all of them when sorted by a figure.
    pub fn watched_remote_vms(&self) -> Vec<RemoteVmKey> {
        let Some(status) = &self.status else {
            return Vec::new();
        };
        if !self.vms_all {
            return Vec::new();
        }
        let rows = self.vm_rows(status);
        let shown = self
            .hits
            .borrow()
            .rows
            .iter()
            .find(|(p, _, _)| *p == Pane::Vms)
            .map(|(_, rect, offset)| *offset..*offset + rect.height as usize);
        let selected = self.vms.selection.key();
        let mut keys: Vec<RemoteVmKey> = rows
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                !r.local
                    && (self.vm_sort.by_figures()
                        || shown.as_ref().is_some_and(|s| s.contains(i))
                        || selected == Some(r.key().as_str()))
            })
            .map(|(_, r)| RemoteVmKey {
                host_id: r.host_id.to_string(),
                vm: r.name.into(),
            })
            .collect();
        keys.sort();
        keys
    }

    /// The selected VM row's key (`name` or `name@host`).
    pub fn selected_vm_key(&self) -> Option<&str> {
        self.vms.selection.key()
    }

    pub fn selected_service(&self) -> Option<&str> {
        self.services.selection.key()
    }

    pub fn selected_peer(&self) -> Option<&str> {
        self.topology.selection.key()
    }

    /// The operation selected in the Operations pane.
    pub fn selected_operation(&self) -> Option<&OperationView> {
        let status = self.status.as_ref()?;
        let key = self.operations.selection.key()?;
        status.operations.iter().find(|o| o.key() == key)
    }

    /// A boot log the operator asked for: shown over the panes unless a
    /// dialog opened meanwhile (then only said on the status line).
    pub fn show_boot_log(&mut self, log: BootLog) {
        if matches!(self.mode, Mode::Normal | Mode::BootLog(_)) {
            self.message = None;
            self.mode = Mode::BootLog(BootLogView::new(log));
        } else {
            self.say(format!("Boot log of {} read ({} bytes)", log.vm, log.size));
        }
    }

    /// A result from the node (command outcome) for the status line.
    pub fn notice(&mut self, text: String, error: bool) {
        if error {
            self.say_error(text)
        } else {
            self.say(text)
        }
    }

    /// Keep an open dialog in step with a new snapshot: the picker follows
    /// peers coming and going (keeping the chosen peer), and closes with a
    /// message if nothing is left to pick or the VM is gone.
    fn refresh_dialog(&mut self) {
        let Some(status) = &self.status else { return };
        let all = rows::vm_rows(status, true, VmSort::Name, "");
        let vm_present = |vm: &str| all.iter().any(|r| r.name == vm);
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::PickPeer {
                vm,
                replicate,
                candidates: old,
                selected,
            } => {
                if !vm_present(&vm) {
                    return self.say_error(format!("{vm} is no longer on this peer"));
                }
                let host_id = all
                    .iter()
                    .find(|r| r.name == vm)
                    .map(|r| r.host_id.to_string())
                    .unwrap_or_default();
                let new = candidates(status, &host_id);
                if new.is_empty() {
                    return self.say_error("No other connected peer to migrate to".into());
                }
                let keep = old.get(selected).map(|c| c.peer_id.as_str());
                let selected = new
                    .iter()
                    .position(|c| Some(c.peer_id.as_str()) == keep)
                    .unwrap_or_else(|| selected.min(new.len() - 1));
                self.mode = Mode::PickPeer {
                    vm,
                    replicate,
                    candidates: new,
                    selected,
                };
            }
            Mode::Confirm { question, command } => {
                if let Some(vm) = command.vm()
                    && !vm_present(vm)
                {
                    return self.say_error(format!("{vm} is gone"));
                }
                self.mode = Mode::Confirm { question, command };
            }
            other => self.mode = other,
        }
    }

    pub fn say(&mut self, text: String) {
        self.set_message(text, MessageKind::Info);
    }

    pub fn say_error(&mut self, text: String) {
        self.set_message(text, MessageKind::Error);
    }

    fn set_message(&mut self, text: String, kind: MessageKind) {
        self.message = Some(Message {
            text,
            kind,
            shown_at: Instant::now(),
        });
    }
}

/// Where a VM on `host_id` may go: every connected peer but its host (this
/// one included when the VM is elsewhere), in table order.
fn candidates(status: &Status, host_id: &str) -> Vec<Candidate> {
    rows::peer_rows(status)
        .into_iter()
        .filter(|r| r.peer_id != host_id && r.connected)
        .map(|r| Candidate {
            peer_id: r.peer_id,
            name: r.name,
            latency_ms: r.latency_ms,
        })
        .collect()
}

/// Where the user's console files live (`~/.config/peervisor`).
pub fn config_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "peervisor").map(|d| d.config_dir().to_path_buf())
}

/// A job's row key: source and id (ids are unique per source).
pub fn job_key(job: &JobView) -> String {
    format!("{}:{}", job.source, job.id)
}

#[cfg(test)]
mod tests;
