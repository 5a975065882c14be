//! The `provision` library: everything the binary does, so integration tests can reach it.

pub mod aws;
pub mod cli;
pub mod commands;
pub mod jobs;
pub mod stack;
