//! One module per subcommand.

use std::process::ExitCode;

use crate::cli::Command;

mod collect;
pub(crate) mod generate;
mod prepare;
mod train;

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Generate(args) => generate::run(args),
        Command::Prepare(args) => prepare::run(args),
        Command::Train(args) => train::run(args),
        Command::Collect(args) => collect::run(args),
    }
}
