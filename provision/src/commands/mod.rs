//! One module per subcommand; `run` dispatches.

use std::process::ExitCode;

use crate::cli::Command;

mod apply;
mod completions;
mod cost;
mod destroy;
pub mod image;
mod import;
mod jobs;
pub(crate) mod logs;
mod output;
mod plan;
mod run_local;
mod state;
mod status;
mod submit;
mod ui;
mod upload;
mod validate;

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate(args) => validate::run(args).await,
        Command::Plan(args) => plan::run(args).await,
        Command::Apply(args) => apply::run(args).await,
        Command::Destroy(args) => destroy::run(args).await,
        Command::Output(args) => output::run(args).await,
        Command::State(args) => state::run(args).await,
        Command::Submit(args) => submit::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Logs(args) => logs::run(args).await,
        Command::RunLocal(args) => run_local::run(args).await,
        Command::Completions(args) => completions::run(args),
        Command::Image(args) => image::run(args).await,
        Command::Upload(args) => upload::run(args).await,
        Command::Cost(args) => cost::run(args).await,
        Command::Import(args) => import::run(args).await,
        Command::Jobs(args) => jobs::run(args).await,
        Command::Ui(args) => ui::run(args).await,
    }
}

/// Prints an error and its causes on stderr (stdout stays parseable): the printer both binaries
/// share.
pub fn report(err: &anyhow::Error) {
    ::report::error(err)
}
