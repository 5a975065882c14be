//! A small HTTP proxy between the tool and moto, for the engine's hardening tests.
//!
//! It does three things a test can switch on and off while it runs:
//! - Account: every request gets `x-moto-account-id`, so each test has an AWS account of its
//!   own (its own default VPC, IAM, Batch...), whatever the tests running beside it do.
//! - Faults: a share of requests (per mille, deterministic from a seed) is answered without
//!   reaching moto, half with the service's throttling error as its protocol spells it, half
//!   with a 500, as AWS answers under load. Nothing happens on the server for those, as with a
//!   real throttle.
//! - Crash: after the Nth mutating request has been *executed* by moto, the process under test
//!   is killed with SIGKILL before it sees the answer: the resource exists, the tool never
//!   learnt it. This is the worst moment for a crash, reached deterministically.
//!
//! - Latency: every request is held a fixed time (optionally jittered) before it reaches moto,
//!   as the network to AWS holds it, each on its own thread so that concurrent requests stay
//!   concurrent. The proxy records when each request arrived and when it was answered, and
//!   from that the critical path in round trips: the longest chain of requests each of which
//!   was sent only after the one before it was answered ([`FaultProxy::round_trips`]).
//!
//! Std only (threads and blocking sockets): one connection per request, closed after the
//! answer, which every HTTP/1.1 client handles.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts of what the proxy did, for a test's assertions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub requests: usize,
    pub throttled: usize,
    pub server_errors: usize,
    pub mutating: usize,
}

struct Shared {
    upstream: String,
    account: String,
    /// Faults per thousand requests.
    per_mille: AtomicU64,
    rng: AtomicU64,
    requests: AtomicUsize,
    throttled: AtomicUsize,
    server_errors: AtomicUsize,
    mutating: AtomicUsize,
    /// Kill `victim` once this many mutating requests have run (0: never).
    kill_after: AtomicUsize,
    /// Only mutating requests whose log line contains this count towards `kill_after`.
    kill_pattern: Mutex<String>,
    matched: AtomicUsize,
    victim: Mutex<Option<Child>>,
    killed: AtomicBool,
    /// Mutating request lines seen, for a test's failure message.
    log: Mutex<Vec<String>>,
    /// An access key AWS does not know: requests signed with it are refused as AWS does.
    rejected_key: Mutex<Option<String>>,
    /// Every request is held this long (microseconds) before it is answered (0: no latency).
    latency_us: AtomicU64,
    /// Plus a uniform random share of this many microseconds (the jittered variant).
    jitter_us: AtomicU64,
    jitter_rng: AtomicU64,
    /// The next request whose `service action` contains this is held this much longer.
    hold_next: Mutex<Option<(String, Duration)>>,
    /// Requests handled one at a time, whatever the client sends at once (the serial bound).
    serial: AtomicBool,
    serial_gate: Mutex<()>,
    /// When each request arrived and was answered, since the last [`FaultProxy::clear_timeline`].
    timeline: Mutex<Vec<Span>>,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Span {
    /// `service action` (`iam GetRole`, `s3 GET /bucket?versioning`).
    pub call: String,
    pub arrived: Instant,
    pub answered: Instant,
}

/// The shape of a command's traffic: how many requests, how many at most in flight together,
/// and the critical path (the longest chain of requests each sent after the previous one was
/// answered), with the requests along it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundTrips {
    pub requests: usize,
    pub max_in_flight: usize,
    pub critical_path: usize,
    /// One request per round trip of the critical path, first to last.
    pub path: Vec<String>,
    /// The requests of each round trip: every request placed at the depth of the longest
    /// chain that ends with it (index 0: the requests nothing had to be answered before).
    pub waves: Vec<Vec<String>>,
}

/// Orders `spans` into chains: a request depends (for all the proxy can tell) on every request
/// answered before it arrived. Structural, not a timing threshold: with a latency of D per
/// request, requests sent together overlap and requests sent after an answer do not.
pub fn round_trips(spans: &[Span]) -> RoundTrips {
    let mut order: Vec<&Span> = spans.iter().collect();
    order.sort_by_key(|s| s.arrived);
    let mut depth = vec![0usize; order.len()];
    let mut before: Vec<Option<usize>> = vec![None; order.len()];
    for i in 0..order.len() {
        let mut best = (0, None);
        for j in 0..i {
            if order[j].answered <= order[i].arrived && depth[j] > best.0 {
                best = (depth[j], Some(j));
            }
        }
        depth[i] = best.0 + 1;
        before[i] = best.1;
    }
    let critical_path = depth.iter().copied().max().unwrap_or(0);
    let mut path = Vec::new();
    let mut at = depth.iter().position(|&d| d == critical_path && d > 0);
    while let Some(i) = at {
        path.push(order[i].call.clone());
        at = before[i];
    }
    path.reverse();
    let mut waves = vec![Vec::new(); critical_path];
    for (i, span) in order.iter().enumerate() {
        waves[depth[i] - 1].push(span.call.clone());
    }
    let mut events: Vec<(Instant, i64)> = spans
        .iter()
        .flat_map(|s| [(s.arrived, 1), (s.answered, -1)])
        .collect();
    // An answer at the same instant as an arrival ends first.
    events.sort();
    let (mut now, mut max_in_flight) = (0i64, 0i64);
    for (_, d) in events {
        now += d;
        max_in_flight = max_in_flight.max(now);
    }
    RoundTrips {
        requests: spans.len(),
        max_in_flight: max_in_flight as usize,
        critical_path,
        path,
        waves,
    }
}

/// A running proxy; it stops serving when dropped (its thread ends with the process).
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`: the endpoint to give the tool.
    pub endpoint: String,
    pub account: String,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Proxies to `upstream` (`http://127.0.0.1:PORT`) as the 12-digit `account`.
    pub fn start(upstream: &str, account: &str) -> FaultProxy {
        assert!(
            account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()),
            "account must be 12 digits"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let shared = Arc::new(Shared {
            upstream,
            account: account.to_string(),
            per_mille: AtomicU64::new(0),
            rng: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
            requests: AtomicUsize::new(0),
            throttled: AtomicUsize::new(0),
            server_errors: AtomicUsize::new(0),
            mutating: AtomicUsize::new(0),
            kill_after: AtomicUsize::new(0),
            kill_pattern: Mutex::new(String::new()),
            matched: AtomicUsize::new(0),
            victim: Mutex::new(None),
            killed: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
            rejected_key: Mutex::new(None),
            latency_us: AtomicU64::new(0),
            jitter_us: AtomicU64::new(0),
            jitter_rng: AtomicU64::new(0x2545_F491_4F6C_DD1D),
            hold_next: Mutex::new(None),
            serial: AtomicBool::new(false),
            serial_gate: Mutex::new(()),
            timeline: Mutex::new(Vec::new()),
        });
        let accept = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let shared = accept.clone();
                std::thread::spawn(move || {
                    let _ = serve(&shared, stream);
                });
            }
        });
        FaultProxy {
            endpoint,
            account: account.to_string(),
            shared,
        }
    }

    /// Fails `per_mille` of the requests from now on (0 turns faults off); `seed` fixes which.
    pub fn set_faults(&self, per_mille: u64, seed: u64) {
        self.shared.rng.store(seed | 1, Ordering::SeqCst);
        self.shared.per_mille.store(per_mille, Ordering::SeqCst);
    }

    /// Arms the crash: the process given to [`FaultProxy::set_victim`] is killed (SIGKILL)
    /// right after the `n`th mutating request from now has run on the server, before the
    /// answer reaches it. Arm before spawning, so that no request goes uncounted.
    pub fn arm_kill(&self, n: usize) {
        self.arm_kill_matching("", n);
    }

    /// As [`FaultProxy::arm_kill`], counting only the mutating requests whose `service action`
    /// contains `pattern` (`batch createcomputeenvironment`).
    pub fn arm_kill_matching(&self, pattern: &str, n: usize) {
        *self.shared.kill_pattern.lock().unwrap() = pattern.to_string();
        self.shared.matched.store(0, Ordering::SeqCst);
        self.shared.killed.store(false, Ordering::SeqCst);
        self.shared.mutating.store(0, Ordering::SeqCst);
        self.shared.log.lock().unwrap().clear();
        *self.shared.victim.lock().unwrap() = None;
        self.shared.kill_after.store(n, Ordering::SeqCst);
    }

    pub fn set_victim(&self, child: Child) {
        *self.shared.victim.lock().unwrap() = Some(child);
    }

    /// Waits until the victim was killed or exited by itself; returns it and whether it was
    /// killed. Disarms the crash.
    pub fn wait_victim(&self, timeout: Duration) -> (Option<Child>, bool) {
        let start = std::time::Instant::now();
        loop {
            {
                let mut victim = self.shared.victim.lock().unwrap();
                let killed = self.shared.killed.load(Ordering::SeqCst);
                let exited = victim
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                if killed || exited || start.elapsed() > timeout {
                    self.shared.kill_after.store(0, Ordering::SeqCst);
                    return (victim.take(), killed);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Refuses every request signed with `access_key` the way AWS refuses an unknown key
    /// (moto accepts any key).
    pub fn reject_access_key(&self, access_key: &str) {
        *self.shared.rejected_key.lock().unwrap() = Some(access_key.to_string());
    }

    /// Forgets the mutating requests seen so far.
    pub fn clear_log(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// The mutating requests seen since the last [`FaultProxy::kill_after`] (`service action`).
    pub fn mutating_log(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Holds every request `delay` before it reaches moto (zero turns latency off), as a
    /// network to AWS would; each request waits on its own thread, so requests sent together
    /// are answered together.
    pub fn set_latency(&self, delay: Duration) {
        self.set_jittered_latency(delay, Duration::ZERO, 0);
    }

    /// As [`FaultProxy::set_latency`], plus a uniform random share of `jitter` per request;
    /// `seed` fixes the sequence.
    pub fn set_jittered_latency(&self, delay: Duration, jitter: Duration, seed: u64) {
        self.shared.jitter_rng.store(seed | 1, Ordering::SeqCst);
        self.shared
            .jitter_us
            .store(jitter.as_micros() as u64, Ordering::SeqCst);
        self.shared
            .latency_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    /// Holds the next request whose `service action` contains `pattern` (`dynamodb PutItem`)
    /// `delay` longer than the rest, once: to make one answer come after another's.
    pub fn hold_next(&self, pattern: &str, delay: Duration) {
        *self.shared.hold_next.lock().unwrap() = Some((pattern.to_string(), delay));
    }

    /// Handles requests one at a time (latency included): what a client that sends each
    /// request only after the previous answer would see.
    pub fn set_serial(&self, serial: bool) {
        self.shared.serial.store(serial, Ordering::SeqCst);
    }

    /// Forgets the requests timed so far.
    pub fn clear_timeline(&self) {
        self.shared.timeline.lock().unwrap().clear();
    }

    /// Every request since the last [`FaultProxy::clear_timeline`], in order of arrival.
    pub fn timeline(&self) -> Vec<Span> {
        let mut spans = self.shared.timeline.lock().unwrap().clone();
        spans.sort_by_key(|s| s.arrived);
        spans
    }

    /// The shape of the traffic since the last [`FaultProxy::clear_timeline`].
    pub fn round_trips(&self) -> RoundTrips {
        round_trips(&self.shared.timeline.lock().unwrap())
    }

    pub fn counts(&self) -> Counts {
        let s = &self.shared;
        Counts {
            requests: s.requests.load(Ordering::SeqCst),
            throttled: s.throttled.load(Ordering::SeqCst),
            server_errors: s.server_errors.load(Ordering::SeqCst),
            mutating: s.mutating.load(Ordering::SeqCst),
        }
    }

    /// Environment for a process that should reach moto through this proxy.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        let mut env = crate::emulator().aws_env();
        for (k, v) in env.iter_mut() {
            if k == "AWS_ENDPOINT_URL" {
                *v = self.endpoint.clone();
            }
        }
        env
    }

    /// A `Command` for `program` that talks to moto through this proxy.
    /// SDK configuration through this proxy, in its account.
    pub fn config_loader(&self) -> aws_config::ConfigLoader {
        crate::config_loader(&self.endpoint)
    }

    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut cmd = std::process::Command::new(program);
        cmd.env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN");
        cmd.envs(self.aws_env());
        cmd
    }
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The signing name from the SigV4 `Authorization` header (`s3`, `batch`, `iam`...).
    fn service(&self) -> String {
        self.header("authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').nth(3))
            .unwrap_or("unknown")
            .to_string()
    }

    /// The operation: `X-Amz-Target`'s, a query protocol's `Action`, or the REST path.
    fn action(&self) -> String {
        if self.service() == "s3" {
            return format!("{} {}", self.method, self.target);
        }
        if let Some(target) = self.header("x-amz-target") {
            return target.rsplit('.').next().unwrap_or(target).to_string();
        }
        let body = String::from_utf8_lossy(&self.body);
        let query = self.target.split_once('?').map(|(_, q)| q).unwrap_or("");
        for pair in body.split('&').chain(query.split('&')) {
            if let Some(action) = pair.strip_prefix("Action=") {
                return action.to_string();
            }
        }
        // Batch (restJson1): /v1/createcomputeenvironment.
        self.target
            .split('?')
            .next()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string()
    }

    fn access_key(&self) -> Option<&str> {
        self.header("authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').next())
    }

    fn mutating(&self) -> bool {
        if self.service() == "s3" {
            return !matches!(self.method.as_str(), "GET" | "HEAD");
        }
        let action = self.action().to_ascii_lowercase();
        const VERBS: [&str; 21] = [
            "create",
            "put",
            "update",
            "delete",
            "register",
            "deregister",
            "attach",
            "detach",
            "add",
            "remove",
            "modify",
            "authorize",
            "revoke",
            "tag",
            "untag",
            "set",
            "enable",
            "disable",
            "associate",
            // DynamoDB's writes of many items at once.
            "transactwrite",
            "batchwrite",
        ];
        VERBS.iter().any(|v| action.starts_with(v))
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut req = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        req.body = read_chunked(reader)?;
    } else if let Some(len) = req
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok())
    {
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(Some(req))
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size =
            usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                let mut t = String::new();
                if reader.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    break;
                }
            }
            return Ok(body);
        }
        let mut chunk = vec![0; size];
        reader.read_exact(&mut chunk)?;
        body.extend_from_slice(&chunk);
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}

/// xorshift64*: a fixed sequence per seed, shared by every connection.
fn next_random(rng: &AtomicU64) -> u64 {
    let mut x = rng.load(Ordering::SeqCst);
    loop {
        let mut y = x;
        y ^= y >> 12;
        y ^= y << 25;
        y ^= y >> 27;
        match rng.compare_exchange(x, y, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return y.wrapping_mul(0x2545_F491_4F6C_DD1D),
            Err(now) => x = now,
        }
    }
}

/// The throttling answer each protocol's clients recognize (aws-runtime's THROTTLING_ERRORS).
fn throttle(service: &str) -> (u16, &'static str, String, Vec<(&'static str, String)>) {
    match service {
        "s3" => (
            503,
            "application/xml",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>FAULT</RequestId></Error>".into(),
            vec![],
        ),
        "ec2" => (
            503,
            "text/xml",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>FAULT</RequestID></Response>".into(),
            vec![],
        ),
        "iam" | "sts" => (
            400,
            "text/xml",
            "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>FAULT</RequestId></ErrorResponse>".into(),
            vec![],
        ),
        // JSON protocols (Batch, DynamoDB, ECR, Logs, Secrets Manager).
        _ => (
            400,
            "application/x-amz-json-1.1",
            "{\"__type\":\"ThrottlingException\",\"message\":\"Rate exceeded\"}".into(),
            vec![("x-amzn-ErrorType", "ThrottlingException".into())],
        ),
    }
}

/// AWS's answer to a request signed with a key it does not know.
fn unknown_key(service: &str) -> (u16, &'static str, String, Vec<(&'static str, String)>) {
    match service {
        "s3" => (403, "application/xml", "<Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>".into(), vec![]),
        "ec2" => (401, "text/xml", "<Response><Errors><Error><Code>AuthFailure</Code><Message>AWS was not able to validate the provided access credentials</Message></Error></Errors><RequestID>FAULT</RequestID></Response>".into(), vec![]),
        "iam" | "sts" => (403, "text/xml", "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error><RequestId>FAULT</RequestId></ErrorResponse>".into(), vec![]),
        _ => (400, "application/x-amz-json-1.1", "{\"__type\":\"UnrecognizedClientException\",\"message\":\"The security token included in the request is invalid.\"}".into(), vec![("x-amzn-ErrorType", "UnrecognizedClientException".into())]),
    }
}

fn server_error(service: &str) -> (u16, &'static str, String, Vec<(&'static str, String)>) {
    match service {
        "s3" => (500, "application/xml", "<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>".into(), vec![]),
        "ec2" => (500, "text/xml", "<Response><Errors><Error><Code>InternalError</Code><Message>An internal error has occurred</Message></Error></Errors><RequestID>FAULT</RequestID></Response>".into(), vec![]),
        "iam" | "sts" => (500, "text/xml", "<ErrorResponse><Error><Type>Receiver</Type><Code>ServiceFailure</Code><Message>Internal failure</Message></Error><RequestId>FAULT</RequestId></ErrorResponse>".into(), vec![]),
        _ => (500, "application/x-amz-json-1.1", "{\"__type\":\"InternalFailure\",\"message\":\"Internal failure\"}".into(), vec![("x-amzn-ErrorType", "InternalFailure".into())]),
    }
}

fn write_response(
    client: &mut TcpStream,
    status: u16,
    reason: &str,
    headers: &[(String, String)],
    body: &[u8],
    head: bool,
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    let mut has_length = false;
    for (k, v) in headers {
        let lower = k.to_ascii_lowercase();
        if lower == "connection" || lower == "transfer-encoding" || lower == "keep-alive" {
            continue;
        }
        if lower == "content-length" {
            // HEAD answers keep the length of the body they do not carry.
            if !head {
                continue;
            }
            has_length = true;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_length {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    client.write_all(out.as_bytes())?;
    if !head {
        client.write_all(body)?;
    }
    client.flush()
}

fn serve(shared: &Shared, client: TcpStream) -> std::io::Result<()> {
    // Stamped on arrival of the connection (the client opens one per request), before the
    // request is read, and the answer before it is written: a request the client sent before
    // an answer reached it can never look as if it came after.
    let arrived = Instant::now();
    client.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let mut answered = None;
    let result = {
        // Held for the whole request when serial: the next one waits for this answer.
        let _gate = shared
            .serial
            .load(Ordering::SeqCst)
            .then(|| shared.serial_gate.lock().unwrap_or_else(|e| e.into_inner()));
        std::thread::sleep(latency(shared) + held(shared, &req));
        answer(shared, &req, client, &mut answered)
    };
    shared.timeline.lock().unwrap().push(Span {
        call: format!("{} {}", req.service(), req.action()),
        arrived,
        answered: answered.unwrap_or_else(Instant::now),
    });
    result
}

/// How much longer this request is held: the delay of [`FaultProxy::hold_next`] when it is
/// the request that one waits for.
fn held(shared: &Shared, req: &Request) -> Duration {
    let mut hold = shared.hold_next.lock().unwrap();
    let call = format!("{} {}", req.service(), req.action());
    match hold.as_ref() {
        Some((pattern, delay)) if call.contains(pattern.as_str()) => {
            let delay = *delay;
            *hold = None;
            delay
        }
        _ => Duration::ZERO,
    }
}

/// How long this request is held: the latency, plus its share of the jitter.
fn latency(shared: &Shared) -> Duration {
    let base = shared.latency_us.load(Ordering::SeqCst);
    let jitter = shared.jitter_us.load(Ordering::SeqCst);
    let extra = if jitter > 0 {
        next_random(&shared.jitter_rng) % (jitter + 1)
    } else {
        0
    };
    Duration::from_micros(base + extra)
}

/// Answers one request: refused, failed, or forwarded to moto (and maybe the crash).
fn answer(
    shared: &Shared,
    req: &Request,
    mut client: TcpStream,
    answered: &mut Option<Instant>,
) -> std::io::Result<()> {
    let service = req.service();
    let head = req.method == "HEAD";

    let rejected = shared.rejected_key.lock().unwrap().clone();
    if rejected.is_some() && req.access_key() == rejected.as_deref() {
        let (status, ctype, body, extra) = unknown_key(&service);
        let mut headers = vec![("Content-Type".to_string(), ctype.to_string())];
        headers.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
        *answered = Some(Instant::now());
        return write_response(
            &mut client,
            status,
            "Forbidden",
            &headers,
            body.as_bytes(),
            false,
        );
    }

    let per_mille = shared.per_mille.load(Ordering::SeqCst);
    if per_mille > 0 {
        let r = next_random(&shared.rng);
        if r % 1000 < per_mille {
            let (status, ctype, body, extra) = if (r >> 20).is_multiple_of(2) {
                shared.throttled.fetch_add(1, Ordering::SeqCst);
                throttle(&service)
            } else {
                shared.server_errors.fetch_add(1, Ordering::SeqCst);
                server_error(&service)
            };
            let mut headers = vec![("Content-Type".to_string(), ctype.to_string())];
            headers.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
            let reason = if status == 500 {
                "Internal Server Error"
            } else if status == 503 {
                "Service Unavailable"
            } else {
                "Bad Request"
            };
            *answered = Some(Instant::now());
            return write_response(
                &mut client,
                status,
                reason,
                &headers,
                body.as_bytes(),
                false,
            );
        }
    }

    let mutating = req.mutating();
    let (status, reason, headers, body) = forward(shared, req)?;
    if mutating {
        let n = shared.mutating.fetch_add(1, Ordering::SeqCst) + 1;
        let line = format!("{service} {}", req.action());
        shared
            .log
            .lock()
            .unwrap()
            .push(format!("{n}: {line} -> {status}"));
        let counted = if line.contains(shared.kill_pattern.lock().unwrap().as_str()) {
            shared.matched.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            0
        };
        let limit = shared.kill_after.load(Ordering::SeqCst);
        if limit > 0 && counted >= limit {
            // The test sets the victim just after spawning it; wait for that moment.
            for _ in 0..500 {
                if shared.victim.lock().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if let Some(child) = shared.victim.lock().unwrap().as_mut() {
                if !shared.killed.swap(true, Ordering::SeqCst) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            // The process is gone: nobody is left to answer.
            *answered = Some(Instant::now());
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
    *answered = Some(Instant::now());
    write_response(&mut client, status, &reason, &headers, &body, head)
}

type Answer = (u16, String, Vec<(String, String)>, Vec<u8>);

fn forward(shared: &Shared, req: &Request) -> std::io::Result<Answer> {
    let mut upstream = TcpStream::connect(&shared.upstream)?;
    upstream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (k, v) in &req.headers {
        let lower = k.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "connection" | "transfer-encoding" | "content-length" | "x-moto-account-id" | "expect"
        ) {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("x-moto-account-id: {}\r\n", shared.account));
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        req.body.len()
    ));
    upstream.write_all(out.as_bytes())?;
    upstream.write_all(&req.body)?;
    upstream.flush()?;

    let mut reader = BufReader::new(upstream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let mut parts = status_line.trim_end().splitn(3, ' ');
    let _version = parts.next();
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(502);
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if req.method == "HEAD" {
        Vec::new()
    } else if chunked {
        read_chunked(&mut reader)?
    } else {
        let mut body = Vec::new();
        reader.read_to_end(&mut body)?;
        body
    };
    Ok((status, reason, headers, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(call: &str, t0: Instant, from: u64, to: u64) -> Span {
        Span {
            call: call.to_string(),
            arrived: t0 + Duration::from_millis(from),
            answered: t0 + Duration::from_millis(to),
        }
    }

    #[test]
    fn the_critical_path_is_the_longest_chain_of_answered_then_sent() {
        let t0 = Instant::now();
        // a and b together; c after a's answer; d after c's; e overlaps c (sent before any
        // answer of the second round trip).
        let spans = [
            span("a", t0, 0, 100),
            span("b", t0, 1, 120),
            span("c", t0, 101, 200),
            span("e", t0, 110, 210),
            span("d", t0, 205, 300),
        ];
        let trips = round_trips(&spans);
        assert_eq!(trips.requests, 5);
        assert_eq!(trips.critical_path, 3);
        assert_eq!(trips.path, ["a", "c", "d"]);
        assert_eq!(trips.waves, [vec!["a", "b"], vec!["c", "e"], vec!["d"]]);
        // a, b and c are in flight together at 101..120 ms.
        assert_eq!(trips.max_in_flight, 3);
    }

    #[test]
    fn no_requests_no_round_trips() {
        let trips = round_trips(&[]);
        assert_eq!((trips.requests, trips.critical_path), (0, 0));
        assert!(trips.path.is_empty() && trips.waves.is_empty());
    }
}
