//! An OCI image layout on disk (`oci-layout`, `index.json`, `blobs/sha256/...`): what `build`
//! writes and `push` reads; also readable by skopeo, crane or podman (`oci:DIR`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use serde_json::{json, Value};

use super::{sha256_digest, INDEX_TYPE, MANIFEST_TYPE};

/// The index annotation that records the source revision (the git tag `push` adds).
pub const REVISION: &str = "org.opencontainers.image.revision";
/// The index annotation that records the flavour (`cpu` or `gpu`: the tag `push` adds).
pub const FLAVOUR: &str = "io.provision.flavour";

/// A built image, as `push` reads it back.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    /// The manifest exactly as written (its digest is the image's).
    pub manifest_bytes: Vec<u8>,
    pub manifest: OciImageManifest,
    pub digest: String,
    pub flavour: String,
    pub revision: Option<String>,
}

impl Image {
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        blob_path(&self.dir, digest)
    }

    /// Every blob the manifest names, config last.
    pub fn blobs(&self) -> Vec<&OciDescriptor> {
        let mut blobs: Vec<&OciDescriptor> = self.manifest.layers.iter().collect();
        blobs.push(&self.manifest.config);
        blobs
    }
}

pub fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap_or(digest))
}

/// A layout being written in a fresh directory beside its final place; `commit` moves it there,
/// so an interrupted build never leaves half an image where `push` would read it.
pub struct Writer {
    tmp: PathBuf,
    out: PathBuf,
}

impl Writer {
    pub fn new(out: &Path) -> anyhow::Result<Self> {
        let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let name = out
            .file_name()
            .context("the output directory needs a name")?;
        let tmp = out.with_file_name(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("blobs/sha256"))
            .with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Self {
            tmp,
            out: out.to_path_buf(),
        })
    }

    /// Stores a blob under its digest (once).
    pub fn blob(&self, digest: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let path = blob_path(&self.tmp, digest);
        if !path.exists() {
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Writes the manifest and index and moves the layout into place; returns the digest.
    pub fn commit(
        self,
        manifest: &OciImageManifest,
        annotations: BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        let manifest_bytes = serde_json::to_vec(manifest)?;
        let digest = sha256_digest(&manifest_bytes);
        self.blob(&digest, &manifest_bytes)?;
        let index = json!({
            "schemaVersion": 2,
            "mediaType": INDEX_TYPE,
            "manifests": [{
                "mediaType": MANIFEST_TYPE,
                "digest": digest,
                "size": manifest_bytes.len(),
                "annotations": annotations,
            }],
        });
        std::fs::write(self.tmp.join("index.json"), serde_json::to_vec(&index)?)?;
        std::fs::write(
            self.tmp.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        if self.out.exists() {
            std::fs::remove_dir_all(&self.out)
                .with_context(|| format!("replacing {}", self.out.display()))?;
        }
        std::fs::rename(&self.tmp, &self.out)
            .with_context(|| format!("moving the image to {}", self.out.display()))?;
        Ok(digest)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// Reads the image a `build` wrote to `dir`, checking that every blob it names is there.
pub fn read(dir: &Path) -> anyhow::Result<Image> {
    let index_path = dir.join("index.json");
    let index: Value = match std::fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not JSON", index_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "no image at {}: build it first (`provision image build --binary target/release/runtime`)",
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", index_path.display())),
    };
    let entry = index["manifests"]
        .get(0)
        .with_context(|| format!("{} lists no manifest", index_path.display()))?;
    let digest = entry["digest"]
        .as_str()
        .context("index.json: manifest without a digest")?
        .to_string();
    let annotation = |key: &str| entry["annotations"][key].as_str().map(String::from);
    let manifest_bytes = std::fs::read(blob_path(dir, &digest))
        .with_context(|| format!("the image at {} lacks its manifest", dir.display()))?;
    anyhow::ensure!(
        sha256_digest(&manifest_bytes) == digest,
        "the image at {} is damaged: its manifest does not match {digest}",
        dir.display()
    );
    let manifest: OciImageManifest = serde_json::from_slice(&manifest_bytes)?;
    let image = Image {
        dir: dir.to_path_buf(),
        manifest_bytes,
        manifest,
        digest,
        flavour: annotation(FLAVOUR).unwrap_or_else(|| "cpu".into()),
        revision: annotation(REVISION),
    };
    for blob in image.blobs() {
        let path = image.blob_path(&blob.digest);
        let size = std::fs::metadata(&path).map(|m| m.len()).ok();
        anyhow::ensure!(
            size == Some(blob.size as u64),
            "the image at {} is damaged: blob {} is missing or truncated (build it again)",
            dir.display(),
            blob.digest
        );
    }
    Ok(image)
}
