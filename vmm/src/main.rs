//! `ward-vmm`: boots one microVM from a JSON config (`--config`) or flags, and exits with
//! 0 when the guest reboots or powers off, 1 when it panicked, 2 on a configuration error,
//! 3 when KVM or the VMM failed (or a system call hit the seccomp filter).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ward_vmm::config::{DriveConfig, SerialOutput, VsockConfig};
use ward_vmm::{VmConfig, VmExit, Vmm, VmmError};

/// ward's microVM monitor.
#[derive(Debug, Parser)]
#[command(name = "ward-vmm", version)]
struct Args {
    /// JSON configuration file; flags given as well override its fields.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Guest kernel: a vmlinux (PVH or 64-bit entry) or a bzImage.
    #[arg(long)]
    kernel: Option<PathBuf>,
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line (default: console=ttyS0 reboot=k panic=1 ...).
    #[arg(long)]
    cmdline: Option<String>,
    #[arg(long)]
    vcpus: Option<u8>,
    #[arg(long)]
    mem_mib: Option<u32>,
    /// Back guest memory with 2 MiB huge pages.
    #[arg(long)]
    hugepages: bool,
    /// Serial console output: `stdout` (default), `none`, or a file path.
    #[arg(long)]
    serial: Option<String>,
    /// Control API socket.
    #[arg(long)]
    api_sock: Option<PathBuf>,
    /// Do not install the seccomp filter (for debugging a blocked system call).
    #[arg(long)]
    no_seccomp: bool,
    /// A virtio-blk slot, `id=NAME[,path=FILE][,ro][,serial=S][,direct]`; repeat for more
    /// (added after the config file's drives).
    #[arg(long = "drive")]
    drives: Vec<DriveConfig>,
    /// virtio-vsock host socket (hybrid scheme); the guest CID is `--vsock-cid` (3).
    #[arg(long)]
    vsock_uds: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    vsock_cid: u64,
    /// Add a virtio-rng device.
    #[arg(long)]
    rng: bool,
}

fn config(args: Args) -> anyhow::Result<VmConfig> {
    let mut cfg = match (&args.config, &args.kernel) {
        (Some(path), _) => VmConfig::from_file(path)?,
        (None, Some(kernel)) => VmConfig::new(kernel),
        (None, None) => anyhow::bail!("give --config <vm.json> or at least --kernel <vmlinux>"),
    };
    if let Some(k) = args.kernel {
        cfg.kernel = k;
    }
    if args.initrd.is_some() {
        cfg.initrd = args.initrd;
    }
    if args.cmdline.is_some() {
        cfg.cmdline = args.cmdline;
    }
    if let Some(v) = args.vcpus {
        cfg.vcpus = v;
    }
    if let Some(m) = args.mem_mib {
        cfg.mem_mib = m;
    }
    cfg.hugepages |= args.hugepages;
    if let Some(s) = args.serial {
        cfg.serial = match s.as_str() {
            "stdout" => SerialOutput::Stdout,
            "none" => SerialOutput::None,
            path => SerialOutput::File(path.into()),
        };
    }
    if args.api_sock.is_some() {
        cfg.api_sock = args.api_sock;
    }
    if args.no_seccomp {
        cfg.seccomp = false;
    }
    cfg.drives.extend(args.drives);
    if let Some(uds_path) = args.vsock_uds {
        cfg.vsock = Some(VsockConfig {
            guest_cid: args.vsock_cid,
            uds_path,
        });
    }
    cfg.rng |= args.rng;
    Ok(cfg)
}

fn main() -> ExitCode {
    ward_vmm::metrics::mark_process_start();
    let cfg = match config(Args::parse()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("ward-vmm: {e:#}");
            return ExitCode::from(2);
        }
    };
    let vmm = match Vmm::new(cfg) {
        Ok(vmm) => vmm,
        Err(e) => {
            eprintln!("ward-vmm: {e}");
            let code = match e {
                // A drive image or vsock socket that cannot be opened is a configuration error.
                VmmError::Config(_)
                | VmmError::Boot(_)
                | VmmError::Memory(_)
                | VmmError::Device(_) => 2,
                _ => 3,
            };
            return ExitCode::from(code);
        }
    };
    match vmm.run() {
        Ok(exit) => {
            match &exit {
                VmExit::Clean(why) => eprintln!("ward-vmm: {why}"),
                VmExit::GuestPanic(line) => eprintln!("ward-vmm: guest panicked: {line}"),
                VmExit::Error(reason) => eprintln!("ward-vmm: {reason}"),
            }
            ExitCode::from(exit.code())
        }
        Err(e) => {
            eprintln!("ward-vmm: {e}");
            ExitCode::from(3)
        }
    }
}
