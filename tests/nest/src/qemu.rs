//! Starting and supervising the QEMU process that is L1.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use std::path::PathBuf;

use crate::script::{DEFAULT_TMPFS, RESULT_TAG, ROOT_TAG, Script, Share};
use crate::{Error, Options, Output, Result, tail};

const CONSOLE_TAIL: usize = 6000;

pub fn run(kernel: &Path, cmd: &[&str], opts: &Options) -> Result<Output> {
    let workdir = tempfile::Builder::new()
        .prefix("ward-nest-")
        .tempdir()
        .map_err(|source| Error::Io {
            what: "creating the harness work directory".into(),
            source,
        })?;
    let results = workdir.path().join("results");
    std::fs::create_dir(&results).map_err(|source| Error::Io {
        what: format!("creating {}", results.display()),
        source,
    })?;

    let tmpfs: Vec<PathBuf> = DEFAULT_TMPFS
        .iter()
        .map(PathBuf::from)
        .chain(opts.tmpfs.iter().cloned())
        .collect();
    let mut shares: Vec<Share> = shadowed_tops(&opts.visible, &tmpfs)
        .into_iter()
        .enumerate()
        .map(|(i, path)| Share {
            tag: format!("nestv{i}"),
            path,
            readonly: true,
        })
        .collect();
    shares.extend(opts.writable.iter().enumerate().map(|(i, p)| Share {
        tag: format!("nestw{i}"),
        path: p.clone(),
        readonly: false,
    }));
    let init = workdir.path().join("init");
    let script = Script {
        cmd,
        tmpfs: &tmpfs,
        shares: &shares,
        env: &opts.env,
        cwd: opts.cwd.as_deref(),
    };
    write_executable(&init, &script.render())?;

    let mut command = Command::new(&opts.qemu);
    command
        .args(["-M", "microvm,x-option-roms=off,rtc=off,acpi=off"])
        .args(["-accel", "tcg,thread=multi", "-cpu", "EPYC,+svm,+npt"])
        .args([
            "-smp",
            &opts.cpus.to_string(),
            "-m",
            &opts.memory_mib.to_string(),
        ])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-serial", "stdio", "-name", &opts.label])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", &cmdline(&init)])
        .args(share("h", Path::new("/"), ROOT_TAG, true))
        .args(share("r", &results, RESULT_TAG, false));
    for sh in &shares {
        command.args(share(&sh.tag, &sh.path, &sh.tag, sh.readonly));
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of ours;
    // it makes the kernel kill QEMU if the caller dies, so L1 never outlives its caller.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }

    let started = Instant::now();
    let mut child = command.spawn().map_err(|source| Error::QemuSpawn {
        qemu: opts.qemu.clone(),
        source,
    })?;
    let console = Arc::new(Mutex::new(String::new()));
    let console_reader = spawn_console_reader(&mut child, Arc::clone(&console), opts.echo_console);
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stderr_reader = thread::spawn(move || {
        let mut buf = String::new();
        let _ = stderr_pipe.read_to_string(&mut buf);
        buf
    });

    let status = wait_with_timeout(&mut child, opts.timeout);
    let _ = console_reader.join();
    let qemu_stderr = stderr_reader.join().unwrap_or_default();
    let elapsed = started.elapsed();
    let console = std::mem::take(&mut *console.lock().expect("console lock"));

    let Some(status) = status else {
        return Err(Error::Timeout {
            after: opts.timeout,
            console: tail(&console, CONSOLE_TAIL),
        });
    };
    let read = |name: &str| std::fs::read(results.join(name));
    match read("status") {
        Ok(raw) => {
            let text = String::from_utf8_lossy(&raw);
            let status = text.trim().parse::<i32>().map_err(|_| Error::NoResult {
                console: tail(&console, CONSOLE_TAIL),
            })?;
            Ok(Output {
                status,
                stdout: read("stdout").unwrap_or_default(),
                stderr: read("stderr").unwrap_or_default(),
                console,
                elapsed,
            })
        }
        Err(_) if !status.success() => Err(Error::QemuFailed {
            status,
            stderr: qemu_stderr.trim().to_owned(),
            console: tail(&console, CONSOLE_TAIL),
        }),
        Err(_) => Err(Error::NoResult {
            console: tail(&console, CONSOLE_TAIL),
        }),
    }
}

/// For each visible path under a tmpfs mount point, the directory right below that mount
/// point: sharing it again keeps the path (and its siblings in the same tree) reachable.
fn shadowed_tops(visible: &[PathBuf], tmpfs: &[PathBuf]) -> Vec<PathBuf> {
    let mut tops: Vec<PathBuf> = Vec::new();
    for path in visible {
        for mount in tmpfs {
            let Ok(rest) = path.strip_prefix(mount) else {
                continue;
            };
            if let Some(first) = rest.components().next() {
                let top = mount.join(first);
                if !tops.contains(&top) {
                    tops.push(top);
                }
            }
        }
    }
    tops
}

fn cmdline(init: &Path) -> String {
    let mut line = format!(
        "console=ttyS0 reboot=t panic=-1 loglevel=4 \
         root={ROOT_TAG} rootfstype=9p rootflags=trans=virtio,version=9p2000.L,msize=262144,cache=loose \
         ro init={}",
        init.display()
    );
    // TCG's TSC ticks at the host's rate, but L1 calibrates it against an emulated PIT, which
    // fails when the host is busy; KVM in L1 then has no TSC frequency and its guests hang in
    // KVM_RUN. Hand L1 the host's frequency instead, and trust it.
    if let Some(khz) = host_tsc_khz() {
        let _ = write!(line, " tsc_early_khz={khz} tsc=reliable");
    }
    line
}

/// The host CPU's frequency in kHz, from `/proc/cpuinfo` (which reports the TSC rate in a VM).
fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("cpu MHz")?.split(':').nth(1))?
        .trim()
        .parse()
        .ok()?;
    (mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
}

fn share(id: &str, path: &Path, tag: &str, readonly: bool) -> [String; 4] {
    let ro = if readonly { ",readonly=on" } else { "" };
    [
        "-fsdev".into(),
        format!(
            "local,id={id},path={},security_model=none,multidevs=remap{ro}",
            path.display()
        ),
        "-device".into(),
        format!("virtio-9p-device,fsdev={id},mount_tag={tag}"),
    ]
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o755)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}

fn spawn_console_reader(
    child: &mut Child,
    console: Arc<Mutex<String>>,
    echo: bool,
) -> thread::JoinHandle<()> {
    let mut stdout = child.stdout.take().expect("stdout is piped");
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if echo {
                        eprint!("{text}");
                    }
                    console.lock().expect("console lock").push_str(&text);
                }
            }
        }
    })
}

/// Waits for QEMU; on timeout kills and reaps it and returns `None`.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadowed_tops_finds_the_directory_below_the_tmpfs() {
        let tmpfs = [PathBuf::from("/tmp"), PathBuf::from("/run")];
        let visible = [
            PathBuf::from("/tmp/clone/tests"),
            PathBuf::from("/tmp/clone/target"),
            PathBuf::from("/work/main"),
            PathBuf::from("/run"),
        ];
        assert_eq!(
            shadowed_tops(&visible, &tmpfs),
            [PathBuf::from("/tmp/clone")]
        );
    }
}
