//! Training (docs/design.md, "Runtime data contract"; docs/training.md): models, windowed batches,
//! the loop, checkpoints, summary, plot.
//!
//! `run` takes checked options and the datasets of this job's share and trains every requested
//! model on each, resuming from checkpoints and skipping what is complete.

pub mod checkpoint;
pub mod data;
pub mod device;
pub mod fit;
pub mod fused;
#[cfg(feature = "cuda")]
pub mod fused_cuda;
pub mod fused_gru;
pub mod model;
pub mod plot;
pub mod probe;
pub mod signal;
pub mod store;
pub mod summary;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use data::{Split, SPLITS};
pub use device::DeviceKind;
use fit::{Data, Job, Outcome};
pub use model::ModelKind;
use store::Store;
use summary::{DatasetInfo, Summary};

#[derive(Debug, Clone)]
pub struct Options {
    pub models: Vec<ModelKind>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    pub device: DeviceKind,
    pub workers: usize,
}

/// One prepared dataset: `datasets/instrument={id}/start_date={d}/end_date={d}/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRef {
    pub instrument: String,
    pub start_date: String,
    pub end_date: String,
}

impl DatasetRef {
    fn rel(&self) -> String {
        format!(
            "instrument={}/start_date={}/end_date={}",
            self.instrument, self.start_date, self.end_date
        )
    }
    pub fn data_key(&self) -> String {
        format!("datasets/{}", self.rel())
    }
    pub fn models_key(&self) -> String {
        format!("models/{}", self.rel())
    }
}

/// Every dataset under `ROOT/datasets/`, sorted by instrument (numerically), then dates.
pub fn discover(root: &Store) -> Result<Vec<DatasetRef>> {
    let mut found = Vec::new();
    for inst in root.list_dirs("datasets")? {
        let Some(instrument) = inst.strip_prefix("instrument=") else {
            continue;
        };
        for start in root.list_dirs(&format!("datasets/{inst}"))? {
            let Some(start_date) = start.strip_prefix("start_date=") else {
                continue;
            };
            for end in root.list_dirs(&format!("datasets/{inst}/{start}"))? {
                let Some(end_date) = end.strip_prefix("end_date=") else {
                    continue;
                };
                found.push(DatasetRef {
                    instrument: instrument.to_string(),
                    start_date: start_date.to_string(),
                    end_date: end_date.to_string(),
                });
            }
        }
    }
    found.sort_by(|a, b| {
        let num = |d: &DatasetRef| d.instrument.parse::<i64>().ok();
        (num(a), &a.instrument, &a.start_date, &a.end_date).cmp(&(
            num(b),
            &b.instrument,
            &b.start_date,
            &b.end_date,
        ))
    });
    Ok(found)
}

/// A dataset read and checked: splits in memory, lookback from its `preparation_config.json`.
pub struct Loaded {
    pub lookback: usize,
    pub data: Data,
}

pub fn load(root: &Store, ds: &DatasetRef) -> Result<Loaded> {
    let dir = ds.data_key();
    let missing: Vec<String> = SPLITS
        .iter()
        .map(|s| format!("{s}.parquet"))
        .chain(["preparation_config.json".to_string()])
        .filter(|f| !root.exists(&format!("{dir}/{f}")).unwrap_or(false))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: missing {} (is this a root written by `runtime prepare`?)",
            root.uri(&dir),
            missing.join(", ")
        );
    }
    let config_key = format!("{dir}/preparation_config.json");
    let config: serde_json::Value =
        serde_json::from_slice(&root.read(&config_key)?.unwrap_or_default())
            .with_context(|| format!("{}: not JSON", root.uri(&config_key)))?;
    let lookback = config
        .get("lookback")
        .or_else(|| config.pointer("/parameters/lookback"))
        .and_then(|v| v.as_u64())
        .filter(|&l| l > 0)
        .with_context(|| {
            format!(
                "{}: no positive integer \"lookback\"",
                root.uri(&config_key)
            )
        })? as usize;
    let mut splits = Vec::with_capacity(3);
    for name in SPLITS {
        let key = format!("{dir}/{name}.parquet");
        let bytes = root
            .read(&key)?
            .with_context(|| format!("{} vanished", root.uri(&key)))?;
        let split = Split::from_parquet(bytes, &root.uri(&key), lookback)?;
        if split.samples.is_empty() {
            bail!(
                "{}: no row has sample = true ({} rows; a {lookback}-row window does not fit)",
                root.uri(&key),
                split.rows
            );
        }
        splits.push(Arc::new(split));
    }
    let test = splits.pop().unwrap();
    let validation = splits.pop().unwrap();
    let train = splits.pop().unwrap();
    Ok(Loaded {
        lookback,
        data: Data {
            train,
            validation,
            test,
        },
    })
}

pub fn read_summary(out: &Store, ds: &DatasetRef) -> Result<Option<Summary>> {
    let key = format!("{}/training_summary.json", ds.models_key());
    match out.read(&key)? {
        Some(bytes) => {
            Ok(Some(Summary::parse(&bytes).with_context(|| {
                format!("{}: not a training summary", out.uri(&key))
            })?))
        }
        None => Ok(None),
    }
}

/// True when the summary holds every requested epoch and the test result of every requested model.
pub fn is_complete(summary: Option<&Summary>, opts: &Options) -> bool {
    summary.is_some_and(|s| {
        opts.models.iter().all(|m| {
            s.models
                .get(m.name())
                .is_some_and(|ms| ms.is_complete(opts.epochs))
        })
    })
}

pub enum RunOutcome {
    Done,
    Interrupted,
}

/// Trains every requested model on one loaded dataset.
pub fn train_dataset(
    root: &Store,
    out: &Store,
    ds: &DatasetRef,
    loaded: &Loaded,
    opts: &Options,
    stop: &AtomicBool,
) -> Result<RunOutcome> {
    let dir = ds.models_key();
    let summary_key = format!("{dir}/training_summary.json");
    let mut summary = read_summary(out, ds)?.unwrap_or_default();
    summary.dataset = Some(DatasetInfo {
        datasets: root.uri(&ds.data_key()),
        instrument: ds.instrument.clone(),
        start_date: ds.start_date.clone(),
        end_date: ds.end_date.clone(),
        lookback: loaded.lookback,
        train_samples: loaded.data.train.samples.len(),
        validation_samples: loaded.data.validation.samples.len(),
        test_samples: loaded.data.test.samples.len(),
    });
    for &kind in &opts.models {
        if summary
            .models
            .get(kind.name())
            .is_some_and(|m| m.is_complete(opts.epochs))
        {
            tracing::info!(dataset = dir, model = kind.name(), "already complete");
            continue;
        }
        let job = Job {
            kind,
            epochs: opts.epochs,
            batch_size: opts.batch_size,
            lr: opts.lr,
            seed: opts.seed,
            lookback: loaded.lookback,
            device_name: opts.device.name(),
            workers: opts.workers,
            data: &loaded.data,
            store: out,
            dir: &dir,
            stop,
        };
        let mut publish = |m: &summary::ModelSummary| -> Result<()> {
            summary.models.insert(kind.name().to_string(), m.clone());
            out.write(&summary_key, &summary.to_json())
        };
        tracing::info!(
            dataset = dir,
            model = kind.name(),
            device = opts.device.name(),
            "training"
        );
        match device::fit(opts.device, &job, &mut publish)? {
            Outcome::Done(_) => {}
            Outcome::Interrupted => return Ok(RunOutcome::Interrupted),
        }
    }
    Ok(RunOutcome::Done)
}
