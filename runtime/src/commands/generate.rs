use std::process::ExitCode;

use crate::cli::GenerateArgs;

// UNFINISHED(skeleton): replaced by the issue that builds this command.
pub fn run(_args: GenerateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this command is not built yet")
}
