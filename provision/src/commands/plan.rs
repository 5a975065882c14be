//! `provision plan`: what apply would change, desired vs recorded vs live.

use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;

use crate::aws::Clients;
use crate::cli::PlanArgs;
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
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rendered)?);
    } else {
        print!("{}", render::text(&plan));
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
        write_whole(path, &serde_json::to_vec_pretty(&saved)?)
            .with_context(|| format!("writing {}", path.display()))?;
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

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
fn write_whole(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut builder = tempfile::Builder::new();
    // The mode `std::fs::write` gives (0666 less the umask), not tempfile's private 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path)?;
    Ok(())
}
