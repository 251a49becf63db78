//! The one vocabulary between keys, the keymap file and the reducer.

use std::fmt;

/// Something the operator asked the console to do. Keymaps bind keys to these;
/// the reducer interprets them according to the current mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Quit,
    Help,
    FocusNext,
    FocusPrev,
    Up,
    Down,
    Migrate,
    Confirm,
    Cancel,
}

impl Action {
    /// Every action, in the order help lists them.
    pub const ALL: [Action; 9] = [
        Action::Migrate,
        Action::Up,
        Action::Down,
        Action::FocusNext,
        Action::FocusPrev,
        Action::Confirm,
        Action::Cancel,
        Action::Help,
        Action::Quit,
    ];

    /// The name used in keymap files.
    pub fn name(self) -> &'static str {
        match self {
            Action::Quit => "quit",
            Action::Help => "help",
            Action::FocusNext => "focus_next",
            Action::FocusPrev => "focus_prev",
            Action::Up => "up",
            Action::Down => "down",
            Action::Migrate => "migrate",
            Action::Confirm => "confirm",
            Action::Cancel => "cancel",
        }
    }

    /// One line for the help overlay.
    pub fn description(self) -> &'static str {
        match self {
            Action::Quit => "quit the console",
            Action::Help => "show or hide this help",
            Action::FocusNext => "focus the next pane",
            Action::FocusPrev => "focus the previous pane",
            Action::Up => "select the previous row",
            Action::Down => "select the next row",
            Action::Migrate => "migrate the selected VM to another peer",
            Action::Confirm => "pick / confirm in a dialog",
            Action::Cancel => "cancel a dialog",
        }
    }

    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
