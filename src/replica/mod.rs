//! Replication's byte path: sparse disk files cut into checksummed chunks
//! (`sparse`), the stream protocol that carries them with the VM's definition
//! (`wire`) and both ends of the chunk transfer (`transfer`). The runtime (`runtime/replicate.rs`) drives both ends; `bench`
//! compares it with rsync.

pub mod bench;
pub mod sparse;
pub mod transfer;
pub mod wire;
