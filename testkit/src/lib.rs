//! Test support for the workspace's integration tests.
//!
//! [`emulator()`] starts one moto server per test binary (docs/design.md, "The test emulator")
//! through `scripts/emulator.py`, creating the venv first when it is missing. The server watches
//! its stdin: the pipe this process holds closes when the test binary exits for any reason
//! (success, panic, Ctrl-C), and the server exits with it, so no test leaves a moto behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

pub mod faults;
pub mod registry;

/// A running moto server shared by every test of one test binary.
pub struct Emulator {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    // Held open for the life of the process; the server exits when it closes.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

/// The workspace root (where `Cargo.toml`, `scripts/` and `.venv/` live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The venv's python, after making sure the venv exists (`scripts/venv.sh` is idempotent).
pub fn venv_python() -> PathBuf {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    READY
        .get_or_init(|| {
            let root = workspace_root();
            let status = Command::new(root.join("scripts/venv.sh"))
                .status()
                .expect("run scripts/venv.sh");
            assert!(status.success(), "scripts/venv.sh failed");
            root.join(".venv/bin/python")
        })
        .clone()
}

/// The shared emulator, started on first use.
pub fn emulator() -> &'static Emulator {
    static EMULATOR: OnceLock<Emulator> = OnceLock::new();
    EMULATOR.get_or_init(start)
}

fn start() -> Emulator {
    start_with_env(&[])
}

/// A server of its own (not the shared one) with extra environment for moto, such as
/// `MOTO_SIMPLE_BATCH_FAIL_AFTER=0`, which moto reads only from its own process environment.
pub fn start_with_env(env: &[(&str, &str)]) -> Emulator {
    let root = workspace_root();
    let mut cmd = Command::new(venv_python());
    cmd.arg(root.join("scripts/emulator.py"))
        .arg("--watch-stdin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = spawn_from_lasting_thread(cmd);
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the emulator's endpoint");
    let endpoint = line
        .trim()
        .strip_prefix("MOTO_ENDPOINT=")
        .unwrap_or_else(|| panic!("emulator did not start: {line:?}"))
        .to_string();
    Emulator {
        endpoint,
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
    }
}

/// Spawns `cmd` from a thread that lives as long as the process. `emulator.py` asks the
/// kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG), and the kernel means the parent
/// *thread*: spawned from a test's thread, the shared server died when that test ended, under
/// every test still running.
pub(crate) fn spawn_from_lasting_thread(mut cmd: Command) -> Child {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cmd.spawn());
        loop {
            std::thread::park();
        }
    });
    rx.recv()
        .expect("spawner thread")
        .expect("start scripts/emulator.py")
}

impl Emulator {
    /// The environment a process needs to reach this emulator through the SDK's standard
    /// chain: endpoint, region and static test credentials (no profile, no IMDS).
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// A `Command` for `program` with [`Emulator::aws_env`] applied and `AWS_PROFILE` removed.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN");
        cmd.envs(self.aws_env());
        cmd
    }

    /// An SDK configuration loader aimed at this emulator: endpoint, region and the test
    /// credentials given explicitly, so that clients built inside a test need nothing from the
    /// process environment. (Setting process variables while other test threads read them is
    /// undefined behaviour on most platforms; tests pass the configuration instead.)
    pub fn config_loader(&self) -> aws_config::ConfigLoader {
        config_loader(&self.endpoint)
    }
}

/// SDK configuration for `endpoint` (the emulator, or a proxy in front of it), with the test
/// region and credentials (see [`Emulator::config_loader`]).
pub fn config_loader(endpoint: &str) -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "testkit",
        ))
}

/// A copy of a stack file's text that names `account` (`[stack] account`) and the VPC `vpc`
/// by id in place of `vpc = "default"`: a stack whose every name is in the file.
pub fn naming_account_and_vpc(text: &str, account: &str, vpc: &str) -> String {
    text.replacen(
        "[stack]\n",
        &format!("[stack]\naccount = \"{account}\"\n"),
        1,
    )
    .replacen("vpc = \"default\"", &format!("vpc = \"{vpc}\""), 1)
}

/// The region every test uses.
pub const REGION: &str = "us-east-1";

/// A name unique within this test run and across runs: `{prefix}-{pid base36}{counter}`,
/// lowercase, suitable for stack names (`[a-z][a-z0-9-]{2,20}`) when `prefix` is short.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() as u64;
    format!("{prefix}-{}{}", base36(pid % 46_656), base36(n))
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

/// A 12-digit AWS account id unique within this test run and across concurrent runs, for an
/// isolated account on the shared emulator (see [`faults::FaultProxy`]).
pub fn unique_account() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "9{:06}{:05}",
        std::process::id() as u64 % 1_000_000,
        n % 100_000
    )
}
