//! Console state and its reducer. Everything here is plain data: no terminal,
//! no channels, no clock other than the `Instant`s handed in, so the whole
//! console can be driven and inspected from tests.

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::action::Action;
use super::keymap::Keymap;
use super::panes::peers::PeersPane;
use super::panes::vms::VmsPane;
use super::theme::Theme;
use super::{ConsoleOptions, UiCommand};
use crate::model::{PeerView, Status, VmState};

/// How long a status-line message stays up.
const MESSAGE_TTL: Duration = Duration::from_secs(5);

/// Which pane receives ↑/↓.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Peers,
    Vms,
}

impl Focus {
    const ORDER: [Focus; 2] = [Focus::Peers, Focus::Vms];

    fn step(self, by: isize) -> Focus {
        let n = Self::ORDER.len() as isize;
        let i = Self::ORDER.iter().position(|f| *f == self).unwrap_or(0) as isize;
        Self::ORDER[(i + by).rem_euclid(n) as usize]
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
    /// Choosing where to migrate `vm`.
    PickPeer {
        vm: String,
        candidates: Vec<Candidate>,
        selected: usize,
    },
    /// Waiting for y/n on a migration.
    Confirm {
        vm: String,
        peer: Candidate,
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

pub struct App {
    pub opts: ConsoleOptions,
    pub keymap: Keymap,
    pub theme: Theme,
    pub status: Option<Status>,
    pub link: Link,
    pub focus: Focus,
    pub peers: PeersPane,
    pub vms: VmsPane,
    pub mode: Mode,
    pub show_help: bool,
    pub message: Option<Message>,
    pub should_quit: bool,
}

impl App {
    pub fn new(opts: ConsoleOptions, keymap: Keymap, theme: Theme) -> App {
        App {
            opts,
            keymap,
            theme,
            status: None,
            link: Link::Connecting,
            focus: Focus::Vms,
            peers: PeersPane::default(),
            vms: VmsPane::default(),
            mode: Mode::Normal,
            show_help: false,
            message: None,
            should_quit: false,
        }
    }

    /// A new snapshot from the node (or `None`, still waiting).
    pub fn set_status(&mut self, status: Option<Status>) {
        let Some(status) = status else {
            return;
        };
        self.peers.sync(&peer_rows(&status));
        self.vms.sync(&status.vms);
        self.link = Link::Live;
        self.status = Some(status);
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

    /// A key press. Returns a request for the node, if the key made one.
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<UiCommand> {
        let action = match self.keymap.action_for(key) {
            Some(action) => action,
            // Ctrl-C always quits, whatever the keymap says.
            None if key.code == KeyCode::Char('c')
                && key.modifiers.contains(KeyModifiers::CONTROL) =>
            {
                Action::Quit
            }
            None => return None,
        };
        self.update(action)
    }

    /// The reducer: apply one action to the state.
    pub fn update(&mut self, action: Action) -> Option<UiCommand> {
        if action == Action::Quit {
            self.should_quit = true;
            return None;
        }
        if self.show_help {
            if matches!(action, Action::Help | Action::Cancel | Action::Confirm) {
                self.show_help = false;
            }
            return None;
        }
        if action == Action::Help {
            self.show_help = true;
            return None;
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.update_normal(action),
            Mode::PickPeer {
                vm,
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
                        if let Some(peer) = candidates.get(selected).cloned() {
                            self.mode = Mode::Confirm { vm, peer };
                        }
                        return None;
                    }
                    _ => {}
                }
                self.mode = Mode::PickPeer {
                    vm,
                    candidates,
                    selected,
                };
                None
            }
            Mode::Confirm { vm, peer } => match action {
                Action::Confirm => {
                    self.say(format!("Migration of {vm} to {} requested", peer.name));
                    Some(UiCommand::Migrate {
                        vm,
                        to_peer_id: peer.peer_id,
                    })
                }
                Action::Cancel => None,
                _ => {
                    self.mode = Mode::Confirm { vm, peer };
                    None
                }
            },
        }
    }

    fn update_normal(&mut self, action: Action) -> Option<UiCommand> {
        match action {
            Action::FocusNext => self.focus = self.focus.step(1),
            Action::FocusPrev => self.focus = self.focus.step(-1),
            Action::Up | Action::Down => {
                let delta = if action == Action::Up { -1 } else { 1 };
                let Some(status) = &self.status else {
                    return None;
                };
                match self.focus {
                    Focus::Peers => self.peers.move_by(&peer_rows(status), delta),
                    Focus::Vms => self.vms.move_by(&status.vms, delta),
                }
            }
            Action::Migrate => self.start_migrate(),
            Action::Cancel => self.message = None,
            Action::Confirm | Action::Help | Action::Quit => {}
        }
        None
    }

    fn start_migrate(&mut self) {
        let Some(status) = &self.status else {
            return self.say_error("Not connected to the node yet".into());
        };
        let Some(vm) = self.vms.selected_vm(&status.vms) else {
            return self.say_error("No VM selected".into());
        };
        if vm.state != VmState::Running {
            let text = format!(
                "{} is {}: only running VMs can be migrated",
                vm.name,
                vm.state.as_str()
            );
            return self.say_error(text);
        }
        let candidates = candidates(status);
        if candidates.is_empty() {
            return self.say_error("No other connected peer to migrate to".into());
        }
        self.message = None;
        self.mode = Mode::PickPeer {
            vm: vm.name.clone(),
            candidates,
            selected: 0,
        };
    }

    /// Keep an open dialog in step with a new snapshot: the picker follows
    /// peers coming and going (keeping the chosen peer), and closes with a
    /// message if nothing is left to pick or the VM is gone.
    fn refresh_dialog(&mut self) {
        let Some(status) = &self.status else { return };
        let vm_present = |vm: &str| status.vms.iter().any(|v| v.name == vm);
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => {}
            Mode::PickPeer {
                vm,
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
                    candidates: new,
                    selected,
                };
            }
            Mode::Confirm { vm, peer } => {
                if !vm_present(&vm) {
                    return self.say_error(format!("{vm} is no longer on this peer"));
                }
                self.mode = Mode::Confirm { vm, peer };
            }
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

/// One row of the peers table: this peer first, then the others.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRow {
    pub peer_id: String,
    pub name: String,
    pub is_local: bool,
    pub connected: bool,
    pub latency_ms: Option<f64>,
    pub vm_count: Option<usize>,
}

/// The peers table's rows: this peer first, then connected peers, then the
/// rest, each group by name.
pub fn peer_rows(status: &Status) -> Vec<PeerRow> {
    let local = &status.local;
    let mut rows = vec![PeerRow {
        peer_id: local.peer_id.clone(),
        name: if local.nick.is_empty() {
            crate::model::short_peer_id(&local.peer_id)
        } else {
            local.nick.clone()
        },
        is_local: true,
        connected: true,
        latency_ms: None,
        vm_count: Some(status.vms.len()),
    }];
    let mut others: Vec<&PeerView> = status
        .peers
        .iter()
        .filter(|p| p.peer_id != local.peer_id)
        .collect();
    others.sort_by_cached_key(|p| (!p.connected, p.display_name()));
    rows.extend(others.into_iter().map(|p| PeerRow {
        peer_id: p.peer_id.clone(),
        name: p.display_name(),
        is_local: false,
        connected: p.connected,
        latency_ms: p.latency_ms,
        vm_count: p.vms.as_ref().map(Vec::len),
    }));
    rows
}

/// Connected peers other than this one, in table order.
fn candidates(status: &Status) -> Vec<Candidate> {
    peer_rows(status)
        .into_iter()
        .filter(|r| !r.is_local && r.connected)
        .map(|r| Candidate {
            peer_id: r.peer_id,
            name: r.name,
            latency_ms: r.latency_ms,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::testutil::{app_with, sample_status};

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

    #[test]
    fn m_down_enter_y_migrates_to_the_second_connected_peer() {
        let mut app = app_with(Some(sample_status()));
        // web-1 is selected by default; connected peers other than us: peer-b, peer-c.
        assert!(press(&mut app, &[key('m')]).is_empty());
        assert!(
            matches!(&app.mode, Mode::PickPeer { vm, candidates, selected: 0 }
            if vm == "web-1" && candidates.iter().map(|c| c.name.as_str()).collect::<Vec<_>>() == ["peer-b", "peer-c"])
        );
        assert!(press(&mut app, &[code(KeyCode::Down), code(KeyCode::Enter)]).is_empty());
        assert!(
            matches!(&app.mode, Mode::Confirm { vm, peer } if vm == "web-1" && peer.name == "peer-c")
        );
        let cmds = press(&mut app, &[key('y')]);
        assert_eq!(
            cmds,
            vec![UiCommand::Migrate {
                vm: "web-1".into(),
                to_peer_id: "12D3KooWPeerCccccccccccccccccccccccccccccccccccccc".into()
            }]
        );
        assert_eq!(app.mode, Mode::Normal);
        assert_eq!(
            app.message.as_ref().unwrap().text,
            "Migration of web-1 to peer-c requested"
        );
        // Nothing more comes out of further keys.
        assert!(press(&mut app, &[key('y'), code(KeyCode::Enter)]).is_empty());
    }

    #[test]
    fn esc_cancels_at_every_step() {
        let mut app = app_with(Some(sample_status()));
        assert!(press(&mut app, &[key('m'), code(KeyCode::Esc)]).is_empty());
        assert_eq!(app.mode, Mode::Normal);
        assert!(
            press(
                &mut app,
                &[key('m'), code(KeyCode::Enter), code(KeyCode::Esc)]
            )
            .is_empty()
        );
        assert_eq!(app.mode, Mode::Normal);
        assert!(
            press(
                &mut app,
                &[key('m'), code(KeyCode::Enter), key('n'), key('y')]
            )
            .is_empty()
        );
        assert_eq!(app.mode, Mode::Normal);
        assert!(!app.should_quit);
    }

    #[test]
    fn j_k_move_the_vm_selection_and_m_refuses_a_stopped_vm() {
        let mut app = app_with(Some(sample_status()));
        press(&mut app, &[key('j')]);
        assert_eq!(app.vms.selected_name(), Some("db-1"));
        press(&mut app, &[key('j')]); // clamps at the end
        assert_eq!(app.vms.selected_name(), Some("db-1"));
        press(&mut app, &[key('m')]);
        assert_eq!(app.mode, Mode::Normal);
        let msg = app.message.as_ref().expect("a message");
        assert!(msg.text.contains("db-1 is stopped"), "{}", msg.text);
        press(&mut app, &[key('k')]);
        assert_eq!(app.vms.selected_name(), Some("web-1"));
    }

    #[test]
    fn m_without_another_connected_peer_says_so() {
        let mut status = sample_status();
        for p in &mut status.peers {
            p.connected = false;
        }
        let mut app = app_with(Some(status));
        assert!(press(&mut app, &[key('m')]).is_empty());
        assert_eq!(app.mode, Mode::Normal);
        assert_eq!(
            app.message.as_ref().map(|m| m.text.as_str()),
            Some("No other connected peer to migrate to")
        );
    }

    #[test]
    fn m_without_vms_or_snapshot_says_so() {
        let mut app = app_with(None);
        press(&mut app, &[key('m')]);
        assert!(app.message.as_ref().unwrap().text.contains("Not connected"));
        let mut status = sample_status();
        status.vms.clear();
        let mut app = app_with(Some(status));
        press(&mut app, &[key('m')]);
        assert_eq!(app.mode, Mode::Normal);
        assert_eq!(app.message.as_ref().unwrap().text, "No VM selected");
    }

    #[test]
    fn selection_follows_the_vm_across_snapshots() {
        let mut app = app_with(Some(sample_status()));
        press(&mut app, &[key('j')]);
        let mut status = sample_status();
        status.vms.reverse();
        app.set_status(Some(status));
        assert_eq!(app.vms.selected_name(), Some("db-1"));
    }

    #[test]
    fn picker_closes_when_the_last_peer_leaves() {
        let mut app = app_with(Some(sample_status()));
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
        assert!(app.message.is_some());
    }

    #[test]
    fn tab_cycles_focus_help_toggles_q_and_ctrl_c_quit() {
        let mut app = app_with(Some(sample_status()));
        assert_eq!(app.focus, Focus::Vms);
        press(&mut app, &[code(KeyCode::Tab)]);
        assert_eq!(app.focus, Focus::Peers);
        press(&mut app, &[key('j')]);
        assert_eq!(
            app.peers.selected_id(),
            Some("12D3KooWPeerBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
        );
        press(
            &mut app,
            &[KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT)],
        );
        assert_eq!(app.focus, Focus::Vms);
        press(&mut app, &[key('?')]);
        assert!(app.show_help);
        press(&mut app, &[key('m')]); // ignored under help
        assert_eq!(app.mode, Mode::Normal);
        press(&mut app, &[code(KeyCode::Esc)]);
        assert!(!app.show_help);
        press(&mut app, &[key('q')]);
        assert!(app.should_quit);
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
