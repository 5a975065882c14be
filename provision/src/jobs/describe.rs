//! What `status` reports about a job (docs/design.md, "submit and status"), read from DescribeJobs.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use aws_sdk_batch::types::{JobDetail, JobStatus};
use serde::{Serialize, Serializer};

use super::status;

/// DescribeJobs takes at most 100 ids per call.
const DESCRIBE_CHUNK: usize = 100;

/// How often watchers poll Batch. Jobs take minutes to start on real AWS; this keeps a long
/// watch to a few requests a minute while still feeling live.
pub fn poll_interval() -> Duration {
    Duration::from_secs(5)
}

/// One line of `status --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobReport {
    pub job_id: String,
    pub name: String,
    /// `None` only if Batch answered without one.
    #[serde(serialize_with = "status_str")]
    pub status: Option<JobStatus>,
    pub reason: Option<String>,
    pub attempts: usize,
    /// An array parent's children by status; `None` for a single job or a child.
    pub array: Option<BTreeMap<String, i32>>,
    /// RFC 3339.
    pub started: Option<String>,
    pub stopped: Option<String>,
    pub log_stream: Option<String>,
}

impl JobReport {
    pub fn from_detail(job: &JobDetail) -> Self {
        let array = job
            .array_properties()
            .filter(|a| a.index().is_none())
            .and_then(|a| a.status_summary())
            .map(|summary| summary.iter().map(|(k, v)| (k.clone(), *v)).collect());
        Self {
            job_id: job.job_id().unwrap_or_default().to_string(),
            name: job.job_name().unwrap_or_default().to_string(),
            status: job.status().cloned(),
            reason: job.status_reason().map(str::to_string),
            attempts: job.attempts().len(),
            array,
            started: job.started_at().and_then(rfc3339),
            stopped: job.stopped_at().and_then(rfc3339),
            log_stream: log_stream(job).map(str::to_string),
        }
    }

    pub fn is_done(&self) -> bool {
        self.status.as_ref().is_some_and(status::is_done)
    }

    pub fn failed(&self) -> bool {
        self.status == Some(JobStatus::Failed)
    }

    /// The status as Batch spells it (empty when it gave none).
    pub fn status_str(&self) -> &str {
        self.status.as_ref().map_or("", JobStatus::as_str)
    }

    /// `SUCCEEDED 3, RUNNING 2`: the non-zero counts of an array job.
    pub fn array_summary(&self) -> Option<String> {
        let array = self.array.as_ref()?;
        let parts: Vec<String> = array
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        Some(if parts.is_empty() {
            "-".to_string()
        } else {
            parts.join(", ")
        })
    }
}

/// `status --json` keeps Batch's spelling of a status: a string, `""` when absent.
fn status_str<S: Serializer>(status: &Option<JobStatus>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(status.as_ref().map_or("", JobStatus::as_str))
}

/// The job's log stream: the container's, else the latest attempt's (a retried job's earlier
/// attempts keep their own streams).
pub fn log_stream(job: &JobDetail) -> Option<&str> {
    job.container()
        .and_then(|c| c.log_stream_name())
        .or_else(|| {
            job.attempts()
                .iter()
                .rev()
                .find_map(|a| a.container()?.log_stream_name())
        })
        .filter(|s| !s.is_empty())
}

fn rfc3339(epoch_ms: i64) -> Option<String> {
    // Batch reports "not yet" as absent, but some clients send 0; neither is a real time.
    if epoch_ms <= 0 {
        return None;
    }
    chrono::DateTime::from_timestamp_millis(epoch_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// DescribeJobs for `ids`, in the order given. Ids Batch does not know are an error naming them.
pub async fn describe(
    batch: &aws_sdk_batch::Client,
    ids: &[String],
) -> anyhow::Result<Vec<JobDetail>> {
    let mut found: Vec<JobDetail> = Vec::new();
    for chunk in ids.chunks(DESCRIBE_CHUNK) {
        let out = batch
            .describe_jobs()
            .set_jobs(Some(chunk.to_vec()))
            .send()
            .await
            .context("DescribeJobs")?;
        found.extend(out.jobs().iter().cloned());
    }
    let mut ordered = Vec::with_capacity(ids.len());
    let mut missing = Vec::new();
    for id in ids {
        match found
            .iter()
            .find(|j| j.job_id() == Some(id) || j.job_arn() == Some(id))
        {
            Some(job) => ordered.push(job.clone()),
            None => missing.push(id.as_str()),
        }
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "no such job: {} (Batch keeps finished jobs for about 7 days; check the id and the \
             region)",
            missing.join(", ")
        );
    }
    Ok(ordered)
}

/// Renders reports as a table for people.
pub fn table(reports: &[JobReport]) -> String {
    let header = [
        "JOB ID", "NAME", "STATUS", "ATTEMPTS", "ARRAY", "STARTED", "STOPPED", "REASON",
    ];
    let rows: Vec<[String; 8]> = reports
        .iter()
        .map(|r| {
            [
                r.job_id.clone(),
                r.name.clone(),
                r.status_str().to_string(),
                r.attempts.to_string(),
                r.array_summary().unwrap_or_else(|| "-".into()),
                r.started.clone().unwrap_or_else(|| "-".into()),
                r.stopped.clone().unwrap_or_else(|| "-".into()),
                r.reason.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    aligned_table(header, &rows)
}

/// `header` and `rows` as columns padded to their widest cell (the last column unpadded), one
/// line each: the tables of `status` and `jobs`.
pub fn aligned_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use aws_sdk_batch::types::{ArrayPropertiesDetail, AttemptContainerDetail, AttemptDetail};

    use super::*;

    #[test]
    fn report_of_an_array_parent() {
        let job = JobDetail::builder()
            .job_id("abc")
            .job_name("demo-dev-prepare-1")
            .status(JobStatus::Running)
            .started_at(1_700_000_000_000)
            .array_properties(
                ArrayPropertiesDetail::builder()
                    .size(3)
                    .status_summary("SUCCEEDED", 2)
                    .status_summary("RUNNING", 1)
                    .status_summary("FAILED", 0)
                    .build(),
            )
            .build();
        let r = JobReport::from_detail(&job);
        assert_eq!(r.started.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(r.stopped, None);
        assert_eq!(r.array.as_ref().unwrap()["SUCCEEDED"], 2);
        assert_eq!(r.array_summary().as_deref(), Some("RUNNING 1, SUCCEEDED 2"));
        assert!(!r.is_done());
        let json = serde_json::to_value(&r).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "job_id",
                "name",
                "status",
                "reason",
                "attempts",
                "array",
                "started",
                "stopped",
                "log_stream"
            ]
        );
    }

    #[test]
    fn a_child_has_no_array_and_its_stream_comes_from_the_last_attempt() {
        let attempt = |stream: &str| {
            AttemptDetail::builder()
                .container(
                    AttemptContainerDetail::builder()
                        .log_stream_name(stream)
                        .build(),
                )
                .build()
        };
        let job = JobDetail::builder()
            .job_id("abc:1")
            .status(JobStatus::Failed)
            .array_properties(ArrayPropertiesDetail::builder().index(1).build())
            .attempts(attempt("p/default/1"))
            .attempts(attempt("p/default/2"))
            .build();
        let r = JobReport::from_detail(&job);
        assert_eq!(r.array, None);
        assert_eq!(r.attempts, 2);
        assert_eq!(r.log_stream.as_deref(), Some("p/default/2"));
        assert!(r.is_done() && r.failed());
    }

    #[test]
    fn table_aligns_columns() {
        let r = JobReport {
            job_id: "id-1".into(),
            name: "n".into(),
            status: Some(JobStatus::Succeeded),
            reason: None,
            attempts: 1,
            array: None,
            started: None,
            stopped: None,
            log_stream: None,
        };
        let t = table(&[r]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].find("NAME"), lines[1].find("n "));
        assert_eq!(lines[0].find("STATUS"), lines[1].find("SUCCEEDED"));
    }
}
