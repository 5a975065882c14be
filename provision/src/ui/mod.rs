//! `provision ui`: a local, read-only dashboard of one stack. An HTTP server (axum) answers the
//! pages (one HTML shell with its style and script inline, embedded in the binary) and the JSON
//! they read, which it builds with the same code as the CLI: the plan for the stack graph,
//! `jobs::list` for the jobs table, `jobs::describe` and the log reader of `provision logs` for
//! a job, S3 through the tool's clients for the results, `cost` for the estimate. Every route
//! answers GET only.

mod api;
mod graph;
mod readings;
mod results;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use axum::Router;

use crate::aws::Clients;
use crate::stack::Stack;

/// The longest a page waits for AWS: an endpoint that stopped answering becomes an error on
/// the page instead of a request that hangs.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// What every request handler shares.
pub struct App {
    pub stack: Stack,
    pub clients: Clients,
    jobs_cache: api::JobsCache,
    readings: readings::StackReadings,
}

impl App {
    pub fn new(stack: Stack, clients: Clients) -> Self {
        Self {
            stack,
            clients,
            jobs_cache: api::JobsCache::default(),
            readings: readings::StackReadings::default(),
        }
    }
}

/// The clients the dashboard uses: the tool's, with shorter timeouts than a command's (the
/// SDK's own have no limit on an attempt that gets no answer), so a page answers, with an
/// error, within [`REQUEST_TIMEOUT`] when AWS cannot be reached or stops answering; the page's
/// next refresh is its retry.
pub async fn clients(region: &str) -> anyhow::Result<Clients> {
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    crate::aws::check_endpoint_env()?;
    let config = crate::aws::sdk_config(region)
        .await
        .into_builder()
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(2)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(5))
                .build(),
        )
        .build();
    Ok(Clients::from_config(config))
}

/// Every route: the pages and the JSON API.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(stack_page))
        .route("/jobs", get(page))
        .route("/jobs/{id}", get(page))
        .route("/results", get(page))
        .route("/cost", get(page))
        .route("/api/overview", get(api::overview))
        .route("/api/stack", get(api::stack_graph))
        .route("/api/jobs", get(api::jobs))
        .route("/api/jobs/{id}", get(api::job))
        .route("/api/jobs/{id}/children", get(api::children))
        .route("/api/jobs/{id}/logs", get(api::logs))
        .route("/api/results", get(api::results))
        .route("/api/cost", get(api::cost))
        .fallback(api::not_found)
        .with_state(app)
}

/// The page shell with its style and script inline, split where each answer puts the data the
/// page can draw at once: a page is one request before it asks the API for anything.
struct Shell {
    head: String,
    tail: String,
}

fn shell() -> &'static Shell {
    static SHELL: OnceLock<Shell> = OnceLock::new();
    SHELL.get_or_init(|| {
        let html = INDEX_HTML
            .replace("<!-- style -->", &format!("<style>\n{STYLE_CSS}</style>"))
            .replace("<!-- script -->", &format!("<script>\n{APP_JS}</script>"));
        let (head, tail) = html
            .split_once("<!-- boot -->")
            .expect("index.html marks where the boot data goes");
        Shell {
            head: head.to_string(),
            tail: tail.to_string(),
        }
    })
}

/// The shell with `boot` (what the page draws before its first API request) inline.
fn shell_with(boot: &serde_json::Value) -> Html<String> {
    let shell = shell();
    // In JSON, `<` appears only inside strings, where `\u003c` means the same: no `</script>`
    // in the data can end the element early.
    let data = boot.to_string().replace('<', "\\u003c");
    Html(format!(
        "{}<script type=\"application/json\" id=\"boot\">{data}</script>{}",
        shell.head, shell.tail
    ))
}

async fn page(State(app): State<Arc<App>>) -> Html<String> {
    shell_with(&serde_json::json!({ "overview": api::overview_of(&app.stack) }))
}

/// The stack page, with what is known of the stack now: its resources and their dependencies
/// from the stack file, and the latest reading (fresh, or older while a new one is under way).
async fn stack_page(State(app): State<Arc<App>>) -> Html<String> {
    let known = app.readings.known();
    if !known.fresh {
        readings::StackReadings::refresh_soon(&app);
    }
    let reading = known.good.as_ref().and_then(|r| {
        let graph = r.outcome.as_ref().ok()?;
        Some(api::with_reading_times(graph, r))
    });
    let structure: Vec<_> = crate::engine::graph(&app.stack)
        .into_iter()
        .map(|n| serde_json::json!({"address": n.address, "kind": n.address.kind.as_str(), "deps": n.deps}))
        .collect();
    shell_with(&serde_json::json!({
        "overview": api::overview_of(&app.stack),
        "stack": {
            "structure": structure,
            "reading": reading,
            "fresh": known.fresh,
            "failed": known.failed,
        },
    }))
}

/// Binds `addr`; a port in use is one sentence with the fix.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => Ok(listener),
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "port {} on {} is in use: pick another with --port (--port 0 takes any free one)",
            addr.port(),
            addr.ip()
        ),
        Err(err) => Err(err).with_context(|| format!("cannot listen on {addr}")),
    }
}

/// Starts the stack's first reading, so that the first page finds it ready or under way; the
/// handle resolves when it is in (dropping it does not stop it).
pub fn start_reading(app: &Arc<App>) -> tokio::task::JoinHandle<()> {
    let app = app.clone();
    tokio::spawn(async move {
        app.readings.current(&app, None).await;
    })
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn serve(listener: tokio::net::TcpListener, app: Arc<App>) -> anyhow::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown())
        .await
        .context("serving the dashboard")
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
