use std::process::ExitCode;

use crate::cli::SubmitArgs;

// UNFINISHED(skeleton): replaced by the issue that builds this command.
pub async fn run(_args: SubmitArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this command is not built yet")
}
