//! Round trips at AWS's latency: against AWS every request costs 20-150 ms, so what a user
//! waits for is how many requests happen one after another. The proxy holds every request a
//! fixed time, each on its own thread, and records when each arrived and was answered; the
//! critical path is the longest chain of requests each sent only after the one before it was
//! answered. Counted structurally, never timed.
//!
//! These tests pin the no-op plan of the reference stack: its request count (a change that
//! adds a call shows here) and its critical path (2 round trips; `docs/engine.md` says where
//! each goes); and likewise a no-op `apply`, `apply` from nothing and `destroy`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use testkit::faults::{FaultProxy, RoundTrips};

/// Long enough that requests sent together always overlap: a debug build on a loaded machine
/// takes up to a few hundred milliseconds to send the ~30 requests of one round trip, and a
/// request sent after another's answer is counted as waiting for it.
const LATENCY: Duration = Duration::from_millis(1000);

/// The reference stack under a unique name, in an account of its own behind a proxy.
struct Reference {
    proxy: FaultProxy,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Reference {
    fn new(prefix: &str) -> Reference {
        let proxy = FaultProxy::start(&testkit::emulator().endpoint, &testkit::unique_account());
        let text = std::fs::read_to_string(testkit::workspace_root().join("stacks/orderflow.toml"))
            .unwrap();
        let re = regex::Regex::new(r#"(?m)^name = "[a-z0-9-]+""#).unwrap();
        let name = testkit::unique_name(prefix);
        let text = re.replace(&text, format!("name = \"{name}\"").as_str());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stack.toml");
        std::fs::write(&path, text.as_ref()).unwrap();
        Reference {
            proxy,
            _dir: dir,
            path,
        }
    }

    /// The reference stack naming `account` (`[stack] account`) and its account's default
    /// VPC by id: every name a read needs is in the stack file.
    fn named(prefix: &str, account: Option<&str>) -> Reference {
        let stack = Reference::new(prefix);
        let account = account.unwrap_or(&stack.proxy.account);
        let text = std::fs::read_to_string(&stack.path).unwrap();
        let text = testkit::naming_account_and_vpc(&text, account, &default_vpc(&stack.proxy));
        std::fs::write(&stack.path, text).unwrap();
        stack
    }

    /// Runs `provision {args} --stack ... --env dev` (the proxy's timeline cleared first).
    fn output(&self, args: &[&str]) -> std::process::Output {
        self.proxy.clear_timeline();
        self.proxy
            .command(env!("CARGO_BIN_EXE_provision"))
            .args(args)
            .arg("--stack")
            .arg(&self.path)
            .args(["--env", "dev"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `provision {args} --stack ... --env dev`, expecting exit `code`; returns the
    /// shape of its traffic.
    fn run(&self, args: &[&str], code: i32) -> RoundTrips {
        let out = self.output(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "provision {args:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.proxy.round_trips()
    }
}

/// The id of the default VPC of the proxy's account.
fn default_vpc(proxy: &FaultProxy) -> String {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let c = provision::aws::Clients::from_config(proxy.config_loader().load().await);
        provision::engine::default_vpc(&c).await.unwrap().unwrap()
    })
}

/// Every request with when it arrived and was answered (ms from the first), for a failure
/// message.
fn timeline(proxy: &FaultProxy) -> String {
    let spans = proxy.timeline();
    let Some(t0) = spans.first().map(|s| s.arrived) else {
        return String::new();
    };
    let ms = |t: std::time::Instant| (t - t0).as_secs_f64() * 1000.0;
    spans
        .iter()
        .map(|s| format!("{:8.1} {:8.1}  {}\n", ms(s.arrived), ms(s.answered), s.call))
        .collect()
}

/// Holds `trips` to exactly `requests` calls and at most `round_trips` one after another;
/// returns what a failure message shows (calls by service, the waves, the timeline).
fn assert_trips(
    what: &str,
    trips: &RoundTrips,
    proxy: &FaultProxy,
    requests: usize,
    round_trips: usize,
) -> String {
    let shown = format!(
        "{:?}\nwaves: {:#?}\n{}",
        by_service(trips),
        trips.waves,
        timeline(proxy)
    );
    assert_eq!(trips.requests, requests, "{what}'s calls changed: {shown}");
    assert!(
        trips.critical_path <= round_trips,
        "{what}: {} round trips one after another: {:?}\n{shown}",
        trips.critical_path,
        trips.path
    );
    shown
}

/// Calls by service, for a failure message that says what changed.
fn by_service(trips: &RoundTrips) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for call in trips.waves.iter().flatten() {
        let service = call.split(' ').next().unwrap_or("").to_string();
        *out.entry(service).or_insert(0) += 1;
    }
    out
}

#[test]
fn no_op_plan_is_2_round_trips_and_no_op_apply_3() {
    let stack = Reference::new("rtt");
    stack.run(&["apply", "--auto-approve"], 0);
    stack.proxy.set_latency(LATENCY);

    let plan = stack.run(&["plan", "--detailed-exitcode"], 0);
    // STS, the VPC, the state, the repository's image digests (ECR); subnets, route tables, S3 endpoints; then the 15 recorded
    // resources: security group 1, bucket 4, repository 2, log group 1, roles 4 x 3 + the job role's inline
    // policy, instance profile 1, compute environments 1 (one call for both) + the spot
    // launch template, queue 1, job definitions 2. The inline policy and the launch template
    // are read beside the rest by the names the state recorded: two round trips, not three.
    let shown = assert_trips("a no-op plan", &plan, &stack.proxy, 34, 2);
    // Concurrency survives the latency: the resources are read together.
    assert!(plan.max_in_flight >= 20, "{shown}");

    // Without refresh only the stack facts and the state are read: one round trip for the
    // account, the VPC, the image digests and the state, one for the VPC's subnets, route tables and endpoints.
    let state_only = stack.run(&["plan", "--refresh=false", "--detailed-exitcode"], 0);
    let shown = format!("{:#?}", state_only.waves);
    assert_eq!(state_only.requests, 7, "{shown}");
    assert_eq!(state_only.critical_path, 2, "{shown}");

    // A no-op apply is the plan with the lock around it: the lock's write beside the first
    // reads (the table and the lock's key come from the stack: nothing to ask first), and
    // the release, which waits for the plan to say there is nothing to do.
    let apply = stack.run(&["apply", "--auto-approve"], 0);
    let shown = assert_trips("a no-op apply", &apply, &stack.proxy, 36, 3);
    assert!(
        apply.waves[0].contains(&"dynamodb PutItem".to_string()),
        "the lock is taken in the first round trip: {shown}"
    );

    stack.proxy.set_latency(Duration::ZERO);
    stack.run(&["destroy", "--auto-approve"], 0);
}

#[test]
fn apply_from_nothing_takes_10_round_trips_and_destroy_11() {
    let stack = Reference::new("rtt-ad");
    stack.proxy.set_latency(LATENCY);

    // The preamble (the lock's write, refused: no table; the state and the facts; the table
    // created beside
    // the reads; the lock, whose write is also the wait for the new table), the forward phase down the compute chain (the
    // roles, the profile and the launch template at once; the service role's policy and the
    // profile's role; the environments and their wait; the queue and its wait), the one write
    // that records the end and releases the lock. Moto makes environments and queues VALID at
    // once: one poll each.
    let apply = stack.run(&["apply", "--auto-approve"], 0);
    // One of them is the bucket's first configuration write tried again: the emulator refuses
    // it with 409 OperationAborted, as S3 may a write that follows CreateBucket closely.
    let shown = assert_trips("apply", &apply, &stack.proxy, 85, 10);
    // The state is written as it goes, and its end goes with the lock's release.
    let last = apply.waves.last().unwrap();
    assert_eq!(
        last,
        &["dynamodb TransactWriteItems".to_string()],
        "{shown}"
    );

    // The plan's reads with the lock's write in the first round trip (a role's inline policies and an environment's launch template read
    // beside the rest, by the names the state recorded), then the delete phase down the same chain in reverse (the queue and
    // the environments disabled at once, the queue deleted, the environments deleted, then
    // the profile emptied beside the roles' policies, profile and roles, all from what the plan
    // read of them), the end with the release.
    let destroy = stack.run(&["destroy", "--auto-approve"], 0);
    assert_trips("destroy", &destroy, &stack.proxy, 70, 11);
}

/// A stack that names its account and VPC id needs no answer for any name: every read goes
/// out in the first round trip, beside the credentials check that confirms the account, and
/// the state, which tells only after the reads whether they guessed right (nothing to read
/// again here: the stack is applied as it stands).
#[test]
fn a_stack_naming_its_account_and_vpc_reads_everything_in_the_first_round_trip() {
    let stack = Reference::named("rtt-nm", None);
    stack.proxy.set_latency(LATENCY);

    // A first apply: as above, with the reads in the first round trip (the table created
    // once the lock's write is refused and the account is confirmed; the lock, whose write
    // is the wait for the table), then the forward phase and the end.
    let apply = stack.run(&["apply", "--auto-approve"], 0);
    let shown = assert_trips("a first apply", &apply, &stack.proxy, 86, 10);
    assert_eq!(count(&apply, "dynamodb CreateTable"), 1, "{shown}");

    let plan = stack.run(&["plan", "--detailed-exitcode"], 0);
    let shown = assert_trips("a no-op plan", &plan, &stack.proxy, 34, 1);
    assert!(plan.max_in_flight >= 30, "{shown}");

    // The plan and the release.
    let apply = stack.run(&["apply", "--auto-approve"], 0);
    assert_trips("a no-op apply", &apply, &stack.proxy, 36, 2);

    // The plan's one round trip, then the delete phase as above.
    let destroy = stack.run(&["destroy", "--auto-approve"], 0);
    assert_trips("destroy", &destroy, &stack.proxy, 68, 10);

    // From nothing again, the state table there: the reads with the lock, the graph's 4
    // levels, the waits for the environments and the queue, the end.
    let apply = stack.run(&["apply", "--auto-approve"], 0);
    assert_trips("apply from nothing", &apply, &stack.proxy, 84, 8);

    stack.proxy.set_latency(Duration::ZERO);
    stack.run(&["destroy", "--auto-approve"], 0);
}

/// The account a stack names is checked against the credentials' before anything is written:
/// the plan fails with both accounts named, and a first apply creates no state table.
#[test]
fn credentials_for_another_account_than_the_stack_names_change_nothing() {
    let stack = Reference::named("rtt-wa", Some("210987654321"));
    let out = stack.output(&["apply", "--auto-approve"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "these credentials are for AWS account {}, but",
            stack.proxy.account
        )) && stderr.contains("deploys to account 210987654321 ([stack] account in"),
        "{stderr}"
    );
    let trips = stack.proxy.round_trips();
    let writes: Vec<&String> = trips
        .waves
        .iter()
        .flatten()
        .filter(|c| {
            // `service Operation` (S3's writes show as `s3 PUT /bucket/...`): compare the
            // operation without case.
            let operation = c.split(' ').nth(1).unwrap_or("").to_ascii_lowercase();
            *c != "dynamodb PutItem"
                && (operation.starts_with("create") || operation.starts_with("put"))
        })
        .collect();
    assert!(writes.is_empty(), "{writes:?}\n{:#?}", trips.waves);
    // The lock's write was refused (no table), and none was made.
    assert_eq!(count(&trips, "dynamodb PutItem"), 1, "{:#?}", trips.waves);
    // A plan (no lock) is refused the same way.
    let out = stack.output(&["plan"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("deploys to account 210987654321"),
        "{stderr}"
    );
}

/// How many `call`s the proxy saw in the last run.
fn count(trips: &RoundTrips, call: &str) -> usize {
    trips.waves.iter().flatten().filter(|c| *c == call).count()
}

/// The lock's write and the state read go out together, so DynamoDB may answer either first.
/// The read is kept when it saw the lock item the write replaced (read first) or our own lock
/// (read after): one state Query, no second plan. When another process took and released the
/// lock between the read and the write, the plan is made again under the lock.
#[test]
fn the_state_read_beside_the_lock_is_kept_only_when_nobody_held_the_lock_between() {
    let stack = Reference::new("rtt-lk");
    stack.run(&["apply", "--auto-approve"], 0);
    let query = "dynamodb Query";

    // Held, the read answers after the write (it sees our own lock); held, the write answers
    // after the read (the read saw the item the write replaced).
    for held in [query, "dynamodb PutItem"] {
        stack.proxy.hold_next(held, Duration::from_millis(1500));
        let apply = stack.run(&["apply", "--auto-approve"], 0);
        assert_eq!(count(&apply, query), 1, "{held} held: {:#?}", apply.waves);
        assert_eq!(apply.requests, 36, "{held} held: {:#?}", apply.waves);
    }

    // Between the read and the write, `state rm` (of nothing) takes and releases the lock:
    // the read is not trusted, and the state is read again under the lock.
    stack
        .proxy
        .hold_next("dynamodb PutItem", Duration::from_secs(6));
    let apply = std::thread::scope(|scope| {
        let apply = scope.spawn(|| stack.run(&["apply", "--auto-approve"], 0));
        std::thread::sleep(Duration::from_millis(2000));
        let out = stack
            .proxy
            .command(env!("CARGO_BIN_EXE_provision"))
            .args(["state", "rm", "queue.nothing", "--stack"])
            .arg(&stack.path)
            .args(["--env", "dev"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("is not in the state"), "{stderr}");
        apply.join().unwrap()
    });
    // The apply's read, `state rm`'s, the apply's read again.
    assert_eq!(count(&apply, query), 3, "{:#?}", apply.waves);
}

#[test]
fn jittered_latency_holds_every_request_and_keeps_them_concurrent() {
    let proxy = FaultProxy::start(&testkit::emulator().endpoint, &testkit::unique_account());
    proxy.set_jittered_latency(Duration::from_millis(100), Duration::from_millis(50), 7);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                // Any answer will do (moto's for an unknown path): the proxy times it.
                let addr = proxy.endpoint.trim_start_matches("http://");
                let mut conn = TcpStream::connect(addr).unwrap();
                conn.write_all(
                    b"GET /latency-probe HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                )
                .unwrap();
                let mut answer = String::new();
                conn.read_to_string(&mut answer).unwrap();
                assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
            });
        }
    });
    let trips = proxy.round_trips();
    assert_eq!(trips.requests, 8);
    // Sent together, answered together: one round trip, all eight in flight at once.
    assert_eq!(trips.critical_path, 1, "{trips:?}");
    assert_eq!(trips.max_in_flight, 8, "{trips:?}");
    for span in proxy.timeline() {
        let held = span.answered - span.arrived;
        assert!(
            held >= Duration::from_millis(100),
            "a request was answered before its latency: {held:?}"
        );
    }
}
