//! Where a node keeps its files. `--data-dir` selects the node, so several nodes
//! can run on one machine, each with its own identity, socket and libvirt daemon.

use std::path::{Path, PathBuf};

/// The system node's data dir (peervisor.service). Images, disks and guest
/// consoles of root's nodes live beside its files, in images/, disks/, console/.
pub const SYSTEM_DATA_DIR: &str = "/var/lib/peervisor";

/// Files of one node, all under its data dir.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// The system node's (/var/lib/peervisor) for root, else the user's node's,
    /// `$XDG_DATA_HOME/peervisor` (e.g. ~/.local/share/peervisor).
    pub fn default_root() -> PathBuf {
        if is_root() {
            return PathBuf::from(SYSTEM_DATA_DIR);
        }
        Self::user_root()
    }

    /// A user node's data dir, `$XDG_DATA_HOME/peervisor`.
    pub fn user_root() -> PathBuf {
        directories::ProjectDirs::from("", "", "peervisor")
            .map(|d| d.data_dir().to_path_buf())
            .unwrap_or_else(|| std::env::temp_dir().join("peervisor"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local control socket the CLI and an attached console talk to.
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }

    /// The log of a node embedded in the console (`peervisor node` logs to the
    /// journal or stderr instead).
    pub fn embedded_log(&self) -> PathBuf {
        self.root.join("node.log")
    }

    /// The log of a console attached to this dir's node (the console's own
    /// lines: the node's are in its journal or `embedded_log`).
    pub fn console_log(&self) -> PathBuf {
        self.root.join("console.log")
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
        Path::new(SYSTEM_DATA_DIR).join("console")
    } else {
        directories::ProjectDirs::from("", "", "peervisor")
            .map(|d| d.cache_dir().join("console"))
            .unwrap_or_else(|| std::env::temp_dir().join("peervisor-console"))
    }
}

/// The node's `--disk-dir`, set once at start.
static DISK_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes `dir` this process's disk dir (`--disk-dir`); the first call wins.
pub fn set_disk_dir(dir: PathBuf) {
    let _ = DISK_DIR.set(dir);
}

/// Data disks of guests. By default one machine-wide directory, so the peers of a
/// machine share it and migrate data disks without copying them; a peer with a
/// `--disk-dir` of its own is another host's storage, and migrations copy the
/// disks to it (docs/migration.md).
pub fn disk_dir() -> PathBuf {
    if let Some(dir) = DISK_DIR.get() {
        return dir.clone();
    }
    match console_log_dir().parent() {
        Some(parent) => parent.join("disks"),
        None => std::env::temp_dir().join("peervisor-disks"),
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
