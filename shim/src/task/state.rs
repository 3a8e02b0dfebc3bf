//! What the shim remembers about each task: its bundle, its sandbox, its init process and
//! execs, their stdio, status and exit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::types::task::Status;
use tokio::sync::watch;

use super::io::{ProcessIo, Stdio};
use crate::sandbox::Sandbox;

/// How a process ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    /// 128 + signal when killed by one.
    pub status: u32,
    pub at: Timestamp,
}

/// A container's init or an exec.
#[derive(Debug)]
pub struct Process {
    pub pid: u32,
    pub stdio: Stdio,
    /// Created (not started yet), running, or stopped once `exit` is set.
    pub started: bool,
    /// The OCI Process (JSON) of an exec not started yet.
    pub exec_spec: Option<Vec<u8>>,
    pub io: Option<ProcessIo>,
    pub exit: watch::Sender<Option<Exit>>,
}

impl Process {
    pub fn new(stdio: Stdio) -> Self {
        Self {
            pid: 0,
            stdio,
            started: false,
            exec_spec: None,
            io: None,
            exit: watch::channel(None).0,
        }
    }

    pub fn exited(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    pub fn status(&self, paused: bool) -> Status {
        if self.exited().is_some() {
            Status::STOPPED
        } else if !self.started {
            Status::CREATED
        } else if paused {
            Status::PAUSED
        } else {
            Status::RUNNING
        }
    }
}

/// A task: one container in the sandbox.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    /// The cgroup path the agent put the container in (swept by the shim if the agent dies).
    pub cgroup: String,
    pub sandbox: Arc<dyn Sandbox>,
    pub init: Process,
    pub execs: HashMap<String, Process>,
    pub paused: bool,
}

impl Container {
    /// The init process for an empty exec id, else that exec.
    pub fn process(&self, exec_id: &str) -> Option<&Process> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id)
        }
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }
}
