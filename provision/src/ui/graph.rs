//! The stack as a graph: every resource of the plan (state plus a live read, as `provision
//! plan` makes it) with its dependencies and where it stands.

use serde::Serialize;

use crate::aws::Clients;
use crate::engine::plan::{self, Action, AttrDiff, Summary};
use crate::resources::{Address, Attrs};
use crate::stack::{ComputeEnvironment, Stack};

#[derive(Debug, Serialize)]
pub struct StackGraph {
    pub stack: String,
    pub env: String,
    pub region: String,
    pub account: String,
    /// The GPU switch as the stack resolves it, and the AMI type it selects.
    pub gpu: bool,
    pub image_type: &'static str,
    /// The GPU switch the last apply recorded (`None`: never applied).
    pub applied_gpu: Option<bool>,
    pub serial: u64,
    pub nodes: Vec<GraphNode>,
    pub summary: Summary,
}

#[derive(Debug, Serialize)]
pub struct GraphNode {
    pub address: Address,
    pub kind: &'static str,
    /// The name in AWS.
    pub name: String,
    /// What an apply would do: `no-op` means in sync.
    pub action: Action,
    /// Changed outside the tool since the last apply.
    pub drift: bool,
    /// Whether the state records it.
    pub recorded: bool,
    pub exists: bool,
    pub deps: Vec<Address>,
    pub diffs: Vec<AttrDiff>,
    /// What AWS answered for it (absent: it does not exist).
    pub live: Option<Attrs>,
}

/// Plans `stack` read-only (no lock, nothing written) and returns its graph.
pub async fn read(clients: &Clients, stack: &Stack) -> anyhow::Result<StackGraph> {
    let account = crate::engine::stack_account(clients, stack);
    let planned = plan::plan(clients, stack, account, plan::Refresh::Live).await?;
    let account = planned.facts.account.clone();
    let nodes = planned
        .items
        .iter()
        .map(|item| GraphNode {
            address: item.address.clone(),
            kind: item.address.kind.as_str(),
            name: item.name.clone(),
            action: item.action,
            drift: item.drift,
            recorded: item.record.is_some(),
            exists: item.live.is_some(),
            deps: item.deps.clone(),
            diffs: item.diffs.clone(),
            live: item.live.as_ref().map(|l| l.attrs.clone()),
        })
        .collect();
    Ok(StackGraph {
        stack: stack.name.clone(),
        env: stack.env.clone(),
        region: stack.region.clone(),
        account,
        gpu: stack.gpu,
        image_type: ComputeEnvironment::image_type(stack.gpu),
        applied_gpu: planned.snapshot.gpu,
        serial: planned.snapshot.serial,
        summary: planned.summary(),
        nodes,
    })
}
