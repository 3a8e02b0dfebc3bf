//! The content-addressed cache (`$WARD_CACHE`, default `~/.cache/ward`).
//!
//! Files enter the cache only by `rename(2)` from a temporary file in the same directory, so a
//! concurrent reader (another sandbox starting) sees either the whole file or none.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Errors from the cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot find the cache directory: neither WARD_CACHE nor HOME is set")]
    NoCacheDir,
    #[error("cannot create cache directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The cache root: `$WARD_CACHE`, else `$HOME/.cache/ward`.
pub fn cache_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("WARD_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or(Error::NoCacheDir)?;
    Ok(PathBuf::from(home).join(".cache").join("ward"))
}

/// `<root>/<kind>`, created if missing; `root` defaults to [`cache_dir`].
pub fn subdir(root: Option<&Path>, kind: &str) -> Result<PathBuf, Error> {
    let dir = match root {
        Some(r) => r.join(kind),
        None => cache_dir()?.join(kind),
    };
    fs::create_dir_all(&dir).map_err(|source| Error::CreateDir {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// Writes `bytes` to `path` atomically: a temporary file next to it, fsync, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = parent_dir(path);
    fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    persist(tmp, path)
}

/// Makes a finished temporary file visible at `path` (fsync, mode 0644, rename).
pub fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    tmp.as_file().sync_all().map_err(err)?;
    // tempfile creates 0600; cached images are read by other users' shims too.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_leaves_only_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.bin");
        write_atomic(&path, b"hello").unwrap();
        write_atomic(&path, b"again").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"again");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.bin"]);
    }
}
