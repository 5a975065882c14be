//! The provision crate's one integration-test binary (one build, one moto server).

mod harness;
mod jobs;
mod stack;
