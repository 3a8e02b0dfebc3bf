//! Exec: another process in a running container, in all of its namespaces and its cgroup,
//! with its own process spec (user, env, cwd, terminal). The container's seccomp profile
//! applies to it too, as with runc.

use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{Process, Spec};

use super::cgroups::CgroupManager;
use super::error::{Error, Result};
use super::lifecycle::ExitStatus;
use super::namespaces;
use super::options::{ProcessIo, Stdio};
use super::protocol::{FromInit, InitConfig, InitMode, ToInit, recv, send};
use super::spawn;

/// A process started by [`super::Container::exec`]. The caller must `wait` it: it is the
/// caller's child.
#[derive(Debug)]
pub struct ExecProcess {
    pid: i32,
    io: Option<ProcessIo>,
    exit: Option<ExitStatus>,
}

impl ExecProcess {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn take_io(&mut self) -> Option<ProcessIo> {
        self.io.take()
    }

    pub fn signal(&self, signal: Signal) -> Result<()> {
        kill(Pid::from_raw(self.pid), signal)
            .map_err(|e| Error::sys(format!("kill exec process {} with {signal}", self.pid), e))
    }

    /// Records an exit the caller reaped itself (see [`super::Container::mark_exited`]).
    pub fn mark_exited(&mut self, exit: ExitStatus) {
        self.exit = Some(exit);
    }

    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(e) = self.exit {
            return Ok(e);
        }
        loop {
            let status = waitpid(Pid::from_raw(self.pid), None)
                .map_err(|e| Error::sys(format!("waitpid {}", self.pid), e))?;
            if let Some(exit) = ExitStatus::from_wait(status) {
                self.exit = Some(exit);
                return Ok(exit);
            }
        }
    }
}

/// Spawns the helper in exec mode and waits until the process exec'd.
pub(crate) fn run(
    id: &str,
    spec: &Spec,
    init_pid: i32,
    cgroup: &dyn CgroupManager,
    binary: &Path,
    process: &Process,
    stdio: Stdio,
) -> Result<ExecProcess> {
    if process.args().as_ref().is_none_or(Vec::is_empty) {
        return Err(Error::InvalidSpec {
            id: id.into(),
            field: "process.args",
            reason: "empty".into(),
        });
    }
    let namespaces = namespaces::of_process(init_pid);
    let mut helper = spawn::spawn(binary, stdio)?;
    let helper_pid = helper.child.id() as i32;
    let abort = |helper: &mut spawn::Helper, pid: Option<i32>, e: Error| {
        let _ = helper.child.kill();
        let _ = helper.child.wait();
        if let Some(p) = pid {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(p), None);
        }
        e
    };
    if let Err(e) = cgroup.add(helper_pid) {
        return Err(abort(&mut helper, None, e));
    }
    let config = InitConfig {
        id: id.into(),
        spec: Box::new(spec.clone()),
        mode: InitMode::Exec {
            process: Box::new(process.clone()),
        },
        namespaces,
        terminal: helper.terminal(),
        cgroup_v2: cgroup.is_v2(),
    };
    let proto = |reason: String| Error::Protocol {
        id: id.into(),
        reason,
    };
    if let Err(e) = send(&mut helper.sock, &ToInit::Config(Box::new(config))) {
        return Err(abort(
            &mut helper,
            None,
            proto(format!("sending exec config: {e}")),
        ));
    }
    // Read to EOF (helper exited, process exec'd or died): the pid and an error may come in
    // either order, from two processes.
    let (mut pid, mut failure) = (None, None);
    loop {
        match recv::<FromInit>(&mut helper.sock) {
            Ok(Some(FromInit::Pid(p))) => pid = Some(p),
            Ok(None) => break,
            Ok(Some(FromInit::Error(message))) => {
                failure = Some(Error::Init {
                    id: id.into(),
                    message,
                });
            }
            Ok(Some(other)) => {
                return Err(abort(
                    &mut helper,
                    pid,
                    proto(format!("unexpected {other:?} during exec")),
                ));
            }
            Err(e) => {
                return Err(abort(
                    &mut helper,
                    pid,
                    proto(format!("reading from exec helper: {e}")),
                ));
            }
        }
    }
    if let Some(e) = failure {
        return Err(abort(&mut helper, pid, e));
    }
    if let Err(e) = helper.take_console(id) {
        return Err(abort(&mut helper, pid, e));
    }
    let _ = helper.child.wait();
    let pid = pid.ok_or_else(|| proto("exec helper exited without a pid".into()))?;
    Ok(ExecProcess {
        pid,
        io: Some(helper.io),
        exit: None,
    })
}
