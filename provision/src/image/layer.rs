//! One reproducible layer: entries sorted by path, every timestamp 0, owners numeric, written
//! as tar, gzip-compressed in the same pass, both digests computed on the way.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use sha2::{Digest, Sha256};

/// What one path of a layer holds.
#[derive(Debug, Clone)]
pub enum Content {
    Dir,
    File(Source),
}

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Read when the layer is written (symlinks followed: the image gets the file).
    Path(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative to the image root, without a leading `/`.
    pub path: String,
    pub content: Content,
    pub mode: u32,
    pub uid: u64,
}

impl Entry {
    pub fn dir(path: &str, mode: u32, uid: u64) -> Self {
        Self {
            path: path.into(),
            content: Content::Dir,
            mode,
            uid,
        }
    }

    pub fn file(path: &str, source: Source, mode: u32) -> Self {
        Self {
            path: path.into(),
            content: Content::File(source),
            mode,
            uid: 0,
        }
    }
}

/// A written layer: the gzip bytes and both digests.
#[derive(Debug, Clone)]
pub struct Layer {
    pub gzip: Vec<u8>,
    /// sha256 of the gzip bytes: the blob's name.
    pub digest: String,
    /// sha256 of the uncompressed tar: the config's `rootfs.diff_ids`.
    pub diff_id: String,
}

/// Writes `entries` (with every parent directory they need) as one layer.
pub fn write(mut entries: Vec<Entry>) -> anyhow::Result<Layer> {
    add_parents(&mut entries);
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries.dedup_by(|a, b| a.path == b.path);

    let gzip = flate2::GzBuilder::new()
        .mtime(0)
        .write(HashingWriter::new(Vec::new()), flate2::Compression::fast());
    let mut tar = tar::Builder::new(HashingWriter::new(gzip));
    tar.mode(tar::HeaderMode::Deterministic);
    for entry in &entries {
        append(&mut tar, entry)?;
    }
    let tar_out = tar.into_inner().context("finishing the layer's tar")?;
    let diff_id = tar_out.digest();
    let compressed = tar_out
        .inner
        .finish()
        .context("finishing the layer's gzip")?;
    let digest = compressed.digest();
    Ok(Layer {
        gzip: compressed.inner,
        digest,
        diff_id,
    })
}

fn append<W: Write>(tar: &mut tar::Builder<W>, entry: &Entry) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mode(entry.mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.uid);
    header.set_mtime(0);
    match &entry.content {
        Content::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            tar.append_data(&mut header, format!("{}/", entry.path), std::io::empty())
                .with_context(|| format!("adding {}/", entry.path))?;
        }
        Content::File(source) => {
            let bytes = match source {
                Source::Bytes(b) => std::borrow::Cow::Borrowed(b.as_slice()),
                Source::Path(p) => std::borrow::Cow::Owned(
                    std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
                ),
            };
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(bytes.len() as u64);
            tar.append_data(&mut header, &entry.path, bytes.as_ref())
                .with_context(|| format!("adding {}", entry.path))?;
        }
    }
    Ok(())
}

/// Every directory above an entry gets an entry of its own (root-owned, 0755), as a tar that
/// `docker export` writes has, so that the order of layers never leaves a path without parent.
fn add_parents(entries: &mut Vec<Entry>) {
    let mut dirs = std::collections::BTreeSet::new();
    for entry in entries.iter() {
        let mut path = entry.path.as_str();
        while let Some((parent, _)) = path.rsplit_once('/') {
            dirs.insert(parent.to_string());
            path = parent;
        }
    }
    for dir in dirs {
        if !entries.iter().any(|e| e.path == dir) {
            entries.push(Entry::dir(&dir, 0o755, 0));
        }
    }
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
        }
    }

    fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hash.clone().finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
