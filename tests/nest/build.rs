//! Bakes the content hashes of the kernels `guest-kernel/build.sh` builds into the crate,
//! so `ward_nest::kernel_path` finds exactly the kernel built from this source tree.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest-kernel");
    for (name, fragments) in [
        ("GUEST", &["guest.config", "guest-only.config"][..]),
        ("NEST_HOST", &["guest.config", "nest-host.config"][..]),
    ] {
        // Same bytes, same order as build.sh: `cat VERSION fragments… | sha256sum | cut -c1-16`.
        let mut hasher = Sha256::new();
        for file in std::iter::once("VERSION").chain(fragments.iter().copied()) {
            let path = dir.join(file);
            println!("cargo::rerun-if-changed={}", path.display());
            let bytes =
                fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            hasher.update(&bytes);
        }
        let hex = hasher.finalize().iter().fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
        println!("cargo::rustc-env=WARD_{name}_KERNEL_HASH={}", &hex[..16]);
    }
}
