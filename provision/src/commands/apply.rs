//! `provision apply`: make the account match the stack, under the state lock.

use std::process::ExitCode;

use anyhow::{bail, Result};

use crate::aws::Clients;
use crate::cli::ApplyArgs;
use crate::engine::saved::SavedPlan;
use crate::engine::{self, apply, plan, progress::Reporter, render, Locked};
use crate::state::Finish;

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
    let (lock, planned) = engine::plan_locked(&clients, &stack, &store, Locked::Apply).await?;
    let mut finish = Finish::default();
    let result = match planned {
        Ok(plan) => locked(&clients, &stack, &store, plan, saved, approved, &mut finish).await,
        Err(e) => Err(e),
    };
    // The serial's bump and the last records go with the release, in one write.
    let released = lock.release_with(finish).await;
    let code = result?;
    released?;
    Ok(code)
}

async fn locked(
    clients: &Clients,
    stack: &crate::stack::Stack,
    store: &crate::state::Store,
    plan: plan::Plan,
    saved: Option<SavedPlan>,
    approved: bool,
    finish: &mut Finish,
) -> Result<ExitCode> {
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
    let mut report = apply::apply(clients, &plan, store, &reporter).await?;
    *finish = std::mem::take(&mut report.last_writes);
    if report.state_changed {
        finish.bump = Some(Some(stack.gpu));
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
