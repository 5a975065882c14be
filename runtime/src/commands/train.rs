//! `runtime train`: every requested model on every prepared dataset of this job's share.
//!
//! Order of work: resolve flags (command line > `--config` file > defaults), check them, find the
//! datasets, take the array share, skip what is complete, read and check every remaining dataset,
//! and only then write anything. SIGTERM checkpoints and exits 143.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::cli::TrainArgs;
use crate::fanout;
use crate::io::config::Config;
use crate::train::store::Store;
use crate::train::{self, DatasetRef, ModelKind, Options, RunOutcome};

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
            bail!(
                "--instrument: no dataset for instrument(s) {} under {}/datasets",
                missing.join(", "),
                resolved.datasets
            );
        }
        all.retain(|d| resolved.instruments.contains(&d.instrument));
    }
    let share = match resolved.array {
        Some((index, size)) => fanout::share_of(&all, index, size),
        None => all.clone(),
    };
    if share.is_empty() {
        eprintln!(
            "nothing to do: this array child's share of {} dataset(s) is empty",
            all.len()
        );
        return Ok(ExitCode::SUCCESS);
    }

    let mut pending: Vec<&DatasetRef> = Vec::new();
    for ds in &share {
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
                println!(
                    "{}",
                    out.uri(&format!("{}/training_summary.json", ds.models_key()))
                );
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

/// The keys `--config` may hold for `train` (others draw a warning).
const CONFIG_KEYS: &[&str] = &[
    "datasets",
    "output",
    "instrument",
    "models",
    "epochs",
    "batch_size",
    "lr",
];

impl Resolved {
    fn from_args(args: TrainArgs) -> Result<Resolved> {
        let config = match &args.config {
            Some(uri) => Config::load(uri)?,
            None => Config::default(),
        };
        let unknown: Vec<String> = config
            .unknown_keys(CONFIG_KEYS)
            .into_iter()
            // a `batch_config.json` also configures `prepare`
            .filter(|k| {
                !matches!(
                    k.as_str(),
                    "input" | "start_date" | "end_date" | "lookback" | "undersample"
                )
            })
            .collect();
        if !unknown.is_empty() {
            tracing::warn!(keys = ?unknown, "{}: ignoring unknown keys", config.source());
        }
        let output = args
            .output
            .or(config.string("output")?)
            .context("no output: give --output ROOT (models go under ROOT/models/)")?;
        // A `batch_config.json` names one root for both: prepare writes ROOT/datasets, train reads
        // it.
        let datasets = args
            .datasets
            .or(config.string("datasets")?)
            .or(config.string("output")?)
            .context(
                "no datasets: give --datasets ROOT (the --output root of `runtime prepare`)",
            )?;
        let instruments: Vec<String> = if args.instrument.is_empty() {
            config
                .i64s("instrument")?
                .iter()
                .map(|i| i.to_string())
                .collect()
        } else {
            args.instrument.iter().map(|i| i.to_string()).collect()
        };
        let model_names = if args.models.is_empty() {
            config.strings("models")?
        } else {
            args.models
        };
        let mut models = Vec::new();
        for name in model_names.iter().filter(|n| !n.trim().is_empty()) {
            let kind: ModelKind = name
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--models: {e}"))?;
            if !models.contains(&kind) {
                models.push(kind);
            }
        }
        if models.is_empty() {
            models = ModelKind::ALL.to_vec();
        }
        let epochs = match args.epochs {
            Some(v) => v,
            None => config.usize("epochs")?.unwrap_or(DEFAULT_EPOCHS),
        };
        if epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        let batch_size = match args.batch_size {
            Some(v) => v,
            None => config.usize("batch_size")?.unwrap_or(DEFAULT_BATCH_SIZE),
        };
        if batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        let lr = match args.lr {
            Some(v) => v,
            None => config.f64("lr")?.unwrap_or(DEFAULT_LR),
        };
        if !(lr.is_finite() && lr > 0.0) {
            bail!("--lr must be a positive number, got {lr}");
        }
        let device = args.device;
        let array = fanout::array_position(&args.array)?;
        let workers = std::thread::available_parallelism()
            .map(|n| n.get().clamp(1, 4))
            .unwrap_or(2);
        Ok(Resolved {
            datasets,
            output,
            instruments,
            array,
            opts: Options {
                models,
                epochs,
                batch_size,
                lr,
                seed: args.seed,
                device,
                workers,
            },
        })
    }
}
