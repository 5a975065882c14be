//! `provision logs`: a job's CloudWatch log stream, found from the job itself (the stream name
//! Batch reports, the group its job definition logs to).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use aws_sdk_batch::types::{JobDetail, LogConfiguration};

use crate::cli::LogsArgs;
use crate::jobs::{describe, live};

/// Where Batch's awslogs driver writes when a job definition names no group.
const DEFAULT_LOG_GROUP: &str = "/aws/batch/job";

pub async fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let clients = crate::aws::Clients::from_chain().await?;
    let batch = clients.batch();
    let id = std::slice::from_ref(&args.job_id);
    let mut job = describe::describe(batch, id).await?.remove(0);

    if let Some(array) = job.array_properties().filter(|a| a.index().is_none()) {
        let size = array.size().unwrap_or_default();
        anyhow::bail!(
            "job {} is an array job of {size} children and has no log of its own: each child \
             logs to its own stream, e.g. `provision logs {}:0`",
            args.job_id,
            args.job_id
        );
    }
    let group = log_group(batch, &job).await?;

    // A stream exists only once the job runs; with --follow, wait for it.
    let stream = loop {
        let status = job
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if let Some(stream) = describe::log_stream(&job) {
            break stream.to_string();
        }
        if describe::is_done(&status) {
            let reason = job
                .status_reason()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            anyhow::bail!(
                "job {} ended {status}{reason} without a log stream",
                args.job_id
            );
        }
        if !args.follow {
            anyhow::bail!(
                "job {} is {status}: no log stream yet (Batch creates it when the job starts \
                 running); use --follow to wait for it",
                args.job_id
            );
        }
        tokio::time::sleep(describe::poll_interval()).await;
        job = describe::describe(batch, id).await?.remove(0);
    };

    let mut token: Option<String> = None;
    loop {
        // Read the job's state before draining, so the last lines a finished job wrote are
        // always printed before we stop.
        let done = !args.follow
            || describe::is_done(
                describe::describe(batch, id).await?[0]
                    .status()
                    .map(|s| s.as_str())
                    .unwrap_or(""),
            );
        match drain(clients.logs(), &group, &stream, &mut token).await {
            Ok(true) => {}
            Ok(false) => {
                if !args.follow || done {
                    anyhow::bail!(
                        "log stream `{stream}` does not exist in log group `{group}` (the job \
                         wrote nothing, or its logs expired)"
                    );
                }
            }
            Err(err) if is_broken_pipe(&err) => return Ok(ExitCode::SUCCESS),
            Err(err) => return Err(err),
        }
        if done {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(describe::poll_interval()).await;
    }
}

/// Prints every event after `token` and advances it; `false` when the stream does not exist.
async fn drain(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    token: &mut Option<String>,
) -> anyhow::Result<bool> {
    let mut stdout = std::io::stdout().lock();
    loop {
        let Some(page) = events_page(logs, group, stream, token.clone()).await? else {
            return Ok(false);
        };
        for event in &page.events {
            let message = event.message().unwrap_or_default();
            writeln!(stdout, "{}", message.strip_suffix('\n').unwrap_or(message))?;
        }
        stdout.flush()?;
        if page.at_end {
            return Ok(true);
        }
        *token = page.next_token;
    }
}

/// One page of a log stream's events.
pub(crate) struct EventsPage {
    pub events: Vec<aws_sdk_cloudwatchlogs::types::OutputLogEvent>,
    /// Where the next page starts.
    pub next_token: Option<String>,
    /// No event after this page (yet: a running job may write more).
    pub at_end: bool,
}

/// The events after `token` (from the start without one); `None` when the stream does not
/// exist.
pub(crate) async fn events_page(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    token: Option<String>,
) -> anyhow::Result<Option<EventsPage>> {
    let result = logs
        .get_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .start_from_head(true)
        .set_next_token(token.clone())
        .send()
        .await;
    let page = match result {
        Ok(page) => page,
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            return Ok(None);
        }
        Err(err) => {
            return Err(err).with_context(|| format!("GetLogEvents {group} {stream}"));
        }
    };
    // The end of the stream is the token that comes back unchanged.
    let next_token = page.next_forward_token().map(str::to_string);
    let at_end = next_token.is_none() || next_token == token;
    Ok(Some(EventsPage {
        events: page.events().to_vec(),
        next_token: next_token.or(token),
        at_end,
    }))
}

/// The group the job logs to: its container's log configuration, else its job definition's,
/// else Batch's default.
pub(crate) async fn log_group(
    batch: &aws_sdk_batch::Client,
    job: &JobDetail,
) -> anyhow::Result<String> {
    if let Some(group) = awslogs_group(job.container().and_then(|c| c.log_configuration()))? {
        return Ok(group);
    }
    if let Some(definition) = job.job_definition() {
        if let Some(definition) = live::job_definition(batch, definition).await? {
            let config = definition
                .container_properties()
                .and_then(|c| c.log_configuration());
            if let Some(group) = awslogs_group(config)? {
                return Ok(group);
            }
        }
    }
    Ok(DEFAULT_LOG_GROUP.to_string())
}

fn awslogs_group(config: Option<&LogConfiguration>) -> anyhow::Result<Option<String>> {
    let Some(config) = config else {
        return Ok(None);
    };
    if let Some(driver) = config.log_driver() {
        anyhow::ensure!(
            driver.as_str() == "awslogs",
            "the job logs with the `{}` driver, not to CloudWatch Logs",
            driver.as_str()
        );
    }
    Ok(config
        .options()
        .and_then(|o| o.get("awslogs-group"))
        .cloned())
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
