//! Engine hardening (issue 5): crash safety, create-before-destroy compute replacement under
//! AWS's Batch rules, drift, faults, least privilege, bad input beyond the stack file.
//!
//! Every test talks to moto through its own [`FaultProxy`], which gives it an AWS account of
//! its own: the account holds nothing but the test's stack, so "no duplicate, no orphan" is a
//! plain inventory of the account.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use provision::aws::Clients;
use provision::resources::iam::decode_policy;
use serde_json::{json, Value};

use crate::common::{attached_policies, compute_env, job_queue, Provision, StackCopy, World};

/// A copy of `stacks/{file}` named uniquely, in an account of its own behind a proxy to
/// `upstream`.
fn world(prefix: &str, file: &str, upstream: &str) -> World {
    World::new(StackCopy::new(prefix, file), upstream)
}

fn orderflow(prefix: &str) -> World {
    World::on_emulator(StackCopy::new(prefix, "orderflow.toml"))
}

/// `state list` as address → id.
fn state_ids(w: &World) -> BTreeMap<String, String> {
    w.state_list()
        .into_iter()
        .map(|(address, _, id)| (address, id))
        .collect()
}

/// Each item's name, where it has one.
fn names<'a, T: 'a>(
    items: impl IntoIterator<Item = &'a T>,
    name: impl Fn(&'a T) -> Option<&'a str>,
) -> Vec<String> {
    items
        .into_iter()
        .filter_map(name)
        .map(String::from)
        .collect()
}

/// Each item as `name id`.
fn names_and_ids<'a, T: 'a>(
    items: impl IntoIterator<Item = &'a T>,
    name_and_id: impl Fn(&'a T) -> [Option<&'a str>; 2],
) -> Vec<String> {
    items
        .into_iter()
        .map(|item| {
            let [name, id] = name_and_id(item);
            format!("{} {}", name.unwrap_or(""), id.unwrap_or(""))
        })
        .collect()
}

/// Everything the account holds that a stack could have created: kind → sorted list of
/// `name` (or `name id`), duplicates kept.
async fn inventory(c: &Clients) -> BTreeMap<&'static str, Vec<String>> {
    let mut inv: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let roles = c.iam().list_roles().send().await.unwrap();
    inv.insert("role", names(roles.roles(), |r| Some(r.role_name())));
    let profiles = c.iam().list_instance_profiles().send().await.unwrap();
    inv.insert(
        "instance_profile",
        names(profiles.instance_profiles(), |p| {
            Some(p.instance_profile_name())
        }),
    );
    let buckets = c.s3().list_buckets().send().await.unwrap();
    inv.insert("bucket", names(buckets.buckets(), |b| b.name()));
    let repos = c.ecr().describe_repositories().send().await.unwrap();
    inv.insert(
        "repository",
        names(repos.repositories(), |r| r.repository_name()),
    );
    let groups = c.logs().describe_log_groups().send().await.unwrap();
    inv.insert(
        "log_group",
        names(groups.log_groups(), |g| g.log_group_name()),
    );
    let sgs = c.ec2().describe_security_groups().send().await.unwrap();
    inv.insert(
        "security_group",
        names_and_ids(
            sgs.security_groups()
                .iter()
                .filter(|g| g.group_name() != Some("default")),
            |g| [g.group_name(), g.group_id()],
        ),
    );
    let endpoints = c.ec2().describe_vpc_endpoints().send().await.unwrap();
    inv.insert(
        "vpc_endpoint",
        names_and_ids(
            endpoints.vpc_endpoints().iter().filter(|e| {
                !e.state()
                    .is_some_and(|s| s.as_str().eq_ignore_ascii_case("deleted"))
            }),
            |e| [e.service_name(), e.vpc_endpoint_id()],
        ),
    );
    let lts = c.ec2().describe_launch_templates().send().await.unwrap();
    inv.insert(
        "launch_template",
        names(lts.launch_templates(), |t| t.launch_template_name()),
    );
    let ces = c
        .batch()
        .describe_compute_environments()
        .send()
        .await
        .unwrap();
    inv.insert(
        "compute",
        names_and_ids(ces.compute_environments(), |e| {
            [e.compute_environment_name(), e.compute_environment_arn()]
        }),
    );
    let queues = c.batch().describe_job_queues().send().await.unwrap();
    inv.insert(
        "queue",
        names_and_ids(queues.job_queues(), |q| {
            [q.job_queue_name(), q.job_queue_arn()]
        }),
    );
    let defs = c
        .batch()
        .describe_job_definitions()
        .status("ACTIVE")
        .send()
        .await
        .unwrap();
    inv.insert(
        "job_definition",
        names_and_ids(
            defs.job_definitions()
                .iter()
                .filter(|d| d.status() == Some("ACTIVE")),
            |d| [d.job_definition_name(), d.job_definition_arn()],
        ),
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
    let state = state_ids(w);
    let names = |kind: &str| -> Vec<String> {
        inv[kind]
            .iter()
            .map(|s| s.split(' ').next().unwrap().to_string())
            .collect()
    };
    let ids = |kind: &str| -> BTreeSet<String> {
        inv[kind]
            .iter()
            .filter_map(|s| s.split(' ').nth(1))
            .map(String::from)
            .collect()
    };
    let mut roles: Vec<String> = ["batch-service", "execution", "instance", "job"]
        .iter()
        .map(|r| format!("{p}-{r}"))
        .collect();
    roles.sort();
    assert_eq!(names("role"), roles, "{inv:#?}");
    assert_eq!(
        names("instance_profile"),
        [format!("{p}-instance")],
        "{inv:#?}"
    );
    assert_eq!(names("bucket"), [format!("{p}-data-{acct}")], "{inv:#?}");
    assert_eq!(names("repository"), [format!("{p}-runtime")], "{inv:#?}");
    assert_eq!(names("log_group"), [format!("/aws/batch/{p}")], "{inv:#?}");
    assert_eq!(names("security_group"), [format!("{p}-batch")], "{inv:#?}");
    assert_eq!(inv["vpc_endpoint"].len(), 1, "{inv:#?}");
    assert_eq!(names("launch_template"), [format!("{p}-spot")], "{inv:#?}");
    assert_eq!(
        names("compute"),
        [format!("{p}-ondemand"), format!("{p}-spot")],
        "{inv:#?}"
    );
    assert_eq!(names("queue"), [format!("{p}-main")], "{inv:#?}");
    assert_eq!(
        names("job_definition"),
        [format!("{p}-prepare"), format!("{p}-train")],
        "{inv:#?}"
    );
    // The state names exactly these resources.
    assert_eq!(state.len(), 15, "{state:#?}");
    let recorded: BTreeSet<String> = state.values().cloned().collect();
    for kind in [
        "security_group",
        "vpc_endpoint",
        "compute",
        "queue",
        "job_definition",
    ] {
        for id in ids(kind) {
            assert!(
                recorded.contains(&id),
                "{kind} {id} is live but not in the state: {state:#?}"
            );
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

/// Starts `apply --auto-approve {extra}` and kills it (SIGKILL) right after its `n`th mutating
/// call that matches `pattern` ran on the server; returns its pid and the calls it made.
fn kill_apply(w: &World, extra: &[&str], pattern: &str, n: usize) -> (u32, Vec<String>) {
    let mut args = vec!["apply", "--auto-approve"];
    args.extend_from_slice(extra);
    let mut cmd = w.command(&args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    w.proxy.arm_kill_matching(pattern, n);
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    w.proxy.set_victim(child);
    let (_, killed) = w.proxy.wait_victim(Duration::from_secs(300));
    let log = w.proxy.mutating_log();
    assert!(
        killed,
        "apply finished before its mutating call {n} matching {pattern:?}: {log:?}"
    );
    (pid, log)
}

/// After a killed apply: the next apply reports the dead process's lock (holder and expiry)
/// and exits 1; `state unlock` refuses a live lock without --force and clears it with it;
/// then apply converges.
fn recover(w: &World, pid: u32, extra: &[&str], log: &[String]) {
    let mut args = vec!["apply", "--auto-approve"];
    args.extend_from_slice(extra);
    let out = w.run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "apply after the crash ({log:?}):\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {pid}")) && stderr.contains("expires"),
        "{stderr}"
    );
    assert!(stderr.contains("state unlock --force"), "{stderr}");
    let (_, err) = w.expect(&["state", "unlock"], 1);
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    let (out, _) = w.expect(&["state", "unlock", "--force"], 0);
    assert!(out.contains(&format!("pid {pid}")), "{out}");
    let out = w.run(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "apply after unlock ({log:?}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills `apply` right after its `n`th mutating call ran on the server, then checks the
/// whole recovery: the lock of the dead process (see [`recover`]), exactly one copy of every
/// resource, all recorded, a clean plan, and a destroy that leaves nothing.
async fn crash_at(n: usize) {
    let w = orderflow("crash");
    let c = w.clients().await;
    let (pid, log) = kill_apply(&w, &[], "", n);
    if n > 2 {
        recover(&w, pid, &[], &log);
    } else {
        // Killed before (or while) taking the lock: nothing to unlock.
        let out = w.run(&["apply", "--auto-approve"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "crash at {n} ({log:?}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_exactly_the_stack(&w, &c).await;
    w.expect(&["plan", "--detailed-exitcode"], 0);
    w.expect(&["destroy", "--auto-approve"], 0);
    assert_empty(&c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_during_compute_replacement_neither_duplicates_nor_orphans() {
    // Batch transitions take 1 s here, so the second kill lands while the old environment is
    // DELETING and the tool still waits on it.
    let emulator = testkit::start_with_env(&[("MOTO_BATCH_TRANSITION_SECONDS", "1")]);
    let w = world("crrep", "orderflow.toml", &emulator.endpoint);
    let c = w.clients().await;
    let p = w.p();
    w.apply(&[]);
    let envs = |c: Clients| async move {
        let out = c
            .batch()
            .describe_compute_environments()
            .send()
            .await
            .unwrap();
        let mut names: Vec<String> = out
            .compute_environments()
            .iter()
            .filter_map(|e| e.compute_environment_name())
            .map(String::from)
            .collect();
        names.sort();
        names
    };
    let check = |expected: [String; 2], gpu: bool| {
        let w = &w;
        let c = c.clone();
        async move {
            assert_eq!(envs(c.clone()).await, expected);
            let state = state_ids(w);
            assert_eq!(
                state.len(),
                15,
                "a deposed environment stayed in the state: {state:#?}"
            );
            let q = job_queue(&c, &format!("{}-main", w.p())).await.unwrap();
            let live: BTreeSet<String> = q
                .compute_environment_order()
                .iter()
                .filter_map(|o| o.compute_environment())
                .map(|a| a.rsplit('/').next().unwrap().to_string())
                .collect();
            assert_eq!(live, expected.iter().cloned().collect());
            let set = if gpu { "gpu=true" } else { "gpu=false" };
            w.expect(&["plan", "--detailed-exitcode", "--set", set], 0);
        }
    };

    // Killed right after the first replacement environment was created, before it was
    // recorded: the next apply adopts it (no -r2, no orphan -r1) and finishes the job.
    let (pid, log) = kill_apply(
        &w,
        &["--set", "gpu=true"],
        "batch createcomputeenvironment",
        1,
    );
    recover(&w, pid, &["--set", "gpu=true"], &log);
    check([format!("{p}-ondemand-r1"), format!("{p}-spot-r1")], true).await;

    // Killed while the old environments are being deleted (the queue already re-pointed):
    // the next apply deletes what is left and forgets the deposed ones.
    let (pid, log) = kill_apply(&w, &[], "batch deletecomputeenvironment", 1);
    recover(&w, pid, &[], &log);
    check([format!("{p}-ondemand-r2"), format!("{p}-spot-r2")], false).await;
    let lts = c.ec2().describe_launch_templates().send().await.unwrap();
    let lts: Vec<&str> = lts
        .launch_templates()
        .iter()
        .filter_map(|t| t.launch_template_name())
        .collect();
    assert_eq!(
        lts,
        [format!("{p}-spot-r2").as_str()],
        "launch templates of replaced environments are deleted"
    );

    w.expect(&["destroy", "--auto-approve"], 0);
    assert_empty(&c).await;
}

// The reference stack takes 49 mutating calls from an empty account (the lock's first write,
// refused: no table yet; the state table, the
// lock, 15 resources and most of their records, then one write for the last records, the
// serial and the unlock); independent resources are
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
    let w = orderflow("expire");
    let c = w.clients().await;
    // The first apply creates the table; then a lock as a process that died an hour ago left it.
    w.apply(&["--set", "logs.retention_days=7"]);
    let plant_expired_lock = || async {
        use aws_sdk_dynamodb::types::AttributeValue::S;
        c.dynamodb()
            .put_item()
            .table_name("provision-state")
            .item("pk", S(format!("{}/dev", w.stack.name)))
            .item("sk", S("lock".into()))
            .item("holder", S("ci@runner pid 4242".into()))
            .item("operation", S("apply".into()))
            .item("acquired", S("2020-01-01T00:00:00Z".into()))
            .item("expires", S("2020-01-01T01:00:00Z".into()))
            .item("token", S("dead".into()))
            .send()
            .await
            .unwrap();
    };
    plant_expired_lock().await;
    // Expired: apply takes it over without --force.
    let out = w.apply(&[]);
    assert!(out.contains("1 changed"), "{out}");
    // And `state unlock` without --force clears an expired one.
    plant_expired_lock().await;
    let (out, _) = w.expect(&["state", "unlock"], 0);
    assert!(out.contains("ci@runner pid 4242"), "{out}");
    w.expect(&["destroy", "--auto-approve"], 0);
    assert_empty(&c).await;
}

/// The changes of a JSON plan by address.
fn changes(plan: &Value) -> BTreeMap<String, Value> {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["address"].as_str().unwrap().to_string(), c.clone()))
        .collect()
}

fn attribute<'a>(change: &'a Value, name: &str) -> &'a Value {
    change["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no attribute {name} in {change:#}"))
}

/// An attribute's values (before, after) in a change.
fn before_after(change: &Value, name: &str) -> (Value, Value) {
    let attribute = attribute(change, name);
    (attribute["before"].clone(), attribute["after"].clone())
}

/// A change of `action` that the plan marks as drift (made outside the tool).
fn assert_drifted(change: &Value, action: &str) {
    assert_eq!(
        (change["action"].as_str(), change["drift"].as_bool()),
        (Some(action), Some(true)),
        "{change:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compute_replacement_keeps_the_queue_served_under_aws_batch_rules() {
    // A server of its own where Batch transitions take 2 s (CREATING, UPDATING, DELETING), an
    // ENABLED or attached environment cannot be deleted and a queue takes only VALID ones.
    let emulator = testkit::start_with_env(&[("MOTO_BATCH_TRANSITION_SECONDS", "2")]);
    let w = world("cerep", "orderflow.toml", &emulator.endpoint);
    let c = w.clients().await;
    let p = w.p();
    w.apply(&[]);
    let ce = |name: String| {
        let c = c.clone();
        async move { compute_env(&c, &name).await }
    };
    let spot = ce(format!("{p}-spot")).await.unwrap();

    // In place: max vCPUs, through UPDATING, same environment.
    let plan = w.plan_json(&["--set", "compute.spot.max_vcpus=32"]);
    assert_eq!(
        changes(&plan)["compute.spot"]["action"],
        "update",
        "{plan:#}"
    );
    w.apply(&["--set", "compute.spot.max_vcpus=32"]);
    let after = ce(format!("{p}-spot")).await.unwrap();
    assert_eq!(
        after.compute_environment_arn(),
        spot.compute_environment_arn()
    );
    assert_eq!(after.compute_resources().unwrap().maxv_cpus(), Some(32));

    // Replacement of both environments of the queue (GPU on), watched from outside: the
    // queue must name at least one VALID, ENABLED environment at every moment.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let c = c.clone();
        let stop = stop.clone();
        let name = format!("{p}-main");
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let q = job_queue(&c, &name)
                    .await
                    .expect("the queue exists throughout");
                let arns: Vec<String> = q
                    .compute_environment_order()
                    .iter()
                    .filter_map(|o| o.compute_environment())
                    .map(String::from)
                    .collect();
                let envs = c
                    .batch()
                    .describe_compute_environments()
                    .set_compute_environments(Some(arns.clone()))
                    .send()
                    .await
                    .unwrap();
                let serving = envs
                    .compute_environments()
                    .iter()
                    .filter(|e| {
                        arns.iter()
                            .any(|a| Some(a.as_str()) == e.compute_environment_arn())
                    })
                    .filter(|e| {
                        e.status().map(|s| s.as_str()) == Some("VALID")
                            && e.state().map(|s| s.as_str()) == Some("ENABLED")
                    })
                    .count();
                samples.push((serving, arns));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };
    let (stdout, stderr) = w.expect(
        &[
            "apply",
            "--auto-approve",
            "--set",
            "gpu=true",
            "--set",
            "compute.spot.max_vcpus=32",
        ],
        0,
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let samples = watcher.await.unwrap();
    assert!(
        samples.len() > 10,
        "the watcher saw too little: {samples:?}"
    );
    let starved: Vec<_> = samples.iter().filter(|(n, _)| *n == 0).collect();
    assert!(
        starved.is_empty(),
        "the queue had no VALID, ENABLED environment: {starved:?}\n{stderr}"
    );
    assert!(!stderr.contains("failed"), "{stderr}");
    assert!(
        stdout.contains("must be replaced (create before destroy)"),
        "{stdout}"
    );
    // The tool waited, and said on what.
    assert!(
        stderr.contains("waiting for compute environment"),
        "{stderr}"
    );

    // The new environments serve the queue, the old ones and their launch template are gone.
    let spot = ce(format!("{p}-spot-r1")).await.expect("replacement");
    let ondemand = ce(format!("{p}-ondemand-r1")).await.expect("replacement");
    assert!(ce(format!("{p}-spot")).await.is_none() && ce(format!("{p}-ondemand")).await.is_none());
    assert_eq!(spot.compute_resources().unwrap().maxv_cpus(), Some(32));
    let q = job_queue(&c, &format!("{p}-main")).await.unwrap();
    let mut order: Vec<(i32, String)> = q
        .compute_environment_order()
        .iter()
        .map(|o| {
            (
                o.order().unwrap(),
                o.compute_environment().unwrap().to_string(),
            )
        })
        .collect();
    order.sort();
    assert_eq!(
        order.into_iter().map(|(_, a)| a).collect::<Vec<_>>(),
        [
            spot.compute_environment_arn().unwrap(),
            ondemand.compute_environment_arn().unwrap()
        ]
    );
    let lts = c.ec2().describe_launch_templates().send().await.unwrap();
    let lts: Vec<&str> = lts
        .launch_templates()
        .iter()
        .filter_map(|t| t.launch_template_name())
        .collect();
    assert_eq!(lts, [format!("{p}-spot-r1").as_str()]);
    w.expect(
        &[
            "plan",
            "--detailed-exitcode",
            "--set",
            "gpu=true",
            "--set",
            "compute.spot.max_vcpus=32",
        ],
        0,
    );
    w.expect(&["destroy", "--auto-approve"], 0);
    assert_empty(&c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_shows_live_and_desired_values_and_apply_restores_them() {
    let w = orderflow("drift");
    let c = w.clients().await;
    let p = w.p();
    let bucket = format!("{p}-data-{}", w.account());
    w.apply(&[]);

    // Changes made outside the tool.
    c.batch()
        .update_job_queue()
        .job_queue(format!("{p}-main"))
        .priority(7)
        .send()
        .await
        .unwrap();
    let wide = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
    c.iam()
        .put_role_policy()
        .role_name(format!("{p}-job"))
        .policy_name("stack-buckets")
        .policy_document(wide)
        .send()
        .await
        .unwrap();
    c.s3()
        .put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Suspended)
                .build(),
        )
        .send()
        .await
        .unwrap();
    c.logs()
        .put_retention_policy()
        .log_group_name(format!("/aws/batch/{p}"))
        .retention_in_days(1)
        .send()
        .await
        .unwrap();
    c.ecr()
        .delete_repository()
        .repository_name(format!("{p}-runtime"))
        .force(true)
        .send()
        .await
        .unwrap();

    // `--refresh=false` trusts the state: the drift stays hidden, and only the stack facts and
    // the state are read, not the resources.
    let before = w.proxy.counts().requests;
    w.expect(&["plan", "--refresh=false", "--detailed-exitcode"], 0);
    let state_only = w.proxy.counts().requests - before;
    let before = w.proxy.counts().requests;
    w.expect(&["plan", "--detailed-exitcode"], 2);
    let refreshing = w.proxy.counts().requests - before;
    assert!(
        state_only <= 8 && refreshing >= 3 * state_only,
        "requests: {state_only} without refresh, {refreshing} with"
    );
    // ... while a change of the stack file still shows.
    w.stack
        .rewrite(|t| t.replace("retention_days = 30", "retention_days = 14"));
    let ch = changes(&w.plan_json(&["--refresh=false"]));
    assert_eq!(ch.keys().collect::<Vec<_>>(), ["log_group.jobs"], "{ch:#?}");
    assert_eq!(
        attribute(&ch["log_group.jobs"], "retention_days")["before"].as_u64(),
        Some(30),
        "the recorded value"
    );
    let (_, err) = w.expect(&["plan", "--refresh=false", "--out", "saved.plan"], 1);
    assert!(err.contains("drop --refresh=false"), "{err}");
    w.stack
        .rewrite(|t| t.replace("retention_days = 14", "retention_days = 30"));

    let plan = w.plan_json(&[]);
    let ch = changes(&plan);
    let queue = &ch["queue.main"];
    assert_drifted(queue, "update");
    assert_eq!(before_after(queue, "priority"), (json!(7), json!(1)));
    let role = &ch["role.job"];
    assert_drifted(role, "update");
    let policies = role["attributes"].to_string();
    assert!(
        policies.contains("s3:*") && policies.contains(&format!("arn:aws:s3:::{bucket}")),
        "live and desired policy: {role:#}"
    );
    let b = &ch["bucket.data"];
    assert_drifted(b, "update");
    assert_eq!(before_after(b, "versioning"), (json!(false), json!(true)));
    let lg = &ch["log_group.jobs"];
    assert_drifted(lg, "update");
    assert_eq!(before_after(lg, "retention_days"), (json!(1), json!(30)));
    assert_drifted(&ch["repository.runtime"], "create");
    // Nothing else moved.
    assert_eq!(ch.len(), 5, "{plan:#}");

    let (text, _) = w.expect(&["plan"], 0);
    assert!(
        text.contains("# queue.main will be updated in place  (changed outside provision)"),
        "{text}"
    );
    assert!(text.contains("~ priority = 7 -> 1"), "{text}");
    assert!(text.contains("~ versioning = false -> true"), "{text}");
    assert!(text.contains("~ retention_days = 1 -> 30"), "{text}");
    assert!(
        text.contains("# repository.runtime will be created  (deleted outside provision)"),
        "{text}"
    );

    w.apply(&[]);
    let q = job_queue(&c, &format!("{p}-main")).await.unwrap();
    assert_eq!(q.priority(), Some(1));
    let doc = c
        .iam()
        .get_role_policy()
        .role_name(format!("{p}-job"))
        .policy_name("stack-buckets")
        .send()
        .await
        .unwrap();
    let doc = decode_policy(doc.policy_document()).to_string();
    assert!(
        !doc.contains("s3:*") && doc.contains(&format!("arn:aws:s3:::{bucket}/*")),
        "{doc}"
    );
    let v = c
        .s3()
        .get_bucket_versioning()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(v.status().map(|s| s.as_str()), Some("Enabled"));
    let lg = c
        .logs()
        .describe_log_groups()
        .log_group_name_prefix(format!("/aws/batch/{p}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lg.log_groups()[0].retention_in_days(), Some(30));
    assert!(c
        .ecr()
        .describe_repositories()
        .repository_names(format!("{p}-runtime"))
        .send()
        .await
        .is_ok());
    w.expect(&["plan", "--detailed-exitcode"], 0);
    w.expect(&["destroy", "--auto-approve"], 0);
    assert_empty(&c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_and_destroy_converge_with_ten_percent_of_requests_failing() {
    let w = orderflow("fault");
    let c = w.clients().await;
    w.proxy.set_faults(100, 0x5eed);
    let out = w.apply(&[]);
    assert!(out.contains("15 added"), "{out}");
    w.expect(&["plan", "--detailed-exitcode"], 0);
    // A change under faults too: an in-place update and a job definition revision.
    let out = w.apply(&[
        "--set",
        "queues.main.priority=3",
        "--set",
        "jobs.prepare.vcpus=4",
    ]);
    assert!(out.contains("2 changed"), "{out}");
    w.expect(&["destroy", "--auto-approve"], 0);
    let counts = w.proxy.counts();
    w.proxy.set_faults(0, 0);
    assert_empty(&c).await;
    let failed = counts.throttled + counts.server_errors;
    assert!(
        counts.throttled > 5 && counts.server_errors > 5,
        "{counts:?}"
    );
    // About one in ten, and the tool still converged.
    assert!(failed * 100 / counts.requests >= 6, "{counts:?}");
}

/// IAM answers policy documents URL-encoded.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str())
            .map(String::from)
            .collect(),
        _ => vec![],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_policies_are_least_privilege() {
    // The templates themselves: every Resource is a placeholder filled with exact ARNs.
    for file in ["job-s3.json", "execution-secrets.json", "trust.json"] {
        let doc: Value = serde_json::from_str(
            &std::fs::read_to_string(testkit::workspace_root().join("policies").join(file))
                .unwrap(),
        )
        .unwrap();
        for st in doc["Statement"].as_array().unwrap() {
            for r in strings(&st["Resource"]) {
                assert!(
                    r.starts_with("{{") && r.ends_with("}}"),
                    "{file}: literal Resource {r}"
                );
            }
            for a in strings(&st["Action"]) {
                assert!(!a.contains('*'), "{file}: wildcard action {a}");
            }
        }
    }

    // The topic-modeling stack (stacks/topics.toml): secrets (one with its own KMS key) and a
    // KMS-encrypted bucket.
    let w = world("lp", "topics.toml", &testkit::emulator().endpoint);
    let c = w.clients().await;
    let acct = w.account().to_string();
    let wrds = c
        .secrets()
        .create_secret()
        .name("wrds-credentials")
        .secret_string("{}")
        .send()
        .await
        .unwrap();
    let key = format!("arn:aws:kms:us-east-1:{acct}:key/11111111-2222-3333-4444-555555555555");
    let grok = c
        .secrets()
        .create_secret()
        .name("grok-api-key")
        .kms_key_id(&key)
        .secret_string("k")
        .send()
        .await
        .unwrap();
    w.stack.rewrite(|t| {
        t.replace(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:grok-api-key-AbCdEf",
            "grok-api-key",
        )
    });
    w.apply(&[]);

    let p = w.p();
    let bucket = format!("arn:aws:s3:::{p}-results-{acct}");
    let bucket_key = format!("arn:aws:kms:us-east-1:{acct}:alias/ftm-data");
    let mut secret_arns = [
        wrds.arn().unwrap().to_string(),
        grok.arn().unwrap().to_string(),
    ];
    secret_arns.sort();
    for (role, service) in [
        ("instance", "ec2.amazonaws.com"),
        ("batch-service", "batch.amazonaws.com"),
        ("execution", "ecs-tasks.amazonaws.com"),
        ("job", "ecs-tasks.amazonaws.com"),
    ] {
        let name = format!("{p}-{role}");
        let got = c.iam().get_role().role_name(&name).send().await.unwrap();
        let trust = decode_policy(got.role().unwrap().assume_role_policy_document().unwrap());
        let statements = trust["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 1, "{name} trust: {trust}");
        assert_eq!(
            statements[0]["Principal"],
            json!({ "Service": service }),
            "{name} trust: {trust}"
        );
        assert_eq!(
            strings(&statements[0]["Action"]),
            ["sts:AssumeRole"],
            "{name} trust: {trust}"
        );

        // Every inline policy: no wildcard on S3, Secrets Manager or KMS.
        let inline = c
            .iam()
            .list_role_policies()
            .role_name(&name)
            .send()
            .await
            .unwrap();
        let mut grants: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for policy in inline.policy_names() {
            let doc = c
                .iam()
                .get_role_policy()
                .role_name(&name)
                .policy_name(policy)
                .send()
                .await
                .unwrap();
            let doc = decode_policy(doc.policy_document());
            for st in doc["Statement"].as_array().unwrap() {
                assert_eq!(st["Effect"], "Allow");
                let resources = strings(&st["Resource"]);
                for action in strings(&st["Action"]) {
                    assert!(
                        !action.contains('*'),
                        "{name}/{policy}: wildcard action {action}"
                    );
                    let service = action.split(':').next().unwrap();
                    if ["s3", "secretsmanager", "kms"].contains(&service) {
                        assert!(
                            !resources.iter().any(|r| r == "*" || r.ends_with(":*")),
                            "{name}/{policy}: {action} on {resources:?}"
                        );
                    }
                    grants
                        .entry(action)
                        .or_default()
                        .extend(resources.iter().cloned());
                }
            }
        }
        let attached = attached_policies(&c, &name).await;
        let managed: Vec<&str> = attached.iter().map(|(name, _)| name.as_str()).collect();
        let set = |items: &[&str]| {
            items
                .iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<String>>()
        };
        match role {
            "instance" => {
                assert_eq!(managed, ["AmazonEC2ContainerServiceforEC2Role"]);
                assert!(grants.is_empty(), "{grants:?}");
            }
            "batch-service" => {
                assert_eq!(managed, ["AWSBatchServiceRole"]);
                assert!(grants.is_empty(), "{grants:?}");
            }
            "execution" => {
                assert_eq!(managed, ["AmazonECSTaskExecutionRolePolicy"]);
                // Exactly the declared secrets, and only the key of the one that has its own.
                assert_eq!(
                    grants.keys().cloned().collect::<Vec<_>>(),
                    ["kms:Decrypt", "secretsmanager:GetSecretValue"]
                );
                assert_eq!(
                    grants["secretsmanager:GetSecretValue"],
                    secret_arns.iter().cloned().collect()
                );
                assert_eq!(grants["kms:Decrypt"], set(&[key.as_str()]));
            }
            "job" => {
                assert!(managed.is_empty(), "{managed:?}");
                // The stack's bucket and its objects, its bucket key; no secrets.
                let object = format!("{bucket}/*");
                for (action, resources) in &grants {
                    let allowed = match action.split(':').next().unwrap() {
                        "s3" if action == "s3:ListBucket" || action == "s3:GetBucketLocation" => {
                            set(&[bucket.as_str()])
                        }
                        "s3" => set(&[object.as_str()]),
                        "kms" => set(&[bucket_key.as_str()]),
                        other => panic!("the job role may not use {other}: {action}"),
                    };
                    assert_eq!(resources, &allowed, "{action}");
                }
                assert!(
                    grants.contains_key("s3:GetObject") && grants.contains_key("s3:PutObject"),
                    "{grants:?}"
                );
            }
            _ => unreachable!(),
        }
    }
    w.expect(&["destroy", "--auto-approve"], 0);
    assert_empty(&c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_beyond_the_stack_file_is_refused_before_any_change() {
    let w = orderflow("bad");
    let c = w.clients().await;
    let bin = env!("CARGO_BIN_EXE_provision");

    // Unknown --env: no request at all.
    let before = w.proxy.counts().requests;
    let out = w
        .proxy
        .command(bin)
        .args(["apply", "--auto-approve", "--stack"])
        .arg(&w.stack.path)
        .args(["--env", "staging"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("staging") && stderr.contains("defined: dev, prod"),
        "{stderr}"
    );
    assert_eq!(w.proxy.counts().requests, before, "a bad --env reached AWS");

    // No state table in the stack's region (nothing was ever applied there: a wrong region or
    // state_table): destroy says so and creates nothing, output too.
    let (_, stderr) = w.expect(&["destroy", "--auto-approve"], 1);
    assert!(
        stderr.contains("state table provision-state does not exist in us-east-1"),
        "{stderr}"
    );
    let (_, stderr) = w.expect(&["output", "--json"], 1);
    assert!(stderr.contains("provision-state"), "{stderr}");
    assert!(
        c.dynamodb()
            .list_tables()
            .send()
            .await
            .unwrap()
            .table_names()
            .is_empty(),
        "a state table was created"
    );
    // Nothing written: the lock's write, sent before anything says whether the table exists,
    // is refused.
    let log = w.proxy.mutating_log();
    assert!(
        log.iter().all(|call| call.ends_with("PutItem -> 400")),
        "{log:?}"
    );

    // A saved plan of another stack: refused before any request.
    let other = orderflow("other");
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("other.plan");
    other.expect(&["plan", "--out", saved.to_str().unwrap()], 0);
    let before = w.proxy.counts().requests;
    let (_, stderr) = w.expect(&["apply", saved.to_str().unwrap()], 1);
    assert!(
        stderr.contains(&format!("saved for {}/dev", other.stack.name))
            && stderr.contains(&w.stack.name),
        "{stderr}"
    );
    assert_eq!(w.proxy.counts().requests, before);

    // A saved plan made before the state moved (older serial): refused under the lock, before
    // any change to the account.
    let mine = dir.path().join("mine.plan");
    w.expect(&["plan", "--out", mine.to_str().unwrap()], 0);
    w.apply(&["--set", "logs.retention_days=7"]);
    let inv = inventory(&c).await;
    w.proxy.clear_log();
    let (_, stderr) = w.expect(&["apply", mine.to_str().unwrap()], 1);
    assert!(
        stderr.contains("stale") && stderr.contains("serial"),
        "{stderr}"
    );
    let writes: Vec<String> = w
        .proxy
        .mutating_log()
        .into_iter()
        .filter(|l| !l.contains("dynamodb"))
        .collect();
    assert!(
        writes.is_empty(),
        "a stale plan changed the account: {writes:?}"
    );
    assert_eq!(inventory(&c).await, inv);
    let lg = c
        .logs()
        .describe_log_groups()
        .log_group_name_prefix(format!("/aws/batch/{}", w.p()))
        .send()
        .await
        .unwrap();
    assert_eq!(lg.log_groups()[0].retention_in_days(), Some(7));
    w.expect(&["state", "unlock"], 0); // no lock was left behind

    // No credentials anywhere: one plain sentence, no request.
    let before = w.proxy.counts().requests;
    for args in [
        &["plan"][..],
        &["apply", "--auto-approve"],
        &["destroy", "--auto-approve"],
    ] {
        let out = w
            .command(args)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: no AWS credentials") && stderr.contains("AWS_ACCESS_KEY_ID"),
            "{stderr}"
        );
        assert!(!stderr.contains("DispatchFailure"), "{stderr}");
    }
    assert_eq!(w.proxy.counts().requests, before);

    // Credentials AWS does not know: refused by STS before anything else.
    w.proxy.reject_access_key("AKIAUNKNOWNKEY000000");
    w.proxy.clear_log();
    for args in [
        &["plan"][..],
        &["apply", "--auto-approve"],
        &["destroy", "--auto-approve"],
    ] {
        let out = w
            .command(args)
            .env("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("AWS refused the credentials (InvalidClientTokenId"),
            "{stderr}"
        );
    }
    assert!(w.proxy.mutating_log().is_empty());

    // AWS unreachable: named, with the endpoint, by the credentials check also where plan
    // reads the facts and the state beside it.
    for args in [&["apply", "--auto-approve"][..], &["plan"]] {
        let out = w
            .command(args)
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: cannot reach AWS at http://127.0.0.1:9")
                && stderr.contains("refused"),
            "{stderr}"
        );
    }

    // An endpoint variable that is empty (the SDK panicked on it) or has no scheme: named, with
    // the fix, before any request.
    let before = w.proxy.counts().requests;
    for (name, value) in [
        ("AWS_ENDPOINT_URL", ""),
        ("AWS_ENDPOINT_URL_S3", "localhost:4566"),
    ] {
        let out = w
            .command(&["plan"])
            .env(name, value)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}={value:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: {name}={value:?} is not an endpoint URL")),
            "{stderr}"
        );
        assert!(stderr.contains(&format!("unset {name}")), "{stderr}");
    }
    assert_eq!(w.proxy.counts().requests, before);

    // Everything above left the stack as it was.
    assert_eq!(inventory(&c).await, inv);
    w.expect(
        &[
            "plan",
            "--detailed-exitcode",
            "--set",
            "logs.retention_days=7",
        ],
        0,
    );
    w.expect(&["destroy", "--auto-approve"], 0);
    assert_empty(&c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn waits_time_out_naming_what_they_wait_for_and_the_next_apply_converges() {
    // Batch takes 6 s to bring an environment to VALID here; the apply may wait 1 s.
    let emulator = testkit::start_with_env(&[("MOTO_BATCH_TRANSITION_SECONDS", "6")]);
    let w = world("wait", "orderflow.toml", &emulator.endpoint);
    let c = w.clients().await;
    let p = w.p();
    let out = w
        .command(&["apply", "--auto-approve"])
        .env("PROVISION_WAIT_TIMEOUT_S", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("apply failed part way; run apply again to converge"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "timed out after 1s waiting for compute environment {p}-spot (last status: CREATING)"
        )),
        "{stderr}"
    );
    // The lock was released on the way out; the environments exist, created but unrecorded,
    // and still CREATING: the next apply adopts them and waits for VALID before the queue.
    let (stdout, stderr) = w.expect(&["apply", "--auto-approve"], 0);
    assert!(
        stderr.contains(&format!(
            "waiting for the compute environments of job queue {p}-main"
        )),
        "{stderr}"
    );
    assert!(stdout.contains("Apply complete!"), "{stdout}");
    assert_exactly_the_stack(&w, &c).await;
    w.expect(&["plan", "--detailed-exitcode"], 0);
    w.expect(&["destroy", "--auto-approve"], 0);
    assert_empty(&c).await;
}
