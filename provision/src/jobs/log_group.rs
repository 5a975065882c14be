//! The CloudWatch log group a job writes to: its container's log configuration, else its job
//! definition's, else Batch's default.

use aws_sdk_batch::types::{JobDetail, LogConfiguration};

use super::live;

/// Where Batch's awslogs driver writes when a job definition names no group.
pub const DEFAULT: &str = "/aws/batch/job";

/// The group `job` logs to; an error when it logs with another driver than awslogs.
pub async fn of_job(batch: &aws_sdk_batch::Client, job: &JobDetail) -> anyhow::Result<String> {
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
    Ok(DEFAULT.to_string())
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
