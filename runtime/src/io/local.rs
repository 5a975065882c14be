//! Local files: listing, atomic single-file writes and whole-directory publishing.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Location;

pub(super) fn list(root: &Path) -> Result<Vec<Location>> {
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    if meta.is_file() {
        return Ok(vec![Location::Local(root.to_path_buf())]);
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() || (kind.is_symlink() && path.is_dir()) {
                stack.push(path);
            } else {
                out.push(Location::Local(path));
            }
        }
    }
    out.sort();
    Ok(out)
}

pub(super) fn list_dirs(root: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.path().is_dir() {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// A hidden sibling of `path` for staging or backups: `.{name}.{tag}-{pid}-{n}`.
fn sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n: u32 = rand::random();
    path.with_file_name(format!(".{name}.{tag}-{}-{n:08x}", std::process::id()))
}

/// A hidden temporary file beside `path` (same filesystem, so persisting it is a rename),
/// removed when dropped unless persisted. Created with the mode `std::fs::write` gives (0666
/// less the umask), not tempfile's private 0600: the outputs are shared files.
fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    Ok(builder.tempfile_in(parent)?)
}

pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = temp_beside(path)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path)?;
    Ok(())
}

pub(super) fn copy_atomic(src: &Path, path: &Path) -> Result<()> {
    let mut tmp = temp_beside(path)?;
    let mut from = std::fs::File::open(src)?;
    std::io::copy(&mut from, tmp.as_file_mut())?;
    // As `std::fs::copy`: the copy gets the source's permission bits.
    tmp.as_file()
        .set_permissions(from.metadata()?.permissions())?;
    tmp.persist(path)?;
    Ok(())
}

pub(super) fn remove_all(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(std::fs::remove_dir_all(path)?),
        Ok(_) => Ok(std::fs::remove_file(path)?),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Moves the finished `staging` directory to `target`, replacing any old one. The rename makes
/// the new directory appear whole; when `staging` is on another filesystem it is first copied
/// to a hidden sibling of the target, so the final step is still a rename.
pub(super) fn publish_dir(staging: &Path, target: &Path) -> Result<()> {
    let result = publish(staging, target);
    if staging.exists() {
        let _ = std::fs::remove_dir_all(staging);
    }
    result
}

fn publish(staging: &Path, target: &Path) -> Result<()> {
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    // Two steps so that the directory renamed over the target is always on its filesystem.
    let next = sibling(target, "new");
    if std::fs::rename(staging, &next).is_err() {
        copy_tree(staging, &next).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&next);
        })?;
    }
    let old = sibling(target, "old");
    let had_old = match std::fs::rename(target, &old) {
        Ok(()) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&next);
            return Err(e).with_context(|| format!("moving the old {} aside", target.display()));
        }
    };
    if let Err(e) = std::fs::rename(&next, target) {
        if had_old {
            let _ = std::fs::rename(&old, target);
        }
        let _ = std::fs::remove_dir_all(&next);
        return Err(e.into());
    }
    if had_old {
        remove_all(&old)?;
    }
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}
