//! Where `guest-kernel/build.sh` puts the kernels built from this source tree.

use std::path::PathBuf;

/// The kernels `guest-kernel/build.sh` knows how to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// The kernel ward-vmm boots (and the nested L2 guest).
    Guest,
    /// The L1 kernel of the nested harness.
    NestHost,
}

impl KernelKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Guest => "guest",
            Self::NestHost => "nest-host",
        }
    }

    fn hash(self) -> &'static str {
        match self {
            Self::Guest => env!("WARD_GUEST_KERNEL_HASH"),
            Self::NestHost => env!("WARD_NEST_HOST_KERNEL_HASH"),
        }
    }
}

/// `$WARD_CACHE`, or `~/.cache/ward`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WARD_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/ward")
}

/// `$WARD_CACHE/kernels/<name>-<hash>/vmlinux` for this source tree's kernel config.
pub fn kernel_path(kind: KernelKind) -> PathBuf {
    cache_dir()
        .join("kernels")
        .join(format!("{}-{}", kind.name(), kind.hash()))
        .join("vmlinux")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_paths_differ_by_kind_and_carry_a_hash() {
        let guest = kernel_path(KernelKind::Guest);
        let nest = kernel_path(KernelKind::NestHost);
        assert_ne!(guest, nest);
        let dir = guest
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let hash = dir.strip_prefix("guest-").unwrap();
        assert_eq!(hash.len(), 16);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
