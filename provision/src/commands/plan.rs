//! `provision plan`: what apply would change, desired vs recorded vs live.

use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;

use crate::aws::Clients;
use crate::cli::PlanArgs;
use crate::cost;
use crate::engine::{self, plan, render};

pub async fn run(args: PlanArgs) -> Result<ExitCode> {
    let stack = engine::load_stack(&args.stack)?;
    if !args.refresh && args.out.is_some() {
        // apply checks a saved plan against the state serial only; one made without reading
        // AWS could act on resources that changed since the last apply.
        anyhow::bail!("--out needs a plan made from live state: drop --refresh=false to save a plan for `apply`");
    }
    let clients = Clients::new(&stack.region).await?;
    // No lock to take first: the access check, the facts and the state are read at once.
    let (facts, snapshot) =
        plan::prepare(&clients, &stack, crate::aws::check_access(&clients)).await?;
    let refresh = if args.refresh {
        plan::Refresh::Live
    } else {
        plan::Refresh::StateOnly
    };
    let plan = plan::plan(&clients, &stack, facts, snapshot, refresh).await?;
    let rendered = render::json(&plan);
    let estimate = cost::stack_cost(&stack, &cost::PriceTable::builtin()?, Default::default());
    if args.json {
        // An added key: the format's other keys stay as they were.
        let mut shown = rendered.clone();
        shown["cost_estimate"] = json!({
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
    if let Some(path) = &args.out {
        let saved = json!({
            "format_version": 1,
            "saved_plan": true,
            "stack": stack.name,
            "env": stack.env,
            "gpu": stack.gpu,
            "serial": plan.snapshot.serial,
            "plan": rendered,
        });
        // Written whole or not at all: a half-written plan must never be applied.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&saved)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
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
