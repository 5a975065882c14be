//! Fan-out over independent units (instruments, or the thousands of firms of a topic-modeling
//! run): an array child takes a contiguous share of the list, skips units whose outputs are
//! complete (so a retry after a Spot reclaim redoes only missing work), records progress every
//! `CHECKPOINT_INTERVAL` units and, with `--allow-failures`, keeps going past failing units until
//! a circuit breaker trips.

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::cli::ArrayArgs;
use crate::io::{self, Location};

/// A number from the environment, `None` when unset or empty.
fn env_number(name: &str) -> Result<Option<u32>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            Ok(Some(v.trim().parse().with_context(|| {
                format!("{name}={v:?} is not a number")
            })?))
        }
        _ => Ok(None),
    }
}

/// This job's place in an array: `(index, size)`, or `None` outside an array job. Besides the
/// flags, `provision submit`'s fan-out variables count: `SHARD_COUNT` is the size, and
/// `SHARD_INDEX` the index of a job submitted on its own (an array child has
/// `AWS_BATCH_JOB_ARRAY_INDEX`); the share they give is the same contiguous split `provision`
/// makes of an ids list.
pub fn array_position(array: &ArrayArgs) -> Result<Option<(u32, u32)>> {
    let size = match array.array_size {
        Some(n) => Some(n),
        None => match env_number("AWS_BATCH_JOB_ARRAY_SIZE")? {
            Some(n) => Some(n),
            None => env_number("SHARD_COUNT")?,
        },
    };
    let index = match array.array_index {
        Some(i) => Some(i),
        None => env_number("SHARD_INDEX")?,
    };
    match (index, size) {
        (None, _) => Ok(None),
        (Some(i), None) => {
            bail!("array index {i} (AWS_BATCH_JOB_ARRAY_INDEX) given without --array-size: cannot tell this job's share")
        }
        (Some(_), Some(0)) => bail!("--array-size must be at least 1"),
        (Some(i), Some(n)) if i >= n => {
            bail!("array index {i} is out of range for --array-size {n}")
        }
        (Some(i), Some(n)) => Ok(Some((i, n))),
    }
}

/// Child `index` of `size` takes `items[index*len/size .. (index+1)*len/size]`: contiguous,
/// in order, sizes differing by at most one, every item in exactly one share.
pub fn share_of<T: Clone>(items: &[T], index: u32, size: u32) -> Vec<T> {
    let len = items.len() as u64;
    let start = (index as u64 * len / size as u64) as usize;
    let end = ((index as u64 + 1) * len / size as u64) as usize;
    items[start..end].to_vec()
}

/// This job's share of `items` (all of them outside an array job).
pub fn share<T: Clone>(items: &[T], array: &ArrayArgs) -> Result<Vec<T>> {
    Ok(match array_position(array)? {
        None => items.to_vec(),
        Some((i, n)) => share_of(items, i, n),
    })
}

/// Whether `provision submit --ids` gave this job its ids (`SHARD_IDS` or `SHARD_MANIFEST`).
pub fn ids_provisioned() -> bool {
    ["SHARD_IDS", "SHARD_MANIFEST"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// The ids `provision submit --ids` gave this job: `SHARD_IDS` (comma-separated), or its shard
/// of the JSON manifest at `SHARD_MANIFEST` (shard `SHARD_INDEX`, or
/// `AWS_BATCH_JOB_ARRAY_INDEX` in an array); `None` when it gave none.
pub fn provisioned_ids(array: &ArrayArgs) -> Result<Option<Vec<String>>> {
    if let Ok(ids) = std::env::var("SHARD_IDS") {
        if !ids.trim().is_empty() {
            return Ok(Some(ids.split(',').map(|s| s.trim().to_string()).collect()));
        }
    }
    let uri = match std::env::var("SHARD_MANIFEST") {
        Ok(uri) if !uri.trim().is_empty() => uri,
        _ => return Ok(None),
    };
    let Some((index, _)) = array_position(array)? else {
        bail!("SHARD_MANIFEST is set but not SHARD_INDEX (or AWS_BATCH_JOB_ARRAY_INDEX) and SHARD_COUNT: cannot tell this job's shard");
    };
    let bytes = io::read(&Location::parse(uri.trim())?)
        .with_context(|| format!("reading the shard manifest {uri}"))?;
    let manifest: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("the shard manifest {uri} is not JSON"))?;
    let shard = manifest["shards"]
        .get(index as usize)
        .and_then(|s| s.as_array())
        .with_context(|| format!("the shard manifest {uri} has no shard {index}"))?;
    shard
        .iter()
        .map(|id| match id {
            serde_json::Value::String(s) => Ok(Some(s.clone())),
            other => bail!("the shard manifest {uri} holds {other}, not an id string"),
        })
        .collect::<Result<Option<Vec<String>>>>()
}

/// This job's units: the ids `provision submit --ids` gave it, when it gave any (parsed as
/// `T`), else its share of `items`.
pub fn share_or_provisioned<T>(items: &[T], array: &ArrayArgs) -> Result<Vec<T>>
where
    T: Clone + std::str::FromStr,
{
    match provisioned_ids(array)? {
        Some(ids) => ids
            .iter()
            .map(|id| {
                id.parse::<T>()
                    .map_err(|_| anyhow::anyhow!("id `{id}` given by SHARD_IDS/SHARD_MANIFEST is not valid here (an instrument id is an integer)"))
            })
            .collect(),
        None => share(items, array),
    }
}

/// How failures are tolerated.
#[derive(Debug, Clone)]
pub struct FailurePolicy {
    pub allow_failures: bool,
    pub max_consecutive_failures: u32,
    pub max_failure_rate: f64,
    pub checkpoint_interval: u32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    pub unit: String,
    pub error: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub done: Vec<String>,
    pub skipped: Vec<String>,
    pub failed: Vec<Failure>,
}

/// Counts failures and decides when to stop.
#[derive(Debug)]
pub struct Breaker {
    policy: FailurePolicy,
    total: usize,
    failed: usize,
    consecutive: u32,
}

impl Breaker {
    pub fn new(policy: FailurePolicy, total: usize) -> Breaker {
        Breaker {
            policy,
            total,
            failed: 0,
            consecutive: 0,
        }
    }

    pub fn success(&mut self) {
        self.consecutive = 0;
    }

    /// Records a failure; `Err` with the reason when the job must stop. The rate is taken over
    /// the whole share, so the breaker trips as soon as the final rate is certain to exceed the
    /// limit, never on an unlucky first unit.
    pub fn failure(&mut self) -> std::result::Result<(), Trip> {
        self.failed += 1;
        self.consecutive += 1;
        if !self.policy.allow_failures {
            return Err(Trip::FailuresNotAllowed);
        }
        if self.consecutive >= self.policy.max_consecutive_failures {
            return Err(Trip::Consecutive {
                failures: self.consecutive,
                limit: self.policy.max_consecutive_failures,
            });
        }
        let rate = self.failed as f64 / self.total.max(1) as f64;
        if rate > self.policy.max_failure_rate {
            return Err(Trip::Rate {
                failed: self.failed,
                total: self.total,
                limit: self.policy.max_failure_rate,
            });
        }
        Ok(())
    }
}

/// Why the breaker stops a job.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Trip {
    #[error("a unit failed (use --allow-failures to keep going)")]
    FailuresNotAllowed,
    #[error(
        "circuit breaker: {failures} consecutive failures (--max-consecutive-failures {limit})"
    )]
    Consecutive { failures: u32, limit: u32 },
    #[error("circuit breaker: {failed} of {total} units failed, above --max-failure-rate {limit}")]
    Rate {
        failed: usize,
        total: usize,
        limit: f64,
    },
}

/// Where a run records its progress and failures: `{root}/_runs/{command}/`, one file per
/// array child, so children never overwrite each other.
pub struct Records {
    dir: Location,
    child: String,
}

impl Records {
    pub fn new(output_root: &Location, command: &str, array: &ArrayArgs) -> Result<Records> {
        let child = match array_position(array)? {
            Some((i, _)) => format!("array-{i}"),
            None => "single".to_string(),
        };
        Ok(Records {
            dir: output_root.join(&format!("_runs/{command}")),
            child,
        })
    }

    pub fn progress_location(&self) -> Location {
        self.dir.join(&format!("progress-{}.json", self.child))
    }

    pub fn failures_location(&self) -> Location {
        self.dir.join(&format!("failures-{}.json", self.child))
    }

    fn write(&self, outcome: &Outcome, total: usize, finished: bool) -> Result<()> {
        let progress = serde_json::json!({
            "total": total,
            "done": outcome.done.len(),
            "skipped": outcome.skipped.len(),
            "failed": outcome.failed.len(),
            "finished": finished,
            "last_done": outcome.done.last(),
            "updated_at": chrono::Utc::now().to_rfc3339(),
        });
        io::write(
            &self.progress_location(),
            &serde_json::to_vec_pretty(&progress)?,
        )?;
        if !outcome.failed.is_empty() {
            io::write(
                &self.failures_location(),
                &serde_json::to_vec_pretty(&serde_json::json!({ "failures": outcome.failed }))?,
            )?;
        }
        Ok(())
    }
}

/// Runs `work` on every unit not yet `complete`, under `policy`. `check`, run on every pending
/// unit before any work starts, catches bad input while nothing is written yet; `work` must make
/// the same checks itself before it writes, so with a single pending unit `check` is skipped
/// (it would only read the input twice). Returns the
/// outcome, or the error that stopped the run (the failing unit's error, or the breaker's).
pub fn run<U>(
    units: &[U],
    name: impl Fn(&U) -> String,
    complete: impl Fn(&U) -> Result<bool>,
    check: impl Fn(&U) -> Result<()>,
    mut work: impl FnMut(&U) -> Result<()>,
    policy: &FailurePolicy,
    records: &Records,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let mut pending = Vec::new();
    for unit in units {
        if complete(unit)? {
            tracing::info!(unit = %name(unit), "complete already, skipped");
            outcome.skipped.push(name(unit));
        } else {
            pending.push(unit);
        }
    }
    if pending.is_empty() {
        return Ok(outcome);
    }
    let mut breaker = Breaker::new(policy.clone(), pending.len());
    let mut runnable = Vec::new();
    if pending.len() == 1 {
        runnable = pending;
    } else {
        for unit in pending {
            match check(unit) {
                Ok(()) => runnable.push(unit),
                Err(err) => fail(
                    &mut outcome,
                    &mut breaker,
                    records,
                    units.len(),
                    &name(unit),
                    err,
                )?,
            }
        }
    }
    let interval = policy.checkpoint_interval.max(1) as usize;
    for unit in runnable {
        let unit_name = name(unit);
        tracing::info!(unit = %unit_name, "preparing");
        match work(unit) {
            Ok(()) => {
                breaker.success();
                outcome.done.push(unit_name);
                if outcome.done.len() % interval == 0 {
                    records.write(&outcome, units.len(), false)?;
                }
            }
            Err(err) => fail(
                &mut outcome,
                &mut breaker,
                records,
                units.len(),
                &unit_name,
                err,
            )?,
        }
    }
    records.write(&outcome, units.len(), true)?;
    Ok(outcome)
}

fn fail(
    outcome: &mut Outcome,
    breaker: &mut Breaker,
    records: &Records,
    total: usize,
    unit: &str,
    err: anyhow::Error,
) -> Result<()> {
    let message = format!("{err:#}");
    tracing::error!(unit, error = %message, "unit failed");
    outcome.failed.push(Failure {
        unit: unit.to_string(),
        error: message,
    });
    match breaker.failure() {
        Ok(()) => Ok(()),
        // Without --allow-failures the unit's own error is the clearest message.
        Err(_) if !breaker.policy.allow_failures => Err(err.context(format!("{unit} failed"))),
        Err(reason) => {
            records.write(outcome, total, true)?;
            bail!(
                "{reason}; failures are listed in {}",
                records.failures_location()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(i: Option<u32>, n: Option<u32>) -> ArrayArgs {
        ArrayArgs {
            array_size: n,
            array_index: i,
        }
    }

    #[test]
    fn shares_are_contiguous_and_cover_everything() {
        let items: Vec<u32> = (1..=10).collect();
        let parts: Vec<Vec<u32>> = (0..3).map(|i| share_of(&items, i, 3)).collect();
        assert_eq!(parts, vec![vec![1, 2, 3], vec![4, 5, 6], vec![7, 8, 9, 10]]);
        let parts: Vec<Vec<u32>> = (0..4).map(|i| share_of(&items[..2], i, 4)).collect();
        assert_eq!(parts, vec![vec![], vec![1], vec![], vec![2]]);
        assert_eq!(share(&items, &args(None, Some(4))).unwrap(), items);
        assert!(share(&items, &args(Some(4), Some(4))).is_err());
        assert!(share(&items, &args(Some(0), Some(0))).is_err());
    }

    #[test]
    fn breaker_trips_on_consecutive_failures_and_rate() {
        let policy = |allow, c, r| FailurePolicy {
            allow_failures: allow,
            max_consecutive_failures: c,
            max_failure_rate: r,
            checkpoint_interval: 1,
        };
        let mut b = Breaker::new(policy(false, 5, 1.0), 10);
        assert_eq!(b.failure(), Err(Trip::FailuresNotAllowed));

        let mut b = Breaker::new(policy(true, 2, 1.0), 10);
        assert!(b.failure().is_ok());
        b.success();
        assert!(b.failure().is_ok());
        assert_eq!(
            b.failure(),
            Err(Trip::Consecutive {
                failures: 2,
                limit: 2
            })
        );

        // 10 units at 0.2: the 2nd failure keeps the rate at 0.2, the 3rd makes it certain to exceed.
        let mut b = Breaker::new(policy(true, 100, 0.2), 10);
        assert!(b.failure().is_ok());
        b.success();
        assert!(b.failure().is_ok());
        b.success();
        assert_eq!(
            b.failure(),
            Err(Trip::Rate {
                failed: 3,
                total: 10,
                limit: 0.2
            })
        );
    }
}
