//! Operations: `logs` of an array's children, `--job`, `--filter-pattern`, `--since`; the
//! console links of `status`; the default retry rules in `plan`. The real binary against moto,
//! with the log events put where the job definitions send them.

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use serde_json::Value;

use crate::jobs::{
    apply_like, run, stack_toml, status_json, stderr, stdout, submit_ok, write_stack, Moto,
};

/// The stream Batch reported for job (or child) `id`.
fn stream_of(moto: &Moto, id: &str) -> String {
    status_json(moto, &[id])[0]["log_stream"]
        .as_str()
        .unwrap_or_else(|| panic!("job {id} has no log stream"))
        .to_string()
}

/// Writes `(offset ms from `start`, message)` events into a new stream of `group`.
async fn put_events(moto: &Moto, group: &str, stream: &str, start: i64, events: &[(i64, &str)]) {
    let logs = aws_sdk_cloudwatchlogs::Client::new(&moto.config().await);
    logs.create_log_stream()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await
        .unwrap();
    let events = events.iter().map(|(offset, message)| {
        InputLogEvent::builder()
            .timestamp(start + offset)
            .message(*message)
            .build()
            .unwrap()
    });
    logs.put_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .set_log_events(Some(events.collect()))
        .send()
        .await
        .unwrap();
}

fn logs(moto: &Moto, args: &[&str]) -> std::process::Output {
    let mut cmd = moto.provision();
    cmd.arg("logs").args(args);
    run(cmd)
}

fn lines(out: &std::process::Output) -> Vec<String> {
    stdout(out).lines().map(str::to_string).collect()
}

#[tokio::test]
async fn logs_of_an_array_follow_every_child_with_its_index() {
    let moto = Moto::shared();
    let t = write_stack(stack_toml);
    apply_like(&moto, &t.stack).await;
    let parent = submit_ok(&moto, &t.path, &["prepare", "--array-size", "3"]);
    let group = t.stack.log_group_name();
    let start = chrono::Utc::now().timestamp_millis() - 60_000;
    // Children 0 and 2 wrote interleaved lines; child 1 never started its container, so the
    // stream Batch named for it does not exist (AWS then refuses a read naming it).
    let stream0 = stream_of(&moto, &format!("{parent}:0"));
    let stream2 = stream_of(&moto, &format!("{parent}:2"));
    put_events(
        &moto,
        &group,
        &stream0,
        start,
        &[(0, "zero a"), (20, "zero ERROR b")],
    )
    .await;
    put_events(
        &moto,
        &group,
        &stream2,
        start,
        &[(10, "two a"), (30, "two ERROR b")],
    )
    .await;

    let expected = [
        "[0] zero a",
        "[2] two a",
        "[0] zero ERROR b",
        "[2] two ERROR b",
    ];
    for follow in [false, true] {
        let mut args = vec![parent.as_str()];
        if follow {
            // Every child has ended: following reads everything once and stops.
            args.extend(["--follow", "--poll-interval", "1"]);
        }
        let out = logs(&moto, &args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(lines(&out), expected, "in time order across the children");
        assert!(
            stderr(&out).contains(&format!("no log from children 1 of {parent}")),
            "{}",
            stderr(&out)
        );
    }

    let out = logs(&moto, &[&parent, "--filter-pattern", "ERROR"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out), ["[0] zero ERROR b", "[2] two ERROR b"]);

    // One child alone: its lines without a prefix, filtered on the one stream too.
    let child = format!("{parent}:2");
    let out = logs(&moto, &[&child, "--filter-pattern", "ERROR"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out), ["two ERROR b"]);
}

#[tokio::test]
async fn since_keeps_only_recent_events() {
    let moto = Moto::shared();
    let t = write_stack(stack_toml);
    apply_like(&moto, &t.stack).await;
    let id = submit_ok(&moto, &t.path, &["train-alpha"]);
    let now = chrono::Utc::now().timestamp_millis();
    let two_hours = 2 * 3_600_000;
    put_events(
        &moto,
        &t.stack.log_group_name(),
        &stream_of(&moto, &id),
        now - two_hours,
        &[(0, "old"), (two_hours - 60_000, "recent")],
    )
    .await;
    let out = logs(&moto, &[&id]);
    assert_eq!(lines(&out), ["old", "recent"]);
    for extra in [&[][..], &["--filter-pattern", "recent"][..]] {
        let mut args = vec![id.as_str(), "--since", "1h"];
        args.extend(extra);
        let out = logs(&moto, &args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(lines(&out), ["recent"]);
    }
}

#[tokio::test]
async fn job_name_reads_the_latest_job_of_a_stack_job() {
    let moto = Moto::shared();
    let t = write_stack(stack_toml);
    apply_like(&moto, &t.stack).await;
    let group = t.stack.log_group_name();
    let start = chrono::Utc::now().timestamp_millis() - 60_000;
    let stack = t.path.to_str().unwrap();

    let out = logs(&moto, &["--stack", stack, "--job", "train-beta"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no job of `train-beta`"), "{err}");
    assert!(
        err.contains(&format!("provision submit --stack {stack} train-beta")),
        "{err}"
    );

    let first = submit_ok(&moto, &t.path, &["train-alpha"]);
    let second = submit_ok(&moto, &t.path, &["train-alpha"]);
    // A job of another stack job never counts.
    submit_ok(&moto, &t.path, &["train-beta"]);
    for (id, line) in [(&first, "first run"), (&second, "second run")] {
        put_events(&moto, &group, &stream_of(&moto, id), start, &[(0, line)]).await;
    }
    let out = logs(&moto, &["--stack", stack, "--job", "train-alpha"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out), ["second run"]);
    assert!(
        stderr(&out).starts_with(&second),
        "names the job it reads: {}",
        stderr(&out)
    );

    // In a status: the newest job that ended FAILED (none did on this server).
    let out = logs(
        &moto,
        &[
            "--stack",
            stack,
            "--job",
            "train-alpha",
            "--status",
            "failed",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("in status FAILED"),
        "{}",
        stderr(&out)
    );
    let out = logs(
        &moto,
        &[
            "--stack",
            stack,
            "--job",
            "train-alpha",
            "--status",
            "succeeded",
        ],
    );
    assert_eq!(lines(&out), ["second run"]);

    // The latest job of an array job: every child.
    let parent = submit_ok(&moto, &t.path, &["prepare", "--array-size", "2"]);
    for i in 0..2 {
        let stream = stream_of(&moto, &format!("{parent}:{i}"));
        put_events(&moto, &group, &stream, start, &[(i, &format!("child {i}"))]).await;
    }
    let out = logs(&moto, &["--stack", stack, "--job", "prepare"]);
    assert_eq!(lines(&out), ["[0] child 0", "[1] child 1"]);
}

#[test]
fn bad_job_names_statuses_and_durations_exit_1_before_any_call() {
    let t = write_stack(stack_toml);
    let stack = t.path.to_str().unwrap();
    // Nothing listens here: each of these must fail before calling AWS.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let fails = |args: &[&str]| {
        let mut cmd = testkit::emulator().command(env!("CARGO_BIN_EXE_provision"));
        cmd.env("AWS_ENDPOINT_URL", &closed)
            .env_remove("PROVISION_STACK")
            .arg("logs")
            .args(args);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty());
        stderr(&out)
    };
    let err = fails(&["--stack", stack, "--job", "nosuch"]);
    assert!(
        err.contains("no job `nosuch` in the stack; its jobs: prepare, train-{alpha,beta}"),
        "{err}"
    );
    let err = fails(&["--stack", stack, "--job", "prepare", "--status", "done"]);
    assert!(
        err.contains("unknown job status `done`: use one of SUBMITTED,"),
        "{err}"
    );
    let err = fails(&["some-id", "--since", "10 fortnights"]);
    assert!(err.contains("--since"), "{err}");
    let err = fails(&["--job", "prepare"]);
    assert!(err.contains("--stack"), "{err}");
    let err = fails(&["some-id", "--job", "prepare", "--stack", stack]);
    assert!(err.contains("cannot be used with"), "{err}");
}

#[tokio::test]
async fn status_links_each_job_and_its_log_stream_to_the_console() {
    let moto = Moto::shared();
    let t = write_stack(stack_toml);
    apply_like(&moto, &t.stack).await;
    let id = submit_ok(&moto, &t.path, &["train-alpha"]);
    let parent = submit_ok(&moto, &t.path, &["prepare", "--array-size", "2"]);
    let reports = status_json(&moto, &[&id, &parent]);
    let job_url = format!(
        "https://us-east-1.console.aws.amazon.com/batch/home?region=us-east-1#jobs/detail/{id}"
    );
    assert_eq!(reports[0]["console_url"], job_url.as_str());
    let stream = reports[0]["log_stream"].as_str().unwrap();
    let log_url = reports[0]["log_url"].as_str().unwrap();
    let group = t.stack.log_group_name().replace('/', "$252F");
    assert!(
        log_url.starts_with(&format!(
            "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1\
             #logsV2:log-groups/log-group/{group}/log-events/"
        )),
        "{log_url}"
    );
    assert!(log_url.ends_with(&stream.replace('/', "$252F").replace(':', "$253A")));
    // The existing fields stay, in their order; an array parent has no stream of its own.
    assert_eq!(reports[1]["array"]["SUCCEEDED"], 2);
    assert_eq!(reports[1]["log_url"], Value::Null);

    let mut cmd = moto.provision();
    cmd.arg("status").args([&id, &parent]);
    let text = stdout(&run(cmd));
    assert!(text.contains(&format!("{id} job:  {job_url}")), "{text}");
    assert!(text.contains(&format!("{id} logs: {log_url}")), "{text}");
    assert!(!text.contains(&format!("{parent} logs:")), "{text}");
}

#[tokio::test]
async fn following_a_hundred_children_takes_a_handful_of_calls() {
    let emulator = testkit::emulator();
    let proxy = testkit::faults::FaultProxy::start(&emulator.endpoint, &testkit::unique_account());
    let moto = Moto {
        endpoint: proxy.endpoint.clone(),
    };
    let t = write_stack(stack_toml);
    apply_like(&moto, &t.stack).await;
    let parent = submit_ok(&moto, &t.path, &["prepare", "--array-size", "100"]);
    let group = t.stack.log_group_name();
    let start = chrono::Utc::now().timestamp_millis() - 60_000;
    let batch = aws_sdk_batch::Client::new(&moto.config().await);
    let ids: Vec<String> = (0..100).map(|i| format!("{parent}:{i}")).collect();
    // moto runs each child on a thread of its own: wait until all have run.
    let mut children = Vec::new();
    for _ in 0..100 {
        let out = batch
            .describe_jobs()
            .set_jobs(Some(ids.clone()))
            .send()
            .await
            .unwrap();
        children = out.jobs().to_vec();
        let streams = children
            .iter()
            .filter(|c| provision::jobs::describe::log_stream(c).is_some())
            .count();
        if streams == 100 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for child in &children {
        let (_, index) = child.job_id().unwrap().rsplit_once(':').unwrap();
        let index: i64 = index.parse().unwrap();
        let stream = provision::jobs::describe::log_stream(child).unwrap();
        put_events(
            &moto,
            &group,
            stream,
            start,
            &[(index, &format!("line {index}"))],
        )
        .await;
    }

    let before = proxy.counts().requests;
    let out = logs(&moto, &[&parent, "--follow"]);
    let calls = proxy.counts().requests - before;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = lines(&out);
    assert_eq!(printed.len(), 100);
    assert_eq!(printed[0], "[0] line 0");
    assert_eq!(printed[99], "[99] line 99");
    // DescribeJobs of the parent, its job definition (for the log group), the 100 children in
    // one call, and one FilterLogEvents over the 100 streams.
    assert!(calls <= 5, "{calls} calls to follow 100 children");

    // What a per-job script does (the seeds' boto3 loops, `aws logs get-log-events` per job):
    // each child described, then its stream read, through the same counting proxy.
    let logs_client = aws_sdk_cloudwatchlogs::Client::new(&moto.config().await);
    let before = proxy.counts().requests;
    let mut read = 0;
    for i in 0..100 {
        let child = batch
            .describe_jobs()
            .jobs(format!("{parent}:{i}"))
            .send()
            .await
            .unwrap();
        let stream = provision::jobs::describe::log_stream(&child.jobs()[0])
            .unwrap()
            .to_string();
        let events = logs_client
            .get_log_events()
            .log_group_name(&group)
            .log_stream_name(stream)
            .start_from_head(true)
            .send()
            .await
            .unwrap();
        read += events.events().len();
    }
    let per_job = proxy.counts().requests - before;
    assert_eq!(read, 100);
    // `make bench-logs` reads this line into bench/logs.md.
    eprintln!("bench-logs: following 100 children: {calls} calls; per-job script: {per_job} calls");
}

#[test]
fn plan_shows_the_default_retry_rules() {
    let name = testkit::unique_name("retry");
    let text = std::fs::read_to_string(testkit::workspace_root().join("stacks/orderflow.toml"))
        .unwrap()
        .replace("name = \"orderflow\"", &format!("name = \"{name}\""))
        .replace("s3_endpoint = true", "s3_endpoint = false");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = testkit::emulator().command(env!("CARGO_BIN_EXE_provision"));
    cmd.args(["plan", "--json", "--env", "dev", "--stack"])
        .arg(&path);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let change = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"].as_str().unwrap().ends_with(".prepare"))
        .expect("the prepare job definition is planned");
    let rules = &change["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "retry_rules")
        .expect("retry_rules attribute")["after"];
    let rule = |reason: Option<&str>, code: Option<&str>, action: &str| {
        serde_json::json!({
            "on_status_reason": reason, "on_reason": null, "on_exit_code": code, "action": action
        })
    };
    assert_eq!(
        rules,
        &serde_json::json!([
            rule(Some("Host EC2*"), None, "RETRY"),
            rule(None, Some("1"), "EXIT"),
            rule(None, Some("75"), "RETRY"),
        ])
    );
}
