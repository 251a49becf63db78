//! A child subreaper between the node and its private libvirtd.
//!
//! libvirtd daemonizes every QEMU it starts (double fork), so whoever adopts
//! orphans becomes the QEMU's parent: PID 1, or the nearest ancestor marked as a
//! child subreaper. To stop a QEMU (a migration's confirm step, a VM's destroy),
//! libvirt sends SIGTERM and then polls `kill(pid, 0)` every 200 ms until it
//! fails, which happens only once the exited QEMU has been reaped. Where PID 1
//! reaps lazily that wait is PID 1's: on this project's machines about every 2 s
//! (which made every migration's total time 2.0 or 3.0 s, docs/migration.md); in
//! a container whose PID 1 never reaps, libvirt's whole 15 s kill budget.
//!
//! So the node starts libvirtd under this process: the `peervisor` binary run
//! again with [`REAPER_ARG`] first, which marks itself a child subreaper, runs
//! the rest of its arguments as a command, passes termination signals on to it,
//! reaps every process that ends up as its child, and ends as the command ends.

use std::ffi::{OsStr, OsString};
use std::process::Command;

/// First argument that makes `peervisor` this reaper (before clap sees it).
pub const REAPER_ARG: &str = "--internal-reap-children";

/// Signals passed on to the command (termination requests).
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// `Command` that runs `program` under the reaper (this binary).
pub fn command(program: &OsStr) -> std::io::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg(REAPER_ARG).arg(program);
    Ok(cmd)
}

/// Called first thing in `main`: when this process was started as the reaper,
/// runs it and returns the exit code to end with.
pub fn run_if_asked() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(REAPER_ARG)) {
        return None;
    }
    let command: Vec<OsString> = args.collect();
    Some(match run(&command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("peervisor reaper: {e}");
            127
        }
    })
}

fn run(command: &[OsString]) -> std::io::Result<i32> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| std::io::Error::other("no command to run"))?;
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Blocked before the child exists, so no SIGCHLD or SIGTERM is missed; the
    // child starts with an empty mask (std's spawn resets it).
    let waited = signal_set(&FORWARDED, libc::SIGCHLD)?;
    // SAFETY: a valid set; this process has one thread.
    if unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &waited, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let child = Command::new(program).args(args).spawn()?;
    let child = child.id() as libc::pid_t;
    loop {
        // SAFETY: a valid set; a null siginfo pointer is allowed.
        let signal = unsafe { libc::sigwaitinfo(&waited, std::ptr::null_mut()) };
        if signal < 0 {
            continue; // EINTR
        }
        if signal != libc::SIGCHLD {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(child, signal) };
            continue;
        }
        // Reap everything that has ended: the command, adopted QEMUs, probes.
        loop {
            let mut status = 0;
            // SAFETY: waitpid on any child, non-blocking, with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == child {
                return Ok(end_like(status));
            }
        }
    }
}

/// The set of `signals` plus `extra`.
fn signal_set(signals: &[libc::c_int], extra: libc::c_int) -> std::io::Result<libc::sigset_t> {
    // SAFETY: sigemptyset initializes the set before it is read.
    let mut set = unsafe { std::mem::zeroed::<libc::sigset_t>() };
    // SAFETY: `set` is a valid sigset_t; the signals are valid numbers.
    unsafe {
        libc::sigemptyset(&mut set);
        for &s in signals.iter().chain([&extra]) {
            if libc::sigaddset(&mut set, s) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(set)
}

/// Ends as the command did: its exit code, or the signal that killed it.
fn end_like(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        return libc::WEXITSTATUS(status);
    }
    let signal = libc::WTERMSIG(status);
    // SAFETY: back to the default action, unblocked, then raised on ourselves,
    // so our parent sees the same signal death.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        if let Ok(set) = signal_set(&[], signal) {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
        libc::raise(signal);
    }
    128 + signal
}
