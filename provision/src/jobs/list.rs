//! Listing a stack's jobs across its queues (`provision jobs`, the dashboard's jobs table).
//!
//! One ListJobs stream per queue and status, 1,000 jobs a page (AWS's maximum), or, with a
//! `since`, one stream per queue filtered by creation time (a filtered ListJobs answers every
//! status at once). Array parents get their children's counts by status from DescribeJobs, 100
//! parents a call. Listing N jobs of one queue costs `statuses + ⌈N/1000⌉` calls without
//! `since` (a status with no job still costs its one empty page), `⌈N/1000⌉` with it, plus
//! `⌈parents/100⌉` DescribeJobs.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use aws_sdk_batch::types::{JobStatus, JobSummary, KeyValuesPair};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::stack::Stack;

/// ListJobs' largest page.
const PAGE_SIZE: i32 = 1000;
/// DescribeJobs takes at most 100 ids per call.
const DESCRIBE_CHUNK: usize = 100;
/// Streams listed at once: a few, so one listing never bursts past Batch's request rate.
const CONCURRENCY: usize = 4;
/// The request rate a repeated listing keeps to on average (`--watch`, the dashboard's
/// auto-refresh). Batch throttles per account and region, shared by every client of the
/// account; two a second leaves the rest to the jobs, the console and other tools.
pub const MAX_CALLS_PER_SECOND: f64 = 2.0;
/// The shortest interval between two listings a user may ask for.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Every status a Batch job can be in, in the order a job passes through them.
pub fn all_statuses() -> Vec<JobStatus> {
    super::status::LIFECYCLE.to_vec()
}

/// Bad `--queue`, `--status` or `--since` values; the message names the valid ones.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QueryError {
    #[error("no queue `{queue}` in the stack; its queues: {valid}")]
    UnknownQueue { queue: String, valid: String },
    #[error("no job status `{status}`; the statuses: {valid}")]
    UnknownStatus { status: String, valid: String },
    #[error("--since `{since}`: {reason} (give a duration such as 30m, 12h, 1d or 2w)")]
    BadSince { since: String, reason: String },
}

/// One queue of the stack: its key and its name in AWS.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRef {
    pub key: String,
    pub name: String,
}

/// What to list.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub queues: Vec<QueueRef>,
    /// Never empty: the statuses asked for, or all of them.
    pub statuses: Vec<JobStatus>,
    /// Only jobs created after this time (milliseconds since the epoch).
    pub created_after_ms: Option<i64>,
}

impl Query {
    /// The query for `stack`, checking the user's filters against it (no AWS call). Empty
    /// filters mean every queue and every status; `since` is a duration back from now.
    pub fn new(
        stack: &Stack,
        queues: &[String],
        statuses: &[String],
        since: Option<&str>,
    ) -> Result<Self, QueryError> {
        Ok(Self {
            queues: queue_refs(stack, queues)?,
            statuses: parse_statuses(statuses)?,
            created_after_ms: since.map(since_ms).transpose()?,
        })
    }
}

fn queue_refs(stack: &Stack, wanted: &[String]) -> Result<Vec<QueueRef>, QueryError> {
    let all: Vec<QueueRef> = stack
        .queues
        .keys()
        .map(|key| QueueRef {
            key: key.clone(),
            name: stack.queue_name(key),
        })
        .collect();
    if wanted.is_empty() {
        return Ok(all);
    }
    let mut out = Vec::new();
    for queue in wanted {
        let found = all
            .iter()
            .find(|q| &q.key == queue || &q.name == queue)
            .ok_or_else(|| QueryError::UnknownQueue {
                queue: queue.clone(),
                valid: stack.queues.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        if !out.contains(found) {
            out.push(found.clone());
        }
    }
    Ok(out)
}

/// `running,FAILED` → the statuses, case-insensitively; empty → all of them.
pub fn parse_statuses(given: &[String]) -> Result<Vec<JobStatus>, QueryError> {
    let all = all_statuses();
    let mut out = Vec::new();
    for raw in given.iter().flat_map(|s| s.split(',')).map(str::trim) {
        if raw.is_empty() {
            continue;
        }
        let status = all
            .iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(raw))
            .ok_or_else(|| QueryError::UnknownStatus {
                status: raw.to_string(),
                valid: all
                    .iter()
                    .map(JobStatus::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if !out.contains(status) {
            out.push(status.clone());
        }
    }
    Ok(if out.is_empty() { all } else { out })
}

/// `1d` → the time one day ago, in milliseconds since the epoch.
fn since_ms(since: &str) -> Result<i64, QueryError> {
    let bad = |reason: String| QueryError::BadSince {
        since: since.to_string(),
        reason,
    };
    let back = humantime::parse_duration(since.trim()).map_err(|e| bad(e.to_string()))?;
    if back.is_zero() {
        return Err(bad("a zero duration lists nothing".into()));
    }
    let back = chrono::Duration::from_std(back).map_err(|_| bad("too long".into()))?;
    chrono::Utc::now()
        .checked_sub_signed(back)
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| bad("too long".into()))
}

/// An array parent's children.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArrayCounts {
    pub size: i32,
    /// Children by status (statuses with none left out).
    pub by_status: BTreeMap<String, i32>,
}

/// One job of the listing; the JSON of `provision jobs --json` and of the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    pub job_id: String,
    pub name: String,
    /// The queue's key in the stack.
    pub queue: String,
    pub status: String,
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    /// RFC 3339.
    pub created: Option<String>,
    pub started: Option<String>,
    pub stopped: Option<String>,
    /// `name:revision`.
    pub job_definition: Option<String>,
    /// An array parent's children; `None` for a single job or a child.
    pub array: Option<ArrayCounts>,
    /// A child's index in its array.
    pub index: Option<i32>,
}

impl JobRow {
    fn from_summary(queue: &str, job: &JobSummary) -> Self {
        let array = job.array_properties();
        Self {
            job_id: job.job_id().unwrap_or_default().to_string(),
            name: job.job_name().unwrap_or_default().to_string(),
            queue: queue.to_string(),
            status: job
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            reason: job
                .status_reason()
                .or_else(|| job.container().and_then(|c| c.reason()))
                .map(str::to_string),
            exit_code: job.container().and_then(|c| c.exit_code()),
            created: job.created_at().and_then(rfc3339),
            started: job.started_at().and_then(rfc3339),
            stopped: job.stopped_at().and_then(rfc3339),
            job_definition: job.job_definition().map(definition_name),
            array: array
                .filter(|a| a.index().is_none())
                .and_then(|a| a.size())
                .map(|size| ArrayCounts {
                    size,
                    by_status: BTreeMap::new(),
                }),
            index: array.and_then(|a| a.index()),
        }
    }

    /// SUCCEEDED and FAILED are the only states a job never leaves.
    pub fn is_done(&self) -> bool {
        super::status::is_done(&JobStatus::from(self.status.as_str()))
    }
}

/// `arn:...:job-definition/demo-dev-train:3` → `demo-dev-train:3`.
fn definition_name(arn: &str) -> String {
    arn.rsplit_once('/')
        .map_or(arn, |(_, name)| name)
        .to_string()
}

fn rfc3339(epoch_ms: i64) -> Option<String> {
    // Batch reports "not yet" as absent, but some clients send 0; neither is a real time.
    (epoch_ms > 0)
        .then(|| chrono::DateTime::from_timestamp_millis(epoch_ms))
        .flatten()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The jobs found, newest first, and what finding them cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listing {
    pub jobs: Vec<JobRow>,
    /// API calls made (ListJobs pages and DescribeJobs).
    pub calls: usize,
}

impl Listing {
    /// How long to wait before listing again: `interval`, stretched so that repeated
    /// listings average at most [`MAX_CALLS_PER_SECOND`].
    pub fn next_poll(&self, interval: Duration) -> Duration {
        let budget = Duration::from_secs_f64(self.calls as f64 / MAX_CALLS_PER_SECOND);
        interval.max(budget).max(MIN_POLL_INTERVAL)
    }

    /// `SUCCEEDED 10, RUNNING 2`: the listing's jobs by status.
    pub fn totals(&self) -> BTreeMap<String, usize> {
        let mut totals = BTreeMap::new();
        for job in &self.jobs {
            *totals.entry(job.status.clone()).or_default() += 1;
        }
        totals
    }
}

/// One ListJobs stream: a queue (or an array's children) and a status or a time filter.
#[derive(Debug, Clone)]
struct Stream {
    queue: QueueRef,
    array_job_id: Option<String>,
    status: Option<JobStatus>,
    created_after_ms: Option<i64>,
}

/// Lists the jobs `query` selects. An unknown queue (a stack not applied) is an error.
pub async fn list(batch: &aws_sdk_batch::Client, query: &Query) -> anyhow::Result<Listing> {
    let mut streams = Vec::new();
    for queue in &query.queues {
        match query.created_after_ms {
            // A filtered ListJobs ignores jobStatus and answers every status at once.
            Some(after) => streams.push(Stream {
                queue: queue.clone(),
                array_job_id: None,
                status: None,
                created_after_ms: Some(after),
            }),
            None => streams.extend(query.statuses.iter().map(|status| Stream {
                queue: queue.clone(),
                array_job_id: None,
                status: Some(status.clone()),
                created_after_ms: None,
            })),
        }
    }
    let (jobs, mut calls) = run_streams(batch, streams).await?;
    let mut jobs = latest_of_each(jobs);
    if query.created_after_ms.is_some() {
        let wanted: Vec<&str> = query.statuses.iter().map(JobStatus::as_str).collect();
        jobs.retain(|j| wanted.contains(&j.status.as_str()));
    }
    calls += count_children(batch, &mut jobs).await?;
    sort_newest_first(&mut jobs);
    Ok(Listing { jobs, calls })
}

/// The children of array job `parent` (listed in `queue`) whose status is one of `statuses`.
pub async fn children(
    batch: &aws_sdk_batch::Client,
    queue: &QueueRef,
    parent: &str,
    statuses: &[JobStatus],
) -> anyhow::Result<Listing> {
    let streams = statuses
        .iter()
        .map(|status| Stream {
            queue: queue.clone(),
            array_job_id: Some(parent.to_string()),
            status: Some(status.clone()),
            created_after_ms: None,
        })
        .collect();
    let (mut jobs, calls) = run_streams(batch, streams).await?;
    jobs.sort_by_key(|j| j.index);
    Ok(Listing { jobs, calls })
}

async fn run_streams(
    batch: &aws_sdk_batch::Client,
    streams: Vec<Stream>,
) -> anyhow::Result<(Vec<JobRow>, usize)> {
    let results: Vec<(Vec<JobRow>, usize)> = stream::iter(streams)
        .map(|s| async move { list_stream(batch, &s).await })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut jobs = Vec::new();
    let mut calls = 0;
    for (found, n) in results {
        jobs.extend(found);
        calls += n;
    }
    Ok((jobs, calls))
}

async fn list_stream(
    batch: &aws_sdk_batch::Client,
    s: &Stream,
) -> anyhow::Result<(Vec<JobRow>, usize)> {
    let mut request = batch.list_jobs().max_results(PAGE_SIZE);
    request = match &s.array_job_id {
        Some(parent) => request.array_job_id(parent),
        None => request.job_queue(&s.queue.name),
    };
    if let Some(status) = &s.status {
        request = request.job_status(status.clone());
    }
    if let Some(after) = s.created_after_ms {
        request = request.filters(
            KeyValuesPair::builder()
                .name("AFTER_CREATED_AT")
                .values(after.to_string())
                .build(),
        );
    }
    let mut pages = request.into_paginator().send();
    let mut jobs = Vec::new();
    let mut calls = 0;
    while let Some(page) = pages.next().await {
        calls += 1;
        let page = page.map_err(|err| {
            // Batch answering that it does not know the queue: the stack is not applied (yet).
            let refused = err.as_service_error().is_some();
            let what = match &s.array_job_id {
                Some(parent) => format!("ListJobs of array job {parent}"),
                None if refused => format!(
                    "ListJobs in queue {} (has the stack been applied? `provision apply` \
                     creates its queues)",
                    s.queue.name
                ),
                None => format!("ListJobs in queue {}", s.queue.name),
            };
            anyhow::Error::new(err).context(what)
        })?;
        // A queue's listing is of parents and single jobs; an array's children are counted
        // under their parent (and listed by `children`), should a listing include them.
        let listed_by_queue = s.array_job_id.is_none();
        jobs.extend(
            page.job_summary_list()
                .iter()
                .filter(|j| !(listed_by_queue && is_child(j)))
                .map(|j| JobRow::from_summary(&s.queue.key, j)),
        );
    }
    Ok((jobs, calls))
}

fn is_child(job: &JobSummary) -> bool {
    job.array_properties().and_then(|a| a.index()).is_some()
        || job.job_id().is_some_and(|id| id.contains(':'))
}

/// Fills in the children's counts of every array parent; returns the calls made.
async fn count_children(
    batch: &aws_sdk_batch::Client,
    jobs: &mut [JobRow],
) -> anyhow::Result<usize> {
    let parents: Vec<String> = jobs
        .iter()
        .filter(|j| j.array.is_some())
        .map(|j| j.job_id.clone())
        .collect();
    let mut counts: BTreeMap<String, BTreeMap<String, i32>> = BTreeMap::new();
    let mut calls = 0;
    for chunk in parents.chunks(DESCRIBE_CHUNK) {
        calls += 1;
        let out = batch
            .describe_jobs()
            .set_jobs(Some(chunk.to_vec()))
            .send()
            .await
            .context("DescribeJobs (array children by status)")?;
        for job in out.jobs() {
            let summary = job
                .array_properties()
                .and_then(|a| a.status_summary())
                .map(|s| {
                    s.iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(k, v)| (k.clone(), *v))
                        .collect()
                })
                .unwrap_or_default();
            counts.insert(job.job_id().unwrap_or_default().to_string(), summary);
        }
    }
    for job in jobs.iter_mut() {
        if let (Some(array), Some(by_status)) = (job.array.as_mut(), counts.remove(&job.job_id)) {
            array.by_status = by_status;
        }
    }
    Ok(calls)
}

/// One row per job: a job that moved on while its queue was listed status by status shows up
/// twice, and the later status is the one it is in.
fn latest_of_each(jobs: Vec<JobRow>) -> Vec<JobRow> {
    let order = all_statuses();
    let rank = |status: &str| order.iter().position(|s| s.as_str() == status);
    let mut by_id: BTreeMap<String, JobRow> = BTreeMap::new();
    for job in jobs {
        match by_id.get(&job.job_id) {
            Some(seen) if rank(&seen.status) >= rank(&job.status) => {}
            _ => {
                by_id.insert(job.job_id.clone(), job);
            }
        }
    }
    by_id.into_values().collect()
}

fn sort_newest_first(jobs: &mut [JobRow]) {
    // RFC 3339 in UTC with whole seconds sorts as text; the id breaks ties stably.
    jobs.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then_with(|| a.job_id.cmp(&b.job_id))
    });
}

/// Renders rows as a table for people.
pub fn table(jobs: &[JobRow]) -> String {
    let header = [
        "JOB ID", "NAME", "QUEUE", "STATUS", "ARRAY", "CREATED", "STOPPED", "REASON",
    ];
    let rows: Vec<[String; 8]> = jobs
        .iter()
        .map(|j| {
            [
                j.job_id.clone(),
                j.name.clone(),
                j.queue.clone(),
                j.status.clone(),
                array_cell(j),
                j.created.clone().unwrap_or_else(|| "-".into()),
                j.stopped.clone().unwrap_or_else(|| "-".into()),
                j.reason.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    super::describe::aligned_table(header, &rows)
}

/// `3 children: SUCCEEDED 2, RUNNING 1`, or `-` for a job that is not an array.
fn array_cell(job: &JobRow) -> String {
    let Some(array) = &job.array else {
        return "-".into();
    };
    let counts: Vec<String> = array
        .by_status
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    if counts.is_empty() {
        format!("{} children", array.size)
    } else {
        format!("{} children: {}", array.size, counts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(
            &path,
            r#"
[stack]
name = "demo"
region = "us-east-1"
[compute.spot]
type = "spot"
max_vcpus = 4
instance_types = ["c5.xlarge"]
[queues.main]
priority = 1
compute = ["spot"]
[queues.backfill]
priority = 2
compute = ["spot"]
"#,
        )
        .unwrap();
        crate::stack::load(&path, None, &[]).unwrap()
    }

    #[test]
    fn filters_resolve_against_the_stack() {
        let s = stack();
        let q = Query::new(&s, &[], &[], None).unwrap();
        assert_eq!(q.queues.len(), 2);
        assert_eq!(q.statuses.len(), 7);
        assert_eq!(q.created_after_ms, None);
        let q = Query::new(
            &s,
            &["demo-default-main".into(), "main".into()],
            &["running,failed".into()],
            Some("1d"),
        )
        .unwrap();
        assert_eq!(q.queues.len(), 1);
        assert_eq!(q.queues[0].key, "main");
        assert_eq!(q.statuses, [JobStatus::Running, JobStatus::Failed]);
        let day_ago = chrono::Utc::now().timestamp_millis() - 86_400_000;
        assert!((q.created_after_ms.unwrap() - day_ago).abs() < 5_000);
    }

    #[test]
    fn bad_filters_name_the_valid_values() {
        let s = stack();
        let err = Query::new(&s, &["cpu".into()], &[], None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no queue `cpu` in the stack; its queues: backfill, main"
        );
        let err = Query::new(&s, &[], &["DONE".into()], None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no job status `DONE`; the statuses: SUBMITTED, PENDING, RUNNABLE, STARTING, \
             RUNNING, SUCCEEDED, FAILED"
        );
        let err = Query::new(&s, &[], &[], Some("yesterday")).unwrap_err();
        assert!(err.to_string().starts_with("--since `yesterday`:"), "{err}");
        assert!(Query::new(&s, &[], &[], Some("0s")).is_err());
    }

    #[test]
    fn polling_keeps_to_the_request_budget() {
        let listing = |calls| Listing {
            jobs: vec![],
            calls,
        };
        let five = Duration::from_secs(5);
        assert_eq!(listing(7).next_poll(five), five);
        // 16 calls (10,000 jobs in one queue) at two a second: 8 s apart, not 5.
        assert_eq!(listing(16).next_poll(five), Duration::from_secs(8));
        assert_eq!(
            listing(0).next_poll(Duration::from_millis(10)),
            MIN_POLL_INTERVAL
        );
    }

    #[test]
    fn definition_names_drop_the_arn() {
        assert_eq!(
            definition_name("arn:aws:batch:us-east-1:1:job-definition/demo-dev-train:3"),
            "demo-dev-train:3"
        );
    }
}
