//! What the runtime's test modules share: the binary in a clean environment, and S3 on the
//! shared emulator.

use std::process::Command;

/// The variables the runtime's flags and the Batch job contract read: a test's command starts
/// without them, whatever the shell that runs the tests holds.
const RUNTIME_VARIABLES: [&str; 25] = [
    "INPUT",
    "OUTPUT",
    "INSTRUMENT",
    "START_DATE",
    "END_DATE",
    "LOOKBACK",
    "HORIZON",
    "THRESHOLD_BPS",
    "UNDERSAMPLE",
    "SEED",
    "COLUMN",
    "CONFIG",
    "SUMMARIES",
    "FREQ",
    "HOURS_PER_DAY",
    "CHECKPOINT_INTERVAL",
    "ALLOW_FAILURES",
    "ARRAY_SIZE",
    "AWS_BATCH_JOB_ARRAY_INDEX",
    "AWS_BATCH_JOB_ARRAY_SIZE",
    "SHARD_INDEX",
    "SHARD_COUNT",
    "SHARD_IDS",
    "SHARD_MANIFEST",
    "AWS_MAX_ATTEMPTS",
];

/// The `runtime` binary without [`RUNTIME_VARIABLES`], logging warnings only.
pub fn runtime() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runtime"));
    for var in RUNTIME_VARIABLES {
        cmd.env_remove(var);
    }
    cmd.env("RUNTIME_LOG", "warn");
    cmd
}

/// An S3 client on the shared emulator, path-style as S3-compatible stores need.
pub async fn emulator_s3() -> aws_sdk_s3::Client {
    let conf = testkit::emulator().config_loader().load().await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(true)
            .build(),
    )
}

/// A new empty bucket on the shared emulator, named from `prefix`. The test's in-process
/// `io` calls reach the emulator too.
pub fn new_bucket(prefix: &str) -> String {
    runtime::io::use_config_loader(testkit::emulator().config_loader());
    let name = testkit::unique_name(prefix);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let s3 = emulator_s3().await;
        s3.create_bucket().bucket(&name).send().await.unwrap();
    });
    name
}
