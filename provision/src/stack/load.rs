//! From a file and the command line to a resolved [`Stack`], in DESIGN.md §2.1's order: the
//! file; its `[env.NAME]` overlay; `--set gpu=…`/`--set protect=…`; the GPU overlays; every
//! other `--set`. Nothing here touches the network.

use std::path::Path;
use std::sync::Arc;

use super::diag::{Ctx, Diagnostics, Location};
use super::model::Stack;
use super::tree::{self, LineIndex, Node, Origin, Val};
use super::{schema, set, validate};

pub fn load(path: &Path, env: Option<&str>, sets: &[String]) -> Result<Stack, Diagnostics> {
    let mut ctx = Ctx::new(path.to_path_buf());
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            ctx.diags.push(Location::Path(path.to_path_buf()), format!("cannot read the stack file: {err}"), None);
            return Err(ctx.diags);
        }
    };
    load_str(&text, &mut ctx, env, sets)
}

/// `load` on text already read; `ctx.path` names it in errors.
pub(crate) fn load_str(text: &str, ctx: &mut Ctx, env: Option<&str>, sets: &[String]) -> Result<Stack, Diagnostics> {
    let index = LineIndex::new(text);
    let doc = match toml_edit::Document::parse(text) {
        Ok(doc) => doc,
        Err(err) => {
            let at = err.span().map_or(Origin::File { line: 1, col: 1 }, |s| index.origin(s.start));
            ctx.err(&at, "", format!("invalid TOML: {}", err.message().trim()));
            return Err(std::mem::take(&mut ctx.diags).sorted());
        }
    };
    let mut root = tree::from_document(&doc, &index);
    schema::check_root(&mut root, ctx);

    let sets: Vec<set::SetArg> = sets.iter().filter_map(|raw| set::parse(raw, ctx)).collect();

    // 2. The environment overlay.
    let envs = root.table_mut().and_then(|t| t.remove("env"));
    let env_name = env.unwrap_or("default");
    if let Some(chosen) = env {
        let overlay = envs.as_ref().and_then(|e| e.get(chosen));
        match overlay {
            Some(overlay) => {
                if overlay.is_table() {
                    tree::merge(&mut root, overlay.clone());
                }
            }
            None => {
                let defined: Vec<&str> = envs
                    .as_ref()
                    .and_then(Node::table)
                    .map(|t| t.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let at = Origin::Arg(Arc::from(format!("--env {chosen}")));
                let list = if defined.is_empty() { "none".to_string() } else { defined.join(", ") };
                ctx.err(
                    &at,
                    "",
                    format!("environment `{chosen}` is not defined in {} (no `[env.{chosen}]`; defined: {list})", ctx.path.display()),
                );
            }
        }
    }

    // 3. The switches, so that `--set gpu=true` selects the GPU overlays.
    for s in sets.iter().filter(|s| s.is_switch()) {
        set::apply(&mut root, s, ctx);
    }

    // 4. The GPU overlays.
    let gpu = matches!(root.get("gpu").map(|n| &n.val), Some(Val::Bool(true)));
    tree::apply_gpu(&mut root, gpu, true);

    // 5. Every other `--set`.
    for s in sets.iter().filter(|s| !s.is_switch()) {
        set::apply(&mut root, s, ctx);
    }

    let stack = validate::build(&root, env_name, envs.as_ref(), &ctx.path.clone(), ctx);
    match stack {
        Some(stack) if ctx.diags.is_empty() => Ok(stack),
        _ => {
            if ctx.diags.is_empty() {
                // `build` returns None only after reporting; keep the contract if it ever did not.
                ctx.diags.push(Location::Path(ctx.path.clone()), "the stack is incomplete", None);
            }
            Err(std::mem::take(&mut ctx.diags).sorted())
        }
    }
}
