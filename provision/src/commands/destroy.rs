//! `provision destroy`: delete every resource of the stack, dependents first.

use std::process::ExitCode;

use anyhow::Result;

use crate::aws::Clients;
use crate::cli::DestroyArgs;
use crate::engine::{self, apply, progress::Reporter, render, Locked};
use crate::state::Finish;

pub async fn run(args: DestroyArgs) -> Result<ExitCode> {
    let stack = engine::load_stack(&args.stack)?;
    engine::require_confirmation_possible(args.auto_approve, "destroy")?;
    let clients = Clients::new(&stack.region).await?;
    let store = engine::store(&clients, &stack);
    let (lock, planned) = engine::plan_locked(&clients, &stack, &store, Locked::Destroy).await?;
    let mut finish = Finish::default();
    let result = async {
        let plan = planned?;
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
        let mut report = apply::destroy(&clients, &plan, &reporter).await?;
        finish = std::mem::take(&mut report.last_writes);
        if report.state_changed {
            finish.bump = Some(None);
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
    // The serial's bump and the entries to forget go with the release, in one write.
    let released = lock.release_with(finish).await;
    let code = result?;
    released?;
    Ok(code)
}
