//! Layers unpacked into directories, cached by diff id under
//! `<cache>/images/layers/<hex>/`. A layer is unpacked into a temporary directory beside its
//! final place and renamed there only once both its blob digest and its diff id checked out,
//! so a reader never sees half a layer and a bad blob leaves nothing.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ImageError;
use super::oci::{Descriptor, Source, digest_hex};

/// Hashes everything read through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
        }
    }
    fn hex(self) -> String {
        format!("{:x}", self.hash.finalize())
    }
}

/// The directory holding layer `diff_id`, unpacking the blob `desc` first when the cache
/// does not have it yet.
pub(super) fn layer_dir(
    source: &Source,
    layers_dir: &Path,
    desc: &Descriptor,
    diff_id: &str,
) -> Result<PathBuf, ImageError> {
    let hex = digest_hex(source.path(), diff_id)?;
    let dir = layers_dir.join(hex);
    if dir.is_dir() {
        return Ok(dir);
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".tmp-{hex}-"))
        .tempdir_in(layers_dir)
        .map_err(|source| ImageError::Cache {
            path: layers_dir.to_owned(),
            source,
        })?;
    unpack(source, desc, diff_id, tmp.path())?;
    let tmp = tmp.keep();
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process unpacked the same layer first: its copy is as good as ours.
        Err(_) if dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(source) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(ImageError::Cache { path: dir, source })
        }
    }
}

fn unpack(
    source: &Source,
    desc: &Descriptor,
    diff_id: &str,
    into: &Path,
) -> Result<(), ImageError> {
    let image = source.path().to_owned();
    let layer_err = |why: String| ImageError::Layer {
        image: image.clone(),
        blob: desc.digest.clone(),
        why,
    };
    let mut blob = Hashing::new(io::BufReader::new(source.open_blob(&desc.digest)?));
    let gzip = {
        use io::BufRead;
        let head = blob
            .inner
            .fill_buf()
            .map_err(|e| layer_err(e.to_string()))?;
        head.starts_with(&[0x1f, 0x8b])
    };
    if desc.media_type.contains("zstd") {
        return Err(layer_err(format!(
            "media type {} is not supported (want tar or tar+gzip)",
            desc.media_type
        )));
    }
    let diff_hex = {
        let reader: Box<dyn Read + '_> = if gzip {
            Box::new(flate2::read::GzDecoder::new(&mut blob))
        } else {
            Box::new(&mut blob)
        };
        let mut tarred = Hashing::new(reader);
        let mut archive = tar::Archive::new(&mut tarred);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_unpack_xattrs(true);
        archive.set_overwrite(true);
        archive
            .unpack(into)
            .map_err(|e| layer_err(format!("unpacking into {}: {}", into.display(), chain(&e))))?;
        // The tar reader stops at the end-of-archive blocks; the diff id covers padding too.
        io::copy(&mut tarred, &mut io::sink()).map_err(|e| layer_err(e.to_string()))?;
        tarred.hex()
    };
    io::copy(&mut blob, &mut io::sink()).map_err(|e| layer_err(e.to_string()))?;
    let blob_hex = blob.hex();
    if format!("sha256:{blob_hex}") != desc.digest {
        return Err(ImageError::DigestMismatch {
            image,
            blob: desc.digest.clone(),
            actual: format!("sha256:{blob_hex}"),
        });
    }
    if format!("sha256:{diff_hex}") != diff_id {
        return Err(ImageError::DigestMismatch {
            image,
            blob: format!("{} (diff id {diff_id})", desc.digest),
            actual: format!("sha256:{diff_hex}"),
        });
    }
    ward_rootfs::layer::convert_whiteouts(into).map_err(|e| layer_err(e.to_string()))
}

/// An error with its causes: the tar crate's messages leave the reason to the source.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
