//! Prepared splits in memory and the windowed batches built from them on the fly.
//!
//! A split is held as its rows (`rows × 8` f32, row-major) plus the indices of the rows whose
//! `sample` flag is true; the window of sample row `i` is rows `i+1-lookback ..= i`. Batches are
//! copied out of the rows by worker threads ahead of the training step, so memory stays
//! proportional to the rows, never rows × lookback.

use std::io::Cursor;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use polars::prelude::{DataType, ParquetReader, SerReader};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::model::{FEATURES, N_CLASSES, N_FEATURES};

pub const SPLITS: [&str; 3] = ["train", "validation", "test"];

#[derive(Debug)]
pub struct Split {
    pub rows: usize,
    /// `rows × 8`, row-major, in [`FEATURES`] order.
    pub x: Vec<f32>,
    pub y: Vec<u8>,
    /// Rows whose `sample` flag is true, ascending.
    pub samples: Vec<u32>,
}

impl Split {
    /// Parses one `{split}.parquet` (docs/design.md, "Labels, split, scaler, samples") and
    /// checks it can feed `lookback`-long windows.
    pub fn from_parquet(bytes: Vec<u8>, what: &str, lookback: usize) -> Result<Split> {
        let df = ParquetReader::new(Cursor::new(bytes))
            .finish()
            .with_context(|| format!("{what}: not a readable Parquet file"))?;
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        let missing: Vec<&str> = FEATURES
            .iter()
            .copied()
            .chain(["label", "sample"])
            .filter(|c| !names.iter().any(|n| n == c))
            .collect();
        if !missing.is_empty() {
            bail!(
                "{what}: missing column(s) {} (has: {})",
                missing.join(", "),
                names.join(", ")
            );
        }
        let rows = df.height();
        let mut x = vec![0f32; rows * N_FEATURES];
        for (j, name) in FEATURES.iter().enumerate() {
            let col = df
                .column(name)?
                .cast(&DataType::Float32)
                .with_context(|| format!("{what}: column {name} is not numeric"))?;
            let col = col.f32()?;
            if col.null_count() > 0 {
                bail!(
                    "{what}: column {name} has {} null value(s)",
                    col.null_count()
                );
            }
            for (i, v) in col.into_no_null_iter().enumerate() {
                x[i * N_FEATURES + j] = v;
            }
        }
        let label = df
            .column("label")?
            .cast(&DataType::Int64)
            .with_context(|| format!("{what}: column label is not an integer"))?;
        let mut y = Vec::with_capacity(rows);
        for v in label.i64()?.iter() {
            match v {
                Some(v) if (0..N_CLASSES as i64).contains(&v) => y.push(v as u8),
                other => bail!("{what}: label {other:?} is not one of 0, 1, 2"),
            }
        }
        let sample = df.column("sample")?;
        let sample = sample
            .bool()
            .with_context(|| format!("{what}: column sample is not Boolean"))?;
        let samples: Vec<u32> = sample
            .iter()
            .enumerate()
            .filter(|(_, s)| *s == Some(true))
            .map(|(i, _)| i as u32)
            .collect();
        if let Some(&first) = samples.first() {
            if (first as usize) + 1 < lookback {
                bail!(
                    "{what}: row {first} is marked sample but a {lookback}-row window cannot end there \
                     (was the dataset prepared with a different lookback?)"
                );
            }
        }
        Ok(Split {
            rows,
            x,
            y,
            samples,
        })
    }

    /// Copies the windows ending at `ends` into `[len, lookback, 8]` and their labels.
    pub fn batch(&self, ends: &[u32], lookback: usize) -> Batch {
        let mut x = Vec::with_capacity(ends.len() * lookback * N_FEATURES);
        let mut y = Vec::with_capacity(ends.len());
        for &end in ends {
            let end = end as usize;
            let start = end + 1 - lookback;
            x.extend_from_slice(&self.x[start * N_FEATURES..(end + 1) * N_FEATURES]);
            y.push(self.y[end] as i64);
        }
        Batch {
            x,
            y,
            len: ends.len(),
            lookback,
        }
    }
}

#[derive(Debug)]
pub struct Batch {
    pub x: Vec<f32>,
    pub y: Vec<i64>,
    pub len: usize,
    pub lookback: usize,
}

/// The training order of an epoch: a pure function of the seed and the epoch, so the only RNG
/// state a checkpoint has to carry is (seed, epoch), and a resumed epoch sees the same order.
pub fn epoch_order(samples: &[u32], seed: u64, epoch: usize) -> Vec<u32> {
    let mut order = samples.to_vec();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64);
    order.shuffle(&mut rng);
    order
}

/// Batches of `order` from batch `start` on, built by `workers` threads, delivered in order.
pub struct Loader {
    receivers: Vec<Receiver<Batch>>,
    handles: Vec<JoinHandle<()>>,
    start: usize,
    next: usize,
    total: usize,
}

impl Loader {
    pub fn new(
        split: Arc<Split>,
        order: Arc<Vec<u32>>,
        batch_size: usize,
        lookback: usize,
        start: usize,
        workers: usize,
    ) -> Loader {
        let total = order.len().div_ceil(batch_size);
        let workers = workers.max(1);
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            // Two batches in flight per worker: enough to hide the copy behind the step.
            let (tx, rx) = sync_channel::<Batch>(2);
            let (split, order) = (split.clone(), order.clone());
            handles.push(std::thread::spawn(move || {
                let mut k = start + w;
                while k < total {
                    let ends = &order[k * batch_size..((k + 1) * batch_size).min(order.len())];
                    if tx.send(split.batch(ends, lookback)).is_err() {
                        return; // the consumer stopped early (SIGTERM)
                    }
                    k += workers;
                }
            }));
            receivers.push(rx);
        }
        Loader {
            receivers,
            handles,
            start,
            next: start,
            total,
        }
    }

    pub fn batches(&self) -> usize {
        self.total
    }
}

impl Iterator for Loader {
    type Item = (usize, Batch);

    fn next(&mut self) -> Option<(usize, Batch)> {
        if self.next >= self.total {
            return None;
        }
        let k = self.next;
        let w = (k - self.start) % self.receivers.len();
        // A worker only stops early when its receiver is gone, so this cannot fail.
        let batch = self.receivers[w].recv().ok()?;
        self.next += 1;
        Some((k, batch))
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(rows: usize, lookback: usize) -> Split {
        let x = (0..rows * N_FEATURES).map(|v| v as f32).collect();
        let y = (0..rows).map(|i| (i % 3) as u8).collect();
        let samples = (lookback as u32 - 1..rows as u32).collect();
        Split {
            rows,
            x,
            y,
            samples,
        }
    }

    #[test]
    fn window_ends_at_its_row() {
        let s = split(10, 4);
        let b = s.batch(&[3, 9], 4);
        assert_eq!(b.x.len(), 2 * 4 * N_FEATURES);
        assert_eq!(b.x[0], 0.0);
        assert_eq!(b.x[4 * N_FEATURES - 1], (4 * N_FEATURES - 1) as f32);
        assert_eq!(b.x[4 * N_FEATURES], (6 * N_FEATURES) as f32);
        assert_eq!(b.y, vec![0, 0]);
    }

    #[test]
    fn loader_delivers_every_batch_in_order_from_any_start() {
        let s = Arc::new(split(103, 4));
        let order = Arc::new(epoch_order(&s.samples, 5, 2));
        assert_eq!(*order, epoch_order(&s.samples, 5, 2));
        assert_ne!(*order, epoch_order(&s.samples, 5, 3));
        for workers in [1, 3] {
            let got: Vec<(usize, Vec<i64>)> =
                Loader::new(s.clone(), order.clone(), 8, 4, 2, workers)
                    .map(|(k, b)| (k, b.y))
                    .collect();
            assert_eq!(got.len(), 100usize.div_ceil(8) - 2);
            for (k, y) in got {
                let want: Vec<i64> = order[k * 8..((k + 1) * 8).min(100)]
                    .iter()
                    .map(|&e| (e % 3) as i64)
                    .collect();
                assert_eq!(y, want);
            }
        }
        // stopping early must not hang
        let mut l = Loader::new(s.clone(), order.clone(), 1, 4, 0, 2);
        l.next();
        drop(l);
    }
}
