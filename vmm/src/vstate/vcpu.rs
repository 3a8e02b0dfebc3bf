//! vCPUs: their boot state (CPUID, MSRs, FPU, LAPIC, registers), the exit dispatch to the
//! PIO and MMIO buses, and the per-vCPU thread that can be paused, resumed and stopped.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{CpuId, Msrs, kvm_regs, kvm_sregs};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;

use super::vm::Vm;
use crate::arch::x86_64::{cpuid, msrs, regs};
use crate::devices::bus::Bus;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("vCPU {id}: {ioctl}: {source}")]
    Ioctl {
        id: u8,
        ioctl: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {id}: KVM_SET_MSRS set {set} of {total} MSRs")]
    Msrs { id: u8, set: usize, total: usize },
    #[error("spawning the thread of vCPU {id}: {source}")]
    Spawn { id: u8, source: std::io::Error },
    #[error("registering the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
}

/// The buses a vCPU dispatches its I/O exits to.
#[derive(Debug, Clone, Default)]
pub struct IoBuses {
    pub pio: Bus,
    pub mmio: Bus,
}

/// Why a vCPU stopped running guest code for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuEvent {
    /// The guest reset the machine (triple fault, or KVM's reset system event).
    Reset,
    /// The guest powered off (KVM's shutdown system event) or halted without an irqchip.
    Shutdown,
    /// KVM failed or the guest did something the VMM cannot continue from.
    Error { id: u8, reason: String },
}

/// One KVM vCPU.
#[derive(Debug)]
pub struct Vcpu {
    fd: VcpuFd,
    id: u8,
}

impl Vcpu {
    pub fn new(vm: &Vm, id: u8) -> Result<Self, VcpuError> {
        let fd = vm
            .fd()
            .create_vcpu(u64::from(id))
            .map_err(|source| VcpuError::Ioctl {
                id,
                ioctl: "KVM_CREATE_VCPU",
                source,
            })?;
        Ok(Self { fd, id })
    }

    pub fn id(&self) -> u8 {
        self.id
    }

    fn err(&self, ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError {
        let id = self.id;
        move |source| VcpuError::Ioctl { id, ioctl, source }
    }

    /// CPUID (normalized for this vCPU of `vcpus`), MSRs, FPU and, with an in-kernel
    /// irqchip, the LAPIC's LINT pins.
    pub fn configure_cpu(
        &self,
        supported: &CpuId,
        vcpus: u8,
        lapic: bool,
    ) -> Result<(), VcpuError> {
        let mut cpuid = supported.clone();
        cpuid::normalize(&mut cpuid, self.id, vcpus);
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(self.err("KVM_SET_CPUID2"))?;
        let entries = msrs::boot_msrs();
        let msrs = Msrs::from_entries(&entries).expect("a handful of MSRs fit a FAM struct");
        let set = self.fd.set_msrs(&msrs).map_err(self.err("KVM_SET_MSRS"))?;
        if set != entries.len() {
            return Err(VcpuError::Msrs {
                id: self.id,
                set,
                total: entries.len(),
            });
        }
        self.fd
            .set_fpu(&regs::boot_fpu())
            .map_err(self.err("KVM_SET_FPU"))?;
        if lapic {
            let mut state = self.fd.get_lapic().map_err(self.err("KVM_GET_LAPIC"))?;
            regs::boot_lapic(&mut state);
            self.fd
                .set_lapic(&state)
                .map_err(self.err("KVM_SET_LAPIC"))?;
        }
        Ok(())
    }

    /// Registers for the kernel's entry point (only the boot vCPU; the others wait for
    /// the guest's INIT/SIPI in the in-kernel LAPIC).
    pub fn configure_entry(&self, entry: &regs::EntryPoint, cr3: u64) -> Result<(), VcpuError> {
        let mut sregs = self.sregs()?;
        regs::boot_sregs(&mut sregs, entry.protocol, cr3);
        self.set_registers(&regs::boot_regs(entry), &sregs)
    }

    pub fn sregs(&self) -> Result<kvm_sregs, VcpuError> {
        self.fd.get_sregs().map_err(self.err("KVM_GET_SREGS"))
    }

    /// Sets the registers directly (entry states the boot protocols do not cover).
    pub fn set_registers(&self, regs: &kvm_regs, sregs: &kvm_sregs) -> Result<(), VcpuError> {
        self.fd
            .set_sregs(sregs)
            .map_err(self.err("KVM_SET_SREGS"))?;
        self.fd.set_regs(regs).map_err(self.err("KVM_SET_REGS"))
    }

    /// Runs guest code until an exit the VMM must act on. `Ok(None)` means "run again"
    /// (an I/O exit was served, or a signal kicked the vCPU out).
    pub fn run_once(
        &mut self,
        buses: &IoBuses,
        metrics: &Metrics,
    ) -> Result<Option<VcpuEvent>, VcpuError> {
        let exit = match self.fd.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
                return Ok(None);
            }
            Err(source) => {
                return Err(VcpuError::Ioctl {
                    id: self.id,
                    ioctl: "KVM_RUN",
                    source,
                });
            }
        };
        metrics.exits.fetch_add(1, Ordering::Relaxed);
        let event = match exit {
            VcpuExit::IoIn(port, data) => {
                metrics.pio_exits.fetch_add(1, Ordering::Relaxed);
                if !buses.pio.read(u64::from(port), data) {
                    // An empty ISA bus floats high.
                    data.fill(0xff);
                }
                None
            }
            VcpuExit::IoOut(port, data) => {
                metrics.pio_exits.fetch_add(1, Ordering::Relaxed);
                buses.pio.write(u64::from(port), data);
                None
            }
            VcpuExit::MmioRead(addr, data) => {
                metrics.mmio_exits.fetch_add(1, Ordering::Relaxed);
                buses.mmio.read(addr, data);
                None
            }
            VcpuExit::MmioWrite(addr, data) => {
                metrics.mmio_exits.fetch_add(1, Ordering::Relaxed);
                buses.mmio.write(addr, data);
                None
            }
            VcpuExit::Intr => None,
            // A triple fault: how `reboot=t` (and a broken guest) resets a PC. Said on stderr,
            // since it looks like any other reset from outside.
            VcpuExit::Shutdown => {
                eprintln!(
                    "ward-vmm: vcpu {}: triple fault (KVM_EXIT_SHUTDOWN)",
                    self.id
                );
                Some(VcpuEvent::Reset)
            }
            VcpuExit::Hlt => Some(VcpuEvent::Shutdown),
            VcpuExit::SystemEvent(kind, _) => Some(match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => VcpuEvent::Shutdown,
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => VcpuEvent::Reset,
                other => VcpuEvent::Error {
                    id: self.id,
                    reason: format!("system event {other}"),
                },
            }),
            VcpuExit::FailEntry(reason, cpu) => Some(VcpuEvent::Error {
                id: self.id,
                reason: format!("KVM entry failed: hardware reason {reason:#x} on host CPU {cpu}"),
            }),
            VcpuExit::InternalError => Some(VcpuEvent::Error {
                id: self.id,
                reason: "KVM internal error (emulation failure)".into(),
            }),
            other => Some(VcpuEvent::Error {
                id: self.id,
                reason: format!("unexpected exit {other:?}"),
            }),
        };
        Ok(event)
    }

    /// A one-line dump of the registers that say where the guest was.
    pub fn dump_registers(&self) -> String {
        match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(r), Ok(s)) => format!(
                "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} \
                 rsi={:#x} rdi={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x}",
                r.rip,
                r.rsp,
                r.rflags,
                r.rax,
                r.rbx,
                r.rcx,
                r.rdx,
                r.rsi,
                r.rdi,
                s.cr0,
                s.cr2,
                s.cr3,
                s.cr4,
                s.efer,
                s.cs.selector
            ),
            (Err(e), _) | (_, Err(e)) => format!("registers unavailable: {e}"),
        }
    }
}

/// What the VMM wants its vCPU threads to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
}

#[derive(Debug)]
struct Control {
    want: RunState,
    parked: usize,
}

/// Shared by the VMM and its vCPU threads: pause, resume, and wait until paused.
#[derive(Debug)]
pub struct VcpuControl {
    inner: Mutex<Control>,
    cv: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: interrupting the ioctl with EINTR is the point.
}

impl Default for VcpuControl {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Control {
                want: RunState::Running,
                parked: 0,
            }),
            cv: Condvar::new(),
            threads: Mutex::new(Vec::new()),
        }
    }
}

impl VcpuControl {
    /// The state the vCPUs were last asked to be in.
    pub fn state(&self) -> RunState {
        self.inner.lock().expect("vcpu control lock").want
    }

    /// Stops every vCPU and returns once none is running guest code.
    pub fn pause(&self) {
        let n = self.threads.lock().expect("vcpu threads lock").len();
        let mut g = self.inner.lock().expect("vcpu control lock");
        g.want = RunState::Paused;
        while g.parked < n {
            drop(g);
            self.kick();
            g = self.inner.lock().expect("vcpu control lock");
            // A kick can land just before a thread enters KVM_RUN; kick again until all
            // threads report in.
            g = self
                .cv
                .wait_timeout(g, Duration::from_millis(5))
                .expect("vcpu control lock")
                .0;
        }
    }

    /// Lets paused vCPUs run again.
    pub fn resume(&self) {
        let mut g = self.inner.lock().expect("vcpu control lock");
        g.want = RunState::Running;
        self.cv.notify_all();
    }

    fn kick(&self) {
        use std::os::unix::thread::JoinHandleExt;
        for t in self.threads.lock().expect("vcpu threads lock").iter() {
            // SAFETY: the pthread is alive (vCPU threads never return while the VMM runs,
            // and their handles are kept here), and the signal has a handler installed
            // by `start`, so it cannot terminate the process.
            unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
        }
    }

    /// Parks the calling vCPU thread while the VMM wants the vCPUs paused.
    fn checkpoint(&self) {
        let mut g = self.inner.lock().expect("vcpu control lock");
        if g.want == RunState::Running {
            return;
        }
        g.parked += 1;
        self.cv.notify_all();
        while g.want == RunState::Paused {
            g = self.cv.wait(g).expect("vcpu control lock");
        }
        g.parked -= 1;
    }
}

/// Starts one thread per vCPU. Each runs until its vCPU stops for good, then reports why
/// on `events` and signals `exit_evt`.
pub fn start(
    vcpus: Vec<Vcpu>,
    buses: &IoBuses,
    metrics: &Arc<Metrics>,
    control: &Arc<VcpuControl>,
    events: &Sender<VcpuEvent>,
    exit_evt: &EventFd,
) -> Result<(), VcpuError> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
        .map_err(VcpuError::Signal)?;
    for mut vcpu in vcpus {
        let id = vcpu.id;
        let buses = buses.clone();
        let metrics = metrics.clone();
        let ctl = control.clone();
        let events = events.clone();
        let exit_evt = exit_evt
            .try_clone()
            .map_err(|e| VcpuError::Spawn { id, source: e })?;
        let handle = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                let event = loop {
                    ctl.checkpoint();
                    match vcpu.run_once(&buses, &metrics) {
                        Ok(None) => {}
                        Ok(Some(VcpuEvent::Error { id, reason })) => {
                            break VcpuEvent::Error {
                                id,
                                reason: format!("{reason}; {}", vcpu.dump_registers()),
                            };
                        }
                        Ok(Some(event)) => break event,
                        Err(e) => {
                            break VcpuEvent::Error {
                                id,
                                reason: format!("{e}; {}", vcpu.dump_registers()),
                            };
                        }
                    }
                };
                let _ = events.send(event);
                let _ = exit_evt.write(1);
                // A stopped vCPU runs no guest code: count it as parked for good, so a
                // pause racing with the VM's end does not wait for it.
                ctl.inner.lock().expect("vcpu control lock").parked += 1;
                ctl.cv.notify_all();
                // Stay parked: the VMM exits the process, and `kick` needs a live thread.
                loop {
                    std::thread::park();
                }
            })
            .map_err(|source| VcpuError::Spawn { id, source })?;
        control
            .threads
            .lock()
            .expect("vcpu threads lock")
            .push(handle);
    }
    Ok(())
}
