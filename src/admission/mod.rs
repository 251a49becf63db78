//! Whether another peer's request or stream is let in: the role the operator
//! gave it here (`access.rs`: observe, consume, control) and how often and how
//! much it may ask (`limits.rs`: per-peer rates, open streams, the open-file
//! limit). Every feature that answers other peers checks here first.

pub mod access;
pub mod limits;
