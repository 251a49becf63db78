//! Benchmark sources: the virtualization-penalty benchmark, and pollers of
//! Hadoop YARN/MapReduce and Spark REST APIs that turn job counters into
//! throughput time series.

pub mod collector;
mod consumer;
pub mod http;
pub mod migrate;
pub mod penalty;
pub mod replica_pause;
pub mod source;
pub mod spark;
#[cfg(test)]
mod testserver;
pub mod yarn;
