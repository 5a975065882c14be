//! The Batch instances' security group `{P}-batch`: no ingress, all egress. Rules are
//! converged in place; a group cannot move to another VPC, so that is a replacement.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType, SecurityGroup};
use serde_json::json;

use super::error_codes::Ec2Code;
use super::vpc_endpoint::{filter, tag_spec};
use super::{wait_for, Attrs, Extra, Handle, Kind, Live, Progress, SdkContext};
use crate::aws::Clients;
use crate::engine::Facts;
use crate::stack::Stack;

pub const REPLACE_ON: &[&str] = &["vpc_id"];

/// The one egress rule: everything, anywhere (instances pull images and talk to AWS APIs).
const ALL_EGRESS: &str = "all 0.0.0.0/0";

#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub vpc_id: String,
}

impl Spec {
    pub fn desired(stack: &Stack, facts: &Facts) -> Spec {
        Spec {
            name: stack.security_group_name(),
            vpc_id: facts.vpc_id.clone(),
        }
    }

    pub fn attributes(&self) -> Attrs {
        Attrs::from([
            ("vpc_id".into(), json!(self.vpc_id)),
            ("ingress".into(), json!([])),
            ("egress".into(), json!([ALL_EGRESS])),
        ])
    }
}

fn rule_strings(perms: &[IpPermission]) -> Vec<String> {
    let mut out = Vec::new();
    for p in perms {
        let proto = match p.ip_protocol() {
            Some("-1") | None => "all".to_string(),
            Some(proto) => format!(
                "{proto} {}-{}",
                p.from_port().unwrap_or(0),
                p.to_port().unwrap_or(0)
            ),
        };
        for r in p.ip_ranges() {
            out.push(format!("{proto} {}", r.cidr_ip().unwrap_or_default()));
        }
        for r in p.ipv6_ranges() {
            out.push(format!("{proto} {}", r.cidr_ipv6().unwrap_or_default()));
        }
        for g in p.user_id_group_pairs() {
            out.push(format!("{proto} {}", g.group_id().unwrap_or_default()));
        }
        for l in p.prefix_list_ids() {
            out.push(format!(
                "{proto} {}",
                l.prefix_list_id().unwrap_or_default()
            ));
        }
    }
    out.sort();
    out
}

fn live(group: &SecurityGroup) -> Live {
    Live {
        id: group.group_id().unwrap_or_default().to_string(),
        attrs: Attrs::from([
            ("vpc_id".into(), json!(group.vpc_id())),
            (
                "ingress".into(),
                json!(rule_strings(group.ip_permissions())),
            ),
            (
                "egress".into(),
                json!(rule_strings(group.ip_permissions_egress())),
            ),
        ]),
        tags: Some(
            group
                .tags()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap_or_default().to_string(),
                        t.value().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
        ),
    }
}

async fn describe(
    c: &Clients,
    filters: Vec<aws_sdk_ec2::types::Filter>,
) -> Result<Option<SecurityGroup>> {
    let out = c
        .ec2()
        .describe_security_groups()
        .set_filters(Some(filters))
        .send()
        .await
        .ctx("reading security groups")?;
    Ok(out.security_groups().first().cloned())
}

pub async fn read(c: &Clients, name: &str, vpc_id: &str) -> Result<Option<Live>> {
    Ok(describe(
        c,
        vec![filter("group-name", name), filter("vpc-id", vpc_id)],
    )
    .await?
    .as_ref()
    .map(live))
}

pub async fn read_id(c: &Clients, id: &str) -> Result<Option<Live>> {
    Ok(describe(c, vec![filter("group-id", id)])
        .await?
        .as_ref()
        .map(live))
}

pub async fn create(c: &Clients, spec: &Spec, tags: &BTreeMap<String, String>) -> Result<Handle> {
    let out = c
        .ec2()
        .create_security_group()
        .group_name(&spec.name)
        .description("AWS Batch instances of a provision stack: no ingress, all egress")
        .vpc_id(&spec.vpc_id)
        .tag_specifications(tag_spec(ResourceType::SecurityGroup, tags))
        .send()
        .await
        .ctx(format!("creating security group {}", spec.name))?;
    let id = out.group_id().unwrap_or_default().to_string();
    // A new group already allows all egress; converge anyway in case a default changes.
    let group = describe(c, vec![filter("group-id", &id)]).await?;
    if let Some(group) = group {
        converge(c, spec, &group).await?;
    }
    Ok(handle(spec, id))
}

fn handle(spec: &Spec, id: String) -> Handle {
    Handle {
        kind: Kind::SecurityGroup,
        name: spec.name.clone(),
        id,
        extra: Extra::default(),
    }
}

pub async fn update(c: &Clients, spec: &Spec, live: &Live) -> Result<Handle> {
    if let Some(group) = describe(c, vec![filter("group-id", &live.id)]).await? {
        converge(c, spec, &group).await?;
    }
    Ok(handle(spec, live.id.clone()))
}

async fn converge(c: &Clients, spec: &Spec, group: &SecurityGroup) -> Result<()> {
    let id = group.group_id().unwrap_or_default();
    if !group.ip_permissions().is_empty() {
        c.ec2()
            .revoke_security_group_ingress()
            .group_id(id)
            .set_ip_permissions(Some(group.ip_permissions().to_vec()))
            .send()
            .await
            .ctx(format!("revoking ingress of {}", spec.name))?;
    }
    let egress = rule_strings(group.ip_permissions_egress());
    let extra: Vec<IpPermission> = group
        .ip_permissions_egress()
        .iter()
        .filter(|p| rule_strings(std::slice::from_ref(*p)) != [ALL_EGRESS])
        .cloned()
        .collect();
    if !extra.is_empty() {
        c.ec2()
            .revoke_security_group_egress()
            .group_id(id)
            .set_ip_permissions(Some(extra))
            .send()
            .await
            .ctx(format!("revoking egress of {}", spec.name))?;
    }
    if !egress.iter().any(|r| r == ALL_EGRESS) {
        c.ec2()
            .authorize_security_group_egress()
            .group_id(id)
            .ip_permissions(
                IpPermission::builder()
                    .ip_protocol("-1")
                    .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                    .build(),
            )
            .send()
            .await
            .ctx(format!("allowing egress of {}", spec.name))?;
    }
    Ok(())
}

/// Deletes the group. Instances of a just-deleted compute environment release their network
/// interfaces minutes later, so `DependencyViolation` is waited out.
pub async fn delete(c: &Clients, handle: &Handle, progress: Progress<'_>) -> Result<()> {
    wait_for(
        &format!("security group {} to be released", handle.name),
        Duration::from_secs(900),
        progress,
        || async {
            match c
                .ec2()
                .delete_security_group()
                .group_id(&handle.id)
                .send()
                .await
            {
                Ok(_) => Ok(Ok(())),
                Err(e) if Ec2Code::SecurityGroupNotFound.matches(&e) => Ok(Ok(())),
                Err(e) if Ec2Code::DependencyViolation.matches(&e) => Ok(Err("in use".to_string())),
                Err(e) => Err(e).ctx(format!("deleting security group {}", handle.name)),
            }
        },
    )
    .await
}
