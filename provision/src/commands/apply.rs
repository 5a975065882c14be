//! `provision apply`: make the account match the stack, under the state lock.

use std::process::ExitCode;

use anyhow::{bail, Result};

use crate::aws::Clients;
use crate::cli::ApplyArgs;
use crate::engine::saved::SavedPlan;
use crate::engine::{self, apply, plan, progress::Reporter, render};
use crate::state::Lock;

pub async fn run(args: ApplyArgs) -> Result<ExitCode> {
    let stack = engine::load_stack(&args.stack)?;
    let saved = args
        .plan
        .as_deref()
        .map(|p| SavedPlan::read(p, &stack))
        .transpose()?;
    // A saved plan was reviewed when it was made (as with `terraform apply PLAN`).
    let approved = args.auto_approve || saved.is_some();
    engine::require_confirmation_possible(approved, "apply")?;

    let clients = Clients::new(&stack.region).await?;
    let store = engine::store(&clients, &stack);
    // The table's status is read beside the credentials check, whose error wins.
    let (account, table) =
        engine::join_first_error_wins(crate::aws::check_access(&clients), store.table_status())
            .await?;
    store.ensure_table(table).await?;
    let lock = Lock::acquire(&store, "apply").await?;
    let result = locked(&clients, &stack, &account, &store, saved, approved).await;
    let released = lock.release().await;
    let code = result?;
    released?;
    Ok(code)
}

async fn locked(
    clients: &Clients,
    stack: &crate::stack::Stack,
    account: &str,
    store: &crate::state::Store,
    saved: Option<SavedPlan>,
    approved: bool,
) -> Result<ExitCode> {
    // apply always reads AWS: it must not act on a stale picture.
    let account = std::future::ready(Ok(account.to_string()));
    let plan = plan::plan(clients, stack, account, plan::Refresh::Live).await?;
    if let Some(saved) = &saved {
        if saved.serial != plan.snapshot.serial {
            bail!(
                "the saved plan is stale: the state changed since it was made (serial {} -> {}); run `provision plan` again",
                saved.serial,
                plan.snapshot.serial
            );
        }
        if &render::json(&plan)["changes"] != saved.changes() {
            bail!("the saved plan is stale: the live resources or the stack changed since it was made; run `provision plan` again");
        }
    }
    print!("{}", render::text(&plan));
    if plan.has_changes()
        && !approved
        && !engine::confirm("\nDo you want to perform these actions?")?
    {
        eprintln!("Apply cancelled.");
        return Ok(ExitCode::from(1));
    }
    let reporter = Reporter::new();
    let report = apply::apply(clients, &plan, store, &reporter).await?;
    if report.state_changed {
        store.bump_serial(Some(stack.gpu)).await?;
    }
    if !report.errors.is_empty() {
        return Err(apply::join_errors(report.errors)
            .context("apply failed part way; run apply again to converge"));
    }
    println!(
        "\nApply complete! Resources: {} added, {} changed, {} destroyed.",
        report.added, report.changed, report.destroyed
    );
    Ok(ExitCode::SUCCESS)
}
