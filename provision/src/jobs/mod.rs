//! What the job commands (`submit`, `status`, `logs`, `run-local`) share: picking a job
//! definition from a `JOB` argument, reading jobs back from Batch, and finding what `apply`
//! registered.

pub mod console;
pub mod describe;
pub mod latest;
pub mod list;
pub mod live;
pub mod log_group;
pub mod select;
pub mod shard;
pub mod status;
pub mod tail;
pub mod watch;

use std::process::ExitCode;

use crate::cli::StackArgs;
use crate::stack::Stack;

/// Loads and validates the stack; a bad stack prints its diagnostics and yields exit 1 before
/// any AWS call (docs/design.md, "Command line").
pub fn load_stack(args: &StackArgs) -> Result<Stack, ExitCode> {
    crate::stack::load_args(args).map_err(|diagnostics| {
        eprintln!("{diagnostics}");
        ExitCode::from(1)
    })
}

/// `provision apply --stack F --env E`: the command that creates what a job command found
/// missing, spelled with the user's own stack arguments.
pub fn apply_command(args: &StackArgs) -> String {
    let mut cmd = format!("provision apply --stack {}", args.stack.display());
    if let Some(env) = &args.env {
        cmd.push_str(&format!(" --env {env}"));
    }
    for set in &args.set {
        cmd.push_str(&format!(" --set {set}"));
    }
    cmd
}
