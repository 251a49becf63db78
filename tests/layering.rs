//! The module layering of docs/ARCHITECTURE.md, checked on the source: every
//! path into the crate (`crate::x`, `crate::{x, y}`, and a `super::` chain that
//! climbs to the crate root) in src/**/*.rs names a top-level module its file's
//! module may import; the features import each other only along a DAG with
//! `peer` on top; and no `impl Peer` block stands outside src/peer/ (each
//! feature's code is its own struct's). Comments and string literals are left
//! out; inline modules (`mod tests { … }`) count for `super::`. main.rs is the
//! wiring and may import anything. A violation is printed as file:line and fails
//! the test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Plain types (what is shown, what is asked of a node, names), paths, log
/// timing and test helpers: imported by all, import nothing above.
const BASE: &[&str] = &["model", "api", "names", "paths", "phases", "fuzzing"];
/// The overlay, libvirt and the guest image: they know nothing of what uses them.
const PLATFORM: &[&str] = &["node", "hypervisor", "image"];
/// The node's features and its control API, each with the features it may
/// import: they form a DAG, `peer` on top (it owns and routes to the others),
/// nothing imports `peer`. Shared pieces live in the lowest feature that needs
/// them (the handover in services, the announced VM CPU figure in services) or
/// in a base module (names, phases).
const FEATURE_DEPS: &[(&str, &[&str])] = &[
    (
        "peer",
        &[
            "vms",
            "services",
            "migrate",
            "jobs",
            "control",
            "admission",
            "join",
        ],
    ),
    ("migrate", &["services", "vms", "admission"]),
    ("services", &["admission"]),
    ("join", &["admission"]),
    ("admission", &[]),
    ("vms", &[]),
    ("jobs", &[]),
    ("control", &[]),
];

fn is_feature(module: &str) -> bool {
    FEATURE_DEPS.iter().any(|(f, _)| *f == module)
}
/// The front ends: the command line, the console wiring, benchmarks, and what
/// the demo and benchmarks share to run processes.
const TOOLS: &[&str] = &["cli", "console", "bench", "rig"];
/// The console's panes: plain data in, frames out.
const TUI: &[&str] = &["tui"];

/// Why `from` may not import `to`, if it may not.
fn refusal(from: &str, to: &str) -> Option<String> {
    if from == to {
        return None;
    }
    let within = |allowed: &[&[&str]]| allowed.iter().any(|layer| layer.contains(&to));
    if is_feature(from) && is_feature(to) {
        let (_, allowed) = FEATURE_DEPS.iter().find(|(f, _)| *f == from)?;
        return (!allowed.contains(&to)).then(|| {
            format!(
                "`{from}` imports `{to}`: features form a DAG, `{from}` may import only {} (FEATURE_DEPS in tests/layering.rs, docs/ARCHITECTURE.md)",
                if allowed.is_empty() {
                    "base and platform modules".to_string()
                } else {
                    allowed.join(", ")
                }
            )
        });
    }
    let refused = if BASE.contains(&from) {
        (!within(&[BASE])).then_some(
            "base modules import only base modules (model, api, names, paths, phases, fuzzing)",
        )
    } else if PLATFORM.contains(&from) {
        (!within(&[BASE, PLATFORM]))
            .then_some("node, hypervisor and image import only each other and base modules")
    } else if is_feature(from) {
        ["cli", "bench", "tui", "console", "rig"]
            .contains(&to)
            .then_some("features (peer, migrate, services, admission, vms, jobs, control, join) import neither cli, bench, tui, console nor rig")
    } else if from == "tui" {
        (!["model", "api", "fuzzing"].contains(&to))
            .then_some("tui draws plain data and asks in requests: it imports only model and api (and fuzzing in tests), no libvirt or overlay code")
    } else if from == "rig" {
        (!within(&[BASE, PLATFORM]))
            .then_some("rig imports only node, hypervisor, image and base modules")
    } else if from == "bench" {
        ["cli", "console"]
            .contains(&to)
            .then_some("bench is run by cli: it imports neither cli nor console")
    } else if from == "console" {
        ["cli", "bench"]
            .contains(&to)
            .then_some("console is run by cli: it imports neither cli nor bench")
    } else if from == "cli" {
        None
    } else {
        Some("this module is in no layer: add it to tests/layering.rs and docs/ARCHITECTURE.md")
    };
    refused.map(|why| format!("`{from}` imports `{to}`: {why}"))
}

/// External crates only some modules may use.
fn refusal_extern(from: &str, krate: &str) -> Option<String> {
    match krate {
        "virt" if from != "hypervisor" => Some(format!(
            "`{from}` uses `virt`: only hypervisor touches libvirt"
        )),
        "libp2p" if from == "tui" => {
            Some("`tui` uses `libp2p`: tui draws plain data, no overlay code".to_string())
        }
        _ => None,
    }
}

/// The top-level modules: src/NAME.rs and src/NAME/.
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(src).expect("reading src/").flatten() {
        let path = entry.path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() || (path.extension().is_some_and(|e| e == "rs") && name != "main") {
            names.insert(name);
        }
    }
    names
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("reading a source dir")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: src/a/b.rs and src/a/b/mod.rs are `a::b`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

/// The source with comments and the contents of string and character literals
/// blanked out (newlines kept, so lines still count).
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let rest = |k: usize| c.get(i + k).copied();
        if c[i] == '/' && rest(1) == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && rest(1) == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (i == 0 || !ident(c[i - 1]) || (c[i - 1] == 'b' && (i < 2 || !ident(c[i - 2]))))
            && matches!(rest(1), Some('"' | '#'))
            && {
                let mut k = i + 1;
                while c.get(k) == Some(&'#') {
                    k += 1;
                }
                c.get(k) == Some(&'"')
            }
        {
            // A raw string: r"…", r#"…"#, br"…".
            let mut hashes = 0;
            i += 1;
            while c[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|h| c.get(i + h) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '"' {
            out.push('"');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c[i] == '\'' && rest(1) == Some('\\') {
            // '\n', '\'', '\u{…}'
            i += 2;
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            out.push_str("' '");
            i += 1;
        } else if c[i] == '\'' && rest(2) == Some('\'') {
            out.push_str("' '");
            i += 3;
        } else {
            // Code, or a lifetime's quote.
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

/// Tokens of blanked code, each with its line (1-based).
fn tokens(code: &str) -> Vec<(usize, Token)> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((line, Token::Ident(c[start..i].iter().collect())));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((line, Token::PathSep));
            i += 2;
        } else {
            out.push((
                line,
                match ch {
                    '{' => Token::Open,
                    '}' => Token::Close,
                    ',' => Token::Comma,
                    _ => Token::Other,
                },
            ));
            i += 1;
        }
    }
    out
}

/// What a file imports from the crate root's namespace (top-level modules, or
/// items of main.rs) and which external crates it names at a path's start, with
/// lines: (line, name, is_external).
fn imports(module: &[String], src: &str) -> Vec<(usize, String, bool)> {
    let toks = tokens(&code_only(src));
    let ident = |k: usize| match toks.get(k) {
        Some((_, Token::Ident(s))) => Some(s.as_str()),
        _ => None,
    };
    let is = |k: usize, t: Token| toks.get(k).is_some_and(|(_, x)| *x == t);
    let mut found = Vec::new();
    // Inline modules open here: (depth of their brace), to resolve `super`.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    // The first names after a `::` at the crate root: `x` or each of `{x, y::z}`.
    let roots = |k: usize, found: &mut Vec<(usize, String, bool)>| {
        if let Some(name) = ident(k) {
            found.push((toks[k].0, name.to_string(), false));
        } else if is(k, Token::Open) {
            let (mut k, mut level, mut first) = (k + 1, 1, true);
            while k < toks.len() && level > 0 {
                match &toks[k].1 {
                    Token::Open => level += 1,
                    Token::Close => level -= 1,
                    Token::Comma if level == 1 => first = true,
                    Token::Ident(name) if level == 1 && first => {
                        found.push((toks[k].0, name.clone(), false));
                        first = false;
                    }
                    _ => {}
                }
                k += 1;
            }
        }
    };
    while i < toks.len() {
        let after_sep = i > 0 && is(i - 1, Token::PathSep);
        match &toks[i].1 {
            Token::Open => {
                depth += 1;
                if i >= 2 && ident(i - 2) == Some("mod") && ident(i - 1).is_some() {
                    inline.push(depth);
                }
            }
            Token::Close => {
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
                depth -= 1;
            }
            Token::Ident(word) if word == "crate" && !after_sep && is(i + 1, Token::PathSep) => {
                roots(i + 2, &mut found);
            }
            Token::Ident(word) if word == "super" && !after_sep => {
                let mut k = i;
                let mut climbs = 0;
                while ident(k) == Some("super") && is(k + 1, Token::PathSep) {
                    climbs += 1;
                    k += 2;
                }
                if climbs > 0 && climbs == module.len() + inline.len() {
                    roots(k, &mut found);
                }
                i = k.max(i + 1);
                continue;
            }
            Token::Ident(word)
                if !after_sep
                    && ["virt", "libp2p"].contains(&word.as_str())
                    && is(i + 1, Token::PathSep) =>
            {
                found.push((toks[i].0, word.clone(), true));
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Every violation in the tree under `src`, as "file:line: why".
fn violations(src: &Path) -> Vec<String> {
    let modules = top_level_modules(src);
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let module = module_of(src, &file);
        let Some(from) = module.first() else {
            continue; // main.rs: the wiring
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let shown = file.strip_prefix(src.parent().unwrap()).unwrap().display();
        for (line, name, external) in imports(&module, &text) {
            let why = if external {
                refusal_extern(from, &name)
            } else if !modules.contains(&name) {
                Some(format!(
                    "`{from}` imports `{name}` from main.rs: main.rs wires, nothing imports from it"
                ))
            } else {
                refusal(from, &name)
            };
            if let Some(why) = why {
                out.push(format!("{shown}:{line}: {why}"));
            }
        }
        if from != "peer" {
            for line in impl_peer_lines(&text) {
                out.push(format!(
                    "{shown}:{line}: `impl Peer` outside src/peer/: a feature's code goes in its own struct's methods (Vms, Services, Migrations, ...); Peer owns the features and routes to them"
                ));
            }
        }
    }
    out
}

/// Lines where an `impl` block for `Peer` opens (`impl Peer`, `impl X for
/// Peer`, a path to it), in code (comments and strings do not count).
fn impl_peer_lines(src: &str) -> Vec<usize> {
    let toks = tokens(&code_only(src));
    let word = |t: &Token, w: &str| matches!(t, Token::Ident(s) if s == w);
    let mut lines = Vec::new();
    for (i, (line, tok)) in toks.iter().enumerate() {
        if !word(tok, "impl") {
            continue;
        }
        // The header runs to the block's `{` (or a `where`); the implementing
        // type follows `for` when a trait is implemented.
        let header: Vec<&Token> = toks[i + 1..]
            .iter()
            .map(|(_, t)| t)
            .take_while(|t| **t != Token::Open && !word(t, "where"))
            .collect();
        let for_at = header.iter().position(|t| word(t, "for"));
        let self_type = &header[for_at.map_or(0, |f| f + 1)..];
        let names_peer = self_type
            .iter()
            .enumerate()
            .any(|(k, t)| word(t, "Peer") && self_type.get(k + 1) != Some(&&Token::PathSep));
        if names_peer {
            lines.push(*line);
        }
    }
    lines
}

#[test]
fn every_module_imports_only_what_its_layer_may() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = top_level_modules(&src);
    let features: Vec<&str> = FEATURE_DEPS.iter().map(|(f, _)| *f).collect();
    for known in [BASE, PLATFORM, &features, TOOLS, TUI].concat() {
        assert!(
            modules.contains(known),
            "tests/layering.rs names `{known}`, which src/ no longer has"
        );
    }
    let found = violations(&src);
    for v in &found {
        println!("{v}");
    }
    assert!(
        found.is_empty(),
        "{} place(s) break the layering (docs/ARCHITECTURE.md):\n{}",
        found.len(),
        found.join("\n")
    );
}

/// The checker itself: a tree with one bad import of each kind is reported
/// line by line, and comments, strings and inline test modules do not fool it.
#[test]
fn the_check_reports_bad_imports_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let write = |path: &str, text: &str| {
        let file = src.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    };
    write(
        "main.rs",
        "mod cli;\nuse cli::Cli;\npub fn start_serving() {}\n",
    );
    write("cli/mod.rs", "use crate::node::Client;\n");
    write(
        "node/mod.rs",
        "//! crate::cli in a comment is fine\nuse crate::model::Status;\nconst S: &str = \"crate::peer\";\nuse crate::{paths, cli::Args};\n",
    );
    write(
        "node/deep.rs",
        "mod tests {\n    use super::super::super::peer::Peer;\n}\nfn f() { super::super::tui::draw(); }\n",
    );
    write(
        "hypervisor/mod.rs",
        "mod inner {\n    mod tests {\n        use super::super::super::model::X;\n    }\n}\nuse virt::connect::Connect;\n",
    );
    write(
        "peer/mod.rs",
        "use crate::bench::Setup;\nlet c = '{'; let s = r#\"}\"#;\nuse crate::migrate::x;\n",
    );
    write(
        "tui/mod.rs",
        "use crate::hypervisor::Host;\nuse libp2p::PeerId;\nfn f<'a>(x: &'a str) {}\n",
    );
    write("console.rs", "use crate::start_serving;\n");
    write("model.rs", "use crate::node::Client;\nuse virt::Error;\n");
    write("paths.rs", "");
    write("peer/sub.rs", "use crate::services::Thing;\n");
    write(
        "services/mod.rs",
        "use crate::migrate::handover::Handovers;\n",
    );
    write(
        "migrate/mod.rs",
        "use crate::{services::Services, peer::Peer};\nuse crate::vms::Vms;\n",
    );
    write(
        "migrate/outgoing.rs",
        "// impl Peer in a comment\nimpl Peer {\n}\nimpl Default for crate::peer::Peer {}\nimpl PeerLimits {}\nconst S: &str = \"impl Peer\";\nimpl<T> From<T> for Migrations where T: Peer {}\n",
    );
    write("peer/start.rs", "impl Peer {}\n");
    write("vms/mod.rs", "");
    write("bench/mod.rs", "");
    write("newthing.rs", "use crate::model::X;\n");
    let found = violations(&src);
    let expect = [
        "src/console.rs:1: `console` imports `start_serving` from main.rs",
        "src/hypervisor/mod.rs:6: ", // virt in hypervisor is fine: must not appear
        "src/model.rs:1: `model` imports `node`",
        "src/model.rs:2: `model` uses `virt`",
        "src/newthing.rs:1: `newthing` imports `model`: this module is in no layer",
        "src/node/deep.rs:2: `node` imports `peer`",
        "src/node/deep.rs:4: `node` imports `tui`",
        "src/node/mod.rs:4: `node` imports `cli`",
        "src/migrate/mod.rs:1: `migrate` imports `peer`: features form a DAG",
        "src/migrate/outgoing.rs:2: `impl Peer` outside src/peer/",
        "src/migrate/outgoing.rs:4: `impl Peer` outside src/peer/",
        "src/migrate/outgoing.rs:4: `migrate` imports `peer`",
        "src/peer/mod.rs:1: `peer` imports `bench`",
        "src/services/mod.rs:1: `services` imports `migrate`: features form a DAG",
        "src/tui/mod.rs:1: `tui` imports `hypervisor`",
        "src/tui/mod.rs:2: `tui` uses `libp2p`",
    ];
    for e in expect {
        let present = found.iter().any(|f| f.starts_with(e));
        if e.starts_with("src/hypervisor/mod.rs:6") {
            assert!(!present, "virt is hypervisor's own: {found:#?}");
        } else {
            assert!(present, "{e:?} not reported in {found:#?}");
        }
    }
    assert_eq!(found.len(), expect.len() - 1, "{found:#?}");
}
