//! `provision ui` as a user runs it: the real binary serving the dashboard of an applied stack
//! on moto. The JSON endpoints are checked over plain HTTP; the pages in a headless chromium
//! driven over WebDriver, with one screenshot per page under `target/tmp/ui-screenshots/`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_provision");

/// An applied copy of the reference stack with jobs, a log and results, shared by the tests.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub prefix: String,
    pub prepare_id: String,
    pub array_id: String,
    pub bucket: String,
}

fn provision(args: &[&str], stack: &std::path::Path) -> Command {
    let mut cmd = testkit::emulator().command(BIN);
    cmd.args(args)
        .arg("--stack")
        .arg(stack)
        .args(["--env", "dev"]);
    cmd.env_remove("PROVISION_STACK")
        .env_remove("PROVISION_ENV");
    cmd
}

fn ok(mut cmd: Command) -> String {
    let out = cmd.output().expect("run provision");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{cmd:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The fixture, set up once (on a thread of its own: tests run on different runtimes).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        std::thread::spawn(|| tokio::runtime::Runtime::new().unwrap().block_on(set_up()))
            .join()
            .expect("the dashboard's fixture")
    })
}

/// Training summary of two models over three epochs, as `runtime train` writes it.
fn summary() -> Value {
    let epochs = |loss: [f64; 3], acc: [f64; 3]| {
        (0..3)
            .map(|i| {
                json!({"epoch": i + 1, "train_loss": loss[i] + 0.05, "train_accuracy": acc[i] - 0.02,
                       "val_loss": loss[i], "val_accuracy": acc[i], "samples_per_s": 1000.0 + i as f64,
                       "seconds": 1.5})
            })
            .collect::<Vec<_>>()
    };
    json!({"models": {
        "cnn_lstm": {"epochs": epochs([1.05, 0.98, 1.01], [0.41, 0.47, 0.45]), "best_epoch": 2,
                     "test_loss": 0.99, "test_accuracy": 0.46, "confusion_matrix": [[1,0,0],[0,1,0],[0,0,1]],
                     "parameters": 26000, "device": "cpu"},
        "gru": {"epochs": epochs([1.08, 1.02, 0.97], [0.38, 0.42, 0.49]), "best_epoch": 3,
                "test_loss": 0.98, "test_accuracy": 0.48, "confusion_matrix": [[1,0,0],[0,1,0],[0,0,1]],
                "parameters": 14000, "device": "cpu"}
    }})
}

async fn set_up() -> Fixture {
    let emulator = testkit::emulator();
    let name = testkit::unique_name("ui");
    let text =
        std::fs::read_to_string(testkit::workspace_root().join("stacks/orderflow.toml")).unwrap();
    let text = text
        .replace("name = \"orderflow\"", &format!("name = \"{name}\""))
        .replace("s3_endpoint = true", "s3_endpoint = false");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.toml");
    std::fs::write(&path, text).unwrap();
    let prefix = format!("{name}-dev");

    ok(provision(&["apply", "--auto-approve"], &path));
    let prepare_id = ok(provision(&["submit", "prepare"], &path))
        .trim()
        .to_string();
    let array_id = ok(provision(&["submit", "train", "--array-size", "3"], &path))
        .trim()
        .to_string();
    let outputs: Value =
        serde_json::from_str(&ok(provision(&["output", "--json"], &path))).unwrap();
    let bucket = outputs["buckets"]["data"].as_str().unwrap().to_string();

    let clients = provision::aws::Clients::from_config(emulator.config_loader().load().await);
    // The prepare job's log, in the stream Batch names for it.
    let report = clients
        .batch()
        .describe_jobs()
        .jobs(&prepare_id)
        .send()
        .await
        .unwrap();
    let stream = provision::jobs::describe::log_stream(&report.jobs()[0])
        .expect("moto names a log stream")
        .to_string();
    let group = format!("/aws/batch/{prefix}");
    clients
        .logs()
        .create_log_stream()
        .log_group_name(&group)
        .log_stream_name(&stream)
        .send()
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let events = ["reading s3://raw", "prepared 2 datasets"].map(|m| {
        aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
            .timestamp(now)
            .message(m)
            .build()
            .unwrap()
    });
    clients
        .logs()
        .put_log_events()
        .log_group_name(&group)
        .log_stream_name(&stream)
        .set_log_events(Some(events.to_vec()))
        .send()
        .await
        .unwrap();

    // What prepare and train leave in the bucket.
    let dataset = "instrument=72089/start_date=2024-01-01/end_date=2024-01-02";
    let config = json!({"rows": 1000, "lookback": 32, "horizon": 10, "created_at": "2024-01-03T00:00:00Z",
        "splits": {"train": {"rows": 700, "class_counts": {"0": 200, "1": 300, "2": 200}},
                   "validation": {"rows": 150, "class_counts": {"0": 50, "1": 50, "2": 50}},
                   "test": {"rows": 150, "class_counts": {"0": 40, "1": 70, "2": 40}}}});
    let objects = [
        (
            format!("ml/models/{dataset}/training_summary.json"),
            serde_json::to_vec(&summary()).unwrap(),
        ),
        (
            format!("ml/datasets/{dataset}/preparation_config.json"),
            serde_json::to_vec(&config).unwrap(),
        ),
        (
            format!("ml/datasets/{dataset}/train.parquet"),
            vec![0; 2048],
        ),
    ];
    for (key, body) in objects {
        clients
            .s3()
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .unwrap();
    }
    // Drift: the queue's priority changed outside the tool.
    clients
        .batch()
        .update_job_queue()
        .job_queue(format!("{prefix}-main"))
        .priority(7)
        .send()
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        path,
        prefix,
        prepare_id,
        array_id,
        bucket,
    }
}

/// A running `provision ui`, stopped when dropped (also when a test panics).
pub struct Ui {
    child: Child,
    pub url: String,
}

impl Ui {
    pub fn start(mut cmd: Command) -> Ui {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start provision ui");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().trim_end_matches('/').to_string();
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "provision ui prints its URL first: {line:?}"
        );
        Ui { child, url }
    }

    pub fn for_fixture(f: &Fixture) -> Ui {
        Ui::start(provision(&["ui", "--port", "0"], &f.path))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = http("GET", &format!("{}{path}", self.url));
        let json =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"));
        (status, json)
    }

    pub fn get_ok(&self, path: &str) -> Value {
        let (status, json) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {json}");
        json
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The data a page's HTML carries for its first draw (`<script id="boot">`).
pub fn boot(html: &str) -> Value {
    let start = html
        .find("id=\"boot\">")
        .unwrap_or_else(|| panic!("no boot data in {html}"))
        + "id=\"boot\">".len();
    let len = html[start..].find("</script>").unwrap();
    serde_json::from_str(&html[start..start + len]).unwrap()
}

/// One HTTP/1.0 request (no chunked answers, the connection closes after the body).
pub fn http(method: &str, url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(stream, "{method} /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

#[test]
fn ui_json_endpoints_answer_from_the_clis_code() {
    let f = fixture();
    let ui = Ui::for_fixture(f);

    // A page is one request: its style, script and first data are inline.
    let (status, page) = http("GET", &format!("{}/jobs/{}", ui.url, f.array_id));
    assert_eq!(status, 200);
    assert!(page.contains("<style>") && page.contains("function jobsPage"));
    assert!(!page.contains("src=\"/") && !page.contains("href=\"/assets"));
    assert_eq!(
        boot(&page)["overview"]["stack"],
        f.prefix.trim_end_matches("-dev")
    );
    assert!(
        boot(&page).get("stack").is_none(),
        "only the stack page reads the stack"
    );

    let overview = ui.get_ok("/api/overview");
    assert_eq!(overview["env"], "dev");
    assert_eq!(overview["gpu"], false);
    assert_eq!(overview["queues"], json!(["main"]));

    // The graph: the plan's resources; the queue changed outside the tool shows as drift.
    let graph = ui.get_ok("/api/stack");
    // One reading answers every page until it is FRESH s old; `fresh` asks for a new one.
    assert!(
        graph["read_at"].is_string() && graph["took_ms"].is_u64(),
        "{graph}"
    );
    assert_eq!(graph["poll_after_ms"], 30_000);
    assert_eq!(ui.get_ok("/api/stack")["read_at"], graph["read_at"]);
    let again = ui.get_ok("/api/stack?fresh=1");
    assert!(
        again["read_at"].as_str() > graph["read_at"].as_str(),
        "{again}"
    );
    // The stack page carries that reading (and the stack file's resources) in its HTML.
    let (status, page) = http("GET", &format!("{}/", ui.url));
    assert_eq!(status, 200);
    let known = &boot(&page)["stack"];
    assert_eq!(known["fresh"], true);
    assert_eq!(known["reading"]["read_at"], again["read_at"]);
    assert_eq!(known["reading"]["nodes"], again["nodes"]);
    assert!(known["failed"].is_null());
    let structure = known["structure"].as_array().unwrap();
    assert_eq!(structure.len(), again["nodes"].as_array().unwrap().len());
    assert!(structure.iter().any(|n| n["address"] == "queue.main"
        && n["deps"] == json!(["compute.spot", "compute.ondemand"])));
    assert_eq!(graph["gpu"], false);
    assert_eq!(graph["image_type"], "ECS_AL2023");
    let nodes = graph["nodes"].as_array().unwrap();
    let node = |address: &str| {
        nodes
            .iter()
            .find(|n| n["address"] == address)
            .unwrap_or_else(|| panic!("{address} in {nodes:?}"))
    };
    assert_eq!(node("queue.main")["action"], "update");
    assert_eq!(node("queue.main")["drift"], true);
    assert_eq!(
        node("queue.main")["deps"],
        json!(["compute.spot", "compute.ondemand"])
    );
    assert_eq!(node("compute.spot")["action"], "no-op");
    assert_eq!(node("compute.spot")["live"]["image_type"], "ECS_AL2023");
    assert_eq!(node("bucket.data")["name"], f.bucket);
    assert!(nodes.len() >= 12, "{}", nodes.len());
    assert_eq!(
        graph["summary"],
        json!({"add": 0, "change": 1, "destroy": 0})
    );

    // The jobs table, as `provision jobs --json` lists it.
    let jobs = ui.get_ok("/api/jobs");
    let list = jobs["jobs"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{jobs}");
    let array = list.iter().find(|j| j["job_id"] == f.array_id).unwrap();
    assert_eq!(array["array"]["size"], 3);
    assert_eq!(array["array"]["by_status"], json!({"SUCCEEDED": 3}));
    assert!(jobs["poll_after_ms"].as_u64().unwrap() >= 5000);
    assert_eq!(jobs["calls"], 7 + 1);
    let again = ui.get_ok("/api/jobs");
    assert_eq!(
        again["cached"], true,
        "a second page within the interval costs no request"
    );
    let filtered = ui.get_ok("/api/jobs?status=failed&queue=main&since=1d");
    assert_eq!(filtered["jobs"], json!([]));
    let (status, bad) = ui.get("/api/jobs?status=done");
    assert_eq!(status, 400);
    assert!(
        bad["error"].as_str().unwrap().contains("SUCCEEDED, FAILED"),
        "{bad}"
    );
    let (status, bad) = ui.get("/api/jobs?queue=gpu");
    assert_eq!(status, 400);
    assert_eq!(
        bad["error"],
        "no queue `gpu` in the stack; its queues: main"
    );

    let children = ui.get_ok(&format!("/api/jobs/{}/children", f.array_id));
    let indexes: Vec<i64> = children["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_i64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2]);

    let job = ui.get_ok(&format!("/api/jobs/{}", f.prepare_id));
    assert_eq!(job["job"]["status"], "SUCCEEDED");
    assert_eq!(job["queue"], format!("{}-main", f.prefix));
    assert_eq!(job["command"], json!(["runtime", "prepare"]));
    let env = job["environment"].as_array().unwrap();
    assert!(env
        .iter()
        .any(|e| e["name"] == "CHECKPOINT_INTERVAL" && e["value"] == "50"));
    let (status, missing) = ui.get("/api/jobs/no-such-job");
    assert_eq!(status, 502);
    assert!(
        missing["error"].as_str().unwrap().contains("no such job"),
        "{missing}"
    );

    let logs = ui.get_ok(&format!("/api/jobs/{}/logs", f.prepare_id));
    let lines: Vec<&str> = logs["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["reading s3://raw", "prepared 2 datasets"]);
    assert_eq!(logs["group"], format!("/aws/batch/{}", f.prefix));
    let token = logs["next_token"].as_str().unwrap();
    let rest = ui.get_ok(&format!(
        "/api/jobs/{}/logs?token={}",
        f.prepare_id,
        token
            .replace('/', "%2F")
            .replace('+', "%2B")
            .replace('=', "%3D")
    ));
    assert_eq!(
        rest["events"],
        json!([]),
        "following from the token repeats nothing"
    );
    assert_eq!(rest["at_end"], true);
    let parent_log = ui.get_ok(&format!("/api/jobs/{}/logs", f.array_id));
    assert!(parent_log["note"].as_str().unwrap().contains("each child"));

    let results = ui.get_ok("/api/results");
    let models = results["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    let cnn = models.iter().find(|m| m["model"] == "cnn_lstm").unwrap();
    assert_eq!(
        cnn["dataset"],
        "instrument=72089/start_date=2024-01-01/end_date=2024-01-02"
    );
    assert_eq!(cnn["best_epoch"], 2);
    assert_eq!(cnn["best_val_loss"], 0.98);
    assert_eq!(cnn["test_accuracy"], 0.46);
    assert_eq!(cnn["epochs"].as_array().unwrap().len(), 3);
    let datasets = results["datasets"].as_array().unwrap();
    assert_eq!(datasets.len(), 1);
    assert_eq!(datasets[0]["splits"]["train"]["rows"], 700);
    assert_eq!(
        datasets[0]["files"],
        json!({"preparation_config.json": datasets[0]["files"]["preparation_config.json"], "train.parquet": 2048})
    );

    // The estimate `provision cost` makes, with what the buckets hold now.
    let cost = ui.get_ok("/api/cost");
    assert_eq!(cost["s3_measured"], true);
    assert!(cost["storage"]["s3_gb"].as_f64().unwrap() > 0.0, "{cost}");
    assert_eq!(cost["compute"].as_array().unwrap().len(), 2);
    assert!(cost["full_scale_per_hour"].as_f64().unwrap() > 0.0);
    assert_eq!(cost["idle_per_hour"], 0.0);

    // Read-only: nothing but GET is routed.
    for path in ["/api/jobs", "/api/stack", "/"] {
        assert_eq!(
            http("POST", &format!("{}{path}", ui.url)).0,
            405,
            "POST {path}"
        );
    }
    assert_eq!(http("DELETE", &format!("{}/api/jobs/x", ui.url)).0, 405);
    assert_eq!(http("GET", &format!("{}/nope", ui.url)).0, 404);
}

#[test]
fn ui_refuses_a_taken_port_and_a_bad_stack_before_any_aws_call() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::copy(
        testkit::workspace_root().join("stacks/orderflow.toml"),
        &good,
    )
    .unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[stack]\nname = \"ok-name\"\nregion = \"us-east-1\"\n[queues.main]\npriority = \"high\"\n",
    )
    .unwrap();

    // Every AWS request would pass this proxy and be counted.
    let proxy =
        testkit::faults::FaultProxy::start(&testkit::emulator().endpoint, crate::joblist::ACCOUNT);
    let run = |stack: &std::path::Path, args: &[&str]| {
        let mut cmd = proxy.command(BIN);
        cmd.arg("ui").arg("--stack").arg(stack).args(args);
        let start = Instant::now();
        let out = cmd.output().unwrap();
        assert!(start.elapsed() < Duration::from_secs(10));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
            out.stdout,
        )
    };
    let (code, stderr, stdout) = run(&good, &["--port", &port]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!(
            "error: port {port} on 127.0.0.1 is in use: pick another with --port"
        )),
        "{stderr}"
    );
    assert!(stdout.is_empty());
    let (code, stderr, stdout) = run(&bad, &["--port", "0"]);
    assert_eq!(code, Some(1));
    // Every problem, each at its file:line:column.
    assert!(
        stderr.contains("bad.toml:5:12: error: expected an integer")
            && stderr.contains("bad.toml:4:1: error: missing required key `compute`"),
        "{stderr}"
    );
    assert!(stdout.is_empty());
    assert_eq!(proxy.counts().requests, 0, "no AWS call before serving");
}

#[test]
fn ui_answers_with_an_error_when_the_emulator_stops_and_keeps_serving() {
    let emulator = testkit::start_with_env(&[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.toml");
    let name = testkit::unique_name("uistop");
    let text = std::fs::read_to_string(testkit::workspace_root().join("stacks/orderflow.toml"))
        .unwrap()
        .replace("name = \"orderflow\"", &format!("name = \"{name}\""));
    std::fs::write(&path, text).unwrap();
    let mut cmd = testkit::emulator().command(BIN);
    cmd.env("AWS_ENDPOINT_URL", &emulator.endpoint)
        .args(["ui", "--port", "0", "--stack"])
        .arg(&path);
    let mut ui = Ui::start(cmd);
    // Up: the stack is not applied, so its queue is missing; the page says which command fixes it.
    let (status, body) = ui.get("/api/jobs");
    assert_eq!(status, 502);
    assert!(
        body["error"].as_str().unwrap().contains("provision apply"),
        "{body}"
    );
    let graph = ui.get_ok("/api/stack");
    assert!(graph["summary"]["add"].as_u64().unwrap() >= 12, "{graph}");

    let endpoint = emulator.endpoint.clone();
    drop(emulator);
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let (status, body) = ui.get("/api/jobs");
    assert!(matches!(status, 502 | 504), "{status} {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(25),
        "answered in {:?}",
        start.elapsed()
    );
    // A new reading of the stack says what is wrong in one sentence.
    let unreachable = format!("cannot reach AWS at {endpoint}");
    let (status, body) = ui.get("/api/stack?fresh=1");
    assert_eq!(status, 502, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("reading the stack: ") && error.contains(&unreachable),
        "{body}"
    );
    // Still serving: the pages and what needs no AWS; the stack page draws the last reading
    // and says why it is not the latest.
    assert_eq!(http("GET", &format!("{}/jobs", ui.url)).0, 200);
    assert_eq!(ui.get_ok("/api/overview")["stack"], name);
    let (status, page) = http("GET", &format!("{}/", ui.url));
    assert_eq!(status, 200);
    let known = &boot(&page)["stack"];
    assert_eq!(known["reading"]["read_at"], graph["read_at"]);
    assert!(
        known["failed"].as_str().unwrap().contains(&unreachable),
        "{known}"
    );
    assert!(ui.alive());

    if let Some(browser) = browser::Browser::start() {
        let url = ui.url.clone();
        browser.run(|client| async move {
            client.goto(&format!("{url}/jobs")).await?;
            let banner = browser::wait_visible(&client, "#error").await?;
            let text = banner.text().await?;
            assert!(!text.is_empty());
            browser::screenshot(&client, "error").await?;
            client.goto(&format!("{url}/")).await?;
            browser::wait_visible(&client, "#graph.live svg g.node").await?;
            browser::wait_text(&client, "#error", "cannot reach AWS").await?;
            browser::wait_text(&client, "#stack-read", "the latest read failed").await?;
            browser::screenshot(&client, "stack-error").await?;
            Ok(())
        });
    }
}

#[test]
fn ui_reads_the_stack_once_for_every_page_and_gives_up_on_a_silent_endpoint() {
    let f = fixture();
    let proxy =
        testkit::faults::FaultProxy::start(&testkit::emulator().endpoint, crate::joblist::ACCOUNT);
    let requests = || proxy.counts().requests;
    let mut cmd = proxy.command(BIN);
    cmd.args(["ui", "--port", "0", "--env", "dev", "--stack"])
        .arg(&f.path)
        .env_remove("PROVISION_STACK")
        .env_remove("PROVISION_ENV");
    let ui = Ui::start(cmd);

    // The server reads the stack as it starts, before any page asks.
    let start = Instant::now();
    while requests() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no reading at start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = ui.get_ok("/api/stack");
    // Pages opened meanwhile share that reading: no request of their own.
    let before = requests();
    let read_ats = |paths: Vec<&'static str>| {
        let url = ui.url.clone();
        let answers: Vec<_> = paths
            .into_iter()
            .map(|path| {
                let url = url.clone();
                std::thread::spawn(move || http("GET", &format!("{url}{path}")))
            })
            .collect();
        let mut read_ats: Vec<String> = answers
            .into_iter()
            .map(|a| {
                let (status, body) = a.join().unwrap();
                assert_eq!(status, 200, "{body}");
                let body: Value = serde_json::from_str(&body).unwrap();
                body["read_at"].as_str().unwrap().to_string()
            })
            .collect();
        read_ats.sort();
        read_ats.dedup();
        read_ats
    };
    assert_eq!(
        read_ats(vec!["/api/stack"; 8]),
        [first["read_at"].as_str().unwrap()]
    );
    assert_eq!(requests(), before);
    // What one reading costs; pages that all ask for a new one at once share at most two
    // (a page that asked after one started waits for the next).
    let before = requests();
    ui.get_ok("/api/stack?fresh=1");
    let one = requests() - before;
    assert!(one > 0);
    let before = requests();
    assert!(read_ats(vec!["/api/stack?fresh=1"; 6]).len() <= 2);
    assert!(
        requests() - before <= 2 * one,
        "{} > 2 × {one}",
        requests() - before
    );

    // AWS stops answering (connections accepted, no answer ever): each endpoint answers with
    // an error when its time is up instead of hanging on the SDK's retries, and pages that
    // asked meanwhile get that answer too instead of waiting as long again, one after another.
    proxy.set_latency(Duration::from_secs(3600));
    for path in ["/api/stack?fresh=1", "/api/jobs"] {
        let pages: Vec<_> = (0..3)
            .map(|_| {
                let url = format!("{}{path}", ui.url);
                std::thread::spawn(move || {
                    let start = Instant::now();
                    let (status, body) = http("GET", &url);
                    (status, body, start.elapsed())
                })
            })
            .collect();
        for page in pages {
            let (status, body, took) = page.join().unwrap();
            assert_eq!(status, 504, "{path}: {body}");
            assert!(
                body.contains("AWS did not answer within 10 s (is the endpoint up?"),
                "{body}"
            );
            // Well under two timeouts back to back.
            assert!(took < Duration::from_secs(18), "{path}: {took:?}");
        }
    }
    // The stack page still answers at once, with the last reading and why it is not newer.
    let (status, page) = http("GET", &format!("{}/", ui.url));
    assert_eq!(status, 200);
    let known = &boot(&page)["stack"];
    assert!(known["reading"]["nodes"].as_array().unwrap().len() >= 12);
    assert_eq!(known["fresh"], false);
    assert!(
        known["failed"].as_str().unwrap().contains("did not answer"),
        "{known}"
    );
}

#[test]
fn ui_pages_in_a_headless_browser() {
    let Some(browser) = browser::Browser::start() else {
        return;
    };
    let f = fixture();
    let ui = Ui::for_fixture(f);
    let url = ui.url.clone();
    let prepare = f.prepare_id.clone();
    browser.run(|client| async move {
        use fantoccini::Locator::Css;
        // The stack graph: a box per resource, the drifted queue marked.
        client.goto(&format!("{url}/")).await?;
        browser::wait_visible(&client, "#graph.live svg g.node").await?;
        let boxes = client.find_all(Css("#graph svg g.node")).await?;
        assert!(boxes.len() >= 12, "{} boxes", boxes.len());
        client
            .find(Css("g.node.drifted[data-address='queue.main']"))
            .await?;
        let gpu = client.find(Css("#gpu-switch")).await?.text().await?;
        assert!(gpu.contains("gpu = false"), "{gpu}");
        browser::screenshot(&client, "stack").await?;

        // The jobs table: the array expands into its children.
        client.goto(&format!("{url}/jobs")).await?;
        browser::wait_visible(&client, "#jobs tbody tr.job").await?;
        assert_eq!(client.find_all(Css("#jobs tbody tr.job")).await?.len(), 2);
        client
            .find(Css("#jobs button.expand"))
            .await?
            .click()
            .await?;
        browser::wait_visible(&client, "#jobs tbody tr.child").await?;
        assert_eq!(client.find_all(Css("#jobs tbody tr.child")).await?.len(), 3);
        let status = client.find(Css("#jobs-status")).await?.text().await?;
        assert!(status.contains("2 of 2 jobs"), "{status}");
        browser::screenshot(&client, "jobs").await?;

        // One job: its attempts and its log.
        client.goto(&format!("{url}/jobs/{prepare}")).await?;
        browser::wait_visible(&client, "#attempts").await?;
        browser::wait_text(&client, "#log", "prepared 2 datasets").await?;
        client
            .execute("document.getElementById('log').scrollIntoView()", vec![])
            .await?;
        browser::screenshot(&client, "job").await?;

        // Results: the table and a curve per model and measure.
        client.goto(&format!("{url}/results")).await?;
        browser::wait_visible(&client, "#models tbody tr").await?;
        assert_eq!(client.find_all(Css("#models tbody tr")).await?.len(), 2);
        assert_eq!(client.find_all(Css(".chart svg.curve")).await?.len(), 4);
        assert_eq!(client.find_all(Css("#datasets tbody tr")).await?.len(), 1);
        browser::screenshot(&client, "results").await?;

        // Cost: a row per compute environment.
        client.goto(&format!("{url}/cost")).await?;
        browser::wait_visible(&client, "#compute-cost tbody tr").await?;
        assert_eq!(
            client.find_all(Css("#compute-cost tbody tr")).await?.len(),
            2
        );
        browser::screenshot(&client, "cost").await?;
        Ok(())
    });
}

/// Headless chromium over WebDriver (chromedriver), when the machine has both.
pub mod browser {
    use std::future::Future;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use fantoccini::elements::Element;
    use fantoccini::error::CmdError;
    use fantoccini::{Client, ClientBuilder, Locator};

    const WAIT: Duration = Duration::from_secs(30);

    pub struct Browser {
        driver: Child,
        url: String,
    }

    impl Drop for Browser {
        fn drop(&mut self) {
            let _ = self.driver.kill();
            let _ = self.driver.wait();
        }
    }

    impl Browser {
        /// Starts chromedriver, or says why the page tests are skipped and returns `None`.
        pub fn start() -> Option<Browser> {
            let found = |name: &str| {
                std::env::var_os("PATH")
                    .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
                    .unwrap_or(false)
            };
            if !(found("chromium") && found("chromedriver")) {
                eprintln!(
                    "SKIPPED: the dashboard's page tests need chromium and chromedriver; \
                     scripts/setup-browser.sh installs them (Debian: apt-get install chromium \
                     chromium-driver)"
                );
                return None;
            }
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let driver = Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver");
            let start = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(start.elapsed() < WAIT, "chromedriver did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
            Some(Browser {
                driver,
                url: format!("http://127.0.0.1:{port}"),
            })
        }

        /// Runs `test` with a fresh headless session, closed afterwards.
        pub fn run<F, Fut>(&self, test: F)
        where
            F: FnOnce(Client) -> Fut,
            Fut: Future<Output = Result<(), CmdError>>,
        {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = self.connect().await;
                let result = test(client.clone()).await;
                let _ = client.close().await;
                result.expect("the page test");
            });
        }

        pub async fn connect(&self) -> Client {
            let mut caps = serde_json::Map::new();
            caps.insert(
                "goog:chromeOptions".into(),
                serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1400,1000"]}),
            );
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&self.url)
                .await
                .expect("a chromium session")
        }
    }

    /// Waits until `css` matches a displayed element.
    pub async fn wait_visible(client: &Client, css: &str) -> Result<Element, CmdError> {
        let start = Instant::now();
        loop {
            if let Ok(el) = client.find(Locator::Css(css)).await {
                if el.is_displayed().await.unwrap_or(false) {
                    return Ok(el);
                }
            }
            if start.elapsed() > WAIT {
                let error = match client.find(Locator::Css("#error")).await {
                    Ok(e) => e.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                panic!("{css} did not show within {WAIT:?} (page error: {error:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the text of `css` contains `text`.
    pub async fn wait_text(client: &Client, css: &str, text: &str) -> Result<(), CmdError> {
        let start = Instant::now();
        loop {
            let el = wait_visible(client, css).await?;
            if el.text().await?.contains(text) {
                return Ok(());
            }
            assert!(start.elapsed() < WAIT, "{css} never showed {text:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where the screenshots go: `target/tmp/ui-screenshots/`.
    pub fn screenshot_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots")
    }

    pub async fn screenshot(client: &Client, page: &str) -> Result<(), CmdError> {
        let png = client.screenshot().await?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{page}.png")), png).unwrap();
        Ok(())
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn timed_get(url: &str) -> Duration {
    let start = Instant::now();
    let (status, _) = http("GET", url);
    assert_eq!(status, 200, "{url}");
    start.elapsed()
}

/// `make bench-ui`: the first page against the emulator and the jobs page with 1,000 jobs,
/// written to bench/ui.md.
#[test]
#[ignore = "benchmark: make bench-ui"]
fn bench_dashboard() {
    const JOBS: usize = 1000;
    let f = fixture();
    // 1,000 more jobs in the stack's queue.
    std::thread::spawn({
        let prefix = f.prefix.clone();
        move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let batch = crate::joblist::batch().await;
                let queue = format!("{prefix}-main");
                let definition = format!("{prefix}-prepare");
                crate::joblist::submit_many(&batch, &queue, &definition, JOBS - 2, None).await;
                crate::joblist::wait_succeeded(&batch, &queue, JOBS - 2).await;
            })
        }
    })
    .join()
    .unwrap();
    // The reference a user would otherwise run to see where the stack stands.
    let plan_cli = median(
        (0..3)
            .map(|_| {
                let mut cmd = provision(&["plan"], &f.path);
                let start = Instant::now();
                let out = cmd.output().unwrap();
                assert!(matches!(out.status.code(), Some(0 | 2)), "{out:?}");
                start.elapsed()
            })
            .collect(),
    );
    let ui = Ui::for_fixture(f);
    // Let the reading made at start finish, so the first server figures are all the shell's.
    ui.get_ok("/api/stack");
    let shell = median(
        (0..20)
            .map(|_| timed_get(&format!("{}/", ui.url)))
            .collect(),
    );
    let overview = median(
        (0..20)
            .map(|_| timed_get(&format!("{}/api/overview", ui.url)))
            .collect(),
    );
    let shared = median(
        (0..20)
            .map(|_| timed_get(&format!("{}/api/stack", ui.url)))
            .collect(),
    );
    let graph = median(
        (0..5)
            .map(|_| timed_get(&format!("{}/api/stack?fresh=1", ui.url)))
            .collect(),
    );
    // Each `since` is a query of its own, so none of these is answered from the cache.
    let jobs_api = median(
        (0..5)
            .map(|i| timed_get(&format!("{}/api/jobs?since={}h", ui.url, 100 + i)))
            .collect(),
    );
    let listed = ui.get_ok("/api/jobs?since=99h")["jobs"]
        .as_array()
        .unwrap()
        .len();
    assert!(listed >= JOBS, "{listed}");

    // Page rows: (what, drawn, live status or data shown).
    let mut pages: Vec<(&str, Option<Duration>, Duration)> = Vec::new();
    if let Some(browser) = browser::Browser::start() {
        let url = ui.url.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        browser.run(|client| async move {
            use fantoccini::Locator::Css;
            // One load: (drawn, shown) in the page's own clock.
            let load = |url: String, css: &'static str| {
                let client = client.clone();
                async move {
                    client.goto(&url).await?;
                    browser::wait_visible(&client, css).await?;
                    // The stack page may draw its graph before it shows the live status.
                    browser::wait_visible(&client, "body[data-rendered-ms]").await?;
                    let body = client.find(Css("body")).await?;
                    let ms = |v: Option<String>| {
                        let ms: f64 = v.unwrap_or_default().parse().unwrap_or(f64::NAN);
                        Duration::from_secs_f64(ms / 1000.0)
                    };
                    let drawn = ms(body.attr("data-drawn-ms").await?);
                    let shown = ms(body.attr("data-rendered-ms").await?);
                    Ok::<_, fantoccini::error::CmdError>((drawn, shown))
                }
            };
            let medians = |samples: Vec<(Duration, Duration)>| {
                (
                    median(samples.iter().map(|s| s.0).collect()),
                    median(samples.iter().map(|s| s.1).collect()),
                )
            };
            const LIVE: &str = "#graph.live svg g.node";
            // As a user opens it: the URL the moment `provision ui` prints it, its reading of
            // the stack under way.
            let mut samples = Vec::new();
            let mut starts = Vec::new();
            for _ in 0..3 {
                let start = Instant::now();
                let fresh = Ui::for_fixture(fixture());
                starts.push(start.elapsed());
                samples.push(load(format!("{}/", fresh.url), LIVE).await?);
            }
            let started = median(starts);
            tx.send((
                "`provision ui` started to its URL printed (its first reading of the stack in)",
                None,
                started,
            ))
            .unwrap();
            let (drawn, live) = medians(samples);
            tx.send((
                "stack graph (`/`), opened as `provision ui` prints its URL",
                Some(drawn),
                live,
            ))
            .unwrap();
            let mut samples = Vec::new();
            for _ in 0..3 {
                samples.push(load(format!("{url}/"), LIVE).await?);
            }
            let (drawn, live) = medians(samples);
            tx.send((
                "stack graph (`/`), reloaded within 10 s (the reading shared)",
                Some(drawn),
                live,
            ))
            .unwrap();
            let mut samples = Vec::new();
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(10_500)).await;
                samples.push(load(format!("{url}/"), LIVE).await?);
            }
            let (drawn, live) = medians(samples);
            tx.send((
                "stack graph (`/`), the reading over 10 s old (drawn from it, then a new one)",
                Some(drawn),
                live,
            ))
            .unwrap();
            for (page, path, css) in [
                (
                    "jobs table, 1,000 jobs (`/jobs`)",
                    "/jobs",
                    "#jobs tbody tr.job",
                ),
                ("results (`/results`)", "/results", "#models tbody tr"),
            ] {
                let mut samples = Vec::new();
                for _ in 0..3 {
                    samples.push(load(format!("{url}{path}"), css).await?);
                    if path == "/jobs" {
                        let rows = client.find_all(Css("#jobs tbody tr.job")).await?.len();
                        assert!(rows >= JOBS, "{rows} rows");
                    }
                }
                tx.send((page, None, medians(samples).1)).unwrap();
            }
            Ok(())
        });
        pages = rx.try_iter().collect();
    }

    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let ratio = |d: Duration| format!("{:.1}x", plan_cli.as_secs_f64() / d.as_secs_f64());
    let mut md = String::from(
        "# `provision ui`: page times against the emulator\n\n\
         Written by `make bench-ui` (an ignored test, `ui::bench_dashboard`): the debug binary \
         (`target/debug/provision`, as `cargo test` builds it) serving an applied copy of \
         `stacks/orderflow.toml` on moto, with 1,000 jobs in its queue, on a shared machine. \
         Server times are medians of HTTP requests from the test. Page times are medians of 3 \
         loads in headless chromium, in the page's own clock (`performance.now()`, from the \
         start of navigation): *drawn* when the page first showed the stack (from what the \
         server knew: its latest reading, or the stack file's resources), *shown* when it \
         showed its data (on the stack page: the live status of every resource). The \
         reference is `provision plan` run in a terminal (same binary, same reads: the state \
         and a live read of every resource); the ratio is its time over the page's.\n\n",
    );
    md.push_str("| what | drawn | shown | vs `provision plan` | target |\n|---|---|---|---|---|\n");
    md.push_str(&format!(
        "| reference: `provision plan` (process start to exit) | | {} | 1.0x | |\n",
        ms(plan_cli)
    ));
    for (page, drawn, shown) in &pages {
        let target = if page.starts_with("stack") {
            "first page under 200 ms"
        } else if page.starts_with("jobs") {
            "under 1 s"
        } else {
            ""
        };
        let vs = if page.starts_with("stack") {
            ratio(*shown)
        } else {
            String::new()
        };
        let page = if page.starts_with('`') {
            page.to_string()
        } else {
            format!("page: {page}")
        };
        md.push_str(&format!(
            "| {page} | {} | {} | {vs} | {target} |\n",
            drawn.map(ms).unwrap_or_default(),
            ms(*shown)
        ));
    }
    if pages.is_empty() {
        md.push_str("| (no browser here: page times not measured) | | | | |\n");
    }
    let listing = format!("server: `/api/jobs` listing {listed} jobs (uncached)");
    for (what, time) in [
        ("server: a page's HTML, style and script inline (`/`)", shell),
        ("server: `/api/overview` (no AWS call)", overview),
        ("server: `/api/stack`, the shared reading", shared),
        ("server: `/api/stack?fresh=1`, a new reading (plan of the stack: state and a live read of every resource)", graph),
        (listing.as_str(), jobs_api),
    ] {
        md.push_str(&format!("| {what} | | {} | | |\n", ms(time)));
    }
    let path = testkit::workspace_root().join("bench/ui.md");
    std::fs::write(&path, md).unwrap();
    eprintln!("wrote {}", path.display());
}
