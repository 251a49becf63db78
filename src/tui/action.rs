//! The one vocabulary between keys, the keymap file and the reducer.

use std::fmt;

/// Something the operator asked the console to do. Keymaps bind keys to these;
/// the reducer interprets them according to the current mode and pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Quit,
    Help,
    Command,
    Filter,
    FocusNext,
    FocusPrev,
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Migrate,
    Replicate,
    Consume,
    StartStop,
    PauseResume,
    Delete,
    SerialConsole,
    BootLog,
    Sort,
    ToggleOverlay,
    ToggleJobs,
    Zoom,
    LogMore,
    LogLess,
    LogTargets,
    Confirm,
    Cancel,
}

/// Groups in the help overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Operate,
    Navigate,
    View,
    Console,
}

impl Group {
    pub fn title(self) -> &'static str {
        match self {
            Group::Operate => "Operate",
            Group::Navigate => "Navigate",
            Group::View => "View",
            Group::Console => "Console",
        }
    }
}

impl Action {
    /// Every action, in the order help lists them.
    pub const ALL: [Action; 31] = [
        Action::Migrate,
        Action::Replicate,
        Action::Consume,
        Action::StartStop,
        Action::PauseResume,
        Action::Delete,
        Action::SerialConsole,
        Action::BootLog,
        Action::Up,
        Action::Down,
        Action::Left,
        Action::Right,
        Action::PageUp,
        Action::PageDown,
        Action::Top,
        Action::Bottom,
        Action::FocusNext,
        Action::FocusPrev,
        Action::Filter,
        Action::Sort,
        Action::ToggleOverlay,
        Action::ToggleJobs,
        Action::Zoom,
        Action::LogMore,
        Action::LogLess,
        Action::LogTargets,
        Action::Command,
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
            Action::Command => "command",
            Action::Filter => "filter",
            Action::FocusNext => "focus_next",
            Action::FocusPrev => "focus_prev",
            Action::Up => "up",
            Action::Down => "down",
            Action::Left => "left",
            Action::Right => "right",
            Action::PageUp => "page_up",
            Action::PageDown => "page_down",
            Action::Top => "top",
            Action::Bottom => "bottom",
            Action::Migrate => "migrate",
            Action::Replicate => "replicate",
            Action::Consume => "consume",
            Action::StartStop => "start_stop",
            Action::PauseResume => "pause_resume",
            Action::Delete => "delete",
            Action::SerialConsole => "serial_console",
            Action::BootLog => "boot_log",
            Action::Sort => "sort",
            Action::ToggleOverlay => "toggle_overlay",
            Action::ToggleJobs => "toggle_jobs",
            Action::Zoom => "zoom",
            Action::LogMore => "log_more",
            Action::LogLess => "log_less",
            Action::LogTargets => "log_targets",
            Action::Confirm => "confirm",
            Action::Cancel => "cancel",
        }
    }

    /// One line for the help overlay.
    pub fn description(self) -> &'static str {
        match self {
            Action::Quit => "quit the console",
            Action::Help => "show or hide this help",
            Action::Command => "command line (Tab completes)",
            Action::Filter => "filter the focused list (Esc clears)",
            Action::FocusNext => "focus the next pane",
            Action::FocusPrev => "focus the previous pane",
            Action::Up => "previous row / log target",
            Action::Down => "next row / log target",
            Action::Left => "log: lower the target's level",
            Action::Right => "log: raise the target's level",
            Action::PageUp => "page up",
            Action::PageDown => "page down",
            Action::Top => "first row",
            Action::Bottom => "last row",
            Action::Migrate => "migrate the selected VM to another peer",
            Action::Replicate => "replicate the selected VM to another peer",
            Action::Consume => "consume the selected service locally",
            Action::StartStop => "start or stop the selected VM",
            Action::PauseResume => "pause or resume the selected VM",
            Action::Delete => "delete VM, abort migration (asks)",
            Action::SerialConsole => "serial console of the selected VM",
            Action::BootLog => "boot log of the selected VM",
            Action::Sort => "VMs: sort by the next column",
            Action::ToggleOverlay => "VMs: this peer or the overlay",
            Action::ToggleJobs => "Throughput: VM charts or jobs",
            Action::Zoom => "zoom the focused pane",
            Action::LogMore => "log: show more levels",
            Action::LogLess => "log: show fewer levels",
            Action::LogTargets => "log: show/hide the targets",
            Action::Confirm => "open / pick / confirm",
            Action::Cancel => "back / cancel / clear",
        }
    }

    pub fn group(self) -> Group {
        use Action::*;
        match self {
            Migrate | Replicate | Consume | StartStop | PauseResume | Delete | SerialConsole
            | BootLog => Group::Operate,
            Up | Down | Left | Right | PageUp | PageDown | Top | Bottom | FocusNext | FocusPrev => {
                Group::Navigate
            }
            Filter | Sort | ToggleOverlay | ToggleJobs | Zoom | LogMore | LogLess | LogTargets => {
                Group::View
            }
            Command | Confirm | Cancel | Help | Quit => Group::Console,
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
