//! The runtime crate's one integration-test binary.

mod data;
mod snapshots;
mod train;
