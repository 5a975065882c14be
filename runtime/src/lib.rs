//! The `runtime` library: everything the binary does, so integration tests can reach it.

pub mod cli;
pub mod commands;
pub mod fanout;
pub mod features;
pub mod io;
pub mod train;
