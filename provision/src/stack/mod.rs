//! The stack file: load (spans, overlays, `--set`), the typed model, validation, derived names.

mod diag;
mod load;
pub mod model;
pub mod names;
mod schema;
mod set;
mod tree;
mod validate;

pub use diag::{Diagnostic, Diagnostics, Location};
pub use model::*;
pub use validate::RETENTION_DAYS;
pub use validate::TAG as IMAGE_TAG;

/// Reads, resolves and validates a stack file (docs/design.md, "Resolution order"): the
/// `[env.NAME]` overlay when `env` is given, then `--set gpu`/`--set protect`, the GPU overlays,
/// every other `--set`. Every error is collected, each located at the line (or argument) that
/// supplied the value. No network call.
pub fn load(
    path: &std::path::Path,
    env: Option<&str>,
    sets: &[String],
) -> Result<Stack, Diagnostics> {
    load::load(path, env, sets)
}

/// [`load`] with the command line's `--stack`, `--env` and `--set`.
pub fn load_args(args: &crate::cli::StackArgs) -> Result<Stack, Diagnostics> {
    load(&args.stack, args.env.as_deref(), &args.set)
}
