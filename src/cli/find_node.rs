//! Which running node the console attaches to when none is named: the node of
//! the data dir in effect, then (without an explicit --data-dir) the system
//! node's and the user's own. So `ssh -t host peervisor` opens the host's node.

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::paths::{DataDir, SYSTEM_DATA_DIR};

/// What a data dir's control socket says.
enum Probe {
    Running,
    NotRunning,
    /// The socket exists or may, but is not ours to open (root's system node).
    Forbidden,
}

fn probe(dir: &DataDir) -> Probe {
    match UnixStream::connect(dir.control_socket()) {
        Ok(_) => Probe::Running,
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Probe::Forbidden,
        Err(_) => Probe::NotRunning,
    }
}

fn candidates(data_dir: &DataDir, given: bool) -> Vec<DataDir> {
    let mut dirs = vec![data_dir.clone()];
    if !given {
        for root in [PathBuf::from(SYSTEM_DATA_DIR), DataDir::user_root()] {
            if dirs.iter().all(|d| d.root() != root) {
                dirs.push(DataDir::new(root));
            }
        }
    }
    dirs
}

/// The first candidate with a node running, if any. A system node that this user
/// may not open is mentioned, not an error: the console then embeds a node.
pub fn find_running_node(data_dir: &DataDir, given: bool) -> Option<DataDir> {
    let mut forbidden = None;
    for dir in candidates(data_dir, given) {
        match probe(&dir) {
            Probe::Running => return Some(dir),
            Probe::Forbidden => forbidden = forbidden.or(Some(dir)),
            Probe::NotRunning => {}
        }
    }
    if let Some(dir) = forbidden {
        eprintln!(
            "note: cannot tell whether a node runs at {} (root's); `sudo peervisor` opens it",
            dir.root().display()
        );
    }
    None
}

/// `--attach` without a data dir: the running node, or an error saying where it looked.
pub fn running_node(data_dir: &DataDir, given: bool) -> Result<DataDir> {
    let dirs = candidates(data_dir, given);
    for dir in &dirs {
        match probe(dir) {
            Probe::Running => return Ok(dir.clone()),
            Probe::Forbidden => bail!(
                "{} is root's: `sudo peervisor --attach` opens the system node",
                dir.control_socket().display()
            ),
            Probe::NotRunning => {}
        }
    }
    let looked: Vec<String> = dirs
        .iter()
        .map(|d| d.control_socket().display().to_string())
        .collect();
    bail!(
        "no node is running here (looked for {}); start one with `systemctl start peervisor` \
         or `peervisor node`",
        looked.join(", ")
    )
}
