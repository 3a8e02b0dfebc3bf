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
    /// virtio-blk drive slots, `/dev/vda`, `/dev/vdb`, ... in this order.
    #[serde(default)]
    pub drives: Vec<DriveConfig>,
    /// virtio-vsock with a Unix-socket backend.
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// A virtio-rng device (`/dev/hwrng` in the guest).
    #[serde(default)]
    pub rng: bool,
}

/// Most drive slots a microVM may have: with vsock and rng that is 18 of the 19 device
/// interrupts the IOAPIC has left (GSIs 5-23).
pub const MAX_DRIVES: usize = 16;
/// Longest GET_ID serial virtio-blk can return.
pub const MAX_SERIAL_BYTES: usize = 20;

/// One virtio-blk slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveConfig {
    /// The API's name for the drive (`PUT /drives/{id}`).
    pub id: String,
    /// Disk image; absent for an empty slot that `PUT /drives/{id}` fills later.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Fixed for the slot's lifetime (the guest negotiates it once, at boot).
    #[serde(default)]
    pub read_only: bool,
    /// What the guest reads as the drive's serial (`/sys/block/vdX/serial`), 20 bytes max.
    #[serde(default)]
    pub serial: Option<String>,
    /// Open the image with O_DIRECT (the guest then uses 4 KiB blocks).
    #[serde(default)]
    pub direct_io: bool,
}

impl std::str::FromStr for DriveConfig {
    type Err = ConfigError;

    /// The `--drive` flag: `id=NAME[,path=FILE][,ro][,serial=S][,direct]`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let mut d = DriveConfig::default();
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => v.clone_into(&mut d.id),
                Some(("path", v)) => d.path = Some(v.into()),
                Some(("serial", v)) => d.serial = Some(v.to_owned()),
                None if part == "ro" => d.read_only = true,
                None if part == "direct" => d.direct_io = true,
                _ => {
                    return Err(ConfigError::DriveFlag {
                        flag: s.to_owned(),
                        part: part.to_owned(),
                    });
                }
            }
        }
        Ok(d)
    }
}

/// virtio-vsock: the guest's context id and the host-side Unix socket (hybrid scheme).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// 3 or more (0-2 are reserved for the hypervisor, local and host).
    pub guest_cid: u64,
    /// Host connects here and writes `CONNECT <port>\n`; guest-initiated connections to
    /// port P go to `<uds_path>_P`.
    pub uds_path: PathBuf,
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
    #[error(
        "--drive {flag}: cannot parse {part:?} (want id=NAME[,path=FILE][,ro][,serial=S][,direct])"
    )]
    DriveFlag { flag: String, part: String },
    #[error("{count} drives: a microVM has at most {MAX_DRIVES}")]
    TooManyDrives { count: usize },
    #[error("drive id {id:?}: ids must be non-empty, unique, and use only [A-Za-z0-9_-]")]
    DriveId { id: String },
    #[error("drive {id}: serial {serial:?} is longer than {MAX_SERIAL_BYTES} bytes")]
    DriveSerial { id: String, serial: String },
    #[error("vsock guest_cid = {0}: context ids 0-2 are reserved, use 3 or more")]
    VsockCid(u64),
    #[error("vsock uds_path {path}: directory {dir} does not exist")]
    VsockDir { path: PathBuf, dir: PathBuf },
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
            drives: Vec::new(),
            vsock: None,
            rng: false,
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
        self.validate_devices()
    }

    fn validate_devices(&self) -> Result<(), ConfigError> {
        if self.drives.len() > MAX_DRIVES {
            return Err(ConfigError::TooManyDrives {
                count: self.drives.len(),
            });
        }
        for (i, d) in self.drives.iter().enumerate() {
            let valid = !d.id.is_empty()
                && d.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                && !self.drives[..i].iter().any(|o| o.id == d.id);
            if !valid {
                return Err(ConfigError::DriveId { id: d.id.clone() });
            }
            if let Some(serial) = &d.serial {
                if serial.len() > MAX_SERIAL_BYTES {
                    return Err(ConfigError::DriveSerial {
                        id: d.id.clone(),
                        serial: serial.clone(),
                    });
                }
            }
            if let Some(path) = &d.path {
                file_len("drive", path)?;
            }
        }
        if let Some(v) = &self.vsock {
            if v.guest_cid < 3 || v.guest_cid > u64::from(u32::MAX) {
                return Err(ConfigError::VsockCid(v.guest_cid));
            }
            let dir = match v.uds_path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            };
            if !dir.is_dir() {
                return Err(ConfigError::VsockDir {
                    path: v.uds_path.clone(),
                    dir,
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
    fn devices_from_json_and_flags() {
        let cfg: VmConfig = serde_json::from_str(
            r#"{"kernel": "/k", "rng": true,
                "drives": [{"id": "rootfs", "path": "/r.img", "read_only": true, "serial": "layer0"},
                           {"id": "spare"}],
                "vsock": {"guest_cid": 3, "uds_path": "/run/v.sock"}}"#,
        )
        .unwrap();
        assert!(cfg.rng);
        assert_eq!(cfg.drives[1].path, None);
        assert!(cfg.drives[0].read_only && !cfg.drives[1].read_only);
        assert_eq!(cfg.vsock.unwrap().guest_cid, 3);
        let d: DriveConfig = "id=a,path=/x.img,ro,serial=s1".parse().unwrap();
        assert_eq!(
            d,
            DriveConfig {
                id: "a".into(),
                path: Some("/x.img".into()),
                read_only: true,
                serial: Some("s1".into()),
                direct_io: false,
            }
        );
        let err = "id=a,rw".parse::<DriveConfig>().unwrap_err().to_string();
        assert!(err.contains("\"rw\""), "{err}");
    }

    #[test]
    fn device_checks() {
        let (d, mut cfg) = with_files(1000, 1000);
        cfg.drives = (0..17)
            .map(|i| DriveConfig {
                id: format!("d{i}"),
                ..DriveConfig::default()
            })
            .collect();
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .starts_with("17 drives")
        );
        cfg.drives.truncate(16);
        cfg.validate().unwrap();
        cfg.drives[3].id = "d0".into();
        assert!(cfg.validate().unwrap_err().to_string().contains("\"d0\""));
        cfg.drives[3].id = "d3".into();
        cfg.drives[2].serial = Some("x".repeat(21));
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("longer than 20")
        );
        cfg.drives[2].serial = None;
        cfg.drives[1].path = Some("/nonexistent/disk.img".into());
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.starts_with("drive /nonexistent/disk.img: "), "{err}");
        cfg.drives[1].path = None;
        cfg.vsock = Some(VsockConfig {
            guest_cid: 2,
            uds_path: d.path.join("v.sock"),
        });
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("guest_cid = 2")
        );
        cfg.vsock = Some(VsockConfig {
            guest_cid: 3,
            uds_path: "/nonexistent/v.sock".into(),
        });
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("/nonexistent")
        );
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
