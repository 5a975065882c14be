//! The stack graph's live readings, shared by every page. A reading is a plan of the stack (its
//! state and a live read of every resource), so it costs AWS a few dozen requests: the server
//! starts one as soon as it listens, keeps the latest for a short while, and never runs two at
//! once. A page asking while one is in flight waits for that one; any number of open pages cost
//! AWS one reading per [`FRESH`] interval at most.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::api::{on_own_thread, ApiError};
use super::{graph, App};

/// How long a reading answers pages before the next one asks AWS again.
pub const FRESH: Duration = Duration::from_secs(10);
/// How long a failed reading answers pages, from when it failed: a page reloaded in a loop,
/// many pages open, or pages that waited on it, do not turn an outage (or throttling) into a
/// stream of retries, each as slow as the last.
pub const FAILED_HOLD: Duration = Duration::from_secs(2);

/// One finished reading.
pub struct Reading {
    /// When it started: it saw AWS as it was at this moment or later.
    pub started: Instant,
    pub read_at: chrono::DateTime<chrono::Utc>,
    pub took: Duration,
    /// The graph ([`graph::StackGraph`]) as the API answers it; `Err`: why it failed.
    pub outcome: Result<Arc<Value>, ApiError>,
}

impl Reading {
    /// Whether it answers a request made at `now` that wants AWS as seen at `not_before` or
    /// later (`None`: within the usual freshness). A failure answers every request for a
    /// moment after it failed.
    fn answers(&self, now: Instant, not_before: Option<Instant>) -> bool {
        match (&self.outcome, not_before) {
            (Err(_), _) => now.duration_since(self.started + self.took) < FAILED_HOLD,
            (Ok(_), Some(t)) => self.started >= t,
            (Ok(_), None) => now.duration_since(self.started) < FRESH,
        }
    }

    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }
}

/// The latest reading, the latest that succeeded, and the gate that keeps readings one at a time.
#[derive(Default)]
pub struct StackReadings {
    latest: Mutex<Option<Arc<Reading>>>,
    latest_good: Mutex<Option<Arc<Reading>>>,
    gate: tokio::sync::Mutex<()>,
}

/// What a page can draw at once, without waiting for AWS.
pub struct Known {
    /// The latest successful reading, however old.
    pub good: Option<Arc<Reading>>,
    /// Why the latest reading failed, when it did.
    pub failed: Option<String>,
    /// Whether `good` is the latest reading and still fresh (the page needs nothing more).
    pub fresh: bool,
}

impl StackReadings {
    /// A reading that answers a request made now: the latest one when it does, else the
    /// one in flight, else a new one.
    pub async fn current(&self, app: &Arc<App>, not_before: Option<Instant>) -> Arc<Reading> {
        if let Some(r) = self.answering(not_before) {
            return r;
        }
        let _one_at_a_time = self.gate.lock().await;
        // The reading this request waited for may answer it.
        if let Some(r) = self.answering(not_before) {
            return r;
        }
        let reading = Arc::new(read(app).await);
        if reading.outcome.is_ok() {
            *self.latest_good.lock().unwrap() = Some(reading.clone());
        }
        *self.latest.lock().unwrap() = Some(reading.clone());
        reading
    }

    /// Starts a reading in the background unless the latest one is fresh or one is in
    /// flight: the page about to ask for it finds it under way.
    pub fn refresh_soon(app: &Arc<App>) {
        if app.readings.answering(None).is_some() {
            return;
        }
        let app = app.clone();
        tokio::spawn(async move {
            app.readings.current(&app, None).await;
        });
    }

    pub fn known(&self) -> Known {
        let latest = self.latest.lock().unwrap().clone();
        let good = self.latest_good.lock().unwrap().clone();
        let failed = latest
            .as_ref()
            .and_then(|r| r.outcome.as_ref().err())
            .map(|e| e.message.clone());
        let fresh = latest
            .as_ref()
            .is_some_and(|r| r.outcome.is_ok() && r.answers(Instant::now(), None));
        Known {
            good,
            failed,
            fresh,
        }
    }

    fn answering(&self, not_before: Option<Instant>) -> Option<Arc<Reading>> {
        let latest = self.latest.lock().unwrap().clone()?;
        latest.answers(Instant::now(), not_before).then_some(latest)
    }
}

/// Plans the stack read-only, bounded by the dashboard's request timeout.
async fn read(app: &Arc<App>) -> Reading {
    let started = Instant::now();
    let read_at = chrono::Utc::now();
    let outcome = on_own_thread(app, "reading the stack", |app| async move {
        let graph = graph::read(&app.clients, &app.stack).await?;
        Ok(serde_json::to_value(graph)?)
    })
    .await
    .map(Arc::new);
    Reading {
        started,
        read_at,
        took: started.elapsed(),
        outcome,
    }
}
