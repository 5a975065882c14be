//! The plan: for every desired resource, its live state (read in parallel) compared with the
//! desired attributes, classified as create / update in place / replace / nothing; for every
//! recorded resource the stack no longer declares (and every deposed one), a delete.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use futures::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::Value;

use super::{
    first_facts, graph, graph_for, join_first_error_wins, named_facts, network, spec, store, Facts,
    Node, Refs,
};
use crate::aws::Clients;
use crate::resources::{
    self, is_unknown, owned_by, Address, Expected, Extra, Handle, Kind, Live, ReadAhead, Spec,
    TagRead,
};
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
    pub address: Address,
    pub action: Action,
    /// Live differs from what the last apply recorded (changed outside the tool).
    pub drift: bool,
    pub diffs: Vec<AttrDiff>,
    pub deps: Vec<Address>,
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
    let extra = match spec {
        Spec::ComputeEnvironment(_) => Extra {
            launch_template: match live.attrs.get("launch_template") {
                Some(Value::String(lt)) => Some(lt.clone()),
                _ => None,
            },
            ..Extra::default()
        },
        Spec::VpcEndpoint(s) => Extra {
            vpc_id: Some(s.vpc_id.clone()),
            ..Extra::default()
        },
        _ => Extra::default(),
    };
    Handle {
        kind: spec.kind(),
        name: spec.name().to_string(),
        id: live.id.clone(),
        extra,
    }
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

/// Builds the plan that makes the account match `stack`, reading in the fewest round trips
/// the answers allow (a plan's wait is its round trips one after another, 20-150 ms each
/// against AWS):
/// 1. the account (`account`, see [`first_facts`]), the VPC id, the secrets and the state, at once;
/// 2. the VPC's subnets, route tables and S3 endpoints, and beside them every live read: a
///    read needs only names, and names need only the account and the state; a role's inline
///    policies and an environment's launch template are read beside the rest by the names
///    the state recorded.
///
/// A stack that names its account and VPC id needs no answer for its names: its reads go out
/// in the first round trip (see [`named_facts`]), and only what they guessed wrong without
/// the state is read again (see [`settle_guesses`]).
pub async fn plan(
    c: &Clients,
    stack: &Stack,
    account: impl std::future::Future<Output = Result<String>>,
    refresh: Refresh,
) -> Result<Plan> {
    plan_from(c, stack, account, store(c, stack).load(), refresh).await
}

/// [`plan`] with the state read by `state` (apply reads it beside taking the lock).
pub async fn plan_from(
    c: &Clients,
    stack: &Stack,
    account: impl std::future::Future<Output = Result<String>>,
    state: impl std::future::Future<Output = Result<Snapshot>>,
    refresh: Refresh,
) -> Result<Plan> {
    let declared = graph(stack);
    // Without refresh the state decides what is read at all: it goes first.
    let (first, snapshot, network, mut lives, mut removals) =
        match named_facts(stack).filter(|_| refresh == Refresh::Live) {
            Some(named) => {
                // The facts lead: they carry the credentials check (see `join_first_error_wins`).
                let (first, (snapshot, network, lives)) =
                    join_first_error_wins(first_facts(c, stack, account), async {
                        tokio::try_join!(
                            state,
                            network(c, stack, &named.vpc_id),
                            read_desired(c, stack, &named, None, &declared, refresh),
                        )
                    })
                    .await?;
                let (lives, removals) = tokio::try_join!(
                    settle_guesses(c, stack, &first, &snapshot, &declared, lives),
                    read_removals(c, &snapshot, &declared, refresh),
                )?;
                (first, snapshot, network, lives, removals)
            }
            None => {
                let (first, snapshot) =
                    join_first_error_wins(first_facts(c, stack, account), state).await?;
                let ((network, lives), removals) = tokio::try_join!(
                    async {
                        tokio::try_join!(
                            network(c, stack, &first.vpc_id),
                            read_desired(c, stack, &first, Some(&snapshot), &declared, refresh),
                        )
                    },
                    read_removals(c, &snapshot, &declared, refresh),
                )?;
                (first, snapshot, network, lives, removals)
            }
        };
    let facts = first.with_network(network);
    let nodes = graph_for(stack, &facts);
    // The S3 endpoint is found in the listing the facts hold: no call of its own.
    if let Some(node) = nodes.iter().find(|n| n.address.kind == Kind::VpcEndpoint) {
        let live = read_desired(
            c,
            stack,
            &facts,
            Some(&snapshot),
            std::slice::from_ref(node),
            refresh,
        )
        .await?;
        lives.extend(live);
    }
    // Every route table has an S3 endpoint already: a recorded one of ours is removed.
    if let Some(record) = snapshot.records.get(&super::endpoint_address()) {
        if !nodes.iter().any(|n| n.address == record.address) {
            removals.extend(read_removal_of(c, record, refresh).await?);
        }
    }
    compare(stack, facts, snapshot, &nodes, lives, removals)
}

/// The initial references: every compute environment's current suffix, from the state.
fn recorded_suffixes<'a>(nodes: impl IntoIterator<Item = &'a Node>, snapshot: &Snapshot) -> Refs {
    let mut refs = Refs::default();
    for node in nodes {
        if node.address.kind == Kind::ComputeEnvironment {
            refs.suffixes.insert(
                node.address.clone(),
                snapshot.records.get(&node.address).and_then(|r| r.suffix),
            );
        }
    }
    refs
}

/// Live state by address, for desired resources (absent: does not exist).
type Lives = BTreeMap<Address, Option<Live>>;

/// Reads every desired resource at once (names do not depend on ids), but the S3 endpoint,
/// which needs the VPC's endpoint listing (see [`plan`]) unless `facts` hold it. Without the
/// state (`None`: it is still being read) the reads guess what it records: environments by
/// their first name, inline policies and launch templates by the stack's names, tags not
/// needed (the resource is ours); [`settle_guesses`] reads again where that was wrong.
async fn read_desired(
    c: &Clients,
    stack: &Stack,
    facts: &Facts,
    snapshot: Option<&Snapshot>,
    nodes: &[Node],
    refresh: Refresh,
) -> Result<Lives> {
    let tags = stack.tags();
    let refs = snapshot
        .map(|snapshot| recorded_suffixes(nodes, snapshot))
        .unwrap_or_default();
    // Route tables for an endpoint are known once the VPC's endpoints were listed.
    let listed = !facts.route_tables.is_empty();
    let nodes: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.address.kind != Kind::VpcEndpoint || listed)
        .collect();
    let specs: Vec<Spec> = nodes
        .iter()
        .map(|n| spec(stack, facts, &refs, n))
        .collect::<Result<_>>()?;
    let ahead = read_ahead(&specs, facts);
    let lives: Vec<Option<Live>> = stream::iter(nodes.iter().zip(&specs).map(|(node, s)| {
        let record = snapshot.and_then(|snapshot| snapshot.records.get(&node.address));
        let recorded = record
            .filter(|_| refresh == Refresh::StateOnly)
            .and_then(recorded_live);
        // A recorded resource is ours: its tags are not worth a call.
        let tag_read = if record.is_some() || snapshot.is_none() {
            TagRead::Skip
        } else {
            TagRead::Read
        };
        let expected = match (snapshot, record) {
            (None, _) => Expected::desired(s),
            (Some(_), Some(r)) => Expected::recorded(&r.handle, &r.attributes),
            (Some(_), None) => Expected::default(),
        };
        let ahead = &ahead;
        let tags = &tags;
        async move { recorded_or(recorded, s.read(c, tags, tag_read, ahead, &expected)).await }
    }))
    .buffered(READ_CONCURRENCY)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<_>>()?;
    Ok(nodes.iter().map(|n| n.address.clone()).zip(lives).collect())
}

/// Reads again what [`read_desired`] guessed wrong without the state: an environment the
/// state records under a replacement's name (the guess was its first name), and the tags of a
/// resource that exists but the state does not record (the guess was "ours"; the tags tell
/// whose it is). Nothing is read again when the guesses held: a stack applied in place.
async fn settle_guesses<N: std::borrow::Borrow<Node>>(
    c: &Clients,
    stack: &Stack,
    facts: &Facts,
    snapshot: &Snapshot,
    nodes: &[N],
    mut lives: Lives,
) -> Result<Lives> {
    let tags = stack.tags();
    let nodes: Vec<&Node> = nodes.iter().map(|n| n.borrow()).collect();
    let refs = recorded_suffixes(nodes.iter().copied(), snapshot);
    let mut again = Vec::new();
    for node in nodes {
        let record = snapshot.records.get(&node.address);
        let renamed = refs
            .suffixes
            .get(&node.address)
            .copied()
            .flatten()
            .is_some();
        let untold = record.is_none()
            && node.address.kind.tags_cost_a_call()
            && matches!(lives.get(&node.address), Some(Some(live)) if live.tags.is_none());
        if renamed || untold {
            again.push((node, record, spec(stack, facts, &refs, node)?));
        }
    }
    let ahead = ReadAhead::default();
    let read = stream::iter(again.iter().map(|(node, record, s)| {
        let (tag_read, expected) = match record {
            Some(r) => (TagRead::Skip, Expected::recorded(&r.handle, &r.attributes)),
            None => (TagRead::Read, Expected::default()),
        };
        let (tags, ahead) = (&tags, &ahead);
        async move {
            let live = s.read(c, tags, tag_read, ahead, &expected).await?;
            anyhow::Ok((node.address.clone(), live))
        }
    }))
    .buffered(READ_CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    for result in read {
        let (address, live) = result?;
        lives.insert(address, live);
    }
    Ok(lives)
}

/// A resource to delete: one the state records and the stack no longer declares, a deposed
/// one, or (for `destroy`) one the stack declares that only its tags tell is ours.
struct Removal {
    address: Address,
    handle: Handle,
    deps: Vec<Address>,
    record: Option<Record>,
    /// The old half of a replacement (its address keeps a record).
    deposed: bool,
    live: Option<Live>,
}

impl Removal {
    /// The record's own resource, or its deposed `handle`.
    fn of(record: &Record, deposed: Option<&Handle>) -> Removal {
        Removal {
            address: record.address.clone(),
            handle: deposed.unwrap_or(&record.handle).clone(),
            deps: record.deps.clone(),
            record: Some(record.clone()),
            deposed: deposed.is_some(),
            live: None,
        }
    }

    /// Reads what this removal would delete (the state's attributes where they stand in).
    async fn read(mut self, c: &Clients, refresh: Refresh) -> Result<Removal> {
        let recorded = match &self.record {
            Some(record) if refresh == Refresh::StateOnly && !self.deposed => recorded_live(record),
            _ => None,
        };
        // A deposed handle's record is its successor's: nothing of it to expect.
        let expected = match &self.record {
            Some(record) if !self.deposed => Expected::recorded(&self.handle, &record.attributes),
            _ => Expected::default(),
        };
        let read = resources::read_handle_expecting(c, &self.handle, &expected);
        self.live = recorded_or(recorded, read).await?;
        Ok(self)
    }

    /// The plan's item: a delete, or nothing but the state entry when it is gone already.
    fn item(self) -> Item {
        let before = match (&self.live, &self.record) {
            (Some(live), _) => live.attrs.clone(),
            (None, Some(record)) => record.attributes.clone(),
            (None, None) => Default::default(),
        };
        Item {
            address: self.address,
            action: if self.live.is_some() {
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
            deps: self.deps,
            node: None,
            name: self.handle.name.clone(),
            new_name: None,
            live: self.live,
            suffix: self.record.as_ref().and_then(|r| r.suffix),
            record: self.record,
            handle: Some(self.handle),
            deposed: self.deposed,
        }
    }
}

/// Reads every recorded resource whose address `declared` lacks, and every deposed one, at
/// once.
async fn read_removals(
    c: &Clients,
    snapshot: &Snapshot,
    declared: &[Node],
    refresh: Refresh,
) -> Result<Vec<Removal>> {
    let declared: BTreeSet<&Address> = declared.iter().map(|n| &n.address).collect();
    let mut removals = Vec::new();
    for record in snapshot.records.values() {
        if !declared.contains(&record.address) {
            removals.push(Removal::of(record, None));
        }
        for deposed in &record.deposed {
            removals.push(Removal::of(record, Some(deposed)));
        }
    }
    stream::iter(removals.into_iter().map(|r| r.read(c, refresh)))
        .buffered(READ_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// The removal of one recorded resource itself (not its deposed ones).
async fn read_removal_of(c: &Clients, record: &Record, refresh: Refresh) -> Result<Vec<Removal>> {
    Ok(vec![Removal::of(record, None).read(c, refresh).await?])
}

/// One desired resource's item: create (absent), nothing (equal), replace (an attribute AWS
/// cannot change in place) or update; `refs` learn its id where it keeps one, and a
/// replaced compute environment's next suffix.
fn desired_item(
    stack: &Stack,
    facts: &Facts,
    refs: &mut Refs,
    node: &Node,
    live: Option<Live>,
    record: Option<Record>,
) -> Result<Item> {
    let tags = stack.tags();
    let mut desired = spec(stack, facts, refs, node)?;
    let mut item = Item {
        address: node.address.clone(),
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
            item.diffs = diff(
                node.address.kind,
                &desired.attributes(),
                &Default::default(),
            )
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
                    crate::adopt::import_hint(stack, &node.address, desired.name())
                );
            }
            let diffs = diff(node.address.kind, &desired.attributes(), &live.attrs);
            if let Some(rec) = &record {
                item.drift = !diffs.is_empty()
                    && rec
                        .attributes
                        .iter()
                        .any(|(k, v)| !is_unknown(v) && live.attrs.get(k).is_some_and(|l| l != v));
            }
            if diffs.is_empty() {
                refs.ids.insert(node.address.clone(), live.id.clone());
            } else if diffs.iter().any(|d| d.forces_replacement) {
                item.action = Action::Replace;
                item.handle = Some(match &record {
                    Some(r) if r.handle.name == desired.name() => r.handle.clone(),
                    _ => handle_of(&desired, live),
                });
                if node.address.kind == Kind::ComputeEnvironment {
                    let next = Some(item.suffix.unwrap_or(0) + 1);
                    refs.suffixes.insert(node.address.clone(), next);
                    item.suffix = next;
                    desired = spec(stack, facts, refs, node)?;
                    item.new_name = Some(desired.name().to_string());
                }
                item.diffs = diff(node.address.kind, &desired.attributes(), &live.attrs);
            } else {
                item.action = Action::Update;
                item.diffs = diffs;
                // A new job definition revision gets a new ARN; everything else keeps its id.
                if node.address.kind != Kind::JobDefinition {
                    refs.ids.insert(node.address.clone(), live.id.clone());
                }
            }
        }
    }
    Ok(item)
}

/// Compares desired, recorded and live: one item per desired resource, in dependency order,
/// then one per removal.
fn compare(
    stack: &Stack,
    facts: Facts,
    snapshot: Snapshot,
    nodes: &[Node],
    mut lives: Lives,
    removals: Vec<Removal>,
) -> Result<Plan> {
    let mut refs = recorded_suffixes(nodes, &snapshot);
    let mut items = Vec::new();
    for node in nodes {
        let live = lives.remove(&node.address).flatten();
        let record = snapshot.records.get(&node.address).cloned();
        items.push(desired_item(stack, &facts, &mut refs, node, live, record)?);
    }

    items.extend(removals.into_iter().map(Removal::item));
    Ok(Plan {
        stack: stack.clone(),
        facts,
        snapshot,
        items,
        refs,
    })
}

/// The plan of `destroy`: every recorded resource, and every live resource the stack file
/// names that the state lacks (created by an apply that crashed before recording it). Read in
/// the round trips of [`plan`]: the facts and the state, then every resource at once; for a
/// stack that names its account and VPC, every resource beside the facts, the records then
/// taking what the stack's names found (see [`destroy_plan_named`]).
pub async fn destroy_plan(
    c: &Clients,
    stack: &Stack,
    account: impl std::future::Future<Output = Result<String>>,
    state: impl std::future::Future<Output = Result<Snapshot>>,
) -> Result<Plan> {
    if let Some(named) = named_facts(stack) {
        return destroy_plan_named(c, stack, &named, account, state).await;
    }
    let (first, snapshot) = join_first_error_wins(first_facts(c, stack, account), state).await?;
    let ((network, found), recorded) = tokio::try_join!(
        async {
            tokio::try_join!(
                network(c, stack, &first.vpc_id),
                find_unrecorded(c, stack, &first, &snapshot),
            )
        },
        read_removals(c, &snapshot, &[], Refresh::Live),
    )?;
    Ok(destroy_plan_of(
        stack,
        first.with_network(network),
        snapshot,
        recorded,
        found,
    ))
}

fn destroy_plan_of(
    stack: &Stack,
    facts: Facts,
    snapshot: Snapshot,
    recorded: Vec<Removal>,
    found: Vec<Removal>,
) -> Plan {
    Plan {
        stack: stack.clone(),
        facts,
        snapshot,
        items: recorded
            .into_iter()
            .chain(found)
            .map(Removal::item)
            .collect(),
        refs: Refs::default(),
    }
}

/// [`destroy_plan`] of a stack whose names need no answer: every resource the stack names is
/// read beside the facts and the state, as [`plan`] does. A record then takes the read of its
/// own resource (the same name, or for a security group or endpoint the same id); only the
/// records those reads did not find (a removed or replaced resource) are read after, by their
/// handles, beside the tags of unrecorded resources that exist.
async fn destroy_plan_named(
    c: &Clients,
    stack: &Stack,
    named: &Facts,
    account: impl std::future::Future<Output = Result<String>>,
    state: impl std::future::Future<Output = Result<Snapshot>>,
) -> Result<Plan> {
    let declared = graph(stack);
    let (first, (snapshot, network, mut lives)) =
        join_first_error_wins(first_facts(c, stack, account), async {
            tokio::try_join!(
                state,
                network(c, stack, &named.vpc_id),
                read_desired(c, stack, named, None, &declared, Refresh::Live),
            )
        })
        .await?;
    let facts = first.with_network(network);
    // The S3 endpoint is found in the listing the facts hold: no call.
    let endpoint: Vec<Node> = graph_for(stack, &facts)
        .into_iter()
        .filter(|n| n.address.kind == Kind::VpcEndpoint)
        .collect();
    lives.extend(read_desired(c, stack, &facts, Some(&snapshot), &endpoint, Refresh::Live).await?);

    // The specs the reads went by: environments by their first name (see `read_desired`);
    // an unrecorded resource keeps that name.
    let read_by: BTreeMap<&Address, Spec> = declared
        .iter()
        .map(|n| Ok((&n.address, spec(stack, &facts, &Refs::default(), n)?)))
        .collect::<Result<_>>()?;
    let mut pending = Vec::new();
    for record in snapshot.records.values() {
        let found = read_by
            .get(&record.address)
            .and_then(|spec| Some((spec.name(), lives.get(&record.address)?)))
            .filter(|(name, live)| same_resource(record, name, live));
        match found {
            Some((_, live)) => pending.push((
                Removal {
                    live: live.clone(),
                    ..Removal::of(record, None)
                },
                false,
            )),
            None => pending.push((Removal::of(record, None), true)),
        }
        for deposed in &record.deposed {
            pending.push((Removal::of(record, Some(deposed)), true));
        }
    }
    let unrecorded: Vec<&Node> = declared
        .iter()
        .filter(|n| !snapshot.records.contains_key(&n.address))
        .collect();
    let (recorded, told) = tokio::try_join!(
        async {
            stream::iter(pending.into_iter().map(|(removal, unread)| async move {
                if unread {
                    removal.read(c, Refresh::Live).await
                } else {
                    Ok(removal)
                }
            }))
            .buffered(READ_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()
        },
        settle_guesses(c, stack, &facts, &snapshot, &unrecorded, lives),
    )?;
    let tags = stack.tags();
    let found = unrecorded
        .into_iter()
        .filter_map(|node| {
            let live = told.get(&node.address).cloned().flatten();
            unrecorded_removal(node, &read_by[&node.address], live, &tags)
        })
        .collect();
    Ok(destroy_plan_of(stack, facts, snapshot, recorded, found))
}

/// Whether a read by the stack's name found the resource a record holds, or found it gone:
/// for the kinds read by name, the record's name; for a security group or an S3 endpoint
/// (read by id from a record), the same id.
fn same_resource(record: &Record, name: &str, live: &Option<Live>) -> bool {
    match record.handle.kind {
        Kind::SecurityGroup | Kind::VpcEndpoint => {
            live.as_ref().is_some_and(|l| l.id == record.handle.id)
        }
        _ => name == record.handle.name,
    }
}

/// The resources the stack declares, the state lacks, and AWS holds with the stack's tags.
async fn find_unrecorded(
    c: &Clients,
    stack: &Stack,
    facts: &Facts,
    snapshot: &Snapshot,
) -> Result<Vec<Removal>> {
    let tags = stack.tags();
    let nodes = graph(stack);
    let refs = recorded_suffixes(&nodes, snapshot);
    let unrecorded: Vec<(&Node, Spec)> = nodes
        .iter()
        .filter(|n| !snapshot.records.contains_key(&n.address))
        .map(|n| Ok((n, spec(stack, facts, &refs, n)?)))
        .collect::<Result<_>>()?;
    let ahead = ReadAhead::default();
    let nothing_recorded = Expected::default();
    let found = stream::iter(
        unrecorded
            .iter()
            .map(|(_, s)| s.read(c, &tags, TagRead::Read, &ahead, &nothing_recorded)),
    )
    .buffered(READ_CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    let mut removals = Vec::new();
    for ((node, spec), live) in unrecorded.into_iter().zip(found) {
        removals.extend(unrecorded_removal(node, &spec, live?, &tags));
    }
    Ok(removals)
}

/// The removal of an unrecorded resource found live, when it carries the stack's tags: only
/// what does is ours to delete.
fn unrecorded_removal(
    node: &Node,
    spec: &Spec,
    live: Option<Live>,
    tags: &BTreeMap<String, String>,
) -> Option<Removal> {
    let live = live.filter(|l| l.tags.is_some() && owned_by(&l.tags, tags))?;
    Some(Removal {
        address: node.address.clone(),
        handle: handle_of(spec, &live),
        deps: node.deps.clone(),
        record: None,
        deposed: false,
        live: Some(live),
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
