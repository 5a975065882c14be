//! `--set key.path=value` (docs/design.md, "Resolution order"): one value replaced after the
//! overlays, like `terraform -var`. The path must name a key the schema knows in a table the stack
//! has; the value is typed by that key.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::diag::Ctx;
use super::schema::{self, Ty};
use super::tree::{self, Node, Origin, Val};

pub(crate) struct SetArg {
    pub path: Vec<String>,
    pub value: String,
    pub at: Origin,
}

impl SetArg {
    pub fn key(&self) -> String {
        self.path.join(".")
    }

    /// `gpu` and `protect` apply before the GPU overlays (docs/design.md, "Resolution order", step
    /// 3).
    pub fn is_switch(&self) -> bool {
        self.path.len() == 1 && (self.path[0] == "gpu" || self.path[0] == "protect")
    }
}

/// Splits `a.b.c=value`; a malformed argument is reported and skipped.
pub(crate) fn parse(raw: &str, ctx: &mut Ctx) -> Option<SetArg> {
    let at = Origin::Arg(Arc::from(format!("--set {raw}")));
    let Some((key, value)) = raw.split_once('=') else {
        ctx.err(
            &at,
            "",
            "expected KEY=VALUE (for example `compute.spot.max_vcpus=32`)",
        );
        return None;
    };
    let path: Vec<String> = key
        .trim()
        .split('.')
        .map(|s| s.trim().to_string())
        .collect();
    if path.iter().any(String::is_empty) {
        ctx.err(
            &at,
            key,
            format!("`{key}` is not a key path (expected names joined by `.`)"),
        );
        return None;
    }
    Some(SetArg {
        path,
        value: value.to_string(),
        at,
    })
}

/// Replaces the value at the argument's path in `root`: walks the path through the schema and
/// the tree, refusing what cannot be set, then sets the last key.
pub(crate) fn apply(root: &mut Node, set: &SetArg, ctx: &mut Ctx) {
    let key = set.key();
    let mut ty: &Ty = &schema::ROOT;
    let mut node = root;
    for (i, seg) in set.path.iter().enumerate() {
        let here = set.path[..i].join(".");
        if let Some(refusal) = refusal(i, seg) {
            ctx.err(&set.at, &key, refusal);
            return;
        }
        let child_ty = match child_type(ty, seg, &here, &key) {
            Ok(child_ty) => child_ty,
            Err(msg) => {
                ctx.err(&set.at, &key, msg);
                return;
            }
        };
        let Some(table) = node.table_mut() else {
            // Already reported as a wrong type in the file.
            return;
        };
        if i + 1 == set.path.len() {
            if let Some(mut value) = typed_value(&set.value, child_ty, &set.at, &key, ctx) {
                schema::check_value(&mut value, child_ty, &key, ctx);
                table.insert(seg.clone(), value);
            }
            return;
        }
        if let Err(msg) = ensure_section(table, seg, (ty, child_ty), &set.at, &here, &key) {
            ctx.err(&set.at, &key, msg);
            return;
        }
        node = table.get_mut(seg).expect("present or inserted");
        ty = child_ty;
    }
}

/// Why the `i`-th segment `seg` of a path cannot be set, if it cannot: the overlays are already
/// applied when `--set` runs.
fn refusal(i: usize, seg: &str) -> Option<&'static str> {
    if seg == "gpu" && i > 0 {
        Some("`gpu` sub-tables are merged or dropped before --set applies; set the key itself")
    } else if i == 0 && seg == "env" {
        Some("--set cannot change an environment overlay; choose it with --env and set the key itself")
    } else {
        None
    }
}

/// The schema type of `seg` inside a table of type `ty` at `here`, or why there is none.
fn child_type<'t>(ty: &'t Ty, seg: &str, here: &str, key: &str) -> Result<&'t Ty, String> {
    match ty {
        Ty::Record(fields) => ty.field(seg).ok_or_else(|| {
            let mut msg = format!(
                "`{key}` does not exist: no key `{seg}` {}",
                if here.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("in `[{here}]`")
                }
            );
            if let Some(near) = schema::nearest(seg, fields.iter().map(|(n, _)| *n)) {
                msg.push_str(&format!(" (did you mean `{near}`?)"));
            }
            msg
        }),
        Ty::Map(elem) => Ok(elem),
        _ => Err(format!(
            "`{key}` does not exist: `{here}` is {}, not a table",
            ty.describe()
        )),
    }
}

/// Makes sure the table `seg` exists inside `table` (of type `ty`; `seg` of type `child_ty`) so
/// the path can go on: an optional section the file leaves out (`[logs]`, `retry`) is created
/// empty; an entry of a user map (a compute environment, a job) is never invented.
fn ensure_section(
    table: &mut BTreeMap<String, Node>,
    seg: &str,
    (ty, child_ty): (&Ty, &Ty),
    at: &Origin,
    here: &str,
    key: &str,
) -> Result<(), String> {
    if table.contains_key(seg) {
        return Ok(());
    }
    let user_named = matches!(ty, Ty::Map(_));
    if user_named || !matches!(child_ty, Ty::Record(_)) {
        let existing: Vec<&str> = table.keys().map(String::as_str).collect();
        let known = if existing.is_empty() {
            "none is defined".to_string()
        } else {
            format!("defined: {}", existing.join(", "))
        };
        return Err(format!(
            "`{key}` does not exist: the stack has no `{}` ({known})",
            schema::join(here, seg)
        ));
    }
    table.insert(
        seg.to_string(),
        Node {
            val: Val::Table(Default::default()),
            at: at.clone(),
            key_at: at.clone(),
        },
    );
    Ok(())
}

/// The value of `--set`, read as the type its key holds: booleans and integers strictly,
/// strings as typed (TOML quotes optional), lists as a TOML array or comma-separated, tables as
/// TOML inline tables.
fn typed_value(raw: &str, ty: &Ty, at: &Origin, key: &str, ctx: &mut Ctx) -> Option<Node> {
    let node = |val| Node {
        val,
        at: at.clone(),
        key_at: at.clone(),
    };
    let trimmed = raw.trim();
    match ty {
        Ty::Bool => match trimmed {
            "true" => Some(node(Val::Bool(true))),
            "false" => Some(node(Val::Bool(false))),
            _ => {
                ctx.err(
                    at,
                    key,
                    format!("expected a boolean (true or false), found `{raw}`"),
                );
                None
            }
        },
        Ty::Int => match trimmed.parse::<i64>() {
            Ok(i) => Some(node(Val::Int(i))),
            Err(_) => {
                ctx.err(at, key, format!("expected an integer, found `{raw}`"));
                None
            }
        },
        Ty::Str if !(trimmed.starts_with('"') || trimmed.starts_with('\'')) => {
            Some(node(Val::Str(raw.to_string())))
        }
        Ty::List(Ty::Str) if !trimmed.starts_with('[') => {
            let items = if trimmed.is_empty() {
                Vec::new()
            } else {
                trimmed
                    .split(',')
                    .map(|s| node(Val::Str(s.trim().to_string())))
                    .collect()
            };
            Some(node(Val::Array(items)))
        }
        _ => match trimmed.parse::<toml_edit::Value>() {
            Ok(value) => Some(tree::from_value(&value, at)),
            Err(err) => {
                ctx.err(
                    at,
                    key,
                    format!(
                        "expected {} (as TOML), cannot parse `{raw}`: {}",
                        ty.describe(),
                        err.message().trim()
                    ),
                );
                None
            }
        },
    }
}
