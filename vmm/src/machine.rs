//! The microVM: built from a [`VmConfig`] (everything that can fail on the configuration
//! fails before KVM is opened), extended with MMIO devices and event-loop subscribers, then
//! run until the guest resets, powers off, panics, or KVM fails.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{
    EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberId, SubscriberOps,
};
use linux_loader::cmdline::Cmdline;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::arch::layout;
use crate::arch::x86_64::regs::{BootProtocol, EntryPoint};
use crate::arch::x86_64::{boot_info, mptable, paging, regs};
use crate::boot::{self, LoadedKernel};
use crate::config::{ConfigError, SerialOutput, VmConfig};
use crate::devices::attach::{VirtioDevices, attach_all};
use crate::devices::bus::{BusError, SharedDevice};
use crate::devices::legacy::EventFdTrigger;
use crate::devices::legacy::boot_port::BootPort;
use crate::devices::legacy::i8042::I8042;
use crate::devices::legacy::serial::{ConsoleOut, PanicLine, SerialDevice};
use crate::metrics::Metrics;
use crate::vstate::vcpu::{self, IoBuses, Vcpu, VcpuControl, VcpuEvent};
use crate::vstate::vm::{Irqchip, Vm};
use crate::vstate::{memory, vm::VmError};

/// Offset of the virtio-mmio QueueNotify register, where ioeventfds listen.
pub const VIRTIO_MMIO_QUEUE_NOTIFY: u64 = 0x50;

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Vcpu(#[from] vcpu::VcpuError),
    #[error("mapping a device: {0}")]
    Bus(#[from] BusError),
    #[error("writing {what} to guest memory: {source}")]
    GuestMemory {
        what: &'static str,
        source: vm_memory::GuestMemoryError,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("event loop: {0}")]
    EventLoop(event_manager::Error),
    #[error("no free virtio-mmio slot: all {0} are taken")]
    NoMmioSlot(u64),
    #[error("adding virtio-mmio device at {base:#x} (GSI {gsi}) to the command line: {source}")]
    MmioCmdline {
        base: u64,
        gsi: u32,
        source: linux_loader::cmdline::Error,
    },
    #[error("control API: {0}")]
    Api(#[from] crate::api::ApiError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Device(#[from] crate::devices::attach::DeviceError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmmError {
    let what = what.into();
    move |source| VmmError::Io { what, source }
}

fn guest_mem(what: &'static str) -> impl FnOnce(vm_memory::GuestMemoryError) -> VmmError {
    move |source| VmmError::GuestMemory { what, source }
}

/// A virtio-mmio device's place in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioSlot {
    /// Guest-physical base of the 4 KiB register window.
    pub base: u64,
    /// The IOAPIC pin its interrupt eventfd raises.
    pub gsi: u32,
}

/// How the VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest rebooted or powered off cleanly, or the API asked for a shutdown.
    Clean(&'static str),
    /// The guest printed a kernel panic (then reset, with `panic=-1`).
    GuestPanic(String),
    /// KVM or a vCPU failed; the reason carries the registers.
    Error(String),
}

impl VmExit {
    /// The process exit code: 0 clean, 1 guest panic, 3 KVM/vCPU error.
    pub fn code(&self) -> u8 {
        match self {
            Self::Clean(_) => 0,
            Self::GuestPanic(_) => 1,
            Self::Error(_) => 3,
        }
    }
}

/// A subscriber on the VMM's event loop.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Handles the VMM gives the API server.
#[derive(Debug, Clone)]
pub struct VmHandles {
    pub metrics: Arc<Metrics>,
    pub vcpus: Arc<VcpuControl>,
    pub shutdown: Arc<AtomicBool>,
    pub exit_evt: Arc<EventFd>,
    pub vcpu_count: u8,
    pub mem_mib: u32,
    /// Drives (for `PUT /drives/{id}`) and per-device counters.
    pub devices: Arc<VirtioDevices>,
}

/// A configured microVM, not yet running.
pub struct Vmm {
    config: VmConfig,
    mem: GuestMemoryMmap,
    kernel: LoadedKernel,
    initrd: Option<(u64, u64)>,
    cmdline: Cmdline,
    vm: Vm,
    buses: IoBuses,
    metrics: Arc<Metrics>,
    panic_line: PanicLine,
    serial: Arc<Mutex<SerialDevice>>,
    reset_evt: EventFd,
    exit_evt: Arc<EventFd>,
    shutdown: Arc<AtomicBool>,
    powered_off: Arc<AtomicBool>,
    vcpu_control: Arc<VcpuControl>,
    events: EventManager<Subscriber>,
    mmio_slots: u64,
    devices: Arc<VirtioDevices>,
    quiet: bool,
}

impl std::fmt::Debug for Vmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmm")
            .field("config", &self.config)
            .field("kernel", &self.kernel)
            .field("mmio_slots", &self.mmio_slots)
            .finish_non_exhaustive()
    }
}

impl Vmm {
    /// Checks the configuration, loads kernel, initrd and command line into fresh guest
    /// memory, and only then creates the KVM VM and the legacy devices.
    pub fn new(config: VmConfig) -> Result<Self, VmmError> {
        config.validate()?;
        let mem = memory::create(config.mem_bytes(), config.hugepages)?;
        let kernel = boot::load_kernel(&mem, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(path) => Some(boot::load_initrd(&mem, path, &kernel)?),
            None => None,
        };
        let cmdline = boot::cmdline(config.cmdline())?;

        let vm = Vm::new(Irqchip::InKernel)?;
        vm.check_vcpus(config.vcpus)?;
        vm.register_memory(&mem)?;

        let metrics = Arc::new(Metrics::default());
        {
            use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
            let mut maps = metrics.guest_mappings.lock().expect("metrics lock");
            for region in mem.iter() {
                if let Ok(host) = mem.get_host_address(region.start_addr()) {
                    maps.push(host as u64);
                }
            }
        }
        let panic_line = PanicLine::default();
        let out: Option<Box<dyn std::io::Write + Send>> = match &config.serial {
            SerialOutput::Stdout => Some(Box::new(std::io::stdout())),
            SerialOutput::File(path) => Some(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(path)
                    .map_err(io(format!("opening serial output {}", path.display())))?,
            )),
            SerialOutput::None => None,
        };
        let exit_evt = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(io("creating an eventfd"))?);
        let powered_off = Arc::new(AtomicBool::new(false));
        let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(io("creating an eventfd"))?;
        vm.register_irqfd(&serial_irq, layout::COM1_GSI)?;
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            EventFdTrigger(serial_irq),
            ConsoleOut::new(out, panic_line.clone(), metrics.clone()).on_power_off(
                exit_evt.try_clone().map_err(io("cloning an eventfd"))?,
                powered_off.clone(),
            ),
        )));
        let reset_evt = EventFd::new(EFD_NONBLOCK).map_err(io("creating an eventfd"))?;
        let i8042 = I8042::new(EventFdTrigger(
            reset_evt.try_clone().map_err(io("cloning an eventfd"))?,
        ));
        let quiet = std::env::var_os("WARD_VMM_QUIET").is_some();
        let mut buses = IoBuses::default();
        buses.pio.insert(serial.clone(), layout::COM1, 8)?;
        buses
            .pio
            .insert(Arc::new(Mutex::new(i8042)), layout::I8042, 5)?;
        buses.pio.insert(
            Arc::new(Mutex::new(BootPort::new(metrics.clone(), quiet))),
            layout::BOOT_PORT,
            1,
        )?;

        let mut vmm = Self {
            config,
            mem,
            kernel,
            initrd,
            cmdline,
            vm,
            buses,
            metrics,
            panic_line,
            serial,
            reset_evt,
            exit_evt,
            powered_off,
            shutdown: Arc::new(AtomicBool::new(false)),
            vcpu_control: Arc::new(VcpuControl::default()),
            events: EventManager::new().map_err(VmmError::EventLoop)?,
            mmio_slots: 0,
            devices: Arc::default(),
            quiet,
        };
        let config = vmm.config.clone();
        vmm.devices = Arc::new(attach_all(&mut vmm, &config)?);
        Ok(vmm)
    }

    /// Guest memory, for devices that read and write it (virtqueues).
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The VMM's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Maps a virtio-mmio device in the next free 4 KiB slot: on the MMIO bus, with
    /// `irq_evt` raising its GSI, each `(eventfd, queue index)` of `notify` signalled by a
    /// guest write of that index to QueueNotify, and a `virtio_mmio.device=4K@base:gsi`
    /// entry on the kernel command line.
    pub fn add_mmio_device(
        &mut self,
        device: SharedDevice,
        irq_evt: &EventFd,
        notify: &[(EventFd, u32)],
    ) -> Result<MmioSlot, VmmError> {
        let index = self.mmio_slots;
        let gsi = layout::FIRST_DEVICE_GSI + index as u32;
        if index >= layout::MMIO_SLOTS || gsi >= layout::IOAPIC_PINS {
            return Err(VmmError::NoMmioSlot(index));
        }
        let base = layout::MMIO_GAP_START + index * layout::MMIO_SLOT_SIZE;
        self.buses
            .mmio
            .insert(device, base, layout::MMIO_SLOT_SIZE)?;
        self.vm.register_irqfd(irq_evt, gsi)?;
        for (evt, queue) in notify {
            self.vm
                .register_mmio_ioevent(evt, base + VIRTIO_MMIO_QUEUE_NOTIFY, Some(*queue))?;
        }
        self.cmdline
            .add_virtio_mmio_device(layout::MMIO_SLOT_SIZE, GuestAddress(base), gsi, None)
            .map_err(|source| VmmError::MmioCmdline { base, gsi, source })?;
        self.mmio_slots += 1;
        Ok(MmioSlot { base, gsi })
    }

    /// Adds a subscriber (device queues, backends) to the event loop `run` drives.
    pub fn add_subscriber(&mut self, subscriber: Subscriber) -> SubscriberId {
        self.events.add_subscriber(subscriber)
    }

    /// Handles for the control API.
    pub fn handles(&self) -> VmHandles {
        VmHandles {
            metrics: self.metrics.clone(),
            vcpus: self.vcpu_control.clone(),
            shutdown: self.shutdown.clone(),
            exit_evt: self.exit_evt.clone(),
            vcpu_count: self.config.vcpus,
            mem_mib: self.config.mem_mib,
            devices: self.devices.clone(),
        }
    }

    /// The kernel command line as the guest will get it.
    pub fn cmdline(&self) -> String {
        self.cmdline
            .as_cstring()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Writes the boot structures, starts the vCPUs and the control API, and runs the
    /// event loop until the VM ends.
    pub fn run(mut self) -> Result<VmExit, VmmError> {
        let cmdline_len = boot::write_cmdline(&self.mem, &self.cmdline)?;
        let info = boot_info::BootInfo {
            mem_bytes: self.config.mem_bytes(),
            cmdline_len,
            initrd: self.initrd,
        };
        let protocol = self.kernel.protocol;
        let boot_info_addr = match protocol {
            BootProtocol::Pvh => boot_info::write_pvh(&self.mem, &info),
            BootProtocol::Linux64 => {
                boot_info::write_zero_page(&self.mem, &info, self.kernel.setup_header)
            }
        }
        .map_err(guest_mem("boot information"))?;
        mptable::write(&self.mem, self.config.vcpus).map_err(guest_mem("the MP table"))?;
        regs::write_gdt(&self.mem, protocol).map_err(guest_mem("the boot GDT"))?;
        let cr3 = paging::write_identity_tables(&self.mem).map_err(guest_mem("page tables"))?;
        let entry = EntryPoint {
            addr: self.kernel.entry,
            protocol,
            boot_info: boot_info_addr,
        };

        let supported = self.vm.supported_cpuid()?;
        let mut vcpus = Vec::with_capacity(usize::from(self.config.vcpus));
        for id in 0..self.config.vcpus {
            let vcpu = Vcpu::new(&self.vm, id)?;
            vcpu.configure_cpu(&supported, self.config.vcpus, true)?;
            if id == 0 {
                vcpu.configure_entry(&entry, cr3)?;
            }
            vcpus.push(vcpu);
        }

        let handles = self.handles();
        if let Some(path) = &self.config.api_sock {
            crate::api::serve(path, handles.clone())?;
        }

        let (tx, rx) = mpsc::channel();
        let exit_watch = Arc::new(Mutex::new(ExitWatch {
            reset: self
                .reset_evt
                .try_clone()
                .map_err(io("cloning an eventfd"))?,
            exit: self
                .exit_evt
                .try_clone()
                .map_err(io("cloning an eventfd"))?,
            fired: false,
        }));
        self.events.add_subscriber(exit_watch.clone());
        self.events
            .add_subscriber(Arc::new(Mutex::new(SerialInput(self.serial.clone()))));

        let (rss, guest_rss) = self.metrics.rss_split();
        let vmm_rss = rss.saturating_sub(guest_rss);
        self.metrics
            .vmm_rss_before_run_kib
            .store(vmm_rss, Ordering::Relaxed);
        let first_run = crate::metrics::since_start_us();
        self.metrics
            .first_run_us
            .store(first_run.max(1), Ordering::Relaxed);
        if !self.quiet {
            eprintln!(
                "ward-vmm: first KVM_RUN {}.{:03} ms after start; RSS {rss} KiB \
                 (VMM {vmm_rss} KiB, guest memory {guest_rss} KiB)",
                first_run / 1000,
                first_run % 1000
            );
        }
        if self.config.seccomp {
            crate::seccomp::install()?;
        }
        vcpu::start(
            vcpus,
            &self.buses,
            &self.metrics,
            &handles.vcpus,
            &tx,
            &self.exit_evt,
        )?;

        loop {
            self.events
                .run_with_timeout(100)
                .map_err(VmmError::EventLoop)?;
            // Console output that ends without a newline (a prompt) still shows up.
            self.serial.lock().expect("serial lock").flush_output();
            if exit_watch.lock().expect("exit watch lock").fired {
                break;
            }
        }
        // Let the other vCPUs stop writing to the console before the verdict.
        if usize::from(self.config.vcpus) > 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.serial.lock().expect("serial lock").flush_output();
        if let Some(path) = &self.config.api_sock {
            // Nobody answers on it any more; a stale socket only confuses clients.
            let _ = std::fs::remove_file(path);
        }

        let vcpu_event = rx.try_recv().ok();
        let exit = if let Some(VcpuEvent::Error { id, reason }) = vcpu_event {
            VmExit::Error(format!("vCPU {id}: {reason}"))
        } else if let Some(line) = self.panic_line.lock().expect("panic line lock").clone() {
            VmExit::GuestPanic(line)
        } else if self.shutdown.load(Ordering::Relaxed) {
            VmExit::Clean("shutdown requested through the API")
        } else if vcpu_event == Some(VcpuEvent::Shutdown)
            || self.powered_off.load(Ordering::Relaxed)
        {
            VmExit::Clean("guest powered off")
        } else {
            VmExit::Clean("guest reset")
        };
        if !self.quiet {
            let m = self.metrics.snapshot();
            eprintln!(
                "ward-vmm: exits: {} (pio {}, mmio {}), serial bytes {}; RSS {} KiB \
                 (VMM {} KiB, guest memory {} KiB)",
                m.exits,
                m.pio_exits,
                m.mmio_exits,
                m.serial_bytes,
                m.rss_kib,
                m.vmm_rss_kib,
                m.guest_rss_kib
            );
        }
        Ok(exit)
    }
}

/// Watches the i8042 reset line and the VMM's exit eventfd (vCPU stopped, API shutdown).
struct ExitWatch {
    reset: EventFd,
    exit: EventFd,
    fired: bool,
}

impl MutEventSubscriber for ExitWatch {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.reset.as_raw_fd() {
            let _ = self.reset.read();
        } else {
            let _ = self.exit.read();
        }
        self.fired = true;
    }

    fn init(&mut self, ops: &mut EventOps) {
        for fd in [&self.reset, &self.exit] {
            ops.add(Events::new(fd, EventSet::IN))
                .expect("watching a fresh eventfd");
        }
    }
}

/// Forwards the VMM's stdin to the guest's console.
struct SerialInput(Arc<Mutex<SerialDevice>>);

impl MutEventSubscriber for SerialInput {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        // SAFETY: reads into a stack buffer of the given length from fd 0.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 || events.event_set().contains(EventSet::HANG_UP) {
            let _ = ops.remove(Events::new_raw(0, EventSet::IN));
            return;
        }
        self.0
            .lock()
            .expect("serial lock")
            .enqueue(&buf[..n as usize]);
    }

    fn init(&mut self, ops: &mut EventOps) {
        // Regular files and /dev/null cannot be polled; the guest simply gets no input.
        let _ = ops.add(Events::new_raw(0, EventSet::IN));
    }
}
