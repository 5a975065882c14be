//! A real container registry on loopback (Debian's `docker-registry`, the CNCF distribution
//! registry that ECR's registry protocol follows), started once per test binary, like the
//! emulator, on a free port with its storage in a temporary directory.
//!
//! It runs under a small shell that waits on its stdin: the pipe this process holds closes when
//! the test binary exits for any reason, and the shell then stops the registry and removes its
//! storage, so no test leaves a registry or its blobs behind.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What `scripts/setup-registry.sh` installs.
pub const BINARY: &str = "docker-registry";

pub struct Registry {
    /// `127.0.0.1:PORT`, as an image reference's registry part.
    pub host: String,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// Where it keeps its blobs (removed when the test binary exits).
    pub storage: PathBuf,
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

/// The shared registry, started on first use.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(start)
}

/// A registry of its own (its own storage and port).
pub fn start() -> Registry {
    let binary = find_binary().unwrap_or_else(|| {
        panic!("`{BINARY}` is not installed: run scripts/setup-registry.sh (`make test` does)")
    });
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = std::env::temp_dir().join(format!("testkit-registry-{}-{port}", std::process::id()));
    std::fs::create_dir_all(dir.join("data")).expect("registry storage");
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        ),
    )
    .expect("registry config");
    // The shell stops the registry and removes its storage once stdin closes.
    let script = r#"registry=$1; config=$2; dir=$3
"$registry" serve "$config" >/dev/null 2>&1 &
pid=$!
cat >/dev/null
kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir""#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&binary)
        .arg(&config)
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut child = crate::spawn_from_lasting_thread(cmd);
    let stdin = child.stdin.take().unwrap();
    let host = format!("127.0.0.1:{port}");
    wait_ready(&host);
    Registry {
        endpoint: format!("http://{host}"),
        host,
        storage: dir.join("data"),
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
    }
}

fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(BINARY))
        .find(|p| p.is_file())
}

/// Waits until `GET /v2/` answers, as the registry protocol's version check.
fn wait_ready(host: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(host) {
            let request = format!("GET /v2/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.1 200")
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the registry at {host} did not answer within 20 s");
}
