//! Replication's byte path: sparse disk files cut into checksummed chunks
//! (`sparse`), the stream protocol that carries them with the VM's definition
//! (`wire`), both ends of the chunk transfer (`transfer`) and the consistent
//! image of a running VM's disk it reads (`point_in_time`). `migrate/replicate/`
//! drives both ends; `bench/replicate.rs` compares it with rsync.

#[cfg(test)]
pub(crate) mod fuzz;
pub mod point_in_time;
pub mod probe;
pub mod sparse;
pub mod transfer;
pub mod wire;
