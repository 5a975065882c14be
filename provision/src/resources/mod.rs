//! One module per AWS resource kind. Each owns its whole lifecycle: read the live resource,
//! create it, update it in place where AWS allows, delete it. Nothing outside a module knows
//! its API calls; the engine sees only [`Spec`], [`Live`] and [`Attrs`].
//!
//! Attributes are flat JSON maps (`Attrs`) so that one diff serves every kind: a module turns
//! its desired spec and what it reads back from AWS into the same keys, normalized the same
//! way (sorted sets, upper-case enums), so equal means "nothing to do".

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod address;
pub mod bucket;
pub mod compute_environment;
pub mod error_codes;
pub mod iam;
pub mod job_definition;
pub mod job_queue;
pub mod launch_template;
pub mod log_group;
pub mod repository;
pub mod security_group;
pub mod vpc_endpoint;

pub use address::{Address, BadAddress};

use crate::aws::Clients;

/// Attribute name → value, as the plan shows them.
pub type Attrs = BTreeMap<String, Value>;

/// Whether a read asks for tags where they cost a call of their own (buckets, repositories,
/// log groups). Tags only tell whose an unrecorded resource is (adoption); the state already
/// says a recorded one is ours, and tags are no attribute the plan compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagRead {
    Read,
    Skip,
}

/// Answers read once for many resources, so that a plan of N resources is not N calls
/// where AWS answers many in one.
#[derive(Debug, Default)]
pub struct ReadAhead {
    /// Compute environments described together, in one DescribeComputeEnvironments made by
    /// whichever of their reads comes first (the others wait for it).
    compute_names: Vec<String>,
    compute:
        tokio::sync::OnceCell<BTreeMap<String, aws_sdk_batch::types::ComputeEnvironmentDetail>>,
    /// The S3 endpoints of a VPC with their tags, as listed for the facts: (VPC, endpoints).
    s3_endpoints: Option<(String, Vec<aws_sdk_ec2::types::VpcEndpoint>)>,
}

impl ReadAhead {
    pub fn new(
        compute_names: Vec<String>,
        s3_endpoints: Option<(String, Vec<aws_sdk_ec2::types::VpcEndpoint>)>,
    ) -> Self {
        Self {
            compute_names,
            compute: tokio::sync::OnceCell::new(),
            s3_endpoints,
        }
    }
}

/// A desired value that depends on a resource not created yet (Terraform's wording).
pub const UNKNOWN: &str = "(known after apply)";

/// Does `value` (or anything inside it) wait on a resource created during apply?
pub fn is_unknown(value: &Value) -> bool {
    match value {
        Value::String(s) => s == UNKNOWN,
        Value::Array(items) => items.iter().any(is_unknown),
        Value::Object(map) => map.values().any(is_unknown),
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    VpcEndpoint,
    SecurityGroup,
    Bucket,
    Repository,
    LogGroup,
    Role,
    InstanceProfile,
    ComputeEnvironment,
    JobQueue,
    JobDefinition,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::VpcEndpoint,
        Kind::SecurityGroup,
        Kind::Bucket,
        Kind::Repository,
        Kind::LogGroup,
        Kind::Role,
        Kind::InstanceProfile,
        Kind::ComputeEnvironment,
        Kind::JobQueue,
        Kind::JobDefinition,
    ];

    /// The plan's `type` and the address prefix (`bucket.data`, `compute.spot`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VpcEndpoint => "vpc_endpoint",
            Kind::SecurityGroup => "security_group",
            Kind::Bucket => "bucket",
            Kind::Repository => "repository",
            Kind::LogGroup => "log_group",
            Kind::Role => "role",
            Kind::InstanceProfile => "instance_profile",
            Kind::ComputeEnvironment => "compute",
            Kind::JobQueue => "queue",
            Kind::JobDefinition => "job_definition",
        }
    }

    /// Kinds whose tags take a call of their own (see [`TagRead`]).
    pub fn tags_cost_a_call(self) -> bool {
        matches!(self, Kind::Bucket | Kind::Repository | Kind::LogGroup)
    }

    /// Attributes whose change AWS cannot make in place: the resource is replaced,
    /// create-before-destroy.
    pub fn forces_replacement(self, attribute: &str) -> bool {
        match self {
            Kind::VpcEndpoint => vpc_endpoint::REPLACE_ON.contains(&attribute),
            Kind::SecurityGroup => security_group::REPLACE_ON.contains(&attribute),
            Kind::ComputeEnvironment => compute_environment::REPLACE_ON.contains(&attribute),
            _ => false,
        }
    }
}

/// What the tool wants one resource to be, with every reference resolved (or [`UNKNOWN`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    VpcEndpoint(vpc_endpoint::Spec),
    SecurityGroup(security_group::Spec),
    Bucket(bucket::Spec),
    Repository(repository::Spec),
    LogGroup(log_group::Spec),
    Role(iam::RoleSpec),
    InstanceProfile(iam::ProfileSpec),
    ComputeEnvironment(compute_environment::Spec),
    JobQueue(job_queue::Spec),
    JobDefinition(job_definition::Spec),
}

/// A resource as AWS reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Live {
    /// What later calls and other resources use: an ARN, an id, or a name.
    pub id: String,
    pub attrs: Attrs,
    /// `None` where AWS cannot list the tags (instance profiles on some endpoints).
    pub tags: Option<BTreeMap<String, String>>,
}

/// Where a resource lives, enough to read or delete it without its spec (a removed or deposed
/// resource has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub kind: Kind,
    pub name: String,
    pub id: String,
    /// Kind-specific extras (the launch template of a compute environment, a VPC id).
    #[serde(default, skip_serializing_if = "Extra::is_empty")]
    pub extra: Extra,
}

/// What a handle carries beyond name and id, for the kinds that need it (the state keeps it
/// as the object `extra`, each field only when set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extra {
    /// A compute environment's launch template: deleted after the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_template: Option<String>,
    /// An S3 endpoint's VPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
}

impl Extra {
    pub fn is_empty(&self) -> bool {
        self == &Extra::default()
    }
}

/// Reports progress of long waits (a compute environment turning VALID).
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// Tells the engine, before an action ends, that what its dependents wait for is there: a
/// created resource exists (with this id; its settings still to come), or a deleted one is
/// gone (what it owned, or held, still to go; the id is empty). The engine starts the
/// dependents that need no more at once.
pub type Milestone<'a> = &'a (dyn Fn(&str) + Send + Sync);

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::VpcEndpoint(_) => Kind::VpcEndpoint,
            Spec::SecurityGroup(_) => Kind::SecurityGroup,
            Spec::Bucket(_) => Kind::Bucket,
            Spec::Repository(_) => Kind::Repository,
            Spec::LogGroup(_) => Kind::LogGroup,
            Spec::Role(_) => Kind::Role,
            Spec::InstanceProfile(_) => Kind::InstanceProfile,
            Spec::ComputeEnvironment(_) => Kind::ComputeEnvironment,
            Spec::JobQueue(_) => Kind::JobQueue,
            Spec::JobDefinition(_) => Kind::JobDefinition,
        }
    }

    /// The AWS name (the endpoint's service name: endpoints have no name).
    pub fn name(&self) -> &str {
        match self {
            Spec::VpcEndpoint(s) => &s.service_name,
            Spec::SecurityGroup(s) => &s.name,
            Spec::Bucket(s) => &s.name,
            Spec::Repository(s) => &s.name,
            Spec::LogGroup(s) => &s.name,
            Spec::Role(s) => &s.name,
            Spec::InstanceProfile(s) => &s.name,
            Spec::ComputeEnvironment(s) => &s.name,
            Spec::JobQueue(s) => &s.name,
            Spec::JobDefinition(s) => &s.name,
        }
    }

    pub fn attributes(&self) -> Attrs {
        match self {
            Spec::VpcEndpoint(s) => s.attributes(),
            Spec::SecurityGroup(s) => s.attributes(),
            Spec::Bucket(s) => s.attributes(),
            Spec::Repository(s) => s.attributes(),
            Spec::LogGroup(s) => s.attributes(),
            Spec::Role(s) => s.attributes(),
            Spec::InstanceProfile(s) => s.attributes(),
            Spec::ComputeEnvironment(s) => s.attributes(),
            Spec::JobQueue(s) => s.attributes(),
            Spec::JobDefinition(s) => s.attributes(),
        }
    }

    /// Reads the live resource this spec names (adoption finds it by name and tags), from
    /// `ahead` where it holds the answer, with what the state recorded of it (`expected`).
    pub async fn read(
        &self,
        c: &Clients,
        tags: &BTreeMap<String, String>,
        tag_read: TagRead,
        ahead: &ReadAhead,
        expected: &Expected<'_>,
    ) -> Result<Option<Live>> {
        match self {
            Spec::VpcEndpoint(s) => match &ahead.s3_endpoints {
                Some((vpc, endpoints)) if *vpc == s.vpc_id => {
                    Ok(vpc_endpoint::find(endpoints, &s.service_name, tags))
                }
                _ => vpc_endpoint::read(c, &s.vpc_id, &s.service_name, tags).await,
            },
            Spec::SecurityGroup(s) => security_group::read(c, &s.name, &s.vpc_id).await,
            Spec::Bucket(s) => bucket::read(c, &s.name, tag_read).await,
            Spec::Repository(s) => repository::read(c, &s.name, tag_read).await,
            Spec::LogGroup(s) => log_group::read(c, &s.name, tag_read).await,
            Spec::Role(s) => iam::read_role_expecting(c, &s.name, &expected.inline_policies).await,
            Spec::InstanceProfile(s) => iam::read_profile(c, &s.name).await,
            Spec::ComputeEnvironment(s) if ahead.compute_names.contains(&s.name) => {
                let found = ahead.compute.get_or_try_init(|| {
                    compute_environment::describe_many(c, &ahead.compute_names)
                });
                let lt = expected.launch_template;
                let (found, root_volume) =
                    tokio::join!(found, compute_environment::root_volume_ahead(c, lt));
                compute_environment::read_detail_with(c, found?.get(&s.name), root_volume).await
            }
            Spec::ComputeEnvironment(s) => {
                compute_environment::read_expecting(c, &s.name, expected.launch_template).await
            }
            Spec::JobQueue(s) => job_queue::read(c, &s.name).await,
            Spec::JobDefinition(s) => job_definition::read(c, &s.name).await,
        }
    }

    /// The part of a create that needs no other resource, run as soon as the forward phase
    /// starts, beside everything else: a compute environment's launch template, an instance
    /// profile itself (its role goes in once the role exists). What it made, for
    /// [`Spec::made_ahead`]; `None` when there is no such part.
    pub async fn create_ahead(
        &self,
        c: &Clients,
        tags: &BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        match self {
            Spec::ComputeEnvironment(s) => compute_environment::create_ahead(c, s, tags).await,
            Spec::InstanceProfile(s) => Ok(Some(iam::create_profile_ahead(c, s, tags).await?)),
            _ => Ok(None),
        }
    }

    /// Tells the spec what [`Spec::create_ahead`] made, so that its create does not again.
    pub fn made_ahead(&mut self, made: String) {
        match self {
            Spec::ComputeEnvironment(s) => s.launch_template_made = true,
            Spec::InstanceProfile(s) => s.made = Some(made),
            _ => {}
        }
    }

    /// Creates the resource, tagged at creation; returns what [`Spec::read`] would.
    pub async fn create(
        &self,
        c: &Clients,
        tags: &BTreeMap<String, String>,
        progress: Progress<'_>,
        exists: Milestone<'_>,
    ) -> Result<Handle> {
        match self {
            Spec::VpcEndpoint(s) => vpc_endpoint::create(c, s, tags).await,
            Spec::SecurityGroup(s) => security_group::create(c, s, tags).await,
            Spec::Bucket(s) => bucket::create(c, s, tags, exists).await,
            Spec::Repository(s) => repository::create(c, s, tags).await,
            Spec::LogGroup(s) => log_group::create(c, s, tags).await,
            Spec::Role(s) => iam::create_role(c, s, tags, exists).await,
            Spec::InstanceProfile(s) => iam::create_profile(c, s, tags).await,
            Spec::ComputeEnvironment(s) => compute_environment::create(c, s, tags, progress).await,
            Spec::JobQueue(s) => job_queue::create(c, s, tags, progress).await,
            Spec::JobDefinition(s) => job_definition::register(c, s, tags, true).await,
        }
    }

    /// Changes the live resource in place so that `changed` attributes match the spec.
    pub async fn update(
        &self,
        c: &Clients,
        live: &Live,
        changed: &[String],
        tags: &BTreeMap<String, String>,
        progress: Progress<'_>,
    ) -> Result<Handle> {
        match self {
            Spec::VpcEndpoint(s) => vpc_endpoint::update(c, s, live).await,
            Spec::SecurityGroup(s) => security_group::update(c, s, live).await,
            Spec::Bucket(s) => bucket::update(c, s, changed).await,
            Spec::Repository(s) => repository::update(c, s, live, changed).await,
            Spec::LogGroup(s) => log_group::update(c, s).await,
            Spec::Role(s) => iam::update_role(c, s, live).await,
            Spec::InstanceProfile(s) => iam::update_profile(c, s, live).await,
            Spec::ComputeEnvironment(s) => compute_environment::update(c, s, live, progress).await,
            Spec::JobQueue(s) => job_queue::update(c, s, live, progress).await,
            Spec::JobDefinition(s) => job_definition::register(c, s, tags, false).await,
        }
    }
}

/// [`delete`], told what the plan's read just found (`live`), so that it does not read again
/// what it must remove or change first: a role's policies, a profile's roles, the state of a
/// queue or compute environment, a job definition's revision. Where AWS then refuses, it falls back to [`delete`].
/// `gone` is told when what dependents wait for is gone: a compute environment (its launch
/// template still to go), a profile's roles (the profile still to go). `ahead`: what
/// [`delete_ahead`] did.
pub async fn delete_known(
    c: &Clients,
    handle: &Handle,
    live: Option<&Live>,
    ahead: bool,
    progress: Progress<'_>,
    gone: Milestone<'_>,
) -> Result<()> {
    let Some(live) = live else {
        return delete(c, handle, progress).await;
    };
    match handle.kind {
        Kind::Role => iam::delete_role_known(c, &handle.name, live, ahead).await,
        Kind::InstanceProfile => iam::delete_profile_known(c, &handle.name, live, gone).await,
        Kind::ComputeEnvironment => {
            compute_environment::delete_known(c, handle, live, ahead, progress, gone).await
        }
        Kind::JobQueue => job_queue::delete_known(c, &handle.name, live, progress).await,
        Kind::JobDefinition => job_definition::delete_known(c, &handle.name, live).await,
        _ => delete(c, handle, progress).await,
    }
}

/// The part of a delete that need not wait for all of the resource's dependents to go (from
/// what the plan read, `live`): a compute environment disabled while its queues are still being
/// deleted (the engine runs it at once); a role's policies removed while the instance profile
/// that holds it is being emptied (the engine runs it once what uses the profile is gone).
/// Whether it did it: otherwise the delete does it all.
pub async fn delete_ahead(
    c: &Clients,
    handle: &Handle,
    live: Option<&Live>,
    progress: Progress<'_>,
) -> bool {
    match (handle.kind, live) {
        (Kind::ComputeEnvironment, Some(live)) => {
            compute_environment::delete_ahead(c, &handle.name, live, progress).await
        }
        (Kind::Role, Some(live)) => iam::strip_role(c, &handle.name, live).await.is_ok(),
        _ => false,
    }
}

/// Deletes the resource behind `handle` (missing is fine: delete is idempotent).
pub async fn delete(c: &Clients, handle: &Handle, progress: Progress<'_>) -> Result<()> {
    match handle.kind {
        Kind::VpcEndpoint => vpc_endpoint::delete(c, handle).await,
        Kind::SecurityGroup => security_group::delete(c, handle, progress).await,
        Kind::Bucket => bucket::delete(c, &handle.name).await,
        Kind::Repository => repository::delete(c, &handle.name).await,
        Kind::LogGroup => log_group::delete(c, &handle.name).await,
        Kind::Role => iam::delete_role(c, &handle.name).await,
        Kind::InstanceProfile => iam::delete_profile(c, &handle.name).await,
        Kind::ComputeEnvironment => compute_environment::delete(c, handle, progress).await,
        Kind::JobQueue => job_queue::delete(c, &handle.name, progress).await,
        Kind::JobDefinition => job_definition::delete(c, &handle.name).await,
    }
}

/// Reads the resource behind a handle (a recorded resource: its tags are not needed).
pub async fn read_handle(c: &Clients, handle: &Handle) -> Result<Option<Live>> {
    match handle.kind {
        Kind::VpcEndpoint => vpc_endpoint::read_id(c, &handle.id).await,
        Kind::SecurityGroup => security_group::read_id(c, &handle.id).await,
        Kind::Bucket => bucket::read(c, &handle.name, TagRead::Skip).await,
        Kind::Repository => repository::read(c, &handle.name, TagRead::Skip).await,
        Kind::LogGroup => log_group::read(c, &handle.name, TagRead::Skip).await,
        Kind::Role => iam::read_role(c, &handle.name).await,
        Kind::InstanceProfile => iam::read_profile(c, &handle.name).await,
        Kind::ComputeEnvironment => compute_environment::read(c, &handle.name).await,
        Kind::JobQueue => job_queue::read(c, &handle.name).await,
        Kind::JobDefinition => job_definition::read(c, &handle.name).await,
    }
}

/// What the state recorded of a resource that its read would otherwise learn only from a
/// first answer: a role's inline policy names, a compute environment's launch template. Read
/// beside the rest by these names (one round trip instead of two); what differs from the
/// record is read after, as without it.
#[derive(Debug, Default)]
pub struct Expected<'a> {
    pub inline_policies: Vec<String>,
    pub launch_template: Option<&'a str>,
}

impl<'a> Expected<'a> {
    /// From a record's handle and applied attributes.
    pub fn recorded(handle: &'a Handle, attrs: &Attrs) -> Expected<'a> {
        Expected {
            inline_policies: attrs
                .get("inline_policies")
                .and_then(|v| v.as_object())
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            launch_template: handle.extra.launch_template.as_deref(),
        }
    }
}

impl<'a> Expected<'a> {
    /// What the stack itself says a read will find (the guess while the state is not in yet):
    /// a role's inline policies by their desired names, an environment's launch template by
    /// its first name.
    pub fn desired(spec: &'a Spec) -> Expected<'a> {
        match spec {
            Spec::Role(s) => Expected {
                inline_policies: s.inline.keys().cloned().collect(),
                launch_template: None,
            },
            Spec::ComputeEnvironment(s) => Expected {
                inline_policies: vec![],
                launch_template: s.launch_template.as_ref().map(|(name, _)| name.as_str()),
            },
            _ => Expected::default(),
        }
    }
}

/// [`read_handle`], with what the state recorded of it (see [`Expected`]).
pub async fn read_handle_expecting(
    c: &Clients,
    handle: &Handle,
    expected: &Expected<'_>,
) -> Result<Option<Live>> {
    match handle.kind {
        Kind::Role => iam::read_role_expecting(c, &handle.name, &expected.inline_policies).await,
        Kind::ComputeEnvironment => {
            compute_environment::read_expecting(c, &handle.name, expected.launch_template).await
        }
        _ => read_handle(c, handle).await,
    }
}

/// An SDK error with its service message, for `anyhow` context.
pub fn describe_error<E>(err: &E) -> String
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error,
{
    match (err.code(), err.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_string(),
        // No service error code: a transport or parsing failure; show the whole chain.
        _ => format!(
            "{}",
            aws_smithy_types::error::display::DisplayErrorContext(err)
        ),
    }
}

/// Wraps an SDK result, the one way SDK errors become `anyhow` errors: the message names the
/// call (`what`) and the service's code and message; the SDK error itself stays the source, so
/// the printed causes and `downcast_ref` still reach it.
pub trait SdkContext<T> {
    fn ctx(self, what: impl std::fmt::Display) -> Result<T>;
}

impl<T, E> SdkContext<T> for std::result::Result<T, E>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    fn ctx(self, what: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| {
            let message = format!("{what}: {}", describe_error(&e));
            anyhow::Error::new(e).context(message)
        })
    }
}

/// Polls `check` until it answers `Some`, reporting the waiting status through `progress`;
/// fails after `timeout`. AWS reaches the state in seconds to minutes; the first poll is
/// immediate.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    progress: Progress<'_>,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<std::result::Result<T, String>>>,
{
    let timeout = wait_timeout(timeout);
    let start = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match check().await? {
            Ok(value) => return Ok(value),
            Err(status) => {
                if start.elapsed() > timeout {
                    bail!(
                        "timed out after {}s waiting for {what} (last status: {status})",
                        timeout.as_secs()
                    );
                }
                progress(&format!(
                    "waiting for {what}: {status} ({}s)",
                    start.elapsed().as_secs()
                ));
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Adds `tags` to the Batch resource `arn` (a compute environment, queue or job definition:
/// Batch tags them all through one call), what `import` does to adopt it.
pub async fn tag_batch_resource(
    c: &Clients,
    arn: &str,
    tags: &BTreeMap<String, String>,
) -> Result<()> {
    c.batch()
        .tag_resource()
        .resource_arn(arn)
        .set_tags(Some(
            tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ))
        .send()
        .await
        .ctx(format!("tagging {arn}"))?;
    Ok(())
}

/// Polls `status` until the resource is gone (`None`), showing its last status meanwhile:
/// Batch deletes queues and compute environments in the background, DELETING then gone.
pub async fn wait_deleted<F, Fut>(
    what: &str,
    timeout: Duration,
    progress: Progress<'_>,
    status: F,
) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Option<String>>>,
{
    wait_for(
        &format!("{what} to be deleted"),
        timeout,
        progress,
        || async {
            Ok(match status().await? {
                None => Ok(()),
                Some(status) => Err(status),
            })
        },
    )
    .await
}

/// `PROVISION_WAIT_TIMEOUT_S` caps every wait (a CI job with a time budget would rather fail
/// early and converge on the next apply); without it each wait keeps its own default.
fn wait_timeout(default: Duration) -> Duration {
    std::env::var("PROVISION_WAIT_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(default))
        .unwrap_or(default)
}

/// Sorted, de-duplicated strings as a JSON array: sets compare equal whatever the order.
pub fn string_set<I, S>(items: I) -> Value
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut v: Vec<String> = items.into_iter().map(Into::into).collect();
    v.sort();
    v.dedup();
    Value::from(v)
}

/// Do the live tags say this resource belongs to the stack (adoption by tags)?
pub fn owned_by(
    live_tags: &Option<BTreeMap<String, String>>,
    tags: &BTreeMap<String, String>,
) -> bool {
    match live_tags {
        None => true,
        Some(live) => tags.iter().all(|(k, v)| live.get(k) == Some(v)),
    }
}
