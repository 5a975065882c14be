//! IAM roles (trust policy, AWS managed policies, inline policies rendered from `policies/`)
//! and the instance profile of the Batch instances. Everything updates in place.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use aws_sdk_iam::types::Tag;
use serde_json::{json, Value};

use super::{error_code, Attrs, Handle, Kind, Live, SdkContext};
use crate::aws::Clients;

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
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn read_role(c: &Clients, name: &str) -> Result<Option<Live>> {
    // The three reads need only the name: one round trip, not two. A missing role is told
    // by GetRole; the lists then fail the same way and are not looked at.
    let (role, attached, names) = tokio::join!(
        c.iam().get_role().role_name(name).send(),
        c.iam().list_attached_role_policies().role_name(name).send(),
        c.iam().list_role_policies().role_name(name).send(),
    );
    let role = match role {
        Ok(out) => out.role.context("GetRole answered without a role")?,
        Err(e) if error_code(&e) == Some("NoSuchEntity") => return Ok(None),
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
    let docs = futures::future::join_all(names.policy_names().iter().map(|policy| async move {
        let doc = c
            .iam()
            .get_role_policy()
            .role_name(name)
            .policy_name(policy)
            .send()
            .await
            .ctx(format!("reading policy {policy} of role {name}"))?;
        anyhow::Ok((policy.clone(), decode_policy(doc.policy_document())))
    }))
    .await;
    let inline: BTreeMap<String, Value> = docs.into_iter().collect::<Result<_>>()?;
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

fn iam_tags(tags: &BTreeMap<String, String>) -> Result<Vec<Tag>> {
    Ok(tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Result<Vec<_>, _>>()?)
}

pub async fn create_role(
    c: &Clients,
    spec: &RoleSpec,
    tags: &BTreeMap<String, String>,
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
    let empty = Live {
        id: arn,
        attrs: Attrs::new(),
        tags: None,
    };
    update_role(c, spec, &empty).await
}

/// Converges trust, managed attachments and inline policies to the spec.
pub async fn update_role(c: &Clients, spec: &RoleSpec, live: &Live) -> Result<Handle> {
    let name = &spec.name;
    if let Some(trust) = live.attrs.get("assume_role_policy") {
        if trust != &spec.trust {
            c.iam()
                .update_assume_role_policy()
                .role_name(name)
                .policy_document(spec.trust.to_string())
                .send()
                .await
                .ctx(format!("updating the trust policy of role {name}"))?;
        }
    }
    let live_managed: Vec<String> = live
        .attrs
        .get("managed_policies")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    for arn in &spec.managed {
        if !live_managed.contains(arn) {
            c.iam()
                .attach_role_policy()
                .role_name(name)
                .policy_arn(arn)
                .send()
                .await
                .ctx(format!("attaching {arn} to role {name}"))?;
        }
    }
    for arn in &live_managed {
        if !spec.managed.contains(arn) {
            c.iam()
                .detach_role_policy()
                .role_name(name)
                .policy_arn(arn)
                .send()
                .await
                .ctx(format!("detaching {arn} from role {name}"))?;
        }
    }
    let live_inline: BTreeMap<String, Value> = live
        .attrs
        .get("inline_policies")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    for (policy, doc) in &spec.inline {
        if live_inline.get(policy) != Some(doc) {
            c.iam()
                .put_role_policy()
                .role_name(name)
                .policy_name(policy)
                .policy_document(doc.to_string())
                .send()
                .await
                .ctx(format!("writing policy {policy} of role {name}"))?;
        }
    }
    for policy in live_inline.keys() {
        if !spec.inline.contains_key(policy) {
            c.iam()
                .delete_role_policy()
                .role_name(name)
                .policy_name(policy)
                .send()
                .await
                .ctx(format!("deleting policy {policy} of role {name}"))?;
        }
    }
    Ok(Handle {
        kind: Kind::Role,
        name: name.clone(),
        id: live.id.clone(),
        extra: BTreeMap::new(),
    })
}

/// Detaches and deletes every policy, leaves every instance profile, then deletes the role.
pub async fn delete_role(c: &Clients, name: &str) -> Result<()> {
    let Some(live) = read_role(c, name).await? else {
        return Ok(());
    };
    let empty = RoleSpec {
        name: name.to_string(),
        trust: live.attrs["assume_role_policy"].clone(),
        managed: vec![],
        inline: BTreeMap::new(),
    };
    update_role(c, &empty, &live).await?;
    let profiles = c
        .iam()
        .list_instance_profiles_for_role()
        .role_name(name)
        .send()
        .await
        .ctx(format!("listing instance profiles of role {name}"))?;
    for profile in profiles.instance_profiles() {
        c.iam()
            .remove_role_from_instance_profile()
            .instance_profile_name(profile.instance_profile_name())
            .role_name(name)
            .send()
            .await
            .ctx(format!("removing role {name} from instance profile"))?;
    }
    match c.iam().delete_role().role_name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if error_code(&e) == Some("NoSuchEntity") => Ok(()),
        Err(e) => Err(e).ctx(format!("deleting role {name}")),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSpec {
    pub name: String,
    pub role: String,
}

impl ProfileSpec {
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
        Err(e) if error_code(&e) == Some("NoSuchEntity") => return Ok(None),
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

pub async fn create_profile(
    c: &Clients,
    spec: &ProfileSpec,
    tags: &BTreeMap<String, String>,
) -> Result<Handle> {
    let out = c
        .iam()
        .create_instance_profile()
        .instance_profile_name(&spec.name)
        .set_tags(Some(iam_tags(tags)?))
        .send()
        .await
        .ctx(format!("creating instance profile {}", spec.name))?;
    let arn = out.instance_profile.map(|p| p.arn).unwrap_or_default();
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
        c.iam()
            .add_role_to_instance_profile()
            .instance_profile_name(&spec.name)
            .role_name(&spec.role)
            .send()
            .await
            .ctx(format!(
                "adding role {} to instance profile {}",
                spec.role, spec.name
            ))?;
    }
    Ok(Handle {
        kind: Kind::InstanceProfile,
        name: spec.name.clone(),
        id: live.id.clone(),
        extra: BTreeMap::new(),
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
        Err(e) if error_code(&e) == Some("NoSuchEntity") => Ok(()),
        Err(e) => Err(e).ctx(format!("deleting instance profile {name}")),
    }
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
    }
}
