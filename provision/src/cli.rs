//! The command line (docs/design.md, "Command line"). Doc comments are the help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::resources::Address;

/// Plan, apply and destroy AWS Batch ML stacks from a TOML file; submit and watch their jobs.
///
/// AWS endpoint, region and credentials come from the SDK's standard chain (AWS_PROFILE,
/// AWS_REGION, AWS_ENDPOINT_URL, ...). Exit codes: 0 success, 1 error, 2 (with
/// --detailed-exitcode) the plan has changes.
#[derive(Debug, Parser)]
#[command(name = "provision", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a stack file and print the resolved stack; no AWS call.
    Validate(ValidateArgs),
    /// Show what apply would change: desired vs recorded state vs live resources.
    Plan(PlanArgs),
    /// Create, update or replace resources until the account matches the stack.
    Apply(ApplyArgs),
    /// Delete every resource of the stack, in reverse dependency order.
    Destroy(DestroyArgs),
    /// Print the stack's outputs: bucket names, repository URIs, queue and job definition ARNs.
    Output(OutputArgs),
    /// Inspect or repair the recorded state.
    State(StateArgs),
    /// Submit one of the stack's jobs; prints the job id.
    Submit(SubmitArgs),
    /// Show the status of jobs (and of array children).
    Status(StatusArgs),
    /// Print a job's CloudWatch logs (an array job: every child's), or the latest job's of a
    /// stack job.
    Logs(LogsArgs),
    /// Run a job's command on this machine with the environment its job definition gives it.
    RunLocal(RunLocalArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Build the jobs' container image, or push it to the stack's repository; no Docker needed.
    Image(ImageArgs),
    /// Sync a local directory to one of the stack's buckets: only new and changed files go up.
    Upload(UploadArgs),
    /// Estimate the stack's cost: $/hour at full scale and idle, Spot vs On-Demand, storage.
    Cost(CostArgs),
    /// Adopt an existing resource into the state (tagging it), after showing what the next
    /// apply would change on it.
    Import(ImportArgs),
    /// List the stack's jobs across its queues (array jobs with their children by status).
    Jobs(JobsArgs),
    /// Serve a local, read-only dashboard of the stack: resources, jobs, logs, results.
    Ui(UiArgs),
}

impl Command {
    /// Whether the command talks to AWS (every one but `validate` and `completions`).
    pub fn uses_aws(&self) -> bool {
        !matches!(self, Command::Validate(_) | Command::Completions(_))
    }
}

/// The stack selection every stack command shares.
#[derive(Debug, Clone, Args)]
pub struct StackArgs {
    /// The stack file (TOML).
    #[arg(long, env = "PROVISION_STACK", value_name = "FILE")]
    pub stack: PathBuf,
    /// Environment: merges `[env.NAME]` onto the stack. Without it the environment is `default`.
    #[arg(long, env = "PROVISION_ENV", value_name = "NAME")]
    pub env: Option<String>,
    /// Override one value after the overlays, like `terraform -var` (`gpu=true`,
    /// `compute.spot.max_vcpus=32`). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Print the resolved stack as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Save the plan to this file, bound to the current state serial, for `apply PLAN`.
    #[arg(long, value_name = "PLAN")]
    pub out: Option<PathBuf>,
    /// Print the plan as JSON (format_version 1).
    #[arg(long)]
    pub json: bool,
    /// Exit 2 when the plan has changes (0: none, 1: error).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// `--refresh=false`: compare the stack with the recorded state without reading each
    /// resource from AWS (faster; changes made outside the tool do not show), as Terraform's.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub refresh: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Apply without asking for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// A plan saved by `plan --out`; refused when the state changed since.
    #[arg(value_name = "PLAN")]
    pub plan: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Destroy without asking for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Print the outputs as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(subcommand)]
    pub command: StateCommand,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List the recorded resources.
    List {
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Show one recorded resource (`compute.spot`, `bucket.data`, ...).
    Show {
        #[command(flatten)]
        stack: StackArgs,
        /// The resource address, as the plan prints it.
        address: Address,
    },
    /// Forget one resource without deleting it (the next plan no longer manages it).
    Rm {
        #[command(flatten)]
        stack: StackArgs,
        /// The resource address, as the plan prints it.
        address: Address,
    },
    /// Remove the stack's lock.
    Unlock {
        #[command(flatten)]
        stack: StackArgs,
        /// Remove a lock that has not expired (its holder may still be running).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// The job's key in `[jobs]` (a matrix job: `KEY-VALUE` or `--var KEY=VALUE`).
    pub job: String,
    /// Submit an array job of N children (2–10000).
    #[arg(long, value_name = "N")]
    pub array_size: Option<u32>,
    /// Start only after this job succeeds. Repeatable.
    #[arg(long = "depends-on", value_name = "JOB_ID")]
    pub depends_on: Vec<String>,
    /// A matrix value or an extra environment variable for this run. Repeatable.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// Override the job definition's vCPUs.
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// Override the job definition's memory.
    #[arg(long)]
    pub memory_mib: Option<u32>,
    /// Override the job definition's GPUs.
    #[arg(long)]
    pub gpus: Option<u32>,
    /// Override the job definition's timeout.
    #[arg(long)]
    pub timeout_s: Option<u32>,
    /// Watch the job until it ends; exit 1 when it fails.
    #[arg(long)]
    pub watch: bool,
    /// Print {"job_id", "job_name", "queue", "job_definition"} as JSON.
    #[arg(long)]
    pub json: bool,
    /// Replace the job definition's command.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
    /// A matrix job: submit one job per matrix value, all at once; prints one id (or JSON
    /// object) per line.
    #[arg(long, conflicts_with_all = ["vars", "watch"])]
    pub all: bool,
    /// Fan out over these ids (a file with one id per line, or a JSON array; `-`: stdin),
    /// split by --array-size N or --per-job K. Each job gets SHARD_INDEX (an array child:
    /// AWS_BATCH_JOB_ARRAY_INDEX), SHARD_COUNT, and SHARD_IDS (its ids, comma-separated) or
    /// SHARD_MANIFEST (an s3:// JSON manifest in the stack's bucket, when they do not fit).
    #[arg(long, value_name = "FILE")]
    pub ids: Option<PathBuf>,
    /// With --ids: at most K ids per shard.
    #[arg(long, value_name = "K")]
    pub per_job: Option<u32>,
    /// With --ids: submit one job per shard, named `{job}-{index:03}`, instead of one array.
    #[arg(long)]
    pub separate_jobs: bool,
    /// Split --start-date..--end-date (inclusive) into batches, one job each with START_DATE
    /// and END_DATE: `month`, `week` (Monday to Sunday) or `Nd` (N days).
    #[arg(long, value_name = "month|week|Nd")]
    pub split_dates: Option<crate::jobs::shard::DateSplit>,
    /// First day of --split-dates (YYYY-MM-DD).
    #[arg(long, value_name = "DATE", requires = "split_dates")]
    pub start_date: Option<String>,
    /// Last day of --split-dates (YYYY-MM-DD), included.
    #[arg(long, value_name = "DATE", requires = "split_dates")]
    pub end_date: Option<String>,
    /// The bucket (a key of `[buckets]`) that holds the shard manifest; default: the first.
    #[arg(long, value_name = "KEY")]
    pub manifest_bucket: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Job ids, as `submit` prints them.
    #[arg(required = true, value_name = "JOB_ID")]
    pub job_ids: Vec<String>,
    /// Refresh until every job has ended.
    #[arg(long)]
    pub watch: bool,
    /// Print a JSON list.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which_job").required(true).args(["job_id", "job"])))]
pub struct LogsArgs {
    /// The job id, as `submit` prints it (an array job: every child, each line prefixed with
    /// `[INDEX]`; one child: `ID:INDEX`).
    pub job_id: Option<String>,
    /// The latest job of this stack job instead of an id: its key in `[jobs]` (a matrix job:
    /// `KEY-VALUE`). Needs --stack.
    #[arg(
        long,
        value_name = "NAME",
        requires = "stack",
        conflicts_with = "job_id"
    )]
    pub job: Option<String>,
    /// With --job: the latest job in this status, any case: SUBMITTED, PENDING, RUNNABLE,
    /// STARTING, RUNNING, SUCCEEDED or FAILED (`failed`: the last failure).
    #[arg(long, value_name = "STATUS", requires = "job", value_parser = crate::jobs::status::parse)]
    pub status: Option<aws_sdk_batch::types::JobStatus>,
    /// With --job: the stack file (TOML).
    #[arg(long, env = "PROVISION_STACK", value_name = "FILE")]
    pub stack: Option<PathBuf>,
    /// With --job: the environment, as for the stack commands.
    #[arg(long, env = "PROVISION_ENV", value_name = "NAME")]
    pub env: Option<String>,
    /// With --job: override one stack value, as for the stack commands. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Keep printing new lines until the job (every child of an array) ends.
    #[arg(long)]
    pub follow: bool,
    /// Only the events that match this CloudWatch Logs filter pattern (`ERROR`, `"exact
    /// phrase"`, `{ $.level = "error" }`).
    #[arg(long, value_name = "PATTERN")]
    pub filter_pattern: Option<String>,
    /// Only the events of the last DURATION (`30s`, `10m`, `1h`, `1d`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// With --follow: seconds between reads (longer when a large array needs more calls, so
    /// that the reads stay within the services' request rates).
    #[arg(long, value_name = "SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub poll_interval: u64,
}

impl LogsArgs {
    /// The stack selection of `--job`, when `--stack` is given.
    pub fn stack_args(&self) -> Option<StackArgs> {
        Some(StackArgs {
            stack: self.stack.clone()?,
            env: self.env.clone(),
            set: self.set.clone(),
        })
    }
}

#[derive(Debug, Args)]
pub struct RunLocalArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// The job's key in `[jobs]` (a matrix job: `KEY-VALUE` or `--var KEY=VALUE`).
    pub job: String,
    /// Run as this child of an array job (sets AWS_BATCH_JOB_ARRAY_INDEX).
    #[arg(long, value_name = "I")]
    pub array_index: Option<u32>,
    /// A matrix value or an extra environment variable for this run, as for `submit`.
    /// Repeatable.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// Replace the job definition's command.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the image of the stack's flavour (cpu; gpu when the stack's gpu is true) as an OCI
    /// image layout: reproducible, the same inputs give the same digest.
    Build(ImageBuildArgs),
    /// Push a built image to the stack's ECR repository, tagged with its git revision and its
    /// flavour (`cpu`/`gpu`); prints `URI@DIGEST`.
    Push(ImagePushArgs),
}

#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// The runtime binary to put in the image (for the gpu flavour, one built with
    /// `--features cuda`).
    #[arg(
        long,
        env = "PROVISION_RUNTIME_BINARY",
        default_value = "target/release/runtime"
    )]
    pub binary: PathBuf,
    /// Where to write the image (an OCI image layout). Default: target/image/FLAVOUR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The gpu flavour's base image, a CUDA runtime, pulled from its registry.
    #[arg(long, env = "PROVISION_GPU_BASE", value_name = "IMAGE", default_value = crate::commands::image::DEFAULT_GPU_BASE)]
    pub base: String,
    /// The revision tag `push` adds. Default: the git commit (with `-dirty` when the work tree
    /// has changes).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImagePushArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// The built image to push. Default: target/image/FLAVOUR, the stack's flavour.
    #[arg(long, value_name = "DIR")]
    pub image: Option<PathBuf>,
    /// The repository's key in `[repositories]`. Default: the stack's only repository.
    #[arg(long, value_name = "KEY")]
    pub repository: Option<String>,
    /// Push through this registry instead of the repository's own (a mirror, a local
    /// registry): host[:port], or a URL with http:// or https://.
    #[arg(long, env = "PROVISION_REGISTRY", value_name = "HOST")]
    pub registry: Option<String>,
    /// Print {"repository", "digest", "tags", "registry"} as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// The local directory to upload.
    #[arg(value_name = "SRC")]
    pub source: PathBuf,
    /// `BUCKET_KEY` or `BUCKET_KEY/PREFIX`: where in the stack's buckets. Default: the only
    /// bucket, at its root.
    #[arg(value_name = "BUCKET_KEY/PREFIX")]
    pub destination: Option<String>,
    /// Uploads at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// List what would go up; upload nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct CostArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Gigabytes kept in the stack's buckets, for the storage line.
    #[arg(long, value_name = "GB", default_value_t = 0.0)]
    pub s3_gb: f64,
    /// Gigabytes of images in the stack's repositories, for the storage line.
    #[arg(long, value_name = "GB", default_value_t = 0.0)]
    pub ecr_gb: f64,
    /// Print the estimate as JSON.
    #[arg(long)]
    pub json: bool,
    /// Read current Spot prices of the stack's instance types from EC2 (On-Demand prices stay
    /// the shipped table's).
    #[arg(long)]
    pub refresh_prices: bool,
    /// Measure what the stack's buckets (every version) and repositories hold now, instead of
    /// --s3-gb and --ecr-gb.
    #[arg(long, conflicts_with_all = ["s3_gb", "ecr_gb"])]
    pub measure_storage: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Adopt without asking for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// The address the resource takes, as the plan prints it (`bucket.data`, `queue.main`,
    /// `compute.spot`, `role.job`, `repository.runtime`, `log_group.jobs`, `job_definition.train`).
    pub address: Address,
    /// The existing resource: its name or ARN.
    #[arg(value_name = "NAME_OR_ARN")]
    pub resource: String,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Only this queue (its key in `[queues]`). Repeatable.
    #[arg(long = "queue", value_name = "QUEUE")]
    pub queues: Vec<String>,
    /// Only jobs in this status (SUBMITTED, PENDING, RUNNABLE, STARTING, RUNNING, SUCCEEDED,
    /// FAILED; any case, comma-separated or repeated).
    #[arg(long = "status", value_name = "STATUS")]
    pub statuses: Vec<String>,
    /// Only jobs created within this long before now (30m, 12h, 1d, 2w).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Print the jobs as a JSON list (with --watch: one list per line, per refresh).
    #[arg(long)]
    pub json: bool,
    /// Refresh the listing until every job listed has ended (Ctrl-C stops it sooner).
    #[arg(long)]
    pub watch: bool,
    /// Time between refreshes with --watch (at least 1s; stretched when a listing takes many
    /// requests, to stay under Batch's request rate).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5s",
        requires = "watch"
    )]
    pub poll_interval: String,
}

#[derive(Debug, Args)]
pub struct UiArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// The port to serve on (0: any free port).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The address to serve on. Loopback by default: the dashboard has no authentication, so
    /// anyone who can reach it sees the stack.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDRESS")]
    pub host: std::net::IpAddr,
}
