//! The data path end to end (docs/design.md, "Command line" and "Runtime data contract"): generate,
//! prepare, collect against local directories, S3 on moto, and an Iceberg table written by
//! pyiceberg.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use polars::prelude::*;
use runtime::io::{self, Location};
use serde_json::Value;

use crate::common::runtime;

fn run_ok(cmd: &mut Command) -> Value {
    let out = cmd.output().expect("run runtime");
    assert!(
        out.status.success(),
        "{:?} failed: {}\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn run_fails(cmd: &mut Command) -> String {
    let out: Output = cmd.output().expect("run runtime");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{cmd:?} should exit 1; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn generate(out: &str, ids: &str, start: &str, end: &str, hours: &str) -> Command {
    let mut cmd = runtime();
    cmd.args([
        "generate",
        "--output",
        out,
        "--instrument",
        ids,
        "--start-date",
        start,
        "--end-date",
        end,
    ])
    .args(["--hours-per-day", hours, "--freq", "1s"]);
    cmd
}

fn prepare(input: &str, output: &str, ids: &str, start: &str, end: &str) -> Command {
    let mut cmd = runtime();
    cmd.args([
        "prepare",
        "--input",
        input,
        "--output",
        output,
        "--instrument",
        ids,
    ])
    .args(["--start-date", start, "--end-date", end, "--lookback", "16"]);
    cmd
}

fn dataset(root: &Path, id: i64, start: &str, end: &str) -> PathBuf {
    root.join(format!(
        "datasets/instrument={id}/start_date={start}/end_date={end}"
    ))
}

fn read_parquet(path: &Path) -> DataFrame {
    ParquetReader::new(
        std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .finish()
    .unwrap()
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

const FEATURES: [&str; 8] = [
    "ret_1",
    "spread",
    "obi",
    "ofi",
    "signed_volume",
    "ofi_sum",
    "tfi",
    "vol",
];

/// Checks one dataset directory against the data contract: columns, types, counts, scaler on train.
fn check_dataset(dir: &Path, lookback: usize) -> Value {
    let config = json_file(&dir.join("preparation_config.json"));
    let scaler = json_file(&dir.join("scaler.json"));
    assert_eq!(scaler["features"], serde_json::json!(FEATURES));
    assert!(dir.join("_SUCCESS").is_file());
    let mut total = 0;
    for split in ["train", "validation", "test"] {
        let df = read_parquet(&dir.join(format!("{split}.parquet")));
        let names: Vec<&str> = df.get_column_names().iter().map(|s| s.as_str()).collect();
        let mut want = vec!["ts"];
        want.extend(FEATURES);
        want.extend(["label", "sample"]);
        assert_eq!(names, want, "{split}");
        assert_eq!(
            df.column("ts").unwrap().dtype(),
            &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
        );
        for feature in FEATURES {
            assert_eq!(
                df.column(feature).unwrap().dtype(),
                &DataType::Float32,
                "{split} {feature}"
            );
        }
        assert_eq!(df.column("label").unwrap().dtype(), &DataType::Int64);
        assert_eq!(df.column("sample").unwrap().dtype(), &DataType::Boolean);
        let rec = &config["splits"][split];
        assert_eq!(
            rec["rows"].as_u64().unwrap() as usize,
            df.height(),
            "{split}"
        );
        let labels = df.column("label").unwrap().i64().unwrap();
        for class in 0..3i64 {
            let n = labels.iter().filter(|l| *l == Some(class)).count() as u64;
            assert_eq!(
                rec["class_counts"][class.to_string()].as_u64().unwrap(),
                n,
                "{split} class {class}"
            );
        }
        let sample = df.column("sample").unwrap().bool().unwrap();
        let first: Vec<bool> = sample.iter().take(lookback).map(|b| b.unwrap()).collect();
        assert!(
            first[..lookback - 1].iter().all(|b| !b),
            "{split}: no sample before a whole window"
        );
        if split == "train" {
            // Scaled with train statistics: mean 0, population std 1 (or 0 for a constant), to
            // Float32's precision.
            for f in FEATURES {
                let s = df.column(f).unwrap().as_materialized_series();
                assert!(s.mean().unwrap().abs() < 1e-6, "{f} mean");
                let sd = s.std(0).unwrap();
                assert!((sd - 1.0).abs() < 1e-6 || sd < 1e-9, "{f} std {sd}");
            }
        }
        total += df.height();
    }
    assert_eq!(config["rows"].as_u64().unwrap() as usize, total);
    assert_eq!(
        config["rows"].as_u64().unwrap(),
        config["rows_in_range"].as_u64().unwrap() - config["horizon"].as_u64().unwrap()
    );
    config
}

#[test]
fn local_end_to_end_and_rerun_skips() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    let out = tmp.path().join("out");
    let gen = run_ok(&mut generate(
        raw.to_str().unwrap(),
        "7,8",
        "2024-03-01",
        "2024-03-02",
        "0.5",
    ));
    assert_eq!(gen["rows"], 2 * 2 * 1800);
    assert!(raw
        .join("instrument=7/date=2024-03-02/part-0.parquet")
        .is_file());

    let summary = run_ok(&mut prepare(
        raw.to_str().unwrap(),
        out.to_str().unwrap(),
        "7,8",
        "2024-03-01",
        "2024-03-02",
    ));
    assert_eq!(
        summary["done"],
        serde_json::json!(["instrument=7", "instrument=8"])
    );
    for id in [7, 8] {
        let config = check_dataset(&dataset(&out, id, "2024-03-01", "2024-03-02"), 16);
        assert_eq!(config["rows_in_range"], 3600);
        assert_eq!(config["side"], "input");
        assert_eq!(config["lookback"], 16);
        assert_eq!(config["horizon"], 10);
        assert_eq!(config["threshold_bps"], 1.0);
        assert_eq!(config["seed"], 42);
        assert_eq!(config["undersample"], false);
        assert_eq!(config["input"], raw.to_str().unwrap());
    }
    // A narrower date range reads only its own day.
    let one = run_ok(&mut prepare(
        raw.to_str().unwrap(),
        out.to_str().unwrap(),
        "7",
        "2024-03-02",
        "2024-03-02",
    ));
    assert_eq!(one["done"], serde_json::json!(["instrument=7"]));
    assert_eq!(
        json_file(&dataset(&out, 7, "2024-03-02", "2024-03-02").join("preparation_config.json"))
            ["rows_in_range"],
        1800
    );

    // A rerun finds both datasets complete and touches nothing.
    let train = dataset(&out, 7, "2024-03-01", "2024-03-02").join("train.parquet");
    let before = std::fs::metadata(&train).unwrap().modified().unwrap();
    let again = run_ok(&mut prepare(
        raw.to_str().unwrap(),
        out.to_str().unwrap(),
        "7,8",
        "2024-03-01",
        "2024-03-02",
    ));
    assert_eq!(
        again["skipped"],
        serde_json::json!(["instrument=7", "instrument=8"])
    );
    assert_eq!(again["done"], serde_json::json!([]));
    assert_eq!(
        std::fs::metadata(&train).unwrap().modified().unwrap(),
        before
    );

    // Other parameters: the dataset is made again.
    let redo = run_ok(
        prepare(
            raw.to_str().unwrap(),
            out.to_str().unwrap(),
            "7",
            "2024-03-01",
            "2024-03-02",
        )
        .args(["--horizon", "5", "--undersample"]),
    );
    assert_eq!(redo["done"], serde_json::json!(["instrument=7"]));
    let config = check_dataset(&dataset(&out, 7, "2024-03-01", "2024-03-02"), 16);
    assert_eq!(config["horizon"], 5);
    let counts = &config["splits"]["train"]["sample_class_counts"];
    assert!(counts["0"].as_u64().unwrap() > 0);
    assert_eq!(counts["0"], counts["1"]);
    assert_eq!(counts["1"], counts["2"]);
    // Undersampling changes flags only; validation and test keep every windowed row.
    let val = &config["splits"]["validation"];
    assert_eq!(
        val["sample_rows"].as_u64().unwrap(),
        val["rows"].as_u64().unwrap() - 15
    );
}

#[test]
fn generated_signal_is_learnable() {
    // The planted signal: future mid moves lean with obi, so the sign of obi beats the
    // majority class on the test split.
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    let out = tmp.path().join("out");
    run_ok(&mut generate(
        raw.to_str().unwrap(),
        "3",
        "2024-01-01",
        "2024-01-01",
        "2",
    ));
    run_ok(&mut prepare(
        raw.to_str().unwrap(),
        out.to_str().unwrap(),
        "3",
        "2024-01-01",
        "2024-01-01",
    ));
    let test = read_parquet(&dataset(&out, 3, "2024-01-01", "2024-01-01").join("test.parquet"));
    let labels: Vec<i64> = test
        .column("label")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    let obi: Vec<f32> = test
        .column("obi")
        .unwrap()
        .f32()
        .unwrap()
        .into_no_null_iter()
        .collect();
    let majority = (0..3)
        .map(|c| labels.iter().filter(|l| **l == c).count())
        .max()
        .unwrap() as f64
        / labels.len() as f64;
    // obi is scaled; its sign still splits up from down.
    let (mut right, mut called) = (0, 0);
    for (l, o) in labels.iter().zip(&obi) {
        if *l != 1 {
            called += 1;
            if (*o > 0.0) == (*l == 2) {
                right += 1;
            }
        }
    }
    let directional = right as f64 / called as f64;
    assert!(
        directional > 0.6,
        "obi's sign calls the direction right {directional:.3} of the time"
    );
    assert!(
        majority < 0.6,
        "classes are not degenerate: majority {majority:.3}"
    );
}

fn write_raw(path: &Path, df: &mut DataFrame) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    ParquetWriter::new(std::fs::File::create(path).unwrap())
        .finish(df)
        .unwrap();
}

/// One generated day of instrument 1, loaded for editing.
fn generated_day(tmp: &Path) -> DataFrame {
    let raw = tmp.join("gen");
    run_ok(&mut generate(
        raw.to_str().unwrap(),
        "1",
        "2024-01-01",
        "2024-01-01",
        "0.1",
    ));
    read_parquet(&raw.join("instrument=1/date=2024-01-01/part-0.parquet"))
}

#[test]
fn bad_input_exits_1_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let day = generated_day(tmp.path());
    let good = tmp.path().join("good");
    write_raw(
        &good.join("instrument=1/date=2024-01-01/part-0.parquet"),
        &mut day.clone(),
    );
    let no_bid_size = tmp.path().join("no_bid_size");
    write_raw(
        &no_bid_size.join("instrument=1/date=2024-01-01/part-0.parquet"),
        &mut day.drop("bid_size").unwrap(),
    );
    let string_ts = tmp.path().join("string_ts");
    let mut s = day
        .clone()
        .lazy()
        .with_column(col("ts").cast(DataType::Int64).cast(DataType::String))
        .collect()
        .unwrap();
    write_raw(
        &string_ts.join("instrument=1/date=2024-01-01/part-0.parquet"),
        &mut s,
    );
    let string_price = tmp.path().join("string_price");
    let mut s = day
        .clone()
        .lazy()
        .with_column(col("ask_price").cast(DataType::String))
        .collect()
        .unwrap();
    write_raw(
        &string_price.join("instrument=1/date=2024-01-01/part-0.parquet"),
        &mut s,
    );
    let p = |d: &Path| d.to_str().unwrap().to_string();
    let args = |input: &Path, id: &str, start: &str, end: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "prepare",
            "--input",
            &p(input),
            "--instrument",
            id,
            "--start-date",
            start,
            "--end-date",
            end,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            args(
                &tmp.path().join("nowhere"),
                "1",
                "2024-01-01",
                "2024-01-01",
                &[],
            ),
            "does not exist",
        ),
        (
            args(&good, "2", "2024-01-01", "2024-01-01", &[]),
            "no raw ticks for instrument 2",
        ),
        (
            args(&no_bid_size, "1", "2024-01-01", "2024-01-01", &[]),
            "missing column `bid_size`",
        ),
        (
            args(&string_ts, "1", "2024-01-01", "2024-01-01", &[]),
            "expected a datetime",
        ),
        (
            args(&string_price, "1", "2024-01-01", "2024-01-01", &[]),
            "`ask_price` has type",
        ),
        (
            args(&good, "1", "2024-01-02", "2024-01-01", &[]),
            "is after --end-date",
        ),
        (
            args(&good, "1", "2024-02-01", "2024-02-03", &[]),
            "no rows in range",
        ),
        (
            args(&good, "1", "2024-01-01", "2024-01-01", &["--lookback", "0"]),
            "--lookback must be at least 1",
        ),
        (
            args(&good, "1", "2024-01-01", "2024-13-01", &[]),
            "is not a date",
        ),
        (
            args(
                &good,
                "1",
                "2024-01-01",
                "2024-01-01",
                &["--column", "price=x"],
            ),
            "not a raw column",
        ),
        // A bad instrument among good ones: inputs are checked before anything is written.
        (
            args(&good, "1,2", "2024-01-01", "2024-01-01", &[]),
            "no raw ticks for instrument 2",
        ),
    ];
    for (i, (args, message)) in cases.into_iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        let stderr = run_fails(runtime().args(&args).args(["--output", &p(&out)]));
        assert!(
            stderr.contains(message),
            "case {i}: expected `{message}` in: {stderr}"
        );
        assert!(!out.exists(), "case {i}: {} was created", out.display());
    }
}

#[test]
fn an_endpoint_variable_that_is_not_a_url_is_refused_before_any_call() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("collected.parquet");
    // Empty: the SDK would skip it and call AWS itself; no scheme: it would fail naming neither.
    for (name, value) in [
        ("AWS_ENDPOINT_URL", ""),
        ("AWS_ENDPOINT_URL_S3", "localhost:4566"),
    ] {
        let stderr = run_fails(
            runtime()
                .args(["collect", "--input", "s3://results/run-1", "--output"])
                .arg(&out)
                .env(name, value)
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing"),
        );
        assert!(
            stderr.contains(&format!("{name}={value:?} is not an endpoint URL")),
            "{stderr}"
        );
        assert!(stderr.contains(&format!("unset {name}")), "{stderr}");
        assert!(!out.exists());
    }
}

#[test]
fn aliases_renames_and_tick_rule_side() {
    let tmp = tempfile::tempdir().unwrap();
    let day = generated_day(tmp.path());
    // The order-flow pipeline's Iceberg names and no side, in one flat file holding two
    // instruments out of order.
    let other = day
        .clone()
        .lazy()
        .with_column(lit(2i64).cast(DataType::Int64).alias("instrument_id"))
        .collect()
        .unwrap();
    let mut seed = day
        .vstack(&other)
        .unwrap()
        .lazy()
        .drop(by_name(["side"], true, false))
        .rename(
            ["ts", "bid_size", "ask_size"],
            ["timestamp", "bid_quantity", "ask_quantity"],
            true,
        )
        .sort(["bid_price"], Default::default())
        .collect()
        .unwrap();
    let flat = tmp.path().join("flat/ticks.parquet");
    write_raw(&flat, &mut seed);
    let out = tmp.path().join("out");
    run_ok(&mut prepare(
        flat.to_str().unwrap(),
        out.to_str().unwrap(),
        "1",
        "2024-01-01",
        "2024-01-01",
    ));
    let config = check_dataset(&dataset(&out, 1, "2024-01-01", "2024-01-01"), 16);
    assert_eq!(config["side"], "tick_rule");
    assert_eq!(config["rows_in_range"], 360, "only instrument 1's rows");

    // --column renames anything.
    let mut renamed = day
        .clone()
        .lazy()
        .rename(["ts", "trade_quantity"], ["event_time", "qty"], true)
        .collect()
        .unwrap();
    let root = tmp.path().join("renamed");
    write_raw(
        &root.join("instrument=1/date=2024-01-01/x.parquet"),
        &mut renamed,
    );
    let out2 = tmp.path().join("out2");
    run_fails(&mut prepare(
        root.to_str().unwrap(),
        out2.to_str().unwrap(),
        "1",
        "2024-01-01",
        "2024-01-01",
    ));
    run_ok(
        prepare(
            root.to_str().unwrap(),
            out2.to_str().unwrap(),
            "1",
            "2024-01-01",
            "2024-01-01",
        )
        .args(["--column", "ts=event_time,trade_quantity=qty"]),
    );
    let config = check_dataset(&dataset(&out2, 1, "2024-01-01", "2024-01-01"), 16);
    assert_eq!(config["side"], "input");
    assert_eq!(config["columns"]["ts"], "event_time");
    // Same rows, same features as the original names give.
    let a = read_parquet(&dataset(&out2, 1, "2024-01-01", "2024-01-01").join("test.parquet"));
    let orig = tmp.path().join("orig");
    write_raw(
        &orig.join("instrument=1/date=2024-01-01/x.parquet"),
        &mut day.clone(),
    );
    let out3 = tmp.path().join("out3");
    run_ok(&mut prepare(
        orig.to_str().unwrap(),
        out3.to_str().unwrap(),
        "1",
        "2024-01-01",
        "2024-01-01",
    ));
    let b = read_parquet(&dataset(&out3, 1, "2024-01-01", "2024-01-01").join("test.parquet"));
    assert!(a.equals(&b));
}

#[test]
fn array_shares_skip_completed_and_failure_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    run_ok(&mut generate(
        raw.to_str().unwrap(),
        "1,2,3,4,5",
        "2024-01-01",
        "2024-01-01",
        "0.1",
    ));
    let out = tmp.path().join("out");
    let (r, o) = (raw.to_str().unwrap(), out.to_str().unwrap());
    let exists = |id| {
        dataset(&out, id, "2024-01-01", "2024-01-01")
            .join("_SUCCESS")
            .is_file()
    };

    // Child 0 of 2 takes instruments 1 and 2 (contiguous share of five).
    let first = run_ok(
        prepare(r, o, "1,2,3,4,5", "2024-01-01", "2024-01-01")
            .args(["--array-size", "2"])
            .env("AWS_BATCH_JOB_ARRAY_INDEX", "0"),
    );
    assert_eq!(
        first["done"],
        serde_json::json!(["instrument=1", "instrument=2"])
    );
    assert_eq!(
        (1..=5).map(exists).collect::<Vec<_>>(),
        [true, true, false, false, false]
    );
    assert!(out.join("_runs/prepare/progress-array-0.json").is_file());
    // Child 1, sized by AWS_BATCH_JOB_ARRAY_SIZE, takes the rest.
    let second = run_ok(
        prepare(r, o, "1,2,3,4,5", "2024-01-01", "2024-01-01")
            .env("AWS_BATCH_JOB_ARRAY_SIZE", "2")
            .env("AWS_BATCH_JOB_ARRAY_INDEX", "1"),
    );
    assert_eq!(
        second["done"],
        serde_json::json!(["instrument=3", "instrument=4", "instrument=5"])
    );

    // A retried child redoes only what is not complete (a dataset whose commit never finished).
    std::fs::remove_file(dataset(&out, 2, "2024-01-01", "2024-01-01").join("_SUCCESS")).unwrap();
    let retry = run_ok(
        prepare(r, o, "1,2,3,4,5", "2024-01-01", "2024-01-01")
            .args(["--array-size", "2"])
            .env("AWS_BATCH_JOB_ARRAY_INDEX", "0"),
    );
    assert_eq!(retry["skipped"], serde_json::json!(["instrument=1"]));
    assert_eq!(retry["done"], serde_json::json!(["instrument=2"]));
    let stderr = run_fails(
        prepare(r, o, "1,2", "2024-01-01", "2024-01-01").env("AWS_BATCH_JOB_ARRAY_INDEX", "0"),
    );
    assert!(stderr.contains("--array-size"), "{stderr}");

    // Failing units: 6 and 7 have no input. Without --allow-failures the job stops at once.
    let out2 = tmp.path().join("out2");
    let o2 = out2.to_str().unwrap();
    run_fails(&mut prepare(
        r,
        o2,
        "1,6,2,3,4,5,7",
        "2024-01-01",
        "2024-01-01",
    ));
    assert!(!out2.exists());
    // Tolerated: 2 of 7 failed is under 0.5; the failures are recorded.
    let tolerated = run_ok(
        prepare(r, o2, "1,6,2,3,4,5,7", "2024-01-01", "2024-01-01").args([
            "--allow-failures",
            "--max-failure-rate",
            "0.5",
        ]),
    );
    assert_eq!(tolerated["done"].as_array().unwrap().len(), 5);
    let failures = json_file(&out2.join("_runs/prepare/failures-single.json"));
    let units: Vec<&str> = failures["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["unit"].as_str().unwrap())
        .collect();
    assert_eq!(units, ["instrument=6", "instrument=7"]);
    assert!(failures["failures"][0]["error"]
        .as_str()
        .unwrap()
        .contains("no raw ticks"));
    // The breaker: 2 of 7 is above 0.2.
    let out3 = tmp.path().join("out3");
    let stderr = run_fails(
        prepare(
            r,
            out3.to_str().unwrap(),
            "1,6,2,3,4,5,7",
            "2024-01-01",
            "2024-01-01",
        )
        .args(["--allow-failures", "--max-failure-rate", "0.2"]),
    );
    assert!(stderr.contains("circuit breaker"), "{stderr}");
    let stderr = run_fails(
        prepare(
            r,
            out3.to_str().unwrap(),
            "6,7,1",
            "2024-01-01",
            "2024-01-01",
        )
        .args([
            "--allow-failures",
            "--max-failure-rate",
            "1",
            "--max-consecutive-failures",
            "2",
        ]),
    );
    assert!(stderr.contains("2 consecutive failures"), "{stderr}");
}

#[test]
fn collect_gathers_results_with_partition_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("results");
    std::fs::create_dir_all(root.join("instrument=1/model=lstm")).unwrap();
    std::fs::write(
        root.join("instrument=1/model=lstm/metrics.csv"),
        "accuracy,loss\n0.5,1.25\n0.6,1.0\n",
    )
    .unwrap();
    let mut df = df!("accuracy" => [0.7f64], "epochs" => [3i64]).unwrap();
    write_raw(
        &root.join("instrument=22/model=gru/metrics.parquet"),
        &mut df,
    );
    std::fs::write(root.join("instrument=22/_SUCCESS"), "{}").unwrap();
    let out = tmp.path().join("all.parquet");
    let summary = run_ok(runtime().args([
        "collect",
        "--input",
        root.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]));
    assert_eq!(summary["files"], 2);
    let table = read_parquet(&out);
    let names: Vec<&str> = table
        .get_column_names()
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(names, ["instrument", "model", "accuracy", "loss", "epochs"]);
    assert_eq!(table.height(), 3);
    assert_eq!(
        table.column("instrument").unwrap().dtype(),
        &DataType::Int64
    );
    let ids: Vec<i64> = table
        .column("instrument")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(ids, [1, 1, 22]);
    let csv = tmp.path().join("all.csv");
    run_ok(runtime().args([
        "collect",
        "--input",
        root.to_str().unwrap(),
        "--output",
        csv.to_str().unwrap(),
    ]));
    assert!(std::fs::read_to_string(&csv)
        .unwrap()
        .starts_with("instrument,model,accuracy,loss,epochs\n"));
    let stderr = run_fails(runtime().args([
        "collect",
        "--input",
        tmp.path().join("none").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]));
    assert!(stderr.contains("no result files"), "{stderr}");
}

// ---- S3 (moto) ----

fn bucket() -> String {
    crate::common::new_bucket("data")
}

#[test]
fn s3_end_to_end() {
    let bucket = bucket();
    let emu = testkit::emulator();
    let raw = format!("s3://{bucket}/raw");
    let out = format!("s3://{bucket}/out");
    let mut gen = generate(&raw, "5", "2024-01-01", "2024-01-02", "0.2");
    gen.envs(emu.aws_env());
    run_ok(&mut gen);
    let mut prep = prepare(&raw, &out, "5", "2024-01-01", "2024-01-02");
    prep.envs(emu.aws_env());
    let summary = run_ok(&mut prep);
    assert_eq!(summary["done"], serde_json::json!(["instrument=5"]));

    let dir = Location::parse(&format!(
        "{out}/datasets/instrument=5/start_date=2024-01-01/end_date=2024-01-02"
    ))
    .unwrap();
    assert!(io::is_complete(&dir).unwrap());
    let names: Vec<String> = io::list(&dir)
        .unwrap()
        .iter()
        .map(|l| l.relative_to(&dir).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "_SUCCESS",
            "preparation_config.json",
            "scaler.json",
            "test.parquet",
            "train.parquet",
            "validation.parquet"
        ]
    );
    // The same dataset as a local run of the same input.
    let tmp = tempfile::tempdir().unwrap();
    for name in &names {
        let bytes = io::read(&dir.join(name)).unwrap();
        std::fs::write(tmp.path().join(name), bytes).unwrap();
    }
    let config = check_dataset(tmp.path(), 16);
    assert_eq!(config["rows_in_range"], 2 * 720);

    // Rerun: skipped.
    let mut again = prepare(&raw, &out, "5", "2024-01-01", "2024-01-02");
    again.envs(emu.aws_env());
    assert_eq!(
        run_ok(&mut again)["skipped"],
        serde_json::json!(["instrument=5"])
    );

    // Collect from S3 to S3.
    let mut collect = runtime();
    collect.envs(emu.aws_env()).args([
        "collect",
        "--input",
        &format!("{out}/datasets"),
        "--output",
        &format!("s3://{bucket}/all.parquet"),
    ]);
    let summary = run_ok(&mut collect);
    assert_eq!(summary["files"], 3);
    assert_eq!(summary["rows"], config["rows"]);
}

#[test]
fn s3_multipart_upload_and_output_dir() {
    let bucket = bucket();
    let tmp = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..11 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let src = tmp.path().join("big.bin");
    std::fs::write(&src, &big).unwrap();
    let loc = Location::parse(&format!("s3://{bucket}/parts/big.bin")).unwrap();
    io::upload_in_parts(&src, &loc, 5 * 1024 * 1024).unwrap();
    assert_eq!(io::read(&loc).unwrap(), big);
    let fetched = io::fetch(&loc).unwrap();
    assert_eq!(std::fs::read(fetched.path()).unwrap(), big);

    // Staged files are invisible until commit; a new commit replaces the old set.
    let target = Location::parse(&format!("s3://{bucket}/dir/a")).unwrap();
    let out = io::OutputDir::new(target.clone()).unwrap();
    out.put("x.json", b"{}").unwrap();
    out.put("sub/y", b"y").unwrap();
    assert!(io::list(&target).unwrap().is_empty());
    out.commit().unwrap();
    assert!(io::is_complete(&target).unwrap());
    let out = io::OutputDir::new(target.clone()).unwrap();
    out.put("z", b"z").unwrap();
    out.commit().unwrap();
    let names: Vec<String> = io::list(&target)
        .unwrap()
        .iter()
        .map(|l| l.relative_to(&target).unwrap())
        .collect();
    assert_eq!(names, ["_SUCCESS", "z"]);
    assert_eq!(
        io::list_dirs(&Location::parse(&format!("s3://{bucket}/dir")).unwrap()).unwrap(),
        ["a"]
    );
    assert!(!io::exists(&target.join("x.json")).unwrap());
}

// ---- Iceberg (pyiceberg) ----

const MAKE_TABLE: &str = r#"
import sys, datetime as dt, random
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.types import NestedField, TimestampType, LongType, DoubleType
from pyiceberg.partitioning import PartitionSpec, PartitionField
from pyiceberg.transforms import IdentityTransform

wh = sys.argv[1]
# A second argument puts the warehouse on S3 (the emulator's endpoint comes from the environment).
if len(sys.argv) > 2:
    import os
    cat = SqlCatalog("seed", uri=f"sqlite:///{wh}/catalog.db", warehouse=sys.argv[2], **{
        "s3.endpoint": os.environ["AWS_ENDPOINT_URL"], "s3.region": "us-east-1",
        "s3.access-key-id": "testing", "s3.secret-access-key": "testing"})
else:
    cat = SqlCatalog("seed", uri=f"sqlite:///{wh}/catalog.db", warehouse=f"file://{wh}")
cat.create_namespace("market")
# The order-flow pipeline's column names: timestamp, bid_quantity, ask_quantity, and no side.
names = ["timestamp", "instrument_id", "trade_price", "trade_quantity", "bid_price", "ask_price", "bid_quantity", "ask_quantity"]
types = [TimestampType(), LongType()] + [DoubleType()] * 6
schema = Schema(*[NestedField(i + 1, n, t, required=False) for i, (n, t) in enumerate(zip(names, types))])
# Partitioned by instrument (a day transform needs pyiceberg-core); one append per day, so the
# timestamp bounds of each data file let the planner prune by date too.
spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="instrument_id"))
table = cat.create_table("market.ticks", schema=schema, partition_spec=spec)
rng = random.Random(7)
for day in (dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)):
    cols = {n: [] for n in names}
    for inst in (72089, 72090):
        bid = 100.0
        for i in range(600):
            bid = round(bid + rng.choice([-0.01, 0.0, 0.0, 0.01]), 2)
            ask = round(bid + rng.choice([0.01, 0.02]), 2)
            trade = i % 3 == 0
            cols["timestamp"].append(day + dt.timedelta(milliseconds=100 * i))
            cols["instrument_id"].append(inst)
            cols["bid_price"].append(bid)
            cols["ask_price"].append(ask)
            cols["bid_quantity"].append(float(rng.randint(1, 100)))
            cols["ask_quantity"].append(float(rng.randint(1, 100)))
            cols["trade_price"].append(rng.choice([bid, ask]) if trade else bid)
            cols["trade_quantity"].append(float(rng.randint(1, 10)) if trade else 0.0)
    table.append(pa.table({n: cols[n] for n in names}, schema=table.schema().as_arrow()))
print(table.metadata_location)
"#;

/// Runs [`MAKE_TABLE`] with `python` (its arguments: the catalog's directory, then the S3
/// warehouse if any); returns the metadata location it prints last.
fn make_table(mut python: Command, args: &[&OsStr]) -> String {
    let out = python
        .arg("-c")
        .arg(MAKE_TABLE)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyiceberg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string()
}

fn iceberg_table(dir: &Path) -> String {
    make_table(Command::new(testkit::venv_python()), &[dir.as_os_str()])
}

fn iceberg_table_on_s3(dir: &Path, warehouse: &str) -> String {
    make_table(
        testkit::emulator().command(testkit::venv_python()),
        &[dir.as_os_str(), OsStr::new(warehouse)],
    )
}

#[test]
fn iceberg_table_in_the_pipeline_names() {
    let tmp = tempfile::tempdir().unwrap();
    let metadata = iceberg_table(tmp.path());
    assert!(metadata.ends_with(".metadata.json"), "{metadata}");
    let out = tmp.path().join("out");
    run_ok(&mut prepare(
        &metadata,
        out.to_str().unwrap(),
        "72089",
        "2024-01-02",
        "2024-01-02",
    ));
    let config = check_dataset(&dataset(&out, 72089, "2024-01-02", "2024-01-02"), 16);
    assert_eq!(config["input_format"], "iceberg");
    assert_eq!(config["side"], "tick_rule");
    assert_eq!(config["rows_in_range"], 600);
    // Partition pruning: one instrument, one day, one data file.
    assert_eq!(config["input_files"], 1);
    // Trades carry a side derived by the tick rule.
    let train =
        read_parquet(&dataset(&out, 72089, "2024-01-02", "2024-01-02").join("train.parquet"));
    let sv = train
        .column("signed_volume")
        .unwrap()
        .as_materialized_series()
        .clone();
    assert!(sv.f32().unwrap().into_no_null_iter().any(|v| v != 0.0));

    let stderr = run_fails(&mut prepare(
        &metadata,
        tmp.path().join("o2").to_str().unwrap(),
        "1",
        "2024-01-01",
        "2024-01-02",
    ));
    assert!(stderr.contains("no rows in range"), "{stderr}");
    assert!(!tmp.path().join("o2").exists());
}

#[test]
fn iceberg_table_on_s3_end_to_end() {
    let bucket = bucket();
    let emu = testkit::emulator();
    let tmp = tempfile::tempdir().unwrap();
    let metadata = iceberg_table_on_s3(tmp.path(), &format!("s3://{bucket}/warehouse"));
    assert!(metadata.starts_with("s3://"), "{metadata}");
    let out = format!("s3://{bucket}/out");
    let mut cmd = prepare(&metadata, &out, "72090", "2024-01-01", "2024-01-02");
    cmd.envs(emu.aws_env());
    run_ok(&mut cmd);
    let dir = Location::parse(&format!(
        "{out}/datasets/instrument=72090/start_date=2024-01-01/end_date=2024-01-02"
    ))
    .unwrap();
    let prep: Value =
        serde_json::from_slice(&io::read(&dir.join("preparation_config.json")).unwrap()).unwrap();
    assert_eq!(prep["rows_in_range"], 1200);
    assert_eq!(prep["input_files"], 2);
    assert_eq!(prep["side"], "tick_rule");
}

#[test]
fn pipeline_batch_config_drives_a_run() {
    let bucket = bucket();
    let emu = testkit::emulator();
    let tmp = tempfile::tempdir().unwrap();
    let metadata = iceberg_table(tmp.path());
    // The order-flow pipeline's batch_config.json as it stands, pointed at this table and bucket.
    let config = serde_json::json!({
      "data": {
        "metadata_location": metadata,
        "feature_cols": ["trade_price", "trade_quantity", "bid_price", "ask_price"],
        "instrument_filter": "72089",
        "start_date": "2024-01-01",
        "end_date": "2024-01-02",
        "lookback_period": 128,
        "apply_undersampling": true
      },
      "s3": {"bucket_name": bucket, "prefix": "ml-pipeline", "region": "us-east-1"},
      "training": {"batch_size": 32, "total_epochs": 10, "learning_rate": 0.001}
    });
    let path = tmp.path().join("batch_config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let mut cmd = runtime();
    cmd.envs(emu.aws_env())
        .args(["prepare", "--config", path.to_str().unwrap()]);
    let summary = run_ok(&mut cmd);
    assert_eq!(summary["done"], serde_json::json!(["instrument=72089"]));
    let dir = Location::parse(&format!("s3://{bucket}/ml-pipeline/datasets/instrument=72089/start_date=2024-01-01/end_date=2024-01-02")).unwrap();
    assert!(io::is_complete(&dir).unwrap());
    let prep: Value =
        serde_json::from_slice(&io::read(&dir.join("preparation_config.json")).unwrap()).unwrap();
    assert_eq!(prep["lookback"], 128);
    assert_eq!(prep["undersample"], true);
    assert_eq!(prep["rows_in_range"], 1200);
    let counts = &prep["splits"]["train"]["sample_class_counts"];
    assert_eq!(counts["0"], counts["2"]);
    // A flag on the command line wins over the file.
    let mut cmd = runtime();
    cmd.envs(emu.aws_env()).args([
        "prepare",
        "--config",
        path.to_str().unwrap(),
        "--end-date",
        "2024-01-01",
    ]);
    run_ok(&mut cmd);
    let dir = Location::parse(&format!("s3://{bucket}/ml-pipeline/datasets/instrument=72089/start_date=2024-01-01/end_date=2024-01-01")).unwrap();
    assert!(io::is_complete(&dir).unwrap());
}
