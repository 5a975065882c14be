//! The exit codes a Batch retry strategy reads: a retry is worth it only for a failure that
//! may pass on its own (the network, a throttled or failing service), never for bad input.
//!
//! - 0: success.
//! - 1: an error a retry cannot fix: bad input, bad configuration, a missing bucket or object,
//!   refused credentials.
//! - 75 (`EX_TEMPFAIL` of BSD's sysexits.h): a transient error: S3 or the network still failing
//!   after the SDK's own retries (a connection refused or reset, a timeout, throttling, a 5xx).
//!   The stack's default retry rules retry it.
//! - 143: `train` was interrupted by SIGTERM after checkpointing; a retry resumes it.

use std::process::ExitCode;

/// An error that a retry cannot fix.
pub const PERMANENT: u8 = 1;
/// An error that may pass when the job runs again (sysexits' `EX_TEMPFAIL`).
pub const TRANSIENT: u8 = 75;

/// A failure that may pass on its own; anywhere in an error's chain it makes the exit code
/// [`TRANSIENT`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Transient(pub String);

/// Whether `err` or one of its causes is [`Transient`].
pub fn is_transient(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.is::<Transient>())
}

/// The exit code of a command that failed with `err`.
pub fn code(err: &anyhow::Error) -> ExitCode {
    ExitCode::from(if is_transient(err) {
        TRANSIENT
    } else {
        PERMANENT
    })
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn a_transient_cause_anywhere_in_the_chain_counts() {
        let err = anyhow::Error::new(Transient("GetObject: dispatch failure".into()))
            .context("reading s3://b/k")
            .context("dataset 7");
        assert!(is_transient(&err));
        let err: anyhow::Result<()> = Err(anyhow::anyhow!("no such file")).context("reading x");
        assert!(!is_transient(&err.unwrap_err()));
    }
}
