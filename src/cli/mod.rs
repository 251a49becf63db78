//! The command line: its arguments (`args`), the commands a client runs against
//! a node's control socket, their plain-text output, and `peervisor demo`.

mod args;
pub mod demo;
pub mod top;

pub use args::*;
