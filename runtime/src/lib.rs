//! The `runtime` library: everything the binary does, so integration tests can reach it.

// In the library, so the binary, the examples and the tests all run on the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod cli;
pub mod commands;
pub mod exit;
pub mod fanout;
pub mod features;
pub mod io;
pub mod train;
