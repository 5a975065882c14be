use std::process::ExitCode;

use crate::cli::CollectArgs;

// UNFINISHED(skeleton): replaced by the issue that builds this command.
pub fn run(_args: CollectArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this command is not built yet")
}
