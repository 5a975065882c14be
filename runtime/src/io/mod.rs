//! Where the runtime reads and writes: local paths and `s3://bucket/prefix` URIs behind one
//! synchronous API (docs/design.md, "Locations and endpoints"). S3 calls run on a private tokio
//! runtime, so callers must not use these functions from inside an async task.
//!
//! Output directories are written through [`OutputDir`]: files are staged in a local temporary
//! directory and appear at the target only on [`OutputDir::commit`]. Locally the commit is a
//! rename; on S3 every file is uploaded (multipart when large) and a `_SUCCESS` manifest is
//! written last. [`is_complete`] checks that marker, so a run killed mid-commit never passes for
//! a finished one.

pub mod config;
pub mod iceberg;
mod local;
mod s3;
pub mod ticks;
pub use s3::{upload_in_parts, use_config_loader};

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The completion marker of a committed output directory (the Hadoop/Spark convention).
pub const MARKER: &str = "_SUCCESS";

/// A parsed URI: a local path or an S3 bucket and key (no leading or trailing slash).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    Local(PathBuf),
    S3 { bucket: String, key: String },
}

impl Location {
    /// Parses `s3://bucket/key`, `file:///path` or a plain local path.
    pub fn parse(uri: &str) -> Result<Location> {
        let uri = uri.trim();
        if uri.is_empty() {
            bail!("empty location");
        }
        if let Some(rest) = uri
            .strip_prefix("s3://")
            .or_else(|| uri.strip_prefix("s3a://"))
        {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("`{uri}` has no bucket name");
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                key: key.trim_matches('/').to_string(),
            });
        }
        if let Some(path) = uri.strip_prefix("file://") {
            return Ok(Location::Local(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = uri.split_once("://") {
            bail!("`{uri}`: unsupported scheme `{scheme}://` (use a local path or s3://bucket/prefix)");
        }
        Ok(Location::Local(PathBuf::from(uri)))
    }

    /// A location below this one; `rel` uses `/` separators.
    pub fn join(&self, rel: &str) -> Location {
        let rel = rel.trim_matches('/');
        if rel.is_empty() {
            return self.clone();
        }
        match self {
            Location::Local(p) => Location::Local(p.join(rel)),
            Location::S3 { bucket, key } => Location::S3 {
                bucket: bucket.clone(),
                key: if key.is_empty() {
                    rel.to_string()
                } else {
                    format!("{key}/{rel}")
                },
            },
        }
    }

    /// The last path segment (file or directory name).
    pub fn file_name(&self) -> &str {
        match self {
            Location::Local(p) => p.file_name().and_then(|n| n.to_str()).unwrap_or(""),
            Location::S3 { key, .. } => key.rsplit('/').next().unwrap_or(""),
        }
    }

    /// The part of `self` below `base`, with `/` separators; `None` when not below it.
    pub fn relative_to(&self, base: &Location) -> Option<String> {
        match (self, base) {
            (Location::Local(p), Location::Local(b)) => p.strip_prefix(b).ok().map(|r| {
                r.components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/")
            }),
            (
                Location::S3 { bucket, key },
                Location::S3 {
                    bucket: bb,
                    key: bk,
                },
            ) if bucket == bb => {
                if bk.is_empty() {
                    Some(key.clone())
                } else if key == bk {
                    Some(String::new())
                } else {
                    key.strip_prefix(&format!("{bk}/")).map(str::to_string)
                }
            }
            _ => None,
        }
    }

    pub fn is_s3(&self) -> bool {
        matches!(self, Location::S3 { .. })
    }

    /// The local path, for a local location.
    pub fn as_local(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::S3 { .. } => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, key } if key.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

impl std::str::FromStr for Location {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Location::parse(s)
    }
}

/// Every file under `loc` (recursively), sorted; `loc` itself when it is a file; empty when
/// nothing is there.
pub fn list(loc: &Location) -> Result<Vec<Location>> {
    match loc {
        Location::Local(p) => local::list(p).with_context(|| format!("listing {loc}")),
        Location::S3 { bucket, key } => {
            s3::list(bucket, key).with_context(|| format!("listing {loc}"))
        }
    }
}

/// The names of the immediate subdirectories of `loc` (S3: common prefixes), sorted.
pub fn list_dirs(loc: &Location) -> Result<Vec<String>> {
    match loc {
        Location::Local(p) => local::list_dirs(p).with_context(|| format!("listing {loc}")),
        Location::S3 { bucket, key } => {
            s3::list_dirs(bucket, key).with_context(|| format!("listing {loc}"))
        }
    }
}

/// Whether a file exists at `loc`.
pub fn exists(loc: &Location) -> Result<bool> {
    match loc {
        Location::Local(p) => Ok(p.is_file()),
        Location::S3 { bucket, key } => {
            s3::exists(bucket, key).with_context(|| format!("checking {loc}"))
        }
    }
}

/// Whether `dir` was written by a committed [`OutputDir`].
pub fn is_complete(dir: &Location) -> Result<bool> {
    exists(&dir.join(MARKER))
}

/// The whole file.
pub fn read(loc: &Location) -> Result<Vec<u8>> {
    match loc {
        Location::Local(p) => std::fs::read(p).with_context(|| format!("reading {loc}")),
        Location::S3 { bucket, key } => {
            s3::read(bucket, key).with_context(|| format!("reading {loc}"))
        }
    }
}

pub(crate) async fn read_async(loc: &Location) -> Result<Vec<u8>> {
    match loc {
        Location::Local(p) => tokio::fs::read(p)
            .await
            .with_context(|| format!("reading {loc}")),
        Location::S3 { bucket, key } => s3::read_async(bucket, key)
            .await
            .with_context(|| format!("reading {loc}")),
    }
}

/// A file available on the local disk: the original for a local location, a temporary copy
/// (removed on drop) for S3.
pub struct LocalFile {
    path: PathBuf,
    _temp: Option<tempfile::TempPath>,
}

impl LocalFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `loc` as a local file (downloads S3 objects to a temporary file).
pub fn fetch(loc: &Location) -> Result<LocalFile> {
    match loc {
        Location::Local(p) => {
            if !p.is_file() {
                bail!("{loc}: no such file");
            }
            Ok(LocalFile {
                path: p.clone(),
                _temp: None,
            })
        }
        Location::S3 { bucket, key } => {
            let suffix = loc
                .file_name()
                .rsplit_once('.')
                .map(|(_, e)| format!(".{e}"))
                .unwrap_or_default();
            let temp = tempfile::Builder::new()
                .prefix("runtime-fetch-")
                .suffix(&suffix)
                .tempfile()?
                .into_temp_path();
            s3::download(bucket, key, &temp).with_context(|| format!("downloading {loc}"))?;
            Ok(LocalFile {
                path: temp.to_path_buf(),
                _temp: Some(temp),
            })
        }
    }
}

/// Writes one file; readers see the old content or the new, never a part (local: temporary
/// file and rename; S3: a single PUT or a completed multipart upload).
pub fn write(loc: &Location, bytes: &[u8]) -> Result<()> {
    match loc {
        Location::Local(p) => {
            local::write_atomic(p, bytes).with_context(|| format!("writing {loc}"))
        }
        Location::S3 { bucket, key } => {
            s3::put(bucket, key, bytes).with_context(|| format!("writing {loc}"))
        }
    }
}

/// Uploads (or copies) a local file to `loc`.
pub fn upload(src: &Path, loc: &Location) -> Result<()> {
    match loc {
        Location::Local(p) => local::copy_atomic(src, p).with_context(|| format!("writing {loc}")),
        Location::S3 { bucket, key } => {
            s3::upload_file(src, bucket, key).with_context(|| format!("uploading {loc}"))
        }
    }
}

/// Removes every file under `loc` (nothing there is not an error).
pub fn remove_all(loc: &Location) -> Result<()> {
    match loc {
        Location::Local(p) => local::remove_all(p).with_context(|| format!("removing {loc}")),
        Location::S3 { bucket, key } => {
            let keys: Vec<String> = s3::list(bucket, key)?
                .into_iter()
                .filter_map(|l| match l {
                    Location::S3 { key, .. } => Some(key),
                    Location::Local(_) => None,
                })
                .collect();
            s3::delete_keys(bucket, &keys).with_context(|| format!("removing {loc}"))
        }
    }
}

/// An output directory written all at once: stage files, then [`commit`](OutputDir::commit).
/// Dropped without a commit, it leaves nothing at the target.
pub struct OutputDir {
    target: Location,
    staging: tempfile::TempDir,
}

impl OutputDir {
    /// Starts staging for `target`; nothing is created there yet.
    pub fn new(target: Location) -> Result<OutputDir> {
        let staging = tempfile::Builder::new()
            .prefix("runtime-stage-")
            .tempdir()
            .context("creating a staging directory (set TMPDIR to a writable disk)")?;
        Ok(OutputDir { target, staging })
    }

    pub fn target(&self) -> &Location {
        &self.target
    }

    /// The staging path of `rel` (parents created), for writers that want a path or a file.
    pub fn path(&self, rel: &str) -> Result<PathBuf> {
        let path = self.staging.path().join(rel.trim_matches('/'));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        Ok(path)
    }

    /// Stages `bytes` as `rel`.
    pub fn put(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(rel)?;
        std::fs::write(&path, bytes).with_context(|| format!("staging {rel}"))
    }

    /// Publishes every staged file at the target, replacing what was there, and writes the
    /// `_SUCCESS` manifest (file names and sizes) last.
    pub fn commit(self) -> Result<()> {
        let files = local::list(self.staging.path())?;
        let mut manifest = serde_json::Map::new();
        let mut rels = Vec::new();
        for file in &files {
            let Location::Local(p) = file else {
                unreachable!("staging is local")
            };
            let rel = file
                .relative_to(&Location::Local(self.staging.path().to_path_buf()))
                .unwrap_or_default();
            manifest.insert(rel.clone(), serde_json::json!(std::fs::metadata(p)?.len()));
            rels.push(rel);
        }
        let marker = serde_json::to_vec_pretty(&serde_json::json!({
            "committed_at": chrono::Utc::now().to_rfc3339(),
            "files": manifest,
        }))?;
        match &self.target {
            Location::Local(target) => {
                std::fs::write(self.staging.path().join(MARKER), &marker)?;
                let staging = self.staging.keep();
                local::publish_dir(&staging, target)
                    .with_context(|| format!("committing {}", self.target))
            }
            Location::S3 { bucket, key } => {
                // An old marker must not vouch for a half-replaced directory.
                s3::delete_keys(bucket, &[format!("{key}/{MARKER}")])?;
                for rel in &rels {
                    s3::upload_file(
                        &self.staging.path().join(rel),
                        bucket,
                        &format!("{key}/{rel}"),
                    )
                    .with_context(|| format!("uploading {}", self.target.join(rel)))?;
                }
                let stale: Vec<String> = s3::list(bucket, key)?
                    .into_iter()
                    .filter_map(|l| l.relative_to(&self.target))
                    .filter(|rel| !rels.contains(rel))
                    .map(|rel| format!("{key}/{rel}"))
                    .collect();
                s3::delete_keys(bucket, &stale)?;
                s3::put(bucket, &format!("{key}/{MARKER}"), &marker)
                    .with_context(|| format!("committing {}", self.target))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_joins() {
        let s3 = Location::parse("s3://b/a/b/").unwrap();
        assert_eq!(
            s3,
            Location::S3 {
                bucket: "b".into(),
                key: "a/b".into()
            }
        );
        assert_eq!(s3.join("c/d.parquet").to_string(), "s3://b/a/b/c/d.parquet");
        assert_eq!(s3.join("c/d").relative_to(&s3).unwrap(), "c/d");
        let root = Location::parse("s3://b").unwrap();
        assert_eq!(root.join("x").to_string(), "s3://b/x");
        assert_eq!(
            Location::parse("file:///tmp/x").unwrap(),
            Location::Local("/tmp/x".into())
        );
        assert_eq!(
            Location::parse("rel/dir").unwrap(),
            Location::Local("rel/dir".into())
        );
        assert!(Location::parse("gs://x/y").is_err());
        assert!(Location::parse("s3:///x").is_err());
    }

    #[test]
    fn output_dir_is_invisible_until_commit() {
        let root = tempfile::tempdir().unwrap();
        let target = Location::Local(root.path().join("a/b"));
        let out = OutputDir::new(target.clone()).unwrap();
        out.put("x.json", b"{}").unwrap();
        out.put("sub/y.bin", b"yy").unwrap();
        drop(out);
        assert!(!root.path().join("a").exists());

        let out = OutputDir::new(target.clone()).unwrap();
        out.put("x.json", b"{}").unwrap();
        out.put("sub/y.bin", b"yy").unwrap();
        assert!(!is_complete(&target).unwrap());
        out.commit().unwrap();
        assert!(is_complete(&target).unwrap());
        let names: Vec<String> = list(&target)
            .unwrap()
            .iter()
            .map(|l| l.relative_to(&target).unwrap())
            .collect();
        assert_eq!(names, vec!["_SUCCESS", "sub/y.bin", "x.json"]);

        // A second commit replaces the directory as a whole.
        let out = OutputDir::new(target.clone()).unwrap();
        out.put("z", b"z").unwrap();
        out.commit().unwrap();
        let names: Vec<String> = list(&target)
            .unwrap()
            .iter()
            .map(|l| l.relative_to(&target).unwrap())
            .collect();
        assert_eq!(names, vec!["_SUCCESS", "z"]);
        let leftovers: Vec<_> = std::fs::read_dir(root.path().join("a")).unwrap().collect();
        assert_eq!(
            leftovers.len(),
            1,
            "no staging or backup directories left beside the target"
        );
    }
}
