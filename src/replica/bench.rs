//! `peervisor bench replicate` (in progress).
