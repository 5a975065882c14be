//! The shape of a stack file (docs/design.md, "Schema"): which keys exist where and what type each
//! holds. The shape check runs on the file as written, before any overlay, so a typo in an
//! `[env.NAME]` that is not chosen or in a `gpu` sub-table that is dropped is still caught.

use super::diag::Ctx;
use super::tree::{Node, Val};

pub(crate) enum Ty {
    Bool,
    Int,
    Str,
    List(&'static Ty),
    /// A table with fixed keys.
    Record(&'static [(&'static str, &'static Ty)]),
    /// A table whose keys the user names (resources, variables), every value of one type.
    Map(&'static Ty),
    /// `[env.NAME]`: each value is an overlay of the root (less `env` itself).
    Envs,
}

impl Ty {
    pub fn describe(&self) -> String {
        match self {
            Ty::Bool => "a boolean".into(),
            Ty::Int => "an integer".into(),
            Ty::Str => "a string".into(),
            Ty::List(inner) => match inner {
                Ty::Record(_) | Ty::Map(_) => "an array of tables".into(),
                other => format!(
                    "an array of {}s",
                    other
                        .describe()
                        .trim_start_matches("a ")
                        .trim_start_matches("an ")
                ),
            },
            Ty::Record(_) | Ty::Map(_) | Ty::Envs => "a table".into(),
        }
    }

    pub fn field(&self, name: &str) -> Option<&'static Ty> {
        match self {
            Ty::Record(fields) => fields.iter().find(|(n, _)| *n == name).map(|(_, t)| *t),
            _ => None,
        }
    }
}

static BOOL: Ty = Ty::Bool;
static INT: Ty = Ty::Int;
static STR: Ty = Ty::Str;
static STRS: Ty = Ty::List(&STR);

pub(crate) static STACK: Ty = Ty::Record(&[
    ("name", &STR),
    ("region", &STR),
    ("account", &STR),
    ("state_table", &STR),
]);
pub(crate) static NETWORK: Ty = Ty::Record(&[
    ("vpc", &STR),
    ("subnets", &STRS),
    ("security_groups", &STRS),
    ("s3_endpoint", &BOOL),
]);
pub(crate) static BUCKET: Ty = Ty::Record(&[
    ("versioning", &BOOL),
    ("expire_noncurrent_days", &INT),
    ("kms_key", &STR),
]);
pub(crate) static REPOSITORY: Ty = Ty::Record(&[("keep_images", &INT), ("scan_on_push", &BOOL)]);
pub(crate) static LOGS: Ty = Ty::Record(&[("retention_days", &INT)]);
pub(crate) static COMPUTE: Ty = Ty::Record(&[
    ("type", &STR),
    ("min_vcpus", &INT),
    ("max_vcpus", &INT),
    ("instance_types", &STRS),
    ("root_volume_gb", &INT),
    ("allocation_strategy", &STR),
    ("bid_percentage", &INT),
    ("state", &STR),
]);
pub(crate) static QUEUE: Ty =
    Ty::Record(&[("priority", &INT), ("compute", &STRS), ("state", &STR)]);
pub(crate) static RULE: Ty = Ty::Record(&[
    ("on_status_reason", &STR),
    ("on_reason", &STR),
    ("on_exit_code", &STR),
    ("action", &STR),
]);
static RULES: Ty = Ty::List(&RULE);
pub(crate) static RETRY: Ty = Ty::Record(&[("attempts", &INT), ("rules", &RULES)]);
static STR_MAP: Ty = Ty::Map(&STR);
static MATRIX: Ty = Ty::Map(&STRS);
pub(crate) static JOB: Ty = Ty::Record(&[
    ("queue", &STR),
    ("image", &STR),
    ("command", &STRS),
    ("vcpus", &INT),
    ("memory_mib", &INT),
    ("gpus", &INT),
    ("timeout_s", &INT),
    ("retry", &RETRY),
    ("env", &STR_MAP),
    ("secrets", &STR_MAP),
    ("matrix", &MATRIX),
]);
static BUCKETS: Ty = Ty::Map(&BUCKET);
static REPOSITORIES: Ty = Ty::Map(&REPOSITORY);
static COMPUTES: Ty = Ty::Map(&COMPUTE);
static QUEUES: Ty = Ty::Map(&QUEUE);
static JOBS: Ty = Ty::Map(&JOB);
static ENVS: Ty = Ty::Envs;

pub(crate) static ROOT: Ty = Ty::Record(&[
    ("stack", &STACK),
    ("gpu", &BOOL),
    ("protect", &BOOL),
    ("env", &ENVS),
    ("network", &NETWORK),
    ("buckets", &BUCKETS),
    ("repositories", &REPOSITORIES),
    ("logs", &LOGS),
    ("compute", &COMPUTES),
    ("queues", &QUEUES),
    ("jobs", &JOBS),
]);

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn where_(path: &str) -> String {
    if path.is_empty() {
        "at the top level".into()
    } else {
        format!("in `[{path}]`")
    }
}

/// Where the check stands: GPU overlays may not nest, and an env overlay may not hold `env`.
#[derive(Clone, Copy)]
struct Scope {
    root: bool,
    in_gpu: bool,
    in_env: bool,
}

/// Checks the whole file: unknown keys and wrong types at any depth, in every env overlay and
/// every `gpu` sub-table. A wrong value is reported once and becomes [`Val::Invalid`].
pub(crate) fn check_root(root: &mut Node, ctx: &mut Ctx) {
    check(
        root,
        &ROOT,
        "",
        ctx,
        Scope {
            root: true,
            in_gpu: false,
            in_env: false,
        },
    );
}

/// Checks a value typed on the command line against the type its key holds.
pub(crate) fn check_value(node: &mut Node, ty: &Ty, path: &str, ctx: &mut Ctx) {
    check(
        node,
        ty,
        path,
        ctx,
        Scope {
            root: false,
            in_gpu: true,
            in_env: true,
        },
    );
}

fn check(node: &mut Node, ty: &Ty, path: &str, ctx: &mut Ctx, scope: Scope) {
    if matches!(node.val, Val::Invalid) {
        return;
    }
    let ok = matches!(
        (ty, &node.val),
        (Ty::Bool, Val::Bool(_))
            | (Ty::Int, Val::Int(_))
            | (Ty::Str, Val::Str(_))
            | (Ty::List(_), Val::Array(_))
            | (Ty::Record(_) | Ty::Map(_) | Ty::Envs, Val::Table(_))
    );
    if !ok {
        let found = match &node.val {
            Val::Str(s) => format!("a string (\"{s}\")"),
            Val::Int(i) => format!("an integer ({i})"),
            Val::Float(x) => format!("a float ({x})"),
            Val::Bool(b) => format!("a boolean ({b})"),
            other => other.kind().to_string(),
        };
        ctx.err(
            &node.at,
            path,
            format!("expected {}, found {found}", ty.describe()),
        );
        node.val = Val::Invalid;
        return;
    }
    let inner = Scope {
        root: false,
        ..scope
    };
    match ty {
        Ty::Bool | Ty::Int | Ty::Str => {}
        Ty::List(elem) => {
            if let Val::Array(items) = &mut node.val {
                for (i, item) in items.iter_mut().enumerate() {
                    check(item, elem, &format!("{path}[{i}]"), ctx, inner);
                }
            }
        }
        Ty::Record(fields) => {
            let Val::Table(entries) = &mut node.val else {
                return;
            };
            for (key, child) in entries.iter_mut() {
                let child_path = join(path, key);
                if key == "gpu" && !scope.root {
                    check_gpu(child, ty, &child_path, ctx, scope);
                    continue;
                }
                if key == "env" && scope.root && scope.in_env {
                    ctx.err(
                        &child.key_at,
                        &child_path,
                        "an environment overlay cannot hold `env`",
                    );
                    child.val = Val::Invalid;
                    continue;
                }
                match fields.iter().find(|(n, _)| n == key) {
                    Some((_, fty)) => check(child, fty, &child_path, ctx, inner),
                    None => {
                        let mut msg = format!("unknown key `{key}` {}", where_(path));
                        if let Some(near) = nearest(key, fields.iter().map(|(n, _)| *n)) {
                            msg.push_str(&format!(" (did you mean `{near}`?)"));
                        }
                        ctx.err(&child.key_at, &child_path, msg);
                        child.val = Val::Invalid;
                    }
                }
            }
        }
        Ty::Map(elem) => {
            let Val::Table(entries) = &mut node.val else {
                return;
            };
            for (key, child) in entries.iter_mut() {
                let child_path = join(path, key);
                if key == "gpu" && child.is_table() {
                    check_gpu(child, ty, &child_path, ctx, scope);
                    continue;
                }
                check(child, elem, &child_path, ctx, inner);
            }
        }
        Ty::Envs => {
            let Val::Table(entries) = &mut node.val else {
                return;
            };
            for (key, child) in entries.iter_mut() {
                let child_path = join(path, key);
                check(
                    child,
                    &ROOT,
                    &child_path,
                    ctx,
                    Scope {
                        root: true,
                        in_gpu: false,
                        in_env: true,
                    },
                );
            }
        }
    }
}

/// A `gpu` sub-table holds a partial copy of its parent, checked against the parent's type.
fn check_gpu(node: &mut Node, parent: &Ty, path: &str, ctx: &mut Ctx, scope: Scope) {
    if scope.in_gpu {
        ctx.err(
            &node.key_at,
            path,
            "a `gpu` overlay cannot hold another `gpu` table",
        );
        node.val = Val::Invalid;
        return;
    }
    if !node.is_table() {
        ctx.err(
            &node.at,
            path,
            format!(
                "expected a table (the GPU overlay of its parent), found {}",
                node.val.kind()
            ),
        );
        node.val = Val::Invalid;
        return;
    }
    check(
        node,
        parent,
        path,
        ctx,
        Scope {
            root: false,
            in_gpu: true,
            in_env: scope.in_env,
        },
    );
}

/// The known key closest to a typo, when it is close enough to be a likely intent.
pub(crate) fn nearest<'a>(word: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (edit_distance(word, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["max_vcpus", "min_vcpus", "instance_types"];
        assert_eq!(nearest("max_vcpu", keys.iter().copied()), Some("max_vcpus"));
        assert_eq!(
            nearest("instance_type", keys.iter().copied()),
            Some("instance_types")
        );
        assert_eq!(nearest("colour", keys.iter().copied()), None);
    }

    #[test]
    fn describes_types_for_messages() {
        assert_eq!(STRS.describe(), "an array of strings");
        assert_eq!(RULES.describe(), "an array of tables");
        assert_eq!(JOB.describe(), "a table");
    }
}
