//! vmm-bench: boots the same kernel and initrd under ward-vmm and QEMU `-M microvm`, in
//! turns, and reports for each boot the wall time from spawning the VMM to the guest's
//! "WARD-READY" console line (printed right after the guest wrote the boot port) and the
//! VMM's RSS at that moment, split into guest memory and the VMM's own.
//!
//! `vmm-bench <runs> <ward-vmm> <vmlinux> <initrd>`; one JSON object per boot on stdout.
//! The initrd's init must print WARD-READY, wait a moment, and `reboot -f`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MEM_MIB: u64 = 128;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, runs, vmm, kernel, initrd] = &args[..] else {
        eprintln!("usage: vmm-bench <runs> <ward-vmm> <vmlinux> <initrd>");
        std::process::exit(2);
    };
    let runs: usize = runs.parse().expect("runs is a number");
    let mem = MEM_MIB.to_string();
    for run in 0..runs {
        let mut ward = Command::new(vmm);
        ward.args(["--kernel", kernel, "--initrd", initrd, "--mem-mib", &mem])
            .args(["--cmdline", "console=ttyS0 reboot=k panic=-1 quiet"])
            .env("WARD_VMM_QUIET", "1");
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args([
            "-M",
            "microvm,x-option-roms=off,rtc=off,acpi=off",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-smp",
            "1",
            "-m",
            &mem,
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-serial",
            "stdio",
            "-kernel",
            kernel,
            "-initrd",
            initrd,
            "-append",
            "console=ttyS0 reboot=t panic=-1 quiet",
        ]);
        for (name, cmd) in [("ward-vmm", &mut ward), ("qemu-microvm", &mut qemu)] {
            measure(run, name, cmd);
        }
    }
}

fn measure(run: usize, name: &str, cmd: &mut Command) {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut ready = None;
    let mut rss = (0, 0);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.contains("WARD-READY") && ready.is_none() {
            ready = Some(start.elapsed());
            rss = rss_split(child.id());
        }
    }
    let status = wait(&mut child, Duration::from_secs(30));
    println!(
        "{{\"run\":{run},\"vmm\":\"{name}\",\"ready_ms\":{:.1},\"rss_kib\":{},\"guest_rss_kib\":{},\"vmm_rss_kib\":{},\"exit\":\"{status}\"}}",
        ready.map_or(-1.0, |d| d.as_secs_f64() * 1000.0),
        rss.0,
        rss.1,
        rss.0 - rss.1,
    );
}

fn wait(child: &mut Child, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.to_string();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return "killed".into();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (total RSS, RSS of the guest-RAM mapping) of `pid` in KiB. Guest RAM is the anonymous
/// mapping at least as large as the guest's memory (both VMMs map it in one piece).
fn rss_split(pid: u32) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut total, mut guest, mut is_guest) = (0, 0, false);
    for line in smaps.lines() {
        if let Some(v) = line.strip_prefix("Rss:") {
            let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            total += kib;
            if is_guest {
                guest += kib;
            }
        } else if let Some(v) = line.strip_prefix("Size:") {
            let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            is_guest = is_guest && kib >= MEM_MIB * 1024;
        } else if let Some((range, rest)) = line.split_once(' ') {
            if range.contains('-') && !line.ends_with(':') && !line.contains(":  ") {
                // A mapping header; anonymous mappings have no path after the inode.
                let fields: Vec<&str> = rest.split_whitespace().collect();
                is_guest = fields.len() == 4 && fields[3] == "0";
            }
        }
    }
    (total, guest)
}
