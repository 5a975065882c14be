//! `provision submit`: one of the stack's jobs onto its queue, by the names `apply` gave them.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use aws_sdk_batch::types::{
    ArrayProperties, ContainerOverrides, JobDependency, JobTimeout, KeyValuePair,
    ResourceRequirement, ResourceType,
};
use futures::StreamExt;
use serde::Serialize;

use crate::aws::Clients;
use crate::cli::SubmitArgs;
use crate::cost;
use crate::jobs::shard::{self, Fanout};
use crate::jobs::{self, live, select, watch};
use crate::resources::SdkContext;
use crate::stack::names::JobDefinitionSpec;
use crate::stack::Stack;

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
    let fanout = Fanout::from_args(&args)?;
    check_fanout(&stack, &args, fanout.as_ref())?;
    let jobs_count = fanout
        .as_ref()
        .map_or(args.array_size.unwrap_or(1) as usize, Fanout::count);
    print_estimate(&stack, spec, &args, jobs_count)?;

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

    if let Some(fanout) = fanout {
        let target = Target {
            queue_arn,
            definition_arn,
            definition,
        };
        return submit_fanout(&args, &stack, &selected, &clients, target, fanout).await;
    }

    let job_name = job_name(&stack.prefix(), &spec.key);
    let target = (queue_arn.as_str(), definition_arn.as_str());
    let array_size = args.array_size.map(|n| n as usize);
    let out = submit_request(
        batch,
        &stack,
        &args,
        &job_name,
        target,
        &selected.env,
        array_size,
    )
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

/// The SubmitJob request of one job: the stack's tags, the overrides, dependencies and timeout
/// of `args`, and `array_size` children when it is an array. `target` is (queue, definition).
fn submit_request(
    batch: &aws_sdk_batch::Client,
    stack: &crate::stack::Stack,
    args: &SubmitArgs,
    name: &str,
    target: (&str, &str),
    env: &std::collections::BTreeMap<String, String>,
    array_size: Option<usize>,
) -> aws_sdk_batch::operation::submit_job::builders::SubmitJobFluentBuilder {
    let mut request = batch
        .submit_job()
        .job_name(name)
        .job_queue(target.0)
        .job_definition(target.1)
        .container_overrides(overrides(args, env));
    for (key, value) in stack.tags() {
        request = request.tags(key, value);
    }
    if let Some(size) = array_size {
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
    request
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

/// Where a submit goes, as `apply` registered it.
struct Target {
    queue_arn: String,
    definition_arn: String,
    definition: aws_sdk_batch::types::JobDefinition,
}

/// How many SubmitJob calls run at once: enough to hide round trips, few enough to stay under
/// Batch's SubmitJob throttle (the SDK retries what it throttles).
const SUBMIT_CONCURRENCY: usize = 8;

/// One job of a fan-out: its name, array size and shard environment.
struct ShardJob {
    name: String,
    array_size: Option<usize>,
    env: Vec<(&'static str, String)>,
}

#[derive(Debug, Serialize)]
struct ShardSubmitted {
    #[serde(flatten)]
    submitted: Submitted,
    shard_index: Option<usize>,
    shard_count: usize,
    /// Children of an array job (each reads shard AWS_BATCH_JOB_ARRAY_INDEX).
    array_size: Option<usize>,
    manifest: Option<String>,
    /// The date batch of a `--split-dates` job (inclusive).
    start_date: Option<String>,
    end_date: Option<String>,
}

/// Fan-out checks that need the stack, before any AWS call.
fn check_fanout(stack: &Stack, args: &SubmitArgs, fanout: Option<&Fanout>) -> anyhow::Result<()> {
    if let Some(key) = &args.manifest_bucket {
        anyhow::ensure!(
            stack.buckets.contains_key(key),
            "--manifest-bucket {key}: the stack has no [buckets.{key}] (its buckets: {})",
            stack.buckets.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if matches!(fanout, Some(Fanout::Array(_))) && stack.buckets.is_empty() {
        anyhow::bail!(
            "an array job's children read their ids from a manifest in the stack's bucket, and \
             the stack has none: add a [buckets.KEY], or pass --separate-jobs"
        );
    }
    Ok(())
}

/// Prints the job's estimated cost on stderr; refuses a job that no instance type of its
/// queue can hold (it would wait in RUNNABLE forever).
fn print_estimate(
    stack: &Stack,
    spec: &JobDefinitionSpec,
    args: &SubmitArgs,
    jobs_count: usize,
) -> anyhow::Result<()> {
    let needs = cost::JobNeeds {
        vcpus: args.vcpus.unwrap_or(spec.job.vcpus),
        memory_mib: args.memory_mib.unwrap_or(spec.job.memory_mib),
        gpus: args.gpus.unwrap_or(spec.job.gpus),
        timeout_s: args.timeout_s.or(spec.job.timeout_s),
    };
    let table = cost::PriceTable::builtin()?;
    match cost::job_cost(stack, &spec.key, &spec.job.queue, needs, &table)? {
        Some(estimate) => {
            let mut line = estimate.text();
            if jobs_count > 1 {
                line.push_str(&format!(
                    "; {jobs_count} jobs at once: ${:.2}/h",
                    estimate.per_hour * jobs_count as f64
                ));
            }
            eprintln!("{line}");
        }
        None => eprintln!(
            "Estimated cost: unknown (the price table lacks some instance types of queue `{}`)",
            spec.job.queue
        ),
    }
    Ok(())
}

/// Submits a fan-out: one array job reading a manifest, or one job per shard or date batch.
async fn submit_fanout(
    args: &SubmitArgs,
    stack: &Stack,
    selected: &select::Selected<'_>,
    clients: &Clients,
    target: Target,
    fanout: Fanout,
) -> anyhow::Result<ExitCode> {
    let base = job_name(&stack.prefix(), &selected.spec.key);
    let count = fanout.count();
    let width = shard::index_width(count);
    let name = |i: usize| shard_job_name(&base, i, width);
    let mut manifest = None;
    let jobs: Vec<ShardJob> = match &fanout {
        Fanout::Array(shards) => {
            let uri = upload_manifest(clients, stack, args, &target, &base, shards).await?;
            manifest = Some(uri.clone());
            vec![ShardJob {
                name: base.clone(),
                array_size: Some(count),
                env: vec![
                    (shard::SHARD_COUNT, count.to_string()),
                    (shard::SHARD_MANIFEST, uri),
                ],
            }]
        }
        Fanout::Jobs(shards) => {
            if !shard::fits_inline(shards, request_bytes(args, &selected.env, &base)) {
                manifest =
                    Some(upload_manifest(clients, stack, args, &target, &base, shards).await?);
            }
            (0..count)
                .map(|i| {
                    let ids = match &manifest {
                        Some(uri) => (shard::SHARD_MANIFEST, uri.clone()),
                        None => (shard::SHARD_IDS, shards[i].join(",")),
                    };
                    one_of(name(i), i, count, [ids])
                })
                .collect()
        }
        Fanout::Dates(batches) => batches
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let dates = [
                    ("START_DATE", b.start.to_string()),
                    ("END_DATE", b.end.to_string()),
                ];
                one_of(name(i), i, count, dates)
            })
            .collect(),
    };
    let results: Vec<anyhow::Result<Submitted>> = futures::stream::iter(
        jobs.iter()
            .map(|job| submit_shard(clients.batch(), args, stack, selected, &target, job)),
    )
    .buffered(SUBMIT_CONCURRENCY)
    .collect()
    .await;
    report_fanout(args, &fanout, manifest, results, clients.batch()).await
}

/// Job `index` of `count` submitted on its own, with its shard variables and `extra`.
fn one_of<const N: usize>(
    name: String,
    index: usize,
    count: usize,
    extra: [(&'static str, String); N],
) -> ShardJob {
    let mut env = vec![
        (shard::SHARD_INDEX, index.to_string()),
        (shard::SHARD_COUNT, count.to_string()),
    ];
    env.extend(extra);
    ShardJob {
        name,
        array_size: None,
        env,
    }
}

/// Prints what was submitted (ids on stdout, in shard order), then watches when asked.
async fn report_fanout(
    args: &SubmitArgs,
    fanout: &Fanout,
    manifest: Option<String>,
    results: Vec<anyhow::Result<Submitted>>,
    batch: &aws_sdk_batch::Client,
) -> anyhow::Result<ExitCode> {
    let total = results.len();
    let mut submitted = Vec::new();
    let mut errors = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(s) => submitted.push(ShardSubmitted {
                submitted: s,
                shard_index: (!matches!(fanout, Fanout::Array(_))).then_some(i),
                shard_count: fanout.count(),
                array_size: matches!(fanout, Fanout::Array(_)).then_some(fanout.count()),
                manifest: manifest.clone(),
                start_date: batch_of(fanout, i).map(|b| b.start.to_string()),
                end_date: batch_of(fanout, i).map(|b| b.end.to_string()),
            }),
            Err(e) => errors.push(e),
        }
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string(&submitted)?)?;
    } else {
        for s in &submitted {
            writeln!(stdout, "{}", s.submitted.job_id)?;
        }
    }
    stdout.flush()?;
    drop(stdout);
    if let Some(first) = errors.into_iter().next() {
        return Err(first.context(format!(
            "{} of {total} jobs submitted (their ids are printed); the others failed",
            submitted.len()
        )));
    }
    if !args.watch {
        return Ok(ExitCode::SUCCESS);
    }
    let ids: Vec<String> = submitted.into_iter().map(|s| s.submitted.job_id).collect();
    let reports = watch::until_done(batch, &ids).await?;
    Ok(if reports.iter().any(|r| r.failed()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Date batch `i` of a `--split-dates` fan-out.
fn batch_of(fanout: &Fanout, i: usize) -> Option<shard::DateBatch> {
    match fanout {
        Fanout::Dates(batches) => batches.get(i).copied(),
        _ => None,
    }
}

async fn submit_shard(
    batch: &aws_sdk_batch::Client,
    args: &SubmitArgs,
    stack: &Stack,
    selected: &select::Selected<'_>,
    target: &Target,
    job: &ShardJob,
) -> anyhow::Result<Submitted> {
    let mut env = selected.env.clone();
    env.extend(job.env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let arns = (target.queue_arn.as_str(), target.definition_arn.as_str());
    let out = submit_request(batch, stack, args, &job.name, arns, &env, job.array_size)
        .send()
        .await
        .with_context(|| format!("SubmitJob {}", job.name))?;
    Ok(Submitted {
        job_id: out
            .job_id()
            .context("SubmitJob returned no job id")?
            .to_string(),
        job_name: job.name.clone(),
        queue: target.queue_arn.clone(),
        job_definition: target.definition_arn.clone(),
    })
}

/// Bytes of a request besides the ids: command, environment, name.
fn request_bytes(
    args: &SubmitArgs,
    env: &std::collections::BTreeMap<String, String>,
    name: &str,
) -> usize {
    let env: usize = env.iter().map(|(k, v)| k.len() + v.len() + 32).sum();
    let command: usize = args.command.iter().map(|c| c.len() + 4).sum();
    env + command + name.len()
}

/// `{base}-{index}`, the index zero-padded to `width`, within Batch's name limit.
fn shard_job_name(base: &str, index: usize, width: usize) -> String {
    let suffix = format!("-{index:0width$}");
    let keep = base.len().min(MAX_JOB_NAME - suffix.len());
    format!("{}{suffix}", &base[..keep])
}

/// Writes the manifest to the stack's bucket (`--manifest-bucket`, default the first) by the
/// name the job definition gives it; returns its `s3://` URI.
async fn upload_manifest(
    clients: &Clients,
    stack: &Stack,
    args: &SubmitArgs,
    target: &Target,
    job_name: &str,
    shards: &[Vec<String>],
) -> anyhow::Result<String> {
    let key = args
        .manifest_bucket
        .clone()
        .or_else(|| stack.buckets.keys().next().cloned())
        .context(
            "the ids do not fit in the request and the stack has no bucket for a manifest: add a \
             [buckets.KEY], or raise --array-size / lower --per-job",
        )?;
    let var = crate::stack::names::bucket_env_var(&key);
    let bucket = target
        .definition
        .container_properties()
        .and_then(|c| {
            c.environment()
                .iter()
                .find(|kv| kv.name() == Some(var.as_str()))
        })
        .and_then(|kv| kv.value())
        .with_context(|| {
            format!(
                "job definition {} has no {var}: apply the stack again (`{}`)",
                target.definition_arn,
                jobs::apply_command(&args.stack)
            )
        })?
        .to_string();
    let object = shard::manifest_key(job_name);
    let body = serde_json::to_vec(&shard::Manifest::new(shards.to_vec()))?;
    clients
        .s3()
        .put_object()
        .bucket(&bucket)
        .key(&object)
        .content_type("application/json")
        .body(body.into())
        .send()
        .await
        .ctx(format!(
            "writing the shard manifest to s3://{bucket}/{object}"
        ))?;
    Ok(format!("s3://{bucket}/{object}"))
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

    #[test]
    fn shard_job_names_end_in_their_index_within_batch_limits() {
        assert_eq!(shard_job_name("p-dev-job-t", 7, 3), "p-dev-job-t-007");
        assert_eq!(shard_job_name("p-dev-job-t", 1234, 4), "p-dev-job-t-1234");
        let long = shard_job_name(&"x".repeat(MAX_JOB_NAME), 42, 3);
        assert_eq!(long.len(), MAX_JOB_NAME);
        assert!(long.ends_with("-042"));
    }
}
