//! `make bench-latency`: the reference stack's plan, apply and destroy with every request held
//! D ms, as AWS's latency holds it, writing `bench/latency.md`.
//!
//! Each command runs against moto through the test proxy (`testkit::faults`), which holds every
//! request D ms on its own thread and records when each arrived and was answered. For each:
//! wall time, request count, and the critical path in round trips two ways: counted (the
//! longest chain of requests each sent after the previous one was answered) and wall / D. Side
//! by side in the same run: the serial bound (the same no-op plan with the proxy answering one
//! request at a time: every resource read one after another) and the lower bound (the
//! dependency depth of the stack's graph).
//!
//! Usage: `bench_latency [PROVISION_BINARY]` (default `target/debug/provision`: round trips do
//! not depend on the build profile, and at 50 ms a round trip the tool's own CPU time is noise).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use provision::engine::{graph, Node};
use provision::resources::Address;
use testkit::faults::{FaultProxy, RoundTrips};

/// One command's measurement.
struct Run {
    what: &'static str,
    wall: Duration,
    trips: RoundTrips,
}

/// The reference stack under a unique name, behind a proxy of its own.
struct Bench {
    proxy: FaultProxy,
    binary: PathBuf,
    path: PathBuf,
    delay: Duration,
}

impl Bench {
    /// The reference stack in an account of its own, every request held `delay`.
    fn new(binary: &Path, dir: &Path, delay: Duration, named: bool) -> Bench {
        let proxy = FaultProxy::start(&testkit::emulator().endpoint, &testkit::unique_account());
        let name = testkit::unique_name("lat");
        let path = stack_copy(dir, &name, named.then_some(&proxy));
        proxy.set_latency(delay);
        Bench {
            proxy,
            binary: binary.to_path_buf(),
            path,
            delay,
        }
    }

    fn run(&self, what: &'static str, args: &[&str]) -> Run {
        self.proxy.clear_timeline();
        let start = Instant::now();
        let out = self
            .proxy
            .command(&self.binary)
            .args(args)
            .arg("--stack")
            .arg(&self.path)
            .args(["--env", "dev"])
            .stdin(Stdio::null())
            .output()
            .expect("run provision");
        let wall = start.elapsed();
        assert!(
            out.status.success(),
            "provision {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Run {
            what,
            wall,
            trips: self.proxy.round_trips(),
        }
    }

    /// A table row; `base` is the same command's wall time without latency (process start,
    /// the tool's CPU and moto's own time, which wall / D includes).
    fn row(&self, run: &Run, base: Duration, serial: bool, note: &str) -> String {
        let ms = run.wall.as_secs_f64() * 1000.0;
        let d = self.delay.as_secs_f64() * 1000.0;
        // Serialised, requests queue at the proxy: chains and concurrency are its own doing.
        let (trips, in_flight) = if serial {
            ("-".to_string(), "1".to_string())
        } else {
            (
                run.trips.critical_path.to_string(),
                run.trips.max_in_flight.to_string(),
            )
        };
        format!(
            "| {} | {:.0} | {:.0} | {} | {trips} | {:.1} | {in_flight} | {note} |",
            run.what,
            ms,
            base.as_secs_f64() * 1000.0,
            run.trips.requests,
            ms / d,
        )
    }
}

/// The longest chain of dependencies, in resources: no apply can create the stack in fewer
/// steps one after another.
fn depth(nodes: &[Node]) -> usize {
    let mut depth: BTreeMap<&Address, usize> = BTreeMap::new();
    // Dependencies first: each node's deps are already measured.
    for node in nodes {
        let d = 1 + node
            .deps
            .iter()
            .filter_map(|dep| depth.get(dep))
            .max()
            .unwrap_or(&0);
        depth.insert(&node.address, d);
    }
    depth.values().copied().max().unwrap_or(0)
}

/// What each round trip of the critical path holds, by service and call.
fn waves(trips: &RoundTrips) -> String {
    let mut out = String::new();
    for (i, wave) in trips.waves.iter().enumerate() {
        let mut calls: BTreeMap<&str, usize> = BTreeMap::new();
        for call in wave {
            // S3's REST calls name the bucket: keep method and sub-resource only.
            let short = match call.split_once(' ') {
                Some(("s3", rest)) => rest.split('/').next().unwrap_or(rest),
                _ => call.as_str(),
            };
            let short = if call.starts_with("s3 ") {
                match call.split_once('?') {
                    Some((_, q)) => q,
                    None => short,
                }
            } else {
                short
            };
            *calls.entry(short).or_default() += 1;
        }
        let list: Vec<String> = calls
            .iter()
            .map(|(c, n)| {
                if *n > 1 {
                    format!("{c} x{n}")
                } else {
                    c.to_string()
                }
            })
            .collect();
        let _ = writeln!(out, "{}. {}", i + 1, list.join(", "));
    }
    out
}

/// The reference stack under `name`; `named`: naming the proxy's account and default VPC (see
/// `testkit::naming_account_and_vpc`).
fn stack_copy(dir: &Path, name: &str, named: Option<&FaultProxy>) -> PathBuf {
    let root = testkit::workspace_root();
    let text = std::fs::read_to_string(root.join("stacks/orderflow.toml")).unwrap();
    let mut text = text.replace("name = \"orderflow\"", &format!("name = \"{name}\""));
    if let Some(proxy) = named {
        let vpc = tokio::runtime::Runtime::new().unwrap().block_on(async {
            let c = provision::aws::Clients::from_config(proxy.config_loader().load().await);
            provision::engine::default_vpc(&c).await.unwrap().unwrap()
        });
        text = testkit::naming_account_and_vpc(&text, &proxy.account, &vpc);
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn main() {
    let root = testkit::workspace_root();
    let binary = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/debug/provision"));
    let dir = tempfile::tempdir().unwrap();
    let stack = provision::stack::load(&root.join("stacks/orderflow.toml"), Some("dev"), &[])
        .unwrap_or_else(|d| panic!("{d}"));
    let nodes = graph(&stack);
    let lower = depth(&nodes);

    let mut report = String::new();
    let _ = writeln!(
        report,
        "# Round trips at AWS latency ({}, {} cores, load {}, {})",
        chrono::Utc::now().format("%Y-%m-%dT%H:%MZ"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        binary.display()
    );
    let _ = writeln!(
        report,
        "\nThe reference stack (`stacks/orderflow.toml`, env dev: {} resources, dependency depth {lower}) \
         against moto, every request held D ms by the test proxy, each on its own thread. \
         `round trips (counted)` is the critical path the proxy counts (the longest chain of requests each \
         sent after the previous one was answered); `wall / D` counts by the clock, and so includes process start, the \
         tool's CPU (a debug build on a shared machine) and moto's own time, which the same command takes at \
         D = 0 (its column). The serial bound answers one request at a time: each of its requests is a round trip. \
         Rows marked `named` run the same stack naming its account (`[stack] account`) and its VPC by id: \
         every name a read needs is in the file, so every read goes out in the first round trip.",
        nodes.len()
    );
    let mut details = String::new();
    // Without latency first: the base each row's clock count subtracts.
    let mut base: Vec<Duration> = Vec::new();
    for ms in [0u64, 50, 100] {
        let delay = Duration::from_millis(ms);
        let bench = Bench::new(&binary, dir.path(), delay, false);
        let apply = bench.run(
            "`apply` from nothing, first in its account (state table created)",
            &["apply", "--auto-approve"],
        );
        let plan = bench.run("no-op `plan`", &["plan", "--detailed-exitcode"]);
        let state_only = bench.run(
            "`plan --refresh=false`",
            &["plan", "--refresh=false", "--detailed-exitcode"],
        );
        let noop_apply = bench.run("no-op `apply`", &["apply", "--auto-approve"]);
        bench.proxy.set_serial(true);
        let serial = bench.run(
            "serial bound: the no-op `plan`, one request at a time",
            &["plan", "--detailed-exitcode"],
        );
        bench.proxy.set_serial(false);
        let destroy = bench.run("`destroy`", &["destroy", "--auto-approve"]);
        let again = bench.run(
            "`apply` from nothing (state table there)",
            &["apply", "--auto-approve"],
        );
        bench.run("`destroy`", &["destroy", "--auto-approve"]);

        // The same stack naming its account and VPC id: no name waits for an answer.
        let named = Bench::new(&binary, dir.path(), delay, true);
        let named_first = named.run(
            "named: `apply` from nothing, first in its account",
            &["apply", "--auto-approve"],
        );
        let named_plan = named.run("named: no-op `plan`", &["plan", "--detailed-exitcode"]);
        let named_noop = named.run("named: no-op `apply`", &["apply", "--auto-approve"]);
        let named_destroy = named.run("named: `destroy`", &["destroy", "--auto-approve"]);
        let named_again = named.run(
            "named: `apply` from nothing (state table there)",
            &["apply", "--auto-approve"],
        );
        named.run("named: `destroy`", &["destroy", "--auto-approve"]);

        let lower_note = format!("lower bound: depth {lower} ({} ms)", lower as u64 * ms);
        let apply_target = format!(
            "{lower_note}; target: depth + 2 = {}, plus the waits for VALID (environments, queue): {}",
            lower + 2,
            lower + 4
        );
        let destroy_target = format!(
            "{lower_note}; target: depth + 2 = {}, plus the waits (disabled, queue gone, environments gone): {}, plus the disable Batch requires first",
            lower + 2,
            lower + 5
        );
        let first_note =
            "plus the state table's creation: the lock's refused write, the table, the lock once ACTIVE"
                .to_string();
        let lines = [
            (&plan, "target: 3".to_string()),
            (&state_only, String::new()),
            (&apply, first_note.clone()),
            (&again, apply_target.clone()),
            (&noop_apply, String::new()),
            (&destroy, destroy_target.clone()),
            (
                &serial,
                format!(
                    "{:.1}x the no-op plan",
                    serial.wall.as_secs_f64() / plan.wall.as_secs_f64()
                ),
            ),
            (&named_plan, "target: 3".to_string()),
            (&named_first, first_note),
            (&named_again, apply_target),
            (&named_noop, String::new()),
            (&named_destroy, destroy_target),
        ];
        if ms == 0 {
            base = lines.iter().map(|(r, _)| r.wall).collect();
            continue;
        }
        let _ = writeln!(report, "\n## D = {ms} ms\n");
        let _ = writeln!(
            report,
            "| command | wall ms | wall ms at D = 0 | requests | round trips (counted) | wall / D | most in flight | bound |"
        );
        let _ = writeln!(report, "|---|---|---|---|---|---|---|---|");
        for (i, (run, note)) in lines.iter().enumerate() {
            let serial = std::ptr::eq(*run, &serial);
            let _ = writeln!(report, "{}", bench.row(run, base[i], serial, note));
        }
        if ms == 100 {
            for (run, _) in lines.iter().filter(|(r, _)| !std::ptr::eq(*r, &serial)) {
                let _ = writeln!(
                    details,
                    "\n### {} ({} round trips)\n\n{}",
                    run.what,
                    run.trips.critical_path,
                    waves(&run.trips)
                );
            }
        }
    }
    let _ = writeln!(
        report,
        "\n## Where each round trip goes (D = 100 ms)\n\nEach request placed at the depth of the longest chain \
         that ends with it: the requests of round trip N were sent after N - 1 answers, one after another.\n{details}"
    );
    let out = root.join("bench/latency.md");
    std::fs::write(&out, &report).unwrap();
    print!("{report}");
    eprintln!("wrote {}", out.display());
}
