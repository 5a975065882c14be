//! IAM roles (trust policy, AWS managed policies, inline policies rendered from `policies/`)
//! and the instance profile of the Batch instances. Everything updates in place.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use aws_sdk_iam::types::Tag;
use futures::future::try_join_all;
use serde_json::{json, Value};

use super::{Address, Attrs, Extra, Handle, Kind, Live, Milestone, SdkContext};
use crate::aws::Clients;
use crate::engine::{kms_arn, Facts};
use crate::stack::Stack;

/// The policy templates, compiled in so the binary needs no files beside it.
const TRUST_TEMPLATE: &str = include_str!("../../../policies/trust.json");
const JOB_S3_TEMPLATE: &str = include_str!("../../../policies/job-s3.json");
const EXECUTION_SECRETS_TEMPLATE: &str = include_str!("../../../policies/execution-secrets.json");

/// Renders a policy template: each `"{{NAME}}"` (quotes included) becomes the JSON value given
/// for it. A statement whose `Resource` renders to an empty list is dropped (a stack without
/// KMS keys gets no `kms:` statement at all).
pub fn render(template: &str, values: &[(&str, Value)]) -> Result<Value> {
    let mut text = template.to_string();
    for (name, value) in values {
        text = text.replace(&format!("\"{{{{{name}}}}}\""), &value.to_string());
    }
    let mut doc: Value = serde_json::from_str(&text).context("rendering a policy template")?;
    if let Some(statements) = doc["Statement"].as_array_mut() {
        statements.retain(|s| s["Resource"].as_array().is_none_or(|r| !r.is_empty()));
    }
    anyhow::ensure!(
        !text.contains("{{"),
        "policy template left a placeholder unrendered: {text}"
    );
    Ok(doc)
}

pub fn trust_policy(service: &str) -> Result<Value> {
    render(TRUST_TEMPLATE, &[("SERVICE", json!(service))])
}

/// The job role's S3 access: list the stack's buckets, read and write their objects.
pub fn job_s3_policy(
    partition: &str,
    bucket_names: &[String],
    kms_keys: &[String],
) -> Result<Value> {
    let buckets: Vec<String> = bucket_names
        .iter()
        .map(|b| format!("arn:{partition}:s3:::{b}"))
        .collect();
    let objects: Vec<String> = buckets.iter().map(|b| format!("{b}/*")).collect();
    render(
        JOB_S3_TEMPLATE,
        &[
            ("BUCKET_ARNS", json!(buckets)),
            ("OBJECT_ARNS", json!(objects)),
            ("KMS_KEY_ARNS", json!(kms_keys)),
        ],
    )
}

/// The execution role's access to the secrets jobs declare, and to their KMS keys.
pub fn execution_secrets_policy(secret_arns: &[String], kms_keys: &[String]) -> Result<Value> {
    render(
        EXECUTION_SECRETS_TEMPLATE,
        &[
            ("SECRET_ARNS", json!(secret_arns)),
            ("KMS_KEY_ARNS", json!(kms_keys)),
        ],
    )
}

/// The stack's four roles: `role.{key}` in the plan, `{P}-{key}` in IAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Assumed by the Batch instances (through the instance profile).
    Instance,
    /// Assumed by Batch to manage the compute environments.
    BatchService,
    /// Assumed by ECS to start a job's container (image pull, logs, secrets).
    Execution,
    /// Assumed by the job's code: the stack's buckets.
    Job,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Instance,
        Role::BatchService,
        Role::Execution,
        Role::Job,
    ];

    /// The key, as in `role.{key}` and `{P}-{key}`.
    pub fn key(self) -> &'static str {
        match self {
            Role::Instance => "instance",
            Role::BatchService => "batch-service",
            Role::Execution => "execution",
            Role::Job => "job",
        }
    }

    pub fn from_key(key: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.key() == key)
    }

    /// The plan's address of the role.
    pub fn address(self) -> Address {
        Address::new(Kind::Role, self.key())
    }
}

/// The execution role's inline policy: the secrets jobs declare, and their own KMS keys.
fn execution_inline(facts: &Facts) -> Result<BTreeMap<String, Value>> {
    let mut inline = BTreeMap::new();
    let mut arns: Vec<String> = facts.secrets.values().map(|(arn, _)| arn.clone()).collect();
    arns.sort();
    arns.dedup();
    if !arns.is_empty() {
        let mut keys: Vec<String> = facts
            .secrets
            .values()
            .filter_map(|(_, k)| k.clone())
            .collect();
        keys.sort();
        keys.dedup();
        inline.insert(
            "job-secrets".to_string(),
            execution_secrets_policy(&arns, &keys)?,
        );
    }
    Ok(inline)
}

/// The job role's inline policy: the stack's buckets and their KMS keys.
fn job_inline(stack: &Stack, facts: &Facts) -> Result<BTreeMap<String, Value>> {
    let mut inline = BTreeMap::new();
    let buckets: Vec<String> = stack
        .buckets
        .keys()
        .map(|k| stack.bucket_name(k, &facts.account))
        .collect();
    if !buckets.is_empty() {
        let mut keys: Vec<String> = stack
            .buckets
            .values()
            .filter_map(|b| b.kms_key.as_deref())
            .map(|k| kms_arn(k, facts, &stack.region))
            .collect();
        keys.sort();
        keys.dedup();
        inline.insert(
            "stack-buckets".to_string(),
            job_s3_policy(&facts.partition, &buckets, &keys)?,
        );
    }
    Ok(inline)
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoleSpec {
    pub name: String,
    pub trust: Value,
    /// ARNs of AWS managed policies.
    pub managed: Vec<String>,
    /// Inline policy name → document.
    pub inline: BTreeMap<String, Value>,
}

impl RoleSpec {
    /// The stack's `role`: its one trusted service, its AWS managed policies, and the
    /// inline policies scoped to exactly the stack's buckets, secrets and keys.
    pub fn desired(stack: &Stack, facts: &Facts, role: Role) -> Result<RoleSpec> {
        let p = &facts.partition;
        let managed = |name: &str| format!("arn:{p}:iam::aws:policy/service-role/{name}");
        let (service, managed, inline) = match role {
            Role::Instance => (
                "ec2.amazonaws.com",
                vec![managed("AmazonEC2ContainerServiceforEC2Role")],
                BTreeMap::new(),
            ),
            Role::BatchService => (
                "batch.amazonaws.com",
                vec![managed("AWSBatchServiceRole")],
                BTreeMap::new(),
            ),
            Role::Execution => (
                "ecs-tasks.amazonaws.com",
                vec![managed("AmazonECSTaskExecutionRolePolicy")],
                execution_inline(facts)?,
            ),
            Role::Job => ("ecs-tasks.amazonaws.com", vec![], job_inline(stack, facts)?),
        };
        Ok(RoleSpec {
            name: stack.role_name(role.key()),
            trust: trust_policy(service)?,
            managed,
            inline,
        })
    }

    pub fn attributes(&self) -> Attrs {
        Attrs::from([
            ("assume_role_policy".into(), self.trust.clone()),
            (
                "managed_policies".into(),
                super::string_set(self.managed.iter().cloned()),
            ),
            ("inline_policies".into(), json!(self.inline)),
        ])
    }
}

/// IAM answers policy documents URL-encoded.
pub fn decode_policy(text: &str) -> Value {
    let decoded = percent_decode(text);
    serde_json::from_str(&decoded).unwrap_or(Value::String(decoded))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

pub async fn read_role(c: &Clients, name: &str) -> Result<Option<Live>> {
    read_role_expecting(c, name, &[]).await
}

/// [`read_role`], with the inline policies the role is expected to hold (`expected`: what the
/// state recorded) read beside the role and its lists instead of after them: one round trip
/// instead of two. A listed policy that was not expected, or whose early read failed, is read
/// after the list as before; an expected one the list lacks is ignored.
pub async fn read_role_expecting(
    c: &Clients,
    name: &str,
    expected: &[String],
) -> Result<Option<Live>> {
    // The reads need only names: one round trip, not two. A missing role is told by GetRole;
    // the lists and the early policy reads then fail the same way and are not looked at.
    let early = futures::future::join_all(
        expected
            .iter()
            .map(|policy| async move { (policy.clone(), get_role_policy(c, name, policy).await) }),
    );
    let (role, attached, names, early) = tokio::join!(
        c.iam().get_role().role_name(name).send(),
        c.iam().list_attached_role_policies().role_name(name).send(),
        c.iam().list_role_policies().role_name(name).send(),
        early,
    );
    let role = match role {
        Ok(out) => out.role.context("GetRole answered without a role")?,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e).ctx(format!("reading role {name}")),
    };
    let trust = role
        .assume_role_policy_document()
        .map(decode_policy)
        .unwrap_or(Value::Null);
    let tags = role
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    let attached = attached.ctx(format!("listing policies of role {name}"))?;
    let managed = super::string_set(
        attached
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn())
            .map(String::from),
    );
    let names = names.ctx(format!("listing inline policies of role {name}"))?;
    let mut inline: BTreeMap<String, Value> = early
        .into_iter()
        .filter(|(policy, _)| names.policy_names().contains(policy))
        .filter_map(|(policy, doc)| Some((policy, decode_policy(doc.ok()?.policy_document()))))
        .collect();
    let late: Vec<&String> = names
        .policy_names()
        .iter()
        .filter(|p| !inline.contains_key(*p))
        .collect();
    let docs = futures::future::join_all(late.into_iter().map(|policy| async move {
        let doc = get_role_policy(c, name, policy)
            .await
            .ctx(format!("reading policy {policy} of role {name}"))?;
        anyhow::Ok((policy.clone(), decode_policy(doc.policy_document())))
    }))
    .await;
    for doc in docs {
        let (policy, doc) = doc?;
        inline.insert(policy, doc);
    }
    Ok(Some(Live {
        id: role.arn,
        attrs: Attrs::from([
            ("assume_role_policy".into(), trust),
            ("managed_policies".into(), managed),
            ("inline_policies".into(), json!(inline)),
        ]),
        tags: Some(tags),
    }))
}

async fn get_role_policy(
    c: &Clients,
    role: &str,
    policy: &str,
) -> std::result::Result<
    aws_sdk_iam::operation::get_role_policy::GetRolePolicyOutput,
    aws_sdk_iam::error::SdkError<aws_sdk_iam::operation::get_role_policy::GetRolePolicyError>,
> {
    c.iam()
        .get_role_policy()
        .role_name(role)
        .policy_name(policy)
        .send()
        .await
}

fn iam_tags(tags: &BTreeMap<String, String>) -> Result<Vec<Tag>> {
    Ok(tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Result<Vec<_>, _>>()?)
}

/// Creates the role, tagged, then attaches and puts its policies; `exists` is told its ARN
/// in between.
pub async fn create_role(
    c: &Clients,
    spec: &RoleSpec,
    tags: &BTreeMap<String, String>,
    exists: Milestone<'_>,
) -> Result<Handle> {
    let out = c
        .iam()
        .create_role()
        .role_name(&spec.name)
        .assume_role_policy_document(spec.trust.to_string())
        .set_tags(Some(iam_tags(tags)?))
        .send()
        .await
        .ctx(format!("creating role {}", spec.name))?;
    let arn = out.role.map(|r| r.arn).unwrap_or_default();
    exists(&arn);
    let empty = Live {
        id: arn,
        attrs: Attrs::new(),
        tags: None,
    };
    update_role(c, spec, &empty).await
}

/// Converges trust, managed attachments and inline policies to the spec. The calls are
/// independent of each other and run at once (one round trip, not one per policy).
pub async fn update_role(c: &Clients, spec: &RoleSpec, live: &Live) -> Result<Handle> {
    let name = &spec.name;
    let trust = async {
        match live.attrs.get("assume_role_policy") {
            Some(trust) if trust != &spec.trust => c
                .iam()
                .update_assume_role_policy()
                .role_name(name)
                .policy_document(spec.trust.to_string())
                .send()
                .await
                .map(|_| ())
                .ctx(format!("updating the trust policy of role {name}")),
            _ => Ok(()),
        }
    };
    let live_managed: Vec<String> = live
        .attrs
        .get("managed_policies")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let attach = spec
        .managed
        .iter()
        .filter(|arn| !live_managed.contains(arn))
        .map(|arn| async move {
            c.iam()
                .attach_role_policy()
                .role_name(name)
                .policy_arn(arn)
                .send()
                .await
                .map(|_| ())
                .ctx(format!("attaching {arn} to role {name}"))
        });
    let detach = live_managed
        .iter()
        .filter(|arn| !spec.managed.contains(arn))
        .map(|arn| async move { detach_policy(c, name, arn).await });
    let live_inline: BTreeMap<String, Value> = live
        .attrs
        .get("inline_policies")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let put = spec
        .inline
        .iter()
        .filter(|(policy, doc)| live_inline.get(*policy) != Some(*doc))
        .map(|(policy, doc)| async move {
            c.iam()
                .put_role_policy()
                .role_name(name)
                .policy_name(policy)
                .policy_document(doc.to_string())
                .send()
                .await
                .map(|_| ())
                .ctx(format!("writing policy {policy} of role {name}"))
        });
    let delete = live_inline
        .keys()
        .filter(|policy| !spec.inline.contains_key(*policy))
        .map(|policy| async move { delete_inline_policy(c, name, policy).await });
    tokio::try_join!(
        trust,
        try_join_all(attach),
        try_join_all(detach),
        try_join_all(put),
        try_join_all(delete),
    )?;
    Ok(Handle {
        kind: Kind::Role,
        name: name.clone(),
        id: live.id.clone(),
        extra: Extra::default(),
    })
}

/// Detaches and deletes every policy, leaves every instance profile, then deletes the role:
/// three round trips (what is attached, the removals at once, the delete); policy documents
/// are never read.
pub async fn delete_role(c: &Clients, name: &str) -> Result<()> {
    let (attached, inline, profiles) = tokio::join!(
        c.iam().list_attached_role_policies().role_name(name).send(),
        c.iam().list_role_policies().role_name(name).send(),
        c.iam()
            .list_instance_profiles_for_role()
            .role_name(name)
            .send(),
    );
    let attached = match attached {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            return Ok(())
        }
        Err(e) => return Err(e).ctx(format!("listing policies of role {name}")),
    };
    let inline = inline.ctx(format!("listing inline policies of role {name}"))?;
    let profiles = profiles.ctx(format!("listing instance profiles of role {name}"))?;
    let detach = attached
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn())
        .map(|arn| async move { detach_policy(c, name, arn).await });
    let delete = inline
        .policy_names()
        .iter()
        .map(|policy| async move { delete_inline_policy(c, name, policy).await });
    let leave = profiles
        .instance_profiles()
        .iter()
        .map(|profile| async move {
            c.iam()
                .remove_role_from_instance_profile()
                .instance_profile_name(profile.instance_profile_name())
                .role_name(name)
                .send()
                .await
                .map(|_| ())
                .ctx(format!("removing role {name} from instance profile"))
        });
    tokio::try_join!(
        try_join_all(detach),
        try_join_all(delete),
        try_join_all(leave)
    )?;
    match c.iam().delete_role().role_name(name).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(e).ctx(format!("deleting role {name}")),
    }
}

/// [`delete_role`] from what the plan read (`live`: its managed and inline policies): the
/// removals at once (unless [`strip_role`] made them, `stripped`), then the role, two round
/// trips. Should DeleteRole still find something attached (an instance profile, a policy added
/// since the read), the full path lists it all.
pub async fn delete_role_known(c: &Clients, name: &str, live: &Live, stripped: bool) -> Result<()> {
    if !stripped {
        strip_role(c, name, live).await?;
    }
    delete_or_again(
        c.iam().delete_role().role_name(name).send().await,
        format!("deleting role {name}"),
        || delete_role(c, name),
    )
    .await
}

/// Detaches and deletes the policies the plan read of role `name` (`live`), all at once.
pub async fn strip_role(c: &Clients, name: &str, live: &Live) -> Result<()> {
    let managed: Vec<String> = live
        .attrs
        .get("managed_policies")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let inline: Vec<String> = live
        .attrs
        .get("inline_policies")
        .and_then(|v| v.as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let detach = managed
        .iter()
        .map(|arn| async move { detach_policy(c, name, arn).await });
    let delete = inline
        .iter()
        .map(|policy| async move { delete_inline_policy(c, name, policy).await });
    tokio::try_join!(try_join_all(detach), try_join_all(delete))?;
    Ok(())
}

/// Detaches managed policy `arn` from `role`; one detached already is done.
async fn detach_policy(c: &Clients, role: &str, arn: &str) -> Result<()> {
    gone_is_done(
        c.iam()
            .detach_role_policy()
            .role_name(role)
            .policy_arn(arn)
            .send()
            .await,
        format!("detaching {arn} from role {role}"),
    )
}

/// Deletes inline policy `policy` of `role`; one deleted already is done.
async fn delete_inline_policy(c: &Clients, role: &str, policy: &str) -> Result<()> {
    gone_is_done(
        c.iam()
            .delete_role_policy()
            .role_name(role)
            .policy_name(policy)
            .send()
            .await,
        format!("deleting policy {policy} of role {role}"),
    )
}

/// A removal that found nothing to remove (NoSuchEntity) has nothing left to do. Read through
/// the SDK's service-wide error, which every operation's error converts into.
fn gone_is_done<T, E>(result: std::result::Result<T, E>, what: String) -> Result<()>
where
    aws_sdk_iam::Error: From<E>,
{
    match result.map_err(aws_sdk_iam::Error::from) {
        Ok(_) | Err(aws_sdk_iam::Error::NoSuchEntityException(_)) => Ok(()),
        Err(e) => Err(e).ctx(what),
    }
}

/// A delete made from what the plan read: done, or gone already; on DeleteConflict (something
/// attached since the read) `again`, the full path that lists it all and removes it.
async fn delete_or_again<T, E, Fut>(
    result: std::result::Result<T, E>,
    what: String,
    again: impl FnOnce() -> Fut,
) -> Result<()>
where
    aws_sdk_iam::Error: From<E>,
    Fut: std::future::Future<Output = Result<()>>,
{
    match result.map_err(aws_sdk_iam::Error::from) {
        Ok(_) | Err(aws_sdk_iam::Error::NoSuchEntityException(_)) => Ok(()),
        Err(aws_sdk_iam::Error::DeleteConflictException(_)) => again().await,
        Err(e) => Err(e).ctx(what),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSpec {
    pub name: String,
    pub role: String,
    /// The profile's ARN when it was made ahead ([`create_profile_ahead`]).
    pub made: Option<String>,
}

impl ProfileSpec {
    pub fn desired(stack: &Stack) -> ProfileSpec {
        ProfileSpec {
            name: stack.instance_profile_name(),
            role: stack.role_name(Role::Instance.key()),
            made: None,
        }
    }

    pub fn attributes(&self) -> Attrs {
        Attrs::from([("roles".into(), json!([self.role]))])
    }
}

pub async fn read_profile(c: &Clients, name: &str) -> Result<Option<Live>> {
    let profile = match c
        .iam()
        .get_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
    {
        Ok(out) => out
            .instance_profile
            .context("GetInstanceProfile answered without a profile")?,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e).ctx(format!("reading instance profile {name}")),
    };
    let roles = super::string_set(profile.roles().iter().map(|r| r.role_name().to_string()));
    // GetInstanceProfile carries tags on AWS; an answer without any says nothing either way.
    let tags = if profile.tags().is_empty() {
        None
    } else {
        Some(
            profile
                .tags()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect(),
        )
    };
    Ok(Some(Live {
        id: profile.arn,
        attrs: Attrs::from([("roles".into(), roles)]),
        tags,
    }))
}

/// What a profile's create needs of no other resource: the profile itself, made while its
/// role is being made (the role goes in once it exists). Its ARN.
pub async fn create_profile_ahead(
    c: &Clients,
    spec: &ProfileSpec,
    tags: &BTreeMap<String, String>,
) -> Result<String> {
    let out = c
        .iam()
        .create_instance_profile()
        .instance_profile_name(&spec.name)
        .set_tags(Some(iam_tags(tags)?))
        .send()
        .await
        .ctx(format!("creating instance profile {}", spec.name))?;
    Ok(out.instance_profile.map(|p| p.arn).unwrap_or_default())
}

pub async fn create_profile(
    c: &Clients,
    spec: &ProfileSpec,
    tags: &BTreeMap<String, String>,
) -> Result<Handle> {
    let arn = match &spec.made {
        Some(arn) => arn.clone(),
        None => create_profile_ahead(c, spec, tags).await?,
    };
    let empty = Live {
        id: arn,
        attrs: Attrs::from([("roles".into(), json!([]))]),
        tags: None,
    };
    update_profile(c, spec, &empty).await
}

pub async fn update_profile(c: &Clients, spec: &ProfileSpec, live: &Live) -> Result<Handle> {
    let roles: Vec<String> = live
        .attrs
        .get("roles")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    for role in roles.iter().filter(|r| **r != spec.role) {
        c.iam()
            .remove_role_from_instance_profile()
            .instance_profile_name(&spec.name)
            .role_name(role)
            .send()
            .await
            .ctx(format!(
                "removing role {role} from instance profile {}",
                spec.name
            ))?;
    }
    if !roles.contains(&spec.role) {
        // The role may have been created a moment ago (the profile waits only for it to
        // exist): IAM is eventually consistent, so a NoSuchEntity is asked again a few times.
        let add = || {
            c.iam()
                .add_role_to_instance_profile()
                .instance_profile_name(&spec.name)
                .role_name(&spec.role)
                .send()
        };
        super::wait_for(
            &format!("role {} to propagate", spec.role),
            std::time::Duration::from_secs(60),
            &|_: &str| {},
            || async {
                match add().await {
                    Ok(_) => Ok(Ok(())),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_no_such_entity_exception()) =>
                    {
                        Ok(Err(super::describe_error(&e)))
                    }
                    Err(e) => Err(e).ctx(format!(
                        "adding role {} to instance profile {}",
                        spec.role, spec.name
                    )),
                }
            },
        )
        .await?;
    }
    Ok(Handle {
        kind: Kind::InstanceProfile,
        name: spec.name.clone(),
        id: live.id.clone(),
        extra: Extra::default(),
    })
}

pub async fn delete_profile(c: &Clients, name: &str) -> Result<()> {
    let Some(live) = read_profile(c, name).await? else {
        return Ok(());
    };
    let roles: Vec<String> =
        serde_json::from_value(live.attrs["roles"].clone()).unwrap_or_default();
    for role in roles {
        c.iam()
            .remove_role_from_instance_profile()
            .instance_profile_name(name)
            .role_name(&role)
            .send()
            .await
            .ctx(format!("removing role {role} from instance profile {name}"))?;
    }
    match c
        .iam()
        .delete_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(e).ctx(format!("deleting instance profile {name}")),
    }
}

/// [`delete_profile`] from what the plan read (`live`: its roles): the roles removed, then the
/// profile, two round trips. Should it still hold a role (added since the read), the full path
/// reads it again.
pub async fn delete_profile_known(
    c: &Clients,
    name: &str,
    live: &Live,
    roles_gone: Milestone<'_>,
) -> Result<()> {
    let roles: Vec<String> = live
        .attrs
        .get("roles")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    try_join_all(roles.iter().map(|role| async move {
        gone_is_done(
            c.iam()
                .remove_role_from_instance_profile()
                .instance_profile_name(name)
                .role_name(role)
                .send()
                .await,
            format!("removing role {role} from instance profile {name}"),
        )
    }))
    .await?;
    // Its roles can go now.
    roles_gone("");
    delete_or_again(
        c.iam()
            .delete_instance_profile()
            .instance_profile_name(name)
            .send()
            .await,
        format!("deleting instance profile {name}"),
        || delete_profile(c, name),
    )
    .await
}

/// Adds `tags` to role `name` (what `import` does to adopt it).
pub async fn tag_role(c: &Clients, name: &str, tags: &BTreeMap<String, String>) -> Result<()> {
    c.iam()
        .tag_role()
        .role_name(name)
        .set_tags(Some(iam_tags(tags)?))
        .send()
        .await
        .ctx(format!("tagging role {name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_policy_is_scoped_to_the_stack_buckets() {
        let doc = job_s3_policy("aws", &["a-b-1".into()], &[]).unwrap();
        let statements = doc["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 2, "no KMS statement without keys");
        assert_eq!(statements[0]["Resource"], json!(["arn:aws:s3:::a-b-1"]));
        assert_eq!(statements[1]["Resource"], json!(["arn:aws:s3:::a-b-1/*"]));
    }

    #[test]
    fn percent_decoding_round_trips_policy_text() {
        assert_eq!(percent_decode("%7B%22a%22%3A1%7D"), "{\"a\":1}");
        assert_eq!(decode_policy("{\"a\": 1}"), json!({"a": 1}));
        // A `%` before a multi-byte character is kept as it is (it used to slice inside it).
        assert_eq!(percent_decode("%é1 100%"), "%é1 100%");
    }
}
