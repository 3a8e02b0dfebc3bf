//! The `ward` command line: `ward run` and the commands for detached containers (`ps`,
//! `logs`, `stop`, `rm`), built on the launch library, which goes through the same sandbox
//! code the shim uses, without containerd. `bin/ward.rs` only dispatches to these.

pub mod launch;
pub mod manage;
pub mod nest;
pub mod run;
pub mod spec;
pub mod state;
pub mod supervise;
mod tty;

use std::path::PathBuf;

pub use launch::{Launch, LaunchError, Running, launch};

use crate::config::ConfigError;

/// The hidden subcommand a detached container's supervisor runs as.
pub const SUPERVISE_ARG: &str = "__supervise";

/// Exit code for errors of `ward run` itself (not of the container), as docker.
pub const EXIT_RUN_ERROR: i32 = 125;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{what} {value:?}: {why}")]
    Usage {
        what: &'static str,
        value: String,
        why: String,
    },
    #[error("no container {id} (ward run -d keeps them in {dir})")]
    NoSuchContainer { id: String, dir: PathBuf },
    #[error("container {id} is running: stop it first, or use rm -f")]
    StillRunning { id: String },
    #[error("container {id} did not stop")]
    DidNotStop { id: String },
    #[error("{path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A detached container's launch failed; the supervisor's message.
    #[error("{0}")]
    Detached(String),
    #[error("running the VM inside the nested harness: {0}")]
    Nest(String),
    #[error("container {id}: the supervisor exited before the container started (see {log})")]
    SupervisorDied { id: String, log: PathBuf },
}
