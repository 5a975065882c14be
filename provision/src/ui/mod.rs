//! `provision ui`: a local, read-only dashboard of one stack. An HTTP server (axum) answers the
//! pages (one HTML shell and a script, embedded in the binary) and the JSON they read, which it
//! builds with the same code as the CLI: the plan for the stack graph, `jobs::list` for the
//! jobs table, `jobs::describe` and the log reader of `provision logs` for a job, S3 through
//! the tool's clients for the results, `cost` for the estimate. Every route answers GET only.

mod api;
mod graph;
mod results;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;

use crate::aws::Clients;
use crate::stack::Stack;

/// The longest a page waits for AWS: an endpoint that stopped answering becomes an error on
/// the page instead of a request that hangs.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// What every request handler shares.
pub struct App {
    pub stack: Stack,
    pub clients: Clients,
    jobs_cache: api::JobsCache,
}

impl App {
    pub fn new(stack: Stack, clients: Clients) -> Self {
        Self {
            stack,
            clients,
            jobs_cache: api::JobsCache::default(),
        }
    }
}

/// The clients the dashboard uses: the tool's, with fewer retries and shorter timeouts than a
/// command's, so a page answers (with an error) within seconds when AWS cannot be reached; the
/// page's next refresh is its retry.
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
                .operation_attempt_timeout(Duration::from_secs(8))
                .build(),
        )
        .build();
    Ok(Clients::from_config(config))
}

/// Every route: the pages, their assets and the JSON API.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/jobs", get(page))
        .route("/jobs/{id}", get(page))
        .route("/results", get(page))
        .route("/cost", get(page))
        .route("/assets/app.js", get(script))
        .route("/assets/style.css", get(style))
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

async fn page() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
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
