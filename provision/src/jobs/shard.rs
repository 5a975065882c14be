//! Fan-out at scale: a list of ids (or a date range) split into shards, one per array child or
//! per job, and the environment that tells each job its shard, so any image can use it:
//!
//! - `SHARD_COUNT`: how many shards there are.
//! - `SHARD_INDEX`: this job's shard (separate jobs). Batch gives array children no value of
//!   their own but `AWS_BATCH_JOB_ARRAY_INDEX`, which is then the shard index.
//! - `SHARD_IDS`: this job's ids, comma-separated, when they fit in the request (separate jobs).
//! - `SHARD_MANIFEST`: otherwise (and for arrays) the `s3://` URI of a JSON manifest,
//!   `{"format_version": 1, "shard_count": N, "id_count": M, "shards": [[ids of shard 0], ...]}`.
//! - `START_DATE` / `END_DATE`: a date batch's bounds (inclusive), with `--split-dates`.
//!
//! Shard `i` of `N` takes ids `[i*M/N, (i+1)*M/N)`: contiguous, in file order, sizes differing
//! by at most one (the same split `runtime` makes of a list with `--array-size`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use chrono::{Datelike, Duration, NaiveDate};
use serde::{Deserialize, Serialize};

/// AWS's limit on a SubmitJob request; ids travel inline only well within it.
pub const SUBMIT_REQUEST_LIMIT: usize = 30 * 1024;
/// Room kept for the rest of the request (names, ARNs, tags, JSON framing).
const REQUEST_OVERHEAD: usize = 4 * 1024;
/// Most shards one submit makes (AWS's largest array).
pub const MAX_SHARDS: usize = 10_000;

pub const SHARD_INDEX: &str = "SHARD_INDEX";
pub const SHARD_COUNT: &str = "SHARD_COUNT";
pub const SHARD_IDS: &str = "SHARD_IDS";
pub const SHARD_MANIFEST: &str = "SHARD_MANIFEST";

/// Reads an ids file: a JSON array of strings (or numbers), or one id per line (blank lines
/// skipped, surrounding spaces trimmed). Refused: no ids, malformed JSON, an id with a comma,
/// a newline or another control character inside, an id given twice.
pub fn read_ids(path: &Path) -> Result<Vec<String>> {
    let shown = path.display();
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading ids from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the ids file {shown}"))?
    };
    parse_ids(&text, &shown.to_string())
}

/// [`read_ids`] on text already read; `origin` names it in errors.
pub fn parse_ids(text: &str, origin: &str) -> Result<Vec<String>> {
    let located: Vec<(String, String)> = if text.trim_start().starts_with('[') {
        let values: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{origin}:{}:{}: not a JSON array of ids: {e}",
                e.line(),
                e.column()
            )
        })?;
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                serde_json::Value::String(s) => Ok((format!("{origin}: element {i}"), s)),
                serde_json::Value::Number(n) => {
                    Ok((format!("{origin}: element {i}"), n.to_string()))
                }
                other => bail!("{origin}: element {i} is {other}, not a string or number id"),
            })
            .collect::<Result<_>>()?
    } else {
        text.lines()
            .enumerate()
            .map(|(i, line)| (format!("{origin}:{}", i + 1), line.trim().to_string()))
            .filter(|(_, id)| !id.is_empty())
            .collect()
    };
    ensure!(
        !located.is_empty(),
        "{origin} holds no ids: give one id per line, or a JSON array"
    );
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (at, id) in &located {
        check_id(at, id)?;
        if let Some(first) = seen.insert(id, at) {
            bail!(
                "{at}: id `{id}` is given twice (first at {first}); each id makes one unit of work"
            );
        }
    }
    Ok(located.into_iter().map(|(_, id)| id).collect())
}

fn check_id(at: &str, id: &str) -> Result<()> {
    ensure!(!id.trim().is_empty(), "{at}: an empty id");
    ensure!(
        !id.contains(','),
        "{at}: id `{id}` contains a comma; jobs receive their ids comma-separated (SHARD_IDS), so an id cannot hold one"
    );
    ensure!(
        !id.contains(['\n', '\r']),
        "{at}: id {id:?} contains a newline; give one id per line"
    );
    ensure!(
        !id.chars().any(char::is_control),
        "{at}: id {id:?} contains a control character"
    );
    Ok(())
}

/// Shard `index` of `count` over `len` items: `[index*len/count, (index+1)*len/count)`.
pub fn share_range(len: usize, index: usize, count: usize) -> std::ops::Range<usize> {
    let (len, index, count) = (len as u64, index as u64, count as u64);
    ((index * len / count) as usize)..(((index + 1) * len / count) as usize)
}

/// `ids` in `count` contiguous shards.
pub fn split(ids: &[String], count: usize) -> Vec<Vec<String>> {
    (0..count)
        .map(|i| ids[share_range(ids.len(), i, count)].to_vec())
        .collect()
}

/// How many shards: `--array-size N` or `--per-job K` over `len` ids.
pub fn shard_count(len: usize, array_size: Option<u32>, per_job: Option<u32>) -> Result<usize> {
    let count = match (array_size, per_job) {
        (Some(_), Some(_)) => bail!(
            "--array-size and --per-job both say how to split the ids: give one (N shards, or K ids per shard)"
        ),
        (None, None) => bail!(
            "--ids needs --array-size N (N shards) or --per-job K (K ids per shard)"
        ),
        (Some(n), None) => {
            ensure!(
                n as usize <= len,
                "--array-size {n} is more than the {len} ids: some shards would be empty; use at most {len}"
            );
            n as usize
        }
        (None, Some(0)) => bail!("--per-job must be at least 1"),
        (None, Some(k)) => len.div_ceil(k as usize),
    };
    ensure!(
        count <= MAX_SHARDS,
        "{count} shards is more than {MAX_SHARDS}: raise --per-job or lower --array-size"
    );
    Ok(count)
}

/// The manifest written to the stack's bucket when ids do not fit in the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub shard_count: usize,
    pub id_count: usize,
    pub shards: Vec<Vec<String>>,
}

impl Manifest {
    pub fn new(shards: Vec<Vec<String>>) -> Manifest {
        Manifest {
            format_version: 1,
            shard_count: shards.len(),
            id_count: shards.iter().map(Vec::len).sum(),
            shards,
        }
    }
}

/// Whether every shard's ids fit inline beside the request's other content (`other_bytes`:
/// command, environment, names).
pub fn fits_inline(shards: &[Vec<String>], other_bytes: usize) -> bool {
    shards.iter().all(|shard| {
        let joined: usize = shard.iter().map(|id| id.len() + 1).sum();
        joined + other_bytes + REQUEST_OVERHEAD <= SUBMIT_REQUEST_LIMIT
    })
}

/// How `--split-dates` cuts a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateSplit {
    /// Calendar months.
    Month,
    /// ISO weeks, Monday to Sunday.
    Week,
    /// Consecutive batches of N days from the start.
    Days(u32),
}

impl std::str::FromStr for DateSplit {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "month" => Ok(DateSplit::Month),
            "week" => Ok(DateSplit::Week),
            _ => match s.strip_suffix('d').map(str::parse::<u32>) {
                Some(Ok(n)) if n > 0 => Ok(DateSplit::Days(n)),
                _ => Err(format!(
                    "`{s}` is not a date split: use month, week or Nd (N days, e.g. 7d)"
                )),
            },
        }
    }
}

/// One batch of dates, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DateBatch {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

pub fn parse_date(flag: &str, s: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("{flag} {s}: give a date as YYYY-MM-DD"))
}

/// `start..=end` cut into batches: calendar months or ISO weeks clipped to the range, or runs
/// of N days.
pub fn split_dates(start: NaiveDate, end: NaiveDate, how: DateSplit) -> Result<Vec<DateBatch>> {
    ensure!(
        start <= end,
        "--start-date {start} is after --end-date {end}"
    );
    let mut batches = Vec::new();
    let mut from = start;
    while from <= end {
        let last = match how {
            DateSplit::Month => {
                let (y, m) = (from.year(), from.month());
                let next = if m == 12 {
                    NaiveDate::from_ymd_opt(y + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(y, m + 1, 1)
                };
                next.context("date out of range")? - Duration::days(1)
            }
            DateSplit::Week => {
                from + Duration::days(6 - from.weekday().num_days_from_monday() as i64)
            }
            DateSplit::Days(n) => from + Duration::days(n as i64 - 1),
        };
        let last = last.min(end);
        batches.push(DateBatch {
            start: from,
            end: last,
        });
        ensure!(
            batches.len() <= MAX_SHARDS,
            "more than {MAX_SHARDS} date batches: use a longer split"
        );
        from = last + Duration::days(1);
    }
    Ok(batches)
}

/// What one submit fans out into.
#[derive(Debug, Clone, PartialEq)]
pub enum Fanout {
    /// One array job; child `i` takes shard `i` of the manifest.
    Array(Vec<Vec<String>>),
    /// One job per shard.
    Jobs(Vec<Vec<String>>),
    /// One job per date batch.
    Dates(Vec<DateBatch>),
}

impl Fanout {
    /// What the submit flags ask for, read and checked before any AWS call; `None`: no fan-out.
    pub fn from_args(args: &crate::cli::SubmitArgs) -> Result<Option<Fanout>> {
        if let Some(how) = args.split_dates {
            ensure!(
                args.ids.is_none() && args.array_size.is_none() && args.per_job.is_none(),
                "--split-dates submits one job per date batch: drop --ids, --array-size and --per-job"
            );
            let (Some(start), Some(end)) = (&args.start_date, &args.end_date) else {
                bail!("--split-dates needs --start-date and --end-date (YYYY-MM-DD)");
            };
            let start = parse_date("--start-date", start)?;
            let end = parse_date("--end-date", end)?;
            return Ok(Some(Fanout::Dates(split_dates(start, end, how)?)));
        }
        let Some(path) = &args.ids else {
            ensure!(
                args.per_job.is_none() && !args.separate_jobs && args.manifest_bucket.is_none(),
                "--per-job, --separate-jobs and --manifest-bucket split a list of ids: give it with --ids FILE"
            );
            return Ok(None);
        };
        let ids = read_ids(path)?;
        let count = shard_count(ids.len(), args.array_size, args.per_job)?;
        let shards = split(&ids, count);
        // A single shard is a single job: an array needs two children.
        Ok(Some(if args.separate_jobs || count == 1 {
            Fanout::Jobs(shards)
        } else {
            Fanout::Array(shards)
        }))
    }

    /// How many jobs (or array children) it makes.
    pub fn count(&self) -> usize {
        match self {
            Fanout::Array(shards) | Fanout::Jobs(shards) => shards.len(),
            Fanout::Dates(batches) => batches.len(),
        }
    }
}

/// `s3://bucket/provision/shards/{job_name}.json`: where the manifest of a submit goes.
pub fn manifest_key(job_name: &str) -> String {
    format!("provision/shards/{job_name}.json")
}

/// Digits for `{index}` in job names: at least 3 (`-007`), more for larger fan-outs.
pub fn index_width(count: usize) -> usize {
    (count.saturating_sub(1).to_string().len()).max(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("firm-{i}")).collect()
    }

    #[test]
    fn ids_come_from_lines_or_a_json_array() {
        assert_eq!(
            parse_ids("a\n  b \n\nc\r\n", "f").unwrap(),
            vec!["a", "b", "c"]
        );
        assert_eq!(
            parse_ids(r#"["AAPL", 17, "x y"]"#, "f").unwrap(),
            vec!["AAPL", "17", "x y"]
        );
    }

    #[test]
    fn bad_ids_are_refused_with_their_place() {
        let cases = [
            ("", "holds no ids"),
            ("\n \n", "holds no ids"),
            ("[]", "holds no ids"),
            ("a\nb,c\n", "f:2: id `b,c` contains a comma"),
            (r#"["a", "b\nc"]"#, "contains a newline"),
            (r#"["a", {"x": 1}]"#, "element 1"),
            ("[\"a\",", "not a JSON array"),
            ("a\nb\na\n", "f:3: id `a` is given twice (first at f:1)"),
        ];
        for (text, needle) in cases {
            let err = parse_ids(text, "f").unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn shards_cover_every_id_once_in_order() {
        let all = ids(5000);
        for count in [1, 3, 7, 100, 5000] {
            let shards = split(&all, count);
            assert_eq!(shards.len(), count);
            assert_eq!(shards.concat(), all);
            let sizes: Vec<usize> = shards.iter().map(Vec::len).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn per_job_gives_at_most_k_ids_per_shard() {
        let all = ids(5000);
        let count = shard_count(all.len(), None, Some(64)).unwrap();
        assert_eq!(count, 79);
        assert!(split(&all, count).iter().all(|s| s.len() <= 64));
        assert!(shard_count(10, Some(11), None).is_err());
        assert!(shard_count(10, Some(2), Some(2)).is_err());
        assert!(shard_count(10, None, None).is_err());
        assert!(shard_count(20_001, None, Some(2)).is_err());
    }

    #[test]
    fn large_lists_do_not_fit_inline() {
        let all = ids(5000);
        assert!(!fits_inline(&split(&all, 1), 500));
        assert!(fits_inline(&split(&all, 100), 500));
    }

    #[test]
    fn dates_split_by_month_week_and_days() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let months = split_dates(d("2024-01-15"), d("2024-03-10"), DateSplit::Month).unwrap();
        assert_eq!(
            months,
            vec![
                DateBatch {
                    start: d("2024-01-15"),
                    end: d("2024-01-31")
                },
                DateBatch {
                    start: d("2024-02-01"),
                    end: d("2024-02-29")
                },
                DateBatch {
                    start: d("2024-03-01"),
                    end: d("2024-03-10")
                },
            ]
        );
        // 2024-01-03 is a Wednesday: the first week ends on Sunday the 7th.
        let weeks = split_dates(d("2024-01-03"), d("2024-01-20"), DateSplit::Week).unwrap();
        assert_eq!(weeks.len(), 3);
        assert_eq!(weeks[0].end, d("2024-01-07"));
        assert_eq!(weeks[1].start, d("2024-01-08"));
        let days = split_dates(d("2024-12-30"), d("2025-01-05"), DateSplit::Days(3)).unwrap();
        assert_eq!(days.len(), 3);
        assert_eq!(
            days[2],
            DateBatch {
                start: d("2025-01-05"),
                end: d("2025-01-05")
            }
        );
        assert!(split_dates(d("2024-02-01"), d("2024-01-01"), DateSplit::Month).is_err());
        assert!("0d".parse::<DateSplit>().is_err());
        assert!("fortnight".parse::<DateSplit>().is_err());
        assert_eq!("10d".parse::<DateSplit>(), Ok(DateSplit::Days(10)));
    }

    #[test]
    fn index_width_grows_with_the_fan_out() {
        assert_eq!(index_width(1), 3);
        assert_eq!(index_width(1000), 3);
        assert_eq!(index_width(1001), 4);
    }
}
