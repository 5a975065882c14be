//! `runtime train` end to end on small prepared datasets written here in the dataset layout of
//! docs/design.md, with a planted signal (the label follows `obi` and the previous row's `ofi`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use runtime::train::data::Split;
use runtime::train::fit::{evaluate, load_model};
use runtime::train::model::{ModelKind, FEATURES};
use runtime::train::store::Store;
use runtime::train::summary::Summary;
use runtime::train::DatasetRef;
use serde_json::Value;

const LOOKBACK: usize = 8;

struct Spec {
    instrument: i64,
    rows: [usize; 3],
    drop_column: Option<&'static str>,
    skip_split: Option<&'static str>,
}

impl Spec {
    fn new(instrument: i64, rows: [usize; 3]) -> Spec {
        Spec {
            instrument,
            rows,
            drop_column: None,
            skip_split: None,
        }
    }
}

fn dataset_dir(root: &Path, instrument: i64) -> PathBuf {
    root.join(format!(
        "datasets/instrument={instrument}/start_date=2024-01-01/end_date=2024-01-02"
    ))
}

fn models_dir(out: &Path, instrument: i64) -> PathBuf {
    out.join(format!(
        "models/instrument={instrument}/start_date=2024-01-01/end_date=2024-01-02"
    ))
}

/// Writes one prepared dataset: features ~ N(0,1)-ish, label = class of `obi_t + ofi_{t-1}`.
fn write_dataset(root: &Path, spec: &Spec) {
    let dir = dataset_dir(root, spec.instrument);
    fs::create_dir_all(&dir).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(spec.instrument as u64);
    let mut ts = 1_704_067_200_000_000i64;
    let mut counts = serde_json::Map::new();
    for (split, &rows) in ["train", "validation", "test"].iter().zip(&spec.rows) {
        let mut cols: Vec<Vec<f64>> = vec![Vec::with_capacity(rows); FEATURES.len()];
        for _ in 0..rows {
            for col in cols.iter_mut() {
                col.push(rng.random_range(-1.7..1.7));
            }
        }
        let (obi, ofi) = (&cols[2], &cols[3]);
        let label: Vec<i64> = (0..rows)
            .map(|i| {
                let z = obi[i] + if i > 0 { ofi[i - 1] } else { 0.0 };
                if z < -0.7 {
                    0
                } else if z > 0.7 {
                    2
                } else {
                    1
                }
            })
            .collect();
        let mut class = [0u64; 3];
        label.iter().for_each(|&l| class[l as usize] += 1);
        counts.insert(split.to_string(), serde_json::json!({"rows": rows, "classes": {"0": class[0], "1": class[1], "2": class[2]}}));
        let times: Vec<i64> = (0..rows as i64).map(|i| ts + i * 100_000).collect();
        ts += rows as i64 * 100_000;
        let mut columns = vec![Column::new("ts".into(), times)
            .cast(&DataType::Datetime(
                TimeUnit::Microseconds,
                Some(TimeZone::UTC),
            ))
            .unwrap()];
        for (name, values) in FEATURES.iter().zip(cols) {
            if spec.drop_column != Some(*name) {
                columns.push(Column::new((*name).into(), values));
            }
        }
        columns.push(Column::new("label".into(), label));
        columns.push(Column::new(
            "sample".into(),
            (0..rows).map(|i| i + 1 >= LOOKBACK).collect::<Vec<bool>>(),
        ));
        if spec.skip_split == Some(*split) {
            continue;
        }
        let mut df = DataFrame::new_infer_height(columns).unwrap();
        ParquetWriter::new(fs::File::create(dir.join(format!("{split}.parquet"))).unwrap())
            .finish(&mut df)
            .unwrap();
    }
    fs::write(
        dir.join("scaler.json"),
        serde_json::json!({"features": FEATURES, "mean": vec![0.0; 8], "std": vec![1.0; 8]})
            .to_string(),
    )
    .unwrap();
    fs::write(
        dir.join("preparation_config.json"),
        serde_json::json!({"lookback": LOOKBACK, "horizon": 10, "threshold_bps": 1.0, "splits": counts}).to_string(),
    )
    .unwrap();
}

fn train(root: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runtime"));
    cmd.arg("train")
        .arg("--datasets")
        .arg(root)
        .arg("--output")
        .arg(out)
        .args(extra);
    // One compute thread each: the tests run side by side.
    cmd.env("RAYON_NUM_THREADS", "1")
        .env_remove("AWS_BATCH_JOB_ARRAY_INDEX");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn summary(out: &Path, instrument: i64) -> (Value, Summary) {
    let bytes = fs::read(models_dir(out, instrument).join("training_summary.json")).unwrap();
    (
        serde_json::from_slice(&bytes).unwrap(),
        Summary::parse(&bytes).unwrap(),
    )
}

/// Every file under `dir` with its bytes and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, std::time::SystemTime)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                files.push((
                    e.path(),
                    fs::read(e.path()).unwrap(),
                    e.metadata().unwrap().modified().unwrap(),
                ));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_model_learns_and_writes_summary_plots_and_best_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, out) = (tmp.path().join("prep"), tmp.path().join("out"));
    write_dataset(&root, &Spec::new(7, [900, 300, 300]));
    let o = run(&mut train(
        &root,
        &out,
        &[
            "--models",
            "cnn_lstm,lstm,gru",
            "--epochs",
            "4",
            "--batch-size",
            "16",
            "--lr",
            "0.01",
        ],
    ));
    assert!(o.status.success(), "{o:?}");
    let dir = models_dir(&out, 7);
    assert_eq!(
        String::from_utf8(o.stdout).unwrap().trim(),
        dir.join("training_summary.json").display().to_string()
    );

    let (json, summary) = summary(&out, 7);
    for name in ["cnn_lstm", "lstm", "gru"] {
        let m = &json["models"][name];
        let epochs = m["epochs"].as_array().unwrap();
        assert_eq!(epochs.len(), 4, "{name}");
        for (i, e) in epochs.iter().enumerate() {
            assert_eq!(e["epoch"], i + 1);
            for k in [
                "train_loss",
                "train_accuracy",
                "val_loss",
                "val_accuracy",
                "samples_per_s",
                "seconds",
            ] {
                assert!(
                    e[k].as_f64().unwrap().is_finite() && e[k].as_f64().unwrap() >= 0.0,
                    "{name} {k}"
                );
            }
        }
        let val: Vec<f64> = epochs
            .iter()
            .map(|e| e["val_loss"].as_f64().unwrap())
            .collect();
        let later_best = val[1..].iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(
            later_best < val[0],
            "{name}: validation loss did not fall: {val:?}"
        );
        assert_eq!(m["device"], "cpu");
        assert!(m["parameters"].as_u64().unwrap() > 10_000);
        let best_epoch = m["best_epoch"].as_u64().unwrap() as usize;
        assert_eq!(
            val[best_epoch - 1],
            val.iter().cloned().fold(f64::INFINITY, f64::min)
        );
        let cm: Vec<Vec<u64>> = serde_json::from_value(m["confusion_matrix"].clone()).unwrap();
        assert_eq!(cm.len(), 3);
        assert_eq!(cm.iter().flatten().sum::<u64>(), 300 - LOOKBACK as u64 + 1);
        let diag: u64 = (0..3).map(|i| cm[i][i]).sum();
        assert!((diag as f64 / 293.0 - m["test_accuracy"].as_f64().unwrap()).abs() < 1e-12);
        assert!(m["test_loss"].as_f64().unwrap().is_finite());

        let svg = fs::read_to_string(dir.join(format!("{name}_curves.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name} plot"
        );
        assert!(
            svg.matches("<polyline").count() >= 4,
            "{name} plot has no curves"
        );
        assert!(dir
            .join(format!("{}_best.mpk", name.to_uppercase()))
            .is_file());
    }
    // Chance is about 1/3 with these thresholds.
    let acc = summary.models["cnn_lstm"].test_accuracy.unwrap();
    assert!(acc > 0.55, "cnn_lstm test accuracy {acc}");

    // The best checkpoint alone reproduces the recorded test accuracy.
    let store = Store::open(root.to_str().unwrap()).unwrap();
    let ds = DatasetRef {
        instrument: "7".into(),
        start_date: "2024-01-01".into(),
        end_date: "2024-01-02".into(),
    };
    let test: std::sync::Arc<Split> = runtime::train::load(&store, &ds).unwrap().data.test;
    type B = burn::backend::Flex;
    for kind in ModelKind::ALL {
        let bytes = fs::read(dir.join(format!("{}_best.mpk", kind.upper()))).unwrap();
        let model = load_model::<B>(kind, &bytes, &Default::default()).unwrap();
        let eval = evaluate(&model, &test, LOOKBACK, 64, 1, &Default::default(), None).unwrap();
        let recorded = &summary.models[kind.name()];
        // Exact counts; the accuracy only up to JSON's float round trip.
        let cm: Vec<Vec<u64>> = eval.confusion.iter().map(|r| r.to_vec()).collect();
        assert_eq!(Some(cm), recorded.confusion_matrix, "{kind}");
        assert!(
            (eval.accuracy - recorded.test_accuracy.unwrap()).abs() < 1e-12,
            "{kind}"
        );
    }

    // Complete: a second run exits 0 at once and touches nothing. "At once" without a clock:
    // the splits are made unreadable first, so a run that read (let alone trained on) the
    // dataset would fail; this one only reads its summary.
    let before = snapshot(&out);
    for split in ["train", "validation", "test"] {
        fs::write(
            dataset_dir(&root, 7).join(format!("{split}.parquet")),
            b"not parquet",
        )
        .unwrap();
    }
    let o = run(&mut train(
        &root,
        &out,
        &[
            "--models",
            "cnn_lstm,lstm,gru",
            "--epochs",
            "4",
            "--batch-size",
            "16",
            "--lr",
            "0.01",
        ],
    ));
    assert!(o.status.success(), "{o:?}");
    assert!(o.stdout.is_empty(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("complete, skipped"),
        "{o:?}"
    );
    assert_eq!(snapshot(&out), before);
}

#[test]
fn sigterm_checkpoints_exits_143_and_the_rerun_resumes_to_the_same_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, out, reference) = (
        tmp.path().join("prep"),
        tmp.path().join("out"),
        tmp.path().join("ref"),
    );
    write_dataset(&root, &Spec::new(3, [2400, 120, 120]));
    let args = ["--models", "gru", "--epochs", "3", "--batch-size", "8"];

    let mut child = train(&root, &out, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ckpt = models_dir(&out, 3).join("checkpoints/gru.ckpt");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ckpt.exists() {
        assert!(
            Instant::now() < deadline,
            "no checkpoint after the first epoch"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Into the second epoch, so the interruption lands mid-epoch.
    std::thread::sleep(Duration::from_millis(300));
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("checkpoint"), "{stderr}");
    let (_, interrupted) = summary(&out, 3);
    let done = interrupted.models["gru"].epochs.clone();
    assert!(!done.is_empty() && done.len() < 3, "{done:?}");
    assert!(interrupted.models["gru"].test_accuracy.is_none());

    let o = run(&mut train(&root, &out, &args));
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming"));
    let (_, resumed) = summary(&out, 3);

    let o = run(&mut train(&root, &reference, &args));
    assert!(o.status.success(), "{o:?}");
    let (_, uninterrupted) = summary(&reference, 3);

    let (r, u) = (&resumed.models["gru"], &uninterrupted.models["gru"]);
    assert_eq!(r.epochs.len(), 3);
    assert_eq!(r.epochs.len(), u.epochs.len());
    assert_eq!(
        r.epochs[..done.len()],
        done[..],
        "epochs finished before the signal are kept as they were"
    );
    assert!(r.test_accuracy.is_some());
    // Same order, same state: the resumed run's losses follow the uninterrupted run's.
    for (a, b) in r.epochs.iter().zip(&u.epochs) {
        assert!((a.train_loss - b.train_loss).abs() < 1e-3, "{a:?} vs {b:?}");
    }
}

/// EC2's instance metadata, as much of it as a Spot notice needs (moto serves none): IMDSv2
/// tokens, and the instance-action document, 404 until `notice` is set, as on a real instance.
fn instance_metadata(notice: std::sync::Arc<std::sync::atomic::AtomicBool>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 0) && header != "\r\n" {
                header.clear();
            }
            let (status, extra, body) = if request.starts_with("PUT /latest/api/token ") {
                (
                    "200 OK",
                    "x-aws-ec2-metadata-token-ttl-seconds: 21600\r\n",
                    "a-token",
                )
            } else if request.starts_with("GET /latest/meta-data/spot/instance-action ")
                && notice.load(std::sync::atomic::Ordering::SeqCst)
            {
                (
                    "200 OK",
                    "",
                    r#"{"action": "terminate", "time": "2026-11-26T01:02:00Z"}"#,
                )
            } else {
                ("404 Not Found", "", "")
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    endpoint
}

#[test]
fn spot_interruption_notice_checkpoints_and_exits_143_before_the_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, out) = (tmp.path().join("prep"), tmp.path().join("out"));
    write_dataset(&root, &Spec::new(4, [2400, 120, 120]));
    // Enough epochs to outlast the 2 s between two polls of the notice.
    let args = ["--models", "gru", "--epochs", "40", "--batch-size", "8"];
    let notice = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let endpoint = instance_metadata(notice.clone());

    let mut child = train(&root, &out, &args)
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint)
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ckpt = models_dir(&out, 4).join("checkpoints/gru.ckpt");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ckpt.exists() {
        assert!(
            Instant::now() < deadline,
            "no checkpoint after the first epoch"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the notice"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Polled while no notice is posted, the job trains on; then EC2 posts one.
    notice.store(true, std::sync::atomic::Ordering::SeqCst);
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains("Spot interruption notice") && stderr.contains("terminate"),
        "{stderr}"
    );
    let (_, interrupted) = summary(&out, 4);
    let done = interrupted.models["gru"].epochs.len();
    assert!((1..40).contains(&done), "{done} epochs");

    let o = run(&mut train(&root, &out, &args));
    assert!(o.status.success(), "{o:?}");
    assert_eq!(summary(&out, 4).1.models["gru"].epochs.len(), 40);
}

fn assert_bad(cmd: &mut Command, out: &Path, needle: &str) {
    let o = run(cmd);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(o.stdout.is_empty());
    assert!(!out.exists(), "bad input wrote {}", out.display());
}

#[test]
fn bad_input_exits_1_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    write_dataset(&good, &Spec::new(1, [60, 30, 30]));
    let out = tmp.path().join("out");

    assert_bad(
        &mut train(&good, &out, &["--models", "cnn_lstm,rnn"]),
        &out,
        "unknown model \"rnn\"",
    );
    assert_bad(
        &mut train(&good, &out, &["--batch-size", "0"]),
        &out,
        "--batch-size",
    );
    assert_bad(
        &mut train(&good, &out, &["--instrument", "99"]),
        &out,
        "instrument(s) 99",
    );

    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    assert_bad(&mut train(&empty, &out, &[]), &out, "no dataset");
    assert_bad(
        &mut train(&tmp.path().join("absent"), &out, &[]),
        &out,
        "no such directory",
    );

    // A second, broken dataset stops the run before the good one writes anything.
    let missing_split = tmp.path().join("missing-split");
    write_dataset(&missing_split, &Spec::new(1, [60, 30, 30]));
    write_dataset(
        &missing_split,
        &Spec {
            skip_split: Some("validation"),
            ..Spec::new(2, [60, 30, 30])
        },
    );
    assert_bad(
        &mut train(&missing_split, &out, &["--epochs", "1"]),
        &out,
        "missing validation.parquet",
    );

    let missing_column = tmp.path().join("missing-column");
    write_dataset(
        &missing_column,
        &Spec {
            drop_column: Some("vol"),
            ..Spec::new(4, [60, 30, 30])
        },
    );
    assert_bad(
        &mut train(&missing_column, &out, &["--epochs", "1"]),
        &out,
        "missing column(s) vol",
    );

    #[cfg(not(feature = "cuda"))]
    assert_bad(
        &mut train(&good, &out, &["--device", "cuda"]),
        &out,
        "built without CUDA",
    );
}

// ---- end to end on S3 (moto): generate → prepare → train as a two-child array ----

fn s3_bucket() -> String {
    crate::common::new_bucket("train")
}

fn runtime_on_emulator(args: &[&str]) -> Output {
    let mut cmd = testkit::emulator().command(env!("CARGO_BIN_EXE_runtime"));
    cmd.args(args)
        .env("RAYON_NUM_THREADS", "1")
        .env_remove("AWS_BATCH_JOB_ARRAY_INDEX");
    run(&mut cmd)
}

#[test]
fn s3_generate_prepare_train_array_children_and_skip_when_complete() {
    use runtime::io::{self, Location};
    let bucket = s3_bucket();
    let (raw, root) = (
        format!("s3://{bucket}/raw"),
        format!("s3://{bucket}/ml-pipeline"),
    );
    let day = ["--start-date", "2024-01-01", "--end-date", "2024-01-01"];
    let o = runtime_on_emulator(
        &[
            &[
                "generate",
                "--output",
                &raw,
                "--instrument",
                "21,22",
                "--hours-per-day",
                "0.2",
            ][..],
            &day,
        ]
        .concat(),
    );
    assert!(o.status.success(), "{o:?}");
    let o = runtime_on_emulator(
        &[
            &[
                "prepare",
                "--input",
                &raw,
                "--output",
                &root,
                "--instrument",
                "21,22",
                "--lookback",
                "16",
            ][..],
            &day,
        ]
        .concat(),
    );
    assert!(o.status.success(), "{o:?}");

    let train_args = [
        "train",
        "--datasets",
        &root,
        "--output",
        &root,
        "--models",
        "cnn_lstm",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--array-size",
        "2",
    ];
    for (index, instrument) in [("0", 21), ("1", 22)] {
        let mut cmd = testkit::emulator().command(env!("CARGO_BIN_EXE_runtime"));
        cmd.args(train_args)
            .env("RAYON_NUM_THREADS", "1")
            .env("AWS_BATCH_JOB_ARRAY_INDEX", index);
        let o = run(&mut cmd);
        assert!(o.status.success(), "{o:?}");
        let models = format!(
            "{root}/models/instrument={instrument}/start_date=2024-01-01/end_date=2024-01-01"
        );
        // Each child trained exactly its own share.
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            format!("{models}/training_summary.json")
        );
        let loc = Location::parse(&models).unwrap();
        let summary =
            Summary::parse(&io::read(&loc.join("training_summary.json")).unwrap()).unwrap();
        let m = &summary.models["cnn_lstm"];
        assert_eq!(m.epochs.len(), 2);
        // Beats always answering the test split's most frequent class.
        let cm = m.confusion_matrix.as_ref().unwrap();
        let total: u64 = cm.iter().flatten().sum();
        let majority =
            cm.iter().map(|r| r.iter().sum::<u64>()).max().unwrap() as f64 / total as f64;
        assert!(
            m.test_accuracy.unwrap() > majority + 0.03,
            "{} vs majority {majority}",
            m.test_accuracy.unwrap()
        );
        for file in [
            "CNN_LSTM_best.mpk",
            "cnn_lstm_curves.svg",
            "checkpoints/cnn_lstm.ckpt",
        ] {
            assert!(io::exists(&loc.join(file)).unwrap(), "{file}");
        }
    }
    // Both complete: the whole array again is a no-op.
    let all = Location::parse(&format!("{root}/models")).unwrap();
    let before: Vec<(String, Vec<u8>)> = io::list(&all)
        .unwrap()
        .iter()
        .map(|l| (l.to_string(), io::read(l).unwrap()))
        .collect();
    let o = runtime_on_emulator(&train_args[..train_args.len() - 2]);
    assert!(o.status.success(), "{o:?}");
    assert!(o.stdout.is_empty());
    let after: Vec<(String, Vec<u8>)> = io::list(&all)
        .unwrap()
        .iter()
        .map(|l| (l.to_string(), io::read(l).unwrap()))
        .collect();
    assert_eq!(before, after);
}
