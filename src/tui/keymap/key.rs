//! One key as keymap files write it (`q`, `C-c`, `S-Tab`, `Enter`) and as the
//! terminal reports it, normalised so both compare equal; and how hints show it.

use std::fmt;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// A key as the keymap sees it: a code and modifiers, normalised so that a key
/// written in a file and the event a terminal reports for it compare equal
/// (shift is folded into characters, Shift-Tab is always `BackTab`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyBinding {
    code: KeyCode,
    modifiers: KeyModifiers,
}

impl KeyBinding {
    pub fn new(code: KeyCode, modifiers: KeyModifiers) -> Self {
        let mut modifiers =
            modifiers & (KeyModifiers::CONTROL | KeyModifiers::ALT | KeyModifiers::SHIFT);
        let code = match code {
            KeyCode::Char(c) => {
                modifiers.remove(KeyModifiers::SHIFT);
                KeyCode::Char(c)
            }
            KeyCode::Tab if modifiers.contains(KeyModifiers::SHIFT) => {
                modifiers.remove(KeyModifiers::SHIFT);
                KeyCode::BackTab
            }
            KeyCode::BackTab => {
                modifiers.remove(KeyModifiers::SHIFT);
                KeyCode::BackTab
            }
            other => other,
        };
        KeyBinding { code, modifiers }
    }

    /// Parse a key spec such as `q`, `C-c`, `S-Tab`, `Enter`.
    pub fn parse(spec: &str) -> Result<KeyBinding, String> {
        if spec.is_empty() {
            return Err("empty key".into());
        }
        let mut modifiers = KeyModifiers::NONE;
        let mut rest = spec;
        // A prefix is a modifier only if something follows it: "C-" alone is odd
        // but "-" is the minus key.
        while rest.len() > 2 {
            let m = match rest.get(..2) {
                Some("C-") => KeyModifiers::CONTROL,
                Some("A-" | "M-") => KeyModifiers::ALT,
                Some("S-") => KeyModifiers::SHIFT,
                _ => break,
            };
            modifiers |= m;
            rest = &rest[2..];
        }
        let mut chars = rest.chars();
        let code = match (chars.next(), chars.next()) {
            (Some(c), None) => {
                if modifiers.contains(KeyModifiers::SHIFT) && c.is_ascii_lowercase() {
                    KeyCode::Char(c.to_ascii_uppercase())
                } else {
                    KeyCode::Char(c)
                }
            }
            _ => named_key(rest).ok_or_else(|| format!("unknown key name `{rest}`"))?,
        };
        Ok(KeyBinding::new(code, modifiers))
    }

    /// Text the operator reads in hints: `q`, `C-c`, `↑`, `Enter`.
    pub fn label(&self) -> String {
        self.to_string()
    }

    /// The spec that parses back to this key (`C-c`, `Enter`, `Up`).
    pub fn spec(&self) -> String {
        let label = self.to_string();
        match self.code {
            KeyCode::Up => label.replace('↑', "Up"),
            KeyCode::Down => label.replace('↓', "Down"),
            KeyCode::Left => label.replace('←', "Left"),
            KeyCode::Right => label.replace('→', "Right"),
            _ => label,
        }
    }

    /// True for a plain printable character without modifiers (`y`, `?`).
    pub fn is_plain_char(&self) -> bool {
        matches!(self.code, KeyCode::Char(c) if c != ' ') && self.modifiers.is_empty()
    }
}

impl From<KeyEvent> for KeyBinding {
    fn from(ev: KeyEvent) -> Self {
        KeyBinding::new(ev.code, ev.modifiers)
    }
}

fn named_key(name: &str) -> Option<KeyCode> {
    let code = match name.to_ascii_lowercase().as_str() {
        "enter" | "return" | "cr" => KeyCode::Enter,
        "esc" | "escape" => KeyCode::Esc,
        "tab" => KeyCode::Tab,
        "backtab" => KeyCode::BackTab,
        "up" => KeyCode::Up,
        "down" => KeyCode::Down,
        "left" => KeyCode::Left,
        "right" => KeyCode::Right,
        "home" => KeyCode::Home,
        "end" => KeyCode::End,
        "pageup" | "pgup" => KeyCode::PageUp,
        "pagedown" | "pgdn" => KeyCode::PageDown,
        "backspace" | "bs" => KeyCode::Backspace,
        "delete" | "del" => KeyCode::Delete,
        "insert" | "ins" => KeyCode::Insert,
        "space" => KeyCode::Char(' '),
        "minus" => KeyCode::Char('-'),
        other => {
            let n: u8 = other.strip_prefix('f')?.parse().ok()?;
            if (1..=24).contains(&n) {
                KeyCode::F(n)
            } else {
                return None;
            }
        }
    };
    Some(code)
}

impl fmt::Display for KeyBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.modifiers.contains(KeyModifiers::CONTROL) {
            f.write_str("C-")?;
        }
        if self.modifiers.contains(KeyModifiers::ALT) {
            f.write_str("A-")?;
        }
        if self.modifiers.contains(KeyModifiers::SHIFT) {
            f.write_str("S-")?;
        }
        match self.code {
            KeyCode::Char(' ') => f.write_str("Space"),
            KeyCode::Char(c) => write!(f, "{c}"),
            KeyCode::Enter => f.write_str("Enter"),
            KeyCode::Esc => f.write_str("Esc"),
            KeyCode::Tab => f.write_str("Tab"),
            KeyCode::BackTab => f.write_str("S-Tab"),
            KeyCode::Up => f.write_str("↑"),
            KeyCode::Down => f.write_str("↓"),
            KeyCode::Left => f.write_str("←"),
            KeyCode::Right => f.write_str("→"),
            KeyCode::Home => f.write_str("Home"),
            KeyCode::End => f.write_str("End"),
            KeyCode::PageUp => f.write_str("PgUp"),
            KeyCode::PageDown => f.write_str("PgDn"),
            KeyCode::Backspace => f.write_str("Backspace"),
            KeyCode::Delete => f.write_str("Del"),
            KeyCode::Insert => f.write_str("Ins"),
            KeyCode::F(n) => write!(f, "F{n}"),
            other => write!(f, "{other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_specs_parse_and_print() {
        for (spec, shown) in [
            ("q", "q"),
            ("C-c", "C-c"),
            ("S-Tab", "S-Tab"),
            ("BackTab", "S-Tab"),
            ("Up", "↑"),
            ("?", "?"),
            ("-", "-"),
            ("A-x", "A-x"),
            ("F5", "F5"),
            ("S-g", "G"),
        ] {
            assert_eq!(
                KeyBinding::parse(spec).unwrap().label(),
                shown,
                "spec {spec}"
            );
        }
        assert!(KeyBinding::parse("Hyper").is_err());
        assert!(KeyBinding::parse("").is_err());
        assert!(KeyBinding::parse("F99").is_err());
    }
}
