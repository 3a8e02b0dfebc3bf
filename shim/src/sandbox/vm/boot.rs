//! What a sandbox's VM boots and how big it is: the guest kernel, the initrd around the
//! static agent, and vCPUs and memory from the config plus the first container's limits.

use std::path::{Path, PathBuf};

use crate::config::{Config, beside_exe};

/// Present when the host's KVM is PVM, which runs no stock Linux guest kernel.
pub const PVM_MODULE: &str = "/sys/module/kvm_pvm";
const KVM_DEVICE: &str = "/dev/kvm";
/// Ceiling on vCPUs ward-vmm accepts.
const MAX_VCPUS: u64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(
        "this host's KVM is PVM ({PVM_MODULE} exists), which cannot boot a Linux guest: isolation vm needs VT-x or AMD-V (on this host, run it inside the nested harness: see docs/testing.md)"
    )]
    KvmCannotBootLinux,
    #[error("{KVM_DEVICE}: {0}: isolation vm needs KVM")]
    NoKvm(std::io::Error),
    #[error(
        "guest kernel {0} not found: build it with `guest-kernel/build.sh guest`, or set `kernel` in the [vm] table of the ward config"
    )]
    NoKernel(PathBuf),
    #[error(
        "no statically linked ward-agent for the guest initrd (looked at: {looked}); build one with `scripts/static-agent.sh`, or set `guest_agent` or `initrd` in the [vm] table of the ward config"
    )]
    NoGuestAgent { looked: String },
    #[error("guest initrd {0} not found (the `initrd` of the [vm] table of the ward config)")]
    NoInitrd(PathBuf),
    #[error("building the guest initrd: {0}")]
    Initrd(#[from] ward_rootfs::initrd::Error),
    #[error(
        "ward-vmm {0} not found: install it beside the shim, or set `vmm_path` in the [vm] table"
    )]
    NoVmm(PathBuf),
}

/// Files a VM boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    pub vmm: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Resolves (and on first use builds) what a VM boots from. Blocking.
pub fn boot_files(config: &Config) -> Result<BootFiles, BootError> {
    if Path::new(PVM_MODULE).exists() {
        return Err(BootError::KvmCannotBootLinux);
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(KVM_DEVICE)
        .map_err(BootError::NoKvm)?;
    let vmm = config.vmm_binary();
    if !vmm.is_file() {
        return Err(BootError::NoVmm(vmm));
    }
    Ok(BootFiles {
        vmm,
        kernel: guest_kernel(config)?,
        initrd: guest_initrd(config)?,
    })
}

/// The guest kernel: the configured one, else the one `guest-kernel/build.sh guest` put in
/// the cache for this version of ward.
pub fn guest_kernel(config: &Config) -> Result<PathBuf, BootError> {
    let kernel = config
        .vm
        .kernel
        .clone()
        .unwrap_or_else(|| ward_nest::kernel_path(ward_nest::KernelKind::Guest));
    if kernel.is_file() {
        Ok(kernel)
    } else {
        Err(BootError::NoKernel(kernel))
    }
}

/// The guest initrd: the configured one, else built (once, cached) around the static agent.
/// Blocking.
pub fn guest_initrd(config: &Config) -> Result<PathBuf, BootError> {
    match &config.vm.initrd {
        Some(p) if p.is_file() => Ok(p.clone()),
        Some(p) => Err(BootError::NoInitrd(p.clone())),
        None => Ok(
            ward_rootfs::initrd::build(&ward_rootfs::initrd::InitrdSpec {
                agent: static_agent(config)?,
                output: None,
                cache_dir: config.vm.cache_dir.clone(),
            })?
            .path,
        ),
    }
}

/// The static agent: the configured one, else the first static `ward-agent` beside the
/// running executable or in the build tree's static targets.
fn static_agent(config: &Config) -> Result<PathBuf, BootError> {
    if let Some(p) = &config.vm.guest_agent {
        return Ok(p.clone());
    }
    let beside = beside_exe("ward-agent");
    let mut candidates = vec![beside.clone()];
    // target/{debug,release}/ → target/<triple>/release/ward-agent (scripts/static-agent.sh).
    if let Some(target) = beside.parent().and_then(Path::parent) {
        for triple in ["x86_64-unknown-linux-musl", "x86_64-unknown-linux-gnu"] {
            candidates.push(target.join(triple).join("release/ward-agent"));
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file() && ward_rootfs::elf::require_static(p).is_ok())
        .cloned()
        .ok_or_else(|| BootError::NoGuestAgent {
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// vCPUs and memory of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    pub vcpus: u8,
    pub mem_mib: u32,
}

/// The config's base size, grown to fit the first container's CPU quota (whole vCPUs,
/// rounded up) and memory limit (added on top of the base, which the guest itself uses).
pub fn sizing(config: &Config, spec_json: &[u8]) -> Sizing {
    let spec: serde_json::Value = serde_json::from_slice(spec_json).unwrap_or_default();
    let resources = &spec["linux"]["resources"];
    let quota = resources["cpu"]["quota"].as_i64().unwrap_or(0);
    let period = resources["cpu"]["period"]
        .as_u64()
        .unwrap_or(100_000)
        .max(1);
    let cpus = if quota > 0 {
        (quota as u64).div_ceil(period).min(MAX_VCPUS)
    } else {
        0
    };
    let limit_mib = resources["memory"]["limit"]
        .as_i64()
        .filter(|l| *l > 0)
        .map_or(0, |l| (l as u64).div_ceil(1 << 20));
    let vcpus = u8::try_from(cpus)
        .unwrap_or(u8::MAX)
        .max(config.vm.cpus)
        .max(1);
    let mem = u64::from(config.vm.memory_mib) + limit_mib;
    Sizing {
        vcpus,
        mem_mib: u32::try_from(mem).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_grows_with_the_first_containers_limits() {
        let config = Config::default();
        assert_eq!(
            sizing(&config, b"{}"),
            Sizing {
                vcpus: 1,
                mem_mib: 128
            }
        );
        let spec = br#"{"linux":{"resources":{"cpu":{"quota":250000,"period":100000},
            "memory":{"limit":67108864}}}}"#;
        assert_eq!(
            sizing(&config, spec),
            Sizing {
                vcpus: 3,
                mem_mib: 192
            }
        );
        // No limit (-1) adds nothing; garbage is no limit.
        let spec = br#"{"linux":{"resources":{"memory":{"limit":-1}}}}"#;
        assert_eq!(sizing(&config, spec).mem_mib, 128);
        assert_eq!(sizing(&config, b"not json").mem_mib, 128);
    }

    #[test]
    fn missing_files_are_named_in_the_error() {
        if Path::new(PVM_MODULE).exists() || !Path::new(KVM_DEVICE).exists() {
            let err = boot_files(&Config::default()).unwrap_err().to_string();
            assert!(err.contains("KVM"), "{err}");
            return;
        }
        let mut config = Config::default();
        config.vm.vmm_path = Some("/nonexistent/ward-vmm".into());
        let err = boot_files(&config).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ward-vmm"), "{err}");
        config.vm.vmm_path = Some("/bin/sh".into());
        config.vm.kernel = Some("/nonexistent/vmlinux".into());
        let err = boot_files(&config).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/vmlinux") && err.contains("build.sh"),
            "{err}"
        );
        config.vm.kernel = Some("/bin/sh".into());
        config.vm.initrd = Some("/nonexistent/initrd".into());
        let err = boot_files(&config).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/initrd"), "{err}");
    }
}
