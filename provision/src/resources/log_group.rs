//! CloudWatch log group of the stack's jobs; retention updated in place.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use serde_json::json;

use super::{Attrs, Extra, Handle, Kind, Live, SdkContext, TagRead};
use crate::aws::Clients;
use crate::stack::Stack;

#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub retention_days: Option<u32>,
}

impl Spec {
    pub fn desired(stack: &Stack) -> Spec {
        Spec {
            name: stack.log_group_name(),
            retention_days: stack.logs.retention_days,
        }
    }

    pub fn attributes(&self) -> Attrs {
        Attrs::from([("retention_days".into(), json!(self.retention_days))])
    }
}

pub async fn read(c: &Clients, name: &str, tags: TagRead) -> Result<Option<Live>> {
    let out = c
        .logs()
        .describe_log_groups()
        .log_group_name_prefix(name)
        .send()
        .await
        .ctx(format!("reading log group {name}"))?;
    let Some(group) = out
        .log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some(name))
    else {
        return Ok(None);
    };
    let arn = match group.log_group_arn() {
        Some(arn) => arn.to_string(),
        None => group
            .arn()
            .unwrap_or_default()
            .trim_end_matches(":*")
            .to_string(),
    };
    let tags = match tags {
        TagRead::Skip => None,
        TagRead::Read => Some(
            c.logs()
                .list_tags_for_resource()
                .resource_arn(&arn)
                .send()
                .await
                .ctx(format!("reading tags of log group {name}"))?
                .tags()
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        ),
    };
    Ok(Some(Live {
        id: name.to_string(),
        attrs: Attrs::from([("retention_days".into(), json!(group.retention_in_days()))]),
        tags,
    }))
}

pub async fn create(c: &Clients, spec: &Spec, tags: &BTreeMap<String, String>) -> Result<Handle> {
    let tags: HashMap<String, String> = tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    match c
        .logs()
        .create_log_group()
        .log_group_name(&spec.name)
        .set_tags(Some(tags))
        .send()
        .await
    {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_already_exists_exception()) => {}
        Err(e) => return Err(e).ctx(format!("creating log group {}", spec.name)),
    }
    update(c, spec).await
}

pub async fn update(c: &Clients, spec: &Spec) -> Result<Handle> {
    match spec.retention_days {
        Some(days) => {
            c.logs()
                .put_retention_policy()
                .log_group_name(&spec.name)
                .retention_in_days(days as i32)
                .send()
                .await
                .ctx(format!("setting retention of log group {}", spec.name))?;
        }
        None => {
            c.logs()
                .delete_retention_policy()
                .log_group_name(&spec.name)
                .send()
                .await
                .ctx(format!("removing retention of log group {}", spec.name))?;
        }
    }
    Ok(Handle {
        kind: Kind::LogGroup,
        name: spec.name.clone(),
        id: spec.name.clone(),
        extra: Extra::default(),
    })
}

pub async fn delete(c: &Clients, name: &str) -> Result<()> {
    match c
        .logs()
        .delete_log_group()
        .log_group_name(name)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(e).ctx(format!("deleting log group {name}")),
    }
}

/// Adds `tags` to log group `name` (what `import` does to adopt it).
pub async fn tag(c: &Clients, name: &str, tags: &BTreeMap<String, String>) -> Result<()> {
    let out = c
        .logs()
        .describe_log_groups()
        .log_group_name_prefix(name)
        .send()
        .await
        .ctx(format!("reading log group {name}"))?;
    let group = out
        .log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some(name))
        .ok_or_else(|| anyhow::anyhow!("log group {name} does not exist"))?;
    // TagResource wants the ARN without the `:*` that `arn` carries.
    let arn = group
        .log_group_arn()
        .or(group.arn())
        .unwrap_or_default()
        .trim_end_matches(":*")
        .to_string();
    c.logs()
        .tag_resource()
        .resource_arn(&arn)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        ))
        .send()
        .await
        .ctx(format!("tagging log group {name}"))?;
    Ok(())
}
