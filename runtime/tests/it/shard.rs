//! `provision submit --ids`'s fan-out variables as the runtime reads them: a job submitted on
//! its own with SHARD_INDEX and SHARD_COUNT takes the same contiguous share of its instrument
//! list as array child SHARD_INDEX would; SHARD_IDS or its shard of SHARD_MANIFEST replace the
//! list.

use std::process::Command;

use serde_json::Value;

fn runtime(args: &[&str]) -> Command {
    let mut cmd = crate::common::runtime();
    cmd.args(args);
    cmd
}

fn stdout_json(cmd: &mut Command) -> Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn shard_variables_give_the_job_its_share() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    let out = tmp.path().join("out");
    let (raw, out) = (raw.to_str().unwrap(), out.to_str().unwrap());
    let day = ["--start-date", "2024-01-01", "--end-date", "2024-01-01"];
    let generated = runtime(&["generate", "--output", raw, "--instrument", "1,2,3,4,5"])
        .args(day)
        .args(["--hours-per-day", "0.1", "--freq", "1s"])
        .output()
        .unwrap();
    assert!(generated.status.success());

    let prepare = |index: &str| {
        let mut cmd = runtime(&[
            "prepare",
            "--input",
            raw,
            "--output",
            out,
            "--lookback",
            "16",
        ]);
        cmd.args(day)
            .env("INSTRUMENT", "1,2,3,4,5")
            .env("SHARD_COUNT", "2")
            .env("SHARD_INDEX", index);
        cmd
    };
    let first = stdout_json(&mut prepare("0"));
    assert_eq!(
        first["done"],
        serde_json::json!(["instrument=1", "instrument=2"])
    );
    let second = stdout_json(&mut prepare("1"));
    assert_eq!(
        second["done"],
        serde_json::json!(["instrument=3", "instrument=4", "instrument=5"])
    );
    let bad = prepare("2").output().unwrap();
    assert_eq!(bad.status.code(), Some(1), "index 2 of 2 is out of range");
}

#[test]
fn shard_ids_and_manifests_replace_the_instrument_list() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    let (raw, root) = (raw.to_str().unwrap(), tmp.path());
    let day = ["--start-date", "2024-01-01", "--end-date", "2024-01-01"];
    let generated = runtime(&["generate", "--output", raw, "--instrument", "1,2,3,4,5"])
        .args(day)
        .args(["--hours-per-day", "0.1", "--freq", "1s"])
        .output()
        .unwrap();
    assert!(generated.status.success());
    let prepare = |out: &str| {
        let out = root.join(out);
        let mut cmd = runtime(&[
            "prepare",
            "--input",
            raw,
            "--output",
            out.to_str().unwrap(),
            "--lookback",
            "16",
        ]);
        cmd.args(day);
        cmd
    };

    // No --instrument at all: SHARD_IDS is the job's list.
    let inline = stdout_json(prepare("a").env("SHARD_IDS", "4,5"));
    assert_eq!(
        inline["done"],
        serde_json::json!(["instrument=4", "instrument=5"])
    );

    // An array child reads its shard of the manifest (a local path here; s3:// on Batch).
    let manifest = root.join("manifest.json");
    std::fs::write(
        &manifest,
        r#"{"format_version": 1, "shard_count": 2, "id_count": 3, "shards": [["1"], ["2", "3"]]}"#,
    )
    .unwrap();
    let child = stdout_json(
        prepare("b")
            .env("SHARD_MANIFEST", manifest.to_str().unwrap())
            .env("SHARD_COUNT", "2")
            .env("AWS_BATCH_JOB_ARRAY_INDEX", "1"),
    );
    assert_eq!(
        child["done"],
        serde_json::json!(["instrument=2", "instrument=3"])
    );

    // An id that is no instrument id: exit 1, nothing written.
    let bad = prepare("c").env("SHARD_IDS", "AAPL").output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("AAPL"));
    assert!(!root.join("c").exists());
}
