//! The job commands (`submit`, `status`, `logs`, `run-local`) as a user runs them: the real
//! binary against moto. Each test registers what `apply` would (role, compute environment,
//! queue, job definitions, log group) with SDK calls, by the names `stack::names` derives, so
//! these tests hold the commands to those names without depending on the engine.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use aws_sdk_batch::types::{
    CeState, CeType, ComputeEnvironmentOrder, ContainerProperties, JobDefinitionType, JqState,
    KeyValuePair, LogConfiguration, LogDriver, ResourceRequirement, ResourceType,
};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use provision::cli::StackArgs;
use provision::stack::Stack;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_provision");
/// moto's default account.
const ACCOUNT: &str = "123456789012";

/// A stack with a plain job, a matrix job and a second queue-less-looking job that runs a shell
/// command, so `run-local` can run its own command.
pub(crate) fn stack_toml(name: &str) -> String {
    format!(
        r#"
[stack]
name = "{name}"
region = "us-east-1"

[buckets.data]
versioning = true

[repositories.runtime]
keep_images = 5

[compute.spot]
type = "spot"
max_vcpus = 16
instance_types = ["c5.xlarge"]

[queues.main]
priority = 1
compute = ["spot"]

[jobs.prepare]
queue = "main"
image = "runtime"
command = ["runtime", "prepare"]
vcpus = 2
memory_mib = 2048
env = {{ CHECKPOINT_INTERVAL = "50" }}

[jobs.train]
queue = "main"
image = "runtime"
command = ["sh", "-c", "echo training {{dataset}} $DATASET"]
vcpus = 1
memory_mib = 1024
matrix = {{ dataset = ["alpha", "beta"] }}
env = {{ DATASET = "{{dataset}}" }}
"#
    )
}

/// A moto server: the shared one, or the private one whose jobs all fail.
pub(crate) struct Moto {
    pub(crate) endpoint: String,
}

impl Moto {
    pub(crate) fn shared() -> Self {
        let emulator = testkit::emulator();
        Moto {
            endpoint: emulator.endpoint.clone(),
        }
    }

    /// A second server started with `MOTO_SIMPLE_BATCH_FAIL_AFTER=0` (read per job, but only
    /// from the server's own environment), so every job it runs ends FAILED.
    fn failing() -> Self {
        static FAILING: OnceLock<testkit::Emulator> = OnceLock::new();
        Moto::shared();
        let emulator = FAILING
            .get_or_init(|| testkit::start_with_env(&[("MOTO_SIMPLE_BATCH_FAIL_AFTER", "0")]));
        Moto {
            endpoint: emulator.endpoint.clone(),
        }
    }

    pub(crate) fn provision(&self) -> Command {
        let mut cmd = testkit::emulator().command(BIN);
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint);
        cmd.env_remove("PROVISION_STACK")
            .env_remove("PROVISION_ENV");
        cmd
    }

    pub(crate) async fn config(&self) -> aws_config::SdkConfig {
        testkit::emulator()
            .config_loader()
            .endpoint_url(&self.endpoint)
            .load()
            .await
    }
}

/// A stack file in a temporary directory, loaded as the commands load it.
pub(crate) struct TestStack {
    _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
    pub(crate) stack: Stack,
}

pub(crate) fn write_stack(toml: impl FnOnce(&str) -> String) -> TestStack {
    let name = testkit::unique_name("jobs");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.toml");
    std::fs::write(&path, toml(&name)).unwrap();
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

/// Registers what `apply` would for `stack`, by the derived names.
pub(crate) async fn apply_like(moto: &Moto, stack: &Stack) {
    let config = moto.config().await;
    let iam = aws_sdk_iam::Client::new(&config);
    let batch = aws_sdk_batch::Client::new(&config);
    let logs = aws_sdk_cloudwatchlogs::Client::new(&config);

    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"batch.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let role = iam
        .create_role()
        .role_name(stack.role_name("batch-service"))
        .assume_role_policy_document(trust)
        .send()
        .await
        .expect("create role");
    let role_arn = role.role().unwrap().arn().to_string();

    let mut ce_arns = std::collections::BTreeMap::new();
    for key in stack.compute.keys() {
        let ce = batch
            .create_compute_environment()
            .compute_environment_name(stack.compute_environment_name(key, None))
            .r#type(CeType::Unmanaged)
            .state(CeState::Enabled)
            .service_role(&role_arn)
            .send()
            .await
            .expect("create compute environment");
        ce_arns.insert(
            key.clone(),
            ce.compute_environment_arn().unwrap().to_string(),
        );
    }
    for (key, queue) in &stack.queues {
        let mut create = batch
            .create_job_queue()
            .job_queue_name(stack.queue_name(key))
            .state(JqState::Enabled)
            .priority(queue.priority as i32);
        for (order, ce) in queue.compute.iter().enumerate() {
            create = create.compute_environment_order(
                ComputeEnvironmentOrder::builder()
                    .order(order as i32 + 1)
                    .compute_environment(&ce_arns[ce])
                    .build(),
            );
        }
        create.send().await.expect("create job queue");
    }
    logs.create_log_group()
        .log_group_name(stack.log_group_name())
        .send()
        .await
        .unwrap();
    for spec in stack.job_definitions() {
        let mut env = stack.injected_env(ACCOUNT);
        env.extend(spec.env.clone());
        let container = ContainerProperties::builder()
            .image(stack.image_uri(&spec.job.image, ACCOUNT))
            .set_command(Some(spec.command.clone()))
            .resource_requirements(
                ResourceRequirement::builder()
                    .r#type(ResourceType::Vcpu)
                    .value(spec.job.vcpus.to_string())
                    .build(),
            )
            .resource_requirements(
                ResourceRequirement::builder()
                    .r#type(ResourceType::Memory)
                    .value(spec.job.memory_mib.to_string())
                    .build(),
            )
            .set_environment(Some(
                env.iter()
                    .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
                    .collect(),
            ))
            .log_configuration(
                LogConfiguration::builder()
                    .log_driver(LogDriver::Awslogs)
                    .options("awslogs-group", stack.log_group_name())
                    .options("awslogs-stream-prefix", &spec.key)
                    .build(),
            )
            .build();
        batch
            .register_job_definition()
            .job_definition_name(&spec.name)
            .r#type(JobDefinitionType::Container)
            .container_properties(container)
            .send()
            .await
            .expect("register job definition");
    }
}

/// Registers a plain container job definition `name` (busybox, 1 vCPU, `memory_mib`): a
/// revision made outside the tool.
pub(crate) async fn register_busybox(batch: &aws_sdk_batch::Client, name: &str, memory_mib: u32) {
    batch
        .register_job_definition()
        .job_definition_name(name)
        .r#type(JobDefinitionType::Container)
        .container_properties(
            ContainerProperties::builder()
                .image("busybox")
                .command("true")
                .resource_requirements(
                    ResourceRequirement::builder()
                        .r#type(ResourceType::Vcpu)
                        .value("1")
                        .build(),
                )
                .resource_requirements(
                    ResourceRequirement::builder()
                        .r#type(ResourceType::Memory)
                        .value(memory_mib.to_string())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("register job definition");
}

pub(crate) fn run(mut cmd: Command) -> Output {
    let out = cmd.output().expect("run provision");
    eprintln!(
        "--- {:?}\nexit {:?}\nstdout:\n{}\nstderr:\n{}",
        cmd.get_args().collect::<Vec<_>>(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn submit(moto: &Moto, stack: &Path, extra: &[&str]) -> Output {
    let mut cmd = moto.provision();
    cmd.arg("submit").arg("--stack").arg(stack).args(extra);
    run(cmd)
}

/// Submits and returns the job id, asserting success and a one-line stdout.
pub(crate) fn submit_ok(moto: &Moto, stack: &Path, extra: &[&str]) -> String {
    let out = submit(moto, stack, extra);
    assert_eq!(
        out.status.code(),
        Some(0),
        "submit {extra:?} failed: {}",
        stderr(&out)
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "submit prints the job id alone: {text:?}");
    lines[0].to_string()
}

pub(crate) fn status_json(moto: &Moto, ids: &[&str]) -> Vec<Value> {
    let mut cmd = moto.provision();
    cmd.arg("status").args(ids).arg("--json");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("status --json is a JSON list")
}

async fn describe_job(moto: &Moto, id: &str) -> aws_sdk_batch::types::JobDetail {
    let batch = aws_sdk_batch::Client::new(&moto.config().await);
    let out = batch.describe_jobs().jobs(id).send().await.unwrap();
    out.jobs().first().cloned().expect("job exists")
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

#[tokio::test]
async fn submit_a_plain_job_with_overrides_and_read_its_status() {
    let moto = Moto::shared();
    let t = write_stack(stack_toml);
    apply_like(&moto, &t.stack).await;
    let prefix = t.stack.prefix();

    let id = submit_ok(
        &moto,
        &t.path,
        &[
            "prepare",
            "--var",
            "EXTRA=1",
            "--vcpus",
            "4",
            "--memory-mib",
            "4096",
            "--timeout-s",
            "600",
            "--",
            "echo",
            "hi",
        ],
    );

    let job = describe_job(&moto, &id).await;
    assert!(
        job.job_name()
            .unwrap()
            .starts_with(&format!("{prefix}-prepare-")),
        "{job:?}"
    );
    assert!(job
        .job_definition()
        .unwrap()
        .contains(&format!(":job-definition/{prefix}-prepare:")));
    assert!(job
        .job_queue()
        .unwrap()
        .ends_with(&format!("job-queue/{prefix}-main")));
    let container = job.container().unwrap();
    assert_eq!(container.command(), ["echo", "hi"]);
    let env: Vec<(&str, &str)> = container
        .environment()
        .iter()
        .map(|kv| (kv.name().unwrap(), kv.value().unwrap()))
        .collect();
    assert!(env.contains(&("EXTRA", "1")), "{env:?}");
    assert!(
        env.contains(&("CHECKPOINT_INTERVAL", "50")),
        "the definition's env stays: {env:?}"
    );
    assert_eq!(
        job.timeout().and_then(|t| t.attempt_duration_seconds()),
        Some(600)
    );
    assert_eq!(
        job.tags().unwrap().get("provision:stack"),
        Some(&t.stack.name)
    );

    let reports = status_json(&moto, &[&id]);
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "job_id",
            "name",
            "status",
            "reason",
            "attempts",
            "array",
            "started",
            "stopped",
            "log_stream",
            "console_url",
            "log_url"
        ]
    );
    assert_eq!(r["job_id"], id.as_str());
    assert_eq!(r["name"], job.job_name().unwrap());
    assert_eq!(r["status"], "SUCCEEDED");
    assert_eq!(r["attempts"], 1);
    assert_eq!(r["array"], Value::Null);
    assert!(
        is_rfc3339(&r["started"]) && is_rfc3339(&r["stopped"]),
        "{r}"
    );
    assert!(
        r["log_stream"].as_str().is_some_and(|s| !s.is_empty()),
        "{r}"
    );

    // The human table names the job and its status.
    let mut cmd = moto.provision();
    cmd.arg("status").arg(&id);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0));
    let table = stdout(&out);
    assert!(table.starts_with("JOB ID"), "{table}");
    assert!(
        table.contains(&id) && table.contains("SUCCEEDED"),
        "{table}"
    );
}

#[tokio::test]
async fn submit_json_names_the_job_queue_and_definition() {
    let moto = Moto::shared();
    let t = write_stack(stack_toml);
    apply_like(&moto, &t.stack).await;
    let out = submit(&moto, &t.path, &["prepare", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json prints one object");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["job_id", "job_name", "queue", "job_definition"]);
    let prefix = t.stack.prefix();
    assert!(v["job_name"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{prefix}-prepare-")));
    assert!(
        v["queue"]
            .as_str()
            .unwrap()
            .ends_with(&format!("job-queue/{prefix}-main")),
        "{v}"
    );
    assert!(
        v["job_definition"]
            .as_str()
            .unwrap()
            .ends_with(&format!("job-definition/{prefix}-prepare:1")),
        "{v}"
    );
    let job = describe_job(&moto, v["job_id"].as_str().unwrap()).await;
    assert_eq!(job.job_name(), v["job_name"].as_str());
}

#[tokio::test]
async fn submit_uses_the_latest_active_revision() {
    let moto = Moto::shared();
    let t = write_stack(stack_toml);
    apply_like(&moto, &t.stack).await;
    // A changed job definition: apply registers revision 2 and deregisters revision 1.
    let batch = aws_sdk_batch::Client::new(&moto.config().await);
    let name = format!("{}-prepare", t.stack.prefix());
    register_busybox(&batch, &name, 64).await;
    batch
        .deregister_job_definition()
        .job_definition(format!("{name}:1"))
        .send()
        .await
        .unwrap();

    let out = submit(&moto, &t.path, &["prepare", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["job_definition"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{name}:2")),
        "{v}"
    );
}

#[tokio::test]
async fn an_array_job_shows_its_children_in_status() {
    let moto = Moto::shared();
    let t = write_stack(stack_toml);
    apply_like(&moto, &t.stack).await;
    let id = submit_ok(&moto, &t.path, &["prepare", "--array-size", "3"]);

    let job = describe_job(&moto, &id).await;
    assert_eq!(job.array_properties().and_then(|a| a.size()), Some(3));

    let reports = status_json(&moto, &[&id]);
    let array = reports[0]["array"]
        .as_object()
        .expect("an array job reports its children");
    assert_eq!(array["SUCCEEDED"], 3, "{array:?}");
    assert_eq!(array.values().map(|v| v.as_i64().unwrap()).sum::<i64>(), 3);

    let child = format!("{id}:1");
    let reports = status_json(&moto, &[&child]);
    assert_eq!(reports[0]["job_id"], child.as_str());
    assert_eq!(reports[0]["array"], Value::Null, "a child is not an array");

    let mut cmd = moto.provision();
    cmd.arg("status").arg(&id);
    let table = stdout(&run(cmd));
    assert!(table.contains("SUCCEEDED 3"), "{table}");

    // A size outside AWS's 2..=10000 is refused before any call.
    let out = submit(&moto, &t.path, &["prepare", "--array-size", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--array-size"), "{}", stderr(&out));
}

#[tokio::test]
async fn depends_on_is_passed_to_batch() {
    let moto = Moto::shared();
    let t = write_stack(stack_toml);
    apply_like(&moto, &t.stack).await;
    let prepare = submit_ok(&moto, &t.path, &["prepare"]);
    let other = submit_ok(&moto, &t.path, &["prepare"]);
    let train = submit_ok(
        &moto,
        &t.path,
        &[
            "train-alpha",
            "--depends-on",
            &prepare,
            "--depends-on",
            &other,
        ],
    );
    let job = describe_job(&moto, &train).await;
    let deps: Vec<&str> = job.depends_on().iter().filter_map(|d| d.job_id()).collect();
    assert_eq!(deps, [prepare.as_str(), other.as_str()]);
}

#[tokio::test]
async fn a_matrix_job_is_picked_by_value() {
    let moto = Moto::shared();
    let t = write_stack(stack_toml);
    apply_like(&moto, &t.stack).await;
    let prefix = t.stack.prefix();

    let by_name = submit_ok(&moto, &t.path, &["train-beta"]);
    let job = describe_job(&moto, &by_name).await;
    assert!(
        job.job_definition()
            .unwrap()
            .contains(&format!("/{prefix}-train-beta:")),
        "{job:?}"
    );
    let env = job.container().unwrap().environment();
    assert!(env
        .iter()
        .any(|kv| kv.name() == Some("DATASET") && kv.value() == Some("beta")));

    let by_var = submit_ok(
        &moto,
        &t.path,
        &["train", "--var", "dataset=alpha", "--var", "SEED=7"],
    );
    let job = describe_job(&moto, &by_var).await;
    assert!(job
        .job_definition()
        .unwrap()
        .contains(&format!("/{prefix}-train-alpha:")));
    let env: Vec<_> = job.container().unwrap().environment().to_vec();
    assert!(env
        .iter()
        .any(|kv| kv.name() == Some("SEED") && kv.value() == Some("7")));
    assert!(
        !env.iter().any(|kv| kv.name() == Some("dataset")),
        "the matrix key picks the definition; it is not an environment variable"
    );

    for bad in [&["train"][..], &["train", "--var", "dataset=gamma"]] {
        let out = submit(&moto, &t.path, bad);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        let err = stderr(&out);
        assert!(
            err.contains("alpha, beta"),
            "the error lists the values: {err}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test]
async fn a_stack_that_is_not_applied_names_the_fix() {
    let moto = Moto::shared();
    let t = write_stack(stack_toml);
    let out = submit(&moto, &t.path, &["prepare"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}-prepare", t.stack.prefix())),
        "{err}"
    );
    assert!(
        err.contains(&format!("provision apply --stack {}", t.path.display())),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// An endpoint that records whether anything connected to it.
struct Tripwire {
    listener: TcpListener,
}

impl Tripwire {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Tripwire { listener }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.listener.local_addr().unwrap())
    }

    fn touched(&self) -> bool {
        // The kernel completes connections into the backlog without an accept().
        self.listener.accept().is_ok()
    }
}

#[test]
fn a_bad_stack_or_job_fails_before_any_aws_call() {
    let moto = Moto::shared();
    let bad = write_stack(stack_toml);
    std::fs::write(
        &bad.path,
        stack_toml("jobs-bad").replace("vcpus = 2", "vcpus = \"two\""),
    )
    .unwrap();
    let good = write_stack(stack_toml);

    let cases: Vec<(&str, &Path, Vec<&str>, &str)> = vec![
        ("submit", &bad.path, vec!["prepare"], "vcpus"),
        (
            "run-local",
            &bad.path,
            vec!["prepare", "--", "true"],
            "vcpus",
        ),
        ("submit", &good.path, vec!["nope"], "prepare"),
        (
            "run-local",
            &good.path,
            vec!["nope", "--", "true"],
            "prepare",
        ),
        ("submit", &good.path, vec!["train"], "alpha, beta"),
        (
            "submit",
            &good.path,
            vec!["prepare", "--var", "STACK=x"],
            "STACK",
        ),
        (
            "submit",
            &good.path,
            vec!["prepare", "--timeout-s", "5"],
            "--timeout-s",
        ),
        ("submit", &good.path, vec!["prepare", "--gpus", "1"], "gpu"),
    ];
    for (command, stack, args, needle) in cases {
        let wire = Tripwire::new();
        let mut cmd = moto.provision();
        cmd.env("AWS_ENDPOINT_URL", wire.endpoint());
        cmd.arg(command).arg("--stack").arg(stack).args(&args);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(1), "{command} {args:?}");
        assert!(
            stderr(&out).contains(needle),
            "{command} {args:?}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty(), "{command} {args:?}");
        assert!(!wire.touched(), "{command} {args:?} made a network call");
    }
}

#[test]
fn status_of_an_unknown_job_is_an_error() {
    let moto = Moto::shared();
    let mut cmd = moto.provision();
    cmd.args(["status", "00000000-0000-0000-0000-000000000000", "--json"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("00000000-0000-0000-0000-000000000000"));
    assert!(out.stdout.is_empty());

    let mut cmd = moto.provision();
    cmd.args(["logs", "00000000-0000-0000-0000-000000000000"]);
    assert_eq!(run(cmd).status.code(), Some(1));
}

#[tokio::test]
async fn watch_ends_with_the_jobs_and_fails_when_one_fails() {
    let ok = Moto::shared();
    let t = write_stack(stack_toml);
    apply_like(&ok, &t.stack).await;
    let a = submit_ok(&ok, &t.path, &["prepare", "--watch"]);
    let b = submit_ok(&ok, &t.path, &["train-alpha"]);
    let mut cmd = ok.provision();
    cmd.args(["status", "--watch", "--json", &a, &b]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let reports: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(reports.iter().all(|r| r["status"] == "SUCCEEDED"));

    // A server whose every job fails.
    let failing = Moto::failing();
    let t = write_stack(stack_toml);
    apply_like(&failing, &t.stack).await;
    let out = submit(&failing, &t.path, &["prepare", "--watch"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "submit --watch exits 1 on FAILED"
    );
    let id = stdout(&out).trim().to_string();
    assert!(
        !id.is_empty() && !id.contains('\n'),
        "the id is still printed first: {id:?}"
    );
    assert!(stderr(&out).contains("FAILED"), "{}", stderr(&out));

    let mut cmd = failing.provision();
    cmd.args(["status", "--watch", "--json", &id]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    let reports: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports[0]["status"], "FAILED");

    // Without --watch, status reports a failure without failing itself.
    let reports = status_json(&failing, &[&id]);
    assert_eq!(reports[0]["status"], "FAILED");
}

#[tokio::test]
async fn logs_prints_the_jobs_stream_across_pages() {
    let moto = Moto::shared();
    let t = write_stack(stack_toml);
    apply_like(&moto, &t.stack).await;
    let id = submit_ok(&moto, &t.path, &["train-alpha"]);
    let stream = status_json(&moto, &[&id])[0]["log_stream"]
        .as_str()
        .unwrap()
        .to_string();

    // Nothing written yet: the stream does not exist.
    let mut cmd = moto.provision();
    cmd.args(["logs", &id]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&stream), "{}", stderr(&out));

    // More events than one GetLogEvents page (10,000) holds, in the group the job definition
    // names (DescribeJobs does not carry it on moto), as the awslogs driver writes them.
    let logs = aws_sdk_cloudwatchlogs::Client::new(&moto.config().await);
    let group = t.stack.log_group_name();
    logs.create_log_stream()
        .log_group_name(&group)
        .log_stream_name(&stream)
        .send()
        .await
        .unwrap();
    let total = 10_050;
    let start = chrono::Utc::now().timestamp_millis() - 60_000;
    let lines: Vec<String> = (0..total).map(|i| format!("line {i}")).collect();
    for chunk in lines.chunks(5_000).enumerate() {
        let (n, chunk) = chunk;
        let events = chunk.iter().enumerate().map(|(i, line)| {
            InputLogEvent::builder()
                .timestamp(start + (n * 5_000 + i) as i64)
                .message(line)
                .build()
                .unwrap()
        });
        logs.put_log_events()
            .log_group_name(&group)
            .log_stream_name(&stream)
            .set_log_events(Some(events.collect()))
            .send()
            .await
            .unwrap();
    }

    for follow in [false, true] {
        let mut cmd = moto.provision();
        cmd.args(["logs", &id]);
        if follow {
            // The job has ended, so following prints everything and stops.
            cmd.arg("--follow");
        }
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let printed: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        assert_eq!(printed.len(), total, "every event once, in order");
        assert_eq!(printed.first(), Some(&"line 0"));
        assert_eq!(printed.last(), Some(&"line 10049"));
        assert!(printed.iter().zip(&lines).all(|(a, b)| a == b));
    }
}

fn run_local(moto: &Moto, stack: &Path, args: &[&str]) -> Output {
    let mut cmd = moto.provision();
    cmd.arg("run-local").arg("--stack").arg(stack).args(args);
    cmd.env("AWS_BATCH_JOB_ARRAY_INDEX", "99"); // a stale value from the caller's shell
    run(cmd)
}

#[test]
fn run_local_gives_the_command_the_jobs_environment() {
    let moto = Moto::shared();
    let t = write_stack(stack_toml);
    let name = &t.stack.name;

    let out = run_local(
        &moto,
        &t.path,
        &[
            "prepare",
            "--array-index",
            "2",
            "--var",
            "EXTRA=x y",
            "--",
            "sh",
            "-c",
            "echo $STACK $STACK_ENV $USE_GPU $AWS_REGION $BUCKET_DATA $CHECKPOINT_INTERVAL \
             $AWS_BATCH_JOB_ARRAY_INDEX \"$EXTRA\"",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("{name} default false us-east-1 {name}-default-data-{ACCOUNT} 50 2 x y\n")
    );

    // The job's own command, with the matrix value substituted in it and in its env.
    let out = run_local(&moto, &t.path, &["train-beta"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "training beta beta\n");
    let out = run_local(&moto, &t.path, &["train", "--var", "dataset=alpha"]);
    assert_eq!(stdout(&out), "training alpha alpha\n");

    // Without --array-index the variable is unset, as on a single Batch job.
    let out = run_local(
        &moto,
        &t.path,
        &[
            "prepare",
            "--",
            "sh",
            "-c",
            "echo ${AWS_BATCH_JOB_ARRAY_INDEX-unset}",
        ],
    );
    assert_eq!(stdout(&out), "unset\n");
}

#[test]
fn run_local_exits_with_the_commands_code() {
    let moto = Moto::shared();
    let t = write_stack(stack_toml);
    let out = run_local(&moto, &t.path, &["prepare", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    let out = run_local(
        &moto,
        &t.path,
        &["prepare", "--", "sh", "-c", "kill -TERM $$"],
    );
    assert_eq!(
        out.status.code(),
        Some(128 + 15),
        "a signal reads as 128 + its number"
    );
    let out = run_local(&moto, &t.path, &["prepare", "--", "/nonexistent/program"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(stderr(&out).contains("/nonexistent/program"));
}

#[test]
fn run_local_without_credentials_says_so() {
    let moto = Moto::shared();
    let t = write_stack(stack_toml);
    let mut cmd = moto.provision();
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    cmd.env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    cmd.env_remove("AWS_WEB_IDENTITY_TOKEN_FILE");
    cmd.arg("run-local")
        .arg("--stack")
        .arg(&t.path)
        .args(["prepare", "--", "echo", "ran"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("credentials"), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "the command did not run");
}
