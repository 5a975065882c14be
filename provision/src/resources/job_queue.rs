//! Batch job queue: priority, state and the ordered compute environments, all in place.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use aws_sdk_batch::types::{CeStatus, ComputeEnvironmentOrder, JobQueueDetail, JqState, JqStatus};
use serde_json::json;

use super::{wait_for, Address, Attrs, Extra, Handle, Kind, Live, Progress, SdkContext};
use crate::aws::Clients;
use crate::engine::Refs;
use crate::stack::Stack;
use crate::stack::State;

const WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub priority: u32,
    pub state: State,
    /// Compute environment ARNs, order = preference.
    pub compute: Vec<String>,
    /// Those this apply saw VALID already (it created or updated them and waited): no need
    /// to ask again before the queue names them.
    pub known_valid: Vec<String>,
}

impl Spec {
    /// The stack's queue `key`, on its compute environments in order (ids from `refs`).
    pub fn desired(stack: &Stack, refs: &Refs, key: &str) -> Spec {
        let q = &stack.queues[key];
        Spec {
            name: stack.queue_name(key),
            priority: q.priority,
            state: q.state,
            compute: q
                .compute
                .iter()
                .map(|c| refs.id(&Address::new(Kind::ComputeEnvironment, c)))
                .collect(),
            known_valid: Vec::new(),
        }
    }

    pub fn attributes(&self) -> Attrs {
        Attrs::from([
            ("priority".into(), json!(self.priority)),
            ("state".into(), json!(self.state.as_api())),
            ("compute".into(), json!(self.compute)),
        ])
    }

    fn order(&self) -> Vec<ComputeEnvironmentOrder> {
        self.compute
            .iter()
            .enumerate()
            .map(|(i, arn)| {
                ComputeEnvironmentOrder::builder()
                    .order(i as i32 + 1)
                    .compute_environment(arn)
                    .build()
            })
            .collect()
    }
}

async fn describe(c: &Clients, name: &str) -> Result<Option<JobQueueDetail>> {
    let out = c
        .batch()
        .describe_job_queues()
        .job_queues(name)
        .send()
        .await
        .ctx(format!("reading job queue {name}"))?;
    Ok(out
        .job_queues()
        .iter()
        .find(|q| q.job_queue_name() == Some(name) && q.status() != Some(&JqStatus::Deleted))
        .cloned())
}

pub async fn read(c: &Clients, name: &str) -> Result<Option<Live>> {
    let Some(queue) = describe(c, name).await? else {
        return Ok(None);
    };
    let mut order: Vec<(i32, String)> = queue
        .compute_environment_order()
        .iter()
        .map(|o| {
            (
                o.order().unwrap_or(0),
                o.compute_environment().unwrap_or_default().to_string(),
            )
        })
        .collect();
    order.sort();
    let compute: Vec<String> = order.into_iter().map(|(_, arn)| arn).collect();
    Ok(Some(Live {
        id: queue.job_queue_arn().unwrap_or_default().to_string(),
        attrs: Attrs::from([
            ("priority".into(), json!(queue.priority())),
            ("state".into(), json!(queue.state().map(|s| s.as_str()))),
            ("compute".into(), json!(compute)),
        ]),
        tags: Some(
            queue
                .tags()
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        ),
    }))
}

/// Waits until every environment the queue will name is VALID: Batch refuses a queue on an
/// environment still CREATING or UPDATING (one adopted after an interrupted apply may be).
async fn wait_environments(c: &Clients, spec: &Spec, progress: Progress<'_>) -> Result<()> {
    let unknown: Vec<String> = spec
        .compute
        .iter()
        .filter(|arn| !spec.known_valid.contains(arn))
        .cloned()
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    wait_for(
        &format!("the compute environments of job queue {}", spec.name),
        WAIT,
        progress,
        || async {
            let out = c
                .batch()
                .describe_compute_environments()
                .set_compute_environments(Some(unknown.clone()))
                .send()
                .await
                .ctx(format!(
                    "reading the compute environments of job queue {}",
                    spec.name
                ))?;
            let mut pending = Vec::new();
            for arn in &unknown {
                let env = out
                    .compute_environments()
                    .iter()
                    .find(|e| e.compute_environment_arn() == Some(arn.as_str()));
                match env.and_then(|e| e.status()) {
                    Some(CeStatus::Valid) => {}
                    Some(CeStatus::Invalid) => bail!(
                        "compute environment {arn} is INVALID: {}",
                        env.and_then(|e| e.status_reason())
                            .unwrap_or("no reason given")
                    ),
                    Some(other) => pending.push(format!(
                        "{} {}",
                        arn.rsplit('/').next().unwrap_or(arn),
                        other.as_str()
                    )),
                    None => bail!("compute environment {arn} does not exist"),
                }
            }
            Ok(if pending.is_empty() {
                Ok(())
            } else {
                Err(pending.join(", "))
            })
        },
    )
    .await
}

pub async fn create(
    c: &Clients,
    spec: &Spec,
    tags: &BTreeMap<String, String>,
    progress: Progress<'_>,
) -> Result<Handle> {
    wait_environments(c, spec, progress).await?;
    let out = c
        .batch()
        .create_job_queue()
        .job_queue_name(&spec.name)
        .priority(spec.priority as i32)
        .state(JqState::from(spec.state.as_api()))
        .set_compute_environment_order(Some(spec.order()))
        .set_tags(Some(
            tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ))
        .send()
        .await
        .ctx(format!("creating job queue {}", spec.name))?;
    wait_valid(c, &spec.name, progress).await?;
    Ok(Handle {
        kind: Kind::JobQueue,
        name: spec.name.clone(),
        id: out.job_queue_arn().unwrap_or_default().to_string(),
        extra: Extra::default(),
    })
}

pub async fn update(
    c: &Clients,
    spec: &Spec,
    live: &Live,
    progress: Progress<'_>,
) -> Result<Handle> {
    wait_environments(c, spec, progress).await?;
    // A queue still UPDATING refuses another update.
    wait_valid(c, &spec.name, progress).await?;
    c.batch()
        .update_job_queue()
        .job_queue(&spec.name)
        .priority(spec.priority as i32)
        .state(JqState::from(spec.state.as_api()))
        .set_compute_environment_order(Some(spec.order()))
        .send()
        .await
        .ctx(format!("updating job queue {}", spec.name))?;
    wait_valid(c, &spec.name, progress).await?;
    Ok(Handle {
        kind: Kind::JobQueue,
        name: spec.name.clone(),
        id: live.id.clone(),
        extra: Extra::default(),
    })
}

async fn wait_valid(c: &Clients, name: &str, progress: Progress<'_>) -> Result<()> {
    wait_for(&format!("job queue {name}"), WAIT, progress, || async {
        let Some(queue) = describe(c, name).await? else {
            bail!("job queue {name} disappeared")
        };
        match queue.status() {
            Some(JqStatus::Valid) => Ok(Ok(())),
            Some(JqStatus::Invalid) => bail!(
                "job queue {name} is INVALID: {}",
                queue.status_reason().unwrap_or("no reason given")
            ),
            other => Ok(Err(other
                .map(|s| s.as_str().to_string())
                .unwrap_or_default())),
        }
    })
    .await
}

/// Disables the queue, deletes it and waits until it is gone (its compute environments can
/// only be deleted after that).
pub async fn delete(c: &Clients, name: &str, progress: Progress<'_>) -> Result<()> {
    let Some(queue) = describe(c, name).await? else {
        return Ok(());
    };
    if queue.status() != Some(&JqStatus::Deleting) {
        let enabled = queue.state() == Some(&JqState::Enabled);
        disable_and_delete(c, name, enabled, progress).await?;
    }
    wait_deleted(c, name, progress).await
}

/// [`delete`] from what the plan read (`live`): no describe first. Should Batch refuse (the
/// queue gone or busy meanwhile), the full path reads it and goes on from there.
pub async fn delete_known(
    c: &Clients,
    name: &str,
    live: &Live,
    progress: Progress<'_>,
) -> Result<()> {
    let enabled =
        live.attrs.get("state").and_then(|v| v.as_str()) == Some(JqState::Enabled.as_str());
    if disable_and_delete(c, name, enabled, progress)
        .await
        .is_err()
    {
        return delete(c, name, progress).await;
    }
    wait_deleted(c, name, progress).await
}

/// Disables the queue when it is enabled (and waits until Batch has), then deletes it.
async fn disable_and_delete(
    c: &Clients,
    name: &str,
    enabled: bool,
    progress: Progress<'_>,
) -> Result<()> {
    if enabled {
        c.batch()
            .update_job_queue()
            .job_queue(name)
            .state(JqState::Disabled)
            .send()
            .await
            .ctx(format!("disabling job queue {name}"))?;
        wait_valid(c, name, progress).await?;
    }
    c.batch()
        .delete_job_queue()
        .job_queue(name)
        .send()
        .await
        .ctx(format!("deleting job queue {name}"))?;
    Ok(())
}

async fn wait_deleted(c: &Clients, name: &str, progress: Progress<'_>) -> Result<()> {
    super::wait_deleted(&format!("job queue {name}"), WAIT, progress, || async {
        Ok(describe(c, name).await?.map(|q| {
            q.status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default()
        }))
    })
    .await
}
