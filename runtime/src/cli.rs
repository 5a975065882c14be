//! The command line (docs/design.md, "Command line"). Every flag also reads an environment
//! variable, so a job definition can configure a run with its environment alone.

use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};

use crate::train::DeviceKind;

/// The AWS Batch job entrypoint: synthetic ticks, order-flow features, model training.
///
/// URIs are local paths or `s3://bucket/prefix`; S3 endpoint, region and credentials come from
/// the SDK's standard chain. Exit codes: 0 success, 1 bad input or configuration (a retry
/// cannot fix it), 75 a transient error (S3 or the network still failing after the SDK's own
/// retries: retry later), 143 interrupted by SIGTERM after a checkpoint (retry to resume).
#[derive(Debug, Parser)]
#[command(name = "runtime", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write seeded synthetic ticks (the raw tick schema, hive layout).
    Generate(GenerateArgs),
    /// Compute features, labels and splits for each instrument and date range.
    Prepare(PrepareArgs),
    /// Train CNN-LSTM / LSTM / GRU models on prepared datasets.
    Train(TrainArgs),
    /// Gather every job's result files under a prefix into one table.
    Collect(CollectArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Where to write `instrument={id}/date={YYYY-MM-DD}/*.parquet`.
    #[arg(long, env = "OUTPUT", value_name = "URI")]
    pub output: String,
    /// Instrument ids, comma-separated.
    #[arg(
        long,
        env = "INSTRUMENT",
        value_delimiter = ',',
        required = true,
        value_name = "ID"
    )]
    pub instrument: Vec<i64>,
    /// First day (YYYY-MM-DD).
    #[arg(long, env = "START_DATE", value_name = "D", value_parser = day)]
    pub start_date: NaiveDate,
    /// Last day, inclusive (YYYY-MM-DD).
    #[arg(long, env = "END_DATE", value_name = "D", value_parser = day)]
    pub end_date: NaiveDate,
    /// Time between events (`100ms`, `1s`, ...).
    #[arg(long, env = "FREQ", default_value = "100ms")]
    pub freq: String,
    /// Seed of the random generator.
    #[arg(long, env = "SEED", default_value_t = 42)]
    pub seed: u64,
    /// Trading hours per day to generate (events start at 00:00 UTC).
    #[arg(long, env = "HOURS_PER_DAY", default_value_t = 1.0)]
    pub hours_per_day: f64,
}

/// The array-job share: which contiguous part of a list this job takes.
#[derive(Debug, Clone, Args)]
pub struct ArrayArgs {
    /// Number of children of the array job (or AWS_BATCH_JOB_ARRAY_SIZE where Batch sets it).
    #[arg(long, env = "ARRAY_SIZE", value_name = "N")]
    pub array_size: Option<u32>,
    /// This child's index; Batch sets it.
    #[arg(long, env = "AWS_BATCH_JOB_ARRAY_INDEX", value_name = "I")]
    pub array_index: Option<u32>,
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Raw ticks: a hive-partitioned Parquet root (`instrument={id}/date={d}/*.parquet`), any
    /// Parquet file or directory with `instrument_id`, or an Iceberg table's metadata.json.
    #[arg(long, env = "INPUT", value_name = "URI")]
    pub input: Option<String>,
    /// Output root: datasets go under `ROOT/datasets/`.
    #[arg(long, env = "OUTPUT", value_name = "ROOT")]
    pub output: Option<String>,
    /// Instrument ids, comma-separated.
    #[arg(long, env = "INSTRUMENT", value_delimiter = ',', value_name = "ID")]
    pub instrument: Vec<i64>,
    /// First day (YYYY-MM-DD), inclusive.
    #[arg(long, env = "START_DATE", value_name = "D", value_parser = day)]
    pub start_date: Option<NaiveDate>,
    /// Last day (YYYY-MM-DD), inclusive.
    #[arg(long, env = "END_DATE", value_name = "D", value_parser = day)]
    pub end_date: Option<NaiveDate>,
    /// Window length the trainer uses (rows); `sample` marks rows that end a whole window
    /// [default: 128].
    #[arg(long, env = "LOOKBACK", value_name = "N")]
    pub lookback: Option<usize>,
    /// Label horizon (rows ahead) [default: 10].
    #[arg(long, env = "HORIZON", value_name = "N")]
    pub horizon: Option<usize>,
    /// Label threshold in basis points [default: 1.0].
    #[arg(long, env = "THRESHOLD_BPS", value_name = "BPS")]
    pub threshold_bps: Option<f64>,
    /// Balance the train split's classes (only the `sample` flags change).
    #[arg(long, env = "UNDERSAMPLE")]
    pub undersample: bool,
    /// Seed for undersampling [default: 42].
    #[arg(long, env = "SEED")]
    pub seed: Option<u64>,
    /// Rename input columns: `ts=my_time,bid_size=bq`.
    #[arg(long, env = "COLUMN", value_delimiter = ',', value_name = "STD=THEIRS")]
    pub column: Vec<String>,
    /// Read flags from a JSON or TOML file, local or s3:// (also the order-flow pipeline's
    /// batch_config.json); flags given on the command line or in the environment win.
    #[arg(long, env = "CONFIG", value_name = "URI")]
    pub config: Option<String>,
    #[command(flatten)]
    pub array: ArrayArgs,
    /// Keep going when an instrument fails; failures are listed in a failures file.
    #[arg(long, env = "ALLOW_FAILURES")]
    pub allow_failures: bool,
    /// With --allow-failures: stop after this many failures in a row.
    #[arg(long, env = "MAX_CONSECUTIVE_FAILURES", default_value_t = 5)]
    pub max_consecutive_failures: u32,
    /// With --allow-failures: stop when more than this fraction of units failed.
    #[arg(long, env = "MAX_FAILURE_RATE", default_value_t = 0.2)]
    pub max_failure_rate: f64,
    /// Record progress every N units.
    #[arg(long, env = "CHECKPOINT_INTERVAL", default_value_t = 50)]
    pub checkpoint_interval: u32,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The ROOT that `prepare --output` wrote.
    #[arg(long, env = "DATASETS", value_name = "ROOT")]
    pub datasets: Option<String>,
    /// Output root: models go under `ROOT/models/`.
    #[arg(long, env = "OUTPUT", value_name = "ROOT")]
    pub output: Option<String>,
    /// Train only these instruments (comma-separated).
    #[arg(long, env = "INSTRUMENT", value_delimiter = ',', value_name = "ID")]
    pub instrument: Vec<i64>,
    /// Models to train, comma-separated: cnn_lstm, lstm, gru [default: all three].
    #[arg(long, env = "MODELS", value_delimiter = ',', value_name = "NAME")]
    pub models: Vec<String>,
    /// Epochs per model [default: 10].
    #[arg(long, env = "EPOCHS", value_name = "N")]
    pub epochs: Option<usize>,
    /// Windows per training batch [default: 32].
    #[arg(long, env = "BATCH_SIZE", value_name = "N")]
    pub batch_size: Option<usize>,
    /// Adam learning rate [default: 0.001].
    #[arg(long, env = "LR", value_name = "F")]
    pub lr: Option<f64>,
    /// cpu, or cuda (a build with `--features cuda` and an NVIDIA driver).
    #[arg(long, env = "DEVICE", value_enum, ignore_case = true, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// Seed of the weight initialisation and of the epoch shuffles.
    #[arg(long, env = "SEED", default_value_t = 42)]
    pub seed: u64,
    /// Read flags from a JSON or TOML file, local or s3:// (also the order-flow pipeline's
    /// batch_config.json: its s3.bucket_name + s3.prefix is both roots); command-line flags win.
    #[arg(long, env = "CONFIG", value_name = "URI")]
    pub config: Option<String>,
    #[command(flatten)]
    pub array: ArrayArgs,
}

#[derive(Debug, Args)]
pub struct CollectArgs {
    /// A prefix holding result files (Parquet or CSV) in hive-style directories.
    #[arg(long, env = "INPUT", value_name = "URI")]
    pub input: String,
    /// The combined table (.parquet or .csv), or `-` for an aligned text table on stdout.
    #[arg(long, env = "OUTPUT", value_name = "FILE")]
    pub output: String,
    /// Tabulate every training_summary.json under the input instead (the output root of
    /// `train`): one row per dataset and model with its best epoch, losses, test accuracy,
    /// mean samples/s and device.
    #[arg(long, env = "SUMMARIES")]
    pub summaries: bool,
}

/// A day as `YYYY-MM-DD`, for the date flags.
pub fn day(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|e| format!("`{s}` is not a date (YYYY-MM-DD; {e})"))
}
