//! The resolved, validated stack (docs/design.md, "Stack files"): what `stack::load` produces after
//! overlays and `--set`, with every default filled in. The engine reads only this; it never sees
//! TOML.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stack {
    /// `[stack] name`: prefix of every resource name.
    pub name: String,
    pub region: String,
    /// `[stack] account`: the AWS account the stack (or this environment) deploys to, checked
    /// against the credentials' account; `None`: whatever account the credentials are for.
    pub account: Option<String>,
    /// `[stack] state_table`, default `provision-state`.
    pub state_table: String,
    /// `--env NAME`, or `default` without `--env`.
    pub env: String,
    pub gpu: bool,
    pub protect: bool,
    pub network: Network,
    pub buckets: BTreeMap<String, Bucket>,
    pub repositories: BTreeMap<String, Repository>,
    pub logs: Logs,
    pub compute: BTreeMap<String, ComputeEnvironment>,
    pub queues: BTreeMap<String, Queue>,
    pub jobs: BTreeMap<String, Job>,
    /// The stack file this came from.
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Network {
    pub vpc: Vpc,
    /// Empty: every subnet of the VPC.
    pub subnets: Vec<String>,
    /// Empty: the tool's own `{P}-batch` security group.
    pub security_groups: Vec<String>,
    pub s3_endpoint: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Vpc {
    Default,
    Id(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub versioning: bool,
    /// Lifecycle rule expiring non-current versions after this many days.
    pub expire_noncurrent_days: Option<u32>,
    /// SSE-KMS with this key; `None`: SSE-S3.
    pub kms_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Repository {
    /// Lifecycle policy keeping the newest N images; `None`: no lifecycle policy.
    pub keep_images: Option<u32>,
    pub scan_on_push: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Logs {
    /// CloudWatch retention; `None`: never expire.
    pub retention_days: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComputeType {
    Spot,
    OnDemand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AllocationStrategy {
    SpotPriceCapacityOptimized,
    SpotCapacityOptimized,
    BestFitProgressive,
    BestFit,
}

impl AllocationStrategy {
    /// The Batch API's spelling.
    pub fn as_api(self) -> &'static str {
        match self {
            Self::SpotPriceCapacityOptimized => "SPOT_PRICE_CAPACITY_OPTIMIZED",
            Self::SpotCapacityOptimized => "SPOT_CAPACITY_OPTIMIZED",
            Self::BestFitProgressive => "BEST_FIT_PROGRESSIVE",
            Self::BestFit => "BEST_FIT",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Enabled,
    Disabled,
}

impl State {
    /// The Batch API's spelling.
    pub fn as_api(self) -> &'static str {
        match self {
            Self::Enabled => "ENABLED",
            Self::Disabled => "DISABLED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComputeEnvironment {
    #[serde(rename = "type")]
    pub kind: ComputeType,
    /// Always 0 unless set (an idle stack costs nothing).
    pub min_vcpus: u32,
    pub max_vcpus: u32,
    pub instance_types: Vec<String>,
    /// gp3 root volume size; `Some` means the tool owns a launch template for this environment.
    pub root_volume_gb: Option<u32>,
    pub allocation_strategy: AllocationStrategy,
    /// Spot only, 1–100; on-demand environments hold `None`.
    pub bid_percentage: Option<u32>,
    pub state: State,
}

impl ComputeEnvironment {
    /// `ec2Configuration` image type, by the stack's GPU switch.
    pub fn image_type(gpu: bool) -> &'static str {
        if gpu {
            "ECS_AL2023_NVIDIA"
        } else {
            "ECS_AL2023"
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Queue {
    pub priority: u32,
    /// Keys of `[compute]`, order = preference.
    pub compute: Vec<String>,
    pub state: State,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// A key of `[queues]`.
    pub queue: String,
    pub image: Image,
    pub command: Vec<String>,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub gpus: u32,
    pub timeout_s: Option<u32>,
    pub retry: Retry,
    /// The user's variables (the injected ones are added by [`crate::stack::names`]).
    pub env: BTreeMap<String, String>,
    /// Variable name → secret name or ARN as written; `plan` resolves names to ARNs.
    pub secrets: BTreeMap<String, String>,
    pub matrix: Option<Matrix>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Image {
    /// A key of `[repositories]`, with a tag or digest: `{account}.dkr.ecr.{region}.amazonaws.com/{P}-{key}`.
    Repository(RepositoryImage),
    /// A literal image URI.
    Uri(String),
}

/// `runtime`, `runtime:v2` or `runtime@sha256:...`: an image of one of the stack's repositories.
/// Serialized as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct RepositoryImage {
    /// A key of `[repositories]`.
    pub key: String,
    pub pin: Pin,
}

/// Which image of a repository a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// No tag written: the flavour the stack's GPU switch selects, tag `cpu` or `gpu`.
    Flavour,
    Tag(String),
    /// `sha256:...`: used as written, never resolved.
    Digest(String),
}

impl From<RepositoryImage> for String {
    fn from(image: RepositoryImage) -> String {
        match image.pin {
            Pin::Flavour => image.key,
            Pin::Tag(tag) => format!("{}:{tag}", image.key),
            Pin::Digest(digest) => format!("{}@{digest}", image.key),
        }
    }
}

impl RepositoryImage {
    /// The tag to resolve to a digest at plan; `None` for a digest.
    pub fn tag(&self, gpu: bool) -> Option<&str> {
        match &self.pin {
            Pin::Flavour => Some(flavour(gpu)),
            Pin::Tag(tag) => Some(tag),
            Pin::Digest(_) => None,
        }
    }
}

/// The tag of the image flavour a stack runs: `gpu` when its GPU switch is on, else `cpu`.
pub fn flavour(gpu: bool) -> &'static str {
    if gpu {
        "gpu"
    } else {
        "cpu"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retry {
    /// 1–10.
    pub attempts: u32,
    /// At most 5; the defaults when the stack gives none.
    pub rules: Vec<RetryRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryRule {
    pub on_status_reason: Option<String>,
    pub on_reason: Option<String>,
    pub on_exit_code: Option<String>,
    pub action: RetryAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryAction {
    Retry,
    Exit,
}

impl RetryAction {
    /// The Batch API's spelling.
    pub fn as_api(self) -> &'static str {
        match self {
            Self::Retry => "RETRY",
            Self::Exit => "EXIT",
        }
    }
}

/// The exit code `runtime` gives a transient error (sysexits' `EX_TEMPFAIL`); the default rules
/// retry it. Another image may use it for the same meaning.
pub const TRANSIENT_EXIT_CODE: &str = "75";

impl Retry {
    /// Without `rules`: a host (Spot) failure retries, exit code 1 (bad input) exits, exit code
    /// 75 (`runtime`'s transient errors: S3 or the network still failing after the SDK's own
    /// retries) retries. Anything else falls through to Batch's own rule: retry while attempts
    /// remain.
    pub fn default_rules() -> Vec<RetryRule> {
        vec![
            RetryRule {
                on_status_reason: Some("Host EC2*".into()),
                on_reason: None,
                on_exit_code: None,
                action: RetryAction::Retry,
            },
            RetryRule {
                on_status_reason: None,
                on_reason: None,
                on_exit_code: Some("1".into()),
                action: RetryAction::Exit,
            },
            RetryRule {
                on_status_reason: None,
                on_reason: None,
                on_exit_code: Some(TRANSIENT_EXIT_CODE.into()),
                action: RetryAction::Retry,
            },
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Matrix {
    /// The placeholder name: `{key}` is substituted in `command` and `env` values.
    pub key: String,
    /// 1–100 values matching `[a-z0-9][a-z0-9-]*`.
    pub values: Vec<String>,
}
