use std::process::ExitCode;

use crate::cli::PrepareArgs;

// UNFINISHED(skeleton): replaced by the issue that builds this command.
pub fn run(_args: PrepareArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this command is not built yet")
}
