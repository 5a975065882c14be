//! What users read, pinned as insta snapshots (`tests/it/snapshots/`): `validate` text, `plan`
//! text and JSON before and after an apply, the `status` table, and the main error messages.
//! Filters replace what differs from run to run (the unique stack name, the account, AWS ids,
//! job ids, times, ports), so a snapshot changes only when the output does. After an intended
//! change: `INSTA_UPDATE=always cargo test --workspace -- snapshots`, then review the diff.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use testkit::faults::FaultProxy;

const BIN: &str = env!("CARGO_BIN_EXE_provision");

/// A stack name of fixed length (filtered output keeps its column widths from run to run).
fn fixed_length_name() -> String {
    let name = testkit::unique_name("snap");
    format!(
        "{name}-{}",
        "z".repeat(14usize.saturating_sub(name.len() + 1))
    )
}

/// Snapshot settings for output that names no AWS resource of a run.
fn offline_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[port]");
    settings
}

/// Snapshot settings with the filters for `name` (a stack) and `account`.
fn settings(name: &str, account: &str) -> insta::Settings {
    let mut settings = offline_settings();
    settings.add_filter(&regex::escape(name), "[stack]");
    settings.add_filter(&regex::escape(account), "[account]");
    // `submit`'s default job name ends in the submission time.
    settings.add_filter(r"-\d{8}-\d{6}\b", "-[yyyymmdd-hhmmss]");
    settings.add_filter(
        r"\b(vpc|subnet|rtb|sg|vpce|lt|igw|acl)-[0-9a-f]{8,17}\b",
        "$1-[id]",
    );
    settings.add_filter(
        // No leading word boundary: the console's log link escapes `/` as `$252F` before one.
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
        "[uuid]",
    );
    settings.add_filter(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
        "[time]",
    );
    settings
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A copy of `stacks/orderflow.toml` under `name`, in a temporary directory.
fn orderflow_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let source = std::fs::read_to_string(testkit::workspace_root().join("stacks/orderflow.toml"))
        .unwrap()
        .replace("name = \"orderflow\"", &format!("name = \"{name}\""));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.toml");
    std::fs::write(&path, source).unwrap();
    (dir, path)
}

/// Runs `provision` through `proxy` (a private account) and returns its output.
fn run(proxy: &FaultProxy, args: &[&str], stack: &Path) -> Output {
    proxy
        .command(BIN)
        .args(args)
        .arg("--stack")
        .arg(stack)
        .args(["--env", "dev"])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs `provision` in the workspace root without any AWS setting: commands that fail before
/// any AWS call.
fn offline(args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(testkit::workspace_root())
        .args(args)
        .env_remove("PROVISION_STACK")
        .env_remove("PROVISION_ENV")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn validate_text_of_the_reference_stack() {
    for env in ["dev", "prod"] {
        let out = offline(&["validate", "--stack", "stacks/orderflow.toml", "--env", env]);
        let stdout = ok(out, "validate");
        let snapshot = format!("validate_{env}");
        offline_settings().bind(|| insta::assert_snapshot!(snapshot.as_str(), stdout));
    }
}

#[test]
fn error_messages_before_any_aws_call() {
    let cases: [(&str, &[&str]); 4] = [
        (
            "error_bad_stack",
            &[
                "validate",
                "--stack",
                "tests/data/stacks/bad/many_errors.toml",
            ],
        ),
        (
            "error_unknown_env",
            &["plan", "--stack", "stacks/orderflow.toml", "--env", "nope"],
        ),
        (
            "error_bad_set",
            &[
                "validate",
                "--stack",
                "stacks/orderflow.toml",
                "--set",
                "jobs.train.vcpus=0",
            ],
        ),
        (
            "error_unknown_flag",
            &["plan", "--stack", "stacks/orderflow.toml", "--frobnicate"],
        ),
    ];
    for (snapshot, args) in cases {
        let out = offline(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let report = format!(
            "exit: {:?}\n--- stdout\n{}--- stderr\n{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
        offline_settings().bind(|| insta::assert_snapshot!(snapshot, report));
    }
}

#[test]
fn error_message_when_aws_cannot_be_reached() {
    // A port nothing listens on: the credentials check fails at once, naming the endpoint.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = testkit::emulator()
        .command(BIN)
        .env("AWS_ENDPOINT_URL", &endpoint)
        .current_dir(testkit::workspace_root())
        .args(["plan", "--stack", "stacks/orderflow.toml", "--env", "dev"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    offline_settings().bind(|| insta::assert_snapshot!("error_unreachable", stderr));
}

/// The reference stack in an account of its own: the plan of a first apply (text and JSON),
/// the plan after it, and a submitted job's `status` table.
#[test]
fn plan_apply_and_status_as_users_read_them() {
    let proxy = FaultProxy::start(&testkit::emulator().endpoint, &testkit::unique_account());
    let name = fixed_length_name();
    let (_dir, stack) = orderflow_copy(&name);
    let settings = settings(&name, &proxy.account);

    let plan = ok(run(&proxy, &["plan"], &stack), "plan");
    settings.bind(|| insta::assert_snapshot!("plan_create_text", plan));
    let json = ok(run(&proxy, &["plan", "--json"], &stack), "plan --json");
    settings.bind(|| insta::assert_snapshot!("plan_create_json", json));

    ok(run(&proxy, &["apply", "--auto-approve"], &stack), "apply");
    let plan = ok(run(&proxy, &["plan"], &stack), "plan after apply");
    settings.bind(|| insta::assert_snapshot!("plan_no_changes_text", plan));
    let json = ok(
        run(&proxy, &["plan", "--json"], &stack),
        "plan --json after apply",
    );
    settings.bind(|| insta::assert_snapshot!("plan_no_changes_json", json));

    let job_id = ok(run(&proxy, &["submit", "prepare"], &stack), "submit");
    let status = proxy
        .command(BIN)
        .args(["status", job_id.trim()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let table = ok(status, "status");
    settings.bind(|| insta::assert_snapshot!("status_table", table));

    ok(
        run(&proxy, &["destroy", "--auto-approve"], &stack),
        "destroy",
    );
}
