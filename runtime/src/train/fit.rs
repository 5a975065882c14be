//! One model's training on one dataset: epochs of shuffled windows, validation after each,
//! checkpoint after each (and at the next batch boundary after SIGTERM), best-by-validation kept,
//! test at the end on the best model.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::{AutodiffModule, Module};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use super::checkpoint::{Checkpoint, Partial, State};
use super::data::{epoch_order, Batch, Loader, Split};
use super::model::{Model, ModelKind, N_CLASSES, N_FEATURES};
use super::plot::curves_svg;
use super::store::Store;
use super::summary::{EpochStats, ModelSummary};

pub struct Data {
    pub train: Arc<Split>,
    pub validation: Arc<Split>,
    pub test: Arc<Split>,
}

pub struct Job<'a> {
    pub kind: ModelKind,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    pub lookback: usize,
    /// `"cpu"` or `"cuda"`, for the summary.
    pub device_name: &'a str,
    /// Threads assembling batches ahead of the step.
    pub workers: usize,
    pub data: &'a Data,
    pub store: &'a Store,
    /// Key of the dataset's models directory in `store`.
    pub dir: &'a str,
    pub stop: &'a AtomicBool,
}

/// The training steps of `epoch` from batch `state.batch` on, each added to `state.partial`.
/// Returns the trained model and whether the epoch's batches all ran (`false`: SIGTERM stopped
/// it at a batch boundary; the caller checkpoints).
fn train_steps<B: AutodiffBackend, O: Optimizer<Model<B>, B>>(
    job: &Job<'_>,
    device: &B::Device,
    ce: &CrossEntropyLoss<B>,
    (mut model, optim): (Model<B>, &mut O),
    state: &mut State,
    epoch: usize,
) -> Result<(Model<B>, bool)> {
    let name = job.kind.name();
    let order = Arc::new(epoch_order(&job.data.train.samples, job.seed, epoch));
    let loader = Loader::new(
        job.data.train.clone(),
        order,
        job.batch_size,
        job.lookback,
        state.batch,
        job.workers,
    );
    let mut step_started = Instant::now();
    for (k, batch) in loader {
        let len = batch.len;
        let (x, y) = tensors::<B>(batch, device);
        let logits = model.forward(x);
        let loss = ce.forward(logits.clone(), y.clone());
        let correct: i64 = logits
            .argmax(1)
            .reshape([len])
            .equal(y)
            .int()
            .sum()
            .into_scalar()
            .elem();
        let loss_value: f64 = loss.clone().into_scalar().elem();
        if !loss_value.is_finite() {
            bail!("{name}: the training loss became {loss_value} at epoch {epoch} batch {k} (try a lower --lr)");
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(job.lr, model, grads);
        let p = &mut state.partial;
        p.loss_sum += loss_value * len as f64;
        p.correct += correct as u64;
        p.seen += len as u64;
        p.train_seconds += step_started.elapsed().as_secs_f64();
        state.batch = k + 1;
        if job.stop.load(Ordering::SeqCst) {
            return Ok((model, false));
        }
        step_started = Instant::now();
    }
    Ok((model, true))
}

/// Writes the epoch's weights as the best model when its validation loss is the lowest yet.
fn keep_if_best<B: Backend>(
    job: &Job<'_>,
    rec: &Rec,
    state: &mut State,
    stats: &EpochStats,
    valid: Model<B>,
) -> Result<()> {
    if state.best_val_loss.is_none_or(|best| stats.val_loss < best) {
        state.best_val_loss = Some(stats.val_loss);
        state.best_epoch = Some(stats.epoch);
        job.store.write(
            &job.key(&job.best_file()),
            &rec.record(valid.into_record(), ())?,
        )?;
    }
    Ok(())
}

/// A run's state before its first epoch.
fn fresh_state(job: &Job<'_>) -> State {
    State {
        model: job.kind.name().to_string(),
        epochs_done: 0,
        batch: 0,
        partial: Partial::default(),
        history: Vec::new(),
        best_epoch: None,
        best_val_loss: None,
        seed: job.seed,
        batch_size: job.batch_size,
        lr: job.lr,
        lookback: job.lookback,
    }
}

/// A checkpoint written with other arguments is refused rather than silently mixed.
fn check_resumable(job: &Job<'_>, s: &State, ckpt_key: &str) -> Result<()> {
    if (s.seed, s.batch_size, s.lookback, s.model.as_str())
        != (job.seed, job.batch_size, job.lookback, job.kind.name())
        || s.lr != job.lr
    {
        bail!(
            "{} was written by a run with --seed {} --batch-size {} --lr {} (lookback {}); \
             rerun with those arguments to resume, or remove the models directory to start over",
            job.store.uri(ckpt_key),
            s.seed,
            s.batch_size,
            s.lr,
            s.lookback
        );
    }
    Ok(())
}

/// An epoch's figures from its training sums `p` and its validation `val`.
fn epoch_stats(epoch: usize, p: &Partial, val: &Eval, seconds: f64) -> EpochStats {
    EpochStats {
        epoch,
        train_loss: p.loss_sum / p.seen.max(1) as f64,
        train_accuracy: p.correct as f64 / p.seen.max(1) as f64,
        val_loss: val.loss,
        val_accuracy: val.accuracy,
        samples_per_s: if p.train_seconds > 0.0 {
            p.seen as f64 / p.train_seconds
        } else {
            0.0
        },
        seconds,
    }
}

/// The test split on the best model, read back from the file users get, so the figure is
/// reproducible; `None` when stopped by SIGTERM.
fn test_best<B: AutodiffBackend>(job: &Job<'_>, device: &B::Device) -> Result<Option<Eval>> {
    let best_key = job.key(&job.best_file());
    let bytes = job
        .store
        .read(&best_key)?
        .with_context(|| format!("{} is missing", job.store.uri(&best_key)))?;
    let best = load_model::<B::InnerBackend>(job.kind, &bytes, device)?;
    Ok(evaluate(
        &best,
        &job.data.test,
        job.lookback,
        job.batch_size,
        job.workers,
        device,
        Some(job.stop),
    ))
}

// One per model and run: the size of the `Done` variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    Done(ModelSummary),
    /// Stopped by SIGTERM after writing a checkpoint.
    Interrupted,
}

type Rec = NamedMpkBytesRecorder<FullPrecisionSettings>;

impl Job<'_> {
    pub fn best_file(&self) -> String {
        format!("{}_best.mpk", self.kind.upper())
    }
    pub fn plot_file(&self) -> String {
        format!("{}_curves.svg", self.kind.name())
    }
    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }
    fn checkpoint_key(&self) -> String {
        self.key(&format!("checkpoints/{}.ckpt", self.kind.name()))
    }

    fn summary(&self, state: &State, parameters: usize) -> ModelSummary {
        ModelSummary {
            epochs: state.history.clone(),
            best_epoch: state.best_epoch,
            best_val_loss: state.best_val_loss,
            test_loss: None,
            test_accuracy: None,
            confusion_matrix: None,
            test_samples: None,
            parameters,
            device: self.device_name.to_string(),
            checkpoint: self.best_file(),
            plot: self.plot_file(),
            epochs_requested: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            seed: self.seed,
            lookback: self.lookback,
        }
    }
}

/// Trains (or resumes) `job.kind`; `publish` is called with the model's summary after every
/// epoch and at the end, to keep `training_summary.json` current.
pub fn fit<B: AutodiffBackend>(
    job: &Job<'_>,
    device: &B::Device,
    publish: &mut dyn FnMut(&ModelSummary) -> Result<()>,
) -> Result<Outcome> {
    let rec = Rec::default();
    let name = job.kind.name();
    let mut model: Model<B> = job.kind.init(job.seed, device);
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init::<B, Model<B>>();
    let mut state = fresh_state(job);
    let ckpt_key = job.checkpoint_key();
    if let Some(bytes) = job.store.read(&ckpt_key)? {
        let ckpt = Checkpoint::decode(&bytes)
            .with_context(|| format!("reading {}", job.store.uri(&ckpt_key)))?;
        let s = &ckpt.state;
        check_resumable(job, s, &ckpt_key)?;
        model = model.load_record(
            rec.load(ckpt.model, device)
                .context("checkpoint model record")?,
        );
        optim = optim.load_record(
            rec.load(ckpt.optimizer, device)
                .context("checkpoint optimizer record")?,
        );
        tracing::info!(
            model = name,
            epoch = s.epochs_done + 1,
            batch = s.batch,
            "resuming from checkpoint"
        );
        state = ckpt.state;
    }
    let parameters = model.num_params();
    let ce = CrossEntropyLossConfig::new().init(device);
    let train_order_len = job.data.train.samples.len();
    let batches = train_order_len.div_ceil(job.batch_size);

    let save = |model: &Model<B>, optim: &dyn OptimRecord<B>, state: &State| -> Result<()> {
        let ckpt = Checkpoint {
            state: state.clone(),
            model: rec.record(model.clone().into_record(), ())?,
            optimizer: optim.bytes(&rec)?,
        };
        job.store.write(&ckpt_key, &ckpt.encode())
    };

    while state.epochs_done < job.epochs {
        let epoch = state.epochs_done + 1;
        let started = Instant::now();
        let base_seconds = state.partial.seconds;
        if state.batch < batches {
            let finished;
            (model, finished) =
                train_steps(job, device, &ce, (model, &mut optim), &mut state, epoch)?;
            if !finished {
                state.partial.seconds = base_seconds + started.elapsed().as_secs_f64();
                save(&model, &optim, &state)?;
                tracing::warn!(
                    model = name,
                    epoch,
                    batch = state.batch,
                    "SIGTERM: checkpointed mid-epoch"
                );
                return Ok(Outcome::Interrupted);
            }
        }
        let valid = model.valid();
        let Some(val) = evaluate(
            &valid,
            &job.data.validation,
            job.lookback,
            job.batch_size,
            job.workers,
            device,
            Some(job.stop),
        ) else {
            state.partial.seconds = base_seconds + started.elapsed().as_secs_f64();
            save(&model, &optim, &state)?;
            tracing::warn!(
                model = name,
                epoch,
                "SIGTERM: checkpointed before validation"
            );
            return Ok(Outcome::Interrupted);
        };
        let p = std::mem::take(&mut state.partial);
        let stats = epoch_stats(
            epoch,
            &p,
            &val,
            base_seconds + started.elapsed().as_secs_f64(),
        );
        tracing::info!(
            model = name,
            epoch,
            train_loss = format!("{:.4}", stats.train_loss),
            val_loss = format!("{:.4}", stats.val_loss),
            val_accuracy = format!("{:.4}", stats.val_accuracy),
            samples_per_s = format!("{:.0}", stats.samples_per_s),
            "epoch done"
        );
        keep_if_best(job, &rec, &mut state, &stats, valid)?;
        state.history.push(stats);
        state.epochs_done = epoch;
        state.batch = 0;
        save(&model, &optim, &state)?;
        job.store.write(
            &job.key(&job.plot_file()),
            curves_svg(name, &state.history)?.as_bytes(),
        )?;
        publish(&job.summary(&state, parameters))?;
        if job.stop.load(Ordering::SeqCst) {
            tracing::warn!(
                model = name,
                epoch,
                "SIGTERM: checkpointed at the end of the epoch"
            );
            return Ok(Outcome::Interrupted);
        }
    }

    let Some(test) = test_best::<B>(job, device)? else {
        return Ok(Outcome::Interrupted);
    };
    let mut summary = job.summary(&state, parameters);
    summary.test_loss = Some(test.loss);
    summary.test_accuracy = Some(test.accuracy);
    summary.test_samples = Some(test.n);
    summary.confusion_matrix = Some(test.confusion.iter().map(|r| r.to_vec()).collect());
    tracing::info!(
        model = name,
        test_accuracy = format!("{:.4}", test.accuracy),
        "test done"
    );
    publish(&summary)?;
    Ok(Outcome::Done(summary))
}

/// Object-safe view of an optimizer's record, so the checkpoint closure needs no generics.
trait OptimRecord<B: AutodiffBackend> {
    fn bytes(&self, rec: &Rec) -> Result<Vec<u8>>;
}

impl<B: AutodiffBackend, O: Optimizer<Model<B>, B>> OptimRecord<B> for O {
    fn bytes(&self, rec: &Rec) -> Result<Vec<u8>> {
        Ok(Recorder::<B>::record(rec, self.to_record(), ())?)
    }
}

/// Loads a `{MODEL}_best.mpk` written by `fit`.
pub fn load_model<B: Backend>(
    kind: ModelKind,
    bytes: &[u8],
    device: &B::Device,
) -> Result<Model<B>> {
    let record = Rec::default()
        .load(bytes.to_vec(), device)
        .context("not a model record")?;
    Ok(kind.init::<B>(0, device).load_record(record))
}

fn tensors<B: Backend>(batch: Batch, device: &B::Device) -> (Tensor<B, 3>, Tensor<B, 1, Int>) {
    let x = Tensor::from_data(
        TensorData::new(batch.x, [batch.len, batch.lookback, N_FEATURES]),
        device,
    );
    let y = Tensor::from_data(TensorData::new(batch.y, [batch.len]), device);
    (x, y)
}

pub struct Eval {
    pub loss: f64,
    pub accuracy: f64,
    pub n: u64,
    /// Rows: true class, columns: predicted class.
    pub confusion: [[u64; N_CLASSES]; N_CLASSES],
}

/// Mean loss, accuracy and confusion matrix over the split's sample rows, in row order; `None`
/// when `stop` turned true.
pub fn evaluate<B: Backend>(
    model: &Model<B>,
    split: &Arc<Split>,
    lookback: usize,
    batch_size: usize,
    workers: usize,
    device: &B::Device,
    stop: Option<&AtomicBool>,
) -> Option<Eval> {
    let ce = CrossEntropyLossConfig::new().init(device);
    // Inference holds no graph, so larger batches are cheap and amortise the per-step overhead.
    let batch_size = batch_size.max(512);
    let order = Arc::new(split.samples.clone());
    let loader = Loader::new(split.clone(), order, batch_size, lookback, 0, workers);
    let mut loss_sum = 0.0;
    let mut confusion = [[0u64; N_CLASSES]; N_CLASSES];
    let mut n = 0u64;
    for (_, batch) in loader {
        if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            return None;
        }
        let len = batch.len;
        let truth = batch.y.clone();
        let (x, y) = tensors::<B>(batch, device);
        let logits = model.forward(x);
        let loss: f64 = ce.forward(logits.clone(), y).into_scalar().elem();
        loss_sum += loss * len as f64;
        let predicted = logits.argmax(1).reshape([len]).into_data().convert::<i64>();
        let predicted = predicted.as_slice::<i64>().expect("converted to i64");
        for (t, p) in truth.iter().zip(predicted) {
            confusion[*t as usize][*p as usize] += 1;
        }
        n += len as u64;
    }
    let correct: u64 = (0..N_CLASSES).map(|c| confusion[c][c]).sum();
    Some(Eval {
        loss: loss_sum / n.max(1) as f64,
        accuracy: correct as f64 / n.max(1) as f64,
        n,
        confusion,
    })
}
