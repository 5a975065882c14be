//! `provision output`: what jobs and people need from an applied stack, from its state.

use std::process::ExitCode;

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};

use crate::aws::Clients;
use crate::cli::OutputArgs;
use crate::engine::{self, log_group_address};
use crate::resources::Kind;
use crate::state::by_kind;

pub async fn run(args: OutputArgs) -> Result<ExitCode> {
    let stack = engine::load_stack(&args.stack)?;
    let clients = Clients::new(&stack.region).await?;
    let store = engine::store(&clients, &stack);
    let snapshot = store.load().await?;
    if snapshot.records.is_empty() {
        bail!(
            "{} has no applied resources in state table {}: run `provision apply` first",
            store.pk,
            store.table
        );
    }
    let map = |kind: Kind, id: bool| -> Value {
        let mut m = Map::new();
        for (key, rec) in by_kind(&snapshot.records, kind) {
            m.insert(
                key.to_string(),
                json!(if id { &rec.handle.id } else { &rec.handle.name }),
            );
        }
        Value::Object(m)
    };
    let outputs = json!({
        "buckets": map(Kind::Bucket, false),
        "repositories": map(Kind::Repository, true),
        "queues": map(Kind::JobQueue, true),
        "job_definitions": map(Kind::JobDefinition, true),
        "gpu": snapshot.gpu.unwrap_or(stack.gpu),
        "log_group": snapshot.records.get(&log_group_address()).map(|r| r.handle.name.clone()),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outputs)?);
    } else {
        for (section, value) in outputs.as_object().into_iter().flatten() {
            match value {
                Value::Object(entries) => {
                    for (key, v) in entries {
                        println!("{section}.{key} = {}", v.as_str().unwrap_or_default());
                    }
                }
                Value::String(s) => println!("{section} = {s}"),
                other => println!("{section} = {other}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
