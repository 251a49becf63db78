//! Console state and its reducer. Everything here is plain data: no terminal,
//! no channels, no clock other than the `Instant`s handed in, so the whole
//! console can be driven and inspected from tests.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Position, Rect};
use tui_logger::{LevelFilter, TuiWidgetEvent, TuiWidgetState};

use super::action::Action;
use super::cmdline::{self, LineEditor, Names, Parsed};
use super::keymap::Keymap;
use super::panes::Selection;
use super::rows::{self, VmRow, VmSort};
use super::theme::Theme;
use super::{ConsoleOptions, UiCommand};
use crate::model::{JobView, OperationKind, OperationView, Status, VmState, VmView};

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
        command: UiCommand,
    },
    /// Typing after `:`.
    Command(LineEditor),
    /// Typing the focused list's filter after `/`.
    Filter(LineEditor),
    /// A peer's details (Enter in the topology).
    Detail {
        peer_id: String,
    },
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
                .map(|s| s.name.clone())
                .collect(),
            Pane::Operations => rows::operation_rows(status, &self.operations.filter)
                .iter()
                .map(|o| o.id.to_string())
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

    pub fn selected_vm(&self) -> Option<&VmView> {
        let status = self.status.as_ref()?;
        let key = self.vms.selection.key()?;
        status.vms.iter().find(|v| v.name == key)
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

    /// A key press. Returns a request for the node, if the key made one.
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<UiCommand> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') && self.keymap.action_for(key).is_none() {
            // Ctrl-C always quits, whatever the keymap says.
            self.should_quit = true;
            return None;
        }
        if matches!(self.mode, Mode::Command(_) | Mode::Filter(_)) && !self.show_help {
            return self.handle_text_key(key);
        }
        let action = self.keymap.action_for(key)?;
        self.update(action)
    }

    /// Keys while typing a command or a filter: text goes into the line.
    fn handle_text_key(&mut self, key: KeyEvent) -> Option<UiCommand> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let is_command = matches!(self.mode, Mode::Command(_));
        let names = if is_command {
            self.names()
        } else {
            Names::default()
        };
        let history = self.history.clone();
        let (Mode::Command(editor) | Mode::Filter(editor)) = &mut self.mode else {
            return None;
        };
        match key.code {
            KeyCode::Esc => {
                self.mode = Mode::Normal;
                if !is_command {
                    self.set_filter(String::new());
                }
            }
            KeyCode::Enter => {
                let line = editor.text.trim().to_string();
                self.mode = Mode::Normal;
                if is_command {
                    return self.run_command_line(&line);
                }
            }
            KeyCode::Tab if is_command => {
                let (text, candidates) = cmdline::complete(&editor.text, &names);
                editor.text = text;
                editor.candidates = candidates;
            }
            KeyCode::Up if is_command => editor.browse(&history, true),
            KeyCode::Down if is_command => editor.browse(&history, false),
            KeyCode::Backspace => {
                if editor.text.is_empty() {
                    self.mode = Mode::Normal;
                } else {
                    editor.backspace();
                }
            }
            KeyCode::Char('u') if ctrl => editor.text.clear(),
            KeyCode::Char('w') if ctrl => editor.delete_word(),
            KeyCode::Char(c) if !ctrl && !key.modifiers.contains(KeyModifiers::ALT) => {
                editor.push(c)
            }
            _ => {}
        }
        // The filter applies as it is typed.
        if let Mode::Filter(editor) = &self.mode {
            let text = editor.text.clone();
            self.set_filter(text);
        }
        None
    }

    fn set_filter(&mut self, text: String) {
        let pane = self.focus;
        if let Some(list) = self.list_mut(pane) {
            list.filter = text;
            list.offset.set(0);
        }
        self.resync();
    }

    /// Names for completion.
    fn names(&self) -> Names {
        let Some(status) = &self.status else {
            return Names {
                themes: Theme::available(self.opts.theme_dir.as_deref()),
                ..Names::default()
            };
        };
        Names {
            vms: status.vms.iter().map(|v| v.name.clone()).collect(),
            peers: rows::peer_rows(status)
                .into_iter()
                .filter(|r| !r.is_local)
                .map(|r| r.name)
                .collect(),
            services: status.services.iter().map(|s| s.name.clone()).collect(),
            themes: Theme::available(self.opts.theme_dir.as_deref()),
        }
    }

    fn run_command_line(&mut self, line: &str) -> Option<UiCommand> {
        if line.is_empty() {
            return None;
        }
        if self.history.last().map(String::as_str) != Some(line) {
            self.history.push(line.to_string());
            if self.history.len() > HISTORY {
                self.history.remove(0);
            }
        }
        let parsed = match cmdline::parse(line) {
            Ok(p) => p,
            Err(e) => {
                self.say_error(e);
                return None;
            }
        };
        match parsed {
            Parsed::Migrate { vm, peer } => {
                let to = self
                    .status
                    .as_ref()
                    .and_then(|s| {
                        candidates(s)
                            .into_iter()
                            .find(|c| c.name == peer || c.peer_id == peer)
                    })
                    .map_or(peer.clone(), |c| c.peer_id);
                self.say(format!("Migration of {vm} to {peer} requested"));
                Some(UiCommand::Migrate { vm, to })
            }
            Parsed::Replicate { vm, peer } => {
                let to = self
                    .status
                    .as_ref()
                    .and_then(|s| {
                        candidates(s)
                            .into_iter()
                            .find(|c| c.name == peer || c.peer_id == peer)
                    })
                    .map_or(peer.clone(), |c| c.peer_id);
                self.say(format!("Replication of {vm} to {peer} requested"));
                Some(UiCommand::Replicate { vm, to })
            }
            Parsed::Consume { service, port } => {
                self.say(format!("Consume {service} requested"));
                Some(UiCommand::Consume {
                    service,
                    local_port: port,
                })
            }
            Parsed::Unconsume { service } => Some(UiCommand::Unconsume { service }),
            Parsed::Expose { name, target } => {
                self.say(format!("Expose {name} ({target}) requested"));
                Some(UiCommand::Expose { name, target })
            }
            Parsed::Start { vm } => Some(UiCommand::Start { vm }),
            Parsed::Stop { vm } => Some(UiCommand::Stop { vm }),
            Parsed::Pause { vm } => Some(UiCommand::Pause { vm }),
            Parsed::Resume { vm } => Some(UiCommand::Resume { vm }),
            Parsed::Delete { vm } => {
                self.confirm_delete(vm);
                None
            }
            Parsed::Theme { name } => {
                self.switch_theme(&name);
                None
            }
            Parsed::Help => {
                self.show_help = true;
                None
            }
            Parsed::Quit => {
                self.should_quit = true;
                None
            }
        }
    }

    fn switch_theme(&mut self, name: &str) {
        match Theme::find(name, self.opts.theme_dir.as_deref()) {
            Ok(theme) => {
                self.theme = theme;
                self.say(format!("Theme {name}"));
            }
            Err(e) => self.say_error(e.to_string()),
        }
    }

    /// The reducer: apply one action to the state.
    pub fn update(&mut self, action: Action) -> Option<UiCommand> {
        if action == Action::Quit {
            self.should_quit = true;
            return None;
        }
        if self.show_help {
            match action {
                Action::Help | Action::Cancel | Action::Confirm => self.show_help = false,
                Action::Up => self.help_scroll = self.help_scroll.saturating_sub(1),
                Action::Down => self.help_scroll = self.help_scroll.saturating_add(1).min(200),
                Action::PageUp | Action::Top => self.help_scroll = 0,
                Action::PageDown => self.help_scroll = self.help_scroll.saturating_add(10).min(200),
                _ => {}
            }
            return None;
        }
        if action == Action::Help {
            self.show_help = true;
            self.help_scroll = 0;
            return None;
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.update_normal(action),
            Mode::PickPeer {
                vm,
                replicate,
                candidates,
                mut selected,
            } => {
                match action {
                    Action::Up => selected = selected.saturating_sub(1),
                    Action::Down => {
                        selected = (selected + 1).min(candidates.len().saturating_sub(1))
                    }
                    Action::Cancel => return None,
                    Action::Confirm => {
                        if let Some(peer) = candidates.get(selected) {
                            let to = peer.peer_id.clone();
                            self.mode = if replicate {
                                Mode::Confirm {
                                    question: format!(
                                        "Replicate {vm} to {}? It keeps running here.",
                                        peer.name
                                    ),
                                    command: UiCommand::Replicate { vm, to },
                                }
                            } else {
                                Mode::Confirm {
                                    question: format!("Migrate {vm} to {}?", peer.name),
                                    command: UiCommand::Migrate { vm, to },
                                }
                            };
                        }
                        return None;
                    }
                    _ => {}
                }
                self.mode = Mode::PickPeer {
                    vm,
                    replicate,
                    candidates,
                    selected,
                };
                None
            }
            Mode::Confirm { question, command } => match action {
                Action::Confirm => {
                    self.say(format!("{} requested", command.describe()));
                    Some(command)
                }
                Action::Cancel => None,
                _ => {
                    self.mode = Mode::Confirm { question, command };
                    None
                }
            },
            Mode::Detail { peer_id } => {
                if !matches!(action, Action::Cancel | Action::Confirm) {
                    self.mode = Mode::Detail { peer_id };
                }
                None
            }
            mode @ (Mode::Command(_) | Mode::Filter(_)) => {
                self.mode = mode;
                None
            }
        }
    }

    fn update_normal(&mut self, action: Action) -> Option<UiCommand> {
        let focus = self.focus;
        match action {
            Action::FocusNext => self.focus = focus.step(1),
            Action::FocusPrev => self.focus = focus.step(-1),
            Action::Up
            | Action::Down
            | Action::PageUp
            | Action::PageDown
            | Action::Top
            | Action::Bottom
                if focus == Pane::Log =>
            {
                let event = match action {
                    Action::Up => TuiWidgetEvent::UpKey,
                    Action::Down => TuiWidgetEvent::DownKey,
                    Action::PageUp | Action::Top => TuiWidgetEvent::PrevPageKey,
                    Action::PageDown => TuiWidgetEvent::NextPageKey,
                    _ => TuiWidgetEvent::EscapeKey,
                };
                self.log.transition(event);
            }
            Action::Up => self.move_selection(focus, -1),
            Action::Down => self.move_selection(focus, 1),
            Action::PageUp => self.move_selection(focus, -self.page(focus)),
            Action::PageDown => self.move_selection(focus, self.page(focus)),
            Action::Top => self.move_selection(focus, isize::MIN / 2),
            Action::Bottom => self.move_selection(focus, isize::MAX / 2),
            Action::Left if focus == Pane::Log => self.log.transition(TuiWidgetEvent::LeftKey),
            Action::Right if focus == Pane::Log => self.log.transition(TuiWidgetEvent::RightKey),
            Action::Left | Action::Right => {}
            Action::Confirm => match focus {
                Pane::Topology => {
                    if let Some(id) = self.selected_peer() {
                        self.mode = Mode::Detail {
                            peer_id: id.to_string(),
                        };
                    }
                }
                Pane::Vms => self.focus = Pane::Throughput,
                Pane::Services => return self.update_normal(Action::Consume),
                _ => {}
            },
            Action::Cancel => {
                let filtered = self.list(focus).is_some_and(|l| !l.filter.is_empty());
                if self.zoom {
                    self.zoom = false;
                } else if filtered {
                    self.set_filter(String::new());
                } else if focus == Pane::Log {
                    self.log.transition(TuiWidgetEvent::EscapeKey);
                } else {
                    self.message = None;
                }
            }
            Action::Command => self.mode = Mode::Command(LineEditor::default()),
            Action::Filter => {
                if focus.has_list() || focus == Pane::Throughput {
                    // Throughput filters the VM table it follows.
                    let current = if focus == Pane::Throughput {
                        self.vms.filter.clone()
                    } else {
                        self.list(focus)
                            .map(|l| l.filter.clone())
                            .unwrap_or_default()
                    };
                    if focus == Pane::Throughput {
                        self.focus = Pane::Vms;
                    }
                    self.mode = Mode::Filter(LineEditor::new(&current));
                } else {
                    self.say_error(format!(
                        "The {} pane has no list to filter; use log_targets to pick targets",
                        focus.title()
                    ));
                }
            }
            Action::Migrate => self.start_pick_peer(false),
            Action::Replicate => self.start_pick_peer(true),
            Action::Consume => match self.selected_service().map(str::to_string) {
                Some(name) => {
                    self.mode = Mode::Command(LineEditor::new(&format!("consume {name} ")));
                }
                None => self.say_error("No service selected (Services pane)".into()),
            },
            Action::StartStop => {
                let vm = self.local_vm_for_action()?;
                return Some(match vm.state {
                    VmState::Running | VmState::Paused => UiCommand::Stop {
                        vm: vm.name.clone(),
                    },
                    _ => UiCommand::Start {
                        vm: vm.name.clone(),
                    },
                });
            }
            Action::PauseResume => {
                let vm = self.local_vm_for_action()?;
                let name = vm.name.clone();
                return match vm.state {
                    VmState::Running => Some(UiCommand::Pause { vm: name }),
                    VmState::Paused => Some(UiCommand::Resume { vm: name }),
                    state => {
                        let text =
                            format!("{name} is {}: only running or paused VMs", state.as_str());
                        self.say_error(text);
                        None
                    }
                };
            }
            Action::Delete if self.focus == Pane::Operations => self.confirm_abort(),
            Action::Delete => {
                let name = self.local_vm_for_action()?.name.clone();
                self.confirm_delete(name);
            }
            Action::Sort => {
                self.vm_sort = self.vm_sort.next();
                self.resync();
                self.say(format!("VMs sorted by {}", self.vm_sort.label()));
            }
            Action::ToggleOverlay => {
                self.vms_all = !self.vms_all;
                self.resync();
                self.say(if self.vms_all {
                    "VMs of the whole overlay".into()
                } else {
                    "VMs of this peer".into()
                });
            }
            Action::ToggleJobs => {
                self.show_jobs = !self.show_jobs;
                self.focus = Pane::Throughput;
                self.resync();
                self.say(if self.show_jobs {
                    "Throughput: jobs and benchmarks".into()
                } else {
                    "Throughput: the selected VM".into()
                });
            }
            Action::Zoom => self.zoom = !self.zoom,
            Action::LogMore | Action::LogLess => {
                let more = action == Action::LogMore;
                let level = step_level(self.log_level, more);
                self.log_level = level;
                self.log = std::mem::take(&mut self.log).set_default_display_level(level);
                self.say(format!(
                    "Log shows {} and above",
                    level.as_str().to_lowercase()
                ));
            }
            Action::LogTargets => {
                self.log_targets = !self.log_targets;
                self.focus = Pane::Log;
            }
            Action::Help | Action::Quit => {}
        }
        None
    }

    /// Delete on the Operations pane: abort the selected outgoing migration.
    fn confirm_abort(&mut self) {
        let Some(op) = self.selected_operation() else {
            self.say_error("No operation selected".into());
            return;
        };
        if op.kind != OperationKind::MigrateOut || !rows::is_active(op) {
            let text = if rows::is_active(op) {
                format!("{} is coming in: abort it on the sending peer", op.vm)
            } else {
                format!("The migration of {} is over: nothing to abort", op.vm)
            };
            self.say_error(text);
            return;
        }
        let (vm, peer) = (op.vm.clone(), op.peer.clone());
        self.mode = Mode::Confirm {
            question: format!("Abort the migration of {vm} to {peer}? It keeps running here."),
            command: UiCommand::AbortMigration { vm },
        };
    }

    /// The operation selected in the Operations pane.
    pub fn selected_operation(&self) -> Option<&OperationView> {
        let status = self.status.as_ref()?;
        let key = self.operations.selection.key()?;
        status.operations.iter().find(|o| o.id.to_string() == key)
    }

    fn confirm_delete(&mut self, vm: String) {
        self.mode = Mode::Confirm {
            question: format!("Delete {vm}? It is stopped and its definition removed."),
            command: UiCommand::Delete { vm },
        };
    }

    /// The selected VM if it is on this peer, else a message saying why not.
    fn local_vm_for_action(&mut self) -> Option<&VmView> {
        if self.status.is_none() {
            self.say_error("Not connected to the node yet".into());
            return None;
        }
        if self.selected_vm().is_none() {
            let text = match self.selected_vm_key() {
                Some(key) => format!("{key} runs on another peer: act on it from there"),
                None => "No VM selected".into(),
            };
            self.say_error(text);
            return None;
        }
        self.selected_vm()
    }

    /// Opens the peer picker for migrating (or replicating) the selected VM.
    fn start_pick_peer(&mut self, replicate: bool) {
        let Some(vm) = self.local_vm_for_action() else {
            return;
        };
        if !replicate && vm.state != VmState::Running {
            let text = format!(
                "{} is {}: only running VMs can be migrated",
                vm.name,
                vm.state.as_str()
            );
            return self.say_error(text);
        }
        let name = vm.name.clone();
        let candidates = self.status.as_ref().map(candidates).unwrap_or_default();
        if candidates.is_empty() {
            let what = if replicate { "replicate" } else { "migrate" };
            return self.say_error(format!("No other connected peer to {what} to"));
        }
        self.message = None;
        self.mode = Mode::PickPeer {
            vm: name,
            replicate,
            candidates,
            selected: 0,
        };
    }

    /// A mouse event: click focuses a pane and selects a row, the wheel scrolls.
    pub fn handle_mouse(&mut self, ev: MouseEvent) {
        let at = Position::new(ev.column, ev.row);
        let hits = self.hits.borrow().clone();
        match ev.kind {
            MouseEventKind::Down(MouseButton::Left) => {
                if self.show_help || !matches!(self.mode, Mode::Normal) {
                    // A click outside a dialog closes it, like Esc.
                    self.show_help = false;
                    if matches!(self.mode, Mode::Detail { .. }) {
                        self.mode = Mode::Normal;
                    }
                    return;
                }
                if let Some((pane, _)) = hits.tabs.iter().find(|(_, r)| r.contains(at)) {
                    self.focus = *pane;
                    return;
                }
                if let Some((pane, rect, offset)) =
                    hits.rows.iter().find(|(_, r, _)| r.contains(at))
                {
                    self.focus = *pane;
                    self.select_index(*pane, offset + (at.y - rect.y) as usize);
                    return;
                }
                if let Some((pane, _)) = hits.panes.iter().find(|(_, r)| r.contains(at)) {
                    self.focus = *pane;
                }
            }
            MouseEventKind::ScrollDown | MouseEventKind::ScrollUp => {
                let down = ev.kind == MouseEventKind::ScrollDown;
                let Some((pane, _)) = hits.panes.iter().find(|(_, r)| r.contains(at)) else {
                    return;
                };
                if *pane == Pane::Log {
                    self.log.transition(if down {
                        TuiWidgetEvent::NextPageKey
                    } else {
                        TuiWidgetEvent::PrevPageKey
                    });
                } else {
                    self.move_selection(*pane, if down { WHEEL_ROWS } else { -WHEEL_ROWS });
                }
            }
            _ => {}
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
        let vm_present = |vm: &str| status.vms.iter().any(|v| v.name == vm);
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
                let new = candidates(status);
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
                    return self.say_error(format!("{vm} is no longer on this peer"));
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

fn step_level(level: LevelFilter, more: bool) -> LevelFilter {
    const LEVELS: [LevelFilter; 5] = [
        LevelFilter::Error,
        LevelFilter::Warn,
        LevelFilter::Info,
        LevelFilter::Debug,
        LevelFilter::Trace,
    ];
    let i = LEVELS.iter().position(|l| *l == level).unwrap_or(2);
    let i = if more {
        (i + 1).min(LEVELS.len() - 1)
    } else {
        i.saturating_sub(1)
    };
    LEVELS[i]
}

/// Connected peers other than this one, in table order.
fn candidates(status: &Status) -> Vec<Candidate> {
    rows::peer_rows(status)
        .into_iter()
        .filter(|r| !r.is_local && r.connected)
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
mod tests {
    use super::*;
    use crate::tui::testutil::{PEER_B, PEER_C, app_with, rich_status, sample_status};

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    fn code(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    /// Feed keys; return every command they produced.
    fn press(app: &mut App, keys: &[KeyEvent]) -> Vec<UiCommand> {
        keys.iter().filter_map(|k| app.handle_key(*k)).collect()
    }

    fn typed(text: &str) -> Vec<KeyEvent> {
        text.chars().map(key).collect()
    }

    fn message(app: &App) -> &str {
        app.message.as_ref().map_or("", |m| m.text.as_str())
    }

    /// The sample's VMs sort by name: db-1 (stopped), web-1 (running).
    fn on_web_1(app: &mut App) {
        press(app, &[key('j')]);
        assert_eq!(app.selected_vm_key(), Some("web-1"));
    }

    #[test]
    fn r_enter_y_replicates_to_the_picked_peer_and_works_on_stopped_vms() {
        let mut app = app_with(Some(sample_status()));
        on_web_1(&mut app);
        assert!(press(&mut app, &[key('r')]).is_empty());
        assert!(matches!(
            &app.mode,
            Mode::PickPeer {
                replicate: true,
                ..
            }
        ));
        press(&mut app, &[code(KeyCode::Enter)]);
        assert!(
            matches!(&app.mode, Mode::Confirm { question, .. } if question == "Replicate web-1 to peer-b? It keeps running here.")
        );
        let cmds = press(&mut app, &[key('y')]);
        assert_eq!(
            cmds,
            vec![UiCommand::Replicate {
                vm: "web-1".into(),
                to: PEER_B.into()
            }]
        );
        assert_eq!(message(&app), "Replication of web-1 requested");
        // db-1 is stopped: it cannot migrate, but its disk can be replicated.
        press(&mut app, &[key('k')]);
        assert_eq!(app.selected_vm_key(), Some("db-1"));
        press(&mut app, &[key('r')]);
        assert!(matches!(&app.mode, Mode::PickPeer { vm, replicate: true, .. } if vm == "db-1"));
    }

    #[test]
    fn m_down_enter_y_migrates_to_the_second_connected_peer() {
        let mut app = app_with(Some(sample_status()));
        on_web_1(&mut app);
        assert!(press(&mut app, &[key('m')]).is_empty());
        assert!(
            matches!(&app.mode, Mode::PickPeer { vm, candidates, selected: 0, replicate: false }
            if vm == "web-1" && candidates.iter().map(|c| c.name.as_str()).collect::<Vec<_>>() == ["peer-b", "peer-c"])
        );
        press(&mut app, &[code(KeyCode::Down), code(KeyCode::Enter)]);
        assert!(
            matches!(&app.mode, Mode::Confirm { question, .. } if question == "Migrate web-1 to peer-c?")
        );
        let cmds = press(&mut app, &[key('y')]);
        assert_eq!(
            cmds,
            vec![UiCommand::Migrate {
                vm: "web-1".into(),
                to: PEER_C.into()
            }]
        );
        assert_eq!(app.mode, Mode::Normal);
        assert_eq!(message(&app), "Migration of web-1 requested");
        assert!(press(&mut app, &[key('y'), code(KeyCode::Enter)]).is_empty());
    }

    #[test]
    fn esc_cancels_every_dialog_and_m_refuses_a_stopped_vm() {
        let mut app = app_with(Some(sample_status()));
        press(&mut app, &[key('m')]); // db-1 is stopped
        assert_eq!(app.mode, Mode::Normal);
        assert!(
            message(&app).contains("db-1 is stopped"),
            "{}",
            message(&app)
        );
        on_web_1(&mut app);
        for keys in [
            vec![key('m'), code(KeyCode::Esc)],
            vec![key('m'), code(KeyCode::Enter), code(KeyCode::Esc)],
            vec![key('m'), code(KeyCode::Enter), key('n')],
            vec![key('d'), key('n')],
        ] {
            assert!(press(&mut app, &keys).is_empty());
            assert_eq!(app.mode, Mode::Normal);
        }
        assert!(!app.should_quit);
    }

    #[test]
    fn d_on_the_operations_pane_aborts_the_selected_migration_after_asking() {
        let mut app = app_with(Some(crate::tui::testutil::rich_status()));
        app.focus = Pane::Operations;
        press(&mut app, &[code(KeyCode::Home)]);
        assert!(press(&mut app, &[key('d')]).is_empty(), "asks first");
        assert!(
            matches!(&app.mode, Mode::Confirm { question, .. }
                if question.starts_with("Abort the migration of web-3 to peer-c?")),
            "{:?}",
            app.mode
        );
        assert_eq!(
            press(&mut app, &[key('y')]),
            vec![UiCommand::AbortMigration { vm: "web-3".into() }]
        );
        // A finished operation has nothing to abort.
        press(&mut app, &[code(KeyCode::Down)]);
        assert!(press(&mut app, &[key('d')]).is_empty());
        assert_eq!(app.mode, Mode::Normal);
        assert!(message(&app).contains("is over"), "{}", message(&app));
    }

    #[test]
    fn s_p_d_make_lifecycle_commands_for_the_selected_vm() {
        let mut app = app_with(Some(sample_status()));
        assert_eq!(
            press(&mut app, &[key('s')]),
            vec![UiCommand::Start { vm: "db-1".into() }]
        );
        assert!(press(&mut app, &[key('p')]).is_empty());
        assert!(message(&app).contains("only running or paused"));
        on_web_1(&mut app);
        assert_eq!(
            press(&mut app, &[key('s')]),
            vec![UiCommand::Stop { vm: "web-1".into() }]
        );
        assert_eq!(
            press(&mut app, &[key('p')]),
            vec![UiCommand::Pause { vm: "web-1".into() }]
        );
        let mut status = sample_status();
        status.vms[0].state = VmState::Paused;
        app.set_status(Some(status));
        assert_eq!(
            press(&mut app, &[key('p')]),
            vec![UiCommand::Resume { vm: "web-1".into() }]
        );
        assert!(press(&mut app, &[key('d')]).is_empty());
        assert!(
            matches!(&app.mode, Mode::Confirm { question, .. } if question.starts_with("Delete web-1?"))
        );
        assert_eq!(
            press(&mut app, &[key('y')]),
            vec![UiCommand::Delete { vm: "web-1".into() }]
        );
    }

    #[test]
    fn overlay_toggle_lists_other_peers_vms_which_cannot_be_operated_here() {
        let mut app = app_with(Some(sample_status()));
        press(&mut app, &[key('a')]);
        assert!(app.vms_all);
        press(&mut app, &[key('k')]);
        assert_eq!(app.selected_vm_key(), Some("cache-3@peer-b"));
        assert!(press(&mut app, &[key('s')]).is_empty());
        assert!(
            message(&app).contains("runs on another peer"),
            "{}",
            message(&app)
        );
        press(
            &mut app,
            &[key('o'), key('o'), key('o'), key('o'), key('o'), key('o')],
        );
        assert_eq!(app.vm_sort, VmSort::Host);
    }

    #[test]
    fn command_line_completes_runs_and_remembers() {
        let mut app = app_with(Some(rich_status()));
        press(&mut app, &[key(':')]);
        press(&mut app, &typed("mig"));
        press(&mut app, &[code(KeyCode::Tab)]);
        press(&mut app, &typed("we"));
        press(&mut app, &[code(KeyCode::Tab)]);
        press(&mut app, &typed("peer-"));
        press(&mut app, &[code(KeyCode::Tab)]);
        assert!(
            matches!(&app.mode, Mode::Command(e) if e.text == "migrate web-1 peer-" && e.candidates == ["peer-b", "peer-c", "peer-d"]),
            "{:?}",
            app.mode
        );
        press(&mut app, &typed("b"));
        let cmds = press(&mut app, &[code(KeyCode::Enter)]);
        assert_eq!(
            cmds,
            vec![UiCommand::Migrate {
                vm: "web-1".into(),
                to: PEER_B.into()
            }]
        );
        // History: ↑ brings the line back.
        press(&mut app, &[key(':'), code(KeyCode::Up)]);
        assert!(matches!(&app.mode, Mode::Command(e) if e.text == "migrate web-1 peer-b"));
        press(&mut app, &[code(KeyCode::Esc)]);
        // Consume with a port; expose; a bad line says why.
        press(&mut app, &[key(':')]);
        press(&mut app, &typed("consume cache 6380"));
        assert_eq!(
            press(&mut app, &[code(KeyCode::Enter)]),
            vec![UiCommand::Consume {
                service: "cache".into(),
                local_port: Some(6380)
            }]
        );
        press(&mut app, &[key(':')]);
        press(&mut app, &typed("expose pg 127.0.0.1:5432"));
        assert_eq!(
            press(&mut app, &[code(KeyCode::Enter)]),
            vec![UiCommand::Expose {
                name: "pg".into(),
                target: "127.0.0.1:5432".into()
            }]
        );
        press(&mut app, &[key(':')]);
        press(&mut app, &typed("replicate web-1 peer-b"));
        let sent = press(&mut app, &[code(KeyCode::Enter)]);
        assert!(
            matches!(&sent[..], [UiCommand::Replicate { vm, .. }] if vm == "web-1"),
            "{sent:?}"
        );
        press(&mut app, &[key(':')]);
        press(&mut app, &typed("theme light"));
        press(&mut app, &[code(KeyCode::Enter)]);
        assert_eq!(app.theme.name, "light");
        press(&mut app, &[key(':')]);
        press(&mut app, &typed("theme nope"));
        press(&mut app, &[code(KeyCode::Enter)]);
        assert!(message(&app).contains("unknown theme `nope`"));
        assert_eq!(app.theme.name, "light");
        // q while typing is text, not quit.
        press(&mut app, &[key(':'), key('q')]);
        assert!(!app.should_quit);
        press(&mut app, &[code(KeyCode::Enter)]);
        assert!(app.should_quit);
    }

    #[test]
    fn c_on_a_service_prefills_the_consume_command() {
        let mut app = app_with(Some(rich_status()));
        press(&mut app, &[code(KeyCode::Tab)]);
        assert_eq!(app.focus, Pane::Services);
        press(&mut app, &[key('c')]);
        assert!(matches!(&app.mode, Mode::Command(e) if e.text == "consume cache "));
        assert_eq!(
            press(&mut app, &[code(KeyCode::Enter)]),
            vec![UiCommand::Consume {
                service: "cache".into(),
                local_port: None
            }]
        );
    }

    #[test]
    fn log_level_steps_and_zoom_and_focus_cycle() {
        let mut app = app_with(Some(sample_status()));
        press(&mut app, &[key('-'), key('-'), key('-')]);
        assert_eq!(app.log_level, LevelFilter::Error);
        press(&mut app, &[key('+')]);
        assert_eq!(app.log_level, LevelFilter::Warn);
        press(&mut app, &[key('z')]);
        assert!(app.zoom);
        press(&mut app, &[code(KeyCode::Esc)]);
        assert!(!app.zoom);
        let mut seen = vec![app.focus];
        for _ in 0..6 {
            press(&mut app, &[code(KeyCode::Tab)]);
            seen.push(app.focus);
        }
        assert_eq!(seen.first(), seen.last());
        assert_eq!(seen.len(), 7);
        press(
            &mut app,
            &[KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT)],
        );
        assert_eq!(app.focus, Pane::Topology);
    }

    #[test]
    fn picker_follows_peers_and_closes_when_the_last_leaves() {
        let mut app = app_with(Some(sample_status()));
        on_web_1(&mut app);
        press(&mut app, &[key('m'), key('j')]);
        let mut status = sample_status();
        status.peers.retain(|p| p.nick == "peer-c");
        app.set_status(Some(status.clone()));
        assert!(
            matches!(&app.mode, Mode::PickPeer { candidates, selected: 0, .. } if candidates.len() == 1)
        );
        status.peers.clear();
        app.set_status(Some(status));
        assert_eq!(app.mode, Mode::Normal);
        assert_eq!(message(&app), "No other connected peer to migrate to");
    }

    #[test]
    fn help_swallows_keys_and_ctrl_c_quits() {
        let mut app = app_with(Some(sample_status()));
        press(&mut app, &[key('?'), key('m')]);
        assert!(app.show_help);
        assert_eq!(app.mode, Mode::Normal);
        press(&mut app, &[code(KeyCode::Esc)]);
        assert!(!app.show_help);
        let mut app = app_with(None);
        press(
            &mut app,
            &[KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)],
        );
        assert!(app.should_quit);
    }

    #[test]
    fn messages_expire() {
        let mut app = app_with(None);
        app.say("hello".into());
        let t0 = app.message.as_ref().unwrap().shown_at;
        app.tick(t0 + Duration::from_secs(1));
        assert!(app.message.is_some());
        app.tick(t0 + MESSAGE_TTL);
        assert!(app.message.is_none());
    }
}
