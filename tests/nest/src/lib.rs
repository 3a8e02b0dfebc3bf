//! The nested KVM harness.
//!
//! Some hosts (PVM, see `docs/testing.md`) offer a `/dev/kvm` that cannot boot Linux. This
//! crate boots a small Linux ("L1") under QEMU TCG emulating an AMD CPU with SVM and nested
//! paging; inside it `kvm_amd` gives a real `/dev/kvm`. The host's `/` is L1's read-only
//! root over 9p, so every host binary runs there unchanged; `/tmp`, `/run` and `/var/lib`
//! (plus any caller-given paths) are fresh tmpfs. One command runs, and its exit status,
//! stdout, stderr and the L1 console come back to the caller.

mod kernel;
mod qemu;
mod script;

use std::path::PathBuf;
use std::time::Duration;

pub use kernel::{KernelKind, cache_dir, kernel_path};

/// How L1 is booted and what the command sees.
#[derive(Debug, Clone)]
pub struct Options {
    /// L1 kernel; `None` means the cached `nest-host` kernel of this source tree.
    pub kernel: Option<PathBuf>,
    /// QEMU binary.
    pub qemu: PathBuf,
    /// Wall-clock limit for the whole round trip (boot, command, power-off).
    pub timeout: Duration,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Paths mounted as fresh tmpfs in L1, in addition to `/tmp`, `/run` and `/var/lib`.
    pub tmpfs: Vec<PathBuf>,
    /// Host directories shared read-write into L1 at the same path (results, logs).
    pub writable: Vec<PathBuf>,
    /// Host paths that stay visible (read-only) even when a tmpfs above covers them: for each,
    /// the top directory under the covering tmpfs is shared again at the same path. Default:
    /// the working directory, so a checkout under `/tmp` still sees its own files.
    pub visible: Vec<PathBuf>,
    /// Environment of the command, on top of PATH, HOME, WARD_CACHE and RUST_* from the caller.
    pub env: Vec<(String, String)>,
    /// Working directory of the command (a host path, read-only in L1 unless made writable).
    pub cwd: Option<PathBuf>,
    /// Appears in QEMU's `-name` so a caller can find (or prove the absence of) its process.
    pub label: String,
    /// Copy the L1 console to stderr as it arrives.
    pub echo_console: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            kernel: None,
            qemu: PathBuf::from("qemu-system-x86_64"),
            timeout: Duration::from_secs(600),
            memory_mib: 2048,
            cpus: 2,
            tmpfs: Vec::new(),
            writable: Vec::new(),
            visible: std::env::current_dir().into_iter().collect(),
            env: Vec::new(),
            cwd: std::env::current_dir().ok(),
            label: format!("ward-nest-{}", std::process::id()),
            echo_console: false,
        }
    }
}

/// What the command did inside L1.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command's exit status (128 + signal when it was killed by one).
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Everything L1 printed on its serial console.
    pub console: String,
    /// Wall time from QEMU start to QEMU exit.
    pub elapsed: Duration,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// `Ok(self)` when the command exited 0, otherwise [`Error::CommandFailed`].
    pub fn success(self) -> Result<Self> {
        if self.status == 0 {
            Ok(self)
        } else {
            Err(Error::CommandFailed {
                status: self.status,
                stderr: tail(&self.stderr_str(), 4000),
            })
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("nest kernel {path} not found: build it with `guest-kernel/build.sh nest-host`")]
    KernelNotFound { path: PathBuf },
    #[error("QEMU binary {qemu} could not be started: {source} (install Debian's qemu-system-x86)")]
    QemuSpawn {
        qemu: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "QEMU exited with {status} before the command finished; QEMU said: {stderr}\nL1 console (tail):\n{console}"
    )]
    QemuFailed {
        status: std::process::ExitStatus,
        stderr: String,
        console: String,
    },
    #[error(
        "L1 powered off without a result from the command (kernel or init failure); L1 console (tail):\n{console}"
    )]
    NoResult { console: String },
    #[error("timed out after {after:?}; QEMU was killed; L1 console (tail):\n{console}")]
    Timeout { after: Duration, console: String },
    #[error("command exited with status {status} in L1; its stderr (tail):\n{stderr}")]
    CommandFailed { status: i32, stderr: String },
    #[error("invalid harness option: {0}")]
    InvalidOption(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Boots L1, runs `cmd` (argv, no shell) inside, powers off, and returns what it did.
///
/// A command that exits non-zero is still `Ok`: look at [`Output::status`] or call
/// [`Output::success`]. Errors are for the harness itself: no kernel, QEMU failing, L1
/// dying, or the timeout. QEMU never outlives this call, nor the calling process.
pub fn run<S: AsRef<str>>(cmd: &[S], opts: &Options) -> Result<Output> {
    if cmd.is_empty() {
        return Err(Error::InvalidOption("empty command".into()));
    }
    let kernel = match &opts.kernel {
        Some(path) => path.clone(),
        None => kernel_path(KernelKind::NestHost),
    };
    if !kernel.is_file() {
        return Err(Error::KernelNotFound { path: kernel });
    }
    let cmd: Vec<&str> = cmd.iter().map(AsRef::as_ref).collect();
    qemu::run(&kernel, &cmd, opts)
}

/// Whether this host's `/dev/kvm` is PVM, which cannot boot a Linux guest (see module docs).
pub fn host_kvm_is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

pub(crate) fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "…def");
        assert_eq!(tail("aé€", 3), "…€");
    }

    #[test]
    fn success_reports_status_and_stderr() {
        let out = Output {
            status: 3,
            stdout: vec![],
            stderr: b"boom\n".to_vec(),
            console: String::new(),
            elapsed: Duration::ZERO,
        };
        let err = out.success().unwrap_err().to_string();
        assert!(err.contains("status 3"), "{err}");
        assert!(err.contains("boom"), "{err}");
    }

    #[test]
    fn missing_kernel_is_named() {
        let opts = Options {
            kernel: Some("/nonexistent/vmlinux".into()),
            ..Options::default()
        };
        let err = run(&["true"], &opts).unwrap_err();
        assert!(matches!(err, Error::KernelNotFound { .. }));
        assert!(err.to_string().contains("/nonexistent/vmlinux"));
    }
}
