//! Themes: TOML files of named styles, applied over a colourless base.
//!
//! ```toml
//! [styles]
//! border_focused = { fg = "cyan", bold = true }
//! selected = { bg = "236" }
//! ```
//!
//! Colours are ratatui colour names (`red`, `light_blue`, `dark_gray`), a
//! 256-colour index (`"238"`) or `#rrggbb`. `inherits = "NAME"` starts from
//! another theme instead of plain text. The terminal's own background shows
//! unless the theme sets the `background` style (then the whole screen is
//! filled with it); otherwise only short spans (the selected row) set `bg`.
//!
//! Built-in themes: default (dark), light, 16color, monochrome. User themes live
//! in the config dir (`~/.config/peervisor/themes/NAME.toml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

pub const DEFAULT_THEME: &str = include_str!("../../themes/default.toml");
pub const SIXTEEN_COLOR_THEME: &str = include_str!("../../themes/16color.toml");
pub const LIGHT_THEME: &str = include_str!("../../themes/light.toml");
pub const MONOCHROME_THEME: &str = include_str!("../../themes/monochrome.toml");

/// Built-in themes: name, file (for errors), text.
pub const BUILTIN: [(&str, &str, &str); 4] = [
    ("default", "themes/default.toml", DEFAULT_THEME),
    ("light", "themes/light.toml", LIGHT_THEME),
    ("16color", "themes/16color.toml", SIXTEEN_COLOR_THEME),
    ("monochrome", "themes/monochrome.toml", MONOCHROME_THEME),
];

/// Resolved styles for everything the console paints.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    /// The name it was loaded under (shown by `:theme`).
    pub name: String,
    pub background: Style,
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
    pub tab: Style,
    pub tab_active: Style,
    pub filter: Style,
    pub topo_node: Style,
    pub topo_edge: Style,
    pub topo_edge_active: Style,
    pub chart_cpu: Style,
    pub chart_disk_read: Style,
    pub chart_disk_write: Style,
    pub chart_net_rx: Style,
    pub chart_net_tx: Style,
    pub gauge: Style,
}

/// The style names a theme file may set, with the field each one sets.
macro_rules! slots {
    ($($name:ident),* $(,)?) => {
        #[cfg_attr(not(test), allow(dead_code))]
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
    background,
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
    tab,
    tab_active,
    filter,
    topo_node,
    topo_edge,
    topo_edge_active,
    chart_cpu,
    chart_disk_read,
    chart_disk_write,
    chart_net_rx,
    chart_net_tx,
    gauge,
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
            name: "monochrome".into(),
            background: plain,
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
            tab: plain,
            tab_active: reversed,
            filter: Style::new().add_modifier(Modifier::UNDERLINED),
            topo_node: plain,
            topo_edge: plain,
            topo_edge_active: bold,
            chart_cpu: plain,
            chart_disk_read: plain,
            chart_disk_write: dim,
            chart_net_rx: bold,
            chart_net_tx: dim,
            gauge: plain,
        }
    }

    /// Parse a theme file; `path` only names it in errors. `user_dir` is where
    /// `inherits` looks for user themes (built-ins are always found).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn load(path: &str, text: &str, user_dir: Option<&Path>) -> Result<Theme, ThemeError> {
        Theme::load_depth(path, text, user_dir, 0)
    }

    fn load_depth(
        path: &str,
        text: &str,
        user_dir: Option<&Path>,
        depth: usize,
    ) -> Result<Theme, ThemeError> {
        let file: ThemeFile = toml::from_str(text).map_err(|e| ThemeError::Toml {
            path: path.to_string(),
            source: Box::new(e),
        })?;
        let mut theme = match &file.inherits {
            None => Theme::monochrome(),
            Some(parent) if depth < 4 => Theme::find_depth(parent.get_ref(), user_dir, depth + 1)
                .map_err(|e| ThemeError::Inherits {
                path: path.to_string(),
                line: line_of(text, parent.span().start),
                source: Box::new(e),
            })?,
            Some(parent) => {
                return Err(ThemeError::Inherits {
                    path: path.to_string(),
                    line: line_of(text, parent.span().start),
                    source: Box::new(ThemeError::UnknownTheme(format!(
                        "{} (inherits nested too deep)",
                        parent.get_ref()
                    ))),
                });
            }
        };
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
            })?;
            *slot = style;
        }
        Ok(theme)
    }

    /// A theme compiled into the binary, by name.
    pub fn builtin(name: &str) -> Result<Theme, ThemeError> {
        Theme::find(name, None)
    }

    /// A theme by name: a user theme (`user_dir/NAME.toml`) first, else a
    /// built-in one (`dark` and `mono` are aliases).
    pub fn find(name: &str, user_dir: Option<&Path>) -> Result<Theme, ThemeError> {
        Theme::find_depth(name, user_dir, 0)
    }

    fn find_depth(name: &str, user_dir: Option<&Path>, depth: usize) -> Result<Theme, ThemeError> {
        let name = match name {
            "dark" => "default",
            "mono" | "none" => "monochrome",
            other => other,
        };
        if let Some(file) = user_dir.map(|d| d.join(format!("{name}.toml")))
            && file.is_file()
        {
            let shown = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|source| ThemeError::Io {
                path: shown.clone(),
                source,
            })?;
            let mut theme = Theme::load_depth(&shown, &text, user_dir, depth)?;
            theme.name = name.to_string();
            return Ok(theme);
        }
        let (_, path, text) = BUILTIN
            .iter()
            .find(|(n, _, _)| *n == name)
            .ok_or_else(|| ThemeError::UnknownTheme(name.to_string()))?;
        let mut theme = Theme::load_depth(path, text, user_dir, depth)?;
        theme.name = name.to_string();
        Ok(theme)
    }

    /// Names `:theme` offers: built-ins and the user's theme files.
    pub fn available(user_dir: Option<&Path>) -> Vec<String> {
        let mut names: Vec<String> = BUILTIN.iter().map(|(n, _, _)| n.to_string()).collect();
        if let Some(Ok(entries)) = user_dir.map(std::fs::read_dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "toml")
                    && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
                    && !names.iter().any(|n| n == stem)
                {
                    names.push(stem.to_string());
                }
            }
        }
        names
    }

    /// Pick the theme for this terminal: `NO_COLOR` (non-empty) gives
    /// monochrome; else `requested` (`--theme` or `PEERVISOR_THEME`); else the
    /// dark default where the terminal has 256 colours or more, and the
    /// 16-colour theme elsewhere. A theme that cannot be loaded gives the
    /// automatic choice and the error, for the status line.
    pub fn detect(requested: Option<&str>, user_dir: Option<&Path>) -> (Theme, Option<String>) {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let env_request = var("PEERVISOR_THEME");
        let requested = requested.or(env_request.as_deref());
        let no_color = var("NO_COLOR").is_some();
        let term = var("TERM");
        let colorterm = var("COLORTERM");
        let name = choose_theme(no_color, requested, term.as_deref(), colorterm.as_deref());
        match Theme::find(&name, user_dir) {
            Ok(theme) => (theme, None),
            Err(e) => {
                let auto = choose_theme(no_color, None, term.as_deref(), colorterm.as_deref());
                let theme = Theme::builtin(&auto).unwrap_or_else(|_| Theme::monochrome());
                (theme, Some(format!("{e}; using the {auto} theme")))
            }
        }
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

/// Where user themes live.
pub fn user_theme_dir(config_dir: &Path) -> PathBuf {
    config_dir.join("themes")
}

#[derive(Debug, thiserror::Error)]
pub enum ThemeError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: inherits: {source}")]
    Inherits {
        path: String,
        line: usize,
        #[source]
        source: Box<ThemeError>,
    },
    #[error("{path}: {source}")]
    Toml {
        path: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{path}:{line}: unknown style `{name}` (themes/default.toml lists them)")]
    UnknownStyle {
        path: String,
        line: usize,
        name: String,
    },
    #[error("{path}:{line}: style `{name}`: bad colour {field} = `{value}`")]
    BadColor {
        path: String,
        line: usize,
        name: String,
        field: &'static str,
        value: String,
    },
    #[error("unknown theme `{0}` (built-in themes: default, light, 16color, monochrome)")]
    UnknownTheme(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    #[serde(default)]
    inherits: Option<toml::Spanned<String>>,
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
        for (name, _, text) in BUILTIN {
            let file: ThemeFile = toml::from_str(text).unwrap();
            for slot in SLOT_NAMES {
                // `background` is optional: unset keeps the terminal's own.
                assert!(
                    *slot == "background" || file.styles.contains_key(*slot),
                    "{name} theme lacks `{slot}`"
                );
            }
            assert_eq!(Theme::builtin(name).unwrap().name, name);
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
        for (name, _, _) in BUILTIN {
            let theme = Theme::builtin(name).unwrap();
            assert_eq!(theme.background, Style::new(), "{name}");
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
            None,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("t.toml:3")
                && msg.contains("`selected`")
                && msg.contains("chartreuse-ish"),
            "{msg}"
        );
        let err =
            Theme::load("t.toml", "[styles]\nborderz = { fg = \"cyan\" }\n", None).unwrap_err();
        assert!(err.to_string().contains("`borderz`"), "{err}");
        assert!(Theme::builtin("solarized").is_err());
        // A misspelt field inside a style names the file, line and field.
        let err = Theme::load("t.toml", "[styles]\n\nborder = { fgg = \"cyan\" }\n", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("t.toml") && err.contains("line 3") && err.contains("fgg"),
            "{err}"
        );
    }

    #[test]
    fn user_themes_inherit_and_override_builtins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mine.toml"),
            "inherits = \"light\"\n[styles]\nbackground = { bg = \"#101010\" }\n",
        )
        .unwrap();
        let mine = Theme::find("mine", Some(dir.path())).unwrap();
        let light = Theme::builtin("light").unwrap();
        assert_eq!(mine.header, light.header);
        assert_eq!(mine.background.bg, Some(Color::Rgb(16, 16, 16)));
        assert!(Theme::available(Some(dir.path())).contains(&"mine".to_string()));
        std::fs::write(dir.path().join("bad.toml"), "inherits = \"nope\"\n").unwrap();
        let err = Theme::find("bad", Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.toml:1") && err.contains("nope"), "{err}");
    }

    #[test]
    fn detect_falls_back_with_a_message_on_a_broken_theme() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("broken.toml"),
            "[styles]\nheader = { fg = 7 }\n",
        )
        .unwrap();
        let (theme, error) = Theme::detect(Some("broken"), Some(dir.path()));
        let error = error.expect("an error");
        assert!(
            error.contains("broken.toml") && error.contains("line 2"),
            "{error}"
        );
        assert_ne!(theme.name, "broken");
    }

    mod fuzz {
        use super::*;
        use crate::fuzzing::{CASES, config, names, text_like};
        use proptest::prelude::*;

        fn valid() -> Vec<String> {
            let shipped = ["default", "light", "16color", "monochrome"]
                .iter()
                .map(|n| std::fs::read_to_string(format!("themes/{n}.toml")).unwrap());
            shipped
                .chain(["inherits = \"light\"\n[styles.title]\nfg = \"#ff8800\"\nmodifiers = [\"bold\"]\n".to_string()])
                .collect()
        }

        proptest! {
            #![proptest_config(config(CASES / 4))]
            /// Theme files; errors name the file.
            #[test]
            fn fuzz_theme_file(text in text_like(valid())) {
                const PATH: &str = "/home/op/.config/peervisor/themes/mine.toml";
                if let Err(e) = Theme::load(PATH, &text, None) {
                    prop_assert!(names(&e.to_string(), PATH), "{e}");
                }
            }
        }
    }
}
