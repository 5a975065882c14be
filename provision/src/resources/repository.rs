//! ECR repository: scan on push and a lifecycle policy keeping the newest `keep_images`
//! images, both updated in place. The handle's id is the repository URI (what jobs pull).

use std::collections::BTreeMap;

use anyhow::Result;
use aws_sdk_ecr::types::{ImageScanningConfiguration, Tag};
use serde_json::{json, Value};

use super::{Attrs, Extra, Handle, Kind, Live, SdkContext, TagRead};
use crate::aws::Clients;
use crate::stack::Stack;

#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub keep_images: Option<u32>,
    pub scan_on_push: bool,
}

impl Spec {
    pub fn desired(stack: &Stack, key: &str) -> Spec {
        let r = &stack.repositories[key];
        Spec {
            name: stack.repository_name(key),
            keep_images: r.keep_images,
            scan_on_push: r.scan_on_push,
        }
    }

    pub fn attributes(&self) -> Attrs {
        Attrs::from([
            ("scan_on_push".into(), json!(self.scan_on_push)),
            ("keep_images".into(), json!(self.keep_images)),
        ])
    }
}

fn lifecycle_policy(keep: u32) -> String {
    json!({
        "rules": [{
            "rulePriority": 1,
            "description": format!("keep the newest {keep} images"),
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep},
            "action": {"type": "expire"}
        }]
    })
    .to_string()
}

/// `countNumber` of the policy's `imageCountMoreThan` rule; any other policy reads as
/// `Value::String` of itself so that it shows as drift.
fn parse_keep(policy: &str) -> Value {
    let parsed: Value = serde_json::from_str(policy).unwrap_or(Value::Null);
    let rules = parsed["rules"].as_array().cloned().unwrap_or_default();
    match rules.as_slice() {
        [rule]
            if rule["selection"]["countType"] == "imageCountMoreThan"
                && rule["action"]["type"] == "expire" =>
        {
            rule["selection"]["countNumber"].clone()
        }
        _ => json!(policy),
    }
}

pub async fn read(c: &Clients, name: &str, tags: TagRead) -> Result<Option<Live>> {
    // The lifecycle policy needs only the name: read it alongside; the tags need the ARN.
    let (out, lifecycle) = tokio::join!(
        c.ecr()
            .describe_repositories()
            .repository_names(name)
            .send(),
        c.ecr().get_lifecycle_policy().repository_name(name).send(),
    );
    let out = match out {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_repository_not_found_exception()) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e).ctx(format!("reading repository {name}")),
    };
    let Some(repo) = out.repositories().first() else {
        return Ok(None);
    };
    let arn = repo.repository_arn().unwrap_or_default().to_string();
    let uri = repo.repository_uri().unwrap_or_default().to_string();
    let scan = repo
        .image_scanning_configuration()
        .map(|s| s.scan_on_push())
        .unwrap_or(false);
    let tags = match tags {
        TagRead::Skip => None,
        TagRead::Read => Some(
            c.ecr()
                .list_tags_for_resource()
                .resource_arn(&arn)
                .send()
                .await
                .ctx(format!("reading tags of repository {name}"))?
                .tags()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect(),
        ),
    };
    let keep = match lifecycle {
        Ok(out) => out
            .lifecycle_policy_text()
            .map(parse_keep)
            .unwrap_or(Value::Null),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_lifecycle_policy_not_found_exception()) =>
        {
            Value::Null
        }
        Err(e) => return Err(e).ctx(format!("reading lifecycle policy of repository {name}")),
    };
    Ok(Some(Live {
        id: uri,
        attrs: Attrs::from([
            ("scan_on_push".into(), json!(scan)),
            ("keep_images".into(), keep),
        ]),
        tags,
    }))
}

pub async fn create(c: &Clients, spec: &Spec, tags: &BTreeMap<String, String>) -> Result<Handle> {
    let tags = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Result<Vec<_>, _>>()?;
    let out = c
        .ecr()
        .create_repository()
        .repository_name(&spec.name)
        .image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(spec.scan_on_push)
                .build(),
        )
        .set_tags(Some(tags))
        .send()
        .await
        .ctx(format!("creating repository {}", spec.name))?;
    let uri = out
        .repository()
        .and_then(|r| r.repository_uri())
        .unwrap_or_default()
        .to_string();
    put_lifecycle(c, spec).await?;
    Ok(Handle {
        kind: Kind::Repository,
        name: spec.name.clone(),
        id: uri,
        extra: Extra::default(),
    })
}

pub async fn update(c: &Clients, spec: &Spec, live: &Live, changed: &[String]) -> Result<Handle> {
    for attr in changed {
        match attr.as_str() {
            "scan_on_push" => {
                c.ecr()
                    .put_image_scanning_configuration()
                    .repository_name(&spec.name)
                    .image_scanning_configuration(
                        ImageScanningConfiguration::builder()
                            .scan_on_push(spec.scan_on_push)
                            .build(),
                    )
                    .send()
                    .await
                    .ctx(format!("setting scan on push of repository {}", spec.name))?;
            }
            "keep_images" => put_lifecycle(c, spec).await?,
            _ => {}
        }
    }
    Ok(Handle {
        kind: Kind::Repository,
        name: spec.name.clone(),
        id: live.id.clone(),
        extra: Extra::default(),
    })
}

async fn put_lifecycle(c: &Clients, spec: &Spec) -> Result<()> {
    match spec.keep_images {
        Some(keep) => {
            c.ecr()
                .put_lifecycle_policy()
                .repository_name(&spec.name)
                .lifecycle_policy_text(lifecycle_policy(keep))
                .send()
                .await
                .ctx(format!(
                    "setting lifecycle policy of repository {}",
                    spec.name
                ))?;
        }
        None => match c
            .ecr()
            .delete_lifecycle_policy()
            .repository_name(&spec.name)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_lifecycle_policy_not_found_exception()) => {}
            Err(e) => {
                return Err(e).ctx(format!(
                    "removing lifecycle policy of repository {}",
                    spec.name
                ))
            }
        },
    }
    Ok(())
}

/// Does the repository hold any image?
pub async fn is_empty(c: &Clients, name: &str) -> Result<bool> {
    match c
        .ecr()
        .list_images()
        .repository_name(name)
        .max_results(1)
        .send()
        .await
    {
        Ok(out) => Ok(out.image_ids().is_empty()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_repository_not_found_exception()) =>
        {
            Ok(true)
        }
        Err(e) => Err(e).ctx(format!("listing images of repository {name}")),
    }
}

/// Deletes the repository with its images (`protect` was checked before).
pub async fn delete(c: &Clients, name: &str) -> Result<()> {
    match c
        .ecr()
        .delete_repository()
        .repository_name(name)
        .force(true)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_repository_not_found_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(e).ctx(format!("deleting repository {name}")),
    }
}

/// Adds `tags` to repository `name` (what `import` does to adopt it).
pub async fn tag(c: &Clients, name: &str, tags: &BTreeMap<String, String>) -> Result<()> {
    let out = c
        .ecr()
        .describe_repositories()
        .repository_names(name)
        .send()
        .await
        .ctx(format!("reading repository {name}"))?;
    let arn = out
        .repositories()
        .first()
        .and_then(|r| r.repository_arn())
        .ok_or_else(|| anyhow::anyhow!("repository {name} has no ARN"))?
        .to_string();
    let tags = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    c.ecr()
        .tag_resource()
        .resource_arn(&arn)
        .set_tags(Some(tags))
        .send()
        .await
        .ctx(format!("tagging repository {name}"))?;
    Ok(())
}

/// Bytes of every image in repository `name` (what ECR bills); 0 when it does not exist.
pub async fn image_bytes(c: &Clients, name: &str) -> Result<u64> {
    let mut pages = c
        .ecr()
        .describe_images()
        .repository_name(name)
        .into_paginator()
        .send();
    let mut total = 0u64;
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_repository_not_found_exception()) =>
            {
                return Ok(0)
            }
            Err(e) => return Err(e).ctx(format!("listing images of repository {name}")),
        };
        total += page
            .image_details()
            .iter()
            .map(|d| d.image_size_in_bytes().unwrap_or(0).max(0) as u64)
            .sum::<u64>();
    }
    Ok(total)
}
