//! Apply: run a plan's actions in two phases.
//!
//! 1. Forward: creates, in-place updates and the new half of every replacement, each as soon
//!    as the resources it depends on are done (independent ones run concurrently). Each
//!    result is recorded at once, so a crash leaves a state the next apply converges from;
//!    a replaced resource stays recorded as *deposed* until it is deleted.
//! 2. Delete: removed resources and the old halves of replacements, dependents first. By then
//!    every queue points at its new compute environment, so no "existing JobQueue
//!    relationship" error can happen and a queue is never left without compute.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use futures::stream::{FuturesUnordered, StreamExt};

use super::plan::{Action, Item, Plan};
use super::progress::Reporter;
use super::{spec, Node, Refs};
use crate::aws::Clients;
use crate::resources::{
    self, bucket, is_unknown, repository, Address, Attrs, Extra, Handle, Kind, Spec,
};
use crate::state::{record, Finish, Record, Store};

/// What an apply or destroy did.
#[derive(Debug, Default)]
pub struct Report {
    pub added: usize,
    pub changed: usize,
    pub destroyed: usize,
    /// Whether the state changed (the serial is bumped then).
    pub state_changed: bool,
    pub errors: Vec<anyhow::Error>,
    /// State writes left for the end, to go with the lock's release in one request: the
    /// records of the last actions (nothing else was running when they finished) and the
    /// entries of deleted resources. A crash before leaves what the next plan converges from
    /// anyway: a tagged resource it adopts, an entry of something gone it drops.
    pub last_writes: Finish,
}

/// What a task waits for: another task's success, or only its readiness (see [`Ready`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Done(usize),
    Ready(usize),
}

/// Lets a running task tell its [`After::Ready`] dependents that what they need is there (a
/// role exists, its policies still to come; an environment is gone, its launch template still
/// to go) before the task finishes. A task that never says so is ready when it succeeds.
#[derive(Clone)]
struct Ready {
    task: usize,
    tx: tokio::sync::mpsc::UnboundedSender<usize>,
}

impl Ready {
    fn signal(&self) {
        let _ = self.tx.send(self.task);
    }
}

/// Runs `run(i, ready)` for every task once all it waits for (`waits[i]`) is done or ready, as
/// many at once as are ready. After a failure nothing new starts; running tasks finish.
async fn run_dag<F, Fut>(waits: &[Vec<After>], run: F) -> Vec<anyhow::Error>
where
    F: Fn(usize, Ready) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let n = waits.len();
    let mut done = vec![false; n];
    let mut ready = vec![false; n];
    let mut started = vec![false; n];
    let mut errors = Vec::new();
    let mut running = FuturesUnordered::new();
    let (tx, mut signals) = tokio::sync::mpsc::unbounded_channel();
    let run = &run;
    loop {
        if errors.is_empty() {
            for i in 0..n {
                let waited = waits[i].iter().all(|w| match *w {
                    After::Done(j) => done[j],
                    After::Ready(j) => done[j] || ready[j],
                });
                if !started[i] && waited {
                    started[i] = true;
                    let signal = Ready {
                        task: i,
                        tx: tx.clone(),
                    };
                    running.push(async move { (i, run(i, signal).await) });
                }
            }
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            Some(j) = signals.recv() => ready[j] = true,
            Some((i, result)) = running.next() => match result {
                Ok(()) => done[i] = true,
                Err(e) => errors.push(e),
            },
        }
    }
    errors
}

/// One deletion: a removed resource, or the old half of a replacement.
struct Deletion {
    address: Address,
    handle: Handle,
    deps: Vec<Address>,
    /// Deposed (old half of a replacement): its address keeps a record.
    deposed: bool,
    /// What the plan read of it (a removal's, not a replacement's: that read is the new
    /// half's), so that the delete need not read it again.
    live: Option<resources::Live>,
}

/// Refuses, before anything is deleted, when `protect` is on and a bucket or repository to
/// delete still holds data.
pub async fn check_protected(c: &Clients, protect: bool, handles: &[&Handle]) -> Result<()> {
    if !protect {
        return Ok(());
    }
    let mut refused = Vec::new();
    for handle in handles {
        let empty = match handle.kind {
            Kind::Bucket => bucket::is_empty(c, &handle.name).await?,
            Kind::Repository => repository::is_empty(c, &handle.name).await?,
            _ => true,
        };
        if !empty {
            refused.push(format!("{} {}", handle.kind.as_str(), handle.name));
        }
    }
    if !refused.is_empty() {
        bail!(
            "protect is on and these are not empty: {}; nothing was deleted. Empty them first, or set protect = false",
            refused.join(", ")
        );
    }
    Ok(())
}

fn deletions(plan: &Plan) -> Vec<Deletion> {
    let mut out = Vec::new();
    for item in &plan.items {
        match item.action {
            Action::Delete => out.push(Deletion {
                address: item.address.clone(),
                handle: item.handle.clone().expect("a delete has a handle"),
                deps: item.deps.clone(),
                deposed: item.deposed,
                live: item.live.clone(),
            }),
            Action::Replace => out.push(Deletion {
                address: item.address.clone(),
                handle: item.handle.clone().expect("a replace has the old handle"),
                deps: item.deps.clone(),
                deposed: true,
                live: None,
            }),
            _ => {}
        }
    }
    out
}

/// What to record *before* a create whose interruption would leave a resource the next plan
/// could not recognize as the stack's: a bucket (S3 tags it by a second call, so a crash in
/// between leaves it untagged) and a replacement (the new name's suffix, and the old half as
/// deposed). The handle has no id yet and the attributes are empty: the next plan compares the
/// live resource with the stack, adopts it, and deletes what is deposed.
fn intent(item: &Item, desired: &Spec) -> Option<Record> {
    let handle = Handle {
        kind: desired.kind(),
        name: desired.name().to_string(),
        id: String::new(),
        extra: Extra::default(),
    };
    match item.action {
        Action::Create if item.record.is_none() && desired.kind() == Kind::Bucket => Some(record(
            &item.address,
            handle,
            Attrs::new(),
            item.deps.clone(),
            item.suffix,
        )),
        Action::Replace => {
            let mut rec = record(
                &item.address,
                handle,
                Attrs::new(),
                item.deps.clone(),
                item.suffix,
            );
            if let Some(old) = &item.record {
                rec.deposed = old.deposed.clone();
            }
            rec.deposed.push(item.handle.clone()?);
            Some(rec)
        }
        _ => None,
    }
}

/// What an apply holds while it runs: the references as they become known and the state's
/// records as they are written.
struct Applied {
    refs: Mutex<Refs>,
    records: Mutex<BTreeMap<Address, Record>>,
    /// Ids of the resources this apply created or updated, by address.
    acted: Mutex<BTreeMap<Address, String>>,
    /// What was made ahead of a create (see `Spec::create_ahead`), by address.
    ahead: Mutex<BTreeMap<Address, String>>,
}

impl Applied {
    /// `node`'s desired spec with the references known so far.
    fn desired(&self, plan: &Plan, node: &Node) -> Result<Spec> {
        spec(&plan.stack, &plan.facts, &self.refs.lock().unwrap(), node)
    }
}

/// Applies `plan`: forward phase, then delete phase; records every step in `store`.
pub async fn apply(c: &Clients, plan: &Plan, store: &Store, reporter: &Reporter) -> Result<Report> {
    let dels = deletions(plan);
    let protected: Vec<&Handle> = dels
        .iter()
        .filter(|d| !d.deposed)
        .map(|d| &d.handle)
        .collect();
    check_protected(c, plan.stack.protect, &protected).await?;

    let applied = Applied {
        refs: Mutex::new(plan.refs.clone()),
        records: Mutex::new(plan.snapshot.records.clone()),
        acted: Mutex::new(BTreeMap::new()),
        ahead: Mutex::new(BTreeMap::new()),
    };
    let mut report = Report::default();
    let unchanged = record_unchanged(c, plan, store, &applied, &mut report).await?;

    let forward: Vec<&Item> = plan
        .items
        .iter()
        .filter(|i| matches!(i.action, Action::Create | Action::Update | Action::Replace))
        .collect();
    let (errors, deferred) = forward_phase(c, plan, &forward, store, reporter, &applied).await;
    for item in &forward {
        report.state_changed = true;
        match item.action {
            Action::Create | Action::Replace => report.added += 1,
            Action::Update => report.changed += 1,
            _ => {}
        }
    }
    let mut last: Vec<Address> = unchanged;
    last.extend(deferred);
    if errors.is_empty() {
        let deleted = delete_phase(c, &dels, &mut report, reporter).await;
        last.extend(forget_deposed(&deleted, &applied));
    } else {
        report.errors = errors;
    }
    let records = applied.records.lock().unwrap();
    report.last_writes.puts = last
        .iter()
        .filter_map(|address| records.get(address).cloned())
        .collect();
    Ok(report)
}

/// Resources that need no change but whose state entry is missing or stale (adopted by tags,
/// or recorded before a crash): recorded without touching AWS, with the release (their
/// addresses are returned for the last writes). Entries of resources gone already are dropped
/// then too.
async fn record_unchanged(
    c: &Clients,
    plan: &Plan,
    store: &Store,
    applied: &Applied,
    report: &mut Report,
) -> Result<Vec<Address>> {
    let mut stale_records = Vec::new();
    let records = &applied.records;
    for item in plan.items.iter().filter(|i| i.action == Action::NoOp) {
        match (&item.node, &item.live) {
            (Some(node), Some(live)) => {
                let desired = applied.desired(plan, node)?;
                let attrs = desired.attributes();
                let stale = item
                    .record
                    .as_ref()
                    .is_none_or(|r| r.attributes != attrs || r.handle.id != live.id);
                if stale {
                    let handle = super::plan::handle_of(&desired, live);
                    let mut rec =
                        record(&item.address, handle, attrs, item.deps.clone(), item.suffix);
                    if let Some(old) = &item.record {
                        rec.deposed = old.deposed.clone();
                    }
                    records.lock().unwrap().insert(item.address.clone(), rec);
                    stale_records.push(item.address.clone());
                    report.state_changed = true;
                }
            }
            (None, None) if !item.deposed => {
                records.lock().unwrap().remove(&item.address);
                report.last_writes.removes.push(item.address.clone());
                report.state_changed = true;
            }
            // A deposed resource already gone (a crash after its delete, before the record
            // forgot it): what it owned may be left (a compute environment's launch template
            // is deleted after it), then its entry.
            (None, None) => {
                if let Some(handle) = &item.handle {
                    resources::delete(c, handle, &|_: &str| {}).await?;
                }
                let updated = {
                    let mut records = records.lock().unwrap();
                    records.get_mut(&item.address).map(|rec| {
                        rec.deposed.retain(|h| Some(h) != item.handle.as_ref());
                        rec.clone()
                    })
                };
                if let Some(rec) = updated {
                    store.put(&rec).await?;
                    report.state_changed = true;
                }
            }
            _ => {}
        }
    }
    Ok(stale_records)
}

/// Creates, updates and replaces (the new half) in dependency order, independent ones at
/// once. Task i acts on forward[i]; task n + i records its result. A dependent waits for the
/// action only: it needs the id, which is known before the state has it (a crash in between
/// leaves a tagged resource, which the next plan adopts).
async fn forward_phase(
    c: &Clients,
    plan: &Plan,
    forward: &[&Item],
    store: &Store,
    reporter: &Reporter,
    applied: &Applied,
) -> (Vec<anyhow::Error>, Vec<Address>) {
    let n = forward.len();
    let mut waits: Vec<Vec<After>> = forward
        .iter()
        .map(|item| {
            item.deps
                .iter()
                .filter_map(|d| forward.iter().position(|other| &other.address == d))
                .map(|j| {
                    if needs_only_existence(item.address.kind, forward[j].address.kind) {
                        After::Ready(j)
                    } else {
                        After::Done(j)
                    }
                })
                .collect()
        })
        .collect();
    waits.extend((0..n).map(|i| vec![After::Done(i)]));
    // Task 2n + i makes ahead what forward[i]'s create needs of nobody (see
    // `Spec::create_ahead`); the create waits for it.
    for (i, wait) in waits.iter_mut().take(n).enumerate() {
        wait.push(After::Done(2 * n + i));
    }
    waits.extend((0..n).map(|_| vec![]));
    let results: Mutex<Vec<Option<Record>>> = Mutex::new(vec![None; n]);
    let acted = std::sync::atomic::AtomicUsize::new(0);
    // Records of the last actions: nothing runs any more when they finish, so their write
    // would be a round trip of its own; it goes with the release instead.
    let deferred: Mutex<Vec<Address>> = Mutex::new(Vec::new());
    let errors = run_dag(&waits, |i, ready| {
        let results = &results;
        let acted = &acted;
        let deferred = &deferred;
        async move {
            if i >= 2 * n {
                return create_ahead(c, plan, forward[i - 2 * n], applied).await;
            }
            if i < n {
                let rec = act(c, plan, forward[i], store, reporter, applied, ready).await;
                acted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                results.lock().unwrap()[i] = Some(rec?);
                return Ok(());
            }
            let rec = results.lock().unwrap()[i - n]
                .take()
                .context("a result recorded twice")?;
            if acted.load(std::sync::atomic::Ordering::SeqCst) == n {
                deferred.lock().unwrap().push(rec.address.clone());
            } else {
                store.put(&rec).await?;
            }
            applied
                .records
                .lock()
                .unwrap()
                .insert(rec.address.clone(), rec);
            Ok(())
        }
    })
    .await;
    (errors, deferred.into_inner().unwrap())
}

/// The part of a create that needs no other resource, made at once (see
/// `Spec::create_ahead`). Only for plain creates: a replacement records its intent first (the
/// new name), and what it made ahead of that could be lost by a crash.
async fn create_ahead(c: &Clients, plan: &Plan, item: &Item, applied: &Applied) -> Result<()> {
    let Some(node) = item.node.as_ref().filter(|_| item.action == Action::Create) else {
        return Ok(());
    };
    let desired = applied.desired(plan, node)?;
    let made = desired
        .create_ahead(c, &plan.stack.tags())
        .await
        .with_context(|| format!("{} (creating)", item.address))?;
    if let Some(made) = made {
        applied
            .ahead
            .lock()
            .unwrap()
            .insert(item.address.clone(), made);
    }
    Ok(())
}

/// Whether a `dependent` needs of its `dependency` only that it exists (its id), not that it is
/// complete: an instance profile takes a role without its policies, a job definition names
/// its roles (Batch reads their policies when a job runs, not at registration), and a role's
/// policy names buckets by ARN (IAM does not look at them). The compute environment is the one
/// that needs its roles whole: Batch checks them when it creates it.
fn needs_only_existence(dependent: Kind, dependency: Kind) -> bool {
    matches!(
        (dependent, dependency),
        (Kind::InstanceProfile, Kind::Role)
            | (Kind::JobDefinition, Kind::Role)
            | (Kind::Role, Kind::Bucket)
    )
}

/// One forward action: the spec rebuilt from the ids known now, the intent recorded where a
/// crash could hide what is created, then the create or update. Returns the record to write.
async fn act(
    c: &Clients,
    plan: &Plan,
    item: &Item,
    store: &Store,
    reporter: &Reporter,
    applied: &Applied,
    ready: Ready,
) -> Result<Record> {
    let node = item
        .node
        .as_ref()
        .context("a forward action without a node")?;
    let mut desired = applied.desired(plan, node)?;
    if let Some(made) = applied.ahead.lock().unwrap().get(&item.address) {
        desired.made_ahead(made.clone());
    }
    if let Spec::JobQueue(queue) = &mut desired {
        // Environments this apply created or updated were waited VALID by their own action.
        let acted = applied.acted.lock().unwrap();
        queue.known_valid = item
            .deps
            .iter()
            .filter_map(|d| acted.get(d).cloned())
            .collect();
    }
    let attrs = desired.attributes();
    if let Some((name, _)) = attrs.iter().find(|(_, v)| is_unknown(v)) {
        bail!(
            "{}: {name} is still unknown when its turn came (a missing dependency)",
            item.address
        );
    }
    if let Some(intent) = intent(item, &desired) {
        store.put(&intent).await?;
        applied
            .records
            .lock()
            .unwrap()
            .insert(item.address.clone(), intent);
    }
    let (verb, done) = match item.action {
        Action::Create => ("Creating", "Creation complete"),
        Action::Update => ("Modifying", "Modifications complete"),
        _ => ("Creating replacement", "Replacement created"),
    };
    let task = reporter.start(&item.address.to_string(), verb);
    let tags = plan.stack.tags();
    // A create tells when the resource exists (before its settings): its id is then known
    // to the dependents that need no more (see `needs_only_existence`).
    let exists = |id: &str| {
        applied
            .refs
            .lock()
            .unwrap()
            .ids
            .insert(item.address.clone(), id.to_string());
        ready.signal();
    };
    let result = {
        let progress = |s: &str| task.status(s);
        match item.action {
            Action::Update => {
                let live = item
                    .live
                    .as_ref()
                    .context("an update without a live resource")?;
                let changed: Vec<String> = item.diffs.iter().map(|d| d.name.clone()).collect();
                desired.update(c, live, &changed, &tags, &progress).await
            }
            _ => desired.create(c, &tags, &progress, &exists).await,
        }
    };
    let handle = match result {
        Ok(handle) => {
            task.finish(done);
            handle
        }
        Err(e) => {
            task.finish("failed");
            return Err(e.context(format!("{} ({})", item.address, verb.to_lowercase())));
        }
    };
    applied
        .refs
        .lock()
        .unwrap()
        .ids
        .insert(item.address.clone(), handle.id.clone());
    applied
        .acted
        .lock()
        .unwrap()
        .insert(item.address.clone(), handle.id.clone());
    let mut rec = record(&item.address, handle, attrs, item.deps.clone(), item.suffix);
    if let Some(old) = &item.record {
        rec.deposed = old.deposed.clone();
    }
    if item.action == Action::Replace {
        rec.deposed.push(
            item.handle
                .clone()
                .context("a replace without the old handle")?,
        );
    }
    Ok(rec)
}

/// Deposed handles that are gone leave their records; returns the addresses whose records
/// changed, for the last writes.
fn forget_deposed(deleted: &[&Deletion], applied: &Applied) -> Vec<Address> {
    let mut by_address: BTreeMap<&Address, Vec<&Handle>> = BTreeMap::new();
    for d in deleted {
        if d.deposed {
            by_address.entry(&d.address).or_default().push(&d.handle);
        }
    }
    let mut records = applied.records.lock().unwrap();
    let mut changed = Vec::new();
    for (address, gone) in by_address {
        if let Some(rec) = records.get_mut(address) {
            rec.deposed.retain(|h| !gone.contains(&h));
            changed.push(address.clone());
        }
    }
    changed
}

/// Deletes in reverse dependency order; returns what was deleted. The entries of removed (not
/// deposed) resources are forgotten with the release (see [`Report::last_writes`]).
async fn delete_phase<'a>(
    c: &Clients,
    dels: &'a [Deletion],
    report: &mut Report,
    reporter: &Reporter,
) -> Vec<&'a Deletion> {
    if dels.is_empty() {
        return vec![];
    }
    report.state_changed = true;
    // X's deletion waits for every other that depends on X to be gone (or ready: see
    // `resources::delete_known`, an environment gone before its launch template).
    let waits: Vec<Vec<After>> = dels
        .iter()
        .enumerate()
        .map(|(i, x)| {
            dels.iter()
                .enumerate()
                .filter(|(j, y)| *j != i && y.address != x.address && y.deps.contains(&x.address))
                .map(|(j, _)| After::Ready(j))
                .collect()
        })
        .collect();
    // Task n + i does ahead what dels[i] can before all its dependents are gone (see
    // `resources::delete_ahead`); the delete waits for it. A compute environment's is
    // disabling it, at once; a role's is removing its policies, once what uses the role is
    // gone: its dependents, but for an instance profile what uses the profile (the profile
    // itself only has to let the role go before the role is deleted).
    let n = dels.len();
    let ahead_waits: Vec<Vec<After>> = dels
        .iter()
        .enumerate()
        .map(|(i, x)| match x.handle.kind {
            Kind::Role => waits[i]
                .iter()
                .flat_map(|w| match *w {
                    After::Ready(j) | After::Done(j)
                        if dels[j].handle.kind == Kind::InstanceProfile =>
                    {
                        waits[j].clone()
                    }
                    other => vec![other],
                })
                .collect(),
            _ => vec![],
        })
        .collect();
    let mut waits = waits;
    for (i, wait) in waits.iter_mut().enumerate() {
        wait.push(After::Done(n + i));
    }
    waits.extend(ahead_waits);
    let ahead: Vec<std::sync::atomic::AtomicBool> = (0..n)
        .map(|_| std::sync::atomic::AtomicBool::new(false))
        .collect();
    let done: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    let errors = run_dag(&waits, |i, ready| {
        let d = &dels[i % n];
        let done = &done;
        let ahead = &ahead;
        async move {
            if i >= n {
                let did = resources::delete_ahead(c, &d.handle, d.live.as_ref(), &|_| {}).await;
                ahead[i - n].store(did, std::sync::atomic::Ordering::SeqCst);
                return Ok(());
            }
            let label = if d.deposed {
                format!("{} ({})", d.address, d.handle.name)
            } else {
                d.address.to_string()
            };
            let task = reporter.start(&label, "Destroying");
            let result = {
                let progress = |s: &str| task.status(s);
                let gone = |_: &str| ready.signal();
                let ahead = ahead[i].load(std::sync::atomic::Ordering::SeqCst);
                resources::delete_known(c, &d.handle, d.live.as_ref(), ahead, &progress, &gone)
                    .await
            };
            match result {
                Ok(()) => {
                    task.finish("Destruction complete");
                    done.lock().unwrap().push(i);
                }
                Err(e) => {
                    task.finish("failed");
                    return Err(e.context(format!("{label} (destroying)")));
                }
            }
            Ok(())
        }
    })
    .await;
    let done = done.into_inner().unwrap();
    report.destroyed += dels
        .iter()
        .enumerate()
        .filter(|(i, d)| done.contains(i) && !d.deposed)
        .count();
    // A replacement's old half counts once, with the replacement, as Terraform does.
    report.destroyed += dels
        .iter()
        .enumerate()
        .filter(|(i, d)| done.contains(i) && d.deposed)
        .count();
    report.errors.extend(errors);
    report.last_writes.removes.extend(
        done.iter()
            .map(|&i| &dels[i])
            .filter(|d| !d.deposed)
            .map(|d| d.address.clone()),
    );
    done.into_iter().map(|i| &dels[i]).collect()
}

/// Destroys everything `plan` (a destroy plan) lists, then clears the stack's records.
pub async fn destroy(c: &Clients, plan: &Plan, reporter: &Reporter) -> Result<Report> {
    let dels = deletions(plan);
    let protected: Vec<&Handle> = dels.iter().map(|d| &d.handle).collect();
    check_protected(c, plan.stack.protect, &protected).await?;
    let mut report = Report::default();
    delete_phase(c, &dels, &mut report, reporter).await;
    if report.errors.is_empty() && !plan.snapshot.records.is_empty() {
        // The entries of resources gone already too.
        report
            .last_writes
            .removes
            .extend(plan.snapshot.records.keys().cloned());
        report.state_changed = true;
    }
    Ok(report)
}

/// Joins several errors into one (apply may fail in more than one place at once).
pub fn join_errors(errors: Vec<anyhow::Error>) -> anyhow::Error {
    if errors.len() == 1 {
        return errors.into_iter().next().unwrap();
    }
    let text: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
    anyhow!("{} actions failed:\n  {}", errors.len(), text.join("\n  "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn dag_runs_dependencies_first_and_stops_after_a_failure() {
        // 0 <- 1 <- 2, and 3 independent.
        let waits = vec![vec![], vec![After::Done(0)], vec![After::Done(1)], vec![]];
        let order = Mutex::new(Vec::new());
        let errors = run_dag(&waits, |i, _| {
            let order = &order;
            async move {
                order.lock().unwrap().push(i);
                Ok(())
            }
        })
        .await;
        assert!(errors.is_empty());
        let order = order.into_inner().unwrap();
        let pos = |i| order.iter().position(|&x| x == i).unwrap();
        assert!(pos(0) < pos(1) && pos(1) < pos(2));
        assert_eq!(order.len(), 4);

        let ran = Mutex::new(Vec::new());
        let errors = run_dag(&waits, |i, _| {
            let ran = &ran;
            async move {
                ran.lock().unwrap().push(i);
                if i == 0 {
                    anyhow::bail!("boom")
                }
                Ok(())
            }
        })
        .await;
        assert_eq!(errors.len(), 1);
        assert!(
            !ran.into_inner().unwrap().contains(&2),
            "dependents of a failure never start"
        );
    }

    #[tokio::test]
    async fn a_task_that_says_it_is_ready_lets_its_ready_dependents_start_before_it_ends() {
        // 0 finishes only once 1 ran; 1 waits for 0 to be ready. 2 waits for 0 to be done.
        let waits = vec![vec![], vec![After::Ready(0)], vec![After::Done(0)]];
        let one_ran = tokio::sync::Notify::new();
        let order = Mutex::new(Vec::new());
        let errors = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            run_dag(&waits, |i, ready| {
                let (one_ran, order) = (&one_ran, &order);
                async move {
                    if i == 0 {
                        ready.signal();
                        one_ran.notified().await;
                    } else if i == 1 {
                        one_ran.notify_one();
                    }
                    order.lock().unwrap().push(i);
                    Ok(())
                }
            }),
        )
        .await
        .expect("a ready dependent did not start before its dependency ended");
        assert!(errors.is_empty());
        assert_eq!(order.into_inner().unwrap(), vec![1, 0, 2]);
    }
}
