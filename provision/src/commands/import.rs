//! `provision import ADDRESS NAME_OR_ARN`: adopt an existing resource into the state, tagged
//! as the stack's, after showing what the next apply would change on it (Terraform's
//! `import`). The resource must bear the name the stack derives for the address: the tool
//! finds every resource by its derived name.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::adopt;
use crate::aws::Clients;
use crate::cli::ImportArgs;
use crate::engine::{self, plan, Facts, Node, Refs};
use crate::resources::{Address, ReadAhead, Spec, TagRead};
use crate::stack::Stack;
use crate::state::{self, Lock, Snapshot, Store};

pub async fn run(args: ImportArgs) -> Result<ExitCode> {
    let stack = engine::load_stack(&args.stack)?;
    let node = importable_node(&stack, &args.address)?;
    let name = adopt::resource_name(node.address.kind, &stack.region, &args.resource)?;
    engine::require_confirmation_possible(args.auto_approve, "import")?;

    let clients = Clients::new(&stack.region).await?;
    let store = engine::store(&clients, &stack);
    let (account, table) = engine::join_first_error_wins(
        engine::stack_account(&clients, &stack),
        store.table_status(),
    )
    .await?;
    store.ensure_table(table).await?;
    let lock = Lock::acquire(&store, "import").await?;
    let result = locked(
        &clients,
        &stack,
        &account,
        &store,
        &node,
        &name,
        args.auto_approve,
    )
    .await;
    let released = lock.release().await;
    let code = result?;
    released?;
    Ok(code)
}

/// The stack's node at `address`, when its kind can be imported.
fn importable_node(stack: &Stack, address: &Address) -> Result<Node> {
    let nodes = engine::graph(stack);
    let Some(node) = nodes.into_iter().find(|n| &n.address == address) else {
        bail!(
            "`{address}` is not an address of {}/{} (the plan prints every address, e.g. bucket.KEY, queue.KEY)",
            stack.name,
            stack.env
        );
    };
    if !adopt::IMPORTABLE.contains(&node.address.kind) {
        let kinds: Vec<&str> = adopt::IMPORTABLE.iter().map(|k| k.as_str()).collect();
        bail!(
            "{address}: {} resources cannot be imported (apply creates them); import adopts {}",
            node.address.kind.as_str(),
            kinds.join(", ")
        );
    }
    Ok(node)
}

/// The desired spec of `node`, with the ids the state already records.
fn desired(stack: &Stack, facts: &Facts, snapshot: &Snapshot, node: &Node) -> Result<Spec> {
    let mut refs = Refs::default();
    for (address, record) in &snapshot.records {
        refs.ids.insert(address.clone(), record.handle.id.clone());
        refs.suffixes.insert(address.clone(), record.suffix);
    }
    engine::spec(stack, facts, &refs, node)
}

async fn locked(
    c: &Clients,
    stack: &Stack,
    account: &str,
    store: &Store,
    node: &Node,
    name: &str,
    approved: bool,
) -> Result<ExitCode> {
    let (facts, snapshot) = tokio::try_join!(
        async {
            let first =
                engine::first_facts(c, stack, std::future::ready(Ok(account.to_string()))).await?;
            let network = engine::network(c, stack, &first.vpc_id).await?;
            anyhow::Ok(first.with_network(network))
        },
        store.load(),
    )?;
    if let Some(record) = snapshot.records.get(&node.address) {
        bail!(
            "{} is already in the state as {} ({}); `provision state rm {}` forgets it first",
            node.address,
            record.handle.name,
            record.handle.id,
            node.address
        );
    }
    let spec = desired(stack, &facts, &snapshot, node)?;
    if spec.name() != name {
        bail!(
            "{} is named `{}` in this stack, not `{name}`: provision finds every resource by the \
             name it derives, so it can adopt only a resource of that name",
            node.address,
            spec.name()
        );
    }
    let tags = stack.tags();
    let live = spec
        .read(
            c,
            &tags,
            TagRead::Read,
            &ReadAhead::default(),
            &Default::default(),
        )
        .await?
        .with_context(|| {
            format!(
                "no {} named `{name}` in {} of account {account}",
                node.address.kind.as_str(),
                stack.region
            )
        })?;
    if let Some((other_stack, other_env)) = adopt::foreign_owner(&live, stack) {
        bail!(
            "`{name}` is tagged as a resource of {other_stack}/{other_env}, not {}/{}: import that stack's file instead",
            stack.name,
            stack.env
        );
    }
    print!("{}", show_import(node, &spec, &live, &tags));
    if !approved && !engine::confirm("\nDo you want to import this resource?")? {
        eprintln!("Import cancelled.");
        return Ok(ExitCode::from(1));
    }
    adopt::tag(c, node.address.kind, name, &live.id, &tags).await?;
    let record = state::record(
        &node.address,
        plan::handle_of(&spec, &live),
        live.attrs.clone(),
        node.deps.clone(),
        None,
    );
    store.put(&record).await?;
    store.bump_serial(snapshot.gpu.or(Some(stack.gpu))).await?;
    println!(
        "\nImport complete! {} ({name}) is now in the state of {}; `provision plan` shows what apply will change on it.",
        node.address, store.pk
    );
    Ok(ExitCode::SUCCESS)
}

/// What import does: the tags it adds, and the attributes the next apply changes.
fn show_import(
    node: &Node,
    spec: &Spec,
    live: &crate::resources::Live,
    tags: &std::collections::BTreeMap<String, String>,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "  # {} will be imported", node.address);
    let _ = writeln!(out, "  <= {} ({})", node.address, spec.name());
    for (k, v) in tags {
        let _ = writeln!(out, "        + tag {k} = {v:?}");
    }
    let diffs = plan::diff(node.address.kind, &spec.attributes(), &live.attrs);
    if diffs.is_empty() {
        let _ = writeln!(
            out,
            "\nIt matches the stack: the next apply changes nothing on it."
        );
    } else {
        let _ = writeln!(out, "\nThe next apply will change on it:");
        for d in &diffs {
            let forces = if d.forces_replacement {
                "  # forces replacement"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "        ~ {} = {} -> {}{forces}",
                d.name,
                engine::show(&d.before),
                engine::show(&d.after)
            );
        }
    }
    out
}
