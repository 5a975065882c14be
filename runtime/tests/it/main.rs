//! The runtime crate's one integration-test binary.

mod common;
mod data;
mod operations;
mod shard;
mod snapshots;
mod train;
