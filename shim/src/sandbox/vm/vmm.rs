//! The sandbox's `ward-vmm` process: its JSON config, its own cgroup, the guest console
//! forwarded to the shim's log, its exit watched (with the reason), and the control API
//! calls the shim makes (attaching layer images to drive slots).

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use ward_vmm::api::DriveUpdate;
use ward_vmm::config::{DriveConfig, SerialOutput, VmConfig, VsockConfig};

use super::boot::{BootFiles, Sizing};

/// The kernel command line of every guest: the agent is init and needs nothing else. `quiet`
/// keeps boot messages (each one a trip through the emulated UART) off the console; a
/// panic is still printed, and `panic=-1` turns it into a VMM exit. `no_timer_check`: a
/// vCPU starved by a busy host can miss the ticks the IO-APIC timer check counts, and the
/// guest then panics at boot, as other microVM runtimes know; the check is for hardware.
const CMDLINE: &str = "console=ttyS0 quiet reboot=k panic=-1 pci=off nomodule no_timer_check \
     i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";
/// The guest's vsock context id; the hybrid scheme makes it private to the VM.
const GUEST_CID: u64 = 3;
/// Console lines kept for error messages.
const CONSOLE_TAIL: usize = 20;
/// Where every VMM gets a cgroup of its own, under each hierarchy's root.
const CGROUP_PARENT: &str = "ward-vmm";

/// How the VMM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmExit {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for VmmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // ward-vmm's exit codes (docs/vmm.md).
        match self {
            Self::Code(0) => f.write_str("exited 0: the guest powered off"),
            Self::Code(1) => f.write_str("exited 1: the guest kernel panicked"),
            Self::Code(2) => f.write_str("exited 2: configuration error"),
            Self::Code(3) => f.write_str("exited 3: KVM or VMM error"),
            Self::Code(c) => write!(f, "exited {c}"),
            Self::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// A running (or ended) `ward-vmm`.
#[derive(Debug)]
pub struct Vmm {
    pub pid: u32,
    pub api_sock: PathBuf,
    pub vsock_uds: PathBuf,
    exit: watch::Receiver<Option<VmmExit>>,
    console: Arc<Mutex<VecDeque<String>>>,
    /// `true` once the console pipe reached its end (everything the guest printed is in).
    console_closed: watch::Receiver<bool>,
    cgroups: Vec<PathBuf>,
}

impl Vmm {
    /// Writes `<dir>/vm.json` and starts ward-vmm on it, in a cgroup of its own and bound to
    /// the shim's life.
    pub fn spawn(
        id: &str,
        dir: &Path,
        files: &BootFiles,
        size: Sizing,
        slots: u8,
        kernel_args: &str,
    ) -> std::io::Result<Self> {
        let api_sock = dir.join("api.sock");
        let vsock_uds = dir.join("vsock.sock");
        let cmdline = if kernel_args.trim().is_empty() {
            CMDLINE.to_owned()
        } else {
            format!("{CMDLINE} {}", kernel_args.trim())
        };
        let config = VmConfig {
            kernel: files.kernel.clone(),
            initrd: Some(files.initrd.clone()),
            cmdline: Some(cmdline),
            vcpus: size.vcpus,
            mem_mib: size.mem_mib,
            hugepages: false,
            serial: SerialOutput::Stdout,
            api_sock: Some(api_sock.clone()),
            seccomp: true,
            drives: (0..slots)
                .map(|i| DriveConfig {
                    id: slot_id(usize::from(i)),
                    read_only: true,
                    ..DriveConfig::default()
                })
                .collect(),
            vsock: Some(VsockConfig {
                guest_cid: GUEST_CID,
                uds_path: vsock_uds.clone(),
            }),
            rng: true,
        };
        let config_path = dir.join("vm.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).map_err(std::io::Error::other)?,
        )?;

        let cgroups = create_cgroups(id);
        let procs: Vec<CString> = cgroups
            .iter()
            .filter_map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).ok())
            .collect();
        let mut cmd = tokio::process::Command::new(&files.vmm);
        cmd.arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
        // open(2), write(2) and close(2) on memory prepared before the fork: all
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                // The VM dies with the shim (the shim's runtime is current-thread); `shim
                // delete` sweeps what is left.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for p in &procs {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd >= 0 {
                        libc::write(fd, b"0".as_ptr().cast(), 1);
                        libc::close(fd);
                    }
                }
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                remove_cgroups(&cgroups);
                return Err(e);
            }
        };
        let pid = child.id().unwrap_or_default();
        if let Err(e) = std::fs::write(dir.join("vmm.pid"), pid.to_string()) {
            // Without its pid file a crashed shim's VM could not be found again.
            let _ = child.start_kill();
            remove_cgroups(&cgroups);
            return Err(e);
        }

        let console = Arc::new(Mutex::new(VecDeque::new()));
        let (console_tx, console_closed) = watch::channel(false);
        if let Some(out) = child.stdout.take() {
            let (id, console) = (id.to_owned(), console.clone());
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log::info!("sandbox {id}: guest: {line}");
                    let mut tail = console.lock().expect("console lock");
                    if tail.len() == CONSOLE_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
                let _ = console_tx.send(true);
            });
        }
        if let Some(err) = child.stderr.take() {
            let id = id.to_owned();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log::info!("sandbox {id}: ward-vmm: {line}");
                }
            });
        }
        let (exit_tx, exit) = watch::channel(None);
        {
            let id = id.to_owned();
            tokio::spawn(async move {
                use std::os::unix::process::ExitStatusExt;
                let how = match child.wait().await {
                    Ok(s) => s
                        .code()
                        .map_or_else(|| VmmExit::Signal(s.signal().unwrap_or(0)), VmmExit::Code),
                    Err(e) => {
                        log::warn!("sandbox {id}: waiting for ward-vmm: {e}");
                        VmmExit::Signal(0)
                    }
                };
                log::info!("sandbox {id}: ward-vmm (pid {pid}) {how}");
                let _ = exit_tx.send(Some(how));
            });
        }
        Ok(Self {
            pid,
            api_sock,
            vsock_uds,
            exit,
            console,
            console_closed,
            cgroups,
        })
    }

    /// `None` while the VMM runs.
    pub fn exited(&self) -> Option<VmmExit> {
        *self.exit.borrow()
    }

    /// Resolves when the VMM has exited.
    pub async fn wait(&self) -> VmmExit {
        let mut rx = self.exit.clone();
        let got = rx.wait_for(Option::is_some).await.map(|v| *v);
        got.ok().flatten().unwrap_or(VmmExit::Signal(0))
    }

    /// The last lines the guest printed, for error messages, once the console has been
    /// read to its end (the VMM's exit can be seen before its last output is).
    pub async fn final_console_tail(&self) -> String {
        let mut closed = self.console_closed.clone();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(2), closed.wait_for(|c| *c)).await;
        self.console_tail()
    }

    /// The last lines the guest printed, for error messages.
    pub fn console_tail(&self) -> String {
        let tail = self.console.lock().expect("console lock");
        if tail.is_empty() {
            return "(the guest printed nothing)".into();
        }
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    pub fn kill(&self) {
        if self.exited().is_none() {
            super::super::signal(self.pid, libc::SIGKILL);
        }
    }

    /// Removes the VMM's cgroups; the VMM must have exited.
    pub fn remove_cgroups(&self) {
        remove_cgroups(&self.cgroups);
    }

    /// `PUT /drives/{slot}`: backs drive slot `slot` with `image`, whose serial the guest
    /// then reads as `serial`.
    pub async fn attach(&self, slot: usize, image: &Path, serial: &str) -> Result<(), String> {
        let body = serde_json::to_string(&DriveUpdate {
            path: Some(image.to_owned()),
            serial: Some(serial.to_owned()),
        })
        .map_err(|e| e.to_string())?;
        api_call(
            &self.api_sock,
            "PUT",
            &format!("/drives/{}", slot_id(slot)),
            &body,
        )
        .await
    }
}

/// The API name of drive slot `i`.
pub fn slot_id(i: usize) -> String {
    format!("layer{i}")
}

/// One HTTP/1.1 request on the VMM's API socket; `Err` carries the VMM's fault message.
async fn api_call(sock: &Path, method: &str, path: &str, body: &str) -> Result<(), String> {
    let what = |e: std::io::Error| format!("{method} {path} on {}: {e}", sock.display());
    let mut stream = tokio::net::UnixStream::connect(sock).await.map_err(what)?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.map_err(what)?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer is small: read until the headers and the announced body are in.
    loop {
        let n = stream.read(&mut buf).await.map_err(what)?;
        response.extend_from_slice(&buf[..n]);
        if n == 0 || response_complete(&response) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if (200..300).contains(&status) {
        Ok(())
    } else {
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
        Err(format!("{method} {path}: HTTP {status}: {body}"))
    }
}

fn response_complete(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= length
}

/// `<root>/ward-vmm/<id>` in the v2 tree, or in each v1 hierarchy that accounts memory, CPU
/// or pids. A host without them still runs the VM, only unaccounted.
fn create_cgroups(id: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let roots: Vec<PathBuf> = if root.join("cgroup.controllers").exists() {
        vec![root.to_owned()]
    } else {
        ["memory", "cpu,cpuacct", "pids"]
            .iter()
            .map(|c| root.join(c))
            .filter(|d| d.join("cgroup.procs").exists())
            .collect()
    };
    roots
        .into_iter()
        .map(|r| r.join(CGROUP_PARENT).join(id))
        .filter(|d| match std::fs::create_dir_all(d) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("creating cgroup {}: {e}", d.display());
                false
            }
        })
        .collect()
}

fn remove_cgroups(dirs: &[PathBuf]) {
    for d in dirs {
        if let Err(e) = std::fs::remove_dir(d) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("removing cgroup {}: {e}", d.display());
            }
        }
    }
}

/// The cgroups a VMM of sandbox `id` would have, for sweeping after a crash.
pub fn cgroups_of(id: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(CGROUP_PARENT).join(id)];
    for c in ["memory", "cpu,cpuacct", "pids"] {
        dirs.push(root.join(c).join(CGROUP_PARENT).join(id));
    }
    dirs
}

/// Removes what [`cgroups_of`] names, where it exists and is empty.
pub fn sweep_cgroups(id: &str) {
    let dirs: Vec<PathBuf> = cgroups_of(id).into_iter().filter(|d| d.exists()).collect();
    remove_cgroups(&dirs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_complete_once_its_body_is_in() {
        assert!(!response_complete(b"HTTP/1.1 204 No Content\r\n"));
        assert!(response_complete(b"HTTP/1.1 204 No Content\r\n\r\n"));
        let partial = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 10\r\n\r\n{\"fa";
        assert!(!response_complete(partial));
        let full = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\n\r\n{\"a\"";
        assert!(response_complete(full));
    }

    #[test]
    fn exits_say_why() {
        assert!(VmmExit::Code(1).to_string().contains("panicked"));
        assert!(VmmExit::Signal(9).to_string().contains("signal 9"));
    }
}
