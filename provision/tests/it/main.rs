//! The provision crate's one integration-test binary (one build, one moto server).

mod addresses;
mod bucket_conflicts;
mod common;
mod delivery;
mod engine;
mod hardening;
mod harness;
mod joblist;
mod jobs;
mod latency;
mod operations;
mod operations_logs;
mod read_ahead;
mod snapshots;
mod stack;
mod state_table;
mod ui;
