//! The `host` mode: the workload binary from the demo image's rootfs run directly as a
//! child process, no container; the reference the CPU number is relative to.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Instance, LaunchSpec, Runtime, WORKLOAD_IN_IMAGE};
use crate::compare::procs;
use crate::compare::{CompareError, Mode};

#[derive(Debug)]
pub struct HostRuntime {
    binary: PathBuf,
}

impl HostRuntime {
    /// Runs the workload found in the unpacked image at `rootfs`.
    pub fn new(rootfs: &std::path::Path) -> Self {
        Self {
            binary: rootfs.join(WORKLOAD_IN_IMAGE.trim_start_matches('/')),
        }
    }
}

impl Runtime for HostRuntime {
    fn mode(&self) -> Mode {
        Mode::Host
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Instance>, CompareError> {
        let child = Command::new(&self.binary)
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                CompareError::launch(Mode::Host, format!("{}: {e}", self.binary.display()))
            })?;
        Ok(Box::new(HostInstance { child }))
    }
}

struct HostInstance {
    child: Child,
}

impl Instance for HostInstance {
    fn host_pids(&self) -> Vec<u32> {
        vec![self.child.id()]
    }

    fn take_stdout(&mut self) -> Option<Box<dyn Read + Send>> {
        self.child.stdout.take().map(|s| Box::new(s) as _)
    }

    fn take_stderr(&mut self) -> Option<Box<dyn Read + Send>> {
        self.child.stderr.take().map(|s| Box::new(s) as _)
    }

    fn kill(&mut self) -> Result<(), CompareError> {
        procs::signal(self.child.id(), libc::SIGKILL);
        Ok(())
    }

    fn wait(&mut self, limit: Duration) -> Result<Option<i32>, CompareError> {
        let pid = self.child.id();
        let exited = procs::wait_gone(pid, limit)
            .map_err(|e| CompareError::io(format!("waiting for workload pid {pid}"), e))?;
        if !exited {
            return Err(CompareError::launch(
                Mode::Host,
                format!("workload pid {pid} still running after {limit:?}"),
            ));
        }
        let status = self
            .child
            .wait()
            .map_err(|e| CompareError::io(format!("reaping workload pid {pid}"), e))?;
        Ok(status.code())
    }

    fn teardown(mut self: Box<Self>) -> Result<(), CompareError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(())
    }
}
