//! Which job definition a `JOB` argument names, and which `--var`s are matrix values and which
//! are extra environment. Pure: the commands call this before any AWS call.

use std::collections::BTreeMap;

use crate::stack::names::{is_injected_name, JobDefinitionSpec};
use crate::stack::Stack;

/// A resolved `JOB [--var K=V]...`.
#[derive(Debug)]
pub struct Selected<'a> {
    pub spec: JobDefinitionSpec<'a>,
    /// The `--var`s that are not the matrix key: extra environment for this run.
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectError {
    #[error("--var `{0}`: expected KEY=VALUE")]
    BadVar(String),
    #[error("--var `{0}`: `{1}` is not a valid environment variable name")]
    BadVarName(String, String),
    #[error("--var {0} is given more than once")]
    DuplicateVar(String),
    #[error("--var {0}: the stack sets {0} in every job's environment; it cannot be overridden")]
    InjectedVar(String),
    #[error("no job `{job}` in the stack; its jobs: {available}")]
    UnknownJob { job: String, available: String },
    #[error(
        "job `{job}` has a matrix over `{key}`: name one value with `{job}-VALUE` or \
         `--var {key}=VALUE` (values: {values})"
    )]
    MissingMatrixValue {
        job: String,
        key: String,
        values: String,
    },
    #[error("job `{job}` has no `{key}` value `{value}` (values: {values})")]
    UnknownMatrixValue {
        job: String,
        key: String,
        value: String,
        values: String,
    },
    #[error("`{job}` already picks {key}={picked}; --var {key}={given} contradicts it")]
    ConflictingMatrixValue {
        job: String,
        key: String,
        picked: String,
        given: String,
    },
    #[error("`{job}` is ambiguous: it names {candidates}")]
    Ambiguous { job: String, candidates: String },
}

/// Splits `KEY=VALUE` arguments, refusing malformed, duplicate and injected names.
pub fn parse_vars(vars: &[String]) -> Result<Vec<(String, String)>, SelectError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for raw in vars {
        let (key, value) = raw
            .split_once('=')
            .ok_or_else(|| SelectError::BadVar(raw.clone()))?;
        if !is_env_name(key) {
            return Err(SelectError::BadVarName(raw.clone(), key.to_string()));
        }
        if is_injected_name(key) {
            return Err(SelectError::InjectedVar(key.to_string()));
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(SelectError::DuplicateVar(key.to_string()));
        }
        out.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Resolves `job` (a job key, or `KEY-VALUE` of a matrix job) with `vars` from [`parse_vars`].
pub fn select<'a>(
    stack: &'a Stack,
    job: &str,
    vars: Vec<(String, String)>,
) -> Result<Selected<'a>, SelectError> {
    let specs = stack.job_definitions();
    let mut candidates: Vec<JobDefinitionSpec<'a>> =
        specs.iter().filter(|s| s.key == job).cloned().collect();
    if candidates.len() > 1 {
        let candidates = candidates
            .iter()
            .map(|s| format!("`{}`", s.name))
            .collect::<Vec<_>>();
        return Err(SelectError::Ambiguous {
            job: job.to_string(),
            candidates: candidates.join(", "),
        });
    }

    if let Some(spec) = candidates.pop() {
        let mut env: BTreeMap<String, String> = vars.into_iter().collect();
        if let Some(matrix) = &spec.job.matrix {
            // `train-a --var dataset=a` is redundant but fine; `--var dataset=b` contradicts.
            let picked = &spec.key[spec.job_key.len() + 1..];
            if let Some(given) = env.remove(&matrix.key) {
                if given != picked {
                    return Err(SelectError::ConflictingMatrixValue {
                        job: job.to_string(),
                        key: matrix.key.clone(),
                        picked: picked.to_string(),
                        given,
                    });
                }
            }
        }
        return Ok(Selected { spec, env });
    }

    let Some((job_key, definition)) = stack.jobs.get_key_value(job) else {
        return Err(SelectError::UnknownJob {
            job: job.to_string(),
            available: available(stack),
        });
    };
    let Some(matrix) = &definition.matrix else {
        // A plain job always has a spec of its own key; reaching here means the names disagree.
        return Err(SelectError::UnknownJob {
            job: job.to_string(),
            available: available(stack),
        });
    };
    let values = matrix.values.join(", ");
    let mut env: BTreeMap<String, String> = vars.into_iter().collect();
    let Some(value) = env.remove(&matrix.key) else {
        return Err(SelectError::MissingMatrixValue {
            job: job.to_string(),
            key: matrix.key.clone(),
            values,
        });
    };
    let key = format!("{job_key}-{value}");
    match specs
        .into_iter()
        .find(|s| s.job_key == job_key && s.key == key)
    {
        Some(spec) => Ok(Selected { spec, env }),
        None => Err(SelectError::UnknownMatrixValue {
            job: job.to_string(),
            key: matrix.key.clone(),
            value,
            values,
        }),
    }
}

/// `prepare, train-{a,b}`: every name `JOB` may take.
fn available(stack: &Stack) -> String {
    let names: Vec<String> = stack
        .jobs
        .iter()
        .map(|(key, job)| match &job.matrix {
            None => key.clone(),
            Some(m) => format!(
                "{key}-{{{}}} (or {key} --var {}=VALUE)",
                m.values.join(","),
                m.key
            ),
        })
        .collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::stack::*;

    fn job(command: &[&str], matrix: Option<(&str, &[&str])>) -> Job {
        Job {
            queue: "main".into(),
            image: Image::Repository(RepositoryImage {
                key: "runtime".into(),
                pin: Pin::Flavour,
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            vcpus: 1,
            memory_mib: 512,
            gpus: 0,
            timeout_s: None,
            retry: Retry {
                attempts: 1,
                rules: Retry::default_rules(),
            },
            env: BTreeMap::from([("DATA".to_string(), "d/{dataset}".to_string())]),
            secrets: BTreeMap::new(),
            matrix: matrix.map(|(key, values)| Matrix {
                key: key.into(),
                values: values.iter().map(|s| s.to_string()).collect(),
            }),
        }
    }

    fn stack() -> Stack {
        Stack {
            name: "demo".into(),
            region: "us-east-1".into(),
            account: None,
            state_table: "provision-state".into(),
            env: "dev".into(),
            gpu: false,
            protect: false,
            network: Network {
                vpc: Vpc::Default,
                subnets: vec![],
                security_groups: vec![],
                s3_endpoint: false,
            },
            buckets: BTreeMap::new(),
            repositories: BTreeMap::new(),
            logs: Logs {
                retention_days: None,
            },
            compute: BTreeMap::new(),
            queues: BTreeMap::new(),
            jobs: BTreeMap::from([
                ("prepare".to_string(), job(&["prep"], None)),
                (
                    "train".to_string(),
                    job(&["train", "{dataset}"], Some(("dataset", &["a", "b-2"]))),
                ),
            ]),
            source: PathBuf::from("demo.toml"),
        }
    }

    fn vars(v: &[&str]) -> Vec<(String, String)> {
        parse_vars(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn plain_job_keeps_every_var_as_env() {
        let s = stack();
        let sel = select(&s, "prepare", vars(&["X=1", "dataset=a"])).unwrap();
        assert_eq!(sel.spec.name, "demo-dev-prepare");
        assert_eq!(sel.env.len(), 2);
    }

    #[test]
    fn matrix_value_by_name_or_var() {
        let s = stack();
        let by_name = select(&s, "train-b-2", vars(&["X=1"])).unwrap();
        assert_eq!(by_name.spec.name, "demo-dev-train-b-2");
        assert_eq!(by_name.spec.command, ["train", "b-2"]);
        assert_eq!(
            by_name.env,
            BTreeMap::from([("X".to_string(), "1".to_string())])
        );
        let by_var = select(&s, "train", vars(&["dataset=a"])).unwrap();
        assert_eq!(by_var.spec.name, "demo-dev-train-a");
        assert_eq!(by_var.spec.env["DATA"], "d/a");
        assert!(by_var.env.is_empty());
        assert!(select(&s, "train-a", vars(&["dataset=a"])).is_ok());
    }

    #[test]
    fn matrix_errors_list_the_values() {
        let s = stack();
        let missing = select(&s, "train", vec![]).unwrap_err();
        assert!(matches!(missing, SelectError::MissingMatrixValue { .. }));
        assert!(missing.to_string().contains("a, b-2"), "{missing}");
        let unknown = select(&s, "train", vars(&["dataset=c"])).unwrap_err();
        assert!(unknown.to_string().contains("a, b-2"), "{unknown}");
        let conflict = select(&s, "train-a", vars(&["dataset=b-2"])).unwrap_err();
        assert!(matches!(
            conflict,
            SelectError::ConflictingMatrixValue { .. }
        ));
    }

    #[test]
    fn unknown_job_lists_the_jobs() {
        let err = select(&stack(), "nope", vec![]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no job `nope` in the stack; its jobs: prepare, train-{a,b-2} (or train --var dataset=VALUE)"
        );
    }

    #[test]
    fn bad_vars_are_refused() {
        let parse = |v: &str| parse_vars(&[v.to_string()]);
        assert!(matches!(parse("novalue"), Err(SelectError::BadVar(_))));
        assert!(matches!(parse("1X=2"), Err(SelectError::BadVarName(..))));
        assert!(matches!(
            parse("BUCKET_DATA=x"),
            Err(SelectError::InjectedVar(_))
        ));
        assert!(matches!(parse("STACK=x"), Err(SelectError::InjectedVar(_))));
        assert!(matches!(
            parse_vars(&["A=1".into(), "A=2".into()]),
            Err(SelectError::DuplicateVar(_))
        ));
        assert_eq!(
            parse("EMPTY=").unwrap(),
            vec![("EMPTY".to_string(), String::new())]
        );
    }
}
