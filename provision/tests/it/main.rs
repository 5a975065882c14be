//! The provision crate's one integration-test binary (one build, one moto server).

mod engine;
mod hardening;
mod harness;
mod joblist;
mod jobs;
mod operations;
mod stack;
mod ui;
