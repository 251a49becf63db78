//! `peervisor keys`: the effective keymap, with the user's file applied or its
//! error explained.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_peervisor");

fn keys(config_home: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("keys")
        .args(args)
        .env("XDG_CONFIG_HOME", config_home)
        .env_remove("PEERVISOR_KEYMAP")
        .output()
        .expect("run peervisor keys");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn line<'a>(text: &'a str, action: &str) -> &'a str {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(action))
        .unwrap_or_else(|| panic!("no {action} line in:\n{text}"))
}

#[test]
fn keys_prints_defaults_then_the_users_overrides() {
    let home = tempfile::tempdir().unwrap();
    let (ok, text) = keys(home.path(), &[]);
    assert!(ok);
    assert!(text.contains("# from: keymaps/default.toml"), "{text}");
    assert!(line(&text, "migrate").contains(r#"["m"]"#), "{text}");
    assert!(line(&text, "quit").contains(r#"["q", "C-c"]"#), "{text}");

    let dir = home.path().join("peervisor");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("keymap.toml"),
        "base = \"vim\"\n[keys]\nmigrate = [\"F2\"]\n",
    )
    .unwrap();
    let (ok, text) = keys(home.path(), &[]);
    assert!(ok);
    assert!(
        text.contains("keymaps/vim.toml + ") && text.contains("keymap.toml"),
        "{text}"
    );
    assert!(line(&text, "migrate").contains(r#"["F2"]"#), "{text}");
    assert!(
        line(&text, "delete").contains(r#""x""#),
        "vim base kept: {text}"
    );

    // A broken file: the error names file and line; the defaults are printed.
    std::fs::write(dir.join("keymap.toml"), "[keys]\nmigrate = [\"Ctrl+m\"]\n").unwrap();
    let (ok, text) = keys(home.path(), &[]);
    assert!(ok);
    assert!(
        text.contains("# error: ") && text.contains("keymap.toml:2") && text.contains("Ctrl+m"),
        "{text}"
    );
    assert!(line(&text, "migrate").contains(r#"["m"]"#), "{text}");

    // --keymap picks a shipped map regardless of the user file.
    let (_, text) = keys(home.path(), &["--keymap", "vim"]);
    assert!(
        text.contains("# from: keymaps/vim.toml") && !text.contains("# error"),
        "{text}"
    );
}
