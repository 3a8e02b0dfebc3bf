//! An in-memory file tree written out as a reproducible tar stream.
//!
//! Entries are kept sorted by path, every mtime is [`EPOCH`] and owners are explicit, so the
//! same tree always produces the same bytes (and so the same layer digest).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// The modification time of every entry (the Unix epoch): build time must not leak into
/// digests.
pub const EPOCH: u64 = 0;

/// Errors while assembling or writing a tree.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("path {path:?} in the image must be absolute and must not contain `..`")]
    BadPath { path: String },
    #[error("{path} is already a {existing} in the image, cannot make it a {wanted}")]
    Conflict {
        path: String,
        existing: &'static str,
        wanted: &'static str,
    },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is neither a file, a directory nor a symlink")]
    Unsupported { path: PathBuf },
    #[error("cannot write tar entry {path}: {source}")]
    Tar { path: String, source: io::Error },
}

/// What a path in the tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::File(_) => "file",
            Kind::Symlink(_) => "symlink",
        }
    }
}

/// One path in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// A set of files, directories and symlinks keyed by their path relative to `/`.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (and its missing parents, root-owned 0755).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self, Error> {
        self.insert(path, Kind::Dir, mode, 0)
    }

    /// Adds a directory owned by `id:id`.
    pub fn dir_owned(&mut self, path: &str, mode: u32, id: u64) -> Result<&mut Self, Error> {
        self.insert(path, Kind::Dir, mode, id)
    }

    /// Adds (or replaces) a root-owned regular file.
    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<&mut Self, Error> {
        self.insert(path, Kind::File(data), mode, 0)
    }

    /// Adds (or replaces) a symlink to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, Error> {
        self.insert(path, Kind::Symlink(target.to_owned()), 0o777, 0)
    }

    /// Copies a host file, symlink or directory (recursively, in sorted order) to `dst`.
    /// Owners become root: the host user who built the image must not show up in it.
    pub fn add_host(&mut self, src: &Path, dst: &str) -> Result<&mut Self, Error> {
        let read_err = |source| Error::Read {
            path: src.to_path_buf(),
            source,
        };
        let meta = fs::symlink_metadata(src).map_err(read_err)?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(src).map_err(read_err)?;
            self.symlink(dst, &target.to_string_lossy())?;
        } else if meta.is_file() {
            self.file(dst, mode, fs::read(src).map_err(read_err)?)?;
        } else if meta.is_dir() {
            self.dir(dst, mode)?;
            let mut names = fs::read_dir(src)
                .map_err(read_err)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(read_err)?;
            names.sort();
            for name in names {
                let child = format!("{}/{}", dst.trim_end_matches('/'), name.to_string_lossy());
                self.add_host(&src.join(&name), &child)?;
            }
        } else {
            return Err(Error::Unsupported {
                path: src.to_path_buf(),
            });
        }
        Ok(self)
    }

    /// The entry at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        normalize(path).ok().and_then(|p| self.entries.get(&p))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when the tree has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, path: &str, kind: Kind, mode: u32, id: u64) -> Result<&mut Self, Error> {
        let path = normalize(path)?;
        if path.is_empty() {
            return Ok(self); // the root itself is implicit
        }
        let mut parent = String::new();
        for part in path.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            match self.entries.get(&parent) {
                None => {
                    self.entries.insert(parent.clone(), dir_entry(0o755, 0));
                }
                Some(e) if e.kind == Kind::Dir => {}
                Some(e) => {
                    return Err(Error::Conflict {
                        path: format!("/{parent}"),
                        existing: e.kind.name(),
                        wanted: "directory",
                    });
                }
            }
        }
        if let Some(existing) = self.entries.get(&path) {
            // A directory stays a directory (re-adding it only updates its mode); a directory
            // cannot silently turn into a file, which would drop everything below it.
            if (existing.kind == Kind::Dir) != (kind == Kind::Dir) {
                return Err(Error::Conflict {
                    path: format!("/{path}"),
                    existing: existing.kind.name(),
                    wanted: kind.name(),
                });
            }
        }
        self.entries.insert(
            path,
            Entry {
                kind,
                mode,
                uid: id,
                gid: id,
            },
        );
        Ok(self)
    }

    /// Writes the tree as a tar stream (GNU headers, sorted, mtime [`EPOCH`]) and finishes it.
    pub fn write_tar<W: Write>(&self, out: W) -> Result<W, Error> {
        let mut builder = tar::Builder::new(out);
        for (path, entry) in &self.entries {
            let tar_err = |source| Error::Tar {
                path: path.clone(),
                source,
            };
            let mut header = tar::Header::new_gnu();
            header.set_mode(entry.mode);
            header.set_uid(entry.uid);
            header.set_gid(entry.gid);
            header.set_mtime(EPOCH);
            match &entry.kind {
                Kind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, format!("{path}/"), io::empty())
                        .map_err(tar_err)?;
                }
                Kind::File(data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(data.len() as u64);
                    builder
                        .append_data(&mut header, path, data.as_slice())
                        .map_err(tar_err)?;
                }
                Kind::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, path, target)
                        .map_err(tar_err)?;
                }
            }
        }
        builder.into_inner().map_err(|source| Error::Tar {
            path: "(end of archive)".into(),
            source,
        })
    }
}

fn dir_entry(mode: u32, id: u64) -> Entry {
    Entry {
        kind: Kind::Dir,
        mode,
        uid: id,
        gid: id,
    }
}

/// `/a/./b/` → `a/b`; refuses relative paths and `..`.
fn normalize(path: &str) -> Result<String, Error> {
    let bad = || Error::BadPath { path: path.into() };
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(bad());
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => parts.push(s.to_str().ok_or_else(bad)?),
            Component::ParentDir | Component::Prefix(_) => return Err(bad()),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(tree: &Tree) -> Vec<(String, tar::EntryType, u32, u64)> {
        let bytes = tree.write_tar(Vec::new()).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn parents_are_created_and_entries_sorted() {
        let mut t = Tree::new();
        t.file("/etc/passwd", 0o644, b"x".to_vec()).unwrap();
        t.symlink("/bin/sh", "busybox").unwrap();
        t.dir("/tmp", 0o1777).unwrap();
        let names: Vec<_> = listing(&t).into_iter().map(|e| e.0).collect();
        assert_eq!(names, ["bin/", "bin/sh", "etc/", "etc/passwd", "tmp/"]);
        assert!(listing(&t).iter().all(|e| e.3 == EPOCH));
    }

    #[test]
    fn same_tree_same_bytes() {
        let build = |order: bool| {
            let mut t = Tree::new();
            if order {
                t.file("/a", 0o644, b"1".to_vec()).unwrap();
                t.file("/b/c", 0o755, b"2".to_vec()).unwrap();
            } else {
                t.file("/b/c", 0o755, b"2".to_vec()).unwrap();
                t.file("/a", 0o644, b"1".to_vec()).unwrap();
            }
            t.write_tar(Vec::new()).unwrap()
        };
        assert_eq!(build(true), build(false));
    }

    #[test]
    fn bad_paths_and_conflicts_are_named() {
        let mut t = Tree::new();
        let e = t.file("etc/x", 0o644, vec![]).unwrap_err();
        assert!(e.to_string().contains("\"etc/x\""), "{e}");
        assert!(t.file("/../x", 0o644, vec![]).is_err());
        t.file("/f", 0o644, vec![]).unwrap();
        let e = t.file("/f/g", 0o644, vec![]).unwrap_err();
        assert!(e.to_string().contains("/f is already a file"), "{e}");
    }
}
