use std::process::ExitCode;

use crate::cli::RunLocalArgs;

// UNFINISHED(skeleton): replaced by the issue that builds this command.
pub async fn run(_args: RunLocalArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this command is not built yet")
}
