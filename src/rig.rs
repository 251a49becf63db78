//! What the demo and the benchmarks share to run peervisor on this machine: the
//! guest image built if it is missing, free loopback ports, child processes
//! stopped (SIGTERM, then SIGKILL), the tail of a node's log.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub async fn ensure_image(image_dir: &Path) -> Result<()> {
    let dir = image_dir.to_path_buf();
    if crate::image::find(&dir, crate::image::DEFAULT_IMAGE).is_ok() {
        return Ok(());
    }
    eprintln!("demo: building the guest image (once)…");
    let report = tokio::task::spawn_blocking(move || {
        crate::image::build(
            &dir,
            &crate::image::ImageSpec {
                name: crate::image::DEFAULT_IMAGE.into(),
            },
            &mut |step| eprintln!("  {step}"),
        )
    })
    .await??;
    eprintln!("demo: image ready in {:.1} s", report.seconds);
    Ok(())
}

/// SIGTERM (peers then destroy their VMs and stop their daemons), then wait up
/// to 30 s before SIGKILL.
pub fn terminate_and_wait(pids: &[u32]) {
    for &pid in pids {
        // SAFETY: plain kill(2) on a pid we started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for &pid in pids {
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if process_alive(pid) {
            // SAFETY: as above.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

fn process_alive(pid: u32) -> bool {
    // A zombie child counts as gone: reap it if it is ours.
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on a pid; harmless if it is not our child.
    let reaped = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
    if reaped == pid as i32 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .context("finding free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

pub fn log_tail(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
