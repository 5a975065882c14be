//! From a file and the command line to a resolved [`Stack`], in the order of docs/design.md,
//! "Resolution order": the
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
            ctx.diags.push(
                Location::Path(path.to_path_buf()),
                format!("cannot read the stack file: {err}"),
                None,
            );
            return Err(ctx.diags);
        }
    };
    load_str(&text, &mut ctx, env, sets)
}

/// `load` on text already read; `ctx.path` names it in errors.
pub(crate) fn load_str(
    text: &str,
    ctx: &mut Ctx,
    env: Option<&str>,
    sets: &[String],
) -> Result<Stack, Diagnostics> {
    let index = LineIndex::new(text);
    let doc = match toml_edit::Document::parse(text) {
        Ok(doc) => doc,
        Err(err) => {
            let at = err
                .span()
                .map_or(Origin::File { line: 1, col: 1 }, |s| index.origin(s.start));
            // Name what the parser stopped at (`duplicate key` alone does not say which).
            let near = err
                .span()
                .and_then(|s| text.get(s))
                .map(str::trim)
                .filter(|t| !t.is_empty() && t.len() <= 60 && !t.contains('\n'))
                .map_or(String::new(), |t| format!(" (at `{t}`)"));
            ctx.err(
                &at,
                "",
                format!("invalid TOML: {}{near}", err.message().trim()),
            );
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
                let list = if defined.is_empty() {
                    "none".to_string()
                } else {
                    defined.join(", ")
                };
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
                ctx.diags.push(
                    Location::Path(ctx.path.clone()),
                    "the stack is incomplete",
                    None,
                );
            }
            Err(std::mem::take(&mut ctx.diags).sorted())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STACK: &str = r#"
[stack]
name = "demo"
region = "eu-west-1"

[env.prod]
gpu = true
compute.c.max_vcpus = 4

[compute.c]
type = "spot"
max_vcpus = 16
instance_types = ["c5.xlarge"]
[compute.c.gpu]
instance_types = ["g5.xlarge"]

[queues.q]
compute = ["c"]
"#;

    fn load(env: Option<&str>, sets: &[&str]) -> Result<Stack, Diagnostics> {
        let mut ctx = Ctx::new("s.toml".into());
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        load_str(STACK, &mut ctx, env, &sets)
    }

    #[test]
    fn resolution_order() {
        let s = load(None, &[]).unwrap();
        assert_eq!(
            (s.env.as_str(), s.gpu, s.compute["c"].max_vcpus),
            ("default", false, 16)
        );
        assert_eq!(s.compute["c"].instance_types, ["c5.xlarge"]);
        assert!(s.jobs.is_empty() && s.buckets.is_empty());
        assert_eq!(s.queues["q"].priority, 1);
        let s = load(Some("prod"), &[]).unwrap();
        assert_eq!((s.gpu, s.compute["c"].max_vcpus), (true, 4));
        assert_eq!(s.compute["c"].instance_types, ["g5.xlarge"]);
        // --set gpu comes before the GPU overlays, every other --set after them.
        let s = load(
            Some("prod"),
            &["gpu=false", "compute.c.instance_types=m5.large"],
        )
        .unwrap();
        assert_eq!((s.gpu, s.compute["c"].max_vcpus), (false, 4));
        assert_eq!(s.compute["c"].instance_types, ["m5.large"]);
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let err = load(Some("prod"), &["compute.c.max_vcpus=-1"]).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(
            err.to_string(),
            "--set compute.c.max_vcpus=-1: error: must be at least 0, found -1 (key `compute.c.max_vcpus`)"
        );
        let err = load(Some("qa"), &["x=1"]).unwrap_err();
        assert_eq!(err.len(), 2, "{err}");
    }
}
