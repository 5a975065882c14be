//! S3 gateway endpoint on the VPC's route tables: Batch instances reach S3 without NAT
//! charges. Route tables are updated in place; another VPC or service is a replacement.

use std::collections::BTreeMap;

use anyhow::Result;
use aws_sdk_ec2::types::{
    Filter, ResourceType, Tag, TagSpecification, VpcEndpoint, VpcEndpointType,
};
use serde_json::json;

use super::error_codes::Ec2Code;
use super::{Attrs, Extra, Handle, Kind, Live, SdkContext};
use crate::aws::Clients;
use crate::engine::Facts;
use crate::stack::Stack;

pub const REPLACE_ON: &[&str] = &["vpc_id", "service_name"];

#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub vpc_id: String,
    /// `com.amazonaws.{region}.s3`
    pub service_name: String,
    pub route_table_ids: Vec<String>,
}

impl Spec {
    /// The stack's endpoint: S3 of its region, on the route tables no other endpoint serves.
    pub fn desired(stack: &Stack, facts: &Facts) -> Spec {
        Spec {
            vpc_id: facts.vpc_id.clone(),
            service_name: format!("com.amazonaws.{}.s3", stack.region),
            route_table_ids: facts.route_tables.clone(),
        }
    }

    pub fn attributes(&self) -> Attrs {
        Attrs::from([
            ("vpc_id".into(), json!(self.vpc_id)),
            ("service_name".into(), json!(self.service_name)),
            (
                "route_table_ids".into(),
                super::string_set(self.route_table_ids.iter().cloned()),
            ),
        ])
    }
}

/// EC2 tags for a create call's `TagSpecifications`.
pub fn tag_spec(resource: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

pub fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

fn gone(endpoint: &VpcEndpoint) -> bool {
    // Deleted endpoints stay listed for a while (AWS and moto alike).
    // The API documents capitalized states; endpoints answer lower case. Compare either.
    let state = endpoint
        .state()
        .map(|s| s.as_str().to_ascii_lowercase())
        .unwrap_or_default();
    matches!(
        state.as_str(),
        "deleted" | "deleting" | "failed" | "rejected" | "expired"
    )
}

fn live(endpoint: &VpcEndpoint) -> Live {
    Live {
        id: endpoint.vpc_endpoint_id().unwrap_or_default().to_string(),
        attrs: Attrs::from([
            ("vpc_id".into(), json!(endpoint.vpc_id())),
            ("service_name".into(), json!(endpoint.service_name())),
            (
                "route_table_ids".into(),
                super::string_set(endpoint.route_table_ids().iter().cloned()),
            ),
        ]),
        tags: Some(
            endpoint
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

/// The stack's endpoint: found by VPC, service and the stack's tags (a VPC may hold endpoints
/// that other people own).
pub async fn read(
    c: &Clients,
    vpc_id: &str,
    service: &str,
    tags: &BTreeMap<String, String>,
) -> Result<Option<Live>> {
    let mut req = c
        .ec2()
        .describe_vpc_endpoints()
        .filters(filter("vpc-id", vpc_id))
        .filters(filter("service-name", service));
    for (k, v) in tags {
        req = req.filters(filter(&format!("tag:{k}"), v));
    }
    let out = req
        .send()
        .await
        .ctx(format!("reading the S3 endpoint of {vpc_id}"))?;
    Ok(out.vpc_endpoints().iter().find(|e| !gone(e)).map(live))
}

/// The stack's endpoint among a VPC's endpoints already listed: the same choice as [`read`].
pub fn find(
    endpoints: &[VpcEndpoint],
    service: &str,
    tags: &BTreeMap<String, String>,
) -> Option<Live> {
    endpoints
        .iter()
        .filter(|e| e.service_name() == Some(service))
        .filter(|e| {
            tags.iter().all(|(k, v)| {
                e.tags()
                    .iter()
                    .any(|t| t.key() == Some(k) && t.value() == Some(v))
            })
        })
        .find(|e| !gone(e))
        .map(live)
}

pub async fn read_id(c: &Clients, id: &str) -> Result<Option<Live>> {
    let out = match c
        .ec2()
        .describe_vpc_endpoints()
        .vpc_endpoint_ids(id)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if Ec2Code::VpcEndpointNotFound.matches(&e) => return Ok(None),
        Err(e) => return Err(e).ctx(format!("reading VPC endpoint {id}")),
    };
    Ok(out.vpc_endpoints().iter().find(|e| !gone(e)).map(live))
}

pub async fn create(c: &Clients, spec: &Spec, tags: &BTreeMap<String, String>) -> Result<Handle> {
    let out = c
        .ec2()
        .create_vpc_endpoint()
        .vpc_endpoint_type(VpcEndpointType::Gateway)
        .vpc_id(&spec.vpc_id)
        .service_name(&spec.service_name)
        .set_route_table_ids(Some(spec.route_table_ids.clone()))
        .tag_specifications(tag_spec(ResourceType::VpcEndpoint, tags))
        .send()
        .await
        .ctx(format!("creating the S3 endpoint of {}", spec.vpc_id))?;
    let id = out
        .vpc_endpoint()
        .and_then(|e| e.vpc_endpoint_id())
        .unwrap_or_default()
        .to_string();
    Ok(handle(spec, id))
}

fn handle(spec: &Spec, id: String) -> Handle {
    Handle {
        kind: Kind::VpcEndpoint,
        name: spec.service_name.clone(),
        id,
        extra: Extra {
            vpc_id: Some(spec.vpc_id.clone()),
            ..Extra::default()
        },
    }
}

pub async fn update(c: &Clients, spec: &Spec, live: &Live) -> Result<Handle> {
    let current: Vec<String> =
        serde_json::from_value(live.attrs["route_table_ids"].clone()).unwrap_or_default();
    let add: Vec<String> = spec
        .route_table_ids
        .iter()
        .filter(|r| !current.contains(r))
        .cloned()
        .collect();
    let remove: Vec<String> = current
        .iter()
        .filter(|r| !spec.route_table_ids.contains(r))
        .cloned()
        .collect();
    if !add.is_empty() || !remove.is_empty() {
        c.ec2()
            .modify_vpc_endpoint()
            .vpc_endpoint_id(&live.id)
            .set_add_route_table_ids((!add.is_empty()).then_some(add))
            .set_remove_route_table_ids((!remove.is_empty()).then_some(remove))
            .send()
            .await
            .ctx(format!("updating the route tables of endpoint {}", live.id))?;
    }
    Ok(handle(spec, live.id.clone()))
}

pub async fn delete(c: &Clients, handle: &Handle) -> Result<()> {
    if read_id(c, &handle.id).await?.is_none() {
        return Ok(());
    }
    let out = c
        .ec2()
        .delete_vpc_endpoints()
        .vpc_endpoint_ids(&handle.id)
        .send()
        .await
        .ctx(format!("deleting VPC endpoint {}", handle.id))?;
    if let Some(failed) = out.unsuccessful().first() {
        let err = failed.error();
        anyhow::bail!(
            "deleting VPC endpoint {}: {} {}",
            handle.id,
            err.and_then(|e| e.code()).unwrap_or_default(),
            err.and_then(|e| e.message()).unwrap_or_default()
        );
    }
    Ok(())
}
