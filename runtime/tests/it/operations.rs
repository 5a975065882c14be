//! `collect --summaries` (the results table of training runs) and the exit codes a Batch retry
//! strategy reads: 1 for what a retry cannot fix, 75 for what may pass on its own.

use std::path::Path;
use std::process::{Command, Output};

use polars::prelude::*;
use serde_json::{json, Value};

use crate::common::runtime;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run runtime");
    eprintln!(
        "--- {cmd:?}\nexit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A summary as `train` writes it (the fields the table reads, and some it does not).
fn summary(accuracy: f64) -> Value {
    let model = |best: usize, speed: f64| {
        json!({
            "epochs": [
                {"epoch": 1, "train_loss": 1.1, "train_accuracy": 0.4, "val_loss": 1.0,
                 "val_accuracy": 0.4, "samples_per_s": speed, "seconds": 2.0},
                {"epoch": 2, "train_loss": 0.9, "train_accuracy": 0.5, "val_loss": 0.8,
                 "val_accuracy": 0.5, "samples_per_s": speed * 3.0, "seconds": 2.0},
            ],
            "best_epoch": best,
            "best_val_loss": if best == 1 { 1.0 } else { 0.8 },
            "test_loss": 0.85,
            "test_accuracy": accuracy,
            "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
            "parameters": 1234,
            "device": "cpu",
        })
    };
    json!({"models": {"cnn_lstm": model(2, 1000.0), "gru": model(1, 50.0)}})
}

/// Two datasets' summaries under `root` in `train`'s layout, plus files that are not summaries.
fn write_models(root: &Path) {
    for (id, accuracy) in [(7, 0.61), (22, 0.55)] {
        let dir = root.join(format!(
            "models/instrument={id}/start_date=2024-01-01/end_date=2024-01-02"
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("training_summary.json"),
            serde_json::to_vec_pretty(&summary(accuracy)).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("cnn_lstm_curves.svg"), "<svg/>").unwrap();
        std::fs::write(dir.join("_SUCCESS"), "{}").unwrap();
    }
}

#[test]
fn summaries_become_one_row_per_dataset_and_model() {
    let tmp = tempfile::tempdir().unwrap();
    write_models(tmp.path());
    let models = tmp.path().join("models");
    let parquet = tmp.path().join("results.parquet");
    let out = run(runtime()
        .args(["collect", "--summaries", "--input"])
        .arg(&models)
        .arg("--output")
        .arg(&parquet));
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["files"], 2);
    assert_eq!(report["rows"], 4);

    let table = ParquetReader::new(std::fs::File::open(&parquet).unwrap())
        .finish()
        .unwrap();
    let names: Vec<&str> = table
        .get_column_names()
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "instrument",
            "start_date",
            "end_date",
            "model",
            "epochs",
            "best_epoch",
            "best_val_loss",
            "test_loss",
            "test_accuracy",
            "samples_per_s",
            "device"
        ]
    );
    let ids: Vec<i64> = table
        .column("instrument")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(ids, [7, 7, 22, 22]);
    let model = table.column("model").unwrap();
    let models_col: Vec<String> = (0..4)
        .map(|i| model.get(i).unwrap().get_str().unwrap().to_string())
        .collect();
    assert_eq!(models_col, ["cnn_lstm", "gru", "cnn_lstm", "gru"]);
    let best: Vec<i64> = table
        .column("best_epoch")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(best, [2, 1, 2, 1]);
    let loss: Vec<f64> = table
        .column("best_val_loss")
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(loss, [0.8, 1.0, 0.8, 1.0]);
    let accuracy: Vec<f64> = table
        .column("test_accuracy")
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(accuracy, [0.61, 0.61, 0.55, 0.55]);
    // The mean over the epochs.
    let speed: Vec<f64> = table
        .column("samples_per_s")
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(speed, [2000.0, 100.0, 2000.0, 100.0]);

    let csv = tmp.path().join("results.csv");
    let out = run(runtime()
        .args(["collect", "--summaries", "--input"])
        .arg(&models)
        .arg("--output")
        .arg(&csv));
    assert_eq!(out.status.code(), Some(0));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with("instrument,start_date,end_date,model,epochs,best_epoch,"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 5);

    // `--output -`: an aligned table on stdout, nothing written.
    let out = run(runtime()
        .args(["collect", "--summaries", "--output", "-", "--input"])
        .arg(&models));
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[0].starts_with("instrument  start_date  end_date    model"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("         7  2024-01-01  2024-01-02  cnn_lstm"),
        "{text}"
    );
    assert!(lines[1].ends_with("0.6100           2000  cpu"), "{text}");
    let header_end = lines[0].find("device").unwrap();
    assert!(
        lines
            .iter()
            .skip(1)
            .all(|l| l.find("cpu") == Some(header_end)),
        "{text}"
    );
}

#[test]
fn the_result_files_table_also_prints_on_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("results/instrument=3");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("metrics.csv"), "accuracy,loss\n0.5,1.25\n").unwrap();
    let out = run(runtime()
        .args(["collect", "--output", "-", "--input"])
        .arg(tmp.path().join("results")));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "instrument  accuracy    loss\n         3    0.5000  1.2500\n"
    );
}

#[test]
fn bad_summaries_and_outputs_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let fails = |cmd: &mut Command| {
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        String::from_utf8(out.stderr).unwrap()
    };
    let stderr = fails(
        runtime()
            .args(["collect", "--summaries", "--output", "-", "--input"])
            .arg(tmp.path()),
    );
    assert!(
        stderr.contains("no training_summary.json under"),
        "{stderr}"
    );

    std::fs::write(
        tmp.path().join("training_summary.json"),
        "{\"models\": [1]}",
    )
    .unwrap();
    let stderr = fails(
        runtime()
            .args(["collect", "--summaries", "--output", "-", "--input"])
            .arg(tmp.path()),
    );
    assert!(
        stderr.contains("training_summary.json is not a training summary"),
        "{stderr}"
    );

    let stderr = fails(
        runtime()
            .args([
                "collect",
                "--summaries",
                "--output",
                "results.txt",
                "--input",
            ])
            .arg(tmp.path()),
    );
    assert!(
        stderr.contains("name a .parquet or .csv file, or `-`"),
        "{stderr}"
    );
}

#[test]
fn summaries_on_s3_tabulate_too() {
    let emu = testkit::emulator();
    let tmp = tempfile::tempdir().unwrap();
    write_models(tmp.path());
    let bucket = testkit::unique_name("results");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s3 = crate::common::emulator_s3().await;
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        for id in [7, 22] {
            let key = format!(
                "run/models/instrument={id}/start_date=2024-01-01/end_date=2024-01-02/training_summary.json"
            );
            s3.put_object()
                .bucket(&bucket)
                .key(&key)
                .body(serde_json::to_vec(&summary(0.5)).unwrap().into())
                .send()
                .await
                .unwrap();
        }
    });
    let out = run(emu
        .command(env!("CARGO_BIN_EXE_runtime"))
        .env("RUNTIME_LOG", "warn")
        .args(["collect", "--summaries", "--output", "-", "--input"])
        .arg(format!("s3://{bucket}/run/models")));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 5);
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn an_unreachable_endpoint_exits_with_the_transient_code() {
    let emu = testkit::emulator();
    let tmp = tempfile::tempdir().unwrap();
    let out = run(emu
        .command(env!("CARGO_BIN_EXE_runtime"))
        .env("RUNTIME_LOG", "warn")
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", closed_port()),
        )
        // Fail fast: the SDK's own retries end sooner, the exit code is the same.
        .env("AWS_MAX_ATTEMPTS", "2")
        .args(["collect", "--input", "s3://results/run-1", "--output"])
        .arg(tmp.path().join("all.csv")));
    assert_eq!(out.status.code(), Some(runtime::exit::TRANSIENT as i32));
    assert!(!tmp.path().join("all.csv").exists());
}

#[test]
fn server_errors_after_the_retries_are_transient_and_a_missing_bucket_is_not() {
    let emu = testkit::emulator();
    let proxy = testkit::faults::FaultProxy::start(&emu.endpoint, &testkit::unique_account());
    let tmp = tempfile::tempdir().unwrap();
    let collect = |bucket: &str| {
        let mut cmd = proxy.command(env!("CARGO_BIN_EXE_runtime"));
        cmd.env("RUNTIME_LOG", "warn")
            .env("AWS_MAX_ATTEMPTS", "2")
            .args(["collect", "--output"])
            .arg(tmp.path().join("all.csv"))
            .arg("--input")
            .arg(format!("s3://{bucket}/run-1"));
        cmd
    };
    // Every request answered with a throttle or a 500, as AWS under load.
    proxy.set_faults(1000, 7);
    let out = run(&mut collect("any-bucket"));
    assert_eq!(out.status.code(), Some(runtime::exit::TRANSIENT as i32));
    assert!(proxy.counts().throttled + proxy.counts().server_errors >= 2);

    proxy.set_faults(0, 7);
    let out = run(&mut collect(&testkit::unique_name("missing")));
    assert_eq!(
        out.status.code(),
        Some(1),
        "no such bucket: a retry cannot fix it"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("NoSuchBucket"));
}
