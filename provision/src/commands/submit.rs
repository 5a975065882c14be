//! `provision submit`: one of the stack's jobs onto its queue, by the names `apply` gave them.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use aws_sdk_batch::types::{
    ArrayProperties, ContainerOverrides, JobDependency, JobTimeout, KeyValuePair,
    ResourceRequirement, ResourceType,
};
use serde::Serialize;

use crate::aws::Clients;
use crate::cli::SubmitArgs;
use crate::jobs::{self, live, select, watch};

/// AWS's bounds on an array job's size.
const ARRAY_SIZE: std::ops::RangeInclusive<u32> = 2..=10_000;
/// AWS refuses attempt timeouts under a minute.
const MIN_TIMEOUT_S: u32 = 60;
/// Job names: up to 128 letters, digits, hyphens and underscores.
const MAX_JOB_NAME: usize = 128;

#[derive(Debug, Serialize)]
struct Submitted {
    job_id: String,
    job_name: String,
    queue: String,
    job_definition: String,
}

pub async fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let stack = match jobs::load_stack(&args.stack) {
        Ok(stack) => stack,
        Err(code) => return Ok(code),
    };
    if args.all {
        return submit_all(args, &stack).await;
    }
    check_overrides(&args)?;
    let vars = select::parse_vars(&args.vars)?;
    let selected = select::select(&stack, &args.job, vars)?;
    let spec = &selected.spec;
    if args.gpus.is_some_and(|g| g > 0) && !stack.gpu {
        anyhow::bail!(
            "--gpus needs a GPU stack: with gpu = false the queue has no GPU instances and the \
             job would wait in RUNNABLE forever (use --env with gpu = true, or --set gpu=true)"
        );
    }

    let clients = Clients::new(&stack.region).await?;
    let batch = clients.batch();
    let apply = jobs::apply_command(&args.stack);
    let definition = live::latest_job_definition(batch, &spec.name)
        .await?
        .with_context(|| {
            format!(
                "job definition `{}` is not registered: the stack is not applied (run `{apply}`)",
                spec.name
            )
        })?;
    let definition_arn = definition
        .job_definition_arn()
        .context("DescribeJobDefinitions returned a definition without an ARN")?
        .to_string();
    let queue_name = stack.queue_name(&spec.job.queue);
    let queue = live::queue(batch, &queue_name).await?.with_context(|| {
        format!("job queue `{queue_name}` does not exist: the stack is not applied (run `{apply}`)")
    })?;
    let queue_arn = queue.job_queue_arn().unwrap_or(&queue_name).to_string();
    if queue.state().map(|s| s.as_str()) != Some("ENABLED") {
        eprintln!(
            "warning: job queue `{queue_name}` is not ENABLED; the job will wait until it is"
        );
    }

    let job_name = job_name(&stack.prefix(), &spec.key);
    let mut request = batch
        .submit_job()
        .job_name(&job_name)
        .job_queue(&queue_arn)
        .job_definition(&definition_arn)
        .container_overrides(overrides(&args, &selected.env));
    for (key, value) in stack.tags() {
        request = request.tags(key, value);
    }
    if let Some(size) = args.array_size {
        request = request.array_properties(ArrayProperties::builder().size(size as i32).build());
    }
    for id in &args.depends_on {
        request = request.depends_on(JobDependency::builder().job_id(id).build());
    }
    if let Some(timeout) = args.timeout_s {
        request = request.timeout(
            JobTimeout::builder()
                .attempt_duration_seconds(timeout as i32)
                .build(),
        );
    }
    let out = request
        .send()
        .await
        .with_context(|| format!("SubmitJob {job_name}"))?;
    let job_id = out
        .job_id()
        .context("SubmitJob returned no job id")?
        .to_string();

    let mut stdout = std::io::stdout().lock();
    if args.json {
        let submitted = Submitted {
            job_id: job_id.clone(),
            job_name: out.job_name().unwrap_or(&job_name).to_string(),
            queue: queue_arn,
            job_definition: definition_arn,
        };
        writeln!(stdout, "{}", serde_json::to_string(&submitted)?)?;
    } else {
        writeln!(stdout, "{job_id}")?;
    }
    stdout.flush()?;
    drop(stdout);

    if !args.watch {
        return Ok(ExitCode::SUCCESS);
    }
    let reports = watch::until_done(batch, &[job_id]).await?;
    Ok(if reports.iter().any(|r| r.failed()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--all`: one job per value of the job's matrix, each submitted as `JOB-VALUE` would be,
/// each id printed as it is known; the overrides are checked once, before the first submit.
async fn submit_all(args: SubmitArgs, stack: &crate::stack::Stack) -> anyhow::Result<ExitCode> {
    let job = stack.jobs.get(&args.job).with_context(|| {
        let keys: Vec<&str> = stack.jobs.keys().map(String::as_str).collect();
        format!(
            "no job `{}` in [jobs] (defined: {})",
            args.job,
            keys.join(", ")
        )
    })?;
    let matrix = job.matrix.as_ref().with_context(|| {
        format!(
            "--all submits one job per matrix value, and job `{}` has no matrix: submit it without --all",
            args.job
        )
    })?;
    check_overrides(&args)?;
    for value in &matrix.values {
        let one = SubmitArgs {
            job: format!("{}-{value}", args.job),
            all: false,
            ..args.clone()
        };
        let code = Box::pin(run(one)).await?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Range checks on the overrides, before any AWS call.
fn check_overrides(args: &SubmitArgs) -> anyhow::Result<()> {
    if let Some(n) = args.array_size {
        anyhow::ensure!(
            ARRAY_SIZE.contains(&n),
            "--array-size {n}: an array job has {} to {} children",
            ARRAY_SIZE.start(),
            ARRAY_SIZE.end()
        );
    }
    anyhow::ensure!(args.vcpus != Some(0), "--vcpus must be at least 1");
    if let Some(m) = args.memory_mib {
        anyhow::ensure!(m >= 4, "--memory-mib {m}: Batch needs at least 4 MiB");
    }
    if let Some(t) = args.timeout_s {
        anyhow::ensure!(
            t >= MIN_TIMEOUT_S,
            "--timeout-s {t}: Batch needs at least {MIN_TIMEOUT_S}"
        );
    }
    Ok(())
}

fn overrides(
    args: &SubmitArgs,
    env: &std::collections::BTreeMap<String, String>,
) -> ContainerOverrides {
    let mut o = ContainerOverrides::builder();
    let requirements = [
        (ResourceType::Vcpu, args.vcpus),
        (ResourceType::Memory, args.memory_mib),
        (ResourceType::Gpu, args.gpus),
    ];
    for (kind, value) in requirements {
        if let Some(value) = value {
            o = o.resource_requirements(
                ResourceRequirement::builder()
                    .r#type(kind)
                    .value(value.to_string())
                    .build(),
            );
        }
    }
    if !args.command.is_empty() {
        o = o.set_command(Some(args.command.clone()));
    }
    for (name, value) in env {
        o = o.environment(KeyValuePair::builder().name(name).value(value).build());
    }
    o.build()
}

/// `{P}-{key}-{UTC time}`: sortable, and says which stack and job at a glance in the console.
fn job_name(prefix: &str, key: &str) -> String {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let mut name = format!("{prefix}-{key}-{stamp}");
    if name.len() > MAX_JOB_NAME {
        // Keep the time (the part that tells runs apart); names are ASCII.
        let keep = MAX_JOB_NAME - stamp.to_string().len() - 1;
        name = format!("{}-{stamp}", &format!("{prefix}-{key}")[..keep]);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_fit_batch() {
        let short = job_name("demo-dev", "train-a");
        assert!(short.starts_with("demo-dev-train-a-"), "{short}");
        let long = job_name(&"p".repeat(100), &"k".repeat(60));
        assert_eq!(long.len(), MAX_JOB_NAME);
        let re = regex::Regex::new("^[A-Za-z0-9][A-Za-z0-9_-]*$").unwrap();
        assert!(re.is_match(&short) && re.is_match(&long));
    }
}
