//! Resource addresses on the command line (`state show|rm ADDRESS`, `import ADDRESS NAME`):
//! text that is no address is refused by the parser, with the form and the kinds, before the
//! stack is read or AWS is asked.

use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_provision");

/// Runs `provision` with no AWS endpoint that answers: a call would fail differently.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_address_is_refused_with_the_form_and_the_kinds() {
    let stack = testkit::workspace_root().join("stacks/orderflow.toml");
    let stack = stack.to_str().unwrap();
    for (args, given) in [
        (vec!["state", "rm", "--stack", stack, "queue"], "queue"),
        (
            vec![
                "state",
                "show",
                "--stack",
                stack,
                "compute_environment.spot",
            ],
            "compute_environment.spot",
        ),
        (
            vec!["import", "--stack", stack, "bucket.", "some-bucket"],
            "bucket.",
        ),
    ] {
        let (code, err) = run(&args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "`{given}` is not a resource address: give KIND.KEY"
            )),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("bucket, repository, log_group, role"),
            "{args:?}: {err}"
        );
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error")).count(),
            1,
            "{err}"
        );
    }
}
