//! The `:` command line: parsing, completion and the line editor. Pure functions
//! over text and the names the console knows; the reducer applies the result.

/// What an argument names, for completion and usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    Vm,
    Peer,
    Service,
    Theme,
    Port,
    Target,
}

impl Arg {
    fn usage(self) -> &'static str {
        match self {
            Arg::Vm => "VM",
            Arg::Peer => "PEER",
            Arg::Service => "SERVICE",
            Arg::Theme => "THEME",
            Arg::Port => "[PORT]",
            Arg::Target => "HOST:PORT",
        }
    }
}

/// Every command: name, arguments, one line of help.
pub const COMMANDS: &[(&str, &[Arg], &str)] = &[
    (
        "migrate",
        &[Arg::Vm, Arg::Peer],
        "live-migrate a VM to a peer",
    ),
    ("replicate", &[Arg::Vm, Arg::Peer], "copy a VM to a peer"),
    (
        "consume",
        &[Arg::Service, Arg::Port],
        "listen locally for a service",
    ),
    ("unconsume", &[Arg::Service], "close a local listener"),
    (
        "expose",
        &[Arg::Service, Arg::Target],
        "offer a host service",
    ),
    ("start", &[Arg::Vm], "start a VM"),
    ("stop", &[Arg::Vm], "stop a VM"),
    ("pause", &[Arg::Vm], "pause a VM"),
    ("resume", &[Arg::Vm], "resume a paused VM"),
    ("delete", &[Arg::Vm], "delete a VM (asks first)"),
    ("theme", &[Arg::Theme], "switch the colour theme"),
    ("help", &[], "show the keys"),
    ("quit", &[], "quit the console"),
];

/// `migrate VM PEER`
pub fn usage(name: &str) -> Option<String> {
    let (_, args, _) = COMMANDS.iter().find(|(n, _, _)| *n == name)?;
    let mut s = name.to_string();
    for a in *args {
        s.push(' ');
        s.push_str(a.usage());
    }
    Some(s)
}

/// A command line, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Migrate { vm: String, peer: String },
    Replicate { vm: String, peer: String },
    Consume { service: String, port: Option<u16> },
    Unconsume { service: String },
    Expose { name: String, target: String },
    Start { vm: String },
    Stop { vm: String },
    Pause { vm: String },
    Resume { vm: String },
    Delete { vm: String },
    Theme { name: String },
    Help,
    Quit,
}

/// Parse a line (without the leading `:`). Errors are one line for the status bar.
pub fn parse(line: &str) -> Result<Parsed, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&name, args)) = words.split_first() else {
        return Err("empty command".into());
    };
    let Some((name, spec, _)) = COMMANDS
        .iter()
        .find(|(n, _, _)| *n == name)
        .or_else(|| unique_prefix(name))
    else {
        let known: Vec<&str> = COMMANDS.iter().map(|(n, _, _)| *n).collect();
        return Err(format!(
            "unknown command `{name}` (commands: {})",
            known.join(", ")
        ));
    };
    let optional = spec.iter().filter(|a| **a == Arg::Port).count();
    if args.len() > spec.len() || args.len() + optional < spec.len() {
        return Err(format!("usage: :{}", usage(name).unwrap_or_default()));
    }
    let arg = |i: usize| args.get(i).map(|s| s.to_string()).unwrap_or_default();
    Ok(match *name {
        "migrate" => Parsed::Migrate {
            vm: arg(0),
            peer: arg(1),
        },
        "replicate" => Parsed::Replicate {
            vm: arg(0),
            peer: arg(1),
        },
        "consume" => Parsed::Consume {
            service: arg(0),
            port: match args.get(1) {
                None => None,
                Some(p) => Some(
                    p.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("consume: `{p}` is not a port (1-65535)"))?,
                ),
            },
        },
        "unconsume" => Parsed::Unconsume { service: arg(0) },
        "expose" => {
            let target = arg(1);
            let port_ok = target
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(format!(
                    "expose: `{target}` is not HOST:PORT (e.g. 127.0.0.1:8080)"
                ));
            }
            Parsed::Expose {
                name: arg(0),
                target,
            }
        }
        "start" => Parsed::Start { vm: arg(0) },
        "stop" => Parsed::Stop { vm: arg(0) },
        "pause" => Parsed::Pause { vm: arg(0) },
        "resume" => Parsed::Resume { vm: arg(0) },
        "delete" => Parsed::Delete { vm: arg(0) },
        "theme" => Parsed::Theme { name: arg(0) },
        "help" => Parsed::Help,
        _ => Parsed::Quit,
    })
}

fn unique_prefix(word: &str) -> Option<&'static (&'static str, &'static [Arg], &'static str)> {
    let mut matches = COMMANDS.iter().filter(|(n, _, _)| n.starts_with(word));
    let first = matches.next()?;
    matches.next().is_none().then_some(first)
}

/// Names the console knows, offered by completion.
#[derive(Debug, Default, Clone)]
pub struct Names {
    pub vms: Vec<String>,
    pub peers: Vec<String>,
    pub services: Vec<String>,
    pub themes: Vec<String>,
}

/// Complete the last word of `line`: the new line (extended to the longest
/// common prefix, plus a space when unique) and the candidates when several fit.
pub fn complete(line: &str, names: &Names) -> (String, Vec<String>) {
    let ends_with_space = line.is_empty() || line.ends_with(' ');
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let current = if ends_with_space {
        ""
    } else {
        words.pop().unwrap_or("")
    };
    let pool: Vec<String> = if words.is_empty() {
        COMMANDS.iter().map(|(n, _, _)| n.to_string()).collect()
    } else {
        let Some((_, spec, _)) = COMMANDS.iter().find(|(n, _, _)| *n == words[0]) else {
            return (line.to_string(), vec![]);
        };
        match spec.get(words.len() - 1) {
            Some(Arg::Vm) => names.vms.clone(),
            Some(Arg::Peer) => names.peers.clone(),
            Some(Arg::Service) => names.services.clone(),
            Some(Arg::Theme) => names.themes.clone(),
            _ => vec![],
        }
    };
    let mut fits: Vec<String> = pool
        .into_iter()
        .filter(|c| c.starts_with(current))
        .collect();
    fits.sort();
    fits.dedup();
    let prefix_of_words = if words.is_empty() {
        String::new()
    } else {
        format!("{} ", words.join(" "))
    };
    match fits.len() {
        0 => (line.to_string(), vec![]),
        1 => (format!("{prefix_of_words}{} ", fits[0]), vec![]),
        _ => {
            let common = common_prefix(&fits);
            let completed = if common.len() > current.len() {
                common
            } else {
                current.to_string()
            };
            (format!("{prefix_of_words}{completed}"), fits)
        }
    }
}

fn common_prefix(words: &[String]) -> String {
    let Some(first) = words.first() else {
        return String::new();
    };
    let mut len = first.len();
    for w in &words[1..] {
        len = first
            .char_indices()
            .zip(w.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, a), _)| i + a.len_utf8())
            .min(len);
    }
    first[..len].to_string()
}

/// The text being typed after `:` or `/`, with a place in the history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineEditor {
    pub text: String,
    /// Index into the history while browsing it with ↑/↓.
    pub history_pos: Option<usize>,
    /// Completion candidates to show, after a Tab with several fits.
    pub candidates: Vec<String>,
}

impl LineEditor {
    pub fn new(text: &str) -> LineEditor {
        LineEditor {
            text: text.to_string(),
            ..LineEditor::default()
        }
    }

    pub fn push(&mut self, c: char) {
        self.text.push(c);
        self.candidates.clear();
    }

    pub fn backspace(&mut self) {
        self.text.pop();
        self.candidates.clear();
    }

    /// C-w: drop the last word (and the spaces after it).
    pub fn delete_word(&mut self) {
        let trimmed = self.text.trim_end().len();
        self.text.truncate(trimmed);
        let cut = self.text.rfind(' ').map_or(0, |i| i + 1);
        self.text.truncate(cut);
        self.candidates.clear();
    }

    /// ↑ (`older = true`) or ↓ through `history` (oldest first).
    pub fn browse(&mut self, history: &[String], older: bool) {
        if history.is_empty() {
            return;
        }
        let pos = match (self.history_pos, older) {
            (None, true) => Some(history.len() - 1),
            (None, false) => None,
            (Some(0), true) => Some(0),
            (Some(i), true) => Some(i - 1),
            (Some(i), false) if i + 1 < history.len() => Some(i + 1),
            (Some(_), false) => None,
        };
        self.history_pos = pos;
        self.text = pos.map(|i| history[i].clone()).unwrap_or_default();
        self.candidates.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            vms: vec!["web-1".into(), "web-2".into(), "db-1".into()],
            peers: vec!["peer-b".into(), "peer-c".into()],
            services: vec!["http".into(), "kv".into()],
            themes: vec!["default".into(), "light".into()],
        }
    }

    #[test]
    fn parses_commands_and_rejects_bad_arguments() {
        assert_eq!(
            parse("migrate web-1 peer-b"),
            Ok(Parsed::Migrate {
                vm: "web-1".into(),
                peer: "peer-b".into()
            })
        );
        assert_eq!(
            parse("consume http 8080"),
            Ok(Parsed::Consume {
                service: "http".into(),
                port: Some(8080)
            })
        );
        assert_eq!(
            parse("  consume   http "),
            Ok(Parsed::Consume {
                service: "http".into(),
                port: None
            })
        );
        assert_eq!(
            parse("expose legacy 127.0.0.1:9000"),
            Ok(Parsed::Expose {
                name: "legacy".into(),
                target: "127.0.0.1:9000".into()
            })
        );
        assert_eq!(
            parse("th light"),
            Ok(Parsed::Theme {
                name: "light".into()
            })
        );
        assert_eq!(
            parse("migrate web-1"),
            Err("usage: :migrate VM PEER".into())
        );
        assert!(
            parse("consume http 99999")
                .unwrap_err()
                .contains("not a port")
        );
        assert!(parse("expose x nowhere").unwrap_err().contains("HOST:PORT"));
        assert!(parse("teleport x").unwrap_err().contains("unknown command"));
        // `s` is ambiguous (start, stop).
        assert!(parse("s web-1").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn completes_commands_then_arguments_by_kind() {
        let n = names();
        assert_eq!(complete("mi", &n), ("migrate ".into(), vec![]));
        let (line, cands) = complete("migrate w", &n);
        assert_eq!(line, "migrate web-");
        assert_eq!(cands, vec!["web-1", "web-2"]);
        assert_eq!(complete("migrate web-2 peer-", &n).1.len(), 2);
        assert_eq!(
            complete("migrate web-2 peer-c", &n).0,
            "migrate web-2 peer-c "
        );
        assert_eq!(complete("consume k", &n).0, "consume kv ");
        assert_eq!(complete("theme ", &n).1, vec!["default", "light"]);
        assert_eq!(complete("nope x", &n), ("nope x".into(), vec![]));
        let (_, all) = complete("", &n);
        assert!(all.contains(&"expose".to_string()));
    }

    #[test]
    fn editor_history_and_word_delete() {
        let history = vec!["migrate a b".to_string(), "theme light".to_string()];
        let mut e = LineEditor::default();
        e.browse(&history, true);
        assert_eq!(e.text, "theme light");
        e.browse(&history, true);
        assert_eq!(e.text, "migrate a b");
        e.browse(&history, true);
        assert_eq!(e.text, "migrate a b");
        e.browse(&history, false);
        assert_eq!(e.text, "theme light");
        e.browse(&history, false);
        assert_eq!(e.text, "");
        let mut e = LineEditor::new("migrate web-1 pe");
        e.delete_word();
        assert_eq!(e.text, "migrate web-1 ");
        e.delete_word();
        assert_eq!(e.text, "migrate ");
    }
}
