//! The runtime's main error messages, pinned as insta snapshots (`tests/it/snapshots/`): what a
//! user reads on stderr when a job's input or flags are wrong. Temporary paths, log times and
//! colours are filtered.
//! After an intended change: `INSTA_UPDATE=always cargo test --workspace -- snapshots`, then
//! review the diff.

use std::process::Command;

fn runtime(tmp: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_runtime"))
        .current_dir(tmp)
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .env_remove("AWS_BATCH_JOB_ARRAY_INDEX")
        .env_remove("CONFIG")
        .output()
        .unwrap();
    format!(
        "exit: {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn error_messages_of_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    let dates = ["--start-date", "2024-01-01", "--end-date", "2024-01-02"];
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "error_prepare_missing_input",
            [
                &["prepare", "--input", "missing", "--output", "out"][..],
                &["--instrument", "1"],
                &dates,
            ]
            .concat(),
        ),
        (
            "error_prepare_dates_reversed",
            [
                &["prepare", "--input", "empty", "--output", "out"][..],
                &["--instrument", "1"],
                &["--start-date", "2024-01-02", "--end-date", "2024-01-01"],
            ]
            .concat(),
        ),
        (
            "error_generate_bad_date",
            vec![
                "generate",
                "--output",
                "out",
                "--instrument",
                "1",
                "--start-date",
                "2024-02-30",
                "--end-date",
                "2024-03-01",
            ],
        ),
        (
            "error_train_no_dataset",
            vec!["train", "--datasets", "empty", "--output", "out"],
        ),
        (
            "error_train_unknown_model",
            vec![
                "train",
                "--datasets",
                "empty",
                "--output",
                "out",
                "--models",
                "transformer",
            ],
        ),
    ];
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    // A temporary directory's path holds letters, digits, `/`, `_` and `.`; only `.` needs
    // escaping in the filter's regex.
    let path = tmp.path().display().to_string().replace('.', r"\.");
    settings.add_filter(&path, "[tmp]");
    // The log lines before an error: their colours and times.
    settings.add_filter("\x1b\\[[0-9;]*m", "");
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", "[time]");
    for (snapshot, args) in cases {
        let report = runtime(tmp.path(), &args);
        assert!(report.starts_with("exit: Some(1)"), "{args:?}: {report}");
        assert!(!tmp.path().join("out").exists(), "{args:?} wrote output");
        settings.bind(|| insta::assert_snapshot!(snapshot, report));
    }
}
