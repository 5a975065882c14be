//! `provision jobs` as a user runs it: the real binary against moto, through the fault proxy
//! so that every request it makes is counted. Jobs are submitted with the SDK into queues
//! registered by the names `stack::names` derives.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use aws_sdk_batch::types::{
    ArrayProperties, CeState, CeType, ComputeEnvironmentOrder, JobStatus, JqState,
};
use futures::stream::{self, StreamExt};
use provision::cli::StackArgs;
use provision::stack::Stack;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_provision");
/// moto's default account: the proxy passes it on, so the SDK calls here and the tool's calls
/// through the proxy see the same resources.
pub const ACCOUNT: &str = "123456789012";

/// A stack with two queues and one job, written to a temporary directory.
pub struct TestStack {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub stack: Stack,
}

pub fn write_stack(prefix: &str) -> TestStack {
    let name = testkit::unique_name(prefix);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[stack]
name = "{name}"
region = "us-east-1"

[compute.spot]
type = "spot"
max_vcpus = 16
instance_types = ["c5.xlarge"]

[queues.main]
priority = 1
compute = ["spot"]

[queues.backfill]
priority = 2
compute = ["spot"]

[jobs.work]
queue = "main"
image = "public.ecr.aws/docker/library/busybox:latest"
command = ["true"]
vcpus = 1
memory_mib = 512
"#
        ),
    )
    .unwrap();
    let args = StackArgs {
        stack: path.clone(),
        env: None,
        set: vec![],
    };
    let stack = provision::stack::load_args(&args).unwrap_or_else(|d| panic!("test stack: {d}"));
    TestStack {
        _dir: dir,
        path,
        stack,
    }
}

pub async fn batch() -> aws_sdk_batch::Client {
    let config = testkit::emulator().config_loader().load().await;
    aws_sdk_batch::Client::new(&config)
}

/// Registers the stack's queues and job definition as `apply` names them; returns the job
/// definition's name.
pub async fn register(batch: &aws_sdk_batch::Client, stack: &Stack) -> String {
    let config = testkit::emulator().config_loader().load().await;
    let iam = aws_sdk_iam::Client::new(&config);
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"batch.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let role = iam
        .create_role()
        .role_name(stack.role_name("batch-service"))
        .assume_role_policy_document(trust)
        .send()
        .await
        .expect("create role");
    let ce = batch
        .create_compute_environment()
        .compute_environment_name(stack.compute_environment_name("spot", None))
        .r#type(CeType::Unmanaged)
        .state(CeState::Enabled)
        .service_role(role.role().unwrap().arn())
        .send()
        .await
        .expect("create compute environment");
    for (key, queue) in &stack.queues {
        batch
            .create_job_queue()
            .job_queue_name(stack.queue_name(key))
            .state(JqState::Enabled)
            .priority(queue.priority as i32)
            .compute_environment_order(
                ComputeEnvironmentOrder::builder()
                    .order(1)
                    .compute_environment(ce.compute_environment_arn().unwrap())
                    .build(),
            )
            .send()
            .await
            .expect("create job queue");
    }
    let name = format!("{}-work", stack.prefix());
    crate::jobs::register_busybox(batch, &name, 512).await;
    name
}

/// Submits `n` jobs (16 at a time) to `queue`; `array_size` makes each an array job.
pub async fn submit_many(
    batch: &aws_sdk_batch::Client,
    queue: &str,
    definition: &str,
    n: usize,
    array_size: Option<i32>,
) -> Vec<String> {
    stream::iter(0..n)
        .map(|i| async move {
            let mut submit = batch
                .submit_job()
                .job_name(format!("work-{i:05}"))
                .job_queue(queue)
                .job_definition(definition);
            if let Some(size) = array_size {
                submit = submit.array_properties(ArrayProperties::builder().size(size).build());
            }
            submit
                .send()
                .await
                .expect("submit job")
                .job_id()
                .unwrap()
                .to_string()
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Waits until `n` jobs of `queue` are SUCCEEDED (moto without Docker ends them at once, on
/// threads of its own).
pub async fn wait_succeeded(batch: &aws_sdk_batch::Client, queue: &str, n: usize) {
    let start = Instant::now();
    loop {
        let mut pages = batch
            .list_jobs()
            .job_queue(queue)
            .job_status(JobStatus::Succeeded)
            .max_results(1000)
            .into_paginator()
            .send();
        let mut found = 0;
        while let Some(page) = pages.next().await {
            found += page.unwrap().job_summary_list().len();
        }
        if found >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{found} of {n} jobs succeeded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn run(mut cmd: Command) -> Output {
    let out = cmd.output().expect("run provision");
    eprintln!(
        "--- {:?}\nexit {:?}\nstdout ({} bytes)\nstderr:\n{}",
        cmd.get_args().collect::<Vec<_>>(),
        out.status.code(),
        out.stdout.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn jobs_cmd(proxy: &testkit::faults::FaultProxy, t: &TestStack, args: &[&str]) -> Command {
    let mut cmd = proxy.command(BIN);
    cmd.arg("jobs").arg("--stack").arg(&t.path).args(args);
    cmd.env_remove("PROVISION_STACK")
        .env_remove("PROVISION_ENV");
    cmd
}

/// `provision jobs ARGS --json` through `proxy`: the jobs and the requests it made.
fn list_json(
    proxy: &testkit::faults::FaultProxy,
    t: &TestStack,
    args: &[&str],
) -> (Vec<Value>, usize) {
    let before = proxy.counts().requests;
    let mut all = args.to_vec();
    all.push("--json");
    let out = run(jobs_cmd(proxy, t, &all));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("jobs --json is a list");
    (jobs, proxy.counts().requests - before)
}

#[tokio::test]
async fn jobs_lists_every_page_of_every_queue_with_array_counts_in_few_requests() {
    let t = write_stack("jl");
    let batch = batch().await;
    let definition = register(&batch, &t.stack).await;
    let main = t.stack.queue_name("main");
    let backfill = t.stack.queue_name("backfill");
    // More than one page (1,000) in one status of one queue.
    let singles = submit_many(&batch, &main, &definition, 1003, None).await;
    let arrays = submit_many(&batch, &backfill, &definition, 2, Some(3)).await;
    wait_succeeded(&batch, &main, 1003).await;
    wait_succeeded(&batch, &backfill, 2).await;
    let proxy = testkit::faults::FaultProxy::start(&testkit::emulator().endpoint, ACCOUNT);

    let (jobs, requests) = list_json(&proxy, &t, &[]);
    assert_eq!(jobs.len(), 1005, "every job of both queues, each once");
    let mut ids: Vec<&str> = jobs.iter().map(|j| j["job_id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1005);
    assert!(singles
        .iter()
        .chain(&arrays)
        .all(|id| ids.contains(&id.as_str())));
    // 2 queues × 7 statuses, one more page for main's 1,003 SUCCEEDED, one DescribeJobs for
    // the two array parents' children.
    assert_eq!(requests, 2 * 7 + 1 + 1);
    let parent = jobs.iter().find(|j| j["job_id"] == arrays[0]).unwrap();
    assert_eq!(parent["queue"], "backfill");
    assert_eq!(parent["array"]["size"], 3);
    assert_eq!(parent["array"]["by_status"]["SUCCEEDED"], 3);
    let single = jobs.iter().find(|j| j["job_id"] == singles[0]).unwrap();
    assert_eq!(single["queue"], "main");
    assert_eq!(single["status"], "SUCCEEDED");
    assert!(single["array"].is_null());
    assert!(single["job_definition"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{definition}:")));
    let created: Vec<&str> = jobs
        .iter()
        .map(|j| j["created"].as_str().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // Filters: one queue; a status with no job; a creation window (one filtered stream a queue).
    let (only_backfill, requests) = list_json(&proxy, &t, &["--queue", "backfill"]);
    assert_eq!(only_backfill.len(), 2);
    assert_eq!(requests, 7 + 1);
    let (failed, requests) = list_json(&proxy, &t, &["--status", "failed"]);
    assert!(failed.is_empty());
    assert_eq!(requests, 2);
    let (recent, requests) = list_json(&proxy, &t, &["--since", "1h", "--status", "SUCCEEDED"]);
    assert_eq!(recent.len(), 1005);
    assert_eq!(
        requests,
        2 + 1 + 1,
        "main: 2 pages, backfill: 1, DescribeJobs: 1"
    );
    let (older, _) = list_json(&proxy, &t, &["--since", "1ms", "--queue", "main"]);
    assert!(
        older.is_empty(),
        "--since leaves out the jobs created before"
    );

    // The table, and a watch that ends because every job has ended.
    let out = run(jobs_cmd(
        &proxy,
        &t,
        &["--queue", "backfill", "--watch", "--poll-interval", "1s"],
    ));
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("JOB ID"), "{table}");
    assert!(table.contains("3 children: SUCCEEDED 3"), "{table}");
    assert!(table.contains("2 jobs: SUCCEEDED 2"), "{table}");
}

#[tokio::test]
async fn jobs_lists_everything_under_throttling() {
    let t = write_stack("jt");
    let batch = batch().await;
    let definition = register(&batch, &t.stack).await;
    let main = t.stack.queue_name("main");
    submit_many(&batch, &main, &definition, 40, None).await;
    wait_succeeded(&batch, &main, 40).await;
    let proxy = testkit::faults::FaultProxy::start(&testkit::emulator().endpoint, ACCOUNT);
    // A quarter of the requests answered with a throttle or a 500, as AWS does under load.
    proxy.set_faults(250, 7);
    let (jobs, _) = list_json(&proxy, &t, &[]);
    assert_eq!(jobs.len(), 40);
    assert!(proxy.counts().throttled + proxy.counts().server_errors > 0);
}

#[test]
fn jobs_bad_filters_fail_before_any_request_and_name_the_valid_values() {
    let t = write_stack("jb");
    let proxy = testkit::faults::FaultProxy::start(&testkit::emulator().endpoint, ACCOUNT);
    let cases: [(&[&str], &str); 5] = [
        (
            &["--queue", "gpu"],
            "error: no queue `gpu` in the stack; its queues: backfill, main",
        ),
        (
            &["--status", "DONE"],
            "error: no job status `DONE`; the statuses: SUBMITTED, PENDING, RUNNABLE, STARTING, RUNNING, SUCCEEDED, FAILED",
        ),
        (&["--since", "yesterday"], "error: --since `yesterday`:"),
        (
            &["--watch", "--poll-interval", "100ms"],
            "error: --poll-interval 100ms is shorter than 1s",
        ),
        (&["--poll-interval", "5s"], "--watch"),
    ];
    for (args, message) in cases {
        let out = run(jobs_cmd(&proxy, &t, args));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    let bad = t.path.with_file_name("bad.toml");
    std::fs::write(&bad, "[stack]\nname = \"x\"\nregion = 5\n").unwrap();
    let mut cmd = proxy.command(BIN);
    cmd.arg("jobs").arg("--stack").arg(&bad);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml:3:"));
    assert_eq!(proxy.counts().requests, 0, "no AWS call on bad input");
}

/// Requests made by a boto3 paginator over `queue`, status by status, with its default page
/// size (100): what a submit script or `aws batch list-jobs` does.
fn boto3_requests(proxy: &testkit::faults::FaultProxy, queues: &[String]) -> (usize, usize) {
    let script = r#"
import sys, boto3
batch = boto3.client("batch", endpoint_url=sys.argv[1], region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing")
n = 0
for queue in sys.argv[2:]:
    for status in ["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED"]:
        for page in batch.get_paginator("list_jobs").paginate(jobQueue=queue, jobStatus=status):
            n += len(page["jobSummaryList"])
print(n)
"#;
    let before = proxy.counts().requests;
    let out = Command::new(testkit::venv_python())
        .arg("-c")
        .arg(script)
        .arg(&proxy.endpoint)
        .args(queues)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (listed, proxy.counts().requests - before)
}

/// `make bench-jobs`: the requests of listing 10,000 jobs (and 20 array jobs), written to
/// bench/jobs.md. Submitting the jobs takes moto a minute or two.
#[tokio::test]
#[ignore = "benchmark: make bench-jobs"]
async fn bench_listing_10000_jobs() {
    const SINGLES: usize = 10_000;
    const ARRAYS: usize = 20;
    let t = write_stack("jbench");
    let batch = batch().await;
    let definition = register(&batch, &t.stack).await;
    let main = t.stack.queue_name("main");
    let backfill = t.stack.queue_name("backfill");
    let start = Instant::now();
    submit_many(&batch, &main, &definition, SINGLES, None).await;
    submit_many(&batch, &backfill, &definition, ARRAYS, Some(5)).await;
    wait_succeeded(&batch, &main, SINGLES).await;
    wait_succeeded(&batch, &backfill, ARRAYS).await;
    eprintln!("submitted in {:?}", start.elapsed());
    let proxy = testkit::faults::FaultProxy::start(&testkit::emulator().endpoint, ACCOUNT);

    let mut rows = Vec::new();
    for (label, args) in [
        ("every queue, every status", vec![]),
        ("`--since 1d`", vec!["--since", "1d"]),
        ("`--status RUNNING`", vec!["--status", "RUNNING"]),
        ("`--queue main`", vec!["--queue", "main"]),
    ] {
        let start = Instant::now();
        let (jobs, requests) = list_json(&proxy, &t, &args);
        rows.push((label, jobs.len(), requests, start.elapsed()));
    }
    assert_eq!(rows[0].1, SINGLES + ARRAYS);
    let (boto_listed, boto_requests) = boto3_requests(&proxy, &[main, backfill]);
    assert_eq!(boto_listed, SINGLES + ARRAYS);

    let mut md = String::from(
        "# `provision jobs`: requests to list 10,000 jobs\n\n\
         Written by `make bench-jobs` (an ignored test, `joblist::bench_listing_10000_jobs`): \
         10,000 jobs in one queue and 20 array jobs of 5 children in a second, submitted to \
         moto with the SDK; every request counted by the test proxy between the tool and moto. \
         The reference is a boto3 `list_jobs` paginator over each queue and status at its \
         default page size (100), as a submit script or `aws batch list-jobs` lists them. \
         Times are the debug binary against moto, for scale only.\n\n\
         | listing | jobs | requests | wall time |\n|---|---|---|---|\n",
    );
    for (label, jobs, requests, time) in &rows {
        md.push_str(&format!(
            "| {label} | {jobs} | {requests} | {:.2} s |\n",
            time.as_secs_f64()
        ));
    }
    md.push_str(&format!(
        "| boto3 paginator, every queue and status | {boto_listed} | {boto_requests} | |\n\n\
         Every queue and status: {} requests against boto3's {boto_requests}, {:.1}x fewer. \
         The formula: per queue, one ListJobs stream per status asked for, `max(1, ⌈n/1000⌉)` \
         pages each (a status with no job costs its one empty page); with `--since` one \
         filtered stream per queue (`max(1, ⌈n/1000⌉)`, every status at once); plus one \
         DescribeJobs per 100 array parents for their children's counts. Here: 2 queues × 7 \
         statuses + 9 more pages for 10,000 SUCCEEDED jobs + 1 DescribeJobs = 24.\n\n\
         `--watch` and the dashboard's auto-refresh repeat a listing no faster than one request \
         per 0.5 s on average (`jobs::list::MAX_CALLS_PER_SECOND`): the 24-request listing \
         every 12 s rather than every 5 s.\n",
        rows[0].2,
        boto_requests as f64 / rows[0].2 as f64
    ));
    let path = testkit::workspace_root().join("bench/jobs.md");
    std::fs::write(&path, md).unwrap();
    eprintln!("wrote {}", path.display());
}
