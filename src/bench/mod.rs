//! `peervisor bench ...`: every benchmark command and its rig, each measuring
//! its baseline in the same run. Nothing here runs inside a node.

pub mod boot;
pub mod load;
pub mod migrate;
pub mod penalty;
pub mod proxy;
pub mod replica_pause;
pub mod replicate;
pub mod stats;
