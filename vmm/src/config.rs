//! The microVM's configuration: one JSON document (`ward-vmm --config vm.json`) or the
//! equivalent flags, checked here before anything touches KVM so a bad path or size is
//! reported as what it is.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Most vCPUs a microVM may have: the MP table and the guest kernel's `NR_CPUS` (32) agree.
pub const MAX_VCPUS: u8 = 32;
/// Guest memory a microVM may have, in MiB (1 TiB): a bound that catches unit mistakes.
pub const MAX_MEM_MIB: u32 = 1 << 20;
/// Guest memory a Linux guest needs at least to hold its kernel and page tables, in MiB.
pub const MIN_MEM_MIB: u32 = 16;
/// The kernel command line used when the configuration gives none.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off nomodule \
     i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

/// Everything `ward-vmm` needs to boot one microVM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Uncompressed `vmlinux` (ELF; PVH entry preferred) or a bzImage.
    pub kernel: PathBuf,
    /// Initial ramdisk loaded at the top of low memory.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line; [`DEFAULT_CMDLINE`] when absent. ward-vmm appends its
    /// `virtio_mmio.device=` entries.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Number of vCPUs (1 ..= [`MAX_VCPUS`]).
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[serde(default = "default_mem_mib")]
    pub mem_mib: u32,
    /// Back guest memory with 2 MiB huge pages (needs pages reserved in
    /// `/proc/sys/vm/nr_hugepages`).
    #[serde(default)]
    pub hugepages: bool,
    /// Where the guest's serial console (ttyS0) goes.
    #[serde(default)]
    pub serial: SerialOutput,
    /// Control API socket (HTTP over a Unix socket).
    #[serde(default)]
    pub api_sock: Option<PathBuf>,
    /// Run under the seccomp filter of `seccomp.rs` once the guest starts.
    #[serde(default = "default_seccomp")]
    pub seccomp: bool,
}

/// Destination of the guest's serial console output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SerialOutput {
    /// The VMM's standard output.
    #[default]
    Stdout,
    /// A file (created or truncated) or a named pipe.
    File(PathBuf),
    /// Dropped.
    None,
}

fn default_vcpus() -> u8 {
    1
}

fn default_seccomp() -> bool {
    true
}

fn default_mem_mib() -> u32 {
    128
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{what} {path}: {source}")]
    Path {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} is not a regular file")]
    NotAFile { what: &'static str, path: PathBuf },
    #[error("vcpus = {0}: a microVM needs 1 to {MAX_VCPUS} vCPUs")]
    Vcpus(u8),
    #[error("mem_mib = {0}: guest memory must be {MIN_MEM_MIB} MiB to {MAX_MEM_MIB} MiB")]
    Memory(u32),
    #[error(
        "initrd {path} ({initrd_bytes} bytes) does not fit in {mem_mib} MiB of guest memory \
         next to the kernel ({kernel_bytes} bytes); give the guest more memory"
    )]
    InitrdTooBig {
        path: PathBuf,
        initrd_bytes: u64,
        kernel_bytes: u64,
        mem_mib: u32,
    },
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
}

impl VmConfig {
    /// A configuration with defaults for everything but the kernel.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: None,
            cmdline: None,
            vcpus: default_vcpus(),
            mem_mib: default_mem_mib(),
            hugepages: false,
            serial: SerialOutput::Stdout,
            api_sock: None,
            seccomp: true,
        }
    }

    /// Reads a JSON configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// The kernel command line before devices append theirs.
    pub fn cmdline(&self) -> &str {
        self.cmdline.as_deref().unwrap_or(DEFAULT_CMDLINE)
    }

    /// Guest memory in bytes.
    pub fn mem_bytes(&self) -> u64 {
        u64::from(self.mem_mib) << 20
    }

    /// Checks everything that can be checked without KVM: counts, sizes, that the files
    /// exist and that the initrd fits next to the kernel.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::Vcpus(self.vcpus));
        }
        if self.mem_mib < MIN_MEM_MIB || self.mem_mib > MAX_MEM_MIB {
            return Err(ConfigError::Memory(self.mem_mib));
        }
        if self.cmdline().contains('\0') {
            return Err(ConfigError::CmdlineNul);
        }
        let kernel_bytes = file_len("kernel", &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            let initrd_bytes = file_len("initrd", initrd)?;
            // The kernel loads at 16 MiB at most (its ELF physical address or 1 MiB for a
            // bzImage) and the initrd must sit above it, below the MMIO gap.
            let room = crate::arch::low_mem_end(self.mem_bytes())
                .saturating_sub(crate::arch::layout::KERNEL_MAX_LOAD + kernel_bytes);
            if initrd_bytes > room {
                return Err(ConfigError::InitrdTooBig {
                    path: initrd.clone(),
                    initrd_bytes,
                    kernel_bytes,
                    mem_mib: self.mem_mib,
                });
            }
        }
        Ok(())
    }
}

fn file_len(what: &'static str, path: &Path) -> Result<u64, ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Path {
        what,
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            what,
            path: path.to_owned(),
        });
    }
    // Opening proves it is readable, which metadata alone does not.
    std::fs::File::open(path).map_err(|source| ConfigError::Path {
        what,
        path: path.to_owned(),
        source,
    })?;
    Ok(meta.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_files(kernel_len: usize, initrd_len: usize) -> (tempdir::Dir, VmConfig) {
        let dir = tempdir::Dir::new();
        let kernel = dir.path.join("vmlinux");
        let initrd = dir.path.join("initrd");
        std::fs::write(&kernel, vec![0u8; kernel_len]).unwrap();
        std::fs::write(&initrd, vec![0u8; initrd_len]).unwrap();
        let mut cfg = VmConfig::new(kernel);
        cfg.initrd = Some(initrd);
        (dir, cfg)
    }

    mod tempdir {
        pub struct Dir {
            pub path: std::path::PathBuf,
        }
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "ward-vmm-config-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Self { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    #[test]
    fn json_with_defaults() {
        let cfg: VmConfig = serde_json::from_str(r#"{"kernel": "/k"}"#).unwrap();
        assert_eq!(cfg, VmConfig::new("/k"));
        let cfg: VmConfig = serde_json::from_str(
            r#"{"kernel": "/k", "vcpus": 2, "mem_mib": 256, "serial": {"file": "/tmp/s"}}"#,
        )
        .unwrap();
        assert_eq!(cfg.vcpus, 2);
        assert_eq!(cfg.serial, SerialOutput::File("/tmp/s".into()));
        let err = serde_json::from_str::<VmConfig>(r#"{"kernel": "/k", "vcpu": 2}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `vcpu`"), "{err}");
    }

    #[test]
    fn counts_and_sizes_are_checked() {
        let (_d, mut cfg) = with_files(1000, 1000);
        cfg.validate().unwrap();
        cfg.vcpus = 0;
        assert_eq!(
            cfg.validate().unwrap_err().to_string(),
            "vcpus = 0: a microVM needs 1 to 32 vCPUs"
        );
        cfg.vcpus = 1;
        cfg.mem_mib = 0;
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .starts_with("mem_mib = 0: ")
        );
    }

    #[test]
    fn missing_kernel_names_the_path() {
        let cfg = VmConfig::new("/nonexistent/vmlinux");
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.starts_with("kernel /nonexistent/vmlinux: "), "{err}");
    }

    #[test]
    fn initrd_that_does_not_fit() {
        let (_d, mut cfg) = with_files(1000, 20 << 20);
        cfg.mem_mib = 32;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("does not fit in 32 MiB"), "{err}");
        cfg.mem_mib = 64;
        cfg.validate().unwrap();
    }
}
