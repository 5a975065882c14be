//! `runtime collect`: every job's result files (Parquet or CSV) under a prefix gathered into one
//! table (what the console users' results notebook did by hand). Hive directory keys on the way
//! down (`instrument=7/`) become columns; columns missing from some files are null there.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use serde_json::json;

use crate::cli::CollectArgs;
use crate::io::{self, Location};

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

pub fn run(args: CollectArgs) -> Result<ExitCode> {
    let root = Location::parse(&args.input)?;
    let output = Location::parse(&args.output)?;
    let Some(out_format) = format_of(&output) else {
        bail!("--output {output}: name a .parquet or .csv file");
    };
    let files: Vec<Location> = io::list(&root)?
        .into_iter()
        .filter(|f| *f != output)
        .filter(|f| {
            let rel = f.relative_to(&root).unwrap_or_default();
            // Hidden and underscore files (markers, run records, staging) are not results.
            !rel.split('/')
                .any(|seg| seg.starts_with('_') || seg.starts_with('.'))
        })
        .filter(|f| format_of(f).is_some())
        .collect();
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
        let rel = file.relative_to(&root).unwrap_or_default();
        let mut lf = df.lazy();
        let mut parts = Vec::new();
        for seg in rel
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            if let Some((k, v)) = seg.split_once('=') {
                parts.push(lit(v.to_string()).alias(k));
                if !keys.iter().any(|x| x == k) {
                    keys.push(k.to_string());
                }
            }
        }
        if !parts.is_empty() {
            lf = lf.with_columns(parts);
        }
        frames.push(lf);
    }
    let mut table = concat_lf_diagonal(
        frames,
        UnionArgs {
            to_supertypes: true,
            ..Default::default()
        },
    )?
    .collect()?;
    // Partition keys that are all integers (instrument=7) become integers.
    for key in &keys {
        if let Ok(ints) = table.column(key)?.strict_cast(&DataType::Int64) {
            table.with_column(ints)?;
        }
    }
    let mut order: Vec<String> = keys.clone();
    order.extend(
        table
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .filter(|c| !keys.contains(c)),
    );
    let mut table = table.select(order)?;

    let temp = tempfile::Builder::new()
        .prefix("runtime-collect-")
        .tempfile()?;
    match out_format {
        Format::Parquet => {
            ParquetWriter::new(temp.reopen()?)
                .with_compression(ParquetCompression::Zstd(None))
                .finish(&mut table)?;
        }
        Format::Csv => {
            CsvWriter::new(temp.reopen()?)
                .include_header(true)
                .finish(&mut table)?;
        }
    }
    io::upload(temp.path(), &output)?;
    println!(
        "{}",
        json!({
            "output": output.to_string(),
            "files": files.len(),
            "rows": table.height(),
            "columns": table.get_column_names().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        })
    );
    Ok(ExitCode::SUCCESS)
}
