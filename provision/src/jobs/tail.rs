//! Reading the events of several log streams at once (an array job's children, a filtered
//! read): FilterLogEvents over up to 100 streams per call, interleaved in time order.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use anyhow::Context;
use aws_sdk_cloudwatchlogs::types::FilteredLogEvent;

/// FilterLogEvents names at most 100 streams per call.
const STREAMS_PER_CALL: usize = 100;
/// How far before the newest event printed a follow-up read starts. The awslogs driver sends
/// in batches, so an event can arrive after a later one of another stream was printed; ids
/// already printed are skipped.
const LATE_MS: i64 = 30_000;

/// A stream to read, and the label its lines get (`[3] `), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub name: String,
    pub label: Option<String>,
}

/// Reads streams of one group, each call printing only events not printed before.
pub struct Tail<'a> {
    logs: &'a aws_sdk_cloudwatchlogs::Client,
    group: String,
    filter: Option<String>,
    /// `--since`: no event before this time (ms since the epoch).
    since_ms: Option<i64>,
    newest_ms: Option<i64>,
    /// Ids of printed events at or after the current read's start, with their timestamps.
    printed: HashMap<String, i64>,
    /// Streams read at least once.
    known: HashSet<String>,
    /// Requests sent so far.
    calls: u64,
}

/// Why a read failed.
enum ReadError {
    /// The call named a stream that does not exist (AWS refuses the whole call).
    MissingStream,
    Other(anyhow::Error),
}

impl<'a> Tail<'a> {
    pub fn new(
        logs: &'a aws_sdk_cloudwatchlogs::Client,
        group: &str,
        filter: Option<String>,
        since_ms: Option<i64>,
    ) -> Self {
        Self {
            logs,
            group: group.to_string(),
            filter,
            since_ms,
            newest_ms: None,
            printed: HashMap::new(),
            known: HashSet::new(),
            calls: 0,
        }
    }

    /// Requests sent so far (pages and lookups included), for a caller that paces itself.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Prints every event of `streams` not printed yet, in time order within each hundred
    /// streams; returns the streams that do not exist (yet).
    pub async fn poll(
        &mut self,
        streams: &[Stream],
        out: &mut impl Write,
    ) -> anyhow::Result<Vec<Stream>> {
        let from = match (self.newest_ms, self.since_ms) {
            (Some(newest), since) => Some((newest - LATE_MS).max(since.unwrap_or(0))),
            (None, since) => since,
        };
        // A stream read for the first time is read whole (from --since): a child found late
        // may hold events older than the window.
        let (fresh, known): (Vec<Stream>, Vec<Stream>) = streams
            .iter()
            .cloned()
            .partition(|s| !self.known.contains(&s.name));
        let mut missing = Vec::new();
        for (set, start) in [(fresh, self.since_ms), (known, from)] {
            for chunk in set.chunks(STREAMS_PER_CALL) {
                missing.extend(self.read_chunk(chunk, start, out).await?);
            }
        }
        for stream in streams {
            if !missing.contains(stream) {
                self.known.insert(stream.name.clone());
            }
        }
        if let Some(from) = from {
            self.printed.retain(|_, ts| *ts >= from);
        }
        Ok(missing)
    }

    /// Reads up to 100 streams; when AWS refuses the call for a stream that does not exist,
    /// reads those that do and returns the others.
    async fn read_chunk(
        &mut self,
        chunk: &[Stream],
        from: Option<i64>,
        out: &mut impl Write,
    ) -> anyhow::Result<Vec<Stream>> {
        match self.read(chunk, from, out).await {
            Ok(()) => Ok(Vec::new()),
            Err(ReadError::MissingStream) => {
                let (present, mut absent) = self.split_existing(chunk).await?;
                if !present.is_empty() {
                    match self.read(&present, from, out).await {
                        Ok(()) => {}
                        // Deleted between the check and the read: next time.
                        Err(ReadError::MissingStream) => absent.extend(present),
                        Err(ReadError::Other(err)) => return Err(err),
                    }
                }
                Ok(absent)
            }
            Err(ReadError::Other(err)) => Err(err),
        }
    }

    /// Every page of one FilterLogEvents read of `streams` from `from`.
    async fn read(
        &mut self,
        streams: &[Stream],
        from: Option<i64>,
        out: &mut impl Write,
    ) -> Result<(), ReadError> {
        let labels: HashMap<&str, Option<&str>> = streams
            .iter()
            .map(|s| (s.name.as_str(), s.label.as_deref()))
            .collect();
        let mut token: Option<String> = None;
        loop {
            self.calls += 1;
            let result = self
                .logs
                .filter_log_events()
                .log_group_name(&self.group)
                .set_log_stream_names(Some(streams.iter().map(|s| s.name.clone()).collect()))
                .set_filter_pattern(self.filter.clone())
                .set_start_time(from)
                .set_next_token(token.clone())
                .send()
                .await;
            let page = match result {
                Ok(page) => page,
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
                {
                    return Err(ReadError::MissingStream);
                }
                Err(err) => {
                    return Err(ReadError::Other(
                        anyhow::Error::new(err)
                            .context(format!("FilterLogEvents in {}", self.group)),
                    ))
                }
            };
            for event in page.events() {
                self.print(event, &labels, out).map_err(ReadError::Other)?;
            }
            out.flush()
                .map_err(|e| ReadError::Other(anyhow::Error::new(e)))?;
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(());
            }
        }
    }

    fn print(
        &mut self,
        event: &FilteredLogEvent,
        labels: &HashMap<&str, Option<&str>>,
        out: &mut impl Write,
    ) -> anyhow::Result<()> {
        let ts = event.timestamp().unwrap_or_default();
        if let Some(id) = event.event_id() {
            if self.printed.insert(id.to_string(), ts).is_some() {
                return Ok(());
            }
        }
        self.newest_ms = Some(self.newest_ms.map_or(ts, |n| n.max(ts)));
        let message = event.message().unwrap_or_default();
        let message = message.strip_suffix('\n').unwrap_or(message);
        match event
            .log_stream_name()
            .and_then(|s| labels.get(s).copied().flatten())
        {
            Some(label) => writeln!(out, "[{label}] {message}")?,
            None => writeln!(out, "{message}")?,
        }
        Ok(())
    }

    /// Which of `streams` exist, by one DescribeLogStreams each: only after a read was refused,
    /// which happens when a job ended before its container could start.
    async fn split_existing(
        &mut self,
        streams: &[Stream],
    ) -> anyhow::Result<(Vec<Stream>, Vec<Stream>)> {
        let mut present = Vec::new();
        let mut absent = Vec::new();
        for stream in streams {
            self.calls += 1;
            let out = self
                .logs
                .describe_log_streams()
                .log_group_name(&self.group)
                .log_stream_name_prefix(&stream.name)
                .limit(1)
                .send()
                .await;
            let found = match out {
                Ok(out) => out
                    .log_streams()
                    .iter()
                    .any(|s| s.log_stream_name() == Some(stream.name.as_str())),
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
                {
                    anyhow::bail!(
                        "log group `{}` does not exist (the stack's logs were deleted, or the \
                         job logs elsewhere)",
                        self.group
                    )
                }
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("DescribeLogStreams in {}", self.group))
                }
            };
            if found {
                present.push(stream.clone());
            } else {
                absent.push(stream.clone());
            }
        }
        Ok((present, absent))
    }
}
