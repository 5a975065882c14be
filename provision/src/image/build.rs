//! The image's layers and config. CPU flavour: a system layer (the shared libraries the binary
//! links, found as `ldd` finds them, its ELF interpreter, CA certificates, `/etc/passwd` with a
//! non-root user, `/tmp`) and the binary's layer: a distroless-like image of two layers.
//! GPU flavour: the base image's layers (a CUDA runtime image, which brings its own glibc),
//! then the certificates and home directory, then the same binary layer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use serde_json::{json, Value};

use super::layer::{self, Entry, Layer, Source};
use super::layout::{self, Writer};
use super::{
    BINARY_PATH, CA_BUNDLE, CONFIG_TYPE, HOME, LAYER_TYPE, MANIFEST_TYPE, USER_ID, USER_NAME,
};

/// Where hosts keep their CA bundle (Debian/Ubuntu, then Fedora/RHEL, then Alpine/SUSE).
const HOST_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
];

/// A base image's parts, pulled from its registry (GPU flavour).
#[derive(Debug)]
pub struct Base {
    pub reference: String,
    pub config: Value,
    /// Each layer's descriptor and its bytes.
    pub layers: Vec<(OciDescriptor, Vec<u8>)>,
}

/// What to build.
#[derive(Debug)]
pub struct Options {
    pub binary: PathBuf,
    pub out: PathBuf,
    /// `None`: the CPU flavour on no base.
    pub base: Option<Base>,
    pub revision: Option<String>,
}

/// A written image.
#[derive(Debug)]
pub struct Built {
    pub digest: String,
    /// Each layer: its digest and compressed size; the base's first.
    pub layers: Vec<(String, u64)>,
}

/// Builds the image into `options.out` (an OCI image layout).
pub fn build(options: Options) -> anyhow::Result<Built> {
    check_binary(&options.binary)?;
    let gpu = options.base.is_some();
    let libraries = if gpu {
        vec![]
    } else {
        linked_libraries(&options.binary)?
    };
    let system = system_entries(gpu, libraries)?;
    let binary = vec![Entry::file(
        BINARY_PATH,
        Source::Path(options.binary.clone()),
        0o755,
    )];
    // The binary's layer is nearly all the work (tens of MB to gzip): both run at once.
    let (system, binary) = std::thread::scope(|s| {
        let system = s.spawn(move || layer::write(system));
        let binary = layer::write(binary);
        (system.join().expect("layer thread"), binary)
    });
    let ours = [system?, binary?];

    let writer = Writer::new(&options.out)?;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    if let Some(base) = &options.base {
        let base_ids = base.config["rootfs"]["diff_ids"]
            .as_array()
            .context("the base image's config has no rootfs.diff_ids")?;
        anyhow::ensure!(
            base_ids.len() == base.layers.len(),
            "the base image's config lists {} layers, its manifest {}",
            base_ids.len(),
            base.layers.len()
        );
        for ((descriptor, bytes), diff_id) in base.layers.iter().zip(base_ids) {
            writer.blob(&descriptor.digest, bytes)?;
            layers.push(layer_descriptor(&descriptor.digest, bytes.len()));
            diff_ids.push(diff_id.as_str().unwrap_or_default().to_string());
        }
    }
    for Layer {
        gzip,
        digest,
        diff_id,
    } in &ours
    {
        writer.blob(digest, gzip)?;
        layers.push(layer_descriptor(digest, gzip.len()));
        diff_ids.push(diff_id.clone());
    }
    let config = config(options.base.as_ref().map(|b| &b.config), diff_ids, gpu);
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = super::sha256_digest(&config_bytes);
    writer.blob(&config_digest, &config_bytes)?;
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_TYPE.into()),
        config: OciDescriptor {
            media_type: CONFIG_TYPE.into(),
            digest: config_digest,
            size: config_bytes.len() as i64,
            ..Default::default()
        },
        layers: layers.clone(),
        subject: None,
        artifact_type: None,
        annotations: None,
    };
    let mut annotations = BTreeMap::new();
    annotations.insert(layout::FLAVOUR.to_string(), super::flavour(gpu).to_string());
    if let Some(revision) = &options.revision {
        annotations.insert(layout::REVISION.to_string(), revision.clone());
    }
    if let Some(base) = &options.base {
        annotations.insert(
            "org.opencontainers.image.base.name".into(),
            base.reference.clone(),
        );
    }
    let digest = writer.commit(&manifest, annotations)?;
    Ok(Built {
        digest,
        layers: layers
            .into_iter()
            .map(|l| (l.digest, l.size as u64))
            .collect(),
    })
}

fn layer_descriptor(digest: &str, size: usize) -> OciDescriptor {
    OciDescriptor {
        media_type: LAYER_TYPE.into(),
        digest: digest.into(),
        size: size as i64,
        ..Default::default()
    }
}

fn check_binary(binary: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(binary).map_err(|e| {
        anyhow::anyhow!(
            "--binary {}: {e} (build it first: `cargo build --release --workspace`)",
            binary.display()
        )
    })?;
    anyhow::ensure!(
        meta.is_file() && meta.permissions().mode() & 0o111 != 0,
        "--binary {}: not an executable file",
        binary.display()
    );
    Ok(())
}

/// The shared libraries `binary` loads, its ELF interpreter included, as the dynamic loader
/// resolves them on this host (`ldd`). A static binary needs none.
fn linked_libraries(binary: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd (from glibc's libc-bin) to find the binary's shared libraries")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not a dynamic executable") {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || stderr.contains("not a dynamic executable")
        {
            return Ok(vec![]);
        }
        anyhow::bail!("ldd {}: {}", binary.display(), stderr.trim());
    }
    parse_ldd(&text)
}

/// `ldd` lines: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`, `linux-vdso.so.1 (0x...)` (in the kernel: none).
fn parse_ldd(text: &str) -> anyhow::Result<Vec<String>> {
    let mut paths = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let target = line.split_once("=>").map_or(line, |(_, t)| t.trim());
        if target.starts_with("not found") {
            anyhow::bail!(
                "the binary needs {}, which this host lacks",
                line.split_whitespace().next().unwrap_or(line)
            );
        }
        let path = target.split(" (").next().unwrap_or(target).trim();
        if path.starts_with('/') {
            paths.push(path.to_string());
        }
    }
    Ok(paths)
}

/// The system layer's entries.
fn system_entries(gpu: bool, libraries: Vec<String>) -> anyhow::Result<Vec<Entry>> {
    let ca = HOST_CA_BUNDLES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "no CA certificates on this host ({}): install ca-certificates",
                HOST_CA_BUNDLES.join(", ")
            )
        })?;
    let mut entries = vec![
        Entry::file(CA_BUNDLE, Source::Path(ca.to_path_buf()), 0o644),
        Entry::dir(&HOME[1..], 0o755, USER_ID),
        Entry::dir("tmp", 0o1777, 0),
    ];
    if !gpu {
        // The base image brings its own users on the GPU flavour; here there is no base.
        let passwd = format!(
            "root:x:0:0:root:/root:/sbin/nologin\n{USER_NAME}:x:{USER_ID}:{USER_ID}:{USER_NAME}:{HOME}:/sbin/nologin\n"
        );
        let group = format!("root:x:0:\n{USER_NAME}:x:{USER_ID}:\n");
        entries.push(Entry::file(
            "etc/passwd",
            Source::Bytes(passwd.into()),
            0o644,
        ));
        entries.push(Entry::file("etc/group", Source::Bytes(group.into()), 0o644));
        entries.push(Entry::file(
            "etc/nsswitch.conf",
            Source::Bytes(b"passwd: files\ngroup: files\nhosts: files dns\n".to_vec()),
            0o644,
        ));
    }
    for library in libraries {
        let path = library.trim_start_matches('/').to_string();
        entries.push(Entry::file(&path, Source::Path(library.into()), 0o755));
    }
    Ok(entries)
}

/// The image config: the base's (GPU) with the user, environment and our layers added.
fn config(base: Option<&Value>, diff_ids: Vec<String>, gpu: bool) -> Value {
    let ours = [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("SSL_CERT_FILE", format!("/{CA_BUNDLE}")),
        ("HOME", HOME.to_string()),
    ];
    let mut config = base.cloned().unwrap_or_else(|| {
        json!({
            "architecture": architecture(),
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [],
        })
    });
    let inner = &mut config["config"];
    let mut env: Vec<String> = inner["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for (name, value) in ours {
        // The base's PATH (CUDA's tools) stays; the others are ours.
        if name == "PATH" && env.iter().any(|e| e.starts_with("PATH=")) {
            continue;
        }
        env.retain(|e| !e.starts_with(&format!("{name}=")));
        env.push(format!("{name}={value}"));
    }
    inner["Env"] = json!(env);
    inner["User"] = json!(format!("{USER_ID}:{USER_ID}"));
    inner["WorkingDir"] = json!(HOME);
    inner["Cmd"] = json!(["runtime", "--help"]);
    if let Some(map) = inner.as_object_mut() {
        map.remove("Entrypoint");
    }
    config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    let history = config["history"].as_array_mut();
    let added = [
        if gpu {
            "provision image build: CA certificates, home"
        } else {
            "provision image build: system files, shared libraries, CA certificates, user"
        },
        "provision image build: runtime binary",
    ];
    if let Some(history) = history {
        for step in added {
            history.push(json!({"created": "1970-01-01T00:00:00Z", "created_by": step}));
        }
    }
    config
}

/// The OCI name of this host's architecture.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x1)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n\t/lib64/ld-linux-x86-64.so.2 (0x3)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        let missing = parse_ldd("\tlibcuda.so.1 => not found\n").unwrap_err();
        assert!(missing.to_string().contains("libcuda.so.1"), "{missing}");
    }

    #[test]
    fn gpu_config_keeps_the_base_path_and_adds_layers() {
        let base = json!({"architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/usr/local/cuda/bin:/usr/bin", "NVIDIA_VISIBLE_DEVICES=all"], "Entrypoint": ["/nvidia_entrypoint.sh"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:a"]}, "history": [{"created_by": "base"}]});
        let c = config(
            Some(&base),
            vec!["sha256:a".into(), "sha256:b".into(), "sha256:c".into()],
            true,
        );
        let env: Vec<&str> = c["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            env.contains(&"PATH=/usr/local/cuda/bin:/usr/bin"),
            "{env:?}"
        );
        assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=all"));
        assert_eq!(c["config"]["User"], "1000:1000");
        assert!(c["config"].get("Entrypoint").is_none());
        assert_eq!(c["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
        assert_eq!(c["history"].as_array().unwrap().len(), 3);
    }
}
