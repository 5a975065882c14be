//! Operations at scale, as a user runs them: fan-out of 5,000 string ids (one array job and a
//! manifest, or separate jobs with their ids inline), date batches, cost estimates and the
//! refusal of a job no instance can hold, `import` of an existing resource and `state rm`.
//! The real binary against moto, each test in its own account behind a counting proxy.

use aws_sdk_batch::types::JobDetail;
use provision::aws::Clients;
use serde_json::Value;

use crate::common::{bucket_tags, compute_env, job_queue, Provision, StackCopy, World};

/// One test's world: a private account behind a proxy and a uniquely named copy of the
/// reference stack (without the S3 endpoint, which one route table allows only once).
fn world(prefix: &str) -> World {
    World::on_emulator(StackCopy::orderflow_without_endpoint(prefix))
}

/// `state list` addresses.
fn state_addresses(w: &World) -> Vec<String> {
    w.state_list()
        .into_iter()
        .map(|(address, _, _)| address)
        .collect()
}

async fn describe(c: &Clients, id: &str) -> JobDetail {
    c.batch()
        .describe_jobs()
        .jobs(id)
        .send()
        .await
        .unwrap()
        .jobs()
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("job {id} not found"))
}

/// The job's container environment overrides... as Batch reports the job's environment.
fn job_env(job: &JobDetail) -> std::collections::BTreeMap<String, String> {
    job.container()
        .map(|c| c.environment())
        .unwrap_or_default()
        .iter()
        .map(|kv| {
            (
                kv.name().unwrap_or_default().to_string(),
                kv.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// 5,000 string ids, like the topic-modelling users' firms.
fn firm_ids() -> Vec<String> {
    (0..5000)
        .map(|i| format!("CIK{i:07}-firm.{}", i % 7))
        .collect()
}

async fn read_manifest(c: &Clients, uri: &str) -> Value {
    let (bucket, key) = uri
        .strip_prefix("s3://")
        .and_then(|r| r.split_once('/'))
        .unwrap();
    let body = c
        .s3()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn five_thousand_ids_fan_out_as_one_array_with_a_manifest() {
    let w = world("fan");
    w.apply(&[]);
    let c = w.clients().await;
    let ids = firm_ids();
    let file = w.file("firms.txt", &(ids.join("\n") + "\n"));

    let before = w.requests();
    let (out, err) = w.expect(&["submit", "prepare", "--ids", &file, "--per-job", "50"], 0);
    let calls = w.requests() - before;
    // Definition, queue, the manifest, one SubmitJob: the count does not grow with the ids.
    eprintln!("submit of 5000 ids as one array of 100: {calls} requests");
    assert!(calls <= 5, "{calls} requests for one array submit");
    assert!(err.contains("Estimated cost:"), "{err}");
    assert!(err.contains("100 jobs at once"), "{err}");

    let job_id = out.trim();
    assert_eq!(out.lines().count(), 1, "{out}");
    let job = describe(&c, job_id).await;
    assert_eq!(job.array_properties().and_then(|a| a.size()), Some(100));
    let env = job_env(&job);
    assert_eq!(env["SHARD_COUNT"], "100");
    assert!(!env.contains_key("SHARD_IDS"));
    let uri = &env["SHARD_MANIFEST"];
    assert!(
        uri.starts_with(&format!("s3://{}-data-", w.p())),
        "the manifest is in the stack's bucket: {uri}"
    );
    let manifest = read_manifest(&c, uri).await;
    assert_eq!(manifest["shard_count"], 100);
    assert_eq!(manifest["id_count"], 5000);
    let shards: Vec<Vec<String>> = serde_json::from_value(manifest["shards"].clone()).unwrap();
    assert!(shards.iter().all(|s| s.len() == 50));
    assert_eq!(shards.concat(), ids, "every id once, in file order");
}

#[tokio::test]
async fn separate_jobs_carry_their_ids_inline_or_read_the_manifest() {
    let w = world("fanj");
    w.apply(&[]);
    let c = w.clients().await;
    let ids = firm_ids();
    let file = w.file("firms.json", &serde_json::to_string(&ids).unwrap());

    // Five jobs of 1,000 ids each: each fits in its request.
    let before = w.requests();
    let (out, _) = w.expect(
        &[
            "submit",
            "prepare",
            "--ids",
            &file,
            "--array-size",
            "5",
            "--separate-jobs",
            "--json",
        ],
        0,
    );
    let calls = w.requests() - before;
    eprintln!("submit of 5000 ids as 5 separate jobs: {calls} requests");
    assert!(calls <= 2 + 5, "{calls}");
    let submitted: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(submitted.len(), 5);
    let mut seen = Vec::new();
    for (i, s) in submitted.iter().enumerate() {
        assert_eq!(s["shard_index"], i);
        let name = s["job_name"].as_str().unwrap();
        assert!(name.ends_with(&format!("-{i:03}")), "{name}");
        assert!(name.starts_with(&format!("{}-prepare-", w.p())), "{name}");
        let env = job_env(&describe(&c, s["job_id"].as_str().unwrap()).await);
        assert_eq!(env["SHARD_INDEX"], i.to_string());
        assert_eq!(env["SHARD_COUNT"], "5");
        seen.extend(env["SHARD_IDS"].split(',').map(String::from));
    }
    assert_eq!(seen, ids);

    // One job of all 5,000 (about 100 KB of ids): too large for SubmitJob, so a manifest.
    let (out, _) = w.expect(
        &["submit", "prepare", "--ids", &file, "--per-job", "5000"],
        0,
    );
    let job = describe(&c, out.trim()).await;
    assert!(job.array_properties().is_none());
    assert!(job.job_name().unwrap().ends_with("-000"));
    let env = job_env(&job);
    assert_eq!(env["SHARD_INDEX"], "0");
    let manifest = read_manifest(&c, &env["SHARD_MANIFEST"]).await;
    assert_eq!(manifest["shards"][0].as_array().unwrap().len(), 5000);
}

#[tokio::test]
async fn date_ranges_split_into_one_job_per_batch() {
    let w = world("fand");
    w.apply(&[]);
    let c = w.clients().await;
    let (out, _) = w.expect(
        &[
            "submit",
            "prepare",
            "--split-dates",
            "month",
            "--start-date",
            "2024-01-15",
            "--end-date",
            "2024-03-10",
        ],
        0,
    );
    let ids: Vec<&str> = out.lines().collect();
    assert_eq!(ids.len(), 3, "{out}");
    // --json names each job's batch.
    let (json, _) = w.expect(
        &[
            "submit",
            "prepare",
            "--split-dates",
            "7d",
            "--start-date",
            "2024-01-01",
            "--end-date",
            "2024-01-10",
            "--json",
        ],
        0,
    );
    let batches: Vec<Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1]["start_date"], "2024-01-08");
    assert_eq!(batches[1]["end_date"], "2024-01-10");
    assert!(batches[1]["job_name"].as_str().unwrap().ends_with("-001"));
    let mut ranges = Vec::new();
    for id in ids {
        let env = job_env(&describe(&c, id).await);
        ranges.push((env["START_DATE"].clone(), env["END_DATE"].clone()));
    }
    assert_eq!(
        ranges,
        [
            ("2024-01-15".to_string(), "2024-01-31".to_string()),
            ("2024-02-01".to_string(), "2024-02-29".to_string()),
            ("2024-03-01".to_string(), "2024-03-10".to_string()),
        ]
    );
}

#[test]
fn bad_ids_and_impossible_jobs_submit_nothing() {
    let w = world("fanb");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![w.file("empty.txt", "\n\n")], "holds no ids"),
        (vec![w.file("comma.txt", "a\nb,c\n")], "contains a comma"),
        (
            vec![w.file("nl.json", r#"["a", "b\nc"]"#)],
            "contains a newline",
        ),
        (
            vec![w.file("broken.json", r#"["a", "b""#)],
            "not a JSON array",
        ),
        (vec![w.file("dup.txt", "a\nb\na\n")], "given twice"),
    ];
    let before = w.requests();
    for (file, needle) in cases {
        let (_, err) = w.expect(
            &["submit", "prepare", "--ids", &file[0], "--per-job", "1"],
            1,
        );
        assert!(err.contains(needle), "{needle}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let ok = w.file("ok.txt", "a\nb\n");
    for (args, needle) in [
        (vec!["--ids", &ok], "--array-size N"),
        (
            vec!["--ids", &ok, "--array-size", "3"],
            "more than the 2 ids",
        ),
        (vec!["--ids", &ok, "--per-job", "0"], "at least 1"),
        (vec!["--per-job", "2"], "--ids FILE"),
        (
            vec!["--split-dates", "month", "--start-date", "2024-01-01"],
            "--end-date",
        ),
        (vec!["--split-dates", "fortnight"], "month, week or Nd"),
        (vec!["--memory-mib", "131072"], "RUNNABLE forever"),
    ] {
        let mut all = vec!["submit", "prepare"];
        all.extend(args.iter().copied());
        let (_, err) = w.expect(&all, 1);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert_eq!(w.requests(), before, "bad input reached AWS");
}

#[test]
fn a_job_no_instance_can_hold_is_refused_with_the_fix() {
    let w = world("cost");
    let before = w.requests();
    // The order-flow users' CDK prepare job asked for 128 GiB; the queue's largest type has 32 GiB.
    let (_, err) = w.expect(&["submit", "prepare", "--memory-mib", "131072"], 1);
    assert!(err.contains("131072 MiB"), "{err}");
    assert!(err.contains("m5.2xlarge"), "names the largest type: {err}");
    assert!(
        err.contains("compute.spot"),
        "names where to add one: {err}"
    );
    assert!(err.contains("e.g. r5.8xlarge"), "suggests one: {err}");
    assert_eq!(w.requests(), before, "refused before any AWS call");
}

#[test]
fn cost_estimates_full_scale_idle_and_storage_offline() {
    let w = world("costs");
    let before = w.requests();
    let (out, _) = w.expect(&["cost", "--json", "--s3-gb", "100"], 0);
    let cost: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(w.requests(), before, "cost reads no AWS");
    assert!(cost["prices_as_of"].as_str().unwrap().len() == 10);
    let computes = cost["compute"].as_array().unwrap();
    let spot = computes
        .iter()
        .find(|c| c["address"] == "compute.spot")
        .unwrap();
    assert_eq!(spot["pricing"], "spot");
    assert_eq!(spot["max_vcpus"], 16);
    assert!(spot["full_scale_per_hour"].as_f64().unwrap() > 0.0);
    assert!(
        spot["full_scale_on_demand_per_hour"].as_f64().unwrap()
            > spot["full_scale_spot_per_hour"].as_f64().unwrap()
    );
    assert_eq!(cost["idle_per_hour"], 0.0);
    assert!((cost["storage"]["per_month"].as_f64().unwrap() - 2.3).abs() < 1e-9);

    assert_eq!(cost["spot_prices"], "table");

    // --refresh-prices reads the current Spot prices (moto quotes $0.00001/h everywhere);
    // On-Demand prices stay the table's.
    let (out, _) = w.expect(&["cost", "--json", "--refresh-prices"], 0);
    let live: Value = serde_json::from_str(&out).unwrap();
    assert!(
        live["spot_prices"]
            .as_str()
            .unwrap()
            .starts_with("DescribeSpotPriceHistory in us-east-1"),
        "{live}"
    );
    let live_spot = live["compute"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "compute.spot")
        .unwrap();
    assert!(live_spot["full_scale_spot_per_hour"].as_f64().unwrap() < 0.01);
    assert_eq!(
        live_spot["full_scale_on_demand_per_hour"],
        spot["full_scale_on_demand_per_hour"]
    );

    // --set min_vcpus: an idle cost appears; the text says it.
    let (text, _) = w.expect(&["cost", "--set", "compute.ondemand.min_vcpus=4"], 0);
    assert!(text.contains("compute.ondemand"), "{text}");
    let idle = text.lines().find(|l| l.starts_with("Full scale:")).unwrap();
    assert!(!idle.contains("idle: $0.00/h"), "{idle}");
}

#[test]
fn plan_prints_the_estimate_and_keeps_its_json() {
    let w = world("costp");
    let (text, _) = w.expect(&["plan"], 0);
    assert!(text.contains("Plan: "), "{text}");
    assert!(text.contains("Estimated cost: $"), "{text}");
    let (json, _) = w.expect(&["plan", "--json"], 0);
    let plan: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(plan["format_version"], 1);
    assert!(plan["summary"]["add"].as_u64().unwrap() > 0);
    assert!(
        plan["cost_estimate"]["full_scale_per_hour"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // A job no instance type can hold is named before the apply.
    let (_, err) = w.expect(&["plan", "--set", "jobs.prepare.memory_mib=131072"], 0);
    assert!(err.contains("Warning: job `prepare` needs"), "{err}");
}

#[tokio::test]
async fn import_adopts_an_untagged_resource_the_plan_names() {
    let w = world("imp");
    let c = w.clients().await;
    // Someone made the log group by hand, untagged, with the stack's name for it.
    let group = format!("/aws/batch/{}", w.p());
    c.logs()
        .create_log_group()
        .log_group_name(&group)
        .send()
        .await
        .unwrap();
    let (_, err) = w.expect(&["plan"], 1);
    assert!(
        err.contains(&format!(
            "provision import --stack {} --env dev log_group.jobs {group}",
            w.stack.path.display()
        )),
        "the plan names the import command: {err}"
    );

    // Wrong kind and other region: refused before any AWS call.
    let before = w.requests();
    let (_, err) = w.expect(
        &[
            "import",
            "--auto-approve",
            "log_group.jobs",
            "arn:aws:batch:us-east-1:123456789012:job-queue/x",
        ],
        1,
    );
    assert!(err.contains("is a job queue, not a log group"), "{err}");
    let other_region = format!("arn:aws:logs:eu-west-1:123456789012:log-group:{group}");
    let (_, err) = w.expect(
        &["import", "--auto-approve", "log_group.jobs", &other_region],
        1,
    );
    assert!(err.contains("region eu-west-1"), "{err}");
    let (_, err) = w.expect(
        &["import", "--auto-approve", "security_group.batch", "x"],
        1,
    );
    assert!(err.contains("cannot be imported"), "{err}");
    let (_, err) = w.expect(&["import", "log_group.jobs", &group], 1);
    assert!(err.contains("--auto-approve"), "{err}");
    assert_eq!(w.requests(), before);

    let (out, _) = w.expect(&["import", "--auto-approve", "log_group.jobs", &group], 0);
    assert!(out.contains("log_group.jobs will be imported"), "{out}");
    assert!(
        out.contains("retention_days"),
        "shows what apply will change: {out}"
    );
    assert!(state_addresses(&w).contains(&"log_group.jobs".to_string()));
    let arn = c
        .logs()
        .describe_log_groups()
        .log_group_name_prefix(&group)
        .send()
        .await
        .unwrap()
        .log_groups()[0]
        .arn()
        .unwrap()
        .trim_end_matches(":*")
        .to_string();
    let tags = c
        .logs()
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags.tags().unwrap().get("provision:stack"),
        Some(&w.stack.name),
        "{tags:?}"
    );
    // Importing it again is refused; the plan now updates it in place, and apply converges.
    w.expect(&["import", "--auto-approve", "log_group.jobs", &group], 1);
    let (json, _) = w.expect(&["plan", "--json"], 0);
    let plan: Value = serde_json::from_str(&json).unwrap();
    let change = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "log_group.jobs")
        .unwrap();
    assert_eq!(change["action"], "update");
    w.apply(&[]);
}

#[tokio::test]
async fn state_rm_forgets_without_deleting() {
    let w = world("srm");
    w.apply(&[]);
    let c = w.clients().await;
    let (out, _) = w.expect(&["state", "rm", "queue.main"], 0);
    assert!(out.contains("not deleted"), "{out}");
    assert!(!state_addresses(&w).contains(&"queue.main".to_string()));
    let live = job_queue(&c, &format!("{}-main", w.p())).await;
    assert!(live.is_some(), "the queue is still there");
    let (_, err) = w.expect(&["state", "rm", "queue.main"], 1);
    assert!(err.contains("not in the state"), "{err}");
    // The tagged queue is adopted back by the next apply (crash recovery's adoption by tags).
    w.apply(&[]);
    assert!(state_addresses(&w).contains(&"queue.main".to_string()));
}

/// A stack that names its account and VPC reads every resource before the state answers,
/// guessing what it records; what it guessed wrong is read again: an environment the state
/// records under its replacement's name, a bucket the state forgot (its tags say it is ours).
/// `destroy` then finds both: the replacement by its record, the bucket by its tags.
#[tokio::test]
async fn a_stack_naming_its_account_and_vpc_reads_again_what_it_guessed_wrong() {
    let w = world("nmd");
    let c = w.clients().await;
    let vpc = provision::engine::default_vpc(&c).await.unwrap().unwrap();
    w.stack
        .rewrite(|t| testkit::naming_account_and_vpc(&t, w.account(), &vpc));
    w.apply(&[]);
    let p = w.p();

    // Other instance types replace the spot environment: `{P}-spot-r1` from now on.
    w.stack.rewrite(|t| {
        t.replacen(
            r#"instance_types = ["c5.xlarge", "c5.2xlarge", "m5.xlarge", "m5.2xlarge"]"#,
            r#"instance_types = ["c5.xlarge", "m5.xlarge"]"#,
            1,
        )
    });
    w.apply(&[]);
    assert!(compute_env(&c, &format!("{p}-spot-r1")).await.is_some());
    w.expect(&["state", "rm", "bucket.data"], 0);
    // Nothing to change: the environment was read again under its recorded name, the bucket's
    // tags were read (without them it would belong to someone else).
    w.expect(&["plan", "--detailed-exitcode"], 0);

    w.expect(&["destroy", "--auto-approve"], 0);
    assert!(compute_env(&c, &format!("{p}-spot-r1")).await.is_none());
    let bucket = format!("{p}-data-{}", w.account());
    let gone = c.s3().head_bucket().bucket(&bucket).send().await;
    assert!(gone.is_err(), "{bucket} is still there");
    assert!(state_addresses(&w).is_empty(), "{:?}", state_addresses(&w));
}

/// Takes `address` out of the state and strips the stack's tags from it, as if it had been
/// made by hand: what `import` is for.
async fn orphan(w: &World, c: &Clients, address: &str, name: &str, arn: &str) {
    w.expect(&["state", "rm", address], 0);
    let keys = ["provision:stack", "provision:env"];
    match address.split('.').next().unwrap() {
        "bucket" => {
            c.s3()
                .delete_bucket_tagging()
                .bucket(name)
                .send()
                .await
                .unwrap();
        }
        "repository" => {
            c.ecr()
                .untag_resource()
                .resource_arn(arn)
                .set_tag_keys(Some(keys.map(String::from).to_vec()))
                .send()
                .await
                .unwrap();
        }
        "role" => {
            c.iam()
                .untag_role()
                .role_name(name)
                .set_tag_keys(Some(keys.map(String::from).to_vec()))
                .send()
                .await
                .unwrap();
        }
        _ => {
            c.batch()
                .untag_resource()
                .resource_arn(arn)
                .set_tag_keys(Some(keys.map(String::from).to_vec()))
                .send()
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn import_adopts_every_kind_by_name_or_arn() {
    let w = world("impk");
    w.apply(&[]);
    let c = w.clients().await;
    let p = w.p();
    let account = w.proxy.account.clone();
    let batch_arn =
        |kind: &str, name: &str| format!("arn:aws:batch:us-east-1:{account}:{kind}/{name}");
    let bucket = format!("{p}-data-{account}");
    let definition = c
        .batch()
        .describe_job_definitions()
        .job_definition_name(format!("{p}-prepare"))
        .status("ACTIVE")
        .send()
        .await
        .unwrap()
        .job_definitions()[0]
        .job_definition_arn()
        .unwrap()
        .to_string();
    // (address, name, ARN to untag, what to give import)
    let cases = [
        (
            "bucket.data",
            bucket.clone(),
            String::new(),
            format!("arn:aws:s3:::{bucket}"),
        ),
        (
            "repository.runtime",
            format!("{p}-runtime"),
            format!("arn:aws:ecr:us-east-1:{account}:repository/{p}-runtime"),
            format!("{p}-runtime"),
        ),
        (
            "role.job",
            format!("{p}-job"),
            String::new(),
            format!("arn:aws:iam::{account}:role/{p}-job"),
        ),
        (
            "compute.spot",
            format!("{p}-spot"),
            batch_arn("compute-environment", &format!("{p}-spot")),
            batch_arn("compute-environment", &format!("{p}-spot")),
        ),
        (
            "queue.main",
            format!("{p}-main"),
            batch_arn("job-queue", &format!("{p}-main")),
            format!("{p}-main"),
        ),
        (
            "job_definition.prepare",
            format!("{p}-prepare"),
            definition.clone(),
            definition.clone(),
        ),
    ];
    for (address, name, arn, _) in &cases {
        orphan(&w, &c, address, name, arn).await;
    }
    let (_, err) = w.expect(&["plan"], 1);
    assert!(err.contains("provision import --stack"), "{err}");
    for (address, _, _, given) in &cases {
        let (out, _) = w.expect(&["import", "--auto-approve", address, given], 0);
        assert!(
            out.contains("the next apply changes nothing"),
            "{address}: {out}"
        );
    }
    // Everything is the stack's again, tagged, and the plan has nothing to do.
    let (out, _) = w.expect(&["plan"], 0);
    assert!(out.contains("No changes."), "{out}");
    let tags = bucket_tags(&c, &bucket).await;
    assert_eq!(tags.get("provision:stack"), Some(&w.stack.name));
    assert_eq!(
        job_queue(&c, &format!("{p}-main"))
            .await
            .unwrap()
            .tags()
            .unwrap()
            .get("provision:env")
            .map(String::as_str),
        Some("dev")
    );
    // Another stack's resource is refused.
    w.expect(&["state", "rm", "queue.main"], 0);
    c.batch()
        .tag_resource()
        .resource_arn(batch_arn("job-queue", &format!("{p}-main")))
        .tags("provision:stack", "someone-else")
        .send()
        .await
        .unwrap();
    let (_, err) = w.expect(
        &[
            "import",
            "--auto-approve",
            "queue.main",
            &format!("{p}-main"),
        ],
        1,
    );
    assert!(err.contains("someone-else"), "{err}");
    // A name the stack does not derive for the address is refused.
    let (_, err) = w.expect(
        &["import", "--auto-approve", "queue.main", "other-queue"],
        1,
    );
    assert!(err.contains("is named"), "{err}");
}

#[tokio::test]
async fn cost_measures_the_storage_the_stack_holds() {
    let w = world("costm");
    w.apply(&[]);
    let c = w.clients().await;
    let bucket = format!("{}-data-{}", w.p(), w.proxy.account);
    // Two versions of one object: S3 bills both.
    for _ in 0..2 {
        c.s3()
            .put_object()
            .bucket(&bucket)
            .key("ticks.parquet")
            .body(vec![7u8; 1_500_000].into())
            .send()
            .await
            .unwrap();
    }
    let (out, _) = w.expect(&["cost", "--json", "--measure-storage"], 0);
    let cost: Value = serde_json::from_str(&out).unwrap();
    assert!(
        (cost["storage"]["s3_gb"].as_f64().unwrap() - 0.003).abs() < 1e-9,
        "{cost}"
    );
    assert_eq!(cost["storage"]["ecr_gb"], 0.0);
    let (_, err) = w.expect(&["cost", "--measure-storage", "--s3-gb", "5"], 1);
    assert!(err.contains("--s3-gb"), "{err}");
}
