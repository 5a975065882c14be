//! Engine hardening (issue 5): crash safety, create-before-destroy compute replacement under
//! AWS's Batch rules, drift, faults, least privilege, bad input beyond the stack file.
//!
//! Every test talks to moto through its own [`FaultProxy`], which gives it an AWS account of
//! its own: the account holds nothing but the test's stack, so "no duplicate, no orphan" is a
//! plain inventory of the account.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::BehaviorVersion;
use provision::aws::Clients;
use serde_json::Value;
use testkit::faults::FaultProxy;

/// One test's world: a private account behind a proxy and a uniquely named stack file.
struct World {
    proxy: FaultProxy,
    _dir: tempfile::TempDir,
    path: PathBuf,
    name: String,
}

impl World {
    /// A copy of `stacks/{file}` named uniquely, reached through a proxy to `upstream`.
    fn new(prefix: &str, file: &str, upstream: &str) -> World {
        let proxy = FaultProxy::start(upstream, &testkit::unique_account());
        let name = testkit::unique_name(prefix);
        let text = std::fs::read_to_string(testkit::workspace_root().join("stacks").join(file)).unwrap();
        let re = regex::Regex::new(r#"(?m)^name = "[a-z0-9-]+""#).unwrap();
        assert!(re.is_match(&text), "{file} has no name line");
        let text = re.replace(&text, format!("name = \"{name}\"").as_str()).to_string();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stack.toml");
        std::fs::write(&path, text).unwrap();
        World { proxy, _dir: dir, path, name }
    }

    fn orderflow(prefix: &str) -> World {
        World::new(prefix, "orderflow.toml", &testkit::emulator().endpoint)
    }

    fn rewrite(&self, f: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.path).unwrap();
        std::fs::write(&self.path, f(text)).unwrap();
    }

    fn p(&self) -> String {
        format!("{}-dev", self.name)
    }

    fn account(&self) -> &str {
        &self.proxy.account
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.proxy.command(env!("CARGO_BIN_EXE_provision"));
        cmd.args(args).arg("--stack").arg(&self.path).args(["--env", "dev"]);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs, asserts the exit code, returns (stdout, stderr).
    fn expect(&self, args: &[&str], code: i32) -> (String, String) {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(code), "provision {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        (stdout, stderr)
    }

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

    /// SDK clients in the world's account (through the proxy, retrying like the tool).
    async fn clients(&self) -> Clients {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.proxy.endpoint)
            .credentials_provider(aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "test"))
            .retry_config(RetryConfig::standard().with_max_attempts(10))
            .load()
            .await;
        let s3 = aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build();
        Clients {
            batch: aws_sdk_batch::Client::new(&config),
            ec2: aws_sdk_ec2::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            s3: aws_sdk_s3::Client::from_conf(s3),
            ecr: aws_sdk_ecr::Client::new(&config),
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            logs: aws_sdk_cloudwatchlogs::Client::new(&config),
            sts: aws_sdk_sts::Client::new(&config),
            secrets: aws_sdk_secretsmanager::Client::new(&config),
            config,
        }
    }

    /// `state list` as address → id.
    fn state(&self) -> BTreeMap<String, String> {
        let (out, _) = self.expect(&["state", "list"], 0);
        out.lines()
            .map(|l| {
                let cols: Vec<&str> = l.split('\t').collect();
                (cols[0].to_string(), cols[2].to_string())
            })
            .collect()
    }
}

/// Everything the account holds that a stack could have created: kind → sorted list of
/// `name` (or `name id`), duplicates kept.
async fn inventory(c: &Clients) -> BTreeMap<&'static str, Vec<String>> {
    let mut inv: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let roles = c.iam.list_roles().send().await.unwrap();
    inv.insert("role", roles.roles().iter().map(|r| r.role_name().to_string()).collect());
    let profiles = c.iam.list_instance_profiles().send().await.unwrap();
    inv.insert("instance_profile", profiles.instance_profiles().iter().map(|p| p.instance_profile_name().to_string()).collect());
    let buckets = c.s3.list_buckets().send().await.unwrap();
    inv.insert("bucket", buckets.buckets().iter().filter_map(|b| b.name()).map(String::from).collect());
    let repos = c.ecr.describe_repositories().send().await.unwrap();
    inv.insert("repository", repos.repositories().iter().filter_map(|r| r.repository_name()).map(String::from).collect());
    let groups = c.logs.describe_log_groups().send().await.unwrap();
    inv.insert("log_group", groups.log_groups().iter().filter_map(|g| g.log_group_name()).map(String::from).collect());
    let sgs = c.ec2.describe_security_groups().send().await.unwrap();
    inv.insert(
        "security_group",
        sgs.security_groups()
            .iter()
            .filter(|g| g.group_name() != Some("default"))
            .map(|g| format!("{} {}", g.group_name().unwrap_or(""), g.group_id().unwrap_or("")))
            .collect(),
    );
    let endpoints = c.ec2.describe_vpc_endpoints().send().await.unwrap();
    inv.insert(
        "vpc_endpoint",
        endpoints
            .vpc_endpoints()
            .iter()
            .filter(|e| !e.state().is_some_and(|s| s.as_str().eq_ignore_ascii_case("deleted")))
            .map(|e| format!("{} {}", e.service_name().unwrap_or(""), e.vpc_endpoint_id().unwrap_or("")))
            .collect(),
    );
    let lts = c.ec2.describe_launch_templates().send().await.unwrap();
    inv.insert("launch_template", lts.launch_templates().iter().filter_map(|t| t.launch_template_name()).map(String::from).collect());
    let ces = c.batch.describe_compute_environments().send().await.unwrap();
    inv.insert(
        "compute",
        ces.compute_environments()
            .iter()
            .map(|e| format!("{} {}", e.compute_environment_name().unwrap_or(""), e.compute_environment_arn().unwrap_or("")))
            .collect(),
    );
    let queues = c.batch.describe_job_queues().send().await.unwrap();
    inv.insert(
        "queue",
        queues.job_queues().iter().map(|q| format!("{} {}", q.job_queue_name().unwrap_or(""), q.job_queue_arn().unwrap_or(""))).collect(),
    );
    let defs = c.batch.describe_job_definitions().status("ACTIVE").send().await.unwrap();
    inv.insert(
        "job_definition",
        defs.job_definitions()
            .iter()
            .filter(|d| d.status() == Some("ACTIVE"))
            .map(|d| format!("{} {}", d.job_definition_name().unwrap_or(""), d.job_definition_arn().unwrap_or("")))
            .collect(),
    );
    for v in inv.values_mut() {
        v.sort();
    }
    inv
}

/// The account holds exactly the reference stack, once, and every resource is the one the
/// state records.
async fn assert_exactly_the_stack(w: &World, c: &Clients) {
    let p = w.p();
    let acct = w.account();
    let inv = inventory(c).await;
    let state = w.state();
    let names = |kind: &str| -> Vec<String> {
        inv[kind].iter().map(|s| s.split(' ').next().unwrap().to_string()).collect()
    };
    let ids = |kind: &str| -> BTreeSet<String> {
        inv[kind].iter().filter_map(|s| s.split(' ').nth(1)).map(String::from).collect()
    };
    let mut roles: Vec<String> = ["batch-service", "execution", "instance", "job"].iter().map(|r| format!("{p}-{r}")).collect();
    roles.sort();
    assert_eq!(names("role"), roles, "{inv:#?}");
    assert_eq!(names("instance_profile"), [format!("{p}-instance")], "{inv:#?}");
    assert_eq!(names("bucket"), [format!("{p}-data-{acct}")], "{inv:#?}");
    assert_eq!(names("repository"), [format!("{p}-runtime")], "{inv:#?}");
    assert_eq!(names("log_group"), [format!("/aws/batch/{p}")], "{inv:#?}");
    assert_eq!(names("security_group"), [format!("{p}-batch")], "{inv:#?}");
    assert_eq!(inv["vpc_endpoint"].len(), 1, "{inv:#?}");
    assert_eq!(names("launch_template"), [format!("{p}-spot")], "{inv:#?}");
    assert_eq!(names("compute"), [format!("{p}-ondemand"), format!("{p}-spot")], "{inv:#?}");
    assert_eq!(names("queue"), [format!("{p}-main")], "{inv:#?}");
    assert_eq!(names("job_definition"), [format!("{p}-prepare"), format!("{p}-train")], "{inv:#?}");
    // The state names exactly these resources.
    assert_eq!(state.len(), 15, "{state:#?}");
    let recorded: BTreeSet<String> = state.values().cloned().collect();
    for kind in ["security_group", "vpc_endpoint", "compute", "queue", "job_definition"] {
        for id in ids(kind) {
            assert!(recorded.contains(&id), "{kind} {id} is live but not in the state: {state:#?}");
        }
    }
}

/// Nothing of any stack is left in the account.
async fn assert_empty(c: &Clients) {
    let inv = inventory(c).await;
    for (kind, items) in &inv {
        assert!(items.is_empty(), "{kind} left after destroy: {items:?}");
    }
}

/// Kills `apply` right after its `n`th mutating call ran on the server, then checks the
/// whole recovery: the dead process's lock is reported with its holder and expiry, unlock
/// refuses a live lock without --force and clears it with it, the next apply converges to
/// exactly one copy of every resource (all recorded), and destroy leaves nothing.
async fn crash_at(n: usize) {
    let w = World::orderflow("crash");
    let c = w.clients().await;
    let mut cmd = w.command(&["apply", "--auto-approve"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    w.proxy.arm_kill(n);
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    w.proxy.set_victim(child);
    let (child, killed) = w.proxy.wait_victim(Duration::from_secs(300));
    assert!(killed, "apply finished before its mutating call {n}: {:?}", w.proxy.mutating_log());
    drop(child);
    let log = w.proxy.mutating_log();

    // The lock of the dead process.
    let out = w.run(&["apply", "--auto-approve"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if n > 2 {
        assert_eq!(out.status.code(), Some(1), "apply after a crash at {n} ({log:?}):\n{stderr}");
        assert!(stderr.contains(&format!("pid {pid}")) && stderr.contains("expires"), "{stderr}");
        assert!(stderr.contains("state unlock --force"), "{stderr}");
        let (_, err) = w.expect(&["state", "unlock"], 1);
        assert!(err.contains(&format!("pid {pid}")), "{err}");
        let (out, _) = w.expect(&["state", "unlock", "--force"], 0);
        assert!(out.contains(&format!("pid {pid}")), "{out}");
        let out = w.run(&["apply", "--auto-approve"]);
        assert_eq!(out.status.code(), Some(0), "apply after unlock, crash at {n} ({log:?}):\n{}", String::from_utf8_lossy(&out.stderr));
    } else {
        // Killed before (or while) taking the lock: nothing to unlock.
        assert_eq!(out.status.code(), Some(0), "crash at {n} ({log:?}):\n{stderr}");
    }
    assert_exactly_the_stack(&w, &c).await;
    w.expect(&["plan", "--detailed-exitcode"], 0);
    w.expect(&["destroy", "--auto-approve"], 0);
    assert_empty(&c).await;
}

// The reference stack takes 48 mutating calls from an empty account (the state table, the
// lock, 15 resources and their records, the serial, the unlock); independent resources are
// created concurrently, so other calls are in flight at the kill. The points fall before the
// lock, among the first resources (the bucket between its create and its tags), in the middle
// (roles, profile, compute) and near the end (compute, job definitions, queue).
#[tokio::test(flavor = "multi_thread")]
async fn crash_before_and_right_after_the_lock() {
    crash_at(1).await;
    crash_at(3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_among_the_first_resources() {
    crash_at(6).await;
    crash_at(11).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_in_the_middle() {
    crash_at(19).await;
    crash_at(28).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_near_the_end() {
    crash_at(36).await;
    crash_at(45).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_lock_of_a_dead_process_is_taken_over() {
    let w = World::orderflow("expire");
    let c = w.clients().await;
    // The first apply creates the table; then a lock as a process that died an hour ago left it.
    w.apply(&["--set", "logs.retention_days=7"]);
    c.dynamodb
        .put_item()
        .table_name("provision-state")
        .item("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("{}/dev", w.name)))
        .item("sk", aws_sdk_dynamodb::types::AttributeValue::S("lock".into()))
        .item("holder", aws_sdk_dynamodb::types::AttributeValue::S("ci@runner pid 4242".into()))
        .item("operation", aws_sdk_dynamodb::types::AttributeValue::S("apply".into()))
        .item("acquired", aws_sdk_dynamodb::types::AttributeValue::S("2020-01-01T00:00:00Z".into()))
        .item("expires", aws_sdk_dynamodb::types::AttributeValue::S("2020-01-01T01:00:00Z".into()))
        .item("token", aws_sdk_dynamodb::types::AttributeValue::S("dead".into()))
        .send()
        .await
        .unwrap();
    // Expired: apply takes it over without --force.
    let out = w.apply(&[]);
    assert!(out.contains("1 changed"), "{out}");
    // And `state unlock` without --force clears an expired one.
    c.dynamodb
        .put_item()
        .table_name("provision-state")
        .item("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("{}/dev", w.name)))
        .item("sk", aws_sdk_dynamodb::types::AttributeValue::S("lock".into()))
        .item("holder", aws_sdk_dynamodb::types::AttributeValue::S("ci@runner pid 4242".into()))
        .item("operation", aws_sdk_dynamodb::types::AttributeValue::S("apply".into()))
        .item("acquired", aws_sdk_dynamodb::types::AttributeValue::S("2020-01-01T00:00:00Z".into()))
        .item("expires", aws_sdk_dynamodb::types::AttributeValue::S("2020-01-01T01:00:00Z".into()))
        .send()
        .await
        .unwrap();
    let (out, _) = w.expect(&["state", "unlock"], 0);
    assert!(out.contains("ci@runner pid 4242"), "{out}");
    w.expect(&["destroy", "--auto-approve"], 0);
    assert_empty(&c).await;
}
