//! The runtime crate's one integration-test binary.

mod data;
mod shard;
mod train;
