//! The containers and processes the agent holds, by id, and the errors (with their ttrpc
//! codes) for asking about ones it does not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ttrpc::Code;

use super::process::Proc;
use crate::container::Container;

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("container {0:?} not found")]
    ContainerNotFound(String),
    #[error("exec {exec:?} of container {container:?} not found")]
    ExecNotFound { container: String, exec: String },
    #[error("container {0:?} already exists")]
    ContainerExists(String),
    #[error("exec {exec:?} of container {container:?} already exists")]
    ExecExists { container: String, exec: String },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Internal(String),
}

impl RpcError {
    pub fn code(&self) -> Code {
        match self {
            Self::ContainerNotFound(_) | Self::ExecNotFound { .. } => Code::NOT_FOUND,
            Self::ContainerExists(_) | Self::ExecExists { .. } => Code::ALREADY_EXISTS,
            Self::Invalid(_) => Code::INVALID_ARGUMENT,
            Self::Precondition(_) => Code::FAILED_PRECONDITION,
            Self::Internal(_) => Code::INTERNAL,
        }
    }
}

impl From<RpcError> for ttrpc::Error {
    fn from(e: RpcError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

impl From<crate::container::Error> for RpcError {
    fn from(e: crate::container::Error) -> Self {
        use crate::container::Error as E;
        match e {
            E::InvalidSpec { .. }
            | E::MissingRootfs { .. }
            | E::LoadSpec { .. }
            | E::Seccomp(_) => Self::Invalid(e.to_string()),
            E::State { .. } => Self::Precondition(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// A container and the processes started in it.
#[derive(Debug)]
pub struct Entry {
    pub id: String,
    pub sandbox_id: String,
    /// Blocking library calls run on the blocking pool with this lock held.
    pub container: Mutex<Option<Container>>,
    pub init: Arc<Proc>,
    pub execs: Mutex<HashMap<String, Arc<Proc>>>,
    /// Scratch directory owned by this entry (upper/work of the overlay), removed with it.
    pub scratch: Option<std::path::PathBuf>,
}

#[derive(Debug, Default)]
pub struct Registry {
    containers: Mutex<HashMap<String, Arc<Entry>>>,
    /// Ids being created: held from before the container is built until it is inserted, so
    /// two concurrent creates of one id cannot both build it.
    creating: Mutex<std::collections::HashSet<String>>,
}

/// Releases a reserved id when the create that held it ends, whatever the outcome.
#[derive(Debug)]
pub struct Reservation<'a> {
    registry: &'a Registry,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.registry
            .creating
            .lock()
            .expect("lock")
            .remove(&self.id);
    }
}

impl Registry {
    /// Claims `id` for a create; ALREADY_EXISTS if a container has it or is being built.
    pub fn reserve(&self, id: &str) -> Result<Reservation<'_>, RpcError> {
        let map = self.containers.lock().expect("lock");
        let mut creating = self.creating.lock().expect("lock");
        if map.contains_key(id) || !creating.insert(id.to_owned()) {
            return Err(RpcError::ContainerExists(id.to_owned()));
        }
        Ok(Reservation {
            registry: self,
            id: id.to_owned(),
        })
    }

    /// Inserts the entry a [`Reservation`] was held for.
    pub fn insert(&self, entry: Entry, _reserved: &Reservation<'_>) -> Arc<Entry> {
        let entry = Arc::new(entry);
        self.containers
            .lock()
            .expect("lock")
            .insert(entry.id.clone(), Arc::clone(&entry));
        entry
    }

    pub fn get(&self, id: &str) -> Result<Arc<Entry>, RpcError> {
        self.containers
            .lock()
            .expect("lock")
            .get(id)
            .cloned()
            .ok_or_else(|| RpcError::ContainerNotFound(id.to_owned()))
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Entry>> {
        self.containers.lock().expect("lock").remove(id)
    }

    pub fn ids(&self) -> Vec<String> {
        self.containers
            .lock()
            .expect("lock")
            .keys()
            .cloned()
            .collect()
    }

    /// The container's init (`exec` None or empty) or one of its execs.
    pub fn process(&self, container: &str, exec: Option<&str>) -> Result<Arc<Proc>, RpcError> {
        let entry = self.get(container)?;
        match exec.filter(|e| !e.is_empty()) {
            None => Ok(Arc::clone(&entry.init)),
            Some(exec) => entry
                .execs
                .lock()
                .expect("lock")
                .get(exec)
                .cloned()
                .ok_or_else(|| RpcError::ExecNotFound {
                    container: container.to_owned(),
                    exec: exec.to_owned(),
                }),
        }
    }

    /// Forgets exec `exec` of `container` once it has exited.
    pub fn remove_exec(&self, container: &str, exec: &str) -> Result<(), RpcError> {
        let entry = self.get(container)?;
        let mut execs = entry.execs.lock().expect("lock");
        let not_found = || RpcError::ExecNotFound {
            container: container.to_owned(),
            exec: exec.to_owned(),
        };
        let proc = execs.get(exec).ok_or_else(not_found)?;
        if proc.exit().is_none() {
            return Err(RpcError::Precondition(format!(
                "exec {exec:?} of container {container:?} is still running"
            )));
        }
        execs.remove(exec);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_id_cannot_be_reserved_twice_until_released() {
        let registry = Registry::default();
        let first = registry.reserve("c1").unwrap();
        assert!(matches!(
            registry.reserve("c1"),
            Err(RpcError::ContainerExists(_))
        ));
        drop(first);
        assert!(registry.reserve("c1").is_ok());
    }
}
