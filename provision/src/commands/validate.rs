//! `provision validate`: resolve and check a stack, print it (text or JSON); no AWS call.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::{json, Map, Value};

use crate::cli::ValidateArgs;
use crate::stack::{self, ComputeEnvironment, Image, Stack, Vpc};

/// Shown where a name holds the AWS account id, which only `plan` learns (STS).
/// The account in derived names: the one the stack names, else a placeholder (no AWS call).
fn account(stack: &Stack) -> &str {
    stack.account.as_deref().unwrap_or("{account}")
}

pub async fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let stack = match stack::load_args(&args.stack) {
        Ok(stack) => stack,
        Err(diags) => {
            eprintln!("{diags}");
            let n = diags.len();
            eprintln!(
                "error: {} has {n} error{}",
                args.stack.stack.display(),
                if n == 1 { "" } else { "s" }
            );
            return Ok(ExitCode::from(1));
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&stack))?);
    } else {
        print!("{}", render(&stack));
    }
    Ok(ExitCode::SUCCESS)
}

/// The resolved model plus every derived name (account-dependent ones with the account the stack names, or `{account}`).
pub fn to_json(stack: &Stack) -> Value {
    let mut value = serde_json::to_value(stack).expect("the model serializes");
    let names = |f: &dyn Fn(&str) -> String, keys: Vec<&String>| -> Value {
        Value::Object(
            keys.into_iter()
                .map(|k| (k.clone(), Value::String(f(k))))
                .collect::<Map<_, _>>(),
        )
    };
    let derived = json!({
        "prefix": stack.prefix(),
        "tags": stack.tags(),
        "state_pk": stack.state_pk(),
        "buckets": names(&|k| stack.bucket_name(k, account(stack)), stack.buckets.keys().collect()),
        "repositories": names(&|k| stack.repository_uri(k, account(stack)), stack.repositories.keys().collect()),
        "log_group": stack.log_group_name(),
        "roles": {
            "instance": stack.role_name("instance"),
            "batch-service": stack.role_name("batch-service"),
            "execution": stack.role_name("execution"),
            "job": stack.role_name("job"),
        },
        "instance_profile": stack.instance_profile_name(),
        "security_group": stack.network.security_groups.is_empty().then(|| stack.security_group_name()),
        "image_type": ComputeEnvironment::image_type(stack.gpu),
        "compute_environments": names(&|k| stack.compute_environment_name(k, None), stack.compute.keys().collect()),
        "launch_templates": names(
            &|k| stack.launch_template_name(k, None),
            stack.compute.iter().filter(|(_, c)| c.root_volume_gb.is_some()).map(|(k, _)| k).collect(),
        ),
        "queues": names(&|k| stack.queue_name(k), stack.queues.keys().collect()),
        "job_definitions": Value::Object(stack.job_definitions().into_iter().map(|d| {
            let mut env = stack.injected_env(account(stack));
            env.extend(d.env.clone());
            (d.key.clone(), json!({
                "name": d.name,
                "job": d.job_key,
                "image": stack.image_uri(&d.job.image, account(stack)),
                "command": d.command,
                "environment": env,
                "log_stream_prefix": d.key,
            }))
        }).collect()),
    });
    value
        .as_object_mut()
        .expect("a struct")
        .insert("derived".into(), derived);
    value
}

/// The human summary: every resource with its derived name, section by section.
pub fn render(stack: &Stack) -> String {
    let mut out = String::new();
    for section in [
        header,
        network,
        buckets,
        repositories,
        logs_and_iam,
        compute,
        queues,
        jobs,
    ] {
        section(&mut out, stack);
    }
    out
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The stack, its environment and switches.
fn header(out: &mut String, stack: &Stack) {
    let _ = writeln!(
        out,
        "stack {} (env {}, region {}{})",
        stack.name,
        stack.env,
        stack.region,
        match &stack.account {
            Some(account) => format!(", account {account}"),
            None => String::new(),
        }
    );
    let _ = writeln!(
        out,
        "  gpu: {}   protect: {}   state table: {}",
        stack.gpu, stack.protect, stack.state_table
    );
}

/// The VPC, subnets, security groups and S3 endpoint.
fn network(out: &mut String, stack: &Stack) {
    let vpc = match &stack.network.vpc {
        Vpc::Default => "default".to_string(),
        Vpc::Id(id) => id.clone(),
    };
    let subnets = if stack.network.subnets.is_empty() {
        "every subnet of the VPC".to_string()
    } else {
        stack.network.subnets.join(", ")
    };
    let sgs = if stack.network.security_groups.is_empty() {
        format!("{} (created)", stack.security_group_name())
    } else {
        stack.network.security_groups.join(", ")
    };
    let _ = writeln!(out, "\nnetwork\n  vpc: {vpc}\n  subnets: {subnets}\n  security groups: {sgs}\n  S3 gateway endpoint: {}", yes(stack.network.s3_endpoint));
}

/// Each bucket with its name and settings.
fn buckets(out: &mut String, stack: &Stack) {
    let _ = writeln!(out, "\nbuckets");
    for (key, b) in &stack.buckets {
        let enc = b
            .kms_key
            .as_deref()
            .map_or("SSE-S3".to_string(), |k| format!("SSE-KMS {k}"));
        let expire = b.expire_noncurrent_days.map_or(String::new(), |d| {
            format!(", non-current versions expire after {d} days")
        });
        let _ = writeln!(
            out,
            "  {key}: {}  (versioning {}{expire}, {enc}, env BUCKET_{})",
            stack.bucket_name(key, account(stack)),
            yes(b.versioning),
            key.to_uppercase().replace('-', "_")
        );
    }
}

/// Each repository with its URI and settings.
fn repositories(out: &mut String, stack: &Stack) {
    let _ = writeln!(out, "\nrepositories");
    for (key, r) in &stack.repositories {
        let keep = r.keep_images.map_or("keep every image".to_string(), |n| {
            format!("keep {n} images")
        });
        let _ = writeln!(
            out,
            "  {key}: {}  ({keep}, scan on push {})",
            stack.repository_uri(key, account(stack)),
            yes(r.scan_on_push)
        );
    }
}

/// The log group, the roles and the instance profile.
fn logs_and_iam(out: &mut String, stack: &Stack) {
    let retention = stack
        .logs
        .retention_days
        .map_or("never expire".to_string(), |d| {
            format!("retention {d} days")
        });
    let _ = writeln!(out, "\nlogs\n  {}  ({retention})", stack.log_group_name());
    let _ = writeln!(
        out,
        "\niam\n  roles: {}, {}, {}, {}\n  instance profile: {}",
        stack.role_name("instance"),
        stack.role_name("batch-service"),
        stack.role_name("execution"),
        stack.role_name("job"),
        stack.instance_profile_name()
    );
}

/// Each compute environment (and launch template).
fn compute(out: &mut String, stack: &Stack) {
    let _ = writeln!(
        out,
        "\ncompute (AMI {})",
        ComputeEnvironment::image_type(stack.gpu)
    );
    for (key, c) in &stack.compute {
        let kind = match c.kind {
            stack::ComputeType::Spot => "spot",
            stack::ComputeType::OnDemand => "on-demand",
        };
        let bid = c
            .bid_percentage
            .map_or(String::new(), |b| format!(", bid {b}%"));
        let _ = writeln!(
            out,
            "  {key}: {}  ({kind}, {}-{} vCPUs, {}{bid}, {})",
            stack.compute_environment_name(key, None),
            c.min_vcpus,
            c.max_vcpus,
            c.allocation_strategy.as_api(),
            c.state.as_api().to_lowercase()
        );
        let _ = writeln!(out, "    instance types: {}", c.instance_types.join(", "));
        if let Some(gb) = c.root_volume_gb {
            let _ = writeln!(
                out,
                "    launch template: {} (gp3 root volume {gb} GiB)",
                stack.launch_template_name(key, None)
            );
        }
    }
}

/// Each queue with its compute order.
fn queues(out: &mut String, stack: &Stack) {
    let _ = writeln!(out, "\nqueues");
    for (key, q) in &stack.queues {
        let _ = writeln!(
            out,
            "  {key}: {}  (priority {}, compute {}, {})",
            stack.queue_name(key),
            q.priority,
            q.compute.join(" > "),
            q.state.as_api().to_lowercase()
        );
    }
}

/// Each job definition: image, command, resources, retry, environment.
fn jobs(out: &mut String, stack: &Stack) {
    let _ = writeln!(out, "\njobs");
    for d in stack.job_definitions() {
        let job = d.job;
        let image = match &job.image {
            Image::Repository(k) => {
                format!(
                    "{} (repository {})",
                    stack.image_uri(&job.image, account(stack)),
                    k.key
                )
            }
            Image::Uri(u) => u.clone(),
        };
        let _ = writeln!(out, "  {}: {}  (queue {})", d.key, d.name, job.queue);
        let _ = writeln!(out, "    image: {image}");
        let _ = writeln!(out, "    command: {}", d.command.join(" "));
        let timeout = job
            .timeout_s
            .map_or("no timeout".to_string(), |t| format!("timeout {t} s"));
        let _ = writeln!(
            out,
            "    resources: {} vCPUs, {} MiB, {} GPUs, {timeout}",
            job.vcpus, job.memory_mib, job.gpus
        );
        let rules: Vec<String> = job.retry.rules.iter().map(retry_rule).collect();
        let _ = writeln!(
            out,
            "    retry: {} attempt(s); {}",
            job.retry.attempts,
            rules.join("; ")
        );
        let mut env = stack.injected_env(account(stack));
        env.extend(d.env.clone());
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "    env: {}", env.join(" "));
        if !job.secrets.is_empty() {
            let s: Vec<String> = job
                .secrets
                .iter()
                .map(|(k, v)| format!("{k}<-{v}"))
                .collect();
            let _ = writeln!(out, "    secrets: {}", s.join(" "));
        }
        let _ = writeln!(out, "    log stream prefix: {}", d.key);
    }
}

/// One retry rule as `status reason "Host EC2*" -> retry`.
fn retry_rule(r: &stack::RetryRule) -> String {
    let mut m = Vec::new();
    if let Some(s) = &r.on_status_reason {
        m.push(format!("status reason {s:?}"));
    }
    if let Some(s) = &r.on_reason {
        m.push(format!("reason {s:?}"));
    }
    if let Some(s) = &r.on_exit_code {
        m.push(format!("exit code {s:?}"));
    }
    format!(
        "{} -> {}",
        m.join(" and "),
        r.action.as_api().to_lowercase()
    )
}
