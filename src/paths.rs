//! Where a node keeps its files. `--data-dir` selects the node, so several nodes
//! can run on one machine, each with its own identity, socket and libvirt daemon.

use std::path::{Path, PathBuf};

/// Files of one node, all under its data dir.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// `$XDG_DATA_HOME/peervisor` (e.g. ~/.local/share/peervisor).
    pub fn default_root() -> PathBuf {
        directories::ProjectDirs::from("", "", "peervisor")
            .map(|d| d.data_dir().to_path_buf())
            .unwrap_or_else(|| PathBuf::from("/var/lib/peervisor/node"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local control socket the CLI and an attached console talk to.
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }

    /// The private libvirt daemon's directory.
    pub fn libvirt_dir(&self) -> PathBuf {
        self.root.join("libvirt")
    }

    /// Short-lived sockets (migration tunnels). libvirtd must see them, so they
    /// live in the data dir, which is outside the paths its namespace hides.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        std::fs::create_dir_all(self.run_dir())
    }
}

/// Guest serial logs. The path is written into the domain XML, so it must be the
/// same on every host a VM may migrate to: one machine-wide directory.
pub fn console_log_dir() -> PathBuf {
    if is_root() {
        PathBuf::from("/var/lib/peervisor/console")
    } else {
        directories::ProjectDirs::from("", "", "peervisor")
            .map(|d| d.cache_dir().join("console"))
            .unwrap_or_else(|| std::env::temp_dir().join("peervisor-console"))
    }
}

/// Data disks of guests: like the console logs, the path is in the domain XML and
/// must be the same on every peer of a machine for live migration (shared storage).
pub fn disk_dir() -> PathBuf {
    match console_log_dir().parent() {
        Some(parent) => parent.join("disks"),
        None => std::env::temp_dir().join("peervisor-disks"),
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
