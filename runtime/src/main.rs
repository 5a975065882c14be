//! `runtime`: what runs inside the Batch jobs.

use std::process::ExitCode;

use clap::Parser;
use runtime::{cli, commands, exit};

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return report::command_line(err),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNTIME_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            report::error(&err);
            exit::code(&err)
        }
    }
}
