//! Who owns a TCP socket on this host's loopback, from the kernel's socket
//! table (/proc/self/net/tcp, this network namespace): a loopback migration
//! (transport.rs) lets only QEMU's user onto its ports, and sends the VM only
//! to a port QEMU's user listens on. Any local user can connect to or listen
//! on a loopback port; a unix socket of ours could be restricted by its mode,
//! a TCP port only by looking at who is at the other end.

/// The kernel's table of this network namespace's IPv4 TCP sockets.
const TCP_TABLE: &str = "/proc/self/net/tcp";

/// 127.0.0.1 as the table writes it (in memory order, hex).
const LOOPBACK_HEX: &str = "0100007F";

/// The socket state LISTEN in the table.
const LISTEN: &str = "0A";

/// The user owning the socket at 127.0.0.1:`local` connected to
/// 127.0.0.1:`remote` (`Some`), or listening there (`None`), in `table`
/// (the text of /proc/net/tcp).
pub fn owner_in(table: &str, local: u16, remote: Option<u16>) -> Option<u32> {
    let local = format!("{LOOPBACK_HEX}:{local:04X}");
    table.lines().skip(1).find_map(|line| {
        // sl local rem st tx:rx tr:when retrnsmt uid ...
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (at, peer, state, uid) = (
            fields.get(1)?,
            fields.get(2)?,
            fields.get(3)?,
            fields.get(7)?,
        );
        let matches = *at == local
            && match remote {
                Some(port) => *peer == format!("{LOOPBACK_HEX}:{port:04X}"),
                None => *state == LISTEN,
            };
        matches.then(|| uid.parse().ok()).flatten()
    })
}

/// Whether a loopback socket of `owner` may carry a VM whose QEMU runs as
/// `qemu_uid`: QEMU's, or root's (libvirtd opens the memory connection itself
/// and hands it to QEMU; root may do anything on the host anyway).
pub fn trusted(owner: Option<u32>, qemu_uid: u32) -> bool {
    matches!(owner, Some(uid) if uid == qemu_uid || uid == 0)
}

/// The user of the local end of a connection from 127.0.0.1:`from` to
/// 127.0.0.1:`to` on this host.
pub fn connection_owner(from: u16, to: u16) -> Option<u32> {
    owner_in(&std::fs::read_to_string(TCP_TABLE).ok()?, from, Some(to))
}

/// The user listening on 127.0.0.1:`port` on this host.
pub fn listener_owner(port: u16) -> Option<u32> {
    owner_in(&std::fs::read_to_string(TCP_TABLE).ok()?, port, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table as Linux 6.1 prints it: QEMU (uid 64055) listening on 40123
    /// and connected from 51000 to 40124; root listening on 22 everywhere.
    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:9CBB 00000000:0000 0A 00000000:00000000 00:00000000 00000000 64055        0 41234 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
   2: 0100007F:C738 0100007F:9CBC 01 00000000:00000000 00:00000000 00000000 64055        0 41235 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:9CBC 0100007F:C738 01 00000000:00000000 00:00000000 00000000     0        0 41236 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn a_loopback_sockets_owner_is_read_from_the_kernels_table() {
        assert_eq!(owner_in(TABLE, 40123, None), Some(64055), "QEMU's listener");
        assert_eq!(
            owner_in(TABLE, 51000, Some(40124)),
            Some(64055),
            "QEMU's connection"
        );
        // The node's own end of that connection is root's.
        assert_eq!(owner_in(TABLE, 40124, Some(51000)), Some(0));
        // No listener on 40124 (only a connected socket); nothing on 40125.
        assert_eq!(owner_in(TABLE, 40124, None), None);
        assert_eq!(owner_in(TABLE, 40125, None), None);
        // A socket on every address is not a loopback one.
        assert_eq!(owner_in(TABLE, 22, None), None);
        assert_eq!(owner_in("", 40123, None), None);
    }

    #[test]
    fn only_qemus_user_or_root_may_carry_the_vm() {
        assert!(trusted(Some(64055), 64055));
        assert!(trusted(Some(0), 64055), "libvirtd connects for QEMU");
        assert!(!trusted(Some(1000), 64055), "another local user");
        assert!(!trusted(None, 64055), "no such socket");
    }

    #[test]
    fn this_processs_own_loopback_sockets_are_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // SAFETY: geteuid(2) has no preconditions.
        let me = unsafe { libc::geteuid() };
        assert_eq!(listener_owner(port), Some(me));
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let from = client.local_addr().unwrap().port();
        assert_eq!(connection_owner(from, port), Some(me));
    }
}
