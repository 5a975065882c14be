//! docs/design.md, "Runtime data contract", exactly: order-flow features, labels, the time split,
//! the scaler and the `sample` flags. Pure functions of a frame; no I/O here.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Result};
use polars::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The model's inputs, in order.
pub const FEATURES: [&str; 8] = [
    "ret_1",
    "spread",
    "obi",
    "ofi",
    "signed_volume",
    "ofi_sum",
    "tfi",
    "vol",
];
/// Rows of the rolling window (including the current row).
pub const WINDOW: usize = 100;
/// The columns of every split file, in order.
pub fn split_columns() -> Vec<&'static str> {
    let mut cols = vec!["ts"];
    cols.extend(FEATURES);
    cols.extend(["label", "sample"]);
    cols
}

/// Marks the microsecond timestamps in `name` as UTC. Casts cannot attach a time zone in this
/// polars build (no `timezones` feature); building the logical type from the physical values can.
pub fn set_utc(df: &mut DataFrame, name: &str) -> Result<()> {
    let column = df.column(name)?.as_materialized_series().clone();
    let micros = match column.dtype() {
        DataType::Datetime(TimeUnit::Microseconds, _) | DataType::Int64 => {
            column.to_physical_repr().into_owned()
        }
        other => bail!("column `{name}` has type {other}, expected microsecond timestamps"),
    };
    let ts = micros
        .i64()?
        .clone()
        .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
    df.with_column(ts.into_series().into_column())?;
    Ok(())
}

/// The labelling parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelParams {
    pub horizon: usize,
    pub threshold_bps: f64,
}

fn rolling(window: usize, min_periods: usize, ddof: Option<u8>) -> RollingOptionsFixedWindow {
    RollingOptionsFixedWindow {
        window_size: window,
        min_periods,
        weights: None,
        center: false,
        fn_params: ddof.map(|ddof| RollingFnParams::Var(RollingVarParams { ddof })),
    }
}

fn prev(name: &str) -> Expr {
    col(name).shift(lit(1))
}

fn flag(e: Expr) -> Expr {
    e.cast(DataType::Float64)
}

/// The aggressor side by the tick rule, for tables without `side`: 1 when `trade_price` is
/// above the previous row's mid, -1 below, 0 when equal, on the first row, or when
/// `trade_quantity` is 0. Expects rows in `ts` order.
pub fn tick_rule_side() -> Expr {
    let prev_mid = ((col("bid_price") + col("ask_price")) / lit(2.0)).shift(lit(1));
    when(
        col("trade_quantity")
            .eq(lit(0.0))
            .or(prev_mid.clone().is_null()),
    )
    .then(lit(0i8))
    .when(col("trade_price").gt(prev_mid.clone()))
    .then(lit(1i8))
    .when(col("trade_price").lt(prev_mid))
    .then(lit(-1i8))
    .otherwise(lit(0i8))
    .cast(DataType::Int8)
    .alias("side")
}

/// Features and labels of one instrument's rows (standard column names, sorted by `ts`):
/// `ts`, the 8 features, `label` (Int64); the last `horizon` rows, which have no label, dropped
/// after the rolling features are computed.
pub fn features_and_labels(ticks: DataFrame, params: LabelParams) -> LazyFrame {
    let labelled_rows = ticks.height().saturating_sub(params.horizon) as IdxSize;
    let theta = params.threshold_bps / 10_000.0;
    let e = lit(std::f64::consts::E);
    let mid = (col("bid_price") + col("ask_price")) / lit(2.0);
    // 1{cond}·size as a select: no 0/1 column to cast and multiply (half the time).
    let term = |cond: Expr, size: Expr| when(cond).then(size).otherwise(lit(0.0));
    let ofi = term(col("bid_price").gt_eq(prev("bid_price")), col("bid_size"))
        - term(col("bid_price").lt_eq(prev("bid_price")), prev("bid_size"))
        - term(col("ask_price").lt_eq(prev("ask_price")), col("ask_size"))
        + term(col("ask_price").gt_eq(prev("ask_price")), prev("ask_size"));
    let r = (col("future_mid") / col("mid")).log(e.clone());
    ticks
        .lazy()
        .with_column(mid.alias("mid"))
        .with_columns([
            (col("mid") / prev("mid"))
                .log(e)
                .fill_null(lit(0.0))
                .alias("ret_1"),
            ((col("ask_price") - col("bid_price")) / col("mid")).alias("spread"),
            ((col("bid_size") - col("ask_size")) / (col("bid_size") + col("ask_size")))
                .alias("obi"),
            ofi.fill_null(lit(0.0)).alias("ofi"),
            (col("side").cast(DataType::Float64) * col("trade_quantity")).alias("signed_volume"),
            flag(col("trade_quantity").neq(lit(0.0))).alias("trade_events"),
            col("mid")
                .shift(lit(-(params.horizon as i64)))
                .alias("future_mid"),
        ])
        .with_columns([
            col("ofi")
                .rolling_sum(rolling(WINDOW, 1, None))
                .alias("ofi_sum"),
            // Counting trades (exact in floating point) instead of testing the rolling sum of
            // quantities for 0, which add-and-subtract updates leave a rounding error away from 0.
            when(
                col("trade_events")
                    .rolling_sum(rolling(WINDOW, 1, None))
                    .eq(lit(0.0)),
            )
            .then(lit(0.0))
            .otherwise(
                col("signed_volume").rolling_sum(rolling(WINDOW, 1, None))
                    / col("trade_quantity").rolling_sum(rolling(WINDOW, 1, None)),
            )
            .alias("tfi"),
            col("ret_1")
                .rolling_std(rolling(WINDOW, 2, Some(1)))
                .fill_null(lit(0.0))
                .alias("vol"),
        ])
        // The last `horizon` rows have no future: dropping them by position first leaves the
        // filter (which also drops rows whose future mid is missing) no rows to copy out.
        .slice(0, labelled_rows)
        .filter(col("future_mid").is_not_null())
        .with_column(
            when(r.clone().lt(lit(-theta)))
                .then(lit(0i64))
                .when(r.gt(lit(theta)))
                .then(lit(2i64))
                .otherwise(lit(1i64))
                .cast(DataType::Int64)
                .alias("label"),
        )
        .select(
            std::iter::once(col("ts"))
                .chain(FEATURES.iter().map(|f| col(*f).cast(DataType::Float64)))
                .chain(std::iter::once(col("label")))
                .collect::<Vec<_>>(),
        )
}

/// Rows of one piece when [`labelled`] computes a long series in pieces.
const PIECE_ROWS: usize = 250_000;

/// [`features_and_labels`], collected: same rows, columns and labels. A long series whose prices
/// have no nulls is computed in pieces of [`PIECE_ROWS`] rows side by side: a piece's query also
/// reads the [`WINDOW`] rows before it (no feature looks further back) and the `horizon` rows
/// after it (the label's look-ahead) and keeps only its own rows. On 2 threads this took 0.6x the
/// time of one query over 1e7 rows (a piece's columns stay in cache from step to step); the
/// rolling features can differ from one query's in the last bit.
pub fn labelled(ticks: DataFrame, params: LabelParams) -> Result<DataFrame> {
    labelled_in_pieces(ticks, params, PIECE_ROWS)
}

fn labelled_in_pieces(
    ticks: DataFrame,
    params: LabelParams,
    piece_rows: usize,
) -> Result<DataFrame> {
    use rayon::prelude::*;
    let rows = ticks.height().saturating_sub(params.horizon);
    // A null price drops rows inside a piece (no mid, no label), and pieces are cut by position.
    let null_prices = ["bid_price", "ask_price"]
        .iter()
        .map(|c| ticks.column(c).map(|c| c.null_count()))
        .sum::<PolarsResult<usize>>()?;
    if rows <= piece_rows || null_prices > 0 {
        return Ok(features_and_labels(ticks, params).collect()?);
    }
    let starts: Vec<usize> = (0..rows).step_by(piece_rows).collect();
    let pieces = starts
        .into_par_iter()
        .map(|start| {
            let end = (start + piece_rows).min(rows);
            let from = start.saturating_sub(WINDOW);
            let piece = ticks.slice(from as i64, end + params.horizon - from);
            let out = features_and_labels(piece, params).collect()?;
            Ok(out.slice((start - from) as i64, end - start))
        })
        .collect::<Result<Vec<DataFrame>>>()?;
    let mut pieces = pieces.into_iter();
    let mut out = pieces.next().expect("at least one piece");
    for piece in pieces {
        out.vstack_mut_owned(piece)?;
    }
    Ok(out)
}

/// Row counts of the time split of `n` rows: ⌊70n/100⌋, ⌊15n/100⌋, the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitSizes {
    pub train: usize,
    pub validation: usize,
    pub test: usize,
}

pub fn split_sizes(n: usize) -> SplitSizes {
    let train = 70 * n / 100;
    let validation = 15 * n / 100;
    SplitSizes {
        train,
        validation,
        test: n - train - validation,
    }
}

/// Per-feature mean and population standard deviation (std 0 → 1) of the train rows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scaler {
    pub features: Vec<String>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Scaler {
    pub fn fit(train: &DataFrame) -> Result<Scaler> {
        ensure!(train.height() > 0, "no train rows to fit the scaler on");
        // One query, so the 16 statistics are computed side by side.
        let stats: Vec<Expr> = FEATURES
            .iter()
            .flat_map(|f| {
                let x = col(*f).cast(DataType::Float64);
                [
                    x.clone().mean().alias(format!("{f}_mean")),
                    x.std(0).alias(format!("{f}_std")),
                ]
            })
            .collect();
        let stats = train.clone().lazy().select(stats).collect()?;
        let value =
            |name: String| -> Result<f64> { Ok(stats.column(&name)?.f64()?.get(0).unwrap_or(0.0)) };
        let mut mean = Vec::new();
        let mut std = Vec::new();
        for f in FEATURES {
            let sd = value(format!("{f}_std"))?;
            mean.push(value(format!("{f}_mean"))?);
            std.push(if sd == 0.0 || !sd.is_finite() {
                1.0
            } else {
                sd
            });
        }
        Ok(Scaler {
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
            mean,
            std,
        })
    }

    pub fn apply(&self, frame: LazyFrame) -> LazyFrame {
        let exprs: Vec<Expr> = self
            .features
            .iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(f, (m, s))| {
                ((col(f.as_str()) - lit(*m)) / lit(*s))
                    .cast(DataType::Float32)
                    .alias(f.as_str())
            })
            .collect();
        frame.with_columns(exprs)
    }
}

/// `sample` at split-local index `i`: a whole window of `lookback` rows ends there.
pub fn sample_flags(n: usize, lookback: usize) -> Vec<bool> {
    (0..n).map(|i| i + 1 >= lookback).collect()
}

/// Among the rows whose flag is set, keeps exactly `m` per class present (`m` the smallest
/// count), chosen at random with `seed`; clears the others. Only flags change.
pub fn undersample(labels: &[i64], sample: &mut [bool], seed: u64) {
    let mut by_class: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, (&label, &s)) in labels.iter().zip(sample.iter()).enumerate() {
        if s {
            by_class.entry(label).or_default().push(i);
        }
    }
    let Some(m) = by_class.values().map(Vec::len).min() else {
        return;
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for rows in by_class.values_mut() {
        rows.shuffle(&mut rng);
        for &i in &rows[m..] {
            sample[i] = false;
        }
    }
}

/// Counts of classes 0, 1, 2 (keys `"0"`, `"1"`, `"2"`, every key present).
pub fn class_counts<'a>(labels: impl IntoIterator<Item = &'a i64>) -> BTreeMap<String, u64> {
    let mut counts = [0u64; 3];
    let mut others: BTreeMap<i64, u64> = BTreeMap::new();
    for &l in labels {
        match usize::try_from(l).ok().and_then(|i| counts.get_mut(i)) {
            Some(n) => *n += 1,
            None => *others.entry(l).or_default() += 1,
        }
    }
    let classes = counts.iter().enumerate().map(|(l, n)| (l as i64, *n));
    classes
        .chain(others)
        .map(|(l, n)| (l.to_string(), n))
        .collect()
}

/// One finished split.
pub struct Split {
    pub name: &'static str,
    /// The split's rows, scaled, with `sample`, in [`split_columns`] order. Lazy: the scaling
    /// runs where the rows are written, without a scaled copy of the whole dataset in memory.
    pub frame: LazyFrame,
    pub rows: usize,
    pub class_counts: BTreeMap<String, u64>,
    pub sample_rows: usize,
    pub sample_class_counts: BTreeMap<String, u64>,
}

/// The split, scaling and `sample` parameters.
#[derive(Debug, Clone, Copy)]
pub struct SplitParams {
    pub lookback: usize,
    pub undersample: bool,
    pub seed: u64,
}

/// Splits the labelled rows by time, fits the scaler on train, scales all three and adds
/// `sample` (undersampled on train when asked).
pub fn split_and_scale(labelled: DataFrame, params: SplitParams) -> Result<(Scaler, Vec<Split>)> {
    ensure!(params.lookback > 0, "lookback must be at least 1");
    let n = labelled.height();
    let sizes = split_sizes(n);
    if sizes.train == 0 {
        bail!("only {n} labelled rows: too few for a train split");
    }
    let scaler = Scaler::fit(&labelled.slice(0, sizes.train))?;
    let mut out = Vec::new();
    let mut offset = 0i64;
    for (name, len) in [
        ("train", sizes.train),
        ("validation", sizes.validation),
        ("test", sizes.test),
    ] {
        let mut frame = labelled.slice(offset, len);
        offset += len as i64;
        let labels: Vec<i64> = frame.column("label")?.i64()?.into_no_null_iter().collect();
        let mut sample = sample_flags(len, params.lookback);
        if name == "train" && params.undersample {
            undersample(&labels, &mut sample, params.seed);
        }
        let sample_labels: Vec<i64> = labels
            .iter()
            .zip(&sample)
            .filter(|(_, s)| **s)
            .map(|(l, _)| *l)
            .collect();
        frame.with_column(Column::new("sample".into(), &sample))?;
        let frame = scaler
            .apply(frame.lazy())
            .select(split_columns().into_iter().map(col).collect::<Vec<_>>());
        out.push(Split {
            name,
            rows: len,
            class_counts: class_counts(&labels),
            sample_rows: sample_labels.len(),
            sample_class_counts: class_counts(&sample_labels),
            frame,
        });
    }
    Ok((scaler, out))
}

#[cfg(test)]
mod tests;
