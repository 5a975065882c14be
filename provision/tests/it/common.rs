//! What the end-to-end modules share: a uniquely named copy of a reference stack, the real
//! `provision` binary run on it with its exit code checked, and SDK clients in a test's own
//! account behind a proxy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use aws_config::retry::RetryConfig;
use aws_config::BehaviorVersion;
use provision::aws::Clients;
use serde_json::Value;
use testkit::faults::FaultProxy;

pub const BIN: &str = env!("CARGO_BIN_EXE_provision");

/// A copy of `stacks/{file}` under a unique name, in a temporary directory that lives as long
/// as the copy.
pub struct StackCopy {
    dir: tempfile::TempDir,
    pub path: PathBuf,
    pub name: String,
}

impl StackCopy {
    pub fn new(prefix: &str, file: &str) -> StackCopy {
        let name = testkit::unique_name(prefix);
        let text =
            std::fs::read_to_string(testkit::workspace_root().join("stacks").join(file)).unwrap();
        let re = regex::Regex::new(r#"(?m)^name = "[a-z0-9-]+""#).unwrap();
        assert!(re.is_match(&text), "{file} has no name line");
        let text = re.replace(&text, format!("name = \"{name}\"").as_str());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stack.toml");
        std::fs::write(&path, text.as_ref()).unwrap();
        StackCopy { dir, path, name }
    }

    /// `stacks/orderflow.toml` without its S3 endpoint: AWS allows one S3 gateway endpoint
    /// per route table, so where tests share a VPC only one of them may own it.
    pub fn orderflow_without_endpoint(prefix: &str) -> StackCopy {
        let copy = StackCopy::new(prefix, "orderflow.toml");
        copy.rewrite(|t| {
            assert!(
                t.contains("s3_endpoint = true"),
                "orderflow.toml has no S3 endpoint"
            );
            t.replace("s3_endpoint = true", "s3_endpoint = false")
        });
        copy
    }

    pub fn rewrite(&self, f: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.path).unwrap();
        std::fs::write(&self.path, f(text)).unwrap();
    }

    /// The prefix of every AWS name in environment `dev`.
    pub fn p(&self) -> String {
        format!("{}-dev", self.name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Runs `provision` on a stack copy in environment `dev`, as one test reaches AWS.
pub trait Provision {
    fn stack(&self) -> &StackCopy;

    /// The binary, pointed at this test's AWS.
    fn binary(&self) -> Command;

    /// `provision ARGS --stack FILE --env dev`, without a terminal on stdin.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.binary();
        cmd.args(args)
            .arg("--stack")
            .arg(&self.stack().path)
            .args(["--env", "dev"])
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs, asserts the exit code, returns (stdout, stderr).
    fn expect(&self, args: &[&str], code: i32) -> (String, String) {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(
            out.status.code(),
            Some(code),
            "provision {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        (stdout, stderr)
    }

    /// `apply --auto-approve EXTRA`, which must succeed; returns stdout.
    fn apply(&self, extra: &[&str]) -> String {
        let mut args = vec!["apply", "--auto-approve"];
        args.extend_from_slice(extra);
        self.expect(&args, 0).0
    }

    fn plan_json(&self, extra: &[&str]) -> Value {
        let mut args = vec!["plan", "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&self.expect(&args, 0).0).unwrap()
    }

    /// `state list` as rows of (address, name, id).
    fn state_list(&self) -> Vec<(String, String, String)> {
        let (out, _) = self.expect(&["state", "list"], 0);
        out.lines()
            .map(|l| {
                let cols: Vec<&str> = l.split('\t').collect();
                (cols[0].into(), cols[1].into(), cols[2].into())
            })
            .collect()
    }
}

/// A stack copy run against the shared emulator (moto's default account).
impl Provision for StackCopy {
    fn stack(&self) -> &StackCopy {
        self
    }

    fn binary(&self) -> Command {
        testkit::emulator().command(BIN)
    }
}

/// A stack copy in an account of its own: every request goes through `proxy`, which counts,
/// delays or fails it as a test asks, and the account holds nothing but the test's resources.
pub struct World {
    pub proxy: FaultProxy,
    pub stack: StackCopy,
}

impl World {
    /// `stack` in a new account, through a proxy to `upstream` (a moto server).
    pub fn new(stack: StackCopy, upstream: &str) -> World {
        World {
            proxy: FaultProxy::start(upstream, &testkit::unique_account()),
            stack,
        }
    }

    /// `stack` in a new account of the shared emulator.
    pub fn on_emulator(stack: StackCopy) -> World {
        World::new(stack, &testkit::emulator().endpoint)
    }

    pub fn p(&self) -> String {
        self.stack.p()
    }

    pub fn account(&self) -> &str {
        &self.proxy.account
    }

    /// Writes a file next to the stack file; returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.stack.dir().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// Requests the proxy has seen so far.
    pub fn requests(&self) -> usize {
        self.proxy.counts().requests
    }

    /// SDK clients in the world's account (through the proxy, retrying as the tool does
    /// through its faults).
    pub async fn clients(&self) -> Clients {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.proxy.endpoint)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .retry_config(RetryConfig::standard().with_max_attempts(10))
            .load()
            .await;
        Clients::from_config(config)
    }
}

impl Provision for World {
    fn stack(&self) -> &StackCopy {
        &self.stack
    }

    fn binary(&self) -> Command {
        self.proxy.command(BIN)
    }
}

/// Bucket `bucket`'s tags, key → value.
pub async fn bucket_tags(c: &Clients, bucket: &str) -> BTreeMap<String, String> {
    let out = c
        .s3()
        .get_bucket_tagging()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    out.tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

/// The managed policies attached to role `role`: (name, ARN).
pub async fn attached_policies(c: &Clients, role: &str) -> Vec<(String, String)> {
    let out = c
        .iam()
        .list_attached_role_policies()
        .role_name(role)
        .send()
        .await
        .unwrap();
    out.attached_policies()
        .iter()
        .map(|a| {
            (
                a.policy_name().unwrap_or_default().to_string(),
                a.policy_arn().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Compute environment `name` as Batch describes it (absent: there is none).
pub async fn compute_env(
    c: &Clients,
    name: &str,
) -> Option<aws_sdk_batch::types::ComputeEnvironmentDetail> {
    let out = c
        .batch()
        .describe_compute_environments()
        .compute_environments(name)
        .send()
        .await
        .unwrap();
    out.compute_environments()
        .iter()
        .find(|e| e.compute_environment_name() == Some(name))
        .cloned()
}

/// Job queue `name` as Batch describes it (absent: there is none).
pub async fn job_queue(c: &Clients, name: &str) -> Option<aws_sdk_batch::types::JobQueueDetail> {
    let out = c
        .batch()
        .describe_job_queues()
        .job_queues(name)
        .send()
        .await
        .unwrap();
    out.job_queues()
        .iter()
        .find(|q| q.job_queue_name() == Some(name))
        .cloned()
}
