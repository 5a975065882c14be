//! The `provision` library: everything the binary does, so integration tests can reach it.

pub mod adopt;
pub mod aws;
pub mod cli;
pub mod commands;
pub mod cost;
pub mod engine;
pub mod image;
pub mod jobs;
pub mod resources;
pub mod stack;
pub mod state;
pub mod ui;
