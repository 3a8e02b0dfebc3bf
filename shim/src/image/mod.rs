//! Images for `ward run`: an OCI image archive (`oci-archive:` tarball), an OCI layout
//! directory, or `demo` (the built-in busybox image). Loading one yields its run config and
//! its layers as directories (bottom first), unpacked once and cached by diff id.

mod oci;
mod unpack;

use std::fmt;
use std::path::{Path, PathBuf};

use ward_rootfs::image::ImageSpec;

/// What the user named as the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// The built-in demo image.
    Demo,
    /// An OCI archive or layout on disk.
    Path(PathBuf),
}

impl ImageRef {
    /// `demo` is the built-in image; anything else is a path.
    pub fn parse(s: &str) -> Self {
        if s == "demo" {
            Self::Demo
        } else {
            Self::Path(PathBuf::from(s))
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Demo => f.write_str("demo"),
            Self::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The parts of the image config `ward run` uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

/// A loaded image.
#[derive(Debug, Clone)]
pub struct Image {
    /// The archive or layout it came from.
    pub path: PathBuf,
    /// `sha256:<hex>` of the manifest.
    pub manifest_digest: String,
    pub config: ImageConfig,
    /// Unpacked layer directories, bottom first.
    pub layers: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {image}: {source}")]
    Open {
        image: PathBuf,
        source: std::io::Error,
    },
    #[error("image {image} is not an OCI image: {why}")]
    NotOci { image: PathBuf, why: String },
    #[error("image {image}: blob {name} is missing")]
    MissingBlob { image: PathBuf, name: String },
    #[error("image {image}: digest {digest:?} is not a sha256 digest")]
    BadDigest { image: PathBuf, digest: String },
    #[error("image {image}: blob {blob} does not match its digest (content hashes to {actual})")]
    DigestMismatch {
        image: PathBuf,
        blob: String,
        actual: String,
    },
    #[error("image {image}: layer {blob}: {why}")]
    Layer {
        image: PathBuf,
        blob: String,
        why: String,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("layer cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building the demo image: {0}")]
    Demo(String),
}

/// The demo image archive in the cache: busybox plus the static `ward-workload` (when one
/// is built: `scripts/static-bin.sh ward-workload`), built once, then found again through
/// a small reference file keyed by ward's version and the identity of the files it was
/// built from (building it costs a tar and a gzip, half a second here).
pub fn demo_image() -> Result<PathBuf, ImageError> {
    let spec = ward_rootfs::demo::find_static_workload().map_or_else(
        |_| ImageSpec::default(),
        |w| ward_rootfs::demo::demo_spec(&w),
    );
    let reference = demo_reference(&spec);
    if let Some(path) = reference
        .as_ref()
        .and_then(|r| std::fs::read_to_string(r).ok())
        .map(PathBuf::from)
        .filter(|p| p.is_file())
    {
        return Ok(path);
    }
    let built = ward_rootfs::image::build(&spec).map_err(|e| ImageError::Demo(e.to_string()))?;
    if let Some(r) = reference {
        // Only a shortcut: without it the next run builds the same bytes again.
        let _ = ward_rootfs::cache::write_atomic(&r, built.path.display().to_string().as_bytes());
    }
    Ok(built.path)
}

/// `<cache>/images/demo-<key>.ref`; `None` when busybox or the cache cannot be found.
fn demo_reference(spec: &ImageSpec) -> Option<PathBuf> {
    use sha2::Digest;
    use std::fmt::Write as _;
    use std::os::unix::fs::MetadataExt;
    let mut key = String::new();
    for add in &spec.adds {
        let m = std::fs::metadata(&add.src).ok()?;
        let _ = write!(
            key,
            "{}:{}:{}:{}:{};",
            add.src.display(),
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime_nsec() + m.mtime() * 1_000_000_000
        );
    }
    let m = std::fs::metadata(&spec.busybox).ok()?;
    let key = key
        + &format!(
            "{}:{}:{}:{}:{}:{}",
            env!("CARGO_PKG_VERSION"),
            spec.busybox.display(),
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime_nsec() + m.mtime() * 1_000_000_000
        );
    let hex = format!("{:x}", sha2::Sha256::digest(key.as_bytes()));
    let dir = ward_rootfs::cache::subdir(None, "images").ok()?;
    Some(dir.join(format!("demo-{}.ref", &hex[..16])))
}

/// The layer cache: `<cache>/images/layers`, `cache` defaulting to `$WARD_CACHE`.
pub fn layers_dir(cache: Option<&Path>) -> Result<PathBuf, ImageError> {
    ward_rootfs::cache::subdir(cache, "images/layers").map_err(|e| ImageError::Cache {
        path: cache.map_or_else(|| PathBuf::from("$WARD_CACHE"), Path::to_owned),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Loads `image`, unpacking layers not cached yet under `cache` (default `$WARD_CACHE`).
/// Blocking: file I/O and decompression.
pub fn load(image: &ImageRef, cache: Option<&Path>) -> Result<Image, ImageError> {
    let path = match image {
        ImageRef::Demo => demo_image()?,
        ImageRef::Path(p) => p.clone(),
    };
    let source = oci::Source::open(&path)?;
    let (manifest_digest, manifest, config_file) = source.manifest()?;
    let diff_ids = config_file.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::NotOci {
            image: path,
            why: format!(
                "the manifest lists {} layers, the config {} diff ids",
                manifest.layers.len(),
                diff_ids.len()
            ),
        });
    }
    let layers_dir = layers_dir(cache)?;
    let layers = manifest
        .layers
        .iter()
        .zip(&diff_ids)
        .map(|(desc, diff_id)| unpack::layer_dir(&source, &layers_dir, desc, diff_id))
        .collect::<Result<Vec<_>, _>>()?;
    let run = config_file.config.unwrap_or_default();
    Ok(Image {
        path,
        manifest_digest,
        config: ImageConfig {
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            env: run.env.unwrap_or_default(),
            working_dir: run.working_dir.unwrap_or_default(),
            user: run.user.unwrap_or_default(),
        },
        layers,
    })
}

#[cfg(test)]
mod tests;
