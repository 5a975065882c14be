//! Batch job definition. AWS never changes a revision: any change registers a new revision and
//! deregisters the old ones, so exactly one revision of each name is ACTIVE.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use aws_sdk_batch::types::{
    ContainerProperties, EvaluateOnExit, JobDefinition, JobDefinitionType, JobTimeout,
    KeyValuePair, LogConfiguration, LogDriver, PlatformCapability, ResourceRequirement,
    ResourceType, RetryAction, RetryStrategy, Secret,
};
use serde_json::{json, Value};

use super::iam::Role;
use super::{Attrs, Extra, Handle, Kind, Live, SdkContext};
use crate::aws::Clients;
use crate::engine::{Facts, Refs};
use crate::stack::RetryRule;
use crate::stack::Stack;

#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub gpus: u32,
    pub timeout_s: Option<u32>,
    pub attempts: u32,
    pub rules: Vec<RetryRule>,
    /// Injected and user variables; empty values are dropped (Batch drops them too).
    pub environment: BTreeMap<String, String>,
    /// Variable → secret ARN.
    pub secrets: BTreeMap<String, String>,
    pub log_group: String,
    pub region: String,
    pub stream_prefix: String,
    pub job_role: String,
    pub execution_role: String,
}

fn rule_json(
    on_status_reason: Option<&str>,
    on_reason: Option<&str>,
    on_exit_code: Option<&str>,
    action: &str,
) -> Value {
    json!({
        "on_status_reason": on_status_reason,
        "on_reason": on_reason,
        "on_exit_code": on_exit_code,
        // Batch (and moto) may answer the action in another case than it was sent.
        "action": action.to_uppercase(),
    })
}

impl Spec {
    /// The stack's job definition `key` (a job, or one of its matrix values): the stack's
    /// environment injected, secrets by ARN, roles by id from `refs`.
    pub fn desired(stack: &Stack, facts: &Facts, refs: &Refs, key: &str) -> Result<Spec> {
        let defs = stack.job_definitions();
        let def = defs
            .iter()
            .find(|d| d.key == key)
            .context("job definition vanished from the stack")?;
        let mut environment = def.env.clone();
        environment.extend(stack.injected_env(&facts.account));
        let mut secrets = BTreeMap::new();
        for (var, secret) in &def.job.secrets {
            let (arn, _) = facts
                .secrets
                .get(secret)
                .with_context(|| format!("secret {secret} was not resolved"))?;
            secrets.insert(var.clone(), arn.clone());
        }
        Ok(Spec {
            name: def.name.clone(),
            image: stack.pinned_image_uri(&def.job.image, &facts.account, &facts.image_digests),
            command: def.command.clone(),
            vcpus: def.job.vcpus,
            memory_mib: def.job.memory_mib,
            gpus: def.job.gpus,
            timeout_s: def.job.timeout_s,
            attempts: def.job.retry.attempts,
            rules: def.job.retry.rules.clone(),
            environment,
            secrets,
            log_group: stack.log_group_name(),
            region: stack.region.clone(),
            stream_prefix: def.key.clone(),
            job_role: refs.id(&Role::Job.address()),
            execution_role: refs.id(&Role::Execution.address()),
        })
    }

    fn env(&self) -> BTreeMap<&String, &String> {
        self.environment
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }

    pub fn attributes(&self) -> Attrs {
        Attrs::from([
            ("image".into(), json!(self.image)),
            ("command".into(), json!(self.command)),
            ("vcpus".into(), json!(self.vcpus)),
            ("memory_mib".into(), json!(self.memory_mib)),
            ("gpus".into(), json!(self.gpus)),
            ("timeout_s".into(), json!(self.timeout_s)),
            ("retry_attempts".into(), json!(self.attempts)),
            (
                "retry_rules".into(),
                Value::Array(
                    self.rules
                        .iter()
                        .map(|r| {
                            rule_json(
                                r.on_status_reason.as_deref(),
                                r.on_reason.as_deref(),
                                r.on_exit_code.as_deref(),
                                r.action.as_api(),
                            )
                        })
                        .collect(),
                ),
            ),
            ("environment".into(), json!(self.env())),
            ("secrets".into(), json!(self.secrets)),
            ("log_group".into(), json!(self.log_group)),
            ("log_stream_prefix".into(), json!(self.stream_prefix)),
            ("job_role".into(), json!(self.job_role)),
            ("execution_role".into(), json!(self.execution_role)),
            ("active_revisions".into(), json!(1)),
        ])
    }
}

/// Every ACTIVE revision of `name`, newest first.
async fn active(c: &Clients, name: &str) -> Result<Vec<JobDefinition>> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .batch()
            .describe_job_definitions()
            .job_definition_name(name)
            .status("ACTIVE")
            .set_next_token(token)
            .send()
            .await
            .ctx(format!("reading job definition {name}"))?;
        out.extend(
            page.job_definitions()
                .iter()
                .filter(|d| d.job_definition_name() == Some(name) && d.status() == Some("ACTIVE"))
                .cloned(),
        );
        token = page.next_token().map(String::from);
        if token.is_none() {
            break;
        }
    }
    out.sort_by_key(|d| std::cmp::Reverse(d.revision().unwrap_or(0)));
    Ok(out)
}

pub async fn read(c: &Clients, name: &str) -> Result<Option<Live>> {
    let revisions = active(c, name).await?;
    let Some(def) = revisions.first() else {
        return Ok(None);
    };
    let empty = ContainerProperties::builder().build();
    let cp = def.container_properties().unwrap_or(&empty);
    let requirement = |t: ResourceType| {
        cp.resource_requirements()
            .iter()
            .find(|r| r.r#type() == Some(&t))
            .and_then(|r| r.value())
            .and_then(|v| v.parse::<u32>().ok())
    };
    let log_options = cp
        .log_configuration()
        .and_then(|l| l.options())
        .cloned()
        .unwrap_or_default();
    let environment: BTreeMap<String, String> = cp
        .environment()
        .iter()
        .map(|kv| {
            (
                kv.name().unwrap_or_default().to_string(),
                kv.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let secrets: BTreeMap<String, String> = cp
        .secrets()
        .iter()
        .map(|s| {
            (
                s.name().unwrap_or_default().to_string(),
                s.value_from().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let rules: Vec<Value> = def
        .retry_strategy()
        .map(|r| r.evaluate_on_exit())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            rule_json(
                e.on_status_reason(),
                e.on_reason(),
                e.on_exit_code(),
                e.action().map(|a| a.as_str()).unwrap_or(""),
            )
        })
        .collect();
    let attrs = Attrs::from([
        ("image".into(), json!(cp.image())),
        ("command".into(), json!(cp.command())),
        ("vcpus".into(), json!(requirement(ResourceType::Vcpu))),
        (
            "memory_mib".into(),
            json!(requirement(ResourceType::Memory)),
        ),
        (
            "gpus".into(),
            json!(requirement(ResourceType::Gpu).unwrap_or(0)),
        ),
        (
            "timeout_s".into(),
            json!(def.timeout().and_then(|t| t.attempt_duration_seconds())),
        ),
        (
            "retry_attempts".into(),
            json!(def.retry_strategy().and_then(|r| r.attempts())),
        ),
        ("retry_rules".into(), Value::Array(rules)),
        ("environment".into(), json!(environment)),
        ("secrets".into(), json!(secrets)),
        ("log_group".into(), json!(log_options.get("awslogs-group"))),
        (
            "log_stream_prefix".into(),
            json!(log_options.get("awslogs-stream-prefix")),
        ),
        ("job_role".into(), json!(cp.job_role_arn())),
        ("execution_role".into(), json!(cp.execution_role_arn())),
        ("active_revisions".into(), json!(revisions.len())),
    ]);
    Ok(Some(Live {
        id: def.job_definition_arn().unwrap_or_default().to_string(),
        attrs,
        tags: Some(
            def.tags()
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        ),
    }))
}

/// Registers a revision from the spec, then deregisters every other ACTIVE revision; with
/// `first`, the plan's read found none, so there is none to list.
pub async fn register(
    c: &Clients,
    spec: &Spec,
    tags: &BTreeMap<String, String>,
    first: bool,
) -> Result<Handle> {
    let mut requirements = vec![
        ResourceRequirement::builder()
            .r#type(ResourceType::Vcpu)
            .value(spec.vcpus.to_string())
            .build(),
        ResourceRequirement::builder()
            .r#type(ResourceType::Memory)
            .value(spec.memory_mib.to_string())
            .build(),
    ];
    if spec.gpus > 0 {
        requirements.push(
            ResourceRequirement::builder()
                .r#type(ResourceType::Gpu)
                .value(spec.gpus.to_string())
                .build(),
        );
    }
    let container = ContainerProperties::builder()
        .image(&spec.image)
        .set_command(Some(spec.command.clone()))
        .set_resource_requirements(Some(requirements))
        .set_environment(Some(
            spec.env()
                .into_iter()
                .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
                .collect(),
        ))
        .set_secrets(Some(
            spec.secrets
                .iter()
                .map(|(k, v)| Secret::builder().name(k).value_from(v).build())
                .collect(),
        ))
        .log_configuration(
            LogConfiguration::builder()
                .log_driver(LogDriver::Awslogs)
                .options("awslogs-group", &spec.log_group)
                .options("awslogs-region", &spec.region)
                .options("awslogs-stream-prefix", &spec.stream_prefix)
                .build(),
        )
        .job_role_arn(&spec.job_role)
        .execution_role_arn(&spec.execution_role)
        .build();
    let retry = RetryStrategy::builder()
        .attempts(spec.attempts as i32)
        .set_evaluate_on_exit(Some(
            spec.rules
                .iter()
                .map(|r| {
                    EvaluateOnExit::builder()
                        .set_on_status_reason(r.on_status_reason.clone())
                        .set_on_reason(r.on_reason.clone())
                        .set_on_exit_code(r.on_exit_code.clone())
                        .action(RetryAction::from(r.action.as_api()))
                        .build()
                })
                .collect(),
        ))
        .build();
    let out = c
        .batch()
        .register_job_definition()
        .job_definition_name(&spec.name)
        .r#type(JobDefinitionType::Container)
        .platform_capabilities(PlatformCapability::Ec2)
        .container_properties(container)
        .retry_strategy(retry)
        .set_timeout(spec.timeout_s.map(|t| {
            JobTimeout::builder()
                .attempt_duration_seconds(t as i32)
                .build()
        }))
        .propagate_tags(true)
        .set_tags(Some(
            tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ))
        .send()
        .await
        .ctx(format!("registering job definition {}", spec.name))?;
    let arn = out.job_definition_arn().unwrap_or_default().to_string();
    let others = if first {
        vec![]
    } else {
        active(c, &spec.name).await?
    };
    for old in others {
        let old_arn = old.job_definition_arn().unwrap_or_default();
        if old_arn != arn {
            c.batch()
                .deregister_job_definition()
                .job_definition(old_arn)
                .send()
                .await
                .ctx(format!("deregistering {old_arn}"))?;
        }
    }
    Ok(Handle {
        kind: Kind::JobDefinition,
        name: spec.name.clone(),
        id: arn,
        extra: Extra::default(),
    })
}

/// [`delete`], told what the plan's read found: when that was one ACTIVE revision (what the
/// tool leaves), it is deregistered without reading the revisions again; otherwise, or when
/// Batch refuses, [`delete`] reads them and deregisters each.
pub async fn delete_known(c: &Clients, name: &str, live: &Live) -> Result<()> {
    if live.attrs.get("active_revisions") == Some(&json!(1)) && !live.id.is_empty() {
        let deregistered = c
            .batch()
            .deregister_job_definition()
            .job_definition(&live.id)
            .send()
            .await;
        if deregistered.is_ok() {
            return Ok(());
        }
    }
    delete(c, name).await
}

/// Deregisters every ACTIVE revision.
pub async fn delete(c: &Clients, name: &str) -> Result<()> {
    for def in active(c, name).await? {
        let arn = def.job_definition_arn().unwrap_or_default();
        c.batch()
            .deregister_job_definition()
            .job_definition(arn)
            .send()
            .await
            .ctx(format!("deregistering {arn}"))?;
    }
    Ok(())
}
