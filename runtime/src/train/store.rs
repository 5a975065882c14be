//! Where datasets are read from and models written to: a local directory tree, addressed by
//! `/`-joined keys under a root. Writes are atomic (temp file in the same directory + rename), so
//! a job killed mid-write leaves the previous version, never a torn file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn open(uri: &str) -> Result<Store> {
        if uri.starts_with("s3://") {
            bail!("{uri}: S3 roots need the runtime's io layer, which this build lacks");
        }
        let root = uri.strip_prefix("file://").unwrap_or(uri);
        Ok(Store { root: PathBuf::from(root) })
    }

    pub fn uri(&self, key: &str) -> String {
        self.path(key).display().to_string()
    }

    fn path(&self, key: &str) -> PathBuf {
        if key.is_empty() {
            self.root.clone()
        } else {
            self.root.join(key)
        }
    }

    pub fn exists_root(&self) -> bool {
        self.root.exists()
    }

    /// `None` when the object does not exist.
    pub fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(key);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.path(key).is_file())
    }

    pub fn write(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Names of the sub-directories of `key` (one level, sorted).
    pub fn list_dirs(&self, key: &str) -> Result<Vec<String>> {
        let path = self.path(key);
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", path.display())),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}
