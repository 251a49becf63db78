//! Which way a live migration's data goes, decided per VM at its source: our
//! direct channels (QEMU connects to unix sockets this node owns, each carried
//! on its own overlay stream) when the VM's QEMU can reach them, else libvirt's
//! tunnelled migration (the data inside libvirtd's RPC connection, which the
//! overlay carries as before), or, for a VM with disks to copy that would go
//! tunnelled (libvirt copies no disk that way), loopback TCP ports on both
//! hosts bridged over the overlay. Only the source's QEMU connects to one of
//! our sockets: at the destination this node connects to QEMU's.
//!
//! A QEMU confined by AppArmor (libvirt's per-VM `libvirt-UUID` profile on
//! Debian/Ubuntu) may not connect to sockets outside what its profile lists;
//! one running as another user (libvirt-qemu with the host's system daemon)
//! cannot connect to a root-owned socket unless it is handed over to that user,
//! which this node does when it runs as root.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The operator's choice (`peervisor node --migration-transport`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportChoice {
    /// Direct when the VM's QEMU can reach our sockets, tunnelled otherwise.
    #[default]
    Auto,
    /// Always our direct channels (fails if QEMU cannot reach them).
    Direct,
    /// Always libvirt's tunnelled migration.
    Tunnelled,
}

/// The way one migration's data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Direct,
    Tunnelled,
    /// For a VM with disks to copy where it would be tunnelled (libvirt
    /// copies no disk inside its own connection): QEMU's memory and disk
    /// streams go to loopback TCP ports (which a confined QEMU may use) that
    /// this node carries over the overlay.
    Loopback,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Direct => "direct",
            Transport::Tunnelled => "tunnelled",
            Transport::Loopback => "loopback",
        }
    }
}

/// What decides whether the VM's QEMU can reach a unix socket this node makes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QemuReach {
    /// The user the VM's QEMU runs as (None: unknown, e.g. no pid file).
    pub qemu_uid: Option<u32>,
    /// Its security label (`/proc/PID/attr/current`), e.g.
    /// `libvirt-6f1c… (enforce)` or `unconfined`; None without an LSM label.
    pub label: Option<String>,
    /// The user this node runs as: its sockets' owner.
    pub node_uid: u32,
    /// QEMU runs in this node's network namespace: their loopback is one
    /// (`with_disks`).
    pub on_our_loopback: bool,
}

/// What a daemon's capabilities say of the QEMU it starts: its user (the DAC
/// base label, `+UID:+GID`) and a security driver that confines it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DaemonSecurity {
    pub qemu_uid: Option<u32>,
    /// `apparmor` or `selinux` when libvirt confines its QEMUs with it.
    pub confining_model: Option<String>,
}

/// Reads `DaemonSecurity` from `virsh capabilities` XML (`<secmodel>` blocks).
pub fn daemon_security(capabilities: &str) -> DaemonSecurity {
    let mut security = DaemonSecurity::default();
    for block in capabilities.split("<secmodel>").skip(1) {
        let block = block.split("</secmodel>").next().unwrap_or("");
        let model = between(block, "<model>", "</model>").unwrap_or("").trim();
        if ["apparmor", "selinux"].contains(&model) {
            security.confining_model = Some(model.to_string());
        }
        if model == "dac" {
            // <baselabel type='qemu'>+64055:+994</baselabel> (or type='kvm').
            security.qemu_uid = block
                .split("<baselabel")
                .skip(1)
                .filter_map(|b| between(b, ">", "</baselabel>"))
                .find_map(|label| {
                    let uid = label.trim().split(':').next()?;
                    uid.trim_start_matches('+').parse().ok()
                });
        }
    }
    security
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// The transport, and why, in words for the operation, the log and `status`.
/// `dest_confined`: the destination's reason its QEMU cannot use direct
/// channels (its own daemon confines QEMU), if it gave one.
pub fn decide(
    choice: TransportChoice,
    reach: &QemuReach,
    dest_confined: Option<&str>,
) -> (Transport, String) {
    match choice {
        TransportChoice::Direct => {
            return (Transport::Direct, "forced by --migration-transport".into());
        }
        TransportChoice::Tunnelled => {
            return (
                Transport::Tunnelled,
                "forced by --migration-transport".into(),
            );
        }
        TransportChoice::Auto => {}
    }
    if let Some(why) = dest_confined {
        return (Transport::Tunnelled, why.to_string());
    }
    if let Some(label) = reach.label.as_deref().filter(|l| confining(l)) {
        return (
            Transport::Tunnelled,
            format!("QEMU is confined ({label}): it may not connect to this node's sockets"),
        );
    }
    match reach.qemu_uid {
        None => (
            Transport::Tunnelled,
            "QEMU's user is unknown (no pid file of the VM)".into(),
        ),
        Some(uid) if uid == reach.node_uid => (
            Transport::Direct,
            format!("QEMU runs as this node's user (uid {uid})"),
        ),
        Some(uid) if reach.node_uid == 0 => (
            Transport::Direct,
            format!("QEMU runs as uid {uid}, unconfined: its sockets are handed to that user"),
        ),
        Some(uid) => (
            Transport::Tunnelled,
            format!(
                "QEMU runs as uid {uid}, this node as uid {}: it cannot hand its sockets over",
                reach.node_uid
            ),
        ),
    }
}

/// An LSM label that confines: AppArmor's `NAME (enforce)` (a `(complain)`
/// profile only logs) or an SELinux context other than unconfined.
fn confining(label: &str) -> bool {
    let label = label.trim();
    if label.is_empty() || label == "unconfined" || label.ends_with("(complain)") {
        return false;
    }
    !label.contains("unconfined_t")
}

/// Reads what `decide` needs about the VM whose QEMU writes its pid to `pid_file`
/// (`<daemon run dir>/qemu/NAME.pid`).
pub fn qemu_reach(pid_file: &Path) -> QemuReach {
    // SAFETY: geteuid(2) has no preconditions.
    let node_uid = unsafe { libc::geteuid() };
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    let Some(pid) = pid else {
        return QemuReach {
            node_uid,
            ..QemuReach::default()
        };
    };
    let proc = Path::new("/proc").join(pid.to_string());
    // The effective uid (Uid: real effective saved fs); /proc/PID's owner is
    // root for a process that is not dumpable.
    let qemu_uid = std::fs::read_to_string(proc.join("status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2)?.parse().ok()
        });
    let label = std::fs::read_to_string(proc.join("attr/current"))
        .ok()
        .map(|l| l.trim_matches(char::from(0)).trim().to_string())
        .filter(|l| !l.is_empty());
    QemuReach {
        qemu_uid,
        label,
        node_uid,
        on_our_loopback: shares_our_netns(Some(pid)),
    }
}

/// The transport once the disks are counted: a tunnelled migration with
/// `copies` disks to copy becomes a loopback one (libvirt 9.0 fails it:
/// "argument key 'host' must not have null value", its destination starts the
/// NBD server on no address; later versions refuse it outright), on the ports the destination offered (`dest_ports`: memory, disks;
/// None: it did not: an older peer, or its QEMU is in another network
/// namespace than its node) when the source's QEMU shares this node's
/// loopback; or why it cannot move. Returns the transport and, when it
/// changed, why.
pub fn with_disks(
    transport: Transport,
    copies: usize,
    dest_ports: Option<[u16; 2]>,
    qemu_on_our_loopback: bool,
) -> Result<(Transport, Option<String>), String> {
    if copies == 0 || transport != Transport::Tunnelled {
        return Ok((transport, None));
    }
    let cannot = format!(
        "it would go tunnelled, and libvirt copies no disk inside its own connection ({copies} to copy)"
    );
    match (dest_ports, qemu_on_our_loopback) {
        (Some(_), true) => Ok((
            Transport::Loopback,
            Some(
                "libvirt copies no disk inside its own connection: QEMU's memory and disk \
                 streams go to loopback ports this node carries over the overlay"
                    .into(),
            ),
        )),
        (None, _) => Err(format!(
            "{cannot}, and the destination offered no loopback ports (an older peervisor, or its QEMU runs in another network namespace than its node)"
        )),
        (Some(_), false) => Err(format!(
            "{cannot}, and this host's QEMU runs in another network namespace than this node: it cannot reach the node's loopback"
        )),
    }
}

/// The network namespace of a process (`/proc/PID/ns/net`'s inode; "self" for
/// this one), None when unreadable.
pub fn netns_of(pid: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// Whether the process whose pid is in `pid_file` shares this node's network
/// namespace.
pub fn shares_our_netns(pid: Option<u32>) -> bool {
    let theirs = pid.and_then(|p| netns_of(&p.to_string()));
    theirs.is_some() && theirs == netns_of("self")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(qemu_uid: Option<u32>, label: Option<&str>, node_uid: u32) -> QemuReach {
        QemuReach {
            qemu_uid,
            label: label.map(String::from),
            node_uid,
            on_our_loopback: true,
        }
    }

    #[test]
    fn auto_goes_direct_only_when_qemu_can_reach_our_sockets() {
        let auto = |r: &QemuReach| decide(TransportChoice::Auto, r, None).0;
        // A private daemon: QEMU as root, like the node.
        assert_eq!(auto(&reach(Some(0), None, 0)), Transport::Direct);
        assert_eq!(
            auto(&reach(Some(0), Some("unconfined"), 0)),
            Transport::Direct
        );
        // The system daemon, QEMU as libvirt-qemu, no AppArmor: sockets handed over.
        assert_eq!(auto(&reach(Some(64055), None, 0)), Transport::Direct);
        // A node not running as root cannot hand its sockets to another user.
        assert_eq!(auto(&reach(Some(64055), None, 1000)), Transport::Tunnelled);
        // AppArmor enforcing libvirt's per-VM profile: tunnelled, whoever owns what.
        let profile = "libvirt-6f1c0d1e-0000-4000-8000-000000000001 (enforce)";
        assert_eq!(
            auto(&reach(Some(0), Some(profile), 0)),
            Transport::Tunnelled
        );
        assert_eq!(
            auto(&reach(Some(64055), Some(profile), 0)),
            Transport::Tunnelled
        );
        // A profile in complain mode only logs.
        let complain = "libvirt-6f1c0d1e-0000-4000-8000-000000000001 (complain)";
        assert_eq!(
            auto(&reach(Some(64055), Some(complain), 0)),
            Transport::Direct
        );
        // SELinux: svirt confines, an unconfined context does not.
        assert_eq!(
            auto(&reach(
                Some(107),
                Some("system_u:system_r:svirt_t:s0:c1,c2"),
                0
            )),
            Transport::Tunnelled
        );
        assert_eq!(
            auto(&reach(
                Some(0),
                Some("unconfined_u:unconfined_r:unconfined_t:s0"),
                0
            )),
            Transport::Direct
        );
        // Nothing known of QEMU: the way that needs nothing of it.
        assert_eq!(auto(&reach(None, None, 0)), Transport::Tunnelled);
    }

    #[test]
    fn the_operator_override_wins_and_every_decision_says_why() {
        let profile = Some("libvirt-x (enforce)");
        let (t, why) = decide(
            TransportChoice::Direct,
            &reach(Some(64055), profile, 0),
            None,
        );
        assert_eq!(t, Transport::Direct);
        assert!(why.contains("--migration-transport"), "{why}");
        let (t, why) = decide(TransportChoice::Tunnelled, &reach(Some(0), None, 0), None);
        assert_eq!(t, Transport::Tunnelled);
        assert!(why.contains("--migration-transport"), "{why}");
        let (_, why) = decide(TransportChoice::Auto, &reach(Some(0), profile, 0), None);
        assert!(why.contains("libvirt-x (enforce)"), "{why}");
        let (_, why) = decide(TransportChoice::Auto, &reach(Some(64055), None, 0), None);
        assert!(why.contains("uid 64055"), "{why}");
        // The destination's confinement counts too: the pair decides.
        let dest = "host-b's libvirt confines QEMU (apparmor)";
        let (t, why) = decide(TransportChoice::Auto, &reach(Some(0), None, 0), Some(dest));
        assert_eq!(t, Transport::Tunnelled);
        assert_eq!(why, dest);
        let (t, _) = decide(
            TransportChoice::Direct,
            &reach(Some(0), None, 0),
            Some(dest),
        );
        assert_eq!(t, Transport::Direct, "the operator's word wins");
    }

    #[test]
    fn a_daemons_qemu_user_and_confinement_come_from_its_capabilities() {
        let stock = "<capabilities><host><secmodel>\n<model>none</model>\n<doi>0</doi>\n</secmodel>\n\
            <secmodel>\n<model>dac</model>\n<doi>0</doi>\n\
            <baselabel type='kvm'>+64055:+994</baselabel>\n\
            <baselabel type='qemu'>+64055:+994</baselabel>\n</secmodel></host></capabilities>";
        assert_eq!(
            daemon_security(stock),
            DaemonSecurity {
                qemu_uid: Some(64055),
                confining_model: None
            }
        );
        let armored = "<secmodel><model>apparmor</model><doi>0</doi></secmodel>\
            <secmodel><model>dac</model><baselabel type='qemu'>+0:+0</baselabel></secmodel>";
        assert_eq!(
            daemon_security(armored),
            DaemonSecurity {
                qemu_uid: Some(0),
                confining_model: Some("apparmor".into())
            }
        );
        assert_eq!(
            daemon_security("<capabilities/>"),
            DaemonSecurity::default()
        );
    }

    #[test]
    fn a_tunnelled_vm_with_disks_to_copy_goes_over_the_loopback_when_both_ends_can() {
        use Transport::{Direct, Loopback, Tunnelled};
        let ports = Some([40123, 40124]);
        // Nothing to copy, or direct: unchanged.
        assert_eq!(with_disks(Tunnelled, 0, None, false), Ok((Tunnelled, None)));
        assert_eq!(with_disks(Direct, 2, ports, true), Ok((Direct, None)));
        assert_eq!(with_disks(Direct, 1, None, false), Ok((Direct, None)));
        // Tunnelled with disks: the loopback ports, and it says why.
        let (t, why) = with_disks(Tunnelled, 2, ports, true).unwrap();
        assert_eq!(t, Loopback);
        assert!(why.unwrap().contains("loopback ports"));
        // A destination that offered no ports (older peer, QEMU elsewhere).
        let why = with_disks(Tunnelled, 1, None, true).unwrap_err();
        assert!(
            why.contains("no disk inside its own connection (1 to copy)")
                && why.contains("offered no loopback ports"),
            "{why}"
        );
        // Our QEMU in another network namespace (a private daemon's).
        let why = with_disks(Tunnelled, 1, ports, false).unwrap_err();
        assert!(why.contains("another network namespace"), "{why}");
    }

    #[test]
    fn network_namespaces_are_told_apart() {
        assert!(netns_of("self").is_some());
        assert!(shares_our_netns(Some(std::process::id())));
        assert!(!shares_our_netns(None));
        assert!(!shares_our_netns(Some(u32::MAX)), "no such process");
    }

    #[test]
    fn reach_is_read_from_the_qemu_process() {
        let dir = tempfile::tempdir().unwrap();
        let missing = qemu_reach(&dir.path().join("none.pid"));
        assert_eq!(missing.qemu_uid, None);
        // This test process stands in for QEMU.
        let pid_file = dir.path().join("vm.pid");
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        let me = qemu_reach(&pid_file);
        // SAFETY: geteuid(2) has no preconditions.
        let uid = unsafe { libc::geteuid() };
        assert_eq!(me.qemu_uid, Some(uid));
        assert_eq!(me.node_uid, uid);
        assert!(me.on_our_loopback, "this test shares its own netns");
        assert!(!missing.on_our_loopback);
    }
}
