//! A VM's boot log: the file its serial console is logged to on this host
//! (QEMU appends to it, `<log file=...>` in the domain), read from its end:
//! at most `BOOT_LOG_TAIL` bytes, whatever the file's size.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result};

use crate::api::{BOOT_LOG_TAIL, BootLog};
use crate::names::VmName;
use crate::paths::console_log_dir;

/// The end of `vm`'s boot log here (`host`: this peer's nickname, for the reader).
pub async fn read(vm: &VmName, host: &str) -> Result<BootLog> {
    let path = console_log_dir().join(format!("{vm}.log"));
    let (vm, host) = (vm.clone(), host.to_string());
    tokio::task::spawn_blocking(move || {
        let (size, text) = read_tail(&path, BOOT_LOG_TAIL)
            .with_context(|| format!("boot log of {vm} on {host}: {}", path.display()))?;
        Ok(BootLog {
            vm,
            host,
            path: path.display().to_string(),
            size,
            text,
        })
    })
    .await?
}

/// The file's size and its last `max` bytes as text, starting at a line
/// when it was cut.
fn read_tail(path: &Path, max: u64) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let start = size.saturating_sub(max);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    // The guest may write on while we read: still no more than `max`.
    file.take(max).read_to_end(&mut bytes)?;
    if start > 0
        && let Some(newline) = bytes.iter().position(|b| *b == b'\n')
    {
        bytes.drain(..=newline);
    }
    Ok((size, String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_log_is_read_from_its_end_starting_at_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-1.log");
        let lines: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &lines).unwrap();
        let (size, text) = read_tail(&path, 1000).unwrap();
        assert_eq!(size, lines.len() as u64);
        assert!(text.len() <= 1000, "{}", text.len());
        assert!(text.starts_with("line "), "{text:?}");
        assert!(text.ends_with("line 9999\n"), "{text:?}");
        // A small one whole.
        std::fs::write(&path, "Linux version 6.1\nready\n").unwrap();
        let (size, text) = read_tail(&path, 1000).unwrap();
        assert_eq!((size, text.as_str()), (24, "Linux version 6.1\nready\n"));
    }

    #[test]
    fn a_missing_log_is_not_found() {
        let err = read_tail(Path::new("/nonexistent/web-1.log"), 10).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
