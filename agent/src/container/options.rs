//! What a caller hands the library to create a container: the spec, where its root
//! filesystem comes from, how its stdio is wired, where its state lives.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use super::error::{Error, Result};

/// Where the container's root filesystem comes from.
#[derive(Debug, Clone)]
pub enum Rootfs {
    /// A directory already prepared (what runc gets from containerd).
    Path(PathBuf),
    /// Read-only layers, top first, stacked with overlayfs under a writable upper layer kept
    /// in `scratch` (the library creates `upper/`, `work/` and `rootfs/` there and removes
    /// them on delete).
    Layers {
        lower: Vec<PathBuf>,
        scratch: PathBuf,
    },
}

/// How the container process's stdin/stdout/stderr are wired.
#[derive(Debug, Default)]
pub enum Stdio {
    /// Three pipes; the caller gets their other ends in [`ProcessIo`].
    #[default]
    Pipes,
    /// A pty: the process gets the slave as its controlling terminal, the caller the master.
    Terminal,
    /// The caller's own stdio.
    Inherit,
    /// /dev/null for all three.
    Null,
    /// Given descriptors.
    Fds {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
}

/// The caller's ends of a process's stdio.
#[derive(Debug, Default)]
pub struct ProcessIo {
    pub stdin: Option<std::fs::File>,
    pub stdout: Option<std::fs::File>,
    pub stderr: Option<std::fs::File>,
    /// The pty master, with [`Stdio::Terminal`].
    pub terminal: Option<std::fs::File>,
}

impl ProcessIo {
    /// Sets the terminal's window size (containerd's ResizePty).
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        use std::os::fd::AsRawFd;
        let Some(tty) = &self.terminal else {
            return Err(Error::InvalidSpec {
                id: String::new(),
                field: "process.terminal",
                reason: "resize of a process without a terminal".into(),
            });
        };
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize that lives across the call.
        let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &raw const size) };
        if rc != 0 {
            return Err(Error::sys(
                format!("TIOCSWINSZ {rows}x{cols}"),
                nix::errno::Errno::last(),
            ));
        }
        Ok(())
    }
}

/// Everything [`super::Container::create`] needs.
#[derive(Debug)]
pub struct CreateOptions {
    /// Container id: unique among live containers; names the default cgroup and state dir.
    pub id: String,
    pub spec: Spec,
    /// Root filesystem; `None` takes `root.path` of the spec (relative to `bundle`).
    pub rootfs: Option<Rootfs>,
    /// Bundle directory, to resolve a relative `root.path`.
    pub bundle: Option<PathBuf>,
    pub stdio: Stdio,
    /// Parent of the per-container state directory (`<state_dir>/<id>/state.json`).
    pub state_dir: PathBuf,
    /// The `ward-agent` binary to run as init helper; `None` uses /proc/self/exe (right
    /// when the caller is ward-agent itself).
    pub init_binary: Option<PathBuf>,
}

/// Default parent of per-container state directories.
pub const DEFAULT_STATE_DIR: &str = "/run/ward/containers";

impl CreateOptions {
    /// Options for the bundle at `bundle` (its `config.json`, its `root.path`), pipes for
    /// stdio and the default state directory.
    pub fn from_bundle(id: impl Into<String>, bundle: impl AsRef<Path>) -> Result<Self> {
        let bundle = bundle.as_ref();
        let config = bundle.join("config.json");
        // serde_json directly: its errors name the field, the bad value and the line, where
        // oci-spec's loader only says "serde failed".
        let text = std::fs::read_to_string(&config).map_err(|e| Error::io("read", &config, e))?;
        let spec: Spec = serde_json::from_str(&text).map_err(|e| Error::LoadSpec {
            path: config.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            id: id.into(),
            spec,
            rootfs: None,
            bundle: Some(bundle.to_path_buf()),
            stdio: Stdio::Pipes,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            init_binary: None,
        })
    }
}
