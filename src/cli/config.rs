//! The node's config file: `--config FILE`, or /etc/peervisor/config.toml for the
//! system node. One key per flag of `peervisor node`, spelled as the flag without
//! `--` (`listen = ["/ip4/0.0.0.0/tcp/7470"]`, `max-connections = 512`,
//! `mdns = true`), plus `data-dir`. Every value goes through the flag's own
//! parser, so the file accepts exactly what the command line does; a flag given
//! on the command line (or through its environment variable) wins over the file.
//! An unknown key or a bad value is refused naming the file, the line and the key.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, FromArgMatches};

use super::NodeArgs;
use crate::paths::DataDir;

/// The system node's config file.
pub const SYSTEM_CONFIG: &str = "/etc/peervisor/config.toml";
/// Names the config file, as `--config` does (the unit sets it).
pub const CONFIG_ENV: &str = "PEERVISOR_CONFIG";
/// The key that is not a flag of `peervisor node` but of every command.
const DATA_DIR_KEY: &str = "data-dir";

/// A checked config file: each key with its line and the words it stands for.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    entries: Vec<Entry>,
    data_dir: Option<PathBuf>,
    data_dir_line: Option<usize>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The clap id of the flag.
    id: String,
    /// Its key and line in the file.
    key: String,
    line: usize,
    /// The command-line words (`--listen=ADDR`, ...), empty for a switch set false.
    words: Vec<OsString>,
}

/// `peervisor node`'s flags as a clap command, to look keys up and check values.
fn node_command() -> clap::Command {
    NodeArgs::augment_args(clap::Command::new("peervisor node").no_binary_name(true))
}

/// The keys a config file may hold: `data-dir` and every flag of `peervisor node`.
#[cfg(test)]
fn keys() -> Vec<String> {
    let mut keys = vec![DATA_DIR_KEY.to_string()];
    keys.extend(
        node_command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string)),
    );
    keys
}

impl ConfigFile {
    /// Reads and checks `path`; every error names the file, and the line and key
    /// where there is one.
    pub fn load(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<ConfigFile> {
        let shown = path.display();
        let table = toml::de::DeTable::parse(text)
            .map_err(|e| anyhow!("{shown}: {}", e.to_string().trim_end()))?;
        let values: toml::Table =
            toml::from_str(text).map_err(|e| anyhow!("{shown}: {}", e.to_string().trim_end()))?;
        let command = node_command();
        let mut config = ConfigFile {
            path: path.to_path_buf(),
            entries: Vec::new(),
            data_dir: None,
            data_dir_line: None,
        };
        for (key, _) in table.get_ref().iter() {
            let name = key.get_ref().as_ref();
            let line = line_of(text, key.span().start);
            let at = |message: String| anyhow!("{shown}:{line}: key `{name}`: {message}");
            let value = &values[name];
            if name == DATA_DIR_KEY {
                match value.as_str() {
                    Some(dir) if !dir.is_empty() => {
                        config.data_dir = Some(PathBuf::from(dir));
                        config.data_dir_line = Some(line);
                    }
                    _ => bail!(at("expects a directory (a string)".into())),
                }
                continue;
            }
            let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(name)) else {
                bail!(
                    "{shown}:{line}: unknown key `{name}` (the keys are `data-dir` and the \
                     flags of `peervisor node --help` without --)"
                );
            };
            let words = words(name, arg.get_action(), value).map_err(at)?;
            // The flag's own parser checks the value, exactly as on the command line.
            if let Err(e) = command.clone().try_get_matches_from(&words) {
                bail!(at(clap_message(&e)));
            }
            config.entries.push(Entry {
                id: arg.get_id().to_string(),
                key: name.to_string(),
                line,
                words,
            });
        }
        Ok(config)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's `data-dir`.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// The line where `key` is set, if it is.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        if key == DATA_DIR_KEY {
            return self.data_dir_line;
        }
        self.entries.iter().find(|e| e.key == key).map(|e| e.line)
    }

    /// How many keys it sets.
    pub fn len(&self) -> usize {
        self.entries.len() + usize::from(self.data_dir.is_some())
    }
}

/// The node's arguments: what `matches` (the command line holding NodeArgs) gave
/// explicitly, over the file's keys, over the defaults.
pub fn node_args(matches: &ArgMatches, file: Option<&ConfigFile>) -> Result<NodeArgs> {
    let Some(file) = file else {
        return Ok(NodeArgs::from_arg_matches(matches)?);
    };
    let command = node_command();
    let mut words: Vec<OsString> = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        match matches.value_source(id) {
            // The environment is read again below.
            Some(ValueSource::EnvVariable) => {}
            Some(ValueSource::CommandLine) => {
                let long = arg.get_long().unwrap_or(id);
                if matches!(arg.get_action(), ArgAction::SetTrue) {
                    words.push(format!("--{long}").into());
                } else {
                    for raw in matches.get_raw(id).into_iter().flatten() {
                        let mut word = OsString::from(format!("--{long}="));
                        word.push(raw);
                        words.push(word);
                    }
                }
            }
            _ => {
                for entry in file.entries.iter().filter(|e| e.id == id) {
                    words.extend(entry.words.iter().cloned());
                }
            }
        }
    }
    let merged = command
        .try_get_matches_from(&words)
        .map_err(|e| anyhow!("{}: {}", file.path.display(), clap_message(&e)))?;
    Ok(NodeArgs::from_arg_matches(&merged)?)
}

/// A command line that gives no node flag (the file's keys then all apply).
pub fn empty_matches() -> ArgMatches {
    node_command().get_matches_from(Vec::<OsString>::new())
}

/// The command-line words a key's value stands for.
fn words(key: &str, action: &ArgAction, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let word = |v: &toml::Value| -> Result<OsString, String> {
        let text = match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => return Err(format!("expects a value, not {}", kind(other))),
        };
        Ok(format!("--{key}={text}").into())
    };
    match (action, value) {
        (ArgAction::SetTrue, toml::Value::Boolean(true)) => Ok(vec![format!("--{key}").into()]),
        (ArgAction::SetTrue, toml::Value::Boolean(false)) => Ok(Vec::new()),
        (ArgAction::SetTrue, other) => Err(format!("expects true or false, not {}", kind(other))),
        (ArgAction::Append, toml::Value::Array(items)) => items.iter().map(word).collect(),
        (ArgAction::Append, single) => Ok(vec![word(single)?]),
        (_, toml::Value::Array(_)) => Err("expects one value, not an array".into()),
        (_, single) => Ok(vec![word(single)?]),
    }
}

fn kind(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Boolean(b) => format!("{b}"),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
        other => format!("a {}", other.type_str()),
    }
}

/// clap's one-line message, without its "error: " and usage lines.
fn clap_message(e: &clap::Error) -> String {
    let text = e.kind().as_str().map(str::to_string).unwrap_or_default();
    let rendered = e.to_string();
    rendered
        .lines()
        .next()
        .map(|l| l.trim_start_matches("error: ").to_string())
        .unwrap_or(text)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The config file in force: `--config`/PEERVISOR_CONFIG, else the system one for
/// the system node (root, no data dir given) when it exists, else none.
pub fn in_force(given: Option<&Path>, data_dir_given: bool) -> Result<Option<ConfigFile>> {
    if let Some(path) = given {
        return ConfigFile::load(path).map(Some);
    }
    let system = Path::new(SYSTEM_CONFIG);
    if crate::paths::is_root() && !data_dir_given && system.exists() {
        return ConfigFile::load(system).map(Some);
    }
    Ok(None)
}

/// `--data-dir` and `--config` as given (flag or environment), before any file is read.
#[derive(Debug, Clone)]
pub struct Globals {
    pub data_dir: Option<PathBuf>,
    pub config: Option<PathBuf>,
}

impl Globals {
    pub fn data_dir_given(&self) -> bool {
        self.data_dir.is_some()
    }

    /// The config file in force, and the data dir: `--data-dir`, else the file's
    /// data-dir, else the default (the system node's for root, else the user's).
    pub fn in_force(&self) -> Result<(DataDir, Option<ConfigFile>)> {
        let config = in_force(self.config.as_deref(), self.data_dir_given())?;
        let root = self
            .data_dir
            .clone()
            .or_else(|| config.as_ref()?.data_dir().map(Into::into))
            .unwrap_or_else(DataDir::default_root);
        Ok((DataDir::new(root), config))
    }

    /// The data dir without reading the config file (which may be missing or bad).
    pub fn data_dir_unread(&self) -> DataDir {
        DataDir::new(self.data_dir.clone().unwrap_or_else(DataDir::default_root))
    }
}

/// `peervisor config check [FILE]`.
pub fn check(file: Option<&Path>, data_dir_given: bool) -> Result<()> {
    let config = match file {
        Some(path) => ConfigFile::load(path)?,
        None => in_force(None, data_dir_given)?
            .ok_or_else(|| anyhow!("no config file: give one, or --config FILE"))?,
    };
    // The whole node's arguments too: what the file gives together must parse.
    node_args(&empty_matches(), Some(&config))?;
    println!("{}: ok ({} keys)", config.path().display(), config.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile> {
        ConfigFile::parse(Path::new("/etc/pv.toml"), text)
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn every_kind_of_bad_value_names_file_line_and_key() {
        let cases = [
            (
                "nick = \"a\"\nlisen = \"/ip4/0.0.0.0/tcp/1\"",
                "/etc/pv.toml:2: unknown key `lisen`",
            ),
            (
                "\n\nmax-connections = 3",
                "/etc/pv.toml:3: key `max-connections`: invalid value '3'",
            ),
            (
                "max-connections = \"many\"",
                "/etc/pv.toml:1: key `max-connections`: invalid value 'many'",
            ),
            (
                "listen = [\"nowhere\"]",
                "/etc/pv.toml:1: key `listen`: invalid value 'nowhere'",
            ),
            (
                "mdns = \"yes\"",
                "/etc/pv.toml:1: key `mdns`: expects true or false, not the string \"yes\"",
            ),
            (
                "nick = [\"a\", \"b\"]",
                "/etc/pv.toml:1: key `nick`: expects one value, not an array",
            ),
            (
                "accel = \"xen\"",
                "/etc/pv.toml:1: key `accel`: invalid value 'xen'",
            ),
            (
                "yarn = \"ftp://rm\"",
                "/etc/pv.toml:1: key `yarn`: invalid value 'ftp://rm'",
            ),
            (
                "lend-memory = \"lots\"",
                "/etc/pv.toml:1: key `lend-memory`: invalid value 'lots'",
            ),
            (
                "provision-high = 250",
                "/etc/pv.toml:1: key `provision-high`: invalid value '250'",
            ),
            ("[node]\nnick = \"a\"", "/etc/pv.toml:1: unknown key `node`"),
            ("nick = ", "/etc/pv.toml: TOML parse error at line 1"),
            (
                "data-dir = 7",
                "/etc/pv.toml:1: key `data-dir`: expects a directory",
            ),
        ];
        for (text, expected) in cases {
            let got = error(text);
            assert!(
                got.starts_with(expected),
                "{text:?}\n  got: {got}\n want: {expected}"
            );
        }
    }

    /// The packaged /etc/peervisor/config.toml shows every key, and each shown
    /// value, uncommented, is valid.
    #[test]
    fn packaged_config_shows_every_key_with_a_valid_value() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/config.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
            .map(|l| {
                // The value, without a trailing comment.
                match l.find(" #") {
                    Some(i) => format!("{}\n", l[..i].trim_end()),
                    None => format!("{l}\n"),
                }
            })
            .collect();
        let config = ConfigFile::parse(Path::new(path), &uncommented)
            .unwrap_or_else(|e| panic!("{e:#}\n{uncommented}"));
        let shown: Vec<&str> = uncommented
            .lines()
            .filter_map(|l| l.split(" = ").next())
            .collect();
        for key in keys() {
            assert!(
                shown.contains(&key.as_str()),
                "packaging/config.toml lacks `{key}`"
            );
        }
        assert_eq!(config.len(), keys().len());
    }

    #[test]
    fn flags_given_win_over_the_file_and_the_file_over_defaults() {
        let file = parse(
            "nick = \"from-file\"\nmax-connections = 100\nlisten = [\"/ip4/127.0.0.1/tcp/1\", \"/ip4/127.0.0.1/tcp/2\"]\nmdns = true",
        )
        .unwrap();
        let command = node_command();
        let matches = command
            .try_get_matches_from(["--nick", "from-flag", "--max-pending-connections", "9"])
            .unwrap();
        let args = node_args(&matches, Some(&file)).unwrap();
        assert_eq!(args.nick.as_deref(), Some("from-flag"));
        assert_eq!(args.max_connections, 100);
        assert_eq!(args.max_pending_connections, 9);
        assert_eq!(args.listen.len(), 2);
        assert!(args.mdns);
        // A default stays where neither says anything.
        assert_eq!(args.max_connections_per_peer, 4);
    }
}
