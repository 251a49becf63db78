//! The jobs a node watches (what `Status.jobs` shows): pollers of Hadoop
//! YARN/MapReduce and Spark REST APIs behind the `JobSource` trait, which turn
//! job counters into throughput time series, a minimal HTTP client for them, and
//! the collector that runs them in the background of a node.

pub mod collector;
pub mod http;
pub mod source;
pub mod spark;
#[cfg(test)]
mod testserver;
pub mod yarn;
