//! `runtime collect`: every job's result files (Parquet or CSV) under a prefix gathered into one
//! table (what the console users' results notebook did by hand), or with `--summaries` every
//! `training_summary.json` as one row per dataset and model. Hive directory keys on the way down
//! (`instrument=7/`) become columns; columns missing from some files are null there. The table
//! goes to a Parquet or CSV file by the output's extension, or to stdout as aligned text with
//! `--output -`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use serde::Deserialize;
use serde_json::json;

use crate::cli::CollectArgs;
use crate::io::{self, Location};

/// The `--output` that prints the table on stdout.
const STDOUT: &str = "-";
/// The file `train` writes per dataset.
const SUMMARY_FILE: &str = "training_summary.json";

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Parquet,
    Csv,
}

fn format_of(loc: &Location) -> Option<Format> {
    let name = loc.file_name().to_ascii_lowercase();
    if name.ends_with(".parquet") || name.ends_with(".pq") {
        Some(Format::Parquet)
    } else if name.ends_with(".csv") {
        Some(Format::Csv)
    } else {
        None
    }
}

/// Where the table goes.
enum Output {
    Stdout,
    File(Location, Format),
}

fn output_of(arg: &str) -> Result<Output> {
    if arg == STDOUT {
        return Ok(Output::Stdout);
    }
    let loc = Location::parse(arg)?;
    match format_of(&loc) {
        Some(format) => Ok(Output::File(loc, format)),
        None => bail!("--output {loc}: name a .parquet or .csv file, or `-` for stdout"),
    }
}

pub fn run(args: CollectArgs) -> Result<ExitCode> {
    let root = Location::parse(&args.input)?;
    let output = output_of(&args.output)?;
    let written = match &output {
        Output::File(loc, _) => Some(loc),
        Output::Stdout => None,
    };
    let (mut table, files) = if args.summaries {
        summaries_table(&root)?
    } else {
        files_table(&root, written)?
    };
    match output {
        Output::Stdout => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text_table(&table)?.as_bytes())?;
            stdout.flush()?;
        }
        Output::File(loc, format) => {
            write_table(&mut table, &loc, format)?;
            println!(
                "{}",
                json!({
                    "output": loc.to_string(),
                    "files": files,
                    "rows": table.height(),
                    "columns": table.get_column_names().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                })
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every file under `root` that a filter keeps, minus hidden and underscore files (markers, run
/// records, staging) and the output itself.
fn result_files(
    root: &Location,
    output: Option<&Location>,
    keep: impl Fn(&Location) -> bool,
) -> Result<Vec<Location>> {
    Ok(io::list(root)?
        .into_iter()
        .filter(|f| Some(f) != output)
        .filter(|f| {
            let rel = f.relative_to(root).unwrap_or_default();
            !rel.split('/')
                .any(|seg| seg.starts_with('_') || seg.starts_with('.'))
        })
        .filter(keep)
        .collect())
}

/// The `key=value` directories on the way from `root` down to `file`.
fn hive_keys(root: &Location, file: &Location) -> Vec<(String, String)> {
    let rel = file.relative_to(root).unwrap_or_default();
    let dirs: Vec<&str> = rel.split('/').collect();
    dirs[..dirs.len().saturating_sub(1)]
        .iter()
        .filter_map(|seg| seg.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The result files under `root` stacked into one table; also the number of files.
fn files_table(root: &Location, output: Option<&Location>) -> Result<(DataFrame, usize)> {
    let files = result_files(root, output, |f| format_of(f).is_some())?;
    if files.is_empty() {
        bail!("no result files (.parquet or .csv) under {root}");
    }
    let mut frames = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for file in &files {
        let local = io::fetch(file)?;
        let df = match format_of(file) {
            Some(Format::Parquet) => {
                ParquetReader::new(std::fs::File::open(local.path())?).finish()
            }
            _ => CsvReadOptions::default()
                .with_has_header(true)
                .try_into_reader_with_file_path(Some(local.path().to_path_buf()))?
                .finish(),
        }
        .map_err(anyhow::Error::from)
        .with_context(|| format!("reading {file}"))?;
        let mut lf = df.lazy();
        let mut parts = Vec::new();
        for (k, v) in hive_keys(root, file) {
            parts.push(lit(v).alias(k.as_str()));
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        if !parts.is_empty() {
            lf = lf.with_columns(parts);
        }
        frames.push(lf);
    }
    let table = concat_lf_diagonal(
        frames,
        UnionArgs {
            to_supertypes: true,
            ..Default::default()
        },
    )?
    .collect()?;
    Ok((keys_first(table, &keys)?, files.len()))
}

/// Partition keys first, as integers when all of them are (instrument=7).
fn keys_first(mut table: DataFrame, keys: &[String]) -> Result<DataFrame> {
    for key in keys {
        if let Ok(ints) = table.column(key)?.strict_cast(&DataType::Int64) {
            table.with_column(ints)?;
        }
    }
    let mut order: Vec<String> = keys.to_vec();
    order.extend(
        table
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .filter(|c| !keys.contains(c)),
    );
    Ok(table.select(order)?)
}

/// What the table reads from one model of a `training_summary.json`; every field optional, so
/// summaries of older runs (or other tools) still tabulate.
#[derive(Deserialize)]
struct ModelResult {
    #[serde(default)]
    epochs: Vec<EpochResult>,
    best_epoch: Option<i64>,
    best_val_loss: Option<f64>,
    test_loss: Option<f64>,
    test_accuracy: Option<f64>,
    device: Option<String>,
}

#[derive(Deserialize)]
struct EpochResult {
    epoch: Option<i64>,
    val_loss: Option<f64>,
    samples_per_s: Option<f64>,
}

#[derive(Deserialize)]
struct SummaryFile {
    models: serde_json::Map<String, serde_json::Value>,
}

/// One row of the summaries table: a model trained on one dataset.
struct SummaryRow {
    keys: Vec<(String, String)>,
    model: String,
    epochs: i64,
    best_epoch: Option<i64>,
    best_val_loss: Option<f64>,
    test_loss: Option<f64>,
    test_accuracy: Option<f64>,
    samples_per_s: Option<f64>,
    device: Option<String>,
}

impl SummaryRow {
    fn new(keys: Vec<(String, String)>, model: String, result: ModelResult) -> Self {
        let best = result
            .best_epoch
            .and_then(|b| result.epochs.iter().find(|e| e.epoch == Some(b)));
        let speeds: Vec<f64> = result
            .epochs
            .iter()
            .filter_map(|e| e.samples_per_s)
            .collect();
        Self {
            keys,
            model,
            epochs: result.epochs.len() as i64,
            best_epoch: result.best_epoch,
            best_val_loss: result.best_val_loss.or(best.and_then(|e| e.val_loss)),
            test_loss: result.test_loss,
            test_accuracy: result.test_accuracy,
            // The mean over epochs: one epoch's figure varies with the machine's load.
            samples_per_s: (!speeds.is_empty())
                .then(|| speeds.iter().sum::<f64>() / speeds.len() as f64),
            device: result.device,
        }
    }
}

/// Every `training_summary.json` under `root` as one row per dataset and model; also the
/// number of summaries.
fn summaries_table(root: &Location) -> Result<(DataFrame, usize)> {
    let files = result_files(root, None, |f| f.file_name() == SUMMARY_FILE)?;
    if files.is_empty() {
        bail!("no {SUMMARY_FILE} under {root} (give the output root of `runtime train`)");
    }
    let mut rows = Vec::new();
    for file in &files {
        let summary: SummaryFile = serde_json::from_slice(&io::read(file)?)
            .with_context(|| format!("{file} is not a training summary"))?;
        for (model, value) in summary.models {
            let result: ModelResult = serde_json::from_value(value)
                .with_context(|| format!("{file}: model `{model}`"))?;
            rows.push(SummaryRow::new(hive_keys(root, file), model, result));
        }
    }
    let mut keys: Vec<String> = Vec::new();
    for (k, _) in rows.iter().flat_map(|r| &r.keys) {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    let mut columns: Vec<Column> = keys
        .iter()
        .map(|k| {
            let values: Vec<Option<&str>> = rows
                .iter()
                .map(|r| r.keys.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str()))
                .collect();
            Column::new(k.as_str().into(), values)
        })
        .collect();
    let strs = |f: fn(&SummaryRow) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
    let floats = |f: fn(&SummaryRow) -> Option<f64>| rows.iter().map(f).collect::<Vec<_>>();
    let ints = |f: fn(&SummaryRow) -> Option<i64>| rows.iter().map(f).collect::<Vec<_>>();
    columns.extend([
        Column::new("model".into(), strs(|r| Some(r.model.as_str()))),
        Column::new("epochs".into(), ints(|r| Some(r.epochs))),
        Column::new("best_epoch".into(), ints(|r| r.best_epoch)),
        Column::new("best_val_loss".into(), floats(|r| r.best_val_loss)),
        Column::new("test_loss".into(), floats(|r| r.test_loss)),
        Column::new("test_accuracy".into(), floats(|r| r.test_accuracy)),
        Column::new("samples_per_s".into(), floats(|r| r.samples_per_s)),
        Column::new("device".into(), strs(|r| r.device.as_deref())),
    ]);
    let table = keys_first(DataFrame::new(rows.len(), columns)?, &keys)?;
    // By dataset (instrument 7 before 22), each dataset's models in its summary's order.
    let table = if keys.is_empty() {
        table
    } else {
        table.sort(
            keys.clone(),
            SortMultipleOptions::default().with_maintain_order(true),
        )?
    };
    Ok((table, files.len()))
}

/// Writes `table` to `loc` whole (a temporary file, then one upload or rename).
fn write_table(table: &mut DataFrame, loc: &Location, format: Format) -> Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("runtime-collect-")
        .tempfile()?;
    match format {
        Format::Parquet => {
            ParquetWriter::new(temp.reopen()?)
                .with_compression(ParquetCompression::Zstd(None))
                .finish(table)?;
        }
        Format::Csv => {
            CsvWriter::new(temp.reopen()?)
                .include_header(true)
                .finish(table)?;
        }
    }
    io::upload(temp.path(), loc)
}

/// The table as aligned plain text: a header line, then one line per row; numbers right-aligned,
/// nulls as `-`.
fn text_table(table: &DataFrame) -> Result<String> {
    let columns = table.columns();
    let mut cells: Vec<Vec<String>> = vec![columns.iter().map(|c| c.name().to_string()).collect()];
    for i in 0..table.height() {
        let row = columns
            .iter()
            .map(|c| Ok(cell(&c.get(i)?)))
            .collect::<Result<Vec<String>>>()?;
        cells.push(row);
    }
    let numeric: Vec<bool> = columns
        .iter()
        .map(|c| c.dtype().is_primitive_numeric())
        .collect();
    let mut widths = vec![0; columns.len()];
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .zip(&numeric)
            .map(|((cell, &w), &num)| {
                if num {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    Ok(out)
}

/// One cell as text: floats with four decimals, none from 100 on (a rate such as samples/s,
/// where decimals are noise).
fn cell(value: &AnyValue) -> String {
    match value {
        AnyValue::Null => "-".to_string(),
        AnyValue::Float64(f) => float(*f),
        AnyValue::Float32(f) => float(f64::from(*f)),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        other => other.to_string(),
    }
}

fn float(f: f64) -> String {
    if f.abs() >= 100.0 {
        format!("{f:.0}")
    } else {
        format!("{f:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_table_aligns_numbers_right_and_shows_nulls() {
        let table = df!(
            "model" => ["cnn_lstm", "gru"],
            "test_accuracy" => [Some(0.5f64), None],
            "samples_per_s" => [4118.4f64, 12.5],
        )
        .unwrap();
        let text = text_table(&table).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "model     test_accuracy  samples_per_s");
        assert_eq!(lines[1], "cnn_lstm         0.5000           4118");
        assert_eq!(lines[2], "gru                   -        12.5000");
    }

    #[test]
    fn a_row_takes_the_best_epochs_loss_and_the_mean_speed() {
        let result: ModelResult = serde_json::from_value(json!({
            "epochs": [
                {"epoch": 1, "val_loss": 0.9, "samples_per_s": 100.0},
                {"epoch": 2, "val_loss": 0.7, "samples_per_s": 300.0},
            ],
            "best_epoch": 2,
            "test_accuracy": 0.6,
            "device": "cpu",
        }))
        .unwrap();
        let row = SummaryRow::new(vec![], "lstm".into(), result);
        assert_eq!(row.best_val_loss, Some(0.7));
        assert_eq!(row.samples_per_s, Some(200.0));
        assert_eq!(row.epochs, 2);
        assert_eq!(row.test_loss, None);
    }
}
