//! EC2 launch template giving a compute environment's instances a gp3 root volume of
//! `root_volume_gb`. It belongs to its compute environment: same name (and replacement
//! suffix), created just before it, deleted just after it. Batch pins the version it was
//! created with, so a template is never changed in place; a new size is a new environment.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use aws_sdk_ec2::operation::describe_launch_template_versions::DescribeLaunchTemplateVersionsOutput;
use aws_sdk_ec2::types::{
    LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
    RequestLaunchTemplateData, ResourceType, VolumeType,
};

use super::error_codes::Ec2Code;
use super::vpc_endpoint::tag_spec;
use super::SdkContext;
use crate::aws::Clients;

/// Root device of the ECS-optimized Amazon Linux 2023 AMIs (CPU and NVIDIA).
const ROOT_DEVICE: &str = "/dev/xvda";

/// A live template: its id and root volume size.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub id: String,
    pub root_volume_gb: Option<i32>,
    pub tags: BTreeMap<String, String>,
}

pub async fn read(c: &Clients, name: &str) -> Result<Option<Template>> {
    let out = match c
        .ec2()
        .describe_launch_templates()
        .launch_template_names(name)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if Ec2Code::LaunchTemplateNotFound.matches(&e) => return Ok(None),
        Err(e) => return Err(e).ctx(format!("reading launch template {name}")),
    };
    let Some(template) = out.launch_templates().first() else {
        return Ok(None);
    };
    let id = template
        .launch_template_id()
        .unwrap_or_default()
        .to_string();
    let tags = template
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let versions = c
        .ec2()
        .describe_launch_template_versions()
        .launch_template_id(&id)
        .versions("$Default")
        .send()
        .await
        .ctx(format!("reading launch template {name}"))?;
    Ok(Some(Template {
        id,
        root_volume_gb: root_volume(&versions),
        tags,
    }))
}

/// The root volume size of the template's default version: `None` for no such template.
/// One call by name, for the plan, which needs neither the id nor the tags (the template
/// belongs to its compute environment, whose tags tell whose it is).
pub async fn root_volume_gb(c: &Clients, name: &str) -> Result<Option<Option<i32>>> {
    match c
        .ec2()
        .describe_launch_template_versions()
        .launch_template_name(name)
        .versions("$Default")
        .send()
        .await
    {
        Ok(out) => Ok(Some(root_volume(&out))),
        Err(e) if Ec2Code::LaunchTemplateNotFound.matches(&e) => Ok(None),
        Err(e) => Err(e).ctx(format!("reading launch template {name}")),
    }
}

fn root_volume(out: &DescribeLaunchTemplateVersionsOutput) -> Option<i32> {
    out.launch_template_versions()
        .first()
        .and_then(|v| v.launch_template_data())
        .and_then(|d| {
            d.block_device_mappings()
                .iter()
                .find(|m| m.device_name() == Some(ROOT_DEVICE))
        })
        .and_then(|m| m.ebs())
        .and_then(|e| e.volume_size())
}

/// Creates the template, or adopts one of that name left by a crashed apply when it has the
/// right size. The create comes first: a name already taken is the rare case, and asking first
/// would cost every new compute environment a round trip.
pub async fn ensure(
    c: &Clients,
    name: &str,
    root_volume_gb: u32,
    tags: &BTreeMap<String, String>,
) -> Result<String> {
    if let Some(id) = create(c, name, root_volume_gb, tags).await? {
        return Ok(id);
    }
    if let Some(existing) = read(c, name).await? {
        if existing.root_volume_gb == Some(root_volume_gb as i32) {
            return Ok(existing.id);
        }
        delete(c, name).await?;
    }
    create(c, name, root_volume_gb, tags)
        .await?
        .with_context(|| format!("launch template {name} was created again while replacing it"))
}

/// Creates the template; `None` when the name is taken.
async fn create(
    c: &Clients,
    name: &str,
    root_volume_gb: u32,
    tags: &BTreeMap<String, String>,
) -> Result<Option<String>> {
    let data = RequestLaunchTemplateData::builder()
        .block_device_mappings(
            LaunchTemplateBlockDeviceMappingRequest::builder()
                .device_name(ROOT_DEVICE)
                .ebs(
                    LaunchTemplateEbsBlockDeviceRequest::builder()
                        .volume_size(root_volume_gb as i32)
                        .volume_type(VolumeType::Gp3)
                        .encrypted(true)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        )
        .build();
    let out = match c
        .ec2()
        .create_launch_template()
        .launch_template_name(name)
        .launch_template_data(data)
        .tag_specifications(tag_spec(ResourceType::LaunchTemplate, tags))
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if Ec2Code::LaunchTemplateExists.matches(&e) => return Ok(None),
        Err(e) => return Err(e).ctx(format!("creating launch template {name}")),
    };
    Ok(Some(
        out.launch_template()
            .and_then(|t| t.launch_template_id())
            .unwrap_or_default()
            .to_string(),
    ))
}

pub async fn delete(c: &Clients, name: &str) -> Result<()> {
    match c
        .ec2()
        .delete_launch_template()
        .launch_template_name(name)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if Ec2Code::LaunchTemplateNotFound.matches(&e) => Ok(()),
        Err(e) => Err(e).ctx(format!("deleting launch template {name}")),
    }
}
