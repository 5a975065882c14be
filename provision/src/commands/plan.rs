//! `provision plan`: what apply would change, desired vs recorded vs live.

use std::process::ExitCode;

use anyhow::Result;

use crate::aws::Clients;
use crate::cli::PlanArgs;
use crate::cost;
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
        crate::engine::stack_account(&clients, &stack),
        refresh,
    )
    .await?;
    let estimate = cost::stack_cost(&stack, &cost::PriceTable::builtin()?, Default::default());
    if args.json {
        // An added key: the format's other keys stay as they were.
        let mut shown = render::json(&plan);
        shown["cost_estimate"] = serde_json::json!({
            "currency": estimate.currency,
            "full_scale_per_hour": estimate.full_scale_per_hour,
            "idle_per_hour": estimate.idle_per_hour,
            "prices_as_of": estimate.prices_as_of,
        });
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        print!("{}", render::text(&plan));
        println!("{}", estimate.summary_line());
    }
    warn_unplaceable_jobs(&stack)?;
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

/// Warns (stderr) about jobs that no instance type of their queue can hold: `submit` refuses
/// them, and better to learn it before the apply than at the first submit.
fn warn_unplaceable_jobs(stack: &crate::stack::Stack) -> Result<()> {
    let table = cost::PriceTable::builtin()?;
    for def in stack.job_definitions() {
        let job = def.job;
        let needs = cost::JobNeeds {
            vcpus: job.vcpus,
            memory_mib: job.memory_mib,
            gpus: job.gpus,
            timeout_s: job.timeout_s,
        };
        if let Err(no_fit) = cost::job_cost(stack, &def.key, &job.queue, needs, &table) {
            eprintln!("Warning: {no_fit}");
        }
    }
    Ok(())
}
