//! `provision status`: where jobs stand, as a table or as JSON (docs/design.md, "submit and
//! status").

use std::io::Write;
use std::process::ExitCode;

use crate::cli::StatusArgs;
use crate::jobs::describe::{self, JobReport};
use crate::jobs::watch;

pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let clients = crate::aws::Clients::from_chain().await?;

    let reports: Vec<JobReport> = if args.watch {
        watch::until_done(clients.batch(), &args.job_ids).await?
    } else {
        describe::describe(clients.batch(), &args.job_ids)
            .await?
            .iter()
            .map(JobReport::from_detail)
            .collect()
    };

    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&reports)?)?;
    } else {
        write!(stdout, "{}", describe::table(&reports))?;
    }
    // Without --watch a listing is not a verdict: a failed job is reported, not an error.
    let failed = args.watch && reports.iter().any(JobReport::failed);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
