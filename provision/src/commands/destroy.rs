use std::process::ExitCode;

use crate::cli::DestroyArgs;

// UNFINISHED(skeleton): replaced by the issue that builds this command.
pub async fn run(_args: DestroyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this command is not built yet")
}
