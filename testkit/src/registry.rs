//! A real container registry on loopback (Debian's `docker-registry`, the CNCF distribution
//! registry that ECR's registry protocol follows), started once per test binary, like the
//! emulator, on a free port with its storage in a temporary directory.
//!
//! It runs under a small shell that waits on its stdin: the pipe this process holds closes when
//! the test binary exits for any reason, and the shell then stops the registry and removes its
//! storage, so no test leaves a registry or its blobs behind.
//!
//! [`registry()`] asks for HTTP basic auth as ECR's registry endpoint does, with the user and
//! password that the emulator's ECR `GetAuthorizationToken` hands out for its default account
//! (user `AWS`, password `{account}-auth-token`): a push succeeds only with the token from ECR.
//! [`open_registry()`] asks for none, as a public registry serves base images.
//! [`Interruption`] stands between a client and a registry and cuts the connection in the
//! middle of an upload, as a registry that stops or a network that drops would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;

/// What `scripts/setup-registry.sh` installs.
pub const BINARY: &str = "docker-registry";
/// Makes the password file (bcrypt hashes, the only kind the registry accepts); from
/// apache2-utils, which `scripts/setup-registry.sh` installs too.
pub const HTPASSWD: &str = "htpasswd";
/// The user in every ECR authorization token.
pub const ECR_USER: &str = "AWS";
/// The emulator's default account, whose ECR token [`registry()`] accepts.
pub const ACCOUNT: &str = "123456789012";

/// The password in the emulator's ECR authorization token for `account`.
pub fn ecr_password(account: &str) -> String {
    format!("{account}-auth-token")
}

/// A user and password the registry accepts (basic auth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl Credentials {
    pub fn new(user: &str, password: &str) -> Self {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// What the emulator's ECR hands out for `account`.
    pub fn ecr(account: &str) -> Self {
        Self::new(ECR_USER, &ecr_password(account))
    }

    /// The `Authorization` header's value.
    pub fn header(&self) -> String {
        let pair = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

pub struct Registry {
    /// `127.0.0.1:PORT`, as an image reference's registry part.
    pub host: String,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// Where it keeps its blobs (removed when the test binary exits).
    pub storage: PathBuf,
    /// What it asks for; `None`: anyone may push and pull.
    pub credentials: Option<Credentials>,
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

/// The shared registry, started on first use; it accepts only the emulator's ECR token for
/// [`ACCOUNT`].
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| start(Some(Credentials::ecr(ACCOUNT))))
}

/// A shared registry without auth, for base images pulled anonymously.
pub fn open_registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| start(None))
}

/// A registry of its own (its own storage and port), asking for `credentials` when given.
pub fn start(credentials: Option<Credentials>) -> Registry {
    let binary = find_binary(BINARY).unwrap_or_else(|| {
        panic!("`{BINARY}` is not installed: run scripts/setup-registry.sh (`make test` does)")
    });
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = std::env::temp_dir().join(format!("testkit-registry-{}-{port}", std::process::id()));
    std::fs::create_dir_all(dir.join("data")).expect("registry storage");
    let auth = match &credentials {
        Some(credentials) => {
            let file = dir.join("htpasswd");
            std::fs::write(&file, htpasswd_line(credentials)).expect("registry htpasswd");
            format!(
                "auth:\n  htpasswd:\n    realm: testkit\n    path: {}\n",
                file.display()
            )
        }
        None => String::new(),
    };
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n{auth}",
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
    let registry = Registry {
        endpoint: format!("http://{host}"),
        host,
        storage: dir.join("data"),
        credentials,
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
    };
    registry.wait_ready();
    registry
}

/// `user:bcrypt-hash`, from `htpasswd -nbB` (cost 5, its default: quick to check).
fn htpasswd_line(credentials: &Credentials) -> String {
    let binary = find_binary(HTPASSWD).unwrap_or_else(|| {
        panic!("`{HTPASSWD}` is not installed: run scripts/setup-registry.sh (`make test` does)")
    });
    let out = Command::new(binary)
        .args(["-nbB", &credentials.user, &credentials.password])
        .output()
        .expect("run htpasswd");
    assert!(
        out.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("htpasswd prints text")
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// An HTTP answer: status code and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Registry {
    /// `GET path` with this registry's credentials, as a user inspecting it would
    /// (`/v2/NAME/tags/list`, `/v2/NAME/manifests/TAG`).
    pub fn get(&self, path: &str) -> std::io::Result<Answer> {
        self.get_as(path, self.credentials.as_ref())
    }

    /// `GET path` as whoever `credentials` name (`None`: anonymously).
    pub fn get_as(&self, path: &str, credentials: Option<&Credentials>) -> std::io::Result<Answer> {
        let mut stream = TcpStream::connect(&self.host)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let authorization = credentials
            .map(|c| format!("Authorization: {}\r\n", c.header()))
            .unwrap_or_default();
        let accept = "application/vnd.oci.image.manifest.v1+json, \
                      application/vnd.docker.distribution.manifest.v2+json";
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\n{authorization}\
             Connection: close\r\n\r\n",
            self.host
        )?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        // Blobs are binary; what a test compares (JSON, status) is text either way.
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok(Answer {
            status,
            body: body.to_string(),
        })
    }

    /// Waits until `GET /v2/` answers 200 (with the credentials: the password file works too),
    /// as the registry protocol's version check.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(answer) = self.get("/v2/") {
                if answer.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the registry at {} did not answer within 20 s", self.host);
    }
}

/// A relay in front of a registry that forwards every byte unchanged (so the registry's upload
/// locations, built from the `Host` header, point back at the relay) until the `nth` request
/// whose method is `method` and whose path contains `path_part` arrives: that request's head
/// reaches the registry, its body never does, both connections close, and from then on every
/// connection is closed as soon as it opens, as a registry that stopped would.
pub struct Interruption {
    /// `127.0.0.1:PORT`: the registry address to give the client.
    pub host: String,
    cut: Arc<AtomicBool>,
}

struct Rule {
    upstream: String,
    method: String,
    path_part: String,
    nth: usize,
    seen: AtomicUsize,
    cut: Arc<AtomicBool>,
}

impl Interruption {
    pub fn start(upstream: &Registry, method: &str, path_part: &str, nth: usize) -> Interruption {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let host = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let rule = Arc::new(Rule {
            upstream: upstream.host.clone(),
            method: method.to_string(),
            path_part: path_part.to_string(),
            nth,
            seen: AtomicUsize::new(0),
            cut: cut.clone(),
        });
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if rule.cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let rule = rule.clone();
                std::thread::spawn(move || {
                    let _ = relay(&rule, client);
                });
            }
        });
        Interruption { host, cut }
    }

    /// Whether the cut happened (the client got as far as the request it was set for).
    pub fn was_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

/// One client connection: answers copied back as they come; requests read one after another
/// (keep-alive), each head and body forwarded, until the cut.
fn relay(rule: &Rule, client: TcpStream) -> std::io::Result<()> {
    let mut upstream = TcpStream::connect(&rule.upstream)?;
    let (mut answers, mut back) = (upstream.try_clone()?, client.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut answers, &mut back);
        let _ = back.shutdown(Shutdown::Both);
    });
    let mut reader = BufReader::new(client.try_clone()?);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return upstream.shutdown(Shutdown::Write);
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        upstream.write_all(head.as_bytes())?;
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        if method == rule.method
            && path.contains(&rule.path_part)
            && rule.seen.fetch_add(1, Ordering::SeqCst) + 1 == rule.nth
        {
            rule.cut.store(true, Ordering::SeqCst);
            let _ = upstream.shutdown(Shutdown::Both);
            return client.shutdown(Shutdown::Both);
        }
        forward_body(&head, &mut reader, &mut upstream)?;
    }
}

/// The request's body: `Content-Length` bytes, or chunks up to the last one.
fn forward_body(
    head: &str,
    reader: &mut BufReader<TcpStream>,
    upstream: &mut TcpStream,
) -> std::io::Result<()> {
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            upstream.write_all(size.as_bytes())?;
            let n =
                u64::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            // The chunk and its CRLF; after the last (empty) chunk, the blank line.
            std::io::copy(&mut reader.by_ref().take(n + 2), upstream)?;
            if n == 0 {
                return Ok(());
            }
        }
    }
    let length = header("content-length")
        .and_then(|l| l.parse::<u64>().ok())
        .unwrap_or(0);
    std::io::copy(&mut reader.by_ref().take(length), upstream)?;
    Ok(())
}
