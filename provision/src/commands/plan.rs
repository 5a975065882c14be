//! `provision plan`: what apply would change, desired vs recorded vs live.

use std::process::ExitCode;

use anyhow::Result;

use crate::aws::Clients;
use crate::cli::PlanArgs;
use crate::engine::saved::SavedPlan;
use crate::engine::{self, plan, render};

pub async fn run(args: PlanArgs) -> Result<ExitCode> {
    let stack = engine::load_stack(&args.stack)?;
    if !args.refresh && args.out.is_some() {
        // apply checks a saved plan against the state serial only; one made without reading
        // AWS could act on resources that changed since the last apply.
        anyhow::bail!("--out needs a plan made from live state: drop --refresh=false to save a plan for `apply`");
    }
    let clients = Clients::new(&stack.region).await?;
    let refresh = if args.refresh {
        plan::Refresh::Live
    } else {
        plan::Refresh::StateOnly
    };
    // No lock to take first: the access check, the facts and the state are read at once.
    let plan = plan::plan(
        &clients,
        &stack,
        crate::aws::check_access(&clients),
        refresh,
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&render::json(&plan))?);
    } else {
        print!("{}", render::text(&plan));
    }
    if let Some(path) = &args.out {
        SavedPlan::new(&plan).write(path)?;
        eprintln!(
            "Saved the plan to {}; apply it with `provision apply {}`.",
            path.display(),
            path.display()
        );
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
