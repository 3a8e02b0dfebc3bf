//! A process's stdio between containerd and the agent: containerd names FIFOs, files
//! (`file://`) or a logging binary (`binary://`); the agent serves one stream connection per
//! stdio stream. One copy task per stream; the output copies are drained before the exit is
//! reported, so containerd has all the output when it sees TaskExit.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;
use ward_agent::client::AgentClient;
use ward_agent::protocol::agent::StdioConfig;
use ward_agent::protocol::stream::{StreamHeader, StreamKind};

/// The stdio containerd asked for (paths or URIs, empty for none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

impl Stdio {
    /// What the agent must wire for this stdio.
    pub fn agent_config(&self) -> StdioConfig {
        let mut c = StdioConfig::new();
        c.terminal = self.terminal;
        c.stdin = !self.stdin.is_empty();
        c.stdout = !self.stdout.is_empty();
        // With a terminal, stderr is the terminal too.
        c.stderr = !self.stderr.is_empty() && !self.terminal;
        c
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("opening {what} {path}: {source}")]
    Open {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("starting logging binary {path}: {source}")]
    Logger {
        path: String,
        source: std::io::Error,
    },
    #[error("attaching {kind:?} of {container}/{exec}: {source}")]
    Attach {
        container: String,
        exec: String,
        kind: StreamKind,
        source: ward_agent::client::ClientError,
    },
}

type Output = Box<dyn AsyncWrite + Unpin + Send>;

/// The running copies of one process's stdio.
#[derive(Debug, Default)]
pub struct ProcessIo {
    /// The stdin copy, and how CloseIO tells it to finish.
    stdin: Option<(JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>,
    outputs: Vec<JoinHandle<()>>,
    logger: Option<JoinHandle<()>>,
}

impl ProcessIo {
    /// Connects `stdio` to the process's agent streams and starts copying.
    pub async fn attach(
        agent: &AgentClient,
        container: &str,
        exec: Option<&str>,
        stdio: &Stdio,
    ) -> Result<Self, IoError> {
        let mut io = Self::default();
        let wanted = stdio.agent_config();
        let open = |kind| {
            let header = StreamHeader {
                container_id: container.to_owned(),
                exec_id: exec.map(str::to_owned),
                kind,
            };
            async move {
                agent
                    .open_stream(&header)
                    .await
                    .map_err(|source| IoError::Attach {
                        container: header.container_id.clone(),
                        exec: header.exec_id.clone().unwrap_or_else(|| "init".into()),
                        kind,
                        source,
                    })
            }
        };

        let (mut stdout, mut stderr) = (None, None);
        if let Some(binary) = stdio.stdout.strip_prefix("binary://") {
            let (out, err, logger) = spawn_logger(binary, container)?;
            stdout = Some(Dest::Ready(out));
            stderr = Some(Dest::Ready(err));
            io.logger = Some(logger);
        } else {
            if wanted.stdout {
                stdout = Some(Dest::open(&stdio.stdout).await?);
            }
            if wanted.stderr {
                stderr = Some(Dest::open(&stdio.stderr).await?);
            }
        }
        for (kind, dest) in [(StreamKind::Stdout, stdout), (StreamKind::Stderr, stderr)] {
            let Some(dest) = dest else { continue };
            let mut from = open(kind).await?;
            io.outputs.push(tokio::spawn(async move {
                let (mut to, _keep_open) = match dest.ready().await {
                    Ok(to) => to,
                    Err(e) => {
                        log::warn!("{e}");
                        return;
                    }
                };
                let _ = tokio::io::copy(&mut from, &mut to).await;
                let _ = to.shutdown().await;
            }));
        }
        if wanted.stdin {
            let to = open(StreamKind::Stdin).await?;
            let path = stdio.stdin.clone();
            let (close, closed) = tokio::sync::oneshot::channel();
            io.stdin = Some((tokio::spawn(copy_stdin(path, to, closed)), close));
        }
        Ok(io)
    }

    /// EOF on the process's stdin (CloseIO): what the writer already put in the FIFO is
    /// still delivered, then the stream to the agent is closed.
    pub fn close_stdin(&mut self) {
        if let Some((_, close)) = self.stdin.take() {
            let _ = close.send(());
        }
    }

    /// Waits (at most `limit`) until every output copy has reached EOF, so all the
    /// process's output is delivered before its exit is reported. Output still held open by
    /// a daemonized child is cut off at the limit.
    pub async fn drain(&mut self, limit: Duration) {
        let outputs = std::mem::take(&mut self.outputs);
        let aborts: Vec<_> = outputs.iter().map(JoinHandle::abort_handle).collect();
        if tokio::time::timeout(limit, futures_join(outputs))
            .await
            .is_err()
        {
            log::warn!("output still open {limit:?} after the process exited: cut off");
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
        if let Some(logger) = self.logger.take() {
            let _ = tokio::time::timeout(limit, logger).await;
        }
    }

    /// Stops every copy now.
    pub fn abort(&mut self) {
        self.close_stdin();
        self.outputs.drain(..).for_each(|t| t.abort());
    }
}

/// Copies the stdin FIFO at `path` to the agent's stream until the writer closes it or
/// CloseIO (`closed`) says no more is coming. ctr writes its input and then sends CloseIO,
/// so at CloseIO the input may still sit in the FIFO: it is drained first.
async fn copy_stdin(
    path: String,
    mut to: impl AsyncWrite + Unpin,
    mut closed: tokio::sync::oneshot::Receiver<()>,
) {
    let opened = tokio::select! {
        r = open_input(path.clone()) => Some(r),
        _ = &mut closed => None,
    };
    if let Some(opened) = opened {
        match opened {
            Ok(from) => {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    tokio::select! {
                        r = from.readable() => {
                            if r.is_err() || forward(&from, &mut to, &mut buf).await == Forwarded::Done {
                                break;
                            }
                        }
                        _ = &mut closed => {
                            while forward(&from, &mut to, &mut buf).await == Forwarded::Data {}
                            break;
                        }
                    }
                }
            }
            Err(e) => log::warn!("stdin {path}: {e}"),
        }
    }
    // Closing the stream is EOF for the process.
    let _ = to.shutdown().await;
}

/// What one [`forward`] did.
#[derive(Debug, PartialEq, Eq)]
enum Forwarded {
    Data,
    /// Nothing ready now.
    Empty,
    /// The writer closed the FIFO, or a side failed: no more input.
    Done,
}

/// Moves what `from` has ready to `to`.
async fn forward(
    from: &pipe::Receiver,
    to: &mut (impl AsyncWrite + Unpin),
    buf: &mut [u8],
) -> Forwarded {
    match from.try_read(buf) {
        Ok(0) => Forwarded::Done,
        Ok(n) if to.write_all(&buf[..n]).await.is_ok() => Forwarded::Data,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Forwarded::Empty,
        _ => Forwarded::Done,
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

/// Where a process's output goes.
enum Dest {
    /// A file or a logging binary's pipe, open already.
    Ready(Output),
    /// A FIFO being opened (on its own thread) until its reader is there.
    Fifo(String, FifoOpen),
}

type FifoOpen = tokio::sync::oneshot::Receiver<std::io::Result<(std::fs::File, std::fs::File)>>;

/// How long creating a task waits for the reader of its output FIFOs. runc's shim waits
/// for them too: containerd (or ctr) opens them before it asks, so this only runs out when
/// the client is gone, and then the copy keeps waiting in the background.
const FIFO_OPEN_WAIT: Duration = Duration::from_secs(10);

impl Dest {
    /// `file://<path>` (appended, opened now) or a FIFO path.
    async fn open(target: &str) -> Result<Self, IoError> {
        let Some(path) = target.strip_prefix("file://") else {
            let path = target.strip_prefix("fifo://").unwrap_or(target).to_owned();
            let mut opening = open_fifo_writer(path.clone());
            // Opened before the task exists, as runc's shim does: containerd's reader is
            // then open for sure before any output (or exit) can happen.
            return match tokio::time::timeout(FIFO_OPEN_WAIT, &mut opening).await {
                Ok(opened) => Ok(Self::Fifo(path, already(opened))),
                Err(_) => Ok(Self::Fifo(path, opening)),
            };
        };
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent() {
            let _ = tokio::fs::create_dir_all(dir).await;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|source| IoError::Open {
                what: "log file",
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self::Ready(Box::new(file)))
    }

    /// The writer, and for a FIFO a read end of our own that keeps it open.
    async fn ready(self) -> Result<(Output, Option<std::fs::File>), IoError> {
        let (path, rx) = match self {
            Self::Ready(out) => return Ok((out, None)),
            Self::Fifo(path, rx) => (path, rx),
        };
        let err = |source| IoError::Open {
            what: "stdio fifo",
            path: path.clone(),
            source,
        };
        let (writer, keep) = rx
            .await
            .map_err(|_| err(std::io::Error::other("fifo opener thread vanished")))?
            .map_err(err)?;
        let sender = pipe::Sender::from_file(writer).map_err(err)?;
        Ok((Box::new(sender), Some(keep)))
    }
}

/// Opens a FIFO write-only, blocking until containerd's (or ctr's) reader is there: data
/// written into a FIFO nobody has open yet is dropped when the last writer closes. Then a
/// read end of our own, as runc's shim does, so a reader that leaves (`ctr run -d`) does not
/// turn the process's writes into EPIPE. Blocking opens run on their own thread.
fn open_fifo_writer(path: String) -> FifoOpen {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|w| {
                let keep = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&path)?;
                Ok((w, keep))
            });
        let _ = tx.send(opened);
    });
    rx
}

/// A finished open as a [`FifoOpen`].
fn already(
    opened: Result<
        std::io::Result<(std::fs::File, std::fs::File)>,
        tokio::sync::oneshot::error::RecvError,
    >,
) -> FifoOpen {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _ = tx
        .send(opened.unwrap_or_else(|_| Err(std::io::Error::other("fifo opener thread vanished"))));
    rx
}

/// Opens stdin's FIFO for reading once containerd (or `ctr`) opened its writing end, so EOF
/// means the writer closed it.
async fn open_input(path: String) -> std::io::Result<pipe::Receiver> {
    let path = path.strip_prefix("fifo://").unwrap_or(&path).to_owned();
    // A blocking open waits for the writer; it runs on its own thread because the writer
    // may never come (the thread then ends with the shim).
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::File::open(&path));
    });
    let file = rx
        .await
        .map_err(|_| std::io::Error::other("stdin opener thread vanished"))??;
    pipe::Receiver::from_file(file)
}

/// Starts containerd's logging binary (`binary:///path?key=value&…`): stdout on fd 3,
/// stderr on fd 4, and fd 5 it closes once ready.
fn spawn_logger(uri: &str, container: &str) -> Result<(Output, Output, JoinHandle<()>), IoError> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let err = |source| IoError::Logger {
        path: path.to_owned(),
        source,
    };
    // Close-on-exec: the binary must hold only its fds 3-5, or it would never see EOF and
    // we would never see it ready.
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| err(e.into()));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = std::process::Command::new(path);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        cmd.arg(format!("-{k}"));
        if !v.is_empty() {
            cmd.arg(v);
        }
    }
    cmd.env("CONTAINER_ID", container)
        .env(
            "CONTAINER_NAMESPACE",
            std::env::var("NAMESPACE").unwrap_or_default(),
        )
        .stdin(std::process::Stdio::null());
    // SAFETY: runs between fork and exec; dup2(2) is async-signal-safe and the fds are ours
    // and open until after the spawn returns.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            for (i, fd) in fds.iter().enumerate() {
                let target = 3 + i as libc::c_int;
                // dup2 onto itself would keep close-on-exec: clear it instead.
                let ok = if *fd == target {
                    libc::fcntl(target, libc::F_SETFD, 0) >= 0
                } else {
                    libc::dup2(*fd, target) >= 0
                };
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(err)?;
    drop((out_r, err_r, ready_w));
    // The binary says it is ready by closing fd 5; its output is buffered in the pipes
    // meanwhile, so nothing waits for that here (a blocking read would stall the shim).
    std::thread::spawn(move || {
        let mut ready = std::fs::File::from(ready_r);
        let _ = std::io::Read::read(&mut ready, &mut [0u8; 1]);
    });
    let reaper = tokio::task::spawn_blocking(move || {
        let _ = child.wait();
    });
    let sender = |fd: OwnedFd| -> Result<Output, IoError> {
        Ok(Box::new(pipe::Sender::from_owned_fd(fd).map_err(&err)?))
    };
    Ok((sender(out_w)?, sender(err_w)?, reaper))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_wiring_follows_the_paths_containerd_gave() {
        let stdio = Stdio {
            stdin: String::new(),
            stdout: "/run/x/out".into(),
            stderr: "/run/x/err".into(),
            terminal: false,
        };
        let c = stdio.agent_config();
        assert!(!c.stdin && c.stdout && c.stderr && !c.terminal);
        // A terminal carries stderr too: no stderr stream even when a path is given.
        let c = Stdio {
            terminal: true,
            stdin: "/run/x/in".into(),
            ..stdio
        }
        .agent_config();
        assert!(c.stdin && c.stdout && !c.stderr && c.terminal);
    }

    #[tokio::test]
    async fn file_uris_append_and_fifos_wait_for_their_reader() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sub/task.log");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "before\n").unwrap();
        let Dest::Ready(mut out) = Dest::open(&format!("file://{}", log.display()))
            .await
            .unwrap()
        else {
            panic!("a file:// destination opens at once");
        };
        out.write_all(b"after\n").await.unwrap();
        out.shutdown().await.unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "before\nafter\n");

        let fifo = dir.path().join("out.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let path = fifo.display().to_string();
        let opening = tokio::spawn(async move { Dest::open(&path).await.unwrap() });
        // The writer opens only once this reader exists: nothing is lost to a FIFO nobody
        // had open.
        let mut reader = pipe::OpenOptions::new().open_receiver(&fifo).unwrap();
        let dest = opening.await.unwrap();
        assert!(matches!(dest, Dest::Fifo(..)));
        let (mut out, _keep) = dest.ready().await.unwrap();
        out.write_all(b"through the fifo").await.unwrap();
        let mut got = vec![0u8; 16];
        tokio::io::AsyncReadExt::read_exact(&mut reader, &mut got)
            .await
            .unwrap();
        assert_eq!(&got, b"through the fifo");
    }
}
