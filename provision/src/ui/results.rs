//! What the stack's jobs produced, read from its buckets: every `training_summary.json` (a row
//! per dataset and model, and each epoch for the curves) and every prepared dataset (its
//! `preparation_config.json` and the files beside it).

use std::collections::BTreeMap;

use anyhow::Context;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::Value;

use crate::aws::Clients;
use crate::resources::Kind;
use crate::stack::Stack;

const SUMMARY: &str = "training_summary.json";
const PREPARATION: &str = "preparation_config.json";
/// Summaries and configs read at once.
const CONCURRENCY: usize = 8;

#[derive(Debug, Serialize)]
pub struct Results {
    /// Bucket key → name, from the state.
    pub buckets: BTreeMap<String, String>,
    pub models: Vec<ModelRow>,
    pub datasets: Vec<Dataset>,
}

/// One model trained on one dataset.
#[derive(Debug, Serialize)]
pub struct ModelRow {
    /// The summary's directory under `models/` (`instrument=1/start_date=.../end_date=...`).
    pub dataset: String,
    pub uri: String,
    pub model: String,
    pub device: Option<String>,
    pub best_epoch: Option<u64>,
    pub best_val_loss: Option<f64>,
    pub best_val_accuracy: Option<f64>,
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub samples_per_s: Option<f64>,
    pub parameters: Option<u64>,
    pub epochs: Vec<Epoch>,
}

#[derive(Debug, Serialize)]
pub struct Epoch {
    pub epoch: u64,
    pub train_loss: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
}

/// One prepared dataset.
#[derive(Debug, Serialize)]
pub struct Dataset {
    pub dataset: String,
    pub uri: String,
    pub rows: Option<u64>,
    /// Split → rows and class counts, as `prepare` recorded them.
    pub splits: BTreeMap<String, Value>,
    pub lookback: Option<u64>,
    pub horizon: Option<u64>,
    pub created_at: Option<String>,
    /// The objects beside the config: name → bytes.
    pub files: BTreeMap<String, i64>,
}

/// One object of a bucket.
struct Object {
    bucket: String,
    key: String,
    size: i64,
}

/// Reads every summary and dataset of the stack's buckets (names from the state).
pub async fn read(clients: &Clients, stack: &Stack) -> anyhow::Result<Results> {
    let snapshot = crate::engine::store(clients, stack).load().await?;
    let buckets: BTreeMap<String, String> = crate::state::by_kind(&snapshot.records, Kind::Bucket)
        .map(|(key, record)| (key.to_string(), record.handle.name.clone()))
        .collect();
    if buckets.is_empty() && !stack.buckets.is_empty() {
        anyhow::bail!(
            "{} has no applied buckets in state table {}: run `provision apply` first",
            stack.state_pk(),
            stack.state_table
        );
    }
    let mut objects = Vec::new();
    for bucket in buckets.values() {
        objects.extend(list_objects(clients, bucket).await?);
    }
    let models = summaries(clients, &objects).await?;
    let datasets = datasets(clients, &objects).await?;
    Ok(Results {
        buckets,
        models,
        datasets,
    })
}

/// Gigabytes stored in the stack's buckets (every version's current object), for the cost
/// estimate; `None` before the first apply.
pub async fn stored_gb(clients: &Clients, stack: &Stack) -> anyhow::Result<Option<f64>> {
    let snapshot = crate::engine::store(clients, stack).load().await?;
    let buckets: Vec<String> = crate::state::by_kind(&snapshot.records, Kind::Bucket)
        .map(|(_, record)| record.handle.name.clone())
        .collect();
    if buckets.is_empty() {
        return Ok(None);
    }
    let mut bytes = 0i64;
    for bucket in &buckets {
        bytes += list_objects(clients, bucket)
            .await?
            .iter()
            .map(|o| o.size)
            .sum::<i64>();
    }
    Ok(Some(bytes as f64 / 1e9))
}

async fn list_objects(clients: &Clients, bucket: &str) -> anyhow::Result<Vec<Object>> {
    let mut pages = clients
        .s3()
        .list_objects_v2()
        .bucket(bucket)
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.with_context(|| format!("ListObjectsV2 s3://{bucket}"))?;
        out.extend(page.contents().iter().filter_map(|o| {
            Some(Object {
                bucket: bucket.to_string(),
                key: o.key()?.to_string(),
                size: o.size().unwrap_or_default(),
            })
        }));
    }
    Ok(out)
}

async fn get_json(clients: &Clients, bucket: &str, key: &str) -> anyhow::Result<Value> {
    let out = clients
        .s3()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("GetObject s3://{bucket}/{key}"))?;
    let bytes = out
        .body
        .collect()
        .await
        .with_context(|| format!("reading s3://{bucket}/{key}"))?
        .into_bytes();
    serde_json::from_slice(&bytes).with_context(|| format!("s3://{bucket}/{key} is not JSON"))
}

/// `ml/models/instrument=1/d=2/training_summary.json` → `instrument=1/d=2`: the directory,
/// without the part up to the output root's `models/` or `datasets/`.
fn dataset_name(key: &str) -> String {
    let dir = key.rsplit_once('/').map_or("", |(d, _)| d);
    for root in ["models/", "datasets/"] {
        if let Some((_, rest)) = dir.split_once(root) {
            return rest.to_string();
        }
        if let Some(rest) = dir.strip_prefix(root.trim_end_matches('/')) {
            return rest.trim_start_matches('/').to_string();
        }
    }
    dir.to_string()
}

async fn summaries(clients: &Clients, objects: &[Object]) -> anyhow::Result<Vec<ModelRow>> {
    let found: Vec<&Object> = objects
        .iter()
        .filter(|o| o.key.rsplit('/').next() == Some(SUMMARY))
        .collect();
    let docs: Vec<(&Object, Value)> =
        stream::iter(found)
            .map(|o| async move {
                Ok::<_, anyhow::Error>((o, get_json(clients, &o.bucket, &o.key).await?))
            })
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
    let mut rows = Vec::new();
    for (object, doc) in docs {
        let Some(models) = doc.get("models").and_then(Value::as_object) else {
            continue;
        };
        for (name, m) in models {
            rows.push(model_row(object, name, m));
        }
    }
    Ok(rows)
}

fn model_row(object: &Object, name: &str, m: &Value) -> ModelRow {
    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
    let epochs: Vec<Epoch> = m
        .get("epochs")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|e| Epoch {
                    epoch: e.get("epoch").and_then(Value::as_u64).unwrap_or_default(),
                    train_loss: f(e, "train_loss"),
                    train_accuracy: f(e, "train_accuracy"),
                    val_loss: f(e, "val_loss"),
                    val_accuracy: f(e, "val_accuracy"),
                })
                .collect()
        })
        .unwrap_or_default();
    let best_epoch = m.get("best_epoch").and_then(Value::as_u64);
    let best = m.get("epochs").and_then(Value::as_array).and_then(|list| {
        list.iter()
            .find(|e| e.get("epoch").and_then(Value::as_u64) == best_epoch)
    });
    ModelRow {
        dataset: dataset_name(&object.key),
        uri: format!("s3://{}/{}", object.bucket, object.key),
        model: name.to_string(),
        device: m.get("device").and_then(Value::as_str).map(String::from),
        best_epoch,
        best_val_loss: best.and_then(|e| f(e, "val_loss")),
        best_val_accuracy: best.and_then(|e| f(e, "val_accuracy")),
        test_loss: f(m, "test_loss"),
        test_accuracy: f(m, "test_accuracy"),
        samples_per_s: best.and_then(|e| f(e, "samples_per_s")),
        parameters: m.get("parameters").and_then(Value::as_u64),
        epochs,
    }
}

async fn datasets(clients: &Clients, objects: &[Object]) -> anyhow::Result<Vec<Dataset>> {
    let configs: Vec<&Object> = objects
        .iter()
        .filter(|o| o.key.rsplit('/').next() == Some(PREPARATION))
        .collect();
    let docs: Vec<(&Object, Value)> =
        stream::iter(configs)
            .map(|o| async move {
                Ok::<_, anyhow::Error>((o, get_json(clients, &o.bucket, &o.key).await?))
            })
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
    Ok(docs
        .into_iter()
        .map(|(config, doc)| {
            let dir = config.key.rsplit_once('/').map_or("", |(d, _)| d);
            let files = objects
                .iter()
                .filter(|o| o.bucket == config.bucket)
                .filter_map(|o| {
                    let name = o.key.strip_prefix(dir)?.strip_prefix('/')?;
                    (!name.contains('/')).then(|| (name.to_string(), o.size))
                })
                .collect();
            Dataset {
                dataset: dataset_name(&config.key),
                uri: format!("s3://{}/{dir}", config.bucket),
                rows: doc.get("rows").and_then(Value::as_u64),
                splits: doc
                    .get("splits")
                    .and_then(Value::as_object)
                    .map(|s| s.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
                lookback: doc.get("lookback").and_then(Value::as_u64),
                horizon: doc.get("horizon").and_then(Value::as_u64),
                created_at: doc
                    .get("created_at")
                    .and_then(Value::as_str)
                    .map(String::from),
                files,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names_drop_the_output_root() {
        assert_eq!(
            dataset_name("ml/models/instrument=1/start_date=a/end_date=b/training_summary.json"),
            "instrument=1/start_date=a/end_date=b"
        );
        assert_eq!(
            dataset_name("datasets/instrument=2/preparation_config.json"),
            "instrument=2"
        );
        assert_eq!(dataset_name("x/training_summary.json"), "x");
    }
}
