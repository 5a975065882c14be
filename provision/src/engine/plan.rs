//! The plan: for every desired resource, its live state (read in parallel) compared with the
//! desired attributes, classified as create / update in place / replace / nothing; for every
//! recorded resource the stack no longer declares (and every deposed one), a delete.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use futures::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::Value;

use super::{facts, graph, graph_for, join_first_error_wins, spec, store, Facts, Node, Refs};
use crate::aws::Clients;
use crate::resources::{self, is_unknown, owned_by, Handle, Kind, Live, ReadAhead, Spec, TagRead};
use crate::stack::Stack;
use crate::state::{Record, Snapshot};

/// How many live reads run at once (each is a handful of API calls).
const READ_CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[serde(rename = "no-op")]
    NoOp,
    Create,
    Update,
    Replace,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttrDiff {
    pub name: String,
    pub before: Value,
    pub after: Value,
    #[serde(skip)]
    pub forces_replacement: bool,
}

/// One resource's part of the plan.
#[derive(Debug, Clone)]
pub struct Item {
    pub address: String,
    pub kind: Kind,
    pub action: Action,
    /// Live differs from what the last apply recorded (changed outside the tool).
    pub drift: bool,
    pub diffs: Vec<AttrDiff>,
    pub deps: Vec<String>,
    /// The node, for desired resources (absent for removed and deposed ones).
    pub node: Option<Node>,
    /// Name before (update, replace, delete) or to create.
    pub name: String,
    /// The replacement's name (compute environments get a new suffix).
    pub new_name: Option<String>,
    pub live: Option<Live>,
    pub record: Option<Record>,
    /// What a delete (or the old half of a replace) removes.
    pub handle: Option<Handle>,
    /// Suffix of the compute environment after this action.
    pub suffix: Option<u32>,
    /// A replaced resource a previous apply left undeleted.
    pub deposed: bool,
}

pub struct Plan {
    pub stack: Stack,
    pub facts: Facts,
    pub snapshot: Snapshot,
    /// Desired resources in dependency order, then deletions.
    pub items: Vec<Item>,
    /// References as they stand before apply: ids of resources that keep theirs.
    pub refs: Refs,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

impl Plan {
    pub fn changes(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|i| i.action != Action::NoOp)
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for item in self.changes() {
            match item.action {
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                // Terraform counts a replacement as one add and one destroy.
                Action::Replace => {
                    s.add += 1;
                    s.destroy += 1
                }
                Action::Delete => s.destroy += 1,
                Action::NoOp => {}
            }
        }
        s
    }

    pub fn has_changes(&self) -> bool {
        self.changes().next().is_some()
    }
}

/// Attributes whose desired value differs from the live one.
pub fn diff(kind: Kind, desired: &resources::Attrs, live: &resources::Attrs) -> Vec<AttrDiff> {
    desired
        .iter()
        .filter_map(|(name, after)| {
            let before = live.get(name).cloned().unwrap_or(Value::Null);
            (before != *after).then(|| AttrDiff {
                name: name.clone(),
                before,
                after: after.clone(),
                forces_replacement: kind.forces_replacement(name),
            })
        })
        .collect()
}

/// A handle for a live resource found by its desired spec (adopted or to be deleted).
pub(crate) fn handle_of(spec: &Spec, live: &Live) -> Handle {
    let mut extra = BTreeMap::new();
    match spec {
        Spec::ComputeEnvironment(_) => {
            if let Some(Value::String(lt)) = live.attrs.get("launch_template") {
                extra.insert("launch_template".to_string(), lt.clone());
            }
        }
        Spec::VpcEndpoint(s) => {
            extra.insert("vpc_id".to_string(), s.vpc_id.clone());
        }
        _ => {}
    }
    Handle {
        kind: spec.kind(),
        name: spec.name().to_string(),
        id: live.id.clone(),
        extra,
    }
}

/// Loads state and facts together; `account` answers the account id (see [`facts`]).
pub async fn prepare(
    c: &Clients,
    stack: &Stack,
    account: impl std::future::Future<Output = Result<String>>,
) -> Result<(Facts, Snapshot)> {
    let store = store(c, stack);
    // The facts lead: they carry the credentials check (see `join_first_error_wins`).
    join_first_error_wins(facts(c, stack, account), store.load()).await
}

/// What one call answers for many resources: every compute environment at once, and the S3
/// endpoints the facts already listed.
fn read_ahead(specs: &[Spec], facts: &Facts) -> ReadAhead {
    let compute: Vec<String> = specs
        .iter()
        .filter_map(|s| match s {
            Spec::ComputeEnvironment(ce) => Some(ce.name.clone()),
            _ => None,
        })
        .collect();
    let has_endpoint = specs.iter().any(|s| matches!(s, Spec::VpcEndpoint(_)));
    ReadAhead::new(
        compute,
        has_endpoint.then(|| (facts.vpc_id.clone(), facts.s3_endpoints.clone())),
    )
}

/// Where a plan takes the current state of the resources the state file records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Read every resource from AWS: drift shows and is planned away (the default).
    Live,
    /// Trust the state's recorded attributes (`plan --refresh=false`, as in Terraform): no
    /// reads for recorded resources, so changes made outside the tool do not show.
    StateOnly,
}

/// The recorded attributes of an applied resource, standing in for a live read.
fn recorded_live(record: &Record) -> Option<Live> {
    // A record without attributes is an intent (a crash before the create was recorded): only
    // a read can tell whether the resource exists.
    (!record.attributes.is_empty()).then(|| Live {
        id: record.handle.id.clone(),
        attrs: record.attributes.clone(),
        tags: None,
    })
}

/// `recorded` where the state stands in for AWS, else the live read (a future: no call is made
/// unless it is awaited).
async fn recorded_or(
    recorded: Option<Live>,
    read: impl std::future::Future<Output = Result<Option<Live>>>,
) -> Result<Option<Live>> {
    match recorded {
        Some(live) => Ok(Some(live)),
        None => read.await,
    }
}

/// Builds the plan that makes the account match `stack`.
pub async fn plan(
    c: &Clients,
    stack: &Stack,
    facts: Facts,
    snapshot: Snapshot,
    refresh: Refresh,
) -> Result<Plan> {
    let tags = stack.tags();
    let nodes = graph_for(stack, &facts);
    let mut refs = Refs::default();
    for node in &nodes {
        if node.kind == Kind::ComputeEnvironment {
            refs.suffixes.insert(
                node.address.clone(),
                snapshot.records.get(&node.address).and_then(|r| r.suffix),
            );
        }
    }
    // Read everything live at once: names do not depend on ids.
    let initial: Vec<Spec> = nodes
        .iter()
        .map(|n| spec(stack, &facts, &refs, n))
        .collect::<Result<_>>()?;
    let ahead = read_ahead(&initial, &facts);
    let lives: Vec<Option<Live>> = stream::iter(nodes.iter().zip(&initial).map(|(node, s)| {
        let record = snapshot.records.get(&node.address);
        let recorded = record
            .filter(|_| refresh == Refresh::StateOnly)
            .and_then(recorded_live);
        // A recorded resource is ours: its tags are not worth a call.
        let tag_read = if record.is_some() {
            TagRead::Skip
        } else {
            TagRead::Read
        };
        let ahead = &ahead;
        let tags = &tags;
        recorded_or(recorded, s.read(c, tags, tag_read, ahead))
    }))
    .buffered(READ_CONCURRENCY)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<_>>()?;

    let mut items = Vec::new();
    for (node, live) in nodes.iter().zip(lives) {
        let record = snapshot.records.get(&node.address).cloned();
        let mut desired = spec(stack, &facts, &refs, node)?;
        let mut item = Item {
            address: node.address.clone(),
            kind: node.kind,
            action: Action::NoOp,
            drift: false,
            diffs: vec![],
            deps: node.deps.clone(),
            node: Some(node.clone()),
            name: desired.name().to_string(),
            new_name: None,
            live: live.clone(),
            record: record.clone(),
            handle: None,
            suffix: refs.suffixes.get(&node.address).copied().flatten(),
            deposed: false,
        };
        match &live {
            None => {
                item.action = Action::Create;
                // Applied before (a record with attributes, not a mere intent) and gone now:
                // deleted outside the tool.
                item.drift = record.as_ref().is_some_and(|r| !r.attributes.is_empty());
                item.diffs = diff(node.kind, &desired.attributes(), &Default::default())
                    .into_iter()
                    .map(|d| AttrDiff {
                        before: Value::Null,
                        ..d
                    })
                    .collect();
            }
            Some(live) => {
                if record.is_none() && !owned_by(&live.tags, &tags) {
                    bail!(
                        "{} {} already exists and is not tagged {}={}, {}={}: it belongs to someone else; \
                         rename the stack or remove that resource{}",
                        node.address,
                        desired.name(),
                        crate::stack::names::TAG_STACK,
                        stack.name,
                        crate::stack::names::TAG_ENV,
                        stack.env,
                        crate::adopt::import_hint(stack, node.kind, &node.address, desired.name())
                    );
                }
                let diffs = diff(node.kind, &desired.attributes(), &live.attrs);
                if let Some(rec) = &record {
                    item.drift = !diffs.is_empty()
                        && rec.attributes.iter().any(|(k, v)| {
                            !is_unknown(v) && live.attrs.get(k).is_some_and(|l| l != v)
                        });
                }
                if diffs.is_empty() {
                    refs.ids.insert(node.address.clone(), live.id.clone());
                } else if diffs.iter().any(|d| d.forces_replacement) {
                    item.action = Action::Replace;
                    item.handle = Some(match &record {
                        Some(r) if r.handle.name == desired.name() => r.handle.clone(),
                        _ => handle_of(&desired, live),
                    });
                    if node.kind == Kind::ComputeEnvironment {
                        let next = Some(item.suffix.unwrap_or(0) + 1);
                        refs.suffixes.insert(node.address.clone(), next);
                        item.suffix = next;
                        desired = spec(stack, &facts, &refs, node)?;
                        item.new_name = Some(desired.name().to_string());
                    }
                    item.diffs = diff(node.kind, &desired.attributes(), &live.attrs);
                } else {
                    item.action = Action::Update;
                    item.diffs = diffs;
                    // A new job definition revision gets a new ARN; everything else keeps its id.
                    if node.kind != Kind::JobDefinition {
                        refs.ids.insert(node.address.clone(), live.id.clone());
                    }
                }
            }
        }
        items.push(item);
    }

    // Recorded resources the stack no longer declares, and deposed ones.
    let declared: BTreeSet<&str> = nodes.iter().map(|n| n.address.as_str()).collect();
    let mut removals: Vec<(Record, Option<Handle>)> = Vec::new();
    for record in snapshot.records.values() {
        if !declared.contains(record.address.as_str()) {
            removals.push((record.clone(), None));
        }
        for deposed in &record.deposed {
            removals.push((record.clone(), Some(deposed.clone())));
        }
    }
    let reads = stream::iter(removals.iter().map(|(record, deposed)| {
        let handle = deposed.clone().unwrap_or_else(|| record.handle.clone());
        let recorded = if refresh == Refresh::StateOnly && deposed.is_none() {
            recorded_live(record)
        } else {
            None
        };
        async move { recorded_or(recorded, resources::read_handle(c, &handle)).await }
    }))
    .buffered(READ_CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    for ((record, deposed), live) in removals.into_iter().zip(reads) {
        let live = live?;
        let handle = deposed.clone().unwrap_or_else(|| record.handle.clone());
        let before = live
            .as_ref()
            .map(|l| l.attrs.clone())
            .unwrap_or_else(|| record.attributes.clone());
        items.push(Item {
            address: record.address.clone(),
            kind: handle.kind,
            // Gone already: only the state entry is left to remove.
            action: if live.is_some() {
                Action::Delete
            } else {
                Action::NoOp
            },
            drift: false,
            diffs: before
                .into_iter()
                .map(|(name, before)| AttrDiff {
                    name,
                    before,
                    after: Value::Null,
                    forces_replacement: false,
                })
                .collect(),
            deps: record.deps.clone(),
            node: None,
            name: handle.name.clone(),
            new_name: None,
            live,
            record: Some(record.clone()),
            handle: Some(handle),
            suffix: record.suffix,
            deposed: deposed.is_some(),
        });
    }
    Ok(Plan {
        stack: stack.clone(),
        facts,
        snapshot,
        items,
        refs,
    })
}

/// The plan of `destroy`: every recorded resource, and every live resource the stack file
/// names that the state lacks (created by an apply that crashed before recording it).
pub async fn destroy_plan(
    c: &Clients,
    stack: &Stack,
    facts: Facts,
    snapshot: Snapshot,
) -> Result<Plan> {
    let tags = stack.tags();
    let nodes = graph(stack);
    let mut refs = Refs::default();
    for node in &nodes {
        if node.kind == Kind::ComputeEnvironment {
            refs.suffixes.insert(
                node.address.clone(),
                snapshot.records.get(&node.address).and_then(|r| r.suffix),
            );
        }
    }
    let specs: Vec<Spec> = nodes
        .iter()
        .map(|n| spec(stack, &facts, &refs, n))
        .collect::<Result<_>>()?;
    let mut targets: Vec<(String, Handle, Vec<String>, Option<Record>, bool)> = Vec::new();
    for record in snapshot.records.values() {
        targets.push((
            record.address.clone(),
            record.handle.clone(),
            record.deps.clone(),
            Some(record.clone()),
            false,
        ));
        for deposed in &record.deposed {
            targets.push((
                record.address.clone(),
                deposed.clone(),
                record.deps.clone(),
                Some(record.clone()),
                true,
            ));
        }
    }
    let unrecorded: Vec<(&Node, &Spec)> = nodes
        .iter()
        .zip(&specs)
        .filter(|(n, _)| !snapshot.records.contains_key(&n.address))
        .collect();
    let ahead = ReadAhead::default();
    let found = stream::iter(
        unrecorded
            .iter()
            .map(|(_, s)| s.read(c, &tags, TagRead::Read, &ahead)),
    )
    .buffered(READ_CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    for ((node, spec), live) in unrecorded.into_iter().zip(found) {
        if let Some(live) = live? {
            // Only what carries the stack's tags is ours to delete.
            if owned_by(&live.tags, &tags) && live.tags.is_some() {
                targets.push((
                    node.address.clone(),
                    handle_of(spec, &live),
                    node.deps.clone(),
                    None,
                    false,
                ));
            }
        }
    }
    let lives = stream::iter(
        targets
            .iter()
            .map(|(_, h, ..)| resources::read_handle(c, h)),
    )
    .buffered(READ_CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    let mut items = Vec::new();
    for ((address, handle, deps, record, deposed), live) in targets.into_iter().zip(lives) {
        let live = live?;
        let before = live
            .as_ref()
            .map(|l| l.attrs.clone())
            .or_else(|| record.as_ref().map(|r| r.attributes.clone()));
        items.push(Item {
            kind: handle.kind,
            action: if live.is_some() {
                Action::Delete
            } else {
                Action::NoOp
            },
            drift: false,
            diffs: before
                .unwrap_or_default()
                .into_iter()
                .map(|(name, before)| AttrDiff {
                    name,
                    before,
                    after: Value::Null,
                    forces_replacement: false,
                })
                .collect(),
            deps,
            node: None,
            name: handle.name.clone(),
            new_name: None,
            live,
            suffix: record.as_ref().and_then(|r| r.suffix),
            record,
            handle: Some(handle),
            deposed,
            address,
        });
    }
    Ok(Plan {
        stack: stack.clone(),
        facts,
        snapshot,
        items,
        refs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compute_changes_outside_vcpus_and_state_force_replacement() {
        let live = resources::Attrs::from([
            ("max_vcpus".to_string(), json!(16)),
            ("instance_types".to_string(), json!(["c5.xlarge"])),
            ("state".to_string(), json!("ENABLED")),
        ]);
        let mut desired = live.clone();
        desired.insert("max_vcpus".into(), json!(32));
        let d = diff(Kind::ComputeEnvironment, &desired, &live);
        assert_eq!(d.len(), 1);
        assert!(!d[0].forces_replacement, "max_vcpus is updated in place");
        desired.insert("instance_types".into(), json!(["g4dn.xlarge"]));
        let d = diff(Kind::ComputeEnvironment, &desired, &live);
        assert!(d
            .iter()
            .any(|a| a.name == "instance_types" && a.forces_replacement));
        // Queues never need a replacement.
        assert!(!Kind::JobQueue.forces_replacement("compute"));
    }

    #[test]
    fn equal_attributes_mean_no_change() {
        let attrs = resources::Attrs::from([("retention_days".to_string(), json!(30))]);
        assert!(diff(Kind::LogGroup, &attrs, &attrs).is_empty());
    }
}
