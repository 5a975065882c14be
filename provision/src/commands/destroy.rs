//! `provision destroy`: delete every resource of the stack, dependents first.

use std::process::ExitCode;

use anyhow::{bail, Result};

use crate::aws::Clients;
use crate::cli::DestroyArgs;
use crate::engine::{self, apply, plan, progress::Reporter, render};
use crate::state::Lock;

pub async fn run(args: DestroyArgs) -> Result<ExitCode> {
    let stack = engine::load_stack(&args.stack)?;
    engine::require_confirmation_possible(args.auto_approve, "destroy")?;
    let clients = Clients::new(&stack.region).await?;
    let store = engine::store(&clients, &stack);
    // The table is looked up beside the credentials check, whose error wins.
    let (account, table) =
        engine::join_first_error_wins(crate::aws::check_access(&clients), store.table_status())
            .await?;
    // No table: nothing was ever applied with this table in this region (every apply creates
    // it before its first change). Most likely the stack's region or state_table is not the
    // one that was applied; creating an empty table there would only hide that.
    if table.is_none() {
        bail!(
            "state table {} does not exist in {}: nothing was applied to {} there; check [stack] region and state_table",
            store.table,
            stack.region,
            store.pk
        );
    }
    let lock = Lock::acquire(&store, "destroy").await?;
    let result = async {
        let account = std::future::ready(Ok(account.clone()));
        let plan = plan::destroy_plan(&clients, &stack, account).await?;
        print!("{}", render::text(&plan));
        if plan.has_changes()
            && !args.auto_approve
            && !engine::confirm(&format!(
                "\nDo you really want to destroy every resource of {}/{}?",
                stack.name, stack.env
            ))?
        {
            eprintln!("Destroy cancelled.");
            return Ok(ExitCode::from(1));
        }
        let reporter = Reporter::new();
        let report = apply::destroy(&clients, &plan, &store, &reporter).await?;
        if report.state_changed {
            store.bump_serial(None).await?;
        }
        if !report.errors.is_empty() {
            return Err(apply::join_errors(report.errors)
                .context("destroy failed part way; run destroy again"));
        }
        println!(
            "\nDestroy complete! Resources: {} destroyed.",
            report.destroyed
        );
        Ok(ExitCode::SUCCESS)
    }
    .await;
    let released = lock.release().await;
    let code = result?;
    released?;
    Ok(code)
}
