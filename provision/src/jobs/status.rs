//! Job statuses as the SDK's enum: what a status means for a watcher, and a status as a user
//! types it.

use aws_sdk_batch::types::JobStatus;

/// Batch's lifecycle order, for messages (the SDK lists its values alphabetically).
pub const LIFECYCLE: [JobStatus; 7] = [
    JobStatus::Submitted,
    JobStatus::Pending,
    JobStatus::Runnable,
    JobStatus::Starting,
    JobStatus::Running,
    JobStatus::Succeeded,
    JobStatus::Failed,
];

/// SUCCEEDED and FAILED are the only states a job never leaves.
pub fn is_done(status: &JobStatus) -> bool {
    matches!(status, JobStatus::Succeeded | JobStatus::Failed)
}

/// A status typed by a user (`failed`, `RUNNING`): any case, one of Batch's seven.
pub fn parse(typed: &str) -> Result<JobStatus, String> {
    let upper = typed.trim().to_ascii_uppercase();
    JobStatus::try_parse(&upper).map_err(|_| {
        let known: Vec<&str> = LIFECYCLE.iter().map(JobStatus::as_str).collect();
        format!(
            "unknown job status `{typed}`: use one of {}",
            known.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_case_and_names_the_choices() {
        assert_eq!(parse("failed"), Ok(JobStatus::Failed));
        assert_eq!(parse("RUNNING"), Ok(JobStatus::Running));
        let err = parse("done").unwrap_err();
        assert_eq!(
            err,
            "unknown job status `done`: use one of SUBMITTED, PENDING, RUNNABLE, STARTING, \
             RUNNING, SUCCEEDED, FAILED"
        );
        assert_eq!(LIFECYCLE.len(), JobStatus::values().len());
    }

    #[test]
    fn only_succeeded_and_failed_are_done() {
        let done: Vec<&str> = LIFECYCLE
            .iter()
            .filter(|s| is_done(s))
            .map(JobStatus::as_str)
            .collect();
        assert_eq!(done, ["SUCCEEDED", "FAILED"]);
        assert!(!is_done(&JobStatus::from("NEW_STATE")));
    }
}
