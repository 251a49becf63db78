//! Shell completions and man pages, generated from the clap definitions
//! (clap_complete, clap_mangen) so they never drift from `--help`.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// `peervisor completions SHELL`: the completion script on stdout.
pub fn completions(shell: Shell) -> Result<()> {
    let mut command = Cli::command();
    // Into a buffer first: clap_complete panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "peervisor", &mut script);
    std::io::Write::write_all(&mut std::io::stdout(), &script).context("writing to stdout")
}

/// `peervisor man --out-dir DIR`: peervisor.1 and one page per subcommand
/// (peervisor-vm-create.1, ...), as git has.
pub fn man_pages(out_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    clap_mangen::generate_to(Cli::command(), out_dir)
        .with_context(|| format!("cannot write man pages in {}", out_dir.display()))?;
    println!("man pages written to {}", out_dir.display());
    Ok(())
}
