//! The engine end to end: the real `provision` binary against moto, every attribute read back
//! with the SDK. Each test works on its own copy of the reference stack under a unique name.

use aws_sdk_dynamodb::types::AttributeValue;
use provision::aws::Clients;

use crate::common::{attached_policies, bucket_tags, compute_env, job_queue, Provision, StackCopy};

const ACCOUNT: &str = "123456789012";

/// Without the S3 endpoint: tests run in parallel in one default VPC, and AWS allows one S3
/// gateway endpoint per route table, so only one test owns it.
fn orderflow(prefix: &str) -> StackCopy {
    StackCopy::orderflow_without_endpoint(prefix)
}

async fn clients() -> Clients {
    let loader = provision::aws::with_retries(testkit::emulator().config_loader());
    Clients::from_config(loader.load().await)
}

/// Address → action of a JSON plan's changes.
fn actions(plan: &serde_json::Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["address"].as_str().unwrap().to_string(),
                c["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn serial(c: &Clients, stack: &StackCopy) -> Option<u64> {
    let out = c
        .dynamodb()
        .get_item()
        .table_name("provision-state")
        .key("pk", AttributeValue::S(format!("{}/dev", stack.name)))
        .key("sk", AttributeValue::S("meta".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.item()
        .and_then(|i| i.get("serial"))
        .map(|v| v.as_n().unwrap().parse().unwrap())
}

/// The VPC endpoints carrying `stack`'s tag.
async fn stack_endpoints(
    c: &Clients,
    stack: &StackCopy,
) -> aws_sdk_ec2::operation::describe_vpc_endpoints::DescribeVpcEndpointsOutput {
    c.ec2()
        .describe_vpc_endpoints()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:provision:stack")
                .values(&stack.name)
                .build(),
        )
        .send()
        .await
        .unwrap()
}

/// The state's resource items of `stack`.
async fn resource_items(
    c: &Clients,
    stack: &StackCopy,
) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    let out = c
        .dynamodb()
        .query()
        .table_name("provision-state")
        .key_condition_expression("pk = :pk AND begins_with(sk, :r)")
        .expression_attribute_values(":pk", AttributeValue::S(format!("{}/dev", stack.name)))
        .expression_attribute_values(":r", AttributeValue::S("resource#".into()))
        .send()
        .await
        .unwrap();
    out.items().to_vec()
}

async fn active_defs(c: &Clients, name: &str) -> Vec<aws_sdk_batch::types::JobDefinition> {
    let out = c
        .batch()
        .describe_job_definitions()
        .job_definition_name(name)
        .status("ACTIVE")
        .send()
        .await
        .unwrap();
    out.job_definitions()
        .iter()
        .filter(|d| d.status() == Some("ACTIVE"))
        .cloned()
        .collect()
}

fn env_of(def: &aws_sdk_batch::types::JobDefinition) -> std::collections::BTreeMap<String, String> {
    def.container_properties()
        .unwrap()
        .environment()
        .iter()
        .map(|kv| {
            (
                kv.name().unwrap().to_string(),
                kv.value().unwrap().to_string(),
            )
        })
        .collect()
}

async fn root_volume(c: &Clients, lt: &str) -> Option<i32> {
    let out = c
        .ec2()
        .describe_launch_template_versions()
        .launch_template_name(lt)
        .versions("$Default")
        .send()
        .await
        .ok()?;
    out.launch_template_versions()[0]
        .launch_template_data()?
        .block_device_mappings()[0]
        .ebs()?
        .volume_size()
}

#[tokio::test]
async fn apply_reads_back_every_attribute_is_idempotent_and_destroy_leaves_nothing() {
    let c = clients().await;
    let s = StackCopy::new("eng", "orderflow.toml");
    let p = s.p();
    let out = s.apply(&[]);
    assert!(
        out.contains("Apply complete! Resources: 15 added, 0 changed, 0 destroyed."),
        "{out}"
    );

    // S3 gateway endpoint on the VPC's route tables, tagged.
    let endpoints = stack_endpoints(&c, &s).await;
    let endpoint = &endpoints.vpc_endpoints()[0];
    assert_eq!(endpoint.service_name(), Some("com.amazonaws.us-east-1.s3"));
    assert!(!endpoint.route_table_ids().is_empty());

    // Bucket: name with account id, versioning, encryption, public access block, expiry, tags.
    let bucket = format!("{p}-data-{ACCOUNT}");
    let v = c
        .s3()
        .get_bucket_versioning()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(v.status().map(|s| s.as_str()), Some("Enabled"));
    let enc = c
        .s3()
        .get_bucket_encryption()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let rule = &enc.server_side_encryption_configuration().unwrap().rules()[0];
    assert_eq!(
        rule.apply_server_side_encryption_by_default()
            .unwrap()
            .sse_algorithm()
            .as_str(),
        "AES256"
    );
    let pab = c
        .s3()
        .get_public_access_block()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let pab = pab.public_access_block_configuration().unwrap();
    assert_eq!(
        (
            pab.block_public_acls(),
            pab.ignore_public_acls(),
            pab.block_public_policy(),
            pab.restrict_public_buckets()
        ),
        (Some(true), Some(true), Some(true), Some(true))
    );
    let lc = c
        .s3()
        .get_bucket_lifecycle_configuration()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(
        lc.rules()[0]
            .noncurrent_version_expiration()
            .unwrap()
            .noncurrent_days(),
        Some(30)
    );
    let tags = bucket_tags(&c, &bucket).await;
    assert_eq!(tags.get("provision:stack"), Some(&s.name));
    assert_eq!(tags.get("provision:env").map(String::as_str), Some("dev"));

    // Repository: scan on push, lifecycle keeping 5 images.
    let repo = format!("{p}-runtime");
    let r = c
        .ecr()
        .describe_repositories()
        .repository_names(&repo)
        .send()
        .await
        .unwrap();
    assert!(r.repositories()[0]
        .image_scanning_configuration()
        .unwrap()
        .scan_on_push());
    let policy = c
        .ecr()
        .get_lifecycle_policy()
        .repository_name(&repo)
        .send()
        .await
        .unwrap();
    let policy: serde_json::Value =
        serde_json::from_str(policy.lifecycle_policy_text().unwrap()).unwrap();
    assert_eq!(policy["rules"][0]["selection"]["countNumber"], 5);

    // Log group retention.
    let lg = c
        .logs()
        .describe_log_groups()
        .log_group_name_prefix(format!("/aws/batch/{p}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lg.log_groups()[0].retention_in_days(), Some(30));

    // IAM: trust per service, managed policies, job role scoped to the stack's bucket.
    for (role, service, managed) in [
        (
            "instance",
            "ec2.amazonaws.com",
            Some("AmazonEC2ContainerServiceforEC2Role"),
        ),
        (
            "batch-service",
            "batch.amazonaws.com",
            Some("AWSBatchServiceRole"),
        ),
        (
            "execution",
            "ecs-tasks.amazonaws.com",
            Some("AmazonECSTaskExecutionRolePolicy"),
        ),
        ("job", "ecs-tasks.amazonaws.com", None),
    ] {
        let name = format!("{p}-{role}");
        let got = c.iam().get_role().role_name(&name).send().await.unwrap();
        let trust = got.role().unwrap().assume_role_policy_document().unwrap();
        assert!(trust.contains(service), "{name} trust: {trust}");
        let arns: Vec<String> = attached_policies(&c, &name)
            .await
            .into_iter()
            .map(|(_, arn)| arn)
            .collect();
        match managed {
            Some(m) => assert_eq!(arns, [format!("arn:aws:iam::aws:policy/service-role/{m}")]),
            None => assert!(arns.is_empty()),
        }
    }
    let job_policy = c
        .iam()
        .get_role_policy()
        .role_name(format!("{p}-job"))
        .policy_name("stack-buckets")
        .send()
        .await
        .unwrap();
    let doc = provision::resources::iam::decode_policy(job_policy.policy_document());
    assert_eq!(
        doc["Statement"][0]["Resource"],
        serde_json::json!([format!("arn:aws:s3:::{bucket}")])
    );
    assert_eq!(
        doc["Statement"][1]["Resource"],
        serde_json::json!([format!("arn:aws:s3:::{bucket}/*")])
    );
    let profile = c
        .iam()
        .get_instance_profile()
        .instance_profile_name(format!("{p}-instance"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        profile.instance_profile().unwrap().roles()[0].role_name(),
        format!("{p}-instance")
    );

    // Compute environments.
    let spot = compute_env(&c, &format!("{p}-spot"))
        .await
        .expect("spot environment");
    let cr = spot.compute_resources().unwrap();
    assert_eq!(cr.r#type().unwrap().as_str(), "SPOT");
    assert_eq!(
        cr.allocation_strategy().unwrap().as_str(),
        "SPOT_PRICE_CAPACITY_OPTIMIZED"
    );
    assert_eq!((cr.minv_cpus(), cr.maxv_cpus()), (Some(0), Some(16)));
    assert_eq!(cr.ec2_configuration()[0].image_type(), Some("ECS_AL2023"));
    assert!(cr
        .instance_role()
        .unwrap()
        .ends_with(&format!("instance-profile/{p}-instance")));
    assert!(spot
        .service_role()
        .unwrap()
        .ends_with(&format!("role/{p}-batch-service")));
    assert!(!cr.subnets().is_empty() && cr.security_group_ids().len() == 1);
    assert_eq!(
        cr.launch_template().unwrap().launch_template_name(),
        Some(format!("{p}-spot").as_str())
    );
    assert_eq!(root_volume(&c, &format!("{p}-spot")).await, Some(50));
    assert_eq!(spot.tags().unwrap().get("provision:stack"), Some(&s.name));
    let ondemand = compute_env(&c, &format!("{p}-ondemand"))
        .await
        .expect("on-demand environment");
    let cr = ondemand.compute_resources().unwrap();
    assert_eq!(cr.r#type().unwrap().as_str(), "EC2");
    assert_eq!(
        cr.allocation_strategy().unwrap().as_str(),
        "BEST_FIT_PROGRESSIVE"
    );
    assert!(cr.launch_template().is_none());

    // Queue: priority, order = preference.
    let q = job_queue(&c, &format!("{p}-main")).await.expect("queue");
    assert_eq!(q.priority(), Some(1));
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
    assert_eq!(order[0].1, spot.compute_environment_arn().unwrap());
    assert_eq!(order[1].1, ondemand.compute_environment_arn().unwrap());

    // Job definitions: resources, env with injected variables, logs, retry, roles, timeout.
    let defs = active_defs(&c, &format!("{p}-prepare")).await;
    assert_eq!(defs.len(), 1);
    let def = &defs[0];
    let cp = def.container_properties().unwrap();
    assert_eq!(
        cp.image(),
        Some(format!("{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{p}-runtime:cpu").as_str())
    );
    assert_eq!(cp.command(), ["runtime", "prepare"]);
    let req: Vec<(String, String)> = cp
        .resource_requirements()
        .iter()
        .map(|r| {
            (
                r.r#type().unwrap().as_str().to_string(),
                r.value().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        req.contains(&("VCPU".into(), "2".into()))
            && req.contains(&("MEMORY".into(), "8192".into())),
        "{req:?}"
    );
    let env = env_of(def);
    assert_eq!(env["STACK"], s.name);
    assert_eq!(env["STACK_ENV"], "dev");
    assert_eq!(env["USE_GPU"], "false");
    assert_eq!(env["AWS_REGION"], "us-east-1");
    assert_eq!(env["BUCKET_DATA"], bucket);
    assert_eq!(env["CHECKPOINT_INTERVAL"], "50");
    let log = cp.log_configuration().unwrap();
    assert_eq!(log.log_driver().unwrap().as_str(), "awslogs");
    assert_eq!(
        log.options().unwrap()["awslogs-group"],
        format!("/aws/batch/{p}")
    );
    assert_eq!(log.options().unwrap()["awslogs-stream-prefix"], "prepare");
    assert_eq!(def.retry_strategy().unwrap().attempts(), Some(3));
    // The default rules: Host EC2* retries, exit code 1 exits, exit code 75 retries.
    assert_eq!(def.retry_strategy().unwrap().evaluate_on_exit().len(), 3);
    assert_eq!(
        def.timeout().unwrap().attempt_duration_seconds(),
        Some(18000)
    );
    assert!(cp
        .job_role_arn()
        .unwrap()
        .ends_with(&format!("role/{p}-job")));
    assert!(cp
        .execution_role_arn()
        .unwrap()
        .ends_with(&format!("role/{p}-execution")));

    // Outputs.
    let outputs: serde_json::Value =
        serde_json::from_str(&s.expect(&["output", "--json"], 0).0).unwrap();
    assert_eq!(outputs["buckets"]["data"], bucket);
    assert_eq!(outputs["queues"]["main"], q.job_queue_arn().unwrap());
    assert_eq!(
        outputs["job_definitions"]["prepare"],
        def.job_definition_arn().unwrap()
    );
    assert_eq!(outputs["gpu"], false);
    assert_eq!(outputs["log_group"], format!("/aws/batch/{p}"));

    // Idempotent: no changes, and a second apply changes nothing (not even the serial).
    s.expect(&["plan", "--detailed-exitcode"], 0);
    let before = serial(&c, &s).await;
    let out = s.apply(&[]);
    assert!(
        out.contains("Resources: 0 added, 0 changed, 0 destroyed."),
        "{out}"
    );
    assert_eq!(serial(&c, &s).await, before);
    assert_eq!(
        active_defs(&c, &format!("{p}-prepare")).await[0].revision(),
        def.revision()
    );

    // State commands.
    let list = s.expect(&["state", "list"], 0).0;
    assert_eq!(list.lines().count(), 15, "{list}");
    let shown: serde_json::Value =
        serde_json::from_str(&s.expect(&["state", "show", "compute.spot"], 0).0).unwrap();
    assert_eq!(shown["id"], spot.compute_environment_arn().unwrap());
    s.expect(&["state", "show", "compute.nope"], 1);

    // Destroy: nothing of the stack is left, the state holds no resource.
    let out = s.expect(&["destroy", "--auto-approve"], 0).0;
    assert!(out.contains("15 destroyed"), "{out}");
    assert!(c.s3().head_bucket().bucket(&bucket).send().await.is_err());
    assert!(c
        .ecr()
        .describe_repositories()
        .repository_names(&repo)
        .send()
        .await
        .is_err());
    for role in ["instance", "batch-service", "execution", "job"] {
        assert!(
            c.iam()
                .get_role()
                .role_name(format!("{p}-{role}"))
                .send()
                .await
                .is_err(),
            "role {role} left"
        );
    }
    assert!(c
        .iam()
        .get_instance_profile()
        .instance_profile_name(format!("{p}-instance"))
        .send()
        .await
        .is_err());
    assert!(compute_env(&c, &format!("{p}-spot")).await.is_none());
    assert!(compute_env(&c, &format!("{p}-ondemand")).await.is_none());
    assert!(job_queue(&c, &format!("{p}-main")).await.is_none());
    assert!(active_defs(&c, &format!("{p}-prepare")).await.is_empty());
    assert!(active_defs(&c, &format!("{p}-train")).await.is_empty());
    assert!(c
        .ec2()
        .describe_launch_templates()
        .launch_template_names(format!("{p}-spot"))
        .send()
        .await
        .is_err());
    let lg = c
        .logs()
        .describe_log_groups()
        .log_group_name_prefix(format!("/aws/batch/{p}"))
        .send()
        .await
        .unwrap();
    assert!(lg.log_groups().is_empty());
    let sgs = c
        .ec2()
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values(format!("{p}-batch"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(sgs.security_groups().is_empty());
    let endpoints = stack_endpoints(&c, &s).await;
    assert!(endpoints.vpc_endpoints().iter().all(|e| e
        .state()
        .unwrap()
        .as_str()
        .eq_ignore_ascii_case("deleted")));
    assert_eq!(resource_items(&c, &s).await.len(), 0);
    assert!(s
        .expect(&["plan"], 0)
        .0
        .contains("Plan: 15 to add, 0 to change, 0 to destroy."));
}

#[tokio::test]
async fn changes_update_in_place_register_a_revision_or_replace_create_before_destroy() {
    let c = clients().await;
    let s = orderflow("chg");
    let p = s.p();
    s.apply(&[]);
    let spot_arn = compute_env(&c, &format!("{p}-spot"))
        .await
        .unwrap()
        .compute_environment_arn()
        .unwrap()
        .to_string();

    let sets = [
        "--set",
        "queues.main.priority=5",
        "--set",
        "compute.spot.max_vcpus=32",
        "--set",
        "logs.retention_days=7",
        "--set",
        "jobs.prepare.vcpus=4",
    ];
    let plan = s.plan_json(&sets);
    assert_eq!(
        actions(&plan),
        [
            ("compute.spot".to_string(), "update".to_string()),
            ("job_definition.prepare".into(), "update".into()),
            ("log_group.jobs".into(), "update".into()),
            ("queue.main".into(), "update".into()),
        ]
    );
    assert_eq!(
        plan["summary"],
        serde_json::json!({"add": 0, "change": 4, "destroy": 0})
    );
    s.apply(&sets);
    let spot = compute_env(&c, &format!("{p}-spot")).await.unwrap();
    assert_eq!(
        spot.compute_environment_arn(),
        Some(spot_arn.as_str()),
        "updated in place, not replaced"
    );
    assert_eq!(spot.compute_resources().unwrap().maxv_cpus(), Some(32));
    assert_eq!(
        job_queue(&c, &format!("{p}-main"))
            .await
            .unwrap()
            .priority(),
        Some(5)
    );
    let lg = c
        .logs()
        .describe_log_groups()
        .log_group_name_prefix(format!("/aws/batch/{p}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lg.log_groups()[0].retention_in_days(), Some(7));
    let defs = active_defs(&c, &format!("{p}-prepare")).await;
    assert_eq!(defs.len(), 1, "the old revision is deregistered");
    assert_eq!(defs[0].revision(), Some(2));
    let mut args = vec!["plan", "--detailed-exitcode"];
    args.extend_from_slice(&sets);
    s.expect(&args, 0);

    // GPU on: AMI type, instance types, root volume, gpus, command, USE_GPU in one apply;
    // compute environments replaced create-before-destroy, the queue re-pointed.
    let plan = s.plan_json(&["--set", "gpu=true"]);
    let acts = actions(&plan);
    assert!(
        acts.contains(&("compute.spot".into(), "replace".into())),
        "{acts:?}"
    );
    assert!(
        acts.contains(&("compute.ondemand".into(), "replace".into())),
        "{acts:?}"
    );
    assert!(
        acts.contains(&("queue.main".into(), "update".into())),
        "{acts:?}"
    );
    assert!(
        acts.contains(&("job_definition.train".into(), "update".into())),
        "{acts:?}"
    );
    s.apply(&["--set", "gpu=true"]);
    s.expect(&["plan", "--detailed-exitcode", "--set", "gpu=true"], 0);
    let spot = compute_env(&c, &format!("{p}-spot-r1"))
        .await
        .expect("replacement environment");
    let cr = spot.compute_resources().unwrap();
    assert_eq!(
        cr.ec2_configuration()[0].image_type(),
        Some("ECS_AL2023_NVIDIA")
    );
    let mut types = cr.instance_types().to_vec();
    types.sort();
    assert_eq!(types, ["g4dn.2xlarge", "g4dn.xlarge", "g5.xlarge"]);
    assert_eq!(root_volume(&c, &format!("{p}-spot-r1")).await, Some(100));
    assert!(
        compute_env(&c, &format!("{p}-spot")).await.is_none(),
        "old environment deleted"
    );
    assert!(
        root_volume(&c, &format!("{p}-spot")).await.is_none(),
        "old launch template deleted"
    );
    let q = job_queue(&c, &format!("{p}-main")).await.unwrap();
    let mut order: Vec<(i32, String)> = q
        .compute_environment_order()
        .iter()
        .map(|o| (o.order().unwrap(), o.compute_environment().unwrap().into()))
        .collect();
    order.sort();
    assert_eq!(order[0].1, spot.compute_environment_arn().unwrap());
    assert!(order[1].1.ends_with(&format!("{p}-ondemand-r1")));
    let train = &active_defs(&c, &format!("{p}-train")).await[0];
    assert_eq!(
        train.container_properties().unwrap().command(),
        ["runtime", "train", "--device", "cuda"]
    );
    assert_eq!(env_of(train)["USE_GPU"], "true");
    assert!(train
        .container_properties()
        .unwrap()
        .resource_requirements()
        .iter()
        .any(|r| r.r#type().unwrap().as_str() == "GPU" && r.value() == Some("1")));
    let outputs: serde_json::Value =
        serde_json::from_str(&s.expect(&["output", "--json"], 0).0).unwrap();
    assert_eq!(outputs["gpu"], true);

    // And back.
    s.apply(&[]);
    s.expect(&["plan", "--detailed-exitcode"], 0);
    let spot = compute_env(&c, &format!("{p}-spot-r2"))
        .await
        .expect("second replacement");
    assert_eq!(
        spot.compute_resources().unwrap().ec2_configuration()[0].image_type(),
        Some("ECS_AL2023")
    );
    assert!(compute_env(&c, &format!("{p}-spot-r1")).await.is_none());
    assert_eq!(
        env_of(&active_defs(&c, &format!("{p}-train")).await[0])["USE_GPU"],
        "false"
    );
    s.expect(&["destroy", "--auto-approve"], 0);
    assert!(compute_env(&c, &format!("{p}-spot-r2")).await.is_none());
    assert_eq!(resource_items(&c, &s).await.len(), 0);
}

#[tokio::test]
async fn protected_non_empty_bucket_refuses_destroy_before_deleting_anything() {
    let c = clients().await;
    let s = orderflow("prot");
    let p = s.p();
    s.apply(&["--set", "protect=true"]);
    let bucket = format!("{p}-data-{ACCOUNT}");
    // Two versions and a delete marker: emptying must remove every version.
    for body in ["a", "b"] {
        c.s3()
            .put_object()
            .bucket(&bucket)
            .key("k")
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    c.s3()
        .delete_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .unwrap();
    let out = s.run(&["destroy", "--auto-approve", "--set", "protect=true"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("protect") && stderr.contains(&bucket),
        "{stderr}"
    );
    assert!(
        c.iam()
            .get_role()
            .role_name(format!("{p}-job"))
            .send()
            .await
            .is_ok(),
        "nothing was deleted"
    );
    assert!(job_queue(&c, &format!("{p}-main")).await.is_some());
    assert_eq!(resource_items(&c, &s).await.len(), 14);
    // Without protect, destroy empties the bucket (every version) and deletes it.
    s.expect(&["destroy", "--auto-approve"], 0);
    assert!(c.s3().head_bucket().bucket(&bucket).send().await.is_err());
    assert_eq!(resource_items(&c, &s).await.len(), 0);
}

#[tokio::test]
async fn concurrent_applies_exactly_one_proceeds_and_the_other_names_the_holder() {
    let s = orderflow("lock");
    let a = s
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let b = s
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
    assert!(
        codes.contains(&Some(0)) && codes.contains(&Some(1)),
        "{codes:?}"
    );
    let loser = outs.iter().find(|o| o.status.code() == Some(1)).unwrap();
    let stderr = String::from_utf8_lossy(&loser.stderr);
    assert!(
        stderr.contains("locked by") && stderr.contains("pid"),
        "{stderr}"
    );

    // A lock left behind: unlock refuses without --force while it is live.
    let c = clients().await;
    c.dynamodb()
        .put_item()
        .table_name("provision-state")
        .item("pk", AttributeValue::S(format!("{}/dev", s.name)))
        .item("sk", AttributeValue::S("lock".into()))
        .item(
            "holder",
            AttributeValue::S("someone@elsewhere pid 7".into()),
        )
        .item("operation", AttributeValue::S("apply".into()))
        .item("acquired", AttributeValue::S("2099-01-01T00:00:00Z".into()))
        .item("expires", AttributeValue::S("2099-01-01T01:00:00Z".into()))
        .send()
        .await
        .unwrap();
    let out = s.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("someone@elsewhere pid 7"));
    s.expect(&["state", "unlock"], 1);
    s.expect(&["state", "unlock", "--force"], 0);
    s.expect(&["destroy", "--auto-approve"], 0);
}

#[tokio::test]
async fn saved_plan_applies_once_and_is_refused_after_the_state_moved() {
    let s = orderflow("saved");
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("p.plan");
    let saved_s = saved.to_str().unwrap();
    s.expect(&["plan", "--out", saved_s], 0);
    let stale = dir.path().join("stale.plan");
    std::fs::copy(&saved, &stale).unwrap();
    let out = s.expect(&["apply", saved_s], 0).0;
    assert!(out.contains("14 added"), "{out}");
    let out = s.run(&["apply", stale.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stale"));
    // Without a terminal and without --auto-approve, apply refuses rather than hang.
    let out = s
        .command(&["apply", "--set", "logs.retention_days=7"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--auto-approve"));
    s.expect(
        &[
            "plan",
            "--detailed-exitcode",
            "--set",
            "logs.retention_days=7",
        ],
        2,
    );
    s.expect(&["destroy", "--auto-approve"], 0);
}

#[tokio::test]
async fn lost_state_is_adopted_by_tags_drift_is_shown_and_foreign_resources_are_refused() {
    let c = clients().await;
    // A log group of the same name that the stack does not own: plan refuses to adopt it.
    let foreign = orderflow("forgn");
    c.logs()
        .create_log_group()
        .log_group_name(format!("/aws/batch/{}", foreign.p()))
        .send()
        .await
        .unwrap();
    let out = foreign.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not tagged"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let s = orderflow("adopt");
    let p = s.p();
    s.apply(&[]);
    // A crash before the state was written: every resource item is gone, the resources are not.
    for item in resource_items(&c, &s).await {
        c.dynamodb()
            .delete_item()
            .table_name("provision-state")
            .key("pk", item["pk"].clone())
            .key("sk", item["sk"].clone())
            .send()
            .await
            .unwrap();
    }
    assert_eq!(resource_items(&c, &s).await.len(), 0);
    s.expect(&["plan", "--detailed-exitcode"], 0);
    let out = s.apply(&[]);
    assert!(out.contains("0 added, 0 changed, 0 destroyed"), "{out}");
    assert_eq!(
        resource_items(&c, &s).await.len(),
        14,
        "adopted resources are recorded"
    );

    // Drift: a change made outside the tool shows as drift and is put back in place.
    c.batch()
        .update_job_queue()
        .job_queue(format!("{p}-main"))
        .priority(9)
        .send()
        .await
        .unwrap();
    let plan = s.plan_json(&[]);
    assert_eq!(
        actions(&plan),
        [("queue.main".to_string(), "update".to_string())]
    );
    assert_eq!(plan["changes"][0]["drift"], true);
    assert_eq!(
        plan["changes"][0]["attributes"][0],
        serde_json::json!({"name": "priority", "before": 9, "after": 1})
    );
    s.apply(&[]);
    assert_eq!(
        job_queue(&c, &format!("{p}-main"))
            .await
            .unwrap()
            .priority(),
        Some(1)
    );
    s.expect(&["destroy", "--auto-approve"], 0);
}
