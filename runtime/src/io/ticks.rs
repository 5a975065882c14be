//! Raw ticks (docs/design.md, "Raw ticks") of one instrument and date range, from a
//! hive-partitioned Parquet root (`instrument={id}/date={d}/*.parquet`, local or S3) or an Iceberg
//! table's `metadata.json`. The order-flow pipeline's column names are accepted as aliases, any
//! column may be renamed with `--column std=theirs`, and `side` is derived by the tick rule when
//! the input lacks it.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use chrono::NaiveDate;
use polars::prelude::*;

use super::{iceberg, Location};

/// Columns every input must have (under these names, an alias or a `--column` rename).
pub const REQUIRED: [&str; 7] = [
    "ts",
    "bid_price",
    "ask_price",
    "bid_size",
    "ask_size",
    "trade_price",
    "trade_quantity",
];
/// The order-flow pipeline's Iceberg names for the standard columns.
pub const ALIASES: [(&str, &str); 3] = [
    ("ts", "timestamp"),
    ("bid_size", "bid_quantity"),
    ("ask_size", "ask_quantity"),
];

/// `--column` renames: standard name → the input's name.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Renames(pub BTreeMap<String, String>);

impl Renames {
    pub fn parse(items: &[String]) -> Result<Renames> {
        let mut map = BTreeMap::new();
        let known: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .chain(["side", "instrument_id"])
            .collect();
        for item in items
            .iter()
            .flat_map(|i| i.split(','))
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            let Some((std, theirs)) = item.split_once('=') else {
                bail!("--column `{item}`: expected STD=THEIRS, e.g. ts=my_time");
            };
            let (std, theirs) = (std.trim(), theirs.trim());
            if !known.contains(&std) {
                bail!(
                    "--column `{item}`: `{std}` is not a raw column (one of {})",
                    known.join(", ")
                );
            }
            if theirs.is_empty() {
                bail!("--column `{item}`: empty column name");
            }
            map.insert(std.to_string(), theirs.to_string());
        }
        Ok(Renames(map))
    }

    /// The input's name for `std`, among `available`.
    fn resolve(&self, std: &str, available: &[String]) -> Option<String> {
        if let Some(theirs) = self.0.get(std) {
            return available
                .iter()
                .any(|a| a == theirs)
                .then(|| theirs.clone());
        }
        if available.iter().any(|a| a == std) {
            return Some(std.to_string());
        }
        ALIASES
            .iter()
            .filter(|(s, _)| *s == std)
            .map(|(_, alias)| alias.to_string())
            .find(|alias| available.contains(alias))
    }

    fn describe(&self, std: &str) -> String {
        match (self.0.get(std), ALIASES.iter().find(|(s, _)| *s == std)) {
            (Some(theirs), _) => format!("`{theirs}` (--column {std}={theirs})"),
            (None, Some((_, alias))) => format!("`{std}` (or `{alias}`)"),
            (None, None) => format!("`{std}`"),
        }
    }
}

/// What to load.
#[derive(Debug, Clone)]
pub struct Request {
    pub input: String,
    pub instrument: i64,
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub renames: Renames,
}

impl Request {
    fn start_us(&self) -> i64 {
        self.start
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros()
    }
    fn end_us(&self) -> i64 {
        (self.end + chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros()
    }
    pub fn is_iceberg(&self) -> bool {
        iceberg::is_metadata_location(&self.input)
    }
}

/// The files to read.
#[derive(Debug, Clone)]
pub struct Plan {
    pub files: Vec<Location>,
    /// Files of an `instrument={id}/` directory: they need no `instrument_id` column.
    pub per_instrument: bool,
}

/// The files that hold (or may hold) the request's rows. Fails with a clear message when the
/// input is missing or has nothing for the instrument and range.
pub fn plan(req: &Request) -> Result<Plan> {
    if req.is_iceberg() {
        let names = iceberg::columns(&req.input)?;
        let ts = req.renames.resolve("ts", &names).with_context(|| {
            format!(
                "the Iceberg table {} has no column {}",
                req.input,
                req.renames.describe("ts")
            )
        })?;
        let id = req
            .renames
            .resolve("instrument_id", &names)
            .with_context(|| {
                format!(
                    "the Iceberg table {} has no column {}",
                    req.input,
                    req.renames.describe("instrument_id")
                )
            })?;
        let filter = iceberg::Filter {
            instrument_column: id,
            instrument: req.instrument,
            ts_column: ts,
            start_us: req.start_us(),
            end_us: req.end_us(),
        };
        let files = iceberg::plan(&req.input, &filter)?;
        if files.is_empty() {
            bail!("no rows in range: the Iceberg table {} has no data for instrument {} from {} to {}", req.input, req.instrument, req.start, req.end);
        }
        return Ok(Plan {
            files,
            per_instrument: false,
        });
    }
    let root = Location::parse(&req.input)?;
    let dirs = super::list_dirs(&root)?;
    if dirs.iter().any(|d| d.starts_with("instrument=")) {
        let dir = root.join(&format!("instrument={}", req.instrument));
        let all: Vec<Location> = super::list(&dir)?
            .into_iter()
            .filter(is_data_file)
            .collect();
        if all.is_empty() {
            bail!("no raw ticks for instrument {} under {root} (no instrument={}/ with Parquet files)", req.instrument, req.instrument);
        }
        let files: Vec<Location> = all
            .into_iter()
            .filter(|f| match partition_date(f, &dir) {
                Some(d) => req.start <= d && d <= req.end,
                None => true,
            })
            .collect();
        if files.is_empty() {
            bail!(
                "no rows in range: {dir} has no date= partition from {} to {}",
                req.start,
                req.end
            );
        }
        return Ok(Plan {
            files,
            per_instrument: true,
        });
    }
    let files: Vec<Location> = super::list(&root)?
        .into_iter()
        .filter(is_data_file)
        .collect();
    if files.is_empty() {
        bail!("input {root} does not exist or holds no Parquet files");
    }
    Ok(Plan {
        files,
        per_instrument: false,
    })
}

fn is_data_file(loc: &Location) -> bool {
    let name = loc.file_name();
    !name.starts_with('_')
        && !name.starts_with('.')
        && (name.ends_with(".parquet") || name.ends_with(".parq"))
}

fn partition_date(file: &Location, base: &Location) -> Option<NaiveDate> {
    let rel = file.relative_to(base)?;
    rel.split('/')
        .find_map(|seg| seg.strip_prefix("date="))
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
}

/// One instrument's ticks in range, sorted by `ts` (stable), in standard names and types:
/// `ts` Datetime(µs, UTC), the prices and sizes Float64, `side` Int8.
pub struct Ticks {
    pub frame: DataFrame,
    pub side_derived: bool,
    pub files: usize,
}

struct Scan {
    frame: LazyFrame,
    side_present: bool,
    _local: Vec<super::LocalFile>,
}

fn ts_micros(name: &str, dtype: &DataType, file: &Location) -> Result<Expr> {
    let physical = col(name).cast(DataType::Int64);
    Ok(match dtype {
        DataType::Datetime(TimeUnit::Microseconds, _) => physical,
        DataType::Datetime(TimeUnit::Milliseconds, _) => physical * lit(1000i64),
        DataType::Datetime(TimeUnit::Nanoseconds, _) => physical.floor_div(lit(1000i64)),
        other => bail!("{file}: column `{name}` has type {other}, expected a datetime"),
    })
}

fn numeric(name: &str, dtype: &DataType, file: &Location, to: DataType) -> Result<Expr> {
    if !dtype.is_primitive_numeric() {
        bail!("{file}: column `{name}` has type {dtype}, expected a number");
    }
    Ok(col(name).cast(to))
}

fn scan(req: &Request, plan: &Plan) -> Result<Scan> {
    let files = &plan.files;
    let mut frames = Vec::new();
    let mut local = Vec::new();
    let mut side_in: Vec<bool> = Vec::new();
    let mut has_id = Vec::new();
    for file in files {
        let fetched = super::fetch(file)?;
        let path = PlRefPath::try_from_path(fetched.path())?;
        let args = ScanArgsParquet {
            hive_options: HiveOptions {
                enabled: Some(false),
                ..HiveOptions::new_disabled()
            },
            ..Default::default()
        };
        let mut lf = LazyFrame::scan_parquet(path, args)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("reading {file}"))?;
        let schema = lf
            .collect_schema()
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{file} is not a readable Parquet file"))?;
        let names: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
        let mut exprs = Vec::new();
        for std in REQUIRED {
            let Some(src) = req.renames.resolve(std, &names) else {
                bail!(
                    "{file}: missing column {}; it has {}",
                    req.renames.describe(std),
                    names.join(", ")
                );
            };
            let dtype = schema.get(src.as_str()).unwrap();
            exprs.push(if std == "ts" {
                ts_micros(&src, dtype, file)?.alias("ts_us")
            } else {
                numeric(&src, dtype, file, DataType::Float64)?.alias(std)
            });
        }
        let side = req.renames.resolve("side", &names);
        if let Some(src) = &side {
            exprs.push(
                numeric(src, schema.get(src.as_str()).unwrap(), file, DataType::Int8)?
                    .alias("side"),
            );
        } else if req.renames.0.contains_key("side") {
            bail!("{file}: missing column {}", req.renames.describe("side"));
        }
        let id = req.renames.resolve("instrument_id", &names);
        if let Some(src) = &id {
            exprs.push(
                numeric(
                    src,
                    schema.get(src.as_str()).unwrap(),
                    file,
                    DataType::Int64,
                )?
                .alias("instrument_id"),
            );
        }
        side_in.push(side.is_some());
        has_id.push(id.is_some());
        frames.push(lf.select(exprs));
        local.push(fetched);
    }
    if side_in.iter().any(|s| *s) && !side_in.iter().all(|s| *s) {
        let missing = files
            .iter()
            .zip(&side_in)
            .find(|(_, s)| !**s)
            .map(|(f, _)| f.to_string())
            .unwrap_or_default();
        bail!(
            "{missing}: missing column `side`, which other files of instrument {} have",
            req.instrument
        );
    }
    // A hive root has one instrument per directory; elsewhere the column picks the rows.
    if !plan.per_instrument {
        if let Some((f, _)) = files.iter().zip(&has_id).find(|(_, h)| !**h) {
            bail!(
                "{f}: missing column {}",
                req.renames.describe("instrument_id")
            );
        }
    }
    let frames: Vec<LazyFrame> = frames
        .into_iter()
        .zip(&has_id)
        .map(|(lf, has)| {
            if *has {
                lf.filter(col("instrument_id").eq(lit(req.instrument)))
                    .drop(by_name(["instrument_id"], true, false))
            } else {
                lf
            }
        })
        .collect();
    let frame = concat(frames, UnionArgs::default())?.filter(
        col("ts_us")
            .gt_eq(lit(req.start_us()))
            .and(col("ts_us").lt(lit(req.end_us()))),
    );
    Ok(Scan {
        frame,
        side_present: side_in.first().copied().unwrap_or(false),
        _local: local,
    })
}

/// Non-decreasing and without nulls: what a stable sort would leave unchanged.
fn in_time_order(ts: &Int64Chunked) -> bool {
    if ts.null_count() > 0 {
        return false;
    }
    let mut last = i64::MIN;
    ts.into_no_null_iter()
        .all(|t| std::mem::replace(&mut last, t) <= t)
}

/// Validates the files (columns, types) and counts the rows in range without loading them.
pub fn count(req: &Request, plan: &Plan) -> Result<usize> {
    let scan = scan(req, plan)?;
    // Only the time column is read. (`len()` over concatenated scans casts to UInt128, which
    // this polars build lacks.)
    Ok(scan.frame.select([col("ts_us")]).collect()?.height())
}

/// Loads the request's rows.
pub fn load(req: &Request, plan: &Plan) -> Result<Ticks> {
    let scan = scan(req, plan)?;
    let mut frame = scan.frame.collect()?;
    // Raw ticks nearly always arrive in time order: a sort would only copy every column.
    if !in_time_order(frame.column("ts_us")?.i64()?) {
        frame = frame.sort(
            ["ts_us"],
            SortMultipleOptions::default().with_maintain_order(true),
        )?;
    }
    let sorted = frame.lazy().with_column(
        col("ts_us")
            .cast(DataType::Datetime(
                TimeUnit::Microseconds,
                Some(TimeZone::UTC),
            ))
            .alias("ts"),
    );
    let sorted = if scan.side_present {
        sorted
    } else {
        sorted.with_column(crate::features::tick_rule_side())
    };
    let cols: Vec<Expr> = std::iter::once(col("ts"))
        .chain(REQUIRED[1..].iter().map(|c| col(*c)))
        .chain(std::iter::once(col("side")))
        .collect();
    let mut frame = sorted.select(cols).collect()?;
    crate::features::set_utc(&mut frame, "ts")?;
    if frame.height() == 0 {
        bail!(
            "no rows in range: instrument {} has no ticks from {} to {} in {}",
            req.instrument,
            req.start,
            req.end,
            req.input
        );
    }
    Ok(Ticks {
        frame,
        side_derived: !scan.side_present,
        files: plan.files.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn standard_names_then_renames_then_pipeline_aliases() {
        let none = Renames::default();
        let seed = names(&["timestamp", "bid_quantity", "ask_quantity", "bid_price"]);
        assert_eq!(none.resolve("ts", &seed).as_deref(), Some("timestamp"));
        assert_eq!(
            none.resolve("bid_size", &seed).as_deref(),
            Some("bid_quantity")
        );
        assert_eq!(
            none.resolve("bid_price", &seed).as_deref(),
            Some("bid_price")
        );
        assert_eq!(none.resolve("side", &seed), None);
        // The standard name wins over an alias when both exist.
        assert_eq!(
            none.resolve("ts", &names(&["timestamp", "ts"])).as_deref(),
            Some("ts")
        );
        let r = Renames::parse(&["ts=event_time, bid_size=bq".to_string()]).unwrap();
        assert_eq!(
            r.resolve("ts", &names(&["event_time", "ts"])).as_deref(),
            Some("event_time")
        );
        assert_eq!(
            r.resolve("bid_size", &names(&["bid_size"])),
            None,
            "a rename must exist"
        );
        assert!(Renames::parse(&["price=x".into()]).is_err());
        assert!(Renames::parse(&["ts".into()]).is_err());
        assert!(Renames::parse(&["ts=".into()]).is_err());
    }

    #[test]
    fn iceberg_locations() {
        assert!(iceberg::is_metadata_location(
            "s3://b/t/metadata/00001-abc.metadata.json"
        ));
        assert!(iceberg::is_metadata_location("/w/t/metadata/metadata.json"));
        assert!(!iceberg::is_metadata_location("s3://b/raw"));
    }

    #[test]
    fn date_partitions() {
        let base = Location::parse("s3://b/raw/instrument=1").unwrap();
        let f = base.join("date=2024-01-02/part-0.parquet");
        assert_eq!(
            partition_date(&f, &base),
            NaiveDate::from_ymd_opt(2024, 1, 2)
        );
        assert_eq!(partition_date(&base.join("x.parquet"), &base), None);
        assert!(is_data_file(&f));
        assert!(!is_data_file(&base.join("_SUCCESS")));
        assert!(!is_data_file(&base.join(".part.parquet.tmp")));
    }
}
