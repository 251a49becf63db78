//! Themes: TOML files of named styles, applied over a colourless base.
//!
//! ```toml
//! [styles]
//! border_focused = { fg = "cyan", bold = true }
//! selected = { bg = "236" }
//! ```
//!
//! Colours are ratatui colour names (`red`, `light_blue`, `dark_gray`), a
//! 256-colour index (`"238"`) or `#rrggbb`. A theme never fills the terminal
//! background: only short spans (the selected row, say) may set `bg`.

use std::collections::BTreeMap;
use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

pub const DEFAULT_THEME: &str = include_str!("../../themes/default.toml");
pub const SIXTEEN_COLOR_THEME: &str = include_str!("../../themes/16color.toml");

/// Resolved styles for everything the console paints.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub header: Style,
    pub header_dim: Style,
    pub border: Style,
    pub border_focused: Style,
    pub title: Style,
    pub title_focused: Style,
    pub table_header: Style,
    pub selected: Style,
    pub local_peer: Style,
    pub dim: Style,
    pub vm_running: Style,
    pub vm_paused: Style,
    pub vm_stopped: Style,
    pub vm_crashed: Style,
    pub vm_other: Style,
    pub connected: Style,
    pub disconnected: Style,
    pub op_active: Style,
    pub op_done: Style,
    pub op_failed: Style,
    pub message: Style,
    pub prompt: Style,
    pub key: Style,
    pub key_label: Style,
    pub dialog_border: Style,
    pub log_error: Style,
    pub log_warn: Style,
    pub log_info: Style,
    pub log_debug: Style,
    pub log_trace: Style,
}

/// The style names a theme file may set, with the field each one sets.
macro_rules! slots {
    ($($name:ident),* $(,)?) => {
        const SLOT_NAMES: &[&str] = &[$(stringify!($name)),*];
        impl Theme {
            fn slot(&mut self, name: &str) -> Option<&mut Style> {
                match name {
                    $(stringify!($name) => Some(&mut self.$name),)*
                    _ => None,
                }
            }
        }
    };
}
slots!(
    header,
    header_dim,
    border,
    border_focused,
    title,
    title_focused,
    table_header,
    selected,
    local_peer,
    dim,
    vm_running,
    vm_paused,
    vm_stopped,
    vm_crashed,
    vm_other,
    connected,
    disconnected,
    op_active,
    op_done,
    op_failed,
    message,
    prompt,
    key,
    key_label,
    dialog_border,
    log_error,
    log_warn,
    log_info,
    log_debug,
    log_trace,
);

impl Theme {
    /// No colours at all: emphasis by bold, dim and reverse only. Used for
    /// `NO_COLOR`, and the base every theme file patches.
    pub fn monochrome() -> Theme {
        let plain = Style::new();
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let dim = Style::new().add_modifier(Modifier::DIM);
        let reversed = Style::new().add_modifier(Modifier::REVERSED);
        Theme {
            header: bold,
            header_dim: plain,
            border: plain,
            border_focused: bold,
            title: plain,
            title_focused: bold,
            table_header: Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            selected: reversed,
            local_peer: bold,
            dim,
            vm_running: plain,
            vm_paused: Style::new().add_modifier(Modifier::ITALIC),
            vm_stopped: dim,
            vm_crashed: bold,
            vm_other: plain,
            connected: plain,
            disconnected: dim,
            op_active: bold,
            op_done: plain,
            op_failed: bold,
            message: bold,
            prompt: reversed,
            key: bold,
            key_label: plain,
            dialog_border: bold,
            log_error: bold,
            log_warn: plain,
            log_info: plain,
            log_debug: dim,
            log_trace: dim,
        }
    }

    /// Parse a theme file; `path` only names it in errors.
    pub fn load(path: &str, text: &str) -> Result<Theme, ThemeError> {
        let file: ThemeFile = toml::from_str(text).map_err(|e| ThemeError::Toml {
            path: path.to_string(),
            source: Box::new(e),
        })?;
        let mut theme = Theme::monochrome();
        for (name, spec) in file.styles {
            let line = line_of(text, spec.span().start);
            let spec = spec.into_inner();
            let style = spec
                .to_style()
                .map_err(|(field, value)| ThemeError::BadColor {
                    path: path.to_string(),
                    line,
                    name: name.clone(),
                    field,
                    value,
                })?;
            let slot = theme.slot(&name).ok_or_else(|| ThemeError::UnknownStyle {
                path: path.to_string(),
                line,
                name: name.clone(),
                known: SLOT_NAMES.join(", "),
            })?;
            *slot = style;
        }
        Ok(theme)
    }

    /// A theme compiled into the binary, by name: `default` or `16color`.
    pub fn builtin(name: &str) -> Result<Theme, ThemeError> {
        match name {
            "default" => Theme::load("themes/default.toml", DEFAULT_THEME),
            "16color" => Theme::load("themes/16color.toml", SIXTEEN_COLOR_THEME),
            "none" | "mono" | "monochrome" => Ok(Theme::monochrome()),
            other => Err(ThemeError::UnknownTheme(other.to_string())),
        }
    }

    /// Pick a theme for the terminal we run in: `NO_COLOR` (non-empty) gives
    /// monochrome; `PEERVISOR_THEME` names a built-in theme; otherwise the
    /// 256-colour default where the terminal says it has 256 colours or more,
    /// and the 16-colour theme elsewhere.
    pub fn detect() -> Result<Theme, ThemeError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Theme::builtin(&choose_theme(
            var("NO_COLOR").is_some(),
            var("PEERVISOR_THEME").as_deref(),
            var("TERM").as_deref(),
            var("COLORTERM").as_deref(),
        ))
    }

    /// Style for a VM state.
    pub fn vm_state(&self, state: crate::model::VmState) -> Style {
        use crate::model::VmState;
        match state {
            VmState::Running => self.vm_running,
            VmState::Paused => self.vm_paused,
            VmState::Stopped => self.vm_stopped,
            VmState::Crashed => self.vm_crashed,
            VmState::Other => self.vm_other,
        }
    }
}

fn choose_theme(
    no_color: bool,
    requested: Option<&str>,
    term: Option<&str>,
    colorterm: Option<&str>,
) -> String {
    if no_color {
        return "monochrome".into();
    }
    if let Some(name) = requested {
        return name.to_string();
    }
    let rich = matches!(colorterm, Some("truecolor" | "24bit"))
        || term.is_some_and(|t| t.contains("256color") || t.contains("direct"));
    if rich {
        "default".into()
    } else {
        "16color".into()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ThemeError {
    #[error("{path}: {source}")]
    Toml {
        path: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{path}:{line}: unknown style `{name}` (known styles: {known})")]
    UnknownStyle {
        path: String,
        line: usize,
        name: String,
        known: String,
    },
    #[error("{path}:{line}: style `{name}`: bad colour {field} = `{value}`")]
    BadColor {
        path: String,
        line: usize,
        name: String,
        field: &'static str,
        value: String,
    },
    #[error("unknown theme `{0}` (built-in themes: default, 16color, monochrome)")]
    UnknownTheme(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    #[serde(default)]
    styles: BTreeMap<String, toml::Spanned<StyleSpec>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StyleSpec {
    fg: Option<String>,
    bg: Option<String>,
    #[serde(default)]
    bold: bool,
    #[serde(default)]
    dim: bool,
    #[serde(default)]
    italic: bool,
    #[serde(default)]
    underlined: bool,
    #[serde(default)]
    reversed: bool,
}

impl StyleSpec {
    fn to_style(&self) -> Result<Style, (&'static str, String)> {
        let color = |field: &'static str,
                     v: &Option<String>|
         -> Result<Option<Color>, (&'static str, String)> {
            v.as_deref()
                .map(|s| Color::from_str(s).map_err(|_| (field, s.to_string())))
                .transpose()
        };
        let mut style = Style::new();
        if let Some(fg) = color("fg", &self.fg)? {
            style = style.fg(fg);
        }
        if let Some(bg) = color("bg", &self.bg)? {
            style = style.bg(bg);
        }
        for (on, m) in [
            (self.bold, Modifier::BOLD),
            (self.dim, Modifier::DIM),
            (self.italic, Modifier::ITALIC),
            (self.underlined, Modifier::UNDERLINED),
            (self.reversed, Modifier::REVERSED),
        ] {
            if on {
                style = style.add_modifier(m);
            }
        }
        Ok(style)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |s| s.matches('\n').count()) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn colors(theme: &Theme) -> Vec<Color> {
        let mut t = theme.clone();
        SLOT_NAMES
            .iter()
            .flat_map(|n| {
                let s = *t.slot(n).unwrap();
                [s.fg, s.bg]
            })
            .flatten()
            .collect()
    }

    #[test]
    fn builtin_themes_parse_and_set_every_style() {
        for name in ["default", "16color"] {
            let text = if name == "default" {
                DEFAULT_THEME
            } else {
                SIXTEEN_COLOR_THEME
            };
            let file: ThemeFile = toml::from_str(text).unwrap();
            for slot in SLOT_NAMES {
                assert!(
                    file.styles.contains_key(*slot),
                    "{name} theme lacks `{slot}`"
                );
            }
            Theme::builtin(name).unwrap();
        }
    }

    #[test]
    fn sixteen_color_theme_uses_only_named_colors() {
        let theme = Theme::builtin("16color").unwrap();
        for c in colors(&theme) {
            assert!(
                !matches!(c, Color::Rgb(..) | Color::Indexed(_)),
                "{c:?} is not one of the 16 named colours"
            );
        }
    }

    #[test]
    fn monochrome_has_no_colors_but_keeps_emphasis() {
        let theme = Theme::monochrome();
        assert!(colors(&theme).is_empty());
        assert!(theme.selected.add_modifier.contains(Modifier::REVERSED));
        assert_ne!(theme.border_focused, theme.border);
    }

    #[test]
    fn theme_never_fills_background_of_panes() {
        for name in ["default", "16color"] {
            let theme = Theme::builtin(name).unwrap();
            for s in [
                theme.border,
                theme.title,
                theme.header,
                theme.dim,
                theme.log_info,
            ] {
                assert_eq!(s.bg, None, "{name}");
            }
        }
    }

    #[test]
    fn theme_selection_honours_no_color_and_terminal() {
        assert_eq!(
            choose_theme(true, Some("default"), Some("xterm-256color"), None),
            "monochrome"
        );
        assert_eq!(
            choose_theme(false, Some("16color"), Some("xterm-256color"), None),
            "16color"
        );
        assert_eq!(
            choose_theme(false, None, Some("xterm-256color"), None),
            "default"
        );
        assert_eq!(
            choose_theme(false, None, Some("xterm"), Some("truecolor")),
            "default"
        );
        assert_eq!(choose_theme(false, None, Some("linux"), None), "16color");
        assert_eq!(choose_theme(false, None, None, None), "16color");
    }

    #[test]
    fn bad_theme_entries_are_named() {
        let err = Theme::load(
            "t.toml",
            "[styles]\nborder = { fg = \"cyan\" }\nselected = { bg = \"chartreuse-ish\" }\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("t.toml:3")
                && msg.contains("`selected`")
                && msg.contains("chartreuse-ish"),
            "{msg}"
        );
        let err = Theme::load("t.toml", "[styles]\nborderz = { fg = \"cyan\" }\n").unwrap_err();
        assert!(err.to_string().contains("`borderz`"), "{err}");
        assert!(Theme::builtin("solarized").is_err());
    }
}
