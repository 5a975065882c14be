//! Rendering a plan: text like Terraform's, and the stable JSON of docs/design.md,
//! "Output contracts".

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::plan::{Action, Item, Plan};
use super::show;

fn heading(item: &Item) -> (&'static str, String) {
    let what = if item.deposed {
        format!("{} (deposed {})", item.address, item.name)
    } else {
        item.address.to_string()
    };
    match item.action {
        Action::Create => ("+", format!("# {what} will be created")),
        Action::Update => {
            let how = if item.address.kind == crate::resources::Kind::JobDefinition {
                "updated (new revision, the old one deregistered)"
            } else {
                "updated in place"
            };
            ("~", format!("# {what} will be {how}"))
        }
        Action::Replace => (
            "-/+",
            format!("# {what} must be replaced (create before destroy)"),
        ),
        Action::Delete => ("-", format!("# {what} will be destroyed")),
        Action::NoOp => (" ", String::new()),
    }
}

/// The plan as text: one block per change, then the summary line.
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    if !plan.has_changes() {
        let _ = writeln!(
            out,
            "No changes. {}/{} matches the stack.",
            plan.stack.name, plan.stack.env
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "Plan: 0 to add, 0 to change, 0 to destroy.");
        return out;
    }
    let _ = writeln!(
        out,
        "Provision will perform the following actions on {}/{}:",
        plan.stack.name, plan.stack.env
    );
    for item in plan.changes() {
        let (sign, heading) = heading(item);
        let _ = writeln!(out);
        let drift = match (item.drift, item.action) {
            (false, _) => "",
            (true, Action::Create) => "  (deleted outside provision)",
            (true, _) => "  (changed outside provision)",
        };
        let _ = writeln!(out, "  {heading}{drift}");
        let name = match &item.new_name {
            Some(new) => format!("{} -> {new}", item.name),
            None => item.name.clone(),
        };
        let _ = writeln!(out, "{sign:>5} {} ({name})", item.address);
        for d in &item.diffs {
            match item.action {
                Action::Create => {
                    let _ = writeln!(out, "        + {} = {}", d.name, show(&d.after));
                }
                Action::Delete => {
                    let _ = writeln!(out, "        - {} = {}", d.name, show(&d.before));
                }
                _ => {
                    let forces = if d.forces_replacement {
                        "  # forces replacement"
                    } else {
                        ""
                    };
                    match (&d.before, &d.after) {
                        // Maps (job environment, inline policies): only the keys that differ.
                        (Value::Object(before), Value::Object(after)) => {
                            let keys: std::collections::BTreeSet<&String> =
                                before.keys().chain(after.keys()).collect();
                            for key in keys {
                                let (b, a) = (before.get(key), after.get(key));
                                if b != a {
                                    let b = b.map(show).unwrap_or_else(|| "(none)".into());
                                    let a = a.map(show).unwrap_or_else(|| "(none)".into());
                                    let _ = writeln!(
                                        out,
                                        "        ~ {}.{key} = {b} -> {a}{forces}",
                                        d.name
                                    );
                                }
                            }
                        }
                        _ => {
                            let _ = writeln!(
                                out,
                                "        ~ {} = {} -> {}{forces}",
                                d.name,
                                show(&d.before),
                                show(&d.after)
                            );
                        }
                    }
                }
            }
        }
    }
    let s = plan.summary();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Plan: {} to add, {} to change, {} to destroy.",
        s.add, s.change, s.destroy
    );
    let idle: Vec<String> = plan
        .stack
        .compute
        .iter()
        .filter(|(_, ce)| ce.min_vcpus > 0)
        .map(|(k, ce)| {
            format!(
                "compute.{k} keeps {} vCPUs running while idle (min_vcpus > 0)",
                ce.min_vcpus
            )
        })
        .collect();
    for line in idle {
        let _ = writeln!(out, "Note: {line}.");
    }
    out
}

/// The plan as JSON, `format_version` 1.
pub fn json(plan: &Plan) -> Value {
    let changes: Vec<Value> = plan
        .changes()
        .map(|item| {
            json!({
                "address": item.address,
                "type": item.address.kind.as_str(),
                "action": item.action,
                "drift": item.drift,
                "name": item.name,
                "new_name": item.new_name,
                "deposed": item.deposed,
                "attributes": item.diffs,
            })
        })
        .collect();
    json!({
        "format_version": 1,
        "stack": plan.stack.name,
        "env": plan.stack.env,
        "serial": plan.snapshot.serial,
        "changes": changes,
        "summary": plan.summary(),
    })
}
