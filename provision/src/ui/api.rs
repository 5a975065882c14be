//! The dashboard's JSON: one handler per endpoint, each a thin call into the CLI's own code.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::readings::{Reading, FAILED_HOLD};
use super::{results, App, REQUEST_TIMEOUT};
use crate::jobs::describe::{self, JobReport};
use crate::jobs::list::{self, Listing, QueueRef};
use crate::stack::ComputeEnvironment;

/// The browser's auto-refresh interval for the jobs table, before the request budget
/// stretches it (`Listing::next_poll`).
const JOBS_REFRESH: Duration = Duration::from_secs(5);
/// The stack page reads the graph again this often (each time from the shared reading).
const STACK_REFRESH: Duration = Duration::from_secs(30);
/// A log being followed is read again this often.
const LOGS_REFRESH: Duration = Duration::from_secs(3);

/// An error as the page shows it: `{"error": "..."}` with the HTTP status that fits.
#[derive(Clone, Debug)]
pub struct ApiError {
    status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        // The page shows the whole chain on one line, as the CLI prints it on several.
        let message = err
            .chain()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(": ");
        Self {
            status: StatusCode::BAD_GATEWAY,
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// Runs `work(app)` against AWS on a blocking thread of the runtime, bounded by
/// [`REQUEST_TIMEOUT`] there (so the thread, too, gives up). The plan and the results reader
/// poll streams of futures made by borrowing closures, which the compiler cannot prove `Send`
/// for every lifetime, as axum requires of a handler's future; there they need not be.
pub(super) async fn on_own_thread<T, F, Fut>(
    app: &Arc<App>,
    what: &'static str,
    work: F,
) -> Result<T, ApiError>
where
    F: FnOnce(Arc<App>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
    T: Send + 'static,
{
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Handle::current().block_on(bounded(what, work(app)))
    })
    .await
    .map_err(|e| ApiError::from(anyhow::anyhow!("the dashboard's worker thread failed: {e}")))?
}

/// Runs `work` against AWS, bounded by [`REQUEST_TIMEOUT`]; its error starts with `what`.
async fn bounded<T>(
    what: &str,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(result) => result.map_err(|e| ApiError::from(e.context(what.to_string()))),
        Err(_) => Err(ApiError {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: format!(
                "{what}: AWS did not answer within {} s (is the endpoint up? AWS_ENDPOINT_URL={})",
                REQUEST_TIMEOUT.as_secs(),
                std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "unset".into())
            ),
        }),
    }
}

pub async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such page".into(),
    }
}

/// The stack as the stack file says, without any AWS call: what the pages' headers and filters
/// need.
pub async fn overview(State(app): State<Arc<App>>) -> Json<Value> {
    Json(overview_of(&app.stack))
}

pub fn overview_of(s: &crate::stack::Stack) -> Value {
    json!({
        "stack": s.name,
        "env": s.env,
        "region": s.region,
        "gpu": s.gpu,
        "image_type": ComputeEnvironment::image_type(s.gpu),
        "queues": s.queues.keys().collect::<Vec<_>>(),
        "statuses": list::all_statuses().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "jobs": s.job_definitions().iter().map(|d| d.key.clone()).collect::<Vec<_>>(),
        "buckets": s.buckets.keys().collect::<Vec<_>>(),
        "source": s.source.display().to_string(),
    })
}

#[derive(Debug, Deserialize)]
pub struct StackParams {
    /// Present: a reading started after this request (the page's "read again").
    fresh: Option<String>,
}

/// The stack graph: every resource with its status from the plan (state and a live read),
/// from the shared reading (see [`super::readings`]), and when it was read.
pub async fn stack_graph(
    State(app): State<Arc<App>>,
    Query(params): Query<StackParams>,
) -> ApiResult {
    let not_before = params.fresh.is_some().then(Instant::now);
    let reading = app.readings.current(&app, not_before).await;
    match &reading.outcome {
        Ok(graph) => Ok(Json(with_reading_times(graph, &reading))),
        Err(err) => Err(err.clone()),
    }
}

/// The graph of `reading` with when it was read and when a page should ask again.
pub fn with_reading_times(graph: &Value, reading: &Reading) -> Value {
    let mut value = graph.clone();
    value["read_at"] = json!(reading
        .read_at
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    value["age_ms"] = json!(reading.age().as_millis() as u64);
    value["took_ms"] = json!(reading.took.as_millis() as u64);
    value["poll_after_ms"] = json!(STACK_REFRESH.as_millis() as u64);
    value
}

#[derive(Debug, Deserialize)]
pub struct JobsParams {
    /// Queue keys, comma-separated; empty: every queue.
    #[serde(default)]
    queue: String,
    /// Statuses, comma-separated; empty: every status.
    #[serde(default)]
    status: String,
    #[serde(default)]
    since: String,
}

/// Listings by query, each kept until its next refresh is due: any number of open pages
/// cost Batch no more than one. A failed listing answers for a moment too, so that pages
/// waiting on it do not each wait as long again.
#[derive(Default)]
pub struct JobsCache(tokio::sync::Mutex<HashMap<String, (Instant, ListingOutcome)>>);

type ListingOutcome = Result<Arc<Listing>, ApiError>;

fn split(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The jobs table: `provision jobs --json` with the same filters, plus when to ask again.
pub async fn jobs(State(app): State<Arc<App>>, Query(params): Query<JobsParams>) -> ApiResult {
    let since = Some(params.since.trim()).filter(|s| !s.is_empty());
    let query = list::Query::new(
        &app.stack,
        &split(&params.queue),
        &split(&params.status),
        since,
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let key = format!("{}|{}|{}", params.queue, params.status, params.since);
    // Held while listing: a second page asking meanwhile waits for this answer.
    let mut cache = app.jobs_cache.0.lock().await;
    let (listing, cached) = match cache.get(&key) {
        Some((at, Ok(listing))) if at.elapsed() < listing.next_poll(list::MIN_POLL_INTERVAL) => {
            (listing.clone(), true)
        }
        Some((at, Err(err))) if at.elapsed() < FAILED_HOLD => return Err(err.clone()),
        _ => {
            let listing = bounded("listing jobs", list::list(app.clients.batch(), &query))
                .await
                .map(Arc::new);
            cache.insert(key, (Instant::now(), listing.clone()));
            (listing?, false)
        }
    };
    drop(cache);
    Ok(Json(json!({
        "jobs": listing.jobs,
        "calls": listing.calls,
        "cached": cached,
        "totals": listing.totals(),
        "poll_after_ms": listing.next_poll(JOBS_REFRESH).as_millis() as u64,
    })))
}

/// One job: what `status` shows, and its parameters, command, resources and every attempt.
pub async fn job(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let detail = bounded("reading the job", describe_one(&app, &id)).await?;
    let report = JobReport::from_detail(&detail);
    let container = detail.container();
    let resources: serde_json::Map<String, Value> = container
        .map(|c| c.resource_requirements())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| Some((r.r#type()?.as_str().to_lowercase(), json!(r.value()?))))
        .collect();
    let attempts: Vec<Value> = detail
        .attempts()
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let c = a.container();
            json!({
                "attempt": i + 1,
                "started": a.started_at().and_then(time),
                "stopped": a.stopped_at().and_then(time),
                "exit_code": c.and_then(|c| c.exit_code()),
                "reason": a.status_reason().or_else(|| c.and_then(|c| c.reason())),
                "log_stream": c.and_then(|c| c.log_stream_name()),
            })
        })
        .collect();
    Ok(Json(json!({
        "job": report,
        "queue": detail.job_queue().map(last_segment),
        "job_definition": detail.job_definition().map(last_segment),
        "created": detail.created_at().and_then(time),
        "parameters": detail.parameters(),
        "command": container.map(|c| c.command()),
        "environment": container.map(|c| c.environment().iter()
            .map(|kv| json!({"name": kv.name(), "value": kv.value()})).collect::<Vec<_>>()),
        "resources": resources,
        "exit_code": container.and_then(|c| c.exit_code()),
        "exit_reason": container.and_then(|c| c.reason()),
        "depends_on": detail.depends_on().iter().filter_map(|d| d.job_id()).collect::<Vec<_>>(),
        "index": detail.array_properties().and_then(|a| a.index()),
        "array_size": detail.array_properties().filter(|a| a.index().is_none()).and_then(|a| a.size()),
        "retry_attempts": detail.retry_strategy().and_then(|r| r.attempts()),
        "timeout_s": detail.timeout().and_then(|t| t.attempt_duration_seconds()),
        "attempts": attempts,
    })))
}

/// An array job's children, listed by the statuses its summary counts.
pub async fn children(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let listing = bounded("listing the array's children", children_of(&app, &id)).await?;
    Ok(Json(
        json!({ "jobs": listing.jobs, "calls": listing.calls }),
    ))
}

async fn children_of(app: &App, id: &str) -> anyhow::Result<Listing> {
    let parent = describe_one(app, id).await?;
    let queue = queue_of(app, &parent);
    let counted = parent
        .array_properties()
        .filter(|a| a.index().is_none())
        .and_then(|a| a.status_summary())
        .ok_or_else(|| anyhow::anyhow!("job {id} is not an array job"))?;
    let statuses: Vec<_> = list::all_statuses()
        .into_iter()
        .filter(|s| counted.get(s.as_str()).is_some_and(|n| *n > 0))
        .collect();
    list::children(app.clients.batch(), &queue, id, &statuses).await
}

#[derive(Debug, Deserialize)]
pub struct LogsParams {
    /// Where the last answer ended; absent: from the start.
    token: Option<String>,
}

/// The next events of a job's log stream, as `provision logs` reads them.
pub async fn logs(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(params): Query<LogsParams>,
) -> ApiResult {
    let page = bounded("reading the job's log", log_page(&app, &id, params.token)).await?;
    Ok(Json(page))
}

async fn log_page(app: &App, id: &str, token: Option<String>) -> anyhow::Result<Value> {
    let job = describe_one(app, id).await?;
    let done = job.status().is_some_and(crate::jobs::status::is_done);
    let poll_after_ms = LOGS_REFRESH.as_millis() as u64;
    if job.array_properties().is_some_and(|a| a.index().is_none()) {
        return Ok(json!({
            "events": [], "job_done": done, "at_end": true, "poll_after_ms": poll_after_ms,
            "note": "an array job has no log of its own: each child logs to its own stream",
        }));
    }
    let Some(stream) = describe::log_stream(&job).map(str::to_string) else {
        let note = if done {
            "the job ended without a log stream"
        } else {
            "no log stream yet: Batch creates it when the job starts running"
        };
        return Ok(json!({
            "events": [], "job_done": done, "at_end": done, "poll_after_ms": poll_after_ms,
            "note": note,
        }));
    };
    let group = crate::jobs::log_group::of_job(app.clients.batch(), &job).await?;
    let page = crate::commands::logs::events_page(
        app.clients.logs(),
        &group,
        &stream,
        None,
        token.clone(),
    )
    .await?;
    let Some(page) = page else {
        return Ok(json!({
            "events": [], "job_done": done, "at_end": done, "poll_after_ms": poll_after_ms,
            "group": group, "stream": stream, "next_token": token,
            "note": format!("log stream {stream} does not exist (yet) in {group}"),
        }));
    };
    let events: Vec<Value> = page
        .events
        .iter()
        .map(|e| {
            let message = e.message().unwrap_or_default();
            json!({
                "time": e.timestamp().and_then(time),
                "message": message.strip_suffix('\n').unwrap_or(message),
            })
        })
        .collect();
    Ok(json!({
        "events": events,
        "group": group,
        "stream": stream,
        "next_token": page.next_token,
        "at_end": page.at_end,
        "job_done": done,
        "poll_after_ms": poll_after_ms,
    }))
}

/// Training summaries and prepared datasets found in the stack's buckets.
pub async fn results(State(app): State<Arc<App>>) -> ApiResult {
    let found = on_own_thread(&app, "reading the results", |app| async move {
        results::read(&app.clients, &app.stack).await
    })
    .await?;
    Ok(Json(
        serde_json::to_value(found).map_err(anyhow::Error::from)?,
    ))
}

/// The stack's cost estimate (`provision cost --json`), with the gigabytes its buckets hold
/// now.
pub async fn cost(State(app): State<Arc<App>>) -> ApiResult {
    let table = crate::cost::PriceTable::builtin()?;
    let stored = bounded(
        "measuring the stack's buckets",
        results::stored_gb(&app.clients, &app.stack),
    )
    .await?;
    let estimate = crate::cost::stack_cost(
        &app.stack,
        &table,
        crate::cost::StorageUse {
            s3_gb: stored.unwrap_or(0.0),
            ecr_gb: 0.0,
        },
    );
    let mut value = serde_json::to_value(estimate).map_err(anyhow::Error::from)?;
    value["s3_measured"] = json!(stored.is_some());
    Ok(Json(value))
}

async fn describe_one(app: &App, id: &str) -> anyhow::Result<aws_sdk_batch::types::JobDetail> {
    Ok(describe::describe(app.clients.batch(), &[id.to_string()])
        .await?
        .remove(0))
}

/// The stack's queue a job was submitted to (its name when the stack does not declare it).
fn queue_of(app: &App, job: &aws_sdk_batch::types::JobDetail) -> QueueRef {
    let name = job.job_queue().map(last_segment).unwrap_or_default();
    let key = app
        .stack
        .queues
        .keys()
        .find(|k| app.stack.queue_name(k) == name)
        .cloned()
        .unwrap_or_else(|| name.clone());
    QueueRef { key, name }
}

/// `arn:...:job-queue/demo-dev-main` → `demo-dev-main`.
fn last_segment(arn: &str) -> String {
    arn.rsplit_once('/').map_or(arn, |(_, s)| s).to_string()
}

fn time(epoch_ms: i64) -> Option<String> {
    (epoch_ms > 0)
        .then(|| chrono::DateTime::from_timestamp_millis(epoch_ms))
        .flatten()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}
