//! Where datasets are read from and models written to: a root [`Location`] (local path or
//! `s3://bucket/prefix`) addressed by `/`-joined keys, on top of `runtime::io`. Writes are atomic
//! (local: temporary file + rename; S3: one PUT), so a job killed mid-write leaves the previous
//! version of a checkpoint or summary, never a torn one.

use anyhow::Result;

use crate::io::{self, Location};

#[derive(Debug, Clone)]
pub struct Store {
    root: Location,
}

impl Store {
    pub fn open(uri: &str) -> Result<Store> {
        Ok(Store {
            root: Location::parse(uri)?,
        })
    }

    fn loc(&self, key: &str) -> Location {
        self.root.join(key)
    }

    pub fn uri(&self, key: &str) -> String {
        self.loc(key).to_string()
    }

    /// False only for a local root that does not exist (S3 has no directories to check).
    pub fn exists_root(&self) -> bool {
        self.root.as_local().is_none_or(|p| p.is_dir())
    }

    /// `None` when the object does not exist.
    pub fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let loc = self.loc(key);
        if !io::exists(&loc)? {
            return Ok(None);
        }
        io::read(&loc).map(Some)
    }

    pub fn exists(&self, key: &str) -> Result<bool> {
        io::exists(&self.loc(key))
    }

    pub fn write(&self, key: &str, bytes: &[u8]) -> Result<()> {
        io::write(&self.loc(key), bytes)
    }

    /// Names of the sub-directories of `key` (one level, sorted).
    pub fn list_dirs(&self, key: &str) -> Result<Vec<String>> {
        io::list_dirs(&self.loc(key))
    }
}
