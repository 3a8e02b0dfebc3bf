//! ward's own modes, `shared` and `vm`, through the launch library (`crate::cli::launch`):
//! every launch is a fresh sandbox, exactly what the shim builds for a `ctr run`. The
//! launch library is async; this adapter owns a runtime and offers blocking readers.

use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::{Instance, LaunchSpec, Runtime};
use crate::cli::launch::{self, Launch, Running, Stream};
use crate::compare::{CompareError, Mode, procs};
use crate::config::{Config, Isolation};
use crate::image::ImageRef;

#[derive(Debug)]
pub struct WardRuntime {
    mode: Mode,
    isolation: Isolation,
    config: Config,
    image: ImageRef,
    rt: Arc<tokio::runtime::Runtime>,
}

impl WardRuntime {
    /// `shared` or `vm` with the config `ward run` would use, running workloads from `image`.
    pub fn new(mode: Mode, config: Config, image: ImageRef) -> Result<Self, CompareError> {
        let isolation = match mode {
            Mode::Vm => Isolation::Vm,
            _ => Isolation::Shared,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| CompareError::io("starting the async runtime", e))?;
        Ok(Self {
            mode,
            isolation,
            config,
            image,
            rt: Arc::new(rt),
        })
    }
}

impl Runtime for WardRuntime {
    fn mode(&self) -> Mode {
        self.mode
    }

    fn supports_pids_limit(&self) -> bool {
        true
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Instance>, CompareError> {
        let mut l = Launch::new(&spec.id, self.image.clone(), self.isolation);
        l.args = spec.argv();
        l.memory = spec.limits.memory_bytes;
        l.pids = spec
            .limits
            .pids
            .map(|p| i64::try_from(p).unwrap_or(i64::MAX));
        let running = self
            .rt
            .block_on(launch::launch(&l, &self.config))
            .map_err(|e| CompareError::launch(self.mode, e.to_string()))?;
        Ok(Box::new(WardInstance {
            mode: self.mode,
            rt: self.rt.clone(),
            running: Some(running),
        }))
    }
}

struct WardInstance {
    mode: Mode,
    rt: Arc<tokio::runtime::Runtime>,
    running: Option<Running>,
}

/// A blocking [`Read`] over one of the launch library's async streams.
struct BlockingStream {
    rt: Arc<tokio::runtime::Runtime>,
    stream: Pin<Box<Stream>>,
}

impl Read for BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let stream = &mut self.stream;
        self.rt.block_on(stream.read(buf))
    }
}

impl WardInstance {
    fn running(&self) -> &Running {
        self.running.as_ref().expect("only teardown takes it")
    }

    fn blocking(&self, s: Option<Stream>) -> Option<Box<dyn Read + Send>> {
        s.map(|stream| {
            Box::new(BlockingStream {
                rt: self.rt.clone(),
                stream: Box::pin(stream),
            }) as _
        })
    }
}

impl Instance for WardInstance {
    fn host_pids(&self) -> Vec<u32> {
        self.running().sandbox_pids()
    }

    fn take_stdout(&mut self) -> Option<Box<dyn Read + Send>> {
        let s = self.running.as_mut().and_then(Running::take_stdout);
        self.blocking(s)
    }

    fn take_stderr(&mut self) -> Option<Box<dyn Read + Send>> {
        let s = self.running.as_mut().and_then(Running::take_stderr);
        self.blocking(s)
    }

    fn kill(&mut self) -> Result<(), CompareError> {
        self.rt
            .block_on(self.running().signal(libc::SIGKILL))
            .map_err(|e| CompareError::launch(self.mode, e.to_string()))
    }

    fn wait(&mut self, limit: Duration) -> Result<Option<i32>, CompareError> {
        let running = self.running();
        match self
            .rt
            .block_on(async { tokio::time::timeout(limit, running.wait()).await })
        {
            Ok(Ok(code)) => Ok(Some(code)),
            Ok(Err(e)) => Err(CompareError::launch(self.mode, e.to_string())),
            Err(_) => Err(CompareError::launch(
                self.mode,
                format!("container {} still running after {limit:?}", running.id()),
            )),
        }
    }

    fn teardown(mut self: Box<Self>) -> Result<(), CompareError> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        let pids = running.sandbox_pids();
        self.rt.block_on(running.teardown());
        // Teardown ends when the sandbox's host processes are gone, not when it was asked.
        for pid in pids {
            let _ = procs::wait_gone(pid, Duration::from_secs(30));
        }
        Ok(())
    }
}
