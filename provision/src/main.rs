//! `provision`: plan, apply and destroy AWS Batch ML stacks; submit and watch their jobs.

use std::process::ExitCode;

use clap::Parser;
use provision::{cli, commands};

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // Every bad flag is exit 1 (docs/design.md, "Exit codes").
        Err(err) => return report::command_line(err),
    };
    if cli.command.uses_aws() {
        provision::aws::preload_tls_roots();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROVISION_LOG")
                // aws-config warns about each credential source that fails; the error that
                // follows says what matters once (aws::check_access).
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,aws_config=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    // A plan reads every resource at once, so its future is deep; `provision ui` runs it on
    // worker threads, whose default 2 MiB stack a debug build overflows. 8 MiB, as the main
    // thread has.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(8 << 20)
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            report::error(&err);
            ExitCode::from(1)
        }
    }
}
