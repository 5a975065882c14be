//! Reading back what `apply` registered: the newest active revision of a job definition and a
//! job queue, by their derived names.

use anyhow::Context;
use aws_sdk_batch::types::{JobDefinition, JobQueueDetail};

/// The highest ACTIVE revision of job definition `name`, or `None` when it has none.
pub async fn latest_job_definition(
    batch: &aws_sdk_batch::Client,
    name: &str,
) -> anyhow::Result<Option<JobDefinition>> {
    let mut pages = batch
        .describe_job_definitions()
        .job_definition_name(name)
        .status("ACTIVE")
        .into_paginator()
        .send();
    let mut latest: Option<JobDefinition> = None;
    while let Some(page) = pages.next().await {
        let page = page.with_context(|| format!("DescribeJobDefinitions {name}"))?;
        for def in page.job_definitions() {
            // The name filter is exact on AWS; checking again costs nothing.
            if def.job_definition_name() != Some(name) || def.status() != Some("ACTIVE") {
                continue;
            }
            if latest
                .as_ref()
                .is_none_or(|l| def.revision() > l.revision())
            {
                latest = Some(def.clone());
            }
        }
    }
    Ok(latest)
}

/// Job definition `id` (an ARN, `name:revision` or `name`) as DescribeJobDefinitions returns it.
pub async fn job_definition(
    batch: &aws_sdk_batch::Client,
    id: &str,
) -> anyhow::Result<Option<JobDefinition>> {
    let out = batch
        .describe_job_definitions()
        .job_definitions(id)
        .send()
        .await
        .with_context(|| format!("DescribeJobDefinitions {id}"))?;
    Ok(out.job_definitions().first().cloned())
}

/// Job queue `name`, or `None` when it does not exist.
pub async fn queue(
    batch: &aws_sdk_batch::Client,
    name: &str,
) -> anyhow::Result<Option<JobQueueDetail>> {
    let out = batch
        .describe_job_queues()
        .job_queues(name)
        .send()
        .await
        .with_context(|| format!("DescribeJobQueues {name}"))?;
    Ok(out
        .job_queues()
        .iter()
        .find(|q| q.job_queue_name() == Some(name))
        .cloned())
}
