//! `provision logs`: a job's CloudWatch log stream, found from the job itself (the stream name
//! Batch reports, the group its job definition logs to); every child's stream for an array job;
//! with `--job NAME` the latest job of a stack job.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use aws_sdk_batch::types::{JobDetail, JobStatus};

use crate::aws::Clients;
use crate::cli::LogsArgs;
use crate::jobs::tail::{Stream, Tail};
use crate::jobs::{self, describe, latest, log_group, select, status};

/// DescribeJobs takes at most 100 ids per call.
const DESCRIBE_CHUNK: usize = 100;
/// Calls per second a follow keeps under on average, all services together, so that several
/// followers fit in an account's request rates.
const CALLS_PER_SECOND: u64 = 5;

pub async fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let since_ms = args
        .since
        .map(|d| chrono::Utc::now().timestamp_millis() - d.as_millis() as i64);
    let (clients, id) = match &args.job {
        Some(job) => match latest_of(&args, job).await? {
            Ok(found) => found,
            Err(code) => return Ok(code),
        },
        None => (
            Clients::from_chain().await?,
            args.job_id.clone().context("give a JOB_ID or --job NAME")?,
        ),
    };
    let batch = clients.batch();
    let job = describe::describe(batch, std::slice::from_ref(&id))
        .await?
        .remove(0);
    let group = log_group::of_job(batch, &job).await?;
    let reader = Reader {
        batch,
        logs: clients.logs(),
        group,
        filter: args.filter_pattern.clone(),
        since_ms,
        follow: args.follow,
        interval: Duration::from_secs(args.poll_interval),
    };
    let result = match job.array_properties().filter(|a| a.index().is_none()) {
        Some(array) => reader.array(&id, array.size().unwrap_or_default()).await,
        None => reader.single(&id, job).await,
    };
    match result {
        Err(err) if is_broken_pipe(&err) => Ok(ExitCode::SUCCESS),
        Err(err) => Err(err),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}

/// `--job NAME`: the stack, then the newest job submitted for that job; the stack's own
/// errors (exit 1, no AWS call) come back as the exit code.
async fn latest_of(
    args: &LogsArgs,
    job: &str,
) -> anyhow::Result<Result<(Clients, String), ExitCode>> {
    let stack_args = args.stack_args().context("--job needs --stack")?;
    let stack = match jobs::load_stack(&stack_args) {
        Ok(stack) => stack,
        Err(code) => return Ok(Err(code)),
    };
    let spec = select::select(&stack, job, Vec::new())?.spec;
    let clients = Clients::new(&stack.region).await?;
    let queue = stack.queue_name(&spec.job.queue);
    let found = latest::latest(clients.batch(), &queue, &spec.name, args.status.as_ref()).await?;
    let Some(found) = found else {
        let status = args
            .status
            .as_ref()
            .map(|s| format!(" in status {}", s.as_str()))
            .unwrap_or_default();
        anyhow::bail!(
            "no job of `{job}`{status} on queue `{queue}` (jobs named `{}-…`; Batch forgets \
             finished jobs after about 7 days): submit one with `provision submit --stack {} {job}`",
            spec.name,
            stack_args.stack.display()
        );
    };
    let id = found
        .job_id()
        .context("ListJobs returned a job without an id")?
        .to_string();
    eprintln!(
        "{id} {} {}",
        found.job_name().unwrap_or_default(),
        found.status().map(JobStatus::as_str).unwrap_or_default()
    );
    Ok(Ok((clients, id)))
}

/// What every read shares.
struct Reader<'a> {
    batch: &'a aws_sdk_batch::Client,
    logs: &'a aws_sdk_cloudwatchlogs::Client,
    group: String,
    filter: Option<String>,
    since_ms: Option<i64>,
    follow: bool,
    interval: Duration,
}

impl Reader<'_> {
    /// One job (or one child): its stream, waited for with --follow.
    async fn single(&self, id: &str, mut job: JobDetail) -> anyhow::Result<()> {
        let ids = [id.to_string()];
        let stream = loop {
            let state = job.status().cloned();
            if let Some(stream) = describe::log_stream(&job) {
                break stream.to_string();
            }
            let state_str = state.as_ref().map_or("", JobStatus::as_str);
            if state.as_ref().is_some_and(status::is_done) {
                let reason = job
                    .status_reason()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                anyhow::bail!("job {id} ended {state_str}{reason} without a log stream");
            }
            if !self.follow {
                anyhow::bail!(
                    "job {id} is {state_str}: no log stream yet (Batch creates it when the job \
                     starts running); use --follow to wait for it"
                );
            }
            tokio::time::sleep(self.interval).await;
            job = describe::describe(self.batch, &ids).await?.remove(0);
        };
        if self.filter.is_some() {
            return self.single_filtered(&ids, stream).await;
        }
        let mut token: Option<String> = None;
        loop {
            // Read the job's state before draining, so the last lines a finished job wrote are
            // always printed before we stop.
            let done = !self.follow || self.is_done(&ids).await?;
            if !self.drain(&stream, &mut token).await? && done {
                anyhow::bail!(
                    "log stream `{stream}` does not exist in log group `{}` (the job wrote \
                     nothing, or its logs expired)",
                    self.group
                );
            }
            if done {
                return Ok(());
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    async fn is_done(&self, ids: &[String]) -> anyhow::Result<bool> {
        let job = describe::describe(self.batch, ids).await?.remove(0);
        Ok(job.status().is_some_and(status::is_done))
    }

    /// One stream through FilterLogEvents, which takes the filter pattern.
    async fn single_filtered(&self, ids: &[String], stream: String) -> anyhow::Result<()> {
        let streams = [Stream {
            name: stream.clone(),
            label: None,
        }];
        let mut tail = Tail::new(self.logs, &self.group, self.filter.clone(), self.since_ms);
        loop {
            let done = !self.follow || self.is_done(ids).await?;
            let missing = tail.poll(&streams, &mut std::io::stdout().lock()).await?;
            if !missing.is_empty() && done {
                anyhow::bail!(
                    "log stream `{stream}` does not exist in log group `{}` (the job wrote \
                     nothing, or its logs expired)",
                    self.group
                );
            }
            if done {
                return Ok(());
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    /// Prints every event after `token` and advances it; `false` when the stream does not exist.
    async fn drain(&self, stream: &str, token: &mut Option<String>) -> anyhow::Result<bool> {
        let mut stdout = std::io::stdout().lock();
        loop {
            let Some(page) =
                events_page(self.logs, &self.group, stream, self.since_ms, token.clone()).await?
            else {
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

    /// Every child of an array job, each line prefixed with `[INDEX]`. Each round describes
    /// the children still running (100 per call) and reads the streams of those that have one
    /// (100 per FilterLogEvents call); a child that has ended is read one last time and then
    /// dropped, so a long array costs less as it finishes.
    async fn array(&self, id: &str, size: i32) -> anyhow::Result<()> {
        let mut live: Vec<u32> = (0..size.max(0) as u32).collect();
        let mut streams: BTreeMap<u32, Stream> = BTreeMap::new();
        let mut tail = Tail::new(self.logs, &self.group, self.filter.clone(), self.since_ms);
        let mut first = true;
        // Children that ended without a stream, or whose stream AWS does not have.
        let mut silent: BTreeSet<u32> = BTreeSet::new();
        let mut absent: BTreeSet<u32> = BTreeSet::new();
        while !live.is_empty() {
            let mut calls = 0u64;
            let mut ended = Vec::new();
            for chunk in live.chunks(DESCRIBE_CHUNK) {
                let ids: Vec<String> = chunk.iter().map(|i| format!("{id}:{i}")).collect();
                let children = describe::describe(self.batch, &ids).await?;
                calls += 1;
                for (index, child) in chunk.iter().zip(&children) {
                    if let Some(stream) = describe::log_stream(child) {
                        streams.entry(*index).or_insert_with(|| Stream {
                            name: stream.to_string(),
                            label: Some(index.to_string()),
                        });
                    }
                    if !self.follow || child.status().is_some_and(status::is_done) {
                        ended.push(*index);
                    }
                }
            }
            // A stream AWS said does not exist is tried again only once its child has ended:
            // each refusal costs a lookup per stream of the call.
            let reading: Vec<Stream> = live
                .iter()
                .filter(|i| !absent.contains(i) || ended.contains(i))
                .filter_map(|i| streams.get(i).cloned())
                .collect();
            if first && reading.is_empty() && !self.follow {
                anyhow::bail!(
                    "no child of array job {id} has a log stream yet (Batch creates one when a \
                     child starts running); use --follow to wait for them"
                );
            }
            first = false;
            if !reading.is_empty() {
                let before = tail.calls();
                let missing = tail.poll(&reading, &mut std::io::stdout().lock()).await?;
                calls += tail.calls() - before;
                let missing: Vec<u32> = missing
                    .iter()
                    .filter_map(|s| s.label.as_deref()?.parse().ok())
                    .collect();
                silent.extend(ended.iter().filter(|i| missing.contains(i)));
                absent.extend(missing);
            }
            silent.extend(ended.iter().filter(|i| !streams.contains_key(i)));
            live.retain(|i| !ended.contains(i));
            if live.is_empty() {
                if !silent.is_empty() {
                    let list: Vec<String> = silent.iter().map(u32::to_string).collect();
                    eprintln!(
                        "note: no log from children {} of {id} (ended before their container \
                         started, or wrote nothing)",
                        list.join(", ")
                    );
                }
                return Ok(());
            }
            // The poll interval, stretched so a large array stays under CALLS_PER_SECOND.
            let wait = self
                .interval
                .max(Duration::from_millis(calls * 1000 / CALLS_PER_SECOND));
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// One page of a log stream's events.
pub(crate) struct EventsPage {
    pub events: Vec<aws_sdk_cloudwatchlogs::types::OutputLogEvent>,
    /// Where the next page starts.
    pub next_token: Option<String>,
    /// No event after this page (yet: a running job may write more).
    pub at_end: bool,
}

/// The events after `token` (from the start, or from `since_ms`, without one); `None` when the
/// stream does not exist. `logs` and the dashboard's job page both read through it.
pub(crate) async fn events_page(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    since_ms: Option<i64>,
    token: Option<String>,
) -> anyhow::Result<Option<EventsPage>> {
    let result = logs
        .get_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .start_from_head(true)
        .set_start_time(since_ms)
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
