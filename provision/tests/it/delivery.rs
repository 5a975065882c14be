//! Delivery as a user runs it: `provision image build` (reproducible, runnable layers),
//! `image push` to a real registry on loopback with moto answering ECR, job definitions that
//! pin the pushed digest, `submit --all`, and `upload` syncing only what changed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use provision::image::{layout, registry};

const BIN: &str = env!("CARGO_BIN_EXE_provision");
const ACCOUNT: &str = "123456789012";
/// A small glibc binary from the host stands in for `runtime` where only the image's
/// mechanics are under test: it links the same libc, and it prints what it read, which shows
/// it ran inside the image's root.
const STAND_IN: &str = "/usr/bin/sha256sum";

/// A private moto whose ECR sees the loopback registry (scripts/moto_patches.py).
fn moto() -> &'static testkit::Emulator {
    static MOTO: OnceLock<testkit::Emulator> = OnceLock::new();
    MOTO.get_or_init(|| {
        let registry = testkit::registry::registry();
        testkit::start_with_env(&[("MOTO_ECR_REGISTRY", registry.endpoint.as_str())])
    })
}

struct TestStack {
    dir: tempfile::TempDir,
    path: PathBuf,
    name: String,
    endpoint: String,
}

impl TestStack {
    fn new(endpoint: &str) -> Self {
        let name = testkit::unique_name("dlv");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stack.toml");
        std::fs::write(&path, stack_toml(&name, "runtime")).unwrap();
        TestStack {
            dir,
            path,
            name,
            endpoint: endpoint.to_string(),
        }
    }

    fn p(&self) -> String {
        format!("{}-default", self.name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = testkit::emulator().command(BIN);
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env_remove("PROVISION_REGISTRY")
            .env_remove("PROVISION_STACK")
            .env_remove("PROVISION_ENV")
            .args(args)
            .arg("--stack")
            .arg(&self.path);
        cmd
    }

    fn expect(&self, args: &[&str], code: i32) -> String {
        expect(self.command(args), code).0
    }
}

/// Runs `cmd`, asserts its exit code; returns stdout and stderr.
fn expect(mut cmd: Command, code: i32) -> (String, String) {
    let out: Output = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{cmd:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// Asserts a failure a user reads at a glance: exit 1, one line on stderr, containing `what`.
fn one_line_error(cmd: Command, what: &str) {
    let (_, stderr) = expect(cmd, 1);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{stderr}");
    assert!(stderr.contains(what), "expected `{what}` in:\n{stderr}");
}

fn stack_toml(name: &str, image: &str) -> String {
    format!(
        r#"
[stack]
name = "{name}"
region = "us-east-1"

[network]
s3_endpoint = false

[buckets.data]
versioning = false

[repositories.runtime]
keep_images = 5

[compute.spot]
type = "spot"
max_vcpus = 16
instance_types = ["c5.xlarge"]
[compute.spot.gpu]
instance_types = ["g4dn.xlarge"]

[queues.main]
priority = 1
compute = ["spot"]

[jobs.train]
queue = "main"
image = "{image}"
command = ["runtime", "train", "--device", "cpu", "--dataset", "{{dataset}}"]
vcpus = 1
memory_mib = 1024
matrix = {{ dataset = ["alpha", "beta", "gamma"] }}
[jobs.train.gpu]
command = ["runtime", "train", "--device", "cuda", "--dataset", "{{dataset}}"]
gpus = 1
"#
    )
}

/// Unpacks every layer of the image at `dir` into `root`, in order, checking that each layer
/// is reproducible: entries sorted, every mtime 0.
fn unpack(dir: &Path, root: &Path) -> layout::Image {
    let image = layout::read(dir).unwrap();
    std::fs::create_dir_all(root).unwrap();
    for layer in &image.manifest.layers {
        let bytes = std::fs::read(image.blob_path(&layer.digest)).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let mut paths = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            assert_eq!(entry.header().mtime().unwrap(), 0);
            paths.push(entry.path().unwrap().to_string_lossy().to_string());
            entry.unpack_in(root).unwrap();
        }
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "layer entries in path order");
    }
    image
}

fn config_of(image: &layout::Image) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(image.blob_path(&image.manifest.config.digest)).unwrap())
        .unwrap()
}

#[test]
fn cpu_image_is_reproducible_and_its_binary_runs_from_its_own_root() {
    let stack = TestStack::new(&testkit::emulator().endpoint);
    let out = stack.dir.path();
    let build = |dir: &str, tag: &str| {
        let args = ["image", "build", "--binary", STAND_IN, "--tag", tag];
        let mut cmd = stack.command(&args);
        cmd.arg("--out").arg(out.join(dir));
        expect(cmd, 0).0.trim().to_string()
    };
    let first = build("a", "rev1");
    let second = build("b", "rev2");
    assert!(first.starts_with("sha256:"), "{first}");
    assert_eq!(
        first, second,
        "same inputs, same digest (the revision is not in it)"
    );
    assert_eq!(
        layout::read(&out.join("b")).unwrap().revision.as_deref(),
        Some("rev2")
    );

    let root = out.join("root");
    let image = unpack(&out.join("a"), &root);
    assert_eq!(image.manifest.layers.len(), 2);
    assert_eq!(image.flavour, "cpu");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("runtime:x:1000:1000:"), "{passwd}");
    assert!(
        std::fs::metadata(root.join("etc/ssl/certs/ca-certificates.crt"))
            .unwrap()
            .len()
            > 1000
    );
    let config = config_of(&image);
    assert_eq!(config["config"]["User"], "1000:1000");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);

    // The binary runs with nothing but the image's files: its libraries and loader came along.
    let run = if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        let mut cmd = Command::new("chroot");
        cmd.arg(&root)
            .args(["/usr/local/bin/runtime", "/etc/passwd"]);
        cmd
    } else {
        let libs: Vec<String> = [
            "lib/x86_64-linux-gnu",
            "usr/lib/x86_64-linux-gnu",
            "lib64",
            "lib",
        ]
        .iter()
        .map(|d| root.join(d).display().to_string())
        .collect();
        let mut cmd = Command::new(root.join("lib64/ld-linux-x86-64.so.2"));
        cmd.arg("--inhibit-cache")
            .arg("--library-path")
            .arg(libs.join(":"))
            .arg(root.join("usr/local/bin/runtime"))
            .arg(root.join("etc/passwd"));
        cmd
    };
    let (stdout, _) = expect(run, 0);
    let want = provision::image::sha256_digest(passwd.as_bytes());
    assert!(
        stdout.starts_with(want.trim_start_matches("sha256:")),
        "{stdout}"
    );
}

#[tokio::test]
async fn gpu_flavour_layers_onto_a_base_pulled_from_a_registry() {
    // A public registry's base image: pulled without credentials.
    let registry = testkit::registry::open_registry();
    let stack = TestStack::new(&testkit::emulator().endpoint);
    let out = stack.dir.path();
    // A small base image, pushed to the loopback registry as a CUDA image would be there.
    let mut cmd = stack.command(&["image", "build", "--binary", STAND_IN]);
    cmd.arg("--out").arg(out.join("base"));
    expect(cmd, 0);
    let base = layout::read(&out.join("base")).unwrap();
    let repository = format!("{}-cuda", stack.name);
    registry::push(
        &registry::Endpoint::parse(&registry.host).unwrap(),
        &oci_client::secrets::RegistryAuth::Anonymous,
        &repository,
        &base,
        &["tiny".to_string()],
        &indicatif::ProgressBar::hidden(),
    )
    .await
    .unwrap();

    let base_ref = format!("{}/{repository}:tiny", registry.host);
    let args = [
        "image", "build", "--set", "gpu=true", "--binary", STAND_IN, "--base", &base_ref,
    ];
    let mut cmd = stack.command(&args);
    cmd.arg("--out").arg(out.join("gpu"));
    expect(cmd, 0);
    let root = out.join("gpu-root");
    let gpu = unpack(&out.join("gpu"), &root);
    assert_eq!(gpu.flavour, "gpu");
    let digests = |i: &layout::Image| -> Vec<String> {
        i.manifest.layers.iter().map(|l| l.digest.clone()).collect()
    };
    let (base_layers, gpu_layers) = (digests(&base), digests(&gpu));
    assert_eq!(gpu_layers.len(), 4);
    assert_eq!(
        gpu_layers[..2],
        base_layers[..],
        "the base's layers come first, unchanged"
    );
    assert_eq!(
        gpu_layers[3], base_layers[1],
        "the same binary makes the same layer"
    );
    let config = config_of(&gpu);
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 4);
    assert_eq!(config["history"].as_array().unwrap().len(), 4);
    assert!(root.join("usr/local/bin/runtime").is_file());
}

#[tokio::test]
async fn push_pins_the_digest_in_job_definitions_and_submit_all_runs_every_value() {
    let registry = testkit::registry::registry();
    let stack = TestStack::new(&moto().endpoint);
    let p = stack.p();
    stack.expect(&["apply", "--auto-approve"], 0);
    // Nothing pushed yet: the job definitions name the tag, and that is stable.
    stack.expect(&["plan", "--detailed-exitcode"], 0);

    let out = stack.dir.path().join("image");
    let mut cmd = stack.command(&["image", "build", "--binary", STAND_IN, "--tag", "abc123"]);
    cmd.arg("--out").arg(&out);
    let digest = expect(cmd, 0).0.trim().to_string();
    let mut cmd = stack.command(&["image", "push", "--json"]);
    cmd.arg("--image")
        .arg(&out)
        .env("PROVISION_REGISTRY", &registry.host);
    let pushed: serde_json::Value = serde_json::from_str(&expect(cmd, 0).0).unwrap();
    let uri = format!("{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{p}-runtime");
    assert_eq!(pushed["repository"], uri.as_str());
    assert_eq!(pushed["digest"], digest.as_str());
    assert_eq!(pushed["tags"], serde_json::json!(["abc123", "cpu"]));
    let tags = registry
        .get(&format!("/v2/{p}-runtime/tags/list"))
        .unwrap()
        .body;
    assert!(
        tags.contains("\"abc123\"") && tags.contains("\"cpu\""),
        "{tags}"
    );

    // The plan shows each job definition moving to the pushed digest.
    let plan: serde_json::Value =
        serde_json::from_str(&stack.expect(&["plan", "--json"], 0)).unwrap();
    let pinned = format!("{uri}@{digest}");
    let moved: Vec<&serde_json::Value> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["address"]
                .as_str()
                .unwrap()
                .starts_with("job_definition.")
        })
        .collect();
    assert_eq!(moved.len(), 3, "{plan:#}");
    for change in moved {
        let image = change["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "image")
            .unwrap_or_else(|| panic!("{change:#}"));
        assert_eq!(image["before"], format!("{uri}:cpu").as_str());
        assert_eq!(image["after"], pinned.as_str());
    }
    stack.expect(&["apply", "--auto-approve"], 0);
    stack.expect(&["plan", "--detailed-exitcode"], 0);

    // A GPU command on the cpu image is refused before anything runs.
    std::fs::write(&stack.path, stack_toml(&stack.name, "runtime:cpu")).unwrap();
    let (_, stderr) = expect(stack.command(&["validate", "--set", "gpu=true"]), 1);
    assert!(
        stderr.contains("stack.toml:") && stderr.contains("runs CUDA"),
        "{stderr}"
    );
    std::fs::write(&stack.path, stack_toml(&stack.name, "runtime")).unwrap();

    // One job per matrix value, ids on stdout; JSON, one object per line.
    let ids = stack.expect(&["submit", "train", "--all"], 0);
    assert_eq!(ids.lines().count(), 3, "{ids}");
    let json = stack.expect(&["submit", "train", "--all", "--json"], 0);
    let definitions: Vec<String> = json
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["job_definition"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for (definition, value) in definitions.iter().zip(["alpha", "beta", "gamma"]) {
        assert!(
            definition.contains(&format!("{p}-train-{value}:")),
            "{definition}"
        );
    }
}

#[test]
fn bad_input_is_one_line_and_leaves_nothing() {
    let stack = TestStack::new(&testkit::emulator().endpoint);
    let out = stack.dir.path().join("never");
    let mut cmd = stack.command(&["image", "build", "--binary", "/no/such/runtime"]);
    cmd.arg("--out").arg(&out);
    one_line_error(cmd, "--binary /no/such/runtime");
    assert!(!out.exists());
    let mut cmd = stack.command(&["image", "build", "--binary", STAND_IN, "--tag", "bad tag!"]);
    cmd.arg("--out").arg(&out);
    one_line_error(cmd, "`bad tag!` is not an image tag");
    assert!(!out.exists());
    let mut cmd = stack.command(&["image", "push", "--repository", "nope"]);
    cmd.arg("--image").arg(&out);
    one_line_error(cmd, "--repository nope");
    let mut cmd = stack.command(&["image", "push"]);
    cmd.arg("--image").arg(&out);
    one_line_error(cmd, "no image at");
    one_line_error(
        stack.command(&["upload", "/no/such/dir"]),
        "upload source /no/such/dir",
    );
    one_line_error(
        stack.command(&["upload", ".", "nope/raw"]),
        "`nope` is not a key of [buckets]",
    );
    let (_, stderr) = expect(
        stack.command(&["submit", "train", "--all", "--var", "dataset=a"]),
        1,
    );
    assert!(stderr.contains("--all"), "{stderr}");

    std::fs::write(&stack.path, stack_toml(&stack.name, "runtime:bad tag")).unwrap();
    let (_, stderr) = expect(stack.command(&["validate"]), 1);
    assert!(
        stderr.contains("stack.toml:") && stderr.contains("is not an image tag"),
        "{stderr}"
    );
    std::fs::write(&stack.path, stack_toml(&stack.name, "ubuntu:24.04")).unwrap();
    stack.expect(&["validate"], 0);
}

#[test]
fn push_to_an_unreachable_registry_fails_in_one_line() {
    let stack = TestStack::new(&moto().endpoint);
    let out = stack.dir.path().join("image");
    let mut cmd = stack.command(&["image", "build", "--binary", STAND_IN]);
    cmd.arg("--out").arg(&out);
    expect(cmd, 0);
    let mut cmd = stack.command(&["image", "push"]);
    cmd.arg("--image").arg(&out);
    one_line_error(cmd, "does not exist: apply the stack first");
    // The repository exists; nothing listens where the registry should be.
    stack.expect(&["apply", "--auto-approve"], 0);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = stack.command(&["image", "push"]);
    cmd.arg("--image")
        .arg(&out)
        .env("PROVISION_REGISTRY", format!("127.0.0.1:{port}"));
    one_line_error(cmd, "cannot reach the registry");
}

/// The stack's repository, made directly in moto's ECR (what `apply` would make): the push
/// tests below need nothing else of the stack.
async fn create_repository(stack: &TestStack) -> String {
    let config = moto().config_loader().load().await;
    let name = format!("{}-runtime", stack.p());
    aws_sdk_ecr::Client::new(&config)
        .create_repository()
        .repository_name(&name)
        .send()
        .await
        .unwrap();
    name
}

/// `image build` of the stand-in binary into the stack's directory.
fn build_stand_in(stack: &TestStack) -> PathBuf {
    let out = stack.dir.path().join("image");
    let mut cmd = stack.command(&["image", "build", "--binary", STAND_IN, "--tag", "abc123"]);
    cmd.arg("--out").arg(&out);
    expect(cmd, 0);
    out
}

fn push_to(stack: &TestStack, image: &Path, registry: &str) -> Command {
    let mut cmd = stack.command(&["image", "push"]);
    cmd.arg("--image")
        .arg(image)
        .env("PROVISION_REGISTRY", registry);
    cmd
}

#[tokio::test]
async fn push_authenticates_with_the_token_from_ecr_and_only_with_it() {
    let registry = testkit::registry::registry();
    let stack = TestStack::new(&moto().endpoint);
    let repository = create_repository(&stack).await;
    let image = build_stand_in(&stack);
    // The registry asks for credentials, as ECR's does: without them it answers nothing.
    let anonymous = registry.get_as("/v2/", None).unwrap();
    assert_eq!(anonymous.status, 401, "{anonymous:?}");

    // A registry whose password is not the one in ECR's token refuses the push.
    let other = testkit::registry::start(Some(testkit::registry::Credentials::new(
        testkit::registry::ECR_USER,
        "not-the-ecr-token",
    )));
    one_line_error(
        push_to(&stack, &image, &other.host),
        "refused the credentials from ECR GetAuthorizationToken (401 Unauthorized, uploading blob sha256:",
    );
    let tags = other.get(&format!("/v2/{repository}/tags/list")).unwrap();
    assert_eq!(tags.status, 404, "nothing pushed: {tags:?}");

    // The registry that takes ECR's token gets the image under both tags.
    expect(push_to(&stack, &image, &registry.host), 0);
    for tag in ["abc123", "cpu"] {
        let manifest = registry
            .get(&format!("/v2/{repository}/manifests/{tag}"))
            .unwrap();
        assert_eq!(manifest.status, 200, "{tag}: {manifest:?}");
    }
}

#[tokio::test]
async fn a_push_cut_off_during_the_layers_leaves_no_manifest() {
    let registry = testkit::registry::registry();
    let stack = TestStack::new(&moto().endpoint);
    let repository = create_repository(&stack).await;
    let image = build_stand_in(&stack);
    // The registry goes away while the second blob's bytes are on their way (one PATCH per
    // blob of this size): the first blob is in, the second half-sent, the config never sent.
    let cut = testkit::registry::Interruption::start(registry, "PATCH", "/blobs/uploads/", 2);
    one_line_error(
        push_to(&stack, &image, &cut.host),
        "no tag was pushed: run the push again",
    );
    assert!(cut.was_cut(), "the push never reached the second blob");
    let tags = registry
        .get(&format!("/v2/{repository}/tags/list"))
        .unwrap();
    assert_eq!(tags.status, 404, "no tag may exist: {tags:?}");
    for tag in ["abc123", "cpu"] {
        let manifest = registry
            .get(&format!("/v2/{repository}/manifests/{tag}"))
            .unwrap();
        assert_eq!(manifest.status, 404, "{tag}: {manifest:?}");
    }

    // Run again once the registry answers: the image arrives whole.
    let out = expect(push_to(&stack, &image, &registry.host), 0).0;
    let digest = out.trim().rsplit_once('@').unwrap().1.to_string();
    let manifest = registry
        .get(&format!("/v2/{repository}/manifests/cpu"))
        .unwrap();
    assert_eq!(manifest.status, 200, "{manifest:?}");
    let pushed = layout::read(&image).unwrap();
    assert_eq!(digest, pushed.digest);
    for blob in pushed.blobs() {
        let answer = registry
            .get(&format!("/v2/{repository}/blobs/{}", blob.digest))
            .unwrap();
        assert_eq!(answer.status, 200, "{}", blob.digest);
    }
}

#[tokio::test]
async fn upload_sends_only_changed_files_and_a_no_op_only_lists() {
    let proxy = testkit::faults::FaultProxy::start(
        &testkit::emulator().endpoint,
        &testkit::unique_account(),
    );
    let stack = TestStack::new(&proxy.endpoint);
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&proxy.endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    let bucket = format!("{}-data-{}", stack.p(), proxy.account);
    s3.create_bucket().bucket(&bucket).send().await.unwrap();

    let src = stack.dir.path().join("data");
    for i in 0..1000 {
        let dir = src.join(format!("instrument={}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("part-{i:04}.csv")), format!("row,{i}\n")).unwrap();
    }
    // Above the multipart threshold: two parts, and an ETag of the parts' MD5s to compare with.
    std::fs::write(src.join("big.bin"), vec![42u8; 9 * 1024 * 1024]).unwrap();
    let upload = || {
        let mut cmd = proxy.command(BIN);
        cmd.args(["upload", "--stack"])
            .arg(&stack.path)
            .arg(&src)
            .arg("data/raw");
        cmd
    };
    let (_, stderr) = expect(upload(), 0);
    assert!(stderr.contains("uploaded 1001 files"), "{stderr}");
    let listed = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("raw/")
        .max_keys(1000)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(1000));
    let big = s3
        .head_object()
        .bucket(&bucket)
        .key("raw/big.bin")
        .send()
        .await
        .unwrap();
    assert!(big.e_tag().unwrap().ends_with("-2\""), "{:?}", big.e_tag());

    let before = proxy.counts();
    let (_, stderr) = expect(upload(), 0);
    let after = proxy.counts();
    assert!(
        stderr.contains("uploaded 0 files") && stderr.contains("1001 unchanged"),
        "{stderr}"
    );
    assert_eq!(
        after.mutating,
        before.mutating,
        "{:?}",
        proxy.mutating_log()
    );
    // The credentials check, then the listing (1001 keys: two pages).
    assert_eq!(after.requests - before.requests, 3);

    std::fs::write(src.join("instrument=3/part-0003.csv"), "row,x\n").unwrap();
    let before = proxy.counts();
    let (_, stderr) = expect(upload(), 0);
    assert!(stderr.contains("uploaded 1 files"), "{stderr}");
    assert_eq!(proxy.counts().mutating - before.mutating, 1);
}
