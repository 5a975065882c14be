//! The stack file: load (spans, overlays, `--set`), the typed model, validation, derived names.

pub mod model;
pub mod names;

pub use model::*;
