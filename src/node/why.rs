//! Why a connection failed, said plainly: the causes libp2p's wrappers hide,
//! a key mismatch named as such, and the remote address's IP (the key of
//! per-address logging limits).

use libp2p::Multiaddr;

/// The handshake names a wrong network key itself (membership.rs); nothing
/// else is a sign of one, so nothing else hints at it.
pub(super) fn explain_dial_error(who: &str, error: &str) -> String {
    if error.contains("network key mismatch") {
        // The nested libp2p wrappers add nothing to that.
        return format!("cannot connect to {who}: network key mismatch");
    }
    format!("cannot connect to {who}: {error}")
}

/// An error with its causes: libp2p's outer errors ("Failed to negotiate
/// transport protocol(s)") hide the handshake's own reason one level down.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// The IP address a multiaddr starts with (the key of per-address limits).
pub(super) fn remote_ip(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(ip.into()),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}
