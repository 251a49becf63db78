//! Moving VMs between peers: live migration over the overlay (both ends, the
//! tunnel and data channels, the data disks it copies, the service gap it
//! causes, a paused source resolved), replication (both ends, and its byte path
//! in `replica/`), and the on-demand provision policy that replicates busy VMs;
//! what this host lends to incoming VMs (`capacity.rs`) and the running and
//! recent operations (`operations.rs`).

pub mod capacity;
pub mod diskmig;
pub mod downtime;
pub mod incoming;
pub mod operations;
pub mod outgoing;
pub mod paused_source;
pub mod provision;
pub mod replica;
pub mod replicate;
pub mod tunnel;
