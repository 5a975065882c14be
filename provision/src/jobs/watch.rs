//! Following jobs until they end (`submit --watch`, `status --watch`).

use aws_sdk_batch::types::JobStatus;

use super::describe::{self, JobReport};

/// Polls `ids` until every one is SUCCEEDED or FAILED, printing each change of status (and of
/// an array's child counts) on stderr, so stdout keeps only the caller's final output.
pub async fn until_done(
    batch: &aws_sdk_batch::Client,
    ids: &[String],
) -> anyhow::Result<Vec<JobReport>> {
    let mut last: Vec<Option<(Option<JobStatus>, Option<String>)>> = vec![None; ids.len()];
    loop {
        let reports: Vec<JobReport> = describe::describe(batch, ids)
            .await?
            .iter()
            .map(JobReport::from_detail)
            .collect();
        for (report, seen) in reports.iter().zip(last.iter_mut()) {
            let now = (report.status.clone(), report.array_summary());
            if seen.as_ref() == Some(&now) {
                continue;
            }
            let array = now
                .1
                .as_deref()
                .map(|a| format!(" ({a})"))
                .unwrap_or_default();
            let reason = match (&report.reason, report.is_done()) {
                (Some(reason), true) => format!(": {reason}"),
                _ => String::new(),
            };
            eprintln!(
                "{} {} {} {}{array}{reason}",
                chrono::Utc::now().format("%H:%M:%S"),
                report.job_id,
                report.name,
                report.status_str()
            );
            *seen = Some(now);
        }
        if reports.iter().all(JobReport::is_done) {
            return Ok(reports);
        }
        tokio::time::sleep(describe::poll_interval()).await;
    }
}
