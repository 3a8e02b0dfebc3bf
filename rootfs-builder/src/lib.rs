//! ward-rootfs: the guest initrd, read-only layer images and the demo OCI image (busybox
//! plus the static `ward-workload`).
//!
//! Every output is reproducible (fixed mtimes, sorted entries, fixed owners) so that its
//! content hash is stable, and everything written to the cache appears there atomically.

pub mod cache;
pub mod cpio;
pub mod demo;
pub mod elf;
pub mod image;
pub mod initrd;
pub mod layer;
pub mod tree;

/// Hex-encoded SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
