//! The latest job of a stack job (`logs --job NAME`): found on the job's queue by the name
//! `submit` gives every job, `{P}-{key}-{UTC time}` (a shard suffix may follow).

use anyhow::Context;
use aws_sdk_batch::types::{JobStatus, JobSummary, KeyValuesPair};

/// ListJobs pages read at most. With a name filter Batch answers newest first, so the first
/// page with a match holds the latest; this bounds the calls for a name never submitted.
const MAX_PAGES: usize = 10;
const PAGE_SIZE: i32 = 100;

/// Whether `name` is one `submit` gave a job of `stem` (`{P}-{key}`): the stem, a dash, then
/// the `YYYYMMDD-HHMMSS` time, so job `train` does not pick up `train-gpu`'s jobs.
pub fn is_submitted_as(name: &str, stem: &str) -> bool {
    let Some(rest) = name.strip_prefix(stem).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let stamp: Vec<u8> = rest.bytes().take(15).collect();
    stamp.len() == 15
        && stamp.iter().enumerate().all(|(i, b)| {
            if i == 8 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

/// An array job's child: an index, or an id `PARENT:INDEX`.
fn is_child(job: &JobSummary) -> bool {
    job.array_properties().is_some_and(|a| a.index().is_some())
        || job.job_id().is_some_and(|id| id.contains(':'))
}

/// The newest job on `queue` submitted as `stem` (and in `status`, when given); `None` when
/// Batch knows none (it forgets finished jobs after about 7 days).
pub async fn latest(
    batch: &aws_sdk_batch::Client,
    queue: &str,
    stem: &str,
    status: Option<&JobStatus>,
) -> anyhow::Result<Option<JobSummary>> {
    let mut pages = batch
        .list_jobs()
        .job_queue(queue)
        // With a filter Batch lists every status (jobStatus is ignored), newest first.
        .filters(
            KeyValuesPair::builder()
                .name("JOB_NAME")
                .values(format!("{stem}-*"))
                .build(),
        )
        .max_results(PAGE_SIZE)
        .into_paginator()
        .send();
    let mut read = 0;
    while let Some(page) = pages.next().await {
        let page = page.with_context(|| format!("ListJobs on {queue}"))?;
        let newest = page
            .job_summary_list()
            .iter()
            .filter(|j| j.job_name().is_some_and(|n| is_submitted_as(n, stem)))
            // An array's children share its name; the parent stands for them.
            .filter(|j| !is_child(j))
            .filter(|j| status.is_none_or(|s| j.status() == Some(s)))
            .max_by_key(|j| j.created_at().unwrap_or_default());
        if let Some(job) = newest {
            return Ok(Some(job.clone()));
        }
        read += 1;
        if read == MAX_PAGES {
            break;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_job_and_not_of_a_longer_key() {
        assert!(is_submitted_as(
            "demo-dev-train-20261203-041500",
            "demo-dev-train"
        ));
        assert!(is_submitted_as(
            "demo-dev-train-20261203-041500-003",
            "demo-dev-train"
        ));
        assert!(!is_submitted_as(
            "demo-dev-train-gpu-20261203-041500",
            "demo-dev-train"
        ));
        assert!(!is_submitted_as(
            "demo-dev-train-2024-20261203-041500",
            "demo-dev-train"
        ));
        assert!(!is_submitted_as("demo-dev-train", "demo-dev-train"));
        assert!(!is_submitted_as(
            "demo-dev-prepare-20261203-041500",
            "demo-dev-train"
        ));
    }
}
