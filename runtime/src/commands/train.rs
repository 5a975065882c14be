//! `runtime train`: every requested model on every prepared dataset of this job's share.
//!
//! Order of work: resolve flags (command line > `--config` file > defaults), check them, find the
//! datasets, take the array share, skip what is complete, read and check every remaining dataset,
//! and only then write anything. SIGTERM checkpoints and exits 143.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cli::TrainArgs;
use crate::train::store::Store;
use crate::train::{self, DatasetRef, DeviceKind, ModelKind, Options, RunOutcome};

const DEFAULT_EPOCHS: usize = 10;
const DEFAULT_BATCH_SIZE: usize = 32;
const DEFAULT_LR: f64 = 1e-3;
/// Exit status after a SIGTERM checkpoint: 128 + 15, what a retry strategy sees for a kill.
const EXIT_INTERRUPTED: u8 = 143;

pub fn run(args: TrainArgs) -> Result<ExitCode> {
    let stop = train::signal::stop_flag()?;
    let resolved = Resolved::from_args(args)?;
    let opts = &resolved.opts;
    opts.device.check()?;

    let root = Store::open(&resolved.datasets)?;
    let out = Store::open(&resolved.output)?;
    if !root.exists_root() {
        bail!("--datasets {}: no such directory", resolved.datasets);
    }
    let mut all = train::discover(&root)?;
    if all.is_empty() {
        bail!(
            "--datasets {}: no dataset under datasets/instrument=*/start_date=*/end_date=*/ \
             (give the --output root of `runtime prepare`)",
            resolved.datasets
        );
    }
    if !resolved.instruments.is_empty() {
        let missing: Vec<String> = resolved
            .instruments
            .iter()
            .filter(|i| !all.iter().any(|d| &d.instrument == *i))
            .cloned()
            .collect();
        if !missing.is_empty() {
            bail!("--instrument: no dataset for instrument(s) {} under {}/datasets", missing.join(", "), resolved.datasets);
        }
        all.retain(|d| resolved.instruments.contains(&d.instrument));
    }
    let share = array_share(&all, resolved.array)?;
    if share.is_empty() {
        eprintln!("nothing to do: this array child's share of {} dataset(s) is empty", all.len());
        return Ok(ExitCode::SUCCESS);
    }

    let mut pending: Vec<&DatasetRef> = Vec::new();
    for ds in share {
        let summary = train::read_summary(&out, ds)?;
        if train::is_complete(summary.as_ref(), opts) {
            eprintln!("{}: complete, skipped", out.uri(&ds.models_key()));
        } else {
            pending.push(ds);
        }
    }
    if pending.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    // Read and check every dataset before the first write, so bad input leaves nothing behind.
    for ds in &pending {
        train::load(&root, ds)?;
    }
    for ds in pending {
        let loaded = train::load(&root, ds)?;
        match train::train_dataset(&root, &out, ds, &loaded, opts, &stop)? {
            RunOutcome::Done => {
                println!("{}", out.uri(&format!("{}/training_summary.json", ds.models_key())));
            }
            RunOutcome::Interrupted => {
                eprintln!("interrupted: checkpoint written; run the same command again to resume");
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

struct Resolved {
    datasets: String,
    output: String,
    instruments: Vec<String>,
    array: Option<(u32, u32)>,
    opts: Options,
}

impl Resolved {
    fn from_args(args: TrainArgs) -> Result<Resolved> {
        let file = match &args.config {
            Some(path) => ConfigFile::read(path)?,
            None => ConfigFile::default(),
        };
        let datasets = args
            .datasets
            .or(file.datasets.clone())
            .context("--datasets is required (the --output root of `runtime prepare`)")?;
        let output = args.output.or(file.output).context("--output is required (models go under ROOT/models/)")?;
        let instruments: Vec<String> = if args.instrument.is_empty() {
            file.instruments
        } else {
            args.instrument.iter().map(|i| i.to_string()).collect()
        };
        let model_names = if args.models.is_empty() { file.models } else { args.models };
        let mut models = Vec::new();
        for name in model_names.iter().filter(|n| !n.trim().is_empty()) {
            let kind: ModelKind = name.parse().map_err(|e: String| anyhow::anyhow!("--models: {e}"))?;
            if !models.contains(&kind) {
                models.push(kind);
            }
        }
        if models.is_empty() {
            models = ModelKind::ALL.to_vec();
        }
        let epochs = args.epochs.or(file.epochs).unwrap_or(DEFAULT_EPOCHS);
        if epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        let batch_size = args.batch_size.or(file.batch_size).unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        let lr = args.lr.or(file.lr).unwrap_or(DEFAULT_LR);
        if !(lr.is_finite() && lr > 0.0) {
            bail!("--lr must be a positive number, got {lr}");
        }
        let device: DeviceKind = args.device.parse().map_err(|e: String| anyhow::anyhow!("--device: {e}"))?;
        let array_size = args
            .array
            .array_size
            .or_else(|| std::env::var("AWS_BATCH_JOB_ARRAY_SIZE").ok().and_then(|v| v.parse().ok()));
        let array = match (array_size, args.array.array_index) {
            (Some(0), _) => bail!("--array-size must be at least 1"),
            (Some(size), Some(index)) if index >= size => {
                bail!("array index {index} is out of range for --array-size {size}")
            }
            (Some(size), Some(index)) => Some((size, index)),
            (None, Some(index)) => bail!("array index {index} given (AWS_BATCH_JOB_ARRAY_INDEX) without --array-size"),
            (_, None) => None,
        };
        let workers = std::thread::available_parallelism().map(|n| n.get().clamp(1, 4)).unwrap_or(2);
        Ok(Resolved {
            datasets,
            output,
            instruments,
            array,
            opts: Options { models, epochs, batch_size, lr, seed: args.seed, device, workers },
        })
    }
}

/// This child's contiguous part of `items` (DESIGN.md §3), or all of them outside an array job.
fn array_share<T>(items: &[T], array: Option<(u32, u32)>) -> Result<&[T]> {
    let Some((size, index)) = array else { return Ok(items) };
    let (n, size, index) = (items.len(), size as usize, index as usize);
    Ok(&items[index * n / size..(index + 1) * n / size])
}

/// `--config`: the flags by name (JSON or TOML), or seed 000's `batch_config.json`.
#[derive(Default)]
struct ConfigFile {
    datasets: Option<String>,
    output: Option<String>,
    instruments: Vec<String>,
    models: Vec<String>,
    epochs: Option<usize>,
    batch_size: Option<usize>,
    lr: Option<f64>,
}

impl ConfigFile {
    fn read(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("--config {}", path.display()))?;
        let value: Value = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).with_context(|| format!("--config {}: not TOML", path.display()))?
        } else {
            serde_json::from_str(&text).with_context(|| format!("--config {}: not JSON", path.display()))?
        };
        let get = |flat: &str, nested: &str| value.get(flat).or_else(|| value.pointer(nested)).cloned();
        let string = |v: Option<Value>| v.and_then(|v| v.as_str().map(str::to_string));
        let uint = |v: Option<Value>, what: &str| -> Result<Option<usize>> {
            match v {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(|n| Some(n as usize))
                    .with_context(|| format!("--config {}: {what} must be a non-negative integer", path.display())),
            }
        };
        let list = |v: Option<Value>| -> Vec<String> {
            match v {
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string).unwrap_or_else(|| i.to_string()))
                    .collect(),
                Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_string()).collect(),
                Some(other @ Value::Number(_)) => vec![other.to_string()],
                _ => Vec::new(),
            }
        };
        // Seed 000: s3.bucket_name + s3.prefix is the root both prepare and train use.
        let seed_root = string(value.pointer("/s3/bucket_name").cloned()).map(|bucket| {
            match string(value.pointer("/s3/prefix").cloned()).filter(|p| !p.is_empty()) {
                Some(prefix) => format!("s3://{bucket}/{}", prefix.trim_matches('/')),
                None => format!("s3://{bucket}"),
            }
        });
        Ok(ConfigFile {
            datasets: string(get("datasets", "/training/datasets")).or(seed_root.clone()),
            output: string(get("output", "/training/output")).or(seed_root),
            instruments: list(get("instrument", "/data/instrument_filter")),
            models: list(get("models", "/training/models")),
            epochs: uint(get("epochs", "/training/total_epochs"), "epochs")?,
            batch_size: uint(get("batch_size", "/training/batch_size"), "batch_size")?,
            lr: get("lr", "/training/learning_rate").and_then(|v| v.as_f64()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once() {
        let items: Vec<u32> = (0..10).collect();
        let mut seen = Vec::new();
        for i in 0..3 {
            seen.extend_from_slice(array_share(&items, Some((3, i))).unwrap());
        }
        assert_eq!(seen, items);
        assert_eq!(array_share(&items, None).unwrap().len(), 10);
        assert!(array_share(&items[..1], Some((4, 0))).unwrap().is_empty());
    }
}
