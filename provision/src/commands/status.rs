//! `provision status`: where jobs stand, as a table or as JSON (docs/design.md, "submit and
//! status"), with a link into the AWS console for each job and its log stream.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;

use aws_sdk_batch::types::JobDetail;
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::jobs::describe::{self, JobReport};
use crate::jobs::{console, log_group, watch};

/// One element of `status --json`: the report's fields, then the console links.
#[derive(Serialize)]
struct StatusLine<'a> {
    #[serde(flatten)]
    report: &'a JobReport,
    /// The job's page in the Batch console.
    console_url: String,
    /// Its log stream's page in the CloudWatch console; `None` before the job runs.
    log_url: Option<String>,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let clients = crate::aws::Clients::from_chain().await?;
    let batch = clients.batch();

    if args.watch {
        watch::until_done(batch, &args.job_ids).await?;
    }
    // Read once more after a watch: the details hold the streams and groups the links need.
    let jobs = describe::describe(batch, &args.job_ids).await?;
    let reports: Vec<JobReport> = jobs.iter().map(JobReport::from_detail).collect();
    let region = clients
        .config
        .region()
        .map(|r| r.to_string())
        .unwrap_or_default();
    let links = links(batch, &jobs, &region).await;
    let lines: Vec<StatusLine> = reports
        .iter()
        .zip(links)
        .map(|(report, (console_url, log_url))| StatusLine {
            report,
            console_url,
            log_url,
        })
        .collect();

    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&lines)?)?;
    } else {
        write!(stdout, "{}", describe::table(&reports))?;
        writeln!(stdout)?;
        for line in &lines {
            writeln!(stdout, "{} job:  {}", line.report.job_id, line.console_url)?;
            if let Some(log_url) = &line.log_url {
                writeln!(stdout, "{} logs: {log_url}", line.report.job_id)?;
            }
        }
    }
    // Without --watch a listing is not a verdict: a failed job is reported, not an error.
    let failed = args.watch && reports.iter().any(JobReport::failed);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Each job's console link and, when it has a log stream, its stream's link. The group comes
/// from the job's details, else its job definition (one read per distinct definition); a job
/// whose group cannot be told gets no log link rather than failing the listing.
async fn links(
    batch: &aws_sdk_batch::Client,
    jobs: &[JobDetail],
    default_region: &str,
) -> Vec<(String, Option<String>)> {
    let mut groups: HashMap<Option<String>, Option<String>> = HashMap::new();
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let region = job
            .job_arn()
            .and_then(console::region_of_arn)
            .unwrap_or(default_region);
        let job_id = job.job_id().unwrap_or_default();
        // An array parent runs no container: its children have the streams.
        let parent = job.array_properties().is_some_and(|a| a.index().is_none());
        let log_url = match describe::log_stream(job).filter(|_| !parent) {
            Some(stream) => {
                let key = job.job_definition().map(str::to_string);
                let group = match groups.get(&key) {
                    Some(group) => group.clone(),
                    None => {
                        let group = log_group::of_job(batch, job).await.ok();
                        groups.insert(key, group.clone());
                        group
                    }
                };
                group.map(|g| console::log_stream_url(region, &g, stream))
            }
            None => None,
        };
        out.push((console::job_url(region, job_id), log_url));
    }
    out
}
