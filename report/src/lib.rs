//! How `provision` and `runtime` end on an error, the same way: the message and every cause of
//! its `source()` chain on stderr (stdout stays parseable), exit code 1.

use std::process::ExitCode;

/// Prints `err` and its causes: `error: MESSAGE`, then `  caused by: CAUSE` per cause.
pub fn error(err: &anyhow::Error) {
    eprint!("{}", render(err));
}

/// The text [`error`] prints. A cause whose text the lines before already hold is left out: an
/// SDK error's message often spells out its whole chain (the AWS SDK's `DisplayErrorContext`).
pub fn render(err: &anyhow::Error) -> String {
    let mut out = format!("error: {err}\n");
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !out.contains(&cause) {
            out.push_str(&format!("  caused by: {cause}\n"));
        }
    }
    out
}

/// A command line clap refused (or help and version, which are not errors): clap's own text,
/// then exit code 1 for an error (every bad flag is exit 1, as every other bad input), 0 for
/// help and version.
pub fn command_line(err: clap::Error) -> ExitCode {
    let _ = err.print();
    if err.use_stderr() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_message_then_each_cause() {
        let err = anyhow::anyhow!("disk full").context("writing plan.json");
        assert_eq!(
            render(&err),
            "error: writing plan.json\n  caused by: disk full\n"
        );
    }

    #[test]
    fn leaves_out_causes_the_message_already_holds() {
        let err = anyhow::anyhow!("NoSuchKey").context("service error: NoSuchKey: no such key");
        assert_eq!(
            render(&err),
            "error: service error: NoSuchKey: no such key\n"
        );
    }
}
