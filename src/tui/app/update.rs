//! The console's reducer: keys (through the keymap), mouse events and the `:`
//! command line become state changes of `App` and, where the operator asked
//! the node for something, a control `Request`.

use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::Position;
use tui_logger::{LevelFilter, TuiWidgetEvent};

use super::{App, HISTORY, Mode, Pane, WHEEL_ROWS, candidates};
use crate::api::Request;
use crate::model::{OperationKind, VmState, VmView};
use crate::tui::action::Action;
use crate::tui::cmdline::{self, LineEditor, Names, Parsed};
use crate::tui::rows;
use crate::tui::theme::Theme;

impl App {
    /// A key press. Returns a request for the node, if the key made one.
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Request> {
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
        if ctrl && key.code == KeyCode::Char('c') && action == Action::Quit {
            // Ctrl-C quits even where `quit`'s other keys close an overlay.
            self.should_quit = true;
            return None;
        }
        self.update(action)
    }

    /// Keys while typing a command or a filter: text goes into the line.
    pub(super) fn handle_text_key(&mut self, key: KeyEvent) -> Option<Request> {
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
    pub(super) fn names(&self) -> Names {
        let Some(status) = &self.status else {
            return Names {
                themes: Theme::available(self.opts.theme_dir.as_deref()),
                ..Names::default()
            };
        };
        Names {
            vms: status.vms.iter().map(|v| v.name.to_string()).collect(),
            peers: rows::peer_rows(status)
                .into_iter()
                .filter(|r| !r.is_local)
                .map(|r| r.name)
                .collect(),
            services: status.services.iter().map(|s| s.name.to_string()).collect(),
            themes: Theme::available(self.opts.theme_dir.as_deref()),
        }
    }

    /// A connected peer (this one included) by nickname or id, as its id; the
    /// name as typed when no peer has it (the node explains).
    fn peer_id_named(&self, peer: &str) -> String {
        self.status
            .as_ref()
            .and_then(|s| {
                candidates(s, "")
                    .into_iter()
                    .find(|c| c.name == peer || c.peer_id == peer)
            })
            .map_or(peer.to_string(), |c| c.peer_id)
    }

    fn run_command_line(&mut self, line: &str) -> Option<Request> {
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
                let to = self.peer_id_named(&peer);
                self.say(format!("Migration of {vm} to {peer} requested"));
                Some(Request::migrate(vm, to))
            }
            Parsed::Replicate { vm, peer } => {
                let to = self.peer_id_named(&peer);
                self.say(format!("Replication of {vm} to {peer} requested"));
                Some(Request::replicate(vm, to))
            }
            Parsed::Consume { service, port } => {
                self.say(format!("Consume {service} requested"));
                Some(Request::consume(service, port))
            }
            Parsed::Unconsume { service } => Some(Request::Unconsume {
                service: service.into(),
            }),
            Parsed::Expose { name, target } => {
                self.say(format!("Expose {name} ({target}) requested"));
                Some(Request::expose(name, target))
            }
            Parsed::Start { vm } => Some(Request::start(vm)),
            Parsed::Stop { vm } => Some(Request::stop(vm)),
            Parsed::Pause { vm } => Some(Request::pause(vm)),
            Parsed::Resume { vm } => Some(Request::resume(vm)),
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
    pub fn update(&mut self, action: Action) -> Option<Request> {
        if let Mode::BootLog(view) = &mut self.mode
            && !self.show_help
        {
            // q and Esc close the log, as a pager does.
            match action {
                Action::Quit | Action::Cancel | Action::BootLog => self.mode = Mode::Normal,
                Action::Up => view.scroll(-1),
                Action::Down => view.scroll(1),
                Action::PageUp => view.scroll(-view.page()),
                Action::PageDown => view.scroll(view.page()),
                Action::Top => view.top = 0,
                Action::Bottom => view.top = usize::MAX,
                Action::Help => self.show_help = true,
                _ => {}
            }
            return None;
        }
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
                                    command: Request::replicate(vm, to),
                                }
                            } else {
                                Mode::Confirm {
                                    question: format!("Migrate {vm} to {}?", peer.name),
                                    command: Request::migrate(vm, to),
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
            mode @ (Mode::Command(_) | Mode::Filter(_) | Mode::BootLog(_)) => {
                self.mode = mode;
                None
            }
        }
    }

    fn update_normal(&mut self, action: Action) -> Option<Request> {
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
                let vm = self.vm_for_action()?;
                return Some(match vm.state {
                    VmState::Running | VmState::Paused => Request::stop(vm.name.clone()),
                    _ => Request::start(vm.name.clone()),
                });
            }
            Action::PauseResume => {
                let vm = self.vm_for_action()?;
                let name = vm.name.clone();
                return match vm.state {
                    VmState::Running => Some(Request::pause(name)),
                    VmState::Paused => Some(Request::resume(name)),
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
                if self.selected_vm_row().is_some_and(|r| !r.local) {
                    let key = self.selected_vm_key().unwrap_or_default().to_string();
                    self.say_error(format!("{key} runs on another peer: delete it there"));
                    return None;
                }
                let name = self.vm_for_action()?.name.to_string();
                self.confirm_delete(name);
            }
            Action::SerialConsole => return self.vm_console_request(),
            Action::BootLog => {
                let row = self.vm_row_for_console()?;
                let name = row.name.to_string();
                self.say(format!("Reading the boot log of {name}…"));
                return Some(Request::VmBootLog { name: name.into() });
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

    /// The selected VM row (here or on another peer: its host decides), else
    /// a message saying why there is none.
    fn vm_row_for_console(&mut self) -> Option<rows::VmRow<'_>> {
        if self.status.is_none() {
            self.say_error("Not connected to the node yet".into());
            return None;
        }
        if self.selected_vm_row().is_none() {
            self.say_error("No VM selected".into());
        }
        self.selected_vm_row()
    }

    /// The serial console of the selected VM: the wiring opens it and, once
    /// its host said yes, the console steps aside for it.
    fn vm_console_request(&mut self) -> Option<Request> {
        let row = self.vm_row_for_console()?;
        let name = row.name.to_string();
        let key = row.key();
        if let Some(state) = row.view.map(|v| v.state)
            && !matches!(state, VmState::Running | VmState::Paused)
        {
            let text = format!(
                "{key} is {}: start it first (its boot log: v)",
                state.as_str()
            );
            self.say_error(text);
            return None;
        }
        self.say(format!("Opening the console of {key}…"));
        Some(Request::VmConsole { name: name.into() })
    }

    /// Delete on the Operations pane: abort the selected outgoing migration.
    pub(super) fn confirm_abort(&mut self) {
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
            command: Request::MigrateAbort { vm },
        };
    }

    fn confirm_delete(&mut self, vm: String) {
        self.mode = Mode::Confirm {
            question: format!("Delete {vm}? It is stopped and its definition removed."),
            command: Request::remove(vm),
        };
    }

    /// The selected VM with its figures (here, or on another peer once its
    /// host gave them; its host decides whether this peer may act on it),
    /// else a message saying why not.
    pub(super) fn vm_for_action(&mut self) -> Option<&VmView> {
        if self.status.is_none() {
            self.say_error("Not connected to the node yet".into());
            return None;
        }
        if self.selected_vm().is_none() {
            let text = match self.selected_vm_key() {
                Some(key) => format!("{key}: no state from its host yet (try again in a moment)"),
                None => "No VM selected".into(),
            };
            self.say_error(text);
            return None;
        }
        self.selected_vm()
    }

    /// Opens the peer picker for migrating (or replicating) the selected VM.
    pub(super) fn start_pick_peer(&mut self, replicate: bool) {
        let Some(vm) = self.vm_for_action() else {
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
        let name = vm.name.to_string();
        let host_id = self
            .selected_vm_row()
            .map(|r| r.host_id.to_string())
            .unwrap_or_default();
        let candidates = self
            .status
            .as_ref()
            .map(|s| candidates(s, &host_id))
            .unwrap_or_default();
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
                    if matches!(self.mode, Mode::Detail { .. } | Mode::BootLog(_)) {
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
