//! ward-vmm end to end: configuration errors (before KVM is touched), the device path on
//! the host's KVM with a tiny guest, and real Linux boots in the nested harness.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use ward_nest::{KernelKind, Options, kernel_path};
use ward_tests::guest::{build_initrd, scratch_dir, vmm_binary, vmm_without_kvm};
use ward_tests::{Need, require};
use ward_vmm::devices::bus::BusDevice;
use ward_vmm::metrics::Metrics;
use ward_vmm::vstate::vcpu::{IoBuses, Vcpu, VcpuEvent};
use ward_vmm::vstate::vm::{Irqchip, Vm};

#[test]
fn vmm_config_errors_before_kvm() {
    if !require("vmm_config_errors_before_kvm", &[Need::Root]) {
        return;
    }
    let dir = scratch_dir("vmm-config");
    let kernel = kernel_path(KernelKind::Guest);
    let kernel = kernel.to_str().unwrap();
    let initrd = dir.join("big.initrd");
    std::fs::File::create(&initrd)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let initrd = initrd.to_str().unwrap();
    let json = dir.join("vm.json");
    std::fs::write(&json, r#"{"kernel": "/k", "vcpu": 2}"#).unwrap();

    let cases: [(&[&str], &str); 6] = [
        (
            &["--kernel", "/nonexistent/vmlinux"],
            "kernel /nonexistent/vmlinux: No such file or directory",
        ),
        (
            &["--kernel", kernel, "--initrd", initrd, "--mem-mib", "64"],
            "does not fit in 64 MiB of guest memory",
        ),
        (
            &["--kernel", kernel, "--vcpus", "0"],
            "vcpus = 0: a microVM needs 1 to 32 vCPUs",
        ),
        (
            &["--kernel", kernel, "--mem-mib", "0"],
            "mem_mib = 0: guest memory must be",
        ),
        (
            &["--config", json.to_str().unwrap()],
            "unknown field `vcpu`",
        ),
        (&[], "give --config <vm.json> or at least --kernel"),
    ];
    for (args, want) in cases {
        let (code, stderr) = vmm_without_kvm(args);
        assert_eq!(code, 2, "ward-vmm {args:?}: {stderr}");
        assert!(stderr.contains(want), "ward-vmm {args:?}: {stderr}");
        assert!(!stderr.contains("/dev/kvm"), "{stderr}");
    }
    // Huge pages that are not reserved: said when mapping, not as a failed kernel load.
    let free_huge: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    if free_huge < 64 {
        let (code, stderr) = vmm_without_kvm(&["--kernel", kernel, "--hugepages"]);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains("guest memory at 0x0 on huge pages: Cannot allocate memory"),
            "{stderr}"
        );
    }
    // The same namespace trick does hide KVM: a valid configuration gets that far.
    let (code, stderr) = vmm_without_kvm(&["--kernel", kernel]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("opening /dev/kvm"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

type Writes = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// Records writes and answers reads with a fixed byte.
struct Probe {
    answer: u8,
    writes: Writes,
}

impl BusDevice for Probe {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(self.answer);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.writes.lock().unwrap().push((offset, data.to_vec()));
    }
}

/// On PVM (this project's development machines) a Linux guest dies of an emulation failure
/// a few seconds into boot: that is the KVM-error path, which must end with exit 3, the
/// reason and the registers. On a KVM that boots Linux this test has nothing to provoke.
#[test]
fn vmm_kvm_failure_exits_3_with_registers() {
    if !require("vmm_kvm_failure_exits_3_with_registers", &[Need::Kvm]) {
        return;
    }
    if !ward_nest::host_kvm_is_pvm() {
        eprintln!("SKIP vmm_kvm_failure_exits_3_with_registers: this KVM boots Linux");
        return;
    }
    let dir = scratch_dir("vmm-kvm-failure");
    let initrd = build_initrd(&dir, "fail", "reboot -f");
    let out = Command::new(vmm_binary())
        .arg("--kernel")
        .arg(kernel_path(KernelKind::Guest))
        .arg("--initrd")
        .arg(&initrd)
        .args(["--serial", "none"])
        .output()
        .expect("running ward-vmm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("ward-vmm: vCPU 0: KVM"), "{stderr}");
    assert!(
        stderr.contains(" rip=0x") && stderr.contains(" cr3=0x"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A ring-3 64-bit guest (what any KVM, PVM included, runs natively) that reads a byte
/// from an MMIO device, writes it to a PIO device, writes 0x77 to the MMIO device, and
/// stops (its `hlt` faults at CPL3 with no IDT: a triple fault, i.e. a reset).
#[test]
fn vmm_host_kvm_pio_mmio_through_the_bus() {
    const CODE: u64 = 0x8000;
    const MMIO: u64 = 0xd000_0000;
    if !require("vmm_host_kvm_pio_mmio_through_the_bus", &[Need::Kvm]) {
        return;
    }
    let mem = ward_vmm::vstate::memory::create(16 << 20, false).unwrap();
    let vm = Vm::new(Irqchip::None).unwrap();
    vm.register_memory(&mem).unwrap();

    // Identity map of the first GiB, user-accessible, 2 MiB pages; and of the GiB holding
    // the MMIO window.
    mem.write_obj(0x2000u64 | 0x7, GuestAddress(0x1000))
        .unwrap();
    mem.write_obj(0x3000u64 | 0x7, GuestAddress(0x2000))
        .unwrap();
    mem.write_obj(0x4000u64 | 0x7, GuestAddress(0x2000 + 3 * 8))
        .unwrap();
    for i in 0..512u64 {
        mem.write_obj((i << 21) | 0x87, GuestAddress(0x3000 + i * 8))
            .unwrap();
        mem.write_obj(((3 << 30) + (i << 21)) | 0x87, GuestAddress(0x4000 + i * 8))
            .unwrap();
    }
    let gdt: [u64; 5] = [
        0,
        0x00af_9b00_0000_ffff,
        0x00cf_9300_0000_ffff,
        0x00af_fb00_0000_ffff, // ring-3 code64
        0x00cf_f300_0000_ffff, // ring-3 data
    ];
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(0x500 + i as u64 * 8))
            .unwrap();
    }
    let code = [
        0xbb, 0x00, 0x00, 0x00, 0xd0, // mov ebx, 0xd0000000
        0x8a, 0x03, // mov al, [rbx]
        0xe6, 0x10, // out 0x10, al
        0xb0, 0x77, // mov al, 0x77
        0x88, 0x43, 0x08, // mov [rbx+8], al
        0xc7, 0x43, 0x50, 0x01, 0x00, 0x00, 0x00, // mov dword [rbx+0x50], 1 (ioeventfd)
        0xc7, 0x43, 0x50, 0x02, 0x00, 0x00, 0x00, // mov dword [rbx+0x50], 2 (no match: bus)
        0xf4, // hlt
    ];
    mem.write_slice(&code, GuestAddress(CODE)).unwrap();

    let pio_writes = Arc::new(Mutex::new(Vec::new()));
    let mmio_writes = Arc::new(Mutex::new(Vec::new()));
    let mut buses = IoBuses::default();
    buses
        .pio
        .insert(
            Arc::new(Mutex::new(Probe {
                answer: 0,
                writes: pio_writes.clone(),
            })),
            0x10,
            1,
        )
        .unwrap();
    buses
        .mmio
        .insert(
            Arc::new(Mutex::new(Probe {
                answer: 0x5a,
                writes: mmio_writes.clone(),
            })),
            MMIO,
            0x1000,
        )
        .unwrap();

    // A queue notification with the registered datamatch is an ioeventfd, not an exit.
    let notify = EventFd::new(EFD_NONBLOCK).unwrap();
    vm.register_mmio_ioevent(&notify, MMIO + 0x50, Some(1))
        .unwrap();

    let mut vcpu = Vcpu::new(&vm, 0).unwrap();
    vcpu.configure_cpu(&vm.supported_cpuid().unwrap(), 1, false)
        .unwrap();
    let mut sregs = vcpu.sregs().unwrap();
    let seg = |selector: u16, type_: u8, l: u8, db: u8| kvm_bindings::kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 3,
        db,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.cs = seg((3 << 3) | 3, 11, 1, 0);
    let data = seg((4 << 3) | 3, 3, 0, 1);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.gdt.base = 0x500;
    sregs.gdt.limit = 5 * 8 - 1;
    sregs.cr3 = 0x1000;
    sregs.cr4 = 1 << 5;
    sregs.cr0 = 0x8000_0033;
    sregs.efer = 0x500;
    let regs = kvm_bindings::kvm_regs {
        rip: CODE,
        rsp: 0x7000,
        rflags: 0x2 | (3 << 12), // IOPL 3
        ..Default::default()
    };
    vcpu.set_registers(&regs, &sregs).unwrap();

    let metrics = Metrics::default();
    let mut stop = None;
    for _ in 0..32 {
        if let Some(event) = vcpu.run_once(&buses, &metrics).unwrap() {
            stop = Some(event);
            break;
        }
    }
    // The MMIO read reached the device (0x5a came back) and went out on the PIO bus.
    assert_eq!(*pio_writes.lock().unwrap(), vec![(0, vec![0x5a])]);
    assert_eq!(
        *mmio_writes.lock().unwrap(),
        vec![(8, vec![0x77]), (0x50, vec![2, 0, 0, 0])]
    );
    assert_eq!(notify.read().unwrap(), 1, "the ioeventfd did not fire");
    assert!(
        matches!(stop, Some(VcpuEvent::Reset | VcpuEvent::Shutdown)),
        "{stop:?}"
    );
    let m = metrics.snapshot();
    assert_eq!((m.pio_exits, m.mmio_exits), (1, 3), "{m:?}");
}

/// What the virtio devices build on: slots in order, GSIs from 5, the kernel command line
/// entries, and the irqfd/ioeventfd registrations KVM accepts.
#[test]
fn vmm_add_mmio_device_slots_and_cmdline() {
    if !require("vmm_add_mmio_device_slots_and_cmdline", &[Need::Kvm]) {
        return;
    }
    let mut config = ward_vmm::VmConfig::new(kernel_path(KernelKind::Guest));
    config.cmdline = Some("console=ttyS0 reboot=k".into());
    let mut vmm = ward_vmm::Vmm::new(config).unwrap();
    let mut slots = Vec::new();
    for _ in 0..2 {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let notify = [
            (EventFd::new(EFD_NONBLOCK).unwrap(), 0),
            (EventFd::new(EFD_NONBLOCK).unwrap(), 1),
        ];
        let device = Arc::new(Mutex::new(Probe {
            answer: 0,
            writes: Writes::default(),
        }));
        slots.push(vmm.add_mmio_device(device, &irq, &notify).unwrap());
    }
    assert_eq!(
        slots,
        [
            ward_vmm::MmioSlot {
                base: 0xd000_0000,
                gsi: 5
            },
            ward_vmm::MmioSlot {
                base: 0xd000_1000,
                gsi: 6
            }
        ]
    );
    assert_eq!(
        vmm.cmdline(),
        "console=ttyS0 reboot=k virtio_mmio.device=4K@0xd0000000:5 \
         virtio_mmio.device=4K@0xd0001000:6"
    );
    // 19 GSIs (5..=23) in all.
    for _ in 2..19 {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let device = Arc::new(Mutex::new(Probe {
            answer: 0,
            writes: Writes::default(),
        }));
        vmm.add_mmio_device(device, &irq, &[]).unwrap();
    }
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let device = Arc::new(Mutex::new(Probe {
        answer: 0,
        writes: Writes::default(),
    }));
    let err = vmm.add_mmio_device(device, &irq, &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no free virtio-mmio slot: all 19 are taken"
    );
}

/// The L1 script: boots ward-vmm several times and prints each run's exit code, console
/// and log with a prefix per case.
const NEST_SCRIPT: &str = r#"
set -u
VMM=$1; K=$2; D=$3
show() { echo "== $1 rc=$2"; sed "s/^/$1| /" /tmp/$1.out; sed "s/^/$1! /" /tmp/$1.err; }
run() { name=$1; shift; "$VMM" "$@" >/tmp/$name.out 2>/tmp/$name.err; show $name $?; }
run boot --kernel $K --initrd $D/boot.cpio --vcpus 2 --mem-mib 256 \
  --cmdline "console=ttyS0 reboot=k panic=-1 quiet"
run poweroff --config $D/poweroff.json
run panic --kernel $K --initrd $D/panic.cpio --cmdline "console=ttyS0 reboot=k panic=-1"

api() { curl -sS --unix-socket /tmp/api.sock "$@"; }
ticks() { n=$(grep -c '^tick' /tmp/tick.out 2>/dev/null); echo "${n:-0}"; }
"$VMM" --kernel $K --initrd $D/tick.cpio --cmdline "console=ttyS0 reboot=k panic=-1 quiet" \
  --api-sock /tmp/api.sock --serial /tmp/tick.out 2>/tmp/tick.err &
pid=$!
i=0; while [ "$(ticks)" -lt 3 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo "pause-http=$(api -X PUT -d '{"action_type":"pause"}' -o /dev/null -w '%{http_code}' http://localhost/vm/actions)"
a=$(ticks); echo "vm-paused=$(api http://localhost/vm)"
sleep 3
b=$(ticks)
echo "resume-http=$(api -X PUT -d '{"action_type":"resume"}' -o /dev/null -w '%{http_code}' http://localhost/vm/actions)"
i=0; while [ "$(ticks)" -le "$b" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
sleep 1
c=$(ticks); echo "vm-resumed=$(api http://localhost/vm)"
echo "metrics=$(api http://localhost/metrics)"
echo "bad-action=$(api -X PUT -d '{"action_type":"dance"}' http://localhost/vm/actions)"
echo "shutdown-http=$(api -X PUT -d '{"action_type":"shutdown"}' -o /dev/null -w '%{http_code}' http://localhost/vm/actions)"
wait $pid; rc=$?
echo "ticks before-pause=$a after-pause=$b after-resume=$c"
show tick $rc
"#;

fn section(out: &str, case: &str) -> (Option<i32>, String, String) {
    let rc = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("== {case} rc=")))
        .and_then(|v| v.trim().parse().ok());
    let pick = |sep: &str| {
        out.lines()
            .filter_map(|l| l.strip_prefix(&format!("{case}{sep} ")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    (rc, pick("|"), pick("!"))
}

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

#[test]
fn nest_vmm_boots_linux() {
    let dir = scratch_dir("nest-vmm");
    build_initrd(
        &dir,
        "boot",
        "mount -t proc proc /proc\n/bin/ward-ready\necho WARD-MARKER booted\n\
         echo cpus=$(grep -c ^processor /proc/cpuinfo)\ngrep MemTotal /proc/meminfo\n\
         mount -t sysfs sys /sys\n\
         echo packages=$(cat /sys/devices/system/cpu/cpu*/topology/physical_package_id)\n\
         reboot -f",
    );
    build_initrd(
        &dir,
        "poweroff",
        "mount -t proc proc /proc\necho WARD-MARKER off $(grep MemTotal /proc/meminfo)\npoweroff -f",
    );
    build_initrd(&dir, "panic", "echo WARD-MARKER about to exit init\nexit 3");
    build_initrd(
        &dir,
        "tick",
        "i=0\nwhile true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
    );
    // The poweroff case goes through a JSON config rather than flags.
    let json = serde_json::json!({
        "kernel": kernel_path(KernelKind::Guest),
        "initrd": dir.join("poweroff.cpio"),
        "cmdline": "console=ttyS0 reboot=k panic=-1",
        "vcpus": 1,
        "mem_mib": 96,
    });
    std::fs::write(dir.join("poweroff.json"), json.to_string()).unwrap();
    let script = dir.join("run.sh");
    std::fs::write(&script, NEST_SCRIPT).unwrap();
    let kernel = kernel_path(KernelKind::Guest);
    let vmm = vmm_binary();
    let opts = Options {
        label: format!("nest-vmm-{}", std::process::id()),
        timeout: Duration::from_secs(400),
        ..Options::default()
    };
    let out = ward_nest::run(
        &[
            "sh",
            script.to_str().unwrap(),
            vmm.to_str().unwrap(),
            kernel.to_str().unwrap(),
            dir.to_str().unwrap(),
        ],
        &opts,
    )
    .expect("harness round trip")
    .success()
    .expect("the L1 script");
    let out = out.stdout_str();
    eprintln!("{out}");

    // Boot: marker on the console, both vCPUs and the configured memory visible, the boot
    // port seen, and `reboot -f` is a clean exit.
    let (rc, console, log) = section(&out, "boot");
    assert_eq!(rc, Some(0), "{console}\n{log}");
    assert!(console.contains("WARD-MARKER booted"), "{console}");
    assert!(console.contains("cpus=2"), "{console}");
    // Both vCPUs are cores of one package (CPUID topology), not two sockets.
    assert!(console.contains("packages=0 0"), "{console}");
    let mem_kib: u64 = field(&console, "MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    assert!(
        (200 * 1024..=256 * 1024).contains(&mem_kib),
        "{mem_kib} KiB"
    );
    assert!(log.contains("guest ready"), "{log}");
    assert!(log.contains("guest reset"), "{log}");

    // poweroff without ACPI: the kernel's power-down line ends the VM, cleanly.
    let (rc, console, log) = section(&out, "poweroff");
    assert_eq!(rc, Some(0), "{console}\n{log}");
    assert!(console.contains("WARD-MARKER off"), "{console}");
    assert!(log.contains("guest powered off"), "{log}");
    // 96 MiB from the JSON file, not the 128 MiB default.
    let mem_kib: u64 = field(&console, "WARD-MARKER off MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    assert!((80 * 1024..=96 * 1024).contains(&mem_kib), "{mem_kib} KiB");

    // A panic resets the guest (panic=-1 reboot=k) but is not a clean exit.
    let (rc, console, log) = section(&out, "panic");
    assert_eq!(rc, Some(1), "{console}\n{log}");
    assert!(console.contains("Kernel panic - not syncing"), "{console}");
    assert!(
        log.contains("guest panicked:") && log.contains("Attempted to kill init"),
        "{log}"
    );

    // Pause freezes the guest's clock-driven output; resume continues it.
    let counts = field(&out, "ticks ");
    let nums: Vec<u64> = counts
        .split_whitespace()
        .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    let (before, after_pause, after_resume) = (nums[0], nums[1], nums[2]);
    assert!(before >= 3, "{counts}");
    assert_eq!(before, after_pause, "ticks went on while paused: {counts}");
    assert!(
        after_resume > after_pause,
        "no ticks after resume: {counts}"
    );
    assert_eq!(field(&out, "pause-http="), "204");
    assert_eq!(field(&out, "resume-http="), "204");
    let paused: serde_json::Value = serde_json::from_str(field(&out, "vm-paused=")).unwrap();
    assert_eq!(paused["state"], "paused", "{paused}");
    let resumed: serde_json::Value = serde_json::from_str(field(&out, "vm-resumed=")).unwrap();
    assert_eq!(resumed["state"], "running", "{resumed}");
    assert!(resumed["exits"]["pio"].as_u64().unwrap() > 0, "{resumed}");
    let metrics: serde_json::Value = serde_json::from_str(field(&out, "metrics=")).unwrap();
    assert!(metrics["first_run_us"].as_u64().unwrap() > 0, "{metrics}");
    assert!(metrics["rss_kib"].as_u64().unwrap() > 0, "{metrics}");
    assert!(
        field(&out, "bad-action=").contains("fault_message"),
        "{out}"
    );
    assert_eq!(field(&out, "shutdown-http="), "204");
    let (rc, _, log) = section(&out, "tick");
    assert_eq!(rc, Some(0), "{log}");
    assert!(log.contains("shutdown requested through the API"), "{log}");
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

/// ward-vmm against QEMU `-M microvm` in one harness run, same kernel and initrd: wall
/// time to the guest's ready line and RSS at that moment (see `docs/benchmarks.md`).
/// `WARD_BENCH_VMM` picks the ward-vmm binary (the release build, for numbers worth
/// quoting); the debug build otherwise.
#[test]
fn nest_vmm_benchmark_against_qemu_microvm() {
    let dir = scratch_dir("nest-vmm-bench");
    let initrd = build_initrd(
        &dir,
        "bench",
        "/bin/ward-ready\necho WARD-READY\nsleep 1\nreboot -f",
    );
    let vmm = std::env::var_os("WARD_BENCH_VMM").map_or_else(vmm_binary, Into::into);
    let kernel = kernel_path(KernelKind::Guest);
    let opts = Options {
        label: format!("nest-vmm-bench-{}", std::process::id()),
        timeout: Duration::from_secs(500),
        ..Options::default()
    };
    let out = ward_nest::run(
        &[
            env!("CARGO_BIN_EXE_vmm-bench"),
            "5",
            vmm.to_str().unwrap(),
            kernel.to_str().unwrap(),
            initrd.to_str().unwrap(),
        ],
        &opts,
    )
    .expect("harness round trip")
    .success()
    .expect("vmm-bench in L1");
    let out = out.stdout_str();
    eprintln!("{out}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 10, "{out}");
    for row in &rows {
        assert!(
            row["ready_ms"].as_f64().unwrap() > 0.0,
            "no ready line: {row}"
        );
    }
    for row in rows.iter().filter(|r| r["vmm"] == "ward-vmm") {
        assert_eq!(row["exit"], "exit status: 0", "{row}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
