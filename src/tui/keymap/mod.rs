//! Keymaps: TOML files binding action names to key lists.
//!
//! ```toml
//! [keys]
//! quit = ["q", "C-c"]
//! up = ["Up", "k"]
//! ```
//!
//! Key specs: a single character (`q`, `?`, `G`), a named key (`Enter`, `Esc`,
//! `Tab`, `BackTab`, `Up`, `Down`, `Left`, `Right`, `Home`, `End`, `PageUp`,
//! `PageDown`, `Backspace`, `Delete`, `Insert`, `Space`, `F1`..`F12`), each
//! optionally prefixed by modifiers `C-` (control), `A-` (alt), `S-` (shift).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ratatui::crossterm::event::KeyEvent;
use serde::Deserialize;

use super::action::Action;

mod key;

pub use key::KeyBinding;

/// The keymap compiled into the binary.
pub const DEFAULT_KEYMAP: &str = include_str!("../../../keymaps/default.toml");
pub const DEFAULT_KEYMAP_PATH: &str = "keymaps/default.toml";
pub const VIM_KEYMAP: &str = include_str!("../../../keymaps/vim.toml");
pub const VIM_KEYMAP_PATH: &str = "keymaps/vim.toml";

#[derive(Debug, thiserror::Error)]
pub enum KeymapError {
    #[error("{path}: {source}")]
    Toml {
        path: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{path}:{line}: unknown action `{action}` (`peervisor keys` lists them)")]
    UnknownAction {
        path: String,
        line: usize,
        action: String,
    },
    #[error("{path}:{line}: action `{action}`: bad key `{key}`: {reason}")]
    BadKey {
        path: String,
        line: usize,
        action: String,
        key: String,
        reason: String,
    },
    #[error("{path}:{line}: key `{key}` is bound to both `{first}` and `{second}`")]
    Conflict {
        path: String,
        line: usize,
        key: String,
        first: Action,
        second: Action,
    },
    #[error("{path}:{line}: base: unknown keymap `{name}` (shipped keymaps: default, vim)")]
    UnknownBase {
        path: String,
        line: usize,
        name: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeymapFile {
    /// A shipped keymap this file patches (user files only): "default" or "vim".
    #[serde(default)]
    base: Option<toml::Spanned<String>>,
    #[serde(default)]
    keys: BTreeMap<String, toml::Spanned<Vec<toml::Spanned<String>>>>,
}

/// One `action = [keys]` line of a keymap file, checked.
struct Entry {
    action: Action,
    keys: Vec<(KeyBinding, String, usize)>,
}

/// A keymap file, parsed and checked: its base (if any) and its entries in file order.
struct ParsedFile {
    base: Option<(String, usize)>,
    entries: Vec<Entry>,
}

fn parse_file(path: &str, text: &str) -> Result<ParsedFile, KeymapError> {
    let file: KeymapFile = toml::from_str(text).map_err(|e| KeymapError::Toml {
        path: path.to_string(),
        source: Box::new(e),
    })?;
    let base = file
        .base
        .map(|b| (line_of(text, b.span().start), b.into_inner()))
        .map(|(line, name)| (name, line));
    // File order, so that errors point at the first offending line.
    let mut raw: Vec<_> = file.keys.into_iter().collect();
    raw.sort_by_key(|(_, v)| v.span().start);
    let mut entries = Vec::new();
    let mut seen: HashMap<KeyBinding, Action> = HashMap::new();
    for (name, specs) in raw {
        let line = line_of(text, specs.span().start);
        let action = Action::from_name(&name).ok_or_else(|| KeymapError::UnknownAction {
            path: path.to_string(),
            line,
            action: name.clone(),
        })?;
        let mut keys = Vec::new();
        for spec in specs.into_inner() {
            let line = line_of(text, spec.span().start);
            let key = KeyBinding::parse(spec.get_ref()).map_err(|reason| KeymapError::BadKey {
                path: path.to_string(),
                line,
                action: name.clone(),
                key: spec.get_ref().clone(),
                reason,
            })?;
            if let Some(&first) = seen.get(&key)
                && first != action
            {
                return Err(KeymapError::Conflict {
                    path: path.to_string(),
                    line,
                    key: spec.into_inner(),
                    first,
                    second: action,
                });
            }
            seen.insert(key, action);
            keys.push((key, spec.into_inner(), line));
        }
        entries.push(Entry { action, keys });
    }
    Ok(ParsedFile { base, entries })
}

/// The shipped keymaps, by name.
pub fn builtin_text(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "default" => Some((DEFAULT_KEYMAP_PATH, DEFAULT_KEYMAP)),
        "vim" => Some((VIM_KEYMAP_PATH, VIM_KEYMAP)),
        _ => None,
    }
}

/// Key bindings in force: key -> action for dispatch, action -> keys for hints.
#[derive(Debug, Clone)]
pub struct Keymap {
    bindings: HashMap<KeyBinding, Action>,
    keys: BTreeMap<Action, Vec<KeyBinding>>,
}

impl Default for Keymap {
    /// The embedded default keymap. It is checked by a test, so it always parses.
    fn default() -> Self {
        Keymap::load(DEFAULT_KEYMAP_PATH, DEFAULT_KEYMAP).unwrap_or_else(|_| Keymap::empty())
    }
}

impl Keymap {
    fn empty() -> Self {
        Keymap {
            bindings: HashMap::new(),
            keys: BTreeMap::new(),
        }
    }

    /// A shipped keymap by name (`default`, `vim`).
    pub fn builtin(name: &str) -> Option<Keymap> {
        let (path, text) = builtin_text(name)?;
        Keymap::load(path, text).ok()
    }

    /// Parse a complete keymap file; `path` only names it in errors.
    pub fn load(path: &str, text: &str) -> Result<Keymap, KeymapError> {
        let parsed = parse_file(path, text)?;
        let mut map = Keymap::empty();
        map.apply(parsed.entries);
        Ok(map)
    }

    /// Apply a user file on top of the shipped keymaps: its `base` (default
    /// `default`) and then only the actions it names, whose keys it replaces. A
    /// key the file binds is taken away from any other action.
    pub fn load_user(path: &str, text: &str) -> Result<Keymap, KeymapError> {
        let parsed = parse_file(path, text)?;
        let mut map = match &parsed.base {
            None => Keymap::default(),
            Some((name, line)) => {
                Keymap::builtin(name).ok_or_else(|| KeymapError::UnknownBase {
                    path: path.to_string(),
                    line: *line,
                    name: name.clone(),
                })?
            }
        };
        map.apply(parsed.entries);
        Ok(map)
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            // The named action's old keys go; the new keys leave other actions.
            for old in self.keys.remove(&entry.action).unwrap_or_default() {
                self.bindings.remove(&old);
            }
            let mut keys: Vec<KeyBinding> = Vec::new();
            for (key, _, _) in entry.keys {
                if let Some(other) = self.bindings.insert(key, entry.action)
                    && other != entry.action
                    && let Some(list) = self.keys.get_mut(&other)
                {
                    list.retain(|k| *k != key);
                }
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            self.keys.insert(entry.action, keys);
        }
    }

    /// The action a key press triggers, if any.
    pub fn action_for(&self, key: KeyEvent) -> Option<Action> {
        self.bindings.get(&KeyBinding::from(key)).copied()
    }

    /// All keys bound to an action, in file order.
    pub fn keys(&self, action: Action) -> &[KeyBinding] {
        self.keys.get(&action).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The key to show in a hint: the first one bound.
    pub fn primary(&self, action: Action) -> Option<KeyBinding> {
        self.keys(action).first().copied()
    }

    /// The key to show in a one-letter prompt like `(y/n)`: the first plain
    /// character bound, else the first key.
    pub fn prompt_key(&self, action: Action) -> Option<KeyBinding> {
        let keys = self.keys(action);
        keys.iter()
            .find(|k| k.is_plain_char())
            .or(keys.first())
            .copied()
    }

    /// The effective map as a keymap file (what `peervisor keys` prints).
    pub fn to_toml(&self) -> String {
        let mut out = String::from("[keys]\n");
        let width = Action::ALL
            .iter()
            .map(|a| a.name().len())
            .max()
            .unwrap_or(0);
        for action in Action::ALL {
            let keys: Vec<String> = self
                .keys(action)
                .iter()
                .map(|k| format!("{:?}", k.spec()))
                .collect();
            out.push_str(&format!(
                "{:<width$} = [{}]  # {}\n",
                action.name(),
                keys.join(", "),
                action.description()
            ));
        }
        out
    }
}

/// The keymap the console uses and where it came from.
pub struct Effective {
    pub keymap: Keymap,
    /// Files applied, for `peervisor keys`.
    pub sources: Vec<String>,
    /// A file that could not be used (the console says so and uses the defaults).
    pub error: Option<String>,
}

/// The user's keymap file in the config dir.
pub fn user_keymap_path(config_dir: &Path) -> PathBuf {
    config_dir.join("keymap.toml")
}

/// The keymap in force: `requested` (a shipped name or a file) if given, else the
/// user's file in `config_dir` if it exists, else the default. A broken file
/// gives the default keymap and an error naming the file and line.
pub fn effective(requested: Option<&str>, config_dir: Option<&Path>) -> Effective {
    let fallback = |error: String| Effective {
        keymap: Keymap::default(),
        sources: vec![DEFAULT_KEYMAP_PATH.to_string()],
        error: Some(error),
    };
    let file: PathBuf = match requested {
        Some(name) => match builtin_text(name) {
            Some((path, _)) => {
                return Effective {
                    keymap: Keymap::builtin(name).unwrap_or_default(),
                    sources: vec![path.to_string()],
                    error: None,
                };
            }
            None => PathBuf::from(name),
        },
        None => match config_dir.map(user_keymap_path) {
            Some(p) if p.exists() => p,
            _ => {
                return Effective {
                    keymap: Keymap::default(),
                    sources: vec![DEFAULT_KEYMAP_PATH.to_string()],
                    error: None,
                };
            }
        },
    };
    let shown = file.display().to_string();
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(source) => {
            return fallback(
                KeymapError::Io {
                    path: shown,
                    source,
                }
                .to_string(),
            );
        }
    };
    match Keymap::load_user(&shown, &text) {
        Ok(keymap) => {
            let base = parse_file(&shown, &text)
                .ok()
                .and_then(|p| p.base)
                .map_or(DEFAULT_KEYMAP_PATH, |(n, _)| {
                    builtin_text(&n).map_or(DEFAULT_KEYMAP_PATH, |(p, _)| p)
                });
            Effective {
                keymap,
                sources: vec![base.to_string(), shown],
                error: None,
            }
        }
        Err(e) => fallback(e.to_string()),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |s| s.matches('\n').count()) + 1
}

#[cfg(test)]
mod tests {
    use ratatui::crossterm::event::{KeyCode, KeyModifiers};

    use super::*;

    fn press(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn default_keymap_parses_and_binds_every_action() {
        let km = Keymap::load(DEFAULT_KEYMAP_PATH, DEFAULT_KEYMAP).expect("default keymap parses");
        for action in Action::ALL {
            assert!(
                !km.keys(action).is_empty(),
                "{action} has no key in the default keymap"
            );
        }
        assert_eq!(
            km.action_for(press(KeyCode::Char('q'), KeyModifiers::NONE)),
            Some(Action::Quit)
        );
        assert_eq!(
            km.action_for(press(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(
            km.action_for(press(KeyCode::Char('j'), KeyModifiers::NONE)),
            Some(Action::Down)
        );
        assert_eq!(
            km.action_for(press(KeyCode::Down, KeyModifiers::NONE)),
            Some(Action::Down)
        );
        assert_eq!(
            km.action_for(press(KeyCode::Char('x'), KeyModifiers::NONE)),
            None
        );
        // A plain `c` is not Ctrl-C.
        assert_eq!(
            km.action_for(press(KeyCode::Char('c'), KeyModifiers::NONE)),
            Some(Action::Consume)
        );
    }

    #[test]
    fn printed_keymaps_load_back_unchanged() {
        for name in ["default", "vim"] {
            let km = Keymap::builtin(name).unwrap();
            let again = Keymap::load("printed", &km.to_toml()).expect("printed map parses");
            for action in Action::ALL {
                assert_eq!(km.keys(action), again.keys(action), "{name}: {action}");
            }
        }
    }

    #[test]
    fn vim_keymap_binds_every_action() {
        let km = Keymap::builtin("vim").expect("vim keymap parses");
        for action in Action::ALL {
            assert!(
                !km.keys(action).is_empty(),
                "{action} has no key in vim.toml"
            );
        }
        assert_eq!(
            km.action_for(press(KeyCode::Char('x'), KeyModifiers::NONE)),
            Some(Action::Delete)
        );
    }

    #[test]
    fn user_file_overrides_only_what_it_names() {
        let text = "base = \"vim\"\n[keys]\nmigrate = [\"M\", \"F2\"]\nquit = [\"x\"]\n";
        let km = Keymap::load_user("keymap.toml", text).unwrap();
        assert_eq!(km.keys(Action::Migrate).len(), 2);
        assert_eq!(
            km.action_for(press(KeyCode::Char('m'), KeyModifiers::NONE)),
            None
        );
        // `x` moved from delete (vim) to quit; delete keeps its other key.
        assert_eq!(
            km.action_for(press(KeyCode::Char('x'), KeyModifiers::NONE)),
            Some(Action::Quit)
        );
        assert_eq!(km.keys(Action::Delete).len(), 1);
        // Untouched actions keep the base's keys.
        assert_eq!(
            km.action_for(press(KeyCode::Char('u'), KeyModifiers::CONTROL)),
            Some(Action::PageUp)
        );
        let err = Keymap::load_user("k.toml", "base = \"emacs\"\n").unwrap_err();
        assert!(err.to_string().contains("k.toml:1") && err.to_string().contains("emacs"));
    }

    #[test]
    fn a_broken_user_file_gives_defaults_and_a_message_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            user_keymap_path(dir.path()),
            "[keys]\nquit = [\"q\"]\nteleport = [\"t\"]\n",
        )
        .unwrap();
        let e = effective(None, Some(dir.path()));
        let error = e.error.expect("an error");
        assert!(
            error.contains("keymap.toml:3") && error.contains("teleport"),
            "{error}"
        );
        assert_eq!(
            e.keymap
                .action_for(press(KeyCode::Char('m'), KeyModifiers::NONE)),
            Some(Action::Migrate)
        );
        std::fs::write(user_keymap_path(dir.path()), "[keys]\nhelp = [\"h\"]\n").unwrap();
        let e = effective(None, Some(dir.path()));
        assert!(e.error.is_none());
        assert_eq!(
            e.keymap
                .action_for(press(KeyCode::Char('h'), KeyModifiers::NONE)),
            Some(Action::Help)
        );
        // `h` left `left`; printing the map shows it.
        assert!(
            e.keymap.to_toml().contains("left           = [\"Left\"]"),
            "{}",
            e.keymap.to_toml()
        );
        assert!(e.sources.iter().any(|s| s.ends_with("keymap.toml")));
    }

    #[test]
    fn terminal_variants_of_a_key_match() {
        let km = Keymap::default();
        // Terminals report `?` with or without SHIFT, Shift-Tab as BackTab+SHIFT.
        assert_eq!(
            km.action_for(press(KeyCode::Char('?'), KeyModifiers::SHIFT)),
            Some(Action::Help)
        );
        assert_eq!(
            km.action_for(press(KeyCode::BackTab, KeyModifiers::SHIFT)),
            Some(Action::FocusPrev)
        );
        assert_eq!(
            km.action_for(press(KeyCode::Tab, KeyModifiers::SHIFT)),
            Some(Action::FocusPrev)
        );
        assert_eq!(
            km.action_for(press(KeyCode::Tab, KeyModifiers::NONE)),
            Some(Action::FocusNext)
        );
    }

    #[test]
    fn bad_key_spec_names_file_action_key_and_line() {
        let text = "[keys]\nquit = [\"q\"]\nmigrate = [\"m\", \"Ctrl+m\"]\n";
        let err = Keymap::load("my.toml", text).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, KeymapError::BadKey { line: 3, .. }),
            "{err:?}"
        );
        for part in ["my.toml:3", "`migrate`", "`Ctrl+m`"] {
            assert!(msg.contains(part), "{msg:?} lacks {part:?}");
        }
    }

    #[test]
    fn unknown_action_names_file_and_action() {
        let text = "[keys]\nquit = [\"q\"]\n\nteleport = [\"t\"]\n";
        let err = Keymap::load("user.toml", text).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, KeymapError::UnknownAction { line: 4, .. }),
            "{err:?}"
        );
        assert!(
            msg.contains("user.toml:4") && msg.contains("`teleport`"),
            "{msg}"
        );
    }

    #[test]
    fn conflicting_binding_and_bad_toml_are_errors() {
        let err = Keymap::load("k.toml", "[keys]\nquit = [\"q\"]\nhelp = [\"q\"]\n").unwrap_err();
        assert!(err.to_string().contains("bound to both"), "{err}");
        let err = Keymap::load("k.toml", "[keys]\nquit = \"q\"\n").unwrap_err();
        assert!(
            matches!(err, KeymapError::Toml { .. }) && err.to_string().starts_with("k.toml"),
            "{err}"
        );
        let err = Keymap::load("k.toml", "[kyes]\nquit = [\"q\"]\n").unwrap_err();
        assert!(err.to_string().contains("kyes"), "{err}");
    }

    mod fuzz {
        use super::*;
        use crate::fuzzing::{CASES, config, names, text_like};
        use proptest::prelude::*;

        fn valid() -> Vec<String> {
            vec![
                DEFAULT_KEYMAP.to_string(),
                VIM_KEYMAP.to_string(),
                "base = \"vim\"\n[keys]\nquit = [\"C-q\", \"A-x\"]\n".to_string(),
            ]
        }

        proptest! {
            #![proptest_config(config(CASES / 4))]
            /// Keymap files: shipped ones and the user's patch; errors name the file.
            #[test]
            fn fuzz_keymap_file(text in text_like(valid())) {
                const PATH: &str = "/home/op/.config/peervisor/keymap.toml";
                if let Err(e) = Keymap::load(PATH, &text) {
                    prop_assert!(names(&e.to_string(), PATH), "{e}");
                }
                if let Err(e) = Keymap::load_user(PATH, &text) {
                    prop_assert!(names(&e.to_string(), PATH), "{e}");
                }
            }

            /// One key spec (`C-x`, `A-Enter`, `F5`): from files and the command line.
            #[test]
            fn fuzz_key_spec(spec in text_like(vec!["C-x".into(), "A-Enter".into(), "F12".into(), "S-Tab".into()])) {
                if let Ok(binding) = KeyBinding::parse(&spec) {
                    let _ = binding.label();
                    prop_assert_eq!(KeyBinding::parse(&binding.spec()).ok(), Some(binding));
                }
            }
        }
    }
}
