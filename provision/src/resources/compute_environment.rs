//! Managed Batch compute environment (SPOT or EC2), with its launch template when the stack
//! sets `root_volume_gb`. In place: `min_vcpus`, `max_vcpus`, `state`. AWS refuses every other
//! change for environments with a custom service role, so those are replacements done
//! create-before-destroy by the engine under the name `{P}-{key}-r{N}`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use aws_sdk_batch::types::{
    CeState, CeStatus, CeType, ComputeEnvironmentDetail, ComputeResource, ComputeResourceUpdate,
    CrAllocationStrategy, CrType, Ec2Configuration, LaunchTemplateSpecification,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde_json::{json, Value};

use super::iam::Role;
use super::{
    launch_template, wait_for, Address, Attrs, Extra, Handle, Kind, Live, Milestone, Progress,
    SdkContext,
};
use crate::aws::Clients;
use crate::engine::{instance_profile_address, security_group_address, Facts, Refs};
use crate::stack::Stack;
use crate::stack::{AllocationStrategy, ComputeType, State};

pub const REPLACE_ON: &[&str] = &[
    "type",
    "instance_types",
    "allocation_strategy",
    "bid_percentage",
    "subnets",
    "security_groups",
    "instance_role",
    "service_role",
    "image_type",
    "launch_template",
    "root_volume_gb",
];

/// Batch takes minutes to bring an environment to VALID on AWS.
const WAIT: Duration = Duration::from_secs(1200);
/// How long a new role may take to become visible to Batch.
const IAM_PROPAGATION: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub kind: ComputeType,
    pub min_vcpus: u32,
    pub max_vcpus: u32,
    pub instance_types: Vec<String>,
    pub allocation_strategy: AllocationStrategy,
    pub bid_percentage: Option<u32>,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    /// Instance profile ARN.
    pub instance_role: String,
    pub service_role: String,
    pub image_type: String,
    /// Launch template name and root volume size: present when the stack sets the size.
    pub launch_template: Option<(String, u32)>,
    pub state: State,
    /// The launch template was made ahead ([`create_ahead`]): the create does not again.
    pub launch_template_made: bool,
}

fn cr_type(kind: ComputeType) -> &'static str {
    match kind {
        ComputeType::Spot => "SPOT",
        ComputeType::OnDemand => "EC2",
    }
}

impl Spec {
    /// The stack's compute environment `key`, under its current name (`refs` hold the
    /// replacement suffix and the ids of the profile, the service role and the security group).
    pub fn desired(stack: &Stack, facts: &Facts, refs: &Refs, key: &str) -> Spec {
        let ce = &stack.compute[key];
        let address = Address::new(Kind::ComputeEnvironment, key);
        let suffix = refs.suffixes.get(&address).copied().flatten();
        let security_groups = if stack.network.security_groups.is_empty() {
            vec![refs.id(&security_group_address())]
        } else {
            stack.network.security_groups.clone()
        };
        Spec {
            name: stack.compute_environment_name(key, suffix),
            kind: ce.kind,
            min_vcpus: ce.min_vcpus,
            max_vcpus: ce.max_vcpus,
            instance_types: ce.instance_types.clone(),
            allocation_strategy: ce.allocation_strategy,
            bid_percentage: ce.bid_percentage,
            subnets: facts.subnets.clone(),
            security_groups,
            instance_role: refs.id(&instance_profile_address()),
            service_role: refs.id(&Role::BatchService.address()),
            image_type: crate::stack::ComputeEnvironment::image_type(stack.gpu).to_string(),
            launch_template: ce
                .root_volume_gb
                .map(|gb| (stack.launch_template_name(key, suffix), gb)),
            state: ce.state,
            launch_template_made: false,
        }
    }

    pub fn attributes(&self) -> Attrs {
        Attrs::from([
            ("type".into(), json!(cr_type(self.kind))),
            ("min_vcpus".into(), json!(self.min_vcpus)),
            ("max_vcpus".into(), json!(self.max_vcpus)),
            (
                "instance_types".into(),
                super::string_set(self.instance_types.iter().cloned()),
            ),
            (
                "allocation_strategy".into(),
                json!(self.allocation_strategy.as_api()),
            ),
            ("bid_percentage".into(), json!(self.bid_percentage)),
            (
                "subnets".into(),
                super::string_set(self.subnets.iter().cloned()),
            ),
            (
                "security_groups".into(),
                super::string_set(self.security_groups.iter().cloned()),
            ),
            ("instance_role".into(), json!(self.instance_role)),
            ("service_role".into(), json!(self.service_role)),
            ("image_type".into(), json!(self.image_type)),
            (
                "launch_template".into(),
                json!(self.launch_template.as_ref().map(|(n, _)| n)),
            ),
            (
                "root_volume_gb".into(),
                json!(self.launch_template.as_ref().map(|(_, gb)| gb)),
            ),
            ("state".into(), json!(self.state.as_api())),
        ])
    }
}

async fn describe(c: &Clients, name: &str) -> Result<Option<ComputeEnvironmentDetail>> {
    let out = c
        .batch()
        .describe_compute_environments()
        .compute_environments(name)
        .send()
        .await
        .ctx(format!("reading compute environment {name}"))?;
    Ok(out
        .compute_environments()
        .iter()
        .find(|e| {
            e.compute_environment_name() == Some(name) && e.status() != Some(&CeStatus::Deleted)
        })
        .cloned())
}

pub async fn read(c: &Clients, name: &str) -> Result<Option<Live>> {
    read_detail(c, describe(c, name).await?.as_ref()).await
}

/// [`read`], with the launch template the environment is expected to name (`launch_template`:
/// what the state recorded) read beside it instead of after it: one round trip instead of
/// two. When the environment names another, that one is read after it as before.
pub async fn read_expecting(
    c: &Clients,
    name: &str,
    launch_template: Option<&str>,
) -> Result<Option<Live>> {
    if launch_template.is_none() {
        return read(c, name).await;
    }
    let (env, root_volume) = tokio::join!(describe(c, name), root_volume_ahead(c, launch_template));
    read_detail_with(c, env?.as_ref(), root_volume).await
}

/// The root volume of the launch template an environment is expected to name, read ahead of
/// its description (for [`read_detail_with`]); nothing without one.
pub async fn root_volume_ahead<'a>(
    c: &Clients,
    launch_template: Option<&'a str>,
) -> Option<(&'a str, Result<Option<Option<i32>>>)> {
    let lt = launch_template?;
    Some((lt, launch_template::root_volume_gb(c, lt).await))
}

/// Every environment of `names` that exists, by name, in one call (AWS takes up to 100).
pub async fn describe_many(
    c: &Clients,
    names: &[String],
) -> Result<BTreeMap<String, ComputeEnvironmentDetail>> {
    let mut found = BTreeMap::new();
    for chunk in names.chunks(100) {
        let out = c
            .batch()
            .describe_compute_environments()
            .set_compute_environments(Some(chunk.to_vec()))
            .send()
            .await
            .ctx(format!("reading compute environments {}", chunk.join(", ")))?;
        for env in out.compute_environments() {
            if let Some(name) = env.compute_environment_name() {
                if chunk.iter().any(|n| n == name) && env.status() != Some(&CeStatus::Deleted) {
                    found.insert(name.to_string(), env.clone());
                }
            }
        }
    }
    Ok(found)
}

/// The live environment from its description (`None`: it does not exist).
pub async fn read_detail(
    c: &Clients,
    env: Option<&ComputeEnvironmentDetail>,
) -> Result<Option<Live>> {
    read_detail_with(c, env, None).await
}

/// [`read_detail`], given a launch template's root volume read ahead (its name, the answer):
/// used when the environment names that template, else the one it names is read.
pub async fn read_detail_with(
    c: &Clients,
    env: Option<&ComputeEnvironmentDetail>,
    read_ahead: Option<(&str, Result<Option<Option<i32>>>)>,
) -> Result<Option<Live>> {
    let Some(env) = env else { return Ok(None) };
    let cr = env.compute_resources();
    let lt_name = cr
        .and_then(|r| r.launch_template())
        .and_then(|t| t.launch_template_name())
        .map(String::from);
    let root_volume = match (&lt_name, read_ahead) {
        (Some(lt), Some((ahead, root_volume))) if lt == ahead => root_volume?.flatten(),
        (Some(lt), _) => launch_template::root_volume_gb(c, lt).await?.flatten(),
        (None, _) => None,
    };
    let strings = |v: &[String]| super::string_set(v.iter().cloned());
    let attrs = Attrs::from([
        (
            "type".into(),
            json!(cr.and_then(|r| r.r#type()).map(|t| t.as_str())),
        ),
        ("min_vcpus".into(), json!(cr.and_then(|r| r.minv_cpus()))),
        ("max_vcpus".into(), json!(cr.and_then(|r| r.maxv_cpus()))),
        (
            "instance_types".into(),
            cr.map(|r| strings(r.instance_types()))
                .unwrap_or(Value::Null),
        ),
        (
            "allocation_strategy".into(),
            json!(cr.and_then(|r| r.allocation_strategy()).map(|a| a.as_str())),
        ),
        (
            "bid_percentage".into(),
            json!(cr.and_then(|r| r.bid_percentage())),
        ),
        (
            "subnets".into(),
            cr.map(|r| strings(r.subnets())).unwrap_or(Value::Null),
        ),
        (
            "security_groups".into(),
            cr.map(|r| strings(r.security_group_ids()))
                .unwrap_or(Value::Null),
        ),
        (
            "instance_role".into(),
            json!(cr.and_then(|r| r.instance_role())),
        ),
        ("service_role".into(), json!(env.service_role())),
        (
            "image_type".into(),
            json!(cr
                .and_then(|r| r.ec2_configuration().first())
                .and_then(|e| e.image_type())),
        ),
        ("launch_template".into(), json!(lt_name)),
        ("root_volume_gb".into(), json!(root_volume)),
        ("state".into(), json!(env.state().map(|s| s.as_str()))),
    ]);
    let tags = env
        .tags()
        .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok(Some(Live {
        id: env
            .compute_environment_arn()
            .unwrap_or_default()
            .to_string(),
        attrs,
        tags: Some(tags),
    }))
}

fn handle(spec: &Spec, arn: String) -> Handle {
    Handle {
        kind: Kind::ComputeEnvironment,
        name: spec.name.clone(),
        id: arn,
        extra: Extra {
            launch_template: spec.launch_template.as_ref().map(|(lt, _)| lt.clone()),
            ..Extra::default()
        },
    }
}

/// What a create needs of no other resource: the launch template, made while the roles and
/// the profile the environment names are still being made. Its name when there is one.
pub async fn create_ahead(
    c: &Clients,
    spec: &Spec,
    tags: &BTreeMap<String, String>,
) -> Result<Option<String>> {
    let Some((lt, gb)) = &spec.launch_template else {
        return Ok(None);
    };
    launch_template::ensure(c, lt, *gb, tags).await?;
    Ok(Some(lt.clone()))
}

pub async fn create(
    c: &Clients,
    spec: &Spec,
    tags: &BTreeMap<String, String>,
    progress: Progress<'_>,
) -> Result<Handle> {
    let mut cr = ComputeResource::builder()
        .r#type(CrType::from(cr_type(spec.kind)))
        .allocation_strategy(CrAllocationStrategy::from(
            spec.allocation_strategy.as_api(),
        ))
        .minv_cpus(spec.min_vcpus as i32)
        .maxv_cpus(spec.max_vcpus as i32)
        .set_instance_types(Some(spec.instance_types.clone()))
        .set_subnets(Some(spec.subnets.clone()))
        .set_security_group_ids(Some(spec.security_groups.clone()))
        .instance_role(&spec.instance_role)
        .ec2_configuration(
            Ec2Configuration::builder()
                .image_type(&spec.image_type)
                .build(),
        )
        // Instances carry the stack's tags too, so their cost shows per stack.
        .set_tags(Some(
            tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ));
    if let Some(bid) = spec.bid_percentage {
        cr = cr.bid_percentage(bid as i32);
    }
    if let Some((lt, gb)) = &spec.launch_template {
        if !spec.launch_template_made {
            launch_template::ensure(c, lt, *gb, tags).await?;
        }
        cr = cr.launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_name(lt)
                .version("$Default")
                .build(),
        );
    }
    let request = c
        .batch()
        .create_compute_environment()
        .compute_environment_name(&spec.name)
        .r#type(CeType::Managed)
        .state(CeState::from(spec.state.as_api()))
        .compute_resources(cr.build())
        .service_role(&spec.service_role)
        .set_tags(Some(
            tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ));
    // IAM is eventually consistent: a role or instance profile created seconds ago may not be
    // visible to Batch yet. Batch then refuses it by name; that is retried, nothing else.
    let arn = wait_for(
        &format!("IAM roles of {} to propagate", spec.name),
        IAM_PROPAGATION,
        progress,
        || {
            let request = request.clone();
            async move {
                match request.send().await {
                    Ok(out) => Ok(Ok(out
                        .compute_environment_arn()
                        .unwrap_or_default()
                        .to_string())),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_client_exception())
                            && e.message().is_some_and(|m| {
                                let m = m.to_ascii_lowercase();
                                (m.contains("role") || m.contains("instance profile"))
                                    && !m.contains("already exists")
                            }) =>
                    {
                        Ok(Err(super::describe_error(&e)))
                    }
                    Err(e) => Err(e).ctx(format!("creating compute environment {}", spec.name)),
                }
            }
        },
    )
    .await?;
    wait_valid(c, &spec.name, progress).await?;
    Ok(handle(spec, arn))
}

pub async fn update(
    c: &Clients,
    spec: &Spec,
    live: &Live,
    progress: Progress<'_>,
) -> Result<Handle> {
    c.batch()
        .update_compute_environment()
        .compute_environment(&spec.name)
        .state(CeState::from(spec.state.as_api()))
        .compute_resources(
            ComputeResourceUpdate::builder()
                .minv_cpus(spec.min_vcpus as i32)
                .maxv_cpus(spec.max_vcpus as i32)
                .build(),
        )
        .send()
        .await
        .ctx(format!("updating compute environment {}", spec.name))?;
    wait_valid(c, &spec.name, progress).await?;
    Ok(handle(spec, live.id.clone()))
}

/// Waits until the environment is VALID; INVALID is an error with Batch's reason.
async fn wait_valid(c: &Clients, name: &str, progress: Progress<'_>) -> Result<()> {
    wait_for(
        &format!("compute environment {name}"),
        WAIT,
        progress,
        || async {
            let Some(env) = describe(c, name).await? else {
                bail!("compute environment {name} disappeared")
            };
            match env.status() {
                Some(CeStatus::Valid) => Ok(Ok(())),
                Some(CeStatus::Invalid) => {
                    bail!(
                        "compute environment {name} is INVALID: {}",
                        env.status_reason().unwrap_or("no reason given")
                    )
                }
                other => Ok(Err(other
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default())),
            }
        },
    )
    .await
}

/// Disables the environment (AWS refuses to delete an enabled one), deletes it, waits until it
/// is gone, then deletes its launch template.
pub async fn delete(c: &Clients, handle: &Handle, progress: Progress<'_>) -> Result<()> {
    let name = &handle.name;
    if let Some(env) = describe(c, name).await? {
        if env.status() != Some(&CeStatus::Deleting) {
            let enabled = env.state() == Some(&CeState::Enabled);
            disable_and_delete(c, name, enabled, progress).await?;
        }
        wait_deleted(c, name, progress).await?;
    }
    delete_launch_template(c, handle).await
}

/// The part of a delete that need not wait for the queues to go: disabling the environment
/// (AWS deletes only a disabled one; a queue may still name a disabled one) and waiting until
/// Batch has. `false` when Batch refused (gone or busy): the delete then does it all.
pub async fn delete_ahead(c: &Clients, name: &str, live: &Live, progress: Progress<'_>) -> bool {
    disable(c, name, enabled(live), progress).await.is_ok()
}

/// [`delete`] from what the plan read (`live`; `disabled`: by [`delete_ahead`]): no describe
/// first. Should Batch refuse (the environment gone or busy meanwhile), the full path reads it
/// and goes on from there.
pub async fn delete_known(
    c: &Clients,
    handle: &Handle,
    live: &Live,
    disabled: bool,
    progress: Progress<'_>,
    gone: Milestone<'_>,
) -> Result<()> {
    let deleted = async {
        if !disabled {
            disable(c, &handle.name, enabled(live), progress).await?;
        }
        delete_disabled(c, &handle.name).await
    };
    if deleted.await.is_err() {
        return delete(c, handle, progress).await;
    }
    wait_deleted(c, &handle.name, progress).await?;
    // What waited for the environment (its security group, roles, profile) can go now.
    gone("");
    delete_launch_template(c, handle).await
}

fn enabled(live: &Live) -> bool {
    live.attrs.get("state").and_then(|v| v.as_str()) == Some(CeState::Enabled.as_str())
}

/// Disables the environment when it is enabled, waits until Batch has done so, deletes it.
async fn disable_and_delete(
    c: &Clients,
    name: &str,
    enabled: bool,
    progress: Progress<'_>,
) -> Result<()> {
    disable(c, name, enabled, progress).await?;
    delete_disabled(c, name).await
}

/// Disables the environment when it is enabled and waits until Batch is done with it.
async fn disable(c: &Clients, name: &str, enabled: bool, progress: Progress<'_>) -> Result<()> {
    if enabled {
        c.batch()
            .update_compute_environment()
            .compute_environment(name)
            .state(CeState::Disabled)
            .send()
            .await
            .ctx(format!("disabling compute environment {name}"))?;
    }
    wait_valid(c, name, progress).await
}

async fn delete_disabled(c: &Clients, name: &str) -> Result<()> {
    c.batch()
        .delete_compute_environment()
        .compute_environment(name)
        .send()
        .await
        .ctx(format!("deleting compute environment {name}"))?;
    Ok(())
}

async fn wait_deleted(c: &Clients, name: &str, progress: Progress<'_>) -> Result<()> {
    super::wait_deleted(
        &format!("compute environment {name}"),
        WAIT,
        progress,
        || async {
            Ok(describe(c, name).await?.map(|env| {
                env.status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default()
            }))
        },
    )
    .await
}

async fn delete_launch_template(c: &Clients, handle: &Handle) -> Result<()> {
    if let Some(lt) = &handle.extra.launch_template {
        launch_template::delete(c, lt).await?;
    }
    Ok(())
}
