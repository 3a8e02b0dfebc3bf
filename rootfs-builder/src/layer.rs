//! Read-only layer images: a directory or a tar layer turned into an erofs (or ext4) image
//! the guest attaches as a virtio-blk drive and stacks with overlayfs.
//!
//! OCI whiteouts become overlayfs whiteouts on the way in (`.wh.<name>` → a 0:0 character
//! device `<name>`; `.wh..wh..opq` → `trusted.overlay.opaque=y` on its directory). Images are
//! cached by the content of their source under `$WARD_CACHE/layers/<sha256>.<fs>` and appear
//! there by rename, so sandboxes starting at the same time never see a partial image.

use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::{cache, hex};

/// Bumped whenever the conversion changes, so old cache entries are not reused.
const FORMAT: &str = "ward-layer-v1";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Errors while building a layer image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("layer source {path}: {source}")]
    Source { path: PathBuf, source: io::Error },
    #[error("layer source {path} is neither a directory nor a tar file")]
    SourceKind { path: PathBuf },
    #[error(
        "building a layer image needs root (to keep owners, create whiteout devices and set \
         trusted.* xattrs); running as uid {uid}"
    )]
    NotRoot { uid: u32 },
    #[error("cannot unpack tar layer {path}: {source}")]
    Unpack { path: PathBuf, source: io::Error },
    #[error("cannot convert whiteout {path}: {source}")]
    Whiteout { path: PathBuf, source: io::Error },
    #[error("cannot stage {path}: {source}")]
    Stage { path: PathBuf, source: io::Error },
    #[error("`{tool}` failed ({status}): {stderr}")]
    Tool {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("unknown layer filesystem {0:?} (expected erofs or ext4)")]
    UnknownFs(String),
    #[error(transparent)]
    Cache(#[from] cache::Error),
}

/// The filesystem a layer image is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerFs {
    /// Compact and read-only by design; the default.
    Erofs,
    /// The fallback where `mkfs.erofs` is missing; mounted `ro,noload`.
    Ext4,
}

impl LayerFs {
    /// File extension and `mount -t` type.
    pub fn name(self) -> &'static str {
        match self {
            LayerFs::Erofs => "erofs",
            LayerFs::Ext4 => "ext4",
        }
    }

    /// erofs when `mkfs.erofs` is installed, else ext4.
    pub fn preferred() -> Self {
        if find_in_path("mkfs.erofs").is_some() {
            LayerFs::Erofs
        } else {
            LayerFs::Ext4
        }
    }
}

impl std::str::FromStr for LayerFs {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "erofs" => Ok(LayerFs::Erofs),
            "ext4" => Ok(LayerFs::Ext4),
            other => Err(Error::UnknownFs(other.into())),
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// A directory, or a tar layer (plain or gzip'd).
    pub source: PathBuf,
    /// `None` picks [`LayerFs::preferred`].
    pub fs: Option<LayerFs>,
    /// Cache root; `None` means [`cache::cache_dir`].
    pub cache_dir: Option<PathBuf>,
}

/// A layer image in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltLayer {
    pub path: PathBuf,
    pub fs: LayerFs,
    /// Hex SHA-256 naming the image: the conversion format, the filesystem and the source.
    pub key: String,
    /// `true` when the image was already in the cache and nothing was built.
    pub cached: bool,
}

/// Returns the cached image for `spec`, building it first if needed.
pub fn build(spec: &LayerSpec) -> Result<BuiltLayer, Error> {
    let fs_kind = spec.fs.unwrap_or_else(LayerFs::preferred);
    let src = &spec.source;
    let src_err = |source| Error::Source {
        path: src.clone(),
        source,
    };
    let meta = fs::metadata(src).map_err(src_err)?;
    let mut hasher = Sha256::new();
    hasher.update(FORMAT.as_bytes());
    hasher.update([0]);
    hasher.update(fs_kind.name().as_bytes());
    hasher.update([0]);
    if meta.is_dir() {
        hash_dir(src, Path::new(""), &mut hasher).map_err(src_err)?;
    } else if meta.is_file() {
        io::copy(&mut File::open(src).map_err(src_err)?, &mut hasher).map_err(src_err)?;
    } else {
        return Err(Error::SourceKind { path: src.clone() });
    }
    let key = hex(&hasher.finalize());
    let dir = cache::subdir(spec.cache_dir.as_deref(), "layers")?;
    let path = dir.join(format!("{key}.{}", fs_kind.name()));
    if path.exists() {
        return Ok(BuiltLayer {
            path,
            fs: fs_kind,
            key,
            cached: true,
        });
    }

    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        return Err(Error::NotRoot { uid });
    }
    // Staging and the image-in-progress live next to the final file (same filesystem, so the
    // rename is atomic) under dot names no reader looks for; both go away on every error.
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(&dir)
        .map_err(|e| stage_err(&dir, e))?;
    let root = staging.path().join("root");
    if meta.is_dir() {
        run(Command::new("cp").arg("-a").arg(src.join(".")).arg(&root))?;
    } else {
        fs::create_dir(&root).map_err(|e| stage_err(&root, e))?;
        unpack_tar(src, &root)?;
    }
    convert_whiteouts(&root)?;

    let image = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(&dir)
        .map_err(|e| stage_err(&dir, e))?;
    match fs_kind {
        LayerFs::Erofs => make_erofs(&root, image.path())?,
        LayerFs::Ext4 => make_ext4(&root, image.path())?,
    }
    cache::persist(image, &path)?;
    Ok(BuiltLayer {
        path,
        fs: fs_kind,
        key,
        cached: false,
    })
}

fn stage_err(path: &Path, source: io::Error) -> Error {
    Error::Stage {
        path: path.to_path_buf(),
        source,
    }
}

/// Feeds a sorted walk of `dir` into `h`: names, types, modes, owners, device numbers,
/// xattrs, link targets and contents — everything that ends up in the image. containerd's
/// overlay snapshots are already in overlayfs form, so their opaque xattrs must count.
fn hash_dir(base: &Path, rel: &Path, h: &mut Sha256) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(base.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = base.join(&rel);
        let m = fs::symlink_metadata(&path)?;
        h.update(rel.as_os_str().as_bytes());
        h.update(format!("\0{:o}\0{}\0{}\0{}\0", m.mode(), m.uid(), m.gid(), m.rdev()).as_bytes());
        for (name, value) in xattrs(&path)? {
            h.update(&name);
            h.update([b'=']);
            h.update(&value);
            h.update([0]);
        }
        let ft = m.file_type();
        if ft.is_symlink() {
            h.update(fs::read_link(&path)?.as_os_str().as_bytes());
        } else if ft.is_file() {
            h.update(m.len().to_le_bytes());
            io::copy(&mut File::open(&path)?, h)?;
        } else if ft.is_dir() {
            hash_dir(base, &rel, h)?;
        }
        h.update([0xff]);
    }
    Ok(())
}

/// Unpacks a plain or gzip'd tar layer into `root`, keeping owners and modes.
fn unpack_tar(src: &Path, root: &Path) -> Result<(), Error> {
    let err = |source| Error::Unpack {
        path: src.to_path_buf(),
        source,
    };
    let mut file = BufReader::new(File::open(src).map_err(err)?);
    let mut magic = [0u8; 2];
    let gzipped = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    file.rewind().map_err(err)?;
    let reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let mut entries = 0usize;
    for entry in archive.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        // unpack_in refuses paths that escape `root` (`..`, absolute symlink tricks).
        entry.unpack_in(root).map_err(err)?;
        entries += 1;
    }
    if entries == 0 {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a tar archive (no entries)",
        )));
    }
    Ok(())
}

/// Rewrites OCI whiteouts under `dir` into overlayfs whiteouts, recursively.
pub fn convert_whiteouts(dir: &Path) -> Result<(), Error> {
    let err = |path: &Path, source| Error::Whiteout {
        path: path.to_path_buf(),
        source,
    };
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(|e| err(dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| err(dir, e))?;
    names.sort();
    for name in &names {
        let path = dir.join(name);
        let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) else {
            continue;
        };
        fs::remove_file(&path).map_err(|e| err(&path, e))?;
        if name == OPAQUE_MARKER {
            set_xattr(dir, OPAQUE_XATTR, b"y").map_err(|e| err(dir, e))?;
        } else if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // Other `.wh..wh.*` names are aufs bookkeeping (`.wh..wh.plnk`): dropped.
        } else {
            let target = dir.join(OsStr::from_bytes(hidden));
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&target),
                Ok(_) => fs::remove_file(&target),
                Err(_) => Ok(()),
            }
            .map_err(|e| err(&target, e))?;
            mknod_whiteout(&target).map_err(|e| err(&target, e))?;
        }
    }
    for name in &names {
        let path = dir.join(name);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            convert_whiteouts(&path)?;
        }
    }
    Ok(())
}

/// An overlayfs whiteout: a character device 0:0.
fn mknod_whiteout(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let n = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: both strings are NUL-terminated and live across the call; `value` is a valid
    // buffer of `value.len()` bytes.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The extended attributes of `path` (not following symlinks), sorted by name.
fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut names = vec![0u8; 4096];
    // SAFETY: `c` is NUL-terminated; `names` is writable for its whole length.
    let len = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let Ok(len) = usize::try_from(len) else {
        let err = io::Error::last_os_error();
        // Filesystems without xattrs have nothing to hash.
        return if err.raw_os_error() == Some(libc::ENOTSUP) {
            Ok(Vec::new())
        } else {
            Err(err)
        };
    };
    let mut out = Vec::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let n = CString::new(name).map_err(io::Error::other)?;
        let mut value = vec![0u8; 65536];
        // SAFETY: both strings are NUL-terminated; `value` is writable for its whole length.
        let vlen = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        let vlen = usize::try_from(vlen).map_err(|_| io::Error::last_os_error())?;
        value.truncate(vlen);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

fn make_erofs(root: &Path, image: &Path) -> Result<(), Error> {
    // Fixed timestamps and UUID: the same staged tree gives the same image.
    run(Command::new("mkfs.erofs")
        .args([
            "--quiet",
            "-T0",
            "-U",
            "00000000-0000-0000-0000-000000000000",
        ])
        .arg(image)
        .arg(root))
}

fn make_ext4(root: &Path, image: &Path) -> Result<(), Error> {
    let (bytes, inodes) = tree_size(root).map_err(|e| stage_err(root, e))?;
    // Room for metadata on top of the data; ext4 cannot grow once it is attached read-only.
    let kib = bytes / 1024 * 5 / 4 + 8 * 1024;
    run(Command::new("mke2fs")
        .env("E2FSPROGS_FAKE_TIME", "1")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0"])
        .args([
            "-O",
            "^has_journal",
            "-U",
            "00000000-0000-0000-0000-000000000000",
        ])
        .args([
            "-E",
            "root_owner=0:0,hash_seed=00000000-0000-0000-0000-000000000000",
        ])
        .args(["-N", &(inodes + 64).to_string()])
        .arg("-d")
        .arg(root)
        .arg(image)
        .arg(format!("{kib}k")))
}

/// Bytes (rounded up to 4 KiB blocks) and inodes the tree under `dir` needs.
fn tree_size(dir: &Path) -> io::Result<(u64, u64)> {
    let (mut bytes, mut inodes) = (4096, 1);
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        inodes += 1;
        bytes += m.len().div_ceil(4096) * 4096;
        if m.is_dir() {
            let (b, i) = tree_size(&e.path())?;
            bytes += b;
            inodes += i;
        }
    }
    Ok((bytes, inodes))
}

fn run(cmd: &mut Command) -> Result<(), Error> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| Error::Tool {
        tool: tool.clone(),
        status: "could not start".into(),
        stderr: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Tool {
        tool,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_names_parse() {
        assert_eq!("erofs".parse::<LayerFs>().unwrap(), LayerFs::Erofs);
        assert_eq!("ext4".parse::<LayerFs>().unwrap(), LayerFs::Ext4);
        let e = "xfs".parse::<LayerFs>().unwrap_err().to_string();
        assert!(e.contains("\"xfs\""), "{e}");
    }

    #[test]
    fn dir_hash_follows_content() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a"), "1").unwrap();
        let hash = || {
            let mut h = Sha256::new();
            hash_dir(d.path(), Path::new(""), &mut h).unwrap();
            hex(&h.finalize())
        };
        let first = hash();
        assert_eq!(first, hash());
        fs::write(d.path().join("a"), "2").unwrap();
        let second = hash();
        assert_ne!(first, second);
        if set_xattr(&d.path().join("a"), "user.ward", b"1").is_ok() {
            assert_ne!(second, hash(), "xattrs count");
        }
    }
}
