//! Benchmark sources: the virtualization-penalty benchmark, and pollers of
//! Hadoop YARN/MapReduce and Spark REST APIs that turn job counters into
//! throughput time series.

pub mod collector;
mod consumer;
pub mod http;
pub mod load;
pub mod migrate;
pub mod penalty;
pub mod proxy;
pub mod replica_pause;
pub mod replicate;
pub mod source;
pub mod spark;
pub mod stats;
#[cfg(test)]
mod testserver;
pub mod yarn;
